//! Hit-path benchmarks: what a cache hit through [`CdnLayer`] costs, as a ratio against the
//! bare origin service measured in the same run.
//!
//! # What is measured
//!
//! The origin is an in-process `tower::Service<Request<()>>` that returns a prebuilt
//! `Response<Full<Bytes>>` (a clone of ten realistic header fields and of the shared `Bytes`
//! body — no I/O, no copy of the body). The request is a clone of a prebuilt browser-like GET
//! (host, user-agent, accept, accept-encoding, ...). Every iteration drives the service with
//! `ready().await` + `call(..)`, awaits the response and collects its body to `Bytes`.
//!
//! For each body size (`hit_1KiB`, `hit_64KiB`) the arms are identical except for the
//! service:
//!
//! * `baseline`: the bare origin service. This is the cheapest origin there can be, so it
//!   is close to the fixed harness cost (request clone, response build, body collect).
//! * `cdn_hit`: the same origin behind `CdnLayer::new()` (default settings), on a warmed key,
//!   so every timed iteration is a `Hit` and the origin is never called (checked before
//!   measuring and again after: the origin behind an edge counts its calls). With the default
//!   settings the edge compresses text itself: the object is stored once, without
//!   `Accept-Encoding` in its storage `Vary`, and the coding the request picks (br) is made on
//!   the first hit and kept, so the timed hits serve that stored coding.
//! * `cdn_hit_identity`: behind `CdnLayer::builder().no_compression()`. The origin's
//!   `Vary: Accept-Encoding` now keys the cache, so each hit does the primary lookup, finds
//!   the `Vary` record and does the variant lookup; the body served is the origin's, at its
//!   full size.
//! * `cdn_hit_identity_novary`: as `cdn_hit_identity`, with `Vary` left out of the origin
//!   response: one lookup per hit. Its difference to `cdn_hit_identity` is the price of the
//!   `Vary` indirection.
//!
//! `hit_signed` (1 KiB, with the `signed-urls` feature) prices a signed-URL check on the hit:
//! `baseline` and `cdn_hit` as above, then the same edge with its default behavior requiring a signed URL
//! (`Behavior::trusted_key_group`), one key group per arm:
//!
//! * `cdn_hit_signed_ed25519`: an Ed25519 key.
//! * `cdn_hit_signed_hmac_sha256`: an HMAC-SHA256 secret.
//! * `cdn_hit_signed_ed25519_no_memo`: the Ed25519 key in a group whose memo of verified
//!   signatures is off (`KeyGroup::signature_memo(0)`), so every hit verifies the signature.
//!
//! Their request is `cdn_hit`'s with a canned-policy signature appended to the query
//! (`Expires`, `Signature`, `Key-Pair-Id`; valid for a day), so each hit also builds the
//! resource URL, finds the credentials, checks the signature and the expiry, and strips the
//! signing parameters before the key. The signature is verified once, in warm-up; the timed
//! hits find it in the key group's memo of verified signatures, as a viewer repeating a URL
//! does (the expiry is still checked on each), except in the `_no_memo` arm. The parameters are not part of the cache key, so all
//! three edges serve the same stored object. A request without the signature is checked to be
//! refused with `403` before measuring.
//!
//! `hit_concurrent` runs `baseline` and `cdn_hit` (1 KiB) with [`CONCURRENCY`] tasks on a
//! multi-thread runtime with two workers, all hitting the same cached key; the figure is wall
//! time per request (total time divided by the requests made by all tasks), so with two idle
//! cores it is about half the single-task cost, and more than that when the store's shared
//! state is contended.
//!
//! Async code runs on a tokio runtime through `iter_custom`: one `block_on` per sample runs
//! the whole timed loop, which is what criterion's `to_async` does (that needs the
//! `async_tokio` feature, which is off with `default-features = false`).
//!
//! # How to read it
//!
//! The machine this runs on is shared and noisy, so absolute times mean little across runs.
//! Compare arms *within one run* (and distrust a run whose load changed between arms: the
//! arms run one after the other):
//!
//! * added cost of a hit = `cdn_hit − baseline` (ns). Since the hit never calls the origin,
//!   this is "the edge's hit path minus the cheapest possible origin".
//! * ratio = `cdn_hit / baseline`.
//! * price of a signed-URL check on a hit = `hit_signed/cdn_hit_signed_ed25519 −
//!   hit_signed/cdn_hit` (and likewise for HMAC), against the `cdn_hit` of the same group,
//!   never of another group.
//! * `hit_64KiB/cdn_hit_identity` should cost the same as `hit_1KiB/cdn_hit_identity` (and
//!   likewise for the other arms): a hit shares the stored `Bytes` and never copies the body.
//!   A gap that grows with the body size is a copy.
//!
//! Run with `cargo bench --bench hit_path` (about 55 s of measuring), or one group with a
//! filter: `cargo bench --bench hit_path -- hit_signed`.

use std::convert::Infallible;
use std::future::{ready, Ready};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt};
#[cfg(feature = "signed-urls")]
use tower_cdn::signing::{KeyGroup, Signer, SigningKey};
#[cfg(feature = "signed-urls")]
use tower_cdn::Behavior;
use tower_cdn::{CdnLayer, CdnService};
use tower_layer::Layer;

/// Tasks hitting the same key at once in `hit_concurrent`.
const CONCURRENCY: u64 = 4;

/// The origin: returns a clone of one prebuilt response for every request.
#[derive(Clone)]
struct Origin {
    headers: Arc<HeaderMap>,
    body: Bytes,
}

impl Origin {
    fn new(body_len: usize, vary: bool) -> Self {
        // HTML-like text: compressible, but not a single repeated byte.
        let mut text = String::with_capacity(body_len + 64);
        let mut i = 0u64;
        while text.len() < body_len {
            i += 1;
            let n = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
            text.push_str(&format!(
                "<p id=\"p{i}\">Item {n:x} of the edge cache page.</p>\n"
            ));
        }
        text.truncate(body_len);
        let body = Bytes::from(text);
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        let mut put = |name: HeaderName, value: String| {
            h.insert(name, HeaderValue::try_from(value).expect("valid field"));
        };
        put(header::CONTENT_TYPE, "text/html; charset=utf-8".into());
        put(header::CONTENT_LENGTH, body_len.to_string());
        put(header::CACHE_CONTROL, "public, max-age=3600".into());
        put(header::ETAG, "\"5f3c2a1b-10000\"".into());
        put(
            header::LAST_MODIFIED,
            httpdate::fmt_http_date(now - Duration::from_secs(86_400)),
        );
        put(header::DATE, httpdate::fmt_http_date(now));
        put(header::SERVER, "origin/1.0".into());
        put(
            HeaderName::from_static("x-request-id"),
            "7b0d7e2c-1f4e-4a8e-9c1d-2f6b8e3a9d01".into(),
        );
        put(
            header::STRICT_TRANSPORT_SECURITY,
            "max-age=31536000; includeSubDomains".into(),
        );
        put(header::X_CONTENT_TYPE_OPTIONS, "nosniff".into());
        if vary {
            put(header::VARY, "Accept-Encoding".into());
        }
        Self {
            headers: Arc::new(h),
            body,
        }
    }
}

impl Service<Request<()>> for Origin {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<()>) -> Self::Future {
        let mut res = Response::new(Full::new(self.body.clone()));
        *res.status_mut() = StatusCode::OK;
        *res.headers_mut() = HeaderMap::clone(&self.headers);
        ready(Ok(res))
    }
}

/// [`Origin`] counting its calls, behind the edge only: the bare `baseline` pays no atomic.
#[derive(Clone)]
struct Counted {
    origin: Origin,
    calls: Arc<AtomicU64>,
}

impl Counted {
    fn new(origin: Origin) -> Self {
        Self {
            origin,
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }
}

impl Service<Request<()>> for Counted {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.origin.poll_ready(cx)
    }

    fn call(&mut self, req: Request<()>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.origin.call(req)
    }
}

/// The page every arm requests, and the URL a signed-URL arm signs for it.
const PAGE: &str = "/articles/2024/edge-caching?ref=home";
#[cfg(feature = "signed-urls")]
const PAGE_URL: &str = "http://www.example.com/articles/2024/edge-caching?ref=home";

/// A browser-like GET for [`PAGE`] on the edge.
fn viewer_request() -> Request<()> {
    viewer_request_to(PAGE)
}

/// The same browser-like GET for `path_and_query`.
fn viewer_request_to(path_and_query: &str) -> Request<()> {
    Request::get(path_and_query)
        .header(header::HOST, "www.example.com")
        .header(
            header::USER_AGENT,
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
        )
        .header(
            header::ACCEPT,
            "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
        )
        .header(header::ACCEPT_ENCODING, "gzip, deflate, br, zstd")
        .header(header::ACCEPT_LANGUAGE, "en-US,en;q=0.5")
        .header(header::REFERER, "https://www.example.com/")
        .header(header::COOKIE, "session=abc123; theme=dark")
        .header("upgrade-insecure-requests", "1")
        .header("sec-fetch-mode", "navigate")
        .body(())
        .expect("valid request")
}

/// The response to one request through `svc`.
async fn respond<S, B>(svc: &mut S, req: &Request<()>) -> Response<B>
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    svc.ready()
        .await
        .expect("ready")
        .call(req.clone())
        .await
        .expect("response")
}

/// One request through `svc`, body collected: the unit of work every arm times.
async fn one<S, B>(svc: &mut S, req: &Request<()>) -> Bytes
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let res = respond(svc, req).await;
    res.into_body().collect().await.expect("body").to_bytes()
}

/// `iters` requests in a row on `rt`, timed inside one `block_on`.
fn run_serial<S, B>(rt: &Runtime, svc: &S, req: &Request<()>, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: http_body::Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let mut svc = svc.clone();
    rt.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            black_box(one(&mut svc, black_box(req)).await);
        }
        start.elapsed()
    })
}

/// `iters` requests split over [`CONCURRENCY`] tasks on `rt`; wall time for all of them.
fn run_concurrent<S, B>(rt: &Runtime, svc: &S, req: &Request<()>, iters: u64) -> Duration
where
    S: Service<Request<()>, Response = Response<B>> + Clone + Send + 'static,
    S::Error: std::fmt::Debug,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send,
    B::Error: std::fmt::Debug,
{
    rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..CONCURRENCY)
            .map(|i| {
                // Spread the remainder so the tasks make exactly `iters` requests together.
                let n = iters / CONCURRENCY + u64::from(i < iters % CONCURRENCY);
                let mut svc = svc.clone();
                let req = req.clone();
                tokio::spawn(async move {
                    for _ in 0..n {
                        black_box(one(&mut svc, &req).await);
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("bench task");
        }
        start.elapsed()
    })
}

/// An edge on a warmed key, and how many origin calls filling it took.
struct Edge {
    svc: CdnService<Counted>,
    fills: u64,
}

impl Edge {
    /// Panics if the origin was called since the key was warmed.
    fn assert_origin_idle(&self, arm: &str) {
        assert_eq!(
            self.svc.get_ref().calls(),
            self.fills,
            "{arm}: the origin was called after warm-up"
        );
    }
}

/// The origin behind `layer`, with the request's key stored and any coding the request
/// picks already made: checks that the next requests are hits with the same body, and that
/// they leave the origin alone.
fn warmed(rt: &Runtime, layer: &CdnLayer, origin: Origin, req: &Request<()>) -> Edge {
    let mut svc = layer.layer(Counted::new(origin));
    let hit = HeaderValue::from_static("Hit from tower-cdn");
    rt.block_on(async {
        let mut trail = Vec::new();
        let mut steady = Vec::new();
        for _ in 0..1000 {
            let res = respond(&mut svc, req).await;
            let field = |name| res.headers().get(name).cloned();
            let (x_cache, coding) = (field("x-cache"), field("content-encoding"));
            trail.push((res.status(), x_cache.clone(), field("cache-status")));
            let body = res.into_body().collect().await.expect("body").to_bytes();
            assert!(!body.is_empty(), "a body is served");
            if x_cache.as_ref() == Some(&hit) {
                steady.push((coding, body));
            } else {
                steady.clear();
            }
            // A hit may make a coding on first use: wait until hits are steady.
            if let [.., a, b, c] = &steady[..] {
                if a == b && b == c {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("the key never became a steady hit: {trail:?}");
    });
    let fills = svc.get_ref().calls();
    assert!(fills >= 1, "the key was filled from the origin");
    rt.block_on(async {
        for _ in 0..100 {
            let res = respond(&mut svc, req).await;
            assert_eq!(res.headers().get("x-cache"), Some(&hit), "a hit");
        }
    });
    let edge = Edge { svc, fills };
    edge.assert_origin_idle("warm-up");
    edge
}

fn current_thread() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn bench_sizes(c: &mut Criterion) {
    let rt = current_thread();
    let req = viewer_request();
    let default = CdnLayer::new;
    let identity = || {
        CdnLayer::builder()
            .no_compression()
            .build()
            .expect("valid layer")
    };
    for (name, len) in [("hit_1KiB", 1024), ("hit_64KiB", 64 * 1024)] {
        let origin = Origin::new(len, true);
        let arms = [
            ("cdn_hit", warmed(&rt, &default(), origin.clone(), &req)),
            (
                "cdn_hit_identity",
                warmed(&rt, &identity(), origin.clone(), &req),
            ),
            (
                "cdn_hit_identity_novary",
                warmed(&rt, &identity(), Origin::new(len, false), &req),
            ),
        ];

        let mut g = c.benchmark_group(name);
        g.bench_function("baseline", |b| {
            b.iter_custom(|iters| run_serial(&rt, &origin, &req, iters));
        });
        for (arm, edge) in &arms {
            g.bench_function(*arm, |b| {
                b.iter_custom(|iters| run_serial(&rt, &edge.svc, &req, iters));
            });
        }
        g.finish();
        for (arm, edge) in &arms {
            edge.assert_origin_idle(arm);
        }
    }
}

/// `CdnLayer::new()` settings, with the default behavior trusting `key` under `id`, the
/// key group remembering `memo` bytes of verified signatures.
#[cfg(feature = "signed-urls")]
fn signed_layer(id: &str, key: &SigningKey, memo: usize) -> CdnLayer {
    let group = KeyGroup::new()
        .with_key(id, key.verifying_key())
        .expect("valid key id")
        .signature_memo(memo);
    CdnLayer::builder()
        .default_behavior(Behavior::new().trusted_key_group(group))
        .build()
        .expect("valid layer")
}

/// [`viewer_request`] with [`PAGE_URL`] signed by `signer` (canned policy, valid for a day).
#[cfg(feature = "signed-urls")]
fn signed_request(signer: &Signer) -> Request<()> {
    let expires = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        + 86_400;
    let url = signer.sign_canned_url(PAGE_URL, expires);
    let path_and_query = url
        .strip_prefix("http://www.example.com")
        .expect("the signed URL is on the page's host");
    viewer_request_to(path_and_query)
}

#[cfg(feature = "signed-urls")]
fn bench_signed(c: &mut Criterion) {
    let rt = current_thread();
    let plain = viewer_request();
    let origin = Origin::new(1024, true);
    let ed25519 = SigningKey::ed25519(&[7; 32]).expect("valid key");
    let hmac = SigningKey::hmac_sha256(b"a bench secret of 32 bytes......").expect("valid key");
    let mut arms = vec![(
        "cdn_hit",
        warmed(&rt, &CdnLayer::new(), origin.clone(), &plain),
        plain.clone(),
    )];
    let memo = tower_cdn::signing::DEFAULT_SIGNATURE_MEMO_BYTES;
    for (arm, id, key, memo) in [
        ("cdn_hit_signed_ed25519", "ED1", ed25519.clone(), memo),
        ("cdn_hit_signed_hmac_sha256", "HM1", hmac, memo),
        ("cdn_hit_signed_ed25519_no_memo", "ED1", ed25519, 0),
    ] {
        let layer = signed_layer(id, &key, memo);
        let req = signed_request(&Signer::new(id, key).expect("valid signer"));
        let edge = warmed(&rt, &layer, origin.clone(), &req);
        let unsigned = rt.block_on(edge.svc.clone().oneshot(plain.clone()));
        assert_eq!(
            unsigned.expect("response").status(),
            StatusCode::FORBIDDEN,
            "{arm}: the behavior requires a signed URL"
        );
        arms.push((arm, edge, req));
    }

    let mut g = c.benchmark_group("hit_signed");
    g.bench_function("baseline", |b| {
        b.iter_custom(|iters| run_serial(&rt, &origin, &plain, iters));
    });
    for (arm, edge, req) in &arms {
        g.bench_function(*arm, |b| {
            b.iter_custom(|iters| run_serial(&rt, &edge.svc, req, iters));
        });
    }
    g.finish();
    for (arm, edge, _) in &arms {
        edge.assert_origin_idle(arm);
    }
}

fn bench_concurrent(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let req = viewer_request();
    let len = 1024;
    let origin = Origin::new(len, true);
    let cdn = warmed(&rt, &CdnLayer::new(), origin.clone(), &req);

    let mut g = c.benchmark_group("hit_concurrent");
    g.bench_function(BenchmarkId::new("baseline", CONCURRENCY), |b| {
        b.iter_custom(|iters| run_concurrent(&rt, &origin, &req, iters));
    });
    g.bench_function(BenchmarkId::new("cdn_hit", CONCURRENCY), |b| {
        b.iter_custom(|iters| run_concurrent(&rt, &cdn.svc, &req, iters));
    });
    g.finish();
    cdn.assert_origin_idle("hit_concurrent/cdn_hit");
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

#[cfg(feature = "signed-urls")]
criterion_group! {
    name = benches;
    config = config();
    targets = bench_sizes, bench_signed, bench_concurrent
}
#[cfg(not(feature = "signed-urls"))]
criterion_group! {
    name = benches;
    config = config();
    targets = bench_sizes, bench_concurrent
}
criterion_main!(benches);
