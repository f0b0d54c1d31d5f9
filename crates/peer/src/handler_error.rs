//! A handler's failure: the error result (or retry result) its caller gets.

use std::{fmt, time::Duration};

use bytes::Bytes;

/// A handler's failure, sent to the requester as an error result (`E`) or,
/// for [`HandlerError::retry`], a retry result (`e`).
///
/// ```
/// use std::time::Duration;
/// use gotalk_peer::HandlerError;
/// let e: HandlerError = "no such user".into();
/// assert_eq!(e.message(), "no such user");
/// assert!(HandlerError::retry(Duration::from_secs(1), "busy").is_retry());
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct HandlerError {
    message: Bytes,
    what: What,
}

/// An error result of some kind, or a retry result: one field of 16 bytes
/// (the kind sits in `Duration`'s niche), so that the results handlers
/// return, moved on every request, stay as small as before kinds existed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum What {
    Error(ErrorKind),
    Retry(Duration),
}

/// What an error result says about the call, for transports that have a
/// status for it: over HTTP (`http`) [`Unauthenticated`](Self::Unauthenticated)
/// is `401`, [`Forbidden`](Self::Forbidden) `403`, [`Failed`](Self::Failed)
/// `422`. On a gotalk connection every kind is the same error result: the
/// message is all the protocol carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The call failed (the default).
    #[default]
    Failed,
    /// The caller did not say who it is, and the operation needs to know.
    Unauthenticated,
    /// The caller is known and not allowed to make this call.
    Forbidden,
}

impl HandlerError {
    /// An error result with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: Bytes::from(message.into()),
            what: What::Error(ErrorKind::Failed),
        }
    }

    /// An error result with a raw payload.
    pub fn with_payload(payload: impl Into<Bytes>) -> Self {
        Self {
            message: payload.into(),
            what: What::Error(ErrorKind::Failed),
        }
    }

    /// A retry result: the requester may try again after `wait`.
    pub fn retry(wait: Duration, message: impl Into<String>) -> Self {
        Self {
            message: Bytes::from(message.into()),
            what: What::Retry(wait),
        }
    }

    /// An error result for a caller with no identity where the operation
    /// needs one ([`ErrorKind::Unauthenticated`]; `401` over HTTP).
    ///
    /// ```
    /// use gotalk_peer::{ErrorKind, HandlerError};
    /// let e = HandlerError::unauthenticated("log in first");
    /// assert_eq!(e.kind(), ErrorKind::Unauthenticated);
    /// assert_eq!(e.message(), "log in first");
    /// ```
    pub fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(message).with_kind(ErrorKind::Unauthenticated)
    }

    /// An error result for a caller that may not make this call
    /// ([`ErrorKind::Forbidden`]; `403` over HTTP).
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(message).with_kind(ErrorKind::Forbidden)
    }

    /// The same error with another [`ErrorKind`]; a retry result stays a
    /// retry result (of kind [`ErrorKind::Failed`]).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        if let What::Error(_) = self.what {
            self.what = What::Error(kind);
        }
        self
    }

    /// What the error says about the call ([`ErrorKind`]); `Failed` for a
    /// retry result.
    pub fn kind(&self) -> ErrorKind {
        match self.what {
            What::Error(kind) => kind,
            What::Retry(_) => ErrorKind::Failed,
        }
    }

    /// True for [`HandlerError::retry`].
    pub fn is_retry(&self) -> bool {
        matches!(self.what, What::Retry(_))
    }

    /// The wait of a retry result.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.what {
            What::Retry(wait) => Some(wait),
            What::Error(_) => None,
        }
    }

    /// The message as text.
    pub fn message(&self) -> String {
        String::from_utf8_lossy(&self.message).into_owned()
    }

    pub(crate) fn payload(&self) -> &Bytes {
        &self.message
    }
}

impl fmt::Debug for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HandlerError")
            .field("message", &self.message())
            .field("retry_after", &self.retry_after())
            .field("kind", &self.kind())
            .finish()
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for HandlerError {}

impl From<&str> for HandlerError {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for HandlerError {
    fn from(s: String) -> Self {
        Self::new(s)
    }
}

impl From<std::io::Error> for HandlerError {
    fn from(e: std::io::Error) -> Self {
        Self::new(e.to_string())
    }
}

impl From<serde_json::Error> for HandlerError {
    fn from(e: serde_json::Error) -> Self {
        Self::new(e.to_string())
    }
}

/// A failed call to the other side inside a handler becomes this handler's
/// error result (its remote error text, or the failure's description).
impl From<crate::Error> for HandlerError {
    fn from(e: crate::Error) -> Self {
        match e {
            crate::Error::Remote(r) => Self::with_payload(r.payload().clone()),
            other => Self::new(other.to_string()),
        }
    }
}

/// A boxed error (tower's layers return them) that is a `HandlerError`
/// stays one, retry results included; any other becomes an error result
/// with its description.
impl From<Box<dyn std::error::Error + Send + Sync>> for HandlerError {
    fn from(e: Box<dyn std::error::Error + Send + Sync>) -> Self {
        match e.downcast::<HandlerError>() {
            Ok(e) => *e,
            Err(e) => Self::new(e.to_string()),
        }
    }
}

impl From<std::convert::Infallible> for HandlerError {
    fn from(e: std::convert::Infallible) -> Self {
        match e {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_cost_no_space() {
        // As small as a message and an optional wait were.
        assert_eq!(
            std::mem::size_of::<HandlerError>(),
            std::mem::size_of::<(Bytes, Option<Duration>)>()
        );
    }

    #[test]
    fn a_retry_result_keeps_its_wait_whatever_the_kind() {
        let e = HandlerError::retry(Duration::from_secs(2), "busy").with_kind(ErrorKind::Forbidden);
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert_eq!(e.kind(), ErrorKind::Failed);
        let e = HandlerError::new("no").with_kind(ErrorKind::Forbidden);
        assert_eq!((e.kind(), e.retry_after()), (ErrorKind::Forbidden, None));
        assert_eq!(
            HandlerError::unauthenticated("who?").kind(),
            ErrorKind::Unauthenticated
        );
    }
}
