//! Access controls from the configuration file: key groups, geo restriction, rate limit, origin
//! concurrency cap and trusted proxies.
//!
//! Every value is checked while the file is read, key files and geo databases included, so a
//! mistake is reported with the line and key it is on:
//!
//! ```toml
//! trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]
//!
//! [key_groups.videos]
//! keys = [
//!   { id = "K2024", ed25519_public_key = "BASE64 of the 32-byte public key" },
//!   { id = "K2023", ed25519_public_key_file = "keys/k2023.pub" },   # 32 raw bytes, or base64
//!   { id = "H1", hmac_secret_file = "keys/h1.secret" },             # as `sign --hmac` reads it
//!   { id = "APKAEXAMPLE", rsa_public_key_file = "cloudfront.pem" }, # with cloudfront-compat
//! ]
//!
//! [geo_restriction]
//! block = ["KP"]                # or allow = [...]; neither when only forwarding the country
//! unknown = "allow"             # or "deny": viewers whose country is unknown
//! database = "GeoLite2-Country.mmdb"   # or header = "cloudfront-viewer-country"
//! forward_country = true        # CloudFront-Viewer-Country to the origin
//!
//! [rate_limit]
//! per_second = 100              # or per_minute
//! burst = 200
//! key_header = "x-user-id"      # else the client address
//! ipv6_prefix = 64
//! max_keys = 100000
//!
//! [origin_concurrency]
//! max = 64
//! queue_timeout = "1s"
//! ```
//!
//! Relative paths are taken from the configuration file's directory, like the other paths in
//! the file.

use std::fmt;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD_PAD_INDIFFERENT, URL_SAFE_PAD_INDIFFERENT};
use base64::Engine as _;
use http::HeaderMap;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::config::{file_path, parse_duration};
use crate::access::IpRange;
use crate::signing::{KeyGroup, VerifyingKey};
use crate::{
    AccessError, CdnLayerBuilder, ConfigError, CountryCode, CountryResolver, GeoDefault,
    GeoRestriction, HeaderResolver, MaxMindResolver, OriginConcurrency, RateLimit,
    RateLimitBuilder,
};

/// A trusted key group: `[key_groups.NAME]` with a `keys` list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KeyGroupSetting {
    keys: Keys,
}

impl KeyGroupSetting {
    /// The group's keys, in the file's order.
    pub(crate) fn key_group(&self) -> KeyGroup {
        self.keys.0.clone()
    }
}

/// A non-empty list of keys with distinct ids.
#[derive(Clone, Debug)]
struct Keys(KeyGroup);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct KeysVisitor;

        impl<'de> Visitor<'de> for KeysVisitor {
            type Value = Keys;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "a list of keys such as [{ id = \"K1\", ed25519_public_key = \"...\" }]",
                )
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Keys, A::Error> {
                let mut group = KeyGroup::new();
                while seq.next_element_seed(KeySeed(&mut group))?.is_some() {}
                if group.is_empty() {
                    return Err(de::Error::custom("a key group needs at least one key"));
                }
                Ok(Keys(group))
            }
        }

        de.deserialize_seq(KeysVisitor)
    }
}

/// Adds one key to the group being read, so a repeated id is reported at its own entry.
struct KeySeed<'a>(&'a mut KeyGroup);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<(), D::Error> {
        checked_table(de, "a key table", |raw: RawKey| {
            let (id, key) = raw.into_key()?;
            self.0.insert(id, key).map_err(|err| err.to_string())
        })
    }
}

/// The key sources, in the order errors list them.
const KEY_SOURCES: [&str; 4] = [
    "ed25519_public_key",
    "ed25519_public_key_file",
    "hmac_secret_file",
    "rsa_public_key_file",
];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    id: String,
    #[serde(default, deserialize_with = "de_ed25519_inline")]
    ed25519_public_key: Option<VerifyingKey>,
    #[serde(default, deserialize_with = "de_ed25519_file")]
    ed25519_public_key_file: Option<VerifyingKey>,
    #[serde(default, deserialize_with = "de_hmac_file")]
    hmac_secret_file: Option<VerifyingKey>,
    #[serde(default, deserialize_with = "de_rsa_file")]
    rsa_public_key_file: Option<VerifyingKey>,
    /// Named so that an inline secret gets its own explanation rather than "unknown field".
    #[serde(default, rename = "hmac_secret", deserialize_with = "de_inline_secret")]
    _hmac_secret: Option<std::convert::Infallible>,
}

impl RawKey {
    fn into_key(self) -> Result<(String, VerifyingKey), String> {
        let sources = [
            self.ed25519_public_key,
            self.ed25519_public_key_file,
            self.hmac_secret_file,
            self.rsa_public_key_file,
        ];
        let set: Vec<&str> = KEY_SOURCES
            .iter()
            .zip(&sources)
            .filter_map(|(name, key)| key.as_ref().map(|_| *name))
            .collect();
        if set.len() > 1 {
            return Err(format!(
                "key {:?} sets {}: give exactly one key source",
                self.id,
                set.join(" and ")
            ));
        }
        match sources.into_iter().flatten().next() {
            Some(key) => Ok((self.id, key)),
            None => Err(format!(
                "key {:?} needs one of {}",
                self.id,
                KEY_SOURCES.join(", ")
            )),
        }
    }
}

fn de_ed25519_inline<'de, D: Deserializer<'de>>(de: D) -> Result<Option<VerifyingKey>, D::Error> {
    checked_str(de, "base64 of an Ed25519 public key", ed25519_base64).map(Some)
}

fn de_ed25519_file<'de, D: Deserializer<'de>>(de: D) -> Result<Option<VerifyingKey>, D::Error> {
    checked_str(de, "a key file path", |path| {
        let bytes = read_key_file(path)?;
        // 32 raw bytes, else their base64 (43 or 44 characters, so never 32 bytes long).
        let key = if bytes.len() == 32 {
            ed25519_bytes(&bytes)
        } else {
            match std::str::from_utf8(&bytes) {
                Ok(text) => ed25519_base64(text),
                Err(_) => Err(format!(
                    "expected 32 raw bytes or their base64, found {} bytes",
                    bytes.len()
                )),
            }
        };
        key.map_err(|err| format!("`{path}`: {err}"))
    })
    .map(Some)
}

fn de_hmac_file<'de, D: Deserializer<'de>>(de: D) -> Result<Option<VerifyingKey>, D::Error> {
    checked_str(de, "a secret file path", |path| {
        // Byte for byte, as `tower-cdn sign --hmac` reads it.
        let secret = read_key_file(path)?;
        VerifyingKey::hmac_sha256(&secret)
            .map_err(|err| format!("`{path}` holds {} bytes: {err}", secret.len()))
    })
    .map(Some)
}

fn de_rsa_file<'de, D: Deserializer<'de>>(de: D) -> Result<Option<VerifyingKey>, D::Error> {
    checked_str(de, "a PEM file path", rsa_file).map(Some)
}

#[cfg(feature = "cloudfront-compat")]
fn rsa_file(path: &str) -> Result<VerifyingKey, String> {
    let path = file_path(path);
    let pem = std::fs::read_to_string(&path)
        .map_err(|err| format!("cannot read key file `{}`: {err}", path.display()))?;
    VerifyingKey::rsa_sha1_pem(&pem).map_err(|err| format!("`{}`: {err}", path.display()))
}

#[cfg(not(feature = "cloudfront-compat"))]
fn rsa_file(_path: &str) -> Result<VerifyingKey, String> {
    Err("RSA public keys need tower-cdn built with the `cloudfront-compat` feature".to_owned())
}

fn de_inline_secret<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<std::convert::Infallible>, D::Error> {
    de::IgnoredAny::deserialize(de)?;
    Err(de::Error::custom(
        "HMAC secrets are not accepted in the configuration file: put the secret in a file only \
         the server can read and name it with hmac_secret_file",
    ))
}

/// The bytes of a key file the configuration names (relative to the file's directory).
fn read_key_file(path: &str) -> Result<Vec<u8>, String> {
    let path = file_path(path);
    std::fs::read(&path).map_err(|err| format!("cannot read key file `{}`: {err}", path.display()))
}

/// Standard or URL-safe base64, padded or not, surrounding whitespace ignored.
fn ed25519_base64(text: &str) -> Result<VerifyingKey, String> {
    let text = text.trim();
    let bytes = STANDARD_PAD_INDIFFERENT
        .decode(text)
        .or_else(|_| URL_SAFE_PAD_INDIFFERENT.decode(text))
        .map_err(|_| "not base64 (standard or URL-safe) of an Ed25519 public key".to_owned())?;
    ed25519_bytes(&bytes)
}

fn ed25519_bytes(bytes: &[u8]) -> Result<VerifyingKey, String> {
    if bytes.len() != 32 {
        return Err(format!(
            "an Ed25519 public key is 32 bytes, this one is {}",
            bytes.len()
        ));
    }
    VerifyingKey::ed25519(bytes).map_err(|err| err.to_string())
}

/// `[geo_restriction]`: a country allow- or block-list, the viewer-country header to the
/// origin, or both, with the resolver that finds each viewer's country.
#[derive(Clone, Debug)]
pub(crate) struct GeoSetting {
    restriction: Option<GeoRestriction>,
    resolver: Resolver,
    forward_country: bool,
}

impl GeoSetting {
    /// Adds the restriction and the country forwarding to `builder`.
    pub(crate) fn apply(&self, mut builder: CdnLayerBuilder) -> CdnLayerBuilder {
        if let Some(restriction) = &self.restriction {
            builder = builder.geo_restriction(restriction.clone(), self.resolver.clone());
        }
        if self.forward_country {
            builder = builder.forward_viewer_country(self.resolver.clone());
        }
        builder
    }
}

impl<'de> Deserialize<'de> for GeoSetting {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        checked_table(de, "a geo_restriction table", RawGeo::check)
    }
}

/// The database is shared by every layer built from one setting.
#[derive(Clone, Debug)]
enum Resolver {
    Database(Arc<MaxMindResolver>),
    Header(HeaderResolver),
}

impl CountryResolver for Resolver {
    fn country(&self, ip: Option<IpAddr>, headers: &HeaderMap) -> Option<CountryCode> {
        match self {
            Resolver::Database(db) => db.country(ip, headers),
            Resolver::Header(header) => header.country(ip, headers),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGeo {
    #[serde(default, deserialize_with = "de_allow_list")]
    allow: Option<Vec<Country>>,
    block: Option<Vec<Country>>,
    unknown: Option<Unknown>,
    #[serde(default, deserialize_with = "de_database")]
    database: Option<Resolver>,
    #[serde(default, deserialize_with = "de_header")]
    header: Option<Resolver>,
    #[serde(default)]
    forward_country: bool,
}

impl RawGeo {
    fn check(self) -> Result<GeoSetting, String> {
        let resolver = match (self.database, self.header) {
            (Some(resolver), None) | (None, Some(resolver)) => resolver,
            (Some(_), Some(_)) => return Err("set database or header, not both".to_owned()),
            (None, None) => {
                return Err("set database (a MaxMind .mmdb file) or header (a header a \
                            trusted upstream sets) to find each viewer's country"
                    .to_owned())
            }
        };
        let list = match (self.allow, self.block) {
            (Some(_), Some(_)) => return Err("set allow or block, not both".to_owned()),
            (Some(countries), None) => Some(GeoRestriction::allow(countries)),
            (None, Some(countries)) => Some(GeoRestriction::block(countries)),
            (None, None) => None,
        };
        let restriction = match list {
            Some(list) => Some(
                list.unknown(self.unknown.map_or(GeoDefault::Allow, GeoDefault::from))
                    .build()
                    .map_err(|err| err.to_string())?,
            ),
            None if self.unknown.is_some() => {
                return Err("unknown applies only with allow or block".to_owned())
            }
            None if !self.forward_country => {
                return Err(
                    "set allow or block (or forward_country = true to only send \
                            viewers' country to the origin)"
                        .to_owned(),
                )
            }
            None => None,
        };
        Ok(GeoSetting {
            restriction,
            resolver,
            forward_country: self.forward_country,
        })
    }
}

/// A country code as the lists take it: two letters, assigned in ISO 3166-1.
struct Country(String);

impl AsRef<str> for Country {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        checked_str(de, "a country code such as \"GB\"", |code| {
            // The list's own checks, on one code, so the error points at that code.
            GeoRestriction::block([code])
                .build()
                .map(|_| Country(code.to_owned()))
                .map_err(|err| err.to_string())
        })
    }
}

fn de_allow_list<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<Country>>, D::Error> {
    let countries = Vec::<Country>::deserialize(de)?;
    if countries.is_empty() {
        return Err(de::Error::custom(AccessError::EmptyAllowList));
    }
    Ok(Some(countries))
}

fn de_database<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Resolver>, D::Error> {
    checked_str(de, "a MaxMind database path", |path| {
        MaxMindResolver::open(file_path(path))
            .map(|db| Resolver::Database(Arc::new(db)))
            .map_err(|err| err.to_string())
    })
    .map(Some)
}

fn de_header<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Resolver>, D::Error> {
    checked_str(de, "a header name", |name| {
        HeaderResolver::new(name)
            .map(Resolver::Header)
            .map_err(|err| err.to_string())
    })
    .map(Some)
}

#[derive(Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Unknown {
    Allow,
    Deny,
}

impl From<Unknown> for GeoDefault {
    fn from(unknown: Unknown) -> Self {
        match unknown {
            Unknown::Allow => GeoDefault::Allow,
            Unknown::Deny => GeoDefault::Deny,
        }
    }
}

/// `[rate_limit]`: a per-client request rate.
///
/// Clones share one set of buckets, as clones of [`RateLimit`] do.
#[derive(Clone, Debug)]
pub(crate) struct RateLimitSetting {
    limit: RateLimit,
}

impl RateLimitSetting {
    /// The limiter, for [`CdnLayerBuilder::rate_limit`].
    pub(crate) fn rate_limit(&self) -> RateLimit {
        self.limit.clone()
    }
}

impl<'de> Deserialize<'de> for RateLimitSetting {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        checked_table(de, "a rate_limit table", RawRateLimit::check)
    }
}

// Each value is checked on its own by the builder, so its error points at its line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    #[serde(default, deserialize_with = "de_per_second")]
    per_second: Option<u32>,
    #[serde(default, deserialize_with = "de_per_minute")]
    per_minute: Option<u32>,
    #[serde(default, deserialize_with = "de_burst")]
    burst: Option<u32>,
    #[serde(default, deserialize_with = "de_key_header")]
    key_header: Option<String>,
    #[serde(default, deserialize_with = "de_ipv6_prefix")]
    ipv6_prefix: Option<u8>,
    #[serde(default, deserialize_with = "de_max_keys")]
    max_keys: Option<usize>,
}

impl RawRateLimit {
    fn check(self) -> Result<RateLimitSetting, String> {
        let mut builder = match (self.per_second, self.per_minute) {
            (Some(n), None) => RateLimit::per_second(n),
            (None, Some(n)) => RateLimit::per_minute(n),
            (Some(_), Some(_)) => return Err("set per_second or per_minute, not both".to_owned()),
            (None, None) => return Err("set per_second or per_minute".to_owned()),
        };
        if let Some(burst) = self.burst {
            builder = builder.burst(burst);
        }
        if let Some(name) = &self.key_header {
            builder = builder.key_header(name);
        }
        if let Some(len) = self.ipv6_prefix {
            builder = builder.ipv6_prefix(len);
        }
        if let Some(max) = self.max_keys {
            builder = builder.max_keys(max);
        }
        let limit = builder.build().map_err(|err| err.to_string())?;
        Ok(RateLimitSetting { limit })
    }
}

fn rate_check(builder: RateLimitBuilder) -> Result<(), String> {
    builder.build().map(drop).map_err(|err| err.to_string())
}

fn de_per_second<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    de_checked(de, |&n| rate_check(RateLimit::per_second(n)))
}

fn de_per_minute<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    de_checked(de, |&n| rate_check(RateLimit::per_minute(n)))
}

fn de_burst<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u32>, D::Error> {
    de_checked(de, |&n| rate_check(RateLimit::per_second(1).burst(n)))
}

fn de_key_header<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    de_checked(de, |name: &String| {
        rate_check(RateLimit::per_second(1).key_header(name))
    })
}

fn de_ipv6_prefix<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u8>, D::Error> {
    de_checked(de, |&len| {
        rate_check(RateLimit::per_second(1).ipv6_prefix(len))
    })
}

fn de_max_keys<'de, D: Deserializer<'de>>(de: D) -> Result<Option<usize>, D::Error> {
    de_checked(de, |&n| rate_check(RateLimit::per_second(1).max_keys(n)))
}

/// `[origin_concurrency]`: a cap on concurrent origin requests.
///
/// Clones share one set of slots, as clones of [`OriginConcurrency`] do.
#[derive(Clone, Debug)]
pub(crate) struct OriginConcurrencySetting {
    cap: OriginConcurrency,
}

impl OriginConcurrencySetting {
    /// The cap, for [`CdnLayerBuilder::origin_concurrency`].
    pub(crate) fn origin_concurrency(&self) -> OriginConcurrency {
        self.cap.clone()
    }
}

impl<'de> Deserialize<'de> for OriginConcurrencySetting {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        checked_table(
            de,
            "an origin_concurrency table",
            |raw: RawOriginConcurrency| {
                let mut builder = OriginConcurrency::builder(raw.max);
                if let Some(timeout) = raw.queue_timeout {
                    builder = builder.queue_timeout(timeout);
                }
                let cap = builder.build().map_err(|err| err.to_string())?;
                Ok(OriginConcurrencySetting { cap })
            },
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOriginConcurrency {
    #[serde(deserialize_with = "de_max")]
    max: usize,
    #[serde(default, deserialize_with = "de_queue_timeout")]
    queue_timeout: Option<Duration>,
}

fn de_max<'de, D: Deserializer<'de>>(de: D) -> Result<usize, D::Error> {
    let max = usize::deserialize(de)?;
    match OriginConcurrency::builder(max).build() {
        Ok(_) => Ok(max),
        Err(err) => Err(de::Error::custom(err)),
    }
}

fn de_queue_timeout<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    // "0s" is meaningful here: never wait, answer 503 at once when the cap is reached.
    let parse = |text: &str| match text.trim() {
        "0" | "0s" | "0ms" => Ok(Duration::ZERO),
        text => parse_duration(text),
    };
    checked_str(de, "a duration such as \"1s\" (\"0s\": never wait)", parse).map(Some)
}

/// `trusted_proxies`: the proxies whose `X-Forwarded-For` names the viewer, as CIDR ranges.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(transparent)]
pub(crate) struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    /// Sets the ranges on `builder`, which parses them as they were checked here.
    pub(crate) fn apply(&self, builder: CdnLayerBuilder) -> CdnLayerBuilder {
        builder.trusted_proxies(self.0.iter().map(|cidr| cidr.0.clone()))
    }
}

#[derive(Clone, Debug)]
struct Cidr(String);

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        checked_str(
            de,
            "a CIDR range such as \"10.0.0.0/8\"",
            |text| match IpRange::parse(text) {
                Some(_) => Ok(Cidr(text.to_owned())),
                None => Err(ConfigError::TrustedProxy(text.to_owned()).to_string()),
            },
        )
    }
}

// toml gives an error the position of the value whose deserializer was running when it was
// raised. A `try_from` conversion runs after that deserializer returns, and entries of an
// array get no position of their own, so the checks below run inside the visitors.

/// Reads a table into `R`, then checks and converts it.
fn checked_table<'de, D, R, T>(
    de: D,
    expecting: &'static str,
    check: impl FnOnce(R) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    R: Deserialize<'de>,
{
    struct TableVisitor<R, F> {
        expecting: &'static str,
        check: F,
        raw: PhantomData<R>,
    }

    impl<'de, R, T, F> Visitor<'de> for TableVisitor<R, F>
    where
        R: Deserialize<'de>,
        F: FnOnce(R) -> Result<T, String>,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
            let raw = R::deserialize(de::value::MapAccessDeserializer::new(map))?;
            (self.check)(raw).map_err(de::Error::custom)
        }
    }

    de.deserialize_map(TableVisitor {
        expecting,
        check,
        raw: PhantomData,
    })
}

/// Reads a string and parses it.
fn checked_str<'de, D, T>(
    de: D,
    expecting: &'static str,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
{
    struct StrVisitor<F> {
        expecting: &'static str,
        parse: F,
    }

    impl<T, F> Visitor<'_> for StrVisitor<F>
    where
        F: FnOnce(&str) -> Result<T, String>,
    {
        type Value = T;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str(self.expecting)
        }

        fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
            (self.parse)(text).map_err(E::custom)
        }
    }

    de.deserialize_str(StrVisitor { expecting, parse })
}

/// Reads a table field's value and checks it (a field's error keeps the field's position).
fn de_checked<'de, D, T>(
    de: D,
    check: impl FnOnce(&T) -> Result<(), String>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    let value = T::deserialize(de)?;
    check(&value).map_err(de::Error::custom)?;
    Ok(Some(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::PathBuf;

    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use bytes::Bytes;
    use http::{Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use tower::ServiceExt;
    use tower_layer::Layer;

    use crate::server::SignArgs;
    use crate::{Behavior, CdnLayer, ClientAddr, ManualClock};

    /// What `ManualClock::new()` reads, in seconds since the epoch.
    const NOW: u64 = 1_767_225_600;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct File {
        #[serde(default)]
        key_groups: BTreeMap<String, KeyGroupSetting>,
        geo_restriction: Option<GeoSetting>,
        rate_limit: Option<RateLimitSetting>,
        origin_concurrency: Option<OriginConcurrencySetting>,
        trusted_proxies: Option<TrustedProxies>,
    }

    fn parse(text: &str) -> File {
        toml::from_str(text).unwrap_or_else(|err| panic!("{err}"))
    }

    /// Asserts that reading `text` fails with a message holding every one of `parts`.
    #[track_caller]
    fn assert_error(text: &str, parts: &[&str]) {
        let err = toml::from_str::<File>(text).unwrap_err().to_string();
        for part in parts {
            assert!(err.contains(part), "{part:?} missing from:\n{err}");
        }
    }

    /// A directory of key files, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!(
                "tower-cdn-access-config-{}-{name}",
                std::process::id()
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        /// Writes `bytes` to `name` and returns the path as the file gives it.
        fn write(&self, name: &str, bytes: impl AsRef<[u8]>) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, bytes).unwrap();
            path.to_str().unwrap().to_owned()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn public_key(seed: u8) -> [u8; 32] {
        ed25519_dalek::SigningKey::from_bytes(&[seed; 32])
            .verifying_key()
            .to_bytes()
    }

    /// Sends `req` through `layer` to an origin that answers with the viewer-country header
    /// it received; returns the status and the body.
    async fn send(layer: &CdnLayer, req: Request<()>) -> (StatusCode, String) {
        let origin = tower::service_fn(|req: Request<()>| async move {
            let country = req
                .headers()
                .get("cloudfront-viewer-country")
                .map_or("none", |v| v.to_str().unwrap())
                .to_owned();
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(country))))
        });
        let res = layer.layer(origin).oneshot(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut req = Request::get(uri).header("host", "example.com");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.body(()).unwrap()
    }

    #[tokio::test]
    async fn every_key_form_verifies_what_tower_cdn_sign_makes() {
        let dir = TempDir::new("key-forms");
        // A seed whose public key has URL-safe-only characters, so that form is exercised.
        let url_safe_seed = (2..=u8::MAX)
            .find(|&s| URL_SAFE_NO_PAD.encode(public_key(s)).contains(['-', '_']))
            .unwrap();
        let raw_file = dir.write("k3.pub", public_key(3));
        let text_file = dir.write("k4.pub", format!("{}\n", STANDARD.encode(public_key(4))));
        let secret = b"a shared secret of 32 bytes.....";
        let secret_file = dir.write("h1.secret", secret);
        let text = format!(
            "[key_groups.videos]\n\
             keys = [\n\
               {{ id = \"K1\", ed25519_public_key = \"{}\" }},\n\
               {{ id = \"K2\", ed25519_public_key = \"{}\" }},\n\
               {{ id = \"K3\", ed25519_public_key_file = '{raw_file}' }},\n\
               {{ id = \"K4\", ed25519_public_key_file = '{text_file}' }},\n\
               {{ id = \"H1\", hmac_secret_file = '{secret_file}' }},\n\
             ]\n",
            STANDARD.encode(public_key(1)),
            URL_SAFE_NO_PAD.encode(public_key(url_safe_seed)),
        );
        let group = parse(&text).key_groups["videos"].key_group();
        assert_eq!(
            group.key_ids().collect::<Vec<_>>(),
            ["K1", "K2", "K3", "K4", "H1"]
        );
        assert_eq!(group.get("H1").unwrap().algorithm(), "hmac-sha256");
        assert_eq!(group.get("K2").unwrap().algorithm(), "ed25519");

        let layer = CdnLayer::builder()
            .clock(ManualClock::new())
            .behavior("/private/*", Behavior::new().trusted_key_group(group))
            .build()
            .unwrap();
        let sign = |key_id: &str, key_file: String, hmac: bool| {
            let args = SignArgs {
                url: "http://example.com/private/a".to_owned(),
                key_id: key_id.to_owned(),
                key_file: key_file.into(),
                hmac,
                valid_for: 60,
                resource: None,
            };
            let url = args.sign(NOW).unwrap();
            get(url.strip_prefix("http://example.com").unwrap(), &[])
        };
        let seeds = [("K1", 1), ("K2", url_safe_seed), ("K3", 3), ("K4", 4)];
        for (id, seed) in seeds {
            let seed_file = dir.write(&format!("{id}.seed"), [seed; 32]);
            let (status, _) = send(&layer, sign(id, seed_file, false)).await;
            assert_eq!(status, StatusCode::OK, "{id}");
        }
        let (status, _) = send(&layer, sign("H1", secret_file, true)).await;
        assert_eq!(status, StatusCode::OK, "H1");
        let wrong_seed = dir.write("wrong.seed", [9; 32]);
        let (status, _) = send(&layer, sign("K1", wrong_seed, false)).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn ed25519_public_keys_in_any_base64_form() {
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};

        for seed in 1..=8 {
            let key = public_key(seed);
            for engine in [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD] {
                let text = format!(" {}\n", engine.encode(key));
                assert!(ed25519_base64(&text).is_ok(), "{text:?}");
            }
        }
    }

    #[cfg(feature = "cloudfront-compat")]
    #[test]
    fn rsa_public_key_file_with_cloudfront_compat() {
        const PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEArwh4xEJNA4Qyf+PZeBwD
6OGqr0aLsbP2vbVEEPsTuxJO/Ynk9833OPm5kPqhAn1FO7hY3eTuIDo1oQPJApXL
XKPLLJsSGMpkwfyKMHYR3tYC308mige6rRlozKTxaxndEr00Lf4I4ZZwNaaHXYjz
gGsHIgncoPz07wcKkMZmErYOkF2YOm3hpGuQ00l8/25fjUI8ocDzE+uz4tGAUfyK
XH7U255IuP0WvvfYQQrnQkMALERTiMp+5VCcaFQ2hfMURj2sIWY2WKZh5l/wakB9
0N+Cspvj+c1ngzPR6TnofslW7E/iLjfecqJqWwPrTkchtO5hy9K6lk+zw9qrHeDD
0QIDAQAB
-----END PUBLIC KEY-----
";
        let dir = TempDir::new("rsa");
        let pem = dir.write("cloudfront.pem", PEM);
        let junk = dir.write("junk.pem", "not a key");
        let text = format!(
            "[key_groups.cf]\nkeys = [{{ id = \"APKAEXAMPLE\", rsa_public_key_file = '{pem}' }}]\n"
        );
        let group = parse(&text).key_groups["cf"].key_group();
        assert_eq!(group.get("APKAEXAMPLE").unwrap().algorithm(), "rsa-sha1");
        assert_error(
            &format!("[key_groups.cf]\nkeys = [{{ id = \"A\", rsa_public_key_file = '{junk}' }}]"),
            &["line 2", "rsa_public_key_file", "not a PEM RSA public key"],
        );
    }

    #[cfg(not(feature = "cloudfront-compat"))]
    #[test]
    fn rsa_public_key_file_needs_cloudfront_compat() {
        assert_error(
            "[key_groups.cf]\n\
             keys = [{ id = \"APKAEXAMPLE\", rsa_public_key_file = 'cloudfront.pem' }]\n",
            &[
                "line 2",
                "rsa_public_key_file",
                "`cloudfront-compat` feature",
            ],
        );
    }

    #[test]
    fn key_errors_name_the_line_and_key() {
        let dir = TempDir::new("key-errors");
        let short_secret = dir.write("short.secret", "15 bytes secret");
        let secret = dir.write("h.secret", "a secret of at least 16 bytes");
        let not_a_key = dir.write("junk.pub", [0xff; 10]);
        let missing = dir.0.join("missing.pub");
        let missing = missing.to_str().unwrap();
        let good = STANDARD.encode(public_key(1));
        let short = STANDARD.encode([1; 31]);
        let group = |fourth: &str| {
            format!(
                "[key_groups.videos]\n\
                 keys = [\n  {{ id = \"K1\", ed25519_public_key = \"{good}\" }},\n  {fourth},\n]\n"
            )
        };
        let cases: [(String, &[&str]); 11] = [
            (
                "{ id = \"K2\", ed25519_public_key = \"not base64!\" }".into(),
                &["ed25519_public_key", "not base64"],
            ),
            (
                format!("{{ id = \"K2\", ed25519_public_key = \"{short}\" }}"),
                &["ed25519_public_key", "32 bytes, this one is 31"],
            ),
            (
                format!("{{ id = \"K2\", ed25519_public_key_file = '{missing}' }}"),
                &[
                    "ed25519_public_key_file",
                    "cannot read key file",
                    "missing.pub",
                ],
            ),
            (
                format!("{{ id = \"K2\", ed25519_public_key_file = '{not_a_key}' }}"),
                &["ed25519_public_key_file", "found 10 bytes"],
            ),
            (
                format!("{{ id = \"H1\", hmac_secret_file = '{short_secret}' }}"),
                &[
                    "hmac_secret_file",
                    "holds 15 bytes",
                    "shorter than 16 bytes",
                ],
            ),
            (
                "{ id = \"H1\", hmac_secret = \"inline secret of 32 bytes......\" }".into(),
                &["hmac_secret", "not accepted", "hmac_secret_file"],
            ),
            (
                format!(
                    "{{ id = \"K2\", ed25519_public_key = \"{good}\", \
                     hmac_secret_file = '{secret}' }}"
                ),
                &[
                    "ed25519_public_key and hmac_secret_file",
                    "exactly one key source",
                ],
            ),
            (
                "{ id = \"K2\" }".into(),
                &["id = \"K2\"", "needs one of ed25519_public_key"],
            ),
            (
                format!("{{ id = \"K1\", hmac_secret_file = '{secret}' }}"),
                &["id = \"K1\"", "key id \"K1\" is already in the key group"],
            ),
            (
                format!("{{ id = \"K 2\", hmac_secret_file = '{secret}' }}"),
                &["id = \"K 2\"", "invalid key id"],
            ),
            (
                "{ id = \"E1\", ecdsa_public_key = \"AAAA\" }".into(),
                &["ecdsa_public_key", "unknown field `ecdsa_public_key`"],
            ),
        ];
        for (fourth, parts) in cases {
            assert_error(&group(&fourth), &[&["line 4"], parts].concat());
        }
        assert_error(
            "[key_groups.videos]\nkeys = []\n",
            &["line 2", "keys = []", "a key group needs at least one key"],
        );
        assert_error(
            &format!(
                "[key_groups.videos]\n\
                 keys = [{{ id = \"K1\", ed25519_public_key = \"{good}\" }}]\n\
                 name = \"videos\"\n"
            ),
            &["line 3", "unknown field `name`"],
        );
    }

    fn from_ip(ip: &str) -> Request<()> {
        let mut req = get("/", &[]);
        let addr = SocketAddr::new(ip.parse().unwrap(), 5000);
        req.extensions_mut().insert(ClientAddr(addr));
        req
    }

    #[tokio::test]
    async fn a_header_geo_setting_denies_a_blocked_country_through_the_layer() {
        let geo = parse(
            "[geo_restriction]\n\
             block = [\"fr\"]\n\
             unknown = \"allow\"\n\
             header = \"x-lb-country\"\n\
             forward_country = true\n",
        )
        .geo_restriction
        .unwrap();
        let layer = geo.apply(CdnLayer::builder()).build().unwrap();
        let (status, _) = send(&layer, get("/", &[("x-lb-country", "FR")])).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        let (status, country) = send(&layer, get("/", &[("x-lb-country", "GB")])).await;
        assert_eq!((status, country.as_str()), (StatusCode::OK, "GB"));
        // The default for an unknown country is to serve it.
        let (status, _) = send(&layer, get("/other", &[])).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn a_database_allow_list_and_a_forward_only_setting() {
        use mmdb_writer::{ipnet::IpNet, Value, Writer};

        let mut writer = Writer::new("Test-GeoIP2-Country");
        for (net, iso) in [("192.0.2.0/24", "GB"), ("198.51.100.0/24", "KP")] {
            let country = Value::map([("country", Value::map([("iso_code", Value::from(iso))]))]);
            writer
                .insert_value(net.parse::<IpNet>().unwrap(), country)
                .unwrap();
        }
        let dir = TempDir::new("geo");
        let database = dir.write("country.mmdb", writer.to_bytes().unwrap());
        let geo = parse(&format!(
            "[geo_restriction]\nallow = [\"GB\", \"FR\"]\nunknown = \"deny\"\n\
             database = '{database}'\n"
        ))
        .geo_restriction
        .unwrap();
        assert!(
            format!("{geo:?}").contains("Test-GeoIP2-Country"),
            "{geo:?}"
        );
        let layer = geo.apply(CdnLayer::builder()).build().unwrap();
        let (status, country) = send(&layer, from_ip("192.0.2.7")).await;
        assert_eq!((status, country.as_str()), (StatusCode::OK, "none"));
        for denied in ["198.51.100.7", "203.0.113.7"] {
            assert_eq!(send(&layer, from_ip(denied)).await.0, StatusCode::FORBIDDEN);
        }

        let forward =
            parse("[geo_restriction]\nheader = \"x-lb-country\"\nforward_country = true\n")
                .geo_restriction
                .unwrap();
        let layer = forward.apply(CdnLayer::builder()).build().unwrap();
        let (status, country) = send(&layer, get("/", &[("x-lb-country", "KP")])).await;
        assert_eq!((status, country.as_str()), (StatusCode::OK, "KP"));
    }

    #[test]
    fn geo_errors_name_the_line_and_key() {
        let header = "header = \"x-lb-country\"";
        let cases: [(String, &[&str]); 12] = [
            (
                format!("allow = [\"GB\", \"UK\"]\n{header}"),
                &["line 2", "allow", "\"UK\"", "the United Kingdom is GB"],
            ),
            (
                format!("block = [\"XX\"]\n{header}"),
                &["line 2", "block", "placeholder for an unknown country"],
            ),
            (
                format!("allow = []\n{header}"),
                &["line 2", "allow", "allow-list needs a country"],
            ),
            (
                format!("allow = [\"GB\"]\nblock = [\"FR\"]\n{header}"),
                &[
                    "line 1",
                    "[geo_restriction]",
                    "set allow or block, not both",
                ],
            ),
            (
                "block = [\"FR\"]".into(),
                &["line 1", "set database (a MaxMind .mmdb file) or header"],
            ),
            (
                format!("block = [\"FR\"]\ndatabase = 'a.mmdb'\n{header}"),
                &["line 3", "database", "cannot use geo database a.mmdb"],
            ),
            (
                "block = [\"FR\"]\nheader = \"x lb\"".into(),
                &["line 3", "header", "invalid header name \"x lb\""],
            ),
            (
                format!("block = [\"FR\"]\nunknown = \"maybe\"\n{header}"),
                &["line 3", "unknown", "unknown variant `maybe`"],
            ),
            (
                format!("unknown = \"deny\"\nforward_country = true\n{header}"),
                &["line 1", "unknown applies only with allow or block"],
            ),
            (
                header.into(),
                &["line 1", "set allow or block (or forward_country = true"],
            ),
            (
                format!("countries = [\"FR\"]\n{header}"),
                &["line 2", "unknown field `countries`"],
            ),
            (
                format!("block = [\"FR\"]\nforward_country = \"yes\"\n{header}"),
                &["line 3", "forward_country", "expected a boolean"],
            ),
        ];
        for (body, parts) in cases {
            assert_error(&format!("[geo_restriction]\n{body}\n"), parts);
        }
    }

    #[test]
    fn rate_limit_forms() {
        let file = parse(
            "[rate_limit]\nper_second = 100\nburst = 200\nkey_header = \"x-user-id\"\n\
             ipv6_prefix = 56\nmax_keys = 5000\n",
        );
        let limit = file.rate_limit.unwrap().rate_limit();
        assert_eq!(limit.max_keys(), 5000);
        let debug = format!("{limit:?}");
        for part in [
            "requests: 100",
            "period: 1s",
            "burst: 200",
            "\"x-user-id\"",
            "ipv6_prefix: 56",
        ] {
            assert!(debug.contains(part), "{part} in {debug}");
        }
        let limit = parse("[rate_limit]\nper_minute = 600\n")
            .rate_limit
            .unwrap()
            .rate_limit();
        let debug = format!("{limit:?}");
        assert!(
            debug.contains("period: 60s") && debug.contains("burst: 600"),
            "{debug}"
        );
        assert_eq!(limit.max_keys(), RateLimit::DEFAULT_MAX_KEYS);
    }

    #[test]
    fn rate_limit_errors_name_the_line_and_key() {
        let cases: [(&str, &[&str]); 10] = [
            (
                "per_second = 0",
                &["line 2", "per_second", "invalid rate 0 requests"],
            ),
            (
                "per_minute = 0",
                &["line 2", "per_minute", "invalid rate 0 requests"],
            ),
            (
                "per_second = -1",
                &["line 2", "per_second", "invalid value"],
            ),
            (
                "per_second = 1\nper_minute = 60",
                &["line 1", "set per_second or per_minute, not both"],
            ),
            ("burst = 5", &["line 1", "set per_second or per_minute"]),
            (
                "per_second = 5\nburst = 0",
                &["line 3", "burst", "invalid burst 0"],
            ),
            (
                "per_second = 5\nipv6_prefix = 129",
                &["line 3", "ipv6_prefix", "must be 1 to 128"],
            ),
            (
                "per_second = 5\nmax_keys = 0",
                &["line 3", "max_keys", "invalid tracked-client cap 0"],
            ),
            (
                "per_second = 5\nkey_header = \"x user\"",
                &["line 3", "key_header", "invalid header name"],
            ),
            (
                "per_second = 5\nper_hour = 5",
                &["line 3", "unknown field `per_hour`"],
            ),
        ];
        for (body, parts) in cases {
            assert_error(&format!("[rate_limit]\n{body}\n"), parts);
        }
    }

    #[test]
    fn origin_concurrency_forms_and_errors() {
        let cap = parse("[origin_concurrency]\nmax = 64\nqueue_timeout = \"250ms\"\n")
            .origin_concurrency
            .unwrap()
            .origin_concurrency();
        assert_eq!(
            (cap.max(), cap.queue_timeout()),
            (64, Duration::from_millis(250))
        );
        let cap = parse("origin_concurrency = { max = 8 }")
            .origin_concurrency
            .unwrap()
            .origin_concurrency();
        assert_eq!(
            cap.queue_timeout(),
            OriginConcurrency::DEFAULT_QUEUE_TIMEOUT
        );
        let never_wait = parse("origin_concurrency = { max = 8, queue_timeout = \"0s\" }")
            .origin_concurrency
            .unwrap()
            .origin_concurrency();
        assert_eq!(never_wait.queue_timeout(), Duration::ZERO);

        let cases: [(&str, &[&str]); 4] = [
            (
                "max = 0",
                &["line 2", "max", "invalid origin concurrency 0"],
            ),
            ("queue_timeout = \"1s\"", &["line 1", "missing field `max`"]),
            (
                "max = 8\nqueue_timeout = \"soon\"",
                &["line 3", "queue_timeout", "not a duration"],
            ),
            (
                "max = 8\nqueue = \"1s\"",
                &["line 3", "unknown field `queue`"],
            ),
        ];
        for (body, parts) in cases {
            assert_error(&format!("[origin_concurrency]\n{body}\n"), parts);
        }
    }

    #[test]
    fn trusted_proxies_forms_and_errors() {
        let proxies = parse("trusted_proxies = [\"10.0.0.0/8\", \"2001:db8::/32\", \"192.0.2.1\"]")
            .trusted_proxies
            .unwrap();
        assert!(proxies.apply(CdnLayer::builder()).build().is_ok());
        assert_error(
            "trusted_proxies = [\n  \"10.0.0.0/8\",\n  \"10.0.0.0/33\",\n]\n",
            &[
                "line 3",
                "10.0.0.0/33",
                "trusted proxy must be a CIDR range",
            ],
        );
        assert_error(
            "\ntrusted_proxies = \"10.0.0.0/8\"\n",
            &["line 2", "trusted_proxies", "invalid type: string"],
        );
    }
}
