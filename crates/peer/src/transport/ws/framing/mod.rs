//! How a gotalk byte stream maps onto WebSocket messages, without I/O.
//!
//! The rules are the ones of the original implementations (see the crate's
//! `docs/websocket.md`). They are kept apart from the socket glue in
//! [`WsIo`](super::WsIo) so they can be tested byte by byte, with no
//! runtime and no WebSocket library in the way:
//!
//! - [`Cutter`] (writing): the two-byte version is one message, every header
//!   is one message and every non-empty payload is the next message. After
//!   a `f` ProtocolError header the connection ends with a Close frame whose
//!   code is [`close_code_for`] the error.
//! - [`Reassembler`] (reading): messages are concatenated into one byte
//!   stream, split anywhere, except that a message holding exactly one
//!   header that declares a non-empty payload must be followed by a message
//!   that is exactly that payload. gotalk.js sends frames that way, and
//!   checking the length keeps a miscounted payload from eating the next
//!   frame.

mod cut;
mod reassemble;
mod split;

#[cfg(test)]
mod proptests;

/// A stream of every kind of gotalk frame, and the WebSocket messages it is
/// cut into, for the tests of both directions.
#[cfg(test)]
pub(crate) mod fixture {
    pub(crate) const WIRE: &[u8] =
        b"01r0001004echo00000005hellon003abc00000000h000000000001R000200000003abc";
    pub(crate) const CUTS: [&str; 7] = [
        "01",
        "r0001004echo00000005",
        "hello",
        "n003abc00000000",
        "h000000000001",
        "R000200000003",
        "abc",
    ];
}

use gotalk_proto::{DecodeLimits, ProtocolErrorCode};

pub(crate) use cut::Cutter;
pub(crate) use reassemble::Reassembler;
pub(crate) use split::{Piece, Splitter};

/// Limits used to find frame boundaries: payload size is the driver's
/// business, so nothing is refused here for being large.
const SCAN_LIMITS: DecodeLimits = DecodeLimits::with_max_payload(u32::MAX);

/// Close codes 4000–4999 carry gotalk protocol errors 0–999 (gotalk.js).
const PROTOCOL_ERROR_CLOSE: std::ops::Range<u16> = 4000..5000;

/// The Close code that reports gotalk protocol error `code`: `4000 + N`,
/// what gotalk.js sends. Codes that do not fit the range become 4000
/// (abnormal) rather than a code outside the private range.
pub(crate) fn close_code_for(code: ProtocolErrorCode) -> u16 {
    match u16::try_from(code.as_u32()) {
        Ok(n) if n < PROTOCOL_ERROR_CLOSE.end - PROTOCOL_ERROR_CLOSE.start => {
            PROTOCOL_ERROR_CLOSE.start + n
        }
        _ => PROTOCOL_ERROR_CLOSE.start,
    }
}

/// The gotalk protocol error a Close code reports, if it is `4000 + N`.
pub(crate) fn protocol_error_of_close(close_code: u16) -> Option<ProtocolErrorCode> {
    PROTOCOL_ERROR_CLOSE
        .contains(&close_code)
        .then(|| ProtocolErrorCode::from_u32(u32::from(close_code - PROTOCOL_ERROR_CLOSE.start)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_carry_protocol_errors_0_to_999() {
        assert_eq!(close_code_for(ProtocolErrorCode::Abnormal), 4000);
        assert_eq!(close_code_for(ProtocolErrorCode::InvalidMessage), 4002);
        assert_eq!(close_code_for(ProtocolErrorCode::Timeout), 4003);
        assert_eq!(close_code_for(ProtocolErrorCode::Other(999)), 4999);
        assert_eq!(close_code_for(ProtocolErrorCode::Other(1000)), 4000);
        assert_eq!(close_code_for(ProtocolErrorCode::Other(65_536 + 2)), 4000);
        assert_eq!(close_code_for(ProtocolErrorCode::Other(u32::MAX)), 4000);
    }

    #[test]
    fn close_codes_outside_4000_to_4999_are_not_protocol_errors() {
        assert_eq!(protocol_error_of_close(1000), None);
        assert_eq!(protocol_error_of_close(3999), None);
        assert_eq!(protocol_error_of_close(5000), None);
        assert_eq!(
            protocol_error_of_close(4002),
            Some(ProtocolErrorCode::InvalidMessage)
        );
        assert_eq!(
            protocol_error_of_close(4999),
            Some(ProtocolErrorCode::Other(999))
        );
        for n in 0..1000 {
            let code = ProtocolErrorCode::from_u32(n);
            assert_eq!(protocol_error_of_close(close_code_for(code)), Some(code));
        }
    }
}
