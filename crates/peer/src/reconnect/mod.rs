//! A client that reconnects by itself: [`ReconnectingPeer`].
//!
//! A [`Peer`] is one connection: when it closes, its calls fail and the
//! handle stays closed. A [`ReconnectingPeer`] is a client for a server
//! that may come and go (deploys, restarts, network cuts): it connects with
//! a *connect function* you give it, and when the connection is lost it
//! connects again, waiting longer after each failed attempt ([`Backoff`]),
//! with the same [`Handlers`] and [`Config`] every time. Calls go out on
//! whichever connection is current:
//!
//! | State when the call is made | What happens to it |
//! |---|---|
//! | [`Connected`](State::Connected) | sent at once on the connection |
//! | [`Connecting`](State::Connecting), [`BackingOff`](State::BackingOff) | [`WhenDisconnected::Queue`] (default): waits for the next connection, at most [`ReconnectOptions::queue_timeout`], with at most [`ReconnectOptions::max_queued`] others; otherwise it fails with [`Error::Unavailable`]. [`WhenDisconnected::FailFast`]: fails at once with [`Unavailable::NotConnected`] |
//! | [`Closed`](State::Closed) | fails with [`Error::Closed`] |
//!
//! A request in flight when its connection is lost fails with
//! [`Error::Closed`] and the reason, and is **never** sent again: the server
//! may have run it. Mark the calls that may safely run twice with
//! [`RequestOptions::retry_on_disconnect`] (or use
//! [`request_idempotent`](ReconnectingPeer::request_idempotent)): those are
//! sent once more on the next connection. A request the server refused
//! because it was closing (see [`Error::is_refused_by_closing`]) did not
//! run, and goes to the next connection in any case.
//!
//! # Noticing a dead connection
//!
//! A connection whose peer vanished without closing it (a machine that lost
//! power, a cut cable, a NAT that forgot the mapping) looks open until a
//! write fails, which may take minutes. Combine the client with the
//! connection's own timers in the [`Config`] it connects with: heartbeats
//! ([`Config::heartbeat_interval`], on by default every 20 s, also sent by
//! our servers) keep a healthy connection busy, and a
//! [`Config::read_timeout`] of a few heartbeat intervals closes the
//! connection with [`CloseReason::ReadTimeout`] when nothing arrives, which
//! starts a reconnect. [`Config::write_timeout`] does the same for a peer
//! that stops reading. Keep [`Config::heartbeat_interval`] on at the server
//! too (the Go server sends none: leave `read_timeout` off against it).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use gotalk_peer::{Config, HandlerError, Handlers, ReconnectingPeer, Server};
//! use gotalk_peer::reconnect::ReconnectOptions;
//!
//! let handlers = Handlers::new()
//!     .buffer("echo", |_ctx, payload| async move { Ok::<_, HandlerError>(payload) });
//! let server = Server::bind("127.0.0.1:0", handlers, Config::default()).await?.spawn();
//!
//! let config = Config {
//!     heartbeat_interval: Some(Duration::from_secs(5)),
//!     read_timeout: Some(Duration::from_secs(15)), // three heartbeats missed
//!     ..Config::default()
//! };
//! let client = ReconnectingPeer::tcp(
//!     server.local_addr().to_string(),
//!     Handlers::new(),
//!     config,
//!     ReconnectOptions::default(),
//! );
//! // Waits for the first connection (queued), then goes out.
//! assert_eq!(client.request("echo", "hi").await?, "hi");
//! client.close().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod backoff;
mod state;

use std::{
    fmt,
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    sync::{broadcast, watch},
    time::Instant,
};

pub use backoff::Backoff;
pub(crate) use backoff::Rng;
pub use state::{Event, State};

use crate::{
    CloseReason, Config, ConnectError, Error, Handlers, Peer, RequestOptions, ResultStream,
    StreamWriter, Unavailable,
    peer::{json_input, json_result},
};

/// What a [`ReconnectingPeer`] does with a call made while it has no
/// connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WhenDisconnected {
    /// The call waits for the next connection, bounded by
    /// [`ReconnectOptions::max_queued`] and
    /// [`ReconnectOptions::queue_timeout`]. The default: a restart of the
    /// server is invisible to callers, only slower.
    #[default]
    Queue,
    /// The call fails at once with
    /// [`Unavailable::NotConnected`]: for
    /// callers that have something better to do than wait (another server,
    /// a cached answer).
    FailFast,
}

/// Settings of a [`ReconnectingPeer`]; the connection's own settings are
/// the [`Config`] its connect function uses.
///
/// ```
/// use std::time::Duration;
/// use gotalk_peer::reconnect::{Backoff, ReconnectOptions, WhenDisconnected};
///
/// let options = ReconnectOptions {
///     backoff: Backoff { initial: Duration::from_millis(100), ..Backoff::default() },
///     when_disconnected: WhenDisconnected::FailFast,
///     ..ReconnectOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct ReconnectOptions {
    /// The waits between connect attempts. Default: 500 ms doubling up to
    /// 5 s, 20 % jitter (as the browser client).
    pub backoff: Backoff,
    /// A connection that lived at least this long counts as a success: the
    /// backoff starts over from [`Backoff::initial`] when it is lost. One
    /// that closed sooner (a server that accepts, then drops every
    /// connection) counts as a failed attempt. Default 10 s.
    pub reset_after: Duration,
    /// The longest a connect attempt (the whole connect function: the
    /// transport, TLS, the handshake, fetching a token) may take before it
    /// counts as failed with [`ConnectError::Timeout`]. Default 30 s.
    pub connect_timeout: Duration,
    /// What calls made while disconnected do. Default
    /// [`WhenDisconnected::Queue`].
    pub when_disconnected: WhenDisconnected,
    /// Most calls waiting for a connection at once; one more fails with
    /// [`Unavailable::QueueFull`]. Default 1024.
    pub max_queued: usize,
    /// Longest a call waits for a connection before it fails with
    /// [`Unavailable::QueueTimeout`]
    /// (a call's own [`RequestOptions::timeout`] also counts the wait).
    /// Default 10 s.
    pub queue_timeout: Duration,
}

impl Default for ReconnectOptions {
    fn default() -> Self {
        Self {
            backoff: Backoff::default(),
            reset_after: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(30),
            when_disconnected: WhenDisconnected::Queue,
            max_queued: 1024,
            queue_timeout: Duration::from_secs(10),
        }
    }
}

type ConnectFn = dyn Fn() -> BoxFuture<'static, Result<Peer, ConnectError>> + Send + Sync;

/// What the handles and the supervising task share.
struct Shared {
    connect: Box<ConnectFn>,
    options: ReconnectOptions,
    /// The current connection, set before the state becomes `Connected`
    /// and taken before it leaves it.
    current: Mutex<Option<Peer>>,
    state: watch::Sender<State>,
    events: broadcast::Sender<Event>,
    /// Calls waiting for a connection.
    queued: AtomicUsize,
    /// Set once to stop: by `close` or when the last handle is dropped.
    shutdown: watch::Sender<bool>,
    /// Set once the supervising task has let go of everything.
    finished: watch::Sender<bool>,
}

/// Events buffered per subscriber before the oldest are dropped.
const EVENT_CAPACITY: usize = 64;

/// How many connections a call refused with `connection closing` is taken
/// to, unless its [`RequestOptions::max_attempts`] says otherwise.
const MAX_CLOSING_REFUSALS: u32 = 3;

impl Shared {
    fn current(&self) -> MutexGuard<'_, Option<Peer>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current connection, if it is open.
    fn live_peer(&self) -> Option<Peer> {
        self.current().as_ref().filter(|p| !p.is_closed()).cloned()
    }

    fn set_state(&self, state: State) {
        tracing::debug!(%state, "reconnecting client");
        self.state.send_replace(state);
        self.emit(Event::State(state));
    }

    fn emit(&self, event: Event) {
        // No subscriber is not an error.
        let _ = self.events.send(event);
    }

    /// Takes a place in the queue of calls waiting for a connection.
    fn enqueue(self: &Arc<Self>) -> Result<QueueSlot, Unavailable> {
        let limit = self.options.max_queued;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Unavailable::QueueFull { limit })?;
        Ok(QueueSlot(Arc::clone(self)))
    }
}

/// A call's place in the queue, given back when it stops waiting.
struct QueueSlot(Arc<Shared>);

impl Drop for QueueSlot {
    fn drop(&mut self) {
        self.0.queued.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stops the client when the last handle is dropped.
struct HandleGuard(Arc<Shared>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.shutdown.send_replace(true);
    }
}

/// A client that reconnects by itself, with the call API of [`Peer`].
///
/// Built from a connect function, called for every connection: it may use
/// any transport ([`Peer::connect`], `tls::connect`, `ws::connect`,
/// [`Peer::connect_unix`], [`Peer::handshake`] over your own stream) and
/// compute what each connection needs afresh (a new auth token, the
/// address from service discovery). [`tcp`](Self::tcp) and `ws` (feature
/// `websocket`) build one for you.
///
/// One task per client connects, watches the connection and reconnects
/// with exponential backoff when it is lost; see the [module
/// documentation](crate::reconnect) for what happens to calls in each
/// [`State`]. Handles are cheap to clone and share that task; it stops when
/// [`close`](Self::close) is called or the last handle is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::{Arc, atomic::{AtomicU32, Ordering}};
/// use bytes::Bytes;
/// use gotalk_peer::{Config, ConnectError, HandlerError, Handlers, Peer, ReconnectingPeer, Server};
/// use gotalk_peer::reconnect::ReconnectOptions;
///
/// // The server remembers each connection's login.
/// let server = Handlers::new()
///     .buffer("login", |ctx, token: Bytes| async move {
///         ctx.peer().set_user_data(token);
///         Ok::<_, HandlerError>(Bytes::new())
///     })
///     .buffer("whoami", |ctx, _| async move {
///         Ok::<_, HandlerError>(ctx.peer().user_data::<Bytes>().map(|t| (*t).clone()).unwrap_or_default())
///     });
/// let server = Server::bind("127.0.0.1:0", server, Config::default()).await?.spawn();
/// let addr = server.local_addr().to_string();
///
/// // A connect function that logs in with a fresh token on every connection.
/// let issued = Arc::new(AtomicU32::new(0));
/// let client = ReconnectingPeer::new(
///     move || {
///         let (addr, issued) = (addr.clone(), issued.clone());
///         async move {
///             let token = format!("token-{}", issued.fetch_add(1, Ordering::Relaxed) + 1);
///             let peer = Peer::connect(addr, Handlers::new(), Config::default()).await?;
///             peer.request("login", token)
///                 .await
///                 .map_err(|e| ConnectError::Io(std::io::Error::other(e.to_string())))?;
///             Ok(peer)
///         }
///     },
///     ReconnectOptions::default(),
/// );
/// assert_eq!(client.request("whoami", "").await?, "token-1");
/// assert!(client.state().is_connected());
/// client.close().await;
/// server.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ReconnectingPeer {
    shared: Arc<Shared>,
    _guard: Arc<HandleGuard>,
}

impl fmt::Debug for ReconnectingPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconnectingPeer")
            .field("state", &self.state())
            .field("queued", &self.queued())
            .finish()
    }
}

impl ReconnectingPeer {
    /// A client that connects with `connect`, now and after every lost
    /// connection, as `options` say. Returns at once: the first connection
    /// is made in the background (calls made meanwhile are queued, see
    /// [`WhenDisconnected`]); [`connected`](Self::connected) waits for it.
    ///
    /// The [`Handlers`] and [`Config`] of each connection are the ones the
    /// connect function passes on: capture them in it and they are kept
    /// across reconnects.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns the task that connects).
    pub fn new<F, Fut>(connect: F, options: ReconnectOptions) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Peer, ConnectError>> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            connect: Box::new(move || Box::pin(connect())),
            options,
            current: Mutex::new(None),
            state: watch::Sender::new(State::Connecting { attempt: 1 }),
            events: broadcast::Sender::new(EVENT_CAPACITY),
            queued: AtomicUsize::new(0),
            shutdown: watch::Sender::new(false),
            finished: watch::Sender::new(false),
        });
        tokio::spawn(supervise(Arc::clone(&shared)));
        Self {
            _guard: Arc::new(HandleGuard(Arc::clone(&shared))),
            shared,
        }
    }

    /// A client for a TCP server at `addr` (`host:port`, resolved again
    /// for every connection), connecting with [`Peer::connect`] and the
    /// same `handlers` and `config` every time.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), gotalk_peer::Error> {
    /// use gotalk_peer::{Config, Handlers, ReconnectingPeer};
    /// use gotalk_peer::reconnect::ReconnectOptions;
    ///
    /// let client = ReconnectingPeer::tcp(
    ///     "127.0.0.1:1234",
    ///     Handlers::new(),
    ///     Config::default(),
    ///     ReconnectOptions::default(),
    /// );
    /// let answer = client.request("echo", "hello").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn tcp(
        addr: impl Into<String>,
        handlers: Handlers,
        config: Config,
        options: ReconnectOptions,
    ) -> Self {
        let addr: Arc<str> = addr.into().into();
        Self::new(
            move || {
                let (addr, handlers, config) = (addr.clone(), handlers.clone(), config.clone());
                async move { Peer::connect(&*addr, handlers, config).await }
            },
            options,
        )
    }

    /// A client for a WebSocket server at a `ws://` or `wss://` URL,
    /// connecting with `ws::connect_with` and the same `handlers`,
    /// `config` and client settings every time.
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), gotalk_peer::Error> {
    /// use gotalk_peer::{Config, Handlers, ReconnectingPeer};
    /// use gotalk_peer::{reconnect::ReconnectOptions, ws::WsClientConfig};
    ///
    /// let client = ReconnectingPeer::ws(
    ///     "ws://127.0.0.1:1234/gotalk/",
    ///     Handlers::new(),
    ///     Config::default(),
    ///     WsClientConfig::default(),
    ///     ReconnectOptions::default(),
    /// );
    /// let answer = client.request("echo", "hello").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    #[cfg(feature = "websocket")]
    #[cfg_attr(docsrs, doc(cfg(feature = "websocket")))]
    pub fn ws(
        url: impl Into<String>,
        handlers: Handlers,
        config: Config,
        ws: crate::ws::WsClientConfig,
        options: ReconnectOptions,
    ) -> Self {
        let url: Arc<str> = url.into().into();
        let ws = Arc::new(ws);
        Self::new(
            move || {
                let (url, handlers, config, ws) =
                    (url.clone(), handlers.clone(), config.clone(), ws.clone());
                async move { crate::ws::connect_with(&url, handlers, config, &ws).await }
            },
            options,
        )
    }

    /// Where the client is now.
    pub fn state(&self) -> State {
        *self.shared.state.borrow()
    }

    /// Follows the state: the receiver always holds the latest state, and
    /// [`changed`](watch::Receiver::changed) wakes on each change (states
    /// passed through quickly may be skipped: see [`events`](Self::events)
    /// for every one in order).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let server = gotalk_peer::Server::bind("127.0.0.1:0", gotalk_peer::Handlers::new(), gotalk_peer::Config::default()).await?.spawn();
    /// # let addr = server.local_addr().to_string();
    /// use gotalk_peer::{Config, Handlers, ReconnectingPeer, reconnect::ReconnectOptions};
    /// let client = ReconnectingPeer::tcp(addr, Handlers::new(), Config::default(), ReconnectOptions::default());
    /// let mut state = client.watch_state();
    /// state.wait_for(|s| s.is_connected()).await?;
    /// # Ok(()) }
    /// ```
    pub fn watch_state(&self) -> watch::Receiver<State> {
        self.shared.state.subscribe()
    }

    /// Every [`Event`] from now on, in order: each state change, why each
    /// connection was lost and each attempt failed. A subscriber that falls
    /// more than 64 events behind loses the oldest
    /// ([`RecvError::Lagged`](broadcast::error::RecvError::Lagged)).
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) {
    /// use gotalk_peer::reconnect::Event;
    /// let mut events = client.events();
    /// tokio::spawn(async move {
    ///     while let Ok(event) = events.recv().await {
    ///         if let Event::Disconnected(reason) = event {
    ///             tracing::warn!(%reason, "connection lost, reconnecting");
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn events(&self) -> broadcast::Receiver<Event> {
        self.shared.events.subscribe()
    }

    /// The current connection, if there is an open one. Calls made on it
    /// directly are not queued nor sent again when it is lost.
    pub fn current(&self) -> Option<Peer> {
        self.shared.live_peer()
    }

    /// Waits for a connection (without the queue's bounds: wrap it in a
    /// timeout) and returns it; fails with [`Error::Closed`] once the
    /// client is closed.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// let peer = tokio::time::timeout(Duration::from_secs(5), client.connected()).await??;
    /// tracing::info!(remote = ?peer.remote_addr(), "connected");
    /// # Ok(()) }
    /// ```
    pub async fn connected(&self) -> Result<Peer, Error> {
        let mut state = self.shared.state.subscribe();
        loop {
            // Marked seen before the connection is looked at: a connection
            // set after this is announced by a change.
            if state.borrow_and_update().is_closed() {
                return Err(Error::Closed(CloseReason::Local));
            }
            if let Some(peer) = self.shared.live_peer() {
                return Ok(peer);
            }
            if state.changed().await.is_err() {
                return Err(Error::Closed(CloseReason::Local));
            }
        }
    }

    /// Calls waiting for a connection now.
    pub fn queued(&self) -> usize {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        *self.shared.shutdown.borrow()
    }

    /// Stops reconnecting: calls waiting for a connection fail with
    /// [`Error::Closed`] ([`CloseReason::Local`]) at once, the current
    /// connection (if any) closes gracefully as [`Peer::close`] does
    /// (letting calls in flight finish), and so do later calls. Returns
    /// when all of that is done.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) {
    /// client.close().await;
    /// assert!(client.state().is_closed());
    /// # }
    /// ```
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        let mut finished = self.shared.finished.subscribe();
        // The sender lives in `shared`, which we hold.
        let _ = finished.wait_for(|done| *done).await;
    }

    /// A connection for a call: the current one, or the next one as
    /// [`WhenDisconnected`] says.
    async fn checkout(&self) -> Result<Peer, Error> {
        if self.is_closed() {
            return Err(Error::Closed(CloseReason::Local));
        }
        if let Some(peer) = self.shared.live_peer() {
            return Ok(peer);
        }
        match self.shared.options.when_disconnected {
            WhenDisconnected::FailFast => Err(Unavailable::NotConnected.into()),
            WhenDisconnected::Queue => {
                let _slot = self.shared.enqueue()?;
                let limit = self.shared.options.queue_timeout;
                tokio::time::timeout(limit, self.connected())
                    .await
                    .map_err(|_| Unavailable::QueueTimeout { waited: limit })?
            }
        }
    }

    /// Sends a buffer request on the current connection (or the next one)
    /// and waits for its result, as [`Peer::request`] does.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// let echoed = client.request("echo", "hello").await?;
    /// assert_eq!(echoed, "hello");
    /// # Ok(()) }
    /// ```
    pub async fn request(&self, op: &str, payload: impl Into<Bytes>) -> Result<Bytes, Error> {
        self.request_with(op, payload, RequestOptions::default())
            .await
    }

    /// [`request`](Self::request) for an idempotent operation: sent once
    /// more on the next connection if the connection is lost while it is in
    /// flight (see [`RequestOptions::retry_on_disconnect`]).
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// // Reading a value twice does no harm.
    /// let value = client.request_idempotent("get", "key").await?;
    /// # let _ = value;
    /// # Ok(()) }
    /// ```
    pub async fn request_idempotent(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        let options = RequestOptions {
            retry_on_disconnect: true,
            ..RequestOptions::default()
        };
        self.request_with(op, payload, options).await
    }

    /// [`request`](Self::request) with per-call options. A
    /// [`timeout`](RequestOptions::timeout) bounds the whole call: the wait
    /// for a connection, the request, and its second sending if it is
    /// [`retry_on_disconnect`](RequestOptions::retry_on_disconnect).
    ///
    /// A call the server refuses because it is closing the connection (the
    /// retry result `connection closing`, see
    /// [`Error::is_refused_by_closing`]) did not run, so it is sent on the
    /// next connection whatever the options, up to
    /// [`max_attempts`](RequestOptions::max_attempts) connections (3 by
    /// default).
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// use std::time::Duration;
    /// use gotalk_peer::RequestOptions;
    /// let options = RequestOptions {
    ///     timeout: Some(Duration::from_secs(2)),
    ///     retry_on_disconnect: true,
    ///     ..RequestOptions::default()
    /// };
    /// let value = client.request_with("get", "key", options).await?;
    /// # let _ = value;
    /// # Ok(()) }
    /// ```
    pub async fn request_with(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
        options: RequestOptions,
    ) -> Result<Bytes, Error> {
        let call = self.request_resending(op, payload.into(), options);
        match options.timeout {
            // Boxed: a timer is large, and every call's future would carry one.
            Some(limit) => Box::pin(tokio::time::timeout(limit, call))
                .await
                .map_err(|_| Error::Timeout)?,
            None => call.await,
        }
    }

    async fn request_resending(
        &self,
        op: &str,
        payload: Bytes,
        options: RequestOptions,
    ) -> Result<Bytes, Error> {
        let mut may_resend = options.retry_on_disconnect;
        // A request the server refused because it is closing did not run:
        // it goes to the next connection, idempotent or not, a bounded
        // number of times (a server that never stops closing is an error).
        let mut refusals_left = options.max_attempts.unwrap_or(MAX_CLOSING_REFUSALS);
        loop {
            let peer = self.checkout().await?;
            match peer.request_with(op, payload.clone(), options).await {
                Err(e) if e.is_refused_by_closing() && refusals_left > 1 && !self.is_closed() => {
                    refusals_left -= 1;
                    tracing::debug!(
                        op,
                        "the server is closing the connection and did not run the \
                         request; sending it on the next connection"
                    );
                    // The refusing connection is on its way out; checking out
                    // again before it is gone would get the same answer.
                    let _ = peer.closed().await;
                }
                Err(Error::Closed(reason)) if may_resend && !self.is_closed() => {
                    tracing::debug!(
                        op,
                        %reason,
                        "connection lost with an idempotent request in flight; \
                         sending it again on the next connection"
                    );
                    may_resend = false;
                }
                other => return other,
            }
        }
    }

    /// Sends a request with a JSON payload and decodes the JSON result, as
    /// [`Peer::request_json`] does.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// let sum: i64 = client.request_json("add", &(2, 3)).await?;
    /// # let _ = sum;
    /// # Ok(()) }
    /// ```
    pub async fn request_json<I, O>(&self, op: &str, input: &I) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        self.request_json_with(op, input, RequestOptions::default())
            .await
    }

    /// [`request_json`](Self::request_json) with per-call options.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// use gotalk_peer::RequestOptions;
    /// let idempotent = RequestOptions { retry_on_disconnect: true, ..RequestOptions::default() };
    /// let user: serde_json::Value = client.request_json_with("user.get", &42, idempotent).await?;
    /// # let _ = user;
    /// # Ok(()) }
    /// ```
    pub async fn request_json_with<I, O>(
        &self,
        op: &str,
        input: &I,
        options: RequestOptions,
    ) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let result = self.request_with(op, json_input(input)?, options).await?;
        json_result(&result)
    }

    /// Opens a stream request on the current connection (or the next one),
    /// as [`Peer::stream_request`] does. A stream is never sent again: if
    /// its connection is lost, its writer and result stream fail with
    /// [`Error::Closed`].
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// let (mut parts, results) = client.stream_request("upper").await?;
    /// parts.send("abc").await?;
    /// parts.end().await?;
    /// let upper = results.collect_bytes(1024).await?;
    /// # let _ = upper;
    /// # Ok(()) }
    /// ```
    pub async fn stream_request(&self, op: &str) -> Result<(StreamWriter, ResultStream), Error> {
        self.checkout().await?.stream_request(op).await
    }

    /// Sends a notification on the current connection (or the next one),
    /// as [`Peer::notify`] does: at most once, since nothing tells whether
    /// one queued for writing reached the peer before the connection was
    /// lost.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// client.notify("log", "hello").await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify(&self, name: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        self.checkout().await?.notify(name, payload).await
    }

    /// Sends a notification with a JSON payload (see [`notify`](Self::notify)).
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::ReconnectingPeer) -> Result<(), gotalk_peer::Error> {
    /// client.notify_json("typing", &serde_json::json!({"user": "ana"})).await?;
    /// # Ok(()) }
    /// ```
    pub async fn notify_json<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), Error> {
        self.notify(name, json_input(value)?).await
    }
}

/// Resolves once the client is told to stop.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The sender lives as long as the task that waits here.
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The client's task: connect, watch the connection, back off, again,
/// until told to stop.
async fn supervise(shared: Arc<Shared>) {
    let _finish = Finish(Arc::clone(&shared));
    let mut shutdown = shared.shutdown.subscribe();
    let options = &shared.options;
    let mut rng = Rng::seeded();
    let mut attempt: u32 = 1;
    'run: loop {
        shared.set_state(State::Connecting { attempt });
        let connect = tokio::time::timeout(options.connect_timeout, (shared.connect)());
        let result = tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break 'run,
            result = connect => {
                result.unwrap_or(Err(ConnectError::Timeout(options.connect_timeout)))
            }
        };
        match result {
            Ok(peer) => {
                let since = Instant::now();
                *shared.current() = Some(peer.clone());
                shared.set_state(State::Connected);
                tracing::debug!(remote = ?peer.remote_addr(), attempt, "connected");
                let reason = tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => {
                        // Queued calls fail now, not after the close below.
                        shared.current().take();
                        shared.set_state(State::Closed);
                        peer.close().await;
                        break 'run;
                    }
                    reason = peer.closed() => reason,
                };
                shared.current().take();
                tracing::info!(%reason, "connection lost; reconnecting");
                shared.emit(Event::Disconnected(reason));
                attempt = if since.elapsed() >= options.reset_after {
                    1
                } else {
                    attempt.saturating_add(1)
                };
            }
            Err(error) => {
                tracing::warn!(attempt, %error, "connect failed");
                shared.emit(Event::ConnectFailed {
                    attempt,
                    error: Arc::new(error),
                });
                attempt = attempt.saturating_add(1);
            }
        }
        let until = Instant::now() + options.backoff.delay(attempt, rng.unit());
        shared.set_state(State::BackingOff { until, attempt });
        tokio::select! {
            biased;
            () = stopped(&mut shutdown) => break 'run,
            () = tokio::time::sleep_until(until) => {}
        }
    }
}

/// Leaves the client closed when its task ends, however it ends: told to
/// stop, a panicking connect function, or a runtime shutting down.
struct Finish(Arc<Shared>);

impl Drop for Finish {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!("the reconnecting client's connect function panicked; client closed");
        }
        let shared = &self.0;
        shared.current().take();
        if !shared.state.borrow().is_closed() {
            shared.set_state(State::Closed);
        }
        shared.finished.send_replace(true);
    }
}

#[cfg(test)]
mod tests {
    use std::{io, sync::Mutex as StdMutex};

    use tokio::sync::mpsc;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn refused() -> ConnectError {
        ConnectError::Io(io::Error::from(io::ErrorKind::ConnectionRefused))
    }

    /// When each connect attempt started, relative to the first.
    fn gaps(times: &[Instant]) -> Vec<Duration> {
        times.windows(2).map(|w| w[1] - w[0]).collect()
    }

    /// On paused time, the connect attempts against a server that never
    /// answers come exactly as the backoff says: growing, then capped.
    #[tokio::test(start_paused = true)]
    async fn attempts_follow_the_backoff_and_cap() {
        let times = Arc::new(StdMutex::new(Vec::new()));
        let seen = Arc::clone(&times);
        let client = ReconnectingPeer::new(
            move || {
                seen.lock().unwrap().push(Instant::now());
                async { Err::<Peer, _>(refused()) }
            },
            ReconnectOptions {
                backoff: Backoff {
                    initial: ms(100),
                    max: ms(1000),
                    multiplier: 2.0,
                    jitter: 0.0,
                },
                ..ReconnectOptions::default()
            },
        );
        let mut events = client.events();
        while times.lock().unwrap().len() < 7 {
            tokio::time::sleep(ms(10)).await;
        }
        assert_eq!(
            gaps(&times.lock().unwrap()[..7]),
            [200, 400, 800, 1000, 1000, 1000].map(ms),
            "the wait before attempt n is initial × 2^(n-1), capped"
        );
        // The events say the same.
        let mut backoffs = Vec::new();
        while backoffs.len() < 3 {
            match events.recv().await.unwrap() {
                Event::State(State::BackingOff { attempt, .. }) => backoffs.push(attempt),
                Event::ConnectFailed { error, .. } => {
                    assert!(matches!(*error, ConnectError::Io(_)), "{error}");
                }
                _ => {}
            }
        }
        assert!(
            backoffs.windows(2).all(|w| w[1] == w[0] + 1),
            "{backoffs:?}"
        );
        client.close().await;
        let attempts = times.lock().unwrap().len();
        tokio::time::sleep(ms(10_000)).await;
        assert_eq!(
            times.lock().unwrap().len(),
            attempts,
            "no attempt after close"
        );
    }

    /// With jitter, every wait is within its share below the base delay.
    #[tokio::test(start_paused = true)]
    async fn jittered_waits_stay_in_range() {
        let times = Arc::new(StdMutex::new(Vec::new()));
        let seen = Arc::clone(&times);
        let client = ReconnectingPeer::new(
            move || {
                seen.lock().unwrap().push(Instant::now());
                async { Err::<Peer, _>(refused()) }
            },
            ReconnectOptions {
                backoff: Backoff {
                    initial: ms(1000),
                    max: ms(1000),
                    multiplier: 2.0,
                    jitter: 0.5,
                },
                ..ReconnectOptions::default()
            },
        );
        while times.lock().unwrap().len() < 20 {
            tokio::time::sleep(ms(100)).await;
        }
        client.close().await;
        let gaps = gaps(&times.lock().unwrap());
        for gap in &gaps {
            assert!((ms(500)..=ms(1000)).contains(gap), "{gap:?}");
        }
        assert!(
            gaps.iter().any(|g| *g != gaps[0]),
            "jitter varies: {gaps:?}"
        );
    }

    /// A connect function that hangs counts as a failed attempt after the
    /// connect timeout.
    #[tokio::test(start_paused = true)]
    async fn a_hanging_connect_times_out() {
        let client = ReconnectingPeer::new(
            futures::future::pending::<Result<Peer, ConnectError>>,
            ReconnectOptions {
                connect_timeout: ms(300),
                ..ReconnectOptions::default()
            },
        );
        let mut events = client.events();
        let start = Instant::now();
        loop {
            if let Event::ConnectFailed { attempt, error } = events.recv().await.unwrap() {
                assert_eq!(attempt, 1);
                assert!(
                    matches!(*error, ConnectError::Timeout(d) if d == ms(300)),
                    "{error}"
                );
                break;
            }
        }
        assert_eq!(start.elapsed(), ms(300));
        client.close().await;
    }

    /// A connect function that panics leaves the client closed, not stuck:
    /// queued calls fail and `close` returns.
    #[tokio::test(start_paused = true)]
    async fn a_panicking_connect_function_closes_the_client() {
        let client = ReconnectingPeer::new(
            || async { panic!("connect function bug") },
            ReconnectOptions::default(),
        );
        let err = client.request("echo", "x").await.unwrap_err();
        assert!(matches!(err, Error::Closed(CloseReason::Local)), "{err:?}");
        assert_eq!(client.state(), State::Closed);
        client.close().await;
    }

    /// A connection that lived `reset_after` starts the backoff over; one
    /// that closed sooner counts as a failed attempt.
    #[tokio::test(start_paused = true)]
    async fn a_long_lived_connection_resets_the_backoff() {
        let (far_ends, mut far_end) = mpsc::unbounded_channel();
        let client = ReconnectingPeer::new(
            move || {
                let far_ends = far_ends.clone();
                async move {
                    let (near, far) =
                        Peer::pair(Handlers::new(), Handlers::new(), Config::default())
                            .await
                            .map_err(ConnectError::from)?;
                    far_ends.send(far).expect("test alive");
                    Ok(near)
                }
            },
            ReconnectOptions {
                backoff: Backoff {
                    initial: ms(100),
                    max: ms(10_000),
                    multiplier: 2.0,
                    jitter: 0.0,
                },
                reset_after: ms(1000),
                ..ReconnectOptions::default()
            },
        );
        let mut state = client.watch_state();
        let mut backing_off = async |far: Peer| {
            far.abort();
            let s = *state
                .wait_for(|s| matches!(s, State::BackingOff { .. }))
                .await
                .unwrap();
            let State::BackingOff { until, attempt } = s else {
                unreachable!()
            };
            (attempt, until - Instant::now())
        };
        // Short-lived connections: the waits grow.
        assert_eq!(
            backing_off(far_end.recv().await.unwrap()).await,
            (2, ms(200))
        );
        assert_eq!(
            backing_off(far_end.recv().await.unwrap()).await,
            (3, ms(400))
        );
        // One that lived long enough: back to the start.
        let far = far_end.recv().await.unwrap();
        tokio::time::sleep(ms(1500)).await;
        assert_eq!(backing_off(far).await, (1, ms(100)));
        client.close().await;
    }
}
