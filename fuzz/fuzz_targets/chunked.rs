//! Arbitrary bytes fed in chunks decode exactly as when fed whole: the same
//! messages, then the same error or the same number of missing bytes.
//!
//! Three chunkings are checked per input: one byte at a time (every prefix of
//! every frame), chunk sizes drawn from a generator seeded by the input (so
//! each mutation also changes the split points), through both `decode_bytes`
//! and the tokio-util codec.

#![no_main]

use bytes::BytesMut;
use gotalk_proto::{
    CodecError, DecodeError, DecodeLimits, Decoded, GotalkCodec, Message, decode_bytes,
};
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::Decoder;

const LIMITS: DecodeLimits = DecodeLimits::with_max_payload(64 * 1024);

#[derive(Debug, PartialEq)]
enum End {
    Clean,
    Incomplete(usize),
    Error(DecodeError),
}

/// Decodes what `buf` holds; `frames` are the whole-input frame lengths, used
/// to check that Incomplete never asks past the end of the frame.
fn drain(
    buf: &mut BytesMut,
    out: &mut Vec<Message>,
    frames: Option<&[usize]>,
) -> Result<Option<usize>, DecodeError> {
    while !buf.is_empty() {
        match decode_bytes(buf, &LIMITS)? {
            Decoded::Complete(m, _) => out.push(m),
            Decoded::Incomplete(n) => {
                assert!(n > 0);
                if let Some(len) = frames.and_then(|f| f.get(out.len())) {
                    assert!(
                        buf.len() + n <= *len,
                        "asked {n} with {} of {len}",
                        buf.len()
                    );
                }
                return Ok(Some(n));
            }
        }
    }
    Ok(None)
}

fn feed(
    data: &[u8],
    sizes: impl Iterator<Item = usize>,
    frames: Option<&[usize]>,
) -> (Vec<Message>, End) {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut pending = None;
    let mut rest = data;
    for size in sizes {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.clamp(1, rest.len()));
        rest = later;
        buf.extend_from_slice(now);
        match drain(&mut buf, &mut out, frames) {
            Ok(n) => pending = n,
            Err(e) => return (out, End::Error(e)),
        }
    }
    assert!(rest.is_empty(), "ran out of chunk sizes");
    (out, pending.map_or(End::Clean, End::Incomplete))
}

fn feed_codec(data: &[u8], sizes: impl Iterator<Item = usize>) -> (Vec<Message>, End) {
    let mut codec = GotalkCodec::new(LIMITS);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut rest = data;
    for size in sizes {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.clamp(1, rest.len()));
        rest = later;
        buf.extend_from_slice(now);
        // Each turn decodes a frame or stops, so the buffer length bounds it.
        for _ in 0..=buf.len() {
            match codec.decode(&mut buf) {
                Ok(Some(m)) => out.push(m),
                Ok(None) => break,
                Err(CodecError::Decode {
                    error,
                    stream_offset,
                }) => {
                    let before: usize = out.iter().map(Message::encoded_len).sum();
                    assert_eq!(stream_offset, before as u64);
                    return (out, End::Error(error));
                }
                Err(e) => panic!("unexpected codec error {e}"),
            }
        }
    }
    let end = if buf.is_empty() {
        End::Clean
    } else {
        match decode_bytes(&mut buf, &LIMITS) {
            Ok(Decoded::Incomplete(n)) => End::Incomplete(n),
            other => panic!("codec left a decodable buffer: {other:?}"),
        }
    };
    (out, end)
}

/// splitmix64: chunk sizes from 1 to 64, with an occasional big one.
fn sizes(seed: u64) -> impl Iterator<Item = usize> {
    let mut state = seed;
    std::iter::repeat_with(move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if z.is_multiple_of(8) {
            (z >> 8) as usize % 4096 + 1
        } else {
            (z >> 8) as usize % 64 + 1
        }
    })
}

/// FNV-1a of the input, to seed the chunk sizes.
fn seed(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

fuzz_target!(|data: &[u8]| {
    let whole = feed(data, std::iter::once(data.len()), None);

    // Frame lengths of the messages the whole input holds.
    let frames: Vec<usize> = whole.0.iter().map(Message::encoded_len).collect();

    let bytewise = feed(data, std::iter::repeat(1), Some(&frames));
    assert_eq!(bytewise, whole, "byte at a time");

    let s = seed(data);
    assert_eq!(feed(data, sizes(s), Some(&frames)), whole, "random chunks");
    assert_eq!(feed_codec(data, sizes(s)), whole, "codec, random chunks");
    assert_eq!(
        feed_codec(data, std::iter::repeat(1)),
        whole,
        "codec, byte at a time"
    );
});
