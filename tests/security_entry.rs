//! Issue #16 items 3-7 end to end, over loopback through the edge server: each test sends the
//! attacker's request, then the innocent viewer's clean one, and asserts what the innocent
//! viewer gets. The origin records what it saw and answers like the origins these attacks
//! work against: it resolves dot segments and `%2e` itself, splits the query on `;` as well
//! as `&`, honours URL and method overrides and builds links from forwarding fields.

use std::{
    convert::Infallible,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Body as AxumBody,
    extract::State,
    http::{HeaderMap, Method, Uri},
    Router,
};
use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tower_cdn::server::{DistributionConfig, Server, ServerConfig, ServerError};
use tower_cdn::signing::{CustomPolicy, KeyGroup, Signer, SigningKey};
use tower_cdn::{
    AllowedMethods, Behavior, CachePolicy, CountryCode, Headers, KeyPolicy, OriginRequestPolicy,
};

const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// One request as the origin received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    target: String,
    headers: HeaderMap,
    body: Bytes,
}

#[derive(Default)]
struct Origin {
    seen: Mutex<Vec<Seen>>,
}

impl Origin {
    fn all(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.all().pop().expect("the origin saw no request")
    }

    fn saw_path(&self, prefix: &str) -> bool {
        self.all().iter().any(|s| s.target.starts_with(prefix))
    }
}

/// What a lenient origin makes of a path: `%2e` and `%2f` decoded, dot segments resolved,
/// empty segments dropped.
fn origin_path(raw: &str) -> String {
    let decoded = raw
        .replace("%2e", ".")
        .replace("%2E", ".")
        .replace("%2f", "/")
        .replace("%2F", "/");
    let mut out: Vec<&str> = Vec::new();
    for segment in decoded.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    format!("/{}", out.join("/"))
}

/// Query parameters split on `&` and `;`, as some frameworks do; the last value wins.
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split(['&', ';'])
        .filter_map(|p| p.split_once('='))
        .filter(|(n, _)| *n == name)
        .map(|(_, v)| v.to_owned())
        .next_back()
}

fn field(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn reply(status: StatusCode, cache: Option<&str>, body: String) -> Response<AxumBody> {
    let mut res = Response::new(AxumBody::from(body));
    *res.status_mut() = status;
    if let Some(cc) = cache {
        res.headers_mut()
            .insert("cache-control", HeaderValue::from_str(cc).unwrap());
    }
    res
}

const CACHEABLE: Option<&str> = Some("public, max-age=600");

async fn answer(
    State(origin): State<Arc<Origin>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<AxumBody> {
    origin.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        target: uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_owned(),
        headers: headers.clone(),
        body: body.clone(),
    });
    let path = origin_path(uri.path());
    let query = uri.query().unwrap_or("");
    let ok = StatusCode::OK;
    if path == "/reflect" {
        let x = param(query, "x").unwrap_or_default();
        let utm = param(query, "utm_source").unwrap_or_default();
        return reply(ok, CACHEABLE, format!("x={x} utm_source={utm}"));
    }
    if path.ends_with("/jsonp") {
        let callback = param(query, "callback").unwrap_or_default();
        return reply(ok, CACHEABLE, format!("{callback}({{}})"));
    }
    if path == "/echo-body" {
        let body = String::from_utf8_lossy(&body);
        return reply(ok, CACHEABLE, format!("body=[{body}]"));
    }
    if path == "/geo" {
        let country = field(&headers, "cloudfront-viewer-country");
        let country = country.as_deref().unwrap_or("none");
        return reply(ok, CACHEABLE, format!("country={country}"));
    }
    if path == "/account" {
        let session = field(&headers, "cookie")
            .and_then(|c| c.split("session=").nth(1).map(str::to_owned))
            .unwrap_or_else(|| "nobody".to_owned());
        // A personal page without any caching header, as most are.
        return reply(ok, None, format!("account of {session}"));
    }
    if path.starts_with("/static/") {
        return reply(ok, None, "static file".to_owned());
    }
    if path.starts_with("/members/") {
        return reply(ok, CACHEABLE, format!("members-only {path}"));
    }
    if path.starts_with("/api/") {
        let method_override = field(&headers, "x-http-method-override");
        let method_override = method_override.as_deref().unwrap_or("none");
        return reply(ok, Some("no-store"), format!("override={method_override}"));
    }
    if path.starts_with("/home") {
        return home(&path, &method, &headers);
    }
    reply(StatusCode::NOT_FOUND, CACHEABLE, "not found".to_owned())
}

/// A framework behind a proxy: URL and method overrides, links built from forwarding fields.
fn home(path: &str, method: &Method, headers: &HeaderMap) -> Response<AxumBody> {
    let target = field(headers, "x-original-url")
        .or_else(|| field(headers, "x-rewrite-url"))
        .unwrap_or_else(|| path.to_owned());
    if !target.starts_with("/home") {
        return reply(StatusCode::NOT_FOUND, CACHEABLE, "not found".to_owned());
    }
    let overridden = [
        "x-http-method-override",
        "x-http-method",
        "x-method-override",
    ]
    .iter()
    .find_map(|name| field(headers, name));
    if overridden.is_some_and(|m| m != method.as_str()) {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            CACHEABLE,
            "not allowed".to_owned(),
        );
    }
    let forwarded_host = field(headers, "forwarded").and_then(|f| {
        f.split(';')
            .find_map(|p| p.trim().strip_prefix("host="))
            .map(|h| h.trim_matches('"').to_owned())
    });
    let host = field(headers, "x-forwarded-host")
        .or_else(|| field(headers, "x-host"))
        .or(forwarded_host)
        .or_else(|| field(headers, "host"))
        .unwrap_or_default();
    let scheme = field(headers, "x-forwarded-scheme")
        .or_else(|| field(headers, "x-forwarded-proto"))
        .unwrap_or_else(|| "http".to_owned());
    let prefix = field(headers, "x-forwarded-prefix").unwrap_or_default();
    let port = field(headers, "x-forwarded-port").unwrap_or_else(|| "-".to_owned());
    let body = format!("<a href=\"{scheme}://{host}{prefix}/home\">home</a> port={port}");
    reply(StatusCode::OK, CACHEABLE, body)
}

async fn start_origin() -> (SocketAddr, Arc<Origin>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let origin = Arc::new(Origin::default());
    let app = Router::new().fallback(answer).with_state(origin.clone());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, origin)
}

struct Edge {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), ServerError>>,
}

impl Edge {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

const SIGNING_SEED: [u8; 32] = [7; 32];
static METHOD_OVERRIDE: HeaderName = HeaderName::from_static("x-http-method-override");
static VIEWER_COUNTRY: HeaderName = HeaderName::from_static("cloudfront-viewer-country");

/// The distribution every test runs against.
fn site() -> DistributionConfig {
    let key = SigningKey::ed25519(&SIGNING_SEED).unwrap().verifying_key();
    let members = KeyGroup::new().with_key("K1", key).unwrap();
    DistributionConfig::new("site")
        .behavior("/members/*", Behavior::new().trusted_key_group(members))
        // Cache everything under /static, forwarding what the viewer sent: the setup web
        // cache deception exploits.
        .behavior(
            "/static/*",
            Behavior::new()
                .cache_policy(CachePolicy::caching_optimized())
                .origin_request_policy(OriginRequestPolicy::all_viewer()),
        )
        .behavior(
            "/account",
            Behavior::new().origin_request_policy(OriginRequestPolicy::all_viewer()),
        )
        .behavior(
            "/open/*",
            Behavior::new().origin_request_policy(OriginRequestPolicy::all_viewer()),
        )
        .behavior(
            "/api/*",
            Behavior::new()
                .cache_policy(CachePolicy::caching_disabled())
                .origin_request_policy(
                    OriginRequestPolicy::key_only().forward_headers([METHOD_OVERRIDE.clone()]),
                ),
        )
        // Forms post here: every method is allowed, and GET/HEAD bodies are still refused.
        .behavior(
            "/echo-body",
            Behavior::new().allowed_methods(AllowedMethods::all()),
        )
        .behavior(
            "/geo",
            Behavior::new()
                .key_policy(KeyPolicy::new().headers(Headers::allow([VIEWER_COUNTRY.clone()]))),
        )
        .configure_layer(|builder| {
            // Loopback viewers are in Germany.
            builder.forward_viewer_country(|ip: Option<IpAddr>, _: &HeaderMap| {
                ip.filter(IpAddr::is_loopback)
                    .and_then(|_| CountryCode::new("DE").ok())
            })
        })
}

async fn start_edge(origin: SocketAddr) -> Edge {
    let mut config = ServerConfig::default();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.origin = Some(format!("http://{origin}").parse().unwrap());
    config.distributions = vec![site()];
    let server = Server::bind(config).await.unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge { addr, stop, task }
}

/// What a viewer got.
#[derive(Debug)]
struct Got {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Got {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn x_cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn send_with<B>(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, B>,
    req: Request<B>,
) -> Got
where
    B: Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

/// A GET over HTTP/1.1 with these fields.
async fn get(edge: SocketAddr, target: &str, headers: &[(&str, &str)]) -> Got {
    let mut req = Request::get(format!("http://{edge}{target}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    for (name, value) in headers {
        req.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    send_with(&Client::builder(TokioExecutor::new()).build_http(), req).await
}

#[tokio::test]
async fn item3_unkeyed_query_parameters_do_not_reach_the_origin() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr).await;

        // The attacker's tracking parameter carries a script; it is not in the key.
        let attack = get(edge.addr, "/reflect?x=1&utm_source=%3Cscript%3E", &[]).await;
        assert_eq!(attack.text(), "x=1 utm_source=");
        assert_eq!(
            origin.last().target,
            "/reflect?x=1",
            "what the key holds, no more"
        );

        let innocent = get(edge.addr, "/reflect?x=1", &[]).await;
        assert_eq!(innocent.x_cache(), "Hit from tower-cdn");
        assert_eq!(innocent.text(), "x=1 utm_source=");

        // `;` inside a "tracking" parameter hides a second callback from the key, for an
        // origin that splits on `;`: the parameter is kept in the key and the origin request,
        // under key-only and all-viewer alike.
        for prefix in ["", "/open"] {
            let attack = get(
                edge.addr,
                &format!("{prefix}/jsonp?callback=ok&utm_source=x;callback=evil"),
                &[],
            )
            .await;
            assert_eq!(
                attack.text(),
                "evil({})",
                "the attacker gets their own answer"
            );
            let innocent = get(edge.addr, &format!("{prefix}/jsonp?callback=ok"), &[]).await;
            assert_eq!(innocent.status, StatusCode::OK);
            assert_eq!(innocent.text(), "ok({})", "{prefix}");
        }
        edge.stop().await;
    })
    .await;
}

#[tokio::test]
async fn item4_unkeyed_forwarding_and_override_fields_do_not_reach_the_origin() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr).await;
        let clean = get(edge.addr, "/home/clean", &[]).await;
        assert_eq!(clean.status, StatusCode::OK);
        let host = edge.addr.to_string();
        assert_eq!(
            clean.text(),
            format!("<a href=\"http://{host}/home\">home</a> port=-")
        );

        let attacks = [
            ("x-original-url", "/nope"),
            ("x-rewrite-url", "/nope"),
            ("x-http-method-override", "DELETE"),
            ("x-http-method", "DELETE"),
            ("x-method-override", "DELETE"),
            ("forwarded", "for=203.0.113.9;host=evil.example;proto=https"),
            ("x-forwarded-host", "evil.example"),
            ("x-host", "evil.example"),
            ("x-forwarded-scheme", "javascript"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-port", "1337"),
            ("x-forwarded-prefix", "/evil"),
        ];
        for (i, (name, value)) in attacks.iter().enumerate() {
            let path = format!("/home/{i}");
            get(edge.addr, &path, &[(name, value)]).await;
            let seen = origin.last();
            assert!(
                seen.headers
                    .get_all(*name)
                    .iter()
                    .all(|v| !v.to_str().unwrap().contains(value)),
                "{name} reached the origin: {:?}",
                seen.headers
            );
            let innocent = get(edge.addr, &path, &[]).await;
            assert_eq!(innocent.x_cache(), "Hit from tower-cdn", "{name}");
            assert_eq!(
                (innocent.status, innocent.text()),
                (StatusCode::OK, clean.text()),
                "{name}: {value}"
            );
        }

        // The edge says who the viewer is; a viewer's X-Forwarded-For is replaced.
        get(
            edge.addr,
            "/home/xff",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
        let seen = origin.last();
        assert_eq!(
            field(&seen.headers, "x-forwarded-for").unwrap(),
            "127.0.0.1"
        );
        assert_eq!(
            field(&seen.headers, "forwarded").unwrap(),
            format!("for=127.0.0.1;proto=http;host=\"{host}\"")
        );
        assert_eq!(field(&seen.headers, "via").unwrap(), "1.1 tower-cdn");

        // A behavior that names the override field forwards it (and caches nothing).
        let api = get(
            edge.addr,
            "/api/items",
            &[("x-http-method-override", "PATCH")],
        )
        .await;
        assert_eq!(api.text(), "override=PATCH");
        edge.stop().await;
    })
    .await;
}

/// The frames of a [`streamed`] body.
type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, Infallible>>>;

/// A body of one chunk and unknown length: DATA frames without `content-length` over HTTP/2.
fn streamed(data: &'static str) -> StreamBody<Frames> {
    StreamBody::new(futures_util::stream::iter(vec![Ok(Frame::data(
        Bytes::from_static(data.as_bytes()),
    ))]))
}

#[tokio::test]
async fn item5_get_and_head_with_a_body_are_refused() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr).await;
        let url = format!("http://{}/echo-body", edge.addr);
        let h1 = Client::builder(TokioExecutor::new()).build_http();
        let h2 = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http();

        for method in [Method::GET, Method::HEAD] {
            let sized = Request::builder()
                .method(method.clone())
                .uri(&url)
                .body(Full::from("evil"))
                .unwrap();
            let got = send_with(&h1, sized).await;
            assert_eq!(
                got.status,
                StatusCode::BAD_REQUEST,
                "{method} Content-Length"
            );
            assert_eq!(got.x_cache(), "Error from tower-cdn");
            assert!(
                got.headers["cache-status"]
                    .to_str()
                    .unwrap()
                    .contains("detail=body-on-get"),
                "{:?}",
                got.headers
            );
        }
        // hyper's client sends no chunked body on a GET, so this one is written by hand.
        let chunked = raw(
            edge.addr,
            "GET /echo-body HTTP/1.1\r\nHost: shop.example\r\nTransfer-Encoding: chunked\r\n\
             Connection: close\r\n\r\n4\r\nevil\r\n0\r\n\r\n",
        )
        .await;
        assert!(chunked.starts_with("HTTP/1.1 400"), "{chunked}");
        assert!(
            chunked.contains("x-cache: Error from tower-cdn"),
            "{chunked}"
        );
        let undeclared = Request::get(&url).body(streamed("evil")).unwrap();
        let got = send_with(&h2, undeclared).await;
        assert_eq!(
            got.status,
            StatusCode::BAD_REQUEST,
            "HTTP/2 without content-length"
        );
        assert!(origin.all().is_empty(), "no body ever reached the origin");

        let innocent = get(edge.addr, "/echo-body", &[]).await;
        assert_eq!(innocent.text(), "body=[]");
        // A POST still carries its body.
        let post = Request::post(&url).body(Full::from("form")).unwrap();
        send_with(&h1, post).await;
        let seen = origin.last();
        assert_eq!(
            (seen.method, seen.body),
            (Method::POST, Bytes::from("form"))
        );
        edge.stop().await;
    })
    .await;
}

/// Writes `request` as it is and reads the answer until the edge closes the connection.
async fn raw(edge: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(edge).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn signer() -> Signer {
    Signer::new("K1", SigningKey::ed25519(&SIGNING_SEED).unwrap()).unwrap()
}

fn an_hour_from_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

#[tokio::test]
async fn item6_paths_are_normalised_before_behaviors_signatures_and_the_key() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr).await;
        let base = format!("http://{}", edge.addr);

        // An unsigned viewer tries to reach the signed behavior's object through other paths.
        for path in [
            "/public/../members/x",
            "/public/%2e%2e/members/x",
            "/public/%2E%2E/members/x",
            "//members/x",
            "/./members/x",
            "/members%2Fx",
            "/members%2fx",
        ] {
            let got = get(edge.addr, path, &[]).await;
            let expected = if path.to_ascii_lowercase().contains("%2f") {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::FORBIDDEN
            };
            assert_eq!(got.status, expected, "{path}");
            assert!(!got.text().contains("members-only"), "{path}");
        }
        assert!(!origin.saw_path("/members"), "{:?}", origin.all());

        // A signed viewer still gets it: a URL signed for a normal path verifies.
        let signed = signer().sign_canned_url(&format!("{base}/members/x"), an_hour_from_now());
        let got = get(edge.addr, signed.strip_prefix(&base).unwrap(), &[]).await;
        assert_eq!(
            (got.status, got.text()),
            (StatusCode::OK, "members-only /members/x".to_owned())
        );

        // A custom policy for /members/public/* does not cover /members/public/../vip/.
        let policy = CustomPolicy::builder(format!("{base}/members/public/*"))
            .expires(an_hour_from_now())
            .build()
            .unwrap();
        let public = signer().sign_custom_url(&format!("{base}/members/public/a.txt"), &policy);
        let got = get(edge.addr, public.strip_prefix(&base).unwrap(), &[]).await;
        assert_eq!(got.status, StatusCode::OK);
        let query = public.split_once('?').unwrap().1;
        let escape = format!("/members/public/../vip/secret.txt?{query}");
        let got = get(edge.addr, &escape, &[]).await;
        assert_eq!(got.status, StatusCode::FORBIDDEN);
        assert!(!origin.saw_path("/members/vip"), "{:?}", origin.all());

        // Web cache deception: a viewer with a session opens /static/../account ...
        let victim = get(
            edge.addr,
            "/static/../account",
            &[("cookie", "session=alice")],
        )
        .await;
        assert_eq!(victim.text(), "account of alice");
        // ... and a second viewer without the cookie asks for the same URL.
        for path in ["/static/../account", "/static/%2e%2e/account", "/account"] {
            let second = get(edge.addr, path, &[]).await;
            assert_eq!(second.text(), "account of nobody", "{path}");
        }
        edge.stop().await;
    })
    .await;
}

#[tokio::test]
async fn item7_connection_cannot_strip_a_field_the_edge_adds() {
    within(async {
        let (origin_addr, origin) = start_origin().await;
        let edge = start_edge(origin_addr).await;

        let attack = get(
            edge.addr,
            "/geo",
            &[
                ("connection", "CloudFront-Viewer-Country"),
                ("cloudfront-viewer-country", "US"),
            ],
        )
        .await;
        assert_eq!(attack.text(), "country=DE");
        let seen = origin.last();
        assert_eq!(
            field(&seen.headers, "cloudfront-viewer-country").as_deref(),
            Some("DE"),
            "the country reaches the origin"
        );

        let innocent = get(edge.addr, "/geo", &[]).await;
        assert_eq!(innocent.x_cache(), "Hit from tower-cdn");
        assert_eq!(innocent.text(), "country=DE");
        edge.stop().await;
    })
    .await;
}
