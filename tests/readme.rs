//! The README's examples and claims, held to the code: the quickstart's dependencies, what
//! `.ci/run` runs, every flag the README names, the configuration file examples loaded by the
//! server's own loader and served on loopback, and the purge example's answer. A README
//! block a test reads is marked `<!-- readme-test: NAME -->`; the quickstart itself is the
//! crate-root doc test.

use std::{
    collections::BTreeSet,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, response::IntoResponse, Router};
use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::{
    client::legacy::{connect::HttpConnector, Client},
    rt::TokioExecutor,
};
use tokio::{net::TcpListener, sync::oneshot};
use tower_cdn::server::{Cli, Server, ServerConfig};

const README: &str = include_str!("../README.md");
const MANIFEST: &str = include_str!("../Cargo.toml");
const CI_SCRIPT: &str = include_str!("../.ci/run");
const BINARY: &str = env!("CARGO_BIN_EXE_tower-cdn");

/// Upper bound for any one test, so that a hang fails instead of blocking CI.
const TEST_DEADLINE: Duration = Duration::from_secs(20);

async fn within<F: Future>(test: F) -> F::Output {
    tokio::time::timeout(TEST_DEADLINE, test)
        .await
        .expect("test exceeded its deadline")
}

/// The fenced block right after `<!-- readme-test: NAME -->`, without its fences.
fn block(name: &str) -> &'static str {
    let marker = format!("<!-- readme-test: {name} -->");
    let mut found = README.match_indices(&marker);
    let (at, _) = found
        .next()
        .unwrap_or_else(|| panic!("README has no {marker}"));
    assert!(found.next().is_none(), "README has {marker} twice");
    let after = README[at + marker.len()..].trim_start_matches('\n');
    assert!(
        after.starts_with("```"),
        "{marker} is not followed by a block"
    );
    let body = &after[after.find('\n').unwrap() + 1..];
    let end = body
        .find("\n```")
        .unwrap_or_else(|| panic!("{marker}: unterminated block"));
    &body[..=end]
}

/// Whitespace runs as one space.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn quickstart_dependencies_name_every_crate_it_uses() {
    let listed: toml::Table = toml::from_str(block("quickstart-dependencies")).unwrap();
    let listed = listed["dependencies"].as_table().unwrap();
    let code = block("quickstart");

    let mut used = BTreeSet::new();
    for line in code.lines() {
        let line = line.trim_start_matches("# ").trim();
        if let Some(path) = line.strip_prefix("use ") {
            let root = path.split([':', ';', '{']).next().unwrap();
            used.insert(root.replace('_', "-"));
        }
    }
    if code.contains("#[tokio::main") {
        used.insert("tokio".to_owned());
    }
    let names: BTreeSet<String> = listed.keys().cloned().collect();
    assert!(
        used.len() >= 5,
        "the quickstart's crates were not found: {used:?}"
    );
    assert_eq!(
        names, used,
        "listed dependencies vs crates the quickstart uses"
    );

    // Each version is one this crate builds its own doc test with (`0.8` for `0.8.9`).
    let manifest: toml::Table = toml::from_str(MANIFEST).unwrap();
    let ours = manifest["package"]["version"].as_str().unwrap();
    let built_with = |name: &str| -> String {
        if name == "tower-cdn" {
            return ours.to_owned();
        }
        let spec = ["dev-dependencies", "dependencies"]
            .iter()
            .find_map(|section| manifest[*section].get(name))
            .unwrap_or_else(|| panic!("{name} is not a dependency of this crate"));
        match spec {
            toml::Value::String(version) => version.clone(),
            spec => spec["version"].as_str().unwrap().to_owned(),
        }
    };
    let features = |name: &str| -> Vec<&str> {
        listed[name]
            .get("features")
            .and_then(toml::Value::as_array)
            .map(|list| list.iter().filter_map(toml::Value::as_str).collect())
            .unwrap_or_default()
    };
    for (name, spec) in listed {
        let version = match spec {
            toml::Value::String(version) => version.as_str(),
            spec => spec["version"].as_str().unwrap(),
        };
        let ours = built_with(name);
        let compatible = ours.split('.').zip(version.split('.')).all(|(a, b)| a == b);
        assert!(compatible, "{name} = \"{version}\", built with {ours}");
    }
    // What the code needs from each: `ServiceExt` is tower's `util`; `#[tokio::main]` needs
    // the macros and a runtime.
    assert!(features("tower").contains(&"util"), "tower needs `util`");
    let tokio = features("tokio");
    assert!(tokio.contains(&"macros"), "tokio needs `macros`");
    assert!(
        tokio.contains(&"rt-multi-thread") || tokio.contains(&"rt"),
        "tokio needs a runtime"
    );
}

#[test]
fn ci_script_runs_what_the_readme_says() {
    let paragraph = README
        .split("\n\n")
        .find(|p| p.contains("`bash .ci/run`"))
        .expect("README says what .ci/run does");
    let mut commands: Vec<String> = paragraph
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|span| span.starts_with("cargo "))
        .map(squeeze)
        .collect();
    assert!(
        paragraph.contains("then runs that test command"),
        "{paragraph}"
    );
    let test_command = README
        .lines()
        .find(|line| line.starts_with("cargo test"))
        .expect("the README's test command");
    commands.push(squeeze(test_command.split(" #").next().unwrap()));
    assert_eq!(commands.len(), 3, "{commands:?}");
    let script: Vec<String> = CI_SCRIPT.lines().map(squeeze).collect();
    for command in &commands {
        assert!(script.contains(command), ".ci/run does not run `{command}`");
    }
}

/// The text in the README's inline code spans and shell blocks: commands, flags, settings.
fn code_snippets() -> Vec<String> {
    let mut snippets = Vec::new();
    let mut prose = String::new();
    let mut fence: Option<String> = None;
    let mut command = String::new();
    for line in README.lines() {
        if let Some(info) = line.strip_prefix("```") {
            fence = match fence {
                Some(_) => None,
                None => Some(info.to_owned()),
            };
            continue;
        }
        match fence.as_deref() {
            Some("sh") => {
                let line = line.split(" #").next().unwrap();
                command.push_str(line.trim_end_matches('\\'));
                command.push(' ');
                if !line.ends_with('\\') {
                    snippets.push(std::mem::take(&mut command));
                }
            }
            Some(_) => {}
            None => {
                prose.push_str(line);
                prose.push('\n');
            }
        }
    }
    snippets.extend(prose.split('`').skip(1).step_by(2).map(squeeze));
    snippets
}

/// Whose flags a snippet names: `None` for another program's (cargo's, curl's), else the
/// `tower-cdn` subcommand (`""` for the server itself).
fn flags_of(snippet: &str) -> Option<(&'static str, Vec<String>)> {
    let words: Vec<&str> = snippet
        .split_whitespace()
        .skip_while(|word| word.contains('=') && !word.starts_with('-'))
        .collect();
    let (command, words) = match words.as_slice() {
        ["tower-cdn", "sign", rest @ ..] => ("sign", rest),
        ["tower-cdn", "public-key", rest @ ..] => ("public-key", rest),
        ["tower-cdn", rest @ ..] => ("", rest),
        // `cargo run [-- FLAGS]` runs the server (without `--example`); its flags follow `--`.
        ["cargo", "run", rest @ ..] if !rest.contains(&"--example") => {
            let server = rest
                .iter()
                .position(|w| *w == "--")
                .map_or(&[][..], |at| &rest[at + 1..]);
            ("", server)
        }
        [first, ..] if first.starts_with("--") => ("", &words[..]),
        _ => return None,
    };
    let flags = words
        .iter()
        .map(|word| word.trim_start_matches('['))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(|word| {
            word.chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect()
        })
        .collect();
    Some((command, flags))
}

fn help_flags(subcommand: &str) -> BTreeSet<String> {
    let mut command = Command::new(BINARY);
    if !subcommand.is_empty() {
        command.arg(subcommand);
    }
    let output = command.arg("--help").output().expect("the binary runs");
    assert!(output.status.success(), "{subcommand} --help failed");
    let help = String::from_utf8(output.stdout).unwrap();
    help.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .filter(|word| word.starts_with("--") && word.len() > 2)
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_flag_the_readme_names_exists() {
    let mut named: Vec<(&str, String)> = Vec::new();
    for snippet in code_snippets() {
        if let Some((command, flags)) = flags_of(&snippet) {
            named.extend(flags.into_iter().map(|flag| (command, flag)));
        }
    }
    for command in ["", "sign", "public-key"] {
        let known = help_flags(command);
        let ours: BTreeSet<&str> = named
            .iter()
            .filter(|(c, _)| *c == command)
            .map(|(_, flag)| flag.as_str())
            .collect();
        // The README documents the server's flags and both tasks': none of this can pass empty.
        let least = if command.is_empty() { 20 } else { 2 };
        assert!(ours.len() >= least, "`{command}`: only {ours:?} found");
        let unknown: Vec<&&str> = ours.iter().filter(|f| !known.contains(**f)).collect();
        assert!(
            unknown.is_empty(),
            "the README names `tower-cdn {command}` flags that do not exist: {unknown:?}"
        );
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("tower-cdn-readme-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Loads a configuration file as the binary does (`--config FILE`). The test runs in the
/// crate's directory, not the file's: relative paths in it must be taken from its own.
fn load(file: &Path) -> ServerConfig {
    let file = file.to_str().unwrap();
    Cli::try_parse_from(["tower-cdn", "--config", file])
        .unwrap()
        .into_config()
        .unwrap_or_else(|err| panic!("the README's configuration does not load: {err}"))
}

/// One request as an origin received it.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
}

/// An origin's answer to a path: the status and the fields to send with it.
type Answer = fn(&str) -> (StatusCode, Vec<(&'static str, &'static str)>);

/// A loopback origin that records what it receives and answers with `answer`.
#[derive(Clone)]
struct Origin {
    name: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
    answer: Answer,
}

impl Origin {
    async fn start(name: &'static str, answer: Answer) -> (SocketAddr, Self) {
        let origin = Self {
            name,
            seen: Arc::default(),
            answer,
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new()
            .fallback(Self::handle)
            .with_state(origin.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (addr, origin)
    }

    async fn handle(
        State(origin): State<Self>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
    ) -> impl IntoResponse {
        let path = uri.path().to_owned();
        let (status, fields) = (origin.answer)(&path);
        let mut headers_out = HeaderMap::new();
        for (name, value) in fields {
            headers_out.append(
                header::HeaderName::from_static(name),
                header::HeaderValue::from_static(value),
            );
        }
        let body = format!("{} {method} {path}", origin.name);
        origin.seen.lock().unwrap().push(Seen {
            method,
            path,
            headers,
        });
        (status, headers_out, body)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn cacheable(_: &str) -> (StatusCode, Vec<(&'static str, &'static str)>) {
    (StatusCode::OK, vec![("cache-control", "max-age=60")])
}

/// A running edge, stopped on drop of `stop`.
struct Edge {
    addr: SocketAddr,
    admin: Option<SocketAddr>,
    _stop: oneshot::Sender<()>,
}

async fn start_edge(config: ServerConfig) -> Edge {
    let server = Server::bind(config).await.unwrap();
    let (addr, admin) = (server.local_addr(), server.admin_addr());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(server.serve(async {
        let _ = stopped.await;
    }));
    Edge {
        addr,
        admin,
        _stop: stop,
    }
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `method path` to `addr` with `headers` and reads the whole response.
async fn send(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Response<Bytes> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::from(body.to_owned())).unwrap();
    let response = client().request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Response::from_parts(parts, body.collect().await.unwrap().to_bytes())
}

fn x_cache(response: &Response<Bytes>) -> &str {
    response.headers()["x-cache"].to_str().unwrap()
}

/// Points the origin named `name` at `addr`, keeping its other settings.
fn repoint(config: &mut ServerConfig, name: &str, addr: SocketAddr) {
    let origin = config
        .origins
        .iter_mut()
        .find(|origin| origin.name == name)
        .unwrap_or_else(|| panic!("the README's configuration has no origin `{name}`"));
    origin.url = format!("http://{addr}").parse().unwrap();
    if origin.http_port.is_some() {
        origin.http_port = Some(addr.port());
    }
}

#[tokio::test]
async fn the_config_file_example_loads_and_serves_as_it_says() {
    within(async {
        let dir = TempDir::new("config");
        dir.write("h1.secret", [7u8; 32]);
        let mut config = load(&dir.write("edge.toml", block("config-file")));

        let (site_addr, site) = Origin::start("site", |path| match path {
            "/public/gone" => (StatusCode::NOT_FOUND, vec![]),
            _ => cacheable(path),
        })
        .await;
        let (replica_addr, replica) = Origin::start("replica", cacheable).await;
        let (api_addr, api) = Origin::start("api", cacheable).await;
        repoint(&mut config, "site", site_addr);
        repoint(&mut config, "site-replica", replica_addr);
        repoint(&mut config, "api", api_addr);
        config.listen = "127.0.0.1:0".parse().unwrap();
        let edge = start_edge(config).await;
        let host = [("host", "www.example")];

        // The default behavior: the root object, through the origin's path, host and
        // headers, cached ("optimized").
        let first = send(edge.addr, Method::GET, "/", &host, "").await;
        assert_eq!(first.status(), StatusCode::OK);
        assert_eq!(x_cache(&first), "Miss from tower-cdn");
        let seen = site.seen();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].path, "/public/index.html");
        assert_eq!(seen[0].headers["host"], "bucket.example");
        assert_eq!(seen[0].headers["x-origin-verify"], "s3cret");
        let again = send(edge.addr, Method::GET, "/", &host, "").await;
        assert_eq!(x_cache(&again), "Hit from tower-cdn");
        assert_eq!(again.body(), first.body());

        // It serves GET and HEAD only: a POST is refused at the edge.
        let post = send(edge.addr, Method::POST, "/", &host, "a=1").await;
        assert_eq!(post.status(), StatusCode::FORBIDDEN);
        assert_eq!(site.seen().len(), 1, "a POST reached the origin");

        // The origin group fails over on 404.
        let gone = send(edge.addr, Method::GET, "/gone", &host, "").await;
        assert_eq!(gone.status(), StatusCode::OK);
        assert_eq!(gone.body(), "replica GET /gone");

        // /api/*: every method, never cached.
        for method in [Method::GET, Method::GET, Method::POST, Method::DELETE] {
            let res = send(edge.addr, method.clone(), "/api/items", &host, "").await;
            assert_eq!(res.status(), StatusCode::OK, "{method}");
        }
        let methods: Vec<Method> = api.seen().into_iter().map(|s| s.method).collect();
        assert_eq!(
            methods,
            [Method::GET, Method::GET, Method::POST, Method::DELETE]
        );

        // /members/* needs a signature; KP is blocked by the viewer-country header.
        let members = send(edge.addr, Method::GET, "/members/a", &host, "").await;
        assert_eq!(members.status(), StatusCode::FORBIDDEN);
        let blocked = [("host", "www.example"), ("cloudfront-viewer-country", "KP")];
        let kp = send(edge.addr, Method::GET, "/elsewhere", &blocked, "").await;
        assert_eq!(kp.status(), StatusCode::FORBIDDEN);
        let paths: Vec<String> = site.seen().into_iter().map(|s| s.path).collect();
        assert_eq!(paths, ["/public/index.html", "/public/gone"]);
        assert_eq!(replica.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_distributions_example_loads_and_picks_sites_by_host() {
    within(async {
        let dir = TempDir::new("distributions");
        let certificate =
            rcgen::generate_simple_self_signed(vec!["shop.example".to_owned()]).unwrap();
        dir.write("shop.pem", certificate.cert.pem());
        dir.write("shop.key", certificate.signing_key.serialize_pem());
        let mut config = load(&dir.write("edge.toml", block("distributions")));
        let shop_site = config
            .distributions
            .iter()
            .find(|d| d.name == "shop")
            .unwrap();
        assert_eq!(shop_site.tls_cert, Some(dir.0.join("shop.pem")));

        let (shop_addr, shop) = Origin::start("shop", cacheable).await;
        let (blog_addr, blog) = Origin::start("blog", cacheable).await;
        repoint(&mut config, "shop", shop_addr);
        repoint(&mut config, "blog", blog_addr);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.https_listen = Some("127.0.0.1:0".parse().unwrap());
        let edge = start_edge(config).await;

        for host in ["shop.example", "www.shop.example"] {
            let res = send(edge.addr, Method::GET, "/cart", &[("host", host)], "").await;
            assert_eq!(res.status(), StatusCode::OK, "{host}");
        }
        let blog_home = send(edge.addr, Method::GET, "/", &[("host", "blog.example")], "").await;
        assert_eq!(blog_home.body(), "blog GET /index.html");
        let other = send(
            edge.addr,
            Method::GET,
            "/",
            &[("host", "other.example")],
            "",
        )
        .await;
        assert_eq!(other.status(), StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(shop.seen().len(), 2);
        assert_eq!(blog.seen().len(), 1);
    })
    .await;
}

#[tokio::test]
async fn the_purge_example_answers_as_shown() {
    within(async {
        let example = block("purge");
        let command = squeeze(&example.replace("\\\n", " "));
        let between = |start: &str, end: char| -> String {
            let from = command
                .find(start)
                .unwrap_or_else(|| panic!("the purge example has no {start}"))
                + start.len();
            command[from..].split(end).next().unwrap().to_owned()
        };
        let token = between("Bearer ", '\'');
        let body = between("-d '", '\'');
        let shown = example
            .lines()
            .find_map(|line| line.strip_prefix("# "))
            .expect("the purge example shows its answer");
        assert!(command.contains("/purge"), "{command}");

        let (origin_addr, origin) = Origin::start("origin", |path| match path {
            "/products/42" => (
                StatusCode::OK,
                vec![
                    ("cache-control", "max-age=60"),
                    ("surrogate-key", "product-42 all"),
                ],
            ),
            _ => cacheable(path),
        })
        .await;
        let mut config = ServerConfig::default();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.origin = Some(format!("http://{origin_addr}").parse().unwrap());
        config.admin_listen = Some("127.0.0.1:0".parse().unwrap());
        config.admin_token = Some(token.clone());
        let edge = start_edge(config).await;
        let purged = ["/index.html", "/images/logo.png", "/products/42"];
        for path in purged.iter().chain(&["/kept"]) {
            send(edge.addr, Method::GET, path, &[], "").await;
            let hit = send(edge.addr, Method::GET, path, &[], "").await;
            assert_eq!(x_cache(&hit), "Hit from tower-cdn", "{path}");
        }

        // As curl sends it with -d.
        let authorization = format!("Bearer {token}");
        let headers = [
            ("authorization", authorization.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
        ];
        let admin = edge.admin.unwrap();
        let answer = send(admin, Method::POST, "/purge", &headers, &body).await;
        assert_eq!(answer.status(), StatusCode::OK);
        assert_eq!(answer.body(), shown);

        for path in purged {
            let res = send(edge.addr, Method::GET, path, &[], "").await;
            assert_eq!(x_cache(&res), "Miss from tower-cdn", "{path}");
        }
        let kept = send(edge.addr, Method::GET, "/kept", &[], "").await;
        assert_eq!(x_cache(&kept), "Hit from tower-cdn");
        assert_eq!(origin.seen().len(), 7);
    })
    .await;
}
