//! Brokers: how publications travel between the nodes of a hub, and where
//! channel history and presence live.
//!
//! A hub node hands every publication to its [`Broker`], and the broker
//! hands it back, in order, to every node that has subscribers for the
//! channel (this one included) through the [`BrokerSink`] given to
//! [`Broker::start`]. [`MemoryBroker`](memory::MemoryBroker) does that
//! inside one process; `RedisBroker` (feature `redis`) through Redis, so
//! that several nodes behind a load balancer form one hub.
//!
//! The contract every broker keeps (and `tests/support/contract.rs` checks
//! for each one):
//! - Per channel, publications get increasing offsets (1, 2, 3, ...) within
//!   an epoch, and every node receives them in offset order, each once.
//! - With history enabled for a channel, the last publications are kept
//!   ([`HistoryOptions`]); [`Broker::history`] returns those after a
//!   position, or says the position is gone (another epoch, or trimmed).
//! - A broker that loses its connection to the backend reconnects and
//!   resubscribes by itself and then calls [`BrokerSink::resubscribed`], so
//!   the hub can fetch from history what was published meanwhile.
//! - Failures are [`BrokerError`]s, never panics.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub mod memory;
#[cfg(feature = "redis")]
pub mod redis;

/// A position in a channel's stream of publications: the offset of the
/// last publication seen, in the channel's current epoch.
///
/// The epoch changes when the channel's history is lost (a broker restart
/// without persistence, say); offsets of different epochs are unrelated.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StreamPosition {
    /// Offset of the last publication (0 before the first).
    pub offset: u64,
    /// The history's epoch.
    pub epoch: String,
}

/// Who published or joined: the connection's identity as the hub knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientInfo {
    /// The authenticated user (empty for anonymous connections).
    pub user: String,
    /// The connection's unique id across the cluster.
    pub client: String,
}

/// One publication on a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publication {
    /// Its offset in the channel's stream (see [`StreamPosition`]).
    pub offset: u64,
    /// The payload, as published (JSON for publications from clients).
    pub data: Bytes,
    /// The publisher, when it was a client.
    pub info: Option<ClientInfo>,
}

/// What a broker delivers to a node for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// A publication, with the epoch it belongs to.
    Publication {
        /// The channel's epoch.
        epoch: Arc<str>,
        /// The publication.
        publication: Publication,
    },
    /// A client joined the channel's presence.
    Join(ClientInfo),
    /// A client left the channel's presence.
    Leave(ClientInfo),
}

/// How a channel keeps history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryOptions {
    /// How many publications to keep (0: no history, only offsets).
    pub size: usize,
    /// How long the history lives after the last publication.
    pub ttl: Duration,
}

impl Default for HistoryOptions {
    fn default() -> Self {
        Self {
            size: 0,
            ttl: Duration::from_secs(300),
        }
    }
}

/// Options for one publish.
#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    /// History for the channel.
    pub history: HistoryOptions,
    /// The publisher, when it is a client.
    pub info: Option<ClientInfo>,
}

/// What [`Broker::history`] asks for.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Publications after this position; `None` for the most recent ones.
    pub since: Option<StreamPosition>,
    /// At most this many publications (0: none, only the current position).
    pub limit: usize,
}

/// What [`Broker::history`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct History {
    /// The publications after `since`, oldest first.
    pub publications: Vec<Publication>,
    /// The channel's current position (offset of its latest publication).
    pub position: StreamPosition,
    /// With `since`: false when the publications after it are not all
    /// there any more (other epoch, or trimmed past it), so the caller
    /// missed some and must say so to its client. When trimmed in the same
    /// epoch, `publications` still holds what is kept after `since`; for
    /// another epoch it is empty.
    pub complete: bool,
}

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// The backend (Redis) could not be reached or failed; the operation
    /// did not happen (or its outcome is unknown, for a publish).
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The backend answered something this broker does not understand.
    #[error("broker protocol error: {0}")]
    Protocol(String),
    /// The broker was stopped.
    #[error("broker stopped")]
    Stopped,
}

/// Where a broker delivers what reaches this node (the hub implements it).
pub trait BrokerSink: Send + Sync + 'static {
    /// Called for each delivery on a channel this node subscribed to, in
    /// offset order per channel. Must not block: the hub queues and returns.
    fn deliver(&self, channel: &str, delivery: Delivery);

    /// Called after the broker lost its backend and got it back, with every
    /// subscription in place again. Publications made meanwhile were not
    /// delivered; the hub recovers them from history.
    fn resubscribed(&self);
}

/// How publications, history and presence are shared between hub nodes.
///
/// Object safe: the hub holds an `Arc<dyn Broker>`.
pub trait Broker: Send + Sync + 'static {
    /// Starts the broker: from now on deliveries go to `sink`. Called once,
    /// by the hub, before any other method.
    fn start(&self, sink: Arc<dyn BrokerSink>) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// Publishes `data` on `channel`: gives it the channel's next offset,
    /// keeps it in history (per `options.history`) and delivers it to every
    /// node subscribed to the channel. Returns the publication's position.
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        data: Bytes,
        options: &'a PublishOptions,
    ) -> BoxFuture<'a, Result<StreamPosition, BrokerError>>;

    /// Sends a presence event (join or leave) to every node subscribed to
    /// `channel`. Not kept in history.
    fn publish_presence<'a>(
        &'a self,
        channel: &'a str,
        event: &'a Delivery,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// This node now wants `channel`'s deliveries. Idempotent.
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// This node no longer wants `channel`'s deliveries. Idempotent.
    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// The channel's history after `query.since` (see [`History`]).
    fn history<'a>(
        &'a self,
        channel: &'a str,
        query: HistoryQuery,
    ) -> BoxFuture<'a, Result<History, BrokerError>>;

    /// Adds (or refreshes) `info` in `channel`'s presence for `ttl`; the
    /// hub refreshes live entries before they expire.
    fn add_presence<'a>(
        &'a self,
        channel: &'a str,
        info: &'a ClientInfo,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Removes connection `client` from `channel`'s presence.
    fn remove_presence<'a>(
        &'a self,
        channel: &'a str,
        client: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>>;

    /// Who is in `channel`'s presence now, across all nodes.
    fn presence<'a>(
        &'a self,
        channel: &'a str,
    ) -> BoxFuture<'a, Result<Vec<ClientInfo>, BrokerError>>;
}
