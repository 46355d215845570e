//! Field helpers shared by the cache: hop-by-hop fields, `Vary`, comma lists.

use http::header::{self, HeaderMap, HeaderName, VARY};
use http::HeaderValue;

use super::conditional::MAX_CONNECTION_OPTIONS;

/// `CDN-Cache-Control` (RFC 9213 §3): caching directives for CDNs only.
pub(crate) static CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");
/// `Surrogate-Control`: the older, widely deployed field for the same purpose.
pub(crate) static SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// At most this many field names are read from `Vary`; more makes the response unstorable.
pub(crate) const MAX_VARY_FIELDS: usize = 16;

/// Fields that describe one connection, not the message (RFC 9110 §7.6.1, §7.8, §10.1.4,
/// §11.7.1, RFC 9112 §6.1; `Keep-Alive` and `Proxy-Connection` from older practice), besides
/// `Connection` itself and the fields it names.
static HOP_BY_HOP: [HeaderName; 8] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Whether a field is `Connection` or one of [`HOP_BY_HOP`] (a match on the name, which the
/// compiler turns into a length switch and at most a comparison or two).
pub(crate) fn is_hop_by_hop_name(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1), including every field `Connection` names.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    remove_hop_by_hop_but_upgrade(headers, None);
}

/// The number of options the `Connection` lines list, counting no further than `limit + 1`.
pub(crate) fn connection_options(headers: &HeaderMap, limit: usize) -> usize {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(comma_list)
        .take(limit.saturating_add(1))
        .count()
}

/// Removes hop-by-hop fields (RFC 9110 §7.6.1): `Connection`, every field it names, and the
/// fixed set above. With `upgrade` (the protocol of a connection upgrade the next hop must
/// see, RFC 9110 §7.8), `Connection: upgrade` and `Upgrade` are put back, and nothing else.
///
/// A `Connection` listing more than [`MAX_CONNECTION_OPTIONS`] options taints the whole
/// message: every field goes (as [`is_hop_by_hop`](super::conditional::is_hop_by_hop) decides for a 304). Allocates nothing
/// unless `Connection` has several lines.
pub(crate) fn remove_hop_by_hop_but_upgrade(headers: &mut HeaderMap, upgrade: Option<HeaderValue>) {
    // Most messages carry none: one pass over the names present instead of a hashed removal
    // per hop-by-hop name.
    if !headers.keys().any(is_hop_by_hop_name) {
        return;
    }
    if connection_options(headers, MAX_CONNECTION_OPTIONS) > MAX_CONNECTION_OPTIONS {
        headers.clear();
        return;
    }
    let mut lines = headers.get_all(header::CONNECTION).iter();
    match (lines.next(), lines.next()) {
        (None, _) => {}
        (Some(_), None) => {
            if let Some(line) = headers.remove(header::CONNECTION) {
                remove_named(headers, &line);
            }
        }
        _ => {
            let all: Vec<HeaderValue> = headers
                .get_all(header::CONNECTION)
                .iter()
                .cloned()
                .collect();
            headers.remove(header::CONNECTION);
            for line in &all {
                remove_named(headers, line);
            }
        }
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if let Some(protocol) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, protocol);
    }
}

/// Removes the fields one `Connection` line names (options are case-insensitive, as field
/// names are; ones that are not field names name nothing).
fn remove_named(headers: &mut HeaderMap, line: &HeaderValue) {
    for option in comma_list(line) {
        // Looked up by `&str`: no `HeaderName` is built, so nothing is allocated.
        if let Ok(name) = std::str::from_utf8(option) {
            headers.remove(name);
        }
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

    #[test]
    fn the_name_check_knows_every_hop_by_hop_field() {
        assert!(is_hop_by_hop_name(&header::CONNECTION));
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop_name(name), "{name}");
        }
        for name in [
            header::HOST,
            header::ACCEPT,
            header::COOKIE,
            header::CACHE_CONTROL,
        ] {
            assert!(!is_hop_by_hop_name(&name), "{name}");
        }
    }

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
    fn options_on_several_lines_and_in_any_case_are_removed() {
        let mut h = map(&[
            ("connection", "X-A"),
            ("connection", "x-b, CloudFront-Viewer-Country"),
            ("x-a", "1"),
            ("x-b", "1"),
            ("cloudfront-viewer-country", "DE"),
            ("te", "trailers"),
            ("accept", "*/*"),
        ]);
        remove_hop_by_hop(&mut h);
        assert_eq!(h, map(&[("accept", "*/*")]));
    }

    #[test]
    fn an_upgrade_is_put_back_alone() {
        // RFC 9110 §7.8: the next hop must see the upgrade to consent to it.
        let mut h = map(&[
            ("connection", "upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("keep-alive", "5"),
        ]);
        remove_hop_by_hop_but_upgrade(&mut h, Some(HeaderValue::from_static("websocket")));
        assert_eq!(
            h,
            map(&[("connection", "upgrade"), ("upgrade", "websocket")])
        );
    }

    #[test]
    fn an_abusive_connection_list_taints_the_message() {
        let list = vec!["x"; MAX_CONNECTION_OPTIONS + 1].join(",");
        let mut h = map(&[("connection", &list), ("content-type", "text/plain")]);
        assert_eq!(
            connection_options(&h, MAX_CONNECTION_OPTIONS),
            MAX_CONNECTION_OPTIONS + 1
        );
        remove_hop_by_hop(&mut h);
        assert!(h.is_empty());
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
