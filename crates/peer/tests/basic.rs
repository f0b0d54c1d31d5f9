//! The main request kinds over an in-memory pair and over TCP.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{CloseReason, Config, Error, HandlerError, Handlers, Peer, Server};

fn server_handlers() -> Handlers {
    Handlers::new()
        .buffer(
            "echo",
            |_ctx, p: Bytes| async move { Ok::<_, HandlerError>(p) },
        )
        .json("add", |_ctx, (a, b): (i64, i64)| async move {
            Ok::<_, HandlerError>(a + b)
        })
        .buffer("fail", |_ctx, _p| async move {
            Err::<Bytes, _>(HandlerError::new("it failed"))
        })
        .buffer("panic", |_ctx, _p| async move {
            if true {
                panic!("boom");
            }
            Ok::<Bytes, HandlerError>(Bytes::new())
        })
        .buffer("call-back", |ctx, p: Bytes| async move {
            let r = ctx.peer().request("reverse", p).await?;
            Ok::<_, HandlerError>(r)
        })
        .stream("stream-echo", |_ctx, mut parts, mut out| async move {
            while let Some(part) = parts.next().await {
                out.send(part?).await?;
            }
            Ok::<_, HandlerError>(())
        })
}

fn client_handlers() -> Handlers {
    Handlers::new().buffer("reverse", |_ctx, p: Bytes| async move {
        let mut v = p.to_vec();
        v.reverse();
        Ok::<_, HandlerError>(v)
    })
}

#[tokio::test]
async fn pair_request_kinds() {
    let (client, _server) = Peer::pair(client_handlers(), server_handlers(), Config::default())
        .await
        .unwrap();
    assert_eq!(client.request("echo", "hi").await.unwrap(), "hi");
    assert_eq!(
        client
            .request_json::<_, i64>("add", &(2, 40))
            .await
            .unwrap(),
        42
    );
    let err = client.request("fail", "").await.unwrap_err();
    assert_eq!(err.remote().unwrap().message(), "it failed");
    let err = client.request("nope", "").await.unwrap_err();
    assert_eq!(
        err.remote().unwrap().message(),
        "unknown operation \"nope\""
    );
    let err = client.request("panic", "").await.unwrap_err();
    assert!(
        err.remote().unwrap().message().contains("panicked"),
        "{err}"
    );
    // still up after a panic
    assert_eq!(client.request("call-back", "abc").await.unwrap(), "cba");

    let (mut tx, mut rx) = client.stream_request("stream-echo").await.unwrap();
    tx.send("one").await.unwrap();
    tx.send("two").await.unwrap();
    tx.end().await.unwrap();
    let mut got = Vec::new();
    while let Some(part) = rx.next().await {
        got.push(part.unwrap());
    }
    assert_eq!(got, vec![Bytes::from("one"), Bytes::from("two")]);
    // single request to a stream handler, result collected
    assert_eq!(client.request("stream-echo", "solo").await.unwrap(), "solo");
}

#[tokio::test]
async fn tcp_server_and_close() {
    let server = Server::bind("127.0.0.1:0", server_handlers(), Config::default())
        .await
        .unwrap()
        .spawn();
    let client = Peer::connect(
        server.local_addr().to_string(),
        client_handlers(),
        Config::default(),
    )
    .await
    .unwrap();
    assert_eq!(client.request("echo", "tcp").await.unwrap(), "tcp");
    assert_eq!(client.request("call-back", "xyz").await.unwrap(), "zyx");
    let weak = client.downgrade_for_leak_check();
    server.shutdown().await;
    let reason = tokio::time::timeout(Duration::from_secs(5), client.closed())
        .await
        .unwrap();
    assert!(matches!(reason, CloseReason::PeerClosed), "{reason}");
    let err = client.request("echo", "late").await.unwrap_err();
    assert!(matches!(err, Error::Closed(_)), "{err}");
    drop(client);
    for _ in 0..100 {
        if weak.upgrade().is_none() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("connection state leaked after close");
}
