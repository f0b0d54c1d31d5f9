//! Per-operation counts and latencies (feature `metrics`).

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use metrics::{Counter, Histogram, counter, histogram};
// Read per request twice: the TSC in user space is several times cheaper
// than `std::time::Instant` (clock_gettime) on common hosts.
use quanta::Instant;
use tower_layer::Layer;
use tower_service::Service;

use super::{Request, trace::outcome_of};
use crate::HandlerError;

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
    /// The layer.
    pub fn new() -> Self {
        Self::default()
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

/// One operation's handles.
#[derive(Debug)]
struct Handles {
    ok: Counter,
    error: Counter,
    retry: Counter,
    duration: Histogram,
}

impl Handles {
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
        let start = Instant::now();
        if self.handles.get().is_none() {
            let _ = self.handles.set(Handles::register(req.route()));
        }
        MetricsFuture {
            inner: self.inner.call(req),
            handles: self.handles.clone(),
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`MetricsService`].
    pub struct MetricsFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<OnceLock<Handles>>,
        start: Instant,
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
        if let Some(h) = this.handles.get() {
            h.duration.record(this.start.elapsed().as_secs_f64());
            match outcome_of(&result) {
                "ok" => h.ok.increment(1),
                "retry" => h.retry.increment(1),
                _ => h.error.increment(1),
            }
        }
        Poll::Ready(result)
    }
}
