//! [`Hub`]: the handle the application holds.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime},
};

use bytes::Bytes;
use futures::FutureExt;
use gotalk_peer::{ConnectionInfo, Handlers, Peer, Rejection, Server};
use serde::Serialize;

use crate::{
    HubBuilder, HubError, Limits, TokenSource,
    auth::{AuthError, Identity, Permissions, Verifier},
    broker::{Broker, ClientInfo, History, HistoryQuery, PublishOptions, StreamPosition},
    client::{Principal, Session, SessionRef},
    config::HistoryRules,
    hooks::{Hooks, LeaveReason},
    lifecycle::{self, Preauth},
    node::Node,
    wire,
};

/// How long an identity verified when a WebSocket upgrade was admitted
/// waits for its connection to open; older ones are from connections
/// whose handshake failed, and are dropped.
const EARLY_IDENTITY_TTL: Duration = Duration::from_secs(60);

/// Publish/subscribe, presence and history on gotalk connections: a
/// cheap-to-clone handle (clones share one hub).
///
/// A hub serves connections through a [`Server`] ([`attach`](Self::attach)
/// and [`handlers`](Self::handlers)), and the rest of the process through
/// its methods ([`publish`](Self::publish), [`subscribe_client`](Self::subscribe_client),
/// [`presence`](Self::presence), ...). Clients speak the wire mapping of
/// docs/hub.md: plain gotalk requests (`subscribe`, `publish`, ...) and a
/// notification named by the channel for every delivery.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use gotalk_hub::Hub;
/// use gotalk_peer::{Config, Handlers, Peer, Server};
/// use serde_json::{json, Value};
///
/// let hub = Hub::builder().build().await?;
/// let server = Server::bind("127.0.0.1:0", hub.handlers(Handlers::new()), Config::default()).await?;
/// let server = hub.attach(server).spawn();
///
/// // A client, as any gotalk client would do it.
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let on_news = Handlers::new().notification("news", move |_ctx, payload| {
///     let _ = tx.send(payload);
///     async {}
/// });
/// let client = Peer::connect(server.local_addr().to_string(), on_news, Config::default()).await?;
/// let _: Value = client.request_json("subscribe", &json!({"channel": "news"})).await?;
///
/// hub.publish("news", &json!({"headline": "hello"})).await?;
/// let p: Value = serde_json::from_slice(&rx.recv().await.unwrap())?;
/// assert_eq!(p["data"]["headline"], "hello");
/// assert_eq!(p["offset"], 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Hub {
    pub(crate) inner: Arc<HubInner>,
}

pub(crate) struct HubInner {
    pub(crate) node: Arc<Node>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) auth: AuthSettings,
    pub(crate) history: HistoryRules,
    pub(crate) hooks: Option<Arc<dyn Hooks>>,
    pub(crate) limits: Limits,
    /// The open sessions, by client id.
    pub(crate) sessions: Mutex<HashMap<Arc<str>, Arc<Session>>>,
    pub(crate) node_id: String,
    pub(crate) next_session: AtomicU64,
    /// See [`HubBuilder::publish_pacing`](crate::HubBuilder::publish_pacing).
    pub(crate) pacing: Option<crate::pacing::Pacing>,
}

pub(crate) struct AuthSettings {
    pub(crate) verifier: Option<Arc<dyn Verifier>>,
    pub(crate) tokens: TokenSource,
    /// What unauthenticated connections may do; `None`: they must
    /// authenticate first.
    pub(crate) anonymous: Option<Arc<Permissions>>,
    /// Identities verified while admitting WebSocket upgrades, for their
    /// connections to pick up when they open: by listener and connection.
    pub(crate) early: Mutex<HashMap<(String, u64), (Instant, Identity)>>,
}

/// Counts of what a hub holds, from [`Hub::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct HubStats {
    /// Open sessions (connections) on this node.
    pub clients: usize,
    /// Their subscriptions, added up.
    pub subscriptions: usize,
    /// Their presence entries, added up.
    pub presence: usize,
    /// Channels this node has subscribers for (or is releasing).
    pub channels: usize,
    /// Subscribers in the node's fan-out tables (equal to
    /// `subscriptions` when nothing is in flight).
    pub node_subscribers: usize,
    /// Channels this node subscribes to at the broker.
    pub broker_subscriptions: usize,
    /// Publications held for subscriptions being set up, or for channels
    /// being recovered.
    pub held_publications: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("node", &self.inner.node_id)
            .field("stats", &self.stats())
            .finish()
    }
}

impl Hub {
    /// A builder with the defaults: a [`MemoryBroker`](crate::broker::memory::MemoryBroker),
    /// no authentication (everything allowed), no history, no hooks.
    pub fn builder() -> HubBuilder {
        HubBuilder::new()
    }

    /// `app`'s handlers plus the hub's operations (`auth`, `subscribe`,
    /// `unsubscribe`, `publish`, `presence`, `history`), which replace any
    /// of `app`'s of the same names.
    pub fn handlers(&self, app: Handlers) -> Handlers {
        crate::ops::install(self, app)
    }

    /// Gives every connection of `server` a hub session: installs its
    /// [`on_connect`](Server::on_connect) hook (refuses a WebSocket
    /// upgrade whose token a verifier that answers at once refuses: 401)
    /// and its [`on_open`](Server::on_open) hook (starts the session).
    /// Serve [`handlers`](Self::handlers) on it too.
    ///
    /// This replaces hooks already set on `server`; to keep your own,
    /// call [`admit`](Self::admit) and [`open_connection`](Self::open_connection)
    /// from them instead.
    pub fn attach(&self, server: Server) -> Server {
        let (admit, open) = (self.clone(), self.clone());
        server
            .on_connect(move |info| admit.admit(info))
            .on_open(move |peer, info| {
                open.open_connection(peer, info);
            })
    }

    /// Admission of a connection (for your own
    /// [`Server::on_connect`]): with a verifier and a token in the
    /// WebSocket upgrade request, a verifier that answers at once decides
    /// here (a refusal is a 401 with the reason); one that does not is
    /// asked once the connection is open, and its requests wait for it.
    pub fn admit(&self, info: &ConnectionInfo) -> Result<(), Rejection> {
        let auth = &self.inner.auth;
        let (Some(verifier), Some(ws)) = (&auth.verifier, info.websocket()) else {
            return Ok(());
        };
        let Some(token) = auth.tokens.token(ws) else {
            return Ok(());
        };
        match verifier.verify(&token).now_or_never() {
            None => Ok(()),
            Some(Err(e)) => Err(Rejection::unauthorized(e.to_string())),
            Some(Ok(identity)) => {
                if let Err(e) = check_expiry(&identity) {
                    return Err(Rejection::unauthorized(e.to_string()));
                }
                let mut early = lock(&auth.early);
                early.retain(|_, (at, _)| at.elapsed() < EARLY_IDENTITY_TTL);
                early.insert(early_key(info), (Instant::now(), identity));
                Ok(())
            }
        }
    }

    /// Starts the hub session of a connection a [`Server`] opened (for
    /// your own [`Server::on_open`]): the identity [`admit`](Self::admit)
    /// verified, or the upgrade's token to verify now. Returns the
    /// client's id.
    pub fn open_connection(&self, peer: &Peer, info: &ConnectionInfo) -> String {
        let auth = &self.inner.auth;
        let early = lock(&auth.early).remove(&early_key(info));
        let preauth = match early {
            Some((_, identity)) => Preauth::Identity(identity),
            None => match (
                &auth.verifier,
                info.websocket().and_then(|ws| auth.tokens.token(ws)),
            ) {
                (Some(_), Some(token)) => Preauth::Token(token),
                _ => Preauth::None,
            },
        };
        self.start(peer, Some(Arc::new(info.clone())), preauth)
    }

    /// Starts the hub session of a connection opened some other way
    /// ([`Peer::pair`], [`Peer::handshake`]): call it before the client's
    /// first request. The connection authenticates with `auth` if the hub
    /// requires it. Returns the client's id.
    pub fn open(&self, peer: &Peer) -> String {
        self.start(peer, None, Preauth::None)
    }

    fn start(&self, peer: &Peer, info: Option<Arc<ConnectionInfo>>, preauth: Preauth) -> String {
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let client: Arc<str> = format!("{}-{id}", self.inner.node_id).into();
        let session = Arc::new(Session::new(id, client.clone(), peer.clone(), info));
        peer.set_user_data(SessionRef(Arc::downgrade(&session)));
        lock(&self.inner.sessions).insert(client.clone(), session.clone());
        tokio::spawn(lifecycle::run(self.clone(), session, preauth));
        client.to_string()
    }

    /// Publishes `data` (serialized as JSON) on `channel`, from the server:
    /// no permission check and no hook. Returns the publication's
    /// position.
    pub async fn publish<T: Serialize + ?Sized>(
        &self,
        channel: &str,
        data: &T,
    ) -> Result<StreamPosition, HubError> {
        let data = serde_json::to_vec(data).map_err(|e| HubError::InvalidData(e.to_string()))?;
        self.publish_raw(channel, Bytes::from(data), None).await
    }

    /// [`publish`](Self::publish) of data that is already JSON (checked).
    pub async fn publish_json(
        &self,
        channel: &str,
        data: impl Into<Bytes>,
    ) -> Result<StreamPosition, HubError> {
        let data = data.into();
        wire::check_json(&data)?;
        self.publish_raw(channel, data, None).await
    }

    pub(crate) async fn publish_raw(
        &self,
        channel: &str,
        data: Bytes,
        info: Option<ClientInfo>,
    ) -> Result<StreamPosition, HubError> {
        self.check_channel(channel)?;
        let options = PublishOptions {
            history: self.inner.history.for_channel(channel),
            info,
        };
        Ok(self.inner.broker.publish(channel, data, &options).await?)
    }

    /// Subscribes connection `client` to `channel` from the server (a
    /// user's own channel, say): no permission check and no hook but
    /// `on_join`. The client starts receiving the channel's notifications.
    pub async fn subscribe_client(&self, client: &str, channel: &str) -> Result<(), HubError> {
        self.check_channel(channel)?;
        let session = self.session(client)?;
        let ctx = session.last_context(self);
        lifecycle::join(self, &session, &ctx, channel, None, false, false)
            .await
            .map(drop)
    }

    /// Ends connection `client`'s subscription to `channel` from the
    /// server; the client gets `{"unsubscribed": "unsubscribed by the
    /// server"}` on it. Returns whether it was subscribed.
    pub async fn unsubscribe_client(&self, client: &str, channel: &str) -> Result<bool, HubError> {
        let session = self.session(client)?;
        Ok(lifecycle::part(
            self,
            &session,
            channel,
            LeaveReason::Server,
            Some("unsubscribed by the server"),
        )
        .await)
    }

    /// Who is in `channel`'s presence, across every node.
    pub async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, HubError> {
        self.check_channel(channel)?;
        Ok(self.inner.broker.presence(channel).await?)
    }

    /// `channel`'s history (see [`Broker::history`]).
    pub async fn history(&self, channel: &str, query: HistoryQuery) -> Result<History, HubError> {
        self.check_channel(channel)?;
        Ok(self.inner.broker.history(channel, query).await?)
    }

    /// The connections open on this node, by client id.
    pub fn clients(&self) -> Vec<ClientInfo> {
        let sessions: Vec<_> = lock(&self.inner.sessions).values().cloned().collect();
        let mut clients: Vec<_> = sessions.iter().map(|s| s.last_context(self).info).collect();
        clients.sort_by(|a, b| a.client.cmp(&b.client));
        clients
    }

    /// The channels connection `client` subscribes to, sorted; `None` if
    /// it is not open on this node.
    pub fn subscriptions(&self, client: &str) -> Option<Vec<String>> {
        let session = self.session(client).ok()?;
        let mut channels: Vec<String> = session
            .state()
            .subscriptions
            .keys()
            .map(|c| c.to_string())
            .collect();
        channels.sort();
        Some(channels)
    }

    /// The client id and user of the connection `peer` (from your own
    /// handlers: `hub.client_info(ctx.peer())`); `None` before its session
    /// is ready.
    pub fn client_info(&self, peer: &Peer) -> Option<ClientInfo> {
        let session = peer.user_data::<SessionRef>()?.0.upgrade()?;
        Some(session.principal()?.info.clone())
    }

    /// The verified identity of the connection `peer`, if it has one.
    pub fn identity(&self, peer: &Peer) -> Option<Identity> {
        let session = peer.user_data::<SessionRef>()?.0.upgrade()?;
        session.principal()?.identity.as_deref().cloned()
    }

    /// What this hub holds now.
    pub fn stats(&self) -> HubStats {
        let sessions: Vec<_> = lock(&self.inner.sessions).values().cloned().collect();
        let node = self.inner.node.stats();
        let mut stats = HubStats {
            clients: sessions.len(),
            channels: node.channels,
            node_subscribers: node.subscribers,
            broker_subscriptions: node.broker_subscriptions,
            held_publications: node.held_publications,
            ..HubStats::default()
        };
        for s in sessions {
            let st = s.state();
            stats.subscriptions += st.subscriptions.len();
            stats.presence += st
                .subscriptions
                .values()
                .filter(|s| s.presence.is_some())
                .count();
        }
        stats
    }

    /// The hub's broker.
    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.inner.broker
    }

    pub(crate) fn check_channel(&self, channel: &str) -> Result<(), HubError> {
        if self.inner.limits.valid_channel(channel) {
            Ok(())
        } else {
            Err(HubError::InvalidChannel)
        }
    }

    fn session(&self, client: &str) -> Result<Arc<Session>, HubError> {
        lock(&self.inner.sessions)
            .get(client)
            .cloned()
            .ok_or_else(|| HubError::UnknownClient(client.to_owned()))
    }

    pub(crate) fn forget(&self, session: &Session) {
        lock(&self.inner.sessions).remove(&session.client);
    }

    /// Checks `token` with the verifier, and that it has not expired.
    pub(crate) async fn verify(&self, token: &str) -> Result<Identity, HubError> {
        let Some(verifier) = &self.inner.auth.verifier else {
            return Err(AuthError::Invalid("this hub checks no tokens".into()).into());
        };
        let identity = verifier.verify(token).await?;
        check_expiry(&identity)?;
        Ok(identity)
    }

    /// Who a session is with `identity` (or anonymous).
    pub(crate) fn principal(&self, session: &Session, identity: Option<Identity>) -> Principal {
        let user = identity
            .as_ref()
            .map_or_else(String::new, |i| i.user.clone());
        let permissions = match &identity {
            Some(i) => Arc::new(i.permissions.clone()),
            None => self
                .inner
                .auth
                .anonymous
                .clone()
                .unwrap_or_else(|| Arc::new(Permissions::none())),
        };
        Principal {
            info: ClientInfo {
                user,
                client: session.client.to_string(),
            },
            identity: identity.map(Arc::new),
            permissions,
        }
    }
}

fn early_key(info: &ConnectionInfo) -> (String, u64) {
    (info.local_addr.to_string(), info.id)
}

fn check_expiry(identity: &Identity) -> Result<(), AuthError> {
    match identity.expires {
        Some(t) if t <= SystemTime::now() => Err(AuthError::Expired),
        _ => Ok(()),
    }
}
