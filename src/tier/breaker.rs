//! A circuit breaker: after a run of failed calls, stop calling Redis for a cool-down.
//!
//! Closed, calls go through and consecutive failures are counted. At the threshold the
//! breaker opens: calls are refused at once for the cool-down. Then one call goes through
//! as a probe (half-open); its success closes the breaker, its failure opens it again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// One probe is under way; other calls are refused until it ends.
    Probing,
}

/// The breaker's state, shared by every call of one tier.
#[derive(Debug)]
pub(crate) struct Breaker {
    threshold: u32,
    cooldown: Duration,
    state: Mutex<State>,
    /// Times the breaker opened.
    pub(crate) opens: AtomicU64,
}

/// Leave to make one call. Dropped without a verdict (the call was cancelled), it counts
/// as a failure, so a cancelled probe never leaves the breaker half-open for good.
#[derive(Debug)]
pub(crate) struct Permit<'a> {
    breaker: &'a Breaker,
    settled: bool,
}

impl Permit<'_> {
    pub(crate) fn succeeded(mut self) {
        self.settled = true;
        self.breaker.success();
    }

    pub(crate) fn failed(mut self) {
        self.settled = true;
        self.breaker.failure();
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.breaker.failure();
        }
    }
}

impl Breaker {
    pub(crate) fn new(threshold: u32, cooldown: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            cooldown,
            state: Mutex::new(State::Closed { failures: 0 }),
            opens: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is one small value written whole: a panic elsewhere cannot tear it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Leave for one call, or `None` while the breaker is open.
    pub(crate) fn admit(&self) -> Option<Permit<'_>> {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => {}
            State::Open { until } if Instant::now() >= until => {
                *state = State::Probing;
                tracing::debug!("redis tier: cool-down over, probing");
            }
            State::Open { .. } | State::Probing => return None,
        }
        Some(Permit {
            breaker: self,
            settled: false,
        })
    }

    fn success(&self) {
        let mut state = self.lock();
        if *state == State::Probing {
            tracing::info!("redis tier: reachable again, calls resume");
        }
        *state = State::Closed { failures: 0 };
    }

    fn failure(&self) {
        let mut state = self.lock();
        match *state {
            State::Closed { failures } if failures + 1 < self.threshold => {
                *state = State::Closed {
                    failures: failures + 1,
                };
            }
            State::Closed { .. } => {
                *state = State::Open {
                    until: Instant::now() + self.cooldown,
                };
                self.opens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    failures = self.threshold,
                    cooldown_ms = self.cooldown.as_millis() as u64,
                    "redis tier: consecutive failures, not calling redis for the cool-down"
                );
            }
            State::Probing => {
                *state = State::Open {
                    until: Instant::now() + self.cooldown,
                };
                tracing::debug!("redis tier: probe failed, open again");
            }
            // A call admitted before the breaker opened: already counted.
            State::Open { .. } => {}
        }
    }

    /// Whether calls are refused right now (open and cooling down, or probing).
    pub(crate) fn is_open(&self) -> bool {
        match *self.lock() {
            State::Closed { .. } => false,
            State::Open { until } => Instant::now() < until,
            State::Probing => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn opens_after_the_threshold_and_probes_after_the_cooldown() {
        let breaker = Breaker::new(3, Duration::from_millis(100));
        for _ in 0..2 {
            breaker.admit().unwrap().failed();
        }
        assert!(!breaker.is_open());
        // A success resets the run.
        breaker.admit().unwrap().succeeded();
        for _ in 0..3 {
            breaker.admit().unwrap().failed();
        }
        assert!(breaker.is_open());
        assert!(breaker.admit().is_none());
        assert_eq!(breaker.opens.load(Ordering::Relaxed), 1);

        tokio::time::advance(Duration::from_millis(100)).await;
        let probe = breaker.admit().expect("one probe after the cool-down");
        assert!(breaker.admit().is_none(), "only one probe at a time");
        probe.failed();
        assert!(breaker.admit().is_none(), "a failed probe opens it again");

        tokio::time::advance(Duration::from_millis(100)).await;
        breaker.admit().unwrap().succeeded();
        assert!(!breaker.is_open());
        assert!(breaker.admit().is_some());
        assert_eq!(breaker.opens.load(Ordering::Relaxed), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_dropped_probe_counts_as_a_failure() {
        let breaker = Breaker::new(1, Duration::from_millis(10));
        breaker.admit().unwrap().failed();
        tokio::time::advance(Duration::from_millis(10)).await;
        drop(breaker.admit().unwrap());
        assert!(breaker.admit().is_none());
        tokio::time::advance(Duration::from_millis(10)).await;
        assert!(breaker.admit().is_some());
    }
}
