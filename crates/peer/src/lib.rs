//! Symmetric, multiplexed [gotalk] RPC over one connection, on tokio.
//!
//! Either side of a connection exposes operations ([`Handlers`]) and calls
//! the other ([`Peer`]): buffer and JSON requests, streaming requests and
//! results, notifications and heartbeats, any number in flight at once over
//! one connection. Interoperates with the original Go package and gotalk.js.
//!
//! # Layering
//! - `gotalk-proto` turns bytes into messages and back (no I/O).
//! - [`core`] is the connection as a state machine with no I/O and no clock
//!   of its own (quinn-proto style): request IDs and tables, admission and
//!   limits, the byte budget, streams, timers, retries and closing are all
//!   decided there, and tested deterministically with virtual time.
//! - One driver task per connection moves bytes and events between the
//!   transport, the core and the handlers: zero-copy reads, coalesced
//!   vectored writes. It polls each handler once itself: a handler that
//!   answers without waiting costs no task, one that waits moves to a task of
//!   its own at its first `.await` (see [`Config::inline_handlers`]), so a
//!   slow handler never holds up the connection, and a panicking one is
//!   answered with an error result.
//! - [`transport`]: listeners and `connect` for TCP, Unix sockets, TLS
//!   (`tls`) and WebSocket (`ws`), one [`ConnectError`] for them all; the
//!   same handlers over plain HTTP (`http`).
//! - [`ReconnectingPeer`] ([`reconnect`]): a client over a connect
//!   function that connects again with backoff when its connection is
//!   lost, queueing calls meanwhile.
//! - [`balance::Balancer`]: a client over several servers (a fixed list,
//!   DNS, or a resolver of your own) that sends each call to one of them by
//!   power of two choices on the calls in flight and the load each server
//!   reports in its heartbeats, and leaves out servers that fail.
//! - One [`Server`] serves any mix of listeners: one accept loop, one
//!   registry of live connections ([`Connections`]), the same hooks
//!   ([`Server::on_connect`] to admit or refuse, [`Server::wrap_io`],
//!   [`Server::on_open`]) on every transport.
//!
//! # Example
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, HandlerError, Handlers, Peer, Server};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Deserialize)]
//! struct GreetIn { name: String }
//! #[derive(Serialize, Deserialize)]
//! struct GreetOut { greeting: String }
//!
//! let handlers = Handlers::new().json("greet", |_ctx, input: GreetIn| async move {
//!     Ok::<_, HandlerError>(GreetOut { greeting: format!("Hello {}", input.name) })
//! });
//! let server = Server::bind("127.0.0.1:0", handlers, Config::default()).await?.spawn();
//!
//! let addr = server.local_addr().to_string();
//! let peer = Peer::connect(addr, Handlers::new(), Config::default()).await?;
//! let out: GreetOut = peer.request_json("greet", &serde_json::json!({"name": "Rasmus"})).await?;
//! assert_eq!(out.greeting, "Hello Rasmus");
//! peer.close().await;
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # A five-minute tour
//!
//! In the order you will need it. [`Peer::pair`] connects two peers in
//! memory, so every step runs as is; over a network, [`Server`] and
//! [`Peer::connect`] (step 1, above) take their place.
//!
//! 1. **Connect and call**: [`Peer::connect`] (TCP), then
//!    [`Peer::request`] with bytes in and out (the example above).
//! 2. **Serve handlers**: [`Handlers`] maps operation names to async
//!    functions; both sides of a connection have them, so the server may call
//!    the client too ([`Context::peer`] inside a handler).
//! 3. **JSON**: [`Handlers::json`] and [`Peer::request_json`] (serde).
//! 4. **Streams**: [`Handlers::stream`] gets the request parts and sends
//!    result parts; [`Peer::stream_request`] gives a [`StreamWriter`] and a
//!    [`ResultStream`].
//! 5. **Notifications**: one-way messages, [`Peer::notify`] and
//!    [`Handlers::notification`].
//! 6. **Errors**: a handler's [`HandlerError`] reaches the caller as
//!    [`Error::Remote`]; [`HandlerError::retry`] asks it to retry later
//!    (retried up to [`Config::max_attempts`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use futures::StreamExt;
//! use gotalk_peer::{Config, Error, HandlerError, Handlers, Peer};
//!
//! let server = Handlers::new()
//!     .buffer("echo", |_ctx, payload| async move { Ok::<_, HandlerError>(payload) })
//!     .json("add", |_ctx, (a, b): (i64, i64)| async move { Ok::<_, HandlerError>(a + b) })
//!     .stream("upper", |_ctx, mut parts, mut results| async move {
//!         while let Some(part) = parts.next().await {
//!             let part = part.map_err(|e| HandlerError::new(e.to_string()))?;
//!             results.send(part.to_ascii_uppercase()).await.map_err(|e| HandlerError::new(e.to_string()))?;
//!         }
//!         Ok::<_, HandlerError>(())
//!     })
//!     .notification("log", |_ctx, line| async move { tracing::info!(?line, "log") })
//!     .buffer("fail", |_ctx, _| async move { Err::<&'static [u8], _>(HandlerError::new("no")) });
//! let (client, _server_side) = Peer::pair(Handlers::new(), server, Config::default()).await?;
//!
//! assert_eq!(client.request("echo", "hi").await?, "hi");                    // 1, 2
//! assert_eq!(client.request_json::<_, i64>("add", &(2, 3)).await?, 5);      // 3
//! let (mut parts, results) = client.stream_request("upper").await?;        // 4
//! parts.send("abc").await?;
//! parts.send("def").await?;
//! parts.end().await?;
//! assert_eq!(results.collect_bytes(1024).await?, "ABCDEF");
//! client.notify("log", "hello").await?;                                    // 5
//! match client.request("fail", "").await {                                 // 6
//!     Err(Error::Remote(e)) => assert_eq!(e.payload(), "no"),
//!     other => panic!("{other:?}"),
//! }
//! # Ok(()) }
//! ```
//!
//! 7. **Limits**: every bound is a [`Config`] field, with what happens when
//!    it is reached: payload size ([`Config::max_payload`]), requests and
//!    streams handled at once, buffered bytes, the write queue, timeouts.
//!    `docs/peer.md` in the repository has the table ("Limits").
//! 8. **Transports**: TCP ([`TcpListener`], [`Peer::connect`]), Unix
//!    sockets ([`Peer::connect_unix`]), TLS (`tls` feature: `tls::TlsListener`,
//!    `tls::connect`) and WebSocket (`websocket` feature: `ws::WsListener`,
//!    `ws::connect`, the browser client). One [`Server`] serves any mix of
//!    them; any tokio byte stream works with [`Peer::handshake`].
//! 9. **Reconnecting**: [`ReconnectingPeer`] connects again by itself when
//!    the connection is lost, with backoff, queueing calls made meanwhile
//!    (see [`reconnect`]).
//! 10. **Balancing**: [`balance::Balancer`] spreads calls over several
//!     servers, away from slow and loaded ones (see [`balance`]).
//! 11. **Typed services**: `#[gotalk_peer::service]` (feature `macros`)
//!     turns a trait into handlers, a typed client over any [`Caller`](service::Caller)
//!     and a description for the listing operation (see [`service`](mod@service)
//!     and `docs/services.md`).
//!
//! [gotalk]: https://github.com/rsms/gotalk

#![cfg_attr(docsrs, feature(doc_cfg))]

/// The crate README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod answers;
pub mod balance;
mod buffer_gauge;
mod busy_poll;
mod config;
mod connection;
pub mod core;
mod dispatch;
mod driver;
mod error;
mod handler_error;
mod handler_pool;
mod handlers;
mod handshake;
mod latch;
mod load;
pub mod middleware;
mod name_map;
mod peer;
mod read_buffer;
pub mod reconnect;
mod runtime_metrics;
mod server;
pub mod service;
mod stream;
pub mod transport;

pub use config::{Config, HandlerLimit, HeartbeatCallback, LoadFn, WriteCeiling};
pub use error::{
    CloseReason, Error, HandshakeError, RemoteError, Unavailable, UsageError, Violation,
};
/// Turns a trait into a typed gotalk service (feature `macros`): see
/// [`service`](mod@service) for what it accepts and generates.
#[cfg(feature = "macros")]
pub use gotalk_macros::service;
pub use gotalk_proto::{self as proto, ProtocolErrorCode, RequestId};
pub use handler_error::{ErrorKind, HandlerError};
pub use handlers::{BoxFuture, Context, Handlers};
pub use load::RemoteLoad;
pub use peer::{Peer, RequestOptions};
pub use reconnect::ReconnectingPeer;
pub use server::{Connections, Rejection, Server, ServerHandle};
pub use stream::{RequestParts, ResultSender, ResultStream, StreamWriter};
#[cfg(unix)]
pub use transport::UnixListener;
#[cfg(feature = "websocket")]
pub use transport::WebSocketInfo;
#[cfg(feature = "http")]
pub use transport::http;
#[cfg(feature = "tls")]
pub use transport::tls;
#[cfg(feature = "websocket")]
pub use transport::ws;
pub use transport::{BoxedIo, ConnectError, ConnectionInfo, LocalAddr, TcpListener, TransportKind};
