//! Notifications queued with a delay (`Peer::try_notify_by`): they wait
//! for their deadline and then go out together, in one write; anything
//! sent without a delay, a large batch, or closing takes them along at
//! once, in order. Time is paused: the deadlines are exact.

mod common;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use common::{WAIT, eventually, quiet, tap::Taps, within};
use gotalk_peer::{HandlerError, Handlers, Peer};
use tokio::time::Instant;

/// What the client received, in order: (when, notification name, payload).
type Log = Arc<Mutex<Vec<(Instant, String, Bytes)>>>;

struct Setup {
    client: Peer,
    server: Peer,
    /// The server's transport.
    taps: Taps,
    log: Log,
}

async fn setup() -> Setup {
    let log: Log = Arc::default();
    let record = |name: &'static str, log: &Log| {
        let log = log.clone();
        move |_ctx, p: Bytes| {
            log.lock()
                .unwrap()
                .push((Instant::now(), name.to_string(), p));
            async {}
        }
    };
    let client_handlers = Handlers::new()
        .notification("tick", record("tick", &log))
        .notification("now", record("now", &log));
    let server_handlers =
        Handlers::new().buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        );
    let taps = Taps::default();
    let (a, b) = tokio::io::duplex(1 << 20);
    let (client, server) = tokio::join!(
        Peer::handshake(a, client_handlers, quiet()),
        Peer::handshake(taps.wrap(Box::new(b)), server_handlers, quiet()),
    );
    Setup {
        client: client.unwrap(),
        server: server.unwrap(),
        taps,
        log,
    }
}

impl Setup {
    fn received(&self) -> usize {
        self.log.lock().unwrap().len()
    }

    fn log(&self) -> Vec<(Instant, String, Bytes)> {
        self.log.lock().unwrap().clone()
    }

    /// Queues `n` delayed `tick`s numbered from 0, all due at `by`.
    fn ticks(&self, n: u32, size: usize, by: Instant) {
        for i in 0..n {
            let mut p = format!("{i:08}").into_bytes();
            p.resize(size.max(8), b'.');
            self.server.try_notify_by("tick", p.into(), by).unwrap();
        }
    }
}

fn numbers(log: &[(Instant, String, Bytes)], name: &str) -> Vec<u32> {
    log.iter()
        .filter(|(_, n, _)| n == name)
        .map(|(_, _, p)| std::str::from_utf8(&p[..8]).unwrap().parse().unwrap())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn delayed_notifications_go_out_together_at_their_deadline() {
    let s = setup().await;
    let writes = s.taps.writes();
    let start = Instant::now();
    let by = start + Duration::from_millis(50);
    s.ticks(20, 8, by);
    // Half-way: nothing written yet.
    tokio::time::sleep(Duration::from_millis(25)).await;
    assert_eq!(s.taps.writes(), writes, "written before the deadline");
    assert_eq!(s.received(), 0);
    eventually(WAIT, "20 ticks", || s.received() == 20).await;
    let log = s.log();
    assert_eq!(
        numbers(&log, "tick"),
        (0..20).collect::<Vec<_>>(),
        "in order"
    );
    assert!(
        log.iter().all(|(at, _, _)| *at >= by),
        "none before the deadline"
    );
    assert!(
        log.iter()
            .all(|(at, _, _)| *at < by + Duration::from_millis(10)),
        "at the deadline"
    );
    assert_eq!(s.taps.writes() - writes, 1, "20 notifications, one write");
}

#[tokio::test(start_paused = true)]
async fn the_earliest_deadline_of_a_batch_holds() {
    let s = setup().await;
    let start = Instant::now();
    s.ticks(1, 8, start + Duration::from_secs(3600));
    // Queued later, due earlier: the whole batch goes then.
    s.server
        .try_notify_by(
            "now",
            Bytes::from_static(b"00000000"),
            start + Duration::from_millis(30),
        )
        .unwrap();
    within(WAIT, "both", async {
        eventually(WAIT, "both", || s.received() == 2).await;
    })
    .await;
    let log = s.log();
    assert!(
        log.iter()
            .all(|(at, _, _)| *at - start < Duration::from_millis(40))
    );
    assert_eq!(log[0].1, "tick", "in the order queued");
}

#[tokio::test(start_paused = true)]
async fn anything_sent_without_a_delay_takes_them_along_in_order() {
    let s = setup().await;
    let start = Instant::now();
    s.ticks(5, 8, start + Duration::from_secs(3600));
    s.server
        .try_notify("now", Bytes::from_static(b"00000005"))
        .unwrap();
    eventually(WAIT, "6 notifications", || s.received() == 6).await;
    let log = s.log();
    assert_eq!(numbers(&log, "tick"), vec![0, 1, 2, 3, 4]);
    assert_eq!(log[5].1, "now", "after the delayed ones");
    assert!(
        log[5].0 - start < Duration::from_secs(1),
        "not held for the hour"
    );

    // An answer, too: the server's reply to the client's request.
    let start = Instant::now();
    s.ticks(3, 8, start + Duration::from_secs(3600));
    let answer = within(WAIT, "echo", s.client.request("echo", "hi"))
        .await
        .unwrap();
    assert_eq!(&answer[..], b"hi");
    eventually(WAIT, "3 more", || s.received() == 9).await;
    assert!(
        s.log()
            .iter()
            .all(|(at, _, _)| *at - start < Duration::from_secs(1))
    );
}

#[tokio::test(start_paused = true)]
async fn a_large_batch_does_not_wait() {
    let s = setup().await;
    let start = Instant::now();
    // 40 KiB: over the 32 KiB at which a delayed batch goes at once.
    s.ticks(40, 1024, start + Duration::from_secs(3600));
    eventually(WAIT, "40 ticks", || s.received() == 40).await;
    assert_eq!(numbers(&s.log(), "tick"), (0..40).collect::<Vec<_>>());
    assert!(Instant::now() - start < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn closing_flushes_what_waits() {
    let s = setup().await;
    let start = Instant::now();
    s.ticks(10, 8, start + Duration::from_secs(3600));
    within(WAIT, "close", s.server.close()).await;
    eventually(WAIT, "10 ticks", || s.received() == 10).await;
    assert_eq!(numbers(&s.log(), "tick"), (0..10).collect::<Vec<_>>());
    assert!(Instant::now() - start < Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn a_closed_connection_refuses_them() {
    let s = setup().await;
    within(WAIT, "close", s.client.close()).await;
    eventually(WAIT, "server sees the close", || s.server.is_closed()).await;
    let by = Instant::now() + Duration::from_millis(10);
    assert!(s.server.try_notify_by("tick", Bytes::new(), by).is_err());
}
