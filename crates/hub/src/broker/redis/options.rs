//! [`RedisBrokerOptions`] and the error a bad configuration gives.

use std::time::Duration;

/// How a [`RedisBroker`](super::RedisBroker) names its keys, how long it
/// waits for Redis and how it reconnects.
///
/// ```
/// use std::time::Duration;
/// use gotalk_hub::broker::redis::RedisBrokerOptions;
///
/// let options = RedisBrokerOptions::new()
///     .with_prefix("chat:")
///     .with_operation_timeout(Duration::from_millis(500));
/// assert_eq!(options.prefix(), "chat:");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisBrokerOptions {
    prefix: String,
    connect_timeout: Duration,
    operation_timeout: Duration,
    reconnect_min_delay: Duration,
    reconnect_max_delay: Duration,
    ping_interval: Duration,
    position_ttl: Duration,
    dedicated_thread: bool,
}

impl Default for RedisBrokerOptions {
    fn default() -> Self {
        Self {
            prefix: "gotalk-hub:".to_owned(),
            connect_timeout: Duration::from_secs(2),
            operation_timeout: Duration::from_secs(2),
            reconnect_min_delay: Duration::from_millis(50),
            reconnect_max_delay: Duration::from_secs(2),
            ping_interval: Duration::from_secs(5),
            position_ttl: Duration::from_secs(24 * 60 * 60),
            dedicated_thread: false,
        }
    }
}

impl RedisBrokerOptions {
    /// The defaults: prefix `gotalk-hub:`, 2 s connect and operation
    /// timeouts, reconnect backoff from 50 ms to 2 s, a pub/sub ping every
    /// 5 s, channel positions kept 24 h.
    pub fn new() -> Self {
        Self::default()
    }

    /// Prefix of every key and pub/sub channel name. Hubs sharing one Redis
    /// need prefixes of which neither starts with the other (`a:` and
    /// `b:`, not `a:` and `a:b:`).
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// How long opening a connection to Redis may take.
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one operation (publish, history, presence, subscribe) may
    /// take, connecting included; past it the operation fails with
    /// [`BrokerError::Unavailable`](crate::broker::BrokerError::Unavailable).
    pub fn with_operation_timeout(mut self, timeout: Duration) -> Self {
        self.operation_timeout = timeout;
        self
    }

    /// Backoff between reconnection attempts of the pub/sub connection: it
    /// starts at `min`, doubles up to `max`, with random jitter.
    pub fn with_reconnect_delay(mut self, min: Duration, max: Duration) -> Self {
        self.reconnect_min_delay = min;
        self.reconnect_max_delay = max;
        self
    }

    /// How often the pub/sub connection is pinged, to notice a Redis that
    /// went away without closing the connection.
    pub fn with_ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval;
        self
    }

    /// How long a channel's position (epoch and offset) outlives its last
    /// publication, at least. It also lives as long as the channel's
    /// history. When it expires the channel starts a new epoch.
    pub fn with_position_ttl(mut self, ttl: Duration) -> Self {
        self.position_ttl = ttl;
        self
    }

    /// Runs the broker's Redis connections (the command connection with
    /// the publish script, and the pub/sub connection with the task that
    /// hands deliveries to the hub) on a thread of their own, with its own
    /// current-thread tokio runtime. Off by default.
    ///
    /// On a node whose runtime is busy writing to many subscribers, Redis's
    /// answers otherwise wait behind those connections' tasks before the
    /// publishes they answer can finish; on the thread they are read at
    /// once. The node then uses one more thread than its runtime has (so
    /// it is for machines with a core to spare). The thread starts when the
    /// broker is built and stops when it is dropped, closing its
    /// connections; operations still in flight then fail with
    /// [`BrokerError::Stopped`](crate::broker::BrokerError::Stopped).
    ///
    /// ```
    /// use gotalk_hub::broker::redis::{RedisBroker, RedisBrokerOptions};
    ///
    /// let options = RedisBrokerOptions::new().with_dedicated_thread(true);
    /// let broker = RedisBroker::with_options("redis://127.0.0.1:6379/", options)?;
    /// assert!(broker.options().dedicated_thread());
    /// drop(broker); // stops the thread
    /// # Ok::<(), gotalk_hub::broker::redis::RedisConfigError>(())
    /// ```
    pub fn with_dedicated_thread(mut self, on: bool) -> Self {
        self.dedicated_thread = on;
        self
    }

    /// See [`with_dedicated_thread`](Self::with_dedicated_thread).
    pub fn dedicated_thread(&self) -> bool {
        self.dedicated_thread
    }

    /// See [`with_prefix`](Self::with_prefix).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// See [`with_connect_timeout`](Self::with_connect_timeout).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// See [`with_operation_timeout`](Self::with_operation_timeout).
    pub fn operation_timeout(&self) -> Duration {
        self.operation_timeout
    }

    /// See [`with_reconnect_delay`](Self::with_reconnect_delay): `(min, max)`.
    pub fn reconnect_delay(&self) -> (Duration, Duration) {
        (self.reconnect_min_delay, self.reconnect_max_delay)
    }

    /// See [`with_ping_interval`](Self::with_ping_interval).
    pub fn ping_interval(&self) -> Duration {
        self.ping_interval
    }

    /// See [`with_position_ttl`](Self::with_position_ttl).
    pub fn position_ttl(&self) -> Duration {
        self.position_ttl
    }

    pub(super) fn validate(&self) -> Result<(), RedisConfigError> {
        let positive = [
            ("connect timeout", self.connect_timeout),
            ("operation timeout", self.operation_timeout),
            ("reconnect delay", self.reconnect_min_delay),
            ("ping interval", self.ping_interval),
            ("position ttl", self.position_ttl),
        ];
        for (what, value) in positive {
            if value.is_zero() {
                return Err(RedisConfigError(format!("{what} must not be zero")));
            }
        }
        if self.reconnect_max_delay < self.reconnect_min_delay {
            return Err(RedisConfigError(
                "reconnect delay: max is below min".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A [`RedisBroker`](super::RedisBroker) could not be built: a bad URL, bad
/// options, or (with [`RedisBrokerOptions::with_dedicated_thread`]) its
/// thread or runtime could not be started. Nothing was connected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid Redis broker configuration: {0}")]
pub struct RedisConfigError(pub(super) String);
