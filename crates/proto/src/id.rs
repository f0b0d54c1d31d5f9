//! Request identifiers: four opaque bytes chosen by the requester.

use core::fmt;

/// A request identifier: exactly four opaque bytes.
///
/// The responder never interprets an ID; it echoes it back verbatim. The
/// original Go implementation sends a per-connection `u32` counter as four
/// little-endian bytes (so IDs routinely contain NUL, CR and LF), while
/// gotalk.js sends base-36 ASCII such as `0001`. [`RequestId::from_u32`] and
/// [`RequestId::to_u32`] convert the way the Go implementation does.
///
/// ```
/// use gotalk_proto::RequestId;
/// let id = RequestId::from_u32(1);
/// assert_eq!(id.as_bytes(), &[1, 0, 0, 0]);
/// assert_eq!(id.to_u32(), 1);
/// assert_eq!(RequestId::new(*b"0001").to_string(), "0001");
/// assert_eq!(id.to_string(), "\\x01\\x00\\x00\\x00");
/// ```
// Aligned like a `u32`: inside a `Message` the ID then sits apart from the
// one-byte tag, and moving a message copies it in whole words instead of
// stalling on overlapping partial stores (measured in the `codec` bench:
// small-request decode went from 23 to 18 ns).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
#[repr(align(4))]
pub struct RequestId([u8; 4]);

/// One `u32`: the derived hash of `[u8; 4]` writes a length prefix and then
/// the four bytes one by one, which a hasher of single bytes (the peer's
/// request tables) takes as twelve rounds. Equal IDs are equal words, so
/// this agrees with `Eq`.
impl core::hash::Hash for RequestId {
    #[inline]
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        state.write_u32(u32::from_ne_bytes(self.0));
    }
}

impl RequestId {
    /// Wraps four raw bytes.
    pub const fn new(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }

    /// The ID the Go implementation uses for counter value `n` (little-endian).
    pub const fn from_u32(n: u32) -> Self {
        Self(n.to_le_bytes())
    }

    /// Reads the ID as the Go implementation's little-endian counter.
    pub const fn to_u32(self) -> u32 {
        u32::from_le_bytes(self.0)
    }

    /// The four raw bytes, as sent on the wire.
    pub const fn as_bytes(&self) -> &[u8; 4] {
        &self.0
    }

    /// The four raw bytes, by value.
    pub const fn into_bytes(self) -> [u8; 4] {
        self.0
    }
}

impl From<[u8; 4]> for RequestId {
    fn from(bytes: [u8; 4]) -> Self {
        Self(bytes)
    }
}

/// Printable ASCII as is, every other byte as `\xNN`, so binary IDs stay readable.
impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &b in &self.0 {
            if b.is_ascii_graphic() || b == b' ' {
                if b == b'\\' {
                    f.write_str("\\\\")?;
                } else {
                    fmt::Write::write_char(f, b as char)?;
                }
            } else {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RequestId(\"{self}\")")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_counter_is_little_endian() {
        assert_eq!(RequestId::from_u32(0).as_bytes(), &[0, 0, 0, 0]);
        assert_eq!(RequestId::from_u32(0x0403_0201).as_bytes(), &[1, 2, 3, 4]);
        assert_eq!(RequestId::new([1, 2, 3, 4]).to_u32(), 0x0403_0201);
    }

    #[test]
    fn display_escapes_binary_and_backslash() {
        assert_eq!(RequestId::new(*b"a\\\n\0").to_string(), "a\\\\\\x0a\\x00");
        assert_eq!(
            format!("{:?}", RequestId::new(*b"!000")),
            "RequestId(\"!000\")"
        );
    }

    /// The hash is one `u32` write: what a hasher of single bytes (the
    /// peer's request tables) then takes as one round, not twelve.
    #[test]
    fn hashes_as_one_word() {
        use core::hash::{Hash, Hasher};
        #[derive(Default)]
        struct Record(Vec<&'static str>, Vec<u64>);
        impl Hasher for Record {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, bytes: &[u8]) {
                self.0.push("bytes");
                self.1.extend(bytes.iter().map(|&b| u64::from(b)));
            }
            fn write_u32(&mut self, n: u32) {
                self.0.push("u32");
                self.1.push(u64::from(n));
            }
        }
        let mut r = Record::default();
        RequestId::from_u32(0x0403_0201).hash(&mut r);
        assert_eq!(r.0, ["u32"]);
        assert_eq!(r.1, [u64::from(u32::from_ne_bytes([1, 2, 3, 4]))]);
    }
}
