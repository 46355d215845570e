//! Forwarding viewer requests to the origin (over HTTP or HTTPS, with WebSocket and other
//! upgrades tunnelled through), and turning origin failures into 502/504 answers.

use std::{
    convert::Infallible,
    error::Error as _,
    fmt, io,
    net::IpAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{
    header::{self, HeaderName},
    uri::{Authority, PathAndQuery, Scheme},
    HeaderMap, HeaderValue, Request, Response, StatusCode, Uri, Version,
};
use http_body::Body;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Either, Full, LengthLimitError};
use hyper::{body::Incoming, upgrade::OnUpgrade};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{self, connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo, TokioTimer},
};
use tower_service::Service;

use rustls::ClientConfig;

use super::{
    site::check_path_prefix, HostHeader, OriginConfig, OriginProtocol, PeerAddr, ServerConfig,
    ServerError,
};
use crate::{
    rfc::headers::{remove_hop_by_hop_but_upgrade, upgrade_protocol},
    BoxError, ClientAddr, OriginUsed, ViewerTls,
};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// The name this edge gives itself in `Via`.
const VIA_PSEUDONYM: &str = "tower-cdn";

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Where requests go and what they carry there.
#[derive(Debug)]
struct Origin {
    client: Client<HttpsConnector<HttpConnector>, OriginBody>,
    name: Arc<str>,
    protocol: OriginProtocol,
    /// The authority for HTTP and for HTTPS (they differ in port).
    http: Authority,
    https: Authority,
    path_prefix: Option<Box<str>>,
    /// The `Host` sent instead of the viewer's, if any.
    host: OriginHost,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// Requests sent, and those that got no response.
    requests: AtomicU64,
    failures: AtomicU64,
}

/// The `Host` an origin receives.
#[derive(Debug)]
enum OriginHost {
    /// The viewer's.
    Viewer,
    /// A configured name.
    Fixed(HeaderValue),
    /// The origin's own `host[:port]`, as the request is sent (scheme and port by the
    /// protocol policy).
    Origin,
}

/// The request body sent to the origin: the viewer's, streamed, whatever its type.
pub(crate) type OriginBody = UnsyncBoxBody<Bytes, BoxError>;

/// Sends each viewer request to one origin with proxy headers fixed up.
#[derive(Clone, Debug)]
pub(crate) struct ProxyService {
    origin: Arc<Origin>,
    timeout: Duration,
}

impl ProxyService {
    /// A proxy to `origin` (whose URL must have passed `check_origin`), with the server's
    /// settings as defaults and `tls` for `https://` connections.
    pub(crate) fn new(
        origin: &OriginConfig,
        defaults: &ServerConfig,
        tls: ClientConfig,
    ) -> Result<Self, ServerError> {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(
            origin.connect_timeout.unwrap_or(defaults.connect_timeout),
        ));
        connector.set_nodelay(true);
        // `https_or_http` keeps plain origins working: TLS is used for `https://` URIs only.
        connector.enforce_http(false);
        let connector = HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let client = Client::builder(TokioExecutor::new())
            // Without a timer the pool would never expire idle origin connections.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(origin.keep_alive.unwrap_or(Duration::from_secs(90)))
            .build(connector);
        let invalid =
            |what: &str| ServerError::InvalidConfig(format!("origin `{}`: {what}", origin.name));
        let url = &origin.url;
        let https_url = url.scheme() == Some(&Scheme::HTTPS);
        let host = url.host().ok_or_else(|| invalid("the URL has no host"))?;
        let url_port = url.port_u16().unwrap_or(if https_url { 443 } else { 80 });
        let http_port = origin
            .http_port
            .unwrap_or(if https_url { 80 } else { url_port });
        let https_port = origin
            .https_port
            .unwrap_or(if https_url { url_port } else { 443 });
        let authority = |port: u16, default: u16| {
            let text = if port == default {
                host.to_owned()
            } else {
                format!("{host}:{port}")
            };
            Authority::try_from(text).map_err(|_| invalid("the URL's host is not valid"))
        };
        let fixed_host = match (&origin.host, defaults.host_header) {
            (Some(host), _) => OriginHost::Fixed(
                HeaderValue::from_str(host).map_err(|_| invalid("`host` is not a valid host"))?,
            ),
            (None, HostHeader::Origin) => OriginHost::Origin,
            (None, HostHeader::Viewer) => OriginHost::Viewer,
        };
        if let Some(prefix) = &origin.path_prefix {
            check_path_prefix(prefix).map_err(|err| invalid(&err))?;
        }
        Ok(Self {
            origin: Arc::new(Origin {
                client,
                name: origin.name.as_str().into(),
                protocol: origin.protocol.unwrap_or(if https_url {
                    OriginProtocol::HttpsOnly
                } else {
                    OriginProtocol::HttpOnly
                }),
                http: authority(http_port, 80)?,
                https: authority(https_port, 443)?,
                path_prefix: origin
                    .path_prefix
                    .as_deref()
                    .map(|prefix| prefix.trim_end_matches('/'))
                    .filter(|prefix| !prefix.is_empty())
                    .map(Into::into),
                host: fixed_host,
                headers: origin.headers.clone(),
                requests: AtomicU64::new(0),
                failures: AtomicU64::new(0),
            }),
            timeout: origin.response_timeout.unwrap_or(defaults.origin_timeout),
        })
    }

    /// The origin's name.
    pub(crate) fn name(&self) -> &Arc<str> {
        &self.origin.name
    }

    /// Requests sent to this origin, and how many of them got no response.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.origin.requests.load(Ordering::Relaxed),
            self.origin.failures.load(Ordering::Relaxed),
        )
    }

    /// How long this origin may take to answer.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Rewrites a viewer request into the request the origin receives.
    fn to_origin_request<B>(&self, request: Request<B>) -> Request<B> {
        let (mut parts, body) = request.into_parts();
        let received = parts.version;
        let viewer_host = parts
            .headers
            .get(header::HOST)
            .cloned()
            .or_else(|| authority_header(&parts.uri));
        // The viewer as the layer resolved it at entry (the connection's address, or the one
        // a trusted proxy named).
        let client = parts
            .extensions
            .get::<ClientAddr>()
            .map(|addr| addr.0.ip())
            .or_else(|| parts.extensions.get::<PeerAddr>().map(|peer| peer.0.ip()));
        let tls = parts.extensions.get::<ViewerTls>().is_some();
        let upgrade = upgrade_protocol(&parts.headers, received);

        parts.uri = self.origin_uri(&parts.uri, tls);
        // The origin is spoken to over HTTP/1.1 whatever the viewer used.
        parts.version = Version::HTTP_11;
        // The one hop-by-hop exchange passed on is an upgrade: the tunnel needs the origin's
        // consent.
        remove_hop_by_hop_but_upgrade(&mut parts.headers, upgrade);
        let origin_authority = parts.uri.authority().map(|a| a.as_str());
        let fixed = match &self.origin.host {
            OriginHost::Viewer => None,
            OriginHost::Fixed(host) => Some(host.clone()),
            OriginHost::Origin => origin_authority.and_then(|a| HeaderValue::from_str(a).ok()),
        };
        set_host(&mut parts.headers, fixed, viewer_host.clone());
        add_forwarding_headers(&mut parts.headers, client, tls, viewer_host.as_ref());
        append_via(&mut parts.headers, received);
        // Last, so a viewer cannot override them.
        for (name, value) in &self.origin.headers {
            parts.headers.insert(name, value.clone());
        }
        Request::from_parts(parts, body)
    }

    /// The origin's scheme and authority (by the protocol policy and whether the viewer
    /// came over TLS) with the origin path and the viewer's path and query.
    fn origin_uri(&self, viewer_uri: &Uri, viewer_tls: bool) -> Uri {
        let https = match self.origin.protocol {
            OriginProtocol::HttpOnly => false,
            OriginProtocol::HttpsOnly => true,
            OriginProtocol::MatchViewer => viewer_tls,
        };
        let (scheme, authority) = if https {
            (Scheme::HTTPS, self.origin.https.clone())
        } else {
            (Scheme::HTTP, self.origin.http.clone())
        };
        let viewer_pq = viewer_uri
            .path_and_query()
            .map_or("/", PathAndQuery::as_str);
        let path_and_query = match &self.origin.path_prefix {
            // `OPTIONS *` is about the server, not a path under the prefix.
            Some(prefix) if viewer_pq != "*" => {
                PathAndQuery::try_from(format!("{prefix}{viewer_pq}"))
                    .unwrap_or_else(|_| PathAndQuery::from_static("/"))
            }
            _ => viewer_uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        };
        Uri::builder()
            .scheme(scheme)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .expect("a checked origin plus a parsed path is a valid URI")
    }
}

/// Sets the origin's `Host`: `fixed`, with the viewer's in `X-Forwarded-Host`, or else the
/// viewer's.
fn set_host(headers: &mut HeaderMap, fixed: Option<HeaderValue>, viewer_host: Option<HeaderValue>) {
    // Only the edge says which host the viewer asked for: a viewer's own
    // `X-Forwarded-Host` is not in the cache key, so passing it on would let one viewer
    // change (and poison) what the origin answers everyone, e.g. in absolute links.
    headers.remove(X_FORWARDED_HOST);
    match (fixed, viewer_host) {
        (None, Some(host)) => {
            headers.insert(header::HOST, host);
        }
        (Some(fixed), viewer_host) => {
            headers.insert(header::HOST, fixed);
            if let Some(host) = viewer_host {
                headers.insert(X_FORWARDED_HOST, host);
            }
        }
        // No viewer host at all (HTTP/1.0): the client fills in the origin's.
        (None, None) => {}
    }
}

impl<B> Service<Request<B>> for ProxyService
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<Incoming>, ProxyError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The pooled client queues requests itself, so there is no back-pressure to report.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        // Taken before the request is rewritten: hyper put it there for the viewer's connection.
        let viewer_upgrade = upgrade_protocol(request.headers(), request.version())
            .and_then(|_| request.extensions_mut().remove::<OnUpgrade>());
        let request = self
            .to_origin_request(request)
            .map(|body| body.map_err(Into::into).boxed_unsync());
        // The address tried, for the log (never for the viewer): with a match-viewer origin
        // it depends on the viewer's protocol (http_port / https_port).
        let (scheme, address) = (
            request.uri().scheme().cloned(),
            request.uri().authority().cloned(),
        );
        let sent = self.origin.client.request(request);
        let timeout = self.timeout;
        let origin = self.origin.clone();
        origin.requests.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            let answer = match tokio::time::timeout(timeout, sent).await {
                Ok(answer) => answer.map_err(ProxyError::from_client),
                Err(_) => Err(ProxyError::Timeout(timeout)),
            };
            let mut response = answer.inspect_err(|err| {
                origin.failures.fetch_add(1, Ordering::Relaxed);
                let scheme = scheme.as_ref().map_or("http", Scheme::as_str);
                let address = address.as_ref().map_or("-", Authority::as_str);
                tracing::warn!(
                    origin = %origin.name,
                    "origin request to {scheme}://{address} failed: {err}"
                );
            })?;
            let upgraded = match viewer_upgrade {
                Some(viewer) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                    let origin = hyper::upgrade::on(&mut response);
                    tokio::spawn(tunnel(viewer, origin));
                    true
                }
                _ => false,
            };
            // An origin group replaces this with its own mark (naming the same origin).
            response
                .extensions_mut()
                .insert(OriginUsed::new(origin.name.clone(), false));
            Ok(to_viewer_response(response, upgraded))
        })
    }
}

/// Strips the origin's hop-by-hop fields (but for an accepted upgrade's `Upgrade` and
/// `Connection`) and records this hop in `Via`.
fn to_viewer_response<B>(mut response: Response<B>, upgraded: bool) -> Response<B> {
    let received = response.version();
    let protocol = upgraded
        .then(|| response.headers().get(header::UPGRADE).cloned())
        .flatten();
    remove_hop_by_hop_but_upgrade(response.headers_mut(), protocol);
    append_via(response.headers_mut(), received);
    response
}

/// Copies bytes both ways between the viewer's and the origin's upgraded connections until
/// either side closes.
async fn tunnel(viewer: OnUpgrade, origin: OnUpgrade) {
    let (viewer, origin) = match tokio::try_join!(viewer, origin) {
        Ok(both) => both,
        Err(err) => {
            tracing::debug!("upgrade failed: {err}");
            return;
        }
    };
    let (mut viewer, mut origin) = (TokioIo::new(viewer), TokioIo::new(origin));
    match tokio::io::copy_bidirectional(&mut viewer, &mut origin).await {
        Ok((up, down)) => tracing::debug!(up, down, "upgraded connection closed"),
        Err(err) => tracing::debug!("upgraded connection ended with an error: {err}"),
    }
}

/// The viewer's URI authority as a `Host` value (HTTP/2 viewers send no `Host`).
fn authority_header(uri: &Uri) -> Option<HeaderValue> {
    uri.authority()
        .and_then(|authority| HeaderValue::from_str(authority.as_str()).ok())
}

/// Sets the forwarding fields from what the edge knows, replacing any the request carries
/// (the layer removed the viewer's at entry; a behavior that kept one does not get to speak
/// for the edge): `X-Forwarded-For` (the viewer's address as resolved at entry),
/// `X-Forwarded-Proto`, and `Forwarded` (RFC 7239) with `for`, `proto` and `host`.
/// `X-Forwarded-Host` is [`set_host`]'s.
fn add_forwarding_headers(
    headers: &mut HeaderMap,
    client: Option<IpAddr>,
    tls: bool,
    viewer_host: Option<&HeaderValue>,
) {
    let proto = if tls { "https" } else { "http" };
    match client.and_then(|ip| HeaderValue::try_from(ip.to_string()).ok()) {
        Some(ip) => {
            headers.insert(X_FORWARDED_FOR, ip);
        }
        None => {
            headers.remove(X_FORWARDED_FOR);
        }
    }
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(proto));
    match HeaderValue::try_from(forwarded_element(client, proto, viewer_host)) {
        Ok(value) => {
            headers.insert(header::FORWARDED, value);
        }
        Err(_) => {
            headers.remove(header::FORWARDED);
        }
    }
}

/// One `Forwarded` element (RFC 7239 §4): `for` (an IPv6 address quoted in brackets, §6;
/// `unknown` when the edge does not know, §6.3), `proto`, and `host` as the viewer sent it,
/// quoted when it is not a token (a `host:port` is not).
fn forwarded_element(client: Option<IpAddr>, proto: &str, host: Option<&HeaderValue>) -> String {
    let mut element = match client {
        Some(IpAddr::V4(ip)) => format!("for={ip}"),
        Some(IpAddr::V6(ip)) => format!("for=\"[{ip}]\""),
        None => "for=unknown".to_owned(),
    };
    element.push_str(";proto=");
    element.push_str(proto);
    if let Some(host) = host.and_then(|h| h.to_str().ok()) {
        element.push_str(";host=");
        if !host.is_empty() && host.bytes().all(is_tchar) {
            element.push_str(host);
        } else {
            element.push('"');
            for c in host.chars() {
                if matches!(c, '"' | '\\') {
                    element.push('\\');
                }
                element.push(c);
            }
            element.push('"');
        }
    }
    element
}

/// RFC 9110 §5.6.2.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Appends `<protocol> tower-cdn`, the protocol being the one the message arrived with.
fn append_via(headers: &mut HeaderMap, received: Version) {
    let protocol = match received {
        Version::HTTP_09 => "0.9",
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        Version::HTTP_3 => "3",
        _ => "1.1",
    };
    append_to_list(headers, header::VIA, &format!("{protocol} {VIA_PSEUDONYM}"));
}

/// Joins every existing value of a list field and `item` into one field,
/// keeping non-UTF-8 values byte for byte.
fn append_to_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    let mut joined = Vec::new();
    for value in headers.get_all(&name) {
        joined.extend_from_slice(value.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(item.as_bytes());
    // Valid values joined by ", " with a plain-ASCII item stay valid, so this always succeeds.
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(name, value);
    }
}

/// Why the origin gave no response.
#[derive(Debug)]
pub(crate) enum ProxyError {
    /// No response headers within the origin timeout.
    Timeout(Duration),
    /// The TCP connection to the origin could not be opened in time.
    ConnectTimeout(legacy::Error),
    /// The origin refused the connection or could not be resolved.
    Connect(legacy::Error),
    /// The connection broke or the origin sent something that is not HTTP.
    Upstream(legacy::Error),
    /// The viewer's request body went past the configured limit while it was being sent.
    BodyTooLarge(legacy::Error),
    /// Another failure, reported by an origin group.
    Other(BoxError),
}

impl ProxyError {
    /// The error an origin group reports: the failing origin's own, when it is one.
    pub(crate) fn from_boxed(err: BoxError) -> Self {
        match err.downcast::<Self>() {
            Ok(err) => *err,
            Err(err) => match err.downcast::<crate::OriginTimedOut>() {
                Ok(timed_out) => Self::Timeout(timed_out.after()),
                Err(err) => Self::Other(err),
            },
        }
    }

    fn from_client(err: legacy::Error) -> Self {
        if caused_by::<LengthLimitError>(&err) {
            Self::BodyTooLarge(err)
        } else if !err.is_connect() {
            Self::Upstream(err)
        } else if caused_by_io(&err, io::ErrorKind::TimedOut) {
            Self::ConnectTimeout(err)
        } else {
            Self::Connect(err)
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            Self::Timeout(_) | Self::ConnectTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Connect(_) | Self::Upstream(_) | Self::Other(_) => StatusCode::BAD_GATEWAY,
            Self::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
        }
    }

    /// The short text viewers see; details stay in the log.
    fn viewer_message(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "504 Gateway Timeout: the origin did not answer in time\n",
            Self::ConnectTimeout(_) => {
                "504 Gateway Timeout: could not connect to the origin in time\n"
            }
            Self::Connect(_) => "502 Bad Gateway: could not connect to the origin\n",
            Self::Upstream(_) | Self::Other(_) => {
                "502 Bad Gateway: the origin sent no valid response\n"
            }
            Self::BodyTooLarge(_) => super::limit::BODY_TOO_LARGE,
        }
    }

    /// Logs the failure and keeps what the viewer will be told.
    fn into_failure(self) -> GatewayFailure {
        let failure = GatewayFailure {
            status: self.status(),
            message: self.viewer_message(),
            detail: match self {
                Self::Timeout(_) => "origin-timeout",
                Self::ConnectTimeout(_) => "connect-timeout",
                Self::Connect(_) => "connect-error",
                Self::Upstream(_) | Self::Other(_) => "origin-error",
                Self::BodyTooLarge(_) => super::limit::BODY_TOO_LARGE_DETAIL,
            },
        };
        // The proxy logged the failure with the origin's name; this is the viewer's answer.
        tracing::debug!(
            status = failure.status.as_u16(),
            "answering for a failed origin request: {self}"
        );
        failure
    }
}

/// The answer a viewer gets instead of the origin's.
#[derive(Clone, Copy, Debug)]
struct GatewayFailure {
    status: StatusCode,
    message: &'static str,
    /// The Cache-Status `detail` the layer answers with.
    detail: &'static str,
}

impl GatewayFailure {
    fn into_response<B>(self) -> Response<Either<B, Full<Bytes>>> {
        let mut response = Response::new(Either::Right(Full::from(self.message)));
        *response.status_mut() = self.status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        // A transient origin failure must not be kept by any cache on the way.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        // The layer serves it as its own error (X-Cache: Error), not as the origin's answer.
        let detail = self.detail;
        response
            .extensions_mut()
            .insert(crate::respond::EdgeFailure { detail });
        response
    }
}

/// Whether an error of type `E` is somewhere in the error's source chain.
fn caused_by<E: std::error::Error + 'static>(err: &legacy::Error) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause.is::<E>() {
            return true;
        }
        source = cause.source();
    }
    false
}

/// Whether an I/O error of `kind` is somewhere in the error's source chain.
fn caused_by_io(err: &legacy::Error, kind: io::ErrorKind) -> bool {
    let mut source = err.source();
    while let Some(cause) = source {
        if cause
            .downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == kind)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Timeout(after) => write!(f, "origin sent no response within {after:?}"),
            Self::Other(err) => write!(f, "{err}"),
            Self::ConnectTimeout(err)
            | Self::Connect(err)
            | Self::Upstream(err)
            | Self::BodyTooLarge(err) => {
                write!(f, "{err}")?;
                let mut source = err.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ProxyError {}

/// Answers [`ProxyError`]s with 502/504 responses, so the service handed to
/// hyper cannot fail (hyper would just drop the connection).
#[derive(Debug)]
pub(crate) struct GatewayErrors<S> {
    inner: S,
    /// A readiness failure, kept to answer the next request with.
    not_ready: Option<GatewayFailure>,
}

impl<S> GatewayErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self {
            inner,
            not_ready: None,
        }
    }
}

// By hand: a clone must not inherit a readiness failure meant for one request.
impl<S: Clone> Clone for GatewayErrors<S> {
    fn clone(&self) -> Self {
        Self::new(self.inner.clone())
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for GatewayErrors<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = ProxyError>,
    S::Future: Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<Either<ResB, Full<Bytes>>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        if let Err(err) = std::task::ready!(self.inner.poll_ready(cx)) {
            self.not_ready = Some(err.into_failure());
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<ReqB>) -> Self::Future {
        if let Some(failure) = self.not_ready.take() {
            return Box::pin(std::future::ready(Ok(failure.into_response())));
        }
        let answer = self.inner.call(request);
        Box::pin(async move {
            Ok(match answer.await {
                Ok(response) => response.map(Either::Left),
                Err(err) => err.into_failure().into_response(),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(name, value)| {
                (
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    HeaderValue::from_str(value).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn hop_by_hop_fields_and_connection_options_go() {
        let mut map = headers(&[
            ("connection", "keep-alive, X-Custom-Hop"),
            ("x-custom-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("proxy-authorization", "Basic abc"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop_but_upgrade(&mut map, None);
        assert_eq!(map, headers(&[("accept", "*/*")]));
    }

    #[test]
    fn forwarding_fields_are_set_by_the_edge_and_via_is_appended_to() {
        // RFC 9110 §7.6.3: each hop appends to Via; the forwarding fields say only what the
        // edge knows, so a copy on the request is replaced, never extended.
        let mut map = headers(&[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=203.0.113.7;host=evil.example"),
            ("via", "1.0 corp"),
        ]);
        let host = HeaderValue::from_static("shop.example");
        add_forwarding_headers(
            &mut map,
            Some(IpAddr::from([127, 0, 0, 1])),
            false,
            Some(&host),
        );
        append_via(&mut map, Version::HTTP_11);
        assert_eq!(map["x-forwarded-for"], "127.0.0.1");
        assert_eq!(map.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(map["x-forwarded-proto"], "http");
        assert_eq!(
            map["forwarded"],
            "for=127.0.0.1;proto=http;host=shop.example"
        );
        assert_eq!(map["via"], "1.0 corp, 1.1 tower-cdn");
    }

    #[test]
    fn forwarded_quotes_ipv6_and_ports() {
        // RFC 7239 §6: an IPv6 node is quoted in brackets; a host:port is not a token.
        let v6 = "2001:db8::7".parse().ok();
        let host = HeaderValue::from_static("shop.example:8443");
        assert_eq!(
            forwarded_element(v6, "https", Some(&host)),
            "for=\"[2001:db8::7]\";proto=https;host=\"shop.example:8443\""
        );
        assert_eq!(
            forwarded_element(None, "http", None),
            "for=unknown;proto=http"
        );
        let odd = HeaderValue::from_static("a\"b");
        assert_eq!(
            forwarded_element(None, "http", Some(&odd)),
            "for=unknown;proto=http;host=\"a\\\"b\""
        );
    }

    #[test]
    fn the_resolved_client_is_forwarded() {
        let origin = OriginConfig::new("o", "http://origin.test".parse().unwrap());
        let mut request = Request::get("/")
            .header("host", "www.example.test")
            .body(())
            .unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr("10.0.0.2:5000".parse().unwrap()));
        request
            .extensions_mut()
            .insert(ClientAddr("198.51.100.7:0".parse().unwrap()));
        let sent = proxy(origin).to_origin_request(request);
        assert_eq!(sent.headers()["x-forwarded-for"], "198.51.100.7");
        assert_eq!(
            sent.headers()["forwarded"],
            "for=198.51.100.7;proto=http;host=www.example.test"
        );
    }

    fn proxy(origin: OriginConfig) -> ProxyService {
        let tls = super::super::tls::origin_tls(None).unwrap();
        ProxyService::new(&origin, &ServerConfig::default(), tls).unwrap()
    }

    #[test]
    fn origin_uri_keeps_path_and_query() {
        let proxy = proxy(OriginConfig::new(
            "o",
            "http://127.0.0.1:9000".parse().unwrap(),
        ));
        let uri = proxy.origin_uri(&"/a/b?c=d".parse().unwrap(), false);
        assert_eq!(uri, "http://127.0.0.1:9000/a/b?c=d");
    }

    #[test]
    fn origin_path_is_prepended() {
        let origin = OriginConfig::new("o", "http://origin.test".parse().unwrap())
            .path_prefix("/production/");
        let uri = proxy(origin).origin_uri(&"/a?b".parse().unwrap(), false);
        assert_eq!(uri, "http://origin.test/production/a?b");
    }

    #[test]
    fn protocol_policy_picks_scheme_and_port() {
        let url: Uri = "http://origin.test:8080".parse().unwrap();
        let path: Uri = "/x".parse().unwrap();
        let only_http = proxy(OriginConfig::new("o", url.clone()));
        assert_eq!(
            only_http.origin_uri(&path, true),
            "http://origin.test:8080/x"
        );
        let https = proxy(OriginConfig::new("o", url.clone()).protocol(OriginProtocol::HttpsOnly));
        assert_eq!(https.origin_uri(&path, false), "https://origin.test/x");
        let mut matched = OriginConfig::new("o", url).protocol(OriginProtocol::MatchViewer);
        matched.https_port = Some(8443);
        let matched = proxy(matched);
        assert_eq!(
            matched.origin_uri(&path, false),
            "http://origin.test:8080/x"
        );
        assert_eq!(
            matched.origin_uri(&path, true),
            "https://origin.test:8443/x"
        );
    }

    #[test]
    fn custom_headers_and_host_replace_the_viewers() {
        let origin = OriginConfig::new("o", "http://origin.test".parse().unwrap())
            .host("site.internal")
            .header("x-origin-verify", "s3cret");
        let request = Request::get("/")
            .header("host", "www.example.test")
            .header("x-origin-verify", "forged")
            .body(())
            .unwrap();
        let sent = proxy(origin).to_origin_request(request);
        assert_eq!(sent.headers()["host"], "site.internal");
        assert_eq!(sent.headers()["x-forwarded-host"], "www.example.test");
        assert_eq!(sent.headers()["x-origin-verify"], "s3cret");
        assert_eq!(sent.headers().get_all("x-origin-verify").iter().count(), 1);
    }

    #[test]
    fn tls_viewers_are_forwarded_as_https() {
        let mut map = HeaderMap::new();
        add_forwarding_headers(&mut map, None, true, None);
        assert_eq!(map["x-forwarded-proto"], "https");
        assert_eq!(map["forwarded"], "for=unknown;proto=https");
    }

    #[test]
    fn upgrades_are_recognised() {
        let map = headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "websocket"),
        ]);
        assert_eq!(
            upgrade_protocol(&map, Version::HTTP_11).unwrap(),
            "websocket"
        );
        assert!(upgrade_protocol(&map, Version::HTTP_2).is_none());
        let map = headers(&[("upgrade", "websocket")]);
        assert!(upgrade_protocol(&map, Version::HTTP_11).is_none());
    }
}
