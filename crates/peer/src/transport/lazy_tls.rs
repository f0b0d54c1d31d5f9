//! A server TLS stream whose handshake runs on first use, for `wss://`.

use std::{
    future::Future,
    io,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};
use tokio_rustls::TlsAcceptor;

use super::tls::{ServerStream, accept};

type Handshake = Pin<Box<dyn Future<Output = io::Result<ServerStream>> + Send>>;

/// A server TLS stream whose handshake runs on first use, in the task that
/// uses it: whoever accepts the TCP connection (the HTTP server of a
/// `wss://` endpoint) never waits for a slow or silent client.
pub(crate) struct LazyTlsStream {
    state: LazyState,
}

enum LazyState {
    Handshaking(Handshake),
    Ready(Box<ServerStream>),
    Failed,
}

impl LazyTlsStream {
    /// `tcp`, to be TLS-accepted with `tls` within `limit`.
    pub(crate) fn new(tcp: TcpStream, tls: &TlsAcceptor, limit: Duration) -> Self {
        Self {
            state: LazyState::Handshaking(Box::pin(accept(tls.clone(), tcp, limit))),
        }
    }

    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut ServerStream>> {
        if let LazyState::Handshaking(handshake) = &mut self.state {
            match ready!(handshake.as_mut().poll(cx)) {
                Ok(stream) => self.state = LazyState::Ready(Box::new(stream)),
                Err(e) => {
                    tracing::debug!(error = %e, "TLS handshake failed");
                    self.state = LazyState::Failed;
                    return Poll::Ready(Err(e));
                }
            }
        }
        match &mut self.state {
            LazyState::Ready(stream) => Poll::Ready(Ok(stream)),
            _ => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for LazyTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LazyTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let stream = ready!(self.get_mut().poll_stream(cx))?;
        Pin::new(stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().state {
            // Nothing was said yet: dropping the TCP stream closes it.
            LazyState::Handshaking(_) | LazyState::Failed => Poll::Ready(Ok(())),
            LazyState::Ready(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
