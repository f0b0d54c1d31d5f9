//! One endpoint of a balancer: its reconnecting connection, the calls we
//! have in flight on it, and its health.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::{
    health::{Admission, Health},
    pick,
};
use crate::{Peer, ReconnectingPeer, RemoteLoad, reconnect};

/// Whether an endpoint takes calls, in
/// [`EndpointStatus::state`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum EndpointState {
    /// Connected and taking calls.
    Up,
    /// No connection: connecting, or waiting to connect again with backoff
    /// after a failed attempt or a lost connection (every connect attempt
    /// is a probe). [`EndpointStatus::connection`] says which.
    Connecting,
    /// Connected, but its calls kept failing: left out until `until`.
    Ejected {
        /// When it is probed again.
        until: Instant,
    },
    /// Its ejection is over: it takes one call at a time, and the first
    /// answered one puts it back [`Up`](Self::Up) (a failed one ejects it
    /// again, for longer).
    Probing,
}

/// One endpoint as [`Balancer::endpoints`](super::Balancer::endpoints)
/// reports it.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct EndpointStatus {
    /// The endpoint's address, as the resolver gave it.
    pub addr: Arc<str>,
    /// Whether it takes calls.
    pub state: EndpointState,
    /// Its connection's state.
    pub connection: reconnect::State,
    /// Requests of this balancer in flight on it.
    pub in_flight: usize,
    /// The load its server last reported in a heartbeat, if any.
    pub load: Option<RemoteLoad>,
    /// Calls this balancer sent it (requests, streams and notifications).
    pub calls: u64,
    /// Calls failed in a row (connection lost, timed out).
    pub consecutive_failures: u32,
}

pub(crate) struct Endpoint {
    pub(crate) addr: Arc<str>,
    pub(crate) client: ReconnectingPeer,
    in_flight: AtomicUsize,
    calls: AtomicU64,
    /// Set while `health` has failures: a healthy endpoint is picked and
    /// answered without taking its lock.
    troubled: AtomicBool,
    health: Mutex<Health>,
}

/// An open connection to an endpoint that admits a call, with its cost.
pub(crate) struct Candidate {
    pub(crate) endpoint: Arc<Endpoint>,
    pub(crate) peer: Peer,
    pub(crate) cost: f64,
    /// The call is the probe of an endpoint back from ejection: when it
    /// ends, calls waiting for an endpoint should look again.
    pub(crate) probe: bool,
}

/// Counts a call in flight on an endpoint until dropped.
#[must_use]
pub(crate) struct InFlight(Arc<Endpoint>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Endpoint {
    pub(crate) fn new(addr: Arc<str>, client: ReconnectingPeer) -> Self {
        Self {
            addr,
            client,
            in_flight: AtomicUsize::new(0),
            calls: AtomicU64::new(0),
            troubled: AtomicBool::new(false),
            health: Mutex::new(Health::default()),
        }
    }

    fn health(&self) -> MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The endpoint as a candidate for a call, if its connection is open
    /// and its health admits one. A load reported longer than `load_max_age`
    /// ago is not trusted (the server may have stopped sending heartbeats).
    pub(crate) fn candidate(
        self: &Arc<Self>,
        now: Instant,
        load_max_age: Duration,
    ) -> Option<Candidate> {
        let in_flight = self.in_flight.load(Ordering::Acquire);
        let probe = if self.troubled.load(Ordering::Acquire) {
            let health = self.health();
            if !health.admits(now, in_flight) {
                return None;
            }
            health.admission(now) == Admission::Probing
        } else {
            false
        };
        let peer = self.client.current()?;
        let load = peer
            .remote_load()
            .filter(|l| now.saturating_duration_since(l.received) <= load_max_age)
            .map(|l| l.load);
        Some(Candidate {
            endpoint: Arc::clone(self),
            peer,
            cost: pick::cost(in_flight, load),
            probe,
        })
    }

    /// When its ejection ends, if it is ejected and connected.
    pub(crate) fn ejected_until(&self, now: Instant) -> Option<Instant> {
        if !self.troubled.load(Ordering::Acquire) {
            return None;
        }
        match self.health().admission(now) {
            Admission::Ejected { until } => Some(until),
            _ => None,
        }
    }

    /// Counts a call going out on it, or `None` if the call is to be its
    /// probe and another call got there first: one probe at a time, even
    /// when calls pick at the same instant.
    pub(crate) fn start(self: &Arc<Self>, probe: bool) -> Option<InFlight> {
        if probe {
            self.in_flight
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .ok()?;
        } else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        self.calls.fetch_add(1, Ordering::Relaxed);
        Some(InFlight(Arc::clone(self)))
    }

    pub(crate) fn succeeded(&self) {
        if self.troubled.load(Ordering::Acquire) {
            let mut health = self.health();
            health.succeeded();
            self.troubled.store(false, Ordering::Release);
        }
    }

    /// Records a failure; returns until when it is ejected, if this ejects it.
    pub(crate) fn failed(
        &self,
        max_failures: u32,
        backoff: &reconnect::Backoff,
        unit: f64,
    ) -> Option<Instant> {
        let mut health = self.health();
        self.troubled.store(true, Ordering::Release);
        health.failed(Instant::now(), max_failures, backoff, unit)
    }

    pub(crate) fn status(&self) -> EndpointStatus {
        let now = Instant::now();
        let connection = self.client.state();
        let (admission, failures) = {
            let health = self.health();
            (health.admission(now), health.failures())
        };
        let peer = self.client.current();
        let state = match (peer.is_some(), admission) {
            (false, _) => EndpointState::Connecting,
            (true, Admission::Open) => EndpointState::Up,
            (true, Admission::Probing) => EndpointState::Probing,
            (true, Admission::Ejected { until }) => EndpointState::Ejected { until },
        };
        EndpointStatus {
            addr: Arc::clone(&self.addr),
            state,
            connection,
            in_flight: self.in_flight.load(Ordering::Acquire),
            load: peer.and_then(|p| p.remote_load()),
            calls: self.calls.load(Ordering::Relaxed),
            consecutive_failures: failures,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectError, reconnect::ReconnectOptions};

    #[tokio::test]
    async fn one_probe_at_a_time() {
        let client = ReconnectingPeer::new(
            futures::future::pending::<Result<Peer, ConnectError>>,
            ReconnectOptions::default(),
        );
        let endpoint = Arc::new(Endpoint::new("x:1".into(), client.clone()));
        let probe = endpoint.start(true).expect("the first probe");
        assert!(endpoint.start(true).is_none(), "a second probe at once");
        let call = endpoint
            .start(false)
            .expect("ordinary calls are not limited");
        assert_eq!(endpoint.status().in_flight, 2);
        assert_eq!(endpoint.status().calls, 2);
        drop((probe, call));
        assert!(endpoint.start(true).is_some(), "the next probe");
        client.close().await;
    }
}
