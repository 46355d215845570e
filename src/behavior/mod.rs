//! CloudFront-style cache behaviors: pure, I/O-free building blocks the service applies.
//!
//! A behavior pairs a [`PathPattern`] with its settings: the [`ViewerProtocolPolicy`], the
//! [`AllowedMethods`] and [`CachedMethods`], the [`KeyPolicy`] and a
//! [`ResponseHeadersPolicy`]. Invalid settings are reported as [`BehaviorError`]s when the
//! configuration is built, never while serving.

mod cors;
mod error;
mod headers_policy;
mod key_policy;
mod methods;
mod pattern;
mod settings;
mod viewer;

pub use cors::{CorsConfig, CorsOrigins};
pub use error::BehaviorError;
pub use headers_policy::{FrameOptions, ResponseHeadersPolicy, ResponseHeadersPolicyBuilder};
pub use key_policy::{Cookies, Headers, KeyPolicy, QueryStrings};
pub use methods::{AllowedMethods, CachedMethods};
pub use pattern::PathPattern;
pub(crate) use settings::Route;
pub use settings::{
    Behavior, ClientAddr, OriginRequestHook, OriginRequestPolicy, OriginResponseHook, SetCookie,
    TargetOrigin, ViewerRequestHook, ViewerResponseHook, ViewerTls,
};
pub use viewer::ViewerProtocolPolicy;

pub(crate) use viewer::{viewer_protocol, viewer_scheme_is_https};
