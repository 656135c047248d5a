//! The in-memory index of one core's spool: which messages are queued,
//! where their records are, which recipients are still pending, and when
//! each message is next due.
//!
//! Memory per queued message (64-bit): a 16-byte key and a 48-byte
//! [`IndexEntry`] in a hash map that doubles as it grows, plus a 32-byte
//! (time, id) entry in the schedule B-tree. Measured with
//! `cargo run --release -p corepost-spool --example index_memory`: about
//! 200 bytes per message, so a million deferred messages take ~200 MB.
//! Messages with more than 64 recipients add one bit per recipient on the
//! heap.
//! `index_bytes_per_message` in the tests checks the struct sizes.

use crate::queue_id::QueueId;
use crate::record::{Admin, AdminAction, Envelope, Outcome, OutcomeKind};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Where a message's current record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub segment: u64,
    /// Offset of the record's frame in the segment.
    pub offset: u32,
    /// Bytes the record occupies (frame, payload, padding).
    pub len: u32,
}

/// Which recipients are still pending, as a bit set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientSet {
    /// Up to 64 recipients: one word, no allocation.
    Small(u64),
    Large(Box<[u64]>),
}

impl RecipientSet {
    /// A set with the given recipients pending.
    pub fn from_pending(pending: impl Iterator<Item = bool>, count: usize) -> RecipientSet {
        if count <= 64 {
            let mut bits = 0u64;
            for (i, p) in pending.enumerate().take(64) {
                if p {
                    bits |= 1 << i;
                }
            }
            RecipientSet::Small(bits)
        } else {
            let mut words = vec![0u64; count.div_ceil(64)].into_boxed_slice();
            for (i, p) in pending.enumerate().take(count) {
                if p {
                    words[i / 64] |= 1 << (i % 64);
                }
            }
            RecipientSet::Large(words)
        }
    }

    pub fn contains(&self, i: u32) -> bool {
        let i = i as usize;
        match self {
            RecipientSet::Small(bits) => i < 64 && bits & (1 << i) != 0,
            RecipientSet::Large(words) => {
                words.get(i / 64).is_some_and(|w| w & (1 << (i % 64)) != 0)
            }
        }
    }

    /// Clear recipient `i`; returns whether it was pending.
    pub fn remove(&mut self, i: u32) -> bool {
        let was = self.contains(i);
        let i = i as usize;
        match self {
            RecipientSet::Small(bits) if i < 64 => *bits &= !(1 << i),
            RecipientSet::Large(words) => {
                if let Some(w) = words.get_mut(i / 64) {
                    *w &= !(1 << (i % 64));
                }
            }
            RecipientSet::Small(_) => {}
        }
        was
    }

    pub fn is_empty(&self) -> bool {
        match self {
            RecipientSet::Small(bits) => *bits == 0,
            RecipientSet::Large(words) => words.iter().all(|w| *w == 0),
        }
    }

    pub fn count(&self) -> u32 {
        match self {
            RecipientSet::Small(bits) => bits.count_ones(),
            RecipientSet::Large(words) => words.iter().map(|w| w.count_ones()).sum(),
        }
    }

    /// Indices of pending recipients.
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        let words: &[u64] = match self {
            RecipientSet::Small(bits) => std::slice::from_ref(bits),
            RecipientSet::Large(words) => words,
        };
        words.iter().enumerate().flat_map(|(wi, &w)| {
            (0..64u32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| wi as u32 * 64 + b)
        })
    }
}

/// One queued message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub location: Location,
    pub pending: RecipientSet,
    /// Earliest next attempt, microseconds since the epoch (0 = now), as
    /// the spool records it. A queue manager's lease is not in here (see
    /// [`Index::lease`]): this is the value compaction may copy.
    pub next_attempt: u64,
    pub held: bool,
    /// A delay warning was sent (an Admin `DelayWarned` record).
    pub delay_warned: bool,
}

/// Messages and bytes whose current record is in one segment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentUsage {
    pub messages: u32,
    pub bytes: u64,
}

/// The queue's shape for monitoring ([`Index::census`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Messages queued.
    pub messages: usize,
    /// On hold.
    pub held: usize,
    /// Leased by the queue manager: being delivered.
    pub active: usize,
    /// Waiting for a later attempt (not held, not leased).
    pub deferred: usize,
    /// Bytes of the messages' current records.
    pub bytes: u64,
}

/// What applying an outcome did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The message is not queued (already finished or deleted).
    Unknown,
    /// Recorded; the message still has pending recipients.
    Updated,
    /// That was the last pending recipient: the message is finished.
    Finished,
}

/// The index of one core's spool.
#[derive(Debug, Default)]
pub struct Index {
    entries: HashMap<QueueId, IndexEntry>,
    usage: BTreeMap<u64, SegmentUsage>,
    /// (due time, id) of every message not on hold; the due time is the
    /// lease when there is one, else the entry's `next_attempt`.
    schedule: BTreeSet<(u64, QueueId)>,
    /// In-memory leases (see [`Index::lease`]), kept apart from the entries
    /// so that nothing that persists an entry's state can persist a lease.
    leases: HashMap<QueueId, u64>,
}

impl Index {
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: &QueueId) -> Option<&IndexEntry> {
        self.entries.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&QueueId, &IndexEntry)> {
        self.entries.iter()
    }

    /// Counts by state at `now` (microseconds since the epoch). Costs a walk
    /// over the schedule's entries due later (the deferred messages, a few
    /// nanoseconds each), the leases (messages in delivery) and the segments;
    /// everything else is a length.
    pub fn census(&self, now: u64) -> Census {
        let after = (now.saturating_add(1), QueueId::default());
        let scheduled_later = self.schedule.range(after..).count();
        // A message put on hold while in delivery counts as held. The others
        // are scheduled at their lease's end, mostly later.
        let (mut active, mut leased_later) = (0, 0);
        for (id, until) in &self.leases {
            if self.entries.get(id).is_some_and(|e| !e.held) {
                active += 1;
                leased_later += usize::from(*until > now);
            }
        }
        let later = scheduled_later.saturating_sub(leased_later);
        Census {
            messages: self.entries.len(),
            held: self.entries.len().saturating_sub(self.schedule.len()),
            active,
            deferred: later,
            bytes: self.usage.values().map(|u| u.bytes).sum(),
        }
    }

    /// Messages whose current record is in `segment`.
    pub fn usage(&self, segment: u64) -> SegmentUsage {
        self.usage.get(&segment).copied().unwrap_or_default()
    }

    /// Ids in `segment` (for compaction).
    pub fn ids_in(&self, segment: u64) -> Vec<QueueId> {
        let mut ids: Vec<QueueId> = self
            .entries
            .iter()
            .filter(|(_, e)| e.location.segment == segment)
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// When `id` is due: its lease if it has one, else its next attempt.
    fn due_time(&self, id: &QueueId, entry: &IndexEntry) -> u64 {
        self.leases.get(id).copied().unwrap_or(entry.next_attempt)
    }

    /// The earliest next-attempt time of any message not on hold.
    pub fn earliest_due(&self) -> Option<u64> {
        self.schedule.first().map(|(t, _)| *t)
    }

    /// Messages due at `now`, earliest first.
    pub fn due(&self, now: u64) -> impl Iterator<Item = QueueId> + '_ {
        self.schedule
            .range(..(now.saturating_add(1), QueueId::default()))
            .map(|(_, id)| *id)
    }

    /// Add (or replace) a message from its envelope and location.
    pub fn insert(&mut self, envelope: &Envelope, location: Location) {
        let pending = RecipientSet::from_pending(
            envelope.recipients.iter().map(|r| !r.state.is_final()),
            envelope.recipients.len(),
        );
        let entry = IndexEntry {
            location,
            pending,
            next_attempt: envelope.next_attempt,
            held: envelope.held,
            delay_warned: false,
        };
        // A compaction copy replaces the entry of a message that may be
        // leased: the lease (memory) carries over to the new copy.
        let lease = self.leases.get(&envelope.queue_id).copied();
        self.remove(&envelope.queue_id);
        if entry.pending.is_empty() {
            return;
        }
        self.add_usage(&entry);
        if let Some(until) = lease {
            self.leases.insert(envelope.queue_id, until);
        }
        if !entry.held {
            let due = self.due_time(&envelope.queue_id, &entry);
            self.schedule.insert((due, envelope.queue_id));
        }
        self.entries.insert(envelope.queue_id, entry);
    }

    /// Forget a message (finished or deleted); returns its entry.
    pub fn remove(&mut self, id: &QueueId) -> Option<IndexEntry> {
        let entry = self.entries.remove(id)?;
        self.schedule.remove(&(self.due_time(id, &entry), *id));
        self.leases.remove(id);
        if let Some(u) = self.usage.get_mut(&entry.location.segment) {
            u.messages -= 1;
            u.bytes -= u64::from(entry.location.len);
            if u.messages == 0 {
                self.usage.remove(&entry.location.segment);
            }
        }
        Some(entry)
    }

    /// Point a message at a new copy of its record (compaction).
    pub fn relocate(&mut self, id: &QueueId, location: Location) {
        let lease = self.leases.get(id).copied();
        let Some(mut entry) = self.remove(id) else {
            return;
        };
        entry.location = location;
        self.add_usage(&entry);
        if let Some(until) = lease {
            self.leases.insert(*id, until);
        }
        if !entry.held {
            self.schedule.insert((self.due_time(id, &entry), *id));
        }
        self.entries.insert(*id, entry);
    }

    fn add_usage(&mut self, entry: &IndexEntry) {
        let u = self.usage.entry(entry.location.segment).or_default();
        u.messages += 1;
        u.bytes += u64::from(entry.location.len);
    }

    /// Move a message's next attempt in memory only (nothing is logged):
    /// the queue manager leases a message it is delivering so that it is
    /// not picked again meanwhile. A crash forgets the lease, which is what
    /// we want: the message is due again after recovery. The entry's
    /// `next_attempt` is left alone, so a compaction copy (which persists
    /// it) never turns the lease into a real retry time.
    pub fn lease(&mut self, id: &QueueId, until: u64) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        if !entry.held {
            self.schedule.remove(&(self.due_time(id, entry), *id));
            self.schedule.insert((until, *id));
        }
        self.leases.insert(*id, until);
    }

    pub fn apply_outcome(&mut self, o: &Outcome) -> Applied {
        let Some(entry) = self.entries.get(&o.queue_id) else {
            return Applied::Unknown;
        };
        match o.kind {
            OutcomeKind::Deferred { next_attempt } => {
                if !entry.held {
                    self.schedule
                        .remove(&(self.due_time(&o.queue_id, entry), o.queue_id));
                    self.schedule.insert((next_attempt, o.queue_id));
                }
                self.leases.remove(&o.queue_id);
                if let Some(entry) = self.entries.get_mut(&o.queue_id) {
                    entry.next_attempt = next_attempt;
                }
                Applied::Updated
            }
            _ => {
                let Some(entry) = self.entries.get_mut(&o.queue_id) else {
                    return Applied::Unknown;
                };
                entry.pending.remove(o.recipient);
                if entry.pending.is_empty() {
                    self.remove(&o.queue_id);
                    Applied::Finished
                } else {
                    Applied::Updated
                }
            }
        }
    }

    /// Apply several outcomes of one message in order: `Finished` if one of
    /// them finished it, else what the last one did.
    pub fn apply_outcomes(&mut self, outcomes: &[Outcome]) -> Applied {
        let mut last = Applied::Unknown;
        for o in outcomes {
            last = self.apply_outcome(o);
            if last == Applied::Finished {
                return last;
            }
        }
        last
    }

    pub fn apply_admin(&mut self, a: &Admin) -> Applied {
        let Some(entry) = self.entries.get(&a.queue_id) else {
            return Applied::Unknown;
        };
        let key = (self.due_time(&a.queue_id, entry), a.queue_id);
        if a.action == AdminAction::Requeue {
            self.leases.remove(&a.queue_id);
        }
        let Some(entry) = self.entries.get_mut(&a.queue_id) else {
            return Applied::Unknown;
        };
        match a.action {
            AdminAction::Hold => {
                entry.held = true;
                self.schedule.remove(&key);
            }
            AdminAction::Release => {
                if entry.held {
                    entry.held = false;
                    self.schedule.insert(key);
                }
            }
            AdminAction::Requeue => {
                entry.next_attempt = 0;
                if !entry.held {
                    self.schedule.remove(&key);
                    self.schedule.insert((0, a.queue_id));
                }
            }
            AdminAction::Delete => {
                self.remove(&a.queue_id);
                return Applied::Finished;
            }
            AdminAction::DelayWarned => entry.delay_warned = true,
        }
        Applied::Updated
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample_envelope;

    fn loc(segment: u64) -> Location {
        Location {
            segment,
            offset: 64,
            len: 4096,
        }
    }

    fn outcome(id: QueueId, recipient: u32, kind: OutcomeKind) -> Outcome {
        Outcome {
            queue_id: id,
            recipient,
            kind,
            at: 1,
            dsn: "2.0.0".into(),
            reply: "ok".into(),
            relay: "none".into(),
        }
    }

    proptest::proptest! {
        #[test]
        fn census_matches_a_count_of_every_entry(
            ops in proptest::collection::vec((0u8..5, 0u16..6, 0u64..1000), 0..60),
            now in 0u64..1000,
        ) {
            let mut index = Index::default();
            let id = |n: u16| QueueId::from_parts(10, 0, n);
            for (op, n, t) in ops {
                match op {
                    0 => index.insert(&sample_envelope(id(n), 1), loc(u64::from(n % 2))),
                    1 => index.lease(&id(n), t),
                    2 => {
                        index.apply_outcome(&outcome(id(n), 0, OutcomeKind::Deferred { next_attempt: t }));
                    }
                    3 => {
                        let action = if t % 2 == 0 { AdminAction::Hold } else { AdminAction::Release };
                        index.apply_admin(&Admin { queue_id: id(n), action, at: 1 });
                    }
                    _ => {
                        index.apply_outcome(&outcome(id(n), 0, OutcomeKind::Delivered));
                    }
                }
            }
            let mut naive = Census::default();
            for (qid, e) in index.iter() {
                naive.messages += 1;
                naive.bytes += u64::from(e.location.len);
                if e.held {
                    naive.held += 1;
                } else if index.leases.contains_key(qid) {
                    naive.active += 1;
                } else if e.next_attempt > now {
                    naive.deferred += 1;
                }
            }
            proptest::prop_assert_eq!(index.census(now), naive);
        }
    }

    #[test]
    fn census_counts_each_state_once() {
        let mut index = Index::default();
        let ids: Vec<QueueId> = (0..4).map(|i| QueueId::from_parts(10, 0, i)).collect();
        for (n, id) in ids.iter().enumerate() {
            index.insert(&sample_envelope(*id, 2), loc(n as u64 % 2));
        }
        // 0: due now; 1: deferred to 500; 2: leased (in delivery); 3: held.
        index.apply_outcome(&outcome(
            ids[1],
            0,
            OutcomeKind::Deferred { next_attempt: 500 },
        ));
        index.lease(&ids[2], 900);
        index.apply_admin(&Admin {
            queue_id: ids[3],
            action: AdminAction::Hold,
            at: 1,
        });
        let c = index.census(100);
        assert_eq!(
            c,
            Census {
                messages: 4,
                held: 1,
                active: 1,
                deferred: 1,
                bytes: 4 * 4096,
            }
        );
        // Once its time has come, the deferred message is due, no longer deferred.
        assert_eq!(index.census(600).deferred, 0);
    }

    #[test]
    fn lifecycle() {
        let mut index = Index::default();
        let id = QueueId::from_parts(10, 0, 0);
        index.insert(&sample_envelope(id, 3), loc(1));
        assert_eq!(
            index.usage(1),
            SegmentUsage {
                messages: 1,
                bytes: 4096
            }
        );
        assert_eq!(index.due(0).collect::<Vec<_>>(), vec![id]);
        assert_eq!(
            index.apply_outcome(&outcome(id, 0, OutcomeKind::Deferred { next_attempt: 500 })),
            Applied::Updated
        );
        assert_eq!(index.due(499).count(), 0);
        assert_eq!(index.earliest_due(), Some(500));
        assert_eq!(
            index.apply_outcome(&outcome(id, 1, OutcomeKind::Delivered)),
            Applied::Updated
        );
        assert_eq!(
            index.get(&id).unwrap().pending.iter().collect::<Vec<_>>(),
            vec![0, 2]
        );
        index.apply_admin(&Admin {
            queue_id: id,
            action: AdminAction::Hold,
            at: 1,
        });
        assert_eq!(index.earliest_due(), None);
        index.apply_admin(&Admin {
            queue_id: id,
            action: AdminAction::Requeue,
            at: 1,
        });
        index.apply_admin(&Admin {
            queue_id: id,
            action: AdminAction::Release,
            at: 1,
        });
        assert_eq!(index.earliest_due(), Some(0));
        index.lease(&id, 77);
        assert_eq!(index.earliest_due(), Some(77));
        index.lease(&id, 0);
        index.relocate(&id, loc(7));
        assert_eq!(index.usage(1), SegmentUsage::default());
        assert_eq!(index.usage(7).messages, 1);
        assert_eq!(
            index.apply_outcome(&outcome(id, 0, OutcomeKind::Bounced)),
            Applied::Updated
        );
        assert_eq!(
            index.apply_outcome(&outcome(id, 2, OutcomeKind::Expired)),
            Applied::Finished
        );
        assert!(index.is_empty());
        assert_eq!(index.usage(7), SegmentUsage::default());
        assert_eq!(
            index.apply_outcome(&outcome(id, 2, OutcomeKind::Delivered)),
            Applied::Unknown
        );
    }

    #[test]
    fn large_recipient_sets() {
        let mut set = RecipientSet::from_pending((0..200).map(|i| i % 3 == 0), 200);
        assert_eq!(set.count(), 67);
        assert!(set.contains(198) && !set.contains(199) && !set.contains(1000));
        assert!(set.remove(198));
        assert!(!set.remove(198));
        assert_eq!(set.iter().last(), Some(195));
    }

    #[test]
    fn index_bytes_per_message() {
        // Keep the per-message footprint small: a million deferred messages
        // must fit in well under a GiB.
        assert!(
            std::mem::size_of::<IndexEntry>() <= 48,
            "{}",
            std::mem::size_of::<IndexEntry>()
        );
        assert!(std::mem::size_of::<QueueId>() <= 16);
    }
}
