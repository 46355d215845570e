//! Invalidation by path, pattern and tag; soft purge; purge racing a fill; metrics.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use support::*;
use tokio::sync::Notify;
use tower::{Layer, ServiceExt};
use tower_cdn::{AllowedMethods, Behavior, CdnLayer, ManualClock, Purge};

fn tagged_origin() -> (Origin, Seen) {
    origin(|req| {
        let path = req.uri().path().to_owned();
        let tags = if path.starts_with("/products/") {
            "product catalog"
        } else {
            "page"
        };
        response(
            &[
                ("cache-control", "max-age=600"),
                ("surrogate-key", tags),
                ("cache-tag", "all, site"),
            ],
            path,
        )
    })
}

async fn warm(svc: &tower_cdn::CdnService<Origin>, paths: &[&str]) {
    for p in paths {
        send(svc, get(p, &[])).await;
    }
}

async fn cached(svc: &tower_cdn::CdnService<Origin>, path: &str) -> bool {
    send(svc, get(path, &[])).await.x_cache() == "Hit from tower-cdn"
}

/// Asserts `path` is a Hit carrying its stored body (the tagged origin's body is the path).
async fn assert_hit(svc: &tower_cdn::CdnService<Origin>, path: &str) {
    let res = send(svc, get(path, &[])).await;
    assert_eq!(
        (res.x_cache(), res.body.as_ref()),
        (
            "Hit from tower-cdn",
            path.split('?').next().unwrap().as_bytes()
        ),
        "{path}"
    );
}

const PATHS: [&str; 5] = [
    "/index.html",
    "/images/a.jpg",
    "/images/b/c.png",
    "/products/1",
    "/products/2",
];

#[tokio::test]
async fn purge_by_exact_path_takes_every_query_and_host() {
    let (origin, _) = tagged_origin();
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    warm(&svc, &["/index.html", "/index.html?v=2", "/images/a.jpg"]).await;
    for p in ["/index.html", "/index.html?v=2", "/images/a.jpg"] {
        assert_hit(&svc, p).await;
    }
    assert_eq!(layer.purge(&Purge::path("/index.html")), 2);
    assert!(!cached(&svc, "/index.html").await);
    assert!(!cached(&svc, "/index.html?v=2").await);
    assert!(cached(&svc, "/images/a.jpg").await);
}

#[tokio::test]
async fn purge_by_pattern_follows_cloudfront_wildcards() {
    for (pattern, purged) in [
        ("/images/*", vec!["/images/a.jpg", "/images/b/c.png"]),
        ("*.jpg", vec!["/images/a.jpg"]),
        ("/products/?", vec!["/products/1", "/products/2"]),
        ("/*", PATHS.to_vec()),
    ] {
        let (origin, _) = tagged_origin();
        let layer = CdnLayer::new();
        let svc = layer.clone().layer(origin);
        warm(&svc, &PATHS).await;
        for p in PATHS {
            assert_hit(&svc, p).await;
        }
        assert_eq!(
            layer.purge(&Purge::pattern(pattern).unwrap()),
            purged.len(),
            "{pattern}"
        );
        for p in PATHS {
            assert_eq!(cached(&svc, p).await, !purged.contains(&p), "{pattern} {p}");
        }
    }
    assert!(Purge::pattern("").is_err());
}

#[tokio::test]
async fn purge_by_tag_takes_every_tagged_object_variant_and_coding() {
    let body = "tagged text ".repeat(200);
    let (origin, seen) = origin(move |req| {
        let lang = req.headers().get("accept-language").cloned();
        let mut r = response(
            &[
                ("cache-control", "max-age=600"),
                ("content-type", "text/plain"),
                ("vary", "accept-language"),
                ("surrogate-key", "product-42"),
            ],
            body.clone(),
        );
        if let Some(l) = lang {
            r.headers_mut().insert("content-language", l);
        }
        r
    });
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    for lang in ["en", "fr"] {
        send(&svc, get("/p/42", &[("accept-language", lang)])).await;
        send(
            &svc,
            get(
                "/p/42",
                &[("accept-language", lang), ("accept-encoding", "br")],
            ),
        )
        .await;
    }
    let hit = send(
        &svc,
        get(
            "/p/42",
            &[("accept-language", "en"), ("accept-encoding", "br")],
        ),
    )
    .await;
    assert_eq!(hit.x_cache(), "Hit from tower-cdn");
    assert!(
        !hit.headers.contains_key("surrogate-key"),
        "tags never reach viewers"
    );
    for lang in ["en", "fr"] {
        for coding in ["br", "identity"] {
            let res = send(
                &svc,
                get(
                    "/p/42",
                    &[("accept-language", lang), ("accept-encoding", coding)],
                ),
            )
            .await;
            assert_eq!(res.x_cache(), "Hit from tower-cdn", "{lang} {coding}");
            assert_eq!(res.header("content-language"), lang);
        }
    }
    let calls = seen.calls();
    assert_eq!(layer.purge(&Purge::tag("product-42")), 2, "both variants");
    for lang in ["en", "fr"] {
        let res = send(
            &svc,
            get(
                "/p/42",
                &[("accept-language", lang), ("accept-encoding", "br")],
            ),
        )
        .await;
        assert_eq!(res.x_cache(), "Miss from tower-cdn");
        assert_eq!(res.header("content-language"), lang);
    }
    assert_eq!(seen.calls(), calls + 2);
    // The identity representation went with the br coding.
    for lang in ["en", "fr"] {
        let res = send(&svc, get("/p/42", &[("accept-language", lang)])).await;
        assert_eq!(res.x_cache(), "Hit from tower-cdn", "refilled by the miss");
    }
    assert_eq!(seen.calls(), calls + 2);
}

#[tokio::test]
async fn tags_from_both_fields_select_objects() {
    let (origin, _) = tagged_origin();
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    warm(&svc, &PATHS).await;
    for p in PATHS {
        assert_hit(&svc, p).await;
    }
    // A tag no object carries takes nothing, with every object stored.
    assert_eq!(layer.purge(&Purge::tag("nothing")), 0);
    assert_eq!(
        layer.purge(&Purge::tag("catalog")),
        2,
        "Surrogate-Key, space-separated"
    );
    // The untagged-by-catalog objects are still stored (asked without refilling the others).
    for p in &PATHS[..3] {
        assert_hit(&svc, p).await;
    }
    assert_eq!(
        layer.purge(&Purge::tag("site")),
        3,
        "Cache-Tag, comma-separated"
    );
    assert_eq!(layer.purge(&Purge::tag("nothing")), 0);
    for p in PATHS {
        assert!(!cached(&svc, p).await, "{p}");
    }
}

#[tokio::test]
async fn soft_purge_keeps_objects_for_stale_while_revalidate() {
    let (origin, seen) = origin(|_| {
        response(
            &[("cache-control", "max-age=600, stale-while-revalidate=60")],
            "v",
        )
    });
    let clock = ManualClock::new();
    let layer = CdnLayer::builder().clock(clock.clone()).build().unwrap();
    let svc = layer.clone().layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(300));
    let fresh = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (fresh.x_cache(), fresh.body.as_ref()),
        ("Hit from tower-cdn", &b"v"[..])
    );
    assert!(!fresh.header("cache-status").contains("stale"));
    assert_eq!(layer.purge(&Purge::path("/a").soft()), 1);
    let stale = send(&svc, get("/a", &[])).await;
    assert_eq!(stale.x_cache(), "Hit from tower-cdn");
    assert!(
        stale
            .header("cache-status")
            .contains("stale-while-revalidate"),
        "{}",
        stale.header("cache-status")
    );
    eventually("the background refresh", || seen.calls() == 2).await;
    assert_eq!(seen.calls(), 2, "refreshed in the background");
    // The refreshed object is fresh again.
    let after = send(&svc, get("/a", &[])).await;
    assert_eq!(after.x_cache(), "Hit from tower-cdn");
    assert!(
        !after.header("cache-status").contains("stale"),
        "{}",
        after.header("cache-status")
    );
    assert_eq!(seen.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_purge_racing_a_slow_fill_never_lets_the_old_body_survive() {
    let release = Arc::new(Notify::new());
    let version = Arc::new(std::sync::atomic::AtomicUsize::new(1));
    let (r, v) = (release.clone(), version.clone());
    let (origin, seen) = async_origin(move |_| {
        let (r, v) = (r.clone(), v.clone());
        async move {
            let n = v.load(std::sync::atomic::Ordering::SeqCst);
            if n == 1 {
                r.notified().await;
            }
            response(&[("cache-control", "max-age=600")], format!("v{n}"))
        }
    });
    // Followers wait up to a minute for a fill: a request that joined the old fill would
    // still be waiting when the 5 s bound below runs out (the clock is paused and advances
    // only while every task waits).
    let layer = CdnLayer::builder()
        .collapse_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let svc = layer.clone().layer(origin);
    let slow = tokio::spawn(svc.clone().oneshot(get("/a", &[])));
    eventually("the origin request", || seen.calls() > 0).await;
    version.store(2, std::sync::atomic::Ordering::SeqCst);
    layer.purge(&Purge::path("/a"));
    // After the purge returns, a new request does not join the old fill.
    let after = tokio::time::timeout(Duration::from_secs(5), send(&svc, get("/a", &[])))
        .await
        .expect("the request after the purge joined the fill from before it");
    assert_eq!(after.body, "v2");
    assert!(!after.header("cache-status").contains("collapsed"));
    release.notify_waiters();
    let old = slow.await.unwrap().unwrap();
    let old = http_body_util::BodyExt::collect(old.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(
        old,
        Bytes::from_static(b"v1"),
        "the request from before the purge gets its answer"
    );
    for _ in 0..3 {
        assert_eq!(
            send(&svc, get("/a", &[])).await.body,
            "v2",
            "the old fill was not stored"
        );
    }
}

#[tokio::test]
async fn evicted_tagged_objects_leave_nothing_behind() {
    let (origin, _) = origin(|req| {
        response(
            &[("cache-control", "max-age=600"), ("surrogate-key", "bulk")],
            format!("{:0>2000}", req.uri().path()),
        )
    });
    let layer = CdnLayer::builder()
        .capacity(400_000)
        .max_object_size(50_000)
        .build()
        .unwrap();
    let svc = layer.clone().layer(origin);
    for i in 0..2_000 {
        send(&svc, get(&format!("/o/{i}"), &[])).await;
    }
    let m = layer.metrics();
    assert!(m.evictions > 1_000, "evictions: {}", m.evictions);
    let held = m.store_entries as usize;
    assert_eq!(
        layer.purge(&Purge::tag("bulk")),
        held,
        "a tag purge finds exactly what is stored"
    );
    assert_eq!(layer.purge(&Purge::tag("bulk")), 0);
    assert_eq!(layer.metrics().store_entries, 0);
}

#[tokio::test]
async fn metrics_match_a_scripted_sequence() {
    let (origin, _) = origin(|req| match req.uri().path() {
        "/private" => response(&[("cache-control", "private")], "p"),
        _ => response(&[("cache-control", "max-age=60")], "0123456789"),
    });
    let layer = CdnLayer::builder()
        .default_behavior(Behavior::new().allowed_methods(AllowedMethods::all()))
        .build()
        .unwrap();
    let svc = layer.clone().layer(origin);
    send(&svc, get("/a", &[])).await; // miss
    send(&svc, get("/a", &[])).await; // hit
    send(&svc, get("/a", &[])).await; // hit
    send(&svc, get("/private", &[])).await; // miss, not stored
    send(&svc, get("/private", &[])).await; // pass (hit-for-pass)
    send(&svc, request("POST", "/a", &[])).await; // pass
    send(&svc, get("/b", &[("cache-control", "only-if-cached")])).await; // error
    layer.purge(&Purge::path("/b"));
    let m = layer.metrics();
    assert_eq!((m.hits, m.misses, m.passes, m.errors), (2, 2, 2, 1));
    assert_eq!(m.origin_requests, 4);
    assert_eq!(m.bytes_from_cache, 20);
    assert_eq!(m.purges, 1);
    assert!((m.hit_ratio() - 2.0 / 6.0).abs() < 1e-9);
    let text = m.to_prometheus();
    assert!(
        text.contains("tower_cdn_requests_total{result=\"Hit\"} 2\n"),
        "{text}"
    );
    assert!(text.contains("tower_cdn_origin_requests_total 4\n"));
}
