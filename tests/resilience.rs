//! Collapsing, stale-while-revalidate, stale-if-error, timeouts and error caching.
//! Time is tokio's paused clock (timeouts) and the layer's manual clock (freshness).

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};
use tower_cdn::{AllowedMethods, Behavior, CdnLayer, CustomErrorResponse, ManualClock};

fn layer_with(clock: &ManualClock) -> tower_cdn::CdnLayerBuilder {
    CdnLayer::builder().clock(clock.clone())
}

/// An origin that holds every answer until `release` is notified, counting in-flight calls.
fn gated_origin(
    headers: &'static [(&'static str, &'static str)],
    body: Bytes,
) -> (Origin, Seen, Arc<Notify>, Arc<AtomicUsize>) {
    let release = Arc::new(Notify::new());
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let in_flight = Arc::new(AtomicUsize::new(0));
    let (r, m) = (release.clone(), max_in_flight.clone());
    let (origin, seen) = async_origin(move |_| {
        let (r, m, i, body) = (r.clone(), m.clone(), in_flight.clone(), body.clone());
        async move {
            let now = i.fetch_add(1, Ordering::SeqCst) + 1;
            m.fetch_max(now, Ordering::SeqCst);
            r.notified().await;
            i.fetch_sub(1, Ordering::SeqCst);
            response(headers, TestBody::Full(Some(body)))
        }
    });
    (origin, seen, release, max_in_flight)
}

async fn body_of<B: http_body::Body<Data = Bytes>>(res: Response<B>) -> Bytes
where
    B::Error: std::fmt::Debug,
{
    res.into_body().collect().await.unwrap().to_bytes()
}

#[tokio::test(start_paused = true)]
async fn two_hundred_concurrent_misses_make_one_origin_call() {
    let body = Bytes::from(vec![b'x'; 100_000]);
    let (origin, seen, release, _) = gated_origin(&[("cache-control", "max-age=60")], body.clone());
    let svc = CdnLayer::new().layer(origin);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let svc = svc.clone();
            tokio::spawn(async move {
                let res = svc.oneshot(get("/cold", &[])).await.unwrap();
                let collapsed = res.headers()["cache-status"]
                    .to_str()
                    .unwrap()
                    .contains("collapsed");
                (collapsed, body_of(res).await)
            })
        })
        .collect();
    eventually("the origin request", || seen.calls() > 0).await;
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
    release.notify_waiters();
    let mut collapsed = 0;
    for t in tasks {
        let (c, b) = t.await.unwrap();
        assert_eq!(b, body, "every viewer gets the whole body");
        collapsed += usize::from(c);
    }
    assert_eq!(seen.calls(), 1);
    assert_eq!(collapsed, 199);
}

#[tokio::test(start_paused = true)]
async fn followers_are_served_when_the_leaders_viewer_goes_away() {
    let body = Bytes::from_static(b"survives");
    let (origin, seen, release, _) = gated_origin(&[("cache-control", "max-age=60")], body.clone());
    let svc = CdnLayer::new().layer(origin);
    let leader = tokio::spawn(svc.clone().oneshot(get("/k", &[])));
    eventually("the origin request", || seen.calls() > 0).await;
    let followers: Vec<_> = (0..50)
        .map(|_| tokio::spawn(svc.clone().oneshot(get("/k", &[]))))
        .collect();
    for _ in 0..50 {
        tokio::task::yield_now().await;
    }
    leader.abort();
    release.notify_waiters();
    for f in followers {
        assert_eq!(body_of(f.await.unwrap().unwrap()).await, body);
    }
    assert_eq!(seen.calls(), 1);
    let after = svc.oneshot(get("/k", &[])).await.unwrap();
    assert_eq!(
        after.headers()["x-cache"],
        "Hit from tower-cdn",
        "the fill finished and was stored"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leader_dropping_mid_body_does_not_truncate_followers() {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    let rx = Arc::new(std::sync::Mutex::new(Some(rx)));
    let (origin, seen) = origin(move |_| {
        let rx = rx.lock().unwrap().take().expect("one origin call");
        response(&[("cache-control", "max-age=60")], TestBody::Channel(rx))
    });
    let svc = CdnLayer::new().layer(origin);
    tx.send(Ok(Bytes::from_static(b"first,"))).await.unwrap();
    let mut leader = svc
        .clone()
        .oneshot(get("/k", &[]))
        .await
        .unwrap()
        .into_body();
    let first = leader.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first,");
    let follower = tokio::spawn(svc.clone().oneshot(get("/k", &[])));
    tokio::task::yield_now().await;
    drop(leader);
    tx.send(Ok(Bytes::from_static(b"second"))).await.unwrap();
    drop(tx);
    assert_eq!(
        body_of(follower.await.unwrap().unwrap()).await,
        "first,second"
    );
    assert_eq!(seen.calls(), 1);
    // The whole body was stored for the next viewer.
    let after = send(&svc, get("/k", &[])).await;
    assert_eq!(
        (after.x_cache(), after.body.as_ref()),
        ("Hit from tower-cdn", &b"first,second"[..])
    );
    assert_eq!(seen.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn uncacheable_keys_are_not_serialised() {
    // Hit-for-pass: once a URL answered something not storable, requests for it overlap.
    let (origin, seen, release, max_in_flight) = gated_origin(
        &[("cache-control", "private, max-age=60")],
        Bytes::from_static(b"p"),
    );
    let svc = CdnLayer::new().layer(origin);
    let first = tokio::spawn(svc.clone().oneshot(get("/me", &[])));
    eventually("the origin request", || seen.calls() > 0).await;
    release.notify_waiters();
    first.await.unwrap().unwrap();
    max_in_flight.store(0, Ordering::SeqCst);

    let tasks: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(get("/me", &[]))))
        .collect();
    eventually("11 origin requests", || seen.calls() >= 11).await;
    assert_eq!(
        max_in_flight.load(Ordering::SeqCst),
        10,
        "all ten reached the origin at once"
    );
    release.notify_waiters();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_waits_too_long_goes_to_the_origin_itself() {
    let (origin, seen, release, _) =
        gated_origin(&[("cache-control", "max-age=60")], Bytes::from_static(b"x"));
    let svc = CdnLayer::builder()
        .collapse_timeout(Duration::from_secs(2))
        .build()
        .unwrap()
        .layer(origin);
    let leader = tokio::spawn(svc.clone().oneshot(get("/k", &[])));
    eventually("the origin request", || seen.calls() > 0).await;
    let follower = tokio::spawn(svc.clone().oneshot(get("/k", &[])));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(seen.calls(), 2);
    release.notify_waiters();
    leader.await.unwrap().unwrap();
    follower.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn stale_while_revalidate_answers_at_once_and_refreshes_once() {
    let version = Arc::new(AtomicUsize::new(1));
    let release = Arc::new(Notify::new());
    let (v, r) = (version.clone(), release.clone());
    let (origin, seen) = async_origin(move |_| {
        let (v, r) = (v.clone(), r.clone());
        async move {
            let n = v.load(Ordering::SeqCst);
            if n > 1 {
                r.notified().await;
            }
            response(
                &[("cache-control", "max-age=10, stale-while-revalidate=60")],
                format!("v{n}"),
            )
        }
    });
    let clock = ManualClock::new();
    let svc = layer_with(&clock).build().unwrap().layer(origin);
    assert_eq!(send(&svc, get("/a", &[])).await.body, "v1");
    clock.advance(Duration::from_secs(9));
    let fresh = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (fresh.x_cache(), fresh.body.as_ref()),
        ("Hit from tower-cdn", &b"v1"[..])
    );
    assert!(!fresh.header("cache-status").contains("stale"));
    version.store(2, Ordering::SeqCst);
    clock.advance(Duration::from_secs(6));

    for _ in 0..5 {
        let stale = send(&svc, get("/a", &[])).await;
        assert_eq!(stale.body, "v1", "served at once while the origin is held");
        assert_eq!(stale.x_cache(), "Hit from tower-cdn");
        assert!(stale
            .header("cache-status")
            .contains("stale-while-revalidate"));
    }
    eventually("2 origin requests", || seen.calls() >= 2).await;
    assert_eq!(
        seen.calls(),
        2,
        "one background origin call for five stale hits"
    );
    release.notify_waiters();
    let mut refreshed = false;
    for _ in 0..1000 {
        tokio::task::yield_now().await;
        let res = send(&svc, get("/a", &[])).await;
        if res.body == "v2" {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "the background refresh replaced the object");
    assert_eq!(seen.calls(), 2);
    let fresh = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (fresh.x_cache(), fresh.body.as_ref()),
        ("Hit from tower-cdn", &b"v2"[..])
    );
    assert!(!fresh.header("cache-status").contains("stale"));

    clock.advance(Duration::from_secs(75));
    version.store(3, Ordering::SeqCst);
    let waiting = tokio::spawn({
        let svc = svc.clone();
        async move { send(&svc, get("/a", &[])).await }
    });
    eventually("3 origin requests", || seen.calls() >= 3).await;
    assert!(
        !waiting.is_finished(),
        "past the window the viewer waits for the origin"
    );
    release.notify_waiters();
    let waited = waiting.await.unwrap();
    assert_eq!(waited.body, "v3");
    assert_eq!(waited.x_cache(), "Miss from tower-cdn");
    assert_eq!(seen.calls(), 3);
}

/// An origin whose mode the test flips: 200, 503, an inner error, or no answer at all.
#[derive(Clone, Default)]
struct Flaky {
    mode: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    cache_control: Arc<std::sync::Mutex<&'static str>>,
}

const OK: usize = 0;
const UNAVAILABLE: usize = 1;
const BROKEN: usize = 2;
const SILENT: usize = 3;
const SLOW: usize = 4;

impl Flaky {
    fn new(cache_control: &'static str) -> Self {
        let f = Flaky::default();
        *f.cache_control.lock().unwrap() = cache_control;
        f
    }

    fn service(
        &self,
    ) -> impl tower::Service<
        Request<()>,
        Response = Response<TestBody>,
        Error = std::io::Error,
        Future = impl Send + 'static,
    > + Clone
           + Send
           + 'static {
        let this = self.clone();
        tower::service_fn(move |_req: Request<()>| {
            let this = this.clone();
            async move {
                this.calls.fetch_add(1, Ordering::SeqCst);
                let cc = *this.cache_control.lock().unwrap();
                match this.mode.load(Ordering::SeqCst) {
                    UNAVAILABLE => {
                        let mut r = response(&[], "down");
                        *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        Ok(r)
                    }
                    BROKEN => Err(std::io::Error::other("connection refused")),
                    SILENT => std::future::pending().await,
                    SLOW => {
                        tokio::time::sleep(Duration::from_secs(3)).await;
                        Ok(response(&[("cache-control", cc)], "fresh"))
                    }
                    OK => Ok(response(
                        &[("cache-control", cc), ("etag", "\"e\"")],
                        "good",
                    )),
                    other => unreachable!("unknown mode {other}"),
                }
            }
        })
    }

    fn set(&self, mode: usize) {
        self.mode.store(mode, Ordering::SeqCst);
    }
}

async fn stale_after_failure(cache_control: &'static str, mode: usize) -> (Seen200, usize) {
    let flaky = Flaky::new(cache_control);
    let clock = ManualClock::new();
    let svc = layer_with(&clock)
        .origin_timeout(Duration::from_secs(5))
        .build()
        .unwrap()
        .layer(flaky.service());
    assert_eq!(send(&svc, get("/a", &[])).await.body, "good");
    // Stored and fresh until max-age (10 s in every caller); a no-cache response is stored
    // but never reused without revalidation (RFC 9111 §5.2.2.4), so it is not asked here.
    clock.advance(Duration::from_secs(9));
    if !cache_control.contains("no-cache") {
        let hit = send(&svc, get("/a", &[])).await;
        assert_eq!(
            (hit.x_cache(), hit.body.as_ref()),
            ("Hit from tower-cdn", &b"good"[..])
        );
    }
    clock.advance(Duration::from_secs(6));
    flaky.set(mode);
    let res = send(&svc, get("/a", &[])).await;
    (res, flaky.calls.load(Ordering::SeqCst))
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_serves_stale_on_503_errors_and_timeouts() {
    for mode in [UNAVAILABLE, BROKEN, SILENT] {
        let (res, calls) = stale_after_failure("max-age=10, stale-if-error=60", mode).await;
        assert_eq!(
            (res.status, res.body.as_ref()),
            (StatusCode::OK, &b"good"[..]),
            "mode {mode}"
        );
        assert!(res.header("cache-status").contains("stale-if-error"));
        assert_eq!(calls, 2);
    }
}

#[tokio::test(start_paused = true)]
async fn stale_if_error_is_forbidden_by_must_revalidate_and_no_cache() {
    let (res, _) = stale_after_failure(
        "max-age=10, stale-if-error=60, must-revalidate",
        UNAVAILABLE,
    )
    .await;
    assert_eq!(res.status, StatusCode::SERVICE_UNAVAILABLE);
    let (res, _) = stale_after_failure("no-cache, max-age=10, stale-if-error=60", BROKEN).await;
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.x_cache(), "Error from tower-cdn");
    let (res, _) = stale_after_failure("max-age=10, stale-if-error=2", UNAVAILABLE).await;
    assert_eq!(
        res.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "past the window"
    );
}

#[tokio::test(start_paused = true)]
async fn without_a_stored_object_errors_are_502_and_timeouts_504() {
    let flaky = Flaky::new("max-age=10");
    let svc = CdnLayer::builder()
        .origin_timeout(Duration::from_secs(5))
        .default_behavior(Behavior::new().allowed_methods(AllowedMethods::all()))
        .build()
        .unwrap()
        .layer(flaky.service());
    flaky.set(BROKEN);
    let res = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::BAD_GATEWAY, "Error from tower-cdn")
    );
    flaky.set(SILENT);
    let started = tokio::time::Instant::now();
    let res = send(&svc, get("/b", &[])).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::GATEWAY_TIMEOUT, "Error from tower-cdn")
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
    let res = send(&svc, request("POST", "/c", &[])).await;
    assert_eq!(
        res.status,
        StatusCode::GATEWAY_TIMEOUT,
        "passed requests have the same timeout"
    );
}

#[tokio::test(start_paused = true)]
async fn the_stale_if_error_budget_serves_stale_and_the_origin_still_refreshes() {
    let flaky = Flaky::new("max-age=10, stale-if-error=60");
    let clock = ManualClock::new();
    let svc = layer_with(&clock)
        .stale_if_error_budget(Duration::from_secs(1))
        .build()
        .unwrap()
        .layer(flaky.service());
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(9));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("Hit from tower-cdn", &b"good"[..])
    );
    clock.advance(Duration::from_secs(6));
    flaky.set(SLOW);
    let started = tokio::time::Instant::now();
    let res = send(&svc, get("/a", &[])).await;
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    assert_eq!(res.body, "good");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let res = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (res.body.as_ref(), res.x_cache()),
        (&b"fresh"[..], "Hit from tower-cdn")
    );
    assert_eq!(flaky.calls.load(Ordering::SeqCst), 2);
}

async fn calls_for(
    status: u16,
    cache_control: Option<&'static str>,
    builder: tower_cdn::CdnLayerBuilder,
    advance: u64,
) -> usize {
    let clock = ManualClock::new();
    let (origin, seen) = origin(move |_| {
        let mut r = response(&[], "err");
        if let Some(cc) = cache_control {
            r.headers_mut().insert("cache-control", cc.parse().unwrap());
        }
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    });
    let svc = builder.clock(clock.clone()).build().unwrap().layer(origin);
    send(&svc, get("/e", &[])).await;
    if advance > 0 {
        // Every caller that lets time pass expects the error stored until then: a Hit one
        // second before.
        clock.advance(Duration::from_secs(advance - 1));
        let before = send(&svc, get("/e", &[])).await;
        assert_eq!(
            (before.x_cache(), before.body.as_ref()),
            ("Hit from tower-cdn", &b"err"[..]),
            "{status} at {}",
            advance - 1
        );
        clock.advance(Duration::from_secs(1));
    }
    let second = send(&svc, get("/e", &[])).await;
    assert_eq!(second.status.as_u16(), status);
    let expected = if seen.calls() == 1 {
        "Hit from tower-cdn"
    } else {
        "Miss from tower-cdn"
    };
    assert_eq!(second.x_cache(), expected, "{status} at {advance}");
    seen.calls()
}

#[tokio::test]
async fn errors_are_cached_like_cloudfront_under_its_policy() {
    // CloudFront's error caching minimum TTL (10 s) comes with its managed policy, or from the
    // layer's setting; the default RFC 9111 policy stores no error without freshness (these
    // carry no Last-Modified, so no heuristic either).
    let optimized =
        || CdnLayer::builder().cache_policy(tower_cdn::CachePolicy::caching_optimized());
    let ten = Duration::from_secs(10);
    for status in [404, 414, 500, 501, 502, 503, 504] {
        assert_eq!(
            calls_for(status, None, optimized(), 9).await,
            1,
            "{status} cached 10 s"
        );
        assert_eq!(
            calls_for(status, None, optimized(), 10).await,
            2,
            "{status} expires after 10 s"
        );
        assert_eq!(
            calls_for(status, None, CdnLayer::builder(), 0).await,
            2,
            "{status} not cached by default"
        );
        let layer_wide = CdnLayer::builder().error_caching_min_ttl(ten);
        assert_eq!(calls_for(status, None, layer_wide, 9).await, 1, "{status}");
    }
    for status in [400, 403, 405, 412, 415] {
        assert_eq!(
            calls_for(status, None, optimized(), 0).await,
            2,
            "{status} not cached"
        );
        assert_eq!(
            calls_for(status, Some("max-age=60"), CdnLayer::builder(), 30).await,
            1,
            "{status} with max-age"
        );
    }
    let per_status = CdnLayer::builder().error_ttl(StatusCode::NOT_FOUND, Duration::from_secs(60));
    assert_eq!(calls_for(404, None, per_status, 30).await, 1);
    let off = optimized().error_caching_min_ttl(Duration::ZERO);
    assert_eq!(calls_for(503, None, off, 0).await, 2);
    let policy_off = CdnLayer::builder().cache_policy(
        tower_cdn::CachePolicy::caching_optimized().error_caching_min_ttl(Duration::ZERO),
    );
    assert_eq!(calls_for(503, None, policy_off, 0).await, 2);
    assert_eq!(
        calls_for(403, None, optimized(), 0).await,
        2,
        "no default TTL for errors"
    );
}

#[tokio::test]
async fn custom_error_responses_replace_the_origins_error() {
    let (origin, seen) = origin(|_| {
        let mut r = response(&[("content-type", "text/plain")], "origin 404");
        *r.status_mut() = StatusCode::NOT_FOUND;
        r
    });
    let svc = CdnLayer::builder()
        .custom_error_response(
            CustomErrorResponse::new(StatusCode::NOT_FOUND)
                .response_code(StatusCode::OK)
                .body("text/html", "<h1>gone fishing</h1>")
                .ttl(Duration::from_secs(300)),
        )
        .build()
        .unwrap()
        .layer(origin);
    for x_cache in ["Miss from tower-cdn", "Hit from tower-cdn"] {
        let res = send(&svc, get("/missing", &[])).await;
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "<h1>gone fishing</h1>");
        assert_eq!(res.header("content-type"), "text/html");
        assert_eq!(res.x_cache(), x_cache);
    }
    assert_eq!(seen.calls(), 1);
}
