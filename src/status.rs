//! Named outcomes: what the cache did for a request, and why it did not store a response.

/// What the edge did for a request, as shown in `X-Cache` (CloudFront's wording) and metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CacheStatus {
    /// Served from the cache without contacting the origin.
    Hit,
    /// A stored object was revalidated with the origin (304) and served.
    RefreshHit,
    /// Fetched from the origin (and stored when allowed).
    Miss,
    /// Passed to the origin without consulting or filling the cache.
    Pass,
    /// The edge answered with an error of its own (504 `only-if-cached`, 502, timeouts).
    Error,
    /// The edge redirected the viewer (viewer protocol policy).
    Redirect,
    /// A viewer-request hook answered.
    Generated,
}

impl CacheStatus {
    /// The CloudFront result type: `Hit`, `RefreshHit`, `Miss`, `Error` (a pass shows `Miss`).
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "Hit",
            CacheStatus::RefreshHit => "RefreshHit",
            CacheStatus::Miss | CacheStatus::Pass => "Miss",
            CacheStatus::Error => "Error",
            CacheStatus::Redirect => "Redirect",
            CacheStatus::Generated => "FunctionGeneratedResponse",
        }
    }
}

/// Why a response was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NoStoreReason {
    /// Only GET responses are stored.
    Method,
    /// The request carried `Cache-Control: no-store`.
    RequestNoStore,
    /// The status is interim (1xx), 206 or 304, or one this cache does not understand
    /// while the response says `must-understand` (RFC 9111 §3).
    Status,
    /// The response carried `no-store`.
    NoStore,
    /// The response carried `private`.
    Private,
    /// The request carried `Authorization` and the response did not allow sharing it.
    Authorization,
    /// The response had no freshness information and no heuristic applied.
    NoFreshness,
    /// `Vary: *`, a member that is not a field name, or more names than the cache reads
    /// (`MAX_VARY_FIELDS`): such a `Vary` can never be matched (RFC 9111 §4.1).
    VaryStar,
    /// The body was larger than the per-object maximum.
    TooLarge,
    /// The origin body failed before its end.
    BodyError,
    /// The response sets a cookie (`Set-Cookie`) and the behavior passes such responses
    /// instead of storing them without their cookies.
    SetCookie,
    /// A caching field (`Cache-Control`, `CDN-Cache-Control`, `Surrogate-Control`) held
    /// more directives than the cache reads: a response not fully understood is not stored.
    DirectiveLimit,
    /// `Connection` named more options than the cache reads, so its hop-by-hop fields are
    /// not known.
    ConnectionLimit,
    /// `Surrogate-Key` / `Cache-Tag` named more tags than an object keeps, a tag longer than
    /// the bound, or a line that is not text: a purge by tag could miss the object.
    TagLimit,
}

impl NoStoreReason {
    /// A short name for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NoStoreReason::Method => "method",
            NoStoreReason::RequestNoStore => "request-no-store",
            NoStoreReason::Status => "status",
            NoStoreReason::NoStore => "no-store",
            NoStoreReason::Private => "private",
            NoStoreReason::Authorization => "authorization",
            NoStoreReason::NoFreshness => "no-freshness",
            NoStoreReason::VaryStar => "vary-star",
            NoStoreReason::TooLarge => "too-large",
            NoStoreReason::BodyError => "body-error",
            NoStoreReason::SetCookie => "set-cookie",
            NoStoreReason::DirectiveLimit => "directive-limit",
            NoStoreReason::ConnectionLimit => "connection-limit",
            NoStoreReason::TagLimit => "tag-limit",
        }
    }
}
