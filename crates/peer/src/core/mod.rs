//! The connection as a state machine with no I/O and no clock of its own.
//!
//! In the manner of quinn-proto, [`Core`] makes every decision about a
//! connection and performs none of its I/O: the runtime feeds it decoded
//! messages ([`handle_message`](Core::handle_message)), the time
//! ([`handle_timeout`](Core::handle_timeout)) and the local side's commands
//! ([`request`](Core::request), [`respond`](Core::respond), ...), and takes
//! from it the bytes to write ([`poll_transmit`](Core::poll_transmit)), what
//! to run or whom to tell ([`poll_event`](Core::poll_event)) and when to
//! wake it next ([`poll_timeout`](Core::poll_timeout)).
//!
//! It owns request IDs, both request tables, admission and limits, result
//! assembly under the payload limit, stream tables and retired IDs, the byte
//! and notification budgets (counters released explicitly), the read
//! timeout, heartbeat and close deadlines, refusal texts and the retry
//! decision ([`RetryPolicy`]), graceful close and the ProtocolError owed to
//! a peer that broke the rules. Back-pressure is [`Core::wants_read`]: the
//! runtime stops reading while it is false.
//!
//! This module imports nothing from tokio (`.ci/run` checks that), so it is
//! tested deterministically with a manual clock: see `tests.rs`.
//!
//! Most users want [`Peer`](crate::Peer); this is for runtimes and tests.

mod budget;
mod ceiling;
mod event;
mod outgoing;
mod retry;
mod tables;
#[cfg(test)]
mod tests;
mod timers;

use std::{
    collections::VecDeque,
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use gotalk_proto::{DecodeError, Message, ProtocolErrorCode, RequestId, Text};

pub use self::{
    budget::Charge,
    ceiling::WriteCeiling,
    event::{Credit, Delivery, Event, Outcome, Reply, StreamItem},
    retry::{RetryDecision, RetryPolicy},
};
use self::{
    budget::{Budget, CHARGE_MIN, Jitter},
    outgoing::Outgoing,
    tables::{Admission, Outbound, PartTarget, Tables},
    timers::{Expired, Timers},
};
use crate::{
    CloseReason, Config, Error, RemoteError,
    error::{CLOSING_REFUSAL, Violation},
};

/// What the runtime keeps per request: opaque to the core, which only
/// stores and hands them back.
pub trait Tokens {
    /// Reaches the caller of one of our buffer requests (its one answer).
    type Caller;
    /// Reaches the reader of one of our stream requests' results.
    type Reader: Clone;
    /// Reaches the handler reading one of the peer's stream requests.
    type Parts: Clone;
}

/// How to close (see [`Core::close`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseMode {
    /// Refuse new requests (the peer's get the retry result `connection
    /// closing`), let those in flight both ways finish for up to
    /// [`Config::close_timeout`], then close.
    Graceful,
    /// Close now: calls in flight fail with [`CloseReason::Local`].
    Immediate,
}

/// Counts for tests, fuzzing and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Payload bytes held for the peer (the byte budget in use).
    pub buffered_bytes: usize,
    /// Of those, the bytes of streamed results being collected for our
    /// buffer requests.
    pub collecting_bytes: usize,
    /// The byte budget.
    pub max_buffered_bytes: usize,
    /// Our requests waiting for results.
    pub outbound: usize,
    /// The peer's requests whose handlers run.
    pub inbound: usize,
    /// The peer's stream requests whose handlers run.
    pub inbound_streams: usize,
    /// The peer's stream requests open in the stream table.
    pub open_streams: usize,
    /// Stream IDs remembered as retired.
    pub retired: usize,
    /// Notification handlers running.
    pub notifications: usize,
    /// Bytes waiting for the transport.
    pub queued_bytes: usize,
}

#[derive(Debug)]
struct Limits {
    max_payload: u32,
    max_notifications: usize,
    rate_limit_wait_ms: (u64, u64),
    close_timeout: Duration,
    remote_retry_results: bool,
}

/// One connection's state (see the module docs).
pub struct Core<T: Tokens> {
    tables: Tables<T>,
    outgoing: Outgoing,
    budget: Budget,
    jitter: Jitter,
    timers: Timers,
    events: VecDeque<Event<T>>,
    /// [`Event::Answer`]s among `events`.
    answers_queued: usize,
    limits: Limits,
    notifications: usize,
    /// A notification read while every handler slot was taken.
    waiting_notification: Option<(Text<Bytes>, Bytes)>,
    /// Bytes charged for streamed results being collected for our buffer
    /// requests (part of the budget in use).
    collecting: usize,
    /// A reply of ours was queued while the queue was full: reading waits
    /// for the transport to take the queue.
    reply_waits_for_room: bool,
    accepting: bool,
    closed: Option<CloseReason>,
}

impl<T: Tokens> std::fmt::Debug for Core<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("stats", &self.stats())
            .field("accepting", &self.accepting)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl<T: Tokens> Core<T> {
    /// A connection whose handshake is done at `now`. `seed` seeds the
    /// jitter of rate-limit waits.
    pub fn new(config: &Config, now: Instant, seed: u64) -> Self {
        let ms = |d: Duration| d.as_millis().min(u128::from(u64::MAX)) as u64;
        Self {
            tables: Tables::new(
                config.max_inbound_requests,
                config.max_inbound_streams,
                config.stream_buffer_parts,
            ),
            outgoing: Outgoing::new(config.max_write_queue_bytes, config.write_ceiling.clone()),
            budget: Budget::new(config.max_buffered_bytes),
            jitter: Jitter::new(seed),
            timers: Timers::new(now, config.read_timeout, config.heartbeat_interval),
            events: VecDeque::new(),
            answers_queued: 0,
            limits: Limits {
                max_payload: config.max_payload,
                max_notifications: config.max_concurrent_notifications.max(1),
                rate_limit_wait_ms: (ms(config.rate_limit_wait.0), ms(config.rate_limit_wait.1)),
                close_timeout: config.close_timeout,
                remote_retry_results: config.remote_retry_results,
            },
            notifications: 0,
            waiting_notification: None,
            collecting: 0,
            reply_waits_for_room: false,
            accepting: true,
            closed: None,
        }
    }

    // ---- input ----------------------------------------------------------

    /// A whole message arrived at `now`. Returns true when it may have
    /// started work (a request or notification handler to run) that the
    /// runtime should dispatch before it hands over the next message, so
    /// that a handler answering at once frees its slot in time; other
    /// messages (results, parts, heartbeats) may be handed over in a row.
    pub fn handle_message(&mut self, now: Instant, msg: Message) -> bool {
        if self.closed.is_some() {
            return false;
        }
        self.timers.message_received(now);
        let starts_work = matches!(
            msg,
            Message::SingleRequest { .. }
                | Message::StreamRequest { .. }
                | Message::Notification { .. }
        );
        match msg {
            Message::SingleRequest { id, op, payload } => self.on_request(id, op, payload),
            Message::StreamRequest { id, op, payload } => self.on_stream_request(id, op, payload),
            Message::StreamRequestPart { id, payload } => self.on_request_part(id, payload),
            Message::SingleResult { id, payload } => self.on_result(id, Answer::Single, payload),
            Message::StreamResult { id, payload } => self.on_result(id, Answer::Part, payload),
            Message::ErrorResult { id, payload } => self.on_result(id, Answer::Error, payload),
            Message::RetryResult {
                id,
                wait_ms,
                payload,
            } => self.on_result(id, Answer::Retry(wait_ms), payload),
            Message::Notification { name, payload } => self.on_notification(name, payload),
            Message::Heartbeat { load, time } => {
                self.events.push_back(Event::Heartbeat { load, time })
            }
            Message::ProtocolError { code } => {
                self.close_with(CloseReason::RemoteProtocolError { code }, None);
            }
        }
        starts_work
    }

    /// The bytes read do not decode: the peer broke the protocol.
    pub fn handle_decode_error(&mut self, error: DecodeError) {
        let code = error.protocol_error_code();
        self.violate(code, Violation::Malformed(error));
    }

    /// The transport ended or failed (read EOF, an I/O error, a write
    /// timeout; a transport framing error is a
    /// [`CloseReason::ProtocolViolation`] and owes the peer a ProtocolError).
    pub fn handle_transport_closed(&mut self, reason: CloseReason) {
        let owed = match &reason {
            CloseReason::ProtocolViolation { code, .. } => Some(*code),
            _ => None,
        };
        self.close_with(reason, owed);
    }

    /// Time passed: acts on every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while self.closed.is_none() {
            match self.timers.expired(now) {
                None => break,
                // We paused reading (a slow consumer of ours): the peer is
                // not silent, we are not listening. The deadline restarts.
                Some(Expired::Read) if !self.wants_read() => self.timers.message_received(now),
                Some(Expired::Read) => {
                    self.close_with(CloseReason::ReadTimeout, Some(ProtocolErrorCode::Timeout));
                }
                Some(Expired::Close) => self.close_with(CloseReason::Local, None),
                Some(Expired::Heartbeat) => self.events.push_back(Event::HeartbeatDue),
            }
        }
    }

    // ---- output ---------------------------------------------------------

    /// Moves the bytes to write into `out`; returns how many.
    pub fn poll_transmit(&mut self, out: &mut VecDeque<Bytes>) -> usize {
        self.reply_waits_for_room = false;
        self.outgoing.take(out)
    }

    /// True when [`poll_transmit`](Self::poll_transmit) has bytes.
    pub fn has_transmit(&self) -> bool {
        self.outgoing.len() > 0
    }

    /// True when the bytes waiting should be written now: some were queued
    /// without a delay, or they are many, or the deadline of those queued
    /// with one ([`notify_shared_by`](Self::notify_shared_by)) passed.
    /// `now` is called only in the last case.
    pub fn transmit_due(&self, now: impl FnOnce() -> Instant) -> bool {
        self.outgoing.is_due(now)
    }

    /// True when [`poll_event`](Self::poll_event) has something.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Moves every pending event to the back of `into` (at once when `into`
    /// is empty: the two queues are swapped).
    pub fn take_events(&mut self, into: &mut VecDeque<Event<T>>) {
        self.answers_queued = 0;
        if into.is_empty() {
            std::mem::swap(into, &mut self.events);
        } else {
            into.append(&mut self.events);
        }
    }

    /// Like [`take_events`](Self::take_events), but each
    /// [`Event::Answer`] goes to `answer` instead, in order with the rest: a
    /// runtime that keeps its callers' slots where it calls the core from
    /// fills them there, without queuing the answers first.
    ///
    /// ```
    /// use std::{collections::VecDeque, time::Instant};
    /// use bytes::Bytes;
    /// use gotalk_peer::{CloseReason, Config, core::{Core, Event, Tokens}};
    ///
    /// struct Names;
    /// impl Tokens for Names {
    ///     type Caller = &'static str;
    ///     type Reader = ();
    ///     type Parts = ();
    /// }
    /// let mut core = Core::<Names>::new(&Config::default(), Instant::now(), 1);
    /// core.request("echo", &Bytes::from_static(b"hi"), "first caller").unwrap();
    /// core.handle_transport_closed(CloseReason::PeerClosed);
    /// let (mut events, mut answered) = (VecDeque::new(), Vec::new());
    /// core.take_events_answering(&mut events, |caller, answer| {
    ///     answered.push((caller, answer.is_err()))
    /// });
    /// assert_eq!(answered, [("first caller", true)]);
    /// assert!(matches!(events.back(), Some(Event::Closed(_))));
    /// ```
    pub fn take_events_answering(
        &mut self,
        into: &mut VecDeque<Event<T>>,
        mut answer: impl FnMut(T::Caller, Result<Outcome, Error>),
    ) {
        if self.answers_queued == 0 {
            return self.take_events(into);
        }
        self.answers_queued = 0;
        for event in self.events.drain(..) {
            match event {
                Event::Answer { caller, answer: a } => answer(caller, a),
                other => into.push_back(other),
            }
        }
    }

    /// The next thing for the runtime to do.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        let event = self.events.pop_front();
        if matches!(event, Some(Event::Answer { .. })) {
            self.answers_queued -= 1;
        }
        event
    }

    /// When to call [`handle_timeout`](Self::handle_timeout) next, or to
    /// look at [`transmit_due`](Self::transmit_due) again.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match (self.timers.next(), self.outgoing.flush_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether the runtime should read (and decode) more: false while the
    /// byte budget is spent, a stream consumer is at its part limit, every
    /// notification slot is taken, or a reply waits for queue room; and
    /// once closed.
    pub fn wants_read(&self) -> bool {
        self.closed.is_none()
            && !self.reply_waits_for_room
            && self.waiting_notification.is_none()
            && self.budget.has_room()
            && !self.tables.is_stalled()
    }

    /// Whether a local sender may queue another frame now (the write queue
    /// is under [`Config::max_write_queue_bytes`], and the shared
    /// [`Config::write_ceiling`] is not reached, or the queue is empty);
    /// senders that find no room wait until the transport takes the queue.
    pub fn has_room(&self) -> bool {
        self.outgoing.has_room()
    }

    /// True while new requests are taken both ways.
    pub fn is_accepting(&self) -> bool {
        self.accepting && self.closed.is_none()
    }

    /// Why the connection closed, once it has.
    pub fn close_reason(&self) -> Option<&CloseReason> {
        self.closed.as_ref()
    }

    /// True when nothing is in flight either way: no call of ours waiting,
    /// no handler of the peer's request or notification running.
    pub fn is_idle(&self) -> bool {
        self.tables.outbound_len() == 0 && self.tables.inbound_len() == 0 && self.notifications == 0
    }

    /// Our requests waiting for results.
    pub fn outbound_len(&self) -> usize {
        self.tables.outbound_len()
    }

    /// Bytes of memory the outgoing encoding buffer holds (it holds none
    /// while nothing waits).
    #[doc(hidden)]
    pub fn write_buffer_capacity(&self) -> usize {
        self.outgoing.capacity()
    }

    /// Counts for tests, fuzzing and metrics.
    pub fn stats(&self) -> Stats {
        Stats {
            buffered_bytes: self.budget.used(),
            collecting_bytes: self.collecting,
            max_buffered_bytes: self.budget.max(),
            outbound: self.tables.outbound_len(),
            inbound: self.tables.inbound_len(),
            inbound_streams: self.tables.inbound_streams_len(),
            open_streams: self.tables.open_streams(),
            retired: self.tables.retired_len(),
            notifications: self.notifications,
            queued_bytes: self.outgoing.len(),
        }
    }

    // ---- commands -------------------------------------------------------

    /// Sends a buffer request; its answer comes back as [`Event::Answer`]
    /// with `caller`.
    pub fn request(
        &mut self,
        op: &str,
        payload: &Bytes,
        caller: T::Caller,
    ) -> Result<RequestId, Error> {
        self.check_accepting()?;
        let probe = Message::SingleRequest {
            id: RequestId::from_u32(0),
            op: Text::from(op),
            payload: &payload[..],
        };
        probe.validate()?;
        let id = self.tables.register_outbound(Outbound::Buffer {
            caller,
            collected: None,
            charge: Charge::NONE,
        });
        let msg = Message::SingleRequest {
            id,
            op: Text::from(op),
            payload: &payload[..],
        };
        self.outgoing.push(&msg, Some(payload));
        Ok(id)
    }

    /// Opens a stream request (its header goes out with an empty first
    /// part); result parts come back as [`Event::ResultPart`] with `reader`.
    pub fn stream_request(&mut self, op: &str, reader: T::Reader) -> Result<RequestId, Error> {
        self.check_accepting()?;
        let probe: Message<&[u8]> = Message::StreamRequest {
            id: RequestId::from_u32(0),
            op: Text::from(op),
            payload: &[],
        };
        probe.validate()?;
        let flow = self.tables.new_flow();
        let id = self
            .tables
            .register_outbound(Outbound::Stream { reader, flow });
        let msg: Message<&[u8]> = Message::StreamRequest {
            id,
            op: Text::from(op),
            payload: &[],
        };
        self.outgoing.push(&msg, None);
        Ok(id)
    }

    /// Sends a part of our stream request `id`; an empty part ends it.
    pub fn send_request_part(&mut self, id: RequestId, payload: Bytes) -> Result<(), Error> {
        self.check_open()?;
        let msg = Message::StreamRequestPart { id, payload };
        self.outgoing.push(&msg, msg.payload());
        Ok(())
    }

    /// Sends a result part for the peer's stream request `id` (non-empty:
    /// the stream's end is [`Reply::EndOfStream`]).
    pub fn send_result_part(&mut self, id: RequestId, payload: Bytes) -> Result<(), Error> {
        self.check_open()?;
        let msg = Message::StreamResult { id, payload };
        self.outgoing.push(&msg, msg.payload());
        Ok(())
    }

    /// Sends a notification.
    pub fn notify(&mut self, name: &str, payload: &Bytes) -> Result<(), Error> {
        self.check_open()?;
        let msg = Message::Notification {
            name: Text::from(name),
            payload: &payload[..],
        };
        msg.validate()?;
        self.outgoing.push(&msg, Some(payload));
        Ok(())
    }

    /// Sends a notification now, whatever the room in the write queue, with
    /// `payload` queued by reference, never copied (one `Bytes` shared by
    /// every receiver of a broadcast). A queue already over its bound means
    /// the peer does not keep up: rather than hold more for it, the
    /// connection closes with [`CloseReason::SlowConsumer`] and what waits
    /// is dropped.
    pub fn notify_shared(&mut self, name: &str, payload: &Bytes) -> Result<(), Error> {
        self.notify_shared_inner(name, payload, None).map(|_| ())
    }

    /// Like [`notify_shared`](Self::notify_shared), but the notification
    /// may wait in the queue until `by`, to be written together with what
    /// is queued meanwhile (anything queued without a delay takes it along
    /// at once; see [`transmit_due`](Self::transmit_due)). `Ok(true)` when
    /// the runtime must look at the queue again: its deadline moved earlier
    /// ([`poll_timeout`](Self::poll_timeout)) or it is due now.
    pub fn notify_shared_by(
        &mut self,
        name: &str,
        payload: &Bytes,
        by: Instant,
    ) -> Result<bool, Error> {
        self.notify_shared_inner(name, payload, Some(by))
    }

    fn notify_shared_inner(
        &mut self,
        name: &str,
        payload: &Bytes,
        by: Option<Instant>,
    ) -> Result<bool, Error> {
        self.check_open()?;
        let msg = Message::Notification {
            name: Text::from(name),
            payload: &payload[..],
        };
        msg.validate()?;
        if !self.outgoing.has_room() {
            let queued = self.outgoing.len();
            self.outgoing.discard();
            self.close_with(CloseReason::SlowConsumer { queued }, None);
            return self.check_open().map(|()| true);
        }
        Ok(match by {
            None => {
                self.outgoing.push_shared(&msg, payload);
                true
            }
            Some(by) => self.outgoing.push_shared_by(&msg, payload, by),
        })
    }

    /// Sends a heartbeat.
    pub fn heartbeat(&mut self, load: u16, time: u32) -> Result<(), Error> {
        self.check_open()?;
        let msg: Message<&[u8]> = Message::Heartbeat { load, time };
        self.outgoing.push(&msg, None);
        Ok(())
    }

    /// The handler of the peer's request `id` (`stream`: a stream request)
    /// came to `reply`; `charge` is what its event held of the budget.
    pub fn respond(&mut self, id: RequestId, stream: bool, reply: Reply, charge: Charge) {
        self.budget.release(charge);
        self.tables.finish(id, stream);
        if self.closed.is_none() {
            let msg = match reply {
                Reply::Value(payload) => Message::SingleResult { id, payload },
                Reply::EndOfStream => Message::StreamResult {
                    id,
                    payload: Bytes::new(),
                },
                Reply::Error(payload) => Message::ErrorResult { id, payload },
                Reply::Retry { wait, payload } => self.retry_or_error(id, wait, payload),
            };
            self.queue_reply(&msg);
        }
        self.check_idle();
    }

    /// The peer's request `id` names an operation we have no handler for.
    pub fn unknown_operation(&mut self, id: RequestId, stream: bool, op: &str, charge: Charge) {
        let reply = if self.is_accepting() {
            Reply::Error(Bytes::from(format!("unknown operation \"{op}\"")))
        } else {
            Reply::Retry {
                wait: Duration::ZERO,
                payload: Bytes::from_static(CLOSING_REFUSAL),
            }
        };
        self.respond(id, stream, reply, charge);
    }

    /// Attaches the part channel of the handler for the peer's stream
    /// request `id` (after [`Event::StreamRequest`]).
    pub fn open_stream(&mut self, id: RequestId, parts: T::Parts) {
        self.tables.open_stream(id, parts);
    }

    /// A stream consumer took a delivered part.
    pub fn part_taken(&mut self, credit: Credit) {
        self.budget.release(credit.charge);
        self.tables.part_taken(credit.stream);
    }

    /// A stream consumer took a delivered part but keeps its bytes (a
    /// buffer handler collecting a streamed request, a stream handler
    /// working on the part it read): the part's place in its stream's part
    /// limit is free again, its bytes stay charged until the returned
    /// charge is given back with [`release`](Self::release).
    pub fn keep_part(&mut self, credit: Credit) -> Charge {
        self.tables.part_taken(credit.stream);
        credit.charge
    }

    /// Gives back bytes kept with [`keep_part`](Self::keep_part).
    pub fn release(&mut self, charge: Charge) {
        self.budget.release(charge);
    }

    /// True while the byte budget is used up: reading pauses until bytes
    /// are given back, so a consumer that keeps bytes while it waits for
    /// more from the peer must give up instead (it could wait forever).
    pub fn over_budget(&self) -> bool {
        !self.budget.has_room()
    }

    /// The runtime will not run the handler of the peer's request `id` now
    /// (its process-wide cap on running handlers is reached): the peer gets
    /// the retry result `request rate limit` (`stream rate limit` for a
    /// stream request), and `charge` is given back.
    pub fn refuse_busy(&mut self, id: RequestId, stream: bool, charge: Charge) {
        self.budget.release(charge);
        self.tables.finish(id, stream);
        if self.closed.is_none() {
            let text = if stream {
                "stream rate limit"
            } else {
                "request rate limit"
            };
            self.rate_limited(id, text);
        }
        self.check_idle();
    }

    /// A notification handler finished.
    pub fn notification_done(&mut self, charge: Charge) {
        self.budget.release(charge);
        self.notifications = self.notifications.saturating_sub(1);
        if self.notifications < self.limits.max_notifications
            && let Some((name, payload)) = self.waiting_notification.take()
        {
            self.on_notification(name, payload);
        }
    }

    /// The caller of our request `id` gave up: its answer will be dropped.
    pub fn cancel(&mut self, id: RequestId) {
        self.forget_outbound(id);
        self.check_idle();
    }

    /// Closes (see [`CloseMode`]).
    pub fn close(&mut self, now: Instant, mode: CloseMode) {
        if self.closed.is_some() {
            return;
        }
        match mode {
            CloseMode::Immediate => self.close_with(CloseReason::Local, None),
            CloseMode::Graceful => {
                self.accepting = false;
                self.timers.closing(now, self.limits.close_timeout);
                self.check_idle();
            }
        }
    }

    /// The runtime stops driving the connection without having closed it
    /// (its task was dropped): closes with [`CloseReason::Abandoned`], so
    /// that the events taken next fail every call still waiting.
    pub fn abandon(&mut self) {
        self.close_with(CloseReason::Abandoned, None);
    }

    // ---- the rules ------------------------------------------------------

    fn check_open(&self) -> Result<(), Error> {
        match &self.closed {
            Some(reason) => Err(Error::Closed(reason.clone())),
            None => Ok(()),
        }
    }

    fn check_accepting(&self) -> Result<(), Error> {
        self.check_open()?;
        if !self.accepting {
            return Err(Error::Closed(CloseReason::Local));
        }
        Ok(())
    }

    /// Queues a reply of ours. If the queue was already full, reading waits
    /// until the transport takes it: a peer that sends requests without
    /// reading our replies cannot make the queue grow without bound.
    fn queue_reply(&mut self, msg: &Message) {
        if !self.outgoing.has_room() {
            self.reply_waits_for_room = true;
        }
        self.outgoing.push(msg, msg.payload());
    }

    fn retry_or_error(&self, id: RequestId, wait: Duration, payload: Bytes) -> Message {
        if self.limits.remote_retry_results {
            let wait_ms = wait.as_millis().min(u128::from(u32::MAX)) as u32;
            Message::RetryResult {
                id,
                wait_ms,
                payload,
            }
        } else {
            Message::ErrorResult { id, payload }
        }
    }

    fn rate_limited(&mut self, id: RequestId, text: &'static str) {
        let (min, max) = self.limits.rate_limit_wait_ms;
        let wait = Duration::from_millis(self.jitter.between(min, max));
        let msg = self.retry_or_error(id, wait, Bytes::from_static(text.as_bytes()));
        self.queue_reply(&msg);
    }

    /// Answers a request we do not admit.
    fn refuse(&mut self, id: RequestId, stream: bool, why: Admission) {
        match why {
            Admission::Accepted => unreachable!("refuse is for refusals"),
            Admission::DuplicateStream => {
                self.violate(
                    ProtocolErrorCode::InvalidMessage,
                    Violation::DuplicateStream(id),
                );
            }
            Admission::StreamsDisabled => self.queue_reply(&Message::ErrorResult {
                id,
                payload: Bytes::from_static(b"stream requests not supported"),
            }),
            Admission::RateLimited if stream => self.rate_limited(id, "stream rate limit"),
            Admission::RateLimited => self.rate_limited(id, "request rate limit"),
            Admission::Closing => {
                let msg =
                    self.retry_or_error(id, Duration::ZERO, Bytes::from_static(CLOSING_REFUSAL));
                self.queue_reply(&msg);
            }
        }
    }

    fn on_request(&mut self, id: RequestId, op: Text<Bytes>, payload: Bytes) {
        let admission = self.tables.admit(id, false, self.is_accepting());
        if admission != Admission::Accepted {
            return self.refuse(id, false, admission);
        }
        // A large payload held by its handler counts toward the byte budget.
        // Over budget the request is refused like one over the count limit:
        // waiting instead would stop reading, and a handler that calls the
        // requester back would then wait forever.
        let charge = if payload.len() >= CHARGE_MIN {
            match self.budget.try_charge(payload.len()) {
                Some(charge) => charge,
                None => {
                    self.tables.finish(id, false);
                    return self.rate_limited(id, "request rate limit");
                }
            }
        } else {
            Charge::NONE
        };
        self.events.push_back(Event::Request {
            id,
            op,
            payload,
            charge,
        });
    }

    fn on_stream_request(&mut self, id: RequestId, op: Text<Bytes>, payload: Bytes) {
        let admission = self.tables.admit(id, true, self.is_accepting());
        if admission != Admission::Accepted {
            return self.refuse(id, true, admission);
        }
        let at = self
            .tables
            .inbound_ref(id)
            .expect("admitted streams are open");
        let first = (!payload.is_empty()).then(|| {
            let charge = self.budget.charge(payload.len());
            self.tables.queue_part(at);
            Delivery {
                payload,
                credit: Credit { charge, stream: at },
            }
        });
        self.events
            .push_back(Event::StreamRequest { id, op, first });
    }

    fn on_request_part(&mut self, id: RequestId, payload: Bytes) {
        let parts = match self.tables.part_target(id) {
            PartTarget::Unknown => {
                return self.violate(
                    ProtocolErrorCode::InvalidMessage,
                    Violation::UnknownStream(id),
                );
            }
            PartTarget::Retired => None,
            PartTarget::Stream(s) => s.parts.clone(),
        };
        if payload.is_empty() {
            if let Some(parts) = self.tables.end_stream(id) {
                self.events.push_back(Event::RequestEnd { parts });
            }
            return;
        }
        // A stream we refused (retired), or one whose handler has not
        // attached its channel: nobody takes the part.
        let Some(parts) = parts else { return };
        let at = self.tables.inbound_ref(id).expect("an open stream");
        let charge = self.budget.charge(payload.len());
        self.tables.queue_part(at);
        self.events.push_back(Event::RequestPart {
            parts,
            part: Delivery {
                payload,
                credit: Credit { charge, stream: at },
            },
        });
    }

    /// A result for one of our requests: a buffer request is answered (or
    /// its streamed result collected, within the payload limit); a stream
    /// request's reader gets it as it is.
    fn on_result(&mut self, id: RequestId, answer: Answer, payload: Bytes) {
        // The common case, a buffer request's one result, with one look-up:
        // its entry is taken out at once.
        if !matches!(answer, Answer::Part)
            && let Some(entry) = self.tables.remove_buffer_outbound(id)
        {
            let Outbound::Buffer { caller, .. } = self.uncharge(entry) else {
                unreachable!("only a buffer request's entry is taken");
            };
            let outcome = match answer {
                Answer::Single => Outcome::Value(payload),
                Answer::Error => Outcome::Error(payload),
                Answer::Retry(wait_ms) => Outcome::Retry { wait_ms, payload },
                Answer::Part => unreachable!("checked above"),
            };
            self.queue_answer(caller, Ok(outcome));
            return self.check_idle();
        }
        let limit = self.limits.max_payload;
        // A result for a request no longer waiting (cancelled, timed out, or
        // the Go responder's extra `S` after an `E`) is dropped.
        let Some(entry) = self.tables.outbound_mut(id) else {
            return;
        };
        let (reader, at) = match entry {
            Outbound::Buffer {
                collected, charge, ..
            } => {
                // Only a part gets here: a buffer request's other results
                // were taken out above.
                debug_assert!(matches!(answer, Answer::Part));
                let outcome = if payload.is_empty() {
                    Ok(Outcome::Value(
                        collected.take().map(BytesMut::freeze).unwrap_or_default(),
                    ))
                } else {
                    let buf = collected.get_or_insert_with(BytesMut::new);
                    if buf.len() + payload.len() > limit as usize {
                        Err(Error::ResultTooLarge { limit })
                    } else if let Some(part) = self.budget.try_charge_below(payload.len()) {
                        // Charged while collected; never to the last byte,
                        // so collecting alone never pauses reading (the rest
                        // of the result could not arrive).
                        buf.extend_from_slice(&payload);
                        self.collecting += part.bytes();
                        charge.absorb(part);
                        return;
                    } else {
                        Err(Error::OverBudget {
                            limit: self.budget.max(),
                        })
                    }
                };
                if let Some(Outbound::Buffer { caller, .. }) = self.forget_outbound(id) {
                    self.queue_answer(caller, outcome);
                }
                return self.check_idle();
            }
            Outbound::Stream { reader, flow } => {
                (reader.clone(), Tables::<T>::outbound_ref(id, flow))
            }
        };
        let last = !matches!(answer, Answer::Part) || payload.is_empty();
        let data = |core: &mut Self, payload: Bytes| {
            let charge = core.budget.charge(payload.len());
            core.tables.queue_part(at);
            StreamItem::Data(Delivery {
                payload,
                credit: Credit { charge, stream: at },
            })
        };
        let items: [Option<StreamItem>; 2] = match answer {
            Answer::Single if payload.is_empty() => [Some(StreamItem::End), None],
            Answer::Single => [Some(data(self, payload)), Some(StreamItem::End)],
            Answer::Part if payload.is_empty() => [Some(StreamItem::End), None],
            Answer::Part => [Some(data(self, payload)), None],
            Answer::Error => [
                Some(StreamItem::Failed(Error::Remote(RemoteError::new(payload)))),
                None,
            ],
            Answer::Retry(wait_ms) => [
                Some(StreamItem::Failed(Error::RetryExhausted {
                    attempts: 1,
                    wait: Duration::from_millis(u64::from(wait_ms)),
                    message: String::from_utf8_lossy(&payload).into_owned(),
                })),
                None,
            ],
        };
        if last {
            self.forget_outbound(id);
        }
        for item in items.into_iter().flatten() {
            self.events.push_back(Event::ResultPart {
                reader: reader.clone(),
                item,
            });
        }
        if last {
            self.check_idle();
        }
    }

    fn on_notification(&mut self, name: Text<Bytes>, payload: Bytes) {
        if self.notifications >= self.limits.max_notifications {
            // Bounded: while every handler slot is taken, stop reading.
            self.waiting_notification = Some((name, payload));
            return;
        }
        self.notifications += 1;
        // A large payload held by its handler is charged to the byte budget;
        // notifications cannot be refused, so reading pauses when over it.
        let charge = if payload.len() >= CHARGE_MIN {
            self.budget.charge(payload.len())
        } else {
            Charge::NONE
        };
        self.events.push_back(Event::Notification {
            name,
            payload,
            charge,
        });
    }

    /// Queues the answer for a buffer request's caller, counted for
    /// [`take_events_answering`](Self::take_events_answering).
    fn queue_answer(&mut self, caller: T::Caller, answer: Result<Outcome, Error>) {
        self.answers_queued += 1;
        self.events.push_back(Event::Answer { caller, answer });
    }

    /// Removes our request `id`, giving back what its collected result held.
    fn forget_outbound(&mut self, id: RequestId) -> Option<Outbound<T>> {
        let entry = self.tables.remove_outbound(id)?;
        Some(self.uncharge(entry))
    }

    fn uncharge(&mut self, mut entry: Outbound<T>) -> Outbound<T> {
        if let Outbound::Buffer { charge, .. } = &mut entry {
            let charge = charge.take();
            self.collecting -= charge.bytes();
            self.budget.release(charge);
        }
        entry
    }

    fn violate(&mut self, code: ProtocolErrorCode, violation: Violation) {
        self.close_with(
            CloseReason::ProtocolViolation { code, violation },
            Some(code),
        );
    }

    /// A graceful close is done once nothing is in flight either way.
    fn check_idle(&mut self) {
        if !self.accepting
            && self.closed.is_none()
            && self.tables.outbound_len() == 0
            && self.tables.inbound_len() == 0
        {
            self.close_with(CloseReason::Local, None);
        }
    }

    /// Closes for `reason`, queuing the ProtocolError we owe the peer, and
    /// tells everyone still waiting why.
    fn close_with(&mut self, reason: CloseReason, owed: Option<ProtocolErrorCode>) {
        if self.closed.is_some() {
            return;
        }
        if let Some(code) = owed {
            let msg: Message<&[u8]> = Message::ProtocolError { code };
            self.outgoing.push(&msg, None);
        }
        tracing::debug!(%reason, "connection closing");
        self.closed = Some(reason.clone());
        self.accepting = false;
        self.timers.clear();
        self.waiting_notification = None;
        let (outbound, streams) = self.tables.drain();
        for entry in outbound {
            let entry = self.uncharge(entry);
            let error = Error::Closed(reason.clone());
            match entry {
                Outbound::Buffer { caller, .. } => self.queue_answer(caller, Err(error)),
                Outbound::Stream { reader, .. } => self.events.push_back(Event::ResultPart {
                    reader,
                    item: StreamItem::Failed(error),
                }),
            }
        }
        for parts in streams {
            self.events.push_back(Event::StreamAborted { parts });
        }
        self.events.push_back(Event::Closed(reason));
    }
}

/// How the peer answered one of our requests.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Single,
    Part,
    Error,
    Retry(u32),
}
