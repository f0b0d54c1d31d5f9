//! The HTTP endpoint (feature `http`) with a real HTTP/1.1 client (hyper)
//! over loopback: every status, chunked streaming results part by part,
//! limits, panics, notifications, the origin policy, many calls at once,
//! and the routes merged with the WebSocket endpoint's in one axum app.
#![cfg(feature = "http")]

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{
    Config, HandlerError, HandlerLimit, Handlers, Server,
    http::{self, HttpConfig, HttpServer},
    ws::{self, OriginPolicy},
};
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response, StatusCode, body::Incoming};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::sync::{Notify, mpsc};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

fn handlers(notes: mpsc::UnboundedSender<Bytes>, release: Arc<Notify>) -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .json("add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HandlerError>(a + b)
        })
        .buffer("fail", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::new("no such user"))
        })
        .buffer("busy", |_ctx, _p: Bytes| async move {
            Err::<Bytes, _>(HandlerError::retry(Duration::from_millis(1500), "busy"))
        })
        .buffer("panic", |_ctx, _p: Bytes| async move {
            if true {
                panic!("boom");
            }
            Ok::<Bytes, HandlerError>(Bytes::new())
        })
        .buffer("needs-peer", |ctx, _p: Bytes| async move {
            // Over HTTP there is no connection: `peer()` panics (500).
            let _ = ctx.peer();
            Ok::<Bytes, HandlerError>(Bytes::new())
        })
        .buffer("has-peer", |ctx, _p: Bytes| async move {
            let answer: &'static [u8] = if ctx.try_peer().is_some() {
                b"yes"
            } else {
                b"no"
            };
            Ok::<_, HandlerError>(answer)
        })
        .buffer("slow", |_ctx, p: Bytes| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok::<_, HandlerError>(p)
        })
        // Sends "one", then waits for the test before "two".
        .stream("parts", move |_ctx, _parts, mut results| {
            let release = release.clone();
            async move {
                results.send("one").await?;
                release.notified().await;
                results.send("two").await?;
                Ok::<_, HandlerError>(())
            }
        })
        .stream("upper", |_ctx, mut parts, mut results| async move {
            while let Some(part) = parts.next().await {
                results.send(part?.to_ascii_uppercase()).await?;
            }
            Ok::<_, HandlerError>(())
        })
        .stream("stream-fails-first", |_ctx, _parts, _results| async move {
            Err::<(), _>(HandlerError::new("nothing to stream"))
        })
        .stream(
            "stream-fails-at-once",
            |_ctx, _parts, mut results| async move {
                results.send("lost").await?;
                Err::<(), _>(HandlerError::new("failed at once"))
            },
        )
        .stream(
            "stream-fails-later",
            |_ctx, _parts, mut results| async move {
                results.send("partial").await?;
                // Long enough for the response to have started.
                tokio::time::sleep(Duration::from_millis(50)).await;
                Err::<(), _>(HandlerError::new("broke off"))
            },
        )
        .notification("note", move |_ctx, p| {
            let notes = notes.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let _ = notes.send(p);
            }
        })
}

struct Fixture {
    server: HttpServer,
    client: HttpClient,
    notes: mpsc::UnboundedReceiver<Bytes>,
    release: Arc<Notify>,
}

async fn start(config: Config) -> Fixture {
    let (tx, notes) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = HttpServer::bind(
        "127.0.0.1:0",
        handlers(tx, release.clone()),
        config,
        HttpConfig::default(),
    )
    .await
    .expect("bind");
    Fixture {
        server,
        client: client(),
        notes,
        release,
    }
}

impl Fixture {
    async fn post(&self, path: &str, body: impl Into<Bytes>) -> Response<Incoming> {
        let request = Request::post(format!("{}{path}", self.server.url()))
            .body(Full::new(body.into()))
            .expect("request");
        self.client.request(request).await.expect("response")
    }
}

/// Status, a header and the whole body.
async fn read(response: Response<Incoming>, header: &str) -> (StatusCode, Option<String>, Bytes) {
    let status = response.status();
    let value = response
        .headers()
        .get(header)
        .map(|v| v.to_str().expect("ascii").to_owned());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (status, value, body)
}

#[tokio::test]
async fn results_and_statuses() {
    let f = start(Config::default()).await;

    let (status, ct, body) = read(f.post("call/echo", "hello").await, "content-type").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/octet-stream"));
    assert_eq!(body, "hello");

    let (status, ct, body) = read(f.post("call/add", "[2,3]").await, "content-type").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(ct.as_deref(), Some("application/json"));
    assert_eq!(body, "5");

    // Invalid JSON input is the handler's error result.
    let (status, _, body) = read(f.post("call/add", "[2").await, "content-type").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(body.starts_with(b"invalid input"), "{body:?}");

    let (status, ct, body) = read(f.post("call/fail", "").await, "content-type").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(ct.as_deref(), Some("text/plain; charset=utf-8"));
    assert_eq!(body, "no such user");

    // 1.5 s rounds up to 2.
    let (status, retry_after, body) = read(f.post("call/busy", "").await, "retry-after").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(body, "busy");

    let (status, _, body) = read(f.post("call/nope", "").await, "content-type").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body, "unknown operation \"nope\"\n");

    let (status, _, body) = read(f.post("call/panic", "").await, "content-type").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(body, "internal error: handler for \"panic\" panicked\n");

    // No connection behind an HTTP call.
    let (_, _, body) = read(f.post("call/has-peer", "").await, "content-type").await;
    assert_eq!(body, "no");
    let (status, _, _) = read(f.post("call/needs-peer", "").await, "content-type").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);

    // Only POST (and OPTIONS) are routed.
    let get = Request::get(format!("{}call/echo", f.server.url()))
        .body(Full::default())
        .expect("request");
    let response = f.client.request(get).await.expect("response");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);

    // The server still answers after the panics.
    let (status, _, body) = read(f.post("call/echo", "still here").await, "content-type").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("still here")));
    f.server.shutdown().await;
}

#[tokio::test]
async fn notification_runs_its_handler_before_204() {
    let mut f = start(Config::default()).await;
    let (status, _, body) = read(f.post("notify/note", "hi").await, "content-type").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(body.is_empty());
    // The handler has run by the time the answer came.
    assert_eq!(f.notes.try_recv().expect("handler ran"), "hi");

    let (status, _, _) = read(f.post("notify/unheard", "hi").await, "content-type").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    f.server.shutdown().await;
}

#[tokio::test]
async fn max_payload_is_413() {
    let config = Config {
        max_payload: 1024,
        ..Config::default()
    };
    let f = start(config).await;
    let (status, _, _) = read(f.post("call/echo", vec![b'x'; 1024]).await, "content-type").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, body) = read(f.post("call/echo", vec![b'x'; 1025]).await, "content-type").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(body, "payload exceeds the 1024-byte limit\n");
    let (status, _, _) = read(
        f.post("notify/note", vec![b'x'; 4096]).await,
        "content-type",
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);

    // Without Content-Length too: a chunked body is counted as it comes.
    let (tx, rx) = mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(4);
    let body = http_body_util::StreamBody::new(tokio_stream_from(rx));
    let chunked_client = Client::builder(TokioExecutor::new()).build_http();
    let request = Request::post(format!("{}call/echo", f.server.url()))
        .body(body)
        .expect("request");
    let sending = tokio::spawn(async move {
        for _ in 0..3 {
            let frame = hyper::body::Frame::data(Bytes::from(vec![b'y'; 600]));
            if tx.send(Ok(frame)).await.is_err() {
                break;
            }
        }
    });
    let response = chunked_client.request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    sending.await.expect("sender");
    f.server.shutdown().await;
}

/// An mpsc receiver as a `Stream`.
fn tokio_stream_from<T: Send + 'static>(
    mut rx: mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + Unpin + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn stream_result_is_chunked_part_by_part() {
    let f = start(Config::default()).await;
    let response = f.post("call/parts", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("transfer-encoding")
            .map(|v| v.as_bytes()),
        Some(&b"chunked"[..])
    );
    assert!(response.headers().get("content-length").is_none());
    let mut body = response.into_body();
    // The first part arrives while the handler still waits for `release`.
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first part before the handler finished")
        .expect("a frame")
        .expect("no error");
    assert_eq!(first.into_data().expect("data"), "one");
    f.release.notify_one();
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(rest, "two");

    // The request body is the request parts.
    let (status, _, body) = read(f.post("call/upper", "abc").await, "content-type").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("ABC")));
    let (status, _, body) = read(f.post("call/upper", "").await, "content-type").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::new()));

    // An error before the first part is an ordinary error status.
    let (status, _, body) = read(f.post("call/stream-fails-first", "").await, "x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, "nothing to stream");

    // So is one before the response started, parts sent or not.
    let (status, _, body) = read(f.post("call/stream-fails-at-once", "").await, "x").await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(body, "failed at once");

    // After it, the response is cut short: the client sees a broken body.
    let response = f.post("call/stream-fails-later", "").await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(first.into_data().expect("data"), "partial");
    assert!(body.collect().await.is_err());
    f.server.shutdown().await;
}

#[tokio::test]
async fn origin_policy_and_cors() {
    let f = start(Config::default()).await;
    let url = format!("{}call/echo", f.server.url());
    let host = f.server.local_addr().to_string();
    let with_origin = |origin: &str| {
        Request::post(&url)
            .header("origin", origin)
            .body(Full::new(Bytes::from("x")))
            .expect("request")
    };
    let response = f
        .client
        .request(with_origin("http://evil.example"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::FORBIDDEN);

    let same = format!("http://{host}");
    let response = f
        .client
        .request(with_origin(&same))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(same.as_bytes())
    );

    let preflight = Request::options(&url)
        .header("origin", &same)
        .header("access-control-request-method", "POST")
        .body(Full::default())
        .expect("request");
    let response = f.client.request(preflight).await.expect("response");
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        response
            .headers()
            .get("access-control-allow-methods")
            .map(|v| v.as_bytes()),
        Some(&b"POST"[..])
    );
    f.server.shutdown().await;

    // An allowed cross-origin page.
    let (tx, _notes) = mpsc::unbounded_channel();
    let server = HttpServer::bind(
        "127.0.0.1:0",
        handlers(tx, Arc::new(Notify::new())),
        Config::default(),
        HttpConfig::default()
            .mount("/api/")
            .origin(OriginPolicy::allow_list().allow("https://app.example")),
    )
    .await
    .expect("bind");
    let request = Request::post(format!("http://{}/api/call/echo", server.local_addr()))
        .header("origin", "https://app.example")
        .body(Full::new(Bytes::from("x")))
        .expect("request");
    let response = client().request(request).await.expect("response");
    assert_eq!(response.status(), StatusCode::OK);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_calls_at_once() {
    let f = Arc::new(start(Config::default()).await);
    const CALLS: usize = 200;
    let started = Instant::now();
    let calls: Vec<_> = (0..CALLS)
        .map(|i| {
            let f = f.clone();
            tokio::spawn(async move {
                let (status, _, body) =
                    read(f.post("call/slow", format!("call {i}")).await, "x").await;
                assert_eq!(status, StatusCode::OK);
                assert_eq!(body, format!("call {i}"));
            })
        })
        .collect();
    for call in calls {
        call.await.expect("call");
    }
    // Each takes 100 ms: one after the other they would take 20 s.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(5), "{CALLS} calls took {took:?}");
}

#[tokio::test]
async fn handler_limit_answers_503() {
    let limit = HandlerLimit::new(1);
    let config = Config {
        handler_limit: limit.clone(),
        ..Config::default()
    };
    let f = Arc::new(start(config).await);
    // Holds the only place until released.
    let held = {
        let f = f.clone();
        tokio::spawn(async move { read(f.post("call/parts", "").await, "x").await })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while limit.available() > 0 {
        assert!(Instant::now() < deadline, "the first call never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (status, retry_after, body) = read(f.post("call/echo", "x").await, "retry-after").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body, "request rate limit");
    assert_eq!(retry_after.as_deref(), Some("1"));
    f.release.notify_one();
    let (status, _, body) = held.await.expect("held call");
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("onetwo")));
    assert_eq!(limit.available(), 1);
}

#[tokio::test]
async fn beside_the_websocket_endpoint() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let handlers = Handlers::new().buffer("echo", move |_ctx, p: Bytes| {
        counted.fetch_add(1, Ordering::Relaxed);
        async move { Ok::<_, HandlerError>(p) }
    });
    let (listener, ws_routes) = ws::router(ws::WsConfig::default());
    let http_routes = http::router(handlers.clone(), Config::default(), HttpConfig::default());
    let server = Server::new(listener, handlers, Config::default()).spawn();
    let app = axum::Router::new().merge(ws_routes).merge(http_routes);
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let serving = tokio::spawn(async move {
        let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(tcp, app).await
    });

    let peer = ws::connect(
        &format!("ws://{addr}/gotalk/"),
        Handlers::new(),
        Config::default(),
    )
    .await
    .expect("websocket");
    assert_eq!(
        peer.request("echo", "over ws").await.expect("ws call"),
        "over ws"
    );

    let request = Request::post(format!("http://{addr}/gotalk/call/echo"))
        .body(Full::new(Bytes::from("over http")))
        .expect("request");
    let (status, _, body) = read(client().request(request).await.expect("response"), "x").await;
    assert_eq!((status, body), (StatusCode::OK, Bytes::from("over http")));
    // The browser client is still served under the mount.
    let js = Request::get(format!("http://{addr}/gotalk/gotalk.js"))
        .body(Full::default())
        .expect("request");
    assert_eq!(
        client().request(js).await.expect("js").status(),
        StatusCode::OK
    );
    assert_eq!(calls.load(Ordering::Relaxed), 2);

    peer.close().await;
    server.shutdown().await;
    serving.abort();
}

#[tokio::test]
async fn a_client_that_leaves_stops_the_stream_handler() {
    /// Signals when the handler's future is dropped.
    struct OnDrop(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for OnDrop {
        fn drop(&mut self) {
            if let Some(tx) = self.0.take() {
                let _ = tx.send(());
            }
        }
    }
    let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel();
    let dropped_tx = Arc::new(std::sync::Mutex::new(Some(dropped_tx)));
    let sent = Arc::new(AtomicUsize::new(0));
    let counted = sent.clone();
    let handlers = Handlers::new().stream("forever", move |_ctx, _parts, mut results| {
        let guard = OnDrop(dropped_tx.lock().expect("lock").take());
        let sent = counted.clone();
        async move {
            let _guard = guard;
            loop {
                results.send("tick\n").await?;
                sent.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            #[allow(unreachable_code)]
            Ok::<_, HandlerError>(())
        }
    });
    let server = HttpServer::bind(
        "127.0.0.1:0",
        handlers,
        Config::default(),
        HttpConfig::default(),
    )
    .await
    .expect("bind");
    let request = Request::post(format!("{}call/forever", server.url()))
        .body(Full::default())
        .expect("request");
    let response = client().request(request).await.expect("response");
    let mut body = response.into_body();
    let first = body.frame().await.expect("a frame").expect("no error");
    assert_eq!(first.into_data().expect("data"), "tick\n");
    drop(body);
    tokio::time::timeout(Duration::from_secs(5), dropped_rx)
        .await
        .expect("the handler ended once the client left")
        .expect("signal");
    let after = sent.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sent.load(Ordering::Relaxed), after, "no part sent after");
    server.shutdown().await;
}
