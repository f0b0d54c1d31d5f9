//! The one task per connection that does I/O.
//!
//! It reads and decodes frames zero-copy and hands each to
//! [`inbound::handle`] (and, when that has to wait, [`inbound::finish`]); it
//! writes whatever the handles and handler tasks queued, coalesced and
//! vectored; it sends heartbeats and watches for shutdown. Whichever of these ends first says
//! why the connection closes; then everything waiting is told, a
//! ProtocolError is sent if we owe one, the queue is flushed and the byte
//! stream shut down.

use std::{collections::VecDeque, io, io::IoSlice, pin::pin, sync::Arc, time::Duration};

use bytes::{Buf, BufMut, Bytes};
use gotalk_proto::{
    Decoded, Message, ProtocolErrorCode, VERSION_BYTES, check_version, decode_bytes, decode_version,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    time::{Instant, sleep_until, timeout},
};

use crate::{
    CloseReason, Error, HandshakeError,
    inbound::{self, Rest},
    read_buffer::ReadBuffer,
    shared::{Shared, Shutdown},
};

/// Spare room kept in the read buffer so each read can take a good chunk.
const READ_CHUNK: usize = 64 * 1024;
/// Frames up to this long are read into a buffer of their own (see
/// [`read_plan`]); a longer frame may be copied once, when its header arrives.
const MAX_ANTICIPATED: usize = 4 * READ_CHUNK;
/// Most buffers handed to one vectored write.
const MAX_IOVECS: usize = 64;
/// How long closing may spend flushing what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(2);

/// Exchanges versions: writes ours, reads the peer's. On a version we do not
/// speak, tells the peer with ProtocolError 1 and fails.
pub(crate) async fn handshake<T>(io: &mut T, limit: Duration) -> Result<(), Error>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let exchange = async {
        io.write_all(&VERSION_BYTES).await?;
        io.flush().await?;
        let mut version = [0u8; 2];
        io.read_exact(&mut version).await?;
        Ok::<_, io::Error>(version)
    };
    let version = timeout(limit, exchange)
        .await
        .map_err(|_| Error::Handshake(HandshakeError::Timeout(limit)))?
        .map_err(|e| Error::Handshake(HandshakeError::Io(e)))?;
    let (code, error) = match decode_version(&version) {
        Ok(Decoded::Complete(v, _)) if check_version(v).is_ok() => return Ok(()),
        Ok(Decoded::Complete(v, _)) => (
            ProtocolErrorCode::Unsupported,
            Error::UnsupportedVersion { version: v },
        ),
        Ok(Decoded::Incomplete(_)) => unreachable!("two bytes are a whole version"),
        Err(e) => (
            ProtocolErrorCode::InvalidMessage,
            Error::Handshake(HandshakeError::Malformed(e)),
        ),
    };
    let refusal = Message::<Bytes>::ProtocolError { code }.to_vec()?;
    let _ = timeout(CLOSE_FLUSH, async {
        io.write_all(&refusal).await?;
        io.shutdown().await
    })
    .await;
    Err(error)
}

/// Runs the connection until it closes.
pub(crate) async fn run<T>(io: T, shared: Arc<Shared>)
where
    T: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut reader, mut writer) = tokio::io::split(io);
    let reason = {
        let mut write = pin!(write_loop(&mut writer, &shared));
        let mut writer_failed = false;
        // Biased, reading first: the replies of handlers run inline are
        // queued without waking the writer (see `WriteQueue::push_local`),
        // which is polled right after the read loop.
        let reason = tokio::select! {
            biased;
            reason = read_loop(&mut reader, &shared) => reason,
            result = &mut write => {
                writer_failed = true;
                result.err().unwrap_or(CloseReason::Local)
            }
            reason = heartbeat_loop(&shared) => reason,
            reason = shutdown_requested(&shared) => reason,
        };
        tracing::debug!(%reason, "connection closing");
        let code = match &reason {
            CloseReason::ProtocolViolation { code, .. } => Some(*code),
            CloseReason::ReadTimeout => Some(ProtocolErrorCode::Timeout),
            _ => None,
        };
        if let Some(code) = code {
            let _ = shared.queue.push_now(&Message::ProtocolError { code });
        }
        shared.close(reason.clone());
        if !writer_failed {
            let _ = timeout(CLOSE_FLUSH, &mut write).await;
        }
        reason
    };
    let _ = timeout(CLOSE_FLUSH, writer.shutdown()).await;
    drop((reader, writer));
    tracing::trace!(%reason, "connection closed");
    shared.mark_closed();
}

async fn read_loop<R: AsyncRead + Unpin>(reader: &mut R, shared: &Arc<Shared>) -> CloseReason {
    let limits = shared.config.decode_limits();
    let read_timeout = shared.config.read_timeout;
    let mut deadline = read_timeout.map(|t| Instant::now() + t);
    let mut read_buffer = ReadBuffer::with_capacity(READ_CHUNK);
    // Length of the last whole frame, to size the read buffer.
    let mut last_frame = 0;
    loop {
        let read_limit = loop {
            match decode_bytes(read_buffer.get_mut(), &limits) {
                Ok(Decoded::Complete(msg, len)) => {
                    last_frame = len;
                    if let Some(t) = read_timeout {
                        deadline = Some(Instant::now() + t);
                    }
                    match inbound::handle(shared, msg) {
                        Ok(Rest::Done) => {}
                        Ok(rest) => {
                            if let Err(reason) = inbound::finish(shared, rest).await {
                                return reason;
                            }
                        }
                        Err(reason) => return reason,
                    }
                }
                Ok(Decoded::Incomplete(missing)) => {
                    // `missing` is bounded by the payload limit, checked
                    // before this point.
                    let buffered = read_buffer.get_mut().len();
                    let (room, limit) = read_plan(buffered, missing, last_frame);
                    read_buffer.reserve(room);
                    break limit;
                }
                Err(e) => {
                    return CloseReason::ProtocolViolation {
                        code: e.protocol_error_code(),
                        detail: e.to_string().into(),
                    };
                }
            }
        };
        let mut room = read_buffer.get_mut().limit(read_limit);
        let read = reader.read_buf(&mut room);
        let n = match deadline {
            Some(deadline) => tokio::select! {
                n = read => n,
                () = sleep_until(deadline) => return CloseReason::ReadTimeout,
            },
            None => read.await,
        };
        match n {
            Ok(0) => return CloseReason::PeerClosed,
            Ok(_) => {}
            Err(e) => return io_reason(e),
        }
    }
}

/// How much room to make in the read buffer before the next read, and how
/// many bytes that read may take. `missing` is what the frame in progress
/// still lacks, `last_frame` the length of the last whole frame.
///
/// Decoded payloads are slices of the read buffer, so a buffer is replaced,
/// not reused, once it is full; whatever part of a frame it holds then is
/// copied into the new one. Large frames therefore get a buffer of their own,
/// and reads stop at their end: a run of large frames is read without any
/// copy, where reading ahead would copy most of every other frame.
fn read_plan(buffered: usize, missing: usize, last_frame: usize) -> (usize, usize) {
    if missing >= READ_CHUNK / 4 {
        // In the payload of a large frame: read to its end, no further.
        (missing, missing)
    } else if buffered == 0 && last_frame >= READ_CHUNK / 4 {
        // Between large frames: room for one like the last, and no more.
        let room = last_frame.min(MAX_ANTICIPATED);
        (room, room)
    } else {
        (missing.max(READ_CHUNK / 4), usize::MAX)
    }
}

fn io_reason(e: io::Error) -> CloseReason {
    match e.kind() {
        // A transport that frames messages itself (WebSocket) reports a
        // frame that contradicts its header this way: the peer broke the
        // protocol, and is told so with ProtocolError 2.
        io::ErrorKind::InvalidData => CloseReason::ProtocolViolation {
            code: ProtocolErrorCode::InvalidMessage,
            detail: e.to_string().into(),
        },
        io::ErrorKind::UnexpectedEof
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::BrokenPipe => CloseReason::PeerClosed,
        _ => CloseReason::Io(Arc::new(e)),
    }
}

/// Writes queued batches until the queue is closed and drained.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: &mut W,
    shared: &Shared,
) -> Result<(), CloseReason> {
    let mut batch = VecDeque::new();
    while shared.queue.next_batch(&mut batch).await {
        write_batch(writer, &mut batch, shared.config.write_timeout).await?;
    }
    Ok(())
}

async fn write_batch<W: AsyncWrite + Unpin>(
    writer: &mut W,
    batch: &mut VecDeque<Bytes>,
    limit: Option<Duration>,
) -> Result<(), CloseReason> {
    while !batch.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let count = batch.len().min(MAX_IOVECS);
        for (slot, bytes) in slices.iter_mut().zip(batch.iter()) {
            *slot = IoSlice::new(bytes);
        }
        let write = writer.write_vectored(&slices[..count]);
        let written = match limit {
            Some(t) => timeout(t, write)
                .await
                .map_err(|_| CloseReason::WriteTimeout)?,
            None => write.await,
        }
        .map_err(io_reason)?;
        if written == 0 {
            return Err(io_reason(io::ErrorKind::WriteZero.into()));
        }
        let mut left = written;
        while left > 0 {
            let front = batch.front_mut().expect("wrote no more than queued");
            if front.len() <= left {
                left -= front.len();
                batch.pop_front();
            } else {
                front.advance(left);
                left = 0;
            }
        }
    }
    let flush = writer.flush();
    match limit {
        Some(t) => timeout(t, flush)
            .await
            .map_err(|_| CloseReason::WriteTimeout)?,
        None => flush.await,
    }
    .map_err(io_reason)
}

async fn heartbeat_loop(shared: &Shared) -> CloseReason {
    let Some(every) = shared.config.heartbeat_interval.filter(|d| !d.is_zero()) else {
        return std::future::pending().await;
    };
    let mut next = Instant::now() + every;
    loop {
        sleep_until(next).await;
        next += every;
        let load = shared.config.heartbeat_load.as_ref().map_or(0, |f| f());
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        if shared
            .queue
            .push_now(&Message::Heartbeat { load, time })
            .is_err()
        {
            return std::future::pending().await;
        }
    }
}

async fn shutdown_requested(shared: &Shared) -> CloseReason {
    let mut rx = shared.shutdown.subscribe();
    let mode = loop {
        let mode = *rx.borrow_and_update();
        if mode != Shutdown::Running {
            break mode;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    };
    if mode == Shutdown::Graceful {
        shared.state().stop_accepting();
        let deadline = Instant::now() + shared.config.close_timeout;
        loop {
            let mut idle = pin!(shared.idle.notified());
            idle.as_mut().enable();
            {
                let st = shared.state();
                if st.outbound_len() == 0 && st.inbound_len() == 0 {
                    break;
                }
            }
            tokio::select! {
                () = idle => {}
                () = sleep_until(deadline) => break,
                changed = rx.changed() => {
                    if changed.is_err() || *rx.borrow() == Shutdown::Now {
                        break;
                    }
                }
            }
        }
    }
    CloseReason::Local
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_plan_gives_large_frames_their_own_buffer() {
        const QUARTER: usize = READ_CHUNK / 4;
        // Small frames: read ahead as far as the buffer allows.
        assert_eq!(read_plan(3, 10, 40), (QUARTER, usize::MAX));
        // In a large payload: make room for the rest, read no further.
        assert_eq!(read_plan(100, 70_000, 40), (70_000, 70_000));
        // Between large frames: room for one like the last, no more.
        assert_eq!(read_plan(0, 1, 65_549), (65_549, 65_549));
        assert_eq!(
            read_plan(0, 1, 10 * MAX_ANTICIPATED),
            (MAX_ANTICIPATED, MAX_ANTICIPATED)
        );
        // A partial small frame after a large one: back to reading ahead.
        assert_eq!(read_plan(5, 8, 65_549), (QUARTER, usize::MAX));
    }
}
