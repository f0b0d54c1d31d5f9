//! `gotalk list`, `gotalk describe`, and `gotalk request` explaining an
//! input that breaks the listed schema, against `gotalk serve` (whose test
//! operations are a typed service with a listing) over TCP, WebSocket and
//! HTTP, and against a server without a listing.

mod common;

use common::{Server, run};

#[test]
fn list_prints_every_operation_over_every_transport() {
    let server = Server::start(&["--ws", "127.0.0.1:0", "--http", "127.0.0.1:0"]);
    for addr in [server.addr(), server.ws_url(), server.http_url()] {
        let o = run(&["list", addr], b"");
        assert_eq!(o.code, 0, "{addr}: {}", o.stderr);
        for line in [
            "greet        single        GreetIn -> GreetOut",
            "stream-echo  stream        stream<bytes> -> stream<bytes>  ! HandlerError",
            "fail         single        bytes -> bytes  ! HandlerError",
        ] {
            assert!(
                o.stdout.contains(line),
                "{addr}: no {line:?} in\n{}",
                o.stdout
            );
        }
    }
    let o = run(&["list", "--json", server.addr()], b"");
    let listing: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(listing["version"], 1);
    assert_eq!(
        listing["$defs"]["GreetIn"]["required"],
        serde_json::json!(["name"])
    );
}

#[test]
fn describe_prints_the_schemas_and_their_definitions() {
    let server = Server::start(&[]);
    let o = run(&["describe", server.addr(), "greet"], b"");
    assert_eq!(o.code, 0, "{}", o.stderr);
    assert!(
        o.stdout.starts_with("greet (single), TestOps::greet\n"),
        "{}",
        o.stdout
    );
    for part in [
        "input: GreetIn (JSON)",
        "\"$ref\": \"#/$defs/GreetIn\"",
        "output: GreetOut (JSON)",
        "definitions:\nGreetIn: {",
        "GreetOut: {",
    ] {
        assert!(o.stdout.contains(part), "no {part:?} in\n{}", o.stdout);
    }
    let o = run(&["describe", server.addr(), "nope"], b"");
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("lists no operation \"nope\""),
        "{}",
        o.stderr
    );
}

#[test]
fn request_explains_an_input_the_schema_refuses() {
    let server = Server::start(&["--http", "127.0.0.1:0"]);
    for addr in [server.addr(), server.http_url()] {
        let o = run(&["request", addr, "greet", r#"{"name":7}"#], b"");
        assert_eq!(o.code, 1, "{addr}: {}", o.stderr);
        assert!(
            o.stderr.contains("invalid input")
                && o.stderr.contains(
                    "the input does not match greet's GreetIn schema: at /name: expected string, got integer 7"
                ),
            "{addr}: {}",
            o.stderr
        );
        // --check: refused here, never sent.
        let o = run(&["request", "--check", addr, "greet", "{"], b"");
        assert_eq!(o.code, 2, "{addr}: {}", o.stderr);
        assert!(
            o.stderr.contains("not sent: the input is not JSON"),
            "{}",
            o.stderr
        );
        let o = run(
            &["request", "--check", addr, "greet", r#"{"name":"A"}"#],
            b"",
        );
        assert_eq!(
            (o.code, o.stdout.as_str()),
            (0, "{\"greeting\":\"Hello A\"}\n"),
            "{}",
            o.stderr
        );
    }
    // Other failures get no explanation.
    let o = run(&["request", server.addr(), "fail", ""], b"");
    assert_eq!(o.code, 1);
    assert!(!o.stderr.contains("schema"), "{}", o.stderr);
}

#[test]
fn a_server_without_a_listing_says_so() {
    // A server of the library with one operation and no listing.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let handlers = gotalk_peer::Handlers::new().buffer("echo", |_ctx, p| async move {
        Ok::<_, gotalk_peer::HandlerError>(p)
    });
    let server = runtime.block_on(async {
        gotalk_peer::Server::bind("127.0.0.1:0", handlers, gotalk_peer::Config::default())
            .await
            .unwrap()
            .spawn()
    });
    let addr = server.local_addr().to_string();
    let o = run(&["list", &addr], b"");
    assert_eq!(o.code, 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("offers no listing (gotalk.list: unknown operation"),
        "{}",
        o.stderr
    );
    let o = run(&["request", "--check", &addr, "echo", "hi"], b"");
    assert_eq!((o.code, o.stdout.as_str()), (0, "hi\n"), "{}", o.stderr);
    assert!(
        o.stderr.contains("offers no listing to check"),
        "{}",
        o.stderr
    );
    runtime.block_on(server.shutdown());
}
