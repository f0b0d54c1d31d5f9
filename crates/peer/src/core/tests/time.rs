//! Heartbeats and the read timeout, on the manual clock.

use bytes::Bytes;
use gotalk_proto::{Message, ProtocolErrorCode};

use super::{
    MS, NS, config, is_protocol_error,
    pair::{OnPart, Pair},
};
use crate::{CloseReason, Config};

fn heartbeats_every(ms: u32) -> Config {
    Config {
        heartbeat_interval: Some(ms * MS),
        ..config()
    }
}

fn read_timeout(ms: u32) -> Config {
    Config {
        read_timeout: Some(ms * MS),
        ..config()
    }
}

#[test]
fn heartbeats_go_out_every_interval() {
    let mut p = Pair::with(&heartbeats_every(10), &config());
    assert_eq!(p.a.core.poll_timeout(), Some(p.now() + 10 * MS));
    assert_eq!(p.b.core.poll_timeout(), None, "B sends none");
    p.advance(10 * MS - NS);
    assert_eq!(p.a.heartbeats_due, 0, "not before the interval");
    p.advance(NS);
    assert_eq!(p.a.heartbeats_due, 1, "exactly at the interval");
    assert_eq!(p.b.heartbeats, [(7, 1)]);
    assert_eq!(
        p.b.last_received().to_vec().unwrap(),
        b"h000700000001",
        "load and time as the runtime gave them"
    );
    for _ in 0..3 {
        p.advance(10 * MS);
    }
    assert_eq!(p.b.heartbeats, [(7, 1), (7, 2), (7, 3), (7, 4)]);
    assert_eq!(p.a.core.poll_timeout(), Some(p.now() + 10 * MS));
}

#[test]
fn missed_heartbeats_are_skipped_not_sent_in_a_burst() {
    let mut p = Pair::with(&heartbeats_every(10), &config());
    p.advance(35 * MS);
    assert_eq!(p.a.heartbeats_due, 1, "one beat for three intervals");
    assert_eq!(
        p.a.core.poll_timeout(),
        Some(p.now() + 5 * MS),
        "the next beat stays on the interval's grid"
    );
    p.advance(5 * MS);
    assert_eq!(p.a.heartbeats_due, 2);
    assert_eq!(p.b.heartbeats.len(), 2);
}

#[test]
fn no_heartbeats_when_disabled_or_zero() {
    for interval in [None, Some(std::time::Duration::ZERO)] {
        let cfg = Config {
            heartbeat_interval: interval,
            ..config()
        };
        let mut p = Pair::new(&cfg);
        assert_eq!(p.a.core.poll_timeout(), None);
        p.advance(1000 * MS);
        assert_eq!(p.a.heartbeats_due + p.b.heartbeats_due, 0);
    }
}

#[test]
fn the_read_timeout_fires_exactly_at_its_deadline_and_owes_f00000003() {
    let mut p = Pair::with(&config(), &read_timeout(100));
    assert_eq!(p.b.core.poll_timeout(), Some(p.now() + 100 * MS));
    p.advance(100 * MS - NS);
    assert!(p.b.closed.is_none(), "not before the deadline");
    p.advance(NS);
    assert!(matches!(p.b.closed(), CloseReason::ReadTimeout));
    assert_eq!(p.a.last_received().to_vec().unwrap(), b"f00000003");
    assert!(matches!(
        p.a.closed(),
        CloseReason::RemoteProtocolError {
            code: ProtocolErrorCode::Timeout
        }
    ));
}

#[test]
fn every_message_moves_the_read_deadline() {
    let mut p = Pair::with(&config(), &read_timeout(100));
    p.advance(60 * MS);
    p.a.notify("ping", b"");
    p.step();
    assert_eq!(p.b.core.poll_timeout(), Some(p.now() + 100 * MS));
    p.advance(60 * MS);
    assert!(p.b.closed.is_none(), "120 ms: the deadline moved to 160 ms");
    let (call, _) = p.a.request("echo", b"x");
    p.step();
    assert_eq!(p.a.value_of(call), Bytes::from_static(b"x"));
    p.advance(100 * MS - NS);
    assert!(p.b.closed.is_none());
    p.advance(NS);
    assert!(matches!(p.b.closed(), CloseReason::ReadTimeout));
    assert!(is_protocol_error(
        p.a.last_received(),
        ProtocolErrorCode::Timeout
    ));
}

#[test]
fn heartbeats_keep_a_quiet_connection_within_the_read_timeout() {
    let mut p = Pair::with(&heartbeats_every(40), &read_timeout(100));
    for _ in 0..100 {
        p.advance(10 * MS);
    }
    assert!(p.b.closed.is_none());
    assert_eq!(p.b.heartbeats.len(), 25);
    assert!(
        p.b.received
            .iter()
            .all(|m| matches!(m, Message::Heartbeat { .. }))
    );
}

#[test]
fn a_partial_frame_does_not_move_the_read_deadline() {
    let mut p = Pair::with(&config(), &read_timeout(100));
    p.advance(50 * MS);
    p.b.inject_raw(b"n004pi");
    p.step();
    assert_eq!(p.b.core.poll_timeout(), Some(p.now() + 50 * MS));
    p.advance(50 * MS);
    assert!(matches!(p.b.closed(), CloseReason::ReadTimeout));
}

#[test]
fn the_read_timeout_does_not_run_while_we_pause_reading() {
    let b = Config {
        stream_buffer_parts: 1,
        ..read_timeout(100)
    };
    let mut p = Pair::with(&config(), &b);
    p.b.on_part = OnPart::Hold;
    let (_, stream) = p.a.stream_request("op");
    p.a.part(stream, b"1");
    p.a.notify("unread", b"");
    p.step();
    assert!(!p.b.core.wants_read(), "B's handler is slow");
    for _ in 0..30 {
        p.advance(10 * MS);
    }
    assert!(
        p.b.closed.is_none(),
        "a slow handler of ours is not the peer's silence"
    );
    p.b.take_parts();
    p.step();
    assert_eq!(p.b.notifications.len(), 1);
    // Reading again: a silent peer is timed out as before.
    p.advance(100 * MS);
    assert!(matches!(p.b.closed(), CloseReason::ReadTimeout));
}
