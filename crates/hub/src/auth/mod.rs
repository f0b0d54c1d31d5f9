//! Who a connection is, and what it may do on which channels.
//!
//! A [`Verifier`] turns a token into an [`Identity`]: a user, an optional
//! expiry, and [`Permissions`] per channel pattern. Built in:
//! `JwtVerifier` (HMAC-signed JWTs, feature `jwt`) and [`StaticTokens`] (a
//! token file). The token comes from the WebSocket upgrade request (header,
//! cookie or query parameter, see [`TokenSource`](crate::TokenSource)) or, on any transport,
//! from a first `auth` request, before which the hub serves nothing else.

use std::time::SystemTime;

use futures::future::BoxFuture;

#[cfg(feature = "jwt")]
mod jwt;
mod permissions;
mod static_tokens;
#[cfg(feature = "jwt")]
pub use jwt::{CHANNELS_CLAIM, Claims, Hmac, JwtError, JwtSigner, JwtVerifier};
pub use permissions::{Access, ParsePermissionsError, Permissions};
pub use static_tokens::{StaticTokens, TokenFileError};

/// An authenticated connection's identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The user (a JWT's `sub`).
    pub user: String,
    /// When the identity stops being valid (a JWT's `exp`); the hub closes
    /// the connection then unless the client refreshed its token.
    pub expires: Option<SystemTime>,
    /// What the user may do, per channel pattern.
    pub permissions: Permissions,
    /// What else the user may do (a JWT's `scope` claim): the grants of the
    /// connection's `gotalk_peer::middleware::Identity`, which the hub sets
    /// when the connection authenticates, so that the application's
    /// operations served beside the hub's can be guarded with
    /// `gotalk_peer::middleware::Authorize::grant`.
    pub scopes: Vec<String>,
}

impl Identity {
    /// The connection identity the hub sets for this one: the user as
    /// subject, the scopes as grants.
    pub fn to_peer_identity(&self) -> gotalk_peer::middleware::Identity {
        gotalk_peer::middleware::Identity::new(self.user.clone())
            .grants_from(self.scopes.iter().cloned())
    }
}

/// Why a token was refused. The texts reach the client as the error result
/// of `auth` (or the close reason of a WebSocket upgrade).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No token was given where one is required.
    #[error("unauthenticated: a token is required")]
    Missing,
    /// The token has expired.
    #[error("token expired")]
    Expired,
    /// The token's signature does not verify.
    #[error("invalid token signature")]
    BadSignature,
    /// The token is malformed or names no user.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token is not known (static tokens).
    #[error("unknown token")]
    Unknown,
}

/// Checks tokens. Implement it to plug in your own scheme.
pub trait Verifier: Send + Sync + 'static {
    /// The identity `token` stands for.
    fn verify<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Identity, AuthError>>;
}
