//! Two connection cores back to back, driven by an arbitrary sequence of
//! actions: raw bytes and well-formed messages injected into either side (a
//! hostile peer), local commands on either side, deliveries and time. After
//! every action both sides check the core's promises (see `core/side.rs`
//! and fuzz/README.md); at the end everything held is released, time runs
//! out, both sides close, and every call must have had exactly one answer.

#![no_main]

#[path = "core/side.rs"]
mod side;

use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use bytes::Bytes;
use gotalk_peer::{
    CloseReason, Config, Violation,
    core::{CloseMode, Reply},
    proto::{Message, ProtocolErrorCode, RequestId, Text},
};
use libfuzzer_sys::fuzz_target;
use side::{OPS, Side};

/// Payload sizes: empty, small, around the 4 KiB charge threshold, large.
const SIZES: [usize; 8] = [0, 1, 5, 40, 100, 4096, 5000, 9000];

fn payload(size: u8, fill: u8) -> Bytes {
    Bytes::from(vec![fill; SIZES[size as usize % SIZES.len()]])
}

/// Small limits, so that every limit is hit.
#[derive(Arbitrary, Debug)]
struct Limits {
    requests: u8,
    streams: u8,
    parts: u8,
    budget: u8,
    notifications: u8,
    queue: u8,
    read_timeout: u8,
    heartbeat: u8,
    close: u8,
    retry_results: bool,
    max_payload: bool,
}

impl Limits {
    fn config(&self) -> Config {
        let ms = Duration::from_millis;
        Config {
            max_inbound_requests: 1 + self.requests as usize % 8,
            max_inbound_streams: self.streams as usize % 5,
            stream_buffer_parts: 1 + self.parts as usize % 4,
            max_buffered_bytes: [64, 512, 6000, 20_000][self.budget as usize % 4],
            max_concurrent_notifications: 1 + self.notifications as usize % 4,
            max_write_queue_bytes: [16, 64, 1024][self.queue as usize % 3],
            rate_limit_wait: (ms(5), ms(50)),
            read_timeout: [None, Some(ms(50)), Some(ms(200))][self.read_timeout as usize % 3],
            heartbeat_interval: [None, Some(ms(30))][self.heartbeat as usize % 2],
            close_timeout: [ms(10), ms(100)][self.close as usize % 2],
            remote_retry_results: self.retry_results,
            max_payload: if self.max_payload { 8192 } else { 64 },
            ..Config::default()
        }
    }
}

/// A well-formed message from arbitrary fields; IDs mostly small, so that
/// they meet the IDs the cores use.
#[derive(Arbitrary, Debug)]
struct Wire {
    kind: u8,
    id: u8,
    raw_id: Option<[u8; 4]>,
    op: u8,
    size: u8,
    number: u32,
}

impl Wire {
    fn encode(&self) -> Vec<u8> {
        let id = self
            .raw_id
            .map_or(RequestId::from_u32(u32::from(self.id % 8)), RequestId::new);
        let op = Text::from(OPS[self.op as usize % OPS.len()]);
        let payload = payload(self.size, b'w');
        let msg = match self.kind % 10 {
            0 => Message::SingleRequest { id, op, payload },
            1 => Message::StreamRequest { id, op, payload },
            2 => Message::StreamRequestPart { id, payload },
            3 => Message::SingleResult { id, payload },
            4 => Message::StreamResult { id, payload },
            5 => Message::ErrorResult { id, payload },
            6 => Message::RetryResult {
                id,
                wait_ms: self.number % 1000,
                payload,
            },
            7 => Message::Notification { name: op, payload },
            8 => Message::Heartbeat {
                load: self.number as u16,
                time: self.number,
            },
            _ => Message::ProtocolError {
                code: ProtocolErrorCode::from_u32(self.number % 5),
            },
        };
        msg.to_vec().expect("valid")
    }
}

#[derive(Arbitrary, Debug)]
enum Action {
    Raw {
        to_b: bool,
        bytes: Vec<u8>,
    },
    Wire {
        to_b: bool,
        msg: Wire,
    },
    Request {
        b: bool,
        op: u8,
        size: u8,
    },
    StreamRequest {
        b: bool,
        op: u8,
    },
    Part {
        b: bool,
        which: u8,
        size: u8,
    },
    ResultPart {
        b: bool,
        which: u8,
        size: u8,
    },
    Notify {
        b: bool,
        size: u8,
    },
    Respond {
        b: bool,
        which: u8,
        how: u8,
        size: u8,
    },
    TakePart {
        b: bool,
        which: u8,
    },
    FinishNote {
        b: bool,
        which: u8,
    },
    Cancel {
        b: bool,
        which: u8,
    },
    Close {
        b: bool,
        graceful: bool,
    },
    Modes {
        b: bool,
        take_parts: bool,
        finish_notes: bool,
    },
    TransportEnds {
        b: bool,
        how: u8,
    },
    Read {
        b: bool,
    },
    Deliver {
        from_b: bool,
    },
    Step,
    Advance {
        ms: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Input {
    a: Limits,
    b: Limits,
    seed: u64,
    actions: Vec<Action>,
}

struct Pair {
    a: Side,
    b: Side,
    now: Instant,
    /// Raw bytes were injected.
    raw: bool,
}

impl Pair {
    fn side(&mut self, b: bool) -> &mut Side {
        if b { &mut self.b } else { &mut self.a }
    }

    /// Moves one side's write queue to the other; a closed, flushed side
    /// ends the other's input.
    fn deliver(&mut self, from_b: bool) -> bool {
        let (from, to) = if from_b {
            (&mut self.b, &mut self.a)
        } else {
            (&mut self.a, &mut self.b)
        };
        let bytes = from.transmit();
        let mut progress = !bytes.is_empty();
        to.inject(&bytes);
        if from.has_flushed() {
            progress |= to.peer_gone();
        }
        progress
    }

    fn step(&mut self) {
        for _ in 0..10_000 {
            let now = self.now;
            let mut progress = self.a.read(now);
            progress |= self.deliver(false);
            progress |= self.b.read(now);
            progress |= self.deliver(true);
            if !progress {
                return;
            }
        }
        panic!("the pair never settles");
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        let now = self.now;
        for side in [&mut self.a, &mut self.b] {
            if side.core.poll_timeout().is_some_and(|t| t <= now) {
                side.core.handle_timeout(now);
                side.pump();
            }
        }
    }

    fn act(&mut self, action: Action) {
        let now = self.now;
        match action {
            Action::Raw { to_b, bytes } => {
                self.raw = true;
                self.side(to_b).inject(&bytes);
            }
            Action::Wire { to_b, msg } => self.side(to_b).inject(&msg.encode()),
            Action::Request { b, op, size } => self
                .side(b)
                .request(OPS[op as usize % OPS.len()], payload(size, b'r')),
            Action::StreamRequest { b, op } => {
                self.side(b).stream_request(OPS[op as usize % OPS.len()])
            }
            Action::Part { b, which, size } => self.side(b).part(which.into(), payload(size, b'p')),
            Action::ResultPart { b, which, size } => {
                self.side(b).result_part(which.into(), payload(size, b's'))
            }
            Action::Notify { b, size } => self.side(b).notify(payload(size, b'n')),
            Action::Respond {
                b,
                which,
                how,
                size,
            } => {
                let reply = match how % 4 {
                    0 => Reply::Value(payload(size, b'v')),
                    1 => Reply::EndOfStream,
                    2 => Reply::Error(payload(size, b'e')),
                    _ => Reply::Retry {
                        wait: Duration::from_millis(u64::from(size)),
                        payload: payload(size, b'e'),
                    },
                };
                self.side(b).respond(which.into(), reply);
            }
            Action::TakePart { b, which } => self.side(b).take_part(which.into()),
            Action::FinishNote { b, which } => self.side(b).finish_note(which.into()),
            Action::Cancel { b, which } => self.side(b).cancel(which.into()),
            Action::Close { b, graceful } => {
                let mode = if graceful {
                    CloseMode::Graceful
                } else {
                    CloseMode::Immediate
                };
                let side = self.side(b);
                side.core.close(now, mode);
                side.pump();
            }
            Action::Modes {
                b,
                take_parts,
                finish_notes,
            } => {
                let side = self.side(b);
                side.take_parts = take_parts;
                side.finish_notes = finish_notes;
            }
            Action::TransportEnds { b, how } => {
                let reason = match how % 4 {
                    0 => CloseReason::PeerClosed,
                    1 => CloseReason::WriteTimeout,
                    2 => CloseReason::Io(std::sync::Arc::new(std::io::ErrorKind::Other.into())),
                    _ => CloseReason::ProtocolViolation {
                        code: ProtocolErrorCode::InvalidMessage,
                        violation: Violation::Transport(std::sync::Arc::new(
                            std::io::ErrorKind::InvalidData.into(),
                        )),
                    },
                };
                let side = self.side(b);
                side.core.handle_transport_closed(reason);
                side.pump();
            }
            Action::Read { b } => {
                self.side(b).read(now);
            }
            Action::Deliver { from_b } => {
                self.deliver(from_b);
            }
            Action::Step => self.step(),
            Action::Advance { ms } => self.advance(Duration::from_millis(ms.into())),
        }
        self.a.check();
        self.b.check();
    }

    /// Releases everything, lets the connection settle and time run out,
    /// then closes both sides: every call must have been answered.
    fn finish(&mut self) {
        self.a.release_all();
        self.b.release_all();
        self.step();
        // Still open after everything was released and delivered: no call
        // may be left waiting, unless raw bytes may have cut a frame short
        // (a hostile prefix can swallow what follows it).
        if !self.raw {
            for side in [&self.a, &self.b] {
                assert!(
                    side.closed || side.waiting.is_empty(),
                    "a call stuck: {:?}",
                    side.waiting
                );
            }
        }
        for _ in 0..3 {
            self.advance(Duration::from_secs(10));
            self.step();
        }
        let now = self.now;
        for side in [&mut self.a, &mut self.b] {
            side.core.close(now, CloseMode::Immediate);
            side.pump();
            assert!(side.closed);
            assert!(side.waiting.is_empty(), "calls left without an answer");
            side.release_all();
            assert_eq!(side.core.stats().buffered_bytes, 0);
        }
        self.step();
    }
}

fuzz_target!(|input: Input| {
    let now = Instant::now();
    let mut pair = Pair {
        a: Side::new(&input.a.config(), now, input.seed),
        b: Side::new(&input.b.config(), now, input.seed ^ 0x5555),
        now,
        raw: false,
    };
    for action in input.actions {
        pair.act(action);
    }
    pair.finish();
});
