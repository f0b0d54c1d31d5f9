//! The version handshake: each side sends two hex digits before any message.

use crate::{DecodeError, Decoded, Field, hex};

/// The protocol version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;

/// What this side writes first on every connection: `01`.
pub const VERSION_BYTES: [u8; 2] = encode_version(PROTOCOL_VERSION);

/// Two lower-case hex digits for `version`.
pub const fn encode_version(version: u8) -> [u8; 2] {
    let [.., high, low] = hex::digits(version as u32);
    [high, low]
}

/// Reads the peer's version from the start of `buf`.
///
/// Returns the version number whatever it is; use [`check_version`] to turn
/// a version we do not speak into [`DecodeError::UnsupportedVersion`].
///
/// ```
/// use gotalk_proto::{decode_version, Decoded};
/// assert_eq!(decode_version(b"01r0001").unwrap(), Decoded::Complete(1, 2));
/// assert_eq!(decode_version(b"0").unwrap(), Decoded::Incomplete(1));
/// assert!(decode_version(b"x1").is_err());
/// ```
pub fn decode_version(buf: &[u8]) -> Result<Decoded<u8>, DecodeError> {
    let Some(digits) = buf.get(..2) else {
        return Ok(Decoded::Incomplete(2 - buf.len()));
    };
    match hex::parse(digits) {
        Ok(v) => Ok(Decoded::Complete(v as u8, 2)),
        Err(i) => Err(DecodeError::InvalidHexDigit {
            field: Field::Version,
            byte: digits[i],
            offset: i,
        }),
    }
}

/// Accepts [`PROTOCOL_VERSION`] and refuses every other version.
pub fn check_version(version: u8) -> Result<(), DecodeError> {
    if version == PROTOCOL_VERSION {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion { version })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ProtocolErrorCode;

    #[test]
    fn version_round_trip_and_check() {
        assert_eq!(&VERSION_BYTES, b"01");
        assert_eq!(&encode_version(0xAB), b"ab");
        assert_eq!(decode_version(b"Ab").unwrap(), Decoded::Complete(0xab, 2));
        assert_eq!(decode_version(b"").unwrap(), Decoded::Incomplete(2));
        let err = check_version(2).unwrap_err();
        assert_eq!(err.protocol_error_code(), ProtocolErrorCode::Unsupported);
        assert!(check_version(1).is_ok());
        assert!(matches!(
            decode_version(b"+1"),
            Err(DecodeError::InvalidHexDigit {
                field: Field::Version,
                offset: 0,
                ..
            })
        ));
    }
}
