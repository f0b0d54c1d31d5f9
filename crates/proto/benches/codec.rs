//! Codec benchmarks: small requests per message, large payloads per byte,
//! and a hand-written header parser as a baseline for the nom decoder.
//!
//! Run: `cargo bench -p gotalk-proto --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use gotalk_proto::{
    DecodeLimits, Decoded, GotalkCodec, Message, RequestId, Text, decode, decode_bytes,
};
use tokio_util::codec::{Decoder, Encoder};

/// Messages per buffer in the steady-state (`decode_bytes`, codec) benches.
const BATCH: usize = 1024;

/// `r0001004echo00000020` + 32 bytes.
fn small_request() -> Message {
    Message::SingleRequest {
        id: RequestId::new(*b"0001"),
        op: Text::from_static("echo"),
        payload: Bytes::from_static(b"{\"message\":\"Hello gotalk world\"}"),
    }
}

fn result_with_payload(len: usize) -> Message {
    Message::SingleResult {
        id: RequestId::from_u32(1),
        payload: Bytes::from(vec![b'x'; len]),
    }
}

/// A hand-written, allocation-free decoder producing the same
/// `Message<&[u8]>` with the same checks (hex digits, UTF-8 names, payload
/// limit), to measure what `nom`'s combinators cost.
mod baseline {
    use gotalk_proto::{Decoded, Message, ProtocolErrorCode, RequestId, Text};

    /// Something was malformed at this offset.
    #[derive(Debug)]
    pub(crate) struct Malformed(#[allow(dead_code)] pub(crate) usize);

    #[inline(always)]
    fn hex(buf: &[u8], at: usize, width: usize) -> Result<u32, Malformed> {
        let mut v = 0u32;
        for (i, &b) in buf[at..at + width].iter().enumerate() {
            let d = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                b'A'..=b'F' => b - b'A' + 10,
                _ => return Err(Malformed(at + i)),
            };
            v = (v << 4) | u32::from(d);
        }
        Ok(v)
    }

    /// Decodes one message from the start of `buf`.
    pub(crate) fn decode(
        buf: &[u8],
        max_payload: u32,
    ) -> Result<Decoded<Message<&[u8]>>, Malformed> {
        let Some(&tag) = buf.first() else {
            return Ok(Decoded::Incomplete(1));
        };
        let need = |n: usize| {
            if buf.len() < n {
                Some(Decoded::Incomplete(n - buf.len()))
            } else {
                None
            }
        };
        let id = || RequestId::new([buf[1], buf[2], buf[3], buf[4]]);
        // (header length, name range, payload size, wait)
        let (header, name, size, wait) = match tag {
            b'r' | b's' | b'n' => {
                let at = if tag == b'n' { 1 } else { 5 };
                if let Some(i) = need(at + 3) {
                    return Ok(i);
                }
                let len = hex(buf, at, 3)? as usize;
                let header = at + 3 + len + 8;
                if let Some(i) = need(header) {
                    return Ok(i);
                }
                let name = at + 3..at + 3 + len;
                (header, name, hex(buf, header - 8, 8)?, 0)
            }
            b'p' | b'R' | b'S' | b'E' => {
                if let Some(i) = need(13) {
                    return Ok(i);
                }
                (13, 0..0, hex(buf, 5, 8)?, 0)
            }
            b'e' => {
                if let Some(i) = need(21) {
                    return Ok(i);
                }
                let wait = hex(buf, 5, 8)?;
                (21, 0..0, hex(buf, 13, 8)?, wait)
            }
            b'h' => {
                if let Some(i) = need(13) {
                    return Ok(i);
                }
                let load = hex(buf, 1, 4)? as u16;
                let time = hex(buf, 5, 8)?;
                return Ok(Decoded::Complete(Message::Heartbeat { load, time }, 13));
            }
            b'f' => {
                if let Some(i) = need(9) {
                    return Ok(i);
                }
                let code = ProtocolErrorCode::from_u32(hex(buf, 1, 8)?);
                return Ok(Decoded::Complete(Message::ProtocolError { code }, 9));
            }
            _ => return Err(Malformed(0)),
        };
        if size > max_payload {
            return Err(Malformed(header - 8));
        }
        let total = header + size as usize;
        if let Some(i) = need(total) {
            return Ok(i);
        }
        let payload = &buf[header..total];
        let text = || Text::new(&buf[name.clone()]).map_err(|_| Malformed(name.start));
        let msg = match tag {
            b'r' => Message::SingleRequest {
                id: id(),
                op: text()?,
                payload,
            },
            b's' => Message::StreamRequest {
                id: id(),
                op: text()?,
                payload,
            },
            b'n' => Message::Notification {
                name: text()?,
                payload,
            },
            b'p' => Message::StreamRequestPart { id: id(), payload },
            b'R' => Message::SingleResult { id: id(), payload },
            b'S' => Message::StreamResult { id: id(), payload },
            b'E' => Message::ErrorResult { id: id(), payload },
            _ => Message::RetryResult {
                id: id(),
                wait_ms: wait,
                payload,
            },
        };
        Ok(Decoded::Complete(msg, total))
    }
}

fn small_request_decode(c: &mut Criterion) {
    let msg = small_request();
    let wire = msg.to_vec().unwrap();
    let limits = DecodeLimits::default();
    // Both decoders agree before they are compared.
    assert_eq!(
        baseline::decode(&wire, limits.max_payload).unwrap(),
        decode(&wire, &limits).unwrap()
    );

    let mut g = c.benchmark_group("small_request/decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("slice", |b| {
        b.iter(|| decode(black_box(&wire[..]), black_box(&limits)))
    });
    g.bench_function("slice_handwritten_baseline", |b| {
        b.iter(|| baseline::decode(black_box(&wire[..]), black_box(limits.max_payload)))
    });

    let stream: Vec<u8> = wire.repeat(BATCH);
    // The stream loops below stop at the first non-Complete: check they do not stop early.
    let mut check = BytesMut::from(&stream[..]);
    for _ in 0..BATCH {
        assert!(matches!(
            decode_bytes(&mut check, &limits),
            Ok(Decoded::Complete(..))
        ));
    }
    assert!(check.is_empty());
    g.throughput(Throughput::Elements(BATCH as u64));
    g.bench_function(BenchmarkId::new("slice_stream", BATCH), |b| {
        b.iter(|| {
            let mut rest = black_box(&stream[..]);
            while let Ok(Decoded::Complete(m, used)) = decode(rest, &limits) {
                black_box(m);
                rest = &rest[used..];
            }
        })
    });
    g.bench_function(BenchmarkId::new("decode_bytes_stream", BATCH), |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                while let Ok(Decoded::Complete(m, _)) = decode_bytes(&mut buf, &limits) {
                    black_box(m);
                }
                buf
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function(BenchmarkId::new("codec_stream", BATCH), |b| {
        let mut codec = GotalkCodec::default();
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                while let Ok(Some(m)) = codec.decode(&mut buf) {
                    black_box(m);
                }
                buf
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn small_request_encode(c: &mut Criterion) {
    let msg = small_request();
    let mut buf = BytesMut::with_capacity(4096);
    msg.encode(&mut buf).unwrap();
    assert_eq!(
        &buf[..],
        b"r0001004echo00000020{\"message\":\"Hello gotalk world\"}"
    );
    let mut g = c.benchmark_group("small_request/encode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("encode", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&msg).encode(&mut buf).unwrap();
            black_box(&buf);
        })
    });
    g.bench_function("encode_header", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&msg).encode_header(&mut buf).unwrap();
            black_box(&buf);
        })
    });
    g.bench_function("codec", |b| {
        let mut codec = GotalkCodec::default();
        b.iter(|| {
            buf.clear();
            Encoder::encode(&mut codec, black_box(&msg), &mut buf).unwrap();
            black_box(&buf);
        })
    });
    g.bench_function("to_vec", |b| b.iter(|| black_box(&msg).to_vec().unwrap()));
    g.finish();
}

const SIZES: [(usize, &str); 4] = [
    (1 << 10, "1KiB"),
    (64 << 10, "64KiB"),
    (1 << 20, "1MiB"),
    (16 << 20, "16MiB"),
];

/// Times `decode_one` on fresh buffers holding the frame `wire` (whose
/// header is `header_len` bytes), built and freed outside the timed region.
///
/// Rebuilding a 1 MiB buffer costs thousands of times more than decoding it
/// zero-copy, so timing every iteration criterion asks for would take hours:
/// at most `MAX_TIMED` decodes are timed per sample and their time is scaled
/// to `iters`. Only the header is copied into each buffer; the payload is
/// left as zeroed memory the decoder never reads. Copying megabytes of
/// payload there would evict the caches before every timed decode and
/// measure the refill, not the decoder.
fn sampled(
    iters: u64,
    wire: &[u8],
    header_len: usize,
    mut decode_one: impl FnMut(&mut BytesMut),
) -> Duration {
    const GROUP: u64 = 16;
    const MAX_TIMED: u64 = 64;
    let timed = iters.clamp(1, MAX_TIMED);
    let mut done = 0;
    let mut elapsed = Duration::ZERO;
    while done < timed {
        let n = (timed - done).min(GROUP);
        let mut bufs: Vec<BytesMut> = (0..n)
            .map(|_| {
                let mut frame = BytesMut::zeroed(wire.len());
                frame[..header_len].copy_from_slice(&wire[..header_len]);
                frame
            })
            .collect();
        let start = Instant::now();
        for buf in &mut bufs {
            decode_one(black_box(buf));
        }
        elapsed += start.elapsed();
        done += n;
        drop(bufs);
    }
    elapsed.mul_f64(iters as f64 / timed as f64)
}

fn large_payload_decode(c: &mut Criterion) {
    let limits = DecodeLimits::default();
    let mut g = c.benchmark_group("payload/decode");
    for (size, label) in SIZES {
        let wire = result_with_payload(size).to_vec().unwrap();
        g.throughput(Throughput::Bytes(wire.len() as u64));
        g.bench_function(BenchmarkId::new("slice", label), |b| {
            b.iter(|| decode(black_box(&wire[..]), &limits))
        });
        if size <= 1 << 20 {
            g.bench_function(BenchmarkId::new("decode_bytes", label), |b| {
                b.iter_custom(|iters| {
                    sampled(iters, &wire, 13, |buf| {
                        let Ok(Decoded::Complete(m, _)) = decode_bytes(buf, &limits) else {
                            panic!("not a whole frame")
                        };
                        black_box(m);
                    })
                })
            });
            g.bench_function(BenchmarkId::new("codec", label), |b| {
                let mut codec = GotalkCodec::default();
                b.iter_custom(|iters| {
                    sampled(iters, &wire, 13, |buf| {
                        black_box(codec.decode(buf).unwrap().unwrap());
                    })
                })
            });
        }
    }
    g.finish();
}

fn large_payload_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("payload/encode");
    for (size, label) in &SIZES[..3] {
        let msg = result_with_payload(*size);
        let mut buf = BytesMut::with_capacity(msg.encoded_len());
        g.throughput(Throughput::Bytes(msg.encoded_len() as u64));
        g.bench_function(BenchmarkId::new("encode_copy", label), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode(&mut buf).unwrap();
                black_box(&buf);
            })
        });
        // What a vectored writer pays: the header only, the payload is not touched.
        g.bench_function(BenchmarkId::new("encode_header", label), |b| {
            b.iter(|| {
                buf.clear();
                black_box(&msg).encode_header(&mut buf).unwrap();
                black_box(&buf);
            })
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    small_request_decode,
    small_request_encode,
    large_payload_decode,
    large_payload_encode
);
criterion_main!(benches);
