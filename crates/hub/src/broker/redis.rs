//! [`RedisBroker`]: publications, history and presence shared by every hub
//! node through one standalone Redis (not Redis Cluster; no Sentinel
//! discovery). Needs Redis 5 or later; tested with Redis 7.
//!
//! ```no_run
//! use std::sync::Arc;
//! use gotalk_hub::broker::{Broker, redis::{RedisBroker, RedisBrokerOptions}};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = RedisBroker::with_options(
//!     "redis://127.0.0.1:6379/",
//!     RedisBrokerOptions::new().with_prefix("chat:"),
//! )?;
//! let broker: Arc<dyn Broker> = Arc::new(broker);
//! // The hub calls `broker.start(sink)` and everything else.
//! # Ok(())
//! # }
//! ```
//!
//! # How it works
//!
//! - **Publish** is one Lua script, atomic in Redis: it takes the channel's
//!   next offset (starting a new epoch when the channel's position is
//!   missing), appends the publication to the channel's history stream when
//!   history is on (trimmed to exactly `size` entries, expiring `ttl` after
//!   the last publication), and `PUBLISH`es it on the channel's pub/sub
//!   channel. No two publishes of a channel interleave, so Redis publishes
//!   them in offset order and every node receives them in that order.
//! - **Deliveries**: each broker (node) holds one pub/sub connection,
//!   subscribed to the channels the hub asked for, and one task that decodes
//!   what arrives and hands it to the [`BrokerSink`] in arrival order.
//! - **Other commands** (history, presence) go through one multiplexed,
//!   reconnecting connection.
//!
//! # Keys
//!
//! With the prefix `P` (default `gotalk-hub:`) and channel `C`, names are
//! `P` + kind + `:` + `C` (e.g. `gotalk-hub:meta:chat:1`):
//!
//! | name                | type       | holds                                                     | expires                                          |
//! |---------------------|------------|-----------------------------------------------------------|--------------------------------------------------|
//! | `Pmeta:C`           | hash       | `e`: epoch, `o`: offset of the last publication           | max(history ttl, position ttl) after the last publish |
//! | `Phistory:C`        | stream     | entry `OFFSET-0` per kept publication: `d` data, `u` user, `c` client | history ttl after the last publish  |
//! | `Ppresence:C`       | hash       | client id → user                                          | with its last entry                              |
//! | `Ppresence-expiry:C`| sorted set | client id → expiry in ms since the Unix epoch, by Redis's clock | with its last entry                        |
//! | `Ppub:C`            | pub/sub    | the channel's deliveries (see below)                      | —                                                |
//!
//! A read of a channel that has no position (history, or the hub's
//! subscribe) creates it with a new epoch, kept for the position ttl.
//! Losing a channel's keys (eviction, a restart without persistence, a
//! flush) loses its history: the next publish starts a new epoch at offset
//! 1, and clients resuming from the old epoch learn that they missed
//! publications (`complete: false`).
//!
//! # Pub/sub messages
//!
//! Versioned and compact: one version byte (`1`), one kind byte, a header
//! of decimal numbers each ended by `:`, then the raw bytes; the data is not
//! escaped (the spaces below are for reading only):
//!
//! ```text
//! 1p OFFSET: EPOCH_LEN: EPOCH DATA                                 publication
//! 1P OFFSET: EPOCH_LEN: USER_LEN: CLIENT_LEN: EPOCH USER CLIENT DATA  with its publisher
//! 1j USER_LEN: USER CLIENT                                         join
//! 1l USER_LEN: USER CLIENT                                         leave
//! ```
//!
//! A message that does not decode (another version, garbage published by
//! something else) is logged at `warn` and skipped.
//!
//! # When Redis goes away
//!
//! - Every operation is bounded by the operation timeout and fails with
//!   [`BrokerError::Unavailable`]; with Redis down (connection refused) it
//!   fails at once. A failed publish may or may not have happened.
//!   History and presence reads, and presence updates, are retried once on
//!   a connection that turned out to be dead.
//! - The pub/sub connection is pinged every ping interval; when it breaks,
//!   its task reconnects with exponential backoff (with jitter),
//!   resubscribes every channel, and then calls
//!   [`BrokerSink::resubscribed`]. Publications made meanwhile were not
//!   delivered; the hub recovers them from history.
//! - `subscribe` fails with `Unavailable` while the pub/sub connection is
//!   down (the channel is not subscribed). `unsubscribe` always succeeds:
//!   deliveries stop at once, and a channel Redis could not be told about
//!   is dropped with the connection.
//! - A node that reads its pub/sub connection too slowly is disconnected
//!   by Redis (`client-output-buffer-limit pubsub`); that is handled like
//!   any lost connection: reconnect, resubscribe, `resubscribed`.
//! - Dropping the broker stops its task and closes its connections.
//!
//! # Threads
//!
//! By default the connections live on the runtime that calls the broker.
//! With [`RedisBrokerOptions::with_dedicated_thread`] they, the commands
//! and the pub/sub task run on a thread of the broker's own (a
//! current-thread runtime), and deliveries reach the [`BrokerSink`] from
//! there; dropping the broker stops that thread.

mod codec;
mod commands;
mod io_thread;
mod keys;
mod options;
mod scripts;
mod subscriber;

use std::{
    collections::HashMap,
    fmt,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ::redis::{
    Client,
    aio::{ConnectionManager, PubSubSink},
};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::{
    sync::{mpsc, watch},
    task::JoinHandle,
    time::{Instant, timeout_at},
};

pub use self::options::{RedisBrokerOptions, RedisConfigError};
use self::{
    io_thread::IoThread,
    keys::Keys,
    scripts::Scripts,
    subscriber::{Handoff, Status},
};
use super::{
    Broker, BrokerError, BrokerSink, ClientInfo, Delivery, History, HistoryQuery, PublishOptions,
    StreamPosition,
};

/// A [`Broker`] that shares publications, history and presence between hub
/// nodes through Redis. See the [module docs](self) for the keys, the
/// encoding and the behaviour when Redis goes away.
///
/// Building one connects nothing; the command connection opens on first
/// use and the pub/sub connection in [`Broker::start`].
pub struct RedisBroker {
    inner: Arc<Inner>,
    /// The pub/sub task, once started.
    task: Mutex<Option<Task>>,
    /// With [`RedisBrokerOptions::with_dedicated_thread`]: where every
    /// command and the pub/sub task run. Dropped after `task` is aborted.
    io: Option<IoThread>,
}

struct Task {
    handle: JoinHandle<()>,
    /// With a thread of its own: the task on the node's runtime that
    /// hands deliveries to the sink.
    forward: Option<JoinHandle<()>>,
    status: watch::Receiver<Status>,
}

/// What the broker and its pub/sub task share.
struct Inner {
    client: Client,
    options: RedisBrokerOptions,
    keys: Keys,
    scripts: Scripts,
    /// The command connection, made on first use (it needs a runtime).
    manager: Mutex<Option<ConnectionManager>>,
    /// Serializes SUBSCRIBE/UNSUBSCRIBE and the resubscription after a
    /// reconnect, so Redis sees them in the order the subscription set
    /// changed.
    subscribing: tokio::sync::Mutex<()>,
    subscriptions: Mutex<Subscriptions>,
}

/// The subscription set and where deliveries go.
#[derive(Default)]
struct Subscriptions {
    /// Channels this node wants, each with the epoch of its last
    /// publication (shared by the deliveries of that epoch).
    channels: HashMap<String, Option<Arc<str>>>,
    sink: Option<Arc<dyn BrokerSink>>,
    /// The live pub/sub connection's command half, every channel of
    /// `channels` subscribed on it; `None` while disconnected.
    link: Option<PubSubSink>,
}

impl RedisBroker {
    /// A broker for the Redis at `url` (`redis://[user:password@]host[:port][/db]`
    /// or `unix:///path/to/redis.sock`), with the default
    /// [`RedisBrokerOptions`].
    pub fn new(url: &str) -> Result<Self, RedisConfigError> {
        Self::with_options(url, RedisBrokerOptions::default())
    }

    /// A broker for the Redis at `url` with `options`.
    ///
    /// ```
    /// use gotalk_hub::broker::redis::{RedisBroker, RedisBrokerOptions};
    ///
    /// let broker = RedisBroker::with_options(
    ///     "redis://127.0.0.1:6379/0",
    ///     RedisBrokerOptions::new().with_prefix("hub-a:"),
    /// )
    /// .unwrap();
    /// assert_eq!(broker.options().prefix(), "hub-a:");
    /// assert!(RedisBroker::new("http://nope").is_err());
    /// ```
    pub fn with_options(url: &str, options: RedisBrokerOptions) -> Result<Self, RedisConfigError> {
        options.validate()?;
        let client = Client::open(url).map_err(|e| RedisConfigError(e.to_string()))?;
        let io = if options.dedicated_thread() {
            let io = IoThread::start()
                .map_err(|e| RedisConfigError(format!("starting the broker's thread: {e}")))?;
            Some(io)
        } else {
            None
        };
        Ok(Self {
            io,
            inner: Arc::new(Inner {
                client,
                keys: Keys::new(options.prefix()),
                options,
                scripts: Scripts::new(),
                manager: Mutex::new(None),
                subscribing: tokio::sync::Mutex::new(()),
                subscriptions: Mutex::new(Subscriptions::default()),
            }),
            task: Mutex::new(None),
        })
    }

    /// The options the broker was built with.
    pub fn options(&self) -> &RedisBrokerOptions {
        &self.inner.options
    }

    /// Runs the future `op` makes on the broker's thread if it has one,
    /// else here.
    async fn call<T, Fut>(&self, op: impl FnOnce(Arc<Inner>) -> Fut) -> Result<T, BrokerError>
    where
        Fut: Future<Output = Result<T, BrokerError>> + Send + 'static,
        T: Send + 'static,
    {
        let fut = op(self.inner.clone());
        match &self.io {
            Some(io) => io.run(fut).await,
            None => fut.await,
        }
    }
}

impl fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBroker")
            .field("redis", &self.inner.client.get_connection_info().addr())
            .field("options", &self.inner.options)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.handle.abort();
            if let Some(forward) = task.forward {
                forward.abort();
            }
        }
    }
}

/// Locks a std mutex; a panic elsewhere (in a sink, say) does not make the
/// broker unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Random enough for epochs and jitter: std's randomly keyed SipHash over
/// a counter and the time.
fn random() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    RandomState::new().hash_one((COUNTER.fetch_add(1, Ordering::Relaxed), nanos))
}

impl Broker for RedisBroker {
    /// Opens the pub/sub connection and starts its task. Fails with
    /// `Unavailable` if Redis cannot be reached within the connect timeout;
    /// the task keeps trying in the background and deliveries flow once
    /// it connects. Calling it again only changes where deliveries go.
    fn start(&self, sink: Arc<dyn BrokerSink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(async move {
            lock(&self.inner.subscriptions).sink = Some(sink);
            let mut status = {
                let mut task = lock(&self.task);
                let task = task.get_or_insert_with(|| {
                    let (status, receiver) = watch::channel(Status::Connecting);
                    let inner = self.inner.clone();
                    match &self.io {
                        None => Task {
                            handle: tokio::spawn(subscriber::run(inner, status, Handoff::Here)),
                            forward: None,
                            status: receiver,
                        },
                        Some(io) => {
                            let (to, handed) = mpsc::channel(subscriber::HANDOFF_QUEUE);
                            let forward =
                                tokio::spawn(subscriber::handle_forwarded(inner.clone(), handed));
                            Task {
                                handle: io.spawn(subscriber::run(
                                    inner,
                                    status,
                                    Handoff::Forward(to),
                                )),
                                forward: Some(forward),
                                status: receiver,
                            }
                        }
                    }
                });
                task.status.clone()
            };
            let limit =
                self.inner.options.connect_timeout() + self.inner.options.operation_timeout();
            let deadline = Instant::now() + limit;
            let outcome = timeout_at(
                deadline,
                status.wait_for(|s| !matches!(s, Status::Connecting)),
            )
            .await;
            match outcome {
                Ok(Ok(status)) => match &*status {
                    Status::Up => Ok(()),
                    Status::Down(why) => Err(BrokerError::Unavailable(why.clone())),
                    // Not returned by `wait_for` above.
                    Status::Connecting => {
                        Err(BrokerError::Unavailable("connecting to Redis".to_owned()))
                    }
                },
                Ok(Err(_)) => Err(BrokerError::Stopped),
                Err(_) => Err(BrokerError::Unavailable(format!(
                    "no pub/sub connection to Redis within {limit:?}"
                ))),
            }
        })
    }

    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        let (channel, options) = (channel.to_owned(), options.clone());
        Box::pin(
            self.call(move |inner| async move { inner.publish(&channel, &data, &options).await }),
        )
    }

    fn publish_presence<'a>(
        &'a self,
        channel: &'a str,
        event: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let (channel, event) = (channel.to_owned(), event.clone());
        Box::pin(
            self.call(move |inner| async move { inner.publish_presence(&channel, &event).await }),
        )
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(self.call(move |inner| async move { inner.subscribe(&channel).await }))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(self.call(move |inner| async move { inner.unsubscribe(&channel).await }))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(self.call(move |inner| async move { inner.history(&channel, query).await }))
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let (channel, info) = (channel.to_owned(), info.clone());
        Box::pin(
            self.call(move |inner| async move { inner.add_presence(&channel, &info, ttl).await }),
        )
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let (channel, client) = (channel.to_owned(), client.to_owned());
        Box::pin(
            self.call(move |inner| async move { inner.remove_presence(&channel, &client).await }),
        )
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>> {
        let channel = channel.to_owned();
        Box::pin(self.call(move |inner| async move { inner.presence(&channel).await }))
    }
}
