//! The WebSocket message types [`WsIo`](super::WsIo) runs over: axum's and
//! tokio-tungstenite's, mapped onto the few things the adapter cares about.

use std::io;

use bytes::Bytes;

use super::WsError;

mod sealed {
    // Sealed-trait pattern: these items are public but unnameable outside
    // this crate, so only this module can implement `WsMessage`.
    #![allow(unreachable_pub)]

    use bytes::Bytes;
    use std::io;

    /// What a WebSocket message means to the adapter.
    #[derive(Debug)]
    pub enum Incoming {
        /// A binary or text message.
        Data(Bytes),
        /// Ping, pong or a raw frame: answered by the WebSocket library.
        Control,
        /// A close frame with its code and reason, if any.
        Close(Option<(u16, String)>),
    }

    /// How a transport error surfaces to the driver.
    #[derive(Debug)]
    pub enum TransportError {
        /// The connection is closed: report end of stream.
        Closed,
        /// Message or frame too large.
        TooLarge { size: usize, limit: usize },
        /// WebSocket protocol violation.
        Protocol(String),
        /// An I/O error of the underlying connection.
        Io(io::Error),
    }

    /// The mapping between one library's message type and the adapter.
    pub trait Sealed: Sized {
        /// The error type of the stream and sink that carry these messages.
        type Error;
        fn into_incoming(self) -> Incoming;
        fn binary(data: Bytes) -> Self;
        fn close(code: u16, reason: &'static str) -> Self;
        fn classify(err: Self::Error) -> TransportError;
    }
}

pub(crate) use sealed::{Incoming, Sealed, TransportError};

/// A WebSocket message type [`WsIo`](super::WsIo) can run over: the one of
/// tokio-tungstenite (`tungstenite::Message`) and the one of axum's
/// `WebSocket` (`axum::extract::ws::Message`). Sealed.
pub trait WsMessage: Sealed + Send + 'static {}

impl TransportError {
    /// The error a read or write reports for this.
    pub(crate) fn into_io(self) -> io::Error {
        match self {
            Self::Closed => io::Error::from(io::ErrorKind::BrokenPipe),
            Self::Io(e) => e,
            Self::TooLarge { size, limit } => WsError::MessageTooLarge { size, limit }.into_io(),
            Self::Protocol(msg) => WsError::Protocol(msg).into_io(),
        }
    }
}

mod tungstenite_impl {
    use super::*;
    use tokio_tungstenite::tungstenite::{
        self, Message,
        error::CapacityError,
        protocol::{CloseFrame, frame::coding::CloseCode},
    };

    impl WsMessage for Message {}

    impl Sealed for Message {
        type Error = tungstenite::Error;

        fn into_incoming(self) -> Incoming {
            match self {
                Message::Binary(b) => Incoming::Data(b),
                Message::Text(t) => Incoming::Data(t.into()),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
                Message::Close(frame) => Incoming::Close(
                    frame.map(|f| (u16::from(f.code), f.reason.as_str().to_owned())),
                ),
            }
        }

        fn binary(data: Bytes) -> Self {
            Message::Binary(data)
        }

        fn close(code: u16, reason: &'static str) -> Self {
            Message::Close(Some(CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            }))
        }

        fn classify(err: Self::Error) -> TransportError {
            classify_tungstenite(err)
        }
    }

    pub(super) fn classify_tungstenite(err: tungstenite::Error) -> TransportError {
        use tungstenite::Error as E;
        match err {
            E::ConnectionClosed | E::AlreadyClosed => TransportError::Closed,
            E::Io(e) => TransportError::Io(e),
            E::Capacity(CapacityError::MessageTooLong { size, max_size }) => {
                TransportError::TooLarge {
                    size,
                    limit: max_size,
                }
            }
            E::Capacity(other) => TransportError::Protocol(other.to_string()),
            other => TransportError::Protocol(other.to_string()),
        }
    }
}

mod axum_impl {
    use super::*;
    use axum::extract::ws::{CloseFrame, Message};
    use tokio_tungstenite::tungstenite;

    impl WsMessage for Message {}

    impl Sealed for Message {
        type Error = axum::Error;

        fn into_incoming(self) -> Incoming {
            match self {
                Message::Binary(b) => Incoming::Data(b),
                Message::Text(t) => Incoming::Data(t.into()),
                Message::Ping(_) | Message::Pong(_) => Incoming::Control,
                Message::Close(frame) => {
                    Incoming::Close(frame.map(|f| (f.code, f.reason.as_str().to_owned())))
                }
            }
        }

        fn binary(data: Bytes) -> Self {
            Message::Binary(data)
        }

        fn close(code: u16, reason: &'static str) -> Self {
            Message::Close(Some(CloseFrame {
                code,
                reason: reason.into(),
            }))
        }

        fn classify(err: Self::Error) -> TransportError {
            // axum wraps the tungstenite error of the same tokio-tungstenite.
            match err.into_inner().downcast::<tungstenite::Error>() {
                Ok(e) => super::tungstenite_impl::classify_tungstenite(*e),
                Err(other) => TransportError::Protocol(other.to_string()),
            }
        }
    }
}
