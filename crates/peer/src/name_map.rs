//! The table that finds a handler by its name, looked up on every request
//! and notification.
//!
//! A general hash map spent about 120 instructions per request here
//! (callgrind, `gotalk serve` at 640 in flight): a hash fed one byte at a
//! time, a probe, and a `memcmp` call for the key. Names are short, so this
//! table reads a name as at most two words: for a name of up to 16 bytes
//! those words and its length *are* the name, hashing them is one multiply
//! and comparing them is three integer compares. Longer names hash every
//! word and are compared byte for byte. Only registration changes the
//! table, so it is built for lookups: open addressing over indices into a
//! vector of entries, at most half full (a probe always ends at an empty
//! slot). What a peer sends is only ever looked up, never inserted, so it
//! cannot lengthen a probe.

/// A name read as words: its length, its first and its last (up to) eight
/// bytes. For a name of at most 16 bytes this is the whole name: two names
/// of the same length with the same words are the same name.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Key {
    len: usize,
    head: u64,
    tail: u64,
}

/// Names up to this length are compared by their [`Key`] alone.
const KEY_COVERS: usize = 16;

/// Marks a free slot.
const EMPTY: u32 = u32::MAX;

impl Key {
    #[inline(always)]
    fn of(name: &[u8]) -> Self {
        let len = name.len();
        // Overlapping loads: every byte is in one of the two words.
        let (head, tail) = match len {
            0 => (0, 0),
            1..=3 => (
                u64::from(name[0]) | u64::from(name[len / 2]) << 8 | u64::from(name[len - 1]) << 16,
                0,
            ),
            4..=8 => (
                u64::from(word4(&name[..4])) | u64::from(word4(&name[len - 4..])) << 32,
                0,
            ),
            _ => (word8(&name[..8]), word8(&name[len - 8..])),
        };
        Self { len, head, tail }
    }

    /// The hash of `name`, whose key this is: for a name longer than
    /// [`KEY_COVERS`], the words between head and tail count too, so names
    /// that differ only in the middle still spread.
    #[inline(always)]
    fn hash(&self, name: &[u8]) -> u64 {
        let h = self.head ^ self.tail.rotate_left(32) ^ (self.len as u64).rotate_right(8);
        let h = if self.len > KEY_COVERS {
            fold_middle(h, &name[8..self.len - 8])
        } else {
            h
        };
        // Fibonacci hashing: the table takes the product's top bits.
        h.wrapping_mul(MULTIPLIER)
    }
}

/// Folds the middle of a long name into `h`. Out of line: the short names
/// of the hot path then keep their registers.
#[inline(never)]
fn fold_middle(mut h: u64, middle: &[u8]) -> u64 {
    let mut words = middle.chunks_exact(8);
    for word in &mut words {
        h = h.wrapping_mul(MULTIPLIER).rotate_left(29) ^ word8(word);
    }
    for &b in words.remainder() {
        h = h.wrapping_mul(MULTIPLIER).rotate_left(29) ^ u64::from(b);
    }
    h
}

/// 2^64 divided by the golden ratio, odd.
const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;

#[inline(always)]
fn word4(b: &[u8]) -> u32 {
    u32::from_le_bytes(b.try_into().expect("four bytes"))
}

#[inline(always)]
fn word8(b: &[u8]) -> u64 {
    u64::from_le_bytes(b.try_into().expect("eight bytes"))
}

#[derive(Clone)]
struct Entry<V> {
    key: Key,
    name: Box<str>,
    value: V,
}

/// A map from handler names to `V`, read on every message, written only
/// while handlers are registered.
#[derive(Clone)]
pub(crate) struct NameMap<V> {
    entries: Vec<Entry<V>>,
    /// Indices into `entries`, or [`EMPTY`]; a power of two long, at least
    /// twice `entries.len()` (or empty with no entries).
    slots: Box<[u32]>,
    /// 64 minus log2 of `slots.len()`: a hash's top bits pick its slot.
    shift: u32,
}

impl<V> Default for NameMap<V> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            slots: Box::new([]),
            shift: 64,
        }
    }
}

impl<V> NameMap<V> {
    /// The value registered as `name`.
    #[inline]
    pub(crate) fn get(&self, name: &str) -> Option<&V> {
        self.find(name).map(|i| &self.entries[i].value)
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut V> {
        self.find(name).map(|i| &mut self.entries[i].value)
    }

    pub(crate) fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_some()
    }

    /// Registers `value` as `name`, returning what it replaces.
    pub(crate) fn insert(&mut self, name: Box<str>, value: V) -> Option<V> {
        if let Some(i) = self.find(&name) {
            return Some(std::mem::replace(&mut self.entries[i].value, value));
        }
        let key = Key::of(name.as_bytes());
        self.entries.push(Entry { key, name, value });
        if self.entries.len() * 2 > self.slots.len() {
            self.rebuild();
        } else {
            self.place(self.entries.len() - 1);
        }
        None
    }

    pub(crate) fn remove(&mut self, name: &str) -> Option<V> {
        let i = self.find(name)?;
        let removed = self.entries.swap_remove(i);
        // Removing from open addressing would leave gaps in probe chains;
        // this only happens while handlers are registered.
        self.rebuild();
        Some(removed.value)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| &*e.name)
    }

    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut V)> {
        self.entries.iter_mut().map(|e| (&*e.name, &mut e.value))
    }

    #[inline(always)]
    fn find(&self, name: &str) -> Option<usize> {
        let name = name.as_bytes();
        let mask = self.slots.len().wrapping_sub(1);
        if self.entries.is_empty() {
            return None;
        }
        let key = Key::of(name);
        let mut at = (key.hash(name) >> self.shift) as usize;
        loop {
            let slot = self.slots[at & mask];
            if slot == EMPTY {
                return None;
            }
            let entry = &self.entries[slot as usize];
            if entry.key == key && (key.len <= KEY_COVERS || entry.name.as_bytes() == name) {
                return Some(slot as usize);
            }
            at = (at & mask) + 1;
        }
    }

    /// Puts entry `i` in the first free slot of its probe chain.
    fn place(&mut self, i: usize) {
        let entry = &self.entries[i];
        let mask = self.slots.len() - 1;
        let mut at = (entry.key.hash(entry.name.as_bytes()) >> self.shift) as usize & mask;
        while self.slots[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = u32::try_from(i).expect("fewer than 2^32 handlers");
    }

    /// Sizes the slots for the entries (at most half full) and places them all.
    fn rebuild(&mut self) {
        if self.entries.is_empty() {
            *self = Self::default();
            return;
        }
        let len = (self.entries.len() * 2).next_power_of_two().max(4);
        self.slots = vec![EMPTY; len].into_boxed_slice();
        self.shift = 64 - len.trailing_zeros();
        for i in 0..self.entries.len() {
            self.place(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn finds_what_was_inserted_and_nothing_else() {
        let mut map = NameMap::default();
        assert_eq!(map.get("echo"), None, "an empty map");
        for (i, name) in [
            "",
            "a",
            "ab",
            "abc",
            "echo",
            "rooms.join",
            "a-much-longer-operation-name",
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(map.insert(name.into(), i), None);
        }
        assert_eq!(map.get(""), Some(&0));
        assert_eq!(map.get("abc"), Some(&3));
        assert_eq!(map.get("rooms.join"), Some(&5));
        assert_eq!(map.get("a-much-longer-operation-name"), Some(&6));
        for absent in [
            "b",
            "ac",
            "abd",
            "echp",
            "rooms.jojn",
            "a-much-longer-operatiom-name",
        ] {
            assert_eq!(map.get(absent), None, "{absent}");
        }
        assert_eq!(map.insert("echo".into(), 40), Some(4), "replaced");
        assert_eq!(map.remove("ab"), Some(2));
        assert_eq!(map.get("ab"), None);
        assert_eq!(map.get("echo"), Some(&40), "still found after a removal");
        *map.get_mut("a").unwrap() += 10;
        assert_eq!(map.get("a"), Some(&11));
    }

    #[test]
    fn long_names_that_differ_only_in_the_middle_are_told_apart() {
        // Same length, same first and last eight bytes.
        let a = "prefix12-middle-A-suffix12";
        let b = "prefix12-middle-B-suffix12";
        let mut map = NameMap::default();
        map.insert(a.into(), 1);
        assert_eq!(map.get(b), None);
        map.insert(b.into(), 2);
        assert_eq!((map.get(a), map.get(b)), (Some(&1), Some(&2)));
    }

    #[test]
    fn keys_of_short_names_are_the_names() {
        // A key is made of the name's bytes, so it is the whole name when
        // every position counts: changing any one byte of a name of up to
        // 16 bytes, to any other value, changes its key.
        for len in 1..=KEY_COVERS {
            let base: Vec<u8> = (0..len as u8).map(|i| b'a' + i).collect();
            for pos in 0..len {
                for v in 0..=255u8 {
                    let mut name = base.clone();
                    name[pos] = v;
                    assert_eq!(name == base, Key::of(&name) == Key::of(&base), "{name:?}");
                }
            }
        }
    }

    proptest! {
        /// Any sequence of inserts and removes leaves the map answering as
        /// the standard one does, for names that were and were not used.
        #[test]
        fn agrees_with_a_hash_map(
            ops in proptest::collection::vec((any::<bool>(), "[a-c.]{0,20}", any::<u8>()), 0..80),
            probes in proptest::collection::vec("[a-c.]{0,20}", 0..20),
        ) {
            let mut map = NameMap::default();
            let mut model = HashMap::new();
            for (insert, name, value) in &ops {
                if *insert {
                    prop_assert_eq!(map.insert(name.as_str().into(), *value), model.insert(name.clone(), *value));
                } else {
                    prop_assert_eq!(map.remove(name), model.remove(name));
                }
            }
            for name in ops.iter().map(|(_, n, _)| n).chain(&probes) {
                prop_assert_eq!(map.get(name), model.get(name));
            }
            let mut keys: Vec<_> = map.keys().collect();
            keys.sort();
            let mut expected: Vec<_> = model.keys().map(String::as_str).collect();
            expected.sort();
            prop_assert_eq!(keys, expected);
        }
    }
}
