//! A caching reverse proxy in a few dozen lines: hyper-util's pooled client as the origin
//! service, `CdnLayer` in front of it, hyper-util's server to accept viewers.
//!
//! ```sh
//! # Proxy 127.0.0.1:8081 to an origin you run, until Ctrl-C:
//! cargo run --example reverse_proxy --features server -- http://127.0.0.1:9000
//! # Or, with no origin given: start a small origin, send two requests through, exit.
//! cargo run --example reverse_proxy --features server
//! ```
//!
//! The `tower-cdn` binary (`src/server`) is the complete version of this: hop-by-hop
//! headers, `X-Forwarded-*`, timeouts, TLS, upgrades, graceful shutdown.

use std::{convert::Infallible, net::SocketAddr};

use http::{uri::PathAndQuery, Request, Uri};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::Client,
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::TcpListener;
use tower::{service_fn, Layer};
use tower_cdn::CdnLayer;

/// Serves viewers on `listener`, forwarding misses to `origin` (`http://host:port`).
async fn proxy(listener: TcpListener, origin: Uri) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Incoming>();
    let forward = service_fn(move |mut req: Request<Incoming>| {
        // Same path and query, on the origin's scheme and authority.
        let mut parts = origin.clone().into_parts();
        parts.path_and_query = req
            .uri()
            .path_and_query()
            .cloned()
            .or(Some(PathAndQuery::from_static("/")));
        *req.uri_mut() = Uri::from_parts(parts).expect("valid origin URI");
        // The layer turns an error here into a 502 for the viewer.
        client.request(req)
    });
    // One layer instance: every connection's service shares its store.
    let edge = CdnLayer::new().layer(forward);
    loop {
        let (stream, _) = listener.accept().await.expect("accept");
        let service = TowerToHyperService::new(edge.clone());
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[tokio::main]
async fn main() {
    if let Some(origin) = std::env::args().nth(1) {
        let listener = TcpListener::bind("127.0.0.1:8081").await.expect("bind");
        println!("proxying http://127.0.0.1:8081 to {origin}");
        proxy(listener, origin.parse().expect("origin URL")).await;
        return;
    }
    let origin = start_demo_origin().await;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let edge = listener.local_addr().unwrap();
    tokio::spawn(proxy(listener, format!("http://{origin}").parse().unwrap()));

    let client = Client::builder(TokioExecutor::new()).build_http::<String>();
    for _ in 0..2 {
        let response = client
            .get(format!("http://{edge}/hello").parse().unwrap())
            .await
            .expect("request through the proxy");
        println!(
            "GET /hello -> {} {:?}",
            response.status(),
            response.headers()["x-cache"]
        );
    }
}

/// A one-route origin on a free loopback port.
async fn start_demo_origin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().unwrap();
    let origin = service_fn(|_req: Request<Incoming>| async {
        let response = http::Response::builder()
            .header("cache-control", "public, max-age=60")
            .body("hello from the origin\n".to_owned());
        Ok::<_, Infallible>(response.unwrap())
    });
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.expect("accept");
            let service = TowerToHyperService::new(origin);
            tokio::spawn(
                auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .into_owned(),
            );
        }
    });
    addr
}
