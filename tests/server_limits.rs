//! The edge server's connection limits over real loopback sockets: the header timeout
//! (whatever the protocol, TLS handshake included), HTTP/2's idle timeout, the limit per
//! client address, and requests the edge refuses at entry (RFC 9112 §3.2).

use std::{
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use axum::{routing::get, Router};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket, TcpStream},
    sync::oneshot,
    task::JoinHandle,
};
use tower_cdn::server::{Server, ServerConfig, ServerError};

/// Upper bound for any one test, so that a hang fails instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(20);
/// How long the server gets to close a socket it should close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);
/// The HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// An origin on a free loopback port counting its requests.
async fn start_origin() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = Router::new().route(
        "/page",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { ([("cache-control", "max-age=60")], "page") }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

fn edge_config(origin: SocketAddr) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.origin = Some(format!("http://{origin}").parse().unwrap());
    config
}

struct Edge {
    addr: SocketAddr,
    https: Option<SocketAddr>,
    _stop: oneshot::Sender<()>,
    _task: JoinHandle<Result<(), ServerError>>,
}

async fn start_edge(config: ServerConfig) -> Edge {
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let https = server.https_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge {
        addr,
        https,
        _stop: stop,
        _task: task,
    }
}

/// Waits until the server closes `socket`: a read returns end of file or an error (a reset).
async fn closed_by_server(socket: &mut TcpStream) {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(CLOSE_DEADLINE, async {
        loop {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                // An HTTP/2 server sends its SETTINGS (and a GOAWAY) before closing.
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the server left the socket open");
}

/// One HTTP/1.1 request on `socket`, the raw response head and body read until the server
/// closes (the request asks it to).
async fn raw_exchange(socket: &mut TcpStream, request: &str) -> String {
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(CLOSE_DEADLINE, socket.read_to_end(&mut response))
        .await
        .expect("no response")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A GET of `/page` over a new HTTP/1.1 connection from `socket`; the status.
async fn get_page(socket: TcpStream) -> StatusCode {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(socket))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = Request::get("/page")
        .header("host", "edge.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

async fn connect_from(local: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{local}:0").parse().unwrap())?;
    socket.connect(to).await
}

#[tokio::test]
async fn silent_sockets_and_bare_http2_prefaces_are_closed_after_the_header_timeout() {
    within(async {
        let (origin, hits) = start_origin().await;
        let mut config = edge_config(origin);
        config.max_connections = 4;
        config.header_timeout = Duration::from_millis(200);
        let edge = start_edge(config).await;

        // Every slot taken: two sockets that send nothing, one that sends the HTTP/2
        // preface only, one that sends half an HTTP/1 request head.
        let mut silent = vec![
            TcpStream::connect(edge.addr).await.unwrap(),
            TcpStream::connect(edge.addr).await.unwrap(),
        ];
        let mut preface = TcpStream::connect(edge.addr).await.unwrap();
        preface.write_all(H2_PREFACE).await.unwrap();
        let mut half = TcpStream::connect(edge.addr).await.unwrap();
        half.write_all(b"GET /page HTTP/1.1\r\nHost: edge.test\r\n")
            .await
            .unwrap();

        for socket in &mut silent {
            closed_by_server(socket).await;
        }
        closed_by_server(&mut preface).await;
        closed_by_server(&mut half).await;

        // A fifth viewer finds a free slot and is served.
        let viewer = TcpStream::connect(edge.addr).await.unwrap();
        assert_eq!(get_page(viewer).await, StatusCode::OK);
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    })
    .await;
}

#[tokio::test]
async fn a_tls_handshake_not_begun_is_closed_after_the_header_timeout() {
    within(async {
        let (origin, _) = start_origin().await;
        let mut config = edge_config(origin);
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        config.header_timeout = Duration::from_millis(200);
        config.max_connections = 2;
        let edge = start_edge(config).await;
        let https = edge.https.unwrap();

        let mut silent = TcpStream::connect(https).await.unwrap();
        // The first bytes of a TLS record header, and no more.
        let mut partial = TcpStream::connect(https).await.unwrap();
        partial.write_all(&[0x16, 0x03, 0x01]).await.unwrap();
        closed_by_server(&mut silent).await;
        closed_by_server(&mut partial).await;

        let viewer = TcpStream::connect(edge.addr).await.unwrap();
        assert_eq!(get_page(viewer).await, StatusCode::OK);
    })
    .await;
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    within(async {
        let (origin, _) = start_origin().await;
        let mut config = edge_config(origin);
        config.idle_timeout = Duration::from_millis(300);
        let edge = start_edge(config).await;

        let socket = TcpStream::connect(edge.addr).await.unwrap();
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(socket))
                .await
                .unwrap();
        let connection = tokio::spawn(connection);
        let request = Request::get("http://edge.test/page")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body().collect().await.unwrap();

        // With no stream open, the server ends the connection (GOAWAY, then close).
        tokio::time::timeout(CLOSE_DEADLINE, connection)
            .await
            .expect("the idle HTTP/2 connection was left open")
            .unwrap()
            .ok();
        assert!(sender.ready().await.is_err());
    })
    .await;
}

#[tokio::test]
async fn one_client_address_cannot_take_more_than_its_connections() {
    within(async {
        let (origin, _) = start_origin().await;
        let mut config = edge_config(origin);
        config.max_connections_per_client = 3;
        let edge = start_edge(config).await;
        // Clients bind their side to a loopback address of their own (127.0.0.0/8 is all
        // loopback) and connect to the edge on 127.0.0.1.
        let addr = edge.addr;

        // Three connections from 127.0.0.1, held open: each is served.
        let mut held = Vec::new();
        for _ in 0..3 {
            let socket = connect_from("127.0.0.1", addr).await.unwrap();
            let (mut sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(socket))
                    .await
                    .unwrap();
            tokio::spawn(connection);
            let request = Request::get("/page")
                .header("host", "edge.test")
                .body(Empty::<Bytes>::new())
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), StatusCode::OK);
            response.into_body().collect().await.unwrap();
            held.push(sender);
        }

        // A fourth from the same address is closed at once.
        let mut fourth = connect_from("127.0.0.1", addr).await.unwrap();
        let _ = fourth
            .write_all(b"GET /page HTTP/1.1\r\nHost: edge.test\r\n\r\n")
            .await;
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(CLOSE_DEADLINE, fourth.read(&mut buf))
            .await
            .expect("the fourth connection was left open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

        // Another address has its own connections.
        let other = connect_from("127.0.0.2", addr).await.unwrap();
        assert_eq!(get_page(other).await, StatusCode::OK);

        // When one of the three closes, 127.0.0.1 may connect again.
        drop(held.pop());
        let again = tokio::time::timeout(CLOSE_DEADLINE, async {
            loop {
                let socket = connect_from("127.0.0.1", addr).await.unwrap();
                let mut probe = socket;
                probe
                    .write_all(
                        b"GET /page HTTP/1.1\r\nHost: edge.test\r\nConnection: close\r\n\r\n",
                    )
                    .await
                    .unwrap();
                let mut response = Vec::new();
                let _ = probe.read_to_end(&mut response).await;
                if response.starts_with(b"HTTP/1.1 200") {
                    return;
                }
                // The edge has not seen the close yet.
                tokio::task::yield_now().await;
            }
        })
        .await;
        assert!(again.is_ok(), "127.0.0.1 got no slot back");
    })
    .await;
}

#[tokio::test]
async fn http11_without_host_is_400_and_never_reaches_the_origin() {
    within(async {
        let (origin, hits) = start_origin().await;
        let edge = start_edge(edge_config(origin)).await;

        // RFC 9112 §3.2: an HTTP/1.1 request without Host is answered 400, origin form or
        // absolute form.
        for request in [
            "GET /page HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET http://edge.test/page HTTP/1.1\r\nConnection: close\r\n\r\n",
            "GET /page HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\nConnection: close\r\n\r\n",
            "GET /page HTTP/1.1\r\nHost: a b\r\nConnection: close\r\n\r\n",
        ] {
            let mut socket = TcpStream::connect(edge.addr).await.unwrap();
            let response = raw_exchange(&mut socket, request).await;
            assert!(
                response.starts_with("HTTP/1.1 400"),
                "{request:?}: {response}"
            );
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);

        // HTTP/1.0 may go without Host.
        let mut socket = TcpStream::connect(edge.addr).await.unwrap();
        let response = raw_exchange(&mut socket, "GET /page HTTP/1.0\r\n\r\n").await;
        assert!(response.starts_with("HTTP/1.0 200"), "{response}");
        assert_eq!(hits.load(Ordering::SeqCst), 1);
    })
    .await;
}
