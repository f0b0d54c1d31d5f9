//! The broker's own thread (opt-in, see
//! [`RedisBrokerOptions::with_dedicated_thread`](super::RedisBrokerOptions::with_dedicated_thread)):
//! a current-thread tokio runtime on which every Redis command runs and the
//! connections' tasks live, so that Redis's answers are read and handed on
//! without waiting behind the node's connection tasks.

use std::{future::Future, io, thread};

use tokio::{
    runtime::{Builder, Handle},
    sync::oneshot,
    task::JoinHandle,
};

use crate::broker::BrokerError;

/// The thread and a handle to its runtime. Dropping it stops the runtime,
/// which drops every task on it (and so closes the connections), and joins
/// the thread.
pub(super) struct IoThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl IoThread {
    pub(super) fn start() -> io::Result<Self> {
        let runtime = Builder::new_current_thread().enable_all().build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = thread::Builder::new()
            .name("gotalk-hub-redis".to_owned())
            .spawn(move || {
                // Until the broker drops `stop` (a send or a drop both end it).
                let _ = runtime.block_on(stopped);
                // Dropping the runtime here drops its tasks: connections close.
                drop(runtime);
            })?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Runs `fut` on the thread; `Stopped` if the thread stopped first.
    pub(super) async fn run<T, F>(&self, fut: F) -> Result<T, BrokerError>
    where
        F: Future<Output = Result<T, BrokerError>> + Send + 'static,
        T: Send + 'static,
    {
        self.handle
            .spawn(fut)
            .await
            .map_err(|_| BrokerError::Stopped)?
    }

    /// Spawns a task on the thread.
    pub(super) fn spawn<F>(&self, fut: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.handle.spawn(fut)
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take()
            // Dropped on the thread itself (from one of its tasks): it
            // stops once that task returns; it cannot wait for itself.
            && thread.thread().id() != thread::current().id()
            && thread.join().is_err()
        {
            tracing::error!("redis broker: its thread panicked");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn runs_futures_on_its_thread_and_stops_when_dropped() {
        let io = IoThread::start().unwrap();
        let thread = io.thread.as_ref().unwrap().thread().id();
        let caller = Builder::new_current_thread().enable_all().build().unwrap();
        let ran_on = caller
            .block_on(io.run(async { Ok(thread::current().id()) }))
            .unwrap();
        assert_eq!(ran_on, thread);
        assert_ne!(ran_on, thread::current().id());

        // A task still running when the broker goes is dropped with the
        // runtime, and the thread is joined.
        let held = Arc::new(());
        let in_task = held.clone();
        let task = io.spawn(async move {
            let _held = in_task;
            std::future::pending::<()>().await;
        });
        drop(io);
        assert_eq!(Arc::strong_count(&held), 1, "the task was dropped");
        assert!(caller.block_on(task).unwrap_err().is_cancelled());
    }
}
