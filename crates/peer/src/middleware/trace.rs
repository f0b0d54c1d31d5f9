//! A tracing span per request.

use std::{
    future::Future,
    pin::Pin,
    task::{Context as TaskContext, Poll},
    time::Instant,
};

use bytes::Bytes;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Level, Span, field::Empty};

use super::Request;
use crate::{ConnectionInfo, HandlerError};

/// A layer that runs each request in a `tracing` span named
/// `gotalk.request`, with the fields
///
/// | field | value |
/// |---|---|
/// | `operation` | the operation's name |
/// | `request_id` | the request ID as text (`RequestId`'s `Display`; empty over HTTP) |
/// | `connection` | the server's connection number ([`ConnectionInfo::id`]; empty when the connection has none) |
/// | `peer` | the caller's address (empty when unknown) |
/// | `outcome` | `ok`, `error` or `retry`, once the handler has answered |
/// | `duration_us` | microseconds from the call into the layer to the answer |
///
/// and ends it with an event (`request finished`) carrying the outcome and
/// the duration, at the same level (default `DEBUG`). A span that no
/// subscriber wants costs a check of the level, nothing more.
///
/// ```
/// use gotalk_peer::{HandlerError, Handlers, middleware::TraceLayer};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) })
///     .layer(TraceLayer::new().level(tracing::Level::INFO));
/// # let _ = handlers;
/// ```
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    level: Level,
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// Spans at level `DEBUG`.
    pub fn new() -> Self {
        Self {
            level: Level::DEBUG,
        }
    }

    /// Sets the level of the spans and of their closing events.
    pub fn level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            level: self.level,
        }
    }
}

/// The service of [`TraceLayer`].
#[derive(Clone, Debug)]
pub struct TraceService<S> {
    inner: S,
    level: Level,
}

/// `tracing`'s macros take a constant level.
macro_rules! at_level {
    ($level:expr, $mac:ident!($($args:tt)*)) => {
        match $level {
            Level::ERROR => tracing::$mac!(Level::ERROR, $($args)*),
            Level::WARN => tracing::$mac!(Level::WARN, $($args)*),
            Level::INFO => tracing::$mac!(Level::INFO, $($args)*),
            Level::DEBUG => tracing::$mac!(Level::DEBUG, $($args)*),
            _ => tracing::$mac!(Level::TRACE, $($args)*),
        }
    };
}

fn request_span(level: Level, req: &Request) -> Span {
    let ctx = req.context();
    let span = at_level!(
        level,
        span!(
            "gotalk.request",
            operation = req.operation(),
            request_id = Empty,
            connection = Empty,
            peer = Empty,
            outcome = Empty,
            duration_us = Empty,
        )
    );
    if span.is_disabled() {
        return span;
    }
    if let Some(id) = ctx.request_id() {
        span.record("request_id", tracing::field::display(id));
    }
    if let Some(peer) = ctx.try_peer() {
        if let Some(addr) = peer.remote_addr() {
            span.record("peer", addr);
        }
        if let Some(info) = peer.user_data::<ConnectionInfo>() {
            span.record("connection", info.id);
        }
    }
    span
}

impl<S> Service<Request> for TraceService<S>
where
    S: Service<Request, Response = Bytes>,
    S::Error: Into<HandlerError>,
{
    type Response = Bytes;
    type Error = HandlerError;
    type Future = TraceFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        let span = request_span(self.level, &req);
        // No clock read for a span nobody records.
        let start = (!span.is_disabled()).then(Instant::now);
        let inner = {
            let _entered = span.enter();
            self.inner.call(req)
        };
        TraceFuture {
            inner,
            span,
            level: self.level,
            start,
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`TraceService`].
    pub struct TraceFuture<F> {
        #[pin]
        inner: F,
        span: Span,
        level: Level,
        start: Option<Instant>,
    }
}

/// `ok`, `error` or `retry`.
pub(crate) fn outcome_of<T>(result: &Result<T, HandlerError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) if e.is_retry() => "retry",
        Err(_) => "error",
    }
}

impl<F, E> Future for TraceFuture<F>
where
    F: Future<Output = Result<Bytes, E>>,
    E: Into<HandlerError>,
{
    type Output = Result<Bytes, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let result = match this.inner.poll(cx) {
            Poll::Ready(result) => result.map_err(Into::into),
            Poll::Pending => return Poll::Pending,
        };
        if let Some(start) = this.start {
            let outcome = outcome_of(&result);
            let duration_us = start.elapsed().as_micros() as u64;
            this.span.record("outcome", outcome);
            this.span.record("duration_us", duration_us);
            at_level!(
                *this.level,
                event!(outcome, duration_us, "request finished")
            );
        }
        Poll::Ready(result)
    }
}
