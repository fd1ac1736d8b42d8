//! PLACEHOLDER: replaced by the config branch (interface only, so the server compiles).

use std::collections::HashMap;
use std::sync::Arc;

use super::resource::{Id, PluginMap, Service, Timeout};
use crate::router::Router;
use crate::upstream::UpstreamDef;

pub struct Snapshot {
    pub version: u64,
    pub routes: Vec<Arc<RouteEntry>>,
    pub router: Router,
    pub upstreams: HashMap<Id, Arc<UpstreamDef>>,
    pub services: HashMap<Id, Service>,
}

pub struct RouteEntry {
    pub id: Id,
    pub name: Option<String>,
    pub service_id: Option<Id>,
    pub upstream: RouteUpstream,
    pub plugins: PluginMap,
    pub timeout: Option<Timeout>,
    pub enable_websocket: bool,
}

pub enum RouteUpstream {
    Ready(Arc<UpstreamDef>),
    MissingService(Id),
    MissingUpstream(Id),
    NoUpstream,
}
