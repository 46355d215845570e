//! RFC 9111 / RFC 9110 / RFC 9213 fidelity through the layer: what the second viewer of a URL
//! gets after revalidations that select nothing, unknown statuses, errors, unreachable
//! origins, targeted cache control, HEAD answers and interim responses.

mod support;

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use support::*;
use tower::Layer;
use tower_cdn::{CachePolicy, CdnLayer, ManualClock};

const LM: &str = "Thu, 01 Jan 2026 00:00:00 GMT";
const DATE: &str = "Sun, 01 Feb 2026 00:00:00 GMT";

fn with_status(status: u16, mut res: Response<TestBody>) -> Response<TestBody> {
    *res.status_mut() = StatusCode::from_u16(status).unwrap();
    res
}

fn not_modified(headers: &[(&str, &str)]) -> Response<TestBody> {
    with_status(304, response(headers, ""))
}

/// A layer on `clock` with the RFC defaults.
fn on(clock: &ManualClock) -> tower_cdn::CdnLayerBuilder {
    CdnLayer::builder().clock(clock.clone())
}

/// A service whose origin answers the n-th request (from 0) with `answer(n, request)`.
fn scripted(
    clock: &ManualClock,
    answer: impl Fn(usize, &Request<()>) -> Response<TestBody> + Send + Sync + 'static,
) -> (tower_cdn::CdnService<Origin>, Seen) {
    let n = AtomicUsize::new(0);
    let (origin, seen) = origin(move |req| answer(n.fetch_add(1, Ordering::SeqCst), &req));
    (on(clock).build().unwrap().layer(origin), seen)
}

// ---- Item 1: RFC 9111 §4.3.4, a 304 that selects nothing -------------------------------

#[tokio::test]
async fn a_304_without_validators_answers_the_viewer_and_the_next_request_goes_unconditional() {
    // RFC 9111 §4.3.4: a 304 without a validator selects a stored response only when that
    // response lacks validators too; this one has an ETag, so it is not updated. The 304
    // still answers the conditions the edge sent, so the viewer gets the stored object, never
    // a 502; the next request asks without conditions and stores the full answer.
    for vary in [None, Some("accept-language")] {
        let clock = ManualClock::new();
        let (svc, seen) = scripted(&clock, move |n, req| match n {
            0 => {
                let mut headers = vec![
                    ("cache-control", "max-age=2, must-revalidate"),
                    ("etag", "\"abcd\""),
                ];
                headers.extend(vary.map(|v| ("vary", v)));
                response(&headers, "first")
            }
            1 => {
                assert_eq!(req.headers()["if-none-match"], "\"abcd\"");
                not_modified(&[("cache-control", "max-age=600")])
            }
            _ => {
                assert!(!req.headers().contains_key("if-none-match"));
                response(
                    &[("cache-control", "max-age=600"), ("etag", "\"efgh\"")],
                    "second",
                )
            }
        });
        let lang = [("accept-language", "fr")];
        send(&svc, get("/a", &lang)).await;
        clock.advance(Duration::from_secs(3));
        let res = send(&svc, get("/a", &lang)).await;
        assert_eq!(res.status, StatusCode::OK, "vary {vary:?}");
        assert_eq!(res.body, "first");
        assert_eq!(res.x_cache(), "RefreshHit from tower-cdn");
        assert!(res.header("cache-status").contains("detail=not-updated"));
        // Not updated: the 304's max-age=600 did not make it fresh.
        let next = send(&svc, get("/a", &lang)).await;
        assert_eq!(
            (next.status, next.body.as_ref()),
            (StatusCode::OK, &b"second"[..])
        );
        assert_eq!(
            send(&svc, get("/a", &lang)).await.x_cache(),
            "Hit from tower-cdn"
        );
        assert_eq!(seen.calls(), 3);
    }
}

#[tokio::test]
async fn a_304_with_another_strong_etag_does_not_update_the_stored_object() {
    // RFC 9111 §4.3.4: "If none of the stored responses contain the same strong validator,
    // then the cache MUST NOT use the new response to update any stored responses."
    let clock = ManualClock::new();
    let (svc, seen) = scripted(&clock, |n, req| match n {
        0 => response(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")], "v1"),
        1 => not_modified(&[
            ("cache-control", "max-age=600"),
            ("etag", "\"v2\""),
            ("x-poison", "1"),
        ]),
        _ => {
            assert!(!req.headers().contains_key("if-none-match"));
            response(
                &[("cache-control", "max-age=600"), ("etag", "\"v2\"")],
                "v2",
            )
        }
    });
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(11));
    let confirmed = send(&svc, get("/a", &[])).await;
    assert_eq!(confirmed.body, "v1");
    assert!(!confirmed.headers.contains_key("x-poison"));
    // The next viewer: neither the 304's fields nor its freshness were taken.
    let next = send(&svc, get("/a", &[])).await;
    assert!(!next.headers.contains_key("x-poison"));
    assert_eq!(next.x_cache(), "Miss from tower-cdn");
    assert_eq!(next.body, "v2");
    assert_eq!(seen.calls(), 3);
}

#[tokio::test]
async fn a_304_updates_a_stored_response_without_validators() {
    // RFC 9111 §4.3.4, third case: no validator on either side, one stored response.
    let clock = ManualClock::new();
    let (svc, seen) = scripted(&clock, |n, _| match n {
        0 => response(&[("cache-control", "max-age=10")], "body"),
        _ => not_modified(&[("cache-control", "max-age=600"), ("x-new", "1")]),
    });
    send(&svc, get("/a", &[])).await;
    clock.advance(Duration::from_secs(11));
    let refreshed = send(&svc, get("/a", &[])).await;
    assert_eq!(refreshed.x_cache(), "RefreshHit from tower-cdn");
    assert_eq!(refreshed.header("x-new"), "1");
    clock.advance(Duration::from_secs(100));
    let hit = send(&svc, get("/a", &[])).await;
    assert_eq!(
        (hit.x_cache(), hit.body.as_ref()),
        ("Hit from tower-cdn", &b"body"[..])
    );
    assert_eq!(seen.calls(), 2);
}

// ---- Item 2: RFC 9110 §12.5.5, Vary: Accept-Encoding only where the coding may vary -----

async fn vary_of(headers: &[(&'static str, &'static str)], body: Vec<u8>) -> (String, String) {
    let headers: Vec<(&'static str, &'static str)> = headers.to_vec();
    let (origin, _) = origin(move |_| response(&headers, body.clone()));
    let svc = CdnLayer::new().layer(origin);
    let viewer = [("foo", "1"), ("accept-encoding", "identity")];
    let miss = send(&svc, get("/v", &viewer)).await;
    let hit = send(&svc, get("/v", &viewer)).await;
    assert_eq!(hit.x_cache(), "Hit from tower-cdn");
    let vary = |res: &Seen200| {
        res.headers
            .get_all("vary")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>()
            .join(", ")
    };
    (vary(&miss), vary(&hit))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[tokio::test]
async fn vary_names_accept_encoding_only_when_the_edge_may_change_the_coding() {
    // RFC 9110 §12.5.5: Vary lists what influenced the selection. A body the edge never
    // compresses (under 1,000 bytes, a media type it does not compress, no-transform) is
    // the same whatever Accept-Encoding says.
    let small = [
        ("cache-control", "max-age=60"),
        ("content-type", "text/plain"),
        ("vary", "Foo"),
        ("content-length", "36"),
    ];
    let both = vary_of(&small, vec![b'a'; 36]).await;
    assert_eq!(both, ("Foo".into(), "Foo".into()));
    // Without Content-Length the size is known only at the end: the stored object is right.
    let unsized_small = &small[..3];
    assert_eq!(vary_of(unsized_small, vec![b'a'; 36]).await.1, "Foo");
    let text = [
        ("cache-control", "max-age=60"),
        ("content-type", "text/plain"),
        ("vary", "Foo"),
    ];
    let compressible = vary_of(&text, vec![b'a'; 2_000]).await;
    assert_eq!(compressible.1, "Foo, Accept-Encoding");
    let image = [
        ("cache-control", "max-age=60"),
        ("content-type", "image/png"),
        ("vary", "Foo"),
    ];
    assert_eq!(vary_of(&image, vec![b'a'; 2_000]).await.1, "Foo");
    let no_transform = [
        ("cache-control", "max-age=60, no-transform"),
        ("content-type", "text/plain"),
        ("vary", "Foo"),
    ];
    assert_eq!(vary_of(&no_transform, vec![b'a'; 2_000]).await.1, "Foo");
    // A body the origin encoded, that the edge decodes for viewers who cannot read it.
    let encoded = [
        ("cache-control", "max-age=60"),
        ("content-type", "image/png"),
        ("content-encoding", "gzip"),
        ("vary", "Foo"),
    ];
    let zipped = gzip(&[b'a'; 2_000]);
    assert_eq!(
        vary_of(&encoded, zipped.clone()).await.1,
        "Foo, Accept-Encoding"
    );
    // ... unless no-transform forbids decoding it: then it goes to everyone as it came.
    let kept = [
        ("cache-control", "max-age=60, no-transform"),
        ("content-type", "image/png"),
        ("content-encoding", "gzip"),
        ("vary", "Foo"),
    ];
    assert_eq!(vary_of(&kept, zipped.clone()).await.1, "Foo");
    let (origin, _) = origin(move |_| response(&kept, zipped.clone()));
    let svc = CdnLayer::new().layer(origin);
    let identity = [("foo", "1"), ("accept-encoding", "identity")];
    send(&svc, get("/v", &identity)).await;
    let res = send(&svc, get("/v", &identity)).await;
    assert_eq!(
        res.header("content-encoding"),
        "gzip",
        "no-transform: never decoded"
    );
}

// ---- Item 3: RFC 9111 §3, any final status with explicit freshness ----------------------

async fn origin_calls(status: u16, headers: &'static [(&'static str, &'static str)]) -> usize {
    let clock = ManualClock::new();
    let (svc, seen) = scripted(&clock, move |_, _| {
        with_status(status, response(headers, "x"))
    });
    let first = send(&svc, get("/s", &[])).await;
    assert_eq!(first.status.as_u16(), status);
    clock.advance(Duration::from_secs(30));
    let second = send(&svc, get("/s", &[])).await;
    assert_eq!(second.status.as_u16(), status);
    seen.calls()
}

#[tokio::test]
async fn any_final_status_with_explicit_freshness_is_stored() {
    // RFC 9111 §3: a final status the cache does not know may be stored for its explicit
    // freshness; it is only barred from heuristic freshness (§4.2.2).
    for status in [299, 499, 599] {
        let explicit = &[("cache-control", "max-age=100000")];
        assert_eq!(origin_calls(status, explicit).await, 1, "{status} stored");
        let heuristic = &[("last-modified", LM), ("date", DATE)];
        assert_eq!(
            origin_calls(status, heuristic).await,
            2,
            "{status} no heuristic"
        );
        let public = &[
            ("cache-control", "public"),
            ("last-modified", LM),
            ("date", DATE),
        ];
        assert_eq!(
            origin_calls(status, public).await,
            2,
            "{status} public, no heuristic"
        );
    }
}

#[tokio::test]
async fn method_not_allowed_and_gone_are_heuristically_cacheable() {
    // RFC 9110 §15.1, RFC 9111 §4.2.2: 405 and 410 get heuristic freshness from
    // Last-Modified (10% of 31 days here), like 200 and 404.
    let heuristic = &[("last-modified", LM), ("date", DATE)];
    for status in [404, 405, 410, 414, 501] {
        assert_eq!(origin_calls(status, heuristic).await, 1, "{status}");
    }
    assert_eq!(origin_calls(400, heuristic).await, 2, "400 is not");
}

// ---- Item 4: errors without freshness are not stored by default -------------------------

#[tokio::test]
async fn an_error_without_freshness_is_not_replayed_to_the_next_viewer_by_default() {
    // RFC 9111 §3: no explicit freshness and no heuristic (502/503/504 are not heuristically
    // cacheable, a 404 without Last-Modified has none): not stored. The next viewer reaches
    // the origin, which has recovered.
    for status in [404, 500, 502, 503, 504] {
        let clock = ManualClock::new();
        let (svc, seen) = scripted(&clock, move |n, _| match n {
            0 => with_status(status, response(&[], "overloaded")),
            _ => response(&[("cache-control", "max-age=60")], "fine"),
        });
        assert_eq!(send(&svc, get("/e", &[])).await.status.as_u16(), status);
        let next = send(&svc, get("/e", &[])).await;
        assert_eq!(
            (next.status, next.body.as_ref()),
            (StatusCode::OK, &b"fine"[..])
        );
        assert_eq!(seen.calls(), 2, "{status}");
    }
}

#[tokio::test]
async fn the_cloudfront_preset_keeps_errors_for_its_error_caching_minimum_ttl() {
    let clock = ManualClock::new();
    let (origin, seen) = origin(|_| with_status(503, response(&[], "busy")));
    let svc = on(&clock)
        .cache_policy(CachePolicy::caching_optimized())
        .build()
        .unwrap()
        .layer(origin);
    send(&svc, get("/e", &[])).await;
    clock.advance(Duration::from_secs(9));
    assert_eq!(
        send(&svc, get("/e", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    clock.advance(Duration::from_secs(1));
    send(&svc, get("/e", &[])).await;
    assert_eq!(seen.calls(), 2);
}

// ---- Item 5: RFC 9111 §4.2.4, stale when the origin cannot be reached -------------------

/// An origin that answers once, then fails the way `failure` says.
#[derive(Clone)]
struct Failing {
    calls: Arc<AtomicUsize>,
    cache_control: &'static str,
    failure: Failure,
}

#[derive(Clone, Copy, Debug)]
enum Failure {
    Refused,
    Silent,
    Unavailable,
}

impl tower::Service<Request<()>> for Failing {
    type Response = Response<TestBody>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response<TestBody>, std::io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let (cc, failure) = (self.cache_control, self.failure);
        Box::pin(async move {
            match (n, failure) {
                (0, _) => Ok(response(&[("cache-control", cc)], "stored")),
                (_, Failure::Refused) => Err(std::io::Error::other("connection refused")),
                (_, Failure::Silent) => std::future::pending().await,
                (_, Failure::Unavailable) => Ok(with_status(503, response(&[], "down"))),
            }
        })
    }
}

async fn after_failure(
    cache_control: &'static str,
    failure: Failure,
    tune: impl FnOnce(tower_cdn::CdnLayerBuilder) -> tower_cdn::CdnLayerBuilder,
) -> Seen200 {
    let clock = ManualClock::new();
    let origin = Failing {
        calls: Arc::default(),
        cache_control,
        failure,
    };
    let builder = on(&clock).origin_timeout(Duration::from_secs(5));
    let svc = tune(builder).build().unwrap().layer(origin);
    assert_eq!(send(&svc, get("/a", &[])).await.body, "stored");
    clock.advance(Duration::from_secs(3_600));
    send(&svc, get("/a", &[])).await
}

#[tokio::test(start_paused = true)]
async fn a_stale_object_stands_in_for_an_origin_that_cannot_be_reached() {
    // RFC 9111 §4.2.4: a cache that cannot reach the origin may serve stale, unless the
    // response forbids it. No stale-if-error anywhere: this is the edge's own default.
    for failure in [Failure::Refused, Failure::Silent] {
        let res = after_failure("max-age=60", failure, |b| b).await;
        assert_eq!(
            (res.status, res.body.as_ref()),
            (StatusCode::OK, &b"stored"[..])
        );
        assert!(
            res.header("cache-status")
                .contains("detail=stale-if-unreachable"),
            "{failure:?}: {}",
            res.header("cache-status")
        );
        for forbidding in [
            "max-age=60, must-revalidate",
            "s-maxage=60",
            "max-age=60, proxy-revalidate",
            "no-cache, max-age=60",
        ] {
            let res = after_failure(forbidding, failure, |b| b).await;
            assert_eq!(res.x_cache(), "Error from tower-cdn", "{forbidding}");
        }
        let off = after_failure("max-age=60", failure, |b| {
            b.stale_if_unreachable(Duration::ZERO)
        })
        .await;
        assert_eq!(off.x_cache(), "Error from tower-cdn");
        let short = after_failure("max-age=60", failure, |b| {
            b.stale_if_unreachable(Duration::from_secs(60))
        })
        .await;
        assert_eq!(short.x_cache(), "Error from tower-cdn", "past the window");
    }
    // A 5xx answer is the origin speaking: only stale-if-error lets stale stand in for it.
    let answered = after_failure("max-age=60", Failure::Unavailable, |b| b).await;
    assert_eq!(answered.status, StatusCode::SERVICE_UNAVAILABLE);
    let allowed = after_failure(
        "max-age=60, stale-if-error=7200",
        Failure::Unavailable,
        |b| b,
    )
    .await;
    assert_eq!(allowed.body, "stored");
    assert!(allowed
        .header("cache-status")
        .contains("detail=stale-if-error"));
}

// ---- Item 6: RFC 9213 CDN-Cache-Control -------------------------------------------------

async fn calls_with(cache_control: &'static str, cdn: &'static str) -> (usize, Seen200) {
    let clock = ManualClock::new();
    let (svc, seen) = scripted(&clock, move |_, _| {
        response(
            &[
                ("cache-control", cache_control),
                ("cdn-cache-control", cdn),
                ("etag", "\"e\""),
            ],
            "x",
        )
    });
    send(&svc, get("/t", &[])).await;
    clock.advance(Duration::from_secs(1));
    let second = send(&svc, get("/t", &[])).await;
    (seen.calls(), second)
}

#[tokio::test]
async fn cdn_cache_control_private_and_no_cache_apply_to_the_edge() {
    // RFC 9213 §2.1: a cache using the targeted field implements private and no-cache.
    assert_eq!(calls_with("max-age=60", "private").await.0, 2);
    assert_eq!(calls_with("max-age=60", "max-age=60, private").await.0, 2);
    let (calls, second) = calls_with("max-age=60", "max-age=60, no-cache").await;
    assert_eq!(calls, 2, "stored, but revalidated before each reuse");
    assert!(second.header("cache-status").contains("fwd=stale"));
    // Valid and understood: it overrides Cache-Control (§2.2).
    assert_eq!(calls_with("no-store", "max-age=60").await.0, 1);
    // The field never reaches viewers.
    assert!(!calls_with("no-store", "max-age=60")
        .await
        .1
        .headers
        .contains_key("cdn-cache-control"));
}

#[tokio::test]
async fn an_invalid_cdn_cache_control_is_ignored_as_a_whole() {
    // RFC 9213 §2.1: a field that does not parse as a Dictionary (RFC 8941 §4.2.2), or whose
    // members have the wrong types, is ignored; Cache-Control applies.
    for invalid in [
        "max-age=\"60\"",
        "max-age=60, max-age",
        "max-age=6x0",
        "max-age=60,",
        "max-age=-1",
        "max-age=60 private",
        "Max-Age=60",
        "private=1",
        "no-store=\"yes\"",
        "max-age=1.5",
    ] {
        assert_eq!(
            calls_with("no-store", invalid).await.0,
            2,
            "{invalid}: no-store applies"
        );
        assert_eq!(
            calls_with("max-age=60", invalid).await.0,
            1,
            "{invalid}: max-age applies"
        );
    }
    // Parameters and unknown members are valid and ignored.
    assert_eq!(
        calls_with("no-store", "max-age=60;a=1, ext=(1 2), foo=?0")
            .await
            .0,
        1
    );
}

// ---- Item 7: RFC 9111 §4.3.5, HEAD updates the stored GET response ---------------------

#[tokio::test]
async fn a_head_answer_updates_the_stored_get_response_its_validators_select() {
    for (etag, length, updated) in [
        ("\"v1\"", "4", true),
        ("\"v2\"", "4", false),
        ("\"v1\"", "5", false),
    ] {
        let clock = ManualClock::new();
        let (svc, seen) = scripted(&clock, move |_, req| {
            if req.method() == http::Method::HEAD {
                response(
                    &[
                        ("cache-control", "max-age=600"),
                        ("etag", etag),
                        ("content-length", length),
                        ("x-new", "1"),
                    ],
                    "",
                )
            } else {
                response(
                    &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                    "body",
                )
            }
        });
        send(&svc, get("/h", &[])).await;
        clock.advance(Duration::from_secs(11));
        let head = send(&svc, tower_cdn_request("HEAD")).await;
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(seen.last_method(), http::Method::HEAD);
        let next = send(&svc, get("/h", &[])).await;
        assert_eq!(next.body, "body");
        if updated {
            assert_eq!(next.x_cache(), "Hit from tower-cdn", "{etag} {length}");
            assert_eq!(next.header("x-new"), "1");
            assert_eq!(seen.calls(), 2);
        } else {
            assert!(!next.headers.contains_key("x-new"), "{etag} {length}");
            assert_eq!(seen.calls(), 3, "still stale: revalidated");
        }
    }
}

fn tower_cdn_request(method: &str) -> Request<()> {
    request(method, "/h", &[])
}

#[tokio::test]
async fn a_head_with_credentials_updates_nothing_the_answer_does_not_share() {
    // RFC 9111 §3.5: an answer to a request with Authorization is shared only when it says
    // so (public, s-maxage, must-revalidate); §4.3.5 updates only what may be stored.
    let clock = ManualClock::new();
    let (svc, seen) = scripted(&clock, |_, req| {
        if req.method() == http::Method::HEAD {
            response(
                &[
                    ("cache-control", "max-age=600"),
                    ("etag", "\"v1\""),
                    ("x-user", "alice"),
                ],
                "",
            )
        } else {
            response(
                &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
                "body",
            )
        }
    });
    send(&svc, get("/h", &[])).await;
    clock.advance(Duration::from_secs(11));
    send(
        &svc,
        request("HEAD", "/h", &[("authorization", "Bearer alice")]),
    )
    .await;
    let next = send(&svc, get("/h", &[])).await;
    assert!(!next.headers.contains_key("x-user"));
    assert_eq!(seen.calls(), 3, "still stale: revalidated");
}

// ---- Item 8: RFC 9110 §15.2, interim responses ------------------------------------------

#[tokio::test]
async fn an_interim_response_from_the_inner_service_is_never_stored() {
    // RFC 9110 §15.2: 1xx is interim, never a final answer; RFC 9111 §3: only final
    // responses are stored.
    for status in [100, 103] {
        let clock = ManualClock::new();
        let (svc, seen) = scripted(&clock, move |n, _| match n {
            0 => with_status(
                status,
                response(
                    &[("cache-control", "max-age=600"), ("link", "</a.css>")],
                    "",
                ),
            ),
            _ => response(&[("cache-control", "max-age=600")], "final"),
        });
        let _ = send(&svc, get("/i", &[])).await;
        let second = send(&svc, get("/i", &[])).await;
        assert_eq!(
            (second.status, second.body.as_ref()),
            (StatusCode::OK, &b"final"[..])
        );
        assert!(!second.headers.contains_key("link"));
        assert_eq!(seen.calls(), 2, "{status}");
    }
}

// ---- Item 9: the first viewer of a compressible miss gets it compressed -----------------

fn page(len: usize) -> String {
    "tower-cdn compresses while it fills, and keeps the coding. ".repeat(len / 59 + 1)[..len]
        .to_owned()
}

fn unbrotli(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    std::io::Read::read_to_end(&mut brotli::Decompressor::new(body, 4096), &mut out).unwrap();
    out
}

#[tokio::test]
async fn the_first_viewer_of_a_compressible_miss_gets_it_compressed_and_the_coding_is_kept() {
    // RFC 9110 §12.5.3: the viewer's preferred coding, on the miss as on hits; §8.8.3: the
    // coded representation's ETag is weak; §12.5.5: Vary names Accept-Encoding.
    let body = page(20_000);
    let b = body.clone();
    let (origin, seen) = origin(move |_| {
        response(
            &[
                ("cache-control", "max-age=600"),
                ("content-type", "text/html; charset=utf-8"),
                ("etag", "\"abc\""),
            ],
            b.clone(),
        )
    });
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    let first = send(&svc, get("/p", &[("accept-encoding", "gzip, br")])).await;
    assert_eq!(first.x_cache(), "Miss from tower-cdn");
    assert_eq!(first.header("content-encoding"), "br");
    assert_eq!(first.header("etag"), "W/\"abc\"");
    assert_eq!(first.header("vary"), "Accept-Encoding");
    assert!(first.body.len() < body.len() / 4);
    assert_eq!(unbrotli(&first.body), body.as_bytes());
    let made = layer.metrics().compressions;
    // The second viewer gets the stored coding: no compression on the hit.
    let second = send(&svc, get("/p", &[("accept-encoding", "br")])).await;
    assert_eq!(second.x_cache(), "Hit from tower-cdn");
    assert_eq!(second.header("content-encoding"), "br");
    assert_eq!(
        second.header("content-length"),
        second.body.len().to_string()
    );
    assert_eq!(unbrotli(&second.body), body.as_bytes());
    assert_eq!(layer.metrics().compressions, made);
    let plain = send(&svc, get("/p", &[])).await;
    assert!(!plain.headers.contains_key("content-encoding"));
    assert_eq!(
        (plain.x_cache(), plain.body.as_ref()),
        ("Hit from tower-cdn", body.as_bytes())
    );
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn the_compressed_miss_streams_as_the_origin_body_arrives() {
    // The coded body reaches the viewer piece by piece: the first piece is readable while
    // the origin has not finished, so the edge never waits for the whole body.
    use http_body_util::BodyExt;
    let body = page(40_000);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let (origin, _) = origin(move |_| {
        let rx = rx.lock().unwrap().take().expect("one origin request");
        response(
            &[
                ("cache-control", "max-age=600"),
                ("content-type", "text/plain"),
            ],
            TestBody::Channel(rx),
        )
    });
    let svc = CdnLayer::new().layer(origin);
    let res = tokio::time::timeout(
        Duration::from_secs(10),
        tower::ServiceExt::oneshot(svc, get("/s", &[("accept-encoding", "br")])),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(res.headers()["content-encoding"], "br");
    let mut coded = res.into_body();
    let (head, tail) = body.as_bytes().split_at(20_000);
    tx.send(Ok(bytes::Bytes::copy_from_slice(head)))
        .await
        .unwrap();
    let wait = Duration::from_secs(10);
    let first = tokio::time::timeout(wait, coded.frame()).await.unwrap();
    let mut received = first.unwrap().unwrap().into_data().unwrap().to_vec();
    assert!(!received.is_empty());
    tx.send(Ok(bytes::Bytes::copy_from_slice(tail)))
        .await
        .unwrap();
    drop(tx);
    let rest = tokio::time::timeout(wait, coded.collect())
        .await
        .unwrap()
        .unwrap();
    received.extend_from_slice(&rest.to_bytes());
    assert_eq!(unbrotli(&received), body.as_bytes());
}

#[tokio::test]
async fn followers_of_a_compressed_miss_read_the_coding_they_prefer() {
    // A follower that prefers the coding being made reads the same compressed stream; one
    // that prefers identity (or a coding not being made) reads the identity stream.
    use http_body_util::BodyExt;
    let body = page(30_000);
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let rx = std::sync::Mutex::new(Some(rx));
    let (origin, seen) = origin(move |_| {
        let rx = rx.lock().unwrap().take().expect("one origin request");
        response(
            &[
                ("cache-control", "max-age=600"),
                ("content-type", "text/css"),
            ],
            TestBody::Channel(rx),
        )
    });
    let svc = CdnLayer::new().layer(origin);
    let wait = Duration::from_secs(10);
    let call = |accept: &'static str| {
        let svc = svc.clone();
        async move {
            let req = get("/f", &[("accept-encoding", accept)]);
            tokio::time::timeout(wait, tower::ServiceExt::oneshot(svc, req))
                .await
                .unwrap()
                .unwrap()
        }
    };
    let leader = call("br").await;
    let follower_br = call("br, gzip").await;
    let follower_plain = call("identity").await;
    let follower_gzip = call("gzip").await;
    for res in [&follower_br, &follower_plain, &follower_gzip] {
        let status = res.headers()["cache-status"].to_str().unwrap();
        assert!(status.contains("collapsed"), "{status}");
    }
    tx.send(Ok(bytes::Bytes::from(body.clone()))).await.unwrap();
    drop(tx);
    let mut read = Vec::new();
    for res in [leader, follower_br, follower_plain, follower_gzip] {
        let coding = res.headers().get("content-encoding").cloned();
        let data = tokio::time::timeout(wait, res.into_body().collect())
            .await
            .unwrap()
            .unwrap()
            .to_bytes();
        read.push((coding, data));
    }
    for (coding, data) in &read[..2] {
        assert_eq!(coding.as_ref().unwrap(), "br");
        assert_eq!(unbrotli(data), body.as_bytes());
    }
    for (coding, data) in &read[2..] {
        assert!(coding.is_none(), "identity stream");
        assert_eq!(data, body.as_bytes());
    }
    assert_eq!(seen.calls(), 1);
}
