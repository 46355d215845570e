//! tower-cdn: a CDN edge as a tower `Layer` (skeleton; the cache lands next).
#![allow(missing_docs)]

use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_layer::Layer;
use tower_service::Service;

#[cfg(feature = "server")]
pub mod server;

/// Boxed error type of response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The caching layer.
#[derive(Clone, Debug, Default)]
pub struct CdnLayer {}

impl CdnLayer {
    /// A layer with default settings.
    pub fn new() -> Self {
        Self {}
    }
}

impl<S> Layer<S> for CdnLayer {
    type Service = CdnService<S>;
    fn layer(&self, inner: S) -> CdnService<S> {
        CdnService { inner }
    }
}

/// The caching service.
#[derive(Clone, Debug)]
pub struct CdnService<S> {
    inner: S,
}

/// Response body of [`CdnService`].
pub struct CdnBody<B> {
    inner: B,
}

impl<B> http_body::Body for CdnBody<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        std::pin::Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map(|o| o.map(|r| r.map_err(Into::into)))
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for CdnService<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqB: Send + 'static,
    ResB: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<CdnBody<ResB>>;
    type Error = S::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, S::Error>> + Send>,
    >;
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }
    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move { Ok(fut.await?.map(|inner| CdnBody { inner })) })
    }
}
