//! Latencies of `gotalk bench`, recorded by many tasks into a few shared
//! histograms.
//!
//! A histogram per task cost the bench itself most with many connections:
//! 1 000 tasks whose histograms each grow as the latency does (a resize
//! copies the counts) and are merged at the end, about a third of the
//! client's instructions at 1 000 connections × 1 (callgrind). Instead each
//! task keeps its last [`BATCH`] latencies in a small array and adds them to
//! one of [`SHARDS`] histograms under its lock: one lock per batch, a
//! bounded number of histograms whatever the number of tasks, and few
//! enough shards per runtime thread that the locks are rarely contended.

use std::sync::{Arc, Mutex, MutexGuard};

use hdrhistogram::Histogram;

/// Histograms shared by the tasks.
const SHARDS: usize = 16;
/// Latencies a task keeps before adding them to its shard.
const BATCH: usize = 64;

/// The shared histograms of one run.
pub(crate) struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    pub(crate) fn new() -> Arc<Latencies> {
        Arc::new(Latencies {
            shards: (0..SHARDS).map(|_| Mutex::new(new_histogram())).collect(),
        })
    }

    /// A recorder for the `n`th task.
    pub(crate) fn recorder(self: &Arc<Self>, n: usize) -> Recorder {
        Recorder {
            pending: Vec::with_capacity(BATCH),
            latencies: self.clone(),
            shard: n % SHARDS,
        }
    }

    /// Everything recorded so far (recorders add theirs when dropped).
    pub(crate) fn merged(&self) -> Histogram<u64> {
        let mut total = new_histogram();
        for shard in &self.shards {
            // Same settings, auto-resizing: adding only fails past u64 counts.
            let _ = total.add(&*lock(shard));
        }
        total
    }
}

/// A panicking task cannot leave a histogram half-updated in a way that
/// matters here: its counts are still counts.
fn lock(shard: &Mutex<Histogram<u64>>) -> MutexGuard<'_, Histogram<u64>> {
    shard
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One task's way into the shared histograms: latencies in nanoseconds.
pub(crate) struct Recorder {
    pending: Vec<u64>,
    latencies: Arc<Latencies>,
    shard: usize,
}

impl Recorder {
    pub(crate) fn record(&mut self, nanos: u64) {
        self.pending.push(nanos);
        if self.pending.len() == BATCH {
            self.flush();
        }
    }

    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut h = lock(&self.latencies.shards[self.shard]);
        for nanos in self.pending.drain(..) {
            if h.record(nanos).is_err() {
                h.saturating_record(nanos);
            }
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Latencies in nanoseconds, 3 significant digits. Starts small (16 ns to
/// 1 ms) and grows to fit.
fn new_histogram() -> Histogram<u64> {
    let mut h = Histogram::new_with_bounds(16, 1 << 20, 3).expect("valid histogram bounds");
    h.auto(true);
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_grow_past_their_start() {
        let mut h = new_histogram();
        h.record(5_000_000_000).unwrap();
        h.record(100).unwrap();
        let mut total = new_histogram();
        total.add(&h).unwrap();
        assert_eq!(total.len(), 2);
        assert!(total.max() >= 4_999_000_000);
    }

    #[test]
    fn every_latency_of_every_recorder_is_merged() {
        let latencies = Latencies::new();
        let mut recorders: Vec<_> = (0..40).map(|n| latencies.recorder(n)).collect();
        for (n, r) in recorders.iter_mut().enumerate() {
            // Some below a batch, some over several.
            for i in 0..(n * 7) as u64 {
                r.record(1_000 + i);
            }
        }
        recorders[39].record(9_000_000_000);
        drop(recorders);
        let total = latencies.merged();
        assert_eq!(
            total.len(),
            (0..40).map(|n| n * 7).sum::<usize>() as u64 + 1
        );
        assert!(total.max() >= 8_999_000_000);
        assert!(total.equivalent(total.min(), 1_000), "{}", total.min());
    }
}
