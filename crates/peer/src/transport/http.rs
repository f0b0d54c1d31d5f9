//! The same [`Handlers`] over plain HTTP (feature `http`), for clients that
//! speak no gotalk: `curl`, `fetch`, any HTTP library.
//!
//! Under a mount path (default `/gotalk/`, the WebSocket endpoint's):
//!
//! | Request | Answer |
//! |---|---|
//! | `POST {mount}call/{operation}`, the payload as body | `200 OK`, the result as body |
//! | … a handler's error result | `422 Unprocessable Content`, the error text |
//! | … one of [`ErrorKind::Unauthenticated`] ([`Authorize`](crate::middleware::Authorize) with no identity) | `401 Unauthorized`, `WWW-Authenticate: Bearer`, the text |
//! | … one of [`ErrorKind::Forbidden`] (`Authorize` refusing the identity) | `403 Forbidden`, the text |
//! | … a retry result | `503 Service Unavailable`, `Retry-After` (seconds, rounded up), the text |
//! | … no handler for the operation | `404 Not Found` |
//! | … a body over [`Config::max_payload`] | `413 Content Too Large` |
//! | … a handler that panicked | `500 Internal Server Error` |
//! | `POST {mount}notify/{name}` | `204 No Content` once the handler has run |
//! | … refused by a layer | the status of the refusal, as for a call |
//!
//! Results of [`Handlers::json`] operations are `application/json`, all
//! others `application/octet-stream`; error texts are `text/plain`. A stream
//! handler's result parts make a chunked response, each part sent as the
//! handler sends it; its request parts are the request body as it arrives
//! (see [`HttpConfig`]). Browsers are held to the WebSocket endpoint's
//! [`OriginPolicy`], with CORS for the origins it admits.
//!
//! A call over HTTP has no connection: its [`Context`] has no peer
//! ([`Context::try_peer`] is `None`), no request ID and no user data; its
//! identity is what [`HttpConfig::identify`] makes of the request's
//! headers. Layers added with [`Handlers::layer`] apply as on connections. The
//! handler runs inside the HTTP request (no task of its own), so a client
//! that goes away cancels it. Handlers count against
//! [`Config::handler_limit`] while they run, as on connections; none of the
//! per-connection limits apply (HTTP/1.1 runs one call at a time per TCP
//! connection).
//!
//! [`router`] gives the routes to merge into an axum app of your own (next
//! to `ws::router`, under the same mount); [`HttpServer`] runs them itself.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, HandlerError, Handlers, http};
//! let handlers = Handlers::new()
//!     .json("add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, HandlerError>(a + b) });
//! let server = http::HttpServer::bind("127.0.0.1:0", handlers, Config::default(), http::HttpConfig::default()).await?;
//! println!("curl -d '[1,2]' {}call/add", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```

use std::{
    fmt, io,
    net::SocketAddr,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
    time::Duration,
};

use axum::{
    Router,
    body::{Body, BodyDataStream},
    extract::{Path, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::post,
};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, Stream, StreamExt, stream};
use gotalk_proto::Text;
use tokio::{
    net::ToSocketAddrs,
    sync::{OwnedSemaphorePermit, mpsc, oneshot},
    task::JoinHandle,
};

use crate::{
    BoxFuture, CloseReason, Config, Context, Error, ErrorKind, HandlerError, Handlers,
    RequestParts, ResultSender, handlers::HandlerCall, middleware::Identity, ws::OriginPolicy,
};

const OCTET_STREAM: &str = "application/octet-stream";
const JSON: &str = "application/json";
const TEXT: &str = "text/plain; charset=utf-8";

/// Settings of the HTTP endpoint.
///
/// A stream handler ([`Handlers::stream`]) called over HTTP gets the request
/// body as its request parts, one part per chunk of the body as it arrives
/// (split to at most [`Config::max_payload`] bytes): HTTP does not keep
/// chunk boundaries (proxies and clients cut bodies as they please), so a
/// handler must not give them a meaning. The body is not limited as a whole,
/// as a stream request is not; every other call's body is limited to
/// [`Config::max_payload`].
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct HttpConfig {
    /// Where the routes are mounted: `{mount}call/{operation}` and
    /// `{mount}notify/{name}`. Must start and end with `/`. Default
    /// `/gotalk/`, the WebSocket endpoint's, so that both can be served side
    /// by side.
    pub mount: String,
    /// Which browser `Origin`s may call, and get CORS headers. Default
    /// [`OriginPolicy::same_origin`], as for the WebSocket endpoint: any
    /// client that sends no `Origin` (curl, programs) and pages of the same
    /// host and port.
    pub origin: OriginPolicy,
    /// Who each call is, from its request headers: the
    /// [`Context::identity`] of its handler and layers (such as
    /// [`Authorize`](crate::middleware::Authorize)). Default: nobody.
    pub identify: Option<Identify>,
}

/// Makes an [`Identity`] of an HTTP request's headers (see
/// [`HttpConfig::identify`]): check a bearer token, a session cookie.
#[derive(Clone)]
pub struct Identify(Arc<IdentifyFn>);

type IdentifyFn = dyn Fn(&HeaderMap) -> Option<Identity> + Send + Sync;

impl fmt::Debug for Identify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Identify(..)")
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            mount: "/gotalk/".to_owned(),
            origin: OriginPolicy::default(),
            identify: None,
        }
    }
}

impl HttpConfig {
    /// Sets [`mount`](Self::mount).
    pub fn mount(mut self, mount: impl Into<String>) -> Self {
        self.mount = mount.into();
        self
    }

    /// Sets [`origin`](Self::origin).
    pub fn origin(mut self, origin: OriginPolicy) -> Self {
        self.origin = origin;
        self
    }

    /// Sets [`identify`](Self::identify).
    ///
    /// ```
    /// use gotalk_peer::{http::HttpConfig, middleware::Identity};
    /// let config = HttpConfig::default().identify(|headers| {
    ///     let token = headers.get("authorization")?.to_str().ok()?;
    ///     (token == "Bearer s3cret").then(|| Identity::new("ops").grant("admin"))
    /// });
    /// # let _ = config;
    /// ```
    pub fn identify<F>(mut self, identify: F) -> Self
    where
        F: Fn(&HeaderMap) -> Option<Identity> + Send + Sync + 'static,
    {
        self.identify = Some(Identify(Arc::new(identify)));
        self
    }
}

/// What every route shares.
struct Endpoint {
    handlers: Handlers,
    config: Arc<Config>,
    origin: OriginPolicy,
    identify: Option<Identify>,
}

/// The routes of the HTTP endpoint, `{mount}call/{operation}` and
/// `{mount}notify/{name}` (`POST`, and `OPTIONS` for CORS preflights), to
/// merge into an axum app of your own, for any router state `S`.
///
/// They merge with the routes of `ws::router` under the same mount: the
/// WebSocket endpoint keeps every other path under it.
///
/// ```no_run
/// # async fn run() -> std::io::Result<()> {
/// use gotalk_peer::{Config, Handlers, HandlerError, Server, http, ws};
/// let handlers = Handlers::new()
///     .buffer("echo", |_ctx, payload| async move { Ok::<_, HandlerError>(payload) });
/// let (listener, ws_routes) = ws::router(ws::WsConfig::default());
/// let http_routes = http::router(handlers.clone(), Config::default(), http::HttpConfig::default());
/// let server = Server::new(listener, handlers, Config::default()).spawn();
/// let app = axum::Router::new().merge(ws_routes).merge(http_routes);
/// let tcp = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
/// let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
/// axum::serve(tcp, app).await
/// # }
/// ```
///
/// # Panics
/// If `http.mount` does not start and end with `/`.
pub fn router<S>(handlers: Handlers, config: impl Into<Arc<Config>>, http: HttpConfig) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mount = &http.mount;
    assert!(
        mount.starts_with('/') && mount.ends_with('/'),
        "HttpConfig::mount must start and end with '/', got {mount:?}"
    );
    let endpoint = Arc::new(Endpoint {
        handlers,
        config: config.into(),
        origin: http.origin.clone(),
        identify: http.identify.clone(),
    });
    Router::new()
        .route(
            &format!("{mount}call/{{*operation}}"),
            post(call).options(preflight),
        )
        .route(
            &format!("{mount}notify/{{*name}}"),
            post(notify).options(preflight),
        )
        .with_state(endpoint)
}

/// `POST {mount}call/{operation}`.
async fn call(
    State(endpoint): State<Arc<Endpoint>>,
    Path(op): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let cors = match endpoint.check_origin(&parts.headers) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let mut response = endpoint.call(op, &parts.headers, body).await;
    cors.apply(&mut response);
    response
}

/// `POST {mount}notify/{name}`.
async fn notify(
    State(endpoint): State<Arc<Endpoint>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let cors = match endpoint.check_origin(&parts.headers) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let mut response = endpoint.notify(name, &parts.headers, body).await;
    cors.apply(&mut response);
    response
}

/// `OPTIONS`: a browser's CORS preflight, for origins the policy admits.
async fn preflight(State(endpoint): State<Arc<Endpoint>>, headers: HeaderMap) -> Response {
    let cors = match endpoint.check_origin(&headers) {
        Ok(cors) => cors,
        Err(refused) => return refused.into_response(),
    };
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    if cors.0.is_some() {
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("content-type"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
    }
    cors.apply(&mut response);
    response
}

/// Why a call was refused before its handler ran.
#[derive(Debug)]
enum Refusal {
    /// A page of an origin the policy does not admit: `403`.
    Origin,
    /// [`Config::handler_limit`] reached: `503`, retry after this.
    Busy(Duration),
    /// The body is over this many bytes: `413`.
    TooLarge(usize),
    /// The body could not be read: `400`.
    Body,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Origin => text(StatusCode::FORBIDDEN, "origin not allowed\n"),
            Self::Busy(wait) => retry_response(wait, Bytes::from_static(b"request rate limit")),
            Self::TooLarge(limit) => text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("payload exceeds the {limit}-byte limit\n"),
            ),
            Self::Body => text(StatusCode::BAD_REQUEST, "cannot read the request body\n"),
        }
    }
}

/// The CORS answer for an admitted request: its `Origin` when it had one.
struct Cors(Option<HeaderValue>);

impl Cors {
    fn apply(self, response: &mut Response) {
        let headers = response.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.0 {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static("retry-after"),
            );
        }
    }
}

impl Endpoint {
    /// The origin policy, as for WebSocket upgrades: `403 Forbidden` for a
    /// page of an origin it does not admit.
    fn check_origin(&self, headers: &HeaderMap) -> Result<Cors, Refusal> {
        let origin = headers.get(header::ORIGIN);
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_text = origin.and_then(|v| v.to_str().ok());
        if origin.is_some() && origin_text.is_none() {
            return Err(Refusal::Origin);
        }
        if !self.origin.allows(origin_text, host) {
            tracing::warn!(
                origin = origin_text.unwrap_or_default(),
                host = host.unwrap_or_default(),
                "HTTP call refused by the origin policy: to let pages from this origin call, \
                 allow it (OriginPolicy::allow; gotalk serve: --ws-allow-origin ORIGIN)"
            );
            return Err(Refusal::Origin);
        }
        Ok(Cors(origin.cloned()))
    }

    /// A place under [`Config::handler_limit`], or the `503` a connection's
    /// caller would get as a retry result.
    fn permit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.config.handler_limit.try_take().ok_or_else(|| {
            crate::runtime_metrics::refused_busy();
            Refusal::Busy(self.config.rate_limit_wait.1)
        })
    }

    async fn call(&self, op: String, headers: &HeaderMap, body: Body) -> Response {
        let Some(handler) = self.handlers.request_handler(&op).cloned() else {
            crate::runtime_metrics::unknown_operation();
            return text(StatusCode::NOT_FOUND, format!("unknown operation {op:?}\n"));
        };
        let permit = match self.permit() {
            Ok(permit) => permit,
            Err(busy) => return busy.into_response(),
        };
        let content_type = if self.handlers.is_json(&op) {
            JSON
        } else {
            OCTET_STREAM
        };
        let name = Text::from(op);
        let ctx = Context::without_peer(name.clone(), self.identity(headers));
        if handler.is_stream() {
            let parts = RequestParts::from_stream(body_parts(
                body.into_data_stream(),
                self.config.max_payload as usize,
            ));
            // One part in the channel: the handler runs at most one part
            // ahead of the client.
            let (tx, rx) = mpsc::channel(1);
            let handler = handler.call_stream(ctx, parts, ResultSender::channel(tx));
            return stream_response(name, handler, rx, permit, content_type).await;
        }
        let payload = match self.read_body(headers, body).await {
            Ok(payload) => payload,
            Err(refused) => return refused.into_response(),
        };
        let outcome = AssertUnwindSafe(handler.call_buffer(ctx, payload))
            .catch_unwind()
            .await;
        drop(permit);
        match outcome {
            Ok(Ok(result)) => bytes_response(StatusCode::OK, content_type, result),
            Ok(Err(e)) => error_response(&e),
            Err(panic) => panicked(&name, &panic),
        }
    }

    /// The caller's identity, by [`HttpConfig::identify`].
    fn identity(&self, headers: &HeaderMap) -> Option<Arc<Identity>> {
        let identify = self.identify.as_ref()?;
        (identify.0)(headers).map(Arc::new)
    }

    async fn notify(&self, name: String, headers: &HeaderMap, body: Body) -> Response {
        let Some(handler) = self.handlers.notification_handler(&name).cloned() else {
            return text(
                StatusCode::NOT_FOUND,
                format!("no handler for notification {name:?}\n"),
            );
        };
        let permit = match self.permit() {
            Ok(permit) => permit,
            Err(busy) => return busy.into_response(),
        };
        let payload = match self.read_body(headers, body).await {
            Ok(payload) => payload,
            Err(refused) => return refused.into_response(),
        };
        let name = Text::from(name);
        let ctx = Context::without_peer(name.clone(), self.identity(headers));
        let outcome = AssertUnwindSafe(handler.call(ctx, payload))
            .catch_unwind()
            .await;
        drop(permit);
        match outcome {
            Ok(Ok(())) => StatusCode::NO_CONTENT.into_response(),
            // A layer refused it (over a connection it would be dropped;
            // here the caller can be told).
            Ok(Err(e)) => error_response(&e),
            Err(panic) => panicked(&name, &panic),
        }
    }

    /// The whole body, up to [`Config::max_payload`] bytes (`413` beyond,
    /// before reading any of it when `Content-Length` says so).
    async fn read_body(&self, headers: &HeaderMap, body: Body) -> Result<Bytes, Refusal> {
        let limit = self.config.max_payload as usize;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(Refusal::TooLarge(limit));
        }
        let mut chunks = body.into_data_stream();
        // One chunk (the usual case for a small body) is kept as it is.
        let mut first: Option<Bytes> = None;
        let mut whole = BytesMut::new();
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                tracing::debug!(error = %e, "HTTP request body failed");
                Refusal::Body
            })?;
            let total = first.as_ref().map_or(0, Bytes::len) + whole.len() + chunk.len();
            if total > limit {
                return Err(Refusal::TooLarge(limit));
            }
            match first.take() {
                None if whole.is_empty() => first = Some(chunk),
                earlier => {
                    if let Some(earlier) = earlier {
                        whole.reserve(declared.map_or(0, |n| n as usize).max(total));
                        whole.extend_from_slice(&earlier);
                    }
                    whole.extend_from_slice(&chunk);
                }
            }
        }
        Ok(first.unwrap_or_else(|| whole.freeze()))
    }
}

/// The request body as request parts of at most `max_part` bytes each.
fn body_parts(
    body: BodyDataStream,
    max_part: usize,
) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
    let max_part = max_part.max(1);
    body.flat_map(move |chunk| {
        let parts: Vec<Result<Bytes, Error>> = match chunk {
            Ok(mut chunk) => {
                let mut parts = Vec::with_capacity(chunk.len().div_ceil(max_part));
                while chunk.len() > max_part {
                    parts.push(Ok(chunk.split_to(max_part)));
                }
                parts.push(Ok(chunk));
                parts
            }
            Err(e) => vec![Err(Error::Closed(CloseReason::Io(Arc::new(
                io::Error::other(e),
            ))))],
        };
        stream::iter(parts)
    })
}

/// What a stream handler's future comes to.
type StreamOutcome = std::thread::Result<Result<(), HandlerError>>;

/// Runs a stream handler until it sends its first part or returns, to pick
/// the status: a handler that fails by then is answered like a buffer
/// handler; from the first part on, the answer is `200` and the parts are
/// sent as they come, the handler running as the response body is read. An
/// error after that can only cut the response short (no final chunk),
/// which HTTP clients report as an incomplete body.
async fn stream_response(
    op: Text<Bytes>,
    handler: HandlerCall<()>,
    mut rx: mpsc::Receiver<Bytes>,
    permit: OwnedSemaphorePermit,
    content_type: &'static str,
) -> Response {
    let mut handler = AssertUnwindSafe(handler).catch_unwind().boxed();
    let (first, outcome) = tokio::select! {
        biased;
        part = rx.recv() => match part {
            Some(part) => (Some(part), None),
            // The handler dropped its sender: its outcome decides.
            None => (None, Some(handler.as_mut().await)),
        },
        // Parts it sent before returning are still in the channel.
        outcome = &mut handler => (rx.try_recv().ok(), Some(outcome)),
    };
    let (first, handler) = match (first, outcome) {
        (None, Some(Ok(Ok(())))) => {
            return bytes_response(StatusCode::OK, content_type, Bytes::new());
        }
        // Failed before the response started: whatever parts it sent, the
        // status can still say so.
        (_, Some(Ok(Err(e)))) => return error_response(&e),
        (_, Some(Err(panic))) => return panicked(&op, &panic),
        (first, None) => (first, Some(handler)),
        (first, Some(outcome)) => {
            let body = ResultBody {
                op,
                first,
                handler: None,
                outcome: Some(outcome),
                rx,
                _permit: permit,
            };
            return chunked(content_type, body);
        }
    };
    let body = ResultBody {
        op,
        first,
        handler,
        outcome: None,
        rx,
        _permit: permit,
    };
    chunked(content_type, body)
}

fn chunked(content_type: &'static str, body: ResultBody) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from_stream(body))
        .expect("static response")
}

/// A stream handler's result parts as a response body, driving the
/// handler as it is read: dropped (the client went away), it cancels it.
struct ResultBody {
    op: Text<Bytes>,
    first: Option<Bytes>,
    handler: Option<BoxFuture<StreamOutcome>>,
    /// The handler's outcome, once it has returned.
    outcome: Option<StreamOutcome>,
    rx: mpsc::Receiver<Bytes>,
    _permit: OwnedSemaphorePermit,
}

/// Why a streamed response was cut short.
#[derive(Debug)]
struct StreamFailed(String);

impl fmt::Display for StreamFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "stream handler failed after its first part: {}", self.0)
    }
}

impl std::error::Error for StreamFailed {}

impl Stream for ResultBody {
    type Item = Result<Bytes, StreamFailed>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(part) = this.first.take() {
            return Poll::Ready(Some(Ok(part)));
        }
        loop {
            match this.rx.poll_recv(cx) {
                Poll::Ready(Some(part)) => return Poll::Ready(Some(Ok(part))),
                // Every sender is gone: the handler has returned (or dropped
                // its sender and runs on).
                Poll::Ready(None) if this.handler.is_none() => {
                    return Poll::Ready(this.outcome.take().and_then(|outcome| {
                        let why = match outcome {
                            Ok(Ok(())) => return None,
                            Ok(Err(e)) => e.message(),
                            Err(panic) => {
                                let what = crate::dispatch::panic_message(&panic);
                                tracing::error!(op = %this.op, panic = %what, "request handler panicked");
                                "handler panicked".to_owned()
                            }
                        };
                        tracing::warn!(op = %this.op, error = %why, "HTTP stream result cut short");
                        Some(Err(StreamFailed(why)))
                    }));
                }
                Poll::Ready(None) | Poll::Pending => {}
            }
            let Some(handler) = this.handler.as_mut() else {
                return Poll::Pending;
            };
            match handler.as_mut().poll(cx) {
                Poll::Ready(outcome) => {
                    this.handler = None;
                    this.outcome = Some(outcome);
                    // Its last parts may be in the channel: look again.
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn text(status: StatusCode, body: impl Into<Body>) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, TEXT)
        .body(body.into())
        .expect("static response")
}

fn bytes_response(status: StatusCode, content_type: &'static str, body: Bytes) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .body(Body::from(body))
        .expect("static response")
}

/// `503` with `Retry-After` for a retry result; for an error result, the
/// status of its [`ErrorKind`]: `401` (with `WWW-Authenticate: Bearer`,
/// which a `401` must carry), `403`, or `422`.
fn error_response(e: &HandlerError) -> Response {
    if let Some(wait) = e.retry_after() {
        return retry_response(wait, e.payload().clone());
    }
    let status = match e.kind() {
        ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    let mut response = bytes_response(status, TEXT, e.payload().clone());
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

fn retry_response(wait: Duration, message: Bytes) -> Response {
    let mut response = bytes_response(StatusCode::SERVICE_UNAVAILABLE, TEXT, message);
    response.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from(retry_after_secs(wait)),
    );
    response
}

/// Whole seconds, rounded up (`Retry-After` has no fractions).
fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
}

fn panicked(op: &Text<Bytes>, panic: &Box<dyn std::any::Any + Send>) -> Response {
    let what = crate::dispatch::panic_message(panic);
    tracing::error!(op = %op, panic = %what, "HTTP handler panicked");
    text(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("internal error: handler for \"{op}\" panicked\n"),
    )
}

/// How long [`HttpServer::shutdown`] waits for calls in flight.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// An HTTP server this crate runs for the endpoint: [`router`] on a TCP
/// listener of its own, with the client's address as connect info.
pub struct HttpServer {
    addr: SocketAddr,
    mount: String,
    /// Taken by [`HttpServer::shutdown`] (or on drop).
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for HttpServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpServer")
            .field("addr", &self.addr)
            .field("mount", &self.mount)
            .finish_non_exhaustive()
    }
}

impl HttpServer {
    /// Binds `addr` and serves `handlers` there over HTTP.
    ///
    /// # Panics
    /// If `http.mount` does not start and end with `/`.
    pub async fn bind(
        addr: impl ToSocketAddrs,
        handlers: Handlers,
        config: impl Into<Arc<Config>>,
        http: HttpConfig,
    ) -> io::Result<Self> {
        let tcp = tokio::net::TcpListener::bind(addr).await?;
        Self::from_tokio(tcp, handlers, config, http)
    }

    /// Serves `handlers` over HTTP on a listener bound elsewhere.
    ///
    /// # Panics
    /// If `http.mount` does not start and end with `/`.
    pub fn from_tokio(
        tcp: tokio::net::TcpListener,
        handlers: Handlers,
        config: impl Into<Arc<Config>>,
        http: HttpConfig,
    ) -> io::Result<Self> {
        use axum::serve::ListenerExt;
        let addr = tcp.local_addr()?;
        let mount = http.mount.clone();
        let app = router::<()>(handlers, config, http)
            .into_make_service_with_connect_info::<SocketAddr>();
        let tcp = tcp.tap_io(|s: &mut tokio::net::TcpStream| {
            // Not fatal: only latency suffers without it.
            let _ = s.set_nodelay(true);
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let served = axum::serve(tcp, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "HTTP server stopped");
            }
        });
        Ok(Self {
            addr,
            mount,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The endpoint's URL, `http://ADDR{mount}`: calls go to
    /// `{url}call/{operation}`.
    pub fn url(&self) -> String {
        format!("http://{}{}", self.addr, self.mount)
    }

    /// Stops accepting, lets calls in flight finish (up to 5 s, then they
    /// are cancelled) and releases the address.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err()
        {
            tracing::warn!("HTTP server did not stop in time; aborting it");
            task.abort();
        }
    }
}

impl Drop for HttpServer {
    /// Stops accepting; calls in flight finish on their own.
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::ZERO), 0);
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_secs(2)), 2);
        assert_eq!(retry_after_secs(Duration::from_millis(2001)), 3);
    }
}
