//! Authentication, permissions, hooks and token expiry: each refusal is a
//! clear error result, and nothing is served past it.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime},
};

use bytes::Bytes;
use common::{Client, TestTokens, eventually, serve, within};
use futures::future::{BoxFuture, FutureExt};
use gotalk_hub::{
    ClientContext, Denied, Hooks, Hub, LeaveReason, TokenSource,
    auth::{Access, Permissions},
};
use gotalk_peer::{CloseReason, Config, ConnectError, Handlers, Server, ws};
use serde_json::json;

fn reader_of(pattern: &str) -> Permissions {
    Permissions::none().allow(pattern, Access::READ)
}

#[tokio::test]
async fn without_authentication_nothing_is_served_and_auth_opens_the_door() {
    let tokens = TestTokens::default();
    tokens.add("good", "alice", Permissions::all());
    let (hub, server) = serve(Hub::builder().verifier(tokens)).await;
    let mut c = Client::connect(&server).await;
    for (op, input) in [
        ("subscribe", json!({"channel": "x"})),
        ("publish", json!({"channel": "x", "data": 1})),
        ("presence", json!({"channel": "x"})),
        ("history", json!({"channel": "x"})),
        ("unsubscribe", json!({"channel": "x"})),
    ] {
        assert_eq!(
            c.call(op, input).await.unwrap_err(),
            "unauthenticated",
            "{op}"
        );
    }
    assert_eq!(
        c.call("auth", json!({"token": "bad"})).await.unwrap_err(),
        "unknown token"
    );
    assert_eq!(hub.stats().subscriptions, 0);
    assert!(hub.client_info(&server.connections()[0]).is_none());

    let me = c.ok("auth", json!({"token": "good"})).await;
    assert_eq!(me["user"], "alice");
    assert_eq!(me["expires"], json!(null));
    let id = me["client"].as_str().unwrap().to_owned();
    assert_eq!(hub.clients()[0].client, id);
    assert_eq!(hub.clients()[0].user, "alice");
    let peer = &server.connections()[0];
    assert_eq!(hub.identity(peer).unwrap().user, "alice");

    c.ok("subscribe", json!({"channel": "x"})).await;
    c.ok("publish", json!({"channel": "x", "data": 1})).await;
    let (_, p) = c.next().await;
    assert_eq!(p["info"], json!({"user": "alice", "client": id}));
    server.shutdown().await;
}

#[tokio::test]
async fn each_missing_access_level_is_named_and_nothing_is_served() {
    let tokens = TestTokens::default();
    let perms = Permissions::none()
        .allow("chat:*", Access::READ)
        .allow("chat:lobby", Access::WRITE);
    tokens.add("t", "bob", perms);
    let (hub, server) = serve(Hub::builder().verifier(tokens)).await;
    let mut c = Client::connect(&server).await;
    c.ok("auth", json!({"token": "t"})).await;

    let refused = [
        (
            "subscribe",
            json!({"channel": "news"}),
            r#"forbidden: read access to "news""#,
        ),
        (
            "history",
            json!({"channel": "news"}),
            r#"forbidden: read access to "news""#,
        ),
        (
            "publish",
            json!({"channel": "chat:x", "data": 1}),
            r#"forbidden: write access to "chat:x""#,
        ),
        (
            "subscribe",
            json!({"channel": "chat:x", "presence": true}),
            r#"forbidden: presence access to "chat:x""#,
        ),
        (
            "subscribe",
            json!({"channel": "chat:x", "events": true}),
            r#"forbidden: presence access to "chat:x""#,
        ),
        (
            "presence",
            json!({"channel": "chat:x"}),
            r#"forbidden: presence access to "chat:x""#,
        ),
    ];
    for (op, input, error) in refused {
        assert_eq!(
            c.call(op, input.clone()).await.unwrap_err(),
            error,
            "{op} {input}"
        );
    }
    assert_eq!(hub.stats().subscriptions, 0);
    hub.publish("news", &1).await.unwrap();
    hub.publish("chat:x", &1).await.unwrap();
    c.assert_silent().await;
    assert!(
        hub.history("chat:x", Default::default())
            .await
            .unwrap()
            .position
            .offset
            == 1,
        "the refused publish did not happen"
    );

    c.ok("subscribe", json!({"channel": "chat:lobby"})).await;
    c.ok("publish", json!({"channel": "chat:lobby", "data": "ok"}))
        .await;
    assert_eq!(c.next().await.1["data"], "ok");
    server.shutdown().await;
}

#[tokio::test]
async fn anonymous_connections_get_the_anonymous_permissions() {
    let tokens = TestTokens::default();
    let builder = Hub::builder()
        .verifier(tokens)
        .anonymous(reader_of("public:*"));
    let (hub, server) = serve(builder).await;
    let mut c = Client::connect(&server).await;
    c.ok("subscribe", json!({"channel": "public:a"})).await;
    assert_eq!(
        c.call("publish", json!({"channel": "public:a", "data": 1}))
            .await
            .unwrap_err(),
        r#"forbidden: write access to "public:a""#
    );
    assert_eq!(
        c.call("subscribe", json!({"channel": "private"}))
            .await
            .unwrap_err(),
        r#"forbidden: read access to "private""#
    );
    hub.publish("public:a", &"hello").await.unwrap();
    assert_eq!(c.next().await.1["data"], "hello");
    server.shutdown().await;
}

/// Hooks that refuse, rewrite and count.
#[derive(Default)]
struct Policy {
    joins: AtomicUsize,
    leaves: Mutex<Vec<(String, LeaveReason)>>,
    disconnects: AtomicUsize,
}

impl Hooks for Policy {
    fn on_connect<'a>(&'a self, client: &'a ClientContext) -> BoxFuture<'a, Result<(), Denied>> {
        async move {
            // Asynchronous on purpose: requests wait for it.
            tokio::task::yield_now().await;
            if client.user() == "mallory" {
                Err(Denied::new("banned"))
            } else {
                Ok(())
            }
        }
        .boxed()
    }

    fn on_subscribe<'a>(
        &'a self,
        _client: &'a ClientContext,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<(), Denied>> {
        let r = if channel.starts_with("secret:") {
            Err(Denied::new("secret"))
        } else {
            Ok(())
        };
        futures::future::ready(r).boxed()
    }

    fn on_publish<'a>(
        &'a self,
        client: &'a ClientContext,
        channel: &'a str,
        data: Bytes,
    ) -> BoxFuture<'a, Result<Bytes, Denied>> {
        async move {
            if channel == "readonly" {
                return Err(Denied::new("read-only channel"));
            }
            let text: serde_json::Value = serde_json::from_slice(&data).unwrap();
            let stamped = json!({"by": client.user(), "text": text});
            Ok(Bytes::from(stamped.to_string()))
        }
        .boxed()
    }

    fn on_join<'a>(&'a self, _client: &'a ClientContext, _channel: &'a str) -> BoxFuture<'a, ()> {
        self.joins.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(()).boxed()
    }

    fn on_leave<'a>(
        &'a self,
        _client: &'a ClientContext,
        channel: &'a str,
        reason: LeaveReason,
    ) -> BoxFuture<'a, ()> {
        self.leaves
            .lock()
            .unwrap()
            .push((channel.to_owned(), reason));
        futures::future::ready(()).boxed()
    }

    fn on_disconnect<'a>(
        &'a self,
        _client: &'a ClientContext,
        _reason: &'a CloseReason,
    ) -> BoxFuture<'a, ()> {
        self.disconnects.fetch_add(1, Ordering::SeqCst);
        futures::future::ready(()).boxed()
    }
}

#[tokio::test]
async fn hooks_deny_rewrite_and_see_the_lifecycle() {
    let tokens = TestTokens::default();
    tokens.add("alice", "alice", Permissions::all());
    tokens.add("mallory", "mallory", Permissions::all());
    let policy = Arc::new(Policy::default());
    let builder = Hub::builder().verifier(tokens).hooks_arc(policy.clone());
    let (hub, server) = serve(builder).await;

    // on_connect refuses: the request that triggered it says why, and the
    // connection closes.
    let m = Client::connect(&server).await;
    assert_eq!(
        m.call("auth", json!({"token": "mallory"}))
            .await
            .unwrap_err(),
        "denied: banned"
    );
    within("close", m.peer.closed()).await;
    eventually("refused session gone", || hub.stats().clients == 0).await;
    assert_eq!(
        policy.disconnects.load(Ordering::SeqCst),
        0,
        "it never connected"
    );

    let mut a = Client::connect(&server).await;
    a.ok("auth", json!({"token": "alice"})).await;
    assert_eq!(
        a.call("subscribe", json!({"channel": "secret:x"}))
            .await
            .unwrap_err(),
        "denied: secret"
    );
    assert_eq!(
        a.call("publish", json!({"channel": "readonly", "data": 1}))
            .await
            .unwrap_err(),
        "denied: read-only channel"
    );
    a.ok("subscribe", json!({"channel": "talk"})).await;
    a.ok("publish", json!({"channel": "talk", "data": "hi"}))
        .await;
    assert_eq!(
        a.next().await.1["data"],
        json!({"by": "alice", "text": "hi"})
    );
    // History has the rewritten data too.
    let h = a.ok("history", json!({"channel": "talk"})).await;
    assert_eq!(h["offset"], 1);
    assert_eq!(hub.stats().subscriptions, 1);
    assert_eq!(policy.joins.load(Ordering::SeqCst), 1);

    a.peer.close().await;
    eventually("disconnect hook", || {
        policy.disconnects.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(
        *policy.leaves.lock().unwrap(),
        [("talk".to_owned(), LeaveReason::Disconnected)]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_identity_is_closed_with_a_reason_unless_refreshed() {
    let tokens = TestTokens::default();
    // Long enough for a loaded machine to get through the setup first.
    let soon = SystemTime::now() + Duration::from_millis(800);
    let later = SystemTime::now() + Duration::from_secs(3600);
    tokens.add_expiring("short", "carol", Permissions::all(), Some(soon));
    tokens.add_expiring("long", "carol", Permissions::all(), Some(later));
    tokens.add_expiring("dave", "dave", Permissions::all(), Some(later));
    tokens.add_expiring(
        "stale",
        "carol",
        Permissions::all(),
        Some(SystemTime::now() - Duration::from_secs(1)),
    );
    let (_hub, server) = serve(Hub::builder().verifier(tokens.clone())).await;

    assert_eq!(
        Client::connect(&server)
            .await
            .call("auth", json!({"token": "stale"}))
            .await
            .unwrap_err(),
        "token expired"
    );

    // Not refreshed: told on each channel, then closed.
    let mut c = Client::connect(&server).await;
    let me = c.ok("auth", json!({"token": "short"})).await;
    assert!(me["expires"].as_u64().is_some());
    c.ok("subscribe", json!({"channel": "a"})).await;
    c.ok("subscribe", json!({"channel": "b"})).await;
    let mut notices = vec![c.next().await, c.next().await];
    notices.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(
        notices,
        [
            ("a".to_owned(), json!({"unsubscribed": "token expired"})),
            ("b".to_owned(), json!({"unsubscribed": "token expired"})),
        ]
    );
    within("close", c.peer.closed()).await;

    // Refreshed in time: stays; another user's token is refused.
    let soon = SystemTime::now() + Duration::from_millis(800);
    tokens.add_expiring("short2", "carol", Permissions::all(), Some(soon));
    let mut r = Client::connect(&server).await;
    r.ok("auth", json!({"token": "short2"})).await;
    r.ok("subscribe", json!({"channel": "a"})).await;
    assert_eq!(
        r.call("auth", json!({"token": "dave"})).await.unwrap_err(),
        "invalid token: the token is for another user"
    );
    r.ok("auth", json!({"token": "long"})).await;
    // Past the first token's expiry.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!r.peer.is_closed());
    r.assert_silent().await;
    r.ok("publish", json!({"channel": "a", "data": 1})).await;
    assert_eq!(r.next().await.1["offset"], 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_refreshed_token_with_less_access_ends_the_subscriptions_it_no_longer_allows() {
    let tokens = TestTokens::default();
    tokens.add("wide", "erin", Permissions::all());
    tokens.add("narrow", "erin", reader_of("keep"));
    let (hub, server) = serve(Hub::builder().verifier(tokens)).await;
    let mut c = Client::connect(&server).await;
    c.ok("auth", json!({"token": "wide"})).await;
    c.ok("subscribe", json!({"channel": "keep"})).await;
    c.ok("subscribe", json!({"channel": "drop"})).await;
    c.ok("auth", json!({"token": "narrow"})).await;
    assert_eq!(
        c.next().await,
        (
            "drop".to_owned(),
            json!({"unsubscribed": "permission revoked"})
        )
    );
    let id = hub.clients()[0].client.clone();
    assert_eq!(hub.subscriptions(&id).unwrap(), ["keep"]);
    server.shutdown().await;
}

async fn ws_server(hub: &Hub) -> gotalk_peer::ServerHandle {
    let listener = ws::WsListener::bind("127.0.0.1:0", ws::WsConfig::default())
        .await
        .unwrap();
    hub.attach(Server::new(
        listener,
        hub.handlers(Handlers::new()),
        Config::default(),
    ))
    .spawn()
}

fn url(server: &gotalk_peer::ServerHandle, token: &str) -> String {
    format!("{}?token={token}", server.local_addr())
}

#[tokio::test]
async fn a_websocket_upgrade_carries_its_token() {
    let tokens = TestTokens::default();
    tokens.add("good", "frank", Permissions::all());
    let hub = Hub::builder()
        .verifier(tokens.clone())
        .build()
        .await
        .unwrap();
    let server = ws_server(&hub).await;

    // A verifier that answers at once refuses the upgrade itself.
    match ws::connect(&url(&server, "bad"), Handlers::new(), Config::default()).await {
        Err(ConnectError::Http { status, body }) => {
            assert_eq!(status, 401);
            assert!(body.contains("unknown token"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    let peer = ws::connect(&url(&server, "good"), Handlers::new(), Config::default())
        .await
        .unwrap();
    let out: serde_json::Value = peer
        .request_json("subscribe", &json!({"channel": "x"}))
        .await
        .unwrap();
    assert_eq!(out["offset"], 0);
    assert_eq!(hub.clients()[0].user, "frank");
    server.shutdown().await;

    // One that waits: the connection opens, its requests wait for the answer.
    let slow = TestTokens {
        slow: true,
        ..tokens
    };
    let hub = Hub::builder()
        .verifier(slow)
        .token_source(TokenSource::none().query("token"))
        .build()
        .await
        .unwrap();
    let server = ws_server(&hub).await;
    let peer = ws::connect(&url(&server, "good"), Handlers::new(), Config::default())
        .await
        .unwrap();
    let out: serde_json::Value = peer
        .request_json("subscribe", &json!({"channel": "x"}))
        .await
        .unwrap();
    assert_eq!(out["offset"], 0);
    let peer = ws::connect(&url(&server, "bad"), Handlers::new(), Config::default())
        .await
        .unwrap();
    let e = peer
        .request_json::<_, serde_json::Value>("subscribe", &json!({"channel": "x"}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("unknown token"), "{e}");
    within("close", peer.closed()).await;
    server.shutdown().await;
}

/// Joins every user to their own channel as they connect.
struct Personal;

impl Hooks for Personal {
    fn on_connect<'a>(&'a self, client: &'a ClientContext) -> BoxFuture<'a, Result<(), Denied>> {
        async move {
            let own = format!("user:{}", client.user());
            client
                .hub()
                .subscribe_client(client.client(), &own)
                .await
                .map_err(|e| Denied::new(e.to_string()))
        }
        .boxed()
    }
}

#[tokio::test]
async fn on_connect_can_join_the_client_to_its_own_channel() {
    let tokens = TestTokens::default();
    tokens.add("g", "grace", reader_of("public"));
    let hub = Hub::builder()
        .verifier(tokens)
        .hooks(Personal)
        .build()
        .await
        .unwrap();

    // After `auth`, over TCP.
    let tcp = hub
        .attach(
            Server::bind(
                "127.0.0.1:0",
                hub.handlers(Handlers::new()),
                Config::default(),
            )
            .await
            .unwrap(),
        )
        .spawn();
    let mut c = Client::connect(&tcp).await;
    let me = c.ok("auth", json!({"token": "g"})).await;
    let id = me["client"].as_str().unwrap();
    assert_eq!(hub.subscriptions(id).unwrap(), ["user:grace"]);
    hub.publish("user:grace", &"for you").await.unwrap();
    assert_eq!(
        c.next().await,
        (
            "user:grace".to_owned(),
            json!({"offset": 1, "epoch": c_epoch(&hub, "user:grace").await, "data": "for you"})
        )
    );

    // At open, with the WebSocket upgrade's token: before the first request.
    let wss = ws_server(&hub).await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let handlers = Handlers::new().notification("user:grace", move |_ctx, p| {
        let _ = tx.send(p);
        async {}
    });
    let peer = ws::connect(&url(&wss, "g"), handlers, Config::default())
        .await
        .unwrap();
    eventually("joined at open", || hub.stats().subscriptions == 2).await;
    hub.publish("user:grace", &"both").await.unwrap();
    assert_eq!(c.next().await.1["data"], "both");
    let p: serde_json::Value =
        serde_json::from_slice(&within("ws", rx.recv()).await.unwrap()).unwrap();
    assert_eq!(p["data"], "both");
    peer.close().await;
    tcp.shutdown().await;
    wss.shutdown().await;
}

async fn c_epoch(hub: &Hub, channel: &str) -> String {
    hub.history(channel, Default::default())
        .await
        .unwrap()
        .position
        .epoch
}

/// The hub sets the connection's identity when it authenticates (user as
/// subject, the token's scopes as grants), so the application's own
/// operations can be guarded with `Authorize` beside the hub's.
#[cfg(feature = "jwt")]
#[tokio::test]
async fn authentication_sets_the_identity_that_authorize_checks() {
    use gotalk_hub::auth::{Claims, JwtVerifier};
    use gotalk_peer::{HandlerError, middleware::Authorize};
    let verifier = JwtVerifier::new("s3cret").unwrap();
    let sign = |claims: Claims| {
        verifier
            .sign(&claims.expires_in(Duration::from_secs(600)))
            .unwrap()
    };
    let admin = sign(Claims::new("alice").scope("admin").scope("billing"));
    let plain = sign(Claims::new("bob"));
    let hub = Hub::builder()
        .verifier(verifier.clone())
        .build()
        .await
        .unwrap();
    let app = Handlers::new()
        .json("purge", |ctx, (): ()| async move {
            let who = ctx.identity().map(|i| i.subject().to_owned());
            Ok::<_, HandlerError>(who)
        })
        .layer_for("purge", Authorize::grant("admin"));
    let server = Server::bind("127.0.0.1:0", hub.handlers(app), Config::default())
        .await
        .unwrap();
    let server = hub.attach(server).spawn();

    let c = Client::connect(&server).await;
    assert_eq!(
        c.call("purge", json!(null)).await.unwrap_err(),
        "unauthenticated: operation \"purge\" needs an identity"
    );
    c.ok("auth", json!({"token": plain})).await;
    assert_eq!(
        c.call("purge", json!(null)).await.unwrap_err(),
        "forbidden: operation \"purge\" needs the grant \"admin\""
    );

    let c = Client::connect(&server).await;
    c.ok("auth", json!({"token": admin})).await;
    assert_eq!(c.ok("purge", json!(null)).await, json!("alice"));
    let peer = server
        .connections()
        .into_iter()
        .find(|p| p.identity().is_some_and(|i| i.subject() == "alice"))
        .expect("alice's connection has her identity");
    let grants: Vec<_> = peer
        .identity()
        .unwrap()
        .grants()
        .map(str::to_owned)
        .collect();
    assert_eq!(grants, ["admin", "billing"]);
    server.shutdown().await;
}
