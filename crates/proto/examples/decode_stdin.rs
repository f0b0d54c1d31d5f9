//! Decodes a raw gotalk capture from standard input, one message per line.
//!
//! ```text
//! cargo run -p gotalk-proto --example decode_stdin < capture.bin
//! printf '01r0001004echo00000002hi' | cargo run -p gotalk-proto --example decode_stdin
//! echo 72 30 30 30 31 ... | cargo run -p gotalk-proto --example decode_stdin -- --hex
//! ```
//!
//! A leading two-digit protocol version (`01`) is recognised and skipped.
//! On a malformed or truncated frame the absolute byte offset and the error
//! are printed and the exit status is 1; bad arguments or input exit with 2.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::process::ExitCode;

use gotalk_proto::{
    DecodeLimits, Decoded, MessageType, PROTOCOL_VERSION, VERSION_BYTES, decode, decode_version,
};

const USAGE: &str = "usage: decode_stdin [--hex] < capture\n  \
    --hex  standard input is hex text (whitespace ignored), not raw bytes";

/// Hex text to bytes, ignoring ASCII whitespace.
fn unhex(text: &[u8]) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    if digits.len() % 2 != 0 {
        return Err(format!("odd number of hex digits ({})", digits.len()));
    }
    digits
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| {
                    format!(
                        "not a hex byte at digit pair {i}: {:?}",
                        String::from_utf8_lossy(pair)
                    )
                })
        })
        .collect()
}

/// Length of a leading version handshake, 0 or 2.
///
/// `e`, `f` and `E` are both hex digits and message tags, so for those the
/// version reading is taken only when the input does not parse as a message
/// from byte 0 but does from byte 2.
fn version_len(input: &[u8], limits: &DecodeLimits) -> usize {
    let Ok(Decoded::Complete(_, 2)) = decode_version(input) else {
        return 0;
    };
    if MessageType::from_byte(input[0]).is_none() {
        return 2;
    }
    let parses = |buf: &[u8]| buf.is_empty() || decode(buf, limits).is_ok();
    if !parses(input) && parses(&input[2..]) {
        2
    } else {
        0
    }
}

fn main() -> ExitCode {
    let mut hex = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--hex" => hex = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }

    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("cannot read standard input: {e}");
        return ExitCode::from(2);
    }
    if hex {
        input = match unhex(&input) {
            Ok(bytes) => bytes,
            Err(e) => {
                eprintln!("bad --hex input: {e}");
                return ExitCode::from(2);
            }
        };
    }

    let limits = DecodeLimits::default();
    let mut at = version_len(&input, &limits);
    if at == 2 {
        let version = u8::from_str_radix(std::str::from_utf8(&input[..2]).unwrap_or("??"), 16);
        println!("ProtocolVersion {}", String::from_utf8_lossy(&input[..2]));
        if version != Ok(PROTOCOL_VERSION) {
            eprintln!(
                "warning: version is not {} (ours); decoding as version 1 anyway",
                String::from_utf8_lossy(&VERSION_BYTES)
            );
        }
    }

    // Every complete message is at least 9 bytes, which bounds the loop.
    for _ in 0..=input.len() {
        if at == input.len() {
            return ExitCode::SUCCESS;
        }
        match decode(&input[at..], &limits) {
            Ok(Decoded::Complete(msg, used)) => {
                println!("{msg:?}");
                at += used;
            }
            Ok(Decoded::Incomplete(missing)) => {
                eprintln!(
                    "offset {at}: truncated frame: {} bytes present, at least {missing} more needed",
                    input.len() - at
                );
                return ExitCode::FAILURE;
            }
            Err(e) => {
                let offset = at + e.offset().unwrap_or(0);
                eprintln!("offset {offset}: {e} (frame starts at offset {at})");
                return ExitCode::FAILURE;
            }
        }
    }
    unreachable!("each decoded message consumes at least one byte")
}
