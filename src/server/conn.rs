//! Accepting TCP (and TLS) connections and serving HTTP/1 and HTTP/2 on them until shutdown.

use std::{
    convert::Infallible,
    future::{poll_fn, Future},
    io,
    net::SocketAddr,
    pin::pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    header,
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderValue, Method, Request, Response, Uri,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{
        conn::auto,
        graceful::{GracefulShutdown, Watcher},
    },
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::{BoxError, ClientAddr, ViewerTls};

/// How long a viewer has to complete the TLS handshake.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The viewer's socket address, put into every request's extensions by the
/// server so that the proxy can name the viewer in `X-Forwarded-For`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// A bound socket, and the TLS it speaks if it is an HTTPS listener.
pub(crate) struct Listener {
    pub(crate) tcp: TcpListener,
    pub(crate) tls: Option<TlsAcceptor>,
}

impl Listener {
    pub(crate) fn plain(tcp: TcpListener) -> Self {
        Self { tcp, tls: None }
    }
}

/// Serves `service` on every connection the listeners accept until `shutdown`
/// completes, then lets in-flight requests finish for up to `drain_timeout`.
pub(crate) async fn serve_connections<S, B>(
    listeners: Vec<Listener>,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    max_connections: usize,
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
    let open = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let mut shutdown = pin!(shutdown);
    // Which listener is polled first turns round, so a busy one cannot starve the other.
    let mut first = 0;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            (index, accepted) = accept_any(&listeners, &mut first) => match accepted {
                Ok((stream, peer)) => {
                    // Over the limit, the connection is closed at once: a flood of idle
                    // connections cannot exhaust file descriptors or memory.
                    let Ok(permit) = open.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit of {max_connections} reached; closing");
                        drop(stream);
                        continue;
                    };
                    let tls = listeners[index].tls.clone();
                    let service = WithConnection {
                        inner: service.clone(),
                        peer,
                        tls: tls.is_some(),
                        server_name: None,
                        _open: Arc::new(permit),
                    };
                    let watcher = graceful.watcher();
                    match tls {
                        None => spawn_connection(&builder, watcher, stream, service),
                        Some(acceptor) => {
                            spawn_tls_connection(&builder, watcher, acceptor, stream, service);
                        }
                    }
                }
                Err(err) => back_off(err).await,
            },
        }
    }
    // Closed first so that new viewers are refused at once rather than left waiting.
    drop(listeners);
    if tokio::time::timeout(drain_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still running after {drain_timeout:?}; stopping anyway");
    }
}

/// The next connection on any of `listeners`, and the index of the listener.
async fn accept_any(
    listeners: &[Listener],
    first: &mut usize,
) -> (usize, io::Result<(TcpStream, SocketAddr)>) {
    poll_fn(|cx| {
        let count = listeners.len();
        for offset in 0..count {
            let index = (*first + offset) % count;
            if let Poll::Ready(accepted) = listeners[index].tcp.poll_accept(cx) {
                *first = (index + 1) % count;
                return Poll::Ready((index, accepted));
            }
        }
        Poll::Pending
    })
    .await
}

/// How long a viewer may take to send a request's header section.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most header fields in one request; more gets `431`.
const MAX_HEADERS: usize = 100;
/// The most bytes of header section in one request (HTTP/1 read buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;

fn connection_builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timers enforce HTTP/1's header read timeout (so slow clients cannot
    // hold connections forever) and HTTP/2's keep-alive pings.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

fn spawn_connection<S, B, I>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    stream: I,
    service: S,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // With upgrades, so that WebSocket handshakes can take the connection over.
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    let connection = watcher.watch(connection);
    tokio::spawn(async move {
        // Viewers going away mid-request is routine for a server, hence debug.
        if let Err(err) = connection.await {
            tracing::debug!("connection ended with an error: {err}");
        }
    });
}

/// Completes the TLS handshake on its own task, so that a slow viewer does not hold up
/// the accept loop, then serves the connection like a plain one.
fn spawn_tls_connection<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: Watcher,
    acceptor: TlsAcceptor,
    stream: TcpStream,
    mut service: WithConnection<S>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let builder = builder.clone();
    tokio::spawn(async move {
        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                service.server_name = stream.get_ref().1.server_name().map(Arc::from);
                spawn_connection(&builder, watcher, stream, service);
            }
            Ok(Err(err)) => tracing::debug!("TLS handshake failed: {err}"),
            Err(_) => tracing::debug!("TLS handshake not done in {TLS_HANDSHAKE_TIMEOUT:?}"),
        }
    });
}

/// Waits a little after a failed accept: the usual cause is running out of
/// file descriptors, and retrying at once would spin.
async fn back_off(err: io::Error) {
    tracing::warn!("accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A request extension: the name a TLS viewer asked for when it connected (SNI).
#[derive(Clone, Debug)]
pub(crate) struct ServerName(pub(crate) Arc<str>);

/// Records on each request what the connection says about the viewer: its [`PeerAddr`],
/// [`ViewerTls`] for HTTPS, and the scheme in the request URI.
#[derive(Clone, Debug)]
struct WithConnection<S> {
    inner: S,
    peer: SocketAddr,
    tls: bool,
    /// The name the TLS client asked for (SNI), if any.
    server_name: Option<Arc<str>>,
    /// Held while the connection lives (the connection keeps its service until it closes).
    _open: Arc<OwnedSemaphorePermit>,
}

impl<S, B> Service<Request<B>> for WithConnection<S>
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
        request.extensions_mut().insert(ClientAddr(self.peer));
        if self.tls {
            request.extensions_mut().insert(ViewerTls);
        }
        if let Some(name) = &self.server_name {
            request.extensions_mut().insert(ServerName(name.clone()));
        }
        let scheme = if self.tls {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        if let Some(uri) = with_scheme(&request, scheme) {
            *request.uri_mut() = uri;
        }
        host_from_target(&mut request);
        self.inner.call(request)
    }
}

/// The request's URI in absolute form with the scheme the connection actually used, or
/// `None` to leave it as it is.
///
/// The scheme is part of the cache key, so HTTPS requests (which HTTP/1 sends in origin form,
/// `/path`) get `https://host/path`, and a plain-text HTTP/2 viewer cannot claim `https` in
/// `:scheme` to reach, or poison, what HTTPS viewers are served.
fn with_scheme<B>(request: &Request<B>, scheme: Scheme) -> Option<Uri> {
    let uri = request.uri();
    if request.method() == Method::CONNECT || uri.scheme() == Some(&scheme) {
        return None;
    }
    if scheme == Scheme::HTTP && uri.scheme().is_none() {
        // Origin form over plain HTTP already means `http`.
        return None;
    }
    let authority = match uri.authority() {
        Some(authority) => authority.clone(),
        None => host_authority(request.headers())?,
    };
    let mut parts = uri.clone().into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).ok()
}

/// Makes `Host` agree with the target's authority when the target has one (absolute form,
/// HTTP/2 `:authority`, or an HTTPS request given its host above), so the site chosen, the
/// cache key and the origin's `Host` all name one host. RFC 9112 §3.2.2: a request in
/// absolute form is for the target's host, whatever `Host` says; RFC 9113 §8.3.1: `host`
/// must not name another entity than `:authority`. Without this, `GET http://a.test/` with
/// `Host: b.test` would fetch b.test's page and store it as a.test's.
fn host_from_target<B>(request: &mut Request<B>) {
    let Some(authority) = request.uri().authority() else {
        return;
    };
    // Without user info, which `Host` never carries (RFC 9110 §7.2).
    let target = authority
        .as_str()
        .rsplit_once('@')
        .map_or(authority.as_str(), |(_, host)| host);
    let agrees = request
        .headers()
        .get(header::HOST)
        .is_some_and(|host| host.as_bytes() == target.as_bytes());
    if !agrees {
        if let Ok(host) = HeaderValue::from_str(target) {
            request.headers_mut().insert(header::HOST, host);
        }
    }
}

fn host_authority(headers: &HeaderMap) -> Option<Authority> {
    headers.get(header::HOST)?.to_str().ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri_over(request: Request<()>, scheme: Scheme) -> Option<String> {
        with_scheme(&request, scheme).map(|uri| uri.to_string())
    }

    #[test]
    fn tls_requests_get_an_https_uri() {
        let request = Request::get("/a?b=c")
            .header(header::HOST, "www.example.test")
            .body(())
            .unwrap();
        assert_eq!(
            uri_over(request, Scheme::HTTPS).as_deref(),
            Some("https://www.example.test/a?b=c")
        );
    }

    #[test]
    fn plain_requests_cannot_claim_https() {
        let request = Request::get("https://www.example.test/a").body(()).unwrap();
        assert_eq!(
            uri_over(request, Scheme::HTTP).as_deref(),
            Some("http://www.example.test/a")
        );
        let request = Request::get("/a").body(()).unwrap();
        assert_eq!(uri_over(request, Scheme::HTTP), None);
    }
}
