//! `gotalk serve --hub`: the options that put a [`Hub`] on the server.

use std::{path::PathBuf, time::Duration};

use clap::Args;
use gotalk_hub::{
    Hub, TokenSource,
    auth::{JwtVerifier, Permissions, StaticTokens},
    broker::{
        HistoryOptions,
        redis::{RedisBroker, RedisBrokerOptions},
    },
};

use crate::text::parse_duration;

pub(crate) const HUB_HELP: &str = "\
--hub adds publish/subscribe (the `subscribe`, `unsubscribe`, `publish`, `presence`,
`history` and `auth` operations of docs/hub.md) to the served operations. A delivery on
channel C reaches its subscribers as a notification named C.
Auth: --jwt-secret (HMAC-signed JWTs, see `gotalk token`) or --tokens FILE (lines of
`TOKEN USER PATTERN=LEVELS ...`). Clients send the token in an `auth` request, or over
WebSocket as `Authorization: Bearer TOKEN` or the query parameter `token`. Without auth
every connection may do everything; with it, unauthenticated connections get what
--anonymous grants (nothing by default).
Scale-out: every `serve --hub --redis URL` on one Redis serves the same channels: a
publication on one reaches subscribers on all, in order; presence and history are shared.
If Redis goes away, publishing fails with `broker unavailable`, and each server reconnects
and resubscribes by itself.
History: --history N keeps the last N publications of every channel (for `subscribe` with
`since` and `history`), for --history-ttl after the last one.";

/// The hub options of `gotalk serve`.
#[derive(Args, Clone, Default)]
pub(crate) struct HubArgs {
    /// Serve publish/subscribe channels, presence and history (see below)
    #[arg(long)]
    pub(crate) hub: bool,
    /// With --hub, share channels, history and presence with every other `serve --hub` on
    /// this Redis (redis://HOST:PORT[/DB]); without it, the hub lives in this process
    #[arg(long, value_name = "URL", requires = "hub")]
    redis: Option<String>,
    /// With --redis, the prefix of this hub's keys (hubs sharing one Redis need their own)
    #[arg(
        long,
        default_value = "gotalk-hub:",
        value_name = "PREFIX",
        requires = "redis"
    )]
    redis_prefix: String,
    /// With --redis, run the Redis connections on a thread of their own (one more thread
    /// than --threads): Redis's answers are then read at once however busy the node is
    #[arg(long, requires = "redis")]
    redis_thread: bool,
    /// With --hub, verify tokens as JWTs signed with this HMAC secret (HS256)
    #[arg(
        long,
        value_name = "SECRET",
        requires = "hub",
        conflicts_with = "tokens"
    )]
    jwt_secret: Option<String>,
    /// With --hub, accept the tokens listed in FILE (`TOKEN USER PATTERN=LEVELS ...` per line)
    #[arg(long, value_name = "FILE", requires = "hub")]
    tokens: Option<PathBuf>,
    /// With --hub and auth, what connections that did not authenticate may do, e.g.
    /// `public:*=read` (space-separated PATTERN=LEVELS rules)
    #[arg(long, value_name = "RULES", requires = "hub")]
    anonymous: Option<String>,
    /// With --hub, publications kept per channel for resume and `history` (0: none)
    #[arg(long, default_value_t = 100, value_name = "N", requires = "hub")]
    history: usize,
    /// With --hub, how long a channel's history lives after its last publication
    #[arg(long, default_value = "5m", value_parser = parse_duration, value_name = "DURATION", requires = "hub")]
    history_ttl: Duration,
    /// With --hub, let a publication wait up to this long in each subscriber's write queue,
    /// to go out in one write with the others that reach it meanwhile (e.g. 10ms): far less
    /// CPU per delivery under heavy fan-out, for that much latency (default: none)
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION", requires = "hub")]
    write_delay: Duration,
    /// With --hub, hold clients' publish answers until the connections they woke have written,
    /// while work waits longer than this in the node's run queue (e.g. 10ms): publishers then
    /// slow to the node's pace instead of queueing ahead of it (default: off)
    #[arg(long, default_value = "0s", value_parser = parse_duration, value_name = "DURATION", requires = "hub")]
    publish_pacing: Duration,
}

impl HubArgs {
    /// The hub these options describe, or `None` without `--hub`; the error
    /// says which option is wrong.
    pub(crate) async fn build(&self) -> Result<Option<Hub>, String> {
        if !self.hub {
            return Ok(None);
        }
        let mut builder = Hub::builder();
        if let Some(url) = &self.redis {
            let options = RedisBrokerOptions::new()
                .with_prefix(self.redis_prefix.clone())
                .with_dedicated_thread(self.redis_thread);
            let broker = RedisBroker::with_options(url, options)
                .map_err(|e| format!("--redis {url}: {e}"))?;
            builder = builder.broker(broker);
        }
        builder = builder
            .write_delay(self.write_delay)
            .publish_pacing(self.publish_pacing)
            // Authorization: Bearer, or ?token= (browsers cannot set headers).
            .token_source(TokenSource::default())
            .history(
                "*",
                HistoryOptions {
                    size: self.history,
                    ttl: self.history_ttl,
                },
            );
        if let Some(secret) = &self.jwt_secret {
            let verifier = JwtVerifier::new(secret).map_err(|e| format!("--jwt-secret: {e}"))?;
            builder = builder.verifier(verifier);
        }
        if let Some(path) = &self.tokens {
            let tokens = StaticTokens::from_file(path).map_err(|e| format!("--tokens: {e}"))?;
            builder = builder.verifier(tokens);
        }
        // Without it, a hub with a verifier answers `unauthenticated` to
        // connections that did not authenticate.
        if let Some(rules) = &self.anonymous {
            let permissions: Permissions = rules
                .parse()
                .map_err(|e| format!("--anonymous {rules:?}: {e}"))?;
            builder = builder.anonymous(permissions);
        }
        builder
            .build()
            .await
            .map(Some)
            .map_err(|e| format!("cannot start the hub: {e}"))
    }
}
