//! When the answers of spawned handlers are written: in one write when the
//! handlers were woken together, and at once, ahead of the other tasks the
//! runtime has queued, when no other woken handler is still to answer.
//!
//! Both run on one worker thread, as the hub's servers do, so the order in
//! which tokio runs tasks is the same every time.

mod common;

use std::{
    io,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use common::{WAIT, eventually, quiet, within};
use futures::future::join_all;
use gotalk_peer::{HandlerError, Handlers, Peer};
use tokio::{
    io::{AsyncRead, AsyncWrite, DuplexStream, ReadBuf},
    sync::Notify,
};

/// The server's transport: counts its writes and notes, at each, how many
/// of the test's other tasks had run.
struct Counted {
    inner: DuplexStream,
    noise: Arc<AtomicUsize>,
    writes: Arc<Mutex<Vec<usize>>>,
}

impl Counted {
    fn wrote(&self, n: usize) {
        if n > 0 {
            let noise = self.noise.load(Ordering::SeqCst);
            self.writes.lock().unwrap().push(noise);
        }
    }
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.wrote(n);
        }
        polled
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

/// A server whose `wait` handler waits for gate `payload` (an index into
/// `gates`) and answers its payload; `entered` counts the calls.
struct Setup {
    client: Peer,
    _server: Peer,
    gates: Arc<Vec<Notify>>,
    entered: Arc<AtomicUsize>,
    noise: Arc<AtomicUsize>,
    writes: Arc<Mutex<Vec<usize>>>,
}

async fn setup(gates: usize) -> Setup {
    let gates: Arc<Vec<Notify>> = Arc::new((0..gates).map(|_| Notify::new()).collect());
    let entered = Arc::new(AtomicUsize::new(0));
    let handlers = {
        let gates = gates.clone();
        let entered = entered.clone();
        Handlers::new()
            .buffer("wait", move |_ctx, p: Bytes| {
                let gates = gates.clone();
                entered.fetch_add(1, Ordering::SeqCst);
                async move {
                    gates[usize::from(p[0])].notified().await;
                    Ok::<_, HandlerError>(p)
                }
            })
            .notification("note", |_ctx, _p| async {})
    };
    let noise = Arc::new(AtomicUsize::new(0));
    let writes = Arc::new(Mutex::new(Vec::new()));
    let (a, b) = tokio::io::duplex(1 << 16);
    let counted = Counted {
        inner: b,
        noise: noise.clone(),
        writes: writes.clone(),
    };
    let (client, server) = tokio::join!(
        Peer::handshake(a, Handlers::new(), quiet()),
        Peer::handshake(counted, handlers, quiet()),
    );
    Setup {
        client: client.unwrap(),
        _server: server.unwrap(),
        gates,
        entered,
        noise,
        writes,
    }
}

impl Setup {
    /// Sends `wait` requests for gates `which`, and waits until every
    /// handler has started and its task has run once.
    async fn calls(&self, which: &[u8]) -> Vec<tokio::task::JoinHandle<Bytes>> {
        let calls = which
            .iter()
            .map(|&gate| {
                let client = self.client.clone();
                tokio::spawn(async move { client.request("wait", vec![gate]).await.unwrap() })
            })
            .collect();
        eventually(WAIT, "every handler started", || {
            self.entered.load(Ordering::SeqCst) == which.len()
        })
        .await;
        // Their spawned tasks' first polls.
        tokio::time::sleep(Duration::from_millis(20)).await;
        calls
    }

    fn writes(&self) -> usize {
        self.writes.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn answers_of_handlers_woken_together_share_one_write() {
    let s = setup(1).await;
    let calls = s.calls(&[0; 16]).await;
    let before = s.writes();
    let gates = s.gates.clone();
    // From the worker thread, as a connection's read would.
    tokio::spawn(async move { gates[0].notify_waiters() })
        .await
        .unwrap();
    let answers = within(WAIT, "16 answers", join_all(calls)).await;
    assert!(answers.iter().all(|a| a.as_ref().unwrap()[..] == [0]));
    assert_eq!(s.writes() - before, 1, "16 answers, one write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_lone_answer_is_written_before_the_tasks_queued_behind_it() {
    let s = setup(2).await;
    let mut calls = s.calls(&[0, 1]).await;
    // Something the server handles at once in between (here a
    // notification; a request answered without waiting would do too).
    s.client.notify("note", Bytes::new()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    let before = s.writes();
    let (gates, noise) = (s.gates.clone(), s.noise.clone());
    tokio::spawn(async move {
        // 200 tasks queued (say, subscriber connections a fan-out woke),
        // then one of the two handlers is woken.
        for _ in 0..200 {
            let noise = noise.clone();
            tokio::spawn(async move {
                noise.fetch_add(1, Ordering::SeqCst);
            });
        }
        gates[0].notify_one();
    })
    .await
    .unwrap();
    let first = within(WAIT, "the first answer", calls.remove(0)).await;
    assert_eq!(first.unwrap()[..], [0]);
    let writes = s.writes.lock().unwrap()[before..].to_vec();
    assert_eq!(writes.len(), 1, "one answer, one write");
    // The handler still waiting did not hold it back: it went out right
    // after the answering handler ran, not behind the 200 tasks.
    assert!(
        writes[0] < 100,
        "written after {} of the 200 tasks queued before it",
        writes[0]
    );
    s.gates[1].notify_one();
    assert_eq!(
        within(WAIT, "the second answer", calls.remove(0))
            .await
            .unwrap()[..],
        [1]
    );
}
