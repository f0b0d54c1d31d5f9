//! A histogram kept as Prometheus renders it: a count per bucket and a sum.
//!
//! `metrics-exporter-prometheus` keeps every sample in a lock-free list
//! until a scrape folds it into buckets: about 160 instructions per sample
//! on the request path, the largest part of what `serve --metrics` cost per
//! request. Here a sample is one search over the bounds and two atomic
//! adds; a scrape reads the counts as they are.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use metrics::HistogramFn;

/// Counts per bucket (`le` bounds, ascending, then `+Inf`) and the sum of
/// the samples.
#[derive(Debug)]
pub(crate) struct Buckets {
    bounds: Box<[f64]>,
    /// One per bound, then one for the samples above the last bound.
    counts: Box<[AtomicU64]>,
    /// The sum as `f64` bits.
    sum: AtomicU64,
}

/// What a scrape reads: cumulative counts per bound, the count, the sum.
#[derive(Debug, PartialEq)]
pub(crate) struct Snapshot {
    /// `(le, samples ≤ le)`, ascending; `+Inf`'s figure is `count`.
    pub(crate) cumulative: Vec<(f64, u64)>,
    pub(crate) count: u64,
    pub(crate) sum: f64,
}

impl Buckets {
    /// Buckets with these upper bounds. Bounds that are not finite, and
    /// duplicates, are dropped; the rest are sorted.
    pub(crate) fn new(bounds: &[f64]) -> Self {
        let mut bounds: Vec<f64> = bounds.iter().copied().filter(|b| b.is_finite()).collect();
        bounds.sort_by(f64::total_cmp);
        bounds.dedup();
        let counts = (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect();
        Self {
            bounds: bounds.into(),
            counts,
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// The counts as they are now. Samples recorded meanwhile may be in
    /// the counts and not yet in the sum, or the other way round: each
    /// figure is exact, the set is not a snapshot taken at one instant.
    pub(crate) fn snapshot(&self) -> Snapshot {
        let mut total = 0;
        let cumulative = self
            .bounds
            .iter()
            .zip(self.counts.iter())
            .map(|(&le, n)| {
                total += n.load(Relaxed);
                (le, total)
            })
            .collect();
        total += self.counts[self.bounds.len()].load(Relaxed);
        Snapshot {
            cumulative,
            count: total,
            sum: f64::from_bits(self.sum.load(Relaxed)),
        }
    }
}

impl HistogramFn for Buckets {
    #[inline]
    fn record(&self, value: f64) {
        if value.is_nan() {
            // In no bucket, and it would turn the sum into NaN for good.
            return;
        }
        // The first bound at or above the value: Prometheus buckets are
        // "less than or equal". Scanned from the lowest: latencies sit
        // mostly in the first buckets, where this stops at once (a binary
        // search took 43 instructions per sample over 17 bounds).
        let i = self
            .bounds
            .iter()
            .position(|&b| value <= b)
            .unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        let mut sum = self.sum.load(Relaxed);
        loop {
            let new = (f64::from_bits(sum) + value).to_bits();
            match self.sum.compare_exchange_weak(sum, new, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(now) => sum = now,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_sample_on_a_bound_is_counted_in_that_bucket() {
        let h = Buckets::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 1.0, 3.0, f64::INFINITY, -1.0] {
            h.record(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![(0.1, 3), (1.0, 5)]);
        assert_eq!(s.count, 7);
        assert_eq!(s.sum, f64::INFINITY);
    }

    #[test]
    fn nan_is_ignored_and_bounds_are_cleaned_up() {
        let h = Buckets::new(&[1.0, f64::NAN, 0.5, 1.0, f64::INFINITY]);
        h.record(f64::NAN);
        h.record(0.25);
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![(0.5, 1), (1.0, 1)]);
        assert_eq!((s.count, s.sum), (1, 0.25));
    }

    #[test]
    fn concurrent_samples_are_all_counted() {
        let h = std::sync::Arc::new(Buckets::new(&[0.5]));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let h = h.clone();
                std::thread::spawn(move || (0..10_000).for_each(|_| h.record(1.0)))
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let s = h.snapshot();
        assert_eq!((s.count, s.sum), (40_000, 40_000.0));
        assert_eq!(s.cumulative, vec![(0.5, 0)]);
    }

    proptest! {
        /// Each cumulative count is the number of samples at or below its
        /// bound, computed the slow way.
        #[test]
        fn cumulative_counts_match_a_direct_count(
            bounds in proptest::collection::vec(-10.0f64..10.0, 0..8),
            samples in proptest::collection::vec(-20.0f64..20.0, 0..64),
        ) {
            let h = Buckets::new(&bounds);
            samples.iter().for_each(|&v| h.record(v));
            let s = h.snapshot();
            prop_assert_eq!(s.count, samples.len() as u64);
            let mut last = 0;
            for (le, n) in s.cumulative {
                prop_assert_eq!(n, samples.iter().filter(|&&v| v <= le).count() as u64);
                prop_assert!(n >= last);
                last = n;
            }
            let sum: f64 = samples.iter().sum();
            prop_assert!((s.sum - sum).abs() <= 1e-9 * (1.0 + sum.abs()));
        }
    }
}
