//! `OriginGroup`: failover on each trigger, only for replayable requests, once, and composed
//! under `CdnLayer`.

use std::{
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tower::{service_fn, util::BoxCloneService, Layer, Service, ServiceExt};
use tower_cdn::{BoxError, CdnLayer, OriginGroup, OriginTimedOut, OriginUsed};

type Origin = BoxCloneService<Request<Empty<Bytes>>, Response<Full<Bytes>>, BoxError>;

/// What a test origin does with each request.
#[derive(Clone, Copy)]
enum Behavior {
    Answer(StatusCode),
    Fail,
    Hang,
}

/// A test origin that counts its calls; `behavior` can change between requests.
#[derive(Clone)]
struct TestOrigin {
    name: &'static str,
    calls: Arc<AtomicUsize>,
    healthy: Arc<AtomicBool>,
    unhealthy: Behavior,
}

impl TestOrigin {
    /// An origin that answers 200 while healthy, and as `unhealthy` says otherwise.
    fn new(name: &'static str, unhealthy: Behavior, healthy: bool) -> Self {
        Self {
            name,
            calls: Arc::default(),
            healthy: Arc::new(AtomicBool::new(healthy)),
            unhealthy,
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn service(&self) -> Origin {
        let origin = self.clone();
        BoxCloneService::new(service_fn(move |req: Request<Empty<Bytes>>| {
            let origin = origin.clone();
            async move {
                origin.calls.fetch_add(1, Ordering::SeqCst);
                let behavior = if origin.healthy.load(Ordering::SeqCst) {
                    Behavior::Answer(StatusCode::OK)
                } else {
                    origin.unhealthy
                };
                match behavior {
                    Behavior::Answer(status) => {
                        let body = format!("{} {} {}", origin.name, req.method(), req.uri());
                        let mut res = Response::new(Full::from(body));
                        *res.status_mut() = status;
                        res.headers_mut().insert(
                            header::CACHE_CONTROL,
                            http::HeaderValue::from_static("max-age=60"),
                        );
                        Ok(res)
                    }
                    Behavior::Fail => Err::<_, BoxError>("connection refused".into()),
                    Behavior::Hang => std::future::pending().await,
                }
            }
        }))
    }
}

fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path).body(Empty::new()).unwrap()
}

async fn body_text(res: Response<Full<Bytes>>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

fn used(res: &Response<Full<Bytes>>) -> &OriginUsed {
    res.extensions().get::<OriginUsed>().expect("OriginUsed")
}

#[tokio::test]
async fn fails_over_on_each_status_in_the_set() {
    for status in [500, 502, 503, 504, 404, 403] {
        let status = StatusCode::from_u16(status).unwrap();
        let primary = TestOrigin::new("primary", Behavior::Answer(status), false);
        let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
        let group = OriginGroup::builder()
            .on_cloudfront_statuses()
            .build(primary.service(), secondary.service());

        let res = group.clone().oneshot(get("/obj")).await.unwrap();

        assert_eq!(res.status(), StatusCode::OK, "{status}");
        assert_eq!(used(&res).name(), "secondary");
        assert!(used(&res).is_secondary());
        assert_eq!(body_text(res).await, "secondary GET /obj");
        assert_eq!((primary.calls(), secondary.calls()), (1, 1));
        assert_eq!(group.metrics().failovers, 1);
    }
}

#[tokio::test]
async fn statuses_outside_the_set_are_returned() {
    // By default 404 is not in the set: the primary's answer stands.
    let primary = TestOrigin::new("primary", Behavior::Answer(StatusCode::NOT_FOUND), false);
    let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
    let group = OriginGroup::new(primary.service(), secondary.service());

    let res = group.oneshot(get("/missing")).await.unwrap();

    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(used(&res).name(), "primary");
    assert!(!used(&res).is_secondary());
    assert_eq!(secondary.calls(), 0);
}

#[tokio::test]
async fn fails_over_on_an_inner_error() {
    let primary = TestOrigin::new("primary", Behavior::Fail, false);
    let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
    let group = OriginGroup::builder()
        .names("bucket", "replica")
        .build(primary.service(), secondary.service());

    let res = group.oneshot(get("/obj")).await.unwrap();

    assert_eq!(used(&res).name(), "replica");
    assert_eq!(body_text(res).await, "secondary GET /obj");
}

#[tokio::test(start_paused = true)]
async fn fails_over_on_a_timeout() {
    let primary = TestOrigin::new("primary", Behavior::Hang, false);
    let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
    let group = OriginGroup::builder()
        .timeout(Duration::from_secs(3))
        .build(primary.service(), secondary.service());
    let started = tokio::time::Instant::now();

    let res = group.oneshot(get("/obj")).await.unwrap();

    assert_eq!(used(&res).name(), "secondary");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
}

#[tokio::test(start_paused = true)]
async fn a_secondary_that_times_out_too_is_an_error() {
    let primary = TestOrigin::new("primary", Behavior::Hang, false);
    let secondary = TestOrigin::new("secondary", Behavior::Hang, false);
    let group = OriginGroup::builder()
        .timeout(Duration::from_secs(1))
        .build(primary.service(), secondary.service());

    let err = group.oneshot(get("/obj")).await.unwrap_err();

    let timed_out = err.downcast_ref::<OriginTimedOut>().expect("a timeout");
    assert_eq!(timed_out.origin(), "secondary");
    assert_eq!((primary.calls(), secondary.calls()), (1, 1));
}

#[tokio::test]
async fn never_fails_over_twice() {
    let primary = TestOrigin::new("primary", Behavior::Answer(StatusCode::BAD_GATEWAY), false);
    let secondary = TestOrigin::new(
        "secondary",
        Behavior::Answer(StatusCode::SERVICE_UNAVAILABLE),
        false,
    );
    let group = OriginGroup::new(primary.service(), secondary.service());

    let res = group.oneshot(get("/obj")).await.unwrap();

    // The secondary's answer is final, even a status in the set.
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(used(&res).name(), "secondary");
    assert_eq!((primary.calls(), secondary.calls()), (1, 1));
}

#[tokio::test]
async fn head_and_options_fail_over_but_not_post_or_other_methods() {
    for method in [Method::HEAD, Method::OPTIONS] {
        let primary = TestOrigin::new("primary", Behavior::Fail, false);
        let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
        let group = OriginGroup::new(primary.service(), secondary.service());
        let req = Request::builder()
            .method(method.clone())
            .uri("/obj")
            .body(Empty::new())
            .unwrap();
        let res = group.oneshot(req).await.unwrap();
        assert_eq!(used(&res).name(), "secondary", "{method}");
    }

    for method in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
        let primary = TestOrigin::new(
            "primary",
            Behavior::Answer(StatusCode::SERVICE_UNAVAILABLE),
            false,
        );
        let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
        let group = OriginGroup::new(primary.service(), secondary.service());
        let req = Request::builder()
            .method(method.clone())
            .uri("/obj")
            .body(Empty::new())
            .unwrap();

        let res = group.clone().oneshot(req).await.unwrap();

        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{method}");
        assert_eq!(used(&res).name(), "primary");
        assert_eq!(secondary.calls(), 0, "{method}");
        assert_eq!(group.metrics().failovers, 0);
    }

    // An error from the primary is returned as it is.
    let primary = TestOrigin::new("primary", Behavior::Fail, false);
    let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
    let group = OriginGroup::new(primary.service(), secondary.service());
    let post = Request::post("/obj").body(Empty::new()).unwrap();
    assert!(group.oneshot(post).await.is_err());
    assert_eq!(secondary.calls(), 0);
}

#[tokio::test]
async fn a_recovered_primary_is_used_again() {
    let primary = TestOrigin::new("primary", Behavior::Fail, false);
    let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
    let mut group = OriginGroup::new(primary.service(), secondary.service());

    let res = group.ready().await.unwrap().call(get("/a")).await.unwrap();
    assert_eq!(used(&res).name(), "secondary");

    primary.healthy.store(true, Ordering::SeqCst);
    let res = group.ready().await.unwrap().call(get("/a")).await.unwrap();
    assert_eq!(used(&res).name(), "primary");
    assert_eq!(body_text(res).await, "primary GET /a");
    assert_eq!((primary.calls(), secondary.calls()), (2, 1));
    let metrics = group.metrics();
    assert_eq!((metrics.primary_answers, metrics.failovers), (1, 1));
}

#[tokio::test]
async fn under_the_cache_the_secondary_answer_is_stored() {
    let primary = TestOrigin::new(
        "primary",
        Behavior::Answer(StatusCode::SERVICE_UNAVAILABLE),
        false,
    );
    let secondary = TestOrigin::new("secondary", Behavior::Fail, true);
    let group = OriginGroup::new(primary.service(), secondary.service());
    let edge = CdnLayer::new().layer(group);

    let first = edge.clone().oneshot(get("/obj")).await.unwrap();
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(first.headers()["x-cache"], "Miss from tower-cdn");
    // The miss still says which origin answered; the hit below was no origin's.
    let origin = first.extensions().get::<OriginUsed>().expect("OriginUsed");
    assert_eq!((origin.name(), origin.is_secondary()), ("secondary", true));
    let body = first.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "secondary GET /obj");

    let second = edge.oneshot(get("/obj")).await.unwrap();
    assert_eq!(second.headers()["x-cache"], "Hit from tower-cdn");
    assert!(second.extensions().get::<OriginUsed>().is_none());
    let body = second.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "secondary GET /obj");
    // The hit reached neither origin.
    assert_eq!((primary.calls(), secondary.calls()), (1, 1));
}

#[tokio::test]
async fn a_group_of_plain_services_works_with_any_default_body() {
    // `String` bodies: `Default` gives the empty replay body.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let primary = service_fn(move |_req: Request<String>| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Err::<Response<String>, _>(std::io::Error::other("down")) }
    });
    let secondary = service_fn(|req: Request<String>| async move {
        Ok::<_, Infallible>(Response::new(req.into_body()))
    });
    let group = OriginGroup::new(primary, secondary);

    let res = group
        .oneshot(Request::get("/").body(String::new()).unwrap())
        .await
        .unwrap();

    assert_eq!(res.into_body(), "");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
