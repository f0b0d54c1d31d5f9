//! The connection's deadlines, from the `now` the runtime gives.

use std::time::{Duration, Instant};

/// Which deadline passed (see [`Timers::expired`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Expired {
    /// No message arrived within the read timeout.
    Read,
    /// A graceful close ran out of time.
    Close,
    /// A heartbeat is due.
    Heartbeat,
}

#[derive(Debug)]
pub(crate) struct Timers {
    read_timeout: Option<Duration>,
    /// When the last whole message arrived (the read deadline is one
    /// timeout after it: computed when asked, not on every message).
    last_message: Instant,
    heartbeat_every: Option<Duration>,
    heartbeat: Option<Instant>,
    close: Option<Instant>,
}

impl Timers {
    pub(crate) fn new(
        now: Instant,
        read_timeout: Option<Duration>,
        heartbeat: Option<Duration>,
    ) -> Self {
        let heartbeat_every = heartbeat.filter(|d| !d.is_zero());
        Self {
            read_timeout,
            last_message: now,
            heartbeat_every,
            heartbeat: heartbeat_every.map(|t| now + t),
            close: None,
        }
    }

    /// A whole message arrived at `now`.
    pub(crate) fn message_received(&mut self, now: Instant) {
        self.last_message = now;
    }

    fn read_deadline(&self) -> Option<Instant> {
        self.read_timeout.map(|t| self.last_message + t)
    }

    /// A graceful close started at `now` and may take `limit`.
    pub(crate) fn closing(&mut self, now: Instant, limit: Duration) {
        self.close.get_or_insert(now + limit);
    }

    /// Closed: no deadline matters any more.
    pub(crate) fn clear(&mut self) {
        *self = Self {
            read_timeout: None,
            last_message: self.last_message,
            heartbeat_every: None,
            heartbeat: None,
            close: None,
        };
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        [self.read_deadline(), self.close, self.heartbeat]
            .into_iter()
            .flatten()
            .min()
    }

    /// The first deadline passed at `now`, in order of precedence; a
    /// heartbeat's next deadline is set as it is reported (missed beats are
    /// skipped, not sent in a burst).
    pub(crate) fn expired(&mut self, now: Instant) -> Option<Expired> {
        if self.read_deadline().is_some_and(|d| d <= now) {
            return Some(Expired::Read);
        }
        if self.close.is_some_and(|d| d <= now) {
            return Some(Expired::Close);
        }
        if let (Some(due), Some(every)) = (self.heartbeat, self.heartbeat_every)
            && due <= now
        {
            let mut next = due + every;
            while next <= now {
                next += every;
            }
            self.heartbeat = Some(next);
            return Some(Expired::Heartbeat);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn read_deadline_moves_with_each_message() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, Some(100 * MS), None);
        assert_eq!(t.next(), Some(t0 + 100 * MS));
        t.message_received(t0 + 50 * MS);
        assert_eq!(t.expired(t0 + 100 * MS), None);
        assert_eq!(t.expired(t0 + 150 * MS), Some(Expired::Read));
    }

    #[test]
    fn heartbeats_skip_missed_beats() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, None, Some(10 * MS));
        assert_eq!(t.expired(t0 + 9 * MS), None);
        assert_eq!(t.expired(t0 + 35 * MS), Some(Expired::Heartbeat));
        assert_eq!(t.next(), Some(t0 + 40 * MS));
        assert_eq!(t.expired(t0 + 35 * MS), None);
    }

    #[test]
    fn close_deadline_is_set_once() {
        let t0 = Instant::now();
        let mut t = Timers::new(t0, None, Some(Duration::ZERO));
        assert_eq!(t.next(), None, "a zero interval disables heartbeats");
        t.closing(t0, 5 * MS);
        t.closing(t0 + 4 * MS, 5 * MS);
        assert_eq!(t.expired(t0 + 5 * MS), Some(Expired::Close));
        t.clear();
        assert_eq!(t.next(), None);
    }
}
