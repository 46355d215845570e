//! Counters of what the edge did, cheap enough for the hit path (relaxed atomics).

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters every clone of a layer shares.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) compressions: AtomicU64,
}

impl Metrics {
    pub(crate) fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            compressions: self.compressions.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsSnapshot {
    /// Codings made from stored objects (compressions and decompressions).
    pub compressions: u64,
}
