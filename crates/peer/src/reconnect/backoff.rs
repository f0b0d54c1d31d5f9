//! Exponential backoff with jitter between connect attempts.

use std::{
    collections::hash_map::RandomState,
    hash::{BuildHasher, Hasher},
    time::Duration,
};

/// How long a [`ReconnectingPeer`](crate::ReconnectingPeer) waits before
/// each connect attempt: exponential, capped, with jitter.
///
/// Attempts are numbered from 1 since the last connection that lived
/// [`ReconnectOptions::reset_after`](super::ReconnectOptions::reset_after)
/// or more. The wait before attempt `n` is `initial × multiplier^(n−1)`,
/// capped at `max`, less a random part of up to `jitter` of it, so that
/// clients cut off together do not all come back in the same instant. The
/// default is the browser client's: 500 ms doubling up to 5 s, with 20 %
/// jitter.
///
/// ```
/// use std::time::Duration;
/// use gotalk_peer::reconnect::Backoff;
///
/// let backoff = Backoff { jitter: 0.0, ..Backoff::default() };
/// let waits: Vec<_> = (1..=6).map(|n| backoff.base_delay(n)).collect();
/// assert_eq!(waits, [500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    /// The wait before the first attempt after a connection was lost.
    /// Default 500 ms.
    pub initial: Duration,
    /// The longest wait. Default 5 s.
    pub max: Duration,
    /// Growth of the wait from one attempt to the next (below 1 counts as
    /// 1: a constant wait). Default 2.
    pub multiplier: f64,
    /// The share of each wait that is random, from 0 (none: exactly the
    /// base delay) to 1 (anywhere between 0 and the base delay). Default 0.2.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(5),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl Backoff {
    /// The wait before attempt `attempt` (from 1) without jitter:
    /// `initial × multiplier^(attempt−1)`, at most `max`. Attempt 0 counts
    /// as 1.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gotalk_peer::reconnect::Backoff;
    ///
    /// let backoff = Backoff {
    ///     initial: Duration::from_millis(100),
    ///     max: Duration::from_secs(1),
    ///     multiplier: 3.0,
    ///     jitter: 0.0,
    /// };
    /// assert_eq!(backoff.base_delay(3), Duration::from_millis(900));
    /// assert_eq!(backoff.base_delay(4), Duration::from_secs(1));
    /// ```
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let multiplier = if self.multiplier >= 1.0 {
            self.multiplier
        } else {
            1.0
        };
        let exponent = attempt.saturating_sub(1).min(1024) as i32;
        let secs = self.initial.as_secs_f64() * multiplier.powi(exponent);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            self.max
        } else {
            Duration::from_secs_f64(secs).min(self.max)
        }
    }

    /// The wait before attempt `attempt` with jitter, where `unit` (in
    /// `0.0..1.0`) is the random draw: the base delay less `jitter × unit`
    /// of it. Never more than the base delay, so never more than `max`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use gotalk_peer::reconnect::Backoff;
    ///
    /// let backoff = Backoff { jitter: 0.5, ..Backoff::default() };
    /// assert_eq!(backoff.delay(1, 0.0), Duration::from_millis(500));
    /// assert_eq!(backoff.delay(1, 0.5), Duration::from_millis(375));
    /// ```
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let base = self.base_delay(attempt);
        let jitter = clamp_unit(self.jitter) * clamp_unit(unit);
        base.mul_f64(1.0 - jitter)
    }
}

/// `x` in `0.0..=1.0`; NaN counts as 0.
fn clamp_unit(x: f64) -> f64 {
    if x >= 0.0 { x.min(1.0) } else { 0.0 }
}

/// Random draws for the jitter (xorshift: spreading reconnects needs no
/// cryptographic randomness), seeded differently in every process and for
/// every client.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn seeded() -> Self {
        let mut hasher = RandomState::new().build_hasher();
        hasher.write_u64(0x9e37_79b9_7f4a_7c15);
        Self(hasher.finish() | 1)
    }

    /// A generator that always draws the same numbers: for tests.
    #[cfg(test)]
    pub(crate) fn from_seed(seed: u64) -> Self {
        Self(seed | 1)
    }

    /// A number in `0..n` (`n` at least 1).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        ((self.unit() * n as f64) as usize).min(n.saturating_sub(1))
    }

    /// A number in `0.0..1.0`.
    pub(crate) fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn grows_by_the_multiplier_and_caps_at_max() {
        let b = Backoff {
            initial: ms(100),
            max: ms(1000),
            multiplier: 2.0,
            jitter: 0.0,
        };
        let waits: Vec<_> = (0..=7).map(|n| b.base_delay(n)).collect();
        assert_eq!(
            waits,
            [100, 100, 200, 400, 800, 1000, 1000, 1000].map(ms),
            "attempt 0 counts as 1"
        );
        assert_eq!(b.base_delay(u32::MAX), ms(1000), "no overflow");
        assert_eq!(b.delay(4, 0.99), ms(800), "no jitter asked for");
    }

    #[test]
    fn a_multiplier_below_one_is_a_constant_wait() {
        for multiplier in [0.5, 0.0, -3.0, f64::NAN] {
            let b = Backoff {
                initial: ms(300),
                max: ms(1000),
                multiplier,
                jitter: 0.0,
            };
            assert_eq!(b.base_delay(9), ms(300), "multiplier {multiplier}");
        }
    }

    #[test]
    fn max_below_initial_wins() {
        let b = Backoff {
            initial: ms(800),
            max: ms(200),
            multiplier: 2.0,
            jitter: 0.0,
        };
        assert_eq!(b.base_delay(1), ms(200));
    }

    #[test]
    fn jitter_takes_off_at_most_its_share() {
        let b = Backoff {
            initial: ms(1000),
            max: ms(10_000),
            multiplier: 2.0,
            jitter: 0.25,
        };
        assert_eq!(b.delay(1, 0.0), ms(1000));
        assert_eq!(b.delay(1, 0.5), ms(875));
        assert_eq!(b.delay(1, 1.0), ms(750));
        let mut rng = Rng::seeded();
        let mut seen_below = false;
        for _ in 0..1000 {
            let d = b.delay(2, rng.unit());
            assert!((ms(1500)..=ms(2000)).contains(&d), "{d:?}");
            seen_below |= d < ms(1900);
        }
        assert!(seen_below, "the draws spread over the range");
        // Out-of-range settings are clamped, not trusted.
        let wild = Backoff { jitter: 7.0, ..b };
        assert_eq!(wild.delay(1, 0.5), ms(500));
        let nan = Backoff {
            jitter: f64::NAN,
            ..b
        };
        assert_eq!(nan.delay(1, 0.5), ms(1000));
    }

    #[test]
    fn draws_are_in_the_unit_interval() {
        let mut rng = Rng::seeded();
        for _ in 0..10_000 {
            let x = rng.unit();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
