//! Alternate domain names: which distribution a host name belongs to, for requests (by
//! `Host`) and for TLS handshakes (by SNI).

use std::{
    collections::HashMap,
    convert::Infallible,
    fmt,
    future::poll_fn,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{Either, Full};
use rustls::{
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use tower_service::Service;

use super::conn::ServerName;

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// One entry of a distribution's host list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HostPattern {
    /// `www.example.com`, in lower case.
    Exact(String),
    /// `*.example.com`: one label in front of `.example.com` (kept with its leading dot).
    Wildcard(String),
    /// `*`: every host no other pattern takes.
    Any,
}

impl HostPattern {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        if text == "*" {
            return Ok(Self::Any);
        }
        let (wildcard, name) = match text.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let valid_label = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(valid_label) {
            return Err(format!(
                "`{text}` is not a host name like www.example.com or *.example.com"
            ));
        }
        let name = name.to_ascii_lowercase();
        Ok(if wildcard {
            Self::Wildcard(format!(".{name}"))
        } else {
            Self::Exact(name)
        })
    }
}

/// Host names to a distribution's index: exact names first, then one-label wildcards,
/// then the catch-all.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostTable {
    exact: HashMap<String, usize>,
    wildcard: HashMap<String, usize>,
    any: Option<usize>,
}

impl HostTable {
    /// Adds `patterns` for distribution `index`; an empty list is the catch-all. Fails on a
    /// name another distribution already has.
    pub(crate) fn add(&mut self, index: usize, patterns: &[String]) -> Result<(), String> {
        let any = [String::from("*")];
        let patterns = if patterns.is_empty() {
            &any[..]
        } else {
            patterns
        };
        for text in patterns {
            let taken = match HostPattern::parse(text)? {
                HostPattern::Exact(name) => self.exact.insert(name, index).is_some(),
                HostPattern::Wildcard(suffix) => self.wildcard.insert(suffix, index).is_some(),
                HostPattern::Any => self.any.replace(index).is_some(),
            };
            if taken {
                return Err(format!("`{text}` is served by two distributions"));
            }
        }
        Ok(())
    }

    /// The distribution serving `host` (a host name, any case, maybe with a port or a
    /// trailing dot).
    pub(crate) fn find(&self, host: &str) -> Option<usize> {
        let host = strip_port(host).trim_end_matches('.');
        let lower;
        let host = if host.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = host.to_ascii_lowercase();
            &lower
        } else {
            host
        };
        if let Some(&index) = self.exact.get(host) {
            return Some(index);
        }
        if let Some(dot) = host.find('.') {
            if dot > 0 {
                if let Some(&index) = self.wildcard.get(&host[dot..]) {
                    return Some(index);
                }
            }
        }
        self.any
    }

    /// Whether every host goes to one distribution, so no lookup is needed.
    pub(crate) fn is_single_catch_all(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.any.is_some()
    }
}

/// Whether `host` is `uri-host [":" port]` (RFC 9110 §7.2): a reg-name of letters, digits,
/// `-`, `.` and `_`, or an IP literal, with an optional port.
fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
        && host.parse::<http::uri::Authority>().is_ok()
        && super::config::check_port(host).is_ok()
}

/// `host:port` → (`host`, `port`), IPv6 literals kept whole: `[::1]:8080` → (`[::1]`, `8080`).
pub(crate) fn split_port(authority: &str) -> (&str, Option<&str>) {
    if authority.starts_with('[') {
        return match authority.find(']') {
            Some(end) => {
                let (host, rest) = authority.split_at(end + 1);
                (host, rest.strip_prefix(':'))
            }
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// `host:port` → `host`, and `[::1]:8080` → `[::1]`; a "port" that is not digits stays.
fn strip_port(host: &str) -> &str {
    match split_port(host) {
        (name, Some(port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        (name, None) => name,
        _ => host,
    }
}

/// Sends each request to the distribution its host belongs to; a host no distribution
/// serves gets `421 Misdirected Request` (RFC 9110 §15.5.20), never another site's content.
#[derive(Clone)]
pub(crate) struct DistributionRouter<S> {
    table: Arc<HostTable>,
    distributions: Vec<S>,
}

impl<S> fmt::Debug for DistributionRouter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributionRouter")
            .field("table", &self.table)
            .field("distributions", &self.distributions.len())
            .finish()
    }
}

impl<S> DistributionRouter<S> {
    pub(crate) fn new(table: HostTable, distributions: Vec<S>) -> Self {
        Self {
            table: Arc::new(table),
            distributions,
        }
    }
}

impl<S, ReqB, ResB> Service<Request<ReqB>> for DistributionRouter<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqB: http_body::Body + Send + 'static,
    ResB: Send + 'static,
{
    type Response = Response<Either<ResB, Full<Bytes>>>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Which distribution is called is known only from the request; each call drives a
        // clone of it to readiness first.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<ReqB>) -> Self::Future {
        // The layer reads fields only: tell it of a body no field declares (HTTP/2).
        crate::mark_undeclared_body(&mut request);
        if matches!(*request.method(), Method::TRACE | Method::CONNECT) {
            // TRACE would echo back what the edge adds for the origin (such as a secret
            // origin header); CONNECT asks for a tunnel the edge does not offer.
            let message = format!("501 Not Implemented: {} is not served\n", request.method());
            let response = text(StatusCode::NOT_IMPLEMENTED, message);
            return Box::pin(std::future::ready(Ok(response)));
        }
        // RFC 9112 §3.2: one `Host`, holding `uri-host [":" port]`, or 400.
        let mut hosts = request.headers().get_all(header::HOST).iter();
        let host = match (hosts.next(), hosts.next()) {
            // HTTP/1.0 may go without; HTTP/2 and 3 name the host in `:authority`.
            (None, _) if request.version() == http::Version::HTTP_11 => Err(()),
            (None, _) => Ok(request.uri().host()),
            (Some(value), None) => value
                .to_str()
                .ok()
                .filter(|h| valid_host(h))
                .map(Some)
                .ok_or(()),
            (Some(_), Some(_)) => Err(()),
        };
        let Ok(host) = host else {
            let message = "400 Bad Request: the request needs one valid Host\n".to_owned();
            return Box::pin(std::future::ready(Ok(text(
                StatusCode::BAD_REQUEST,
                message,
            ))));
        };
        let index = match host {
            Some(host) if !self.table.is_single_catch_all() => self.table.find(host),
            // No name (HTTP/1.0): only a catch-all distribution can take it.
            _ => self.table.any,
        };
        // A TLS connection opened for one distribution's name serves that distribution only:
        // its certificate vouched for that name, not for another site's (RFC 9110 §7.4). A
        // client that reuses the connection for another host gets 421 and opens a new one.
        let sni = request.extensions().get::<ServerName>();
        if let Some(sni) =
            sni.filter(|name| self.table.find(&name.0).is_some_and(|i| Some(i) != index))
        {
            let message = format!(
                "421 Misdirected Request: this connection was opened for `{}`; connect again for `{}`\n",
                sni.0.escape_debug(),
                host.unwrap_or_default().escape_debug()
            );
            return Box::pin(std::future::ready(Ok(text(
                StatusCode::MISDIRECTED_REQUEST,
                message,
            ))));
        }
        let Some(mut service) = index.and_then(|i| self.distributions.get(i)).cloned() else {
            let response = misdirected(host);
            return Box::pin(std::future::ready(Ok(response)));
        };
        Box::pin(async move {
            poll_fn(|cx| service.poll_ready(cx)).await?;
            Ok(service.call(request).await?.map(Either::Left))
        })
    }
}

fn misdirected<B>(host: Option<&str>) -> Response<Either<B, Full<Bytes>>> {
    let message = match host {
        Some(host) => format!(
            "421 Misdirected Request: this edge serves no site named `{}`\n",
            host.escape_debug()
        ),
        None => "421 Misdirected Request: the request names no host\n".to_owned(),
    };
    text(StatusCode::MISDIRECTED_REQUEST, message)
}

/// An answer of the edge's own, in plain text.
fn text<B>(status: StatusCode, message: String) -> Response<Either<B, Full<Bytes>>> {
    let mut response = Response::new(Either::Right(Full::from(message)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Picks the HTTPS listener's certificate by the name the client asks for (SNI): the
/// distribution's own, or the listener's default one.
#[derive(Debug)]
pub(crate) struct SniResolver {
    table: HostTable,
    certificates: Vec<Option<Arc<CertifiedKey>>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// `certificates[i]` is distribution `i`'s certificate, if it has one of its own.
    pub(crate) fn new(
        table: HostTable,
        certificates: Vec<Option<Arc<CertifiedKey>>>,
        default: Arc<CertifiedKey>,
    ) -> Self {
        Self {
            table,
            certificates,
            default,
        }
    }

    fn pick(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        name.and_then(|name| self.table.find(name))
            .and_then(|index| self.certificates.get(index).cloned().flatten())
            .unwrap_or_else(|| self.default.clone())
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(client_hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HostTable {
        let mut table = HostTable::default();
        table
            .add(0, &["www.example.test".into(), "*.example.test".into()])
            .unwrap();
        table.add(1, &["api.example.test".into()]).unwrap();
        table
    }

    #[test]
    fn exact_names_win_over_wildcards() {
        let table = table();
        assert_eq!(table.find("api.example.test"), Some(1));
        assert_eq!(table.find("API.Example.Test:8443"), Some(1));
        assert_eq!(table.find("www.example.test."), Some(0));
        assert_eq!(table.find("shop.example.test"), Some(0));
    }

    #[test]
    fn wildcards_cover_one_label_only() {
        let table = table();
        assert_eq!(table.find("example.test"), None);
        assert_eq!(table.find("a.b.example.test"), None);
        assert_eq!(table.find(".example.test"), None);
        assert_eq!(table.find("other.test"), None);
    }

    #[test]
    fn catch_all_takes_the_rest() {
        let mut table = table();
        table.add(2, &[]).unwrap();
        assert_eq!(table.find("other.test"), Some(2));
        assert_eq!(table.find("api.example.test"), Some(1));
        assert!(!table.is_single_catch_all());
    }

    #[test]
    fn duplicates_and_bad_names_are_refused() {
        let mut table = table();
        let err = table.add(2, &["WWW.example.test".into()]).unwrap_err();
        assert!(err.contains("two distributions"), "{err}");
        for bad in [
            "",
            "*.",
            "a..b",
            "exa mple.test",
            "**.x",
            "x.*.test",
            "host:80",
        ] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_values() {
        for good in [
            "a.test",
            "a.test:8080",
            "[::1]:8080",
            "127.0.0.1",
            "under_score.test",
        ] {
            assert!(valid_host(good), "{good}");
        }
        for bad in [
            "",
            "a b.test",
            "evil/x.a.test",
            "user@a.test",
            "a.test:x",
            "é.test",
        ] {
            assert!(!valid_host(bad), "{bad}");
        }
    }

    #[test]
    fn ports_and_ipv6_literals() {
        assert_eq!(strip_port("example.test:8080"), "example.test");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
        assert_eq!(strip_port("example.test"), "example.test");
    }
}
