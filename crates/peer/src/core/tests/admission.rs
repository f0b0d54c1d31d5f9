//! Admission of the peer's requests at each limit, and the stream-table
//! rules a hostile peer can break.

use bytes::Bytes;
use gotalk_proto::{Message, ProtocolErrorCode};

use super::{
    config, id, is_protocol_error,
    pair::{Item, OnRequest, Pair},
};
use crate::{
    CloseReason, Config, Error, Violation,
    core::{Outcome, Reply, tables::RETIRED_STREAMS},
};

fn rate_limited(outcome: &Result<Outcome, Error>) -> bool {
    matches!(outcome, Ok(Outcome::Retry { payload, .. }) if payload == "request rate limit")
}

fn limits(requests: usize, streams: usize) -> Config {
    Config {
        max_inbound_requests: requests,
        max_inbound_streams: streams,
        ..config()
    }
}

#[test]
fn requests_over_max_inbound_requests_get_request_rate_limit() {
    let mut p = Pair::with(&config(), &limits(2, 2));
    p.b.on_request = OnRequest::Hold;
    let calls: Vec<_> = (0..3).map(|_| p.a.request("op", b"").0).collect();
    p.step();
    assert_eq!(p.b.held.len(), 2);
    assert_eq!(p.b.held[1].op, "op");
    assert_eq!(p.b.core.stats().inbound, 2);
    assert!(rate_limited(p.a.answer_of(calls[2])));
    // One finishes: the next is admitted.
    let first = p.b.held[0].id;
    p.b.answer(first, Reply::Value(Bytes::new()));
    let (next, _) = p.a.request("op", b"");
    p.step();
    assert!(p.a.is_waiting(next));
    assert_eq!(p.b.core.stats().inbound, 2);
}

#[test]
fn stream_requests_over_max_inbound_streams_get_stream_rate_limit() {
    let mut p = Pair::with(&config(), &limits(2, 1));
    p.b.on_request = OnRequest::Hold;
    let (_, open) = p.a.stream_request("op");
    let (refused, refused_id) = p.a.stream_request("op");
    p.step();
    assert!(matches!(
        p.a.items_of(refused),
        [Item::Failed(Error::RetryExhausted { attempts: 1, message, .. })] if message == "stream rate limit"
    ));
    assert_eq!(p.b.core.stats().inbound_streams, 1);
    // The refused stream's parts are dropped, its end forgets it.
    assert_eq!(p.b.core.stats().retired, 1);
    p.a.part(refused_id, b"dropped");
    p.step();
    assert!(p.b.closed.is_none());
    p.a.part(refused_id, b"");
    p.step();
    assert_eq!(p.b.core.stats().retired, 0);
    // Streams count toward max_inbound_requests too.
    let (single, _) = p.a.request("op", b"");
    let (over, _) = p.a.request("op", b"");
    p.step();
    assert!(p.a.is_waiting(single));
    assert!(rate_limited(p.a.answer_of(over)));
    assert_eq!(p.b.core.stats().inbound, 2);
    assert_eq!(p.b.inbound.len(), 1);
    assert!(p.b.inbound.contains_key(&open));
}

#[test]
fn stream_requests_are_refused_when_disabled() {
    let mut p = Pair::with(&config(), &limits(8, 0));
    let (stream, stream_id) = p.a.stream_request("op");
    p.a.part(stream_id, b"dropped");
    p.step();
    assert!(matches!(
        p.a.items_of(stream),
        [Item::Failed(Error::Remote(e))] if e.message() == "stream requests not supported"
    ));
    assert!(p.b.requests.is_empty(), "no handler ran");
    assert!(p.b.closed.is_none(), "the part was dropped");
    p.a.part(stream_id, b"");
    p.step();
    assert_eq!(p.b.core.stats().retired, 0, "the end forgot the ID");
    // Now the ID is unknown: another part is a violation.
    p.a.part(stream_id, b"late");
    p.step();
    assert!(matches!(
        p.b.closed(),
        CloseReason::ProtocolViolation {
            violation: Violation::UnknownStream(i),
            ..
        } if *i == stream_id
    ));
}

#[test]
fn a_stream_request_reusing_an_open_streams_id_is_protocol_error_2() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (stream, stream_id) = p.a.stream_request("op");
    p.step();
    p.b.inject(&Message::StreamRequest {
        id: stream_id,
        op: "again".into(),
        payload: &[],
    });
    p.step();
    assert!(matches!(
        p.b.closed(),
        CloseReason::ProtocolViolation {
            code: ProtocolErrorCode::InvalidMessage,
            violation: Violation::DuplicateStream(i),
        } if *i == stream_id
    ));
    assert_eq!(p.b.aborted, [stream_id]);
    assert_eq!(p.a.last_received().to_vec().unwrap(), b"f00000002");
    assert!(matches!(
        p.a.items_of(stream),
        [Item::Failed(Error::Closed(_))]
    ));
}

#[test]
fn a_single_request_may_reuse_an_open_streams_id() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (_, stream_id) = p.a.stream_request("op");
    p.step();
    p.b.inject(&Message::SingleRequest {
        id: stream_id,
        op: "single".into(),
        payload: &[],
    });
    p.step();
    assert!(p.b.closed.is_none());
    assert_eq!(p.b.held.len(), 2);
}

#[test]
fn a_part_for_an_unknown_stream_is_protocol_error_2() {
    let mut p = Pair::new(&config());
    p.b.inject(&Message::StreamRequestPart {
        id: id(77),
        payload: &b"?"[..],
    });
    p.step();
    assert!(matches!(
        p.b.closed(),
        CloseReason::ProtocolViolation {
            code: ProtocolErrorCode::InvalidMessage,
            violation: Violation::UnknownStream(i),
        } if *i == id(77)
    ));
    assert!(is_protocol_error(
        p.a.last_received(),
        ProtocolErrorCode::InvalidMessage
    ));
}

#[test]
fn a_part_after_the_requester_ended_its_stream_is_a_violation() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (_, stream_id) = p.a.stream_request("op");
    p.a.part(stream_id, b"");
    p.a.part(stream_id, b"after the end");
    p.step();
    assert!(matches!(
        p.b.closed(),
        CloseReason::ProtocolViolation {
            violation: Violation::UnknownStream(_),
            ..
        }
    ));
    assert!(
        p.b.aborted.is_empty(),
        "an ended stream has no channel left"
    );
}

#[test]
fn parts_of_a_stream_answered_before_its_end_are_dropped() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (_, stream_id) = p.a.stream_request("op");
    p.step();
    p.b.answer(stream_id, Reply::Error(Bytes::from_static(b"enough")));
    p.a.part(stream_id, b"late");
    p.step();
    assert!(p.b.closed.is_none());
    assert!(p.b.inbound[&stream_id].parts.is_empty());
    assert_eq!(p.b.core.stats().retired, 1);
    p.a.part(stream_id, b"");
    p.step();
    assert_eq!(p.b.core.stats().retired, 0);
}

#[test]
fn the_retired_ring_is_bounded_and_forgets_the_oldest() {
    let mut p = Pair::with(&config(), &limits(8, 0));
    let n = RETIRED_STREAMS as u32 + 100;
    for k in 0..n {
        p.b.inject(&Message::StreamRequest {
            id: id(1000 + k),
            op: "op".into(),
            payload: &[],
        });
    }
    p.step();
    assert_eq!(p.b.core.stats().retired, RETIRED_STREAMS);
    // The newest are remembered: their parts are dropped.
    p.b.inject(&Message::StreamRequestPart {
        id: id(1000 + n - 1),
        payload: &b"x"[..],
    });
    p.step();
    assert!(p.b.closed.is_none());
    // The oldest are forgotten: a part is a violation.
    p.b.inject(&Message::StreamRequestPart {
        id: id(1000),
        payload: &b"x"[..],
    });
    p.step();
    assert!(matches!(
        p.b.closed(),
        CloseReason::ProtocolViolation {
            violation: Violation::UnknownStream(_),
            ..
        }
    ));
}

#[test]
fn an_unknown_operation_gets_an_error_result() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Unknown;
    let (call, _) = p.a.request("nope", b"");
    let (stream, stream_id) = p.a.stream_request("nope");
    p.a.part(stream_id, b"dropped");
    p.step();
    assert_eq!(
        p.a.answer_of(call).as_ref().unwrap(),
        &Outcome::Error(Bytes::from_static(b"unknown operation \"nope\""))
    );
    assert!(matches!(
        p.a.items_of(stream),
        [Item::Failed(Error::Remote(e))] if e.message() == "unknown operation \"nope\""
    ));
    assert!(p.b.closed.is_none());
    assert_eq!(p.b.core.stats().inbound, 0);
}
