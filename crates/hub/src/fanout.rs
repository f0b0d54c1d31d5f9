//! The one way the hub sends a notification to a subscriber.

use bytes::Bytes;
use gotalk_peer::Peer;

/// Queues notification `name` on `peer` without waiting (a `payload` over
/// 1 KiB is shared by every subscriber of the delivery, not copied).
///
/// Fan-out runs under a channel's lock, in the publisher's (or the
/// broker's) task: it must never wait for one connection. A connection
/// whose write queue is already over its limit is a consumer that does
/// not keep up: the peer closes it (`CloseReason::SlowConsumer`), and the
/// hub's session cleanup removes what it had, while the other subscribers
/// go on receiving everything. `Err` means the connection is closed.
///
/// With `by`, the notification may wait in the connection's queue until
/// then, to be written with what reaches it meanwhile
/// ([`Peer::try_notify_by`]).
pub(crate) fn notify(
    peer: &Peer,
    name: &str,
    payload: Bytes,
    by: Option<tokio::time::Instant>,
) -> Result<(), gotalk_peer::Error> {
    match by {
        Some(by) => peer.try_notify_by(name, payload, by),
        None => peer.try_notify(name, payload),
    }
    .inspect_err(|e| {
        tracing::debug!(remote = ?peer.remote_addr(), channel = name, error = %e, "subscriber dropped");
    })
}
