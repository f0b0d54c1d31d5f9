//! RFC 6455 frame headers: parsing the peer's, writing ours. No extensions
//! are negotiated, so the reserved bits must be zero.

use super::super::WsError;

/// A frame's opcode (RFC 6455 section 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0 => Self::Continuation,
            1 => Self::Text,
            2 => Self::Binary,
            8 => Self::Close,
            9 => Self::Ping,
            10 => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0,
            Self::Text => 1,
            Self::Binary => 2,
            Self::Close => 8,
            Self::Ping => 9,
            Self::Pong => 10,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    pub(crate) opcode: Opcode,
    pub(crate) mask: Option<[u8; 4]>,
    /// Payload length as declared (checked against limits by the caller
    /// before anything is buffered for it).
    pub(crate) payload_len: u64,
    /// Bytes of the header itself: 2 to 14.
    pub(crate) len: usize,
}

/// Longest payload of a control frame.
const MAX_CONTROL_PAYLOAD: u64 = 125;

/// A header that breaks RFC 6455 (or asks for an extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadHeader(&'static str);

impl From<BadHeader> for WsError {
    fn from(bad: BadHeader) -> Self {
        WsError::Protocol(bad.0.into())
    }
}

/// The header at the start of `buf`: `Ok(None)` until all of it is there.
#[inline]
pub(crate) fn parse(buf: &[u8]) -> Result<Option<Header>, BadHeader> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(BadHeader("reserved bits set in a frame header"));
    }
    let opcode = Opcode::from_bits(b0 & 0x0f).ok_or(BadHeader("unknown opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    let (payload_len, mut len) = match b1 & 0x7f {
        126 => {
            let Some(b) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([b[0], b[1]])), 4)
        }
        127 => {
            let Some(b) = buf.get(2..10) else {
                return Ok(None);
            };
            let n = u64::from_be_bytes(b.try_into().expect("8 bytes"));
            if n >> 63 != 0 {
                return Err(BadHeader("frame length has its top bit set"));
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || payload_len > MAX_CONTROL_PAYLOAD) {
        return Err(BadHeader(
            "control frame fragmented or longer than 125 bytes",
        ));
    }
    let mask = if masked {
        let Some(k) = buf.get(len..len + 4) else {
            return Ok(None);
        };
        len += 4;
        Some(k.try_into().expect("4 bytes"))
    } else {
        None
    };
    Ok(Some(Header {
        fin,
        opcode,
        mask,
        payload_len,
        len,
    }))
}

/// Appends the header of a final (unfragmented) frame, in one copy.
#[inline]
pub(crate) fn put_header(out: &mut Vec<u8>, opcode: Opcode, len: usize, mask: Option<[u8; 4]>) {
    // A short frame's header (a gotalk header, a small payload: nearly
    // every frame) is a copy of known length, done in place; the general
    // case below copies a variable length, a call to `memcpy`.
    if len < 126 {
        let b0 = 0x80 | opcode.bits();
        match mask {
            None => out.extend_from_slice(&[b0, len as u8]),
            Some([k0, k1, k2, k3]) => {
                out.extend_from_slice(&[b0, 0x80 | len as u8, k0, k1, k2, k3])
            }
        }
        return;
    }
    let mut h = [0u8; 14];
    h[0] = 0x80 | opcode.bits();
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut n = if let Ok(short) = u16::try_from(len) {
        h[1] = mask_bit | 126;
        h[2..4].copy_from_slice(&short.to_be_bytes());
        4
    } else {
        h[1] = mask_bit | 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    if let Some(key) = mask {
        h[n..n + 4].copy_from_slice(&key);
        n += 4;
    }
    out.extend_from_slice(&h[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: Opcode, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
        let mut out = Vec::new();
        put_header(&mut out, opcode, len, mask);
        out
    }

    #[test]
    fn round_trips_every_length_form() {
        for len in [0, 1, 125, 126, 65_535, 65_536, 1 << 33] {
            for mask in [None, Some([1, 2, 3, 4])] {
                let bytes = header(Opcode::Binary, len, mask);
                let h = parse(&bytes).unwrap().unwrap();
                assert_eq!(h.len, bytes.len(), "{len} {mask:?}");
                assert_eq!((h.fin, h.opcode, h.mask), (true, Opcode::Binary, mask));
                assert_eq!(h.payload_len, len as u64);
                // Every strict prefix is incomplete, never an error.
                for cut in 0..bytes.len() {
                    assert_eq!(parse(&bytes[..cut]).unwrap(), None, "{len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn rfc_6455_examples() {
        // Section 5.7: unmasked and masked "Hello", a 256-byte binary frame.
        let h = parse(&[0x81, 0x05, b'H']).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len, h.len), (Opcode::Text, 5, 2));
        let h = parse(&[0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d])
            .unwrap()
            .unwrap();
        assert_eq!(h.mask, Some([0x37, 0xfa, 0x21, 0x3d]));
        let h = parse(&[0x82, 0x7e, 0x01, 0x00]).unwrap().unwrap();
        assert_eq!((h.opcode, h.payload_len), (Opcode::Binary, 256));
        // A first fragment, then its continuation.
        let h = parse(&[0x01, 0x03]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (false, Opcode::Text));
        let h = parse(&[0x80, 0x02]).unwrap().unwrap();
        assert_eq!((h.fin, h.opcode), (true, Opcode::Continuation));
    }

    #[test]
    fn bad_headers_are_protocol_errors() {
        for bytes in [
            &[0xc2, 0x00][..],                        // RSV1 (compression) set
            &[0x83, 0x00],                            // opcode 3
            &[0x8b, 0x00],                            // opcode 11
            &[0x09, 0x00],                            // fragmented ping
            &[0x88, 0x7e, 0x00, 0x7e],                // close of 126 bytes
            &[0x82, 0x7f, 0x80, 0, 0, 0, 0, 0, 0, 0], // 64-bit length, top bit
        ] {
            let err = parse(bytes).unwrap_err();
            assert!(
                matches!(WsError::from(err), WsError::Protocol(_)),
                "{bytes:x?}"
            );
        }
    }
}
