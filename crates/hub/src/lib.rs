//! Channels and rooms with publish/subscribe, auth and access levels,
//! presence, history with resume, and lifecycle hooks, on
//! [gotalk](gotalk_peer) connections; one process or many nodes over Redis.
//!
//! The layers:
//! - [`broker`]: how publications travel between nodes and where history
//!   and presence live ([`broker::memory::MemoryBroker`] in one process,
//!   `broker::redis::RedisBroker` across nodes).
//! - [`auth`]: tokens to identities and per-channel access levels.

pub mod auth;
pub mod broker;
