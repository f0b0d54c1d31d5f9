//! Deterministic tests of the core: two cores back to back in memory
//! ([`pair::Pair`]), driven by a manual clock, one file per topic.

mod admission;
mod budget;
mod close;
mod ids;
mod pair;
mod retry;
mod streams;
mod time;

use std::time::Duration;

use gotalk_proto::{Message, ProtocolErrorCode, RequestId};

use crate::Config;

const MS: Duration = Duration::from_millis(1);
const NS: Duration = Duration::from_nanos(1);

/// A quiet configuration: no heartbeats, no timeouts, default limits.
fn config() -> Config {
    Config {
        heartbeat_interval: None,
        read_timeout: None,
        write_timeout: None,
        ..Config::default()
    }
}

fn id(n: u32) -> RequestId {
    RequestId::from_u32(n)
}

/// True if `msg` is the ProtocolError `code`.
fn is_protocol_error(msg: &Message, code: ProtocolErrorCode) -> bool {
    matches!(msg, Message::ProtocolError { code: c } if *c == code)
}
