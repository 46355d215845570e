//! Invalidation: by path, by CloudFront-style pattern, by surrogate key (tag); hard or soft.
//!
//! Tags live in the objects themselves (from `Surrogate-Key` and `Cache-Tag`), not in a
//! separate index: a purge walks the store once, so there is no index to keep in step with
//! evictions and nothing that can leak. Every purge also bumps a generation and detaches
//! fills under way, so a fill that started before the purge is never stored and no request
//! arriving after the purge joins one.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use http::header::{HeaderMap, HeaderName};

use crate::behavior::{BehaviorError, PathPattern};
use crate::entry::{Object, Slot};
use crate::layer::Shared;

/// `Surrogate-Key`: space-separated tags.
pub(crate) static SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
/// `Cache-Tag`: comma-separated tags.
pub(crate) static CACHE_TAG: HeaderName = HeaderName::from_static("cache-tag");

/// At most this many tags are kept per object; the rest are ignored.
pub(crate) const MAX_TAGS_PER_OBJECT: usize = 64;
/// Tags longer than this are ignored.
pub(crate) const MAX_TAG_LEN: usize = 256;

/// The tags an origin response names, deduplicated, bounded.
pub(crate) fn tags_of(headers: &HeaderMap) -> Box<[Box<str>]> {
    let mut tags: Vec<Box<str>> = Vec::new();
    let space = headers.get_all(&SURROGATE_KEY).iter().flat_map(|v| {
        v.to_str()
            .ok()
            .into_iter()
            .flat_map(str::split_ascii_whitespace)
    });
    let comma = headers
        .get_all(&CACHE_TAG)
        .iter()
        .flat_map(|v| v.to_str().ok().into_iter().flat_map(|s| s.split(',')));
    for tag in space.chain(comma).map(str::trim) {
        if tag.is_empty() || tag.len() > MAX_TAG_LEN || tags.iter().any(|t| &**t == tag) {
            continue;
        }
        if tags.len() == MAX_TAGS_PER_OBJECT {
            break;
        }
        tags.push(tag.into());
    }
    tags.into_boxed_slice()
}

/// Whether every tag the response names is one an object keeps: readable text, at most
/// [`MAX_TAG_LEN`] bytes, at most [`MAX_TAGS_PER_OBJECT`] distinct. A response over a bound
/// is not stored, so a purge by any of its tags cannot miss it.
pub(crate) fn tags_fit(headers: &HeaderMap) -> bool {
    fn fits<'a>(distinct: &mut Vec<&'a str>, tag: &'a str) -> bool {
        let tag = tag.trim();
        if tag.is_empty() || distinct.contains(&tag) {
            return true;
        }
        if tag.len() > MAX_TAG_LEN || distinct.len() == MAX_TAGS_PER_OBJECT {
            return false;
        }
        distinct.push(tag);
        true
    }
    let mut distinct = Vec::new();
    for value in headers.get_all(&SURROGATE_KEY) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        if !text
            .split_ascii_whitespace()
            .all(|t| fits(&mut distinct, t))
        {
            return false;
        }
    }
    for value in headers.get_all(&CACHE_TAG) {
        let Ok(text) = value.to_str() else {
            return false;
        };
        if !text.split(',').all(|t| fits(&mut distinct, t)) {
            return false;
        }
    }
    true
}

/// What to invalidate.
///
/// ```
/// use tower_cdn::Purge;
///
/// let one = Purge::path("/index.html");
/// let images = Purge::pattern("/images/*").unwrap();
/// let product = Purge::tag("product-42").soft();
/// ```
#[derive(Clone, Debug)]
pub struct Purge {
    target: Target,
    soft: bool,
}

#[derive(Clone, Debug)]
enum Target {
    Path(String),
    Pattern(PathPattern),
    Tag(String),
}

impl Purge {
    /// Every object whose path is exactly `path`, for every host, query and variant.
    pub fn path(path: impl Into<String>) -> Self {
        Self {
            target: Target::Path(path.into()),
            soft: false,
        }
    }

    /// Every object whose path matches a CloudFront-style pattern: `*` any sequence (so a
    /// trailing `*` is a prefix and `/*` is everything), `?` one character.
    pub fn pattern(pattern: &str) -> Result<Self, BehaviorError> {
        Ok(Self {
            target: Target::Pattern(PathPattern::new(pattern)?),
            soft: false,
        })
    }

    /// Every object tagged `tag` by `Surrogate-Key` or `Cache-Tag`.
    pub fn tag(tag: impl Into<String>) -> Self {
        Self {
            target: Target::Tag(tag.into()),
            soft: false,
        }
    }

    /// Marks objects stale instead of dropping them, so `stale-while-revalidate` and
    /// `stale-if-error` can still use them while the origin is asked again.
    pub fn soft(mut self) -> Self {
        self.soft = true;
        self
    }

    /// The purge as a message field: kind (`path`, `pattern`, `tag`), value, soft.
    #[cfg(feature = "redis")]
    pub(crate) fn wire(&self) -> (&'static str, &str, bool) {
        match &self.target {
            Target::Path(p) => ("path", p, self.soft),
            Target::Pattern(p) => ("pattern", p.as_str(), self.soft),
            Target::Tag(t) => ("tag", t, self.soft),
        }
    }

    /// The purge a message describes; `None` for an unknown kind or a bad pattern.
    #[cfg(feature = "redis")]
    pub(crate) fn from_wire(kind: &str, value: &str, soft: bool) -> Option<Self> {
        let purge = match kind {
            "path" => Self::path(value),
            "pattern" => Self::pattern(value).ok()?,
            "tag" => Self::tag(value),
            _ => return None,
        };
        Some(Self { soft, ..purge })
    }

    /// Whether an object with this path is purged (for a tag purge: never by its path).
    #[cfg(feature = "redis")]
    pub(crate) fn matches_path(&self, path: &str) -> bool {
        match &self.target {
            Target::Path(p) => p == path,
            Target::Pattern(p) => p.matches(path),
            Target::Tag(_) => false,
        }
    }

    fn matches(&self, obj: &Object) -> bool {
        match &self.target {
            Target::Path(path) => *obj.path == **path,
            Target::Pattern(pattern) => pattern.matches(&obj.path),
            Target::Tag(tag) => obj.tags.iter().any(|t| **t == **tag),
        }
    }
}

/// Applies a purge to the memory store; returns how many objects it removed or marked.
pub(crate) fn apply(shared: &Shared, purge: &Purge, now: SystemTime) -> usize {
    // First: no fill under way may store what this purge takes back, and no new request
    // may join one.
    shared.purge_generation.fetch_add(1, Ordering::SeqCst);
    shared.flights.clear();
    shared.metrics.purges.fetch_add(1, Ordering::Relaxed);
    let matching: Vec<_> = shared
        .store
        .iter()
        .filter_map(|(key, slot)| match slot {
            Slot::Object(obj) if purge.matches(&obj) => Some((key, obj)),
            _ => None,
        })
        .collect();
    for (key, obj) in &matching {
        if purge.soft {
            // Stale from now on: its stale windows count from the purge.
            let stale = Object {
                freshness_lifetime: obj.freshness_lifetime.min(obj.age(now)),
                ..Object::clone(obj)
            };
            shared
                .store
                .replace_if_same(*key, obj, Slot::Object(Arc::new(stale)));
        } else {
            shared.store.remove_if_same(key, obj);
        }
    }
    matching.len()
}

/// Drops everything in the memory store (objects, `Vary` records, pass markers), as a purge
/// of everything: for a node that may have missed purges. Returns how many entries it removed.
#[cfg(feature = "redis")]
pub(crate) fn drop_all(shared: &Shared) -> usize {
    shared.purge_generation.fetch_add(1, Ordering::SeqCst);
    shared.flights.clear();
    let keys: Vec<_> = shared.store.iter().map(|(key, _)| key).collect();
    keys.iter().filter(|key| shared.store.remove(key)).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn tags_from_both_fields_are_deduplicated_and_bounded() {
        let mut h = HeaderMap::new();
        h.insert(&SURROGATE_KEY, HeaderValue::from_static("a  b\tc"));
        h.append(&CACHE_TAG, HeaderValue::from_static("c, d,,e "));
        let tags = tags_of(&h);
        let tags: Vec<&str> = tags.iter().map(|t| &**t).collect();
        assert_eq!(tags, ["a", "b", "c", "d", "e"]);
        let many = (0..1000)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        h.insert(&SURROGATE_KEY, HeaderValue::try_from(many).unwrap());
        assert_eq!(tags_of(&h).len(), MAX_TAGS_PER_OBJECT);
    }

    #[test]
    fn tags_over_a_bound_do_not_fit() {
        let mut h = HeaderMap::new();
        assert!(tags_fit(&h));
        let at_bound = (0..MAX_TAGS_PER_OBJECT)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        h.insert(&SURROGATE_KEY, HeaderValue::try_from(at_bound).unwrap());
        // Repeats and empty members count once or not at all.
        h.append(&CACHE_TAG, HeaderValue::from_static("t0, t1,, t0"));
        assert!(tags_fit(&h));
        h.append(&CACHE_TAG, HeaderValue::from_static("one-more"));
        assert!(!tags_fit(&h), "one tag past the bound");

        let mut h = HeaderMap::new();
        let long = "x".repeat(MAX_TAG_LEN + 1);
        h.insert(&SURROGATE_KEY, HeaderValue::try_from(long).unwrap());
        assert!(!tags_fit(&h), "a tag longer than the bound");

        let mut h = HeaderMap::new();
        h.insert(&CACHE_TAG, HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap());
        assert!(!tags_fit(&h), "a line that is not text");
    }
}
