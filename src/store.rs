//! The memory tier: a concurrent store bounded by bytes, synchronous on the hit path.

use std::hash::{BuildHasher, Hasher};

use quick_cache::sync::Cache;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::entry::{Object, Slot};
use crate::key::CacheKey;
use crate::metrics::StoreGauges;

/// Weighs slots by their byte size.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotWeighter;

impl Weighter<CacheKey, Slot> for SlotWeighter {
    fn weight(&self, _key: &CacheKey, slot: &Slot) -> u64 {
        slot.weight()
    }
}

/// Keys are already uniform hashes: use 64 of their bits as the table hash.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, n: u128) {
        self.0 = (n as u64) ^ ((n >> 64) as u64);
    }
}

impl BuildHasher for KeyHasher {
    type Hasher = KeyHasher;
    fn build_hasher(&self) -> KeyHasher {
        KeyHasher(0)
    }
}

/// Counts evictions (quick_cache reports them through its lifecycle hooks).
#[derive(Clone, Debug, Default)]
pub(crate) struct Evictions(Arc<AtomicU64>);

impl Lifecycle<CacheKey, Slot> for Evictions {
    type RequestState = ();

    fn on_evict(&self, _state: &mut (), _key: CacheKey, _slot: Slot) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Byte-bounded memory store. Eviction is quick_cache's S3-FIFO-like policy; each shard
/// holds `capacity / shards` bytes, so the largest object must fit in one shard.
pub(crate) struct MemoryStore {
    cache: Cache<CacheKey, Slot, SlotWeighter, KeyHasher, Evictions>,
    max_object: u64,
    evictions: Evictions,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("weight", &self.cache.weight())
            .field("capacity", &self.cache.capacity())
            .field("objects", &self.cache.len())
            .finish()
    }
}

impl MemoryStore {
    /// A store of `capacity` bytes whose largest object is `max_object` bytes.
    pub(crate) fn new(capacity: u64, max_object: u64) -> Self {
        // Shards as many as fit four of the largest objects each, at most 16.
        let shards = (capacity / max_object.max(1) / 4).clamp(1, 16) as usize;
        let shards = if shards.is_power_of_two() {
            shards
        } else {
            shards.next_power_of_two() / 2
        };
        let options = OptionsBuilder::new()
            .estimated_items_capacity((capacity / 16_384).clamp(64, 1 << 20) as usize)
            .weight_capacity(capacity)
            .shards(shards)
            .build()
            .expect("valid store options");
        let evictions = Evictions::default();
        let cache = Cache::with_options(options, SlotWeighter, KeyHasher(0), evictions.clone());
        let max_object = max_object.min(cache.shard_capacity());
        Self {
            cache,
            max_object,
            evictions,
        }
    }

    pub(crate) fn get(&self, key: &CacheKey) -> Option<Slot> {
        self.cache.get(key)
    }

    pub(crate) fn insert(&self, key: CacheKey, slot: Slot) {
        self.cache.insert(key, slot);
    }

    pub(crate) fn remove(&self, key: &CacheKey) -> bool {
        self.cache.remove(key).is_some()
    }

    /// Removes the object under `key` only if it is still `obj`.
    pub(crate) fn remove_if_same(&self, key: &CacheKey, obj: &Arc<Object>) {
        self.cache.remove_if(
            key,
            |slot| matches!(slot, Slot::Object(o) if Arc::ptr_eq(o, obj)),
        );
    }

    /// Replaces the object under `key` only if it is still `obj`.
    pub(crate) fn replace_if_same(&self, key: CacheKey, obj: &Arc<Object>, slot: Slot) {
        if self
            .cache
            .remove_if(
                &key,
                |s| matches!(s, Slot::Object(o) if Arc::ptr_eq(o, obj)),
            )
            .is_some()
        {
            self.cache.insert(key, slot);
        }
    }

    /// Every entry, for invalidation scans.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (CacheKey, Slot)> + '_ {
        self.cache.iter()
    }

    /// The largest object, in store weight, that will be kept.
    pub(crate) fn max_object(&self) -> u64 {
        self.max_object
    }

    pub(crate) fn weight(&self) -> u64 {
        self.cache.weight()
    }

    pub(crate) fn capacity(&self) -> u64 {
        self.cache.capacity()
    }

    pub(crate) fn len(&self) -> usize {
        self.cache.len()
    }

    pub(crate) fn gauges(&self) -> StoreGauges {
        StoreGauges {
            bytes: self.cache.weight(),
            capacity: self.cache.capacity(),
            entries: self.cache.len() as u64,
            evictions: self.evictions.0.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;
    use http::header::HeaderName;
    use http::{HeaderMap, HeaderValue, StatusCode};

    use crate::entry::{Coding, ReuseRules, VaryRecord};

    fn object(body: &'static str, weight: u64) -> Arc<Object> {
        Arc::new(Object {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::from_static(body.as_bytes()),
            response_time: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
            corrected_initial_age: 0,
            freshness_lifetime: 60,
            rules: ReuseRules::default(),
            host: "example.com".into(),
            path: "/a".into(),
            coding: Coding::Identity,
            compressible: false,
            variants: Vec::new(),
            tags: Box::default(),
            weight,
        })
    }

    fn body_of(store: &MemoryStore, key: &CacheKey) -> Option<Bytes> {
        match store.get(key)? {
            Slot::Object(o) => Some(o.body.clone()),
            _ => None,
        }
    }

    #[test]
    fn the_byte_bound_holds_and_evictions_are_counted() {
        let capacity = 64 * 1024;
        let store = MemoryStore::new(capacity, 4 * 1024);
        for i in 0..1000_u128 {
            store.insert(CacheKey(i), Slot::Object(object("x", 1000)));
            assert!(
                store.weight() <= capacity,
                "{} > {capacity}",
                store.weight()
            );
        }
        assert!(store.len() < 1000);
        assert!(store.len() as u64 * 1000 <= capacity);
        let gauges = store.gauges();
        assert_eq!(gauges.capacity, capacity);
        assert_eq!(gauges.bytes, store.weight());
        assert_eq!(gauges.entries, store.len() as u64);
        assert!(gauges.evictions > 0);
        // The most recent insertion is held.
        assert_eq!(body_of(&store, &CacheKey(999)).as_deref(), Some(&b"x"[..]));
    }

    // Each shard holds `capacity / shards` bytes; the largest object kept must fit in one.
    #[test]
    fn the_largest_object_fits_in_a_shard() {
        let store = MemoryStore::new(64 * 1024, 1 << 30);
        assert!(store.max_object() <= store.cache.shard_capacity());
        assert!(store.max_object() < 1 << 30);
        let store = MemoryStore::new(64 * 1024, 4 * 1024);
        assert_eq!(store.max_object(), 4 * 1024);
        // An object of that weight is stored and found.
        store.insert(CacheKey(1), Slot::Object(object("big", 4 * 1024)));
        assert_eq!(body_of(&store, &CacheKey(1)).as_deref(), Some(&b"big"[..]));
    }

    // A revalidation or purge that raced with a newer fill must not remove the newer object:
    // removal is by identity, not by key.
    #[test]
    fn remove_if_same_removes_only_that_object() {
        let store = MemoryStore::new(1 << 20, 1 << 16);
        let key = CacheKey(7);
        let old = object("old", 300);
        let new = object("new", 300);
        store.insert(key, Slot::Object(old.clone()));
        store.insert(key, Slot::Object(new.clone()));
        store.remove_if_same(&key, &old);
        assert_eq!(body_of(&store, &key).as_deref(), Some(&b"new"[..]));
        // An equal-looking but different allocation is not the same object either.
        store.remove_if_same(&key, &object("new", 300));
        assert_eq!(body_of(&store, &key).as_deref(), Some(&b"new"[..]));
        store.remove_if_same(&key, &new);
        assert!(store.get(&key).is_none());
        // A Vary record or a pass marker under the key is never removed this way.
        store.insert(key, Slot::Pass { until: UNIX_EPOCH });
        store.remove_if_same(&key, &new);
        assert!(matches!(store.get(&key), Some(Slot::Pass { .. })));
    }

    #[test]
    fn replace_if_same_replaces_only_that_object() {
        let store = MemoryStore::new(1 << 20, 1 << 16);
        let key = CacheKey(8);
        let first = object("first", 300);
        let second = object("second", 300);
        store.insert(key, Slot::Object(first.clone()));
        store.replace_if_same(key, &first, Slot::Object(second.clone()));
        assert_eq!(body_of(&store, &key).as_deref(), Some(&b"second"[..]));
        // `first` is gone: a late replacement based on it does nothing.
        store.replace_if_same(key, &first, Slot::Object(object("stale", 300)));
        assert_eq!(body_of(&store, &key).as_deref(), Some(&b"second"[..]));
        // Nor does a replacement put anything under an empty key.
        assert!(store.remove(&key));
        store.replace_if_same(key, &second, Slot::Object(object("late", 300)));
        assert!(store.get(&key).is_none());
        assert!(!store.remove(&key));
    }

    // RFC 9111 §4.1: stored variants are found through the URL's Vary record. A new record
    // comes with a new epoch, so variants stored under the old one can no longer be reached
    // (RFC 9111 §4.4 invalidation of a URL reaches all its variants this way).
    #[test]
    fn a_new_vary_record_leaves_the_old_variants_unreachable() {
        let store = MemoryStore::new(1 << 20, 1 << 16);
        let primary = CacheKey(42);
        let names = vec![HeaderName::from_static("accept-language")];
        let mut request = HeaderMap::new();
        request.insert("accept-language", HeaderValue::from_static("fr"));

        let lookup = |store: &MemoryStore| -> Option<Bytes> {
            let Some(Slot::Vary(record)) = store.get(&primary) else {
                return None;
            };
            body_of(
                store,
                &primary.variant(record.epoch, &record.names, &request),
            )
        };

        let old = Arc::new(VaryRecord {
            names: names.clone(),
            epoch: 1,
        });
        store.insert(primary, Slot::Vary(old.clone()));
        store.insert(
            primary.variant(old.epoch, &old.names, &request),
            Slot::Object(object("fr, epoch 1", 300)),
        );
        assert_eq!(lookup(&store).as_deref(), Some(&b"fr, epoch 1"[..]));

        store.insert(
            primary,
            Slot::Vary(Arc::new(VaryRecord { names, epoch: 2 })),
        );
        assert_eq!(lookup(&store), None);
        // The record's own weight is what the store counts for it.
        assert!(store.weight() >= Slot::Vary(old).weight());
    }

    // Keys are uniform 128-bit hashes; the table hash folds both halves, so keys that differ
    // only in the high half do not all land in one bucket.
    #[test]
    fn key_hasher_uses_both_halves_of_the_key() {
        let hash = |key: CacheKey| KeyHasher::default().hash_one(key);
        assert_ne!(hash(CacheKey(0)), hash(CacheKey(1 << 64)));
        assert_ne!(hash(CacheKey(0)), hash(CacheKey(1)));
        assert_ne!(hash(CacheKey(3 << 64)), hash(CacheKey(5 << 64)));
    }
}
