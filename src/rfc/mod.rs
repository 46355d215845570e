//! Pure HTTP caching rules: no I/O, no clock reads; `now` is passed in.

pub(crate) mod cache_control;
pub(crate) mod conditional;
pub(crate) mod freshness;
pub(crate) mod headers;
pub(crate) mod range;
