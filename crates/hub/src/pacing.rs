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
//! Holding every answer until the connections its fan-out woke have
//! written caps what a publisher gets in per round of the run queue at its
//! window, and with many small channels that leaves one or two
//! publications per write. Instead the node watches its run queue the way
//! CoDel watches a packet queue, by the time something spends in it: one
//! publication at a time is a probe, its answer requeued behind the tasks
//! woken so far. While the probe waits less than the target, and the last
//! one came back within it, other answers go at once, so publishers run
//! ahead and each write carries several publications. Otherwise every
//! answer is held behind the node's writes too, which slows the publishers
//! to the node's pace until a probe comes back in time. The probe out now
//! sees the work queued before it, the last one's wait the work queued
//! while it was out.

use std::{
    future::Future,
    sync::atomic::{AtomicU64, Ordering::Relaxed},
    time::{Duration, Instant},
};

use gotalk_peer::Context;

/// No probe is out.
const NONE: u64 = u64::MAX;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Pacing {
    /// What the times below count from.
    base: Instant,
    /// The longest a probe may wait before answers are held, in
    /// nanoseconds.
    target: u64,
    /// When the probe out now was requeued, in nanoseconds since `base`;
    /// [`NONE`] when none is out.
    probe_since: AtomicU64,
    /// How long the last probe waited, in nanoseconds.
    last_wait: AtomicU64,
}

/// What a publication's answer does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// Goes at once.
    Now,
    /// Is the probe: requeued, and the next one is taken after it.
    Probe,
    /// Is held behind the node's writes: the probe out, or the last one,
    /// has waited too long.
    Held,
}

impl Pacing {
    pub(crate) fn new(target: Duration) -> Self {
        Self {
            base: Instant::now(),
            target: nanos(target),
            probe_since: AtomicU64::new(NONE),
            last_wait: AtomicU64::new(0),
        }
    }

    /// Called by a client's publish once the broker has it, on the
    /// handler's task: returns when it may be answered. A held answer (or
    /// the probe's) first waits for `fanned_out`, this node's fan-out of
    /// the publication (at once with the memory broker; after the round
    /// trip through Redis), then for the writes it woke.
    pub(crate) async fn before_answer(&self, ctx: &Context, fanned_out: impl Future<Output = ()>) {
        let _back = match self.answer(self.now()) {
            Answer::Now => return,
            Answer::Held => None,
            Answer::Probe => Some(ProbeBack(self)),
        };
        fanned_out.await;
        ctx.yield_behind_woken().await;
    }

    /// The longest a held answer waits for this node's fan-out.
    pub(crate) fn fan_out_limit(&self) -> Duration {
        Duration::from_nanos(self.target.saturating_mul(4))
    }

    fn now(&self) -> u64 {
        nanos(self.base.elapsed()).min(NONE - 1)
    }

    fn answer(&self, now: u64) -> Answer {
        match self
            .probe_since
            .compare_exchange(NONE, now, Relaxed, Relaxed)
        {
            Ok(_) => Answer::Probe,
            Err(since)
                if now.saturating_sub(since) > self.target
                    || self.last_wait.load(Relaxed) > self.target =>
            {
                Answer::Held
            }
            Err(_) => Answer::Now,
        }
    }
}

/// Ends the probe when it is answered, or dropped (its connection closed
/// while it waited).
struct ProbeBack<'a>(&'a Pacing);

impl Drop for ProbeBack<'_> {
    fn drop(&mut self) {
        let pacing = self.0;
        let since = pacing.probe_since.load(Relaxed);
        pacing
            .last_wait
            .store(pacing.now().saturating_sub(since), Relaxed);
        pacing.probe_since.store(NONE, Relaxed);
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn one_probe_then_answers_at_once_until_it_has_waited_too_long() {
        let pacing = Pacing::new(Duration::from_millis(10));
        assert_eq!(pacing.answer(5 * MS), Answer::Probe);
        assert_eq!(pacing.answer(5 * MS), Answer::Now);
        assert_eq!(pacing.answer(15 * MS), Answer::Now, "10 ms: not over");
        assert_eq!(pacing.answer(15 * MS + 1), Answer::Held);
        assert_eq!(pacing.answer(40 * MS), Answer::Held);
        // Back after 35 ms: too long, so the answers stay held behind the
        // next probe until one comes back in time.
        pacing.last_wait.store(35 * MS, Relaxed);
        pacing.probe_since.store(NONE, Relaxed);
        assert_eq!(pacing.answer(41 * MS), Answer::Probe, "the next probe");
        assert_eq!(pacing.answer(42 * MS), Answer::Held);
        pacing.last_wait.store(2 * MS, Relaxed);
        pacing.probe_since.store(NONE, Relaxed);
        assert_eq!(pacing.answer(45 * MS), Answer::Probe);
        assert_eq!(pacing.answer(46 * MS), Answer::Now);
    }

    #[test]
    fn a_probe_back_records_how_long_it_waited() {
        let pacing = Pacing::new(Duration::from_millis(10));
        assert_eq!(pacing.answer(pacing.now()), Answer::Probe);
        std::thread::sleep(Duration::from_millis(2));
        drop(ProbeBack(&pacing));
        let waited = pacing.last_wait.load(Relaxed);
        assert!((2 * MS..1_000 * MS).contains(&waited), "{waited} ns");
        assert_eq!(pacing.probe_since.load(Relaxed), NONE);
    }

    #[test]
    fn a_lone_publishers_every_answer_is_a_probe() {
        let pacing = Pacing::new(Duration::from_millis(10));
        for t in 0..5 {
            assert_eq!(pacing.answer(t * MS), Answer::Probe);
            drop(ProbeBack(&pacing));
        }
    }
}
