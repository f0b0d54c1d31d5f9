//! The handle to one connection: call the other side, notify it, close.

mod call;

use std::{
    future::poll_fn,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use gotalk_proto::RequestId;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};

use crate::{
    CloseReason, Config, Error, Handlers, RemoteError, RemoteLoad, ResultStream, StreamWriter,
    UsageError,
    answers::AnswerKey,
    connection::{Connection, HandleGuard},
    core::{CloseMode, Outcome, RetryDecision, RetryPolicy},
    driver,
    error::CLOSING_REFUSAL,
    handshake,
};

/// Per-call settings that override the connection's [`Config`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestOptions {
    /// Deadline for the whole call, retries included. `None`: the
    /// connection's [`Config::request_timeout`].
    pub timeout: Option<Duration>,
    /// Attempts when the remote answers with retry results. `None`: the
    /// connection's [`Config::max_attempts`].
    pub max_attempts: Option<u32>,
    /// The call is idempotent: a [`ReconnectingPeer`](crate::ReconnectingPeer)
    /// whose connection is lost while the call is in flight sends it once
    /// more on the next connection, instead of failing it with
    /// [`Error::Closed`]. Set it only for operations that may safely run
    /// twice: the remote may have run the first one before the connection
    /// was lost. A [`Peer`] has one connection and ignores it. Default
    /// `false`.
    pub retry_on_disconnect: bool,
}

/// A cheap, cloneable handle to one gotalk connection.
///
/// Either side of a connection may call the other: handles exist on both
/// ends, and handlers get one in their [`Context`](crate::Context). Calls
/// from many tasks at once are multiplexed over the one connection.
///
/// The connection closes when [`close`](Self::close) is called, when the
/// peer goes away, or when the last handle (including the ones held by
/// running handlers) is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), gotalk_peer::Error> {
/// use bytes::Bytes;
/// use gotalk_peer::{Config, HandlerError, Handlers, Peer};
///
/// let server = Handlers::new()
///     .buffer("echo", |_ctx, payload: Bytes| async move { Ok::<_, HandlerError>(payload) });
/// let (client, _server) = Peer::pair(Handlers::new(), server, Config::default()).await?;
/// assert_eq!(client.request("echo", "hello").await?, "hello");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Peer {
    conn: Arc<Connection>,
    _guard: Arc<HandleGuard>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("remote_addr", &self.conn.meta.remote_addr)
            .field("closed", &self.conn.close_reason())
            .finish()
    }
}

/// Cancels an outbound request if its call is abandoned (dropped future,
/// timeout) before the answer came.
struct CancelOnDrop<'a> {
    conn: &'a Connection,
    id: RequestId,
    key: AnswerKey,
    armed: bool,
}

impl Drop for CancelOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.conn.cancel_request(self.id, self.key);
        }
    }
}

impl Peer {
    pub(crate) fn from_parts(conn: Arc<Connection>, guard: Arc<HandleGuard>) -> Self {
        Self {
            conn,
            _guard: guard,
        }
    }

    pub(crate) fn connection(&self) -> &Arc<Connection> {
        &self.conn
    }

    /// Runs the version handshake over `io`, then serves the connection in a
    /// background task. Works over any reliable byte stream.
    pub async fn handshake<T>(io: T, handlers: Handlers, config: Config) -> Result<Peer, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::handshake_with_addr(io, handlers, config, None, |_| {}).await
    }

    /// [`handshake`](Self::handshake), then `setup` runs before the first
    /// message is read: attach user data there and every handler sees it.
    pub async fn handshake_with<T>(
        io: T,
        handlers: Handlers,
        config: Config,
        setup: impl FnOnce(&Peer),
    ) -> Result<Peer, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::handshake_with_addr(io, handlers, config, None, setup).await
    }

    pub(crate) async fn handshake_with_addr<T>(
        mut io: T,
        handlers: Handlers,
        config: impl Into<Arc<Config>>,
        remote_addr: Option<String>,
        setup: impl FnOnce(&Peer),
    ) -> Result<Peer, Error>
    where
        T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let config = config.into();
        handshake::handshake(&mut io, config.handshake_timeout).await?;
        let conn = Connection::new(config, handlers, remote_addr);
        let peer = conn.first_peer();
        setup(&peer);
        tokio::spawn(driver::run(io, conn));
        Ok(peer)
    }

    /// Two peers connected in memory, handshake done: for tests and for
    /// in-process use. `a` and `b` are each side's handlers.
    pub async fn pair(a: Handlers, b: Handlers, config: Config) -> Result<(Peer, Peer), Error> {
        let (x, y) = tokio::io::duplex(256 * 1024);
        let (pa, pb) = tokio::join!(
            Self::handshake_with_addr(x, a, config.clone(), Some("memory:a".into()), |_| {}),
            Self::handshake_with_addr(y, b, config, Some("memory:b".into()), |_| {}),
        );
        Ok((pa?, pb?))
    }

    /// The remote address, when the transport has one.
    pub fn remote_addr(&self) -> Option<&str> {
        self.conn.meta.remote_addr.as_deref()
    }

    /// Sends a buffer request and waits for its result, retrying on retry
    /// results (see [`Config::max_attempts`]). A streamed result is collected
    /// into one buffer, up to [`Config::max_payload`] bytes.
    ///
    /// Dropping the future before it is done forgets the request: its
    /// result is dropped when it comes.
    pub fn request(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
    ) -> impl Future<Output = Result<Bytes, Error>> + Send {
        call::Call::new(self, op, payload.into())
    }

    /// [`request`](Self::request) with per-call options.
    pub async fn request_with(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
        options: RequestOptions,
    ) -> Result<Bytes, Error> {
        self.request_tracked(op, payload.into(), options, &AtomicBool::new(false))
            .await
    }

    /// [`request_with`](Self::request_with), also telling through
    /// `may_have_run` whether the remote may have run the request: set while
    /// a sending is out and not refused with a retry result. A call that
    /// failed with it unset was never run, so a balancer may send it to
    /// another server.
    pub(crate) async fn request_tracked(
        &self,
        op: &str,
        payload: Bytes,
        options: RequestOptions,
        may_have_run: &AtomicBool,
    ) -> Result<Bytes, Error> {
        let call = self.request_attempts(op, &payload, options.max_attempts, may_have_run, None);
        match options.timeout.or(self.conn.config.request_timeout) {
            // Boxed: a timer is large, and every call's future would carry one.
            Some(limit) => Box::pin(tokio::time::timeout(limit, call))
                .await
                .map_err(|_| Error::Timeout)?,
            None => call.await,
        }
    }

    /// Sends the request until it is answered with something else than a
    /// retry result, or the retry policy gives up. `refused`: the first
    /// attempt was made and refused with this wait and text (see `Call`).
    async fn request_attempts(
        &self,
        op: &str,
        payload: &Bytes,
        max_attempts: Option<u32>,
        may_have_run: &AtomicBool,
        mut refused: Option<(u32, Bytes)>,
    ) -> Result<Bytes, Error> {
        let config = &self.conn.config;
        let mut policy = RetryPolicy::new(
            max_attempts.unwrap_or(config.max_attempts),
            config.retry_backoff,
        );
        loop {
            let (wait_ms, payload) = match refused.take() {
                Some(refusal) => refusal,
                None => match self.request_once(op, payload, may_have_run).await? {
                    Outcome::Value(bytes) => return Ok(bytes),
                    Outcome::Error(payload) => {
                        return Err(Error::Remote(RemoteError::new(payload)));
                    }
                    Outcome::Retry { wait_ms, payload } => {
                        // Refused: the remote did not run it.
                        may_have_run.store(false, Ordering::Relaxed);
                        (wait_ms, payload)
                    }
                },
            };
            let wait = Duration::from_millis(u64::from(wait_ms));
            // A closing connection refuses every new request the same way:
            // asking it again only delays the caller, who can go to another
            // connection (the request did not run).
            let decision = if &payload[..] == CLOSING_REFUSAL {
                RetryDecision::GiveUp {
                    attempts: policy.attempt(),
                }
            } else {
                policy.on_retry(wait)
            };
            match decision {
                RetryDecision::GiveUp { attempts } => {
                    return Err(Error::RetryExhausted {
                        attempts,
                        wait,
                        message: String::from_utf8_lossy(&payload).into_owned(),
                    });
                }
                RetryDecision::RetryAfter(pause) => {
                    tracing::debug!(op, ?pause, attempt = policy.attempt(), "retrying request");
                    // Boxed, like the timeout above: only retries pay for it.
                    Box::pin(tokio::time::sleep(pause)).await;
                }
            }
        }
    }

    async fn request_once(
        &self,
        op: &str,
        payload: &Bytes,
        may_have_run: &AtomicBool,
    ) -> Result<Outcome, Error> {
        // The name is copied once, into the write buffer. (`Call`, the
        // common case, also puts its waker into the slot as it sends.)
        let (id, key) = self.conn.send_request(op, payload).await?;
        may_have_run.store(true, Ordering::Relaxed);
        let mut cancel = CancelOnDrop {
            conn: &self.conn,
            id,
            key,
            armed: true,
        };
        let outcome = poll_fn(|cx| self.conn.poll_answer(key, cx)).await;
        // The core removed the entry when it answered, and taking the
        // answer freed the slot.
        cancel.armed = false;
        outcome
    }

    /// Sends a request with a JSON payload and decodes the JSON result.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), gotalk_peer::Error> {
    /// use gotalk_peer::{Config, HandlerError, Handlers, Peer};
    /// let server = Handlers::new().json("add", |_ctx, (a, b): (i64, i64)| async move {
    ///     Ok::<_, HandlerError>(a + b)
    /// });
    /// let (client, _server) = Peer::pair(Handlers::new(), server, Config::default()).await?;
    /// let sum: i64 = client.request_json("add", &(2, 3)).await?;
    /// assert_eq!(sum, 5);
    /// # Ok(()) }
    /// ```
    pub async fn request_json<I, O>(&self, op: &str, input: &I) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let result = self.request(op, json_input(input)?).await?;
        json_result(&result)
    }

    /// Opens a stream request: send parts with the returned
    /// [`StreamWriter`], read the result (single or streamed) from the
    /// [`ResultStream`]. The request header goes out at once, with an empty
    /// first part, so the responder can start working.
    pub async fn stream_request(&self, op: &str) -> Result<(StreamWriter, ResultStream), Error> {
        if !self.conn.config.remote_stream_requests {
            return Err(UsageError::Unsupported("stream requests").into());
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self
            .conn
            .send(|core| core.stream_request(op, tx.clone()))
            .await?;
        let results = ResultStream::new(self.clone(), id, rx);
        Ok((StreamWriter::new(self.clone(), id), results))
    }

    /// Sends a notification. Fails only if the connection is gone (or the
    /// name is over 4095 bytes).
    pub async fn notify(&self, name: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        self.conn.send(|core| core.notify(name, &payload)).await
    }

    /// Queues a notification without waiting, for fan-out: a `payload`
    /// over 1 KiB is shared, never copied, so one `Bytes` sent to a
    /// thousand connections is held once (a shorter one is copied into the
    /// connection's write buffer: cheaper than a reference of its own, and
    /// at most 1 KiB per receiver).
    ///
    /// A connection whose write queue is already over
    /// [`Config::max_write_queue_bytes`] is not keeping up with what is sent
    /// to it: instead of queueing more, it is closed with
    /// [`CloseReason::SlowConsumer`] (what waited is dropped) and this
    /// returns [`Error::Closed`]. Use [`notify`](Self::notify) to wait for
    /// room instead.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use bytes::Bytes;
    /// use gotalk_peer::{Config, Handlers, Peer};
    ///
    /// let (a, _b) = Peer::pair(Handlers::new(), Handlers::new(), Config::default()).await?;
    /// let news = Bytes::from_static(b"{\"headline\":\"...\"}");
    /// for peer in [&a] {
    ///     if let Err(e) = peer.try_notify("news", news.clone()) {
    ///         tracing::debug!(error = %e, "dropped a subscriber");
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_notify(&self, name: &str, payload: Bytes) -> Result<(), Error> {
        self.conn
            .push_now(|core| core.notify_shared(name, &payload))
    }

    /// Like [`try_notify`](Self::try_notify), but the notification may
    /// wait until `by` to be written together with what is queued for this
    /// connection meanwhile: with many notifications to many connections
    /// (a broadcast), fewer and larger writes, each costing the kernel and
    /// the receiver far less per notification, for at most `by`'s delay.
    /// Centrifugo's `write_delay` makes the same trade.
    ///
    /// Anything queued without a delay (an answer, a request, a
    /// [`try_notify`](Self::try_notify)) takes it along at once, in order,
    /// and so does a queue of 32 KiB; closing flushes it too. Take `by`
    /// once for a whole broadcast: the connections then write when it
    /// passes, each woken once for the batch, not once per notification.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::time::Duration;
    /// use bytes::Bytes;
    /// use gotalk_peer::{Config, Handlers, Peer};
    /// use tokio::time::Instant;
    ///
    /// let (a, _b) = Peer::pair(Handlers::new(), Handlers::new(), Config::default()).await?;
    /// let by = Instant::now() + Duration::from_millis(5);
    /// for tick in 0..10u8 {
    ///     a.try_notify_by("tick", Bytes::from(vec![b'0' + tick]), by)?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn try_notify_by(
        &self,
        name: &str,
        payload: Bytes,
        by: tokio::time::Instant,
    ) -> Result<(), Error> {
        let by = by.into_std();
        self.conn
            .push_delayed(|core| core.notify_shared_by(name, &payload, by))
    }

    /// Sends a notification with a JSON payload.
    pub async fn notify_json<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), Error> {
        self.notify(name, json_input(value)?).await
    }

    /// Sends a heartbeat now with the given load (the driver also sends them
    /// every [`Config::heartbeat_interval`]).
    pub async fn heartbeat(&self, load: u16) -> Result<(), Error> {
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        self.conn.send(|core| core.heartbeat(load, time)).await
    }

    /// The load the remote side reported in its last heartbeat, and when it
    /// came; `None` until one arrives (the Go server sends none). Reads one
    /// atomic word: cheap enough for every call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() -> Result<(), gotalk_peer::Error> {
    /// use std::time::Duration;
    /// use gotalk_peer::{Config, Handlers, Peer};
    /// let config = Config { heartbeat_interval: Some(Duration::from_secs(1)), ..Config::default() };
    /// let (client, _server) = Peer::pair(Handlers::new(), Handlers::new(), config).await?;
    /// assert_eq!(client.remote_load(), None);
    /// tokio::time::sleep(Duration::from_millis(1100)).await;
    /// assert_eq!(client.remote_load().map(|l| l.load), Some(0), "an idle server");
    /// # Ok(()) }
    /// ```
    pub fn remote_load(&self) -> Option<RemoteLoad> {
        self.conn.remote_load.get()
    }

    /// Closes gracefully: refuses new requests (the peer's get a retry
    /// result `connection closing`), lets requests in flight both ways
    /// finish for up to [`Config::close_timeout`], then closes. Returns why
    /// the connection closed (which may be another reason, if it was
    /// already closing).
    pub async fn close(&self) -> CloseReason {
        self.conn.close(CloseMode::Graceful);
        self.closed().await
    }

    /// Closes now: calls in flight fail with [`CloseReason::Local`].
    pub fn abort(&self) {
        self.conn.close(CloseMode::Immediate);
    }

    /// Waits until the connection has closed and says why.
    pub async fn closed(&self) -> CloseReason {
        self.conn.finished().await;
        self.conn.close_reason().unwrap_or(CloseReason::Local)
    }

    /// Why the connection closed, or `None` while it is open.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.conn.close_reason()
    }

    /// True once the connection is closed or closing.
    pub fn is_closed(&self) -> bool {
        self.conn.close_reason().is_some()
    }

    /// Outbound requests waiting for results.
    pub fn pending_requests(&self) -> usize {
        self.conn.lock().core.outbound_len()
    }

    /// Attaches a value of type `T` to the connection (one per type),
    /// visible to handlers through [`Context::user_data`](crate::Context::user_data).
    pub fn set_user_data<T: Send + Sync + 'static>(&self, value: T) {
        self.conn.set_user_data(value);
    }

    /// Sets who is at the other end (see [`Identity`](crate::middleware::Identity)),
    /// replacing any identity set before: handlers and layers read it with
    /// [`Context::identity`](crate::Context::identity), the
    /// [`Authorize`](crate::middleware::Authorize) layer checks it. Kept as
    /// the connection's user data of type `Identity`.
    pub fn set_identity(&self, identity: crate::middleware::Identity) {
        self.conn.set_user_data(identity);
    }

    /// The identity set with [`set_identity`](Self::set_identity).
    pub fn identity(&self) -> Option<Arc<crate::middleware::Identity>> {
        self.conn.user_data()
    }

    /// The value of type `T` attached with [`set_user_data`](Self::set_user_data).
    pub fn user_data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.conn.user_data()
    }

    /// Payload bytes the connection holds for the peer, as its byte budget
    /// counts them (`Core::stats().buffered_bytes`), for tests.
    #[doc(hidden)]
    pub fn buffered_bytes_for_tests(&self) -> usize {
        self.conn.lock().core.stats().buffered_bytes
    }

    /// Turns on the per-connection buffer figures of
    /// [`buffer_capacity_for_tests`](Self::buffer_capacity_for_tests) for
    /// the connections started from now on, in this process.
    #[doc(hidden)]
    pub fn track_buffers_for_tests() {
        crate::buffer_gauge::enable();
    }

    /// Bytes of memory held by this connection's buffers: the read buffer
    /// (its own allocation and spares, or the bytes it holds of the
    /// thread's scratch chunk) as of when its driver last went idle, and
    /// the outgoing encoding buffer now. `None` unless
    /// [`track_buffers_for_tests`](Self::track_buffers_for_tests) was
    /// called before the connection started.
    #[doc(hidden)]
    pub fn buffer_capacity_for_tests(&self) -> Option<(usize, usize)> {
        let read = self.conn.user_data::<crate::buffer_gauge::ReadGauge>()?;
        let write = self.conn.lock().core.write_buffer_capacity();
        Some((read.get(), write))
    }

    /// A weak reference to the connection state, to check in tests that
    /// nothing is leaked after close.
    #[doc(hidden)]
    pub fn downgrade_for_leak_check(&self) -> std::sync::Weak<impl Sized + use<>> {
        Arc::downgrade(&self.conn)
    }
}

/// A call's JSON input; a value that does not serialise is the caller's
/// mistake ([`UsageError::InvalidInput`]), nothing is sent. Shared by every
/// client: [`Peer`], [`ReconnectingPeer`](crate::ReconnectingPeer), the
/// balancer and the typed clients of `#[service]`.
pub(crate) fn json_input<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, Error> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| UsageError::InvalidInput(e).into())
}

/// A call's JSON result.
pub(crate) fn json_result<T: DeserializeOwned>(result: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(result).map_err(Error::InvalidResult)
}
