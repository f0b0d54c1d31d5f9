//! The driver's read buffer, and the spare that saves reallocating it.
//!
//! Decoded payloads are slices of the read buffer, so a buffer cannot take
//! new bytes over old ones until every payload cut from it is dropped. With
//! large frames that is usually not yet the case when the next read needs
//! room: the last payload is still with its handler, or queued for writing.
//! Allocating a fresh buffer each time costs an allocation and the page
//! faults of new memory per frame. Instead replaced buffers are kept as
//! spares, and one is taken back as soon as its payloads are gone, so a run
//! of large frames cycles through a few buffers: as many as there are
//! payloads in use at once (for example 16 large requests in flight).

use bytes::BytesMut;

/// Spares at most this large are kept; a larger one (from an exceptional
/// frame) is let go, so an idle connection does not hold it.
const MAX_SPARE: usize = 1024 * 1024;
/// Most spares kept, and most bytes in them all.
const MAX_SPARES: usize = 32;
const MAX_SPARE_BYTES: usize = 2 * 1024 * 1024;

/// A read buffer with spares.
#[derive(Debug)]
pub(crate) struct ReadBuffer {
    buf: BytesMut,
    /// Size of the allocation `buf` is in.
    buf_alloc: usize,
    /// Earlier buffers, emptied, whose payloads may still be in use, with
    /// the size of their allocations.
    spares: Vec<(BytesMut, usize)>,
    spare_bytes: usize,
}

impl ReadBuffer {
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: BytesMut::with_capacity(capacity),
            buf_alloc: capacity,
            spares: Vec::new(),
            spare_bytes: 0,
        }
    }

    /// The bytes read and not yet decoded.
    pub(crate) fn get_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Makes room for at least `room` more bytes: in place if the buffer's
    /// own allocation allows, else in a spare whose payloads are gone, else
    /// in a new buffer; the current one becomes a spare. Undecoded bytes
    /// move along.
    pub(crate) fn reserve(&mut self, room: usize) {
        if self.buf.try_reclaim(room) {
            return;
        }
        let needed = room + self.buf.len();
        let free = self
            .spares
            .iter_mut()
            .position(|(spare, alloc)| *alloc >= needed && spare.try_reclaim(needed));
        let (next, next_alloc) = match free {
            Some(at) => {
                let (spare, alloc) = self.spares.swap_remove(at);
                self.spare_bytes -= alloc;
                (spare, alloc)
            }
            None => (BytesMut::with_capacity(needed), needed),
        };
        let mut old = std::mem::replace(&mut self.buf, next);
        self.buf.extend_from_slice(&old);
        old.clear();
        let old_alloc = std::mem::replace(&mut self.buf_alloc, next_alloc);
        if old_alloc <= MAX_SPARE
            && self.spares.len() < MAX_SPARES
            && self.spare_bytes + old_alloc <= MAX_SPARE_BYTES
        {
            self.spares.push((old, old_alloc));
            self.spare_bytes += old_alloc;
        }
        // Otherwise `old` is dropped: its memory goes with the last payload
        // cut from it.
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_run_of_large_frames_cycles_through_a_few_buffers() {
        let frame = 64 * 1024;
        let mut rb = ReadBuffer::with_capacity(frame);
        let mut held = Vec::new();
        let mut allocations = std::collections::HashSet::new();
        for _ in 0..100 {
            rb.reserve(frame);
            let buf = rb.get_mut();
            allocations.insert(buf.as_ptr() as usize);
            buf.extend_from_slice(&vec![7u8; frame]);
            // Up to 16 payloads are held while the next frames are read.
            held.push(buf.split_to(frame).freeze());
            if held.len() > 16 {
                held.remove(0);
            }
        }
        assert_eq!(allocations.len(), 17, "17 buffers, reused in turn");
    }

    #[test]
    fn undecoded_bytes_move_with_the_buffer() {
        let mut rb = ReadBuffer::with_capacity(8);
        rb.get_mut().extend_from_slice(b"12345678");
        let whole = rb.get_mut().split_to(5).freeze();
        rb.reserve(100);
        assert_eq!(&rb.get_mut()[..], b"678");
        assert!(rb.get_mut().capacity() >= 103);
        assert_eq!(&whole[..], b"12345");
    }

    #[test]
    fn a_huge_buffer_is_not_kept_as_spare() {
        let mut rb = ReadBuffer::with_capacity(2 * MAX_SPARE);
        rb.get_mut().extend_from_slice(&vec![1u8; 2 * MAX_SPARE]);
        let _payload = rb.get_mut().split().freeze();
        rb.reserve(16);
        assert!(rb.spares.is_empty());
        rb.get_mut().extend_from_slice(&[2u8; 16]);
        let _small = rb.get_mut().split().freeze();
        rb.reserve(16);
        assert_eq!(rb.spares.len(), 1);
        assert_eq!(rb.spare_bytes, 16);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever the reads, frames and payload lifetimes, the bytes not
        /// yet decoded survive every `reserve`, the room asked for is there,
        /// and payloads cut earlier keep their contents.
        #[test]
        fn reserve_keeps_undecoded_bytes_and_payloads(
            steps in proptest::collection::vec((1usize..6_000, 0usize..6_000, 0usize..8), 1..60)
        ) {
            let mut rb = ReadBuffer::with_capacity(512);
            let mut expected: Vec<u8> = Vec::new();
            let mut held: Vec<(bytes::Bytes, Vec<u8>)> = Vec::new();
            let mut next = 0u8;
            for (room, frame, keep) in steps {
                rb.reserve(room);
                let buf = rb.get_mut();
                proptest::prop_assert!(buf.capacity() - buf.len() >= room);
                proptest::prop_assert_eq!(&buf[..], &expected[..]);
                let fresh: Vec<u8> = (0..room).map(|_| { next = next.wrapping_add(1); next }).collect();
                buf.extend_from_slice(&fresh);
                expected.extend_from_slice(&fresh);
                let cut = frame.min(buf.len());
                let payload = buf.split_to(cut).freeze();
                let copy: Vec<u8> = expected.drain(..cut).collect();
                held.push((payload, copy));
                // Drop some payloads, oldest first, so spares come free.
                while held.len() > keep {
                    held.remove(0);
                }
                for (payload, copy) in &held {
                    proptest::prop_assert_eq!(&payload[..], &copy[..]);
                }
            }
            proptest::prop_assert!(rb.spares.len() <= MAX_SPARES);
            proptest::prop_assert!(rb.spare_bytes <= MAX_SPARE_BYTES);
        }
    }
}
