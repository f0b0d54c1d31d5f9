//! Steady-state decoding, for comparisons on a noisy machine: the minimum
//! and quartiles of many short runs, where criterion's mean moves with the
//! load. Each run decodes 1 024 back-to-back frames (the small request of
//! the `codec` bench, or a result with the same payload) from a read buffer
//! split off a larger chunk, as the peer's driver has it, and drops each
//! message at once.
//!
//! Run: `cargo bench -p gotalk-proto --bench steady` (a few seconds;
//! arguments after `--`: a number of runs per path, a word to keep only
//! the paths whose label contains it). For instruction counts, which do not
//! depend on the load, one path at a time:
//! `valgrind --tool=callgrind --toggle-collect='steady::run_*' target/release/deps/steady-HASH 100 request/codec`
//! (then divide the total by 100 × 1 024 frames).

// A bench reports on stdout.
#![allow(clippy::print_stdout)]

use std::{hint::black_box, time::Instant};

use bytes::{Bytes, BytesMut};
use gotalk_proto::{
    DecodeLimits, Decoded, GotalkCodec, Message, RequestId, Text, decode, decode_bytes,
};
use tokio_util::codec::Decoder;

/// Frames per run.
const FRAMES: usize = 1024;

#[inline(never)]
fn run_slice(stream: &[u8], limits: &DecodeLimits) -> usize {
    let mut decoded = 0;
    let mut rest = black_box(stream);
    while let Ok(Decoded::Complete(msg, used)) = decode(rest, limits) {
        black_box(msg);
        rest = &rest[used..];
        decoded += 1;
    }
    decoded
}

#[inline(never)]
fn run_decode_bytes(buf: &mut BytesMut, limits: &DecodeLimits) -> usize {
    let mut decoded = 0;
    while let Ok(Decoded::Complete(msg, _)) = decode_bytes(buf, limits) {
        black_box(msg);
        decoded += 1;
    }
    decoded
}

#[inline(never)]
fn run_codec(buf: &mut BytesMut, codec: &mut GotalkCodec) -> usize {
    let mut decoded = 0;
    while let Ok(Some(msg)) = codec.decode(buf) {
        black_box(msg);
        decoded += 1;
    }
    decoded
}

/// A read buffer holding `stream`, split off a larger chunk (so shared).
fn read_buffer(stream: &[u8]) -> (BytesMut, BytesMut) {
    let mut chunk = BytesMut::with_capacity(stream.len() + 4096);
    chunk.extend_from_slice(stream);
    let buf = chunk.split();
    (chunk, buf)
}

/// Runs `path` `runs` times over `stream`; prints ns per frame.
fn measure(label: &str, stream: &[u8], runs: usize) {
    let limits = DecodeLimits::default();
    let mut codec = GotalkCodec::default();
    let mut per_frame = Vec::with_capacity(runs);
    for _ in 0..runs {
        let (chunk, mut buf) = read_buffer(stream);
        let start = Instant::now();
        let decoded = match label.rsplit('/').next() {
            Some("slice") => run_slice(stream, &limits),
            Some("decode_bytes") => run_decode_bytes(&mut buf, &limits),
            Some("codec") => run_codec(&mut buf, &mut codec),
            _ => unreachable!("unknown path {label}"),
        };
        let elapsed = start.elapsed();
        assert_eq!(decoded, FRAMES, "{label} stopped early");
        per_frame.push(elapsed.as_nanos() as f64 / FRAMES as f64);
        drop(chunk);
    }
    per_frame.sort_by(f64::total_cmp);
    let at = |q: usize| per_frame[(runs - 1) * q / 4];
    println!(
        "{label:<32} min {:6.1}  p25 {:6.1}  median {:6.1} ns/frame",
        per_frame[0],
        at(1),
        at(2)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; a number sets the runs per path, any
    // other word keeps only the paths whose label contains it.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let runs = args.iter().find_map(|a| a.parse().ok()).unwrap_or(3000);
    let filter = args.iter().find(|a| a.parse::<usize>().is_err());
    let payload = Bytes::from_static(b"{\"message\":\"Hello gotalk world\"}");
    let id = RequestId::new(*b"0001");
    let request = Message::SingleRequest {
        id,
        op: Text::from_static("echo"),
        payload: payload.clone(),
    };
    let result = Message::SingleResult { id, payload };
    for (kind, msg) in [("request", request), ("result", result)] {
        let stream = msg.to_vec().unwrap().repeat(FRAMES);
        for path in ["slice", "decode_bytes", "codec"] {
            let label = format!("{kind}/{path}");
            if filter.is_none_or(|f| label.contains(f.as_str())) {
                measure(&label, &stream, runs);
            }
        }
    }
}
