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
//!   (`tls`) and WebSocket (`ws`), one [`ConnectError`] for them all.
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
//! [gotalk]: https://github.com/rsms/gotalk

mod buffer_gauge;
mod config;
mod connection;
pub mod core;
mod dispatch;
mod driver;
mod error;
mod handlers;
mod handshake;
mod peer;
mod read_buffer;
mod server;
mod stream;
pub mod transport;

pub use config::{Config, HeartbeatCallback, LoadFn};
pub use error::{CloseReason, Error, HandshakeError, RemoteError, UsageError, Violation};
pub use gotalk_proto::{self as proto, ProtocolErrorCode, RequestId};
pub use handlers::{BoxFuture, Context, HandlerError, Handlers};
pub use peer::{Peer, RequestOptions};
pub use server::{Connections, Rejection, Server, ServerHandle};
pub use stream::{RequestParts, ResultSender, ResultStream, StreamWriter};
#[cfg(unix)]
pub use transport::UnixListener;
#[cfg(feature = "websocket")]
pub use transport::WebSocketInfo;
#[cfg(feature = "tls")]
pub use transport::tls;
#[cfg(feature = "websocket")]
pub use transport::ws;
pub use transport::{BoxedIo, ConnectError, ConnectionInfo, LocalAddr, TcpListener, TransportKind};
