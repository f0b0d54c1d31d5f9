//! The hub's operations, as gotalk request handlers (docs/hub.md).

use std::{future::Future, sync::Arc, time::UNIX_EPOCH};

use bytes::Bytes;
use gotalk_peer::{Context, HandlerError, Handlers};

use crate::{
    Hub, HubError,
    auth::Access,
    broker::{HistoryQuery, PublishOptions},
    client::{Phase, Session, SessionRef},
    hooks::require,
    lifecycle, wire,
};

pub(crate) fn install(hub: &Hub, app: Handlers) -> Handlers {
    let app = op(app, hub, "auth", auth);
    let app = op(app, hub, "subscribe", subscribe);
    let app = op(app, hub, "unsubscribe", unsubscribe);
    let app = op(app, hub, "publish", publish);
    let app = op(app, hub, "presence", presence);
    op(app, hub, "history", history)
}

fn op<F, Fut>(handlers: Handlers, hub: &Hub, name: &str, f: F) -> Handlers
where
    F: Fn(Hub, Context, Bytes) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Bytes, HubError>> + Send + 'static,
{
    let hub = hub.clone();
    handlers.buffer(name, move |ctx, payload| {
        let fut = f(hub.clone(), ctx, payload);
        async move { fut.await.map_err(HandlerError::from) }
    })
}

fn session_of(ctx: &Context) -> Result<Arc<Session>, HubError> {
    let session = ctx.user_data::<SessionRef>().ok_or(HubError::NoSession)?;
    session.0.upgrade().ok_or(HubError::Closed)
}

async fn auth(hub: Hub, ctx: Context, payload: Bytes) -> Result<Bytes, HubError> {
    let req: wire::AuthIn = wire::parse(&payload)?;
    let session = session_of(&ctx)?;
    // Let the upgrade's own token settle first; a session refused or
    // closed for good stays so.
    match session.ready().await {
        Ok(_) | Err(HubError::Unauthenticated) => {}
        Err(e) => return Err(e),
    }
    let identity = hub.verify(&req.token).await?;
    // One `auth` at a time per connection. Not the `ops` lock: an
    // `on_connect` hook may join channels (`Hub::subscribe_client`).
    let _auth = session.auth.lock().await;
    let principal = match session.phase() {
        Phase::Unauthenticated => lifecycle::establish(&hub, &session, Some(identity)).await?,
        Phase::Ready(current) => {
            if current.identity.is_some() && current.info.user != identity.user {
                return Err(crate::auth::AuthError::Invalid(
                    "the token is for another user".into(),
                )
                .into());
            }
            let principal = Arc::new(hub.principal(&session, Some(identity)));
            session.state().principal = Some(principal.clone());
            session.set_phase(Phase::Ready(principal.clone()));
            lifecycle::revoke_unreadable(&hub, &session, &principal).await;
            principal
        }
        _ => return Err(session.ready().await.err().unwrap_or(HubError::Closed)),
    };
    let expires = principal
        .expires()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_secs());
    Ok(wire::encode(&wire::AuthOut {
        user: &principal.info.user,
        client: &principal.info.client,
        expires,
    }))
}

async fn subscribe(hub: Hub, ctx: Context, payload: Bytes) -> Result<Bytes, HubError> {
    let req: wire::SubscribeIn = wire::parse(&payload)?;
    let session = session_of(&ctx)?;
    let principal = session.ready().await?;
    let channel = req.channel.as_str();
    hub.check_channel(channel)?;
    let level = if req.presence || req.events {
        Access::READ.union(Access::PRESENCE)
    } else {
        Access::READ
    };
    require(&principal.permissions, channel, level)?;
    let client = session.context(&hub, &principal);
    if let Some(hooks) = &hub.inner.hooks {
        hooks
            .on_subscribe(&client, channel)
            .await
            .map_err(|d| HubError::Denied(d.reason().to_owned()))?;
    }
    let out = lifecycle::join(
        &hub,
        &session,
        &client,
        channel,
        req.since,
        req.presence,
        req.events,
    )
    .await?;
    Ok(out.encode())
}

async fn unsubscribe(hub: Hub, ctx: Context, payload: Bytes) -> Result<Bytes, HubError> {
    let req: wire::ChannelIn = wire::parse(&payload)?;
    let session = session_of(&ctx)?;
    session.ready().await?;
    lifecycle::part(
        &hub,
        &session,
        &req.channel,
        crate::hooks::LeaveReason::Unsubscribed,
        None,
    )
    .await;
    Ok(Bytes::from_static(b"{}"))
}

async fn publish(hub: Hub, ctx: Context, payload: Bytes) -> Result<Bytes, HubError> {
    let req: wire::PublishIn<'_> = wire::parse(&payload)?;
    let session = session_of(&ctx)?;
    let principal = session.ready().await?;
    let channel = req.channel.as_str();
    hub.check_channel(channel)?;
    require(&principal.permissions, channel, Access::WRITE)?;
    // The data as it came, a slice of the request: no copy.
    let mut data = payload.slice_ref(req.data.get().as_bytes());
    if let Some(hooks) = &hub.inner.hooks {
        let client = session.context(&hub, &principal);
        data = hooks
            .on_publish(&client, channel, data)
            .await
            .map_err(|d| HubError::Denied(d.reason().to_owned()))?;
        wire::check_json(&data)?;
    }
    let node = &hub.inner.node;
    let excluded = req.others && node.exclude(session.id, channel, &data);
    let options = PublishOptions {
        history: hub.inner.history.for_channel(channel),
        info: Some(principal.info.clone()),
    };
    let published = hub
        .inner
        .broker
        .publish(channel, data.clone(), &options)
        .await;
    if published.is_err() && excluded {
        node.unexclude(session.id, channel, &data);
    }
    let position = published?;
    if let Some(pacing) = &hub.inner.pacing {
        let fanned_out = node.fanned_out(channel, &position, pacing.fan_out_limit());
        pacing.before_answer(&ctx, fanned_out).await;
    }
    Ok(wire::encode(&wire::PositionOut {
        offset: position.offset,
        epoch: &position.epoch,
    }))
}

async fn presence(hub: Hub, ctx: Context, payload: Bytes) -> Result<Bytes, HubError> {
    let req: wire::ChannelIn = wire::parse(&payload)?;
    let session = session_of(&ctx)?;
    let principal = session.ready().await?;
    hub.check_channel(&req.channel)?;
    require(&principal.permissions, &req.channel, Access::PRESENCE)?;
    let clients = hub.inner.broker.presence(&req.channel).await?;
    Ok(wire::encode(&wire::PresenceOut { clients: &clients }))
}

async fn history(hub: Hub, ctx: Context, payload: Bytes) -> Result<Bytes, HubError> {
    let req: wire::HistoryIn = wire::parse(&payload)?;
    let session = session_of(&ctx)?;
    let principal = session.ready().await?;
    hub.check_channel(&req.channel)?;
    require(&principal.permissions, &req.channel, Access::READ)?;
    let max = hub.inner.limits.max_history;
    let query = HistoryQuery {
        since: req.since,
        limit: req.limit.unwrap_or(max).min(max),
    };
    let history = hub.inner.broker.history(&req.channel, query).await?;
    Ok(wire::history(&history))
}
