//! The responder behind `gotalk serve`, `gotalk bench --self` and `gotalk demo`.
//!
//! Its own accept loop (rather than `gotalk_peer::Server`) so that each
//! connection can be wrapped in a [`Traced`] transport, numbered, and given
//! handlers that know their connection (for relaying notifications).

use std::{
    io,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use gotalk_peer::{Config, Handlers, Peer};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    addr::{Address, Io, Listener},
    ops::{self, Hub},
    trace::{Traced, Tracer},
};

/// Adds handlers to the standard set (the demo's `flaky` operation).
pub(crate) type ExtraHandlers = Arc<dyn Fn(Handlers) -> Handlers + Send + Sync>;

/// How to serve.
#[derive(Clone, Default)]
pub(crate) struct ServeOptions {
    /// Settings of every accepted connection.
    pub(crate) config: Config,
    /// Reports every frame of every connection.
    pub(crate) tracer: Option<Tracer>,
    /// Prints a line to stdout when a connection opens or closes.
    pub(crate) log_connections: bool,
    /// More operations on top of [`ops::server_handlers`].
    pub(crate) extra: Option<ExtraHandlers>,
}

/// A server accepting connections in the background.
pub(crate) struct RunningServer {
    addr: String,
    stop: watch::Sender<bool>,
    task: JoinHandle<Listener>,
    hub: Arc<Hub>,
}

/// Binds `addr` and accepts connections in a background task.
pub(crate) async fn start(addr: &Address, options: ServeOptions) -> io::Result<RunningServer> {
    let listener = Listener::bind(addr).await?;
    let local = listener.local_addr();
    let (stop, stop_rx) = watch::channel(false);
    let hub = Arc::new(Hub::default());
    let task = tokio::spawn(accept_loop(listener, options, hub.clone(), stop_rx));
    Ok(RunningServer {
        addr: local,
        stop,
        task,
        hub,
    })
}

impl RunningServer {
    /// The address clients connect to (`unix:PATH` for a Unix socket).
    pub(crate) fn local_addr(&self) -> &str {
        &self.addr
    }

    /// Stops accepting and closes every connection gracefully (each lets its
    /// requests in flight finish, up to its close timeout). Returns how many
    /// connections were open.
    pub(crate) async fn shutdown(self) -> usize {
        self.stop.send_replace(true);
        if let Ok(listener) = self.task.await {
            listener.cleanup();
        }
        let peers = self.hub.drain();
        futures::future::join_all(peers.iter().map(Peer::close)).await;
        peers.len()
    }
}

async fn accept_loop(
    listener: Listener,
    options: ServeOptions,
    hub: Arc<Hub>,
    mut stop: watch::Receiver<bool>,
) -> Listener {
    let next = Arc::new(AtomicU64::new(1));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return listener,
        };
        match accepted {
            Ok((io, remote)) => {
                let conn = next.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(run_connection(
                    conn,
                    io,
                    remote,
                    options.clone(),
                    hub.clone(),
                ));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

#[allow(clippy::print_stdout)]
async fn run_connection(
    conn: u64,
    io: Box<dyn Io>,
    remote: String,
    options: ServeOptions,
    hub: Arc<Hub>,
) {
    let mut handlers = ops::server_handlers(conn, hub.clone());
    if let Some(extra) = &options.extra {
        handlers = extra(handlers);
    }
    if options.log_connections {
        println!("conn#{conn} open {remote}");
    }
    let config = options.config;
    let handshake = match &options.tracer {
        Some(t) => {
            let traced = Traced::new(io, t.connection_numbered(conn));
            Peer::handshake(traced, handlers, config).await
        }
        None => Peer::handshake(io, handlers, config).await,
    };
    let peer = match handshake {
        Ok(peer) => peer,
        Err(e) => {
            if options.log_connections {
                println!("conn#{conn} closed: handshake failed: {e}");
            }
            tracing::debug!(conn, %remote, error = %e, "handshake failed");
            return;
        }
    };
    hub.insert(conn, &peer);
    let reason = peer.closed().await;
    hub.remove(conn);
    if options.log_connections {
        println!("conn#{conn} closed: {reason}");
    }
}
