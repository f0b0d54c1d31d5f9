//! The one way the hub sends a notification to a subscriber.

use bytes::Bytes;
use futures::FutureExt;
use gotalk_peer::Peer;

/// Queues notification `name` on `peer` without waiting.
///
/// Fan-out runs under a channel's lock, in the publisher's (or the
/// broker's) task: it must never wait for one connection. A connection
/// whose write queue is full is a consumer that does not keep up: it is
/// closed, and the hub's session cleanup removes what it had; the other
/// subscribers go on receiving everything. `Err` means the connection is
/// (now) closed.
pub(crate) fn notify(peer: &Peer, name: &str, payload: Bytes) -> Result<(), ()> {
    // `notify` completes on its first poll when the queue has room; when
    // it does not, the future is dropped before it waited for anything.
    match peer.notify(name, payload).now_or_never() {
        Some(Ok(())) => Ok(()),
        Some(Err(_)) => Err(()),
        None => {
            tracing::info!(remote = ?peer.remote_addr(), "closing a slow consumer: its write queue is full");
            peer.abort();
            Err(())
        }
    }
}
