//! A session's life: authentication, subscriptions joined and parted,
//! expiry, and the cleanup that leaves nothing behind when it closes.

use std::{
    pin::Pin,
    sync::Arc,
    time::{Duration, SystemTime},
};

use gotalk_peer::{CloseReason, Peer};

use crate::{
    Hub, HubError,
    auth::Identity,
    broker::StreamPosition,
    client::{Phase, Principal, Refusal, Session, Subscription},
    hooks::{ClientContext, LeaveReason},
    node::{NewSubscriber, SubscribeOut},
    presence, wire,
};

/// What the connection brought from its WebSocket upgrade.
pub(crate) enum Preauth {
    /// Nothing: authenticate with `auth`, if the hub requires it.
    None,
    /// An identity verified while admitting the upgrade.
    Identity(Identity),
    /// A token still to verify.
    Token(String),
}

/// Runs a session from its start until its connection closed and it was
/// cleaned up.
///
/// The task lives as long as its connection, and a task is as large as
/// the largest state of its future: the start and the cleanup, which run
/// once, are boxed, so that an idle session's task holds only what
/// waiting for the close (or the expiry) needs. (An `async` block rather
/// than an `async fn`, whose future keeps its arguments twice.)
pub(crate) fn run(
    hub: Hub,
    session: Arc<Session>,
    preauth: Preauth,
) -> impl Future<Output = ()> + Send {
    let starting: Pin<Box<dyn Future<Output = ()> + Send>> = {
        let (hub, session) = (hub.clone(), session.clone());
        Box::pin(async move { start(&hub, &session, preauth).await })
    };
    async move {
        let closed = session.peer.closed();
        tokio::pin!(closed);
        let reason = tokio::select! {
            reason = &mut closed => Some(reason),
            () = starting => None,
        };
        let reason = match reason {
            Some(reason) => reason,
            None => watch_expiry(&hub, &session, closed).await,
        };
        Box::pin(end(&hub, &session, &reason)).await;
    }
}

async fn start(hub: &Hub, session: &Arc<Session>, preauth: Preauth) {
    match preauth {
        Preauth::Identity(identity) => {
            let _ = establish(hub, session, Some(identity)).await;
        }
        Preauth::Token(token) => match hub.verify(&token).await {
            Ok(identity) => {
                let _ = establish(hub, session, Some(identity)).await;
            }
            Err(e) => {
                tracing::debug!(client = %session.client, error = %e, "upgrade token refused");
                let refusal = match e {
                    HubError::Auth(e) => Refusal::Auth(e),
                    other => Refusal::Denied(other.to_string()),
                };
                session.set_phase(Phase::Refused(refusal));
                close_soon(&session.peer);
            }
        },
        Preauth::None if hub.inner.auth.anonymous.is_none() => {
            session.set_phase(Phase::Unauthenticated);
        }
        Preauth::None => {
            let _ = establish(hub, session, None).await;
        }
    }
}

/// Makes the session ready as `identity` (or anonymous) once `on_connect`
/// accepts it; if it refuses, the connection closes.
pub(crate) async fn establish(
    hub: &Hub,
    session: &Session,
    identity: Option<Identity>,
) -> Result<Arc<Principal>, HubError> {
    let principal = Arc::new(hub.principal(session, identity));
    session.state().principal = Some(principal.clone());
    if let Some(hooks) = &hub.inner.hooks {
        let ctx = session.context(hub, &principal);
        if let Err(denied) = hooks.on_connect(&ctx).await {
            tracing::debug!(client = %session.client, reason = %denied, "on_connect refused the connection");
            session.set_phase(Phase::Refused(Refusal::Denied(denied.reason().to_owned())));
            close_soon(&session.peer);
            return Err(HubError::Denied(denied.reason().to_owned()));
        }
    }
    session.state().established = true;
    session.set_phase(Phase::Ready(principal.clone()));
    Ok(principal)
}

/// Waits for the connection to close, closing it first if its identity
/// expires (unless a refreshed token pushed the expiry back).
async fn watch_expiry(
    hub: &Hub,
    session: &Session,
    mut closed: std::pin::Pin<&mut impl Future<Output = CloseReason>>,
) -> CloseReason {
    loop {
        let changed = session.phase_changed();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let deadline = session.principal().and_then(|p| p.expires());
        let expiry = async {
            match deadline {
                Some(t) => {
                    let left = t
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    // Boxed: a timer is large, and most sessions have no
                    // deadline but wait here all their life.
                    Box::pin(tokio::time::sleep(left)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            reason = &mut closed => return reason,
            // A refreshed token: a new deadline.
            () = changed => {}
            () = expiry => {
                Box::pin(expire(hub, session)).await;
                return closed.await;
            }
        }
    }
}

/// The identity expired: every subscription ends with `{"unsubscribed":
/// "token expired"}`, requests get `token expired`, and the connection is
/// closed.
async fn expire(hub: &Hub, session: &Session) {
    tracing::info!(client = %session.client, "identity expired: closing the connection");
    session.set_phase(Phase::Expired);
    leave_all(
        hub,
        session,
        LeaveReason::Expired,
        Some("token expired"),
        false,
    )
    .await;
    close_soon(&session.peer);
}

/// The connection closed: remove everything the session had.
async fn end(hub: &Hub, session: &Session, reason: &CloseReason) {
    let ctx = session.last_context(hub);
    session.set_phase(Phase::Closed);
    leave_all(hub, session, LeaveReason::Disconnected, None, true).await;
    hub.forget(session);
    let established = session.state().established;
    tracing::debug!(client = %session.client, %reason, "session ended");
    if established && let Some(hooks) = &hub.inner.hooks {
        hooks.on_disconnect(&ctx, reason).await;
    }
}

/// Ends every subscription of the session (and, with `close`, lets it
/// have no more).
async fn leave_all(
    hub: &Hub,
    session: &Session,
    reason: LeaveReason,
    notice: Option<&str>,
    close: bool,
) {
    let _ops = session.ops.lock().await;
    let ctx = session.last_context(hub);
    let subscriptions = {
        let mut st = session.state();
        st.closed |= close;
        std::mem::take(&mut st.subscriptions)
    };
    for (channel, sub) in subscriptions {
        end_subscription(hub, session, &ctx, &channel, sub, reason, notice).await;
    }
}

/// Subscribes the session to `channel`. The caller checked permissions
/// and asked the hooks.
pub(crate) async fn join(
    hub: &Hub,
    session: &Session,
    ctx: &ClientContext,
    channel: &str,
    since: Option<StreamPosition>,
    presence: bool,
    events: bool,
) -> Result<SubscribeOut, HubError> {
    let _ops = session.ops.lock().await;
    if matches!(
        session.phase(),
        Phase::Refused(_) | Phase::Expired | Phase::Closed
    ) {
        // Closing: a server-side join must not outlive it.
        return Err(HubError::Closed);
    }
    let key: Arc<str> = channel.into();
    {
        let mut st = session.state();
        if st.closed {
            return Err(HubError::Closed);
        }
        if st.subscriptions.contains_key(channel) {
            return Err(HubError::AlreadySubscribed(channel.to_owned()));
        }
        let max = hub.inner.limits.max_subscriptions;
        if st.subscriptions.len() >= max {
            return Err(HubError::TooManySubscriptions(max));
        }
        // Recorded first: if this request is dropped half-way (its
        // connection closed), the session's cleanup still undoes it all.
        let presence = presence.then(|| ctx.info.clone());
        st.subscriptions
            .insert(key.clone(), Subscription { presence });
    }
    let subscriber = NewSubscriber {
        session: session.id,
        client: session.client.clone(),
        peer: session.peer.clone(),
        events,
    };
    let joined = async {
        let out = hub.inner.node.subscribe(subscriber, channel, since).await?;
        if presence {
            presence::join(hub, channel, &ctx.info).await?;
        }
        Ok::<_, HubError>(out)
    }
    .await;
    match joined {
        Ok(out) => {
            if let Some(hooks) = &hub.inner.hooks {
                hooks.on_join(ctx, channel).await;
            }
            Ok(out)
        }
        Err(e) => {
            let sub = session.state().subscriptions.remove(channel);
            if let Some(Subscription {
                presence: Some(info),
            }) = sub
            {
                presence::leave(hub, channel, &info).await;
            }
            hub.inner.node.leave(session.id, channel, None).await;
            Err(e)
        }
    }
}

/// Ends the session's subscription to `channel`, if it has one.
pub(crate) async fn part(
    hub: &Hub,
    session: &Session,
    channel: &str,
    reason: LeaveReason,
    notice: Option<&str>,
) -> bool {
    let _ops = session.ops.lock().await;
    let Some(sub) = session.state().subscriptions.remove(channel) else {
        return false;
    };
    let ctx = session.last_context(hub);
    end_subscription(hub, session, &ctx, channel, sub, reason, notice).await;
    true
}

/// Ends the subscriptions the principal may no longer read (after a
/// token refresh).
pub(crate) async fn revoke_unreadable(hub: &Hub, session: &Session, principal: &Principal) {
    let _ops = session.ops.lock().await;
    let revoked: Vec<_> = {
        let mut st = session.state();
        let gone: Vec<Arc<str>> = st
            .subscriptions
            .keys()
            .filter(|c| !principal.permissions.allows(c, crate::auth::Access::READ))
            .cloned()
            .collect();
        gone.into_iter()
            .filter_map(|c| st.subscriptions.remove(&c).map(|s| (c, s)))
            .collect()
    };
    let ctx = session.context(hub, principal);
    for (channel, sub) in revoked {
        end_subscription(
            hub,
            session,
            &ctx,
            &channel,
            sub,
            LeaveReason::Revoked,
            Some("permission revoked"),
        )
        .await;
    }
}

async fn end_subscription(
    hub: &Hub,
    session: &Session,
    ctx: &ClientContext,
    channel: &str,
    sub: Subscription,
    reason: LeaveReason,
    notice: Option<&str>,
) {
    hub.inner
        .node
        .leave(session.id, channel, notice.map(wire::unsubscribed))
        .await;
    if let Some(info) = &sub.presence {
        presence::leave(hub, channel, info).await;
    }
    if let Some(hooks) = &hub.inner.hooks {
        hooks.on_leave(ctx, channel, reason).await;
    }
}

/// Closes the connection gracefully, without waiting: requests in flight
/// get their (error) results first.
pub(crate) fn close_soon(peer: &Peer) {
    let peer = peer.clone();
    tokio::spawn(async move {
        peer.close().await;
    });
}
