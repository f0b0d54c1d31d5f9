//! `Context::yield_behind_woken`: a handler that wakes other tasks goes on
//! only after they ran, whether the peer first polled it on the
//! connection's task (inline) or on a task of its own.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
mod common;

use common::Transport;
use gotalk_peer::{Config, HandlerError, Handlers};
use tokio::{runtime::Builder, sync::Notify};

/// Tasks the handler wakes: fewer than tokio's local run queue holds
/// (256), so none overflows to the shared queue and the order is exact.
const WOKEN: usize = 100;
/// What the handler writes into the log once it goes on.
const HANDLER: usize = usize::MAX;

fn run(mut runtime: Builder, inline_handlers: bool) {
    let runtime = runtime.enable_all().build().unwrap();
    runtime.block_on(async move {
        let log = Arc::new(Mutex::new(Vec::new()));
        let bells: Vec<Arc<Notify>> = (0..WOKEN).map(|_| Arc::new(Notify::new())).collect();
        let mut waiters = Vec::new();
        for (i, bell) in bells.iter().enumerate() {
            let (bell, log) = (bell.clone(), log.clone());
            waiters.push(tokio::spawn(async move {
                bell.notified().await;
                log.lock().unwrap().push(i);
            }));
        }
        // Every waiter parked on its bell before the request comes.
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }

        let handler_log = log.clone();
        let handlers = Handlers::new().buffer("ring", move |ctx, payload: Bytes| {
            for bell in &bells {
                bell.notify_one();
            }
            let log = handler_log.clone();
            async move {
                ctx.yield_behind_woken().await;
                log.lock().unwrap().push(HANDLER);
                Ok::<_, HandlerError>(payload)
            }
        });
        let config = Config {
            inline_handlers,
            ..Config::default()
        };
        let conn = common::connect(
            Transport::Tcp,
            Handlers::new(),
            handlers,
            Config::default(),
            config,
        )
        .await;
        let client = conn.client;
        let answer = client.request("ring", "x").await.unwrap();
        assert_eq!(&answer[..], b"x");
        for waiter in waiters {
            waiter.await.unwrap();
        }
        let log = log.lock().unwrap().clone();
        assert_eq!(log.len(), WOKEN + 1);
        assert_eq!(
            log.iter().position(|&i| i == HANDLER),
            Some(WOKEN),
            "the handler went on before every task it woke had run: {log:?}"
        );
    });
}

#[test]
fn on_a_current_thread_runtime() {
    run(Builder::new_current_thread(), true);
}

/// tokio's multi-thread runtime puts a task spawned from a worker in the
/// worker's LIFO slot, ahead of the tasks woken before it: the handler,
/// spawned after its inline poll, must still go behind them.
#[test]
fn on_one_worker_of_a_multi_thread_runtime() {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(1);
    run(builder, true);
}

#[test]
fn when_handlers_are_never_polled_inline() {
    let mut builder = Builder::new_multi_thread();
    builder.worker_threads(1);
    run(builder, false);
    run(Builder::new_current_thread(), false);
}
