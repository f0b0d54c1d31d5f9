//! RFC 6455 masking: every byte of a client's frame payload is XORed with
//! the frame's 4-byte key, byte `i` with `key[i % 4]`.

/// XORs `data` with `key`, as if `data` started at byte `offset` of the
/// payload (so a payload can be masked in pieces). Eight bytes at a time:
/// the key repeated into a `u64` covers two periods of it.
pub(crate) fn apply(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotated(key, offset);
    let wide = u64::from_ne_bytes([
        key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3],
    ]);
    let mut words = data.chunks_exact_mut(8);
    for word in &mut words {
        let masked = u64::from_ne_bytes((&*word).try_into().expect("8 bytes")) ^ wide;
        word.copy_from_slice(&masked.to_ne_bytes());
    }
    // 8 is a multiple of 4: the tail starts on key[0] again.
    let tail = words.into_remainder();
    let tail = match tail.split_first_chunk_mut::<4>() {
        Some((word, rest)) => {
            *word = (u32::from_ne_bytes(*word) ^ u32::from_ne_bytes(key)).to_ne_bytes();
            rest
        }
        None => tail,
    };
    for (byte, k) in tail.iter_mut().zip(key) {
        *byte ^= k;
    }
}

/// Copies `src` into the end of `out`, masked with `key` (from offset 0).
pub(crate) fn extend_masked(out: &mut Vec<u8>, src: &[u8], key: [u8; 4]) {
    let start = out.len();
    out.extend_from_slice(src);
    apply(&mut out[start..], key, 0);
}

/// `key` as seen from payload byte `offset`.
fn rotated(key: [u8; 4], offset: usize) -> [u8; 4] {
    let r = offset % 4;
    [key[r], key[(r + 1) % 4], key[(r + 2) % 4], key[(r + 3) % 4]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The definition, byte by byte.
    fn scalar(data: &mut [u8], key: [u8; 4], offset: usize) {
        for (i, b) in data.iter_mut().enumerate() {
            *b ^= key[(offset + i) % 4];
        }
    }

    #[test]
    fn rfc_6455_example() {
        // Section 5.7: "Hello" masked with 37 fa 21 3d.
        let mut data = *b"Hello";
        apply(&mut data, [0x37, 0xfa, 0x21, 0x3d], 0);
        assert_eq!(data, [0x7f, 0x9f, 0x4d, 0x51, 0x58]);
    }

    #[test]
    fn every_length_and_offset_up_to_40() {
        let key = [0xa1, 0x02, 0xf3, 0x7c];
        for len in 0..40 {
            for offset in 0..9 {
                let orig: Vec<u8> = (0..len as u8).map(|i| i.wrapping_mul(37)).collect();
                let (mut fast, mut slow) = (orig.clone(), orig.clone());
                apply(&mut fast, key, offset);
                scalar(&mut slow, key, offset);
                assert_eq!(fast, slow, "len {len} offset {offset}");
            }
        }
    }

    proptest! {
        #[test]
        fn matches_the_scalar_definition(
            data in proptest::collection::vec(any::<u8>(), 0..300),
            key in any::<[u8; 4]>(),
            offset in 0usize..64,
            // Also at an odd start inside a larger buffer.
            skip in 0usize..8,
        ) {
            let mut fast = data.clone();
            let mut slow = data.clone();
            let skip = skip.min(data.len());
            apply(&mut fast[skip..], key, offset);
            scalar(&mut slow[skip..], key, offset);
            prop_assert_eq!(&fast, &slow);
            // Masking twice gives the data back.
            apply(&mut fast[skip..], key, offset);
            prop_assert_eq!(fast, data);
        }

        #[test]
        fn in_pieces_is_the_same_as_at_once(
            data in proptest::collection::vec(any::<u8>(), 0..200),
            key in any::<[u8; 4]>(),
            cut in 0usize..200,
        ) {
            let cut = cut.min(data.len());
            let mut whole = data.clone();
            apply(&mut whole, key, 0);
            let mut pieces = data.clone();
            let (a, b) = pieces.split_at_mut(cut);
            apply(a, key, 0);
            apply(b, key, cut);
            prop_assert_eq!(&whole, &pieces);
            let mut copied = Vec::new();
            extend_masked(&mut copied, &data, key);
            prop_assert_eq!(copied, pieces);
        }
    }
}
