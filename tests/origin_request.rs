//! What reaches the origin of what the key leaves out: the origin request policy per behavior
//! (issue #16 items 3 and 4), through the layer with `oneshot`.

mod support;

use http::{HeaderName, StatusCode};
use support::*;
use tower::Layer;
use tower_cdn::{Behavior, CdnLayer, Cookies, KeyPolicy, OriginRequestPolicy, QueryStrings};

/// An origin that answers with the target and cookie it was sent, cacheable.
fn echo() -> (Origin, Seen) {
    origin(|req| {
        let cookie = req
            .headers()
            .get("cookie")
            .map_or("-", |v| v.to_str().unwrap())
            .to_owned();
        let override_ = req
            .headers()
            .get("x-http-method-override")
            .map_or("-", |v| v.to_str().unwrap())
            .to_owned();
        response(
            &[("cache-control", "max-age=60")],
            format!("{} cookie={cookie} override={override_}", req.uri()),
        )
    })
}

fn text(res: &Seen200) -> &str {
    std::str::from_utf8(&res.body).unwrap()
}

#[tokio::test]
async fn by_default_the_origin_gets_the_query_and_cookies_of_the_key() {
    let (origin, _) = echo();
    let key = KeyPolicy::new().cookies(Cookies::allow(["theme"]));
    let svc = CdnLayer::builder()
        .default_behavior(Behavior::new().key_policy(key))
        .build()
        .unwrap()
        .layer(origin);
    let res = send(
        &svc,
        get(
            "/p?id=1&utm_source=mail&fbclid=x",
            &[
                ("cookie", "session=s1; theme=dark"),
                ("x-http-method-override", "DELETE"),
            ],
        ),
    )
    .await;
    assert_eq!(text(&res), "/p?id=1 cookie=theme=dark override=-");
    // A `?` with nothing the key holds: no `?` at all.
    let res = send(&svc, get("/q?utm_source=mail", &[])).await;
    assert_eq!(text(&res), "/q cookie=- override=-");
}

#[tokio::test]
async fn a_behavior_may_forward_more_by_name() {
    let (origin, _) = echo();
    let api = OriginRequestPolicy::key_only()
        .forward_query_strings(["utm_source"])
        .forward_cookies(["session"])
        .forward_headers([HeaderName::from_static("x-http-method-override")]);
    let svc = CdnLayer::builder()
        .behavior("/api/*", Behavior::new().origin_request_policy(api))
        .build()
        .unwrap()
        .layer(origin);
    let fields = [
        ("cookie", "session=s1; other=o"),
        ("x-http-method-override", "PATCH"),
        ("x-original-url", "/elsewhere"),
    ];
    let res = send(&svc, get("/api/x?utm_source=a&gclid=g&id=1", &fields)).await;
    assert_eq!(
        text(&res),
        "/api/x?utm_source=a&id=1 cookie=session=s1 override=PATCH"
    );
    // Another behavior names nothing: the override stays at the edge.
    let res = send(&svc, get("/other", &fields)).await;
    assert_eq!(text(&res), "/other cookie=- override=-");
}

#[tokio::test]
async fn all_viewer_forwards_every_parameter_and_cookie_but_not_stripped_fields() {
    let (origin, seen) = echo();
    let svc = CdnLayer::builder()
        .default_behavior(
            Behavior::new()
                .key_policy(KeyPolicy::new().query_strings(QueryStrings::allow(["id"])))
                .origin_request_policy(OriginRequestPolicy::all_viewer()),
        )
        .build()
        .unwrap()
        .layer(origin);
    let res = send(
        &svc,
        get(
            "/p?id=1&utm_source=mail",
            &[
                ("cookie", "session=s1"),
                ("x-http-method-override", "DELETE"),
                ("x-forwarded-host", "evil.example"),
            ],
        ),
    )
    .await;
    assert_eq!(res.status, StatusCode::OK);
    assert_eq!(
        text(&res),
        "/p?id=1&utm_source=mail cookie=session=s1 override=-"
    );
    assert!(!seen.last_headers().contains_key("x-forwarded-host"));
}

#[tokio::test]
async fn trusted_forwarding_fields_are_read_before_they_go() {
    use std::net::SocketAddr;
    use std::sync::{Arc, Mutex};
    use tower_cdn::{ClientAddr, ViewerTls};

    type Saw = (Option<SocketAddr>, bool, bool);
    let saw: Arc<Mutex<Option<Saw>>> = Arc::default();
    let record = saw.clone();
    let origin = tower::service_fn(move |req: http::Request<()>| {
        *record.lock().unwrap() = Some((
            req.extensions().get::<ClientAddr>().map(|a| a.0),
            req.extensions().get::<ViewerTls>().is_some(),
            req.headers().contains_key("x-forwarded-for"),
        ));
        async { Ok::<_, std::convert::Infallible>(http::Response::new(String::new())) }
    });
    let svc = CdnLayer::builder()
        .trusted_proxies(["10.0.0.0/8"])
        .trust_forwarded_proto(true)
        .build()
        .unwrap()
        .layer(origin);
    let mut req = get(
        "/p",
        &[
            ("x-forwarded-for", "198.51.100.7, 10.0.0.9"),
            ("x-forwarded-proto", "https"),
        ],
    );
    req.extensions_mut()
        .insert(ClientAddr("10.0.0.2:4000".parse().unwrap()));
    send(&svc, req).await;
    let (client, tls, xff) = saw.lock().unwrap().take().unwrap();
    assert_eq!(client, Some("198.51.100.7:0".parse().unwrap()));
    assert!(tls, "the trusted proxy said https");
    assert!(!xff, "the field itself goes");
}
