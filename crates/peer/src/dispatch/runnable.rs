//! Which spawned handlers of a connection are runnable: woken (or just
//! started) and not yet polled since. While one is, a frame another task
//! queues does not wake the driver: the handler may be about to queue its
//! answer too, and the last of them to run wakes the driver once for all
//! (one write for the answers of handlers woken together, say by one read
//! of a database connection).
//!
//! The driver used to get that coalescing by yielding before it wrote
//! while it had started more handlers than frames had come in. A handler
//! still waiting on something counted too, so a lone answer made the driver
//! yield, and a yield puts a task at the back of tokio's run queue, behind
//! every task woken meanwhile (on a hub node, every subscriber connection
//! of the last fan-out). Counting wakes instead needs the handler's own
//! waker, so each spawned handler is polled through [`tracked`].
//!
//! A held wake is bounded: it is released once as many handler polls have
//! started as there were handler wakes when it was held, so handlers that
//! keep waking each other cannot postpone a write for ever.

use std::{
    future::{Future, poll_fn},
    pin::pin,
    sync::{
        Arc, Weak,
        atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::SeqCst},
    },
    task::{Context, Wake, Waker},
};

use futures::task::AtomicWaker;

use crate::connection::{Connection, Locked};

/// The connection's counts of handler wakes and of the polls that followed.
#[derive(Debug, Default)]
pub(crate) struct Runnable {
    /// Handlers made runnable (started, or woken while idle), ever.
    woken: AtomicUsize,
    /// Of those, how many have since been polled (or dropped).
    polled: AtomicUsize,
    /// A wake of the driver may be held ([`Locked::hold`] is the truth):
    /// whoever counts a poll then checks whether to release it.
    held: AtomicBool,
}

/// `count` has reached `target` (both wrap).
fn reached(count: usize, target: usize) -> bool {
    count.wrapping_sub(target) as isize >= 0
}

impl Runnable {
    /// Called under the lock by a task that just queued a frame: whether
    /// to leave the driver asleep, because handlers still to run may queue
    /// theirs (a hold, released by [`Connection::release_hold`]).
    pub(crate) fn hold(&self, l: &mut Locked) -> bool {
        if l.hold.is_some() {
            return true;
        }
        if self.woken.load(SeqCst) == self.polled.load(SeqCst) {
            return false;
        }
        // The flag before the counts: a handler whose poll count this load
        // misses sees the flag after its own count, and checks the hold.
        self.held.store(true, SeqCst);
        let target = self.woken.load(SeqCst);
        if reached(self.polled.load(SeqCst), target) {
            self.held.store(false, SeqCst);
            return false;
        }
        l.hold = Some(target);
        true
    }

    /// Under the lock: whether the hold may end now.
    pub(crate) fn releasable(&self, l: &Locked) -> bool {
        l.hold
            .is_some_and(|target| reached(self.polled.load(SeqCst), target))
    }

    /// Under the lock, once the hold ended.
    pub(crate) fn released(&self, l: &mut Locked) {
        l.hold = None;
        self.held.store(false, SeqCst);
    }

    fn counted_poll(&self) {
        self.polled.fetch_add(1, SeqCst);
    }
}

impl Connection {
    /// After a handler's poll: ends a hold that has waited for enough
    /// handler polls, and wakes the driver to write what it held.
    fn release_hold(&self) {
        if !self.runnable.held.load(SeqCst) {
            return;
        }
        let mut l = self.lock();
        if !self.runnable.releasable(&l) {
            return;
        }
        self.runnable.released(&mut l);
        let driver = l.driver.take();
        drop(l);
        if let Some(driver) = driver {
            driver.wake();
        }
    }
}

const IDLE: u8 = 0;
const WOKEN: u8 = 1;
const DONE: u8 = 2;
/// Being polled. A wake now is not counted: a handler that wakes itself
/// while it runs is yielding, and goes to the back of the runtime's queue
/// (say [`Context::yield_behind_woken`](crate::Context::yield_behind_woken)),
/// so holding the connection's writes until its next poll would hold them
/// for a whole round of that queue. A wake from elsewhere racing with the
/// poll is not counted either: coalescing is lost, nothing else.
const POLLING: u8 = 3;

/// A spawned handler's waker: counts the wake on its connection, then
/// wakes the handler's task.
pub(crate) struct HandlerWake {
    /// Weak: a waker left behind somewhere after the handler finished must
    /// not keep the connection's state alive.
    conn: Weak<Connection>,
    state: AtomicU8,
    task: AtomicWaker,
}

impl HandlerWake {
    /// For a handler about to be spawned: runnable until its first poll.
    pub(crate) fn started(conn: &Arc<Connection>) -> Arc<Self> {
        conn.runnable.woken.fetch_add(1, SeqCst);
        Arc::new(Self {
            conn: Arc::downgrade(conn),
            state: AtomicU8::new(WOKEN),
            task: AtomicWaker::new(),
        })
    }

    /// Leaves the runnable state (a poll starts, or the handler is gone).
    fn leave(&self, conn: &Connection, to: u8) -> bool {
        let left = self.state.swap(to, SeqCst) == WOKEN;
        if left {
            conn.runnable.counted_poll();
        }
        left
    }
}

impl Wake for HandlerWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Gone: nothing left to coalesce with (the handler is being dropped).
        if let Some(conn) = self.conn.upgrade()
            && self
                .state
                .compare_exchange(IDLE, WOKEN, SeqCst, SeqCst)
                .is_ok()
        {
            conn.runnable.woken.fetch_add(1, SeqCst);
        }
        self.task.wake();
    }
}

/// Balances the count if the handler's task is dropped while runnable.
struct Finished {
    conn: Arc<Connection>,
    wake: Arc<HandlerWake>,
}

impl Drop for Finished {
    fn drop(&mut self) {
        if self.wake.leave(&self.conn, DONE) {
            self.conn.release_hold();
        }
    }
}

/// Runs `fut` (a handler of `conn`, spawned) with its wakes counted by
/// `wake`. Not an `async fn`: the returned future owns the count from the
/// start, so a task dropped before its first poll (a runtime shutting
/// down) still balances it.
pub(crate) fn tracked<F: Future>(
    conn: Arc<Connection>,
    wake: Arc<HandlerWake>,
    fut: F,
) -> impl Future<Output = F::Output> {
    let waker = Waker::from(wake.clone());
    let finished = Finished { conn, wake };
    async move {
        let Finished { conn, wake } = &finished;
        let mut fut = pin!(fut);
        poll_fn(|cx| {
            wake.task.register(cx.waker());
            wake.leave(conn, POLLING);
            let polled = fut.as_mut().poll(&mut Context::from_waker(&waker));
            // Nothing moves the state off `POLLING` during the poll (a wake
            // leaves it, the end comes after): a store, not a swap.
            wake.state.store(IDLE, SeqCst);
            conn.release_hold();
            polled
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::task::Poll;

    use super::*;
    use crate::{Config, Handlers};

    fn connection() -> Arc<Connection> {
        Connection::new(Arc::new(Config::default()), Handlers::new(), None)
    }

    fn runnable(conn: &Connection) -> usize {
        let r = &conn.runnable;
        r.woken.load(SeqCst) - r.polled.load(SeqCst)
    }

    #[test]
    fn a_handler_is_runnable_from_its_start_or_wake_to_its_next_poll() {
        let conn = connection();
        let wake = HandlerWake::started(&conn);
        let waker = Waker::from(wake.clone());
        let mut fut = Box::pin(tracked(conn.clone(), wake, std::future::pending::<()>()));
        assert_eq!(runnable(&conn), 1, "started");
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(runnable(&conn), 0, "polled");
        waker.wake_by_ref();
        waker.wake_by_ref();
        assert_eq!(runnable(&conn), 1, "woken twice, counted once");
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(runnable(&conn), 0);
        waker.wake_by_ref();
        drop(fut);
        assert_eq!(runnable(&conn), 0, "dropped while woken");
        waker.wake_by_ref();
        assert_eq!(runnable(&conn), 0, "a wake after the end counts nothing");
    }

    #[test]
    fn a_handler_that_wakes_itself_while_polled_is_not_runnable() {
        let conn = connection();
        let wake = HandlerWake::started(&conn);
        let mut yielded = false;
        let yields = std::future::poll_fn(move |cx| {
            if yielded {
                return Poll::Ready(());
            }
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        });
        let mut fut = Box::pin(tracked(conn.clone(), wake, yields));
        let mut cx = Context::from_waker(Waker::noop());
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Pending);
        assert_eq!(runnable(&conn), 0, "a yield holds nobody's writes");
        assert_eq!(fut.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(runnable(&conn), 0);
    }

    #[test]
    fn a_handler_dropped_before_its_first_poll_is_not_left_runnable() {
        let conn = connection();
        let wake = HandlerWake::started(&conn);
        let fut = tracked(conn.clone(), wake, async {});
        assert_eq!(runnable(&conn), 1);
        drop(fut);
        assert_eq!(runnable(&conn), 0);
    }

    #[test]
    fn a_hold_ends_once_the_handlers_woken_before_it_have_run() {
        let conn = connection();
        let wakes: Vec<_> = (0..2).map(|_| HandlerWake::started(&conn)).collect();
        let mut futs: Vec<_> = wakes
            .into_iter()
            .map(|w| Box::pin(tracked(conn.clone(), w, std::future::pending::<()>())))
            .collect();
        {
            let mut l = conn.lock();
            assert!(conn.runnable.hold(&mut l), "two handlers still to run");
        }
        let mut cx = Context::from_waker(Waker::noop());
        assert!(futs[0].as_mut().poll(&mut cx).is_pending());
        assert!(conn.lock().hold.is_some(), "one still to run");
        assert!(futs[1].as_mut().poll(&mut cx).is_pending());
        assert!(conn.lock().hold.is_none(), "released by the last poll");
        let mut l = conn.lock();
        assert!(!conn.runnable.hold(&mut l), "none to wait for");
    }
}
