//! [`CdnService`]: the request phases in order — method, key, lookup, reuse or fetch.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{CONTENT_LOCATION, HOST, LOCATION};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::access::too_many_requests;
use crate::access::CountryCode;
use crate::behavior::{viewer_protocol, viewer_scheme_is_https, Route, ViewerTls};
use crate::body::CdnBody;
use crate::client::{resolve_client, viewer_ip};
use crate::collapse::{follow, FlightState, Join};
use crate::entry::{Object, Pick, Slot};
use crate::fetch::{call_origin, origin_request, origin_response, Fetch, Fetched};
use crate::future::ResponseFuture;
use crate::ingress::{self, Refusal};
use crate::key::{host_of, with_path_and_query, CacheKey};
use crate::layer::Shared;
use crate::respond::{
    edge_error, fill_reader, fill_response, finish, generated, object_response, pass_response,
    serve_object, with_personal, Exchange, Fwd, OwnedExchange, Served, ViewerRef,
};
use crate::rfc::cache_control::{CacheControl, MaxStale};
use crate::rfc::headers::upgrade_protocol;
#[cfg(feature = "signed-urls")]
use crate::signing;
use crate::status::CacheStatus;
use crate::BoxError;

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

/// How a stored object may be used for a request (RFC 9111 §4.2, §5.2.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Reuse {
    Fresh,
    /// Stale, but the request's `max-stale` accepts it.
    Stale,
    /// Stale within `stale-while-revalidate` (RFC 5861 §3).
    WhileRevalidating,
    Revalidate(Fwd),
}

pub(crate) fn reuse(obj: &Object, cc: &CacheControl, now: SystemTime) -> Reuse {
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
    } else if obj.usable_while_revalidating(now) {
        Reuse::WhileRevalidating
    } else {
        Reuse::Revalidate(Fwd::Stale)
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CdnService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
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
        let started = Instant::now();
        let mut req = req;
        // Entry: every later phase sees the request as decided here (see `ingress`).
        let Entered {
            https,
            route_index,
            body,
        } = match enter(&self.shared, &mut req, started) {
            Ok(entered) => entered,
            Err(res) => return ResponseFuture::ready(*res),
        };
        // Viewer request: hook, protocol policy, methods, signature.
        let route = &self.shared.routes[route_index];
        if let Some(hook) = &route.behavior.hooks.viewer_request {
            let (mut parts, body) = req.into_parts();
            if let Some(res) = hook(&mut parts) {
                let res = generated(&self.shared, res.map(CdnBody::full));
                let exchange = Exchange::of_parts(&parts, started);
                return ResponseFuture::ready(finish(&self.shared, route, &exchange, res));
            }
            req = Request::from_parts(parts, body);
        }
        let behavior = &route.behavior;
        let host = req.headers().get(HOST);
        let method = req.method();
        if let Some(res) = viewer_protocol(
            &behavior.viewer_protocol,
            method,
            req.version(),
            https,
            req.uri(),
            host,
        ) {
            let res = generated(&self.shared, res.map(|()| CdnBody::empty()));
            return ResponseFuture::ready(finish(
                &self.shared,
                route,
                &Exchange::of(&req, started),
                res,
            ));
        }
        if !behavior.allowed_methods.allows(method) {
            let res = edge_error(&self.shared, StatusCode::FORBIDDEN);
            return ResponseFuture::ready(finish(
                &self.shared,
                route,
                &Exchange::of(&req, started),
                res,
            ));
        }
        #[cfg(feature = "signed-urls")]
        if let Some(group) = &behavior.trusted_keys {
            let skew = behavior.clock_skew;
            if let Err(res) = signing::admit(&self.shared, group, skew, https, &mut req) {
                let exchange = Exchange::of(&req, started);
                return ResponseFuture::ready(finish(&self.shared, route, &exchange, *res));
            }
        }
        if upgrade_protocol(req.headers(), req.version()).is_some() {
            // A connection upgrade (WebSocket) opens a tunnel, not a representation: after the
            // viewer rules above it goes to the origin as it is, never looked up, collapsed or
            // stored.
            return self.pass(req, route_index, https, Fwd::Bypass, started);
        }
        let behavior = &route.behavior;
        let method = req.method();
        let head = match *method {
            Method::GET => false,
            Method::HEAD => true,
            // An OPTIONS body could shape the answer: such a request is never looked up.
            Method::OPTIONS if behavior.cached_methods.caches(method) && !body => false,
            _ => return self.pass(req, route_index, https, Fwd::Method, started),
        };
        if !behavior.cache_policy.is_enabled() {
            return self.pass(req, route_index, https, Fwd::Bypass, started);
        }

        // Lookup.
        let now = self.shared.clock.now();
        let cc = CacheControl::parse_request(req.headers());
        let primary = CacheKey::for_request_with(&req, &behavior.key_policy, https);
        let (key, slot, fwd) = match self.shared.store.get(&primary) {
            Some(Slot::Vary(record)) => {
                let key = primary.variant(record.epoch, &record.names, req.headers());
                (key, self.shared.store.get(&key), Fwd::VaryMiss)
            }
            slot => (primary, slot, Fwd::UriMiss),
        };
        let mut stale = None;
        match slot {
            Some(Slot::Object(obj)) => {
                let served = match reuse(&obj, &cc, now) {
                    Reuse::Fresh => Some(Served::Fresh),
                    Reuse::Stale => Some(Served::Stale),
                    Reuse::WhileRevalidating if !head => Some(Served::WhileRevalidating),
                    Reuse::WhileRevalidating => Some(Served::Stale),
                    Reuse::Revalidate(fwd) => {
                        stale = Some((obj.clone(), fwd));
                        None
                    }
                };
                if let Some(served) = served {
                    let future = self.hit(&req, route_index, key, &obj, served, (now, started));
                    if served == Served::WhileRevalidating {
                        self.refresh_in_background(req, route_index, primary, key, obj, cc);
                    }
                    return future;
                }
            }
            Some(Slot::Pass { until }) if until > now && !cc.only_if_cached => {
                return self.pass(req, route_index, https, Fwd::Bypass, started);
            }
            _ => {}
        }
        if cc.only_if_cached {
            // RFC 9111 §5.2.1.7
            let res = edge_error(&self.shared, StatusCode::GATEWAY_TIMEOUT);
            return ResponseFuture::ready(finish(
                &self.shared,
                route,
                &Exchange::of(&req, started),
                res,
            ));
        }
        let fwd = stale.as_ref().map_or(fwd, |(_, f)| *f);
        if head && !cc.no_store {
            // A HEAD miss cannot fill the cache, but its answer may update the stored GET
            // response it went to the origin for (RFC 9111 §4.3.5).
            let update = stale.map(|(obj, _)| {
                let fetch = self.fetch(route_index, primary, key, None, fwd, &req, cc);
                (fetch, obj)
            });
            return self.pass_updating(req, route_index, https, fwd, started, update);
        }
        if head || cc.no_store {
            // `no-store` forbids keeping the answer.
            return self.pass(req, route_index, https, fwd, started);
        }

        // Miss or revalidation.
        let stale = stale.map(|(obj, _)| obj);
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        let route = route.clone();
        let exchange = OwnedExchange::of(&req, started);
        ResponseFuture::origin(async move {
            let lookup = Lookup {
                primary,
                key,
                stale,
                fwd,
                request_cc: cc,
            };
            let res = miss(&shared, &route, inner, req, exchange.viewer(), lookup).await;
            Ok(finish(&shared, &route, &exchange.view(), res))
        })
    }
}

/// What the lookup found out, handed to the origin trip.
struct Lookup {
    primary: CacheKey,
    key: CacheKey,
    stale: Option<Arc<Object>>,
    fwd: Fwd,
    request_cc: CacheControl,
}

impl<S> CdnService<S> {
    /// Answers from a stored object: ready at once when the viewer's coding is at hand, or
    /// after making that coding once.
    fn hit<ReqB, ResB>(
        &self,
        req: &Request<ReqB>,
        route_index: usize,
        key: CacheKey,
        obj: &Arc<Object>,
        served: Served,
        (now, started): (SystemTime, Instant),
    ) -> ResponseFuture<ResB, S::Error>
    where
        S: Service<Request<ReqB>>,
        ResB: Send + 'static,
    {
        let route = &self.shared.routes[route_index];
        let viewer = ViewerRef {
            method: req.method(),
            headers: req.headers(),
        };
        if let Pick::Ready(headers, body) = obj.pick(req.headers()) {
            let res = object_response(&self.shared, obj, (headers, body), viewer, served, now);
            return ResponseFuture::ready(finish(
                &self.shared,
                route,
                &Exchange::of(req, started),
                res,
            ));
        }
        // A coding this object lacks yet: made once, then kept with it.
        let (shared, route, obj) = (self.shared.clone(), route.clone(), obj.clone());
        let exchange = OwnedExchange::of(req, started);
        ResponseFuture::origin(async move {
            let res = serve_object(&shared, key, &obj, exchange.viewer(), served).await;
            Ok(finish(&shared, &route, &exchange.view(), res))
        })
    }
}

/// What entry decided about a request.
struct Entered {
    /// The viewer came over HTTPS (TLS, an `https` URI, or a trusted forwarded scheme).
    https: bool,
    route_index: usize,
    /// The request declares a body (only methods other than GET and HEAD get this far).
    body: bool,
}

/// Entry, in order (see [`crate::ingress`]): refusals, the normal path and hop-by-hop
/// removal; the viewer's scheme and address from forwarding fields where trusted; the
/// default root object and the behavior; the rate limit and geo restriction (which may read
/// the fields a trusted upstream set); then the viewer's forwarding and override fields go
/// and the edge sets its own viewer-country field. `Err` is the edge's answer.
fn enter<ReqB, ResB>(
    shared: &Shared,
    req: &mut Request<ReqB>,
    started: Instant,
) -> Result<Entered, Box<Response<CdnBody<ResB>>>> {
    let body = match ingress::admit_request(req) {
        Ok(body) => body,
        Err(refusal) => {
            tracing::debug!(reason = refusal.as_str(), "request refused at entry");
            let default = &shared.routes[shared.routes.len() - 1];
            let res = refused_response(shared, refusal);
            let res = finish(shared, default, &Exchange::of(req, started), res);
            return Err(Box::new(res));
        }
    };
    let tls = req.extensions().get::<ViewerTls>().is_some();
    let https = viewer_scheme_is_https(req.uri(), req.headers(), tls, shared.trust_forwarded);
    if https && !tls && req.uri().scheme() != Some(&http::uri::Scheme::HTTPS) {
        // Said by a trusted proxy's forwarding fields, which go below: keep it for the origin.
        req.extensions_mut().insert(ViewerTls);
    }
    resolve_client(req, &shared.trusted_proxies);
    if let Some(root) = &shared.default_root_object {
        if req.uri().path() == "/" {
            rewrite_path(req, root);
        }
    }
    let route_index = shared.route_index(req.uri().path());
    let route = &shared.routes[route_index];
    let country = match admit(shared, req) {
        Ok(country) => country,
        Err(res) => {
            let res = finish(shared, route, &Exchange::of(req, started), *res);
            return Err(Box::new(res));
        }
    };
    ingress::remove_viewer_fields(
        req.headers_mut(),
        route.behavior.origin_request.kept_headers(),
    );
    if shared.geo.as_ref().is_some_and(|geo| geo.forward) {
        let headers = req.headers_mut();
        headers.remove(&VIEWER_COUNTRY);
        if let Some(code) = country.and_then(|c| HeaderValue::from_str(c.as_str()).ok()) {
            headers.insert(VIEWER_COUNTRY.clone(), code);
        }
    }
    Ok(Entered {
        https,
        route_index,
        body,
    })
}

/// The `400` for a request refused at entry, with the reason in `Cache-Status`.
fn refused_response<B>(shared: &Shared, refusal: Refusal) -> Response<CdnBody<B>> {
    let mut res = edge_error(shared, StatusCode::BAD_REQUEST);
    *res.body_mut() = CdnBody::full(Bytes::from(format!(
        "400 Bad Request: {}\n",
        refusal.message()
    )));
    let cache_status = format!(
        "{}; fwd=miss; detail={}",
        shared.cache_name,
        refusal.as_str()
    );
    if let Ok(v) = HeaderValue::try_from(cache_status) {
        res.headers_mut()
            .insert(HeaderName::from_static("cache-status"), v);
    }
    res
}

/// The rate limit and the geo restriction, at entry. `Ok` carries the viewer's country when
/// geo is configured; `Err` is the edge's answer to a refused viewer.
fn admit<ReqB, ResB>(
    shared: &Shared,
    req: &Request<ReqB>,
) -> Result<Option<CountryCode>, Box<Response<CdnBody<ResB>>>> {
    if shared.rate_limit.is_none() && shared.geo.is_none() {
        return Ok(None);
    }
    let client = viewer_ip(req);
    if let Some(limit) = &shared.rate_limit {
        let now = tokio::time::Instant::now().into_std();
        if let Err(retry_after) = limit.check(client, req.headers(), now) {
            let res = generated(
                shared,
                too_many_requests(retry_after).map(|()| CdnBody::empty()),
            );
            return Err(Box::new(res));
        }
    }
    let Some(geo) = &shared.geo else {
        return Ok(None);
    };
    let country = geo.resolver.country(client, req.headers());
    if let Some(restriction) = &geo.restriction {
        if !restriction.decide(country.as_ref()) {
            let mut res = edge_error(shared, StatusCode::FORBIDDEN);
            *res.body_mut() = CdnBody::full(Bytes::from_static(b"not available in your country\n"));
            return Err(Box::new(res));
        }
    }
    Ok(country)
}

/// The viewer's country as the edge resolved it, for the origin and key policies.
static VIEWER_COUNTRY: HeaderName = HeaderName::from_static("cloudfront-viewer-country");

/// Replaces the path of the request's URI, keeping its query.
fn rewrite_path<B>(req: &mut Request<B>, path: &str) {
    let pq = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    set_path_and_query(req, &pq);
}

/// Replaces the path and query of the request's URI; an invalid one leaves it unchanged.
pub(crate) fn set_path_and_query<B>(req: &mut Request<B>, pq: &str) {
    if let Some(uri) = with_path_and_query(req.uri(), pq) {
        *req.uri_mut() = uri;
    }
}

/// A miss or a revalidation: follow another viewer's origin request for the key, or lead one.
async fn miss<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    route: &Arc<Route>,
    inner: S,
    req: Request<ReqB>,
    viewer: ViewerRef<'_>,
    lookup: Lookup,
) -> Response<CdnBody<ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    let Lookup {
        primary,
        key,
        stale,
        fwd,
        request_cc,
    } = lookup;
    // Follow the flight for the key; an answer that varies on something this request sends
    // differently is another variant (RFC 9111 §4.1): follow, or lead, the flight for this
    // request's own variant instead — once; after that, go to the origin alone.
    let mut flight = key;
    let mut own_variant = false;
    let guard = loop {
        let rx = match shared.flights.join(flight) {
            Join::Leader(guard) => break Some(guard),
            Join::Follower(rx) => rx,
        };
        let Ok(state) = tokio::time::timeout(shared.collapse_timeout, follow(rx)).await else {
            break None;
        };
        if let Some(audience) = state.audience() {
            if !audience.admits(viewer.headers) {
                if own_variant {
                    break None;
                }
                own_variant = true;
                flight = audience.own_flight(flight, viewer.headers);
                continue;
            }
        }
        match state {
            FlightState::Streaming(fill) => {
                if let Some(reader) = fill_reader(&fill, viewer.headers) {
                    return fill_response(shared, reader, viewer, fwd, true).await;
                }
            }
            FlightState::Done(obj, _) => {
                return serve_object(shared, key, &obj, viewer, Served::Refreshed).await;
            }
            FlightState::StaleOnError(obj, _) => {
                // The leader's reason, told apart the way it was decided.
                let now = shared.clock.now();
                let served = if obj.usable_on_error(now, shared.stale_if_error) {
                    Served::OnError
                } else {
                    Served::OnUnreachable
                };
                return serve_object(shared, key, &obj, viewer, served).await;
            }
            #[cfg(feature = "redis")]
            FlightState::Shared(obj, _) => {
                return serve_object(shared, key, &obj, viewer, Served::SharedTier).await;
            }
            FlightState::Failed(status) => return edge_error(shared, status),
            FlightState::Pending | FlightState::Abandoned => {}
        }
        break None;
    };
    // With a stale object that may stand in for the origin, wait for the origin only as long
    // as the budget allows; the origin request goes on and refreshes the object either way.
    let now = shared.clock.now();
    let budget = stale
        .as_ref()
        .filter(|obj| obj.usable_on_error(now, shared.stale_if_error))
        .and_then(|obj| Some((obj.clone(), shared.stale_if_error_budget?)));
    let method = req.method().clone();
    let fetch = Fetch::new(
        shared.clone(),
        route.clone(),
        primary,
        key,
        fwd,
        request_cc,
        method,
    )
    .with_stale(stale)
    .with_guard(guard);
    let (tx, mut rx) = oneshot::channel();
    tokio::spawn(fetch.run(inner, req, tx));
    let fetched = match budget {
        Some((obj, budget)) => tokio::select! {
            fetched = &mut rx => fetched,
            _ = tokio::time::sleep(budget) => {
                return serve_object(shared, key, &obj, viewer, Served::OnError).await;
            }
        },
        None => rx.await,
    };
    match fetched {
        Ok(Fetched::Stream(reader, fwd, personal)) => {
            let res = fill_response(shared, reader, viewer, fwd, false).await;
            with_personal(res, personal)
        }
        Ok(Fetched::Done(obj, personal)) => {
            let res = serve_object(shared, key, &obj, viewer, Served::Refreshed).await;
            with_personal(res, personal)
        }
        Ok(Fetched::Unchanged(obj)) => {
            serve_object(shared, key, &obj, viewer, Served::Confirmed).await
        }
        Ok(Fetched::StaleOnError(obj, served)) => {
            serve_object(shared, key, &obj, viewer, served).await
        }
        #[cfg(feature = "redis")]
        Ok(Fetched::Shared(key, obj)) => {
            serve_object(shared, key, &obj, viewer, Served::SharedTier).await
        }
        // Looked up and missed; the answer turned out not to be storable.
        Ok(Fetched::Pass(res, fwd)) => pass_response(shared, res, fwd, CacheStatus::Miss),
        Ok(Fetched::Edge(status)) => edge_error(shared, status),
        Err(_) => edge_error(shared, StatusCode::BAD_GATEWAY),
    }
}

impl<S> CdnService<S> {
    /// Starts one background revalidation for a key served stale (RFC 5861 §3); if one is
    /// already under way, nothing more is sent to the origin.
    fn refresh_in_background<ReqB, ResB>(
        &self,
        req: Request<ReqB>,
        route_index: usize,
        primary: CacheKey,
        key: CacheKey,
        stale: Arc<Object>,
        request_cc: CacheControl,
    ) where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqB: Send + 'static,
        ResB: Body<Data = Bytes> + Send + 'static,
        ResB::Error: Into<BoxError> + Send,
    {
        let Join::Leader(guard) = self.shared.flights.join(key) else {
            return;
        };
        let route = self.shared.routes[route_index].clone();
        let method = req.method().clone();
        let fetch = Fetch::new(
            self.shared.clone(),
            route,
            primary,
            key,
            Fwd::Stale,
            request_cc,
            method,
        )
        .with_stale(Some(stale))
        .with_guard(Some(guard));
        let (tx, _) = oneshot::channel();
        tokio::spawn(fetch.run(self.inner.clone(), req, tx));
    }

    /// A trip to the origin for `key`, as the lookup left it.
    #[allow(clippy::too_many_arguments)]
    fn fetch<B>(
        &self,
        route_index: usize,
        primary: CacheKey,
        key: CacheKey,
        stale: Option<Arc<Object>>,
        fwd: Fwd,
        req: &Request<B>,
        request_cc: CacheControl,
    ) -> Fetch {
        let route = self.shared.routes[route_index].clone();
        let method = req.method().clone();
        Fetch::new(
            self.shared.clone(),
            route,
            primary,
            key,
            fwd,
            request_cc,
            method,
        )
        .with_stale(stale)
    }

    /// Sends the request to the origin without storing the answer; a successful unsafe method
    /// invalidates the URLs it names (RFC 9111 §4.4).
    fn pass<ReqB, ResB>(
        &mut self,
        req: Request<ReqB>,
        route_index: usize,
        https: bool,
        fwd: Fwd,
        started: Instant,
    ) -> ResponseFuture<ResB, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqB: Send + 'static,
        ResB: Send + 'static,
    {
        self.pass_updating(req, route_index, https, fwd, started, None)
    }

    /// [`pass`](Self::pass), and for a HEAD sent for a stored GET response, `update` lets a
    /// 200 answer update that response (RFC 9111 §4.3.5).
    fn pass_updating<ReqB, ResB>(
        &mut self,
        req: Request<ReqB>,
        route_index: usize,
        https: bool,
        fwd: Fwd,
        started: Instant,
        update: Option<(Fetch, Arc<Object>)>,
    ) -> ResponseFuture<ResB, S::Error>
    where
        S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        ReqB: Send + 'static,
        ResB: Send + 'static,
    {
        let unsafe_method = !matches!(
            *req.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
        );
        let route = self.shared.routes[route_index].clone();
        let target = unsafe_method.then(|| {
            let mut target = Request::new(());
            *target.uri_mut() = req.uri().clone();
            *target.headers_mut() = req.headers().clone();
            target
        });
        let exchange = OwnedExchange::of(&req, started);
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        ResponseFuture::origin(async move {
            let (mut parts, body) = req.into_parts();
            origin_request(&route, &mut parts);
            let _permit = match &shared.origin_concurrency {
                Some(cap) => match cap.acquire().await {
                    Ok(permit) => Some(permit),
                    Err(_) => {
                        let res = edge_error(&shared, StatusCode::SERVICE_UNAVAILABLE);
                        return Ok(finish(&shared, &route, &exchange.view(), res));
                    }
                },
                None => None,
            };
            let started = Instant::now();
            let request_time = shared.clock.now();
            let origin = call_origin(inner, Request::from_parts(parts, body));
            let res = match tokio::time::timeout(shared.origin_timeout, origin).await {
                Ok(Ok(res)) => {
                    shared.metrics.origin(started.elapsed(), false);
                    res
                }
                Ok(Err(e)) => {
                    shared.metrics.origin(started.elapsed(), true);
                    let e: BoxError = e.into();
                    tracing::warn!(error = %e, "origin request failed");
                    let res = edge_error(&shared, StatusCode::BAD_GATEWAY);
                    return Ok(finish(&shared, &route, &exchange.view(), res));
                }
                Err(_) => {
                    shared.metrics.origin(started.elapsed(), true);
                    tracing::warn!("origin did not answer in time");
                    let res = edge_error(&shared, StatusCode::GATEWAY_TIMEOUT);
                    return Ok(finish(&shared, &route, &exchange.view(), res));
                }
            };
            let res = origin_response(&route, res);
            if let Some((fetch, stored)) = update.filter(|_| res.status() == StatusCode::OK) {
                let times = (request_time, shared.clock.now());
                fetch.update_from_head(&stored, res.headers(), times, &exchange.headers);
            }
            if let Some(target) = target {
                let status = res.status();
                if status.is_success() || status.is_redirection() {
                    invalidate(&shared, target, https, res.headers());
                }
            }
            let res = pass_response(&shared, res, fwd, CacheStatus::Pass);
            Ok(finish(&shared, &route, &exchange.view(), res))
        })
    }
}

/// Removes the target URI and the same-origin `Location` / `Content-Location` URIs
/// (RFC 9111 §4.4), each keyed as a lookup by this viewer would key it, here and in the
/// shared tier. Variants go with their `Vary` record.
fn invalidate(shared: &Shared, mut target: Request<()>, https: bool, response: &HeaderMap) {
    let remove = |target: &Request<()>| {
        let route = &shared.routes[shared.route_index(target.uri().path())];
        let key = CacheKey::for_request_with(target, &route.behavior.key_policy, https);
        shared.store.remove(&key);
        #[cfg(feature = "redis")]
        crate::tier::invalidate(shared, key);
    };
    remove(&target);
    let host = host_of(target.uri(), target.headers()).to_vec();
    let scheme = if https { "https" } else { "http" };
    for name in [LOCATION, CONTENT_LOCATION] {
        let Some(location) = response.get(&name).and_then(|v| v.to_str().ok()) else {
            continue;
        };
        let Ok(location) = location.parse::<Uri>() else {
            continue;
        };
        let same_origin = match location.authority() {
            Some(a) => {
                a.as_str().as_bytes().eq_ignore_ascii_case(&host)
                    && location
                        .scheme_str()
                        .is_none_or(|s| s.eq_ignore_ascii_case(scheme))
            }
            None => location.path().starts_with('/'),
        };
        if let (true, Some(pq)) = (same_origin, location.path_and_query()) {
            if let Ok(uri) = pq.as_str().parse() {
                *target.uri_mut() = uri;
                remove(&target);
            }
        }
    }
}
