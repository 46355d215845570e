//! The request body limit, below the caching layer: a body over the limit is answered
//! `413` as an edge error (`X-Cache: Error`), whether its declared length is over the limit
//! or it goes past the limit while it streams to the origin.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{Either, Full, Limited};
use tower_service::Service;

use crate::respond::EdgeFailure;

/// What a viewer whose request body is over the limit reads, either way.
pub(crate) const BODY_TOO_LARGE: &str =
    "413 Content Too Large: the request body is over the limit\n";
/// The Cache-Status `detail` of that answer.
pub(crate) const BODY_TOO_LARGE_DETAIL: &str = "request-too-large";

/// Answers a request whose `Content-Length` is over `limit` at once; hands the others on
/// with their bodies cut off at `limit` (the proxy then fails with the length error, which
/// is answered with the same `413`).
#[derive(Clone, Debug)]
pub(crate) struct BodyLimit<S> {
    inner: S,
    limit: usize,
}

impl<S> BodyLimit<S> {
    pub(crate) fn new(limit: usize, inner: S) -> Self {
        Self { inner, limit }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for BodyLimit<S>
where
    S: Service<Request<Limited<ReqB>>, Response = Response<Either<ResB, Full<Bytes>>>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResB: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    // Only requests the cache does not answer come here; a box costs nothing on hits.
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        let declared = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|length| length > self.limit as u64) {
            return Box::pin(std::future::ready(Ok(too_large())));
        }
        let limit = self.limit;
        Box::pin(
            self.inner
                .call(request.map(|body| Limited::new(body, limit))),
        )
    }
}

/// The `413` for a body over the limit, marked as the edge's own answer.
fn too_large<B>() -> Response<Either<B, Full<Bytes>>> {
    let mut response = Response::new(Either::Right(Full::from(BODY_TOO_LARGE)));
    *response.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response.extensions_mut().insert(EdgeFailure {
        detail: BODY_TOO_LARGE_DETAIL,
    });
    response
}
