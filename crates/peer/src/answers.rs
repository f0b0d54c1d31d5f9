//! Where the answers to our buffer requests wait for their callers: a
//! table of slots kept with the connection's core, under its lock.
//!
//! A caller opens a slot in the same critical section that queues its
//! request, and the slot's key is the core's token for the caller (see
//! [`Tokens::Caller`](crate::core::Tokens)). The driver fills slots with
//! the answers of one round under one lock and wakes their callers; a
//! caller takes its answer, which frees the slot for the next request.
//! A channel per request cost an allocation, its reference counts and its
//! own synchronisation, about 600 instructions per request (callgrind); a
//! slot is opened and filled under locks taken anyway, taken under one
//! more, and the table's memory is reused from one request to the next:
//! the client went from 2 959 to 2 670 instructions per request.
//!
//! A slot's generation changes every time it is freed, so that an answer
//! meant for a caller that gave up (its slot freed, and maybe reused) is
//! recognised and dropped, not given to the next caller.

use std::task::{Context, Poll, Waker};

use crate::{Error, core::Outcome};

/// A caller's slot: its index in the table and the generation it was
/// opened in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct AnswerKey {
    index: u32,
    generation: u32,
}

type Answer = Result<Outcome, Error>;

#[derive(Debug)]
enum State {
    /// Not in use; the next free slot's index, or [`NONE`].
    Free { next: u32 },
    /// The caller waits; the waker of its last poll.
    Waiting(Option<Waker>),
    /// The answer waits for the caller to take it.
    Ready(Answer),
}

#[derive(Debug)]
struct Slot {
    generation: u32,
    state: State,
}

/// No free slot.
const NONE: u32 = u32::MAX;

/// Slots kept once none is in use: a caller making one request at a time
/// reuses its slot, while a burst's table is freed when the burst ends.
const KEPT_SLOTS: usize = 4;

/// The table (see the module docs).
#[derive(Debug)]
pub(crate) struct Answers {
    slots: Vec<Slot>,
    /// The first free slot, or [`NONE`].
    free: u32,
    /// Slots in use.
    open: usize,
}

impl Default for Answers {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: NONE,
            open: 0,
        }
    }
}

impl Answers {
    /// A slot for a caller about to send its request; `waker` wakes it
    /// when the answer comes, until a poll gives another.
    pub(crate) fn open(&mut self, waker: Option<Waker>) -> AnswerKey {
        self.open += 1;
        let index = if self.free == NONE {
            self.slots.push(Slot {
                generation: 0,
                state: State::Waiting(waker),
            });
            // In use at most as many slots as requests in flight, which
            // the core bounds far below `u32::MAX`.
            u32::try_from(self.slots.len() - 1).expect("fewer slots than u32::MAX")
        } else {
            let index = self.free;
            let slot = &mut self.slots[index as usize];
            let State::Free { next } = slot.state else {
                unreachable!("the free list holds free slots only");
            };
            self.free = next;
            slot.state = State::Waiting(waker);
            index
        };
        AnswerKey {
            index,
            generation: self.slots[index as usize].generation,
        }
    }

    /// The slot of `key`, if it is still that caller's.
    fn slot(&mut self, key: AnswerKey) -> Option<&mut Slot> {
        self.slots
            .get_mut(key.index as usize)
            .filter(|s| s.generation == key.generation && !matches!(s.state, State::Free { .. }))
    }

    /// Frees the slot of `key`, dropping any answer in it: the caller took
    /// its answer, gave up, or its request was never sent.
    pub(crate) fn close(&mut self, key: AnswerKey) {
        if self.slot(key).is_some() {
            self.free_slot(key.index);
        }
    }

    /// Frees the slot at `index` (in use): its generation moves on, it
    /// heads the free list, and its state is returned. Inline: taking an
    /// answer frees its slot, once per request.
    #[inline]
    fn free_slot(&mut self, index: u32) -> State {
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        let state = std::mem::replace(&mut slot.state, State::Free { next: self.free });
        self.free = index;
        self.open -= 1;
        if self.open == 0 && self.slots.len() > KEPT_SLOTS {
            self.release();
        }
        state
    }

    /// The answer for `key` if it is there (freeing the slot), otherwise
    /// remembers `cx`'s waker. A slot that is not the caller's any more
    /// (impossible while it waits: only the caller frees it) reads as
    /// `None`, and the caller reports the connection closed.
    pub(crate) fn poll(&mut self, key: AnswerKey, cx: &Context<'_>) -> Poll<Option<Answer>> {
        let Some(slot) = self.slot(key) else {
            return Poll::Ready(None);
        };
        match &mut slot.state {
            State::Waiting(waker) => {
                if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                    *waker = Some(cx.waker().clone());
                }
                Poll::Pending
            }
            State::Ready(_) => {
                // Taken and freed in one step.
                let State::Ready(answer) = self.free_slot(key.index) else {
                    unreachable!("matched above")
                };
                Poll::Ready(Some(answer))
            }
            State::Free { .. } => unreachable!("`slot` returns slots in use only"),
        }
    }

    /// Gives `key`'s caller its answer; returns the waker to wake once the
    /// lock is released. An answer for a caller that gave up is dropped.
    fn fill(&mut self, key: AnswerKey, answer: Answer) -> Option<Waker> {
        let slot = self.slot(key)?;
        match std::mem::replace(&mut slot.state, State::Ready(answer)) {
            State::Waiting(waker) => waker,
            // Each request is answered once; should a second answer come,
            // the first stays.
            ready @ State::Ready(_) => {
                slot.state = ready;
                None
            }
            State::Free { .. } => unreachable!("`slot` returns slots in use only"),
        }
    }

    /// Gives `key`'s caller its answer and wakes it; returns whether a
    /// caller was woken.
    ///
    /// Woken under the caller's lock: a wake only queues the caller's
    /// task, which runs once the waking task yields (or on another worker,
    /// where its poll waits for the lock a moment). Waking after the lock
    /// would need a list of the round's wakers, one more buffer per
    /// connection.
    pub(crate) fn answer(&mut self, key: AnswerKey, answer: Answer) -> bool {
        match self.fill(key, answer) {
            Some(waker) => {
                waker.wake();
                true
            }
            None => false,
        }
    }

    /// Answers every caller still waiting with `error`, into `wakers`: the
    /// connection is finished, and nothing else will.
    pub(crate) fn fail_waiting(&mut self, error: impl Fn() -> Error, wakers: &mut Vec<Waker>) {
        for slot in &mut self.slots {
            if let State::Waiting(waker) = &mut slot.state {
                wakers.extend(waker.take());
                slot.state = State::Ready(Err(error()));
            }
        }
    }

    /// Slots in use.
    #[cfg(test)]
    fn open_count(&self) -> usize {
        self.open
    }

    /// Bytes of memory the table holds.
    #[cfg(test)]
    fn capacity_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
    }

    /// Frees the table's memory once no slot is in use: a connection
    /// between bursts holds little (see [`KEPT_SLOTS`]).
    fn release(&mut self) {
        debug_assert_eq!(self.open, 0);
        self.slots = Vec::new();
        self.free = NONE;
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        task::Wake,
    };

    use bytes::Bytes;

    use super::*;
    use crate::CloseReason;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn counting() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        (count.clone(), Waker::from(count))
    }

    fn value(s: &'static str) -> Answer {
        Ok(Outcome::Value(Bytes::from_static(s.as_bytes())))
    }

    /// The value a poll gave, as text.
    fn taken(poll: Poll<Option<Answer>>) -> String {
        match poll {
            Poll::Ready(Some(Ok(Outcome::Value(v)))) => String::from_utf8(v.to_vec()).unwrap(),
            other => panic!("no value: {other:?}"),
        }
    }

    #[test]
    fn an_answer_reaches_its_caller_once_and_frees_the_slot() {
        let (count, waker) = counting();
        let cx = Context::from_waker(&waker);
        let mut answers = Answers::default();
        let key = answers.open(None);
        assert!(answers.poll(key, &cx).is_pending());
        let woken = answers.fill(key, value("a")).expect("the caller waits");
        woken.wake();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(taken(answers.poll(key, &cx)), "a");
        assert_eq!(answers.open_count(), 0);
        // The slot is the next caller's now: the old key finds nothing.
        let next = answers.open(None);
        assert_eq!(next.index, key.index);
        assert_ne!(next, key);
        assert!(answers.fill(key, value("late")).is_none());
        assert!(answers.poll(next, &cx).is_pending());
        assert!(matches!(answers.poll(key, &cx), Poll::Ready(None)));
    }

    #[test]
    fn an_answer_before_the_first_poll_waits_in_the_slot() {
        let (count, waker) = counting();
        let cx = Context::from_waker(&waker);
        let mut answers = Answers::default();
        let key = answers.open(None);
        assert!(answers.fill(key, value("early")).is_none(), "no waker yet");
        assert_eq!(taken(answers.poll(key, &cx)), "early");
        assert_eq!(count.0.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn the_answer_for_a_caller_that_gave_up_is_not_given_to_the_next() {
        let (_, waker) = counting();
        let cx = Context::from_waker(&waker);
        let mut answers = Answers::default();
        let gave_up = answers.open(None);
        let other = answers.open(None);
        answers.close(gave_up);
        let reused = answers.open(None);
        assert_eq!(reused.index, gave_up.index);
        assert!(answers.fill(gave_up, value("stale")).is_none());
        assert!(answers.poll(reused, &cx).is_pending());
        answers.fill(reused, value("fresh"));
        answers.fill(other, value("other"));
        assert_eq!(taken(answers.poll(reused, &cx)), "fresh");
        assert_eq!(taken(answers.poll(other, &cx)), "other");
    }

    #[test]
    fn failing_wakes_every_waiting_caller_and_keeps_given_answers() {
        let (count, waker) = counting();
        let cx = Context::from_waker(&waker);
        let mut answers = Answers::default();
        let keys: Vec<_> = (0..3).map(|_| answers.open(None)).collect();
        for &key in &keys {
            assert!(answers.poll(key, &cx).is_pending());
        }
        answers.fill(keys[1], value("given"));
        let mut wakers = Vec::new();
        answers.fail_waiting(|| Error::Closed(CloseReason::Abandoned), &mut wakers);
        assert_eq!(wakers.len(), 2);
        wakers.into_iter().for_each(Waker::wake);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(matches!(
            answers.poll(keys[0], &cx),
            Poll::Ready(Some(Err(Error::Closed(CloseReason::Abandoned))))
        ));
        assert_eq!(taken(answers.poll(keys[1], &cx)), "given");
        assert!(matches!(
            answers.poll(keys[2], &cx),
            Poll::Ready(Some(Err(Error::Closed(_))))
        ));
    }

    #[test]
    fn a_burst_table_is_freed_once_every_slot_is_free() {
        let mut answers = Answers::default();
        let keys: Vec<_> = (0..64).map(|_| answers.open(None)).collect();
        assert!(answers.capacity_bytes() > 0);
        for key in keys {
            answers.close(key);
        }
        assert_eq!(answers.capacity_bytes(), 0);
        // And it works again afterwards; a few slots are kept.
        let keys: Vec<_> = (0..KEPT_SLOTS).map(|_| answers.open(None)).collect();
        assert_eq!(keys[0].index, 0);
        let kept = answers.capacity_bytes();
        keys.into_iter().for_each(|key| answers.close(key));
        assert_eq!(answers.capacity_bytes(), kept);
    }
}
