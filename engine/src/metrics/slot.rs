//! One writer's counters: a [`Slot`] per core (written by that core's thread only) and one
//! shared by every other thread (delivery pool threads, the delivery helper's callers).
//!
//! A core's slot is written with a plain load and store — no locked instruction — because
//! only its own thread writes it; the scraper reads it with relaxed loads. Each slot is
//! aligned to 128 bytes so two cores never write the same cache line. The labelled counts
//! (per transport and destination, per rejection class) sit behind a mutex per slot that only
//! the owner and the scraper take, so it is uncontended but for the moment of a scrape.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// How a slot is written: by its owner (plain load/store), or by any thread (atomic add).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Owner,
    Shared,
}

/// The unlabelled counters, an index into [`Slot::counters`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub(crate) enum Counter {
    ReceivedSmtpd,
    ReceivedPickup,
    RecipientsSmtpd,
    RecipientsPickup,
    BytesSmtpd,
    BytesPickup,
    SessionsStarted,
    SessionsEnded,
    MessagesDelivered,
    MessagesDeferred,
    MessagesBounced,
    MessagesExpired,
    MessagesRemoved,
    DnsHit,
    DnsCoalesced,
    DnsMiss,
    DnsQuery,
    TlsServerOk,
    TlsServerFailed,
    TlsClientOk,
    TlsClientFailed,
    AnvilConnectionCount,
    AnvilConnectionRate,
    AnvilMessageRate,
    AnvilRecipientRate,
    AnvilAuthRate,
    HelperOk,
    HelperFailed,
}

/// Number of [`Counter`]s.
pub(crate) const COUNTERS: usize = Counter::HelperFailed as usize + 1;

/// Per-recipient outcomes, connections and bytes for one transport and destination label.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DestCounts {
    pub sent: u64,
    pub deferred: u64,
    pub bounced: u64,
    pub expired: u64,
    pub connections_ok: u64,
    pub connections_failed: u64,
    /// Message bytes of transactions that delivered at least one recipient.
    pub bytes: u64,
}

impl DestCounts {
    pub(crate) fn add(&mut self, o: &DestCounts) {
        self.sent += o.sent;
        self.deferred += o.deferred;
        self.bounced += o.bounced;
        self.expired += o.expired;
        self.connections_ok += o.connections_ok;
        self.connections_failed += o.connections_failed;
        self.bytes += o.bytes;
    }
}

/// A rejection's labels: the SMTP command (or stage), the reason class, temporary/permanent.
pub(crate) type RejectKey = (&'static str, &'static str, &'static str);

/// A delivery failure's labels: its status and its bounce class.
pub(crate) type FailureKey = (&'static str, &'static str);

/// An egress pool delivery's labels: pool, source, status (sent, deferred, bounced, expired).
pub(crate) type EgressKey = (Box<str>, Box<str>, &'static str);

/// Most (pool, source) label pairs one slot keeps; later ones count as ("other", "other").
pub(crate) const MAX_EGRESS: usize = 256;

/// Counts with labels, behind the slot's mutex.
#[derive(Debug, Default)]
pub(crate) struct Labelled {
    /// transport → destination label → counts.
    pub(crate) deliveries: HashMap<Box<str>, HashMap<Box<str>, DestCounts>>,
    pub(crate) rejects: HashMap<RejectKey, u64>,
    pub(crate) failures: HashMap<FailureKey, u64>,
    pub(crate) egress: HashMap<EgressKey, u64>,
}

/// What a core last published about its queue (see [`super::publish_queue`]).
#[derive(Debug, Default)]
pub(crate) struct QueueGauges {
    pub(crate) messages: AtomicU64,
    pub(crate) held: AtomicU64,
    pub(crate) active: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) live_bytes: AtomicU64,
    pub(crate) segment_bytes: AtomicU64,
}

/// One writer's counters.
#[derive(Debug)]
#[repr(align(128))]
pub(crate) struct Slot {
    counters: [AtomicU64; COUNTERS],
    pub(crate) queue: QueueGauges,
    labelled: Mutex<Labelled>,
}

impl Default for Slot {
    fn default() -> Slot {
        Slot {
            counters: std::array::from_fn(|_| AtomicU64::new(0)),
            queue: QueueGauges::default(),
            labelled: Mutex::new(Labelled::default()),
        }
    }
}

/// Most destination labels ("other" included) one slot keeps per transport; destinations
/// first seen after that count as "other".
pub(crate) const MAX_DESTINATIONS: usize = 100;

/// The label of destinations without a policy entry (or past [`MAX_DESTINATIONS`]).
pub(crate) const OTHER: &str = "other";

impl Slot {
    #[inline]
    pub(crate) fn add(&self, c: Counter, n: u64, mode: Mode) {
        let a = &self.counters[c as usize];
        match mode {
            Mode::Owner => a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed),
            Mode::Shared => {
                a.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn get(&self, c: usize) -> u64 {
        self.counters[c].load(Ordering::Relaxed)
    }

    pub(crate) fn labelled(&self) -> std::sync::MutexGuard<'_, Labelled> {
        self.labelled.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Update the counts of `transport` and `destination` (already "other" when it has no
    /// policy entry); a new destination past the bound counts as "other".
    pub(crate) fn destination(
        &self,
        transport: &str,
        destination: &str,
        update: impl FnOnce(&mut DestCounts),
    ) {
        let mut labelled = self.labelled();
        let by_dest = match labelled.deliveries.get_mut(transport) {
            Some(m) => m,
            None => labelled.deliveries.entry(transport.into()).or_default(),
        };
        let key = if by_dest.contains_key(destination) || by_dest.len() + 1 < MAX_DESTINATIONS {
            destination
        } else {
            OTHER
        };
        match by_dest.get_mut(key) {
            Some(c) => update(c),
            None => update(by_dest.entry(key.into()).or_default()),
        }
    }

    pub(crate) fn reject(&self, key: RejectKey) {
        *self.labelled().rejects.entry(key).or_default() += 1;
    }

    pub(crate) fn failure(&self, key: FailureKey) {
        *self.labelled().failures.entry(key).or_default() += 1;
    }

    /// Count `n` recipients of `pool`'s `source` with `status`; past [`MAX_EGRESS`] label
    /// sets, new ones count as "other".
    pub(crate) fn egress(&self, pool: &str, source: &str, status: &'static str, n: u64) {
        let mut labelled = self.labelled();
        let key: EgressKey = (pool.into(), source.into(), status);
        let key = if labelled.egress.contains_key(&key) || labelled.egress.len() < MAX_EGRESS {
            key
        } else {
            (OTHER.into(), OTHER.into(), status)
        };
        *labelled.egress.entry(key).or_default() += n;
    }
}
