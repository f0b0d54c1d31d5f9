//! `Config::busy_poll`: after a read or write, the connection's task keeps
//! its thread polling for the window instead of letting it sleep, and
//! sleeps once the window has passed. Told by the runtime's count of the
//! times its thread went to sleep (parked): none while the window lasts,
//! some once it has passed; without the window, some at once.

use std::time::Duration;

use bytes::Bytes;
use gotalk_peer::{Config, HandlerError, Handlers, Peer};

/// One request on a connection made with `busy_poll`, then how many times
/// the runtime's thread slept during `first` and then during `second`.
fn parks_after_a_request(
    busy_poll: Option<Duration>,
    first: Duration,
    second: Duration,
) -> (u64, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let handlers =
            Handlers::new().buffer(
                "echo",
                |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
            );
        let config = Config {
            busy_poll,
            heartbeat_interval: None,
            ..Config::default()
        };
        let (client, _server) = Peer::pair(Handlers::new(), handlers, config).await.unwrap();
        assert_eq!(client.request("echo", "ping").await.unwrap(), "ping");
        let metrics = tokio::runtime::Handle::current().metrics();
        let before = metrics.worker_park_count(0);
        tokio::time::sleep(first).await;
        let during = metrics.worker_park_count(0) - before;
        tokio::time::sleep(second).await;
        let after = metrics.worker_park_count(0) - before - during;
        (during, after)
    })
}

#[test]
fn the_thread_stays_awake_for_the_window_then_sleeps() {
    let ms = Duration::from_millis;
    let (during, after) = parks_after_a_request(Some(ms(400)), ms(40), ms(600));
    assert_eq!(during, 0, "slept while the window lasted");
    assert!(after > 0, "never slept after the window: still polling");
}

#[test]
fn without_busy_polling_the_thread_sleeps_at_once() {
    let ms = Duration::from_millis;
    let (during, _) = parks_after_a_request(None, ms(40), ms(0));
    assert!(during > 0, "did not sleep while waiting");
}
