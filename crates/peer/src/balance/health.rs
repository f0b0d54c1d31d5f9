//! Ejection: an endpoint whose calls keep failing is left out for a while,
//! then probed with one call at a time until one succeeds.

use tokio::time::Instant;

use crate::reconnect::Backoff;

/// Whether an endpoint whose connection is up takes calls, as
/// [`EndpointStatus::state`](super::EndpointStatus::state) reports it
/// (with [`Connecting`](super::EndpointState::Connecting) for one that
/// has no connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Takes calls.
    Open,
    /// Was ejected and its time is up: takes one call at a time, whose
    /// outcome decides between [`Open`](Self::Open) and another ejection.
    Probing,
    /// Left out until then.
    Ejected { until: Instant },
}

/// One endpoint's recent outcomes.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Failed calls since the last success.
    failures: u32,
    /// Ejections since the last success: the ejection backoff's attempt.
    ejections: u32,
    ejected_until: Option<Instant>,
}

impl Health {
    pub(crate) fn admission(&self, now: Instant) -> Admission {
        match self.ejected_until {
            Some(until) if now < until => Admission::Ejected { until },
            Some(_) => Admission::Probing,
            None => Admission::Open,
        }
    }

    /// True if a call may go to the endpoint now, with `in_flight` others.
    pub(crate) fn admits(&self, now: Instant, in_flight: usize) -> bool {
        match self.admission(now) {
            Admission::Open => true,
            Admission::Probing => in_flight == 0,
            Admission::Ejected { .. } => false,
        }
    }

    /// A call was answered: the endpoint is healthy.
    pub(crate) fn succeeded(&mut self) {
        *self = Self::default();
    }

    /// A call failed for the endpoint's sake (connection lost, timed out).
    /// Ejects it when that makes `max_failures` in a row, or when it was
    /// being probed; returns until when.
    pub(crate) fn failed(
        &mut self,
        now: Instant,
        max_failures: u32,
        backoff: &Backoff,
        unit: f64,
    ) -> Option<Instant> {
        self.failures = self.failures.saturating_add(1);
        let eject = match self.admission(now) {
            Admission::Ejected { .. } => false,
            Admission::Probing => true,
            Admission::Open => self.failures >= max_failures.max(1),
        };
        if !eject {
            return None;
        }
        self.ejections = self.ejections.saturating_add(1);
        let until = now + backoff.delay(self.ejections, unit);
        self.ejected_until = Some(until);
        Some(until)
    }

    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    const BACKOFF: Backoff = Backoff {
        initial: Duration::from_millis(100),
        max: Duration::from_millis(1000),
        multiplier: 2.0,
        jitter: 0.0,
    };

    #[test]
    fn ejected_after_max_failures_in_a_row() {
        let t0 = Instant::now();
        let mut h = Health::default();
        assert_eq!(h.failed(t0, 3, &BACKOFF, 0.0), None);
        h.succeeded();
        assert_eq!(h.failed(t0, 3, &BACKOFF, 0.0), None);
        assert_eq!(h.failed(t0, 3, &BACKOFF, 0.0), None);
        assert!(h.admits(t0, 5), "two failures in a row are not enough");
        assert_eq!(h.failed(t0, 3, &BACKOFF, 0.0), Some(t0 + ms(100)));
        assert!(!h.admits(t0 + ms(99), 0));
        assert_eq!(
            h.admission(t0 + ms(99)),
            Admission::Ejected {
                until: t0 + ms(100)
            }
        );
        // Calls that were in flight when it was ejected fail too: they do
        // not push the ejection further.
        assert_eq!(h.failed(t0 + ms(50), 3, &BACKOFF, 0.0), None);
        assert_eq!(h.admission(t0 + ms(100)), Admission::Probing);
    }

    #[test]
    fn a_probe_is_one_call_at_a_time_and_decides() {
        let t0 = Instant::now();
        let mut h = Health::default();
        h.failed(t0, 1, &BACKOFF, 0.0);
        let t1 = t0 + ms(100);
        assert!(h.admits(t1, 0));
        assert!(!h.admits(t1, 1), "one probe at a time");
        // A failed probe ejects again, for longer each time, up to max.
        assert_eq!(h.failed(t1, 1, &BACKOFF, 0.0), Some(t1 + ms(200)));
        let t2 = t1 + ms(200);
        assert_eq!(h.failed(t2, 1, &BACKOFF, 0.0), Some(t2 + ms(400)));
        // A successful one reopens it and starts the backoff over.
        h.succeeded();
        assert_eq!(h.admission(t2), Admission::Open);
        assert_eq!(h.failures(), 0);
        assert_eq!(h.failed(t2, 1, &BACKOFF, 0.0), Some(t2 + ms(100)));
    }
}
