//! Conditional requests, revalidation and ranges (RFC 9110 §13, §14; RFC 9111 §4.3).

mod support;

use std::time::Duration;

use http::StatusCode;
use support::*;
use tower::Layer;
use tower_cdn::CdnLayer;

const LM: &str = "Thu, 01 Jan 2026 00:00:00 GMT";
const BODY: &str = "0123456789abcdefghij";

fn stored(
    etag: &'static str,
) -> impl Fn(http::Request<()>) -> http::Response<TestBody> + Send + Sync {
    move |_| {
        response(
            &[
                ("cache-control", "max-age=60"),
                ("etag", etag),
                ("last-modified", LM),
                ("content-type", "text/plain"),
                ("x-old", "kept"),
            ],
            BODY,
        )
    }
}

async fn warmed(
    etag: &'static str,
) -> (tower_cdn::CdnService<Origin>, Seen, tower_cdn::ManualClock) {
    let (origin, seen) = origin(stored(etag));
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    (svc, seen, clock)
}

#[tokio::test]
async fn if_none_match_is_answered_with_304_from_cache() {
    // RFC 9110 §13.1.2: weak comparison, lists and `*`.
    let (svc, seen, _) = warmed("W/\"v1\"").await;
    for inm in ["\"v1\"", "W/\"v1\"", "\"x\", W/\"v1\"", "*"] {
        let res = send(&svc, get("/a", &[("if-none-match", inm)])).await;
        assert_eq!(res.status, StatusCode::NOT_MODIFIED, "{inm}");
        assert!(res.body.is_empty());
        assert_eq!(res.x_cache(), "Hit from tower-cdn");
    }
    let res = send(&svc, get("/a", &[("if-none-match", "\"v2\"")])).await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn not_modified_carries_the_fields_section_15_4_5_requires() {
    let (svc, _, _) = warmed("\"v1\"").await;
    let res = send(&svc, get("/a", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!(res.header("etag"), "\"v1\"");
    assert_eq!(res.header("cache-control"), "max-age=60");
    assert!(res.headers.contains_key("age"));
    assert!(
        !res.headers.contains_key("content-type"),
        "no representation metadata on a 304"
    );
    assert!(!res.headers.contains_key("x-old"));
}

#[tokio::test]
async fn if_modified_since_only_without_if_none_match() {
    // RFC 9110 §13.2.2 step 3-4: INM wins over IMS.
    let (svc, _, _) = warmed("\"v1\"").await;
    let ims = send(&svc, get("/a", &[("if-modified-since", LM)])).await;
    assert_eq!(ims.status, StatusCode::NOT_MODIFIED);
    let both = send(
        &svc,
        get(
            "/a",
            &[("if-modified-since", LM), ("if-none-match", "\"other\"")],
        ),
    )
    .await;
    assert_eq!(both.status, StatusCode::OK);
    let invalid = send(&svc, get("/a", &[("if-modified-since", "yesterday")])).await;
    assert_eq!(invalid.status, StatusCode::OK, "an invalid date is ignored");
    let older = send(
        &svc,
        get(
            "/a",
            &[("if-modified-since", "Wed, 31 Dec 2025 00:00:00 GMT")],
        ),
    )
    .await;
    assert_eq!(older.status, StatusCode::OK);
}

#[tokio::test]
async fn if_match_and_if_unmodified_since_fail_with_412() {
    let (svc, _, _) = warmed("\"v1\"").await;
    assert_eq!(
        send(&svc, get("/a", &[("if-match", "\"v2\"")]))
            .await
            .status,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        send(&svc, get("/a", &[("if-match", "\"v1\"")]))
            .await
            .status,
        StatusCode::OK
    );
    let ius = [("if-unmodified-since", "Wed, 31 Dec 2025 00:00:00 GMT")];
    assert_eq!(
        send(&svc, get("/a", &ius)).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    // §13.2.2: If-Unmodified-Since is ignored when If-Match is present.
    let both = [
        ("if-match", "\"v1\""),
        ("if-unmodified-since", "Wed, 31 Dec 2025 00:00:00 GMT"),
    ];
    assert_eq!(send(&svc, get("/a", &both)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn stale_object_is_revalidated_and_a_304_refreshes_it() {
    // RFC 9111 §4.3.1, §4.3.4
    let (origin, seen) = origin(|req| {
        if req.headers().contains_key("if-none-match") {
            let mut r = response(
                &[
                    ("cache-control", "max-age=120"),
                    ("etag", "\"v1\""),
                    ("x-new", "1"),
                    ("content-length", "0"),
                ],
                "",
            );
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
        response(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"v1\""),
                ("last-modified", LM),
                ("x-old", "kept"),
                ("content-length", "20"),
            ],
            BODY,
        )
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(59));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("Hit from tower-cdn", BODY.as_bytes())
    );
    assert_eq!(seen.calls(), 1);
    clock.advance(Duration::from_secs(2));

    let refreshed = send(&svc, get("/a", &[])).await;
    let sent = seen.last_headers();
    assert_eq!(sent["if-none-match"], "\"v1\"");
    assert_eq!(sent["if-modified-since"], LM);
    assert_eq!(refreshed.status, StatusCode::OK);
    assert_eq!(refreshed.body, BODY);
    assert_eq!(refreshed.x_cache(), "RefreshHit from tower-cdn");
    assert_eq!(refreshed.header("x-new"), "1");
    assert_eq!(
        refreshed.header("x-old"),
        "kept",
        "fields the 304 omits are kept"
    );
    assert_eq!(
        refreshed.header("content-length"),
        "20",
        "Content-Length never comes from a 304"
    );
    assert_eq!(refreshed.header("cache-control"), "max-age=120");

    clock.advance(Duration::from_secs(100));
    assert_eq!(
        send(&svc, get("/a", &[])).await.x_cache(),
        "Hit from tower-cdn",
        "the 304's max-age applies"
    );
    assert_eq!(seen.calls(), 2);
    // 120 s after the 304 the refreshed object is stale in turn and revalidated again.
    clock.advance(Duration::from_secs(20));
    let again = send(&svc, get("/a", &[])).await;
    assert_eq!(again.x_cache(), "RefreshHit from tower-cdn");
    assert_eq!(again.body, BODY);
    assert_eq!(seen.calls(), 3);
}

#[tokio::test]
async fn revalidation_carries_the_fields_vary_names() {
    let (origin, seen) = origin(|req| {
        if req.headers().contains_key("if-none-match") {
            let mut r = response(&[("cache-control", "max-age=60"), ("etag", "\"fr\"")], "");
            *r.status_mut() = StatusCode::NOT_MODIFIED;
            return r;
        }
        response(
            &[
                ("cache-control", "max-age=60"),
                ("etag", "\"fr\""),
                ("vary", "accept-language"),
            ],
            "bonjour",
        )
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[("accept-language", "fr")])).await;
    clock.advance(Duration::from_secs(59));
    let hit = send(&svc, get("/a", &[("accept-language", "fr")])).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("Hit from tower-cdn", &b"bonjour"[..])
    );
    assert_eq!(seen.calls(), 1);
    clock.advance(Duration::from_secs(2));
    let res = send(&svc, get("/a", &[("accept-language", "fr")])).await;
    assert_eq!(res.x_cache(), "RefreshHit from tower-cdn");
    assert_eq!(seen.calls(), 2);
    assert_eq!(seen.last_headers()["accept-language"], "fr");
    assert_eq!(res.body, "bonjour");
}

#[tokio::test]
async fn a_full_response_on_revalidation_replaces_the_object() {
    // The first trip stores "old" (ETag "v1"); the revalidation gets a whole new 200.
    let (origin, seen) = origin(|req| {
        if req.headers().contains_key("if-none-match") {
            response(
                &[("cache-control", "max-age=60"), ("etag", "\"v2\"")],
                "new",
            )
        } else {
            response(
                &[("cache-control", "max-age=60"), ("etag", "\"v1\"")],
                "old",
            )
        }
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(59));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("Hit from tower-cdn", &b"old"[..])
    );
    clock.advance(Duration::from_secs(2));
    let res = send(&svc, get("/a", &[])).await;
    assert_eq!(res.x_cache(), "Miss from tower-cdn");
    assert_eq!(res.body, "new");
    assert_eq!(seen.last_headers()["if-none-match"], "\"v1\"");
    let after = send(&svc, get("/a", &[])).await;
    assert_eq!(after.x_cache(), "Hit from tower-cdn");
    assert_eq!(after.body, "new");
    assert_eq!(after.header("etag"), "\"v2\"");
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn a_viewers_conditional_miss_fetches_the_whole_object_then_answers_304() {
    let (origin, seen) = origin(stored("\"v1\""));
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    let res = send(&svc, get("/a", &[("if-none-match", "\"v1\"")])).await;
    assert_eq!(res.status, StatusCode::NOT_MODIFIED);
    assert!(
        !seen.last_headers().contains_key("if-none-match"),
        "the origin is asked for the full object"
    );
    let whole = send(&svc, get("/a", &[])).await;
    assert_eq!(whole.body, BODY);
    assert_eq!(whole.x_cache(), "Hit from tower-cdn");
    assert_eq!(seen.calls(), 1);
}

async fn range(svc: &tower_cdn::CdnService<Origin>, headers: &[(&str, &str)]) -> Seen200 {
    send(svc, get("/a", headers)).await
}

#[tokio::test]
async fn single_suffix_and_open_ended_ranges() {
    // RFC 9110 §14.1.2, §15.3.7
    let (svc, _, _) = warmed("\"v1\"").await;
    let r = range(&svc, &[("range", "bytes=0-3")]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::PARTIAL_CONTENT, &b"0123"[..])
    );
    assert_eq!(r.header("content-range"), "bytes 0-3/20");
    assert_eq!(r.header("content-length"), "4");
    let r = range(&svc, &[("range", "bytes=-5")]).await;
    assert_eq!(r.body, "fghij");
    let r = range(&svc, &[("range", "bytes=15-")]).await;
    assert_eq!(
        (r.body.as_ref(), r.header("content-range")),
        (&b"fghij"[..], "bytes 15-19/20")
    );
    let r = range(&svc, &[("range", "bytes=-100")]).await;
    assert_eq!(
        r.body, BODY,
        "a suffix longer than the body is the whole body"
    );
}

#[tokio::test]
async fn several_ranges_make_multipart_byteranges() {
    let (svc, _, _) = warmed("\"v1\"").await;
    let r = range(&svc, &[("range", "bytes=0-1, 10-11")]).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    let ct = r.header("content-type").to_owned();
    assert!(ct.starts_with("multipart/byteranges; boundary="), "{ct}");
    let boundary = ct.split("boundary=").nth(1).unwrap();
    let text = String::from_utf8(r.body.to_vec()).unwrap();
    assert_eq!(text.matches(&format!("--{boundary}")).count(), 3);
    assert!(text.contains("Content-Range: bytes 0-1/20\r\n\r\n01"));
    assert!(text.contains("Content-Range: bytes 10-11/20\r\n\r\nab"));
    assert_eq!(r.header("content-length"), r.body.len().to_string());
}

#[tokio::test]
async fn overlapping_or_absurd_range_sets_get_the_full_200() {
    let (svc, _, _) = warmed("\"v1\"").await;
    assert_eq!(
        range(&svc, &[("range", "bytes=0-10, 5-15")]).await.status,
        StatusCode::OK
    );
    let many = format!(
        "bytes={}",
        (0..2000)
            .map(|i| format!("{}-{}", i % 20, i % 20))
            .collect::<Vec<_>>()
            .join(",")
    );
    let r = range(&svc, &[("range", &many)]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::OK, BODY.as_bytes())
    );
    let huge = range(&svc, &[("range", "bytes=0-99999999999999999999999999")]).await;
    assert_eq!(huge.status, StatusCode::OK);
}

#[tokio::test]
async fn unsatisfiable_range_is_416() {
    let (svc, _, _) = warmed("\"v1\"").await;
    let r = range(&svc, &[("range", "bytes=50-60")]).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), "bytes */20");
}

#[tokio::test]
async fn if_range_decides_between_206_and_200() {
    // RFC 9110 §13.1.5
    let (svc, _, _) = warmed("\"v1\"").await;
    assert_eq!(
        range(&svc, &[("range", "bytes=0-1"), ("if-range", "\"v1\"")])
            .await
            .status,
        StatusCode::PARTIAL_CONTENT
    );
    assert_eq!(
        range(&svc, &[("range", "bytes=0-1"), ("if-range", "\"v0\"")])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        range(&svc, &[("range", "bytes=0-1"), ("if-range", LM)])
            .await
            .status,
        StatusCode::PARTIAL_CONTENT
    );
    let weak = warmed("W/\"w\"").await.0;
    assert_eq!(
        range(&weak, &[("range", "bytes=0-1"), ("if-range", "W/\"w\"")])
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn head_with_range_and_accept_ranges_on_hits() {
    let (svc, _, _) = warmed("\"v1\"").await;
    let head = send(&svc, request("HEAD", "/a", &[("range", "bytes=0-3")])).await;
    assert_eq!(head.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(head.header("content-range"), "bytes 0-3/20");
    assert!(head.body.is_empty());
    assert_eq!(
        send(&svc, get("/a", &[])).await.header("accept-ranges"),
        "bytes"
    );
}

#[tokio::test]
async fn a_range_request_on_a_miss_fetches_the_whole_object() {
    let (origin, seen) = origin(stored("\"v1\""));
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    let r = range(&svc, &[("range", "bytes=2-4")]).await;
    assert_eq!(
        (r.status, r.body.as_ref()),
        (StatusCode::PARTIAL_CONTENT, &b"234"[..])
    );
    assert!(!seen.last_headers().contains_key("range"));
    let whole = send(&svc, get("/a", &[])).await;
    assert_eq!(whole.body, BODY);
    assert_eq!(whole.x_cache(), "Hit from tower-cdn");
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn a_206_from_the_origin_is_never_served_as_the_whole_object() {
    let (origin, seen) = origin(|_| {
        let mut r = response(
            &[
                ("cache-control", "max-age=60"),
                ("content-range", "bytes 0-3/20"),
            ],
            "0123",
        );
        *r.status_mut() = StatusCode::PARTIAL_CONTENT;
        r
    });
    let (layer, _) = layer();
    let svc = layer.layer(origin);
    for _ in 0..2 {
        let r = send(&svc, get("/a", &[])).await;
        assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
        assert_eq!(r.x_cache(), "Miss from tower-cdn");
    }
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn a_range_request_for_an_object_too_large_to_store_goes_to_the_origin_as_is() {
    let big = "x".repeat(50_000);
    let (origin, seen) = origin(move |_| response(&[("cache-control", "max-age=60")], big.clone()));
    let layer = CdnLayer::builder()
        .capacity(1_000_000)
        .max_object_size(10_000)
        .build()
        .unwrap();
    let svc = layer.layer(origin);
    send(&svc, get("/a", &[])).await;
    send(&svc, get("/a", &[("range", "bytes=0-9")])).await;
    assert_eq!(seen.last_headers()["range"], "bytes=0-9");
}
