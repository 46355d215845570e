//! Cache keys: a 128-bit hash of scheme, host, path and query, and the `Vary` secondary key.

use http::header::{HeaderMap, HeaderName, HOST};
use http::{Request, Uri};
use xxhash_rust::xxh3::Xxh3;

use crate::behavior::KeyPolicy;
use crate::rfc::headers::comma_list;

/// Identifies one stored object. A hash, so building it allocates nothing; 128 bits make a
/// collision between distinct URLs vanishingly unlikely.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct CacheKey(pub(crate) u128);

impl CacheKey {
    /// The primary key of a request: scheme, host, path and full query (RFC 9111 §2).
    #[cfg(test)]
    pub(crate) fn for_request<B>(req: &Request<B>) -> CacheKey {
        let uri = req.uri();
        let host = host_of(uri, req.headers());
        Self::for_parts(scheme_of(uri), host, uri.path(), uri.query())
    }

    /// The primary key of a request under a behavior's key policy: scheme, host (unless
    /// left out), path, the policy's query, and the allow-listed headers and cookies. An
    /// `OPTIONS` response is a different object from the `GET` one.
    pub(crate) fn for_request_with<B>(
        req: &Request<B>,
        policy: &KeyPolicy,
        https: bool,
    ) -> CacheKey {
        let (uri, headers) = (req.uri(), req.headers());
        let host = if policy.includes_host() {
            host_of(uri, headers)
        } else {
            b""
        };
        let query = policy.normalized_query(uri.query());
        let scheme = if https { "https" } else { "http" };
        let mut h = Self::hasher(scheme, host, uri.path(), Some(&query));
        for (name, value) in policy.key_headers(headers) {
            h.update(b"\0h");
            h.update(name.as_str().as_bytes());
            h.update(b"=");
            h.update(value.as_bytes());
        }
        for (name, value) in policy.key_cookies(headers) {
            h.update(b"\0c");
            h.update(name.as_bytes());
            h.update(b"=");
            h.update(value.as_bytes());
        }
        if req.method() == http::Method::OPTIONS {
            h.update(b"\0OPTIONS");
        }
        CacheKey(h.digest128())
    }

    /// The primary key for an explicit URL's parts.
    #[cfg(test)]
    pub(crate) fn for_parts(
        scheme: &str,
        host: &[u8],
        path: &str,
        query: Option<&str>,
    ) -> CacheKey {
        CacheKey(Self::hasher(scheme, host, path, query).digest128())
    }

    fn hasher(scheme: &str, host: &[u8], path: &str, query: Option<&str>) -> Xxh3 {
        let mut h = Xxh3::new();
        h.update(scheme.as_bytes());
        h.update(b"\0");
        // Host names are case-insensitive (RFC 9110 §4.2.3); most arrive in lower case.
        if host.iter().any(u8::is_ascii_uppercase) {
            h.update(host.to_ascii_lowercase().as_slice());
        } else {
            h.update(host);
        }
        h.update(b"\0");
        h.update(if path.is_empty() {
            b"/"
        } else {
            path.as_bytes()
        });
        if let Some(q) = query {
            h.update(b"?");
            h.update(q.as_bytes());
        }
        h
    }

    /// The key of one variant: this key, the epoch of its `Vary` record, and the request's
    /// values of the nominated fields, normalised per RFC 9111 §4.1 (lines combined, white
    /// space around commas dropped, `Accept*` values case-folded).
    pub(crate) fn variant(self, epoch: u64, names: &[HeaderName], request: &HeaderMap) -> CacheKey {
        let mut h = Xxh3::new();
        h.update(&self.0.to_le_bytes());
        h.update(&epoch.to_le_bytes());
        for name in names {
            h.update(name.as_str().as_bytes());
            let fold = name.as_str().starts_with("accept");
            let mut lines = request.get_all(name).iter().peekable();
            h.update(if lines.peek().is_some() { b"=" } else { b"!" });
            for line in lines {
                for member in comma_list(line) {
                    if fold && member.iter().any(u8::is_ascii_uppercase) {
                        h.update(member.to_ascii_lowercase().as_slice());
                    } else {
                        h.update(member);
                    }
                    h.update(b",");
                }
            }
            h.update(b"\0");
        }
        CacheKey(h.digest128())
    }
}

/// The request's scheme: from the URI when absolute, else `http`.
#[cfg(test)]
pub(crate) fn scheme_of(uri: &Uri) -> &str {
    uri.scheme_str().unwrap_or("http")
}

/// `uri` with another path and query; `None` if `path_and_query` is not valid.
pub(crate) fn with_path_and_query(uri: &Uri, path_and_query: &str) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

/// The request's host: the URI authority when absolute (RFC 9112 §3.2.2), else `Host`.
pub(crate) fn host_of<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> &'a [u8] {
    match uri.authority() {
        Some(a) => a.as_str().as_bytes(),
        None => headers.get(HOST).map_or(&[][..], |h| h.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn key(uri: &str, host: Option<&str>) -> CacheKey {
        let mut b = Request::builder().uri(uri);
        if let Some(h) = host {
            b = b.header(HOST, h);
        }
        CacheKey::for_request(&b.body(()).unwrap())
    }

    #[test]
    fn key_includes_scheme_host_path_and_query() {
        let base = key("http://a.example/p?x=1", None);
        assert_eq!(base, key("/p?x=1", Some("A.example")));
        assert_ne!(base, key("https://a.example/p?x=1", None));
        assert_ne!(base, key("http://b.example/p?x=1", None));
        assert_ne!(base, key("http://a.example/p?x=2", None));
        assert_ne!(base, key("http://a.example/q?x=1", None));
        assert_ne!(key("/p?", Some("a")), key("/p", Some("a")));
    }

    #[test]
    fn variant_normalises_whitespace_and_accept_case() {
        let k = key("/", Some("a"));
        let names = [HeaderName::from_static("accept-language")];
        let mut h1 = HeaderMap::new();
        h1.insert("accept-language", HeaderValue::from_static("EN ,  fr"));
        let mut h2 = HeaderMap::new();
        h2.append("accept-language", HeaderValue::from_static("en"));
        h2.append("accept-language", HeaderValue::from_static("fr"));
        assert_eq!(k.variant(1, &names, &h1), k.variant(1, &names, &h2));
        assert_ne!(k.variant(1, &names, &h1), k.variant(2, &names, &h1));
        assert_ne!(
            k.variant(1, &names, &h1),
            k.variant(1, &names, &HeaderMap::new())
        );
    }

    #[test]
    fn absent_and_empty_fields_differ() {
        let k = key("/", Some("a"));
        let names = [HeaderName::from_static("x-v")];
        let mut empty = HeaderMap::new();
        empty.insert("x-v", HeaderValue::from_static(""));
        assert_ne!(
            k.variant(1, &names, &empty),
            k.variant(1, &names, &HeaderMap::new())
        );
    }

    use crate::behavior::{Cookies, Headers, QueryStrings};

    /// The key of `method uri` (with an optional `Host` and extra fields) under `policy`.
    fn key_with(
        policy: &KeyPolicy,
        https: bool,
        method: &str,
        uri: &str,
        fields: &[(&str, &str)],
    ) -> CacheKey {
        let mut b = Request::builder().method(method).uri(uri);
        for (name, value) in fields {
            b = b.header(*name, *value);
        }
        CacheKey::for_request_with(&b.body(()).unwrap(), policy, https)
    }

    fn get(uri: &str, fields: &[(&str, &str)]) -> CacheKey {
        key_with(&KeyPolicy::default(), false, "GET", uri, fields)
    }

    // RFC 9111 §2: the primary key is the target URI. RFC 9110 §4.2.3: scheme and host are
    // case-insensitive; the path is case-sensitive; an empty path is `/`.
    #[test]
    fn the_key_is_scheme_host_path_and_query() {
        let base = get("/p?x=1", &[("host", "a.example")]);
        assert_eq!(base, get("/p?x=1", &[("host", "A.Example")]));
        assert_ne!(base, get("/P?x=1", &[("host", "a.example")]));
        assert_ne!(base, get("/p?x=2", &[("host", "a.example")]));
        assert_ne!(base, get("/p?X=1", &[("host", "a.example")]));
        assert_ne!(base, get("/p", &[("host", "a.example")]));
        assert_ne!(base, get("/p?x=1", &[("host", "b.example")]));
        // Another port is another origin (RFC 9110 §4.3.1).
        assert_ne!(base, get("/p?x=1", &[("host", "a.example:8080")]));
        let https = key_with(
            &KeyPolicy::default(),
            true,
            "GET",
            "/p?x=1",
            &[("host", "a.example")],
        );
        assert_ne!(base, https);
        assert_eq!(
            CacheKey::for_parts("http", b"a", "", None),
            CacheKey::for_parts("http", b"a", "/", None)
        );
    }

    // RFC 9112 §3.2.2: an absolute-form target's authority is the host, whatever Host says.
    #[test]
    fn an_absolute_target_overrides_the_host_field() {
        let absolute = get("http://a.example/p", &[("host", "b.example")]);
        assert_eq!(absolute, get("/p", &[("host", "a.example")]));
        assert_ne!(absolute, get("/p", &[("host", "b.example")]));
    }

    // The request's parts stay apart in the hash: moving text from one part to another
    // never yields the same key.
    #[test]
    fn parts_do_not_run_into_each_other() {
        let k = |scheme: &str, host: &[u8], path: &str, query: Option<&str>| {
            CacheKey::for_parts(scheme, host, path, query)
        };
        assert_ne!(k("http", b"a", "/b", None), k("http", b"a/b", "", None));
        assert_ne!(k("http", b"ab", "/", None), k("httpa", b"b", "/", None));
        assert_ne!(k("http", b"a", "/p", Some("")), k("http", b"a", "/p", None));
        let policy = KeyPolicy::default()
            .headers(Headers::allow([HeaderName::from_static("x-a")]))
            .cookies(Cookies::allow(["x-a"]));
        let header = key_with(&policy, false, "GET", "/", &[("host", "h"), ("x-a", "1")]);
        let cookie = key_with(
            &policy,
            false,
            "GET",
            "/",
            &[("host", "h"), ("cookie", "x-a=1")],
        );
        let query = key_with(&policy, false, "GET", "/?x-a=1", &[("host", "h")]);
        assert_ne!(header, cookie);
        assert_ne!(header, query);
        assert_ne!(cookie, query);
    }

    // A HEAD is answered from the GET response (RFC 9110 §9.3.2), so they share a key; an
    // OPTIONS response is another object.
    #[test]
    fn head_shares_the_get_key_and_options_does_not() {
        let policy = KeyPolicy::default();
        let of = |method| key_with(&policy, false, method, "/p", &[("host", "h")]);
        assert_eq!(of("GET"), of("HEAD"));
        assert_ne!(of("GET"), of("OPTIONS"));
    }

    #[test]
    fn the_policy_decides_query_host_headers_and_cookies() {
        let host = |h| [("host", h)];
        // Default: the whole query in its order, minus tracking parameters.
        let all = KeyPolicy::default();
        let k = |p: &KeyPolicy, uri: &str, f: &[(&str, &str)]| key_with(p, false, "GET", uri, f);
        assert_ne!(
            k(&all, "/?a=1&b=2", &host("h")),
            k(&all, "/?b=2&a=1", &host("h"))
        );
        assert_eq!(
            k(&all, "/?a=1&utm_source=x", &host("h")),
            k(&all, "/?a=1", &host("h"))
        );
        // Sorted: order no longer matters, values still do.
        let sorted = KeyPolicy::new().query_strings(QueryStrings::all().sorted());
        assert_eq!(
            k(&sorted, "/?a=1&b=2", &host("h")),
            k(&sorted, "/?b=2&a=1", &host("h"))
        );
        assert_ne!(
            k(&sorted, "/?a=1&b=2", &host("h")),
            k(&sorted, "/?a=1&b=3", &host("h"))
        );
        // Allow list: only the named parameters.
        let allow = KeyPolicy::new().query_strings(QueryStrings::allow(["v"]));
        assert_eq!(
            k(&allow, "/?v=1&x=2", &host("h")),
            k(&allow, "/?v=1", &host("h"))
        );
        assert_ne!(
            k(&allow, "/?v=1", &host("h")),
            k(&allow, "/?v=2", &host("h"))
        );
        let none = KeyPolicy::new().query_strings(QueryStrings::none());
        assert_eq!(k(&none, "/?v=1", &host("h")), k(&none, "/", &host("h")));
        // Host left out: every host shares the object.
        let hostless = KeyPolicy::new().include_host(false);
        assert_eq!(k(&hostless, "/", &host("a")), k(&hostless, "/", &host("b")));
        // Headers and cookies: only the allow-listed ones, by value.
        let device = KeyPolicy::new()
            .headers(Headers::allow([HeaderName::from_static("x-device")]))
            .cookies(Cookies::allow(["lang"]));
        let base = k(
            &device,
            "/",
            &[
                ("host", "h"),
                ("x-device", "phone"),
                ("cookie", "lang=fr; s=1"),
            ],
        );
        assert_eq!(
            base,
            k(
                &device,
                "/",
                &[
                    ("host", "h"),
                    ("x-device", "phone"),
                    ("cookie", "s=2; lang=fr"),
                    ("x-other", "1")
                ]
            )
        );
        assert_ne!(
            base,
            k(
                &device,
                "/",
                &[("host", "h"), ("x-device", "tablet"), ("cookie", "lang=fr")]
            )
        );
        assert_ne!(
            base,
            k(
                &device,
                "/",
                &[("host", "h"), ("x-device", "phone"), ("cookie", "lang=de")]
            )
        );
        assert_ne!(
            base,
            k(&device, "/", &[("host", "h"), ("cookie", "lang=fr")])
        );
        // Without the allow lists, they do not enter the key at all.
        assert_eq!(
            k(
                &all,
                "/",
                &[("host", "h"), ("x-device", "phone"), ("cookie", "lang=fr")]
            ),
            k(&all, "/", &host("h"))
        );
    }

    // RFC 9111 §4.1: only fields whose grammar says so are case-folded (the Accept* family);
    // other values are compared as sent, member order included.
    #[test]
    fn variant_keys_fold_only_what_the_rfc_allows() {
        let k = key("/", Some("a"));
        let device = [HeaderName::from_static("x-device")];
        let with = |name: &'static str, value: &'static str| {
            let mut map = HeaderMap::new();
            map.append(name, HeaderValue::from_static(value));
            map
        };
        assert_ne!(
            k.variant(1, &device, &with("x-device", "Mobile")),
            k.variant(1, &device, &with("x-device", "mobile"))
        );
        let lang = [HeaderName::from_static("accept-language")];
        assert_ne!(
            k.variant(1, &lang, &with("accept-language", "en, fr")),
            k.variant(1, &lang, &with("accept-language", "fr, en"))
        );
        // Empty list elements are not members (RFC 9110 §5.6.1).
        assert_eq!(
            k.variant(1, &lang, &with("accept-language", "en,,fr")),
            k.variant(1, &lang, &with("accept-language", "en, fr"))
        );
        // Another URL's variant for the same request is another object.
        let other = key("/other", Some("a"));
        let request = with("accept-language", "en");
        assert_ne!(
            k.variant(1, &lang, &request),
            other.variant(1, &lang, &request)
        );
    }

    // RFC 9111 §4.1: each nominated field is matched on its own; a value cannot move from
    // one field to another and still match.
    #[test]
    fn variant_values_stay_with_their_field() {
        let k = key("/", Some("a"));
        let names = [
            HeaderName::from_static("x-a"),
            HeaderName::from_static("x-b"),
        ];
        let mut first = HeaderMap::new();
        first.insert("x-a", HeaderValue::from_static("1"));
        first.insert("x-b", HeaderValue::from_static(""));
        let mut second = HeaderMap::new();
        second.insert("x-a", HeaderValue::from_static(""));
        second.insert("x-b", HeaderValue::from_static("1"));
        assert_ne!(k.variant(1, &names, &first), k.variant(1, &names, &second));
        let mut only_b = HeaderMap::new();
        only_b.insert("x-b", HeaderValue::from_static("1"));
        assert_ne!(k.variant(1, &names, &second), k.variant(1, &names, &only_b));
        // Fields the response did not name do not matter.
        let mut extra = first.clone();
        extra.insert("x-c", HeaderValue::from_static("9"));
        assert_eq!(k.variant(1, &names, &first), k.variant(1, &names, &extra));
    }
}
