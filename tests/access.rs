//! Rate limits, geo restriction and the origin concurrency cap, decided before the cache.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, StatusCode};
use support::*;
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};
use tower_cdn::{
    CdnLayer, ClientAddr, GeoDefault, GeoRestriction, HeaderResolver, OriginConcurrency, RateLimit,
};

fn from(ip: &str, path: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut req = get(path, headers);
    req.extensions_mut()
        .insert(ClientAddr(SocketAddr::new(ip.parse().unwrap(), 5000)));
    req
}

#[tokio::test(start_paused = true)]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    let (origin, _) = origin(|_| response(&[("cache-control", "max-age=60")], "x"));
    let limit = RateLimit::per_second(2).burst(3).build().unwrap();
    let svc = CdnLayer::builder()
        .rate_limit(limit)
        .build()
        .unwrap()
        .layer(origin);
    for _ in 0..3 {
        assert_eq!(
            send(&svc, from("192.0.2.1", "/a", &[])).await.status,
            StatusCode::OK
        );
    }
    let limited = send(&svc, from("192.0.2.1", "/a", &[])).await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(limited.header("retry-after"), "1");
    assert_eq!(limited.x_cache(), "Error from tower-cdn");
    assert_eq!(
        send(&svc, from("192.0.2.2", "/a", &[])).await.status,
        StatusCode::OK,
        "other clients unaffected"
    );
    tokio::time::advance(Duration::from_millis(500)).await;
    assert_eq!(
        send(&svc, from("192.0.2.1", "/a", &[])).await.status,
        StatusCode::OK,
        "recovers with time"
    );
}

#[tokio::test]
async fn geo_restriction_by_a_trusted_header() {
    let (geo_origin, seen) = origin(|req| {
        let country = req
            .headers()
            .get("cloudfront-viewer-country")
            .map(|v| v.to_str().unwrap().to_owned());
        response(
            &[("cache-control", "max-age=60")],
            country.unwrap_or_else(|| "none".into()),
        )
    });
    let restriction = GeoRestriction::block(["FR"])
        .unknown(GeoDefault::Deny)
        .build()
        .unwrap();
    let resolver = || HeaderResolver::new("x-lb-country").unwrap();
    let svc = CdnLayer::builder()
        .geo_restriction(restriction, resolver())
        .forward_viewer_country(resolver())
        .build()
        .unwrap()
        .layer(geo_origin);
    let us = send(
        &svc,
        get(
            "/us",
            &[("x-lb-country", "us"), ("cloudfront-viewer-country", "FR")],
        ),
    )
    .await;
    assert_eq!(
        (us.status, us.body.as_ref()),
        (StatusCode::OK, &b"US"[..]),
        "the viewer's own header is replaced"
    );
    let fr = send(&svc, get("/fr", &[("x-lb-country", "FR")])).await;
    assert_eq!(
        (fr.status, fr.x_cache()),
        (StatusCode::FORBIDDEN, "Error from tower-cdn")
    );
    assert_eq!(
        send(&svc, get("/unknown", &[])).await.status,
        StatusCode::FORBIDDEN,
        "unknown follows the default"
    );
    assert_eq!(seen.calls(), 1, "denied viewers never reach the origin");
    let allow = GeoRestriction::allow(["US"]).build().unwrap();
    assert!(
        GeoRestriction::allow(["UK"]).build().is_err(),
        "GB is the code"
    );
    let (origin, _) = origin(|_| response(&[("cache-control", "max-age=60")], "x"));
    let svc = CdnLayer::builder()
        .geo_restriction(allow, resolver())
        .build()
        .unwrap()
        .layer(origin);
    assert_eq!(
        send(&svc, get("/", &[("x-lb-country", "DE")])).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        send(&svc, get("/", &[])).await.status,
        StatusCode::OK,
        "unknown allowed by default"
    );
}

#[tokio::test(start_paused = true)]
async fn the_origin_cap_holds_under_200_misses_while_hits_flow() {
    let release = Arc::new(Notify::new());
    let (in_flight, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (r, i, p) = (release.clone(), in_flight.clone(), peak.clone());
    let (origin, seen) = async_origin(move |req| {
        let (r, i, p) = (r.clone(), i.clone(), p.clone());
        async move {
            if req.uri().path() != "/warm" {
                let now = i.fetch_add(1, Ordering::SeqCst) + 1;
                p.fetch_max(now, Ordering::SeqCst);
                r.notified().await;
                i.fetch_sub(1, Ordering::SeqCst);
            }
            response(&[("cache-control", "max-age=600")], "x")
        }
    });
    let cap = OriginConcurrency::builder(4)
        .queue_timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let svc = CdnLayer::builder()
        .origin_concurrency(cap)
        .build()
        .unwrap()
        .layer(origin);
    send(&svc, get("/warm", &[])).await;
    let misses: Vec<_> = (0..200)
        .map(|i| tokio::spawn(svc.clone().oneshot(get(&format!("/cold/{i}"), &[]))))
        .collect();
    eventually("5 origin requests", || seen.calls() >= 5).await;
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
    let hit = send(&svc, get("/warm", &[])).await;
    assert_eq!(
        hit.x_cache(),
        "Hit from tower-cdn",
        "hits are not held back"
    );
    eventually("every miss answered", || {
        release.notify_waiters();
        misses.iter().all(|m| m.is_finished())
    })
    .await;
    for m in misses {
        assert_eq!(m.await.unwrap().unwrap().status(), StatusCode::OK);
    }
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}

#[tokio::test(start_paused = true)]
async fn misses_over_the_cap_past_the_queue_timeout_get_503() {
    let (origin, _) = async_origin(|_| async {
        std::future::pending::<()>().await;
        response(&[], "")
    });
    let cap = OriginConcurrency::builder(1)
        .queue_timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let svc = CdnLayer::builder()
        .origin_concurrency(cap)
        .build()
        .unwrap()
        .layer(origin);
    let _held = tokio::spawn(svc.clone().oneshot(get("/a", &[])));
    tokio::task::yield_now().await;
    let res = send(&svc, get("/b", &[])).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::SERVICE_UNAVAILABLE, "Error from tower-cdn")
    );
}
