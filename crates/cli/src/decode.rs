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
newlines anywhere are ignored. Or what --trace prints (request, stream, notify, listen
--trace on stderr; serve --trace on stdout): lines `-> FRAME` and `<- FRAME`, maybe after
`conn#N`, with \\xNN escapes; each is decoded to `[conn#N] ARROW TYPE …` as below, other
lines are skipped, and a payload the trace cut short ends in …(+N bytes).

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
    describe_elided(msg, 0)
}

/// [`describe`] for a message whose last `elided` payload bytes are not
/// known (a trace cuts long payloads short): they are left out of
/// `payload="…"` and counted after it.
fn describe_elided(msg: &Message<&[u8]>, elided: usize) -> String {
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
        let shown = payload.len().saturating_sub(elided);
        escape_bytes(&payload[..shown], true, &mut s);
        s.push('"');
        if elided > 0 {
            let _ = write!(s, "…(+{elided} bytes)");
        }
    }
    s
}

/// Whether `data` is the printout of `--trace` (`-> FRAME` and `<- FRAME`
/// lines, `conn#N` before them from `gotalk serve`) rather than raw bytes:
/// no message type is `-`, `<`, `c` or `l`.
pub(crate) fn is_trace(data: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&data[..data.len().min(256)]);
    let first = text.trim_start();
    ["-> ", "<- ", "conn#", "listening on "]
        .iter()
        .any(|p| first.starts_with(p))
}

/// One trace line split up: `conn#N ` (if any), the arrow, and the frame.
fn trace_line(line: &str) -> Option<(&str, &str, &str)> {
    let line = line.trim();
    let (conn, rest) = match line.strip_prefix("conn#") {
        Some(after) => {
            let digits = after.find(|c: char| !c.is_ascii_digit())?;
            if digits == 0 {
                return None;
            }
            let (n, rest) = after.split_at(digits);
            (&line[..5 + n.len()], rest.strip_prefix(' ')?)
        }
        None => ("", line),
    };
    let (arrow, frame) = rest.split_at_checked(2)?;
    if !matches!(arrow, "->" | "<-") {
        return None;
    }
    Some((conn, arrow, frame.strip_prefix(' ')?))
}

/// The bytes of a traced frame: `\\` is `\`, `\xNN` a byte, anything else
/// itself; a trailing `…(+N bytes)` (a payload cut short) is returned as N.
fn unescape_frame(frame: &str) -> Result<(Vec<u8>, usize), String> {
    let (body, elided) = match frame.rsplit_once("…(+") {
        Some((body, tail)) => {
            let n = tail
                .strip_suffix(" bytes)")
                .and_then(|n| n.parse::<usize>().ok())
                .ok_or_else(|| format!("unreadable elision {:?}", &frame[body.len()..]))?;
            (body, n)
        }
        None => (frame, 0),
    };
    let mut out = Vec::with_capacity(body.len());
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => match bytes.get(i + 1) {
                Some(b'\\') => {
                    out.push(b'\\');
                    i += 2;
                }
                Some(b'x') => {
                    let hex = body
                        .get(i + 2..i + 4)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .ok_or_else(|| format!("bad escape at character {i}: want \\xNN"))?;
                    out.push(hex);
                    i += 4;
                }
                _ => return Err(format!("bad escape at character {i}: want \\\\ or \\xNN")),
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok((out, elided))
}

/// Decodes a `--trace` printout, one line per frame, into `out`: each
/// message as [`describe`] puts it, after the line's `conn#N` and arrow.
/// Other lines (`listening on`, `conn#N open`, ...) are skipped.
pub(crate) fn decode_trace(text: &str, out: &mut impl Write) -> Result<(), DecodeFailure> {
    let limits = DecodeLimits::with_max_payload(u32::MAX);
    let mut offset = 0;
    for (index, line) in text.split_inclusive('\n').enumerate() {
        let at = offset;
        offset += line.len();
        let Some((conn, arrow, frame)) = trace_line(line) else {
            continue;
        };
        let prefix = if conn.is_empty() {
            arrow.to_owned()
        } else {
            format!("{conn} {arrow}")
        };
        let fail = |what: String| {
            DecodeFailure::Frame(Failure {
                offset: at,
                message: format!("line {}: {what}", index + 1),
            })
        };
        if frame.starts_with('(') {
            // The tracer's own note (undecodable bytes): passed on.
            writeln!(out, "{prefix} {frame}")?;
            continue;
        }
        let (mut bytes, elided) = unescape_frame(frame).map_err(fail)?;
        if bytes.len() == 2 && elided == 0 && bytes.iter().all(u8::is_ascii_hexdigit) {
            writeln!(out, "{prefix} version {frame}")?;
            continue;
        }
        // The bytes the trace left out, as placeholders, to decode the header.
        bytes.resize(bytes.len() + elided, b'?');
        match decode(&bytes, &limits) {
            Ok(Decoded::Complete(msg, used)) if used == bytes.len() => {
                writeln!(out, "{prefix} {}", describe_elided(&msg, elided))?;
            }
            Ok(Decoded::Complete(_, used)) => {
                return Err(fail(format!(
                    "{} byte(s) after the frame's end (a trace line holds one frame)",
                    bytes.len() - used
                )));
            }
            Ok(Decoded::Incomplete(missing)) => {
                return Err(fail(format!("truncated frame: {missing} byte(s) missing")));
            }
            Err(e) => return Err(fail(malformed(0, &e).message)),
        }
    }
    Ok(())
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
        eprintln!("gotalk: cannot read {what}: {e}");
        return exit::TROUBLE;
    }
    let data = if args.hex {
        match parse_hex(&input) {
            Ok(d) => d,
            Err(e) => {
                eprintln!("gotalk: invalid hex input: {e}");
                return exit::FAILED;
            }
        }
    } else {
        input
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let result = if !args.hex && is_trace(&data) {
        decode_trace(&String::from_utf8_lossy(&data), &mut out)
    } else {
        decode_all(&data, &mut out)
    };
    let flushed = out.flush();
    match result {
        Ok(()) => match flushed {
            Ok(()) => exit::OK,
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
            Err(e) => {
                eprintln!("gotalk: cannot write: {e}");
                exit::TROUBLE
            }
        },
        Err(DecodeFailure::Frame(f)) => {
            eprintln!("gotalk: {}", f.message);
            exit::FAILED
        }
        Err(DecodeFailure::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
        Err(DecodeFailure::Output(e)) => {
            eprintln!("gotalk: cannot write: {e}");
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
    fn reads_trace_lines() {
        let trace = "listening on 127.0.0.1:1\nconn#1 open 127.0.0.1:2\n\
                     conn#1 <- 01\n\
                     conn#1 <- r\\x00\\x00\\x00\\x00004echo00000002hi\n\
                     -> R\\x01\\x00\\x00\\x0000000005hell…(+1 bytes)\n\
                     <- n003a\\\\b00000000\n";
        let mut out = Vec::new();
        decode_trace(trace, &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "conn#1 <- version 01\n\
             conn#1 <- SingleRequest id=\"\\x00\\x00\\x00\\x00\" op=\"echo\" size=2 payload=\"hi\"\n\
             -> SingleResult id=\"\\x01\\x00\\x00\\x00\" size=5 payload=\"hell\"…(+1 bytes)\n\
             <- Notification name=\"a\\\\b\" size=0 payload=\"\"\n"
        );
        assert!(is_trace(trace.as_bytes()));
        assert!(!is_trace(b"01r\x00"));
        let err = decode_trace("-> r\\x0g\n", &mut Vec::new()).unwrap_err();
        assert!(
            matches!(err, DecodeFailure::Frame(f) if f.message.starts_with("line 1: bad escape"))
        );
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
