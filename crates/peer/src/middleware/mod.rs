//! Handlers as [`tower`] services, so that layers wrap them: tower's own
//! (timeout, concurrency limit, rate limit, load shed) as they do for tonic,
//! and this module's: [`Authorize`] (per-operation authorization from the
//! connection's [`Identity`]), [`TraceLayer`] (a tracing span per request)
//! and `MetricsLayer` (feature `metrics`: counts and latencies).
//!
//! A request is a [`Request`] (the operation, its [`Context`], the
//! payload); the response is the result's bytes, or a [`HandlerError`].
//! [`Handlers::layer`] wraps every operation and notification handler
//! registered so far (as axum's `Router::layer` does: register first, then
//! layer); [`Handlers::layer_for`] wraps one operation and
//! [`Handlers::layer_for_notification`] one notification's handler. The last layer added is the outermost. A layer's error becomes
//! the caller's error result through `Into<HandlerError>` (tower's boxed
//! errors included: a [`HandlerError`] inside the box keeps its kind, so a
//! layer may refuse with a retry result).
//!
//! # What applies to which kind
//!
//! | | buffer and JSON operations | stream operations | notifications |
//! |---|---|---|---|
//! | runs the layers | yes, once per request | yes, once per request | yes, once per notification |
//! | [`Request::payload`] | the whole payload (a stream request is collected first) | `None`: parts arrive in the handler | the payload |
//! | response | the result's bytes | empty: results go out through the handler's `ResultSender` | empty, dropped |
//! | a refusal | the caller's error result | the caller's error result | the notification dropped, logged at `DEBUG` |
//! | over HTTP (`http`) | the same layers | the same layers | the same layers; a refusal gets its status |
//!
//! So layers that decide per call (authorization, tracing, metrics,
//! timeouts, concurrency and rate limits, load shedding) work the same for
//! every kind. `MetricsLayer` counts requests only (the runtime counts
//! notifications itself).
//!
//! # Costs
//!
//! Layers honour `poll_ready`: a service that is not ready (a concurrency
//! limit reached) holds the request until it is. Handlers keep their inline
//! first poll ([`Config::inline_handlers`](crate::Config::inline_handlers)):
//! the layered service is cloned, made ready and called on the connection's
//! task, and a request whose layers and handler all finish without waiting
//! costs no task. An operation with layers costs one more allocation per
//! request (the service stack's clone and future, boxed together);
//! operations without layers cost nothing more. `MetricsLayer` as the
//! outermost layer of an operation is no service at all: the runtime counts
//! around the call (no clone, no box), with the same figures. `docs/benchmarks.md` has
//! measurements.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, Error, HandlerError, Handlers, Peer};
//! use gotalk_peer::middleware::{Authorize, Identity, TraceLayer};
//!
//! let server = Handlers::new()
//!     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) })
//!     .buffer("shutdown", |_ctx, _| async move { Ok::<_, HandlerError>("bye") })
//!     .buffer("login", |ctx, user| async move {
//!         let user = String::from_utf8_lossy(&user).into_owned();
//!         ctx.peer().set_identity(Identity::new(user).grant("admin"));
//!         Ok::<_, HandlerError>("welcome")
//!     })
//!     .layer_for("shutdown", Authorize::grant("admin"))
//!     .layer(TraceLayer::new());
//! let (client, _server_side) = Peer::pair(Handlers::new(), server, Config::default()).await?;
//!
//! assert_eq!(client.request("echo", "hi").await?, "hi");
//! assert!(matches!(client.request("shutdown", "").await, Err(Error::Remote(_))));
//! client.request("login", "alice").await?;
//! assert_eq!(client.request("shutdown", "").await?, "bye");
//! # Ok(()) }
//! ```
//!
//! [`tower`]: https://docs.rs/tower
//! [`Handlers::layer`]: crate::Handlers::layer
//! [`Handlers::layer_for`]: crate::Handlers::layer_for
//! [`Handlers::layer_for_notification`]: crate::Handlers::layer_for_notification

mod authorize;
mod identity;
#[cfg(feature = "metrics")]
mod metrics;
mod trace;

use std::{
    fmt,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use tower_service::Service;

pub use authorize::{Authorize, AuthorizeService};
pub use identity::Identity;
#[cfg(feature = "metrics")]
pub(crate) use metrics::{Meter, Metered, Outcome, RunningMeter, Ticks};
#[cfg(feature = "metrics")]
pub use metrics::{MetricsLayer, MetricsService};
pub use tower_layer::Layer;
pub use trace::{TraceLayer, TraceService};

use crate::{
    BoxFuture, Context, HandlerError, RequestParts, ResultSender,
    handlers::{BufferFn, NotificationFn, NotificationHandler, StreamFn},
};

/// One request, as layers see it: the operation, the [`Context`] (the
/// connection, the request ID, the identity) and the payload.
pub struct Request {
    ctx: Context,
    /// Served by the fallback (`""`): the route is then `""`, else the
    /// operation's own name (no copy of it per request).
    fallback: bool,
    body: Body,
}

/// What a request carries: the whole payload, or a stream's parts and the
/// sender of its results.
enum Body {
    Bytes(Bytes),
    Stream(RequestParts, ResultSender),
    Notification(Bytes),
}

impl Request {
    pub(crate) fn buffer(ctx: Context, fallback: bool, payload: Bytes) -> Self {
        Self {
            ctx,
            fallback,
            body: Body::Bytes(payload),
        }
    }

    pub(crate) fn stream(
        ctx: Context,
        fallback: bool,
        parts: RequestParts,
        results: ResultSender,
    ) -> Self {
        Self {
            ctx,
            fallback,
            body: Body::Stream(parts, results),
        }
    }

    pub(crate) fn notification(ctx: Context, fallback: bool, payload: Bytes) -> Self {
        Self {
            ctx,
            fallback,
            body: Body::Notification(payload),
        }
    }

    /// The handler's context: connection, request ID, identity.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The operation the caller asked for.
    pub fn operation(&self) -> &str {
        self.ctx.name()
    }

    /// The name the handler was registered under: the operation itself, or
    /// `""` for the fallback (see [`Handlers`](crate::Handlers)). Unlike
    /// [`operation`](Self::operation), the caller cannot make up new ones,
    /// which makes it the safe label for metrics.
    pub fn route(&self) -> &str {
        if self.fallback { "" } else { self.ctx.name() }
    }

    /// The payload of a buffer or JSON operation or of a notification;
    /// `None` for a stream operation, whose parts arrive in the handler.
    pub fn payload(&self) -> Option<&Bytes> {
        match &self.body {
            Body::Bytes(payload) | Body::Notification(payload) => Some(payload),
            Body::Stream(..) => None,
        }
    }

    /// The payload, to rewrite it (see [`payload`](Self::payload)).
    pub fn payload_mut(&mut self) -> Option<&mut Bytes> {
        match &mut self.body {
            Body::Bytes(payload) | Body::Notification(payload) => Some(payload),
            Body::Stream(..) => None,
        }
    }

    /// True for a stream operation.
    pub fn is_stream(&self) -> bool {
        matches!(self.body, Body::Stream(..))
    }

    /// True for a notification: [`operation`](Self::operation) is its
    /// name, there is no request ID, and the response (empty) goes nowhere.
    pub fn is_notification(&self) -> bool {
        matches!(self.body, Body::Notification(..))
    }

    /// The connection's identity ([`Context::identity`]).
    pub fn identity(&self) -> Option<Arc<Identity>> {
        self.ctx.identity()
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("operation", &self.operation())
            .field("route", &self.route())
            .field("request_id", &self.ctx.request_id())
            .field("payload_len", &self.payload().map(Bytes::len))
            .field("stream", &self.is_stream())
            .field("notification", &self.is_notification())
            .finish()
    }
}

/// The service at the bottom of every layered operation: the handler as
/// registered (or the operation's layers so far), for
/// [`Handlers::layer`](crate::Handlers::layer)'s `Layer<HandlerService>`.
///
/// Always ready unless layers below it are not. Its response to a stream
/// request is empty, once the handler has returned.
#[derive(Clone)]
pub struct HandlerService {
    inner: Inner,
}

enum Inner {
    Buffer(Arc<BufferFn>),
    Stream(Arc<StreamFn>),
    Notification(Arc<NotificationFn>),
    /// Layers added before: a clone of their stack of its own.
    Layered(Box<dyn CloneService>),
}

impl Clone for Inner {
    fn clone(&self) -> Self {
        match self {
            Self::Buffer(f) => Self::Buffer(f.clone()),
            Self::Stream(f) => Self::Stream(f.clone()),
            Self::Notification(f) => Self::Notification(f.clone()),
            Self::Layered(service) => Self::Layered(service.clone_box()),
        }
    }
}

impl fmt::Debug for HandlerService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Buffer(_) => "buffer",
            Inner::Stream(_) => "stream",
            Inner::Notification(_) => "notification",
            Inner::Layered(_) => "layered",
        };
        f.debug_struct("HandlerService")
            .field("kind", &kind)
            .finish()
    }
}

/// A request whose body is not of the handler's kind: only a layer that
/// builds requests of its own could cause it (the runtime builds each
/// operation's of its kind).
fn wrong_kind(op: &str) -> HandlerError {
    HandlerError::new(format!(
        "operation {op:?}: request kind does not match its handler"
    ))
}

impl Service<Request> for HandlerService {
    type Response = Bytes;
    type Error = HandlerError;
    type Future = BoxFuture<Result<Bytes, HandlerError>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>> {
        match &mut self.inner {
            Inner::Layered(service) => service.poll_ready(cx),
            Inner::Buffer(_) | Inner::Stream(_) | Inner::Notification(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match (&mut self.inner, req.body) {
            (Inner::Buffer(f), Body::Bytes(payload)) => f(req.ctx, payload, None).boxed(),
            (Inner::Stream(f), Body::Stream(parts, results)) => {
                let fut = f(req.ctx, parts, results);
                Box::pin(async move { fut.await.map(|()| Bytes::new()) })
            }
            (Inner::Notification(f), Body::Notification(payload)) => {
                let fut = f(req.ctx, payload);
                Box::pin(async move {
                    fut.await;
                    Ok(Bytes::new())
                })
            }
            (Inner::Layered(service), body) => service.call(Request {
                ctx: req.ctx,
                fallback: req.fallback,
                body,
            }),
            (_, _) => {
                let e = wrong_kind(req.ctx.name());
                Box::pin(async move { Err(e) })
            }
        }
    }
}

/// An operation wrapped in layers, as the registry keeps it: cloned for
/// every request, made ready, called.
pub(crate) struct Route {
    service: Box<dyn CloneService>,
    stream: bool,
    /// Registered as the fallback (`""`).
    fallback: bool,
}

impl Route {
    /// True when the handler at the bottom is a stream handler.
    pub(crate) fn is_stream(&self) -> bool {
        self.stream
    }

    /// Calls a buffer operation: a clone of the service, made ready, then
    /// called, in one boxed future.
    pub(crate) fn call_buffer(
        &self,
        ctx: Context,
        payload: Bytes,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        self.service
            .oneshot(Request::buffer(ctx, self.fallback, payload))
    }

    /// Calls a stream operation.
    pub(crate) fn call_stream(
        &self,
        ctx: Context,
        parts: RequestParts,
        results: ResultSender,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        self.service
            .oneshot(Request::stream(ctx, self.fallback, parts, results))
    }
}

impl Route {
    /// Calls a notification's handler through its layers.
    pub(crate) fn call_notification(
        &self,
        ctx: Context,
        payload: Bytes,
    ) -> BoxFuture<Result<Bytes, HandlerError>> {
        self.service
            .oneshot(Request::notification(ctx, self.fallback, payload))
    }
}

/// A layered service behind a box, cloneable.
trait CloneService: Send + Sync {
    fn clone_box(&self) -> Box<dyn CloneService>;
    /// Clones the service, waits until it is ready and calls it: one boxed
    /// future holding both the clone and the call's future.
    fn oneshot(&self, req: Request) -> BoxFuture<Result<Bytes, HandlerError>>;
    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>>;
    fn call(&mut self, req: Request) -> BoxFuture<Result<Bytes, HandlerError>>;
}

struct Boxed<S>(S);

impl<S> CloneService for Boxed<S>
where
    S: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
    S::Error: Into<HandlerError>,
    S::Future: Send + 'static,
{
    fn clone_box(&self) -> Box<dyn CloneService> {
        Box::new(Boxed(self.0.clone()))
    }

    fn oneshot(&self, req: Request) -> BoxFuture<Result<Bytes, HandlerError>> {
        let mut svc = self.0.clone();
        Box::pin(async move {
            std::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .map_err(Into::into)?;
            svc.call(req).await.map_err(Into::into)
        })
    }

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request) -> BoxFuture<Result<Bytes, HandlerError>> {
        let fut = self.0.call(req);
        Box::pin(async move { fut.await.map_err(Into::into) })
    }
}

/// `layer` around the operation registered as `name`. `MetricsLayer` as
/// the outermost layer is not a service: the runtime counts around the call
/// itself (see `metrics`), which costs a fraction of a layer.
pub(crate) fn wrap<L>(
    name: &str,
    handler: &crate::handlers::RequestHandler,
    layer: &L,
) -> crate::handlers::RequestHandler
where
    L: Layer<HandlerService> + 'static,
    L::Service: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Error: Into<HandlerError>,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    #[cfg(feature = "metrics")]
    if (layer as &dyn std::any::Any).is::<MetricsLayer>() {
        return metrics::metered(name, handler);
    }
    let service = layer.layer(HandlerService {
        inner: inner_of(handler),
    });
    route(name, handler.is_stream(), service)
}

/// `layer` around the handler of the notifications called `name`.
/// `MetricsLayer` counts requests only: it leaves notifications as they are
/// (the runtime counts them, `gotalk_notifications_received_total`).
pub(crate) fn wrap_notification<L>(
    name: &str,
    handler: &NotificationHandler,
    layer: &L,
) -> NotificationHandler
where
    L: Layer<HandlerService> + 'static,
    L::Service: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
    <L::Service as Service<Request>>::Error: Into<HandlerError>,
    <L::Service as Service<Request>>::Future: Send + 'static,
{
    #[cfg(feature = "metrics")]
    if (layer as &dyn std::any::Any).is::<MetricsLayer>() {
        return handler.clone();
    }
    let inner = match handler {
        NotificationHandler::Plain(f) => Inner::Notification(f.clone()),
        NotificationHandler::Layered(route) => Inner::Layered(route.service.clone_box()),
    };
    let service = layer.layer(HandlerService { inner });
    NotificationHandler::Layered(boxed_route(name, false, service))
}

/// An operation's service stack, boxed as the registry keeps it.
fn route<S>(name: &str, stream: bool, service: S) -> crate::handlers::RequestHandler
where
    S: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
    S::Error: Into<HandlerError>,
    S::Future: Send + 'static,
{
    crate::handlers::RequestHandler::Layered(boxed_route(name, stream, service))
}

fn boxed_route<S>(name: &str, stream: bool, service: S) -> Arc<Route>
where
    S: Service<Request, Response = Bytes> + Clone + Send + Sync + 'static,
    S::Error: Into<HandlerError>,
    S::Future: Send + 'static,
{
    Arc::new(Route {
        service: Box::new(Boxed(service)),
        stream,
        fallback: name.is_empty(),
    })
}

/// What a layer added to `handler` wraps.
fn inner_of(handler: &crate::handlers::RequestHandler) -> Inner {
    use crate::handlers::RequestHandler;
    match handler {
        RequestHandler::Buffer(f) => Inner::Buffer(f.clone()),
        RequestHandler::Stream(f) => Inner::Stream(f.clone()),
        RequestHandler::Layered(route) => Inner::Layered(route.service.clone_box()),
        // Another layer goes on top: the counting becomes the service it
        // stands for, so that it stays inside the new layer.
        #[cfg(feature = "metrics")]
        RequestHandler::Metered(metered) => Inner::Layered(Box::new(Boxed(metered.as_service()))),
    }
}
