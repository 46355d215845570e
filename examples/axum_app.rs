//! An axum app with the CDN layer on some routes only: `/assets/*` is cached at the edge,
//! `/api/*` always reaches the handlers.
//!
//! ```sh
//! cargo run --example axum_app                         # a few requests in-process, then exits
//! SERVE=127.0.0.1:3000 cargo run --example axum_app    # or serve it until Ctrl-C
//! ```

use std::sync::atomic::{AtomicU64, Ordering};

use axum::{http::header, routing::get, Router};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_cdn::CdnLayer;

static RENDERS: AtomicU64 = AtomicU64::new(0);

async fn stylesheet() -> impl axum::response::IntoResponse {
    RENDERS.fetch_add(1, Ordering::Relaxed);
    (
        [
            (header::CACHE_CONTROL, "public, max-age=86400"),
            (header::CONTENT_TYPE, "text/css"),
        ],
        "body { font-family: sans-serif }",
    )
}

async fn counter() -> String {
    format!("renders so far: {}", RENDERS.load(Ordering::Relaxed))
}

fn app() -> Router {
    // `Router::layer` applies to the routes added before it, so the cache wraps `/assets`
    // only. Every clone of the layer (one per route) shares one store.
    let cached = Router::new()
        .route("/assets/style.css", get(stylesheet))
        .layer(CdnLayer::new());
    let dynamic = Router::new().route("/api/renders", get(counter));
    cached.merge(dynamic)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let app = app();
    if let Ok(addr) = std::env::var("SERVE") {
        let listener = tokio::net::TcpListener::bind(&addr).await.expect("bind");
        println!("serving on http://{addr}");
        axum::serve(listener, app).await.expect("serve");
        return;
    }
    for path in [
        "/assets/style.css",
        "/assets/style.css",
        "/api/renders",
        "/api/renders",
    ] {
        let request = Request::get(path).body(axum::body::Body::empty()).unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let x_cache = response
            .headers()
            .get("x-cache")
            .map_or("(not cached at the edge)".into(), |v| {
                v.to_str().unwrap_or("?").to_owned()
            });
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        println!(
            "GET {path:<20} {status}  {x_cache:<25} {}",
            String::from_utf8_lossy(&body)
        );
    }
    // The stylesheet was rendered once: the second request was a hit.
    assert_eq!(RENDERS.load(Ordering::Relaxed), 1);
}
