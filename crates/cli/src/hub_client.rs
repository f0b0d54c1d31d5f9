//! `subscribe`, `publish`, `presence`, `history` and `token`: the hub's
//! operations (docs/hub.md) from the command line, against any
//! `gotalk serve --hub` (or another server with a hub).

use std::{pin::pin, time::Duration};

use clap::Args;
use gotalk_hub::auth::{Claims, JwtSigner, Permissions};
use gotalk_peer::{Config, Error, Peer};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::{
    addr::{Address, TrustArgs},
    client::{connect_with, describe, exit_code, write_stdout},
    exit, ops,
    signal::shutdown_signal,
    text::parse_duration,
};

pub(crate) const SUBSCRIBE_HELP: &str = "\
Prints every delivery on CHANNEL as one line of JSON, as the hub sends it: a publication
{\"offset\":N,\"epoch\":\"E\",\"data\":...,\"info\":{...}}, or with --events {\"join\":{...}} and
{\"leave\":{...}}. --data prints only a publication's data. Publications recovered by
--since come first. `subscribed to CHANNEL at OFFSET:EPOCH` goes to stderr once the
subscription is live.
--reconnect: when the connection drops, connects again (backing off up to 5 s) and
resubscribes from the last publication printed, so nothing is missed or printed twice
while the server keeps the channel's history (otherwise it says what was lost).
Exit codes: 0 on Ctrl-C or after --count publications; 1 the hub refused (error result on
stderr); 2 the connection failed or closed (without --reconnect), or invalid usage.";

pub(crate) const PUBLISH_HELP: &str = "\
DATA is JSON (a string is quoted: '\"hello\"'); with --text it is taken as a string. Prints
the publication's position as {\"offset\":N,\"epoch\":\"E\"}.
Exit codes: 0 published; 1 the hub refused (error result on stderr, e.g. forbidden or
broker unavailable); 2 connection error or invalid usage.";

pub(crate) const TOKEN_HELP: &str = "\
Prints an HS256-signed JWT for `gotalk serve --hub --jwt-secret SECRET`: `sub` is --user,
`exp` is now + --ttl, and each --channel PATTERN=LEVELS (levels: read, write, presence, all;
PATTERN is a channel name or a prefix ending in *) becomes the `channels` claim.
Example: gotalk token --secret s3cret --user ann --channel 'chat:*=read,write,presence'";

/// How to reach the hub, and as whom: shared by the hub commands.
#[derive(Args)]
pub(crate) struct HubConnArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://host:port/path or wss://…
    addr: Address,
    /// Authenticate with this token first (the hub's `auth` request)
    #[arg(
        long,
        env = "GOTALK_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// Print every frame in and out to stderr
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    trust: TrustArgs,
}

/// Arguments of `gotalk subscribe`.
#[derive(Args)]
pub(crate) struct SubscribeArgs {
    #[command(flatten)]
    conn: HubConnArgs,
    /// The channel
    channel: String,
    /// Resume after this position (OFFSET:EPOCH, as printed by publish or subscribe)
    #[arg(long, value_name = "OFFSET:EPOCH", value_parser = parse_position)]
    since: Option<Position>,
    /// Also print join and leave events of the channel's presence
    #[arg(long)]
    events: bool,
    /// Enter the channel's presence while subscribed
    #[arg(long)]
    presence: bool,
    /// Print only each publication's data
    #[arg(long)]
    data: bool,
    /// Exit after this many publications
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Reconnect and resume when the connection drops
    #[arg(long)]
    reconnect: bool,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk publish`.
#[derive(Args)]
pub(crate) struct PublishArgs {
    #[command(flatten)]
    conn: HubConnArgs,
    /// The channel
    channel: String,
    /// The publication: JSON (or text with --text); `-` reads it from stdin
    data: String,
    /// Take DATA as a string, not JSON
    #[arg(long)]
    text: bool,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk presence`.
#[derive(Args)]
pub(crate) struct PresenceArgs {
    #[command(flatten)]
    conn: HubConnArgs,
    /// The channel
    channel: String,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk history`.
#[derive(Args)]
pub(crate) struct HistoryArgs {
    #[command(flatten)]
    conn: HubConnArgs,
    /// The channel
    channel: String,
    /// Only publications after this position (OFFSET:EPOCH)
    #[arg(long, value_name = "OFFSET:EPOCH", value_parser = parse_position)]
    since: Option<Position>,
    /// At most this many publications
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk token`.
#[derive(Args)]
pub(crate) struct TokenArgs {
    /// The HMAC secret of `serve --jwt-secret`
    #[arg(
        long,
        env = "GOTALK_JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    secret: String,
    /// The user (`sub`)
    #[arg(long, value_name = "NAME")]
    user: String,
    /// Access to the channels matching PATTERN (repeatable), e.g. 'chat:*=read,write'
    #[arg(long = "channel", value_name = "PATTERN=LEVELS")]
    channels: Vec<String>,
    /// A grant for the application's own operations (repeatable; the `scope` claim),
    /// checked by `gotalk_peer::middleware::Authorize::grant`, e.g. 'admin'
    #[arg(long = "scope", value_name = "GRANT", value_parser = parse_scope)]
    scopes: Vec<String>,
    /// How long the token is valid
    #[arg(long, default_value = "1h", value_parser = parse_duration, value_name = "DURATION")]
    ttl: Duration,
}

/// A `--scope`: one word, as the space-separated `scope` claim holds them.
fn parse_scope(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains(char::is_whitespace) {
        return Err("a scope is one non-empty word (no spaces)".into());
    }
    Ok(s.to_owned())
}

/// A position in a channel: `OFFSET:EPOCH`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Position {
    offset: u64,
    epoch: String,
}

impl Position {
    fn to_json(&self) -> Value {
        json!({"offset": self.offset, "epoch": self.epoch})
    }

    /// The position of a publication or a result that has one.
    fn of(value: &Value) -> Option<Self> {
        Some(Self {
            offset: value.get("offset")?.as_u64()?,
            epoch: value.get("epoch")?.as_str()?.to_owned(),
        })
    }
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.offset, self.epoch)
    }
}

fn parse_position(s: &str) -> Result<Position, String> {
    let (offset, epoch) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} is not OFFSET:EPOCH (e.g. 12:a1b2c3)"))?;
    let offset = offset
        .parse()
        .map_err(|_| format!("{offset:?} is not an offset (a whole number)"))?;
    if epoch.is_empty() {
        return Err(format!("{s:?} has no epoch after the colon"));
    }
    Ok(Position {
        offset,
        epoch: epoch.to_owned(),
    })
}

/// What a hub connection delivers: a notification's name and JSON payload.
type Deliveries = mpsc::UnboundedReceiver<(String, Value)>;

/// Connects (and authenticates with `--token`); notifications arrive on
/// the returned receiver.
async fn connect(args: &HubConnArgs) -> Result<(Peer, Deliveries), u8> {
    let (tx, rx) = mpsc::unbounded_channel();
    let handlers = ops::client_handlers().notification("", move |ctx, payload| {
        match serde_json::from_slice::<Value>(&payload) {
            Ok(value) => {
                let _ = tx.send((ctx.name().to_owned(), value));
            }
            Err(e) => {
                tracing::warn!(name = ctx.name(), error = %e, "a notification that is not JSON")
            }
        }
        async {}
    });
    let peer = connect_with(
        &args.addr,
        &args.trust,
        args.trace,
        handlers,
        Config::default(),
        Some(Duration::from_secs(10)),
    )
    .await?;
    if let Some(token) = &args.token {
        call(&peer, "auth", &json!({"token": token})).await?;
    }
    Ok((peer, rx))
}

/// Makes one hub request; a failure is reported on stderr as its exit code.
async fn call(peer: &Peer, op: &str, input: &Value) -> Result<Value, u8> {
    peer.request_json::<_, Value>(op, input).await.map_err(|e| {
        report(op, &e);
        exit_code(&e)
    })
}

fn report(op: &str, e: &Error) {
    eprintln!("gotalk: {op}: {}", describe(e));
}

fn print_line(value: &Value) {
    let _ = write_stdout(format!("{value}\n").as_bytes());
}

/// `gotalk subscribe`.
pub(crate) async fn subscribe(args: SubscribeArgs) -> u8 {
    let mut state = Subscription {
        position: args.since.clone(),
        printed: 0,
    };
    let mut stop = pin!(shutdown_signal());
    let mut backoff = Duration::from_millis(100);
    loop {
        let run = pin!(state.run(&args));
        let outcome = tokio::select! {
            outcome = run => outcome,
            () = &mut stop => return exit::OK,
        };
        match outcome {
            Ended::Done => return exit::OK,
            Ended::Refused(code) => return code,
            Ended::Dropped(why) if args.reconnect => {
                eprintln!("gotalk: {why}; reconnecting in {} ms", backoff.as_millis());
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = &mut stop => return exit::OK,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            Ended::Dropped(why) => {
                eprintln!("gotalk: {why}");
                return exit::TROUBLE;
            }
        }
    }
}

/// How one connection of `gotalk subscribe` ended.
enum Ended {
    /// `--count` reached.
    Done,
    /// The hub refused: the exit code.
    Refused(u8),
    /// The connection failed or closed: why.
    Dropped(String),
}

/// What `gotalk subscribe` keeps across reconnections.
struct Subscription {
    /// The last publication printed (or `--since`).
    position: Option<Position>,
    printed: u64,
}

impl Subscription {
    async fn run(&mut self, args: &SubscribeArgs) -> Ended {
        let (peer, mut deliveries) = match connect(&args.conn).await {
            Ok(c) => c,
            // Refused by the hub (auth), or could not connect: only the
            // latter is worth retrying.
            Err(code) if code == exit::FAILED => return Ended::Refused(code),
            Err(_) => return Ended::Dropped(format!("cannot reach {}", args.conn.addr)),
        };
        let mut input = json!({"channel": args.channel});
        if let Some(since) = &self.position {
            input["since"] = since.to_json();
        }
        if args.events {
            input["events"] = json!(true);
        }
        if args.presence {
            input["presence"] = json!(true);
        }
        let result = match peer.request_json::<_, Value>("subscribe", &input).await {
            Ok(r) => r,
            Err(e) if e.is_closed() => return Ended::Dropped(format!("subscribe: {e}")),
            Err(e) => {
                report("subscribe", &e);
                return Ended::Refused(exit_code(&e));
            }
        };
        if let Some(since) = &self.position
            && result.get("recovered") == Some(&Value::Bool(false))
        {
            eprintln!("gotalk: publications after {since} are no longer kept: some were missed");
            self.position = Position::of(&result);
        }
        let recovered = result
            .get("publications")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for publication in &recovered {
            if self.print(args, publication) {
                peer.close().await;
                return Ended::Done;
            }
        }
        if let Some(at) = Position::of(&result) {
            eprintln!("subscribed to {} at {at}", args.channel);
            self.position.get_or_insert(at);
        }
        if args.count == Some(self.printed) {
            peer.close().await;
            return Ended::Done;
        }
        let mut closed = pin!(peer.closed());
        loop {
            tokio::select! {
                delivery = deliveries.recv() => {
                    let Some((name, value)) = delivery else {
                        return Ended::Dropped(format!("connection closed: {}", closed.await));
                    };
                    if name != args.channel {
                        continue;
                    }
                    if let Some(ended) = self.deliver(args, &value) {
                        peer.close().await;
                        return ended;
                    }
                }
                reason = &mut closed => return Ended::Dropped(format!("connection closed: {reason}")),
            }
        }
    }

    /// Handles one notification of the channel; `Some` ends the command.
    fn deliver(&mut self, args: &SubscribeArgs, value: &Value) -> Option<Ended> {
        if let Some(lost) = value.get("lost") {
            eprintln!(
                "gotalk: the hub lost publications of {}; now at {lost}",
                args.channel
            );
            self.position = Position::of(lost);
            return None;
        }
        if let Some(reason) = value.get("unsubscribed") {
            eprintln!("gotalk: the hub ended the subscription: {reason}");
            return Some(Ended::Refused(exit::FAILED));
        }
        if value.get("join").is_some() || value.get("leave").is_some() {
            if args.events && !args.data {
                print_line(value);
            }
            return None;
        }
        self.print(args, value).then_some(Ended::Done)
    }

    /// Prints a publication unless it was printed already; true once
    /// `--count` is reached.
    fn print(&mut self, args: &SubscribeArgs, publication: &Value) -> bool {
        let Some(at) = Position::of(publication) else {
            return false;
        };
        if let Some(last) = &self.position
            && last.epoch == at.epoch
            && at.offset <= last.offset
        {
            return false;
        }
        match (args.data, publication.get("data")) {
            (true, Some(data)) => print_line(data),
            _ => print_line(publication),
        }
        self.position = Some(at);
        self.printed += 1;
        args.count.is_some_and(|c| self.printed >= c)
    }
}

/// `gotalk publish`.
pub(crate) async fn publish(args: PublishArgs) -> u8 {
    let text = if args.data == "-" {
        let mut buf = String::new();
        if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut buf) {
            eprintln!("gotalk: cannot read the data from stdin: {e}");
            return exit::TROUBLE;
        }
        buf
    } else {
        args.data.clone()
    };
    let data = if args.text {
        Value::String(text)
    } else {
        match serde_json::from_str::<Value>(&text) {
            Ok(v) => v,
            Err(e) => {
                eprintln!(
                    "gotalk: DATA is not JSON ({e}); quote a string ('\"hello\"') or pass --text"
                );
                return exit::TROUBLE;
            }
        }
    };
    let (peer, _) = match connect(&args.conn).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = call(
        &peer,
        "publish",
        &json!({"channel": args.channel, "data": data}),
    )
    .await;
    peer.close().await;
    match result {
        Ok(position) => {
            print_line(&position);
            exit::OK
        }
        Err(code) => code,
    }
}

/// `gotalk presence`: one line per client, `USER CLIENT`.
pub(crate) async fn presence(args: PresenceArgs) -> u8 {
    let (peer, _) = match connect(&args.conn).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = call(&peer, "presence", &json!({"channel": args.channel})).await;
    peer.close().await;
    let result = match result {
        Ok(r) => r,
        Err(code) => return code,
    };
    for client in result
        .get("clients")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let field = |k: &str| {
            client
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let user = field("user");
        let user = if user.is_empty() { "-".into() } else { user };
        let _ = write_stdout(format!("{user} {}\n", field("client")).as_bytes());
    }
    exit::OK
}

/// `gotalk history`: one publication per line, oldest first.
pub(crate) async fn history(args: HistoryArgs) -> u8 {
    let (peer, _) = match connect(&args.conn).await {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut input = json!({"channel": args.channel});
    if let Some(since) = &args.since {
        input["since"] = since.to_json();
    }
    if let Some(limit) = args.limit {
        input["limit"] = json!(limit);
    }
    let result = call(&peer, "history", &input).await;
    peer.close().await;
    let result = match result {
        Ok(r) => r,
        Err(code) => return code,
    };
    for publication in result
        .get("publications")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        print_line(publication);
    }
    if args.since.is_some() && result.get("complete") == Some(&Value::Bool(false)) {
        eprintln!("gotalk: publications after the given position are no longer all kept");
    }
    exit::OK
}

/// `gotalk token` (no runtime needed).
pub(crate) fn token(args: &TokenArgs) -> u8 {
    let mut permissions = Permissions::none();
    for rule in &args.channels {
        permissions = match permissions.allow_rule(rule) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("gotalk: --channel {rule:?}: {e}");
                return exit::TROUBLE;
            }
        };
    }
    let claims = args.scopes.iter().fold(
        Claims::new(args.user.clone())
            .expires_in(args.ttl)
            .permissions(&permissions),
        |claims, scope| claims.scope(scope.clone()),
    );
    match JwtSigner::new(&args.secret).and_then(|s| s.sign(&claims)) {
        Ok(token) => {
            let _ = write_stdout(format!("{token}\n").as_bytes());
            exit::OK
        }
        Err(e) => {
            eprintln!("gotalk: cannot sign the token: {e}");
            exit::TROUBLE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_parse_and_print_alike() {
        let p = parse_position("12:ab:c").unwrap();
        assert_eq!(p.offset, 12);
        assert_eq!(p.epoch, "ab:c");
        assert_eq!(p.to_string(), "12:ab:c");
        assert!(parse_position("12").is_err());
        assert!(parse_position("x:e").is_err());
        assert!(parse_position("3:").is_err());
        assert_eq!(
            Position::of(&json!({"offset": 3, "epoch": "e", "data": 1})),
            Some(Position {
                offset: 3,
                epoch: "e".into()
            })
        );
        assert_eq!(Position::of(&json!({"join": {}})), None);
    }
}
