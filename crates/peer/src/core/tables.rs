//! Requests in flight in both directions: ID allocation, admission of the
//! peer's requests, open streams and their flow control, retired stream IDs.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    hash::{BuildHasherDefault, Hasher},
};

use bytes::BytesMut;
use gotalk_proto::RequestId;

use super::{Charge, Tokens};

/// Remembered IDs of streams we refused or finished before the requester
/// ended them: their late parts are dropped instead of treated as violations.
pub(crate) const RETIRED_STREAMS: usize = 1024;

/// Request IDs are our own counter or four opaque bytes: hash them with one
/// multiply instead of SipHash (the tables are bounded by the limits, so
/// flooding them with colliding IDs costs the peer as much as us).
///
/// A product's low bits depend only on the factors' low bits, and the
/// table picks a bucket by the hash's low bits; so `finish` folds the high
/// half, where every input bit counts, into the low one. Without it, IDs
/// that differ only in their last bytes (gotalk.js counts `0001`, `0002`,
/// … in base 36, the last byte the highest of the `u32` an ID hashes as)
/// would all share a bucket.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (u64::from(n) ^ self.0).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type IdMap<V> = HashMap<RequestId, V, BuildHasherDefault<IdHasher>>;

/// What to do with a request or stream request from the peer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Run its handler.
    Accepted,
    /// Stream requests are disabled: error result `stream requests not supported`.
    StreamsDisabled,
    /// Over a concurrency limit: retry result.
    RateLimited,
    /// We are closing: retry result (try another connection).
    Closing,
    /// A stream request reusing the ID of a stream still in flight: ProtocolError 2.
    DuplicateStream,
}

/// Which table a stream is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// The peer's stream request; parts go to our handler.
    Inbound,
    /// Our stream request; result parts go to our reader.
    Outbound,
}

/// Names one stream for flow control. The serial tells a stream from a
/// later one that reuses its ID.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StreamRef {
    pub(crate) id: RequestId,
    pub(crate) direction: Direction,
    serial: u64,
}

/// Parts handed to a stream's consumer and not yet taken.
#[derive(Debug)]
pub(crate) struct Flow {
    serial: u64,
    queued: usize,
}

/// How to reach the caller of one of our requests.
pub(crate) enum Outbound<T: Tokens> {
    /// A buffer request: one answer; a streamed result is collected here.
    Buffer {
        caller: T::Caller,
        collected: Option<BytesMut>,
        /// What the collected parts hold of the byte budget.
        charge: Charge,
    },
    /// A stream request: parts go to the reader.
    Stream { reader: T::Reader, flow: Flow },
}

/// The peer's stream request in flight.
pub(crate) struct InboundStream<P> {
    /// Its handler's part channel: `None` until the runtime opens it, and
    /// again once the requester ended the stream.
    pub(crate) parts: Option<P>,
    pub(crate) ended: bool,
    pub(crate) flow: Flow,
}

/// Where a stream request part goes.
pub(crate) enum PartTarget<'a, P> {
    /// To this stream.
    Stream(&'a mut InboundStream<P>),
    /// A stream we refused or already finished: drop the part.
    Retired,
    /// No such stream, or a part after its end: ProtocolError 2.
    Unknown,
}

/// The tables (see the module docs).
pub(crate) struct Tables<T: Tokens> {
    next_id: u32,
    outbound: IdMap<Outbound<T>>,
    streams: IdMap<InboundStream<T::Parts>>,
    retired: VecDeque<RequestId>,
    inbound_requests: usize,
    inbound_streams: usize,
    max_requests: usize,
    max_streams: usize,
    /// Parts a stream's consumer may leave untaken before reading pauses.
    part_limit: usize,
    /// Streams at their part limit.
    stalled: usize,
    next_serial: u64,
}

impl<T: Tokens> Tables<T> {
    pub(crate) fn new(max_requests: usize, max_streams: usize, part_limit: usize) -> Self {
        Self {
            next_id: 0,
            outbound: IdMap::default(),
            streams: IdMap::default(),
            retired: VecDeque::new(),
            inbound_requests: 0,
            inbound_streams: 0,
            max_requests,
            max_streams,
            part_limit: part_limit.max(1),
            stalled: 0,
            next_serial: 0,
        }
    }

    pub(crate) fn new_flow(&mut self) -> Flow {
        self.next_serial += 1;
        Flow {
            serial: self.next_serial,
            queued: 0,
        }
    }

    /// Registers an outbound request under a fresh ID: the Go scheme, a
    /// per-connection counter sent as four little-endian bytes, skipping any
    /// ID still in flight after the counter wraps.
    pub(crate) fn register_outbound(&mut self, entry: Outbound<T>) -> RequestId {
        loop {
            let id = RequestId::from_u32(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if let Entry::Vacant(slot) = self.outbound.entry(id) {
                slot.insert(entry);
                return id;
            }
        }
    }

    /// Moves the ID counter, so that tests reach the wrap quickly.
    #[cfg(test)]
    pub(crate) fn skip_ids_to(&mut self, next: u32) {
        self.next_id = next;
    }

    pub(crate) fn outbound_mut(&mut self, id: RequestId) -> Option<&mut Outbound<T>> {
        self.outbound.get_mut(&id)
    }

    /// Forgets the outbound request `id` (answered, cancelled, or failed).
    pub(crate) fn remove_outbound(&mut self, id: RequestId) -> Option<Outbound<T>> {
        let entry = self.outbound.remove(&id)?;
        if let Outbound::Stream { flow, .. } = &entry {
            self.unstall(flow);
        }
        Some(entry)
    }

    /// Forgets the outbound request `id` if it is a buffer request, in one
    /// look-up; a stream request's entry stays.
    pub(crate) fn remove_buffer_outbound(&mut self, id: RequestId) -> Option<Outbound<T>> {
        match self.outbound.entry(id) {
            Entry::Occupied(entry) if matches!(entry.get(), Outbound::Buffer { .. }) => {
                Some(entry.remove())
            }
            _ => None,
        }
    }

    pub(crate) fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    pub(crate) fn inbound_len(&self) -> usize {
        self.inbound_requests
    }

    pub(crate) fn inbound_streams_len(&self) -> usize {
        self.inbound_streams
    }

    pub(crate) fn open_streams(&self) -> usize {
        self.streams.len()
    }

    pub(crate) fn retired_len(&self) -> usize {
        self.retired.len()
    }

    /// True while some stream's consumer is at its part limit.
    pub(crate) fn is_stalled(&self) -> bool {
        self.stalled > 0
    }

    /// Decides whether to run the handler for the peer's request `id`.
    pub(crate) fn admit(&mut self, id: RequestId, stream: bool, accepting: bool) -> Admission {
        if stream && self.streams.contains_key(&id) {
            return Admission::DuplicateStream;
        }
        let refusal = if !accepting {
            Some(Admission::Closing)
        } else if stream && self.max_streams == 0 {
            Some(Admission::StreamsDisabled)
        } else if self.inbound_requests >= self.max_requests
            || (stream && self.inbound_streams >= self.max_streams)
        {
            Some(Admission::RateLimited)
        } else {
            None
        };
        if let Some(why) = refusal {
            if stream {
                // The requester keeps sending parts until it reads our answer.
                self.retire(id);
            }
            return why;
        }
        self.inbound_requests += 1;
        if stream {
            self.inbound_streams += 1;
            let flow = self.new_flow();
            self.streams.insert(
                id,
                InboundStream {
                    parts: None,
                    ended: false,
                    flow,
                },
            );
        }
        Admission::Accepted
    }

    /// The flow reference of the peer's stream `id`, if it is open.
    pub(crate) fn inbound_ref(&self, id: RequestId) -> Option<StreamRef> {
        let s = self.streams.get(&id)?;
        Some(StreamRef {
            id,
            direction: Direction::Inbound,
            serial: s.flow.serial,
        })
    }

    /// Attaches the handler's part channel to an admitted stream request.
    pub(crate) fn open_stream(&mut self, id: RequestId, parts: T::Parts) {
        if let Some(s) = self.streams.get_mut(&id)
            && !s.ended
        {
            s.parts = Some(parts);
        }
    }

    /// Where a `p` part for stream `id` goes.
    pub(crate) fn part_target(&mut self, id: RequestId) -> PartTarget<'_, T::Parts> {
        match self.streams.get_mut(&id) {
            Some(s) if s.ended => PartTarget::Unknown,
            Some(s) => PartTarget::Stream(s),
            None if self.retired.contains(&id) => PartTarget::Retired,
            None => PartTarget::Unknown,
        }
    }

    /// The requester ended stream `id`: returns its part channel so the
    /// caller can close it. A retired ID is forgotten for good.
    pub(crate) fn end_stream(&mut self, id: RequestId) -> Option<T::Parts> {
        if let Some(s) = self.streams.get_mut(&id) {
            s.ended = true;
            return s.parts.take();
        }
        if let Some(at) = self.retired.iter().position(|r| *r == id) {
            self.retired.remove(at);
        }
        None
    }

    /// The handler for the peer's request `id` finished.
    pub(crate) fn finish(&mut self, id: RequestId, stream: bool) {
        self.inbound_requests = self.inbound_requests.saturating_sub(1);
        if stream {
            self.inbound_streams = self.inbound_streams.saturating_sub(1);
            match self.streams.remove(&id) {
                Some(s) => {
                    self.unstall(&s.flow);
                    // Answered before the requester ended its stream: its
                    // parts may still arrive.
                    if !s.ended {
                        self.retire(id);
                    }
                }
                // Never opened (unknown operation): parts may still arrive.
                None => self.retire(id),
            }
        }
    }

    fn retire(&mut self, id: RequestId) {
        if self.retired.len() == RETIRED_STREAMS {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
    }

    fn flow_mut(&mut self, at: StreamRef) -> Option<&mut Flow> {
        let flow = match at.direction {
            Direction::Inbound => self.streams.get_mut(&at.id).map(|s| &mut s.flow),
            Direction::Outbound => match self.outbound.get_mut(&at.id) {
                Some(Outbound::Stream { flow, .. }) => Some(flow),
                _ => None,
            },
        };
        // Gone, or a later stream under the same ID: nothing to count.
        flow.filter(|f| f.serial == at.serial)
    }

    /// One more part handed to the consumer of stream `at`.
    pub(crate) fn queue_part(&mut self, at: StreamRef) {
        let limit = self.part_limit;
        if let Some(flow) = self.flow_mut(at) {
            flow.queued += 1;
            if flow.queued == limit {
                self.stalled += 1;
            }
        }
    }

    /// The consumer of stream `at` took a part.
    pub(crate) fn part_taken(&mut self, at: StreamRef) {
        let limit = self.part_limit;
        let Some(flow) = self.flow_mut(at).filter(|f| f.queued > 0) else {
            return;
        };
        let was_stalled = flow.queued == limit;
        flow.queued -= 1;
        if was_stalled {
            self.stalled -= 1;
        }
    }

    fn unstall(&mut self, flow: &Flow) {
        if flow.queued >= self.part_limit {
            self.stalled -= 1;
        }
    }

    /// The flow reference of our stream request `id`.
    pub(crate) fn outbound_ref(id: RequestId, flow: &Flow) -> StreamRef {
        StreamRef {
            id,
            direction: Direction::Outbound,
            serial: flow.serial,
        }
    }

    /// Empties both tables, handing back everything still waiting.
    #[allow(clippy::type_complexity)]
    pub(crate) fn drain(&mut self) -> (Vec<Outbound<T>>, Vec<T::Parts>) {
        let outbound = self.outbound.drain().map(|(_, p)| p).collect();
        let streams = self.streams.drain().filter_map(|(_, s)| s.parts).collect();
        self.stalled = 0;
        (outbound, streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Test;
    impl Tokens for Test {
        type Caller = &'static str;
        type Reader = u8;
        type Parts = u8;
    }

    type T = Tables<Test>;

    /// How many of 64 buckets `ids` use, a bucket being a hash's low bits
    /// (as hashbrown takes them).
    fn buckets_used(ids: impl IntoIterator<Item = RequestId>) -> usize {
        use std::hash::BuildHasher;
        let hasher = BuildHasherDefault::<IdHasher>::default();
        ids.into_iter()
            .map(|id| hasher.hash_one(id) & 63)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Spread, not perfect: 36 × 36 or 256 random hashes would leave about
    /// 1 of 64 buckets empty; without the fold in `finish`, the first and
    /// the last set take one bucket each.
    #[test]
    fn ids_that_differ_in_their_last_bytes_spread_over_buckets() {
        // gotalk.js's base-36 IDs: the first three bytes stay `000` for
        // 36 requests, `00` for 1 296.
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let js = digits.iter().flat_map(|&c| {
            digits
                .iter()
                .map(move |&d| RequestId::new([b'0', b'0', c, d]))
        });
        let used = buckets_used(js);
        assert!(used >= 48, "{used} of 64 buckets");
        // Our own counter, little-endian: its low byte moves first.
        let ours = buckets_used((0..1024).map(RequestId::from_u32));
        assert!(ours >= 48, "{ours} of 64 buckets");
        // Only the top byte differing.
        let top = buckets_used((0..=255u32).map(|n| RequestId::from_u32(n << 24)));
        assert!(top >= 40, "{top} of 64 buckets");
    }

    fn id(n: u32) -> RequestId {
        RequestId::from_u32(n)
    }

    fn buffer(name: &'static str) -> Outbound<Test> {
        Outbound::Buffer {
            caller: name,
            collected: None,
            charge: Charge::NONE,
        }
    }

    #[test]
    fn ids_are_a_little_endian_counter() {
        let mut s = T::new(10, 10, 4);
        assert_eq!(
            s.register_outbound(buffer("a")),
            RequestId::new([0, 0, 0, 0])
        );
        assert_eq!(
            s.register_outbound(buffer("b")),
            RequestId::new([1, 0, 0, 0])
        );
        assert_eq!(s.outbound_len(), 2);
        assert!(s.remove_outbound(id(0)).is_some());
        assert!(s.remove_outbound(id(0)).is_none());
    }

    #[test]
    fn ids_in_flight_are_never_reused_after_wrap() {
        let mut s = T::new(10, 10, 4);
        s.register_outbound(buffer("zero"));
        s.next_id = u32::MAX;
        assert_eq!(s.register_outbound(buffer("max")), id(u32::MAX));
        // the counter wraps to 0, which is in flight, so 1 is next
        assert_eq!(s.register_outbound(buffer("next")), id(1));
    }

    #[test]
    fn admission_limits() {
        let mut s = T::new(2, 1, 4);
        assert_eq!(s.admit(id(1), true, true), Admission::Accepted);
        assert_eq!(s.admit(id(1), true, true), Admission::DuplicateStream);
        assert_eq!(s.admit(id(2), true, true), Admission::RateLimited);
        assert_eq!(s.admit(id(3), false, true), Admission::Accepted);
        assert_eq!(s.admit(id(4), false, true), Admission::RateLimited);
        s.finish(id(3), false);
        assert_eq!(s.admit(id(4), false, true), Admission::Accepted);
        assert_eq!(s.inbound_len(), 2);
        assert_eq!(s.admit(id(5), false, false), Admission::Closing);
    }

    #[test]
    fn streams_disabled_and_refused_parts_are_dropped() {
        let mut s = T::new(10, 0, 4);
        assert_eq!(s.admit(id(9), true, true), Admission::StreamsDisabled);
        assert!(matches!(s.part_target(id(9)), PartTarget::Retired));
        assert!(matches!(s.part_target(id(8)), PartTarget::Unknown));
        // the requester's end of stream forgets the retired ID
        assert_eq!(s.end_stream(id(9)), None);
        assert!(matches!(s.part_target(id(9)), PartTarget::Unknown));
    }

    #[test]
    fn stream_lifecycle() {
        let mut s = T::new(10, 10, 4);
        assert_eq!(s.admit(id(1), true, true), Admission::Accepted);
        s.open_stream(id(1), 42);
        assert!(matches!(s.part_target(id(1)), PartTarget::Stream(st) if st.parts == Some(42)));
        assert_eq!(s.end_stream(id(1)), Some(42));
        // a part after the end is a violation, and the ID is still in flight
        assert!(matches!(s.part_target(id(1)), PartTarget::Unknown));
        assert_eq!(s.admit(id(1), true, true), Admission::DuplicateStream);
        s.finish(id(1), true);
        assert_eq!(s.admit(id(1), true, true), Admission::Accepted);
    }

    #[test]
    fn answered_before_end_retires_the_stream() {
        let mut s = T::new(10, 10, 4);
        s.admit(id(5), true, true);
        s.open_stream(id(5), 1);
        s.finish(id(5), true);
        assert!(matches!(s.part_target(id(5)), PartTarget::Retired));
    }

    #[test]
    fn retired_ring_is_bounded() {
        let mut s = T::new(10, 0, 4);
        for n in 0..(RETIRED_STREAMS as u32 + 10) {
            s.admit(id(n), true, true);
        }
        assert_eq!(s.retired.len(), RETIRED_STREAMS);
        assert!(matches!(s.part_target(id(0)), PartTarget::Unknown));
    }

    #[test]
    fn a_stream_at_its_part_limit_stalls_until_a_part_is_taken() {
        let mut s = T::new(10, 10, 2);
        s.admit(id(1), true, true);
        let at = s.inbound_ref(id(1)).unwrap();
        for _ in 0..3 {
            s.queue_part(at);
        }
        assert!(s.is_stalled());
        s.part_taken(at);
        assert!(s.is_stalled(), "3 queued, limit 2");
        s.part_taken(at);
        assert!(!s.is_stalled());
        // a stream removed while stalled does not leave the count behind
        s.queue_part(at);
        s.queue_part(at);
        assert!(s.is_stalled());
        s.finish(id(1), true);
        assert!(!s.is_stalled());
    }

    #[test]
    fn credits_of_a_finished_stream_do_not_count_for_its_successor() {
        let mut s = T::new(10, 10, 1);
        s.admit(id(1), true, true);
        let old = s.inbound_ref(id(1)).unwrap();
        s.queue_part(old);
        s.end_stream(id(1));
        s.finish(id(1), true);
        assert!(!s.is_stalled());
        s.admit(id(1), true, true);
        let new = s.inbound_ref(id(1)).unwrap();
        s.queue_part(new);
        assert!(s.is_stalled());
        s.part_taken(old);
        assert!(s.is_stalled(), "the old stream's credit is ignored");
        s.part_taken(new);
        assert!(!s.is_stalled());
    }
}
