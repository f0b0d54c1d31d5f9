//! The balancing client against real servers on loopback: traffic moves
//! away from a slow or loaded server, a killed server is left out and
//! taken back once it returns, resolver changes are followed, and calls
//! are sent again only when that is safe.
//!
//! Real TCP needs the real clock (paused time would jump ahead while a
//! socket read is pending), so the servers send heartbeats every 20 ms and
//! the client's backoffs are short. Assertions on traffic shares leave wide
//! margins: the pick itself is tested deterministically in `balance::pick`.

mod common;

use std::{
    io,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{WAIT, eventually, within};
use futures::{StreamExt, future::BoxFuture};
use gotalk_peer::{
    Config, Error, HandlerError, HandlerLimit, Handlers, RequestOptions, Server, ServerHandle,
    Unavailable,
    balance::{BalanceOptions, Balancer, EndpointState, EndpointStatus, Resolve, StaticList},
    reconnect::{Backoff, ReconnectOptions, WhenDisconnected},
};
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// One server of the test: `who` counts its calls and answers the server's
/// name after `delay`, or never when `hang` is set; `hold` never answers.
#[derive(Clone)]
struct Backend {
    name: &'static str,
    calls: Arc<AtomicU64>,
    notes: Arc<AtomicU64>,
    delay: Duration,
    hang: bool,
    /// `who` answers with a retry result (a server shedding load).
    refuse: bool,
    limit: HandlerLimit,
    /// The load its heartbeats report, instead of the measured one.
    reported_load: Option<u16>,
}

impl Backend {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            calls: Arc::default(),
            notes: Arc::default(),
            delay: Duration::ZERO,
            hang: false,
            refuse: false,
            limit: HandlerLimit::new(1024),
            reported_load: None,
        }
    }

    fn slow(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    fn handlers(&self) -> Handlers {
        let this = self.clone();
        Handlers::new()
            .buffer("who", move |_ctx, _p: Bytes| {
                let this = this.clone();
                async move {
                    this.calls.fetch_add(1, Ordering::Relaxed);
                    if this.hang {
                        std::future::pending::<()>().await;
                    }
                    if this.refuse {
                        return Err(HandlerError::retry(ms(1), "shedding load"));
                    }
                    if !this.delay.is_zero() {
                        tokio::time::sleep(this.delay).await;
                    }
                    Ok::<_, HandlerError>(Bytes::from_static(this.name.as_bytes()))
                }
            })
            .buffer("hold", |_ctx, _p: Bytes| async move {
                std::future::pending::<()>().await;
                Ok::<_, HandlerError>(Bytes::new())
            })
            .json("add", |_ctx, (a, b): (i64, i64)| async move {
                Ok::<_, HandlerError>(a + b)
            })
            .stream("upper", |_ctx, mut parts, mut results| async move {
                while let Some(part) = parts.next().await {
                    let part = part.map_err(|e| HandlerError::new(e.to_string()))?;
                    results
                        .send(part.to_ascii_uppercase())
                        .await
                        .map_err(|e| HandlerError::new(e.to_string()))?;
                }
                Ok::<_, HandlerError>(())
            })
            .notification("note", {
                let notes = Arc::clone(&self.notes);
                move |_ctx, _p| {
                    notes.fetch_add(1, Ordering::Relaxed);
                    async {}
                }
            })
    }

    fn config(&self) -> Config {
        Config {
            heartbeat_interval: Some(ms(20)),
            close_timeout: ms(100),
            handler_limit: self.limit.clone(),
            heartbeat_load: self
                .reported_load
                .map(|load| Arc::new(move || load) as gotalk_peer::LoadFn),
            ..Config::default()
        }
    }

    /// Serves on 127.0.0.1:`port` (0: any), retrying the bind briefly while
    /// the port is still held by the server before.
    async fn serve_on(&self, port: u16) -> Running {
        let deadline = Instant::now() + WAIT;
        loop {
            match Server::bind(("127.0.0.1", port), self.handlers(), self.config()).await {
                Ok(server) => {
                    let server = server.spawn();
                    let addr: SocketAddr = server.local_addr().to_string().parse().unwrap();
                    return Running { server, addr };
                }
                Err(e) if Instant::now() < deadline => {
                    tracing::debug!(error = %e, port, "bind again");
                    tokio::time::sleep(ms(10)).await;
                }
                Err(e) => panic!("cannot bind 127.0.0.1:{port}: {e}"),
            }
        }
    }

    async fn serve(&self) -> Running {
        self.serve_on(0).await
    }
}

struct Running {
    server: ServerHandle,
    addr: SocketAddr,
}

fn fast_options() -> BalanceOptions {
    BalanceOptions {
        reconnect: ReconnectOptions {
            backoff: Backoff {
                initial: ms(20),
                max: ms(200),
                multiplier: 2.0,
                jitter: 0.2,
            },
            ..ReconnectOptions::default()
        },
        ejection: Backoff {
            initial: ms(50),
            max: ms(500),
            multiplier: 2.0,
            jitter: 0.2,
        },
        resolve_interval: ms(20),
        ..BalanceOptions::default()
    }
}

fn client_config() -> Config {
    Config {
        heartbeat_interval: None,
        ..Config::default()
    }
}

fn balancer(servers: &[&Running], options: BalanceOptions) -> Balancer {
    let list = StaticList::new(servers.iter().map(|s| s.addr.to_string()));
    Balancer::tcp(list, Handlers::new(), client_config(), options)
}

fn status(client: &Balancer, addr: SocketAddr) -> Option<EndpointStatus> {
    let addr = addr.to_string();
    client.endpoints().into_iter().find(|e| *e.addr == *addr)
}

async fn all_up(client: &Balancer, n: usize) {
    eventually(WAIT, "every endpoint up", || {
        let endpoints = client.endpoints();
        endpoints.len() == n && endpoints.iter().all(|e| e.state == EndpointState::Up)
    })
    .await;
}

/// `workers` tasks making `each` calls in a row; every call must succeed.
async fn load(client: &Balancer, workers: usize, each: usize, options: RequestOptions) {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move {
                for _ in 0..each {
                    client
                        .request_with("who", "", options)
                        .await
                        .expect("answered");
                }
            })
        })
        .collect();
    for task in tasks {
        within(WAIT * 4, "the load to finish", task).await.unwrap();
    }
}

/// A server that answers in 30 ms (and whose heartbeats report its
/// handlers in use) gets a small share of calls made 8 at a time; round
/// robin would give it a third.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_shifts_away_from_a_slow_server() {
    let mut slow = Backend::new("slow").slow(ms(30));
    slow.limit = HandlerLimit::new(8);
    let backends = [slow, Backend::new("a"), Backend::new("b")];
    let running = futures::future::join_all(backends.iter().map(Backend::serve)).await;
    let client = balancer(&running.iter().collect::<Vec<_>>(), fast_options());
    all_up(&client, 3).await;

    load(&client, 8, 60, RequestOptions::default()).await;
    let counts: Vec<u64> = backends.iter().map(Backend::calls).collect();
    let total: u64 = counts.iter().sum();
    assert_eq!(total, 480);
    assert!(
        counts[0] * 6 < total,
        "the slow server got {} of {total} calls (under 1/6 expected, 1/3 for round robin): {counts:?}",
        counts[0]
    );
    assert!(counts[1] > total / 4 && counts[2] > total / 4, "{counts:?}");
    client.close().await;
}

/// A server kept busy by another client (its heartbeats report three
/// quarters of its handlers in use) gets none of a client's calls made
/// one at a time, though that client has nothing in flight there: the
/// reported load alone steers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reported_load_alone_steers_calls() {
    let mut busy = Backend::new("busy");
    busy.limit = HandlerLimit::new(8);
    let backends = [busy, Backend::new("a"), Backend::new("b")];
    let running = futures::future::join_all(backends.iter().map(Backend::serve)).await;

    // Another client holds six of the busy server's eight handlers.
    let other = gotalk_peer::Peer::connect(running[0].addr, Handlers::new(), client_config())
        .await
        .unwrap();
    let held: Vec<_> = (0..6)
        .map(|_| {
            let other = other.clone();
            tokio::spawn(async move { other.request("hold", "").await })
        })
        .collect();
    eventually(WAIT, "six handlers held", || {
        backends[0].limit.running() == 6
    })
    .await;

    let client = balancer(&running.iter().collect::<Vec<_>>(), fast_options());
    all_up(&client, 3).await;
    eventually(WAIT, "the busy server's load reported", || {
        status(&client, running[0].addr)
            .and_then(|s| s.load)
            .is_some_and(|l| l.load >= 49_000)
    })
    .await;
    load(&client, 1, 150, RequestOptions::default()).await;
    let counts: Vec<u64> = backends.iter().map(Backend::calls).collect();
    assert_eq!(
        counts[0], 0,
        "no call of ours went to the busy server: {counts:?}"
    );
    assert_eq!(counts[1] + counts[2], 150);
    assert!(counts[1] > 30 && counts[2] > 30, "{counts:?}");
    other.abort();
    for call in held {
        assert!(call.await.unwrap().is_err(), "aborted");
    }
    client.close().await;
}

/// One of three servers stops in the middle of a run of idempotent calls:
/// every call succeeds, the endpoint is left out, and once a server is
/// back on its port it is connected again and gets calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_left_out_then_taken_back() {
    let backends = [Backend::new("a"), Backend::new("b"), Backend::new("c")];
    let mut running = futures::future::join_all(backends.iter().map(Backend::serve)).await;
    let client = balancer(&running.iter().collect::<Vec<_>>(), fast_options());
    all_up(&client, 3).await;

    let idempotent = RequestOptions {
        retry_on_disconnect: true,
        ..RequestOptions::default()
    };
    let calls = {
        let client = client.clone();
        tokio::spawn(async move { load(&client, 4, 150, idempotent).await })
    };
    eventually(WAIT, "calls under way", || backends[1].calls() > 20).await;
    let killed = running.remove(1);
    let port = killed.addr.port();
    killed.server.shutdown().await;
    within(WAIT * 4, "every call answered", calls)
        .await
        .unwrap();

    eventually(WAIT, "the killed server left out", || {
        status(&client, killed.addr).is_some_and(|e| e.state != EndpointState::Up)
    })
    .await;
    let before = backends[1].calls();
    load(&client, 2, 20, RequestOptions::default()).await;
    assert_eq!(
        backends[1].calls(),
        before,
        "nothing sent to a server that is down"
    );

    // Back on the same port: connected again, and used.
    let back = backends[1].serve_on(port).await;
    eventually(WAIT, "the server taken back", || {
        client
            .endpoints()
            .iter()
            .all(|e| e.state == EndpointState::Up)
    })
    .await;
    load(&client, 2, 60, RequestOptions::default()).await;
    assert!(
        backends[1].calls() > before + 10,
        "the restarted server gets calls again"
    );
    client.close().await;
    back.server.shutdown().await;
}

/// Endpoints from a list the test changes.
#[derive(Clone, Default)]
struct Registry(Arc<Mutex<Vec<String>>>);

impl Registry {
    fn set(&self, servers: &[&Running]) {
        *self.0.lock().unwrap() = servers.iter().map(|s| s.addr.to_string()).collect();
    }
}

impl Resolve for Registry {
    fn resolve(&self) -> BoxFuture<'_, io::Result<Vec<String>>> {
        let now = self.0.lock().unwrap().clone();
        Box::pin(async move { Ok(now) })
    }
}

/// An endpoint the resolver adds is connected and used; one it removes is
/// closed and gets no more calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolver_changes_are_followed() {
    let backends = [Backend::new("a"), Backend::new("b"), Backend::new("c")];
    let running = futures::future::join_all(backends.iter().map(Backend::serve)).await;
    let registry = Registry::default();
    registry.set(&[&running[0], &running[1]]);
    let client = Balancer::tcp(
        registry.clone(),
        Handlers::new(),
        client_config(),
        fast_options(),
    );
    all_up(&client, 2).await;
    load(&client, 1, 30, RequestOptions::default()).await;
    assert_eq!(backends[2].calls(), 0, "not an endpoint yet");

    registry.set(&[&running[0], &running[1], &running[2]]);
    all_up(&client, 3).await;
    load(&client, 1, 60, RequestOptions::default()).await;
    assert!(backends[2].calls() > 5, "the added endpoint gets calls");

    registry.set(&[&running[1], &running[2]]);
    eventually(WAIT, "the removed endpoint gone", || {
        status(&client, running[0].addr).is_none()
    })
    .await;
    eventually(WAIT, "its connection closed", || {
        running[0].server.connection_count() == 0
    })
    .await;
    let before = backends[0].calls();
    load(&client, 1, 60, RequestOptions::default()).await;
    assert_eq!(
        backends[0].calls(),
        before,
        "no calls to a removed endpoint"
    );

    // An empty answer keeps what the balancer has.
    registry.set(&[]);
    tokio::time::sleep(ms(100)).await;
    assert_eq!(client.endpoints().len(), 2);
    client.close().await;
}

/// With no endpoint up, calls fail at once with fail-fast, and after a
/// bounded wait otherwise; both with a typed error, never sent.
#[tokio::test]
async fn calls_with_no_endpoint_up_fail_fast_or_after_a_bounded_wait() {
    // A port with nothing listening.
    let nothing = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let list = || StaticList::new([nothing.to_string()]);
    let fail_fast = Balancer::tcp(
        list(),
        Handlers::new(),
        client_config(),
        BalanceOptions {
            when_unavailable: WhenDisconnected::FailFast,
            ..fast_options()
        },
    );
    let start = Instant::now();
    let err = fail_fast.request("who", "").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(Unavailable::NotConnected)),
        "{err:?}"
    );
    assert!(start.elapsed() < ms(500), "at once");

    let waiting = Balancer::tcp(
        list(),
        Handlers::new(),
        client_config(),
        BalanceOptions {
            wait_timeout: ms(150),
            ..fast_options()
        },
    );
    let start = Instant::now();
    let err = waiting.request("who", "").await.unwrap_err();
    assert!(
        matches!(err, Error::Unavailable(Unavailable::QueueTimeout { waited }) if waited == ms(150)),
        "{err:?}"
    );
    assert!(start.elapsed() >= ms(150));
    assert!(matches!(
        waiting.endpoints()[0].state,
        EndpointState::Connecting
    ));
    fail_fast.close().await;
    waiting.close().await;
}

/// Two servers; the first never answers `who`. A call stuck there when
/// the server stops fails with the close reason, unless it is idempotent:
/// then the other server answers it.
async fn stuck_call_when_its_server_stops(options: RequestOptions) -> Result<Bytes, Error> {
    let mut hanging = Backend::new("hanging");
    hanging.hang = true;
    let other = Backend::new("other");
    let (stuck_server, other_server) = (hanging.serve().await, other.serve().await);
    let client = balancer(&[&stuck_server, &other_server], fast_options());
    all_up(&client, 2).await;
    // Calls go to either; one that lands on the hanging server stays.
    let mut stuck = None;
    for _ in 0..50 {
        let call = {
            let client = client.clone();
            tokio::spawn(async move { client.request_with("who", "", options).await })
        };
        eventually(WAIT, "the call answered or stuck", || {
            call.is_finished() || hanging.calls() > 0
        })
        .await;
        if hanging.calls() > 0 {
            stuck = Some(call);
            break;
        }
        assert_eq!(call.await.unwrap().unwrap(), "other");
    }
    let stuck = stuck.expect("a call landed on the hanging server");
    stuck_server.server.shutdown().await;
    let result = within(WAIT, "the stuck call to end", stuck).await.unwrap();
    assert_eq!(hanging.calls(), 1);
    client.close().await;
    other_server.server.shutdown().await;
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_may_have_run_is_not_sent_again() {
    let result = stuck_call_when_its_server_stops(RequestOptions::default()).await;
    assert!(matches!(result, Err(Error::Closed(_))), "{result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_call_goes_to_another_server() {
    let result = stuck_call_when_its_server_stops(RequestOptions {
        retry_on_disconnect: true,
        ..RequestOptions::default()
    })
    .await;
    assert_eq!(result.unwrap(), "other");
}

/// Calls that keep timing out on a connected server eject it; the others
/// take every call meanwhile; once the ejection is over it is probed with
/// one call, and a probe that times out too ejects it for longer. The
/// server is stuck but says it is idle (a deadlock its heartbeats do not
/// see), so only ejection keeps calls away from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_calls_keep_failing_is_ejected_then_probed() {
    let mut hanging = Backend::new("hanging");
    hanging.hang = true;
    hanging.reported_load = Some(0);
    let other = Backend::new("other");
    let (hanging_server, other_server) = (hanging.serve().await, other.serve().await);
    let ejection = ms(400);
    let client = balancer(
        &[&hanging_server, &other_server],
        BalanceOptions {
            max_failures: 2,
            ejection: Backoff {
                initial: ejection,
                max: ms(5000),
                multiplier: 2.0,
                jitter: 0.0,
            },
            ..fast_options()
        },
    );
    all_up(&client, 2).await;
    let quick = RequestOptions {
        timeout: Some(ms(30)),
        ..RequestOptions::default()
    };
    let state = || status(&client, hanging_server.addr).unwrap().state;
    // Sequential calls: each lands on either server; two timeouts eject.
    for _ in 0..200 {
        if matches!(state(), EndpointState::Ejected { .. }) {
            break;
        }
        match client.request_with("who", "", quick).await {
            Ok(who) => assert_eq!(who, "other"),
            Err(e) => assert!(matches!(e, Error::Timeout), "{e:?}"),
        }
    }
    let EndpointState::Ejected { until } = state() else {
        panic!("not ejected: {:?}", client.endpoints());
    };
    assert_eq!(hanging.calls(), 2);
    assert_eq!(
        status(&client, hanging_server.addr)
            .unwrap()
            .consecutive_failures,
        2
    );
    // While it is out, every call goes to the other server.
    for _ in 0..20 {
        if Instant::now() + ms(50) >= until {
            break;
        }
        assert_eq!(
            client.request_with("who", "", quick).await.unwrap(),
            "other"
        );
    }
    assert_eq!(hanging.calls(), 2);
    // Probed once its time is up: a probe that fails ejects it again, for
    // twice as long.
    tokio::time::sleep_until(until).await;
    eventually(WAIT, "the probe sent", || {
        let client = client.clone();
        tokio::spawn(async move { client.request_with("who", "", quick).await });
        hanging.calls() == 3
    })
    .await;
    eventually(WAIT, "ejected again", || {
        matches!(state(), EndpointState::Ejected { .. })
    })
    .await;
    let EndpointState::Ejected { until: again } = state() else {
        unreachable!()
    };
    assert!(again - until >= ejection * 2, "{:?}", again - until);
    assert_eq!(hanging.calls(), 3, "one probe at a time");
    client.close().await;
}

/// JSON requests, streams and notifications go through the balancer like
/// buffer requests, spread over the servers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_streams_and_notifications_are_balanced_too() {
    let backends = [Backend::new("a"), Backend::new("b")];
    let running = futures::future::join_all(backends.iter().map(Backend::serve)).await;
    let client = balancer(&running.iter().collect::<Vec<_>>(), fast_options());
    all_up(&client, 2).await;
    for i in 0..20_i64 {
        let sum: i64 = client.request_json("add", &(i, 1)).await.unwrap();
        assert_eq!(sum, i + 1);
        let (mut parts, results) = client.stream_request("upper").await.unwrap();
        parts.send("abc").await.unwrap();
        parts.end().await.unwrap();
        assert_eq!(results.collect_bytes(1024).await.unwrap(), "ABC");
        client.notify_json("note", &i).await.unwrap();
    }
    eventually(WAIT, "every notification handled", || {
        backends
            .iter()
            .map(|b| b.notes.load(Ordering::Relaxed))
            .sum::<u64>()
            == 20
    })
    .await;
    let sent: Vec<u64> = client.endpoints().iter().map(|e| e.calls).collect();
    assert_eq!(sent.iter().sum::<u64>(), 60, "{sent:?}");
    assert!(sent.iter().all(|n| *n > 0), "both servers used: {sent:?}");
    client.close().await;
}

/// A server that answers every call with a retry result did not run it:
/// the call goes to another server (after the connection's own retries),
/// and the refusing server is not counted as failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_refused_with_retry_results_goes_to_another_server() {
    let mut refusing = Backend::new("refusing");
    refusing.refuse = true;
    let other = Backend::new("other");
    let (refusing_server, other_server) = (refusing.serve().await, other.serve().await);
    let client = balancer(&[&refusing_server, &other_server], fast_options());
    all_up(&client, 2).await;
    for _ in 0..30 {
        assert_eq!(client.request("who", "").await.unwrap(), "other");
    }
    assert!(refusing.calls() >= 3, "some calls were refused first");
    assert_eq!(
        refusing.calls() % 3,
        0,
        "three attempts each (max_attempts)"
    );
    let refusing_status = status(&client, refusing_server.addr).unwrap();
    assert_eq!(refusing_status.state, EndpointState::Up);
    assert_eq!(refusing_status.consecutive_failures, 0);
    client.close().await;
}
