//! The commands: publish, history and presence on the command connection,
//! each bounded by the operation timeout.

use std::{future::Future, time::Duration};

use ::redis::{
    RedisError, RedisResult, Value,
    aio::{ConnectionManager, ConnectionManagerConfig},
};

use super::{
    Inner,
    codec::{self, ReplyError},
    lock, random,
};
use tokio::time::{Instant, timeout_at};

use crate::broker::{
    BrokerError, ClientInfo, Delivery, History, HistoryQuery, Publication, PublishOptions,
    StreamPosition,
};

/// A new epoch: 48 random bits in hex. It only has to differ from the
/// channel's previous epochs.
fn new_epoch() -> String {
    format!("{:012x}", random() >> 16)
}

/// Milliseconds for PEXPIRE: at least 1 (0 would delete the key), at most
/// about 31,000 years (Redis refuses expiry times that overflow).
fn millis(duration: Duration) -> u64 {
    const MAX: u64 = 1_000_000_000_000_000;
    u64::try_from(duration.as_millis()).map_or(MAX, |ms| ms.clamp(1, MAX))
}

/// Whether retrying an idempotent command may help: the connection it
/// went to was dead (the connection manager reconnects on such errors).
fn connection_lost(error: &RedisError) -> bool {
    error.is_io_error() || error.is_connection_dropped() || error.is_unrecoverable_error()
}

fn broker_error(what: &str, error: RedisError) -> BrokerError {
    match error.kind() {
        ::redis::ErrorKind::Parse | ::redis::ErrorKind::UnexpectedReturnType => {
            BrokerError::Protocol(format!("{what}: {error}"))
        }
        _ => BrokerError::Unavailable(format!("{what}: {error}")),
    }
}

fn reply_error(what: &str, error: ReplyError) -> BrokerError {
    BrokerError::Protocol(format!("{what}: {error}"))
}

impl Inner {
    fn manager(&self) -> Result<ConnectionManager, BrokerError> {
        let mut slot = lock(&self.manager);
        if let Some(manager) = &*slot {
            return Ok(manager.clone());
        }
        // No retries inside the manager: while Redis is down every command
        // fails at once (and makes the manager try again), instead of
        // waiting out a backoff.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.options.connect_timeout()))
            .set_response_timeout(Some(self.options.operation_timeout()))
            .set_number_of_retries(0);
        let manager = ConnectionManager::new_lazy_with_config(self.client.clone(), config)
            .map_err(|e| broker_error("connecting", e))?;
        *slot = Some(manager.clone());
        Ok(manager)
    }

    /// Runs `op` on the command connection within the operation timeout;
    /// with `retry`, once more if the connection turned out to be dead.
    async fn run<T, F, Fut>(&self, what: &str, retry: bool, op: F) -> Result<T, BrokerError>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let limit = self.options.operation_timeout();
        let deadline = Instant::now() + limit;
        let manager = self.manager()?;
        let attempts = async {
            match op(manager.clone()).await {
                Err(error) if retry && connection_lost(&error) => {
                    tracing::debug!(%error, "redis broker: {what}: retrying on a new connection");
                    op(manager).await
                }
                result => result,
            }
        };
        match timeout_at(deadline, attempts).await {
            Ok(result) => result.map_err(|e| broker_error(what, e)),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "{what}: no answer from Redis within {limit:?}"
            ))),
        }
    }

    pub(super) async fn publish(
        &self,
        channel: &str,
        data: &[u8],
        options: &PublishOptions,
    ) -> Result<StreamPosition, BrokerError> {
        const WHAT: &str = "publish";
        let history = options.history;
        let ttl = millis(history.ttl);
        let meta_ttl = ttl.max(millis(self.options.position_ttl()));
        let (with_info, user, client) = match &options.info {
            Some(info) => ("1", info.user.as_str(), info.client.as_str()),
            None => ("0", "", ""),
        };
        let mut invocation = self.scripts.publish.prepare_invoke();
        invocation
            .key(self.keys.meta(channel))
            .key(self.keys.stream(channel))
            .arg(self.keys.pubsub(channel))
            .arg(data)
            .arg(new_epoch())
            // Redis counts in signed 64 bits.
            .arg(history.size.min(i64::MAX as usize))
            .arg(ttl)
            .arg(meta_ttl)
            .arg(with_info)
            .arg(user)
            .arg(client);
        let invocation = &invocation;
        // Not retried: the script may have run before the connection broke.
        let reply: Value = self
            .run(WHAT, false, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let mut reply = codec::array(reply, WHAT)
            .map_err(|e| reply_error(WHAT, e))?
            .into_iter();
        let (Some(offset), Some(epoch), None) = (reply.next(), reply.next(), reply.next()) else {
            return Err(reply_error(WHAT, ReplyError("publish reply")));
        };
        Ok(StreamPosition {
            offset: codec::integer(offset, "offset").map_err(|e| reply_error(WHAT, e))?,
            epoch: codec::string(epoch, "epoch").map_err(|e| reply_error(WHAT, e))?,
        })
    }

    pub(super) async fn history(
        &self,
        channel: &str,
        query: HistoryQuery,
    ) -> Result<History, BrokerError> {
        const WHAT: &str = "history";
        let count = |n: usize| n.min(i64::MAX as usize).to_string();
        let (mode, first, wanted) = match &query.since {
            // One entry at least, to see whether the one after `since` is
            // still there.
            Some(since) => (
                "after",
                since.offset.saturating_add(1).to_string(),
                count(query.limit.max(1)),
            ),
            None => ("latest", String::new(), count(query.limit)),
        };
        let mut invocation = self.scripts.history.prepare_invoke();
        invocation
            .key(self.keys.meta(channel))
            .key(self.keys.stream(channel))
            .arg(new_epoch())
            .arg(millis(self.options.position_ttl()))
            .arg(mode)
            .arg(first)
            .arg(wanted);
        let invocation = &invocation;
        let reply: Value = self
            .run(WHAT, true, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        let (position, mut publications) =
            parse_history(reply).map_err(|e| reply_error(WHAT, e))?;
        let complete = match &query.since {
            None => {
                publications.reverse();
                true
            }
            Some(since) if since.epoch != position.epoch || since.offset > position.offset => {
                publications.clear();
                false
            }
            Some(since) => {
                since.offset == position.offset
                    || publications
                        .first()
                        .is_some_and(|p| p.offset == since.offset + 1)
            }
        };
        publications.truncate(query.limit);
        Ok(History {
            publications,
            position,
            complete,
        })
    }

    pub(super) async fn add_presence(
        &self,
        channel: &str,
        info: &ClientInfo,
        ttl: Duration,
    ) -> Result<(), BrokerError> {
        let mut invocation = self.scripts.add_presence.prepare_invoke();
        invocation
            .key(self.keys.presence(channel))
            .key(self.keys.presence_expiry(channel))
            .arg(&info.client)
            .arg(&info.user)
            .arg(millis(ttl));
        let invocation = &invocation;
        self.run("add presence", true, |mut c| async move {
            invocation.invoke_async::<Value>(&mut c).await
        })
        .await
        .map(drop)
    }

    pub(super) async fn remove_presence(
        &self,
        channel: &str,
        client: &str,
    ) -> Result<(), BrokerError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .hdel(self.keys.presence(channel), client)
            .ignore()
            .zrem(self.keys.presence_expiry(channel), client)
            .ignore();
        let pipe = &pipe;
        self.run("remove presence", true, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
    }

    pub(super) async fn presence(&self, channel: &str) -> Result<Vec<ClientInfo>, BrokerError> {
        const WHAT: &str = "presence";
        let mut invocation = self.scripts.presence.prepare_invoke();
        invocation
            .key(self.keys.presence(channel))
            .key(self.keys.presence_expiry(channel));
        let invocation = &invocation;
        let reply: Value = self
            .run(WHAT, true, |mut c| async move {
                invocation.invoke_async(&mut c).await
            })
            .await?;
        parse_presence(reply).map_err(|e| reply_error(WHAT, e))
    }

    pub(super) async fn publish_presence(
        &self,
        channel: &str,
        event: &Delivery,
    ) -> Result<(), BrokerError> {
        let Some(message) = codec::encode_presence(event) else {
            return Err(BrokerError::Protocol(
                "publish_presence takes a join or a leave, not a publication".to_owned(),
            ));
        };
        let mut cmd = ::redis::cmd("PUBLISH");
        cmd.arg(self.keys.pubsub(channel)).arg(message);
        let cmd = &cmd;
        self.run("publish presence", false, |mut c| async move {
            cmd.query_async::<()>(&mut c).await
        })
        .await
    }

    /// Makes sure the command connection works again after Redis came
    /// back, so the hub's recovery (history reads after `resubscribed`)
    /// does not trip over the connection that died.
    pub(super) async fn check_commands(&self) {
        let result = self
            .run("ping", true, |mut c| async move {
                ::redis::cmd("PING").query_async::<()>(&mut c).await
            })
            .await;
        if let Err(error) = result {
            tracing::warn!(%error, "redis broker: command connection not back yet");
        }
    }
}

/// `{epoch, offset, entries}` from the history script.
fn parse_history(reply: Value) -> Result<(StreamPosition, Vec<Publication>), ReplyError> {
    const WHAT: &str = "history reply";
    let mut reply = codec::array(reply, WHAT)?.into_iter();
    let (Some(epoch), Some(offset), Some(entries), None) =
        (reply.next(), reply.next(), reply.next(), reply.next())
    else {
        return Err(ReplyError(WHAT));
    };
    let position = StreamPosition {
        offset: codec::integer(offset, WHAT)?,
        epoch: codec::string(epoch, WHAT)?,
    };
    let publications = codec::array(entries, WHAT)?
        .into_iter()
        .map(codec::stream_entry)
        .collect::<Result<_, _>>()?;
    Ok((position, publications))
}

/// `{clients, users}` from the presence script.
fn parse_presence(reply: Value) -> Result<Vec<ClientInfo>, ReplyError> {
    const WHAT: &str = "presence reply";
    let mut reply = codec::array(reply, WHAT)?.into_iter();
    let (Some(clients), Some(users), None) = (reply.next(), reply.next(), reply.next()) else {
        return Err(ReplyError(WHAT));
    };
    let (clients, users) = (codec::array(clients, WHAT)?, codec::array(users, WHAT)?);
    if clients.len() != users.len() {
        return Err(ReplyError(WHAT));
    }
    let mut entries = Vec::with_capacity(clients.len());
    for (client, user) in clients.into_iter().zip(users) {
        // An entry whose hash field is gone (a half-expired pair) is not
        // listed.
        if user == Value::Nil {
            continue;
        }
        entries.push(ClientInfo {
            user: codec::string(user, WHAT)?,
            client: codec::string(client, WHAT)?,
        });
    }
    Ok(entries)
}
