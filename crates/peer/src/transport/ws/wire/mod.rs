//! The WebSocket wire format (RFC 6455) that [`WsStream`](super::WsStream)
//! reads and writes itself: frame headers and masking, without I/O.

pub(crate) mod frame;
pub(crate) mod mask;
