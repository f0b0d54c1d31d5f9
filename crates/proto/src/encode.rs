//! Encoding: lower-case, zero-padded hex; header and payload kept apart.
//!
//! A writer that wants to send a large payload without copying it calls
//! [`Message::encode_header`] into its write buffer and hands the payload
//! `Bytes` to vectored I/O next to it. [`Message::encoded_len`] is exact.

use bytes::BufMut;

use crate::{EncodeError, MAX_NAME_LEN, MAX_PAYLOAD_LEN, Message, hex, text::Buffer};

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
        self.validate()?;
        let needed = self.header_len();
        if dst.remaining_mut() < needed {
            return Err(EncodeError::BufferTooSmall {
                needed,
                remaining: dst.remaining_mut(),
            });
        }
        // Longest fixed run before or after a name: tag + id + wait + size.
        let mut fixed = [0u8; 21];
        fixed[0] = self.message_type().as_byte();
        let mut at = if let Some(id) = self.id() {
            fixed[1..5].copy_from_slice(id.as_bytes());
            5
        } else {
            1
        };
        let mut put_hex = |fixed: &mut [u8; 21], width: usize, value: u32| {
            hex::write(&mut fixed[at..at + width], value);
            at += width;
        };
        match self {
            Self::SingleRequest { op: name, .. }
            | Self::StreamRequest { op: name, .. }
            | Self::Notification { name, .. } => {
                put_hex(&mut fixed, 3, name.len() as u32);
                dst.put_slice(&fixed[..at]);
                dst.put_slice(name.as_bytes());
                let mut size = [0u8; 8];
                hex::write(&mut size, self.payload_len() as u32);
                dst.put_slice(&size);
                return Ok(());
            }
            Self::RetryResult { wait_ms, .. } => {
                put_hex(&mut fixed, 8, *wait_ms);
                put_hex(&mut fixed, 8, self.payload_len() as u32);
            }
            Self::Heartbeat { load, time } => {
                put_hex(&mut fixed, 4, u32::from(*load));
                put_hex(&mut fixed, 8, *time);
            }
            Self::ProtocolError { code } => put_hex(&mut fixed, 8, code.as_u32()),
            Self::StreamRequestPart { .. }
            | Self::SingleResult { .. }
            | Self::StreamResult { .. }
            | Self::ErrorResult { .. } => put_hex(&mut fixed, 8, self.payload_len() as u32),
        }
        dst.put_slice(&fixed[..at]);
        Ok(())
    }

    /// Writes header and payload to `dst` (copying the payload).
    ///
    /// Nothing is written when an error is returned.
    pub fn encode<M: BufMut + ?Sized>(&self, dst: &mut M) -> Result<(), EncodeError> {
        let needed = self.encoded_len();
        if dst.remaining_mut() < needed {
            self.validate()?;
            return Err(EncodeError::BufferTooSmall {
                needed,
                remaining: dst.remaining_mut(),
            });
        }
        self.encode_header(dst)?;
        if let Some(payload) = self.payload() {
            dst.put_slice(payload.as_ref());
        }
        Ok(())
    }

    /// The whole encoded message in a new `Vec`.
    pub fn to_vec(&self) -> Result<Vec<u8>, EncodeError> {
        self.validate()?;
        let mut v = Vec::with_capacity(self.encoded_len());
        self.encode(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

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
