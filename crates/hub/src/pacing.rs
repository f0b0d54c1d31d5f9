//! Pacing of client publications by how late the node's connections run.
//!
//! A client's `publish` is answered once its deliveries are queued, so a
//! publisher that keeps a window of publications open is slowed by nothing
//! but the node's CPU: on a saturated node it queues publications faster
//! than the connections write them, and every delivery waits behind that
//! queue (tokio's LIFO slot even runs the publisher's connection, woken by
//! its socket, ahead of the subscriber connections already waiting).
//! Socket.IO has no such queue because it writes before it acknowledges,
//! which also caps each write at what one acknowledgement let in.
//!
//! The middle way: measure how long a task woken now waits for its turn
//! (the run-queue delay; a subscriber connection woken by a fan-out waits
//! that long to write), and hold publish answers behind the node's writes
//! only while that delay is over a target. Below it, publishers run ahead
//! and subscribers get several publications per write; over it, each
//! answer waits for the writes its fan-out caused, which lets the queue
//! drain back to the target. The delay is measured by the held answers
//! themselves, and by one probe at a time while the node is on schedule.

use std::{
    sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use gotalk_peer::Context;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Pacing {
    /// The run-queue delay over which answers are held, in nanoseconds.
    target: u64,
    /// The latest run-queue delay measured, in nanoseconds.
    delay: AtomicU64,
    /// A probe is out: a publish measuring the delay while the node is on
    /// schedule.
    probing: AtomicBool,
}

impl Pacing {
    pub(crate) fn new(target: Duration) -> Self {
        Self {
            target: nanos(target),
            delay: AtomicU64::new(0),
            probing: AtomicBool::new(false),
        }
    }

    /// Called by a client's publish once its deliveries are queued, on the
    /// handler's task: returns when it may be answered.
    pub(crate) async fn before_answer(&self, ctx: &Context) {
        let probe = Probe::take(&self.probing);
        if probe.is_none() && !self.behind() {
            return;
        }
        let start = Instant::now();
        ctx.yield_behind_woken().await;
        if probe.is_some() {
            self.measured(start.elapsed());
        }
    }

    /// Whether the latest delay measured is over the target.
    pub(crate) fn behind(&self) -> bool {
        self.delay.load(Relaxed) > self.target
    }

    pub(crate) fn measured(&self, delay: Duration) {
        self.delay.store(nanos(delay), Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The probe's place, given back when the probe ends or is dropped (its
/// connection closed while it waited).
struct Probe<'a>(&'a AtomicBool);

impl<'a> Probe<'a> {
    fn take(flag: &'a AtomicBool) -> Option<Self> {
        (!flag.swap(true, Relaxed)).then_some(Self(flag))
    }
}

impl Drop for Probe<'_> {
    fn drop(&mut self) {
        self.0.store(false, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behind_only_over_the_target() {
        let pacing = Pacing::new(Duration::from_millis(10));
        assert!(!pacing.behind());
        pacing.measured(Duration::from_millis(10));
        assert!(!pacing.behind());
        pacing.measured(Duration::from_millis(11));
        assert!(pacing.behind());
        pacing.measured(Duration::from_micros(50));
        assert!(!pacing.behind());
    }

    #[test]
    fn one_probe_at_a_time_and_its_place_comes_back() {
        let flag = AtomicBool::new(false);
        let probe = Probe::take(&flag).expect("the first probe");
        assert!(Probe::take(&flag).is_none());
        drop(probe);
        assert!(Probe::take(&flag).is_some());
    }
}
