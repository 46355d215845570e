//! The shared second tier on Redis (feature `redis`): [`RedisTier`], documented there, and
//! the hooks the miss path calls (`flow`), the value format (`codec`), the circuit breaker
//! (`breaker`) and purge fan-out (`fanout`: Redis deletion through the path and tag indexes,
//! publication, the subscription and the purge-epoch check).

mod breaker;
mod codec;
mod fanout;
mod flow;

use std::collections::hash_map::RandomState;
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, Weak};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisResult, Script};

use crate::entry::{Object, VaryRecord};
use crate::key::CacheKey;
use crate::layer::Shared;

use breaker::Breaker;
pub(crate) use fanout::fan_out;
pub(crate) use flow::{before_origin, invalidate, write_through};

/// Deletes the lock only if it still holds this holder's token.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// Writes an object through, unless the purge epoch moved past the one the writer knew
/// (`ARGV[1]`, empty: unguarded): a fill that raced a purge never lands after the purge's
/// deletion. Adds the key to its path and tag indexes (`KEYS[4..]`), whose TTL only grows.
/// KEYS: epoch, object, primary. ARGV: epoch, value, TTL in ms, `Vary` record (empty: none).
const PUT: &str = r#"
if ARGV[1] ~= "" and (redis.call("GET", KEYS[1]) or "0") ~= ARGV[1] then return 0 end
redis.call("SET", KEYS[2], ARGV[2], "PX", ARGV[3])
if ARGV[4] ~= "" then
  redis.call("SET", KEYS[3], ARGV[4], "KEEPTTL")
  redis.call("PEXPIRE", KEYS[3], ARGV[3], "NX")
  redis.call("PEXPIRE", KEYS[3], ARGV[3], "GT")
end
for i = 4, #KEYS do
  redis.call("SADD", KEYS[i], KEYS[2])
  redis.call("PEXPIRE", KEYS[i], ARGV[3], "NX")
  redis.call("PEXPIRE", KEYS[i], ARGV[3], "GT")
end
return 1
"#;

/// Deletes every object an index (a path's or a tag's set) names, and the index.
const DROP_INDEX: &str = r#"
local keys = redis.call("SMEMBERS", KEYS[1])
for i = 1, #keys, 512 do
  redis.call("DEL", unpack(keys, i, math.min(i + 511, #keys)))
end
redis.call("DEL", KEYS[1])
return #keys
"#;

/// A shared second cache tier on Redis, for
/// [`CdnLayerBuilder::shared_tier`](crate::CdnLayerBuilder::shared_tier) (feature `redis`).
///
/// Several edge nodes (layers, usually in several processes) that share one Redis share what
/// they fetched: on a memory miss a node looks in Redis before the origin, and every object it
/// stores (filled, or refreshed by a 304) is written through to Redis in the background. An
/// object found in Redis is promoted into the node's memory and answered as a hit:
/// `X-Cache: Hit from NAME`, `Cache-Status: NAME; hit; ttl=N; detail=shared-tier`.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_cdn::{CdnLayer, RedisTier};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let tier = RedisTier::builder("redis://127.0.0.1:6379/")
///     .timeout(Duration::from_millis(50))
///     .shield(true)
///     .build()?;
/// let layer = CdnLayer::builder().shared_tier(tier).build()?;
/// # let _ = layer;
/// # Ok(())
/// # }
/// ```
///
/// # What is looked up, and when
///
/// Only the viewer that leads a miss for a key looks in Redis (its followers wait for it, as
/// for an origin request), and only for a plain miss: a stale object being revalidated goes to
/// the origin, since a fresher copy elsewhere would have to be found and compared first, and a
/// request with `Cache-Control: no-cache` always goes to the origin. An object found in Redis
/// is used only if the request could have used it from memory (fresh, or stale within the
/// request's `max-stale`); otherwise the request goes on to the origin. `Vary` records are
/// shared with their epoch, so every node finds the same variants.
///
/// # Format and lifetime
///
/// Values use a versioned binary format (magic `TCDN`, a version byte): status, fields, body,
/// times, reuse rules, host, path, coding and any other codings that fit. A value that does not
/// decode — corrupt, or written by another version — is a miss, never an error for the viewer.
/// The Redis TTL is the object's remaining freshness plus its stale windows
/// (`stale-while-revalidate`, `stale-if-error` or the layer's default), so Redis forgets an
/// object when no node could use it any more. Bodies above
/// [`max_body_size`](RedisTierBuilder::max_body_size) stay in memory only. Keys are the key
/// prefix and the 32 hex digits of the cache key.
///
/// # Origin shield
///
/// With [`shield`](RedisTierBuilder::shield) on, a node that misses in memory and in Redis
/// takes a per-key lock in Redis (`SET NX PX`) before going to the origin. A node that finds
/// the lock taken polls Redis for the object (every
/// [`shield_poll_interval`](RedisTierBuilder::shield_poll_interval), trying the lock again
/// each time) for at most the lock's TTL, then goes to the origin itself. The holder releases
/// the lock once the object is written through (a compare-and-delete script, so it never
/// deletes another node's lock); a holder that dies releases it by expiry. Within a node,
/// requests collapse as always, so a fleet sends one request per key to the origin.
///
/// # Failure is not an outage
///
/// Every Redis call is bounded by [`timeout`](RedisTierBuilder::timeout). After
/// [`failure_threshold`](RedisTierBuilder::failure_threshold) consecutive failures the circuit
/// breaker opens and the tier is not called for
/// [`cooldown`](RedisTierBuilder::cooldown); then one probe call decides whether it closes.
/// Meanwhile requests are served from memory and the origin, as without a tier. The
/// connection reconnects by itself (redis-rs `ConnectionManager`). State changes are logged
/// with `tracing`; [`TierStats`] counts hits, misses, errors and breaker openings.
///
/// # Cloning
///
/// Cloning is cheap; clones share one connection, breaker and counters. Give each node (each
/// layer) its own tier: the breaker and counters describe one node's view of Redis.
///
/// # Purges
///
/// [`CdnLayer::purge`](crate::CdnLayer::purge) on a node purges its memory at once, then in
/// the background:
///
/// 1. `INCR {prefix}purge-epoch`. Write-throughs carry the epoch their node knew at commit
///    and a script refuses them once it has moved ([`TierStats::refused_writes`]), so a fill
///    that raced the purge never lands after its deletion.
/// 2. Deletes what it names from Redis. Every write-through also adds the object's key to a
///    set for its path (`{prefix}path:{path}`) and one per tag (`{prefix}tag:{tag}`), with
///    the object's TTL (only ever extended). A path or tag purge deletes the set's members
///    and the set in one script; a pattern purge `SCAN`s the path sets (`COUNT` 256 per
///    call) and does the same for those whose path matches. A soft purge deletes from Redis
///    too: Redis holds no stale copies to serve.
/// 3. `PUBLISH`es `{"v":1,"kind","value","soft","node","epoch"}` on `{prefix}purge`.
///
/// Each node keeps a dedicated pub/sub connection subscribed to that channel, applies other
/// nodes' purges to its memory (its own it skips by node id), and subscribes again on its
/// own when the connection drops. Every
/// [`purge_check_interval`](RedisTierBuilder::purge_check_interval) (1 s) and on every
/// (re)subscription it reads the epoch (one `GET`): if it moved by more than the messages
/// received, or went back (Redis lost its data), the node missed purges and drops its whole
/// memory store ([`TierStats::epoch_drops`]). So once Redis is reachable, a node serves
/// purged content at most one check interval plus the call [`timeout`](RedisTierBuilder::timeout)
/// longer. Unreadable messages (another version) count as missed. A message still in
/// flight when the epoch is read can cause a needless drop: refills, never stale content.
/// Before its first check a node's write-throughs are not guarded by the epoch.
///
/// Failures of any of this are logged and counted ([`TierStats::purge_failures`]); they never
/// fail a purge, and the local purge has already happened. A purge made while Redis is
/// unreachable reaches only the node that made it. A key in an index may outlive its object
/// or be re-written with other tags; a purge through it deletes at most more than needed.
#[derive(Clone)]
pub struct RedisTier {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// Made on first use, inside the runtime: the connection manager spawns its own tasks.
    conn: Mutex<Option<ConnectionManager>>,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    shield: Option<Shield>,
    breaker: Breaker,
    counters: Counters,
    release: Script,
    put: Script,
    drop_index: Script,
    /// This node's id in purge messages.
    node: String,
    /// The layer whose memory the purge listener purges; set when the layer is built.
    owner: OnceLock<Weak<Shared>>,
    listening: AtomicBool,
    subscribed: AtomicBool,
    epoch: Mutex<fanout::Epoch>,
    purge_check: Duration,
}

#[derive(Clone, Copy, Debug)]
struct Shield {
    lock_ttl: Duration,
    poll_interval: Duration,
}

#[derive(Debug, Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    corrupt: AtomicU64,
    writes: AtomicU64,
    oversized: AtomicU64,
    skipped: AtomicU64,
    shield_locks: AtomicU64,
    shield_waits: AtomicU64,
    purges: AtomicU64,
    purge_messages: AtomicU64,
    purge_failures: AtomicU64,
    epoch_drops: AtomicU64,
    refused_writes: AtomicU64,
}

impl fmt::Debug for RedisTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL may carry a password: show only where keys go.
        f.debug_struct("RedisTier")
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .field("shield", &self.inner.shield.is_some())
            .field("breaker_open", &self.inner.breaker.is_open())
            .finish()
    }
}

/// Builds a [`RedisTier`]. Every setting but the URL has a default.
#[derive(Clone, Debug)]
pub struct RedisTierBuilder {
    url: String,
    prefix: String,
    timeout: Duration,
    connect_timeout: Duration,
    max_body: usize,
    failure_threshold: u32,
    cooldown: Duration,
    shield: bool,
    lock_ttl: Duration,
    poll_interval: Duration,
    purge_check: Duration,
}

/// A point-in-time copy of a tier's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TierStats {
    /// Misses in memory answered from Redis.
    pub hits: u64,
    /// Misses in memory that Redis could not answer (nothing usable stored), and went on to
    /// the origin.
    pub misses: u64,
    /// Redis calls that failed or timed out.
    pub errors: u64,
    /// Values in Redis that did not decode (checksum mismatch, another format version): misses.
    pub corrupt: u64,
    /// Objects written through to Redis.
    pub writes: u64,
    /// Objects not written because their body is over the tier's maximum.
    pub oversized: u64,
    /// Redis calls not made because the circuit breaker was open.
    pub skipped: u64,
    /// Times the circuit breaker opened.
    pub breaker_opens: u64,
    /// Whether the circuit breaker is open now.
    pub breaker_open: bool,
    /// Origin-shield locks taken by this node (it went to the origin for the fleet).
    pub shield_locks: u64,
    /// Misses that waited for another node's origin request.
    pub shield_waits: u64,
    /// Purges made on this node that were applied to Redis and published.
    pub purges: u64,
    /// Purges received from other nodes and applied to this node's memory.
    pub purge_messages: u64,
    /// Purges whose Redis part (epoch, deletion, publication) failed, and losses of the purge
    /// subscription.
    pub purge_failures: u64,
    /// Times this node dropped its memory store because it missed purges.
    pub epoch_drops: u64,
    /// Write-throughs refused because a purge came in between.
    pub refused_writes: u64,
    /// Whether this node's purge subscription is up now (and its first purge-epoch check,
    /// which sets the baseline missed purges are measured against, is done).
    pub subscribed: bool,
}

/// An error of the shared tier: a setting that cannot work, or a failed Redis call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TierError {
    /// The URL is not one the Redis client accepts (`redis://`, `rediss://`, `redis+unix://`).
    Url(String),
    /// A setting is out of range.
    Config(&'static str),
    /// Redis answered with an error, or the connection failed.
    Redis(String),
    /// Redis did not answer within the tier's timeout.
    Timeout,
    /// The circuit breaker is open: Redis was not called.
    CircuitOpen,
}

impl fmt::Display for TierError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TierError::Url(e) => write!(f, "invalid redis URL: {e}"),
            TierError::Config(e) => write!(f, "invalid shared tier setting: {e}"),
            TierError::Redis(e) => write!(f, "redis: {e}"),
            TierError::Timeout => f.write_str("redis did not answer in time"),
            TierError::CircuitOpen => f.write_str("redis circuit breaker open"),
        }
    }
}

impl std::error::Error for TierError {}

impl RedisTier {
    /// A tier on the Redis at `url` with default settings. Nothing is connected yet: the
    /// connection is made on first use, and a Redis that is down is a miss, not an error.
    pub fn new(url: impl Into<String>) -> Result<Self, TierError> {
        Self::builder(url).build()
    }

    /// A builder for a tier on the Redis at `url`: `redis://host:port/db`,
    /// `redis+unix:///path/to/socket`, or `rediss://` with a TLS feature of the redis crate.
    pub fn builder(url: impl Into<String>) -> RedisTierBuilder {
        RedisTierBuilder {
            url: url.into(),
            prefix: "tower-cdn:".to_owned(),
            timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_secs(1),
            max_body: 1024 * 1024,
            failure_threshold: 5,
            cooldown: Duration::from_secs(1),
            shield: false,
            lock_ttl: Duration::from_secs(2),
            poll_interval: Duration::from_millis(20),
            purge_check: Duration::from_secs(1),
        }
    }

    /// A snapshot of the tier's counters.
    pub fn stats(&self) -> TierStats {
        let c = &self.inner.counters;
        let load = |n: &AtomicU64| n.load(Ordering::Relaxed);
        TierStats {
            hits: load(&c.hits),
            misses: load(&c.misses),
            errors: load(&c.errors),
            corrupt: load(&c.corrupt),
            writes: load(&c.writes),
            oversized: load(&c.oversized),
            skipped: load(&c.skipped),
            breaker_opens: load(&self.inner.breaker.opens),
            breaker_open: self.inner.breaker.is_open(),
            shield_locks: load(&c.shield_locks),
            shield_waits: load(&c.shield_waits),
            purges: load(&c.purges),
            purge_messages: load(&c.purge_messages),
            purge_failures: load(&c.purge_failures),
            epoch_drops: load(&c.epoch_drops),
            refused_writes: load(&c.refused_writes),
            subscribed: self.inner.subscribed.load(Ordering::Acquire),
        }
    }

    /// Sends `PING`, through the breaker and within the timeout: a health check, and a way to
    /// connect before the first miss.
    pub async fn ping(&self) -> Result<(), TierError> {
        self.call(|mut c| async move { redis::cmd("PING").query_async::<()>(&mut c).await })
            .await
    }

    fn counters(&self) -> &Counters {
        &self.inner.counters
    }

    fn shield(&self) -> Option<Shield> {
        self.inner.shield
    }

    fn key(&self, key: CacheKey) -> String {
        format!("{}{:032x}", self.inner.prefix, key.0)
    }

    fn lock_key(&self, key: CacheKey) -> String {
        format!("{}lock:{:032x}", self.inner.prefix, key.0)
    }

    /// Ties the tier to the layer whose memory its purge listener purges, and starts the
    /// listener if a runtime is at hand (else the first Redis call starts it).
    pub(crate) fn attach(&self, shared: &Arc<Shared>) {
        if self.inner.owner.set(Arc::downgrade(shared)).is_err() {
            tracing::warn!(
                "a RedisTier was given to a second layer: purges from other nodes reach only the first"
            );
        }
        fanout::start(self);
    }

    fn path_index(&self, path: &str) -> String {
        format!("{}path:{path}", self.inner.prefix)
    }

    fn tag_index(&self, tag: &str) -> String {
        format!("{}tag:{tag}", self.inner.prefix)
    }

    fn epoch_key(&self) -> String {
        format!("{}purge-epoch", self.inner.prefix)
    }

    fn channel(&self) -> String {
        format!("{}purge", self.inner.prefix)
    }

    async fn drop_index(&self, index: impl redis::ToRedisArgs + Send) -> Result<(), TierError> {
        let script = &self.inner.drop_index;
        let invocation = script.key(index);
        self.call(|mut c| async move { invocation.invoke_async::<()>(&mut c).await })
            .await
    }

    fn conn(&self) -> RedisResult<ConnectionManager> {
        if !self.inner.listening.load(Ordering::Relaxed) {
            fanout::start(self);
        }
        let mut slot = self
            .inner
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(conn) = &*slot {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.inner.connect_timeout))
            .set_response_timeout(Some(self.inner.timeout))
            // Reconnect attempts stay short: the breaker spaces out the calls that trigger
            // them, so a Redis that comes back is used again within a cool-down or two.
            .set_number_of_retries(2)
            .set_min_delay(Duration::from_millis(10))
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(self.inner.client.clone(), config)?;
        *slot = Some(conn.clone());
        // Connect in the background too, so a first connection slower than the call timeout
        // still completes for the calls after it.
        let (mut warm, limit) = (conn.clone(), self.inner.connect_timeout);
        tokio::spawn(async move {
            let ping = redis::cmd("PING");
            let _ = tokio::time::timeout(limit, ping.query_async::<()>(&mut warm)).await;
        });
        Ok(conn)
    }

    /// One Redis call through the breaker, bounded by the timeout, counted.
    async fn call<T, F>(&self, op: impl FnOnce(ConnectionManager) -> F) -> Result<T, TierError>
    where
        F: Future<Output = RedisResult<T>>,
    {
        let Some(permit) = self.inner.breaker.admit() else {
            bump(&self.inner.counters.skipped);
            return Err(TierError::CircuitOpen);
        };
        let outcome = match self.conn() {
            Ok(conn) => tokio::time::timeout(self.inner.timeout, op(conn)).await,
            Err(e) => Ok(Err(e)),
        };
        match outcome {
            Ok(Ok(value)) => {
                permit.succeeded();
                Ok(value)
            }
            Ok(Err(e)) => {
                permit.failed();
                bump(&self.inner.counters.errors);
                tracing::debug!(error = %e, "redis tier call failed");
                Err(TierError::Redis(e.to_string()))
            }
            Err(_) => {
                permit.failed();
                bump(&self.inner.counters.errors);
                tracing::debug!("redis tier call timed out");
                Err(TierError::Timeout)
            }
        }
    }

    async fn get(&self, key: CacheKey) -> Result<Option<Bytes>, TierError> {
        let key = self.key(key);
        self.call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
            .await
    }

    /// Tries the shield lock for `lock`, then reads `key`, in one round trip. Redis runs the
    /// two in order, so a lock released after its holder's write is never seen free while
    /// the object is still missing.
    async fn lock_and_get(
        &self,
        lock: CacheKey,
        key: CacheKey,
        ttl: Duration,
    ) -> Result<(Option<Lease>, Option<Bytes>), TierError> {
        let lock_key = self.lock_key(lock);
        let token = token();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(&lock_key)
            .arg(&token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .cmd("GET")
            .arg(self.key(key));
        let (locked, value): (Option<String>, Option<Bytes>) = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let lease = locked.map(|_| Lease {
            tier: self.clone(),
            key: lock_key,
            token,
        });
        Ok((lease, value))
    }

    async fn release(&self, lock_key: String, token: String) -> Result<(), TierError> {
        let release = &self.inner.release;
        self.call(|mut c| async move {
            release
                .key(lock_key)
                .arg(token)
                .invoke_async::<()>(&mut c)
                .await
        })
        .await
    }

    /// Writes an object (and its `Vary` record under `primary`) with a TTL of `ttl`, unless
    /// the purge epoch is no longer `epoch` (see [`PUT`]). The record's TTL only grows, so it
    /// outlives every variant written under it.
    #[allow(clippy::too_many_arguments)]
    async fn put(
        &self,
        primary: CacheKey,
        key: CacheKey,
        record: Option<&VaryRecord>,
        obj: &Object,
        ttl: Duration,
        epoch: Option<u64>,
    ) -> Result<(), TierError> {
        let Some(value) = codec::encode_object(obj, self.inner.max_body) else {
            bump(&self.inner.counters.oversized);
            return Ok(());
        };
        let ms = ttl.as_millis().max(1) as u64;
        let mut invocation = self.inner.put.prepare_invoke();
        invocation
            .key(self.epoch_key())
            .key(self.key(key))
            .key(self.key(primary))
            .key(self.path_index(&obj.path));
        for tag in obj.tags.iter() {
            invocation.key(self.tag_index(tag));
        }
        invocation
            .arg(epoch.map(|e| e.to_string()).unwrap_or_default())
            .arg(value)
            .arg(ms)
            .arg(record.map(codec::encode_vary).unwrap_or_default());
        let written: i64 = self
            .call(|mut c| async move { invocation.invoke_async(&mut c).await })
            .await?;
        if written == 1 {
            bump(&self.inner.counters.writes);
        } else {
            bump(&self.inner.counters.refused_writes);
            tracing::debug!(path = %obj.path, "write-through refused: a purge came in between");
        }
        Ok(())
    }

    async fn delete(&self, key: CacheKey) -> Result<(), TierError> {
        let key = self.key(key);
        self.call(|mut c| async move { redis::cmd("DEL").arg(key).query_async::<()>(&mut c).await })
            .await
    }
}

impl RedisTierBuilder {
    /// The prefix of every key this tier writes (default `tower-cdn:`). Nodes that share
    /// objects use the same prefix; different prefixes keep caches apart on one Redis.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The longest any Redis call may take (default 50 ms); past it the call counts as failed
    /// and the request goes on without the tier.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// How long one connection attempt may take (default 1 s). Connecting happens in the
    /// background of the first calls, which still wait at most [`timeout`](Self::timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest body written to Redis, in bytes (default 1 MiB). Larger objects stay in
    /// the memory tier only. Other codings of an object are written only while they fit too.
    pub fn max_body_size(mut self, bytes: usize) -> Self {
        self.max_body = bytes;
        self
    }

    /// Consecutive failed calls that open the circuit breaker (default 5).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.failure_threshold = failures;
        self
    }

    /// How long an open breaker keeps calls away from Redis before a probe (default 1 s).
    pub fn cooldown(mut self, cooldown: Duration) -> Self {
        self.cooldown = cooldown;
        self
    }

    /// Whether misses take a fleet-wide lock before going to the origin (origin shield;
    /// default off).
    pub fn shield(mut self, on: bool) -> Self {
        self.shield = on;
        self
    }

    /// How long a shield lock lives (default 2 s): the longest another node waits for the
    /// holder's object, and how soon a lock whose holder died frees itself. Make it longer
    /// than a typical origin fetch.
    pub fn shield_lock_ttl(mut self, ttl: Duration) -> Self {
        self.lock_ttl = ttl;
        self
    }

    /// How often a node waiting on another's shield lock looks for the object (default
    /// 20 ms).
    pub fn shield_poll_interval(mut self, interval: Duration) -> Self {
        self.poll_interval = interval;
        self
    }

    /// How often each node reads the purge epoch from Redis to find purges whose messages it
    /// missed (default 1 s; one `GET`). A node that missed some drops its memory store: it
    /// serves purged content at most this long plus [`timeout`](Self::timeout) after Redis
    /// is reachable again.
    pub fn purge_check_interval(mut self, interval: Duration) -> Self {
        self.purge_check = interval;
        self
    }

    /// Checks the settings and the URL. Connects nothing: the first calls do.
    pub fn build(self) -> Result<RedisTier, TierError> {
        if self.timeout.is_zero() || self.connect_timeout.is_zero() {
            return Err(TierError::Config("timeouts must be above zero"));
        }
        if self.purge_check.is_zero() {
            return Err(TierError::Config(
                "the purge check interval must be above zero",
            ));
        }
        if self.shield && (self.lock_ttl.is_zero() || self.poll_interval.is_zero()) {
            return Err(TierError::Config(
                "shield lock TTL and poll interval must be above zero",
            ));
        }
        let client = Client::open(self.url.as_str()).map_err(|e| TierError::Url(e.to_string()))?;
        Ok(RedisTier {
            inner: Arc::new(Inner {
                client,
                conn: Mutex::new(None),
                prefix: self.prefix,
                timeout: self.timeout,
                connect_timeout: self.connect_timeout,
                max_body: self.max_body,
                shield: self.shield.then_some(Shield {
                    lock_ttl: self.lock_ttl,
                    poll_interval: self.poll_interval,
                }),
                breaker: Breaker::new(self.failure_threshold, self.cooldown),
                counters: Counters::default(),
                release: Script::new(RELEASE),
                put: Script::new(PUT),
                drop_index: Script::new(DROP_INDEX),
                node: token(),
                owner: OnceLock::new(),
                listening: AtomicBool::new(false),
                subscribed: AtomicBool::new(false),
                epoch: Mutex::new(fanout::Epoch::default()),
                purge_check: self.purge_check,
            }),
        })
    }
}

/// A shield lock this node holds. Shared by the origin trip and the write-through of its
/// object; when the last holder drops it, it is released in the background (and if that
/// fails, it expires).
pub(crate) struct Lease {
    tier: RedisTier,
    key: String,
    token: String,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let tier = self.tier.clone();
        let (key, token) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.token),
        );
        runtime.spawn(async move {
            let _ = tier.release(key, token).await;
        });
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// A lock token unique to this holder.
fn token() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let random = RandomState::new().build_hasher().finish();
    format!("{random:016x}{:016x}", NEXT.fetch_add(1, Ordering::Relaxed))
}
