//! `request`, `stream`, `notify` and `listen`.

use std::{
    io::{IsTerminal, Read, Write},
    pin::pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use clap::Args;
use futures::{
    StreamExt,
    future::{Either, select},
};
use gotalk_peer::{Config, ConnectError, Error, Handlers, Peer, RequestOptions};
use tokio::{io::AsyncReadExt, sync::mpsc};

use crate::{
    addr::{Address, Connector, TrustArgs},
    addr::{answers_http, http_hint},
    exit, http_client, ops, services,
    signal::shutdown_signal,
    text::{
        OptDuration, escape_text, human_size, parse_optional_duration, parse_size, pretty_json,
    },
    trace::{Dir, TraceEvent, Tracer, event_text},
};

pub(crate) const REQUEST_HELP: &str = "\
Prints the result followed by a newline (--raw: the exact bytes; --json: pretty-printed, or
as is with a warning on stderr if it is not JSON). While waiting, this side answers `reverse`
requests from the server, so `call-back` works.
With an http:// address (gotalk serve --http), the call is one plain HTTP request,
POST ADDR/call/OP: 200 is the result, 422, 401, 403 and 404 an error result, 503 a retry result
(retried after Retry-After, up to --max-attempts); --trace prints the request and status
lines. There is nothing to call back over HTTP.
Schemas: after an error result, if the server offers a listing (`gotalk list ADDR`) whose
JSON Schema for OP the payload breaks, says where and how. With --check the payload is
checked before it is sent, and not sent (exit code 2) if it does not match.
Exit codes:
  0  the result was printed
  1  the remote answered with an error result (its message goes to stderr), or still asked
     to retry after --max-attempts attempts
  2  protocol, connection or timeout error, or invalid usage";

pub(crate) const STREAM_HELP: &str = "\
Reads stdin in parts of --chunk bytes (from a terminal: each line as it is typed) and sends
them as one stream request, ended by end of input (Ctrl-D), while printing each result part
to stdout as it arrives (exact bytes, no added newlines), so
`gotalk stream ADDR stream-echo < in > out` copies in to out. --timeout counts only once the
input has ended.
Exit codes: 0 the result stream ended normally; 1 an error result (message on stderr);
2 protocol, connection, I/O or timeout error, or invalid usage.";

pub(crate) const NOTIFY_HELP: &str = "\
Sends the notification, then closes the connection (a notification is never answered).
`gotalk serve` relays every notification other than `ping` to all its other connections.
Exit codes: 0 sent; 2 connection error or invalid usage.";

pub(crate) const LISTEN_HELP: &str = "\
Prints each notification as `NAME PAYLOAD` on one line (PAYLOAD as text; control characters
and invalid UTF-8 escaped). With NAMEs, prints only those.
On connecting, sends one `ping` and waits (up to 2 s) for its `pong`: once it has arrived
`gotalk serve` surely relays notifications to this connection, and `listening on ADDR` is
printed to stderr. That pong is not printed.
Exit codes: 0 on Ctrl-C or after --count notifications; 2 if the connection fails or closes.";

/// Arguments of `gotalk request`.
#[derive(Args)]
pub(crate) struct RequestArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://host:port/path, wss://…,
    /// or http://host:port/path/ (the HTTP endpoint of `serve --http`)
    addr: Address,
    /// Operation name
    op: String,
    /// Payload; `-` reads it from stdin; absent means empty
    payload: Option<String>,
    /// Pretty-print a JSON result (key order and numbers kept as sent)
    #[arg(long, conflicts_with = "raw")]
    json: bool,
    /// Print the result's exact bytes, without adding a newline
    #[arg(long)]
    raw: bool,
    /// Give up after this long, connecting and retries included ("off" waits forever)
    #[arg(long, default_value = "30s", value_parser = parse_optional_duration, value_name = "DURATION")]
    timeout: OptDuration,
    /// Attempts when the server answers with retry results (waits as asked in between)
    #[arg(long, default_value_t = 3, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    max_attempts: u32,
    /// Largest payload sent or accepted (gotalk's default limit; raise it only for a
    /// server started with a larger `serve --max-payload`)
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_payload: u32,
    /// Print every frame in and out to stderr
    #[arg(long)]
    trace: bool,
    /// Check the payload against the input schema of the server's listing
    /// (`gotalk.list`) before sending it; without it, the schema is read
    /// only to explain an error result
    #[arg(long)]
    check: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk stream`.
#[derive(Args)]
pub(crate) struct StreamArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://host:port/path or wss://…
    addr: Address,
    /// Operation name
    op: String,
    /// Bytes per request part
    #[arg(long, default_value_t = 64 * 1024, value_name = "SIZE", value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    chunk: u32,
    /// Give up when no result part arrives for this long after the input ended ("off" waits forever)
    #[arg(long, default_value = "30s", value_parser = parse_optional_duration, value_name = "DURATION")]
    timeout: OptDuration,
    /// Print every frame in and out to stderr
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk notify`.
#[derive(Args)]
pub(crate) struct NotifyArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://host:port/path or wss://…
    addr: Address,
    /// Notification name
    name: String,
    /// Payload; `-` reads it from stdin; absent means empty
    payload: Option<String>,
    /// Largest payload sent (gotalk's default limit; raise it only for a server
    /// started with a larger `serve --max-payload`)
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_payload: u32,
    /// Print every frame in and out to stderr
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// Arguments of `gotalk listen`.
#[derive(Args)]
pub(crate) struct ListenArgs {
    /// Server address: host:port, tls://host:port, unix:PATH, ws://host:port/path or wss://…
    addr: Address,
    /// Only print notifications with these names
    names: Vec<String>,
    /// Exit after printing this many notifications
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Print every frame in and out to stderr
    #[arg(long)]
    trace: bool,
    #[command(flatten)]
    trust: TrustArgs,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// The exit code for a failed call.
pub(crate) fn exit_code(e: &Error) -> u8 {
    match e {
        Error::Remote(_) | Error::RetryExhausted { .. } => exit::FAILED,
        _ => exit::TROUBLE,
    }
}

/// Describes a failed call for stderr.
pub(crate) fn describe(e: &Error) -> String {
    match e {
        Error::Remote(r) => format!("error result: {}", escape_text(r.payload())),
        other => other.to_string(),
    }
}

/// A tracer printing `-> FRAME` / `<- FRAME` lines to stderr.
fn stderr_tracer() -> Tracer {
    Tracer::new(|ev: &TraceEvent<'_>| {
        let arrow = match ev.dir {
            Dir::Recv => "<-",
            Dir::Send => "->",
        };
        eprintln!("{arrow} {}", event_text(&ev.kind, 96));
    })
}

/// A [`Connector`] for `addr`, or exit code 2 after saying why not.
pub(crate) fn connector(addr: &Address, trust: &TrustArgs) -> Result<Connector, u8> {
    if trust.ca.is_some() && !addr.uses_tls() {
        eprintln!("gotalk: note: --ca only applies to tls:// and wss:// addresses");
    }
    Connector::new(addr, trust.ca.as_deref()).map_err(|e| {
        eprintln!("gotalk: {e}");
        exit::TROUBLE
    })
}

/// Connects with `handlers`, or returns exit code 2 after saying why not
/// (with a hint for common mistakes). With `limit`, connecting gives up
/// after that long, a connection to an HTTP server included.
pub(crate) async fn connect_with(
    addr: &Address,
    trust: &TrustArgs,
    trace: bool,
    handlers: Handlers,
    config: Config,
    limit: Option<Duration>,
) -> Result<Peer, u8> {
    let connector = connector(addr, trust)?;
    let tracer = trace.then(stderr_tracer);
    // Part of the time is kept for finding out what answered instead.
    let probe_time = limit.map_or(PROBE_TIME, |l| (l / 4).min(PROBE_TIME));
    let connecting = connector.connect(handlers, config, tracer);
    let result = match limit {
        Some(l) => tokio::time::timeout(l - probe_time, connecting)
            .await
            .unwrap_or(Err(ConnectError::Timeout(l))),
        None => connecting.await,
    };
    let e = match result {
        Ok(peer) => return Ok(peer),
        Err(e) => e,
    };
    let hint = match (addr, &e) {
        (Address::Tcp(a), ConnectError::Timeout(_) | ConnectError::Handshake(_))
            if answers_http(a, probe_time).await =>
        {
            Some(http_hint(a))
        }
        _ => connector.hint(&e).map(str::to_owned),
    };
    match hint {
        Some(hint) => eprintln!("gotalk: cannot connect to {addr}: {e}\n  {hint}"),
        None => eprintln!("gotalk: cannot connect to {addr}: {e}"),
    }
    Err(exit::TROUBLE)
}

/// Time allowed for finding out whether a server that did not answer the
/// gotalk handshake speaks HTTP.
const PROBE_TIME: Duration = Duration::from_millis(500);

async fn connect(addr: &Address, trust: &TrustArgs, trace: bool) -> Result<Peer, u8> {
    connect_with(
        addr,
        trust,
        trace,
        ops::client_handlers(),
        Config::default(),
        None,
    )
    .await
}

/// Refuses a payload over `limit` before anything is sent.
pub(crate) fn check_payload_size(len: usize, limit: u32, what: &str) -> Result<(), u8> {
    if len as u64 <= u64::from(limit) {
        return Ok(());
    }
    eprintln!(
        "gotalk: the {what} is {len} bytes, over the {} limit of one gotalk message; \
         a server would refuse it with a protocol error\n  \
         send it in parts with `gotalk stream ADDR OP < FILE` (the server's stream operation \
         gets it piece by piece), or raise the limit on both sides: `gotalk serve \
         --max-payload SIZE` and --max-payload SIZE here",
        human_size(u64::from(limit))
    );
    Err(exit::TROUBLE)
}

fn read_payload(arg: Option<String>) -> Result<Bytes, u8> {
    match arg.as_deref() {
        None => Ok(Bytes::new()),
        Some("-") => {
            let mut buf = Vec::new();
            std::io::stdin().read_to_end(&mut buf).map_err(|e| {
                eprintln!("gotalk: cannot read the payload from stdin: {e}");
                exit::TROUBLE
            })?;
            Ok(Bytes::from(buf))
        }
        Some(s) => Ok(Bytes::from(s.to_owned())),
    }
}

/// Writes to stdout; a closed pipe (`| head`) is not an error worth a message.
pub(crate) fn write_stdout(bytes: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()
}

/// `gotalk request`.
pub(crate) async fn request(mut args: RequestArgs) -> u8 {
    let payload = match read_payload(args.payload.take()) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(code) = check_payload_size(payload.len(), args.max_payload, "payload") {
        return code;
    }
    if let Address::Http(url) = &args.addr {
        return request_http(url, &args, payload).await;
    }
    // --timeout bounds the whole call: connecting, then the request.
    let deadline = args.timeout.0.map(|t| tokio::time::Instant::now() + t);
    let config = Config {
        max_payload: args.max_payload,
        ..Config::default()
    };
    let peer = match connect_with(
        &args.addr,
        &args.trust,
        args.trace,
        ops::client_handlers(),
        config,
        args.timeout.0,
    )
    .await
    {
        Ok(p) => p,
        Err(code) => return code,
    };
    let options = RequestOptions {
        timeout: deadline.map(|d| {
            d.saturating_duration_since(tokio::time::Instant::now())
                .max(Duration::from_millis(1))
        }),
        max_attempts: Some(args.max_attempts),
        ..RequestOptions::default()
    };
    if args.check {
        let listing = services::listing_over(&peer, Some(LISTING_WAIT)).await;
        if let Err(code) = check_before_sending(listing, &args, &payload) {
            peer.close().await;
            return code;
        }
    }
    let result = peer.request_with(&args.op, payload.clone(), options).await;
    let explanation = if matches!(result, Err(Error::Remote(_))) {
        let listing = services::listing_over(&peer, Some(LISTING_WAIT)).await;
        services::explain(listing, &args.addr, &args.op, &payload)
    } else {
        None
    };
    // Lets a call-back this side is answering finish, then says goodbye.
    peer.close().await;
    match result {
        Ok(bytes) => print_result(&bytes, &args),
        Err(e) => {
            eprintln!("gotalk: {}", describe(&e));
            if let Some(explanation) = explanation {
                eprintln!("{explanation}");
            }
            exit_code(&e)
        }
    }
}

/// `request` to an HTTP endpoint (`http://…`): the same output and exit
/// codes as over gotalk.
async fn request_http(url: &str, args: &RequestArgs, payload: Bytes) -> u8 {
    if args.trust.ca.is_some() {
        eprintln!("gotalk: note: --ca only applies to tls:// and wss:// addresses");
    }
    if args.check {
        let listing = services::listing_over_http(url, args.trace).await;
        if let Err(code) = check_before_sending(listing, args, &payload) {
            return code;
        }
    }
    let call = http_client::call(
        url,
        &args.op,
        payload.clone(),
        args.max_attempts,
        args.max_payload,
        args.trace,
    );
    let outcome = match args.timeout.0 {
        Some(limit) => match tokio::time::timeout(limit, call).await {
            Ok(outcome) => outcome,
            Err(_) => {
                eprintln!("gotalk: no answer within {limit:?} (--timeout)");
                return exit::TROUBLE;
            }
        },
        None => call.await,
    };
    if let Some(code) = http_client::report(&outcome) {
        if matches!(outcome, Ok(http_client::HttpOutcome::ErrorResult(_))) {
            let listing = services::listing_over_http(url, false).await;
            if let Some(explanation) = services::explain(listing, &args.addr, &args.op, &payload) {
                eprintln!("{explanation}");
            }
        }
        return code;
    }
    match outcome {
        Ok(http_client::HttpOutcome::Result(bytes)) => print_result(&bytes, args),
        _ => exit::TROUBLE,
    }
}

/// How long `request` waits for a listing it reads on the side.
const LISTING_WAIT: Duration = Duration::from_secs(2);

/// `--check`: the payload against the listing's input schema. A server
/// without a listing gets the request unchecked, with a note.
fn check_before_sending(
    listing: Result<serde_json::Value, services::NoListing>,
    args: &RequestArgs,
    payload: &[u8],
) -> Result<(), u8> {
    match listing {
        Ok(listing) => services::check_input(&listing, &args.op, payload).map_err(|why| {
            eprintln!(
                "gotalk: not sent: {why}\n  `gotalk describe {} {}` shows the schema",
                args.addr, args.op
            );
            exit::TROUBLE
        }),
        Err(services::NoListing::Failed(code)) => Err(code),
        Err(_) => {
            eprintln!("gotalk: note: the server offers no listing to check the input against");
            Ok(())
        }
    }
}

/// Prints a result as `request` does; the exit code.
fn print_result(bytes: &[u8], args: &RequestArgs) -> u8 {
    let written = if args.raw {
        write_stdout(bytes)
    } else if args.json {
        match pretty_json(bytes) {
            Some(pretty) => write_stdout(format!("{pretty}\n").as_bytes()),
            None => {
                eprintln!("gotalk: the result is not JSON; printing it as is");
                write_stdout(&[bytes, b"\n"].concat())
            }
        }
    } else {
        write_stdout(&[bytes, b"\n"].concat())
    };
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        eprintln!("gotalk: cannot write the result: {e}");
        return exit::TROUBLE;
    }
    exit::OK
}

/// Reads up to `buf.len()` bytes, stopping early only at end of input.
async fn read_full<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = r.read(&mut buf[filled..]).await?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    Ok(filled)
}

/// `gotalk stream`.
pub(crate) async fn stream(args: StreamArgs) -> u8 {
    let peer = match connect(&args.addr, &args.trust, args.trace).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let (mut writer, mut results) = match peer.stream_request(&args.op).await {
        Ok(pair) => pair,
        Err(e) => {
            eprintln!("gotalk: {}", describe(&e));
            return exit_code(&e);
        }
    };
    let chunk = args.chunk as usize;
    // From a terminal, each line goes out as typed; otherwise parts are full chunks.
    let interactive = std::io::stdin().is_terminal();
    let input_done = Arc::new(AtomicBool::new(false));
    let sent_all = input_done.clone();
    let send = async move {
        let mut stdin = tokio::io::stdin();
        loop {
            let mut buf = vec![0u8; chunk];
            let read = if interactive {
                stdin.read(&mut buf).await
            } else {
                read_full(&mut stdin, &mut buf).await
            };
            let n = read.map_err(|e| {
                eprintln!("gotalk: cannot read stdin: {e}");
                exit::TROUBLE
            })?;
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if let Err(e) = writer.send(buf).await {
                // The result side reports why the connection went away.
                tracing::debug!(error = %e, "stream part not sent");
                return Ok(());
            }
        }
        sent_all.store(true, Ordering::Relaxed);
        writer.end().await.map_err(|e| {
            tracing::debug!(error = %e, "stream end not sent");
            exit::TROUBLE
        })
    };
    let timeout = args.timeout.0;
    let recv = async move {
        loop {
            let next = match timeout {
                Some(t) => match tokio::time::timeout(t, results.next()).await {
                    Ok(next) => next,
                    // Still sending: waiting on the input, not on the server.
                    Err(_) if !input_done.load(Ordering::Relaxed) => continue,
                    Err(_) => {
                        eprintln!(
                            "gotalk: no result part for {t:?} after the input ended; giving up"
                        );
                        return exit::TROUBLE;
                    }
                },
                None => results.next().await,
            };
            match next {
                None => return exit::OK,
                Some(Ok(part)) => {
                    if let Err(e) = write_stdout(&part) {
                        if e.kind() != std::io::ErrorKind::BrokenPipe {
                            eprintln!("gotalk: cannot write the result: {e}");
                        }
                        return exit::TROUBLE;
                    }
                }
                Some(Err(e)) => {
                    eprintln!("gotalk: {}", describe(&e));
                    return exit_code(&e);
                }
            }
        }
    };
    let code = match select(pin!(send), pin!(recv)).await {
        // Input sent: the outcome is the result stream's.
        Either::Left((Ok(()), recv)) => recv.await,
        Either::Left((Err(code), _)) => code,
        // The result ended (or failed) first: stop sending.
        Either::Right((code, _)) => code,
    };
    peer.close().await;
    code
}

/// `gotalk notify`.
pub(crate) async fn notify(args: NotifyArgs) -> u8 {
    let payload = match read_payload(args.payload) {
        Ok(p) => p,
        Err(code) => return code,
    };
    if let Err(code) = check_payload_size(payload.len(), args.max_payload, "payload") {
        return code;
    }
    let peer = match connect(&args.addr, &args.trust, args.trace).await {
        Ok(p) => p,
        Err(code) => return code,
    };
    let sent = peer.notify(&args.name, payload).await;
    // Closing flushes the notification before the connection goes.
    peer.close().await;
    match sent {
        Ok(()) => exit::OK,
        Err(e) => {
            eprintln!("gotalk: {}", describe(&e));
            exit::TROUBLE
        }
    }
}

/// `gotalk listen`.
pub(crate) async fn listen(args: ListenArgs) -> u8 {
    let (tx, mut rx) = mpsc::channel::<(String, Bytes)>(1024);
    let handlers = ops::client_handlers().notification("", move |ctx, payload| {
        let tx = tx.clone();
        let name = ctx.name().to_owned();
        async move {
            let _ = tx.send((name, payload)).await;
        }
    });
    let peer = match connect_with(
        &args.addr,
        &args.trust,
        args.trace,
        handlers,
        Config::default(),
        None,
    )
    .await
    {
        Ok(p) => p,
        Err(code) => return code,
    };
    // Ping and wait for the pong, so the server surely relays to us from now on.
    let nonce = format!(
        "gotalk-listen-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    );
    let mut backlog = Vec::new();
    if peer.notify("ping", nonce.clone()).await.is_ok() {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some((name, payload))) = tokio::time::timeout_at(deadline, rx.recv()).await {
            if name == "pong" && payload == nonce.as_bytes() {
                break;
            }
            backlog.push((name, payload));
        }
    }
    eprintln!("listening on {} (Ctrl-C to stop)", args.addr);
    let mut printed = 0u64;
    let mut print = |name: &str, payload: &[u8]| -> bool {
        if !args.names.is_empty() && !args.names.iter().any(|n| n == name) {
            return false;
        }
        let line = format!(
            "{} {}\n",
            escape_text(name.as_bytes()),
            escape_text(payload)
        );
        let _ = write_stdout(line.as_bytes());
        printed += 1;
        args.count.is_some_and(|c| printed >= c)
    };
    for (name, payload) in backlog {
        if print(&name, &payload) {
            peer.close().await;
            return exit::OK;
        }
    }
    if args.count == Some(0) {
        peer.close().await;
        return exit::OK;
    }
    let mut stop = pin!(shutdown_signal());
    let mut closed = pin!(peer.closed());
    loop {
        tokio::select! {
            msg = rx.recv() => {
                let Some((name, payload)) = msg else { break };
                if print(&name, &payload) {
                    break;
                }
            }
            () = &mut stop => break,
            reason = &mut closed => {
                eprintln!("gotalk: connection closed: {reason}");
                return exit::TROUBLE;
            }
        }
    }
    peer.close().await;
    exit::OK
}
