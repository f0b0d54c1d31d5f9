//! Fixed-width ASCII hex numbers, the only number format on the gotalk wire.

/// Maps an ASCII byte to its hex value, or `0xff` for anything that is not a
/// hex digit. A table keeps the hot header parser free of branches per digit.
static DIGIT: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

const LOWER: &[u8; 16] = b"0123456789abcdef";

/// Parses `digits` (at most 8 of them) as a big-endian hex number.
///
/// Accepts `0-9`, `a-f` and `A-F` only: no sign, no space, no `0x`.
/// On failure returns the index of the first offending byte.
#[inline(always)]
pub(crate) fn parse(digits: &[u8]) -> Result<u32, usize> {
    debug_assert!(digits.len() <= 8);
    // No branch per digit: OR every table value together; only the 0xff
    // marking a non-digit sets the high bit. The rare failure is located
    // afterwards.
    let mut value = 0u32;
    let mut seen = 0u8;
    for &b in digits {
        let d = DIGIT[b as usize];
        seen |= d;
        value = (value << 4) | u32::from(d & 0xf);
    }
    if seen & 0x80 == 0 {
        Ok(value)
    } else {
        Err(digits
            .iter()
            .position(|&b| DIGIT[b as usize] == 0xff)
            .unwrap_or(0))
    }
}

/// Writes `value` as lower-case, zero-padded hex filling all of `dst`.
///
/// The caller guarantees that `value` fits in `dst.len()` digits.
#[inline]
pub(crate) fn write(dst: &mut [u8], mut value: u32) {
    for slot in dst.iter_mut().rev() {
        *slot = LOWER[(value & 0xf) as usize];
        value >>= 4;
    }
    debug_assert_eq!(value, 0, "value did not fit its hex field");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_cases() {
        assert_eq!(parse(b"0000001a"), Ok(0x1a));
        assert_eq!(parse(b"0000001A"), Ok(0x1a));
        assert_eq!(parse(b"ffffffff"), Ok(u32::MAX));
        assert_eq!(parse(b"fff"), Ok(0xfff));
        assert_eq!(parse(b""), Ok(0));
    }

    #[test]
    fn rejects_everything_else_with_position() {
        assert_eq!(parse(b"+0000005"), Err(0));
        assert_eq!(parse(b" 0000005"), Err(0));
        assert_eq!(parse(b"0x000005"), Err(1));
        assert_eq!(parse(b"0000000g"), Err(7));
        assert_eq!(parse(b"00-1"), Err(2));
    }

    #[test]
    fn writes_lower_case_zero_padded() {
        let mut buf = [0u8; 8];
        write(&mut buf, 0xAB);
        assert_eq!(&buf, b"000000ab");
        let mut buf = [0u8; 3];
        write(&mut buf, 0xfff);
        assert_eq!(&buf, b"fff");
        let mut buf = [0u8; 4];
        write(&mut buf, 0);
        assert_eq!(&buf, b"0000");
    }
}
