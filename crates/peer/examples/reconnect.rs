//! A client that reconnects by itself: [`ReconnectingPeer`] keeps calling a
//! server that goes away and comes back on the same port.
//!
//! ```text
//! cargo run -p gotalk-peer --example reconnect                         # server and client, one process
//! cargo run -p gotalk-peer --example greet -- server 127.0.0.1:1234    # in one terminal: stop it, start it again
//! cargo run -p gotalk-peer --example reconnect -- client 127.0.0.1:1234
//! ```
//!
//! In one process, the example starts a server, calls it, stops it, makes a
//! call while it is down (queued), starts it again on the same port, and
//! prints what the client went through. As a client, it calls `greet` every
//! second, forever, and prints each answer or error and each state change.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{net::SocketAddr, time::Duration};

use gotalk_peer::{
    Config, HandlerError, Handlers, ReconnectingPeer, RequestOptions, Server, ServerHandle,
    reconnect::{Backoff, Event, ReconnectOptions},
};
use serde_json::{Value, json};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => demo().await,
        ["client", addr] => client(addr).await,
        _ => {
            eprintln!("usage: reconnect [client HOST:PORT]");
            std::process::exit(2);
        }
    }
}

/// The connection's settings: heartbeats every 2 s, and a connection that
/// hears nothing for 3 of them is declared dead, which starts a reconnect.
fn config() -> Config {
    Config {
        heartbeat_interval: Some(Duration::from_secs(2)),
        read_timeout: Some(Duration::from_secs(6)),
        ..Config::default()
    }
}

fn options() -> ReconnectOptions {
    ReconnectOptions {
        backoff: Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            ..Backoff::default()
        },
        ..ReconnectOptions::default()
    }
}

async fn serve(addr: SocketAddr) -> Result<ServerHandle, BoxError> {
    let handlers = Handlers::new().json("greet", |_ctx, input: Value| async move {
        let name = input["name"].as_str().unwrap_or("stranger").to_owned();
        Ok::<_, HandlerError>(json!({ "greeting": format!("Hello {name}") }))
    });
    Ok(Server::bind(addr, handlers, config()).await?.spawn())
}

/// Prints every event of `client` as it happens.
fn print_events(client: &ReconnectingPeer) {
    let mut events = client.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            match event {
                Event::State(state) => println!("  [state] {state}"),
                Event::Disconnected(reason) => println!("  [lost] {reason}"),
                Event::ConnectFailed { attempt, error } => {
                    println!("  [attempt {attempt} failed] {error}");
                }
                other => println!("  [event] {other:?}"),
            }
        }
    });
}

async fn greet(client: &ReconnectingPeer, name: &str) -> Result<String, gotalk_peer::Error> {
    // Reading a greeting twice does no harm: send it again if the
    // connection is lost while it is in flight.
    let options = RequestOptions {
        retry_on_disconnect: true,
        ..RequestOptions::default()
    };
    let out: Value = client
        .request_json_with("greet", &json!({ "name": name }), options)
        .await?;
    Ok(out["greeting"].as_str().unwrap_or_default().to_owned())
}

async fn demo() -> Result<(), BoxError> {
    let server = serve("127.0.0.1:0".parse()?).await?;
    let addr: SocketAddr = server.local_addr().to_string().parse()?;
    println!("server on {addr}");

    let client = ReconnectingPeer::tcp(addr.to_string(), Handlers::new(), config(), options());
    print_events(&client);
    println!("{}", greet(&client, "first").await?);

    println!("stopping the server");
    server.shutdown().await;
    let queued = tokio::spawn({
        let client = client.clone();
        async move { greet(&client, "queued").await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("{} call(s) wait for a connection", client.queued());

    println!("starting the server again on {addr}");
    let server = serve(addr).await?;
    println!("{}", queued.await??);

    client.close().await;
    server.shutdown().await;
    Ok(())
}

async fn client(addr: &str) -> Result<(), BoxError> {
    let client = ReconnectingPeer::tcp(addr, Handlers::new(), config(), options());
    print_events(&client);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        match greet(&client, "reconnect example").await {
            Ok(greeting) => println!("{greeting}"),
            Err(e) => println!("error: {e}"),
        }
    }
}
