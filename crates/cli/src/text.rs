//! Text helpers: escaping bytes for display, hex input, durations, JSON layout.

use std::{fmt::Write as _, time::Duration};

/// Escapes wire bytes so they print on one line: printable ASCII stays as is,
/// `\` becomes `\\`, every other byte `\xNN`. With `quote`, `"` becomes `\"`
/// too (for values printed inside double quotes).
pub(crate) fn escape_bytes(bytes: &[u8], quote: bool, out: &mut String) {
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' if quote => out.push_str("\\\""),
            b' '..=b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

/// `s` as an identifier of the usual shape (`[A-Za-z_][A-Za-z0-9_]*`, plus
/// the characters `also` admits): every other character becomes `_`, and
/// `_` goes first when it would start with a digit or be empty.
pub(crate) fn identifier(s: &str, also: impl Fn(char) -> bool) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || also(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// [`escape_bytes`] into a new string.
pub(crate) fn escaped(bytes: &[u8], quote: bool) -> String {
    let mut s = String::with_capacity(bytes.len());
    escape_bytes(bytes, quote, &mut s);
    s
}

/// Payload text for people: valid UTF-8 is kept (so non-ASCII text stays
/// readable), control characters and `\` are escaped (`\n`, `\t`, `\r`,
/// `\\`, `\xNN`), invalid UTF-8 bytes are `\xNN`. The result is one line.
pub(crate) fn escape_text(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                c if c.is_control() => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for &b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

/// Why hex text could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HexError {
    /// A character that is neither a hex digit nor whitespace.
    BadChar {
        /// The character.
        ch: char,
        /// Its byte offset in the text.
        at: usize,
    },
    /// An odd number of hex digits.
    OddLength,
}

impl std::fmt::Display for HexError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BadChar { ch, at } => {
                write!(f, "{ch:?} at character offset {at} is not a hex digit")
            }
            Self::OddLength => f.write_str("odd number of hex digits"),
        }
    }
}

/// Reads hex digits (either case), ignoring ASCII whitespace anywhere.
pub(crate) fn parse_hex(text: &[u8]) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    for (at, &c) in text.iter().enumerate() {
        if c.is_ascii_whitespace() {
            continue;
        }
        let Some(v) = (c as char).to_digit(16) else {
            let ch = String::from_utf8_lossy(&text[at..])
                .chars()
                .next()
                .unwrap_or('?');
            return Err(HexError::BadChar { ch, at });
        };
        let v = v as u8;
        match high.take() {
            None => high = Some(v),
            Some(h) => out.push(h << 4 | v),
        }
    }
    if high.is_some() {
        return Err(HexError::OddLength);
    }
    Ok(out)
}

/// Parses a duration: `250ms`, `20s`, `1.5s`, `2m`, `1h`, `10us`, or
/// several of them added up (`1m30s`, `1h 5m`); a bare number is seconds.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let hint = || format!("{text:?} is not a duration (try 500ms, 20s, 2m, 1m30s)");
    if text.is_empty() {
        return Err(hint());
    }
    let mut rest = text;
    let mut secs = 0.0f64;
    let mut terms = 0;
    while !rest.is_empty() {
        let split = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, after) = rest.split_at(split);
        let value: f64 = num.parse().map_err(|_| hint())?;
        let after = after.trim_start();
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.' || c.is_whitespace())
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let scale = match unit {
            "" if terms == 0 && next.trim().is_empty() => 1.0,
            "" => return Err(format!("{text:?}: {num} needs a unit (ms, s, m, h)")),
            "s" | "sec" | "secs" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown duration unit {other:?} in {text:?}")),
        };
        secs += value * scale;
        terms += 1;
        rest = next.trim_start();
    }
    if !secs.is_finite() || secs > 366.0 * 24.0 * 3600.0 {
        return Err(format!("duration {text:?} is too long"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// A duration that may be switched off (`None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct OptDuration(pub(crate) Option<Duration>);

/// A duration that may be switched off with `off` (or `none`, `never`).
/// Zero is refused: it would read as "at once" to some and "never" to
/// others.
pub(crate) fn parse_optional_duration(s: &str) -> Result<OptDuration, String> {
    match s.trim() {
        "off" | "none" | "never" => Ok(OptDuration(None)),
        other => {
            let d = parse_duration(other)?;
            if d.is_zero() {
                return Err(format!(
                    "{other:?} is zero: omit the option for its default, or write \"off\" to switch it off"
                ));
            }
            Ok(OptDuration(Some(d)))
        }
    }
}

/// A duration that must be above zero (`bench --duration`).
pub(crate) fn parse_positive_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err(format!(
            "{:?} is zero: give a duration above zero",
            s.trim()
        ));
    }
    Ok(d)
}

/// Parses a size in bytes: `1000`, `64KiB`, `16MiB`, `1GiB` (`K`, `M`, `G`
/// are the same binary multiples); at most 4 GiB - 1 (the protocol's limit).
pub(crate) fn parse_size(s: &str) -> Result<u32, String> {
    let text = s.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (num, unit) = text.split_at(split);
    let value: u64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a size (try 1000, 64KiB, 32MiB)"))?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {text:?} (use KiB, MiB, GiB)"
            ));
        }
    };
    value
        .checked_mul(scale)
        .and_then(|v| u32::try_from(v).ok())
        .ok_or_else(|| format!("{text:?} is too large: the protocol's limit is 4294967295 bytes"))
}

/// A byte count for messages: `16 MiB (16777216 bytes)`.
pub(crate) fn human_size(bytes: u64) -> String {
    const MIB: u64 = 1 << 20;
    if bytes >= MIB && bytes % MIB == 0 {
        format!("{} MiB ({bytes} bytes)", bytes / MIB)
    } else {
        format!("{bytes} bytes")
    }
}

/// Re-lays out valid JSON with two-space indentation, keeping the key
/// order and number spelling of the input exactly (a `serde_json::Value`
/// round trip would sort keys). `None` if `input` is not JSON.
pub(crate) fn pretty_json(input: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(input).ok()?;
    let text = std::str::from_utf8(input).ok()?;
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        for _ in 0..depth {
            out.push_str("  ");
        }
    };
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                in_string = false;
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                // Keep empty containers compact.
                while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
                    chars.next();
                }
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    chars.next();
                    out.push(close);
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_ascii_whitespace() => {}
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escaped(b"\0\0\0\x01r\\\"x\n", false),
            "\\x00\\x00\\x00\\x01r\\\\\"x\\x0a"
        );
        assert_eq!(escaped(b"a\"b", true), "a\\\"b");
        assert_eq!(
            escape_text("héllo\n\\\x07".as_bytes()),
            "héllo\\n\\\\\\u{7}"
        );
        assert_eq!(escape_text(b"a\xffb"), "a\\xffb");
    }

    #[test]
    fn hex() {
        assert_eq!(
            parse_hex(b"72 30\n3a\tFF").unwrap(),
            vec![0x72, 0x30, 0x3a, 0xff]
        );
        assert_eq!(
            parse_hex(b"72 3g").unwrap_err(),
            HexError::BadChar { ch: 'g', at: 4 }
        );
        assert_eq!(parse_hex(b"723").unwrap_err(), HexError::OddLength);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("20s").unwrap(), Duration::from_secs(20));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert!(parse_duration("abc").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("1e300h").is_err());
        assert_eq!(parse_optional_duration("off").unwrap().0, None);
        assert!(parse_optional_duration("0").is_err());
        assert!(parse_optional_duration("0s").is_err());
        assert_eq!(parse_duration("1m30s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("1h 5m").unwrap(), Duration::from_secs(3900));
        assert_eq!(
            parse_duration("1s500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_positive_duration("0s").is_err());
        assert_eq!(parse_size("16MiB").unwrap(), 16 << 20);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        assert!(parse_size("4GiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert_eq!(human_size(16 << 20), "16 MiB (16777216 bytes)");
        assert_eq!(
            parse_optional_duration("1s").unwrap().0,
            Some(Duration::from_secs(1))
        );
    }

    #[test]
    fn json_layout_keeps_order() {
        assert_eq!(
            pretty_json(br#"{"z":1,"a":[1, 2.50],"e":{},"s":"a,b:{\"c"}"#).unwrap(),
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2.50\n  ],\n  \"e\": {},\n  \"s\": \"a,b:{\\\"c\"\n}"
        );
        assert_eq!(pretty_json(b"\"x\"").unwrap(), "\"x\"");
        assert!(pretty_json(b"{nope").is_none());
    }
}
