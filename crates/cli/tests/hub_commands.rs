//! `gotalk serve --hub` with `token`, `subscribe`, `publish`, `presence` and
//! `history`, as a user runs them.

mod common;

use common::{Kill, Server, run, spawn_ready, wait_for};
use serde_json::Value;

const SECRET: &str = "correct horse battery staple";

fn token(user: &str, channels: &[&str]) -> String {
    let mut args = vec!["token", "--secret", SECRET, "--user", user];
    for c in channels {
        args.extend(["--channel", c]);
    }
    let out = run(&args, b"");
    assert_eq!(out.code, 0, "{}", out.stderr);
    let token = out.stdout.trim().to_owned();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    token
}

/// `gotalk subscribe ARGS...` once subscribed: the process, and its stdout.
fn subscribe(args: &[&str]) -> (Kill, std::sync::mpsc::Receiver<String>) {
    spawn_ready("subscribe", args, "subscribed to ")
}

fn json(line: &str) -> Value {
    serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn a_token_lets_a_user_publish_subscribe_see_presence_and_read_history() {
    let server = Server::start(&["--hub", "--jwt-secret", SECRET, "--heartbeat", "off"]);
    let addr = server.addr();
    let ann = token("ann", &["chat:*=read,write,presence"]);

    let (mut sub, lines) = subscribe(&[
        addr,
        "chat:lobby",
        "--token",
        &ann,
        "--presence",
        "--count",
        "3",
    ]);
    let who = run(&["presence", addr, "chat:lobby", "--token", &ann], b"");
    assert_eq!(who.code, 0, "{}", who.stderr);
    assert!(who.stdout.starts_with("ann "), "{}", who.stdout);

    let mut epoch = String::new();
    for (i, data) in [r#"{"text":"hi"}"#, r#""plain json string""#]
        .iter()
        .enumerate()
    {
        let out = run(&["publish", addr, "chat:lobby", data, "--token", &ann], b"");
        assert_eq!(out.code, 0, "{}", out.stderr);
        let at = json(out.stdout.trim());
        assert_eq!(at["offset"], i as u64 + 1);
        epoch = at["epoch"].as_str().unwrap().to_owned();
    }
    let out = run(
        &[
            "publish",
            addr,
            "chat:lobby",
            "-",
            "--text",
            "--token",
            &ann,
        ],
        b"from stdin",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);

    let got: Vec<Value> = (0..3)
        .map(|_| json(&wait_for(&lines, |_| true).expect("a publication")))
        .collect();
    assert_eq!(got[0]["data"]["text"], "hi");
    assert_eq!(got[1]["data"], "plain json string");
    assert_eq!(got[2]["data"], "from stdin");
    assert_eq!(got[2]["info"]["user"], "ann");
    let offsets: Vec<u64> = got.iter().map(|p| p["offset"].as_u64().unwrap()).collect();
    assert_eq!(offsets, [1, 2, 3]);
    let status = common::wait_exit(&mut sub.0, "subscribe --count 3");
    assert!(status.success(), "{status}");

    let since = format!("1:{epoch}");
    let history = run(
        &[
            "history",
            addr,
            "chat:lobby",
            "--since",
            &since,
            "--token",
            &ann,
        ],
        b"",
    );
    assert_eq!(history.code, 0, "{}", history.stderr);
    let offsets: Vec<u64> = history
        .stdout
        .lines()
        .map(|l| json(l)["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, [2, 3]);

    // Resuming from a position prints what came after it, then stops at --count.
    let resumed = run(
        &[
            "subscribe",
            addr,
            "chat:lobby",
            "--since",
            &since,
            "--data",
            "--count",
            "2",
            "--token",
            &ann,
        ],
        b"",
    );
    assert_eq!(resumed.code, 0, "{}", resumed.stderr);
    assert_eq!(resumed.stdout, "\"plain json string\"\n\"from stdin\"\n");
}

#[test]
fn the_hub_refuses_what_the_token_does_not_allow_with_clear_errors() {
    let server = Server::start(&["--hub", "--jwt-secret", SECRET, "--heartbeat", "off"]);
    let addr = server.addr();
    let reader = token("rita", &["news=read"]);

    let anonymous = run(&["publish", addr, "news", "1"], b"");
    assert_eq!(anonymous.code, 1);
    assert!(
        anonymous.stderr.contains("unauthenticated"),
        "{}",
        anonymous.stderr
    );

    let read_only = run(&["publish", addr, "news", "1", "--token", &reader], b"");
    assert_eq!(read_only.code, 1);
    assert!(
        read_only
            .stderr
            .contains(r#"forbidden: write access to "news""#),
        "{}",
        read_only.stderr
    );

    let elsewhere = run(&["subscribe", addr, "secret", "--token", &reader], b"");
    assert_eq!(elsewhere.code, 1);
    assert!(
        elsewhere.stderr.contains("forbidden"),
        "{}",
        elsewhere.stderr
    );

    let forged = token("rita", &["*=all"]).replace('.', ".x");
    let bad = run(&["publish", addr, "news", "1", "--token", &forged], b"");
    assert_eq!(bad.code, 1, "{}", bad.stderr);
    assert!(bad.stderr.contains("auth"), "{}", bad.stderr);

    let not_json = run(&["publish", addr, "news", "{oops", "--token", &reader], b"");
    assert_eq!(not_json.code, 2);
    assert!(not_json.stderr.contains("--text"), "{}", not_json.stderr);

    let bad_rule = run(
        &[
            "token",
            "--secret",
            SECRET,
            "--user",
            "x",
            "--channel",
            "news=fly",
        ],
        b"",
    );
    assert_eq!(bad_rule.code, 2);
    assert!(bad_rule.stderr.contains("fly"), "{}", bad_rule.stderr);
}

#[test]
fn channel_names_and_option_combinations_are_checked() {
    let server = Server::start(&["--hub", "--heartbeat", "off"]);
    let addr = server.addr();
    let out = run(&["subscribe", addr, "", "--count", "1"], b"");
    assert_eq!(
        out.code, 1,
        "an empty channel name is refused: {}",
        out.stderr
    );
    assert!(out.stderr.contains("invalid channel"), "{}", out.stderr);
    let help = run(&["serve", "--help"], b"");
    assert!(help.stdout.contains("--hub"), "{}", help.stdout);
    let dangling = run(&["serve", "--redis", "redis://127.0.0.1:1"], b"");
    assert_eq!(dangling.code, 2, "--redis needs --hub: {}", dangling.stderr);
}

/// `--scope` puts grants in the token's `scope` claim, which the hub's
/// verifier reads back as the identity's scopes (what `Authorize` checks).
#[test]
fn tokens_carry_scopes() {
    let out = run(
        &[
            "token",
            "--secret",
            SECRET,
            "--user",
            "ann",
            "--scope",
            "admin",
            "--scope",
            "billing:read",
        ],
        b"",
    );
    assert_eq!(out.code, 0, "{}", out.stderr);
    let verifier = gotalk_hub::auth::JwtVerifier::new(SECRET).unwrap();
    let identity = verifier.verify_token(out.stdout.trim()).unwrap();
    assert_eq!(identity.scopes, ["admin", "billing:read"]);
    let peer = identity.to_peer_identity();
    assert!(peer.has("admin") && !peer.has("billing"));

    let bad = run(
        &[
            "token",
            "--secret",
            SECRET,
            "--user",
            "ann",
            "--scope",
            "two words",
        ],
        b"",
    );
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(bad.stderr.contains("one non-empty word"), "{}", bad.stderr);
}
