//! What the cores share about the smtpd services: each service's settings
//! and its process limit (master.cf `maxproc`, counted in sessions across
//! all cores), and the main thread's set of listening addresses, which a
//! reload changes.
//!
//! Postfix runs at most `maxproc` smtpd processes per service, one session
//! each; a client beyond that waits in the listen queue, connected but not
//! greeted, until a process is free. corepost counts sessions per service
//! over all cores ([`Slots`]) and stops accepting while the service is
//! full, so clients wait in the kernel's listen queue just the same.

use super::listen::{self, Bound, Claim, Planned};
use crate::smtpd::settings::SmtpdSettings;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Postfix's master warns at most this often that a service is full, and
/// keeps starting processes in stress mode this long after it was.
const STRESS_SECONDS: u64 = 1000;

/// The session count of one service across the cores.
#[derive(Debug)]
pub struct Slots {
    /// master.cf's name (Postfix's `ext_name`, `smtp`) and its listen
    /// address as Postfix names it (`25`, `[127.0.0.1]:2525`).
    pub name: String,
    label: String,
    /// Postfix's stress mode and its warning apply only to services that
    /// listen beyond loopback with more than one process.
    public: bool,
    /// Most sessions at once; 0 is no limit (`maxproc` 0).
    limit: AtomicUsize,
    used: AtomicUsize,
    /// Until when (seconds since the epoch) new sessions run in stress
    /// mode: the service reached its limit less than 1000 s before.
    stress_until: AtomicU64,
    /// When the "has reached its process limit" warning was last logged.
    warned: AtomicU64,
}

/// One session's place in its service's limit; freed when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Slots {
    pub fn new(name: &str, label: &str, limit: usize, public: bool) -> Arc<Slots> {
        Arc::new(Slots {
            name: name.to_string(),
            label: label.to_string(),
            public,
            limit: AtomicUsize::new(limit),
            used: AtomicUsize::new(0),
            stress_until: AtomicU64::new(0),
            warned: AtomicU64::new(0),
        })
    }

    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Acquire)
    }

    /// A reload's new `maxproc` (sessions already running are not cut).
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Release);
    }

    /// Whether a session could start now.
    pub fn available(&self) -> bool {
        let limit = self.limit();
        limit == 0 || self.used.load(Ordering::Acquire) < limit
    }

    /// Take a slot if one is free. The second value is true when this
    /// session fills the service (Postfix then warns, see [`Slots::warning`]).
    pub fn try_take(self: &Arc<Self>) -> Option<(Slot, bool)> {
        let limit = self.limit();
        let mut used = self.used.load(Ordering::Acquire);
        loop {
            if limit != 0 && used >= limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    let full = limit != 0 && used + 1 >= limit;
                    if full && self.public && limit > 1 {
                        self.stress_until
                            .store(now() + STRESS_SECONDS, Ordering::Release);
                    }
                    return Some((Slot(Arc::clone(self)), full));
                }
                Err(now) => used = now,
            }
        }
    }

    /// Postfix's stress mode: the service was full within the last 1000 s.
    pub fn under_stress(&self) -> bool {
        now() < self.stress_until.load(Ordering::Acquire)
    }

    /// Postfix master's warnings when a public service is full, at most
    /// once per 1000 s (empty when they were logged recently).
    pub fn warnings(&self) -> Vec<String> {
        if !self.public || self.limit() <= 1 {
            return Vec::new();
        }
        let t = now();
        let last = self.warned.load(Ordering::Acquire);
        if (last != 0 && last + STRESS_SECONDS > t)
            || self
                .warned
                .compare_exchange(last, t, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return Vec::new();
        }
        vec![
            format!(
                "warning: service \"{}\" ({}) has reached its process limit \"{}\": new clients may experience noticeable delays",
                self.name,
                self.label,
                self.limit()
            ),
            "warning: to avoid this condition, increase the process count in master.cf or reduce the service time per client".into(),
            "warning: see http://www.postfix.org/STRESS_README.html for examples of stress-adapting configuration settings".into(),
        ]
    }
}

/// A service's current settings and its session count.
#[derive(Debug, Clone)]
pub struct Service {
    pub settings: Arc<SmtpdSettings>,
    /// The same with `stress=yes` (Postfix's `-o stress=yes` processes).
    pub stressed: Arc<SmtpdSettings>,
    pub slots: Arc<Slots>,
}

/// The smtpd services by master.cf id (`name/inet`).
pub type Services = HashMap<String, Service>;

/// A service's process limit: master.cf `maxproc`, `-` for
/// `default_process_limit`, 0 for none.
pub fn process_limit(max_proc: Option<u32>, default_limit: i64) -> usize {
    match max_proc {
        Some(n) => n as usize,
        None => usize::try_from(default_limit).unwrap_or(0),
    }
}

/// The main thread's listening addresses: the claim on each, and which
/// service uses it.
#[derive(Debug, Default)]
pub struct Listeners {
    claims: HashMap<SocketAddr, Claim>,
    plan: Vec<Planned>,
}

/// New sockets prepared by [`Listeners::prepare`], not yet in use.
#[derive(Debug)]
pub struct Prepared {
    plan: Vec<Planned>,
    new_claims: Vec<(SocketAddr, Claim)>,
    /// For each core, its sockets for the new addresses.
    pub per_core: Vec<Vec<Bound>>,
}

impl Listeners {
    /// Claim and bind everything `plan` adds to what is open, `cores` times.
    /// Nothing changes on failure (the new claims are released).
    pub fn prepare(&self, plan: Vec<Planned>, cores: usize) -> Result<Prepared, String> {
        let mut new_claims = Vec::new();
        let mut fresh = Vec::new();
        for p in &plan {
            // An address that stays open keeps its sockets, even when a
            // renamed service now uses it.
            if self.plan.iter().any(|o| o.address == p.address) {
                continue;
            }
            match listen::claim(p.address)? {
                Some(claim) => new_claims.push((p.address, claim)),
                // No such address on this host (IPv6 loopback).
                None => continue,
            }
            fresh.push(p.clone());
        }
        if self.plan.is_empty() && fresh.is_empty() {
            return Err("no listening address could be bound".into());
        }
        let mut per_core = Vec::new();
        for _ in 0..cores {
            per_core.push(listen::bind_all(&fresh)?);
        }
        let plan = plan
            .into_iter()
            .filter(|p| self.plan.iter().any(|o| o.address == p.address) || fresh.contains(p))
            .collect();
        Ok(Prepared {
            plan,
            new_claims,
            per_core,
        })
    }

    /// Make `prepared` the current set. Returns the claims of the addresses
    /// it closed, to drop once the cores closed their sockets.
    pub fn commit(&mut self, prepared: Prepared) -> Vec<Claim> {
        for (addr, claim) in prepared.new_claims {
            self.claims.insert(addr, claim);
        }
        let mut released = Vec::new();
        for old in &self.plan {
            if !prepared.plan.iter().any(|p| p.address == old.address)
                && let Some(claim) = self.claims.remove(&old.address)
            {
                released.push(claim);
            }
        }
        self.plan = prepared.plan;
        released
    }

    /// The addresses in use.
    pub fn plan(&self) -> &[Planned] {
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_count_across_threads_and_free_on_drop() {
        let slots = Slots::new("smtp", "25", 2, true);
        let (a, full_a) = slots.try_take().expect("first");
        let (b, full_b) = slots.try_take().expect("second");
        assert!(!full_a && full_b);
        assert!(slots.try_take().is_none());
        assert!(!slots.available());
        assert!(slots.under_stress());
        let moved = std::thread::spawn(move || drop(a));
        moved.join().unwrap();
        assert!(slots.available());
        assert!(slots.try_take().is_some());
        drop(b);
        let unlimited = Slots::new("smtp", "25", 0, true);
        let held: Vec<_> = (0..1000).filter_map(|_| unlimited.try_take()).collect();
        assert_eq!(held.len(), 1000);
        assert!(!unlimited.under_stress());
    }

    #[test]
    fn the_full_warning_is_rate_limited() {
        let slots = Slots::new("192.0.2.1:2602", "[192.0.2.1]:2602", 2, true);
        let first = slots.warnings();
        assert_eq!(
            first[0],
            "warning: service \"192.0.2.1:2602\" ([192.0.2.1]:2602) has reached its process limit \"2\": new clients may experience noticeable delays"
        );
        assert_eq!(first.len(), 3);
        assert!(slots.warnings().is_empty());
        // Loopback-only services: no warning, no stress (MASTER_FLAG_LOCAL_ONLY).
        let local = Slots::new("127.0.0.1:2602", "[127.0.0.1]:2602", 1, false);
        let _held = local.try_take();
        assert!(local.warnings().is_empty());
        assert!(!local.under_stress());
    }

    #[test]
    fn limits_follow_maxproc() {
        assert_eq!(process_limit(None, 100), 100);
        assert_eq!(process_limit(Some(2), 100), 2);
        assert_eq!(process_limit(Some(0), 100), 0);
    }
}
