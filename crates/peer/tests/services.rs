//! Typed services (`#[gotalk_peer::service]`): every kind of operation
//! through the generated client, over a `Peer` and a `ReconnectingPeer`;
//! typed and plain errors; a call back to the requester from inside a
//! handler; the listing and its schemas.

mod common;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::{WAIT, eventually, quiet, spawn_server, within};
use futures::StreamExt;
use gotalk_peer::{
    Context, Error, HandlerError, Handlers, Peer, ReconnectingPeer,
    reconnect::ReconnectOptions,
    service::{CallError, Incoming, Listing, Outgoing},
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Message {
    room: String,
    text: String,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
struct Ack {
    id: u64,
}

#[derive(Debug, PartialEq, Serialize, Deserialize, schemars::JsonSchema, thiserror::Error)]
enum ChatError {
    #[error("no room called {0:?}")]
    NoSuchRoom(String),
    #[error("message too long: {len} bytes")]
    TooLong { len: usize },
}

#[gotalk_peer::service(prefix = "chat", schema)]
trait Chat {
    /// Posts a message.
    async fn send(&self, message: Message) -> Result<Ack, ChatError>;
    /// Who posted, in order (the caller's address from the context).
    async fn who(&self, ctx: Context) -> Vec<String>;
    /// Raw bytes back, reversed.
    #[op(name = "reverse")]
    async fn reverse(&self, payload: Bytes) -> Bytes;
    /// Counts the bytes of the lines sent.
    async fn upload(&self, lines: Incoming<String>) -> Result<u64, HandlerError>;
    /// The messages of a room, then a failure if asked.
    async fn history(&self, room: String) -> Outgoing<Message, ChatError>;
    /// Fails with a plain error.
    async fn refuse(&self) -> Result<(), HandlerError>;
    /// Asks the requester for its name, through the same typed client.
    async fn whoami(&self, ctx: Context) -> Result<String, HandlerError>;
    /// Someone is typing.
    #[notification]
    async fn typing(&self, who: String);
}

#[derive(Default)]
struct Room {
    messages: Mutex<Vec<Message>>,
    senders: Mutex<Vec<String>>,
    typing: Mutex<Vec<String>>,
}

impl Chat for Room {
    async fn send(&self, message: Message) -> Result<Ack, ChatError> {
        if message.room != "lobby" {
            return Err(ChatError::NoSuchRoom(message.room));
        }
        if message.text.len() > 10 {
            return Err(ChatError::TooLong {
                len: message.text.len(),
            });
        }
        let mut messages = self.messages.lock().unwrap();
        messages.push(message);
        Ok(Ack {
            id: messages.len() as u64,
        })
    }

    async fn who(&self, ctx: Context) -> Vec<String> {
        let mut senders = self.senders.lock().unwrap();
        senders.push(ctx.name().to_owned());
        senders.clone()
    }

    async fn reverse(&self, payload: Bytes) -> Bytes {
        let mut v = payload.to_vec();
        v.reverse();
        v.into()
    }

    async fn upload(&self, mut lines: Incoming<String>) -> Result<u64, HandlerError> {
        let mut total = 0;
        while let Some(line) = lines.next().await {
            total += line?.len() as u64;
        }
        Ok(total)
    }

    async fn history(&self, room: String) -> Outgoing<Message, ChatError> {
        let messages = self.messages.lock().unwrap().clone();
        let fail = room != "lobby";
        Outgoing::new(futures::stream::iter(messages.into_iter().map(Ok)).chain(
            futures::stream::iter(fail.then_some(Err(ChatError::NoSuchRoom(room)))),
        ))
    }

    async fn refuse(&self) -> Result<(), HandlerError> {
        Err(HandlerError::new("refused"))
    }

    async fn whoami(&self, ctx: Context) -> Result<String, HandlerError> {
        let back = NameClient::new(ctx.peer());
        Ok(back.name().await?)
    }

    async fn typing(&self, who: String) {
        self.typing.lock().unwrap().push(who);
    }
}

/// What the client side offers for `whoami` to call back.
#[gotalk_peer::service]
trait Name {
    async fn name(&self) -> String;
}

struct Fixed(&'static str);

impl Name for Fixed {
    async fn name(&self) -> String {
        self.0.to_owned()
    }
}

fn message(room: &str, text: &str) -> Message {
    Message {
        room: room.into(),
        text: text.into(),
    }
}

async fn pair(room: Arc<Room>) -> (ChatClient<Peer>, Peer) {
    let server = ChatServer::from_arc(room).into_handlers();
    let client_handlers = NameServer::new(Fixed("ana")).into_handlers();
    let (client, server) = Peer::pair(client_handlers, server, quiet()).await.unwrap();
    (ChatClient::new(client), server)
}

#[tokio::test]
async fn every_kind_of_operation_through_the_typed_client() {
    let room = Arc::new(Room::default());
    let (chat, _server) = pair(room.clone()).await;

    assert_eq!(
        chat.send(&message("lobby", "hi")).await.unwrap(),
        Ack { id: 1 }
    );
    assert_eq!(chat.who().await.unwrap(), ["chat.who"]);
    assert_eq!(chat.reverse("abc").await.unwrap(), "cba");

    let (mut lines, result) = chat.upload().await.unwrap();
    lines.send(&"four".to_owned()).await.unwrap();
    lines.send(&"five!".to_owned()).await.unwrap();
    lines.end().await.unwrap();
    assert_eq!(result.single().await.unwrap(), 9);

    chat.send(&message("lobby", "again")).await.unwrap();
    let history: Vec<_> = chat
        .history(&"lobby".to_owned())
        .await
        .unwrap()
        .collect()
        .await;
    let history: Vec<Message> = history.into_iter().map(Result::unwrap).collect();
    assert_eq!(history, [message("lobby", "hi"), message("lobby", "again")]);

    chat.typing(&"ana".to_owned()).await.unwrap();
    eventually(WAIT, "the notification arrives", || {
        room.typing.lock().unwrap().as_slice() == ["ana"]
    })
    .await;
}

#[tokio::test]
async fn a_typed_error_reaches_the_client_as_the_same_type() {
    let (chat, server) = pair(Arc::default()).await;
    match chat.send(&message("kitchen", "hi")).await {
        Err(CallError::Service(e)) => assert_eq!(e, ChatError::NoSuchRoom("kitchen".into())),
        other => panic!("{other:?}"),
    }
    match chat.send(&message("lobby", "far too long")).await {
        Err(CallError::Service(e)) => assert_eq!(e, ChatError::TooLong { len: 12 }),
        other => panic!("{other:?}"),
    }
    // What an untyped client sees: the envelope, readable as text.
    let raw = Peer::request(
        chat.caller(),
        "chat.send",
        r#"{"room":"kitchen","text":"hi"}"#,
    )
    .await
    .unwrap_err();
    assert_eq!(
        raw.remote().unwrap().message(),
        r#"{"message":"no room called \"kitchen\"","error":{"NoSuchRoom":"kitchen"}}"#
    );
    // A typed error in a result stream ends it, after the parts before it.
    chat.send(&message("lobby", "one")).await.unwrap();
    let mut history = chat.history(&"attic".to_owned()).await.unwrap();
    assert_eq!(
        history.next().await.unwrap().unwrap(),
        message("lobby", "one")
    );
    match history.next().await {
        Some(Err(CallError::Service(ChatError::NoSuchRoom(room)))) => assert_eq!(room, "attic"),
        other => panic!("{other:?}"),
    }
    assert!(history.next().await.is_none());
    drop(server);
}

#[tokio::test]
async fn plain_errors_and_bad_input_arrive_as_call_errors() {
    let (chat, _server) = pair(Arc::default()).await;
    match chat.refuse().await {
        Err(CallError::Call(Error::Remote(e))) => assert_eq!(e.message(), "refused"),
        other => panic!("{other:?}"),
    }
    // Bad JSON from an untyped client: the same text as Handlers::json.
    let e = Peer::request(chat.caller(), "chat.send", "{")
        .await
        .unwrap_err();
    assert!(
        e.remote().unwrap().message().starts_with("invalid input: "),
        "{e}"
    );
}

#[tokio::test]
async fn a_handler_calls_the_requester_back_with_a_typed_client() {
    let (chat, _server) = pair(Arc::default()).await;
    assert_eq!(chat.whoami().await.unwrap(), "ana");
}

#[tokio::test]
async fn the_typed_client_works_over_a_reconnecting_peer() {
    let server = spawn_server(ChatServer::new(Room::default()).into_handlers(), quiet()).await;
    let client = ReconnectingPeer::tcp(
        server.local_addr().to_string(),
        Handlers::new(),
        quiet(),
        ReconnectOptions::default(),
    );
    let chat = ChatClient::new(client);
    let ack = within(WAIT, "send", chat.send(&message("lobby", "hi"))).await;
    assert_eq!(ack.unwrap(), Ack { id: 1 });
    chat.caller().close().await;
    server.shutdown().await;
}

#[test]
fn the_listing_describes_every_operation_with_shared_schemas() {
    let listing = Listing::new()
        .service(ChatServer::<Room>::description())
        .service(NameServer::<Fixed>::description());
    let json = listing.to_json();
    assert_eq!(json["version"], 1);
    let ops = json["operations"].as_array().unwrap();
    let names: Vec<&str> = ops.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "chat.send",
            "chat.who",
            "reverse",
            "chat.upload",
            "chat.history",
            "chat.refuse",
            "chat.whoami",
            "chat.typing",
            "name"
        ]
    );
    let op = |name: &str| ops.iter().find(|o| o["name"] == name).unwrap();
    let send = op("chat.send");
    assert_eq!(send["kind"], "single");
    assert_eq!(send["service"], "Chat");
    assert_eq!(send["doc"], "Posts a message.");
    assert_eq!(send["input"]["schema"]["$ref"], "#/$defs/Message");
    assert_eq!(send["input"]["encoding"], "json");
    assert_eq!(send["output"]["type"], "Ack");
    assert_eq!(send["error"]["typed"], true);
    assert_eq!(send["error"]["schema"]["$ref"], "#/$defs/ChatError");
    // Message is used by send and history, defined once.
    assert_eq!(
        op("chat.history")["output"]["schema"]["$ref"],
        "#/$defs/Message"
    );
    assert_eq!(op("chat.history")["kind"], "stream");
    assert_eq!(op("chat.history")["output"]["stream"], true);
    assert!(json["$defs"]["Message"]["properties"]["room"].is_object());
    assert_eq!(op("chat.upload")["input"]["stream"], true);
    assert_eq!(op("chat.who")["input"], serde_json::Value::Null);
    assert_eq!(op("reverse")["input"]["encoding"], "buffer");
    assert!(op("reverse")["input"].get("schema").is_none());
    assert_eq!(op("chat.refuse")["error"]["typed"], false);
    assert!(op("chat.refuse")["error"].get("schema").is_none());
    assert_eq!(op("chat.typing")["kind"], "notification");
    assert_eq!(op("chat.typing")["output"], serde_json::Value::Null);
}

#[tokio::test]
async fn the_listing_is_an_operation_any_client_can_call() {
    let listing = Listing::new().service(ChatServer::<Room>::description());
    let handlers = listing.register(ChatServer::new(Room::default()).into_handlers());
    let (client, _server) = Peer::pair(Handlers::new(), handlers, quiet())
        .await
        .unwrap();
    let got: serde_json::Value = client.request_json("gotalk.list", &()).await.unwrap();
    assert_eq!(got, listing.to_json());
}
