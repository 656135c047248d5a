//! Egress pools: which source address (and HELO name) each SMTP connection leaves from.
//!
//! Postfix's minimal form is `smtp_bind_address` per transport (master.cf `-o`), with
//! `sender_dependent_default_transport_maps` picking a transport per sender; both work
//! unchanged. This module is the full form, after PowerMTA's virtual MTA pools and KumoMTA's
//! egress sources and pools (`corepost_egress_pools`, parsed in [`config`]):
//!
//! - **Which pool.** A sender's entry in `corepost_sender_egress_pool_maps`, else the
//!   transport's `corepost_egress_pool`, else none (Postfix's behaviour). Only `smtp` transports
//!   use pools. The pool is part of the destination's queue key ([`crate::qmgr::DestKey`]), so
//!   a connection opened for one pool only ever carries that pool's mail: cached connections
//!   never cross pools. The pools of one destination share its owner core.
//! - **Which source.** Each new connection takes the next member by smooth weighted round
//!   robin (nginx's: deterministic, exact proportions over every cycle of the weights), per
//!   pool and destination, skipping members that are suspended ([`suspend`]), at their warm-up
//!   limit for the day, or at their connection limit. It binds to the member's address for the
//!   destination's address family (`address6=` for IPv6; a family the source lacks keeps the
//!   transport's `smtp_bind_address`/`smtp_bind_address6`) and greets with its `helo=` name.
//!   A source address that cannot be bound always defers (4.4.0, as
//!   `smtp_bind_address_enforce = yes`): mail never leaves a pool from another address.
//! - **Limits per source and destination** (destination = transport and next hop, as the
//!   queue manager's): `concurrency=` connections, `rate=` messages, counted on the
//!   destination's owner core. They compose with the destination's own limits, which hold
//!   for the destination as a whole, across its pools: the transport's
//!   `destination_concurrency_limit` and the policy's `concurrency=` cap its connections,
//!   the policy's `rate=` and `connection_rate=` and the transport's rate delay pace them
//!   (with shared throttles Redis paces them, its keys naming no pool).
//! - **Warm-up.** A source with `warmup_start=` may send `warmup_daily` messages (default 500)
//!   per destination on its first day, times `warmup_growth` (default 2) each following day
//!   (UTC days). Once a source reaches its cap, its connection ends and the destination's
//!   next connection goes to another member (the excess spills over); when every member is
//!   capped or suspended the mail is deferred (`4.4.5`) and retried at its next attempt. The
//!   counts are in memory: a restart starts the day's counts again.
//!
//! The source of each delivery is in the JSON events (`egress_pool`, `egress_source`,
//! `egress_address`); Postfix's log lines are unchanged (Postfix logs no source address).

pub mod config;

pub use config::{Egress, Pool, Source, Warmup};

use crate::delivery::smtp::ClientSettings;
use corepost_config::tables::TableList;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The pool name recorded when `corepost_sender_egress_pool_maps` could not answer: not a
/// valid pool name, so the mail is deferred (4.3.0) rather than sent from another address.
pub const LOOKUP_FAILED: &str = "!lookup-failure";

/// What the queue manager needs to pick pools: the file, the senders' table and each
/// transport's pool.
#[derive(Debug, Clone, Default)]
pub struct EgressSettings {
    pub egress: Option<Arc<Egress>>,
    pub sender_maps: Option<TableList>,
    /// `corepost_egress_pool` of each smtp (not lmtp) transport, empty for none.
    pub transport_pools: HashMap<String, String>,
    pub recipient_delimiter: String,
}

impl EgressSettings {
    /// Read `corepost_egress_pools`, `corepost_sender_egress_pool_maps` and every smtp
    /// transport's `corepost_egress_pool`; a pool a transport names that the file lacks is an
    /// error naming master.cf's line.
    pub fn from_config(config: &corepost_config::Config) -> Result<EgressSettings, String> {
        let get = |n: &str| config.get(n).map_err(|e| e.to_string());
        let file = get("corepost_egress_pools")?;
        let file = file.trim();
        let egress = if file.is_empty() {
            None
        } else {
            Some(Arc::new(Egress::load(std::path::Path::new(file))?))
        };
        let maps = get("corepost_sender_egress_pool_maps")?;
        let sender_maps = if maps.trim().is_empty() {
            None
        } else {
            Some(
                TableList::open(&maps)
                    .map_err(|e| format!("corepost_sender_egress_pool_maps: {e}"))?,
            )
        };
        let mut transport_pools = HashMap::new();
        for s in config.master.services.iter().filter(|s| {
            s.kind == corepost_config::mastercf::ServiceType::Unix
                && matches!(s.command.as_str(), "smtp" | "lmtp")
        }) {
            let view = config.service(&s.id()).ok_or("service vanished")?;
            let pool = view
                .get("corepost_egress_pool")
                .map_err(|e| e.to_string())?
                .trim()
                .to_string();
            let at = format!(
                "{}, line {}: transport {}",
                config.master.path.display(),
                s.line,
                s.name
            );
            if s.command == "lmtp" {
                if !pool.is_empty() {
                    return Err(format!(
                        "{at}: corepost_egress_pool applies to smtp transports only"
                    ));
                }
                continue;
            }
            if !pool.is_empty() {
                check_pool(egress.as_deref(), &pool)
                    .map_err(|e| format!("{at}: corepost_egress_pool: {e}"))?;
            }
            transport_pools.insert(s.name.clone(), pool);
        }
        if let Some(maps) = &sender_maps {
            for table in maps.tables() {
                for pool in table.values().unwrap_or_default() {
                    let pool = pool.trim();
                    if !pool.is_empty() && !pool.eq_ignore_ascii_case("dunno") {
                        check_pool(egress.as_deref(), pool).map_err(|e| {
                            format!("corepost_sender_egress_pool_maps: {}: {e}", table.spec())
                        })?;
                    }
                }
            }
        }
        Ok(EgressSettings {
            egress,
            sender_maps,
            transport_pools,
            recipient_delimiter: get("recipient_delimiter")?,
        })
    }

    /// The senders' table entry for `sender` (keys `user+ext@domain`, `user@domain`,
    /// `@domain`; `<>` for the null sender), looked up once per message; [`LOOKUP_FAILED`]
    /// when the table could not answer.
    pub fn sender_pool(&self, sender: &str) -> Option<String> {
        let maps = self.sender_maps.as_ref()?;
        let keys = if sender.is_empty() {
            vec!["<>".to_string()]
        } else {
            corepost_config::tables::keys::address_keys(sender, &self.recipient_delimiter, false)
        };
        match maps.lookup_first(keys.iter().map(String::as_str)) {
            Ok(Some((_, v))) if !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("dunno") => {
                Some(v.trim().to_string())
            }
            Ok(_) => None,
            Err(_) => Some(LOOKUP_FAILED.to_string()),
        }
    }

    /// The pool mail to `transport` leaves from: the sender's ([`EgressSettings::sender_pool`]),
    /// else the transport's; empty when neither names one or the transport is not smtp.
    pub fn pool_for(&self, sender_pool: Option<&str>, transport: &str) -> String {
        match self.transport_pools.get(transport) {
            None => String::new(),
            Some(own) => sender_pool.unwrap_or(own).to_string(),
        }
    }
}

fn check_pool(egress: Option<&Egress>, pool: &str) -> Result<(), String> {
    match egress {
        None => Err(format!(
            "pool \"{pool}\" named but corepost_egress_pools is empty"
        )),
        Some(e) if !e.pools.contains_key(pool) => Err(format!(
            "unknown pool \"{pool}\" (not in {})",
            e.path.display()
        )),
        Some(_) => Ok(()),
    }
}

// ---- Suspension (for backoff rules: a source address a provider is refusing) ---------------

static SUSPENDED: Mutex<Vec<(String, Instant)>> = Mutex::new(Vec::new());
/// Whether any suspension was ever recorded: the common case takes no lock.
static ANY_SUSPENDED: AtomicBool = AtomicBool::new(false);

/// Take source `name` out of every pool, on every core, until `until`: no new connection uses
/// it, and its open connections end before their next message.
pub fn suspend(name: &str, until: Instant) {
    if let Ok(mut list) = SUSPENDED.lock() {
        list.retain(|(n, _)| n != name);
        list.push((name.to_string(), until));
        ANY_SUSPENDED.store(true, Ordering::Release);
    }
}

/// End a suspension early.
pub fn resume(name: &str) {
    if let Ok(mut list) = SUSPENDED.lock() {
        list.retain(|(n, _)| n != name);
    }
}

/// Until when source `name` is suspended, if it is now.
pub fn suspended_until(name: &str) -> Option<Instant> {
    if !ANY_SUSPENDED.load(Ordering::Acquire) {
        return None;
    }
    let now = Instant::now();
    let mut list = SUSPENDED.lock().ok()?;
    list.retain(|(_, until)| *until > now);
    list.iter()
        .find(|(n, _)| n == name)
        .map(|(_, until)| *until)
}

// ---- Selection and per-destination counts (one destination lives on one core) -------------

#[derive(Debug, Default)]
struct SourceState {
    connections: usize,
    next_delivery: Option<Instant>,
    /// The UTC day `sent` counts.
    day: i64,
    sent: u64,
}

#[derive(Debug, Default)]
struct DestState {
    /// Connections from every pool.
    connections: usize,
    /// The destination's next message / new connection slot across its pools (this node's
    /// pacing of its `rate=`, `connection_rate=` and rate delay).
    next_delivery: Option<Instant>,
    next_connect: Option<Instant>,
    /// Smooth weighted round robin: each pool's members' current weights.
    rotation: HashMap<String, Vec<i64>>,
    sources: HashMap<String, SourceState>,
}

thread_local! {
    static DESTS: RefCell<HashMap<String, DestState>> = RefCell::new(HashMap::new());
}

/// Destinations kept before idle ones are forgotten.
const KEEP_DESTS: usize = 10_000;

fn today() -> i64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

/// The result of [`choose`].
pub enum Choice {
    /// A member's connection slot, held until the lease is dropped.
    Chosen(Lease),
    /// Every usable member (or the destination) is at its connection limit: wait for one.
    Busy,
    /// No member may send now: defer with this status and text.
    Unavailable { dsn: &'static str, text: String },
}

/// The next source of `pool` for a new connection to `dest` (transport and next hop), whose
/// connections across all pools are capped at `dest_limit`.
pub fn choose(pool: &Pool, dest: &str, dest_limit: usize) -> Choice {
    let now = Instant::now();
    let day = today();
    DESTS.with(|dests| {
        let mut dests = dests.borrow_mut();
        if dests.len() >= KEEP_DESTS && !dests.contains_key(dest) {
            dests.retain(|_, d| d.connections > 0 || d.sources.values().any(|s| s.day == day));
        }
        let state = dests.entry(dest.to_string()).or_default();
        if state.connections >= dest_limit {
            return Choice::Busy;
        }
        let mut busy = false;
        let mut why = Vec::new();
        let eligible: Vec<bool> = pool
            .members
            .iter()
            .map(|(source, weight)| {
                if *weight == 0 {
                    return false;
                }
                let s = state.sources.entry(source.name.clone()).or_default();
                if s.day != day {
                    (s.day, s.sent) = (day, 0);
                }
                if suspended_until(&source.name).is_some_and(|t| t > now) {
                    why.push(format!("{} is suspended", source.name));
                    false
                } else if let Some(cap) = source.warmup.map(|w| w.cap(day))
                    && s.sent >= cap
                {
                    why.push(format!(
                        "{} reached its warm-up limit ({cap} today)",
                        source.name
                    ));
                    false
                } else if source.concurrency.is_some_and(|c| s.connections >= c) {
                    busy = true;
                    false
                } else {
                    true
                }
            })
            .collect();
        let rotation = state.rotation.entry(pool.name.clone()).or_default();
        if rotation.len() != pool.members.len() {
            *rotation = vec![0; pool.members.len()];
        }
        let Some(pick) = next_member(pool, &eligible, rotation) else {
            if busy {
                return Choice::Busy;
            }
            return Choice::Unavailable {
                dsn: "4.4.5",
                text: format!(
                    "egress pool {}: no source may send now: {}",
                    pool.name,
                    why.join(", ")
                ),
            };
        };
        let source = Arc::clone(&pool.members[pick].0);
        state.connections += 1;
        state
            .sources
            .entry(source.name.clone())
            .or_default()
            .connections += 1;
        Choice::Chosen(Lease {
            dest: dest.to_string(),
            pool: pool.name.clone(),
            source,
            address: Cell::new(None),
        })
    })
}

/// Smooth weighted round robin among the eligible members: each gains its weight, the highest
/// is picked and loses the eligible total.
fn next_member(pool: &Pool, eligible: &[bool], current: &mut [i64]) -> Option<usize> {
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (i, (_, weight)) in pool.members.iter().enumerate() {
        if !eligible[i] {
            continue;
        }
        current[i] += i64::from(*weight);
        total += i64::from(*weight);
        if best.is_none_or(|b| current[i] > current[b]) {
            best = Some(i);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(b)
}

/// One connection's source: its place in the counts, released on drop.
#[derive(Debug)]
pub struct Lease {
    dest: String,
    pub pool: String,
    pub source: Arc<Source>,
    /// The address bound, once connected.
    address: Cell<Option<IpAddr>>,
}

impl Lease {
    /// The transport's client settings with this source's addresses and HELO name; binding
    /// failures always defer.
    pub fn client(&self, base: &ClientSettings) -> ClientSettings {
        let mut c = base.clone();
        if let Some(a) = self.source.address_for(false) {
            c.bind_address = Some(a);
        }
        if let Some(a) = self.source.address_for(true) {
            c.bind_address6 = Some(a);
        }
        if let Some(helo) = &self.source.helo {
            c.helo_name = helo.clone();
        }
        c.bind_address_enforce = true;
        c
    }

    /// Record which server the connection reached (for the address in the events).
    pub fn connected(&self, peer: Option<std::net::SocketAddr>, base: &ClientSettings) {
        let address = peer.and_then(|p| {
            let v6 = p.is_ipv6();
            self.source.address_for(v6).or(if v6 {
                base.bind_address6
            } else {
                base.bind_address
            })
        });
        self.address.set(address);
    }

    /// The address bound, when known.
    pub fn address(&self) -> Option<IpAddr> {
        self.address.get()
    }

    /// Before each message over this connection: how long to wait for the source's `rate=`,
    /// or why the connection must end (suspended, warm-up limit reached). Counts the message
    /// towards the day's warm-up total.
    pub fn admit(&self) -> Result<Duration, String> {
        if suspended_until(&self.source.name).is_some() {
            return Err(format!("{} is suspended", self.source.name));
        }
        let day = today();
        let now = Instant::now();
        DESTS.with(|dests| {
            let mut dests = dests.borrow_mut();
            let s = dests
                .entry(self.dest.clone())
                .or_default()
                .sources
                .entry(self.source.name.clone())
                .or_default();
            if s.day != day {
                (s.day, s.sent) = (day, 0);
            }
            if let Some(cap) = self.source.warmup.map(|w| w.cap(day))
                && s.sent >= cap
            {
                return Err(format!("{} reached its warm-up limit", self.source.name));
            }
            s.sent += 1;
            let Some(interval) = self.source.message_interval else {
                return Ok(Duration::ZERO);
            };
            let slot = s.next_delivery.map_or(now, |n| n.max(now));
            s.next_delivery = Some(slot + interval);
            Ok(slot - now)
        })
    }
}

/// Which of a destination's paced events.
#[derive(Debug, Clone, Copy)]
pub enum Paced {
    Message,
    Connection,
}

impl Lease {
    /// Reserve the destination's next `event` slot, `interval` after the last one of any of
    /// its pools, so its rate holds across pools: how long to wait for it.
    pub fn destination_slot(&self, event: Paced, interval: Duration) -> Duration {
        if interval.is_zero() {
            return Duration::ZERO;
        }
        let now = Instant::now();
        DESTS.with(|dests| {
            let mut dests = dests.borrow_mut();
            let state = dests.entry(self.dest.clone()).or_default();
            let next = match event {
                Paced::Message => &mut state.next_delivery,
                Paced::Connection => &mut state.next_connect,
            };
            let slot = next.map_or(now, |n| n.max(now));
            *next = Some(slot + interval);
            slot - now
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        DESTS.with(|dests| {
            if let Some(d) = dests.borrow_mut().get_mut(&self.dest) {
                d.connections = d.connections.saturating_sub(1);
                if let Some(s) = d.sources.get_mut(&self.source.name) {
                    s.connections = s.connections.saturating_sub(1);
                }
            }
        });
    }
}

#[cfg(test)]
mod tests;
