//! `gotalk serve`: the responder of [`crate::server`] on the command line,
//! until Ctrl-C.

use std::{io::IsTerminal, io::Write, path::PathBuf, pin::pin};

use clap::Args;
use futures::future::{Either, select};
use gotalk_peer::{Config, tls};

use crate::{
    addr::Address,
    exit,
    hub_serve::HubArgs,
    raw,
    server::{self, ServeOptions},
    signal::shutdown_signal,
    static_files,
    text::{OptDuration, parse_optional_duration, parse_positive_duration, parse_size},
    trace::{Dir, TraceEvent, Tracer, event_text},
    websocket::{self, HttpListen, WsListen},
};

pub(crate) const SERVE_HELP: &str = "\
Prints `listening on ADDR` first (with --addr 127.0.0.1:0, ADDR has the port picked; with
--tls-cert it is tls://HOST:PORT), then, with --ws, `listening on ws://HOST:PORT/gotalk/`
(wss:// with --tls-cert). ADDR is always what clients pass as their address.
WebSocket (--ws): the same operations over gotalk's WebSocket mapping, at --ws-path and any
path under it; any path under it ending in /gotalk.js serves the browser client (an ES
module: import * as gotalk from '/gotalk/gotalk.js'). Origin policy: browsers may connect
only from pages of this same host and port, plus each --ws-allow-origin; clients that send
no Origin header (programs, not browsers) are always let in. WebSocket clients are sent no
retry results unless their URL ends in ?caps=retry,stream (gotalk's Rust client and our
gotalk.js say so; the original gotalk.js cannot take them). --static DIR serves DIR's files
on the WebSocket port at every other path (/ is DIR/index.html), so a page there and the
endpoint are same-origin; only files under DIR, no hidden ones (.git), no directory listings.
A page of another origin admitted by --ws-allow-origin may load /gotalk/gotalk.js too (CORS).
HTTP (--http HOST:PORT): the same operations as plain HTTP calls, printed as `listening on
http://HOST:PORT/gotalk/` (the mount is --ws-path): POST PATH/call/OP with the payload as
body answers 200 with the result (application/json for JSON operations, else
application/octet-stream), 422 with the text of an error result, 503 with Retry-After for a
retry result, 404 for an unknown operation, 413 for a body over --max-payload, 500 if the
handler panicked; a stream operation's parts come as a chunked response, each as it is
sent. POST PATH/notify/NAME answers 204 once the handler has run (notifications are relayed
to the connected clients as usual). Same origin policy as WebSocket (--ws-allow-origin).
Try: curl -d hello http://HOST:PORT/gotalk/call/echo. Plain HTTP only, even with --tls-cert.
Metrics (--metrics HOST:PORT): Prometheus text at http://HOST:PORT/metrics, printed last as
`metrics on URL`: gotalk_requests_total by operation and outcome (ok, error, retry; unknown
and busy without an operation), gotalk_request_duration_seconds, gotalk_bytes_received_total,
gotalk_bytes_sent_total, gotalk_connections_open, gotalk_connections_accepted_total,
gotalk_stream_requests_total, gotalk_notifications_received_total and
gotalk_protocol_violations_total by code (docs/middleware.md).
TLS (--tls-cert and --tls-key, PEM files: the certificate chain, leaf first, and its private
key): the TCP listener speaks TLS (clients use tls://HOST:PORT) and --ws serves wss://.
With --trace, prints every frame in and out, one line each:
  conn#N <- FRAME   received on connection N
  conn#N -> FRAME   sent on connection N
FRAME is the exact wire bytes: printable ASCII as is, `\\` as `\\\\`, any other byte as \\xNN
(request IDs are four raw bytes: \\x00\\x00\\x00\\x00 is ID 0). WebSocket connections are
traced the same way: the gotalk bytes inside the WebSocket messages.
--unix PATH: a socket file left behind by a server that is gone (nothing accepts on it) is
removed first; one that a running server still listens on is left alone, and serve exits 2.
Memory (Linux, glibc): serve restarts itself once at start (same process) with
GLIBC_TUNABLES=glibc.malloc.tcache_count=1 added (glibc's default is 7), and uses one malloc
arena, so that memory freed by closed connections goes back to the system (at no cost per
request, measured; docs/benchmarks.md); setting glibc.malloc.tcache_count yourself in
GLIBC_TUNABLES chooses another size.
Ctrl-C (or SIGTERM) stops accepting (TCP and WebSocket), lets requests in flight finish (up
to 5 s), and exits 0; a second Ctrl-C exits at once. Exit code 2 if an address cannot be
bound or the certificate or key cannot be used.";

/// Arguments of `gotalk serve`.
#[derive(Args)]
#[command(group(clap::ArgGroup::new("web").args(["ws", "http"]).multiple(true)))]
pub(crate) struct ServeArgs {
    /// Address to listen on: host:port (port 0 picks one) or unix:PATH
    #[arg(long, default_value = "127.0.0.1:1234", conflicts_with = "unix")]
    addr: Address,
    /// Listen on a Unix domain socket at PATH (same as --addr unix:PATH)
    #[arg(long, value_name = "PATH")]
    unix: Option<PathBuf>,
    /// Interval between heartbeats sent to each client ("off" disables)
    #[arg(long, default_value = "20s", value_parser = parse_optional_duration, value_name = "DURATION")]
    heartbeat: OptDuration,
    /// Close a connection with ProtocolError 3 when no message arrives for this long ("off" disables)
    #[arg(long, default_value = "30s", value_parser = parse_optional_duration, value_name = "DURATION")]
    read_timeout: OptDuration,
    /// Stream requests handled at once per connection (0 refuses stream requests)
    #[arg(long, default_value_t = Config::default().max_inbound_streams, value_name = "N")]
    stream_limit: usize,
    /// Requests handled at once per connection; above it, clients get `request rate limit` retry results
    #[arg(long, default_value_t = Config::default().max_inbound_requests, value_name = "N")]
    request_limit: usize,
    /// Largest payload accepted in one message (larger ones are refused with
    /// ProtocolError 2); clients sending more need the same --max-payload
    #[arg(long, default_value = "16MiB", value_parser = parse_size, value_name = "SIZE")]
    max_payload: u32,
    /// Print every frame in and out, and connections opening and closing
    #[arg(long)]
    trace: bool,
    /// With --trace, payload bytes shown per frame before eliding the rest
    #[arg(long, default_value_t = 96, value_name = "BYTES")]
    trace_payload: usize,
    /// Also serve gotalk over WebSocket (and the browser client) on host:port (port 0 picks one)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    ws: Option<String>,
    /// Also serve the operations as plain HTTP calls on host:port (port 0 picks one):
    /// POST PATH/call/OP and POST PATH/notify/NAME, PATH being --ws-path
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    http: Option<String>,
    /// With --ws or --http, the mount path of the WebSocket endpoint and the browser
    /// client, and of the HTTP calls
    #[arg(long, default_value = websocket::DEFAULT_MOUNT, value_name = "PATH", value_parser = websocket::parse_mount, requires = "web")]
    ws_path: String,
    /// With --ws or --http, also let browser pages from this origin connect or call
    /// (repeatable), e.g. <https://app.example.com>
    #[arg(long, value_name = "ORIGIN", value_parser = websocket::parse_origin, requires = "web")]
    ws_allow_origin: Vec<String>,
    /// With --ws, also serve the files of DIR (index.html for a directory) on the WebSocket
    /// port, at every path outside --ws-path: pages that are same-origin with the endpoint
    #[arg(long = "static", value_name = "DIR", requires = "ws")]
    static_dir: Option<PathBuf>,
    /// Serve TLS: the certificate chain (PEM, leaf first); needs --tls-key
    #[arg(
        long,
        value_name = "PEM",
        requires = "tls_key",
        conflicts_with = "unix"
    )]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1) of --tls-cert
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve Prometheus metrics (requests per operation and outcome, latency, bytes,
    /// connections, streams, notifications, protocol violations) at
    /// http://HOST:PORT/metrics (port 0 picks one)
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    metrics: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
    /// Serve a raw TCP echo instead of gotalk (every byte read is written back): the
    /// baseline that `gotalk bench --raw` measures
    #[arg(long, conflicts_with_all = ["unix", "ws", "http", "tls_cert", "metrics", "trace", "hub"])]
    raw_echo: bool,
    /// Keep polling each connection for this long after it reads or writes, instead of
    /// sleeping (e.g. 50us): answers go out without the wait for a sleeping thread to
    /// wake, which on virtual machines can take longer than the request itself, at the
    /// cost of a CPU kept busy for the window after every read or write
    #[arg(long, value_parser = parse_positive_duration, value_name = "DURATION")]
    busy_poll: Option<std::time::Duration>,
    #[command(flatten)]
    pub(crate) runtime: crate::RuntimeArgs,
}

/// `gotalk serve --raw-echo`: until Ctrl-C.
async fn serve_raw_echo(addr: &Address, busy_poll: Option<std::time::Duration>) -> u8 {
    let Address::Tcp(addr) = addr else {
        eprintln!("gotalk: --raw-echo serves host:port only, not {addr}");
        return exit::TROUBLE;
    };
    let echo = match raw::EchoServer::start(addr, busy_poll).await {
        Ok(echo) => echo,
        Err(e) => {
            eprintln!("gotalk: cannot listen on {addr}: {e}");
            return exit::TROUBLE;
        }
    };
    println!("listening on {}", echo.local_addr());
    eprintln!("raw TCP echo, no gotalk protocol: for `gotalk bench --raw` (Ctrl-C stops)");
    shutdown_signal().await;
    echo.stop();
    exit::OK
}

/// `host:port` for `--ws`.
fn parse_host_port(s: &str) -> Result<String, String> {
    match s.parse::<Address>() {
        Ok(Address::Tcp(a)) => Ok(a),
        _ => Err(format!(
            "{s:?} is not host:port (e.g. 127.0.0.1:8080; the path is --ws-path)"
        )),
    }
}

/// `gotalk serve`.
pub(crate) async fn serve(args: ServeArgs) -> u8 {
    if args.raw_echo {
        return serve_raw_echo(&args.addr, args.busy_poll).await;
    }
    let addr = match args.unix {
        Some(path) => Address::Unix(path),
        None => args.addr,
    };
    let config = Config {
        heartbeat_interval: args.heartbeat.0,
        read_timeout: args.read_timeout.0,
        max_inbound_streams: args.stream_limit,
        max_inbound_requests: args.request_limit.max(1),
        max_payload: args.max_payload,
        busy_poll: args.busy_poll,
        ..Config::default()
    };
    let max_payload = args.trace_payload;
    let tracer = args.trace.then(|| {
        Tracer::new(move |ev: &TraceEvent<'_>| {
            let arrow = match ev.dir {
                Dir::Recv => "<-",
                Dir::Send => "->",
            };
            let line = format!(
                "conn#{} {arrow} {}\n",
                ev.conn,
                event_text(&ev.kind, max_payload)
            );
            let _ = std::io::stdout().lock().write_all(line.as_bytes());
        })
    });
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match tls::server_config_from_pem_files(cert, key) {
            Ok(config) => Some(config),
            Err(e) => {
                eprintln!(
                    "gotalk: cannot use --tls-cert {} --tls-key {}: {e}",
                    cert.display(),
                    key.display()
                );
                return exit::TROUBLE;
            }
        },
        _ => None,
    };
    let static_dir = match args.static_dir.as_deref().map(static_files::check_dir) {
        Some(Err(e)) => {
            eprintln!("gotalk: {e}");
            return exit::TROUBLE;
        }
        Some(Ok(dir)) => Some(dir),
        None => None,
    };
    let http = args.http.map(|addr| HttpListen {
        addr,
        mount: args.ws_path.clone(),
        allow_origins: args.ws_allow_origin.clone(),
    });
    let ws = args.ws.map(|addr| WsListen {
        addr,
        mount: args.ws_path,
        allow_origins: args.ws_allow_origin,
        static_dir: static_dir.clone(),
    });
    // Before any connection: the runtime's counters bind to the recorder
    // installed when they are first used.
    let metrics_addr = match &args.metrics {
        Some(addr) => match crate::metrics::serve(addr).await {
            Ok(bound) => Some(bound),
            Err(e) => {
                eprintln!("gotalk: cannot serve --metrics {addr}: {e}");
                return exit::TROUBLE;
            }
        },
        None => None,
    };
    let hub = match args.hub.build().await {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("gotalk: {e}");
            return exit::TROUBLE;
        }
    };
    let options = ServeOptions {
        config,
        tracer,
        log_connections: args.trace,
        extra: None,
        tls,
        ws,
        http,
        hub,
        metrics: metrics_addr.is_some(),
    };
    let running = match server::start(&addr, options).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("gotalk: {e}");
            return exit::TROUBLE;
        }
    };
    println!("listening on {}", running.local_addr());
    // Ends with the runtime.
    tokio::spawn(crate::trim::after_closes(running.connections()));
    if let Some(url) = running.ws_url() {
        println!("listening on {url}");
        if let Some(dir) = &static_dir {
            // ws://host:port/mount/ → http://host:port/
            let http = url.replacen("ws", "http", 1);
            let origin = match http.split_once("://") {
                Some((scheme, rest)) => {
                    format!("{scheme}://{}", rest.split('/').next().unwrap_or(rest))
                }
                None => http.clone(),
            };
            println!("serving {} at {origin}/", dir.display());
        }
    }
    if let Some(url) = running.http_url() {
        println!("listening on {url}");
    }
    if let Some(addr) = metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    if std::io::stderr().is_terminal() {
        let ca = if running.local_addr().starts_with("tls://") {
            " --ca CA.pem"
        } else {
            ""
        };
        eprintln!(
            "try: gotalk request {} echo hello{ca}   (Ctrl-C stops the server)",
            running.local_addr()
        );
        if let Some(url) = running.ws_url() {
            eprintln!("     gotalk request {url} echo hello{ca}");
            let http = url.replacen("ws", "http", 1);
            eprintln!("     browser client: {http}gotalk.js");
        }
        if let Some(url) = running.http_url() {
            eprintln!("     gotalk request {url} echo hello");
            eprintln!("     curl -d hello {url}call/echo");
        }
    }
    shutdown_signal().await;
    eprintln!("shutting down: finishing requests in flight (Ctrl-C again to exit now)");
    let close = pin!(running.shutdown());
    match select(close, pin!(shutdown_signal())).await {
        Either::Left((n, _)) => {
            eprintln!("shut down ({n} connection(s) closed)");
            exit::OK
        }
        Either::Right(_) => {
            eprintln!("exiting without waiting");
            exit::INTERRUPTED
        }
    }
}
