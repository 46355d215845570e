//! Compress once, serve many: other codings of a stored object, made on first request.
//!
//! The first viewer that asks for a coding an object lacks makes it (bodies above
//! [`INLINE_LIMIT`] on a blocking thread, so hits elsewhere are not held up); concurrent
//! viewers asking for the same coding wait for that one piece of work. The new coding is
//! kept with the object, counted in its weight, and goes with it on eviction or purge.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::header::{CONTENT_ENCODING, CONTENT_LENGTH, ETAG};
use http::HeaderMap;

use crate::collapse::{follow, Audience, FlightState, Join};
use crate::encoding::{self, Encoding};
use crate::entry::{weigh, Coding, Object, Slot, Variant};
use crate::key::CacheKey;
use crate::layer::Shared;
use crate::rfc::conditional::weak_etag;

/// Bodies up to this size are (de)compressed on the viewer's task; larger ones on a blocking
/// thread.
pub(crate) const INLINE_LIMIT: usize = 64 * 1024;

/// The fields of a representation in `enc`, derived from the stored ones.
pub(crate) fn variant_headers(stored: &HeaderMap, enc: Encoding, len: usize) -> HeaderMap {
    let mut headers = stored.clone();
    match enc {
        Encoding::Identity => {
            headers.remove(CONTENT_ENCODING);
        }
        enc => {
            headers.insert(CONTENT_ENCODING, enc.header_value());
        }
    }
    headers.insert(CONTENT_LENGTH, len.into());
    // RFC 9110 §8.8.3: a strong tag promises identical bytes; another coding is not.
    if let Some(etag) = headers.get(ETAG).map(weak_etag) {
        headers.insert(ETAG, etag);
    }
    headers
}

/// The object with a variant in `enc` added, or `None` if its body cannot be decoded within
/// `max_decoded` bytes or compressed.
fn with_variant(obj: &Object, enc: Encoding, max_decoded: usize) -> Option<Object> {
    let identity = match obj.coding {
        Coding::Identity => obj.body.clone(),
        Coding::Encoded(e) => encoding::decompress(e, &obj.body, max_decoded).ok()?,
        Coding::Opaque => return None,
    };
    let body = match enc {
        Encoding::Identity => identity,
        enc => encoding::compress(enc, &identity).ok()?,
    };
    let headers = variant_headers(&obj.headers, enc, body.len());
    let mut variants = obj.variants.clone();
    let weight = obj.weight + weigh(&headers, &body, 0);
    variants.push(Variant {
        encoding: enc,
        headers,
        body,
    });
    Some(Object {
        variants,
        weight,
        ..obj.clone()
    })
}

/// The object with a variant in `enc`: made here (once, however many viewers ask at the same
/// time) and stored in place of `obj` if `obj` is still the stored object under `key`.
pub(crate) async fn make_variant(
    shared: &Arc<Shared>,
    key: CacheKey,
    obj: &Arc<Object>,
    enc: Encoding,
) -> Option<Arc<Object>> {
    // One flight per object and coding: the object's address (unique while the leader holds
    // it) keeps a follower from taking a coding made from another object under the same key.
    let object = Arc::as_ptr(obj) as usize as u128;
    let flight = CacheKey(key.0 ^ (u128::from(enc as u8 + 1) << 120) ^ object);
    let guard = match shared.variant_flights.join(flight) {
        Join::Leader(guard) => guard,
        Join::Follower(rx) => {
            return match tokio::time::timeout(shared.collapse_timeout, follow(rx)).await {
                Ok(FlightState::Done(made, _)) => Some(made),
                _ => None,
            };
        }
    };
    let max = shared.max_object_size as usize;
    let built = if obj.body.len() > INLINE_LIMIT {
        let source = obj.clone();
        tokio::task::spawn_blocking(move || with_variant(&source, enc, max))
            .await
            .ok()
            .flatten()
    } else {
        with_variant(obj, enc, max)
    };
    shared.metrics.compressions.fetch_add(1, Ordering::Relaxed);
    let input = obj.body.len() as u64;
    shared
        .metrics
        .compressed_bytes_in
        .fetch_add(input, Ordering::Relaxed);
    let made = Arc::new(built?);
    let still_stored =
        matches!(shared.store.get(&key), Some(Slot::Object(current)) if Arc::ptr_eq(&current, obj));
    if still_stored && made.weight <= shared.store.max_object() {
        shared.store.insert(key, Slot::Object(made.clone()));
    }
    guard.publish(FlightState::Done(made.clone(), Audience::everyone()));
    Some(made)
}
