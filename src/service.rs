//! [`CdnService`]: the request phases in order — method, key, lookup, reuse or fetch.

use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{CONTENT_LOCATION, LOCATION};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use tokio::sync::oneshot;
use tower_service::Service;

use crate::body::CdnBody;
use crate::collapse::{follow, FlightState, Join};
use crate::entry::{Object, Pick, Slot};
use crate::fetch::{call_origin, Fetch, Fetched};
use crate::future::ResponseFuture;
use crate::key::{host_of, scheme_of, CacheKey};
use crate::layer::Shared;
use crate::respond::{
    custom_error, edge_error, fill_readable, fill_response, object_response, pass_response,
    serve_object, Fwd, Served, ViewerRef,
};
use crate::rfc::cache_control::{CacheControl, MaxStale};
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
                    let viewer = ViewerRef {
                        method: req.method(),
                        headers: req.headers(),
                    };
                    let ready = match obj.pick(req.headers()) {
                        Pick::Ready(headers, body) => {
                            let res = object_response(
                                &self.shared,
                                &obj,
                                (headers, body),
                                viewer,
                                served,
                                now,
                            );
                            Some(custom_error(&self.shared, res))
                        }
                        Pick::Make(_) => None,
                    };
                    let future = match ready {
                        Some(res) => ResponseFuture::ready(res),
                        // A coding this object lacks yet: made once, then kept with it.
                        None => {
                            let shared = self.shared.clone();
                            let (method, headers) = (req.method().clone(), req.headers().clone());
                            let obj = obj.clone();
                            ResponseFuture::origin(async move {
                                let viewer = ViewerRef {
                                    method: &method,
                                    headers: &headers,
                                };
                                let res = serve_object(&shared, key, &obj, viewer, served).await;
                                Ok(custom_error(&shared, res))
                            })
                        }
                    };
                    if served == Served::WhileRevalidating {
                        self.refresh_in_background(req, primary, key, obj, cc);
                    }
                    return future;
                }
            }
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
            let res = miss(&shared, inner, req, viewer, primary, key, stale, fwd, cc).await;
            Ok(custom_error(&shared, res))
        })
    }
}

/// A miss or a revalidation: follow another viewer's origin request for the key, or lead one.
#[allow(clippy::too_many_arguments)]
async fn miss<S, ReqB, ResB>(
    shared: &Arc<Shared>,
    inner: S,
    req: Request<ReqB>,
    viewer: ViewerRef<'_>,
    primary: CacheKey,
    key: CacheKey,
    stale: Option<Arc<Object>>,
    fwd: Fwd,
    request_cc: CacheControl,
) -> Response<CdnBody<ResB>>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    ReqB: Send + 'static,
    ResB: Body<Data = Bytes> + Send + 'static,
    ResB::Error: Into<BoxError> + Send,
{
    let guard = match shared.flights.join(key) {
        Join::Leader(guard) => Some(guard),
        Join::Follower(rx) => {
            let state = tokio::time::timeout(shared.collapse_timeout, follow(rx)).await;
            match state {
                Ok(FlightState::Streaming(fill)) if fill_readable(&fill, viewer.headers) => {
                    if let Some(reader) = fill.reader() {
                        return fill_response(shared, reader, viewer, fwd, true).await;
                    }
                }
                Ok(FlightState::Done(obj)) => {
                    return serve_object(shared, key, &obj, viewer, Served::Refreshed).await;
                }
                Ok(FlightState::StaleOnError(obj)) => {
                    return serve_object(shared, key, &obj, viewer, Served::OnError).await;
                }
                #[cfg(feature = "redis")]
                Ok(FlightState::Shared(obj)) => {
                    return serve_object(shared, key, &obj, viewer, Served::SharedTier).await;
                }
                Ok(FlightState::Failed(status)) => return edge_error(shared, status),
                Ok(FlightState::Pending | FlightState::Abandoned | FlightState::Streaming(_))
                | Err(_) => {}
            }
            None
        }
    };
    // With a stale object that may stand in for the origin, wait for the origin only as long
    // as the budget allows; the origin request goes on and refreshes the object either way.
    let now = shared.clock.now();
    let budget = stale
        .as_ref()
        .filter(|obj| obj.usable_on_error(now, shared.stale_if_error))
        .and_then(|obj| Some((obj.clone(), shared.stale_if_error_budget?)));
    let fetch = Fetch {
        shared: shared.clone(),
        primary,
        key,
        stale,
        guard,
        fwd,
        request_cc,
        #[cfg(feature = "redis")]
        shield: None,
    };
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
        Ok(Fetched::Stream(reader, fwd)) => fill_response(shared, reader, viewer, fwd, false).await,
        Ok(Fetched::Done(obj)) => serve_object(shared, key, &obj, viewer, Served::Refreshed).await,
        Ok(Fetched::StaleOnError(obj)) => {
            serve_object(shared, key, &obj, viewer, Served::OnError).await
        }
        #[cfg(feature = "redis")]
        Ok(Fetched::Shared(key, obj)) => {
            serve_object(shared, key, &obj, viewer, Served::SharedTier).await
        }
        Ok(Fetched::Pass(res, fwd)) => pass_response(shared, res, fwd),
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
        let fetch = Fetch {
            shared: self.shared.clone(),
            primary,
            key,
            stale: Some(stale),
            guard: Some(guard),
            fwd: Fwd::Stale,
            request_cc,
            #[cfg(feature = "redis")]
            shield: None,
        };
        let (tx, _) = oneshot::channel();
        tokio::spawn(fetch.run(self.inner.clone(), req, tx));
    }
}

impl<S> CdnService<S> {
    /// Sends the request to the origin untouched; a successful unsafe method invalidates the
    /// URLs it names (RFC 9111 §4.4).
    fn pass<ReqB, ResB>(&mut self, req: Request<ReqB>, fwd: Fwd) -> ResponseFuture<ResB, S::Error>
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
        let target = unsafe_method.then(|| {
            (
                req.uri().clone(),
                req.headers().get(http::header::HOST).cloned(),
            )
        });
        let inner = self.inner.clone();
        let shared = self.shared.clone();
        ResponseFuture::origin(async move {
            let origin = call_origin(inner, req);
            let res = match tokio::time::timeout(shared.origin_timeout, origin).await {
                Ok(Ok(res)) => res,
                Ok(Err(e)) => {
                    let e: BoxError = e.into();
                    tracing::warn!(error = %e, "origin request failed");
                    return Ok(edge_error(&shared, StatusCode::BAD_GATEWAY));
                }
                Err(_) => {
                    tracing::warn!("origin did not answer in time");
                    return Ok(edge_error(&shared, StatusCode::GATEWAY_TIMEOUT));
                }
            };
            if let Some((uri, host)) = target {
                let status = res.status();
                if status.is_success() || status.is_redirection() {
                    invalidate(&shared, &uri, host.as_ref(), res.headers());
                }
            }
            Ok(custom_error(&shared, pass_response(&shared, res, fwd)))
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
    let key = CacheKey::for_parts(scheme, host, uri.path(), uri.query());
    shared.store.remove(&key);
    #[cfg(feature = "redis")]
    crate::tier::invalidate(shared, key);
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
            let key = CacheKey::for_parts(scheme, host, target.path(), target.query());
            shared.store.remove(&key);
            #[cfg(feature = "redis")]
            crate::tier::invalidate(shared, key);
        }
    }
}
