//! What a shaping group has now, process-wide: its open connections, its pacing slots and
//! the backoff actions in force. One [`GroupState`] per group name for the life of the
//! process (a reload keeps the counters and the actions), shared by the cores behind a
//! mutex: a group's destinations are spread over the cores by their own hash, and one lock
//! per connection or message is far below the cost of either.

use super::config::{Action, Limits, Rule};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// A backoff action in force.
#[derive(Debug, Clone)]
pub struct Active {
    pub id: u64,
    pub action: Action,
    /// The next hop it is limited to (`suspend-domain`, `bounce-domain`), else the group.
    pub scope: Option<String>,
    pub until: Instant,
    /// `until` as microseconds since the epoch (for a deferral's next attempt).
    pub until_micros: u64,
    pub duration: Duration,
    /// The rule's `file:line`.
    pub rule: String,
    /// The reply that triggered it, and its enhanced status.
    pub reply: String,
    pub status: String,
}

impl Active {
    /// Whether it concerns the destination `nexthop`.
    pub fn covers(&self, nexthop: &str) -> bool {
        self.scope
            .as_deref()
            .is_none_or(|s| s.eq_ignore_ascii_case(nexthop))
    }
}

#[derive(Debug, Default)]
struct Inner {
    next_message: Option<Instant>,
    next_connect: Option<Instant>,
    active: Vec<Active>,
    /// Triggers per action name since the start.
    triggers: BTreeMap<&'static str, u64>,
    /// The configured limits last applied (for status and metrics).
    limits: Limits,
}

/// One group's counters.
#[derive(Debug)]
pub struct GroupState {
    pub name: String,
    /// Connections open to the group's destinations on this node.
    pub connections: AtomicUsize,
    /// Connections waiting for a place.
    waiting: Arc<AtomicUsize>,
    inner: Mutex<Inner>,
}

/// Counts a connection as waiting for a place until dropped.
pub struct Waiting(Arc<AtomicUsize>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> &'static Mutex<BTreeMap<String, Arc<GroupState>>> {
    static GROUPS: OnceLock<Mutex<BTreeMap<String, Arc<GroupState>>>> = OnceLock::new();
    GROUPS.get_or_init(|| Mutex::new(BTreeMap::new()))
}

/// The state of group `name`, made on first use.
pub fn group(name: &str) -> Arc<GroupState> {
    let mut groups = registry().lock().unwrap_or_else(|p| p.into_inner());
    Arc::clone(groups.entry(name.to_string()).or_insert_with(|| {
        Arc::new(GroupState {
            name: name.to_string(),
            connections: AtomicUsize::new(0),
            waiting: Arc::new(AtomicUsize::new(0)),
            inner: Mutex::new(Inner::default()),
        })
    }))
}

/// Every group seen so far.
pub fn all() -> Vec<Arc<GroupState>> {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .values()
        .cloned()
        .collect()
}

/// The smaller of two optional limits (`None`: no limit).
fn tighter<T: Ord + Copy>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl GroupState {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remove the actions whose period is over; they are returned to be logged.
    pub fn sweep(&self) -> Vec<Active> {
        let now = Instant::now();
        let mut inner = self.lock();
        let (ended, kept) = std::mem::take(&mut inner.active)
            .into_iter()
            .partition(|a| a.until <= now);
        inner.active = kept;
        ended
    }

    /// The limits in force: the configured ones, each lowered by the throttles in force.
    pub fn effective(&self, base: &Limits) -> Limits {
        let mut inner = self.lock();
        inner.limits = base.clone();
        lowered(&inner)
    }

    /// The first suspension or bounce in force for the destination `nexthop` (a bounce
    /// before a suspension).
    pub fn blocking(&self, nexthop: &str) -> Option<Active> {
        let now = Instant::now();
        let inner = self.lock();
        let mut found: Vec<&Active> = inner
            .active
            .iter()
            .filter(|a| a.until > now && a.covers(nexthop))
            .filter(|a| !matches!(a.action, Action::Throttle(_) | Action::SuspendSource))
            .collect();
        found.sort_by_key(|a| !matches!(a.action, Action::Bounce | Action::BounceDomain));
        found.first().map(|a| (*a).clone())
    }

    /// Start `rule`'s action after `reply` from `nexthop`, unless it is in force already
    /// (from the same rule, for the same scope): then `None`, so one burst of throttling
    /// replies is one trigger.
    pub fn trigger(
        &self,
        rule: &Rule,
        (nexthop, source): (&str, Option<&str>),
        reply: &str,
        status: &str,
    ) -> Option<Active> {
        let scope = match rule.action {
            // Nothing to suspend when the connection came from no egress source.
            Action::SuspendSource => Some(format!("source {}", source?)),
            _ => rule
                .action
                .per_domain()
                .then(|| nexthop.to_ascii_lowercase()),
        };
        let now = Instant::now();
        let mut inner = self.lock();
        if inner
            .active
            .iter()
            .any(|a| a.until > now && a.rule == rule.origin && a.scope == scope)
        {
            return None;
        }
        let active = Active {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            action: rule.action.clone(),
            scope,
            until: now + rule.duration,
            until_micros: corepost_spool::queue_id::now_micros() + rule.duration.as_micros() as u64,
            duration: rule.duration,
            rule: rule.origin.clone(),
            reply: reply.to_string(),
            status: status.to_string(),
        };
        inner.active.push(active.clone());
        *inner.triggers.entry(rule.action.name()).or_default() += 1;
        Some(active)
    }

    /// End action `id` now (its period is over); `Some` when it was still there.
    pub fn end(&self, id: u64) -> Option<Active> {
        let mut inner = self.lock();
        let at = inner.active.iter().position(|a| a.id == id)?;
        Some(inner.active.remove(at))
    }

    /// Reserve the next message slot `interval` after the last; how long to wait for it.
    pub fn reserve_message(&self, interval: Duration) -> Duration {
        let mut inner = self.lock();
        reserve(&mut inner.next_message, interval)
    }

    /// The same for new connections.
    pub fn reserve_connect(&self, interval: Duration) -> Duration {
        let mut inner = self.lock();
        reserve(&mut inner.next_connect, interval)
    }

    /// Take a place among at most `limit` connections.
    pub fn try_connect(&self, limit: usize) -> bool {
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    /// Count a connection as waiting for a place (until the guard is dropped).
    pub fn waiting(&self) -> Waiting {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(Arc::clone(&self.waiting))
    }

    /// Connections waiting for a place now.
    pub fn waiters(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    pub fn release(&self) {
        let _ = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
    }

    /// What `corepost status` and the metrics show.
    pub fn report(&self) -> Report {
        let now = Instant::now();
        let inner = self.lock();
        let limits = lowered(&inner);
        Report {
            name: self.name.clone(),
            connections: self.connections.load(Ordering::Acquire),
            configured: inner.limits.clone(),
            limits,
            active: inner
                .active
                .iter()
                .filter(|a| a.until > now)
                .cloned()
                .collect(),
            triggers: inner.triggers.clone(),
        }
    }
}

/// The configured limits lowered by the throttles in force.
fn lowered(inner: &Inner) -> Limits {
    let now = Instant::now();
    let mut l = inner.limits.clone();
    for a in inner.active.iter().filter(|a| a.until > now) {
        if let Action::Throttle(t) = &a.action {
            l.connection_limit = tighter(l.connection_limit, t.connection_limit);
            // A longer interval is a lower rate.
            l.message_interval = l.message_interval.max(t.message_interval);
            l.connection_interval = l.connection_interval.max(t.connection_interval);
        }
    }
    l
}

fn reserve(next: &mut Option<Instant>, interval: Duration) -> Duration {
    if interval.is_zero() {
        return Duration::ZERO;
    }
    let now = Instant::now();
    let slot = next.map_or(now, |n| n.max(now));
    *next = Some(slot + interval);
    slot - now
}

/// A group as `corepost status` and the metrics show it.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub connections: usize,
    pub configured: Limits,
    /// In force now (lowered by throttles).
    pub limits: Limits,
    pub active: Vec<Active>,
    pub triggers: BTreeMap<&'static str, u64>,
}

/// Every group's report.
pub fn reports() -> Vec<Report> {
    all().iter().map(|g| g.report()).collect()
}

/// A rate as written in the files: `N/s`, `N/m` or `N/h`, the largest unit that is exact.
pub fn show_rate(interval: Duration) -> String {
    let micros = interval.as_micros().max(1);
    for (unit, per) in [
        ("s", 1_000_000u128),
        ("m", 60_000_000),
        ("h", 3_600_000_000),
    ] {
        if per % micros == 0 {
            return format!("{}/{unit}", per / micros);
        }
    }
    format!("{}/h", (3_600_000_000 / micros).max(1))
}

/// Messages per hour at this spacing (for the metrics).
pub fn per_hour(interval: Duration) -> u64 {
    (3_600_000_000u128 / interval.as_micros().max(1)) as u64
}

/// `connection_limit=2 message_rate=60/h`: the limits that are set.
pub fn describe(l: &Limits) -> String {
    let mut words = Vec::new();
    if let Some(n) = l.connection_limit {
        words.push(format!("connection_limit={n}"));
    }
    if let Some(n) = l.messages_per_connection {
        words.push(format!("messages_per_connection={n}"));
    }
    if let Some(i) = l.message_interval {
        words.push(format!("message_rate={}", show_rate(i)));
    }
    if let Some(i) = l.connection_interval {
        words.push(format!("connection_rate={}", show_rate(i)));
    }
    words.join(" ")
}
