//! Several origins behind one edge: each request goes to the origin (or origin group) its
//! behavior targets.

use std::{
    collections::HashMap,
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use rustls::ClientConfig;
use tower_service::Service;

use super::{
    proxy::{OriginBody, ProxyError, ProxyService},
    OriginGroupConfig, ServerConfig, ServerError,
};
use crate::{BoxError, OriginGroup, TargetOrigin};

type BoxFuture<T> = Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// One origin, or a failover pair of them.
#[derive(Clone, Debug)]
enum Target {
    Origin(ProxyService),
    Group(OriginGroup<ProxyService, ProxyService>),
}

impl Target {
    fn call(
        &self,
        request: Request<OriginBody>,
    ) -> BoxFuture<Result<Response<Incoming>, ProxyError>> {
        match self {
            Self::Origin(proxy) => proxy.clone().call(request),
            Self::Group(group) => {
                let answer = group.clone().call(request);
                Box::pin(async move { answer.await.map_err(ProxyError::from_boxed) })
            }
        }
    }

    /// The longest this target may take to start answering.
    fn timeout(&self) -> Duration {
        match self {
            Self::Origin(proxy) => proxy.timeout(),
            Self::Group(group) => group.primary().timeout() + group.secondary().timeout(),
        }
    }
}

/// Every origin and group of the server, by name; shared by all distributions so each origin
/// has one connection pool.
#[derive(Debug, Default)]
pub(crate) struct Targets {
    by_name: HashMap<Arc<str>, Target>,
}

impl Targets {
    /// Builds the proxies for `config.origins` (plus `extra`, the single or demo origin) and
    /// the groups over them.
    pub(crate) fn build(
        config: &ServerConfig,
        extra: Option<super::OriginConfig>,
        tls: &ClientConfig,
    ) -> Result<Self, ServerError> {
        let invalid = ServerError::InvalidConfig;
        let mut by_name = HashMap::new();
        for origin in config.origins.iter().chain(&extra) {
            super::config::check_origin(&origin.url)
                .map_err(|err| invalid(format!("origin `{}`: {err}", origin.name)))?;
            let proxy = ProxyService::new(origin, config, tls.clone())?;
            if by_name
                .insert(origin.name.as_str().into(), Target::Origin(proxy))
                .is_some()
            {
                return Err(invalid(format!("two origins are named `{}`", origin.name)));
            }
        }
        for group in &config.origin_groups {
            let target = Target::Group(Self::group(&by_name, group)?);
            if by_name.insert(group.name.as_str().into(), target).is_some() {
                return Err(invalid(format!(
                    "origin group `{}` has the name of another origin or group",
                    group.name
                )));
            }
        }
        Ok(Self { by_name })
    }

    fn group(
        by_name: &HashMap<Arc<str>, Target>,
        group: &OriginGroupConfig,
    ) -> Result<OriginGroup<ProxyService, ProxyService>, ServerError> {
        let member = |name: &str| match by_name.get(name) {
            Some(Target::Origin(proxy)) => Ok(proxy.clone()),
            _ => Err(ServerError::InvalidConfig(format!(
                "origin group `{}`: `{name}` is not a declared origin",
                group.name
            ))),
        };
        let (primary, secondary) = (member(&group.primary)?, member(&group.secondary)?);
        if group.primary == group.secondary {
            return Err(ServerError::InvalidConfig(format!(
                "origin group `{}`: the secondary must be another origin than the primary",
                group.name
            )));
        }
        let mut builder = OriginGroup::builder()
            .names(primary.name().clone(), secondary.name().clone())
            .no_statuses();
        for status in &group.failover_statuses {
            builder = builder.on_status(*status);
        }
        Ok(builder.build(primary, secondary))
    }

    /// The longest any target may take to start answering.
    pub(crate) fn max_timeout(&self) -> Duration {
        self.by_name
            .values()
            .map(Target::timeout)
            .max()
            .unwrap_or_default()
    }

    /// Per-origin and per-group counters in the Prometheus text format.
    pub(crate) fn to_prometheus(&self) -> String {
        use std::fmt::Write as _;
        let mut names: Vec<&Arc<str>> = self.by_name.keys().collect();
        names.sort_unstable();
        let mut requests = String::new();
        let mut failures = String::new();
        let mut failovers = String::new();
        for name in names {
            let label = name
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            match &self.by_name[name] {
                Target::Origin(proxy) => {
                    let (sent, failed) = proxy.counts();
                    let _ = writeln!(
                        requests,
                        "tower_cdn_origin_requests_by_origin_total{{origin=\"{label}\"}} {sent}"
                    );
                    let _ = writeln!(
                        failures,
                        "tower_cdn_origin_failures_by_origin_total{{origin=\"{label}\"}} {failed}"
                    );
                }
                Target::Group(group) => {
                    let counts = group.metrics();
                    let _ = writeln!(
                        failovers,
                        "tower_cdn_origin_group_failovers_total{{group=\"{label}\"}} {}",
                        counts.failovers
                    );
                }
            }
        }
        let mut out = String::new();
        for (name, help, lines) in [
            (
                "origin_requests_by_origin_total",
                "Requests sent to each named origin.",
                requests,
            ),
            (
                "origin_failures_by_origin_total",
                "Requests to each named origin that got no response.",
                failures,
            ),
            (
                "origin_group_failovers_total",
                "Requests each origin group replayed on its secondary.",
                failovers,
            ),
        ] {
            if !lines.is_empty() {
                let _ = write!(
                    out,
                    "# HELP tower_cdn_{name} {help}\n# TYPE tower_cdn_{name} counter\n{lines}"
                );
            }
        }
        out
    }

    /// Whether `name` is an origin or a group.
    pub(crate) fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// The only target, when there is exactly one.
    pub(crate) fn only(&self) -> Option<&str> {
        let mut names = self.by_name.keys();
        match (names.next(), names.next()) {
            (Some(only), None) => Some(only),
            _ => None,
        }
    }

    /// The declared names, for error messages.
    pub(crate) fn names(&self) -> String {
        let mut names: Vec<&str> = self.by_name.keys().map(|name| &**name).collect();
        names.sort_unstable();
        names.join(", ")
    }
}

/// Sends a distribution's origin requests to the target their behavior names (the
/// [`TargetOrigin`] extension the layer sets), or to the distribution's default.
#[derive(Clone)]
pub(crate) struct OriginRouter {
    targets: Arc<Targets>,
    default: Arc<str>,
}

impl fmt::Debug for OriginRouter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OriginRouter")
            .field("default", &self.default)
            .finish_non_exhaustive()
    }
}

impl OriginRouter {
    pub(crate) fn new(targets: Arc<Targets>, default: Arc<str>) -> Self {
        Self { targets, default }
    }

    fn target_for<B>(&self, request: &Request<B>) -> Option<&Target> {
        let name = request
            .extensions()
            .get::<TargetOrigin>()
            .map_or(&*self.default, TargetOrigin::name);
        self.targets.by_name.get(name)
    }
}

impl<B> Service<Request<B>> for OriginRouter
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = ProxyError;
    type Future = BoxFuture<Result<Response<Incoming>, ProxyError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ProxyError>> {
        // The proxies' pooled clients queue requests themselves.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let Some(target) = self.target_for(&request) else {
            // Names are checked when the server is built; this is a request a hook retargeted.
            let name = request
                .extensions()
                .get::<TargetOrigin>()
                .map_or_else(String::new, |t| t.name().to_owned());
            return Box::pin(std::future::ready(Err(ProxyError::Other(
                format!("no origin is named `{name}`").into(),
            ))));
        };
        target.call(request.map(|body| body.map_err(Into::into).boxed_unsync()))
    }
}
