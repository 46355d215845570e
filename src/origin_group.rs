//! [`OriginGroup`]: origin failover as a tower service, after CloudFront's origin groups.
//!
//! A group holds a primary and a secondary origin service. A request goes to the primary;
//! when the primary fails (its service errors, it does not answer within the configured
//! timeout, or it answers with a status in the failover set) and the request may be replayed,
//! the same request goes once to the secondary, whose result is final.
//!
//! Placed under [`CdnLayer`](crate::CdnLayer), failover happens on misses only: hits never
//! reach the group, and the secondary's answer is stored like any origin answer.

use std::fmt;
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use http_body::Body;
use tower_service::Service;

use crate::BoxError;

/// The statuses CloudFront lets an origin group fail over on.
const CLOUDFRONT_STATUSES: [StatusCode; 6] = [
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
    StatusCode::NOT_FOUND,
    StatusCode::FORBIDDEN,
];

/// A tower service that sends each request to a primary origin and, when that fails, replays
/// it once on a secondary origin.
///
/// Only `GET`, `HEAD` and `OPTIONS` requests fail over, and only when their body is known to
/// be empty ([`Body::is_end_stream`]): the replay is the request's method, URI, version,
/// headers and extensions (all of which `http` can clone) with a fresh `ReqB::default()` body,
/// which is why the body type must implement [`Default`]. Any other request goes to the primary
/// only, and its result (error or response) is returned as it is. A request never fails over
/// twice: the secondary's result, whatever it is, is the answer.
///
/// The primary fails when its service returns an error, when it has not produced a response
/// within the [timeout](OriginGroupBuilder::timeout) (if one is set), or when it answers with a
/// status in the failover set (by default 500, 502, 503 and 504; see [`OriginGroupBuilder`]).
/// Every response carries an [`OriginUsed`] extension naming the origin that produced it, and
/// each failover is logged as a `tracing` event at `INFO` with both names and the reason.
///
/// The group is ready when the primary is; the secondary is cloned and driven to readiness
/// only when a request fails over (as `tower`'s `Retry` does), so both services must be
/// [`Clone`].
///
/// ```
/// # use std::convert::Infallible;
/// use http::{Request, Response, StatusCode};
/// use tower::{service_fn, ServiceExt};
/// use tower_cdn::{OriginGroup, OriginUsed};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let primary = service_fn(|_req: Request<String>| async {
///     let mut res = Response::new(String::new());
///     *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
///     Ok::<_, Infallible>(res)
/// });
/// let secondary = service_fn(|_req: Request<String>| async {
///     Ok::<_, Infallible>(Response::new("from the backup".to_owned()))
/// });
/// let group = OriginGroup::builder()
///     .names("bucket", "backup")
///     .build(primary, secondary);
///
/// let res = group.oneshot(Request::get("/").body(String::new()).unwrap()).await.unwrap();
/// assert_eq!(res.status(), StatusCode::OK);
/// assert_eq!(res.extensions().get::<OriginUsed>().unwrap().name(), "backup");
/// # }
/// ```
pub struct OriginGroup<P, S> {
    primary: P,
    secondary: S,
    shared: Arc<GroupShared>,
}

/// What every clone of a group shares: its settings and counters.
#[derive(Debug)]
struct GroupShared {
    primary_name: Arc<str>,
    secondary_name: Arc<str>,
    /// Indexed by `status - 100`; statuses outside 100..=999 cannot be represented anyway.
    statuses: Box<[bool; 900]>,
    timeout: Option<Duration>,
    primary_answers: AtomicU64,
    failovers: AtomicU64,
}

impl GroupShared {
    fn fails_over_on(&self, status: StatusCode) -> bool {
        self.statuses[usize::from(status.as_u16()) - 100]
    }
}

impl<P: Clone, S: Clone> Clone for OriginGroup<P, S> {
    fn clone(&self) -> Self {
        Self {
            primary: self.primary.clone(),
            secondary: self.secondary.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<P, S> fmt::Debug for OriginGroup<P, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let statuses: Vec<u16> = (0..900u16)
            .filter(|&i| self.shared.statuses[usize::from(i)])
            .map(|i| i + 100)
            .collect();
        f.debug_struct("OriginGroup")
            .field("primary", &self.shared.primary_name)
            .field("secondary", &self.shared.secondary_name)
            .field("failover_statuses", &statuses)
            .field("timeout", &self.shared.timeout)
            .finish_non_exhaustive()
    }
}

impl OriginGroup<(), ()> {
    /// A builder to choose the names, failover statuses and timeout.
    pub fn builder() -> OriginGroupBuilder {
        OriginGroupBuilder::new()
    }
}

impl<P, S> OriginGroup<P, S> {
    /// A group with the default settings: origins named `primary` and `secondary`, failover
    /// on errors and on 500, 502, 503 and 504, no timeout.
    pub fn new(primary: P, secondary: S) -> Self {
        OriginGroupBuilder::new().build(primary, secondary)
    }

    /// The primary origin service.
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The secondary origin service.
    pub fn secondary(&self) -> &S {
        &self.secondary
    }

    /// Counters shared by every clone of this group.
    pub fn metrics(&self) -> OriginGroupMetrics {
        OriginGroupMetrics {
            primary_answers: self.shared.primary_answers.load(Ordering::Relaxed),
            failovers: self.shared.failovers.load(Ordering::Relaxed),
        }
    }
}

/// Counters of an [`OriginGroup`], from [`OriginGroup::metrics`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct OriginGroupMetrics {
    /// Requests answered by the primary (including failures that could not fail over).
    pub primary_answers: u64,
    /// Requests replayed on the secondary.
    pub failovers: u64,
}

/// Builds an [`OriginGroup`]: which statuses fail over, the per-attempt timeout, and the
/// names used in [`OriginUsed`] and in logs.
///
/// The failover set starts as CloudFront's server errors (500, 502, 503, 504); the `on_*`
/// methods add to it and [`no_statuses`](Self::no_statuses) empties it, so that only errors
/// and timeouts fail over.
///
/// ```
/// use std::time::Duration;
/// use tower_cdn::OriginGroup;
///
/// let builder = OriginGroup::builder()
///     .names("s3-bucket", "s3-replica")
///     .on_not_found()
///     .on_forbidden()
///     .timeout(Duration::from_secs(10));
/// # let _ = builder;
/// ```
#[derive(Clone, Debug)]
pub struct OriginGroupBuilder {
    primary_name: Arc<str>,
    secondary_name: Arc<str>,
    statuses: Box<[bool; 900]>,
    timeout: Option<Duration>,
}

impl Default for OriginGroupBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl OriginGroupBuilder {
    /// The default settings (see [`OriginGroup::new`]).
    pub fn new() -> Self {
        Self {
            primary_name: Arc::from("primary"),
            secondary_name: Arc::from("secondary"),
            statuses: Box::new([false; 900]),
            timeout: None,
        }
        .on_server_errors()
    }

    /// The names [`OriginUsed`] and the failover log give the two origins.
    pub fn names(mut self, primary: impl Into<Arc<str>>, secondary: impl Into<Arc<str>>) -> Self {
        self.primary_name = primary.into();
        self.secondary_name = secondary.into();
        self
    }

    /// Empties the failover set: only errors and timeouts fail over.
    pub fn no_statuses(mut self) -> Self {
        self.statuses = Box::new([false; 900]);
        self
    }

    /// Adds a status to the failover set. Any status may be given, though CloudFront offers
    /// only 500, 502, 503, 504, 404 and 403.
    pub fn on_status(mut self, status: StatusCode) -> Self {
        self.statuses[usize::from(status.as_u16()) - 100] = true;
        self
    }

    /// Adds 500, 502, 503 and 504 (in the set by default).
    pub fn on_server_errors(self) -> Self {
        CLOUDFRONT_STATUSES[..4]
            .iter()
            .fold(self, |builder, &status| builder.on_status(status))
    }

    /// Adds 404 Not Found, for a primary that may not have every object yet.
    pub fn on_not_found(self) -> Self {
        self.on_status(StatusCode::NOT_FOUND)
    }

    /// Adds 403 Forbidden, which some object stores answer for missing objects.
    pub fn on_forbidden(self) -> Self {
        self.on_status(StatusCode::FORBIDDEN)
    }

    /// Adds every status CloudFront offers: 500, 502, 503, 504, 404 and 403.
    pub fn on_cloudfront_statuses(self) -> Self {
        CLOUDFRONT_STATUSES
            .iter()
            .fold(self, |builder, &status| builder.on_status(status))
    }

    /// Bounds each attempt: a primary with no response after `timeout` fails over (when the
    /// request may be replayed), and a secondary, or a primary whose request may not be
    /// replayed, then fails with [`OriginTimedOut`]. The time counts until response headers
    /// arrive, not the body. Without it (the default) only the origin services' own timeouts
    /// apply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The group over `primary` and `secondary`.
    pub fn build<P, S>(self, primary: P, secondary: S) -> OriginGroup<P, S> {
        OriginGroup {
            primary,
            secondary,
            shared: Arc::new(GroupShared {
                primary_name: self.primary_name,
                secondary_name: self.secondary_name,
                statuses: self.statuses,
                timeout: self.timeout,
                primary_answers: AtomicU64::new(0),
                failovers: AtomicU64::new(0),
            }),
        }
    }
}

/// A response extension naming the origin of an [`OriginGroup`] that produced the response.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OriginUsed {
    name: Arc<str>,
    secondary: bool,
}

impl OriginUsed {
    /// For the server's proxy, which marks its answers like a group does.
    #[cfg(feature = "server")]
    pub(crate) fn new(name: Arc<str>, secondary: bool) -> Self {
        Self { name, secondary }
    }

    /// The origin's name, as given to [`OriginGroupBuilder::names`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the response came from the secondary origin, after a failover.
    pub fn is_secondary(&self) -> bool {
        self.secondary
    }
}

/// The error of an [`OriginGroup`] attempt that had no response within the group's timeout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OriginTimedOut {
    origin: Arc<str>,
    after: Duration,
}

impl OriginTimedOut {
    /// The name of the origin that did not answer.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The timeout that ran out.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for OriginTimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "origin `{}` sent no response within {:?}",
            self.origin, self.after
        )
    }
}

impl std::error::Error for OriginTimedOut {}

/// The future of an [`OriginGroup`] call.
pub struct OriginGroupFuture<ResB> {
    inner: Pin<Box<dyn Future<Output = Result<Response<ResB>, BoxError>> + Send>>,
}

impl<ResB> fmt::Debug for OriginGroupFuture<ResB> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginGroupFuture").finish_non_exhaustive()
    }
}

impl<ResB> Future for OriginGroupFuture<ResB> {
    type Output = Result<Response<ResB>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// Why the primary's answer was not used.
enum Failure<ResB> {
    Error(BoxError),
    TimedOut(OriginTimedOut),
    Status(Response<ResB>),
}

impl<ResB> Failure<ResB> {
    fn into_result(self) -> Result<Response<ResB>, BoxError> {
        match self {
            Self::Error(err) => Err(err),
            Self::TimedOut(err) => Err(Box::new(err)),
            Self::Status(res) => Ok(res),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Error(err) => format!("error: {err}"),
            Self::TimedOut(err) => err.to_string(),
            Self::Status(res) => format!("status {}", res.status().as_u16()),
        }
    }
}

/// Runs one attempt, bounded by the group's timeout if it has one.
async fn attempt<F, ResB, E>(
    future: F,
    timeout: Option<Duration>,
    origin: &Arc<str>,
) -> Result<Response<ResB>, Failure<ResB>>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
{
    let result = match timeout {
        Some(after) => match tokio::time::timeout(after, future).await {
            Ok(result) => result,
            Err(_) => {
                return Err(Failure::TimedOut(OriginTimedOut {
                    origin: origin.clone(),
                    after,
                }))
            }
        },
        None => future.await,
    };
    result.map_err(|err| Failure::Error(err.into()))
}

fn mark<ResB>(mut res: Response<ResB>, name: &Arc<str>, secondary: bool) -> Response<ResB> {
    res.extensions_mut().insert(OriginUsed {
        name: name.clone(),
        secondary,
    });
    res
}

/// The request to replay on the secondary, when `req` may fail over.
fn replay<ReqB: Body + Default>(req: &Request<ReqB>) -> Option<Request<ReqB>> {
    if !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS)
        || !req.body().is_end_stream()
    {
        return None;
    }
    let mut copy = Request::new(ReqB::default());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    *copy.extensions_mut() = req.extensions().clone();
    Some(copy)
}

impl<P, S, ReqB, ResB> Service<Request<ReqB>> for OriginGroup<P, S>
where
    P: Service<Request<ReqB>, Response = Response<ResB>> + Clone,
    P::Error: Into<BoxError>,
    P::Future: Send + 'static,
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    ReqB: Body + Default + Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<ResB>;
    type Error = BoxError;
    type Future = OriginGroupFuture<ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.primary.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let shared = self.shared.clone();
        let retry = replay(&req).map(|copy| (copy, self.secondary.clone()));
        // The ready primary serves this request; the group keeps a fresh clone (tower's idiom).
        let fresh = self.primary.clone();
        let mut primary = std::mem::replace(&mut self.primary, fresh);
        let first = primary.call(req);
        let inner = Box::pin(async move {
            let failure = match attempt(first, shared.timeout, &shared.primary_name).await {
                Ok(res) if !shared.fails_over_on(res.status()) => {
                    shared.primary_answers.fetch_add(1, Ordering::Relaxed);
                    return Ok(mark(res, &shared.primary_name, false));
                }
                Ok(res) => Failure::Status(res),
                Err(failure) => failure,
            };
            let Some((copy, mut secondary)) = retry else {
                shared.primary_answers.fetch_add(1, Ordering::Relaxed);
                return failure
                    .into_result()
                    .map(|res| mark(res, &shared.primary_name, false));
            };
            shared.failovers.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                primary = %shared.primary_name,
                secondary = %shared.secondary_name,
                reason = %failure.describe(),
                "origin group failing over"
            );
            // The primary's failed response (and its connection) is let go before the replay.
            drop(failure);
            poll_fn(|cx| secondary.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            let second = secondary.call(copy);
            match attempt(second, shared.timeout, &shared.secondary_name).await {
                Ok(res) | Err(Failure::Status(res)) => Ok(mark(res, &shared.secondary_name, true)),
                Err(failure) => failure.into_result(),
            }
        });
        OriginGroupFuture { inner }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_sets() {
        let group = OriginGroup::builder()
            .no_statuses()
            .on_not_found()
            .build((), ());
        assert!(group.shared.fails_over_on(StatusCode::NOT_FOUND));
        assert!(!group.shared.fails_over_on(StatusCode::BAD_GATEWAY));

        let group = OriginGroup::new((), ());
        for status in [500, 502, 503, 504] {
            assert!(group
                .shared
                .fails_over_on(StatusCode::from_u16(status).unwrap()));
        }
        assert!(!group.shared.fails_over_on(StatusCode::NOT_FOUND));
        assert!(!group.shared.fails_over_on(StatusCode::OK));

        let group = OriginGroup::builder()
            .on_cloudfront_statuses()
            .build((), ());
        for status in CLOUDFRONT_STATUSES {
            assert!(group.shared.fails_over_on(status));
        }
        assert!(format!("{group:?}").contains("403"));
    }

    #[test]
    fn only_safe_bodiless_requests_replay() {
        let get = Request::get("/a")
            .header("accept", "text/html")
            .body(String::new())
            .unwrap();
        let copy = replay(&get).unwrap();
        assert_eq!(copy.uri(), "/a");
        assert_eq!(copy.headers()["accept"], "text/html");

        let post = Request::post("/a").body(String::new()).unwrap();
        assert!(replay(&post).is_none());
        let get_with_body = Request::get("/a").body("x".to_owned()).unwrap();
        assert!(replay(&get_with_body).is_none());
    }
}
