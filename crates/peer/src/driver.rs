//! The one task per connection that moves bytes and events.
//!
//! It reads and decodes frames zero-copy and hands each message to the
//! [`Core`](crate::core::Core); dispatches what the core asks for (handlers,
//! answers, parts); writes what the core queued, coalesced and vectored;
//! and wakes the core at its deadlines. It makes no decision of its own
//! about the protocol: it stops reading when the core says so, and stops
//! altogether once the core has closed and what it queued is flushed.
//!
//! All of it is one hand-written `poll`, so the transport is not split and
//! one lock on the core per message covers applying the previous message's
//! replies, handling this one and taking its events.

use std::{
    collections::VecDeque,
    future::poll_fn,
    io::{self, IoSlice},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Buf, BufMut, Bytes};
use gotalk_proto::{DecodeError, DecodeLimits, Decoded, Message, ProtocolErrorCode, decode_bytes};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    time::{Instant, Sleep, sleep_until, timeout},
};

use crate::{
    CloseReason,
    buffer_gauge::{self, ReadGauge},
    busy_poll::BusyPoll,
    connection::{Connection, FinishGuard, Runtime},
    core::{Core, Event},
    dispatch::Dispatch,
    error::Violation,
    read_buffer::{FIRST_ROOM, ReadBuffer},
};

/// Frames at least this long are large: read into a buffer of their own,
/// and no further than their end (see [`read_plan`]).
const LARGE_FRAME: usize = 16 * 1024;
/// Between large frames, room for the next is made before its header
/// arrives, up to this much (see [`read_plan`]); the part of a longer frame
/// read into it is copied once.
const MAX_ANTICIPATED: usize = 256 * 1024;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// The replies to this many messages go out before the next message read is
/// handled (see [`Driver::early_write`]).
const EARLY_WRITE_AFTER: u8 = 32;
/// After an early write, this many writes go by before the next one.
const EARLY_WRITE_EVERY: u8 = 16;
/// A longer run of messages read is answered in groups of this many,
/// whatever [`EARLY_WRITE_EVERY`] says (see [`Driver::early_write`]).
const EARLY_WRITE_GROUP: u8 = 128;
/// How long closing may spend flushing what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Runs the connection until it closes.
///
/// An `async` block, not an `async fn`: the future of an `async fn` keeps
/// its arguments and the locals they are moved into side by side, for
/// the connection's whole life (the `io` a second time: 590 bytes per
/// WebSocket connection). The block holds the driver once.
pub(crate) fn run<T>(io: T, conn: Arc<Connection>) -> impl Future<Output = ()>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    crate::runtime_metrics::connection_opened();
    let mut driver = Driver::new(io, conn.clone());
    driver.gauge = buffer_gauge::attach(&conn);
    async move {
        // Dropped with this future if it never finishes (see `FinishGuard`).
        let guard = FinishGuard::new(conn);
        poll_fn(|cx| driver.poll(cx)).await;
        // Boxed: the timer would otherwise make every connection's task
        // larger for its whole life.
        let _ = Box::pin(timeout(CLOSE_FLUSH, driver.io.shutdown())).await;
        let reason = driver.closing.map(|(reason, _)| reason);
        drop(driver.io);
        tracing::trace!(reason = ?reason, "connection closed");
        let conn = guard.disarm();
        crate::runtime_metrics::connection_closed(reason.as_ref());
        conn.mark_finished(reason.as_ref());
    }
}

/// What reading brought.
enum Input {
    /// Nothing now (the transport has no more, or the core wants none).
    None,
    Message(Message),
    Malformed(DecodeError),
    /// The transport's read side ended or failed.
    Ended(CloseReason),
}

/// The read side: bytes read and not yet decoded, and what sizes the reads.
struct Reader {
    input: ReadBuffer,
    /// Length of the last whole frame, to size the read buffer.
    last_frame: usize,
    limits: DecodeLimits,
    /// False once the transport's read side ended.
    open: bool,
    /// The transport had nothing to read during this poll: it wakes the
    /// task when it has, so it is not asked again until the next poll.
    blocked: bool,
}

struct Driver<T> {
    io: T,
    conn: Arc<Connection>,
    reader: Reader,
    /// What the core said at the last lock.
    wants_read: bool,
    /// Bytes taken from the core and not yet written.
    batch: VecDeque<Bytes>,
    needs_flush: bool,
    /// The core had more to write at the last lock.
    core_has_transmit: bool,
    /// Nothing was in flight either way at the last lock.
    idle: bool,
    /// Writing failed or timed out: reported to the core at the next lock,
    /// and nothing more is written.
    write_failed: Option<CloseReason>,
    /// The writer yielded once for tasks still to queue their frames.
    yielded: bool,
    /// Messages handled since the queue was last taken (saturating).
    handled: u8,
    /// Writes still to go by before an early one (see [`Self::early_write`]).
    early_wait: u8,
    events: VecDeque<Event<Runtime>>,
    dispatch: Dispatch,
    /// When the last read completed.
    now: Instant,
    /// Allocated while there is a deadline: an idle connection without a
    /// read timeout or heartbeat has none.
    timer: Option<Pin<Box<Sleep>>>,
    timer_at: Option<Instant>,
    core_deadline: Option<Instant>,
    write_deadline: Option<Instant>,
    /// The core's deadline passed: for the core at the next lock.
    core_due: bool,
    /// Set once the core closed: why, and until when flushing may go on.
    closing: Option<(CloseReason, Instant)>,
    /// Where the read buffer's size is published, for tests.
    gauge: Option<Arc<ReadGauge>>,
    /// Set by [`Config::busy_poll`](crate::Config::busy_poll). Boxed: every
    /// connection's task holds the field, few set it.
    busy: Option<Box<BusyPoll>>,
}

impl<T: AsyncRead + AsyncWrite + Unpin> Driver<T> {
    fn new(io: T, conn: Arc<Connection>) -> Self {
        let now = Instant::now();
        let limits = conn.config.decode_limits();
        let busy = conn.config.busy_poll.map(|w| Box::new(BusyPoll::new(w)));
        Self {
            io,
            conn,
            reader: Reader {
                input: ReadBuffer::new(),
                last_frame: 0,
                limits,
                open: true,
                blocked: false,
            },
            wants_read: true,
            batch: VecDeque::new(),
            needs_flush: false,
            core_has_transmit: false,
            idle: true,
            write_failed: None,
            yielded: false,
            handled: 0,
            early_wait: 0,
            events: VecDeque::new(),
            dispatch: Dispatch::default(),
            now,
            timer: None,
            timer_at: None,
            core_deadline: None,
            write_deadline: None,
            core_due: false,
            closing: None,
            gauge: None,
            busy,
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        self.reader.blocked = false;
        loop {
            let input = if self.wants_read && self.reader.open && self.closing.is_none() {
                self.poll_input(cx)
            } else {
                Input::None
            };
            let had_input = !matches!(input, Input::None);
            let could_read = self.wants_read;
            let wants_yield = self.exchange(cx, input, had_input);
            // The core lets reading resume: read at once.
            let resumed = !could_read && self.wants_read;
            let had_events = !self.events.is_empty();
            while let Some(event) = self.events.pop_front() {
                if let Some(reason) = self.dispatch.event(&self.conn, event) {
                    self.closed(reason);
                }
            }
            if !had_input {
                // The input read so far is all dispatched.
                self.dispatch.end_round();
            }
            let wrote = self.poll_write(cx);
            if (had_input || wrote)
                && let Some(busy) = &mut self.busy
            {
                busy.activity();
            }
            if let Some((_, flush_until)) = &self.closing {
                let flushed = self.batch.is_empty() && !self.core_has_transmit && !self.needs_flush;
                if flushed || self.write_failed.is_some() || Instant::now() >= *flush_until {
                    return Poll::Ready(());
                }
            }
            if had_input || resumed || had_events || self.dispatch.has_ops() || wrote {
                continue;
            }
            // Polled only when there is nothing else to do, once every
            // deadline is known: a timer poll spends tokio's cooperative
            // budget, which a poll per message would use up.
            if self.poll_timer(cx) {
                continue;
            }
            // Idle (nothing in flight either way): a connection without a
            // partial frame holds no buffer, nor queues grown by the last
            // burst. Not while traffic goes on, where every return here would
            // free what the next burst allocates again (and the spare read
            // buffers that large frames reuse).
            // No slots are kept either: keeping 4 saved 552 instructions per
            // request with 1 000 connections of one request each (5 876 ->
            // 5 324, callgrind), but took an idle connection from 2.8 to
            // 3.3 KiB (the core's and the driver's queues swap, so both kept
            // theirs), over the 3 KiB an idle connection may cost.
            if self.idle {
                self.reader.input.release();
                if self.events.capacity() > 0 {
                    self.events = VecDeque::new();
                }
                if self.batch.is_empty() && self.batch.capacity() > 0 {
                    self.batch = VecDeque::new();
                }
            }
            if let Some(gauge) = &self.gauge {
                gauge.set(self.reader.input.held());
            }
            if wants_yield {
                // Let the tasks just woken queue their frames first: one
                // write for all of them (see `exchange`).
                self.yielded = true;
                cx.waker().wake_by_ref();
            } else if let Some(busy) = &mut self.busy
                && busy.keep_polling(std::time::Instant::now())
            {
                // Poll again rather than sleep (see `busy_poll`).
                cx.waker().wake_by_ref();
            }
            return Poll::Pending;
        }
    }

    /// The one lock per round: applies what dispatching collected, hands the
    /// core the input and the time, takes its events and, once the input is
    /// exhausted, the bytes to write. Returns whether the writer should
    /// yield before taking them.
    fn exchange(&mut self, cx: &Context<'_>, input: Input, had_input: bool) -> bool {
        let mut l = self.conn.lock();
        if self.dispatch.has_ops() {
            self.dispatch.apply(&mut l.core);
        }
        match input {
            Input::None => {}
            Input::Message(msg) => {
                self.handled = self.handled.saturating_add(1);
                let now = self.now.into_std();
                if !l.core.handle_message(now, msg) {
                    handle_more(&mut l.core, now, &mut self.reader);
                }
            }
            Input::Malformed(e) => l.core.handle_decode_error(e),
            Input::Ended(reason) => l.core.handle_transport_closed(reason),
        }
        if let Some(reason) = &self.write_failed {
            l.core.handle_transport_closed(reason.clone());
        }
        if std::mem::take(&mut self.core_due) {
            l.core.handle_timeout(Instant::now().into_std());
        }
        if l.core.has_events() {
            // Answers go to their callers' slots here, under this lock.
            let l = &mut *l;
            l.core
                .take_events_answering(&mut self.events, |key, answer| {
                    if l.answers.answer(key, answer) {
                        l.woken += 1;
                    }
                });
        }
        if !had_input {
            // Needed only once the input is exhausted, before sleeping.
            self.core_deadline = l.core.poll_timeout().map(Instant::from_std);
        }
        // Replies to what was read go out together: the queue is taken once
        // the input is exhausted. When other tasks queued frames, and fewer
        // than the callers it gave answers to since the last batch, the
        // writer yields once first, so that the callers still to run queue
        // theirs too: otherwise tokio's LIFO slot runs the driver right
        // after the first push and every frame costs its own write. A lone
        // caller's request goes out without that yield. Spawned handlers
        // need no yield: while one woken is still to run, the others'
        // answers wait for it (`hold`), and the last one wakes the driver.
        let mut wants_yield = false;
        let mut took = false;
        let held = l.hold.is_some() && self.closing.is_none();
        // Closing flushes what waits, delayed or not.
        let due = if self.closing.is_some() {
            l.core.has_transmit()
        } else {
            l.core.transmit_due(|| Instant::now().into_std())
        };
        if had_input && self.early_write() && !held && self.batch.is_empty() && due {
            l.core.poll_transmit(&mut self.batch);
            // The frames of other tasks just taken need no yield.
            l.woken = l.woken.saturating_sub(l.pushes);
            l.pushes = 0;
            // The one just handed over answers after this write.
            self.handled = 1;
            self.early_wait = EARLY_WRITE_EVERY;
            took = true;
        } else if !had_input && !held && self.batch.is_empty() && due {
            if l.pushes > 0 && l.pushes < l.woken && !self.yielded && self.closing.is_none() {
                wants_yield = true;
            } else {
                l.core.poll_transmit(&mut self.batch);
                l.pushes = 0;
                l.woken = 0;
                self.yielded = false;
                self.handled = 0;
                self.early_wait = self.early_wait.saturating_sub(1);
                took = true;
            }
        }
        // After taking the queue, which may let reading resume.
        self.wants_read = l.core.wants_read();
        self.core_has_transmit = l.core.has_transmit();
        self.idle = l.core.is_idle();
        if !l.driver.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            l.driver = Some(cx.waker().clone());
        }
        drop(l);
        if took {
            self.needs_flush = true;
            self.conn.room_made();
        }
        wants_yield
    }

    /// Whether the replies queued so far should be written before the
    /// message just handed to the core, and the rest of what was read, are
    /// handled: it is the [`EARLY_WRITE_AFTER`]` + 1`th since the last write
    /// (at most once in [`EARLY_WRITE_EVERY`] writes), or the
    /// [`EARLY_WRITE_GROUP`]` + 1`th.
    ///
    /// Replies to what one read brought normally go out together, once it
    /// is all handled. But a peer that keeps many requests in flight and
    /// sends them as its window allows then gets them all at once too, and
    /// the two sides take turns: each waits while the other handles the
    /// whole window (one connection, 64 requests in flight: client and
    /// server each idle about half the time). Writing the first
    /// [`EARLY_WRITE_AFTER`] replies early lets the peer work on them while
    /// this side handles the rest; the window then travels as two or more
    /// groups, each side working on one while the other works on another,
    /// and stays so without further early writes.
    ///
    /// When the peer cannot work meanwhile (it shares this thread, as in an
    /// in-process benchmark), the groups merge again at once and an early
    /// write is only one more system call; so [`EARLY_WRITE_EVERY`] writes
    /// go by between two early ones, which is enough to split a window
    /// again when it merged.
    ///
    /// A window much larger than that first group (one connection, 640 in
    /// flight) still travels mostly as one: a group of 32 and one of 608,
    /// each side idle 45–60 % of the time. So a run longer than
    /// [`EARLY_WRITE_GROUP`] is always written in groups of that many. It
    /// costs one system call per 128 replies where the peer cannot work
    /// meanwhile (`bench --self -c 640`: 0.93×), and doubles the rate
    /// where it can (1.3 M → 2.4–3.0 M requests per second, both sides
    /// busy 82–97 %; `docs/benchmarks.md`).
    fn early_write(&self) -> bool {
        self.closing.is_none()
            && (self.handled > EARLY_WRITE_GROUP
                || (self.handled > EARLY_WRITE_AFTER && self.early_wait == 0))
    }

    /// The core closed: stop reading, flush for a while, then stop.
    fn closed(&mut self, reason: CloseReason) {
        if self.closing.is_none() {
            if matches!(reason, CloseReason::SlowConsumer { .. }) {
                // The peer does not read: flushing would only hold the
                // memory until the deadline.
                self.batch.clear();
            }
            self.closing = Some((reason, Instant::now() + CLOSE_FLUSH));
            self.wants_read = false;
            // Senders waiting for room fail now instead.
            self.conn.room_made();
        }
    }

    /// The next whole message, reading as needed.
    fn poll_input(&mut self, cx: &mut Context<'_>) -> Input {
        loop {
            match decode_bytes(self.reader.input.get_mut(), &self.reader.limits) {
                Ok(Decoded::Complete(msg, len)) => {
                    self.reader.last_frame = len;
                    return Input::Message(msg);
                }
                Ok(Decoded::Incomplete(_)) if self.reader.blocked => return Input::None,
                Ok(Decoded::Incomplete(missing)) => {
                    // `missing` is bounded by the payload limit, checked
                    // before this point.
                    let buffered = self.reader.input.get_mut().len();
                    let read = if self.reader.input.reads_to_scratch()
                        && self.reader.last_frame < LARGE_FRAME
                    {
                        // No partial frame: read into the thread's scratch
                        // chunk, which costs this connection nothing unless
                        // bytes arrive.
                        let mut scratch = match self.reader.input.begin_scratch() {
                            Ok(scratch) => scratch,
                            Err(_) => return self.out_of_memory(FIRST_ROOM),
                        };
                        let room = scratch.room();
                        let free = room.capacity() - room.len();
                        let read = tokio_util::io::poll_read_buf(
                            Pin::new(&mut self.io),
                            cx,
                            &mut room.limit(free),
                        );
                        self.reader.input.end_scratch(scratch);
                        read
                    } else {
                        let (room, limit) = read_plan(buffered, missing, self.reader.last_frame);
                        if self.reader.input.reserve(room).is_err() {
                            return self.out_of_memory(buffered.saturating_add(room));
                        }
                        let mut dst = self.reader.input.get_mut().limit(limit);
                        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut dst)
                    };
                    match read {
                        Poll::Pending => {
                            self.reader.blocked = true;
                            return Input::None;
                        }
                        Poll::Ready(Ok(0)) => {
                            self.reader.open = false;
                            return Input::Ended(CloseReason::PeerClosed);
                        }
                        Poll::Ready(Ok(n)) => {
                            crate::runtime_metrics::bytes_received(n);
                            self.now = Instant::now();
                        }
                        Poll::Ready(Err(e)) => {
                            self.reader.open = false;
                            return Input::Ended(io_reason(e));
                        }
                    }
                }
                Err(e) => {
                    self.reader.open = false;
                    return Input::Malformed(e);
                }
            }
        }
    }

    /// The read buffer could not grow: this connection closes, nothing else.
    fn out_of_memory(&mut self, requested: usize) -> Input {
        tracing::warn!(
            requested,
            "no memory for the read buffer: closing the connection"
        );
        self.reader.open = false;
        Input::Ended(CloseReason::OutOfMemory { requested })
    }

    /// Writes the batch; true if any bytes went out (or a flush finished),
    /// or writing just failed.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> bool {
        if self.write_failed.is_some() {
            return false;
        }
        let mut progressed = false;
        while let Some(first) = self.batch.front() {
            // One buffer (small frames coalesce into one): a plain write,
            // which costs the kernel less than a vectored one.
            let poll = if self.batch.len() == 1 {
                Pin::new(&mut self.io).poll_write(cx, first)
            } else {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let count = self.batch.len().min(MAX_IOVECS);
                for (slot, bytes) in slices.iter_mut().zip(self.batch.iter()) {
                    *slot = IoSlice::new(bytes);
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count])
            };
            match poll {
                Poll::Pending => {
                    self.arm_write_deadline();
                    return progressed;
                }
                Poll::Ready(Ok(0)) => return self.write_failed(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(written)) => {
                    crate::runtime_metrics::bytes_sent(written);
                    advance(&mut self.batch, written);
                    self.write_deadline = None;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return self.write_failed(e),
            }
        }
        if self.needs_flush {
            match Pin::new(&mut self.io).poll_flush(cx) {
                Poll::Pending => self.arm_write_deadline(),
                Poll::Ready(Ok(())) => {
                    self.needs_flush = false;
                    self.write_deadline = None;
                    progressed = true;
                }
                Poll::Ready(Err(e)) => return self.write_failed(e),
            }
        }
        progressed
    }

    fn write_failed(&mut self, e: io::Error) -> bool {
        self.batch.clear();
        self.write_failed = Some(io_reason(e));
        true
    }

    fn arm_write_deadline(&mut self) {
        if let Some(limit) = self.conn.config.write_timeout {
            self.write_deadline
                .get_or_insert_with(|| Instant::now() + limit);
        }
    }

    /// Polls the one timer, set to the earliest deadline; returns whether
    /// one passed (the core's, or the write deadline: both reported to the
    /// core at the next lock; the flush deadline: seen by `poll`).
    fn poll_timer(&mut self, cx: &mut Context<'_>) -> bool {
        let flush = self.closing.as_ref().map(|(_, until)| *until);
        let next = [self.core_deadline, self.write_deadline, flush]
            .into_iter()
            .flatten()
            .min();
        let Some(next) = next else {
            self.timer_at = None;
            self.timer = None;
            return false;
        };
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(sleep_until(next)));
        if self.timer_at != Some(next) {
            timer.as_mut().reset(next);
            self.timer_at = Some(next);
        }
        if timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        self.timer_at = None;
        if self.core_deadline.take_if(|d| *d <= now).is_some() {
            self.core_due = true;
        }
        if self.write_deadline.take_if(|d| *d <= now).is_some() {
            // Nothing more will be written: no flush on close.
            self.batch.clear();
            self.write_failed = Some(CloseReason::WriteTimeout);
        }
        true
    }
}

/// After a message that started no handler: hands the core the whole
/// messages already read, under the same lock, for as long as none of them
/// starts one (a run of results, parts and heartbeats costs one lock).
fn handle_more(core: &mut Core<Runtime>, now: std::time::Instant, reader: &mut Reader) {
    while core.wants_read() {
        match decode_bytes(reader.input.get_mut(), &reader.limits) {
            Ok(Decoded::Complete(msg, len)) => {
                reader.last_frame = len;
                if core.handle_message(now, msg) {
                    return;
                }
            }
            Ok(Decoded::Incomplete(_)) => return,
            Err(e) => {
                reader.open = false;
                return core.handle_decode_error(e);
            }
        }
    }
}

fn advance(batch: &mut VecDeque<Bytes>, mut written: usize) {
    while written > 0 {
        let front = batch.front_mut().expect("wrote no more than queued");
        if front.len() <= written {
            written -= front.len();
            batch.pop_front();
        } else {
            front.advance(written);
            written = 0;
        }
    }
}

/// How much room to make in the read buffer of the connection's own before
/// the next read, and how many bytes that read may take. `buffered` is what
/// is held of the frame in progress, `missing` what it still lacks (as far
/// as its header is known), `last_frame` the length of the last whole frame.
/// (Without a partial frame, after small frames, the driver reads into the
/// thread's scratch chunk instead.)
///
/// The room never runs ahead of what the peer sent: [`FIRST_ROOM`] at first,
/// then as much as was received of this frame (the buffer doubles), or the
/// length of the last frame if that was large. A header declaring 16 MiB
/// followed by one byte costs 4 KiB, not 16 MiB.
///
/// Decoded payloads are slices of the read buffer, so a buffer is replaced,
/// not reused, once it is full; whatever part of a frame it holds then is
/// copied into the new one. Large frames therefore get a buffer of their own,
/// and reads stop at their end: a run of large frames of like size is read
/// without any copy (room for the next is that of the last), where reading
/// ahead would copy most of every other frame.
fn read_plan(buffered: usize, missing: usize, last_frame: usize) -> (usize, usize) {
    let last_large = if last_frame >= LARGE_FRAME {
        last_frame
    } else {
        0
    };
    if buffered == 0 && last_large > 0 {
        // Between large frames: room for one like the last, and no more.
        let room = last_large.min(MAX_ANTICIPATED);
        return (room, room);
    }
    let grown = FIRST_ROOM.max(buffered).max(last_large);
    if missing >= LARGE_FRAME {
        // In the payload of a large frame: read towards its end, no further.
        let room = missing.min(grown);
        (room, room)
    } else {
        // Small frames: read ahead.
        (missing.max(FIRST_ROOM).min(grown), usize::MAX)
    }
}

fn io_reason(e: io::Error) -> CloseReason {
    match e.kind() {
        // A transport that frames messages itself (WebSocket) reports a
        // frame that contradicts its header this way: the peer broke the
        // protocol, and is told so with ProtocolError 2.
        io::ErrorKind::InvalidData => CloseReason::ProtocolViolation {
            code: ProtocolErrorCode::InvalidMessage,
            violation: Violation::Transport(Arc::new(e)),
        },
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseReason::PeerClosed,
        _ => CloseReason::Io(Arc::new(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_plan_gives_large_frames_their_own_buffer() {
        // Small frames: read ahead, in a first chunk.
        assert_eq!(read_plan(3, 10, 40), (FIRST_ROOM, usize::MAX));
        // In a large payload after a large frame: make room for the rest,
        // read no further.
        assert_eq!(read_plan(100, 70_000, 1 << 20), (70_000, 70_000));
        assert_eq!(read_plan(100, 70_000, 65_549), (65_549, 65_549));
        // Between large frames: room for one like the last, no more.
        assert_eq!(read_plan(0, 1, 65_549), (65_549, 65_549));
        assert_eq!(
            read_plan(0, 1, 10 * MAX_ANTICIPATED),
            (MAX_ANTICIPATED, MAX_ANTICIPATED)
        );
        // A partial small frame after a large one: back to reading ahead.
        assert_eq!(read_plan(5, 8, 65_549), (FIRST_ROOM, usize::MAX));
    }

    #[test]
    fn read_plan_grows_only_with_what_arrived() {
        const HUGE: usize = 16 << 20;
        // A header declaring 16 MiB and one byte: a first chunk, no more.
        assert_eq!(read_plan(22, HUGE, 0), (FIRST_ROOM, FIRST_ROOM));
        // Then the room doubles with the bytes received.
        assert_eq!(read_plan(4_118, HUGE, 0), (4_118, 4_118));
        assert_eq!(read_plan(1 << 20, HUGE, 0), (1 << 20, 1 << 20));
        // Never past the frame's end.
        assert_eq!(read_plan(1 << 20, 20_000, 0), (20_000, 20_000));
        // A mid-sized small frame: read ahead only as far as received.
        assert_eq!(read_plan(100, 10_000, 0), (FIRST_ROOM, usize::MAX));
        assert_eq!(read_plan(6_000, 10_000, 0), (6_000, usize::MAX));
        // Room for the whole rest at once only after a frame as large.
        assert_eq!(read_plan(22, HUGE, HUGE), (HUGE, HUGE));
        // The room never exceeds twice what arrived, or the last frame.
        for buffered in [1, 22, 4_096, 70_000, 3 << 20] {
            for missing in [1, 100, 20_000, HUGE] {
                let (room, _) = read_plan(buffered, missing, 0);
                assert!(room <= FIRST_ROOM.max(buffered), "{buffered} {missing}");
            }
        }
    }
}
