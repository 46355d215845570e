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

    /// Parses a targeted field of RFC 9213, such as `CDN-Cache-Control`: a Dictionary
    /// structured field (RFC 8941 §3.2) whose lines are combined into one (§4.2). `None` when
    /// it is absent, empty, does not parse, or gives a directive this cache implements a
    /// value of the wrong type (RFC 9213 §2.1): the cache then behaves as if the field were
    /// not there and `Cache-Control` applies. Past [`MAX_DIRECTIVES`] members the field is
    /// not read further and the result is marked [`overflowed`](CacheControl::overflowed),
    /// so the response is not stored: what was not read cannot have allowed it.
    pub(crate) fn parse_targeted(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut lines = headers.get_all(name).iter();
        let first = lines.next()?;
        let mut joined;
        let input = match lines.next() {
            None => first.as_bytes(),
            Some(second) => {
                joined = first.as_bytes().to_vec();
                for line in std::iter::once(second).chain(lines) {
                    joined.extend_from_slice(b", ");
                    joined.extend_from_slice(line.as_bytes());
                }
                &joined[..]
            }
        };
        let mut cc = CacheControl::default();
        let mut members = 0;
        let mut parser = sf::Parser::new(input);
        parser.skip_sp();
        if parser.at_end() {
            return None;
        }
        loop {
            if members == MAX_DIRECTIVES {
                cc.overflowed = true;
                return Some(cc);
            }
            members += 1;
            let (key, value) = parser.dict_member()?;
            cc.apply_targeted(key, value)?;
            parser.skip_ows();
            if parser.at_end() {
                return Some(cc);
            }
            parser.expect(b',')?;
            parser.skip_ows();
            if parser.at_end() {
                // RFC 8941 §4.2.2: a trailing comma fails the parse.
                return None;
            }
        }
    }

    /// Applies one targeted-field member; `None` for a value of the wrong type.
    fn apply_targeted(&mut self, key: &[u8], value: sf::Bare) -> Option<()> {
        let seconds = |value: sf::Bare| match value {
            sf::Bare::Integer(n) if n >= 0 => Some((n as u64).min(DELTA_SECONDS_MAX)),
            _ => None,
        };
        let flag = |value: sf::Bare| match value {
            sf::Bare::Boolean(on) => Some(on),
            _ => None,
        };
        // `no-cache` and `private`: a flag, or a String of field names (RFC 9213 §2.1 maps
        // a quoted-string argument to a String).
        let names = |value: sf::Bare| match value {
            sf::Bare::Boolean(on) => Some((on, Vec::new())),
            sf::Bare::String(text) => Some((false, field_names(&text).collect())),
            _ => None,
        };
        match key {
            b"max-age" => self.max_age = Some(seconds(value)?),
            b"s-maxage" => self.s_maxage = Some(seconds(value)?),
            b"stale-while-revalidate" => self.stale_while_revalidate = Some(seconds(value)?),
            b"stale-if-error" => self.stale_if_error = Some(seconds(value)?),
            b"no-store" => self.no_store = flag(value)?,
            b"no-transform" => self.no_transform = flag(value)?,
            b"must-revalidate" => self.must_revalidate = flag(value)?,
            b"proxy-revalidate" => self.proxy_revalidate = flag(value)?,
            b"must-understand" => self.must_understand = flag(value)?,
            b"public" => self.public = flag(value)?,
            b"immutable" => self.immutable = flag(value)?,
            b"no-cache" => (self.no_cache, self.no_cache_fields) = names(value)?,
            b"private" => (self.private, self.private_fields) = names(value)?,
            // Request directives and extensions: ignored (RFC 9111 §5.2.3).
            _ => {}
        }
        Some(())
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

/// A strict parser for the parts of RFC 8941 a Dictionary needs. Every `None` is a parse
/// failure, which makes the caller ignore the whole field.
mod sf {
    /// A member's value, as far as the cache needs it: parameters are read and dropped.
    #[derive(Debug, PartialEq)]
    pub(super) enum Bare {
        Integer(i64),
        Decimal,
        String(Vec<u8>),
        Token,
        Binary,
        Boolean(bool),
        InnerList,
    }

    pub(super) struct Parser<'a> {
        input: &'a [u8],
        pos: usize,
    }

    impl<'a> Parser<'a> {
        pub(super) fn new(input: &'a [u8]) -> Self {
            Self { input, pos: 0 }
        }

        fn peek(&self) -> Option<u8> {
            self.input.get(self.pos).copied()
        }

        pub(super) fn at_end(&self) -> bool {
            self.pos == self.input.len()
        }

        pub(super) fn expect(&mut self, byte: u8) -> Option<()> {
            (self.peek() == Some(byte)).then(|| self.pos += 1)
        }

        pub(super) fn skip_sp(&mut self) {
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
        }

        pub(super) fn skip_ows(&mut self) {
            while matches!(self.peek(), Some(b' ' | b'\t')) {
                self.pos += 1;
            }
        }

        /// §4.2.2: `key ( parameters / "=" member-value )`; a bare key is Boolean true.
        pub(super) fn dict_member(&mut self) -> Option<(&'a [u8], Bare)> {
            let key = self.key()?;
            if self.peek() != Some(b'=') {
                self.parameters()?;
                return Some((key, Bare::Boolean(true)));
            }
            self.pos += 1;
            let value = if self.peek() == Some(b'(') {
                self.inner_list()?;
                Bare::InnerList
            } else {
                let bare = self.bare_item()?;
                self.parameters()?;
                bare
            };
            Some((key, value))
        }

        /// §4.2.3.3: `( lcalpha / "*" ) *( lcalpha / DIGIT / "_" / "-" / "." / "*" )`.
        fn key(&mut self) -> Option<&'a [u8]> {
            let start = self.pos;
            if !matches!(self.peek(), Some(b'a'..=b'z' | b'*')) {
                return None;
            }
            while matches!(
                self.peek(),
                Some(b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' | b'*')
            ) {
                self.pos += 1;
            }
            Some(&self.input[start..self.pos])
        }

        /// §4.2.3.2: `*( ";" *SP key [ "=" bare-item ] )`.
        fn parameters(&mut self) -> Option<()> {
            while self.peek() == Some(b';') {
                self.pos += 1;
                self.skip_sp();
                self.key()?;
                if self.peek() == Some(b'=') {
                    self.pos += 1;
                    self.bare_item()?;
                }
            }
            Some(())
        }

        /// §4.2.1.2: `"(" *SP [ item *( 1*SP item ) *SP ] ")" parameters`.
        fn inner_list(&mut self) -> Option<()> {
            self.expect(b'(')?;
            loop {
                self.skip_sp();
                if self.peek() == Some(b')') {
                    self.pos += 1;
                    return self.parameters();
                }
                self.bare_item()?;
                self.parameters()?;
                if !matches!(self.peek(), Some(b' ' | b')')) {
                    return None;
                }
            }
        }

        /// §4.2.3.1.
        fn bare_item(&mut self) -> Option<Bare> {
            match self.peek()? {
                b'-' | b'0'..=b'9' => self.number(),
                b'"' => self.string(),
                b':' => self.binary(),
                b'?' => self.boolean(),
                b'A'..=b'Z' | b'a'..=b'z' | b'*' => {
                    self.pos += 1;
                    while self
                        .peek()
                        .is_some_and(|b| is_tchar(b) || b == b':' || b == b'/')
                    {
                        self.pos += 1;
                    }
                    Some(Bare::Token)
                }
                _ => None,
            }
        }

        /// §4.2.4: at most 15 integer digits, or 12 and a fraction of 1 to 3.
        fn number(&mut self) -> Option<Bare> {
            let negative = self.expect(b'-').is_some();
            let start = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            let digits = &self.input[start..self.pos];
            if digits.is_empty() {
                return None;
            }
            if self.peek() != Some(b'.') {
                if digits.len() > 15 {
                    return None;
                }
                let n = digits
                    .iter()
                    .fold(0i64, |n, d| n * 10 + i64::from(d - b'0'));
                return Some(Bare::Integer(if negative { -n } else { n }));
            }
            self.pos += 1;
            let fraction = self.pos;
            while self.peek().is_some_and(|b| b.is_ascii_digit()) {
                self.pos += 1;
            }
            let places = self.pos - fraction;
            (digits.len() <= 12 && (1..=3).contains(&places)).then_some(Bare::Decimal)
        }

        /// §4.2.5: printable ASCII between quotes, `\"` and `\\` the only escapes.
        fn string(&mut self) -> Option<Bare> {
            self.expect(b'"')?;
            let mut text = Vec::new();
            loop {
                let b = self.peek()?;
                self.pos += 1;
                match b {
                    b'"' => return Some(Bare::String(text)),
                    b'\\' => {
                        let escaped = self.peek().filter(|b| matches!(b, b'"' | b'\\'))?;
                        self.pos += 1;
                        text.push(escaped);
                    }
                    0x20..=0x7e => text.push(b),
                    _ => return None,
                }
            }
        }

        /// §4.2.7: base64 between colons.
        fn binary(&mut self) -> Option<Bare> {
            self.expect(b':')?;
            while self
                .peek()
                .is_some_and(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
            {
                self.pos += 1;
            }
            self.expect(b':')?;
            Some(Bare::Binary)
        }

        /// §4.2.8: `?0` or `?1`.
        fn boolean(&mut self) -> Option<Bare> {
            self.expect(b'?')?;
            let value = match self.peek()? {
                b'0' => false,
                b'1' => true,
                _ => return None,
            };
            self.pos += 1;
            Some(Bare::Boolean(value))
        }
    }

    /// RFC 9110 §5.6.2.
    fn is_tchar(b: u8) -> bool {
        b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn targeted(lines: &[&str]) -> Option<CacheControl> {
        let name = HeaderName::from_static("cdn-cache-control");
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(name.clone(), HeaderValue::from_str(l).unwrap());
        }
        CacheControl::parse_targeted(&h, &name)
    }

    #[test]
    fn targeted_fields_parse_as_dictionaries() {
        // RFC 9213 §2.1: directives as Dictionary members, values mapped to their types.
        let c = targeted(&["max-age=60, s-maxage=30;x=1, must-revalidate", "no-cache"]).unwrap();
        assert_eq!((c.max_age, c.s_maxage), (Some(60), Some(30)));
        assert!(c.must_revalidate && c.no_cache);
        let c = targeted(&[r#"private="set-cookie, x-a", no-store=?0, ext=(a "b" 1.5)"#]).unwrap();
        assert!(!c.private && !c.no_store);
        assert_eq!(c.private_fields, vec!["set-cookie", "x-a"]);
        assert!(targeted(&["private"]).unwrap().private);
        // RFC 9213 §2.2: a valid, non-empty field is used even when it names nothing the
        // cache implements: Cache-Control is then ignored.
        assert_eq!(targeted(&["ext=1"]), Some(CacheControl::default()));
        assert_eq!(
            targeted(&["max-age=99999999999"]).unwrap().max_age,
            Some(DELTA_SECONDS_MAX)
        );
    }

    #[test]
    fn a_targeted_field_that_does_not_parse_or_is_mistyped_is_ignored() {
        // RFC 9213 §2.1, RFC 8941 §4.2: the whole field is ignored.
        for bad in [
            "",
            " ",
            "max-age=60,",
            ",max-age=60",
            "max-age=60 ,, private",
            "Max-Age=60",
            "max-age=\"60\"",
            "max-age=6x",
            "max-age=-1",
            "max-age=1.5",
            "max-age",
            "max-age=1234567890123456",
            "no-store=1",
            "private=tok",
            "no-cache=(a)",
            "max-age=60 private",
            "x=\"unterminated",
            "x=\"bad\\escape\"",
            "x=?2",
            "x=:abc",
            "x=(1 2",
            "x=(1,2)",
            "x=1.2345",
            "x=?",
        ] {
            assert_eq!(targeted(&[bad]), None, "{bad:?}");
        }
    }

    #[test]
    fn a_targeted_field_past_the_bound_fails_closed() {
        let many = "x, ".repeat(MAX_DIRECTIVES) + "max-age=60";
        assert!(targeted(&[&many]).is_some_and(|c| c.overflowed && c.max_age.is_none()));
        let exactly = vec!["x"; MAX_DIRECTIVES - 1].join(", ") + ", max-age=60";
        assert!(targeted(&[&exactly]).is_some_and(|c| !c.overflowed && c.max_age == Some(60)));
    }

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
