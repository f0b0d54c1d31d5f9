//! A client over three servers, one of them slow: [`Balancer`] against
//! round robin, in one process on loopback.
//!
//! ```text
//! cargo run --release -p gotalk-peer --example balance                  # 3 rounds of 3000 calls, 16 at a time
//! cargo run --release -p gotalk-peer --example balance -- 5 3000 16     # ROUNDS CALLS CONCURRENCY
//! cargo run --release -p gotalk-peer --example balance -- overhead 5 100000 64
//! ```
//!
//! `overhead` measures what the balancer itself costs: one server that
//! answers at once, called through a balancer over that one endpoint and
//! through a plain [`Peer`], in alternating rounds.
//!
//! Two servers answer `work` after 1 ms, the third after 20 ms (a server
//! with a noisy neighbour). Each server runs at most 64 handlers at once
//! (its own [`HandlerLimit`]) and sends heartbeats every 100 ms, whose load
//! is the share of those 64 in use. Rounds alternate between the balancer
//! and round robin over three plain connections, so that both see the
//! same machine; each prints the share of calls the slow server got, the
//! latency of a call (mean, p50, p90, p99) and the calls per second, then
//! the balancer's view of its endpoints.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use gotalk_peer::{
    Config, Error, HandlerError, HandlerLimit, Handlers, Peer, Server, ServerHandle,
    balance::{BalanceOptions, Balancer, StaticList},
};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const SERVERS: [(&str, Duration); 3] = [
    ("fast-1", Duration::from_millis(1)),
    ("slow", Duration::from_millis(20)),
    ("fast-2", Duration::from_millis(1)),
];

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let overhead_only = args.first().is_some_and(|a| a == "overhead");
    if overhead_only {
        args.remove(0);
    }
    let args: Vec<usize> = args
        .iter()
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("usage: balance [ROUNDS CALLS CONCURRENCY]: {e}"))?;
    let (rounds, calls, concurrency) = match args[..] {
        [] => (3, 3000, 16),
        [r, n, c] if r > 0 && n > 0 && c > 0 => (r, n, c),
        _ => return Err("usage: balance [ROUNDS CALLS CONCURRENCY]".into()),
    };

    if overhead_only {
        return overhead(rounds, calls, concurrency).await;
    }
    let mut servers = Vec::new();
    for (name, delay) in SERVERS {
        servers.push(serve(name, delay).await?);
    }
    let addrs: Vec<String> = servers.iter().map(|s| s.local_addr().to_string()).collect();
    let client_config = Config {
        heartbeat_interval: None,
        ..Config::default()
    };

    let balancer = Balancer::tcp(
        StaticList::new(addrs.clone()),
        Handlers::new(),
        client_config.clone(),
        BalanceOptions::default(),
    );
    balancer.ready().await?;
    let mut peers = Vec::new();
    for addr in &addrs {
        peers.push(Peer::connect(addr.as_str(), Handlers::new(), client_config.clone()).await?);
    }
    let round_robin = RoundRobin {
        peers: Arc::new(peers),
        next: Arc::default(),
    };
    // Let every server send a heartbeat or two.
    tokio::time::sleep(Duration::from_millis(300)).await;

    println!(
        "{rounds} rounds of {calls} calls, {concurrency} at a time; `slow` answers in 20 ms, the others in 1 ms"
    );
    println!(
        "{:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "client", "slow share", "mean", "p50", "p90", "p99", "calls/s"
    );
    for _ in 0..rounds {
        let b = balancer.clone();
        report(
            "balancer",
            run(calls, concurrency, true, move || {
                let b = b.clone();
                async move { b.request("work", "").await }
            })
            .await?,
        );
        let rr = round_robin.clone();
        report(
            "round robin",
            run(calls, concurrency, true, move || {
                let rr = rr.clone();
                async move { rr.request("work").await }
            })
            .await?,
        );
    }

    println!("\nthe balancer's endpoints:");
    for endpoint in balancer.endpoints() {
        println!(
            "  {} {:?}, {} calls, last load {}",
            endpoint.addr,
            endpoint.state,
            endpoint.calls,
            endpoint
                .load
                .map_or("none".into(), |l| format!("{:.0} %", l.fraction() * 100.0)),
        );
    }
    balancer.close().await;
    for server in servers {
        server.shutdown().await;
    }
    Ok(())
}

/// The balancer's own cost: one server answering at once, a balancer
/// over it against a plain connection to it.
async fn overhead(rounds: usize, calls: usize, concurrency: usize) -> Result<(), BoxError> {
    let server = serve("echo", Duration::ZERO).await?;
    let addr = server.local_addr().to_string();
    let config = Config {
        heartbeat_interval: None,
        ..Config::default()
    };
    let balancer = Balancer::tcp(
        StaticList::new([addr.clone()]),
        Handlers::new(),
        config.clone(),
        BalanceOptions::default(),
    );
    balancer.ready().await?;
    let peer = Peer::connect(addr.as_str(), Handlers::new(), config).await?;
    println!(
        "{rounds} rounds of {calls} calls, {concurrency} at a time, one server answering at once"
    );
    println!(
        "{:<12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "client", "", "mean", "p50", "p90", "p99", "calls/s"
    );
    for _ in 0..rounds {
        let b = balancer.clone();
        report(
            "balancer",
            run(calls, concurrency, false, move || {
                let b = b.clone();
                async move { b.request("work", "").await }
            })
            .await?,
        );
        let p = peer.clone();
        report(
            "peer",
            run(calls, concurrency, false, move || {
                let p = p.clone();
                async move { p.request("work", "").await }
            })
            .await?,
        );
    }
    balancer.close().await;
    peer.close().await;
    server.shutdown().await;
    Ok(())
}

/// A server answering `work` with its name after `delay`.
async fn serve(name: &'static str, delay: Duration) -> Result<ServerHandle, BoxError> {
    let handlers = Handlers::new().buffer("work", move |_ctx, _p: Bytes| async move {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        Ok::<_, HandlerError>(Bytes::from_static(name.as_bytes()))
    });
    let config = Config {
        heartbeat_interval: Some(Duration::from_millis(100)),
        // Each server its own capacity: in one process they would
        // otherwise share the process-wide limit, and the load figure.
        handler_limit: HandlerLimit::new(64),
        ..Config::default()
    };
    Ok(Server::bind("127.0.0.1:0", handlers, config).await?.spawn())
}

/// Round robin over one connection per server.
#[derive(Clone)]
struct RoundRobin {
    peers: Arc<Vec<Peer>>,
    next: Arc<AtomicUsize>,
}

impl RoundRobin {
    async fn request(&self, op: &str) -> Result<Bytes, Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        self.peers[i].request(op, "").await
    }
}

struct Round {
    /// Calls answered by the slow server (`None`: no slow server).
    slow: Option<usize>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

/// `calls` calls of `call`, `concurrency` at a time, counting the answers
/// from the slow server if `count_slow`.
async fn run<F, Fut>(
    calls: usize,
    concurrency: usize,
    count_slow: bool,
    call: F,
) -> Result<Round, BoxError>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Bytes, Error>> + Send,
{
    let left = Arc::new(AtomicUsize::new(calls));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (call, left) = (call.clone(), left.clone());
            tokio::spawn(async move {
                let (mut slow, mut latencies) = (0, Vec::new());
                while left
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let t = Instant::now();
                    let who = call().await?;
                    latencies.push(t.elapsed());
                    slow += usize::from(who == "slow");
                }
                Ok::<_, Error>((slow, latencies))
            })
        })
        .collect();
    let mut round = Round {
        slow: count_slow.then_some(0),
        latencies: Vec::with_capacity(calls),
        elapsed: Duration::ZERO,
    };
    for worker in workers {
        let (slow, latencies) = worker.await??;
        if let Some(total) = &mut round.slow {
            *total += slow;
        }
        round.latencies.extend(latencies);
    }
    round.elapsed = start.elapsed();
    round.latencies.sort_unstable();
    Ok(round)
}

fn report(name: &str, round: Round) {
    let n = round.latencies.len();
    let at = |q: f64| round.latencies[((n as f64 * q) as usize).min(n - 1)];
    let mean = round.latencies.iter().sum::<Duration>() / n as u32;
    let share = round.slow.map_or("-".into(), |slow| {
        format!("{:.1}%", 100.0 * slow as f64 / n as f64)
    });
    println!(
        "{name:<12} {share:>10} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.2?} {:>9.0}",
        mean,
        at(0.50),
        at(0.90),
        at(0.99),
        n as f64 / round.elapsed.as_secs_f64(),
    );
}
