//! What the memory store holds: objects, `Vary` records and hit-for-pass markers.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use http::header::{HeaderName, CONTENT_ENCODING};
use http::{HeaderMap, HeaderValue, StatusCode};

use crate::encoding::{self, Encoding};
use crate::rfc::cache_control::CacheControl;
use crate::rfc::freshness::current_age;

/// A stored response. Shared by `Arc`: a hit clones pointers, never body bytes.
#[derive(Clone, Debug)]
pub(crate) struct Object {
    pub(crate) status: StatusCode,
    /// End-to-end fields as received; hop-by-hop fields and internal fields removed.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    /// When the response was received (RFC 9111 §4.2.3 `response_time`).
    pub(crate) response_time: SystemTime,
    pub(crate) corrected_initial_age: u64,
    /// Seconds the edge treats it as fresh, after the TTL rules.
    pub(crate) freshness_lifetime: u64,
    pub(crate) rules: ReuseRules,
    /// Host and path, for invalidation by pattern.
    pub(crate) host: Box<str>,
    pub(crate) path: Box<str>,
    /// The content coding of `body`.
    pub(crate) coding: Coding,
    /// Whether the edge may compress it (type, size, status, no `no-transform`).
    pub(crate) compressible: bool,
    /// Other codings of the same representation, made on demand and kept with it.
    pub(crate) variants: Vec<Variant>,
    /// Surrogate keys for invalidation by tag.
    pub(crate) tags: Box<[Box<str>]>,
    pub(crate) weight: u64,
}

/// The content coding of a stored body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Coding {
    Identity,
    Encoded(Encoding),
    /// A coding (or stack of codings) the edge cannot undo: served as it is to everyone.
    Opaque,
}

impl Coding {
    pub(crate) fn of(headers: &HeaderMap) -> Coding {
        match headers.get(CONTENT_ENCODING) {
            None => Coding::Identity,
            Some(v) => match Encoding::from_content_encoding(v) {
                Some(Encoding::Identity) => Coding::Identity,
                Some(e) => Coding::Encoded(e),
                None => Coding::Opaque,
            },
        }
    }
}

/// One more coding of a stored object, with the fields that go with it.
#[derive(Clone, Debug)]
pub(crate) struct Variant {
    pub(crate) encoding: Encoding,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

/// What a viewer should get of an object.
#[derive(Debug)]
pub(crate) enum Pick<'a> {
    /// This representation, ready to send.
    Ready(&'a HeaderMap, &'a Bytes),
    /// A coding not made yet.
    Make(Encoding),
}

/// Response directives that govern reuse, read once when the object is stored.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ReuseRules {
    /// `no-cache`: never reused without revalidation (RFC 9111 §5.2.2.4).
    pub(crate) no_cache: bool,
    /// `must-revalidate`, `proxy-revalidate`, `s-maxage`: never served stale (§4.2.4).
    pub(crate) no_stale: bool,
    pub(crate) stale_while_revalidate: u64,
    pub(crate) stale_if_error: u64,
}

impl From<&CacheControl> for ReuseRules {
    fn from(cc: &CacheControl) -> Self {
        ReuseRules {
            no_cache: cc.no_cache,
            no_stale: cc.forbids_stale(),
            stale_while_revalidate: cc.stale_while_revalidate.unwrap_or(0),
            stale_if_error: cc.stale_if_error.unwrap_or(0),
        }
    }
}

impl Object {
    /// `current_age` (RFC 9111 §4.2.3) at `now`, in seconds.
    pub(crate) fn age(&self, now: SystemTime) -> u64 {
        current_age(self.corrected_initial_age, self.response_time, now)
    }

    /// Seconds of freshness left at `now`; negative once stale.
    pub(crate) fn ttl(&self, now: SystemTime) -> i64 {
        self.freshness_lifetime as i64 - self.age(now) as i64
    }

    /// Seconds past its freshness lifetime at `now` (0 while fresh).
    pub(crate) fn staleness(&self, now: SystemTime) -> u64 {
        self.age(now).saturating_sub(self.freshness_lifetime)
    }

    /// Whether it may be served stale while it is refreshed in the background (RFC 5861 §3).
    pub(crate) fn usable_while_revalidating(&self, now: SystemTime) -> bool {
        let window = self.rules.stale_while_revalidate;
        !self.rules.no_stale && window > 0 && self.staleness(now) <= window
    }

    /// Whether it may stand in for a failed origin (RFC 5861 §4), with `default_window` for
    /// objects whose origin named none.
    pub(crate) fn usable_on_error(&self, now: SystemTime, default_window: u64) -> bool {
        let window = self.rules.stale_if_error.max(default_window);
        !self.rules.no_stale && window > 0 && self.staleness(now) <= window
    }

    /// Whether it may stand in for an origin the edge could not reach (a connection failure
    /// or a timeout: RFC 9111 §4.2.4 lets a disconnected cache serve stale), up to `window`
    /// seconds past its freshness; never when the response forbids serving it stale.
    pub(crate) fn usable_when_unreachable(&self, now: SystemTime, window: u64) -> bool {
        !self.rules.no_stale && window > 0 && self.staleness(now) <= window
    }

    /// The codings this object can be served in.
    fn available(&self) -> &'static [Encoding] {
        use Encoding::{Br, Gzip, Identity, Zstd};
        match (self.coding, self.compressible) {
            (Coding::Opaque, _) => &[],
            (_, true) => &[Br, Zstd, Gzip, Identity],
            (Coding::Encoded(Gzip), false) => &[Gzip, Identity],
            (Coding::Encoded(Br), false) => &[Br, Identity],
            (Coding::Encoded(Zstd), false) => &[Zstd, Identity],
            (Coding::Identity | Coding::Encoded(Identity), false) => &[Identity],
        }
    }

    /// The best representation for a request's `Accept-Encoding` (RFC 9110 §12.5.3). When
    /// the viewer accepts nothing available, the stored one is sent, as §12.5.3 allows.
    pub(crate) fn pick(&self, request: &HeaderMap) -> Pick<'_> {
        let available = self.available();
        if available.len() <= 1 {
            return Pick::Ready(&self.headers, &self.body);
        }
        match encoding::choose(request, available) {
            Some(enc) => match self.representation(enc) {
                Some((headers, body)) => Pick::Ready(headers, body),
                None => Pick::Make(enc),
            },
            None => Pick::Ready(&self.headers, &self.body),
        }
    }

    /// The representation in `enc`, if stored or already made.
    pub(crate) fn representation(&self, enc: Encoding) -> Option<(&HeaderMap, &Bytes)> {
        let stored = match self.coding {
            Coding::Identity => Encoding::Identity,
            Coding::Encoded(e) => e,
            Coding::Opaque => return Some((&self.headers, &self.body)),
        };
        if stored == enc {
            return Some((&self.headers, &self.body));
        }
        self.variants
            .iter()
            .find(|v| v.encoding == enc)
            .map(|v| (&v.headers, &v.body))
    }

    pub(crate) fn etag(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::ETAG)
    }

    pub(crate) fn last_modified(&self) -> Option<&HeaderValue> {
        self.headers.get(http::header::LAST_MODIFIED)
    }
}

/// Store weight of a response: body, fields and a fixed overhead for the bookkeeping.
pub(crate) fn weigh(headers: &HeaderMap, body: &Bytes, extra: usize) -> u64 {
    const OVERHEAD: usize = 256;
    let fields: usize = headers
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 32)
        .sum();
    (body.len() + fields + extra + OVERHEAD) as u64
}

/// A `Vary` record under the URL's primary key. Variants live under
/// `primary.variant(epoch, names, request)`; a new record gets a new epoch, so variants of an
/// invalidated record can never be found again.
#[derive(Debug)]
pub(crate) struct VaryRecord {
    pub(crate) names: Vec<HeaderName>,
    pub(crate) epoch: u64,
}

/// One slot of the memory store.
#[derive(Clone, Debug)]
pub(crate) enum Slot {
    Object(Arc<Object>),
    Vary(Arc<VaryRecord>),
    /// Hit-for-pass: the URL answered with something not storable; until `until`, requests
    /// go straight to the origin without collapsing.
    Pass {
        until: SystemTime,
    },
}

impl Slot {
    pub(crate) fn weight(&self) -> u64 {
        match self {
            Slot::Object(o) => o.weight,
            Slot::Vary(v) => 128 + 32 * v.names.len() as u64,
            Slot::Pass { .. } => 64,
        }
    }
}
