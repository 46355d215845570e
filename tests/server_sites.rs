//! One edge fronting a real site over loopback: several named origins chosen by behavior,
//! origin settings (path, headers, Host), an origin group from the file, several
//! distributions chosen by `Host` and by SNI, and configuration errors that point at the
//! file, line and field.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, Method, Uri},
    response::IntoResponse,
    routing::any,
    Router,
};
use clap::Parser;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
};
use rustls::{
    pki_types::{CertificateDer, ServerName},
    ClientConfig, RootCertStore,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_cdn::server::{Cli, Server, ServerConfig, ServerError};

const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// One request as an origin received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
}

/// A test origin: answers every path with its name and the path; origin `B` answers 503
/// under `/fail`.
struct Origin {
    name: &'static str,
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
}

impl Origin {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("no request")
    }
}

async fn answer(
    State(origin): State<Arc<Origin>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    origin.hits.fetch_add(1, Ordering::SeqCst);
    origin.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        // With the query: signing parameters must not reach the origin.
        path: uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers: headers.clone(),
    });
    let path = uri.path();
    if path.starts_with("/fail") && origin.name == "B" {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            HeaderMap::new(),
            "down".to_owned(),
        );
    }
    let mut fields = HeaderMap::new();
    if path.starts_with("/api/") {
        fields.insert("content-type", "application/json".parse().unwrap());
        let text = format!(
            "{{\"origin\":\"{}\",\"method\":\"{method}\",\"body\":\"{}\"}}",
            origin.name,
            String::from_utf8_lossy(&body)
        );
        return (StatusCode::OK, fields, text);
    }
    fields.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
    fields.insert("cache-control", "public, max-age=3600".parse().unwrap());
    // Large and repetitive enough to be worth compressing.
    let page = format!("<html><body>{} {path}</body></html>\n", origin.name).repeat(40);
    (StatusCode::OK, fields, page)
}

async fn start_origin(name: &'static str) -> (String, Arc<Origin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin {
        name,
        hits: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
    });
    let app = Router::new()
        .fallback(any(answer))
        .with_state(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), origin)
}

/// A file in a directory of its own, removed with the value.
struct TempFile {
    dir: PathBuf,
    path: PathBuf,
}

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tower-cdn-sites-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        Self { dir, path }
    }

    fn sibling(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration `tower-cdn --config FILE --listen 127.0.0.1:0` would run with.
fn config_from(file: &Path) -> Result<ServerConfig, ServerError> {
    let args = ["tower-cdn", "--config", file.to_str().unwrap()];
    let cli = Cli::try_parse_from(args.into_iter().chain(["--listen", "127.0.0.1:0"])).unwrap();
    cli.into_config()
}

struct Running {
    addr: SocketAddr,
    https: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Running {
    async fn start(config: ServerConfig) -> Self {
        let server = Server::bind(config).await.unwrap();
        let (addr, https, admin) = (
            server.local_addr(),
            server.https_addr(),
            server.admin_addr(),
        );
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));
        Self {
            addr,
            https,
            admin,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

type Viewer = Client<HttpConnector, Full<Bytes>>;

fn viewer() -> Viewer {
    Client::builder(TokioExecutor::new()).build_http()
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .map_or("", |v| v.to_str().unwrap())
    }
}

async fn collect(response: Response<hyper::body::Incoming>) -> Answer {
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

async fn send(
    client: &Viewer,
    edge: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{edge}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::from(body.to_owned())).unwrap();
    collect(client.request(request).await.unwrap()).await
}

/// Sends `request` as written on a new connection and reads one answer (its head and a
/// `Content-Length` body).
async fn raw(edge: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    loop {
        let mut chunk = [0; 4096];
        let read = stream.read(&mut chunk).await.unwrap();
        answer.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&answer).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            assert!(
                read > 0,
                "connection closed before the answer's head: {text}"
            );
            continue;
        };
        let length = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or(0);
        if read == 0 || body.len() >= length {
            return text;
        }
    }
}

#[tokio::test]
async fn the_example_config_fronts_a_static_site_and_an_api() {
    within(async {
        let (site_url, site) = start_origin("site").await;
        let (api_url, api) = start_origin("api").await;
        let example = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/static-site-and-api.toml"),
        )
        .unwrap();
        assert!(
            example.contains("http://127.0.0.1:9001") && example.contains("http://127.0.0.1:9002")
        );
        let text = example
            .replace("http://127.0.0.1:9001", &site_url)
            .replace("http://127.0.0.1:9002", &api_url);
        let file = TempFile::new("edge.toml", &text);
        let edge = Running::start(config_from(&file.path).unwrap()).await;
        let client = viewer();
        let host = [("host", "www.example.test")];

        // `/` is the site's index page, fetched under the origin path with the origin secret.
        let home = send(&client, edge.addr, "GET", "/", &host, "").await;
        assert_eq!(home.status, StatusCode::OK);
        assert!(
            home.text().contains("site /public/index.html"),
            "{}",
            home.text()
        );
        assert!(home.x_cache().starts_with("Miss"), "{}", home.x_cache());
        let seen = site.last();
        assert_eq!(seen.path, "/public/index.html");
        assert_eq!(seen.headers["x-origin-verify"], "change-me");
        assert_eq!(seen.headers["host"], "www.example.test");
        // What the viewer claims in X-Forwarded-Host never reaches the origin.
        let forged = [
            ("host", "www.example.test"),
            ("x-forwarded-host", "evil.test"),
        ];
        send(&client, edge.addr, "GET", "/forged.html", &forged, "").await;
        assert!(site.last().headers.get("x-forwarded-host").is_none());

        // Next time it is a hit, compressed for a viewer that accepts it.
        let again = send(
            &client,
            edge.addr,
            "GET",
            "/",
            &[("host", "www.example.test"), ("accept-encoding", "gzip")],
            "",
        )
        .await;
        assert!(again.x_cache().starts_with("Hit"), "{}", again.x_cache());
        assert_eq!(again.headers["content-encoding"], "gzip");
        assert!(again.body.len() < home.body.len());
        assert_eq!(site.hits(), 2);

        // The API is never cached, answers to its own name and takes every method.
        for _ in 0..2 {
            let api_answer = send(&client, edge.addr, "GET", "/api/orders", &host, "").await;
            assert_eq!(api_answer.status, StatusCode::OK);
            assert!(api_answer.text().contains("\"origin\":\"api\""));
        }
        assert_eq!(api.hits(), 2);
        let seen = api.last();
        assert_eq!(seen.path, "/api/orders");
        assert_eq!(seen.headers["host"], "api.internal");
        assert_eq!(seen.headers["x-forwarded-host"], "www.example.test");
        assert!(seen.headers.get("x-origin-verify").is_none());
        let posted = send(
            &client,
            edge.addr,
            "POST",
            "/api/orders",
            &host,
            "{\"n\":1}",
        )
        .await;
        assert_eq!(posted.status, StatusCode::OK);
        assert!(
            posted.text().contains("\"method\":\"POST\""),
            "{}",
            posted.text()
        );
        assert_eq!(api.last().method, Method::POST);

        // The static behavior takes GET and HEAD only.
        let refused = send(&client, edge.addr, "POST", "/index.html", &host, "x").await;
        assert_eq!(refused.status, StatusCode::FORBIDDEN);
        assert_eq!(site.hits(), 2);

        // TRACE would echo the origin secret back: the edge does not serve it.
        let trace = send(&client, edge.addr, "TRACE", "/", &host, "").await;
        assert_eq!(trace.status, StatusCode::NOT_IMPLEMENTED);
        assert_eq!(site.hits(), 2);
        edge.stop().await;
    })
    .await;
}

const TWO_SITES: &str = r#"
[origins.a]
url = "ORIGIN_A"

[origins.b]
url = "ORIGIN_B"

[origins.backup]
url = "ORIGIN_BACKUP"

[origin_groups.b-with-backup]
primary = "b"
secondary = "backup"
failover_statuses = [500, 502, 503, 504]

[[distributions]]
name = "site-a"
hosts = ["a.test", "*.a.test"]
[distributions.default_behavior]
origin = "a"

[[distributions]]
name = "site-b"
hosts = ["b.test"]
[distributions.default_behavior]
origin = "b-with-backup"
"#;

async fn two_sites(extra: &str) -> (TempFile, Arc<Origin>, Arc<Origin>, Arc<Origin>) {
    let (a_url, a) = start_origin("A").await;
    let (b_url, b) = start_origin("B").await;
    let (backup_url, backup) = start_origin("backup").await;
    let text = format!(
        "{extra}\n{}",
        TWO_SITES
            .replace("ORIGIN_A", &a_url)
            .replace("ORIGIN_BACKUP", &backup_url)
            .replace("ORIGIN_B", &b_url)
    );
    (TempFile::new("sites.toml", &text), a, b, backup)
}

#[tokio::test]
async fn distributions_are_chosen_by_host_and_keep_their_caches_apart() {
    within(async {
        let (file, a, b, backup) =
            two_sites("admin_listen = \"127.0.0.1:0\"\nadmin_token = \"t0ken\"").await;
        let edge = Running::start(config_from(&file.path).unwrap()).await;
        let client = viewer();
        let get = async |path: &str, host: &str| {
            send(&client, edge.addr, "GET", path, &[("host", host)], "").await
        };

        for host in ["a.test", "b.test", "a.test", "b.test"] {
            let answer = get("/page", host).await;
            assert_eq!(answer.status, StatusCode::OK);
            let expected = if host == "a.test" {
                "A /page"
            } else {
                "B /page"
            };
            assert!(
                answer.text().contains(expected),
                "{host}: {}",
                answer.text()
            );
        }
        // One origin request each: the same path is two objects, one per distribution.
        assert_eq!((a.hits(), b.hits()), (1, 1));

        // A request in absolute form is for the target's host, whatever `Host` says: it can
        // neither fetch b.test's page nor store anything under a.test's name.
        let answer = raw(
            edge.addr,
            "GET http://a.test/page HTTP/1.1\r\nHost: b.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.contains("A /page") && !answer.contains("B /page"),
            "{answer}"
        );
        assert_eq!((a.hits(), b.hits()), (1, 1));

        // One valid Host, or 400 (RFC 9112 §3.2).
        for bad in ["Host: a.test\r\nHost: b.test", "Host: evil/x.a.test"] {
            let request = format!("GET /page HTTP/1.1\r\n{bad}\r\nConnection: close\r\n\r\n");
            let answer = raw(edge.addr, &request).await;
            assert!(answer.starts_with("HTTP/1.1 400"), "{bad}: {answer}");
        }

        // A wildcard name, any case and with a port, belongs to its distribution.
        let www = get("/page", "WWW.A.test:80").await;
        assert!(www.text().contains("A /page"));

        // Names nobody serves are refused, never answered with another site's content.
        for host in ["c.test", "a.b.test", "deep.www.a.test"] {
            let answer = get("/page", host).await;
            assert_eq!(answer.status, StatusCode::MISDIRECTED_REQUEST, "{host}");
            assert!(answer.text().contains(host), "{}", answer.text());
            assert!(!answer.text().contains("/page"));
        }

        // The group from the file fails over to its secondary, whose answer is cached.
        let failed_over = get("/fail/x", "b.test").await;
        assert_eq!(failed_over.status, StatusCode::OK);
        assert!(
            failed_over.text().contains("backup /fail/x"),
            "{}",
            failed_over.text()
        );
        let cached = get("/fail/x", "b.test").await;
        assert!(cached.x_cache().starts_with("Hit"), "{}", cached.x_cache());
        assert_eq!(backup.hits(), 1);
        assert_eq!(b.hits(), 2);

        // Which origin answered shows in the metrics.
        let metrics = send(
            &client,
            edge.admin.unwrap(),
            "GET",
            "/metrics",
            &[("authorization", "Bearer t0ken")],
            "",
        )
        .await
        .text();
        for line in [
            "tower_cdn_origin_group_failovers_total{group=\"b-with-backup\"} 1",
            "tower_cdn_origin_requests_by_origin_total{origin=\"backup\"} 1",
            "tower_cdn_origin_requests_by_origin_total{origin=\"b\"} 2",
            "tower_cdn_origin_requests_by_origin_total{origin=\"a\"} 2",
            "tower_cdn_origin_requests_total 4\n",
        ] {
            assert!(metrics.contains(line), "{line} not in\n{metrics}");
        }
        edge.stop().await;
    })
    .await;
}

/// A self-signed certificate for `name`, in PEM, with its key.
fn certificate(name: &str) -> (String, String) {
    let generated = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// A GET over TLS to `addr`, asking for `name` by SNI and `host` in `Host`, trusting `roots`
/// only. Returns the certificate the edge presented and the answer.
async fn get_over_tls(
    addr: SocketAddr,
    (name, host): (&str, &str),
    roots: &[&str],
) -> (CertificateDer<'static>, Answer) {
    let mut store = RootCertStore::empty();
    for pem in roots {
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem.as_bytes()) {
            store.add(cert.unwrap()).unwrap();
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let stream = connector
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
        .expect("the edge presented a certificate valid for the name asked for");
    let presented = stream.get_ref().1.peer_certificates().unwrap()[0].clone();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/page")
        .header(header::HOST, host)
        .body(Full::<Bytes>::default())
        .unwrap();
    let answer = collect(sender.send_request(request).await.unwrap()).await;
    (presented, answer)
}

#[tokio::test]
async fn sni_picks_each_distribution_certificate() {
    within(async {
        let (a_cert, a_key) = certificate("a.test");
        let (b_cert, b_key) = certificate("b.test");
        let dir = TempFile::new("unused", "");
        let paths = [
            dir.sibling("a.pem", &a_cert),
            dir.sibling("a.key", &a_key),
            dir.sibling("b.pem", &b_cert),
            dir.sibling("b.key", &b_key),
        ];
        let tls_lines = |text: String| {
            text.replacen(
                "name = \"site-a\"",
                &format!(
                    "name = \"site-a\"\ntls_cert = {:?}\ntls_key = {:?}",
                    paths[0], paths[1]
                ),
                1,
            )
            .replacen(
                "name = \"site-b\"",
                &format!(
                    "name = \"site-b\"\ntls_cert = {:?}\ntls_key = {:?}",
                    paths[2], paths[3]
                ),
                1,
            )
        };
        let (file, _a, _b, _backup) = two_sites("https_listen = \"127.0.0.1:0\"").await;
        let text = tls_lines(std::fs::read_to_string(&file.path).unwrap());
        std::fs::write(&file.path, text).unwrap();
        let edge = Running::start(config_from(&file.path).unwrap()).await;
        let https = edge.https.unwrap();

        let (presented, answer) = get_over_tls(https, ("a.test", "a.test"), &[&a_cert]).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.text().contains("A /page"));
        let a_der: Vec<u8> = rustls::pki_types::pem::PemObject::from_pem_slice(a_cert.as_bytes())
            .map(|c: CertificateDer<'static>| c.to_vec())
            .unwrap();
        assert_eq!(presented.to_vec(), a_der);

        let (_, answer) = get_over_tls(https, ("b.test", "b.test"), &[&b_cert]).await;
        assert!(answer.text().contains("B /page"));

        // A connection opened for a.test (with a.test's certificate) does not serve b.test.
        let (_, fronted) = get_over_tls(https, ("a.test", "b.test"), &[&a_cert]).await;
        assert_eq!(fronted.status, StatusCode::MISDIRECTED_REQUEST);
        assert!(!fronted.text().contains("B /page"), "{}", fronted.text());
        edge.stop().await;
    })
    .await;
}

/// The error `tower-cdn --config` reports for `text`.
fn config_error(text: &str) -> String {
    let file = TempFile::new("bad.toml", text);
    let err = config_from(&file.path).unwrap_err().to_string();
    assert!(err.contains(&file.path.display().to_string()), "{err}");
    err
}

#[test]
fn config_errors_name_the_file_line_and_field() {
    let origins = "[origins.api]\nurl = \"http://127.0.0.1:9002\"\n\n[origins.site]\nurl = \"http://127.0.0.1:9001\"\n";

    let err = config_error(&format!(
        "{origins}\n[default_behavior]\norigin = \"site\"\n\n[[behaviors]]\npath = \"/api/*\"\norigin = \"apii\"\n"
    ));
    assert!(
        err.contains("line 12") && err.contains("behaviors[0].origin"),
        "{err}"
    );
    assert!(err.contains("`apii`") && err.contains("api, site"), "{err}");

    let err = config_error(&format!(
        "{origins}\n[origin_groups.ha]\nprimary = \"site\"\nsecondary = \"site-2\"\n"
    ));
    assert!(
        err.contains("line 9") && err.contains("origin_groups.ha.secondary"),
        "{err}"
    );
    assert!(err.contains("`site-2` is not a declared origin"), "{err}");

    let err = config_error(&format!(
        "{origins}\n[origins.api]\nurl = \"http://127.0.0.1:9003\"\n"
    ));
    assert!(err.contains("line 7") && err.contains("api"), "{err}");

    let err = config_error(&format!(
        "{origins}\n[[distributions]]\nhosts = [\"a.test\"]\n[distributions.default_behavior]\norigin = \"site\"\n\n\
         [[distributions]]\nhosts = [\"b.test\", \"A.test\"]\n[distributions.default_behavior]\norigin = \"api\"\n"
    ));
    assert!(
        err.contains("line 13") && err.contains("distributions[1].hosts"),
        "{err}"
    );
    assert!(
        err.contains("already served by distribution `a.test`"),
        "{err}"
    );

    let err = config_error(&format!(
        "{origins}\n[[behaviors]]\npath = \"/x/*\"\norigin = \"site\"\n"
    ));
    assert!(
        err.contains("default_behavior.origin") && err.contains("several origins"),
        "{err}"
    );

    let err = config_error(&format!(
        "{origins}\n[origins.web]\nurl = \"http://127.0.0.1:9004\"\nheaders = {{ \"host\" = \"x\" }}\n"
    ));
    assert!(err.contains("line 9") && err.contains("host"), "{err}");
}

#[tokio::test]
async fn access_controls_come_from_the_file() {
    within(async {
        let (site_url, site) = start_origin("site").await;
        let dir = TempFile::new("unused", "");
        let seed = [7u8; 32];
        let seed_file = dir.dir.join("k1.seed");
        std::fs::write(&seed_file, seed).unwrap();
        // The key group entry as `tower-cdn public-key` prints it.
        let cli = Cli::try_parse_from([
            "tower-cdn",
            "public-key",
            "--key-file",
            seed_file.to_str().unwrap(),
            "--key-id",
            "K1",
        ])
        .unwrap();
        let Some(tower_cdn::server::Command::PublicKey(args)) = cli.command else {
            panic!("not the public-key command");
        };
        let entry = args.entry().unwrap();
        assert!(
            entry.starts_with("{ id = \"K1\", ed25519_public_key = \""),
            "{entry}"
        );
        let text = format!(
            r#"
[origins.site]
url = "{site_url}"

[key_groups.members]
keys = [{entry}]

[geo_restriction]
block = ["FR"]
header = "x-viewer-country"

[rate_limit]
per_minute = 3
burst = 3
key_header = "x-client"

[default_behavior]
origin = "site"

[[behaviors]]
path = "/members/*"
trusted_key_group = "members"
"#
        );
        let file = TempFile::new("access.toml", &text);
        let edge = Running::start(config_from(&file.path).unwrap()).await;
        let client = viewer();
        // A GET from the client with rate-limit key `who`, in `country`.
        let get = async |path: &str, who: &str, country: &str| {
            let from = [("x-client", who), ("x-viewer-country", country)];
            send(&client, edge.addr, "GET", path, &from, "").await
        };

        // Signed URLs, as `tower-cdn sign` prints them, for the key the file trusts.
        let unsigned = get("/members/a", "1", "DE").await;
        assert_eq!(unsigned.status, StatusCode::FORBIDDEN);
        // Asking for a connection upgrade does not get around the viewer rules.
        let upgrade = raw(
            edge.addr,
            "GET /members/a HTTP/1.1\r\nHost: edge.test\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nx-client: 1u\r\nx-viewer-country: DE\r\n\r\n",
        )
        .await;
        assert!(upgrade.starts_with("HTTP/1.1 403"), "{upgrade}");
        let blocked = raw(
            edge.addr,
            "GET /page HTTP/1.1\r\nHost: edge.test\r\nConnection: Upgrade\r\n\
             Upgrade: websocket\r\nx-client: 1v\r\nx-viewer-country: FR\r\n\r\n",
        )
        .await;
        assert!(blocked.starts_with("HTTP/1.1 403"), "{blocked}");
        assert_eq!(site.hits(), 0);
        let url = format!("http://{}/members/a", edge.addr);
        let sign = Cli::try_parse_from([
            "tower-cdn",
            "sign",
            "--url",
            &url,
            "--key-id",
            "K1",
            "--key-file",
            seed_file.to_str().unwrap(),
        ])
        .unwrap();
        let Some(tower_cdn::server::Command::Sign(args)) = sign.command else {
            panic!("not the sign command");
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let signed = args.sign(now).unwrap();
        let path = signed
            .strip_prefix(&format!("http://{}", edge.addr))
            .unwrap();
        let allowed = get(path, "2", "DE").await;
        assert_eq!(allowed.status, StatusCode::OK, "{}", allowed.text());
        assert_eq!(site.last().path, "/members/a");
        assert_eq!(site.hits(), 1);

        // Geo restriction by the trusted header.
        let blocked = get("/page", "3", "FR").await;
        assert_eq!(blocked.status, StatusCode::FORBIDDEN);
        let open = get("/page", "4", "DE").await;
        assert_eq!(open.status, StatusCode::OK);
        assert_eq!(site.hits(), 2);

        // Per-client rate limit, keyed by the configured header.
        for _ in 0..3 {
            let ok = get("/page", "flood", "DE").await;
            assert_eq!(ok.status, StatusCode::OK);
        }
        let limited = get("/page", "flood", "DE").await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
        assert!(limited.headers.contains_key("retry-after"));
        let other = get("/page", "5", "DE").await;
        assert_eq!(other.status, StatusCode::OK);
        edge.stop().await;
    })
    .await;
}
