//! Encoding: lower-case, zero-padded hex; header and payload kept apart.
//!
//! A writer that wants to send a large payload without copying it calls
//! [`Message::encode_header`] into its write buffer and hands the payload
//! `Bytes` to vectored I/O next to it. [`Message::encoded_len`] is exact.

use bytes::BufMut;

use crate::{
    EncodeError, MAX_NAME_LEN, MAX_PAYLOAD_LEN, Message, RequestId, Text, hex, text::Buffer,
};

impl<B: Buffer> Message<B> {
    /// Header length in bytes, name included.
    pub fn header_len(&self) -> usize {
        self.message_type().fixed_header_len() + self.name().map_or(0, |n| n.len())
    }

    /// Exact number of bytes [`encode`](Self::encode) writes.
    pub fn encoded_len(&self) -> usize {
        self.header_len() + self.payload_len()
    }

    /// Checks the limits of the wire format: names of at most 4095 bytes,
    /// payloads of at most 0xffffffff bytes.
    pub fn validate(&self) -> Result<(), EncodeError> {
        if let Some(name) = self.name()
            && name.len() > MAX_NAME_LEN
        {
            return Err(EncodeError::NameTooLong { len: name.len() });
        }
        let len = self.payload_len();
        if len as u64 > u64::from(MAX_PAYLOAD_LEN) {
            return Err(EncodeError::PayloadTooLarge { len });
        }
        Ok(())
    }

    /// Writes the header (everything but the payload) to `dst`.
    ///
    /// Nothing is written when an error is returned.
    pub fn encode_header<M: BufMut + ?Sized>(&self, dst: &mut M) -> Result<(), EncodeError> {
        self.put(dst, false)
    }

    /// Writes header and payload to `dst` (copying the payload).
    ///
    /// Nothing is written when an error is returned.
    pub fn encode<M: BufMut + ?Sized>(&self, dst: &mut M) -> Result<(), EncodeError> {
        self.put(dst, true)
    }

    /// The header, then the payload if `with_payload`: each field is built
    /// on the stack in its final form (hex by [`hex::digits`]) and the
    /// pieces go to `dst` in one step ([`put_all`]). Each arm lists its
    /// pieces with their lengths known, so the fixed ones are plain stores.
    #[inline(always)]
    fn put<M: BufMut + ?Sized>(&self, dst: &mut M, with_payload: bool) -> Result<(), EncodeError> {
        let payload: &[u8] = self.payload().map_or(&[], |p| p.as_ref());
        let body = if with_payload { payload } else { &[] };
        let size = || match u32::try_from(payload.len()) {
            Ok(len) => Ok(hex::digits(len)),
            Err(_) => Err(EncodeError::PayloadTooLarge { len: payload.len() }),
        };
        let tag = self.message_type().as_byte();
        let tagged = |id: &RequestId| {
            let [a, b, c, d] = *id.as_bytes();
            [tag, a, b, c, d]
        };
        match self {
            Self::SingleRequest { id, op: name, .. } | Self::StreamRequest { id, op: name, .. } => {
                let name = checked_name(name)?;
                let [.., a, b, c] = hex::digits(name.len() as u32);
                let [t, i0, i1, i2, i3] = tagged(id);
                put_all(dst, [&[t, i0, i1, i2, i3, a, b, c], name, &size()?, body])
            }
            Self::Notification { name, .. } => {
                let name = checked_name(name)?;
                let [.., a, b, c] = hex::digits(name.len() as u32);
                put_all(dst, [&[tag, a, b, c], name, &size()?, body])
            }
            Self::StreamRequestPart { id, .. }
            | Self::SingleResult { id, .. }
            | Self::StreamResult { id, .. }
            | Self::ErrorResult { id, .. } => put_all(dst, [&tagged(id), &size()?, body]),
            Self::RetryResult { id, wait_ms, .. } => {
                put_all(dst, [&tagged(id), &hex::digits(*wait_ms), &size()?, body])
            }
            Self::Heartbeat { load, time } => {
                let [.., a, b, c, d] = hex::digits(u32::from(*load));
                put_all(dst, [&[tag, a, b, c, d], &hex::digits(*time)])
            }
            Self::ProtocolError { code } => put_all(dst, [&[tag], &hex::digits(code.as_u32())]),
        }
    }

    /// The whole encoded message in a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        self.validate()?;
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v)?;
        Ok(v)
    }
}

/// The name's bytes, if the wire's three hex digits can give its length.
#[inline(always)]
fn checked_name<B: Buffer>(name: &Text<B>) -> Result<&[u8], EncodeError> {
    let name = name.as_bytes();
    if name.len() > MAX_NAME_LEN {
        return Err(EncodeError::NameTooLong { len: name.len() });
    }
    Ok(name)
}

/// Writes `pieces` to `dst` one after the other, or nothing if they do not
/// fit. When `dst`'s current chunk holds them all (a `BytesMut` with room,
/// a `Vec`), they are copied there and `dst` advanced once; otherwise piece
/// by piece through [`BufMut::put_slice`].
#[inline(always)]
fn put_all<M: BufMut + ?Sized, const N: usize>(
    dst: &mut M,
    pieces: [&[u8]; N],
) -> Result<(), EncodeError> {
    let needed: usize = pieces.iter().map(|p| p.len()).sum();
    if dst.remaining_mut() < needed {
        return Err(EncodeError::BufferTooSmall {
            needed,
            remaining: dst.remaining_mut(),
        });
    }
    let chunk = dst.chunk_mut();
    if chunk.len() >= needed {
        let mut at = 0;
        for piece in pieces {
            chunk[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        // SAFETY: `advance_mut(n)` requires the first `n` bytes of
        // `chunk_mut()` to be initialized. The loop wrote `chunk[0..needed]`
        // whole: each piece goes to the range that starts where the one
        // before ended, and the pieces' lengths add up to `needed` (`at`
        // equals `needed` here). Nothing touched `dst` in between.
        #[allow(unsafe_code)]
        unsafe {
            dst.advance_mut(needed)
        };
    } else {
        for piece in pieces {
            dst.put_slice(piece);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, Bytes, BytesMut};

    use crate::{Message, ProtocolErrorCode, RequestId, Text};

    fn id() -> RequestId {
        RequestId::new(*b"0001")
    }

    #[test]
    fn every_type_matches_the_description() {
        let p = || Bytes::from_static(b"hi");
        let cases: Vec<(Message, &[u8])> = vec![
            (
                Message::StreamRequest {
                    id: id(),
                    op: Text::from_static("echo"),
                    payload: p(),
                },
                b"s0001004echo00000002hi",
            ),
            (
                Message::StreamRequestPart {
                    id: id(),
                    payload: Bytes::new(),
                },
                b"p000100000000",
            ),
            (
                Message::StreamResult {
                    id: id(),
                    payload: p(),
                },
                b"S000100000002hi",
            ),
            (
                Message::ErrorResult {
                    id: id(),
                    payload: p(),
                },
                b"E000100000002hi",
            ),
            (
                Message::RetryResult {
                    id: id(),
                    wait_ms: 5000,
                    payload: p(),
                },
                b"e00010000138800000002hi",
            ),
            (
                Message::Notification {
                    name: Text::from_static(""),
                    payload: Bytes::new(),
                },
                b"n00000000000",
            ),
            (
                Message::Heartbeat {
                    load: 2,
                    time: 1_423_433_370,
                },
                b"h000254d7de9a",
            ),
            (
                Message::ProtocolError {
                    code: ProtocolErrorCode::Other(0xabcdef01),
                },
                b"fabcdef01",
            ),
        ];
        for (msg, wire) in cases {
            assert_eq!(msg.to_vec().unwrap(), wire, "{msg:?}");
            assert_eq!(msg.encoded_len(), wire.len());
            every_destination_gets_the_same_bytes(&msg, wire);
        }
    }

    /// `msg` written whole into one chunk (a `BytesMut` with room) and
    /// piece by piece (two slices chained, split at every position, so the
    /// first chunk is too short), header alone and whole.
    fn every_destination_gets_the_same_bytes(msg: &Message, wire: &[u8]) {
        fn write(
            msg: &Message,
            dst: &mut impl BufMut,
            with_payload: bool,
        ) -> Result<(), crate::EncodeError> {
            if with_payload {
                msg.encode(dst)
            } else {
                msg.encode_header(dst)
            }
        }
        let header_len = msg.header_len();
        for (with_payload, expected) in [(false, &wire[..header_len]), (true, wire)] {
            let mut roomy = BytesMut::with_capacity(256);
            write(msg, &mut roomy, with_payload).unwrap();
            assert_eq!(&roomy[..], expected, "{msg:?}");
            for split in 0..=expected.len() {
                let (mut a, mut b) = (vec![0u8; split], vec![0u8; expected.len() - split]);
                write(msg, &mut (&mut a[..]).chain_mut(&mut b[..]), with_payload).unwrap();
                assert_eq!([a, b].concat(), expected, "{msg:?} split at {split}");
            }
        }
    }

    #[test]
    fn long_name_is_an_error_not_a_panic() {
        let name = "x".repeat(4096);
        let msg = Message::Notification {
            name: Text::from(name),
            payload: Bytes::new(),
        };
        assert_eq!(
            msg.to_vec(),
            Err(crate::EncodeError::NameTooLong { len: 4096 })
        );
        let ok = Message::Notification {
            name: Text::from("x".repeat(4095)),
            payload: Bytes::new(),
        };
        assert_eq!(ok.to_vec().unwrap().len(), 12 + 4095);
    }

    #[test]
    fn fixed_buffer_too_small_writes_nothing() {
        let msg = Message::SingleResult {
            id: id(),
            payload: Bytes::from_static(b"hello"),
        };
        let mut storage = [0u8; 10];
        let mut dst = &mut storage[..];
        assert!(matches!(
            msg.encode(&mut dst),
            Err(crate::EncodeError::BufferTooSmall {
                needed: 18,
                remaining: 10
            })
        ));
        assert_eq!(storage, [0u8; 10]);
    }
}
