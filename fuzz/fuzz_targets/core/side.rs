//! One core and the fuzzer's runtime for it: handlers chosen by operation
//! name, parts and notifications taken at once or held, and the checks made
//! after every action.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use gotalk_peer::{
    CloseReason, Config,
    core::{Charge, Core, Credit, Delivery, Event, Reply, StreamItem, Tokens},
    proto::{DecodeLimits, Decoded, RequestId, decode_bytes},
};

/// Callers and readers are tags; a stream handler's channel is a serial.
pub struct Fuzz;

impl Tokens for Fuzz {
    type Caller = u32;
    type Reader = u32;
    type Parts = u64;
}

/// Operation names; the handler's behaviour follows from the name.
pub const OPS: [&str; 5] = ["echo", "hold", "err", "retry", "nope"];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Behaviour {
    /// Value back; a stream's parts back as result parts, ended with it.
    Echo,
    /// Held until an action answers it.
    Hold,
    Error,
    Retry,
    /// No handler.
    Unknown,
}

fn behaviour(op: &str, cooperative: bool) -> Behaviour {
    match op {
        "hold" if cooperative => Behaviour::Echo,
        "echo" => Behaviour::Echo,
        "err" => Behaviour::Error,
        "retry" => Behaviour::Retry,
        "nope" => Behaviour::Unknown,
        _ => Behaviour::Hold,
    }
}

/// A request of the peer's whose handler an action will answer.
pub struct Held {
    pub id: RequestId,
    /// The stream handler's serial, for a stream request.
    pub stream: Option<u64>,
    charge: Charge,
}

/// The handler of one of the peer's stream requests.
struct Handler {
    id: RequestId,
    echo: bool,
    answered: bool,
    ended: bool,
}

/// What the side's limits allow, for the checks.
struct Limits {
    requests: usize,
    streams: usize,
    notifications: usize,
    max_payload: usize,
}

pub struct Side {
    pub core: Core<Fuzz>,
    pub take_parts: bool,
    pub finish_notes: bool,
    /// Held handlers answer at once (the end of the run).
    cooperative: bool,
    inbox: BytesMut,
    eof: Option<CloseReason>,
    read_open: bool,
    decode: DecodeLimits,
    limits: Limits,
    pub held: Vec<Held>,
    held_parts: Vec<(Credit, usize)>,
    held_notes: Vec<Charge>,
    handlers: HashMap<u64, Handler>,
    next_serial: u64,
    /// Our calls waiting: tag → (ID, stream request).
    pub waiting: BTreeMap<u32, (RequestId, bool)>,
    /// Our stream requests we have not ended.
    pub open: Vec<RequestId>,
    pub closed: bool,
    flushed: bool,
    next_tag: u32,
}

impl Side {
    pub fn new(config: &Config, now: Instant, seed: u64) -> Self {
        Self {
            core: Core::new(config, now, seed),
            take_parts: true,
            finish_notes: true,
            cooperative: false,
            inbox: BytesMut::new(),
            eof: None,
            read_open: true,
            decode: DecodeLimits::with_max_payload(config.max_payload),
            limits: Limits {
                requests: config.max_inbound_requests,
                streams: config.max_inbound_streams,
                notifications: config.max_concurrent_notifications.max(1),
                max_payload: config.max_payload as usize,
            },
            held: Vec::new(),
            held_parts: Vec::new(),
            held_notes: Vec::new(),
            handlers: HashMap::new(),
            next_serial: 0,
            waiting: BTreeMap::new(),
            open: Vec::new(),
            closed: false,
            flushed: false,
            next_tag: 0,
        }
    }

    // ---- input -----------------------------------------------------------

    pub fn inject(&mut self, bytes: &[u8]) {
        self.inbox.extend_from_slice(bytes);
    }

    /// The other side closed and flushed: our input ends after the inbox.
    pub fn peer_gone(&mut self) -> bool {
        if self.read_open && self.eof.is_none() {
            self.eof = Some(CloseReason::PeerClosed);
            return true;
        }
        false
    }

    /// Reads like the driver: one message at a time while the core wants
    /// to. True on progress.
    pub fn read(&mut self, now: Instant) -> bool {
        let mut progress = false;
        while self.read_open && self.core.wants_read() {
            match decode_bytes(&mut self.inbox, &self.decode) {
                Ok(Decoded::Complete(msg, _)) => {
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

    /// Takes the write queue. Checks that it holds whole, well-formed
    /// frames, and nothing once a closed core flushed.
    pub fn transmit(&mut self) -> Vec<u8> {
        let mut out = std::collections::VecDeque::new();
        let n = self.core.poll_transmit(&mut out);
        assert!(
            !self.flushed || n == 0,
            "transmitted after Closed and its flush"
        );
        if self.closed {
            self.flushed = true;
        }
        let mut bytes = BytesMut::new();
        for segment in &out {
            bytes.extend_from_slice(segment);
        }
        assert_eq!(bytes.len(), n);
        let whole = bytes.clone().freeze();
        let lax = DecodeLimits::with_max_payload(u32::MAX);
        while !bytes.is_empty() {
            match decode_bytes(&mut bytes, &lax) {
                Ok(Decoded::Complete(..)) => {}
                other => panic!("the core wrote a bad frame: {other:?}"),
            }
        }
        whole.to_vec()
    }

    pub fn has_flushed(&self) -> bool {
        self.flushed
    }

    // ---- commands ----------------------------------------------------------

    fn tag(&mut self) -> u32 {
        self.next_tag += 1;
        self.next_tag
    }

    pub fn request(&mut self, op: &str, payload: Bytes) {
        let tag = self.tag();
        if let Ok(id) = self.core.request(op, &payload, tag) {
            self.waiting.insert(tag, (id, false));
        }
        self.pump();
    }

    pub fn stream_request(&mut self, op: &str) {
        let tag = self.tag();
        if let Ok(id) = self.core.stream_request(op, tag) {
            self.waiting.insert(tag, (id, true));
            self.open.push(id);
        }
        self.pump();
    }

    /// A part of one of our stream requests; empty ends it.
    pub fn part(&mut self, which: usize, payload: Bytes) {
        if self.open.is_empty() {
            return;
        }
        let at = which % self.open.len();
        let id = self.open[at];
        if payload.is_empty() {
            self.open.remove(at);
        }
        let _ = self.core.send_request_part(id, payload);
        self.pump();
    }

    /// A result part for a held request (non-empty).
    pub fn result_part(&mut self, which: usize, payload: Bytes) {
        if self.held.is_empty() || payload.is_empty() {
            return;
        }
        let id = self.held[which % self.held.len()].id;
        let _ = self.core.send_result_part(id, payload);
        self.pump();
    }

    pub fn notify(&mut self, payload: Bytes) {
        let _ = self.core.notify("note", &payload);
        self.pump();
    }

    /// Answers a held request.
    pub fn respond(&mut self, which: usize, reply: Reply) {
        if self.held.is_empty() {
            return;
        }
        let held = self.held.remove(which % self.held.len());
        self.answer(held.id, held.stream, reply, held.charge);
        self.pump();
    }

    fn answer(&mut self, id: RequestId, stream: Option<u64>, reply: Reply, charge: Charge) {
        if let Some(serial) = stream {
            let handler = self.handlers.get_mut(&serial).expect("a handler");
            assert!(!handler.answered, "answered twice");
            handler.answered = true;
        }
        self.core.respond(id, stream.is_some(), reply, charge);
    }

    pub fn take_part(&mut self, which: usize) {
        if self.held_parts.is_empty() {
            return;
        }
        let (credit, _) = self.held_parts.remove(which % self.held_parts.len());
        self.core.part_taken(credit);
        self.pump();
    }

    pub fn finish_note(&mut self, which: usize) {
        if self.held_notes.is_empty() {
            return;
        }
        let charge = self.held_notes.remove(which % self.held_notes.len());
        self.core.notification_done(charge);
        self.pump();
    }

    pub fn cancel(&mut self, which: usize) {
        let Some((&tag, &(id, _))) = self.waiting.iter().nth(which % self.waiting.len().max(1))
        else {
            return;
        };
        self.waiting.remove(&tag);
        self.core.cancel(id);
        self.pump();
    }

    /// Lets everything held go, and makes the handlers cooperate.
    pub fn release_all(&mut self) {
        self.cooperative = true;
        self.take_parts = true;
        self.finish_notes = true;
        for held in std::mem::take(&mut self.held) {
            let reply = match held.stream {
                Some(_) => Reply::EndOfStream,
                None => Reply::Value(Bytes::new()),
            };
            self.answer(held.id, held.stream, reply, held.charge);
        }
        for (credit, _) in std::mem::take(&mut self.held_parts) {
            self.core.part_taken(credit);
        }
        for charge in std::mem::take(&mut self.held_notes) {
            self.core.notification_done(charge);
        }
        for id in std::mem::take(&mut self.open) {
            let _ = self.core.send_request_part(id, Bytes::new());
        }
        self.pump();
    }

    // ---- the runtime -------------------------------------------------------

    pub fn pump(&mut self) {
        while let Some(event) = self.core.poll_event() {
            self.dispatch(event);
        }
        self.check();
    }

    /// The invariants (see the fuzz README).
    pub fn check(&self) {
        let s = self.core.stats();
        assert_eq!(
            s.outbound,
            self.waiting.len(),
            "outbound table vs calls waiting"
        );
        let held = self.held.iter().map(|h| h.charge.bytes()).sum::<usize>()
            + self.held_parts.iter().map(|(_, cost)| cost).sum::<usize>()
            + self.held_notes.iter().map(Charge::bytes).sum::<usize>();
        // Streamed results being collected for our buffer requests are
        // charged by the core itself.
        assert_eq!(
            s.buffered_bytes,
            held + s.collecting_bytes,
            "budget vs charges held"
        );
        let frame = s.max_buffered_bytes.min(self.limits.max_payload);
        assert!(
            s.buffered_bytes <= s.max_buffered_bytes + frame,
            "budget over max + one frame: {s:?}"
        );
        if !self.closed {
            assert!(s.inbound <= self.limits.requests, "{s:?}");
            assert!(s.inbound_streams <= self.limits.streams, "{s:?}");
            assert!(s.open_streams <= self.limits.streams, "{s:?}");
        } else {
            assert!(!self.core.wants_read() && self.core.poll_timeout().is_none());
            assert_eq!(s.open_streams, 0);
            assert!(self.waiting.is_empty(), "closed with calls waiting");
        }
        assert!(s.retired <= 1024);
        assert!(s.notifications <= self.limits.notifications, "{s:?}");
    }

    fn dispatch(&mut self, event: Event<Fuzz>) {
        assert!(!self.closed, "an event after Closed");
        match event {
            Event::Request {
                id,
                op,
                payload,
                charge,
            } => {
                let reply = match behaviour(op.as_str(), self.cooperative) {
                    Behaviour::Echo => Reply::Value(payload),
                    Behaviour::Hold => {
                        return self.held.push(Held {
                            id,
                            stream: None,
                            charge,
                        });
                    }
                    Behaviour::Error => Reply::Error(Bytes::from_static(b"no")),
                    Behaviour::Retry => Reply::Retry {
                        wait: std::time::Duration::from_millis(7),
                        payload: Bytes::from_static(b"busy"),
                    },
                    Behaviour::Unknown => {
                        return self.core.unknown_operation(id, false, op.as_str(), charge);
                    }
                };
                self.core.respond(id, false, reply, charge);
            }
            Event::StreamRequest { id, op, first } => {
                let how = behaviour(op.as_str(), self.cooperative);
                if how == Behaviour::Unknown {
                    if let Some(first) = first {
                        self.core.part_taken(first.credit);
                    }
                    return self
                        .core
                        .unknown_operation(id, true, op.as_str(), Charge::NONE);
                }
                self.next_serial += 1;
                let serial = self.next_serial;
                self.core.open_stream(id, serial);
                let handler = Handler {
                    id,
                    echo: how == Behaviour::Echo,
                    answered: false,
                    ended: false,
                };
                assert!(self.handlers.insert(serial, handler).is_none());
                if let Some(first) = first {
                    self.deliver(Some(serial), first);
                }
                let reply = match how {
                    Behaviour::Echo | Behaviour::Unknown => return,
                    Behaviour::Hold => {
                        return self.held.push(Held {
                            id,
                            stream: Some(serial),
                            charge: Charge::NONE,
                        });
                    }
                    Behaviour::Error => Reply::Error(Bytes::from_static(b"no")),
                    Behaviour::Retry => Reply::Retry {
                        wait: std::time::Duration::ZERO,
                        payload: Bytes::from_static(b"busy"),
                    },
                };
                self.answer(id, Some(serial), reply, Charge::NONE);
            }
            Event::RequestPart { parts, part } => self.deliver(Some(parts), part),
            Event::RequestEnd { parts } => {
                let h = self.handlers.get_mut(&parts).expect("a handler");
                assert!(!h.ended, "a request stream ended twice");
                h.ended = true;
                if h.echo && !h.answered {
                    let id = h.id;
                    self.answer(id, Some(parts), Reply::EndOfStream, Charge::NONE);
                }
            }
            Event::Answer { caller, answer } => {
                let call = self.waiting.remove(&caller);
                assert!(
                    matches!(call, Some((_, false))),
                    "an answer for call {caller}, not a waiting buffer call: {answer:?}"
                );
            }
            Event::ResultPart { reader, item } => {
                assert!(
                    matches!(self.waiting.get(&reader), Some((_, true))),
                    "an item for stream {reader}, not a waiting stream call: {item:?}"
                );
                match item {
                    StreamItem::Data(d) => self.deliver(None, d),
                    StreamItem::End | StreamItem::Failed(_) => {
                        self.waiting.remove(&reader);
                    }
                }
            }
            Event::Notification { charge, .. } => {
                if self.finish_notes {
                    self.core.notification_done(charge);
                } else {
                    self.held_notes.push(charge);
                }
            }
            Event::Heartbeat { .. } => {}
            Event::HeartbeatDue => {
                let _ = self.core.heartbeat(1, 2);
            }
            Event::StreamAborted { parts } => {
                let h = self.handlers.get(&parts).expect("a handler");
                assert!(!h.ended && !h.answered, "a finished stream aborted");
            }
            Event::Closed(_) => {
                self.closed = true;
                self.open.clear();
            }
        }
    }

    /// A part for a stream handler (`Some(serial)`) or one of our readers.
    fn deliver(&mut self, handler: Option<u64>, d: Delivery) {
        let cost = d.payload.len().min(self.core.stats().max_buffered_bytes);
        if let Some(serial) = handler {
            let h = self.handlers.get(&serial).expect("a handler");
            assert!(!h.ended, "a part after the end");
            if h.echo && !h.answered {
                let id = h.id;
                let _ = self.core.send_result_part(id, d.payload.clone());
            }
        }
        if self.take_parts {
            self.core.part_taken(d.credit);
        } else {
            self.held_parts.push((d.credit, cost));
        }
    }
}
