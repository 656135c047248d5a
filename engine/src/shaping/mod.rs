//! Traffic shaping by mailbox provider, and adaptive backoff from the replies
//! (`corepost_shaping_files`). Postfix has neither; with the parameter empty (the default)
//! nothing here runs and delivery is exactly Postfix's.
//!
//! **Groups.** A `[provider NAME]` section of the tables names MX host patterns
//! (`mx = .google.com .googlemail.com`): every destination whose MX hosts fall under them
//! shares the provider's limits — gmail.com, googlemail.com and every Google Workspace
//! domain share Google's. A `[domain NAME]` section takes one next-hop domain out of MX
//! matching: `provider = NAME` assigns it to a provider, `provider = none` to nothing, and
//! limits or rules of its own make it a group of its own. The tables are merged in order, a
//! later file overriding an earlier one key by key, per provider and per domain (`rule`
//! lines add up; `rule = none` drops the earlier ones); `builtin` names the table shipped
//! with corepost (`contrib/shaping.conf`), which therefore applies only when named.
//!
//! **When a destination is assigned.** At each connection, after the worker has resolved
//! the next hop ([`assign`]): the MX host names of the answer, in preference order, pick the
//! first provider one of them belongs to. The resolver caches the MX and address records
//! for their DNS TTL, so the assignment follows the DNS: a domain that moves its MX to
//! another provider changes group when its records expire, and costs no extra lookup. A
//! next hop with no MX (a bracketed `[host]`, an implicit MX) is matched by its host name;
//! LMTP and Unix-socket next hops are never shaped.
//!
//! **Limits** (`connection_limit`, `messages_per_connection`, `message_rate`,
//! `connection_rate`) hold for all of a group's destinations together, on every core (the
//! counters are process-wide, [`state`]), in addition to the transport's and
//! `corepost_destination_policy_maps`' per-destination limits. With
//! `corepost_shared_throttle_redis` the connection limit and the rates are also shared by
//! the nodes, through the same Redis scripts as the destination policy (keys
//! `<prefix>:conns:shaping:<group>`, `<prefix>:rate:shaping:<group>`,
//! `<prefix>:connect:shaping:<group>`). `minimal_backoff_time` / `maximal_backoff_time`
//! replace main.cf's for the group's deferred mail.
//!
//! **Backoff rules** (`rule = [code] [status] [regex] => action for TIME`): every 4xx/5xx
//! reply from a group's server (greeting, MAIL, RCPT, end of data) is tried against the
//! group's rules in order; the first match starts its action for TIME, unless the same
//! rule's action is in force already (a burst of throttling replies is one trigger):
//! `throttle` lowers limits, `suspend` / `suspend-domain` defer the group's (or the
//! destination's) mail without connecting, its next attempt no earlier than the end of
//! the period, `bounce` / `bounce-domain` return it to the sender with a DSN (what is
//! queued for it and whatever comes due during the period; mail deferred to a later time
//! is not touched), as KumoMTA's `Suspend` and `Bounce` automation actions. Each trigger
//! and each end is one log line (`corepost/qmgr[pid]: shaping: google: throttle
//! message_rate=60/h for 30m (rule FILE:LINE, after mx.example said: 421 4.7.28 ...)`), the
//! actions in force are in `corepost status` and in the metrics, and an action ends by
//! itself when its period is over. Backoff actions are per node: each node reacts to the
//! replies it gets.
//!
//! `suspend-source` (KumoMTA's suspension of one source address) stops the egress source
//! (`crate::egress`) whose connection got the reply, for every destination, until the period
//! ends; its pool's other members carry the mail. A connection without a source triggers
//! nothing.

pub mod config;
mod shared;
pub mod state;

pub use config::Shaping;

use crate::delivery::smtp::ServerReply;
use crate::dns::nexthop::Destination;
use crate::qmgr::{DestQueue, Qmgr};
use config::{Action, Group};
use state::{Active, GroupState};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The group a destination was found to belong to at its last resolution.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub group: Arc<Group>,
    pub state: Arc<GroupState>,
}

fn assigned(dest: &DestQueue) -> Option<Assigned> {
    dest.shaping.borrow().clone()
}

fn log(qmgr: &Qmgr, line: &str) {
    qmgr.ctx
        .log
        .line("corepost/qmgr", &format!("shaping: {line}"));
}

/// Assign `dest` to its group from the addresses its next hop resolved to.
pub fn assign(qmgr: &Qmgr, dest: &DestQueue, nexthop: &str, addrs: &[Destination]) {
    let shaping = Arc::clone(&qmgr.settings.borrow().shaping);
    if shaping.is_empty() {
        dest.shaping.borrow_mut().take();
        return;
    }
    let domain = crate::delivery::smtp::tls_policy::nexthop_domain(nexthop);
    let mut hosts: Vec<&str> = Vec::new();
    for a in addrs {
        if !hosts.contains(&a.host.as_str()) {
            hosts.push(&a.host);
        }
    }
    let found = shaping.group_of(domain, &hosts).map(|group| Assigned {
        state: state::group(&group.name),
        group,
    });
    *dest.shaping.borrow_mut() = found;
}

/// Log the actions of `a`'s group whose period is over.
fn sweep(qmgr: &Qmgr, a: &Assigned) {
    for ended in a.state.sweep() {
        log_end(qmgr, &a.state.name, &ended);
    }
}

fn log_end(qmgr: &Qmgr, group: &str, a: &Active) {
    let scope = a
        .scope
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    log(
        qmgr,
        &format!(
            "{group}: {}{scope} ended after {}s (rule {})",
            a.action.name(),
            a.duration.as_secs(),
            a.rule
        ),
    );
}

/// Why a destination's mail is not delivered now: a suspension or bounce in force.
pub struct Refusal {
    pub bounce: bool,
    pub dsn: String,
    pub text: String,
}

/// The suspension or bounce in force for `dest`, if any.
pub fn refusal(qmgr: &Qmgr, dest: &DestQueue) -> Option<Refusal> {
    let a = assigned(dest)?;
    sweep(qmgr, &a);
    let act = a.state.blocking(&dest.key.nexthop)?;
    let bounce = matches!(act.action, Action::Bounce | Action::BounceDomain);
    let class = if bounce { '5' } else { '4' };
    let status = &act.status;
    let dsn = format!("{class}{}", status.get(1..).unwrap_or(".7.0"));
    let what = match &act.scope {
        Some(d) => format!("destination {d}"),
        None => format!("provider {}", a.state.name),
    };
    let text = if bounce {
        format!(
            "delivery to {what} refused by shaping rule {} after: {}",
            act.rule, act.reply
        )
    } else {
        let left = act.until.saturating_duration_since(Instant::now());
        format!(
            "delivery to {what} suspended for {}s by shaping rule {} after: {}",
            left.as_secs().max(1),
            act.rule,
            act.reply
        )
    };
    Some(Refusal { bounce, dsn, text })
}

/// A place among a group's connections, given back when dropped.
pub struct ConnSlot {
    state: Arc<GroupState>,
    /// No longer counted (closing to bring the group under a lowered limit).
    shed: bool,
    _shared: Option<shared::Lease>,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if !self.shed {
            self.state.release();
        }
    }
}

/// How long a connection waits before asking again when the group's connections are all
/// taken (plus as much again of jitter).
const FULL_RETRY: Duration = Duration::from_millis(50);

/// Wait for a place in `dest`'s group's connection limit. `Ok(None)`: `dest` has no group.
/// `Err(())`: the destination's jobs were taken by other connections meanwhile, or the
/// core is stopping.
pub async fn connection(qmgr: &Rc<Qmgr>, dest: &DestQueue) -> Result<Option<ConnSlot>, ()> {
    let Some(a) = assigned(dest) else {
        return Ok(None);
    };
    // Counted as waiting from the first refusal on (idle connections then make room).
    let mut waiting = None;
    loop {
        sweep(qmgr, &a);
        let limits = a.state.effective(&a.group.limits);
        // Without a limit the connection is counted all the same (the status, the
        // metrics, and a throttle that brings a limit later).
        let Some(limit) = limits.connection_limit else {
            a.state.try_connect(usize::MAX);
            return Ok(Some(ConnSlot {
                state: Arc::clone(&a.state),
                shed: false,
                _shared: None,
            }));
        };
        if a.state.try_connect(limit) {
            let mut slot = ConnSlot {
                state: Arc::clone(&a.state),
                shed: false,
                _shared: None,
            };
            match shared::lease(qmgr, &a.group.name, limit).await {
                shared::Leased::Granted(lease) => {
                    slot._shared = lease;
                    return Ok(Some(slot));
                }
                shared::Leased::Full => drop(slot),
            }
        }
        waiting.get_or_insert_with(|| a.state.waiting());
        let jitter = {
            use rand::RngExt;
            rand::rng().random_range(0..=FULL_RETRY.as_millis() as u64)
        };
        let wait = FULL_RETRY + Duration::from_millis(jitter);
        futures_lite::future::or(glommio::timer::sleep(wait), qmgr.ctx.shutdown.wait()).await;
        if dest.jobs.borrow().is_empty() || qmgr.ctx.shutdown.is_triggered() {
            return Err(());
        }
    }
}

/// Resolves when a connection of another of the group's destinations waits for a place
/// while this one is idle (the idle one then closes, rather than keep the place for its
/// connection cache time); never when `dest` has no group.
pub async fn wanted_elsewhere(dest: &DestQueue) {
    let Some(a) = assigned(dest) else {
        return std::future::pending().await;
    };
    while a.state.waiters() == 0 {
        glommio::timer::sleep(FULL_RETRY).await;
    }
}

/// Whether this connection should close: a throttle lowered the group's connection limit
/// below the connections open. It stops counting at once, so only the excess closes.
pub fn over_limit(dest: &DestQueue, slot: &mut Option<ConnSlot>) -> bool {
    let (Some(a), Some(s)) = (assigned(dest), slot.as_mut()) else {
        return false;
    };
    let limits = a.state.effective(&a.group.limits);
    let open = a
        .state
        .connections
        .load(std::sync::atomic::Ordering::Acquire);
    if s.shed || limits.connection_limit.is_none_or(|l| open <= l) {
        return false;
    }
    s.shed = true;
    a.state.release();
    true
}

/// Whether a connection that carried `uses` transactions has reached the group's
/// `messages_per_connection`.
pub fn used_up(dest: &DestQueue, uses: u32) -> bool {
    assigned(dest)
        .and_then(|a| a.group.limits.messages_per_connection)
        .is_some_and(|n| uses >= n)
}

/// Wait for the group's next message slot (`message_rate`, as lowered by throttles).
pub async fn pace_message(qmgr: &Rc<Qmgr>, dest: &DestQueue) {
    pace(qmgr, dest, "rate").await;
}

/// Wait for the group's next connection slot (`connection_rate`).
pub async fn pace_connection(qmgr: &Rc<Qmgr>, dest: &DestQueue) {
    pace(qmgr, dest, "connect").await;
}

async fn pace(qmgr: &Rc<Qmgr>, dest: &DestQueue, kind: &str) {
    let Some(a) = assigned(dest) else {
        return;
    };
    let limits = a.state.effective(&a.group.limits);
    let interval = if kind == "rate" {
        limits.message_interval
    } else {
        limits.connection_interval
    };
    let Some(interval) = interval else {
        return;
    };
    if shared::paced(qmgr, &a.group.name, kind, interval).await {
        return;
    }
    let wait = if kind == "rate" {
        a.state.reserve_message(interval)
    } else {
        a.state.reserve_connect(interval)
    };
    if !wait.is_zero() {
        glommio::timer::sleep(wait).await;
    }
}

/// A reply from one of `dest`'s servers: start the action of the first rule it matches.
/// `source` is the egress source of the connection (`suspend-source` suspends it).
pub fn observe(qmgr: &Rc<Qmgr>, dest: &DestQueue, reply: &ServerReply, source: Option<&str>) {
    if reply.code < 400 {
        return;
    }
    let Some(a) = assigned(dest) else {
        return;
    };
    let status = reply.status();
    let Some(rule) = a
        .group
        .rules
        .iter()
        .find(|r| r.matches(reply.code, &status, &reply.text))
    else {
        return;
    };
    let domain = crate::delivery::smtp::tls_policy::nexthop_domain(&dest.key.nexthop);
    let text = format!("{domain} said: {reply}");
    let Some(act) = a
        .state
        .trigger(rule, (&dest.key.nexthop, source), &text, &status)
    else {
        return;
    };
    if let (Action::SuspendSource, Some(name)) = (&act.action, source) {
        crate::egress::suspend(name, act.until);
    }
    let settings = match &act.action {
        Action::Throttle(l) => format!(" {}", state::describe(l)),
        _ => String::new(),
    };
    let scope = act
        .scope
        .as_deref()
        .map(|s| format!(" {s}"))
        .unwrap_or_default();
    log(
        qmgr,
        &format!(
            "{}: {}{scope}{settings} for {}s (rule {}, after {text})",
            a.state.name,
            act.action.name(),
            act.duration.as_secs(),
            act.rule
        ),
    );
    // The end is logged when the period is over, by this core (or earlier by any core
    // that finds it over).
    let (qmgr, group) = (Rc::clone(qmgr), Arc::clone(&a.state));
    glommio::spawn_local(async move {
        let over = glommio::timer::sleep(act.duration);
        futures_lite::future::or(over, qmgr.ctx.shutdown.wait()).await;
        if !qmgr.ctx.shutdown.is_triggered()
            && let Some(ended) = group.end(act.id)
        {
            log_end(&qmgr, &group.name, &ended);
        }
    })
    .detach();
}

/// The next attempt of a recipient of `dest` deferred now: the group's backoff times in
/// place of main.cf's, and never before a suspension in force ends.
pub fn next_attempt(qmgr: &Qmgr, dest: &DestQueue, arrival: u64, now: u64) -> u64 {
    let Some(a) = assigned(dest) else {
        return qmgr.backoff(arrival, now);
    };
    let l = &a.group.limits;
    let next = if l.minimal_backoff.is_none() && l.maximal_backoff.is_none() {
        qmgr.backoff(arrival, now)
    } else {
        let s = qmgr.settings.borrow();
        let min = l.minimal_backoff.unwrap_or(s.minimal_backoff);
        let max = l.maximal_backoff.unwrap_or(s.maximal_backoff).max(min);
        let age = Duration::from_micros(now.saturating_sub(arrival));
        now + age.clamp(min, max).as_micros() as u64
    };
    match a.state.blocking(&dest.key.nexthop) {
        Some(act) if !matches!(act.action, Action::Bounce | Action::BounceDomain) => {
            next.max(act.until_micros)
        }
        _ => next,
    }
}

/// `corepost status` lines: each group seen, its connections and limits in force, and
/// each action in force.
pub fn status_lines() -> String {
    let mut out = String::new();
    for r in state::reports() {
        let limit = r
            .limits
            .connection_limit
            .map_or_else(String::new, |l| format!("/{l}"));
        let limits = state::describe(&r.limits);
        out.push_str(&format!(
            "shaping: {}: connections {}{limit}{}{limits}\n",
            r.name,
            r.connections,
            if limits.is_empty() { "" } else { ", " }
        ));
        for a in &r.active {
            let settings = match &a.action {
                Action::Throttle(l) => format!(" {}", state::describe(l)),
                _ => String::new(),
            };
            let scope = a
                .scope
                .as_deref()
                .map(|s| format!(" {s}"))
                .unwrap_or_default();
            let left = a.until.saturating_duration_since(Instant::now());
            out.push_str(&format!(
                "shaping: {}: {}{scope}{settings}, {}s left (rule {}, after {})\n",
                r.name,
                a.action.name(),
                left.as_secs(),
                a.rule,
                a.reply
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
