//! A trip to the origin for one key: conditional request, storage decision, fill, commit.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, IF_MATCH, IF_MODIFIED_SINCE,
    IF_NONE_MATCH, IF_RANGE, IF_UNMODIFIED_SINCE, RANGE, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body::Body;
use http_body_util::BodyExt;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::behavior::Route;
use crate::collapse::{Audience, FlightGuard, FlightState};
use crate::encoding::{self, is_compressible, StreamEncoder, MAX_COMPRESS_SIZE, MIN_COMPRESS_SIZE};
use crate::entry::{weigh, Coding, Object, ReuseRules, Slot, Variant, VaryRecord};
use crate::fill::{End, Fill, FillReader};
use crate::key::{host_of, with_path_and_query, CacheKey};
use crate::layer::Shared;
use crate::purge::{tags_fit, tags_of};
use crate::respond::{fill_reader, EdgeFailure, Fwd, Served};
use crate::rfc::cache_control::CacheControl;
use crate::rfc::conditional::{self, connection_overflows};
use crate::rfc::freshness::{corrected_initial_age, storable, stored_lifetime, stores_set_cookie};
use crate::rfc::headers::{comma_list, remove_hop_by_hop, Vary};
use crate::rfc::headers::{CDN_CACHE_CONTROL, SURROGATE_CONTROL};
use crate::status::NoStoreReason;
use crate::variants::variant_headers;
use crate::BoxError;

/// Once a fill can no longer be stored, at most this many bytes wait for slow viewers.
const PASS_BUFFER: usize = 1024 * 1024;

/// What a trip to the origin produced. The `HeaderMap`s are the fields kept out of storage
/// that only the viewer whose request went to the origin receives (its `Set-Cookie`, fields
/// a qualified `private` or `no-cache` names).
pub(crate) enum Fetched<B> {
    Stream(FillReader, Fwd, HeaderMap),
    /// Refreshed by a 304.
    Done(Arc<Object>, HeaderMap),
    /// Confirmed by a 304 that could not update it (RFC 9111 §4.3.4): served as stored.
    Unchanged(Arc<Object>),
    /// The origin failed, or could not be reached, and the stale object stands in: served
    /// as this says.
    StaleOnError(Arc<Object>, Served),
    /// Found in the shared tier, stored in memory under this key.
    #[cfg(feature = "redis")]
    Shared(CacheKey, Arc<Object>),
    Pass(Response<B>, Fwd),
    /// The edge answers with this error status itself.
    Edge(StatusCode),
}

pub(crate) async fn call_origin<S, R>(mut inner: S, req: R) -> Result<S::Response, S::Error>
where
    S: Service<R>,
{
    poll_fn(|cx| inner.poll_ready(cx)).await?;
    inner.call(req).await
}

/// A trip to the origin for one key, run as its own task so that a viewer going away does
/// not cancel it: followers are still served, and the object is still stored.
pub(crate) struct Fetch {
    pub(crate) shared: Arc<Shared>,
    pub(crate) route: Arc<Route>,
    pub(crate) primary: CacheKey,
    pub(crate) key: CacheKey,
    pub(crate) stale: Option<Arc<Object>>,
    pub(crate) guard: Option<FlightGuard>,
    pub(crate) fwd: Fwd,
    pub(crate) request_cc: CacheControl,
    pub(crate) method: Method,
    /// The purge generation when the origin request left.
    pub(crate) generation: u64,
    /// The origin shield lock this trip holds for the fleet, released after write-through.
    #[cfg(feature = "redis")]
    pub(crate) shield: Option<Arc<crate::tier::Lease>>,
}

/// What a storable response will be stored as.
pub(crate) struct Plan {
    headers: HeaderMap,
    /// Fields of the response not stored, for the viewer whose request this is.
    personal: HeaderMap,
    vary: Vary,
    /// Who else may read the fill: the requests that select this request's variant.
    audience: Audience,
    freshness_lifetime: u64,
    initial_age: u64,
    rules: ReuseRules,
    coding: Coding,
    compressible: bool,
    /// The `Vary` lines as the origin sent them, when `Accept-Encoding` was added to them
    /// before the body's size was known: put back if the body turns out not compressible.
    origin_vary: Option<Vec<HeaderValue>>,
    /// The body's length, when known before it arrives.
    length: Option<u64>,
}

/// `CDN-Cache-Control` (RFC 9213), else `Surrogate-Control`: when present with a valid
/// value, the edge's caching follows it and ignores `Cache-Control` and `Expires` (RFC 9213
/// §2.2); both are kept from viewers. Returns the directives, and, when a targeted field
/// is used, the fields to read freshness from (without `Expires`).
pub(crate) fn edge_cache_control(headers: &HeaderMap) -> (CacheControl, Option<HeaderMap>) {
    // `CDN-Cache-Control` is a structured field (RFC 9213 §2.1); `Surrogate-Control` is not,
    // and is read like `Cache-Control`.
    let targeted = CacheControl::parse_targeted(headers, &CDN_CACHE_CONTROL)
        .or_else(|| CacheControl::parse_field(headers, &SURROGATE_CONTROL));
    match targeted {
        Some(cc) => {
            let mut fields = headers.clone();
            fields.remove(http::header::EXPIRES);
            (cc, Some(fields))
        }
        None => (CacheControl::parse(headers), None),
    }
}

/// Applies a behavior's origin request policy and hook to a request about to leave.
///
/// Under a key-only policy (the default) the query and the cookies are cut down by the same
/// functions that build the cache key, plus what the policy names: the origin sees no
/// parameter or cookie that the key did not account for, unless the operator said so.
pub(crate) fn origin_request(route: &Route, parts: &mut http::request::Parts) {
    let behavior = &route.behavior;
    if let Some(target) = &behavior.target_origin {
        parts.extensions.insert(target.clone());
    }
    let forward = &behavior.origin_request;
    if forward.key_only_enabled() {
        let policy = &behavior.key_policy;
        let query = policy.origin_query(parts.uri.query(), forward.extra_query());
        // A `?` with nothing after it goes too: the key does not tell `/a?` from `/a`.
        if parts
            .uri
            .query()
            .is_some_and(|q| q.is_empty() || *q != *query)
        {
            let path = parts.uri.path();
            let pq = if query.is_empty() {
                path.to_owned()
            } else {
                format!("{path}?{query}")
            };
            // Parts of a valid query make a valid one; were it not so, the query goes whole.
            let uri = with_path_and_query(&parts.uri, &pq)
                .or_else(|| with_path_and_query(&parts.uri, path));
            if let Some(uri) = uri {
                parts.uri = uri;
            }
        }
        if parts.headers.contains_key(http::header::COOKIE) {
            let cookies: Vec<String> = policy
                .origin_cookies(&parts.headers, forward.extra_cookies())
                .map(|(n, v)| format!("{n}={v}"))
                .collect();
            parts.headers.remove(http::header::COOKIE);
            if let Ok(v) = HeaderValue::try_from(cookies.join("; ")) {
                if !cookies.is_empty() {
                    parts.headers.insert(http::header::COOKIE, v);
                }
            }
        }
    }
    if let Some(hook) = &behavior.hooks.origin_request {
        hook(parts);
    }
}

/// Applies a behavior's origin-response hook.
pub(crate) fn origin_response<B>(route: &Route, res: Response<B>) -> Response<B> {
    match &route.behavior.hooks.origin_response {
        Some(hook) => {
            let (mut parts, body) = res.into_parts();
            hook(&mut parts);
            Response::from_parts(parts, body)
        }
        None => res,
    }
}

/// The `Vary` that keys stored variants. `Accept-Encoding` is left out when the edge
/// understands the body's coding: it serves every viewer the coding it accepts from one
/// object, so the key does not fragment per `Accept-Encoding` string.
fn storage_vary(headers: &HeaderMap, coding: Coding) -> Vary {
    let vary = Vary::parse(headers);
    if coding == Coding::Opaque {
        return vary;
    }
    vary.without(&http::header::ACCEPT_ENCODING)
}

/// Adds `name` to `Vary` unless listed (or `*`), keeping one comma-separated line. Returns
/// the lines it replaced, if it changed them.
fn merge_vary(headers: &mut HeaderMap, name: &'static str) -> Option<Vec<HeaderValue>> {
    let lines: Vec<&[u8]> = headers.get_all(VARY).iter().flat_map(comma_list).collect();
    if lines
        .iter()
        .any(|m| m.eq_ignore_ascii_case(name.as_bytes()) || *m == b"*")
    {
        return None;
    }
    let mut merged = lines.join(&b", "[..]);
    if !merged.is_empty() {
        merged.extend_from_slice(b", ");
    }
    merged.extend_from_slice(b"Accept-Encoding");
    let value = HeaderValue::from_bytes(&merged).ok()?;
    let original = headers.get_all(VARY).iter().cloned().collect();
    headers.insert(VARY, value);
    Some(original)
}

/// Whether the response is the inner service's own answer for an origin it could not reach
/// (the server's proxy marks its 502 and 504 so), rather than the origin's.
fn unreachable(res: &Response<impl Sized>) -> bool {
    matches!(res.status().as_u16(), 502 | 504) && res.extensions().get::<EdgeFailure>().is_some()
}

/// Who may share `obj` with the request `leader`: the requests selecting the same variant
/// under the object's `Vary`; `None` when it can never be matched.
fn object_audience(obj: &Object, leader: &HeaderMap) -> Option<Audience> {
    Audience::of(&storage_vary(&obj.headers, obj.coding), leader)
}

/// Moves the fields a stored copy must not keep out of `headers`: those a qualified
/// `private` (RFC 9111 §5.2.2.7) or `no-cache` (§5.2.2.4) names and, when asked, `Set-Cookie`.
/// They are returned for the one viewer whose request brought the response.
fn withhold(headers: &mut HeaderMap, cc: &CacheControl, set_cookie: bool) -> HeaderMap {
    let mut personal = HeaderMap::new();
    let named = cc.private_fields.iter().chain(&cc.no_cache_fields);
    let cookie = set_cookie.then_some(&http::header::SET_COOKIE);
    for name in named.chain(cookie) {
        if let http::header::Entry::Occupied(entry) = headers.entry(name) {
            let (name, values) = entry.remove_entry_mult();
            for value in values {
                personal.append(name.clone(), value);
            }
        }
    }
    personal
}

impl Fetch {
    /// A trip to the origin for `key` (under `primary`'s `Vary` record), leading no flight
    /// and with no stale object to revalidate; the purge generation is read now, and again
    /// when the request leaves.
    pub(crate) fn new(
        shared: Arc<Shared>,
        route: Arc<Route>,
        primary: CacheKey,
        key: CacheKey,
        fwd: Fwd,
        request_cc: CacheControl,
        method: Method,
    ) -> Self {
        let generation = shared.purge_generation.load(Ordering::SeqCst);
        Fetch {
            shared,
            route,
            primary,
            key,
            stale: None,
            guard: None,
            fwd,
            request_cc,
            method,
            generation,
            #[cfg(feature = "redis")]
            shield: None,
        }
    }

    /// Revalidates `stale` (RFC 9111 §4.3.1), or stands it in when the origin fails.
    pub(crate) fn with_stale(mut self, stale: Option<Arc<Object>>) -> Self {
        self.stale = stale;
        self
    }

    /// Publishes the outcome to the flight `guard` leads.
    pub(crate) fn with_guard(mut self, guard: Option<FlightGuard>) -> Self {
        self.guard = guard;
        self
    }

    pub(crate) async fn run<S, ReqB, ResB>(
        mut self,
        inner: S,
        req: Request<ReqB>,
        reply: oneshot::Sender<Fetched<ResB>>,
    ) where
        S: Service<Request<ReqB>, Response = Response<ResB>>,
        S::Error: Into<BoxError>,
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
        origin_request(&self.route, &mut parts);
        if let Some(stale) = &self.stale {
            // RFC 9111 §4.3.1
            if let Some(etag) = stale.etag() {
                parts.headers.insert(IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = stale.last_modified() {
                parts.headers.insert(IF_MODIFIED_SINCE, lm.clone());
            }
        }
        // What this request brings back may be stored only if no purge comes in between.
        self.generation = self.shared.purge_generation.load(Ordering::SeqCst);
        #[cfg(feature = "redis")]
        if let Some(found) = crate::tier::before_origin(&mut self, &request_headers).await {
            if found.share {
                if let Some(audience) = object_audience(&found.obj, &request_headers) {
                    self.publish(FlightState::Shared(found.obj.clone(), audience));
                }
            }
            let _ = reply.send(Fetched::Shared(found.key, found.obj));
            return;
        }
        // A cap on concurrent origin requests (held until the body is read): over it, wait
        // a bounded time, then answer as for a failed origin.
        let _permit = match &self.shared.origin_concurrency {
            Some(cap) => match cap.acquire().await {
                Ok(permit) => Some(permit),
                Err(_) => {
                    tracing::warn!(path = %path, "origin concurrency cap reached");
                    let status = StatusCode::SERVICE_UNAVAILABLE;
                    return self.origin_failed(status, false, &request_headers, reply);
                }
            },
            None => None,
        };
        let request_time = self.shared.clock.now();
        let started = Instant::now();
        let origin = call_origin(inner, Request::from_parts(parts, body));
        let res = match tokio::time::timeout(self.shared.origin_timeout, origin).await {
            Ok(Ok(res)) => res,
            Ok(Err(e)) => {
                self.shared.metrics.origin(started.elapsed(), true);
                let e: BoxError = e.into();
                tracing::warn!(error = %e, path = %path, "origin request failed");
                let status = StatusCode::BAD_GATEWAY;
                return self.origin_failed(status, true, &request_headers, reply);
            }
            Err(_) => {
                self.shared.metrics.origin(started.elapsed(), true);
                tracing::warn!(path = %path, "origin did not answer in time");
                let status = StatusCode::GATEWAY_TIMEOUT;
                return self.origin_failed(status, true, &request_headers, reply);
            }
        };
        if unreachable(&res) {
            // Not the origin's answer: nothing to store, and no hit-for-pass for a blip.
            self.shared.metrics.origin(started.elapsed(), true);
            let status = res.status();
            if let Some((stale, served)) = self.stale_for_failure(true) {
                self.publish_stale(&stale, &request_headers);
                let _ = reply.send(Fetched::StaleOnError(stale, served));
            } else {
                self.publish(FlightState::Failed(status));
                let _ = reply.send(Fetched::Pass(res, self.fwd));
            }
            return;
        }
        self.shared.metrics.origin(started.elapsed(), false);
        let response_time = self.shared.clock.now();
        let res = origin_response(&self.route, res);

        // RFC 5861 §4: a server error may be answered with a stale object.
        if matches!(res.status().as_u16(), 500 | 502 | 503 | 504) {
            if let Some((stale, served)) = self.stale_for_failure(false) {
                self.publish_stale(&stale, &request_headers);
                let _ = reply.send(Fetched::StaleOnError(stale, served));
                return;
            }
        }

        if res.status() == StatusCode::NOT_MODIFIED {
            if let Some(stale) = self.stale.take() {
                if !conditional::not_modified_selects(&stale.headers, res.headers()) {
                    // RFC 9111 §4.3.4: a 304 whose validators select no stored response must
                    // not update one. It still answers the conditions the edge made from
                    // this object's validators, so the origin confirmed the object for this
                    // request: this viewer (and its followers) get it as stored. It is then
                    // dropped, so the next request asks without conditions and stores the
                    // full response (this one cannot be sent twice: its body is gone).
                    self.shared.store.remove_if_same(&self.key, &stale);
                    if let Some(audience) = object_audience(&stale, &request_headers) {
                        self.publish(FlightState::Done(stale.clone(), audience));
                    }
                    let _ = reply.send(Fetched::Unchanged(stale));
                    return;
                }
                let (obj, personal) = self.refresh(
                    &stale,
                    res.headers(),
                    request_time,
                    response_time,
                    &request_headers,
                );
                let _ = reply.send(Fetched::Done(obj, personal));
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
        let origin = head.extensions.get::<crate::OriginUsed>().cloned();
        let audience = plan.audience.clone();
        // A viewer that accepts a coding gets the body compressed as it arrives (CloudFront
        // compresses on the miss); the coding is then stored with the object. Only for the
        // coding the viewer whose request this is prefers: others are made on first request.
        let size_hint = plan.length.and_then(|len| usize::try_from(len).ok());
        let mut encoder = (plan.compressible && plan.coding == Coding::Identity)
            .then(|| encoding::choose(&request_headers, encoding::MADE))
            .flatten()
            .and_then(|enc| Some((enc, StreamEncoder::new(enc, size_hint)?)));
        let coded = encoder.as_ref().map(|(enc, _)| {
            let mut headers = variant_headers(&plan.headers, *enc, 0);
            headers.remove(CONTENT_LENGTH);
            let (origin, audience) = (origin.clone(), audience.clone());
            Fill::new(head.status, headers, plan.initial_age, origin, audience)
        });
        let fill = Fill::with_coded(
            head.status,
            plan.headers.clone(),
            plan.initial_age,
            origin,
            audience,
            coded.clone(),
        );
        // Both fills end alike: a failed body fails every reader of either.
        let finish = |end: End| {
            fill.finish(end);
            if let Some(coded) = &coded {
                coded.finish(end);
            }
        };
        let reader = fill_reader(&fill, &request_headers)
            .or_else(|| fill.reader())
            .expect("a new fill has no released chunks");
        if let Some(guard) = &self.guard {
            guard.publish(FlightState::Streaming(fill.clone()));
        }
        // The viewer may be gone already; the fill goes on for the followers and the store.
        let personal = plan.personal;
        let _ = reply.send(Fetched::Stream(reader, self.fwd, personal));

        let mut body = pin!(body);
        let mut keeping = true;
        let mut received = 0;
        loop {
            // The origin timeout also bounds the wait for each piece of the body.
            let frame = match tokio::time::timeout(self.shared.origin_timeout, body.frame()).await {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    tracing::warn!(path = %path, "origin body failed before its end");
                    finish(End::Failed);
                    return;
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            received += data.len() as u64;
            if let (Some((_, stream)), Some(coded)) = (&mut encoder, &coded) {
                // Pieces are small (a frame each): compressing one holds this task briefly.
                match stream.write(&data) {
                    Ok(out) => coded.push(out),
                    Err(_) => {
                        coded.finish(End::Failed);
                        encoder = None;
                    }
                }
            }
            fill.push(data);
            if keeping && fill.buffered() as u64 > self.shared.max_object_size {
                keeping = false;
                fill.stop_keeping();
                if let Some(coded) = &coded {
                    coded.stop_keeping();
                }
                self.guard = None;
                let until = response_time + self.shared.hit_for_pass;
                self.shared.store.insert(self.key, Slot::Pass { until });
            }
            if !keeping {
                let mut readers = fill.wait_for_readers(PASS_BUFFER).await;
                if let Some(coded) = &coded {
                    readers += coded.wait_for_readers(PASS_BUFFER).await;
                }
                if readers == 0 {
                    finish(End::Failed);
                    return;
                }
            }
        }
        self.shared.metrics.add_origin_bytes(received);
        let mut made = None;
        if let (Some((enc, stream)), Some(coded)) = (encoder, &coded) {
            match stream.finish() {
                Ok(tail) => {
                    coded.push(tail);
                    made = Some(enc);
                    let metrics = &self.shared.metrics;
                    metrics.compressions.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .compressed_bytes_in
                        .fetch_add(received, Ordering::Relaxed);
                }
                Err(_) => coded.finish(End::Failed),
            }
        }
        // Stored before the readers see the end, so a viewer that has read the whole body
        // and asks again finds the object.
        if let Some(body) = keeping.then(|| fill.kept_body()).flatten() {
            let compressible = plan.compressible
                && match plan.coding {
                    Coding::Identity => {
                        (MIN_COMPRESS_SIZE..=MAX_COMPRESS_SIZE).contains(&body.len())
                    }
                    _ => body.len() <= MAX_COMPRESS_SIZE,
                };
            let mut headers = plan.headers;
            if let (false, Coding::Identity, Some(lines)) =
                (compressible, plan.coding, plan.origin_vary)
            {
                // Not compressible after all: the stored object never varies on the coding.
                headers.remove(VARY);
                for line in lines {
                    headers.append(VARY, line);
                }
            }
            let mut weight = weigh(&headers, &body, host.len() + path.len());
            // The coding made while filling is kept with the object: both are stored.
            let mut variants = Vec::new();
            let coded_body = made
                .filter(|_| compressible)
                .zip(coded.as_ref().and_then(|c| c.kept_body()));
            if let Some((enc, coded_body)) = coded_body {
                let variant = Variant {
                    encoding: enc,
                    headers: variant_headers(&headers, enc, coded_body.len()),
                    body: coded_body,
                };
                let variant_weight = weigh(&variant.headers, &variant.body, 0);
                if weight + variant_weight <= self.shared.store.max_object() {
                    weight += variant_weight;
                    variants.push(variant);
                }
            }
            let obj = Object {
                status: head.status,
                tags: tags_of(&headers),
                weight,
                headers,
                body,
                response_time,
                corrected_initial_age: plan.initial_age,
                freshness_lifetime: plan.freshness_lifetime,
                rules: plan.rules,
                host,
                path,
                coding: plan.coding,
                compressible,
                variants,
            };
            self.commit(Arc::new(obj), &plan.vary, &request_headers);
        }
        finish(End::Complete);
    }

    fn publish(&self, state: FlightState) {
        if let Some(guard) = &self.guard {
            guard.publish(state);
        }
    }

    /// Offers the stale object standing in for a failed origin to the followers it is for.
    fn publish_stale(&self, stale: &Arc<Object>, request_headers: &HeaderMap) {
        if let Some(audience) = object_audience(stale, request_headers) {
            self.publish(FlightState::StaleOnError(stale.clone(), audience));
        }
    }

    /// The stale object, if it may stand in for a failed origin: within its `stale-if-error`
    /// window or the configured default (RFC 5861 §4), or, when the origin could not be
    /// reached at all, within the edge's window for that (RFC 9111 §4.2.4); never when §4.2.4
    /// forbids serving it stale.
    fn stale_for_failure(&self, unreachable: bool) -> Option<(Arc<Object>, Served)> {
        let stale = self.stale.as_ref()?;
        let now = self.shared.clock.now();
        if stale.usable_on_error(now, self.shared.stale_if_error) {
            return Some((stale.clone(), Served::OnError));
        }
        (unreachable && stale.usable_when_unreachable(now, self.shared.stale_if_unreachable))
            .then(|| (stale.clone(), Served::OnUnreachable))
    }

    /// The origin failed (error, timeout, or the concurrency cap when `unreachable` is false):
    /// stale if allowed, else an edge error, and the same for every follower.
    fn origin_failed<B>(
        self,
        status: StatusCode,
        unreachable: bool,
        request_headers: &HeaderMap,
        reply: oneshot::Sender<Fetched<B>>,
    ) {
        match self.stale_for_failure(unreachable) {
            Some((stale, served)) => {
                self.publish_stale(&stale, request_headers);
                let _ = reply.send(Fetched::StaleOnError(stale, served));
            }
            None => {
                self.publish(FlightState::Failed(status));
                let _ = reply.send(Fetched::Edge(status));
            }
        }
    }

    /// Decides whether and how a full response is stored (RFC 9111 §3).
    fn plan<B: Body>(
        &self,
        res: &Response<B>,
        request_headers: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
    ) -> Result<Plan, NoStoreReason> {
        let method = self.method.clone();
        let (cc, edge_headers) = edge_cache_control(res.headers());
        let freshness_headers = edge_headers.as_ref().unwrap_or(res.headers());
        let rules = &self.route.rules;
        let status = res.status();
        let error_ttl = self.shared.error_ttl(rules, status);
        let request_cc = &self.request_cc;
        match storable(
            &method,
            request_cc,
            request_headers,
            status,
            &cc,
            freshness_headers,
            rules,
        ) {
            Err(NoStoreReason::NoFreshness) if error_ttl.is_some() => {}
            other => other?,
        }
        let strip_set_cookie = self.route.behavior.set_cookie.strips();
        if !strip_set_cookie && stores_set_cookie(&cc, res.headers()) {
            return Err(NoStoreReason::SetCookie);
        }
        // Every bounded parser fails closed: what was not fully read is not stored.
        if connection_overflows(res.headers()) {
            return Err(NoStoreReason::ConnectionLimit);
        }
        if !tags_fit(res.headers()) {
            return Err(NoStoreReason::TagLimit);
        }
        let freshness_lifetime = stored_lifetime(status, &cc, freshness_headers, rules, error_ttl)
            .ok_or(NoStoreReason::NoFreshness)?;
        let coding = match Coding::of(res.headers()) {
            // RFC 9110 §7.7, RFC 9111 §5.2.2.6: `no-transform` forbids undoing the coding too,
            // so the body goes to everyone as it came, like a coding the edge cannot undo.
            Coding::Encoded(_) if cc.no_transform => Coding::Opaque,
            coding => coding,
        };
        let vary = storage_vary(res.headers(), coding);
        // `*`, or more names than the cache reads: never matched, never stored.
        let Some(audience) = Audience::of(&vary, request_headers) else {
            return Err(NoStoreReason::VaryStar);
        };
        let declared = res
            .headers()
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > self.shared.max_object_size) {
            return Err(NoStoreReason::TooLarge);
        }
        // The body's length when known before it arrives; else the size is checked at its end.
        let length = declared.or(res.body().size_hint().exact());
        let size_fits = length.is_none_or(|len| match coding {
            Coding::Identity => {
                (MIN_COMPRESS_SIZE as u64..=MAX_COMPRESS_SIZE as u64).contains(&len)
            }
            _ => len <= MAX_COMPRESS_SIZE as u64,
        });
        let mut headers = res.headers().clone();
        remove_hop_by_hop(&mut headers);
        // §5.2.2.4, §5.2.2.7: qualified no-cache / private fields are not stored, nor, with
        // `SetCookie::strip`, `Set-Cookie`; the viewer whose request this is still gets them.
        let personal = withhold(&mut headers, &cc, strip_set_cookie);
        // CloudFront's rules: only these statuses, never `no-transform` (RFC 9110 §7.7), only
        // compressible media types; the size is checked when the body is complete.
        let compressible = self.route.compress
            && coding != Coding::Opaque
            && !cc.no_transform
            && matches!(status.as_u16(), 200 | 403 | 404)
            && is_compressible(headers.get(CONTENT_TYPE))
            && size_fits;
        // RFC 9110 §12.5.5: `Vary` lists what selected the representation. The coding sent
        // depends on Accept-Encoding only when the edge may compress the body, or decode
        // what the origin encoded; for anything else it would only split downstream caches.
        let origin_vary = if compressible || matches!(coding, Coding::Encoded(_)) {
            merge_vary(&mut headers, "accept-encoding").filter(|_| length.is_none())
        } else {
            None
        };
        Ok(Plan {
            headers,
            personal,
            vary,
            audience,
            freshness_lifetime,
            initial_age: corrected_initial_age(res.headers(), request_time, response_time),
            rules: ReuseRules::from(&cc),
            coding,
            compressible,
            origin_vary,
            length,
        })
    }

    /// RFC 9111 §4.3.5: the fields of a 200 answering a HEAD the edge passed on update the
    /// stored GET response when their validators select it (as for a 304, §4.3.4) and the
    /// HEAD's `Content-Length` and `Content-Encoding`, if sent, match the stored body; the
    /// updated object is stored as a 304 would store it. Otherwise the stored response stays
    /// as it is (stale: a HEAD goes to the origin only for a stored response that is).
    /// Returns whether it was updated.
    pub(crate) fn update_from_head(
        &self,
        stored: &Object,
        head: &HeaderMap,
        (request_time, response_time): (SystemTime, SystemTime),
        request_headers: &HeaderMap,
    ) -> bool {
        let length = head
            .get(CONTENT_LENGTH)
            .map(|v| v.to_str().ok().and_then(|v| v.trim().parse::<u64>().ok()));
        let same_body = length.is_none_or(|len| len == Some(stored.body.len() as u64))
            && head.get(CONTENT_ENCODING) == stored.headers.get(CONTENT_ENCODING);
        if !same_body || !conditional::not_modified_selects(&stored.headers, head) {
            return false;
        }
        // §3.5: an answer to a request with credentials is shared only when it says so.
        let (cc, _) = edge_cache_control(head);
        let shared = cc.public || cc.must_revalidate || cc.s_maxage.is_some();
        if request_headers.contains_key(AUTHORIZATION) && !shared {
            return false;
        }
        self.refresh(stored, head, request_time, response_time, request_headers);
        true
    }

    /// A stored object updated by a 304 (RFC 9111 §4.3.4), stored and offered to the
    /// followers it is for, unless the updated fields forbid sharing it. Returned with the
    /// fields only this viewer gets (the 304's `Set-Cookie`, fields the updated
    /// `Cache-Control` keeps out of storage).
    fn refresh(
        &self,
        stale: &Object,
        not_modified: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        request_headers: &HeaderMap,
    ) -> (Arc<Object>, HeaderMap) {
        let mut headers = stale.headers.clone();
        conditional::merge_not_modified(&mut headers, not_modified);
        let (cc, edge_headers) = edge_cache_control(&headers);
        let mut personal = withhold(&mut headers, &cc, false);
        for value in not_modified.get_all(http::header::SET_COOKIE) {
            personal.append(http::header::SET_COOKIE, value.clone());
        }
        // The updated fields may forbid storing or sharing, or not be fully readable.
        let shareable = !(cc.private || (cc.no_store && !cc.must_understand) || cc.overflowed)
            && tags_fit(&headers);
        let rules = &self.route.rules;
        let freshness_headers = edge_headers.as_ref().unwrap_or(&headers);
        let error_ttl = self.shared.error_ttl(rules, stale.status);
        let freshness_lifetime =
            stored_lifetime(stale.status, &cc, freshness_headers, rules, error_ttl).unwrap_or(0);
        // Codings already made stay valid: only their fields follow the new ones.
        let variants: Vec<Variant> = stale
            .variants
            .iter()
            .map(|v| Variant {
                encoding: v.encoding,
                headers: variant_headers(&headers, v.encoding, v.body.len()),
                body: v.body.clone(),
            })
            .collect();
        let variant_weight: u64 = variants.iter().map(|v| weigh(&v.headers, &v.body, 0)).sum();
        let obj = Arc::new(Object {
            status: stale.status,
            weight: weigh(&headers, &stale.body, stale.host.len() + stale.path.len())
                + variant_weight,
            body: stale.body.clone(),
            response_time,
            corrected_initial_age: corrected_initial_age(not_modified, request_time, response_time),
            freshness_lifetime,
            rules: ReuseRules::from(&cc),
            host: stale.host.clone(),
            path: stale.path.clone(),
            coding: stale.coding,
            compressible: stale.compressible,
            variants,
            tags: tags_of(&headers),
            headers,
        });
        let audience = object_audience(&obj, request_headers);
        match audience.filter(|_| shareable) {
            Some(audience) => {
                self.commit(
                    obj.clone(),
                    &storage_vary(&obj.headers, obj.coding),
                    request_headers,
                );
                self.publish(FlightState::Done(obj.clone(), audience));
            }
            None => {
                tracing::debug!(path = %obj.path, "revalidated, but no longer storable");
                self.shared.store.remove(&self.key);
            }
        }
        (obj, personal)
    }

    /// Stores an object under its URL, or under its variant key behind a `Vary` record —
    /// and takes it back if a purge came in since the origin request left. Inserting before
    /// checking means a purge either sees the object in its scan or bumps the generation
    /// before the check. With a shared tier, what stays is written through to it.
    fn commit(&self, obj: Arc<Object>, vary: &Vary, request_headers: &HeaderMap) {
        if *vary == Vary::Star {
            // Never matched (RFC 9111 §4.1): never stored, not even under the URL.
            return;
        }
        let (key, record) = self.store_under(obj.clone(), vary, request_headers);
        if self.shared.purge_generation.load(Ordering::SeqCst) != self.generation {
            tracing::debug!(path = %obj.path, "purged while filling: not kept");
            self.shared.store.remove_if_same(&key, &obj);
            return;
        }
        #[cfg(feature = "redis")]
        crate::tier::write_through(
            &self.shared,
            self.primary,
            key,
            record,
            &obj,
            self.shield.clone(),
        );
        #[cfg(not(feature = "redis"))]
        let _ = record;
    }

    fn store_under(
        &self,
        obj: Arc<Object>,
        vary: &Vary,
        request_headers: &HeaderMap,
    ) -> (CacheKey, Option<Arc<VaryRecord>>) {
        let store = &self.shared.store;
        let (key, record) = match vary {
            Vary::Fields(names) => {
                let record = match store.get(&self.primary) {
                    Some(Slot::Vary(record)) if record.names == *names => record,
                    _ => {
                        let record = Arc::new(VaryRecord {
                            names: names.clone(),
                            epoch: self.shared.next_epoch(),
                        });
                        store.insert(self.primary, Slot::Vary(record.clone()));
                        record
                    }
                };
                let key = self.primary.variant(record.epoch, names, request_headers);
                (key, Some(record))
            }
            Vary::None | Vary::Star => (self.primary, None),
        };
        store.insert(key, Slot::Object(obj));
        (key, record)
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
