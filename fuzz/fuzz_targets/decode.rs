//! Arbitrary bytes through the slice API, the zero-copy `BytesMut` API and the
//! tokio-util codec: no panic, the three agree, errors point inside the
//! input, and no buffer grows past one maximum frame under a 64 KiB limit.

#![no_main]

use bytes::BytesMut;
use gotalk_proto::{
    CodecError, DecodeError, DecodeLimits, Decoded, GotalkCodec, Message, ProtocolErrorCode,
    decode, decode_bytes,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const LIMITS: DecodeLimits = DecodeLimits::with_max_payload(64 * 1024);

/// How decoding the whole input ended.
#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Incomplete(usize),
    Error(DecodeError),
}

/// Checks one error against the input it came from.
fn check_error(e: &DecodeError, rest: &[u8]) {
    let offset = e.offset().expect("frame errors carry an offset");
    assert!(offset < rest.len(), "{e} points past {} bytes", rest.len());
    assert_eq!(e.protocol_error_code(), ProtocolErrorCode::InvalidMessage);
}

fn via_slice(data: &[u8]) -> (Vec<(Message, usize)>, End) {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        match decode(rest, &LIMITS) {
            Ok(Decoded::Complete(m, used)) => {
                assert!(used > 0 && used <= rest.len());
                assert!(used <= LIMITS.max_frame_len());
                // Lengths do not depend on hex case, so re-encoding is exact in size.
                assert_eq!(m.encoded_len(), used);
                let again = m.to_vec().expect("a decoded message re-encodes");
                match decode(&again, &LIMITS) {
                    Ok(Decoded::Complete(m2, n)) => {
                        assert_eq!(m2, m);
                        assert_eq!(n, used);
                    }
                    other => panic!("re-encoded message does not decode: {other:?}"),
                }
                out.push((m.to_owned_bytes(), used));
                rest = &rest[used..];
            }
            Ok(Decoded::Incomplete(n)) => {
                assert!(n > 0);
                assert!(
                    rest.len() + n <= LIMITS.max_frame_len(),
                    "asks past a frame"
                );
                return (out, End::Incomplete(n));
            }
            Err(e) => {
                check_error(&e, rest);
                return (out, End::Error(e));
            }
        }
    }
    (out, End::Clean)
}

fn via_bytes(data: &[u8]) -> (Vec<(Message, usize)>, End) {
    let mut buf = BytesMut::from(data);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let before = buf.len();
        match decode_bytes(&mut buf, &LIMITS) {
            Ok(Decoded::Complete(m, used)) => {
                assert_eq!(buf.len(), before - used);
                out.push((m, used));
            }
            Ok(Decoded::Incomplete(n)) => {
                assert_eq!(buf.len(), before, "buffer changed on Incomplete");
                return (out, End::Incomplete(n));
            }
            Err(e) => {
                assert_eq!(buf.len(), before, "buffer changed on error");
                return (out, End::Error(e));
            }
        }
    }
    (out, End::Clean)
}

fn via_codec(data: &[u8], expected: &[(Message, usize)]) -> End {
    let mut codec = GotalkCodec::new(LIMITS);
    let mut buf = BytesMut::from(data);
    // A frame never needs more room than the input plus one maximum frame;
    // the slack covers BytesMut's growth policy (doubling, 64 KiB minimum).
    let bound = 2 * (data.len() + LIMITS.max_frame_len()) + 64 * 1024;
    let mut offset = 0u64;
    for (want, used) in expected {
        let got = codec
            .decode(&mut buf)
            .expect("codec fails where decode_bytes did not");
        assert_eq!(got.as_ref(), Some(want));
        offset += *used as u64;
        assert_eq!(codec.decoded_bytes(), offset);
        assert!(buf.capacity() <= bound);
    }
    if buf.is_empty() {
        assert!(matches!(codec.decode(&mut buf), Ok(None)));
        return End::Clean;
    }
    let len = buf.len();
    let end = match codec.decode(&mut buf) {
        Ok(None) => {
            let Ok(Decoded::Incomplete(n)) = decode_bytes(&mut buf.clone(), &LIMITS) else {
                unreachable!("codec said incomplete")
            };
            End::Incomplete(n)
        }
        Ok(Some(m)) => panic!("codec decoded an extra {m:?}"),
        Err(CodecError::Decode {
            error,
            stream_offset,
        }) => {
            assert_eq!(stream_offset, offset);
            End::Error(error)
        }
        Err(e) => panic!("unexpected codec error {e}"),
    };
    assert_eq!(buf.len(), len);
    assert!(
        buf.capacity() <= bound,
        "capacity {} for {} input bytes",
        buf.capacity(),
        data.len()
    );
    end
}

fuzz_target!(|data: &[u8]| {
    let (sliced, end) = via_slice(data);
    let (owned, owned_end) = via_bytes(data);
    assert_eq!(sliced, owned);
    assert_eq!(end, owned_end);
    assert_eq!(via_codec(data, &owned), end);
});
