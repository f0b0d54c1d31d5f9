//! A client over several servers that spreads calls between them:
//! [`Balancer`].
//!
//! A [`ReconnectingPeer`] talks to one server. A [`Balancer`] talks to all
//! the servers of a service, one connection to each (each a
//! [`ReconnectingPeer`], so it reconnects with the same [`Backoff`]), and
//! sends every call to the one it expects to answer soonest.
//!
//! # The pick
//!
//! **Power of two choices**: two endpoints are drawn at random among those
//! that take calls, and the call goes to the cheaper. The cost of an
//! endpoint is `(in_flight + 1) / (1 − ρ)`: `in_flight` is this balancer's
//! requests waiting for an answer there, `ρ` the share of its capacity
//! the server reported in use in its last heartbeat (see
//! [`Config::heartbeat_load`]; ignored once older than
//! [`BalanceOptions::load_max_age`], and 0 from servers that send none,
//! such as the Go server). The first factor sees the calls we sent; the
//! second sees what other clients sent the same server, which no single
//! client can see otherwise. Drawing two rather than taking the cheapest
//! of all keeps many clients that pick at once from piling onto the same
//! server, and never sends a call to the costliest of three or more.
//!
//! # Ejection and probing
//!
//! - An endpoint whose connection is lost, or whose connect attempts fail,
//!   takes no calls ([`EndpointState::Connecting`]) until its connection is
//!   back: every connect attempt, spaced by
//!   [`ReconnectOptions::backoff`], is a probe.
//! - An endpoint whose calls fail [`BalanceOptions::max_failures`] times in
//!   a row while it stays connected (lost connections, timeouts) is
//!   ejected ([`EndpointState::Ejected`]) for a wait that grows with each
//!   ejection ([`BalanceOptions::ejection`]). Then it is probed
//!   ([`EndpointState::Probing`]): one call at a time, and the first one
//!   answered puts it back; a failed one ejects it again. An answer of any
//!   kind counts as a success: an error result is the application's, not
//!   the server's.
//!
//! # Calls when no endpoint takes calls
//!
//! They wait for one, for at most [`BalanceOptions::wait_timeout`] and
//! with at most [`BalanceOptions::max_waiting`] others, then fail with
//! [`Error::Unavailable`]; with [`WhenDisconnected::FailFast`] they fail at
//! once with [`Unavailable::NotConnected`]. Such a call was never sent.
//! A balancer connects in the background: with fail-fast, wait for
//! [`Balancer::ready`] before the first calls.
//!
//! # Retries
//!
//! A request is sent to another endpoint (at most
//! [`BalanceOptions::max_attempts`] endpoints in all) when its server
//! certainly did not run it: its connection was closed before it went
//! out, or the server kept answering with retry results (overloaded or
//! closing) through the connection's own retries
//! ([`Config::max_attempts`]). A request whose connection was lost while it was out may
//! have been run, and fails with [`Error::Closed`], unless the caller
//! marked it idempotent with [`RequestOptions::retry_on_disconnect`] (or
//! [`Balancer::request_idempotent`]): then it is sent once more, to
//! another endpoint. That is [`ReconnectingPeer`]'s rule, with another
//! server instead of the next connection. A request that timed out is
//! never sent again. Streams and notifications go to another endpoint
//! only when their connection was closed before they went out.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, HandlerError, Handlers, Server};
//! use gotalk_peer::balance::{BalanceOptions, Balancer, StaticList};
//!
//! let echo = Handlers::new()
//!     .buffer("echo", |_ctx, payload| async move { Ok::<_, HandlerError>(payload) });
//! let a = Server::bind("127.0.0.1:0", echo.clone(), Config::default()).await?.spawn();
//! let b = Server::bind("127.0.0.1:0", echo, Config::default()).await?.spawn();
//!
//! let servers = StaticList::new([a.local_addr().to_string(), b.local_addr().to_string()]);
//! let client = Balancer::tcp(servers, Handlers::new(), Config::default(), BalanceOptions::default());
//! // Waits for a first connection, then goes to one of the two.
//! assert_eq!(client.request("echo", "hi").await?, "hi");
//! for endpoint in client.endpoints() {
//!     tracing::info!(addr = %endpoint.addr, state = ?endpoint.state, in_flight = endpoint.in_flight);
//! }
//! client.close().await;
//! # Ok(()) }
//! ```

mod endpoint;
mod health;
mod pick;
mod resolve;

use std::{
    cell::RefCell,
    collections::HashMap,
    fmt,
    future::Future,
    io,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Serialize, de::DeserializeOwned};
use tokio::{sync::watch, time::Instant};

pub use endpoint::{EndpointState, EndpointStatus};
pub use resolve::{Dns, Resolve, StaticList};

use endpoint::{Candidate, Endpoint, InFlight};

use crate::{
    CloseReason, Config, ConnectError, Error, Handlers, Peer, ReconnectingPeer, RequestOptions,
    ResultStream, StreamWriter, Unavailable,
    peer::{json_input, json_result},
    reconnect::{Backoff, ReconnectOptions, Rng, WhenDisconnected},
};

/// Settings of a [`Balancer`]; each connection's own settings are the
/// [`Config`] its connect function uses.
///
/// ```
/// use std::time::Duration;
/// use gotalk_peer::balance::BalanceOptions;
/// use gotalk_peer::reconnect::WhenDisconnected;
///
/// let options = BalanceOptions {
///     resolve_interval: Duration::from_secs(10),
///     when_unavailable: WhenDisconnected::FailFast,
///     ..BalanceOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct BalanceOptions {
    /// How each endpoint's connection is kept: its reconnect
    /// [`backoff`](ReconnectOptions::backoff), `reset_after` and
    /// `connect_timeout`. Its queueing settings are not used: the balancer
    /// makes calls wait as [`when_unavailable`](Self::when_unavailable)
    /// says. Default [`ReconnectOptions::default`].
    pub reconnect: ReconnectOptions,
    /// How often the resolver is asked again. Default 30 s.
    pub resolve_interval: Duration,
    /// Calls failed in a row (connection lost while in flight, timed out)
    /// that eject an endpoint. Default 5.
    pub max_failures: u32,
    /// How long an ejected endpoint is left out, growing with each
    /// ejection until a probe succeeds. Default 1 s doubling up to 30 s,
    /// 20 % jitter.
    pub ejection: Backoff,
    /// What calls made while no endpoint takes calls do. Default
    /// [`WhenDisconnected::Queue`]: wait.
    pub when_unavailable: WhenDisconnected,
    /// Longest a call waits for an endpoint before it fails with
    /// [`Unavailable::QueueTimeout`]. Default 10 s.
    pub wait_timeout: Duration,
    /// Most calls waiting for an endpoint at once; one more fails with
    /// [`Unavailable::QueueFull`]. Default 1024.
    pub max_waiting: usize,
    /// Most endpoints one request is sent to (see the module docs:
    /// Retries). Default 3.
    pub max_attempts: u32,
    /// A load reported in a heartbeat longer ago than this is ignored.
    /// Default 60 s (three of the default heartbeat intervals).
    pub load_max_age: Duration,
}

impl Default for BalanceOptions {
    fn default() -> Self {
        Self {
            reconnect: ReconnectOptions::default(),
            resolve_interval: Duration::from_secs(30),
            max_failures: 5,
            ejection: Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(30),
                multiplier: 2.0,
                jitter: 0.2,
            },
            when_unavailable: WhenDisconnected::Queue,
            wait_timeout: Duration::from_secs(10),
            max_waiting: 1024,
            max_attempts: 3,
            load_max_age: Duration::from_secs(60),
        }
    }
}

type ConnectFn = dyn Fn(&str) -> BoxFuture<'static, Result<Peer, ConnectError>> + Send + Sync;

thread_local! {
    /// Draws for picks and ejection jitter: one generator per thread, so
    /// picking takes no lock.
    static RNG: RefCell<Rng> = RefCell::new(Rng::seeded());
}

/// What the handles and the balancer's task share.
struct Shared {
    connect: Arc<ConnectFn>,
    options: BalanceOptions,
    endpoints: Mutex<Arc<[Arc<Endpoint>]>>,
    /// Bumped when an endpoint comes or goes or its connection changes
    /// state: wakes the calls waiting for one.
    changed: watch::Sender<u64>,
    waiting: AtomicUsize,
    shutdown: watch::Sender<bool>,
    finished: watch::Sender<bool>,
}

impl Shared {
    fn endpoints(&self) -> Arc<[Arc<Endpoint>]> {
        Arc::clone(&self.endpoints_lock())
    }

    fn endpoints_lock(&self) -> MutexGuard<'_, Arc<[Arc<Endpoint>]>> {
        self.endpoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn bump(&self) {
        self.changed.send_modify(|n| *n = n.wrapping_add(1));
    }

    fn is_closed(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// An endpoint for a call, counted in flight there, by power of two
    /// choices, preferring the endpoints not `tried` yet for it.
    fn pick(&self, tried: &[Arc<Endpoint>]) -> Option<Checkout> {
        // A lost race for a probe makes that endpoint inadmissible: the
        // next round picks among the others.
        for _ in 0..4 {
            let candidate = self.pick_candidate(tried)?;
            if let Some(in_flight) = candidate.endpoint.start(candidate.probe) {
                return Some(Checkout {
                    endpoint: candidate.endpoint,
                    peer: candidate.peer,
                    probe: candidate.probe,
                    in_flight,
                });
            }
        }
        None
    }

    fn pick_candidate(&self, tried: &[Arc<Endpoint>]) -> Option<Candidate> {
        let now = Instant::now();
        let age = self.options.load_max_age;
        let endpoints = self.endpoints();
        // The usual case, without allocating: the two drawn among all
        // endpoints both take calls. Otherwise draw again among those that
        // do; either way each pair of those is as likely.
        if tried.is_empty() {
            match &endpoints[..] {
                [] => return None,
                [only] => return only.candidate(now, age),
                all => {
                    let (a, b) = RNG.with(|rng| pick::two(all.len(), &mut rng.borrow_mut()));
                    if let (Some(a), Some(b)) =
                        (all[a].candidate(now, age), all[b].candidate(now, age))
                    {
                        return Some(if b.cost < a.cost { b } else { a });
                    }
                }
            }
        }
        let fresh = |e: &&Arc<Endpoint>| !tried.iter().any(|t| Arc::ptr_eq(t, e));
        let mut candidates: Vec<Candidate> = endpoints
            .iter()
            .filter(fresh)
            .filter_map(|e| e.candidate(now, age))
            .collect();
        if candidates.is_empty() && !tried.is_empty() {
            candidates = endpoints
                .iter()
                .filter_map(|e| e.candidate(now, age))
                .collect();
        }
        let costs: Vec<f64> = candidates.iter().map(|c| c.cost).collect();
        let chosen = RNG.with(|rng| pick::choose(&costs, &mut rng.borrow_mut()))?;
        Some(candidates.swap_remove(chosen))
    }

    /// The earliest end of an ejection, when a waiting call should look
    /// again.
    fn next_probe(&self) -> Option<Instant> {
        let now = Instant::now();
        self.endpoints()
            .iter()
            .filter_map(|e| e.ejected_until(now))
            .min()
    }

    fn failed(&self, endpoint: &Endpoint) {
        let unit = RNG.with(|rng| rng.borrow_mut().unit());
        let options = &self.options;
        if let Some(until) = endpoint.failed(options.max_failures, &options.ejection, unit) {
            tracing::warn!(
                endpoint = %endpoint.addr,
                for_ = ?until.saturating_duration_since(Instant::now()),
                "ejecting an endpoint whose calls keep failing"
            );
        }
    }

    /// Takes the endpoints the resolver gave: connects to the new ones,
    /// closes the ones gone.
    fn update(self: &Arc<Self>, addrs: Vec<String>) {
        let mut current = self.endpoints_lock();
        let mut old: HashMap<&str, &Arc<Endpoint>> =
            current.iter().map(|e| (&*e.addr, e)).collect();
        let mut next: Vec<Arc<Endpoint>> = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if next.iter().any(|e| *e.addr == *addr) {
                continue;
            }
            match old.remove(addr.as_str()) {
                Some(kept) => next.push(Arc::clone(kept)),
                None => {
                    tracing::info!(endpoint = %addr, "endpoint added");
                    next.push(self.connect(addr.into()));
                }
            }
        }
        for gone in old.into_values() {
            tracing::info!(endpoint = %gone.addr, "endpoint removed");
            let client = gone.client.clone();
            tokio::spawn(async move { client.close().await });
        }
        *current = next.into();
        drop(current);
        self.bump();
    }

    fn connect(self: &Arc<Self>, addr: Arc<str>) -> Arc<Endpoint> {
        let connect = Arc::clone(&self.connect);
        let target = Arc::clone(&addr);
        let client = ReconnectingPeer::new(
            move || connect(&target),
            ReconnectOptions {
                when_disconnected: WhenDisconnected::FailFast,
                ..self.options.reconnect.clone()
            },
        );
        tokio::spawn(follow(client.watch_state(), Arc::downgrade(self)));
        Arc::new(Endpoint::new(addr, client))
    }

    /// Takes a place among the calls waiting for an endpoint.
    fn wait_slot(self: &Arc<Self>) -> Result<WaitSlot, Unavailable> {
        let limit = self.options.max_waiting;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .map_err(|_| Unavailable::QueueFull { limit })?;
        Ok(WaitSlot(Arc::clone(self)))
    }
}

/// An endpoint given to a call: its connection, and the call counted in
/// flight there until this is dropped.
struct Checkout {
    endpoint: Arc<Endpoint>,
    peer: Peer,
    /// The call is the probe of an endpoint back from ejection.
    probe: bool,
    in_flight: InFlight,
}

/// Wakes waiting calls whenever an endpoint's connection changes state,
/// until it is closed or the balancer is gone.
async fn follow(mut state: watch::Receiver<crate::reconnect::State>, shared: Weak<Shared>) {
    while state.changed().await.is_ok() {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        shared.bump();
        if state.borrow().is_closed() {
            return;
        }
    }
}

/// Wakes the calls waiting for an endpoint when a probe ends, after its
/// outcome is recorded: the endpoint may take calls again (its admission
/// changes without a connection state change or an ejection to time).
struct BumpOnDrop<'a>(&'a Shared);

impl Drop for BumpOnDrop<'_> {
    fn drop(&mut self) {
        self.0.bump();
    }
}

/// A call's place among those waiting, given back when it stops waiting.
struct WaitSlot(Arc<Shared>);

impl Drop for WaitSlot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Stops the balancer when the last handle is dropped.
struct HandleGuard(Arc<Shared>);

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.0.shutdown.send_replace(true);
    }
}

/// A client over several servers, with the call API of [`Peer`]; see the
/// [module documentation](crate::balance) for how it picks, ejects and
/// retries.
///
/// Handles are cheap to clone and share one task, which asks the resolver
/// for endpoints and keeps one [`ReconnectingPeer`] per endpoint. It stops
/// when [`close`](Self::close) is called or the last handle is dropped.
#[derive(Clone)]
pub struct Balancer {
    shared: Arc<Shared>,
    _guard: Arc<HandleGuard>,
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("endpoints", &self.endpoints())
            .finish_non_exhaustive()
    }
}

impl Balancer {
    /// A balancer over the endpoints `resolver` gives, connecting to each
    /// with `connect` (called with the endpoint's address, for every
    /// connection). Returns at once; connections are made in the
    /// background, and calls made meanwhile wait (see
    /// [`BalanceOptions::when_unavailable`]).
    ///
    /// ```no_run
    /// # async fn f() -> Result<(), gotalk_peer::Error> {
    /// use gotalk_peer::{Config, Handlers, Peer};
    /// use gotalk_peer::balance::{BalanceOptions, Balancer, Dns};
    ///
    /// let client = Balancer::new(
    ///     Dns::new("api.internal:7000"),
    ///     |addr: &str| {
    ///         let addr = addr.to_owned();
    ///         async move { Peer::connect(addr, Handlers::new(), Config::default()).await }
    ///     },
    ///     BalanceOptions::default(),
    /// );
    /// let answer = client.request("echo", "hello").await?;
    /// # let _ = answer;
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (it spawns its task).
    pub fn new<F, Fut>(resolver: impl Resolve, connect: F, options: BalanceOptions) -> Self
    where
        F: Fn(&str) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Peer, ConnectError>> + Send + 'static,
    {
        let shared = Arc::new(Shared {
            connect: Arc::new(move |addr| Box::pin(connect(addr))),
            options,
            endpoints: Mutex::new(Arc::new([])),
            changed: watch::Sender::new(0),
            waiting: AtomicUsize::new(0),
            shutdown: watch::Sender::new(false),
            finished: watch::Sender::new(false),
        });
        tokio::spawn(run(Arc::clone(&shared), Box::new(resolver)));
        Self {
            _guard: Arc::new(HandleGuard(Arc::clone(&shared))),
            shared,
        }
    }

    /// A balancer over TCP servers: connects to each endpoint (`host:port`)
    /// with [`Peer::connect`] and the same `handlers` and `config`.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn tcp(
        resolver: impl Resolve,
        handlers: Handlers,
        config: Config,
        options: BalanceOptions,
    ) -> Self {
        Self::new(
            resolver,
            move |addr| {
                let (addr, handlers, config) = (addr.to_owned(), handlers.clone(), config.clone());
                async move { Peer::connect(addr, handlers, config).await }
            },
            options,
        )
    }

    /// Every endpoint now, with its state, calls in flight and load.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.shared.endpoints().iter().map(|e| e.status()).collect()
    }

    /// Requests in flight over all endpoints.
    pub fn in_flight(&self) -> usize {
        self.endpoints().iter().map(|e| e.in_flight).sum()
    }

    /// Waits until some endpoint takes calls (without the bounds of
    /// [`BalanceOptions::wait_timeout`]: wrap it in a timeout); fails with
    /// [`Error::Closed`] once the balancer is closed.
    pub async fn ready(&self) -> Result<(), Error> {
        self.wait_until(|| self.shared.pick_candidate(&[]).map(drop))
            .await
    }

    /// True once [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Stops: calls waiting for an endpoint fail with [`Error::Closed`],
    /// every connection closes gracefully (letting calls in flight finish,
    /// as [`Peer::close`] does), and so do later calls. Returns when that
    /// is done.
    pub async fn close(&self) {
        self.shared.shutdown.send_replace(true);
        self.shared.bump();
        let mut finished = self.shared.finished.subscribe();
        let _ = finished.wait_for(|done| *done).await;
    }

    /// An endpoint for a call, not one of `tried` if another takes calls,
    /// waiting as [`BalanceOptions::when_unavailable`] says.
    async fn checkout(&self, tried: &[Arc<Endpoint>]) -> Result<Checkout, Error> {
        if self.is_closed() {
            return Err(Error::Closed(CloseReason::Local));
        }
        if let Some(candidate) = self.shared.pick(tried) {
            return Ok(candidate);
        }
        match self.shared.options.when_unavailable {
            WhenDisconnected::FailFast => Err(Unavailable::NotConnected.into()),
            WhenDisconnected::Queue => {
                let _slot = self.shared.wait_slot()?;
                let limit = self.shared.options.wait_timeout;
                tokio::time::timeout(limit, self.wait_until(|| self.shared.pick(tried)))
                    .await
                    .map_err(|_| Unavailable::QueueTimeout { waited: limit })?
            }
        }
    }

    /// Waits until `look` finds something, looking again whenever an
    /// endpoint changes and when an ejection ends.
    async fn wait_until<T>(&self, mut look: impl FnMut() -> Option<T>) -> Result<T, Error> {
        let mut changed = self.shared.changed.subscribe();
        loop {
            // Marked seen before looking: a change after this wakes us.
            changed.borrow_and_update();
            if self.is_closed() {
                return Err(Error::Closed(CloseReason::Local));
            }
            if let Some(found) = look() {
                return Ok(found);
            }
            let probe = self.shared.next_probe();
            tokio::select! {
                r = changed.changed() => if r.is_err() {
                    return Err(Error::Closed(CloseReason::Local));
                },
                () = sleep_until(probe) => {}
            }
        }
    }

    /// Sends a buffer request to an endpoint and waits for its result, as
    /// [`Peer::request`] does.
    pub async fn request(&self, op: &str, payload: impl Into<Bytes>) -> Result<Bytes, Error> {
        self.request_with(op, payload, RequestOptions::default())
            .await
    }

    /// [`request`](Self::request) for an idempotent operation: sent once
    /// more, to another endpoint, if its connection is lost while it is in
    /// flight (see [`RequestOptions::retry_on_disconnect`]).
    pub async fn request_idempotent(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
    ) -> Result<Bytes, Error> {
        let options = RequestOptions {
            retry_on_disconnect: true,
            ..RequestOptions::default()
        };
        self.request_with(op, payload, options).await
    }

    /// [`request`](Self::request) with per-call options. A
    /// [`timeout`](RequestOptions::timeout) bounds the whole call: the wait
    /// for an endpoint and every sending.
    ///
    /// ```no_run
    /// # async fn f(client: gotalk_peer::balance::Balancer) -> Result<(), gotalk_peer::Error> {
    /// use std::time::Duration;
    /// use gotalk_peer::RequestOptions;
    /// let options = RequestOptions {
    ///     timeout: Some(Duration::from_secs(2)),
    ///     retry_on_disconnect: true,
    ///     ..RequestOptions::default()
    /// };
    /// let value = client.request_with("get", "key", options).await?;
    /// # let _ = value;
    /// # Ok(()) }
    /// ```
    pub async fn request_with(
        &self,
        op: &str,
        payload: impl Into<Bytes>,
        options: RequestOptions,
    ) -> Result<Bytes, Error> {
        let deadline = options.timeout.map(|limit| Instant::now() + limit);
        self.request_balanced(op, payload.into(), options, deadline)
            .await
    }

    /// The deadline bounds the wait for an endpoint here and each sending
    /// through the connection's own timeout, never by dropping a call in
    /// flight: a call that runs out of time must still be counted as its
    /// endpoint's failure (and end its probe), which a dropped future cannot.
    async fn request_balanced(
        &self,
        op: &str,
        payload: Bytes,
        mut options: RequestOptions,
        deadline: Option<Instant>,
    ) -> Result<Bytes, Error> {
        let shared = &self.shared;
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        let mut resent = false;
        loop {
            let checkout = self.checkout(&tried);
            let Checkout {
                endpoint,
                peer,
                probe,
                in_flight,
            } = match deadline {
                // Boxed: a timer is large, and only calls with a deadline pay.
                Some(deadline) => Box::pin(tokio::time::timeout_at(deadline, checkout))
                    .await
                    .map_err(|_| Error::Timeout)??,
                None => checkout.await?,
            };
            if let Some(deadline) = deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Error::Timeout);
                }
                options.timeout = Some(left);
            }
            let may_have_run = AtomicBool::new(false);
            let result = peer
                .request_tracked(op, payload.clone(), options, &may_have_run)
                .await;
            drop(in_flight);
            let _look_again = probe.then(|| BumpOnDrop(shared));
            let attempts_left = tried.len() + 1 < shared.options.max_attempts as usize;
            let again = match &result {
                Ok(_)
                | Err(
                    Error::Remote(_)
                    | Error::ResultTooLarge { .. }
                    | Error::OverBudget { .. }
                    | Error::Usage(_),
                ) => {
                    endpoint.succeeded();
                    false
                }
                // Alive but refusing work: it did not run the request.
                Err(Error::RetryExhausted { .. }) => attempts_left,
                Err(Error::Closed(_)) => {
                    shared.failed(&endpoint);
                    if !may_have_run.load(Ordering::Relaxed) {
                        attempts_left
                    } else if options.retry_on_disconnect && !resent {
                        resent = true;
                        true
                    } else {
                        false
                    }
                }
                Err(Error::Timeout) => {
                    shared.failed(&endpoint);
                    false
                }
                Err(_) => false,
            };
            if !again || shared.is_closed() {
                return result;
            }
            tracing::debug!(
                op,
                endpoint = %endpoint.addr,
                error = %result.as_ref().err().map(ToString::to_string).unwrap_or_default(),
                "sending the request to another endpoint"
            );
            tried.push(endpoint);
        }
    }

    /// Sends a request with a JSON payload and decodes the JSON result, as
    /// [`Peer::request_json`] does.
    pub async fn request_json<I, O>(&self, op: &str, input: &I) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        self.request_json_with(op, input, RequestOptions::default())
            .await
    }

    /// [`request_json`](Self::request_json) with per-call options.
    pub async fn request_json_with<I, O>(
        &self,
        op: &str,
        input: &I,
        options: RequestOptions,
    ) -> Result<O, Error>
    where
        I: Serialize + ?Sized,
        O: DeserializeOwned,
    {
        let result = self.request_with(op, json_input(input)?, options).await?;
        json_result(&result)
    }

    /// Opens a stream request on an endpoint, as [`Peer::stream_request`]
    /// does. Only its opening counts toward the endpoint's calls in
    /// flight; it is sent to another endpoint only if its connection
    /// closed before it went out.
    pub async fn stream_request(&self, op: &str) -> Result<(StreamWriter, ResultStream), Error> {
        self.send_once(|peer| async move { peer.stream_request(op).await })
            .await
    }

    /// Sends a notification to an endpoint, as [`Peer::notify`] does: at
    /// most once (to another endpoint only if its connection closed before
    /// it was queued).
    pub async fn notify(&self, name: &str, payload: impl Into<Bytes>) -> Result<(), Error> {
        let payload = payload.into();
        self.send_once(|peer| {
            let payload = payload.clone();
            async move { peer.notify(name, payload).await }
        })
        .await
    }

    /// Sends a notification with a JSON payload (see [`notify`](Self::notify)).
    pub async fn notify_json<T: Serialize + ?Sized>(
        &self,
        name: &str,
        value: &T,
    ) -> Result<(), Error> {
        self.notify(name, json_input(value)?).await
    }

    /// Runs `send` on an endpoint's connection; on another one if it
    /// failed because that connection was closed (a send on a closed
    /// connection fails before anything is queued).
    async fn send_once<T, F, Fut>(&self, send: F) -> Result<T, Error>
    where
        F: Fn(Peer) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut tried: Vec<Arc<Endpoint>> = Vec::new();
        loop {
            let Checkout {
                endpoint,
                peer,
                probe,
                in_flight,
            } = self.checkout(&tried).await?;
            let result = send(peer).await;
            drop(in_flight);
            let _look_again = probe.then(|| BumpOnDrop(&self.shared));
            match result {
                Ok(sent) => {
                    endpoint.succeeded();
                    return Ok(sent);
                }
                Err(Error::Closed(reason))
                    if tried.len() + 1 < self.shared.options.max_attempts as usize
                        && !self.is_closed() =>
                {
                    tracing::debug!(endpoint = %endpoint.addr, %reason, "trying another endpoint");
                    self.shared.failed(&endpoint);
                    tried.push(endpoint);
                }
                other => return other,
            }
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The longest a resolver may take to answer before the attempt counts as
/// failed (a system resolver can hang for minutes on a dead DNS server).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Resolves once the balancer is told to stop.
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// The balancer's task: asks the resolver for endpoints, now and every
/// interval, until told to stop; then closes every connection.
async fn run(shared: Arc<Shared>, resolver: Box<dyn Resolve>) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let resolving = tokio::time::timeout(RESOLVE_TIMEOUT, resolver.resolve());
        tokio::select! {
            found = resolving => match found.unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into())) {
                Ok(addrs) if !addrs.is_empty() => shared.update(addrs),
                Ok(_) => tracing::warn!(
                    kept = shared.endpoints().len(),
                    "the resolver found no endpoint; keeping the ones we have"
                ),
                Err(error) => tracing::warn!(
                    %error,
                    kept = shared.endpoints().len(),
                    "resolving endpoints failed; keeping the ones we have"
                ),
            },
            () = stopped(&mut shutdown) => break,
        }
        tokio::select! {
            () = tokio::time::sleep(shared.options.resolve_interval) => {}
            () = stopped(&mut shutdown) => break,
        }
    }
    let endpoints = std::mem::replace(&mut *shared.endpoints_lock(), Arc::new([]));
    shared.bump();
    futures::future::join_all(endpoints.iter().map(|e| e.client.close())).await;
    shared.finished.send_replace(true);
}
