//! An axum [`Router`] for operators: purge, stats and Prometheus metrics, behind a bearer
//! token (feature `admin`).
//!
//! | route | does |
//! |---|---|
//! | `POST /purge` | `{"paths": [...], "patterns": [...], "tags": [...], "soft": false, "distribution": "name"}` → `{"purged": N}` (`distribution` optional) |
//! | `GET /stats` | a JSON snapshot of the counters |
//! | `GET /metrics` | Prometheus text exposition |
//!
//! Every route needs `Authorization: Bearer TOKEN`, compared in constant time; without it
//! the answer is 401 and nothing changes. Bad input gets a 400 with a short message.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use tower::ServiceExt;
//! use tower_cdn::{admin, CdnLayer};
//!
//! let layer = CdnLayer::new();
//! let router = admin::router(layer.clone(), "s3cret");
//! let req = http::Request::post("/purge")
//!     .header("authorization", "Bearer s3cret")
//!     .body(axum::body::Body::from(r#"{"paths": ["/index.html"]}"#))
//!     .unwrap();
//! let res = router.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), 200);
//! # }
//! ```

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;

use crate::{CdnLayer, Purge};

/// Most paths, patterns and tags one purge request may name together.
pub const MAX_PURGE_ITEMS: usize = 1_000;
/// Longest path, pattern or tag accepted.
pub const MAX_ITEM_LEN: usize = 1_024;
/// Largest purge request body.
pub const MAX_BODY: usize = 256 * 1024;

/// More Prometheus text for `/metrics`, such as an application's own counters.
pub type ExtraMetrics = Arc<dyn Fn() -> String + Send + Sync>;

#[derive(Clone)]
struct Admin {
    layers: Arc<[(String, CdnLayer)]>,
    token: Arc<[u8]>,
    extra: Option<ExtraMetrics>,
}

impl Admin {
    /// The counters of every layer, added up.
    fn metrics(&self) -> crate::MetricsSnapshot {
        let mut layers = self.layers.iter();
        let mut total = layers
            .next()
            .map(|(_, layer)| layer.metrics())
            .unwrap_or_default();
        for (_, layer) in layers {
            total.merge(&layer.metrics());
        }
        total
    }
}

/// The admin router for `layer`, protected by `token`.
pub fn router(layer: CdnLayer, token: impl Into<String>) -> Router {
    router_for([("default", layer)], token)
}

/// The admin router for several named layers (an edge's distributions): a purge applies to
/// every layer, or to the one its `"distribution"` names; stats and metrics add them up.
pub fn router_for<I, N>(layers: I, token: impl Into<String>) -> Router
where
    I: IntoIterator<Item = (N, CdnLayer)>,
    N: Into<String>,
{
    router_with_metrics(layers, token, None)
}

/// [`router_for`], with `extra` appended to the `/metrics` text on every scrape.
pub fn router_with_metrics<I, N>(
    layers: I,
    token: impl Into<String>,
    extra: Option<ExtraMetrics>,
) -> Router
where
    I: IntoIterator<Item = (N, CdnLayer)>,
    N: Into<String>,
{
    let state = Admin {
        layers: layers
            .into_iter()
            .map(|(name, layer)| (name.into(), layer))
            .collect(),
        token: token.into().into_bytes().into(),
        extra,
    };
    Router::new()
        .route("/purge", post(purge))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Constant-time comparison (`subtle`): the time taken does not depend on where the inputs
/// differ. An empty token never matches.
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    !b.is_empty() && bool::from(a.ct_eq(b))
}

fn authorized(admin: &Admin, headers: &HeaderMap) -> bool {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.as_bytes().strip_prefix(b"Bearer "))
        .unwrap_or_default();
    same(presented, &admin.token)
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "missing or wrong bearer token\n",
    )
        .into_response()
}

fn bad_request(message: impl Into<String>) -> Response {
    let mut message = message.into();
    message.push('\n');
    (StatusCode::BAD_REQUEST, message).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    patterns: Vec<String>,
    #[serde(default)]
    tags: Vec<String>,
    #[serde(default)]
    soft: bool,
    #[serde(default)]
    distribution: Option<String>,
}

impl PurgeRequest {
    fn into_purges(self) -> Result<Vec<Purge>, String> {
        let count = self.paths.len() + self.patterns.len() + self.tags.len();
        if count == 0 {
            return Err("name at least one of paths, patterns, tags".into());
        }
        if count > MAX_PURGE_ITEMS {
            return Err(format!(
                "at most {MAX_PURGE_ITEMS} paths, patterns and tags per request (got {count})"
            ));
        }
        let all = self.paths.iter().chain(&self.patterns).chain(&self.tags);
        if let Some(item) = all.clone().find(|i| i.is_empty() || i.len() > MAX_ITEM_LEN) {
            return Err(format!(
                "items must be 1 to {MAX_ITEM_LEN} bytes (got {} bytes)",
                item.len()
            ));
        }
        if let Some(path) = self.paths.iter().find(|p| !p.starts_with('/')) {
            return Err(format!("paths start with '/' (got {path:?})"));
        }
        let mut purges: Vec<Purge> = self.paths.into_iter().map(Purge::path).collect();
        for pattern in &self.patterns {
            purges.push(Purge::pattern(pattern).map_err(|e| format!("pattern {pattern:?}: {e}"))?);
        }
        purges.extend(self.tags.into_iter().map(Purge::tag));
        if self.soft {
            purges = purges.into_iter().map(Purge::soft).collect();
        }
        Ok(purges)
    }
}

async fn purge(State(admin): State<Admin>, headers: HeaderMap, body: Body) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let body: Bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return bad_request(format!("body larger than {MAX_BODY} bytes")),
    };
    let request: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(format!("malformed JSON: {e}")),
    };
    let only = request.distribution.clone();
    if let Some(name) = &only {
        if !admin.layers.iter().any(|(n, _)| n == name) {
            return bad_request(format!("no distribution is named {name:?}"));
        }
    }
    let purges = match request.into_purges() {
        Ok(p) => p,
        Err(message) => return bad_request(message),
    };
    let purged: usize = admin
        .layers
        .iter()
        .filter(|(name, _)| only.as_ref().is_none_or(|only| only == name))
        .map(|(_, layer)| purges.iter().map(|p| layer.purge(p)).sum::<usize>())
        .sum();
    let json = serde_json::json!({ "purged": purged });
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

async fn stats(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let m = admin.metrics();
    let json = serde_json::json!({
        "hits": m.hits,
        "refresh_hits": m.refresh_hits,
        "misses": m.misses,
        "passes": m.passes,
        "errors": m.errors,
        "generated": m.generated,
        "hit_ratio": m.hit_ratio(),
        "bytes_from_cache": m.bytes_from_cache,
        "bytes_from_origin": m.bytes_from_origin,
        "origin_requests": m.origin_requests,
        "origin_failures": m.origin_failures,
        "origin_latency_seconds_sum": m.origin_latency_seconds_sum,
        "collapsed": m.collapsed,
        "stale_served": m.stale_served,
        "evictions": m.evictions,
        "store_bytes": m.store_bytes,
        "store_capacity": m.store_capacity,
        "store_entries": m.store_entries,
        "compressions": m.compressions,
        "purges": m.purges,
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        json.to_string(),
    )
        .into_response()
}

async fn metrics(State(admin): State<Admin>, headers: HeaderMap) -> Response {
    if !authorized(&admin, &headers) {
        return unauthorized();
    }
    let mut text = admin.metrics().to_prometheus();
    if let Some(extra) = &admin.extra {
        text.push_str(&extra());
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::same;

    #[test]
    fn token_comparison() {
        assert!(same(b"abc", b"abc"));
        assert!(!same(b"abd", b"abc"));
        assert!(!same(b"ab", b"abc"));
        assert!(!same(b"abcd", b"abc"));
        assert!(!same(b"", b""));
    }
}
