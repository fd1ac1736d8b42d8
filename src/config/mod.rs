//! Node configuration (`conf/config.yaml`), the resource model, and config snapshots.

pub mod node;
pub mod provider;
pub mod resource;
pub mod snapshot;
pub mod standalone;
pub mod store;
pub mod units;
pub mod yaml_doc;
