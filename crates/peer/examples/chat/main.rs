//! A small browser chat over gotalk and WebSocket.
//!
//! ```sh
//! cargo run -p gotalk-peer --features websocket --example chat -- 127.0.0.1:8080
//! ```
//!
//! then open <http://127.0.0.1:8080/> in a few browser tabs. The page
//! (`index.html`, next to this file) loads the JS client from
//! `/gotalk/gotalk.js` and talks to this server through it:
//!
//! - `join` (request, JSON `{"name": …}`): enter the room; the answer is the
//!   name you got (made unique), who is there, and the recent messages.
//! - `say` (notification, JSON `{"text": …}`): post a message.
//! - The server notifies everyone with `message`, `joined` and `left`.
//!
//! The chat is an ordinary axum app: the gotalk router is merged next to the
//! route that serves the page.
#![allow(clippy::print_stdout)]

use std::{
    collections::{BTreeMap, VecDeque},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{Router, response::Html, routing::get};
use gotalk_peer::{
    Config, ConnectionInfo, Context, HandlerError, Handlers, Peer, Server,
    ws::{self, WsConfig},
};
use serde::{Deserialize, Serialize};

const PAGE: &str = include_str!("index.html");
const MAX_NAME: usize = 32;
const MAX_TEXT: usize = 2000;
const HISTORY: usize = 50;

#[derive(Clone, Serialize)]
struct ChatMessage {
    from: String,
    text: String,
    /// Unix time in milliseconds.
    time: u128,
}

#[derive(Deserialize)]
struct JoinIn {
    name: String,
}

#[derive(Serialize)]
struct JoinOut {
    name: String,
    members: Vec<String>,
    history: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct SayIn {
    text: String,
}

/// The room: who is in it (by connection id) and what was said lately.
#[derive(Default)]
struct Room {
    members: BTreeMap<u64, (String, Peer)>,
    history: VecDeque<ChatMessage>,
}

#[derive(Clone, Default)]
struct Chat {
    room: Arc<Mutex<Room>>,
}

impl Chat {
    fn room(&self) -> std::sync::MutexGuard<'_, Room> {
        self.room.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a notification to everyone in the room.
    async fn broadcast<T: Serialize>(&self, name: &str, value: &T) {
        let peers: Vec<Peer> = self
            .room()
            .members
            .values()
            .map(|(_, p)| p.clone())
            .collect();
        let sends = peers.iter().map(|p| p.notify_json(name, value));
        // A member that left in the meantime just misses it.
        let _ = futures::future::join_all(sends).await;
    }

    async fn join(&self, ctx: Context, input: JoinIn) -> Result<JoinOut, HandlerError> {
        let id = connection_id(&ctx)?;
        let wanted: String = input.name.trim().chars().take(MAX_NAME).collect();
        if wanted.is_empty() {
            return Err(HandlerError::new("a name is needed"));
        }
        let out = {
            let mut room = self.room();
            if let Some((name, _)) = room.members.get(&id) {
                return Err(HandlerError::new(format!("already joined as {name}")));
            }
            let taken = |n: &str| room.members.values().any(|(m, _)| m == n);
            let mut name = wanted.clone();
            let mut n = 2;
            while taken(&name) {
                name = format!("{wanted} ({n})");
                n += 1;
            }
            room.members.insert(id, (name.clone(), ctx.peer().clone()));
            JoinOut {
                name,
                members: room.members.values().map(|(m, _)| m.clone()).collect(),
                history: room.history.iter().cloned().collect(),
            }
        };
        tracing::info!(name = %out.name, "joined");
        self.broadcast("joined", &serde_json::json!({ "name": out.name }))
            .await;
        Ok(out)
    }

    async fn say(&self, ctx: Context, input: SayIn) {
        let Ok(id) = connection_id(&ctx) else { return };
        let Some(from) = self.room().members.get(&id).map(|(n, _)| n.clone()) else {
            return; // not joined: ignored
        };
        let text: String = input.text.chars().take(MAX_TEXT).collect();
        if text.trim().is_empty() {
            return;
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        let message = ChatMessage { from, text, time };
        {
            let mut room = self.room();
            if room.history.len() == HISTORY {
                room.history.pop_front();
            }
            room.history.push_back(message.clone());
        }
        self.broadcast("message", &message).await;
    }

    async fn leave(&self, id: u64) {
        let left = self.room().members.remove(&id);
        if let Some((name, _)) = left {
            tracing::info!(%name, "left");
            self.broadcast("left", &serde_json::json!({ "name": name }))
                .await;
        }
    }
}

fn connection_id(ctx: &Context) -> Result<u64, HandlerError> {
    ctx.user_data::<ConnectionInfo>()
        .map(|info| info.id)
        .ok_or_else(|| HandlerError::new("not a server connection"))
}

fn handlers(chat: &Chat) -> Handlers {
    let (join, say) = (chat.clone(), chat.clone());
    Handlers::new()
        .json("join", move |ctx, input: JoinIn| {
            let chat = join.clone();
            async move { chat.join(ctx, input).await }
        })
        .json_notification("say", move |ctx, input: SayIn| {
            let chat = say.clone();
            async move { chat.say(ctx, input).await }
        })
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .as_deref()
        .unwrap_or("127.0.0.1:8080")
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;

    let chat = Chat::default();
    let on_close = chat.clone();
    let (gotalk, routes) = ws::router(WsConfig::default());
    let _server = Server::new(gotalk, handlers(&chat), Config::default())
        .on_open(move |peer, info| {
            // Leave the room when the connection closes.
            let (chat, peer, id) = (on_close.clone(), peer.clone(), info.id);
            tokio::spawn(async move {
                peer.closed().await;
                drop(peer);
                chat.leave(id).await;
            });
        })
        .spawn();
    let app = Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .merge(routes);

    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("chat: open http://{}/", listener.local_addr()?);
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .await
}
