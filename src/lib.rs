//! moongate: an API gateway in Rust that runs Apache APISIX Lua plugins.
//!
//! The crate is laid out along the request path: `server` accepts connections, `router` matches
//! routes over a `config` snapshot, `upstream` picks a node, `plugin` runs the plugin phases (native and Lua, on `lua`'s per-worker VM), `proxy` forwards
//! the request, and
//! `observability` writes the logs.

pub mod admin;
pub mod alloc;
pub mod cli;
pub mod config;
pub mod echo;
pub mod lua;
pub mod observability;
pub mod plugin;
pub mod pmap;
pub mod proxy;
pub mod router;
pub mod server;
pub mod testing;
pub mod upstream;
pub mod uri;
