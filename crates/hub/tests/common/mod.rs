//! Test helpers: a hub served over loopback TCP, and clients that use it
//! the way any gotalk client would (requests with JSON payloads, and a
//! notification handler per channel).

#![allow(dead_code, unreachable_pub)]

use std::{
    collections::HashMap,
    future::Future,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt};
use gotalk_hub::{
    Hub, HubBuilder,
    auth::{AuthError, Identity, Permissions, Verifier},
    broker::{
        Broker, BrokerError, BrokerSink, ClientInfo, Delivery, History, HistoryQuery,
        PublishOptions, StreamPosition, memory::MemoryBroker,
    },
};
use gotalk_peer::{Config, Error, Handlers, Peer, Server, ServerHandle};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long anything may take before a test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// A hub built by `builder`, served on an ephemeral loopback port.
pub async fn serve(builder: HubBuilder) -> (Hub, ServerHandle) {
    serve_with(builder, Config::default()).await
}

/// [`serve`] with a server config.
pub async fn serve_with(builder: HubBuilder, config: Config) -> (Hub, ServerHandle) {
    let hub = builder.build().await.expect("hub builds");
    let server = Server::bind("127.0.0.1:0", hub.handlers(Handlers::new()), config)
        .await
        .expect("bind");
    let server = hub.attach(server).spawn();
    (hub, server)
}

/// Runs `f` within [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Waits until `cond` holds (polling every few milliseconds).
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

/// A client over loopback TCP that records every notification it gets.
pub struct Client {
    pub peer: Peer,
    rx: mpsc::UnboundedReceiver<(String, Value)>,
}

impl Client {
    pub async fn connect(server: &ServerHandle) -> Client {
        Self::connect_with(server, Config::default()).await
    }

    pub async fn connect_with(server: &ServerHandle, config: Config) -> Client {
        let (tx, rx) = mpsc::unbounded_channel();
        // The fallback handler: every channel's notifications. It finishes
        // without waiting, so notifications are handled in arrival order.
        let handlers = Handlers::new().notification("", move |ctx, payload: Bytes| {
            let value = serde_json::from_slice(&payload).expect("notifications are JSON");
            let _ = tx.send((ctx.name().to_owned(), value));
            async {}
        });
        let peer = Peer::connect(server.local_addr().to_string(), handlers, config)
            .await
            .expect("connect");
        Client { peer, rx }
    }

    /// A request; `Err` is an error result's text.
    pub async fn call(&self, op: &str, input: Value) -> Result<Value, String> {
        match within(op, self.peer.request_json::<_, Value>(op, &input)).await {
            Ok(v) => Ok(v),
            Err(Error::Remote(e)) => Err(e.message()),
            Err(e) => panic!("{op}: {e}"),
        }
    }

    /// A request that must succeed.
    pub async fn ok(&self, op: &str, input: Value) -> Value {
        match self.call(op, input.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{op} {input}: {e}"),
        }
    }

    /// The next notification.
    pub async fn next(&mut self) -> (String, Value) {
        within("a notification", self.rx.recv())
            .await
            .expect("connection open")
    }

    /// Waits a moment and asserts that nothing arrived.
    pub async fn assert_silent(&mut self) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(n) = self.rx.try_recv() {
            panic!("unexpected notification: {n:?}");
        }
    }

    /// Everything that arrived so far.
    pub fn drain(&mut self) -> Vec<(String, Value)> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

/// Token `t` is user `u` with permissions `p`, expiring at `e`: a tiny
/// verifier that answers at once (or, `slow`, after a timer).
#[derive(Clone, Default)]
pub struct TestTokens {
    pub tokens: Arc<Mutex<HashMap<String, Identity>>>,
    pub slow: bool,
}

impl TestTokens {
    pub fn add(&self, token: &str, user: &str, permissions: Permissions) -> &Self {
        self.add_expiring(token, user, permissions, None)
    }

    pub fn add_expiring(
        &self,
        token: &str,
        user: &str,
        permissions: Permissions,
        expires: Option<SystemTime>,
    ) -> &Self {
        self.tokens.lock().unwrap().insert(
            token.to_owned(),
            Identity {
                scopes: Vec::new(),
                user: user.to_owned(),
                expires,
                permissions,
            },
        );
        self
    }
}

impl Verifier for TestTokens {
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>> {
        let found = self.tokens.lock().unwrap().get(token).cloned();
        let answer = found.ok_or(AuthError::Unknown);
        if self.slow {
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                answer
            }
            .boxed()
        } else {
            futures::future::ready(answer).boxed()
        }
    }
}

/// The offsets of the publications among `notes`.
pub fn offsets(notes: &[(String, Value)]) -> Vec<u64> {
    notes
        .iter()
        .filter_map(|(_, v)| v.get("offset").and_then(Value::as_u64))
        .collect()
}

/// A broker whose deliveries to the node can be cut, as when the link to
/// Redis drops, with the resubscribe signal under the test's control.
#[derive(Clone, Default)]
pub struct Flaky {
    pub inner: MemoryBroker,
    pub down: Arc<AtomicBool>,
    pub slow_history: Arc<AtomicBool>,
    /// Delivers everything twice, as a broker replaying after a
    /// reconnect might.
    pub twice: Arc<AtomicBool>,
    /// Delivers each publication this many milliseconds late, as a
    /// broker's round trip does (0: at once, as it is published).
    pub delay_ms: Arc<AtomicU64>,
    pub sink: Arc<OnceLock<Arc<dyn BrokerSink>>>,
}

struct Gate {
    down: Arc<AtomicBool>,
    twice: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
    sink: Arc<dyn BrokerSink>,
}

impl BrokerSink for Gate {
    fn deliver(&self, channel: &str, delivery: Delivery) {
        if self.down.load(Ordering::SeqCst) {
            return;
        }
        if self.twice.load(Ordering::SeqCst) {
            self.sink.deliver(channel, delivery.clone());
        }
        let delay = self.delay_ms.load(Ordering::SeqCst);
        if delay == 0 {
            self.sink.deliver(channel, delivery);
            return;
        }
        let (sink, channel) = (self.sink.clone(), channel.to_owned());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay)).await;
            sink.deliver(&channel, delivery);
        });
    }
    fn resubscribed(&self) {
        self.sink.resubscribed();
    }
}

impl Broker for Flaky {
    fn start(&self, sink: Arc<dyn BrokerSink>) -> BoxFuture<'_, Result<(), BrokerError>> {
        let _ = self.sink.set(sink.clone());
        self.inner.start(Arc::new(Gate {
            down: self.down.clone(),
            twice: self.twice.clone(),
            delay_ms: self.delay_ms.clone(),
            sink,
        }))
    }
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        self.inner.publish(channel, data, options)
    }
    fn publish_presence<'a>(
        &'a self,
        channel: &'a str,
        event: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.publish_presence(channel, event)
    }
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.subscribe(channel)
    }
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.unsubscribe(channel)
    }
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>> {
        let slow = self.slow_history.load(Ordering::SeqCst);
        Box::pin(async move {
            // Read, then take a while to answer: what is published
            // meanwhile is newer than the answer, as with a remote broker.
            let history = self.inner.history(channel, query).await;
            if slow {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            history
        })
    }
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.add_presence(channel, info, ttl)
    }
    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.inner.remove_presence(channel, client)
    }
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>> {
        self.inner.presence(channel)
    }
}
