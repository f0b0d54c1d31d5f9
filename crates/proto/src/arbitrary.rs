//! `arbitrary::Arbitrary` for owned messages (feature `arbitrary`), for fuzzing.

use arbitrary::{Arbitrary, Result, Unstructured};
use bytes::Bytes;

use crate::{MAX_NAME_LEN, Message, MessageType, ProtocolErrorCode, RequestId, Text};

/// A valid name: arbitrary UTF-8 cut to at most `MAX_NAME_LEN` bytes on a
/// character boundary.
fn name(u: &mut Unstructured<'_>) -> Result<Text<Bytes>> {
    let mut s = String::arbitrary(u)?;
    if s.len() > MAX_NAME_LEN {
        let mut end = MAX_NAME_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    Ok(Text::from(s))
}

fn payload(u: &mut Unstructured<'_>) -> Result<Bytes> {
    Ok(Bytes::from(Vec::<u8>::arbitrary(u)?))
}

impl<'a> Arbitrary<'a> for Message<Bytes> {
    fn arbitrary(u: &mut Unstructured<'a>) -> Result<Self> {
        let ty = *u.choose(&MessageType::ALL)?;
        let id = RequestId::arbitrary(u)?;
        Ok(match ty {
            MessageType::SingleRequest => Message::SingleRequest {
                id,
                op: name(u)?,
                payload: payload(u)?,
            },
            MessageType::StreamRequest => Message::StreamRequest {
                id,
                op: name(u)?,
                payload: payload(u)?,
            },
            MessageType::StreamRequestPart => Message::StreamRequestPart {
                id,
                payload: payload(u)?,
            },
            MessageType::SingleResult => Message::SingleResult {
                id,
                payload: payload(u)?,
            },
            MessageType::StreamResult => Message::StreamResult {
                id,
                payload: payload(u)?,
            },
            MessageType::ErrorResult => Message::ErrorResult {
                id,
                payload: payload(u)?,
            },
            MessageType::RetryResult => Message::RetryResult {
                id,
                wait_ms: u32::arbitrary(u)?,
                payload: payload(u)?,
            },
            MessageType::Notification => Message::Notification {
                name: name(u)?,
                payload: payload(u)?,
            },
            MessageType::Heartbeat => Message::Heartbeat {
                load: u16::arbitrary(u)?,
                time: u32::arbitrary(u)?,
            },
            MessageType::ProtocolError => Message::ProtocolError {
                code: ProtocolErrorCode::from_u32(u32::arbitrary(u)?),
            },
        })
    }
}
