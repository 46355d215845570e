//! Where the edge meets the tier: a look in Redis before the origin (and the shield lock),
//! promotion into memory, write-through after a commit, deletion on invalidation.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::codec::{self, Decoded};
use super::{bump, Lease, RedisTier};
use crate::entry::{Object, Slot, VaryRecord};
use crate::fetch::Fetch;
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::service::{reuse, Reuse};

/// The longest TTL given to a value (a year): Redis refuses expiry times past its range.
const MAX_TTL: u64 = 365 * 24 * 3600;

/// An object found in Redis and promoted into memory.
pub(crate) struct Promoted {
    /// The memory key it is stored under (a variant key when found through a `Vary` record).
    pub(crate) key: CacheKey,
    pub(crate) obj: Arc<Object>,
    /// Whether the followers of this flight may have it too: not when the flight is for the
    /// URL and the object is one variant of it, chosen by the leader's request fields.
    pub(crate) share: bool,
}

/// What a value in Redis turned out to be for this request.
enum Lookup {
    Hit(Promoted),
    /// Nothing usable: absent, undecodable, or not usable for this request.
    Miss,
}

/// Looks in Redis for a miss led by `fetch`, before it goes to the origin. With the shield
/// on, a miss there takes the fleet-wide lock (kept in `fetch.shield` until the object is
/// written through) or waits, bounded, for the node that holds it. `None`: go to the origin.
pub(crate) async fn before_origin(fetch: &mut Fetch, request: &HeaderMap) -> Option<Promoted> {
    let shared = fetch.shared.clone();
    let tier = shared.tier.as_ref()?;
    if fetch.stale.is_some() || fetch.request_cc.no_cache {
        return None;
    }
    let value = tier.get(fetch.key).await.ok()?;
    if let Lookup::Hit(found) = resolve(&shared, tier, fetch, request, value).await? {
        bump(&tier.counters().hits);
        return Some(found);
    }
    let Some(shield) = tier.shield() else {
        bump(&tier.counters().misses);
        return None;
    };
    let deadline = tokio::time::Instant::now() + shield.lock_ttl;
    let mut waited = false;
    loop {
        let (lease, value) = tier
            .lock_and_get(fetch.key, fetch.key, shield.lock_ttl)
            .await
            .ok()?;
        match resolve(&shared, tier, fetch, request, value).await? {
            // Filled by another node meanwhile; a lock just taken is released on drop.
            Lookup::Hit(found) => {
                bump(&tier.counters().hits);
                return Some(found);
            }
            Lookup::Miss if lease.is_some() => {
                bump(&tier.counters().shield_locks);
                bump(&tier.counters().misses);
                fetch.shield = lease.map(Arc::new);
                return None;
            }
            Lookup::Miss => {}
        }
        if !waited {
            waited = true;
            bump(&tier.counters().shield_waits);
        }
        let next = tokio::time::Instant::now() + shield.poll_interval;
        if next >= deadline {
            bump(&tier.counters().misses);
            return None;
        }
        tokio::time::sleep_until(next).await;
    }
}

/// Decodes what Redis held under the flight's key and, for a `Vary` record, reads the
/// variant this request selects. A usable object is promoted into memory. `None` when a
/// Redis call failed: the caller goes to the origin.
async fn resolve(
    shared: &Shared,
    tier: &RedisTier,
    fetch: &Fetch,
    request: &HeaderMap,
    value: Option<Bytes>,
) -> Option<Lookup> {
    let Some(value) = value else {
        return Some(Lookup::Miss);
    };
    let record = match decode(tier, value) {
        Some(Decoded::Object(obj)) => {
            return Some(promote(shared, fetch, fetch.key, obj));
        }
        // A record lives under a URL's key only; the flight is for the URL when memory
        // knew no record.
        Some(Decoded::Vary(record)) if fetch.key == fetch.primary => Arc::new(record),
        Some(Decoded::Vary(_)) | None => return Some(Lookup::Miss),
    };
    // Keep the fleet's record (and so its epoch) unless this node made one meanwhile, so
    // this node's own fills of other variants land where other nodes look.
    let record = match shared.store.get(&fetch.primary) {
        Some(Slot::Vary(mine)) => mine,
        _ => {
            shared
                .store
                .insert(fetch.primary, Slot::Vary(record.clone()));
            record
        }
    };
    let variant = fetch.primary.variant(record.epoch, &record.names, request);
    let value = tier.get(variant).await.ok()?;
    Some(match value.and_then(|v| decode(tier, v)) {
        Some(Decoded::Object(obj)) => promote(shared, fetch, variant, obj),
        _ => Lookup::Miss,
    })
}

fn decode(tier: &RedisTier, value: Bytes) -> Option<Decoded> {
    match codec::decode(value) {
        Ok(decoded) => Some(decoded),
        Err(e) => {
            bump(&tier.counters().corrupt);
            tracing::warn!(error = %e, "redis tier: undecodable value, treated as a miss");
            None
        }
    }
}

/// Stores an object found in Redis under `key` in memory, if this request could have used it
/// from memory (RFC 9111 §4.2: fresh, or stale within the request's `max-stale`).
fn promote(shared: &Shared, fetch: &Fetch, key: CacheKey, obj: Box<Object>) -> Lookup {
    let now = shared.clock.now();
    if !matches!(
        reuse(&obj, &fetch.request_cc, now),
        Reuse::Fresh | Reuse::Stale
    ) {
        return Lookup::Miss;
    }
    let obj = Arc::new(*obj);
    // Read before a purge that has come in since: answer this request, keep nothing.
    let purged = shared.purge_generation.load(Ordering::SeqCst) != fetch.generation;
    if obj.body.len() as u64 <= shared.max_object_size && !purged {
        shared.store.insert(key, Slot::Object(obj.clone()));
    }
    Lookup::Hit(Promoted {
        key,
        share: key == fetch.key,
        obj,
    })
}

/// Writes a committed object through to Redis in the background, with its remaining
/// freshness plus its stale windows as the TTL. `lease`, the shield lock of the trip that
/// fetched it, is released only once the write is done, so nodes waiting on it find it.
/// Objects no node could use without revalidating (`no-cache`) are not written.
pub(crate) fn write_through(
    shared: &Shared,
    primary: CacheKey,
    key: CacheKey,
    record: Option<Arc<VaryRecord>>,
    obj: &Arc<Object>,
    lease: Option<Arc<Lease>>,
) {
    let Some(tier) = shared.tier.clone() else {
        return;
    };
    if obj.rules.no_cache {
        return;
    }
    let stale_window = if obj.rules.no_stale {
        0
    } else {
        obj.rules
            .stale_while_revalidate
            .max(obj.rules.stale_if_error)
            .max(shared.stale_if_error)
    };
    let ttl = obj
        .ttl(shared.clock.now())
        .saturating_add(i64::try_from(stale_window).unwrap_or(i64::MAX));
    let Ok(ttl) = u64::try_from(ttl) else {
        return;
    };
    if ttl == 0 {
        return;
    }
    let ttl = Duration::from_secs(ttl.min(MAX_TTL));
    let obj = obj.clone();
    // The purge epoch as of the commit: a purge counted in Redis since refuses the write.
    let epoch = tier.epoch().known();
    tokio::spawn(async move {
        let _ = tier
            .put(primary, key, record.as_deref(), &obj, ttl, epoch)
            .await;
        drop(lease);
    });
}

/// Deletes a URL's object (or its `Vary` record, and so every variant) from Redis, in the
/// background (RFC 9111 §4.4 invalidation).
pub(crate) fn invalidate(shared: &Shared, key: CacheKey) {
    let Some(tier) = shared.tier.clone() else {
        return;
    };
    tokio::spawn(async move {
        let _ = tier.delete(key).await;
    });
}
