//! Field helpers shared by the cache: hop-by-hop fields, `Vary`, comma lists.

use http::header::{HeaderMap, HeaderName, VARY};
use http::HeaderValue;

use super::conditional::is_hop_by_hop;

/// `CDN-Cache-Control` (RFC 9213 §3): caching directives for CDNs only.
pub(crate) static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// `Surrogate-Control`: the older, widely deployed field for the same purpose.
pub(crate) static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// At most this many field names are read from `Vary`; more makes the response unstorable.
pub(crate) const MAX_VARY_FIELDS: usize = 16;

/// Removes hop-by-hop fields (RFC 9110 §7.6.1), including every field `Connection` names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let hop: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_hop_by_hop(name, headers))
        .cloned()
        .collect();
    for name in hop {
        headers.remove(name);
    }
}

/// The protocol an HTTP/1.1 request asks to switch to: an `Upgrade` field that `Connection`
/// names (RFC 9110 §7.8). HTTP/2 has no such mechanism.
pub(crate) fn upgrade_protocol(headers: &HeaderMap, version: http::Version) -> Option<HeaderValue> {
    if version != http::Version::HTTP_11 {
        return None;
    }
    // `Upgrade` first: it is one lookup, and absent from almost every request (this runs on
    // every hit).
    let protocol = headers.get(http::header::UPGRADE)?;
    let named = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    named.then(|| protocol.clone())
}

/// Members of a comma-separated list (RFC 9110 §5.6.1), trimmed, empty ones skipped.
pub(crate) fn comma_list(value: &HeaderValue) -> impl Iterator<Item = &[u8]> {
    value
        .as_bytes()
        .split(|b| *b == b',')
        .map(<[u8]>::trim_ascii)
        .filter(|m| !m.is_empty())
}

/// What a response's `Vary` asks of later requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Vary {
    /// No `Vary`: one object per URL.
    None,
    /// `*` on any line, or too many names: can never match (RFC 9111 §4.1).
    Star,
    /// Lower-cased field names, deduplicated, in order.
    Fields(Vec<HeaderName>),
}

impl Vary {
    /// The same, without one field name.
    pub(crate) fn without(self, name: &HeaderName) -> Vary {
        match self {
            Vary::Fields(mut names) => {
                names.retain(|n| n != name);
                if names.is_empty() {
                    Vary::None
                } else {
                    Vary::Fields(names)
                }
            }
            other => other,
        }
    }

    pub(crate) fn parse(headers: &HeaderMap) -> Vary {
        let mut names: Vec<HeaderName> = Vec::new();
        for line in headers.get_all(VARY) {
            for member in comma_list(line) {
                if member == b"*" {
                    return Vary::Star;
                }
                // A name that is not a valid field name can never be matched either.
                let Ok(name) = HeaderName::from_bytes(member) else {
                    return Vary::Star;
                };
                if !names.contains(&name) {
                    if names.len() == MAX_VARY_FIELDS {
                        return Vary::Star;
                    }
                    names.push(name);
                }
            }
        }
        if names.is_empty() {
            Vary::None
        } else {
            Vary::Fields(names)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn connection_named_fields_are_removed() {
        let mut h = map(&[
            ("connection", "x-secret, keep-alive"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("content-type", "text/plain"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn vary_star_on_any_line_never_matches() {
        // RFC 9111 §4.1
        assert_eq!(
            Vary::parse(&map(&[("vary", "accept"), ("vary", "*")])),
            Vary::Star
        );
        assert_eq!(Vary::parse(&map(&[("vary", "accept, *")])), Vary::Star);
    }

    #[test]
    fn vary_names_are_lowercased_and_deduplicated() {
        let v = Vary::parse(&map(&[
            ("vary", "Accept-Language, accept-language"),
            ("vary", "X-A"),
        ]));
        assert_eq!(
            v,
            Vary::Fields(vec![
                HeaderName::from_static("accept-language"),
                HeaderName::from_static("x-a")
            ])
        );
        assert_eq!(Vary::parse(&map(&[("vary", " , ")])), Vary::None);
    }
}
