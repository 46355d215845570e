#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod access;
#[cfg(feature = "admin")]
pub mod admin;
mod behavior;
mod body;
mod client;
mod clock;
mod collapse;
mod config;
mod encoding;
mod entry;
mod error;
mod fetch;
mod fill;
mod future;
mod ingress;
mod key;
mod layer;
mod metrics;
mod origin_group;
mod purge;
mod respond;
mod rfc;
#[cfg(feature = "server")]
pub mod server;
mod service;
#[cfg(feature = "signed-urls")]
pub mod signing;
mod status;
mod store;
#[cfg(feature = "redis")]
mod tier;
mod variants;

#[cfg(feature = "geo")]
pub use access::MaxMindResolver;
pub use access::{
    AccessError, CountryCode, CountryResolver, GeoDefault, GeoRestriction, GeoRestrictionBuilder,
    HeaderResolver, OriginConcurrency, OriginConcurrencyBuilder, RateLimit, RateLimitBuilder,
};
pub use behavior::{
    AllowedMethods, Behavior, BehaviorError, CachedMethods, ClientAddr, Cookies, CorsConfig,
    CorsOrigins, FrameOptions, Headers, KeyPolicy, OriginRequestHook, OriginRequestPolicy,
    OriginResponseHook, PathPattern, QueryStrings, ResponseHeadersPolicy,
    ResponseHeadersPolicyBuilder, SetCookie, TargetOrigin, ViewerProtocolPolicy, ViewerRequestHook,
    ViewerResponseHook, ViewerTls,
};
pub use body::CdnBody;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{CachePolicy, CustomErrorResponse};
pub use encoding::Encoding;
pub use error::ConfigError;
pub use future::ResponseFuture;
pub use ingress::{mark_undeclared_body, UndeclaredBody};
pub use layer::{CdnLayer, CdnLayerBuilder};
pub use metrics::MetricsSnapshot;
pub use origin_group::{
    OriginGroup, OriginGroupBuilder, OriginGroupFuture, OriginGroupMetrics, OriginTimedOut,
    OriginUsed,
};
pub use purge::Purge;
pub use service::CdnService;
pub use status::{CacheStatus, NoStoreReason};
#[cfg(feature = "redis")]
pub use tier::{RedisTier, RedisTierBuilder, TierError, TierStats};

/// The error type of response bodies: the origin body's error, or a failed fill.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
