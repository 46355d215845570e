//! Cache policies: TTL clamps like CloudFront's, with presets named after its managed ones.

use std::time::Duration;

use crate::error::ConfigError;
use crate::rfc::freshness::TtlRules;

/// How long objects stay fresh at the edge, like a CloudFront cache policy.
///
/// The origin's freshness (`s-maxage`, `max-age`, `Expires`, or a heuristic from
/// `Last-Modified`) is clamped to `min_ttl..=max_ttl`; a response without freshness
/// information gets `default_ttl`. The default policy is plain RFC 9111: default TTL 0, so a
/// response without freshness information or a heuristic is not stored.
///
/// `no-store` and `private` responses are never stored, whatever `min_ttl` says: a shared
/// cache must not keep them (RFC 9111 §5.2.2.5, §5.2.2.7).
///
/// Errors without freshness information (no `s-maxage`, `max-age` or `Expires`) never get
/// the default TTL. Under [`rfc`](Self::rfc) they are stored only where RFC 9111 allows a
/// heuristic (404, 405, 410, 414, 501 with a `Last-Modified`); with an
/// [`error_caching_min_ttl`](Self::error_caching_min_ttl), as in
/// [`caching_optimized`](Self::caching_optimized), 404, 414, 500, 501, 502, 503 and 504 are
/// kept that long, CloudFront's error caching minimum TTL.
///
/// ```
/// use std::time::Duration;
/// use tower_cdn::CachePolicy;
///
/// let policy = CachePolicy::caching_optimized().max_ttl(Duration::from_secs(3600));
/// assert_eq!(policy.default_ttl_value(), Duration::from_secs(3600));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CachePolicy {
    min_ttl: Duration,
    default_ttl: Duration,
    max_ttl: Duration,
    enabled: bool,
    heuristic_fraction: f64,
    heuristic_max: Duration,
    error_caching_min_ttl: Duration,
}

impl Default for CachePolicy {
    fn default() -> Self {
        Self::rfc()
    }
}

impl CachePolicy {
    /// RFC 9111 behaviour: min 0, default 0, max one year; heuristic freshness is 10% of the
    /// time since `Last-Modified`, at most one day; no error caching TTL, so an error without
    /// freshness information is stored only for a heuristic RFC 9111 allows.
    pub fn rfc() -> Self {
        Self {
            min_ttl: Duration::ZERO,
            default_ttl: Duration::ZERO,
            max_ttl: Duration::from_secs(31_536_000),
            enabled: true,
            heuristic_fraction: 0.1,
            heuristic_max: Duration::from_secs(86_400),
            error_caching_min_ttl: Duration::ZERO,
        }
    }

    /// CloudFront's `Managed-CachingOptimized`: min 1 s, default 1 day, max 1 year, and
    /// CloudFront's error caching minimum TTL of 10 s.
    pub fn caching_optimized() -> Self {
        Self {
            min_ttl: Duration::from_secs(1),
            default_ttl: Duration::from_secs(86_400),
            error_caching_min_ttl: Duration::from_secs(10),
            ..Self::rfc()
        }
    }

    /// CloudFront's `Managed-CachingDisabled`: nothing is looked up or stored.
    pub fn caching_disabled() -> Self {
        Self {
            min_ttl: Duration::ZERO,
            default_ttl: Duration::ZERO,
            max_ttl: Duration::ZERO,
            enabled: false,
            ..Self::rfc()
        }
    }

    /// The lower bound on the freshness of stored objects.
    pub fn min_ttl(mut self, ttl: Duration) -> Self {
        self.min_ttl = ttl;
        self
    }

    /// The freshness of responses that carry none.
    pub fn default_ttl(mut self, ttl: Duration) -> Self {
        self.default_ttl = ttl;
        self
    }

    /// The upper bound on the freshness of stored objects.
    pub fn max_ttl(mut self, ttl: Duration) -> Self {
        self.max_ttl = ttl;
        self
    }

    /// The fraction of the time since `Last-Modified` used as heuristic freshness
    /// (RFC 9111 §4.2.2), and its cap. `0.0` turns heuristics off.
    pub fn heuristic(mut self, fraction: f64, max: Duration) -> Self {
        self.heuristic_fraction = fraction;
        self.heuristic_max = max;
        self
    }

    /// How long 404, 414, 500, 501, 502, 503 and 504 responses without freshness
    /// information are stored (CloudFront's error caching minimum TTL). `Duration::ZERO`, the
    /// [`rfc`](Self::rfc) default, stores them only for a heuristic RFC 9111 allows: one
    /// overload or one bad response is then not replayed to every viewer.
    /// [`CdnLayerBuilder::error_caching_min_ttl`](crate::CdnLayerBuilder::error_caching_min_ttl)
    /// overrides it for every behavior, and
    /// [`CdnLayerBuilder::error_ttl`](crate::CdnLayerBuilder::error_ttl) for one status.
    pub fn error_caching_min_ttl(mut self, ttl: Duration) -> Self {
        self.error_caching_min_ttl = ttl;
        self
    }

    /// The configured error caching minimum TTL.
    pub fn error_caching_min_ttl_value(&self) -> Duration {
        self.error_caching_min_ttl
    }

    /// The configured default TTL.
    pub fn default_ttl_value(&self) -> Duration {
        self.default_ttl.min(self.max_ttl)
    }

    /// Whether this policy caches at all.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if !(self.min_ttl <= self.default_ttl && self.default_ttl <= self.max_ttl) && self.enabled {
            // CachingOptimized-style shortening of max below default is allowed: the default is
            // clamped to max. Only min above max is contradictory.
            if self.min_ttl > self.max_ttl || self.min_ttl > self.default_ttl {
                return Err(ConfigError::TtlOrder {
                    min: self.min_ttl,
                    default: self.default_ttl,
                    max: self.max_ttl,
                });
            }
        }
        if !(0.0..=1.0).contains(&self.heuristic_fraction) {
            return Err(ConfigError::HeuristicFraction(
                self.heuristic_fraction.to_string(),
            ));
        }
        Ok(())
    }

    /// The rules for a behavior; `error_override` is the layer's error caching minimum TTL,
    /// which, when set, replaces the policy's.
    pub(crate) fn rules(&self, error_override: Option<Duration>) -> TtlRules {
        TtlRules {
            min: self.min_ttl.as_secs(),
            default: self.default_ttl_value().as_secs(),
            max: self.max_ttl.as_secs(),
            heuristic_fraction: self.heuristic_fraction,
            heuristic_max: self.heuristic_max.as_secs(),
            error_min: error_override
                .unwrap_or(self.error_caching_min_ttl)
                .as_secs(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_above_max_is_rejected() {
        let p = CachePolicy::rfc()
            .min_ttl(Duration::from_secs(10))
            .max_ttl(Duration::from_secs(5));
        assert!(matches!(p.validate(), Err(ConfigError::TtlOrder { .. })));
    }

    #[test]
    fn presets_are_valid() {
        CachePolicy::rfc().validate().unwrap();
        CachePolicy::caching_optimized().validate().unwrap();
        CachePolicy::caching_disabled().validate().unwrap();
        assert!(!CachePolicy::caching_disabled().is_enabled());
    }

    #[test]
    fn only_the_cloudfront_preset_caches_errors_without_freshness() {
        assert_eq!(CachePolicy::rfc().rules(None).error_min, 0);
        assert_eq!(CachePolicy::default().rules(None).error_min, 0);
        assert_eq!(CachePolicy::caching_optimized().rules(None).error_min, 10);
        let ten = Some(Duration::from_secs(10));
        assert_eq!(CachePolicy::rfc().rules(ten).error_min, 10);
        let off = Some(Duration::ZERO);
        assert_eq!(CachePolicy::caching_optimized().rules(off).error_min, 0);
    }

    #[test]
    fn bad_heuristic_fraction_is_rejected() {
        let p = CachePolicy::rfc().heuristic(1.5, Duration::ZERO);
        assert!(matches!(
            p.validate(),
            Err(ConfigError::HeuristicFraction(_))
        ));
    }
}

/// A replacement for an error response, like CloudFront's custom error responses: when the
/// origin (or a stored object) answers `status`, the viewer gets this instead.
///
/// ```
/// use std::time::Duration;
/// use http::StatusCode;
/// use tower_cdn::CustomErrorResponse;
///
/// let not_found = CustomErrorResponse::new(StatusCode::NOT_FOUND)
///     .body("text/html; charset=utf-8", "<h1>Nothing here</h1>")
///     .ttl(Duration::from_secs(300));
/// ```
#[derive(Clone, Debug)]
pub struct CustomErrorResponse {
    pub(crate) status: http::StatusCode,
    pub(crate) response_code: Option<http::StatusCode>,
    pub(crate) content_type: http::HeaderValue,
    pub(crate) body: bytes::Bytes,
    pub(crate) ttl: Option<Duration>,
}

impl CustomErrorResponse {
    /// Replaces responses with this status (an empty `text/plain` body until
    /// [`body`](Self::body) is set).
    pub fn new(status: http::StatusCode) -> Self {
        Self {
            status,
            response_code: None,
            content_type: http::HeaderValue::from_static("text/plain; charset=utf-8"),
            body: bytes::Bytes::new(),
            ttl: None,
        }
    }

    /// The status the viewer gets instead (by default the original one).
    pub fn response_code(mut self, status: http::StatusCode) -> Self {
        self.response_code = Some(status);
        self
    }

    /// The body the viewer gets, with its media type. An invalid media type falls back to
    /// `application/octet-stream`.
    pub fn body(mut self, content_type: &str, body: impl Into<bytes::Bytes>) -> Self {
        self.content_type = http::HeaderValue::from_str(content_type)
            .unwrap_or(http::HeaderValue::from_static("application/octet-stream"));
        self.body = body.into();
        self
    }

    /// How long the origin's error is cached when it carries no freshness of its own (the
    /// error-caching minimum TTL for this status).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }
}
