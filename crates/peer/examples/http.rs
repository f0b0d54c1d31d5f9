//! The same handlers over gotalk (TCP) and plain HTTP.
//!
//! ```text
//! RUST_LOG=info cargo run -p gotalk-peer --features http --example http
//! curl -d '{"name":"Rasmus"}' http://127.0.0.1:8080/gotalk/call/greet
//! curl -N -d 'abc' http://127.0.0.1:8080/gotalk/call/count
//! ```
//!
//! With `--once` it calls itself with curl-like requests from a hyper
//! client, prints the answers and exits (what `cargo test --examples` runs).

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{Config, HandlerError, Handlers, Server, http};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct GreetIn {
    name: String,
}

#[derive(Serialize)]
struct GreetOut {
    greeting: String,
}

fn handlers() -> Handlers {
    Handlers::new()
        .json("greet", |_ctx, input: GreetIn| async move {
            Ok::<_, HandlerError>(GreetOut {
                greeting: format!("Hello {}", input.name),
            })
        })
        // Each request part is answered with three result parts, one every
        // 200 ms: over HTTP a chunked response, each part sent as it comes.
        .stream("count", |_ctx, mut parts, mut results| async move {
            while let Some(part) = parts.next().await {
                let part = part?;
                for n in 1..=3 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    results
                        .send(format!("{} {n}\n", String::from_utf8_lossy(&part).trim()))
                        .await?;
                }
            }
            Ok::<_, HandlerError>(())
        })
        .buffer("busy", |_ctx, _payload: Bytes| async move {
            Err::<Bytes, _>(HandlerError::retry(
                Duration::from_millis(1500),
                "busy, try later",
            ))
        })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    let once = std::env::args().any(|a| a == "--once");
    let (tcp_addr, http_addr) = if once {
        ("127.0.0.1:0", "127.0.0.1:0")
    } else {
        ("127.0.0.1:1234", "127.0.0.1:8080")
    };
    let handlers = handlers();
    let server = Server::bind(tcp_addr, handlers.clone(), Config::default())
        .await?
        .spawn();
    let web = http::HttpServer::bind(
        http_addr,
        handlers,
        Config::default(),
        http::HttpConfig::default(),
    )
    .await?;
    tracing::info!(gotalk = %server.local_addr(), http = %web.url(), "serving");
    if once {
        call_self(&web.url()).await?;
    } else {
        tokio::signal::ctrl_c().await?;
    }
    web.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// What `curl -d PAYLOAD URL` would print, from a hyper client.
async fn call_self(url: &str) -> Result<(), Box<dyn std::error::Error>> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    for (op, payload) in [
        ("greet", r#"{"name":"Rasmus"}"#),
        ("count", "abc"),
        ("busy", ""),
        ("nope", ""),
    ] {
        let request = hyper::Request::post(format!("{url}call/{op}"))
            .body(Full::new(Bytes::from(payload)))?;
        let response = client.request(request).await?;
        let status = response.status();
        let retry_after = response.headers().get("retry-after").cloned();
        let body = response.into_body().collect().await?.to_bytes();
        tracing::info!(op, %status, ?retry_after, body = %String::from_utf8_lossy(&body), "answer");
    }
    Ok(())
}
