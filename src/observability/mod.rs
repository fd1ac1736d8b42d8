//! Logs: the nginx-shaped error log and the access log.

pub mod access;
pub mod clock;
pub mod errlog;
