//! What the edge passes through without caching, over loopback sockets: WebSocket upgrades,
//! server-sent event streams forwarded as they arrive, and request bodies with a size limit.

use std::{
    collections::VecDeque,
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{
    body::Body as AxumBody,
    extract::{
        ws::{Message, WebSocket, WebSocketUpgrade},
        State,
    },
    response::{IntoResponse, Response as AxumResponse},
    routing::{get, post},
    Router,
};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{header, Request, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, oneshot, Notify},
};
use tokio_tungstenite::tungstenite;
use tower_cdn::{
    server::{Server, ServerConfig},
    AllowedMethods,
};

const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

#[derive(Default)]
struct Origin {
    uploads: AtomicUsize,
    upgrades: AtomicUsize,
    /// Lets the event stream send its second event and end.
    release: Notify,
    stream_finished: AtomicBool,
}

/// A body fed from a channel, ending when the sender is dropped.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|data| Ok(Frame::data(data))))
    }
}

async fn echo_socket(upgrade: WebSocketUpgrade, State(origin): State<Arc<Origin>>) -> AxumResponse {
    origin.upgrades.fetch_add(1, Ordering::SeqCst);
    upgrade.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if matches!(message, Message::Text(_) | Message::Binary(_))
                && socket.send(message).await.is_err()
            {
                break;
            }
        }
    })
}

/// Sends one event, waits for the test's word, sends a second and ends.
async fn events(State(origin): State<Arc<Origin>>) -> impl IntoResponse {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let _ = tx.send(Bytes::from_static(b"data: first\n\n")).await;
        origin.release.notified().await;
        let _ = tx.send(Bytes::from_static(b"data: second\n\n")).await;
        origin.stream_finished.store(true, Ordering::SeqCst);
    });
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        AxumBody::new(ChannelBody(rx)),
    )
}

async fn upload(State(origin): State<Arc<Origin>>, body: Bytes) -> String {
    origin.uploads.fetch_add(1, Ordering::SeqCst);
    format!("received {} bytes", body.len())
}

async fn start_origin() -> (SocketAddr, Arc<Origin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin::default());
    let app = Router::new()
        .route("/ws", get(echo_socket))
        .route("/events", get(events))
        .route("/upload", post(upload))
        .with_state(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, origin)
}

async fn start_edge(origin: SocketAddr, configure: impl FnOnce(&mut ServerConfig)) -> SocketAddr {
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.origin = Some(format!("http://{origin}").parse().unwrap());
    configure(&mut config);
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        // Serves until the test's runtime goes away.
        let _ = stopped.await;
        std::future::pending::<()>().await;
    }));
    addr
}

async fn echo_through(edge: SocketAddr, text: &str) -> String {
    let stream = TcpStream::connect(edge).await.unwrap();
    let (mut socket, response) = tokio_tungstenite::client_async(format!("ws://{edge}/ws"), stream)
        .await
        .expect("the WebSocket handshake goes through the edge");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    // Through the layer (its viewer rules apply), passed on, never stored.
    let cache_status = response.headers()["cache-status"].to_str().unwrap();
    assert_eq!(cache_status, "tower-cdn; fwd=bypass; fwd-status=101");
    socket.send(tungstenite::Message::text(text)).await.unwrap();
    let echoed = match socket.next().await.unwrap().unwrap() {
        tungstenite::Message::Text(text) => text.to_string(),
        other => panic!("unexpected message {other:?}"),
    };
    socket.close(None).await.unwrap();
    echoed
}

#[tokio::test]
async fn websocket_echo_through_the_edge() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr, |_| {}).await;

        assert_eq!(echo_through(edge, "hello").await, "hello");
        // A second handshake for the same URL is tunnelled too, never answered by the cache.
        assert_eq!(echo_through(edge, "again").await, "again");
        assert_eq!(origin.upgrades.load(Ordering::SeqCst), 2);
    })
    .await;
}

#[tokio::test]
async fn server_sent_events_arrive_before_the_stream_ends() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr, |_| {}).await;
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();

        let response = client
            .get(format!("http://{edge}/events").parse().unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body();
        let mut received = Vec::new();
        while !received.ends_with(b"data: first\n\n") {
            let frame = body.frame().await.expect("more").unwrap();
            if let Ok(data) = frame.into_data() {
                received.extend_from_slice(&data);
            }
        }
        assert!(
            !origin.stream_finished.load(Ordering::SeqCst),
            "the first event must arrive while the origin is still sending"
        );

        origin.release.notify_one();
        let rest = body.collect().await.unwrap().to_bytes();
        received.extend_from_slice(&rest);
        assert_eq!(received, b"data: first\n\ndata: second\n\n");
        assert!(origin.stream_finished.load(Ordering::SeqCst));
    })
    .await;
}

/// A request body of unknown length, sent in chunks (`Transfer-Encoding: chunked`).
struct Chunks(VecDeque<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|data| Ok(Frame::data(data))))
    }
}

fn chunks(count: usize, size: usize) -> Chunks {
    Chunks((0..count).map(|_| Bytes::from(vec![b'x'; size])).collect())
}

#[tokio::test]
async fn request_bodies_over_the_limit_get_413() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr, |config| {
            config.max_request_body = Some(1024);
            config.allowed_methods = AllowedMethods::all();
        })
        .await;
        let uri = format!("http://{edge}/upload");

        // Within the limit, in chunks: streamed to the origin.
        let client = Client::builder(TokioExecutor::new()).build_http::<Chunks>();
        let small = Request::post(&uri).body(chunks(4, 256)).unwrap();
        let response = client.request(small).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let text = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(text, "received 1024 bytes");
        assert_eq!(origin.uploads.load(Ordering::SeqCst), 1);

        // Over it, with Content-Length: refused before the origin is asked.
        let sized = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let large = Request::post(&uri)
            .body(Full::from(vec![b'x'; 4096]))
            .unwrap();
        let response = sized.request(large).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let x_cache = response.headers().get("x-cache").cloned();
        let declared = response.into_body().collect().await.unwrap().to_bytes();

        // Over it, in chunks: cut off while streaming.
        let large = Request::post(&uri).body(chunks(16, 256)).unwrap();
        let response = client.request(large).await.unwrap();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(origin.uploads.load(Ordering::SeqCst), 1);

        // Either way the viewer reads one answer, the edge's error.
        assert_eq!(x_cache.as_ref().unwrap(), "Error from tower-cdn");
        assert_eq!(response.headers().get("x-cache"), x_cache.as_ref());
        let streamed = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(declared, streamed);
        assert_eq!(
            declared,
            "413 Content Too Large: the request body is over the limit\n"
        );
    })
    .await;
}
