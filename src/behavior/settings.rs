//! [`Behavior`]: the settings one path pattern carries, like a CloudFront cache behavior.

use std::fmt;
use std::sync::Arc;
#[cfg(feature = "signed-urls")]
use std::time::Duration;

use bytes::Bytes;
use http::{request, response, HeaderName, Response};

use super::{
    AllowedMethods, BehaviorError, CachedMethods, KeyPolicy, PathPattern, ResponseHeadersPolicy,
    ViewerProtocolPolicy,
};
use crate::config::CachePolicy;
#[cfg(feature = "signed-urls")]
use crate::signing::KeyGroup;

/// A viewer-request hook: may rewrite the request (URI, headers) or answer it directly.
pub type ViewerRequestHook =
    Arc<dyn Fn(&mut request::Parts) -> Option<Response<Bytes>> + Send + Sync>;
/// An origin-request hook: rewrites what is sent to the origin.
pub type OriginRequestHook = Arc<dyn Fn(&mut request::Parts) + Send + Sync>;
/// An origin-response hook: rewrites the origin's response head before it is stored.
pub type OriginResponseHook = Arc<dyn Fn(&mut response::Parts) + Send + Sync>;
/// A viewer-response hook: rewrites the head of every response to the viewer, hits included.
pub type ViewerResponseHook = Arc<dyn Fn(&mut response::Parts) + Send + Sync>;

/// Hooks at CloudFront's four points. Synchronous and cheap: they run on the request path.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) viewer_request: Option<ViewerRequestHook>,
    pub(crate) origin_request: Option<OriginRequestHook>,
    pub(crate) origin_response: Option<OriginResponseHook>,
    pub(crate) viewer_response: Option<ViewerResponseHook>,
}

impl fmt::Debug for Hooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("viewer_request", &self.viewer_request.is_some())
            .field("origin_request", &self.origin_request.is_some())
            .field("origin_response", &self.origin_response.is_some())
            .field("viewer_response", &self.viewer_response.is_some())
            .finish()
    }
}

/// What reaches the origin of the request fields the cache key leaves out, like a CloudFront
/// origin request policy.
///
/// The default, [`key_only`](Self::key_only), sends the origin the query parameters and
/// cookies the cache key holds and nothing else of them, so the origin cannot answer
/// differently for requests the cache treats as the same. Other request fields reach the
/// origin as the viewer sent them, except those the edge removes at entry for every
/// behavior: hop-by-hop fields, the viewer's forwarding fields (`Forwarded`, `X-Forwarded-*`,
/// `X-Real-IP`, `True-Client-IP`, `X-Client-IP`, `X-Host`), URL and method overrides
/// (`X-Original-URL`, `X-Original-URI`, `X-Rewrite-URL`, `X-HTTP-Method-Override`,
/// `X-HTTP-Method`, `X-Method-Override`) and `CloudFront-*` fields.
///
/// Forwarding more is the operator's choice, made per behavior:
/// [`forward_query_strings`](Self::forward_query_strings),
/// [`forward_cookies`](Self::forward_cookies) and [`forward_headers`](Self::forward_headers)
/// name what else goes, and [`all_viewer`](Self::all_viewer) sends every query parameter and
/// cookie. What is forwarded but not in the key can change what the origin answers without
/// changing the key: name only fields that cannot, or put them in the key policy too, or use
/// these on behaviors that do not cache.
///
/// ```
/// use http::HeaderName;
/// use tower_cdn::{Behavior, OriginRequestPolicy};
///
/// // An API that reads a method override and a session cookie, and caches nothing.
/// let api = OriginRequestPolicy::key_only()
///     .forward_headers([HeaderName::from_static("x-http-method-override")])
///     .forward_cookies(["session"]);
/// let behavior = Behavior::new().origin_request_policy(api);
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginRequestPolicy {
    all_viewer: bool,
    query: Box<[Box<str>]>,
    cookies: Box<[Box<str>]>,
    headers: Box<[HeaderName]>,
}

impl OriginRequestPolicy {
    /// Query parameters and cookies reach the origin only if they are part of the cache key
    /// (the default). Headers are forwarded as sent, but for those removed at entry (see
    /// [`OriginRequestPolicy`]) and `Cookie`, which keeps only the key's cookies.
    pub fn key_only() -> Self {
        Self::default()
    }

    /// Every query parameter and cookie the viewer sent reaches the origin, whether the key
    /// holds it or not: for behaviors that do not cache (an API, a login), or whose origin
    /// answers the same whatever the parameters the key leaves out. Fields removed at entry
    /// stay removed unless named with [`forward_headers`](Self::forward_headers).
    pub fn all_viewer() -> Self {
        Self {
            all_viewer: true,
            ..Self::default()
        }
    }

    /// Also sends these query parameters (raw names, case-sensitive) to the origin. A
    /// parameter sent but not in the key policy is the operator's choice: the origin must
    /// not vary its answer on it.
    pub fn forward_query_strings<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.query = boxed_names(names);
        self
    }

    /// Also sends these cookies (case-sensitive names) to the origin; the same caution as
    /// for [`forward_query_strings`](Self::forward_query_strings).
    pub fn forward_cookies<I>(mut self, names: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.cookies = boxed_names(names);
        self
    }

    /// Keeps these viewer fields, which the edge otherwise removes at entry (a method or URL
    /// override, `True-Client-IP` from a trusted upstream, a `CloudFront-*` field), for this
    /// behavior: the key policy, hooks and the origin then see them. The fields an edge
    /// server builds itself (`X-Forwarded-For`, `-Proto`, `-Host`, `Forwarded`, `Via`) are
    /// replaced by the server's whatever this says.
    pub fn forward_headers(mut self, names: impl IntoIterator<Item = HeaderName>) -> Self {
        self.headers = names.into_iter().collect();
        self
    }

    /// Whether query and cookies are cut down to the key's (plus the named ones).
    pub(crate) fn key_only_enabled(&self) -> bool {
        !self.all_viewer
    }

    /// Query parameters forwarded besides the key's.
    pub(crate) fn extra_query(&self) -> &[Box<str>] {
        &self.query
    }

    /// Cookies forwarded besides the key's.
    pub(crate) fn extra_cookies(&self) -> &[Box<str>] {
        &self.cookies
    }

    /// Viewer fields kept at entry.
    pub(crate) fn kept_headers(&self) -> &[HeaderName] {
        &self.headers
    }
}

fn boxed_names<I>(names: I) -> Box<[Box<str>]>
where
    I: IntoIterator,
    I::Item: Into<String>,
{
    names
        .into_iter()
        .map(|n| n.into().into_boxed_str())
        .collect()
}

/// What the cache does with an origin response that sets a cookie (`Set-Cookie`).
///
/// A stored object never carries `Set-Cookie` to anyone: one viewer's session cookie must
/// not reach the next viewer of the same URL.
///
/// ```
/// use tower_cdn::{Behavior, SetCookie};
///
/// // The default, as nginx, Varnish and Fastly do: such a response is not stored.
/// let pages = Behavior::new();
/// // CloudFront's way: stored without its cookies.
/// let assets = Behavior::new().set_cookie(SetCookie::strip());
/// assert_eq!(assets.set_cookie_policy(), SetCookie::strip());
/// assert_eq!(pages.set_cookie_policy(), SetCookie::pass());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetCookie(CookieMode);

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum CookieMode {
    #[default]
    Pass,
    Strip,
}

impl SetCookie {
    /// The response is not stored: it goes to the viewer that asked, and later requests
    /// for the URL go to the origin for a while (hit-for-pass), like any response not
    /// storable for its own reasons. The default.
    pub fn pass() -> Self {
        Self(CookieMode::Pass)
    }

    /// The response is stored without its `Set-Cookie` fields: the viewer whose request
    /// filled the cache gets its cookies, collapsed followers and later hits do not.
    pub fn strip() -> Self {
        Self(CookieMode::Strip)
    }

    pub(crate) fn strips(self) -> bool {
        self.0 == CookieMode::Strip
    }
}

/// The settings for requests whose path matches a pattern: cache policy, key policy, viewer
/// rules, response headers and hooks.
///
/// ```
/// use std::time::Duration;
/// use tower_cdn::{AllowedMethods, Behavior, CachePolicy, ViewerProtocolPolicy};
///
/// let api = Behavior::new()
///     .cache_policy(CachePolicy::caching_disabled())
///     .allowed_methods(AllowedMethods::all());
/// let assets = Behavior::new()
///     .cache_policy(CachePolicy::caching_optimized().min_ttl(Duration::from_secs(31_536_000)))
///     .viewer_protocol_policy(ViewerProtocolPolicy::redirect_to_https());
/// ```
#[derive(Clone, Debug, Default)]
pub struct Behavior {
    pub(crate) cache_policy: CachePolicy,
    pub(crate) key_policy: KeyPolicy,
    pub(crate) origin_request: OriginRequestPolicy,
    pub(crate) viewer_protocol: ViewerProtocolPolicy,
    pub(crate) allowed_methods: AllowedMethods,
    pub(crate) cached_methods: CachedMethods,
    pub(crate) compress: Option<bool>,
    pub(crate) response_headers: Option<ResponseHeadersPolicy>,
    pub(crate) hooks: Hooks,
    #[cfg(feature = "signed-urls")]
    pub(crate) trusted_keys: Option<Arc<KeyGroup>>,
    #[cfg(feature = "signed-urls")]
    pub(crate) clock_skew: Duration,
    pub(crate) target_origin: Option<TargetOrigin>,
    pub(crate) set_cookie: SetCookie,
}

impl Behavior {
    /// RFC 9111 caching, the default key policy, HTTP and HTTPS viewers, and only `GET` and
    /// `HEAD` ([`AllowedMethods::get_head`], CloudFront's default): other methods get `403`
    /// at the edge until [`allowed_methods`](Self::allowed_methods) lets them through.
    ///
    /// ```
    /// use tower_cdn::{AllowedMethods, Behavior};
    ///
    /// let pages = Behavior::new(); // GET and HEAD
    /// let forms = Behavior::new().allowed_methods(AllowedMethods::all()); // POST too
    /// # let _ = (pages, forms);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The cache policy (TTL clamps); [`CachePolicy::caching_disabled`] passes everything.
    pub fn cache_policy(mut self, policy: CachePolicy) -> Self {
        self.cache_policy = policy;
        self
    }

    /// What tells objects apart besides the path.
    pub fn key_policy(mut self, policy: KeyPolicy) -> Self {
        self.key_policy = policy;
        self
    }

    /// What reaches the origin of what the key leaves out (default:
    /// [`OriginRequestPolicy::key_only`]).
    pub fn origin_request_policy(mut self, policy: OriginRequestPolicy) -> Self {
        self.origin_request = policy;
        self
    }

    /// HTTP allowed, redirected to HTTPS, or refused.
    pub fn viewer_protocol_policy(mut self, policy: ViewerProtocolPolicy) -> Self {
        self.viewer_protocol = policy;
        self
    }

    /// Methods served at all; others get `403` at the edge and never reach the origin
    /// (default [`AllowedMethods::get_head`]).
    pub fn allowed_methods(mut self, methods: AllowedMethods) -> Self {
        self.allowed_methods = methods;
        self
    }

    /// Methods whose responses are cached (`OPTIONS` optionally).
    pub fn cached_methods(mut self, methods: CachedMethods) -> Self {
        self.cached_methods = methods;
        self
    }

    /// Whether stored objects are compressed for viewers (default: the layer's setting).
    pub fn compress(mut self, on: bool) -> Self {
        self.compress = Some(on);
        self
    }

    /// What is done with responses that set cookies (default [`SetCookie::pass`]: not
    /// stored).
    pub fn set_cookie(mut self, policy: SetCookie) -> Self {
        self.set_cookie = policy;
        self
    }

    /// The [`SetCookie`] policy of this behavior.
    pub fn set_cookie_policy(&self) -> SetCookie {
        self.set_cookie
    }

    /// Headers set on every response, hits included.
    pub fn response_headers_policy(mut self, policy: ResponseHeadersPolicy) -> Self {
        self.response_headers = Some(policy);
        self
    }

    /// Serves only viewers with a valid signed URL or signed cookies made with a key of
    /// `group` (CloudFront's trusted key groups). Others get `403` before the cache is
    /// consulted; the signing parameters never reach the cache key or the origin.
    #[cfg(feature = "signed-urls")]
    pub fn trusted_key_group(mut self, group: KeyGroup) -> Self {
        self.trusted_keys = Some(Arc::new(group));
        self
    }

    /// Names the origin this behavior's requests go to, like CloudFront's target origin.
    ///
    /// The layer puts a [`TargetOrigin`] extension on every request it sends to the inner
    /// service for this behavior (misses, revalidations and pass-through alike), so an inner
    /// service that fronts several origins can route on it. Behaviors without a target send
    /// requests without the extension.
    pub fn target_origin(mut self, name: impl Into<Arc<str>>) -> Self {
        self.target_origin = Some(TargetOrigin(name.into()));
        self
    }

    /// The origin named by [`target_origin`](Self::target_origin), if any.
    pub fn target_origin_name(&self) -> Option<&str> {
        self.target_origin.as_ref().map(TargetOrigin::name)
    }

    /// How much clock difference signed URLs are forgiven at either end (default 0).
    #[cfg(feature = "signed-urls")]
    pub fn clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }

    /// Runs first, before the cache: may rewrite the request or answer it.
    pub fn on_viewer_request<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut request::Parts) -> Option<Response<Bytes>> + Send + Sync + 'static,
    {
        self.hooks.viewer_request = Some(Arc::new(hook));
        self
    }

    /// Runs on every request sent to the origin.
    pub fn on_origin_request<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut request::Parts) + Send + Sync + 'static,
    {
        self.hooks.origin_request = Some(Arc::new(hook));
        self
    }

    /// Runs on every origin response head, before the cache decides to store it.
    pub fn on_origin_response<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut response::Parts) + Send + Sync + 'static,
    {
        self.hooks.origin_response = Some(Arc::new(hook));
        self
    }

    /// Runs on every response head to the viewer, hits included.
    pub fn on_viewer_response<F>(mut self, hook: F) -> Self
    where
        F: Fn(&mut response::Parts) + Send + Sync + 'static,
    {
        self.hooks.viewer_response = Some(Arc::new(hook));
        self
    }

    pub(crate) fn validate(&self) -> Result<(), BehaviorError> {
        self.cached_methods.validate(&self.allowed_methods)
    }
}

/// A request extension a TLS listener sets: the viewer connected over HTTPS. The viewer
/// protocol policy and the cache key's scheme read it.
///
/// With [`trust_forwarded_proto`](crate::CdnLayerBuilder::trust_forwarded_proto) on, the layer
/// also sets it at entry when the trusted proxy's `X-Forwarded-Proto` or `Forwarded` says
/// `https`, since it removes those fields there: the origin service reads the scheme from it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ViewerTls;

/// A request extension on origin requests: the origin the request's behavior targets
/// (see [`Behavior::target_origin`]).
///
/// ```
/// use tower_cdn::{Behavior, TargetOrigin};
///
/// let api = Behavior::new().target_origin("api");
/// assert_eq!(api.target_origin_name(), Some("api"));
/// # let _ = |req: http::Request<()>| req.extensions().get::<TargetOrigin>().map(|t| t.name().to_owned());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetOrigin(Arc<str>);

impl TargetOrigin {
    /// The origin's name.
    pub fn name(&self) -> &str {
        &self.0
    }
}

/// A request extension with the viewer's address, for the access log and per-client
/// rules. A server sets it from the connection; when that is one of the layer's
/// [`trusted_proxies`](crate::CdnLayerBuilder::trusted_proxies), the layer replaces it at entry
/// with the address the proxy's `X-Forwarded-For` names (port 0), before removing that field.
/// Later phases, and an origin proxy building `X-Forwarded-For`, read the resolved address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddr(pub std::net::SocketAddr);

/// A behavior bound to its path pattern (none for the default behavior), resolved for
/// serving.
#[derive(Debug)]
pub(crate) struct Route {
    pub(crate) pattern: Option<PathPattern>,
    pub(crate) behavior: Behavior,
    pub(crate) rules: crate::rfc::freshness::TtlRules,
    pub(crate) compress: bool,
}
