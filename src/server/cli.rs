use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use http::Uri;

use super::{
    config::{parse_duration, parse_origin, parse_size, parse_socket_addr, ConfigLayer},
    site::MethodsName,
    HostHeader, ServerConfig, ServerError, ViewerProtocol,
};
use crate::AllowedMethods;

fn parse_allowed_methods(text: &str) -> Result<AllowedMethods, String> {
    MethodsName::parse(text)
}

/// Command line of the `tower-cdn` binary.
///
/// Every setting can also come from the `--config` TOML file under the same
/// name with `_` for `-` (for example `origin_timeout = "10s"`); flags win.
#[derive(Debug, Parser)]
#[command(
    name = "tower-cdn",
    version,
    about = "A CDN edge cache in front of an HTTP origin",
    long_about = None,
    after_long_help = "Settings can also come from the --config TOML file, named with _ for - \
                       (origin_timeout = \"10s\"); flags override the file."
)]
pub struct Cli {
    /// A task other than serving.
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Origin to proxy to, as http://host:port or https://host:port [default: the built-in demo site].
    #[arg(long, value_name = "URL", value_parser = parse_origin)]
    pub origin: Option<Uri>,

    /// Address to accept viewers on, IP:PORT or localhost:PORT [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub listen: Option<SocketAddr>,

    /// Address to also accept viewers on over HTTPS [default: none].
    ///
    /// Without --tls-cert and --tls-key, a self-signed certificate for localhost is
    /// generated at start, for local use.
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub https_listen: Option<SocketAddr>,

    /// PEM certificate chain for the HTTPS listener, leaf first.
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for the HTTPS listener's certificate.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,

    /// PEM file of certificate authorities to trust for an https origin, instead of the
    /// built-in Mozilla roots.
    #[arg(long, value_name = "FILE")]
    pub origin_ca: Option<PathBuf>,

    /// Largest request body forwarded to the origin, in bytes or with a unit (64KiB, 1MB);
    /// larger ones get 413 [default: no limit].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_request_body: Option<u64>,

    /// TOML file with settings (origin, listen, max_bytes, ...); flags override it.
    ///
    /// Relative paths in the file (certificates, key files, the geo database) are taken from
    /// the file's directory; relative paths given as flags from the working directory.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address for the admin router (POST /purge, GET /stats, GET /metrics).
    #[arg(long, value_name = "ADDR", value_parser = parse_socket_addr)]
    pub admin_listen: Option<SocketAddr>,

    /// Bearer token the admin router requires.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "TOWER_CDN_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// What plain-HTTP viewers get [default: allow-all].
    #[arg(long, value_enum, value_name = "POLICY")]
    pub viewer_protocol: Option<ViewerProtocol>,

    /// Methods the edge serves: get-head (GET, HEAD), get-head-options (and OPTIONS) or all
    /// (and PUT, POST, PATCH, DELETE); others get 403 and never reach the origin
    /// [default: get-head]
    ///
    /// Applies to every behavior that sets no allowed_methods of its own. An origin with
    /// forms or an API needs --allowed-methods all.
    #[arg(long, value_name = "METHODS", value_parser = parse_allowed_methods)]
    pub allowed_methods: Option<AllowedMethods>,

    /// The most connections open at once; more are closed as they arrive [default: 10000].
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// The most connections open at once from one client (an IPv4 address or an IPv6 /64);
    /// 0 for no limit [default: 256].
    #[arg(long, value_name = "N")]
    pub max_connections_per_client: Option<usize>,

    /// Time a new connection has to finish the TLS handshake and then to send a complete
    /// request head; for HTTP/1 also each later one [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,

    /// Time a connection may stay open with no request in progress [default: 60s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub idle_timeout: Option<Duration>,

    /// Redis shared by several edges, as redis://host:port/ or redis+unix:///path: a second
    /// cache tier and purge fan-out [default: none].
    #[arg(long, value_name = "URL")]
    pub redis_url: Option<String>,

    /// Timeout of every Redis call [default: 50ms].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub redis_timeout: Option<Duration>,

    /// With --redis-url: one origin request per object for the whole fleet.
    #[arg(long)]
    pub origin_shield: bool,

    /// The memory store's size, in bytes or with a unit: KB, MB, GB are powers of 1000,
    /// KiB, MiB, GiB of 1024 [default: 256MiB].
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_bytes: Option<u64>,

    /// Which Host header the origin receives [default: viewer].
    #[arg(long, value_enum, value_name = "WHOSE")]
    pub host_header: Option<HostHeader>,

    /// Time the origin has to send response headers before viewers get a 504 [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub origin_timeout: Option<Duration>,

    /// Time allowed to open a connection to the origin [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub connect_timeout: Option<Duration>,

    /// Time a shutdown waits for in-flight requests [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub drain_timeout: Option<Duration>,
}

/// Tasks other than serving.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prints a signed URL that a behavior trusting the key's group accepts.
    Sign(SignArgs),
    /// Prints the public key of an Ed25519 seed file, as a key group entry for the edges'
    /// config file (the seed stays with whoever signs).
    PublicKey(PublicKeyArgs),
}

/// `tower-cdn public-key`: the edge's half of an Ed25519 signing key.
#[derive(Debug, clap::Args)]
pub struct PublicKeyArgs {
    /// File holding the 32-byte Ed25519 seed that `tower-cdn sign` signs with.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// The key id to print the entry with.
    #[arg(long, value_name = "ID", default_value = "KEY-ID")]
    pub key_id: String,
}

impl PublicKeyArgs {
    /// A `[key_groups.NAME]` entry such as
    /// `{ id = "K2024", ed25519_public_key = "BASE64" }`.
    pub fn entry(&self) -> Result<String, ServerError> {
        use base64::Engine as _;
        let bad = |e: &dyn std::fmt::Display| {
            ServerError::Command(format!(
                "public-key: {}: {e}; --key-file names the file of 32 raw bytes that \
                 `tower-cdn sign` signs with",
                self.key_file.display()
            ))
        };
        let seed = std::fs::read(&self.key_file).map_err(|e| bad(&e))?;
        let seed: [u8; 32] = seed
            .try_into()
            .map_err(|seed: Vec<u8>| bad(&format!("{} bytes, not a 32-byte seed", seed.len())))?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        let public = base64::engine::general_purpose::STANDARD.encode(public);
        Ok(format!(
            "{{ id = {:?}, ed25519_public_key = \"{public}\" }}",
            self.key_id
        ))
    }
}

/// `tower-cdn sign`: a canned-policy signed URL (or a custom policy with `--resource`).
#[derive(Debug, clap::Args)]
pub struct SignArgs {
    /// The URL to sign, e.g. https://d.example/videos/intro.mp4.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// The key id the edge's key group knows the key by.
    #[arg(long, value_name = "ID")]
    pub key_id: String,
    /// File holding the signing key: 32 raw bytes (Ed25519 seed) or, with --hmac, the
    /// shared secret.
    #[arg(long, value_name = "FILE")]
    pub key_file: PathBuf,
    /// The key is an HMAC-SHA256 secret rather than an Ed25519 seed.
    #[arg(long)]
    pub hmac: bool,
    /// Seconds the URL stays valid.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600)]
    pub valid_for: u64,
    /// A custom policy's resource pattern (with `*` / `?`) instead of a canned policy.
    #[arg(long, value_name = "PATTERN")]
    pub resource: Option<String>,
}

impl SignArgs {
    /// The signed URL.
    pub fn sign(&self, now_epoch_secs: u64) -> Result<String, ServerError> {
        use crate::signing::{CustomPolicy, Signer, SigningKey};
        let bad = |e: &dyn std::fmt::Display| ServerError::Command(format!("sign: {e}"));
        check_url_to_sign(&self.url).map_err(|e| bad(&e))?;
        let key = std::fs::read(&self.key_file)
            .map_err(|e| bad(&format!("--key-file {}: {e}", self.key_file.display())))?;
        let key = if self.hmac {
            SigningKey::hmac_sha256(&key)
        } else {
            SigningKey::ed25519(&key)
        }
        .map_err(|e| bad(&e))?;
        let signer = Signer::new(self.key_id.clone(), key).map_err(|e| bad(&e))?;
        let expires = now_epoch_secs.saturating_add(self.valid_for);
        Ok(match &self.resource {
            None => signer.sign_canned_url(&self.url, expires),
            Some(resource) => {
                let policy = CustomPolicy::builder(resource.clone())
                    .expires(expires)
                    .build()
                    .map_err(|e| bad(&e))?;
                signer.sign_custom_url(&self.url, &policy)
            }
        })
    }
}

/// Refuses a URL the edge would never accept a signature for: the edge checks the
/// signature against the absolute URL the viewer asked for (scheme, host, path, query).
fn check_url_to_sign(url: &str) -> Result<(), String> {
    let uri: Uri = url.parse().map_err(|err| {
        format!("--url `{url}` is not a URL ({err}); write it as https://HOST/PATH")
    })?;
    let absolute = matches!(uri.scheme_str(), Some("http" | "https"))
        && uri.host().is_some_and(|host| !host.is_empty());
    if !absolute {
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        return Err(format!(
            "--url `{url}` is not an absolute URL, and the edge checks a signature against \
             the full URL viewers request; write it as https://HOST{path}"
        ));
    }
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(format!(
            "--url `{url}` has user info, which viewers never send; write https://HOST/PATH"
        ));
    }
    Ok(())
}

impl Cli {
    /// Merges the flags over the `--config` file (if any) over the defaults.
    pub fn into_config(self) -> Result<ServerConfig, ServerError> {
        let file = match &self.config {
            Some(path) => ConfigLayer::from_file(path)?,
            None => ConfigLayer::default(),
        };
        let flags = ConfigLayer {
            origin: self.origin,
            listen: self.listen,
            https_listen: self.https_listen,
            tls_cert: self.tls_cert,
            tls_key: self.tls_key,
            origin_ca: self.origin_ca,
            max_request_body: self.max_request_body,
            admin_listen: self.admin_listen,
            admin_token: self.admin_token,
            viewer_protocol: self.viewer_protocol,
            allowed_methods: self.allowed_methods,
            max_connections: self.max_connections,
            max_connections_per_client: self.max_connections_per_client,
            header_timeout: self.header_timeout,
            idle_timeout: self.idle_timeout,
            redis_url: self.redis_url,
            redis_timeout: self.redis_timeout,
            origin_shield: self.origin_shield.then_some(true),
            max_bytes: self.max_bytes,
            host_header: self.host_header,
            origin_timeout: self.origin_timeout,
            connect_timeout: self.connect_timeout,
            drain_timeout: self.drain_timeout,
            ..ConfigLayer::default()
        };
        check_flags(&flags, &file)?;
        flags.or(file).resolve()
    }
}

/// The settings that need one another, checked where a flag was given so that the error
/// names the flags (the file's are named by their keys when the file is resolved).
fn check_flags(flags: &ConfigLayer, file: &ConfigLayer) -> Result<(), ServerError> {
    let invalid = |message: &str| Err(ServerError::InvalidConfig(message.to_owned()));
    let certificate = flags.tls_cert.is_some() || flags.tls_key.is_some();
    if certificate && flags.https_listen.is_none() && file.https_listen.is_none() {
        return invalid(
            "--tls-cert and --tls-key are for the HTTPS listener: add --https-listen ADDR \
             (e.g. --https-listen 0.0.0.0:443)",
        );
    }
    if flags.tls_cert.is_some() && flags.tls_key.is_none() && file.tls_key.is_none() {
        return invalid("--tls-cert needs --tls-key FILE, the certificate's private key");
    }
    if flags.tls_key.is_some() && flags.tls_cert.is_none() && file.tls_cert.is_none() {
        return invalid("--tls-key needs --tls-cert FILE, the certificate chain it belongs to");
    }
    if flags.origin_shield == Some(true) && flags.redis_url.is_none() && file.redis_url.is_none() {
        return invalid("--origin-shield needs --redis-url URL, the Redis the edges share");
    }
    let token = flags.admin_token.as_deref().or(file.admin_token.as_deref());
    if flags.admin_listen.is_some() && token.is_none_or(str::is_empty) {
        return invalid(
            "--admin-listen needs --admin-token TOKEN (or TOWER_CDN_ADMIN_TOKEN in the \
             environment), the bearer token admin requests must carry",
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "tower-cdn",
            "--origin",
            "http://127.0.0.1:9000",
            "--listen",
            "127.0.0.1:0",
            "--host-header",
            "origin",
            "--origin-timeout",
            "250ms",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.origin.unwrap(), "http://127.0.0.1:9000");
        assert_eq!(config.host_header, HostHeader::Origin);
        assert_eq!(config.origin_timeout, Duration::from_millis(250));
    }

    fn flag_error(args: &[&str]) -> String {
        let cli =
            Cli::try_parse_from(std::iter::once("tower-cdn").chain(args.iter().copied())).unwrap();
        cli.into_config().unwrap_err().to_string()
    }

    #[test]
    fn errors_about_flags_name_the_flags() {
        let err = flag_error(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert!(
            err.contains("--https-listen") && !err.contains("https_listen"),
            "{err}"
        );
        let err = flag_error(&["--https-listen", "127.0.0.1:0", "--tls-cert", "c.pem"]);
        assert!(
            err.contains("--tls-key") && !err.contains("tls_key"),
            "{err}"
        );
        let err = flag_error(&["--origin-shield"]);
        assert!(
            err.contains("--redis-url") && !err.contains("redis_url"),
            "{err}"
        );
    }

    #[test]
    fn sizes_and_localhost_in_flags() {
        let cli = Cli::try_parse_from([
            "tower-cdn",
            "--max-request-body",
            "1k",
            "--max-bytes",
            "256MiB",
            "--listen",
            "localhost:8080",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.max_request_body, Some(1000));
        assert_eq!(config.max_bytes, Some(256 * 1024 * 1024));
        assert_eq!(config.listen, "127.0.0.1:8080".parse().unwrap());
        let err = Cli::try_parse_from(["tower-cdn", "--origin", "http://h.test:9000/public"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("path = \"/public\""), "{err}");
    }

    #[test]
    fn connection_limits_in_flags() {
        let cli = Cli::try_parse_from([
            "tower-cdn",
            "--max-connections-per-client",
            "16",
            "--header-timeout",
            "2s",
            "--idle-timeout",
            "30s",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.max_connections_per_client, 16);
        assert_eq!(config.header_timeout, Duration::from_secs(2));
        assert_eq!(config.idle_timeout, Duration::from_secs(30));
        let config = Cli::try_parse_from(["tower-cdn"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.max_connections_per_client, 256);
    }

    #[test]
    fn allowed_methods_flag_defaults_to_get_and_head() {
        let config = Cli::try_parse_from(["tower-cdn"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.allowed_methods, AllowedMethods::get_head());
        for (name, methods) in [
            ("get-head", AllowedMethods::get_head()),
            ("get-head-options", AllowedMethods::get_head_options()),
            ("all", AllowedMethods::all()),
        ] {
            let cli = Cli::try_parse_from(["tower-cdn", "--allowed-methods", name]).unwrap();
            assert_eq!(
                cli.into_config().unwrap().allowed_methods,
                methods,
                "{name}"
            );
        }
        let err = Cli::try_parse_from(["tower-cdn", "--allowed-methods", "post"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("get-head-options") && err.contains("all"),
            "{err}"
        );
    }

    fn sign_args(url: &str, key_file: PathBuf) -> SignArgs {
        SignArgs {
            url: url.to_owned(),
            key_id: "K1".to_owned(),
            key_file,
            hmac: false,
            valid_for: 60,
            resource: None,
        }
    }

    #[test]
    fn sign_refuses_a_url_the_edge_cannot_accept() {
        let dir = std::env::temp_dir().join(format!("tower-cdn-sign-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = dir.join("seed");
        std::fs::write(&key, [7u8; 32]).unwrap();
        for url in [
            "/videos/a.mp4",
            "videos/a.mp4",
            "d.example/a.mp4",
            "ftp://d.example/a",
        ] {
            let err = sign_args(url, key.clone()).sign(0).unwrap_err().to_string();
            assert!(err.starts_with("sign: --url"), "{url}: {err}");
            assert!(err.contains("write it as https://HOST"), "{url}: {err}");
        }
        let signed = sign_args("https://d.example/a.mp4", key.clone())
            .sign(0)
            .unwrap();
        assert!(signed.starts_with("https://d.example/a.mp4?"), "{signed}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn public_key_errors_name_the_task_not_the_configuration() {
        let args = PublicKeyArgs {
            key_file: PathBuf::from("/nonexistent/tower-cdn-seed"),
            key_id: "K1".to_owned(),
        };
        let err = args.entry().unwrap_err().to_string();
        assert!(err.starts_with("public-key: "), "{err}");
        assert!(err.contains("--key-file"), "{err}");
    }

    #[test]
    fn sign_help_shows_the_default_once() {
        let mut command = Cli::command();
        let sign = command.find_subcommand_mut("sign").unwrap();
        let help = sign.render_long_help().to_string();
        assert_eq!(help.matches("[default: 3600]").count(), 1, "{help}");
    }

    #[test]
    fn bad_origin_flag_is_rejected() {
        assert!(Cli::try_parse_from(["tower-cdn", "--origin", "ftp://x"]).is_err());
        assert!(Cli::try_parse_from(["tower-cdn", "--origin", "https://x"]).is_ok());
    }

    #[test]
    fn tls_flags_parse() {
        let cli = Cli::try_parse_from([
            "tower-cdn",
            "--https-listen",
            "127.0.0.1:8443",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--origin-ca",
            "ca.pem",
            "--max-request-body",
            "1048576",
        ])
        .unwrap();
        let config = cli.into_config().unwrap();
        assert_eq!(config.https_listen, Some("127.0.0.1:8443".parse().unwrap()));
        assert_eq!(config.tls_cert, Some(PathBuf::from("cert.pem")));
        assert_eq!(config.max_request_body, Some(1_048_576));
    }
}
