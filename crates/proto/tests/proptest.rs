//! Property tests: round trips, chunking independence, and robustness on
//! arbitrary bytes.

use bytes::{Bytes, BytesMut};
use gotalk_proto::{
    CodecError, DecodeError, DecodeLimits, Decoded, GotalkCodec, MAX_NAME_LEN, Message,
    ProtocolErrorCode, RequestId, Text, decode, decode_bytes,
};
use proptest::prelude::*;
use tokio_util::codec::Decoder;

/// Request IDs with the bytes the Go implementation's counter produces
/// (NUL, CR, LF) well represented.
fn arb_id() -> impl Strategy<Value = RequestId> {
    let byte = prop_oneof![
        2 => Just(0u8),
        1 => Just(b'\r'),
        1 => Just(b'\n'),
        4 => any::<u8>(),
    ];
    prop::array::uniform4(byte).prop_map(RequestId::new)
}

/// Cuts `s` to at most [`MAX_NAME_LEN`] bytes on a character boundary.
fn fit_name(mut s: String) -> String {
    if s.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// UTF-8 names: mostly short, sometimes up to the 4095-byte maximum.
fn arb_name() -> impl Strategy<Value = Text<Bytes>> {
    prop_oneof![
        4 => "[a-z./ ]{0,12}",
        2 => prop::collection::vec(any::<char>(), 0..24).prop_map(String::from_iter),
        1 => prop::collection::vec(any::<char>(), 1000..1400).prop_map(String::from_iter),
        1 => Just("n".repeat(MAX_NAME_LEN)),
    ]
    .prop_map(|s| Text::from(fit_name(s)))
}

/// Binary payloads: often empty (stream ends), mostly small, up to 4 KiB.
fn arb_payload() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        2 => Just(Bytes::new()),
        4 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
        1 => prop::collection::vec(any::<u8>(), 0..4096).prop_map(Bytes::from),
    ]
}

fn arb_message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (arb_id(), arb_name(), arb_payload())
            .prop_map(|(id, op, payload)| Message::SingleRequest { id, op, payload }),
        (arb_id(), arb_name(), arb_payload())
            .prop_map(|(id, op, payload)| Message::StreamRequest { id, op, payload }),
        (arb_id(), arb_payload())
            .prop_map(|(id, payload)| Message::StreamRequestPart { id, payload }),
        (arb_id(), arb_payload()).prop_map(|(id, payload)| Message::SingleResult { id, payload }),
        (arb_id(), arb_payload()).prop_map(|(id, payload)| Message::StreamResult { id, payload }),
        (arb_id(), arb_payload()).prop_map(|(id, payload)| Message::ErrorResult { id, payload }),
        (arb_id(), any::<u32>(), arb_payload()).prop_map(|(id, wait_ms, payload)| {
            Message::RetryResult {
                id,
                wait_ms,
                payload,
            }
        }),
        (arb_name(), arb_payload())
            .prop_map(|(name, payload)| Message::Notification { name, payload }),
        (any::<u16>(), any::<u32>()).prop_map(|(load, time)| Message::Heartbeat { load, time }),
        any::<u32>().prop_map(|c| Message::ProtocolError {
            code: ProtocolErrorCode::from_u32(c)
        }),
    ]
}

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

fn encode_all(messages: &[Message]) -> Vec<u8> {
    let mut wire = Vec::new();
    for m in messages {
        m.encode(&mut wire).unwrap();
    }
    wire
}

/// How a run of decoding ended once the input ran out.
#[derive(Debug, PartialEq)]
enum End {
    /// Every byte was consumed.
    Clean,
    /// Bytes are left and at least this many more are needed.
    Incomplete(usize),
    /// A malformed frame.
    Error(DecodeError),
}

/// Decodes as much of `buf` as possible with `decode_bytes`.
fn drain(buf: &mut BytesMut, out: &mut Vec<Message>) -> Result<Option<usize>, DecodeError> {
    // Every complete message takes at least 9 bytes, so this bounds the loop.
    for _ in 0..=buf.len() / 9 {
        match decode_bytes(buf, &limits())? {
            Decoded::Complete(m, _) => out.push(m),
            Decoded::Incomplete(n) => return Ok(Some(n)),
        }
        if buf.is_empty() {
            return Ok(None);
        }
    }
    unreachable!("more messages than the buffer can hold")
}

/// Feeds `wire` to `decode_bytes` in chunks of the given sizes (cycled).
fn decode_chunked(wire: &[u8], chunks: &[usize]) -> (Vec<Message>, End) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pending = None;
    let mut rest = wire;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        buf.extend_from_slice(now);
        match drain(&mut buf, &mut out) {
            Ok(n) => pending = n,
            Err(e) => return (out, End::Error(e)),
        }
    }
    (out, pending.map_or(End::Clean, End::Incomplete))
}

/// The same through the tokio-util codec.
fn codec_chunked(wire: &[u8], chunks: &[usize]) -> (Vec<Message>, End) {
    let mut codec = GotalkCodec::default();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = wire;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        rest = later;
        buf.extend_from_slice(now);
        for _ in 0..=buf.len() {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(CodecError::Decode { error, .. }) => return (out, End::Error(error)),
                Err(e) => panic!("unexpected codec error {e}"),
            }
        }
    }
    let end = if buf.is_empty() {
        End::Clean
    } else {
        match decode_bytes(&mut buf, &limits()) {
            Ok(Decoded::Incomplete(n)) => End::Incomplete(n),
            other => panic!("codec stopped early: {other:?}"),
        }
    };
    (out, end)
}

/// Bytes that look enough like gotalk to get past the first field often.
fn arb_wireish() -> impl Strategy<Value = Vec<u8>> {
    let byte = prop_oneof![
        3 => prop::sample::select(b"0123456789abcdefABCDEF".to_vec()),
        1 => prop::sample::select(b"rspRSEenhf".to_vec()),
        1 => any::<u8>(),
    ];
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec(byte, 0..96),
        // Valid messages with a few bytes overwritten and a random cut.
        (
            prop::collection::vec(arb_message(), 1..4),
            prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            any::<prop::sample::Index>(),
        )
            .prop_map(|(msgs, edits, cut)| {
                let mut wire = encode_all(&msgs);
                for (at, b) in edits {
                    let i = at.index(wire.len());
                    wire[i] = b;
                }
                let keep = cut.index(wire.len() + 1);
                wire.truncate(keep.max(1));
                wire
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn encode_then_decode_round_trips(msg in arb_message()) {
        let wire = msg.to_vec().unwrap();
        prop_assert_eq!(wire.len(), msg.encoded_len());
        prop_assert_eq!(
            decode(&wire, &limits()).unwrap(),
            Decoded::Complete(msg.as_borrowed(), wire.len())
        );
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(
            decode_bytes(&mut buf, &limits()).unwrap(),
            Decoded::Complete(msg.clone(), wire.len())
        );
        prop_assert!(buf.is_empty());
        let mut buf = BytesMut::from(&wire[..]);
        prop_assert_eq!(GotalkCodec::default().decode(&mut buf).unwrap(), Some(msg.clone()));
        // The borrowed view encodes identically.
        prop_assert_eq!(msg.as_borrowed().to_vec().unwrap(), wire);
    }

    #[test]
    fn incomplete_asks_for_no_more_than_is_missing(msg in arb_message()) {
        let wire = msg.to_vec().unwrap();
        let mut have = 0;
        // Each step adds at least one byte, so this ends within wire.len() steps.
        let mut steps = 0;
        loop {
            steps += 1;
            prop_assert!(steps <= wire.len() + 1);
            match decode(&wire[..have], &limits()).unwrap() {
                Decoded::Complete(got, used) => {
                    prop_assert_eq!(used, wire.len());
                    prop_assert_eq!(got, msg.as_borrowed());
                    break;
                }
                Decoded::Incomplete(n) => {
                    prop_assert!(n > 0, "Incomplete(0) at {}", have);
                    prop_assert!(have + n <= wire.len(), "asked for {} at {} of {}", n, have, wire.len());
                    have += n;
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn chunked_stream_decodes_like_the_whole(
        msgs in prop::collection::vec(arb_message(), 1..24),
        chunks in prop::collection::vec(1usize..200, 1..16),
    ) {
        let wire = encode_all(&msgs);
        let whole = decode_chunked(&wire, &[wire.len()]);
        prop_assert_eq!(&whole, &(msgs.clone(), End::Clean));
        prop_assert_eq!(&decode_chunked(&wire, &chunks), &whole);
        prop_assert_eq!(&codec_chunked(&wire, &chunks), &whole);
        // One byte at a time visits every prefix of every frame.
        prop_assert_eq!(&decode_chunked(&wire, &[1]), &whole);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_bytes_never_panic_and_errors_point_inside(input in arb_wireish()) {
        // A small limit so PayloadTooLarge is reached too.
        let small = DecodeLimits::with_max_payload(64);
        for lim in [limits(), small] {
            let sliced = decode(&input, &lim);
            let mut buf = BytesMut::from(&input[..]);
            let owned = decode_bytes(&mut buf, &lim);
            match (&sliced, &owned) {
                (Err(a), Err(b)) => {
                    prop_assert_eq!(a, b);
                    let at = a.offset().unwrap();
                    prop_assert!(at < input.len(), "offset {} of {}", at, input.len());
                    prop_assert_eq!(&buf[..], &input[..]);
                }
                (Ok(Decoded::Incomplete(a)), Ok(Decoded::Incomplete(b))) => {
                    prop_assert!(*a > 0);
                    prop_assert_eq!(a, b);
                    prop_assert_eq!(&buf[..], &input[..]);
                }
                (Ok(Decoded::Complete(a, n)), Ok(Decoded::Complete(b, m))) => {
                    prop_assert_eq!(n, m);
                    prop_assert!(*n <= input.len());
                    prop_assert_eq!(&a.to_owned_bytes(), b);
                    prop_assert_eq!(buf.len(), input.len() - n);
                }
                other => prop_assert!(false, "APIs disagree: {:?}", other),
            }
        }
    }

    #[test]
    fn arbitrary_bytes_decode_the_same_in_any_chunking(
        input in arb_wireish(),
        chunks in prop::collection::vec(1usize..16, 1..8),
    ) {
        let whole = decode_chunked(&input, &[input.len().max(1)]);
        prop_assert_eq!(&decode_chunked(&input, &chunks), &whole);
        prop_assert_eq!(&decode_chunked(&input, &[1]), &whole);
        prop_assert_eq!(&codec_chunked(&input, &chunks), &whole);
    }
}

/// Runs `decode_eof` over what is left once the stream has ended, as
/// `FramedRead` does: the frames, then how it ended.
fn decode_at_eof(wire: &[u8]) -> (Vec<Message>, Result<(), CodecError>) {
    let mut codec = GotalkCodec::default();
    let mut buf = BytesMut::from(wire);
    let mut out = Vec::new();
    // Every frame takes at least 9 bytes, so this bounds the loop.
    for _ in 0..=wire.len() / 9 {
        match codec.decode_eof(&mut buf) {
            Ok(Some(m)) => out.push(m),
            Ok(None) => return (out, Ok(())),
            Err(e) => return (out, Err(e)),
        }
    }
    unreachable!("more messages than the buffer can hold")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A stream that ends inside a frame gives the frames before it, then
    /// `Truncated` at that frame's stream offset, saying how far it got and
    /// how much was missing. One that ends between frames just ends.
    #[test]
    fn stream_ending_inside_a_frame_is_truncated_there(
        msgs in prop::collection::vec(arb_message(), 1..8),
        which in any::<prop::sample::Index>(),
        cut in any::<prop::sample::Index>(),
    ) {
        let frames: Vec<Vec<u8>> = msgs.iter().map(|m| m.to_vec().unwrap()).collect();
        let k = which.index(frames.len());
        let start: usize = frames[..k].iter().map(Vec::len).sum();
        let frame_len = frames[k].len();
        // Strictly inside frame k: at least one byte of it, not all.
        let got = 1 + cut.index(frame_len - 1);
        let wire = frames.concat();

        let (decoded, end) = decode_at_eof(&wire[..start + got]);
        prop_assert_eq!(&decoded[..], &msgs[..k]);
        let Err(CodecError::Decode { error, stream_offset }) = end else {
            panic!("expected a truncated frame, got {end:?}");
        };
        prop_assert_eq!(stream_offset, start as u64);
        let DecodeError::Truncated { offset, missing } = error else {
            panic!("expected Truncated, got {error:?}");
        };
        prop_assert_eq!(offset, got);
        prop_assert!(missing > 0);
        // Exact once the header is in; never more than the frame lacks.
        let header_len = frame_len - msgs[k].payload().map_or(0, |p| p.len());
        if got >= header_len {
            prop_assert_eq!(missing, frame_len - got);
        } else {
            prop_assert!(got + missing <= frame_len, "{} + {} > {}", got, missing, frame_len);
        }
        prop_assert_eq!(error.protocol_error_code(), ProtocolErrorCode::InvalidMessage);

        let (decoded, end) = decode_at_eof(&wire[..start]);
        prop_assert_eq!(&decoded[..], &msgs[..k]);
        prop_assert!(end.is_ok(), "{:?}", end);
    }
}
