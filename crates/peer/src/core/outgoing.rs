//! Frames encoded and waiting for the transport.
//!
//! Headers and small payloads are encoded straight into one `BytesMut`, so a
//! burst of frames becomes one write; payloads of [`ZERO_COPY_MIN`] bytes or
//! more are kept as their own `Bytes` segment and reach the transport by
//! vectored I/O without being copied.
//!
//! The encoding buffer holds memory only while frames wait: it is allocated
//! by the first frame queued (room for about twice the last batch, at most
//! [`TAIL_MAX`], or the frame's length; see `first_allocation`), and handed
//! over whole with the bytes taken for writing, so its memory is freed once
//! they are written and an idle connection holds none.

use std::{collections::VecDeque, time::Instant};

use bytes::{Bytes, BytesMut};
use gotalk_proto::{Buffer, Message};

use super::WriteCeiling;

/// Payloads at least this long are sent by reference, never copied.
pub(crate) const ZERO_COPY_MIN: usize = 16 * 1024;

/// Shared payloads (a broadcast's one `Bytes`) up to this long are copied
/// into the encoding buffer like any other: a copy of a short payload costs
/// less than a segment of its own (the header frozen apart, a reference
/// taken and dropped, one more buffer for the vectored write), and holds at
/// most this much per receiver. Longer ones are queued by reference.
pub(crate) const SHARED_COPY_MAX: usize = 1024;

/// The encoding buffer's first allocation before any batch was taken, so
/// that a run of small frames does not reallocate it at once; it grows as
/// needed.
const TAIL_FIRST: usize = 4 * 1024;

/// The largest first allocation sized by the last batch (twice it, see
/// [`first_allocation`]). Growing the buffer copies what it holds: a
/// window of 640 small requests (about 35 KB) grown from 4 KiB was copied
/// four times over, 55 instructions per request on each side (callgrind,
/// 640 in flight). Under glibc's threshold for mapping memory of its own
/// (128 KiB), so a batch's buffer comes from the heap and goes back to it.
const TAIL_MAX: usize = 64 * 1024;

/// Frames queued with a delay are written at once, whatever their
/// deadline, when this many bytes wait: a batch this large gains nothing
/// from waiting for more.
pub(crate) const DELAYED_FLUSH_BYTES: usize = 32 * 1024;

/// Queued bytes are charged to the shared [`WriteCeiling`] in steps of at
/// least this many: one shared counter changed per frame (an atomic
/// read-modify-write on a line every connection of the process writes)
/// was a third of the time spent queuing a small frame. A queue holds at
/// most this much that the ceiling does not count.
const CEILING_STEP: usize = 1024;

/// The outgoing byte queue (see the module docs).
#[derive(Debug)]
pub(crate) struct Outgoing {
    /// Frozen segments, in order.
    segments: VecDeque<Bytes>,
    /// Bytes encoded after the last segment.
    tail: BytesMut,
    /// Bytes waiting in `segments` and `tail`.
    queued: usize,
    /// Above this many queued bytes, [`has_room`](Self::has_room) is false.
    max: usize,
    /// The bound shared with other connections, charged with `charged`.
    ceiling: WriteCeiling,
    /// The part of `queued` charged to `ceiling`: all but the last
    /// [`CEILING_STEP`] bytes at most.
    charged: usize,
    /// Bytes the last [`take`](Self::take) took: sizes the encoding
    /// buffer's next first allocation.
    last_taken: usize,
    /// When what waits must be written; `None` while nothing waits.
    due: Option<Due>,
}

/// When a non-empty queue must be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Due {
    /// A frame queued without a delay waits.
    Now,
    /// Only frames queued with a delay wait: the earliest of their
    /// deadlines (see [`Outgoing::push_shared_by`]).
    By(Instant),
}

impl Outgoing {
    pub(crate) fn new(max: usize, ceiling: WriteCeiling) -> Self {
        Self {
            segments: VecDeque::new(),
            tail: BytesMut::new(),
            queued: 0,
            max,
            ceiling,
            charged: 0,
            // Twice this is the first batch's buffer (see `first_allocation`).
            last_taken: TAIL_FIRST / 2,
            due: None,
        }
    }

    /// Whether another frame may be queued within the bounds. An empty
    /// queue takes any frame, however large, whatever the ceiling: the
    /// connections that keep up go on while others hold it.
    pub(crate) fn has_room(&self) -> bool {
        self.queued == 0 || (self.queued < self.max && !self.ceiling.is_reached())
    }

    /// Bytes waiting.
    pub(crate) fn len(&self) -> usize {
        self.queued
    }

    /// Encodes a validated `msg`. `payload` is the same payload as a shared
    /// `Bytes`, when there is one: a large one is then queued by reference.
    pub(crate) fn push<B: Buffer>(&mut self, msg: &Message<B>, payload: Option<&Bytes>) {
        debug_assert!(payload.is_none_or(|p| p.len() == msg.payload_len()));
        self.encode(msg, payload.filter(|p| p.len() >= ZERO_COPY_MIN));
        self.due = Some(Due::Now);
    }

    /// Like [`push`](Self::push), but `payload` is queued by reference from
    /// [`SHARED_COPY_MAX`] bytes on, not [`ZERO_COPY_MIN`]: it is one `Bytes`
    /// shared by many connections (a broadcast), and copying a long one into
    /// each queue would multiply its memory by the number of receivers.
    pub(crate) fn push_shared<B: Buffer>(&mut self, msg: &Message<B>, payload: &Bytes) {
        debug_assert_eq!(payload.len(), msg.payload_len());
        self.encode(msg, shared_by_reference(payload));
        self.due = Some(Due::Now);
    }

    /// Like [`push_shared`](Self::push_shared), but the frame may wait
    /// until `by` to go out with the frames queued meanwhile: fewer, larger
    /// writes. A frame queued without a delay takes it along at once, and
    /// so does a queue of [`DELAYED_FLUSH_BYTES`]. Returns whether the
    /// queue's deadline moved earlier or it became due: whoever writes it
    /// must look again (otherwise it already knows when to).
    pub(crate) fn push_shared_by<B: Buffer>(
        &mut self,
        msg: &Message<B>,
        payload: &Bytes,
        by: Instant,
    ) -> bool {
        debug_assert_eq!(payload.len(), msg.payload_len());
        let before = self.queued;
        self.encode(msg, shared_by_reference(payload));
        let earlier = match self.due {
            Some(Due::Now) => return false,
            Some(Due::By(at)) => by < at,
            None => true,
        };
        if earlier {
            self.due = Some(Due::By(by));
        }
        earlier || (before < DELAYED_FLUSH_BYTES && self.queued >= DELAYED_FLUSH_BYTES)
    }

    /// Whether the queue should be written now: something waits, and a
    /// frame without delay is among it, or it is large, or its deadline
    /// passed. `now` is read only in the last case.
    pub(crate) fn is_due(&self, now: impl FnOnce() -> Instant) -> bool {
        match self.due {
            None => false,
            Some(Due::Now) => true,
            Some(Due::By(by)) => self.queued >= DELAYED_FLUSH_BYTES || by <= now(),
        }
    }

    /// When the delayed frames waiting must be written, if only such wait.
    pub(crate) fn flush_deadline(&self) -> Option<Instant> {
        match self.due {
            Some(Due::By(by)) => Some(by),
            _ => None,
        }
    }

    /// Drops everything queued (the peer will not read it).
    pub(crate) fn discard(&mut self) {
        self.segments.clear();
        self.tail = BytesMut::new();
        self.queued = 0;
        self.ceiling.sub(std::mem::take(&mut self.charged));
        self.due = None;
    }

    fn encode<B: Buffer>(&mut self, msg: &Message<B>, by_reference: Option<&Bytes>) {
        let (header_len, payload_len) = (msg.header_len(), msg.payload_len());
        let len = header_len + by_reference.map_or(payload_len, |_| 0);
        if self.tail.capacity() == 0 {
            self.tail.reserve(first_allocation(len, self.last_taken));
        } else {
            self.tail.reserve(len);
        }
        match by_reference {
            Some(payload) => {
                msg.encode_header(&mut self.tail)
                    .expect("validated, and BytesMut grows");
                let head = self.tail.split().freeze();
                self.segments.push_back(head);
                self.segments.push_back(payload.clone());
            }
            None => msg
                .encode(&mut self.tail)
                .expect("validated, and BytesMut grows"),
        }
        self.queued += header_len + payload_len;
        let uncharged = self.queued - self.charged;
        if uncharged >= CEILING_STEP {
            self.ceiling.add(uncharged);
            self.charged = self.queued;
        }
    }

    /// Bytes of memory the encoding buffer holds.
    pub(crate) fn capacity(&self) -> usize {
        self.tail.capacity()
    }

    /// Moves everything queued into `out`; returns how many bytes. The
    /// encoding buffer goes along whole: its memory is freed once written.
    pub(crate) fn take(&mut self, out: &mut VecDeque<Bytes>) -> usize {
        let tail = std::mem::take(&mut self.tail);
        if !tail.is_empty() {
            self.segments.push_back(tail.freeze());
        }
        out.append(&mut self.segments);
        self.due = None;
        let taken = std::mem::take(&mut self.queued);
        self.ceiling.sub(std::mem::take(&mut self.charged));
        if taken > 0 {
            self.last_taken = taken;
        }
        taken
    }
}

/// A shared payload queued by reference, or `None` to copy it.
fn shared_by_reference(payload: &Bytes) -> Option<&Bytes> {
    Some(payload).filter(|p| p.len() > SHARED_COPY_MAX)
}

/// The encoding buffer's first allocation for a frame of `len` bytes when
/// the last batch was `last_taken` bytes. A connection answering one request
/// at a time (many connections, one request in flight on each) gets exactly
/// its frame: the allocator's small, cached size classes instead of a
/// 4 KiB block per frame, and a buffer frozen whole into `Bytes` without
/// the shared header a partly filled one needs. Batches of many frames get
/// room for about twice the last one, up to [`TAIL_MAX`] ([`TAIL_FIRST`]
/// before the first batch).
fn first_allocation(len: usize, last_taken: usize) -> usize {
    if last_taken <= len {
        len
    } else {
        len.max(last_taken.saturating_mul(2).min(TAIL_MAX))
    }
}

impl Drop for Outgoing {
    fn drop(&mut self) {
        self.ceiling.sub(self.charged);
    }
}

#[cfg(test)]
mod tests {
    use gotalk_proto::RequestId;

    use super::*;

    fn result(n: usize) -> Message {
        Message::SingleResult {
            id: RequestId::new(*b"0001"),
            payload: Bytes::from(vec![b'x'; n]),
        }
    }

    #[test]
    fn small_frames_coalesce_into_one_segment() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        for _ in 0..10 {
            let msg = result(3);
            q.push(&msg, msg.payload());
        }
        let mut out = VecDeque::new();
        assert_eq!(q.take(&mut out), 160);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].len(), 10 * 16);
        assert_eq!(q.len(), 0);
    }

    #[test]
    fn the_first_allocation_follows_the_last_batch() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let mut out = VecDeque::new();
        let msg = result(3);
        // One frame at a time: after the first, exactly the frame.
        q.push(&msg, msg.payload());
        assert_eq!(q.capacity(), TAIL_FIRST, "no batch yet");
        q.take(&mut out);
        q.push(&msg, msg.payload());
        assert_eq!(q.capacity(), 16, "the frame alone");
        // Grown by a second frame, then room for twice that batch.
        q.push(&msg, msg.payload());
        assert_eq!(q.take(&mut out), 32);
        q.push(&msg, msg.payload());
        assert_eq!(q.capacity(), 64);
        // A window of frames: room for twice it, so that the next is
        // encoded without growing the buffer.
        for _ in 0..1000 {
            q.push(&msg, msg.payload());
        }
        q.take(&mut out);
        q.push(&msg, msg.payload());
        assert_eq!(q.capacity(), 2 * 16 * 1001);
        for _ in 1..1001 {
            q.push(&msg, msg.payload());
        }
        assert_eq!(q.capacity(), 2 * 16 * 1001, "not grown");
        // Larger batches: TAIL_MAX at most.
        for _ in 0..5000 {
            q.push(&msg, msg.payload());
        }
        q.take(&mut out);
        q.push(&msg, msg.payload());
        assert_eq!(q.capacity(), TAIL_MAX);
        let wire: usize = out.iter().map(Bytes::len).sum();
        assert_eq!(wire, 16 * 7005, "1 + 2 + 1001 + 6001 frames");
    }

    #[test]
    fn large_payloads_are_not_copied() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let msg = result(ZERO_COPY_MIN);
        let payload_ptr = msg.payload().unwrap().as_ptr();
        q.push(&msg, msg.payload());
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(&out[0][..], b"R000100004000");
        assert_eq!(out[1].as_ptr(), payload_ptr);
    }

    #[test]
    fn the_encoding_buffer_is_held_only_while_frames_wait() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        assert_eq!(q.capacity(), 0, "nothing before the first frame");
        let msg = result(3);
        q.push(&msg, msg.payload());
        assert_eq!(q.capacity(), TAIL_FIRST);
        let big = result(3 * TAIL_FIRST);
        q.push(&big, big.payload());
        assert!(q.capacity() >= 16 + 13 + 3 * TAIL_FIRST);
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(q.capacity(), 0, "released with the bytes taken");
        assert_eq!(out[0].len(), 16 + 13 + 3 * TAIL_FIRST);
        // A large payload's header alone does not keep room either.
        let large = result(ZERO_COPY_MIN);
        q.push(&large, large.payload());
        q.take(&mut out);
        assert_eq!(q.capacity(), 0);
    }

    #[test]
    fn shared_payloads_over_a_kibibyte_are_queued_by_reference() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let payload = Bytes::from(vec![b'p'; SHARED_COPY_MAX + 1]);
        let msg: Message<&[u8]> = Message::Notification {
            name: gotalk_proto::Text::from("n"),
            payload: &payload[..],
        };
        q.push_shared(&msg, &payload);
        q.push_shared(&msg, &payload);
        assert_eq!(q.len(), 2 * msg.encoded_len());
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(out.len(), 4, "header, payload, header, payload");
        assert_eq!(out[1].as_ptr(), payload.as_ptr());
        assert_eq!(out[3].as_ptr(), payload.as_ptr());
        let wire: Vec<u8> = out.iter().flat_map(|b| b.iter().copied()).collect();
        let frame = [&b"n001n00000401"[..], &payload[..]].concat();
        assert_eq!(wire, [&frame[..], &frame[..]].concat());
    }

    #[test]
    fn short_shared_payloads_are_copied_into_one_buffer() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let payload = Bytes::from_static(b"tiny");
        let msg: Message<&[u8]> = Message::Notification {
            name: gotalk_proto::Text::from("n"),
            payload: &payload[..],
        };
        q.push_shared(&msg, &payload);
        q.push_shared(&msg, &payload);
        let mut out = VecDeque::new();
        q.take(&mut out);
        assert_eq!(out.len(), 1, "one buffer, one plain write");
        assert_eq!(&out[0][..], b"n001n00000004tinyn001n00000004tiny");
    }

    #[test]
    fn discard_drops_what_waits() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let msg = result(ZERO_COPY_MIN);
        q.push(&msg, msg.payload());
        q.push(&result(3), None);
        q.discard();
        assert_eq!(q.len(), 0);
        assert_eq!(q.capacity(), 0);
        let mut out = VecDeque::new();
        assert_eq!(q.take(&mut out), 0);
        assert!(out.is_empty());
    }

    #[test]
    fn the_shared_ceiling_counts_every_queue_and_spares_empty_ones() {
        let ceiling = WriteCeiling::new(3 * CEILING_STEP);
        let mut a = Outgoing::new(1 << 20, ceiling.clone());
        let mut b = Outgoing::new(1 << 20, ceiling.clone());
        let big = result(2 * CEILING_STEP);
        a.push(&big, big.payload());
        assert!(a.has_room() && b.has_room());
        b.push(&big, big.payload());
        assert_eq!(ceiling.queued(), 2 * big.encoded_len());
        assert!(
            !a.has_room() && !b.has_room(),
            "both over the shared ceiling"
        );
        a.take(&mut VecDeque::new());
        assert!(a.has_room(), "an empty queue takes its next frame");
        assert!(b.has_room(), "back under the ceiling");
        b.push(&big, big.payload());
        b.discard();
        drop(a);
        b.push(&big, big.payload());
        drop(b);
        assert_eq!(
            ceiling.queued(),
            0,
            "taken, discarded and dropped bytes are returned"
        );
    }

    #[test]
    fn small_frames_are_charged_to_the_ceiling_in_steps() {
        let ceiling = WriteCeiling::new(usize::MAX);
        let mut q = Outgoing::new(1 << 20, ceiling.clone());
        let small = result(37);
        let len = small.encoded_len();
        let mut queued = 0;
        while queued + len < CEILING_STEP {
            q.push(&small, small.payload());
            queued += len;
            assert_eq!(ceiling.queued(), 0, "under a step, nothing is charged");
        }
        q.push(&small, small.payload());
        queued += len;
        assert_eq!(ceiling.queued(), queued, "a step's worth: all of it");
        q.push(&small, small.payload());
        assert_eq!(ceiling.queued(), queued, "the next step starts");
        q.discard();
        assert_eq!(ceiling.queued(), 0);
        for _ in 0..100 {
            q.push(&small, small.payload());
        }
        assert!(q.len() - ceiling.queued() < CEILING_STEP);
        q.take(&mut VecDeque::new());
        assert_eq!(ceiling.queued(), 0, "taken bytes are returned");
    }

    #[test]
    fn room_is_bounded_but_an_empty_queue_takes_anything() {
        let mut q = Outgoing::new(100, WriteCeiling::new(usize::MAX));
        assert!(q.has_room());
        let big = result(200);
        q.push(&big, big.payload());
        assert!(!q.has_room());
        q.take(&mut VecDeque::new());
        assert!(q.has_room());
    }

    fn note(n: usize) -> (Message, Bytes) {
        let payload = Bytes::from(vec![b'x'; n]);
        let msg = Message::Notification {
            name: gotalk_proto::Text::from("n"),
            payload: payload.clone(),
        };
        (msg, payload)
    }

    #[test]
    fn delayed_frames_wait_for_the_earliest_deadline() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let t0 = Instant::now();
        let (msg, payload) = note(3);
        let later = t0 + std::time::Duration::from_millis(20);
        let sooner = t0 + std::time::Duration::from_millis(10);
        assert!(q.push_shared_by(&msg, &payload, later), "a first deadline");
        assert!(
            !q.push_shared_by(&msg, &payload, later),
            "the same deadline"
        );
        assert!(q.push_shared_by(&msg, &payload, sooner), "an earlier one");
        assert!(!q.push_shared_by(&msg, &payload, later), "a later one");
        assert_eq!(q.flush_deadline(), Some(sooner));
        assert!(!q.is_due(|| t0));
        assert!(q.is_due(|| sooner));
        let mut out = VecDeque::new();
        assert!(q.take(&mut out) > 0);
        assert_eq!(q.flush_deadline(), None, "taken: no deadline left");
        assert!(!q.is_due(|| sooner), "nothing waits");
    }

    #[test]
    fn a_frame_without_delay_makes_the_queue_due() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let t0 = Instant::now();
        let by = t0 + std::time::Duration::from_secs(60);
        let (msg, payload) = note(3);
        q.push_shared_by(&msg, &payload, by);
        let r = result(3);
        q.push(&r, r.payload());
        assert!(q.is_due(|| panic!("no clock needed")));
        assert_eq!(q.flush_deadline(), None);
        assert!(!q.push_shared_by(&msg, &payload, by), "already due");
        q.take(&mut VecDeque::new());
        assert!(q.push_shared_by(&msg, &payload, by), "delayed again");
        q.discard();
        assert_eq!(q.flush_deadline(), None, "discarded");
    }

    #[test]
    fn a_large_delayed_batch_is_due_at_once() {
        let mut q = Outgoing::new(1 << 20, WriteCeiling::new(usize::MAX));
        let t0 = Instant::now();
        let by = t0 + std::time::Duration::from_secs(60);
        let (msg, payload) = note(1024);
        let mut woke = 0;
        for _ in 0..40 {
            woke += usize::from(q.push_shared_by(&msg, &payload, by));
        }
        assert_eq!(woke, 2, "the first deadline, then the size");
        assert!(q.len() >= DELAYED_FLUSH_BYTES);
        assert!(q.is_due(|| t0));
    }
}
