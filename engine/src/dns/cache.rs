//! The per-core answer cache and the in-flight table.
//!
//! Each core has its own resolver, so the cache is a plain `HashMap` behind a `RefCell`: no
//! locks, no sharing. It keeps final results — after CNAME chains are followed — keyed by
//! (lower-case name, type):
//! - positive answers for their TTL (the smallest TTL along the chain), clamped to a floor and a
//!   ceiling, so a zero-TTL record does not turn every message into a query and a week-long TTL
//!   does not pin a stale address;
//! - negative answers (NXDOMAIN, NODATA) for the SOA-derived negative TTL of RFC 2308 (the lesser
//!   of the SOA record's TTL and its MINIMUM), clamped to the floor and a negative ceiling;
//! - temporary failures (SERVFAIL, timeouts) for a short `failure_ttl` (RFC 2308 §7 allows up to
//!   five minutes), so a dead name server is not hammered by every queued message.
//!
//! The table is bounded; when full, expired entries are swept and, if that is not enough, the
//! entry closest to expiry goes.
//!
//! The in-flight table gives de-duplication: the first task to miss becomes the leader and sends
//! the query; later tasks asking the same question wait on the leader's [`Pending`]. If the leader
//! is dropped mid-query (its session went away), its guard marks the entry abandoned so a waiter
//! takes over instead of waiting forever.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::{DnsError, Rdata};

/// Cache key: the lower-case name without the trailing dot, and the record type code.
pub type Key = (String, u16);

/// A cached (or freshly resolved) outcome. The `Rc` makes a cache hit a reference-count bump.
pub type Outcome = Result<Rc<[Rdata]>, DnsError>;

/// An outcome and whether it was authenticated: the AD bit of the answers (all of them, along a
/// CNAME chain) when the query asked for DNSSEC (the DO bit). Kept with the cache entry, so a
/// cached answer is exactly as trustworthy as the answer it came from.
#[derive(Clone, Debug)]
pub struct Answer {
    pub outcome: Outcome,
    pub secure: bool,
}

struct Entry {
    answer: Answer,
    expires: Instant,
}

/// The answer cache. All methods take `now` so tests can move time.
pub struct Cache {
    entries: HashMap<Key, Entry>,
    max_entries: usize,
}

impl Cache {
    pub fn new(max_entries: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            max_entries: max_entries.max(1),
        }
    }

    /// The cached answer, if present and not expired at `now` (expired entries are removed).
    pub fn get(&mut self, key: &Key, now: Instant) -> Option<Answer> {
        let entry = self.entries.get(key)?;
        if entry.expires > now {
            return Some(entry.answer.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Stores `answer` until `now + ttl`. A zero `ttl` stores nothing.
    pub fn insert(&mut self, key: Key, answer: Answer, ttl: Duration, now: Instant) {
        if ttl.is_zero() {
            return;
        }
        if self.entries.len() >= self.max_entries && !self.entries.contains_key(&key) {
            self.make_room(now);
        }
        self.entries.insert(
            key,
            Entry {
                answer,
                expires: now + ttl,
            },
        );
    }

    /// Called when the table is full. Sweeping is O(entries), so it must not happen on every
    /// insert of a full table (with more names in use than the table holds — many destinations —
    /// every miss would walk the whole table): expired entries go, and if that freed less than an
    /// eighth of the table, the eighth closest to expiry goes too. The next sweep is then at
    /// least `max_entries / 8` inserts away, so the cost per insert stays constant.
    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| e.expires > now);
        let target = self.max_entries - (self.max_entries / 8).max(1);
        if self.entries.len() <= target {
            return;
        }
        let excess = self.entries.len() - target;
        let mut expiries: Vec<Instant> = self.entries.values().map(|e| e.expires).collect();
        let (_, cutoff, _) = expiries.select_nth_unstable(excess - 1);
        let cutoff = *cutoff;
        let mut removed = 0;
        // Entries expiring before the cutoff, then (ties) at it, until `excess` are gone.
        self.entries.retain(|_, e| {
            let drop = e.expires < cutoff;
            removed += usize::from(drop);
            !drop
        });
        self.entries.retain(|_, e| {
            let drop = removed < excess && e.expires == cutoff;
            removed += usize::from(drop);
            !drop
        });
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

/// How a pending query ended, as seen by its waiters.
#[derive(Clone)]
pub enum Settled {
    Done(Answer),
    /// The leader was dropped before finishing; a waiter should start over.
    Abandoned,
}

/// One question being resolved right now.
#[derive(Default)]
pub struct Pending {
    settled: RefCell<Option<Settled>>,
    wakers: RefCell<Vec<Waker>>,
}

impl Pending {
    fn settle(&self, how: Settled) {
        *self.settled.borrow_mut() = Some(how);
        for waker in self.wakers.borrow_mut().drain(..) {
            waker.wake();
        }
    }

    /// A future that resolves when the leader settles.
    pub fn wait(self: &Rc<Self>) -> Wait {
        Wait(self.clone())
    }
}

/// Waits for a [`Pending`] to settle.
pub struct Wait(Rc<Pending>);

impl Future for Wait {
    type Output = Settled;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Settled> {
        if let Some(settled) = self.0.settled.borrow().as_ref() {
            return Poll::Ready(settled.clone());
        }
        let mut wakers = self.0.wakers.borrow_mut();
        if !wakers.iter().any(|w| w.will_wake(cx.waker())) {
            wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// The in-flight table.
pub type InFlight = RefCell<HashMap<Key, Rc<Pending>>>;

/// Held by the leader of a query. `finish` publishes the outcome; dropping it unfinished marks
/// the query abandoned. Either way the in-flight entry is removed.
pub struct LeaderGuard<'a> {
    table: &'a InFlight,
    key: Key,
    pending: Rc<Pending>,
    finished: bool,
}

impl<'a> LeaderGuard<'a> {
    /// Registers a new pending query for `key`. The caller has checked that none exists.
    pub fn new(table: &'a InFlight, key: Key) -> LeaderGuard<'a> {
        let pending = Rc::new(Pending::default());
        table.borrow_mut().insert(key.clone(), pending.clone());
        LeaderGuard {
            table,
            key,
            pending,
            finished: false,
        }
    }

    pub fn finish(mut self, answer: Answer) {
        self.finished = true;
        self.release(Settled::Done(answer));
    }

    fn release(&self, how: Settled) {
        let mut table = self.table.borrow_mut();
        if table
            .get(&self.key)
            .is_some_and(|p| Rc::ptr_eq(p, &self.pending))
        {
            table.remove(&self.key);
        }
        drop(table);
        self.pending.settle(how);
    }
}

impl Drop for LeaderGuard<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.release(Settled::Abandoned);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(name: &str) -> Key {
        (name.to_string(), 1)
    }

    fn ok(last: u8) -> Answer {
        Answer {
            outcome: Ok(Rc::from(vec![Rdata::A(Ipv4Addr::new(192, 0, 2, last))])),
            secure: last.is_multiple_of(2),
        }
    }

    #[test]
    fn entries_expire() {
        let mut cache = Cache::new(10);
        let t0 = Instant::now();
        cache.insert(key("a"), ok(1), Duration::from_secs(5), t0);
        assert!(cache.get(&key("a"), t0 + Duration::from_secs(4)).is_some());
        assert!(cache.get(&key("a"), t0 + Duration::from_secs(5)).is_none());
        assert!(cache.is_empty(), "expired entry is removed on lookup");
    }

    #[test]
    fn zero_ttl_is_not_stored() {
        let mut cache = Cache::new(10);
        cache.insert(key("a"), ok(1), Duration::ZERO, Instant::now());
        assert!(cache.is_empty());
    }

    #[test]
    fn negative_entries_are_cached() {
        let mut cache = Cache::new(10);
        let t0 = Instant::now();
        let nx = DnsError::NotFound {
            name: "nx.example".into(),
            rtype: "A",
        };
        let answer = Answer {
            outcome: Err(nx.clone()),
            secure: true,
        };
        cache.insert(key("nx"), answer, Duration::from_secs(3), t0);
        let got = cache.get(&key("nx"), t0).unwrap();
        assert_eq!(got.outcome.err(), Some(nx));
        assert!(got.secure, "the AD bit is kept with the entry");
    }

    #[test]
    fn bounded_size_evicts_expired_then_soonest() {
        let mut cache = Cache::new(2);
        let t0 = Instant::now();
        cache.insert(key("a"), ok(1), Duration::from_secs(1), t0);
        cache.insert(key("b"), ok(2), Duration::from_secs(100), t0);
        // "a" has expired by t0+2: it is swept.
        cache.insert(
            key("c"),
            ok(3),
            Duration::from_secs(50),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("b"), t0).is_some());
        // Nothing expired: the entry closest to expiry ("c") goes.
        cache.insert(
            key("d"),
            ok(4),
            Duration::from_secs(200),
            t0 + Duration::from_secs(2),
        );
        assert_eq!(cache.len(), 2);
        assert!(cache.get(&key("c"), t0).is_none());
        assert!(cache.get(&key("d"), t0).is_some());
        // Replacing an existing key needs no room.
        cache.insert(key("d"), ok(5), Duration::from_secs(200), t0);
        assert_eq!(cache.len(), 2);
    }

    #[test]
    fn a_full_table_evicts_an_eighth_at_a_time() {
        // More names in use than the table holds (many destinations): a sweep frees an eighth
        // of the table, the soonest to expire first, so the following inserts do not sweep.
        let mut cache = Cache::new(800);
        let t0 = Instant::now();
        for i in 0..800u64 {
            let name = format!("n{i}.example");
            cache.insert(key(&name), ok(1), Duration::from_secs(1000 + i), t0);
        }
        assert_eq!(cache.len(), 800);
        cache.insert(key("new.example"), ok(1), Duration::from_secs(5000), t0);
        assert_eq!(cache.len(), 701, "100 evicted, one inserted");
        assert!(cache.get(&key("n99.example"), t0).is_none());
        assert!(cache.get(&key("n100.example"), t0).is_some());
        for i in 0..99u64 {
            let name = format!("more{i}.example");
            cache.insert(key(&name), ok(1), Duration::from_secs(5000), t0);
        }
        assert_eq!(cache.len(), 800, "no sweep until the table is full again");
        // Equal expiries: exactly an eighth goes, not every entry sharing the cutoff.
        let mut same = Cache::new(16);
        for i in 0..16u64 {
            same.insert(key(&format!("s{i}")), ok(1), Duration::from_secs(60), t0);
        }
        same.insert(key("t"), ok(1), Duration::from_secs(60), t0);
        assert_eq!(same.len(), 15);
    }

    #[test]
    fn leader_finish_wakes_waiters_and_clears_the_table() {
        let table: InFlight = RefCell::new(HashMap::new());
        let guard = LeaderGuard::new(&table, key("a"));
        let pending = table.borrow().get(&key("a")).cloned().unwrap();
        let mut wait = Box::pin(pending.wait());
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        guard.finish(ok(9));
        assert!(table.borrow().is_empty());
        match wait.as_mut().poll(&mut cx) {
            Poll::Ready(Settled::Done(Answer {
                outcome: Ok(v),
                secure: false,
            })) => {
                assert_eq!(&*v, &[Rdata::A(Ipv4Addr::new(192, 0, 2, 9))])
            }
            _ => panic!("waiter did not see the outcome"),
        }
    }

    #[test]
    fn dropped_leader_abandons() {
        let table: InFlight = RefCell::new(HashMap::new());
        let guard = LeaderGuard::new(&table, key("a"));
        let pending = table.borrow().get(&key("a")).cloned().unwrap();
        drop(guard);
        assert!(table.borrow().is_empty());
        let mut cx = Context::from_waker(Waker::noop());
        assert!(matches!(
            Box::pin(pending.wait()).as_mut().poll(&mut cx),
            Poll::Ready(Settled::Abandoned)
        ));
    }
}
