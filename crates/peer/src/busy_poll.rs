//! Busy polling: a connection's task that keeps polling its transport for
//! a while after it last read or wrote, instead of going to sleep.
//!
//! A request and its answer cross two processes, and each side that waits
//! sleeps until the other's bytes arrive. Waking a sleeping thread costs
//! more than the request itself on many machines: on the virtual machines
//! measured in `docs/benchmarks.md`, a server and a client on their own
//! cores were each busy less than half the time at 64 requests in flight,
//! waiting on wake-ups, and both busy polling for 50 µs more than doubled
//! the requests per second and cut the median latency from 120 to 45 µs.
//! The price is a CPU kept busy for the window after every read or write,
//! so it is off unless [`Config::busy_poll`](crate::Config::busy_poll)
//! sets a window.
//!
//! The task polls again by waking itself: the runtime runs its other tasks
//! and looks for I/O in between (tokio does at least every 61 task polls),
//! so nothing waits on the spinning connection.

use std::time::{Duration, Instant};

/// A connection's busy-polling window.
#[derive(Debug)]
pub(crate) struct BusyPoll {
    window: Duration,
    /// Polling goes on until then; `None` once it has passed.
    until: Option<Instant>,
    /// The connection read or wrote since the window was last set.
    active: bool,
}

impl BusyPoll {
    /// A window of `window` after each read or write.
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            until: None,
            active: false,
        }
    }

    /// The connection read or wrote: the window starts again the next
    /// time it has nothing to do. No clock is read here, so a burst of
    /// messages costs one reading, not one each.
    pub(crate) fn activity(&mut self) {
        self.active = true;
    }

    /// The connection has nothing to do at `now`: whether its task should
    /// poll again instead of sleeping. After a read or write the window
    /// runs from `now`; once it has passed, `false` until the next one.
    pub(crate) fn keep_polling(&mut self, now: Instant) -> bool {
        if std::mem::take(&mut self.active) {
            self.until = now.checked_add(self.window);
        }
        match self.until {
            Some(until) if now < until => true,
            _ => {
                self.until = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_for_the_window_after_each_activity_then_sleeps() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut busy = BusyPoll::new(ms(10));
        assert!(!busy.keep_polling(t0), "no activity yet: sleep");
        busy.activity();
        assert!(busy.keep_polling(t0), "the window runs from here");
        assert!(busy.keep_polling(t0 + ms(9)));
        assert!(!busy.keep_polling(t0 + ms(10)), "the window has passed");
        assert!(
            !busy.keep_polling(t0 + ms(5)),
            "stays asleep until the next activity"
        );
        busy.activity();
        busy.activity();
        assert!(busy.keep_polling(t0 + ms(20)), "a new window");
        assert!(busy.keep_polling(t0 + ms(29)));
        busy.activity();
        assert!(busy.keep_polling(t0 + ms(25)), "activity moves its end");
        assert!(busy.keep_polling(t0 + ms(34)));
        assert!(!busy.keep_polling(t0 + ms(35)));
    }

    #[test]
    fn a_zero_window_never_polls_and_a_huge_one_does_not_overflow() {
        let now = Instant::now();
        let mut zero = BusyPoll::new(Duration::ZERO);
        zero.activity();
        assert!(!zero.keep_polling(now));
        let mut huge = BusyPoll::new(Duration::MAX);
        huge.activity();
        assert!(
            !huge.keep_polling(now),
            "an unrepresentable end: no polling"
        );
    }
}
