//! [`HubError`]: what can go wrong, with the texts clients get.

use crate::{auth::AuthError, broker::BrokerError};

/// Why a hub operation failed.
///
/// For operations requested by clients, the error's text (its `Display`)
/// is the payload of the error result the client gets, as listed in
/// docs/hub.md ("Errors").
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// The hub requires authentication and the connection has not
    /// authenticated (text: `unauthenticated`).
    #[error("unauthenticated")]
    Unauthenticated,
    /// The token was refused, or the identity has expired (texts of
    /// [`AuthError`], e.g. `token expired`).
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The connection's permissions lack `level` on `channel`
    /// (text: `forbidden: read access to "c"`).
    #[error("forbidden: {level} access to {channel:?}")]
    Forbidden {
        /// `read`, `write` or `presence`.
        level: &'static str,
        /// The channel.
        channel: String,
    },
    /// A hook said no (text: `denied: <the hook's reason>`).
    #[error("denied: {0}")]
    Denied(String),
    /// The channel name is empty, too long or has control characters.
    #[error("invalid channel")]
    InvalidChannel,
    /// The request is not the JSON its operation takes.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Data to publish is not one JSON value.
    #[error("invalid data: {0}")]
    InvalidData(String),
    /// The connection already subscribes to the channel.
    #[error("already subscribed to {0:?}")]
    AlreadySubscribed(String),
    /// The connection has as many subscriptions as
    /// [`Limits::max_subscriptions`](crate::Limits::max_subscriptions).
    #[error("too many subscriptions (at most {0})")]
    TooManySubscriptions(usize),
    /// Live publications arrived faster than a subscription could be set
    /// up ([`Limits::max_held_publications`](crate::Limits::max_held_publications));
    /// the client may try again.
    #[error("subscribe overrun: publications outran it, try again")]
    SubscribeOverrun,
    /// No connection with this client id is open on this node.
    #[error("no such client: {0}")]
    UnknownClient(String),
    /// The connection is closed or closing.
    #[error("connection closed")]
    Closed,
    /// The connection was not given a hub session: serve it through
    /// [`Hub::attach`](crate::Hub::attach), or call
    /// [`Hub::open`](crate::Hub::open) on it.
    #[error("no hub session on this connection")]
    NoSession,
    /// The broker failed (text: `broker unavailable: <why>`).
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl From<HubError> for gotalk_peer::HandlerError {
    fn from(e: HubError) -> Self {
        gotalk_peer::HandlerError::new(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_match_docs() {
        let forbidden = HubError::Forbidden {
            level: "read",
            channel: "c".into(),
        };
        assert_eq!(forbidden.to_string(), r#"forbidden: read access to "c""#);
        assert_eq!(HubError::Unauthenticated.to_string(), "unauthenticated");
        assert_eq!(
            HubError::from(AuthError::Expired).to_string(),
            "token expired"
        );
        assert_eq!(HubError::Denied("no".into()).to_string(), "denied: no");
        assert_eq!(
            HubError::from(BrokerError::Unavailable("down".into())).to_string(),
            "broker unavailable: down"
        );
    }
}
