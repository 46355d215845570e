//! The site part of the configuration file: named origins, origin groups, key groups,
//! behaviors and distributions, turned into [`OriginConfig`], [`OriginGroupConfig`] and
//! [`DistributionConfig`].
//!
//! Values are checked while the file is parsed, so `toml` names the line and key of a bad
//! one. What only the whole file can tell (a behavior naming an origin nobody declared, a
//! name used twice, a group whose members do not exist) is checked here, and the error names
//! the line and the field the same way.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::Range,
    path::PathBuf,
    time::Duration,
};

use http::{header, HeaderName, HeaderValue, StatusCode, Uri};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::{
    access_config::{
        GeoSetting, KeyGroupSetting, OriginConcurrencySetting, RateLimitSetting, TrustedProxies,
    },
    config::{check_port, de_duration, parse_origin},
    hosts::HostPattern,
    DistributionConfig, OriginConfig, OriginGroupConfig, OriginProtocol, ViewerProtocol,
};
use crate::{
    AllowedMethods, Behavior, CachePolicy, OriginRequestPolicy, PathPattern, SetCookie,
    ViewerProtocolPolicy,
};

/// The site sections of one file, as parsed.
#[derive(Debug, Default)]
pub(crate) struct SiteToml {
    pub(crate) origins: BTreeMap<String, Spanned<OriginToml>>,
    pub(crate) origin_groups: BTreeMap<String, Spanned<OriginGroupToml>>,
    pub(crate) key_groups: BTreeMap<String, KeyGroupSetting>,
    pub(crate) distributions: Vec<Spanned<DistributionToml>>,
}

/// What one `[[distributions]]` entry sets. The file's top level holds the same keys (but
/// `name`, `hosts` and the certificate) for the distribution that serves every host when no
/// distributions are declared.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct DistributionToml {
    pub(crate) name: Option<String>,
    pub(crate) hosts: Vec<Spanned<String>>,
    #[serde(deserialize_with = "super::config::de_path")]
    pub(crate) tls_cert: Option<PathBuf>,
    #[serde(deserialize_with = "super::config::de_path")]
    pub(crate) tls_key: Option<PathBuf>,
    #[serde(deserialize_with = "super::config::de_size")]
    pub(crate) max_bytes: Option<u64>,
    pub(crate) behaviors: Vec<Spanned<BehaviorToml>>,
    pub(crate) default_behavior: Option<Spanned<BehaviorToml>>,
    pub(crate) default_root_object: Option<String>,
    pub(crate) geo_restriction: Option<GeoSetting>,
    pub(crate) rate_limit: Option<RateLimitSetting>,
    pub(crate) origin_concurrency: Option<OriginConcurrencySetting>,
    pub(crate) trusted_proxies: Option<TrustedProxies>,
}

impl DistributionToml {
    /// Whether any per-distribution setting is present.
    fn has_settings(&self) -> bool {
        !self.behaviors.is_empty()
            || self.default_behavior.is_some()
            || self.default_root_object.is_some()
            || self.geo_restriction.is_some()
            || self.rate_limit.is_some()
            || self.origin_concurrency.is_some()
            || self.trusted_proxies.is_some()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginToml {
    #[serde(deserialize_with = "de_url")]
    url: Uri,
    protocol: Option<OriginProtocol>,
    #[serde(default, deserialize_with = "de_port")]
    http_port: Option<u16>,
    #[serde(default, deserialize_with = "de_port")]
    https_port: Option<u16>,
    #[serde(default, deserialize_with = "de_path_prefix")]
    path: Option<String>,
    #[serde(default, deserialize_with = "de_host")]
    host: Option<String>,
    #[serde(default, deserialize_with = "de_headers")]
    headers: Vec<(HeaderName, HeaderValue)>,
    #[serde(default, deserialize_with = "de_duration")]
    connect_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    response_timeout: Option<Duration>,
    #[serde(default, deserialize_with = "de_duration")]
    keep_alive: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct OriginGroupToml {
    primary: Spanned<String>,
    secondary: Spanned<String>,
    #[serde(default, deserialize_with = "de_statuses")]
    failover_statuses: Option<Vec<StatusCode>>,
}

/// One `[[behaviors]]` entry or a `[default_behavior]`.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct BehaviorToml {
    path: Option<Spanned<String>>,
    origin: Option<Spanned<String>>,
    cache_policy: Option<CachePolicyName>,
    #[serde(deserialize_with = "de_duration")]
    min_ttl: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    default_ttl: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    max_ttl: Option<Duration>,
    #[serde(deserialize_with = "de_duration")]
    error_caching_min_ttl: Option<Duration>,
    allowed_methods: Option<MethodsName>,
    compress: Option<bool>,
    set_cookie: Option<SetCookieName>,
    viewer_protocol: Option<ViewerProtocol>,
    trusted_key_group: Option<Spanned<String>>,
    #[serde(deserialize_with = "de_duration")]
    clock_skew: Option<Duration>,
    origin_request_policy: Option<OriginRequestSetting>,
}

/// `origin_request_policy`: `"key-only"` (the default: the origin gets the query parameters
/// and cookies the cache key holds), `"all-viewer"` (every parameter and cookie), or a table
/// naming what else to forward, on top of key-only (or of all-viewer with
/// `all_viewer = true`):
///
/// ```toml
/// [[behaviors]]
/// path = "/api/*"
/// cache_policy = "disabled"
/// origin_request_policy = { cookies = ["session"], headers = ["x-http-method-override"] }
/// ```
///
/// What is forwarded outside the cache key is the operator's choice: the origin must not vary
/// its answer on it where responses are cached.
#[derive(Debug, PartialEq, Eq)]
struct OriginRequestSetting(OriginRequestPolicy);

/// The table form of [`OriginRequestSetting`].
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ForwardToml {
    #[serde(default)]
    all_viewer: bool,
    #[serde(default)]
    query_strings: Vec<String>,
    #[serde(default)]
    cookies: Vec<String>,
    #[serde(default, deserialize_with = "de_header_names")]
    headers: Vec<HeaderName>,
}

impl<'de> Deserialize<'de> for OriginRequestSetting {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct Setting;
        impl<'de> serde::de::Visitor<'de> for Setting {
            type Value = OriginRequestPolicy;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "\"key-only\", \"all-viewer\", or a table of query_strings, cookies and \
                     headers to forward",
                )
            }

            fn visit_str<E: serde::de::Error>(self, name: &str) -> Result<Self::Value, E> {
                match name {
                    "key-only" => Ok(OriginRequestPolicy::key_only()),
                    "all-viewer" => Ok(OriginRequestPolicy::all_viewer()),
                    _ => Err(E::invalid_value(serde::de::Unexpected::Str(name), &self)),
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Self::Value, A::Error> {
                let table =
                    ForwardToml::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                let base = if table.all_viewer {
                    OriginRequestPolicy::all_viewer()
                } else {
                    OriginRequestPolicy::key_only()
                };
                Ok(base
                    .forward_query_strings(table.query_strings)
                    .forward_cookies(table.cookies)
                    .forward_headers(table.headers))
            }
        }
        de.deserialize_any(Setting).map(Self)
    }
}

fn de_header_names<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<HeaderName>, D::Error> {
    Vec::<String>::deserialize(de)?
        .into_iter()
        .map(|name| {
            HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| serde::de::Error::custom(format!("`{name}` is not a header name")))
        })
        .collect()
}

/// CloudFront's managed cache policies by name.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum CachePolicyName {
    /// RFC 9111 as the origin says (the default).
    Rfc,
    /// Caches for a day unless the origin says otherwise, up to a year.
    Optimized,
    /// Nothing is cached.
    Disabled,
}

/// `set_cookie`: what is done with responses that set cookies.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum SetCookieName {
    /// Not stored (the default).
    Pass,
    /// Stored without `Set-Cookie`.
    Strip,
}

/// `allowed_methods`: CloudFront's three method sets, as the file and the command line
/// name them.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum MethodsName {
    /// GET and HEAD (the default).
    GetHead,
    /// GET, HEAD and OPTIONS.
    GetHeadOptions,
    /// GET, HEAD, OPTIONS, PUT, POST, PATCH and DELETE.
    All,
}

impl MethodsName {
    /// Parses a name as the command line gives it.
    pub(crate) fn parse(text: &str) -> Result<AllowedMethods, String> {
        match text {
            "get-head" => Ok(Self::GetHead.allowed()),
            "get-head-options" => Ok(Self::GetHeadOptions.allowed()),
            "all" => Ok(Self::All.allowed()),
            _ => Err(format!(
                "`{text}` is not a method set: get-head (GET, HEAD), get-head-options \
                 (GET, HEAD, OPTIONS) or all (GET, HEAD, OPTIONS, PUT, POST, PATCH, DELETE)"
            )),
        }
    }

    pub(crate) fn allowed(self) -> AllowedMethods {
        match self {
            Self::GetHead => AllowedMethods::get_head(),
            Self::GetHeadOptions => AllowedMethods::get_head_options(),
            Self::All => AllowedMethods::all(),
        }
    }
}

/// The site as the server uses it.
#[derive(Debug, Default)]
pub(crate) struct Site {
    pub(crate) origins: Vec<OriginConfig>,
    pub(crate) origin_groups: Vec<OriginGroupConfig>,
    pub(crate) distributions: Vec<DistributionConfig>,
}

/// A file's site sections and its top-level distribution settings, with the text they came
/// from (for line numbers).
#[derive(Debug, Default)]
pub(crate) struct SiteSource {
    pub(crate) text: String,
    pub(crate) site: SiteToml,
    pub(crate) top: DistributionToml,
}

/// An error at a place in the file.
struct At {
    span: Range<usize>,
    field: String,
    message: String,
}

fn at(span: Range<usize>, field: impl Into<String>, message: impl Into<String>) -> At {
    At {
        span,
        field: field.into(),
        message: message.into(),
    }
}

impl SiteSource {
    /// Checks the references between sections and builds the site. `viewer_protocol` and
    /// `allowed_methods` are what behaviors that set none get.
    pub(crate) fn build(
        self,
        viewer_protocol: ViewerProtocol,
        allowed_methods: AllowedMethods,
    ) -> Result<Site, String> {
        let Self { text, site, top } = self;
        let defaults = Defaults {
            viewer_protocol,
            allowed_methods,
        };
        Self::build_inner(site, top, defaults).map_err(|err| {
            let line = text[..err.span.start.min(text.len())].matches('\n').count() + 1;
            format!("line {line}, `{}`: {}", err.field, err.message)
        })
    }

    fn build_inner(site: SiteToml, top: DistributionToml, defaults: Defaults) -> Result<Site, At> {
        let SiteToml {
            origins,
            origin_groups,
            key_groups,
            distributions,
        } = site;
        let names = Names::check(&origins, &origin_groups)?;

        let origin_configs = origins
            .into_iter()
            .map(|(name, origin)| origin.into_inner().into_config(name))
            .collect();
        let group_configs = origin_groups
            .into_iter()
            .map(|(name, group)| {
                let group = group.into_inner();
                let mut config = OriginGroupConfig::new(
                    name,
                    group.primary.into_inner(),
                    group.secondary.into_inner(),
                );
                if let Some(statuses) = group.failover_statuses {
                    config = config.failover_statuses(statuses);
                }
                config
            })
            .collect();

        let context = Context {
            names: &names,
            key_groups: &key_groups,
            defaults,
        };
        let mut built = Vec::new();
        if distributions.is_empty() {
            let mut top = top;
            top.name = Some("default".to_owned());
            built.push(context.distribution(top, 0..0, "")?);
        } else {
            if top.has_settings() {
                let span = top
                    .behaviors
                    .first()
                    .map(Spanned::span)
                    .or_else(|| top.default_behavior.as_ref().map(Spanned::span))
                    .unwrap_or(0..0);
                return Err(at(
                    span,
                    "distributions",
                    "with [[distributions]] declared, behaviors, default_behavior, \
                     default_root_object, geo_restriction, rate_limit, origin_concurrency and \
                     trusted_proxies go inside each distribution",
                ));
            }
            let mut seen_names = BTreeSet::new();
            let mut seen_hosts = BTreeMap::new();
            for (index, distribution) in distributions.into_iter().enumerate() {
                let span = distribution.span();
                let mut distribution = distribution.into_inner();
                let field = format!("distributions[{index}]");
                let name = distribution
                    .name
                    .get_or_insert_with(|| {
                        // Named after its first host (`*` spelled `_`), unless it says.
                        distribution.hosts.first().map_or_else(
                            || format!("distribution-{index}"),
                            |h| h.get_ref().replace('*', "_"),
                        )
                    })
                    .clone();
                if !seen_names.insert(name.clone()) {
                    return Err(at(
                        span,
                        format!("{field}.name"),
                        format!("two distributions are named `{name}`"),
                    ));
                }
                if distribution.hosts.is_empty() {
                    return Err(at(
                        span,
                        format!("{field}.hosts"),
                        "a distribution needs its host names (`*` for every other host)",
                    ));
                }
                for host in &distribution.hosts {
                    let key = host.get_ref().to_ascii_lowercase();
                    if let Some(other) = seen_hosts.insert(key, name.clone()) {
                        return Err(at(
                            host.span(),
                            format!("{field}.hosts"),
                            format!(
                                "`{}` is already served by distribution `{other}`",
                                host.get_ref()
                            ),
                        ));
                    }
                }
                built.push(context.distribution(distribution, span, &format!("{field}."))?);
            }
        }
        Ok(Site {
            origins: origin_configs,
            origin_groups: group_configs,
            distributions: built,
        })
    }
}

/// The declared origin and group names.
struct Names {
    origins: BTreeSet<String>,
    groups: BTreeSet<String>,
}

impl Names {
    fn check(
        origins: &BTreeMap<String, Spanned<OriginToml>>,
        groups: &BTreeMap<String, Spanned<OriginGroupToml>>,
    ) -> Result<Self, At> {
        let names = Self {
            origins: origins.keys().cloned().collect(),
            groups: groups.keys().cloned().collect(),
        };
        for (name, group) in groups {
            let field = format!("origin_groups.{name}");
            if names.origins.contains(name) {
                return Err(at(
                    group.span(),
                    field,
                    format!("`{name}` is already the name of an origin"),
                ));
            }
            let group = group.get_ref();
            for (role, member) in [("primary", &group.primary), ("secondary", &group.secondary)] {
                if !names.origins.contains(member.get_ref()) {
                    return Err(at(
                        member.span(),
                        format!("{field}.{role}"),
                        format!(
                            "`{}` is not a declared origin ({})",
                            member.get_ref(),
                            names.known()
                        ),
                    ));
                }
            }
            if group.primary.get_ref() == group.secondary.get_ref() {
                return Err(at(
                    group.secondary.span(),
                    format!("{field}.secondary"),
                    "the secondary must be another origin than the primary",
                ));
            }
        }
        Ok(names)
    }

    fn contains(&self, name: &str) -> bool {
        self.origins.contains(name) || self.groups.contains(name)
    }

    /// The single origin or group, when only one is declared.
    fn only(&self) -> Option<&str> {
        let mut all = self.origins.iter().chain(&self.groups);
        match (all.next(), all.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    fn known(&self) -> String {
        if self.origins.is_empty() && self.groups.is_empty() {
            return "none is declared: add an [origins.NAME] table".to_owned();
        }
        let list: Vec<&str> = self
            .origins
            .iter()
            .chain(&self.groups)
            .map(String::as_str)
            .collect();
        format!("declared: {}", list.join(", "))
    }
}

/// What behaviors that set none get: the top-level settings (or flags) of the same name.
#[derive(Clone, Copy)]
struct Defaults {
    viewer_protocol: ViewerProtocol,
    allowed_methods: AllowedMethods,
}

struct Context<'a> {
    names: &'a Names,
    key_groups: &'a BTreeMap<String, KeyGroupSetting>,
    defaults: Defaults,
}

impl Context<'_> {
    /// `span` and `prefix` place errors that have no value of their own to point at: the
    /// `[[distributions]]` entry and its field path (both empty at the top level).
    fn distribution(
        &self,
        toml: DistributionToml,
        span: Range<usize>,
        prefix: &str,
    ) -> Result<DistributionConfig, At> {
        let whole = span;
        let DistributionToml {
            name,
            hosts,
            tls_cert,
            tls_key,
            max_bytes,
            behaviors,
            default_behavior,
            default_root_object,
            geo_restriction,
            rate_limit,
            origin_concurrency,
            trusted_proxies,
        } = toml;
        let name = name.unwrap_or_default();
        let who = if hosts.is_empty() {
            String::new()
        } else {
            format!("distribution `{name}`: ")
        };
        let mut hosts_checked = Vec::with_capacity(hosts.len());
        for host in hosts {
            let span = host.span();
            let host = host.into_inner();
            HostPattern::parse(&host)
                .map_err(|message| at(span, format!("{prefix}hosts"), message))?;
            hosts_checked.push(host);
        }
        if tls_cert.is_some() != tls_key.is_some() {
            return Err(at(
                whole.clone(),
                format!("{prefix}tls_cert"),
                format!("{who}tls_cert and tls_key go together"),
            ));
        }

        // The default behavior's origin is where behaviors that name none go.
        let default = default_behavior;
        let default_span = default.as_ref().map_or(whole.clone(), Spanned::span);
        let default = default.map(Spanned::into_inner).unwrap_or_default();
        if let Some(path) = &default.path {
            return Err(at(
                path.span(),
                format!("{prefix}default_behavior.path"),
                "the default behavior serves every path no behavior matches; it has no path",
            ));
        }
        let default_origin = match &default.origin {
            Some(origin) => self.origin(origin, &format!("{prefix}default_behavior.origin"))?,
            None if self.names.origins.is_empty() && self.names.groups.is_empty() => None,
            None => Some(self.names.only().map(str::to_owned).ok_or_else(|| {
                at(
                    default_span.clone(),
                    format!("{prefix}default_behavior.origin"),
                    format!(
                        "{who}several origins are declared, so the default behavior must \
                         name one ({})",
                        self.names.known()
                    ),
                )
            })?),
        };

        let mut config = DistributionConfig::new(name);
        config.hosts = hosts_checked;
        config.tls_cert = tls_cert;
        config.tls_key = tls_key;
        config.max_bytes = max_bytes;
        config.default_root_object = default_root_object;
        for (index, behavior) in behaviors.into_iter().enumerate() {
            let span = behavior.span();
            let behavior = behavior.into_inner();
            let field = format!("{prefix}behaviors[{index}]");
            let Some(path) = behavior.path.clone() else {
                return Err(at(
                    span,
                    format!("{field}.path"),
                    "a behavior needs a path pattern",
                ));
            };
            PathPattern::new(path.get_ref())
                .map_err(|err| at(path.span(), format!("{field}.path"), err.to_string()))?;
            let built = self.behavior(behavior, &field, default_origin.as_deref())?;
            config.behaviors.push((path.into_inner(), built));
        }
        config.default_behavior = self.behavior(
            default,
            &format!("{prefix}default_behavior"),
            default_origin.as_deref(),
        )?;

        if let Some(geo) = geo_restriction {
            config = config.configure_layer(move |builder| geo.apply(builder));
        }
        if let Some(limit) = rate_limit {
            config = config.configure_layer(move |builder| builder.rate_limit(limit.rate_limit()));
        }
        if let Some(cap) = origin_concurrency {
            config = config.configure_layer(move |builder| {
                builder.origin_concurrency(cap.origin_concurrency())
            });
        }
        if let Some(proxies) = trusted_proxies {
            config = config.configure_layer(move |builder| proxies.apply(builder));
        }
        Ok(config)
    }

    /// The origin or group `name` refers to.
    fn origin(&self, name: &Spanned<String>, field: &str) -> Result<Option<String>, At> {
        if self.names.contains(name.get_ref()) {
            Ok(Some(name.get_ref().clone()))
        } else {
            Err(at(
                name.span(),
                field,
                format!(
                    "no origin or origin group is named `{}` ({})",
                    name.get_ref(),
                    self.names.known()
                ),
            ))
        }
    }

    fn behavior(
        &self,
        toml: BehaviorToml,
        field: &str,
        default_origin: Option<&str>,
    ) -> Result<Behavior, At> {
        let mut behavior = Behavior::new();
        let origin = match &toml.origin {
            Some(origin) => self.origin(origin, &format!("{field}.origin"))?,
            None => default_origin.map(str::to_owned),
        };
        if let Some(origin) = origin {
            behavior = behavior.target_origin(origin);
        }
        let mut policy = match toml.cache_policy {
            None | Some(CachePolicyName::Rfc) => CachePolicy::rfc(),
            Some(CachePolicyName::Optimized) => CachePolicy::caching_optimized(),
            Some(CachePolicyName::Disabled) => CachePolicy::caching_disabled(),
        };
        if let Some(ttl) = toml.min_ttl {
            policy = policy.min_ttl(ttl);
        }
        if let Some(ttl) = toml.default_ttl {
            policy = policy.default_ttl(ttl);
        }
        if let Some(ttl) = toml.max_ttl {
            policy = policy.max_ttl(ttl);
        }
        if let Some(ttl) = toml.error_caching_min_ttl {
            policy = policy.error_caching_min_ttl(ttl);
        }
        behavior = behavior.cache_policy(policy);
        behavior = behavior.allowed_methods(
            toml.allowed_methods
                .map_or(self.defaults.allowed_methods, MethodsName::allowed),
        );
        if let Some(compress) = toml.compress {
            behavior = behavior.compress(compress);
        }
        if let Some(set_cookie) = toml.set_cookie {
            behavior = behavior.set_cookie(match set_cookie {
                SetCookieName::Pass => SetCookie::pass(),
                SetCookieName::Strip => SetCookie::strip(),
            });
        }
        behavior = behavior.viewer_protocol_policy(viewer_policy(
            toml.viewer_protocol
                .unwrap_or(self.defaults.viewer_protocol),
        ));
        if let Some(group) = &toml.trusted_key_group {
            let Some(keys) = self.key_groups.get(group.get_ref()) else {
                let known: Vec<&str> = self.key_groups.keys().map(String::as_str).collect();
                return Err(at(
                    group.span(),
                    format!("{field}.trusted_key_group"),
                    format!(
                        "no key group is named `{}` (declared: {})",
                        group.get_ref(),
                        if known.is_empty() {
                            "none".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                ));
            };
            behavior = behavior.trusted_key_group(keys.key_group());
        }
        if let Some(skew) = toml.clock_skew {
            behavior = behavior.clock_skew(skew);
        }
        if let Some(OriginRequestSetting(policy)) = toml.origin_request_policy {
            behavior = behavior.origin_request_policy(policy);
        }
        Ok(behavior)
    }
}

/// The library's policy for a viewer protocol setting.
pub(crate) fn viewer_policy(protocol: ViewerProtocol) -> ViewerProtocolPolicy {
    match protocol {
        ViewerProtocol::AllowAll => ViewerProtocolPolicy::allow_all(),
        ViewerProtocol::RedirectToHttps => ViewerProtocolPolicy::redirect_to_https(),
        ViewerProtocol::HttpsOnly => ViewerProtocolPolicy::https_only(),
    }
}

impl OriginToml {
    fn into_config(self, name: String) -> OriginConfig {
        let mut config = OriginConfig::new(name, self.url);
        config.protocol = self.protocol;
        config.http_port = self.http_port;
        config.https_port = self.https_port;
        config.path_prefix = self.path;
        config.host = self.host;
        config.headers = self.headers;
        config.connect_timeout = self.connect_timeout;
        config.response_timeout = self.response_timeout;
        config.keep_alive = self.keep_alive;
        config
    }
}

fn de_url<'de, D: Deserializer<'de>>(de: D) -> Result<Uri, D::Error> {
    let text = String::deserialize(de)?;
    parse_origin(&text).map_err(serde::de::Error::custom)
}

fn de_port<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u16>, D::Error> {
    match u16::deserialize(de)? {
        0 => Err(serde::de::Error::custom("0 is not a port")),
        port => Ok(Some(port)),
    }
}

fn de_path_prefix<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    check_path_prefix(&text).map_err(serde::de::Error::custom)?;
    Ok(Some(text.trim_end_matches('/').to_owned()).filter(|p| !p.is_empty()))
}

/// An origin path: `/` and path segments, no query, fragment or spaces.
pub(crate) fn check_path_prefix(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!("origin path `{text}` must start with /"));
    }
    if text.contains(['?', '#']) || text.parse::<http::uri::PathAndQuery>().is_err() {
        return Err(format!(
            "origin path `{text}` must be a plain path, without query or fragment"
        ));
    }
    Ok(())
}

fn de_host<'de, D: Deserializer<'de>>(de: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(de)?;
    match text.parse::<http::uri::Authority>() {
        Ok(authority)
            if authority.as_str() == text && !text.contains('@') && check_port(&text).is_ok() =>
        {
            Ok(Some(text))
        }
        _ => Err(serde::de::Error::custom(format!(
            "`{text}` is not a host name (with an optional :port)"
        ))),
    }
}

fn de_headers<'de, D: Deserializer<'de>>(
    de: D,
) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
    let map = BTreeMap::<String, String>::deserialize(de)?;
    let mut seen = BTreeSet::new();
    map.into_iter()
        .map(|(name, value)| {
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            if header == header::HOST
                || header == header::CONTENT_LENGTH
                || crate::rfc::conditional::is_hop_by_hop(&header, &http::HeaderMap::new())
            {
                return Err(format!(
                    "`{name}` cannot be set as a custom origin header (use `host` for Host)"
                ));
            }
            if !seen.insert(header.as_str().to_owned()) {
                return Err(format!("`{name}` is set twice (header names ignore case)"));
            }
            let value = HeaderValue::from_str(&value)
                .map_err(|_| format!("the value of `{name}` is not a valid header value"))?;
            Ok((header, value))
        })
        .collect::<Result<_, String>>()
        .map_err(serde::de::Error::custom)
}

fn de_statuses<'de, D: Deserializer<'de>>(de: D) -> Result<Option<Vec<StatusCode>>, D::Error> {
    let codes = Vec::<u16>::deserialize(de)?;
    codes
        .into_iter()
        .map(|code| match StatusCode::from_u16(code) {
            Ok(status) if status.is_client_error() || status.is_server_error() => Ok(status),
            _ => Err(serde::de::Error::custom(format!(
                "{code} is not an error status (400-599)"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(toml: &str) -> Result<Option<OriginRequestPolicy>, String> {
        toml::from_str::<BehaviorToml>(toml)
            .map(|b| b.origin_request_policy.map(|p| p.0))
            .map_err(|err| err.to_string())
    }

    #[test]
    fn origin_request_policy_forms() {
        assert_eq!(policy(""), Ok(None));
        assert_eq!(
            policy("origin_request_policy = \"key-only\""),
            Ok(Some(OriginRequestPolicy::key_only()))
        );
        assert_eq!(
            policy("origin_request_policy = \"all-viewer\""),
            Ok(Some(OriginRequestPolicy::all_viewer()))
        );
        let named = OriginRequestPolicy::key_only()
            .forward_query_strings(["page"])
            .forward_cookies(["session"])
            .forward_headers([HeaderName::from_static("x-http-method-override")]);
        assert_eq!(
            policy(
                "origin_request_policy = { query_strings = [\"page\"], cookies = [\"session\"], \
                 headers = [\"X-HTTP-Method-Override\"] }"
            ),
            Ok(Some(named.clone()))
        );
        assert_eq!(
            policy(
                "[origin_request_policy]\nquery_strings = [\"page\"]\ncookies = [\"session\"]\n\
                 headers = [\"x-http-method-override\"]\n"
            ),
            Ok(Some(named))
        );
        assert_eq!(
            policy("origin_request_policy = { all_viewer = true, headers = [\"true-client-ip\"] }"),
            Ok(Some(OriginRequestPolicy::all_viewer().forward_headers([
                HeaderName::from_static("true-client-ip")
            ])))
        );
    }

    #[test]
    fn origin_request_policy_errors_name_the_setting() {
        for (toml, expected) in [
            ("origin_request_policy = \"everything\"", "key-only"),
            (
                "origin_request_policy = { headers = [\"bad name\"] }",
                "not a header name",
            ),
            (
                "origin_request_policy = { querystrings = [\"a\"] }",
                "querystrings",
            ),
            ("origin_request_policy = 1", "key-only"),
        ] {
            let err = policy(toml).unwrap_err();
            assert!(
                err.contains(expected) && err.contains("origin_request_policy"),
                "{toml}: {err}"
            );
        }
    }
}
