//! What a memory miss costs when Redis answers it, against the same miss sent to an origin.
//!
//! Every timed request misses in memory (a fresh layer every `KEYS` requests, built outside
//! the timing). Per body size:
//! - `memory_hit`: the same request found in memory, for scale;
//! - `miss_origin_in_process`: the miss answered by an in-process origin that does nothing,
//!   the layer's own miss path;
//! - `miss_origin_loopback_http`: the miss answered by an axum origin on 127.0.0.1 over
//!   HTTP/1.1 keep-alive (the cheapest real origin fetch);
//! - `miss_redis_hit`: the miss answered from Redis on 127.0.0.1 (TCP) and promoted;
//! - `redis_get`: a bare redis-rs `GET` of a value that size, the floor under the row above.
//!
//! ```sh
//! cargo bench --features redis --bench shared_tier
//! ```
//!
//! Uses the Redis in `TOWER_CDN_TEST_REDIS` if set, else starts `redis-server` on a free
//! loopback port for the run.

#[path = "../tests/support/redis.rs"]
mod redis_server;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{header, Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{Layer, Service, ServiceExt};
use tower_cdn::{CdnLayer, RedisTier};

/// Distinct URLs per layer: each is requested once, so every request misses in memory.
const KEYS: usize = 1000;
const SIZES: [usize; 2] = [1024, 64 * 1024];

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
}

fn layer(tier: Option<&RedisTier>) -> CdnLayer {
    let builder = CdnLayer::builder()
        .capacity(256 * 1024 * 1024)
        .no_compression();
    match tier {
        Some(tier) => builder.shared_tier(tier.clone()),
        None => builder,
    }
    .build()
    .expect("valid layer")
}

/// An origin that answers at once with `body`, counting its calls.
fn in_process_origin(
    body: Bytes,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<Empty<Bytes>>,
    Response = Response<Full<Bytes>>,
    Error = Infallible,
    Future = impl Send,
> + Clone
       + Send
       + 'static {
    tower::service_fn(move |_req: Request<Empty<Bytes>>| {
        calls.fetch_add(1, Ordering::Relaxed);
        let body = body.clone();
        async move {
            Ok(Response::builder()
                .header(header::CACHE_CONTROL, "max-age=600")
                .body(Full::new(body))
                .expect("valid response"))
        }
    })
}

fn get(base: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::get(format!("{base}{path}"))
        .body(Empty::new())
        .expect("valid request")
}

/// Sends one request and reads its whole body.
async fn fetch<S, B>(svc: &S, req: Request<Empty<Bytes>>) -> usize
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = svc.clone().oneshot(req).await.expect("a response");
    res.into_body()
        .collect()
        .await
        .expect("a body")
        .to_bytes()
        .len()
}

/// Times `iters` memory misses: a new layer (from `make`) for every `KEYS` requests, each
/// request for a URL the layer has not seen.
async fn time_misses<S, B>(
    iters: u64,
    base: &str,
    body_len: usize,
    make: impl Fn() -> S,
) -> Duration
where
    S: Service<Request<Empty<Bytes>>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut total = Duration::ZERO;
    let mut svc = make();
    for i in 0..iters as usize {
        if i > 0 && i % KEYS == 0 {
            svc = make();
        }
        let req = get(base, &format!("/obj-{}", i % KEYS));
        let start = Instant::now();
        let len = fetch(&svc, req).await;
        total += start.elapsed();
        assert_eq!(len, body_len);
    }
    total
}

fn shared_tier(c: &mut Criterion) {
    let rt = runtime();
    let redis = match std::env::var(redis_server::ENV) {
        Ok(url) if !url.is_empty() => redis_server::RedisServer::shared(),
        _ => redis_server::RedisServer::spawn_tcp(),
    };
    let prefix = redis_server::unique_prefix("bench");
    let tier = RedisTier::builder(redis.url())
        .key_prefix(&prefix)
        .max_body_size(1024 * 1024)
        .build()
        .expect("valid tier");

    // The loopback origin: one axum server answering every path with the size it names.
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let origin_base = format!("http://{}", listener.local_addr().expect("an address"));
    let bodies: Vec<Bytes> = SIZES.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect();
    let app = {
        let bodies = bodies.clone();
        axum::Router::new().route(
            "/{size}/{*rest}",
            axum::routing::get(
                move |axum::extract::Path((size, _)): axum::extract::Path<(usize, String)>| {
                    let body = bodies
                        .iter()
                        .find(|b| b.len() == size)
                        .cloned()
                        .unwrap_or_default();
                    async move { ([(header::CACHE_CONTROL, "max-age=600")], body) }
                },
            ),
        )
    };
    rt.spawn(async move { axum::serve(listener, app).await });
    let client: Client<_, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();

    let mut group = c.benchmark_group("memory_miss");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for body in &bodies {
        let size = body.len();
        let calls = Arc::new(AtomicUsize::new(0));
        let base = format!("http://bench.example/{size}");

        // Redis holds every URL; the layers timed below start empty.
        rt.block_on(async {
            tier.ping().await.expect("redis answers");
            let before = tier.stats().writes;
            let filler = layer(Some(&tier)).layer(in_process_origin(body.clone(), calls.clone()));
            for i in 0..KEYS {
                fetch(&filler, get(&base, &format!("/obj-{i}"))).await;
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while tier.stats().writes < before + KEYS as u64 {
                assert!(
                    Instant::now() < deadline,
                    "the write-through did not finish"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });

        group.bench_function(BenchmarkId::new("memory_hit", size), |b| {
            let svc = layer(None).layer(in_process_origin(body.clone(), calls.clone()));
            rt.block_on(fetch(&svc, get(&base, "/hot")));
            b.iter(|| rt.block_on(fetch(&svc, get(&base, "/hot"))));
        });
        group.bench_function(BenchmarkId::new("miss_origin_in_process", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(time_misses(iters, &base, size, || {
                    layer(None).layer(in_process_origin(body.clone(), calls.clone()))
                }))
            });
        });
        group.bench_function(BenchmarkId::new("miss_origin_loopback_http", size), |b| {
            let base = format!("{origin_base}/{size}");
            b.iter_custom(|iters| {
                rt.block_on(time_misses(iters, &base, size, || {
                    layer(None).layer(client.clone())
                }))
            });
        });
        group.bench_function(BenchmarkId::new("redis_get", size), |b| {
            let key = format!("{prefix}raw:{size}");
            let mut conn = rt.block_on(async {
                let client = redis::Client::open(redis.url()).expect("a redis URL");
                let mut conn = client
                    .get_multiplexed_async_connection()
                    .await
                    .expect("a connection");
                redis::cmd("SET")
                    .arg(&key)
                    .arg(body.as_ref())
                    .exec_async(&mut conn)
                    .await
                    .expect("SET");
                conn
            });
            b.iter(|| {
                rt.block_on(async {
                    let value: Bytes = redis::cmd("GET")
                        .arg(&key)
                        .query_async(&mut conn)
                        .await
                        .expect("GET");
                    assert_eq!(value.len(), size);
                })
            });
        });
        let before = calls.load(Ordering::Relaxed);
        let hits = tier.stats().hits;
        group.bench_function(BenchmarkId::new("miss_redis_hit", size), |b| {
            b.iter_custom(|iters| {
                rt.block_on(time_misses(iters, &base, size, || {
                    layer(Some(&tier)).layer(in_process_origin(body.clone(), calls.clone()))
                }))
            });
        });
        // Every one of those misses was answered by Redis, none by the origin.
        assert_eq!(
            calls.load(Ordering::Relaxed),
            before,
            "a miss reached the origin"
        );
        assert!(tier.stats().hits > hits);
        assert_eq!(tier.stats().errors, 0);
    }
    group.finish();
    drop(redis);
}

criterion_group!(benches, shared_tier);
criterion_main!(benches);
