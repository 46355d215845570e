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
            (_, true) => encoding::MADE,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const T0: u64 = 1_700_000_000;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn headers(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in fields {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    /// A 200 received at `T0` with `Age` already `corrected_initial_age` and `lifetime`
    /// seconds of freshness.
    fn object(corrected_initial_age: u64, lifetime: u64, rules: ReuseRules) -> Object {
        Object {
            status: StatusCode::OK,
            headers: headers(&[("content-type", "text/plain")]),
            body: Bytes::from_static(b"identity body"),
            response_time: at(T0),
            corrected_initial_age,
            freshness_lifetime: lifetime,
            rules,
            host: "example.com".into(),
            path: "/a".into(),
            coding: Coding::Identity,
            compressible: false,
            variants: Vec::new(),
            tags: Box::default(),
            weight: 0,
        }
    }

    fn ae(value: &'static str) -> HeaderMap {
        headers(&[("accept-encoding", value)])
    }

    /// What `pick` chose: the `Content-Encoding` and body of a ready representation, or
    /// the coding to make.
    fn picked(obj: &Object, request: &HeaderMap) -> Result<(Option<String>, Bytes), Encoding> {
        match obj.pick(request) {
            Pick::Ready(headers, body) => Ok((
                headers
                    .get(CONTENT_ENCODING)
                    .map(|v| v.to_str().unwrap().to_owned()),
                body.clone(),
            )),
            Pick::Make(enc) => Err(enc),
        }
    }

    // RFC 9111 §4.2.3: current_age = corrected_initial_age + resident_time.
    #[test]
    fn age_is_corrected_initial_age_plus_resident_time() {
        let obj = object(7, 60, ReuseRules::default());
        assert_eq!(obj.age(at(T0)), 7);
        assert_eq!(obj.age(at(T0 + 10)), 17);
        // Sub-second residence does not count yet.
        assert_eq!(obj.age(at(T0) + Duration::from_millis(999)), 7);
        // A clock that went back does not make the response younger than it arrived.
        assert_eq!(obj.age(at(T0 - 100)), 7);
        // Saturates instead of wrapping.
        assert_eq!(
            object(u64::MAX, 0, ReuseRules::default()).age(at(T0 + 1)),
            u64::MAX
        );
    }

    // RFC 9111 §4.2: fresh while freshness_lifetime > current_age.
    #[test]
    fn ttl_and_staleness_turn_at_the_freshness_lifetime() {
        let obj = object(10, 60, ReuseRules::default());
        assert_eq!(obj.ttl(at(T0)), 50);
        assert_eq!(obj.staleness(at(T0)), 0);
        assert_eq!(obj.ttl(at(T0 + 50)), 0);
        assert_eq!(obj.staleness(at(T0 + 50)), 0);
        assert_eq!(obj.ttl(at(T0 + 51)), -1);
        assert_eq!(obj.staleness(at(T0 + 51)), 1);
        assert_eq!(obj.staleness(at(T0 + 150)), 100);
    }

    // RFC 5861 §3: stale-while-revalidate=N allows serving up to N seconds stale.
    #[test]
    fn stale_while_revalidate_holds_for_exactly_its_window() {
        let rules = ReuseRules {
            stale_while_revalidate: 30,
            ..ReuseRules::default()
        };
        let obj = object(0, 60, rules);
        assert!(obj.usable_while_revalidating(at(T0 + 60)));
        assert!(obj.usable_while_revalidating(at(T0 + 90)));
        assert!(!obj.usable_while_revalidating(at(T0 + 91)));
        // No window, no stale serving.
        assert!(!object(0, 60, ReuseRules::default()).usable_while_revalidating(at(T0 + 61)));
    }

    // RFC 9111 §4.2.4 and §5.2.2.2: must-revalidate (and the directives that imply it for a
    // shared cache) forbid serving stale, whatever stale-while-revalidate or stale-if-error say.
    #[test]
    fn no_stale_overrides_every_stale_window() {
        let rules = ReuseRules {
            no_stale: true,
            stale_while_revalidate: 30,
            stale_if_error: 300,
            ..ReuseRules::default()
        };
        let obj = object(0, 60, rules);
        assert!(!obj.usable_while_revalidating(at(T0 + 61)));
        assert!(!obj.usable_on_error(at(T0 + 61), 3600));
    }

    // RFC 5861 §4: stale-if-error=N; the edge's default window applies when it is larger.
    #[test]
    fn stale_if_error_uses_the_larger_of_own_and_default_window() {
        let rules = ReuseRules {
            stale_if_error: 100,
            ..ReuseRules::default()
        };
        let obj = object(0, 60, rules);
        assert!(obj.usable_on_error(at(T0 + 160), 0));
        assert!(!obj.usable_on_error(at(T0 + 161), 0));
        assert!(obj.usable_on_error(at(T0 + 260), 200));
        assert!(!obj.usable_on_error(at(T0 + 261), 200));
        let plain = object(0, 60, ReuseRules::default());
        assert!(!plain.usable_on_error(at(T0 + 61), 0));
        assert!(plain.usable_on_error(at(T0 + 61), 1));
    }

    // RFC 9111 §5.2.2.4 (no-cache), §4.2.4 (must-revalidate, proxy-revalidate, s-maxage),
    // RFC 5861 (stale-while-revalidate, stale-if-error): read once at storage.
    #[test]
    fn reuse_rules_come_from_the_response_cache_control() {
        let cc = |v: &'static str| CacheControl::parse(&headers(&[("cache-control", v)]));
        assert_eq!(ReuseRules::from(&cc("max-age=60")), ReuseRules::default());
        let rules = ReuseRules::from(&cc(
            "max-age=60, stale-while-revalidate=30, stale-if-error=600",
        ));
        assert_eq!(
            rules,
            ReuseRules {
                no_cache: false,
                no_stale: false,
                stale_while_revalidate: 30,
                stale_if_error: 600,
            }
        );
        assert!(ReuseRules::from(&cc("no-cache")).no_cache);
        assert!(ReuseRules::from(&cc("max-age=1, must-revalidate")).no_stale);
        assert!(ReuseRules::from(&cc("s-maxage=1")).no_stale);
        assert!(ReuseRules::from(&cc("proxy-revalidate")).no_stale);
        assert_eq!(ReuseRules::from(&cc("")), ReuseRules::default());
    }

    // RFC 9110 §8.4.1: identity, the codings the edge can undo, and everything else
    // (unknown or stacked codings) as opaque.
    #[test]
    fn coding_of_the_stored_body() {
        assert_eq!(Coding::of(&headers(&[])), Coding::Identity);
        let of = |v: &'static str| Coding::of(&headers(&[("content-encoding", v)]));
        assert_eq!(of("identity"), Coding::Identity);
        assert_eq!(of("GZIP"), Coding::Encoded(Encoding::Gzip));
        assert_eq!(of("x-gzip"), Coding::Encoded(Encoding::Gzip));
        assert_eq!(of("br"), Coding::Encoded(Encoding::Br));
        assert_eq!(of("zstd"), Coding::Encoded(Encoding::Zstd));
        assert_eq!(of("compress"), Coding::Opaque);
        assert_eq!(of("gzip, br"), Coding::Opaque);
    }

    // A coding the edge cannot undo is served as stored to every viewer: there is nothing
    // else to send, whatever Accept-Encoding says (RFC 9110 §12.5.3 lets a server send a
    // representation the viewer did not ask for rather than 406).
    #[test]
    fn opaque_bodies_are_served_as_stored() {
        let mut obj = object(0, 60, ReuseRules::default());
        obj.coding = Coding::Opaque;
        obj.compressible = true;
        obj.headers
            .insert(CONTENT_ENCODING, HeaderValue::from_static("compress"));
        for request in [headers(&[]), ae("gzip"), ae("identity"), ae("*;q=0")] {
            assert_eq!(
                picked(&obj, &request),
                Ok((Some("compress".into()), obj.body.clone()))
            );
        }
    }

    // §12.5.3: a build that makes no coding serves a compressible object as stored, whatever
    // the viewer accepts: it is never asked to make one.
    #[cfg(not(any(feature = "gzip", feature = "br", feature = "zstd")))]
    #[test]
    fn without_coding_features_the_stored_body_is_served() {
        let mut obj = object(0, 60, ReuseRules::default());
        obj.compressible = true;
        for accept in ["gzip, br, zstd", "br", "*", "identity"] {
            assert_eq!(
                picked(&obj, &ae(accept)),
                Ok((None, obj.body.clone())),
                "{accept}"
            );
        }
    }

    // §12.5.3: the best coding the viewer accepts among those the object may be served in;
    // one already made is ready, one not made yet is to be made.
    #[cfg(all(feature = "gzip", feature = "br"))]
    #[test]
    fn pick_serves_made_codings_and_asks_for_missing_ones() {
        let mut obj = object(0, 60, ReuseRules::default());
        obj.compressible = true;
        assert_eq!(picked(&obj, &headers(&[])), Ok((None, obj.body.clone())));
        assert_eq!(picked(&obj, &ae("gzip, br")), Err(Encoding::Br));
        assert_eq!(picked(&obj, &ae("gzip")), Err(Encoding::Gzip));
        assert_eq!(picked(&obj, &ae("identity")), Ok((None, obj.body.clone())));

        let gzip = Bytes::from_static(b"\x1f\x8b made once");
        obj.variants.push(Variant {
            encoding: Encoding::Gzip,
            headers: headers(&[("content-encoding", "gzip")]),
            body: gzip.clone(),
        });
        assert_eq!(picked(&obj, &ae("gzip")), Ok((Some("gzip".into()), gzip)));
        // A better coding the viewer accepts is still preferred, and made.
        assert_eq!(picked(&obj, &ae("gzip, br")), Err(Encoding::Br));
        // Accepting nothing available: the stored representation.
        assert_eq!(
            picked(&obj, &ae("identity;q=0, *;q=0")),
            Ok((None, obj.body.clone()))
        );
    }

    // An object the edge may not transform (not compressible: `no-transform`, type, size)
    // is served as stored, or decoded to identity for a viewer that does not accept its
    // coding; never re-encoded into another coding.
    #[test]
    fn a_non_compressible_object_is_never_recoded() {
        let mut obj = object(0, 60, ReuseRules::default());
        assert_eq!(picked(&obj, &ae("br, gzip")), Ok((None, obj.body.clone())));

        obj.coding = Coding::Encoded(Encoding::Gzip);
        obj.headers
            .insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        assert_eq!(
            picked(&obj, &ae("br, gzip")),
            Ok((Some("gzip".into()), obj.body.clone()))
        );
        assert_eq!(picked(&obj, &ae("br")), Err(Encoding::Identity));
        // Without Accept-Encoding any coding is acceptable (§12.5.3); the edge sends identity,
        // which every client understands.
        assert_eq!(picked(&obj, &headers(&[])), Err(Encoding::Identity));
        assert!(obj.representation(Encoding::Br).is_none());
        assert!(obj.representation(Encoding::Gzip).is_some());
    }

    #[test]
    fn weight_counts_body_fields_extra_and_overhead() {
        let fields = headers(&[("etag", "\"v1\""), ("vary", "accept")]);
        let body = Bytes::from_static(b"0123456789");
        let expected = 10 + (4 + 4 + 32) + (4 + 6 + 32) + 13 + 256;
        assert_eq!(weigh(&fields, &body, 13), expected);
        let vary = VaryRecord {
            names: vec![
                HeaderName::from_static("accept"),
                HeaderName::from_static("x"),
            ],
            epoch: 1,
        };
        assert_eq!(Slot::Vary(Arc::new(vary)).weight(), 128 + 64);
        assert_eq!(Slot::Pass { until: at(T0) }.weight(), 64);
        let mut obj = object(0, 1, ReuseRules::default());
        obj.weight = 4242;
        assert_eq!(Slot::Object(Arc::new(obj)).weight(), 4242);
    }
}
