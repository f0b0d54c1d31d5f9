//! One server layer under every transport: TCP, Unix sockets, TLS,
//! WebSocket and wss:// all serve through `Server`, with the same hooks
//! (admission, `wrap_io`, open), the same registry and the same address
//! type; every `connect` fails the same way.
#![cfg(all(feature = "websocket", feature = "tls"))]

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{WAIT, eventually, tap::Taps, within};
use gotalk_peer::{
    Config, ConnectError, ConnectionInfo, HandlerError, Handlers, LocalAddr, Peer, Rejection,
    Server, ServerHandle, TcpListener, TransportKind,
    tls::{self, TlsListener, rustls},
    ws::{self, WsClientConfig, WsConfig, WsListener},
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The transports a test runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    #[cfg(unix)]
    Unix,
    Tls,
    Ws,
    Wss,
}

const KINDS: &[Kind] = &[
    Kind::Tcp,
    #[cfg(unix)]
    Kind::Unix,
    Kind::Tls,
    Kind::Ws,
    Kind::Wss,
];

/// A CA and a server certificate for `localhost` and 127.0.0.1.
struct Pki {
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn pki() -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    Pki {
        server: tls::server_config_from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes())
            .unwrap(),
        client: tls::client_config_with_ca_pem(ca.pem().as_bytes()).unwrap(),
    }
}

/// A scratch path for a Unix socket, removed on drop.
#[cfg(unix)]
struct SocketPath(std::path::PathBuf);

#[cfg(unix)]
impl SocketPath {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        Self(std::env::temp_dir().join(format!(
            "gotalk-server-test-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )))
    }
}

#[cfg(unix)]
impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Counts the requests it serves; `whoami` answers with the transport and
/// connection number from the connection's [`ConnectionInfo`].
fn handlers(served: Arc<AtomicUsize>) -> Handlers {
    let echoed = served.clone();
    Handlers::new()
        .buffer("echo", move |_ctx, p: Bytes| {
            echoed.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, HandlerError>(p) }
        })
        .buffer("whoami", move |ctx, _p: Bytes| {
            served.fetch_add(1, Ordering::SeqCst);
            async move {
                let info = ctx
                    .user_data::<ConnectionInfo>()
                    .ok_or_else(|| HandlerError::new("no connection info"))?;
                Ok::<_, HandlerError>(Bytes::from(format!("{} {}", info.transport, info.id)))
            }
        })
}

/// One transport's server side and how to reach it.
struct Fixture {
    kind: Kind,
    pki: Pki,
    #[cfg(unix)]
    path: SocketPath,
}

impl Fixture {
    fn new(kind: Kind) -> Self {
        Self {
            kind,
            pki: pki(),
            #[cfg(unix)]
            path: SocketPath::new(),
        }
    }

    /// A server on a fresh listener of this transport, set up by `customize`.
    async fn serve(
        &self,
        handlers: Handlers,
        config: Config,
        customize: impl FnOnce(Server) -> Server,
    ) -> ServerHandle {
        let ws = WsConfig::default();
        let server = match self.kind {
            Kind::Tcp => Server::new(
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
                handlers,
                config,
            ),
            #[cfg(unix)]
            Kind::Unix => Server::bind_unix(&self.path.0, handlers, config).unwrap(),
            Kind::Tls => Server::new(
                TlsListener::bind("127.0.0.1:0", self.pki.server.clone())
                    .await
                    .unwrap(),
                handlers,
                config,
            ),
            Kind::Ws => Server::new(
                WsListener::bind("127.0.0.1:0", ws).await.unwrap(),
                handlers,
                config,
            ),
            Kind::Wss => Server::new(
                WsListener::bind_tls("127.0.0.1:0", ws, self.pki.server.clone())
                    .await
                    .unwrap(),
                handlers,
                config,
            ),
        };
        customize(server).spawn()
    }

    /// Connects to `server` the way clients of this transport do.
    async fn connect(
        &self,
        server: &ServerHandle,
        handlers: Handlers,
        config: Config,
    ) -> Result<Peer, ConnectError> {
        let addr = server.local_addr();
        let port = addr.port();
        match self.kind {
            Kind::Tcp => Peer::connect(addr.to_string(), handlers, config).await,
            #[cfg(unix)]
            Kind::Unix => Peer::connect_unix(&self.path.0, handlers, config).await,
            Kind::Tls => {
                let addr = format!("localhost:{}", port.unwrap());
                tls::connect(&addr, self.pki.client.clone(), handlers, config).await
            }
            Kind::Ws => ws::connect(&addr.to_string(), handlers, config).await,
            Kind::Wss => {
                let ws = WsClientConfig {
                    tls: Some(self.pki.client.clone()),
                    ..WsClientConfig::default()
                };
                let url = format!("wss://localhost:{}/gotalk/", port.unwrap());
                ws::connect_with(&url, handlers, config, &ws).await
            }
        }
    }

    fn transport(&self) -> TransportKind {
        match self.kind {
            Kind::Tcp => TransportKind::Tcp,
            #[cfg(unix)]
            Kind::Unix => TransportKind::Unix,
            Kind::Tls => TransportKind::Tls,
            Kind::Ws => TransportKind::WebSocket,
            Kind::Wss => TransportKind::SecureWebSocket,
        }
    }
}

#[tokio::test]
async fn every_transport_serves_through_the_one_server() {
    for &kind in KINDS {
        let fx = Fixture::new(kind);
        let served = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let opened = opened.clone();
            fx.serve(handlers(served.clone()), Config::default(), move |s| {
                s.on_open(move |_peer, info| opened.lock().unwrap().push(info.clone()))
            })
            .await
        };

        // The address, as clients name it.
        let shown = server.local_addr().to_string();
        let port = server.local_addr().port();
        let expected = match kind {
            Kind::Tcp => format!("127.0.0.1:{}", port.unwrap()),
            #[cfg(unix)]
            Kind::Unix => format!("unix:{}", fx.path.0.display()),
            Kind::Tls => format!("tls://127.0.0.1:{}", port.unwrap()),
            Kind::Ws => format!("ws://127.0.0.1:{}/gotalk/", port.unwrap()),
            Kind::Wss => format!("wss://127.0.0.1:{}/gotalk/", port.unwrap()),
        };
        assert_eq!(shown, expected, "{kind:?}");
        assert_eq!(server.local_addr().transport(), fx.transport(), "{kind:?}");

        let mut peers = Vec::new();
        for n in 1..=2u64 {
            let peer = within(
                WAIT,
                "connect",
                fx.connect(&server, Handlers::new(), Config::default()),
            )
            .await
            .unwrap_or_else(|e| panic!("{kind:?}: {e}"));
            assert_eq!(peer.request("echo", "hi").await.unwrap(), "hi", "{kind:?}");
            let me = peer.request("whoami", "").await.unwrap();
            assert_eq!(me, format!("{} {n}", fx.transport()), "{kind:?}");
            peers.push(peer);
        }
        assert_eq!(server.connection_count(), 2, "{kind:?}");
        assert_eq!(served.load(Ordering::SeqCst), 4, "{kind:?}");
        {
            let opened = opened.lock().unwrap();
            assert_eq!(opened.len(), 2, "{kind:?}");
            for info in opened.iter() {
                assert_eq!(info.transport, fx.transport(), "{kind:?}");
                assert_eq!(info.local_addr, *server.local_addr(), "{kind:?}");
                match kind {
                    #[cfg(unix)]
                    Kind::Unix => assert_eq!(info.remote_addr, None),
                    _ => assert!(info.remote_addr.unwrap().ip().is_loopback(), "{kind:?}"),
                }
                assert_eq!(
                    info.websocket().is_some(),
                    matches!(kind, Kind::Ws | Kind::Wss),
                    "{kind:?}"
                );
            }
        }

        // Shutdown closes every connection and lets go of the address.
        within(WAIT, "shutdown", server.shutdown()).await;
        for peer in &peers {
            within(WAIT, "closed", peer.closed()).await;
        }
        match kind {
            #[cfg(unix)]
            Kind::Unix => assert!(!fx.path.0.exists(), "socket file removed"),
            _ => drop(
                std::net::TcpListener::bind(("127.0.0.1", port.unwrap()))
                    .unwrap_or_else(|e| panic!("{kind:?}: port still held: {e}")),
            ),
        }
    }
}

#[tokio::test]
async fn the_on_connect_hook_refuses_on_every_transport() {
    for &kind in KINDS {
        let fx = Fixture::new(kind);
        let served = Arc::new(AtomicUsize::new(0));
        let asked = Arc::new(AtomicUsize::new(0));
        let opened = Arc::new(AtomicUsize::new(0));
        let server = {
            let (asked, opened) = (asked.clone(), opened.clone());
            fx.serve(handlers(served.clone()), Config::default(), move |s| {
                s.on_connect(move |info| {
                    asked.fetch_add(1, Ordering::SeqCst);
                    assert!(info.id > 0, "numbered before the hook runs");
                    Err(Rejection::forbidden("no entry"))
                })
                .on_open(move |_, _| {
                    opened.fetch_add(1, Ordering::SeqCst);
                })
            })
            .await
        };
        let config = Config {
            handshake_timeout: Duration::from_secs(5),
            ..Config::default()
        };
        let started = Instant::now();
        let err = within(
            WAIT,
            "connect",
            fx.connect(&server, Handlers::new(), config),
        )
        .await
        .expect_err("refused");
        // Refused at once, not after a timeout.
        assert!(started.elapsed() < Duration::from_secs(4), "{kind:?}");
        match kind {
            Kind::Ws | Kind::Wss => {
                assert!(
                    matches!(&err, ConnectError::Http { status: 403, body } if body.contains("no entry")),
                    "{kind:?}: {err}"
                );
                assert!(err.to_string().contains("403: no entry"), "{err}");
            }
            // The socket is closed before any handshake.
            _ => assert!(
                matches!(
                    err,
                    ConnectError::Handshake(_) | ConnectError::Io(_) | ConnectError::Tls(_)
                ),
                "{kind:?}: {err:?}"
            ),
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1, "{kind:?}");
        assert_eq!(opened.load(Ordering::SeqCst), 0, "{kind:?}");
        assert_eq!(served.load(Ordering::SeqCst), 0, "{kind:?}");
        assert_eq!(server.connection_count(), 0, "{kind:?}");
        server.shutdown().await;
    }
}

#[tokio::test]
async fn websocket_admission_sees_headers_query_and_cookies() {
    let served = Arc::new(AtomicUsize::new(0));
    let listener = WsListener::bind("127.0.0.1:0", WsConfig::default())
        .await
        .unwrap();
    let server = Server::new(listener, handlers(served.clone()), Config::default())
        .on_connect(|info| {
            let Some(ws) = info.websocket() else {
                return Err(Rejection::forbidden("websocket only"));
            };
            match (ws.query_param("token"), ws.cookie("session")) {
                (Some("t0k"), _) => Ok(()),
                (_, Some("s3ss")) => Ok(()),
                _ => Err(Rejection::unauthorized("log in first")),
            }
        })
        .spawn();
    let url = server.local_addr().to_string();

    let err = ws::connect(&url, Handlers::new(), Config::default())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Http { status: 401, body } if body.trim() == "log in first"),
        "{err}"
    );
    let with_token = ws::connect(
        &format!("{url}?token=t0k"),
        Handlers::new(),
        Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(with_token.request("echo", "x").await.unwrap(), "x");

    // A cookie, sent as a browser would with the upgrade request.
    let addr = server.local_addr().socket_addr().unwrap();
    let status = |cookie: &'static str| async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let request = format!(
            "GET /gotalk/ HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Cookie: {cookie}\r\n\r\n"
        );
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.unwrap();
        String::from_utf8_lossy(&head[9..12]).into_owned()
    };
    assert_eq!(status("a=1; session=s3ss").await, "101");
    assert_eq!(status("session=nope").await, "401");
    server.shutdown().await;
}

#[tokio::test]
async fn wrap_io_sees_the_gotalk_bytes_on_every_transport() {
    for &kind in KINDS {
        let fx = Fixture::new(kind);
        let taps = Taps::default();
        let wrapped = Arc::new(Mutex::new(Vec::new()));
        let server = {
            let (taps, wrapped) = (taps.clone(), wrapped.clone());
            fx.serve(handlers(Arc::default()), Config::default(), move |s| {
                s.wrap_io(move |io, info| {
                    wrapped.lock().unwrap().push(info.transport);
                    taps.wrap(io)
                })
            })
            .await
        };
        let peer = fx
            .connect(&server, Handlers::new(), Config::default())
            .await
            .unwrap();
        assert_eq!(peer.request("echo", "hi").await.unwrap(), "hi");
        assert_eq!(*wrapped.lock().unwrap(), [fx.transport()], "{kind:?}");
        // TLS and WebSocket framing are off: exactly the gotalk bytes.
        assert_eq!(
            taps.read(),
            b"01r\x00\x00\x00\x00004echo00000002hi",
            "{kind:?}"
        );
        peer.close().await;
        server.shutdown().await;
    }
}

#[tokio::test]
async fn one_server_many_listeners_one_registry() {
    let served = Arc::new(AtomicUsize::new(0));
    let connections = gotalk_peer::Connections::new();
    let server = Server::bind("127.0.0.1:0", handlers(served), Config::default())
        .await
        .unwrap()
        .listen(
            WsListener::bind("127.0.0.1:0", WsConfig::default())
                .await
                .unwrap(),
        )
        .with_connections(connections.clone())
        .spawn();
    let [tcp, ws] = server.local_addrs() else {
        panic!("two listeners")
    };
    assert!(matches!(tcp, LocalAddr::Tcp(_)));
    assert!(matches!(ws, LocalAddr::WebSocket { secure: false, .. }));
    let a = Peer::connect(tcp.to_string(), Handlers::new(), Config::default())
        .await
        .unwrap();
    let b = ws::connect(&ws.to_string(), Handlers::new(), Config::default())
        .await
        .unwrap();
    assert_eq!(a.request("whoami", "").await.unwrap(), "tcp 1");
    assert_eq!(b.request("whoami", "").await.unwrap(), "ws 2");
    let ids: Vec<u64> = connections.list().into_iter().map(|(id, _)| id).collect();
    assert_eq!(ids, [1, 2]);
    assert_eq!(server.registry().len(), 2);
    b.close().await;
    eventually(WAIT, "the closed one is forgotten", || {
        connections.get(2).is_none()
    })
    .await;
    assert!(connections.get(1).is_some());
    server.shutdown().await;
    within(WAIT, "closed by shutdown", a.closed()).await;
    assert!(connections.is_empty());
}

/// Every `connect` reports a silent server the same way: `Timeout`, with
/// the limit it waited.
#[tokio::test]
async fn a_connect_timeout_has_one_form_on_every_transport() {
    let limit = Duration::from_millis(300);
    let config = Config {
        handshake_timeout: limit,
        ..Config::default()
    };
    // Bound, never accepted: the kernel completes the TCP handshake, and
    // nothing ever answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let timed_out = |r: Result<Peer, ConnectError>, what: &str| match r {
        Err(ConnectError::Timeout(d)) => assert!(d <= Duration::from_secs(1), "{what}: {d:?}"),
        Err(e) => panic!("{what}: expected a timeout, got {e:?}"),
        Ok(_) => panic!("{what}: connected to a silent server"),
    };

    let r = within(
        WAIT,
        "tcp",
        Peer::connect(addr, Handlers::new(), config.clone()),
    )
    .await;
    timed_out(r, "tcp");

    let tls_config = pki().client;
    let r = within(
        WAIT,
        "tls",
        tls::connect(
            &format!("localhost:{}", addr.port()),
            tls_config,
            Handlers::new(),
            config.clone(),
        ),
    )
    .await;
    timed_out(r, "tls");

    let ws_config = WsClientConfig {
        connect_timeout: limit,
        ..WsClientConfig::default()
    };
    let r = within(
        WAIT,
        "ws",
        ws::connect_with(
            &format!("ws://{addr}/gotalk/"),
            Handlers::new(),
            config.clone(),
            &ws_config,
        ),
    )
    .await;
    timed_out(r, "ws");

    #[cfg(unix)]
    {
        let path = SocketPath::new();
        let _silent = tokio::net::UnixListener::bind(&path.0).unwrap();
        let r = within(
            WAIT,
            "unix",
            Peer::connect_unix(&path.0, Handlers::new(), config.clone()),
        )
        .await;
        timed_out(r, "unix");
    }
    drop(silent);
}
