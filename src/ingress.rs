//! Entry: what the viewer sent, decided once, before behavior selection, signatures, the
//! cache key and the origin request read any of it.
//!
//! [`CdnService`](crate::CdnService) applies these rules first, in this order, so every later
//! phase sees one request:
//!
//! 1. A `GET` or `HEAD` with a body (a non-zero `Content-Length`, any `Transfer-Encoding`,
//!    or [`UndeclaredBody`]) is refused with `400`: its answer could depend on a body that the
//!    cache key does not hold. A `Content-Length: 0` on one is dropped.
//! 2. A `Connection` with more than 32 options is refused with `400`.
//! 3. The path is normalised ([`normalize_path`]): percent-encoded unreserved characters are
//!    decoded (RFC 3986 §6.2.2.2), other escapes get upper-case hex (§6.2.2.1), `.` and `..`
//!    segments are resolved (§5.2.4; `..` above the root stays at the root) and empty segments
//!    merged (`//` is `/`). An encoded `/` (`%2F`), a `\` (raw or `%5C`), a malformed `%`
//!    escape, an encoded NUL and a dot segment with parameters (`..;`) are refused with `400`.
//!    The host (`Host`, or the target's authority) is lower-cased, as the key has it.
//! 4. Hop-by-hop fields and every field `Connection` names go (RFC 9110 §7.6.1), except
//!    `Connection: upgrade` and `Upgrade` for a connection upgrade.
//! 5. The viewer's address and scheme are resolved from forwarding fields, where trusted.
//! 6. The viewer's forwarding, override and `CloudFront-*` fields ([`is_viewer_field`]) go,
//!    but for those the behavior's origin request policy names.
//!
//! The query is left as sent; the key policy decides which parameters matter.
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! use http::{Request, Response, StatusCode};
//! use http_body_util::BodyExt;
//! use tower::{service_fn, Layer, ServiceExt};
//! use tower_cdn::CdnLayer;
//!
//! let origin = service_fn(|req: Request<()>| async move {
//!     Ok::<_, std::convert::Infallible>(Response::new(req.uri().path().to_owned()))
//! });
//! let edge = CdnLayer::new().layer(origin);
//!
//! let req = Request::get("/static/../account").body(()).unwrap();
//! let res = edge.clone().oneshot(req).await.unwrap();
//! let asked = res.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(asked, "/account");
//!
//! let req = Request::get("/members%2Fsecret").body(()).unwrap();
//! let res = edge.oneshot(req).await.unwrap();
//! assert_eq!(res.status(), StatusCode::BAD_REQUEST);
//! # });
//! ```

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::uri::Authority;
use http::{Method, Request, Uri, Version};

use crate::key::with_path_and_query;
use crate::rfc::conditional::MAX_CONNECTION_OPTIONS;
use crate::rfc::headers::{
    connection_options, is_hop_by_hop_name, remove_hop_by_hop_but_upgrade, upgrade_protocol,
};

/// Why a request was refused at entry (`400`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// A `GET` or `HEAD` with a body.
    Body,
    /// `Connection` lists more options than [`MAX_CONNECTION_OPTIONS`].
    ConnectionOptions,
    /// `%2F` in the path.
    EncodedSlash,
    /// `\` or `%5C` in the path.
    Backslash,
    /// A `%` not followed by two hex digits.
    MalformedEscape,
    /// `%00` in the path.
    Nul,
    /// A `.` or `..` segment with parameters (`..;x`), which some origins resolve.
    DotSegmentParameters,
}

impl Refusal {
    /// A short token for `Cache-Status` and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::Body => "body-on-get",
            Refusal::ConnectionOptions => "connection-options",
            Refusal::EncodedSlash => "encoded-slash",
            Refusal::Backslash => "backslash",
            Refusal::MalformedEscape => "malformed-escape",
            Refusal::Nul => "nul",
            Refusal::DotSegmentParameters => "dot-segment-parameters",
        }
    }

    /// What the viewer is told.
    pub(crate) fn message(self) -> &'static str {
        match self {
            Refusal::Body => "a GET or HEAD request cannot have a body",
            Refusal::ConnectionOptions => "too many Connection options",
            Refusal::EncodedSlash => "an encoded / in the path",
            Refusal::Backslash => "a \\ in the path",
            Refusal::MalformedEscape => "a malformed % escape in the path",
            Refusal::Nul => "an encoded NUL in the path",
            Refusal::DotSegmentParameters => "a dot segment with parameters in the path",
        }
    }
}

/// A request extension: the request carries a body that no field declares, such as an
/// HTTP/2 request whose DATA frames follow without `content-length` (RFC 9113 §8.1).
///
/// The layer sees only the request's fields, not its body type, so a server sets this from
/// the body it received; [`mark_undeclared_body`] does it for any [`http_body::Body`]. A
/// `GET` or `HEAD` request carrying it is refused at entry like one with `Content-Length`.
/// The `tower-cdn` server marks every request this way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UndeclaredBody;

/// Marks `req` with [`UndeclaredBody`] when its body may not be empty although no field
/// says so: call it on requests before [`CdnLayer`](crate::CdnLayer) when the server can
/// receive bodies without framing fields (HTTP/2, HTTP/3).
///
/// ```
/// use http::Request;
/// use http_body_util::Full;
/// use tower_cdn::{mark_undeclared_body, UndeclaredBody};
///
/// let mut req = Request::get("/").body(Full::new(bytes::Bytes::from("data"))).unwrap();
/// mark_undeclared_body(&mut req);
/// assert!(req.extensions().get::<UndeclaredBody>().is_some());
/// ```
pub fn mark_undeclared_body<B: http_body::Body>(req: &mut Request<B>) {
    let body = req.body();
    if body.is_end_stream() || body.size_hint().upper() == Some(0) {
        return;
    }
    let declared =
        req.headers().contains_key(CONTENT_LENGTH) || req.headers().contains_key(TRANSFER_ENCODING);
    if !declared {
        req.extensions_mut().insert(UndeclaredBody);
    }
}

/// Rules 1 to 4: refuses what cannot be served, normalises the path and host, removes
/// hop-by-hop fields. Returns whether the request declares a body.
pub(crate) fn admit_request<B>(req: &mut Request<B>) -> Result<bool, Refusal> {
    // One pass over the names present says which of the checks below have anything to do:
    // most requests carry no body fields and no hop-by-hop fields.
    let (mut length, mut hop_by_hop) = (false, false);
    for name in req.headers().keys() {
        length |= name == CONTENT_LENGTH;
        hop_by_hop |= is_hop_by_hop_name(name);
    }
    let body = (length || hop_by_hop || req.extensions().get::<UndeclaredBody>().is_some())
        && declares_body(req);
    let safe = matches!(*req.method(), Method::GET | Method::HEAD);
    if body && safe {
        return Err(Refusal::Body);
    }
    if hop_by_hop
        && connection_options(req.headers(), MAX_CONNECTION_OPTIONS) > MAX_CONNECTION_OPTIONS
    {
        return Err(Refusal::ConnectionOptions);
    }
    if safe && length {
        // `Content-Length: 0` on a GET says what its absence says: one request, one form.
        req.headers_mut().remove(CONTENT_LENGTH);
    }
    normalize_target(req)?;
    lowercase_host(req);
    if hop_by_hop {
        let version = req.version();
        remove_connection_fields(req.headers_mut(), version);
    }
    Ok(body)
}

/// Host names are case-insensitive (RFC 9110 §4.2.3) and the cache key lower-cases them: the
/// origin gets the lower-case form too, so requests the key treats as one are one request.
fn lowercase_host<B>(req: &mut Request<B>) {
    if let Some(host) = req.headers().get(HOST) {
        if host.as_bytes().iter().any(u8::is_ascii_uppercase) {
            if let Ok(lower) = HeaderValue::from_bytes(&host.as_bytes().to_ascii_lowercase()) {
                req.headers_mut().insert(HOST, lower);
            }
        }
    }
    let upper = |a: &Authority| a.as_str().bytes().any(|b| b.is_ascii_uppercase());
    if req.uri().authority().is_some_and(upper) {
        let mut parts = req.uri().clone().into_parts();
        parts.authority = parts
            .authority
            .and_then(|a| Authority::try_from(a.as_str().to_ascii_lowercase()).ok());
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
}

/// Whether the request's fields (or [`UndeclaredBody`]) say it has a body (RFC 9112 §6.3): a
/// `Transfer-Encoding`, or a `Content-Length` other than one `0`.
fn declares_body<B>(req: &Request<B>) -> bool {
    let headers = req.headers();
    if headers.contains_key(TRANSFER_ENCODING) || req.extensions().get::<UndeclaredBody>().is_some()
    {
        return true;
    }
    headers.get_all(CONTENT_LENGTH).iter().any(|v| {
        // Anything but a plain zero counts as a body: an invalid length fails closed.
        std::str::from_utf8(v.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            != Some(0)
    })
}

/// Replaces the request's path with its normal form (see [`normalize_path`]), keeping the
/// query as sent.
fn normalize_target<B>(req: &mut Request<B>) -> Result<(), Refusal> {
    let uri = req.uri();
    let Cow::Owned(path) = normalize_path(uri.path())? else {
        return Ok(());
    };
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    // Only unreserved characters were decoded and segments dropped: still a valid target.
    let uri = with_path_and_query(uri, &pq).ok_or(Refusal::MalformedEscape)?;
    *req.uri_mut() = uri;
    Ok(())
}

/// Removes hop-by-hop fields and those `Connection` names (RFC 9110 §7.6.1), before the edge
/// adds any field of its own; a connection upgrade keeps `Connection: upgrade` and
/// `Upgrade` (RFC 9110 §7.8), which the origin must see to consent.
fn remove_connection_fields(headers: &mut HeaderMap, version: Version) {
    let upgrade = upgrade_protocol(headers, version);
    remove_hop_by_hop_but_upgrade(headers, upgrade);
}

/// The normal form of a request path (RFC 3986 §6.2.2), or why it is refused.
///
/// - `%XX` escapes of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, so
///   `/a%62c` and `/abc` are one path; other escapes get upper-case hex digits.
/// - `.` and `..` segments are removed (RFC 3986 §5.2.4), after `%2E` is decoded; `..` above
///   the root stays at the root.
/// - Empty segments are merged: `//a` is `/a`.
/// - Refused: `%2F` (an encoded `/`, which origins disagree on), `\` raw or as `%5C` (a
///   separator on some origins), a `%` without two hex digits, `%00`, and a `.` or `..`
///   segment followed by `;` parameters (a dot segment to some origins).
///
/// A path that does not start with `/` (`*`, or the empty path of a `CONNECT`) is left as it
/// is. Borrows the path when it is already normal, which allocates nothing.
pub(crate) fn normalize_path(path: &str) -> Result<Cow<'_, str>, Refusal> {
    if !path.starts_with('/') {
        return Ok(Cow::Borrowed(path));
    }
    if is_normal(path)? {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(path)?;
    let mut out = String::with_capacity(decoded.len());
    let mut kept: Vec<(usize, usize)> = Vec::new();
    let mut segments = decoded[1..].split('/').peekable();
    let mut trailing = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "" | "." => trailing = last,
            ".." => {
                if let Some((start, _)) = kept.pop() {
                    out.truncate(start);
                }
                trailing = last;
            }
            s if is_dot_with_parameters(s) => return Err(Refusal::DotSegmentParameters),
            s => {
                let start = out.len();
                out.push('/');
                out.push_str(s);
                kept.push((start, out.len()));
                trailing = false;
            }
        }
    }
    if trailing || out.is_empty() {
        out.push('/');
    }
    Ok(if out == path {
        Cow::Borrowed(path)
    } else {
        Cow::Owned(out)
    })
}

/// Checks a path without allocating: `Ok(true)` when it is already in normal form.
fn is_normal(path: &str) -> Result<bool, Refusal> {
    let bytes = path.as_bytes();
    let mut normal = true;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(Refusal::Backslash),
            b'%' => {
                let (value, upper) = escape_at(bytes, i)?;
                if is_unreserved(value) || !upper {
                    normal = false;
                }
                i += 3;
                continue;
            }
            b'/' => match &bytes[i + 1..] {
                // An empty segment that is not the last one: `//`.
                [b'/', ..] => normal = false,
                // Only a segment starting with `.` can be a dot segment: the others are not
                // looked at again.
                rest @ [b'.', ..] => {
                    let end = rest.iter().position(|&b| b == b'/').unwrap_or(rest.len());
                    let segment = &rest[..end];
                    if segment == b"." || segment == b".." {
                        normal = false;
                    }
                    if segment.starts_with(b".;") || segment.starts_with(b"..;") {
                        return Err(Refusal::DotSegmentParameters);
                    }
                }
                _ => {}
            },
            _ => {}
        }
        i += 1;
    }
    Ok(normal)
}

/// The path with unreserved characters decoded and other escapes in upper case.
fn decode_unreserved(path: &str) -> Result<String, Refusal> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => return Err(Refusal::Backslash),
            b'%' => {
                out.push_str(&path[start..i]);
                let (value, _) = escape_at(bytes, i)?;
                if is_unreserved(value) {
                    out.push(char::from(value));
                } else {
                    out.push('%');
                    out.push(char::from(HEX[usize::from(value >> 4)]));
                    out.push(char::from(HEX[usize::from(value & 0xf)]));
                }
                i += 3;
                start = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&path[start..]);
    Ok(out)
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// The byte a `%XX` escape at `i` stands for, and whether its hex digits were upper case;
/// refuses malformed escapes and the ones that change what the path means.
fn escape_at(bytes: &[u8], i: usize) -> Result<(u8, bool), Refusal> {
    let digits = bytes.get(i + 1..i + 3).ok_or(Refusal::MalformedEscape)?;
    let hex = |b: u8| char::from(b).to_digit(16);
    let (Some(high), Some(low)) = (hex(digits[0]), hex(digits[1])) else {
        return Err(Refusal::MalformedEscape);
    };
    // Two hex digits make at most 0xFF.
    let value = u8::try_from(high * 16 + low).map_err(|_| Refusal::MalformedEscape)?;
    match value {
        0 => Err(Refusal::Nul),
        b'/' => Err(Refusal::EncodedSlash),
        b'\\' => Err(Refusal::Backslash),
        _ => Ok((value, !digits.iter().any(u8::is_ascii_lowercase))),
    }
}

/// RFC 3986 §2.3.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `.;x` or `..;x`: a dot segment to origins that strip path parameters first.
fn is_dot_with_parameters(segment: &str) -> bool {
    matches!(segment.split_once(';'), Some(("." | "..", _)))
}

/// Fields the viewer may not send to the origin (for the key and origin to agree, the edge
/// alone says who the viewer is and which URL and method it asked for), besides every
/// `X-Forwarded-*` and `CloudFront-*` field.
const VIEWER_FIELDS: [&str; 11] = [
    "forwarded",
    "x-real-ip",
    "true-client-ip",
    "x-client-ip",
    "x-host",
    "x-original-url",
    "x-original-uri",
    "x-rewrite-url",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
];

/// Whether a field is one a viewer may not set for the origin: forwarding fields
/// (`Forwarded`, `X-Forwarded-*`, `X-Real-IP`, `True-Client-IP`, `X-Client-IP`, `X-Host`),
/// URL and method overrides (`X-Original-URL`, `X-Original-URI`, `X-Rewrite-URL`,
/// `X-HTTP-Method-Override`, `X-HTTP-Method`, `X-Method-Override`) and `CloudFront-*`
/// fields, which the edge sets itself.
pub(crate) fn is_viewer_field(name: &HeaderName) -> bool {
    let name = name.as_str();
    // Every such name starts with one of these letters: the usual request fields are passed
    // over at the first byte.
    if !matches!(name.as_bytes().first(), Some(b'x' | b'c' | b'f' | b't')) {
        return false;
    }
    name.starts_with("x-forwarded-")
        || name.starts_with("cloudfront-")
        || VIEWER_FIELDS.contains(&name)
}

/// Rule 6: removes the viewer's forwarding, override and `CloudFront-*` fields, but those in
/// `keep`. Allocates nothing when there are none.
pub(crate) fn remove_viewer_fields(headers: &mut HeaderMap, keep: &[HeaderName]) {
    loop {
        let found = headers
            .keys()
            .find(|name| is_viewer_field(name) && !keep.contains(name))
            .cloned();
        match found {
            Some(name) => {
                headers.remove(&name);
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(path: &str) -> Result<String, Refusal> {
        normalize_path(path).map(Cow::into_owned)
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for path in [
            "/", "/a", "/a/", "/a/b.c", "/%20x", "/a%3Ab", "/..a/.b", "*", "",
        ] {
            assert!(
                matches!(normalize_path(path), Ok(Cow::Borrowed(p)) if p == path),
                "{path}"
            );
        }
    }

    #[test]
    fn dot_segments_are_removed() {
        // RFC 3986 §5.2.4 and its §5.4 examples, as absolute paths.
        assert_eq!(norm("/a/b/c/./../../g").unwrap(), "/a/g");
        assert_eq!(norm("/mid/content=5/../6").unwrap(), "/mid/6");
        assert_eq!(norm("/a/b/c/.").unwrap(), "/a/b/c/");
        assert_eq!(norm("/a/b/c/..").unwrap(), "/a/b/");
        assert_eq!(norm("/a/..").unwrap(), "/");
        assert_eq!(norm("/./a").unwrap(), "/a");
        assert_eq!(norm("/a/./").unwrap(), "/a/");
        // `..` above the root stays at the root.
        assert_eq!(norm("/../../etc/passwd").unwrap(), "/etc/passwd");
        assert_eq!(norm("/..").unwrap(), "/");
    }

    #[test]
    fn empty_segments_merge() {
        assert_eq!(norm("//members/x").unwrap(), "/members/x");
        assert_eq!(norm("/a//b///c").unwrap(), "/a/b/c");
        assert_eq!(norm("//").unwrap(), "/");
        assert_eq!(norm("/a//").unwrap(), "/a/");
    }

    #[test]
    fn the_attack_paths_normalise_to_the_target() {
        // Issue #16 item 6: each of these read /members/x under another behavior.
        for path in [
            "/public/../members/x",
            "/public/%2e%2e/members/x",
            "/public/%2E%2E/members/x",
            "/public/.%2e/members/x",
            "//members/x",
            "/./members/x",
            "/%2e/members/x",
            "/members/./x",
            "/members%2fx/../x",
        ] {
            if path.contains("%2f") {
                assert_eq!(norm(path), Err(Refusal::EncodedSlash), "{path}");
            } else {
                assert_eq!(norm(path).unwrap(), "/members/x", "{path}");
            }
        }
        assert_eq!(norm("/members%2Fx"), Err(Refusal::EncodedSlash));
        assert_eq!(
            norm("/members/public/../vip/secret.txt").unwrap(),
            "/members/vip/secret.txt"
        );
        assert_eq!(norm("/static/../account").unwrap(), "/account");
    }

    #[test]
    fn unreserved_escapes_decode_and_others_upper_case() {
        assert_eq!(norm("/a%62c").unwrap(), "/abc");
        assert_eq!(norm("/%7Euser/%41%5f%2D").unwrap(), "/~user/A_-");
        assert_eq!(norm("/a%3ab%c3%a9").unwrap(), "/a%3Ab%C3%A9");
        assert_eq!(norm("/a%20b").unwrap(), "/a%20b");
        // An escaped `%` stays one: no double decoding.
        assert_eq!(norm("/%252e%252e/x").unwrap(), "/%252e%252e/x");
    }

    #[test]
    fn refusals() {
        assert_eq!(norm("/a%2Fb"), Err(Refusal::EncodedSlash));
        assert_eq!(norm("/a%2fb"), Err(Refusal::EncodedSlash));
        assert_eq!(norm("/a\\b"), Err(Refusal::Backslash));
        assert_eq!(norm("/a%5cb"), Err(Refusal::Backslash));
        assert_eq!(norm("/a%5Cb"), Err(Refusal::Backslash));
        assert_eq!(norm("/a%00b"), Err(Refusal::Nul));
        for bad in ["/a%", "/a%2", "/a%zz", "/a%g0", "/%%41"] {
            assert_eq!(norm(bad), Err(Refusal::MalformedEscape), "{bad}");
        }
        for bad in ["/static/..;/account", "/static/.;x/a", "/a/%2e%2e;/b"] {
            assert_eq!(norm(bad), Err(Refusal::DotSegmentParameters), "{bad}");
        }
        // A `;` elsewhere is an ordinary character.
        assert_eq!(norm("/a;b/..").unwrap(), "/");
    }

    #[test]
    fn normalising_twice_changes_nothing() {
        for path in [
            "/a/./b/../c//d/",
            "/%7e/%2e%2e/x%3a",
            "/a/b/../../..",
            "/x/%2E/",
        ] {
            let once = norm(path).unwrap();
            assert!(
                matches!(normalize_path(&once), Ok(Cow::Borrowed(_))),
                "{path}"
            );
        }
    }

    fn request(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get(uri).body(()).unwrap();
        for (name, value) in headers {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        req
    }

    #[test]
    fn the_query_is_kept_as_sent() {
        let mut req = request("http://h/a/../b%7e?x=%2e%2e&y=/../", &[]);
        admit_request(&mut req).unwrap();
        assert_eq!(req.uri(), "http://h/b~?x=%2e%2e&y=/../");
    }

    #[test]
    fn host_names_are_lower_cased() {
        let mut req = request("http://Shop.EXAMPLE:8080/P?Q", &[("host", "Shop.Example")]);
        admit_request(&mut req).unwrap();
        assert_eq!(req.uri(), "http://shop.example:8080/P?Q");
        assert_eq!(req.headers()["host"], "shop.example");
    }

    #[test]
    fn a_zero_content_length_on_get_goes() {
        let mut req = request("/", &[("content-length", "0")]);
        assert_eq!(admit_request(&mut req), Ok(false));
        assert!(!req.headers().contains_key("content-length"));
        let mut post = request("/", &[("content-length", "0")]);
        *post.method_mut() = Method::POST;
        admit_request(&mut post).unwrap();
        assert!(post.headers().contains_key("content-length"));
    }

    #[test]
    fn get_and_head_with_a_body_are_refused() {
        for headers in [
            &[("content-length", "5")][..],
            &[("transfer-encoding", "chunked")],
            &[("content-length", "x")],
            &[("content-length", "0"), ("content-length", "1")],
        ] {
            assert_eq!(
                admit_request(&mut request("/", headers)),
                Err(Refusal::Body),
                "{headers:?}"
            );
            let mut head = request("/", headers);
            *head.method_mut() = Method::HEAD;
            assert_eq!(admit_request(&mut head), Err(Refusal::Body));
            let mut post = request("/", headers);
            *post.method_mut() = Method::POST;
            assert_eq!(admit_request(&mut post), Ok(true));
        }
        assert_eq!(
            admit_request(&mut request("/", &[("content-length", "0")])),
            Ok(false)
        );
        let mut undeclared = request("/", &[]);
        undeclared.extensions_mut().insert(UndeclaredBody);
        assert_eq!(admit_request(&mut undeclared), Err(Refusal::Body));
    }

    /// A body of unknown length, as an HTTP/2 request without `content-length` has.
    struct Unknown;

    impl http_body::Body for Unknown {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, Self::Error>>> {
            std::task::Poll::Ready(None)
        }
    }

    #[test]
    fn undeclared_bodies_are_marked() {
        use http_body_util::{Empty, Full};
        let mut full = Request::new(Full::new(bytes::Bytes::from_static(b"x")));
        mark_undeclared_body(&mut full);
        assert!(full.extensions().get::<UndeclaredBody>().is_some());
        let mut unknown = Request::new(Unknown);
        mark_undeclared_body(&mut unknown);
        assert!(unknown.extensions().get::<UndeclaredBody>().is_some());
        let mut empty = Request::new(Empty::<bytes::Bytes>::new());
        mark_undeclared_body(&mut empty);
        assert!(empty.extensions().get::<UndeclaredBody>().is_none());
        let mut declared = Request::new(Unknown);
        declared
            .headers_mut()
            .insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        mark_undeclared_body(&mut declared);
        assert!(
            declared.extensions().get::<UndeclaredBody>().is_none(),
            "the field already says so"
        );
    }

    #[test]
    fn connection_named_fields_go_before_the_edge_adds_any() {
        let mut req = request(
            "/",
            &[
                ("connection", "CloudFront-Viewer-Country, keep-alive"),
                ("cloudfront-viewer-country", "XX"),
                ("keep-alive", "timeout=5"),
                ("te", "trailers"),
                ("accept", "*/*"),
            ],
        );
        admit_request(&mut req).unwrap();
        let names: Vec<&str> = req.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept"]);
    }

    #[test]
    fn an_upgrade_keeps_connection_upgrade() {
        let mut req = request(
            "/ws",
            &[
                ("connection", "keep-alive, Upgrade, x-secret"),
                ("upgrade", "websocket"),
                ("x-secret", "1"),
                ("sec-websocket-key", "k"),
            ],
        );
        admit_request(&mut req).unwrap();
        assert_eq!(req.headers()["connection"], "upgrade");
        assert_eq!(req.headers()["upgrade"], "websocket");
        assert!(!req.headers().contains_key("x-secret"));
        assert!(req.headers().contains_key("sec-websocket-key"));
        // HTTP/2 has no upgrade: both go.
        let mut h2 = request(
            "/ws",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        *h2.version_mut() = Version::HTTP_2;
        admit_request(&mut h2).unwrap();
        assert!(h2.headers().is_empty());
    }

    #[test]
    fn too_many_connection_options_are_refused() {
        let list = vec!["x"; MAX_CONNECTION_OPTIONS + 1].join(", ");
        let mut req = request("/", &[("connection", &list)]);
        assert_eq!(admit_request(&mut req), Err(Refusal::ConnectionOptions));
        let list = vec!["x"; MAX_CONNECTION_OPTIONS].join(", ");
        assert!(admit_request(&mut request("/", &[("connection", &list)])).is_ok());
    }

    #[test]
    fn every_viewer_field_passes_the_first_byte_check() {
        for name in VIEWER_FIELDS {
            assert!(is_viewer_field(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["x-forwarded-port", "cloudfront-viewer-country"] {
            assert!(is_viewer_field(&HeaderName::from_static(name)), "{name}");
        }
        for name in ["accept", "cookie", "host", "user-agent", "te"] {
            assert!(!is_viewer_field(&HeaderName::from_static(name)), "{name}");
        }
    }

    #[test]
    fn viewer_forwarding_and_override_fields_go_unless_kept() {
        let fields = [
            ("forwarded", "for=1.2.3.4;host=evil"),
            ("x-forwarded-for", "1.2.3.4"),
            ("x-forwarded-host", "evil"),
            ("x-forwarded-scheme", "nothttps"),
            ("x-forwarded-port", "1"),
            ("x-forwarded-prefix", "/evil"),
            ("x-forwarded-server", "evil"),
            ("x-original-url", "/nope"),
            ("x-rewrite-url", "/nope"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("x-host", "evil"),
            ("x-real-ip", "1.2.3.4"),
            ("true-client-ip", "1.2.3.4"),
            ("cloudfront-viewer-country", "XX"),
            ("cloudfront-is-mobile-viewer", "true"),
            ("accept-language", "de"),
            ("x-forwarded-for", "5.6.7.8"),
        ];
        let mut req = request("/", &fields);
        remove_viewer_fields(req.headers_mut(), &[]);
        let names: Vec<&str> = req.headers().keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["accept-language"]);

        let mut req = request("/", &fields);
        let keep = [HeaderName::from_static("x-http-method-override")];
        remove_viewer_fields(req.headers_mut(), &keep);
        let mut names: Vec<&str> = req.headers().keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(names, ["accept-language", "x-http-method-override"]);
    }
}
