//! The runtime's own metrics, through the `metrics` facade (feature
//! `metrics`): what no layer sees (bytes, connections, unknown operations,
//! streams, notifications, protocol violations). Without the feature every
//! function here is empty and compiles away.
//!
//! The handles are registered once, with the recorder installed when the
//! first connection of the process counts something: install the recorder
//! before opening connections (as `gotalk serve --metrics` does). Bytes are
//! counted per read and per write, not per frame.

#[cfg(feature = "metrics")]
mod enabled {
    use std::sync::OnceLock;

    use metrics::{Counter, Gauge, counter, gauge};

    use crate::CloseReason;

    /// Metric names, shared with `docs/middleware.md`.
    pub(crate) const BYTES_RECEIVED: &str = "gotalk_bytes_received_total";
    pub(crate) const BYTES_SENT: &str = "gotalk_bytes_sent_total";
    pub(crate) const CONNECTIONS_OPEN: &str = "gotalk_connections_open";
    pub(crate) const CONNECTIONS_ACCEPTED: &str = "gotalk_connections_accepted_total";
    pub(crate) const REQUESTS: &str = "gotalk_requests_total";
    pub(crate) const STREAM_REQUESTS: &str = "gotalk_stream_requests_total";
    pub(crate) const NOTIFICATIONS: &str = "gotalk_notifications_received_total";
    pub(crate) const PROTOCOL_VIOLATIONS: &str = "gotalk_protocol_violations_total";

    struct Handles {
        bytes_received: Counter,
        bytes_sent: Counter,
        open: Gauge,
        accepted: Counter,
        unknown: Counter,
        busy: Counter,
        streams: Counter,
        notifications: Counter,
    }

    fn handles() -> &'static Handles {
        static HANDLES: OnceLock<Handles> = OnceLock::new();
        HANDLES.get_or_init(|| Handles {
            bytes_received: counter!(BYTES_RECEIVED),
            bytes_sent: counter!(BYTES_SENT),
            open: gauge!(CONNECTIONS_OPEN),
            accepted: counter!(CONNECTIONS_ACCEPTED),
            unknown: counter!(REQUESTS, "outcome" => "unknown"),
            busy: counter!(REQUESTS, "outcome" => "busy"),
            streams: counter!(STREAM_REQUESTS),
            notifications: counter!(NOTIFICATIONS),
        })
    }

    pub(crate) fn bytes_received(n: usize) {
        handles().bytes_received.increment(n as u64);
    }
    pub(crate) fn bytes_sent(n: usize) {
        handles().bytes_sent.increment(n as u64);
    }
    pub(crate) fn connection_accepted() {
        handles().accepted.increment(1);
    }
    pub(crate) fn connection_opened() {
        handles().open.increment(1.0);
    }
    pub(crate) fn connection_closed(reason: Option<&CloseReason>) {
        handles().open.decrement(1.0);
        if let Some(CloseReason::ProtocolViolation { code, .. }) = reason {
            // Rare: registered when it happens.
            counter!(PROTOCOL_VIOLATIONS, "code" => code.as_u32().to_string()).increment(1);
        }
    }
    pub(crate) fn unknown_operation() {
        handles().unknown.increment(1);
    }
    pub(crate) fn refused_busy() {
        handles().busy.increment(1);
    }
    pub(crate) fn stream_request() {
        handles().streams.increment(1);
    }
    pub(crate) fn notification() {
        handles().notifications.increment(1);
    }
}

#[cfg(feature = "metrics")]
pub(crate) use enabled::*;

#[cfg(not(feature = "metrics"))]
mod disabled {
    use crate::CloseReason;

    #[inline(always)]
    pub(crate) fn bytes_received(_: usize) {}
    #[inline(always)]
    pub(crate) fn bytes_sent(_: usize) {}
    #[inline(always)]
    pub(crate) fn connection_accepted() {}
    #[inline(always)]
    pub(crate) fn connection_opened() {}
    #[inline(always)]
    pub(crate) fn connection_closed(_: Option<&CloseReason>) {}
    #[inline(always)]
    pub(crate) fn unknown_operation() {}
    #[inline(always)]
    pub(crate) fn refused_busy() {}
    #[inline(always)]
    pub(crate) fn stream_request() {}
    #[inline(always)]
    pub(crate) fn notification() {}
}

#[cfg(not(feature = "metrics"))]
pub(crate) use disabled::*;
