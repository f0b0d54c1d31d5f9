//! Graceful and immediate close, and a closed core's silence.

use bytes::Bytes;
use gotalk_proto::{DecodeError, Message, ProtocolErrorCode};

use super::{
    MS, NS, config, id, is_protocol_error,
    pair::{Item, OnRequest, Pair},
};
use crate::{
    CloseReason, Config, Error, Violation,
    core::{Charge, CloseMode, Outcome, Reply},
};

fn is_closed(e: &Error, local: bool) -> bool {
    match e {
        Error::Closed(CloseReason::Local) => local,
        Error::Closed(CloseReason::PeerClosed) => !local,
        _ => false,
    }
}

#[test]
fn a_graceful_close_with_nothing_in_flight_closes_at_once() {
    let mut p = Pair::new(&config());
    let now = p.now();
    p.a.close(now, CloseMode::Graceful);
    assert!(matches!(p.a.closed(), CloseReason::Local));
    p.step();
    assert!(matches!(p.b.closed(), CloseReason::PeerClosed));
}

#[test]
fn a_graceful_close_refuses_new_requests_and_lets_those_in_flight_finish_both_ways() {
    let mut p = Pair::new(&config());
    p.a.on_request = OnRequest::Hold;
    p.b.on_request = OnRequest::Hold;
    let (ours, ours_id) = p.a.request("ours", b"1");
    let (theirs, theirs_id) = p.b.request("theirs", b"2");
    p.step();
    let now = p.now();
    p.a.close(now, CloseMode::Graceful);
    assert!(p.a.closed.is_none() && !p.a.core.is_accepting());

    // New requests of ours fail at once.
    assert!(matches!(
        p.a.core.request("late", &Bytes::new(), 99),
        Err(Error::Closed(CloseReason::Local))
    ));
    assert!(p.a.core.stream_request("late", 99).is_err());
    // Theirs are refused with `connection closing`, wait 0.
    let (late, _) = p.b.request("late", b"");
    let (late_stream, late_stream_id) = p.b.stream_request("late");
    p.b.part(late_stream_id, b"dropped");
    p.step();
    assert!(p.a.is_waiting(ours));
    assert_eq!(
        p.b.answer_of(late).as_ref().unwrap(),
        &Outcome::Retry {
            wait_ms: 0,
            payload: Bytes::from_static(b"connection closing")
        }
    );
    assert!(matches!(
        p.b.items_of(late_stream),
        [Item::Failed(Error::RetryExhausted { attempts: 1, message, .. })] if message == "connection closing"
    ));
    assert_eq!(p.a.requests.len(), 1, "no handler ran for the late ones");
    // Notifications still go both ways.
    p.b.notify("still", b"");
    p.a.notify("still", b"");
    p.step();
    assert_eq!(p.a.notifications.len(), 1);
    assert_eq!(p.b.notifications.len(), 1);

    // Theirs finishes: we stay open for ours.
    p.a.answer(theirs_id, Reply::Value(Bytes::from_static(b"two")));
    p.step();
    assert_eq!(p.b.value_of(theirs), Bytes::from_static(b"two"));
    assert!(p.a.closed.is_none());
    // Ours finishes: idle, closed.
    p.b.answer(ours_id, Reply::Value(Bytes::from_static(b"one")));
    p.step();
    assert_eq!(p.a.value_of(ours), Bytes::from_static(b"one"));
    assert!(matches!(p.a.closed(), CloseReason::Local));
    assert!(matches!(p.b.closed(), CloseReason::PeerClosed));
}

#[test]
fn a_graceful_close_ends_at_the_close_deadline_exactly() {
    let cfg = Config {
        close_timeout: 1000 * MS,
        ..config()
    };
    let mut p = Pair::new(&cfg);
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("slow", b"");
    p.advance(5 * MS);
    let now = p.now();
    p.a.close(now, CloseMode::Graceful);
    assert_eq!(p.a.core.poll_timeout(), Some(now + 1000 * MS));
    p.advance(1000 * MS - NS);
    assert!(p.a.closed.is_none(), "not before the deadline");
    p.advance(NS);
    assert!(matches!(p.a.closed(), CloseReason::Local));
    assert!(is_closed(p.a.answer_of(call).as_ref().unwrap_err(), true));
    assert!(matches!(p.b.closed(), CloseReason::PeerClosed));
    // The late answer goes nowhere (the pair checks nothing is sent).
    p.b.answer(call_id, Reply::Value(Bytes::new()));
    p.step();
}

#[test]
fn closing_twice_keeps_the_first_deadline() {
    let cfg = Config {
        close_timeout: 100 * MS,
        ..config()
    };
    let mut p = Pair::new(&cfg);
    p.b.on_request = OnRequest::Hold;
    p.a.request("slow", b"");
    p.step();
    let first = p.now();
    p.a.close(first, CloseMode::Graceful);
    p.advance(50 * MS);
    let now = p.now();
    p.a.close(now, CloseMode::Graceful);
    assert_eq!(p.a.core.poll_timeout(), Some(first + 100 * MS));
}

#[test]
fn cancelling_the_last_call_completes_a_graceful_close() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (call, _) = p.a.request("slow", b"");
    p.step();
    let now = p.now();
    p.a.close(now, CloseMode::Graceful);
    assert!(p.a.closed.is_none());
    p.a.cancel(call);
    assert!(matches!(p.a.closed(), CloseReason::Local));
    assert!(
        !p.a.answers.contains_key(&call),
        "a cancelled call hears nothing"
    );
}

#[test]
fn a_graceful_close_refuses_with_an_error_result_for_a_peer_without_retry_results() {
    let a = Config {
        remote_retry_results: false,
        ..config()
    };
    let mut p = Pair::with(&a, &config());
    p.b.on_request = OnRequest::Hold;
    p.a.request("keeps A open", b"");
    p.step();
    let now = p.now();
    p.a.close(now, CloseMode::Graceful);
    let (late, _) = p.b.request("late", b"");
    p.step();
    assert_eq!(
        p.b.answer_of(late).as_ref().unwrap(),
        &Outcome::Error(Bytes::from_static(b"connection closing"))
    );
}

#[test]
fn an_immediate_close_fails_every_waiter() {
    let mut p = Pair::new(&config());
    p.a.on_request = OnRequest::Hold;
    p.b.on_request = OnRequest::Hold;
    let (call, _) = p.a.request("ours", b"");
    let (stream, _) = p.a.stream_request("ours");
    let (their_call, _) = p.b.request("theirs", &[b'x'; 5000]);
    let (their_stream, their_stream_id) = p.b.stream_request("theirs");
    p.step();
    assert_eq!(p.a.core.stats().buffered_bytes, 5000);
    let now = p.now();
    p.a.close(now, CloseMode::Immediate);
    assert!(matches!(p.a.closed(), CloseReason::Local));
    assert!(is_closed(p.a.answer_of(call).as_ref().unwrap_err(), true));
    assert!(matches!(p.a.items_of(stream), [Item::Failed(e)] if is_closed(e, true)));
    assert_eq!(
        p.a.aborted,
        [their_stream_id],
        "the handler's channel is dropped"
    );
    assert_eq!(p.a.core.stats().outbound, 0);
    p.step();
    assert!(matches!(p.b.closed(), CloseReason::PeerClosed));
    assert!(is_closed(
        p.b.answer_of(their_call).as_ref().unwrap_err(),
        false
    ));
    assert!(matches!(p.b.items_of(their_stream), [Item::Failed(e)] if is_closed(e, false)));
    assert_eq!(p.b.aborted.len(), 1);
    // Handlers that finish after the close give their charges back and
    // send nothing.
    p.a.answer_all();
    p.b.answer_all();
    p.step();
    assert_eq!(p.a.core.stats().buffered_bytes, 0);
}

#[test]
fn the_peers_protocol_error_closes_and_fails_waiters() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (call, _) = p.a.request("op", b"");
    p.step();
    p.a.inject_raw(b"f00000002");
    p.step();
    let code = ProtocolErrorCode::InvalidMessage;
    assert!(matches!(p.a.closed(), CloseReason::RemoteProtocolError { code: c } if *c == code));
    assert!(matches!(
        p.a.answer_of(call),
        Err(Error::Closed(CloseReason::RemoteProtocolError { .. }))
    ));
    assert!(
        !p.b.received
            .iter()
            .any(|m| matches!(m, Message::ProtocolError { .. })),
        "nothing owed for a ProtocolError received"
    );
}

#[test]
fn a_closed_core_emits_nothing_more() {
    let mut p = Pair::new(&config());
    p.a.on_request = OnRequest::Hold;
    let (_, their) = p.b.request("theirs", b"");
    p.step();
    p.a.inject_raw(b"x123");
    p.step();
    assert!(matches!(
        p.a.closed(),
        CloseReason::ProtocolViolation {
            code: ProtocolErrorCode::InvalidMessage,
            violation: Violation::Malformed(DecodeError::UnknownMessageType { byte: b'x', .. })
        }
    ));
    assert!(is_protocol_error(
        p.b.last_received(),
        ProtocolErrorCode::InvalidMessage
    ));
    assert_eq!(
        p.b.received
            .iter()
            .filter(|m| matches!(m, Message::ProtocolError { .. }))
            .count(),
        1,
        "the ProtocolError is sent once"
    );

    // Every command fails or does nothing; no event, no byte, no deadline.
    let now = p.now();
    let core = &mut p.a.core;
    assert!(core.request("x", &Bytes::new(), 1).is_err());
    assert!(core.stream_request("x", 1).is_err());
    assert!(
        core.send_request_part(id(0), Bytes::from_static(b"p"))
            .is_err()
    );
    assert!(
        core.send_result_part(their, Bytes::from_static(b"p"))
            .is_err()
    );
    assert!(core.notify("x", &Bytes::new()).is_err());
    assert!(core.heartbeat(0, 0).is_err());
    core.unknown_operation(id(5), false, "x", Charge::NONE);
    core.cancel(id(0));
    core.handle_message(
        now,
        Message::SingleRequest {
            id: id(9),
            op: "op".into(),
            payload: Bytes::new(),
        },
    );
    core.handle_decode_error(DecodeError::Truncated {
        offset: 0,
        missing: 1,
    });
    core.handle_transport_closed(CloseReason::PeerClosed);
    core.handle_timeout(now + 1_000_000 * MS);
    core.close(now, CloseMode::Graceful);
    core.close(now, CloseMode::Immediate);
    assert!(!core.has_events() && !core.has_transmit());
    assert!(!core.wants_read() && !core.is_accepting());
    assert_eq!(core.poll_timeout(), None);
    p.a.answer(their, Reply::Value(Bytes::new()));
    p.step();
    assert!(matches!(
        p.a.closed(),
        CloseReason::ProtocolViolation { .. }
    ));
}
