//! Native Rust plugins: the same names, priorities, schemas and phases as APISIX's Lua plugins,
//! for the hot path. A native plugin and Lua plugins interleave in one chain by priority and act
//! on the same [`RequestCtx`].
//!
//! A conf is prepared once per config snapshot ([`NativePlugin::prepare`]: checked against the
//! plugin's schema, defaults filled, regexes and address sets compiled); a request only reads
//! the prepared value. One module per plugin, named after it.

pub mod ip_restriction;
pub mod prometheus;
pub mod redirect;
pub mod referer_restriction;
pub mod regex;
pub mod request_id;
pub mod schema;
pub mod uri_blocker;

use std::any::Any;
use std::sync::Arc;

use serde_json::Value;

use super::{Phase, PhaseSet, RequestCtx};

/// An answer a plugin gives instead of letting the request go on: `return code, body`.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub status: u16,
    /// A string body is sent as-is; an object or array as JSON plus a newline.
    pub body: Option<Value>,
}

/// A conf after [`NativePlugin::prepare`]: the plugin's own typed, compiled form.
pub type Prepared = Arc<dyn Any + Send + Sync>;

/// What a native plugin implements.
pub trait NativePlugin: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    fn priority(&self) -> i64;
    /// The phases it implements.
    fn phases(&self) -> PhaseSet;
    /// Validates a conf and compiles it, with APISIX's error wording. Runs when a snapshot is
    /// built, never on the request path.
    fn prepare(&self, conf: &Value) -> Result<Prepared, String>;
    /// Validates a conf, in APISIX's words.
    fn check_conf(&self, conf: &Value) -> Result<(), String> {
        self.prepare(conf).map(|_| ())
    }
    /// Runs one phase with the prepared conf. `Ok(Some(answer))` from a phase that may answer
    /// ends the request; headers the plugin put in `req.resp_headers` go out with the answer.
    fn run(
        &self,
        phase: Phase,
        conf: &Prepared,
        req: &mut RequestCtx,
    ) -> Result<Option<Answer>, String>;
}

/// The prepared conf of plugin `P`, as its own `prepare` made it.
pub fn prepared<'a, T: 'static>(conf: &'a Prepared, plugin: &str) -> Result<&'a T, String> {
    conf.downcast_ref::<T>()
        .ok_or_else(|| format!("{plugin}: the prepared conf has the wrong type"))
}

/// Every native plugin moongate has, with the node's settings (config.yaml as parsed,
/// `Value::Null` when there is none: `plugin_attr`, dictionary sizes) for those that read them.
pub fn all(node: &Value) -> Vec<Arc<dyn NativePlugin>> {
    let plugin_attr = &node["plugin_attr"];
    let metrics_bytes = node["nginx_config"]["http"]["lua_shared_dict"][prometheus::NAMESPACE]
        .as_str()
        .and_then(|s| crate::config::units::parse_size(s).ok())
        .unwrap_or(10 << 20) as usize;
    vec![
        Arc::new(prometheus::Prometheus::new(
            &plugin_attr["prometheus"],
            metrics_bytes,
        )),
        Arc::new(request_id::RequestId),
        Arc::new(ip_restriction::IpRestriction),
        Arc::new(referer_restriction::RefererRestriction),
        Arc::new(uri_blocker::UriBlocker),
        Arc::new(redirect::Redirect::new(&plugin_attr["redirect"])),
    ]
}

/// A phase set from a list.
pub(crate) fn phases(list: &[Phase]) -> PhaseSet {
    let mut s = PhaseSet::default();
    for p in list {
        s.insert(*p);
    }
    s
}
