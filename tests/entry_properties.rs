//! Properties of entry at the layer boundary (issue #16): whatever path, query and fields a
//! viewer sends, the layer never panics, the behavior is the one the origin's (normalised)
//! path selects, the origin never sees a field entry strips, and two requests that share a
//! cache key make identical origin requests.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::sample::select;
use tower::{Layer, ServiceExt};
use tower_cdn::{
    Behavior, CachePolicy, CdnLayer, CdnService, Cookies, Headers, KeyPolicy, TargetOrigin,
};

/// What the origin was sent: the request target, the fields, the behavior's target.
#[derive(Clone, Debug, PartialEq)]
struct Sent {
    target: String,
    headers: HeaderMap,
    behavior: String,
}

type Log = Arc<Mutex<Vec<Sent>>>;
type Origin = tower::util::BoxCloneSyncService<Request<()>, Response<String>, Infallible>;

fn edge() -> (CdnService<Origin>, Log) {
    let log = Log::default();
    let seen = log.clone();
    let origin = tower::service_fn(move |req: Request<()>| {
        seen.lock().unwrap().push(Sent {
            target: req
                .uri()
                .path_and_query()
                .map_or_else(String::new, |pq| pq.as_str().to_owned()),
            headers: req.headers().clone(),
            behavior: req
                .extensions()
                .get::<TargetOrigin>()
                .map_or("none", TargetOrigin::name)
                .to_owned(),
        });
        let mut res = Response::new("object".to_owned());
        res.headers_mut()
            .insert("cache-control", HeaderValue::from_static("max-age=600"));
        async move { Ok::<_, Infallible>(res) }
    });
    let key = || {
        KeyPolicy::new()
            .headers(Headers::allow([HeaderName::from_static("accept-language")]))
            .cookies(Cookies::allow(["theme"]))
    };
    let behavior = |name: &str| {
        Behavior::new()
            .key_policy(key())
            .target_origin(name.to_owned())
    };
    let layer = CdnLayer::builder()
        .behavior("/members/*", behavior("members"))
        .behavior(
            "/static/*",
            behavior("static").cache_policy(CachePolicy::caching_optimized()),
        )
        .behavior("/a/b*", behavior("ab"))
        .default_behavior(behavior("default"))
        .build()
        .unwrap();
    (layer.layer(Origin::new(origin)), log)
}

/// The behavior a normalised path selects, by the patterns above.
fn behavior_for(path: &str) -> &'static str {
    if path.starts_with("/members/") {
        "members"
    } else if path.starts_with("/static/") {
        "static"
    } else if path.starts_with("/a/b") {
        "ab"
    } else {
        "default"
    }
}

/// A path in normal form: no empty or dot segments, no `\`, escapes in upper case and only
/// for characters that need one (never `/`, `\` or NUL).
fn is_normal(path: &str) -> bool {
    if !path.starts_with('/') || path.contains('\\') {
        return false;
    }
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let segments_ok = segments
        .iter()
        .enumerate()
        .all(|(i, s)| !matches!(*s, "." | "..") && (!s.is_empty() || i == last));
    let bytes = path.as_bytes();
    let escapes_ok = bytes.iter().enumerate().all(|(i, &b)| {
        if b != b'%' {
            return true;
        }
        let Some(hex) = bytes.get(i + 1..i + 3) else {
            return false;
        };
        let Ok(value) = u8::from_str_radix(std::str::from_utf8(hex).unwrap_or("zz"), 16) else {
            return false;
        };
        hex.iter().all(|h| !h.is_ascii_lowercase())
            && !(value.is_ascii_alphanumeric() || b"-._~/\\\0".contains(&value))
    });
    segments_ok && escapes_ok
}

/// Fields the origin must never see from a viewer.
fn stripped(name: &str) -> bool {
    name.starts_with("x-forwarded-")
        || name.starts_with("cloudfront-")
        || [
            "forwarded",
            "x-real-ip",
            "true-client-ip",
            "x-original-url",
            "x-rewrite-url",
            "x-http-method-override",
            "connection",
            "keep-alive",
            "te",
            "transfer-encoding",
            "upgrade",
            "proxy-authorization",
        ]
        .contains(&name)
}

/// Segments that make a servable path, normal or not.
const SEGMENTS: &[&str] = &[
    "a", "b", "bc", "static", "members", "x", "..", ".", "", "%2e", "%2E%2e", ".%2E", "%41", "%7e",
    "%7E", "a%62", "~", "%20", "%3a", "%C3%A9", ";", "a;b", "%252e",
];

/// Segments the edge refuses.
const HOSTILE: &[&str] = &["%2f", "%5c", "\\", "%zz", "%", "%0", "..;", ".;x", "%00"];

const PARAMS: &[&str] = &[
    "a=1",
    "b=2",
    "a=3",
    "utm_source=x",
    "utm_source=x;callback=evil",
    "callback=ok",
    "gclid=1%26b=2",
    "fbclid=q",
    "theme=t",
    "",
    "=",
    "%26",
    "a=%2e%2e/",
];

const NAMES: &[&str] = &[
    "accept-language",
    "cookie",
    "connection",
    "keep-alive",
    "te",
    "upgrade",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-prefix",
    "forwarded",
    "x-original-url",
    "x-rewrite-url",
    "x-http-method-override",
    "true-client-ip",
    "x-real-ip",
    "cloudfront-viewer-country",
    "proxy-authorization",
];

const VALUES: &[&str] = &[
    "de",
    "en-GB, en;q=0.8",
    "theme=dark",
    "theme=light; session=s1",
    "session=s2",
    "theme=dark; theme=light",
    "/nope",
    "DELETE",
    "evil.example",
    "keep-alive",
    "accept-language",
    "x-forwarded-for, te",
    "Cookie",
    "host",
    "upgrade",
    "1.2.3.4",
    "0",
    "1",
];

const HOSTS: &[&str] = &["a.example", "A.Example", "b.example"];

#[derive(Clone, Debug)]
struct Viewer {
    path: String,
    query: Option<String>,
    host: &'static str,
    fields: Vec<(&'static str, &'static str)>,
}

impl Viewer {
    fn request(&self) -> Option<Request<()>> {
        let target = match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        };
        let mut req = Request::get(target).body(()).ok()?;
        req.headers_mut()
            .insert("host", HeaderValue::from_static(self.host));
        for (name, value) in &self.fields {
            req.headers_mut()
                .append(*name, HeaderValue::from_static(value));
        }
        Some(req)
    }
}

fn path() -> impl Strategy<Value = String> {
    let join = |s: Vec<&str>| format!("/{}", s.join("/"));
    prop_oneof![
        6 => prop::collection::vec(select(SEGMENTS), 0..7).prop_map(join),
        1 => prop::collection::vec(select([SEGMENTS, HOSTILE].concat()), 1..7).prop_map(join),
        1 => prop::collection::vec(select(SEGMENTS), 200..600).prop_map(join),
        1 => "/[ -~]{0,40}",
    ]
}

fn query() -> impl Strategy<Value = Option<String>> {
    prop::option::of(prop::collection::vec(select(PARAMS), 0..6).prop_map(|p| p.join("&")))
}

fn viewer() -> impl Strategy<Value = Viewer> {
    (
        path(),
        query(),
        select(HOSTS),
        prop::collection::vec((select(NAMES), select(VALUES)), 0..8),
        prop::option::weighted(0.1, select(&["0", "1", "x"][..])),
    )
        .prop_map(|(path, query, host, mut fields, length)| {
            if let Some(length) = length {
                fields.push(("content-length", length));
            }
            Viewer {
                path,
                query,
                host,
                fields,
            }
        })
}

/// Changes a viewer should not be able to make to the origin request of a cached object.
#[derive(Clone, Debug)]
enum Noise {
    Param(&'static str),
    Field(&'static str, &'static str),
    DotSegment,
    DoubleSlash,
    EncodeFirstLetter { lower: bool },
    HostCase,
}

fn noise() -> impl Strategy<Value = Noise> {
    prop_oneof![
        select(&["utm_source=zz", "fbclid=q", "gclid=y"][..]).prop_map(Noise::Param),
        (select(NAMES), select(VALUES)).prop_map(|(n, v)| Noise::Field(n, v)),
        Just(Noise::DotSegment),
        Just(Noise::DoubleSlash),
        any::<bool>().prop_map(|lower| Noise::EncodeFirstLetter { lower }),
        Just(Noise::HostCase),
    ]
}

fn with_noise(viewer: &Viewer, noise: &[Noise]) -> Viewer {
    let mut v = viewer.clone();
    for n in noise {
        match n {
            Noise::Param(p) => {
                v.query = Some(match v.query.take() {
                    Some(q) if !q.is_empty() => format!("{q}&{p}"),
                    _ => (*p).to_owned(),
                });
            }
            Noise::Field(name, value) => v.fields.push((name, value)),
            Noise::DotSegment => v.path = format!("/.{}", v.path),
            Noise::DoubleSlash => v.path = format!("/{}", v.path),
            Noise::EncodeFirstLetter { lower } => {
                if let Some(i) = v.path.find(|c: char| c.is_ascii_alphabetic()) {
                    let byte = v.path.as_bytes()[i];
                    let hex = if *lower {
                        format!("%{byte:02x}")
                    } else {
                        format!("%{byte:02X}")
                    };
                    v.path.replace_range(i..=i, &hex);
                }
            }
            Noise::HostCase => {
                v.host = if v.host == "a.example" {
                    "A.Example"
                } else {
                    v.host
                }
            }
        }
    }
    v
}

const WAIT: Duration = Duration::from_secs(10);

/// Sends `req`, reads the whole body, and returns the status and `X-Cache`.
async fn send(svc: &CdnService<Origin>, req: Request<()>) -> (StatusCode, String) {
    let res = tokio::time::timeout(WAIT, svc.clone().oneshot(req))
        .await
        .expect("the layer answered")
        .unwrap();
    let status = res.status();
    let x_cache = res
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    tokio::time::timeout(WAIT, res.into_body().collect())
        .await
        .expect("the body ended")
        .unwrap();
    (status, x_cache)
}

/// Checks what one origin request carried.
fn check_sent(sent: &Sent) -> Result<(), TestCaseError> {
    let path = sent.target.split('?').next().unwrap_or("");
    prop_assert!(
        is_normal(path),
        "the origin got an unnormalised path: {}",
        sent.target
    );
    prop_assert_eq!(
        &sent.behavior,
        behavior_for(path),
        "behavior for {}",
        sent.target
    );
    // An HTTP/1.1 upgrade keeps `Connection: upgrade` and `Upgrade`, and nothing else.
    let upgrade = sent
        .headers
        .get_all("connection")
        .iter()
        .eq(["upgrade"].iter())
        && sent.headers.get_all("upgrade").iter().count() == 1;
    for name in sent.headers.keys() {
        let kept = upgrade && matches!(name.as_str(), "connection" | "upgrade");
        prop_assert!(
            kept || !stripped(name.as_str()),
            "{} reached the origin",
            name
        );
    }
    for cookie in sent.headers.get_all("cookie") {
        let cookie = cookie.to_str().unwrap();
        prop_assert!(
            cookie.split("; ").all(|pair| pair.starts_with("theme=")),
            "an unkeyed cookie reached the origin: {}",
            cookie
        );
    }
    if let Some(host) = sent.headers.get("host") {
        prop_assert_eq!(
            host.to_str().unwrap(),
            host.to_str().unwrap().to_ascii_lowercase()
        );
    }
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_origin_sees_only_what_the_key_accounts_for(
        first in viewer(),
        second in prop_oneof![
            3 => (Just(()), prop::collection::vec(noise(), 1..4)).prop_map(|(_, n)| Some(n)),
            1 => Just(None),
        ],
        other in viewer(),
    ) {
        let second = match &second {
            Some(noise) => with_noise(&first, noise),
            None => other,
        };
        let (Some(a), Some(b)) = (first.request(), second.request()) else {
            // Not a valid request target: nothing reaches the layer.
            return Ok(());
        };
        let b_again = second.request().unwrap();
        runtime().block_on(async {
            let (svc, log) = edge();
            let (status, _) = send(&svc, a).await;
            prop_assert!(status.is_success() || status == StatusCode::BAD_REQUEST, "{}", status);
            let first_sent = log.lock().unwrap().first().cloned();
            if let Some(sent) = &first_sent {
                check_sent(sent)?;
            }
            let (_, x_cache) = send(&svc, b).await;
            let sent_before = log.lock().unwrap().len();
            if x_cache.starts_with("Hit") {
                // Same key: what the second viewer's request makes of the origin request, on
                // an edge with nothing stored, is what the first one's was.
                let (fresh, fresh_log) = edge();
                send(&fresh, b_again).await;
                let second_sent = fresh_log.lock().unwrap().first().cloned();
                prop_assert_eq!(second_sent, first_sent, "one key, two origin requests");
            } else if let Some(sent) = log.lock().unwrap().get(sent_before.saturating_sub(1)) {
                check_sent(sent)?;
            }
            Ok(())
        })?;
    }
}
