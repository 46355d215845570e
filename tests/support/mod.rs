//! Shared test helpers: a counting origin, a body that can fail, and body collection.
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tower::{Service, ServiceExt};
use tower_cdn::{AllowedMethods, Behavior, CdnLayer, ManualClock};

/// A response body for test origins: whole bytes, or chunks sent through a channel (an
/// `Err` chunk makes the body fail there).
pub enum TestBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Result<Bytes, std::io::Error>>),
}

impl From<&'static str> for TestBody {
    fn from(s: &'static str) -> Self {
        TestBody::Full(Some(Bytes::from_static(s.as_bytes())))
    }
}

impl From<String> for TestBody {
    fn from(s: String) -> Self {
        TestBody::Full(Some(Bytes::from(s)))
    }
}

impl From<Vec<u8>> for TestBody {
    fn from(s: Vec<u8>) -> Self {
        TestBody::Full(Some(Bytes::from(s)))
    }
}

impl Body for TestBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match &mut *self {
            TestBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            TestBody::Channel(rx) => rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data))),
        }
    }
}

/// What the origin saw.
#[derive(Clone, Default)]
pub struct Seen {
    calls: Arc<AtomicUsize>,
    requests: Arc<Mutex<Vec<(http::Method, String, HeaderMap)>>>,
}

impl Seen {
    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Headers of the last request the origin received.
    pub fn last_headers(&self) -> HeaderMap {
        self.requests
            .lock()
            .unwrap()
            .last()
            .expect("origin was called")
            .2
            .clone()
    }

    pub fn last_method(&self) -> http::Method {
        self.requests
            .lock()
            .unwrap()
            .last()
            .expect("origin was called")
            .0
            .clone()
    }
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<TestBody>, Infallible>> + Send>>;

/// A cloneable origin built from an async closure; counts and records its requests.
#[derive(Clone)]
pub struct Origin {
    seen: Seen,
    handler: Arc<dyn Fn(Request<()>) -> BoxFut + Send + Sync>,
}

impl Service<Request<()>> for Origin {
    type Response = Response<TestBody>;
    type Error = Infallible;
    type Future = BoxFut;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<()>) -> BoxFut {
        self.seen.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.requests.lock().unwrap().push((
            req.method().clone(),
            req.uri().to_string(),
            req.headers().clone(),
        ));
        (self.handler)(req)
    }
}

/// An origin answering with `f(request)`.
pub fn origin<F>(f: F) -> (Origin, Seen)
where
    F: Fn(Request<()>) -> Response<TestBody> + Send + Sync + 'static,
{
    let f = Arc::new(f);
    async_origin(move |req| {
        let f = f.clone();
        async move { f(req) }
    })
}

/// An origin answering with `f(request).await`.
pub fn async_origin<F, Fut>(f: F) -> (Origin, Seen)
where
    F: Fn(Request<()>) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let seen = Seen::default();
    let origin = Origin {
        seen: seen.clone(),
        handler: Arc::new(move |req| {
            let fut = f(req);
            Box::pin(async move { Ok(fut.await) })
        }),
    };
    (origin, seen)
}

/// A response with the given headers and body.
pub fn response(headers: &[(&str, &str)], body: impl Into<TestBody>) -> Response<TestBody> {
    let mut b = Response::builder();
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.into()).unwrap()
}

/// A GET request for `uri` on host `example.com` with extra headers.
pub fn get(uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    request("GET", uri, headers)
}

pub fn request(method: &str, uri: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut b = Request::builder()
        .method(method)
        .uri(uri)
        .header("host", "example.com");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap()
}

/// A layer on a manual clock with RFC defaults.
pub fn layer() -> (CdnLayer, ManualClock) {
    let clock = ManualClock::new();
    (
        CdnLayer::builder().clock(clock.clone()).build().unwrap(),
        clock,
    )
}

/// A layer on a manual clock with RFC defaults whose default behavior serves `methods`
/// rather than only GET and HEAD, for tests of what other methods do.
pub fn layer_allowing(methods: AllowedMethods) -> (CdnLayer, ManualClock) {
    let clock = ManualClock::new();
    let layer = CdnLayer::builder()
        .clock(clock.clone())
        .default_behavior(Behavior::new().allowed_methods(methods))
        .build()
        .unwrap();
    (layer, clock)
}

/// A complete response: status, headers and the whole body.
pub struct Seen200 {
    pub status: http::StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen200 {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    pub fn x_cache(&self) -> &str {
        self.header("x-cache")
    }
}

/// Sends one request through `svc` and collects the whole response.
pub async fn send<S, B>(svc: &S, req: Request<()>) -> Seen200
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.expect("service error");
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("body error").to_bytes();
    Seen200 {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Yields to the runtime until `done` holds, and fails the test if it never does: a
/// regression fails instead of hanging CI. The bound counts yields, not time, so it holds
/// the same with a paused clock and on a loaded machine (the tasks waited on run on this
/// test's runtime, in memory).
pub async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100_000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("never happened: {what}");
}
