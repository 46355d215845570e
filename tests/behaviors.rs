//! Behaviors: path patterns, viewer rules, key policies, targeted cache control and hooks.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Version};
use support::*;
use tower::Layer;
use tower_cdn::{
    AllowedMethods, Behavior, CachePolicy, CachedMethods, CdnLayer, Cookies, FrameOptions, Headers,
    KeyPolicy, OriginRequestPolicy, QueryStrings, ResponseHeadersPolicy, ViewerProtocolPolicy,
    ViewerTls,
};

fn cacheable() -> (Origin, Seen) {
    origin(|req| response(&[("cache-control", "max-age=60")], format!("{}", req.uri())))
}

/// The distribution from the issue: `/api/*` never cached, `/static/*` for a year, the rest
/// by the origin's headers, HTTP redirected to HTTPS.
fn distribution() -> CdnLayer {
    let year = Duration::from_secs(31_536_000);
    let https = ViewerProtocolPolicy::redirect_to_https();
    CdnLayer::builder()
        .behavior(
            "/api/*",
            Behavior::new()
                .cache_policy(CachePolicy::caching_disabled())
                .allowed_methods(AllowedMethods::all())
                .viewer_protocol_policy(https),
        )
        .behavior(
            "/static/*",
            Behavior::new()
                .cache_policy(
                    CachePolicy::caching_optimized()
                        .default_ttl(year)
                        .min_ttl(year)
                        .max_ttl(year),
                )
                .viewer_protocol_policy(https),
        )
        .default_behavior(Behavior::new().viewer_protocol_policy(https))
        .build()
        .unwrap()
}

fn https_get(uri: &str) -> Request<()> {
    let mut req = get(uri, &[]);
    req.extensions_mut().insert(ViewerTls);
    req
}

#[tokio::test]
async fn the_first_matching_behavior_applies() {
    let (origin, seen) = origin(|_| response(&[("cache-control", "max-age=0")], "x"));
    let svc = distribution().layer(origin);
    send(&svc, https_get("/static/app.js")).await;
    let hit = send(&svc, https_get("/static/app.js")).await;
    assert_eq!(
        hit.x_cache(),
        "Hit from tower-cdn",
        "a year, whatever the origin says"
    );
    assert_eq!(hit.body, "x");
    send(&svc, https_get("/api/users")).await;
    assert_eq!(
        send(&svc, https_get("/api/users")).await.x_cache(),
        "Miss from tower-cdn"
    );
    send(&svc, https_get("/page")).await;
    assert_eq!(
        send(&svc, https_get("/page")).await.x_cache(),
        "Miss from tower-cdn",
        "origin's max-age=0"
    );
    assert_eq!(seen.calls(), 5);
}

#[tokio::test]
async fn wildcards_follow_cloudfront_syntax() {
    let (origin, seen) = cacheable();
    let svc = CdnLayer::builder()
        .behavior(
            "*.css",
            Behavior::new().cache_policy(CachePolicy::caching_disabled()),
        )
        .behavior(
            "/img/?.png",
            Behavior::new().cache_policy(CachePolicy::caching_disabled()),
        )
        .build()
        .unwrap()
        .layer(origin);
    for (path, cached) in [
        ("/a/b/site.css", false),
        ("/img/a.png", false),
        ("/img/ab.png", true),
        ("/SITE.CSS", true),
    ] {
        send(&svc, get(path, &[])).await;
        let hit = send(&svc, get(path, &[])).await.x_cache() == "Hit from tower-cdn";
        assert_eq!(hit, cached, "{path}");
    }
    assert_eq!(seen.calls(), 6);
    assert!(CdnLayer::builder()
        .behavior("no-slash", Behavior::new())
        .build()
        .is_err());
    assert!(CdnLayer::builder()
        .behavior("", Behavior::new())
        .build()
        .is_err());
}

async fn viewer(policy: ViewerProtocolPolicy, req: Request<()>, trust: bool) -> Seen200 {
    let (origin, _) = cacheable();
    let svc = CdnLayer::builder()
        .default_behavior(Behavior::new().viewer_protocol_policy(policy))
        .trust_forwarded_proto(trust)
        .build()
        .unwrap()
        .layer(origin);
    send(&svc, req).await
}

fn with_version(mut req: Request<()>, version: Version) -> Request<()> {
    *req.version_mut() = version;
    req
}

#[tokio::test]
async fn viewer_protocol_policy_like_cloudfront() {
    let redirect = ViewerProtocolPolicy::redirect_to_https();
    let res = viewer(redirect, get("/p/q?x=1", &[]), false).await;
    assert_eq!(res.status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(res.header("location"), "https://example.com/p/q?x=1");
    assert_eq!(res.x_cache(), "Redirect from tower-cdn");
    assert_eq!(
        viewer(redirect, request("HEAD", "/p", &[]), false)
            .await
            .status,
        StatusCode::MOVED_PERMANENTLY
    );
    assert_eq!(
        viewer(redirect, request("POST", "/p", &[]), false)
            .await
            .status,
        StatusCode::TEMPORARY_REDIRECT
    );
    let old = with_version(request("POST", "/p", &[]), Version::HTTP_10);
    assert_eq!(
        viewer(redirect, old, false).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer(redirect, https_get("/p"), false).await.status,
        StatusCode::OK
    );
    let absolute = Request::get("https://example.com/p").body(()).unwrap();
    assert_eq!(
        viewer(redirect, absolute, false).await.status,
        StatusCode::OK,
        "scheme from the URI"
    );

    let only = ViewerProtocolPolicy::https_only();
    assert_eq!(
        viewer(only, get("/p", &[]), false).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        viewer(only, https_get("/p"), false).await.status,
        StatusCode::OK
    );
    assert_eq!(
        viewer(ViewerProtocolPolicy::allow_all(), get("/p", &[]), false)
            .await
            .status,
        StatusCode::OK
    );

    let forwarded = || get("/p", &[("x-forwarded-proto", "https")]);
    assert_eq!(
        viewer(only, forwarded(), false).await.status,
        StatusCode::FORBIDDEN,
        "untrusted header ignored"
    );
    assert_eq!(
        viewer(only, forwarded(), true).await.status,
        StatusCode::OK,
        "trusted header honoured"
    );
    let rfc7239 = get("/p", &[("forwarded", "for=1.2.3.4;proto=https")]);
    assert_eq!(viewer(only, rfc7239, true).await.status, StatusCode::OK);
}

#[tokio::test]
async fn methods_outside_the_allowed_set_get_403_at_the_edge() {
    let (origin, seen) = cacheable();
    let svc = CdnLayer::builder()
        .default_behavior(Behavior::new().allowed_methods(AllowedMethods::get_head()))
        .build()
        .unwrap()
        .layer(origin);
    let res = send(&svc, request("POST", "/p", &[])).await;
    assert_eq!(
        (res.status, res.x_cache()),
        (StatusCode::FORBIDDEN, "Error from tower-cdn")
    );
    assert_eq!(seen.calls(), 0);
    assert!(CdnLayer::builder()
        .default_behavior(
            Behavior::new()
                .allowed_methods(AllowedMethods::get_head())
                .cached_methods(CachedMethods::get_head_options())
        )
        .build()
        .is_err());
}

#[tokio::test]
async fn options_is_cached_as_its_own_object_when_asked() {
    let (origin, seen) =
        origin(|req| response(&[("cache-control", "max-age=60")], req.method().to_string()));
    let svc = CdnLayer::builder()
        .default_behavior(
            Behavior::new()
                .allowed_methods(AllowedMethods::get_head_options())
                .cached_methods(CachedMethods::get_head_options()),
        )
        .build()
        .unwrap()
        .layer(origin);
    assert_eq!(
        send(&svc, request("OPTIONS", "/p", &[])).await.body,
        "OPTIONS"
    );
    assert_eq!(send(&svc, get("/p", &[])).await.body, "GET");
    let options = send(&svc, request("OPTIONS", "/p", &[])).await;
    assert_eq!(
        (options.body.as_ref(), options.x_cache()),
        (&b"OPTIONS"[..], "Hit from tower-cdn")
    );
    assert_eq!(seen.calls(), 2);
}

/// Sends `requests` in order and returns how many reached the origin. Also checks what each
/// viewer got: a Miss is the origin's answer to that very request (its URI), and a Hit is
/// the body an earlier Miss stored, so objects the policy tells apart are never mixed up.
async fn calls_for(policy: KeyPolicy, requests: &[Request<()>]) -> usize {
    let (origin, seen) = cacheable();
    let svc = CdnLayer::builder()
        // The origin answers with the URI it saw: it must see the viewer's whole query.
        .default_behavior(
            Behavior::new()
                .key_policy(policy)
                .origin_request_policy(OriginRequestPolicy::all_viewer()),
        )
        .build()
        .unwrap()
        .layer(origin);
    let mut stored: Vec<Bytes> = Vec::new();
    for req in requests {
        let mut r = Request::new(());
        *r.method_mut() = req.method().clone();
        *r.uri_mut() = req.uri().clone();
        *r.headers_mut() = req.headers().clone();
        let res = send(&svc, r).await;
        match res.x_cache() {
            "Miss from tower-cdn" => {
                assert_eq!(res.body, req.uri().to_string());
                stored.push(res.body);
            }
            "Hit from tower-cdn" => assert!(stored.contains(&res.body), "{:?}", res.body),
            other => panic!("{other}"),
        }
    }
    assert_eq!(stored.len(), seen.calls());
    seen.calls()
}

#[tokio::test]
async fn key_policies_decide_what_tells_objects_apart() {
    let tracking = [
        get("/p?id=1&utm_source=mail", &[]),
        get("/p?id=1&gclid=x", &[]),
        get("/p?id=1", &[]),
    ];
    assert_eq!(
        calls_for(KeyPolicy::new(), &tracking).await,
        1,
        "tracking parameters are dropped"
    );
    let allow = [
        get("/p?id=1&page=2", &[]),
        get("/p?id=1&page=3", &[]),
        get("/p?id=2", &[]),
    ];
    assert_eq!(
        calls_for(
            KeyPolicy::new().query_strings(QueryStrings::allow(["id"])),
            &allow
        )
        .await,
        2
    );
    assert_eq!(
        calls_for(KeyPolicy::new().query_strings(QueryStrings::none()), &allow).await,
        1
    );
    let except = KeyPolicy::new().query_strings(QueryStrings::all_except(["page"]));
    assert_eq!(calls_for(except, &allow).await, 2);
    let sorted = [get("/p?a=1&b=2", &[]), get("/p?b=2&a=1", &[])];
    assert_eq!(calls_for(KeyPolicy::new(), &sorted).await, 2);
    assert_eq!(
        calls_for(
            KeyPolicy::new().query_strings(QueryStrings::all().sorted()),
            &sorted
        )
        .await,
        1
    );
    let langs = [
        get("/p", &[("x-lang", "en")]),
        get("/p", &[("x-lang", "fr")]),
        get("/p", &[("x-lang", "en")]),
    ];
    assert_eq!(calls_for(KeyPolicy::new(), &langs).await, 1);
    let by_lang =
        KeyPolicy::new().headers(Headers::allow([http::HeaderName::from_static("x-lang")]));
    assert_eq!(
        calls_for(by_lang, &langs).await,
        2,
        "an allow-listed header splits objects"
    );
    let cookies = [
        get("/p", &[("cookie", "session=1; theme=dark")]),
        get("/p", &[("cookie", "session=2; theme=dark")]),
        get("/p", &[("cookie", "theme=light")]),
    ];
    assert_eq!(
        calls_for(
            KeyPolicy::new().cookies(Cookies::allow(["theme"])),
            &cookies
        )
        .await,
        2
    );
}

#[tokio::test]
async fn cdn_cache_control_drives_the_edge_and_is_kept_from_viewers() {
    // RFC 9213: the targeted field wins over Cache-Control for this cache.
    let (origin, seen) = origin(|req| {
        let field = if req.uri().path() == "/cdn" {
            "cdn-cache-control"
        } else {
            "surrogate-control"
        };
        response(&[("cache-control", "no-store"), (field, "max-age=60")], "x")
    });
    let svc = CdnLayer::new().layer(origin);
    for path in ["/cdn", "/surrogate"] {
        send(&svc, get(path, &[])).await;
        let hit = send(&svc, get(path, &[])).await;
        assert_eq!(hit.x_cache(), "Hit from tower-cdn", "{path}");
        assert_eq!(hit.body, "x");
        assert_eq!(
            hit.header("cache-control"),
            "no-store",
            "viewers still see Cache-Control"
        );
        assert!(!hit.headers.contains_key("cdn-cache-control"));
        assert!(!hit.headers.contains_key("surrogate-control"));
    }
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn hooks_at_the_four_points() {
    let (origin, seen) = origin(|req| {
        let tagged = req.headers().get("x-edge").is_some();
        response(
            &[("cache-control", "no-store")],
            format!("{} tagged={tagged}", req.uri().path()),
        )
    });
    let behavior = Behavior::new()
        .on_viewer_request(|parts| {
            if parts.uri.path() == "/old" {
                let mut res = Response::new(Bytes::new());
                *res.status_mut() = StatusCode::FOUND;
                res.headers_mut()
                    .insert("location", HeaderValue::from_static("/new"));
                return Some(res);
            }
            if parts.uri.path().ends_with('/') {
                parts.uri = format!("{}index.html", parts.uri.path()).parse().unwrap();
            }
            None
        })
        .on_origin_request(|parts| {
            parts
                .headers
                .insert("x-edge", HeaderValue::from_static("1"));
        })
        .on_origin_response(|parts| {
            parts
                .headers
                .insert("cache-control", HeaderValue::from_static("max-age=60"));
        })
        .on_viewer_response(|parts| {
            parts
                .headers
                .insert("x-served-by", HeaderValue::from_static("edge-1"));
        });
    let svc = CdnLayer::builder()
        .default_behavior(behavior)
        .build()
        .unwrap()
        .layer(origin);

    let redirect = send(&svc, get("/old", &[])).await;
    assert_eq!(
        (redirect.status, redirect.header("location")),
        (StatusCode::FOUND, "/new")
    );
    assert_eq!(seen.calls(), 0, "answered at the edge");

    let miss = send(&svc, get("/docs/", &[])).await;
    assert_eq!(miss.body, "/docs/index.html tagged=true");
    assert_eq!(miss.header("x-served-by"), "edge-1");
    let hit = send(&svc, get("/docs/", &[])).await;
    assert_eq!(
        hit.x_cache(),
        "Hit from tower-cdn",
        "the origin-response hook made it cacheable"
    );
    assert_eq!(hit.header("x-served-by"), "edge-1");
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn security_headers_on_hits_and_misses() {
    let (origin, _) = cacheable();
    let policy = ResponseHeadersPolicy::builder()
        .hsts(31_536_000, true, false)
        .content_type_options_nosniff()
        .frame_options(FrameOptions::deny())
        .referrer_policy("strict-origin-when-cross-origin")
        .content_security_policy("default-src 'self'")
        .server_timing(true)
        .build()
        .unwrap();
    let svc = CdnLayer::builder()
        .default_behavior(Behavior::new().response_headers_policy(policy))
        .build()
        .unwrap()
        .layer(origin);
    for expected in ["Miss", "Hit"] {
        let res = send(&svc, get("/p", &[])).await;
        assert_eq!(
            res.header("strict-transport-security"),
            "max-age=31536000; includeSubDomains"
        );
        assert_eq!(res.header("x-content-type-options"), "nosniff");
        assert_eq!(res.header("x-frame-options"), "DENY");
        assert_eq!(
            res.header("referrer-policy"),
            "strict-origin-when-cross-origin"
        );
        assert_eq!(res.header("content-security-policy"), "default-src 'self'");
        assert!(
            res.header("server-timing").contains(expected),
            "{}",
            res.header("server-timing")
        );
    }
}

#[tokio::test]
async fn default_root_object_serves_index_for_the_root() {
    let (origin, seen) = cacheable();
    let svc = CdnLayer::builder()
        .default_root_object("index.html")
        .build()
        .unwrap()
        .layer(origin);
    assert_eq!(send(&svc, get("/?v=2", &[])).await.body, "/index.html?v=2");
    assert_eq!(send(&svc, get("/other/", &[])).await.body, "/other/");
    assert_eq!(seen.calls(), 2);
    assert!(CdnLayer::builder()
        .default_root_object("/index.html")
        .build()
        .is_err());
}

/// An origin answering `cache-control` and the body `v1`, `v2`, ... (one more per call).
fn versioned(cache_control: &'static str) -> (Origin, Seen) {
    let calls = std::sync::atomic::AtomicUsize::new(0);
    origin(move |_| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        response(&[("cache-control", cache_control)], format!("v{n}"))
    })
}

/// What the next viewer of `/p` gets: X-Cache and body.
async fn next(svc: &tower_cdn::CdnService<Origin>) -> (String, Bytes) {
    let res = send(svc, get("/p", &[])).await;
    (res.x_cache().to_owned(), res.body)
}

fn hit(body: &'static str) -> (String, Bytes) {
    (
        "Hit from tower-cdn".to_owned(),
        Bytes::from_static(body.as_bytes()),
    )
}

fn miss(body: &'static str) -> (String, Bytes) {
    (
        "Miss from tower-cdn".to_owned(),
        Bytes::from_static(body.as_bytes()),
    )
}

#[tokio::test]
async fn a_cache_policy_bounds_the_origins_freshness() {
    // max_ttl caps the origin's max-age: stored, a Hit until the cap, then a Miss.
    let (origin, seen) = versioned("max-age=600");
    let clock = tower_cdn::ManualClock::new();
    let policy = CachePolicy::rfc().max_ttl(Duration::from_secs(10));
    let svc = CdnLayer::builder()
        .clock(clock.clone())
        .default_behavior(Behavior::new().cache_policy(policy))
        .build()
        .unwrap()
        .layer(origin);
    assert_eq!(next(&svc).await, miss("v1"));
    clock.advance(Duration::from_secs(9));
    assert_eq!(next(&svc).await, hit("v1"));
    clock.advance(Duration::from_secs(1));
    assert_eq!(next(&svc).await, miss("v2"));
    assert_eq!(seen.calls(), 2);

    // min_ttl raises a shorter max-age; default_ttl applies to a response that has none.
    for (cache_control, min, default, ttl) in [("max-age=1", 30, 30, 30), ("public", 0, 20, 20)] {
        let (origin, seen) = versioned(cache_control);
        let clock = tower_cdn::ManualClock::new();
        let policy = CachePolicy::rfc()
            .min_ttl(Duration::from_secs(min))
            .default_ttl(Duration::from_secs(default));
        let svc = CdnLayer::builder()
            .clock(clock.clone())
            .default_behavior(Behavior::new().cache_policy(policy))
            .build()
            .unwrap()
            .layer(origin);
        assert_eq!(next(&svc).await, miss("v1"), "{cache_control}");
        clock.advance(Duration::from_secs(ttl - 1));
        assert_eq!(next(&svc).await, hit("v1"), "{cache_control}");
        clock.advance(Duration::from_secs(1));
        assert_eq!(next(&svc).await, miss("v2"), "{cache_control}");
        assert_eq!(seen.calls(), 2, "{cache_control}");
    }
}
