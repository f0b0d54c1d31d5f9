//! What a reconnecting client is doing, and the events it reports.

use std::{fmt, sync::Arc};

use tokio::time::Instant;

use crate::{CloseReason, ConnectError};

/// Where a [`ReconnectingPeer`](crate::ReconnectingPeer) is, as
/// [`state`](crate::ReconnectingPeer::state) reports it and
/// [`watch_state`](crate::ReconnectingPeer::watch_state) follows it.
///
/// A client starts in `Connecting { attempt: 1 }`, and moves
/// `Connecting → Connected → BackingOff → Connecting → …` until
/// [`close`](crate::ReconnectingPeer::close), which leads to `Closed` from
/// any state. A failed attempt goes from `Connecting` to `BackingOff`.
///
/// `attempt` counts connect attempts from 1 since the last connection that
/// lived [`ReconnectOptions::reset_after`](super::ReconnectOptions::reset_after)
/// or more; the [`Backoff`](super::Backoff) grows with it.
///
/// ```
/// use gotalk_peer::reconnect::State;
/// let state = State::Connecting { attempt: 1 };
/// assert!(!state.is_connected());
/// assert_eq!(state.to_string(), "connecting (attempt 1)");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum State {
    /// A connect attempt is under way (the connect function is running).
    Connecting {
        /// This attempt's number.
        attempt: u32,
    },
    /// Connected: calls go out on the connection at once.
    Connected,
    /// Waiting before the next connect attempt.
    BackingOff {
        /// When the next attempt starts.
        until: Instant,
        /// The next attempt's number.
        attempt: u32,
    },
    /// Closed with [`close`](crate::ReconnectingPeer::close) or by dropping
    /// the last handle: no more connects, every call fails with
    /// [`Error::Closed`](crate::Error::Closed).
    Closed,
}

impl State {
    /// True in [`Connected`](Self::Connected).
    pub fn is_connected(&self) -> bool {
        matches!(self, Self::Connected)
    }

    /// True in [`Closed`](Self::Closed).
    pub fn is_closed(&self) -> bool {
        matches!(self, Self::Closed)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            Self::Connected => f.write_str("connected"),
            Self::BackingOff { until, attempt } => write!(
                f,
                "backing off for {:?} before attempt {attempt}",
                until.saturating_duration_since(Instant::now())
            ),
            Self::Closed => f.write_str("closed"),
        }
    }
}

/// What happened to a [`ReconnectingPeer`](crate::ReconnectingPeer), in
/// order, as [`events`](crate::ReconnectingPeer::events) reports it: every
/// state change, plus why a connection was lost or an attempt failed.
///
/// ```no_run
/// # async fn f(client: gotalk_peer::ReconnectingPeer) {
/// use gotalk_peer::reconnect::Event;
/// let mut events = client.events();
/// while let Ok(event) = events.recv().await {
///     match event {
///         Event::Disconnected(reason) => tracing::warn!(%reason, "connection lost"),
///         Event::ConnectFailed { attempt, error } => tracing::warn!(attempt, %error, "connect failed"),
///         Event::State(state) => tracing::info!(%state, "state"),
///         _ => {}
///     }
/// }
/// # }
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// The client entered this state.
    State(State),
    /// The connection closed, for this reason (sent before the
    /// [`BackingOff`](State::BackingOff) state that follows).
    Disconnected(CloseReason),
    /// A connect attempt failed (sent before the
    /// [`BackingOff`](State::BackingOff) state that follows).
    ConnectFailed {
        /// The attempt's number.
        attempt: u32,
        /// Why it failed.
        error: Arc<ConnectError>,
    },
}
