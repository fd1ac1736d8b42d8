//! The LuaJIT host: one VM per worker thread, the modules it resolves, and the scheduler that
//! lets Lua code wait on Rust I/O without blocking the worker.
//!
//! This module never touches the HTTP server: the proxy drives it through [`host::LuaHost`]. Nothing
//! Lua-side crosses threads: a [`vm::LuaVm`] is `!Send` and lives on its worker.

pub mod config_view;
pub mod entry;
pub mod ffi_entry;
pub mod host;
pub mod lib;
pub mod ngx;
pub mod plugin;
pub mod plugin_set;
pub mod raw;
pub mod request;
pub mod sched;
pub mod store_api;
pub mod upstream_choice;
pub mod vm;
