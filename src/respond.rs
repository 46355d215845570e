//! Building the viewer's response: preconditions, ranges, HEAD and the edge's own fields.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    HeaderName, ACCEPT_RANGES, AGE, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_RANGE,
    LAST_MODIFIED, RANGE,
};
use http::header::{CONTENT_ENCODING, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};

use crate::behavior::Route;
use crate::body::CdnBody;
use std::sync::Arc;

use crate::encoding;
use crate::entry::{Coding, Object, Pick};
use crate::fill::{Fill, FillReader};
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::purge::{CACHE_TAG, SURROGATE_KEY};
use crate::rfc::conditional::{self, Precondition};
use crate::rfc::headers::{CDN_CACHE_CONTROL, SURROGATE_CONTROL};
use crate::rfc::range::{self, RangeOutcome};
use crate::status::CacheStatus;
use crate::variants::make_variant;

/// `Cache-Status` (RFC 9211).
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Why a request went to the origin, for `Cache-Status: fwd=` (RFC 9211 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fwd {
    UriMiss,
    VaryMiss,
    Request,
    Stale,
    Method,
    Bypass,
}

impl Fwd {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Fwd::UriMiss => "uri-miss",
            Fwd::VaryMiss => "vary-miss",
            Fwd::Request => "request",
            Fwd::Stale => "stale",
            Fwd::Method => "method",
            Fwd::Bypass => "bypass",
        }
    }
}

/// The request fields the viewer's response depends on.
#[derive(Clone, Copy)]
pub(crate) struct ViewerRef<'a> {
    pub(crate) method: &'a Method,
    pub(crate) headers: &'a HeaderMap,
}

/// Where a response body comes from.
enum Source {
    Stored(Bytes),
    Fill(FillReader),
}

/// Answers the viewer from a stored object or a fill: its preconditions (RFC 9110 §13.2.2),
/// then its range (§14), then HEAD, then the edge's own fields.
#[allow(clippy::too_many_arguments)]
fn respond<B>(
    shared: &Shared,
    viewer: ViewerRef<'_>,
    status: StatusCode,
    stored: &HeaderMap,
    source: Source,
    age: u64,
    outcome: CacheStatus,
    cache_status: String,
) -> Response<CdnBody<B>> {
    // §13.2.1: preconditions apply only where the response would have been 2xx.
    let precondition = if status.is_success() {
        conditional::evaluate(
            viewer.method,
            viewer.headers,
            stored.get(ETAG),
            stored.get(LAST_MODIFIED),
        )
    } else {
        Precondition::Proceed
    };
    let mut res = match precondition {
        Precondition::NotModified => bare(
            StatusCode::NOT_MODIFIED,
            conditional::not_modified_headers(stored),
        ),
        Precondition::Failed => bare(StatusCode::PRECONDITION_FAILED, HeaderMap::new()),
        Precondition::Proceed => {
            let mut headers = stored.clone();
            let (status, body) = match source {
                Source::Stored(body) if status == StatusCode::OK => {
                    headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
                    ranged(viewer, &mut headers, body)
                }
                Source::Stored(body) => (status, CdnBody::full(body)),
                Source::Fill(reader) => (status, CdnBody::fill(reader)),
            };
            let body = if viewer.method == Method::HEAD {
                CdnBody::empty()
            } else {
                body
            };
            let mut res = Response::new(body);
            *res.status_mut() = status;
            *res.headers_mut() = headers;
            res
        }
    };
    let headers = res.headers_mut();
    headers.reserve(4);
    headers.insert(AGE, HeaderValue::from(age));
    headers.insert(X_CACHE.clone(), shared.x_cache.get(outcome).clone());
    if let Ok(v) = HeaderValue::try_from(cache_status) {
        headers.insert(CACHE_STATUS.clone(), v);
    }
    res
}

fn bare<B>(status: StatusCode, headers: HeaderMap) -> Response<CdnBody<B>> {
    let mut res = Response::new(CdnBody::empty());
    *res.status_mut() = status;
    *res.headers_mut() = headers;
    res
}

/// The part of a stored 200 that the viewer's `Range` asks for (RFC 9110 §14).
fn ranged<B>(
    viewer: ViewerRef<'_>,
    headers: &mut HeaderMap,
    body: Bytes,
) -> (StatusCode, CdnBody<B>) {
    let Some(spec) = viewer.headers.get(RANGE) else {
        return (StatusCode::OK, CdnBody::full(body));
    };
    // §14.2: Range is defined for GET only (HEAD answers as GET would, without the body).
    let allowed = matches!(*viewer.method, Method::GET | Method::HEAD)
        && viewer.headers.get(IF_RANGE).is_none_or(|v| {
            range::if_range_allows_partial(v, headers.get(ETAG), headers.get(LAST_MODIFIED))
        });
    if !allowed {
        return (StatusCode::OK, CdnBody::full(body));
    }
    let len = body.len() as u64;
    match range::evaluate(spec, len) {
        RangeOutcome::Full => (StatusCode::OK, CdnBody::full(body)),
        RangeOutcome::Single(r) => {
            headers.insert(CONTENT_RANGE, range::content_range(&r, len));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(r.end - r.start));
            (
                StatusCode::PARTIAL_CONTENT,
                CdnBody::full(body.slice(r.start as usize..r.end as usize)),
            )
        }
        RangeOutcome::Multi(ranges) => {
            let boundary = format!("{:016x}", RandomState::new().build_hasher().finish());
            match range::multipart(&body, &ranges, headers.get(CONTENT_TYPE), len, &boundary) {
                Some(parts) => {
                    headers.insert(CONTENT_TYPE, parts.content_type);
                    headers.insert(CONTENT_LENGTH, HeaderValue::from(parts.len));
                    (StatusCode::PARTIAL_CONTENT, CdnBody::parts(parts.chunks))
                }
                None => (StatusCode::OK, CdnBody::full(body)),
            }
        }
        RangeOutcome::Unsatisfiable => {
            headers.insert(CONTENT_RANGE, range::unsatisfied_content_range(len));
            headers.insert(CONTENT_LENGTH, HeaderValue::from(0));
            (StatusCode::RANGE_NOT_SATISFIABLE, CdnBody::empty())
        }
    }
}

/// How a stored object came to answer the request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Served {
    Fresh,
    /// Stale, accepted by the request's `max-stale`.
    Stale,
    /// Stale within `stale-while-revalidate`; a background refresh is under way.
    WhileRevalidating,
    /// Revalidated with a 304.
    Refreshed,
    /// Stale, standing in for a failed origin (`stale-if-error`).
    OnError,
    /// Stale, standing in for an origin that could not be reached (connection failure or
    /// timeout) within the edge's window for that (RFC 9111 §4.2.4: a disconnected cache).
    OnUnreachable,
    /// Revalidated with a 304 whose validators select no stored response (RFC 9111
    /// §4.3.4): served as the origin confirmed it for this request, not updated.
    Confirmed,
    /// Found in the shared tier on a memory miss.
    #[cfg(feature = "redis")]
    SharedTier,
}

/// Answers from a stored object in the representation `rep` (fields and body).
pub(crate) fn object_response<B>(
    shared: &Shared,
    obj: &Object,
    rep: (&HeaderMap, &Bytes),
    viewer: ViewerRef<'_>,
    served: Served,
    now: SystemTime,
) -> Response<CdnBody<B>> {
    let (outcome, kind, detail) = match served {
        Served::Fresh | Served::Stale => (CacheStatus::Hit, "; hit; ttl=", ""),
        Served::WhileRevalidating => (
            CacheStatus::Hit,
            "; hit; ttl=",
            "; detail=stale-while-revalidate",
        ),
        Served::Refreshed => (
            CacheStatus::RefreshHit,
            "; fwd=stale; fwd-status=304; ttl=",
            "",
        ),
        Served::OnError => (
            CacheStatus::Hit,
            "; fwd=stale; ttl=",
            "; detail=stale-if-error",
        ),
        Served::OnUnreachable => (
            CacheStatus::Hit,
            "; fwd=stale; ttl=",
            "; detail=stale-if-unreachable",
        ),
        Served::Confirmed => (
            CacheStatus::RefreshHit,
            "; fwd=stale; fwd-status=304; ttl=",
            "; detail=not-updated",
        ),
        #[cfg(feature = "redis")]
        Served::SharedTier => (CacheStatus::Hit, "; hit; ttl=", "; detail=shared-tier"),
    };
    // Built by hand rather than with `format!`: this runs on every hit.
    let mut ttl = itoa::Buffer::new();
    let ttl = ttl.format(obj.ttl(now));
    let name = &shared.cache_name;
    let mut cache_status =
        String::with_capacity(name.len() + kind.len() + ttl.len() + detail.len());
    for part in [name.as_str(), kind, ttl, detail] {
        cache_status.push_str(part);
    }
    let metrics = &shared.metrics;
    metrics.served(outcome);
    if matches!(
        served,
        Served::Stale | Served::WhileRevalidating | Served::OnError | Served::OnUnreachable
    ) {
        metrics.stale_served.fetch_add(1, Ordering::Relaxed);
    }
    let source = Source::Stored(rep.1.clone());
    let res = respond(
        shared,
        viewer,
        obj.status,
        rep.0,
        source,
        obj.age(now),
        outcome,
        cache_status,
    );
    metrics.add_cache_bytes(res.body().stored_len());
    res
}

/// Answers from a stored object in the coding the viewer accepts best, making that coding
/// first if the object lacks it.
pub(crate) async fn serve_object<B>(
    shared: &Arc<Shared>,
    key: CacheKey,
    obj: &Arc<Object>,
    viewer: ViewerRef<'_>,
    served: Served,
) -> Response<CdnBody<B>> {
    let enc = match obj.pick(viewer.headers) {
        Pick::Ready(headers, body) => {
            let now = shared.clock.now();
            return object_response(shared, obj, (headers, body), viewer, served, now);
        }
        Pick::Make(enc) => enc,
    };
    let made = make_variant(shared, key, obj, enc).await;
    let now = shared.clock.now();
    if let Some(rep) = made.as_deref().and_then(|m| m.representation(enc)) {
        let obj = made.as_deref().unwrap_or(obj);
        return object_response(shared, obj, rep, viewer, served, now);
    }
    // The coding could not be made: the stored body, if the viewer can read it.
    let stored_readable = match obj.coding {
        Coding::Encoded(e) => encoding::choose(viewer.headers, &[e]).is_some(),
        _ => true,
    };
    if stored_readable {
        object_response(shared, obj, (&obj.headers, &obj.body), viewer, served, now)
    } else {
        edge_error(shared, StatusCode::BAD_GATEWAY)
    }
}

/// Whether the viewer can read the body a fill streams.
fn fill_readable(fill: &Fill, request: &HeaderMap) -> bool {
    match Coding::of(&fill.headers) {
        Coding::Encoded(e) => encoding::choose(request, &[e]).is_some(),
        _ => true,
    }
}

/// A reader of a fill for a viewer: of its compressed twin when the viewer prefers that
/// coding to identity and asks for no range (a range is cut from the whole identity body),
/// else of the fill itself when the viewer can read it. `None` when neither can be read
/// from its first byte any more, or the viewer cannot read the fill's coding.
pub(crate) fn fill_reader(fill: &Arc<Fill>, request: &HeaderMap) -> Option<FillReader> {
    let coded = fill.coded.as_ref().filter(|coded| {
        let Coding::Encoded(enc) = Coding::of(&coded.headers) else {
            return false;
        };
        !request.contains_key(RANGE)
            && encoding::choose(request, &[enc, encoding::Encoding::Identity]) == Some(enc)
    });
    if let Some(reader) = coded.and_then(Fill::reader) {
        return Some(reader);
    }
    fill_readable(fill, request)
        .then(|| fill.reader())
        .flatten()
}

/// Answers from a fill. A range request waits for the whole body so it can be sliced; if the
/// object turns out too large to keep, the viewer gets the full 200 stream instead.
pub(crate) async fn fill_response<B>(
    shared: &Shared,
    reader: FillReader,
    viewer: ViewerRef<'_>,
    fwd: Fwd,
    collapsed: bool,
) -> Response<CdnBody<B>> {
    let fill = reader.fill().clone();
    shared.metrics.served(CacheStatus::Miss);
    if collapsed {
        shared.metrics.collapsed.fetch_add(1, Ordering::Relaxed);
    }
    let cache_status = format!(
        "{}; fwd={}; fwd-status={}; stored{}",
        shared.cache_name,
        fwd.as_str(),
        fill.status.as_u16(),
        if collapsed { "; collapsed" } else { "" }
    );
    let mut source = Source::Fill(reader);
    if viewer.headers.contains_key(RANGE) && fill.status == StatusCode::OK {
        if let Some(body) = fill.settled().await {
            source = Source::Stored(body);
        }
    }
    let mut res = respond(
        shared,
        viewer,
        fill.status,
        &fill.headers,
        source,
        fill.initial_age,
        CacheStatus::Miss,
        cache_status,
    );
    if let Some(origin) = &fill.origin {
        res.extensions_mut().insert(origin.clone());
    }
    res
}

/// Adds the fields kept out of storage to the response of the viewer whose request brought
/// them from the origin (its own `Set-Cookie`, fields a qualified `private` names).
pub(crate) fn with_personal<B>(mut res: Response<B>, personal: HeaderMap) -> Response<B> {
    if personal.is_empty() {
        return res;
    }
    let headers = res.headers_mut();
    let mut name = None;
    for (next, value) in personal {
        if next.is_some() {
            name = next;
        }
        if let Some(name) = &name {
            headers.append(name.clone(), value);
        }
    }
    res
}

/// A response extension set by an inner service on the answer it made for an origin that
/// gave none (unreachable, timed out, request body over the limit): the edge's error, not the
/// origin's response, so it is served as an edge error (`X-Cache: Error`, RFC 9211 `detail`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct EdgeFailure {
    /// The Cache-Status `detail` token, e.g. `origin-timeout`.
    pub(crate) detail: &'static str,
}

pub(crate) fn pass_response<B>(
    shared: &Shared,
    res: Response<B>,
    fwd: Fwd,
    counted_as: CacheStatus,
) -> Response<CdnBody<B>> {
    if let Some(failure) = res.extensions().get::<EdgeFailure>().copied() {
        return failed(
            shared,
            res.map(CdnBody::origin),
            fwd.as_str(),
            failure.detail,
        );
    }
    let mut res = res.map(CdnBody::origin);
    shared.metrics.served(counted_as);
    let declared = res
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse().ok());
    shared.metrics.add_origin_bytes(declared.unwrap_or(0));
    let status = res.status().as_u16();
    let headers = res.headers_mut();
    headers.insert(X_CACHE.clone(), shared.x_cache.miss.clone());
    let cache_status = format!(
        "{}; fwd={}; fwd-status={status}",
        shared.cache_name,
        fwd.as_str()
    );
    if let Ok(v) = HeaderValue::try_from(cache_status) {
        headers.insert(CACHE_STATUS.clone(), v);
    }
    res
}

pub(crate) fn edge_error<B>(shared: &Shared, status: StatusCode) -> Response<CdnBody<B>> {
    let reason = status.canonical_reason().unwrap_or("error");
    let mut res = Response::new(CdnBody::full(Bytes::from(format!("{reason}\n"))));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    let detail = match status.as_u16() {
        502 => "origin-error",
        503 => "origin-busy",
        504 => "origin-timeout",
        _ => "",
    };
    failed(shared, res, "miss", detail)
}

/// `X-Cache: Error` and `Cache-Status: NAME; fwd=...[; detail=...]` (RFC 9211 §2.2, §2.7)
/// on an answer the edge made instead of the origin's.
fn failed<B>(
    shared: &Shared,
    mut res: Response<CdnBody<B>>,
    fwd: &str,
    detail: &str,
) -> Response<CdnBody<B>> {
    shared.metrics.served(CacheStatus::Error);
    let headers = res.headers_mut();
    headers.insert(X_CACHE.clone(), shared.x_cache.error.clone());
    let cache_status = match detail {
        "" => format!("{}; fwd={fwd}", shared.cache_name),
        detail => format!("{}; fwd={fwd}; detail={detail}", shared.cache_name),
    };
    if let Ok(v) = HeaderValue::try_from(cache_status) {
        headers.insert(CACHE_STATUS.clone(), v);
    }
    res
}

/// Applies a configured custom error response: the status, media type and body are replaced;
/// the edge's own fields (`Age`, `X-Cache`, `Cache-Status`) are kept.
pub(crate) fn custom_error<B>(
    shared: &Shared,
    mut res: Response<CdnBody<B>>,
) -> Response<CdnBody<B>> {
    if shared.custom_errors.is_empty()
        || !res.status().is_client_error() && !res.status().is_server_error()
    {
        return res;
    }
    let Some(custom) = shared
        .custom_errors
        .iter()
        .find(|c| c.status == res.status())
    else {
        return res;
    };
    let mut replaced = Response::new(CdnBody::full(custom.body.clone()));
    *replaced.status_mut() = custom.response_code.unwrap_or(custom.status);
    let headers = replaced.headers_mut();
    headers.insert(CONTENT_TYPE, custom.content_type.clone());
    headers.insert(CONTENT_LENGTH, HeaderValue::from(custom.body.len()));
    for name in [&AGE, &X_CACHE, &CACHE_STATUS] {
        if let Some(v) = res.headers_mut().remove(name) {
            headers.insert(name.clone(), v);
        }
    }
    replaced
}

/// Marks a response the edge made itself without the cache: a redirect or a hook's answer.
pub(crate) fn generated<B>(shared: &Shared, mut res: Response<CdnBody<B>>) -> Response<CdnBody<B>> {
    let status = if res.status().is_redirection() {
        CacheStatus::Redirect
    } else if res.status().is_client_error() || res.status().is_server_error() {
        CacheStatus::Error
    } else {
        CacheStatus::Generated
    };
    shared.metrics.served(status);
    res.headers_mut()
        .insert(X_CACHE.clone(), shared.x_cache.get(status).clone());
    res
}

/// The viewer-response phase, for every response: custom error responses, the edge's own
/// fields kept from viewers, the behavior's response headers policy and hook.
pub(crate) fn finish<B>(
    shared: &Shared,
    route: &Route,
    exchange: &Exchange<'_>,
    res: Response<CdnBody<B>>,
) -> Response<CdnBody<B>> {
    let request = exchange.headers;
    let mut res = custom_error(shared, res);
    let headers = res.headers_mut();
    for name in [
        &CDN_CACHE_CONTROL,
        &SURROGATE_CONTROL,
        &SURROGATE_KEY,
        &CACHE_TAG,
    ] {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
    let behavior = &route.behavior;
    if let Some(policy) = &behavior.response_headers {
        let result = headers
            .get(&X_CACHE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(' ').next())
            .unwrap_or("")
            .to_owned();
        policy.apply(request, headers, &result);
    }
    let res = match &behavior.hooks.viewer_response {
        Some(hook) => {
            let (mut parts, body) = res.into_parts();
            hook(&mut parts);
            Response::from_parts(parts, body)
        }
        None => res,
    };
    access_log(exchange, &res);
    res
}

/// The request side of one exchange, for the viewer-response phase and the access log.
#[derive(Clone, Copy)]
pub(crate) struct Exchange<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) started: Instant,
    /// The viewer's address and the connection's (see [`crate::client::addresses`]).
    pub(crate) client: Option<(IpAddr, IpAddr)>,
}

impl<'a> Exchange<'a> {
    pub(crate) fn of<B>(req: &'a Request<B>, started: Instant) -> Self {
        Self {
            method: req.method(),
            uri: req.uri(),
            headers: req.headers(),
            started,
            client: crate::client::addresses(req.extensions()),
        }
    }

    pub(crate) fn of_parts(parts: &'a http::request::Parts, started: Instant) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            started,
            client: crate::client::addresses(&parts.extensions),
        }
    }
}

/// The request side of an exchange, kept across an await.
pub(crate) struct OwnedExchange {
    method: Method,
    uri: Uri,
    pub(crate) headers: HeaderMap,
    started: Instant,
    client: Option<(IpAddr, IpAddr)>,
}

impl OwnedExchange {
    pub(crate) fn of<B>(req: &Request<B>, started: Instant) -> Self {
        let e = Exchange::of(req, started);
        Self {
            method: e.method.clone(),
            uri: e.uri.clone(),
            headers: e.headers.clone(),
            started,
            client: e.client,
        }
    }

    pub(crate) fn view(&self) -> Exchange<'_> {
        Exchange {
            method: &self.method,
            uri: &self.uri,
            headers: &self.headers,
            started: self.started,
            client: self.client,
        }
    }

    pub(crate) fn viewer(&self) -> ViewerRef<'_> {
        ViewerRef {
            method: &self.method,
            headers: &self.headers,
        }
    }
}

/// One event per request, with CloudFront standard-log style fields, at INFO on the
/// `tower_cdn::access` target (filter it like any tracing target). `client` is the viewer as
/// the trusted proxies resolve it (`X-Forwarded-For`), `peer` the connection's address;
/// fields are only computed when the event is enabled.
fn access_log<B>(exchange: &Exchange<'_>, res: &Response<B>) {
    /// An address in the log, `-` when unknown: formatted only when the event is enabled.
    struct OrDash(Option<IpAddr>);
    impl std::fmt::Display for OrDash {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self.0 {
                Some(ip) => ip.fmt(f),
                None => f.write_str("-"),
            }
        }
    }

    tracing::info!(
        target: "tower_cdn::access",
        client = %OrDash(exchange.client.map(|(viewer, _)| viewer)),
        peer = %OrDash(exchange.client.map(|(_, peer)| peer)),
        method = %exchange.method,
        host = %exchange.headers.get(HOST).and_then(|v| v.to_str().ok()).or(exchange.uri.host()).unwrap_or("-"),
        uri = %exchange.uri.path(),
        query = exchange.uri.query().unwrap_or("-"),
        status = res.status().as_u16(),
        bytes = res.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).unwrap_or("-"),
        time_taken_ms = exchange.started.elapsed().as_secs_f64() * 1000.0,
        result = res.headers().get(&X_CACHE).and_then(|v| v.to_str().ok()).and_then(|v| v.split(' ').next()).unwrap_or("-"),
        encoding = res.headers().get(CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("-"),
        range = exchange.headers.get(RANGE).and_then(|v| v.to_str().ok()).unwrap_or("-"),
        origin = res.extensions().get::<crate::OriginUsed>().map_or("-", crate::OriginUsed::name),
        "request"
    );
}
