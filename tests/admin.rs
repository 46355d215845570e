//! The admin router: bearer-token auth, purge requests, stats and metrics.

mod support;

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use support::*;
use tower::{Layer, ServiceExt};
use tower_cdn::{admin, CdnLayer};

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let res = router
        .clone()
        .oneshot(req.body(Body::from(body.to_owned())).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn only_the_right_token_changes_anything() {
    let (origin, _) = origin(|_| response(&[("cache-control", "max-age=60")], "x"));
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    send(&svc, get("/a", &[])).await;
    let router = admin::router(layer.clone(), "s3cret");
    let purge = r#"{"paths": ["/a"]}"#;
    assert_eq!(
        call(&router, "POST", "/purge", None, purge).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&router, "POST", "/purge", Some("wrong"), purge)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&router, "GET", "/stats", Some("s3cre"), "").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(&svc, get("/a", &[])).await.x_cache(),
        "Hit from tower-cdn",
        "nothing changed"
    );
    let (status, body) = call(&router, "POST", "/purge", Some("s3cret"), purge).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, r#"{"purged":1}"#));
    assert_eq!(
        send(&svc, get("/a", &[])).await.x_cache(),
        "Miss from tower-cdn"
    );
}

#[tokio::test]
async fn bad_purge_bodies_get_a_clear_400() {
    let router = admin::router(CdnLayer::new(), "t");
    let many_tags = format!(r#"{{"tags": [{}]}}"#, vec!["\"x\""; 5_000].join(","));
    for (body, says) in [
        ("{not json", "malformed JSON"),
        (r#"{"patterns": [""]}"#, "items must be"),
        (r#"{}"#, "at least one"),
        (r#"{"paths": ["no-slash"]}"#, "start with '/'"),
        (r#"{"paths": [], "extra": 1}"#, "malformed JSON"),
        (many_tags.as_str(), "at most 1000"),
    ] {
        let (status, text) = call(&router, "POST", "/purge", Some("t"), body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body:.40}");
        assert!(text.contains(says), "{text}");
    }
}

#[tokio::test]
async fn stats_and_metrics_report_the_counters() {
    let (origin, _) = origin(|_| response(&[("cache-control", "max-age=60")], "x"));
    let layer = CdnLayer::new();
    let svc = layer.clone().layer(origin);
    send(&svc, get("/a", &[])).await;
    send(&svc, get("/a", &[])).await;
    let router = admin::router(layer, "t");
    let (status, stats) = call(&router, "GET", "/stats", Some("t"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        stats.contains(r#""hits":1"#) && stats.contains(r#""misses":1"#),
        "{stats}"
    );
    let (status, text) = call(&router, "GET", "/metrics", Some("t"), "").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.contains("tower_cdn_requests_total{result=\"Hit\"} 1"),
        "{text}"
    );
}
