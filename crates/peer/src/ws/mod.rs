//! gotalk over WebSocket (feature `websocket`): a server that also serves
//! the browser client, and a client for `ws://` and `wss://` URLs.
//!
//! The wire mapping is the one of the original Go package and gotalk.js:
//! the version is one WebSocket message, every gotalk header is one binary
//! message and its payload, when not empty, is the next message. Reading
//! accepts binary and text messages and any split of the byte stream, but a
//! message that must be one payload and has the wrong length is an invalid
//! message (ProtocolError 2), never read into the next frame. See [`WsIo`]
//! and `docs/websocket.md`.
//!
//! - [`WsServer`] / [`router`]: an axum [`Router`](axum::Router) that
//!   upgrades at a mount path (default `/gotalk/`) and serves
//!   [`GOTALK_JS`] at any path under it ending in `/gotalk.js`. Merge it
//!   into your app, or let [`WsServer::serve`] / [`serve`] bind an address.
//! - [`connect`]: a `ws://` or `wss://` URL to a [`Peer`](crate::Peer).
//! - [`WsConfig::wrap_io`] / [`WsClientConfig::wrap_io`]: wrap a
//!   connection's gotalk byte stream ([`BoxedIo`]) between the WebSocket
//!   upgrade and the gotalk handshake, e.g. to trace every frame.
//! - Browser peers are assumed to be the original gotalk.js unless they say
//!   otherwise ([`RemoteCapabilities`]); the default [`OriginPolicy`] admits
//!   same-origin pages and non-browser clients.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use gotalk_peer::{Config, HandlerError, Handlers, ws};
//! let handlers = Handlers::new()
//!     .buffer("echo", |_ctx, p| async move { Ok::<_, HandlerError>(p) });
//! let server = ws::serve("127.0.0.1:0", handlers, Config::default(), ws::WsConfig::default()).await?;
//!
//! let url = format!("ws://{}/gotalk/", server.local_addr());
//! let peer = ws::connect(&url, Handlers::new(), Config::default()).await?;
//! assert_eq!(peer.request("echo", "hi").await?, "hi");
//! server.shutdown().await;
//! # Ok(()) }
//! ```

mod adapters;
mod client;
mod error;
mod framing;
mod io;
mod js;
pub(crate) mod server;

pub use client::{ClientWrapIo, ConnectError, WsClientConfig, connect, connect_with};
pub use io::{WsError, WsIo, WsMessage};
pub use js::{GOTALK_JS, etag as gotalk_js_etag};
pub use server::{
    AsyncReadWrite, BoxedIo, CAPS_QUERY_PARAM, ConnectCallback, ConnectionInfo, OriginPolicy,
    RemoteCapabilities, ServeHandle, ServerWrapIo, WsConfig, WsServer, router, serve,
};
