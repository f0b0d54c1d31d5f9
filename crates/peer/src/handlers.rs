//! Handlers for the operations and notifications this side exposes.

use std::{fmt, future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;
use gotalk_proto::{RequestId, Text};
use serde::{Serialize, de::DeserializeOwned};

use tower_service::Service;

use crate::{
    HandlerError, Peer, RequestParts, ResultSender,
    handler_pool::{PooledCall, PooledHandler, Spare},
    middleware::{HandlerService, Identity, Layer, Request, Route},
    name_map::NameMap,
};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A buffer handler: its calls' futures live in recycled slots (see
/// `handler_pool`).
pub(crate) type BufferFn =
    dyn Fn(Context, Bytes, Option<&mut Spare>) -> CallFuture<Bytes> + Send + Sync;
pub(crate) type StreamFn = dyn Fn(Context, RequestParts, ResultSender) -> BoxFuture<Result<(), HandlerError>>
    + Send
    + Sync;
pub(crate) type NotificationFn = dyn Fn(Context, Bytes) -> BoxFuture<()> + Send + Sync;

/// A notification's handler, as registered or wrapped in layers.
#[derive(Clone)]
pub(crate) enum NotificationHandler {
    Plain(Arc<NotificationFn>),
    Layered(Arc<Route>),
}

impl NotificationHandler {
    /// Runs the handler through its layers. An error is a layer's refusal:
    /// the handler was not called, and a notification has nobody to tell.
    pub(crate) fn call(&self, ctx: Context, payload: Bytes) -> NotificationCall {
        match self {
            Self::Plain(f) => NotificationCall::Plain(f(ctx, payload)),
            Self::Layered(route) => {
                NotificationCall::Layered(route.call_notification(ctx, payload))
            }
        }
    }
}

/// The future of [`NotificationHandler::call`]: the handler's own boxed
/// future, not boxed again.
pub(crate) enum NotificationCall {
    Plain(BoxFuture<()>),
    Layered(BoxFuture<Result<Bytes, HandlerError>>),
}

impl Future for NotificationCall {
    type Output = Result<(), HandlerError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            Self::Plain(f) => f.as_mut().poll(cx).map(Ok),
            Self::Layered(f) => f.as_mut().poll(cx).map(|r| r.map(drop)),
        }
    }
}

#[derive(Clone)]
pub(crate) enum RequestHandler {
    Buffer(Arc<BufferFn>),
    Stream(Arc<StreamFn>),
    /// Wrapped in layers (see [`Handlers::layer`]).
    Layered(Arc<Route>),
    /// `MetricsLayer` as the outermost layer: counted by the runtime around
    /// the call, with no service clone or box of its own (see
    /// `middleware::metrics`).
    #[cfg(feature = "metrics")]
    Metered(Arc<crate::middleware::Metered>),
}

impl RequestHandler {
    /// True for a stream handler (layered or not).
    pub(crate) fn is_stream(&self) -> bool {
        match self {
            Self::Buffer(_) => false,
            Self::Stream(_) => true,
            Self::Layered(route) => route.is_stream(),
            #[cfg(feature = "metrics")]
            Self::Metered(metered) => metered.inner().is_stream(),
        }
    }

    /// Runs a buffer handler (`is_stream` false): its own future when it
    /// has no layers, not boxed again. The handler is borrowed (its future
    /// owns what it needs): a plain call takes no reference count; a
    /// metered one clones its handle into the meter. Inlined into the
    /// dispatcher: the plain case is the hot one, and the context is moved
    /// once, not through a chain of calls.
    #[inline(always)]
    pub(crate) fn call_buffer(&self, ctx: Context, payload: Bytes) -> HandlerCall<Bytes> {
        self.call_buffer_in(ctx, payload, None, None)
    }

    /// [`call_buffer`](Self::call_buffer), for a request of the dispatch
    /// round `meters` times when given: a metered call's clock then starts
    /// with the round's. The call starts in `spare` when it is this
    /// handler's (see `handler_pool`).
    #[inline]
    pub(crate) fn call_buffer_in(
        &self,
        ctx: Context,
        payload: Bytes,
        meters: Option<&mut InlineMeters>,
        spare: Option<&mut Spare>,
    ) -> HandlerCall<Bytes> {
        match self {
            Self::Buffer(f) => HandlerCall::of(f(ctx, payload, spare)),
            other => other.call_buffer_other(ctx, payload, meters, spare),
        }
    }

    fn call_buffer_other(
        &self,
        ctx: Context,
        payload: Bytes,
        _meters: Option<&mut InlineMeters>,
        spare: Option<&mut Spare>,
    ) -> HandlerCall<Bytes> {
        match self {
            Self::Buffer(f) => HandlerCall::of(f(ctx, payload, spare)),
            Self::Layered(route) => HandlerCall::new(route.call_buffer(ctx, payload)),
            #[cfg(feature = "metrics")]
            Self::Metered(metered) => {
                let meter = match _meters {
                    Some(meters) => crate::middleware::Meter::since(meters.round_start()),
                    None => crate::middleware::Meter::start(),
                };
                // The inner handler by reference: no reference count per call.
                let call = match metered.inner() {
                    Self::Buffer(f) => HandlerCall::of(f(ctx, payload, spare)),
                    Self::Layered(route) => HandlerCall::new(route.call_buffer(ctx, payload)),
                    inner => inner.call_buffer(ctx, payload),
                };
                call.metered(meter.of(metered.clone()))
            }
            Self::Stream(_) => {
                let e =
                    HandlerError::new("internal error: a stream handler called as a buffer one");
                HandlerCall::new(Box::pin(async move { Err(e) }))
            }
        }
    }

    /// Runs a stream handler (`is_stream` true).
    pub(crate) fn call_stream(
        &self,
        ctx: Context,
        parts: RequestParts,
        results: ResultSender,
    ) -> HandlerCall<()> {
        match self {
            Self::Stream(f) => HandlerCall::new(f(ctx, parts, results)),
            Self::Layered(route) => {
                let fut = route.call_stream(ctx, parts, results);
                HandlerCall::new(Box::pin(async move { fut.await.map(drop) }))
            }
            #[cfg(feature = "metrics")]
            Self::Metered(metered) => {
                let meter = crate::middleware::Meter::start();
                let call = match metered.inner() {
                    Self::Stream(f) => HandlerCall::new(f(ctx, parts, results)),
                    inner => inner.call_stream(ctx, parts, results),
                };
                call.metered(meter.of(metered.clone()))
            }
            Self::Buffer(_) => {
                let e =
                    HandlerError::new("internal error: a buffer handler called as a stream one");
                HandlerCall::new(Box::pin(async move { Err(e) }))
            }
        }
    }
}

/// A handler's future as the runtime polls it: the handler's own boxed
/// future and, for a metered operation, its meter, recorded when the
/// future completes (not when it is dropped unfinished, as
/// `MetricsLayer`'s service does).
pub(crate) struct HandlerCall<T> {
    fut: CallFuture<T>,
    #[cfg(feature = "metrics")]
    meter: Option<crate::middleware::RunningMeter>,
}

impl<T> HandlerCall<T> {
    #[inline(always)]
    fn new(fut: BoxFuture<Result<T, HandlerError>>) -> Self {
        Self::of(CallFuture::Boxed(fut))
    }

    #[inline(always)]
    fn of(fut: CallFuture<T>) -> Self {
        Self {
            fut,
            #[cfg(feature = "metrics")]
            meter: None,
        }
    }

    #[cfg(feature = "metrics")]
    fn metered(mut self, meter: crate::middleware::RunningMeter) -> Self {
        self.meter = Some(meter);
        self
    }

    /// The handler's future and the meter apart, for the dispatcher's hot
    /// path: it polls the future as is and records the meter itself.
    #[inline(always)]
    pub(crate) fn into_parts(self) -> (CallFuture<T>, CallMeter) {
        #[cfg(feature = "metrics")]
        return (self.fut, CallMeter(self.meter));
        #[cfg(not(feature = "metrics"))]
        return (self.fut, CallMeter(()));
    }
}

/// A handler call's future: a buffer handler's in its recycled slot, any
/// other boxed.
pub(crate) enum CallFuture<T> {
    Boxed(BoxFuture<Result<T, HandlerError>>),
    Pooled(PooledCall),
}

impl CallFuture<Bytes> {
    /// As a boxed future: a boxed call as it is, a pooled one boxed (its
    /// slot is then freed with it).
    pub(crate) fn boxed(self) -> BoxFuture<Result<Bytes, HandlerError>> {
        match self {
            Self::Boxed(f) => f,
            Self::Pooled(call) => Box::pin(call),
        }
    }
}

/// What a call's result is made of when its future is a buffer handler's:
/// `Bytes` themselves (a stream call's `()` never has one).
pub(crate) trait FromBuffer {
    fn from_buffer(bytes: Bytes) -> Self;
}

impl FromBuffer for Bytes {
    #[inline(always)]
    fn from_buffer(bytes: Bytes) -> Self {
        bytes
    }
}

impl FromBuffer for () {
    fn from_buffer(_: Bytes) -> Self {}
}

impl<T: FromBuffer> Future for CallFuture<T> {
    type Output = Result<T, HandlerError>;

    #[inline(always)]
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        match &mut *self {
            Self::Boxed(f) => f.as_mut().poll(cx),
            Self::Pooled(f) => Pin::new(f).poll(cx).map(|r| r.map(T::from_buffer)),
        }
    }
}

/// The meter of a [`HandlerCall`] taken apart ([`HandlerCall::into_parts`]):
/// recorded with the call's result, once.
pub(crate) struct CallMeter(
    #[cfg(feature = "metrics")] Option<crate::middleware::RunningMeter>,
    #[cfg(not(feature = "metrics"))] (),
);

impl CallMeter {
    #[inline(always)]
    pub(crate) fn record<T>(self, _result: &Result<T, HandlerError>) {
        #[cfg(feature = "metrics")]
        if let Some(meter) = self.0 {
            meter.record(_result);
        }
    }
}

/// Inline calls after which a dispatch round ends early (see
/// [`InlineMeters`]).
#[cfg(feature = "metrics")]
const ROUND_MAX: usize = 64;

/// The clock of one dispatch round (the requests of the input read so
/// far, dispatched one after another until it is used up: their answers go
/// out together) for metered calls: started at the round's first metered
/// call and read once more when the round ends, for every call that
/// completed inline in it. A request's latency then runs from when its
/// round began dispatching to when the round's inline answers were all
/// ready, and a round costs two clock readings however many requests it
/// holds, where a reading per call start and end cost two per request (a
/// TSC read is 24 ns on the machine of `docs/benchmarks.md`). A round ends
/// early after [`ROUND_MAX`] inline calls, so input that never runs out
/// holds no more than that. Calls that do not complete inline read the
/// clock when they end.
#[derive(Default)]
pub(crate) struct InlineMeters {
    #[cfg(feature = "metrics")]
    start: Option<crate::middleware::Ticks>,
    #[cfg(feature = "metrics")]
    done: Vec<(crate::middleware::RunningMeter, crate::middleware::Outcome)>,
}

impl InlineMeters {
    /// When this round's first metered call started.
    #[cfg(feature = "metrics")]
    fn round_start(&mut self) -> crate::middleware::Ticks {
        *self.start.get_or_insert_with(crate::middleware::Ticks::now)
    }

    /// A call that completed inline in this round, recorded at its end.
    #[inline(always)]
    pub(crate) fn completed<T>(&mut self, _meter: CallMeter, _result: &Result<T, HandlerError>) {
        #[cfg(feature = "metrics")]
        if let Some(meter) = _meter.0 {
            self.done
                .push((meter, crate::middleware::Outcome::of(_result)));
            if self.done.len() >= ROUND_MAX {
                self.end_round();
            }
        }
    }

    /// Ends the round: its inline calls are recorded as ended now.
    #[inline]
    pub(crate) fn end_round(&mut self) {
        #[cfg(feature = "metrics")]
        {
            self.start = None;
            if !self.done.is_empty() {
                let end = crate::middleware::Ticks::now();
                for (meter, outcome) in self.done.drain(..) {
                    meter.record_at(end, outcome);
                }
            }
        }
    }
}

/// A connection that ends in the middle of a round (closed while input
/// was still coming) still records the calls it answered.
#[cfg(feature = "metrics")]
impl Drop for InlineMeters {
    fn drop(&mut self) {
        self.end_round();
    }
}

impl<T: FromBuffer> Future for HandlerCall<T> {
    type Output = Result<T, HandlerError>;

    #[inline(always)]
    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let out = std::task::ready!(Pin::new(&mut self.fut).poll(cx));
        #[cfg(feature = "metrics")]
        if let Some(meter) = self.meter.take() {
            meter.record(&out);
        }
        std::task::Poll::Ready(out)
    }
}

#[derive(Clone, Default)]
struct Registry {
    requests: NameMap<RequestHandler>,
    /// Operations registered with [`Handlers::json`]: their results are
    /// JSON (HTTP serves them as `application/json`).
    json: NameMap<()>,
    notifications: NameMap<NotificationHandler>,
}

/// The operations and notifications one side of a connection handles.
///
/// Cheap to clone; share one set between all connections of a server.
/// Registering under the empty name `""` sets the fallback for names with no
/// handler of their own. A request for an operation with no handler and no
/// fallback gets the error result `unknown operation "NAME"`; a notification
/// with no handler is dropped.
///
/// Kinds need not match: a stream request for an operation with a buffer
/// handler is collected (up to the payload limit) and handed over whole, and
/// a single request to a stream handler arrives as a one-part stream.
///
/// ```
/// use bytes::Bytes;
/// use gotalk_peer::{Handlers, HandlerError};
/// #[derive(serde::Deserialize)]
/// struct GreetIn { name: String }
/// #[derive(serde::Serialize)]
/// struct GreetOut { greeting: String }
///
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, payload: Bytes| async move { Ok::<_, HandlerError>(payload) })
///     .json("greet", |_ctx, input: GreetIn| async move {
///         Ok::<_, HandlerError>(GreetOut { greeting: format!("Hello {}", input.name) })
///     })
///     .notification("ping", |ctx, payload| async move {
///         let _ = ctx.peer().notify("pong", payload).await;
///     });
/// # let _ = handlers;
/// ```
#[derive(Clone, Default)]
pub struct Handlers {
    inner: Arc<Registry>,
}

impl Handlers {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn registry(&mut self) -> &mut Registry {
        Arc::make_mut(&mut self.inner)
    }

    /// Handles `op` with raw bytes in and out.
    pub fn buffer<F, Fut, O, E>(mut self, op: &str, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        O: Into<Bytes>,
        E: Into<HandlerError>,
    {
        // `map`, not an `async` block awaiting the handler's future: one
        // state machine less to step through per call.
        let pooled = PooledHandler::new(move |ctx, payload| {
            futures::FutureExt::map(handler(ctx, payload), |r: Result<O, E>| {
                r.map(Into::into).map_err(Into::into)
            })
        });
        let f: Arc<BufferFn> = Arc::new(move |ctx, payload, spare: Option<&mut Spare>| {
            pooled.call(ctx, payload, spare)
        });
        let registry = self.registry();
        registry.json.remove(op);
        registry
            .requests
            .insert(op.into(), RequestHandler::Buffer(f));
        self
    }

    /// Handles `op` with JSON in and out. A payload that is not valid JSON
    /// for `I` gets an error result (the handler is not called); an empty
    /// payload reads as `null`, so `I = ()` or `Option<T>` takes no input.
    pub fn json<I, O, F, Fut, E>(self, op: &str, handler: F) -> Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize,
        F: Fn(Context, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let handler = Arc::new(handler);
        let mut this = self.buffer(op, move |ctx, payload: Bytes| {
            let input = json_input::<I>(&payload);
            let handler = handler.clone();
            async move {
                let output = handler(ctx, input?).await.map_err(Into::into)?;
                json_output(&output)
            }
        });
        this.registry().json.insert(op.into(), ());
        this
    }

    /// Handles `op` as a stream: request parts arrive on `RequestParts`,
    /// result parts go out through `ResultSender`. Returning `Ok` ends the
    /// result stream; returning `Err` sends an error result instead.
    pub fn stream<F, Fut, E>(mut self, op: &str, handler: F) -> Self
    where
        F: Fn(Context, RequestParts, ResultSender) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<HandlerError>,
    {
        let f: Arc<StreamFn> = Arc::new(move |ctx, parts, results| {
            let fut = handler(ctx, parts, results);
            Box::pin(async move { fut.await.map_err(Into::into) })
        });
        let registry = self.registry();
        registry.json.remove(op);
        registry
            .requests
            .insert(op.into(), RequestHandler::Stream(f));
        self
    }

    /// Handles notifications called `name`, with the raw payload.
    ///
    /// Like request handlers, each is polled once on the connection's task
    /// (see [`Config::inline_handlers`](crate::Config::inline_handlers)): one
    /// that finishes without waiting costs no task, and one that waits moves
    /// to a task of its own, so a slow handler never holds up reading. Order
    /// between notifications that wait is therefore not guaranteed. At most
    /// [`Config::max_concurrent_notifications`](crate::Config::max_concurrent_notifications)
    /// run at once; reading pauses while that many do.
    pub fn notification<F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Context, Bytes) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: Arc<NotificationFn> = Arc::new(move |ctx, payload| Box::pin(handler(ctx, payload)));
        self.registry()
            .notifications
            .insert(name.into(), NotificationHandler::Plain(f));
        self
    }

    /// Handles notifications called `name` carrying JSON. A payload that does
    /// not parse as `T` is logged and dropped (notifications have no reply).
    pub fn json_notification<T, F, Fut>(self, name: &str, handler: F) -> Self
    where
        T: DeserializeOwned + Send + 'static,
        F: Fn(Context, T) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.notification(name, move |ctx, payload| {
            let handler = handler.clone();
            let value = parse_json::<T>(&payload);
            async move {
                match value {
                    Ok(v) => handler(ctx, v).await,
                    Err(e) => tracing::warn!(name = ctx.name(), error = %e, "dropping notification with invalid JSON"),
                }
            }
        })
    }

    /// Wraps every operation and notification handler registered so far in
    /// `layer` (a tower [`Layer`]); those registered after it are not
    /// wrapped, as with axum's `Router::layer`. The fallbacks (`""`) are
    /// wrapped too. The last layer added is the outermost. See
    /// [`middleware`](crate::middleware) for what applies to stream
    /// operations, to notifications and over HTTP.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gotalk_peer::{HandlerError, Handlers, middleware::TraceLayer};
    /// let handlers = Handlers::new()
    ///     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) })
    ///     .layer(TraceLayer::new());
    /// # let _ = handlers;
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<HandlerService> + 'static,
        L::Service: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Error: Into<HandlerError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        let registry = self.registry();
        for (name, handler) in registry.requests.iter_mut() {
            *handler = crate::middleware::wrap(name, handler, &layer);
        }
        for (name, handler) in registry.notifications.iter_mut() {
            *handler = crate::middleware::wrap_notification(name, handler, &layer);
        }
        self
    }

    /// Wraps the operation registered as `op` in `layer` (see
    /// [`layer`](Self::layer)); `""` is the fallback.
    ///
    /// # Panics
    /// If no handler is registered as `op` (register it first).
    pub fn layer_for<L>(mut self, op: &str, layer: L) -> Self
    where
        L: Layer<HandlerService> + 'static,
        L::Service: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Error: Into<HandlerError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        let Some(handler) = self.registry().requests.get_mut(op) else {
            panic!(
                "Handlers::layer_for: no handler registered as {op:?}; register it before layering it"
            );
        };
        *handler = crate::middleware::wrap(op, handler, &layer);
        self
    }

    /// Wraps the handler of the notifications called `name` in `layer` (see
    /// [`layer`](Self::layer)); `""` is the fallback. A layer's refusal
    /// (an [`Authorize`](crate::middleware::Authorize) without the grant, say)
    /// drops the notification unhandled, logged at `DEBUG`.
    ///
    /// ```
    /// use gotalk_peer::{Handlers, middleware::Authorize};
    /// let handlers = Handlers::new()
    ///     .notification("shutdown", |_ctx, _p| async move { /* ... */ })
    ///     .layer_for_notification("shutdown", Authorize::grant("admin"));
    /// # let _ = handlers;
    /// ```
    ///
    /// # Panics
    /// If no handler is registered for `name` (register it first).
    pub fn layer_for_notification<L>(mut self, name: &str, layer: L) -> Self
    where
        L: Layer<HandlerService> + 'static,
        L::Service: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request>>::Error: Into<HandlerError>,
        <L::Service as Service<Request>>::Future: Send + 'static,
    {
        let Some(handler) = self.registry().notifications.get_mut(name) else {
            panic!(
                "Handlers::layer_for_notification: no handler registered for {name:?}; register it before layering it"
            );
        };
        *handler = crate::middleware::wrap_notification(name, handler, &layer);
        self
    }

    pub(crate) fn request_handler(&self, op: &str) -> Option<&RequestHandler> {
        let requests = &self.inner.requests;
        requests.get(op).or_else(|| requests.get(""))
    }

    /// True when the handler [`request_handler`](Self::request_handler)
    /// finds for `op` was registered with [`Handlers::json`].
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn is_json(&self, op: &str) -> bool {
        let registry = &self.inner;
        if registry.requests.contains_key(op) {
            registry.json.contains_key(op)
        } else {
            registry.json.contains_key("")
        }
    }

    pub(crate) fn notification_handler(&self, name: &str) -> Option<&NotificationHandler> {
        let notes = &self.inner.notifications;
        notes.get(name).or_else(|| notes.get(""))
    }
}

impl fmt::Debug for Handlers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut ops: Vec<_> = self.inner.requests.keys().collect();
        ops.sort();
        let mut notes: Vec<_> = self.inner.notifications.keys().collect();
        notes.sort();
        f.debug_struct("Handlers")
            .field("operations", &ops)
            .field("notifications", &notes)
            .finish()
    }
}

/// A handler's JSON input, as [`Handlers::json`] reads it: an empty
/// payload is `null`; one that does not parse is the error result
/// `invalid input: ...`.
pub(crate) fn json_input<T: DeserializeOwned>(payload: &[u8]) -> Result<T, HandlerError> {
    parse_json(payload).map_err(|e| HandlerError::new(format!("invalid input: {e}")))
}

/// A handler's JSON result, as [`Handlers::json`] writes it.
pub(crate) fn json_output<T: Serialize + ?Sized>(value: &T) -> Result<Bytes, HandlerError> {
    serde_json::to_vec(value)
        .map(Bytes::from)
        .map_err(|e| HandlerError::new(format!("cannot encode result: {e}")))
}

/// JSON as handlers read it: an empty (or all-whitespace) payload is `null`.
pub(crate) fn parse_json<T: DeserializeOwned>(payload: &[u8]) -> serde_json::Result<T> {
    if payload.iter().all(u8::is_ascii_whitespace) {
        serde_json::from_slice(b"null")
    } else {
        serde_json::from_slice(payload)
    }
}

/// What a handler knows about the message it handles.
///
/// A message that came in on a gotalk connection has that connection's
/// [`Peer`]. A call made over plain HTTP (feature `http`, see
/// `gotalk_peer::http`) has none: HTTP has no way back to the caller, so
/// [`try_peer`](Self::try_peer) is `None` there. Handlers served over both
/// use `try_peer`; [`peer`](Self::peer) is for handlers that only serve
/// connections.
#[derive(Clone, Debug)]
pub struct Context {
    /// `None` for a call over HTTP.
    peer: Option<Peer>,
    /// The name as decoded: a slice of the read buffer, no copy.
    name: Text<Bytes>,
    id: Option<RequestId>,
    /// A call over HTTP's identity (a connection's is its user data).
    identity: Option<Arc<Identity>>,
}

impl Context {
    pub(crate) fn new(peer: Peer, name: Text<Bytes>, id: Option<RequestId>) -> Self {
        Self {
            peer: Some(peer),
            name,
            id,
            identity: None,
        }
    }

    /// The context of a call with no connection behind it (HTTP).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    pub(crate) fn without_peer(name: Text<Bytes>, identity: Option<Arc<Identity>>) -> Self {
        Self {
            peer: None,
            name,
            id: None,
            identity,
        }
    }

    /// Who the caller is: the connection's [`Identity`], set with
    /// [`Peer::set_identity`]; for a call over HTTP, what
    /// `http::HttpConfig::identify` made of it. `None` when nobody said.
    pub fn identity(&self) -> Option<Arc<Identity>> {
        match &self.peer {
            Some(peer) => peer.identity(),
            None => self.identity.clone(),
        }
    }

    /// A handle to the connection the message came in on: call the other
    /// side from inside a handler, or notify it.
    ///
    /// # Panics
    /// When the call came over HTTP, which has no connection (see
    /// [`try_peer`](Self::try_peer)). Served over HTTP, the panic is
    /// answered like any handler panic: `500 Internal Server Error`.
    pub fn peer(&self) -> &Peer {
        match &self.peer {
            Some(peer) => peer,
            None => panic!(
                "Context::peer: {:?} was called over HTTP, which has no connection; \
                 use Context::try_peer in handlers served over HTTP",
                self.name()
            ),
        }
    }

    /// The connection the message came in on, or `None` for a call over
    /// HTTP (no connection, nothing to call back).
    pub fn try_peer(&self) -> Option<&Peer> {
        self.peer.as_ref()
    }

    /// The operation (for requests) or notification name.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The request ID (`None` for notifications and for calls over HTTP).
    pub fn request_id(&self) -> Option<RequestId> {
        self.id
    }

    /// Asks to go on running if the connection closes before this handler
    /// finishes, for up to
    /// [`Config::keep_running_grace`](crate::Config::keep_running_grace)
    /// (a handler that must finish what it started, such as a write to a
    /// database). Without it, a handler still running when its connection
    /// closes is cancelled: its future is dropped at its next `.await`.
    /// Only the handler's own future is concerned (call it from there, not
    /// from a task it spawned); returns false when called from elsewhere,
    /// and for a call over HTTP (it ends with its HTTP request: a client
    /// that goes away cancels it).
    pub fn keep_running_after_close(&self) -> bool {
        use crate::connection::KEEP_INLINE;
        if KEEP_INLINE.get().is_some() {
            KEEP_INLINE.set(Some(true));
            return true;
        }
        crate::connection::KEEP_RUNNING
            .try_with(|keep| keep.set(true))
            .is_ok()
    }

    /// Lets every task woken so far run before the handler goes on: the
    /// handler's task goes once to the back of the runtime's run queue.
    ///
    /// For a handler that has just woken many connections, say by queueing
    /// a notification to each, and should answer only once they have had
    /// their turn to write it: the answer then paces the caller by how fast
    /// those writes go, instead of letting it queue work faster than the
    /// process can send it. The hub's `publish` does this.
    ///
    /// Unlike [`tokio::task::yield_now`] this survives the peer's first
    /// poll of a handler, which it makes on the connection's own task
    /// ([`Config::inline_handlers`](crate::Config::inline_handlers)): a
    /// yield there would only let the connection go on, so the requeue
    /// happens on the handler task's first poll instead. On a
    /// current-thread runtime every task woken before the call runs first.
    /// On a multi-thread runtime, tasks that overflowed the worker's local
    /// queue into the shared one, or that other workers took, may run
    /// later, so the order is then only mostly kept.
    ///
    /// ```no_run
    /// # use bytes::Bytes;
    /// # use gotalk_peer::{Context, Handlers, HandlerError};
    /// let handlers = Handlers::new().buffer("shout", |ctx: Context, text: Bytes| async move {
    ///     // ... notify every listener ...
    ///     ctx.yield_behind_woken().await;
    ///     Ok::<_, HandlerError>(text)
    /// });
    /// ```
    pub fn yield_behind_woken(&self) -> impl Future<Output = ()> + Send + 'static {
        YieldBehindWoken { requeued: false }
    }

    /// The connection's user data of type `T`, if set with
    /// [`Peer::set_user_data`]; always `None` for a call over HTTP.
    pub fn user_data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        self.peer.as_ref()?.user_data()
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use super::*;

    /// The runtime's meter of an echo operation under `MetricsLayer`.
    fn metered_echo() -> Arc<crate::middleware::Metered> {
        let handlers = Handlers::new()
            .buffer(
                "x",
                |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
            )
            .layer(crate::middleware::MetricsLayer::new());
        match handlers.request_handler("x") {
            Some(RequestHandler::Metered(metered)) => metered.clone(),
            _ => panic!("MetricsLayer outermost: the runtime meters the operation"),
        }
    }

    /// One call of this round, completed inline.
    fn complete_one(meters: &mut InlineMeters, metered: &Arc<crate::middleware::Metered>) {
        let start = meters.round_start();
        let meter = CallMeter(Some(
            crate::middleware::Meter::since(start).of(metered.clone()),
        ));
        meters.completed(meter, &Ok::<(), HandlerError>(()));
    }

    /// Input that never runs out (the round never ends by itself) holds
    /// at most `ROUND_MAX` finished calls: the round ends early.
    #[test]
    fn a_round_holds_at_most_round_max_inline_calls() {
        let metered = metered_echo();
        let mut meters = InlineMeters::default();
        for i in 0..3 * ROUND_MAX + 5 {
            complete_one(&mut meters, &metered);
            assert!(meters.done.len() < ROUND_MAX, "after {i} calls");
        }
        assert_eq!(meters.done.len(), 5);
        meters.end_round();
        assert!(meters.done.is_empty());
        assert!(
            meters.start.is_none(),
            "the next round reads the clock anew"
        );
    }

    /// Calls finished in a round that never ended are recorded when the
    /// connection's dispatch goes away.
    #[test]
    fn a_round_cut_short_is_recorded_on_drop() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let metered = metered_echo();
            let mut meters = InlineMeters::default();
            for _ in 0..3 {
                complete_one(&mut meters, &metered);
            }
            drop(meters);
        });
        let recorded: u64 = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .filter(|(key, ..)| key.key().name() == "gotalk_requests_total")
            .map(|(.., value)| match value {
                metrics_util::debugging::DebugValue::Counter(n) => n,
                _ => 0,
            })
            .sum();
        assert_eq!(recorded, 3);
    }
}

/// The future of [`Context::yield_behind_woken`].
struct YieldBehindWoken {
    requeued: bool,
}

impl Future for YieldBehindWoken {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        if self.requeued {
            return std::task::Poll::Ready(());
        }
        // The peer's inline first poll (no-op waker): the handler is
        // spawned next, and a new task may run before the tasks already
        // woken (tokio's multi-thread runtime puts it in the worker's LIFO
        // slot). Requeue on that task's first poll.
        if crate::connection::KEEP_INLINE.get().is_none() {
            self.requeued = true;
            // Woken while it runs, a task is put at the back of the queue
            // once its poll returns (tokio schedules it as a yield).
            cx.waker().wake_by_ref();
        }
        std::task::Poll::Pending
    }
}
