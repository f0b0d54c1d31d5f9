//! [`HubBuilder`]: how a hub is put together.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, atomic::AtomicU64},
    time::Duration,
};

use crate::{
    Hub, HubError, Limits, TokenSource,
    auth::{Permissions, Verifier},
    broker::{Broker, HistoryOptions, memory::MemoryBroker},
    config::HistoryRules,
    hooks::Hooks,
    hub::{AuthSettings, HubInner},
    node::Node,
};

/// Builds a [`Hub`]: [`Hub::builder`], the settings, then
/// [`build`](Self::build).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), gotalk_hub::HubError> {
/// use std::time::Duration;
/// use gotalk_hub::{Hub, broker::HistoryOptions};
///
/// let hub = Hub::builder()
///     .history("chat:*", HistoryOptions { size: 100, ttl: Duration::from_secs(600) })
///     .build()
///     .await?;
/// # let _ = hub;
/// # Ok(()) }
/// ```
#[must_use]
pub struct HubBuilder {
    broker: Option<Arc<dyn Broker>>,
    verifier: Option<Arc<dyn Verifier>>,
    tokens: TokenSource,
    anonymous: Option<Permissions>,
    history: HistoryRules,
    hooks: Option<Arc<dyn Hooks>>,
    limits: Limits,
    write_delay: Option<Duration>,
    publish_pacing: Option<Duration>,
}

impl std::fmt::Debug for HubBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubBuilder")
            .field("custom_broker", &self.broker.is_some())
            .field("verifier", &self.verifier.is_some())
            .field("tokens", &self.tokens)
            .field("anonymous", &self.anonymous)
            .field("history", &self.history)
            .field("hooks", &self.hooks.is_some())
            .field("limits", &self.limits)
            .field("write_delay", &self.write_delay)
            .field("publish_pacing", &self.publish_pacing)
            .finish()
    }
}

impl HubBuilder {
    pub(crate) fn new() -> Self {
        Self {
            broker: None,
            verifier: None,
            tokens: TokenSource::default(),
            anonymous: None,
            history: HistoryRules::default(),
            hooks: None,
            limits: Limits::default(),
            write_delay: None,
            publish_pacing: None,
        }
    }

    /// The broker (default: a new [`MemoryBroker`], for a hub in one
    /// process). The hub starts it in [`build`](Self::build).
    pub fn broker(mut self, broker: impl Broker) -> Self {
        self.broker = Some(Arc::new(broker));
        self
    }

    /// [`broker`](Self::broker), shared: keep a handle to it too.
    pub fn broker_arc(mut self, broker: Arc<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// Checks tokens with `verifier`. From then on a connection must
    /// authenticate (a token with its WebSocket upgrade, or an `auth`
    /// request) before anything else, unless [`anonymous`](Self::anonymous)
    /// lets it do some things without.
    pub fn verifier(mut self, verifier: impl Verifier) -> Self {
        self.verifier = Some(Arc::new(verifier));
        self
    }

    /// [`verifier`](Self::verifier), shared.
    pub fn verifier_arc(mut self, verifier: Arc<dyn Verifier>) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Where WebSocket upgrade requests carry tokens (default:
    /// [`TokenSource::default`]).
    pub fn token_source(mut self, tokens: TokenSource) -> Self {
        self.tokens = tokens;
        self
    }

    /// What a connection that has not authenticated may do. Without a
    /// verifier the default is everything ([`Permissions::all`]); with
    /// one, authentication is required unless this is set (to anything,
    /// [`Permissions::none`] included: then unauthenticated requests get
    /// `forbidden: ...` rather than `unauthenticated`).
    pub fn anonymous(mut self, permissions: Permissions) -> Self {
        self.anonymous = Some(permissions);
        self
    }

    /// Keeps history for the channels matching `pattern` (a name, a
    /// prefix followed by `*`, or `*`); the most specific pattern wins.
    /// Channels no pattern matches keep none (offsets only), so clients
    /// cannot resume them after missing anything.
    pub fn history(mut self, pattern: impl Into<String>, options: HistoryOptions) -> Self {
        self.history.add(pattern.into(), options);
        self
    }

    /// The application's hooks (default: none, everything allowed).
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks = Some(Arc::new(hooks));
        self
    }

    /// [`hooks`](Self::hooks), shared: keep a handle to them too (to read
    /// what they counted, say).
    pub fn hooks_arc(mut self, hooks: Arc<dyn Hooks>) -> Self {
        self.hooks = Some(hooks);
        self
    }

    /// The limits (default: [`Limits::default`]).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Lets a publication wait up to `delay` in each subscriber's write
    /// queue, to be written together with the publications that reach the
    /// connection meanwhile (default: none, every delivery is written as
    /// soon as its connection's task runs). Centrifugo's `write_delay`:
    /// under a high rate of publications to many subscribers, each write
    /// carries several, which costs the server, the kernel and the
    /// subscribers far less per delivery, for up to `delay` more latency.
    /// Answers, and anything else sent on the connection, are never held:
    /// they take what waits along at once; 32 KiB waiting go at once too.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), gotalk_hub::HubError> {
    /// use std::time::Duration;
    /// let hub = gotalk_hub::Hub::builder()
    ///     .write_delay(Duration::from_millis(10))
    ///     .build()
    ///     .await?;
    /// # let _ = hub;
    /// # Ok(()) }
    /// ```
    pub fn write_delay(mut self, delay: Duration) -> Self {
        self.write_delay = (!delay.is_zero()).then_some(delay);
        self
    }

    /// Paces clients' publications by the node's writes (default: off;
    /// zero turns it off again).
    ///
    /// A client's `publish` is answered once its deliveries are queued, so
    /// on a saturated node a publisher that keeps several publications in
    /// flight queues them faster than the connections write them, and
    /// every delivery waits behind that queue. With pacing, one
    /// publication at a time is a probe: its answer is sent only after the
    /// connections it woke have had their turn to write
    /// ([`Context::yield_behind_woken`](gotalk_peer::Context::yield_behind_woken)),
    /// the way Socket.IO writes before it acknowledges. While the probe out
    /// has waited less than `target`, and the last one came back within
    /// it, other answers go at once, so publishers run ahead and each write
    /// carries several publications; otherwise every answer is held like
    /// the probe's, which slows publishers that wait for their answers to
    /// the rate the node writes at. A lone publisher's every publication is
    /// a probe. Publications from the application
    /// ([`Hub::publish`](crate::Hub::publish)) are not paced.
    ///
    /// The price is throughput when many channels each have few
    /// subscribers, where batching needs publishers well ahead of the
    /// writes (docs/benchmarks.md, "Publish pacing").
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), gotalk_hub::HubError> {
    /// use std::time::Duration;
    /// let hub = gotalk_hub::Hub::builder()
    ///     .publish_pacing(Duration::from_millis(10))
    ///     .build()
    ///     .await?;
    /// # let _ = hub;
    /// # Ok(()) }
    /// ```
    pub fn publish_pacing(mut self, target: Duration) -> Self {
        self.publish_pacing = (!target.is_zero()).then_some(target);
        self
    }

    /// Starts the broker and the hub's background work (presence
    /// refresh). Must run inside a tokio runtime.
    pub async fn build(self) -> Result<Hub, HubError> {
        let broker = self.broker.unwrap_or_else(|| Arc::new(MemoryBroker::new()));
        let anonymous = match (&self.verifier, self.anonymous) {
            (_, Some(p)) => Some(Arc::new(p)),
            (None, None) => Some(Arc::new(Permissions::all())),
            (Some(_), None) => None,
        };
        let node = Arc::new(Node::new(
            broker.clone(),
            self.limits.max_recover,
            self.limits.max_held_publications,
            self.write_delay,
        ));
        let refresh_now = Arc::new(tokio::sync::Notify::new());
        let sink = crate::presence::RestoringSink {
            node: node.sink(),
            refresh_now: refresh_now.clone(),
        };
        broker.start(Arc::new(sink)).await?;
        let inner = Arc::new(HubInner {
            node,
            broker,
            auth: AuthSettings {
                verifier: self.verifier,
                tokens: self.tokens,
                anonymous,
                early: Mutex::new(HashMap::new()),
            },
            history: self.history,
            hooks: self.hooks,
            limits: self.limits,
            sessions: Mutex::new(HashMap::new()),
            node_id: crate::id::random_hex(),
            next_session: AtomicU64::new(1),
            pacing: self.publish_pacing.map(crate::pacing::Pacing::new),
        });
        tokio::spawn(crate::presence::refresh(
            Arc::downgrade(&inner),
            refresh_now,
        ));
        Ok(Hub { inner })
    }
}
