//! Per-operation authorization from the caller's identity.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;
use tower_layer::Layer;
use tower_service::Service;

use super::{Identity, Request};
use crate::HandlerError;

type CheckFn = dyn Fn(Option<&Identity>, &Request) -> Result<(), HandlerError> + Send + Sync;

enum Policy {
    Authenticated,
    Grant(String),
    Check(Box<CheckFn>),
}

/// A layer that lets a request through only if the caller's
/// [`Identity`] ([`Context::identity`](crate::Context::identity)) passes a
/// policy, and answers any other with an error result, the handler not
/// called:
///
/// - `unauthenticated: operation "OP" needs an identity` when the
///   connection has none;
/// - `forbidden: operation "OP" needs the grant "G"` when it lacks the grant.
///
/// Their [`ErrorKind`](crate::ErrorKind)s are `Unauthenticated` and
/// `Forbidden`: over HTTP (`http`) the caller gets `401` and `403`.
///
/// Per operation with [`Handlers::layer_for`](crate::Handlers::layer_for),
/// or for all with [`Handlers::layer`](crate::Handlers::layer). The hub sets
/// a connection's identity when it authenticates (its user as subject, its
/// token's scopes as grants).
///
/// ```
/// use gotalk_peer::{HandlerError, Handlers, middleware::Authorize};
/// let handlers = Handlers::new()
///     .buffer("stats", |_ctx, _p| async move { Ok::<_, HandlerError>("{}") })
///     .buffer("purge", |_ctx, _p| async move { Ok::<_, HandlerError>("done") })
///     .layer_for("stats", Authorize::authenticated())
///     .layer_for("purge", Authorize::grant("admin"));
/// # let _ = handlers;
/// ```
#[derive(Clone)]
pub struct Authorize {
    policy: Arc<Policy>,
}

impl fmt::Debug for Authorize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let policy = match &*self.policy {
            Policy::Authenticated => "authenticated".to_owned(),
            Policy::Grant(g) => format!("grant {g:?}"),
            Policy::Check(_) => "custom check".to_owned(),
        };
        f.debug_struct("Authorize")
            .field("policy", &policy)
            .finish()
    }
}

impl Authorize {
    /// Any identity will do.
    pub fn authenticated() -> Self {
        Self {
            policy: Arc::new(Policy::Authenticated),
        }
    }

    /// The identity must hold `grant` ([`Identity::has`]).
    pub fn grant(grant: impl Into<String>) -> Self {
        Self {
            policy: Arc::new(Policy::Grant(grant.into())),
        }
    }

    /// A check of your own: given the identity (if any) and the request, its
    /// error is the caller's error result (a [`HandlerError::retry`] stays a
    /// retry result).
    pub fn check<F>(check: F) -> Self
    where
        F: Fn(Option<&Identity>, &Request) -> Result<(), HandlerError> + Send + Sync + 'static,
    {
        Self {
            policy: Arc::new(Policy::Check(Box::new(check))),
        }
    }

    fn decide(&self, req: &Request) -> Result<(), HandlerError> {
        let identity = req.identity();
        let op = req.operation();
        match (&*self.policy, identity.as_deref()) {
            (Policy::Check(check), identity) => check(identity, req),
            (_, None) => Err(HandlerError::unauthenticated(format!(
                "unauthenticated: operation {op:?} needs an identity"
            ))),
            (Policy::Authenticated, Some(_)) => Ok(()),
            (Policy::Grant(grant), Some(identity)) if identity.has(grant) => Ok(()),
            (Policy::Grant(grant), Some(_)) => Err(HandlerError::forbidden(format!(
                "forbidden: operation {op:?} needs the grant {grant:?}"
            ))),
        }
    }
}

impl<S> Layer<S> for Authorize {
    type Service = AuthorizeService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthorizeService {
            inner,
            policy: self.clone(),
        }
    }
}

/// The service of [`Authorize`].
#[derive(Clone, Debug)]
pub struct AuthorizeService<S> {
    inner: S,
    policy: Authorize,
}

impl<S> Service<Request> for AuthorizeService<S>
where
    S: Service<Request, Response = Bytes>,
    S::Error: Into<HandlerError>,
{
    type Response = Bytes;
    type Error = HandlerError;
    type Future = AuthorizeFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), HandlerError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        match self.policy.decide(&req) {
            Ok(()) => AuthorizeFuture::Allowed {
                inner: self.inner.call(req),
            },
            Err(refused) => {
                tracing::debug!(
                    operation = req.operation(),
                    subject = req.identity().as_deref().map(Identity::subject),
                    reason = %refused,
                    "request refused by Authorize"
                );
                AuthorizeFuture::Refused {
                    error: Some(refused),
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`AuthorizeService`].
    #[project = AuthorizeProj]
    pub enum AuthorizeFuture<F> {
        /// Let through: the inner service's.
        Allowed { #[pin] inner: F },
        /// Refused.
        Refused { error: Option<HandlerError> },
    }
}

impl<F, E> Future for AuthorizeFuture<F>
where
    F: Future<Output = Result<Bytes, E>>,
    E: Into<HandlerError>,
{
    type Output = Result<Bytes, HandlerError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        match self.project() {
            AuthorizeProj::Allowed { inner } => inner.poll(cx).map_err(Into::into),
            AuthorizeProj::Refused { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| HandlerError::new("AuthorizeFuture polled after completion")))),
        }
    }
}
