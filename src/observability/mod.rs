//! Logs and metrics: the nginx-shaped error log, the access log, and the metric registry.

pub mod access;
pub mod clock;
pub mod errlog;
pub mod metrics;
pub mod ticks;
