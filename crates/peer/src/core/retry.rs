//! When to send a request again after a retry result, and how long to wait.

use std::time::Duration;

/// What to do after a retry result (see [`RetryPolicy::on_retry`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RetryDecision {
    /// Send the request again after this wait.
    RetryAfter(Duration),
    /// No attempts left: fail with the last retry result.
    GiveUp {
        /// Attempts made, the first included.
        attempts: u32,
    },
}

/// The retry rule for one call: at most `max_attempts` attempts; the wait a
/// retry result asks for, or when it asks for none, a backoff that doubles
/// with every attempt.
///
/// ```
/// use std::time::Duration;
/// use gotalk_peer::core::{RetryDecision, RetryPolicy};
/// let mut policy = RetryPolicy::new(3, Duration::from_millis(50));
/// assert_eq!(policy.on_retry(Duration::ZERO), RetryDecision::RetryAfter(Duration::from_millis(50)));
/// assert_eq!(policy.on_retry(Duration::ZERO), RetryDecision::RetryAfter(Duration::from_millis(100)));
/// assert_eq!(policy.on_retry(Duration::ZERO), RetryDecision::GiveUp { attempts: 3 });
/// ```
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    max_attempts: u32,
    attempts: u32,
    backoff: Duration,
}

impl RetryPolicy {
    /// A policy for a call that may be attempted `max_attempts` times (at
    /// least once).
    pub fn new(max_attempts: u32, backoff: Duration) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            attempts: 1,
            backoff,
        }
    }

    /// The attempt now in flight (from 1).
    pub fn attempt(&self) -> u32 {
        self.attempts
    }

    /// The peer answered the current attempt with a retry result asking to
    /// wait `wait` (zero: no preference).
    pub fn on_retry(&mut self, wait: Duration) -> RetryDecision {
        if self.attempts >= self.max_attempts {
            return RetryDecision::GiveUp {
                attempts: self.attempts,
            };
        }
        self.attempts += 1;
        let pause = if wait.is_zero() { self.backoff } else { wait };
        self.backoff = self.backoff.saturating_mul(2);
        RetryDecision::RetryAfter(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_peers_wait_wins_over_the_backoff_which_doubles_anyway() {
        let mut p = RetryPolicy::new(4, 10 * MS);
        assert_eq!(p.on_retry(300 * MS), RetryDecision::RetryAfter(300 * MS));
        assert_eq!(
            p.on_retry(Duration::ZERO),
            RetryDecision::RetryAfter(20 * MS)
        );
        assert_eq!(p.attempt(), 3);
        assert_eq!(
            p.on_retry(Duration::ZERO),
            RetryDecision::RetryAfter(40 * MS)
        );
        assert_eq!(p.on_retry(MS), RetryDecision::GiveUp { attempts: 4 });
    }

    #[test]
    fn zero_attempts_means_one() {
        let mut p = RetryPolicy::new(0, MS);
        assert_eq!(p.on_retry(MS), RetryDecision::GiveUp { attempts: 1 });
    }
}
