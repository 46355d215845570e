//! Cache-key policy: which query parameters, headers and cookies tell objects apart.

use std::borrow::Cow;

use http::header::{HeaderMap, HeaderName, HeaderValue, COOKIE};

/// What goes into the cache key besides the path, like a CloudFront cache policy.
///
/// The default keeps the whole query minus tracking parameters, no headers, no cookies,
/// and the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    query: QueryStrings,
    headers: Headers,
    cookies: Cookies,
    include_host: bool,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        Self {
            query: QueryStrings::all(),
            headers: Headers::none(),
            cookies: Cookies::none(),
            include_host: true,
        }
    }
}

impl KeyPolicy {
    /// The default policy; see [`KeyPolicy`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Which query parameters are part of the key.
    pub fn query_strings(mut self, query: QueryStrings) -> Self {
        self.query = query;
        self
    }

    /// Which request headers are part of the key.
    pub fn headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Which cookies are part of the key.
    pub fn cookies(mut self, cookies: Cookies) -> Self {
        self.cookies = cookies;
        self
    }

    /// Whether the host is part of the key (default `true`). Turn it off only when every
    /// host the edge serves has the same content.
    pub fn include_host(mut self, include: bool) -> Self {
        self.include_host = include;
        self
    }

    /// Whether the host is part of the key.
    pub(crate) fn includes_host(&self) -> bool {
        self.include_host
    }

    /// The query as it enters the key: kept parameters in their original order (or sorted
    /// by name), joined by `&`, without empty parameters; `""` for none.
    ///
    /// Parameters are separated by `&` only, and told apart by their raw name, the text before
    /// the first `=`: names are not percent-decoded, so `a%62` and `ab` are different
    /// parameters. A parameter with a delimiter inside (`;`, or an encoded `&` or `;`) is never
    /// dropped, whatever its name: an origin that splits on it would read a parameter the key
    /// never saw. Borrows the query when nothing is dropped or reordered, which is the common
    /// case.
    pub(crate) fn normalized_query<'a>(&self, query: Option<&'a str>) -> Cow<'a, str> {
        self.query.normalize(query.unwrap_or(""), &[])
    }

    /// The query the origin receives under a key-only origin request policy: the key's query
    /// (the same function decides, so the two cannot drift) plus the parameters named in
    /// `extra`, in the same order.
    pub(crate) fn origin_query<'a>(
        &self,
        query: Option<&'a str>,
        extra: &[Box<str>],
    ) -> Cow<'a, str> {
        self.query.normalize(query.unwrap_or(""), extra)
    }

    /// The allow-listed request headers, in allow-list order, each value of a repeated
    /// header in request order.
    pub(crate) fn key_headers<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a HeaderName, &'a HeaderValue)> {
        self.headers
            .0
            .iter()
            .flat_map(move |name| headers.get_all(name).iter().map(move |v| (name, v)))
    }

    /// The allow-listed cookies of the `Cookie` headers as `(name, value)`, in allow-list
    /// order, repeated names in request order. Malformed pairs are skipped.
    pub(crate) fn key_cookies<'a>(
        &'a self,
        headers: &'a HeaderMap,
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.cookies.0.iter().flat_map(move |wanted| {
            cookie_pairs(headers).filter(move |(name, _)| *name == &**wanted)
        })
    }

    /// The cookies the origin receives under a key-only origin request policy: the key's,
    /// then those named in `extra` that the key does not hold, in request order.
    pub(crate) fn origin_cookies<'a>(
        &'a self,
        headers: &'a HeaderMap,
        extra: &'a [Box<str>],
    ) -> impl Iterator<Item = (&'a str, &'a str)> {
        let keyed = |name: &str| self.cookies.0.iter().any(|k| **k == *name);
        let extras = cookie_pairs(headers)
            .filter(move |(name, _)| !keyed(name) && extra.iter().any(|e| **e == **name));
        self.key_cookies(headers).chain(extras)
    }
}

/// Which query parameters enter the cache key.
///
/// [`all`](Self::all) and [`all_except`](Self::all_except) also drop tracking parameters
/// (`utm_*`, `gclid`, `fbclid`, `msclkid`, `mc_eid`), which vary per click but not the
/// content, unless [`keep_tracking`](Self::keep_tracking) is set. Names are compared raw
/// and case-sensitively.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueryStrings {
    mode: QueryMode,
    sorted: bool,
    drop_tracking: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum QueryMode {
    None,
    All,
    Allow(Box<[Box<str>]>),
    AllExcept(Box<[Box<str>]>),
}

impl QueryStrings {
    fn new(mode: QueryMode) -> Self {
        Self {
            mode,
            sorted: false,
            drop_tracking: true,
        }
    }

    /// No query parameter is part of the key.
    pub fn none() -> Self {
        Self::new(QueryMode::None)
    }

    /// Every query parameter (but tracking ones) is part of the key.
    pub fn all() -> Self {
        Self::new(QueryMode::All)
    }

    /// Only the listed parameters are part of the key, tracking ones included if listed.
    pub fn allow<I>(names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::new(QueryMode::Allow(names_of(names)))
    }

    /// Every parameter but the listed ones (and tracking ones) is part of the key.
    pub fn all_except<I>(names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        Self::new(QueryMode::AllExcept(names_of(names)))
    }

    /// Sorts parameters by name, so `?a=1&b=2` and `?b=2&a=1` share an object. The sort is
    /// stable: repeated parameters keep their order, since origins may read the first one.
    pub fn sorted(mut self) -> Self {
        self.sorted = true;
        self
    }

    /// Keeps tracking parameters in the key.
    pub fn keep_tracking(mut self) -> Self {
        self.drop_tracking = false;
        self
    }

    /// Whether a parameter (`name[=value]`) enters the key. One with a delimiter inside is
    /// always kept (see [`KeyPolicy::normalized_query`]); `extra` names more to keep.
    fn keeps(&self, param: &str, extra: &[Box<str>]) -> bool {
        if hides_delimiter(param) {
            return true;
        }
        let name = name_of(param);
        let listed = |list: &[Box<str>]| list.iter().any(|n| **n == *name);
        let tracking = || self.drop_tracking && is_tracking(name);
        let kept = match &self.mode {
            QueryMode::None => false,
            QueryMode::Allow(list) => listed(list),
            QueryMode::All => !tracking(),
            QueryMode::AllExcept(list) => !(listed(list) || tracking()),
        };
        kept || listed(extra)
    }

    fn normalize<'a>(&self, query: &'a str, extra: &[Box<str>]) -> Cow<'a, str> {
        if query.is_empty() {
            return Cow::Borrowed("");
        }
        // First pass without allocating: is the query already in normal form?
        let mut unchanged = true;
        let mut previous = "";
        for param in query.split('&') {
            let name = name_of(param);
            if param.is_empty() || !self.keeps(param, extra) || (self.sorted && name < previous) {
                unchanged = false;
                break;
            }
            previous = name;
        }
        if unchanged {
            return Cow::Borrowed(query);
        }
        let mut kept: Vec<&str> = query
            .split('&')
            .filter(|p| !p.is_empty() && self.keeps(p, extra))
            .collect();
        if self.sorted {
            kept.sort_by_key(|p| name_of(p));
        }
        Cow::Owned(kept.join("&"))
    }
}

/// Whether a parameter holds a delimiter some origins split on (`;`, as old CGI and some
/// frameworks do, or `&`/`;` percent-encoded, for origins that decode before splitting):
/// such a parameter may be two to the origin, so it is never dropped as one.
fn hides_delimiter(param: &str) -> bool {
    if param.contains(';') {
        return true;
    }
    let bytes = param.as_bytes();
    bytes.windows(3).any(|w| {
        w[0] == b'%'
            && (w[1] == b'2' && w[2] == b'6' || w[1] == b'3' && w[2].eq_ignore_ascii_case(&b'b'))
    })
}

fn names_of<I>(names: I) -> Box<[Box<str>]>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    names
        .into_iter()
        .map(|n| n.into().into_boxed_str())
        .collect()
}

fn name_of(param: &str) -> &str {
    param.split_once('=').map_or(param, |(name, _)| name)
}

fn is_tracking(name: &str) -> bool {
    name.starts_with("utm_") || matches!(name, "gclid" | "fbclid" | "msclkid" | "mc_eid")
}

/// Which request headers enter the cache key (and so the object varies on them).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Box<[HeaderName]>);

impl Headers {
    /// No header is part of the key.
    pub fn none() -> Self {
        Self::default()
    }

    /// The listed headers are part of the key, in this order; duplicates are ignored.
    pub fn allow(names: impl IntoIterator<Item = HeaderName>) -> Self {
        let mut list: Vec<HeaderName> = Vec::new();
        for name in names {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        Self(list.into())
    }
}

/// Which cookies enter the cache key. Names are case-sensitive.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cookies(Box<[Box<str>]>);

impl Cookies {
    /// No cookie is part of the key.
    pub fn none() -> Self {
        Self::default()
    }

    /// The listed cookies are part of the key, in this order; duplicates are ignored.
    pub fn allow<I>(names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        let mut list: Vec<Box<str>> = Vec::new();
        for name in names_of(names).into_vec() {
            if !list.contains(&name) {
                list.push(name);
            }
        }
        Self(list.into())
    }
}

/// The `name=value` pairs of all `Cookie` headers, trimmed. Pairs without `=` or with an
/// empty name, and header values that are not UTF-8, are skipped rather than failing the
/// request: browsers send whatever scripts set.
fn cookie_pairs(headers: &HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| std::str::from_utf8(v.as_bytes()).ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            let name = name.trim_matches([' ', '\t']);
            (!name.is_empty()).then_some((name, value.trim_matches([' ', '\t'])))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCEPT_LANGUAGE, USER_AGENT};

    fn q<'a>(query: &QueryStrings, s: &'a str) -> Cow<'a, str> {
        KeyPolicy::new()
            .query_strings(query.clone())
            .normalized_query(Some(s))
    }

    #[test]
    fn unchanged_query_is_borrowed() {
        let all = QueryStrings::all();
        assert!(matches!(q(&all, "b=2&a=1"), Cow::Borrowed("b=2&a=1")));
        let sorted = QueryStrings::all().sorted();
        assert!(matches!(q(&sorted, "a=1&a=0&b"), Cow::Borrowed(_)));
        assert!(matches!(
            KeyPolicy::new().normalized_query(None),
            Cow::Borrowed("")
        ));
        assert!(matches!(q(&all, ""), Cow::Borrowed("")));
    }

    #[test]
    fn dropped_param_leaves_an_identical_key() {
        let all = QueryStrings::all();
        let plain = q(&all, "id=7&page=2");
        for tracked in [
            "utm_source=news&id=7&page=2",
            "id=7&gclid=abc&page=2",
            "id=7&page=2&fbclid=x&msclkid=y&mc_eid=z&utm_campaign",
            "id=7&&page=2&",
        ] {
            assert_eq!(q(&all, tracked), plain, "{tracked}");
        }
        assert_eq!(q(&all, "utm_source=x"), "");
    }

    #[test]
    fn keep_tracking() {
        let all = QueryStrings::all().keep_tracking();
        assert_eq!(q(&all, "id=7&utm_source=x"), "id=7&utm_source=x");
        // Raw, case-sensitive names: these are not tracking parameters.
        assert_eq!(
            q(&QueryStrings::all(), "UTM_source=1&utm%5Fx=2"),
            "UTM_source=1&utm%5Fx=2"
        );
    }

    #[test]
    fn none_and_allow_list() {
        assert_eq!(q(&QueryStrings::none(), "a=1&b=2"), "");
        let allow = QueryStrings::allow(["id", "utm_source"]);
        assert_eq!(
            q(&allow, "x=1&id=7&utm_source=n&y&id=8"),
            "id=7&utm_source=n&id=8"
        );
        assert_eq!(q(&allow, "id"), "id");
        assert_eq!(q(&allow, "ids=1&i=2"), "");
    }

    #[test]
    fn all_except() {
        let except = QueryStrings::all_except(["session", "t"]);
        assert_eq!(
            q(&except, "t=1&id=7&session=abc&utm_medium=x&v=2"),
            "id=7&v=2"
        );
        let keep = QueryStrings::all_except(["t"]).keep_tracking();
        assert_eq!(q(&keep, "t=1&utm_medium=x"), "utm_medium=x");
    }

    #[test]
    fn sorting_is_by_name_and_stable() {
        let sorted = QueryStrings::all().sorted();
        assert_eq!(q(&sorted, "b=2&a=1&c=3"), q(&sorted, "c=3&a=1&b=2"));
        assert_eq!(q(&sorted, "b=2&a=9&a=1"), "a=9&a=1&b=2");
        assert_eq!(q(&sorted, "b=2&utm_id=1&a=1"), "a=1&b=2");
    }

    #[test]
    fn key_headers_in_allow_list_order() {
        let policy =
            KeyPolicy::new().headers(Headers::allow([USER_AGENT, ACCEPT_LANGUAGE, USER_AGENT]));
        let mut map = HeaderMap::new();
        map.append(ACCEPT_LANGUAGE, HeaderValue::from_static("de"));
        map.append(ACCEPT_LANGUAGE, HeaderValue::from_static("en"));
        map.append("x-other", HeaderValue::from_static("1"));
        map.append(USER_AGENT, HeaderValue::from_static("ua"));
        let got: Vec<_> = policy
            .key_headers(&map)
            .map(|(n, v)| (n.as_str(), v.to_str().unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                ("user-agent", "ua"),
                ("accept-language", "de"),
                ("accept-language", "en")
            ]
        );
        assert_eq!(KeyPolicy::new().key_headers(&map).count(), 0);
    }

    #[test]
    fn key_cookies_tolerate_junk() {
        let policy = KeyPolicy::new().cookies(Cookies::allow(["theme", "lang", "missing"]));
        let mut map = HeaderMap::new();
        map.append(
            COOKIE,
            HeaderValue::from_static("junk; lang=de;;  =x; theme = dark ;a=b=c"),
        );
        map.append(COOKIE, HeaderValue::from_bytes(b"lang=\xff").unwrap());
        map.append(
            COOKIE,
            HeaderValue::from_static("Theme=light;lang=fr;theme"),
        );
        let got: Vec<_> = policy.key_cookies(&map).collect();
        assert_eq!(got, [("theme", "dark"), ("lang", "de"), ("lang", "fr")]);
        assert_eq!(KeyPolicy::new().key_cookies(&map).count(), 0);
    }

    #[test]
    fn semicolons_never_separate_and_never_hide_a_parameter() {
        // Issue #16 item 3: `utm_source=x;callback=evil` is two parameters to an origin that
        // splits on `;`. It is not dropped as tracking, so the key and the origin both hold it.
        let all = QueryStrings::all();
        assert_eq!(
            q(&all, "callback=ok&utm_source=x;callback=evil"),
            "callback=ok&utm_source=x;callback=evil"
        );
        assert_eq!(q(&all, "callback=ok&utm_source=x"), "callback=ok");
        // Encoded delimiters, for origins that decode before splitting.
        for hidden in [
            "utm_source=x%26callback=evil",
            "gclid=x%3bcallback=evil",
            "fbclid=%3B",
        ] {
            assert_eq!(q(&all, hidden), hidden);
        }
        // Under any mode: an allow list, an exception list, no query at all.
        assert_eq!(
            q(&QueryStrings::allow(["id"]), "id=1&x=2;id=3"),
            "id=1&x=2;id=3"
        );
        assert_eq!(q(&QueryStrings::all_except(["t"]), "t=1;a=2"), "t=1;a=2");
        assert_eq!(q(&QueryStrings::none(), "a=1&b;c"), "b;c");
        // `;` is not a separator: this is one parameter named `a`.
        assert_eq!(q(&QueryStrings::allow(["b"]), "a=1;b=2"), "a=1;b=2");
        assert_eq!(q(&QueryStrings::allow(["b"]), "a=1&b=2"), "b=2");
    }

    #[test]
    fn the_origin_query_is_the_key_query_plus_what_is_named() {
        let policy = KeyPolicy::new().query_strings(QueryStrings::allow(["id"]).sorted());
        let query = Some("z=1&utm_source=x&id=2&page=3");
        assert_eq!(
            policy.origin_query(query, &[]),
            policy.normalized_query(query)
        );
        assert_eq!(
            policy.origin_query(query, &["page".into(), "utm_source".into()]),
            "id=2&page=3&utm_source=x"
        );
    }

    #[test]
    fn origin_cookies_are_the_key_cookies_plus_what_is_named() {
        let policy = KeyPolicy::new().cookies(Cookies::allow(["theme"]));
        let mut map = HeaderMap::new();
        map.append(
            COOKIE,
            HeaderValue::from_static("session=s; theme=dark; tracker=t"),
        );
        let got: Vec<_> = policy.origin_cookies(&map, &[]).collect();
        assert_eq!(got, [("theme", "dark")]);
        let extra = ["session".into(), "theme".into()];
        let got: Vec<_> = policy.origin_cookies(&map, &extra).collect();
        assert_eq!(got, [("theme", "dark"), ("session", "s")]);
    }

    #[test]
    fn defaults() {
        let p = KeyPolicy::default();
        assert!(p.includes_host());
        assert!(!p.include_host(false).includes_host());
    }
}
