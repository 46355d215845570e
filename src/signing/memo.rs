//! A bounded memo of verified signatures, so a repeated signed request costs a lookup rather
//! than a signature verification.
//!
//! Only the cryptographic check is remembered: an entry says "this key id's key verified
//! these signature bytes over these message bytes". Expiry, `DateGreaterThan`, the resource
//! and the IP range are checked again on every request, against the current clock and client.
//! An entry is found only by the exact bytes that were verified: the table hash picks a
//! bucket, then the key id and message are compared byte for byte and the signature in
//! constant time. Only successes are inserted.

use std::hash::{Hash, Hasher};

use quick_cache::sync::Cache;
use quick_cache::{Equivalent, OptionsBuilder, Weighter};
use subtle::ConstantTimeEq as _;

use super::MAX_MEMO_ENTRY_BYTES;

/// Weight of an entry beyond its bytes: three boxed slices (pointers, lengths, allocator
/// rounding) and its share of the table's slots (quick_cache sizes tables in powers of two,
/// with room for evicted keys' hashes).
const ENTRY_OVERHEAD: u64 = 128;

/// What was verified, owned: the memo's key (the value is `()`).
struct Entry {
    key_id: Box<str>,
    message: Box<[u8]>,
    signature: Box<[u8]>,
}

/// What is being verified, borrowed: looks an entry up without allocating.
struct Lookup<'a> {
    key_id: &'a str,
    message: &'a [u8],
    signature: &'a [u8],
}

impl Lookup<'_> {
    fn len(&self) -> usize {
        self.key_id.len() + self.message.len() + self.signature.len()
    }
}

/// The one hash both forms share: `Lookup` must hash as the `Entry` it matches.
fn hash_parts<H: Hasher>(state: &mut H, key_id: &str, message: &[u8], signature: &[u8]) {
    for part in [key_id.as_bytes(), message, signature] {
        state.write_usize(part.len());
        state.write(part);
    }
}

impl Hash for Entry {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, &self.key_id, &self.message, &self.signature);
    }
}

impl Hash for Lookup<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        hash_parts(state, self.key_id, self.message, self.signature);
    }
}

impl Equivalent<Entry> for Lookup<'_> {
    fn equivalent(&self, entry: &Entry) -> bool {
        // Key id and message are what the viewer sent in the clear; the signature is compared
        // in constant time (a length difference returns at once: lengths are public).
        self.key_id == &*entry.key_id
            && self.message == &*entry.message
            && bool::from(self.signature.ct_eq(&entry.signature))
    }
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        Lookup {
            key_id: &self.key_id,
            message: &self.message,
            signature: &self.signature,
        }
        .equivalent(other)
    }
}

impl Eq for Entry {}

/// Weighs an entry by its bytes plus [`ENTRY_OVERHEAD`].
#[derive(Clone, Copy)]
struct ByBytes;

impl Weighter<Entry, ()> for ByBytes {
    fn weight(&self, entry: &Entry, _: &()) -> u64 {
        (entry.key_id.len() + entry.message.len() + entry.signature.len()) as u64 + ENTRY_OVERHEAD
    }
}

/// Verified signatures of one key group, at most `capacity` bytes (entries weighed by their
/// bytes plus [`ENTRY_OVERHEAD`], so also at most `capacity / 128` entries). Eviction is
/// quick_cache's scan-resistant, S3-FIFO-like policy: URLs seen once leave before the ones
/// viewers repeat.
pub(super) struct Memo {
    cache: Option<Cache<Entry, (), ByBytes>>,
    capacity: usize,
}

impl Memo {
    /// A memo of `capacity` bytes; `0` remembers nothing.
    pub(super) fn new(capacity: usize) -> Self {
        let cache = (capacity > 0).then(|| {
            let capacity = capacity as u64;
            // Shards that each hold at least four of the largest entries, at most 16.
            let per_shard = 4 * (MAX_MEMO_ENTRY_BYTES as u64 + ENTRY_OVERHEAD);
            let shards = (capacity / per_shard).clamp(1, 16) as usize;
            let shards = if shards.is_power_of_two() {
                shards
            } else {
                shards.next_power_of_two() / 2
            };
            let options = OptionsBuilder::new()
                // The table grows as it fills: start small, a group may see few URLs.
                .estimated_items_capacity((capacity / 1024).max(16) as usize)
                .weight_capacity(capacity)
                .shards(shards)
                .build()
                .expect("valid memo options");
            Cache::with_options(options, ByBytes, Default::default(), Default::default())
        });
        Self { cache, capacity }
    }

    /// The bound it was built with, in bytes.
    pub(super) fn capacity(&self) -> usize {
        self.capacity
    }

    /// Whether `key_id`'s key verified exactly `signature` over exactly `message`.
    pub(super) fn contains(&self, key_id: &str, message: &[u8], signature: &[u8]) -> bool {
        let Some(cache) = &self.cache else {
            return false;
        };
        let lookup = Lookup {
            key_id,
            message,
            signature,
        };
        // `get`, not `contains_key`: a hit marks the entry as used, for eviction.
        lookup.len() <= MAX_MEMO_ENTRY_BYTES && cache.get(&lookup).is_some()
    }

    /// Remembers a verification that succeeded. Entries over [`MAX_MEMO_ENTRY_BYTES`] are not
    /// kept: they are verified every time.
    pub(super) fn insert(&self, key_id: &str, message: &[u8], signature: &[u8]) {
        let Some(cache) = &self.cache else {
            return;
        };
        if key_id.len() + message.len() + signature.len() > MAX_MEMO_ENTRY_BYTES {
            return;
        }
        let entry = Entry {
            key_id: key_id.into(),
            message: message.into(),
            signature: signature.into(),
        };
        cache.insert(entry, ());
    }

    /// Entries held.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.cache.as_ref().map_or(0, Cache::len)
    }

    /// Bytes held, as weighed.
    #[cfg(test)]
    pub(super) fn weight(&self) -> u64 {
        self.cache.as_ref().map_or(0, Cache::weight)
    }
}

impl Default for Memo {
    fn default() -> Self {
        Self::new(super::DEFAULT_SIGNATURE_MEMO_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn found_only_by_the_exact_bytes() {
        let memo = Memo::new(64 * 1024);
        memo.insert("K1", b"policy", &[1; 64]);
        assert!(memo.contains("K1", b"policy", &[1; 64]));
        let mut flipped = [1; 64];
        flipped[63] ^= 0x80;
        assert!(!memo.contains("K1", b"policy", &flipped));
        assert!(!memo.contains("K1", b"policy", &[1; 63]), "a prefix");
        assert!(!memo.contains("K2", b"policy", &[1; 64]), "another key id");
        assert!(!memo.contains("K1", b"policY", &[1; 64]), "another message");
        // Moving a byte across a boundary changes the parts, not the concatenation.
        memo.insert("K", b"1policy", &[1; 64]);
        assert!(!memo.contains("K1p", b"olicy", &[1; 64]));
    }

    #[test]
    fn bounded_in_bytes_and_entries() {
        let capacity = 64 * 1024;
        let memo = Memo::new(capacity);
        for i in 0..20_000u32 {
            memo.insert("K1", format!("policy {i}").as_bytes(), &[7; 64]);
        }
        assert!(memo.weight() <= capacity as u64, "{}", memo.weight());
        assert!(
            memo.len() <= capacity / ENTRY_OVERHEAD as usize,
            "{}",
            memo.len()
        );
        assert!(memo.len() > 100, "it still remembers: {}", memo.len());
    }

    #[test]
    fn oversized_entries_and_a_zero_capacity_remember_nothing() {
        let memo = Memo::new(1 << 20);
        let long = vec![b'a'; MAX_MEMO_ENTRY_BYTES];
        memo.insert("K1", &long, &[1; 64]);
        assert!(!memo.contains("K1", &long, &[1; 64]));
        assert_eq!(memo.len(), 0);

        let off = Memo::new(0);
        off.insert("K1", b"policy", &[1; 64]);
        assert!(!off.contains("K1", b"policy", &[1; 64]));
    }
}
