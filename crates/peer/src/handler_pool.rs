//! A recycled home for buffer handlers' futures.
//!
//! Handlers are type-erased, so every call's future lives on the heap: a
//! `malloc` and a `free` per request, about 130 of the ~1 850 instructions
//! `gotalk serve` spends on one (callgrind, glibc). A future cannot be
//! moved into a box once polled, so the box cannot be skipped for calls
//! that finish at once; instead the box outlives its future. A [`Slot`]
//! is one handler's boxed home for a call: when a call finishes while the
//! connection dispatches it (most do), the dispatcher drops the future in
//! place and keeps the slot as its [`Spare`]; the next call of the same
//! handler on that connection starts in it. A call that waits is spawned
//! and frees its slot when done, like any box. Nothing here is `unsafe`:
//! the future sits in a `Pin<Box<Option<_>>>` that is only ever set,
//! polled through `Pin`, or cleared. A connection keeps at most one spare.

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context as TaskContext, Poll},
};

use bytes::Bytes;

use crate::{Context, HandlerError, handlers::CallFuture};

/// A handler's home for its calls' futures, reused call after call.
trait Slot<T>: Send {
    /// Starts a call of the slot's handler (the slot is empty).
    fn start(&mut self, ctx: Context, payload: Bytes);
    fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<T, HandlerError>>;
    /// Drops the call's future, finished or not.
    fn clear(&mut self);
}

struct HandlerSlot<M, F> {
    make: Arc<M>,
    fut: Pin<Box<Option<F>>>,
}

impl<T, M, F> Slot<T> for HandlerSlot<M, F>
where
    M: Fn(Context, Bytes) -> F + Send + Sync,
    F: Future<Output = Result<T, HandlerError>> + Send,
{
    fn start(&mut self, ctx: Context, payload: Bytes) {
        self.fut.set(Some((self.make)(ctx, payload)));
    }

    fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<T, HandlerError>> {
        match self.fut.as_mut().as_pin_mut() {
            Some(fut) => fut.poll(cx),
            None => Poll::Ready(Err(HandlerError::new(
                "internal error: a handler's future polled after it was cleared",
            ))),
        }
    }

    fn clear(&mut self) {
        self.fut.set(None);
    }
}

/// A connection's slot kept for the next call, and the handler it belongs
/// to: the address of the handler's `Arc`, which the slot keeps alive, so
/// no other handler can have it while the slot exists.
#[derive(Default)]
pub(crate) struct Spare(Option<(usize, Box<dyn Slot<Bytes>>)>);

/// A buffer handler whose calls can start in a recycled slot.
pub(crate) struct PooledHandler<M> {
    make: Arc<M>,
}

impl<M, F> PooledHandler<M>
where
    M: Fn(Context, Bytes) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Bytes, HandlerError>> + Send + 'static,
{
    pub(crate) fn new(make: M) -> Self {
        Self {
            make: Arc::new(make),
        }
    }

    /// Starts a call. With a `spare` (a connection dispatching), in it when
    /// it is this handler's, else in a new slot; without one, boxed as is
    /// (one allocation, as for any handler).
    #[inline]
    pub(crate) fn call(
        &self,
        ctx: Context,
        payload: Bytes,
        spare: Option<&mut Spare>,
    ) -> CallFuture<Bytes> {
        let Some(spare) = spare else {
            return CallFuture::Boxed(Box::pin((self.make)(ctx, payload)));
        };
        let owner = Arc::as_ptr(&self.make) as *const () as usize;
        let mut slot = match spare.0.take() {
            Some((o, slot)) if o == owner => slot,
            other => {
                spare.0 = other;
                Box::new(HandlerSlot {
                    make: self.make.clone(),
                    fut: Box::pin(None),
                })
            }
        };
        slot.start(ctx, payload);
        CallFuture::Pooled(PooledCall { owner, slot })
    }
}

/// A buffer handler's call in its slot.
pub(crate) struct PooledCall {
    owner: usize,
    slot: Box<dyn Slot<Bytes>>,
}

impl PooledCall {
    /// Drops the call's future and keeps its slot as the connection's spare
    /// (in place of any other).
    #[inline]
    pub(crate) fn recycle(mut self, spare: &mut Spare) {
        self.slot.clear();
        spare.0 = Some((self.owner, self.slot));
    }
}

impl Future for PooledCall {
    type Output = Result<Bytes, HandlerError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        self.slot.poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ctx() -> Context {
        Context::without_peer(gotalk_proto::Text::from("op"), None)
    }

    fn pooled(call: CallFuture<Bytes>) -> PooledCall {
        match call {
            CallFuture::Pooled(call) => call,
            CallFuture::Boxed(_) => panic!("a call with a spare is pooled"),
        }
    }

    #[test]
    fn without_a_spare_a_call_is_boxed_as_is() {
        let alive = Arc::new(AtomicUsize::new(0));
        let handler = counting(alive.clone(), false);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        let CallFuture::Boxed(mut call) = handler.call(ctx(), Bytes::from_static(b"b"), None)
        else {
            panic!("no spare: boxed");
        };
        assert!(matches!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(b)) if &b[..] == b"b"));
        drop(call);
        assert_eq!(alive.load(Ordering::SeqCst), 0);
    }

    fn ready(cx: &mut TaskContext<'_>, call: &mut PooledCall) -> Poll<Result<Bytes, HandlerError>> {
        Pin::new(call).poll(cx)
    }

    /// Counts the futures alive: every one started is dropped exactly once.
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn counting(
        alive: Arc<AtomicUsize>,
        wait: bool,
    ) -> PooledHandler<impl Fn(Context, Bytes) -> BoxedCall + Send + Sync> {
        PooledHandler::new(move |_ctx: Context, payload: Bytes| {
            alive.fetch_add(1, Ordering::SeqCst);
            let guard = Alive(alive.clone());
            let fut: BoxedCall = Box::pin(async move {
                let _guard = guard;
                if wait {
                    std::future::pending::<()>().await;
                }
                Ok(payload)
            });
            fut
        })
    }

    type BoxedCall = Pin<Box<dyn Future<Output = Result<Bytes, HandlerError>> + Send>>;

    #[test]
    fn a_recycled_slot_serves_the_next_call_of_its_handler_only() {
        let alive = Arc::new(AtomicUsize::new(0));
        let handler = counting(alive.clone(), false);
        let other = counting(alive.clone(), false);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        let mut spare = Spare::default();
        let mut first_slot = None;
        for i in 0..5u8 {
            let mut call = pooled(handler.call(ctx(), Bytes::from(vec![i]), Some(&mut spare)));
            assert!(spare.0.is_none(), "the spare is in use");
            let at = &*call.slot as *const dyn Slot<Bytes> as *const () as usize;
            assert_eq!(
                *first_slot.get_or_insert(at),
                at,
                "the same slot every time"
            );
            assert_eq!(alive.load(Ordering::SeqCst), 1, "started");
            match ready(&mut cx, &mut call) {
                Poll::Ready(Ok(b)) => assert_eq!(&b[..], &[i]),
                other => panic!("{other:?}"),
            }
            call.recycle(&mut spare);
            assert_eq!(alive.load(Ordering::SeqCst), 0, "the future was dropped");
        }
        // Another handler leaves this one's spare alone and answers with its
        // own behaviour.
        let mut call = pooled(other.call(ctx(), Bytes::from_static(b"x"), Some(&mut spare)));
        assert!(spare.0.is_some(), "kept");
        assert!(matches!(ready(&mut cx, &mut call), Poll::Ready(Ok(b)) if &b[..] == b"x"));
        call.recycle(&mut spare);
        let owner = spare.0.as_ref().map(|(o, _)| *o);
        assert_eq!(
            owner,
            Some(Arc::as_ptr(&other.make) as *const () as usize),
            "replaced"
        );
    }

    #[test]
    fn an_unfinished_call_dropped_drops_its_future() {
        let alive = Arc::new(AtomicUsize::new(0));
        let handler = counting(alive.clone(), true);
        let mut cx = TaskContext::from_waker(std::task::Waker::noop());
        let mut spare = Spare::default();
        let mut calls: Vec<_> = (0..4)
            .map(|_| pooled(handler.call(ctx(), Bytes::new(), Some(&mut spare))))
            .collect();
        for call in &mut calls {
            assert!(ready(&mut cx, call).is_pending());
        }
        assert_eq!(alive.load(Ordering::SeqCst), 4);
        let last = calls.pop().unwrap();
        last.recycle(&mut spare);
        assert_eq!(
            alive.load(Ordering::SeqCst),
            3,
            "recycled while pending: dropped in place"
        );
        drop(calls);
        assert_eq!(alive.load(Ordering::SeqCst), 0, "cancelled futures dropped");
    }
}
