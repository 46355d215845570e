//! Counters of what the edge did, cheap enough for the hit path (relaxed atomics), with a
//! snapshot API and Prometheus text exposition.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::status::CacheStatus;

/// Upper bounds (seconds) of the origin latency histogram buckets.
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The live counters every clone of a layer shares.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) hits: AtomicU64,
    pub(crate) refresh_hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) passes: AtomicU64,
    pub(crate) errors: AtomicU64,
    pub(crate) generated: AtomicU64,
    pub(crate) bytes_from_cache: AtomicU64,
    pub(crate) bytes_from_origin: AtomicU64,
    pub(crate) origin_requests: AtomicU64,
    pub(crate) origin_failures: AtomicU64,
    origin_latency_micros: AtomicU64,
    origin_latency_buckets: [AtomicU64; LATENCY_BUCKETS.len()],
    pub(crate) collapsed: AtomicU64,
    pub(crate) stale_served: AtomicU64,
    pub(crate) compressions: AtomicU64,
    pub(crate) compressed_bytes_in: AtomicU64,
    pub(crate) purges: AtomicU64,
}

fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl Metrics {
    /// Counts one response to a viewer.
    pub(crate) fn served(&self, status: CacheStatus) {
        let counter = match status {
            CacheStatus::Hit => &self.hits,
            CacheStatus::RefreshHit => &self.refresh_hits,
            CacheStatus::Miss => &self.misses,
            CacheStatus::Pass => &self.passes,
            CacheStatus::Error => &self.errors,
            CacheStatus::Redirect | CacheStatus::Generated => &self.generated,
        };
        add(counter, 1);
    }

    pub(crate) fn add_cache_bytes(&self, bytes: u64) {
        add(&self.bytes_from_cache, bytes);
    }

    pub(crate) fn add_origin_bytes(&self, bytes: u64) {
        add(&self.bytes_from_origin, bytes);
    }

    /// Counts one origin request and how long its response head took.
    pub(crate) fn origin(&self, took: Duration, failed: bool) {
        add(&self.origin_requests, 1);
        if failed {
            add(&self.origin_failures, 1);
        }
        add(&self.origin_latency_micros, took.as_micros() as u64);
        let secs = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|b| secs <= *b) {
            add(&self.origin_latency_buckets[i], 1);
        }
    }

    pub(crate) fn snapshot(&self, store: StoreGauges) -> MetricsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MetricsSnapshot {
            hits: load(&self.hits),
            refresh_hits: load(&self.refresh_hits),
            misses: load(&self.misses),
            passes: load(&self.passes),
            errors: load(&self.errors),
            generated: load(&self.generated),
            bytes_from_cache: load(&self.bytes_from_cache),
            bytes_from_origin: load(&self.bytes_from_origin),
            origin_requests: load(&self.origin_requests),
            origin_failures: load(&self.origin_failures),
            origin_latency_seconds_sum: load(&self.origin_latency_micros) as f64 / 1e6,
            origin_latency_buckets: LATENCY_BUCKETS
                .iter()
                .zip(&self.origin_latency_buckets)
                .map(|(b, c)| (*b, load(c)))
                .collect(),
            collapsed: load(&self.collapsed),
            stale_served: load(&self.stale_served),
            evictions: store.evictions,
            store_bytes: store.bytes,
            store_capacity: store.capacity,
            store_entries: store.entries,
            compressions: load(&self.compressions),
            compressed_bytes_in: load(&self.compressed_bytes_in),
            purges: load(&self.purges),
        }
    }
}

/// Readings of the memory store for a snapshot.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct StoreGauges {
    pub(crate) bytes: u64,
    pub(crate) capacity: u64,
    pub(crate) entries: u64,
    pub(crate) evictions: u64,
}

/// A point-in-time copy of the counters.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Responses served from the cache without the origin (stale ones included).
    pub hits: u64,
    /// Responses served after a 304 from the origin.
    pub refresh_hits: u64,
    /// Responses fetched from the origin to fill the cache (collapsed followers included).
    pub misses: u64,
    /// Responses passed through without caching (methods, disabled policies, uncacheable).
    pub passes: u64,
    /// Errors the edge answered itself (502, 504, 403, `only-if-cached`).
    pub errors: u64,
    /// Redirects and hook answers made at the edge.
    pub generated: u64,
    /// Body bytes served from stored objects.
    pub bytes_from_cache: u64,
    /// Body bytes received from the origin (fills, and passes with a `Content-Length`).
    pub bytes_from_origin: u64,
    /// Requests sent to the origin.
    pub origin_requests: u64,
    /// Origin requests that failed (inner error or timeout).
    pub origin_failures: u64,
    /// Total seconds origins took to answer.
    pub origin_latency_seconds_sum: f64,
    /// Origin latency histogram: (upper bound in seconds, count in that bucket).
    pub origin_latency_buckets: Vec<(f64, u64)>,
    /// Viewers served from another viewer's origin request.
    pub collapsed: u64,
    /// Stale responses served (max-stale, stale-while-revalidate, stale-if-error).
    pub stale_served: u64,
    /// Entries evicted from the memory store to make room.
    pub evictions: u64,
    /// Bytes held by the memory store.
    pub store_bytes: u64,
    /// The memory store's capacity in bytes.
    pub store_capacity: u64,
    /// Entries in the memory store.
    pub store_entries: u64,
    /// Codings made, while filling or from stored objects (compressions and decompressions).
    pub compressions: u64,
    /// Bytes fed to those codings.
    pub compressed_bytes_in: u64,
    /// Purges applied.
    pub purges: u64,
}

impl MetricsSnapshot {
    /// Adds `other`'s counters to these (for several layers reported as one).
    pub fn merge(&mut self, other: &Self) {
        let Self {
            hits,
            refresh_hits,
            misses,
            passes,
            errors,
            generated,
            bytes_from_cache,
            bytes_from_origin,
            origin_requests,
            origin_failures,
            origin_latency_seconds_sum,
            origin_latency_buckets,
            collapsed,
            stale_served,
            evictions,
            store_bytes,
            store_capacity,
            store_entries,
            compressions,
            compressed_bytes_in,
            purges,
        } = other;
        for (mine, theirs) in [
            (&mut self.hits, hits),
            (&mut self.refresh_hits, refresh_hits),
            (&mut self.misses, misses),
            (&mut self.passes, passes),
            (&mut self.errors, errors),
            (&mut self.generated, generated),
            (&mut self.bytes_from_cache, bytes_from_cache),
            (&mut self.bytes_from_origin, bytes_from_origin),
            (&mut self.origin_requests, origin_requests),
            (&mut self.origin_failures, origin_failures),
            (&mut self.collapsed, collapsed),
            (&mut self.stale_served, stale_served),
            (&mut self.evictions, evictions),
            (&mut self.store_bytes, store_bytes),
            (&mut self.store_capacity, store_capacity),
            (&mut self.store_entries, store_entries),
            (&mut self.compressions, compressions),
            (&mut self.compressed_bytes_in, compressed_bytes_in),
            (&mut self.purges, purges),
        ] {
            *mine += theirs;
        }
        self.origin_latency_seconds_sum += origin_latency_seconds_sum;
        for (bound, count) in origin_latency_buckets {
            match self
                .origin_latency_buckets
                .iter_mut()
                .find(|(mine, _)| mine == bound)
            {
                Some((_, mine)) => *mine += count,
                None => self.origin_latency_buckets.push((*bound, *count)),
            }
        }
    }

    /// Hits (fresh, stale and refreshed) over all responses that could have been hits.
    pub fn hit_ratio(&self) -> f64 {
        let hits = self.hits + self.refresh_hits;
        let total = hits + self.misses + self.passes;
        if total == 0 {
            0.0
        } else {
            hits as f64 / total as f64
        }
    }

    /// The counters in the Prometheus text exposition format (version 0.0.4).
    pub fn to_prometheus(&self) -> String {
        let mut out = String::with_capacity(2048);
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP tower_cdn_{name} {help}\n# TYPE tower_cdn_{name} counter"
            );
            let _ = writeln!(out, "tower_cdn_{name} {value}");
        };
        counter(
            "bytes_from_cache_total",
            "Body bytes served from stored objects.",
            self.bytes_from_cache,
        );
        counter(
            "bytes_from_origin_total",
            "Body bytes received from the origin.",
            self.bytes_from_origin,
        );
        counter(
            "origin_requests_total",
            "Requests sent to the origin.",
            self.origin_requests,
        );
        counter(
            "origin_failures_total",
            "Origin requests that failed or timed out.",
            self.origin_failures,
        );
        counter(
            "collapsed_total",
            "Viewers served from another viewer's origin request.",
            self.collapsed,
        );
        counter(
            "stale_served_total",
            "Stale responses served.",
            self.stale_served,
        );
        counter(
            "evictions_total",
            "Entries evicted from the memory store.",
            self.evictions,
        );
        counter(
            "compressions_total",
            "Codings made from stored objects.",
            self.compressions,
        );
        counter(
            "compressed_bytes_in_total",
            "Bytes fed to compression.",
            self.compressed_bytes_in,
        );
        counter("purges_total", "Purges applied.", self.purges);
        let _ = writeln!(
            out,
            "# HELP tower_cdn_requests_total Responses by cache result.\n# TYPE tower_cdn_requests_total counter"
        );
        for (result, value) in [
            ("Hit", self.hits),
            ("RefreshHit", self.refresh_hits),
            ("Miss", self.misses),
            ("Pass", self.passes),
            ("Error", self.errors),
            ("Generated", self.generated),
        ] {
            let _ = writeln!(
                out,
                "tower_cdn_requests_total{{result=\"{result}\"}} {value}"
            );
        }
        let _ = writeln!(out, "# HELP tower_cdn_store_bytes Bytes held by the memory store.\n# TYPE tower_cdn_store_bytes gauge\ntower_cdn_store_bytes {}", self.store_bytes);
        let _ = writeln!(out, "# HELP tower_cdn_store_capacity_bytes Memory store capacity.\n# TYPE tower_cdn_store_capacity_bytes gauge\ntower_cdn_store_capacity_bytes {}", self.store_capacity);
        let _ = writeln!(out, "# HELP tower_cdn_store_entries Entries in the memory store.\n# TYPE tower_cdn_store_entries gauge\ntower_cdn_store_entries {}", self.store_entries);
        let _ = writeln!(out, "# HELP tower_cdn_origin_latency_seconds Time to the origin's response head.\n# TYPE tower_cdn_origin_latency_seconds histogram");
        let mut cumulative = 0;
        for (bound, count) in &self.origin_latency_buckets {
            cumulative += count;
            let _ = writeln!(
                out,
                "tower_cdn_origin_latency_seconds_bucket{{le=\"{bound}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "tower_cdn_origin_latency_seconds_bucket{{le=\"+Inf\"}} {}",
            self.origin_requests
        );
        let _ = writeln!(
            out,
            "tower_cdn_origin_latency_seconds_sum {}",
            self.origin_latency_seconds_sum
        );
        let _ = writeln!(
            out,
            "tower_cdn_origin_latency_seconds_count {}",
            self.origin_requests
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_ratio_counts_refreshes_as_hits() {
        let m = Metrics::default();
        for s in [
            CacheStatus::Hit,
            CacheStatus::Hit,
            CacheStatus::RefreshHit,
            CacheStatus::Miss,
        ] {
            m.served(s);
        }
        assert_eq!(m.snapshot(StoreGauges::default()).hit_ratio(), 0.75);
    }

    #[test]
    fn prometheus_text_has_cumulative_buckets() {
        let m = Metrics::default();
        m.origin(Duration::from_millis(3), false);
        m.origin(Duration::from_millis(30), true);
        let text = m.snapshot(StoreGauges::default()).to_prometheus();
        assert!(
            text.contains("tower_cdn_origin_latency_seconds_bucket{le=\"0.005\"} 1\n"),
            "{text}"
        );
        assert!(text.contains("tower_cdn_origin_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("tower_cdn_origin_latency_seconds_count 2\n"));
        assert!(text.contains("tower_cdn_origin_failures_total 1\n"));
    }
}
