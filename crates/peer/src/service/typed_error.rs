//! How a typed service error travels in an error result, and
//! [`CallError`], what a typed client returns.

use std::fmt;

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{Error, HandlerError};

/// The JSON of a typed error result: `{"message": "<Display text>",
/// "error": <the error as serde writes it>}`. Clients that know nothing of
/// the type (the Go package, gotalk.js, `gotalk request`) show the payload
/// as text, and it reads as JSON with a sentence in it.
#[derive(Serialize)]
struct EnvelopeOut<'a, E> {
    message: String,
    error: &'a E,
}

#[derive(Deserialize)]
struct EnvelopeIn<E> {
    #[allow(dead_code)] // required in the shape, read by people
    message: String,
    error: E,
}

/// The error result for a typed error `e`: the envelope, or the `Display`
/// text alone if `e` cannot be serialised.
pub(crate) fn encode<E: Serialize + fmt::Display>(e: &E) -> HandlerError {
    let envelope = EnvelopeOut {
        message: e.to_string(),
        error: e,
    };
    match serde_json::to_vec(&envelope) {
        Ok(json) => HandlerError::with_payload(json),
        Err(error) => {
            tracing::warn!(%error, "cannot serialise a typed service error; sending its text");
            HandlerError::new(e.to_string())
        }
    }
}

/// The typed error in an error result, if it holds one of type `E`.
pub(crate) fn decode<E: DeserializeOwned>(payload: &[u8]) -> Option<E> {
    serde_json::from_slice::<EnvelopeIn<E>>(payload)
        .ok()
        .map(|e| e.error)
}

/// What a call through a typed client fails with, for an operation whose
/// method returns `Result<T, E>`: the service's own error `E`, sent as a
/// typed error, or anything else that went wrong ([`Error`]: the
/// connection, a timeout, an error result that is not a typed `E`).
///
/// An `E` that is turned into a [`HandlerError`] (`Into<HandlerError>`, such
/// as `HandlerError` or `String`) travels as plain text and cannot be
/// rebuilt: it arrives as `CallError::Call(Error::Remote(..))`.
#[derive(Debug)]
pub enum CallError<E> {
    /// The service answered with its typed error.
    Service(E),
    /// The call failed otherwise.
    Call(Error),
}

impl<E> CallError<E> {
    /// The typed error, if that is what this is.
    pub fn service(&self) -> Option<&E> {
        match self {
            Self::Service(e) => Some(e),
            Self::Call(_) => None,
        }
    }

    /// The other failure, if that is what this is.
    pub fn call(&self) -> Option<&Error> {
        match self {
            Self::Service(_) => None,
            Self::Call(e) => Some(e),
        }
    }

    /// `e`, with an error result holding a typed error (`decode` finds it)
    /// turned into [`CallError::Service`].
    #[doc(hidden)]
    pub fn from_error(e: Error, decode: fn(&[u8]) -> Option<E>) -> Self {
        match &e {
            Error::Remote(remote) => match decode(remote.payload()) {
                Some(typed) => Self::Service(typed),
                None => Self::Call(e),
            },
            _ => Self::Call(e),
        }
    }
}

impl<E> From<Error> for CallError<E> {
    fn from(e: Error) -> Self {
        Self::Call(e)
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Service(e) => e.fmt(f),
            Self::Call(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Display + fmt::Debug> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Service(_) => None,
            Self::Call(e) => Some(e),
        }
    }
}
