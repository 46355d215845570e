//! Errors the crate reports.

use std::fmt;
use std::time::Duration;

use crate::behavior::BehaviorError;

/// Invalid configuration, reported by [`CdnLayerBuilder::build`](crate::CdnLayerBuilder::build).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigError {
    /// The TTLs of a cache policy are not ordered `min <= default <= max`.
    TtlOrder {
        /// Minimum TTL.
        min: Duration,
        /// Default TTL.
        default: Duration,
        /// Maximum TTL.
        max: Duration,
    },
    /// The store capacity is zero.
    ZeroCapacity,
    /// The largest object does not fit in the store.
    ObjectLargerThanStore {
        /// The configured per-object maximum, in bytes.
        max_object_size: u64,
        /// The configured store capacity, in bytes.
        capacity: u64,
    },
    /// The heuristic fraction is not within `0.0..=1.0`.
    HeuristicFraction(String),
    /// The cache name is not usable in a header value.
    CacheName(String),
    /// A behavior's settings are invalid.
    Behavior(BehaviorError),
    /// The default root object is not a relative path (e.g. `index.html`).
    DefaultRootObject(String),
    /// A trusted proxy range is not a CIDR range.
    TrustedProxy(String),
}

impl From<BehaviorError> for ConfigError {
    fn from(e: BehaviorError) -> Self {
        ConfigError::Behavior(e)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::TtlOrder { min, default, max } => write!(
                f,
                "cache policy TTLs must satisfy min <= default <= max (got {}s, {}s, {}s)",
                min.as_secs(),
                default.as_secs(),
                max.as_secs()
            ),
            ConfigError::ZeroCapacity => f.write_str("store capacity must be above zero"),
            ConfigError::ObjectLargerThanStore {
                max_object_size,
                capacity,
            } => write!(
                f,
                "max object size {max_object_size} B must be at most a quarter of the store capacity {capacity} B"
            ),
            ConfigError::HeuristicFraction(v) => {
                write!(f, "heuristic fraction must be within 0.0..=1.0 (got {v})")
            }
            ConfigError::CacheName(v) => {
                write!(f, "cache name must be a visible ASCII token (got {v:?})")
            }
            ConfigError::Behavior(e) => write!(f, "invalid behavior: {e}"),
            ConfigError::TrustedProxy(v) => {
                write!(f, "trusted proxy must be a CIDR range like 10.0.0.0/8 (got {v:?})")
            }
            ConfigError::DefaultRootObject(v) => {
                write!(f, "default root object must be a relative path like index.html (got {v:?})")
            }
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Behavior(e) => Some(e),
            _ => None,
        }
    }
}
