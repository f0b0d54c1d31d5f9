//! The driver's read buffer: memory held only while it holds bytes, grown
//! only as bytes arrive, and a spare that saves reallocating it.
//!
//! An idle connection holds no read buffer at all. When it has no partial
//! frame, it reads into the thread's shared scratch chunk ([`Scratch`]):
//! the bytes read are split off it zero-copy (decoded payloads are slices of
//! the chunk), and the chunk's rest serves the next read of any connection
//! on the thread. Only a partial frame gets a buffer of the connection's
//! own, allocated fallibly, sized by what has arrived: a first chunk of
//! [`FIRST_ROOM`], then growth proportional to the bytes received (see
//! `read_plan` in the driver), so a peer must send about N bytes to make us
//! hold N, whatever size its header declares.
//!
//! Decoded payloads are slices of the read buffer, so a buffer cannot take
//! new bytes over old ones until every payload cut from it is dropped. With
//! large frames that is usually not yet the case when the next read needs
//! room: the last payload is still with its handler, or queued for writing.
//! Allocating a fresh buffer each time costs an allocation and the page
//! faults of new memory per frame. Instead replaced buffers are kept as
//! spares while frames keep coming, and one is taken back as soon as its
//! payloads are gone, so a run of large frames cycles through a few
//! buffers: as many as there are payloads in use at once (for example 16
//! large requests in flight). [`ReadBuffer::release`] lets them all go once
//! the connection is idle.

use std::{cell::Cell, collections::TryReserveError};

use bytes::{Bytes, BytesMut};

/// The first room given to a partial frame of the connection's own.
pub(crate) const FIRST_ROOM: usize = 4 * 1024;
/// Size of a thread's shared scratch chunk.
const SCRATCH_CHUNK: usize = 64 * 1024;
/// A scratch chunk with less room left than this is replaced.
const SCRATCH_MIN_ROOM: usize = 4 * 1024;
/// Spares at most this large are kept; a larger one (from an exceptional
/// frame) is let go, so an idle connection does not hold it.
const MAX_SPARE: usize = 1024 * 1024;
/// Most spares kept, and most bytes in them all.
const MAX_SPARES: usize = 32;
const MAX_SPARE_BYTES: usize = 2 * 1024 * 1024;

thread_local! {
    /// The thread's scratch chunk: empty, with room; what was read into it
    /// was split off by the connection that read it.
    static SCRATCH: Cell<Option<BytesMut>> = const { Cell::new(None) };
}

/// Allocates a buffer of exactly `capacity` bytes, or fails without
/// aborting the process.
pub(crate) fn try_with_capacity(capacity: usize) -> Result<BytesMut, TryReserveError> {
    let mut v = Vec::new();
    v.try_reserve_exact(capacity)?;
    // `BytesMut` takes a `Vec` only through `Bytes`: neither copies, and the
    // capacity is kept.
    Ok(BytesMut::from(Bytes::from(v)))
}

/// A read into the thread's scratch chunk, lent for one read (see the
/// module docs).
pub(crate) struct Scratch(BytesMut);

impl Scratch {
    /// The chunk's free room, at least [`SCRATCH_MIN_ROOM`] bytes.
    pub(crate) fn room(&mut self) -> &mut BytesMut {
        &mut self.0
    }
}

/// A read buffer with spares.
#[derive(Debug, Default)]
pub(crate) struct ReadBuffer {
    buf: BytesMut,
    /// Size of the allocation `buf` owns; 0 while it is empty or a slice of
    /// a scratch chunk.
    buf_alloc: usize,
    /// Earlier buffers, emptied, whose payloads may still be in use, with
    /// the size of their allocations.
    spares: Vec<(BytesMut, usize)>,
    spare_bytes: usize,
}

impl ReadBuffer {
    /// An empty buffer: no memory until bytes arrive.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// The bytes read and not yet decoded.
    pub(crate) fn get_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Whether the next read may go to the thread's scratch chunk: no
    /// partial frame is held.
    pub(crate) fn reads_to_scratch(&self) -> bool {
        self.buf.is_empty()
    }

    /// Lends the thread's scratch chunk for one read; give it back with
    /// [`end_scratch`](Self::end_scratch).
    pub(crate) fn begin_scratch(&mut self) -> Result<Scratch, TryReserveError> {
        debug_assert!(self.buf.is_empty());
        let mut chunk = SCRATCH.take().unwrap_or_default();
        if chunk.capacity() - chunk.len() < SCRATCH_MIN_ROOM {
            // The old chunk's memory goes with the last payload cut from it.
            chunk = try_with_capacity(SCRATCH_CHUNK)?;
        }
        Ok(Scratch(chunk))
    }

    /// Takes what the read put in `scratch` as this buffer's bytes (a slice
    /// of the chunk, not copied) and gives the chunk back to the thread.
    pub(crate) fn end_scratch(&mut self, scratch: Scratch) {
        let mut chunk = scratch.0;
        if !chunk.is_empty() {
            self.buf = chunk.split();
            self.buf_alloc = 0;
        }
        SCRATCH.set(Some(chunk));
    }

    /// Makes room for at least `room` more bytes: in place if the buffer's
    /// own allocation allows, else in a spare whose payloads are gone, else
    /// in a new buffer, allocated fallibly; the current one becomes a spare.
    /// Undecoded bytes move along.
    pub(crate) fn reserve(&mut self, room: usize) -> Result<(), TryReserveError> {
        if self.buf_alloc > 0 && self.buf.try_reclaim(room) {
            return Ok(());
        }
        let needed = room
            .checked_add(self.buf.len())
            .ok_or_else(|| Vec::<u8>::new().try_reserve(usize::MAX).unwrap_err())?;
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
            None => (try_with_capacity(needed)?, needed),
        };
        let mut old = std::mem::replace(&mut self.buf, next);
        self.buf.extend_from_slice(&old);
        old.clear();
        let old_alloc = std::mem::replace(&mut self.buf_alloc, next_alloc);
        // A buffer replaced because it was too small (a frame growing as its
        // bytes arrive) is no use as a spare: only one replaced because its
        // payloads are still in use is kept.
        if old_alloc > 0
            && old_alloc >= needed
            && old_alloc <= MAX_SPARE
            && self.spares.len() < MAX_SPARES
            && self.spare_bytes + old_alloc <= MAX_SPARE_BYTES
        {
            self.spares.push((old, old_alloc));
            self.spare_bytes += old_alloc;
        }
        // Otherwise `old` is dropped: its memory goes with the last payload
        // cut from it (a scratch slice's, with the chunk's).
        Ok(())
    }

    /// Lets go of every buffer if no bytes are held: the connection is idle.
    pub(crate) fn release(&mut self) {
        if self.buf.is_empty() && (self.buf_alloc > 0 || !self.spares.is_empty()) {
            *self = Self::default();
        }
    }

    /// Bytes of memory this buffer holds: its own allocation and spares, or
    /// the scratch bytes it still holds.
    pub(crate) fn held(&self) -> usize {
        self.buf_alloc.max(self.buf.len()) + self.spare_bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_capacity(capacity: usize) -> ReadBuffer {
        let mut rb = ReadBuffer::new();
        rb.reserve(capacity).unwrap();
        rb
    }

    #[test]
    fn a_new_buffer_holds_nothing() {
        let rb = ReadBuffer::new();
        assert_eq!(rb.held(), 0);
        assert_eq!(rb.buf.capacity(), 0);
    }

    #[test]
    fn an_impossible_reservation_fails_instead_of_aborting() {
        let mut rb = with_capacity(8);
        rb.get_mut().extend_from_slice(b"abc");
        assert!(rb.reserve(usize::MAX / 2).is_err());
        assert!(rb.reserve(usize::MAX).is_err());
        assert_eq!(&rb.get_mut()[..], b"abc", "the bytes held survive");
    }

    #[test]
    fn scratch_reads_share_one_chunk_and_idle_releases_all() {
        let mut a = ReadBuffer::new();
        let mut b = ReadBuffer::new();
        assert!(a.reads_to_scratch());
        let mut s = a.begin_scratch().unwrap();
        s.room().extend_from_slice(b"hello");
        a.end_scratch(s);
        let mut s = b.begin_scratch().unwrap();
        s.room().extend_from_slice(b"world");
        b.end_scratch(s);
        assert_eq!(&a.get_mut()[..], b"hello");
        assert_eq!(&b.get_mut()[..], b"world");
        assert_eq!(
            a.get_mut().as_ptr() as usize + 5,
            b.get_mut().as_ptr() as usize,
            "both are slices of the thread's chunk"
        );
        assert_eq!(a.held(), 5);
        // A read that brought nothing takes nothing from the chunk.
        let mut c = ReadBuffer::new();
        let s = c.begin_scratch().unwrap();
        c.end_scratch(s);
        assert_eq!(c.get_mut().capacity(), 0);
        // A partial frame moves to a buffer of its own.
        a.reserve(10).unwrap();
        assert_eq!(&a.get_mut()[..], b"hello");
        assert_eq!(a.held(), 15);
        assert!(a.spares.is_empty(), "a scratch slice is not a spare");
        let _payload = a.get_mut().split().freeze();
        a.release();
        assert_eq!(a.held(), 0);
        assert_eq!(a.get_mut().capacity(), 0);
    }

    #[test]
    fn a_run_of_large_frames_cycles_through_a_few_buffers() {
        let frame = 64 * 1024;
        let mut rb = with_capacity(frame);
        let mut held = Vec::new();
        let mut allocations = std::collections::HashSet::new();
        for _ in 0..100 {
            rb.reserve(frame).unwrap();
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
        let mut rb = with_capacity(8);
        rb.get_mut().extend_from_slice(b"12345678");
        let whole = rb.get_mut().split_to(5).freeze();
        rb.reserve(100).unwrap();
        assert_eq!(&rb.get_mut()[..], b"678");
        assert!(rb.get_mut().capacity() >= 103);
        assert_eq!(&whole[..], b"12345");
    }

    #[test]
    fn a_huge_buffer_is_not_kept_as_spare() {
        let mut rb = with_capacity(2 * MAX_SPARE);
        rb.get_mut().extend_from_slice(&vec![1u8; 2 * MAX_SPARE]);
        let _payload = rb.get_mut().split().freeze();
        rb.reserve(16).unwrap();
        assert!(rb.spares.is_empty());
        rb.get_mut().extend_from_slice(&[2u8; 16]);
        let _small = rb.get_mut().split().freeze();
        rb.reserve(16).unwrap();
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
            let mut rb = with_capacity(512);
            let mut expected: Vec<u8> = Vec::new();
            let mut held: Vec<(bytes::Bytes, Vec<u8>)> = Vec::new();
            let mut next = 0u8;
            for (room, frame, keep) in steps {
                rb.reserve(room).unwrap();
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
