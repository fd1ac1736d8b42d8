//! Libraries OpenResty bundles that plugins `require`, written natively where it pays.

pub mod apisix_runtime;
pub mod cjson;
pub mod crypto;
pub mod dns;
pub mod inflate;
pub mod metrics;
pub mod node;
pub mod resty;
