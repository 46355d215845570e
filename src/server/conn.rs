//! Accepting TCP connections and serving HTTP/1 and HTTP/2 on them until shutdown.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tower_service::Service;

use crate::BoxError;

/// The viewer's socket address, put into every request's extensions by the
/// server so that the proxy can name the viewer in `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// Serves `service` on every connection `listener` accepts until `shutdown`
/// completes, then lets in-flight requests finish for up to `drain_timeout`.
pub(crate) async fn serve_connections<S, B>(
    listener: TcpListener,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let builder = connection_builder();
    let graceful = GracefulShutdown::new();
    let mut shutdown = pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let service = WithPeer { inner: service.clone(), peer };
                    spawn_connection(&builder, &graceful, stream, service);
                }
                Err(err) => back_off(err).await,
            },
        }
    }
    // Closed first so that new viewers are refused at once rather than left waiting.
    drop(listener);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {drain_timeout:?}; stopping anyway");
    }
}

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timers enforce HTTP/1's header read timeout (so slow clients cannot
    // hold connections forever) and HTTP/2's keep-alive pings.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    builder
}

fn spawn_connection<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    graceful: &GracefulShutdown,
    stream: TcpStream,
    service: S,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let connection = builder
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        // Viewers going away mid-request is routine for a server, hence debug.
        if let Err(err) = connection.await {
            tracing::debug!("connection ended with an error: {err}");
        }
    });
}

/// Waits a little after a failed accept: the usual cause is running out of
/// file descriptors, and retrying at once would spin.
async fn back_off(err: io::Error) {
    tracing::warn!("accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Puts the connection's [`PeerAddr`] into each request.
#[derive(Clone, Debug)]
struct WithPeer<S> {
    inner: S,
    peer: SocketAddr,
}

impl<S, B> Service<Request<B>> for WithPeer<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> S::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        self.inner.call(request)
    }
}
