//! Conditional requests against a stored response (RFC 9110 §13) and 304 handling (RFC 9111 §4.3.4).

use std::time::SystemTime;

use bytes::Bytes;
use http::header::{self, GetAll, HeaderName};
use http::{HeaderMap, HeaderValue, Method};

/// Most entity-tag list members (`If-Match`, `If-None-Match`, all lines together) examined.
///
/// Past this many members, a list with no match yet counts as not matching: `If-None-Match`
/// then lets the full response through (always correct) and `If-Match` fails with 412 (what a
/// client asking for an unmatched tag gets anyway). Keeps hostile lists cheap on the hit path.
pub(crate) const MAX_LIST_MEMBERS: usize = 64;

/// Most `Connection` options examined when deciding which fields are hop-by-hop.
///
/// A longer `Connection` list makes every field of that message suspect (see
/// [`is_hop_by_hop`]), so nothing beyond the fixed end-to-end checks is taken from it.
pub(crate) const MAX_CONNECTION_OPTIONS: usize = 32;

/// A parsed `entity-tag` (RFC 9110 §8.8.3), borrowing the field value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntityTag<'a> {
    weak: bool,
    /// The characters between the quotes.
    opaque: &'a [u8],
}

impl<'a> EntityTag<'a> {
    /// Parses a whole field value as one entity-tag (surrounding OWS allowed).
    pub(crate) fn parse(value: &'a [u8]) -> Option<Self> {
        match Self::parse_prefix(trim_ows(value))? {
            (tag, []) => Some(tag),
            _ => None,
        }
    }

    /// Parses `[ W/ ] DQUOTE *etagc DQUOTE` at the start of `s`, returning the rest.
    fn parse_prefix(s: &'a [u8]) -> Option<(Self, &'a [u8])> {
        // §8.8.3: `weak = %s"W/"`, case-sensitive.
        let (weak, s) = match s.strip_prefix(b"W/") {
            Some(rest) => (true, rest),
            None => (false, s),
        };
        let s = s.strip_prefix(b"\"")?;
        let end = s.iter().position(|&b| !is_etagc(b))?;
        if s[end] != b'"' {
            return None;
        }
        Some((
            EntityTag {
                weak,
                opaque: &s[..end],
            },
            &s[end + 1..],
        ))
    }

    /// Whether the tag carries the `W/` weakness indicator.
    pub(crate) fn is_weak(&self) -> bool {
        self.weak
    }

    /// Strong comparison (§8.8.3.2): both strong and the opaque-tags identical.
    pub(crate) fn strong_eq(&self, other: &EntityTag<'_>) -> bool {
        !self.weak && !other.weak && self.opaque == other.opaque
    }

    /// Weak comparison (§8.8.3.2): the opaque-tags identical, weakness ignored.
    pub(crate) fn weak_eq(&self, other: &EntityTag<'_>) -> bool {
        self.opaque == other.opaque
    }
}

/// `etagc = %x21 / %x23-7E / obs-text` (RFC 9110 §8.8.3); note that `,` is allowed.
fn is_etagc(b: u8) -> bool {
    b == 0x21 || (0x23..=0x7e).contains(&b) || b >= 0x80
}

/// One usable member of an `If-Match` / `If-None-Match` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListMember<'a> {
    /// `*`: any current representation (§13.1.1, §13.1.2).
    Any,
    /// An entity-tag.
    Tag(EntityTag<'a>),
}

/// Whether any member of an entity-tag list satisfies `matches`.
///
/// All field lines are read as one comma-separated list (RFC 9110 §5.3). Malformed members are
/// skipped up to the next comma rather than failing the whole field: skipping can only make a
/// match less likely, which for `If-None-Match` means a full response and for `If-Match` a 412,
/// both safe. At most [`MAX_LIST_MEMBERS`] members are examined; if none of them matched and more
/// remain, the answer is "no match".
pub(crate) fn list_any<'a>(
    values: GetAll<'a, HeaderValue>,
    mut matches: impl FnMut(ListMember<'a>) -> bool,
) -> bool {
    let mut examined = 0;
    for value in values {
        let mut rest = value.as_bytes();
        loop {
            // §5.6.1.2: empty elements (and the OWS around them) do not count as members.
            rest = skip_separators(rest);
            if rest.is_empty() {
                break;
            }
            if examined == MAX_LIST_MEMBERS {
                return false;
            }
            examined += 1;
            let (member, after) = next_member(rest);
            if member.is_some_and(&mut matches) {
                return true;
            }
            rest = after;
        }
    }
    false
}

/// Reads one list member from a non-empty `s` that does not start with OWS or a comma; returns
/// the member (`None` if malformed) and the input after it and its trailing comma.
fn next_member(s: &[u8]) -> (Option<ListMember<'_>>, &[u8]) {
    let (member, rest) = if let Some(rest) = s.strip_prefix(b"*") {
        (Some(ListMember::Any), rest)
    } else if let Some((tag, rest)) = EntityTag::parse_prefix(s) {
        (Some(ListMember::Tag(tag)), rest)
    } else {
        (None, s)
    };
    match trim_ows_start(rest) {
        [] => (member, &[]),
        [b',', after @ ..] => (member, after),
        // Junk inside this element: drop the element, resume after the next comma.
        junk => match junk.iter().position(|&b| b == b',') {
            Some(comma) => (None, &junk[comma + 1..]),
            None => (None, &[]),
        },
    }
}

/// Skips OWS and commas, i.e. empty list elements.
fn skip_separators(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b',', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Strips leading OWS (`*( SP / HTAB )`, RFC 9110 §5.6.3).
fn trim_ows_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// Strips OWS from both ends.
fn trim_ows(s: &[u8]) -> &[u8] {
    let mut s = trim_ows_start(s);
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// The result of evaluating a request's preconditions against a stored representation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Perform the method: serve the stored response (and then consider `If-Range`/`Range`).
    Proceed,
    /// 304 (Not Modified), built with [`not_modified_headers`].
    NotModified,
    /// 412 (Precondition Failed).
    Failed,
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since` in the
/// order of RFC 9110 §13.2.2 (steps 1 to 4; step 5, `If-Range`, is
/// `range::if_range_allows_partial`) against the stored representation's validators. A stored
/// representation always exists here, so `*` always matches.
///
/// RFC 9111 §4.3.2 says If-Match and If-Unmodified-Since are "not applicable to a cache";
/// a caller acting only as a cache (not on behalf of the origin) may forward such requests
/// instead of calling this.
pub(crate) fn evaluate(
    method: &Method,
    request: &HeaderMap,
    etag: Option<&HeaderValue>,
    last_modified: Option<&HeaderValue>,
) -> Precondition {
    // §13.2.1: preconditions are ignored for methods that neither select nor modify a
    // representation, such as CONNECT, OPTIONS and TRACE.
    if matches!(*method, Method::CONNECT | Method::OPTIONS | Method::TRACE) {
        return Precondition::Proceed;
    }
    // The common case on a hit: no precondition at all, nothing to parse.
    let conditional = [
        &header::IF_MATCH,
        &header::IF_NONE_MATCH,
        &header::IF_MODIFIED_SINCE,
        &header::IF_UNMODIFIED_SINCE,
    ];
    if !conditional.iter().any(|name| request.contains_key(*name)) {
        return Precondition::Proceed;
    }
    let is_get_or_head = matches!(*method, Method::GET | Method::HEAD);
    let current = etag.and_then(|v| EntityTag::parse(v.as_bytes()));
    // A malformed Last-Modified is treated as no modification date at all.
    let modified = last_modified.and_then(http_date);

    // Step 1: If-Match, strong comparison (§13.1.1); a false condition is 412.
    if request.contains_key(header::IF_MATCH) {
        let passes = list_any(request.get_all(header::IF_MATCH), |m| match m {
            ListMember::Any => true,
            ListMember::Tag(tag) => current.is_some_and(|c| c.strong_eq(&tag)),
        });
        if !passes {
            return Precondition::Failed;
        }
    } else if let Some(since) = single_date(request, &header::IF_UNMODIFIED_SINCE) {
        // Step 2: If-Unmodified-Since only without If-Match (§13.1.4 "MUST ignore" otherwise),
        // only if it is one valid HTTP-date, and only if there is a modification date to
        // compare ("MUST ignore ... if the resource does not have a modification date").
        if modified.is_some_and(|lm| lm > since) {
            return Precondition::Failed;
        }
    }

    // Step 3: If-None-Match, weak comparison (§13.1.2); a false condition is 304 for GET and
    // HEAD, 412 otherwise.
    if request.contains_key(header::IF_NONE_MATCH) {
        let matched = list_any(request.get_all(header::IF_NONE_MATCH), |m| match m {
            ListMember::Any => true,
            ListMember::Tag(tag) => current.is_some_and(|c| c.weak_eq(&tag)),
        });
        if matched {
            return if is_get_or_head {
                Precondition::NotModified
            } else {
                Precondition::Failed
            };
        }
    } else if is_get_or_head {
        // Step 4: If-Modified-Since only for GET/HEAD without If-None-Match, only one valid
        // HTTP-date (§13.1.3), and only with a Last-Modified to compare it with. "If the
        // selected representation's last modification date is earlier or equal to the date
        // provided in the field value, the condition is false": 304.
        if let (Some(since), Some(lm)) =
            (single_date(request, &header::IF_MODIFIED_SINCE), modified)
        {
            if lm <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// The field's value as one HTTP-date, or `None` when absent, malformed or a list: §13.1.3 and
/// §13.1.4 say to ignore a value that "is not a valid HTTP-date" or "has more than one member",
/// so a field sent on several lines is ignored too.
fn single_date(request: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut values = request.get_all(name).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    http_date(value)
}

/// Parses an HTTP-date (RFC 9110 §5.6.7).
fn http_date(value: &HeaderValue) -> Option<SystemTime> {
    let text = std::str::from_utf8(trim_ows(value.as_bytes())).ok()?;
    httpdate::parse_http_date(text).ok()
}

/// The stored fields a 304 answering from this stored response carries (RFC 9110 §15.4.5).
///
/// §15.4.5: the server "MUST generate any of the following header fields that would have been
/// sent in a 200 (OK) response to the same request": Content-Location, Date, ETag, Vary, and
/// Cache-Control and Expires. Last-Modified is added only when there is no ETag, the example
/// §15.4.5 gives of metadata "for the purpose of guiding cache updates"; other representation
/// metadata SHOULD NOT be sent. The caller adds Age and its own fields.
pub(crate) fn not_modified_headers(stored: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(8);
    let fields = [
        header::CONTENT_LOCATION,
        header::DATE,
        header::ETAG,
        header::VARY,
        header::CACHE_CONTROL,
        header::EXPIRES,
    ];
    for name in fields {
        copy_field(stored, &mut out, name);
    }
    if !stored.contains_key(header::ETAG) {
        copy_field(stored, &mut out, header::LAST_MODIFIED);
    }
    out
}

/// Appends every line of `name` from `from` to `to`.
fn copy_field(from: &HeaderMap, to: &mut HeaderMap, name: HeaderName) {
    for value in from.get_all(&name) {
        to.append(name.clone(), value.clone());
    }
}

/// Whether a 304 from the origin may update this stored response (RFC 9111 §4.3.4).
///
/// For a single stored response: a strong ETag in the 304 must strongly match the stored
/// ETag; a weak one must weakly match; with no ETag, a Last-Modified must equal the stored one;
/// with no validator at all, the stored response must lack validators too. When this is false
/// the cache "MUST NOT use the new response to update any stored responses".
pub(crate) fn not_modified_selects(stored: &HeaderMap, not_modified: &HeaderMap) -> bool {
    // Outer `None`: field absent; inner `None`: present but malformed.
    fn etag(map: &HeaderMap) -> Option<Option<EntityTag<'_>>> {
        map.get(header::ETAG)
            .map(|v| EntityTag::parse(v.as_bytes()))
    }
    fn modified(map: &HeaderMap) -> Option<Option<SystemTime>> {
        map.get(header::LAST_MODIFIED).map(http_date)
    }
    match (etag(not_modified), etag(stored)) {
        (Some(Some(new)), Some(Some(old))) => {
            if new.is_weak() {
                new.weak_eq(&old)
            } else {
                new.strong_eq(&old)
            }
        }
        // The 304 names a validator the stored response lacks, or one side is malformed.
        (Some(_), _) => false,
        (None, _) => match (modified(not_modified), modified(stored)) {
            (Some(Some(new)), Some(Some(old))) => new == old,
            (Some(_), _) => false,
            (None, _) => !stored.contains_key(header::ETAG) && modified(stored).is_none(),
        },
    }
}

/// Updates a stored response's header fields from a 304 (RFC 9111 §4.3.4, §3.2).
///
/// §3.2: each field in the 304 replaces all stored lines of the same name; stored fields the
/// 304 omits are kept. Never taken from the 304: Content-Length (§3.2 names it), the fields
/// this cache's stored body depends on (Content-Encoding, Content-Range, Transfer-Encoding:
/// §3.2 lets a cache keep "header fields that the cache's stored response depends upon"), and
/// hop-by-hop fields, which §3.1 excepts from storage. Nor `Set-Cookie`: a shared cache
/// never keeps one viewer's cookie for the next (§3.2 lets a cache leave a field out; the
/// 304's cookie reaches only the viewer whose request revalidated). Call it only when
/// [`not_modified_selects`] is true.
pub(crate) fn merge_not_modified(stored: &mut HeaderMap, not_modified: &HeaderMap) {
    for name in not_modified.keys() {
        let body_bound = *name == header::CONTENT_LENGTH
            || *name == header::CONTENT_ENCODING
            || *name == header::CONTENT_RANGE
            || *name == header::TRANSFER_ENCODING;
        if body_bound || *name == header::SET_COOKIE || is_hop_by_hop(name, not_modified) {
            continue;
        }
        let mut values = not_modified.get_all(name).iter();
        if let Some(first) = values.next() {
            // `insert` drops every existing line of the field: replacement, not a merge.
            stored.insert(name.clone(), first.clone());
            for value in values {
                stored.append(name.clone(), value.clone());
            }
        }
    }
}

/// Whether `name` is hop-by-hop in a message whose fields are `message` (RFC 9110 §7.6.1):
/// Connection itself, the fields its options name, and the classic hop-by-hop set
/// (Keep-Alive, Proxy-Connection, Proxy-Authenticate, Proxy-Authorization, TE, Trailer,
/// Transfer-Encoding, Upgrade). If `Connection` lists more than [`MAX_CONNECTION_OPTIONS`]
/// options before naming `name`, the answer is `true`: an abusive list taints the whole message.
pub(crate) fn is_hop_by_hop(name: &HeaderName, message: &HeaderMap) -> bool {
    const FIXED: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    // HeaderName is always lowercase, so plain string equality is case-insensitive matching.
    if FIXED.contains(&name.as_str()) {
        return true;
    }
    let mut examined = 0;
    for value in message.get_all(header::CONNECTION) {
        for option in value.as_bytes().split(|&b| b == b',') {
            let option = trim_ows(option);
            if option.is_empty() {
                continue;
            }
            if examined == MAX_CONNECTION_OPTIONS {
                return true;
            }
            examined += 1;
            // §7.6.1: connection options are case-insensitive.
            if option.eq_ignore_ascii_case(name.as_str().as_bytes()) {
                return true;
            }
        }
    }
    false
}

/// Whether `Connection` lists more than [`MAX_CONNECTION_OPTIONS`] options: then which
/// fields are hop-by-hop is not known, and the message is not stored.
pub(crate) fn connection_overflows(message: &HeaderMap) -> bool {
    message
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|value| value.as_bytes().split(|&b| b == b','))
        .filter(|option| !trim_ows(option).is_empty())
        .nth(MAX_CONNECTION_OPTIONS)
        .is_some()
}

/// `"x"` → `W/"x"`; an already weak or malformed tag is returned unchanged.
///
/// For a cache that transforms content (RFC 9110 §8.8.3: a strong tag promises identical
/// bytes, which a transformed representation no longer has).
#[allow(dead_code)] // used by compressed variants
pub(crate) fn weak_etag(etag: &HeaderValue) -> HeaderValue {
    let trimmed = trim_ows(etag.as_bytes());
    match EntityTag::parse(trimmed) {
        Some(tag) if !tag.is_weak() => {
            let mut weak = Vec::with_capacity(trimmed.len() + 2);
            weak.extend_from_slice(b"W/");
            weak.extend_from_slice(trimmed);
            HeaderValue::from_maybe_shared(Bytes::from(weak)).unwrap_or_else(|_| etag.clone())
        }
        _ => etag.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LM: &str = "Sun, 06 Nov 1994 08:49:37 GMT";
    const EARLIER: &str = "Sun, 06 Nov 1994 08:49:36 GMT";
    const LATER: &str = "Sun, 06 Nov 1994 08:49:38 GMT";

    fn hv(s: &str) -> HeaderValue {
        HeaderValue::from_str(s).unwrap()
    }

    fn request(fields: &[(HeaderName, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(name.clone(), hv(value));
        }
        map
    }

    /// Evaluates against a stored response with `ETag: "v1"` and `Last-Modified: LM`.
    fn eval(method: Method, fields: &[(HeaderName, &str)]) -> Precondition {
        evaluate(
            &method,
            &request(fields),
            Some(&hv("\"v1\"")),
            Some(&hv(LM)),
        )
    }

    use header::{IF_MATCH, IF_MODIFIED_SINCE, IF_NONE_MATCH, IF_UNMODIFIED_SINCE};
    use Precondition::{Failed, NotModified, Proceed};

    #[test]
    fn entity_tags_parse_strong_weak_and_reject_junk() {
        let strong = EntityTag::parse(b" \"a,b\" ").unwrap();
        assert!(!strong.is_weak());
        assert_eq!(strong.opaque, b"a,b");
        assert!(EntityTag::parse(b"W/\"x\"").unwrap().is_weak());
        assert_eq!(EntityTag::parse(b"\"\"").unwrap().opaque, b"");
        for bad in [
            &b"x"[..],
            b"\"x",
            b"w/\"x\"",
            b"\"x\"y",
            b"\"a b\"",
            b"W/",
            b"",
        ] {
            assert!(EntityTag::parse(bad).is_none(), "{bad:?}");
        }
    }

    // §8.8.3.2's comparison table.
    #[test]
    fn strong_and_weak_comparison_follow_the_table() {
        let w1 = EntityTag::parse(b"W/\"1\"").unwrap();
        let w2 = EntityTag::parse(b"W/\"2\"").unwrap();
        let s1 = EntityTag::parse(b"\"1\"").unwrap();
        assert!(!w1.strong_eq(&w1) && w1.weak_eq(&w1));
        assert!(!w1.strong_eq(&w2) && !w1.weak_eq(&w2));
        assert!(!w1.strong_eq(&s1) && w1.weak_eq(&s1));
        assert!(s1.strong_eq(&s1) && s1.weak_eq(&s1));
    }

    #[test]
    fn no_preconditions_proceed() {
        assert_eq!(eval(Method::GET, &[]), Proceed);
    }

    // §13.1.1: If-Match uses the strong comparison.
    #[test]
    fn if_match_strong_match_proceeds() {
        assert_eq!(eval(Method::PUT, &[(IF_MATCH, "\"v0\", \"v1\"")]), Proceed);
        assert_eq!(eval(Method::GET, &[(IF_MATCH, "\"v2\"")]), Failed);
    }

    #[test]
    fn if_match_weak_tags_never_match() {
        assert_eq!(eval(Method::PUT, &[(IF_MATCH, "W/\"v1\"")]), Failed);
        let weak_stored = evaluate(
            &Method::PUT,
            &request(&[(IF_MATCH, "\"v1\"")]),
            Some(&hv("W/\"v1\"")),
            None,
        );
        assert_eq!(weak_stored, Failed);
    }

    // §13.1.1: `*` is true when a current representation exists (always, for a stored one).
    #[test]
    fn if_match_star_proceeds_even_without_an_etag() {
        let r = request(&[(IF_MATCH, "*")]);
        assert_eq!(evaluate(&Method::PUT, &r, None, None), Proceed);
    }

    // §13.2.2 step 1 comes first: a failed If-Match is 412 even if If-None-Match would match.
    #[test]
    fn failing_if_match_wins_over_matching_if_none_match() {
        let fields = [(IF_MATCH, "\"nope\""), (IF_NONE_MATCH, "\"v1\"")];
        assert_eq!(eval(Method::GET, &fields), Failed);
    }

    // §13.1.4: If-Unmodified-Since is ignored when If-Match is present.
    #[test]
    fn if_unmodified_since_ignored_when_if_match_present() {
        let fields = [(IF_MATCH, "\"v1\""), (IF_UNMODIFIED_SINCE, EARLIER)];
        assert_eq!(eval(Method::PUT, &fields), Proceed);
    }

    // §13.1.4: modified after the date → 412; at or before → proceed.
    #[test]
    fn if_unmodified_since_compares_with_last_modified() {
        assert_eq!(eval(Method::PUT, &[(IF_UNMODIFIED_SINCE, EARLIER)]), Failed);
        assert_eq!(eval(Method::PUT, &[(IF_UNMODIFIED_SINCE, LM)]), Proceed);
        assert_eq!(eval(Method::PUT, &[(IF_UNMODIFIED_SINCE, LATER)]), Proceed);
    }

    // §13.1.4: invalid dates, lists of dates and a missing Last-Modified are ignored.
    #[test]
    fn if_unmodified_since_ignored_when_invalid_or_unevaluable() {
        assert_eq!(
            eval(Method::PUT, &[(IF_UNMODIFIED_SINCE, "yesterday")]),
            Proceed
        );
        let two_lines = [
            (IF_UNMODIFIED_SINCE, EARLIER),
            (IF_UNMODIFIED_SINCE, EARLIER),
        ];
        assert_eq!(eval(Method::PUT, &two_lines), Proceed);
        let r = request(&[(IF_UNMODIFIED_SINCE, EARLIER)]);
        assert_eq!(evaluate(&Method::PUT, &r, None, None), Proceed);
        assert_eq!(
            evaluate(&Method::PUT, &r, None, Some(&hv("garbage"))),
            Proceed
        );
    }

    // §13.1.2: If-None-Match uses the weak comparison; a match is 304 for GET/HEAD.
    #[test]
    fn if_none_match_weak_match_is_not_modified_for_get_and_head() {
        assert_eq!(
            eval(Method::GET, &[(IF_NONE_MATCH, "W/\"v1\"")]),
            NotModified
        );
        assert_eq!(
            eval(Method::HEAD, &[(IF_NONE_MATCH, "\"v1\"")]),
            NotModified
        );
        assert_eq!(eval(Method::GET, &[(IF_NONE_MATCH, "\"v2\"")]), Proceed);
    }

    // §13.2.2 step 3: a false If-None-Match for other methods is 412.
    #[test]
    fn if_none_match_match_for_other_methods_is_failed() {
        assert_eq!(eval(Method::POST, &[(IF_NONE_MATCH, "\"v1\"")]), Failed);
        assert_eq!(eval(Method::PUT, &[(IF_NONE_MATCH, "*")]), Failed);
    }

    // §13.1.2: `*` matches any current representation.
    #[test]
    fn if_none_match_star_matches() {
        assert_eq!(eval(Method::GET, &[(IF_NONE_MATCH, "*")]), NotModified);
        let r = request(&[(IF_NONE_MATCH, "*")]);
        assert_eq!(evaluate(&Method::GET, &r, None, None), NotModified);
    }

    // §5.3: several field lines form one list.
    #[test]
    fn if_none_match_lines_are_combined() {
        let fields = [(IF_NONE_MATCH, "\"a\", \"b\""), (IF_NONE_MATCH, "\"v1\"")];
        assert_eq!(eval(Method::GET, &fields), NotModified);
    }

    #[test]
    fn lists_tolerate_junk_members() {
        let fields = [(IF_NONE_MATCH, "junk, \"x\"y, ,, \"v1\"")];
        assert_eq!(eval(Method::GET, &fields), NotModified);
        assert_eq!(eval(Method::GET, &[(IF_NONE_MATCH, "v1, \"v1")]), Proceed);
        assert_eq!(eval(Method::PUT, &[(IF_MATCH, "")]), Failed);
        // An opaque-tag may contain commas.
        let r = request(&[(IF_NONE_MATCH, "\"a,b\"")]);
        assert_eq!(
            evaluate(&Method::GET, &r, Some(&hv("\"a,b\"")), None),
            NotModified
        );
    }

    // §13.2.2 steps 3-4 / §13.1.3: If-Modified-Since is ignored when If-None-Match is present.
    #[test]
    fn if_none_match_wins_over_if_modified_since() {
        let fields = [(IF_NONE_MATCH, "\"other\""), (IF_MODIFIED_SINCE, LATER)];
        assert_eq!(eval(Method::GET, &fields), Proceed);
    }

    // §13.1.3: not modified when Last-Modified is earlier than or equal to the date.
    #[test]
    fn if_modified_since_compares_with_last_modified() {
        assert_eq!(eval(Method::GET, &[(IF_MODIFIED_SINCE, LM)]), NotModified);
        assert_eq!(
            eval(Method::HEAD, &[(IF_MODIFIED_SINCE, LATER)]),
            NotModified
        );
        assert_eq!(eval(Method::GET, &[(IF_MODIFIED_SINCE, EARLIER)]), Proceed);
    }

    // §13.1.3: ignored for methods other than GET and HEAD.
    #[test]
    fn if_modified_since_ignored_for_post() {
        assert_eq!(eval(Method::POST, &[(IF_MODIFIED_SINCE, LATER)]), Proceed);
    }

    // §13.1.3: invalid dates and lists are ignored; no Last-Modified means it can't be evaluated.
    #[test]
    fn if_modified_since_ignored_when_invalid_or_unevaluable() {
        assert_eq!(
            eval(Method::GET, &[(IF_MODIFIED_SINCE, "not a date")]),
            Proceed
        );
        assert_eq!(
            eval(
                Method::GET,
                &[(
                    IF_MODIFIED_SINCE,
                    "Sun, 06 Nov 1994 08:49:37 GMT, Sun, 06 Nov 1994 08:49:37 GMT"
                )]
            ),
            Proceed
        );
        let two_lines = [(IF_MODIFIED_SINCE, LATER), (IF_MODIFIED_SINCE, LATER)];
        assert_eq!(eval(Method::GET, &two_lines), Proceed);
        let r = request(&[(IF_MODIFIED_SINCE, LATER)]);
        assert_eq!(
            evaluate(&Method::GET, &r, Some(&hv("\"v1\"")), None),
            Proceed
        );
    }

    // §13.2.1: CONNECT, OPTIONS and TRACE ignore preconditions.
    #[test]
    fn options_ignores_preconditions() {
        assert_eq!(eval(Method::OPTIONS, &[(IF_MATCH, "\"nope\"")]), Proceed);
    }

    #[test]
    fn huge_lists_are_bounded_and_count_as_no_match() {
        let mut tags = vec!["\"x\""; 10_000].join(", ");
        tags.push_str(", \"v1\"");
        assert_eq!(eval(Method::GET, &[(IF_NONE_MATCH, &tags)]), Proceed);
        assert_eq!(eval(Method::PUT, &[(IF_MATCH, &tags)]), Failed);
        // Within the bound, a match still counts.
        let mut short = vec!["\"x\""; MAX_LIST_MEMBERS - 1].join(", ");
        short.push_str(", \"v1\"");
        assert_eq!(eval(Method::GET, &[(IF_NONE_MATCH, &short)]), NotModified);
    }

    fn stored_response() -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in [
            ("content-type", "text/html"),
            ("content-length", "1234"),
            ("content-encoding", "gzip"),
            ("content-location", "/index.html"),
            ("date", LM),
            ("etag", "\"v1\""),
            ("last-modified", LM),
            ("vary", "Accept-Encoding"),
            ("vary", "Accept-Language"),
            ("cache-control", "max-age=60"),
            ("cache-control", "public"),
            ("expires", LATER),
            ("x-custom", "kept"),
        ] {
            map.append(HeaderName::from_static(name), hv(value));
        }
        map
    }

    // §15.4.5: the 304 carries Content-Location, Date, ETag, Vary, Cache-Control, Expires.
    #[test]
    fn not_modified_carries_the_15_4_5_fields() {
        let h = not_modified_headers(&stored_response());
        let mut names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "cache-control",
                "content-location",
                "date",
                "etag",
                "expires",
                "vary"
            ]
        );
        assert_eq!(h.get_all("vary").iter().count(), 2);
        assert_eq!(h.get_all("cache-control").iter().count(), 2);
    }

    // §15.4.5: Last-Modified only helps cache updates when there is no ETag.
    #[test]
    fn not_modified_carries_last_modified_only_without_etag() {
        let mut stored = stored_response();
        stored.remove(header::ETAG);
        let h = not_modified_headers(&stored);
        assert_eq!(h.get(header::LAST_MODIFIED).unwrap(), LM);
        assert!(h.get(header::CONTENT_LENGTH).is_none());
    }

    // RFC 9111 §3.2: 304 fields replace stored ones; omitted fields are kept.
    #[test]
    fn merge_replaces_present_fields_and_keeps_omitted_ones() {
        let mut stored = stored_response();
        let nm = request(&[
            (header::CACHE_CONTROL, "max-age=300"),
            (header::DATE, LATER),
            (HeaderName::from_static("x-new"), "1"),
        ]);
        merge_not_modified(&mut stored, &nm);
        let cc: Vec<_> = stored.get_all(header::CACHE_CONTROL).iter().collect();
        assert_eq!(cc, [&hv("max-age=300")]);
        assert_eq!(stored.get(header::DATE).unwrap(), LATER);
        assert_eq!(stored.get("x-new").unwrap(), "1");
        assert_eq!(stored.get("x-custom").unwrap(), "kept");
        assert_eq!(stored.get_all(header::VARY).iter().count(), 2);
        assert_eq!(stored.get(header::CONTENT_TYPE).unwrap(), "text/html");
    }

    // RFC 9111 §3.2: a cache may leave a field out; a shared one never keeps a cookie.
    #[test]
    fn merge_never_takes_set_cookie() {
        let mut stored = stored_response();
        let nm = request(&[
            (header::SET_COOKIE, "session=viewer-a"),
            (header::CACHE_CONTROL, "max-age=300"),
        ]);
        merge_not_modified(&mut stored, &nm);
        assert!(stored.get(header::SET_COOKIE).is_none());
        assert_eq!(stored.get(header::CACHE_CONTROL).unwrap(), "max-age=300");
    }

    #[test]
    fn a_connection_list_past_the_bound_overflows() {
        let at = vec!["x"; MAX_CONNECTION_OPTIONS].join(", ");
        let over = format!("{at}, y");
        assert!(!connection_overflows(&request(&[(
            header::CONNECTION,
            &at
        )])));
        assert!(connection_overflows(&request(&[(
            header::CONNECTION,
            &over
        )])));
        let split = request(&[(header::CONNECTION, &at), (header::CONNECTION, "z")]);
        assert!(connection_overflows(&split));
        assert!(!connection_overflows(&request(&[(
            header::CONNECTION,
            " , ,"
        )])));
    }

    // RFC 9111 §3.2 (Content-Length, fields the stored body depends on) and §3.1 (hop-by-hop).
    #[test]
    fn merge_never_takes_length_coding_or_hop_by_hop_fields() {
        let mut stored = stored_response();
        let nm = request(&[
            (header::CONTENT_LENGTH, "0"),
            (header::CONTENT_ENCODING, "br"),
            (header::CONTENT_RANGE, "bytes 0-0/1"),
            (header::TRANSFER_ENCODING, "chunked"),
            (header::CONNECTION, "close, X-Hop"),
            (HeaderName::from_static("x-hop"), "1"),
            (HeaderName::from_static("keep-alive"), "timeout=5"),
            (HeaderName::from_static("proxy-connection"), "keep-alive"),
            (header::PROXY_AUTHENTICATE, "Basic"),
            (header::PROXY_AUTHORIZATION, "Basic x"),
            (header::TE, "trailers"),
            (header::TRAILER, "x"),
            (header::UPGRADE, "h2c"),
            (header::ETAG, "\"v1\""),
        ]);
        let before = stored.len();
        merge_not_modified(&mut stored, &nm);
        assert_eq!(stored.len(), before);
        assert_eq!(stored.get(header::CONTENT_LENGTH).unwrap(), "1234");
        assert_eq!(stored.get(header::CONTENT_ENCODING).unwrap(), "gzip");
        for name in [
            "content-range",
            "transfer-encoding",
            "connection",
            "x-hop",
            "keep-alive",
            "upgrade",
            "te",
        ] {
            assert!(stored.get(name).is_none(), "{name}");
        }
    }

    #[test]
    fn overlong_connection_list_taints_every_field() {
        let options = vec!["x-a"; MAX_CONNECTION_OPTIONS + 1].join(", ");
        let nm = request(&[(header::CONNECTION, &options), (header::DATE, LATER)]);
        assert!(is_hop_by_hop(&header::DATE, &nm));
        let short = request(&[(header::CONNECTION, "X-A, x-b")]);
        assert!(is_hop_by_hop(&HeaderName::from_static("x-b"), &short));
        assert!(!is_hop_by_hop(&header::DATE, &short));
    }

    // RFC 9111 §4.3.4: which 304s may update the stored response.
    #[test]
    fn not_modified_selects_by_validator() {
        let stored = stored_response();
        let with = |name: HeaderName, v: &str| request(&[(name, v)]);
        assert!(not_modified_selects(&stored, &with(header::ETAG, "\"v1\"")));
        assert!(not_modified_selects(
            &stored,
            &with(header::ETAG, "W/\"v1\"")
        ));
        assert!(!not_modified_selects(
            &stored,
            &with(header::ETAG, "\"v2\"")
        ));
        assert!(not_modified_selects(
            &stored,
            &with(header::LAST_MODIFIED, LM)
        ));
        assert!(!not_modified_selects(
            &stored,
            &with(header::LAST_MODIFIED, LATER)
        ));
        assert!(!not_modified_selects(&stored, &HeaderMap::new()));
        let bare = request(&[(header::DATE, LM)]);
        assert!(not_modified_selects(&bare, &HeaderMap::new()));
        let mut weak_stored = stored.clone();
        weak_stored.insert(header::ETAG, hv("W/\"v1\""));
        assert!(!not_modified_selects(
            &weak_stored,
            &with(header::ETAG, "\"v1\"")
        ));
    }

    #[test]
    fn weak_etag_marks_strong_tags_only() {
        assert_eq!(weak_etag(&hv("\"x\"")), "W/\"x\"");
        assert_eq!(weak_etag(&hv("W/\"x\"")), "W/\"x\"");
        assert_eq!(weak_etag(&hv("garbage")), "garbage");
    }

    proptest! {
        // Arbitrary field values: no panic, and the invariants that hold whatever the input.
        #[test]
        fn evaluate_never_panics(
            a in any::<String>(),
            b in proptest::collection::vec(any::<u8>(), 0..64),
            method in prop_oneof![Just(Method::GET), Just(Method::PUT)],
        ) {
            let mut map = HeaderMap::new();
            let values: Vec<HeaderValue> = [HeaderValue::from_str(&a).ok(), HeaderValue::from_bytes(&b).ok()]
                .into_iter()
                .flatten()
                .collect();
            for v in &values {
                for name in [IF_MATCH, IF_NONE_MATCH, IF_MODIFIED_SINCE, IF_UNMODIFIED_SINCE, header::CONNECTION] {
                    map.append(name, v.clone());
                }
            }
            for v in &values {
                let decision = evaluate(&method, &map, Some(v), Some(v));
                // §13.2.2: 304 only answers GET and HEAD.
                if method != Method::GET {
                    prop_assert_ne!(decision, NotModified);
                }
                // §13.2.1: OPTIONS ignores every precondition.
                prop_assert_eq!(evaluate(&Method::OPTIONS, &map, Some(v), Some(v)), Proceed);
                // A tag made weak is the same tag with `W/` (§8.8.3); anything else unchanged.
                let weak = weak_etag(v);
                match EntityTag::parse(v.as_bytes()) {
                    Some(tag) if !tag.is_weak() => {
                        let parsed = EntityTag::parse(weak.as_bytes());
                        prop_assert!(parsed.is_some_and(|w| w.is_weak() && w.weak_eq(&tag)));
                    }
                    _ => prop_assert_eq!(&weak, v),
                }
            }
            let mut stored = HeaderMap::new();
            stored.insert(header::DATE, hv(LM));
            // The 304 carries no validator and neither does the stored response (§4.3.4).
            prop_assert!(not_modified_selects(&stored, &map));
            merge_not_modified(&mut stored, &map);
            // §3.1/§7.6.1: hop-by-hop `Connection` is never stored; Date, absent from the
            // 304, is kept.
            prop_assert!(!stored.contains_key(header::CONNECTION));
            prop_assert_eq!(stored.get(header::DATE), Some(&hv(LM)));
        }

        // RFC 9110 §13.2.2: the decision for arbitrary entity-tag lists and dates equals the
        // reference model, steps in order, with strong comparison for If-Match and weak for
        // If-None-Match (§8.8.3.2).
        #[test]
        fn evaluate_matches_the_reference_model(
            stored_etag in proptest::option::of(tag_text()),
            stored_lm in proptest::option::of(date_text()),
            if_match in proptest::option::of(list_text()),
            if_unmodified_since in proptest::option::of(date_lines()),
            if_none_match in proptest::option::of(list_text()),
            if_modified_since in proptest::option::of(date_lines()),
            method in prop_oneof![
                Just(Method::GET), Just(Method::HEAD), Just(Method::PUT),
                Just(Method::POST), Just(Method::DELETE), Just(Method::OPTIONS),
            ],
        ) {
            let mut request = HeaderMap::new();
            if let Some(list) = &if_match {
                request.append(IF_MATCH, hv(list));
            }
            for date in if_unmodified_since.iter().flatten() {
                request.append(IF_UNMODIFIED_SINCE, hv(date));
            }
            if let Some(list) = &if_none_match {
                request.append(IF_NONE_MATCH, hv(list));
            }
            for date in if_modified_since.iter().flatten() {
                request.append(IF_MODIFIED_SINCE, hv(date));
            }
            let etag = stored_etag.as_deref().map(hv);
            let lm = stored_lm.as_deref().map(hv);
            let expected = model(
                &method,
                stored_etag.as_deref(),
                stored_lm.as_deref(),
                if_match.as_deref(),
                if_unmodified_since.as_deref(),
                if_none_match.as_deref(),
                if_modified_since.as_deref(),
            );
            prop_assert_eq!(evaluate(&method, &request, etag.as_ref(), lm.as_ref()), expected);
        }

        // §8.8.3.2's table for arbitrary tag pairs: strong equality needs both strong and the
        // same opaque-tag; weak equality only the same opaque-tag.
        #[test]
        fn comparison_functions_follow_8_8_3_2(a in tag_text(), b in tag_text()) {
            let (ta, tb) = (EntityTag::parse(a.as_bytes()), EntityTag::parse(b.as_bytes()));
            match (model_tag(&a), model_tag(&b)) {
                (Some((wa, oa)), Some((wb, ob))) => {
                    let (ta, tb) = (ta.unwrap(), tb.unwrap());
                    prop_assert_eq!(ta.strong_eq(&tb), !wa && !wb && oa == ob);
                    prop_assert_eq!(ta.weak_eq(&tb), oa == ob);
                    prop_assert_eq!(ta.strong_eq(&tb), tb.strong_eq(&ta));
                }
                (ma, mb) => {
                    prop_assert_eq!(ta.is_some(), ma.is_some());
                    prop_assert_eq!(tb.is_some(), mb.is_some());
                }
            }
        }

        #[test]
        fn quoted_tags_round_trip_through_lists(tags in proptest::collection::vec("[!#-~]{0,8}", 1..8), pick in any::<prop::sample::Index>()) {
            let list = tags.iter().map(|t| format!("\"{t}\"")).collect::<Vec<_>>().join(" ,");
            let wanted = format!("\"{}\"", tags[pick.index(tags.len())]);
            let r = request(&[(IF_NONE_MATCH, &list)]);
            prop_assert_eq!(evaluate(&Method::GET, &r, Some(&hv(&wanted)), None), NotModified);
        }
    }

    /// One instant in the three HTTP-date forms (RFC 9110 §5.6.7), its neighbours, and junk.
    const DATES: [(&str, Option<i8>); 6] = [
        (EARLIER, Some(-1)),
        (LM, Some(0)),
        ("Sunday, 06-Nov-94 08:49:37 GMT", Some(0)),
        ("Sun Nov  6 08:49:37 1994", Some(0)),
        (LATER, Some(1)),
        ("yesterday", None),
    ];

    /// The model's reading of a date: its offset from `LM` in seconds, `None` if invalid.
    fn model_date(text: &str) -> Option<i8> {
        DATES.iter().find(|(t, _)| *t == text).and_then(|(_, d)| *d)
    }

    fn date_text() -> impl Strategy<Value = String> {
        (0..DATES.len()).prop_map(|i| DATES[i].0.to_owned())
    }

    /// One line usually; two lines now and then (a list, which §13.1.3/§13.1.4 ignore).
    fn date_lines() -> impl Strategy<Value = Vec<String>> {
        prop_oneof![
            4 => date_text().prop_map(|d| vec![d]),
            1 => proptest::collection::vec(date_text(), 2..3),
        ]
    }

    /// An entity-tag (strong or weak) over a tiny alphabet, so equal tags are common, or junk.
    fn tag_text() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => "\"[ab]{0,2}\"",
            4 => "W/\"[ab]{0,2}\"",
            1 => prop_oneof![Just("junk"), Just("w/\"a\""), Just("\"a"), Just("\"a\"x")]
                .prop_map(str::to_owned),
        ]
    }

    /// A list of members: tags, `*` now and then, junk; joined with ", " or on one line.
    fn list_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            prop_oneof![8 => tag_text(), 1 => Just("*".to_owned())],
            1..5,
        )
        .prop_map(|members| members.join(", "))
    }

    /// A model entity-tag: `(weak, opaque-tag)`.
    type ModelTag<'a> = (bool, &'a str);

    /// `(weak, opaque)` of a well-formed tag from [`tag_text`], `None` for junk.
    fn model_tag(text: &str) -> Option<ModelTag<'_>> {
        let (weak, rest) = match text.strip_prefix("W/") {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        let opaque = rest.strip_prefix('"')?.strip_suffix('"')?;
        (!opaque.contains('"')).then_some((weak, opaque))
    }

    /// RFC 9110 §13.2.2 steps 1-4 as written, over the model's tags and dates.
    fn model(
        method: &Method,
        etag: Option<&str>,
        last_modified: Option<&str>,
        if_match: Option<&str>,
        if_unmodified_since: Option<&[String]>,
        if_none_match: Option<&str>,
        if_modified_since: Option<&[String]>,
    ) -> Precondition {
        if *method == Method::OPTIONS {
            return Proceed; // §13.2.1
        }
        let current = etag.and_then(model_tag);
        let lm = last_modified.and_then(model_date);
        let any_member = |list: &str, eq: &dyn Fn(ModelTag<'_>, ModelTag<'_>) -> bool| {
            list.split(", ").any(|m| {
                m == "*" || matches!((model_tag(m), current), (Some(t), Some(c)) if eq(t, c))
            })
        };
        // §13.1.3/§13.1.4: one valid HTTP-date, else the field is ignored.
        let single = |lines: Option<&[String]>| match lines {
            Some([one]) => model_date(one),
            _ => None,
        };
        let strong = |(wa, oa): ModelTag<'_>, (wb, ob): ModelTag<'_>| !wa && !wb && oa == ob;
        let weak = |(_, oa): ModelTag<'_>, (_, ob): ModelTag<'_>| oa == ob;
        // Step 1, else step 2.
        if let Some(list) = if_match {
            if !any_member(list, &strong) {
                return Failed;
            }
        } else if let (Some(since), Some(lm)) = (single(if_unmodified_since), lm) {
            if lm > since {
                return Failed;
            }
        }
        let get_or_head = *method == Method::GET || *method == Method::HEAD;
        // Step 3, else step 4.
        if let Some(list) = if_none_match {
            if any_member(list, &weak) {
                return if get_or_head { NotModified } else { Failed };
            }
        } else if get_or_head {
            if let (Some(since), Some(lm)) = (single(if_modified_since), lm) {
                if lm <= since {
                    return NotModified;
                }
            }
        }
        Proceed
    }
}
