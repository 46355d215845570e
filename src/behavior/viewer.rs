//! Viewer protocol policy: whether plain-HTTP viewers are served, redirected or refused.

use http::header::{HeaderMap, HeaderValue, LOCATION};
use http::uri::{Authority, Scheme, Uri};
use http::{Method, Response, StatusCode, Version};

/// What the edge does with viewers that connect over plain HTTP, like CloudFront's viewer
/// protocol policy. The default is [`allow_all`](Self::allow_all).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewerProtocolPolicy {
    kind: Kind,
    /// The port HTTPS is served on, for redirects; `None` for 443.
    https_port: Option<u16>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Kind {
    #[default]
    AllowAll,
    RedirectToHttps,
    HttpsOnly,
}

impl ViewerProtocolPolicy {
    /// HTTP and HTTPS are both served.
    pub fn allow_all() -> Self {
        Self::of(Kind::AllowAll)
    }

    /// HTTP `GET` and `HEAD` are redirected to HTTPS with `301`; other methods get `307` on
    /// HTTP/1.1 and later, `403` on HTTP/1.0 (which has no `307`).
    ///
    /// The redirect names the request's host on port 443 (the port the viewer used for HTTP
    /// is dropped), or on [`https_port`](Self::https_port) when it is set.
    pub fn redirect_to_https() -> Self {
        Self::of(Kind::RedirectToHttps)
    }

    /// HTTP requests are refused with `403`.
    pub fn https_only() -> Self {
        Self::of(Kind::HttpsOnly)
    }

    /// The port the edge serves HTTPS on, named in redirects when it is not 443.
    ///
    /// ```
    /// use tower_cdn::ViewerProtocolPolicy;
    ///
    /// let policy = ViewerProtocolPolicy::redirect_to_https().https_port(8443);
    /// assert_eq!(policy.https_port_or_default(), 8443);
    /// ```
    pub fn https_port(mut self, port: u16) -> Self {
        self.https_port = Some(port);
        self
    }

    /// The port redirects point at: [`https_port`](Self::https_port), or 443.
    pub fn https_port_or_default(&self) -> u16 {
        self.https_port.unwrap_or(443)
    }

    /// Whether plain-HTTP viewers are redirected to HTTPS.
    pub fn redirects(&self) -> bool {
        self.kind == Kind::RedirectToHttps
    }

    /// Sets the HTTPS port unless one was set already: a server fills in its listener's port.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub(crate) fn or_https_port(mut self, port: u16) -> Self {
        self.https_port = self.https_port.or(Some(port));
        self
    }

    const fn of(kind: Kind) -> Self {
        Self {
            kind,
            https_port: None,
        }
    }
}

/// Decides a request under `policy`: `None` to proceed, or the response to send instead.
///
/// The redirect keeps the host, path and query. The host is the `Host` header, or the URI
/// authority when there is none (HTTP/2); a redirect without a usable host is a `400`. The
/// port the viewer used is the HTTP port and is never kept: the redirect names the policy's
/// HTTPS port when it is not 443, else none.
pub(crate) fn viewer_protocol(
    policy: &ViewerProtocolPolicy,
    method: &Method,
    version: Version,
    is_https: bool,
    uri: &Uri,
    host: Option<&HeaderValue>,
) -> Option<Response<()>> {
    if is_https {
        return None;
    }
    match policy.kind {
        Kind::AllowAll => None,
        Kind::HttpsOnly => Some(status(StatusCode::FORBIDDEN)),
        Kind::RedirectToHttps => {
            let code = if method == Method::GET || method == Method::HEAD {
                StatusCode::MOVED_PERMANENTLY
            } else if version >= Version::HTTP_11 {
                // 307 keeps the method and body; 301 would let clients turn it into a GET.
                StatusCode::TEMPORARY_REDIRECT
            } else {
                StatusCode::FORBIDDEN
            };
            if code == StatusCode::FORBIDDEN {
                return Some(status(code));
            }
            match https_location(uri, host, policy.https_port_or_default()) {
                Some(location) => {
                    let mut res = status(code);
                    res.headers_mut().insert(LOCATION, location);
                    Some(res)
                }
                None => Some(status(StatusCode::BAD_REQUEST)),
            }
        }
    }
}

fn status(code: StatusCode) -> Response<()> {
    let mut res = Response::new(());
    *res.status_mut() = code;
    res
}

/// `https://{host}[:{port}]{path}?{query}`, or `None` without a usable host.
fn https_location(uri: &Uri, host: Option<&HeaderValue>, port: u16) -> Option<HeaderValue> {
    let authority = match host {
        Some(h) => Authority::try_from(h.as_bytes()).ok()?,
        None => uri.authority()?.clone(),
    };
    // Userinfo in a Host header is invalid, and echoing it would forge a redirect target.
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    // The host as written, brackets of an IPv6 literal included, without the port.
    let host = match authority.as_str().rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !port.contains(']') => host,
        _ => authority.as_str(),
    };
    let path = match uri.path() {
        p if p.starts_with('/') => p,
        _ => "/",
    };
    let mut location = String::with_capacity(16 + host.len() + path.len());
    location.push_str("https://");
    location.push_str(host);
    if port != 443 {
        location.push(':');
        location.push_str(itoa::Buffer::new().format(port));
    }
    location.push_str(path);
    if let Some(q) = uri.query() {
        location.push('?');
        location.push_str(q);
    }
    HeaderValue::try_from(location).ok()
}

/// Whether the viewer connected over HTTPS: an `https` URI scheme, or the TLS flag set by
/// the server (e.g. from a request extension), or — only when `trust_forwarded`, i.e. a
/// proxy in front of the edge terminates TLS — the first `X-Forwarded-Proto` value or the
/// `proto` of the first `Forwarded` element (RFC 7239).
///
/// Only the first value is read, so the trusted proxy must overwrite these headers, not
/// append to what the viewer sent.
pub(crate) fn viewer_scheme_is_https(
    uri: &Uri,
    headers: &HeaderMap,
    tls_extension_says_https: bool,
    trust_forwarded: bool,
) -> bool {
    if uri.scheme() == Some(&Scheme::HTTPS) || tls_extension_says_https {
        return true;
    }
    if !trust_forwarded {
        return false;
    }
    let x_forwarded = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    x_forwarded
        || headers
            .get(http::header::FORWARDED)
            .and_then(|v| v.to_str().ok())
            .and_then(forwarded_proto)
            .is_some_and(|p| p.eq_ignore_ascii_case("https"))
}

/// The `proto` parameter of the first element of a `Forwarded` value, unquoted.
fn forwarded_proto(value: &str) -> Option<&str> {
    // Split on `,` and `;` outside quoted strings, so a quoted value cannot smuggle in a
    // second element or pair.
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in value.char_indices().chain([(value.len(), ',')]) {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' | ';' if !in_quotes => {
                let proto = value[start..i]
                    .split_once('=')
                    .filter(|(name, _)| name.trim().eq_ignore_ascii_case("proto"));
                if let Some((_, val)) = proto {
                    let val = val.trim();
                    return Some(
                        val.strip_prefix('"')
                            .and_then(|v| v.strip_suffix('"'))
                            .unwrap_or(val),
                    );
                }
                if c == ',' {
                    return None;
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICIES: [fn() -> ViewerProtocolPolicy; 3] = [
        ViewerProtocolPolicy::allow_all,
        ViewerProtocolPolicy::redirect_to_https,
        ViewerProtocolPolicy::https_only,
    ];
    const VERSIONS: [Version; 5] = [
        Version::HTTP_09,
        Version::HTTP_10,
        Version::HTTP_11,
        Version::HTTP_2,
        Version::HTTP_3,
    ];

    fn decide(
        policy: ViewerProtocolPolicy,
        method: Method,
        version: Version,
        https: bool,
    ) -> Option<Response<()>> {
        let uri: Uri = "/a/b?x=1&y=2".parse().unwrap();
        let host = HeaderValue::from_static("cdn.example");
        viewer_protocol(&policy, &method, version, https, &uri, Some(&host))
    }

    fn code(res: Option<Response<()>>) -> Option<u16> {
        res.map(|r| r.status().as_u16())
    }

    #[test]
    fn https_always_proceeds() {
        for policy in POLICIES {
            for version in VERSIONS {
                assert!(decide(policy(), Method::POST, version, true).is_none());
            }
        }
    }

    #[test]
    fn allow_all_proceeds_on_http() {
        for version in VERSIONS {
            for method in [Method::GET, Method::DELETE] {
                assert!(decide(ViewerProtocolPolicy::default(), method, version, false).is_none());
            }
        }
    }

    #[test]
    fn https_only_refuses_http() {
        for version in VERSIONS {
            for method in [Method::GET, Method::HEAD, Method::POST] {
                let res = decide(ViewerProtocolPolicy::https_only(), method, version, false);
                assert_eq!(code(res), Some(403));
            }
        }
    }

    #[test]
    fn redirect_get_and_head_with_301_keeping_host_path_query() {
        for version in VERSIONS {
            for method in [Method::GET, Method::HEAD] {
                let res = decide(
                    ViewerProtocolPolicy::redirect_to_https(),
                    method,
                    version,
                    false,
                )
                .unwrap();
                assert_eq!(res.status(), 301);
                assert_eq!(res.headers()[LOCATION], "https://cdn.example/a/b?x=1&y=2");
            }
        }
    }

    #[test]
    fn redirect_other_methods_307_from_http11_else_403() {
        for method in [
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            for version in VERSIONS {
                let res = decide(
                    ViewerProtocolPolicy::redirect_to_https(),
                    method.clone(),
                    version,
                    false,
                );
                if version >= Version::HTTP_11 {
                    let res = res.unwrap();
                    assert_eq!(res.status(), 307, "{method} {version:?}");
                    assert_eq!(res.headers()[LOCATION], "https://cdn.example/a/b?x=1&y=2");
                } else {
                    assert_eq!(code(res), Some(403), "{method} {version:?}");
                }
            }
        }
    }

    #[test]
    fn redirect_host_sources() {
        let policy = ViewerProtocolPolicy::redirect_to_https();
        let get = |uri: &str, host: Option<&'static str>| {
            let uri: Uri = uri.parse().unwrap();
            let host = host.map(HeaderValue::from_static);
            viewer_protocol(
                &policy,
                &Method::GET,
                Version::HTTP_11,
                false,
                &uri,
                host.as_ref(),
            )
        };
        let location = |res: Option<Response<()>>| res.unwrap().headers()[LOCATION].clone();
        // HTTP/2 has no Host header: the URI authority is used.
        assert_eq!(
            location(get("http://h2.example/p", None)),
            "https://h2.example/p"
        );
        assert_eq!(
            location(get("/p", Some("a.example:80"))),
            "https://a.example/p"
        );
        assert_eq!(
            location(get("/p", Some("a.example:080"))),
            "https://a.example/p"
        );
        assert_eq!(location(get("/p", Some("[::1]:80"))), "https://[::1]/p");
        // The viewer's port is the HTTP listener's: HTTPS is on 443 unless the policy says.
        assert_eq!(
            location(get("/p", Some("a.example:8080"))),
            "https://a.example/p"
        );
        assert_eq!(location(get("/p", Some("[::1]:8080"))), "https://[::1]/p");
        assert_eq!(location(get("/p", Some("[::1]"))), "https://[::1]/p");
        assert_eq!(
            location(get("/p?", Some("a.example"))),
            "https://a.example/p?"
        );
        assert_eq!(code(get("/p", None)), Some(400));
        assert_eq!(code(get("/p", Some("evil@a.example"))), Some(400));
        assert_eq!(code(get("/p", Some("a b"))), Some(400));
        assert_eq!(code(get("/p", Some(""))), Some(400));
    }

    #[test]
    fn redirect_names_the_https_port() {
        let location = |policy: ViewerProtocolPolicy, host: &'static str| {
            let uri: Uri = "/p?q=1".parse().unwrap();
            let host = HeaderValue::from_static(host);
            viewer_protocol(
                &policy,
                &Method::GET,
                Version::HTTP_11,
                false,
                &uri,
                Some(&host),
            )
            .unwrap()
            .headers()[LOCATION]
                .clone()
        };
        let policy = ViewerProtocolPolicy::redirect_to_https().https_port(18443);
        assert_eq!(
            location(policy, "127.0.0.1:18001"),
            "https://127.0.0.1:18443/p?q=1"
        );
        assert_eq!(
            location(policy, "a.example"),
            "https://a.example:18443/p?q=1"
        );
        assert_eq!(location(policy, "[::1]:80"), "https://[::1]:18443/p?q=1");
        let policy = ViewerProtocolPolicy::redirect_to_https().https_port(443);
        assert_eq!(
            location(policy, "a.example:8080"),
            "https://a.example/p?q=1"
        );
        // A port set in code is kept when the server fills in its listener's.
        assert_eq!(policy.or_https_port(8443).https_port_or_default(), 443);
        let filled = ViewerProtocolPolicy::redirect_to_https().or_https_port(8443);
        assert_eq!(filled.https_port_or_default(), 8443);
    }

    fn https(uri: &str, headers: &[(&'static str, &'static str)], tls: bool, trust: bool) -> bool {
        let uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.append(*name, HeaderValue::from_static(value));
        }
        viewer_scheme_is_https(&uri, &map, tls, trust)
    }

    #[test]
    fn scheme_from_uri_and_tls() {
        assert!(https("https://a.example/", &[], false, false));
        assert!(!https("http://a.example/", &[], false, false));
        assert!(https("/", &[], true, false));
        assert!(!https("/", &[], false, true));
    }

    #[test]
    fn x_forwarded_proto_only_when_trusted() {
        let h = [("x-forwarded-proto", "https")];
        assert!(https("/", &h, false, true));
        assert!(
            !https("/", &h, false, false),
            "spoofed header must be ignored"
        );
        assert!(https(
            "/",
            &[("x-forwarded-proto", " HTTPS , http")],
            false,
            true
        ));
        assert!(!https(
            "/",
            &[("x-forwarded-proto", "http, https")],
            false,
            true
        ));
        let two_lines = [
            ("x-forwarded-proto", "http"),
            ("x-forwarded-proto", "https"),
        ];
        assert!(!https("/", &two_lines, false, true));
    }

    #[test]
    fn forwarded_proto_only_when_trusted() {
        for value in [
            "proto=https",
            "for=192.0.2.60;proto=https;by=203.0.113.43",
            "For=\"[2001:db8::1]\"; Proto=\"HTTPS\"",
            "proto=https, for=198.51.100.17;proto=http",
            "junk;;proto=https",
        ] {
            let h = [("forwarded", value)];
            assert!(https("/", &h, false, true), "{value}");
            assert!(!https("/", &h, false, false), "{value}");
        }
        for value in [
            "proto=http",
            "for=a, proto=https",
            "for=\"x;proto=https\"",
            "for=\"a,proto=https\"",
            "junk",
            "",
        ] {
            assert!(!https("/", &[("forwarded", value)], false, true), "{value}");
        }
    }
}
