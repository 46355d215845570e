//! `CdnLayer` in a stack with other tower middleware, in the order that makes each one do
//! its job: tracing outermost, then the cache, then the origin's protections.
//!
//! ```sh
//! RUST_LOG=info cargo run --example middleware_stack --features server
//! ```
//!
//! It sends a few requests in-process and prints what came back, then exits.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, ServiceBuilder, ServiceExt};
use tower_cdn::CdnLayer;
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use tracing::Level;

#[tokio::main]
async fn main() {
    // Colors only for a terminal: piped into a file or `grep`, the log stays plain text.
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();

    let origin_calls = Arc::new(AtomicUsize::new(0));
    let calls = origin_calls.clone();
    let origin = service_fn(move |req: Request<Full<Bytes>>| {
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            // A slow origin: `/slow` takes longer than the timeout below allows.
            let delay = if req.uri().path() == "/slow" { 500 } else { 50 };
            tokio::time::sleep(Duration::from_millis(delay)).await;
            let response = Response::builder()
                .header("cache-control", "public, max-age=60")
                .body(Full::from(format!(
                    "origin answer for {}",
                    req.uri().path()
                )));
            Ok::<_, Infallible>(response.unwrap())
        }
    });

    // Requests go down this list, responses come back up it.
    let edge = ServiceBuilder::new()
        // 1. Tracing first, so that every request is logged with its final status and
        //    latency: hits too, and the edge's own 502/504 answers.
        .layer(TraceLayer::new_for_http().on_response(DefaultOnResponse::new().level(Level::INFO)))
        // 2. The cache. Everything below it runs on misses only, so hits are never
        //    delayed by the limits that protect the origin.
        .layer(CdnLayer::new())
        // 3. At most 4 origin requests at once. Below the cache this counts origin trips,
        //    after request collapsing has merged concurrent misses for one URL.
        .concurrency_limit(4)
        // 4. Each origin trip gets 200 ms for its response headers. The layer answers an
        //    origin error (this timeout's included) with a 502; the layer's own
        //    `origin_timeout` would answer 504 instead.
        .timeout(Duration::from_millis(200))
        .service(origin);

    // Ten viewers ask for one URL at once: one origin trip, shared by all.
    let requests = (0..10).map(|_| {
        let edge = edge.clone();
        tokio::spawn(async move {
            let request = Request::get("/page").body(Full::default()).unwrap();
            edge.oneshot(request).await.unwrap().headers()["x-cache"].clone()
        })
    });
    for request in requests {
        println!("GET /page  x-cache: {:?}", request.await.unwrap());
    }
    println!(
        "origin calls for ten viewers: {}",
        origin_calls.load(Ordering::SeqCst)
    );

    let request = Request::get("/slow").body(Full::default()).unwrap();
    let response = edge.oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    println!(
        "GET /slow  {status}: {}",
        String::from_utf8_lossy(&body).trim()
    );
}
