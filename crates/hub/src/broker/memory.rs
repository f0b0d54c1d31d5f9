//! [`MemoryBroker`]: the broker of a hub that runs in one process.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard, OnceLock, Weak},
    time::Duration,
};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use tokio::time::Instant;

use super::{
    Broker, BrokerError, BrokerSink, ClientInfo, Delivery, History, HistoryOptions, HistoryQuery,
    Publication, PublishOptions, StreamPosition,
};

/// How often expired history and presence entries are swept away.
const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The in-process broker: offsets, history and presence in this process's
/// memory, deliveries straight to the hub. The default broker of a hub.
///
/// - Each channel's stream has a random epoch, made when the stream is
///   first used and made anew once it expired (its history's `ttl` after
///   its last publication): offsets then restart from 1.
/// - Publications are handed to the sink in offset order: the offset is
///   assigned and the publication delivered under the channel's lock, so
///   concurrent publishers on one channel are delivered in the order of
///   their offsets. Channels do not wait for each other.
/// - [`history`](Broker::history) with `since` returns the oldest
///   publications after it (up to `limit`), so a caller can page forward;
///   without `since`, the most recent ones.
/// - Presence entries expire `ttl` after they were last added.
///
/// Everything is lost when the process exits: history does not survive a
/// restart, and a restarted process starts new epochs, which clients
/// resuming from an old position are told (`recovered: false`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), gotalk_hub::broker::BrokerError> {
/// use std::time::Duration;
/// use gotalk_hub::broker::{memory::MemoryBroker, Broker, HistoryOptions, HistoryQuery, PublishOptions};
///
/// let broker = MemoryBroker::new();
/// let options = PublishOptions {
///     history: HistoryOptions { size: 10, ttl: Duration::from_secs(60) },
///     info: None,
/// };
/// let first = broker.publish("news", "1".into(), &options).await?;
/// broker.publish("news", "2".into(), &options).await?;
/// let history = broker
///     .history("news", HistoryQuery { since: Some(first), limit: 10 })
///     .await?;
/// assert!(history.complete);
/// assert_eq!(history.publications.len(), 1);
/// assert_eq!(history.publications[0].data, "2");
/// assert_eq!(history.position.offset, 2);
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct MemoryBroker {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    channels: Mutex<HashMap<Arc<str>, Arc<Slot>>>,
    sink: OnceLock<Arc<dyn BrokerSink>>,
}

#[derive(Default)]
struct Slot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    /// Set when the sweeper took the slot out of the map: whoever still
    /// holds it must look it up again.
    removed: bool,
    subscribed: bool,
    stream: Option<Stream>,
    presence: HashMap<String, (ClientInfo, Instant)>,
}

struct Stream {
    epoch: Arc<str>,
    offset: u64,
    history: VecDeque<Publication>,
    expires: Instant,
}

impl Stream {
    fn new(now: Instant, ttl: Duration) -> Self {
        Self {
            epoch: crate::id::random_hex().into(),
            offset: 0,
            history: VecDeque::new(),
            expires: now + ttl,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.to_string(),
        }
    }
}

impl SlotState {
    /// Drops what has expired by `now`.
    fn expire(&mut self, now: Instant) {
        if self.stream.as_ref().is_some_and(|s| s.expires <= now) {
            self.stream = None;
        }
        self.presence.retain(|_, (_, until)| *until > now);
    }

    fn is_empty(&self) -> bool {
        !self.subscribed && self.stream.is_none() && self.presence.is_empty()
    }

    /// The live stream, made if there is none (a stream read before its
    /// first publication gets its epoch now, so that a position handed out
    /// now is still valid after that publication).
    fn stream(&mut self, now: Instant, ttl: Duration) -> &mut Stream {
        self.expire(now);
        self.stream.get_or_insert_with(|| Stream::new(now, ttl))
    }
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many channels this broker delivers to its hub (subscribed and
    /// not unsubscribed since). For tests and metrics.
    pub fn subscribed_channels(&self) -> usize {
        self.lock_map()
            .values()
            .filter(|slot| lock(&slot.state).subscribed)
            .count()
    }

    /// How many channels have any state (a stream, presence entries or a
    /// subscription). Expired state goes within a second of expiring.
    pub fn channel_count(&self) -> usize {
        self.lock_map().len()
    }

    fn lock_map(&self) -> MutexGuard<'_, HashMap<Arc<str>, Arc<Slot>>> {
        lock(&self.inner.channels)
    }

    /// Runs `f` on `channel`'s state, under the channel's lock (made if
    /// absent).
    fn with_slot<R>(&self, channel: &str, f: impl FnOnce(&mut SlotState) -> R) -> R {
        loop {
            let slot = self.lock_map().entry(channel.into()).or_default().clone();
            let mut state = lock(&slot.state);
            if !state.removed {
                return f(&mut state);
            }
        }
    }

    fn deliver(&self, channel: &str, delivery: Delivery) {
        if let Some(sink) = self.inner.sink.get() {
            sink.deliver(channel, delivery);
        }
    }

    fn publish_now(&self, channel: &str, data: Bytes, options: &PublishOptions) -> StreamPosition {
        let now = Instant::now();
        let HistoryOptions { size, ttl } = options.history;
        self.with_slot(channel, |state| {
            let subscribed = state.subscribed;
            let stream = state.stream(now, ttl);
            stream.offset += 1;
            stream.expires = now + ttl;
            let publication = Publication {
                offset: stream.offset,
                data,
                info: options.info.clone(),
            };
            if size > 0 {
                stream.history.push_back(publication.clone());
            }
            while stream.history.len() > size {
                stream.history.pop_front();
            }
            let position = stream.position();
            if subscribed {
                // Under the channel's lock: deliveries leave in offset order.
                let epoch = stream.epoch.clone();
                self.deliver(channel, Delivery::Publication { epoch, publication });
            }
            position
        })
    }

    fn history_now(&self, channel: &str, query: &HistoryQuery) -> History {
        let now = Instant::now();
        self.with_slot(channel, |state| {
            let stream = state.stream(now, HistoryOptions::default().ttl);
            let position = stream.position();
            let kept = &stream.history;
            match &query.since {
                None => {
                    let skip = kept.len().saturating_sub(query.limit);
                    History {
                        publications: kept.iter().skip(skip).cloned().collect(),
                        position,
                        complete: true,
                    }
                }
                Some(since) => {
                    let first_kept = kept.front().map_or(stream.offset + 1, |p| p.offset);
                    let complete = *since.epoch == *stream.epoch
                        && since.offset <= stream.offset
                        && since.offset + 1 >= first_kept;
                    // Same epoch: what is still kept after `since`, even
                    // if trimmed past it (complete or not); another epoch's
                    // offsets say nothing about this one's.
                    let publications = if *since.epoch == *stream.epoch {
                        kept.iter()
                            .filter(|p| p.offset > since.offset)
                            .take(query.limit)
                            .cloned()
                            .collect()
                    } else {
                        Vec::new()
                    };
                    History {
                        publications,
                        position,
                        complete,
                    }
                }
            }
        })
    }

    fn sweep(&self) {
        let now = Instant::now();
        self.lock_map().retain(|_, slot| {
            // A busy channel (delivering, say) is left for the next sweep
            // rather than waited for with the map locked.
            let Ok(mut state) = slot.state.try_lock() else {
                return true;
            };
            state.expire(now);
            if state.is_empty() {
                state.removed = true;
                return false;
            }
            true
        });
    }
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBroker")
            .field("channels", &self.channel_count())
            .field("started", &self.inner.sink.get().is_some())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Nothing here panics while holding a lock but a sink; the state is
    // consistent between statements either way.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Sweeps expired state until the broker is dropped.
async fn sweeper(inner: Weak<Inner>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        MemoryBroker { inner }.sweep();
    }
}

impl Broker for MemoryBroker {
    fn start(&self, sink: Arc<dyn BrokerSink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        if self.inner.sink.set(sink).is_err() {
            tracing::warn!("MemoryBroker started twice; keeping the first sink");
        } else {
            tokio::spawn(sweeper(Arc::downgrade(&self.inner)));
        }
        futures::future::ready(Ok(())).boxed()
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        futures::future::ready(Ok(self.publish_now(channel, data, options))).boxed()
    }

    fn publish_presence<'a>(
        &'a self,
        channel: &'a str,
        event: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.with_slot(channel, |state| {
            if state.subscribed {
                self.deliver(channel, event.clone());
            }
        });
        futures::future::ready(Ok(())).boxed()
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.with_slot(channel, |state| state.subscribed = true);
        futures::future::ready(Ok(())).boxed()
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.with_slot(channel, |state| state.subscribed = false);
        futures::future::ready(Ok(())).boxed()
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        futures::future::ready(Ok(self.history_now(channel, &query))).boxed()
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let until = Instant::now() + ttl;
        self.with_slot(channel, |state| {
            state
                .presence
                .insert(info.client.clone(), (info.clone(), until));
        });
        futures::future::ready(Ok(())).boxed()
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.with_slot(channel, |state| state.presence.remove(client));
        futures::future::ready(Ok(())).boxed()
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>> {
        let now = Instant::now();
        let mut clients = self.with_slot(channel, |state| {
            state.expire(now);
            state
                .presence
                .values()
                .map(|(info, _)| info.clone())
                .collect::<Vec<_>>()
        });
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        futures::future::ready(Ok(clients)).boxed()
    }
}

#[cfg(test)]
mod tests;
