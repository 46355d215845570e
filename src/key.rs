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
}
