//! `gotalk`: talk to gotalk services from the command line.
//!
//! `gotalk demo` walks through the protocol; `serve`, `request`, `stream`,
//! `notify` and `listen` run and poke at services; `decode` reads wire
//! captures; `bench` measures throughput and latency. See `gotalk --help`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod addr;
mod bench;
mod client;
mod compact_heap;
mod decode;
mod demo;
mod gen_ts;
mod http_client;
mod hub_client;
mod hub_serve;
mod latency;
mod metrics;
mod ops;
mod raw;
mod schema_check;
mod serve;
mod server;
mod services;
mod signal;
mod static_files;
mod text;
mod trace;
mod trim;
mod websocket;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, shared by the commands.
pub(crate) mod exit {
    /// Success: a result, a clean shutdown, every check passed.
    pub(crate) const OK: u8 = 0;
    /// The remote answered with an error (or retry) result; decode found a
    /// malformed frame; a demo step or some bench requests failed.
    pub(crate) const FAILED: u8 = 1;
    /// Protocol, connection, I/O or timeout error (clap's usage errors are 2 too).
    pub(crate) const TROUBLE: u8 = 2;
    /// Stopped by Ctrl-C before finishing (128 + SIGINT, as shells report it).
    pub(crate) const INTERRUPTED: u8 = 130;
}

const EXIT_CODES: &str = "\
Exit codes:
  0  success (request: a result)
  1  the remote answered with an error result (or kept asking to retry); decode: a
     malformed or truncated frame; demo: a step did not get the expected answer;
     bench: some requests failed
  2  protocol, connection, I/O or timeout error; also invalid command-line usage
  130  interrupted by Ctrl-C (bench: after printing the partial results)

Addresses:
  host:port             TCP (127.0.0.1:1234; tcp://host:port works too)
  tls://host:port       TCP + TLS; the certificate must be valid for host
  unix:PATH             a Unix domain socket
  ws://host:port/PATH   WebSocket (gotalk serve --ws: ws://127.0.0.1:8080/gotalk/)
  wss://host:port/PATH  WebSocket over TLS
  http://host:port/PATH/  plain HTTP calls, request only (gotalk serve --http)
For tls:// and wss://, clients trust the platform's root certificates, or only the CA
certificate given with --ca FILE (PEM). There is no way to skip certificate checks.";

const LONG_ABOUT: &str = "\
gotalk is a symmetric, multiplexed RPC protocol whose wire format is ASCII: a request
for `echo` with payload `hello` is the frame r\\x00\\x00\\x00\\x00004echo00000005hello.
This tool runs, calls, watches and measures gotalk services.

Start with `gotalk demo`, then run `gotalk serve` in one terminal and
`gotalk request 127.0.0.1:1234 echo hello` in another.";

#[derive(Parser)]
#[command(
    name = "gotalk",
    version,
    about = "Talk to gotalk services: demo, serve, request, stream, notify, listen, list, describe, gen, hub commands, decode, bench",
    long_about = LONG_ABOUT,
    after_help = EXIT_CODES,
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `--threads`, for the commands that run an async runtime (all but `decode`).
#[derive(clap::Args, Clone, Copy, Debug, Default)]
pub(crate) struct RuntimeArgs {
    /// Threads running the async runtime. 1 runs everything on one thread (a
    /// current-thread runtime: the fastest for a few busy connections, since
    /// a connection's tasks then never hop between cores); default: one
    /// worker per core
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) threads: Option<u16>,
}

/// The runtime for `--threads`.
fn runtime(threads: Option<u16>) -> std::io::Result<tokio::runtime::Runtime> {
    match threads {
        Some(1) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Some(n) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(usize::from(n))
            .enable_all()
            .build(),
        None => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Walk through every kind of gotalk exchange over loopback TCP, showing the wire frames
    #[command(after_help = demo::AFTER_HELP)]
    Demo(demo::DemoArgs),
    /// Run a responder with test operations (echo, greet, fail, slow, reverse, streams, ...)
    #[command(after_help = server_after_help())]
    Serve(Box<serve::ServeArgs>),
    /// Send one request and print its result
    #[command(after_help = client::REQUEST_HELP)]
    Request(client::RequestArgs),
    /// Send stdin as a stream request and print the result parts as they arrive
    #[command(after_help = client::STREAM_HELP)]
    Stream(client::StreamArgs),
    /// Send one notification
    #[command(after_help = client::NOTIFY_HELP)]
    Notify(client::NotifyArgs),
    /// List the operations a server offers (its `gotalk.list` listing)
    #[command(after_help = services::LIST_HELP)]
    List(services::ListArgs),
    /// Describe one operation of a server's listing: kind, JSON Schemas
    #[command(after_help = services::DESCRIBE_HELP)]
    Describe(services::DescribeArgs),
    /// Generate code from a server's listing (`gen ts`: TypeScript for gotalk.js)
    #[command(subcommand)]
    Gen(GenCommand),
    /// Print the notifications a server sends, one per line, until Ctrl-C
    #[command(after_help = client::LISTEN_HELP)]
    Listen(client::ListenArgs),
    /// Decode a raw wire capture (or its hex) into one message per line
    #[command(after_help = decode::AFTER_HELP)]
    Decode(decode::DecodeArgs),
    /// Load-test a gotalk service: throughput and latency percentiles
    #[command(after_help = bench::AFTER_HELP)]
    Bench(bench::BenchArgs),
    /// Print the publications of a hub channel as they arrive (serve --hub)
    #[command(after_help = hub_client::SUBSCRIBE_HELP)]
    Subscribe(hub_client::SubscribeArgs),
    /// Publish on a hub channel
    #[command(after_help = hub_client::PUBLISH_HELP)]
    Publish(hub_client::PublishArgs),
    /// List who is in a hub channel's presence
    Presence(hub_client::PresenceArgs),
    /// Print a hub channel's kept publications
    History(hub_client::HistoryArgs),
    /// Make a signed token (JWT) for serve --hub --jwt-secret
    #[command(after_help = hub_client::TOKEN_HELP)]
    Token(hub_client::TokenArgs),
}

/// What `gotalk gen` writes.
#[derive(Subcommand)]
enum GenCommand {
    /// TypeScript declarations and a typed gotalk.js client module
    #[command(after_help = gen_ts::GEN_TS_HELP)]
    Ts(gen_ts::TsArgs),
}

impl Command {
    /// The `--threads` of a command that runs an async runtime.
    fn threads(&self) -> Option<u16> {
        match self {
            Self::Demo(a) => a.runtime.threads,
            Self::Serve(a) => a.runtime.threads,
            Self::Request(a) => a.runtime.threads,
            Self::Stream(a) => a.runtime.threads,
            Self::Notify(a) => a.runtime.threads,
            Self::Listen(a) => a.runtime.threads,
            Self::List(a) => a.threads(),
            Self::Describe(a) => a.threads(),
            Self::Gen(GenCommand::Ts(a)) => a.runtime.threads,
            Self::Bench(a) => a.threads(),
            Self::Subscribe(a) => a.runtime.threads,
            Self::Publish(a) => a.runtime.threads,
            Self::Presence(a) => a.runtime.threads,
            Self::History(a) => a.runtime.threads,
            Self::Decode(_) | Self::Token(_) => None,
        }
    }
}

fn server_after_help() -> String {
    format!(
        "{}\n\n{}\n\n{}",
        ops::OPERATIONS_HELP,
        serve::SERVE_HELP,
        hub_serve::HUB_HELP
    )
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Colour codes only for people, not for log files and pipes.
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    trim::keep_freed_memory();
    let cli = Cli::parse();
    init_logging();
    if let Command::Serve(_) = &cli.command {
        // Before the runtime starts its threads (may re-execute the process).
        compact_heap::for_server();
    }
    if let Command::Decode(args) = &cli.command {
        // Pure gotalk-proto: no runtime needed.
        return ExitCode::from(decode::run(args));
    }
    if let Command::Token(args) = &cli.command {
        return ExitCode::from(hub_client::token(args));
    }
    let runtime = match runtime(cli.command.threads()) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("gotalk: cannot start the async runtime: {e}");
            return ExitCode::from(exit::TROUBLE);
        }
    };
    let code = runtime.block_on(async move {
        match cli.command {
            Command::Demo(args) => demo::run(args).await,
            Command::Serve(args) => serve::serve(*args).await,
            Command::Request(args) => client::request(args).await,
            Command::Stream(args) => client::stream(args).await,
            Command::Notify(args) => client::notify(args).await,
            Command::Listen(args) => client::listen(args).await,
            Command::List(args) => services::list(args).await,
            Command::Describe(args) => services::describe(args).await,
            Command::Gen(GenCommand::Ts(args)) => gen_ts::run(args).await,
            Command::Bench(args) => bench::run(args).await,
            Command::Subscribe(args) => hub_client::subscribe(args).await,
            Command::Publish(args) => hub_client::publish(args).await,
            Command::Presence(args) => hub_client::presence(args).await,
            Command::History(args) => hub_client::history(args).await,
            Command::Decode(_) | Command::Token(_) => unreachable!("handled above"),
        }
    });
    // Don't wait for stdin readers or lingering connection tasks.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    fn threads_of(args: &[&str]) -> Option<u16> {
        Cli::try_parse_from(std::iter::once("gotalk").chain(args.iter().copied()))
            .unwrap()
            .command
            .threads()
    }

    #[test]
    fn bench_runs_on_one_thread_for_one_connection_unless_told() {
        assert_eq!(threads_of(&["bench", "--self"]), Some(1));
        assert_eq!(threads_of(&["bench", "--self", "--threads", "2"]), Some(2));
        // One connection elsewhere: its tasks stay on one thread.
        assert_eq!(threads_of(&["bench", "127.0.0.1:1"]), Some(1));
        assert_eq!(
            threads_of(&["bench", "--threads", "2", "127.0.0.1:1"]),
            Some(2)
        );
        // Many connections (or `serve`): one worker per core.
        assert_eq!(threads_of(&["bench", "--conns", "10", "127.0.0.1:1"]), None);
        assert_eq!(threads_of(&["serve"]), None);
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_subcommand_parses_its_options() {
        let lines: &[&[&str]] = &[
            &["demo"],
            &[
                "serve",
                "--hub",
                "--redis",
                "redis://127.0.0.1:6379",
                "--redis-prefix",
                "app:",
                "--jwt-secret",
                "s",
                "--anonymous",
                "public:*=read",
                "--history",
                "10",
                "--history-ttl",
                "1m",
            ],
            &["serve", "--hub", "--tokens", "tokens.txt"],
            &[
                "subscribe",
                "127.0.0.1:1",
                "chat",
                "--since",
                "3:e",
                "--events",
                "--presence",
                "--data",
                "--count",
                "2",
                "--reconnect",
                "--token",
                "t",
            ],
            &["publish", "ws://127.0.0.1:1/gotalk/", "chat", "-", "--text"],
            &["presence", "127.0.0.1:1", "chat"],
            &[
                "history",
                "127.0.0.1:1",
                "chat",
                "--since",
                "1:e",
                "--limit",
                "5",
            ],
            &[
                "token",
                "--secret",
                "s",
                "--user",
                "u",
                "--channel",
                "a*=read",
                "--ttl",
                "5m",
            ],
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--heartbeat",
                "off",
                "--read-timeout",
                "5s",
            ],
            &[
                "serve",
                "--unix",
                "/tmp/x.sock",
                "--stream-limit",
                "0",
                "--request-limit",
                "9",
                "--trace",
            ],
            &[
                "request",
                "--json",
                "--timeout",
                "2s",
                "--max-attempts",
                "1",
                "127.0.0.1:1",
                "echo",
                "x",
            ],
            &[
                "request",
                "--raw",
                "--timeout",
                "off",
                "unix:/s",
                "echo",
                "-",
            ],
            &[
                "stream",
                "--chunk",
                "10",
                "--timeout",
                "1m",
                "127.0.0.1:1",
                "stream-echo",
            ],
            &["notify", "127.0.0.1:1", "chat", "hi"],
            &[
                "list",
                "ws://127.0.0.1:1/gotalk/",
                "--json",
                "--timeout",
                "2s",
            ],
            &["describe", "http://127.0.0.1:1/gotalk/", "greet", "--trace"],
            &["request", "--check", "127.0.0.1:1", "greet", "{}"],
            &["gen", "ts", "127.0.0.1:1", "--out", "web", "--name", "chat"],
            &[
                "gen",
                "ts",
                "--listing",
                "l.json",
                "--gotalk-js",
                "/gotalk/gotalk.js",
            ],
            &["listen", "--count", "2", "127.0.0.1:1", "a", "b"],
            &["decode", "--hex", "-"],
            &["serve", "--threads", "1", "--max-payload", "32MiB"],
            &["bench", "--self", "--threads", "2", "-n", "10"],
            &[
                "serve",
                "--http",
                "127.0.0.1:0",
                "--ws-path",
                "/api/",
                "--ws-allow-origin",
                "https://a.example",
            ],
            &["request", "http://127.0.0.1:1/gotalk/", "echo", "x"],
            &[
                "serve",
                "--addr",
                "127.0.0.1:0",
                "--ws",
                "127.0.0.1:0",
                "--ws-path",
                "/api/gotalk",
                "--ws-allow-origin",
                "https://a.example",
                "--ws-allow-origin",
                "http://localhost:3000",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ],
            &["request", "--ca", "ca.pem", "tls://localhost:1", "echo"],
            &[
                "stream",
                "wss://h:1/gotalk/",
                "stream-echo",
                "--ca",
                "ca.pem",
            ],
            &["notify", "ws://h:1/gotalk/", "chat", "hi", "--trace"],
            &["listen", "--ca", "ca.pem", "wss://h/gotalk/"],
            &["bench", "--self", "--ws", "-n", "10"],
            &["bench", "tls://127.0.0.1:1", "--ca", "ca.pem", "-n", "10"],
            &[
                "bench", "--self", "-c", "4", "-n", "10", "--json", "--size", "5", "--conns", "2",
            ],
            &[
                "bench",
                "127.0.0.1:1",
                "--duration",
                "1s",
                "--op",
                "greet",
                "--payload",
                "{}",
            ],
        ];
        for line in lines {
            let argv = std::iter::once("gotalk").chain(line.iter().copied());
            if let Err(e) = Cli::try_parse_from(argv) {
                panic!("{line:?}: {e}");
            }
        }
        for bad in [
            &["bench"][..],
            &["bench", "--self", "127.0.0.1:1"],
            &["bench", "--self", "-n", "1", "--duration", "1s"],
            &["request", "nohost", "echo"],
            &["request", "--json", "--raw", "127.0.0.1:1", "echo"],
            &["serve", "--addr", "127.0.0.1:1", "--unix", "/s"],
            &["stream", "--chunk", "0", "127.0.0.1:1", "x"],
            &["serve", "--ws-path", "/g/"],
            &["serve", "--http", "127.0.0.1"],
            &["serve", "--ws-allow-origin", "https://a.example"],
            &["serve", "--ws", "ws://127.0.0.1:1/gotalk/"],
            &["serve", "--ws", "127.0.0.1:1", "--ws-path", "g"],
            &[
                "serve",
                "--ws",
                "127.0.0.1:1",
                "--ws-allow-origin",
                "a.example",
            ],
            &["serve", "--tls-cert", "c.pem"],
            &["serve", "--tls-key", "k.pem"],
            &["serve", "--unix", "/s", "--tls-cert", "c", "--tls-key", "k"],
            &["serve", "--insecure"],
            &["request", "--insecure", "tls://h:1", "echo"],
            &["request", "tls://h", "echo"],
            &["bench", "127.0.0.1:1", "--ws"],
            &["decode", "--threads", "2"],
            &["list"],
            &["gen", "ts"],
            &["gen", "ts", "127.0.0.1:1", "--listing", "l.json"],
            &["gen", "ts", "--listing", "l.json", "--name", "a/b"],
            &["describe", "127.0.0.1:1"],
            &["--threads", "2", "serve"],
            &["request", "--max-attempts", "0", "127.0.0.1:1", "echo"],
            &["request", "--timeout", "0", "127.0.0.1:1", "echo"],
            &["bench", "--self", "-n", "0"],
            &["bench", "--self", "--duration", "0s"],
        ] {
            let argv = std::iter::once("gotalk").chain(bad.iter().copied());
            assert!(
                Cli::try_parse_from(argv).is_err(),
                "{bad:?} should be refused"
            );
        }
    }
}
