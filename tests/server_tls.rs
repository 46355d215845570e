//! TLS on both sides of the edge over loopback: viewers on the HTTPS listener (self-signed
//! certificate generated at start), and an `https://` origin whose test certificate is
//! trusted through the origin CA file, also reached only by HTTPS viewers when the origin's
//! protocol matches the viewer's.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, routing::get, Router};
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
    ClientConfig, RootCertStore, ServerConfig as TlsServerConfig,
};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tokio_rustls::TlsAcceptor;
use tower_cdn::server::{OriginConfig, OriginProtocol, Server, ServerConfig, ServerError};

const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Requests the origin received, and the `X-Forwarded-Proto` of the last one.
#[derive(Default)]
struct Origin {
    hits: AtomicUsize,
    forwarded_proto: Mutex<Option<String>>,
}

impl Origin {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

async fn cacheable(
    State(origin): State<Arc<Origin>>,
    headers: HeaderMap,
) -> impl axum::response::IntoResponse {
    origin.hits.fetch_add(1, Ordering::SeqCst);
    *origin.forwarded_proto.lock().unwrap() = headers
        .get("x-forwarded-proto")
        .map(|value| value.to_str().unwrap().to_owned());
    ([("cache-control", "public, max-age=60")], "hello over tls")
}

fn origin_app() -> (Router, Arc<Origin>) {
    let origin = Arc::new(Origin::default());
    let app = Router::new()
        .route("/obj", get(cacheable))
        .with_state(origin.clone());
    (app, origin)
}

async fn start_plain_origin() -> (SocketAddr, Arc<Origin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (app, origin) = origin_app();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, origin)
}

/// A test certificate for 127.0.0.1 and localhost, and its key, both in PEM.
fn test_certificate() -> (String, String) {
    let generated =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    (generated.cert.pem(), generated.signing_key.serialize_pem())
}

/// An HTTPS origin on loopback, serving with the given certificate.
async fn start_tls_origin(cert_pem: &str, key_pem: &str) -> (SocketAddr, Arc<Origin>) {
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let config = TlsServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (app, origin) = origin_app();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, app) = (acceptor.clone(), app.clone());
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(stream).await else {
                    return;
                };
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), TowerToHyperService::new(app))
                    .await;
            });
        }
    });
    (addr, origin)
}

/// A file in the temporary directory, removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let path =
            std::env::temp_dir().join(format!("tower-cdn-test-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        Self(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Edge {
    addr: SocketAddr,
    https_addr: Option<SocketAddr>,
    certificate: Option<String>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn start_edge(config: ServerConfig) -> Edge {
    let server = Server::bind(config).await.unwrap();
    let (addr, https_addr) = (server.local_addr(), server.https_addr());
    let certificate = server.self_signed_certificate().map(str::to_owned);
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge {
        addr,
        https_addr,
        certificate,
        stop,
        task,
    }
}

fn edge_config(origin: String) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.origin = Some(origin.parse().unwrap());
    config
}

/// A client that trusts only the certificates in `ca_pem`.
fn tls_client(ca_pem: &str) -> Client<HttpsConnector<HttpConnector>, Full<Bytes>> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .build();
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn read<B>(response: Response<B>) -> Response<Bytes>
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn x_cache(response: &Response<Bytes>) -> &str {
    response.headers()["x-cache"].to_str().unwrap()
}

#[tokio::test]
async fn https_viewers_get_a_miss_then_a_hit_with_the_self_signed_certificate() {
    within(async {
        let (origin_addr, origin) = start_plain_origin().await;
        let mut config = edge_config(format!("http://{origin_addr}"));
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        let edge = start_edge(config).await;
        let https_addr = edge.https_addr.expect("an HTTPS listener");
        let client = tls_client(
            edge.certificate
                .as_deref()
                .expect("a generated certificate"),
        );
        let get = || {
            Request::get(format!("https://127.0.0.1:{}/obj", https_addr.port()))
                .body(Full::default())
                .unwrap()
        };

        let first = read(client.request(get()).await.unwrap()).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(x_cache(&first), "Miss from tower-cdn");
        assert_eq!(
            origin.forwarded_proto.lock().unwrap().as_deref(),
            Some("https")
        );

        let second = read(client.request(get()).await.unwrap()).await;
        assert_eq!(x_cache(&second), "Hit from tower-cdn");
        assert_eq!(second.body(), "hello over tls");
        assert_eq!(origin.hits(), 1);

        // Plain HTTP is served at the same time; its objects are kept apart from HTTPS ones,
        // since the origin may answer differently (it sees X-Forwarded-Proto: http).
        let plain = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri = format!("http://{}/obj", edge.addr);
        let over_http = read(plain.get(uri.parse().unwrap()).await.unwrap()).await;
        assert_eq!(over_http.status(), StatusCode::OK);
        assert_eq!(x_cache(&over_http), "Miss from tower-cdn");
        assert_eq!(
            origin.forwarded_proto.lock().unwrap().as_deref(),
            Some("http")
        );
        assert_eq!(origin.hits(), 2);

        edge.stop.send(()).unwrap();
        edge.task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn certificate_files_are_served() {
    within(async {
        let (origin_addr, _origin) = start_plain_origin().await;
        let (cert_pem, key_pem) = test_certificate();
        let cert_file = TempFile::new("cert.pem", &cert_pem);
        let key_file = TempFile::new("key.pem", &key_pem);
        let mut config = edge_config(format!("http://{origin_addr}"));
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        config.tls_cert = Some(cert_file.0.clone());
        config.tls_key = Some(key_file.0.clone());
        let edge = start_edge(config).await;
        assert!(edge.certificate.is_none(), "files given, nothing generated");

        let client = tls_client(&cert_pem);
        let uri = format!("https://127.0.0.1:{}/obj", edge.https_addr.unwrap().port());
        let response = read(client.get(uri.parse().unwrap()).await.unwrap()).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "hello over tls");
    })
    .await;
}

#[tokio::test]
async fn https_origin_trusted_through_the_ca_file() {
    within(async {
        let (cert_pem, key_pem) = test_certificate();
        let (origin_addr, origin) = start_tls_origin(&cert_pem, &key_pem).await;
        let ca_file = TempFile::new("origin-ca.pem", &cert_pem);
        let mut config = edge_config(format!("https://127.0.0.1:{}", origin_addr.port()));
        config.origin_ca = Some(ca_file.0.clone());
        let edge = start_edge(config).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri: http::Uri = format!("http://{}/obj", edge.addr).parse().unwrap();

        let first = read(client.get(uri.clone()).await.unwrap()).await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.body(), "hello over tls");
        assert_eq!(x_cache(&first), "Miss from tower-cdn");
        let second = read(client.get(uri).await.unwrap()).await;
        assert_eq!(x_cache(&second), "Hit from tower-cdn");
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn an_untrusted_https_origin_is_a_bad_gateway() {
    within(async {
        let (cert_pem, key_pem) = test_certificate();
        let (origin_addr, origin) = start_tls_origin(&cert_pem, &key_pem).await;
        // No CA file: the built-in Mozilla roots do not know the test certificate.
        let config = edge_config(format!("https://127.0.0.1:{}", origin_addr.port()));
        let edge = start_edge(config).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri = format!("http://{}/obj", edge.addr).parse().unwrap();

        let response = read(client.get(uri).await.unwrap()).await;

        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(origin.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn match_viewer_origins_are_reached_over_the_viewers_protocol() {
    within(async {
        let (cert_pem, key_pem) = test_certificate();
        let (plain_addr, plain) = start_plain_origin().await;
        let (tls_addr, tls) = start_tls_origin(&cert_pem, &key_pem).await;
        let ca_file = TempFile::new("origin-ca.pem", &cert_pem);
        let mut origin = OriginConfig::new(
            "site",
            format!("http://127.0.0.1:{}", plain_addr.port())
                .parse()
                .unwrap(),
        )
        .protocol(OriginProtocol::MatchViewer);
        origin.https_port = Some(tls_addr.port());
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        config.origin_ca = Some(ca_file.0.clone());
        config.origins = vec![origin];
        let edge = start_edge(config).await;

        let plain_client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let uri = format!("http://{}/obj", edge.addr).parse().unwrap();
        let over_http = read(plain_client.get(uri).await.unwrap()).await;
        assert_eq!(over_http.status(), StatusCode::OK);
        assert_eq!((plain.hits(), tls.hits()), (1, 0));

        let client = tls_client(edge.certificate.as_deref().unwrap());
        let https_port = edge.https_addr.unwrap().port();
        let uri = format!("https://127.0.0.1:{https_port}/obj")
            .parse()
            .unwrap();
        let over_https = read(client.get(uri).await.unwrap()).await;
        assert_eq!(over_https.status(), StatusCode::OK);
        assert_eq!(over_https.body(), "hello over tls");
        assert_eq!((plain.hits(), tls.hits()), (1, 1));
        edge.stop.send(()).unwrap();
        edge.task.await.unwrap().unwrap();
    })
    .await;
}
