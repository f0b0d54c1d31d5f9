//! Connection state with no I/O: request IDs, the tables of requests in
//! flight in both directions, and admission of the peer's requests.
//!
//! The driver and the [`Peer`](crate::Peer) handles share one `ConnState`
//! behind a mutex; every decision about what a message means for the
//! connection is made here, and unit-tested here, without a socket.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
};

use gotalk_proto::RequestId;

/// Remembered IDs of streams we refused or finished before the requester
/// ended them: their late parts are dropped instead of treated as violations.
const RETIRED_STREAMS: usize = 1024;

/// Request IDs are our own counter or four opaque bytes: hash them with one
/// multiply instead of SipHash (the tables are bounded by the limits, so
/// flooding them with colliding IDs costs the peer as much as us).
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
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

/// Where a stream request part goes.
#[derive(Debug)]
pub(crate) enum PartTarget<'a, S> {
    /// To this open stream.
    Stream(&'a S),
    /// A stream we refused or already finished: drop the part.
    Retired,
    /// No such stream, or a part after its end: ProtocolError 2.
    Unknown,
}

/// An inbound stream request in flight.
#[derive(Debug)]
struct InboundStream<S> {
    /// Delivers parts to the handler; `None` once the requester ended it.
    parts: Option<S>,
}

/// Connection state. `P` is what we keep per outbound request (how to reach
/// the caller), `S` what we keep per inbound stream (how to reach its
/// handler); the state machine never looks inside them.
#[derive(Debug)]
pub(crate) struct ConnState<P, S> {
    next_id: u32,
    outbound: IdMap<P>,
    streams: IdMap<InboundStream<S>>,
    retired: VecDeque<RequestId>,
    inbound_requests: usize,
    inbound_streams: usize,
    max_requests: usize,
    max_streams: usize,
    accepting: bool,
    closed: bool,
}

impl<P, S> ConnState<P, S> {
    pub(crate) fn new(max_requests: usize, max_streams: usize) -> Self {
        Self {
            next_id: 0,
            outbound: IdMap::default(),
            streams: IdMap::default(),
            retired: VecDeque::new(),
            inbound_requests: 0,
            inbound_streams: 0,
            max_requests,
            max_streams,
            accepting: true,
            closed: false,
        }
    }

    /// True once the connection is closed: nothing new is registered.
    #[cfg(test)]
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// True while new outbound requests and inbound requests are taken.
    pub(crate) fn is_accepting(&self) -> bool {
        self.accepting && !self.closed
    }

    /// Registers an outbound request under a fresh ID: the Go scheme, a
    /// per-connection counter sent as four little-endian bytes, skipping any
    /// ID still in flight after the counter wraps. `None` when closing.
    pub(crate) fn register_outbound(&mut self, pending: P) -> Option<RequestId> {
        if !self.is_accepting() {
            return None;
        }
        loop {
            let id = RequestId::from_u32(self.next_id);
            self.next_id = self.next_id.wrapping_add(1);
            if let std::collections::hash_map::Entry::Vacant(slot) = self.outbound.entry(id) {
                slot.insert(pending);
                return Some(id);
            }
        }
    }

    /// The outbound request `id`, if it is still waiting.
    pub(crate) fn outbound(&mut self, id: RequestId) -> Option<&mut P> {
        self.outbound.get_mut(&id)
    }

    /// Forgets the outbound request `id` (answered, cancelled or timed out).
    pub(crate) fn remove_outbound(&mut self, id: RequestId) -> Option<P> {
        self.outbound.remove(&id)
    }

    /// Outbound requests still waiting for a result.
    pub(crate) fn outbound_len(&self) -> usize {
        self.outbound.len()
    }

    /// Inbound requests whose handlers are still running.
    pub(crate) fn inbound_len(&self) -> usize {
        self.inbound_requests
    }

    /// Decides whether to run the handler for the peer's request `id`.
    pub(crate) fn admit(&mut self, id: RequestId, stream: bool) -> Admission {
        if stream && self.streams.contains_key(&id) {
            return Admission::DuplicateStream;
        }
        if !self.is_accepting() {
            return self.refuse(id, stream, Admission::Closing);
        }
        if stream && self.max_streams == 0 {
            return self.refuse(id, stream, Admission::StreamsDisabled);
        }
        if self.inbound_requests >= self.max_requests
            || (stream && self.inbound_streams >= self.max_streams)
        {
            return self.refuse(id, stream, Admission::RateLimited);
        }
        self.inbound_requests += 1;
        if stream {
            self.inbound_streams += 1;
        }
        Admission::Accepted
    }

    fn refuse(&mut self, id: RequestId, stream: bool, why: Admission) -> Admission {
        if stream {
            // The requester keeps sending parts until it reads our answer.
            self.retire(id);
        }
        why
    }

    /// Opens the part channel of an admitted stream request.
    pub(crate) fn open_stream(&mut self, id: RequestId, parts: S) {
        self.streams
            .insert(id, InboundStream { parts: Some(parts) });
    }

    /// Where a `p` part for stream `id` goes.
    pub(crate) fn part_target(&self, id: RequestId) -> PartTarget<'_, S> {
        match self.streams.get(&id) {
            Some(InboundStream { parts: Some(s) }) => PartTarget::Stream(s),
            Some(InboundStream { parts: None }) => PartTarget::Unknown,
            None if self.retired.contains(&id) => PartTarget::Retired,
            None => PartTarget::Unknown,
        }
    }

    /// The requester ended stream `id` (empty `p`): returns its part channel
    /// so the caller can close it. A retired ID is forgotten for good.
    pub(crate) fn end_stream(&mut self, id: RequestId) -> Option<S> {
        if let Some(stream) = self.streams.get_mut(&id) {
            return stream.parts.take();
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
                // The requester ended its stream: nothing more will come.
                Some(InboundStream { parts: None }) => {}
                // Answered before the requester ended its stream, or never
                // opened (unknown operation): its parts may still arrive.
                _ => self.retire(id),
            }
        }
    }

    fn retire(&mut self, id: RequestId) {
        if self.retired.len() == RETIRED_STREAMS {
            self.retired.pop_front();
        }
        self.retired.push_back(id);
    }

    /// Graceful close: refuse new work, let what is in flight finish.
    pub(crate) fn stop_accepting(&mut self) {
        self.accepting = false;
    }

    /// Marks the connection closed and hands back everything still waiting,
    /// so the caller can tell each waiter why.
    pub(crate) fn close(&mut self) -> (Vec<P>, Vec<S>) {
        self.accepting = false;
        self.closed = true;
        let outbound = self.outbound.drain().map(|(_, p)| p).collect();
        let streams = self.streams.drain().filter_map(|(_, s)| s.parts).collect();
        (outbound, streams)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type State = ConnState<&'static str, u8>;

    fn id(n: u32) -> RequestId {
        RequestId::from_u32(n)
    }

    #[test]
    fn ids_are_a_little_endian_counter() {
        let mut s = State::new(10, 10);
        assert_eq!(s.register_outbound("a"), Some(RequestId::new([0, 0, 0, 0])));
        assert_eq!(s.register_outbound("b"), Some(RequestId::new([1, 0, 0, 0])));
        assert_eq!(s.outbound_len(), 2);
        assert_eq!(s.remove_outbound(id(0)), Some("a"));
        assert_eq!(s.remove_outbound(id(0)), None);
    }

    #[test]
    fn ids_in_flight_are_never_reused_after_wrap() {
        let mut s = State::new(10, 10);
        s.register_outbound("zero");
        s.next_id = u32::MAX;
        assert_eq!(s.register_outbound("max"), Some(id(u32::MAX)));
        // the counter wraps to 0, which is in flight, so 1 is next
        assert_eq!(s.register_outbound("next"), Some(id(1)));
    }

    #[test]
    fn admission_limits() {
        let mut s = State::new(2, 1);
        assert_eq!(s.admit(id(1), true), Admission::Accepted);
        s.open_stream(id(1), 7);
        assert_eq!(s.admit(id(1), true), Admission::DuplicateStream);
        assert_eq!(s.admit(id(2), true), Admission::RateLimited);
        assert_eq!(s.admit(id(3), false), Admission::Accepted);
        assert_eq!(s.admit(id(4), false), Admission::RateLimited);
        s.finish(id(3), false);
        assert_eq!(s.admit(id(4), false), Admission::Accepted);
        assert_eq!(s.inbound_len(), 2);
    }

    #[test]
    fn streams_disabled_and_refused_parts_are_dropped() {
        let mut s = State::new(10, 0);
        assert_eq!(s.admit(id(9), true), Admission::StreamsDisabled);
        assert!(matches!(s.part_target(id(9)), PartTarget::Retired));
        assert!(matches!(s.part_target(id(8)), PartTarget::Unknown));
        // the requester's end of stream forgets the retired ID
        assert_eq!(s.end_stream(id(9)), None);
        assert!(matches!(s.part_target(id(9)), PartTarget::Unknown));
    }

    #[test]
    fn stream_lifecycle() {
        let mut s = State::new(10, 10);
        assert_eq!(s.admit(id(1), true), Admission::Accepted);
        s.open_stream(id(1), 42);
        assert!(matches!(s.part_target(id(1)), PartTarget::Stream(&42)));
        assert_eq!(s.end_stream(id(1)), Some(42));
        // a part after the end is a violation, and the ID is still in flight
        assert!(matches!(s.part_target(id(1)), PartTarget::Unknown));
        assert_eq!(s.admit(id(1), true), Admission::DuplicateStream);
        s.finish(id(1), true);
        assert_eq!(s.admit(id(1), true), Admission::Accepted);
    }

    #[test]
    fn answered_before_end_retires_the_stream() {
        let mut s = State::new(10, 10);
        s.admit(id(5), true);
        s.open_stream(id(5), 1);
        s.finish(id(5), true);
        assert!(matches!(s.part_target(id(5)), PartTarget::Retired));
    }

    #[test]
    fn retired_ring_is_bounded() {
        let mut s = State::new(10, 0);
        for n in 0..(RETIRED_STREAMS as u32 + 10) {
            s.admit(id(n), true);
        }
        assert_eq!(s.retired.len(), RETIRED_STREAMS);
        assert!(matches!(s.part_target(id(0)), PartTarget::Unknown));
    }

    #[test]
    fn closing_refuses_and_close_drains() {
        let mut s = State::new(10, 10);
        s.register_outbound("a");
        s.admit(id(1), true);
        s.open_stream(id(1), 3);
        s.stop_accepting();
        assert_eq!(s.admit(id(2), false), Admission::Closing);
        assert_eq!(s.register_outbound("b"), None);
        let (outbound, streams) = s.close();
        assert_eq!((outbound, streams), (vec!["a"], vec![3]));
        assert!(s.is_closed());
    }
}
