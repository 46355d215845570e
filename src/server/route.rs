//! Which requests the cache sees: connection upgrades (WebSocket) go around it.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{ready, Context, Poll},
};

use http::{Request, Response};
use http_body_util::Either;
use tower_service::Service;

use super::proxy::upgrade_protocol;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// Sends upgrade requests (a WebSocket handshake is a `GET` with `Connection: upgrade`) to
/// `direct`, and everything else to `cached`.
///
/// The caching layer treats such a `GET` as a cacheable miss: it would answer it from a
/// stored object for the same URL, queue concurrent handshakes for one URL behind each other
/// (request collapsing), and mark the URL hit-for-pass. None of that makes sense for a
/// tunnel, so upgrades never reach the cache.
#[derive(Clone, Debug)]
pub(crate) struct UpgradeBypass<C, D> {
    cached: C,
    direct: D,
}

impl<C, D> UpgradeBypass<C, D> {
    pub(crate) fn new(cached: C, direct: D) -> Self {
        Self { cached, direct }
    }
}

impl<C, D, ReqB, CB, DB> Service<Request<ReqB>> for UpgradeBypass<C, D>
where
    C: Service<Request<ReqB>, Response = Response<CB>, Error = Infallible>,
    C::Future: Send + 'static,
    D: Service<Request<ReqB>, Response = Response<DB>, Error = Infallible>,
    D::Future: Send + 'static,
{
    type Response = Response<Either<CB, DB>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Both are always ready in the server (the cache by design, the proxy because its
        // pooled client queues); waiting on both keeps the contract for any request.
        ready!(self.cached.poll_ready(cx))?;
        self.direct.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        if upgrade_protocol(request.headers(), request.version()).is_some() {
            let response = self.direct.call(request);
            Box::pin(async move { Ok(response.await?.map(Either::Right)) })
        } else {
            let response = self.cached.call(request);
            Box::pin(async move { Ok(response.await?.map(Either::Left)) })
        }
    }
}
