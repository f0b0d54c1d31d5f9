//! The byte budget and the other reasons reading pauses: every charge comes
//! back exactly, and reading resumes once what paused it is released.
//! (The pair itself checks after every event that `buffered_bytes` equals
//! the charges and credits the runtime holds.)

use bytes::Bytes;
use gotalk_proto::Message;

use super::{
    config,
    pair::{OnNotification, OnPart, OnRequest, Pair},
};
use crate::{
    Config,
    core::{CloseMode, Outcome, Reply},
};

fn budget(bytes: usize) -> Config {
    Config {
        max_buffered_bytes: bytes,
        ..config()
    }
}

#[test]
fn charges_are_returned_exactly() {
    let mut p = Pair::with(&config(), &budget(100_000));
    p.b.on_request = OnRequest::Hold;
    p.b.on_part = OnPart::Hold;
    p.b.on_notification = OnNotification::Hold;
    p.a.request("large", &[1; 5000]);
    p.a.request("small", &[2; 4095]);
    p.a.notify("large", &[3; 6000]);
    p.a.notify("small", &[4; 10]);
    let (_, stream) = p.a.stream_request("op");
    p.a.part(stream, &[5; 10]);
    p.a.part(stream, &[6; 20]);
    p.step();
    let charges: Vec<usize> = p.b.held.iter().map(|h| h.charge.bytes()).collect();
    assert_eq!(
        charges,
        [5000, 0, 0],
        "payloads under 4 KiB are not charged"
    );
    let credits: Vec<usize> =
        p.b.held_parts
            .iter()
            .map(|(_, _, c)| c.charge.bytes())
            .collect();
    assert_eq!(credits, [10, 20], "every part is charged");
    let notes: Vec<usize> = p.b.held_notifications.iter().map(|c| c.bytes()).collect();
    assert_eq!(notes, [6000, 0]);
    assert_eq!(p.b.core.stats().buffered_bytes, 11_030);
    p.b.take_parts();
    assert_eq!(p.b.core.stats().buffered_bytes, 11_000);
    p.b.finish_notifications();
    assert_eq!(p.b.core.stats().buffered_bytes, 5000);
    p.b.answer_all();
    assert_eq!(p.b.core.stats().buffered_bytes, 0);
}

#[test]
fn a_single_request_over_budget_gets_request_rate_limit() {
    let mut p = Pair::with(&config(), &budget(8192));
    p.b.on_request = OnRequest::Hold;
    let (held, held_id) = p.a.request("op", &[0; 5000]);
    let (refused, _) = p.a.request("op", &[0; 5000]);
    let (small, _) = p.a.request("op", &[0; 100]);
    p.step();
    assert!(matches!(
        p.a.answer_of(refused),
        Ok(Outcome::Retry { payload, .. }) if payload == "request rate limit"
    ));
    assert!(p.a.is_waiting(small), "small payloads are not charged");
    assert!(p.b.core.wants_read(), "a refusal does not pause reading");
    p.b.answer(held_id, Reply::Value(Bytes::new()));
    p.step();
    assert!(p.a.answers.contains_key(&held));
    // One payload larger than the whole budget is charged the budget.
    p.a.request("op", &[0; 20_000]);
    p.step();
    assert_eq!(p.b.held.last().unwrap().charge.bytes(), 8192);
    assert_eq!(p.b.core.stats().buffered_bytes, 8192);
    assert!(!p.b.core.wants_read(), "the budget is spent");
}

#[test]
fn reading_pauses_while_the_budget_is_spent() {
    let mut p = Pair::with(&config(), &budget(100));
    p.b.on_part = OnPart::Hold;
    let (_, stream) = p.a.stream_request("op");
    for n in 0..3 {
        p.a.part(stream, &[n; 60]);
    }
    p.step();
    assert_eq!(p.b.held_parts.len(), 2, "120 of 100 bytes: reading paused");
    assert!(!p.b.core.wants_read());
    assert_eq!(p.b.unread(), 13 + 60);
    p.b.take_one_part();
    assert!(p.b.core.wants_read());
    p.step();
    assert_eq!(p.b.held_parts.len(), 2);
    assert_eq!(p.b.unread(), 0);
    p.b.take_parts();
    assert_eq!(p.b.inbound[&stream].parts.len(), 3);
    assert_eq!(p.b.core.stats().buffered_bytes, 0);
}

#[test]
fn reading_pauses_while_a_request_stream_is_at_its_part_limit() {
    let b = Config {
        stream_buffer_parts: 2,
        ..config()
    };
    let mut p = Pair::with(&config(), &b);
    p.b.on_part = OnPart::Hold;
    let (_, stream) = p.a.stream_request("op");
    for n in 0..3 {
        p.a.part(stream, &[n]);
    }
    p.a.notify("behind", b"");
    p.step();
    assert_eq!(p.b.held_parts.len(), 2);
    assert!(!p.b.core.wants_read());
    assert!(
        p.b.notifications.is_empty(),
        "nothing behind is read either"
    );
    p.b.take_one_part();
    p.step();
    assert_eq!(p.b.held_parts.len(), 2, "the third part was read");
    assert!(!p.b.core.wants_read());
    p.b.take_parts();
    p.step();
    assert_eq!(p.b.notifications.len(), 1);
}

#[test]
fn reading_pauses_while_a_result_stream_is_at_its_part_limit() {
    let a = Config {
        stream_buffer_parts: 1,
        ..config()
    };
    let mut p = Pair::with(&a, &config());
    p.a.on_part = OnPart::Hold;
    p.b.on_request = OnRequest::Hold;
    let (reader, stream) = p.a.stream_request("op");
    p.step();
    for part in ["a", "b"] {
        p.b.core.send_result_part(stream, part.into()).unwrap();
    }
    p.b.answer(stream, Reply::EndOfStream);
    p.step();
    assert_eq!(p.a.held_parts.len(), 1);
    assert!(!p.a.core.wants_read());
    p.a.take_parts();
    p.step();
    assert_eq!(p.a.held_parts.len(), 1, "the second part was read");
    p.a.take_parts();
    p.step();
    assert_eq!(p.a.data_of(reader), (b"ab".to_vec(), true));
    assert!(
        p.a.core.wants_read(),
        "the ended stream left no stall behind"
    );
}

#[test]
fn reading_pauses_while_every_notification_slot_is_taken() {
    let b = Config {
        max_concurrent_notifications: 1,
        ..config()
    };
    let mut p = Pair::with(&config(), &b);
    p.b.on_notification = OnNotification::Hold;
    for name in ["n1", "n2", "n3"] {
        p.a.notify(name, b"");
    }
    p.step();
    let names =
        |p: &Pair| -> Vec<String> { p.b.notifications.iter().map(|n| n.0.clone()).collect() };
    assert_eq!(names(&p), ["n1"]);
    assert!(!p.b.core.wants_read(), "n2 waits for the slot");
    assert_eq!(p.b.unread(), 14, "n3 is not read");
    p.b.finish_notifications();
    assert_eq!(names(&p), ["n1", "n2"], "the waiting one runs at once");
    p.step();
    assert!(!p.b.core.wants_read(), "n3 waits for the slot");
    p.b.finish_notifications();
    p.b.finish_notifications();
    p.step();
    assert_eq!(names(&p), ["n1", "n2", "n3"]);
    assert!(p.b.core.wants_read());
}

#[test]
fn a_large_notification_is_charged_and_may_pause_reading() {
    let mut p = Pair::with(&config(), &budget(5000));
    p.b.on_notification = OnNotification::Hold;
    p.a.notify("big", &[0; 6000]);
    p.a.notify("behind", b"");
    p.step();
    assert_eq!(
        p.b.held_notifications[0].bytes(),
        5000,
        "clamped to the budget"
    );
    assert!(!p.b.core.wants_read());
    assert_eq!(p.b.notifications.len(), 1);
    p.b.finish_notifications();
    p.step();
    assert_eq!(p.b.notifications.len(), 2);
}

#[test]
fn reading_pauses_when_a_reply_was_queued_on_a_full_write_queue() {
    let b = Config {
        max_write_queue_bytes: 10,
        ..config()
    };
    let mut p = Pair::with(&config(), &b);
    for _ in 0..3 {
        p.a.request("op", b"hello");
    }
    let bytes = p.a.transmit();
    p.b.inject_raw(&bytes);
    let now = p.now();
    p.b.read(now);
    // The first echo filled the queue; the second was queued anyway, and
    // reading waits for the transport to take them.
    assert_eq!(p.b.requests.len(), 2);
    assert!(!p.b.core.wants_read());
    assert!(!p.b.core.has_room());
    assert_eq!(p.b.core.stats().queued_bytes, 2 * 18);
    assert_eq!(p.b.unread(), bytes.len() / 3);
    let replies = p.b.transmit();
    assert_eq!(replies.len(), 36);
    assert!(p.b.core.wants_read() && p.b.core.has_room());
    p.b.read(now);
    assert_eq!(p.b.requests.len(), 3);
    assert!(p.b.core.wants_read(), "one reply on an empty queue is fine");
    p.a.inject_raw(&replies);
    p.step();
    assert_eq!(p.a.answers.len(), 3);
    assert!(
        p.a.received
            .iter()
            .all(|m| matches!(m, Message::SingleResult { payload, .. } if payload == "hello"))
    );
}

#[test]
fn a_stream_finished_or_cancelled_at_its_part_limit_no_longer_pauses_reading() {
    let cfg = Config {
        stream_buffer_parts: 1,
        ..config()
    };
    let mut p = Pair::new(&cfg);
    p.a.on_part = OnPart::Hold;
    p.b.on_part = OnPart::Hold;
    p.b.on_request = OnRequest::Hold;
    // B's handler stops taking parts, then answers.
    let (_, theirs) = p.a.stream_request("op");
    p.a.part(theirs, b"1");
    p.a.part(theirs, b"2");
    p.step();
    assert!(!p.b.core.wants_read());
    p.b.answer(theirs, Reply::Error(Bytes::from_static(b"done")));
    assert!(
        p.b.core.wants_read(),
        "the handler is gone, so is its stall"
    );
    p.step();
    assert_eq!(p.b.held_parts.len(), 1, "the second part was dropped");
    // A's reader stops taking parts, then its caller gives up.
    let (reader, ours) = p.a.stream_request("op");
    p.step();
    for part in ["a", "b"] {
        p.b.core.send_result_part(ours, part.into()).unwrap();
    }
    p.step();
    assert!(!p.a.core.wants_read());
    p.a.cancel(reader);
    assert!(p.a.core.wants_read());
    p.step();
    // Late credits of the finished streams give their bytes back and
    // count for nothing else.
    p.a.take_parts();
    p.b.take_parts();
    assert_eq!(
        p.a.core.stats().buffered_bytes + p.b.core.stats().buffered_bytes,
        0
    );
    assert!(p.a.core.wants_read() && p.b.core.wants_read());
}

/// A streamed result collected for one of A's buffer requests is held for
/// the peer: charged while collected, given back when answered.
#[test]
fn a_result_being_collected_is_charged_until_answered() {
    let mut p = Pair::with(&budget(10_000), &config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", b"");
    p.step();
    for _ in 0..3 {
        p.b.core
            .send_result_part(call_id, Bytes::from(vec![1; 2000]))
            .unwrap();
        p.step();
    }
    let stats = p.a.core.stats();
    assert_eq!(
        stats.buffered_bytes, 6000,
        "the collected parts are charged"
    );
    assert_eq!(stats.collecting_bytes, 6000);
    assert!(p.a.core.wants_read());
    p.b.answer(call_id, Reply::EndOfStream);
    p.step();
    assert_eq!(p.a.value_of(call).len(), 6000);
    assert_eq!(
        p.a.core.stats().buffered_bytes,
        0,
        "given back with the answer"
    );
}

/// Over the budget the call fails with `OverBudget` instead of pausing
/// reading (the rest of the result could then never arrive); what it held
/// is given back, and the parts still coming are dropped.
#[test]
fn a_result_collected_over_the_budget_fails_the_call() {
    let mut p = Pair::with(&budget(5000), &config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", b"");
    let (other, other_id) = p.a.request("op", b"");
    p.step();
    p.b.core
        .send_result_part(other_id, Bytes::from(vec![2; 2000]))
        .unwrap();
    for _ in 0..2 {
        p.b.core
            .send_result_part(call_id, Bytes::from(vec![1; 1500]))
            .unwrap();
    }
    p.step();
    // Exactly full would pause reading: the second part of `call` is refused.
    assert!(matches!(
        p.a.answer_of(call),
        Err(crate::Error::OverBudget { limit: 5000 })
    ));
    assert_eq!(p.a.core.stats().buffered_bytes, 2000, "only `other` holds");
    assert!(p.a.core.wants_read());
    p.b.core
        .send_result_part(call_id, Bytes::from(vec![1; 10]))
        .unwrap();
    p.b.answer(call_id, Reply::EndOfStream);
    p.b.answer(other_id, Reply::EndOfStream);
    p.step();
    assert_eq!(p.a.value_of(other).len(), 2000);
    assert_eq!(p.a.core.stats().buffered_bytes, 0);
    assert!(p.a.closed.is_none());
}

/// A cancelled call and a closed connection give back what was collected.
#[test]
fn a_cancelled_or_closed_collection_gives_its_bytes_back() {
    let mut p = Pair::with(&budget(10_000), &config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", b"");
    let (_, other_id) = p.a.request("op", b"");
    p.step();
    for id in [call_id, other_id] {
        p.b.core
            .send_result_part(id, Bytes::from(vec![1; 3000]))
            .unwrap();
    }
    p.step();
    assert_eq!(p.a.core.stats().buffered_bytes, 6000);
    p.a.cancel(call);
    assert_eq!(p.a.core.stats().buffered_bytes, 3000);
    let now = p.now();
    p.a.close(now, CloseMode::Immediate);
    assert_eq!(p.a.core.stats().buffered_bytes, 0);
}

/// A part a consumer keeps (`keep_part`) frees its place in the stream's
/// part limit but stays charged until released.
#[test]
fn a_kept_part_stays_charged_but_frees_its_place() {
    let b = Config {
        stream_buffer_parts: 1,
        ..budget(100_000)
    };
    let mut p = Pair::with(&config(), &b);
    p.b.on_request = OnRequest::Hold;
    p.b.on_part = OnPart::Hold;
    let (_, stream) = p.a.stream_request("op");
    p.a.part(stream, &[1; 100]);
    p.step();
    assert!(
        !p.b.core.wants_read(),
        "one part untaken: at the part limit"
    );
    let (_, _, credit) = p.b.held_parts.pop().unwrap();
    let kept = p.b.core.keep_part(credit);
    assert!(p.b.core.wants_read(), "its place is free");
    assert_eq!(kept.bytes(), 100);
    assert_eq!(p.b.core.stats().buffered_bytes, 100, "its bytes are not");
    assert!(!p.b.core.over_budget());
    p.b.core.release(kept);
    assert_eq!(p.b.core.stats().buffered_bytes, 0);
}

/// The runtime's refusal when its cap on running handlers is reached.
#[test]
fn a_request_refused_as_busy_gets_a_retry_result_and_frees_its_slot() {
    let mut p = Pair::new(&config());
    p.b.on_request = OnRequest::Hold;
    let (call, call_id) = p.a.request("op", &[1; 5000]);
    p.step();
    let held = p.b.held.pop().unwrap();
    assert_eq!(p.b.core.stats().buffered_bytes, 5000);
    p.b.core.refuse_busy(call_id, false, held.charge);
    assert_eq!(p.b.core.stats().inbound, 0);
    assert_eq!(p.b.core.stats().buffered_bytes, 0);
    p.step();
    assert!(matches!(
        p.a.answer_of(call),
        Ok(Outcome::Retry { payload, .. }) if payload == "request rate limit"
    ));
}
