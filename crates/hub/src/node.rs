//! Node-level fan-out: one broker subscription per channel for all the
//! node's subscribers, deliveries deduplicated and ordered by offset,
//! each notification encoded once and shared by every subscriber, and
//! recovery from history after the broker lost deliveries.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicUsize, Ordering::SeqCst},
    },
    time::Duration,
};

use bytes::Bytes;
use gotalk_peer::Peer;

use crate::{
    HubError,
    broker::{Broker, BrokerSink, Delivery, HistoryQuery, Publication, StreamPosition},
    fanout, wire,
};

/// First and longest pause between failed history reads of a recovery.
const RECOVERY_BACKOFF: (Duration, Duration) = (Duration::from_millis(50), Duration::from_secs(5));

/// `others` publications remembered per subscriber (see
/// [`Node::exclude`]); older ones are forgotten.
const MAX_EXCLUDED: usize = 64;

/// The channels this node has subscribers for.
pub(crate) struct Node {
    broker: Arc<dyn Broker>,
    channels: Mutex<HashMap<Arc<str>, Arc<Channel>>>,
    runtime: tokio::runtime::Handle,
    max_recover: usize,
    max_held: usize,
    /// How long a delivery may wait in a subscriber's write queue for
    /// others (see [`HubBuilder::write_delay`](crate::HubBuilder::write_delay)).
    write_delay: Option<Duration>,
}

struct Channel {
    name: Arc<str>,
    state: Mutex<ChannelState>,
    /// Serializes this channel's broker subscribe and unsubscribe.
    broker_ops: tokio::sync::Mutex<()>,
    /// Woken when a live publication has been fanned out, while some wait
    /// (see [`Node::fanned_out`]).
    fanned_out: tokio::sync::Notify,
    /// How many wait on `fanned_out`: without pacing nobody does, and a
    /// publication costs no wake-up.
    waiting: AtomicUsize,
}

#[derive(Default)]
struct ChannelState {
    subscribers: HashMap<u64, Subscriber>,
    /// Releases in progress: the channel stays in the map while any runs.
    pins: usize,
    broker_subscribed: bool,
    /// The last publication fanned out (or the position the first
    /// subscriber started from): what comes next must follow it.
    cursor: Option<Cursor>,
    /// While recovering from a gap: the live publications that arrived
    /// meanwhile, fanned out once history has filled the gap.
    recovering: Option<Vec<(Arc<str>, Publication)>>,
}

/// A subscriber's side of a subscription.
pub(crate) struct Subscriber {
    peer: Peer,
    client: Arc<str>,
    events: bool,
    /// Data of this client's `others` publications not yet delivered.
    excluded: Vec<Bytes>,
    mode: Mode,
}

enum Mode {
    /// The subscribe is reading history: live publications wait here.
    Held(Vec<Held>),
    /// More arrived while held than the limit allows.
    Overrun,
    /// Publications go out as they come, after the position the
    /// subscription started from.
    Live { skip_through: Option<Cursor> },
}

struct Held {
    epoch: Arc<str>,
    offset: u64,
    payload: Bytes,
}

/// A position in a channel's stream.
#[derive(Clone, Debug)]
struct Cursor {
    epoch: Arc<str>,
    offset: u64,
}

/// Where a publication stands relative to a cursor.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    /// The next one.
    Next,
    /// At or before the cursor: already seen.
    Stale,
    /// Further than the next: some are missing.
    Gap,
}

impl Cursor {
    fn of(position: &StreamPosition) -> Self {
        Self {
            epoch: position.epoch.as_str().into(),
            offset: position.offset,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            offset: self.offset,
            epoch: self.epoch.to_string(),
        }
    }

    fn step(&self, epoch: &str, offset: u64) -> Step {
        if *self.epoch == *epoch {
            match offset {
                o if o <= self.offset => Step::Stale,
                o if o == self.offset + 1 => Step::Next,
                _ => Step::Gap,
            }
        } else if offset == 1 {
            // A new epoch starts: the stream was reset (history expired),
            // nothing of the new epoch was missed.
            Step::Next
        } else {
            Step::Gap
        }
    }
}

/// Who subscribes: a connection's session.
pub(crate) struct NewSubscriber {
    pub(crate) session: u64,
    pub(crate) client: Arc<str>,
    pub(crate) peer: Peer,
    pub(crate) events: bool,
}

/// What a subscribe got: the result for the client.
pub(crate) type SubscribeOut = wire::SubscribeOut;

/// Counts, for [`Hub::stats`](crate::Hub::stats).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct NodeStats {
    pub(crate) channels: usize,
    pub(crate) subscribers: usize,
    pub(crate) broker_subscriptions: usize,
    pub(crate) held_publications: usize,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Panics are not expected under these locks; if one happens the state
    // is still consistent between statements, so go on with it.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Channel {
    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        lock(&self.state)
    }
}

/// Wakes whoever waits for a channel's fan-out when dropped (after the
/// fan-out, once the channel's lock is released).
struct WakeOnDrop<'a>(&'a Channel);

impl Drop for WakeOnDrop<'_> {
    fn drop(&mut self) {
        // A waiter counts itself before it takes the channel's lock to read
        // the cursor: if it read it before this fan-out, the count is seen
        // here, after the lock was taken and released again.
        if self.0.waiting.load(SeqCst) > 0 {
            self.0.fanned_out.notify_waiters();
        }
    }
}

/// Counts a waiter of [`Node::fanned_out`] while it waits.
struct Waiting<'a>(&'a AtomicUsize);

impl<'a> Waiting<'a> {
    fn new(count: &'a AtomicUsize) -> Self {
        count.fetch_add(1, SeqCst);
        Self(count)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, SeqCst);
    }
}

impl Node {
    pub(crate) fn new(
        broker: Arc<dyn Broker>,
        max_recover: usize,
        max_held: usize,
        write_delay: Option<Duration>,
    ) -> Self {
        Self {
            broker,
            channels: Mutex::new(HashMap::new()),
            runtime: tokio::runtime::Handle::current(),
            max_recover: max_recover.max(1),
            max_held,
            write_delay,
        }
    }

    /// The broker sink of this node (it holds the node weakly: the broker
    /// holds the sink, and the node holds the broker).
    pub(crate) fn sink(self: &Arc<Self>) -> Arc<dyn BrokerSink> {
        Arc::new(Sink(Arc::downgrade(self)))
    }

    fn channel(&self, name: &str) -> Option<Arc<Channel>> {
        lock(&self.channels).get(name).cloned()
    }

    /// Subscribes `sub` to `channel`: the broker subscription first (if
    /// this node has none yet), then history, then live publications,
    /// with no gap and no duplicate between them. Live publications that
    /// arrive while history is read are held, then merged by offset into
    /// the result's publications; the client's position is that of the
    /// last one.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        sub: NewSubscriber,
        channel: &str,
        since: Option<StreamPosition>,
    ) -> Result<SubscribeOut, HubError> {
        let session = sub.session;
        let ch = {
            let mut map = lock(&self.channels);
            let ch = map
                .entry(channel.into())
                .or_insert_with(|| {
                    Arc::new(Channel {
                        name: channel.into(),
                        state: Mutex::default(),
                        broker_ops: tokio::sync::Mutex::new(()),
                        fanned_out: tokio::sync::Notify::new(),
                        waiting: AtomicUsize::new(0),
                    })
                })
                .clone();
            let mut st = ch.lock();
            if st.subscribers.contains_key(&session) {
                return Err(HubError::AlreadySubscribed(channel.to_owned()));
            }
            st.subscribers.insert(
                session,
                Subscriber {
                    peer: sub.peer,
                    client: sub.client,
                    events: sub.events,
                    excluded: Vec::new(),
                    mode: Mode::Held(Vec::new()),
                },
            );
            drop(st);
            ch
        };
        // Undoes the subscription if it fails, or if the request is
        // dropped half-way (its connection closed).
        let mut undo = Undo {
            node: self.clone(),
            ch: ch.clone(),
            session,
            armed: true,
        };
        self.ensure_broker_subscribed(&ch).await?;
        let query = HistoryQuery {
            limit: if since.is_some() { self.max_recover } else { 0 },
            since: since.clone(),
        };
        let history = self.broker.history(channel, query).await?;

        let mut st = ch.lock();
        let Some(subscriber) = st.subscribers.get_mut(&session) else {
            // Removed meanwhile (a slow consumer, or the session closing).
            return Err(HubError::Closed);
        };
        let held = match std::mem::replace(&mut subscriber.mode, Mode::Overrun) {
            Mode::Held(held) => held,
            Mode::Overrun => return Err(HubError::SubscribeOverrun),
            // Only this subscribe makes its subscriber live, and one
            // session has one subscribe per channel at a time.
            Mode::Live { .. } => return Err(HubError::AlreadySubscribed(channel.to_owned())),
        };
        let epoch: Arc<str> = history.position.epoch.as_str().into();
        let mut cursor = Cursor {
            epoch: epoch.clone(),
            offset: history.position.offset,
        };
        let mut publications = Vec::new();
        let mut recovered = false;
        if let Some(since) = &since {
            let last = history
                .publications
                .last()
                .map_or(since.offset, |p| p.offset);
            // Complete, and not cut short by the limit.
            recovered = history.complete && last == history.position.offset;
            if recovered {
                publications = history
                    .publications
                    .iter()
                    .map(|p| wire::publication(&epoch, p))
                    .collect();
            }
        }
        for h in held {
            match cursor.step(&h.epoch, h.offset) {
                Step::Stale => {}
                step => {
                    if step == Step::Gap {
                        // The node's stream has no gaps (it recovers them
                        // before fanning out), so this is not expected;
                        // delivering beats dropping.
                        tracing::debug!(
                            channel,
                            offset = h.offset,
                            "gap while merging held publications"
                        );
                    }
                    publications.push(h.payload);
                    cursor = Cursor {
                        epoch: h.epoch,
                        offset: h.offset,
                    };
                }
            }
        }
        subscriber.mode = Mode::Live {
            skip_through: Some(cursor.clone()),
        };
        if st.cursor.is_none() {
            // The baseline for recovering after a broker outage.
            st.cursor = Some(cursor.clone());
        }
        drop(st);
        undo.armed = false;
        Ok(SubscribeOut {
            position: cursor.position(),
            recovered,
            publications,
        })
    }

    async fn ensure_broker_subscribed(&self, ch: &Channel) -> Result<(), HubError> {
        let _ops = ch.broker_ops.lock().await;
        if ch.lock().broker_subscribed {
            return Ok(());
        }
        self.broker.subscribe(&ch.name).await?;
        ch.lock().broker_subscribed = true;
        Ok(())
    }

    /// Ends `session`'s subscription to `channel`, sending it `notice` (an
    /// encoded notification) last; unsubscribes the node from the broker
    /// if it was the channel's last subscriber. Returns whether there was
    /// a subscription.
    pub(crate) async fn leave(&self, session: u64, channel: &str, notice: Option<Bytes>) -> bool {
        let Some(ch) = self.channel(channel) else {
            return false;
        };
        let removed = ch.lock().subscribers.remove(&session);
        if let (Some(sub), Some(notice)) = (&removed, notice) {
            // After the removal, under no lock: nothing more is fanned out
            // to it, so this comes last.
            let _ = fanout::notify(&sub.peer, channel, notice, None);
        }
        self.release(&ch).await;
        removed.is_some()
    }

    /// Unsubscribes from the broker once `ch` has no subscriber, and
    /// forgets the channel.
    async fn release(&self, ch: &Arc<Channel>) {
        {
            let mut st = ch.lock();
            if !st.subscribers.is_empty() {
                return;
            }
            st.pins += 1;
        }
        {
            let _ops = ch.broker_ops.lock().await;
            let unsubscribe = {
                let st = ch.lock();
                st.subscribers.is_empty() && st.broker_subscribed
            };
            if unsubscribe {
                if let Err(e) = self.broker.unsubscribe(&ch.name).await {
                    // The broker may go on delivering the channel: those
                    // deliveries find no channel here and are dropped.
                    tracing::warn!(channel = %ch.name, error = %e, "broker unsubscribe failed");
                }
                let mut st = ch.lock();
                st.broker_subscribed = false;
                // Subscribers that came meanwhile are still held: they
                // set the new baseline.
                st.cursor = None;
                st.recovering = None;
            }
        }
        let mut map = lock(&self.channels);
        let mut st = ch.lock();
        st.pins -= 1;
        if st.pins == 0
            && st.subscribers.is_empty()
            && !st.broker_subscribed
            && map.get(&ch.name).is_some_and(|c| Arc::ptr_eq(c, ch))
        {
            map.remove(&ch.name);
        }
    }

    /// Remembers that `session`'s next publication of `data` on `channel`
    /// is not for itself (`publish` with `others`). Returns whether it
    /// subscribes there (if not, there is nothing to exclude).
    pub(crate) fn exclude(&self, session: u64, channel: &str, data: &Bytes) -> bool {
        let Some(ch) = self.channel(channel) else {
            return false;
        };
        let mut st = ch.lock();
        let Some(sub) = st.subscribers.get_mut(&session) else {
            return false;
        };
        if sub.excluded.len() == MAX_EXCLUDED {
            sub.excluded.remove(0);
        }
        sub.excluded.push(data.clone());
        true
    }

    /// Forgets an exclusion whose publish failed.
    pub(crate) fn unexclude(&self, session: u64, channel: &str, data: &Bytes) {
        let Some(ch) = self.channel(channel) else {
            return;
        };
        let mut st = ch.lock();
        if let Some(sub) = st.subscribers.get_mut(&session)
            && let Some(i) = sub.excluded.iter().position(|d| d == data)
        {
            sub.excluded.remove(i);
        }
    }

    pub(crate) fn stats(&self) -> NodeStats {
        let channels: Vec<_> = lock(&self.channels).values().cloned().collect();
        let mut stats = NodeStats {
            channels: channels.len(),
            ..NodeStats::default()
        };
        for ch in channels {
            let st = ch.lock();
            stats.subscribers += st.subscribers.len();
            stats.broker_subscriptions += usize::from(st.broker_subscribed);
            stats.held_publications += st.recovering.as_ref().map_or(0, Vec::len);
            for sub in st.subscribers.values() {
                if let Mode::Held(h) = &sub.mode {
                    stats.held_publications += h.len();
                }
            }
        }
        stats
    }

    /// Waits until this node has fanned out the publication at `position`
    /// of `channel` to its subscribers there (at once with the memory
    /// broker, which fans out as it publishes; after the broker's round
    /// trip with Redis), or has none, or `limit` has passed.
    pub(crate) async fn fanned_out(
        &self,
        channel: &str,
        position: &StreamPosition,
        limit: Duration,
    ) {
        let Some(ch) = self.channel(channel) else {
            return;
        };
        let _waiting = Waiting::new(&ch.waiting);
        let reached = async {
            loop {
                let notified = ch.fanned_out.notified();
                let mut notified = std::pin::pin!(notified);
                // Registered before the cursor is read: a fan-out in
                // between is not missed.
                notified.as_mut().enable();
                {
                    let st = ch.lock();
                    let done = st.subscribers.is_empty()
                        || st.cursor.as_ref().is_some_and(|c| {
                            *c.epoch != *position.epoch || c.offset >= position.offset
                        });
                    if done {
                        return;
                    }
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(limit, reached).await;
    }

    fn deliver(self: &Arc<Self>, channel: &str, delivery: Delivery) {
        let Some(ch) = self.channel(channel) else {
            return;
        };
        // Declared before the lock: a publication's waiters are woken once
        // it is released, the fan-out done (or a recovery started, which
        // wakes them again as it fans out).
        let _wake = matches!(delivery, Delivery::Publication { .. }).then(|| WakeOnDrop(&ch));
        let mut st = ch.lock();
        match delivery {
            Delivery::Publication { epoch, publication } => {
                if let Some(held) = &mut st.recovering {
                    if held.len() < self.max_held {
                        held.push((epoch, publication));
                    }
                    // Past the limit it is dropped here: the recovery
                    // reads history until it has caught up.
                    return;
                }
                let step = st
                    .cursor
                    .as_ref()
                    .map_or(Step::Next, |c| c.step(&epoch, publication.offset));
                match step {
                    Step::Stale => {}
                    Step::Next => self.fan_out(&ch.name, &mut st, &epoch, &publication),
                    Step::Gap => {
                        tracing::debug!(
                            channel,
                            offset = publication.offset,
                            "gap in deliveries, recovering from history"
                        );
                        st.recovering = Some(vec![(epoch, publication)]);
                        self.runtime.spawn(self.clone().recover(ch.clone()));
                    }
                }
            }
            Delivery::Join(info) => {
                Self::fan_out_event(
                    &ch.name,
                    &mut st,
                    wire::presence_event(wire::PresenceEvent::Join(&info)),
                );
            }
            Delivery::Leave(info) => {
                Self::fan_out_event(
                    &ch.name,
                    &mut st,
                    wire::presence_event(wire::PresenceEvent::Leave(&info)),
                );
            }
        }
    }

    /// Sends a publication to every subscriber of the channel, encoded
    /// once, and moves the channel's cursor to it.
    fn fan_out(&self, channel: &str, st: &mut ChannelState, epoch: &Arc<str>, p: &Publication) {
        st.cursor = Some(Cursor {
            epoch: epoch.clone(),
            offset: p.offset,
        });
        let payload = wire::publication(epoch, p);
        let from = p.info.as_ref().map(|i| i.client.as_str());
        // One deadline for the whole fan-out: one clock read.
        let by = self.write_delay.map(|d| tokio::time::Instant::now() + d);
        let mut gone = Vec::new();
        for (id, sub) in &mut st.subscribers {
            if let Some(from) = from
                && !sub.excluded.is_empty()
                && *sub.client == *from
                && let Some(i) = sub.excluded.iter().position(|d| *d == p.data)
            {
                sub.excluded.remove(i);
                continue;
            }
            match &mut sub.mode {
                Mode::Held(held) if held.len() < self.max_held => held.push(Held {
                    epoch: epoch.clone(),
                    offset: p.offset,
                    payload: payload.clone(),
                }),
                Mode::Held(_) => sub.mode = Mode::Overrun,
                Mode::Overrun => {}
                Mode::Live { skip_through } => {
                    if let Some(start) = skip_through {
                        if start.step(epoch, p.offset) == Step::Stale {
                            continue;
                        }
                        *skip_through = None;
                    }
                    if fanout::notify(&sub.peer, channel, payload.clone(), by).is_err() {
                        gone.push(*id);
                    }
                }
            }
        }
        // A closed connection (a slow consumer the peer closed, say) gets
        // nothing more; its session's cleanup finishes the job.
        for id in gone {
            st.subscribers.remove(&id);
        }
    }

    fn fan_out_event(channel: &str, st: &mut ChannelState, payload: Bytes) {
        let mut gone = Vec::new();
        for (id, sub) in &st.subscribers {
            if sub.events && fanout::notify(&sub.peer, channel, payload.clone(), None).is_err() {
                gone.push(*id);
            }
        }
        for id in gone {
            st.subscribers.remove(&id);
        }
    }

    /// Tells every live subscriber that publications were lost.
    fn fan_out_lost(channel: &str, st: &mut ChannelState, position: &StreamPosition) {
        let payload = wire::lost(position);
        let cursor = Cursor::of(position);
        for sub in st.subscribers.values_mut() {
            if let Mode::Live { skip_through } = &mut sub.mode {
                let _ = fanout::notify(&sub.peer, channel, payload.clone(), None);
                *skip_through = Some(cursor.clone());
            }
        }
    }

    /// The broker is back: recover every channel from its cursor.
    fn resubscribed(self: &Arc<Self>) {
        let channels: Vec<_> = lock(&self.channels).values().cloned().collect();
        for ch in channels {
            let mut st = ch.lock();
            if st.recovering.is_none() && st.cursor.is_some() && !st.subscribers.is_empty() {
                st.recovering = Some(Vec::new());
                self.runtime.spawn(self.clone().recover(ch.clone()));
            }
        }
    }

    /// Fills a channel's gap from history, then fans out what was held
    /// meanwhile. If history no longer has it, live subscribers get
    /// `{"lost": position}` and go on from there.
    async fn recover(self: Arc<Self>, ch: Arc<Channel>) {
        let mut backoff = RECOVERY_BACKOFF.0;
        loop {
            // Declared before any lock of the channel: dropped after it,
            // each round, to wake whoever waits for what was fanned out.
            let _wake = WakeOnDrop(&ch);
            let since = {
                let mut st = ch.lock();
                if st.subscribers.is_empty() || st.recovering.is_none() {
                    st.recovering = None;
                    return;
                }
                match &st.cursor {
                    Some(c) => c.position(),
                    None => {
                        // No baseline (released meanwhile): nothing to fill.
                        let held = st.recovering.take().unwrap_or_default();
                        for (epoch, p) in held {
                            self.fan_out(&ch.name, &mut st, &epoch, &p);
                        }
                        return;
                    }
                }
            };
            let query = HistoryQuery {
                since: Some(since.clone()),
                limit: self.max_recover,
            };
            let history = match self.broker.history(&ch.name, query).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(channel = %ch.name, error = %e, ?backoff, "recovery: history read failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECOVERY_BACKOFF.1);
                    continue;
                }
            };
            let mut st = ch.lock();
            let Some(held) = st.recovering.take() else {
                return;
            };
            let epoch: Arc<str> = history.position.epoch.as_str().into();
            if history.complete {
                for p in &history.publications {
                    if st
                        .cursor
                        .as_ref()
                        .is_none_or(|c| c.step(&epoch, p.offset) == Step::Next)
                    {
                        self.fan_out(&ch.name, &mut st, &epoch, p);
                    }
                }
            } else {
                tracing::info!(channel = %ch.name, ?since, now = ?history.position, "publications lost: history no longer has them");
                Self::fan_out_lost(&ch.name, &mut st, &history.position);
                st.cursor = Some(Cursor::of(&history.position));
            }
            let caught_up = st
                .cursor
                .as_ref()
                .is_some_and(|c| c.epoch == epoch && c.offset >= history.position.offset);
            let mut rest = Vec::new();
            for (e, p) in held {
                if !rest.is_empty() {
                    // Order is kept: everything after a hole waits too.
                    rest.push((e, p));
                    continue;
                }
                let step = st
                    .cursor
                    .as_ref()
                    .map_or(Step::Next, |c| c.step(&e, p.offset));
                match step {
                    Step::Stale => {}
                    Step::Next => self.fan_out(&ch.name, &mut st, &e, &p),
                    // Published after the history read, with a hole
                    // before it: read again.
                    Step::Gap if *e == *epoch => rest.push((e, p)),
                    // Another epoch than history's: from before a reset,
                    // or of a reset since; a live delivery of a newer
                    // epoch starts a recovery of its own (ending `lost`).
                    Step::Gap => {
                        tracing::debug!(channel = %ch.name, offset = p.offset, "dropping a held publication of another epoch")
                    }
                }
            }
            if caught_up && rest.is_empty() {
                return;
            }
            st.recovering = Some(rest);
            backoff = RECOVERY_BACKOFF.0;
        }
    }
}

/// Removes a subscriber whose subscribe did not finish.
struct Undo {
    node: Arc<Node>,
    ch: Arc<Channel>,
    session: u64,
    armed: bool,
}

impl Drop for Undo {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.ch.lock().subscribers.remove(&self.session);
        let (node, ch) = (self.node.clone(), self.ch.clone());
        // Async (it may unsubscribe from the broker), and this may be a
        // request future dropped on a closed connection: its own task.
        self.node
            .runtime
            .spawn(async move { node.release(&ch).await });
    }
}

struct Sink(Weak<Node>);

impl BrokerSink for Sink {
    fn deliver(&self, channel: &str, delivery: Delivery) {
        if let Some(node) = self.0.upgrade() {
            node.deliver(channel, delivery);
        }
    }

    fn resubscribed(&self) {
        if let Some(node) = self.0.upgrade() {
            node.resubscribed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_steps() {
        let c = Cursor {
            epoch: "e".into(),
            offset: 5,
        };
        assert_eq!(c.step("e", 5), Step::Stale);
        assert_eq!(c.step("e", 4), Step::Stale);
        assert_eq!(c.step("e", 6), Step::Next);
        assert_eq!(c.step("e", 8), Step::Gap);
        assert_eq!(c.step("f", 1), Step::Next);
        assert_eq!(c.step("f", 2), Step::Gap);
    }
}
