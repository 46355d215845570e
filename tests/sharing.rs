//! What the next viewer receives when another viewer's answer is stored or collapsed: never
//! the other viewer's cookie or variant, nothing a parser did not fully read, and never a
//! truncated body that ends cleanly (issue #16, items 1, 2, 8 and 10).

mod support;

use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use support::{async_origin, get, origin, response, send, Seen, TestBody};
use tokio::sync::{mpsc, oneshot, watch};
use tower::{Layer, Service, ServiceExt};
use tower_cdn::{Behavior, CdnLayer, ManualClock, OriginRequestPolicy, SetCookie};

/// A layer on a manual clock whose default behavior forwards the viewer's cookies: the
/// origins here answer each viewer by its cookie (`Vary: Cookie`), as a site does that opts
/// in to forwarding them.
fn layer() -> (CdnLayer, ManualClock) {
    layer_with(Behavior::new().origin_request_policy(OriginRequestPolicy::all_viewer()))
}

/// Upper bound for every wait, so that a hang fails instead of blocking.
const DEADLINE: Duration = Duration::from_secs(10);

async fn within<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(DEADLINE, f)
        .await
        .expect("waited past the deadline")
}

/// Polls a future once: a viewer's request runs up to its first wait (for the origin, or
/// for the leader of its key).
async fn poll_once<F: Future>(mut fut: Pin<&mut F>) -> Poll<F::Output> {
    poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn set_cookies(headers: &HeaderMap) -> Vec<&str> {
    headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// A gate the test origin waits at before it answers, so that every viewer of a test is
/// waiting on the same flight first.
fn gate() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

async fn pass(mut gate: watch::Receiver<bool>) {
    gate.wait_for(|open| *open).await.unwrap();
}

fn cookie_of(req: &Request<()>) -> String {
    header(req.headers(), "cookie").unwrap_or("").to_owned()
}

/// An origin whose page depends on the viewer's cookie and says so (`Vary: Cookie`),
/// answering once the gate opens.
fn personal_pages(gate: watch::Receiver<bool>) -> (support::Origin, Seen) {
    async_origin(move |req| {
        let gate = gate.clone();
        async move {
            pass(gate).await;
            let page = format!("page for {}", cookie_of(&req));
            response(&[("cache-control", "max-age=60"), ("vary", "Cookie")], page)
        }
    })
}

async fn collect<B>(res: Response<B>) -> (http::response::Parts, Bytes)
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Debug,
{
    let (parts, body) = res.into_parts();
    let body = http_body_util::BodyExt::collect(body)
        .await
        .expect("body error")
        .to_bytes();
    (parts, body)
}

// RFC 9111 §4.1: a response is reused only for requests whose nominated fields match.
#[tokio::test]
async fn a_collapsed_follower_with_another_cookie_gets_its_own_variant() {
    let (open, gate) = gate();
    let (origin, seen) = personal_pages(gate);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let mut alice = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=alice")])),
    );
    let mut bob = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=bob")])),
    );
    assert!(poll_once(alice.as_mut()).await.is_pending());
    assert!(
        poll_once(bob.as_mut()).await.is_pending(),
        "bob waits on alice's flight"
    );
    open.send(true).unwrap();
    let (alice, bob) = within(async { tokio::join!(alice, bob) }).await;
    let (_, alice_page) = collect(alice.unwrap()).await;
    let (bob_head, bob_page) = collect(bob.unwrap()).await;

    assert_eq!(alice_page, "page for user=alice");
    assert_eq!(
        bob_page, "page for user=bob",
        "bob must never see alice's page"
    );
    assert!(!header(&bob_head.headers, "cache-status")
        .unwrap()
        .contains("collapsed"));
    assert_eq!(seen.calls(), 2);
    assert_eq!(header(&seen.last_headers(), "cookie"), Some("user=bob"));

    // Both variants were stored, each for its own viewers.
    let again = send(&svc, get("/account", &[("cookie", "user=bob")])).await;
    assert!(again.x_cache().starts_with("Hit"));
    assert_eq!(again.body, "page for user=bob");
    let again = send(&svc, get("/account", &[("cookie", "user=alice")])).await;
    assert_eq!(again.body, "page for user=alice");
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn a_follower_with_the_same_cookie_still_collapses() {
    let (open, gate) = gate();
    let (origin, seen) = personal_pages(gate);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let mut first = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=alice")])),
    );
    let mut second = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=alice")])),
    );
    assert!(poll_once(first.as_mut()).await.is_pending());
    assert!(poll_once(second.as_mut()).await.is_pending());
    open.send(true).unwrap();
    let (first, second) = within(async { tokio::join!(first, second) }).await;
    let _ = collect(first.unwrap()).await;
    let (head, page) = collect(second.unwrap()).await;
    assert_eq!(page, "page for user=alice");
    assert!(header(&head.headers, "cache-status")
        .unwrap()
        .contains("collapsed"));
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn followers_of_another_variant_collapse_onto_one_flight_of_their_own() {
    let (open, gate) = gate();
    let (origin, seen) = personal_pages(gate);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let mut alice = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=alice")])),
    );
    let mut bob1 = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=bob")])),
    );
    let mut bob2 = Box::pin(
        svc.clone()
            .oneshot(get("/account", &[("cookie", "user=bob")])),
    );
    assert!(poll_once(alice.as_mut()).await.is_pending());
    assert!(poll_once(bob1.as_mut()).await.is_pending());
    assert!(poll_once(bob2.as_mut()).await.is_pending());
    open.send(true).unwrap();
    let (alice, bob1, bob2) = within(async { tokio::join!(alice, bob1, bob2) }).await;
    assert_eq!(collect(alice.unwrap()).await.1, "page for user=alice");
    assert_eq!(collect(bob1.unwrap()).await.1, "page for user=bob");
    assert_eq!(collect(bob2.unwrap()).await.1, "page for user=bob");
    assert_eq!(seen.calls(), 2, "one origin request per variant");
}

/// An origin that sets a new session cookie on every answer, which it marks cacheable.
fn cookie_setting_origin(gate: Option<watch::Receiver<bool>>) -> (support::Origin, Seen) {
    let sessions = Arc::new(AtomicUsize::new(0));
    async_origin(move |_req| {
        let gate = gate.clone();
        let session = sessions.fetch_add(1, Ordering::SeqCst) + 1;
        async move {
            if let Some(gate) = gate {
                pass(gate).await;
            }
            let cookie = format!("session={session}; HttpOnly");
            let mut res = response(&[("cache-control", "max-age=60")], "welcome");
            res.headers_mut()
                .insert("set-cookie", cookie.parse().unwrap());
            res
        }
    })
}

fn layer_with(behavior: Behavior) -> (CdnLayer, ManualClock) {
    let clock = ManualClock::new();
    let layer = CdnLayer::builder()
        .clock(clock.clone())
        .default_behavior(behavior)
        .build()
        .unwrap();
    (layer, clock)
}

#[tokio::test]
async fn a_response_that_sets_a_cookie_is_not_stored_by_default() {
    let (origin, seen) = cookie_setting_origin(None);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let first = send(&svc, get("/", &[])).await;
    assert_eq!(set_cookies(&first.headers), ["session=1; HttpOnly"]);
    let second = send(&svc, get("/", &[])).await;
    assert!(second.x_cache().starts_with("Miss"));
    assert_eq!(
        set_cookies(&second.headers),
        ["session=2; HttpOnly"],
        "the second viewer gets its own session, never the first one's"
    );
    assert_eq!(seen.calls(), 2);
    assert_eq!(
        layer.store_entries(),
        1,
        "only the hit-for-pass marker is kept"
    );
}

#[tokio::test]
async fn a_followers_of_a_cookie_setting_answer_get_their_own_answer_by_default() {
    let (open, gate) = gate();
    let (origin, seen) = cookie_setting_origin(Some(gate));
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let mut leader = Box::pin(svc.clone().oneshot(get("/", &[])));
    let mut follower = Box::pin(svc.clone().oneshot(get("/", &[])));
    assert!(poll_once(leader.as_mut()).await.is_pending());
    assert!(poll_once(follower.as_mut()).await.is_pending());
    open.send(true).unwrap();
    let (leader, follower) = within(async { tokio::join!(leader, follower) }).await;
    let (leader, _) = collect(leader.unwrap()).await;
    let (follower, _) = collect(follower.unwrap()).await;
    assert_eq!(set_cookies(&leader.headers), ["session=1; HttpOnly"]);
    assert_eq!(set_cookies(&follower.headers), ["session=2; HttpOnly"]);
    assert_eq!(seen.calls(), 2);
}

#[tokio::test]
async fn strip_stores_the_answer_without_its_cookie() {
    let (origin, seen) = cookie_setting_origin(None);
    let (layer, _clock) = layer_with(Behavior::new().set_cookie(SetCookie::strip()));
    let svc = layer.layer(origin);
    let first = send(&svc, get("/", &[])).await;
    assert_eq!(
        set_cookies(&first.headers),
        ["session=1; HttpOnly"],
        "the viewer whose request filled the cache keeps its cookie"
    );
    let second = send(&svc, get("/", &[])).await;
    assert!(second.x_cache().starts_with("Hit"));
    assert_eq!(second.body, "welcome");
    assert!(set_cookies(&second.headers).is_empty());
    assert_eq!(seen.calls(), 1);
}

#[tokio::test]
async fn strip_never_gives_a_collapsed_follower_the_leaders_cookie() {
    let (open, gate) = gate();
    let (origin, seen) = cookie_setting_origin(Some(gate));
    let (layer, _clock) = layer_with(Behavior::new().set_cookie(SetCookie::strip()));
    let svc = layer.layer(origin);
    let mut leader = Box::pin(svc.clone().oneshot(get("/", &[])));
    let mut follower = Box::pin(svc.clone().oneshot(get("/", &[])));
    assert!(poll_once(leader.as_mut()).await.is_pending());
    assert!(poll_once(follower.as_mut()).await.is_pending());
    open.send(true).unwrap();
    let (leader, follower) = within(async { tokio::join!(leader, follower) }).await;
    let (leader, _) = collect(leader.unwrap()).await;
    let (follower, body) = collect(follower.unwrap()).await;
    assert_eq!(set_cookies(&leader.headers), ["session=1; HttpOnly"]);
    assert_eq!(body, "welcome");
    assert!(header(&follower.headers, "cache-status")
        .unwrap()
        .contains("collapsed"));
    assert!(set_cookies(&follower.headers).is_empty());
    assert_eq!(seen.calls(), 1);
}

// RFC 9111 §5.2.2.7: a qualified `private` names fields a shared cache does not store; the
// response to the request that brought them still carries them.
#[tokio::test]
async fn fields_a_qualified_private_names_reach_only_the_filling_viewer() {
    let (origin, seen) = origin(|_| {
        response(
            &[
                ("cache-control", "max-age=60, private=\"x-account\""),
                ("x-account", "alice"),
            ],
            "shared page",
        )
    });
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let first = send(&svc, get("/", &[])).await;
    assert_eq!(header(&first.headers, "x-account"), Some("alice"));
    let second = send(&svc, get("/", &[])).await;
    assert!(second.x_cache().starts_with("Hit"));
    assert_eq!(header(&second.headers, "x-account"), None);
    assert_eq!(seen.calls(), 1);
}

// RFC 9111 §3.2, §4.3.4: a 304's Set-Cookie is not merged into the stored fields.
#[tokio::test]
async fn a_cookie_on_a_304_reaches_only_the_viewer_that_revalidated() {
    let (origin, seen) = origin(|req| {
        if req.headers().contains_key("if-none-match") {
            let mut res = response(&[("cache-control", "max-age=10"), ("etag", "\"v1\"")], "");
            *res.status_mut() = http::StatusCode::NOT_MODIFIED;
            res.headers_mut()
                .insert("set-cookie", "session=revalidator".parse().unwrap());
            return res;
        }
        response(
            &[("cache-control", "max-age=10"), ("etag", "\"v1\"")],
            "body",
        )
    });
    let (layer, clock) = layer();
    let svc = layer.layer(origin);
    send(&svc, get("/", &[])).await;
    clock.advance(Duration::from_secs(20));
    let revalidated = send(&svc, get("/", &[])).await;
    assert!(revalidated.x_cache().starts_with("RefreshHit"));
    assert_eq!(set_cookies(&revalidated.headers), ["session=revalidator"]);
    assert_eq!(revalidated.body, "body");
    let next = send(&svc, get("/", &[])).await;
    assert!(next.x_cache().starts_with("Hit"));
    assert!(set_cookies(&next.headers).is_empty());
    assert_eq!(seen.calls(), 2);
}

/// An origin whose page is for the viewer's cookie, with the given response fields.
fn fields_origin(fields: Vec<(String, String)>) -> (support::Origin, Seen) {
    origin(move |req| {
        let mut res = response(&[], format!("page for {}", cookie_of(&req)));
        for (name, value) in &fields {
            res.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        res
    })
}

/// Asks as alice, then as bob: bob must get his own page from the origin.
async fn assert_not_shared(fields: Vec<(String, String)>) {
    let (origin, seen) = fields_origin(fields);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let alice = send(&svc, get("/me", &[("cookie", "user=alice")])).await;
    assert_eq!(alice.body, "page for user=alice");
    let bob = send(&svc, get("/me", &[("cookie", "user=bob")])).await;
    assert_eq!(bob.body, "page for user=bob");
    assert!(bob.x_cache().starts_with("Miss"));
    assert_eq!(seen.calls(), 2);
}

fn extensions(n: usize) -> String {
    (0..n).map(|i| format!("ext{i}, ")).collect()
}

// RFC 9111 §5.2.2.7: `private` anywhere in the field, even past the parser's bound.
#[tokio::test]
async fn private_after_64_extensions_is_not_shared() {
    let cc = format!("max-age=60, {}private", extensions(64));
    assert_not_shared(vec![("cache-control".into(), cc)]).await;
}

#[tokio::test]
async fn a_cache_control_past_the_bound_is_not_stored() {
    let cc = format!("max-age=60, {}public", extensions(64));
    assert_not_shared(vec![("cache-control".into(), cc)]).await;
}

// RFC 9213 §2.2: the targeted field governs; its bound fails closed too.
#[tokio::test]
async fn a_cdn_cache_control_past_the_bound_is_not_stored() {
    let cc = format!("max-age=60, {}public", extensions(64));
    assert_not_shared(vec![
        ("cache-control".into(), "max-age=60".into()),
        ("cdn-cache-control".into(), cc.clone()),
    ])
    .await;
    assert_not_shared(vec![
        ("cache-control".into(), "max-age=60".into()),
        ("surrogate-control".into(), cc),
    ])
    .await;
}

#[tokio::test]
async fn a_vary_past_the_bound_is_not_stored() {
    let names: Vec<String> = (0..17).map(|i| format!("x-f{i}")).collect();
    assert_not_shared(vec![
        ("cache-control".into(), "max-age=60".into()),
        ("vary".into(), format!("{}, cookie", names.join(", "))),
    ])
    .await;
}

#[tokio::test]
async fn surrogate_keys_past_the_bound_are_not_stored() {
    let tags: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
    assert_not_shared(vec![
        ("cache-control".into(), "max-age=60".into()),
        ("surrogate-key".into(), tags.join(" ")),
    ])
    .await;
}

#[tokio::test]
async fn a_connection_list_past_the_bound_is_not_stored() {
    let options: Vec<String> = (0..40).map(|i| format!("x-o{i}")).collect();
    assert_not_shared(vec![
        ("cache-control".into(), "max-age=60".into()),
        ("connection".into(), options.join(", ")),
    ])
    .await;
}

/// An origin body fed through a channel that says when it has returned its error: by
/// then, on this single-threaded runtime, the fill has taken the failure too (the fill
/// task reads the error and ends the fill in one poll).
struct Failing {
    chunks: mpsc::UnboundedReceiver<Result<Bytes, std::io::Error>>,
    failed: Option<oneshot::Sender<()>>,
}

impl Body for Failing {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let next = std::task::ready!(self.chunks.poll_recv(cx));
        if matches!(next, Some(Err(_))) {
            if let Some(failed) = self.failed.take() {
                let _ = failed.send(());
            }
        }
        Poll::Ready(next.map(|r| r.map(Frame::data)))
    }
}

type Feed = mpsc::UnboundedSender<Result<Bytes, std::io::Error>>;

/// An origin answering one request, cacheable, once the gate opens, with a [`Failing`]
/// body: returns the origin, the feed of its body, the signal of its failure and its
/// request count.
#[allow(clippy::type_complexity)]
fn failing_origin(
    gate: watch::Receiver<bool>,
) -> (
    impl Service<
            Request<()>,
            Response = Response<Failing>,
            Error = std::convert::Infallible,
            Future = impl Future + Send,
        > + Clone
        + Send,
    Feed,
    oneshot::Receiver<()>,
    Arc<AtomicUsize>,
) {
    let (feed, chunks) = mpsc::unbounded_channel();
    let (failed, failed_rx) = oneshot::channel();
    let body = Arc::new(Mutex::new(Some(Failing {
        chunks,
        failed: Some(failed),
    })));
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let origin = tower::service_fn(move |_req: Request<()>| {
        let gate = gate.clone();
        let body = body.lock().unwrap().take().expect("one origin request");
        counted.fetch_add(1, Ordering::SeqCst);
        async move {
            pass(gate).await;
            let mut res = Response::new(body);
            res.headers_mut()
                .insert("cache-control", "max-age=60".parse().unwrap());
            Ok::<_, std::convert::Infallible>(res)
        }
    });
    (origin, feed, failed_rx, calls)
}

/// Reads a body the way an HTTP server writes it (hyper's HTTP/1.1 dispatcher): a known
/// exact length becomes `Content-Length`; after each chunk, a body that says it is at its
/// end is ended cleanly (last chunk / `END_STREAM`) without another poll. `Err` is an
/// aborted response, `Ok` one the viewer reads as complete.
async fn serve_like_a_server<B>(body: B) -> Result<Bytes, String>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut body = body;
    let mut sent = BytesMut::new();
    if body.is_end_stream() {
        return Ok(sent.freeze());
    }
    let length = body.size_hint().exact();
    loop {
        let frame = poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        match frame {
            None => return Ok(sent.freeze()),
            Some(Err(e)) => return Err(e.to_string()),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    sent.extend_from_slice(&data);
                }
                if length == Some(sent.len() as u64) || body.is_end_stream() {
                    return Ok(sent.freeze());
                }
            }
        }
    }
}

// The race of issue #16 item 10, made deterministic: the origin body fails after the
// readers' last chunk and before the server asks the body whether it is over.
#[tokio::test]
async fn a_body_failing_after_its_last_chunk_aborts_every_viewer() {
    let (open, gate) = gate();
    let (origin, feed, failed, calls) = failing_origin(gate);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let mut leader = Box::pin(svc.clone().oneshot(get("/big", &[])));
    let mut follower = Box::pin(svc.clone().oneshot(get("/big", &[])));
    assert!(poll_once(leader.as_mut()).await.is_pending());
    assert!(poll_once(follower.as_mut()).await.is_pending());
    feed.send(Ok(Bytes::from(vec![b'x'; 2000]))).unwrap();
    feed.send(Err(std::io::Error::other("origin closed mid-body")))
        .unwrap();
    open.send(true).unwrap();
    // The whole origin body, chunk and failure, is read before either viewer runs again:
    // the follower attaches to a fill that has already failed.
    within(failed).await.unwrap();
    let (leader, follower) = within(async { tokio::join!(leader, follower) }).await;
    let leader = within(serve_like_a_server(leader.unwrap().into_body())).await;
    let follower = within(serve_like_a_server(follower.unwrap().into_body())).await;
    assert!(leader.is_err(), "leader saw a clean end: {leader:?}");
    assert!(follower.is_err(), "follower saw a clean end: {follower:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    assert_eq!(layer.store_entries(), 0, "nothing was stored");
}

#[tokio::test]
async fn a_body_failing_after_a_chunk_the_viewer_already_took_aborts_it() {
    let (origin, feed, failed, _calls) = failing_origin(watch::channel(true).1);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let res = within(svc.clone().oneshot(get("/a", &[]))).await.unwrap();
    let mut body = res.into_body();
    feed.send(Ok(Bytes::from(vec![b'x'; 2000]))).unwrap();
    let frame = within(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))).await;
    assert_eq!(frame.unwrap().unwrap().into_data().unwrap().len(), 2000);
    // The viewer has the last chunk; now the origin fails, before the server asks the
    // body whether it is over.
    feed.send(Err(std::io::Error::other("origin closed")))
        .unwrap();
    within(failed).await.unwrap();
    assert!(
        !body.is_end_stream(),
        "a server would end this truncated body cleanly"
    );
    let frame = within(poll_fn(|cx| Pin::new(&mut body).poll_frame(cx))).await;
    assert!(matches!(frame, Some(Err(_))));
}

/// An origin whose body is `first`, then an error, with the given response fields.
fn truncating_origin(fields: &'static [(&'static str, &'static str)]) -> support::Origin {
    origin(move |_| {
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(Ok(Bytes::from(vec![b'x'; 2000]))).unwrap();
        tx.try_send(Err(std::io::Error::other("origin closed")))
            .unwrap();
        response(fields, TestBody::Channel(rx))
    })
    .0
}

#[tokio::test]
async fn a_passed_body_that_fails_aborts_the_viewer() {
    let origin = truncating_origin(&[("cache-control", "private")]);
    let (layer, _clock) = layer();
    let svc = layer.layer(origin);
    let res = within(svc.clone().oneshot(get("/p", &[]))).await.unwrap();
    assert!(within(serve_like_a_server(res.into_body())).await.is_err());
    // Hit-for-pass now: the same again.
    let res = within(svc.clone().oneshot(get("/p", &[]))).await.unwrap();
    assert!(within(serve_like_a_server(res.into_body())).await.is_err());
}

#[tokio::test]
async fn a_fill_too_large_to_keep_that_fails_aborts_the_viewer() {
    let origin = truncating_origin(&[("cache-control", "max-age=60")]);
    let layer = CdnLayer::builder()
        .clock(ManualClock::new())
        .max_object_size(1000)
        .build()
        .unwrap();
    let svc = layer.layer(origin);
    let res = within(svc.clone().oneshot(get("/big", &[]))).await.unwrap();
    assert!(within(serve_like_a_server(res.into_body())).await.is_err());
}
