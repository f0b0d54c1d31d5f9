//! One connection as the runtime holds it: the [`Core`] behind a lock,
//! shared by the driver task, the [`Peer`] handles and handler tasks.
//!
//! Every command is one short critical section on the core; whoever changes
//! something the driver must act on (bytes to write, events, room to read
//! again, a close) wakes it.

use std::{
    any::{Any, TypeId},
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard, OnceLock, Weak},
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use gotalk_proto::RequestId;
use tokio::{
    sync::{Notify, mpsc},
    time::Instant,
};

use crate::{
    CloseReason, Config, Error, Handlers, Peer,
    answers::{AnswerKey, Answers},
    core::{Charge, CloseMode, Core, Credit, Event, Outcome, StreamItem, Tokens},
    dispatch::Runnable,
    latch::Latch,
    load::RemoteLoadCell,
};

/// One item for a stream consumer (a stream handler reading request parts,
/// or a caller reading result parts).
#[derive(Debug)]
pub(crate) enum Part {
    /// Payload bytes, with their credit: given back to the core when the
    /// part is taken (or dropped).
    Data(Bytes, CreditGuard),
    /// The stream ended normally.
    End,
    /// The stream ended with an error.
    Failed(Error),
}

pub(crate) type PartTx = mpsc::UnboundedSender<Part>;
pub(crate) type PartRx = mpsc::UnboundedReceiver<Part>;

/// The runtime's per-request tokens (see [`Tokens`]).
#[derive(Debug)]
pub(crate) struct Runtime;

impl Tokens for Runtime {
    type Caller = AnswerKey;
    type Reader = PartTx;
    type Parts = PartTx;
}

/// What the lock guards: the core, and what the driver's wake-ups need.
pub(crate) struct Locked {
    pub(crate) core: Core<Runtime>,
    /// Where the answers to our buffer requests wait for their callers.
    pub(crate) answers: Answers,
    /// The driver, when it waits for something to do.
    pub(crate) driver: Option<Waker>,
    /// Frames queued by other tasks since the driver last took the queue.
    pub(crate) pushes: usize,
    /// Callers the driver gave their answers since then, which may queue
    /// frames soon (spawned handlers are counted in [`Runnable`]).
    pub(crate) woken: usize,
    /// The driver is left asleep until this many handler polls have
    /// started (see [`Runnable::hold`]); what was queued meanwhile waits.
    pub(crate) hold: Option<usize>,
}

impl Locked {
    fn wake_driver(&mut self) -> Option<Waker> {
        self.driver.take()
    }

    /// Queues a buffer request with a slot for its answer.
    fn request(
        &mut self,
        op: &str,
        payload: &Bytes,
        waker: Option<Waker>,
    ) -> Result<(RequestId, AnswerKey), Error> {
        let key = self.answers.open(waker);
        match self.core.request(op, payload, key) {
            Ok(id) => Ok((id, key)),
            Err(e) => {
                self.answers.close(key);
                Err(e)
            }
        }
    }

    /// Gives the caller of slot `key` its answer and wakes it.
    fn answer(&mut self, key: AnswerKey, answer: Result<Outcome, Error>) {
        if self.answers.answer(key, answer) {
            // It may queue a request soon (see `woken`).
            self.woken += 1;
        }
    }
}

/// Runs a command that queues a frame, then wakes the driver (after the
/// lock is released) to write it, unless handlers still to run may queue
/// theirs first (see [`Runnable`]).
fn push<R>(
    mut l: MutexGuard<'_, Locked>,
    runnable: &Runnable,
    command: impl FnOnce(&mut Locked) -> R,
) -> R {
    let r = command(&mut l);
    l.pushes += 1;
    let driver = if runnable.hold(&mut l) {
        None
    } else {
        l.wake_driver()
    };
    drop(l);
    if let Some(driver) = driver {
        driver.wake();
    }
    r
}

/// Per-connection data for handlers: the remote address and user data.
#[derive(Debug, Default)]
pub(crate) struct Meta {
    pub(crate) remote_addr: Option<String>,
    /// By type. A list, not a map: a connection has one or two (the
    /// server's `ConnectionInfo`, the application's), and an idle
    /// connection's every byte counts.
    user_data: Mutex<Vec<(TypeId, Arc<dyn Any + Send + Sync>)>>,
}

/// Runs once the connection is finished (see [`Connection::on_finished`]).
type FinishHook = Box<dyn FnOnce(Option<&CloseReason>) + Send>;

pub(crate) struct Connection {
    /// Shared by every connection made with the same settings (a server's).
    pub(crate) config: Arc<Config>,
    pub(crate) handlers: Handlers,
    pub(crate) meta: Meta,
    locked: Mutex<Locked>,
    /// Wakes senders waiting for room in the write queue.
    room: Notify,
    /// Set once the driver is done and the transport shut.
    finished: Latch,
    /// Runs when `finished` is set: how a server forgets the connection
    /// without a task per connection waiting for it.
    finish_hook: Mutex<Option<FinishHook>>,
    /// Set once, by [`Connection::first_peer`].
    handle: OnceLock<Weak<HandleGuard>>,
    /// Set when the core has closed: spawned handlers stop (see
    /// [`Connection::until_closed`]).
    stop: Latch,
    /// The load the peer's last heartbeat reported.
    pub(crate) remote_load: RemoteLoadCell,
    /// Spawned handlers woken and not yet polled.
    pub(crate) runnable: Runnable,
}

/// Closes the connection when the last [`Peer`] handle is dropped.
#[derive(Debug)]
pub(crate) struct HandleGuard {
    conn: Arc<Connection>,
}

impl Drop for HandleGuard {
    fn drop(&mut self) {
        self.conn.close(CloseMode::Graceful);
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("remote_addr", &self.meta.remote_addr)
            .field("close_reason", &self.close_reason())
            .finish_non_exhaustive()
    }
}

impl Connection {
    pub(crate) fn new(
        config: Arc<Config>,
        handlers: Handlers,
        remote_addr: Option<String>,
    ) -> Arc<Self> {
        let core = Core::new(&config, Instant::now().into_std(), seed());
        Arc::new(Self {
            locked: Mutex::new(Locked {
                core,
                answers: Answers::default(),
                driver: None,
                pushes: 0,
                woken: 0,
                hold: None,
            }),
            room: Notify::new(),
            finished: Latch::default(),
            finish_hook: Mutex::new(None),
            stop: Latch::default(),
            handle: OnceLock::new(),
            remote_load: RemoteLoadCell::new(),
            runnable: Runnable::default(),
            meta: Meta {
                remote_addr,
                ..Meta::default()
            },
            config,
            handlers,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Locked> {
        // A panic while holding this lock cannot leave the core half-updated
        // in a way that matters more than losing the connection.
        self.locked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A new user handle, or `None` once every handle is gone (closing).
    pub(crate) fn peer(self: &Arc<Self>) -> Option<Peer> {
        let guard = self.handle.get()?.upgrade()?;
        Some(Peer::from_parts(self.clone(), guard))
    }

    /// The first handle; later ones come from [`Connection::peer`] or cloning.
    pub(crate) fn first_peer(self: &Arc<Self>) -> Peer {
        let guard = Arc::new(HandleGuard { conn: self.clone() });
        let first = self.handle.set(Arc::downgrade(&guard)).is_ok();
        debug_assert!(first, "first_peer is called once per connection");
        Peer::from_parts(self.clone(), guard)
    }

    /// Runs a command that queues a frame, once the write queue has room
    /// (at once on a closed connection, where the command fails); wakes the
    /// driver to write it.
    pub(crate) async fn send<R>(&self, mut command: impl FnMut(&mut Core<Runtime>) -> R) -> R {
        self.send_locked(|l| command(&mut l.core)).await
    }

    /// Sends a buffer request, with a slot for its answer (see
    /// [`poll_answer`](Self::poll_answer)).
    pub(crate) async fn send_request(
        &self,
        op: &str,
        payload: &Bytes,
    ) -> Result<(RequestId, AnswerKey), Error> {
        self.send_locked(|l| l.request(op, payload, None)).await
    }

    /// [`send_request`](Self::send_request) if the write queue has room
    /// now (`None` if not), with the caller's `waker` already in the slot:
    /// called in the poll that next waits for the answer, it spares that
    /// poll a look at the slot (see `peer::call::Call`).
    pub(crate) fn try_send_request(
        &self,
        op: &str,
        payload: &Bytes,
        waker: &Waker,
    ) -> Option<Result<(RequestId, AnswerKey), Error>> {
        self.try_send(&mut |l: &mut Locked| l.request(op, payload, Some(waker.clone())))
    }

    /// The answer to the request whose slot is `key`, once it is there.
    pub(crate) fn poll_answer(
        &self,
        key: AnswerKey,
        cx: &Context<'_>,
    ) -> Poll<Result<Outcome, Error>> {
        let mut l = self.lock();
        match l.answers.poll(key, cx) {
            Poll::Ready(Some(answer)) => Poll::Ready(answer),
            Poll::Ready(None) => {
                drop(l);
                Poll::Ready(Err(self.closed_error()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// The caller of request `id` gave up: the core forgets the request
    /// and the slot `key` is freed, with any answer already in it.
    pub(crate) fn cancel_request(&self, id: RequestId, key: AnswerKey) {
        self.command_locked(|l| {
            l.core.cancel(id);
            l.answers.close(key);
        });
    }

    /// Gives the callers in `answers` their answers (one lock) and wakes
    /// them.
    pub(crate) fn deliver(
        &self,
        answers: impl IntoIterator<Item = (AnswerKey, Result<Outcome, Error>)>,
    ) {
        let mut l = self.lock();
        let l = &mut *l;
        for (key, answer) in answers {
            l.answer(key, answer);
        }
    }

    /// Answers every caller still waiting with the close: nothing else
    /// will once the connection is finished or abandoned.
    fn fail_waiting_callers(&self) {
        let reason = self.close_reason().unwrap_or(CloseReason::Abandoned);
        let mut wakers = Vec::new();
        self.lock()
            .answers
            .fail_waiting(|| Error::Closed(reason.clone()), &mut wakers);
        wakers.into_iter().for_each(Waker::wake);
    }

    async fn send_locked<R>(&self, mut command: impl FnMut(&mut Locked) -> R) -> R {
        // The common case, a queue with room, takes the lock once; waiting
        // is boxed so that every call's future stays small.
        if let Some(r) = self.try_send(&mut command) {
            return r;
        }
        Box::pin(self.send_when_room(command)).await
    }

    async fn send_when_room<R>(&self, mut command: impl FnMut(&mut Locked) -> R) -> R {
        loop {
            let mut room = std::pin::pin!(self.room.notified());
            room.as_mut().enable();
            // Checked again after `enable`, so that room made since the last
            // check is not missed.
            if let Some(r) = self.try_send(&mut command) {
                return r;
            }
            room.await;
        }
    }

    fn try_send<R>(&self, command: &mut impl FnMut(&mut Locked) -> R) -> Option<R> {
        let l = self.lock();
        if !l.core.has_room() && l.core.close_reason().is_none() {
            return None;
        }
        Some(push(l, &self.runnable, command))
    }

    /// Runs a command that queues a frame now, whatever the room (the
    /// command decides what a full queue means), and wakes the driver.
    pub(crate) fn push_now<R>(&self, command: impl FnOnce(&mut Core<Runtime>) -> R) -> R {
        push(self.lock(), &self.runnable, |l| command(&mut l.core))
    }

    /// Runs a command that queues a frame which may wait (it returns
    /// `Ok(false)` when the driver already knows when to write it), and
    /// wakes the driver only if it must look at the queue again.
    pub(crate) fn push_delayed(
        &self,
        command: impl FnOnce(&mut Core<Runtime>) -> Result<bool, crate::Error>,
    ) -> Result<(), crate::Error> {
        let mut l = self.lock();
        let r = command(&mut l.core);
        if matches!(r, Ok(false)) {
            return Ok(());
        }
        push(l, &self.runnable, |_| r.map(|_| ()))
    }

    /// Runs a command that may give the driver work (events to dispatch,
    /// room to read again, a close) and wakes it if so.
    pub(crate) fn command<R>(&self, command: impl FnOnce(&mut Core<Runtime>) -> R) -> R {
        self.command_locked(|l| command(&mut l.core))
    }

    /// [`command`](Self::command) with the answers table at hand too.
    fn command_locked<R>(&self, command: impl FnOnce(&mut Locked) -> R) -> R {
        let mut l = self.lock();
        let could_read = l.core.wants_read();
        let r = command(&mut l);
        let driver = if l.core.has_events() || (!could_read && l.core.wants_read()) {
            l.wake_driver()
        } else {
            None
        };
        drop(l);
        if let Some(driver) = driver {
            driver.wake();
        }
        r
    }

    /// Wakes senders waiting for room (the driver took the queue, or the
    /// connection closed).
    pub(crate) fn room_made(&self) {
        self.room.notify_waiters();
    }

    /// Starts closing (see [`CloseMode`]).
    pub(crate) fn close(&self, mode: CloseMode) {
        let mut l = self.lock();
        l.core.close(Instant::now().into_std(), mode);
        // The close deadline is new: the driver sets its timer anew.
        let driver = l.wake_driver();
        drop(l);
        if let Some(driver) = driver {
            driver.wake();
        }
    }

    pub(crate) fn close_reason(&self) -> Option<CloseReason> {
        self.lock().core.close_reason().cloned()
    }

    /// The error for a call on a closed (or closing) connection.
    pub(crate) fn closed_error(&self) -> Error {
        Error::Closed(self.close_reason().unwrap_or(CloseReason::Local))
    }

    /// The core closed: handlers still running are cancelled (see
    /// [`Connection::until_closed`]).
    pub(crate) fn stop_handlers(&self) {
        self.stop.set();
    }

    /// Runs a spawned handler's future until it finishes or the connection
    /// closes; then it is dropped (`None`), unless it asked to keep running
    /// with [`Context::keep_running_after_close`](crate::Context::keep_running_after_close)
    /// (`kept`: it asked before it was spawned), in which case it gets up
    /// to [`Config::keep_running_grace`] more.
    pub(crate) async fn until_closed<F: std::future::Future>(
        &self,
        kept: bool,
        fut: F,
    ) -> Option<F::Output> {
        let grace = self.config.keep_running_grace;
        KEEP_RUNNING
            .scope(std::cell::Cell::new(kept), async move {
                let mut fut = std::pin::pin!(fut);
                tokio::select! {
                    biased;
                    out = &mut fut => return Some(out),
                    _ = self.stop.wait() => {}
                }
                if !KEEP_RUNNING.with(std::cell::Cell::get) {
                    return None;
                }
                tokio::time::timeout(grace, fut).await.ok()
            })
            .await
    }

    /// Returns once closing is complete (see [`mark_finished`](Self::mark_finished)).
    pub(crate) async fn finished(&self) {
        self.finished.wait().await;
    }

    /// Announces that closing is complete (the transport is shut).
    pub(crate) fn mark_finished(&self, reason: Option<&CloseReason>) {
        self.room_made();
        self.finished.set();
        // Every answer was given as the core closed; this is the net for
        // one that was not: a caller must never wait for a connection that
        // is gone.
        self.fail_waiting_callers();
        let hook = self
            .finish_hook
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(hook) = hook {
            hook(reason);
        }
    }

    /// The driver's future was dropped before it finished (see
    /// [`FinishGuard`]): closes the core as abandoned, answers every call
    /// still waiting with that, stops the handlers and finishes, so that no
    /// caller, `closed()` waiter or server registry waits for a driver that
    /// is gone.
    fn abandoned(&self) {
        let mut events = VecDeque::new();
        let reason = {
            let mut l = self.lock();
            l.core.abandon();
            l.core.take_events(&mut events);
            l.core.close_reason().cloned()
        };
        let mut answers = Vec::new();
        for event in events {
            match event {
                Event::Answer { caller, answer } => answers.push((caller, answer)),
                Event::ResultPart {
                    reader,
                    item: StreamItem::Failed(e),
                } => {
                    let _ = reader.send(Part::Failed(e));
                }
                // Nothing runs for the peer any more: the rest is dropped
                // (a stream consumer's channel closes with it).
                _ => {}
            }
        }
        self.deliver(answers);
        self.stop_handlers();
        crate::runtime_metrics::connection_closed(reason.as_ref());
        self.mark_finished(reason.as_ref());
    }

    /// Sets what runs once the connection is finished (at most one hook;
    /// set before the driver starts).
    pub(crate) fn on_finished(&self, hook: impl FnOnce(Option<&CloseReason>) + Send + 'static) {
        *self.finish_hook.lock().unwrap_or_else(|p| p.into_inner()) = Some(Box::new(hook));
    }

    pub(crate) fn set_user_data<T: Send + Sync + 'static>(&self, value: T) {
        let mut data = self
            .meta
            .user_data
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value);
        match data.iter_mut().find(|(t, _)| *t == TypeId::of::<T>()) {
            Some((_, slot)) => *slot = value,
            None => data.push((TypeId::of::<T>(), value)),
        }
    }

    pub(crate) fn user_data<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let data = self
            .meta
            .user_data
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let (_, value) = data.iter().find(|(t, _)| *t == TypeId::of::<T>())?;
        value.clone().downcast::<T>().ok()
    }
}

std::thread_local! {
    /// `Some` while a handler is polled for the first time on the
    /// connection's task: set to `Some(true)` by
    /// [`Context::keep_running_after_close`](crate::Context::keep_running_after_close).
    pub(crate) static KEEP_INLINE: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

tokio::task_local! {
    /// Set by [`Context::keep_running_after_close`](crate::Context::keep_running_after_close)
    /// for the handler running in this scope.
    pub(crate) static KEEP_RUNNING: std::cell::Cell<bool>;
}

/// Bytes of the budget a consumer keeps (see
/// [`Core::keep_part`](crate::core::Core::keep_part)), given back when it
/// is dropped.
pub(crate) struct ChargeGuard {
    conn: Arc<Connection>,
    pub(crate) charge: Charge,
}

impl ChargeGuard {
    pub(crate) fn new(conn: Arc<Connection>) -> Self {
        Self {
            conn,
            charge: Charge::NONE,
        }
    }

    /// Keeps the bytes of a part just taken, in place of the credit (one
    /// lock); returns true when the budget is used up.
    pub(crate) fn keep(&mut self, credit: Credit, release_before: bool) -> bool {
        let before = if release_before {
            self.charge.take()
        } else {
            Charge::NONE
        };
        let charge = &mut self.charge;
        self.conn.command(|core| {
            core.release(before);
            charge.absorb(core.keep_part(credit));
            core.over_budget()
        })
    }

    pub(crate) fn conn(&self) -> &Connection {
        &self.conn
    }

    /// Gives back what is kept now.
    pub(crate) fn release(&mut self) {
        let charge = self.charge.take();
        if charge.bytes() > 0 {
            self.conn.command(|core| core.release(charge));
        }
    }
}

impl Drop for ChargeGuard {
    fn drop(&mut self) {
        self.release();
    }
}

impl std::fmt::Debug for ChargeGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ChargeGuard").field(&self.charge).finish()
    }
}

/// Gives a delivered part's credit back to the core when the part is taken
/// or dropped, so that reading resumes.
pub(crate) struct CreditGuard {
    conn: Arc<Connection>,
    credit: Option<Credit>,
}

impl CreditGuard {
    pub(crate) fn new(conn: Arc<Connection>, credit: Credit) -> Self {
        Self {
            conn,
            credit: Some(credit),
        }
    }

    /// Takes the credit out, for a caller that gives it back itself.
    pub(crate) fn take(mut self) -> Option<Credit> {
        self.credit.take()
    }
}

impl std::fmt::Debug for CreditGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CreditGuard").field(&self.credit).finish()
    }
}

impl Drop for CreditGuard {
    fn drop(&mut self) {
        if let Some(credit) = self.credit.take() {
            self.conn.command(|core| core.part_taken(credit));
        }
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ 0x2545_f491_4f6c_dd1d
}

/// Held by the driver's future for the connection's whole life: if the
/// future is dropped unfinished (its runtime shut down, its task aborted),
/// the connection is finished as [`CloseReason::Abandoned`] instead of
/// leaving callers on other runtimes waiting for answers that cannot come.
pub(crate) struct FinishGuard(Option<Arc<Connection>>);

impl FinishGuard {
    pub(crate) fn new(conn: Arc<Connection>) -> Self {
        Self(Some(conn))
    }

    /// The driver finishes the connection itself: its handle back.
    pub(crate) fn disarm(mut self) -> Arc<Connection> {
        self.0.take().expect("armed until disarmed")
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            conn.abandoned();
        }
    }
}
