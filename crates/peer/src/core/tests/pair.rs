//! Two cores back to back in memory, with a manual clock and a tiny runtime
//! per side (after quinn-proto's test `Pair`).
//!
//! [`Pair::step`] moves every byte each side transmits into the other's
//! inbox and lets each side read its inbox the way the driver does: one
//! message at a time while [`Core::wants_read`] holds, dispatching the
//! events of each message before the next, and taking the write queue only
//! once the input is exhausted. A side that closed and flushed ends the
//! other's input with [`CloseReason::PeerClosed`], as dropping the transport
//! would. [`Pair::advance`] moves the clock and hands the time to every core
//! whose deadline passed.
//!
//! Every side checks the core's promises as it goes: no event after
//! `Closed`, nothing transmitted after the flush that follows it, each call
//! answered once and each result stream ended once, `stats().outbound`
//! equal to the calls still waiting, and `stats().buffered_bytes` equal to
//! the charges and credits the side still holds.

use std::{
    collections::{HashMap, VecDeque},
    time::{Duration, Instant},
};

use bytes::{Bytes, BytesMut};
use gotalk_proto::{DecodeLimits, Decoded, Message, RequestId, decode_bytes};

use crate::{
    CloseReason, Config, Error,
    core::{Charge, CloseMode, Core, Credit, Delivery, Event, Outcome, Reply, StreamItem, Tokens},
};

/// The tokens of the test runtime: callers and readers are numbered tags,
/// a stream handler's channel is its request ID.
pub(super) struct Test;

impl Tokens for Test {
    type Caller = u32;
    type Reader = u32;
    type Parts = RequestId;
}

/// How the side's handlers answer the peer's requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnRequest {
    /// A single request gets its payload back; a stream request gets each
    /// part back as a result part as it is delivered, and the end of its
    /// result stream once the requester ends the request stream.
    Echo,
    /// Kept in [`Side::held`] until the test answers with [`Side::answer`].
    Hold,
    /// Error result `no`.
    Error,
    /// Retry result `busy` asking for this wait.
    Retry(Duration),
    /// No handler: [`Core::unknown_operation`].
    Unknown,
}

/// Whether delivered parts (request parts and result parts) are taken at
/// once, or held in [`Side::held_parts`] until [`Side::take_parts`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnPart {
    Take,
    Hold,
}

/// Whether notification handlers finish at once, or are held in
/// [`Side::held_notifications`] until [`Side::finish_notifications`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OnNotification {
    Finish,
    Hold,
}

/// One item a reader of ours got.
#[derive(Debug)]
pub(super) enum Item {
    Data(Bytes),
    End,
    Failed(Error),
}

/// A request of the peer's whose handler the test answers.
#[derive(Debug)]
pub(super) struct Held {
    pub(super) id: RequestId,
    pub(super) stream: bool,
    pub(super) op: String,
    pub(super) payload: Bytes,
    pub(super) charge: Charge,
}

/// Where a delivered part goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum To {
    /// The handler of the peer's stream request.
    Handler(RequestId),
    /// Our reader with this tag.
    Reader(u32),
}

/// The peer's stream request as its handler saw it.
#[derive(Debug, Default)]
pub(super) struct Inbound {
    pub(super) parts: Vec<Bytes>,
    pub(super) ended: bool,
    echo: bool,
}

/// One core and its test runtime.
pub(super) struct Side {
    pub(super) core: Core<Test>,
    pub(super) on_request: OnRequest,
    pub(super) on_part: OnPart,
    pub(super) on_notification: OnNotification,
    /// Send a heartbeat on [`Event::HeartbeatDue`].
    pub(super) auto_heartbeat: bool,
    /// Bytes to read, and how the transport ends after them.
    inbox: BytesMut,
    eof: Option<CloseReason>,
    read_open: bool,
    limits: DecodeLimits,
    /// Every message handed to the core, in order.
    pub(super) received: Vec<Message>,
    /// Every `Event::Request` / `StreamRequest`: (id, op, payload or first part).
    pub(super) requests: Vec<(RequestId, String, Bytes)>,
    pub(super) held: Vec<Held>,
    pub(super) held_parts: Vec<(To, Bytes, Credit)>,
    pub(super) held_notifications: Vec<Charge>,
    pub(super) inbound: HashMap<RequestId, Inbound>,
    pub(super) aborted: Vec<RequestId>,
    pub(super) notifications: Vec<(String, Bytes)>,
    pub(super) heartbeats: Vec<(u16, u32)>,
    pub(super) heartbeats_due: usize,
    /// Answers to our buffer requests, by caller tag.
    pub(super) answers: HashMap<u32, Result<Outcome, Error>>,
    /// Items of our stream requests, by reader tag.
    pub(super) results: HashMap<u32, Vec<Item>>,
    /// Calls (buffer or stream) still waiting for their answer or end.
    waiting: HashMap<u32, RequestId>,
    pub(super) closed: Option<CloseReason>,
    /// Transmit was taken after the close: nothing more may come.
    flushed: bool,
    next_tag: u32,
}

impl Side {
    fn new(config: &Config, now: Instant, seed: u64) -> Self {
        Self {
            core: Core::new(config, now, seed),
            on_request: OnRequest::Echo,
            on_part: OnPart::Take,
            on_notification: OnNotification::Finish,
            auto_heartbeat: true,
            inbox: BytesMut::new(),
            eof: None,
            read_open: true,
            limits: config.decode_limits(),
            received: Vec::new(),
            requests: Vec::new(),
            held: Vec::new(),
            held_parts: Vec::new(),
            held_notifications: Vec::new(),
            inbound: HashMap::new(),
            aborted: Vec::new(),
            notifications: Vec::new(),
            heartbeats: Vec::new(),
            heartbeats_due: 0,
            answers: HashMap::new(),
            results: HashMap::new(),
            waiting: HashMap::new(),
            closed: None,
            flushed: false,
            next_tag: 0,
        }
    }

    // ---- what a hostile peer does --------------------------------------

    /// Appends raw bytes to what this side will read.
    pub(super) fn inject_raw(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
    }

    /// Appends an encoded message to what this side will read.
    pub(super) fn inject(&mut self, msg: &Message<&[u8]>) {
        self.inject_raw(&msg.to_vec().expect("a valid message"));
    }

    /// Bytes still unread (reading paused, or a partial frame).
    pub(super) fn unread(&self) -> usize {
        self.inbox.len()
    }

    // ---- local commands ------------------------------------------------

    fn tag(&mut self) -> u32 {
        self.next_tag += 1;
        self.next_tag
    }

    /// Sends a buffer request; returns its caller tag and ID.
    pub(super) fn request(&mut self, op: &str, payload: &[u8]) -> (u32, RequestId) {
        let tag = self.tag();
        let id = self
            .core
            .request(op, &Bytes::copy_from_slice(payload), tag)
            .expect("request refused");
        self.waiting.insert(tag, id);
        (tag, id)
    }

    /// Opens a stream request; returns its reader tag and ID.
    pub(super) fn stream_request(&mut self, op: &str) -> (u32, RequestId) {
        let tag = self.tag();
        let id = self.core.stream_request(op, tag).expect("request refused");
        self.waiting.insert(tag, id);
        (tag, id)
    }

    /// Sends a part of our stream request `id` (empty: its end).
    pub(super) fn part(&mut self, id: RequestId, payload: &[u8]) {
        self.core
            .send_request_part(id, Bytes::copy_from_slice(payload))
            .expect("part refused");
    }

    /// Sends a notification.
    pub(super) fn notify(&mut self, name: &str, payload: &[u8]) {
        self.core
            .notify(name, &Bytes::copy_from_slice(payload))
            .expect("notification refused");
    }

    /// Gives up on the call `tag`.
    pub(super) fn cancel(&mut self, tag: u32) {
        let id = self.waiting.remove(&tag).expect("a waiting call");
        self.core.cancel(id);
        self.pump();
    }

    /// Answers the held request `id`.
    pub(super) fn answer(&mut self, id: RequestId, reply: Reply) {
        let at = self
            .held
            .iter()
            .position(|h| h.id == id)
            .expect("a held request");
        let held = self.held.remove(at);
        self.core.respond(id, held.stream, reply, held.charge);
        self.pump();
    }

    /// Answers every held request with its own payload (streams: ends them).
    pub(super) fn answer_all(&mut self) {
        for held in std::mem::take(&mut self.held) {
            let reply = if held.stream {
                Reply::EndOfStream
            } else {
                Reply::Value(held.payload)
            };
            self.core.respond(held.id, held.stream, reply, held.charge);
        }
        self.pump();
    }

    /// Takes every held part.
    pub(super) fn take_parts(&mut self) {
        for (_, _, credit) in std::mem::take(&mut self.held_parts) {
            self.core.part_taken(credit);
        }
        self.pump();
    }

    /// Takes the oldest held part.
    pub(super) fn take_one_part(&mut self) {
        let (_, _, credit) = self.held_parts.remove(0);
        self.core.part_taken(credit);
        self.pump();
    }

    /// Finishes every held notification handler.
    pub(super) fn finish_notifications(&mut self) {
        for charge in std::mem::take(&mut self.held_notifications) {
            self.core.notification_done(charge);
        }
        self.pump();
    }

    /// Closes at `now`.
    pub(super) fn close(&mut self, now: Instant, mode: CloseMode) {
        self.core.close(now, mode);
        self.pump();
    }

    // ---- what the test looks at ----------------------------------------

    /// The answer to the buffer request `tag`.
    pub(super) fn answer_of(&self, tag: u32) -> &Result<Outcome, Error> {
        self.answers.get(&tag).expect("answered")
    }

    /// The value the buffer request `tag` got.
    pub(super) fn value_of(&self, tag: u32) -> Bytes {
        match self.answer_of(tag) {
            Ok(Outcome::Value(v)) => v.clone(),
            other => panic!("call {tag}: expected a value, got {other:?}"),
        }
    }

    /// The items the stream request `tag` got so far.
    pub(super) fn items_of(&self, tag: u32) -> &[Item] {
        self.results.get(&tag).map_or(&[], Vec::as_slice)
    }

    /// The data parts the stream request `tag` got, concatenated, and
    /// whether it ended normally.
    pub(super) fn data_of(&self, tag: u32) -> (Vec<u8>, bool) {
        let mut data = Vec::new();
        let mut ended = false;
        for item in self.items_of(tag) {
            match item {
                Item::Data(d) => data.extend_from_slice(d),
                Item::End => ended = true,
                Item::Failed(e) => panic!("stream {tag} failed: {e}"),
            }
        }
        (data, ended)
    }

    /// True while call `tag` waits.
    pub(super) fn is_waiting(&self, tag: u32) -> bool {
        self.waiting.contains_key(&tag)
    }

    /// The last message this side received.
    pub(super) fn last_received(&self) -> &Message {
        self.received.last().expect("received something")
    }

    /// Why this side closed.
    pub(super) fn closed(&self) -> &CloseReason {
        self.closed.as_ref().expect("closed")
    }

    // ---- the runtime -----------------------------------------------------

    /// Reads the inbox like the driver; true if anything was handled.
    pub(super) fn read(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while self.read_open && self.core.wants_read() {
            match decode_bytes(&mut self.inbox, &self.limits) {
                Ok(Decoded::Complete(msg, _)) => {
                    self.received.push(msg.clone());
                    self.core.handle_message(now, msg);
                }
                Ok(Decoded::Incomplete(_)) => match self.eof.take() {
                    Some(reason) => {
                        self.read_open = false;
                        self.core.handle_transport_closed(reason);
                    }
                    None => break,
                },
                Err(e) => {
                    self.read_open = false;
                    self.inbox.clear();
                    self.core.handle_decode_error(e);
                }
            }
            progress = true;
            self.pump();
        }
        progress
    }

    /// Takes the write queue, checking that a closed core adds nothing
    /// after its flush.
    pub(super) fn transmit(&mut self) -> Vec<u8> {
        let mut out = VecDeque::new();
        let n = self.core.poll_transmit(&mut out);
        if self.flushed {
            assert_eq!(n, 0, "transmitted after the flush that followed Closed");
        }
        if self.closed.is_some() {
            self.flushed = true;
        }
        let bytes: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(bytes.len(), n, "poll_transmit counts what it gives");
        bytes
    }

    /// Dispatches every pending event, then checks the invariants.
    pub(super) fn pump(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.dispatch(event);
        }
        self.check();
    }

    fn check(&self) {
        let stats = self.core.stats();
        assert_eq!(
            stats.outbound,
            self.waiting.len(),
            "outbound table against calls waiting"
        );
        let held: usize = self.held.iter().map(|h| h.charge.bytes()).sum::<usize>()
            + self
                .held_parts
                .iter()
                .map(|(_, _, c)| c.charge.bytes())
                .sum::<usize>()
            + self
                .held_notifications
                .iter()
                .map(Charge::bytes)
                .sum::<usize>();
        assert_eq!(
            stats.buffered_bytes,
            held + stats.collecting_bytes,
            "budget against charges held"
        );
        if self.closed.is_some() {
            assert!(!self.core.wants_read());
            assert_eq!(self.core.poll_timeout(), None);
        }
    }

    fn dispatch(&mut self, event: Event<Test>) {
        assert!(
            self.closed.is_none(),
            "event after Closed: {event:?} ({:?})",
            self.closed
        );
        match event {
            Event::Request {
                id,
                op,
                payload,
                charge,
            } => {
                self.requests
                    .push((id, op.as_str().to_owned(), payload.clone()));
                let reply = match self.on_request {
                    OnRequest::Echo => Reply::Value(payload),
                    OnRequest::Hold => {
                        let op = op.as_str().to_owned();
                        self.held.push(Held {
                            id,
                            stream: false,
                            op,
                            payload,
                            charge,
                        });
                        return;
                    }
                    OnRequest::Error => Reply::Error(Bytes::from_static(b"no")),
                    OnRequest::Retry(wait) => Reply::Retry {
                        wait,
                        payload: Bytes::from_static(b"busy"),
                    },
                    OnRequest::Unknown => {
                        return self.core.unknown_operation(id, false, op.as_str(), charge);
                    }
                };
                self.core.respond(id, false, reply, charge);
            }
            Event::StreamRequest { id, op, first } => {
                let payload = first.as_ref().map(|d| d.payload.clone());
                self.requests
                    .push((id, op.as_str().to_owned(), payload.unwrap_or_default()));
                if self.on_request == OnRequest::Unknown {
                    if let Some(first) = first {
                        self.core.part_taken(first.credit);
                    }
                    return self
                        .core
                        .unknown_operation(id, true, op.as_str(), Charge::NONE);
                }
                self.core.open_stream(id, id);
                let echo = self.on_request == OnRequest::Echo;
                self.inbound.insert(
                    id,
                    Inbound {
                        echo,
                        ..Inbound::default()
                    },
                );
                if let Some(first) = first {
                    self.deliver(To::Handler(id), first);
                }
                let reply = match self.on_request {
                    OnRequest::Echo | OnRequest::Unknown => return,
                    OnRequest::Hold => {
                        self.held.push(Held {
                            id,
                            stream: true,
                            op: op.as_str().to_owned(),
                            payload: Bytes::new(),
                            charge: Charge::NONE,
                        });
                        return;
                    }
                    OnRequest::Error => Reply::Error(Bytes::from_static(b"no")),
                    OnRequest::Retry(wait) => Reply::Retry {
                        wait,
                        payload: Bytes::from_static(b"busy"),
                    },
                };
                self.core.respond(id, true, reply, Charge::NONE);
            }
            Event::RequestPart { parts, part } => self.deliver(To::Handler(parts), part),
            Event::RequestEnd { parts } => {
                let s = self.inbound.get_mut(&parts).expect("an open stream");
                assert!(!s.ended, "a request stream ended twice");
                s.ended = true;
                if s.echo {
                    self.core
                        .respond(parts, true, Reply::EndOfStream, Charge::NONE);
                }
            }
            Event::Answer { caller, answer } => {
                assert!(
                    self.waiting.remove(&caller).is_some(),
                    "an answer for call {caller}, which does not wait"
                );
                assert!(self.answers.insert(caller, answer).is_none());
            }
            Event::ResultPart { reader, item } => {
                assert!(
                    self.waiting.contains_key(&reader),
                    "an item for stream {reader}, which does not wait: {item:?}"
                );
                let item = match item {
                    StreamItem::Data(d) => {
                        let payload = d.payload.clone();
                        self.deliver(To::Reader(reader), d);
                        Item::Data(payload)
                    }
                    StreamItem::End => Item::End,
                    StreamItem::Failed(e) => Item::Failed(e),
                };
                if !matches!(item, Item::Data(_)) {
                    self.waiting.remove(&reader);
                }
                self.results.entry(reader).or_default().push(item);
            }
            Event::Notification {
                name,
                payload,
                charge,
            } => {
                self.notifications.push((name.as_str().to_owned(), payload));
                match self.on_notification {
                    OnNotification::Finish => self.core.notification_done(charge),
                    OnNotification::Hold => self.held_notifications.push(charge),
                }
            }
            Event::Heartbeat { load, time } => self.heartbeats.push((load, time)),
            Event::HeartbeatDue => {
                self.heartbeats_due += 1;
                if self.auto_heartbeat {
                    self.core
                        .heartbeat(7, self.heartbeats_due as u32)
                        .expect("open");
                }
            }
            Event::StreamAborted { parts } => self.aborted.push(parts),
            Event::Closed(reason) => self.closed = Some(reason),
        }
    }

    /// A part for a stream handler or one of our readers: taken at once, or
    /// held. An echoing handler sends it back as it arrives.
    fn deliver(&mut self, to: To, d: Delivery) {
        if let To::Handler(id) = to {
            let s = self.inbound.get_mut(&id).expect("an open stream");
            s.parts.push(d.payload.clone());
            if s.echo {
                self.core
                    .send_result_part(id, d.payload.clone())
                    .expect("open");
            }
        }
        match self.on_part {
            OnPart::Take => self.core.part_taken(d.credit),
            OnPart::Hold => self.held_parts.push((to, d.payload, d.credit)),
        }
    }
}

/// Two sides back to back (see the module docs).
pub(super) struct Pair {
    pub(super) a: Side,
    pub(super) b: Side,
    base: Instant,
    elapsed: Duration,
}

impl Pair {
    /// Both sides with `config`.
    pub(super) fn new(config: &Config) -> Self {
        Self::with(config, config)
    }

    /// Side A with `a`, side B with `b`.
    pub(super) fn with(a: &Config, b: &Config) -> Self {
        Self::seeded(a, b, 1, 2)
    }

    /// With jitter seeds.
    pub(super) fn seeded(a: &Config, b: &Config, seed_a: u64, seed_b: u64) -> Self {
        let base = Instant::now();
        Self {
            a: Side::new(a, base, seed_a),
            b: Side::new(b, base, seed_b),
            base,
            elapsed: Duration::ZERO,
        }
    }

    /// The manual clock.
    pub(super) fn now(&self) -> Instant {
        self.base + self.elapsed
    }

    /// Time since the pair was made.
    pub(super) fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Moves bytes and events until neither side has anything more to do.
    pub(super) fn step(&mut self) {
        let now = self.now();
        for round in 0.. {
            assert!(round < 100_000, "the pair never settles");
            let a = exchange(&mut self.a, &mut self.b, now);
            let b = exchange(&mut self.b, &mut self.a, now);
            if !a && !b {
                break;
            }
        }
    }

    /// Moves the clock by `d`, hands the time to each core whose deadline
    /// passed, then steps.
    pub(super) fn advance(&mut self, d: Duration) {
        self.elapsed += d;
        let now = self.now();
        for side in [&mut self.a, &mut self.b] {
            if side.core.poll_timeout().is_some_and(|t| t <= now) {
                side.core.handle_timeout(now);
                side.pump();
            }
        }
        self.step();
    }
}

/// One side reads its inbox, then its write queue goes to the other; once
/// it closed and flushed, the other's input ends. True on any progress.
fn exchange(from: &mut Side, to: &mut Side, now: Instant) -> bool {
    let mut progress = from.read(now);
    let bytes = from.transmit();
    if !bytes.is_empty() {
        to.inbox.extend_from_slice(&bytes);
        progress = true;
    }
    if from.flushed && to.read_open && to.eof.is_none() {
        to.eof = Some(CloseReason::PeerClosed);
        progress = true;
    }
    progress
}
