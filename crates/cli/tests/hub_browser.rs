//! A page in headless Chromium subscribes to a channel of
//! `gotalk serve --hub --ws --static DIR --history 100` with gotalk.js,
//! loses its connection, misses publications while away, reconnects, and
//! has then received every publication exactly once and in order: the
//! resubscribe asked for what came after the last one it had (`since`).
//!
//! The page (`hub_browser/page.html`) drops its socket itself
//! (`conn.ws.close()`) and keeps reconnecting attempts failing until told
//! otherwise; `hub_browser/driver.cjs` drives it with playwright-core, one
//! command per line; this test publishes with a [`Peer`].
//!
//! Needs `/usr/bin/chromium`, `node` and `crates/peer/tests/browser/node_modules`
//! (`crates/peer/tests/browser/setup.sh` installs them). Without them the
//! test fails when `CI=true` and is skipped (with a message) otherwise.
#![allow(clippy::print_stderr)]

mod common;

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{ChildStdin, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use common::{Kill, Server, lines_of};
use gotalk_peer::{Config, Handlers, Peer};
use serde_json::{Value, json};

const PAGE: &str = include_str!("hub_browser/page.html");
const CHANNEL: &str = "news";
/// Longest the driver may take to answer a command (launching Chromium included).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(60);

/// Where playwright-core is installed, if everything the test needs is here.
fn browser_dir() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../peer/tests/browser")
        .canonicalize()
        .ok()?;
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    (Path::new("/usr/bin/chromium").exists()
        && dir.join("node_modules/playwright-core").exists()
        && node)
        .then_some(dir)
}

/// The driver process: commands in, one answer line each out.
struct Driver {
    stdin: ChildStdin,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    _process: Kill,
}

impl Driver {
    fn start(browser_dir: &Path, url: &str) -> Driver {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hub_browser/driver.cjs");
        let mut child = Command::new("node")
            .arg(script)
            .arg(url)
            .env("NODE_PATH", browser_dir.join("node_modules"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node");
        let stdin = child.stdin.take().unwrap();
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        Driver {
            stdin,
            stdout,
            stderr,
            _process: Kill(child),
        }
    }

    /// The next line the driver prints; panics with its stderr if none comes.
    fn answer(&self) -> String {
        self.stdout
            .recv_timeout(ANSWER_TIMEOUT)
            .unwrap_or_else(|_| {
                let stderr: Vec<String> = self.stderr.try_iter().collect();
                panic!("the browser driver did not answer:\n{}", stderr.join("\n"))
            })
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").expect("the browser driver is running");
        self.answer()
    }
}

/// Publishes `values` on the channel, one after the other.
fn publish(rt: &tokio::runtime::Runtime, publisher: &Peer, values: std::ops::RangeInclusive<u64>) {
    rt.block_on(async {
        for i in values {
            let position: Value = publisher
                .request_json(
                    "publish",
                    &json!({ "channel": CHANNEL, "data": { "n": i } }),
                )
                .await
                .expect("publish");
            assert_eq!(position["offset"], i);
        }
    });
}

#[test]
fn a_page_resumes_its_subscription_after_losing_its_connection() {
    let Some(browser_dir) = browser_dir() else {
        let why = "needs /usr/bin/chromium, node and crates/peer/tests/browser/node_modules: \
                   run `bash crates/peer/tests/browser/setup.sh`";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("skipped: {why}");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("index.html"), PAGE).unwrap();
    let server = Server::start(&[
        "--hub",
        "--history",
        "100",
        "--ws",
        "127.0.0.1:0",
        "--static",
        dir.path().to_str().unwrap(),
    ]);
    let page_url = server
        .ws_url()
        .replace("ws://", "http://")
        .replace("/gotalk/", "/");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let publisher = rt
        .block_on(Peer::connect(
            server.addr(),
            Handlers::new(),
            Config::default(),
        ))
        .expect("connect the publisher");

    let mut page = Driver::start(&browser_dir, &page_url);
    assert_eq!(page.answer(), "ready", "the page subscribed");
    publish(&rt, &publisher, 1..=3);
    assert_eq!(page.ask("wait 3"), "got 3");

    assert_eq!(page.ask("disconnect"), "disconnected reconnecting");
    publish(&rt, &publisher, 4..=6);
    assert_eq!(
        page.ask("reconnect"),
        "reconnected 3",
        "nothing arrived while the page was away"
    );
    publish(&rt, &publisher, 7..=9);
    assert_eq!(page.ask("wait 9"), "got 9");

    let report: Value = serde_json::from_str(&page.ask("report")).expect("a JSON report");
    let got: Vec<(u64, u64)> = report["got"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["offset"].as_u64().unwrap_or(0),
                d["data"]["n"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let expected: Vec<(u64, u64)> = (1..=9).map(|i| (i, i)).collect();
    assert_eq!(
        got, expected,
        "every publication once, in order, and nothing else: {report}"
    );
    assert_eq!(
        report["subscribed"],
        json!([
            // The first one had no `since`: nothing to recover.
            { "recovered": false, "offsets": [] },
            { "recovered": true, "offsets": [4, 5, 6] },
        ]),
        "the resubscribe got exactly what the page missed"
    );
    // The socket the page closed, then only the attempts made while it was kept away.
    let closes = report["closes"].as_array().unwrap();
    assert_eq!(
        closes[0], "gotalk: WebSocket closed (code 1005)",
        "{report}"
    );
    assert!(
        closes[1..]
            .iter()
            .all(|c| c == "gotalk: cannot open WebSocket: offline (test)"),
        "{report}"
    );
    rt.block_on(publisher.close());
}
