//! Config providers: where resources come from. Each produces `Resources` for `Snapshot::build`.

pub mod envoy;
pub mod store;
pub mod yaml;
