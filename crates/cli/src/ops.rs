//! The operations `gotalk serve` offers, and the one every client offers back.

use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use gotalk_peer::{
    ConnectionInfo, Connections, Context, HandlerError, Handlers,
    service::{Incoming, Listing, Outgoing},
};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Longest wait `slow` accepts, so a typo cannot park a handler for hours.
pub(crate) const SLOW_MAX_MS: u64 = 60_000;

/// One line per operation, for `--help`.
pub(crate) const OPERATIONS_HELP: &str = "\
Operations:
  echo         returns the payload
  greet        JSON {\"name\":\"X\"} -> {\"greeting\":\"Hello X\"}
  fail         error result: the payload, or \"fail: this operation always fails\"
  slow         payload is a number of milliseconds (at most 60000): waits, then echoes it
  reverse      returns the payload's bytes reversed
  stream-echo  stream handler: echoes each request part as a result part
  stream-fail  stream handler: echoes the first part, then fails with an error result
  call-back    asks the requester for `reverse` of the payload and returns its answer
  gotalk.list  the listing: these operations and their JSON Schemas (`gotalk list ADDR`)
Notifications:
  ping         answered with a `pong` notification carrying the same payload
  any other    relayed to every other connection (so `gotalk listen` sees `gotalk notify`)";

#[derive(Serialize, Deserialize, JsonSchema)]
struct GreetIn {
    name: String,
}

#[derive(Serialize, Deserialize, JsonSchema)]
struct GreetOut {
    greeting: String,
}

/// The test operations, as a typed service: the listing (`gotalk list`)
/// describes them from this definition.
#[gotalk_peer::service(schema)]
trait TestOps {
    /// Returns the payload.
    async fn echo(&self, payload: Bytes) -> Bytes;
    /// {"name":"X"} -> {"greeting":"Hello X"}.
    async fn greet(&self, input: GreetIn) -> GreetOut;
    /// Always an error result: the payload, or "fail: this operation always fails".
    async fn fail(&self, payload: Bytes) -> Result<Bytes, HandlerError>;
    /// The payload is a number of milliseconds (at most 60000): waits, then echoes it.
    async fn slow(&self, payload: Bytes) -> Result<Bytes, HandlerError>;
    /// Returns the payload's bytes reversed.
    async fn reverse(&self, payload: Bytes) -> Bytes;
    /// Echoes each request part as a result part.
    #[op(name = "stream-echo")]
    async fn stream_echo(&self, parts: Incoming<Bytes>) -> Outgoing<Bytes>;
    /// Echoes the first part, then fails with an error result.
    #[op(name = "stream-fail")]
    async fn stream_fail(&self, parts: Incoming<Bytes>) -> Outgoing<Bytes>;
    /// Asks the requester for `reverse` of the payload and returns its answer.
    #[op(name = "call-back")]
    async fn call_back(&self, ctx: Context, payload: Bytes) -> Result<Bytes, HandlerError>;
}

struct Ops;

impl TestOps for Ops {
    async fn echo(&self, payload: Bytes) -> Bytes {
        payload
    }

    async fn greet(&self, input: GreetIn) -> GreetOut {
        GreetOut {
            greeting: format!("Hello {}", input.name),
        }
    }

    async fn fail(&self, payload: Bytes) -> Result<Bytes, HandlerError> {
        Err(if payload.is_empty() {
            HandlerError::new("fail: this operation always fails")
        } else {
            HandlerError::with_payload(payload)
        })
    }

    async fn slow(&self, payload: Bytes) -> Result<Bytes, HandlerError> {
        tokio::time::sleep(slow_wait(&payload)?).await;
        Ok(payload)
    }

    async fn reverse(&self, payload: Bytes) -> Bytes {
        reversed(&payload)
    }

    async fn stream_echo(&self, parts: Incoming<Bytes>) -> Outgoing<Bytes> {
        Outgoing::new(parts)
    }

    async fn stream_fail(&self, mut parts: Incoming<Bytes>) -> Outgoing<Bytes> {
        let first = match parts.next().await {
            Some(Ok(part)) => Some(part),
            Some(Err(e)) => return Outgoing::fail(e),
            None => None,
        };
        let mut count = usize::from(first.is_some());
        let rest = async move {
            while let Some(part) = parts.next().await {
                part?;
                count += 1;
            }
            Err::<Bytes, _>(HandlerError::new(format!(
                "stream-fail: failing on purpose after {count} part(s)"
            )))
        };
        Outgoing::new(futures::stream::iter(first.map(Ok)).chain(futures::stream::once(rest)))
    }

    async fn call_back(&self, ctx: Context, payload: Bytes) -> Result<Bytes, HandlerError> {
        // Over HTTP there is no connection to call back.
        let peer = ctx.try_peer().ok_or_else(|| {
            HandlerError::new("call-back: needs a gotalk connection to call back (not HTTP)")
        })?;
        Ok(peer.request("reverse", payload).await?)
    }
}

/// `slow`'s wait, from its payload.
fn slow_wait(payload: &[u8]) -> Result<Duration, HandlerError> {
    let text = std::str::from_utf8(payload).unwrap_or("").trim();
    let ms: u64 = text.parse().map_err(|_| {
        HandlerError::new(format!(
            "slow: payload must be a number of milliseconds, not {:?}",
            String::from_utf8_lossy(payload)
        ))
    })?;
    if ms > SLOW_MAX_MS {
        return Err(HandlerError::new(format!(
            "slow: {ms} ms is more than the maximum of {SLOW_MAX_MS} ms"
        )));
    }
    Ok(Duration::from_millis(ms))
}

fn reversed(payload: &[u8]) -> Bytes {
    let mut v = payload.to_vec();
    v.reverse();
    Bytes::from(v)
}

/// The number of the connection a handler runs on (`None` if it has none:
/// not a server connection).
fn conn_of(ctx: &gotalk_peer::Context) -> Option<u64> {
    ctx.user_data::<ConnectionInfo>().map(|info| info.id)
}

/// The handlers of `gotalk serve`, shared by every connection of one
/// server (TCP, TLS and WebSocket alike); with `relay`, notifications are
/// relayed to the other connections in `connections`, the server's
/// registry.
pub(crate) fn server_handlers(connections: Connections, relay: bool) -> Handlers {
    let handlers = test_operations();
    if relay {
        relay_notifications(handlers, connections)
    } else {
        handlers
    }
}

/// The operations of `OPERATIONS_HELP` (without the relay), and the
/// listing that describes them (`gotalk list`).
fn test_operations() -> Handlers {
    Listing::new()
        .service(TestOpsServer::<Ops>::description())
        .register(TestOpsServer::new(Ops).into_handlers())
}

/// Adds the relay: every notification other than `ping` goes to every
/// other connection (so `gotalk listen` sees `gotalk notify`).
fn relay_notifications(handlers: Handlers, connections: Connections) -> Handlers {
    handlers
        .notification("ping", move |ctx, payload| {
            // The server registers a connection before reading its first
            // message, so one that sees the pong surely gets relays
            // (`gotalk listen` relies on that).
            let conn = conn_of(&ctx);
            async move {
                // Over HTTP there is nobody to answer.
                let Some(peer) = ctx.try_peer() else { return };
                if let Err(e) = peer.notify("pong", payload).await {
                    tracing::debug!(conn, error = %e, "could not answer ping");
                }
            }
        })
        .notification("", move |ctx, payload| {
            let conn = conn_of(&ctx);
            let others: Vec<_> = connections
                .list()
                .into_iter()
                .filter(|(id, peer)| Some(*id) != conn && !peer.is_closed())
                .map(|(_, peer)| peer)
                .collect();
            // One shared payload for every receiver, never waiting: a
            // listener that does not read is closed as a slow consumer
            // instead of holding a copy of everything relayed to it.
            for peer in others {
                if let Err(e) = peer.try_notify(ctx.name(), payload.clone()) {
                    tracing::debug!(conn, error = %e, "could not relay notification");
                }
            }
            async {}
        })
}

/// What every client command answers: `reverse`, so `call-back` works.
pub(crate) fn client_handlers() -> Handlers {
    Handlers::new().buffer("reverse", |_ctx, payload: Bytes| async move {
        Ok::<_, HandlerError>(reversed(&payload))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_parses_its_wait() {
        assert_eq!(slow_wait(b" 25\n").unwrap(), Duration::from_millis(25));
        assert!(slow_wait(b"soon").is_err());
        assert!(slow_wait(b"60001").is_err());
        assert_eq!(&reversed(b"abc")[..], b"cba");
    }

    #[tokio::test]
    async fn every_operation_in_memory() {
        let (client, _server) = gotalk_peer::Peer::pair(
            client_handlers(),
            server_handlers(Connections::new(), true),
            gotalk_peer::Config::default(),
        )
        .await
        .unwrap();
        assert_eq!(client.request("echo", "hi").await.unwrap(), "hi");
        assert_eq!(
            client.request("greet", r#"{"name":"X"}"#).await.unwrap(),
            r#"{"greeting":"Hello X"}"#
        );
        let e = client.request("fail", "").await.unwrap_err();
        assert_eq!(
            e.remote().unwrap().message(),
            "fail: this operation always fails"
        );
        assert_eq!(client.request("slow", "5").await.unwrap(), "5");
        assert_eq!(client.request("reverse", "abc").await.unwrap(), "cba");
        assert_eq!(client.request("call-back", "abc").await.unwrap(), "cba");
        assert_eq!(client.request("stream-echo", "xy").await.unwrap(), "xy");
        let e = client.request("stream-fail", "xy").await.unwrap_err();
        assert!(e.remote().unwrap().message().contains("after 1 part"));
    }
}
