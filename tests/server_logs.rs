//! What the edge server writes to its log, read back from a capturing subscriber: the
//! access log names the viewer the trusted proxies resolve (and the connection's peer
//! apart), and a failed origin connection names the address that was tried.

use std::{
    future::Future,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{routing::get, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, sync::oneshot};
use tower_cdn::server::{DistributionConfig, OriginConfig, OriginProtocol, Server, ServerConfig};
use tracing_subscriber::fmt::MakeWriter;

const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// Everything logged while the guard lives, on this thread (the tests' runtime is
/// single-threaded, so the server's tasks log here too).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    fn install(&self, filter: &str) -> tracing::subscriber::DefaultGuard {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(self.clone())
            .finish();
        tracing::subscriber::set_default(subscriber)
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

async fn start_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/page", get(|| async { "page" }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

async fn start_edge(config: ServerConfig) -> (SocketAddr, oneshot::Sender<()>) {
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

#[tokio::test]
async fn the_access_log_names_the_viewer_behind_a_trusted_proxy_and_the_peer_apart() {
    let logs = Captured::default();
    let _guard = logs.install("warn,tower_cdn::access=info");
    within(async {
        let origin = start_origin().await;
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.origin = Some(format!("http://{origin}").parse().unwrap());
        config.distributions = vec![DistributionConfig::new("site")
            .configure_layer(|layer| layer.trusted_proxies(["127.0.0.0/8"]))];
        let (edge, _stop) = start_edge(config).await;

        let request = Request::get(format!("http://{edge}/page"))
            .header("x-forwarded-for", "203.0.113.9")
            .body(Empty::new())
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();

        let text = logs.text();
        let line = text
            .lines()
            .find(|line| line.contains("tower_cdn::access"))
            .unwrap_or_else(|| panic!("no access log line in {text}"));
        assert!(line.contains("client=203.0.113.9"), "{line}");
        assert!(line.contains("peer=127.0.0.1"), "{line}");
    })
    .await;
}

#[tokio::test]
async fn a_failed_origin_connection_names_the_address_tried_in_the_log_only() {
    let logs = Captured::default();
    let _guard = logs.install("warn");
    within(async {
        // A port that was just free and now has no listener: connections are refused.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_port = closed.local_addr().unwrap().port();
        drop(closed);
        // match-viewer with an https:// URL: plain-HTTP viewers go to http_port.
        let mut origin = OriginConfig::new("app", "https://127.0.0.1".parse().unwrap())
            .protocol(OriginProtocol::MatchViewer);
        origin.http_port = Some(closed_port);
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.origins = vec![origin];
        let (edge, _stop) = start_edge(config).await;

        let request = Request::get(format!("http://{edge}/page"))
            .body(Empty::new())
            .unwrap();
        let response = client().request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let address = format!("127.0.0.1:{closed_port}");
        assert!(
            !String::from_utf8_lossy(&body).contains(&address),
            "the viewer is told the origin's address: {body:?}"
        );

        let text = logs.text();
        assert!(
            text.contains(&format!("origin request to http://{address} failed")),
            "{text}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_redirect_to_https_without_an_https_listener_and_a_self_signed_site_are_logged() {
    let logs = Captured::default();
    let _guard = logs.install("warn");
    within(async {
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.origin = Some("http://127.0.0.1:9".parse().unwrap());
        config.viewer_protocol = tower_cdn::server::ViewerProtocol::RedirectToHttps;
        let _server = Server::bind(config).await.unwrap();
        let text = logs.text();
        assert!(
            text.contains("no HTTPS listener is configured (--https-listen / https_listen)"),
            "{text}"
        );

        // With an HTTPS listener and no certificate, the generated one is said to be served.
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        config.origin = Some("http://127.0.0.1:9".parse().unwrap());
        config.distributions = vec![DistributionConfig::new("blog").hosts(["blog.test"])];
        let _server = Server::bind(config).await.unwrap();
        let text = logs.text();
        assert!(
            text.contains("get the generated self-signed certificate for localhost"),
            "{text}"
        );
        assert!(text.contains("distribution=blog"), "{text}");
    })
    .await;
}
