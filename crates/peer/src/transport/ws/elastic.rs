//! A byte stream that holds no read buffer while idle, yet reads in large
//! chunks while busy.
//!
//! hyper reads a connection's HTTP requests through small reads; under
//! it, [`ElasticRead`] turns a small read into one large read into a
//! buffer shared by the thread's connections: what the caller did not take
//! is kept in an allocation of exactly its size, handed out by the next
//! reads and freed once taken. Idle connections hold nothing; a busy one
//! holds at most one large read's leftover. (It was written for the
//! WebSocket library's 1 KiB read chunk, which made a long message one
//! `read` system call per kilobyte; after the upgrade
//! [`WsStream`](super::WsStream) reads in chunks of 8 KiB or more, which
//! go straight through.)

use std::{
    cell::RefCell,
    io,
    pin::Pin,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The shared buffer's size: how much one system call may bring.
const SCRATCH: usize = 64 * 1024;

/// A caller asking for at least this much reads directly: the detour
/// through the shared buffer would only add a copy.
const DIRECT: usize = 8 * 1024;

thread_local! {
    /// One per thread, filled and emptied within one `poll_read`.
    static SCRATCH_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH].into_boxed_slice());
}

/// A stream whose small reads are served from one large read (see the
/// module documentation). Writes pass through untouched, vectored ones
/// included.
#[derive(Debug)]
pub(crate) struct ElasticRead<S> {
    inner: S,
    /// Read but not yet taken, and how much of it was taken.
    spill: Option<(Box<[u8]>, usize)>,
}

impl<S> ElasticRead<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner, spill: None }
    }

    /// Bytes read from the stream and not yet taken (for tests).
    #[cfg(test)]
    fn spilled(&self) -> usize {
        self.spill.as_ref().map_or(0, |(b, at)| b.len() - at)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ElasticRead<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some((bytes, at)) = &mut this.spill {
            let n = buf.remaining().min(bytes.len() - *at);
            buf.put_slice(&bytes[*at..*at + n]);
            *at += n;
            if *at == bytes.len() {
                this.spill = None;
            }
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= DIRECT {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        SCRATCH_BUF.with(|scratch| {
            // Taken only here, and the inner stream cannot reach it: a
            // failed borrow would mean a reentrant read, served directly.
            let Ok(mut scratch) = scratch.try_borrow_mut() else {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            };
            let mut big = ReadBuf::new(&mut scratch[..]);
            match Pin::new(&mut this.inner).poll_read(cx, &mut big) {
                Poll::Ready(Ok(())) => {
                    let got = big.filled();
                    let n = buf.remaining().min(got.len());
                    buf.put_slice(&got[..n]);
                    if n < got.len() {
                        this.spill = Some((got[n..].into(), 0));
                    }
                    Poll::Ready(Ok(()))
                }
                other => other,
            }
        })
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ElasticRead<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// An [`axum::serve::Listener`] whose connections are [`ElasticRead`].
pub(crate) struct ElasticListener<L>(pub(crate) L);

impl<L: axum::serve::Listener> axum::serve::Listener for ElasticListener<L> {
    type Io = ElasticRead<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (ElasticRead::new(io), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[tokio::test]
    async fn small_reads_come_from_one_large_read_and_the_rest_is_freed() {
        let (mut far, near) = tokio::io::duplex(256 * 1024);
        let mut near = ElasticRead::new(near);
        let message: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
        far.write_all(&message).await.unwrap();
        let mut got = Vec::new();
        let mut chunk = [0u8; 1024];
        // The first small read takes everything the stream had.
        let n = near.read(&mut chunk).await.unwrap();
        assert_eq!(n, 1024);
        got.extend_from_slice(&chunk[..n]);
        assert_eq!(near.spilled(), message.len() - 1024);
        while got.len() < message.len() {
            let n = near.read(&mut chunk).await.unwrap();
            got.extend_from_slice(&chunk[..n]);
        }
        assert_eq!(got, message, "bytes in order, none lost or doubled");
        assert_eq!(near.spilled(), 0, "nothing held once all is taken");
        assert!(near.spill.is_none());

        // A large read goes straight through.
        far.write_all(&message[..10_000]).await.unwrap();
        let mut large = vec![0u8; DIRECT];
        let n = near.read(&mut large).await.unwrap();
        assert_eq!(&large[..n], &message[..n]);
        assert_eq!(near.spilled(), 0);

        // End of stream reads as such.
        let mut rest = Vec::new();
        drop(far);
        near.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, &message[n..10_000]);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (far, near) = tokio::io::duplex(1024);
        let mut near = ElasticRead::new(near);
        let mut far = far;
        near.write_all(b"hello").await.unwrap();
        let mut got = [0u8; 5];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
    }
}
