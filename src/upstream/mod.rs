//! Upstreams: compiled node lists and the balancers that pick a node per request.
//!
//! An [`UpstreamDef`] is immutable, built off the request path from a `config::resource::Upstream`
//! and shared by every worker through the snapshot. Each worker keeps its own mutable [`Picker`] per
//! upstream (smooth round-robin weights, EWMA scores, connection counts), as each nginx worker keeps
//! its own balancer state, so picking takes no lock. Connection pooling lives in the proxy, not here.
