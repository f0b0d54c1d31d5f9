//! Presence: entering and leaving a channel's presence, with join and
//! leave events, and keeping live entries from expiring.

use std::sync::{Arc, Weak};

use crate::{
    Hub, HubError,
    broker::{ClientInfo, Delivery},
    hub::HubInner,
};

/// Enters `info` in `channel`'s presence and announces it.
pub(crate) async fn join(hub: &Hub, channel: &str, info: &ClientInfo) -> Result<(), HubError> {
    let broker = &hub.inner.broker;
    broker
        .add_presence(channel, info, hub.inner.limits.presence_ttl)
        .await?;
    broker
        .publish_presence(channel, &Delivery::Join(info.clone()))
        .await?;
    Ok(())
}

/// Removes `info` from `channel`'s presence and announces it. Failures
/// are logged: the entry then expires by itself within the presence ttl.
pub(crate) async fn leave(hub: &Hub, channel: &str, info: &ClientInfo) {
    let broker = &hub.inner.broker;
    if let Err(e) = broker.remove_presence(channel, &info.client).await {
        tracing::warn!(channel, client = %info.client, error = %e, "presence removal failed; the entry will expire");
    }
    if let Err(e) = broker
        .publish_presence(channel, &Delivery::Leave(info.clone()))
        .await
    {
        tracing::warn!(channel, client = %info.client, error = %e, "leave event lost");
    }
}

/// Refreshes the presence entries of this node's sessions every
/// `presence_refresh`, until the hub is dropped.
pub(crate) async fn refresh(hub: Weak<HubInner>) {
    let Some(period) = hub.upgrade().map(|h| h.limits.presence_refresh) else {
        return;
    };
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = hub.upgrade() else { return };
        let sessions: Vec<_> = inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        let ttl = inner.limits.presence_ttl;
        for session in sessions {
            // Under the session's `ops` lock, which leaving also takes: a
            // refresh never re-adds an entry that was just removed.
            let _ops = session.ops.lock().await;
            let entries: Vec<(Arc<str>, ClientInfo)> = session
                .state()
                .subscriptions
                .iter()
                .filter_map(|(c, sub)| Some((c.clone(), sub.presence.clone()?)))
                .collect();
            for (channel, info) in entries {
                if let Err(e) = inner.broker.add_presence(&channel, &info, ttl).await {
                    tracing::warn!(%channel, error = %e, "presence refresh failed");
                }
            }
        }
    }
}
