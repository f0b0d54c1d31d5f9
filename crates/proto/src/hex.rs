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

/// `0x01` in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte of a word.
pub(crate) const HIGH: u64 = ONES * 0x80;

/// Parses the `width` hex digits in the most significant bytes of `word`,
/// eight bytes read little-endian (so the last of them in memory order):
/// a SWAR version of [`parse`] that checks and converts all digits at once,
/// without a table lookup per digit. `None` if any of them is not a hex
/// digit ([`parse`] then says which).
///
/// `width` is 1 to 8; the bytes below the digits are ignored.
#[inline(always)]
pub(crate) fn parse_word(word: u64, width: u32) -> Option<u32> {
    debug_assert!((1..=8).contains(&width));
    // The checks see the ignored low bytes as '0'.
    let filler = u64::MAX.checked_shr(8 * width).unwrap_or(0);
    let x = (word & !filler) | ((ONES * u64::from(b'0')) & filler);
    // For a byte b below 0x80, b >= lo when b + (0x80 - lo) has its high
    // bit set, and b <= hi when b + (0x7f - hi) does not; no sum carries
    // into the next byte. A byte of 0x80 or more fails both checks itself
    // (whatever carry comes in), and whatever its own carry does to the
    // next byte's checks, the word is refused because of it.
    // (Wrapping: a carry out of the top byte only comes from a refused byte.)
    let digit = x.wrapping_add(ONES * 0x50) & !x.wrapping_add(ONES * 0x46) & HIGH; // '0'..='9'
    let lower = x | (ONES * 0x20); // 'A'..='F' -> 'a'..='f'
    let letter = lower.wrapping_add(ONES * 0x1f) & !lower.wrapping_add(ONES * 0x19) & HIGH; // 'a'..='f'
    if digit | letter != HIGH {
        return None;
    }
    // The value is computed from `word` itself, not from `x` or the checks:
    // those only feed a predicted branch, and in a stream of frames the
    // next frame's address waits for this value, so its latency is the
    // decoder's speed. Low nibble of each byte, plus 9 for letters ('a' is
    // 0x61), which are the valid digits with bit 6 set; the masks (constant
    // once inlined) leave the ignored bytes out at no cost.
    let digits = !filler;
    let nibbles = (word & ((ONES * 0x0f) & digits)) + ((word >> 6) & (ONES & digits)) * 9;
    // Merge neighbours, the first byte in memory being the most significant
    // digit: nibble pairs into bytes, byte pairs into 16 bits, then 32.
    let v = ((nibbles << 4) | (nibbles >> 8)) & 0x00ff_00ff_00ff_00ff;
    let v = ((v << 8) | (v >> 16)) & 0x0000_ffff_0000_ffff;
    Some(((v << 16) | (v >> 32)) as u32)
}

/// [`parse_word`] by table, one lookup per digit: for the short fields
/// (up to four digits) fewer instructions than the word-wide checks, whose
/// cost does not shrink with the width.
#[inline(always)]
pub(crate) fn parse_top(word: u64, width: u32) -> Option<u32> {
    debug_assert!((1..=4).contains(&width));
    let d = |i: u32| u32::from(DIGIT[(word >> (8 * i)) as u8 as usize]);
    // Four lookups side by side, combined as a tree (no chain of shifts);
    // digits above the width count as zeros.
    let (a, b) = (
        if width >= 4 { d(4) } else { 0 },
        if width >= 3 { d(5) } else { 0 },
    );
    let (c, e) = (if width >= 2 { d(6) } else { 0 }, d(7));
    let seen = (a | b) | (c | e);
    (seen & 0x80 == 0).then_some(((a << 12) | (b << 8)) | ((c << 4) | e))
}

/// `value` as eight lower-case hex digits, the most significant first; a
/// narrower field is the last digits (`&digits(v)[8 - width..]`, with `v`
/// under `16^width`).
///
/// SWAR, like [`parse_word`]: every digit at once, with no table and no
/// loop. Each of the four bytes is spread over two, its high nibble first
/// in memory; a nibble of 10 or more gains the distance from `'9' + 1` to
/// `'a'`.
#[inline(always)]
pub(crate) const fn digits(value: u32) -> [u8; 8] {
    // Most significant byte first in memory, one byte per 16 bits.
    let x = value.swap_bytes() as u64;
    let x = (x | (x << 16)) & 0x0000_ffff_0000_ffff;
    let x = (x | (x << 8)) & 0x00ff_00ff_00ff_00ff;
    // High nibble in the first byte of each pair, low nibble in the second.
    let nibbles = ((x >> 4) & (ONES * 0x0f)) | ((x & 0x000f_000f_000f_000f) << 8);
    // Bit 4 of nibble + 6 is set for 10..=15 (no byte carries: at most 21).
    let letters = ((nibbles + ONES * 6) >> 4) & ONES;
    (nibbles + ONES * b'0' as u64 + letters * (b'a' - b'9' - 1) as u64).to_le_bytes()
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

    /// `digits` placed at the top of a word whose low bytes are junk.
    fn word_of(digits: &[u8]) -> u64 {
        let mut w = *b"\xff\x00zz\x80 g-";
        w[8 - digits.len()..].copy_from_slice(digits);
        u64::from_le_bytes(w)
    }

    #[test]
    fn parse_word_agrees_with_parse_on_every_byte_in_every_position() {
        // Each byte value at each position of an otherwise valid field.
        for width in 1..=8usize {
            for pos in 0..width {
                for b in 0..=255u8 {
                    let mut digits = *b"9aF07bE1";
                    let digits = &mut digits[..width];
                    digits[pos] = b;
                    assert_eq!(
                        parse_word(word_of(digits), width as u32),
                        parse(digits).ok(),
                        "{digits:?}"
                    );
                    if width <= 4 {
                        assert_eq!(
                            parse_top(word_of(digits), width as u32),
                            parse(digits).ok(),
                            "{digits:?}"
                        );
                    }
                }
            }
        }
        assert_eq!(parse_word(word_of(b"ffffffff"), 8), Some(u32::MAX));
        assert_eq!(parse_word(word_of(b"00000000"), 8), Some(0));
        assert_eq!(parse_word(word_of(b"12345678"), 8), Some(0x1234_5678));
        assert_eq!(parse_word(word_of(b"ABC"), 3), Some(0xabc));
        assert_eq!(parse_top(word_of(b"ABC"), 3), Some(0xabc));
        assert_eq!(parse_top(word_of(b"fFfF"), 4), Some(0xffff));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// Any word, any width: the digits are its top bytes, whatever the
        /// bytes below them hold. Hex-heavy bytes so that many words pass.
        #[test]
        fn parse_word_agrees_with_parse_on_any_word(
            bytes in proptest::array::uniform8(proptest::prop_oneof![
                3 => proptest::sample::select(b"0123456789abcdefABCDEF".to_vec()),
                1 => proptest::prelude::any::<u8>(),
            ]),
            width in 1u32..=8,
        ) {
            let digits = &bytes[8 - width as usize..];
            proptest::prop_assert_eq!(
                parse_word(u64::from_le_bytes(bytes), width),
                parse(digits).ok()
            );
            if width <= 4 {
                proptest::prop_assert_eq!(
                    parse_top(u64::from_le_bytes(bytes), width),
                    parse(digits).ok()
                );
            }
        }
    }

    #[test]
    fn digits_are_lower_case_zero_padded() {
        assert_eq!(&digits(0xAB), b"000000ab");
        assert_eq!(&digits(0xfff)[5..], b"fff");
        assert_eq!(&digits(0)[4..], b"0000");
        assert_eq!(&digits(u32::MAX), b"ffffffff");
        assert_eq!(&digits(0x0123_4567), b"01234567");
        assert_eq!(&digits(0x89ab_cdef), b"89abcdef");
        assert_eq!(&digits(0x9a9a_0f0f), b"9a9a0f0f");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]

        /// The same digits as the standard formatter, and they parse back.
        #[test]
        fn digits_agree_with_format_and_parse(value in proptest::prelude::any::<u32>()) {
            let d = digits(value);
            let formatted = format!("{value:08x}");
            proptest::prop_assert_eq!(&d[..], formatted.as_bytes());
            proptest::prop_assert_eq!(parse(&d), Ok(value));
        }
    }
}
