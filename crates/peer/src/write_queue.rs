//! The outgoing byte queue every sender shares.
//!
//! Senders encode straight into one `BytesMut` (headers and small payloads),
//! so a burst of results becomes one write call; payloads of
//! [`ZERO_COPY_MIN`] bytes or more are queued as their own `Bytes` segment
//! and reach the socket through vectored I/O without being copied. The queue
//! is bounded: [`WriteQueue::push`] waits while it holds more than its limit.
//!
//! Frames come from two kinds of senders. Other tasks (callers, spawned
//! handlers) wake the writer, which yields once before taking a batch so
//! that the others already runnable add theirs. The connection's own task
//! (replies of handlers run inline, see [`WriteQueue::push_local`]) wakes
//! nobody: it polls its writer right after reading, and a batch of its own
//! replies is written without that yield.

use std::{
    collections::VecDeque,
    future::poll_fn,
    pin::pin,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use gotalk_proto::{Buffer, Message};
use tokio::sync::Notify;

use crate::{CloseReason, Error};

/// Payloads at least this long are sent by reference, never copied.
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;

#[derive(Debug)]
struct Inner {
    /// Frozen segments, in order, ready for the writer.
    segments: VecDeque<Bytes>,
    /// Bytes encoded after the last segment.
    tail: BytesMut,
    /// Bytes waiting in `segments` and `tail`.
    queued: usize,
    /// Set once the connection closes: pushes fail with this reason.
    closed: Option<CloseReason>,
    /// Frames queued with a wake-up for the writer (by other tasks, or
    /// control frames) since the last batch was taken.
    pushes: usize,
    /// The writer, when it waits for something to write.
    writer: Option<Waker>,
}

/// A bounded, coalescing queue of encoded frames (see the module docs).
#[derive(Debug)]
pub(crate) struct WriteQueue {
    inner: Mutex<Inner>,
    /// Tasks the connection woke or started since the last batch (callers
    /// given their results, handlers spawned), which may queue frames soon.
    woken: AtomicUsize,
    /// Wakes senders waiting for room.
    room: Notify,
    max_bytes: usize,
}

impl WriteQueue {
    pub(crate) fn new(max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                segments: VecDeque::new(),
                tail: BytesMut::with_capacity(16 * 1024),
                queued: 0,
                closed: None,
                pushes: 0,
                writer: None,
            }),
            woken: AtomicUsize::new(0),
            room: Notify::new(),
            max_bytes,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding this lock cannot leave `Inner` half-updated
        // in a way that matters more than losing the connection.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `msg`, waiting while the queue is over its limit.
    pub(crate) async fn push(&self, msg: &Message) -> Result<(), Error> {
        self.push_with(msg, msg.payload()).await
    }

    /// Queues `msg`, whose payload is also in `shared`: a large one is then
    /// sent from there without a copy. Lets callers queue a message that
    /// borrows its name instead of allocating it.
    pub(crate) async fn push_with<B: Buffer>(
        &self,
        msg: &Message<B>,
        shared: Option<&Bytes>,
    ) -> Result<(), Error> {
        msg.validate()?;
        // The common case, a queue with room, takes the lock once and never
        // touches the waiter list; waiting is boxed so that the futures of
        // every call stay small.
        if self.try_encode(msg, shared)? {
            return Ok(());
        }
        Box::pin(self.wait_and_push(msg, shared)).await
    }

    async fn wait_and_push<B: Buffer>(
        &self,
        msg: &Message<B>,
        shared: Option<&Bytes>,
    ) -> Result<(), Error> {
        loop {
            let mut room = pin!(self.room.notified());
            room.as_mut().enable();
            // Checked again after `enable`, so that room made since the last
            // check is not missed.
            if self.try_encode(msg, shared)? {
                return Ok(());
            }
            room.await;
        }
    }

    /// Queues `msg` from the connection's own task, if there is room,
    /// without waiting or waking the writer: the driver polls its writer
    /// after reading. False if the queue is full.
    pub(crate) fn push_local(&self, msg: &Message) -> Result<bool, Error> {
        msg.validate()?;
        self.try_queue(msg, msg.payload(), false)
    }

    /// Queues a validated `msg` from another task if there is room; false if
    /// the queue is full.
    fn try_encode<B: Buffer>(
        &self,
        msg: &Message<B>,
        shared: Option<&Bytes>,
    ) -> Result<bool, Error> {
        self.try_queue(msg, shared, true)
    }

    fn try_queue<B: Buffer>(
        &self,
        msg: &Message<B>,
        shared: Option<&Bytes>,
        foreign: bool,
    ) -> Result<bool, Error> {
        let mut inner = self.lock();
        if let Some(reason) = &inner.closed {
            return Err(Error::Closed(reason.clone()));
        }
        // An empty queue takes any message, however large.
        if inner.queued != 0 && inner.queued >= self.max_bytes {
            return Ok(false);
        }
        Self::encode(&mut inner, msg, shared);
        let writer = if foreign {
            inner.pushes += 1;
            inner.writer.take()
        } else {
            None
        };
        drop(inner);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(true)
    }

    /// Queues `msg` now, over the limit if need be: for the few small control
    /// frames the driver itself sends (heartbeats, protocol errors).
    pub(crate) fn push_now(&self, msg: &Message) -> Result<(), Error> {
        msg.validate()?;
        let mut inner = self.lock();
        if let Some(reason) = &inner.closed {
            return Err(Error::Closed(reason.clone()));
        }
        Self::encode(&mut inner, msg, msg.payload());
        inner.pushes += 1;
        let writer = inner.writer.take();
        drop(inner);
        if let Some(writer) = writer {
            writer.wake();
        }
        Ok(())
    }

    fn encode<B: Buffer>(inner: &mut Inner, msg: &Message<B>, shared: Option<&Bytes>) {
        debug_assert_eq!(
            shared.map(Bytes::len),
            msg.payload().map(|p| p.as_ref().len())
        );
        let payload = shared.filter(|p| p.len() >= ZERO_COPY_MIN);
        inner
            .tail
            .reserve(msg.header_len() + payload.map_or(msg.payload_len(), |_| 0));
        match payload {
            Some(payload) => {
                msg.encode_header(&mut inner.tail)
                    .expect("validated, and BytesMut grows");
                let head = inner.tail.split().freeze();
                inner.segments.push_back(head);
                inner.segments.push_back(payload.clone());
            }
            None => msg
                .encode(&mut inner.tail)
                .expect("validated, and BytesMut grows"),
        }
        inner.queued += msg.encoded_len();
    }

    /// Notes that the connection woke or started a task that may queue a
    /// frame soon (see [`next_batch`](Self::next_batch)).
    pub(crate) fn expect_push(&self) {
        self.woken.fetch_add(1, Ordering::Relaxed);
    }

    /// Waits for queued bytes and moves them all into `out`. Returns false
    /// when the queue is closed and empty: the writer is done.
    ///
    /// When other tasks queued frames, and fewer than the connection woke
    /// since the last batch, it first yields once to the scheduler so that
    /// the tasks still to run (callers given their results, handlers
    /// finishing) queue theirs too: otherwise tokio's LIFO slot runs the
    /// writer right after the first push and every frame costs its own
    /// write call. A lone caller's request goes out without that yield.
    pub(crate) async fn next_batch(&self, out: &mut VecDeque<Bytes>) -> bool {
        let wait_for_others = poll_fn(|cx| {
            let mut inner = self.lock();
            if inner.queued > 0 || inner.closed.is_some() {
                let woken = self.woken.load(Ordering::Relaxed);
                return Poll::Ready(
                    inner.pushes > 0 && inner.closed.is_none() && inner.pushes < woken,
                );
            }
            if !inner
                .writer
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                inner.writer = Some(cx.waker().clone());
            }
            Poll::Pending
        })
        .await;
        if wait_for_others {
            tokio::task::yield_now().await;
        }
        let mut inner = self.lock();
        if inner.queued == 0 {
            // Only a closed queue wakes the writer with nothing queued.
            return false;
        }
        if !inner.tail.is_empty() {
            let tail = inner.tail.split().freeze();
            inner.segments.push_back(tail);
        }
        out.append(&mut inner.segments);
        inner.queued = 0;
        inner.pushes = 0;
        self.woken.store(0, Ordering::Relaxed);
        drop(inner);
        self.room.notify_waiters();
        true
    }

    /// Refuses further pushes with `reason`; what is queued is still written.
    pub(crate) fn close(&self, reason: &CloseReason) {
        let mut inner = self.lock();
        if inner.closed.is_none() {
            inner.closed = Some(reason.clone());
        }
        let writer = inner.writer.take();
        drop(inner);
        if let Some(writer) = writer {
            writer.wake();
        }
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::{future::Future, sync::Arc, time::Duration};

    use gotalk_proto::{RequestId, Text};

    use super::*;

    fn result(n: usize) -> Message {
        Message::SingleResult {
            id: RequestId::new(*b"0001"),
            payload: Bytes::from(vec![b'x'; n]),
        }
    }

    #[tokio::test]
    async fn small_frames_coalesce_into_one_segment() {
        let q = WriteQueue::new(1 << 20);
        for _ in 0..10 {
            q.push(&result(3)).await.unwrap();
        }
        let mut out = VecDeque::new();
        assert!(q.next_batch(&mut out).await);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 10 * 16);
    }

    #[tokio::test]
    async fn writer_yields_so_that_runnable_senders_join_the_batch() {
        let q = Arc::new(WriteQueue::new(1 << 20));
        // The connection woke two tasks (say, two callers given results).
        q.expect_push();
        q.expect_push();
        q.push(&result(3)).await.unwrap();
        let q2 = q.clone();
        // Runnable, but not run before the writer yields (current-thread runtime).
        let sender = tokio::spawn(async move { q2.push(&result(3)).await.unwrap() });
        let mut out = VecDeque::new();
        assert!(q.next_batch(&mut out).await);
        assert_eq!(out.iter().map(Bytes::len).sum::<usize>(), 2 * 16);
        sender.await.unwrap();
    }

    #[tokio::test]
    async fn writer_does_not_wait_once_every_woken_task_has_pushed() {
        let q = Arc::new(WriteQueue::new(1 << 20));
        q.expect_push();
        q.push(&result(3)).await.unwrap();
        let q2 = q.clone();
        // Runnable, but the one task woken has pushed: no yield, so it is
        // not in this batch.
        let sender = tokio::spawn(async move { q2.push(&result(3)).await.unwrap() });
        let mut out = VecDeque::new();
        assert!(q.next_batch(&mut out).await);
        assert_eq!(out.iter().map(Bytes::len).sum::<usize>(), 16);
        sender.await.unwrap();
        assert!(q.next_batch(&mut out).await);
        assert_eq!(out.iter().map(Bytes::len).sum::<usize>(), 2 * 16);
    }

    /// Counts wake-ups.
    struct Wakes(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn local_pushes_wake_nobody_and_are_taken_without_a_yield() {
        use std::{sync::atomic::Ordering::SeqCst, task::Context};
        let q = WriteQueue::new(1 << 20);
        let wakes = Arc::new(Wakes(0.into()));
        let waker = Waker::from(wakes.clone());
        let mut cx = Context::from_waker(&waker);
        let mut out = VecDeque::new();
        {
            let mut next = pin!(q.next_batch(&mut out));
            assert!(next.as_mut().poll(&mut cx).is_pending());
            assert!(q.push_local(&result(3)).unwrap());
            assert_eq!(
                wakes.0.load(SeqCst),
                0,
                "the driver polls its writer itself"
            );
            // Taken on the next poll: no yield for the connection's own frames.
            assert_eq!(next.as_mut().poll(&mut cx), Poll::Ready(true));
        }
        assert_eq!(out.iter().map(Bytes::len).sum::<usize>(), 16);
        out.clear();
        {
            let mut next = pin!(q.next_batch(&mut out));
            assert!(next.as_mut().poll(&mut cx).is_pending());
            q.expect_push();
            q.expect_push();
            q.push(&result(3)).await.unwrap();
            assert_eq!(
                wakes.0.load(SeqCst),
                1,
                "another task's frame wakes the writer"
            );
            // ... which yields once before taking the batch, since another
            // task it expects has not pushed yet.
            assert!(next.as_mut().poll(&mut cx).is_pending());
        }
    }

    #[tokio::test]
    async fn large_payloads_are_not_copied() {
        let q = WriteQueue::new(1 << 20);
        let msg = result(ZERO_COPY_MIN);
        let payload_ptr = msg.payload().unwrap().as_ptr();
        q.push(&msg).await.unwrap();
        let mut out = VecDeque::new();
        q.next_batch(&mut out).await;
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..], b"R000100004000");
        assert_eq!(out[1].as_ptr(), payload_ptr);
    }

    #[tokio::test]
    async fn push_waits_for_room_and_close_releases_waiters() {
        let q = Arc::new(WriteQueue::new(100));
        q.push(&result(200)).await.unwrap(); // alone, over the limit: accepted
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.push(&result(1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished());
        let mut out = VecDeque::new();
        q.next_batch(&mut out).await;
        waiter.await.unwrap().unwrap();
        q.push(&result(200)).await.unwrap();
        let q3 = q.clone();
        let blocked = tokio::spawn(async move { q3.push(&result(1)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        q.close(&CloseReason::Local);
        assert!(matches!(
            blocked.await.unwrap(),
            Err(Error::Closed(CloseReason::Local))
        ));
        // queued bytes are still handed to the writer, then it is told to stop
        out.clear();
        assert!(q.next_batch(&mut out).await);
        assert!(!q.next_batch(&mut out).await);
    }

    #[tokio::test]
    async fn invalid_message_is_refused_before_queueing() {
        let q = WriteQueue::new(100);
        let msg = Message::Notification {
            name: Text::from("n".repeat(5000)),
            payload: Bytes::new(),
        };
        assert!(matches!(q.push(&msg).await, Err(Error::Encode(_))));
        assert!(matches!(q.push_now(&msg), Err(Error::Encode(_))));
    }
}
