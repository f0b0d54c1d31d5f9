//! A connection's hub session: who it is, where it is in its
//! authentication, and what it subscribes to.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, Weak},
    time::SystemTime,
};

use gotalk_peer::{ConnectionInfo, Peer};
use tokio::sync::{Notify, futures::Notified};

use crate::{
    Hub, HubError,
    auth::{AuthError, Identity, Permissions},
    broker::ClientInfo,
    hooks::ClientContext,
};

/// One connection's session.
pub(crate) struct Session {
    /// Local number, the key of its subscriptions on this node.
    pub(crate) id: u64,
    /// Its client id, unique across the cluster.
    pub(crate) client: Arc<str>,
    pub(crate) peer: Peer,
    pub(crate) connection: Option<Arc<ConnectionInfo>>,
    /// Serializes the session's subscribes, unsubscribes and its cleanup,
    /// in the order the requests arrived (the lock is fair).
    pub(crate) ops: tokio::sync::Mutex<()>,
    /// Serializes its `auth` requests.
    pub(crate) auth: tokio::sync::Mutex<()>,
    state: Mutex<SessionState>,
    /// A mutex and a `Notify` rather than a watch channel: a few dozen
    /// bytes per connection instead of a shared allocation.
    phase: Mutex<Phase>,
    phase_changed: Notify,
}

#[derive(Default)]
pub(crate) struct SessionState {
    pub(crate) subscriptions: HashMap<Arc<str>, Subscription>,
    /// Set by the cleanup: nothing may be added any more.
    pub(crate) closed: bool,
    /// Whether `on_connect` accepted it (so `on_disconnect` is owed).
    pub(crate) established: bool,
    /// Who it is, from just before `on_connect` runs (server-side joins
    /// made by that hook need it before the session is ready).
    pub(crate) principal: Option<Arc<Principal>>,
}

/// One of the session's subscriptions.
#[derive(Clone, Debug)]
pub(crate) struct Subscription {
    /// Who it entered presence as, if it did.
    pub(crate) presence: Option<ClientInfo>,
}

/// Where a session is in its life.
#[derive(Clone)]
pub(crate) enum Phase {
    /// Verifying the upgrade's token, or running `on_connect`: requests
    /// wait.
    Pending,
    /// Authentication is required and has not happened.
    Unauthenticated,
    /// Served, as this principal.
    Ready(Arc<Principal>),
    /// Refused for good: requests get this, the connection is closing.
    Refused(Refusal),
    /// Its identity expired: the connection is closing.
    Expired,
    /// Closed.
    Closed,
}

#[derive(Clone)]
pub(crate) enum Refusal {
    Auth(AuthError),
    Denied(String),
}

/// Who a ready session is, and what it may do.
pub(crate) struct Principal {
    pub(crate) info: ClientInfo,
    pub(crate) identity: Option<Arc<Identity>>,
    pub(crate) permissions: Arc<Permissions>,
}

impl Principal {
    pub(crate) fn expires(&self) -> Option<SystemTime> {
        self.identity.as_ref().and_then(|i| i.expires)
    }
}

/// The user data a session's connection carries: weak, since the session
/// holds the connection's `Peer` (a strong one would keep the connection
/// alive through its own user data).
pub(crate) struct SessionRef(pub(crate) Weak<Session>);

impl Session {
    pub(crate) fn new(
        id: u64,
        client: Arc<str>,
        peer: Peer,
        connection: Option<Arc<ConnectionInfo>>,
    ) -> Self {
        Self {
            id,
            client,
            peer,
            connection,
            ops: tokio::sync::Mutex::new(()),
            auth: tokio::sync::Mutex::new(()),
            state: Mutex::default(),
            phase: Mutex::new(Phase::Pending),
            phase_changed: Notify::new(),
        }
    }

    pub(crate) fn state(&self) -> MutexGuard<'_, SessionState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn phase(&self) -> Phase {
        self.phase.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn set_phase(&self, phase: Phase) {
        // An authenticated connection's identity, for the application's
        // layers (`Authorize`); anonymous ones get none.
        if let Phase::Ready(principal) = &phase
            && let Some(identity) = &principal.identity
        {
            self.peer.set_identity(identity.to_peer_identity());
        }
        *self.phase.lock().unwrap_or_else(|p| p.into_inner()) = phase;
        self.phase_changed.notify_waiters();
    }

    /// Completes at the next [`set_phase`](Self::set_phase) after this
    /// call (enable it before reading the phase it waits to change).
    pub(crate) fn phase_changed(&self) -> Notified<'_> {
        self.phase_changed.notified()
    }

    /// The principal, once the session is settled; the error result for
    /// requests otherwise.
    pub(crate) async fn ready(&self) -> Result<Arc<Principal>, HubError> {
        let phase = loop {
            let changed = self.phase_changed();
            tokio::pin!(changed);
            // Registered before the phase is read, so a change in between
            // is not missed.
            changed.as_mut().enable();
            match self.phase() {
                Phase::Pending => changed.await,
                settled => break settled,
            }
        };
        match phase {
            Phase::Ready(p) => Ok(p),
            Phase::Unauthenticated => Err(HubError::Unauthenticated),
            Phase::Refused(Refusal::Auth(e)) => Err(HubError::Auth(e)),
            Phase::Refused(Refusal::Denied(reason)) => Err(HubError::Denied(reason)),
            Phase::Expired => Err(HubError::Auth(AuthError::Expired)),
            Phase::Pending | Phase::Closed => Err(HubError::Closed),
        }
    }

    /// The principal, if the session is ready now.
    pub(crate) fn principal(&self) -> Option<Arc<Principal>> {
        match &*self.phase.lock().unwrap_or_else(|p| p.into_inner()) {
            Phase::Ready(p) => Some(p.clone()),
            _ => None,
        }
    }

    pub(crate) fn context(&self, hub: &Hub, principal: &Principal) -> ClientContext {
        ClientContext {
            hub: hub.clone(),
            info: principal.info.clone(),
            identity: principal.identity.clone(),
            connection: self.connection.clone(),
        }
    }

    /// The context of whoever the session was last: for hooks called
    /// after it stopped being ready (leave, disconnect).
    pub(crate) fn last_context(&self, hub: &Hub) -> ClientContext {
        let principal = self.principal().or_else(|| self.state().principal.clone());
        match principal {
            Some(p) => self.context(hub, &p),
            None => ClientContext {
                hub: hub.clone(),
                info: ClientInfo {
                    user: String::new(),
                    client: self.client.to_string(),
                },
                identity: None,
                connection: self.connection.clone(),
            },
        }
    }
}
