//! Does compressing a large object hold up hits on other objects?
//!
//! A background task fills 1 MiB compressible objects and asks for their br coding, one
//! after the other, so a first compression of a 1 MiB body is running most of the time
//! (the layer compresses bodies over 64 KiB on tokio's blocking pool). Meanwhile the timed
//! loop hits a small stored object. `hit_alone` is the same loop with no compression
//! running, in the same run; compare the two (the machine's two cores are shared by the
//! compressions, the hits and the harness, so some slowdown is CPU contention, not
//! blocking: a hit that waited for a compression would cost milliseconds, not microseconds).
//!
//! Run with `cargo bench --bench compression`.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tower::{service_fn, Layer, ServiceExt};
use tower_cdn::CdnLayer;

const BIG: usize = 1024 * 1024;

fn text(len: usize) -> Bytes {
    let line = b"tower-cdn compresses each object once and keeps the coding with it. ";
    Bytes::from(line.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (small, big) = (text(2_000), text(BIG));
    let origin = service_fn(move |req: Request<()>| {
        let body = if req.uri().path().starts_with("/big/") {
            big.clone()
        } else {
            small.clone()
        };
        async move {
            let res = Response::builder()
                .header("cache-control", "max-age=3600")
                .header("content-type", "text/plain")
                .body(Full::new(body))
                .unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    let layer = CdnLayer::builder()
        .capacity(1 << 30)
        .max_object_size(4 << 20)
        .build()
        .unwrap();
    let svc = layer.clone().layer(origin);
    let get = |path: &str, ae: &str| {
        Request::get(path)
            .header("host", "bench")
            .header("accept-encoding", ae)
            .body(())
            .unwrap()
    };
    let hit = {
        let svc = svc.clone();
        move || {
            let svc = svc.clone();
            async move {
                let res = svc.oneshot(get("/small", "identity")).await.unwrap();
                assert_eq!(res.headers()["x-cache"], "Hit from tower-cdn");
                res.into_body().collect().await.unwrap();
            }
        }
    };
    rt.block_on(hit_or_fill(&svc));

    let mut group = c.benchmark_group("hit_while_compressing_1MiB");
    group
        .measurement_time(Duration::from_secs(5))
        .sample_size(20);
    group.bench_function("hit_alone", |b| {
        b.iter_custom(|iters| rt.block_on(timed(iters, hit.clone())));
    });

    let running = Arc::new(AtomicBool::new(true));
    let made = Arc::new(AtomicU64::new(0));
    let background = {
        let (svc, running, made) = (svc.clone(), running.clone(), made.clone());
        rt.spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::Relaxed) {
                n += 1;
                let path = format!("/big/{n}");
                let fill = svc.clone().oneshot(get(&path, "identity")).await.unwrap();
                fill.into_body().collect().await.unwrap();
                let br = svc.clone().oneshot(get(&path, "br")).await.unwrap();
                assert_eq!(br.headers()["content-encoding"], "br");
                br.into_body().collect().await.unwrap();
                made.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    group.bench_function("hit_while_compressing", |b| {
        b.iter_custom(|iters| rt.block_on(timed(iters, hit.clone())));
    });
    group.finish();
    running.store(false, Ordering::Relaxed);
    rt.block_on(background).unwrap();
    println!(
        "compressions of 1 MiB made while measuring: {}",
        made.load(Ordering::Relaxed)
    );
}

async fn hit_or_fill<S>(svc: &S)
where
    S: tower::Service<
            Request<()>,
            Response = Response<tower_cdn::CdnBody<Full<Bytes>>>,
            Error = Infallible,
        > + Clone,
{
    let req = Request::get("/small")
        .header("host", "bench")
        .body(())
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    res.into_body().collect().await.unwrap();
}

async fn timed<F, Fut>(iters: u64, hit: F) -> Duration
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    for _ in 0..iters {
        hit().await;
    }
    start.elapsed()
}

criterion_group!(benches, bench);
criterion_main!(benches);
