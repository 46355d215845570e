//! Abuse limits: per-client request rates with bounded memory, and a cap on origin concurrency.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use http::header::RETRY_AFTER;
use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::AccessError;

/// The tracked state of one client: its GCRA theoretical arrival time.
type Tat = Instant;

/// How many locks the tracked clients are spread over.
const SHARDS: usize = 32;

/// The longest rate period accepted.
const MAX_PERIOD: Duration = Duration::from_secs(24 * 60 * 60);

/// A per-client request rate limit (GCRA, the generic cell rate algorithm: a token bucket
/// that stores one timestamp per client), answered 429 with `Retry-After` when exceeded.
///
/// Clients are keyed by their address (IPv4 per address, IPv6 per /64 by default, since one
/// subscriber commonly holds a whole /64), or by the value of a header that a trusted
/// upstream sets ([`key_header`](RateLimitBuilder::key_header)).
///
/// # Bounded memory
///
/// At most [`max_keys`](RateLimitBuilder::max_keys) clients are tracked (default
/// [`RateLimit::DEFAULT_MAX_KEYS`]), in fixed-size entries, so memory has a hard ceiling
/// (4.1 MiB of tables at the default) however many distinct addresses send requests. When the
/// table is full, a new client first clears the clients whose bucket has refilled (forgetting
/// them changes nothing), and if that frees too little, it forgets the clients closest to a
/// full bucket, one eighth of the table at a time. A flood of distinct addresses therefore
/// evicts mostly its own one-request entries, while clients deep into their limit stay
/// tracked; at worst an attacker with many addresses resets other clients' buckets early. It
/// can never grow memory.
///
/// Clones share one set of buckets.
///
/// ```
/// use tower_cdn::RateLimit;
///
/// let per_ip = RateLimit::per_second(10).burst(20).build()?;
/// let per_api_key = RateLimit::per_minute(600)
///     .key_header("x-authenticated-user")
///     .max_keys(10_000)
///     .build()?;
/// assert_eq!(per_ip.tracked_keys(), 0);
/// # let _ = per_api_key;
/// # Ok::<(), tower_cdn::AccessError>(())
/// ```
#[derive(Clone)]
pub struct RateLimit {
    inner: Arc<Limiter>,
}

struct Limiter {
    requests: u32,
    period: Duration,
    burst: u32,
    /// The emission interval: one request's worth of time.
    interval: Duration,
    /// How far ahead of now a client's arrival time may run: `interval * (burst - 1)`.
    tolerance: Duration,
    key_header: Option<HeaderName>,
    ipv6_prefix: u8,
    max_keys: usize,
    shard_cap: usize,
    /// Picks a shard, and hashes header values into keys.
    hasher: RandomState,
    /// The second half of a header value's 128-bit key.
    hasher2: RandomState,
    shards: Box<[Mutex<HashMap<u128, Tat>>]>,
}

impl RateLimit {
    /// The default cap on tracked clients.
    pub const DEFAULT_MAX_KEYS: usize = 100_000;

    /// `requests` per second per client, with a burst of `requests` unless set.
    pub fn per_second(requests: u32) -> RateLimitBuilder {
        Self::per(requests, Duration::from_secs(1))
    }

    /// `requests` per minute per client, with a burst of `requests` unless set.
    pub fn per_minute(requests: u32) -> RateLimitBuilder {
        Self::per(requests, Duration::from_secs(60))
    }

    /// `requests` per `period` (at most a day) per client, with a burst of `requests` unless
    /// set.
    pub fn per(requests: u32, period: Duration) -> RateLimitBuilder {
        RateLimitBuilder {
            requests,
            period,
            burst: None,
            key_header: None,
            ipv6_prefix: 64,
            max_keys: Self::DEFAULT_MAX_KEYS,
        }
    }

    /// How many clients are tracked now (never more than the configured cap).
    pub fn tracked_keys(&self) -> usize {
        self.inner.shards.iter().map(|s| lock(s).len()).sum()
    }

    /// The cap on tracked clients.
    pub fn max_keys(&self) -> usize {
        self.inner.max_keys
    }

    /// Counts one request from the client identified by `client_ip` or, when a key header is
    /// configured and present, by that header. `Err` carries how long until the client may
    /// send again (for `Retry-After`). Requests with neither key share one bucket.
    ///
    /// `now` is passed in so tests can move time; the layer passes
    /// `tokio::time::Instant::now().into_std()`, which follows tokio's paused clock.
    pub(crate) fn check(
        &self,
        client_ip: Option<IpAddr>,
        headers: &HeaderMap,
        now: Instant,
    ) -> Result<(), Duration> {
        self.inner
            .check_key(self.inner.key(client_ip, headers), now)
    }

    #[cfg(test)]
    fn memory_bytes(&self) -> usize {
        // hashbrown: one entry and one control byte per bucket, at most 7/8 of buckets full.
        let per_bucket = std::mem::size_of::<(u128, Tat)>() + 1;
        self.inner
            .shards
            .iter()
            .map(|s| lock(s).capacity().div_ceil(7) * 8 * per_bucket)
            .sum()
    }
}

impl fmt::Debug for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let l = &self.inner;
        f.debug_struct("RateLimit")
            .field("requests", &l.requests)
            .field("period", &l.period)
            .field("burst", &l.burst)
            .field("key_header", &l.key_header)
            .field("ipv6_prefix", &l.ipv6_prefix)
            .field("max_keys", &l.max_keys)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Limiter {
    fn key(&self, client_ip: Option<IpAddr>, headers: &HeaderMap) -> u128 {
        if let Some(name) = &self.key_header {
            if let Some(value) = headers.get(name).filter(|v| !v.is_empty()) {
                let bytes = (1u8, value.as_bytes());
                let hi = u128::from(self.hasher.hash_one(bytes));
                let lo = u128::from(self.hasher2.hash_one(bytes));
                return hi << 64 | lo;
            }
        }
        match client_ip.map(|ip| ip.to_canonical()) {
            Some(IpAddr::V4(v4)) => u128::from(v4.to_ipv6_mapped()),
            Some(IpAddr::V6(v6)) => {
                // 1..=128, checked at build.
                let mask = u128::MAX << (128 - u32::from(self.ipv6_prefix));
                u128::from(v6) & mask
            }
            None => u128::from(self.hasher.hash_one((2u8, ()))) << 64,
        }
    }

    fn check_key(&self, key: u128, now: Instant) -> Result<(), Duration> {
        let shard = (self.hasher.hash_one(key) % self.shards.len() as u64) as usize;
        let mut map = lock(&self.shards[shard]);
        if let Some(tat) = map.get_mut(&key) {
            *tat = self.gcra(Some(*tat), now)?;
            return Ok(());
        }
        let tat = self.gcra(None, now)?;
        if map.len() >= self.shard_cap {
            evict(&mut map, now, self.shard_cap);
        }
        map.insert(key, tat);
        Ok(())
    }

    /// One GCRA step: the client's next arrival time, or how long it must wait.
    fn gcra(&self, tat: Option<Tat>, now: Instant) -> Result<Tat, Duration> {
        let tat = tat.map_or(now, |t| t.max(now));
        let ahead = tat - now;
        if ahead > self.tolerance {
            Err(ahead - self.tolerance)
        } else {
            Ok(tat + self.interval)
        }
    }
}

/// Makes room in a full shard: drops clients whose bucket is full again (`tat <= now`, which
/// loses nothing), then if fewer than an eighth of the slots came free, the clients with the
/// earliest arrival times (closest to a full bucket) until an eighth is free.
///
/// The survivors move to a fresh table sized for `cap`: removing in place would leave
/// tombstones that make the table double its buckets, while a fresh table stays at its
/// first size for good.
fn evict(map: &mut HashMap<u128, Tat>, now: Instant, cap: usize) {
    let target = (cap - cap / 8).min(cap - 1);
    let mut live: Vec<Tat> = map.values().copied().filter(|&t| t > now).collect();
    // Drop everything before `threshold`, and `ties` of the entries equal to it.
    let (threshold, mut ties) = if live.len() > target {
        let excess = live.len() - target;
        let (below, &mut threshold, _) = live.select_nth_unstable(excess - 1);
        let strictly_below = below.iter().filter(|&&t| t < threshold).count();
        (threshold, excess - strictly_below)
    } else {
        (now, 0)
    };
    let mut kept = HashMap::with_capacity_and_hasher(cap, map.hasher().clone());
    for (key, tat) in map.drain() {
        let keep = if tat <= now || tat < threshold {
            false
        } else if tat == threshold && ties > 0 {
            ties -= 1;
            false
        } else {
            true
        };
        if keep {
            kept.insert(key, tat);
        }
    }
    *map = kept;
}

/// Builds a [`RateLimit`]; the settings are checked by [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct RateLimitBuilder {
    requests: u32,
    period: Duration,
    burst: Option<u32>,
    key_header: Option<String>,
    ipv6_prefix: u8,
    max_keys: usize,
}

impl RateLimitBuilder {
    /// How many requests a client may send at once after being idle (default: the
    /// per-period count).
    pub fn burst(mut self, burst: u32) -> Self {
        self.burst = Some(burst);
        self
    }

    /// Keys clients by this header's value instead of their address, falling back to the
    /// address when a request lacks it. Use only a header a trusted upstream sets or
    /// overwrites (an authenticated user id, say): a viewer that can choose the value gets a
    /// fresh bucket per value.
    pub fn key_header(mut self, name: &str) -> Self {
        self.key_header = Some(name.to_owned());
        self
    }

    /// The prefix length IPv6 clients are grouped by (default 64; 128 is per address).
    pub fn ipv6_prefix(mut self, len: u8) -> Self {
        self.ipv6_prefix = len;
        self
    }

    /// The most clients tracked at once (default [`RateLimit::DEFAULT_MAX_KEYS`]); each
    /// costs about 43 bytes.
    pub fn max_keys(mut self, max: usize) -> Self {
        self.max_keys = max;
        self
    }

    /// Checks the settings and builds the limiter.
    pub fn build(self) -> Result<RateLimit, AccessError> {
        let Self {
            requests,
            period,
            burst,
            key_header,
            ipv6_prefix,
            max_keys,
        } = self;
        if requests == 0 || period.is_zero() || period > MAX_PERIOD {
            return Err(AccessError::Rate {
                requests,
                per: period,
            });
        }
        let burst = burst.unwrap_or(requests);
        if burst == 0 {
            return Err(AccessError::Burst(burst));
        }
        if !(1..=128).contains(&ipv6_prefix) {
            return Err(AccessError::Ipv6Prefix(ipv6_prefix));
        }
        if max_keys == 0 {
            return Err(AccessError::MaxKeys(max_keys));
        }
        let key_header = key_header
            .map(|name| HeaderName::from_bytes(name.as_bytes()).map_err(|_| name))
            .transpose()
            .map_err(AccessError::HeaderName)?;
        let interval = period / requests;
        let shards = SHARDS.min(max_keys);
        Ok(RateLimit {
            inner: Arc::new(Limiter {
                requests,
                period,
                burst,
                interval,
                tolerance: interval * (burst - 1),
                key_header,
                ipv6_prefix,
                max_keys,
                shard_cap: max_keys / shards,
                hasher: RandomState::new(),
                hasher2: RandomState::new(),
                shards: (0..shards).map(|_| Mutex::default()).collect(),
            }),
        })
    }
}

/// A 429 Too Many Requests head with `Retry-After` in whole seconds, rounded up, at least 1.
pub(crate) fn too_many_requests(retry_after: Duration) -> Response<()> {
    let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
    let mut response = Response::new(());
    *response.status_mut() = StatusCode::TOO_MANY_REQUESTS;
    response
        .headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
    response
}

/// A cap on concurrent requests to one origin. Cache misses take a slot for their origin
/// fetch and wait at most the queue timeout for one, after which the edge answers 503; cache
/// hits never take a slot.
///
/// Clones share one set of slots.
///
/// ```
/// use std::time::Duration;
/// use tower_cdn::OriginConcurrency;
///
/// let origin = OriginConcurrency::builder(64)
///     .queue_timeout(Duration::from_secs(2))
///     .build()?;
/// assert_eq!(origin.in_flight(), 0);
/// # Ok::<(), tower_cdn::AccessError>(())
/// ```
#[derive(Clone, Debug)]
pub struct OriginConcurrency {
    semaphore: Arc<Semaphore>,
    max: usize,
    queue_timeout: Duration,
}

impl OriginConcurrency {
    /// The default longest wait for a slot.
    pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

    /// At most `max` origin requests in flight at once.
    pub fn builder(max: usize) -> OriginConcurrencyBuilder {
        OriginConcurrencyBuilder {
            max,
            queue_timeout: Self::DEFAULT_QUEUE_TIMEOUT,
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The longest a request waits for a slot.
    pub fn queue_timeout(&self) -> Duration {
        self.queue_timeout
    }

    /// How many origin requests hold a slot now.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    /// Waits for a slot (first come, first served) for at most the queue timeout. The slot
    /// is freed when the permit drops; `Err` means the caller should answer 503.
    pub(crate) async fn acquire(&self) -> Result<OwnedSemaphorePermit, Overloaded> {
        if let Ok(permit) = Arc::clone(&self.semaphore).try_acquire_owned() {
            return Ok(permit);
        }
        let wait = Arc::clone(&self.semaphore).acquire_owned();
        match tokio::time::timeout(self.queue_timeout, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; treat it like a timeout all the same.
            Ok(Err(_)) | Err(_) => Err(Overloaded {
                waited: self.queue_timeout,
            }),
        }
    }
}

/// Builds an [`OriginConcurrency`]; the settings are checked by [`build`](Self::build).
#[derive(Clone, Debug)]
pub struct OriginConcurrencyBuilder {
    max: usize,
    queue_timeout: Duration,
}

impl OriginConcurrencyBuilder {
    /// The longest a request waits for a slot before it gets 503 (default
    /// [`OriginConcurrency::DEFAULT_QUEUE_TIMEOUT`]; zero: never wait).
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.queue_timeout = timeout;
        self
    }

    /// Checks the settings and builds the cap.
    pub fn build(self) -> Result<OriginConcurrency, AccessError> {
        if self.max == 0 || self.max > Semaphore::MAX_PERMITS {
            return Err(AccessError::Concurrency(self.max));
        }
        Ok(OriginConcurrency {
            semaphore: Arc::new(Semaphore::new(self.max)),
            max: self.max,
            queue_timeout: self.queue_timeout,
        })
    }
}

/// No origin slot came free within the queue timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Overloaded {
    /// How long the request waited.
    pub(crate) waited: Duration,
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "origin overloaded: no slot within {:?}", self.waited)
    }
}

impl std::error::Error for Overloaded {}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    fn none() -> HeaderMap {
        HeaderMap::new()
    }

    #[test]
    fn burst_over_the_limit_is_refused_with_retry_after() {
        let limit = RateLimit::per_second(10).burst(5).build().unwrap();
        let t0 = Instant::now();
        let a = ip("192.0.2.1");
        for i in 0..5 {
            assert_eq!(limit.check(a, &none(), t0), Ok(()), "request {i}");
        }
        // The sixth at the same instant waits one emission interval (100 ms).
        assert_eq!(limit.check(a, &none(), t0), Err(Duration::from_millis(100)));
        assert_eq!(
            limit.check(a, &none(), t0 + Duration::from_millis(40)),
            Err(Duration::from_millis(60))
        );
        // Refused requests do not dig the hole deeper, and other clients are unaffected.
        assert_eq!(
            limit.check(a, &none(), t0 + Duration::from_millis(100)),
            Ok(())
        );
        assert_eq!(limit.check(ip("192.0.2.2"), &none(), t0), Ok(()));
    }

    #[test]
    fn recovers_as_time_passes() {
        let limit = RateLimit::per_minute(60).burst(3).build().unwrap();
        let t0 = Instant::now();
        let a = ip("198.51.100.7");
        for _ in 0..3 {
            limit.check(a, &none(), t0).unwrap();
        }
        let wait = limit.check(a, &none(), t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(1));
        // After the wait, exactly one more; after a full refill, a full burst again.
        let t1 = t0 + wait;
        assert_eq!(limit.check(a, &none(), t1), Ok(()));
        assert!(limit.check(a, &none(), t1).is_err());
        let t2 = t1 + Duration::from_secs(3);
        for _ in 0..3 {
            assert_eq!(limit.check(a, &none(), t2), Ok(()));
        }
        assert!(limit.check(a, &none(), t2).is_err());
        // Steady traffic at the configured rate is never refused.
        let t3 = t2 + Duration::from_secs(10);
        for s in 0..100 {
            let t = t3 + Duration::from_secs(s);
            assert_eq!(limit.check(a, &none(), t), Ok(()), "second {s}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn follows_tokio_paused_time() {
        let limit = RateLimit::per_second(2).burst(2).build().unwrap();
        let now = || tokio::time::Instant::now().into_std();
        let a = ip("2001:db8::1");
        assert!(limit.check(a, &none(), now()).is_ok());
        assert!(limit.check(a, &none(), now()).is_ok());
        let wait = limit.check(a, &none(), now()).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        let response = too_many_requests(wait);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[RETRY_AFTER], "1");
        tokio::time::advance(wait).await;
        assert!(limit.check(a, &none(), now()).is_ok());
    }

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        let secs = |d| too_many_requests(d).headers()[RETRY_AFTER].clone();
        assert_eq!(secs(Duration::ZERO), "1");
        assert_eq!(secs(Duration::from_millis(1)), "1");
        assert_eq!(secs(Duration::from_secs(1)), "1");
        assert_eq!(secs(Duration::from_millis(1001)), "2");
        assert_eq!(secs(Duration::from_secs(120)), "120");
    }

    #[test]
    fn keyed_by_header_with_address_fallback() {
        let limit = RateLimit::per_second(1)
            .burst(1)
            .key_header("X-User")
            .build()
            .unwrap();
        let t0 = Instant::now();
        let user = |name: &str| {
            let mut h = HeaderMap::new();
            h.insert("x-user", name.parse().unwrap());
            h
        };
        let shared_ip = ip("192.0.2.10");
        // Two users behind one address each get their own bucket.
        assert!(limit.check(shared_ip, &user("alice"), t0).is_ok());
        assert!(limit.check(shared_ip, &user("bob"), t0).is_ok());
        assert!(limit.check(shared_ip, &user("alice"), t0).is_err());
        // One user from two addresses shares one bucket.
        assert!(limit.check(ip("198.51.100.1"), &user("bob"), t0).is_err());
        // Without the header, the address is the key; without either, one shared bucket.
        assert!(limit.check(shared_ip, &none(), t0).is_ok());
        assert!(limit.check(shared_ip, &none(), t0).is_err());
        assert!(limit.check(None, &none(), t0).is_ok());
        assert!(limit.check(None, &none(), t0).is_err());
        assert_eq!(limit.tracked_keys(), 4);
    }

    #[test]
    fn ipv6_grouped_by_prefix_and_ipv4_mapped_normalised() {
        let limit = RateLimit::per_second(1).burst(1).build().unwrap();
        let t0 = Instant::now();
        assert!(limit.check(ip("2001:db8:0:1::1"), &none(), t0).is_ok());
        // Same /64, different interface id.
        assert!(limit.check(ip("2001:db8:0:1::ffff"), &none(), t0).is_err());
        assert!(limit.check(ip("2001:db8:0:2::1"), &none(), t0).is_ok());
        // A dual-stack socket's mapped form is the IPv4 client.
        assert!(limit.check(ip("192.0.2.3"), &none(), t0).is_ok());
        assert!(limit.check(ip("::ffff:192.0.2.3"), &none(), t0).is_err());

        let per_address = RateLimit::per_second(1)
            .burst(1)
            .ipv6_prefix(128)
            .build()
            .unwrap();
        assert!(per_address.check(ip("2001:db8::1"), &none(), t0).is_ok());
        assert!(per_address.check(ip("2001:db8::2"), &none(), t0).is_ok());
    }

    #[test]
    fn invalid_settings_fail_at_build() {
        let err = |b: RateLimitBuilder| b.build().unwrap_err();
        assert_eq!(
            err(RateLimit::per_second(0)),
            AccessError::Rate {
                requests: 0,
                per: Duration::from_secs(1)
            }
        );
        assert!(matches!(
            err(RateLimit::per(1, Duration::ZERO)),
            AccessError::Rate { .. }
        ));
        assert!(matches!(
            err(RateLimit::per(1, Duration::from_secs(86_401))),
            AccessError::Rate { .. }
        ));
        assert_eq!(
            err(RateLimit::per_second(5).burst(0)),
            AccessError::Burst(0)
        );
        assert_eq!(
            err(RateLimit::per_second(5).ipv6_prefix(0)),
            AccessError::Ipv6Prefix(0)
        );
        assert_eq!(
            err(RateLimit::per_second(5).ipv6_prefix(129)),
            AccessError::Ipv6Prefix(129)
        );
        assert_eq!(
            err(RateLimit::per_second(5).max_keys(0)),
            AccessError::MaxKeys(0)
        );
        assert_eq!(
            err(RateLimit::per_second(5).key_header("no spaces")),
            AccessError::HeaderName("no spaces".into())
        );
        assert_eq!(
            OriginConcurrency::builder(0).build().unwrap_err(),
            AccessError::Concurrency(0)
        );
        assert_eq!(
            AccessError::Ipv6Prefix(0).to_string(),
            "invalid IPv6 prefix length 0: must be 1 to 128"
        );
    }

    /// The process's resident set size (Linux; only meaningful when the test runs alone).
    fn rss_bytes() -> Option<usize> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    #[test]
    fn memory_stays_bounded_under_a_million_distinct_clients() {
        let rss_before = rss_bytes();
        let limit = RateLimit::per_second(10).burst(10).build().unwrap();
        let cap = limit.max_keys();
        assert_eq!(cap, RateLimit::DEFAULT_MAX_KEYS);
        let t0 = Instant::now();
        // One abuser deep into its limit before the flood.
        let abuser = ip("203.0.113.66");
        while limit.check(abuser, &none(), t0).is_ok() {}

        let mut peak = 0;
        let mut peak_bytes = 0;
        for i in 0..1_000_000u32 {
            // The clock barely moves, so every flooding client still holds debt.
            let now = t0 + Duration::from_micros(u64::from(i / 1000));
            let client = IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(limit.check(Some(client), &none(), now), Ok(()));
            let tracked = limit.tracked_keys();
            assert!(tracked <= cap, "{tracked} tracked after {i} clients");
            peak = peak.max(tracked);
            if i % 1000 == 0 {
                peak_bytes = peak_bytes.max(limit.memory_bytes());
            }
        }
        let rss_after = rss_bytes();
        let tracked = limit.tracked_keys();
        assert!(
            tracked <= cap && peak <= cap,
            "tracked {tracked}, peak {peak}"
        );
        assert!(tracked > cap / 2, "the table is in use: {tracked}");
        let bytes = limit.memory_bytes();
        println!(
            "1,000,000 distinct clients: {tracked} tracked (peak {peak}, cap {cap}), \
             table {bytes} bytes ({:.1} MiB, peak {:.1} MiB), {} bytes per bucket; \
             process RSS {:?} MiB before, {:?} MiB after",
            bytes as f64 / 1048576.0,
            peak_bytes as f64 / 1048576.0,
            std::mem::size_of::<(u128, Tat)>() + 1,
            rss_before.map(|b| b >> 20),
            rss_after.map(|b| b >> 20),
        );
        assert!(peak_bytes <= 5 << 20, "{peak_bytes} bytes");
        // The flood evicted its own fresh entries, not the abuser's debt.
        let end = t0 + Duration::from_millis(1);
        assert!(limit.check(abuser, &none(), end).is_err());
    }

    #[test]
    fn eviction_drops_refilled_clients_first_and_never_exceeds_the_cap() {
        let limit = RateLimit::per_second(1)
            .burst(2)
            .max_keys(64)
            .build()
            .unwrap();
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let v6 = IpAddr::V6(Ipv6Addr::from(u128::from(i) << 64));
            limit.check(Some(v6), &none(), t0).unwrap();
            assert!(limit.tracked_keys() <= 64);
        }
        // Once every bucket has refilled, all tracked state is disposable.
        let later = t0 + Duration::from_secs(10);
        let mut map = HashMap::new();
        map.insert(1u128, t0);
        map.insert(2u128, later + Duration::from_secs(1));
        evict(&mut map, later, 2);
        assert_eq!(map.len(), 1);
        assert!(map.contains_key(&2));
    }

    #[test]
    fn evict_removes_exactly_the_earliest() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut full: HashMap<u128, Tat> = (0..14u128).map(|k| (k, at(100))).collect();
        full.insert(100, at(500));
        full.insert(101, at(50));
        // Full at 16 slots: keep 14 (16 - 16/8), earliest out first, ties broken arbitrarily.
        evict(&mut full, t0, 16);
        assert_eq!(full.len(), 14);
        assert!(full.contains_key(&100));
        assert!(!full.contains_key(&101));
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_cap_holds_under_200_acquirers() {
        let origin = OriginConcurrency::builder(8)
            .queue_timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (origin, current, peak) = (origin.clone(), current.clone(), peak.clone());
                tokio::spawn(async move {
                    let _permit = origin.acquire().await.expect("within the queue timeout");
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    assert!(origin.in_flight() <= 8);
                    tokio::time::sleep(Duration::from_millis(10)).await; // paused: no real wait
                    current.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 8);
        assert_eq!(origin.in_flight(), 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrency_cap_holds_across_threads() {
        let origin = OriginConcurrency::builder(3).build().unwrap();
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let (origin, current, peak) = (origin.clone(), current.clone(), peak.clone());
                tokio::spawn(async move {
                    let _permit = origin.acquire().await.unwrap();
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    for _ in 0..10 {
                        tokio::task::yield_now().await;
                    }
                    current.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    #[tokio::test(start_paused = true)]
    async fn queue_timeout_yields_overloaded() {
        let origin = OriginConcurrency::builder(1)
            .queue_timeout(Duration::from_millis(250))
            .build()
            .unwrap();
        let held = origin.acquire().await.unwrap();
        let start = tokio::time::Instant::now();
        let err = origin.acquire().await.unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        assert_eq!(
            err,
            Overloaded {
                waited: Duration::from_millis(250)
            }
        );
        assert!(err.to_string().contains("overloaded"));

        // A slot freed while waiting is handed over.
        let waiter = {
            let origin = origin.clone();
            tokio::spawn(async move { origin.acquire().await.map(drop) })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), Ok(()));

        // Zero timeout: never wait.
        let now_or_never = OriginConcurrency::builder(1)
            .queue_timeout(Duration::ZERO)
            .build()
            .unwrap();
        let _held = now_or_never.acquire().await.unwrap();
        let start = tokio::time::Instant::now();
        assert!(now_or_never.acquire().await.is_err());
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
