//! [`CdnService`]: the request phases in order — method, key, lookup, reuse or fetch.

use std::collections::hash_map::RandomState;
use std::future::poll_fn;
use std::hash::{BuildHasher, Hasher};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{
    HeaderName, ACCEPT_RANGES, AGE, CONTENT_LENGTH, CONTENT_LOCATION, CONTENT_RANGE, CONTENT_TYPE,
    ETAG, IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, LAST_MODIFIED,
    LOCATION, RANGE,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::body::CdnBody;
use crate::collapse::{follow, FlightGuard, FlightState, Join};
use crate::entry::{weigh, Object, ReuseRules, Slot, VaryRecord};
use crate::fill::{End, Fill, FillReader};
use crate::future::ResponseFuture;
use crate::key::{host_of, scheme_of, CacheKey};
use crate::layer::Shared;
use crate::rfc::cache_control::{CacheControl, MaxStale};
use crate::rfc::conditional::{self, Precondition};
use crate::rfc::freshness::{corrected_initial_age, freshness_lifetime, storable};
use crate::rfc::headers::{remove_hop_by_hop, Vary};
use crate::rfc::range::{self, RangeOutcome};
use crate::status::{CacheStatus, NoStoreReason};
use crate::BoxError;

/// `Cache-Status` (RFC 9211).
static CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");
static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// Once a fill can no longer be stored, at most this many bytes wait for slow viewers.
const PASS_BUFFER: usize = 1024 * 1024;

/// The service [`CdnLayer`](crate::CdnLayer) wraps around an origin service.
///
/// `poll_ready` is always ready: hits never wait for the origin. Each trip to the origin
/// drives a clone of the inner service to readiness first, so the origin's backpressure
/// applies to misses only.
#[derive(Debug)]
pub struct CdnService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for CdnService<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S> CdnService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> Self {
        Self { inner, shared }
    }

    /// The inner (origin) service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Why a request went to the origin, for `Cache-Status: fwd=` (RFC 9211 §2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fwd {
    UriMiss,
    VaryMiss,
    Request,
    Stale,
    Method,
    Bypass,
}

impl Fwd {
    fn as_str(self) -> &'static str {
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

/// How a stored object may be used for a request (RFC 9111 §4.2, §5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Reuse {
    Fresh,
    /// Stale, but the request's `max-stale` accepts it.
    Stale,
    Revalidate(Fwd),
}

fn reuse(obj: &Object, cc: &CacheControl, now: SystemTime) -> Reuse {
    if obj.rules.no_cache || cc.no_cache {
        return Reuse::Revalidate(if cc.no_cache {
            Fwd::Request
        } else {
            Fwd::Stale
        });
    }
    let age = obj.age(now);
    let lifetime = obj.freshness_lifetime;
    if cc.max_age.is_some_and(|max| age > max) {
        return Reuse::Revalidate(Fwd::Request);
    }
    if cc
        .min_fresh
        .is_some_and(|min| lifetime < age.saturating_add(min))
    {
        return Reuse::Revalidate(Fwd::Request);
    }
    if lifetime > age {
        return Reuse::Fresh;
    }
    let staleness = age - lifetime;
    let accepted = match cc.max_stale {
        Some(MaxStale::Any) => true,
        Some(MaxStale::Seconds(s)) => staleness <= s,
        None => false,
    };
    if accepted && !obj.rules.no_stale {
        Reuse::Stale
    } else {
        Reuse::Revalidate(Fwd::Stale)
    }
}

/// The request fields the viewer's response depends on.
#[derive(Clone, Copy)]
struct ViewerRef<'a> {
    method: &'a Method,
    headers: &'a HeaderMap,
}

/// What a trip to the origin produced.
enum Fetched<B, E> {
    Stream(FillReader, Fwd),
    Done(Arc<Object>),
    Pass(Response<B>, Fwd),
    Failed(E),
    Edge(StatusCode),
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CdnService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    type Response = Response<CdnBody<ResB>>;
    type Error = S::Error;
    type Future = ResponseFuture<ResB, S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let head = match *req.method() {
            Method::GET => false,
            Method::HEAD => true,
            _ => return self.pass(req, Fwd::Method),
        };
        if !self.shared.enabled {
            return self.pass(req, Fwd::Bypass);
        }
        let now = self.shared.clock.now();
        let cc = CacheControl::parse_request(req.headers());
        let primary = CacheKey::for_request(&req);
        let (key, slot, fwd) = match self.shared.store.get(&primary) {
            Some(Slot::Vary(record)) => {
                let key = primary.variant(record.epoch, &record.names, req.headers());
                (key, self.shared.store.get(&key), Fwd::VaryMiss)
            }
            slot => (primary, slot, Fwd::UriMiss),
        };
        let mut stale = None;
        match slot {
            Some(Slot::Object(obj)) => match reuse(&obj, &cc, now) {
                Reuse::Fresh | Reuse::Stale => {
                    let viewer = ViewerRef {
                        method: req.method(),
                        headers: req.headers(),
                    };
                    let res = object_response(&self.shared, &obj, viewer, CacheStatus::Hit, now);
                    return ResponseFuture::ready(res);
                }
                Reuse::Revalidate(fwd) => stale = Some((obj, fwd)),
            },
            Some(Slot::Pass { until }) if until > now && !cc.only_if_cached => {
                return self.pass(req, Fwd::Bypass);
            }
            _ => {}
        }
        if cc.only_if_cached {
            // RFC 9111 §5.2.1.7
            return ResponseFuture::ready(edge_error(&self.shared, StatusCode::GATEWAY_TIMEOUT));
        }
        let fwd = stale.as_ref().map_or(fwd, |(_, f)| *f);
        if head || cc.no_store {
            // A HEAD miss cannot fill the cache; `no-store` forbids keeping the answer.
            return self.pass(req, fwd);
        }
        let stale = stale.map(|(obj, _)| obj);
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        let (method, headers) = (req.method().clone(), req.headers().clone());
        ResponseFuture::origin(async move {
            let viewer = ViewerRef {
                method: &method,
                headers: &headers,
            };
            let guard = match shared.flights.join(key) {
                Join::Leader(guard) => Some(guard),
                Join::Follower(rx) => {
                    match tokio::time::timeout(shared.collapse_timeout, follow(rx)).await {
                        Ok(FlightState::Streaming(fill)) => {
                            if let Some(reader) = fill.reader() {
                                return Ok(fill_response(&shared, reader, viewer, fwd, true).await);
                            }
                        }
                        Ok(FlightState::Done(obj)) => {
                            let now = shared.clock.now();
                            return Ok(object_response(
                                &shared,
                                &obj,
                                viewer,
                                CacheStatus::RefreshHit,
                                now,
                            ));
                        }
                        Ok(FlightState::Pending | FlightState::Abandoned) | Err(_) => {}
                    }
                    None
                }
            };
            let fetch = Fetch {
                shared: shared.clone(),
                primary,
                key,
                stale,
                guard,
                fwd,
                request_cc: cc,
            };
            let (tx, rx) = oneshot::channel();
            tokio::spawn(fetch.run(inner, req, tx));
            match rx.await {
                Ok(Fetched::Stream(reader, fwd)) => {
                    Ok(fill_response(&shared, reader, viewer, fwd, false).await)
                }
                Ok(Fetched::Done(obj)) => {
                    let now = shared.clock.now();
                    Ok(object_response(
                        &shared,
                        &obj,
                        viewer,
                        CacheStatus::RefreshHit,
                        now,
                    ))
                }
                Ok(Fetched::Pass(res, fwd)) => Ok(pass_response(&shared, res, fwd)),
                Ok(Fetched::Failed(e)) => Err(e),
                Ok(Fetched::Edge(status)) => Ok(edge_error(&shared, status)),
                Err(_) => Ok(edge_error(&shared, StatusCode::BAD_GATEWAY)),
            }
        })
    }
}

impl<S> CdnService<S> {
    /// Sends the request to the origin untouched; a successful unsafe method invalidates the
    /// URLs it names (RFC 9111 §4.4).
    fn pass<ReqB, ResB>(&mut self, req: Request<ReqB>, fwd: Fwd) -> ResponseFuture<ResB, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        ReqB: Send + 'static,
        ResB: Send + 'static,
    {
        let unsafe_method = !matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let target = unsafe_method.then(|| {
            (
                req.uri().clone(),
                req.headers().get(http::header::HOST).cloned(),
            )
        });
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        ResponseFuture::origin(async move {
            let res = call_origin(inner, req).await?;
            if let Some((uri, host)) = target {
                let status = res.status();
                if status.is_success() || status.is_redirection() {
                    invalidate(&shared, &uri, host.as_ref(), res.headers());
                }
            }
            Ok(pass_response(&shared, res, fwd))
        })
    }
}

/// Removes the target URI and the same-origin `Location` / `Content-Location` URIs
/// (RFC 9111 §4.4). Variants go with their `Vary` record.
fn invalidate(shared: &Shared, uri: &Uri, host: Option<&HeaderValue>, response: &HeaderMap) {
    let mut host_headers = HeaderMap::new();
    if let Some(h) = host {
        host_headers.insert(http::header::HOST, h.clone());
    }
    let scheme = scheme_of(uri);
    let host = host_of(uri, &host_headers);
    shared
        .store
        .remove(&CacheKey::for_parts(scheme, host, uri.path(), uri.query()));
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(target) = response.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(target) = target.parse::<Uri>() else {
            continue;
        };
        let same_origin = match target.authority() {
            Some(a) => {
                a.as_str().as_bytes().eq_ignore_ascii_case(host)
                    && target
                        .scheme_str()
                        .is_none_or(|s| s.eq_ignore_ascii_case(scheme))
            }
            None => target.path().starts_with('/'),
        };
        if same_origin {
            shared.store.remove(&CacheKey::for_parts(
                scheme,
                host,
                target.path(),
                target.query(),
            ));
        }
    }
}

async fn call_origin<S, R>(mut inner: S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(req).await
}

/// A trip to the origin for one key, run as its own task so that a viewer going away does
/// not cancel it: followers are still served, and the object is still stored.
struct Fetch {
    shared: Arc<Shared>,
    primary: CacheKey,
    key: CacheKey,
    stale: Option<Arc<Object>>,
    guard: Option<FlightGuard>,
    fwd: Fwd,
    request_cc: CacheControl,
}

/// What a storable response will be stored as.
struct Plan {
    headers: HeaderMap,
    vary: Vary,
    freshness_lifetime: u64,
    initial_age: u64,
    rules: ReuseRules,
}

impl Fetch {
    async fn run<S, ReqB, ResB>(
        mut self,
        inner: S,
        req: Request<ReqB>,
        reply: oneshot::Sender<Fetched<ResB, S::Error>>,
    ) where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        ResB: Body<Data = Bytes>,
    {
        let (mut parts, body) = req.into_parts();
        let request_headers = parts.headers.clone();
        let host: Box<str> = String::from_utf8_lossy(host_of(&parts.uri, &parts.headers)).into();
        let path: Box<str> = parts.uri.path().into();
        // The origin must send the whole object, whatever this viewer's conditions: the
        // answer is shared and stored. The viewer's conditions are evaluated at the edge.
        for name in [
            IF_MATCH,
            IF_NONE_MATCH,
            IF_MODIFIED_SINCE,
            IF_UNMODIFIED_SINCE,
            IF_RANGE,
            RANGE,
        ] {
            parts.headers.remove(name);
        }
        if let Some(stale) = &self.stale {
            // RFC 9111 §4.3.1
            if let Some(etag) = stale.etag() {
                parts.headers.insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = stale.last_modified() {
                parts.headers.insert(IF_MODIFIED_SINCE, lm.clone());
            }
        }
        let request_time = self.shared.clock.now();
        let res = match call_origin(inner, Request::from_parts(parts, body)).await {
            Ok(res) => res,
            Err(e) => {
                let _ = reply.send(Fetched::Failed(e));
                return;
            }
        };
        let response_time = self.shared.clock.now();

        if res.status() == StatusCode::NOT_MODIFIED {
            if let Some(stale) = self.stale.take() {
                if !conditional::not_modified_selects(&stale.headers, res.headers()) {
                    // RFC 9111 §4.3.4: a 304 for other validators must not update the object,
                    // and cannot stand in for the full response this request needs.
                    self.shared.store.remove(&self.key);
                    let _ = reply.send(Fetched::Edge(StatusCode::BAD_GATEWAY));
                    return;
                }
                let obj = self.refresh(
                    &stale,
                    res.headers(),
                    request_time,
                    response_time,
                    &request_headers,
                );
                if let Some(guard) = &self.guard {
                    guard.publish(FlightState::Done(obj.clone()));
                }
                let _ = reply.send(Fetched::Done(obj));
                return;
            }
        }

        let plan = match self.plan(&res, &request_headers, request_time, response_time) {
            Ok(plan) => plan,
            Err(reason) => {
                if marks_pass(reason) {
                    let until = response_time + self.shared.hit_for_pass;
                    self.shared.store.insert(self.key, Slot::Pass { until });
                } else if self.stale.is_some() {
                    self.shared.store.remove(&self.key);
                }
                let _ = reply.send(Fetched::Pass(res, self.fwd));
                return;
            }
        };

        let (head, body) = res.into_parts();
        let fill = Fill::new(head.status, plan.headers.clone(), plan.initial_age);
        let reader = fill.reader().expect("a new fill has no released chunks");
        if let Some(guard) = &self.guard {
            guard.publish(FlightState::Streaming(fill.clone()));
        }
        // The viewer may be gone already; the fill goes on for the followers and the store.
        let _ = reply.send(Fetched::Stream(reader, self.fwd));

        let mut body = pin!(body);
        let mut keeping = true;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else {
                fill.finish(End::Failed);
                return;
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            fill.push(data);
            if keeping && fill.buffered() as u64 > self.shared.max_object_size {
                keeping = false;
                fill.stop_keeping();
                self.guard = None;
                let until = response_time + self.shared.hit_for_pass;
                self.shared.store.insert(self.key, Slot::Pass { until });
            }
            if !keeping && fill.wait_for_readers(PASS_BUFFER).await == 0 {
                fill.finish(End::Failed);
                return;
            }
        }
        fill.finish(End::Complete);
        if let Some(body) = keeping.then(|| fill.body()).flatten() {
            let obj = Object {
                status: head.status,
                weight: weigh(&plan.headers, &body, host.len() + path.len()),
                headers: plan.headers,
                body,
                response_time,
                corrected_initial_age: plan.initial_age,
                freshness_lifetime: plan.freshness_lifetime,
                rules: plan.rules,
                host,
                path,
            };
            self.commit(Arc::new(obj), &plan.vary, &request_headers);
        }
    }

    /// Decides whether and how a full response is stored (RFC 9111 §3).
    fn plan<B>(
        &self,
        res: &Response<B>,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Result<Plan, NoStoreReason> {
        let cc = CacheControl::parse(res.headers());
        let rules = &self.shared.rules;
        storable(
            &Method::GET,
            &self.request_cc,
            request_headers,
            res.status(),
            &cc,
            res.headers(),
            rules,
        )?;
        let freshness_lifetime = freshness_lifetime(res.status(), &cc, res.headers(), rules)
            .ok_or(NoStoreReason::NoFreshness)?;
        let vary = Vary::parse(res.headers());
        if vary == Vary::Star {
            return Err(NoStoreReason::VaryStar);
        }
        let declared = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.shared.max_object_size) {
            return Err(NoStoreReason::TooLarge);
        }
        let mut headers = res.headers().clone();
        remove_hop_by_hop(&mut headers);
        // §5.2.2.4, §5.2.2.7: qualified no-cache / private fields are not stored.
        for name in cc.private_fields.iter().chain(&cc.no_cache_fields) {
            headers.remove(name);
        }
        Ok(Plan {
            headers,
            vary,
            freshness_lifetime,
            initial_age: corrected_initial_age(res.headers(), request_time, response_time),
            rules: ReuseRules {
                no_cache: cc.no_cache,
                no_stale: cc.forbids_stale(),
                stale_while_revalidate: cc.stale_while_revalidate.unwrap_or(0),
                stale_if_error: cc.stale_if_error.unwrap_or(0),
            },
        })
    }

    /// A stored object updated by a 304 (RFC 9111 §4.3.4).
    fn refresh(
        &self,
        stale: &Object,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        request_headers: &HeaderMap,
    ) -> Arc<Object> {
        let mut headers = stale.headers.clone();
        conditional::merge_not_modified(&mut headers, not_modified);
        let cc = CacheControl::parse(&headers);
        let rules = &self.shared.rules;
        let freshness_lifetime =
            freshness_lifetime(stale.status, &cc, &headers, rules).unwrap_or(0);
        let obj = Arc::new(Object {
            status: stale.status,
            weight: weigh(&headers, &stale.body, stale.host.len() + stale.path.len()),
            body: stale.body.clone(),
            response_time,
            corrected_initial_age: corrected_initial_age(not_modified, request_time, response_time),
            freshness_lifetime,
            rules: ReuseRules {
                no_cache: cc.no_cache,
                no_stale: cc.forbids_stale(),
                stale_while_revalidate: cc.stale_while_revalidate.unwrap_or(0),
                stale_if_error: cc.stale_if_error.unwrap_or(0),
            },
            host: stale.host.clone(),
            path: stale.path.clone(),
            headers,
        });
        self.commit(obj.clone(), &Vary::parse(&obj.headers), request_headers);
        obj
    }

    /// Stores an object under its URL, or under its variant key behind a `Vary` record.
    fn commit(&self, obj: Arc<Object>, vary: &Vary, request_headers: &HeaderMap) {
        let store = &self.shared.store;
        match vary {
            Vary::Fields(names) => {
                let epoch = match store.get(&self.primary) {
                    Some(Slot::Vary(record)) if record.names == *names => record.epoch,
                    _ => {
                        let epoch = self.shared.next_epoch();
                        let record = VaryRecord {
                            names: names.clone(),
                            epoch,
                        };
                        store.insert(self.primary, Slot::Vary(Arc::new(record)));
                        epoch
                    }
                };
                store.insert(
                    self.primary.variant(epoch, names, request_headers),
                    Slot::Object(obj),
                );
            }
            Vary::None | Vary::Star => store.insert(self.primary, Slot::Object(obj)),
        }
    }
}

/// Reasons that depend on the response, not on this request: later requests for the URL
/// skip collapsing for a while.
fn marks_pass(reason: NoStoreReason) -> bool {
    !matches!(
        reason,
        NoStoreReason::RequestNoStore | NoStoreReason::Authorization | NoStoreReason::Method
    )
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

fn object_response<B>(
    shared: &Shared,
    obj: &Object,
    viewer: ViewerRef<'_>,
    outcome: CacheStatus,
    now: SystemTime,
) -> Response<CdnBody<B>> {
    let ttl = obj.ttl(now);
    let cache_status = match outcome {
        CacheStatus::RefreshHit => format!(
            "{}; fwd=stale; fwd-status=304; ttl={ttl}",
            shared.cache_name
        ),
        _ => format!("{}; hit; ttl={ttl}", shared.cache_name),
    };
    let source = Source::Stored(obj.body.clone());
    respond(
        shared,
        viewer,
        obj.status,
        &obj.headers,
        source,
        obj.age(now),
        outcome,
        cache_status,
    )
}

/// Answers from a fill. A range request waits for the whole body so it can be sliced; if the
/// object turns out too large to keep, the viewer gets the full 200 stream instead.
async fn fill_response<B>(
    shared: &Shared,
    reader: FillReader,
    viewer: ViewerRef<'_>,
    fwd: Fwd,
    collapsed: bool,
) -> Response<CdnBody<B>> {
    let fill = reader.fill().clone();
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
    respond(
        shared,
        viewer,
        fill.status,
        &fill.headers,
        source,
        fill.initial_age,
        CacheStatus::Miss,
        cache_status,
    )
}

fn pass_response<B>(shared: &Shared, res: Response<B>, fwd: Fwd) -> Response<CdnBody<B>> {
    let mut res = res.map(CdnBody::origin);
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

fn edge_error<B>(shared: &Shared, status: StatusCode) -> Response<CdnBody<B>> {
    let reason = status.canonical_reason().unwrap_or("error");
    let mut res = Response::new(CdnBody::full(Bytes::from(format!("{reason}\n"))));
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(X_CACHE.clone(), shared.x_cache.error.clone());
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::try_from(format!("{}; fwd=miss", shared.cache_name)) {
        headers.insert(CACHE_STATUS.clone(), v);
    }
    res
}
