//! A typed service end to end (docs/services.md): a `#[service]` trait,
//! its server with the listing, and the typed Rust client calling every
//! kind of operation, a typed error, and a call back from the server.
//!
//! ```text
//! cargo run -p gotalk-peer --features macros,schema --example service
//! ```
//!
//! While it runs nothing else is needed; to poke at the same service from
//! the command line, `gotalk serve` offers its own listing:
//! `gotalk list 127.0.0.1:1234`.

#![allow(clippy::print_stdout)]

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{
    Config, Context, HandlerError, Handlers, Peer, Server,
    service::{CallError, Incoming, Listing, Outgoing},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Message {
    room: String,
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
struct Ack {
    id: u64,
}

/// A typed error: serde both ways and Display. It reaches a typed client as
/// itself, and any other client as readable JSON text.
#[derive(Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
enum ChatError {
    NoSuchRoom(String),
}

impl std::fmt::Display for ChatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoSuchRoom(room) => write!(f, "no room called {room:?}"),
        }
    }
}

#[gotalk_peer::service(prefix = "chat", schema)]
trait Chat {
    /// Posts a message to a room.
    async fn send(&self, message: Message) -> Result<Ack, ChatError>;
    /// The messages of a room, one result part each.
    async fn history(&self, room: String) -> Outgoing<Message>;
    /// Counts the bytes of the parts sent.
    async fn upload(&self, parts: Incoming<Bytes>) -> Result<u64, HandlerError>;
    /// Asks the caller for its name (a call back over the same connection).
    async fn hello(&self, ctx: Context) -> Result<String, HandlerError>;
    /// Someone is typing.
    #[notification]
    async fn typing(&self, who: String);
}

#[derive(Default)]
struct Rooms {
    lobby: std::sync::Mutex<Vec<Message>>,
}

impl Chat for Rooms {
    async fn send(&self, message: Message) -> Result<Ack, ChatError> {
        if message.room != "lobby" {
            return Err(ChatError::NoSuchRoom(message.room));
        }
        let mut lobby = self.lobby.lock().unwrap();
        lobby.push(message);
        Ok(Ack {
            id: lobby.len() as u64,
        })
    }

    async fn history(&self, room: String) -> Outgoing<Message> {
        let messages = self.lobby.lock().unwrap().clone();
        Outgoing::iter(messages.into_iter().filter(move |m| m.room == room))
    }

    async fn upload(&self, mut parts: Incoming<Bytes>) -> Result<u64, HandlerError> {
        let mut total = 0;
        while let Some(part) = parts.next().await {
            total += part?.len() as u64;
        }
        Ok(total)
    }

    async fn hello(&self, ctx: Context) -> Result<String, HandlerError> {
        let caller = WhoClient::new(ctx.peer());
        Ok(format!("hello, {}", caller.name().await?))
    }

    async fn typing(&self, who: String) {
        tracing::info!(who, "typing");
    }
}

/// What the client side answers when the server calls back.
#[gotalk_peer::service]
trait Who {
    async fn name(&self) -> String;
}

struct Ana;

impl Who for Ana {
    async fn name(&self) -> String {
        "Ana".into()
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The server: the service's operations, and the listing that describes them.
    let chat = ChatServer::new(Rooms::default());
    let handlers = Listing::new()
        .service(ChatServer::<Rooms>::description())
        .register(chat.register(Handlers::new()));
    let server = Server::bind("127.0.0.1:0", handlers, Config::default())
        .await?
        .spawn();

    // The Rust client: a Peer whose own handlers answer `name`.
    let peer = Peer::connect(
        server.local_addr().to_string(),
        WhoServer::new(Ana).into_handlers(),
        Config::default(),
    )
    .await?;
    let client = ChatClient::new(peer.clone());

    let message = Message {
        room: "lobby".into(),
        text: "hi".into(),
    };
    let ack = client.send(&message).await?;
    println!("chat.send -> {ack:?}");

    // The service's own error comes back typed.
    let elsewhere = Message {
        room: "attic".into(),
        ..message.clone()
    };
    match client.send(&elsewhere).await {
        Err(CallError::Service(e)) => println!("chat.send to the attic -> typed error {e:?}"),
        other => panic!("{other:?}"),
    }

    // A streamed result, item by item.
    let history: Vec<_> = client.history(&"lobby".to_owned()).await?.collect().await;
    println!("chat.history -> {history:?}");

    // A stream request: parts in, one result.
    let (mut parts, result) = client.upload().await?;
    parts.send(&Bytes::from_static(b"abc")).await?;
    parts.send(&Bytes::from_static(b"de")).await?;
    parts.end().await?;
    println!("chat.upload -> {} bytes", result.single().await?);

    // The server calls this side back inside its handler.
    println!("chat.hello -> {}", client.hello().await?);

    client.typing(&"Ana".to_owned()).await?;

    // What any client can ask: the listing.
    let listing: serde_json::Value = peer.request_json("gotalk.list", &()).await?;
    println!("gotalk.list -> {}", serde_json::to_string_pretty(&listing)?);
    peer.close().await;
    server.shutdown().await;
    Ok(())
}
