//! The write side: cutting our outgoing gotalk bytes into messages.

use bytes::{Bytes, BytesMut};
use gotalk_proto::{
    DecodeError, Decoded, Message, MessageType, ProtocolErrorCode, VERSION_BYTES, decode,
    parse_header,
};

use super::SCAN_LIMITS;

/// What the cutter takes next out of the outgoing bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    Version,
    Header,
    Payload(usize),
}

/// Cuts the outgoing gotalk byte stream into WebSocket messages: the version,
/// then each header, then each non-empty payload, each one message.
///
/// The bytes come from our own driver, so they are trusted and parsed only
/// to find where each message ends. Bytes are pushed in any chunking and
/// whole messages come out as soon as they are complete, so a frame is
/// never held back waiting for the next one.
#[derive(Debug)]
pub(crate) struct Cutter {
    buf: BytesMut,
    next: Next,
    protocol_error: Option<ProtocolErrorCode>,
}

impl Default for Cutter {
    fn default() -> Self {
        Self {
            buf: BytesMut::new(),
            next: Next::Version,
            protocol_error: None,
        }
    }
}

impl Cutter {
    /// Appends outgoing bytes.
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet cut into a message.
    pub(crate) fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The protocol error whose `f` frame has been cut, if one was: the
    /// WebSocket must close with [`close_code_for`](super::close_code_for)
    /// it once the cut messages are sent.
    pub(crate) fn protocol_error(&self) -> Option<ProtocolErrorCode> {
        self.protocol_error
    }

    /// Cuts the next whole message, or `None` until more bytes are pushed.
    ///
    /// An error means the bytes are not gotalk, which is a bug on our side;
    /// nothing is consumed, so the same error comes back on every call.
    pub(crate) fn next_message(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let len = match self.next {
            Next::Version => VERSION_BYTES.len(),
            Next::Payload(n) => n,
            Next::Header => match parse_header(&self.buf, &SCAN_LIMITS)? {
                Decoded::Incomplete(_) => return Ok(None),
                Decoded::Complete(header, len) => {
                    if header.message_type == MessageType::ProtocolError
                        && let Ok(Decoded::Complete(Message::ProtocolError { code }, _)) =
                            decode(&self.buf[..len], &SCAN_LIMITS)
                    {
                        self.protocol_error = Some(code);
                    }
                    self.next = match header.payload_len {
                        0 => Next::Header,
                        n => Next::Payload(n as usize),
                    };
                    return Ok(Some(self.buf.split_to(len).freeze()));
                }
            },
        };
        if self.buf.len() < len {
            return Ok(None);
        }
        self.next = Next::Header;
        Ok(Some(self.buf.split_to(len).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pushes `chunks` one by one, cutting after each, and returns every
    /// message cut, as text.
    fn cut(chunks: &[&[u8]]) -> Vec<String> {
        let mut cutter = Cutter::default();
        let mut out = Vec::new();
        for chunk in chunks {
            cutter.push(chunk);
            while let Some(m) = cutter.next_message().unwrap() {
                out.push(String::from_utf8_lossy(&m).into_owned());
            }
        }
        out
    }

    use crate::transport::ws::framing::fixture::{CUTS, WIRE};

    #[test]
    fn version_headers_and_payloads_are_separate_messages() {
        assert_eq!(cut(&[WIRE]), CUTS);
    }

    #[test]
    fn byte_by_byte_gives_the_same_messages() {
        let chunks: Vec<&[u8]> = WIRE.chunks(1).collect();
        assert_eq!(cut(&chunks), CUTS);
    }

    #[test]
    fn a_message_comes_out_as_soon_as_it_is_whole() {
        let mut cutter = Cutter::default();
        cutter.push(b"0");
        assert_eq!(cutter.next_message(), Ok(None));
        cutter.push(b"1r0001004echo0000000");
        assert_eq!(cutter.next_message().unwrap().as_deref(), Some(&b"01"[..]));
        assert_eq!(cutter.next_message(), Ok(None));
        assert_eq!(cutter.buffered(), 19);
        cutter.push(b"5hel");
        assert_eq!(cutter.next_message().unwrap().unwrap().len(), 20);
        // The payload is one message: never cut short.
        assert_eq!(cutter.next_message(), Ok(None));
        cutter.push(b"lo");
        assert_eq!(
            cutter.next_message().unwrap().as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(cutter.buffered(), 0);
    }

    #[test]
    fn protocol_error_is_noted_when_its_frame_is_cut() {
        let mut cutter = Cutter::default();
        cutter.push(b"01f0000000");
        while cutter.next_message().unwrap().is_some() {}
        assert_eq!(cutter.protocol_error(), None);
        cutter.push(b"3");
        assert_eq!(
            cutter.next_message().unwrap().as_deref(),
            Some(&b"f00000003"[..])
        );
        assert_eq!(cutter.protocol_error(), Some(ProtocolErrorCode::Timeout));
    }

    #[test]
    fn other_frames_note_no_protocol_error() {
        let mut cutter = Cutter::default();
        // `f` inside a name or payload is not a protocol error.
        cutter.push(b"01n001f00000009f00000002");
        while cutter.next_message().unwrap().is_some() {}
        assert_eq!(cutter.buffered(), 0);
        assert_eq!(cutter.protocol_error(), None);
    }

    #[test]
    fn bytes_that_do_not_parse_are_an_error_every_time() {
        let mut cutter = Cutter::default();
        cutter.push(b"01zz");
        assert_eq!(cutter.next_message().unwrap().as_deref(), Some(&b"01"[..]));
        let err = cutter.next_message().unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnknownMessageType { byte: b'z', .. }
        ));
        assert_eq!(cutter.next_message().unwrap_err(), err);
        assert_eq!(cutter.buffered(), 2);
    }
}
