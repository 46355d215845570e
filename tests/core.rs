//! The core cache: RFC 9111 storage and reuse rules, seen through the layer.

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tower::Layer;
use tower_cdn::{AllowedMethods, CdnLayer};

const CACHEABLE: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("etag", "\"v1\"")];

/// An origin answering every request with `headers` and the body `v1`, `v2`, ... (one more
/// per call), so a response shows which trip to the origin it came from.
fn versioned(headers: &'static [(&'static str, &'static str)]) -> (Origin, Seen) {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    origin(move |_| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        response(headers, format!("v{n}"))
    })
}

/// Asserts a stored response was served: `Hit` and the body stored.
fn assert_hit(res: &Seen200, body: &str) {
    assert_eq!(
        (res.x_cache(), res.body.as_ref()),
        ("Hit from tower-cdn", body.as_bytes())
    );
}

/// Asserts the origin answered: `Miss` and the body of that trip.
fn assert_miss(res: &Seen200, body: &str) {
    assert_eq!(
        (res.x_cache(), res.body.as_ref()),
        ("Miss from tower-cdn", body.as_bytes())
    );
}

#[tokio::test]
async fn fresh_hit_does_not_reach_the_origin() {
    let (origin, seen) = origin(|_| response(CACHEABLE, "hello"));
    let (layer, _) = layer();
    let svc = layer.layer(origin);

    let first = send(&svc, get("/a", &[])).await;
    assert_eq!(first.x_cache(), "Miss from tower-cdn");
    assert_eq!(first.body, "hello");
    let second = send(&svc, get("/a", &[])).await;
    assert_eq!(second.x_cache(), "Hit from tower-cdn");
    assert_eq!(second.body, "hello");
    assert_eq!(second.header("cache-status"), "tower-cdn; hit; ttl=60");
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn stale_object_goes_back_to_the_origin() {
    let (origin, seen) = versioned(&[("cache-control", "max-age=60")]);
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(59));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(hit.x_cache(), "Hit from tower-cdn");
    assert_eq!(hit.body, "v1");
    clock.advance(Duration::from_secs(1));
    // RFC 9111 §4.2: fresh only while freshness_lifetime > current_age.
    let miss = send(&svc, get("/a", &[])).await;
    assert_eq!(miss.x_cache(), "Miss from tower-cdn");
    assert_eq!(miss.body, "v2");
    assert_eq!(seen.calls(), 2);
    // The new response is stored in its place.
    assert_hit(&send(&svc, get("/a", &[])).await, "v2");
}

#[tokio::test]
async fn age_grows_with_the_clock_and_counts_the_origin_age() {
    // RFC 9111 §4.2.3, §5.1
    let (origin, _) = origin(|_| response(&[("cache-control", "max-age=600"), ("age", "5")], "x"));
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    let miss = send(&svc, get("/a", &[])).await;
    assert_eq!(miss.header("age"), "5");
    clock.advance(Duration::from_secs(10));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(hit.header("age"), "15");
    assert_eq!(hit.header("cache-status"), "tower-cdn; hit; ttl=585");
}

#[tokio::test]
async fn origin_age_past_max_age_makes_it_stale_at_once() {
    let (origin, seen) = origin(|req| {
        // RFC 9111 §4.2.3: an Age one second short of max-age leaves one second of freshness.
        let age = if req.uri().path() == "/young" {
            "59"
        } else {
            "60"
        };
        response(&[("cache-control", "max-age=60"), ("age", age)], "x")
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    assert_miss(&send(&svc, get("/a", &[])).await, "x");
    assert_miss(&send(&svc, get("/a", &[])).await, "x");
    assert_eq!(seen.calls(), 2);
    send(&svc, get("/young", &[])).await;
    assert_hit(&send(&svc, get("/young", &[])).await, "x");
    assert_eq!(seen.calls(), 3);
}

async fn calls_for_two_gets(
    headers: &'static [(&'static str, &'static str)],
    req: &[(&str, &str)],
) -> usize {
    let (origin, seen) = versioned(headers);
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", req)).await;
    let second = send(&svc, get("/a", req)).await;
    // What the second viewer got says whether the first response was stored.
    match seen.calls() {
        1 => assert_hit(&second, "v1"),
        _ => assert_miss(&second, "v2"),
    }
    seen.calls()
}

#[tokio::test]
async fn storage_rules_of_a_shared_cache() {
    // RFC 9111 §3, §5.2.2
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "no-store, max-age=60")], &[]).await,
        2
    );
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "private, max-age=60")], &[]).await,
        2
    );
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "public, max-age=60")], &[]).await,
        1
    );
    assert_eq!(
        calls_for_two_gets(&[], &[]).await,
        2,
        "no freshness, no heuristic: not stored"
    );
    assert_eq!(
        calls_for_two_gets(
            &[("cache-control", "max-age=60, must-understand, no-store")],
            &[]
        )
        .await,
        1
    );
}

#[tokio::test]
async fn authorization_needs_explicit_permission() {
    // RFC 9111 §3.5
    let auth = &[("authorization", "Bearer t")];
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "max-age=60")], auth).await,
        2
    );
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "public, max-age=60")], auth).await,
        1
    );
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "s-maxage=60")], auth).await,
        1
    );
    assert_eq!(
        calls_for_two_gets(&[("cache-control", "max-age=60, must-revalidate")], auth).await,
        1
    );
}

#[tokio::test]
async fn s_maxage_overrides_max_age() {
    let (origin, seen) = versioned(&[("cache-control", "max-age=600, s-maxage=10")]);
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(9));
    assert_hit(&send(&svc, get("/a", &[])).await, "v1");
    clock.advance(Duration::from_secs(2));
    assert_miss(&send(&svc, get("/a", &[])).await, "v2");
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn expires_counts_from_date_and_invalid_expires_is_stale() {
    let (origin, seen) = origin(|req| {
        if req.uri().path() == "/good" {
            response(
                &[
                    ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
                    ("expires", "Thu, 01 Jan 2026 00:01:40 GMT"),
                ],
                "x",
            )
        } else {
            response(&[("expires", "0")], "x")
        }
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/good", &[])).await;
    clock.advance(Duration::from_secs(99));
    assert_eq!(
        send(&svc, get("/good", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    assert_eq!(seen.calls(), 1);
    // Expires - Date = 100 s (RFC 9111 §4.2.1): stale at 100.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        send(&svc, get("/good", &[])).await.x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 2);
    // RFC 9111 §5.3: an invalid Expires means already expired.
    assert_miss(&send(&svc, get("/bad", &[])).await, "x");
    assert_miss(&send(&svc, get("/bad", &[])).await, "x");
    assert_eq!(seen.calls(), 4);
}

#[tokio::test]
async fn heuristic_freshness_only_for_heuristically_cacheable_statuses() {
    // RFC 9111 §4.2.2: 10% of the 1000 s since Last-Modified.
    let (origin, seen) = origin(|req| {
        let status = if req.uri().path() == "/302" { 302 } else { 200 };
        let mut r = response(
            &[
                ("date", "Thu, 01 Jan 2026 00:00:00 GMT"),
                ("last-modified", "Wed, 31 Dec 2025 23:43:20 GMT"),
            ],
            "x",
        );
        *r.status_mut() = StatusCode::from_u16(status).unwrap();
        r
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/200", &[])).await;
    clock.advance(Duration::from_secs(99));
    assert_eq!(
        send(&svc, get("/200", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    send(&svc, get("/302", &[])).await;
    assert_eq!(
        send(&svc, get("/302", &[])).await.x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 3);
    // The heuristic lifetime ends at 100 s.
    clock.advance(Duration::from_secs(1));
    assert_eq!(
        send(&svc, get("/200", &[])).await.x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 4);
}

#[tokio::test]
async fn no_cache_response_is_revalidated_every_time() {
    // RFC 9111 §5.2.2.4: stored, but never reused without validation.
    let (origin, seen) = origin(|_| {
        response(
            &[("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")],
            "x",
        )
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    let second = send(&svc, get("/a", &[])).await;
    assert_ne!(second.x_cache(), "Hit from tower-cdn");
    assert_eq!(seen.calls(), 2);
    assert_eq!(seen.last_headers()["if-none-match"], "\"a\"");
}

#[tokio::test]
async fn request_directives() {
    // RFC 9111 §5.2.1
    let (origin, seen) = origin(|_| response(&[("cache-control", "max-age=100")], "x"));
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(50));
    assert_hit(&send(&svc, get("/a", &[])).await, "x");

    assert_ne!(
        send(&svc, get("/a", &[("cache-control", "no-cache")]))
            .await
            .x_cache(),
        "Hit from tower-cdn"
    );
    assert_eq!(seen.calls(), 2, "no-cache goes to the origin");
    clock.advance(Duration::from_secs(50));
    assert_eq!(
        send(&svc, get("/a", &[("cache-control", "max-age=49")]))
            .await
            .x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 3, "older than the request's max-age");
    assert_eq!(
        send(&svc, get("/a", &[("cache-control", "min-fresh=101")]))
            .await
            .x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 4, "not fresh enough for min-fresh");
    assert_eq!(
        send(&svc, get("/a", &[("pragma", "no-cache")]))
            .await
            .x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 5, "Pragma: no-cache without Cache-Control");
    assert_eq!(
        send(
            &svc,
            get(
                "/a",
                &[("pragma", "no-cache"), ("cache-control", "max-stale")]
            )
        )
        .await
        .x_cache(),
        "Hit from tower-cdn"
    );
    assert_eq!(seen.calls(), 5);
}

#[tokio::test]
async fn max_stale_serves_stale_unless_the_response_forbids_it() {
    let (origin, seen) = origin(|req| {
        let cc = if req.uri().path() == "/strict" {
            "max-age=10, must-revalidate"
        } else {
            "max-age=10"
        };
        response(&[("cache-control", cc)], "x")
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/lax", &[])).await;
    send(&svc, get("/strict", &[])).await;
    assert_hit(&send(&svc, get("/strict", &[])).await, "x");
    assert_hit(&send(&svc, get("/lax", &[])).await, "x");
    clock.advance(Duration::from_secs(15));
    let lax = send(&svc, get("/lax", &[("cache-control", "max-stale=10")])).await;
    assert_eq!(lax.x_cache(), "Hit from tower-cdn");
    let strict = send(&svc, get("/strict", &[("cache-control", "max-stale")])).await;
    assert_eq!(
        strict.x_cache(),
        "Miss from tower-cdn",
        "must-revalidate forbids stale (§4.2.4)"
    );
    let too_stale = send(&svc, get("/lax", &[("cache-control", "max-stale=4")])).await;
    assert_eq!(too_stale.x_cache(), "Miss from tower-cdn");
    assert_eq!(seen.calls(), 4);
}

#[tokio::test]
async fn request_no_store_is_not_stored() {
    let (origin, seen) = versioned(&[("cache-control", "max-age=100")]);
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[("cache-control", "no-store")])).await;
    assert_miss(&send(&svc, get("/a", &[])).await, "v2");
    assert_eq!(seen.calls(), 2);
    // Without no-store the response is stored.
    assert_hit(&send(&svc, get("/a", &[])).await, "v2");
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn only_if_cached_answers_504_without_a_stored_object() {
    // RFC 9111 §5.2.1.7
    let (origin, seen) = origin(|_| response(&[("cache-control", "max-age=100")], "x"));
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    let res = send(&svc, get("/a", &[("cache-control", "only-if-cached")])).await;
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.x_cache(), "Error from tower-cdn");
    assert_eq!(seen.calls(), 0);
    send(&svc, get("/a", &[])).await;
    let res = send(&svc, get("/a", &[("cache-control", "only-if-cached")])).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_hit(&res, "x");
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn unknown_and_malformed_directives_do_not_break_caching() {
    let (origin, seen) = origin(|_| {
        response(
            &[("cache-control", "foo, , Max-Age=60;;, bar=\"no-store\"")],
            "x",
        )
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[("cache-control", "zzz=\"a,b\", ,,")])).await;
    assert_hit(&send(&svc, get("/a", &[])).await, "x");
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn vary_keeps_one_object_per_variant() {
    // RFC 9111 §4.1
    let (origin, seen) = origin(|req| {
        let lang = req
            .headers()
            .get("accept-language")
            .map(|v| v.to_str().unwrap().to_owned());
        response(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            lang.unwrap_or_default(),
        )
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    assert_eq!(
        send(&svc, get("/a", &[("accept-language", "en")]))
            .await
            .body,
        "en"
    );
    assert_eq!(
        send(&svc, get("/a", &[("accept-language", "fr")]))
            .await
            .body,
        "fr"
    );
    let en = send(&svc, get("/a", &[("accept-language", "EN")])).await;
    assert_eq!(
        (en.body.as_ref(), en.x_cache()),
        (&b"en"[..], "Hit from tower-cdn")
    );
    let fr = send(&svc, get("/a", &[("accept-language", "fr")])).await;
    assert_eq!(
        (fr.body.as_ref(), fr.x_cache()),
        (&b"fr"[..], "Hit from tower-cdn")
    );
    assert_eq!(
        send(&svc, get("/a", &[])).await.x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 3);
}

#[tokio::test]
async fn vary_star_is_never_served_from_cache() {
    let (origin, seen) = origin(|req| {
        let vary = match req.uri().path() {
            "/list" => "accept, *",
            "/named" => "accept",
            _ => "*",
        };
        response(&[("cache-control", "max-age=60"), ("vary", vary)], "x")
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    for path in ["/star", "/star", "/list", "/list"] {
        assert_eq!(
            send(&svc, get(path, &[])).await.x_cache(),
            "Miss from tower-cdn"
        );
    }
    assert_eq!(seen.calls(), 4);
    // The same response naming a field instead of `*` is stored and reused.
    send(&svc, get("/named", &[])).await;
    assert_hit(&send(&svc, get("/named", &[])).await, "x");
    assert_eq!(seen.calls(), 5);
}

#[tokio::test]
async fn head_is_answered_from_a_stored_get() {
    let (origin, seen) = origin(|_| {
        response(
            &[("cache-control", "max-age=60"), ("content-length", "5")],
            "hello",
        )
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    let head = send(&svc, request("HEAD", "/a", &[])).await;
    assert_eq!(head.x_cache(), "Hit from tower-cdn");
    assert_eq!(head.header("content-length"), "5");
    assert!(head.body.is_empty());
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn unsafe_methods_invalidate_the_target_uri() {
    // RFC 9111 §4.4, including a method the cache does not know.
    for method in ["POST", "PUT", "DELETE", "FROB"] {
        let (origin, seen) = versioned(&[("cache-control", "max-age=60")]);
        let (layer, _) = layer_allowing(AllowedMethods::any());
        let svc = layer.layer(origin);
        send(&svc, get("/a", &[])).await;
        assert_hit(&send(&svc, get("/a", &[])).await, "v1");
        send(&svc, request(method, "/a", &[])).await;
        assert_eq!(seen.last_method().as_str(), method);
        let after = send(&svc, get("/a", &[])).await;
        assert_eq!(after.x_cache(), "Miss from tower-cdn", "{method}");
        assert_eq!(after.body, "v3", "{method}");
        assert_eq!(seen.calls(), 3);
    }
}

#[tokio::test]
async fn unsafe_method_invalidates_same_origin_location_and_content_location() {
    let (origin, seen) = origin(|req| match req.method().as_str() {
        "POST" => response(
            &[
                ("location", "/b"),
                ("content-location", "http://example.com/c"),
                ("content-location", "http://other.example/d"),
            ],
            "",
        ),
        _ => response(&[("cache-control", "max-age=60")], "x"),
    });
    let (layer, _) = layer_allowing(AllowedMethods::all());
    let svc = layer.layer(origin);
    for p in ["/a", "/b", "/c", "/d"] {
        send(&svc, get(p, &[])).await;
    }
    for p in ["/a", "/b", "/c", "/d"] {
        assert_hit(&send(&svc, get(p, &[])).await, "x");
    }
    send(&svc, request("POST", "/a", &[])).await;
    assert_eq!(seen.calls(), 5);
    for p in ["/a", "/b", "/c"] {
        assert_eq!(
            send(&svc, get(p, &[])).await.x_cache(),
            "Miss from tower-cdn",
            "{p}"
        );
    }
    assert_eq!(
        send(&svc, get("/d", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
}

#[tokio::test]
async fn failed_unsafe_request_does_not_invalidate() {
    // RFC 9111 §4.4: only a non-error status (2xx, 3xx) invalidates; a client error is an
    // error as much as a server error.
    for status in [400, 403, 404, 409, 500, 503] {
        let (origin, seen) = origin(move |req| {
            let mut r = response(&[("cache-control", "max-age=60")], "x");
            if req.method() == "POST" {
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
            }
            r
        });
        let (layer, _) = layer_allowing(AllowedMethods::all());
        let svc = layer.layer(origin);
        send(&svc, get("/a", &[])).await;
        let post = send(&svc, request("POST", "/a", &[])).await;
        assert_eq!(post.status.as_u16(), status);
        assert_eq!(
            send(&svc, get("/a", &[])).await.x_cache(),
            "Hit from tower-cdn",
            "a POST answered {status} invalidated the stored GET"
        );
        assert_eq!(seen.calls(), 2, "{status}");
    }
}

#[tokio::test]
async fn fields_named_by_qualified_private_and_no_cache_are_not_shared() {
    // RFC 9111 §5.2.2.7 (private="…") and §5.2.2.4 (no-cache="…"): the response is stored
    // and reused, without the fields named, which were meant for the first viewer only.
    let (origin, seen) = origin(|_| {
        response(
            &[
                (
                    "cache-control",
                    "max-age=60, private=\"X-User\", no-cache=\"x-token, x-other\"",
                ),
                ("x-user", "alice"),
                ("x-token", "t-1"),
                ("x-other", "o"),
                ("x-kept", "k"),
            ],
            "page",
        )
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(hit.x_cache(), "Hit from tower-cdn");
    assert_eq!(hit.body, "page");
    for name in ["x-user", "x-token", "x-other"] {
        assert!(
            !hit.headers.contains_key(name),
            "{name} reached another viewer"
        );
    }
    assert_eq!(hit.header("x-kept"), "k");
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn hop_by_hop_fields_are_not_replayed() {
    let (origin, _) = origin(|_| {
        response(
            &[
                ("cache-control", "max-age=60"),
                ("connection", "x-private-hop"),
                ("x-private-hop", "1"),
                ("keep-alive", "timeout=5"),
                ("x-end-to-end", "kept"),
            ],
            "x",
        )
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(hit.x_cache(), "Hit from tower-cdn");
    for name in ["connection", "x-private-hop", "keep-alive"] {
        assert!(!hit.headers.contains_key(name), "{name} replayed");
    }
    assert_eq!(hit.header("x-end-to-end"), "kept");
}

#[tokio::test]
async fn stored_date_is_not_rewritten() {
    let date = "Thu, 01 Jan 2026 00:00:00 GMT";
    let (origin, _) =
        origin(move |_| response(&[("cache-control", "max-age=600"), ("date", date)], "x"));
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(30));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(hit.header("date"), date);
    assert_hit(&hit, "x");
}

#[tokio::test]
async fn origin_body_failing_halfway_is_not_stored() {
    let (origin, seen) = origin(|req| {
        if req.uri().query() == Some("ok") {
            return response(&[("cache-control", "max-age=60")], "whole");
        }
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tx.try_send(Ok(bytes::Bytes::from_static(b"half"))).unwrap();
        tx.try_send(Err(std::io::Error::other("origin reset")))
            .unwrap();
        let mut r = http::Response::new(TestBody::Channel(rx));
        r.headers_mut()
            .insert("cache-control", "max-age=60".parse().unwrap());
        r
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    let res = tower::ServiceExt::oneshot(svc.clone(), get("/a", &[]))
        .await
        .unwrap();
    let err = http_body_util::BodyExt::collect(res.into_body()).await;
    assert!(
        err.is_err(),
        "a truncated body must end in an error, never look complete"
    );
    let again = tower::ServiceExt::oneshot(svc.clone(), get("/a", &[]))
        .await
        .unwrap();
    assert_eq!(again.headers()["x-cache"], "Miss from tower-cdn");
    assert_eq!(seen.calls(), 2);
    // A whole body from the same origin is stored.
    send(&svc, get("/a?ok", &[])).await;
    assert_hit(&send(&svc, get("/a?ok", &[])).await, "whole");
    assert_eq!(seen.calls(), 3);
}

#[tokio::test]
async fn over_size_object_is_served_whole_but_not_stored() {
    let big = vec![b'z'; 300_000];
    let body = big.clone();
    let (origin, seen) =
        origin(move |_| response(&[("cache-control", "max-age=60")], body.clone()));
    let layer = CdnLayer::builder()
        .capacity(4_000_000)
        .max_object_size(100_000)
        .build()
        .unwrap();
    let svc = layer.layer(origin);
    assert_eq!(send(&svc, get("/big", &[])).await.body, big);
    let again = send(&svc, get("/big", &[])).await;
    assert_eq!(again.body, big);
    assert_eq!(again.x_cache(), "Miss from tower-cdn");
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn an_object_within_the_size_bound_is_stored() {
    let small = vec![b'z'; 50_000];
    let body = small.clone();
    let (origin, seen) =
        origin(move |_| response(&[("cache-control", "max-age=60")], body.clone()));
    let layer = CdnLayer::builder()
        .capacity(4_000_000)
        .max_object_size(100_000)
        .build()
        .unwrap();
    let svc = layer.layer(origin);
    assert_eq!(send(&svc, get("/small", &[])).await.body, small);
    let hit = send(&svc, get("/small", &[])).await;
    assert_eq!(hit.x_cache(), "Hit from tower-cdn");
    assert_eq!(hit.body, small);
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn store_weight_stays_within_its_bound() {
    let (origin, _) = origin(|req| {
        response(
            &[("cache-control", "max-age=600")],
            format!("{:0>1000}", req.uri().path()),
        )
    });
    let layer = CdnLayer::builder()
        .capacity(2_000_000)
        .max_object_size(100_000)
        .build()
        .unwrap();
    let svc = layer.clone().layer(origin);
    for i in 0..10_000 {
        send(&svc, get(&format!("/o/{i}"), &[])).await;
    }
    assert!(
        layer.store_weight() <= layer.store_capacity(),
        "{} > {}",
        layer.store_weight(),
        layer.store_capacity()
    );
    assert!(
        layer.store_entries() > 100,
        "the store keeps objects: {}",
        layer.store_entries()
    );
}

#[tokio::test]
async fn every_clone_of_the_layer_shares_one_cache() {
    let (origin, seen) = origin(|_| response(CACHEABLE, "x"));
    let (layer, _) = layer();
    let a = layer.clone().layer(origin.clone());
    let b = layer.layer(origin);
    send(&a, get("/a", &[])).await;
    assert_eq!(
        send(&b, get("/a", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn cache_name_is_configurable() {
    let (origin, _) = origin(|_| response(CACHEABLE, "x"));
    let layer = CdnLayer::builder().cache_name("edge-7").build().unwrap();
    let svc = layer.layer(origin);
    let res = send(&svc, get("/a", &[])).await;
    assert_eq!(res.x_cache(), "Miss from edge-7");
    assert_eq!(
        res.header("cache-status"),
        "edge-7; fwd=uri-miss; fwd-status=200; stored"
    );
    assert!(CdnLayer::builder().cache_name("bad name").build().is_err());
}
