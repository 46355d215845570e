//! Purge fan-out: a purge applied to Redis and published to every node, and the listener
//! that applies other nodes' purges to this node's memory and watches the purge epoch for
//! messages it missed. See the `Purges` section of [`RedisTier`].

use std::collections::BTreeSet;
use std::sync::{Arc, PoisonError, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{bump, RedisTier};
use crate::layer::Shared;
use crate::purge::{self, Purge};

/// The message format's version; messages of another version are not applied, and so count
/// as missed (the epoch check drops the memory store).
const VERSION: u8 = 1;

/// Keys read per `SCAN` call when a pattern purge looks for matching path indexes.
const SCAN_COUNT: usize = 256;

/// Pending epochs (seen in messages, above a gap) kept at most; past it the node forgets
/// them and treats the gap as missed purges.
const MAX_PENDING: usize = 4096;

/// A purge as published on `{prefix}purge`.
#[derive(Serialize, Deserialize)]
struct Message {
    v: u8,
    kind: String,
    value: String,
    soft: bool,
    /// The publishing node's id: a node does not apply its own purges twice.
    node: String,
    /// The purge epoch its `INCR` returned.
    epoch: u64,
}

/// Which purge epochs this node has accounted for: `known` and everything below it were
/// received (or verified by a check); `pending` were received above a gap.
#[derive(Debug, Default)]
pub(super) struct Epoch {
    known: Option<u64>,
    pending: BTreeSet<u64>,
    overflow: bool,
}

impl Epoch {
    /// Notes a purge epoch received in a message (or returned by this node's own `INCR`).
    fn saw(&mut self, epoch: u64) {
        if self.known.is_some_and(|k| epoch <= k) {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            self.pending.clear();
            self.overflow = true;
        }
        self.pending.insert(epoch);
        self.advance();
    }

    fn advance(&mut self) {
        if let Some(known) = &mut self.known {
            while self.pending.remove(&(*known + 1)) {
                *known += 1;
            }
        }
    }

    /// Takes Redis's epoch as known; returns whether purges were missed since the last
    /// check: an epoch between the two that no message brought, or an epoch that went back
    /// (Redis lost its data, and with it the count). The first check only sets the baseline.
    fn checked(&mut self, remote: u64) -> bool {
        let missed = match self.known {
            None => false,
            Some(known) if remote < known => true,
            Some(known) if remote == known => self.overflow,
            Some(known) => {
                let received = self.pending.range(known + 1..=remote).count() as u64;
                self.overflow || remote - known > received
            }
        };
        self.known = Some(remote);
        self.overflow = false;
        self.pending.retain(|&e| e > remote);
        self.advance();
        missed
    }

    /// The epoch write-throughs expect: `None` before the first check (writes unguarded).
    pub(super) fn known(&self) -> Option<u64> {
        self.known
    }
}

/// Applies a purge made on this node to Redis and publishes it, in the background. Failures
/// are logged and counted; the purge of this node's memory has already happened.
pub(crate) fn fan_out(shared: &Shared, purge: &Purge) {
    let Some(tier) = shared.tier.clone() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        bump(&tier.counters().purge_failures);
        tracing::warn!("purge outside a tokio runtime: not applied to the shared tier");
        return;
    };
    let purge = purge.clone();
    runtime.spawn(async move {
        if let Err(e) = apply_to_redis(&tier, &purge).await {
            bump(&tier.counters().purge_failures);
            tracing::warn!(error = %e, ?purge, "purge not applied to the shared tier");
        } else {
            bump(&tier.counters().purges);
        }
    });
}

/// `INCR` the epoch (from then on, write-throughs that started before are refused), delete
/// what the purge names, then publish it: a node that applies the message and misses again
/// finds nothing in Redis.
async fn apply_to_redis(tier: &RedisTier, purge: &Purge) -> Result<(), super::TierError> {
    let epoch_key = tier.epoch_key();
    let epoch: u64 = tier
        .call(|mut c| async move { redis::cmd("INCR").arg(epoch_key).query_async(&mut c).await })
        .await?;
    tier.epoch().saw(epoch);
    let (kind, value, soft) = purge.wire();
    match kind {
        "path" => tier.drop_index(tier.path_index(value)).await?,
        "tag" => tier.drop_index(tier.tag_index(value)).await?,
        _ => drop_matching_paths(tier, purge).await?,
    }
    let message = Message {
        v: VERSION,
        kind: kind.to_owned(),
        value: value.to_owned(),
        soft,
        node: tier.inner.node.clone(),
        epoch,
    };
    let payload = serde_json::to_vec(&message).expect("a message serializes");
    let channel = tier.channel();
    tier.call(|mut c| async move {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async::<()>(&mut c)
            .await
    })
    .await
}

/// A pattern purge: `SCAN` the path indexes (bounded `COUNT` per call) and drop those whose
/// path matches.
async fn drop_matching_paths(tier: &RedisTier, purge: &Purge) -> Result<(), super::TierError> {
    let index_prefix = tier.path_index("");
    let glob = format!("{}*", escape_glob(&index_prefix));
    let mut cursor = 0u64;
    loop {
        let glob = glob.clone();
        let (next, keys): (u64, Vec<Vec<u8>>) = tier
            .call(|mut c| async move {
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(glob)
                    .arg("COUNT")
                    .arg(SCAN_COUNT)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        for key in keys {
            let path = key
                .strip_prefix(index_prefix.as_bytes())
                .and_then(|p| std::str::from_utf8(p).ok());
            if path.is_some_and(|p| purge.matches_path(p)) {
                tier.drop_index(key).await?;
            }
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Starts the node's listener once it has a layer and a runtime.
pub(super) fn start(tier: &RedisTier) {
    let Some(owner) = tier.inner.owner.get() else {
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    if tier
        .inner
        .listening
        .swap(true, std::sync::atomic::Ordering::AcqRel)
    {
        return;
    }
    runtime.spawn(listen(tier.clone(), owner.clone()));
}

/// The listener: subscribes on a dedicated pub/sub connection, applies other nodes' purges,
/// and every check interval reads the purge epoch (one `GET`) and pings the subscription.
/// A lost subscription is made again; the epoch is checked on every (re)subscription.
/// Ends when the layer is gone.
async fn listen(tier: RedisTier, owner: Weak<Shared>) {
    let interval = tier.inner.purge_check;
    let mut was_up = false;
    loop {
        match subscribe(&tier).await {
            Ok(pubsub) => {
                tracing::debug!("purge subscription up");
                was_up = true;
                if !check(&tier, &owner).await {
                    return;
                }
                // Up once the first epoch check is done: from here on, a missed purge is
                // measured against this node's own baseline.
                tier.inner
                    .subscribed
                    .store(true, std::sync::atomic::Ordering::Release);
                let (mut sink, mut stream) = pubsub.split();
                let mut tick =
                    tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        msg = stream.next() => {
                            let Some(msg) = msg else { break };
                            let Some(shared) = owner.upgrade() else { return };
                            receive(&tier, &shared, msg.get_payload_bytes());
                        }
                        _ = tick.tick() => {
                            if !check(&tier, &owner).await {
                                return;
                            }
                            let ping = sink.ping::<redis::Value>();
                            if !matches!(tokio::time::timeout(tier.inner.timeout, ping).await, Ok(Ok(_))) {
                                break;
                            }
                        }
                    }
                }
                tier.inner
                    .subscribed
                    .store(false, std::sync::atomic::Ordering::Release);
                bump(&tier.counters().purge_failures);
                tracing::warn!("purge subscription lost; subscribing again");
            }
            Err(e) => {
                if was_up {
                    was_up = false;
                    tracing::warn!(error = %e, "purge subscription failed; retrying");
                } else {
                    tracing::debug!(error = %e, "purge subscription failed; retrying");
                }
            }
        }
        tokio::time::sleep(interval.min(Duration::from_millis(200))).await;
        if !check(&tier, &owner).await {
            return;
        }
    }
}

async fn subscribe(tier: &RedisTier) -> Result<redis::aio::PubSub, String> {
    let connect = async {
        let mut pubsub = tier.inner.client.get_async_pubsub().await?;
        pubsub.subscribe(tier.channel()).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(tier.inner.connect_timeout, connect).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out".to_owned()),
    }
}

/// One epoch check: drops the memory store if purges were missed. `false` once the layer is
/// gone.
async fn check(tier: &RedisTier, owner: &Weak<Shared>) -> bool {
    let key = tier.epoch_key();
    let remote: Result<Option<u64>, _> = tier
        .call(|mut c| async move { redis::cmd("GET").arg(key).query_async(&mut c).await })
        .await;
    let Some(shared) = owner.upgrade() else {
        return false;
    };
    if let Ok(remote) = remote {
        if tier.epoch().checked(remote.unwrap_or(0)) {
            let dropped = purge::drop_all(&shared);
            bump(&tier.counters().epoch_drops);
            tracing::warn!(
                dropped,
                "purges were missed (purge epoch moved without their messages): memory store dropped"
            );
        }
    }
    true
}

/// Applies a purge message from another node to this node's memory.
fn receive(tier: &RedisTier, shared: &Arc<Shared>, payload: &[u8]) {
    let message = match serde_json::from_slice::<Message>(payload) {
        Ok(m) if m.v == VERSION => m,
        // Not noted: the epoch check counts it as missed and drops the store.
        Ok(m) => {
            tracing::warn!(version = m.v, "purge message of another version ignored");
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "unreadable purge message ignored");
            return;
        }
    };
    let Some(purge) = Purge::from_wire(&message.kind, &message.value, message.soft) else {
        tracing::warn!(kind = %message.kind, "purge message with an unknown target ignored");
        return;
    };
    if message.node != tier.inner.node {
        let n = purge::apply(shared, &purge, shared.clock.now());
        bump(&tier.counters().purge_messages);
        tracing::debug!(?purge, objects = n, "purge from another node applied");
    }
    tier.epoch().saw(message.epoch);
}

impl RedisTier {
    pub(super) fn epoch(&self) -> std::sync::MutexGuard<'_, Epoch> {
        self.inner
            .epoch
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_in_the_epoch_are_missed_purges() {
        let mut e = Epoch::default();
        e.saw(3);
        assert!(!e.checked(5), "the first check is the baseline");
        assert_eq!(e.known(), Some(5));
        // Received in order, or out of order: nothing missed.
        e.saw(7);
        e.saw(6);
        assert_eq!(e.known(), Some(7));
        assert!(!e.checked(7));
        e.saw(9);
        assert_eq!(e.known(), Some(7));
        e.saw(8);
        assert!(!e.checked(9));
        // 10 never came.
        e.saw(11);
        assert!(e.checked(11));
        assert!(!e.checked(11));
        // Redis lost the count.
        assert!(e.checked(0));
        assert_eq!(e.known(), Some(0));
    }

    #[test]
    fn globs_are_escaped() {
        assert_eq!(escape_glob("a*b?[c]\\"), "a\\*b\\?\\[c\\]\\\\");
    }
}
