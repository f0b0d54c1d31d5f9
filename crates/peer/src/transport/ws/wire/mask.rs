//! RFC 6455 masking: every byte of a client's frame payload is XORed with
//! the frame's 4-byte key, byte `i` with `key[i % 4]`.

/// XORs `data` with `key`, as if `data` started at byte `offset` of the
/// payload (so a payload can be masked in pieces). Sixteen bytes at a time
/// (one SSE XOR on x86-64), then eight, four and the last few: each width
/// is a multiple of the key's, so every step starts on `key[0]` again. A
/// gotalk header or small payload is one or two of these steps; the loop
/// of eight-byte words it replaces cost about 70 instructions per frame.
#[inline]
pub(crate) fn apply(data: &mut [u8], key: [u8; 4], offset: usize) {
    let key = rotated(key, offset);
    let k4 = u32::from_ne_bytes(key);
    // The key repeated: the same value in each half puts the key's bytes
    // in memory order twice, whatever the endianness.
    let k8 = u64::from(k4) * 0x1_0000_0001;
    let k16 = u128::from(k8) * ((1 << 64) | 1);
    let mut chunks = data.chunks_exact_mut(16);
    for chunk in &mut chunks {
        let masked = u128::from_ne_bytes((&*chunk).try_into().expect("16 bytes")) ^ k16;
        chunk.copy_from_slice(&masked.to_ne_bytes());
    }
    let tail = chunks.into_remainder();
    let tail = match tail.split_first_chunk_mut::<8>() {
        Some((word, rest)) => {
            *word = (u64::from_ne_bytes(*word) ^ k8).to_ne_bytes();
            rest
        }
        None => tail,
    };
    let tail = match tail.split_first_chunk_mut::<4>() {
        Some((word, rest)) => {
            *word = (u32::from_ne_bytes(*word) ^ k4).to_ne_bytes();
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
    fn every_length_and_offset_up_to_50() {
        let key = [0xa1, 0x02, 0xf3, 0x7c];
        for len in 0..50 {
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
