//! Node configuration (`conf/config.yaml`), the resource model, and config snapshots.

pub mod resource;
pub mod snapshot;
