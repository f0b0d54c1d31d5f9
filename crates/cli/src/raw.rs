//! The raw baseline of `gotalk bench --raw` and `gotalk serve --raw-echo`:
//! the same load shape (connections × requests in flight × payload size) as
//! the gotalk bench, over plain TCP with no protocol at all.
//!
//! The server writes back every chunk it reads. Each client connection is
//! one task that keeps `in_flight` fixed-size messages outstanding: it sends
//! as many as the window allows in one write (write batching) and counts
//! whole messages coming back, which reopens the window. Echo keeps order,
//! so the send times form a FIFO and every message gets its round trip.
//! This is the limit a request/response protocol on the same runtime layout
//! can approach, with no framing, dispatch or per-request tasks.

use std::{
    collections::VecDeque,
    future::{Future, poll_fn},
    io,
    pin::pin,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    task::JoinHandle,
};

use crate::{
    bench::{Load, Stop, TaskResult},
    latency::Recorder,
};

/// What the echo server reads at once per connection (as the gotalk
/// server's 8 KiB read chunk, grown for batches of small messages: one read
/// takes a whole window of 640 × 32 B).
const ECHO_CHUNK: usize = 32 * 1024;

/// A raw TCP echo server: every byte read is written back on the same
/// connection, one task per connection.
pub(crate) struct EchoServer {
    local_addr: String,
    accept: JoinHandle<()>,
}

/// `fut`, woken again at once while it is pending until `until` (busy
/// polling: the thread does not sleep), then as it wakes itself: what a
/// gotalk connection does with `Config::busy_poll`, for the baseline.
async fn polled_until<F: Future>(fut: F, until: Option<Instant>) -> F::Output {
    let mut fut = pin!(fut);
    poll_fn(|cx| {
        let poll = fut.as_mut().poll(cx);
        if poll.is_pending() && until.is_some_and(|until| Instant::now() < until) {
            cx.waker().wake_by_ref();
        }
        poll
    })
    .await
}

/// The end of a busy-polling window of `window` that starts now.
fn window_from_now(window: Option<Duration>) -> Option<Instant> {
    window.and_then(|w| Instant::now().checked_add(w))
}

impl EchoServer {
    /// Binds `addr` (`host:port`; port 0 picks one) and starts accepting;
    /// each connection busy polls for `busy_poll` after it writes.
    pub(crate) async fn start(addr: &str, busy_poll: Option<Duration>) -> io::Result<EchoServer> {
        let listener = TcpListener::bind(addr).await?;
        let local_addr = listener.local_addr()?.to_string();
        let accept = tokio::spawn(accept_loop(listener, busy_poll));
        Ok(EchoServer { local_addr, accept })
    }

    /// The bound address, port included.
    pub(crate) fn local_addr(&self) -> &str {
        &self.local_addr
    }

    /// Stops accepting; connections end when their clients close them.
    pub(crate) fn stop(&self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, busy_poll: Option<Duration>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(echo(stream, busy_poll));
            }
            Err(e) => {
                // Out of descriptors and the like: keep serving the others,
                // and do not spin while it lasts.
                tracing::warn!(error = %e, "raw echo: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn echo(mut stream: TcpStream, busy_poll: Option<Duration>) {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; ECHO_CHUNK];
    let mut until = None;
    loop {
        match polled_until(stream.read(&mut buf), until).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
                until = window_from_now(busy_poll);
            }
        }
    }
}

/// Opens one plain TCP connection to `addr` for [`connection`].
pub(crate) async fn connect(addr: &str) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Takes up to `want` requests from the load's budget; 0 once it is spent
/// (or the deadline has passed, or Ctrl-C).
fn take(load: &Load, want: usize) -> usize {
    if load.halt.load(Ordering::Relaxed) {
        return 0;
    }
    match load.stop {
        Stop::Count(n) => {
            let want = want as u64;
            let before = load.issued.fetch_add(want, Ordering::Relaxed);
            n.saturating_sub(before).min(want) as usize
        }
        Stop::Deadline(at) => {
            if Instant::now() < at {
                want
            } else {
                0
            }
        }
    }
}

/// One connection's load: `in_flight` messages of `size` bytes outstanding
/// until the load stops, then waits for the echoes of those sent.
pub(crate) async fn connection(
    mut stream: TcpStream,
    load: Arc<Load>,
    size: usize,
    in_flight: usize,
    busy_poll: Option<Duration>,
    mut latencies: Recorder,
) -> TaskResult {
    let outcome = pump(
        &mut stream,
        &load,
        size,
        in_flight,
        busy_poll,
        &mut latencies,
    )
    .await;
    let (errors, first_error) = match outcome {
        Ok(()) => (0, None),
        Err(e) => (1, Some(format!("raw connection: {e}"))),
    };
    let _ = stream.shutdown().await;
    TaskResult {
        errors,
        first_error,
    }
}

async fn pump(
    stream: &mut TcpStream,
    load: &Load,
    size: usize,
    in_flight: usize,
    busy_poll: Option<Duration>,
    latencies: &mut Recorder,
) -> io::Result<()> {
    // Every message is `size` bytes of `x`: any slice of this is a run of
    // whole messages, or the rest of one.
    let out = vec![b'x'; size.max(1) * in_flight];
    let mut buf = vec![0u8; (size * in_flight).clamp(4096, 256 * 1024)];
    let (mut rd, mut wr) = stream.split();
    let mut sent_at = VecDeque::with_capacity(in_flight);
    // Messages that may be sent (the window), bytes queued but not yet
    // written, bytes of a message partly received.
    let mut window = in_flight;
    let mut unsent = 0usize;
    let mut partial = 0usize;
    let mut unreported = 0u64;
    let mut stopped = false;
    // The busy-polling window's end: from the last write or read.
    let mut until = None;
    loop {
        if window > 0 && !stopped {
            let n = take(load, window);
            if n == 0 {
                stopped = true;
            } else {
                let now = Instant::now();
                sent_at.extend(std::iter::repeat_n(now, n));
                window -= n;
                unsent += n * size;
            }
        }
        if sent_at.is_empty() {
            break;
        }
        tokio::select! {
            written = wr.write(&out[..unsent]), if unsent > 0 => {
                match written? {
                    0 => return Err(io::ErrorKind::WriteZero.into()),
                    n => unsent -= n,
                }
                until = window_from_now(busy_poll);
            }
            read = polled_until(rd.read(&mut buf), until) => {
                let n = read?;
                until = window_from_now(busy_poll);
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!("closed by the server with {} message(s) unanswered", sent_at.len()),
                    ));
                }
                // The payload is all `x`: anything else is not this echo (a
                // gotalk server answering a protocol error, say).
                if buf[..n].iter().any(|&b| b != b'x') {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the server sent back other bytes than it was sent: not a raw echo \
                         (`gotalk serve --raw-echo`)",
                    ));
                }
                partial += n;
                let whole = (partial / size.max(1)).min(sent_at.len());
                partial -= whole * size;
                if whole > 0 {
                    let now = Instant::now();
                    for sent in sent_at.drain(..whole) {
                        let nanos = now.duration_since(sent).as_nanos().min(u128::from(u64::MAX)) as u64;
                        latencies.record(nanos);
                    }
                    window += whole;
                    unreported += whole as u64;
                    if unreported >= 64 {
                        load.done.fetch_add(unreported, Ordering::Relaxed);
                        unreported = 0;
                    }
                }
            }
        }
    }
    load.done.fetch_add(unreported, Ordering::Relaxed);
    Ok(())
}
