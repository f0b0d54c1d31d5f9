//! Who is at the other end of a connection.

use std::{collections::BTreeSet, fmt};

/// Who is at the other end of a connection, as the application decided
/// (after a login request, a client certificate, the hub's token check):
/// a subject and the grants it holds.
///
/// Set on the connection with [`Peer::set_identity`](crate::Peer::set_identity)
/// (it is stored as the connection's user data of type `Identity`), read in
/// handlers and layers with [`Context::identity`](crate::Context::identity).
/// Calls over HTTP get theirs from `http::HttpConfig::identify`. What a
/// grant means is the application's: [`Authorize`](super::Authorize)
/// compares them as plain strings.
///
/// ```
/// use gotalk_peer::middleware::Identity;
/// let alice = Identity::new("alice").grant("admin").grant("billing:read");
/// assert_eq!(alice.subject(), "alice");
/// assert!(alice.has("admin"));
/// assert!(!alice.has("billing:write"));
/// ```
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Identity {
    subject: String,
    grants: BTreeSet<String>,
}

impl Identity {
    /// `subject` (a user or service name), with no grants.
    pub fn new(subject: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            grants: BTreeSet::new(),
        }
    }

    /// Adds a grant.
    pub fn grant(mut self, grant: impl Into<String>) -> Self {
        self.grants.insert(grant.into());
        self
    }

    /// Adds grants.
    pub fn grants_from<I, G>(mut self, grants: I) -> Self
    where
        I: IntoIterator<Item = G>,
        G: Into<String>,
    {
        self.grants.extend(grants.into_iter().map(Into::into));
        self
    }

    /// The subject.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// True when `grant` was granted.
    pub fn has(&self, grant: &str) -> bool {
        self.grants.contains(grant)
    }

    /// The grants, in order.
    pub fn grants(&self) -> impl Iterator<Item = &str> {
        self.grants.iter().map(String::as_str)
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("subject", &self.subject)
            .field("grants", &self.grants)
            .finish()
    }
}
