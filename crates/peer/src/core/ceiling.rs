//! One bound on the bytes waiting in many connections' write queues.

use std::{
    fmt,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

/// A bound on the bytes waiting to be written across every connection
/// whose [`Config::write_ceiling`](crate::Config::write_ceiling) is a clone
/// of it, on top of each one's
/// [`max_write_queue_bytes`](crate::Config::max_write_queue_bytes).
///
/// While the total is over the ceiling, a connection with bytes already
/// waiting has no room: [`Peer::notify`](crate::Peer::notify) and requests
/// wait for its writer, and [`Peer::try_notify`](crate::Peer::try_notify)
/// closes it as a slow consumer. A connection whose queue is empty always
/// takes its next frame, so the readers that keep up are not stopped by
/// the ones that do not.
///
/// A queue is charged in steps of 1 KiB, not frame by frame (the counter
/// is shared by every connection of the process): up to 1 KiB of each
/// queue is not counted.
///
/// ```
/// use gotalk_peer::{Config, WriteCeiling};
/// let ceiling = WriteCeiling::new(256 * 1024 * 1024);
/// let config = Config { write_ceiling: ceiling.clone(), ..Config::default() };
/// assert_eq!(ceiling.queued(), 0);
/// # let _ = config;
/// ```
#[derive(Clone)]
pub struct WriteCeiling(Arc<Shared>);

struct Shared {
    queued: AtomicUsize,
    limit: usize,
}

impl WriteCeiling {
    /// The ceiling [`Config::default`](crate::Config::default) shares
    /// across the process: 1 GiB.
    pub const PROCESS_DEFAULT: usize = 1 << 30;

    /// A new ceiling of `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Self(Arc::new(Shared {
            queued: AtomicUsize::new(0),
            limit,
        }))
    }

    /// The one ceiling shared by every [`Config::default`](crate::Config::default)
    /// of this process.
    pub fn process_default() -> Self {
        static DEFAULT: OnceLock<WriteCeiling> = OnceLock::new();
        DEFAULT
            .get_or_init(|| WriteCeiling::new(Self::PROCESS_DEFAULT))
            .clone()
    }

    /// Bytes waiting now, across the connections sharing it.
    pub fn queued(&self) -> usize {
        self.0.queued.load(Ordering::Relaxed)
    }

    /// The ceiling, in bytes.
    pub fn limit(&self) -> usize {
        self.0.limit
    }

    pub(crate) fn is_reached(&self) -> bool {
        self.queued() >= self.0.limit
    }

    pub(crate) fn add(&self, n: usize) {
        self.0.queued.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sub(&self, n: usize) {
        self.0.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

impl fmt::Debug for WriteCeiling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteCeiling")
            .field("queued", &self.queued())
            .field("limit", &self.limit())
            .finish()
    }
}
