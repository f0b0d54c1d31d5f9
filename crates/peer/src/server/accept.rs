//! The accept loop, and the life of one connection: admission, transport
//! handshake, `wrap_io`, gotalk handshake, serving, forgetting.

use std::{sync::Arc, time::Duration};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::{Connections, hooks::Hooks};
use crate::{
    Config, Handlers, Peer,
    transport::{Connecting, Listener},
};

/// Connections a server takes between accept and the end of their gotalk
/// handshake, at once; further ones wait in the listener's backlog, so
/// slow or silent clients cannot pile up without bound.
const MAX_CONNECTING: usize = 256;

/// Pause after a failed accept (out of file descriptors and the like), so
/// the loop does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every listener of one server shares.
pub(crate) struct State {
    pub(crate) handlers: Handlers,
    /// Shared by the connections (see [`Connecting::configure`]).
    pub(crate) config: Arc<Config>,
    pub(crate) hooks: Hooks,
    pub(crate) connections: Connections,
    /// Set once to stop accepting.
    pub(crate) stop: watch::Sender<bool>,
    connecting: Arc<Semaphore>,
}

impl State {
    pub(crate) fn new(
        handlers: Handlers,
        config: Config,
        hooks: Hooks,
        connections: Connections,
    ) -> Self {
        Self {
            handlers,
            config: Arc::new(config),
            hooks,
            connections,
            stop: watch::channel(false).0,
            connecting: Arc::new(Semaphore::new(MAX_CONNECTING)),
        }
    }

    fn stopping(&self) -> bool {
        *self.stop.borrow()
    }
}

/// Accepts on `listener` until the server stops, each connection in its
/// own task; then closes the listener.
pub(crate) async fn run<L: Listener>(mut listener: L, state: Arc<State>) {
    let local = listener.local_addr();
    let mut stop = state.stop.subscribe();
    loop {
        let permit = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            p = state.connecting.clone().acquire_owned() => p.expect("never closed"),
        };
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok(conn) => {
                crate::runtime_metrics::connection_accepted();
                tokio::spawn(serve(conn, state.clone(), permit));
            }
            Err(e) => {
                tracing::warn!(%local, error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    tracing::debug!(%local, "stopped accepting");
    listener.close().await;
}

/// Opens one accepted connection. Once open, the connection's own driver
/// task is all that runs for it: the registry forgets it from the driver's
/// end (a hook), so an idle connection costs no second task.
async fn serve<C: Connecting>(conn: C, state: Arc<State>, permit: OwnedSemaphorePermit) {
    let Some(peer) = open(conn, &state, permit).await else {
        return;
    };
    // Shutdown may have closed the registry's connections while this one
    // was in its handshake: close it too. (It was registered first, so
    // either shutdown saw it or this sees the stop.)
    if state.stopping() {
        peer.close().await;
    }
}

/// Admits, establishes and registers one accepted connection, up to the
/// end of the gotalk handshake.
async fn open<C: Connecting>(
    conn: C,
    state: &Arc<State>,
    permit: OwnedSemaphorePermit,
) -> Option<Peer> {
    let mut info = conn.info();
    info.id = state.connections.next_id();
    let id = info.id;
    if let Err(rejection) = state.hooks.admit(&info) {
        tracing::debug!(
            id,
            transport = %info.transport,
            remote = ?info.remote_addr,
            reason = %rejection,
            "connection refused"
        );
        conn.refuse(&rejection);
        return None;
    }
    let mut config = state.config.clone();
    conn.configure(&mut config);
    let io = match conn.establish(&config).await {
        Ok(io) => io,
        Err(e) => {
            tracing::debug!(id, transport = %info.transport, remote = ?info.remote_addr, error = %e, "transport handshake failed");
            return None;
        }
    };
    // After `establish`: the `Connecting` that shared the request is gone,
    // so this changes it in place.
    #[cfg(feature = "websocket")]
    if let Some(ws) = &mut info.websocket {
        let flags = (config.remote_retry_results, config.remote_stream_requests);
        if (ws.remote_retry_results, ws.remote_stream_requests) != flags {
            let ws = std::sync::Arc::make_mut(ws);
            (ws.remote_retry_results, ws.remote_stream_requests) = flags;
        }
    }
    let remote = info.remote_label();
    // Runs before the first message is read: every handler sees the
    // connection info, and the connection is in the registry by then.
    let setup = |peer: &Peer| {
        peer.set_user_data(info.clone());
        state.connections.insert(id, peer.clone());
        let connections = state.connections.clone();
        peer.connection().on_finished(move |reason| {
            connections.remove(id);
            tracing::debug!(id, ?reason, "connection closed");
        });
        if let Some(on_open) = &state.hooks.on_open {
            on_open(peer, &info);
        }
    };
    let handlers = state.handlers.clone();
    // Box only when asked to: the default path stays monomorphic.
    let opened = match &state.hooks.wrap_io {
        Some(wrap) => {
            let io = wrap(Box::new(io), &info);
            Peer::handshake_with_addr(io, handlers, config, remote, setup).await
        }
        None => Peer::handshake_with_addr(io, handlers, config, remote, setup).await,
    };
    drop(permit);
    let peer = match opened {
        Ok(peer) => peer,
        Err(e) => {
            tracing::debug!(id, transport = %info.transport, remote = ?info.remote_addr, error = %e, "gotalk handshake failed");
            return None;
        }
    };
    tracing::debug!(id, transport = %info.transport, remote = ?info.remote_addr, "connection open");
    Some(peer)
}
