//! RFC 9110 / RFC 9111 fidelity through the `tower-cdn` server over loopback sockets, with
//! an origin that writes its answers byte for byte (so it can send what ordinary servers
//! would not: interim responses, bare 304s, a connection closed mid-answer).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower_cdn::server::{Server, ServerConfig};

/// Upper bound for any one test, so that a hang fails instead of blocking CI.
async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), test)
        .await
        .expect("test exceeded its deadline")
}

/// What the scripted origin does with the n-th request (from 0) it receives.
type Script = Arc<dyn Fn(usize, &str) -> Answer + Send + Sync>;

/// One answer of the scripted origin.
enum Answer {
    /// These bytes, then the connection is closed.
    Bytes(Vec<u8>),
    /// The connection is closed without an answer.
    Close,
}

/// A loopback origin that answers each request head with what the script says.
struct Origin {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Origin {
    async fn start(script: impl Fn(usize, &str) -> Answer + Send + Sync + 'static) -> Origin {
        let script: Script = Arc::new(script);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let (script, calls) = (script.clone(), c.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0; 4096];
                    while !head.ends_with(b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    if let Answer::Bytes(bytes) = script(n, &head) {
                        let _ = socket.write_all(&bytes).await;
                    }
                    let _ = socket.shutdown().await;
                });
            }
        });
        Origin { addr, calls }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

/// An HTTP/1.1 response with `Connection: close` and a `Content-Length` for `body`.
fn answer(status_line: &str, fields: &[&str], body: &str) -> Answer {
    let mut text = format!("HTTP/1.1 {status_line}\r\nconnection: close\r\n");
    for field in fields {
        text.push_str(field);
        text.push_str("\r\n");
    }
    if !status_line.starts_with("304") {
        text.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    text.push_str("\r\n");
    text.push_str(body);
    Answer::Bytes(text.into_bytes())
}

/// A running edge in front of `origin`.
struct Edge {
    addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

async fn start_edge(origin: SocketAddr, tune: impl FnOnce(&mut ServerConfig)) -> Edge {
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.origin = Some(format!("http://{origin}").parse().unwrap());
    tune(&mut config);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge { addr, _stop: stop }
}

/// A GET through a fresh client, read whole.
async fn get(edge: &Edge, path: &str) -> Response<Bytes> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(format!("http://{}{path}", edge.addr))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn field<'a>(res: &'a Response<Bytes>, name: &str) -> &'a str {
    res.headers()
        .get(name)
        .map_or("", |v| v.to_str().unwrap_or(""))
}

#[tokio::test]
async fn interim_responses_are_neither_stored_nor_merged_into_the_final_one() {
    // RFC 9110 §15.2: a 1xx is interim; its fields belong to it alone. The edge drops
    // `103 Early Hints` cleanly: the viewer gets the final answer, without the hint's `Link`,
    // and the object stored is the final answer.
    within(async {
        let origin = Origin::start(|_, _| {
            let mut bytes =
                b"HTTP/1.1 103 Early Hints\r\nlink: </style.css>; rel=preload\r\n\r\n".to_vec();
            if let Answer::Bytes(rest) = answer(
                "200 OK",
                &["cache-control: max-age=60", "content-type: text/plain"],
                "final",
            ) {
                bytes.extend(rest);
            }
            Answer::Bytes(bytes)
        })
        .await;
        let edge = start_edge(origin.addr, |_| {}).await;
        let first = get(&edge, "/hinted").await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(first.body(), "final");
        assert_eq!(field(&first, "link"), "");
        let second = get(&edge, "/hinted").await;
        assert_eq!(second.status(), StatusCode::OK);
        assert_eq!(field(&second, "x-cache"), "Hit from tower-cdn");
        assert_eq!(second.body(), "final");
        assert_eq!(field(&second, "link"), "");
        assert_eq!(origin.calls(), 1);
    })
    .await;
}

/// A GET with one extra request field.
async fn get_with(edge: &Edge, path: &str, name: &str, value: &str) -> Response<Bytes> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::get(format!("http://{}{path}", edge.addr))
        .header(name, value)
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

#[tokio::test]
async fn a_304_without_validators_is_never_a_502() {
    // RFC 9111 §4.3.4: the origin's 304 carries no validator while the stored response has an
    // ETag, so it selects nothing and updates nothing; it still answers the edge's
    // If-None-Match, so the viewer gets the stored object, and the next request goes without
    // conditions. The object arrives stale (Age equals max-age), so no waiting is needed.
    within(async {
        for vary in ["", "vary: accept-language"] {
            let origin = Origin::start(move |n, head| {
                let head = head.to_ascii_lowercase();
                match n {
                    0 => {
                        let mut fields = vec![
                            "cache-control: max-age=2, must-revalidate",
                            "age: 2",
                            "etag: \"abcd\"",
                        ];
                        fields.extend(Some(vary).filter(|v| !v.is_empty()));
                        answer("200 OK", &fields, "first")
                    }
                    1 => {
                        assert!(head.contains("if-none-match: \"abcd\""), "{head}");
                        answer("304 Not Modified", &["cache-control: max-age=600"], "")
                    }
                    _ => {
                        assert!(!head.contains("if-none-match"), "{head}");
                        answer("200 OK", &["cache-control: max-age=600"], "second")
                    }
                }
            })
            .await;
            let edge = start_edge(origin.addr, |_| {}).await;
            get_with(&edge, "/a", "accept-language", "fr").await;
            let revalidated = get_with(&edge, "/a", "accept-language", "fr").await;
            assert_eq!(revalidated.status(), StatusCode::OK, "{vary}");
            assert_eq!(revalidated.body(), "first");
            assert_eq!(field(&revalidated, "x-cache"), "RefreshHit from tower-cdn");
            let next = get_with(&edge, "/a", "accept-language", "fr").await;
            assert_eq!(
                (next.status(), next.body().as_ref()),
                (StatusCode::OK, &b"second"[..])
            );
            let hit = get_with(&edge, "/a", "accept-language", "fr").await;
            assert_eq!(field(&hit, "x-cache"), "Hit from tower-cdn");
            assert_eq!(origin.calls(), 3);
        }
    })
    .await;
}

#[tokio::test]
async fn a_stale_object_is_served_when_the_origin_closes_the_connection() {
    // RFC 9111 §4.2.4: a cache that cannot reach the origin may serve stale, unless the
    // response forbids it. The object arrives stale (Age equals max-age); then the origin
    // closes every connection without answering.
    within(async {
        for (cache_control, served) in [
            ("cache-control: max-age=60", true),
            ("cache-control: max-age=60, must-revalidate", false),
        ] {
            let origin = Origin::start(move |n, _| match n {
                0 => answer("200 OK", &[cache_control, "age: 60"], "stored"),
                _ => Answer::Close,
            })
            .await;
            let edge = start_edge(origin.addr, |_| {}).await;
            assert_eq!(get(&edge, "/s").await.body(), "stored");
            let res = get(&edge, "/s").await;
            if served {
                assert_eq!(
                    (res.status(), res.body().as_ref()),
                    (StatusCode::OK, &b"stored"[..])
                );
                assert!(
                    field(&res, "cache-status").contains("detail=stale-if-unreachable"),
                    "{}",
                    field(&res, "cache-status")
                );
                // The object is still there for the next viewer.
                assert_eq!(get(&edge, "/s").await.body(), "stored");
            } else {
                assert_eq!(res.status(), StatusCode::BAD_GATEWAY, "{cache_control}");
                assert_eq!(field(&res, "x-cache"), "Error from tower-cdn");
            }
            assert!(origin.calls() >= 2);
        }
    })
    .await;
}

/// An edge started from a configuration file, as `tower-cdn --config FILE` would run.
async fn start_edge_from_file(text: &str) -> Edge {
    use clap::Parser;
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tower-cdn-rfc-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("edge.toml");
    std::fs::write(&path, text).unwrap();
    let args = [
        "tower-cdn",
        "--config",
        path.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ];
    let config = tower_cdn::server::Cli::try_parse_from(args)
        .unwrap()
        .into_config()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge { addr, _stop: stop }
}

#[tokio::test]
async fn errors_without_freshness_are_kept_only_where_the_file_says_so() {
    // RFC 9111 §3: a 503 without freshness is not stored under the default policy; a
    // behavior's error_caching_min_ttl keeps it (CloudFront's error caching minimum TTL).
    within(async {
        for (setting, calls) in [("", 2), ("error_caching_min_ttl = \"10s\"\n", 1)] {
            let origin = Origin::start(|_, _| answer("503 Service Unavailable", &[], "busy")).await;
            let edge = start_edge_from_file(&format!(
                "[origins.o]\nurl = \"http://{}\"\n\n[default_behavior]\norigin = \"o\"\n{setting}",
                origin.addr
            ))
            .await;
            for _ in 0..2 {
                assert_eq!(
                    get(&edge, "/busy").await.status(),
                    StatusCode::SERVICE_UNAVAILABLE
                );
            }
            assert_eq!(origin.calls(), calls, "{setting:?}");
        }
    })
    .await;
}
