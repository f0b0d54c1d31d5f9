//! The byte budget: payload bytes held on behalf of the peer.
//!
//! Counted, not awaited: what was read is charged, and released explicitly
//! when its consumer is done with it. Over the limit the connection stops
//! reading (see [`Core::wants_read`](super::Core::wants_read)), and new
//! single requests with large payloads are refused.

/// Payloads below this size are not charged when a handler holds them: the
/// request and notification count limits already bound them (1024 × 4 KiB
/// by default), and the common small request stays off the budget.
pub(crate) const CHARGE_MIN: usize = 4 * 1024;

/// Bytes charged to the budget, given back with
/// [`Core::respond`](super::Core::respond),
/// [`Core::notification_done`](super::Core::notification_done) or a
/// [`Credit`](super::Credit).
#[derive(Debug, Default, PartialEq, Eq)]
#[must_use = "a charge must be given back to the core"]
pub struct Charge(pub(crate) usize);

impl Charge {
    /// Nothing charged.
    pub const NONE: Charge = Charge(0);

    /// The bytes charged.
    pub fn bytes(&self) -> usize {
        self.0
    }

    /// Adds `other` to this charge, to give both back at once.
    pub fn absorb(&mut self, other: Charge) {
        self.0 += other.0;
    }

    /// Takes the whole charge out, leaving nothing.
    pub fn take(&mut self) -> Charge {
        Charge(std::mem::take(&mut self.0))
    }
}

#[derive(Debug)]
pub(crate) struct Budget {
    used: usize,
    max: usize,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            used: 0,
            max: max.max(1),
        }
    }

    /// What a payload of `len` bytes is charged: clamped, so that one
    /// maximal payload always fits an empty budget.
    fn cost(&self, len: usize) -> usize {
        len.min(self.max)
    }

    /// Charges `len` bytes if they fit.
    pub(crate) fn try_charge(&mut self, len: usize) -> Option<Charge> {
        let cost = self.cost(len);
        if self.used + cost > self.max {
            return None;
        }
        self.used += cost;
        Some(Charge(cost))
    }

    /// Charges `len` bytes if they fit with room to spare: after it the
    /// budget is not used up, so reading goes on.
    pub(crate) fn try_charge_below(&mut self, len: usize) -> Option<Charge> {
        let cost = self.cost(len);
        if self.used + cost >= self.max {
            return None;
        }
        self.used += cost;
        Some(Charge(cost))
    }

    /// Charges `len` bytes that were already read, over the limit if need be
    /// (reading then pauses).
    pub(crate) fn charge(&mut self, len: usize) -> Charge {
        let cost = self.cost(len);
        self.used += cost;
        Charge(cost)
    }

    pub(crate) fn release(&mut self, charge: Charge) {
        debug_assert!(charge.0 <= self.used, "released more than charged");
        self.used = self.used.saturating_sub(charge.0);
    }

    /// True while there is room to read more.
    pub(crate) fn has_room(&self) -> bool {
        self.used < self.max
    }

    pub(crate) fn used(&self) -> usize {
        self.used
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// Picks the waits put in `request rate limit` retry results (xorshift: no
/// need for cryptographic randomness to spread retries; seeded by the
/// runtime, so that tests are deterministic).
#[derive(Debug)]
pub(crate) struct Jitter(u64);

impl Jitter {
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number of milliseconds in `min..=max`.
    pub(crate) fn between(&mut self, min: u64, max: u64) -> u64 {
        let (min, max) = (min.min(max), min.max(max));
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        // `span + 1` is never 0, so equal bounds are fine (the Go package
        // crashes on them).
        min + x % (max - min).saturating_add(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_are_clamped_and_counted() {
        let mut b = Budget::new(100);
        let a = b.try_charge(60).unwrap();
        assert!(b.try_charge(60).is_none());
        let big = b.charge(1000);
        assert_eq!(big.bytes(), 100, "clamped to the whole budget");
        assert_eq!(b.used(), 160);
        assert!(!b.has_room());
        b.release(big);
        b.release(a);
        assert_eq!(b.used(), 0);
        assert!(b.has_room());
    }

    #[test]
    fn jitter_stays_in_range_even_when_bounds_are_equal() {
        let mut j = Jitter::new(42);
        for _ in 0..100 {
            assert_eq!(j.between(7, 7), 7);
        }
        for _ in 0..1000 {
            assert!((10..=20).contains(&j.between(10, 20)));
        }
    }
}
