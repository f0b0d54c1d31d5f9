//! [`RedisBroker`]: publications, history and presence shared by every hub
//! node through one Redis (standalone, or a Sentinel-managed primary; not
//! Redis Cluster). Needs Redis 5 or later; tested with Redis 7.
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
//! of decimal lengths, then the raw bytes; the data is not escaped:
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

mod codec;
mod keys;
mod options;
mod scripts;
mod subscriber;

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    hash::{BuildHasher, RandomState},
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ::redis::{
    Client, RedisError, RedisResult, Value,
    aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink},
};
use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{Instant, timeout_at},
};

pub use self::options::{RedisBrokerOptions, RedisConfigError};
use self::{codec::ReplyError, keys::Keys, scripts::Scripts, subscriber::Status};
use super::{
    Broker, BrokerError, BrokerSink, ClientInfo, Delivery, History, HistoryQuery, Publication,
    PublishOptions, StreamPosition,
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
}

struct Task {
    handle: JoinHandle<()>,
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
        Ok(Self {
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
        }
    }
}

/// Locks a std mutex; a panic elsewhere (in a sink, say) does not make the
/// broker unusable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A new epoch: 48 random bits in hex. It only has to differ from the
/// channel's previous epochs.
fn new_epoch() -> String {
    format!("{:012x}", random() >> 16)
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

/// Milliseconds for PEXPIRE: at least 1 (0 would delete the key), at most
/// about 31,000 years (Redis refuses expiry times that overflow).
fn millis(duration: Duration) -> u64 {
    const MAX: u64 = 1_000_000_000_000_000;
    u64::try_from(duration.as_millis()).map_or(MAX, |ms| ms.clamp(1, MAX))
}

/// Whether retrying an idempotent command may help: the connection it
/// went to was dead (the connection manager reconnects on such errors).
fn connection_lost(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

fn broker_error(what: &str, error: RedisError) -> BrokerError {
    match error.kind() {
        ::redis::ErrorKind::Parse | ::redis::ErrorKind::UnexpectedReturnType => {
            BrokerError::Protocol(format!("{what}: {error}"))
        }
        _ => BrokerError::Unavailable(format!("{what}: {error}")),
    }
}

fn reply_error(what: &str, error: ReplyError) -> BrokerError {
    BrokerError::Protocol(format!("{what}: {error}"))
}

impl Inner {
    fn manager(&self) -> Result<ConnectionManager, BrokerError> {
        let mut slot = lock(&self.manager);
        if let Some(manager) = &*slot {
            return Ok(manager.clone());
        }
        // No retries inside the manager: while Redis is down every command
        // fails at once (and makes the manager try again), instead of
        // waiting out a backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout()))
            .set_response_timeout(Some(self.options.operation_timeout()))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| broker_error("connecting", e))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Runs `op` on the command connection within the operation timeout;
    /// with `retry`, once more if the connection turned out to be dead.
    async fn run<T, F, Fut>(&self, what: &str, retry: bool, op: F) -> Result<T, BrokerError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let limit = self.options.operation_timeout();
        let deadline = Instant::now() + limit;
        let manager = self.manager()?;
        let attempts = async {
            match op(manager.clone()).await {
                Err(error) if retry && connection_lost(&error) => {
                    tracing::debug!(%error, "redis broker: {what}: retrying on a new connection");
                    op(manager).await
                }
                result => result,
            }
        };
        match timeout_at(deadline, attempts).await {
            Ok(result) => result.map_err(|e| broker_error(what, e)),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "{what}: no answer from Redis within {limit:?}"
            ))),
        }
    }

    async fn publish(
        &self,
        channel: &str,
        data: &[u8],
        options: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        const WHAT: &str = "publish";
        let history = options.history;
        let ttl = millis(history.ttl);
        let meta_ttl = ttl.max(millis(self.options.position_ttl()));
        let (with_info, user, client) = match &options.info {
            Some(info) => ("1", info.user.as_str(), info.client.as_str()),
            None => ("0", "", ""),
        };
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(self.keys.meta(channel))
            .key(self.keys.stream(channel))
            .arg(self.keys.pubsub(channel))
            .arg(data)
            .arg(new_epoch())
            // Redis counts in signed 64 bits.
            .arg(history.size.min(i64::MAX as usize))
            .arg(ttl)
            .arg(meta_ttl)
            .arg(with_info)
            .arg(user)
            .arg(client);
        let invocation = &invocation;
        // Not retried: the script may have run before the connection broke.
        let reply: Value = self
            .run(WHAT, false, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let mut reply = codec::array(reply, WHAT)
            .map_err(|e| reply_error(WHAT, e))?
            .into_iter();
        let (Some(offset), Some(epoch), None) = (reply.next(), reply.next(), reply.next()) else {
            return Err(reply_error(WHAT, ReplyError("publish reply")));
        };
        Ok(StreamPosition {
            offset: codec::integer(offset, "offset").map_err(|e| reply_error(WHAT, e))?,
            epoch: codec::string(epoch, "epoch").map_err(|e| reply_error(WHAT, e))?,
        })
    }

    async fn history(&self, channel: &str, query: HistoryQuery) -> Result<History, BrokerError> {
        const WHAT: &str = "history";
        let count = |n: usize| n.min(i64::MAX as usize).to_string();
        let (mode, first, wanted) = match &query.since {
            // One entry at least, to see whether the one after `since` is
            // still there.
            Some(since) => (
                "after",
                since.offset.saturating_add(1).to_string(),
                count(query.limit.max(1)),
            ),
            None => ("latest", String::new(), count(query.limit)),
        };
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation
            .key(self.keys.meta(channel))
            .key(self.keys.stream(channel))
            .arg(new_epoch())
            .arg(millis(self.options.position_ttl()))
            .arg(mode)
            .arg(first)
            .arg(wanted);
        let invocation = &invocation;
        let reply: Value = self
            .run(WHAT, true, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let (position, mut publications) =
            parse_history(reply).map_err(|e| reply_error(WHAT, e))?;
        let complete = match &query.since {
            None => {
                publications.reverse();
                true
            }
            Some(since) if since.epoch != position.epoch || since.offset > position.offset => {
                publications.clear();
                false
            }
            Some(since) => {
                since.offset == position.offset
                    || publications
                        .first()
                        .is_some_and(|p| p.offset == since.offset + 1)
            }
        };
        publications.truncate(query.limit);
        Ok(History {
            publications,
            position,
            complete,
        })
    }

    async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.add_presence.prepare_invoke();
        invocation
            .key(self.keys.presence(channel))
            .key(self.keys.presence_expiry(channel))
            .arg(&info.client)
            .arg(&info.user)
            .arg(millis(ttl));
        let invocation = &invocation;
        self.run("add presence", true, |mut c| async move {
            invocation.invoke_async::<Value>(&mut c).await
        })
        .await
        .map(drop)
    }

    async fn remove_presence(&self, channel: &str, client: &str) -> Result<(), BrokerError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .hdel(self.keys.presence(channel), client)
            .ignore()
            .zrem(self.keys.presence_expiry(channel), client)
            .ignore();
        let pipe = &pipe;
        self.run("remove presence", true, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        const WHAT: &str = "presence";
        let mut invocation = self.scripts.presence.prepare_invoke();
        invocation
            .key(self.keys.presence(channel))
            .key(self.keys.presence_expiry(channel));
        let invocation = &invocation;
        let reply: Value = self
            .run(WHAT, true, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        parse_presence(reply).map_err(|e| reply_error(WHAT, e))
    }

    async fn publish_presence(&self, channel: &str, event: &Delivery) -> Result<(), BrokerError> {
        let Some(message) = codec::encode_presence(event) else {
            return Err(BrokerError::Protocol(
                "publish_presence takes a join or a leave, not a publication".to_owned(),
            ));
        };
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(self.keys.pubsub(channel)).arg(message);
        let cmd = &cmd;
        self.run("publish presence", false, |mut c| async move {
            cmd.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Makes sure the command connection works again after Redis came
    /// back, so the hub's recovery (history reads after `resubscribed`)
    /// does not trip over the connection that died.
    async fn check_commands(&self) {
        let result = self
            .run("ping", true, |mut c| async move {
                ::redis::cmd("PING").query_async::<()>(&mut c).await
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "redis broker: command connection not back yet");
        }
    }
}

/// `{epoch, offset, entries}` from the history script.
fn parse_history(reply: Value) -> Result<(StreamPosition, Vec<Publication>), ReplyError> {
    const WHAT: &str = "history reply";
    let mut reply = codec::array(reply, WHAT)?.into_iter();
    let (Some(epoch), Some(offset), Some(entries), None) =
        (reply.next(), reply.next(), reply.next(), reply.next())
    else {
        return Err(ReplyError(WHAT));
    };
    let position = StreamPosition {
        offset: codec::integer(offset, WHAT)?,
        epoch: codec::string(epoch, WHAT)?,
    };
    let publications = codec::array(entries, WHAT)?
        .into_iter()
        .map(codec::stream_entry)
        .collect::<Result<_, _>>()?;
    Ok((position, publications))
}

/// `{clients, users}` from the presence script.
fn parse_presence(reply: Value) -> Result<Vec<ClientInfo>, ReplyError> {
    const WHAT: &str = "presence reply";
    let mut reply = codec::array(reply, WHAT)?.into_iter();
    let (Some(clients), Some(users), None) = (reply.next(), reply.next(), reply.next()) else {
        return Err(ReplyError(WHAT));
    };
    let (clients, users) = (codec::array(clients, WHAT)?, codec::array(users, WHAT)?);
    if clients.len() != users.len() {
        return Err(ReplyError(WHAT));
    }
    let mut entries = Vec::with_capacity(clients.len());
    for (client, user) in clients.into_iter().zip(users) {
        // An entry whose hash field is gone (a half-expired pair) is not
        // listed.
        if user == Value::Nil {
            continue;
        }
        entries.push(ClientInfo {
            user: codec::string(user, WHAT)?,
            client: codec::string(client, WHAT)?,
        });
    }
    Ok(entries)
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
                    Task {
                        handle: tokio::spawn(subscriber::run(self.inner.clone(), status)),
                        status: receiver,
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
        Box::pin(async move { self.inner.publish(channel, &data, options).await })
    }

    fn publish_presence<'a>(
        &'a self,
        channel: &'a str,
        event: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.publish_presence(channel, event))
    }

    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.subscribe(channel))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.unsubscribe(channel))
    }

    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        Box::pin(self.inner.history(channel, query))
    }

    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.add_presence(channel, info, ttl))
    }

    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.inner.remove_presence(channel, client))
    }

    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>> {
        Box::pin(self.inner.presence(channel))
    }
}
