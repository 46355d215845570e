//! `Cache-Control` directives (RFC 9111 §5.2), parsed tolerantly from every field line.

use http::header::{HeaderMap, HeaderName, CACHE_CONTROL, PRAGMA};

/// RFC 9111 §1.2.2: a delta-seconds too large to represent is taken as 2^31.
pub(crate) const DELTA_SECONDS_MAX: u64 = 2_147_483_648;

/// At most this many directives are read across all lines. Past it the rest is only scanned
/// for `private`, `no-store` and `no-cache`, and the parse is marked
/// [`overflowed`](CacheControl::overflowed): a response whose directives were not all read is
/// not stored.
pub(crate) const MAX_DIRECTIVES: usize = 64;

/// `max-stale` in a request (RFC 9111 §5.2.1.2): any staleness, or up to a number of seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MaxStale {
    Any,
    Seconds(u64),
}

/// The directives a shared cache acts on. Unknown directives are ignored (§5.2.3).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CacheControl {
    pub(crate) max_age: Option<u64>,
    pub(crate) s_maxage: Option<u64>,
    pub(crate) max_stale: Option<MaxStale>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
    /// Unqualified `no-cache`.
    pub(crate) no_cache: bool,
    /// Field names of a qualified `no-cache="a, b"` (§5.2.2.4).
    pub(crate) no_cache_fields: Vec<HeaderName>,
    pub(crate) no_store: bool,
    pub(crate) no_transform: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) public: bool,
    /// Unqualified `private`.
    pub(crate) private: bool,
    /// Field names of a qualified `private="a, b"` (§5.2.2.7).
    pub(crate) private_fields: Vec<HeaderName>,
    pub(crate) immutable: bool,
    /// More than [`MAX_DIRECTIVES`] directives: what follows the bound was read only for
    /// the directives that forbid storing or sharing.
    pub(crate) overflowed: bool,
}

impl CacheControl {
    /// Parses all `Cache-Control` lines of `headers`. Never fails: malformed members are skipped.
    ///
    /// A duplicated or invalid `max-age` / `s-maxage` makes the response stale (value 0), as
    /// RFC 9111 §4.2.1 allows ("either the first occurrence should be used or the response
    /// should be considered stale"); the stale reading is the safe one for a shared cache.
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        Self::parse_lines(headers, &CACHE_CONTROL)
    }

    /// Parses a targeted field such as `CDN-Cache-Control` (RFC 9213): `None` when it is
    /// absent or holds no directive this cache knows (not a "valid, non-empty value").
    pub(crate) fn parse_field(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        if !headers.contains_key(name) {
            return None;
        }
        let cc = Self::parse_lines(headers, name);
        (cc != CacheControl::default()).then_some(cc)
    }

    fn parse_lines(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut cc = CacheControl::default();
        let mut seen = 0;
        for line in headers.get_all(name) {
            for (name, value) in Directives::new(line.as_bytes()) {
                seen += 1;
                if seen > MAX_DIRECTIVES {
                    cc.overflowed = true;
                    cc.apply_restrictive(name, value);
                } else {
                    cc.apply(name, value);
                }
            }
        }
        cc
    }

    /// Past the bound: only the unqualified directives that forbid storing, sharing or
    /// reusing without revalidation, compared without allocating.
    fn apply_restrictive(&mut self, name: &[u8], value: Option<Value<'_>>) {
        if value.is_some() {
            // Qualified `private="…"` / `no-cache="…"` name fields; the overflow already
            // keeps the response from being stored.
            return;
        }
        if name.eq_ignore_ascii_case(b"private") {
            self.private = true;
        } else if name.eq_ignore_ascii_case(b"no-store") {
            self.no_store = true;
        } else if name.eq_ignore_ascii_case(b"no-cache") {
            self.no_cache = true;
        }
    }

    /// Parses a request's directives; `Pragma: no-cache` counts as `no-cache` only when there is
    /// no `Cache-Control` field (RFC 9111 §5.4).
    pub(crate) fn parse_request(headers: &HeaderMap) -> Self {
        let mut cc = Self::parse(headers);
        if !headers.contains_key(CACHE_CONTROL) {
            cc.no_cache = headers.get_all(PRAGMA).iter().any(|v| {
                Directives::new(v.as_bytes()).any(|(n, _)| n.eq_ignore_ascii_case(b"no-cache"))
            });
        }
        cc
    }

    /// True when the response may not be served stale by a shared cache (RFC 9111 §4.2.4,
    /// §5.2.2.2, §5.2.2.8, §5.2.2.10).
    pub(crate) fn forbids_stale(&self) -> bool {
        self.must_revalidate || self.proxy_revalidate || self.s_maxage.is_some() || self.no_cache
    }

    fn apply(&mut self, name: &[u8], value: Option<Value<'_>>) {
        let lower = |s: &[u8]| -> Option<&'static str> {
            DIRECTIVES
                .iter()
                .copied()
                .find(|d| d.as_bytes().eq_ignore_ascii_case(s))
        };
        let Some(name) = lower(name) else { return };
        match name {
            "max-age" => self.max_age = seconds_once(self.max_age, value),
            "s-maxage" => self.s_maxage = seconds_once(self.s_maxage, value),
            "min-fresh" => self.min_fresh = seconds_once(self.min_fresh, value).or(Some(0)),
            "stale-while-revalidate" => {
                self.stale_while_revalidate = value.and_then(|v| delta_seconds(v.text()))
            }
            "stale-if-error" => self.stale_if_error = value.and_then(|v| delta_seconds(v.text())),
            "max-stale" => {
                self.max_stale = Some(match value {
                    None => MaxStale::Any,
                    // An invalid value accepts no staleness at all: the strict reading.
                    Some(v) => MaxStale::Seconds(delta_seconds(v.text()).unwrap_or(0)),
                })
            }
            "no-cache" => match value {
                Some(v) => self.no_cache_fields.extend(field_names(v.text())),
                None => self.no_cache = true,
            },
            "private" => match value {
                Some(v) => self.private_fields.extend(field_names(v.text())),
                None => self.private = true,
            },
            "no-store" => self.no_store = true,
            "no-transform" => self.no_transform = true,
            "only-if-cached" => self.only_if_cached = true,
            "must-revalidate" => self.must_revalidate = true,
            "proxy-revalidate" => self.proxy_revalidate = true,
            "must-understand" => self.must_understand = true,
            "public" => self.public = true,
            "immutable" => self.immutable = true,
            _ => {}
        }
    }
}

const DIRECTIVES: &[&str] = &[
    "max-age",
    "s-maxage",
    "min-fresh",
    "max-stale",
    "stale-while-revalidate",
    "stale-if-error",
    "no-cache",
    "private",
    "no-store",
    "no-transform",
    "only-if-cached",
    "must-revalidate",
    "proxy-revalidate",
    "must-understand",
    "public",
    "immutable",
];

/// The first occurrence of a seconds directive wins only when repeats agree; a repeat with
/// another value, or an invalid value, reads as 0 (stale).
fn seconds_once(previous: Option<u64>, value: Option<Value<'_>>) -> Option<u64> {
    let parsed = value.and_then(|v| delta_seconds(v.text())).unwrap_or(0);
    match previous {
        Some(p) if p != parsed => Some(0),
        _ => Some(parsed),
    }
}

/// `delta-seconds = 1*DIGIT` (RFC 9111 §1.2.2), saturating at 2^31.
pub(crate) fn delta_seconds(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mut n: u64 = 0;
    for d in text {
        n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
        if n >= DELTA_SECONDS_MAX {
            return Some(DELTA_SECONDS_MAX);
        }
    }
    Some(n)
}

fn field_names(text: &[u8]) -> impl Iterator<Item = HeaderName> + '_ {
    text.split(|b| *b == b',')
        .filter_map(|name| HeaderName::from_bytes(name.trim_ascii()).ok())
}

/// A directive's argument: a token or the inside of a quoted-string (escapes kept verbatim).
#[derive(Clone, Copy)]
struct Value<'a>(&'a [u8]);

impl<'a> Value<'a> {
    fn text(self) -> &'a [u8] {
        self.0
    }
}

/// Iterator over `name[=value]` members of one field line. Commas inside quoted strings do
/// not split members; junk between members is skipped.
struct Directives<'a> {
    rest: &'a [u8],
}

impl<'a> Directives<'a> {
    fn new(line: &'a [u8]) -> Self {
        Self { rest: line }
    }
}

impl<'a> Iterator for Directives<'a> {
    type Item = (&'a [u8], Option<Value<'a>>);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let s = self.rest;
            let start = s.iter().position(|b| !matches!(b, b',' | b' ' | b'\t'))?;
            let s = &s[start..];
            let name_end = s
                .iter()
                .position(|b| matches!(b, b'=' | b',' | b' ' | b'\t' | b';'))
                .unwrap_or(s.len());
            let name = &s[..name_end];
            let mut after = &s[name_end..];
            let trimmed = after.trim_ascii_start();
            let mut value = None;
            if let Some(v) = trimmed.strip_prefix(b"=") {
                let v = v.trim_ascii_start();
                if let Some(q) = v.strip_prefix(b"\"") {
                    let end = closing_quote(q);
                    value = Some(Value(&q[..end]));
                    after = q.get(end + 1..).unwrap_or(&[]);
                } else {
                    let end = v
                        .iter()
                        .position(|b| matches!(b, b',' | b' ' | b'\t' | b';'))
                        .unwrap_or(v.len());
                    value = Some(Value(&v[..end]));
                    after = &v[end..];
                }
            }
            // Skip anything up to the next comma (parameters, junk).
            self.rest = match after.iter().position(|b| *b == b',') {
                Some(i) => &after[i + 1..],
                None => &[],
            };
            if !name.is_empty() {
                return Some((name, value));
            }
        }
    }
}

/// Index of the closing quote of a quoted-string body, honouring `\` escapes; the length of
/// the input when it is unterminated.
fn closing_quote(s: &[u8]) -> usize {
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i,
            _ => i += 1,
        }
    }
    s.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn cc(lines: &[&str]) -> CacheControl {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, HeaderValue::from_str(l).unwrap());
        }
        CacheControl::parse(&h)
    }

    #[test]
    fn names_are_case_insensitive() {
        let c = cc(&["Max-Age=60, S-MAXAGE=30, Public"]);
        assert_eq!(c.max_age, Some(60));
        assert_eq!(c.s_maxage, Some(30));
        assert!(c.public);
    }

    #[test]
    fn directives_across_lines_combine() {
        let c = cc(&["public", "max-age=5"]);
        assert!(c.public);
        assert_eq!(c.max_age, Some(5));
    }

    #[test]
    fn quoted_strings_are_not_directives() {
        // §5.2: a comma or directive name inside a quoted-string is part of the argument.
        let c = cc(&[r#"private="x-a, no-store", max-age=10"#]);
        assert!(!c.no_store);
        assert!(!c.private);
        assert_eq!(c.private_fields, vec!["x-a", "no-store"]);
        assert_eq!(c.max_age, Some(10));
    }

    #[test]
    fn quoted_max_age_is_accepted() {
        // §5.2: senders should use the token form, but recipients accept both.
        assert_eq!(cc(&[r#"max-age="30""#]).max_age, Some(30));
    }

    #[test]
    fn invalid_max_age_reads_as_stale() {
        assert_eq!(cc(&["max-age=abc"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=-1"]).max_age, Some(0));
        assert_eq!(cc(&["max-age"]).max_age, Some(0));
    }

    #[test]
    fn conflicting_duplicate_max_age_reads_as_stale() {
        // §4.2.1: duplicates may be treated as stale.
        assert_eq!(cc(&["max-age=60", "max-age=120"]).max_age, Some(0));
        assert_eq!(cc(&["max-age=60, max-age=60"]).max_age, Some(60));
    }

    #[test]
    fn huge_delta_seconds_saturates_at_two_pow_31() {
        // §1.2.2
        let c = cc(&["max-age=99999999999999999999999999999999"]);
        assert_eq!(c.max_age, Some(DELTA_SECONDS_MAX));
    }

    #[test]
    fn unknown_directives_and_junk_are_ignored() {
        let c = cc(&[",,, foo=bar; x, =, \"no-store\", max-age=3 ;ext, ~~~"]);
        assert_eq!(c.max_age, Some(3));
        assert!(!c.no_store);
    }

    #[test]
    fn max_stale_without_value_means_any() {
        assert_eq!(cc(&["max-stale"]).max_stale, Some(MaxStale::Any));
        assert_eq!(cc(&["max-stale=9"]).max_stale, Some(MaxStale::Seconds(9)));
    }

    #[test]
    fn pragma_no_cache_only_without_cache_control() {
        // RFC 9111 §5.4
        let mut h = HeaderMap::new();
        h.insert(PRAGMA, HeaderValue::from_static("no-cache"));
        assert!(CacheControl::parse_request(&h).no_cache);
        h.insert(CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
        assert!(!CacheControl::parse_request(&h).no_cache);
    }

    #[test]
    fn directives_past_the_bound_are_read_only_for_restrictions() {
        // A hostile list is not read in full, but what forbids storing is still seen.
        let line = "x, ".repeat(10_000) + "no-store, max-age=5";
        let c = cc(&[&line]);
        assert!(c.overflowed);
        assert!(c.no_store);
        assert_eq!(c.max_age, None);
    }

    #[test]
    fn private_after_the_bound_is_seen_and_marks_overflow() {
        // RFC 9111 §5.2.2.7: `private` anywhere in the field forbids a shared cache to store.
        let line = format!("max-age=60, {}private", "ext, ".repeat(MAX_DIRECTIVES));
        let c = cc(&[&line]);
        assert_eq!(c.max_age, Some(60));
        assert!(c.private);
        assert!(c.overflowed);
    }

    #[test]
    fn no_cache_on_a_later_line_past_the_bound_is_seen() {
        let many = "a, ".repeat(MAX_DIRECTIVES);
        let c = cc(&["public, max-age=60", &many, "No-Cache"]);
        assert!(c.no_cache);
        assert!(c.overflowed);
    }

    #[test]
    fn exactly_the_bound_is_not_an_overflow() {
        let line = vec!["ext"; MAX_DIRECTIVES - 1].join(", ") + ", private";
        let c = cc(&[&line]);
        assert!(c.private);
        assert!(!c.overflowed);
    }

    #[test]
    fn qualified_directives_past_the_bound_do_not_read_as_unqualified() {
        let line = "x, ".repeat(MAX_DIRECTIVES) + "private=\"set-cookie\", no-cache=\"a\"";
        let c = cc(&[&line]);
        assert!(c.overflowed);
        assert!(!c.private && !c.no_cache);
    }

    #[test]
    fn an_overflowing_targeted_field_is_still_used() {
        // RFC 9213: the targeted field governs; an overflow must reach the storage decision.
        let mut h = HeaderMap::new();
        let line = "x, ".repeat(MAX_DIRECTIVES + 1);
        h.insert("cdn-cache-control", HeaderValue::from_str(&line).unwrap());
        let name = HeaderName::from_static("cdn-cache-control");
        assert!(CacheControl::parse_field(&h, &name).is_some_and(|c| c.overflowed));
    }

    #[test]
    fn unterminated_quote_does_not_panic() {
        let c = cc(&["private=\"abc, max-age=4"]);
        assert!(c.max_age.is_none());
    }

    #[test]
    fn qualified_no_cache_is_not_unqualified() {
        let c = cc(&["no-cache=\"set-cookie\""]);
        assert!(!c.no_cache);
        assert_eq!(c.no_cache_fields, vec!["set-cookie"]);
    }

    #[test]
    fn forbids_stale_for_shared_cache_directives() {
        assert!(cc(&["must-revalidate"]).forbids_stale());
        assert!(cc(&["proxy-revalidate"]).forbids_stale());
        assert!(cc(&["s-maxage=1"]).forbids_stale());
        assert!(!cc(&["max-age=1"]).forbids_stale());
    }
}
