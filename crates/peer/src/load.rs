//! The load figure heartbeats carry: what we send (how close a new request
//! from the peer is to being refused) and what the peer last reported.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::{Duration, Instant};

/// The load a connection's heartbeats report when
/// [`Config::heartbeat_load`](crate::Config::heartbeat_load) is not set: the
/// fuller of the two limits a new request from the peer could hit, scaled
/// to `0..=65535`. One is the connection's own, requests being handled
/// over [`Config::max_inbound_requests`](crate::Config::max_inbound_requests);
/// the other is the process's, handlers running over the
/// [`HandlerLimit`](crate::HandlerLimit) the connection shares with others.
/// Either one full means new requests get retry results, so the figure
/// reaches 65535 exactly when the server starts refusing work.
pub(crate) fn measured(inbound: usize, max_inbound: usize, running: usize, limit: usize) -> u16 {
    let fraction = ratio(inbound, max_inbound).max(ratio(running, limit));
    (fraction * f64::from(u16::MAX)).round() as u16
}

/// `used / max` in `0.0..=1.0`; a limit of 0 counts as full.
fn ratio(used: usize, max: usize) -> f64 {
    if max == 0 {
        1.0
    } else {
        (used as f64 / max as f64).min(1.0)
    }
}

/// The load the remote side last reported in a heartbeat, as
/// [`Peer::remote_load`](crate::Peer::remote_load) returns it.
///
/// ```
/// use gotalk_peer::RemoteLoad;
/// # let load = RemoteLoad::new(16_384, tokio::time::Instant::now());
/// // A quarter of its capacity in use.
/// assert!((load.fraction() - 0.25).abs() < 0.001);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteLoad {
    /// The figure, from 0 (idle) to 65535 (refusing work).
    pub load: u16,
    /// When the heartbeat carrying it was received (tokio's clock, so
    /// paused time in tests moves it).
    pub received: Instant,
}

impl RemoteLoad {
    /// A load figure received at `received`.
    pub fn new(load: u16, received: Instant) -> Self {
        Self { load, received }
    }

    /// The load as a share of capacity, `0.0..=1.0`.
    pub fn fraction(&self) -> f64 {
        f64::from(self.load) / f64::from(u16::MAX)
    }

    /// How long ago it was received.
    pub fn age(&self) -> Duration {
        self.received.elapsed()
    }
}

/// The last [`RemoteLoad`] of a connection in one atomic word, so that
/// balancers can read it for every pick without taking a lock: the low 16
/// bits are the load, the rest the microseconds from `base` to its receipt
/// plus one (0: none received yet). 48 bits of microseconds last 8 years.
#[derive(Debug)]
pub(crate) struct RemoteLoadCell {
    base: Instant,
    word: AtomicU64,
}

impl RemoteLoadCell {
    pub(crate) fn new() -> Self {
        Self {
            base: Instant::now(),
            word: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, load: u16) {
        let micros = Instant::now()
            .saturating_duration_since(self.base)
            .as_micros();
        let stamp = (micros as u64).min((1 << 48) - 2) + 1;
        self.word
            .store(stamp << 16 | u64::from(load), Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Option<RemoteLoad> {
        let word = self.word.load(Ordering::Relaxed);
        let stamp = word >> 16;
        (stamp != 0).then(|| RemoteLoad {
            load: word as u16,
            received: self.base + Duration::from_micros(stamp - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fuller_limit_sets_the_figure() {
        assert_eq!(measured(0, 1024, 0, 65_536), 0);
        assert_eq!(measured(512, 1024, 0, 65_536), 32_768);
        assert_eq!(measured(1, 1024, 3, 4), 49_151);
        assert_eq!(measured(2000, 1024, 0, 10), u16::MAX, "capped");
        assert_eq!(measured(0, 0, 0, 10), u16::MAX, "a zero limit is full");
    }

    #[tokio::test(start_paused = true)]
    async fn the_cell_keeps_the_last_load_and_when_it_came() {
        let cell = RemoteLoadCell::new();
        assert_eq!(cell.get(), None);
        tokio::time::advance(Duration::from_millis(1500)).await;
        cell.record(0);
        let first = cell.get().unwrap();
        assert_eq!(first.load, 0, "a zero load is a figure, not none");
        assert_eq!(first.received, cell.base + Duration::from_millis(1500));
        tokio::time::advance(Duration::from_secs(2)).await;
        cell.record(65_535);
        let second = cell.get().unwrap();
        assert_eq!(second.load, 65_535);
        assert_eq!(second.age(), Duration::ZERO);
        assert_eq!(second.received - first.received, Duration::from_secs(2));
    }
}
