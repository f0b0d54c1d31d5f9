//! The shared wire vectors, through every decode and encode path of the crate.
//!
//! `tests/vectors/*.jsonl` are copies of the project's shared vectors; they
//! are compiled in so the tests never read outside the crate.

use bytes::{Bytes, BytesMut};
use gotalk_proto::{
    CodecError, DEFAULT_MAX_PAYLOAD, DecodeError, DecodeLimits, Decoded, GotalkCodec, Message,
    ProtocolErrorCode, RequestId, Text, decode, decode_bytes,
};
use serde::Deserialize;
use tokio_util::codec::{Decoder, Encoder};

const MESSAGES: &str = include_str!("vectors/messages.jsonl");
const INVALID: &str = include_str!("vectors/invalid.jsonl");

/// One line of `messages.jsonl`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vector {
    name: String,
    wire_hex: String,
    message: Fields,
    canonical: bool,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

/// The decoded fields of a vector; which ones are present depends on the type.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fields {
    #[serde(rename = "type")]
    ty: String,
    id_hex: Option<String>,
    op: Option<String>,
    name: Option<String>,
    wait_ms: Option<u32>,
    load: Option<u16>,
    time: Option<u32>,
    code: Option<u32>,
    payload_hex: Option<String>,
}

/// One line of `invalid.jsonl`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Invalid {
    name: String,
    wire_hex: String,
    expect: String,
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length in {s:?}");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("vector hex"))
        .collect()
}

fn lines<T: for<'de> Deserialize<'de>>(text: &str) -> Vec<T> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad vector line {l}: {e}")))
        .collect()
}

impl Fields {
    /// The message these fields describe. Panics when a field the type needs
    /// is missing or a field the type does not have is present, so the
    /// comparison below really covers every listed field.
    fn to_message(&self, vector: &str) -> Message {
        let take = |name: &str, v: &Option<String>| -> String {
            v.clone()
                .unwrap_or_else(|| panic!("{vector}: {} needs {name}", self.ty))
        };
        let id = || {
            let raw = unhex(&take("id_hex", &self.id_hex));
            RequestId::new(raw.try_into().expect("id_hex is 4 bytes"))
        };
        let payload = || Bytes::from(unhex(&take("payload_hex", &self.payload_hex)));
        let op = || Text::from(take("op", &self.op));
        let msg = match self.ty.as_str() {
            "SingleRequest" => Message::SingleRequest {
                id: id(),
                op: op(),
                payload: payload(),
            },
            "StreamRequest" => Message::StreamRequest {
                id: id(),
                op: op(),
                payload: payload(),
            },
            "StreamRequestPart" => Message::StreamRequestPart {
                id: id(),
                payload: payload(),
            },
            "SingleResult" => Message::SingleResult {
                id: id(),
                payload: payload(),
            },
            "StreamResult" => Message::StreamResult {
                id: id(),
                payload: payload(),
            },
            "ErrorResult" => Message::ErrorResult {
                id: id(),
                payload: payload(),
            },
            "RetryResult" => Message::RetryResult {
                id: id(),
                wait_ms: self.wait_ms.expect("RetryResult needs wait_ms"),
                payload: payload(),
            },
            "Notification" => Message::Notification {
                name: Text::from(take("name", &self.name)),
                payload: payload(),
            },
            "Heartbeat" => Message::Heartbeat {
                load: self.load.expect("Heartbeat needs load"),
                time: self.time.expect("Heartbeat needs time"),
            },
            "ProtocolError" => Message::ProtocolError {
                code: ProtocolErrorCode::from_u32(self.code.expect("ProtocolError needs code")),
            },
            other => panic!("{vector}: unknown type {other}"),
        };
        // Fields the type does not carry must not be listed.
        assert_eq!(
            self.id_hex.is_some(),
            msg.id().is_some(),
            "{vector}: id_hex"
        );
        assert_eq!(
            self.op.is_some(),
            matches!(
                msg,
                Message::SingleRequest { .. } | Message::StreamRequest { .. }
            ),
            "{vector}: op"
        );
        assert_eq!(
            self.name.is_some(),
            matches!(msg, Message::Notification { .. }),
            "{vector}: name"
        );
        assert_eq!(
            self.payload_hex.is_some(),
            msg.payload().is_some(),
            "{vector}: payload_hex"
        );
        assert_eq!(
            self.wait_ms.is_some(),
            matches!(msg, Message::RetryResult { .. }),
            "{vector}: wait_ms"
        );
        assert_eq!(
            self.load.is_some() && self.time.is_some(),
            matches!(msg, Message::Heartbeat { .. }),
            "{vector}: load/time"
        );
        assert_eq!(
            self.code.is_some(),
            matches!(msg, Message::ProtocolError { .. }),
            "{vector}: code"
        );
        assert_eq!(msg.message_type().name(), self.ty, "{vector}: type name");
        msg
    }
}

/// The canonical (lower-case) form of `wire`: hex digits lowered in every
/// numeric header field, the type tag, request ID, name and payload untouched.
fn lower_case_form(wire: &[u8], msg: &Message) -> Vec<u8> {
    let mut out = wire.to_vec();
    let id = if msg.id().is_some() { 1..5 } else { 0..0 };
    let name = match msg.name() {
        Some(n) => {
            let start = if msg.id().is_some() { 8 } else { 4 };
            start..start + n.len()
        }
        None => 0..0,
    };
    for (i, b) in out.iter_mut().enumerate().take(msg.header_len()).skip(1) {
        if !id.contains(&i) && !name.contains(&i) {
            b.make_ascii_lowercase();
        }
    }
    out
}

#[test]
fn every_message_vector_decodes_to_its_fields_by_every_path() {
    let vectors: Vec<Vector> = lines(MESSAGES);
    assert_eq!(vectors.len(), 26, "messages.jsonl lost vectors");
    let limits = DecodeLimits::default();
    for v in &vectors {
        let wire = unhex(&v.wire_hex);
        let expected = v.message.to_message(&v.name);
        let ctx = &v.name;

        // Borrowed slice API, also with bytes of a next message behind it.
        assert_eq!(
            decode(&wire, &limits).unwrap(),
            Decoded::Complete(expected.as_borrowed(), wire.len()),
            "{ctx}: decode"
        );
        let mut followed = wire.clone();
        followed.extend_from_slice(b"h0000");
        assert_eq!(
            decode(&followed, &limits).unwrap(),
            Decoded::Complete(expected.as_borrowed(), wire.len()),
            "{ctx}: decode with trailing bytes"
        );

        // Zero-copy Bytes API: consumes exactly the frame.
        let mut buf = BytesMut::from(&followed[..]);
        assert_eq!(
            decode_bytes(&mut buf, &limits).unwrap(),
            Decoded::Complete(expected.clone(), wire.len()),
            "{ctx}: decode_bytes"
        );
        assert_eq!(&buf[..], b"h0000", "{ctx}: decode_bytes left the rest");

        // tokio-util codec.
        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&wire[..]);
        assert_eq!(
            codec.decode(&mut buf).unwrap(),
            Some(expected.clone()),
            "{ctx}: codec"
        );
        assert!(buf.is_empty(), "{ctx}: codec consumed everything");
        assert_eq!(codec.decoded_bytes(), wire.len() as u64, "{ctx}");
        assert_eq!(codec.decode(&mut buf).unwrap(), None, "{ctx}: nothing more");
    }
}

#[test]
fn every_message_vector_encodes_canonically() {
    let vectors: Vec<Vector> = lines(MESSAGES);
    let canonical = vectors.iter().filter(|v| v.canonical).count();
    assert_eq!((canonical, vectors.len() - canonical), (25, 1));
    for v in &vectors {
        let wire = unhex(&v.wire_hex);
        let msg = v.message.to_message(&v.name);
        let ctx = &v.name;
        let want = if v.canonical {
            wire.clone()
        } else {
            let lowered = lower_case_form(&wire, &msg);
            assert_ne!(lowered, wire, "{ctx}: a non-canonical vector must differ");
            lowered
        };

        assert_eq!(msg.encoded_len(), want.len(), "{ctx}: encoded_len");
        assert_eq!(msg.to_vec().unwrap(), want, "{ctx}: to_vec");
        assert_eq!(
            msg.as_borrowed().to_vec().unwrap(),
            want,
            "{ctx}: to_vec of the borrowed message"
        );

        // Header and payload apart, as a vectored writer would send them.
        let mut header = Vec::new();
        msg.encode_header(&mut header).unwrap();
        assert_eq!(header.len(), msg.header_len(), "{ctx}: header_len");
        header.extend_from_slice(msg.payload().map_or(&[][..], |p| &p[..]));
        assert_eq!(header, want, "{ctx}: encode_header + payload");

        // Into a fixed slice of exactly the right size.
        let mut exact = vec![0u8; want.len()];
        msg.encode(&mut &mut exact[..]).unwrap();
        assert_eq!(exact, want, "{ctx}: encode into an exact slice");

        // tokio-util Encoder, by reference and by value, appending.
        let mut codec = GotalkCodec::default();
        let mut dst = BytesMut::new();
        Encoder::encode(&mut codec, &msg, &mut dst).unwrap();
        Encoder::encode(&mut codec, msg.clone(), &mut dst).unwrap();
        assert_eq!(&dst[..want.len()], &want[..], "{ctx}: codec encode");
        assert_eq!(
            &dst[want.len()..],
            &want[..],
            "{ctx}: codec encode by value"
        );
    }
}

#[test]
fn all_message_vectors_back_to_back_through_the_codec() {
    let vectors: Vec<Vector> = lines(MESSAGES);
    let mut stream = BytesMut::new();
    let mut expected = Vec::new();
    for v in &vectors {
        stream.extend_from_slice(&unhex(&v.wire_hex));
        expected.push(v.message.to_message(&v.name));
    }
    let total = stream.len() as u64;
    let mut codec = GotalkCodec::default();
    let mut got = Vec::new();
    while let Some(msg) = codec.decode(&mut stream).unwrap() {
        got.push(msg);
        assert!(got.len() <= expected.len(), "decoded more than was sent");
    }
    assert_eq!(got, expected);
    assert!(stream.is_empty());
    assert_eq!(codec.decoded_bytes(), total);
}

#[test]
fn every_invalid_vector_yields_its_class() {
    let vectors: Vec<Invalid> = lines(INVALID);
    let count = |class: &str| vectors.iter().filter(|v| v.expect == class).count();
    assert_eq!(
        (count("invalid"), count("too-large"), count("incomplete")),
        (9, 2, 2),
        "invalid.jsonl lost vectors or gained an unknown class"
    );
    assert_eq!(vectors.len(), 13);
    let limits = DecodeLimits::default();
    assert_eq!(limits.max_payload, 16 * 1024 * 1024);
    assert_eq!(limits.max_payload, DEFAULT_MAX_PAYLOAD);

    for v in &vectors {
        let wire = unhex(&v.wire_hex);
        let ctx = &v.name;
        let sliced = decode(&wire, &limits);

        // The Bytes API agrees and leaves the buffer as it was.
        let mut buf = BytesMut::from(&wire[..]);
        let owned = decode_bytes(&mut buf, &limits);
        assert_eq!(
            &buf[..],
            &wire[..],
            "{ctx}: decode_bytes touched the buffer"
        );
        match (&sliced, &owned) {
            (Err(a), Err(b)) => assert_eq!(a, b, "{ctx}"),
            (Ok(Decoded::Incomplete(a)), Ok(Decoded::Incomplete(b))) => assert_eq!(a, b, "{ctx}"),
            other => panic!("{ctx}: slice and Bytes APIs disagree: {other:?}"),
        }

        let mut codec = GotalkCodec::default();
        let mut buf = BytesMut::from(&wire[..]);
        let capacity_before = buf.capacity();
        let from_codec = codec.decode(&mut buf);

        match v.expect.as_str() {
            "invalid" => {
                let err = sliced.expect_err(ctx);
                assert_eq!(
                    err.protocol_error_code(),
                    ProtocolErrorCode::InvalidMessage,
                    "{ctx}: {err}"
                );
                assert!(
                    !matches!(err, DecodeError::PayloadTooLarge { .. }),
                    "{ctx}: {err}"
                );
                let offset = err.offset().expect("malformed frames have an offset");
                assert!(offset < wire.len(), "{ctx}: offset {offset} outside input");
                match from_codec {
                    Err(CodecError::Decode {
                        error,
                        stream_offset: 0,
                    }) => assert_eq!(error, err, "{ctx}"),
                    other => panic!("{ctx}: codec gave {other:?}"),
                }
            }
            "too-large" => {
                match sliced {
                    Err(DecodeError::PayloadTooLarge {
                        declared,
                        limit,
                        offset,
                    }) => {
                        assert_eq!(limit, DEFAULT_MAX_PAYLOAD, "{ctx}");
                        assert!(declared > limit, "{ctx}");
                        assert_eq!(
                            &wire[offset..offset + 8],
                            format!("{declared:08x}").as_bytes()
                        );
                    }
                    other => panic!("{ctx}: expected PayloadTooLarge, got {other:?}"),
                }
                assert!(
                    matches!(
                        from_codec,
                        Err(CodecError::Decode {
                            error: DecodeError::PayloadTooLarge { .. },
                            stream_offset: 0
                        })
                    ),
                    "{ctx}: codec gave {from_codec:?}"
                );
                assert_eq!(
                    buf.capacity(),
                    capacity_before,
                    "{ctx}: the codec reserved room for a refused payload"
                );
                assert!(buf.capacity() < 1024, "{ctx}");
            }
            "incomplete" => {
                let Ok(Decoded::Incomplete(n)) = sliced else {
                    panic!("{ctx}: expected Incomplete, got {sliced:?}")
                };
                assert!(n > 0, "{ctx}");
                assert!(
                    matches!(from_codec, Ok(None)),
                    "{ctx}: codec gave {from_codec:?}"
                );
                // The codec makes room for what is missing, and no more than a frame.
                assert!(buf.capacity() >= wire.len() + n, "{ctx}");
                assert!(buf.capacity() < 1024, "{ctx}");
                assert_eq!(&buf[..], &wire[..], "{ctx}");
            }
            other => panic!("{ctx}: unknown class {other}"),
        }
    }
}

#[test]
fn too_large_vectors_pass_under_a_larger_limit() {
    // `huge-payload-just-over-limit` declares 16 MiB + 1: one byte more of
    // limit and it is an ordinary incomplete frame.
    let vectors: Vec<Invalid> = lines(INVALID);
    let v = vectors
        .iter()
        .find(|v| v.name == "huge-payload-just-over-limit")
        .expect("vector present");
    let wire = unhex(&v.wire_hex);
    let limits = DecodeLimits::with_max_payload(DEFAULT_MAX_PAYLOAD + 1);
    assert_eq!(
        decode(&wire, &limits).unwrap(),
        Decoded::Incomplete(DEFAULT_MAX_PAYLOAD as usize + 1)
    );
}
