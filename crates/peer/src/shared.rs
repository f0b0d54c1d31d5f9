//! What a connection's driver, its handles and its handler tasks share.

use std::{
    any::{Any, TypeId},
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use gotalk_proto::RequestId;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::{
    CloseReason, Config, Error, Handlers, Peer, state::ConnState, write_queue::WriteQueue,
};

/// One unit delivered to a stream consumer (a stream handler reading request
/// parts, or a caller reading result parts).
#[derive(Debug)]
pub(crate) enum Part {
    /// Payload bytes; the permit holds their share of the connection's
    /// buffer budget until the consumer takes them.
    Data(Bytes, Option<OwnedSemaphorePermit>),
    /// The stream ended normally.
    End,
    /// The stream ended with an error.
    Failed(Error),
}

pub(crate) type PartTx = mpsc::Sender<Part>;

/// The answer to a buffer request, as far as the driver is concerned.
#[derive(Debug)]
pub(crate) enum Outcome {
    Result(Bytes),
    Error(Bytes),
    Retry { wait_ms: u32, payload: Bytes },
}

/// How to reach the caller of an outbound request.
#[derive(Debug)]
pub(crate) enum Pending {
    /// A buffer request: one answer; a streamed result is collected.
    Buffer {
        tx: oneshot::Sender<Result<Outcome, Error>>,
        collected: Option<BytesMut>,
    },
    /// A stream request: parts go to the caller's `ResultStream`.
    Stream(PartTx),
}

/// Shutdown requested by the handles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shutdown {
    Running,
    /// Finish what is in flight (up to the close timeout), then close.
    Graceful,
    /// Close now.
    Now,
}

pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) handlers: Handlers,
    state: Mutex<ConnState<Pending, PartTx>>,
    pub(crate) queue: WriteQueue,
    /// Payload bytes buffered for stream consumers, connection-wide.
    pub(crate) budget: Arc<Semaphore>,
    /// Notification handlers running.
    pub(crate) notifications: Arc<Semaphore>,
    pub(crate) shutdown: watch::Sender<Shutdown>,
    /// Signalled when in-flight work finishes while closing.
    pub(crate) idle: Notify,
    close_reason: OnceLock<CloseReason>,
    closed: watch::Sender<bool>,
    /// Set once, by [`Shared::first_peer`].
    handle: OnceLock<Weak<HandleGuard>>,
    user_data: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    rng: AtomicU64,
    pub(crate) remote_addr: Option<String>,
}

/// Closes the connection when the last [`Peer`] handle is dropped.
#[derive(Debug)]
pub(crate) struct HandleGuard {
    shared: Arc<Shared>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.shared.request_shutdown(Shutdown::Graceful);
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("remote_addr", &self.remote_addr)
            .field("close_reason", &self.close_reason.get())
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        handlers: Handlers,
        remote_addr: Option<String>,
    ) -> Arc<Self> {
        let (shutdown, _) = watch::channel(Shutdown::Running);
        let (closed, _) = watch::channel(false);
        let budget = config.max_buffered_bytes.clamp(1, Semaphore::MAX_PERMITS);
        Arc::new(Self {
            state: Mutex::new(ConnState::new(
                config.max_inbound_requests,
                config.max_inbound_streams,
            )),
            queue: WriteQueue::new(config.max_write_queue_bytes),
            budget: Arc::new(Semaphore::new(budget)),
            notifications: Arc::new(Semaphore::new(config.max_concurrent_notifications.max(1))),
            shutdown,
            idle: Notify::new(),
            close_reason: OnceLock::new(),
            closed,
            handle: OnceLock::new(),
            user_data: Mutex::new(HashMap::new()),
            rng: AtomicU64::new(seed()),
            remote_addr,
            config,
            handlers,
        })
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, ConnState<Pending, PartTx>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new user handle, or `None` once every handle is gone (closing).
    pub(crate) fn peer(self: &Arc<Self>) -> Option<Peer> {
        let guard = self.handle.get()?.upgrade()?;
        Some(Peer::from_parts(self.clone(), guard))
    }

    /// The first handle; later ones come from [`Shared::peer`] or cloning.
    pub(crate) fn first_peer(self: &Arc<Self>) -> Peer {
        let guard = Arc::new(HandleGuard {
            shared: self.clone(),
        });
        let first = self.handle.set(Arc::downgrade(&guard)).is_ok();
        debug_assert!(first, "first_peer is called once per connection");
        Peer::from_parts(self.clone(), guard)
    }

    /// Asks the driver to close; never downgrades `Now` to `Graceful`.
    pub(crate) fn request_shutdown(&self, mode: Shutdown) {
        self.shutdown.send_if_modified(|current| {
            let escalate = matches!(
                (*current, mode),
                (Shutdown::Running, Shutdown::Graceful | Shutdown::Now)
                    | (Shutdown::Graceful, Shutdown::Now)
            );
            if escalate {
                *current = mode;
            }
            escalate
        });
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.close_reason.get().cloned()
    }

    /// The error for a call on a closed (or closing) connection.
    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed(self.close_reason().unwrap_or(CloseReason::Local))
    }

    pub(crate) fn subscribe_closed(&self) -> watch::Receiver<bool> {
        self.closed.subscribe()
    }

    /// Marks the connection closed and fails everything still waiting.
    /// Returns false if it was already closed.
    pub(crate) fn close(&self, reason: CloseReason) -> bool {
        if self.close_reason.set(reason.clone()).is_err() {
            return false;
        }
        self.queue.close(&reason);
        let (outbound, streams) = self.state().close();
        for pending in outbound {
            match pending {
                Pending::Buffer { tx, .. } => {
                    let _ = tx.send(Err(Error::Closed(reason.clone())));
                }
                Pending::Stream(tx) => {
                    let _ = tx.try_send(Part::Failed(Error::Closed(reason.clone())));
                }
            }
        }
        // Dropping the senders ends the handlers' part streams; they see the
        // close reason because no `End` was sent.
        drop(streams);
        self.idle.notify_waiters();
        true
    }

    /// Announces that closing is complete (the byte stream is shut).
    pub(crate) fn mark_closed(&self) {
        self.closed.send_replace(true);
    }

    pub(crate) fn set_user_data<T: Send + Sync + 'static>(&self, value: T) {
        self.user_data
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(TypeId::of::<T>(), Arc::new(value));
    }

    pub(crate) fn user_data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let data = self.user_data.lock().unwrap_or_else(|p| p.into_inner());
        data.get(&TypeId::of::<T>()).cloned()?.downcast::<T>().ok()
    }

    /// A wait in the configured rate-limit range (xorshift: no need for
    /// cryptographic randomness to spread retries).
    pub(crate) fn rate_limit_wait(&self) -> Duration {
        let (min, max) = self.config.rate_limit_wait;
        let (min, max) = (min.min(max), min.max(max));
        let span = (max - min).as_millis() as u64;
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        // `span + 1` is never 0, so equal bounds are fine (the Go package
        // crashes on them).
        min + Duration::from_millis(x % (span + 1))
    }

    /// The handler for the peer's request `id` finished (or never ran):
    /// frees its admission slot and wakes a graceful close waiting for the
    /// connection to go idle. Returns whether the connection still accepts work.
    pub(crate) fn finish_inbound(&self, id: RequestId, stream: bool) -> bool {
        let mut st = self.state();
        st.finish(id, stream);
        self.unlock_after_removal(st)
    }

    /// Forgets the outbound request `id` (its caller gave up) and wakes a
    /// graceful close waiting for it.
    pub(crate) fn forget_outbound(&self, id: RequestId) {
        let mut st = self.state();
        st.remove_outbound(id);
        self.unlock_after_removal(st);
    }

    /// Releases the state lock after a request left one of its tables, and
    /// wakes a graceful close if one is waiting. Returns whether the
    /// connection still accepts work.
    pub(crate) fn unlock_after_removal(
        &self,
        st: MutexGuard<'_, ConnState<Pending, PartTx>>,
    ) -> bool {
        let accepting = st.is_accepting();
        drop(st);
        self.work_done(accepting);
        accepting
    }

    /// Wakes a graceful close waiting for in-flight work, if closing.
    pub(crate) fn work_done(&self, accepting: bool) {
        if !accepting {
            self.idle.notify_waiters();
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (t ^ 0x2545_f491_4f6c_dd1d) | 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_wait_stays_in_range_even_when_bounds_are_equal() {
        let config = Config {
            rate_limit_wait: (Duration::from_millis(7), Duration::from_millis(7)),
            ..Config::default()
        };
        let shared = Shared::new(config, Handlers::new(), None);
        for _ in 0..100 {
            assert_eq!(shared.rate_limit_wait(), Duration::from_millis(7));
        }
        let config = Config {
            rate_limit_wait: (Duration::from_millis(10), Duration::from_millis(20)),
            ..Config::default()
        };
        let shared = Shared::new(config, Handlers::new(), None);
        for _ in 0..1000 {
            let w = shared.rate_limit_wait();
            assert!((Duration::from_millis(10)..=Duration::from_millis(20)).contains(&w));
        }
    }
}
