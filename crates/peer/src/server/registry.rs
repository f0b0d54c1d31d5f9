//! The live connections of a server.

use std::{
    collections::BTreeMap,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
};

use crate::Peer;

/// The open connections of a [`Server`](crate::Server), by
/// [`ConnectionInfo::id`](crate::ConnectionInfo::id).
///
/// Cheap to clone: clones share one registry. A server makes its own, or
/// takes one with [`Server::with_connections`](crate::Server::with_connections) so
/// handlers can reach every other connection (to relay a notification,
/// say). Connections are in it from just before their first message is
/// read until they close.
#[derive(Clone)]
pub struct Connections {
    inner: Arc<Inner>,
}

struct Inner {
    next: AtomicU64,
    live: Mutex<BTreeMap<u64, Peer>>,
}

impl Default for Connections {
    fn default() -> Self {
        Self {
            inner: Arc::new(Inner {
                next: AtomicU64::new(1),
                live: Mutex::new(BTreeMap::new()),
            }),
        }
    }
}

impl fmt::Debug for Connections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connections")
            .field("len", &self.len())
            .finish()
    }
}

impl Connections {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The connection numbered `id`, if open.
    pub fn get(&self, id: u64) -> Option<Peer> {
        self.lock().get(&id).cloned()
    }

    /// The open connections, by number.
    pub fn list(&self) -> Vec<(u64, Peer)> {
        self.lock().iter().map(|(id, p)| (*id, p.clone())).collect()
    }

    /// Handles to the open connections.
    pub fn peers(&self) -> Vec<Peer> {
        self.lock().values().cloned().collect()
    }

    /// How many connections are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// Closes every open connection gracefully and waits until they are
    /// closed (each lets its requests in flight finish, up to its
    /// [`Config::close_timeout`](crate::Config::close_timeout)).
    pub async fn close_all(&self) {
        let peers = self.peers();
        futures::future::join_all(peers.iter().map(Peer::close)).await;
    }

    /// A number for a new connection (from 1).
    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn insert(&self, id: u64, peer: Peer) {
        self.lock().insert(id, peer);
    }

    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Peer>> {
        self.inner.live.lock().unwrap_or_else(|p| p.into_inner())
    }
}
