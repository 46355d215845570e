//! Two edge nodes (two layers) sharing one real Redis: fills shared across nodes, `Vary`
//! records, the origin shield, corrupt and oversized values, invalidation, and Redis dying
//! and coming back. Real Redis needs real time, so every wait polls for the event itself;
//! the deadlines (`HANG`) only turn a regression into a failure instead of a hung run, and
//! are far longer than anything a loaded machine needs. No test asserts how long anything
//! took.

#[path = "support/redis.rs"]
mod redis_server;
mod support;

use std::future::Future;
use std::time::{Duration, Instant};

use http::StatusCode;
use redis_server::{unique_prefix, RedisServer};
use support::*;
use tower::Layer;
use tower_cdn::{
    AllowedMethods, Behavior, CdnLayer, Purge, RedisTier, RedisTierBuilder, TierStats,
};

const CACHEABLE: &[(&str, &str)] = &[("cache-control", "max-age=60"), ("etag", "\"v1\"")];

/// How long a wait may last before the test fails as hung.
const HANG: Duration = Duration::from_secs(30);

/// One node: a layer with its own tier (connection, breaker, counters) on `url`. The call
/// timeout is generous (10 s) so a loaded test machine never turns a slow answer into an
/// error; the outage tests set their own.
fn node(
    url: &str,
    prefix: &str,
    tune: impl FnOnce(RedisTierBuilder) -> RedisTierBuilder,
) -> (CdnLayer, RedisTier) {
    node_with(url, prefix, tune, Behavior::new())
}

/// [`node`] with its own default behavior.
fn node_with(
    url: &str,
    prefix: &str,
    tune: impl FnOnce(RedisTierBuilder) -> RedisTierBuilder,
    behavior: Behavior,
) -> (CdnLayer, RedisTier) {
    let builder = RedisTier::builder(url)
        .key_prefix(prefix)
        .timeout(Duration::from_secs(10));
    let tier = tune(builder).build().unwrap();
    let layer = CdnLayer::builder()
        .shared_tier(tier.clone())
        .default_behavior(behavior)
        .build()
        .unwrap();
    (layer, tier)
}

/// Two nodes with the same settings and key prefix, connected (as a server would at start).
async fn two_nodes(
    url: &str,
    test: &str,
    tune: impl Fn(RedisTierBuilder) -> RedisTierBuilder,
) -> ((CdnLayer, RedisTier), (CdnLayer, RedisTier)) {
    let prefix = unique_prefix(test);
    let (a, b) = (node(url, &prefix, &tune), node(url, &prefix, &tune));
    connect(&a.1).await;
    connect(&b.1).await;
    (a, b)
}

/// Waits (bounded) for a tier's first connection.
async fn connect(tier: &RedisTier) {
    let deadline = Instant::now() + HANG;
    while tier.ping().await.is_err() {
        assert!(Instant::now() < deadline, "redis does not answer");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Polls `done` every 5 ms until it holds; fails the test as hung after `HANG`.
async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Fails the test as hung if `f` does not finish within `HANG`.
async fn within<T>(f: impl Future<Output = T>) -> T {
    tokio::time::timeout(HANG, f).await.expect("request hung")
}

fn stats(tier: &RedisTier) -> TierStats {
    tier.stats()
}

/// The object keys under `prefix` (the prefix and 32 hex digits), not the purge indexes.
async fn object_keys(conn: &mut redis::aio::MultiplexedConnection, prefix: &str) -> Vec<String> {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(conn)
        .await
        .unwrap();
    keys.into_iter()
        .filter(|k| {
            let rest = &k[prefix.len()..];
            rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_hexdigit())
        })
        .collect()
}

fn from_shared_tier(res: &Seen200) -> bool {
    res.x_cache() == "Hit from tower-cdn"
        && res
            .header("cache-status")
            .starts_with("tower-cdn; hit; ttl=")
        && res.header("cache-status").ends_with("; detail=shared-tier")
}

#[tokio::test]
async fn an_object_filled_by_one_node_is_a_hit_on_another() {
    let redis = RedisServer::shared();
    let ((a, tier_a), (b, tier_b)) = two_nodes(redis.url(), "fill", |t| t).await;
    let (origin, seen) = origin(|_| response(CACHEABLE, "hello"));
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));

    let first = send(&a, get("/a", &[])).await;
    assert_eq!(first.x_cache(), "Miss from tower-cdn");
    until("the write-through", || stats(&tier_a).writes == 1).await;

    let shared = send(&b, get("/a", &[])).await;
    assert!(from_shared_tier(&shared), "{:?}", shared.headers);
    assert_eq!(shared.status, StatusCode::OK);
    assert_eq!(shared.body, "hello");
    assert_eq!(shared.header("etag"), "\"v1\"");
    assert_eq!(seen.calls(), 1);

    // Promoted into B's memory: the next hit does not ask Redis.
    let again = send(&b, get("/a", &[])).await;
    assert_eq!(again.x_cache(), "Hit from tower-cdn");
    assert!(!again.header("cache-status").contains("shared-tier"));
    assert_eq!(seen.calls(), 1);
    let (sa, sb) = (stats(&tier_a), stats(&tier_b));
    assert_eq!((sa.misses, sa.hits, sa.writes), (1, 0, 1));
    assert_eq!((sb.misses, sb.hits, sb.writes), (0, 1, 0));
    assert_eq!(sa.errors + sb.errors, 0);
}

#[tokio::test]
async fn variants_are_shared_through_their_vary_record() {
    let redis = RedisServer::shared();
    let ((a, tier_a), (b, _)) = two_nodes(redis.url(), "vary", |t| t).await;
    let (origin, seen) = origin(|req| {
        let lang = req.headers()["accept-language"]
            .to_str()
            .unwrap()
            .to_owned();
        response(
            &[("cache-control", "max-age=60"), ("vary", "Accept-Language")],
            lang,
        )
    });
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));
    for lang in ["en", "fr"] {
        send(&a, get("/v", &[("accept-language", lang)])).await;
    }
    until("both variants written", || stats(&tier_a).writes == 2).await;
    assert_eq!(seen.calls(), 2);

    for lang in ["en", "fr"] {
        let res = send(&b, get("/v", &[("accept-language", lang)])).await;
        assert!(from_shared_tier(&res), "{lang}: {:?}", res.headers);
        assert_eq!(res.body, lang);
    }
    assert_eq!(seen.calls(), 2);
    let de = send(&b, get("/v", &[("accept-language", "de")])).await;
    assert_eq!(de.x_cache(), "Miss from tower-cdn");
    assert_eq!(de.body, "de");
    assert_eq!(seen.calls(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_shield_a_hundred_cold_requests_on_two_nodes_reach_the_origin_once() {
    let redis = RedisServer::shared();
    let ((a, tier_a), (b, tier_b)) = two_nodes(redis.url(), "shield", |t| {
        t.shield(true)
            // Far longer than the fill takes on any machine: the test is about one origin
            // request for the fleet, not about a lock expiring.
            .shield_lock_ttl(Duration::from_secs(60))
            .shield_poll_interval(Duration::from_millis(10))
    })
    .await;
    let (origin, seen) = async_origin(|_| async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        response(CACHEABLE, "shielded")
    });
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let svc = if i % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move { send(&svc, get("/cold", &[])).await })
        })
        .collect();
    for task in tasks {
        let res = within(task).await.unwrap();
        assert_eq!(res.status, StatusCode::OK);
        assert_eq!(res.body, "shielded");
    }
    assert_eq!(seen.calls(), 1);
    let (sa, sb) = (stats(&tier_a), stats(&tier_b));
    assert_eq!(sa.shield_locks + sb.shield_locks, 1);
    // The other node's leader found the object in Redis (after waiting on the lock, or not).
    assert_eq!(sa.hits + sb.hits, 1);
    assert_eq!(sa.errors + sb.errors, 0);
}

#[tokio::test]
async fn undecodable_values_are_misses() {
    let redis = RedisServer::shared();
    let prefix = unique_prefix("corrupt");
    let (a, tier_a) = node(redis.url(), &prefix, |t| t);
    let (b, tier_b) = node(redis.url(), &prefix, |t| t);
    connect(&tier_a).await;
    connect(&tier_b).await;
    let (origin, seen) = origin(|_| response(CACHEABLE, "hello"));
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));
    send(&a, get("/a", &[])).await;
    until("the write-through", || stats(&tier_a).writes == 1).await;

    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys = object_keys(&mut conn, &prefix).await;
    assert_eq!(keys.len(), 1);
    redis::cmd("SET")
        .arg(&keys[0])
        .arg(b"TCDN\x01\x01 not an object".as_slice())
        .exec_async(&mut conn)
        .await
        .unwrap();

    let res = send(&b, get("/a", &[])).await;
    assert_eq!(res.x_cache(), "Miss from tower-cdn");
    assert_eq!(res.body, "hello");
    assert_eq!(seen.calls(), 2);
    assert_eq!(stats(&tier_b).corrupt, 1);
}

#[tokio::test]
async fn bodies_over_the_tier_maximum_stay_in_memory() {
    let redis = RedisServer::shared();
    let ((a, tier_a), (b, _)) =
        two_nodes(redis.url(), "oversized", |t| t.max_body_size(1024)).await;
    let (origin, seen) = origin(|_| response(CACHEABLE, vec![b'x'; 4096]));
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));
    send(&a, get("/big", &[])).await;
    until("the refused write", || stats(&tier_a).oversized == 1).await;
    assert_eq!(
        send(&a, get("/big", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    assert_eq!(
        send(&b, get("/big", &[])).await.x_cache(),
        "Miss from tower-cdn"
    );
    assert_eq!(seen.calls(), 2);
    assert_eq!(stats(&tier_a).writes, 0);
}

#[tokio::test]
async fn an_unsafe_request_deletes_the_shared_copy() {
    // RFC 9111 §4.4: after a successful POST, the node must not bring the old object back
    // from Redis, and neither may another node.
    let redis = RedisServer::shared();
    let prefix = unique_prefix("invalidate");
    let posts = || Behavior::new().allowed_methods(AllowedMethods::all());
    let (a, tier_a) = node_with(redis.url(), &prefix, |t| t, posts());
    let (b, tier_b) = node_with(redis.url(), &prefix, |t| t, posts());
    connect(&tier_a).await;
    connect(&tier_b).await;
    let version = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (origin, seen) = origin(move |_| {
        let n = version.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        response(&[("cache-control", "max-age=60")], format!("v{n}"))
    });
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));
    send(&a, get("/a", &[])).await;
    until("the write-through", || stats(&tier_a).writes == 1).await;

    assert_eq!(
        send(&a, request("POST", "/a", &[])).await.status,
        StatusCode::OK
    );
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = Instant::now() + HANG;
    loop {
        let keys = object_keys(&mut conn, &prefix).await;
        if keys.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "the shared copy was not deleted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The old object is gone from both tiers: A fetches the new one, and B finds that.
    let refetched = send(&a, get("/a", &[])).await;
    assert_eq!(refetched.x_cache(), "Miss from tower-cdn");
    assert_eq!(refetched.body, "v3");
    until("the new write-through", || stats(&tier_a).writes == 2).await;
    let res = send(&b, get("/a", &[])).await;
    assert!(from_shared_tier(&res));
    assert_eq!(res.body, "v3");
    assert_eq!(seen.calls(), 3);
}

#[tokio::test]
async fn an_unreachable_redis_costs_no_request() {
    let path = std::env::temp_dir().join(format!("tower-cdn-none-{}.sock", std::process::id()));
    let url = format!("redis+unix://{}", path.display());
    let (layer, tier) = node(&url, "x:", |t| {
        t.shield(true)
            .timeout(Duration::from_millis(50))
            .failure_threshold(2)
            .cooldown(Duration::from_secs(60))
    });
    let (origin, seen) = origin(|_| response(CACHEABLE, "up"));
    let svc = layer.layer(origin);
    for i in 0..20 {
        let res = within(send(&svc, get(&format!("/{i}"), &[]))).await;
        assert_eq!(
            (res.status, res.body.as_ref()),
            (StatusCode::OK, &b"up"[..])
        );
    }
    assert_eq!(seen.calls(), 20);
    // Each miss makes two calls, a look-up and a write: two fail, the breaker opens, and the
    // rest are never made.
    until("every write-through tried", || {
        let s = stats(&tier);
        s.errors + s.skipped == 40
    })
    .await;
    let s = stats(&tier);
    assert!(s.errors <= 3, "{s:?}");
    assert_eq!(s.breaker_opens, 1);
    assert!(s.breaker_open);
}

#[tokio::test]
async fn redis_dying_is_not_an_outage_and_its_return_is_used() {
    // A server of this test's own, so it can be killed and started again on the same socket.
    let mut redis = RedisServer::spawn();
    let ((a, tier_a), (b, tier_b)) = two_nodes(redis.url(), "outage", |t| {
        t.shield(true)
            .timeout(Duration::from_millis(200))
            .failure_threshold(2)
            .cooldown(Duration::from_millis(100))
    })
    .await;
    // Probes are not stored, so they write nothing through.
    let (origin, seen) = origin(|req| match req.uri().path().starts_with("/probe") {
        true => response(&[("cache-control", "no-store")], "body"),
        false => response(CACHEABLE, "body"),
    });
    let (a, b) = (a.layer(origin.clone()), b.layer(origin));
    send(&a, get("/before", &[])).await;
    until("the write-through", || stats(&tier_a).writes == 1).await;
    assert!(from_shared_tier(&send(&b, get("/before", &[])).await));

    redis.kill();
    for i in 0..10 {
        for svc in [&a, &b] {
            let res = within(send(svc, get(&format!("/down-{i}"), &[]))).await;
            assert_eq!(res.status, StatusCode::OK);
            assert_eq!(res.body, "body");
        }
    }
    // Memory hits go on as before.
    assert_eq!(
        send(&b, get("/before", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    let (sa, sb) = (stats(&tier_a), stats(&tier_b));
    assert!(sa.errors > 0 && sb.errors > 0);
    assert!(sa.breaker_opens >= 1 && sb.breaker_opens >= 1);
    let calls = seen.calls();
    assert_eq!(calls, 21);

    redis.restart();
    // Each node finds Redis again on its own, through requests: wait until a miss on each
    // has been answered by Redis (a tier miss, not an error).
    for (svc, tier) in [(&a, &tier_a), (&b, &tier_b)] {
        let before = stats(tier).misses;
        let deadline = Instant::now() + HANG;
        let mut i = 0;
        while stats(tier).misses == before {
            assert!(Instant::now() < deadline, "the tier was not used again");
            send(svc, get(&format!("/probe-{i}"), &[])).await;
            i += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let calls = seen.calls();
    let writes = stats(&tier_a).writes;
    send(&a, get("/after", &[])).await;
    until("the write-through", || stats(&tier_a).writes > writes).await;
    assert!(from_shared_tier(&send(&b, get("/after", &[])).await));
    assert_eq!(seen.calls(), calls + 1);
}

/// An origin whose every answer is new: `PATH vN`, tagged `product-42` under `/t/`.
fn versioned_origin() -> (Origin, Seen) {
    let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    origin(move |req| {
        let v = n.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let path = req.uri().path().to_owned();
        let tagged = if path.starts_with("/t/") {
            "product-42"
        } else {
            "other"
        };
        response(
            &[("cache-control", "max-age=60"), ("surrogate-key", tagged)],
            format!("{path} v{v}"),
        )
    })
}

/// Waits (bounded) for a purge made on A to be applied to Redis and received by B.
async fn propagated(tier_a: &RedisTier, tier_b: &RedisTier, purges: u64) {
    let deadline = Instant::now() + HANG;
    while stats(tier_a).purges < purges || stats(tier_b).purge_messages < purges {
        assert!(
            Instant::now() < deadline,
            "the purge did not propagate: {:?} {:?}",
            stats(tier_a),
            stats(tier_b)
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn a_purge_on_one_node_stops_the_other_serving_the_object() {
    let redis = RedisServer::shared();
    let ((layer_a, tier_a), (layer_b, tier_b)) = two_nodes(redis.url(), "fanout", |t| t).await;
    until("both subscriptions", || {
        stats(&tier_a).subscribed && stats(&tier_b).subscribed
    })
    .await;
    let (origin, seen) = versioned_origin();
    let (a, b) = (layer_a.layer(origin.clone()), layer_b.layer(origin));
    let cases = [
        ("/p/one", Purge::path("/p/one")),
        ("/img/two.png", Purge::pattern("/img/*").unwrap()),
        ("/t/three", Purge::tag("product-42")),
    ];
    // A bystander no purge names stays everywhere.
    send(&a, get("/keep", &[])).await;
    let mut writes = 1;
    until("the write-through", || stats(&tier_a).writes == writes).await;
    assert!(from_shared_tier(&send(&b, get("/keep", &[])).await));

    for (i, (path, purge)) in cases.into_iter().enumerate() {
        let first = send(&a, get(path, &[])).await;
        writes += 1;
        until("the write-through", || stats(&tier_a).writes == writes).await;
        assert!(from_shared_tier(&send(&b, get(path, &[])).await), "{path}");
        assert_eq!(
            send(&b, get(path, &[])).await.x_cache(),
            "Hit from tower-cdn"
        );
        let calls = seen.calls();

        assert_eq!(layer_a.purge(&purge), 1, "{path}");
        propagated(&tier_a, &tier_b, i as u64 + 1).await;
        // B drops its copy and does not find it in Redis: the origin answers, on both nodes.
        let res = send(&b, get(path, &[])).await;
        assert_eq!(res.x_cache(), "Miss from tower-cdn", "{path}");
        assert_ne!(res.body, first.body);
        assert_eq!(seen.calls(), calls + 1);
    }
    assert_eq!(
        send(&b, get("/keep", &[])).await.x_cache(),
        "Hit from tower-cdn"
    );
    let (sa, sb) = (stats(&tier_a), stats(&tier_b));
    assert_eq!(sa.purge_failures + sb.purge_failures, 0);
    assert_eq!(sa.epoch_drops + sb.epoch_drops, 0);
    // A node does not apply its own purges twice.
    assert_eq!(sa.purge_messages, 0);
}

#[tokio::test]
async fn a_node_that_missed_a_purge_drops_its_memory_at_its_next_epoch_check() {
    let redis = RedisServer::shared();
    let check = Duration::from_millis(200);
    let prefix = unique_prefix("missed");
    let tune = |t: RedisTierBuilder| t.purge_check_interval(check);
    let (layer_a, tier_a) = node(redis.url(), &prefix, tune);
    let (layer_b, tier_b) = node(redis.url(), &prefix, tune);
    connect(&tier_a).await;
    connect(&tier_b).await;
    // A subscription counts as up once its first epoch check is done: B has its baseline.
    until("both subscriptions", || {
        stats(&tier_a).subscribed && stats(&tier_b).subscribed
    })
    .await;
    let (origin, _) = versioned_origin();
    let (a, b) = (layer_a.layer(origin.clone()), layer_b.layer(origin));
    send(&a, get("/a", &[])).await;
    until("the write-through", || stats(&tier_a).writes == 1).await;
    assert!(from_shared_tier(&send(&b, get("/a", &[])).await));
    assert!(layer_b.store_entries() > 0);

    // A purge whose message B never received: the epoch moves, nothing is published.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    redis::cmd("INCR")
        .arg(format!("{prefix}purge-epoch"))
        .exec_async(&mut conn)
        .await
        .unwrap();
    // B sees the moved epoch at its next check (every `check`) and drops its memory.
    let deadline = Instant::now() + HANG;
    while layer_b.store_entries() > 0 {
        assert!(
            Instant::now() < deadline,
            "B kept serving: {:?}",
            stats(&tier_b)
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(stats(&tier_b).epoch_drops, 1);
    assert_eq!(stats(&tier_a).epoch_drops, 1);
}
