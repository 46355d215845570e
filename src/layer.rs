//! [`CdnLayer`]: the configuration and the parts every clone shares.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, StatusCode};
use tower_layer::Layer;

use crate::access::IpRange;
use crate::access::{CountryResolver, GeoRestriction, OriginConcurrency, RateLimit};
use crate::behavior::{Behavior, PathPattern, Route};
use crate::clock::{Clock, SystemClock};
use crate::collapse::Flights;
use crate::config::{CachePolicy, CustomErrorResponse};
use crate::error::ConfigError;
use crate::metrics::{Metrics, MetricsSnapshot};
use crate::purge::{self, Purge};
use crate::rfc::freshness::TtlRules;
use crate::service::CdnService;
use crate::status::CacheStatus;
use crate::store::MemoryStore;

const DEFAULT_CAPACITY: u64 = 256 * 1024 * 1024;
const DEFAULT_MAX_OBJECT: u64 = 16 * 1024 * 1024;
/// How long past its freshness an object may stand in for an unreachable origin by default.
const DEFAULT_STALE_IF_UNREACHABLE: Duration = Duration::from_secs(24 * 60 * 60);

/// A tower [`Layer`] that puts a CDN edge cache in front of a service (the origin).
///
/// Cloning a `CdnLayer` is cheap and every clone, and every service it makes, shares one
/// cache: `axum::Router::layer` clones the layer once per route, and all routes still share
/// one store, one collapsing table and one clock.
///
/// See the [crate documentation](crate) for what is cached and how requests collapse.
#[derive(Clone, Debug)]
pub struct CdnLayer {
    shared: Arc<Shared>,
}

impl CdnLayer {
    /// A layer with default settings: RFC 9111 freshness, a 256 MiB store, objects up to 16 MiB.
    pub fn new() -> Self {
        Self::builder()
            .build()
            .expect("default configuration is valid")
    }

    /// A builder for every setting.
    pub fn builder() -> CdnLayerBuilder {
        CdnLayerBuilder::default()
    }

    /// Bytes held by the memory store (objects, fields and bookkeeping).
    pub fn store_weight(&self) -> u64 {
        self.shared.store.weight()
    }

    /// The memory store's capacity in bytes.
    pub fn store_capacity(&self) -> u64 {
        self.shared.store.capacity()
    }

    /// A snapshot of the layer's counters and the store's gauges.
    pub fn metrics(&self) -> MetricsSnapshot {
        self.shared.metrics.snapshot(self.shared.store.gauges())
    }

    /// Invalidates objects in this layer's memory store; returns how many were removed (or,
    /// for a soft purge, marked stale). A fill under way when the purge is applied is not
    /// stored, and requests arriving after it returns never receive the old object.
    ///
    /// With a shared tier (feature `redis`, `CdnLayerBuilder::shared_tier`), the purge is also
    /// applied to Redis and published to every node sharing it, in the background (see
    /// `RedisTier`'s section on purges); the count is this node's memory only, and a Redis
    /// that is down fails nothing here.
    ///
    /// ```
    /// use tower_cdn::{CdnLayer, Purge};
    ///
    /// let layer = CdnLayer::new();
    /// assert_eq!(layer.purge(&Purge::tag("product-42")), 0);
    /// ```
    pub fn purge(&self, purge: &Purge) -> usize {
        let n = purge::apply(&self.shared, purge, self.shared.clock.now());
        #[cfg(feature = "redis")]
        crate::tier::fan_out(&self.shared, purge);
        n
    }

    /// Entries held by the memory store (objects, `Vary` records, pass markers).
    pub fn store_entries(&self) -> usize {
        self.shared.store.len()
    }

    /// The shared tier's counters, if the layer has one.
    #[cfg(feature = "redis")]
    pub fn tier_stats(&self) -> Option<crate::TierStats> {
        self.shared.tier.as_ref().map(crate::RedisTier::stats)
    }
}

impl Default for CdnLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl<S> Layer<S> for CdnLayer {
    type Service = CdnService<S>;

    fn layer(&self, inner: S) -> CdnService<S> {
        CdnService::new(inner, self.shared.clone())
    }
}

/// Builds a [`CdnLayer`]. Every setting has a default; `build` checks them together.
#[derive(Debug)]
pub struct CdnLayerBuilder {
    capacity: u64,
    max_object_size: u64,
    default_behavior: Behavior,
    behaviors: Vec<(String, Behavior)>,
    trust_forwarded: bool,
    trusted_proxies: Vec<String>,
    default_root_object: Option<String>,
    geo: Option<Geo>,
    rate_limit: Option<RateLimit>,
    origin_concurrency: Option<OriginConcurrency>,
    cache_name: String,
    clock: Arc<dyn Clock>,
    collapse_timeout: Duration,
    hit_for_pass: Duration,
    origin_timeout: Duration,
    stale_if_error: Duration,
    stale_if_unreachable: Duration,
    stale_if_error_budget: Option<Duration>,
    error_caching_min_ttl: Option<Duration>,
    error_ttls: Vec<(StatusCode, Duration)>,
    custom_errors: Vec<CustomErrorResponse>,
    compress: bool,
    #[cfg(feature = "redis")]
    tier: Option<crate::RedisTier>,
}

impl Default for CdnLayerBuilder {
    fn default() -> Self {
        Self {
            capacity: DEFAULT_CAPACITY,
            max_object_size: DEFAULT_MAX_OBJECT,
            default_behavior: Behavior::new(),
            behaviors: Vec::new(),
            trust_forwarded: false,
            trusted_proxies: Vec::new(),
            default_root_object: None,
            geo: None,
            rate_limit: None,
            origin_concurrency: None,
            cache_name: "tower-cdn".to_owned(),
            clock: Arc::new(SystemClock),
            collapse_timeout: Duration::from_secs(10),
            hit_for_pass: Duration::from_secs(30),
            origin_timeout: Duration::from_secs(30),
            stale_if_error: Duration::ZERO,
            stale_if_unreachable: DEFAULT_STALE_IF_UNREACHABLE,
            stale_if_error_budget: None,
            error_caching_min_ttl: None,
            error_ttls: Vec::new(),
            custom_errors: Vec::new(),
            compress: true,
            #[cfg(feature = "redis")]
            tier: None,
        }
    }
}

impl CdnLayerBuilder {
    /// The memory store's capacity in bytes (bodies, fields and bookkeeping).
    pub fn capacity(mut self, bytes: u64) -> Self {
        self.capacity = bytes;
        self
    }

    /// The largest response body stored; larger ones are served but not stored.
    pub fn max_object_size(mut self, bytes: u64) -> Self {
        self.max_object_size = bytes;
        self
    }

    /// The default behavior's cache policy (TTL clamps).
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.default_behavior.cache_policy = policy;
        self
    }

    /// Adds a behavior for paths matching `pattern` (CloudFront syntax: `*` any sequence,
    /// `?` one character, case-sensitive). Behaviors are tried in the order added; the
    /// first match wins, and paths matching none get the default behavior.
    pub fn behavior(mut self, pattern: impl Into<String>, behavior: Behavior) -> Self {
        self.behaviors.push((pattern.into(), behavior));
        self
    }

    /// The behavior for paths no pattern matches.
    pub fn default_behavior(mut self, behavior: Behavior) -> Self {
        self.default_behavior = behavior;
        self
    }

    /// Trust `X-Forwarded-Proto` / `Forwarded: proto=` for the viewer's scheme (only when a
    /// proxy in front of the edge terminates TLS and overwrites them; default off).
    pub fn trust_forwarded_proto(mut self, trust: bool) -> Self {
        self.trust_forwarded = trust;
        self
    }

    /// Proxies (CIDR ranges such as `10.0.0.0/8`) whose `X-Forwarded-For` says who the
    /// viewer is, for signed-URL IP conditions, rate limits and logs. None by default: the
    /// connection's address ([`ClientAddr`](crate::ClientAddr)) is the viewer.
    pub fn trusted_proxies<I, T>(mut self, ranges: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.trusted_proxies = ranges.into_iter().map(Into::into).collect();
        self
    }

    /// Serves only viewers whose country `restriction` allows, as `resolver` tells it (a
    /// MaxMind database, a header set by a trusted upstream, or your own). Denied viewers get
    /// `403` before the cache is consulted.
    pub fn geo_restriction(
        mut self,
        restriction: GeoRestriction,
        resolver: impl CountryResolver,
    ) -> Self {
        self.geo = Some(Geo {
            restriction: Some(restriction),
            resolver: Arc::new(resolver),
            forward: self.geo.as_ref().is_some_and(|g| g.forward),
        });
        self
    }

    /// Sends the viewer's country to the origin as `CloudFront-Viewer-Country` (never the
    /// value a viewer sent), so it can also enter a key policy's header allow-list.
    pub fn forward_viewer_country(mut self, resolver: impl CountryResolver) -> Self {
        let restriction = self.geo.take().and_then(|g| g.restriction);
        self.geo = Some(Geo {
            restriction,
            resolver: Arc::new(resolver),
            forward: true,
        });
        self
    }

    /// Limits each client's request rate; over it, `429` with `Retry-After`, before the cache.
    pub fn rate_limit(mut self, limit: RateLimit) -> Self {
        self.rate_limit = Some(limit);
        self
    }

    /// Caps concurrent origin requests: misses over the cap wait (bounded), then get `503`.
    /// Hits are never held back by it.
    pub fn origin_concurrency(mut self, cap: OriginConcurrency) -> Self {
        self.origin_concurrency = Some(cap);
        self
    }

    /// The object served for `/`, like CloudFront's default root object (e.g. `index.html`).
    pub fn default_root_object(mut self, object: impl Into<String>) -> Self {
        self.default_root_object = Some(object.into());
        self
    }

    /// The name in `X-Cache: Hit from NAME` and `Cache-Status: NAME; hit`.
    pub fn cache_name(mut self, name: impl Into<String>) -> Self {
        self.cache_name = name.into();
        self
    }

    /// The clock freshness and `Age` are computed from. Tests pass a
    /// [`ManualClock`](crate::ManualClock).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// How long a viewer waits for another viewer's origin request for the same object
    /// before going to the origin itself.
    pub fn collapse_timeout(mut self, timeout: Duration) -> Self {
        self.collapse_timeout = timeout;
        self
    }

    /// How long a URL whose response was not storable skips collapsing (hit-for-pass), so
    /// requests for it reach the origin in parallel instead of queuing.
    pub fn hit_for_pass(mut self, ttl: Duration) -> Self {
        self.hit_for_pass = ttl;
        self
    }

    /// How long the origin may take to start answering, and between two pieces of a body.
    /// Past it, a stale object is served if allowed, else `504 Gateway Timeout`.
    pub fn origin_timeout(mut self, timeout: Duration) -> Self {
        self.origin_timeout = timeout;
        self
    }

    /// How long past its freshness an object may stand in for a failed origin when the
    /// origin sent no `stale-if-error` of its own (RFC 5861 §4). Default 0: only when the
    /// origin allows it. `must-revalidate`, `proxy-revalidate`, `no-cache` and `s-maxage`
    /// always forbid it (RFC 9111 §4.2.4).
    pub fn stale_if_error(mut self, window: Duration) -> Self {
        self.stale_if_error = window;
        self
    }

    /// How long past its freshness an object may stand in for an origin the edge cannot
    /// reach: the inner service failed (a refused or broken connection), the origin did not
    /// answer within [`origin_timeout`](Self::origin_timeout), or the server's proxy answered
    /// for it with its own 502 / 504. RFC 9111 §4.2.4 lets a disconnected cache serve stale,
    /// and CloudFront does. Default one day; `Duration::ZERO` turns it off. The viewer's
    /// `Cache-Status` says `detail=stale-if-unreachable`. `must-revalidate`,
    /// `proxy-revalidate`, `no-cache` and `s-maxage` always forbid it (§4.2.4). A 5xx answer
    /// from the origin is not this case: only `stale-if-error` lets a stale object stand in
    /// for it.
    pub fn stale_if_unreachable(mut self, window: Duration) -> Self {
        self.stale_if_unreachable = window;
        self
    }

    /// When a stale object could stand in for the origin, wait for the origin at most this
    /// long before serving it; the origin request goes on in the background and refreshes the
    /// object when it answers.
    pub fn stale_if_error_budget(mut self, budget: Duration) -> Self {
        self.stale_if_error_budget = Some(budget);
        self
    }

    /// How long 404, 414, 500, 501, 502, 503 and 504 responses without freshness
    /// information are cached (CloudFront's error caching minimum TTL), for every behavior,
    /// whatever its cache policy says. Unset by default: each behavior's
    /// [`CachePolicy::error_caching_min_ttl`] applies, which is off under
    /// [`CachePolicy::rfc`] (the default policy) and 10 s under
    /// [`CachePolicy::caching_optimized`]. `Duration::ZERO` turns it off everywhere. Other
    /// errors are cached only for their own freshness lifetime, or for a heuristic where
    /// RFC 9111 allows one (405, 410 with a `Last-Modified`).
    pub fn error_caching_min_ttl(mut self, ttl: Duration) -> Self {
        self.error_caching_min_ttl = Some(ttl);
        self
    }

    /// The error-caching TTL for one status, overriding
    /// [`error_caching_min_ttl`](Self::error_caching_min_ttl).
    pub fn error_ttl(mut self, status: StatusCode, ttl: Duration) -> Self {
        self.error_ttls.retain(|(s, _)| *s != status);
        self.error_ttls.push((status, ttl));
        self
    }

    /// Replaces error responses of one status, like CloudFront's custom error responses.
    pub fn custom_error_response(mut self, response: CustomErrorResponse) -> Self {
        if let Some(ttl) = response.ttl {
            self = self.error_ttl(response.status, ttl);
        }
        self.custom_errors.retain(|c| c.status != response.status);
        self.custom_errors.push(response);
        self
    }

    /// Whether stored objects are compressed for viewers that accept it (br, zstd, gzip;
    /// default on): a miss is compressed as it streams in the coding its viewer prefers, any
    /// other coding is made on its first request; each is made once and kept with the object.
    /// Only compressible media types of 1,000 to 10,000,000 bytes with status 200, 403 or
    /// 404 are compressed, never `no-transform` responses.
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = on;
        self
    }

    /// Turns compression off.
    pub fn no_compression(self) -> Self {
        self.compress(false)
    }

    /// A shared second tier: misses look in Redis before the origin, and stored objects are
    /// written through to it, so several nodes share what any of them fetched. See
    /// [`RedisTier`](crate::RedisTier).
    #[cfg(feature = "redis")]
    pub fn shared_tier(mut self, tier: crate::RedisTier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Checks the settings and builds the layer.
    pub fn build(self) -> Result<CdnLayer, ConfigError> {
        if self.capacity == 0 {
            return Err(ConfigError::ZeroCapacity);
        }
        if self.max_object_size > self.capacity / 4 {
            return Err(ConfigError::ObjectLargerThanStore {
                max_object_size: self.max_object_size,
                capacity: self.capacity,
            });
        }
        let mut routes = Vec::with_capacity(self.behaviors.len() + 1);
        for (pattern, behavior) in self.behaviors {
            let pattern = PathPattern::new(&pattern)?;
            let settings = (self.compress, self.error_caching_min_ttl);
            routes.push(Arc::new(route(Some(pattern), behavior, settings)?));
        }
        let settings = (self.compress, self.error_caching_min_ttl);
        routes.push(Arc::new(route(None, self.default_behavior, settings)?));
        let trusted_proxies = self
            .trusted_proxies
            .iter()
            .map(|r| IpRange::parse(r).ok_or_else(|| ConfigError::TrustedProxy(r.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(object) = &self.default_root_object {
            if object.is_empty() || object.starts_with('/') || object.parse::<http::Uri>().is_err()
            {
                return Err(ConfigError::DefaultRootObject(object.clone()));
            }
        }
        let x_cache = |status: CacheStatus| {
            HeaderValue::try_from(format!("{} from {}", status.as_str(), self.cache_name))
                .map_err(|_| ConfigError::CacheName(self.cache_name.clone()))
        };
        if !self.cache_name.bytes().all(|b| b.is_ascii_graphic()) || self.cache_name.is_empty() {
            return Err(ConfigError::CacheName(self.cache_name));
        }
        let x_cache = XCache {
            hit: x_cache(CacheStatus::Hit)?,
            refresh_hit: x_cache(CacheStatus::RefreshHit)?,
            miss: x_cache(CacheStatus::Miss)?,
            error: x_cache(CacheStatus::Error)?,
            redirect: x_cache(CacheStatus::Redirect)?,
            generated: x_cache(CacheStatus::Generated)?,
        };
        let store = MemoryStore::new(self.capacity, self.max_object_size);
        let shared = Arc::new(Shared {
            routes,
            trust_forwarded: self.trust_forwarded,
            trusted_proxies,
            geo: self.geo,
            rate_limit: self.rate_limit,
            origin_concurrency: self.origin_concurrency,
            default_root_object: self.default_root_object.map(|o| format!("/{o}")),
            max_object_size: self.max_object_size.min(store.max_object()),
            store,
            flights: Arc::new(Flights::default()),
            clock: self.clock,
            x_cache,
            cache_name: self.cache_name,
            collapse_timeout: self.collapse_timeout,
            hit_for_pass: self.hit_for_pass,
            origin_timeout: self.origin_timeout,
            stale_if_error: self.stale_if_error.as_secs(),
            stale_if_unreachable: self.stale_if_unreachable.as_secs(),
            stale_if_error_budget: self.stale_if_error_budget,
            error_ttls: self
                .error_ttls
                .iter()
                .map(|(s, t)| (*s, t.as_secs()))
                .collect(),
            custom_errors: self.custom_errors,
            variant_flights: Arc::new(Flights::default()),
            metrics: Metrics::default(),
            // Nodes sharing a tier share `Vary` records: a random start keeps one node's
            // new record from reusing an epoch another node gave the same URL.
            epochs: AtomicU64::new(RandomState::new().build_hasher().finish() >> 1),
            purge_generation: AtomicU64::new(0),
            #[cfg(feature = "redis")]
            tier: self.tier,
        });
        #[cfg(feature = "redis")]
        if let Some(tier) = &shared.tier {
            tier.attach(&shared);
        }
        Ok(CdnLayer { shared })
    }
}

/// Geo restriction and the viewer-country header.
#[derive(Clone)]
pub(crate) struct Geo {
    pub(crate) restriction: Option<GeoRestriction>,
    pub(crate) resolver: Arc<dyn CountryResolver>,
    pub(crate) forward: bool,
}

impl std::fmt::Debug for Geo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Geo")
            .field("restriction", &self.restriction)
            .field("forward", &self.forward)
            .finish_non_exhaustive()
    }
}

/// Prebuilt `X-Cache` values, so responses cost no formatting.
#[derive(Debug)]
pub(crate) struct XCache {
    pub(crate) hit: HeaderValue,
    pub(crate) refresh_hit: HeaderValue,
    pub(crate) miss: HeaderValue,
    pub(crate) error: HeaderValue,
    pub(crate) redirect: HeaderValue,
    pub(crate) generated: HeaderValue,
}

impl XCache {
    pub(crate) fn get(&self, status: CacheStatus) -> &HeaderValue {
        match status {
            CacheStatus::Hit => &self.hit,
            CacheStatus::RefreshHit => &self.refresh_hit,
            CacheStatus::Miss | CacheStatus::Pass => &self.miss,
            CacheStatus::Error => &self.error,
            CacheStatus::Redirect => &self.redirect,
            CacheStatus::Generated => &self.generated,
        }
    }
}

/// What every clone of a layer, and every service it made, shares.
#[derive(Debug)]
pub(crate) struct Shared {
    /// Behaviors in order, the default last.
    pub(crate) routes: Vec<Arc<Route>>,
    pub(crate) trust_forwarded: bool,
    pub(crate) trusted_proxies: Vec<IpRange>,
    pub(crate) geo: Option<Geo>,
    pub(crate) rate_limit: Option<RateLimit>,
    pub(crate) origin_concurrency: Option<OriginConcurrency>,
    pub(crate) default_root_object: Option<String>,
    pub(crate) max_object_size: u64,
    pub(crate) store: MemoryStore,
    pub(crate) flights: Arc<Flights>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) x_cache: XCache,
    pub(crate) cache_name: String,
    pub(crate) collapse_timeout: Duration,
    pub(crate) hit_for_pass: Duration,
    pub(crate) origin_timeout: Duration,
    pub(crate) stale_if_error: u64,
    pub(crate) stale_if_unreachable: u64,
    pub(crate) stale_if_error_budget: Option<Duration>,
    error_ttls: Vec<(StatusCode, u64)>,
    pub(crate) custom_errors: Vec<CustomErrorResponse>,
    pub(crate) variant_flights: Arc<Flights>,
    pub(crate) metrics: Metrics,
    epochs: AtomicU64,
    /// Bumped by every purge; a fill that saw another value when it started is not stored.
    pub(crate) purge_generation: AtomicU64,
    #[cfg(feature = "redis")]
    pub(crate) tier: Option<crate::RedisTier>,
}

/// Resolves a behavior: its cache policy's TTL rules (with the layer's error caching minimum
/// TTL, when set) and its compression setting.
fn route(
    pattern: Option<PathPattern>,
    behavior: Behavior,
    (compress, error_caching_min_ttl): (bool, Option<Duration>),
) -> Result<Route, ConfigError> {
    behavior.validate()?;
    behavior.cache_policy.validate()?;
    Ok(Route {
        pattern,
        rules: behavior.cache_policy.rules(error_caching_min_ttl),
        compress: behavior.compress.unwrap_or(compress),
        behavior,
    })
}

impl Shared {
    /// The behavior for a path, by index: the first whose pattern matches, else the default.
    pub(crate) fn route_index(&self, path: &str) -> usize {
        self.routes
            .iter()
            .position(|r| r.pattern.as_ref().is_none_or(|p| p.matches(path)))
            .unwrap_or(self.routes.len() - 1)
    }

    /// The error-caching TTL for a status without freshness information under a behavior's
    /// rules, if it has one: the one set for the status, else the error caching minimum TTL
    /// for the statuses CloudFront caches by default.
    pub(crate) fn error_ttl(&self, rules: &TtlRules, status: StatusCode) -> Option<u64> {
        if let Some((_, ttl)) = self.error_ttls.iter().find(|(s, _)| *s == status) {
            return (*ttl > 0).then_some(*ttl);
        }
        let cached = matches!(status.as_u16(), 404 | 414 | 500 | 501 | 502 | 503 | 504);
        (cached && rules.error_min > 0).then_some(rules.error_min)
    }

    /// A fresh epoch for a new `Vary` record.
    pub(crate) fn next_epoch(&self) -> u64 {
        self.epochs.fetch_add(1, Ordering::Relaxed)
    }
}
