//! The route a request takes when no configured route matched and global rules exist: APISIX
//! runs the global rules' plugins for such a request (they may answer it, an auth plugin with
//! 401 say) and then answers `404 Route Not Found`; its log phase runs too, so a global
//! prometheus or logger counts the 404 with an empty route label.
//!
//! The entry has no plugins of its own and no upstream; its fixed answer is the 404
//! ([`FixedAnswer::RouteNotFound`]). `phases::Incoming::unrouted` keeps `ctx` from naming it.

use std::sync::{Arc, LazyLock};

use crate::config::resource::{FixedAnswer, Id, RouteAction};
use crate::config::snapshot::{RouteEntry, RouteUpstream};

/// Its id holds characters APISIX's id schema refuses, so no configured route shares it.
pub(super) static ROUTE: LazyLock<Arc<RouteEntry>> = LazyLock::new(|| {
    Arc::new(RouteEntry {
        id: Id("(no route)".into()),
        name: None,
        service_id: None,
        upstream: RouteUpstream::NoUpstream,
        plugins: Default::default(),
        timeout: None,
        enable_websocket: false,
        chain: None,
        handlers: None,
        missing_plugin_config: None,
        action: RouteAction {
            answer: Some(FixedAnswer::RouteNotFound),
            ..RouteAction::default()
        },
    })
});
