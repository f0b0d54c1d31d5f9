//! Per-operation counts and latencies (feature `metrics`).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use metrics::{Counter, Histogram, counter, histogram};
use tower_layer::Layer;
use tower_service::Service;

use super::{HandlerService, Request};
use crate::{HandlerError, handlers::RequestHandler};

/// `gotalk_requests_total`, by operation and outcome.
const REQUESTS: &str = "gotalk_requests_total";
/// `gotalk_request_duration_seconds`, by operation.
const DURATION: &str = "gotalk_request_duration_seconds";

/// A layer that counts requests per operation and outcome and records
/// their latency, through the `metrics` facade (feature `metrics`):
///
/// | metric | kind | labels |
/// |---|---|---|
/// | `gotalk_requests_total` | counter | `operation`, `outcome`: `ok`, `error`, `retry` |
/// | `gotalk_request_duration_seconds` | histogram | `operation` |
///
/// The `operation` label is the name the handler was registered under
/// ([`Request::route`]), `*` for the fallback: a caller cannot grow the
/// label set by making names up. Each operation's handles are registered at
/// its first request, with the recorder installed then. Requests for
/// unknown operations, and the runtime's own figures (bytes, connections,
/// streams, notifications, protocol violations), are counted without a
/// layer: see `docs/middleware.md`.
///
/// As the outermost layer of an operation (the usual place: added last, to
/// count what callers see), it is not run as a service: the runtime counts
/// around the call itself, the same figures without a clone of the
/// operation's service stack or a boxed future per request, and times the
/// requests of one read together (two clock readings per read: a request
/// answered without waiting gets the span from the first one's start to
/// the end of their dispatch; one that waits, from that start to its own
/// end). Added below other layers, it runs as [`MetricsService`], which
/// reads the clock around each call. Notifications pass through uncounted.
///
/// ```
/// use gotalk_peer::{HandlerError, Handlers, middleware::MetricsLayer};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) })
///     .layer(MetricsLayer::new());
/// # let _ = handlers;
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct MetricsLayer {
    _private: (),
}

impl MetricsLayer {
    /// The layer. The first one calibrates the clock the latencies are read
    /// from (a few milliseconds, once per process), so that no request pays
    /// for it.
    pub fn new() -> Self {
        let _ = clock();
        Self::default()
    }
}

/// The clock of every latency: raw ticks (the TSC where the CPU has an
/// invariant one, else the monotonic clock), read twice per dispatch round
/// for the answers given inline (`handlers::InlineMeters`), around the call
/// otherwise, and scaled to nanoseconds once per request. `quanta::Instant::now()` scales at every
/// read and checks for a mocked clock first; read twice per request that
/// came to 190 instructions, against about 20 here (callgrind, the whole
/// server: `scripts/server-instructions.sh` with `--metrics`).
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A point in time on [`clock`], in its raw ticks.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ticks(u64);

impl Ticks {
    #[inline]
    pub(crate) fn now() -> Self {
        Self(clock().raw())
    }

    /// Seconds from `self` to now (0 if the clock did not move forward,
    /// as two cores' counters may disagree by a few ticks).
    #[inline]
    fn elapsed_secs(self) -> f64 {
        self.secs_until(Self::now())
    }

    /// Seconds from `self` to `end` (0 if `end` is not later).
    #[inline]
    fn secs_until(self, end: Self) -> f64 {
        clock().delta_as_nanos(self.0, end.0) as f64 * 1e-9
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MetricsService {
            inner,
            handles: Arc::default(),
        }
    }
}

/// An operation whose outermost layer is [`MetricsLayer`]: the runtime
/// counts its requests around the call ([`RunningMeter`]) instead of
/// running a service for it. Same figures as [`MetricsService`] (the two
/// share the handles when a layer is added on top later), at a fraction of
/// the cost: no clone of the operation's service stack, no boxed future of
/// its own, no reference count per request.
pub(crate) struct Metered {
    /// The handler, with the layers below, if any.
    inner: RequestHandler,
    handles: Arc<OnceLock<Handles>>,
    /// The name it was registered under (`""`: the fallback).
    route: Box<str>,
}

impl Metered {
    pub(crate) fn inner(&self) -> &RequestHandler {
        &self.inner
    }

    fn handles(&self) -> &Handles {
        self.handles.get_or_init(|| Handles::register(&self.route))
    }

    /// The same counting as a service, for a layer added on top of it.
    pub(crate) fn as_service(&self) -> MetricsService<HandlerService> {
        MetricsService {
            inner: HandlerService {
                inner: super::inner_of(&self.inner),
            },
            handles: self.handles.clone(),
        }
    }
}

/// `MetricsLayer` around the operation registered as `name`.
pub(crate) fn metered(name: &str, handler: &RequestHandler) -> RequestHandler {
    let inner = match handler {
        // Counted twice, as two layers would: the one there already becomes
        // a service below the new one.
        RequestHandler::Metered(metered) => {
            super::route(name, metered.inner.is_stream(), metered.as_service())
        }
        other => other.clone(),
    };
    RequestHandler::Metered(Arc::new(Metered {
        inner,
        handles: Arc::default(),
        route: name.into(),
    }))
}

/// The clock of a metered call, read before the handler is called.
pub(crate) struct Meter {
    start: Ticks,
}

impl Meter {
    pub(crate) fn start() -> Self {
        Self {
            start: Ticks::now(),
        }
    }

    /// A clock that started at `start`.
    pub(crate) fn since(start: Ticks) -> Self {
        Self { start }
    }

    /// Ties the clock to the operation (the handle the call took from the
    /// registry, moved rather than cloned).
    pub(crate) fn of(self, metered: Arc<Metered>) -> RunningMeter {
        RunningMeter {
            metered,
            start: self.start,
        }
    }
}

/// A metered call under way: recorded once, when its future completes.
pub(crate) struct RunningMeter {
    metered: Arc<Metered>,
    start: Ticks,
}

impl RunningMeter {
    pub(crate) fn record<T>(self, result: &Result<T, HandlerError>) {
        self.record_at(Ticks::now(), Outcome::of(result));
    }

    /// Records the call as ended at `end`, with `outcome`.
    pub(crate) fn record_at(self, end: Ticks, outcome: Outcome) {
        self.metered
            .handles()
            .record(self.start.secs_until(end), outcome);
    }
}

/// How a metered call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    Retry,
}

impl Outcome {
    pub(crate) fn of<T>(result: &Result<T, HandlerError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(e) if e.is_retry() => Self::Retry,
            Err(_) => Self::Error,
        }
    }
}

/// One operation's handles.
#[derive(Debug)]
struct Handles {
    ok: Counter,
    error: Counter,
    retry: Counter,
    duration: Histogram,
}

impl Handles {
    /// One request that completed: its latency in seconds and its outcome
    /// (no label compared).
    fn record(&self, secs: f64, outcome: Outcome) {
        self.duration.record(secs);
        match outcome {
            Outcome::Ok => self.ok.increment(1),
            Outcome::Retry => self.retry.increment(1),
            Outcome::Error => self.error.increment(1),
        }
    }

    fn register(route: &str) -> Self {
        let operation = if route.is_empty() {
            "*".to_owned()
        } else {
            route.to_owned()
        };
        let count = |outcome: &'static str| counter!(REQUESTS, "operation" => operation.clone(), "outcome" => outcome);
        Self {
            ok: count("ok"),
            error: count("error"),
            retry: count("retry"),
            duration: histogram!(DURATION, "operation" => operation.clone()),
        }
    }
}

/// The service of [`MetricsLayer`]: one per operation, its clones sharing
/// the handles.
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    handles: Arc<OnceLock<Handles>>,
}

impl<S> Service<Request> for MetricsService<S>
where
    S: Service<Request, Response = Bytes>,
    S::Error: Into<HandlerError>,
{
    type Response = Bytes;
    type Error = HandlerError;
    type Future = MetricsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let start = Ticks::now();
        // Requests only: the runtime counts notifications itself.
        let handles = (!req.is_notification()).then(|| {
            if self.handles.get().is_none() {
                let _ = self.handles.set(Handles::register(req.route()));
            }
            self.handles.clone()
        });
        MetricsFuture {
            inner: self.inner.call(req),
            handles,
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        handles: Option<Arc<OnceLock<Handles>>>,
        start: Ticks,
    }
}

impl<F, E> Future for MetricsFuture<F>
where
    F: Future<Output = Result<Bytes, E>>,
    E: Into<HandlerError>,
{
    type Output = Result<Bytes, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = match this.inner.poll(cx) {
            Poll::Ready(result) => result.map_err(Into::into),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(h) = this.handles.as_ref().and_then(|h| h.get()) {
            h.record(this.start.elapsed_secs(), Outcome::of(&result));
        }
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Handlers;

    /// Raw ticks scale to the seconds that passed (bounds wide enough for
    /// a loaded machine; what is checked is the scale, not the speed).
    #[test]
    fn ticks_measure_seconds() {
        let start = Ticks::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let secs = start.elapsed_secs();
        assert!((0.019..5.0).contains(&secs), "{secs}");
        // A start after the end is 0, not a wrapped huge figure.
        let later = Ticks(u64::MAX);
        assert_eq!(later.elapsed_secs(), 0.0);
    }

    fn echo(_ctx: crate::Context, p: Bytes) -> futures::future::Ready<Result<Bytes, HandlerError>> {
        futures::future::ready(Ok(p))
    }

    /// The outermost `MetricsLayer` is counted by the runtime (no service
    /// stack to clone per request); a layer added on top turns it back into
    /// a service inside that layer.
    #[test]
    fn outermost_metrics_layer_is_counted_by_the_runtime() {
        let handlers = Handlers::new()
            .buffer("a", echo)
            .buffer("b", echo)
            .layer(MetricsLayer::new());
        for op in ["a", "b"] {
            assert!(matches!(
                handlers.request_handler(op),
                Some(RequestHandler::Metered(_))
            ));
        }
        let handlers = handlers.layer_for("b", tower_layer::Identity::new());
        assert!(matches!(
            handlers.request_handler("b"),
            Some(RequestHandler::Layered(_))
        ));
        assert!(matches!(
            handlers.request_handler("a"),
            Some(RequestHandler::Metered(_))
        ));
    }
}
