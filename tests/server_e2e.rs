//! The edge server over real loopback sockets: a counting origin, the edge in
//! front of it, and a plain hyper client as the viewer.

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{
    extract::State,
    http::{HeaderMap, Method},
    response::IntoResponse,
    routing::{any, get},
    Router,
};
use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, sync::oneshot, sync::Notify, task::JoinHandle};
#[path = "support/redis.rs"]
mod redis_server;

use tower_cdn::{
    server::{HostHeader, Server, ServerConfig, ServerError, ViewerProtocol},
    AllowedMethods,
};

/// Upper bound for any one test, so that a hang fails instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// One request as the origin received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    headers: HeaderMap,
    body: Bytes,
}

/// Shared state of the test origin.
#[derive(Default)]
struct Origin {
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Signalled when `/slow` has a request in hand.
    arrived: Notify,
    /// Lets `/slow` answer.
    release: Notify,
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
            .expect("origin saw no request")
    }
}

async fn record(
    State(origin): State<Arc<Origin>>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    origin.hits.fetch_add(1, Ordering::SeqCst);
    origin.seen.lock().unwrap().push(Seen {
        method,
        headers,
        body,
    });
    (
        [
            ("cache-control", "public, max-age=60"),
            // Hop-by-hop fields the edge must not pass on to viewers.
            ("connection", "x-origin-hop"),
            ("x-origin-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authenticate", "Basic realm=\"origin\""),
        ],
        "hello from origin",
    )
}

async fn slow(State(origin): State<Arc<Origin>>) -> &'static str {
    origin.arrived.notify_one();
    origin.release.notified().await;
    "slow done"
}

/// Starts the test origin on a free loopback port.
async fn start_origin() -> (SocketAddr, Arc<Origin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin::default());
    let app = Router::new()
        .route("/echo", any(record))
        .route("/slow", get(slow))
        .route("/hang", get(std::future::pending::<()>))
        .with_state(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, origin)
}

fn edge_config(origin: Option<SocketAddr>) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.origin = origin.map(|addr| format!("http://{addr}").parse().unwrap());
    config
}

/// A running edge and the means to stop it.
struct Edge {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

async fn start_edge(config: ServerConfig) -> Edge {
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge { addr, stop, task }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

fn request(method: Method, edge: SocketAddr, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{edge}{path}"))
}

/// Sends a request through a fresh client and reads the whole response.
async fn send(request: Request<Full<Bytes>>) -> Response<Bytes> {
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

async fn fetch(edge: SocketAddr, path: &str) -> Response<Bytes> {
    send(
        request(Method::GET, edge, path)
            .body(Full::default())
            .unwrap(),
    )
    .await
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|value| value.to_str().unwrap())
}

#[tokio::test]
async fn get_is_proxied_with_forwarding_headers() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;

        let response = send(
            request(Method::GET, edge.addr, "/echo?lang=en")
                .header(header::HOST, "www.example.test")
                .body(Full::default())
                .unwrap(),
        )
        .await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "hello from origin");
        assert_eq!(header_str(response.headers(), "via"), Some("1.1 tower-cdn"));
        let seen = origin.last();
        assert_eq!(seen.method, Method::GET);
        assert_eq!(header_str(&seen.headers, "via"), Some("1.1 tower-cdn"));
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-for"),
            Some("127.0.0.1")
        );
        assert_eq!(header_str(&seen.headers, "x-forwarded-proto"), Some("http"));
        assert_eq!(header_str(&seen.headers, "host"), Some("www.example.test"));
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn forwarding_headers_replace_what_the_viewer_sent() {
    // The edge alone says who the viewer is: a viewer's X-Forwarded-For or Forwarded is not in
    // the cache key, so it must not reach the origin (issue #16 item 4). Via is appended to
    // (RFC 9110 §7.6.3).
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;

        let response = send(
            request(Method::GET, edge.addr, "/echo")
                .header(header::HOST, "www.example.test")
                .header("x-forwarded-for", "203.0.113.7")
                .header("forwarded", "for=203.0.113.7;host=evil.example")
                .header("via", "1.1 corporate-proxy")
                .body(Full::default())
                .unwrap(),
        )
        .await;

        assert_eq!(response.status(), StatusCode::OK);
        let seen = origin.last();
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-for"),
            Some("127.0.0.1")
        );
        assert_eq!(seen.headers.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(
            header_str(&seen.headers, "forwarded"),
            Some("for=127.0.0.1;proto=http;host=www.example.test")
        );
        assert_eq!(
            header_str(&seen.headers, "via"),
            Some("1.1 corporate-proxy, 1.1 tower-cdn")
        );
    })
    .await;
}

#[tokio::test]
async fn origin_host_mode_sends_the_origin_authority() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.host_header = HostHeader::Origin;
        let edge = start_edge(config).await;

        send(
            request(Method::GET, edge.addr, "/echo")
                .header(header::HOST, "www.example.test")
                .body(Full::default())
                .unwrap(),
        )
        .await;

        let seen = origin.last();
        let origin_authority = origin_addr.to_string();
        assert_eq!(header_str(&seen.headers, "host"), Some(&*origin_authority));
        assert_eq!(
            header_str(&seen.headers, "x-forwarded-host"),
            Some("www.example.test")
        );
    })
    .await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_not_forwarded() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;

        let response = send(
            request(Method::GET, edge.addr, "/echo")
                .header(header::CONNECTION, "keep-alive, x-viewer-hop")
                .header("x-viewer-hop", "1")
                .header("keep-alive", "timeout=5")
                .header("proxy-connection", "keep-alive")
                .header(header::PROXY_AUTHORIZATION, "Basic dmlld2VyOnNlY3JldA==")
                .header(header::TE, "trailers")
                .header("x-end-to-end", "kept")
                .body(Full::default())
                .unwrap(),
        )
        .await;

        let seen = origin.last();
        for name in [
            "connection",
            "x-viewer-hop",
            "keep-alive",
            "proxy-connection",
            "proxy-authorization",
            "te",
            "transfer-encoding",
        ] {
            assert!(!seen.headers.contains_key(name), "origin received {name}");
        }
        assert_eq!(header_str(&seen.headers, "x-end-to-end"), Some("kept"));

        for name in ["x-origin-hop", "keep-alive", "proxy-authenticate"] {
            assert!(
                !response.headers().contains_key(name),
                "viewer received {name}"
            );
        }
        assert_eq!(
            header_str(response.headers(), "cache-control"),
            Some("public, max-age=60")
        );
    })
    .await;
}

#[tokio::test]
async fn by_default_only_get_and_head_reach_the_origin() {
    // CloudFront's default allowed methods: other methods get 403 from the edge.
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;
        for method in [
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::PATCH,
            Method::OPTIONS,
        ] {
            let response = send(
                request(method.clone(), edge.addr, "/echo")
                    .body(Full::from("form=1"))
                    .unwrap(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method}");
            assert_eq!(
                header_str(response.headers(), "x-cache"),
                Some("Error from tower-cdn"),
                "{method}"
            );
        }
        assert_eq!(origin.hits(), 0, "a refused method reached the origin");
        for method in [Method::GET, Method::HEAD] {
            let response = send(
                request(method.clone(), edge.addr, "/echo")
                    .body(Full::default())
                    .unwrap(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{method}");
        }
        assert_eq!(origin.hits(), 1, "HEAD is answered from the stored GET");
    })
    .await;
}

#[tokio::test]
async fn request_bodies_and_all_methods_reach_the_origin() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.allowed_methods = AllowedMethods::all();
        let edge = start_edge(config).await;
        // Larger than any single read, so the body has to be streamed through.
        let payload = Bytes::from(vec![b'x'; 256 * 1024]);

        let response = send(
            request(Method::POST, edge.addr, "/echo")
                .body(Full::new(payload.clone()))
                .unwrap(),
        )
        .await;
        assert_eq!(response.status(), StatusCode::OK);
        let seen = origin.last();
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.body, payload);

        for method in [Method::PUT, Method::DELETE, Method::PATCH, Method::OPTIONS] {
            let body = Full::from(format!("{method} body"));
            let response = send(
                request(method.clone(), edge.addr, "/echo")
                    .body(body)
                    .unwrap(),
            )
            .await;
            assert_eq!(response.status(), StatusCode::OK, "{method}");
            let seen = origin.last();
            assert_eq!(seen.method, method);
            assert_eq!(seen.body, format!("{method} body"));
        }
    })
    .await;
}

#[tokio::test]
async fn unreachable_origin_gives_502() {
    within(async {
        // A port that was just free and now has no listener: connections are refused.
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let closed_addr = closed.local_addr().unwrap();
        drop(closed);
        let edge = start_edge(edge_config(Some(closed_addr))).await;

        let response = fetch(edge.addr, "/anything").await;

        assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
        assert!(response.body().starts_with(b"502 Bad Gateway"));
        assert_eq!(
            header_str(response.headers(), "cache-control"),
            Some("no-store")
        );
        // The edge's own answer, not the origin's: an error (RFC 9211 §2.7 detail).
        assert_eq!(
            header_str(response.headers(), "x-cache"),
            Some("Error from tower-cdn")
        );
        assert_eq!(
            header_str(response.headers(), "cache-status"),
            Some("tower-cdn; fwd=uri-miss; detail=connect-error")
        );
    })
    .await;
}

#[tokio::test]
async fn slow_origin_gives_504_after_the_timeout() {
    within(async {
        let (origin_addr, _origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.origin_timeout = Duration::from_millis(200);
        let edge = start_edge(config).await;

        let response = fetch(edge.addr, "/hang").await;

        assert_eq!(response.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(response.body().starts_with(b"504 Gateway Timeout"));
        assert_eq!(
            header_str(response.headers(), "x-cache"),
            Some("Error from tower-cdn")
        );
        assert_eq!(
            header_str(response.headers(), "cache-status"),
            Some("tower-cdn; fwd=uri-miss; detail=origin-timeout")
        );
    })
    .await;
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;
        let in_flight = tokio::spawn(fetch(edge.addr, "/slow"));
        origin.arrived.notified().await;

        edge.stop.send(()).unwrap();
        // A refused connection means the server has closed its listener and is draining.
        while tokio::net::TcpStream::connect(edge.addr).await.is_ok() {
            tokio::task::yield_now().await;
        }
        assert!(
            !edge.task.is_finished(),
            "server stopped with a request in flight"
        );
        origin.release.notify_one();

        let response = in_flight.await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.body(), "slow done");
        edge.task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn demo_origin_serves_index_with_validators() {
    within(async {
        let edge = start_edge(edge_config(None)).await;

        let page = fetch(edge.addr, "/").await;
        assert_eq!(page.status(), StatusCode::OK);
        assert!(String::from_utf8_lossy(page.body()).contains("tower-cdn demo origin"));
        assert_eq!(
            header_str(page.headers(), "cache-control"),
            Some("public, max-age=60")
        );
        assert!(page.headers().contains_key(header::ETAG));
        assert!(page.headers().contains_key(header::LAST_MODIFIED));

        let css = fetch(edge.addr, "/style.css").await;
        assert_eq!(
            header_str(css.headers(), "cache-control"),
            Some("public, max-age=86400")
        );
        let big = fetch(edge.addr, "/big.txt").await;
        assert_eq!(big.body().len(), 64 * 1024);

        edge.stop.send(()).unwrap();
        edge.task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn miss_then_hit_over_sockets() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;

        let first = fetch(edge.addr, "/echo").await;
        let second = fetch(edge.addr, "/echo").await;

        assert_eq!(
            header_str(first.headers(), "x-cache"),
            Some("Miss from tower-cdn")
        );
        assert_eq!(
            header_str(second.headers(), "x-cache"),
            Some("Hit from tower-cdn")
        );
        assert_eq!(second.body(), "hello from origin");
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn http_is_redirected_to_https_when_configured() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.viewer_protocol = ViewerProtocol::RedirectToHttps;
        let edge = start_edge(config).await;

        let response = fetch(edge.addr, "/echo?x=1").await;

        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        let location = header_str(response.headers(), "location").unwrap();
        // No HTTPS listener here: HTTPS is on 443 (a TLS proxy in front), never on the
        // plain-HTTP port the viewer used.
        assert_eq!(location, format!("https://{}/echo?x=1", edge.addr.ip()));
        assert_eq!(origin.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn the_redirect_to_https_names_the_https_listeners_port() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        config.viewer_protocol = ViewerProtocol::RedirectToHttps;
        let server = Server::bind(config).await.unwrap();
        let https = server.https_addr().unwrap();
        let addr = server.local_addr();
        let (_stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));

        let response = fetch(addr, "/p?x=1").await;

        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        assert_eq!(
            header_str(response.headers(), "location").unwrap(),
            format!("https://127.0.0.1:{}/p?x=1", https.port())
        );
        assert_ne!(https.port(), addr.port());
        assert_eq!(origin.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn admin_purge_over_sockets() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        config.admin_token = Some("token-1".to_owned());
        let server = Server::bind(config).await.unwrap();
        let (addr, admin) = (server.local_addr(), server.admin_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async {
            let _ = stopped.await;
        }));

        fetch(addr, "/echo").await;
        let purge = |token: &'static str| {
            request(Method::POST, admin, "/purge")
                .header("authorization", format!("Bearer {token}"))
                .body(Full::from(r#"{"paths": ["/echo"]}"#))
                .unwrap()
        };
        assert_eq!(send(purge("nope")).await.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header_str(fetch(addr, "/echo").await.headers(), "x-cache"),
            Some("Hit from tower-cdn")
        );
        let purged = send(purge("token-1")).await;
        assert_eq!(
            (purged.status(), purged.body().as_ref()),
            (StatusCode::OK, &br#"{"purged":1}"#[..])
        );
        assert_eq!(
            header_str(fetch(addr, "/echo").await.headers(), "x-cache"),
            Some("Miss from tower-cdn")
        );
        assert_eq!(origin.hits(), 2);

        stop.send(()).unwrap();
        task.await.unwrap().unwrap();
    })
    .await;
}

#[tokio::test]
async fn admin_listen_without_a_token_is_refused() {
    let mut config = edge_config(None);
    config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
    let err = Server::bind(config).await.unwrap_err();
    assert!(err.to_string().contains("admin token"), "{err}");
}

#[tokio::test]
async fn too_many_header_fields_get_431() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(edge_config(Some(origin_addr))).await;
        let mut stream = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        let mut head = String::from("GET /echo HTTP/1.1\r\nhost: x\r\n");
        for i in 0..200 {
            head.push_str(&format!("x-h{i}: v\r\n"));
        }
        head.push_str("\r\n");
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes())
            .await
            .unwrap();
        let mut answer = vec![0; 64];
        let n = tokio::io::AsyncReadExt::read(&mut stream, &mut answer)
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");
        assert_eq!(origin.hits(), 0);
    })
    .await;
}

#[tokio::test]
async fn connections_over_the_limit_are_closed() {
    within(async {
        let (origin_addr, _origin) = start_origin().await;
        let mut config = edge_config(Some(origin_addr));
        config.max_connections = 1;
        let edge = start_edge(config).await;
        let first = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        let mut second = tokio::net::TcpStream::connect(edge.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut second, b"GET /echo HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .ok();
        let mut buf = [0; 16];
        let read = tokio::io::AsyncReadExt::read(&mut second, &mut buf).await;
        assert!(
            matches!(read, Ok(0) | Err(_)),
            "the second connection is closed: {read:?}"
        );
        drop((first, second));
        // The first one's slot comes back once it closes.
        let mut served = false;
        for _ in 0..100 {
            let response = tokio::time::timeout(Duration::from_millis(500), async {
                client()
                    .request(
                        request(Method::GET, edge.addr, "/echo")
                            .body(Full::default())
                            .unwrap(),
                    )
                    .await
            })
            .await;
            if matches!(response, Ok(Ok(ref r)) if r.status() == StatusCode::OK) {
                served = true;
                break;
            }
        }
        assert!(served);
    })
    .await;
}

#[tokio::test]
async fn sign_subcommand_makes_urls_the_layer_accepts() {
    use tower::{Layer, ServiceExt};
    use tower_cdn::signing::{KeyGroup, SigningKey};
    use tower_cdn::{Behavior, CdnLayer, Clock, ManualClock};

    let dir = std::env::temp_dir().join(format!("tower-cdn-sign-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("ed25519.key");
    std::fs::write(&key_file, [7u8; 32]).unwrap();
    let args = tower_cdn::server::SignArgs {
        url: "http://example.com/private/a".to_owned(),
        key_id: "K1".to_owned(),
        key_file: key_file.clone(),
        hmac: false,
        valid_for: 60,
        resource: None,
    };
    let clock = ManualClock::new();
    let now = clock
        .now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let url = args.sign(now).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let key = SigningKey::ed25519(&[7u8; 32]).unwrap().verifying_key();
    let group = KeyGroup::new().with_key("K1", key).unwrap();
    let origin = tower::service_fn(|_: Request<()>| async {
        Ok::<_, std::convert::Infallible>(Response::new(Full::<Bytes>::from("secret")))
    });
    let svc = CdnLayer::builder()
        .clock(clock)
        .behavior("/private/*", Behavior::new().trusted_key_group(group))
        .build()
        .unwrap()
        .layer(origin);
    let path = url.strip_prefix("http://example.com").unwrap();
    let req = Request::get(path)
        .header("host", "example.com")
        .body(())
        .unwrap();
    assert_eq!(
        svc.clone().oneshot(req).await.unwrap().status(),
        StatusCode::OK
    );
    let unsigned = Request::get("/private/a")
        .header("host", "example.com")
        .body(())
        .unwrap();
    assert_eq!(
        svc.oneshot(unsigned).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn two_edges_share_objects_through_redis() {
    within(async {
        let redis = redis_server::RedisServer::spawn();
        let (origin_addr, origin) = start_origin().await;
        let config = || {
            let mut config = edge_config(Some(origin_addr));
            config.redis_url = Some(redis.url().to_owned());
            config.redis_timeout = Duration::from_secs(1);
            config
        };
        let (a, b) = (start_edge(config()).await, start_edge(config()).await);
        // One site behind two edges: the same Host, so the same cache key.
        let get = |edge: SocketAddr| {
            send(
                request(Method::GET, edge, "/echo")
                    .header("host", "shop.example")
                    .body(Full::default())
                    .unwrap(),
            )
        };
        assert_eq!(
            header_str(get(a.addr).await.headers(), "x-cache"),
            Some("Miss from tower-cdn")
        );
        let client = redis::Client::open(redis.url()).unwrap();
        let mut con = client.get_multiplexed_async_connection().await.unwrap();
        // Wait for A's write-through itself (the test's `within` bounds the wait).
        loop {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg("tower-cdn:*")
                .query_async(&mut con)
                .await
                .unwrap();
            if !keys.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let from_b = get(b.addr).await;
        assert_eq!(
            header_str(from_b.headers(), "x-cache"),
            Some("Hit from tower-cdn")
        );
        assert!(header_str(from_b.headers(), "cache-status")
            .unwrap()
            .contains("shared-tier"));
        assert_eq!(from_b.body(), "hello from origin");
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

#[tokio::test]
async fn origin_shield_without_redis_is_refused() {
    let mut config = edge_config(None);
    config.origin_shield = true;
    let err = Server::bind(config).await.unwrap_err();
    assert!(err.to_string().contains("redis_url"), "{err}");
}
