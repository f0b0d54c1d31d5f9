//! gotalk over WebSocket (feature `websocket`): a server that also serves
//! the browser client, and a client for `ws://` and `wss://` URLs.
//!
//! The wire mapping is the one of the original Go package and gotalk.js:
//! the version is one WebSocket message, every gotalk header is one binary
//! message and its payload, when not empty, is the next message. Reading
//! accepts binary and text messages and any split of the byte stream, but a
//! message that must be one payload and has the wrong length is an invalid
//! message (ProtocolError 2), never read into the next frame. See
//! [`WsStream`] (what the client and server of this module run on: the
//! WebSocket frames read and written by this crate) and `docs/websocket.md`;
//! [`WsIo`] maps the same over a WebSocket library's messages.
//!
//! - [`WsListener`]: an HTTP server that upgrades requests at a mount path
//!   (default `/gotalk/`) and serves [`GOTALK_JS`] at any path under it
//!   ending in `/gotalk.js`; a [`Server`](crate::Server) serves gotalk on
//!   it like on any other listener (same hooks, same registry).
//!   [`WsListener::bind_tls`] serves `wss://`; [`router`] gives the routes
//!   to merge into your own axum app instead.
//! - [`connect`]: a `ws://` or `wss://` URL to a [`Peer`](crate::Peer).
//! - [`WsClientConfig::wrap_io`]: wrap a client connection's gotalk byte
//!   stream ([`BoxedIo`](crate::BoxedIo)) between the WebSocket upgrade and
//!   the gotalk handshake, e.g. to trace every frame (servers:
//!   [`Server::wrap_io`](crate::Server::wrap_io)).
//! - Browser peers are assumed to be the original gotalk.js unless they say
//!   otherwise ([`RemoteCapabilities`]); the default [`OriginPolicy`] admits
//!   same-origin pages and non-browser clients.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, HandlerError, Handlers, Server, ws};
//! let handlers = Handlers::new()
//!     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) });
//! let listener = ws::WsListener::bind("127.0.0.1:0", ws::WsConfig::default()).await?;
//! let server = Server::new(listener, handlers, Config::default()).spawn();
//!
//! let url = server.local_addr().to_string(); // ws://127.0.0.1:PORT/gotalk/
//! let peer = ws::connect(&url, Handlers::new(), Config::default()).await?;
//! assert_eq!(peer.request("echo", "hi").await?, "hi");
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod adapters;
mod client;
mod elastic;

/// The WebSocket library's read chunk during a client's upgrade (frames
/// are then read by [`WsStream`]). Its default, 128 KiB, is zero-filled
/// before every read.
const READ_BUFFER: usize = 8 * 1024;

mod error;
mod framing;
mod io;
mod js;
mod server;
mod stream;
mod wire;

pub use client::{ClientWrapIo, WsClientConfig, connect, connect_with};
pub use io::{WsError, WsIo, WsMessage};
pub use js::{GOTALK_JS, etag as gotalk_js_etag};
pub use server::{
    CAPS_QUERY_PARAM, OriginPolicy, RemoteCapabilities, WsConfig, WsConnecting, WsListener, router,
};
pub use stream::WsStream;
