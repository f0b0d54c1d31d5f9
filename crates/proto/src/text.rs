//! Operation and notification names: UTF-8 text kept in the buffer it was read from.

use core::{
    cmp::Ordering,
    fmt,
    hash::{Hash, Hasher},
    str::Utf8Error,
};

use bytes::Bytes;

mod sealed {
    /// What a [`Text`](super::Text) over this buffer type keeps its bytes
    /// in, and the conversions. Private: only the two buffer types below.
    pub trait Sealed: Sized {
        /// The representation.
        type TextRepr: Clone;
        /// The bytes of a representation; the same on every call.
        fn repr_bytes(repr: &Self::TextRepr) -> &[u8];
        /// Keeps `buf` as it is.
        fn repr_from(buf: Self) -> Self::TextRepr;
        /// Back to a buffer of this type.
        fn repr_into(repr: Self::TextRepr) -> Self;
    }

    impl<'a> Sealed for &'a [u8] {
        type TextRepr = &'a [u8];
        fn repr_bytes<'s>(repr: &'s &'a [u8]) -> &'s [u8] {
            repr
        }
        fn repr_from(buf: Self) -> &'a [u8] {
            buf
        }
        fn repr_into(repr: &'a [u8]) -> Self {
            repr
        }
    }

    impl Sealed for bytes::Bytes {
        type TextRepr = super::OwnedText;
        #[inline]
        fn repr_bytes(repr: &super::OwnedText) -> &[u8] {
            repr.as_bytes()
        }
        fn repr_from(buf: Self) -> super::OwnedText {
            super::OwnedText::Shared(buf)
        }
        fn repr_into(repr: super::OwnedText) -> Self {
            match repr {
                super::OwnedText::Inline(name) => Self::copy_from_slice(name.as_bytes()),
                super::OwnedText::Shared(bytes) => bytes,
            }
        }
    }
}

/// A byte buffer a [`Message`](crate::Message) can hold its payload and names in.
///
/// Implemented for `&[u8]` (the borrowing slice API) and [`Bytes`] (the owned,
/// zero-copy API). Sealed: both types always return the same bytes from
/// `as_ref`, which [`Text`] relies on.
pub trait Buffer: AsRef<[u8]> + Clone + sealed::Sealed {}
impl Buffer for &[u8] {}
impl Buffer for Bytes {}

/// Longest name a `Text<Bytes>` keeps inline, without a reference to a
/// shared buffer: operation names are short, and a `Bytes` handle on the
/// read buffer costs an atomic increment when cut and a decrement when
/// dropped, on the counter every frame of that buffer shares.
pub(crate) const INLINE_NAME_LEN: usize = 23;

/// A short name's bytes in place; the last byte holds the length.
#[derive(Clone, Copy)]
pub struct InlineName([u8; INLINE_NAME_LEN + 1]);

impl InlineName {
    /// The name held: its first `len` bytes. `bytes` beyond `len` are
    /// ignored (they may hold whatever followed the name).
    #[inline(always)]
    pub(crate) fn new(mut bytes: [u8; INLINE_NAME_LEN + 1], len: usize) -> Self {
        debug_assert!(len <= INLINE_NAME_LEN);
        bytes[INLINE_NAME_LEN] = len as u8;
        Self(bytes)
    }

    /// A copy of `s`, if it is short enough.
    fn copy_of(s: &[u8]) -> Option<Self> {
        let mut bytes = [0; INLINE_NAME_LEN + 1];
        bytes
            .get_mut(..s.len())
            .filter(|_| s.len() <= INLINE_NAME_LEN)?
            .copy_from_slice(s);
        Some(Self::new(bytes, s.len()))
    }

    #[inline(always)]
    fn as_bytes(&self) -> &[u8] {
        // `min` cannot change a length `new` stored, and spares the bounds
        // check.
        &self.0[..usize::from(self.0[INLINE_NAME_LEN]).min(INLINE_NAME_LEN)]
    }
}

/// How a `Text<Bytes>` holds its bytes: short names inline (no reference
/// count to touch when decoded, cloned or dropped), others as a `Bytes`.
#[derive(Clone)]
pub enum OwnedText {
    /// Up to [`INLINE_NAME_LEN`] bytes, copied.
    Inline(InlineName),
    /// Any length, shared.
    Shared(Bytes),
}

impl OwnedText {
    /// `s` inline when short enough, else the `Bytes` that `shared` makes
    /// of it.
    fn of<T: AsRef<[u8]>>(s: T, shared: impl FnOnce(T) -> Bytes) -> Self {
        match InlineName::copy_of(s.as_ref()) {
            Some(name) => Self::Inline(name),
            None => Self::Shared(shared(s)),
        }
    }

    #[inline(always)]
    fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Inline(name) => name.as_bytes(),
            Self::Shared(bytes) => bytes,
        }
    }
}

/// UTF-8 text stored in a [`Buffer`] without copying it, or for a short
/// `Text<Bytes>`, in place.
///
/// Names on the gotalk wire (operation and notification names) are UTF-8 of
/// at most [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes. A `Text` is validated
/// once, when it is built, so reading it back as `&str` is free. A
/// `Text<Bytes>` of up to 23 bytes made by the decoder, from a `&str` or from
/// a `String` holds a copy of its bytes instead of a reference-counted
/// buffer, so cloning and dropping it touch no counter.
///
/// ```
/// use gotalk_proto::Text;
/// let op = Text::from_static("echo");
/// assert_eq!(op.as_str(), "echo");
/// assert!(Text::new(&b"\xff"[..]).is_err());
/// ```
pub struct Text<B: Buffer>(B::TextRepr);

impl<B: Buffer> Text<B> {
    /// Validates `bytes` as UTF-8.
    pub fn new(bytes: B) -> Result<Self, Utf8Error> {
        core::str::from_utf8(bytes.as_ref())?;
        Ok(Self(B::repr_from(bytes)))
    }

    /// Wraps bytes the caller has already checked to be UTF-8 (the decoder,
    /// which validates a name while parsing its header). `as_str` relies on
    /// this, so it stays private to the crate.
    #[inline(always)]
    pub(crate) fn from_validated(bytes: B) -> Self {
        debug_assert!(core::str::from_utf8(bytes.as_ref()).is_ok());
        Self(B::repr_from(bytes))
    }

    /// The text as a string slice.
    #[allow(unsafe_code)]
    #[inline]
    pub fn as_str(&self) -> &str {
        // SAFETY: `Text` is only built by `new`, `From<&str>`, `From<String>`,
        // `from_static` and the crate-private `from_validated` and
        // `from_validated_inline` (whose only callers pass bytes
        // `parse_header` has just validated), each of which has valid UTF-8
        // in hand. The representation is private: for `&[u8]` the slice
        // itself; for `Bytes` either a `Bytes` (an immutable view whose
        // `as_ref` returns the same bytes on every call) or an `InlineName`,
        // a copy of exactly those bytes and their length, never changed
        // after construction (no `&mut` access to it exists). So the bytes
        // validated at construction are the bytes we read here. The
        // `text_stays_valid_*` tests exercise every constructor, both
        // representations, and the decoder's inline copy.
        unsafe { core::str::from_utf8_unchecked(self.as_bytes()) }
    }

    /// The raw UTF-8 bytes.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        B::repr_bytes(&self.0)
    }

    /// Length in bytes (what the wire's `text3Size` counts).
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for the empty name (the wire allows it).
    pub fn is_empty(&self) -> bool {
        self.as_bytes().is_empty()
    }

    /// Gives back the underlying buffer. A short `Text<Bytes>` kept inline
    /// is copied into a new `Bytes` (an allocation).
    pub fn into_inner(self) -> B {
        B::repr_into(self.0)
    }
}

impl<B: Buffer> Clone for Text<B> {
    #[inline]
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<B: Buffer> PartialEq for Text<B> {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl<B: Buffer> Eq for Text<B> {}

impl<B: Buffer> PartialOrd for Text<B> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<B: Buffer> Ord for Text<B> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

/// Hashes the bytes, as `Bytes` and `&[u8]` do.
impl<B: Buffer> Hash for Text<B> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl Text<Bytes> {
    /// Text from a `&'static str`, without copying.
    pub const fn from_static(s: &'static str) -> Self {
        Self(OwnedText::Shared(Bytes::from_static(s.as_bytes())))
    }

    /// A name the decoder has validated, copied in place.
    #[inline(always)]
    pub(crate) fn from_validated_inline(name: InlineName) -> Self {
        debug_assert!(core::str::from_utf8(name.as_bytes()).is_ok());
        Self(OwnedText::Inline(name))
    }

    /// True when the bytes are kept inline (no shared buffer).
    #[cfg(test)]
    pub(crate) fn is_inline(&self) -> bool {
        matches!(self.0, OwnedText::Inline(_))
    }
}

impl<'a> Text<&'a [u8]> {
    /// Copies the text into an owned buffer: in place when short, else a
    /// new reference-counted buffer.
    pub fn to_owned_bytes(&self) -> Text<Bytes> {
        Text(OwnedText::of(self.0, Bytes::copy_from_slice))
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
        Self(OwnedText::of(s, Bytes::from))
    }
}

impl From<&str> for Text<Bytes> {
    fn from(s: &str) -> Self {
        Text::<&[u8]>::from(s).to_owned_bytes()
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

    /// Short texts are kept inline, long ones shared; both read back the
    /// same, compare, order and hash by their bytes alone, and give their
    /// bytes back.
    #[test]
    fn text_stays_valid_inline_and_shared() {
        use std::hash::BuildHasher;
        for len in [
            0,
            1,
            7,
            8,
            9,
            16,
            17,
            INLINE_NAME_LEN,
            INLINE_NAME_LEN + 1,
            40,
        ] {
            // Multi-byte characters, cut on a boundary.
            let s: String = "ä.b"
                .chars()
                .cycle()
                .scan(0, |n, c| {
                    *n += c.len_utf8();
                    (*n <= len).then_some(c)
                })
                .collect();
            let inline = s.len() <= INLINE_NAME_LEN;
            let built = [
                Text::from(s.clone()),
                Text::from(s.as_str()),
                Text::<&[u8]>::from(s.as_str()).to_owned_bytes(),
            ];
            let shared = Text::new(Bytes::copy_from_slice(s.as_bytes())).unwrap();
            assert!(!shared.is_inline());
            for t in &built {
                assert_eq!(t.is_inline(), inline, "{len}");
                assert_eq!(t.as_str(), s);
                assert_eq!(t.clone().as_str(), s);
                assert_eq!(t, &shared);
                assert_eq!(t.cmp(&shared), Ordering::Equal);
                let state = std::collections::hash_map::RandomState::new();
                assert_eq!(state.hash_one(t), state.hash_one(&shared));
                assert_eq!(t.clone().into_inner(), s.as_bytes());
            }
        }
        let a = Text::from("abc");
        let b = Text::new(Bytes::from_static(b"abd")).unwrap();
        assert!(a < b);
        assert_ne!(a, b);
    }

    #[test]
    fn text_rejects_invalid_utf8() {
        assert!(Text::new(&b"\xff\xfe"[..]).is_err());
        assert!(Text::new(Bytes::from_static(b"ok\xc3")).is_err());
        assert!(Text::new(&b""[..]).unwrap().is_empty());
    }
}
