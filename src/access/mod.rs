//! Who may reach the edge at all: geo restriction and abuse limits.
//!
//! Everything here is decided in the viewer-request phase, before the cache is consulted: a
//! viewer from a denied country ([`GeoRestriction`], with the country found by a
//! [`CountryResolver`] such as `MaxMindResolver` (feature `geo`) or [`HeaderResolver`]) or over its request
//! rate ([`RateLimit`]) is answered 403 or 429 without ever receiving a cached object and
//! without reaching the origin. Only cache misses then queue for an origin slot
//! ([`OriginConcurrency`]), so a flood of misses cannot take the origin down while hits keep
//! flowing. All configuration is validated when it is built, with an [`AccessError`] naming
//! the offending input.

mod geo;
mod ip_range;
mod limit;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

#[cfg(feature = "geo")]
pub use geo::MaxMindResolver;
pub use geo::{
    CountryCode, CountryResolver, GeoDefault, GeoRestriction, GeoRestrictionBuilder, HeaderResolver,
};
pub(crate) use ip_range::IpRange;
pub(crate) use limit::too_many_requests;
pub use limit::{OriginConcurrency, OriginConcurrencyBuilder, RateLimit, RateLimitBuilder};

/// Invalid geo-restriction or abuse-limit configuration, carrying the offending input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AccessError {
    /// Not a usable ISO 3166-1 alpha-2 country code.
    CountryCode {
        /// The code as given.
        code: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// An allow-list with no countries, which would deny every viewer with a known country.
    EmptyAllowList,
    /// Not a valid HTTP header name.
    HeaderName(String),
    /// A MaxMind-format database that could not be opened or read.
    GeoDatabase {
        /// The file as given.
        path: PathBuf,
        /// Why it could not be used.
        reason: String,
    },
    /// A rate of zero requests, or over a period that is zero or longer than a day.
    Rate {
        /// Requests allowed per period, as given.
        requests: u32,
        /// The period, as given.
        per: Duration,
    },
    /// A burst of zero requests.
    Burst(u32),
    /// A cap of zero tracked clients.
    MaxKeys(usize),
    /// An IPv6 prefix length outside `1..=128`.
    Ipv6Prefix(u8),
    /// An origin concurrency cap of zero, or over tokio's semaphore limit.
    Concurrency(usize),
}

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccessError::CountryCode { code, reason } => {
                write!(f, "invalid country code {code:?}: {reason}")
            }
            AccessError::EmptyAllowList => f.write_str("a country allow-list needs a country"),
            AccessError::HeaderName(n) => write!(f, "invalid header name {n:?}"),
            AccessError::GeoDatabase { path, reason } => {
                write!(f, "cannot use geo database {}: {reason}", path.display())
            }
            AccessError::Rate { requests, per } => {
                write!(f, "invalid rate {requests} requests per {per:?}")
            }
            AccessError::Burst(b) => write!(f, "invalid burst {b}: must be at least 1"),
            AccessError::MaxKeys(n) => {
                write!(f, "invalid tracked-client cap {n}: must be at least 1")
            }
            AccessError::Ipv6Prefix(p) => {
                write!(f, "invalid IPv6 prefix length {p}: must be 1 to 128")
            }
            AccessError::Concurrency(n) => {
                write!(f, "invalid origin concurrency {n}: must be at least 1")
            }
        }
    }
}

impl std::error::Error for AccessError {}
