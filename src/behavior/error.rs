//! Invalid cache-behavior configuration.

use std::fmt;

/// Invalid cache-behavior configuration, carrying the offending input.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BehaviorError {
    /// A path pattern CloudFront would not accept.
    PathPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A cached method is not among the allowed methods.
    CachedMethodNotAllowed(http::Method),
    /// Not a valid header name.
    HeaderName(String),
    /// Not a valid value for this header.
    HeaderValue {
        /// The header the value was meant for.
        name: String,
        /// The value as given.
        value: String,
    },
    /// A header a policy may not add or remove, because it frames or routes the message.
    ProtectedHeader(String),
    /// Not one of the `Referrer-Policy` values.
    ReferrerPolicy(String),
    /// Not a usable CORS origin (`scheme://host[:port]`).
    CorsOrigin(String),
    /// CORS credentials with any origin: browsers reject `*` with credentials.
    CorsCredentialsWithAnyOrigin,
}

impl fmt::Display for BehaviorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BehaviorError::PathPattern { pattern, reason } => {
                write!(f, "invalid path pattern {pattern:?}: {reason}")
            }
            BehaviorError::CachedMethodNotAllowed(m) => {
                write!(f, "cached method {m} is not an allowed method")
            }
            BehaviorError::HeaderName(n) => write!(f, "invalid header name {n:?}"),
            BehaviorError::HeaderValue { name, value } => {
                write!(f, "invalid value {value:?} for header {name}")
            }
            BehaviorError::ProtectedHeader(n) => {
                write!(f, "header {n} cannot be set or removed by a policy")
            }
            BehaviorError::ReferrerPolicy(v) => write!(f, "unknown referrer policy {v:?}"),
            BehaviorError::CorsOrigin(v) => write!(f, "invalid CORS origin {v:?}"),
            BehaviorError::CorsCredentialsWithAnyOrigin => {
                f.write_str("CORS credentials require a list of origins, not any origin")
            }
        }
    }
}

impl std::error::Error for BehaviorError {}
