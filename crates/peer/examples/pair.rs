//! Two in-process peers calling each other over an in-memory connection.
//!
//! ```text
//! cargo run -p gotalk-peer --example pair
//! ```
//!
//! gotalk is symmetric: there is no client or server once connected. Here
//! `alice` and `bob` each expose operations, call each other, call back from
//! inside a handler, exchange notifications, then alice closes gracefully.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::Duration;

use bytes::Bytes;
use gotalk_peer::{CloseReason, Config, HandlerError, Handlers, Peer};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Per-connection data a handler can read through its context.
struct Name(&'static str);

fn alice_handlers(chat: mpsc::UnboundedSender<String>) -> Handlers {
    Handlers::new()
        .json("whoami", |ctx, (): ()| async move {
            let name = ctx.user_data::<Name>().map_or("?", |n| n.0);
            Ok::<_, HandlerError>(name.to_owned())
        })
        .json_notification("chat", move |_ctx, line: String| {
            let chat = chat.clone();
            async move {
                let _ = chat.send(format!("alice got: {line}"));
            }
        })
}

fn bob_handlers(chat: mpsc::UnboundedSender<String>) -> Handlers {
    Handlers::new()
        .json("add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HandlerError>(a + b)
        })
        // A call made from inside a handler: bob asks alice who she is
        // before answering her.
        .json("greet-me", |ctx, (): ()| async move {
            let caller: String = ctx.peer().request_json("whoami", &()).await?;
            Ok::<_, HandlerError>(format!("Hello {caller}, I am bob"))
        })
        .buffer("shout", |_ctx, payload: Bytes| async move {
            if payload.is_empty() {
                return Err(HandlerError::new("nothing to shout"));
            }
            Ok(payload.to_ascii_uppercase())
        })
        .json_notification("chat", move |ctx, line: String| {
            let chat = chat.clone();
            async move {
                let _ = chat.send(format!("bob got: {line}"));
                // Notifications have no reply; answer with one of our own.
                let _ = ctx.peer().notify_json("chat", "hi alice").await;
            }
        })
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let (chat_tx, mut chat_rx) = mpsc::unbounded_channel();
    let (alice, bob) = Peer::pair(
        alice_handlers(chat_tx.clone()),
        bob_handlers(chat_tx),
        Config::default(),
    )
    .await?;
    alice.set_user_data(Name("alice"));
    bob.set_user_data(Name("bob"));

    let sum: i64 = alice.request_json("add", &(40, 2)).await?;
    println!("alice → bob add(40, 2) = {sum}");

    let greeting: String = alice.request_json("greet-me", &()).await?;
    println!("alice → bob greet-me → alice whoami: {greeting:?}");

    let who: String = bob.request_json("whoami", &()).await?;
    println!("bob → alice whoami = {who:?}");

    println!(
        "alice → bob shout = {:?}",
        alice.request("shout", "hey").await?
    );
    let err = alice.request("shout", "").await.unwrap_err();
    println!("alice → bob shout(\"\") failed: {err}");
    let err = bob.request("missing", "").await.unwrap_err();
    println!("bob → alice missing failed: {err}");

    alice.notify_json("chat", "hi bob").await?;
    for _ in 0..2 {
        let line = tokio::time::timeout(Duration::from_secs(5), chat_rx.recv())
            .await?
            .ok_or("chat closed")?;
        println!("{line}");
    }

    // Graceful close: requests in flight finish, then both sides see it.
    let ours = alice.close().await;
    let theirs = tokio::time::timeout(Duration::from_secs(5), bob.closed()).await?;
    println!("alice closed: {ours}; bob sees: {theirs}");
    assert!(matches!(theirs, CloseReason::PeerClosed));
    Ok(())
}
