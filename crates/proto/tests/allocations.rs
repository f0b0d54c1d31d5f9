//! Decoding allocates nothing per message: counted by a global allocator
//! that wraps the system one.
//!
//! The count is per thread, so tests running in parallel do not disturb
//! each other. Every message kind is covered, through each decode path.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
};

use bytes::{Bytes, BytesMut};
use gotalk_proto::{
    DecodeLimits, Decoded, GotalkCodec, Message, ProtocolErrorCode, RequestId, Text, decode,
    decode_bytes,
};
use tokio_util::codec::Decoder;

thread_local! {
    /// Allocations (including reallocations) made by this thread.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: a thread being torn down may still allocate.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

/// Allocations `f` makes on this thread.
fn allocations_in<T>(f: impl FnOnce() -> T) -> (u64, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = f();
    (ALLOCATIONS.with(Cell::get) - before, out)
}

struct Counting;

// SAFETY: every method hands its arguments unchanged to `System` and returns
// what `System` returns, so each upholds exactly the contract `System` does
// (the caller's obligations pass through untouched). The only addition is
// `count_one`, which touches a const-initialised thread-local `Cell<u64>`:
// it has no destructor and no lazy initialisation, so it neither allocates
// (no recursion into this allocator) nor unwinds.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: the caller's guarantees for `layout`, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: `ptr` came from this allocator, i.e. from `System`, with
        // `layout`: the caller's guarantees, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// One frame of every message kind, names and payloads non-empty where the
/// kind has them (and empty payloads, which take their own branches), short
/// names and long ones.
fn every_kind() -> Vec<Message> {
    let id = RequestId::new(*b"0001");
    let payload = || Bytes::from_static(b"{\"message\":\"Hello gotalk world\"}");
    vec![
        Message::SingleRequest {
            id,
            op: Text::from_static("echo"),
            payload: payload(),
        },
        Message::StreamRequest {
            id,
            op: Text::from_static("upload"),
            payload: payload(),
        },
        Message::StreamRequest {
            id,
            op: Text::from_static("named-but-empty"),
            payload: Bytes::new(),
        },
        // Names over 23 bytes are views of the buffer, not copies.
        Message::SingleRequest {
            id,
            op: Text::from_static("a.name.too.long.to.be.kept.inline"),
            payload: payload(),
        },
        Message::Notification {
            name: Text::from_static("a.name.too.long.to.be.kept.inline"),
            payload: Bytes::new(),
        },
        Message::StreamRequestPart {
            id,
            payload: payload(),
        },
        Message::SingleResult {
            id,
            payload: payload(),
        },
        Message::StreamResult {
            id,
            payload: Bytes::new(),
        },
        Message::ErrorResult {
            id,
            payload: payload(),
        },
        Message::RetryResult {
            id,
            wait_ms: 5000,
            payload: payload(),
        },
        Message::Notification {
            name: Text::from_static("grüße"),
            payload: payload(),
        },
        Message::Heartbeat {
            load: 2,
            time: 0x54d7_de9a,
        },
        Message::ProtocolError {
            code: ProtocolErrorCode::InvalidMessage,
        },
    ]
}

/// `rounds` copies of every kind back to back, and how many frames that is.
fn wire(rounds: usize) -> (Vec<u8>, usize) {
    let kinds = every_kind();
    let one: Vec<u8> = kinds.iter().flat_map(|m| m.to_vec().unwrap()).collect();
    (one.repeat(rounds), kinds.len() * rounds)
}

/// A read buffer as the peer has one: split off a larger chunk, so it is
/// already shared and splitting it needs no allocation of its own.
fn shared_read_buffer(bytes: &[u8]) -> (BytesMut, BytesMut) {
    let mut chunk = BytesMut::with_capacity(bytes.len() + 64);
    chunk.extend_from_slice(bytes);
    let buf = chunk.split();
    (chunk, buf)
}

const ROUNDS: usize = 100;

#[test]
fn the_counter_counts() {
    let (n, v) = allocations_in(|| Vec::<u8>::with_capacity(16));
    assert_eq!(n, 1);
    drop(v);
    let (n, b) = allocations_in(|| Bytes::copy_from_slice(b"echo"));
    assert_eq!(n, 1, "a copied name would be seen");
    drop(b);
}

#[test]
fn slice_decode_allocates_nothing() {
    let (wire, frames) = wire(ROUNDS);
    let limits = DecodeLimits::default();
    let (n, decoded) = allocations_in(|| {
        let mut rest = &wire[..];
        let mut decoded = 0;
        while let Ok(Decoded::Complete(msg, used)) = decode(rest, &limits) {
            std::hint::black_box(msg);
            rest = &rest[used..];
            decoded += 1;
        }
        decoded
    });
    assert_eq!(decoded, frames);
    assert_eq!(n, 0);
}

#[test]
fn decode_bytes_allocates_nothing_from_a_shared_buffer() {
    let (wire, frames) = wire(ROUNDS);
    let (_chunk, mut buf) = shared_read_buffer(&wire);
    let limits = DecodeLimits::default();
    let (n, kept) = allocations_in(|| {
        let mut kept = Vec::with_capacity(frames);
        while let Ok(Decoded::Complete(msg, _)) = decode_bytes(&mut buf, &limits) {
            kept.push(msg);
        }
        kept
    });
    assert_eq!(kept.len(), frames);
    assert!(buf.is_empty());
    // The one allocation is `kept` itself.
    assert_eq!(n, 1, "decoding {frames} frames allocated");
    // And the messages are the ones encoded, zero-copy.
    assert_eq!(&kept[..every_kind().len()], &every_kind()[..]);
    let (n, ()) = allocations_in(|| drop(kept));
    assert_eq!(n, 0);
}

#[test]
fn decode_bytes_from_an_unshared_buffer_allocates_once_per_buffer() {
    // A `BytesMut` that owns its vector becomes shared on the first split:
    // one allocation for the buffer, none per message.
    let (wire, frames) = wire(ROUNDS);
    let mut buf = BytesMut::from(&wire[..]);
    let limits = DecodeLimits::default();
    let (n, decoded) = allocations_in(|| {
        let mut decoded = 0;
        while let Ok(Decoded::Complete(msg, _)) = decode_bytes(&mut buf, &limits) {
            std::hint::black_box(msg);
            decoded += 1;
        }
        decoded
    });
    assert_eq!(decoded, frames);
    assert!(n <= 1, "{n} allocations for {frames} frames");
}

#[test]
fn codec_allocates_nothing_from_a_shared_buffer() {
    let (wire, frames) = wire(ROUNDS);
    let (_chunk, mut buf) = shared_read_buffer(&wire);
    let mut codec = GotalkCodec::default();
    let (n, ()) = allocations_in(|| {
        for _ in 0..frames {
            let msg = codec.decode(&mut buf).unwrap().expect("a whole frame");
            std::hint::black_box(msg);
        }
    });
    assert_eq!(n, 0, "decoding {frames} frames allocated");
    // Once the buffer is drained, the codec reserves room for the next
    // frame's first byte (`FramedRead` reads into it): once per buffer.
    let (n, next) = allocations_in(|| codec.decode(&mut buf).unwrap());
    assert!(next.is_none());
    assert!(n <= 1, "{n} allocations to reserve room for the next frame");
}

#[test]
fn a_large_payload_is_not_copied() {
    let big = Message::SingleResult {
        id: RequestId::from_u32(7),
        payload: Bytes::from(vec![b'x'; 1 << 20]),
    };
    let (_chunk, mut buf) = shared_read_buffer(&big.to_vec().unwrap());
    let (n, msg) = allocations_in(|| decode_bytes(&mut buf, &DecodeLimits::default()));
    assert_eq!(n, 0);
    assert!(matches!(msg, Ok(Decoded::Complete(m, _)) if m == big));
}
