//! Per-connection buffer figures, for tests and measurements only (see
//! [`Peer::buffer_capacity_for_tests`](crate::Peer::buffer_capacity_for_tests)).
//!
//! Off unless a test turns it on: then each driver started afterwards
//! publishes what its read buffer holds whenever it goes idle.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

use crate::connection::Connection;

static TRACKING: AtomicBool = AtomicBool::new(false);

/// Bytes the driver's read buffer held when it last went idle.
#[derive(Debug, Default)]
pub(crate) struct ReadGauge(AtomicUsize);

impl ReadGauge {
    pub(crate) fn set(&self, held: usize) {
        self.0.store(held, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// Turns tracking on for the connections started from now on.
pub(crate) fn enable() {
    TRACKING.store(true, Ordering::Relaxed);
}

/// The gauge for a driver about to start, if tracking is on.
pub(crate) fn attach(conn: &Connection) -> Option<Arc<ReadGauge>> {
    if !TRACKING.load(Ordering::Relaxed) {
        return None;
    }
    conn.set_user_data(ReadGauge::default());
    conn.user_data::<ReadGauge>()
}
