//! Request collapsing: one origin request per key, however many viewers miss at once.
//!
//! The first viewer to miss becomes the leader and holds a [`FlightGuard`]; later viewers
//! get a receiver and wait (bounded) for what the leader publishes. The guard unregisters the
//! flight when dropped, publishing [`FlightState::Abandoned`] if it had published nothing, so
//! a leader that fails or disappears never strands a follower.
//!
//! A flight is keyed by what the lookup knew, but the answer may `Vary` on fields the key
//! did not yet tell apart. Every shared answer therefore names its [`Audience`]: a follower
//! takes it only when its own request selects the same variant as the leader's (RFC 9111
//! §4.1); otherwise it follows, or leads, a flight of its own variant.

use std::sync::Arc;

use dashmap::mapref::entry::Entry;
use dashmap::DashMap;
use http::{HeaderMap, HeaderName};
use tokio::sync::watch;

use crate::entry::Object;
use crate::fill::Fill;
use crate::key::CacheKey;
use crate::rfc::headers::Vary;

/// The epoch of a flight key for one variant of a flight, which no `Vary` record has (their
/// epochs count up from 0).
const VARIANT_FLIGHT_EPOCH: u64 = u64::MAX;

/// The requests an answer may be shared with: those whose values of the answer's `Vary`
/// fields are the leader's (RFC 9111 §4.1), normalised as the store's variant keys are.
#[derive(Clone, Debug)]
pub(crate) struct Audience {
    /// The fields the answer varies on; empty when it varies on none.
    names: Arc<[HeaderName]>,
    /// The leader's variant over `names`.
    variant: CacheKey,
}

impl Audience {
    /// Every request for the key: an answer without `Vary`.
    pub(crate) fn everyone() -> Self {
        Self {
            names: Arc::new([]),
            variant: CacheKey(0),
        }
    }

    /// The requests that select the same variant as `leader` under `vary`; `None` for a
    /// `Vary` that can never be matched (`*`), whose answer is shared with no one.
    pub(crate) fn of(vary: &Vary, leader: &HeaderMap) -> Option<Self> {
        match vary {
            Vary::None => Some(Self::everyone()),
            Vary::Star => None,
            Vary::Fields(names) => Some(Self {
                variant: variant_of(names, leader),
                names: names.as_slice().into(),
            }),
        }
    }

    /// Whether `request` selects the same variant as the leader's request.
    pub(crate) fn admits(&self, request: &HeaderMap) -> bool {
        self.names.is_empty() || variant_of(&self.names, request) == self.variant
    }

    /// The flight for `request`'s own variant of the flight `flight`.
    pub(crate) fn own_flight(&self, flight: CacheKey, request: &HeaderMap) -> CacheKey {
        flight.variant(VARIANT_FLIGHT_EPOCH, &self.names, request)
    }
}

/// A request's variant over `names`, with the store's normalisation ([`CacheKey::variant`]).
fn variant_of(names: &[HeaderName], request: &HeaderMap) -> CacheKey {
    CacheKey(0).variant(0, names, request)
}

/// What followers of a flight learn.
#[derive(Clone, Debug)]
pub(crate) enum FlightState {
    /// The origin has not answered yet.
    Pending,
    /// A storable response is arriving: read it as it fills (for the fill's audience).
    Streaming(Arc<Fill>),
    /// The object is complete (stored, or refreshed by a 304).
    Done(Arc<Object>, Audience),
    /// Found in the shared tier and promoted into memory.
    #[cfg(feature = "redis")]
    Shared(Arc<Object>, Audience),
    /// The origin failed; the stale object stands in (stale-if-error).
    StaleOnError(Arc<Object>, Audience),
    /// The origin failed and nothing may stand in: answer this status.
    Failed(http::StatusCode),
    /// Nothing to share (not storable, leader gone): go to the origin yourself.
    Abandoned,
}

impl FlightState {
    /// Who may take this answer; `None` for the states that carry no response.
    pub(crate) fn audience(&self) -> Option<&Audience> {
        match self {
            FlightState::Streaming(fill) => Some(&fill.audience),
            FlightState::Done(_, audience) | FlightState::StaleOnError(_, audience) => {
                Some(audience)
            }
            #[cfg(feature = "redis")]
            FlightState::Shared(_, audience) => Some(audience),
            FlightState::Pending | FlightState::Failed(_) | FlightState::Abandoned => None,
        }
    }
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
            Audience::everyone(),
        )));
        drop(guard);
        assert!(matches!(follow(rx).await, FlightState::Streaming(_)));
    }

    fn request(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn an_answer_varying_on_cookie_admits_only_the_leaders_cookie() {
        // RFC 9111 §4.1: a stored or shared response is used only for a request whose
        // nominated fields match the original request's.
        let vary = Vary::Fields(vec![http::header::COOKIE]);
        let leader = request(&[("cookie", "user=alice")]);
        let audience = Audience::of(&vary, &leader).unwrap();
        assert!(audience.admits(&request(&[("cookie", "user=alice")])));
        assert!(!audience.admits(&request(&[("cookie", "user=bob")])));
        assert!(!audience.admits(&request(&[])));
        let own = audience.own_flight(key(1), &request(&[("cookie", "user=bob")]));
        assert_ne!(own, key(1));
        assert_eq!(
            own,
            audience.own_flight(key(1), &request(&[("cookie", "user=bob")]))
        );
    }

    #[test]
    fn normalised_values_select_the_same_variant() {
        // §4.1: values are compared after combining lines and dropping white space.
        let vary = Vary::Fields(vec![http::header::ACCEPT_LANGUAGE]);
        let audience = Audience::of(&vary, &request(&[("accept-language", "en, fr")])).unwrap();
        assert!(audience.admits(&request(&[
            ("accept-language", "EN"),
            ("accept-language", "fr")
        ])));
    }

    #[test]
    fn no_vary_admits_everyone_and_star_no_one() {
        let leader = request(&[("cookie", "a=1")]);
        assert!(Audience::of(&Vary::None, &leader)
            .unwrap()
            .admits(&request(&[])));
        assert!(Audience::of(&Vary::Star, &leader).is_none());
    }
}
