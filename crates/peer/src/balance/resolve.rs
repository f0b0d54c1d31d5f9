//! Where the endpoints come from: [`Resolve`], with a fixed list and DNS
//! built in.

use std::io;

use futures::future::BoxFuture;

/// Tells a [`Balancer`](super::Balancer) which endpoints to use. Called
/// when the balancer starts and every
/// [`BalanceOptions::resolve_interval`](super::BalanceOptions::resolve_interval)
/// after; endpoints that appear are connected, endpoints that disappear
/// are closed (their calls in flight finish first).
///
/// An endpoint is an address the balancer's connect function understands
/// (`host:port` for [`Balancer::tcp`](super::Balancer::tcp)). An error, an
/// empty list, or no answer within 30 s keeps the endpoints the balancer
/// has: a resolver that stumbles (a DNS server timing out) must not take
/// every server away.
///
/// ```
/// use std::{io, sync::{Arc, Mutex}};
/// use futures::future::BoxFuture;
/// use gotalk_peer::balance::Resolve;
///
/// /// Endpoints from a list that the application updates.
/// struct Registry(Arc<Mutex<Vec<String>>>);
///
/// impl Resolve for Registry {
///     fn resolve(&self) -> BoxFuture<'_, io::Result<Vec<String>>> {
///         let now = self.0.lock().unwrap().clone();
///         Box::pin(async move { Ok(now) })
///     }
/// }
/// ```
pub trait Resolve: Send + Sync + 'static {
    /// The endpoints now.
    fn resolve(&self) -> BoxFuture<'_, io::Result<Vec<String>>>;
}

/// A fixed list of endpoints.
///
/// ```
/// use gotalk_peer::balance::StaticList;
/// let servers = StaticList::new(["10.0.0.1:1234", "10.0.0.2:1234"]);
/// # let _ = servers;
/// ```
#[derive(Clone, Debug)]
pub struct StaticList(Vec<String>);

impl StaticList {
    /// The list `endpoints`.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self(endpoints.into_iter().map(Into::into).collect())
    }
}

impl Resolve for StaticList {
    fn resolve(&self) -> BoxFuture<'_, io::Result<Vec<String>>> {
        Box::pin(async move { Ok(self.0.clone()) })
    }
}

/// The addresses a DNS name resolves to (with tokio's
/// [`lookup_host`](tokio::net::lookup_host), the system resolver), each
/// one an endpoint: `Dns::new("api.internal:7000")` with three A records
/// is three endpoints, followed as the records change.
///
/// ```
/// use gotalk_peer::balance::Dns;
/// let servers = Dns::new("localhost:7000");
/// # let _ = servers;
/// ```
#[derive(Clone, Debug)]
pub struct Dns(String);

impl Dns {
    /// Resolves `target`, a `host:port`.
    pub fn new(target: impl Into<String>) -> Self {
        Self(target.into())
    }
}

impl Resolve for Dns {
    fn resolve(&self) -> BoxFuture<'_, io::Result<Vec<String>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host(self.0.as_str()).await?;
            Ok(addrs.map(|a| a.to_string()).collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dns_gives_one_endpoint_per_address() {
        let found = Dns::new("127.0.0.1:4000").resolve().await.unwrap();
        assert_eq!(found, ["127.0.0.1:4000"]);
        let localhost = Dns::new("localhost:4000").resolve().await.unwrap();
        assert!(!localhost.is_empty());
        assert!(
            localhost.iter().all(|a| a.ends_with(":4000")),
            "{localhost:?}"
        );
        assert!(Dns::new("no port").resolve().await.is_err());
    }

    #[tokio::test]
    async fn a_static_list_is_what_it_was_given() {
        let list = StaticList::new(["a:1", "b:2"]);
        assert_eq!(list.resolve().await.unwrap(), ["a:1", "b:2"]);
    }
}
