//! `gotalk decode`: a wire capture, one message per line. Uses `gotalk-proto` alone.

use std::{
    fmt::Write as _,
    io::{Read, Write},
    path::PathBuf,
};

use clap::Args;
use gotalk_proto::{
    DecodeError, DecodeLimits, Decoded, Message, MessageType, PROTOCOL_VERSION, decode,
};

use crate::{
    exit,
    text::{escape_bytes, escaped, parse_hex},
};

pub(crate) const AFTER_HELP: &str = "\
Input: the raw bytes of one direction of a conversation, optionally starting with the
two-digit protocol version (`01`). With --hex, the bytes as hex digits; whitespace and
newlines anywhere are ignored.

Output, one line per message:
  @OFFSET TYPE [id=\"…\"] [op=\"…\" | name=\"…\"] [wait_ms=N] [load=N time=N] [code=N (…)] [size=N payload=\"…\"]
OFFSET is the byte offset of the frame in the (decoded) input. Request IDs, names and
payloads are escaped: printable ASCII as is, `\"` and `\\` with a backslash, other bytes \\xNN.

Exit codes: 0 every byte decoded; 1 a malformed or truncated frame (stderr names its
absolute byte offset; the messages before it are printed) or invalid hex; 2 the input cannot
be read, or invalid usage.";

/// Arguments of `gotalk decode`.
#[derive(Args)]
pub(crate) struct DecodeArgs {
    /// Capture file; `-` or absent reads stdin
    file: Option<PathBuf>,
    /// The input is hex text (whitespace ignored)
    #[arg(long)]
    hex: bool,
}

/// Why decoding stopped early.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Failure {
    /// Absolute byte offset of the problem.
    pub(crate) offset: usize,
    /// What is wrong.
    pub(crate) message: String,
}

/// One message as a line of `gotalk decode` output (without the offset).
pub(crate) fn describe(msg: &Message<&[u8]>) -> String {
    let mut s = String::from(msg.message_type().name());
    if let Some(id) = msg.id() {
        s.push_str(" id=\"");
        escape_bytes(id.as_bytes(), true, &mut s);
        s.push('"');
    }
    if let Some(name) = msg.name() {
        let key = if msg.message_type() == MessageType::Notification {
            "name"
        } else {
            "op"
        };
        let _ = write!(s, " {key}=\"");
        escape_bytes(name.as_bytes(), true, &mut s);
        s.push('"');
    }
    match msg {
        Message::RetryResult { wait_ms, .. } => {
            let _ = write!(s, " wait_ms={wait_ms}");
        }
        Message::Heartbeat { load, time } => {
            let _ = write!(s, " load={load} time={time}");
        }
        Message::ProtocolError { code } => {
            let _ = write!(s, " code={} ({})", code.as_u32(), code.description());
        }
        _ => {}
    }
    if let Some(payload) = msg.payload() {
        let _ = write!(s, " size={} payload=\"", payload.len());
        escape_bytes(payload, true, &mut s);
        s.push('"');
    }
    s
}

/// Where and why a frame is malformed, in absolute terms.
fn malformed(start: usize, e: &DecodeError) -> Failure {
    let byte = |b: &u8| format!("'{}'", escaped(&[*b], false));
    let (offset, what) = match e {
        DecodeError::UnknownMessageType { byte: b, offset } => {
            (start + offset, format!("unknown message type {}", byte(b)))
        }
        DecodeError::InvalidHexDigit {
            field,
            byte: b,
            offset,
        } => (
            start + offset,
            format!("invalid {field}: {} is not a hex digit", byte(b)),
        ),
        DecodeError::InvalidUtf8 { field, offset } => {
            (start + offset, format!("invalid {field}: not UTF-8"))
        }
        other => (start + other.offset().unwrap_or(0), other.to_string()),
    };
    Failure {
        offset,
        message: format!(
            "malformed frame at byte {offset}: {what} (the frame starts at byte {start})"
        ),
    }
}

/// Decodes `data`, writing one line per message to `out`.
pub(crate) fn decode_all(data: &[u8], out: &mut impl Write) -> Result<(), DecodeFailure> {
    let mut pos = 0;
    // An optional version prefix: no message type is a decimal digit.
    if data.len() >= 2 && data[0].is_ascii_digit() && data[1].is_ascii_hexdigit() {
        let version = u8::from_str_radix(&String::from_utf8_lossy(&data[..2]), 16).unwrap_or(0);
        let note = if version == PROTOCOL_VERSION {
            String::new()
        } else {
            format!(
                " (unsupported: this tool reads version {PROTOCOL_VERSION:02x}; decoding anyway)"
            )
        };
        writeln!(out, "@0 version {version:02x}{note}")?;
        pos = 2;
    }
    // The whole capture is in memory: a declared size is only checked
    // against what is actually there.
    let limits = DecodeLimits::with_max_payload(u32::MAX);
    while pos < data.len() {
        let rest = &data[pos..];
        match decode(rest, &limits) {
            Ok(Decoded::Complete(msg, used)) => {
                writeln!(out, "@{pos} {}", describe(&msg))?;
                pos += used;
            }
            Ok(Decoded::Incomplete(missing)) => {
                let kind = MessageType::from_byte(rest[0]).map_or("", MessageType::name);
                return Err(DecodeFailure::Frame(Failure {
                    offset: pos,
                    message: format!(
                        "truncated {kind} frame at byte {pos}: the input ends {missing} byte(s) too early"
                    ),
                }));
            }
            Err(e) => return Err(DecodeFailure::Frame(malformed(pos, &e))),
        }
    }
    Ok(())
}

/// Why [`decode_all`] stopped.
#[derive(Debug)]
pub(crate) enum DecodeFailure {
    /// A malformed or truncated frame.
    Frame(Failure),
    /// Writing the output failed.
    Output(std::io::Error),
}

impl From<std::io::Error> for DecodeFailure {
    fn from(e: std::io::Error) -> Self {
        Self::Output(e)
    }
}

/// `gotalk decode`.
pub(crate) fn run(args: &DecodeArgs) -> u8 {
    let mut input = Vec::new();
    let read = match args.file.as_deref() {
        None => std::io::stdin().read_to_end(&mut input).map(drop),
        Some(p) if p.as_os_str() == "-" => std::io::stdin().read_to_end(&mut input).map(drop),
        Some(p) => std::fs::read(p).map(|data| input = data),
    };
    if let Err(e) = read {
        let what = args
            .file
            .as_ref()
            .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
        eprintln!("gotalk decode: cannot read {what}: {e}");
        return exit::TROUBLE;
    }
    let data = if args.hex {
        match parse_hex(&input) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("gotalk decode: invalid hex input: {e}");
                return exit::FAILED;
            }
        }
    } else {
        input
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = decode_all(&data, &mut out);
    let flushed = out.flush();
    match result {
        Ok(()) => match flushed {
            Ok(()) => exit::OK,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
            Err(e) => {
                eprintln!("gotalk decode: cannot write: {e}");
                exit::TROUBLE
            }
        },
        Err(DecodeFailure::Frame(f)) => {
            eprintln!("gotalk decode: {}", f.message);
            exit::FAILED
        }
        Err(DecodeFailure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(DecodeFailure::Output(e)) => {
            eprintln!("gotalk decode: cannot write: {e}");
            exit::TROUBLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_str(data: &[u8]) -> (String, Option<Failure>) {
        let mut out = Vec::new();
        let r = decode_all(data, &mut out);
        let err = match r {
            Ok(()) => None,
            Err(DecodeFailure::Frame(f)) => Some(f),
            Err(DecodeFailure::Output(e)) => panic!("{e}"),
        };
        (String::from_utf8(out).unwrap(), err)
    }

    #[test]
    fn decodes_a_conversation_with_version() {
        let (out, err) = run_str(
            b"01r\x00\x00\x00\x00004echo00000005helloe\x01\x00\x00\x000000012c00000003\"x\"h00010000000af00000002n003a\\b00000000",
        );
        assert!(err.is_none(), "{err:?} {out}");
        assert_eq!(
            out,
            "@0 version 01\n\
             @2 SingleRequest id=\"\\x00\\x00\\x00\\x00\" op=\"echo\" size=5 payload=\"hello\"\n\
             @27 RetryResult id=\"\\x01\\x00\\x00\\x00\" wait_ms=300 size=3 payload=\"\\\"x\\\"\"\n\
             @51 Heartbeat load=1 time=10\n\
             @64 ProtocolError code=2 (invalid protocol message)\n\
             @73 Notification name=\"a\\\\b\" size=0 payload=\"\"\n"
        );
    }

    #[test]
    fn retry_and_error_types_are_not_versions() {
        let (out, err) = run_str(b"e00010000000000000000");
        assert!(err.is_none());
        assert!(out.starts_with("@0 RetryResult"), "{out}");
        let (out, _) = run_str(b"E000100000000");
        assert!(out.starts_with("@0 ErrorResult"), "{out}");
    }

    #[test]
    fn names_absolute_offsets() {
        let (out, err) = run_str(b"01R000100000002hiR0002000000g1");
        assert_eq!(out.lines().count(), 2);
        let err = err.unwrap();
        assert_eq!(err.offset, 28);
        assert_eq!(
            err.message,
            "malformed frame at byte 28: invalid payload size: 'g' is not a hex digit (the frame starts at byte 17)"
        );
        let (_, err) = run_str(b"R000100000002hix");
        assert_eq!(err.unwrap().offset, 15);
        let (_, err) = run_str(b"R000100000005hi");
        let err = err.unwrap();
        assert_eq!(err.offset, 0);
        assert!(
            err.message
                .contains("truncated SingleResult frame at byte 0"),
            "{}",
            err.message
        );
    }
}
