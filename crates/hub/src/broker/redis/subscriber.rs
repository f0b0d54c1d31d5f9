//! The pub/sub side: one connection per broker, the task that keeps it up
//! and hands what arrives to the sink, and SUBSCRIBE/UNSUBSCRIBE.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use ::redis::{
    Msg, Value,
    aio::{PubSubSink, PubSubStream},
};
use futures::StreamExt;
use tokio::{
    sync::{mpsc, watch},
    time::{Instant, MissedTickBehavior, interval_at, sleep, timeout, timeout_at},
};

use super::{Inner, codec, lock, random};
use crate::broker::BrokerError;

/// At most this many channels per SUBSCRIBE when resubscribing.
const SUBSCRIBE_BATCH: usize = 1000;

/// The pub/sub connection's state, for [`Broker::start`](crate::broker::Broker::start).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Status {
    /// Trying to connect.
    Connecting,
    /// Connected, every channel subscribed.
    Up,
    /// The last attempt failed, or the connection broke: why.
    Down(String),
}

/// Where what the pub/sub connection brings is handled.
pub(super) enum Handoff {
    /// Right here, on the pub/sub task.
    Here,
    /// On the runtime that started the broker (the broker runs its
    /// connections on a thread of its own): a node's fan-out wakes its
    /// connections from their own runtime, not one by one from another
    /// thread. Bounded, so that a node that does not keep up stops reading
    /// Redis, as it would without the thread.
    Forward(mpsc::Sender<Handed>),
}

/// What the pub/sub task hands on, in order.
pub(super) enum Handed {
    Message(Msg),
    Resubscribed,
}

/// How many messages may wait for the node's runtime (see [`Handoff`]).
pub(super) const HANDOFF_QUEUE: usize = 1024;

/// Handles what [`Handoff::Forward`] hands on, on the node's runtime, until
/// the pub/sub task is gone.
pub(super) async fn handle_forwarded(inner: Arc<Inner>, mut handed: mpsc::Receiver<Handed>) {
    while let Some(item) = handed.recv().await {
        match item {
            Handed::Message(message) => dispatch(&inner, &message),
            Handed::Resubscribed => resubscribed(&inner),
        }
    }
}

fn resubscribed(inner: &Inner) {
    let sink = lock(&inner.subscriptions).sink.clone();
    if let Some(sink) = sink {
        guarded("resubscribed", || sink.resubscribed());
    }
}

impl Handoff {
    /// Hands `item` on; false once the receiving task is gone.
    async fn hand(&self, inner: &Inner, item: Handed) -> bool {
        match self {
            Self::Here => {
                match item {
                    Handed::Message(message) => dispatch(inner, &message),
                    Handed::Resubscribed => resubscribed(inner),
                }
                true
            }
            Self::Forward(to) => to.send(item).await.is_ok(),
        }
    }
}

/// Keeps the pub/sub connection up for as long as the broker lives (the
/// broker aborts this task when dropped).
pub(super) async fn run(inner: Arc<Inner>, status: watch::Sender<Status>, handoff: Handoff) {
    let mut failures: u32 = 0;
    let mut connections: u64 = 0;
    loop {
        status.send_replace(Status::Connecting);
        match connect(&inner).await {
            Ok((link, stream)) => {
                failures = 0;
                connections += 1;
                if connections > 1 {
                    tracing::info!("redis broker: pub/sub connection back, channels resubscribed");
                    inner.check_commands().await;
                    if !handoff.hand(&inner, Handed::Resubscribed).await {
                        return;
                    }
                }
                status.send_replace(Status::Up);
                let Some(why) = pump(&inner, link, stream, &handoff).await else {
                    return;
                };
                lock(&inner.subscriptions).link = None;
                tracing::warn!("redis broker: pub/sub connection lost: {why}");
                status.send_replace(Status::Down(why));
            }
            Err(why) => {
                failures = failures.saturating_add(1);
                tracing::warn!(
                    attempt = failures,
                    "redis broker: pub/sub connection failed: {why}"
                );
                status.send_replace(Status::Down(why));
            }
        }
        sleep(backoff(&inner, failures)).await;
    }
}

/// The delay before the next attempt after `failures` failed ones in a
/// row: exponential from the minimum to the maximum, the upper half
/// jittered so that nodes do not reconnect in lockstep.
fn backoff(inner: &Inner, failures: u32) -> Duration {
    let (min, max) = inner.options.reconnect_delay();
    let delay = min.saturating_mul(1 << failures.min(16)).min(max);
    let half = delay / 2;
    let jitter_nanos = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX).max(1);
    half + Duration::from_nanos(random() % jitter_nanos)
}

/// Opens the pub/sub connection and subscribes every wanted channel on it.
async fn connect(inner: &Inner) -> Result<(PubSubSink, PubSubStream), String> {
    let connect_timeout = inner.options.connect_timeout();
    let pubsub = match timeout(connect_timeout, inner.client.get_async_pubsub()).await {
        Ok(Ok(pubsub)) => pubsub,
        Ok(Err(error)) => return Err(format!("connecting: {error}")),
        Err(_) => return Err(format!("connecting: no answer within {connect_timeout:?}")),
    };
    let (mut link, stream) = pubsub.split();

    let deadline = Instant::now() + inner.options.operation_timeout();
    let Ok(_subscribing) = timeout_at(deadline, inner.subscribing.lock()).await else {
        return Err("resubscribing: timed out waiting for a subscribe in progress".to_owned());
    };
    let channels: Vec<String> = lock(&inner.subscriptions)
        .channels
        .keys()
        .map(|channel| inner.keys.pubsub(channel))
        .collect();
    for batch in channels.chunks(SUBSCRIBE_BATCH) {
        match timeout_at(deadline, link.subscribe(batch)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => return Err(format!("resubscribing: {error}")),
            Err(_) => return Err("resubscribing: timed out".to_owned()),
        }
    }
    // Under `subscribing`, so no channel was added or removed since the
    // list above was taken.
    lock(&inner.subscriptions).link = Some(link.clone());
    Ok((link, stream))
}

/// Hands what arrives to the sink until the connection breaks; returns why
/// it did, or `None` if the task handling what is handed on is gone.
async fn pump(
    inner: &Inner,
    mut link: PubSubSink,
    mut stream: PubSubStream,
    handoff: &Handoff,
) -> Option<String> {
    let every = inner.options.ping_interval();
    let mut ping = interval_at(Instant::now() + every, every);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = stream.next() => match message {
                Some(message) => {
                    if !handoff.hand(inner, Handed::Message(message)).await {
                        return None;
                    }
                }
                None => return Some("connection closed".to_owned()),
            },
            _ = ping.tick() => {
                let limit = inner.options.operation_timeout();
                match timeout(limit, link.ping::<Value>()).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(error)) => return Some(format!("ping failed: {error}")),
                    Err(_) => return Some(format!("no answer to ping within {limit:?}")),
                }
            }
        }
    }
}

/// Decodes one message and delivers it if its channel is still wanted.
fn dispatch(inner: &Inner, message: &Msg) {
    let name = message.get_channel_name();
    let Some(channel) = inner.keys.channel_of(name) else {
        tracing::debug!(name, "redis broker: message on a foreign pub/sub channel");
        return;
    };
    let decoded = match codec::decode(message.get_payload_bytes()) {
        Ok(decoded) => decoded,
        Err(error) => {
            tracing::warn!(channel, %error, "redis broker: skipping a message that does not decode");
            return;
        }
    };
    // Delivered under the lock, so that nothing is delivered for a channel
    // once `unsubscribe` has removed it.
    let mut subscriptions = lock(&inner.subscriptions);
    let subscriptions = &mut *subscriptions;
    let Some(last_epoch) = subscriptions.channels.get_mut(channel) else {
        tracing::trace!(channel, "redis broker: message for an unsubscribed channel");
        return;
    };
    let Some(sink) = &subscriptions.sink else {
        return;
    };
    let delivery = decoded.into_delivery(|epoch| match last_epoch {
        Some(last) if **last == *epoch => last.clone(),
        _ => last_epoch.insert(Arc::from(epoch)).clone(),
    });
    guarded("deliver", || sink.deliver(channel, delivery));
}

/// Calls into the sink. A panic there (a bug in the hub) is logged and the
/// task goes on delivering: one bad message must not stop every channel of
/// the node.
fn guarded(what: &str, call: impl FnOnce()) {
    if std::panic::catch_unwind(AssertUnwindSafe(call)).is_err() {
        tracing::error!("redis broker: the sink panicked in {what}; delivering on");
    }
}

impl Inner {
    /// SUBSCRIBE on the live connection; the channel is wanted only if
    /// Redis confirmed it.
    pub(super) async fn subscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let limit = self.options.operation_timeout();
        let deadline = Instant::now() + limit;
        let timed_out =
            || BrokerError::Unavailable(format!("subscribe: timed out after {limit:?}"));
        let _subscribing = timeout_at(deadline, self.subscribing.lock())
            .await
            .map_err(|_| timed_out())?;
        let mut link = {
            let mut subscriptions = lock(&self.subscriptions);
            if subscriptions.channels.contains_key(channel) {
                return Ok(());
            }
            let Some(link) = subscriptions.link.clone() else {
                return Err(BrokerError::Unavailable(
                    "subscribe: no pub/sub connection to Redis (reconnecting)".to_owned(),
                ));
            };
            subscriptions.channels.insert(channel.to_owned(), None);
            link
        };
        let result = match timeout_at(deadline, link.subscribe(self.keys.pubsub(channel))).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(error)) => BrokerError::Unavailable(format!("subscribe: {error}")),
            Err(_) => timed_out(),
        };
        lock(&self.subscriptions).channels.remove(channel);
        Err(result)
    }

    /// Stops deliveries of `channel` at once and UNSUBSCRIBEs if connected.
    pub(super) async fn unsubscribe(&self, channel: &str) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.options.operation_timeout();
        let subscribing = timeout_at(deadline, self.subscribing.lock()).await;
        let link = {
            let mut subscriptions = lock(&self.subscriptions);
            if subscriptions.channels.remove(channel).is_none() {
                return Ok(());
            }
            subscriptions.link.clone()
        };
        // Without `subscribing` (a subscribe stuck on a dead connection),
        // an UNSUBSCRIBE now could overtake an earlier SUBSCRIBE; leave the
        // channel to the reconnection, which will not subscribe it again.
        let (Ok(_subscribing), Some(mut link)) = (subscribing, link) else {
            return Ok(());
        };
        match timeout_at(deadline, link.unsubscribe(self.keys.pubsub(channel))).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(channel, %error, "redis broker: UNSUBSCRIBE failed; deliveries stopped anyway");
            }
            Err(_) => {
                tracing::debug!(
                    channel,
                    "redis broker: UNSUBSCRIBE timed out; deliveries stopped anyway"
                );
            }
        }
        Ok(())
    }
}
