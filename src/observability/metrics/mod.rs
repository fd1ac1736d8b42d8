//! Metrics every worker shares, in Prometheus' model: families of counters, gauges and
//! histograms whose series are Rust atomics, one registry for the whole process (workers are
//! threads, so it is what nginx's shared dictionary is to worker processes), written out in
//! Prometheus' text format.
//!
//! Three writers feed it: the `prometheus` Lua library (nginx-lua-prometheus' API, which
//! APISIX's exporter uses, `src/lua/lib/metrics.rs` and `lua/prometheus.lua`), the native
//! `prometheus` plugin (`plugin::native::prometheus`), and the server's connection counts
//! ([`conn`]). Nothing here touches Lua or blocks: a write to a series a writer already holds
//! is an atomic add.

pub mod conn;
pub mod store;
pub mod text;

pub use store::{Family, FamilyDef, Kind, MetricError, Namespace, Registry, Series, global};

#[cfg(test)]
mod tests;
