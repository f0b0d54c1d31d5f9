//! Operation and notification names: UTF-8 text kept in the buffer it was read from.

use core::{fmt, str::Utf8Error};

use bytes::Bytes;

mod sealed {
    pub trait Sealed {}
    impl Sealed for &[u8] {}
    impl Sealed for bytes::Bytes {}
}

/// A byte buffer a [`Message`](crate::Message) can hold its payload and names in.
///
/// Implemented for `&[u8]` (the borrowing slice API) and [`Bytes`] (the owned,
/// zero-copy API). Sealed: both types always return the same bytes from
/// `as_ref`, which [`Text`] relies on.
pub trait Buffer: AsRef<[u8]> + Clone + sealed::Sealed {}
impl Buffer for &[u8] {}
impl Buffer for Bytes {}

/// UTF-8 text stored in a [`Buffer`] without copying it.
///
/// Names on the gotalk wire (operation and notification names) are UTF-8 of
/// at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes. A `Text` is validated
/// once, when it is built, so reading it back as `&str` is free.
///
/// ```
/// use gotalk_proto::Text;
/// let op = Text::from_static("echo");
/// assert_eq!(op.as_str(), "echo");
/// assert!(Text::new(&b"\xff"[..]).is_err());
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Text<B>(B);

impl<B: Buffer> Text<B> {
    /// Validates `bytes` as UTF-8.
    pub fn new(bytes: B) -> Result<Self, Utf8Error> {
        core::str::from_utf8(bytes.as_ref())?;
        Ok(Self(bytes))
    }

    /// Wraps bytes the caller has already checked to be UTF-8 (the decoder,
    /// which validates a name while parsing its header). `as_str` relies on
    /// this, so it stays private to the crate.
    pub(crate) fn from_validated(bytes: B) -> Self {
        debug_assert!(core::str::from_utf8(bytes.as_ref()).is_ok());
        Self(bytes)
    }

    /// The text as a string slice.
    #[allow(unsafe_code)]
    pub fn as_str(&self) -> &str {
        // SAFETY: `Text` is only built by `new`, `From<&str>`, `From<String>`,
        // `from_static` and the crate-private `from_validated` (whose only
        // callers pass bytes `parse_header` has just validated), each of
        // which has valid UTF-8 in hand. `B` is a
        // sealed `Buffer` (`&[u8]` or `Bytes`), both immutable views whose
        // `as_ref` returns the same bytes on every call, so the bytes
        // validated at construction are the bytes we read here. The
        // `text_stays_valid_*` tests exercise every constructor.
        unsafe { core::str::from_utf8_unchecked(self.0.as_ref()) }
    }

    /// The raw UTF-8 bytes.
    pub fn as_bytes(&self) -> &[u8] {
        self.0.as_ref()
    }

    /// Length in bytes (what the wire's `text3Size` counts).
    pub fn len(&self) -> usize {
        self.0.as_ref().len()
    }

    /// True for the empty name (the wire allows it).
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }

    /// Gives back the underlying buffer.
    pub fn into_inner(self) -> B {
        self.0
    }
}

impl Text<Bytes> {
    /// Text from a `&'static str`, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(Bytes::from_static(s.as_bytes()))
    }
}

impl<'a> Text<&'a [u8]> {
    /// Copies the text into an owned, reference-counted buffer.
    pub fn to_owned_bytes(&self) -> Text<Bytes> {
        Text(Bytes::copy_from_slice(self.0))
    }

    /// The text with the buffer's lifetime.
    pub fn as_borrowed_str(&self) -> &'a str {
        #[allow(unsafe_code)]
        // SAFETY: same invariant as `as_str`: the slice was validated as UTF-8
        // when this `Text` was built and a `&[u8]` cannot change.
        unsafe {
            core::str::from_utf8_unchecked(self.0)
        }
    }
}

impl<'a> From<&'a str> for Text<&'a [u8]> {
    fn from(s: &'a str) -> Self {
        Self(s.as_bytes())
    }
}

impl From<String> for Text<Bytes> {
    fn from(s: String) -> Self {
        Self(Bytes::from(s))
    }
}

impl From<&str> for Text<Bytes> {
    fn from(s: &str) -> Self {
        Self(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl<B: Buffer> AsRef<str> for Text<B> {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl<B: Buffer> core::ops::Deref for Text<B> {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl<B: Buffer> PartialEq<str> for Text<B> {
    fn eq(&self, other: &str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<B: Buffer> PartialEq<&str> for Text<B> {
    fn eq(&self, other: &&str) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<B: Buffer> fmt::Display for Text<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<B: Buffer> fmt::Debug for Text<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_valid_from_every_constructor() {
        let owned = String::from("grüß");
        let cases: [Text<Bytes>; 4] = [
            Text::new(Bytes::from_static("grüß".as_bytes())).unwrap(),
            Text::from_static("grüß"),
            Text::from(owned.clone()),
            Text::from(owned.as_str()),
        ];
        for t in &cases {
            assert_eq!(t.as_str(), "grüß");
            assert_eq!(t.len(), 6);
        }
        let borrowed: Text<&[u8]> = Text::from(owned.as_str());
        assert_eq!(borrowed.as_borrowed_str(), "grüß");
        assert_eq!(borrowed.to_owned_bytes(), cases[0]);
        let checked = Text::new(owned.as_bytes()).unwrap();
        assert_eq!(&*checked, "grüß");
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        assert!(Text::new(&b"\xff\xfe"[..]).is_err());
        assert!(Text::new(Bytes::from_static(b"ok\xc3")).is_err());
        assert!(Text::new(&b""[..]).unwrap().is_empty());
    }
}
