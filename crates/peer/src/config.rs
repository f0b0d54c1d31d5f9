//! Connection settings: limits, timers and what the remote side can handle.

use std::{sync::Arc, time::Duration};

use gotalk_proto::{DEFAULT_MAX_PAYLOAD, DecodeLimits};

pub use crate::core::WriteCeiling;

/// Callback invoked for every heartbeat received: `(load, unix_time)`.
pub type HeartbeatCallback = Arc<dyn Fn(u16, u32) + Send + Sync>;

/// Supplies the load value (0 idle … 65535 overloaded) sent in heartbeats.
pub type LoadFn = Arc<dyn Fn() -> u16 + Send + Sync>;

/// Settings for one connection. Every field has a documented default;
/// [`Config::default`] is safe to expose to untrusted peers.
///
/// ```
/// use std::time::Duration;
/// use gotalk_peer::Config;
/// let config = Config {
///     read_timeout: Some(Duration::from_secs(30)),
///     max_inbound_streams: 0, // refuse stream requests
///     ..Config::default()
/// };
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct Config {
    /// Largest payload accepted from the peer (and collected from a
    /// streaming result). Default 16 MiB.
    pub max_payload: u32,
    /// Most requests from the peer handled at once, of any kind. Above it the
    /// peer gets a retry result `request rate limit`. Default 1024.
    pub max_inbound_requests: usize,
    /// Most stream requests from the peer handled at once (they also count
    /// toward `max_inbound_requests`). 0 refuses them with the error result
    /// `stream requests not supported`. Default 32.
    pub max_inbound_streams: usize,
    /// Parts buffered per inbound stream (request parts for a stream handler,
    /// or result parts for a stream we requested) before the connection
    /// stops reading until the consumer catches up. Default 16.
    pub stream_buffer_parts: usize,
    /// Payload bytes held on behalf of the peer across the whole
    /// connection: stream parts not yet read, the part each stream handler
    /// took last, parts collected for buffer handlers (until they finish),
    /// payloads of 4 KiB or more held by running request and notification
    /// handlers, and streamed results being collected for our buffer
    /// requests. When it is reached, the connection stops reading where
    /// that cannot deadlock (stream parts, notifications); where it could,
    /// it refuses instead: new single requests of 4 KiB or more and buffer
    /// handlers collecting a streamed request get retry results, and a
    /// streamed result being collected fails its call with
    /// [`Error::OverBudget`](crate::Error::OverBudget). Default 64 MiB.
    pub max_buffered_bytes: usize,
    /// Most notification handlers running at once; reading pauses while it is
    /// reached. Default 1024.
    pub max_concurrent_notifications: usize,
    /// Bytes queued for writing before callers wait for the writer. A single
    /// message larger than this is still sent, alone. Default 8 MiB.
    pub max_write_queue_bytes: usize,
    /// Shortest and longest wait put in a `request rate limit` retry result
    /// (picked at random in between). Default 50 ms to 500 ms.
    pub rate_limit_wait: (Duration, Duration),
    /// Close with ProtocolError 3 (timeout) when no complete message arrives
    /// for this long (time while the connection pauses reading for its own
    /// slow handlers does not count). Default `None`: heartbeats keep a healthy connection
    /// busy, and a peer that sends none (the Go server by default) must not
    /// make us time ourselves out. Set it on servers facing the internet.
    pub read_timeout: Option<Duration>,
    /// Close when a write makes no progress for this long (a peer that stops
    /// reading). Default 30 s.
    pub write_timeout: Option<Duration>,
    /// Time allowed for the version exchange. Default 10 s.
    pub handshake_timeout: Duration,
    /// Interval between heartbeats we send; `None` disables them. Default
    /// 20 s, like the Go client and gotalk.js.
    pub heartbeat_interval: Option<Duration>,
    /// Load value for our heartbeats, replacing the measured one. Default
    /// `None`: the fuller of the two limits a new request from the peer
    /// could hit, scaled to 0 (idle) … 65535 (refusing work): requests of
    /// this connection being handled over
    /// [`max_inbound_requests`](Self::max_inbound_requests), or handlers
    /// running in the process over [`handler_limit`](Self::handler_limit).
    /// A [`Balancer`](crate::balance::Balancer) steers calls away from a
    /// server whose heartbeats report a high load.
    pub heartbeat_load: Option<LoadFn>,
    /// Called with `(load, unix_time)` for each heartbeat received (the last
    /// load is also kept: [`Peer::remote_load`](crate::Peer::remote_load)).
    pub on_heartbeat: Option<HeartbeatCallback>,
    /// Attempts per request when the peer answers with retry results,
    /// the first included. Default 3.
    pub max_attempts: u32,
    /// Wait before retrying when a retry result says `wait` 0 (doubles with
    /// each attempt). Default 50 ms.
    pub retry_backoff: Duration,
    /// Deadline for each request made through this connection unless the
    /// call sets its own. Default `None`.
    pub request_timeout: Option<Duration>,
    /// Time a graceful close lets in-flight requests finish. Default 5 s.
    pub close_timeout: Duration,
    /// Whether the remote understands retry results (`e`). The original
    /// gotalk.js does not: with `false` we answer with error results instead.
    /// Default `true`.
    pub remote_retry_results: bool,
    /// Whether the remote accepts stream requests from us. The original
    /// gotalk.js does not: with `false`, [`Peer::stream_request`](crate::Peer::stream_request)
    /// fails locally. Default `true`.
    pub remote_stream_requests: bool,
    /// Whether the connection's own task polls each request handler once
    /// before spawning it. A handler that completes without waiting (a quick
    /// computation, an echo) then costs no task at all, and its result goes
    /// out in the same write as the others answered from the same read; a
    /// handler that waits is spawned at its first `.await` and runs on its
    /// own, so slow handlers never delay other requests. Code before a
    /// handler's first `.await` runs on the connection's task: like any
    /// async code it must not block. Turn this off when handlers do long
    /// CPU work before awaiting anything, so that one connection's handlers
    /// run in parallel on several worker threads. Default `true`.
    pub inline_handlers: bool,
    /// How long a handler that asked to with
    /// [`Context::keep_running_after_close`](crate::Context::keep_running_after_close)
    /// may go on once its connection has closed; every other handler is
    /// cancelled (its future dropped) when the connection closes. Default 10 s.
    pub keep_running_grace: Duration,
    /// The cap on handlers waiting on something (spawned), shared by every
    /// connection that has a clone of it. While it is reached, new requests
    /// get the retry result `request rate limit` (`stream rate limit`) and
    /// notifications wait for a handler to finish. Default: one cap of
    /// [`HandlerLimit::PROCESS_DEFAULT`] handlers for the whole process.
    pub handler_limit: HandlerLimit,
    /// The bound on bytes waiting to be written shared by every connection
    /// that has a clone of it (see [`WriteCeiling`]). Default: one ceiling
    /// of [`WriteCeiling::PROCESS_DEFAULT`] bytes for the whole process.
    pub write_ceiling: WriteCeiling,
    /// How long the connection's task keeps polling its transport after it
    /// last read or wrote, instead of sleeping until the runtime wakes it.
    /// Bytes that arrive meanwhile are read at once, without the latency of
    /// waking a sleeping thread, which on virtual machines is often longer
    /// than a request's own work: with 50 µs on both sides, `gotalk bench`
    /// against `gotalk serve` (one thread each, 64 requests in flight) ran
    /// about twice the requests per second at under half the median latency
    /// (`docs/benchmarks.md`). The price is a CPU kept busy for the window
    /// after every read or write, even with nothing more to come: for
    /// latency-sensitive peers with cores to spare. The runtime's other
    /// tasks run in between. Default `None` (sleep at once).
    ///
    /// ```
    /// use std::time::Duration;
    /// use gotalk_peer::Config;
    /// let config = Config {
    ///     busy_poll: Some(Duration::from_micros(50)),
    ///     ..Config::default()
    /// };
    /// # let _ = config;
    /// ```
    pub busy_poll: Option<Duration>,
}

/// A cap on running handlers, shared by the connections whose
/// [`Config::handler_limit`] is a clone of it (a counting semaphore).
///
/// It counts handlers that wait on something, which run as tasks of their
/// own; a handler that finishes when first polled (see
/// [`Config::inline_handlers`]) is not counted. A request is refused when
/// the cap is reached as it arrives, so the cap can be passed by at most
/// one handler per connection whose handler started waiting at that moment.
///
/// ```
/// use gotalk_peer::{Config, HandlerLimit};
/// let limit = HandlerLimit::new(10_000);
/// let config = Config { handler_limit: limit.clone(), ..Config::default() };
/// assert_eq!(limit.available(), 10_000);
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct HandlerLimit {
    permits: Arc<tokio::sync::Semaphore>,
    max: usize,
}

impl HandlerLimit {
    /// The size of the process-wide cap [`Config::default`] uses.
    pub const PROCESS_DEFAULT: usize = 65_536;

    /// A new cap of `max` running handlers (at least 1).
    pub fn new(max: usize) -> Self {
        let max = max.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(tokio::sync::Semaphore::new(max)),
            max,
        }
    }

    /// The one cap shared by every [`Config::default`] of this process.
    pub fn process_default() -> Self {
        static DEFAULT: std::sync::OnceLock<HandlerLimit> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| HandlerLimit::new(Self::PROCESS_DEFAULT))
            .clone()
    }

    /// Handlers that may still start.
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// The cap: the most handlers that may run at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Handlers running now (the cap less what is available).
    pub fn running(&self) -> usize {
        self.max.saturating_sub(self.available())
    }

    /// True when no handler may start now.
    pub(crate) fn is_reached(&self) -> bool {
        self.permits.available_permits() == 0
    }

    /// A place, if one is free.
    pub(crate) fn try_take(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    /// A place, once one is free.
    pub(crate) async fn take(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.permits
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }
}

impl std::fmt::Debug for HandlerLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandlerLimit")
            .field("available", &self.available())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_inbound_requests: 1024,
            max_inbound_streams: 32,
            stream_buffer_parts: 16,
            max_buffered_bytes: 64 * 1024 * 1024,
            max_concurrent_notifications: 1024,
            max_write_queue_bytes: 8 * 1024 * 1024,
            rate_limit_wait: (Duration::from_millis(50), Duration::from_millis(500)),
            read_timeout: None,
            write_timeout: Some(Duration::from_secs(30)),
            handshake_timeout: Duration::from_secs(10),
            heartbeat_interval: Some(Duration::from_secs(20)),
            heartbeat_load: None,
            on_heartbeat: None,
            max_attempts: 3,
            retry_backoff: Duration::from_millis(50),
            request_timeout: None,
            close_timeout: Duration::from_secs(5),
            remote_retry_results: true,
            remote_stream_requests: true,
            inline_handlers: true,
            keep_running_grace: Duration::from_secs(10),
            handler_limit: HandlerLimit::process_default(),
            write_ceiling: WriteCeiling::process_default(),
            busy_poll: None,
        }
    }
}

impl Config {
    /// The settings for a peer that is the original gotalk.js browser
    /// client: no retry results and no stream requests sent to it.
    pub fn for_gotalk_js() -> Self {
        Self {
            remote_retry_results: false,
            remote_stream_requests: false,
            ..Self::default()
        }
    }

    pub(crate) fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits::with_max_payload(self.max_payload)
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("max_payload", &self.max_payload)
            .field("max_inbound_requests", &self.max_inbound_requests)
            .field("max_inbound_streams", &self.max_inbound_streams)
            .field("stream_buffer_parts", &self.stream_buffer_parts)
            .field("max_buffered_bytes", &self.max_buffered_bytes)
            .field("max_write_queue_bytes", &self.max_write_queue_bytes)
            .field("read_timeout", &self.read_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("max_attempts", &self.max_attempts)
            .field("request_timeout", &self.request_timeout)
            .field("remote_retry_results", &self.remote_retry_results)
            .field("remote_stream_requests", &self.remote_stream_requests)
            .field("inline_handlers", &self.inline_handlers)
            .field("keep_running_grace", &self.keep_running_grace)
            .field("handler_limit", &self.handler_limit)
            .field("write_ceiling", &self.write_ceiling)
            .field("busy_poll", &self.busy_poll)
            .finish_non_exhaustive()
    }
}
