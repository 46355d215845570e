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
