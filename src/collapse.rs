//! Request collapsing: one origin request per key, however many viewers miss at once.
//!
//! The first viewer to miss becomes the leader and holds a [`FlightGuard`]; later viewers
//! get a receiver and wait (bounded) for what the leader publishes. The guard unregisters the
//! flight when dropped, publishing [`FlightState::Abandoned`] if it had published nothing, so
//! a leader that fails or disappears never strands a follower.

use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use tokio::sync::watch;

use crate::entry::Object;
use crate::fill::Fill;
use crate::key::CacheKey;

/// What followers of a flight learn.
#[derive(Clone, Debug)]
pub(crate) enum FlightState {
    /// The origin has not answered yet.
    Pending,
    /// A storable response is arriving: read it as it fills.
    Streaming(Arc<Fill>),
    /// The object is complete (stored, or refreshed by a 304).
    Done(Arc<Object>),
    /// Found in the shared tier and promoted into memory.
    #[cfg(feature = "redis")]
    Shared(Arc<Object>),
    /// The origin failed; the stale object stands in (stale-if-error).
    StaleOnError(Arc<Object>),
    /// The origin failed and nothing may stand in: answer this status.
    Failed(http::StatusCode),
    /// Nothing to share (not storable, leader gone): go to the origin yourself.
    Abandoned,
}

/// The in-flight table.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    map: DashMap<CacheKey, watch::Receiver<FlightState>>,
}

/// Leader or follower.
#[derive(Debug)]
pub(crate) enum Join {
    Leader(FlightGuard),
    Follower(watch::Receiver<FlightState>),
}

impl Flights {
    pub(crate) fn join(self: &Arc<Self>, key: CacheKey) -> Join {
        match self.map.entry(key) {
            Entry::Occupied(e) => Join::Follower(e.get().clone()),
            Entry::Vacant(e) => {
                let (tx, rx) = watch::channel(FlightState::Pending);
                e.insert(rx);
                Join::Leader(FlightGuard {
                    flights: self.clone(),
                    key,
                    tx,
                })
            }
        }
    }

    /// Detaches every flight: viewers arriving from now on lead new origin requests. Fills
    /// under way go on for the viewers already reading them.
    pub(crate) fn clear(&self) {
        self.map.clear();
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }
}

/// The leader's hold on a flight.
#[derive(Debug)]
pub(crate) struct FlightGuard {
    flights: Arc<Flights>,
    key: CacheKey,
    tx: watch::Sender<FlightState>,
}

impl FlightGuard {
    pub(crate) fn publish(&self, state: FlightState) {
        self.tx.send_replace(state);
    }
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        self.flights
            .map
            .remove_if(&self.key, |_, rx| rx.same_channel(&self.tx.subscribe()));
        self.tx.send_if_modified(|state| {
            if matches!(state, FlightState::Pending) {
                *state = FlightState::Abandoned;
                true
            } else {
                false
            }
        });
    }
}

/// Waits for the leader's answer; `Abandoned` if the leader went away.
pub(crate) async fn follow(mut rx: watch::Receiver<FlightState>) -> FlightState {
    match rx.wait_for(|s| !matches!(s, FlightState::Pending)).await {
        Ok(state) => state.clone(),
        Err(_) => FlightState::Abandoned,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128) -> CacheKey {
        CacheKey(n)
    }

    #[tokio::test]
    async fn second_joiner_follows_and_sees_abandon_when_leader_drops() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(guard) = flights.join(key(1)) else {
            panic!("first is leader")
        };
        let Join::Follower(rx) = flights.join(key(1)) else {
            panic!("second follows")
        };
        assert!(matches!(flights.join(key(2)), Join::Leader(_)));
        drop(guard);
        assert!(matches!(follow(rx).await, FlightState::Abandoned));
        assert_eq!(flights.len(), 0);
        assert!(matches!(flights.join(key(1)), Join::Leader(_)));
    }

    #[tokio::test]
    async fn published_state_survives_the_guard() {
        let flights = Arc::new(Flights::default());
        let Join::Leader(guard) = flights.join(key(1)) else {
            panic!()
        };
        let Join::Follower(rx) = flights.join(key(1)) else {
            panic!()
        };
        guard.publish(FlightState::Streaming(Fill::new(
            http::StatusCode::OK,
            Default::default(),
            0,
            None,
        )));
        drop(guard);
        assert!(matches!(follow(rx).await, FlightState::Streaming(_)));
    }
}
