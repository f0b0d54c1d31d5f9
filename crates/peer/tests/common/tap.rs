//! A transport wrapper that records the bytes crossing it, and the size of
//! each write.

use std::{
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
};

use gotalk_peer::BoxedIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Records every byte read and written through it.
pub(crate) struct Tap {
    inner: BoxedIo,
    read: Arc<Mutex<Vec<u8>>>,
    written: Arc<Mutex<Vec<u8>>>,
    /// Bytes of each write that wrote something.
    writes: Arc<Mutex<Vec<usize>>>,
}

#[derive(Clone, Default)]
pub(crate) struct Taps {
    read: Arc<Mutex<Vec<u8>>>,
    written: Arc<Mutex<Vec<u8>>>,
    /// Bytes of each write that wrote something.
    writes: Arc<Mutex<Vec<usize>>>,
}

impl Taps {
    pub(crate) fn wrap(&self, inner: BoxedIo) -> BoxedIo {
        Box::new(Tap {
            inner,
            read: self.read.clone(),
            written: self.written.clone(),
            writes: self.writes.clone(),
        })
    }

    /// Writes that wrote something.
    pub(crate) fn writes(&self) -> usize {
        self.writes.lock().unwrap().len()
    }

    /// How many bytes each write that wrote something wrote.
    pub(crate) fn write_sizes(&self) -> Vec<usize> {
        self.writes.lock().unwrap().clone()
    }

    pub(crate) fn read(&self) -> Vec<u8> {
        self.read.lock().unwrap().clone()
    }

    pub(crate) fn written(&self) -> Vec<u8> {
        self.written.lock().unwrap().clone()
    }
}

impl AsyncRead for Tap {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let got = buf.filled()[before..].to_vec();
            self.read.lock().unwrap().extend_from_slice(&got);
        }
        polled
    }
}

impl AsyncWrite for Tap {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.written.lock().unwrap().extend_from_slice(&buf[..n]);
            if n > 0 {
                self.writes.lock().unwrap().push(n);
            }
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            let mut written = self.written.lock().unwrap();
            let mut left = n;
            for buf in bufs {
                let take = left.min(buf.len());
                written.extend_from_slice(&buf[..take]);
                left -= take;
            }
            if n > 0 {
                self.writes.lock().unwrap().push(n);
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
