//! The `tower-cdn` edge server: a reverse proxy with [`CdnLayer`] in front of an
//! HTTP or HTTPS origin (or of a built-in demo site), served over HTTP/1 and HTTP/2, on
//! plain HTTP and optionally HTTPS at once.
//!
//! Requests over the HTTPS listener carry the [`ViewerTls`](crate::ViewerTls) extension and
//! an `https://` URI (so HTTPS objects are cached apart from HTTP ones, and the origin sees
//! `X-Forwarded-Proto: https`). Connection upgrades such as WebSocket pass the layer's viewer
//! rules (rate limit, geo, protocol, methods, signed URLs) and are then tunnelled to the
//! origin, never cached; other responses, including server-sent event streams, are
//! forwarded as they arrive; request bodies stream to the origin, bounded by
//! [`ServerConfig::max_request_body`].
//!
//! One edge can front several origins ([`OriginConfig`], failover pairs as
//! [`OriginGroupConfig`]), each behavior naming its target, and several sites
//! ([`DistributionConfig`]) chosen by host name (and, over HTTPS, the certificate by SNI).
//! A host no distribution serves gets `421 Misdirected Request`.
//!
//! ```no_run
//! # async fn example() -> Result<(), tower_cdn::server::ServerError> {
//! use tower_cdn::server::{Server, ServerConfig};
//!
//! let mut config = ServerConfig::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.origin = Some("http://127.0.0.1:9000".parse().unwrap());
//! let server = Server::bind(config).await?;
//! println!("edge on {}", server.local_addr());
//! server.serve(std::future::pending()).await
//! # }
//! ```
#![warn(missing_docs)]

mod access_config;
mod cli;
mod config;
mod conn;
mod demo;
mod error;
mod hosts;
mod limit;
mod origins;
mod proxy;
mod site;
mod tls;

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::Uri;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_http::trace::{DefaultMakeSpan, DefaultOnResponse, TraceLayer};
use tower_layer::Layer;
use tracing::Level;

use crate::{Behavior, CdnLayer};

pub use cli::{Cli, Command, PublicKeyArgs, SignArgs};
pub use config::{
    ConfigureLayer, DistributionConfig, HostHeader, OriginConfig, OriginGroupConfig,
    OriginProtocol, ServerConfig, ViewerProtocol,
};
pub use conn::PeerAddr;
pub use error::ServerError;

use conn::{serve_connections, ConnLimits, Listener};
use demo::DemoSite;
use hosts::{DistributionRouter, HostTable};
use limit::BodyLimit;
use origins::{OriginRouter, Targets};
use proxy::GatewayErrors;

/// An edge server whose sockets are bound, ready to [`serve`](Server::serve).
///
/// Binding first lets callers learn the actual address (for port 0) before any
/// request can arrive.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    https: Option<HttpsListener>,
    max_request_body: Option<u64>,
    origin: Uri,
    distributions: Vec<Distribution>,
    hosts: HostTable,
    targets: Arc<Targets>,
    /// The named origins and their URLs, for the startup line.
    origins: Vec<(String, Uri)>,
    admin: Option<AdminListener>,
    demo: Option<DemoOrigin>,
    drain_timeout: Duration,
    limits: ConnLimits,
}

/// One distribution, ready to serve: its caching layer and where its origin requests go.
#[derive(Debug)]
struct Distribution {
    name: String,
    cdn: CdnLayer,
    origins: OriginRouter,
}

/// The admin router's socket and token.
struct AdminListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    token: String,
}

impl std::fmt::Debug for AdminListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminListener")
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

impl AdminListener {
    async fn bind(config: &ServerConfig) -> Result<Option<Self>, ServerError> {
        let Some(addr) = config.admin_listen else {
            return Ok(None);
        };
        let Some(token) = config.admin_token.clone().filter(|t| !t.is_empty()) else {
            return Err(ServerError::InvalidConfig(
                "admin_listen needs an admin token: add admin_token = \"...\" (or \
                 --admin-token, or TOWER_CDN_ADMIN_TOKEN in the environment)"
                    .to_owned(),
            ));
        };
        let listener = bind(addr).await?;
        let local_addr = local_addr(&listener, addr)?;
        Ok(Some(Self {
            listener,
            local_addr,
            token,
        }))
    }
}

/// The HTTPS socket and what it needs for TLS.
struct HttpsListener {
    listener: TcpListener,
    local_addr: SocketAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    self_signed_pem: Option<String>,
}

impl std::fmt::Debug for HttpsListener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsListener")
            .field("local_addr", &self.local_addr)
            .field("self_signed", &self.self_signed_pem.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpsListener {
    async fn bind(
        config: &ServerConfig,
        hosts: &HostTable,
        distributions: &[DistributionConfig],
    ) -> Result<Option<Self>, ServerError> {
        let Some(addr) = config.https_listen else {
            let certificates = distributions.iter().any(|d| d.tls_cert.is_some());
            if config.tls_cert.is_some() || config.tls_key.is_some() || certificates {
                return Err(ServerError::InvalidConfig(
                    "certificates (tls_cert, tls_key) are configured but no HTTPS listener: \
                     add https_listen = \"0.0.0.0:443\" (or --https-listen ADDR)"
                        .to_owned(),
                ));
            }
            return Ok(None);
        };
        let listener = bind(addr).await?;
        let local_addr = local_addr(&listener, addr)?;
        let setup = tls::viewer_tls(config, local_addr, hosts, distributions)?;
        Ok(Some(Self {
            listener,
            local_addr,
            acceptor: setup.acceptor,
            self_signed_pem: setup.self_signed_pem,
        }))
    }
}

/// The built-in demo site and the loopback socket it is served on.
#[derive(Debug)]
struct DemoOrigin {
    site: DemoSite,
    listener: TcpListener,
}

impl Server {
    /// Checks `config`, binds the edge's socket and, without an origin, starts
    /// preparing the demo site on a loopback port of its own.
    pub async fn bind(config: ServerConfig) -> Result<Self, ServerError> {
        // `origin` (or, with no origin at all, the demo site) is the origin named `default`.
        let (single, demo) = match (&config.origin, config.origins.is_empty()) {
            (Some(origin), _) => (Some(origin.clone()), None),
            (None, true) => {
                let demo = DemoOrigin::bind().await?;
                (Some(demo.uri()?), Some(demo))
            }
            (None, false) => (None, None),
        };
        let origin_tls = tls::origin_tls(config.origin_ca.as_deref())?;
        let single_origin = single.map(|url| OriginConfig::new(DEFAULT_ORIGIN, url));
        let targets = Arc::new(Targets::build(&config, single_origin, &origin_tls)?);
        let origin = config
            .origin
            .clone()
            .or_else(|| demo.as_ref().and_then(|d| d.uri().ok()))
            .or_else(|| config.origins.first().map(|o| o.url.clone()))
            .unwrap_or_default();

        let distributions = if config.distributions.is_empty() {
            vec![DistributionConfig::new(DEFAULT_ORIGIN).default_behavior(
                Behavior::new()
                    .viewer_protocol_policy(site::viewer_policy(config.viewer_protocol))
                    .allowed_methods(config.allowed_methods),
            )]
        } else {
            config.distributions.clone()
        };
        let mut hosts = HostTable::default();
        let mut names = std::collections::BTreeSet::new();
        for (index, distribution) in distributions.iter().enumerate() {
            let name = &distribution.name;
            // Names make Redis key prefixes and metric labels: keep them plain and distinct.
            let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
            if name.is_empty() || !name.bytes().all(plain) {
                return Err(invalid(
                    name,
                    "a distribution name is letters, digits, '.', '_' and '-'",
                ));
            }
            if !names.insert(name) {
                return Err(invalid(name, "two distributions have this name"));
            }
            hosts
                .add(index, &distribution.hosts)
                .map_err(|err| invalid(&distribution.name, err))?;
        }
        let listener = bind(config.listen).await?;
        let local_addr = local_addr(&listener, config.listen)?;
        let https = HttpsListener::bind(&config, &hosts, &distributions).await?;
        let admin = AdminListener::bind(&config).await?;
        let distributions = match &https {
            // Redirects to HTTPS name the HTTPS listener's port (unless a behavior set one).
            Some(https) => with_https_port(distributions, https.local_addr.port()),
            None => {
                warn_redirects_without_https(&distributions);
                distributions
            }
        };
        let built = distributions
            .iter()
            .map(|distribution| Distribution::build(distribution, &config, &targets))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            admin,
            listener,
            local_addr,
            https,
            max_request_body: config.max_request_body,
            distributions: built,
            hosts,
            targets,
            origins: config
                .origins
                .iter()
                .map(|origin| (origin.name.clone(), origin.url.clone()))
                .collect(),
            origin,
            demo,
            drain_timeout: config.drain_timeout,
            limits: ConnLimits {
                max_connections: config.max_connections,
                per_client: config.max_connections_per_client,
                header_timeout: config.header_timeout,
                idle_timeout: config.idle_timeout,
            },
        })
    }

    /// The address viewers connect to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address viewers connect to over HTTPS, if there is an HTTPS listener.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().map(|https| https.local_addr)
    }

    /// The HTTPS listener's certificate in PEM, when it was generated at start (no
    /// certificate files given), for clients that should trust it.
    pub fn self_signed_certificate(&self) -> Option<&str> {
        self.https.as_ref()?.self_signed_pem.as_deref()
    }

    /// The origin requests are forwarded to (the demo site's loopback URL if built in; the
    /// first named origin when there are several).
    pub fn origin(&self) -> &Uri {
        &self.origin
    }

    /// The address the admin router listens on, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(|a| a.local_addr)
    }

    /// Whether the origin is the built-in demo site.
    pub fn is_demo_origin(&self) -> bool {
        self.demo.is_some()
    }

    /// Serves viewers until `shutdown` completes, then stops accepting, lets
    /// in-flight requests finish (up to the drain timeout) and returns.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let demo = self.demo.map(DemoOrigin::start);
        let layers: Vec<(String, CdnLayer)> = self
            .distributions
            .iter()
            .map(|d| (d.name.clone(), d.cdn.clone()))
            .collect();
        // Without a limit, `usize::MAX` bytes: the limit then only wraps the body.
        let limit = self.max_request_body.map_or(usize::MAX, |limit| {
            usize::try_from(limit).unwrap_or(usize::MAX)
        });
        let sites = self
            .distributions
            .into_iter()
            .map(|distribution| {
                // GatewayErrors turns origin failures into 502/504 responses below the
                // cache, so stale-if-error can stand in for them; the layer serves them as
                // its own errors. The body limit's 413 goes the same way. Connection upgrades
                // go through the layer too: its viewer rules apply, then it passes them on.
                distribution.cdn.layer(BodyLimit::new(
                    limit,
                    GatewayErrors::new(distribution.origins),
                ))
            })
            .collect();
        let routes = DistributionRouter::new(self.hosts, sites);
        // Per-request lines at DEBUG: the access log (target `tower_cdn::access`) is the
        // one line per request operators turn on.
        let edge = TraceLayer::new_for_http()
            .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
            .on_response(DefaultOnResponse::new().level(Level::DEBUG))
            // GatewayErrors already logs origin failures with their cause.
            .on_failure(())
            .layer(routes);
        let mut listeners = vec![Listener::plain(self.listener)];
        if let Some(https) = self.https {
            listeners.push(Listener {
                tcp: https.listener,
                tls: Some(https.acceptor),
            });
        }
        // One shutdown signal for the edge and the admin router.
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop.send(true);
        });
        let until_stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        };
        let admin = self.admin.map(|admin| {
            let targets = self.targets.clone();
            let origins: crate::admin::ExtraMetrics = Arc::new(move || targets.to_prometheus());
            let router = crate::admin::router_with_metrics(layers, admin.token, Some(origins));
            let listeners = vec![Listener::plain(admin.listener)];
            let shutdown = until_stopped(stopped.clone());
            tokio::spawn(serve_connections(
                listeners,
                router,
                shutdown,
                self.drain_timeout,
                ConnLimits {
                    max_connections: 64,
                    ..self.limits
                },
            ))
        });
        let (drain, limits) = (self.drain_timeout, self.limits);
        serve_connections(listeners, edge, until_stopped(stopped), drain, limits).await;
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        if let Some(demo) = demo {
            demo.stop().await;
        }
        Ok(())
    }
}

impl DemoOrigin {
    async fn bind() -> Result<Self, ServerError> {
        let site = DemoSite::create().map_err(ServerError::DemoSite)?;
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
        Ok(Self { site, listener })
    }

    fn uri(&self) -> Result<Uri, ServerError> {
        let addr = local_addr(&self.listener, SocketAddr::from(([127, 0, 0, 1], 0)))?;
        format!("http://{addr}")
            .parse()
            .map_err(|err| ServerError::InvalidConfig(format!("demo origin URL: {err}")))
    }

    fn start(self) -> RunningDemo {
        let (stop, stopped) = oneshot::channel::<()>();
        let service = self.site.service();
        let task = tokio::spawn(serve_connections(
            vec![Listener::plain(self.listener)],
            service,
            async {
                // A dropped sender means the edge is gone, which is a stop too.
                let _ = stopped.await;
            },
            // The edge has drained already; the demo only has idle pooled connections left.
            Duration::from_secs(1),
            ConnLimits::internal(usize::MAX),
        ));
        RunningDemo {
            _site: self.site,
            stop,
            task,
        }
    }
}

/// The demo origin while it serves; the site's files live as long as it does.
struct RunningDemo {
    _site: DemoSite,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl RunningDemo {
    async fn stop(self) {
        let _ = self.stop.send(());
        if let Err(err) = self.task.await {
            tracing::warn!("demo origin task failed: {err}");
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ServerError::Bind { addr, source })
}

fn local_addr(listener: &TcpListener, asked: SocketAddr) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        addr: asked,
        source,
    })
}

/// Binds with `config` and serves until `shutdown` completes (see [`Server::serve`]).
pub async fn serve(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    Server::bind(config).await?.serve(shutdown).await
}

/// What the binary does: binds, prints where it listens, serves until SIGINT
/// or SIGTERM, then drains in-flight requests and returns.
pub async fn run(config: ServerConfig) -> Result<(), ServerError> {
    let shutdown = shutdown_signal()?;
    let server = Server::bind(config).await?;
    println!("{}", startup_line(&server));
    server.serve(shutdown).await?;
    tracing::info!("tower-cdn stopped");
    Ok(())
}

/// The distributions with `port` as the HTTPS port of every behavior's viewer protocol
/// policy that sets none, so that redirects to HTTPS name the HTTPS listener.
fn with_https_port(distributions: Vec<DistributionConfig>, port: u16) -> Vec<DistributionConfig> {
    let fill = |behavior: Behavior| {
        let policy = behavior.viewer_protocol.or_https_port(port);
        behavior.viewer_protocol_policy(policy)
    };
    distributions
        .into_iter()
        .map(|mut distribution| {
            distribution.default_behavior = fill(distribution.default_behavior);
            distribution.behaviors = std::mem::take(&mut distribution.behaviors)
                .into_iter()
                .map(|(pattern, behavior)| (pattern, fill(behavior)))
                .collect();
            distribution
        })
        .collect()
}

/// Warns when plain-HTTP viewers are redirected to HTTPS that this edge does not serve.
fn warn_redirects_without_https(distributions: &[DistributionConfig]) {
    for distribution in distributions {
        let redirects = std::iter::once(&distribution.default_behavior)
            .chain(distribution.behaviors.iter().map(|(_, behavior)| behavior))
            .any(|behavior| behavior.viewer_protocol.redirects());
        if redirects {
            tracing::warn!(
                distribution = %distribution.name,
                "viewers are redirected to HTTPS on port 443, but no HTTPS listener is \
                 configured (--https-listen / https_listen): only a TLS proxy in front of \
                 this edge can serve them"
            );
        }
    }
}

/// The memory store's size without `max_bytes` (the layer's default).
const DEFAULT_MAX_BYTES: u64 = 256 * 1024 * 1024;

/// The name of the origin given as a URL (`--origin`) or of the demo site.
const DEFAULT_ORIGIN: &str = "default";

fn invalid(distribution: &str, message: impl std::fmt::Display) -> ServerError {
    ServerError::InvalidConfig(format!("distribution `{distribution}`: {message}"))
}

impl Distribution {
    /// The caching layer and origin routing `distribution` asks for. The origin timeout is
    /// the proxies': the layer's own is set past the longest, so a proxy's 504 is what a
    /// slow origin produces.
    fn build(
        distribution: &DistributionConfig,
        config: &ServerConfig,
        targets: &Arc<Targets>,
    ) -> Result<Self, ServerError> {
        let name = &distribution.name;
        let target_of = |behavior: &Behavior, what: &str| -> Result<Arc<str>, ServerError> {
            let target = match behavior.target_origin_name() {
                Some(target) => target,
                None if targets.contains(DEFAULT_ORIGIN) => DEFAULT_ORIGIN,
                None => targets.only().ok_or_else(|| {
                    invalid(
                        name,
                        format!(
                            "{what} names no origin and several are declared ({})",
                            targets.names()
                        ),
                    )
                })?,
            };
            if !targets.contains(target) {
                return Err(invalid(
                    name,
                    format!(
                        "{what} targets `{target}`, which is no origin or origin group ({})",
                        targets.names()
                    ),
                ));
            }
            Ok(target.into())
        };
        let default_target = target_of(&distribution.default_behavior, "the default behavior")?;
        let mut builder = CdnLayer::builder()
            .origin_timeout(targets.max_timeout() + Duration::from_secs(1))
            .default_behavior(
                distribution
                    .default_behavior
                    .clone()
                    .target_origin(default_target.clone()),
            );
        for (pattern, behavior) in &distribution.behaviors {
            let what = format!("the behavior for `{pattern}`");
            let target = match behavior.target_origin_name() {
                Some(_) => target_of(behavior, &what)?,
                None => default_target.clone(),
            };
            builder = builder.behavior(pattern.clone(), behavior.clone().target_origin(target));
        }
        if let Some(object) = &distribution.default_root_object {
            builder = builder.default_root_object(object.clone());
        }
        // What distributions with a size of their own leave of the budget is shared evenly
        // by the others.
        let unsized_count = config
            .distributions
            .iter()
            .filter(|d| d.max_bytes.is_none())
            .count()
            .max(1) as u64;
        let sized: u64 = config
            .distributions
            .iter()
            .filter_map(|d| d.max_bytes)
            .sum();
        let budget = config.max_bytes.unwrap_or(DEFAULT_MAX_BYTES);
        let share = budget.saturating_sub(sized) / unsized_count;
        let split = config.max_bytes.is_some() || config.distributions.len() > 1;
        if let Some(bytes) = distribution.max_bytes.or(split.then_some(share)) {
            builder = builder
                .capacity(bytes)
                .max_object_size((bytes / 4).min(16 * 1024 * 1024));
        }
        if let Some(url) = &config.redis_url {
            let mut tier = crate::RedisTier::builder(url.clone())
                .timeout(config.redis_timeout)
                .shield(config.origin_shield);
            if config.distributions.len() > 1 {
                // Each distribution's objects and purges apart from the others'. One
                // distribution keeps the plain prefix, shared with edges run from flags.
                tier = tier.key_prefix(format!("tower-cdn:{name}:"));
            }
            let tier = tier
                .build()
                .map_err(|err| ServerError::InvalidConfig(format!("redis_url: {err}")))?;
            builder = builder.shared_tier(tier);
        } else if config.origin_shield {
            return Err(ServerError::InvalidConfig(
                "origin_shield needs redis_url = \"redis://HOST:PORT/\" (or --redis-url URL)"
                    .to_owned(),
            ));
        }
        for configure in &distribution.configure {
            builder = configure(builder);
        }
        let cdn = builder.build().map_err(|err| invalid(name, err))?;
        Ok(Self {
            name: name.clone(),
            cdn,
            origins: OriginRouter::new(targets.clone(), default_target),
        })
    }
}

/// For example `tower-cdn listening on http://127.0.0.1:8080 and https://127.0.0.1:8443
/// (self-signed certificate), origin http://127.0.0.1:40123 (built-in demo); admin on
/// http://127.0.0.1:9090`.
fn startup_line(server: &Server) -> String {
    let origins = if server.origins.is_empty() {
        let origin = server.origin();
        let scheme = origin.scheme_str().unwrap_or("http");
        let authority = origin
            .authority()
            .map_or("", |authority| authority.as_str());
        let demo = if server.is_demo_origin() {
            " (built-in demo)"
        } else {
            ""
        };
        format!("origin {scheme}://{authority}{demo}")
    } else {
        let named: Vec<String> = server
            .origins
            .iter()
            .map(|(name, url)| {
                let scheme = url.scheme_str().unwrap_or("http");
                let authority = url.authority().map_or("", |a| a.as_str());
                format!("{name} {scheme}://{authority}")
            })
            .collect();
        format!("origins {}", named.join(", "))
    };
    let sites = match server.distributions.len() {
        1 => String::new(),
        n => format!(", {n} distributions"),
    };
    let https = match (server.https_addr(), server.self_signed_certificate()) {
        (Some(addr), Some(_)) => format!(" and https://{addr} (self-signed certificate)"),
        (Some(addr), None) => format!(" and https://{addr}"),
        (None, _) => String::new(),
    };
    let admin = match server.admin_addr() {
        Some(addr) => format!("; admin on http://{addr}"),
        None => String::new(),
    };
    format!(
        "tower-cdn listening on http://{}{https}, {origins}{sites}{admin}",
        server.local_addr()
    )
}

/// A future that completes on the first SIGINT or SIGTERM (Ctrl-C elsewhere).
///
/// The handlers are installed by this call, not on first poll, so a signal
/// arriving while the server starts is not lost. Needs a Tokio runtime.
pub fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, ServerError> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut interrupt = signal(SignalKind::interrupt()).map_err(ServerError::Signals)?;
        let mut terminate = signal(SignalKind::terminate()).map_err(ServerError::Signals)?;
        Ok(async move {
            let name = tokio::select! {
                _ = interrupt.recv() => "SIGINT",
                _ = terminate.recv() => "SIGTERM",
            };
            tracing::info!("{name} received; finishing in-flight requests");
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("Ctrl-C received; finishing in-flight requests");
        })
    }
}
