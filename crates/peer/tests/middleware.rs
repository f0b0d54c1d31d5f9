//! Handlers wrapped in tower layers: on every operation or one, tower's
//! own (timeout, concurrency limit, load shed) with `poll_ready` honoured,
//! authorization from the connection's identity, a tracing span per
//! request, metrics (feature `metrics`), inline completion costing no task,
//! and the same layers over HTTP (feature `http`).

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use common::{Transport, WAIT, connect, quiet, within};
use futures::StreamExt;
use gotalk_peer::{
    Error, HandlerError, Handlers,
    middleware::{Authorize, Identity, TraceLayer},
};
use tower::ServiceBuilder;

/// Sets the process's metrics recorder before any connection of this test
/// binary counts anything (the runtime registers its handles once).
fn init() {
    #[cfg(feature = "metrics")]
    recorder::snapshotter();
}

fn remote_text(result: Result<Bytes, Error>) -> String {
    match result {
        Err(Error::Remote(e)) => String::from_utf8_lossy(e.payload()).into_owned(),
        other => panic!("expected an error result, got {other:?}"),
    }
}

fn echo(
    _ctx: gotalk_peer::Context,
    p: Bytes,
) -> futures::future::Ready<Result<Bytes, HandlerError>> {
    futures::future::ready(Ok(p))
}

/// Appends `suffix` to every response of the operations it wraps.
fn suffix(suffix: &'static str) -> tower::util::MapResponseLayer<impl Fn(Bytes) -> Bytes + Clone> {
    tower::util::MapResponseLayer::new(move |b: Bytes| {
        let mut v = b.to_vec();
        v.extend_from_slice(suffix.as_bytes());
        Bytes::from(v)
    })
}

#[tokio::test]
async fn layer_wraps_every_operation_so_far_and_layer_for_one() {
    init();
    let streamed = Arc::new(AtomicUsize::new(0));
    let counted = streamed.clone();
    let server = Handlers::new()
        .buffer("a", echo)
        .buffer("b", echo)
        .json(
            "j",
            |_ctx, n: i64| async move { Ok::<_, HandlerError>(n + 1) },
        )
        .stream("s", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .layer_for("a", suffix("+a"))
        .layer(suffix("+all"))
        // Counts stream calls going through the layer.
        .layer_for(
            "s",
            tower::util::MapRequestLayer::new(move |req: gotalk_peer::middleware::Request| {
                assert!(req.is_stream() && req.payload().is_none());
                counted.fetch_add(1, Ordering::SeqCst);
                req
            }),
        )
        .buffer("late", echo);
    let conn = connect(Transport::Memory, Handlers::new(), server, quiet(), quiet()).await;
    let c = &conn.client;
    // Inner layer first, then the outer one.
    assert_eq!(c.request("a", "x").await.unwrap(), "x+a+all");
    assert_eq!(c.request("b", "x").await.unwrap(), "x+all");
    assert_eq!(c.request("j", "41").await.unwrap(), "42+all");
    // Registered after `layer`: not wrapped.
    assert_eq!(c.request("late", "x").await.unwrap(), "x");
    // A stream operation: its results are the handler's, the layers ran.
    let (mut parts, results) = c.stream_request("s").await.unwrap();
    parts.send("p1").await.unwrap();
    parts.end().await.unwrap();
    assert_eq!(results.collect_bytes(1024).await.unwrap(), "p1");
    // And a single request to it, as a one-part stream.
    assert_eq!(c.request("s", "one").await.unwrap(), "one");
    assert_eq!(streamed.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn tower_timeout_answers_with_an_error_result() {
    init();
    let server = Handlers::new()
        .buffer("slow", |_ctx, _p: Bytes| async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok::<_, HandlerError>("late")
        })
        .buffer("fast", echo)
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)));
    let conn = connect(Transport::Memory, Handlers::new(), server, quiet(), quiet()).await;
    let started = tokio::time::Instant::now();
    let text = remote_text(conn.client.request("slow", "").await);
    assert_eq!(text, "request timed out");
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(conn.client.request("fast", "ok").await.unwrap(), "ok");
}

/// Four requests at once through a concurrency limit of one: the handler
/// never runs twice at a time, and all four are answered.
#[tokio::test(start_paused = true)]
async fn tower_concurrency_limit_is_honoured() {
    init();
    let running = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (r, m) = (running.clone(), most.clone());
    let server = Handlers::new()
        .buffer("work", move |_ctx, p: Bytes| {
            let (r, m) = (r.clone(), m.clone());
            async move {
                let now = r.fetch_add(1, Ordering::SeqCst) + 1;
                m.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                r.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, HandlerError>(p)
            }
        })
        .layer(tower::limit::ConcurrencyLimitLayer::new(1));
    let conn = connect(Transport::Memory, Handlers::new(), server, quiet(), quiet()).await;
    let calls = (0..4).map(|i| conn.client.request("work", format!("{i}")));
    let answers = futures::future::join_all(calls).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), format!("{i}"));
    }
    assert_eq!(most.load(Ordering::SeqCst), 1);
}

/// Load shedding in front of a concurrency limit: `poll_ready` says the
/// limit is reached, and the request is shed at once instead of waiting
/// (or going around the limit).
#[tokio::test(start_paused = true)]
async fn load_shed_sees_the_limit_through_poll_ready() {
    init();
    let release = Arc::new(tokio::sync::Notify::new());
    let entered = Arc::new(tokio::sync::Notify::new());
    let (rel, ent) = (release.clone(), entered.clone());
    let server = Handlers::new()
        .buffer("hold", move |_ctx, _p: Bytes| {
            let (rel, ent) = (rel.clone(), ent.clone());
            async move {
                ent.notify_one();
                rel.notified().await;
                Ok::<_, HandlerError>("done")
            }
        })
        .layer(
            ServiceBuilder::new()
                .load_shed()
                .concurrency_limit(1)
                .into_inner(),
        );
    let conn = connect(Transport::Memory, Handlers::new(), server, quiet(), quiet()).await;
    let client = conn.client.clone();
    let first = tokio::spawn(async move { client.request("hold", "").await });
    within(WAIT, "first call in its handler", entered.notified()).await;
    let shed = remote_text(conn.client.request("hold", "").await);
    assert_eq!(shed, "service overloaded");
    release.notify_one();
    assert_eq!(first.await.unwrap().unwrap(), "done");
}

/// A layer may refuse with a retry result, and it stays one through
/// tower's boxed errors (here a timeout layer's, outside it).
#[tokio::test]
async fn retry_result_survives_tower_boxed_errors() {
    init();
    let server = Handlers::new()
        .buffer("x", echo)
        .layer(Authorize::check(|_, _| {
            Err(HandlerError::retry(Duration::from_millis(5), "later"))
        }))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(5)));
    let conn = connect(Transport::Memory, Handlers::new(), server, quiet(), quiet()).await;
    let once = gotalk_peer::RequestOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    match conn.client.request_with("x", "", once).await {
        Err(Error::RetryExhausted { message, .. }) => assert_eq!(message, "later"),
        other => panic!("expected a retry result, got {other:?}"),
    }
}

fn login_handlers(called: Arc<AtomicUsize>) -> Handlers {
    Handlers::new()
        .buffer("purge", move |_ctx, _p: Bytes| {
            called.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, HandlerError>("purged") }
        })
        .buffer(
            "whoami",
            |ctx: gotalk_peer::Context, _p: Bytes| async move {
                let who = ctx.identity().map(|i| i.subject().to_owned());
                Ok::<_, HandlerError>(who.unwrap_or_default())
            },
        )
        .buffer("login", |ctx: gotalk_peer::Context, p: Bytes| async move {
            let text = String::from_utf8_lossy(&p).into_owned();
            let (user, grants) = text.split_once(' ').unwrap_or((&text, ""));
            let identity = Identity::new(user).grants_from(grants.split_whitespace());
            ctx.peer().set_identity(identity);
            Ok::<_, HandlerError>("ok")
        })
        .stream("tail", |_ctx, _parts, mut out| async move {
            out.send("line").await?;
            Ok::<_, HandlerError>(())
        })
        .layer_for("purge", Authorize::grant("admin"))
        .layer_for("tail", Authorize::authenticated())
}

#[tokio::test]
async fn authorize_reads_the_connection_identity() {
    init();
    let called = Arc::new(AtomicUsize::new(0));
    let server = login_handlers(called.clone());
    let conn = connect(Transport::Tcp, Handlers::new(), server, quiet(), quiet()).await;
    let c = &conn.client;
    assert_eq!(
        remote_text(c.request("purge", "").await),
        "unauthenticated: operation \"purge\" needs an identity"
    );
    let (_w, results) = c.stream_request("tail").await.unwrap();
    match results.collect_bytes(1024).await {
        Err(Error::Remote(e)) => assert_eq!(
            e.payload(),
            "unauthenticated: operation \"tail\" needs an identity"
        ),
        other => panic!("{other:?}"),
    }
    c.request("login", "bob reader").await.unwrap();
    assert_eq!(c.request("whoami", "").await.unwrap(), "bob");
    assert_eq!(
        remote_text(c.request("purge", "").await),
        "forbidden: operation \"purge\" needs the grant \"admin\""
    );
    assert_eq!(
        called.load(Ordering::SeqCst),
        0,
        "refused before the handler"
    );
    let (w, results) = c.stream_request("tail").await.unwrap();
    w.end().await.unwrap();
    assert_eq!(results.collect_bytes(1024).await.unwrap(), "line");
    c.request("login", "alice admin").await.unwrap();
    assert_eq!(c.request("purge", "").await.unwrap(), "purged");
    assert_eq!(called.load(Ordering::SeqCst), 1);
    assert_eq!(conn.server.identity().unwrap().subject(), "alice");
}

/// A layer that adds `suffix` to every payload it sees.
fn payload_suffix(
    suffix: &'static str,
) -> tower::util::MapRequestLayer<
    impl Fn(gotalk_peer::middleware::Request) -> gotalk_peer::middleware::Request + Clone,
> {
    tower::util::MapRequestLayer::new(move |mut req: gotalk_peer::middleware::Request| {
        if let Some(p) = req.payload_mut() {
            *p = Bytes::from([&p[..], suffix.as_bytes()].concat());
        }
        req
    })
}

/// `login_handlers` and a notification `announce` for admins, whose
/// payloads go to `heard`; every handler under a layer adding `!` to
/// payloads.
fn announce_handlers(heard: tokio::sync::mpsc::UnboundedSender<Bytes>) -> Handlers {
    login_handlers(Arc::new(AtomicUsize::new(0)))
        .notification("announce", move |_ctx, p| {
            let _ = heard.send(p);
            async {}
        })
        .layer_for_notification("announce", Authorize::grant("admin"))
        .layer(payload_suffix("!"))
}

/// Notifications go through layers too: `layer` wraps them, and one that a
/// layer refuses is dropped before its handler.
#[tokio::test]
async fn layers_wrap_notifications() {
    init();
    let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
    let conn = connect(
        Transport::Tcp,
        Handlers::new(),
        announce_handlers(tx),
        quiet(),
        quiet(),
    )
    .await;
    let c = &conn.client;
    c.notify("announce", "unauthenticated").await.unwrap();
    c.request("login", "bob reader").await.unwrap();
    c.notify("announce", "forbidden").await.unwrap();
    // The `!` lands on the last grant.
    c.request("login", "alice admin more").await.unwrap();
    c.notify("announce", "allowed").await.unwrap();
    let first = within(WAIT, "the allowed notification", heard.recv()).await;
    assert_eq!(first.unwrap(), "allowed!");
    // The refused ones came first on the connection and were dropped.
    assert!(heard.try_recv().is_err());
}

/// With `inline_handlers`, a layered operation that finishes without
/// waiting runs on the connection's own task: no task per request. One
/// whose layer waits moves to a task of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn layers_that_do_not_wait_cost_no_task() {
    init();
    fn task_id(
        _ctx: gotalk_peer::Context,
        _p: Bytes,
    ) -> futures::future::Ready<Result<String, HandlerError>> {
        let id = tokio::task::try_id()
            .map(|id| id.to_string())
            .unwrap_or_default();
        futures::future::ready(Ok(id))
    }
    let server = Handlers::new()
        .buffer("plain", task_id)
        .buffer("layered", task_id)
        .buffer("waits", task_id)
        .layer_for("layered", TraceLayer::new())
        .layer_for("layered", Authorize::check(|_, _| Ok(())))
        .layer_for("layered", tower::limit::ConcurrencyLimitLayer::new(8))
        .layer_for(
            "layered",
            tower::timeout::TimeoutLayer::new(Duration::from_secs(5)),
        )
        // A layer that waits once before calling the handler.
        .layer_for(
            "waits",
            tower::filter::AsyncFilterLayer::new(|req| async move {
                tokio::task::yield_now().await;
                Ok::<_, HandlerError>(req)
            }),
        );
    #[cfg(feature = "metrics")]
    let server = server.layer_for("layered", gotalk_peer::middleware::MetricsLayer::new());
    let conn = connect(Transport::Tcp, Handlers::new(), server, quiet(), quiet()).await;
    let c = &conn.client;
    let plain = c.request("plain", "").await.unwrap();
    assert!(!plain.is_empty(), "handlers run in a task");
    for _ in 0..5 {
        assert_eq!(
            c.request("layered", "").await.unwrap(),
            plain,
            "on the connection's task"
        );
    }
    // The layer waited before the handler ran: the request was spawned,
    // and the handler ran in that task.
    let waited = c.request("waits", "").await.unwrap();
    assert_ne!(waited, plain, "spawned once a layer waits");
}

/// Spans named `gotalk.request` and their fields, as a subscriber sees them.
#[derive(Clone, Default)]
struct SpanLog(Arc<Mutex<HashMap<u64, HashMap<&'static str, String>>>>);

struct Fields<'a>(&'a mut HashMap<&'static str, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name(), value.to_owned());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name(), format!("{value:?}"));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for SpanLog {
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if attrs.metadata().name() == "gotalk.request" {
            let mut fields = HashMap::new();
            attrs.record(&mut Fields(&mut fields));
            self.0.lock().unwrap().insert(id.into_u64(), fields);
        }
    }
    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(fields) = self.0.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut Fields(fields));
        }
    }
}

#[tokio::test]
async fn trace_layer_records_a_span_per_request() {
    use tracing_subscriber::layer::SubscriberExt;
    init();
    let log = SpanLog::default();
    let subscriber = tracing_subscriber::registry().with(log.clone());
    // The current-thread runtime runs the connection's tasks on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);
    let server = Handlers::new()
        .buffer("echo", echo)
        .buffer("fail", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::new("no"))
        })
        .buffer("busy", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::retry(Duration::from_millis(1), "busy"))
        })
        .layer(TraceLayer::new());
    let conn = connect(Transport::Tcp, Handlers::new(), server, quiet(), quiet()).await;
    conn.client.request("echo", "hi").await.unwrap();
    conn.client.request("fail", "").await.unwrap_err();
    let once = gotalk_peer::RequestOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    conn.client
        .request_with("busy", "", once)
        .await
        .unwrap_err();
    let client_addr = conn
        .server
        .remote_addr()
        .expect("TCP has an address")
        .to_owned();
    let spans: Vec<_> = log.0.lock().unwrap().values().cloned().collect();
    assert_eq!(spans.len(), 3, "{spans:?}");
    for (op, outcome) in [("echo", "ok"), ("fail", "error"), ("busy", "retry")] {
        let span = spans
            .iter()
            .find(|s| s.get("operation").map(String::as_str) == Some(op))
            .unwrap_or_else(|| panic!("no span for {op}: {spans:?}"));
        assert_eq!(span["outcome"], outcome, "{span:?}");
        assert_eq!(span["peer"], client_addr, "{span:?}");
        assert_eq!(span["connection"], "1", "{span:?}");
        assert!(!span["request_id"].is_empty(), "{span:?}");
        let us: u64 = span["duration_us"].parse().unwrap();
        assert!(us < WAIT.as_micros() as u64, "{span:?}");
    }
}

#[cfg(feature = "http")]
mod over_http {
    use super::*;
    use gotalk_peer::{
        Config,
        http::{HttpConfig, HttpServer},
    };
    use http_body_util::{BodyExt, Full};
    use hyper::{Request, StatusCode};
    use hyper_util::{client::legacy::Client, rt::TokioExecutor};

    async fn post(url: String, token: Option<&str>) -> (StatusCode, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let mut req = Request::post(url);
        if let Some(token) = token {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = within(
            WAIT,
            "HTTP call",
            client.request(req.body(Full::new(Bytes::new())).unwrap()),
        )
        .await
        .unwrap();
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            // A 401 must say how to authenticate.
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// The same layers, and an identity from the request's headers.
    #[tokio::test]
    async fn layers_apply_over_http() {
        init();
        let called = Arc::new(AtomicUsize::new(0));
        let handlers = login_handlers(called.clone()).layer(suffix("!"));
        let http = HttpConfig::default().identify(|headers| {
            let token = headers.get("authorization")?.to_str().ok()?;
            match token {
                "Bearer root" => Some(Identity::new("root").grant("admin")),
                "Bearer guest" => Some(Identity::new("guest")),
                _ => None,
            }
        });
        let server = HttpServer::bind("127.0.0.1:0", handlers, Config::default(), http)
            .await
            .unwrap();
        let url = |op: &str| format!("{}call/{op}", server.url());
        let (status, body) = post(url("purge"), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            body,
            "unauthenticated: operation \"purge\" needs an identity"
        );
        let (status, body) = post(url("purge"), Some("guest")).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(
            body,
            "forbidden: operation \"purge\" needs the grant \"admin\""
        );
        assert_eq!(called.load(Ordering::SeqCst), 0);
        assert_eq!(
            post(url("purge"), Some("root")).await,
            (StatusCode::OK, "purged!".to_owned())
        );
        assert_eq!(
            post(url("whoami"), Some("guest")).await,
            (StatusCode::OK, "guest!".to_owned())
        );
        // A stream operation goes through its layers too.
        let (status, body) = post(url("tail"), None).await;
        assert_eq!(
            (status, body.as_str()),
            (
                StatusCode::UNAUTHORIZED,
                "unauthenticated: operation \"tail\" needs an identity"
            )
        );
        assert_eq!(
            post(url("tail"), Some("guest")).await,
            (StatusCode::OK, "line".to_owned())
        );
        server.shutdown().await;
    }

    /// A notification refused by a layer gets the refusal's status.
    #[tokio::test]
    async fn refused_notifications_over_http() {
        init();
        let (tx, mut heard) = tokio::sync::mpsc::unbounded_channel();
        let http = HttpConfig::default().identify(|headers| {
            match headers.get("authorization")?.to_str().ok()? {
                "Bearer root" => Some(Identity::new("root").grant("admin")),
                "Bearer guest" => Some(Identity::new("guest")),
                _ => None,
            }
        });
        let server = HttpServer::bind(
            "127.0.0.1:0",
            announce_handlers(tx),
            Config::default(),
            http,
        )
        .await
        .unwrap();
        let url = format!("{}notify/announce", server.url());
        assert_eq!(post(url.clone(), None).await.0, StatusCode::UNAUTHORIZED);
        assert_eq!(
            post(url.clone(), Some("guest")).await.0,
            StatusCode::FORBIDDEN
        );
        assert_eq!(post(url, Some("root")).await.0, StatusCode::NO_CONTENT);
        assert_eq!(
            heard.recv().await.unwrap(),
            "!",
            "the empty body, through the layer"
        );
        assert!(heard.try_recv().is_err());
        server.shutdown().await;
    }
}

#[cfg(feature = "metrics")]
mod recorder {
    use std::sync::OnceLock;

    use metrics_util::{
        CompositeKey, MetricKind,
        debugging::{DebugValue, DebuggingRecorder, Snapshotter},
    };

    /// The process's recorder, installed at the first call.
    pub(crate) fn snapshotter() -> &'static Snapshotter {
        static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
        SNAPSHOTTER.get_or_init(|| {
            let recorder = DebuggingRecorder::new();
            let snapshotter = recorder.snapshotter();
            metrics::set_global_recorder(recorder).expect("the only recorder of this test binary");
            snapshotter
        })
    }

    pub(crate) struct Snapshot(Vec<(CompositeKey, DebugValue)>);

    impl Snapshot {
        /// Drains the recorder (counters and gauges read as what changed
        /// since the last snapshot): only one test takes them.
        pub(crate) fn take() -> Self {
            Self(
                snapshotter()
                    .snapshot()
                    .into_vec()
                    .into_iter()
                    .map(|(k, _, _, v)| (k, v))
                    .collect(),
            )
        }

        fn find(
            &self,
            kind: MetricKind,
            name: &str,
            labels: &[(&str, &str)],
        ) -> Option<&DebugValue> {
            self.0.iter().find_map(|(k, v)| {
                let key = k.key();
                let same_labels = key.labels().count() == labels.len()
                    && labels
                        .iter()
                        .all(|(n, want)| key.labels().any(|l| l.key() == *n && l.value() == *want));
                (k.kind() == kind && key.name() == name && same_labels).then_some(v)
            })
        }

        pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
            match self.find(MetricKind::Counter, name, labels) {
                Some(DebugValue::Counter(n)) => *n,
                _ => 0,
            }
        }

        pub(crate) fn gauge(&self, name: &str) -> f64 {
            match self.find(MetricKind::Gauge, name, &[]) {
                Some(DebugValue::Gauge(g)) => g.into_inner(),
                _ => 0.0,
            }
        }

        pub(crate) fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
            match self.find(MetricKind::Histogram, name, labels) {
                Some(DebugValue::Histogram(v)) => v.iter().map(|f| f.into_inner()).collect(),
                _ => Vec::new(),
            }
        }
    }
}

/// The metrics layer's per-operation figures and the runtime's own, read
/// back through a recorder. Runtime counters are process-wide and other
/// tests of this binary run at the same time: they are checked for at least
/// what this test did. Taking a snapshot drains the recorder, so this is
/// the only test that takes one.
#[cfg(feature = "metrics")]
#[tokio::test]
async fn metrics_are_recorded() {
    use gotalk_peer::middleware::MetricsLayer;
    use recorder::Snapshot;
    init();
    let noted = Arc::new(tokio::sync::Notify::new());
    let n = noted.clone();
    let server = Handlers::new()
        .buffer("m-ok", echo)
        .buffer("m-fail", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::new("no"))
        })
        .buffer("m-retry", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::retry(Duration::from_millis(1), "busy"))
        })
        // Waits: spawned, and timed to its end.
        .buffer("m-slow", |_ctx, p: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            Ok::<_, HandlerError>(p)
        })
        .stream("m-stream", |_ctx, _parts, _out| async move {
            Ok::<_, HandlerError>(())
        })
        .notification("m-note", move |_ctx, _p| {
            let n = n.clone();
            async move { n.notify_one() }
        })
        .layer(MetricsLayer::new())
        // Where the counting sits among other layers: inside a refusing
        // layer (never reached), outside it (the refusal counted), twice
        // (counted twice, as two layers would).
        .buffer("m-inner", echo)
        .layer_for("m-inner", MetricsLayer::new())
        .layer_for("m-inner", Authorize::grant("nobody-has-it"))
        .buffer("m-outer", echo)
        .layer_for("m-outer", Authorize::grant("nobody-has-it"))
        .layer_for("m-outer", MetricsLayer::new())
        .buffer("m-twice", echo)
        .layer_for("m-twice", MetricsLayer::new())
        .layer_for("m-twice", MetricsLayer::new());
    let conn = connect(Transport::Tcp, Handlers::new(), server, quiet(), quiet()).await;
    let c = &conn.client;
    for _ in 0..3 {
        c.request("m-ok", "12345").await.unwrap();
    }
    c.request("m-inner", "").await.unwrap_err();
    c.request("m-outer", "").await.unwrap_err();
    c.request("m-twice", "").await.unwrap();
    c.request("m-fail", "").await.unwrap_err();
    c.request("m-slow", "").await.unwrap();
    let once = gotalk_peer::RequestOptions {
        max_attempts: Some(1),
        ..Default::default()
    };
    c.request_with("m-retry", "", once).await.unwrap_err();
    c.request("m-unknown", "").await.unwrap_err();
    let (w, results) = c.stream_request("m-stream").await.unwrap();
    w.end().await.unwrap();
    results.collect_bytes(16).await.unwrap();
    c.notify("m-note", "").await.unwrap();
    within(WAIT, "notification handled", noted.notified()).await;
    // A peer that breaks the protocol: ProtocolError 2 (invalid message).
    let addr = conn.handle.as_ref().unwrap().local_addr().to_string();
    let mut raw = common::Raw::tcp_handshaken(addr.as_str()).await;
    raw.send_bytes(b"?garbage").await;
    raw.expect_protocol_error_then_eof(2).await;

    let after = Snapshot::take();
    let requests = |op: &str, outcome: &str| {
        after.counter(
            "gotalk_requests_total",
            &[("operation", op), ("outcome", outcome)],
        )
    };
    assert_eq!(requests("m-ok", "ok"), 3);
    assert_eq!(requests("m-fail", "error"), 1);
    assert_eq!(requests("m-retry", "retry"), 1);
    assert_eq!(requests("m-ok", "error"), 0);
    assert_eq!(requests("m-stream", "ok"), 1);
    assert_eq!(requests("m-inner", "error") + requests("m-inner", "ok"), 0);
    assert_eq!(requests("m-outer", "error"), 1);
    assert_eq!(requests("m-twice", "ok"), 2);
    // Inline answers: timed from their dispatch round's start to its end.
    let inline = after.histogram("gotalk_request_duration_seconds", &[("operation", "m-ok")]);
    assert_eq!(inline.len(), 3);
    assert!(
        inline.iter().all(|&s| (0.0..1.0).contains(&s)),
        "{inline:?}"
    );
    let slow = after.histogram(
        "gotalk_request_duration_seconds",
        &[("operation", "m-slow")],
    );
    assert_eq!(slow.len(), 1);
    assert!((0.03..5.0).contains(&slow[0]), "{slow:?}");
    let grew = |name: &str, labels: &[(&str, &str)]| after.counter(name, labels);
    assert!(grew("gotalk_requests_total", &[("outcome", "unknown")]) >= 1);
    assert!(grew("gotalk_stream_requests_total", &[]) >= 1);
    assert!(grew("gotalk_notifications_received_total", &[]) >= 1);
    assert!(grew("gotalk_connections_accepted_total", &[]) >= 2);
    assert!(grew("gotalk_protocol_violations_total", &[("code", "2")]) >= 1);
    // Both ends of the connection count: at least the three echoed payloads
    // in and out.
    assert!(grew("gotalk_bytes_received_total", &[]) >= 30);
    assert!(grew("gotalk_bytes_sent_total", &[]) >= 30);
    assert!(
        after.gauge("gotalk_connections_open") >= 2.0,
        "client and server side"
    );
    drop(conn);
}
