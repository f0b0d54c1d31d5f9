//! HTTP calls per second: gotalk's HTTP endpoint (`http::HttpServer`, a
//! buffer `echo` handler) against axum serving the same echo directly, both
//! on loopback, measured in turns with the same hyper client load.
//!
//! ```text
//! cargo run --release -p gotalk-peer --features http --example http_bench -- [SECONDS] [CLIENTS] [ROUNDS]
//! ```
//!
//! Prints calls/s for each turn and the ratio of the medians.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, routing::post};
use bytes::Bytes;
use gotalk_peer::{Config, HandlerError, Handlers, http};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};

fn arg(n: usize, default: u64) -> u64 {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

/// Calls/s of `clients` keep-alive connections posting `payload` to `url`.
async fn measure(url: &str, clients: u64, seconds: u64) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let payload = Bytes::from_static(b"hello, this is a small payload");
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (done, stop, url, payload) =
                (done.clone(), stop.clone(), url.to_owned(), payload.clone());
            tokio::spawn(async move {
                let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                while !stop.load(Ordering::Relaxed) {
                    let request = hyper::Request::post(&url)
                        .body(Full::new(payload.clone()))
                        .expect("request");
                    let response = client.request(request).await.expect("response");
                    assert!(response.status().is_success());
                    let body = response.into_body().collect().await.expect("body");
                    assert_eq!(body.to_bytes(), payload);
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Warm up (connections opened), then count.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let start_count = done.load(Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    let calls = done.load(Ordering::Relaxed) - start_count;
    let rate = calls as f64 / started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.expect("client");
    }
    rate
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (seconds, clients, rounds) = (arg(1, 3), arg(2, 32), arg(3, 3));
    let handlers =
        Handlers::new().buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        );
    let gotalk = http::HttpServer::bind(
        "127.0.0.1:0",
        handlers,
        Config::default(),
        http::HttpConfig::default(),
    )
    .await?;
    let gotalk_url = format!("{}call/echo", gotalk.url());

    let app = Router::new().route("/gotalk/call/echo", post(|body: Bytes| async move { body }));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let axum_url = format!("http://{}/gotalk/call/echo", tcp.local_addr()?);
    tokio::spawn(async move { axum::serve(tcp, app).await });

    let (mut ours, mut plain) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        let a = measure(&axum_url, clients, seconds).await;
        let g = measure(&gotalk_url, clients, seconds).await;
        let line = format!(
            "round {round}: axum {a:.0} calls/s, gotalk http {g:.0} calls/s ({:.2}x)\n",
            g / a
        );
        std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes())?;
        plain.push(a);
        ours.push(g);
    }
    let (a, g) = (median(plain), median(ours));
    let line = format!(
        "median: axum {a:.0} calls/s, gotalk http {g:.0} calls/s, ratio {:.2} ({clients} clients, {seconds} s x {rounds})\n",
        g / a
    );
    std::io::Write::write_all(&mut std::io::stdout(), line.as_bytes())?;
    gotalk.shutdown().await;
    Ok(())
}
