//! Helpers shared by the integration tests: connected peers over memory or
//! TCP, a raw socket that speaks frames byte for byte, a TCP proxy that can
//! be killed, and bounded waits.

// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

pub(crate) mod tap;

use std::{future::Future, io, net::SocketAddr, time::Duration};

use bytes::{Bytes, BytesMut};
use gotalk_peer::{
    Config, Handlers, Peer, Server, ServerHandle,
    proto::{DecodeLimits, Decoded, Message, decode_bytes},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

/// Upper bound for anything that must happen "promptly" in these tests. Far
/// above what a healthy run needs, so a slow CI machine does not flake, but
/// small enough that a hang fails the test instead of the whole suite.
pub(crate) const WAIT: Duration = Duration::from_secs(5);

/// Awaits `fut`, failing the test if it takes longer than `limit`.
pub(crate) async fn within<F: Future>(limit: Duration, what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(limit, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out after {limit:?} waiting for: {what}"),
    }
}

/// Polls `cond` every few milliseconds until it holds, failing after `limit`.
pub(crate) async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met within {limit:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A config with the timers quiet, so tests only see what they ask for.
pub(crate) fn quiet() -> Config {
    Config {
        heartbeat_interval: None,
        ..Config::default()
    }
}

/// How two peers are connected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Transport {
    /// `tokio::io::duplex`, both handshakes run by hand.
    Memory,
    /// A [`Server`] on 127.0.0.1 and [`Peer::connect`].
    Tcp,
}

pub(crate) const TRANSPORTS: [Transport; 2] = [Transport::Memory, Transport::Tcp];

/// Two connected peers: `client` called the server, `server` is the server
/// side of the same connection.
pub(crate) struct Conn {
    pub(crate) client: Peer,
    pub(crate) server: Peer,
    /// The TCP server, for [`Transport::Tcp`].
    pub(crate) handle: Option<ServerHandle>,
}

/// Connects a client to a server over `transport`, each with its own
/// handlers and config, and returns both ends.
pub(crate) async fn connect(
    transport: Transport,
    client_handlers: Handlers,
    server_handlers: Handlers,
    client_config: Config,
    server_config: Config,
) -> Conn {
    match transport {
        Transport::Memory => {
            let (a, b) = tokio::io::duplex(256 * 1024);
            let (client, server) = tokio::join!(
                Peer::handshake(a, client_handlers, client_config),
                Peer::handshake(b, server_handlers, server_config),
            );
            Conn {
                client: client.expect("client handshake"),
                server: server.expect("server handshake"),
                handle: None,
            }
        }
        Transport::Tcp => {
            let handle = spawn_server(server_handlers, server_config).await;
            let client = within(
                WAIT,
                "tcp connect",
                Peer::connect(
                    handle.local_addr().to_string(),
                    client_handlers,
                    client_config,
                ),
            )
            .await
            .expect("connect");
            let server = server_side(&handle, 1).await;
            Conn {
                client,
                server,
                handle: Some(handle),
            }
        }
    }
}

/// Binds a server on an ephemeral loopback port and starts accepting.
pub(crate) async fn spawn_server(handlers: Handlers, config: Config) -> ServerHandle {
    Server::bind("127.0.0.1:0", handlers, config)
        .await
        .expect("bind 127.0.0.1:0")
        .spawn()
}

/// Waits until the server has `count` live connections and returns the
/// server-side handle of one of them (the only one when `count` is 1).
pub(crate) async fn server_side(handle: &ServerHandle, count: usize) -> Peer {
    eventually(WAIT, "server registers the connection", || {
        handle.connections().len() >= count
    })
    .await;
    handle.connections().pop().expect("a connection")
}

/// A socket that sends and receives gotalk frames byte for byte, with no
/// protocol logic of its own. Every read is bounded by [`WAIT`].
pub(crate) struct Raw<T> {
    io: T,
    buf: BytesMut,
}

impl Raw<TcpStream> {
    /// Connects to `addr` without sending anything.
    pub(crate) async fn tcp(addr: impl tokio::net::ToSocketAddrs) -> Self {
        let io = within(WAIT, "raw connect", TcpStream::connect(addr))
            .await
            .expect("raw connect");
        io.set_nodelay(true).expect("nodelay");
        Self::new(io)
    }

    /// Connects to `addr` and exchanges versions.
    pub(crate) async fn tcp_handshaken(addr: impl tokio::net::ToSocketAddrs) -> Self {
        let mut raw = Self::tcp(addr).await;
        raw.handshake().await;
        raw
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> Raw<T> {
    pub(crate) fn new(io: T) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    pub(crate) fn get_ref(&self) -> &T {
        &self.io
    }

    /// Writes `bytes` as they are.
    pub(crate) async fn send_bytes(&mut self, bytes: &[u8]) {
        within(WAIT, "raw write", async {
            self.io.write_all(bytes).await?;
            self.io.flush().await
        })
        .await
        .expect("raw write");
    }

    /// Encodes and writes `msg`.
    pub(crate) async fn send(&mut self, msg: &Message) {
        let bytes = msg.to_vec().expect("encodable message");
        self.send_bytes(&bytes).await;
    }

    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        within(WAIT, "raw read", self.io.read_buf(&mut self.buf)).await
    }

    /// Reads exactly `n` bytes.
    pub(crate) async fn read_exact(&mut self, n: usize) -> Bytes {
        while self.buf.len() < n {
            let got = self.fill().await.expect("raw read");
            assert!(
                got > 0,
                "stream ended after {:?}, wanted {n} bytes",
                self.buf
            );
        }
        self.buf.split_to(n).freeze()
    }

    /// Reads `expected.len()` bytes and checks they are `expected`.
    pub(crate) async fn expect_bytes(&mut self, expected: &[u8]) {
        let got = self.read_exact(expected.len()).await;
        assert_eq!(
            got,
            Bytes::copy_from_slice(expected),
            "expected {:?}, got {:?}",
            Bytes::copy_from_slice(expected),
            got
        );
    }

    /// Writes our version and checks the peer's is `01`.
    pub(crate) async fn handshake(&mut self) {
        self.send_bytes(b"01").await;
        self.expect_bytes(b"01").await;
    }

    /// The next whole message, or `None` at a clean end of stream.
    pub(crate) async fn next_message(&mut self) -> Option<Message> {
        let limits = DecodeLimits::default();
        loop {
            match decode_bytes(&mut self.buf, &limits).expect("peer sent a valid frame") {
                Decoded::Complete(msg, _) => return Some(msg),
                Decoded::Incomplete(_) => {}
            }
            match self.fill().await {
                Ok(0) | Err(_) if self.buf.is_empty() => return None,
                Ok(0) => panic!("stream ended inside a frame: {:?}", self.buf),
                Ok(_) => {}
                Err(e) => panic!("read failed inside a frame: {e}"),
            }
        }
    }

    /// The next message that is not a heartbeat.
    pub(crate) async fn next_non_heartbeat(&mut self) -> Option<Message> {
        loop {
            match self.next_message().await {
                Some(Message::Heartbeat { .. }) => {}
                other => return other,
            }
        }
    }

    /// The next message, which must exist.
    pub(crate) async fn expect_message(&mut self) -> Message {
        self.next_message()
            .await
            .expect("a message before end of stream")
    }

    /// Checks that the peer closes without sending anything more. A reset
    /// counts as closed too.
    pub(crate) async fn expect_eof(&mut self) {
        loop {
            assert!(
                self.buf.is_empty(),
                "expected end of stream, got {:?}",
                self.buf
            );
            match self.fill().await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// Reads `f` then checks the stream ends: what a peer does when it
    /// refuses us with ProtocolError `code`.
    pub(crate) async fn expect_protocol_error_then_eof(&mut self, code: u32) {
        self.expect_bytes(format!("f{code:08x}").as_bytes()).await;
        self.expect_eof().await;
    }
}

/// A TCP proxy for one connection, to cut it abruptly from outside both
/// peers.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on an ephemeral port and forwards the first connection to
    /// `target`. With `reset`, killing it resets both connections (RST)
    /// instead of closing them (FIN).
    pub(crate) async fn start(target: &str, reset: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let target = target.to_owned();
        let task = tokio::spawn(async move {
            let Ok((mut inbound, _)) = listener.accept().await else {
                return;
            };
            let Ok(mut outbound) = TcpStream::connect(target).await else {
                return;
            };
            if reset {
                let _ = inbound.set_zero_linger();
                let _ = outbound.set_zero_linger();
            }
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
        Self { addr, task }
    }

    /// Drops both sockets at once: the peers see the stream end (or reset).
    pub(crate) async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A request ID made of four ASCII bytes, as gotalk.js writes them.
pub(crate) fn id(s: &[u8; 4]) -> gotalk_peer::RequestId {
    gotalk_peer::RequestId::new(*s)
}

/// Decodes lower- or upper-case hex.
pub(crate) fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
        .collect()
}
