//! The write side without a buffer of its own: [`Splitter`] says where each
//! message starts and how long it is, and hands the bytes through.

use gotalk_proto::{
    DecodeError, Decoded, MAX_HEADER_LEN, Message, MessageType, ProtocolErrorCode, VERSION_BYTES,
    decode, parse_header,
};

use super::SCAN_LIMITS;

/// What [`Splitter::push`] reports, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Piece<'a> {
    /// A message of this many bytes starts: the bytes follow as `Data`
    /// pieces, in this push or later ones.
    Start(usize),
    /// Bytes of the message last started.
    Data(&'a [u8]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Inside the version or a payload, this many bytes left (a message of
    /// that length is started).
    Rest(usize),
    /// At a header, or inside one kept in `partial`.
    Header,
}

/// Cuts the outgoing gotalk byte stream into the same messages as
/// [`Cutter`](super::Cutter) (the version, each header, each non-empty
/// payload), but as pieces of the caller's own slices: a message's length
/// is known as soon as it starts (a header's once it is whole, a payload's
/// from its header), so its WebSocket frame header can be written then and
/// its bytes copied once, straight to where they go. Only a header split
/// across pushes is held, in at most [`MAX_HEADER_LEN`] bytes.
#[derive(Debug)]
pub(crate) struct Splitter {
    next: Next,
    started: bool,
    partial: Vec<u8>,
    protocol_error: Option<ProtocolErrorCode>,
    error: Option<DecodeError>,
}

impl Default for Splitter {
    fn default() -> Self {
        Self {
            next: Next::Rest(VERSION_BYTES.len()),
            started: false,
            partial: Vec::new(),
            protocol_error: None,
            error: None,
        }
    }
}

impl Splitter {
    /// The protocol error whose `f` frame has been passed on, if one was.
    pub(crate) fn protocol_error(&self) -> Option<ProtocolErrorCode> {
        self.protocol_error
    }

    /// Whether a message has started and not all of its bytes came yet
    /// (nothing else may be framed before they do).
    pub(crate) fn inside_message(&self) -> bool {
        self.started && matches!(self.next, Next::Rest(_))
    }

    /// Passes `input` on to `emit` as pieces of messages.
    ///
    /// An error means the bytes are not gotalk (a bug on our side): the
    /// pieces before it were emitted, and every later push fails the same.
    pub(crate) fn push(
        &mut self,
        mut input: &[u8],
        mut emit: impl FnMut(Piece<'_>),
    ) -> Result<(), DecodeError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        if !self.started && !input.is_empty() {
            self.started = true;
            emit(Piece::Start(VERSION_BYTES.len()));
        }
        while !input.is_empty() {
            match self.next {
                Next::Rest(left) => {
                    let n = left.min(input.len());
                    emit(Piece::Data(&input[..n]));
                    input = &input[n..];
                    self.next = if n == left {
                        Next::Header
                    } else {
                        Next::Rest(left - n)
                    };
                }
                Next::Header => {
                    let had = self.partial.len();
                    if had > 0 {
                        // That many more bytes always decide a header.
                        let take = input.len().min(MAX_HEADER_LEN);
                        self.partial.extend_from_slice(&input[..take]);
                    }
                    let src: &[u8] = if had == 0 { input } else { &self.partial };
                    match parse_header(src, &SCAN_LIMITS) {
                        Ok(Decoded::Incomplete(_)) => {
                            // Kept whole: a header is at most MAX_HEADER_LEN
                            // bytes, so the next push decides it.
                            if had == 0 {
                                self.partial.extend_from_slice(input);
                            }
                            input = &[];
                        }
                        Ok(Decoded::Complete(header, len)) => {
                            if header.message_type == MessageType::ProtocolError
                                && let Ok(Decoded::Complete(Message::ProtocolError { code }, _)) =
                                    decode(&src[..len], &SCAN_LIMITS)
                            {
                                self.protocol_error = Some(code);
                            }
                            emit(Piece::Start(len));
                            emit(Piece::Data(&src[..len]));
                            // The bytes of `input` the header used.
                            input = &input[len - had..];
                            self.partial.clear();
                            let payload = header.payload_len as usize;
                            if payload > 0 {
                                emit(Piece::Start(payload));
                                self.next = Next::Rest(payload);
                            }
                        }
                        Err(e) => {
                            self.error = Some(e.clone());
                            return Err(e);
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `chunks` and returns the messages put together from the
    /// pieces, checking that each got exactly the bytes it announced.
    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut splitter = Splitter::default();
        let mut out: Vec<(usize, Vec<u8>)> = Vec::new();
        for chunk in chunks {
            splitter
                .push(chunk, |p| match p {
                    Piece::Start(n) => {
                        if let Some((len, bytes)) = out.last() {
                            assert_eq!(*len, bytes.len(), "previous message complete");
                        }
                        out.push((n, Vec::new()));
                    }
                    Piece::Data(d) => out.last_mut().expect("started").1.extend_from_slice(d),
                })
                .unwrap();
        }
        out.into_iter()
            .map(|(_, b)| String::from_utf8_lossy(&b).into_owned())
            .collect()
    }

    use crate::transport::ws::framing::fixture::{CUTS, WIRE};

    #[test]
    fn same_messages_as_the_cutter_in_any_chunking() {
        assert_eq!(split(&[WIRE]), CUTS);
        let bytes: Vec<&[u8]> = WIRE.chunks(1).collect();
        assert_eq!(split(&bytes), CUTS);
        for at in 0..WIRE.len() {
            let (a, b) = WIRE.split_at(at);
            assert_eq!(split(&[a, b]), CUTS, "split at {at}");
        }
    }

    #[test]
    fn a_payload_starts_with_its_length_before_its_bytes() {
        let mut splitter = Splitter::default();
        let mut pieces = Vec::new();
        splitter
            .push(b"01r0001004echo00000005he", |p| {
                pieces.push(match p {
                    Piece::Start(n) => format!("start {n}"),
                    Piece::Data(d) => String::from_utf8_lossy(d).into_owned(),
                })
            })
            .unwrap();
        assert_eq!(
            pieces,
            [
                "start 2",
                "01",
                "start 20",
                "r0001004echo00000005",
                "start 5",
                "he"
            ]
        );
    }

    #[test]
    fn inside_a_message_until_its_last_byte() {
        let mut splitter = Splitter::default();
        assert!(!splitter.inside_message());
        let mut inside = Vec::new();
        for b in b"01R000100000002okh0000".chunks(1) {
            splitter.push(b, |_| {}).unwrap();
            inside.push(splitter.inside_message());
        }
        // "0", "1", the 13 header bytes (the last starts the payload),
        // "o", "k", the start of a header.
        let expect: Vec<bool> = [true, false]
            .into_iter()
            .chain([false; 12])
            .chain([true, true, false])
            .chain([false; 5])
            .collect();
        assert_eq!(inside, expect);
    }

    #[test]
    fn protocol_error_is_noted_when_its_header_passes() {
        let mut splitter = Splitter::default();
        splitter.push(b"01f0000000", |_| {}).unwrap();
        assert_eq!(splitter.protocol_error(), None);
        splitter.push(b"3", |_| {}).unwrap();
        assert_eq!(splitter.protocol_error(), Some(ProtocolErrorCode::Timeout));
        // `f` inside a name is not one.
        let mut splitter = Splitter::default();
        splitter.push(b"01n001f00000009f00000002", |_| {}).unwrap();
        assert_eq!(splitter.protocol_error(), None);
    }

    #[test]
    fn bytes_that_do_not_parse_are_an_error_every_time() {
        let mut splitter = Splitter::default();
        let err = splitter.push(b"01zz", |_| {}).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnknownMessageType { byte: b'z', .. }
        ));
        assert_eq!(splitter.push(b"h000000000000", |_| {}).unwrap_err(), err);
    }
}
