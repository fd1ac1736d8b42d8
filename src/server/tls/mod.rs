//! TLS towards clients: the listener settings of `apisix.ssl`, the certificates of `ssls`
//! resources compiled with each config snapshot, and the handshake that picks one by SNI.
//!
//! - [`settings`]: `ssl_protocols`, `ssl_ciphers`, tickets, `fallback_sni`, `enable_http2`;
//! - [`entry`]: one `ssls` item compiled into a rustls `ServerConfig` (its certificates, its
//!   client-certificate verifier, its protocols);
//! - [`sni`]: the immutable index from names to entries, carried by the snapshot;
//! - [`accept`]: the handshake, which reads the ClientHello, looks its SNI up in the current
//!   snapshot and completes with that entry's configuration (no lock on the way);
//! - [`info`]: what the request path knows about a TLS connection (`$ssl_*` variables).

pub mod accept;
pub mod entry;
pub mod info;
pub mod settings;
pub mod sni;

pub use entry::SslEntry;
pub use info::TlsInfo;
pub use sni::{Lookup, SslIndex};
