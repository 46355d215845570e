use std::{
    cell::RefCell,
    collections::BTreeMap,
    fmt,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use http::{uri::Scheme, HeaderName, HeaderValue, StatusCode, Uri};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{
    access_config::{
        GeoSetting, KeyGroupSetting, OriginConcurrencySetting, RateLimitSetting, TrustedProxies,
    },
    site::{
        BehaviorToml, DistributionToml, MethodsName, OriginGroupToml, OriginToml, Site, SiteSource,
        SiteToml,
    },
    ServerError,
};
use crate::{AllowedMethods, Behavior, CdnLayerBuilder};

/// Everything [`Server::bind`](super::Server::bind) needs to know.
///
/// Start from [`ServerConfig::default`] and change the fields you need; the
/// binary builds one from its command line and `--config` file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where the edge accepts viewers (default `127.0.0.1:8080`; port 0 picks a free one).
    pub listen: SocketAddr,
    /// Where the edge also accepts viewers over HTTPS, if anywhere. Without
    /// [`tls_cert`](Self::tls_cert) and [`tls_key`](Self::tls_key) the server generates a
    /// self-signed certificate for `localhost` and loopback addresses at start, for local use.
    pub https_listen: Option<SocketAddr>,
    /// PEM file with the HTTPS listener's certificate chain, leaf first.
    pub tls_cert: Option<PathBuf>,
    /// PEM file with the private key of [`tls_cert`](Self::tls_cert) (PKCS#8, PKCS#1 or SEC1).
    pub tls_key: Option<PathBuf>,
    /// The `http://host:port` or `https://host:port` origin to proxy to; `None` serves the
    /// built-in demo site.
    pub origin: Option<Uri>,
    /// PEM file with the certificate authorities trusted for an `https://` origin, replacing
    /// the built-in Mozilla root store (for origins with a private or self-signed certificate).
    pub origin_ca: Option<PathBuf>,
    /// Largest request body forwarded to the origin, in bytes; larger ones are answered with
    /// 413. `None` (the default) forwards bodies of any size. In the file and on the command
    /// line, a size may have a unit: `1MiB`, `64KB` (see the README).
    pub max_request_body: Option<u64>,
    /// Which `Host` header the origin receives.
    pub host_header: HostHeader,
    /// How long the origin may take to send response headers before the viewer gets a 504.
    pub origin_timeout: Duration,
    /// How long opening a TCP connection to the origin may take.
    pub connect_timeout: Duration,
    /// How long a graceful shutdown waits for in-flight requests before giving up on them.
    pub drain_timeout: Duration,
    /// The memory store's size in bytes (default 256 MiB). With several distributions, one
    /// that sets no size of its own gets this divided by their number.
    pub max_bytes: Option<u64>,
    /// Where the admin router (purge, stats, metrics) listens, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// The bearer token the admin router requires; needed with [`admin_listen`](Self::admin_listen).
    pub admin_token: Option<String>,
    /// What plain-HTTP viewers get.
    pub viewer_protocol: ViewerProtocol,
    /// The methods served by behaviors that set none: the default behavior of the one
    /// distribution made when [`distributions`](Self::distributions) is empty (`--origin`
    /// or the demo site), and the file's behaviors without `allowed_methods`. The default is
    /// [`AllowedMethods::get_head`], as for [`Behavior::new`]: other methods get `403` at the
    /// edge. An origin with forms or an API wants [`AllowedMethods::all`].
    pub allowed_methods: AllowedMethods,
    /// The most connections open at once; more are closed as they arrive (default 10,000).
    pub max_connections: usize,
    /// The most connections open at once from one client, an IPv4 address or an IPv6 /64;
    /// more are closed as they arrive (default 256, room for many viewers behind one NAT).
    /// 0 turns the limit off.
    pub max_connections_per_client: usize,
    /// How long a new connection has to complete its TLS handshake, and then to send a
    /// complete first request head, whatever the protocol; for HTTP/1 also each later request
    /// head (default 10 s). A connection that does not is closed.
    pub header_timeout: Duration,
    /// How long a connection may stay open with no request in progress (default 60 s); an
    /// HTTP/2 connection is then closed with GOAWAY. It is closed within a quarter of this
    /// past the timeout.
    pub idle_timeout: Duration,
    /// A Redis shared by several edges (`redis://host:port/` or `redis+unix:///path`): a
    /// second cache tier and purge fan-out.
    pub redis_url: Option<String>,
    /// Timeout of every Redis call (default 50 ms).
    pub redis_timeout: Duration,
    /// With Redis: one origin request per object for the whole fleet.
    pub origin_shield: bool,
    /// Named origins that behaviors target (see [`Behavior::target_origin`]). With none,
    /// [`origin`](Self::origin) (or the demo site) is the one origin, named `default`.
    pub origins: Vec<OriginConfig>,
    /// Failover pairs of named origins; behaviors target a group by its name.
    pub origin_groups: Vec<OriginGroupConfig>,
    /// The sites this edge serves, each chosen by the request's host name. With none, one
    /// distribution serves every host with a default behavior that follows
    /// [`viewer_protocol`](Self::viewer_protocol).
    pub distributions: Vec<DistributionConfig>,
}

/// One origin a behavior can target, with its connection settings, like a CloudFront origin.
///
/// ```
/// use std::time::Duration;
/// use tower_cdn::server::{OriginConfig, OriginProtocol};
///
/// let api = OriginConfig::new("api", "https://api.internal:8443".parse().unwrap())
///     .path_prefix("/v2")
///     .header("x-origin-verify", "s3cret")
///     .protocol(OriginProtocol::MatchViewer)
///     .response_timeout(Duration::from_secs(10));
/// assert_eq!(api.name, "api");
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OriginConfig {
    /// The name behaviors and origin groups use.
    pub name: String,
    /// `scheme://host[:port]`, without path or query.
    pub url: Uri,
    /// Which protocol the edge speaks to the origin (default: the URL's scheme).
    pub protocol: Option<OriginProtocol>,
    /// Port for HTTP when the protocol is matched to the viewer's (default 80, or the URL's
    /// port for an `http://` URL).
    pub http_port: Option<u16>,
    /// Port for HTTPS when the protocol is matched to the viewer's (default 443, or the URL's
    /// port for an `https://` URL).
    pub https_port: Option<u16>,
    /// Prepended to every request path, like CloudFront's origin path (e.g. `/production`).
    pub path_prefix: Option<String>,
    /// The `Host` sent to this origin; `None` follows [`ServerConfig::host_header`].
    pub host: Option<String>,
    /// Fields added to every request to this origin, such as a secret the origin checks.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// How long opening a connection may take (default [`ServerConfig::connect_timeout`]).
    pub connect_timeout: Option<Duration>,
    /// How long the origin may take to send response headers (default
    /// [`ServerConfig::origin_timeout`]).
    pub response_timeout: Option<Duration>,
    /// How long an idle connection to the origin is kept for reuse (default 90 s).
    pub keep_alive: Option<Duration>,
}

impl OriginConfig {
    /// An origin at `url` with default settings.
    pub fn new(name: impl Into<String>, url: Uri) -> Self {
        Self {
            name: name.into(),
            url,
            protocol: None,
            http_port: None,
            https_port: None,
            path_prefix: None,
            host: None,
            headers: Vec::new(),
            connect_timeout: None,
            response_timeout: None,
            keep_alive: None,
        }
    }

    /// Sets [`protocol`](Self::protocol).
    pub fn protocol(mut self, protocol: OriginProtocol) -> Self {
        self.protocol = Some(protocol);
        self
    }

    /// Sets [`path_prefix`](Self::path_prefix).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// Sets [`host`](Self::host).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Adds a field to every request to this origin.
    ///
    /// # Panics
    ///
    /// If `name` or `value` is not a valid header name or value.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        let name = HeaderName::from_bytes(name.as_bytes()).expect("a valid header name");
        let value = HeaderValue::from_str(value).expect("a valid header value");
        self.headers.push((name, value));
        self
    }

    /// Sets [`connect_timeout`](Self::connect_timeout).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = Some(timeout);
        self
    }

    /// Sets [`response_timeout`](Self::response_timeout).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.response_timeout = Some(timeout);
        self
    }

    /// Sets [`keep_alive`](Self::keep_alive).
    pub fn keep_alive(mut self, idle: Duration) -> Self {
        self.keep_alive = Some(idle);
        self
    }
}

/// Which protocol the edge uses towards an origin, like CloudFront's origin protocol policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginProtocol {
    /// Always HTTP.
    HttpOnly,
    /// Always HTTPS.
    HttpsOnly,
    /// HTTPS for viewers that came over HTTPS, HTTP for the others.
    MatchViewer,
}

/// Two named origins that fail over, like a CloudFront origin group: GET, HEAD and OPTIONS
/// requests go to the secondary when the primary fails or answers with a failover status.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct OriginGroupConfig {
    /// The name behaviors use.
    pub name: String,
    /// The origin tried first.
    pub primary: String,
    /// The origin tried when the primary fails.
    pub secondary: String,
    /// Primary statuses that fail over (default 500, 502, 503 and 504).
    pub failover_statuses: Vec<StatusCode>,
}

impl OriginGroupConfig {
    /// A group failing over from `primary` to `secondary` on 500, 502, 503 and 504.
    pub fn new(
        name: impl Into<String>,
        primary: impl Into<String>,
        secondary: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            primary: primary.into(),
            secondary: secondary.into(),
            failover_statuses: [500, 502, 503, 504]
                .into_iter()
                .filter_map(|code| StatusCode::from_u16(code).ok())
                .collect(),
        }
    }

    /// Replaces the failover statuses.
    pub fn failover_statuses(mut self, statuses: impl IntoIterator<Item = StatusCode>) -> Self {
        self.failover_statuses = statuses.into_iter().collect();
        self
    }
}

/// Adjusts a distribution's [`CdnLayerBuilder`] (access controls, error responses, ...).
pub type ConfigureLayer = Arc<dyn Fn(CdnLayerBuilder) -> CdnLayerBuilder + Send + Sync>;

/// One site the edge serves, chosen by host name, like a CloudFront distribution with its
/// alternate domain names: its own behaviors, certificate and cache.
///
/// ```
/// use tower_cdn::{AllowedMethods, Behavior, CachePolicy};
/// use tower_cdn::server::DistributionConfig;
///
/// let site = DistributionConfig::new("shop")
///     .hosts(["shop.example", "*.shop.example"])
///     .behavior(
///         "/api/*",
///         Behavior::new()
///             .target_origin("api")
///             .cache_policy(CachePolicy::caching_disabled())
///             .allowed_methods(AllowedMethods::all()),
///     )
///     .default_behavior(Behavior::new().target_origin("static"));
/// assert_eq!(site.hosts.len(), 2);
/// ```
#[derive(Clone, Default)]
#[non_exhaustive]
pub struct DistributionConfig {
    /// A name for logs, metrics and the Redis key prefix.
    pub name: String,
    /// Host names served: exact (`www.example.com`) or one-label wildcards
    /// (`*.example.com`). Empty: every host no other distribution names.
    pub hosts: Vec<String>,
    /// PEM certificate chain for these names on the HTTPS listener (picked by SNI).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of [`tls_cert`](Self::tls_cert).
    pub tls_key: Option<PathBuf>,
    /// Ordered path patterns and their behaviors; the first match wins.
    pub behaviors: Vec<(String, Behavior)>,
    /// The behavior for paths no pattern matches.
    pub default_behavior: Behavior,
    /// The object served for `/` (e.g. `index.html`).
    pub default_root_object: Option<String>,
    /// This distribution's memory store in bytes (default: the server's
    /// [`max_bytes`](ServerConfig::max_bytes) divided by the number of distributions).
    pub max_bytes: Option<u64>,
    /// Further settings applied to the distribution's layer builder, in order.
    pub configure: Vec<ConfigureLayer>,
}

impl DistributionConfig {
    /// A distribution named `name` serving every host, with the default behavior only.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the host names served (see [`hosts`](Self::hosts)).
    pub fn hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.hosts = hosts.into_iter().map(Into::into).collect();
        self
    }

    /// Adds a behavior for paths matching `pattern`, after those added before.
    pub fn behavior(mut self, pattern: impl Into<String>, behavior: Behavior) -> Self {
        self.behaviors.push((pattern.into(), behavior));
        self
    }

    /// Sets the default behavior.
    pub fn default_behavior(mut self, behavior: Behavior) -> Self {
        self.default_behavior = behavior;
        self
    }

    /// Sets the certificate files for these names.
    pub fn tls(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.tls_cert = Some(cert.into());
        self.tls_key = Some(key.into());
        self
    }

    /// Applies `configure` to the distribution's [`CdnLayerBuilder`] when the server builds it.
    pub fn configure_layer(
        mut self,
        configure: impl Fn(CdnLayerBuilder) -> CdnLayerBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure.push(Arc::new(configure));
        self
    }
}

impl fmt::Debug for DistributionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DistributionConfig")
            .field("name", &self.name)
            .field("hosts", &self.hosts)
            .field("tls_cert", &self.tls_cert)
            .field("behaviors", &self.behaviors)
            .field("default_behavior", &self.default_behavior)
            .field("default_root_object", &self.default_root_object)
            .field("max_bytes", &self.max_bytes)
            .field("configure", &self.configure.len())
            .finish_non_exhaustive()
    }
}

/// What plain-HTTP viewers get, like CloudFront's viewer protocol policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ViewerProtocol {
    /// HTTP and HTTPS are both served.
    #[default]
    AllowAll,
    /// HTTP GET and HEAD are redirected to HTTPS (301), other methods 307.
    RedirectToHttps,
    /// HTTP is refused with 403.
    HttpsOnly,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            https_listen: None,
            tls_cert: None,
            tls_key: None,
            origin: None,
            origin_ca: None,
            max_request_body: None,
            host_header: HostHeader::Viewer,
            origin_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(30),
            max_bytes: None,
            admin_listen: None,
            admin_token: None,
            viewer_protocol: ViewerProtocol::AllowAll,
            allowed_methods: AllowedMethods::get_head(),
            max_connections: 10_000,
            max_connections_per_client: 256,
            header_timeout: super::conn::HEADER_READ_TIMEOUT,
            idle_timeout: super::conn::DEFAULT_IDLE_TIMEOUT,
            redis_url: None,
            redis_timeout: Duration::from_millis(50),
            origin_shield: false,
            origins: Vec::new(),
            origin_groups: Vec::new(),
            distributions: Vec::new(),
        }
    }
}

/// The `Host` header sent to the origin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum HostHeader {
    /// Forward the viewer's `Host`, as CDNs do for origins serving many sites.
    #[default]
    Viewer,
    /// Send the origin's own `host:port`, for origins that only answer to their name;
    /// the viewer's host then travels in `X-Forwarded-Host`.
    Origin,
}

/// Parses and checks an origin URL: `http://` or `https://` with a host, and no path or
/// query because the viewer's path and query are what get forwarded.
pub(crate) fn parse_origin(text: &str) -> Result<Uri, String> {
    let uri: Uri = text
        .parse()
        .map_err(|err| format!("`{text}` is not a URL: {err}"))?;
    check_origin(&uri)?;
    Ok(uri)
}

/// The checks of [`parse_origin`], also applied to a [`ServerConfig`] built in code.
pub(crate) fn check_origin(uri: &Uri) -> Result<(), String> {
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP || *scheme == Scheme::HTTPS => {}
        _ => return Err(format!("`{uri}` must start with http:// or https://")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(format!("`{uri}` has no host"));
    }
    let authority = uri.authority().map_or("", |a| a.as_str());
    if authority.contains('@') {
        return Err(format!(
            "`{uri}`: user info is not sent to origins; use the origin's custom headers"
        ));
    }
    check_port(authority).map_err(|err| format!("`{uri}`: {err}"))?;
    if uri.query().is_some() {
        return Err(format!(
            "`{uri}`: an origin is scheme://host:port only, without a query"
        ));
    }
    if !matches!(uri.path(), "" | "/") {
        let scheme = uri.scheme_str().unwrap_or("http");
        return Err(format!(
            "`{uri}`: an origin is scheme://host:port only; write `{scheme}://{authority}`, and \
             to put `{path}` before every request path, declare the origin in the config file \
             with `path = \"{path}\"` ([origins.NAME] url = \"{scheme}://{authority}\")",
            path = uri.path().trim_end_matches('/'),
        ));
    }
    Ok(())
}

/// Refuses a `host:port` whose port is not 1-65535: `http` keeps a port it cannot read as
/// none, which would quietly mean the default port.
pub(crate) fn check_port(authority: &str) -> Result<(), String> {
    if let (_, Some(port)) = super::hosts::split_port(authority) {
        if port.parse::<u16>().map_or(true, |port| port == 0) {
            return Err(format!("`{port}` is not a port"));
        }
    }
    Ok(())
}

/// The longest duration a setting takes: longer ones would overflow when added to a clock.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 86_400);

/// Parses durations written like `200ms`, `30s`, `1.5s`, `2m`, `12h` or `365d`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration like 200ms, 30s, 2m, 12h or 365d");
    let text = text.trim();
    let unit_start = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(unit_start);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86_400.0,
        _ => return Err(bad()),
    };
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration > MAX_DURATION => Err(format!(
            "`{text}` is longer than the 10 years a setting may be"
        )),
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => Err(format!("`{text}` must be a positive duration")),
    }
}

/// One source of settings (command line or file); unset fields fall through
/// to the next source, then to [`ServerConfig::default`].
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ConfigLayer {
    #[serde(deserialize_with = "de_origin")]
    pub(crate) origin: Option<Uri>,
    #[serde(deserialize_with = "de_socket_addr")]
    pub(crate) listen: Option<SocketAddr>,
    #[serde(deserialize_with = "de_socket_addr")]
    pub(crate) https_listen: Option<SocketAddr>,
    #[serde(deserialize_with = "de_path")]
    pub(crate) tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "de_path")]
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(deserialize_with = "de_path")]
    pub(crate) origin_ca: Option<PathBuf>,
    #[serde(deserialize_with = "de_size")]
    pub(crate) max_request_body: Option<u64>,
    #[serde(deserialize_with = "de_socket_addr")]
    pub(crate) admin_listen: Option<SocketAddr>,
    pub(crate) admin_token: Option<String>,
    pub(crate) viewer_protocol: Option<ViewerProtocol>,
    #[serde(deserialize_with = "de_allowed_methods")]
    pub(crate) allowed_methods: Option<AllowedMethods>,
    pub(crate) max_connections: Option<usize>,
    pub(crate) max_connections_per_client: Option<usize>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) header_timeout: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) redis_url: Option<String>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) redis_timeout: Option<Duration>,
    pub(crate) origin_shield: Option<bool>,
    #[serde(deserialize_with = "de_size")]
    pub(crate) max_bytes: Option<u64>,
    pub(crate) host_header: Option<HostHeader>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) origin_timeout: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) connect_timeout: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    pub(crate) drain_timeout: Option<Duration>,

    // The site: named origins and groups, key groups, distributions, and the settings of
    // the one distribution a file without `[[distributions]]` describes. File only. They
    // repeat `DistributionToml`'s keys rather than flattening it in, because serde's
    // `flatten` loses toml's spans (and with them the line numbers of errors) and cannot be
    // combined with `deny_unknown_fields`.
    pub(crate) origins: BTreeMap<String, Spanned<OriginToml>>,
    pub(crate) origin_groups: BTreeMap<String, Spanned<OriginGroupToml>>,
    pub(crate) key_groups: BTreeMap<String, KeyGroupSetting>,
    pub(crate) distributions: Vec<Spanned<DistributionToml>>,
    pub(crate) behaviors: Vec<Spanned<BehaviorToml>>,
    pub(crate) default_behavior: Option<Spanned<BehaviorToml>>,
    pub(crate) default_root_object: Option<String>,
    pub(crate) geo_restriction: Option<GeoSetting>,
    pub(crate) rate_limit: Option<RateLimitSetting>,
    pub(crate) origin_concurrency: Option<OriginConcurrencySetting>,
    pub(crate) trusted_proxies: Option<TrustedProxies>,
    /// The site sections above, moved out with the file's path and text once parsed.
    #[serde(skip)]
    pub(crate) site: Option<(PathBuf, SiteSource)>,
}

impl ConfigLayer {
    /// Reads a TOML file; its errors quote the offending line and setting. Relative paths in
    /// it are taken from the file's directory (see [`file_path`]).
    pub(crate) fn from_file(path: &Path) -> Result<Self, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|source| ServerError::ReadConfig {
            path: path.to_owned(),
            source,
        })?;
        Self::from_file_text(path, text)
    }

    /// Parses `text` as the content of the file at `path`.
    pub(crate) fn from_file_text(path: &Path, text: String) -> Result<Self, ServerError> {
        let dir = path.parent().unwrap_or(Path::new("")).to_owned();
        let mut layer = in_file_dir(dir, || Self::from_toml(&text)).map_err(|message| {
            ServerError::ParseConfig {
                path: path.to_owned(),
                message,
            }
        })?;
        layer.site = Some((path.to_owned(), layer.take_site(text)));
        Ok(layer)
    }

    /// Moves the site sections out, with the text they were parsed from.
    fn take_site(&mut self, text: String) -> SiteSource {
        SiteSource {
            text,
            site: SiteToml {
                origins: std::mem::take(&mut self.origins),
                origin_groups: std::mem::take(&mut self.origin_groups),
                key_groups: std::mem::take(&mut self.key_groups),
                distributions: std::mem::take(&mut self.distributions),
            },
            top: DistributionToml {
                behaviors: std::mem::take(&mut self.behaviors),
                default_behavior: self.default_behavior.take(),
                default_root_object: self.default_root_object.take(),
                geo_restriction: self.geo_restriction.take(),
                rate_limit: self.rate_limit.take(),
                origin_concurrency: self.origin_concurrency.take(),
                trusted_proxies: self.trusted_proxies.take(),
                ..DistributionToml::default()
            },
        }
    }

    fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|err| err.to_string().trim_end().to_owned())
    }

    /// Fills every setting missing here from `lower`.
    pub(crate) fn or(self, lower: Self) -> Self {
        Self {
            origin: self.origin.or(lower.origin),
            listen: self.listen.or(lower.listen),
            https_listen: self.https_listen.or(lower.https_listen),
            tls_cert: self.tls_cert.or(lower.tls_cert),
            tls_key: self.tls_key.or(lower.tls_key),
            origin_ca: self.origin_ca.or(lower.origin_ca),
            max_request_body: self.max_request_body.or(lower.max_request_body),
            admin_listen: self.admin_listen.or(lower.admin_listen),
            admin_token: self.admin_token.or(lower.admin_token),
            viewer_protocol: self.viewer_protocol.or(lower.viewer_protocol),
            allowed_methods: self.allowed_methods.or(lower.allowed_methods),
            max_connections: self.max_connections.or(lower.max_connections),
            max_connections_per_client: self
                .max_connections_per_client
                .or(lower.max_connections_per_client),
            header_timeout: self.header_timeout.or(lower.header_timeout),
            idle_timeout: self.idle_timeout.or(lower.idle_timeout),
            redis_url: self.redis_url.or(lower.redis_url),
            redis_timeout: self.redis_timeout.or(lower.redis_timeout),
            origin_shield: self.origin_shield.or(lower.origin_shield),
            max_bytes: self.max_bytes.or(lower.max_bytes),
            host_header: self.host_header.or(lower.host_header),
            origin_timeout: self.origin_timeout.or(lower.origin_timeout),
            connect_timeout: self.connect_timeout.or(lower.connect_timeout),
            drain_timeout: self.drain_timeout.or(lower.drain_timeout),
            site: self.site.or(lower.site),
            ..Self::default()
        }
    }

    /// The final configuration, with defaults for whatever no source set. Fails when the
    /// file's site sections do not fit together (naming the file, line and field).
    pub(crate) fn resolve(self) -> Result<ServerConfig, ServerError> {
        let default = ServerConfig::default();
        let viewer_protocol = self.viewer_protocol.unwrap_or_default();
        let allowed_methods = self.allowed_methods.unwrap_or(default.allowed_methods);
        let site = match self.site {
            Some((path, source)) => source
                .build(viewer_protocol, allowed_methods)
                .map_err(|message| ServerError::ParseConfig { path, message })?,
            None => Site::default(),
        };
        Ok(ServerConfig {
            listen: self.listen.unwrap_or(default.listen),
            https_listen: self.https_listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            origin: self.origin,
            origin_ca: self.origin_ca,
            max_request_body: self.max_request_body,
            host_header: self.host_header.unwrap_or(default.host_header),
            origin_timeout: self.origin_timeout.unwrap_or(default.origin_timeout),
            connect_timeout: self.connect_timeout.unwrap_or(default.connect_timeout),
            drain_timeout: self.drain_timeout.unwrap_or(default.drain_timeout),
            max_bytes: self.max_bytes,
            admin_listen: self.admin_listen,
            admin_token: self.admin_token,
            viewer_protocol,
            allowed_methods,
            max_connections: self.max_connections.unwrap_or(default.max_connections),
            max_connections_per_client: self
                .max_connections_per_client
                .unwrap_or(default.max_connections_per_client),
            header_timeout: self.header_timeout.unwrap_or(default.header_timeout),
            idle_timeout: self.idle_timeout.unwrap_or(default.idle_timeout),
            redis_url: self.redis_url,
            redis_timeout: self.redis_timeout.unwrap_or(default.redis_timeout),
            origin_shield: self.origin_shield.unwrap_or(default.origin_shield),
            origins: site.origins,
            origin_groups: site.origin_groups,
            distributions: site.distributions,
        })
    }
}

thread_local! {
    /// The directory of the configuration file being parsed on this thread, if any.
    static FILE_DIR: RefCell<Option<PathBuf>> = const { RefCell::new(None) };
}

/// Runs `parse` with relative paths taken from `dir`. The files a configuration names are
/// read while it is parsed (so that errors name their line), deep inside serde, where no
/// argument reaches: the directory travels beside the parse instead, on its thread, for
/// exactly as long as `parse` runs.
fn in_file_dir<T>(dir: PathBuf, parse: impl FnOnce() -> T) -> T {
    struct Restore(Option<PathBuf>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FILE_DIR.with(|current| *current.borrow_mut() = previous);
        }
    }
    let _restore = Restore(FILE_DIR.with(|current| current.replace(Some(dir))));
    parse()
}

/// A path written in the configuration file. A relative path is taken from the file's
/// directory, as nginx takes its paths from its prefix, so that a file and the keys and
/// certificates beside it work whatever the working directory. Paths given as flags are
/// taken from the working directory, as every command line does.
pub(crate) fn file_path(text: &str) -> PathBuf {
    let path = PathBuf::from(text);
    if path.is_absolute() {
        return path;
    }
    FILE_DIR.with(|dir| match &*dir.borrow() {
        Some(dir) => dir.join(&path),
        None => path,
    })
}

pub(crate) fn de_path<'de, D: Deserializer<'de>>(de: D) -> Result<Option<PathBuf>, D::Error> {
    let text = String::deserialize(de)?;
    Ok(Some(file_path(&text)))
}

// The file's values go through the same parsers as the flags, and a failure
// is raised as a serde error so that toml points at the line and key.
fn de_with<'de, D, T>(
    de: D,
    parse: impl FnOnce(&str) -> Result<T, String>,
) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
{
    let text = String::deserialize(de)?;
    parse(&text).map(Some).map_err(serde::de::Error::custom)
}

fn de_origin<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Uri>, D::Error> {
    de_with(de, parse_origin)
}

fn de_allowed_methods<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Option<AllowedMethods>, D::Error> {
    MethodsName::deserialize(de).map(|methods| Some(methods.allowed()))
}

fn de_socket_addr<'de, D: Deserializer<'de>>(de: D) -> Result<Option<SocketAddr>, D::Error> {
    de_with(de, parse_socket_addr)
}

/// A size in bytes: a whole number, in the file or as a string with a unit.
pub(crate) fn de_size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    match Size::deserialize(de) {
        Ok(Size::Bytes(bytes)) => Ok(Some(bytes)),
        Ok(Size::Text(text)) => parse_size(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
        Err(_) => Err(serde::de::Error::custom(
            "a size is a number of bytes or a string like \"64KiB\", \"256MiB\" or \"1GB\"",
        )),
    }
}

/// Parses a listening address: `IP:PORT` (`[IPv6]:PORT`), or `localhost:PORT` for
/// `127.0.0.1:PORT`. Other host names are not resolved: which address a name resolves to
/// can change, and a listener should not.
pub(crate) fn parse_socket_addr(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    if let Some(port) = text.strip_prefix("localhost:") {
        if let Ok(port) = port.parse::<u16>() {
            return Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        }
    }
    Err(format!(
        "`{text}` is not an address like 127.0.0.1:8080, [::1]:8080, 0.0.0.0:8080 (every \
         interface) or localhost:8080; write an IP address and a port, not a host name"
    ))
}

/// Parses a size in bytes: a whole number of bytes (`1048576`), or one with a unit.
/// `k`/`K`/`KB`, `M`/`MB`, `G`/`GB` and `T`/`TB` are decimal (powers of 1000, SI);
/// `KiB`, `MiB`, `GiB` and `TiB` are binary (powers of 1024, IEC). Units are case-insensitive
/// and may follow a space: `64KiB`, `256 MiB`, `1GB`, `512b`.
pub(crate) fn parse_size(text: &str) -> Result<u64, String> {
    let bad = || {
        format!(
            "`{text}` is not a size like 1048576 (bytes), 64KiB, 256MiB or 1GB \
             (KB, MB, GB: powers of 1000; KiB, MiB, GiB: powers of 1024)"
        )
    };
    let trimmed = text.trim();
    let unit_start = trimmed
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(unit_start);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000 * 1000 * 1000 * 1000,
        "tib" => 1 << 40,
        _ => return Err(bad()),
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("`{text}` is too large a size"))
}

pub(crate) fn de_duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Duration>, D::Error> {
    de_with(de, parse_duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(
            parse_duration("365d"),
            Ok(Duration::from_secs(365 * 86_400))
        );
        assert!(parse_duration("200000000000000d").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size("512b"), Ok(512));
        assert_eq!(parse_size("1k"), Ok(1000));
        assert_eq!(parse_size("1K"), Ok(1000));
        assert_eq!(parse_size("64KB"), Ok(64_000));
        assert_eq!(parse_size("64KiB"), Ok(65_536));
        assert_eq!(parse_size("256MiB"), Ok(256 * 1024 * 1024));
        assert_eq!(parse_size("256 MB"), Ok(256_000_000));
        assert_eq!(parse_size("2G"), Ok(2_000_000_000));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("1tib"), Ok(1 << 40));
        for bad in ["", "k", "1.5MiB", "-1", "10 parsecs", "1 KiBB"] {
            let err = parse_size(bad).unwrap_err();
            assert!(err.contains("64KiB"), "{bad}: {err}");
        }
        assert!(parse_size("99999999999TiB")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn sizes_in_the_file_are_numbers_or_strings_with_units() {
        let config = ConfigLayer::from_toml("max_bytes = \"256MiB\"\nmax_request_body = \"1k\"\n")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.max_bytes, Some(256 * 1024 * 1024));
        assert_eq!(config.max_request_body, Some(1000));
        let config = ConfigLayer::from_toml("max_bytes = 4096\n")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.max_bytes, Some(4096));
        let err = ConfigLayer::from_toml("max_bytes = \"256 furlongs\"\n").unwrap_err();
        assert!(err.contains("max_bytes") && err.contains("256MiB"), "{err}");
        let err = ConfigLayer::from_toml("max_bytes = 1.5\n").unwrap_err();
        assert!(
            err.contains("max_bytes") && err.contains("number of bytes"),
            "{err}"
        );
    }

    #[test]
    fn connection_limits_from_the_file() {
        let config = ConfigLayer::from_toml(
            "max_connections_per_client = 8\nheader_timeout = \"2s\"\nidle_timeout = \"30s\"\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(config.max_connections_per_client, 8);
        assert_eq!(config.header_timeout, Duration::from_secs(2));
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        let err = ConfigLayer::from_toml("header_timeout = 2\n").unwrap_err();
        assert!(err.contains("header_timeout"), "{err}");
    }

    #[test]
    fn allowed_methods_at_the_top_are_the_default_of_every_behavior() {
        let text = "allowed_methods = \"all\"\n\
                    [[behaviors]]\npath = \"/static/*\"\nallowed_methods = \"get-head\"\n\
                    [[behaviors]]\npath = \"/api/*\"\n";
        let config = ConfigLayer::from_file_text(Path::new("edge.toml"), text.to_owned())
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.allowed_methods, AllowedMethods::all());
        let site = &config.distributions[0];
        let methods: Vec<_> = site
            .behaviors
            .iter()
            .map(|(_, b)| b.allowed_methods)
            .collect();
        assert_eq!(methods, [AllowedMethods::get_head(), AllowedMethods::all()]);
        assert_eq!(site.default_behavior.allowed_methods, AllowedMethods::all());

        let text = "[default_behavior]\ncompress = true\n";
        let config = ConfigLayer::from_file_text(Path::new("edge.toml"), text.to_owned())
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(
            config.distributions[0].default_behavior.allowed_methods,
            AllowedMethods::get_head()
        );
        let err = ConfigLayer::from_toml("allowed_methods = \"post\"\n").unwrap_err();
        assert!(
            err.contains("allowed_methods") && err.contains("get-head"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_in_the_file_are_taken_from_its_directory() {
        let text = "tls_cert = \"certs/edge.pem\"\ntls_key = \"/etc/edge.key\"\n\
                    origin_ca = \"ca.pem\"\n\
                    [[distributions]]\nhosts = [\"a.example\"]\n\
                    tls_cert = \"a.pem\"\ntls_key = \"../a.key\"\n";
        let file = Path::new("/srv/edge/edge.toml");
        let config = ConfigLayer::from_file_text(file, text.to_owned())
            .unwrap()
            .resolve()
            .unwrap();
        let dir = Path::new("/srv/edge");
        assert_eq!(config.tls_cert, Some(dir.join("certs/edge.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("/etc/edge.key")));
        assert_eq!(config.origin_ca, Some(dir.join("ca.pem")));
        let site = &config.distributions[0];
        assert_eq!(site.tls_cert, Some(dir.join("a.pem")));
        assert_eq!(site.tls_key, Some(dir.join("../a.key")));

        // Flags keep the working directory, over the file's settings.
        let flags = ConfigLayer {
            tls_cert: Some(PathBuf::from("flag.pem")),
            ..ConfigLayer::default()
        };
        let file = ConfigLayer::from_file_text(file, text.to_owned()).unwrap();
        let config = flags.or(file).resolve().unwrap();
        assert_eq!(config.tls_cert, Some(PathBuf::from("flag.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("/etc/edge.key")));

        // The directory belongs to that file's parse only.
        let config = ConfigLayer::from_toml("tls_cert = \"certs/edge.pem\"\n")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.tls_cert, Some(PathBuf::from("certs/edge.pem")));
    }

    #[test]
    fn key_files_are_read_from_the_file_directory() {
        let dir = std::env::temp_dir().join(format!("tower-cdn-config-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("keys")).unwrap();
        std::fs::write(dir.join("keys/h1.secret"), [7u8; 32]).unwrap();
        let text = "[key_groups.members]\n\
                    keys = [{ id = \"H1\", hmac_secret_file = \"keys/h1.secret\" }]\n";
        let loaded = ConfigLayer::from_file_text(&dir.join("edge.toml"), text.to_owned());
        // From the working directory (the crate's), the same text finds no key file.
        let elsewhere = ConfigLayer::from_toml(text).unwrap_err();
        let missing = ConfigLayer::from_file_text(&dir.join("sub/edge.toml"), text.to_owned())
            .unwrap_err()
            .to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(loaded.is_ok(), "{:?}", loaded.err());
        assert!(elsewhere.contains("`keys/h1.secret`"), "{elsewhere}");
        let expected = dir.join("sub/keys/h1.secret");
        assert!(
            missing.contains(&format!("`{}`", expected.display())),
            "the error names the path read: {missing}"
        );
    }

    #[test]
    fn listen_addresses() {
        assert_eq!(
            parse_socket_addr("localhost:8080"),
            Ok(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)))
        );
        assert_eq!(
            parse_socket_addr("[::1]:8443"),
            Ok("[::1]:8443".parse().unwrap())
        );
        let err = parse_socket_addr("example.com:80").unwrap_err();
        assert!(
            err.contains("127.0.0.1:8080") && err.contains("IP address"),
            "{err}"
        );
        assert!(parse_socket_addr("localhost").is_err());
        assert!(parse_socket_addr("localhost:99999").is_err());
        let config = ConfigLayer::from_toml("listen = \"localhost:9000\"\n")
            .unwrap()
            .resolve()
            .unwrap();
        assert_eq!(config.listen, "127.0.0.1:9000".parse().unwrap());
    }

    #[test]
    fn an_origin_with_a_path_points_to_the_path_key() {
        let err = parse_origin("http://h.test:8080/public").unwrap_err();
        assert!(err.contains("path = \"/public\""), "{err}");
        assert!(err.contains("http://h.test:8080"), "{err}");
    }

    #[test]
    fn origins() {
        assert!(parse_origin("http://127.0.0.1:9000").is_ok());
        assert!(parse_origin("http://origin.example/").is_ok());
        assert!(parse_origin("https://origin.example").is_ok());
        assert!(parse_origin("ftp://origin.example").is_err());
        assert!(parse_origin("origin.example:80").is_err());
        assert!(parse_origin("http://origin.example/app").is_err());
        assert!(parse_origin("http://user:pw@origin.example").is_err());
        assert!(parse_origin("http://origin.example:808O").is_err());
        assert!(parse_origin("http://origin.example:99999").is_err());
        assert!(parse_origin("http://origin.example:0").is_err());
        assert!(parse_origin("http://[::1]:8080").is_ok());
        assert!(parse_origin("http://[::1]").is_ok());
    }

    #[test]
    fn file_values_and_precedence() {
        let file = ConfigLayer::from_toml(
            "origin = \"http://127.0.0.1:9000\"\nlisten = \"0.0.0.0:80\"\nmax_bytes = 1048576\n",
        )
        .unwrap();
        let flags = ConfigLayer {
            listen: Some("127.0.0.1:81".parse().unwrap()),
            ..ConfigLayer::default()
        };
        let config = flags.or(file).resolve().unwrap();
        assert_eq!(config.listen, "127.0.0.1:81".parse().unwrap());
        assert_eq!(config.origin.unwrap(), "http://127.0.0.1:9000");
        assert_eq!(config.max_bytes, Some(1_048_576));
        assert_eq!(config.origin_timeout, Duration::from_secs(30));
    }

    #[test]
    fn tls_settings_from_the_file() {
        let config = ConfigLayer::from_toml(
            "https_listen = \"127.0.0.1:8443\"\ntls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n\
             origin = \"https://origin.example\"\norigin_ca = \"ca.pem\"\n\
             max_request_body = 1024\n",
        )
        .unwrap()
        .resolve()
        .unwrap();
        assert_eq!(config.https_listen, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(config.tls_cert, Some(PathBuf::from("cert.pem")));
        assert_eq!(config.tls_key, Some(PathBuf::from("key.pem")));
        assert_eq!(config.origin_ca, Some(PathBuf::from("ca.pem")));
        assert_eq!(config.max_request_body, Some(1024));
    }

    #[test]
    fn file_errors_name_line_and_setting() {
        let err = ConfigLayer::from_toml("listen = \"127.0.0.1:8080\"\norigin = \"ftp://x\"\n")
            .unwrap_err();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("origin"), "{err}");

        let err = ConfigLayer::from_toml("max_bytes = \"lots\"\n").unwrap_err();
        assert!(err.contains("line 1") && err.contains("max_bytes"), "{err}");

        let err = ConfigLayer::from_toml("\n\norgin = \"http://x\"\n").unwrap_err();
        assert!(err.contains("line 3") && err.contains("orgin"), "{err}");
    }
}
