//! Stream lifecycles both ways, and result assembly under the payload limit.

use std::time::Duration;

use bytes::Bytes;
use gotalk_proto::Message;

use super::{
    MS, config, id,
    pair::{Item, OnRequest, Pair},
};
use crate::{
    Config, Error,
    core::{Outcome, Reply},
};

#[test]
fn a_stream_request_echoed_part_by_part() {
    let mut p = Pair::new(&config());
    let (stream, stream_id) = p.a.stream_request("echo");
    for part in [&b"ab"[..], b"cd", b"ef"] {
        p.a.part(stream_id, part);
        p.step();
    }
    assert_eq!(p.a.data_of(stream), (b"abcdef".to_vec(), false));
    p.a.part(stream_id, b"");
    p.step();
    assert_eq!(p.a.data_of(stream), (b"abcdef".to_vec(), true));
    let handler = &p.b.inbound[&stream_id];
    assert!(handler.ended);
    assert_eq!(handler.parts, [&b"ab"[..], b"cd", b"ef"]);
    for side in [&p.a, &p.b] {
        let s = side.core.stats();
        assert_eq!(
            (s.outbound, s.inbound, s.open_streams, s.retired),
            (0, 0, 0, 0)
        );
    }
}

#[test]
fn the_request_stream_ends_before_the_answer() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (stream, stream_id) = p.a.stream_request("op");
    p.a.part(stream_id, b"in");
    p.a.part(stream_id, b"");
    p.step();
    assert!(p.b.inbound[&stream_id].ended);
    assert_eq!(p.b.core.stats().open_streams, 1, "open until answered");
    p.b.core
        .send_result_part(stream_id, Bytes::from_static(b"out"))
        .unwrap();
    p.step();
    assert_eq!(p.a.data_of(stream), (b"out".to_vec(), false));
    p.b.answer(stream_id, Reply::EndOfStream);
    p.step();
    assert_eq!(p.a.data_of(stream), (b"out".to_vec(), true));
    let s = p.b.core.stats();
    assert_eq!((s.open_streams, s.inbound_streams, s.retired), (0, 0, 0));
    // The ID is free again.
    p.b.inject(&Message::StreamRequest {
        id: stream_id,
        op: "op".into(),
        payload: &[],
    });
    p.step();
    assert!(p.b.closed.is_none());
    assert_eq!(p.b.core.stats().open_streams, 1);
}

#[test]
fn the_answer_comes_before_the_request_stream_ends() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (stream, stream_id) = p.a.stream_request("op");
    p.a.part(stream_id, b"a");
    p.step();
    p.b.answer(stream_id, Reply::Value(Bytes::from_static(b"early")));
    p.step();
    assert_eq!(p.a.data_of(stream), (b"early".to_vec(), true));
    assert_eq!(p.a.core.stats().outbound, 0);
    // The requester still sends until it reads the answer.
    p.a.part(stream_id, b"b");
    p.a.part(stream_id, b"");
    p.step();
    assert_eq!(p.b.inbound[&stream_id].parts, [&b"a"[..]]);
    assert!(!p.b.inbound[&stream_id].ended, "the handler is gone");
    assert!(p.b.closed.is_none());
    assert_eq!(p.b.core.stats().retired, 0);
}

#[test]
fn an_empty_single_result_just_ends_a_result_stream() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (stream, stream_id) = p.a.stream_request("op");
    p.step();
    p.b.answer(stream_id, Reply::Value(Bytes::new()));
    p.step();
    assert!(matches!(p.a.items_of(stream), [Item::End]));
}

#[test]
fn a_first_part_in_the_stream_request_is_delivered() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    p.b.inject(&Message::StreamRequest {
        id: id(40),
        op: "op".into(),
        payload: &b"first"[..],
    });
    p.b.inject(&Message::StreamRequestPart {
        id: id(40),
        payload: &b"second"[..],
    });
    p.step();
    assert_eq!(
        p.b.requests,
        [(id(40), "op".into(), Bytes::from_static(b"first"))]
    );
    assert_eq!(p.b.inbound[&id(40)].parts, [&b"first"[..], b"second"]);
}

#[test]
fn an_error_ends_a_result_stream() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (stream, stream_id) = p.a.stream_request("op");
    p.step();
    p.b.core
        .send_result_part(stream_id, Bytes::from_static(b"x"))
        .unwrap();
    p.b.answer(stream_id, Reply::Error(Bytes::from_static(b"bad")));
    p.step();
    assert!(matches!(
        p.a.items_of(stream),
        [Item::Data(d), Item::Failed(Error::Remote(e))] if d == "x" && e.message() == "bad"
    ));
    assert_eq!(p.a.core.stats().outbound, 0);
}

#[test]
fn a_retry_ends_a_result_stream() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Retry(250 * MS);
    let (stream, _) = p.a.stream_request("op");
    p.step();
    assert!(matches!(
        p.a.items_of(stream),
        [Item::Failed(Error::RetryExhausted { attempts: 1, wait, message })]
            if *wait == Duration::from_millis(250) && message == "busy"
    ));
}

#[test]
fn a_buffer_request_collects_a_streamed_result() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", b"");
    p.step();
    for part in ["ab", "cd"] {
        p.b.core.send_result_part(call_id, part.into()).unwrap();
        p.step();
        assert!(p.a.is_waiting(call));
    }
    p.b.answer(call_id, Reply::EndOfStream);
    p.step();
    assert_eq!(p.a.value_of(call), Bytes::from_static(b"abcd"));
}

/// A buffer request of A (max_payload 10) answered with result parts.
fn collected(parts: &[&str]) -> Result<Outcome, Error> {
    let a = Config {
        max_payload: 10,
        ..config()
    };
    let mut p = Pair::with(&a, &config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", b"");
    p.step();
    for part in parts {
        p.b.core
            .send_result_part(call_id, Bytes::copy_from_slice(part.as_bytes()))
            .unwrap();
    }
    p.b.answer(call_id, Reply::EndOfStream);
    p.step();
    assert!(p.a.closed.is_none());
    p.a.answers.remove(&call).expect("answered")
}

#[test]
fn a_collected_result_over_max_payload_is_result_too_large() {
    assert_eq!(
        collected(&["12345", "67890"]).unwrap(),
        Outcome::Value("1234567890".into())
    );
    assert!(matches!(
        collected(&["123456", "78901"]),
        Err(Error::ResultTooLarge { limit: 10 })
    ));
    assert!(matches!(
        collected(&["1234567890", "x"]),
        Err(Error::ResultTooLarge { limit: 10 })
    ));
}

#[test]
fn a_buffer_request_answered_with_an_error_after_parts_drops_them() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", b"");
    p.step();
    p.b.core.send_result_part(call_id, "part".into()).unwrap();
    p.b.answer(call_id, Reply::Error("no".into()));
    p.step();
    assert_eq!(
        p.a.answer_of(call).as_ref().unwrap(),
        &Outcome::Error("no".into())
    );
}

#[test]
fn results_for_calls_no_longer_waiting_are_dropped() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (call, _) = p.a.request("op", b"");
    let (stream, _) = p.a.stream_request("op");
    p.step();
    p.a.cancel(call);
    p.a.cancel(stream);
    p.b.answer_all();
    p.step();
    assert!(p.a.answers.is_empty() && p.a.results.is_empty());
    assert!(p.a.closed.is_none());
}

#[test]
fn a_stream_may_stream_both_ways_at_once() {
    let mut p = Pair::new(&config());
    let (stream, stream_id) = p.a.stream_request("echo");
    let mut sent = Vec::new();
    for n in 0..50u8 {
        let part = [n; 3];
        sent.extend_from_slice(&part);
        p.a.part(stream_id, &part);
        if n % 7 == 0 {
            p.step();
        }
    }
    p.a.part(stream_id, b"");
    p.step();
    assert_eq!(p.a.data_of(stream), (sent, true));
}

#[test]
fn a_handler_may_fail_a_stream_request_at_once() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Error;
    let (stream, stream_id) = p.a.stream_request("op");
    p.a.part(stream_id, b"dropped");
    p.a.part(stream_id, b"");
    p.step();
    assert!(matches!(
        p.a.items_of(stream),
        [Item::Failed(Error::Remote(e))] if e.message() == "no"
    ));
    assert!(p.b.inbound[&stream_id].parts.is_empty());
    let s = p.b.core.stats();
    assert_eq!((s.inbound, s.open_streams, s.retired), (0, 0, 0));
    assert!(p.b.closed.is_none());
}
