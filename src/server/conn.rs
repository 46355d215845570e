//! Accepting TCP (and TLS) connections and serving HTTP/1 and HTTP/2 on them until shutdown.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::{poll_fn, Future},
    io,
    net::{IpAddr, Ipv6Addr, SocketAddr},
    pin::{pin, Pin},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    header,
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderValue, Method, Request, Response, Uri, Version,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    net::{TcpListener, TcpStream},
    sync::{watch, OwnedSemaphorePermit, Semaphore},
    time::Instant,
};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

use crate::{BoxError, ClientAddr, ViewerTls};

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

/// How connections are bounded: how many, how many per client, and how long they may sit
/// without a request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConnLimits {
    /// The most connections open at once.
    pub(crate) max_connections: usize,
    /// The most connections open at once from one client (an IPv4 address, or an IPv6 /64);
    /// 0 for no such limit.
    pub(crate) per_client: usize,
    /// How long a new connection has to finish its TLS handshake, and then to send a complete
    /// first request head (whatever the protocol); for HTTP/1 also each later request head.
    pub(crate) header_timeout: Duration,
    /// How long a connection may stay without an open request before it is closed.
    pub(crate) idle_timeout: Duration,
}

impl ConnLimits {
    /// No per-client limit, for the edge's own loopback listeners (the demo origin).
    pub(crate) fn internal(max_connections: usize) -> Self {
        Self {
            max_connections,
            per_client: 0,
            header_timeout: HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
        }
    }
}

/// The idle timeout when none is configured.
pub(crate) const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves `service` on every connection the listeners accept until `shutdown`
/// completes, then lets in-flight requests finish for up to `drain_timeout`.
pub(crate) async fn serve_connections<S, B>(
    listeners: Vec<Listener>,
    service: S,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
    limits: ConnLimits,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let builder = connection_builder(limits);
    // Every connection task holds a receiver: `closed` resolves once all have ended.
    let (stop, _) = watch::channel(false);
    let max_connections = limits.max_connections;
    let open = Arc::new(Semaphore::new(max_connections.min(Semaphore::MAX_PERMITS)));
    let clients = Arc::new(ClientCounts::new(limits.per_client));
    let mut shutdown = pin!(shutdown);
    // Which listener is polled first turns round, so a busy one cannot starve the other.
    let mut first = 0;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            (index, accepted) = accept_any(&listeners, &mut first) => match accepted {
                Ok((stream, peer)) => {
                    // Over a limit, the connection is closed at once: a flood of idle
                    // connections cannot exhaust file descriptors or memory.
                    let Ok(permit) = open.clone().try_acquire_owned() else {
                        tracing::warn!(%peer, "connection limit of {max_connections} reached; closing");
                        drop(stream);
                        continue;
                    };
                    let Some(client) = ClientCounts::admit(&clients, peer.ip()) else {
                        tracing::warn!(
                            %peer,
                            "limit of {} connections from one client reached; closing",
                            limits.per_client
                        );
                        drop(stream);
                        continue;
                    };
                    let state = Arc::new(ConnState {
                        _permit: permit,
                        _client: client,
                        started: AtomicU64::new(0),
                        ended: AtomicU64::new(0),
                    });
                    // Responses go out as soon as they are written: without this, Nagle's
                    // algorithm holds a response's last segment back until the viewer
                    // acknowledges the previous one, which a delayed ACK puts off by up to
                    // 40 ms on keep-alive connections.
                    if let Err(err) = stream.set_nodelay(true) {
                        tracing::debug!(%peer, "TCP_NODELAY not set: {err}");
                    }
                    let tls = listeners[index].tls.clone();
                    let service = WithConnection {
                        inner: service.clone(),
                        peer,
                        tls: tls.is_some(),
                        server_name: None,
                        state: Some(state.clone()),
                    };
                    let watch = Watch {
                        stop: stop.subscribe(),
                        state,
                        limits,
                    };
                    match tls {
                        None => spawn_connection(&builder, watch, stream, service),
                        Some(acceptor) => {
                            spawn_tls_connection(&builder, watch, acceptor, stream, service);
                        }
                    }
                }
                Err(err) => back_off(err).await,
            },
        }
    }
    // Closed first so that new viewers are refused at once rather than left waiting.
    drop(listeners);
    let _ = stop.send(true);
    if tokio::time::timeout(drain_timeout, stop.closed())
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

/// How long a viewer may take to send a request's header section, when not configured.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The most header fields in one request; more gets `431`.
const MAX_HEADERS: usize = 100;
/// The most bytes of header section in one request (HTTP/1 read buffer, HTTP/2 header list).
const MAX_HEADER_BYTES: usize = 64 * 1024;
/// How often an HTTP/2 connection is pinged, to find viewers that went away without closing.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(20);
/// How long a ping may go unanswered before the connection is closed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// The idle timeout is checked this many times per timeout: a connection is closed between
/// one and one and a quarter idle timeouts after its last request.
const IDLE_CHECKS: u32 = 4;

fn connection_builder(limits: ConnLimits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timers enforce HTTP/1's header read timeout (so slow clients cannot hold
    // connections forever; it also closes a keep-alive connection that sends no next
    // request) and HTTP/2's keep-alive pings.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    builder
}

/// What a connection's task watches besides the connection: the server's shutdown, and the
/// connection's requests for the header and idle timeouts.
struct Watch {
    stop: watch::Receiver<bool>,
    state: Arc<ConnState>,
    limits: ConnLimits,
}

fn spawn_connection<S, B, I>(
    builder: &auto::Builder<TokioExecutor>,
    mut watch: Watch,
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
    tokio::spawn(async move {
        let mut connection = pin!(connection);
        let ConnLimits {
            header_timeout,
            idle_timeout,
            ..
        } = watch.limits;
        // Until the first request, the header timeout: this covers the protocol detection
        // (which hyper does not time), an HTTP/2 preface with no request after it, and a slow
        // first HTTP/1 head. Then the idle timeout, checked a few times per period.
        let check = idle_timeout / IDLE_CHECKS;
        let header_deadline = Instant::now() + header_timeout;
        let mut deadline = header_deadline.min(Instant::now() + check);
        let mut waiting_for_first = true;
        let mut seen = (0, 0);
        let mut idle_checks = 0;
        let mut closing = false;
        let result = loop {
            tokio::select! {
                result = connection.as_mut() => break result,
                _ = watch.stop.wait_for(|stop| *stop), if !closing => {
                    closing = true;
                    connection.as_mut().graceful_shutdown();
                }
                () = tokio::time::sleep_until(deadline), if !closing => {
                    let counts = watch.state.counts();
                    if waiting_for_first {
                        if counts.0 == 0 {
                            if Instant::now() >= header_deadline {
                                tracing::debug!("no request within {header_timeout:?}; closing");
                                return;
                            }
                            deadline = header_deadline.min(Instant::now() + check);
                            continue;
                        }
                        waiting_for_first = false;
                    }
                    if counts == seen && counts.0 == counts.1 {
                        idle_checks += 1;
                        if idle_checks >= IDLE_CHECKS {
                            tracing::debug!("no request for {idle_timeout:?}; closing");
                            closing = true;
                            // HTTP/2: GOAWAY, and the streams still sending their bodies finish.
                            connection.as_mut().graceful_shutdown();
                        }
                    } else {
                        idle_checks = 0;
                    }
                    seen = counts;
                    deadline = Instant::now() + check;
                }
            }
        };
        // Viewers going away mid-request is routine for a server, hence debug.
        if let Err(err) = result {
            tracing::debug!("connection ended with an error: {err}");
        }
    });
}

/// Completes the TLS handshake on its own task, so that a slow viewer does not hold up
/// the accept loop, then serves the connection like a plain one. The handshake has the
/// header timeout.
fn spawn_tls_connection<S, B>(
    builder: &auto::Builder<TokioExecutor>,
    watch: Watch,
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
    let timeout = watch.limits.header_timeout;
    tokio::spawn(async move {
        match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => {
                service.server_name = stream.get_ref().1.server_name().map(Arc::from);
                spawn_connection(&builder, watch, stream, service);
            }
            Ok(Err(err)) => tracing::debug!("TLS handshake failed: {err}"),
            Err(_) => tracing::debug!("TLS handshake not done in {timeout:?}; closing"),
        }
    });
}

/// Waits a little after a failed accept: the usual cause is running out of
/// file descriptors, and retrying at once would spin.
async fn back_off(err: io::Error) {
    tracing::warn!("accept failed: {err}");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// One connection's slots (in the server's limit and its client's) and request counts.
/// Dropped, with the slots freed, once the connection and its last request are done.
#[derive(Debug)]
struct ConnState {
    _permit: OwnedSemaphorePermit,
    _client: ClientSlot,
    /// Requests begun on the connection.
    started: AtomicU64,
    /// Requests whose response has been handed to the connection (or that were dropped).
    ended: AtomicU64,
}

impl ConnState {
    fn counts(&self) -> (u64, u64) {
        (
            self.started.load(Ordering::Acquire),
            self.ended.load(Ordering::Acquire),
        )
    }
}

/// Open connections per client, for the per-client limit.
#[derive(Debug)]
struct ClientCounts {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ClientCounts {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one more connection from `ip`, or `None` when its client has all of its.
    fn admit(counts: &Arc<Self>, ip: IpAddr) -> Option<ClientSlot> {
        if counts.limit == 0 {
            return Some(ClientSlot(None));
        }
        let client = client_of(ip);
        let mut open = counts.open.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(client).or_insert(0);
        if *count >= counts.limit {
            return None;
        }
        *count += 1;
        Some(ClientSlot(Some((counts.clone(), client))))
    }
}

/// One connection's place in its client's count, given back when dropped.
#[derive(Debug)]
struct ClientSlot(Option<(Arc<ClientCounts>, IpAddr)>);

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some((counts, client)) = &self.0 else {
            return;
        };
        let mut open = counts.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(client) {
            *count -= 1;
            if *count == 0 {
                open.remove(client);
            }
        }
    }
}

/// The client a connection is counted against: an IPv4 address (also when written as an
/// IPv4-mapped IPv6 address), or an IPv6 /64, the block one site or household is given.
fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        },
    }
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
    /// The connection's slots and request counts. Each request is served by a clone of this
    /// service (hyper's tower adapter clones it per call), which hands this on to the
    /// request's future: counting costs no further clone.
    state: Option<Arc<ConnState>>,
}

impl<S, B> Service<Request<B>> for WithConnection<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        request.extensions_mut().insert(PeerAddr(self.peer));
        request.extensions_mut().insert(ClientAddr(self.peer));
        if self.tls {
            request.extensions_mut().insert(ViewerTls);
        }
        if let Some(name) = &self.server_name {
            request.extensions_mut().insert(ServerName(name.clone()));
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without `Host` is answered 400 (by the router,
        // which sees it still without one). Neither the URI nor a `Host` is made up for it
        // here, so nothing later takes the edge's own address for the viewer's host.
        let hostless =
            request.version() == Version::HTTP_11 && !request.headers().contains_key(header::HOST);
        if !hostless {
            let scheme = if self.tls {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            };
            if let Some(uri) = with_scheme(&request, scheme) {
                *request.uri_mut() = uri;
            }
            host_from_target(&mut request);
        }
        let state = self.state.take();
        if let Some(state) = &state {
            state.started.fetch_add(1, Ordering::AcqRel);
        }
        Counted {
            inner: self.inner.call(request),
            _ended: Ended(state),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request's future, counted as ended when it completes or is dropped.
    pub(crate) struct Counted<F> {
        #[pin]
        inner: F,
        _ended: Ended,
    }
}

impl<F: Future> Future for Counted<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        self.project().inner.poll(cx)
    }
}

/// Counts its request as ended when dropped.
struct Ended(Option<Arc<ConnState>>);

impl Drop for Ended {
    fn drop(&mut self) {
        if let Some(state) = &self.0 {
            state.ended.fetch_add(1, Ordering::AcqRel);
        }
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
    fn clients_are_ipv4_addresses_and_ipv6_64s() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            client_of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff")),
            client_of(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            client_of(ip("2001:db8:1:3::1")),
            client_of(ip("2001:db8:1:2::1"))
        );
    }

    #[test]
    fn a_client_gets_its_slots_back() {
        let counts = Arc::new(ClientCounts::new(2));
        let a = "2001:db8::1".parse().unwrap();
        let same_64 = "2001:db8::2".parse().unwrap();
        let first = ClientCounts::admit(&counts, a).unwrap();
        let second = ClientCounts::admit(&counts, same_64).unwrap();
        assert!(ClientCounts::admit(&counts, a).is_none());
        assert!(ClientCounts::admit(&counts, "2001:db8:0:1::1".parse().unwrap()).is_some());
        drop(first);
        let third = ClientCounts::admit(&counts, a).unwrap();
        drop((second, third));
        assert!(counts.open.lock().unwrap().is_empty());
        // 0: no limit, nothing counted.
        let unlimited = Arc::new(ClientCounts::new(0));
        let slots: Vec<_> = (0..1000)
            .map(|_| ClientCounts::admit(&unlimited, a).unwrap())
            .collect();
        assert_eq!(slots.len(), 1000);
        assert!(unlimited.open.lock().unwrap().is_empty());
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
