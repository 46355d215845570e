//! Geo restriction: country allow- and block-lists, and resolvers that find a viewer's country.

use std::fmt;
use std::net::IpAddr;
#[cfg(feature = "geo")]
use std::path::{Path, PathBuf};
use std::str::FromStr;

use http::{HeaderMap, HeaderName};

use super::AccessError;

/// The officially assigned ISO 3166-1 alpha-2 codes (249), sorted.
const ASSIGNED: &str = "\
AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR \
BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ \
EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW \
GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY \
KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV \
MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY \
QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG \
TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM \
ZW";

/// User-assigned codes in wide use by geolocation databases, accepted in lists too.
const ALSO_ACCEPTED: [&str; 1] = ["XK"];

/// An ISO 3166-1 alpha-2 country code: two ASCII letters, stored in upper case.
///
/// [`CountryCode::new`] checks the shape only, so a resolver can pass on any code its data
/// holds; the lists of a [`GeoRestriction`] also require a code that is assigned.
///
/// ```
/// use tower_cdn::CountryCode;
///
/// let ca: CountryCode = "ca".parse()?;
/// assert_eq!(ca.as_str(), "CA");
/// assert!(CountryCode::new("USA").is_err());
/// assert!(CountryCode::new("XX").is_err()); // "unknown" placeholder, not a country
/// # Ok::<(), tower_cdn::AccessError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses two ASCII letters in either case. `XX` and `ZZ`, which upstreams and databases
    /// use for "unknown", are rejected, so they resolve to an unknown country.
    pub fn new(code: &str) -> Result<Self, AccessError> {
        let invalid = |reason| AccessError::CountryCode {
            code: code.to_owned(),
            reason,
        };
        let &[a, b] = code.as_bytes() else {
            return Err(invalid("must be two letters"));
        };
        if !a.is_ascii_alphabetic() || !b.is_ascii_alphabetic() {
            return Err(invalid("must be two letters"));
        }
        let upper = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
        if upper == *b"XX" || upper == *b"ZZ" {
            return Err(invalid("a placeholder for an unknown country"));
        }
        Ok(Self(upper))
    }

    /// The code in upper case, for example `"US"`.
    pub fn as_str(&self) -> &str {
        // Always two ASCII letters, so always UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether this is an officially assigned ISO 3166-1 code (or `XK`, Kosovo, which
    /// geolocation databases use).
    pub fn is_assigned(&self) -> bool {
        let s = self.as_str();
        ASSIGNED.split(' ').any(|c| c == s) || ALSO_ACCEPTED.contains(&s)
    }
}

impl FromStr for CountryCode {
    type Err = AccessError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CountryCode({:?})", self.as_str())
    }
}

/// What to do with a viewer whose country could not be determined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GeoDefault {
    /// Serve the viewer, as CloudFront does. The default.
    #[default]
    Allow,
    /// Deny the viewer.
    Deny,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Allow,
    Block,
}

/// A per-distribution allow-list or block-list of countries, decided before the cache.
///
/// ```
/// use tower_cdn::{GeoDefault, GeoRestriction};
///
/// let only_north_america = GeoRestriction::allow(["US", "CA", "MX"])
///     .unknown(GeoDefault::Deny)
///     .build()?;
/// let not_these = GeoRestriction::block(["KP"]).build()?;
/// assert!(GeoRestriction::block(["UK"]).build().is_err()); // the United Kingdom is GB
/// # Ok::<(), tower_cdn::AccessError>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeoRestriction {
    mode: Mode,
    /// Sorted and deduplicated.
    countries: Vec<CountryCode>,
    unknown: GeoDefault,
}

impl GeoRestriction {
    /// Serve only viewers from these countries.
    pub fn allow<I, S>(countries: I) -> GeoRestrictionBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        GeoRestrictionBuilder::new(Mode::Allow, countries)
    }

    /// Serve every viewer except those from these countries.
    pub fn block<I, S>(countries: I) -> GeoRestrictionBuilder
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        GeoRestrictionBuilder::new(Mode::Block, countries)
    }

    /// Whether this is an allow-list (otherwise a block-list).
    pub fn is_allow_list(&self) -> bool {
        self.mode == Mode::Allow
    }

    /// The listed countries, sorted.
    pub fn countries(&self) -> &[CountryCode] {
        &self.countries
    }

    /// What happens to viewers whose country is unknown.
    pub fn unknown_default(&self) -> GeoDefault {
        self.unknown
    }

    /// Whether a viewer from `country` (`None`: unknown) may be served.
    pub(crate) fn decide(&self, country: Option<&CountryCode>) -> bool {
        match country {
            None => self.unknown == GeoDefault::Allow,
            Some(code) => {
                let listed = self.countries.binary_search(code).is_ok();
                match self.mode {
                    Mode::Allow => listed,
                    Mode::Block => !listed,
                }
            }
        }
    }
}

/// Builds a [`GeoRestriction`]; the country codes are checked by [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct GeoRestrictionBuilder {
    mode: Mode,
    countries: Vec<String>,
    unknown: GeoDefault,
}

impl GeoRestrictionBuilder {
    fn new<I, S>(mode: Mode, countries: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self {
            mode,
            countries: countries
                .into_iter()
                .map(|c| c.as_ref().to_owned())
                .collect(),
            unknown: GeoDefault::Allow,
        }
    }

    /// What to do when the viewer's country cannot be determined (default
    /// [`GeoDefault::Allow`]).
    pub fn unknown(mut self, default: GeoDefault) -> Self {
        self.unknown = default;
        self
    }

    /// Checks every code (two letters, either case, assigned in ISO 3166-1) and builds the
    /// restriction. An empty allow-list is an error; an empty block-list blocks nobody.
    pub fn build(self) -> Result<GeoRestriction, AccessError> {
        let mut countries = Vec::with_capacity(self.countries.len());
        for raw in &self.countries {
            let code = CountryCode::new(raw)?;
            if !code.is_assigned() {
                let reason = match code.as_str() {
                    "UK" => "not an ISO 3166-1 code: the United Kingdom is GB",
                    _ => "not an assigned ISO 3166-1 alpha-2 code",
                };
                return Err(AccessError::CountryCode {
                    code: raw.clone(),
                    reason,
                });
            }
            countries.push(code);
        }
        if self.mode == Mode::Allow && countries.is_empty() {
            return Err(AccessError::EmptyAllowList);
        }
        countries.sort_unstable();
        countries.dedup();
        Ok(GeoRestriction {
            mode: self.mode,
            countries,
            unknown: self.unknown,
        })
    }
}

/// Finds a viewer's country from its address and request headers.
///
/// Implemented by `MaxMindResolver` (feature `geo`), [`HeaderResolver`], and closures:
///
/// ```
/// use std::net::IpAddr;
/// use http::HeaderMap;
/// use tower_cdn::{CountryCode, CountryResolver};
///
/// let internal = |ip: Option<IpAddr>, _: &HeaderMap| {
///     ip.filter(|ip| ip.is_loopback())
///         .and_then(|_| CountryCode::new("DE").ok())
/// };
/// let here = internal.country(Some("127.0.0.1".parse().unwrap()), &HeaderMap::new());
/// assert_eq!(here.map(|c| c.to_string()).as_deref(), Some("DE"));
/// ```
pub trait CountryResolver: Send + Sync + 'static {
    /// The viewer's country, or `None` when it cannot be determined. `ip` is the client
    /// address as the edge trusts it (`None` when unknown).
    fn country(&self, ip: Option<IpAddr>, headers: &HeaderMap) -> Option<CountryCode>;
}

impl<F> CountryResolver for F
where
    F: Fn(Option<IpAddr>, &HeaderMap) -> Option<CountryCode> + Send + Sync + 'static,
{
    fn country(&self, ip: Option<IpAddr>, headers: &HeaderMap) -> Option<CountryCode> {
        self(ip, headers)
    }
}

/// Reads the country from a request header that a trusted upstream sets, such as a load
/// balancer or CDN in front of this edge (`CloudFront-Viewer-Country`, `CF-IPCountry`).
///
/// Configure it only when every request passes through that upstream and it replaces any
/// value the viewer sent: otherwise viewers choose their own country. A missing header, a
/// value that is not two letters, a placeholder (`XX`, `T1`), or the header appearing more
/// than once all resolve to an unknown country.
#[derive(Clone, Debug)]
pub struct HeaderResolver {
    name: HeaderName,
}

impl HeaderResolver {
    /// Reads the country from the header `name` (any case).
    pub fn new(name: &str) -> Result<Self, AccessError> {
        HeaderName::from_bytes(name.as_bytes())
            .map(|name| Self { name })
            .map_err(|_| AccessError::HeaderName(name.to_owned()))
    }

    /// The header read.
    pub fn header_name(&self) -> &HeaderName {
        &self.name
    }
}

impl CountryResolver for HeaderResolver {
    fn country(&self, _ip: Option<IpAddr>, headers: &HeaderMap) -> Option<CountryCode> {
        let mut values = headers.get_all(&self.name).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        CountryCode::new(value.to_str().ok()?.trim()).ok()
    }
}

/// Looks up the client address in a MaxMind-format (`.mmdb`) database with the
/// GeoIP2 country schema (`country.iso_code`): GeoLite2-Country, GeoIP2-Country or -City,
/// or compatible databases such as DB-IP's.
///
/// The whole file is read into memory when opened (a country database is a few MiB); to take
/// up a new release, open it again and rebuild the layer. Addresses without an entry, or
/// whose entry has no `country.iso_code`, resolve to an unknown country.
#[cfg(feature = "geo")]
pub struct MaxMindResolver {
    reader: maxminddb::Reader<Vec<u8>>,
}

#[cfg(feature = "geo")]
impl MaxMindResolver {
    /// Opens the database at `path`. A missing, unreadable or malformed file is an
    /// [`AccessError::GeoDatabase`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, AccessError> {
        let path = path.as_ref();
        maxminddb::Reader::open_readfile(path)
            .map(|reader| Self { reader })
            .map_err(|e| AccessError::GeoDatabase {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })
    }

    /// Uses a database already in memory (for example from `include_bytes!`). Errors name
    /// the path `<memory>`.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, AccessError> {
        maxminddb::Reader::from_source(bytes)
            .map(|reader| Self { reader })
            .map_err(|e| AccessError::GeoDatabase {
                path: PathBuf::from("<memory>"),
                reason: e.to_string(),
            })
    }

    /// The database's type from its metadata, for example `GeoLite2-Country`.
    pub fn database_type(&self) -> &str {
        &self.reader.metadata().database_type
    }
}

#[cfg(feature = "geo")]
impl CountryResolver for MaxMindResolver {
    fn country(&self, ip: Option<IpAddr>, _headers: &HeaderMap) -> Option<CountryCode> {
        use maxminddb::PathElement::Key;

        let found = self.reader.lookup(ip?.to_canonical()).ok()?;
        let code: &str = found
            .decode_path(&[Key("country"), Key("iso_code")])
            .ok()??;
        CountryCode::new(code).ok()
    }
}

#[cfg(feature = "geo")]
impl fmt::Debug for MaxMindResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let meta = self.reader.metadata();
        f.debug_struct("MaxMindResolver")
            .field("database_type", &meta.database_type)
            .field("build_epoch", &meta.build_epoch)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(s: &str) -> CountryCode {
        CountryCode::new(s).unwrap()
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    #[test]
    fn assigned_list_is_sorted_iso_3166_1() {
        let codes: Vec<&str> = ASSIGNED.split(' ').collect();
        assert_eq!(codes.len(), 249);
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        assert!(codes.iter().all(|c| CountryCode::new(c).is_ok()));
    }

    #[test]
    fn country_code_shape() {
        assert_eq!(code("us").as_str(), "US");
        assert_eq!(code("Gb").to_string(), "GB");
        assert_eq!(format!("{:?}", code("fr")), "CountryCode(\"FR\")");
        for bad in ["", "U", "USA", "U1", "T1", "é", "XX", "zz", " US"] {
            let err = CountryCode::new(bad).unwrap_err();
            assert!(
                matches!(&err, AccessError::CountryCode { code, .. } if code == bad),
                "{bad:?}: {err}"
            );
        }
        assert!(code("XK").is_assigned());
        assert!(!code("UK").is_assigned());
        assert!(!code("EU").is_assigned());
    }

    #[test]
    fn allow_list() {
        let geo = GeoRestriction::allow(["us", "CA", "US"]).build().unwrap();
        assert!(geo.is_allow_list());
        assert_eq!(geo.countries(), &[code("CA"), code("US")]);
        assert!(geo.decide(Some(&code("US"))));
        assert!(geo.decide(Some(&code("CA"))));
        assert!(!geo.decide(Some(&code("FR"))));
        // A shaped but unassigned code from a resolver is simply not on the list.
        assert!(!geo.decide(Some(&code("EU"))));
    }

    #[test]
    fn block_list() {
        let geo = GeoRestriction::block(["KP", "IR"]).build().unwrap();
        assert!(!geo.is_allow_list());
        assert!(!geo.decide(Some(&code("KP"))));
        assert!(!geo.decide(Some(&code("ir"))));
        assert!(geo.decide(Some(&code("US"))));
        // An empty block-list blocks nobody.
        let none = GeoRestriction::block(Vec::<String>::new()).build().unwrap();
        assert!(none.decide(Some(&code("KP"))));
    }

    #[test]
    fn unknown_country_default() {
        let allow = GeoRestriction::allow(["US"]).build().unwrap();
        assert_eq!(allow.unknown_default(), GeoDefault::Allow);
        assert!(allow.decide(None));
        let strict = GeoRestriction::allow(["US"])
            .unknown(GeoDefault::Deny)
            .build()
            .unwrap();
        assert!(!strict.decide(None));
        let block = GeoRestriction::block(["KP"])
            .unknown(GeoDefault::Deny)
            .build()
            .unwrap();
        assert!(!block.decide(None));
        assert!(block.decide(Some(&code("US"))));
    }

    #[test]
    fn invalid_lists_fail_at_build() {
        let err = GeoRestriction::block(["US", "UK"]).build().unwrap_err();
        assert_eq!(
            err,
            AccessError::CountryCode {
                code: "UK".into(),
                reason: "not an ISO 3166-1 code: the United Kingdom is GB",
            }
        );
        assert!(err.to_string().contains("\"UK\""), "{err}");
        let err = GeoRestriction::allow(["usa"]).build().unwrap_err();
        assert!(matches!(err, AccessError::CountryCode { code, .. } if code == "usa"));
        let err = GeoRestriction::allow(["QZ"]).build().unwrap_err();
        assert!(matches!(err, AccessError::CountryCode { code, .. } if code == "QZ"));
        let err = GeoRestriction::allow(Vec::<&str>::new())
            .build()
            .unwrap_err();
        assert_eq!(err, AccessError::EmptyAllowList);
    }

    #[test]
    fn header_resolver() {
        let r = HeaderResolver::new("CloudFront-Viewer-Country").unwrap();
        assert_eq!(r.header_name(), "cloudfront-viewer-country");
        let mut headers = HeaderMap::new();
        assert_eq!(r.country(ip("192.0.2.1"), &headers), None);
        headers.insert("cloudfront-viewer-country", " de ".parse().unwrap());
        assert_eq!(r.country(None, &headers), Some(code("DE")));
        for placeholder in ["XX", "T1", "", "unknown"] {
            headers.insert("cloudfront-viewer-country", placeholder.parse().unwrap());
            assert_eq!(r.country(None, &headers), None, "{placeholder:?}");
        }
        // Two values: one may be the viewer's own, so neither is trusted.
        headers.insert("cloudfront-viewer-country", "US".parse().unwrap());
        headers.append("cloudfront-viewer-country", "US".parse().unwrap());
        assert_eq!(r.country(None, &headers), None);

        assert_eq!(
            HeaderResolver::new("bad header").unwrap_err(),
            AccessError::HeaderName("bad header".into())
        );
    }

    #[test]
    fn closure_resolver() {
        let r = |ip: Option<IpAddr>, _: &HeaderMap| ip.map(|_| code("JP"));
        let boxed: Box<dyn CountryResolver> = Box::new(r);
        assert_eq!(
            boxed.country(ip("192.0.2.1"), &HeaderMap::new()),
            Some(code("JP"))
        );
        assert_eq!(boxed.country(None, &HeaderMap::new()), None);
    }

    /// The MaxMind resolver, against databases written with `mmdb-writer`.
    #[cfg(feature = "geo")]
    mod maxmind {
        use super::*;

        use mmdb_writer::ipnet::IpNet;
        use mmdb_writer::{Value, Writer};

        fn country(iso: &str) -> Value {
            Value::map([("country", Value::map([("iso_code", Value::from(iso))]))])
        }

        /// A small GeoIP2-Country-shaped database written with `mmdb-writer`.
        fn test_database() -> Vec<u8> {
            let mut w = Writer::new("Test-GeoIP2-Country");
            let net = |s: &str| s.parse::<IpNet>().unwrap();
            w.insert_value(net("192.0.2.0/24"), country("US")).unwrap();
            w.insert_value(net("198.51.100.0/24"), country("CA"))
                .unwrap();
            w.insert_value(net("203.0.113.0/25"), country("KP"))
                .unwrap();
            w.insert_value(net("2001:db8:1::/48"), country("DE"))
                .unwrap();
            // An entry with only a registered country, as for some anonymous networks.
            let registered = Value::map([(
                "registered_country",
                Value::map([("iso_code", Value::from("FR"))]),
            )]);
            w.insert_value(net("203.0.113.128/25"), registered).unwrap();
            w.to_bytes().unwrap()
        }

        fn temp_file(name: &str, bytes: &[u8]) -> PathBuf {
            let path = std::env::temp_dir()
                .join(format!("tower-cdn-access-{}-{name}", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            path
        }

        #[test]
        fn maxmind_resolver_lookups() {
            let path = temp_file("country.mmdb", &test_database());
            let r = MaxMindResolver::open(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            assert_eq!(r.database_type(), "Test-GeoIP2-Country");
            assert!(format!("{r:?}").contains("Test-GeoIP2-Country"));

            let h = HeaderMap::new();
            assert_eq!(r.country(ip("192.0.2.77"), &h), Some(code("US")));
            assert_eq!(r.country(ip("198.51.100.1"), &h), Some(code("CA")));
            assert_eq!(r.country(ip("203.0.113.5"), &h), Some(code("KP")));
            assert_eq!(r.country(ip("2001:db8:1::42"), &h), Some(code("DE")));
            // IPv4-mapped IPv6, as a dual-stack socket reports IPv4 viewers.
            assert_eq!(r.country(ip("::ffff:192.0.2.9"), &h), Some(code("US")));
            // No entry, no country field, no address.
            assert_eq!(r.country(ip("10.1.2.3"), &h), None);
            assert_eq!(r.country(ip("2001:db8:2::1"), &h), None);
            assert_eq!(r.country(ip("203.0.113.200"), &h), None);
            assert_eq!(r.country(None, &h), None);
        }

        #[test]
        fn maxmind_with_allow_and_block_lists() {
            let r = MaxMindResolver::from_bytes(test_database()).unwrap();
            let h = HeaderMap::new();
            let allow = GeoRestriction::allow(["US", "CA"])
                .unknown(GeoDefault::Deny)
                .build()
                .unwrap();
            let block = GeoRestriction::block(["KP"]).build().unwrap();
            let verdicts = |addr: &str| {
                let c = r.country(ip(addr), &h);
                (allow.decide(c.as_ref()), block.decide(c.as_ref()))
            };
            assert_eq!(verdicts("192.0.2.1"), (true, true)); // US
            assert_eq!(verdicts("198.51.100.1"), (true, true)); // CA
            assert_eq!(verdicts("2001:db8:1::1"), (false, true)); // DE
            assert_eq!(verdicts("203.0.113.1"), (false, false)); // KP
            assert_eq!(verdicts("10.0.0.1"), (false, true)); // unknown
        }

        #[test]
        fn maxmind_bad_files_are_clear_errors() {
            let missing = std::env::temp_dir().join("tower-cdn-access-does-not-exist.mmdb");
            let err = MaxMindResolver::open(&missing).unwrap_err();
            let AccessError::GeoDatabase { path, reason } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(path, &missing);
            assert!(!reason.is_empty());
            assert!(err.to_string().contains("does-not-exist.mmdb"), "{err}");

            let junk = temp_file("junk.mmdb", b"this is not a MaxMind database");
            let err = MaxMindResolver::open(&junk).unwrap_err();
            std::fs::remove_file(&junk).unwrap();
            assert!(
                matches!(&err, AccessError::GeoDatabase { path, .. } if path == &junk),
                "{err:?}"
            );

            let mut truncated = test_database();
            truncated.truncate(truncated.len() / 2);
            let err = MaxMindResolver::from_bytes(truncated).unwrap_err();
            assert!(matches!(err, AccessError::GeoDatabase { .. }), "{err:?}");
        }
    }
}
