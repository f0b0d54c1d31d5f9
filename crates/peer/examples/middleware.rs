//! Handlers wrapped in tower layers: authorization from the connection's
//! identity, a timeout and a concurrency limit from tower, a tracing span
//! per request and Prometheus metrics.
//!
//! Run: `cargo run -p gotalk-peer --features metrics --example middleware`

#![allow(clippy::print_stdout)]

use std::time::Duration;

use bytes::Bytes;
use gotalk_peer::{
    Config, Error, HandlerError, Handlers, Peer, Server,
    middleware::{Authorize, Identity, MetricsLayer, TraceLayer},
};
use tower::ServiceBuilder;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Spans at INFO so that their `request finished` events show, with the
    // span's fields; `RUST_LOG` overrides.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    // The recorder first: the runtime's counters bind to it at their first use.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;

    let handlers = Handlers::new()
        .buffer("echo", |_ctx, payload: Bytes| async move {
            Ok::<_, HandlerError>(payload)
        })
        .buffer("slow", |_ctx, _payload: Bytes| async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, HandlerError>("finally")
        })
        .buffer("purge", |ctx, _payload: Bytes| async move {
            let who = ctx
                .identity()
                .map(|i| i.subject().to_owned())
                .unwrap_or_default();
            Ok::<_, HandlerError>(format!("purged by {who}"))
        })
        // A login operation sets the connection's identity: a real one would
        // check a password or a token first.
        .buffer("login", |ctx, user: Bytes| async move {
            let user = String::from_utf8_lossy(&user).into_owned();
            let identity = if user == "alice" {
                Identity::new(user).grant("admin")
            } else {
                Identity::new(user)
            };
            ctx.peer().set_identity(identity);
            Ok::<_, HandlerError>("welcome")
        })
        // One operation: only admins.
        .layer_for("purge", Authorize::grant("admin"))
        // Every operation: at most 100 at once, 200 ms each, traced and
        // counted. The last layer added is the outermost.
        .layer(
            ServiceBuilder::new()
                .concurrency_limit(100)
                .timeout(Duration::from_millis(200))
                .into_inner(),
        )
        .layer(TraceLayer::new().level(tracing::Level::INFO))
        .layer(MetricsLayer::new());

    let server = Server::bind("127.0.0.1:0", handlers, Config::default())
        .await?
        .spawn();
    let client = Peer::connect(
        server.local_addr().to_string(),
        Handlers::new(),
        Config::default(),
    )
    .await?;

    let show = |what: &str, result: Result<Bytes, Error>| match result {
        Ok(b) => println!("{what:<22} -> {}", String::from_utf8_lossy(&b)),
        Err(e) => println!("{what:<22} -> error: {e}"),
    };
    show("echo hi", client.request("echo", "hi").await);
    show("slow (200 ms timeout)", client.request("slow", "").await);
    show("purge (anonymous)", client.request("purge", "").await);
    client.request("login", "bob").await?;
    show("purge (bob)", client.request("purge", "").await);
    client.request("login", "alice").await?;
    show("purge (alice, admin)", client.request("purge", "").await);

    client.close().await;
    server.shutdown().await;
    println!("\nmetrics:");
    for line in prometheus
        .render()
        .lines()
        .filter(|l| l.starts_with("gotalk_requests_total"))
    {
        println!("  {line}");
    }
    Ok(())
}
