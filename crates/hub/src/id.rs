//! Random identifiers: history epochs, node and client ids.

use std::{
    hash::{BuildHasher, Hasher},
    sync::atomic::{AtomicU64, Ordering},
    time::{SystemTime, UNIX_EPOCH},
};

/// 64 random bits, as 16 hex digits.
///
/// They tell epochs and nodes apart, so they only need to differ between
/// processes and calls, not to be secret: `RandomState` is seeded from the
/// OS once per thread and advanced per instance, and the time and a
/// process-wide counter are mixed in, which avoids a dependency on a
/// random number crate.
pub(crate) fn random_hex() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(nanos);
    format!("{:016x}", hasher.finish())
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_differ() {
        let a = super::random_hex();
        let b = super::random_hex();
        assert_eq!(a.len(), 16);
        assert_ne!(a, b);
    }
}
