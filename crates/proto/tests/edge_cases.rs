//! Cases the original Go reader gets wrong, limits, and the codec on real streams.

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use gotalk_proto::{
    CodecError, DecodeError, DecodeLimits, Decoded, EncodeError, Field, GotalkCodec, MAX_NAME_LEN,
    Message, ProtocolErrorCode, RequestId, Text, decode, decode_bytes,
};
use tokio::io::AsyncWriteExt;
use tokio_util::codec::{Decoder, Encoder, FramedRead};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

/// Decodes every message of `wire` with the slice API; panics on anything
/// but a clean end.
fn decode_all(wire: &[u8]) -> Vec<Message> {
    let mut rest = wire;
    let mut out = Vec::new();
    while !rest.is_empty() {
        match decode(rest, &limits()).unwrap() {
            Decoded::Complete(msg, used) => {
                out.push(msg.to_owned_bytes());
                rest = &rest[used..];
            }
            Decoded::Incomplete(n) => panic!("{} bytes left over, {n} missing", rest.len()),
        }
    }
    out
}

#[test]
fn twelve_byte_notification_with_empty_name_then_another_message() {
    // The Go reader always reads 13 bytes first and desynchronises here.
    let wire = b"n00000000000h000254d7de9a";
    let expected = vec![
        Message::Notification {
            name: Text::from_static(""),
            payload: Bytes::new(),
        },
        Message::Heartbeat {
            load: 2,
            time: 0x54d7_de9a,
        },
    ];
    assert_eq!(
        decode(wire, &limits()).unwrap(),
        Decoded::Complete(expected[0].as_borrowed(), 12)
    );
    assert_eq!(decode_all(wire), expected);

    let mut codec = GotalkCodec::default();
    let mut buf = BytesMut::from(&wire[..]);
    assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(&expected[0]));
    assert_eq!(&buf[..], b"h000254d7de9a");
    assert_eq!(codec.decode(&mut buf).unwrap().as_ref(), Some(&expected[1]));
    assert!(buf.is_empty());

    // The 12 bytes alone are a whole message, not a short one.
    let mut alone = BytesMut::from(&wire[..12]);
    assert_eq!(
        decode_bytes(&mut alone, &limits()).unwrap(),
        Decoded::Complete(expected[0].clone(), 12)
    );
}

#[test]
fn nine_byte_protocol_error_leaves_the_rest() {
    let wire = b"f00000002R000100000002hi";
    let Decoded::Complete(msg, used) = decode(wire, &limits()).unwrap() else {
        panic!("incomplete")
    };
    assert_eq!(used, 9);
    assert_eq!(
        msg,
        Message::ProtocolError {
            code: ProtocolErrorCode::InvalidMessage
        }
    );
    let mut buf = BytesMut::from(&wire[..]);
    let Decoded::Complete(_, 9) = decode_bytes(&mut buf, &limits()).unwrap() else {
        panic!("not 9 bytes")
    };
    assert_eq!(&buf[..], b"R000100000002hi");
    // Nine bytes alone suffice; nothing more is asked for.
    assert!(matches!(
        decode(&wire[..9], &limits()),
        Ok(Decoded::Complete(_, 9))
    ));
    assert_eq!(decode(&wire[..8], &limits()), Ok(Decoded::Incomplete(1)));
}

fn addr_range(b: &[u8]) -> std::ops::Range<usize> {
    let start = b.as_ptr() as usize;
    start..start + b.len()
}

fn points_into(part: &[u8], whole: &std::ops::Range<usize>) -> bool {
    let p = addr_range(part);
    whole.start <= p.start && p.end <= whole.end
}

/// Payloads and long names are views of the read buffer; names of up to
/// 23 bytes are copied (no reference to the buffer for them).
#[test]
fn decode_bytes_payload_and_long_name_point_into_the_read_buffer() {
    let wire = b"r0001005hello00000005worldn018a-name-of-24-bytes-long.00000003abc";
    let mut buf = BytesMut::with_capacity(256);
    buf.extend_from_slice(wire);
    let whole = addr_range(&buf);
    let base = whole.start;

    let Decoded::Complete(Message::SingleRequest { op, payload, .. }, 26) =
        decode_bytes(&mut buf, &limits()).unwrap()
    else {
        panic!("not the request")
    };
    assert!(points_into(&payload, &whole));
    assert_eq!(payload.as_ptr() as usize, base + 21);
    assert_eq!(op.as_str(), "hello");
    assert!(!points_into(op.as_bytes(), &whole));

    let Decoded::Complete(Message::Notification { name, payload }, 39) =
        decode_bytes(&mut buf, &limits()).unwrap()
    else {
        panic!("not the notification")
    };
    assert_eq!(payload.as_ptr() as usize, base + 26 + 36);
    assert_eq!(name.as_bytes().as_ptr() as usize, base + 26 + 4);
    assert_eq!(name.as_str(), "a-name-of-24-bytes-long.");
    assert!(buf.is_empty());
}

#[test]
fn codec_payload_points_into_the_read_buffer() {
    let payload_len = 64 * 1024;
    let msg = Message::SingleResult {
        id: RequestId::from_u32(7),
        payload: Bytes::from(vec![0xa5; payload_len]),
    };
    let mut buf = BytesMut::from(&msg.to_vec().unwrap()[..]);
    let whole = addr_range(&buf);
    let got = GotalkCodec::default().decode(&mut buf).unwrap().unwrap();
    assert_eq!(got, msg);
    let Message::SingleResult { payload, .. } = got else {
        unreachable!()
    };
    assert!(points_into(&payload, &whole), "payload was copied");
    assert_eq!(payload.as_ptr() as usize, whole.start + 13);
}

#[test]
fn huge_declared_size_costs_nothing() {
    // 23 bytes declaring a 4 GiB payload: the Go server allocates it at once.
    let wire = b"r0001004echoffffffffabc";
    assert_eq!(wire.len(), 23);
    let expected = DecodeError::PayloadTooLarge {
        declared: u32::MAX,
        limit: limits().max_payload,
        offset: 12,
    };
    assert_eq!(decode(wire, &limits()), Err(expected.clone()));
    // Refused as soon as the size field is complete, payload or not.
    assert_eq!(decode(&wire[..20], &limits()), Err(expected.clone()));

    let mut buf = BytesMut::from(&wire[..]);
    let capacity = buf.capacity();
    let err = GotalkCodec::default().decode(&mut buf).unwrap_err();
    assert!(matches!(err, CodecError::Decode { error, stream_offset: 0 } if error == expected));
    assert_eq!(buf.capacity(), capacity, "the codec reserved for it");
    assert_eq!(&buf[..], &wire[..]);
}

#[test]
fn a_frame_within_the_limit_reserves_only_that_frame() {
    let limits = DecodeLimits::with_max_payload(1 << 20);
    let mut codec = GotalkCodec::new(limits);
    let mut buf = BytesMut::from(&b"R000100010000"[..]);
    assert!(codec.decode(&mut buf).unwrap().is_none());
    assert!(buf.capacity() >= 13 + 0x10000);
    assert!(buf.capacity() <= 2 * (13 + 0x10000));
    // One byte over the configured limit is refused.
    let mut over = BytesMut::from(&b"R000100100001"[..]);
    assert!(matches!(
        codec.decode(&mut over),
        Err(CodecError::Decode {
            error: DecodeError::PayloadTooLarge {
                declared: 0x10_0001,
                limit: 0x10_0000,
                offset: 5
            },
            ..
        })
    ));
}

#[test]
fn names_up_to_4095_bytes() {
    let longest = "é".repeat(MAX_NAME_LEN / 2) + "x"; // 4095 bytes, multi-byte chars
    assert_eq!(longest.len(), 4095);
    for msg in [
        Message::SingleRequest {
            id: RequestId::new(*b"0001"),
            op: Text::from(longest.as_str()),
            payload: Bytes::from_static(b"p"),
        },
        Message::Notification {
            name: Text::from(longest.as_str()),
            payload: Bytes::new(),
        },
    ] {
        let wire = msg.to_vec().unwrap();
        assert_eq!(wire.len(), msg.header_len() + msg.payload_len());
        assert!(wire.windows(3).any(|w| w == b"fff"), "size written as fff");
        assert_eq!(
            decode(&wire, &limits()).unwrap(),
            Decoded::Complete(msg.as_borrowed(), wire.len())
        );
    }

    let too_long = Message::StreamRequest {
        id: RequestId::new(*b"0001"),
        op: Text::from("x".repeat(4096)),
        payload: Bytes::new(),
    };
    let err = EncodeError::NameTooLong { len: 4096 };
    assert_eq!(too_long.validate(), Err(err.clone()));
    assert_eq!(too_long.to_vec(), Err(err.clone()));
    let mut v = Vec::new();
    assert_eq!(too_long.encode_header(&mut v), Err(err.clone()));
    assert_eq!(too_long.encode(&mut v), Err(err.clone()));
    assert!(v.is_empty(), "nothing written on error");
    let mut dst = BytesMut::new();
    match Encoder::encode(&mut GotalkCodec::default(), &too_long, &mut dst) {
        Err(CodecError::Encode(e)) => assert_eq!(e, err),
        other => panic!("codec encoded a 4096-byte name: {other:?}"),
    }
    assert!(dst.is_empty());
}

#[test]
fn upper_case_hex_is_accepted_in_every_numeric_field() {
    let long_name = format!("r00010AA{}00000000", "A".repeat(0xaa));
    let cases: [(&[u8], Message); 5] = [
        (
            long_name.as_bytes(),
            Message::SingleRequest {
                id: RequestId::new(*b"0001"),
                op: Text::from("A".repeat(0xaa)),
                payload: Bytes::new(),
            },
        ),
        (
            b"e0001000013880000000Ahellohello",
            Message::RetryResult {
                id: RequestId::new(*b"0001"),
                wait_ms: 5000,
                payload: Bytes::from_static(b"hellohello"),
            },
        ),
        (
            b"e0001DEADBEEF00000000",
            Message::RetryResult {
                id: RequestId::new(*b"0001"),
                wait_ms: 0xdead_beef,
                payload: Bytes::new(),
            },
        ),
        (
            b"hFFFF54D7DE9A",
            Message::Heartbeat {
                load: 0xffff,
                time: 0x54d7_de9a,
            },
        ),
        (
            b"fABCDEF01",
            Message::ProtocolError {
                code: ProtocolErrorCode::Other(0xabcd_ef01),
            },
        ),
    ];
    for (wire, msg) in cases {
        assert_eq!(
            decode(wire, &limits()).unwrap(),
            Decoded::Complete(msg.as_borrowed(), wire.len()),
            "{}",
            String::from_utf8_lossy(wire)
        );
        // Written back in lower case.
        let out = msg.to_vec().unwrap();
        assert_eq!(out.len(), wire.len());
        assert_ne!(out, wire);
    }
}

#[test]
fn signs_spaces_and_0x_are_refused_with_field_and_offset() {
    let cases: [(&[u8], Field, u8, usize); 12] = [
        (b"R0001+0000005hello", Field::PayloadSize, b'+', 5),
        (b"R0001 0000005hello", Field::PayloadSize, b' ', 5),
        (b"R00010x000005hello", Field::PayloadSize, b'x', 6),
        (b"R00010000000 ", Field::PayloadSize, b' ', 12),
        (b"r0001+04echo00000000", Field::NameSize, b'+', 5),
        (b"n 03log00000000", Field::NameSize, b' ', 1),
        (b"n003log0x000000", Field::PayloadSize, b'x', 8),
        (b"e0001-0000001000000000", Field::Wait, b'-', 5),
        (b"e00010000000 00000000", Field::Wait, b' ', 12),
        (b"h+00154d7de9a", Field::Load, b'+', 1),
        (b"h00010x54d7de", Field::Time, b'x', 6),
        (b"f0x000002", Field::Code, b'x', 2),
    ];
    for (wire, field, byte, offset) in cases {
        let err = decode(wire, &limits()).unwrap_err();
        assert_eq!(
            err,
            DecodeError::InvalidHexDigit {
                field,
                byte,
                offset
            },
            "{}",
            String::from_utf8_lossy(wire)
        );
        assert_eq!(err.field(), Some(field));
        assert_eq!(err.protocol_error_code(), ProtocolErrorCode::InvalidMessage);
    }
    assert_eq!(
        decode(b"Q0001", &limits()),
        Err(DecodeError::UnknownMessageType {
            byte: b'Q',
            offset: 0
        })
    );
}

/// A multi-message stream containing every type, binary IDs and empty payloads.
fn sample_stream() -> (Vec<Message>, Vec<u8>) {
    let messages = vec![
        Message::SingleRequest {
            id: RequestId::from_u32(0),
            op: Text::from_static("echo"),
            payload: Bytes::from_static(b"{\"message\":\"Hello World\"}"),
        },
        Message::StreamRequest {
            id: RequestId::new(*b"\r\n\0!"),
            op: Text::from_static("upload"),
            payload: Bytes::new(),
        },
        Message::StreamRequestPart {
            id: RequestId::new(*b"\r\n\0!"),
            payload: Bytes::from(vec![b'z'; 3000]),
        },
        Message::StreamRequestPart {
            id: RequestId::new(*b"\r\n\0!"),
            payload: Bytes::new(),
        },
        Message::Notification {
            name: Text::from_static(""),
            payload: Bytes::new(),
        },
        Message::SingleResult {
            id: RequestId::from_u32(0),
            payload: Bytes::from_static(b"ok"),
        },
        Message::StreamResult {
            id: RequestId::from_u32(1),
            payload: Bytes::new(),
        },
        Message::ErrorResult {
            id: RequestId::from_u32(2),
            payload: Bytes::from_static(b"unknown operation \"x\""),
        },
        Message::RetryResult {
            id: RequestId::from_u32(3),
            wait_ms: 250,
            payload: Bytes::from_static(b"request rate limit"),
        },
        Message::Heartbeat {
            load: 0,
            time: 1_700_000_000,
        },
        Message::ProtocolError {
            code: ProtocolErrorCode::Timeout,
        },
    ];
    let mut wire = Vec::new();
    for m in &messages {
        m.encode(&mut wire).unwrap();
    }
    (messages, wire)
}

#[tokio::test]
async fn framed_read_over_a_duplex_in_small_writes() {
    let (messages, wire) = sample_stream();
    // A pipe smaller than the largest frame forces partial reads.
    let (mut tx, rx) = tokio::io::duplex(64);
    let writer = tokio::spawn(async move {
        for piece in wire.chunks(7) {
            tx.write_all(piece).await.unwrap();
        }
        tx.shutdown().await.unwrap();
    });
    let got: Vec<Message> = FramedRead::new(rx, GotalkCodec::default())
        .map(|r| r.unwrap())
        .collect()
        .await;
    writer.await.unwrap();
    assert_eq!(got, messages);
}

#[tokio::test]
async fn framed_read_over_a_byte_slice() {
    let (messages, wire) = sample_stream();
    let mut framed = FramedRead::new(&wire[..], GotalkCodec::default());
    let mut got = Vec::new();
    while let Some(item) = framed.next().await {
        got.push(item.unwrap());
    }
    assert_eq!(got, messages);
    assert_eq!(framed.decoder().decoded_bytes(), wire.len() as u64);
}

#[tokio::test]
async fn framed_read_reports_a_bad_frame_at_its_stream_offset() {
    let (messages, mut wire) = sample_stream();
    let good_len = wire.len() as u64;
    wire.extend_from_slice(b"R0001zz000000");
    let mut framed = FramedRead::new(&wire[..], GotalkCodec::default());
    for expected in &messages {
        assert_eq!(&framed.next().await.unwrap().unwrap(), expected);
    }
    match framed.next().await {
        Some(Err(CodecError::Decode {
            error,
            stream_offset,
        })) => {
            assert_eq!(stream_offset, good_len);
            assert_eq!(
                error,
                DecodeError::InvalidHexDigit {
                    field: Field::PayloadSize,
                    byte: b'z',
                    offset: 5
                }
            );
        }
        other => panic!("expected a decode error, got {other:?}"),
    }
}

#[tokio::test]
async fn framed_read_refuses_a_truncated_last_frame() {
    let (_, mut wire) = sample_stream();
    let good_len = wire.len() as u64;
    wire.extend_from_slice(b"R00010000000a12345");
    let mut framed = FramedRead::new(&wire[..], GotalkCodec::default());
    let mut last = None;
    for _ in 0..32 {
        match framed.next().await {
            Some(Ok(_)) => {}
            other => {
                last = Some(other);
                break;
            }
        }
    }
    // The codec says the frame was cut short, where, and by how much.
    match last {
        Some(Some(Err(CodecError::Decode {
            error,
            stream_offset,
        }))) => {
            assert_eq!(stream_offset, good_len);
            assert_eq!(
                error,
                DecodeError::Truncated {
                    offset: 18,
                    missing: 5
                }
            );
        }
        other => panic!("expected a truncated frame, got {other:?}"),
    }
}
