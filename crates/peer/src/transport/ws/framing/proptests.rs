//! Properties of the cutter and the reassembler together, on streams of
//! valid gotalk frames.

use std::collections::HashMap;

use bytes::Bytes;
use gotalk_proto::{Decoded, Message, ProtocolErrorCode, RequestId, Text, parse_header};
use proptest::prelude::*;

use super::{Cutter, Reassembler, SCAN_LIMITS};
use crate::ws::WsError;

fn arb_payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        2 => Just(Bytes::new()),
        // Payloads that look like frames must not confuse either side.
        1 => Just(Bytes::from_static(b"h000000000000")),
        4 => prop::collection::vec(any::<u8>(), 0..48).prop_map(Bytes::from),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    let id = any::<[u8; 4]>().prop_map(RequestId::new);
    let name = "[a-z.]{0,8}".prop_map(Text::from);
    prop_oneof![
        (id.clone(), name.clone(), arb_payload())
            .prop_map(|(id, op, payload)| Message::SingleRequest { id, op, payload }),
        (id.clone(), arb_payload())
            .prop_map(|(id, payload)| Message::StreamRequestPart { id, payload }),
        (id.clone(), arb_payload()).prop_map(|(id, payload)| Message::SingleResult { id, payload }),
        (id, any::<u32>(), arb_payload()).prop_map(|(id, wait_ms, payload)| {
            Message::RetryResult {
                id,
                wait_ms,
                payload,
            }
        }),
        (name, arb_payload()).prop_map(|(name, payload)| Message::Notification { name, payload }),
        (any::<u16>(), any::<u32>()).prop_map(|(load, time)| Message::Heartbeat { load, time }),
        (0u32..1200).prop_map(|c| Message::ProtocolError {
            code: ProtocolErrorCode::from_u32(c)
        }),
    ]
}

/// The version and the frames of `messages`, as the driver writes them.
fn wire_of(messages: &[Message]) -> Vec<u8> {
    let mut wire = b"01".to_vec();
    for m in messages {
        m.encode(&mut wire).unwrap();
    }
    wire
}

/// `wire` split at the given points (sorted; repeats give empty parts).
fn split<'a>(wire: &'a [u8], points: &[prop::sample::Index]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = points.iter().map(|p| p.index(wire.len() + 1)).collect();
    points.sort_unstable();
    let mut parts = Vec::new();
    let mut from = 0;
    for to in points.into_iter().chain([wire.len()]) {
        parts.push(&wire[from..to]);
        from = to;
    }
    parts
}

/// Pushes `chunks` into a cutter one by one, cutting as it goes.
fn cut(chunks: &[&[u8]]) -> (Vec<Bytes>, Option<ProtocolErrorCode>) {
    let mut cutter = Cutter::default();
    let mut messages = Vec::new();
    for chunk in chunks {
        cutter.push(chunk);
        while let Some(m) = cutter.next_message().expect("valid frames") {
            messages.push(m);
        }
    }
    assert_eq!(cutter.buffered(), 0, "everything whole was cut");
    (messages, cutter.protocol_error())
}

/// Where each header of `wire` starts: its length and declared payload.
fn headers(wire: &[u8]) -> HashMap<usize, (usize, usize)> {
    let mut spans = HashMap::new();
    let mut at = 2;
    while at < wire.len() {
        let Ok(Decoded::Complete(h, len)) = parse_header(&wire[at..], &SCAN_LIMITS) else {
            panic!("valid header at {at}");
        };
        spans.insert(at, (len, h.payload_len as usize));
        at += h.frame_len();
    }
    spans
}

/// What the reassembler must make of `parts`, worked out from the frame
/// layout instead of by scanning: the stream up to the first message that
/// follows a lone header with a payload and is not exactly that payload.
fn expected_read(wire: &[u8], parts: &[&[u8]]) -> (Vec<u8>, Option<WsError>) {
    let spans = headers(wire);
    let mut out = Vec::new();
    let mut expect = None;
    let mut at = 0;
    for part in parts {
        if let Some(declared) = expect.take() {
            if part.len() != declared {
                let error = WsError::PayloadSizeMismatch {
                    declared: declared as u32,
                    received: part.len(),
                };
                return (out, Some(error));
            }
        } else if let Some(&(len, payload)) = spans.get(&at)
            && len == part.len()
            && payload > 0
        {
            expect = Some(payload);
        }
        out.extend_from_slice(part);
        at += part.len();
    }
    (out, None)
}

fn reassemble(parts: &[&[u8]]) -> (Vec<u8>, Option<WsError>) {
    let mut r = Reassembler::default();
    for part in parts {
        if let Err(e) = r.push_message(part) {
            return (r.buffered().to_vec(), Some(e));
        }
    }
    (r.buffered().to_vec(), None)
}

proptest! {
    /// What the cutter sends, the reassembler gives back unchanged, and
    /// every message is the version, one whole header or one whole
    /// non-empty payload.
    #[test]
    fn cut_then_reassembled_gives_the_same_bytes(
        messages in prop::collection::vec(arb_message(), 0..12),
        chunking in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let wire = wire_of(&messages);
        let (cuts, protocol_error) = cut(&split(&wire, &chunking));

        let (read, error) = reassemble(&cuts.iter().map(|m| &m[..]).collect::<Vec<_>>());
        prop_assert_eq!(error, None);
        prop_assert_eq!(&read, &wire);

        prop_assert_eq!(&cuts[0][..], b"01");
        let mut payload_due = 0;
        for m in &cuts[1..] {
            if payload_due > 0 {
                prop_assert_eq!(m.len(), payload_due);
                payload_due = 0;
            } else {
                let Ok(Decoded::Complete(h, len)) = parse_header(m, &SCAN_LIMITS) else {
                    panic!("not a header: {m:?}");
                };
                prop_assert_eq!(len, m.len());
                payload_due = h.payload_len as usize;
            }
        }
        prop_assert_eq!(payload_due, 0);

        let last_error = messages.iter().rev().find_map(|m| match m {
            Message::ProtocolError { code } => Some(*code),
            _ => None,
        });
        prop_assert_eq!(protocol_error, last_error);
    }

    /// However the driver's writes chunk the stream, the same messages go
    /// out.
    #[test]
    fn any_chunking_of_the_writes_gives_the_same_messages(
        messages in prop::collection::vec(arb_message(), 0..12),
        chunking in prop::collection::vec(any::<prop::sample::Index>(), 0..24),
    ) {
        let wire = wire_of(&messages);
        let whole = cut(&[&wire]);
        let chunked = cut(&split(&wire, &chunking));
        prop_assert_eq!(whole, chunked);
        let bytewise = cut(&wire.chunks(1).collect::<Vec<_>>());
        prop_assert_eq!(cut(&[&wire]), bytewise);
    }

    /// Messages split anywhere read as the concatenated stream, except where
    /// a lone header with a payload is not followed by exactly its payload.
    /// Splits at the writer's cuts, kept or not, make that case common.
    #[test]
    fn any_split_of_the_reads_follows_the_lone_header_rule(
        messages in prop::collection::vec(arb_message(), 0..12),
        keep in prop::collection::vec(any::<bool>(), 32),
        extra in prop::collection::vec(any::<prop::sample::Index>(), 0..6),
    ) {
        let wire = wire_of(&messages);
        let (cuts, _) = cut(&[&wire]);
        let mut at = 0;
        let mut points = Vec::new();
        for (i, m) in cuts.iter().enumerate() {
            at += m.len();
            if keep[i % keep.len()] {
                points.push(at);
            }
        }
        points.extend(extra.iter().map(|p| p.index(wire.len() + 1)));
        points.sort_unstable();
        let mut parts = Vec::new();
        let mut from = 0;
        for to in points.into_iter().chain([wire.len()]) {
            parts.push(&wire[from..to]);
            from = to;
        }
        prop_assert_eq!(reassemble(&parts), expected_read(&wire, &parts));
    }
}
