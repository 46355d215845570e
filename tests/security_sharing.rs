//! Issue #16 items 1, 2, 8 and 10 over real loopback sockets: an origin, the edge server in
//! front of it, and plain hyper clients as viewers. Each test plays the attack, then checks
//! what the innocent viewer receives.

use std::{
    future::Future,
    net::SocketAddr,
    path::PathBuf,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body as AxumBody,
    extract::{Path, State},
    http::HeaderMap,
    response::{IntoResponse, Response as AxumResponse},
    routing::get,
    Router,
};
use bytes::Bytes;
use clap::Parser;
use http::{header, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::{mpsc, oneshot, watch},
    task::JoinHandle,
};
use tower_cdn::server::{Cli, Server, ServerConfig, ServerError};

/// Upper bound for any one test, so that a hang fails instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// The test origin's state.
struct Origin {
    hits: AtomicUsize,
    sessions: AtomicUsize,
    cookies: Mutex<Vec<String>>,
    /// Lets held bodies go on (true) once the test has seen what it needs.
    release: watch::Sender<bool>,
}

impl Origin {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn seen(&self, headers: &HeaderMap) -> String {
        self.hits.fetch_add(1, Ordering::SeqCst);
        let cookie = headers
            .get(header::COOKIE)
            .map_or("", |v| v.to_str().unwrap())
            .to_owned();
        self.cookies.lock().unwrap().push(cookie.clone());
        cookie
    }

    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// A response body fed through a channel: a chunk, or an error that makes the origin's
/// server abort the response (HTTP/1.1: the connection closes before the last chunk).
struct Fed(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for Fed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
    }
}

/// A streamed response: `first`, then, once the test releases it, `then`.
fn streamed(
    origin: &Arc<Origin>,
    fields: &[(&'static str, String)],
    first: Bytes,
    then: Result<Bytes, std::io::Error>,
) -> AxumResponse {
    let (tx, rx) = mpsc::channel(2);
    let mut release = origin.release.subscribe();
    tokio::spawn(async move {
        let _ = tx.send(Ok(first)).await;
        let _ = release.wait_for(|go| *go).await;
        let _ = tx.send(then).await;
    });
    let mut res = AxumResponse::new(AxumBody::new(Fed(rx)));
    for (name, value) in fields {
        res.headers_mut()
            .append(*name, value.parse().expect("a field value"));
    }
    res
}

/// Cacheable, with a new session cookie each time.
async fn cookie(State(origin): State<Arc<Origin>>, headers: HeaderMap) -> impl IntoResponse {
    origin.seen(&headers);
    let session = origin.sessions.fetch_add(1, Ordering::SeqCst) + 1;
    (
        [
            ("cache-control", "max-age=60".to_owned()),
            ("set-cookie", format!("session={session}; HttpOnly")),
        ],
        "welcome",
    )
}

/// A page for the viewer's cookie, `Vary: Cookie`, whose body stays open until released.
async fn vary(State(origin): State<Arc<Origin>>, headers: HeaderMap) -> AxumResponse {
    let cookie = origin.seen(&headers);
    let fields = [
        ("cache-control", "max-age=60".to_owned()),
        ("vary", "Cookie".to_owned()),
    ];
    let page = Bytes::from(format!("page for {cookie}"));
    streamed(&origin, &fields, page, Ok(Bytes::from_static(b"; the end")))
}

/// A page for the viewer's cookie whose `Cache-Control` ends in `private` after 64
/// extensions.
async fn long_cc(State(origin): State<Arc<Origin>>, headers: HeaderMap) -> impl IntoResponse {
    let cookie = origin.seen(&headers);
    let extensions: String = (0..64).map(|i| format!("ext{i}, ")).collect();
    (
        [("cache-control", format!("max-age=60, {extensions}private"))],
        format!("page for {cookie}"),
    )
}

/// 2,000 bytes of a chunked body, then, once released, the origin's server aborts the
/// response (the connection closes before the last chunk).
async fn truncated(
    State(origin): State<Arc<Origin>>,
    Path(_n): Path<u32>,
    headers: HeaderMap,
) -> AxumResponse {
    origin.seen(&headers);
    let fields = [("cache-control", "max-age=60".to_owned())];
    let half = Bytes::from(vec![b'x'; 2000]);
    let error = Err(std::io::Error::other("origin went away"));
    streamed(&origin, &fields, half, error)
}

/// An origin that answers every request with the head of a chunked 4,000-byte body and
/// its first 2,000 bytes, then closes the connection. Paths under `/pass/` are `private`,
/// the others cacheable.
async fn start_truncating_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let cache_control = if head.starts_with(b"GET /pass/") {
                    "private"
                } else {
                    "max-age=60"
                };
                let mut answer = format!(
                    "HTTP/1.1 200 OK\r\ncache-control: {cache_control}\r\n\
                     content-type: application/octet-stream\r\n\
                     transfer-encoding: chunked\r\n\r\n7d0\r\n"
                )
                .into_bytes();
                answer.extend_from_slice(&[b'x'; 2000]);
                answer.extend_from_slice(b"\r\n");
                let _ = stream.write_all(&answer).await;
                let _ = stream.flush().await;
                // Dropped here: the connection closes before the rest and the last chunk.
            });
        }
    });
    addr
}

async fn start_origin() -> (SocketAddr, Arc<Origin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin {
        hits: AtomicUsize::new(0),
        sessions: AtomicUsize::new(0),
        cookies: Mutex::new(Vec::new()),
        release: watch::channel(false).0,
    });
    let app = Router::new()
        .route("/cookie", get(cookie))
        .route("/vary", get(vary))
        .route("/long-cc", get(long_cc))
        .route("/truncated/{n}", get(truncated))
        .with_state(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, origin)
}

/// A configuration file for the edge, removed on drop.
struct ConfigFile(PathBuf);

impl ConfigFile {
    fn new(text: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "tower-cdn-security-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The configuration `tower-cdn --config FILE --listen 127.0.0.1:0` runs with, the file
/// naming `origin` and adding `behavior` lines to the default behavior.
fn config(origin: SocketAddr, behavior: &str) -> (ConfigFile, ServerConfig) {
    let file = ConfigFile::new(&format!(
        "[origins.site]\nurl = \"http://{origin}\"\n\n[default_behavior]\norigin = \"site\"\n{behavior}\n"
    ));
    let args = ["tower-cdn", "--config", file.0.to_str().unwrap()];
    let cli = Cli::try_parse_from(args.into_iter().chain(["--listen", "127.0.0.1:0"])).unwrap();
    let config = cli.into_config().unwrap();
    (file, config)
}

/// A running edge, stopped on drop.
struct Edge {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<Result<(), ServerError>>,
    _file: ConfigFile,
}

async fn start_edge(origin: SocketAddr, behavior: &str) -> Edge {
    let (file, config) = config(origin, behavior);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge {
        addr,
        _stop: stop,
        _task: task,
        _file: file,
    }
}

type Viewer = Client<HttpConnector, Full<Bytes>>;

/// An HTTP/1.1 viewer with a connection of its own.
fn viewer() -> Viewer {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 viewer (prior knowledge, cleartext).
fn h2_viewer() -> Viewer {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

async fn ask(viewer: &Viewer, edge: &Edge, path: &str, cookie: Option<&str>) -> Response<Incoming> {
    let mut req = Request::get(format!("http://{}{path}", edge.addr));
    if let Some(cookie) = cookie {
        req = req.header(header::COOKIE, cookie);
    }
    viewer
        .request(req.body(Full::default()).unwrap())
        .await
        .unwrap()
}

async fn read(res: Response<Incoming>) -> (http::response::Parts, Bytes) {
    let (parts, body) = res.into_parts();
    (
        parts,
        body.collect().await.expect("a whole body").to_bytes(),
    )
}

fn field<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn set_cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all(header::SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

// Item 1: the next viewer must never receive the first viewer's session.
#[tokio::test]
async fn a_session_cookie_is_never_replayed_to_the_next_viewer() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr, "").await;
        let (first, _) = read(ask(&viewer(), &edge, "/cookie", Some("session=mine")).await).await;
        assert_eq!(set_cookies(&first.headers), ["session=1; HttpOnly"]);

        let (innocent, body) = read(ask(&viewer(), &edge, "/cookie", None).await).await;
        assert_eq!(body, "welcome");
        assert!(!field(&innocent.headers, "x-cache")
            .unwrap()
            .starts_with("Hit"));
        assert_eq!(
            set_cookies(&innocent.headers),
            ["session=2; HttpOnly"],
            "the innocent viewer gets its own session from the origin, not the first one's"
        );
        assert_eq!(origin.hits(), 2);
    })
    .await;
}

// Item 1, CloudFront's way: `set_cookie = "strip"` stores the page without the cookie.
#[tokio::test]
async fn strip_serves_hits_without_the_cookie_and_the_filler_with_its_own() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr, "set_cookie = \"strip\"").await;
        let (first, _) = read(ask(&viewer(), &edge, "/cookie", None).await).await;
        assert_eq!(set_cookies(&first.headers), ["session=1; HttpOnly"]);

        let (innocent, body) = read(ask(&viewer(), &edge, "/cookie", None).await).await;
        assert_eq!(body, "welcome");
        assert!(field(&innocent.headers, "x-cache")
            .unwrap()
            .starts_with("Hit"));
        assert!(set_cookies(&innocent.headers).is_empty());
        assert_eq!(origin.hits(), 1);
    })
    .await;
}

// Item 2, RFC 9111 §4.1: bob misses the same URL while alice's `Vary: Cookie` page is
// still arriving; he must get his own page, not hers.
#[tokio::test]
async fn a_viewer_collapsing_onto_another_cookies_page_gets_its_own() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        // The origin answers by cookie, so the behavior forwards cookies to it.
        let edge = start_edge(origin_addr, "origin_request_policy = \"all-viewer\"").await;
        // Alice's page is streaming (its body held open) when bob asks.
        let alice = ask(&viewer(), &edge, "/vary", Some("user=alice")).await;
        assert_eq!(origin.hits(), 1);
        let bob = ask(&viewer(), &edge, "/vary", Some("user=bob")).await;
        origin.release();
        let (_, alice) = read(alice).await;
        let (bob_head, bob) = read(bob).await;

        assert_eq!(alice, "page for user=alice; the end");
        assert_eq!(bob, "page for user=bob; the end", "bob got alice's page");
        assert!(!field(&bob_head.headers, "cache-status")
            .unwrap()
            .contains("collapsed"));
        assert_eq!(origin.hits(), 2);
        assert_eq!(origin.cookies.lock().unwrap()[1], "user=bob");

        // A viewer with alice's cookie shares her page.
        let (again, page) = read(ask(&viewer(), &edge, "/vary", Some("user=alice")).await).await;
        assert!(field(&again.headers, "x-cache").unwrap().starts_with("Hit"));
        assert_eq!(page, "page for user=alice; the end");
    })
    .await;
}

// Item 8: `private` after 64 extensions is still `private`.
#[tokio::test]
async fn private_at_the_end_of_a_long_cache_control_is_not_shared() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        // The origin answers by cookie, so the behavior forwards cookies to it.
        let edge = start_edge(origin_addr, "origin_request_policy = \"all-viewer\"").await;
        let (_, alice) = read(ask(&viewer(), &edge, "/long-cc", Some("user=alice")).await).await;
        assert_eq!(alice, "page for user=alice");
        let (bob_head, bob) = read(ask(&viewer(), &edge, "/long-cc", Some("user=bob")).await).await;
        assert_eq!(bob, "page for user=bob");
        assert!(!field(&bob_head.headers, "x-cache")
            .unwrap()
            .starts_with("Hit"));
        assert_eq!(origin.hits(), 2);
    })
    .await;
}

/// Reads a response whose origin body was cut off: the viewer must see a failed body,
/// never a clean end.
async fn assert_aborted(res: Response<Incoming>, what: &str) {
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await;
    match body {
        Err(_) => {}
        Ok(body) => panic!(
            "{what}: the body ended cleanly after {} bytes",
            body.to_bytes().len()
        ),
    }
}

// Item 10 over HTTP/1.1: the connection closes without the last chunk, whatever the
// timing, for a stored answer and for a pass.
#[tokio::test]
async fn a_truncated_origin_body_aborts_http1_viewers() {
    within(async {
        let edge = start_edge(start_truncating_origin().await, "").await;
        for n in 0..6 {
            for cache in ["stored", "pass"] {
                let path = format!("/{cache}/{n}");
                let res = ask(&viewer(), &edge, &path, None).await;
                assert_aborted(res, &path).await;
            }
        }
    })
    .await;
}

// Item 10 over HTTP/2: the stream is reset.
#[tokio::test]
async fn a_truncated_origin_body_resets_http2_streams() {
    within(async {
        let edge = start_edge(start_truncating_origin().await, "").await;
        let viewer = h2_viewer();
        for n in 0..6 {
            for cache in ["stored", "pass"] {
                let path = format!("/{cache}/{n}");
                let res = ask(&viewer, &edge, &path, None).await;
                assert_eq!(res.version(), http::Version::HTTP_2);
                assert_aborted(res, &path).await;
            }
        }
    })
    .await;
}

// Item 10 for collapsed followers: the leader's and a follower's responses both fail when
// the origin body is cut off after both have started reading it.
#[tokio::test]
async fn a_truncated_fill_aborts_the_leader_and_its_followers() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr, "").await;
        let path = "/truncated/0";
        let leader = ask(&viewer(), &edge, path, None).await;
        let follower_h1 = ask(&viewer(), &edge, path, None).await;
        let follower_h2 = ask(&h2_viewer(), &edge, path, None).await;
        assert_eq!(origin.hits(), 1, "both followers collapsed onto the leader");
        let (leader_head, mut leader_body) = leader.into_parts();
        assert!(field(&leader_head.headers, "cache-status").is_some());
        // The leader has the first half before the origin goes away.
        let first = leader_body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        origin.release();
        let rest = leader_body.collect().await;
        assert!(rest.is_err(), "the leader's body ended cleanly");
        assert_aborted(follower_h1, "HTTP/1.1 follower").await;
        assert_aborted(follower_h2, "HTTP/2 follower").await;
    })
    .await;
}
