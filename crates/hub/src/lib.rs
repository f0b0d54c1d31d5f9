//! Channels and rooms with publish/subscribe, auth and access levels,
//! presence, history with resume, and lifecycle hooks, on
//! [gotalk](gotalk_peer) connections; one process or many nodes over Redis.
//!
//! Clients use plain gotalk: requests (`subscribe`, `publish`, `presence`,
//! `history`, `auth`, `unsubscribe`) with JSON payloads, and one
//! notification named by the channel for every delivery, so the original
//! Go package and gotalk.js work as they are. `docs/hub.md` in the
//! repository has the wire mapping and the user guide.
//!
//! The layers:
//! - [`Hub`], built with [`Hub::builder`]: serves the operations
//!   ([`Hub::handlers`]) to the connections of a [`Server`](gotalk_peer::Server)
//!   ([`Hub::attach`]), and the process ([`Hub::publish`], ...).
//! - [`Hooks`]: the application's say (admit, deny, rewrite), on top of
//!   the per-channel [`auth::Permissions`] of each connection.
//! - [`broker`]: how publications travel between nodes and where history
//!   and presence live ([`broker::memory::MemoryBroker`] in one process,
//!   `broker::redis::RedisBroker` across nodes).
//! - [`auth`]: tokens to identities and per-channel access levels.
//!
//! Inside, each node subscribes once per channel at its broker, encodes
//! each delivery once and hands the same bytes to every local subscriber
//! without waiting for any ([`Peer::try_notify`](gotalk_peer::Peer::try_notify):
//! a subscriber that does not keep up is disconnected, the others are not
//! slowed down).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use gotalk_hub::{Hub, broker::HistoryOptions};
//! use gotalk_peer::{Config, Handlers, Server};
//!
//! let hub = Hub::builder()
//!     .history("chat:*", HistoryOptions { size: 100, ttl: Duration::from_secs(300) })
//!     .build()
//!     .await?;
//! let handlers = hub.handlers(Handlers::new()); // plus your own operations
//! let server = hub
//!     .attach(Server::bind("127.0.0.1:0", handlers, Config::default()).await?)
//!     .spawn();
//! hub.publish("chat:lobby", &serde_json::json!({"text": "server says hi"})).await?;
//! # server.shutdown().await;
//! # Ok(()) }
//! ```

pub mod auth;
pub mod broker;

mod builder;
mod client;
mod config;
mod error;
mod fanout;
mod hooks;
mod hub;
mod id;
mod lifecycle;
mod node;
mod ops;
mod pacing;
mod presence;
mod token_source;
mod wire;

pub use builder::HubBuilder;
pub use config::Limits;
pub use error::HubError;
pub use hooks::{ClientContext, Denied, Hooks, LeaveReason};
pub use hub::{Hub, HubStats};
pub use token_source::TokenSource;
