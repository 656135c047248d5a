//! The queue manager: turns queued messages into delivery attempts and
//! their outcomes into completion records.
//!
//! Every core runs one [`Qmgr`] over its own spool. It picks messages that
//! are due (new ones at once, deferred ones at their next attempt), leases
//! them so they are not picked twice, and splits each message's pending
//! recipients into jobs per destination — transport plus next hop. Each
//! destination has a ready queue and up to
//! `<transport>_destination_concurrency_limit` workers; a worker resolves
//! the next hop, opens one connection and delivers job after job over it
//! (up to `<transport>_destination_recipient_limit` recipients of a message
//! per transaction), keeping it open for `smtp_connection_cache_time_limit`
//! in case more mail for the destination arrives. Each recipient's outcome
//! is appended to the spool: delivered, deferred (next attempt after an
//! exponential backoff between `minimal_backoff_time` and
//! `maximal_backoff_time`), or bounced; a message past
//! `maximal_queue_lifetime` expires instead of being deferred again.
//!
//! Every destination is owned by one core, chosen by a stable hash of
//! transport and next hop ([`owner_of`]): the core that picks a message
//! sends jobs for destinations it does not own to their owner over a
//! bounded glommio channel mesh ([`CoreMsg::Jobs`]); the owner reads the
//! content through the shared mapping (`Job` carries the segment `Arc`),
//! delivers, and sends the outcomes back ([`CoreMsg::Done`]) to be appended
//! to the spool that holds the message. So per-destination limits and the
//! connection cache are process-wide, as in Postfix.

mod connect;
pub mod deliver;
mod egress;
mod offcore;
pub mod policy;
pub mod settings;
pub(crate) mod shared;
pub mod window;

use crate::context::CoreContext;
pub use crate::context::Signal;
use corepost_spool::{Applied, Lsn, Outcome, QueueId, SegmentMap};
pub use settings::{QmgrSettings, TransportKind, TransportSettings};
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a picked message is leased before it could be picked again if
/// its jobs were somehow lost (they are not; this is a backstop).
const LEASE: Duration = Duration::from_secs(3600);
/// Most messages picked per scheduling pass, so one pass never starves the
/// core's sessions.
const PICK_BATCH: usize = 2048;
/// How long the scheduler sleeps with nothing scheduled at all (no message
/// waiting, deferred or in delivery): only new mail or a release, which
/// notify it, can make anything due, so this is only a backstop — an idle
/// core is not woken every second.
const IDLE_SLEEP: Duration = Duration::from_secs(60);

/// Transport and next hop, and the egress pool its mail leaves from (`crate::egress`; empty:
/// none). Mail of each pool has its own queue and connections, so a connection never carries
/// another pool's mail; the pools of one destination share its owner core.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DestKey {
    pub transport: String,
    pub nexthop: String,
    pub pool: String,
}

/// Some recipients of one message for one destination.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: QueueId,
    pub recipients: Vec<u32>,
    pub segment: Arc<SegmentMap>,
    pub offset: usize,
    /// When the queue manager picked the message.
    pub picked: Instant,
    /// The mesh peer whose spool holds the message (where its outcomes
    /// are recorded).
    pub origin: usize,
}

/// What cores send each other.
#[derive(Debug)]
pub enum CoreMsg {
    /// Jobs for destinations the receiving core owns.
    Jobs(Vec<(DestKey, Job)>),
    /// A job is finished: the outcomes to record in the receiver's spool.
    Done { id: QueueId, outcomes: Vec<Outcome> },
}

/// This core's end of the cross-core mesh.
pub struct Mesh {
    pub senders: glommio::channels::channel_mesh::Senders<CoreMsg>,
    pub peer: usize,
    pub peers: usize,
}

/// The core that owns a destination: a stable hash (FNV-1a) of transport
/// and next hop, so every core agrees without talking.
pub fn owner_of(key: &DestKey, peers: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key
        .transport
        .bytes()
        .chain([0u8])
        .chain(key.nexthop.bytes().map(|b| b.to_ascii_lowercase()))
    {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % peers.max(1) as u64) as usize
}

/// One destination's ready queue and workers.
#[derive(Debug)]
pub struct DestQueue {
    pub key: DestKey,
    pub jobs: RefCell<VecDeque<Job>>,
    pub workers: Cell<usize>,
    /// Workers holding an idle connection, waiting for jobs.
    pub idle: Cell<usize>,
    /// Connections currently allowed (Postfix's concurrency feedback);
    /// `None` until the first job sets it from the transport's settings.
    pub window: RefCell<Option<window::ConcurrencyWindow>>,
    /// The earliest start of the next delivery / new connection (pacing).
    pub next_delivery: Cell<Option<Instant>>,
    pub next_connect: Cell<Option<Instant>>,
    /// Open connections holding a place in a shared `concurrency=` limit.
    pub connections: Cell<usize>,
    /// `corepost_destination_policy_maps` entry, looked up once.
    pub policy: Option<policy::Policy>,
    /// Until when the destination is considered dead, and why: its mail
    /// is deferred without connecting.
    pub dead: RefCell<Option<(Instant, String)>>,
    /// Wakes idle workers when jobs arrive.
    pub arrivals: Signal,
    /// The shaping group (`corepost_shaping_files`) found at the last resolution.
    pub shaping: RefCell<Option<crate::shaping::Assigned>>,
}

/// One core's queue manager.
pub struct Qmgr {
    pub ctx: Rc<CoreContext>,
    pub settings: RefCell<Arc<QmgrSettings>>,
    pub resolver: crate::dns::Resolver,
    dests: RefCell<HashMap<DestKey, Rc<DestQueue>>>,
    /// Messages with jobs outstanding, and how many.
    active: RefCell<HashMap<QueueId, usize>>,
    /// Links to the other cores (None with one core).
    pub mesh: Option<Mesh>,
}

impl Qmgr {
    pub fn new(ctx: Rc<CoreContext>, settings: Arc<QmgrSettings>, mesh: Option<Mesh>) -> Rc<Qmgr> {
        let resolver = crate::dns::Resolver::new(settings.resolver.clone());
        Rc::new(Qmgr {
            ctx,
            settings: RefCell::new(settings),
            resolver,
            dests: RefCell::new(HashMap::new()),
            active: RefCell::new(HashMap::new()),
            mesh,
        })
    }

    /// The scheduling loop: runs until the core shuts down.
    pub async fn run(self: Rc<Self>) {
        loop {
            if self.ctx.shutdown.is_triggered() {
                return;
            }
            let next = self.pass();
            // Sleep until something is queued or the next message is due.
            let sleep = next.map_or(IDLE_SLEEP, |d| d.min(Duration::from_secs(1)));
            let wait = self.ctx.new_mail.wait();
            futures_lite::future::or(wait, glommio::timer::sleep(sleep)).await;
        }
    }

    /// One scheduling pass; returns how long until the next message is due.
    fn pass(self: &Rc<Self>) -> Option<Duration> {
        let now = corepost_spool::queue_id::now_micros();
        let room = self.active_room();
        let due: Vec<QueueId> = {
            let spool = self.ctx.spool.borrow();
            let active = self.active.borrow();
            spool
                .index()
                .due(now)
                .filter(|id| !active.contains_key(id))
                .take(PICK_BATCH.min(room))
                .collect()
        };
        for id in due {
            self.pick(id, now);
        }
        if self.active_room() == 0 {
            // Full: the next pass comes when a message leaves the active
            // set (`job_done` notifies), not at once.
            return Some(Duration::from_secs(1));
        }
        let spool = self.ctx.spool.borrow();
        spool
            .index()
            .earliest_due()
            .map(|t| Duration::from_micros(t.saturating_sub(now)))
    }

    /// Lease a message and queue a job per destination of its pending
    /// recipients.
    fn pick(self: &Rc<Self>, id: QueueId, now: u64) {
        let (entry, segment) = {
            let spool = self.ctx.spool.borrow();
            let Some(entry) = spool.index().get(&id).cloned() else {
                return;
            };
            let Some(segment) = spool.segment(entry.location.segment).cloned() else {
                return;
            };
            (entry, segment)
        };
        let stored = match corepost_spool::read_message(&segment, entry.location.offset as usize) {
            Ok(m) => m,
            Err(e) => {
                self.ctx.log.line(
                    "corepost/qmgr",
                    &format!("warning: {id}: cannot read queue record: {e}"),
                );
                return;
            }
        };
        self.ctx
            .spool
            .borrow_mut()
            .lease(&id, now + LEASE.as_micros() as u64);
        // Postfix's qmgr logs this each time it moves a message into the
        // active queue; pflogsumm takes the sender and size from it.
        self.ctx.log.line(
            "corepost/qmgr",
            &format!(
                "{id}: from=<{}>, size={}, nrcpt={} (queue active)",
                stored.envelope.sender,
                stored.content().len(),
                entry.pending.iter().count()
            ),
        );
        let settings = Arc::clone(&self.settings.borrow());
        let egress = &settings.egress;
        let sender_pool = egress.sender_pool(&stored.envelope.sender);
        // Grouped by borrowed names: one key built per destination, not per recipient.
        let mut grouped: HashMap<(&str, &str), Vec<u32>> = HashMap::new();
        for i in entry.pending.iter() {
            let Some(r) = stored.envelope.recipients.get(i as usize) else {
                continue;
            };
            grouped
                .entry((r.transport.as_str(), r.nexthop.as_str()))
                .or_default()
                .push(i);
        }
        let by_dest: Vec<(DestKey, Vec<u32>)> = grouped
            .into_iter()
            .map(|((transport, nexthop), r)| {
                let key = DestKey {
                    transport: transport.to_string(),
                    nexthop: nexthop.to_string(),
                    pool: egress.pool_for(sender_pool.as_deref(), transport),
                };
                (key, r)
            })
            .collect();
        let me = self.peer();
        let mut remote: HashMap<usize, Vec<(DestKey, Job)>> = HashMap::new();
        let limit_of = |transport: &str| {
            settings
                .transports
                .get(transport)
                .map_or(50, |t| t.recipient_limit)
                .max(1)
        };
        // Counted before any job is handed out: a job for a suspended
        // destination finishes (and calls `job_done`) inside `enqueue`.
        let jobs: usize = by_dest
            .iter()
            .map(|(key, r)| r.len().div_ceil(limit_of(&key.transport)))
            .sum();
        if jobs > 0 {
            self.active.borrow_mut().insert(id, jobs);
        }
        for (key, recipients) in by_dest {
            let limit = limit_of(&key.transport);
            for chunk in recipients.chunks(limit) {
                let job = Job {
                    id,
                    recipients: chunk.to_vec(),
                    segment: Arc::clone(&segment),
                    offset: entry.location.offset as usize,
                    picked: Instant::now(),
                    origin: me,
                };
                match &self.mesh {
                    Some(mesh) if owner_of(&key, mesh.peers) != me => {
                        remote
                            .entry(owner_of(&key, mesh.peers))
                            .or_default()
                            .push((key.clone(), job));
                    }
                    _ => self.enqueue(key.clone(), job),
                }
            }
        }
        for (peer, batch) in remote {
            self.send(peer, CoreMsg::Jobs(batch));
        }
    }

    fn enqueue(self: &Rc<Self>, key: DestKey, job: Job) {
        // A lookup first: the key is copied only for a new destination.
        let known = self.dests.borrow().get(&key).cloned();
        let dest = known.unwrap_or_else(|| {
            let dest = Rc::new(DestQueue {
                key: key.clone(),
                jobs: RefCell::new(VecDeque::new()),
                workers: Cell::new(0),
                idle: Cell::new(0),
                window: RefCell::new(None),
                next_delivery: Cell::new(None),
                next_connect: Cell::new(None),
                connections: Cell::new(0),
                policy: self.policy_of(&key),
                dead: RefCell::new(None),
                arrivals: Signal::default(),
                shaping: RefCell::new(None),
            });
            self.dests.borrow_mut().insert(key, Rc::clone(&dest));
            dest
        });
        let key = &dest.key;
        dest.jobs.borrow_mut().push_back(job);
        dest.arrivals.notify_one();
        let (limit, initial, rate_delay) = self
            .settings
            .borrow()
            .transports
            .get(&key.transport)
            .map_or((1, 1, Duration::ZERO), |t| {
                (t.concurrency, t.initial_concurrency, t.rate_delay)
            });
        // With a rate delay, one connection per destination.
        let limit = if rate_delay.is_zero() { limit } else { 1 };
        let window = dest
            .window
            .borrow_mut()
            .get_or_insert_with(|| window::ConcurrencyWindow::new(initial, limit))
            .get();
        let limit = dest
            .policy
            .as_ref()
            .and_then(|p| p.concurrency)
            .unwrap_or(limit);
        let limit = window.clamp(1, limit);
        let dead = dest
            .dead
            .borrow()
            .as_ref()
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, why)| why.clone());
        if let Some(why) = dead {
            // Temporarily suspended: defer without connecting.
            deliver::suspend(self, &dest, &why);
            return;
        }
        let queued = dest.jobs.borrow().len();
        // A new connection only when the idle ones cannot take the queue.
        if dest.workers.get() < limit && queued > dest.idle.get() {
            dest.workers.set(dest.workers.get() + 1);
            let qmgr = Rc::clone(self);
            glommio::spawn_local(async move {
                deliver::worker(Rc::clone(&qmgr), Rc::clone(&dest)).await;
                dest.workers.set(dest.workers.get() - 1);
                // Jobs that arrived as the last worker was leaving.
                let leftover = if dest.workers.get() == 0 {
                    dest.jobs.borrow_mut().pop_front()
                } else {
                    None
                };
                if let Some(job) = leftover {
                    qmgr.enqueue(dest.key.clone(), job);
                } else if dest.workers.get() == 0
                    && dest.jobs.borrow().is_empty()
                    && dest.dead.borrow().is_none()
                    && !dest
                        .window
                        .borrow()
                        .as_ref()
                        .is_some_and(|w| w.has_failures())
                {
                    // Forget idle destinations, so memory follows the
                    // destinations with mail, not every one ever seen. One
                    // with failures since its last success is kept: its
                    // deferred mail comes back, and the feedback must add
                    // up across attempts to find it dead.
                    qmgr.dests.borrow_mut().remove(&dest.key);
                }
            })
            .detach();
        }
    }

    /// Whether a message has deliveries in progress (mailq's `*`).
    pub fn is_active(&self, id: &QueueId) -> bool {
        self.active.borrow().contains_key(id)
    }

    /// Forget that destinations were found dead (all, or those whose next
    /// hop is `nexthop`), so a flush connects again at once.
    pub fn revive(&self, nexthop: Option<&str>) {
        for (key, dest) in self.dests.borrow().iter() {
            let host = key.nexthop.trim_start_matches('[');
            let host = host.split([']', ':']).next().unwrap_or(host);
            if nexthop.is_none_or(|n| {
                n.eq_ignore_ascii_case(host) || n.eq_ignore_ascii_case(&key.nexthop)
            }) {
                dest.dead.borrow_mut().take();
            }
        }
    }

    /// The destination's policy entry, if the table has one.
    fn policy_of(&self, key: &DestKey) -> Option<policy::Policy> {
        let settings = Arc::clone(&self.settings.borrow());
        match policy::lookup(&settings.policy_maps, &key.transport, &key.nexthop) {
            Ok(p) => p,
            Err(e) => {
                self.ctx.log.line(
                    "corepost/qmgr",
                    &format!(
                        "warning: corepost_destination_policy_maps: {}:{}: {e}",
                        key.transport, key.nexthop
                    ),
                );
                None
            }
        }
    }

    /// This core's mesh peer id (0 without a mesh).
    pub fn peer(&self) -> usize {
        self.mesh.as_ref().map_or(0, |m| m.peer)
    }

    /// Send a message to another core, in the background (bounded
    /// channels: a busy peer slows the sender down).
    pub fn send(self: &Rc<Self>, peer: usize, msg: CoreMsg) {
        let qmgr = Rc::clone(self);
        glommio::spawn_local(async move {
            if let Some(mesh) = &qmgr.mesh
                && mesh.senders.send_to(peer, msg).await.is_err()
            {
                qmgr.ctx.log.line(
                    "corepost/qmgr",
                    &format!("warning: cannot reach core peer {peer}"),
                );
            }
        })
        .detach();
    }

    /// A job is finished: record its outcomes where its message lives.
    /// `notice` is the LSN of a bounce notice this core queued for it; the
    /// outcomes are sent to another core only once the notice is durable,
    /// so the notice can never be lost while the outcome is kept.
    pub fn complete(self: &Rc<Self>, job: &Job, outcomes: Vec<Outcome>, notice: Option<Lsn>) {
        if job.origin == self.peer() {
            self.record(job.id, outcomes);
            return;
        }
        let qmgr = Rc::clone(self);
        let (id, origin) = (job.id, job.origin);
        glommio::spawn_local(async move {
            if let Some(lsn) = notice {
                let durable = qmgr.ctx.spool.borrow().durable(lsn);
                let _ = durable.await;
            }
            qmgr.send(origin, CoreMsg::Done { id, outcomes });
        })
        .detach();
    }

    /// Append outcomes to this core's spool and finish the job.
    pub fn record(&self, id: QueueId, outcomes: Vec<Outcome>) {
        self.maybe_warn(id, &outcomes);
        // One record for the whole attempt (a job is one message), however
        // many recipients it had.
        let recorded = self.ctx.spool.borrow_mut().record_outcomes(&outcomes);
        match recorded {
            Ok((Applied::Finished, _)) => {
                crate::metrics::removed();
                self.ctx
                    .log
                    .line("corepost/qmgr", &format!("{id}: removed"));
            }
            Ok(_) => {}
            Err(e) => self.ctx.log.line(
                "corepost/qmgr",
                &format!("warning: {id}: cannot record the outcome: {e}"),
            ),
        }
        self.job_done(id);
    }

    /// `delay_warning_time`: the first time recipients of a message that
    /// old are deferred, tell the sender — once per message, as Postfix:
    /// the spool records that it was done (an Admin `DelayWarned` record,
    /// appended after the notice, so a crash in between can warn twice
    /// but never lose the warning), so a restart does not warn again.
    fn maybe_warn(&self, id: QueueId, outcomes: &[Outcome]) {
        let after = self.settings.borrow().delay_warning;
        let warned = |qmgr: &Qmgr| {
            qmgr.ctx
                .spool
                .borrow()
                .index()
                .get(&id)
                .is_none_or(|e| e.delay_warned)
        };
        if after.is_zero() || warned(self) {
            return;
        }
        let deferred: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| matches!(o.kind, corepost_spool::OutcomeKind::Deferred { .. }))
            .collect();
        if deferred.is_empty()
            || Duration::from_micros(
                corepost_spool::queue_id::now_micros().saturating_sub(id.micros()),
            ) < after
        {
            return;
        }
        let Ok(Some(stored)) = self.ctx.spool.borrow().read(&id) else {
            return;
        };
        let lifetime = self.settings.borrow().maximal_queue_lifetime;
        let until = stored.envelope.arrival + lifetime.as_micros() as u64;
        let reports: Vec<crate::bounce::FailedRecipient<'_>> = deferred
            .iter()
            .filter_map(|o| {
                Some(crate::bounce::FailedRecipient {
                    recipient: stored.envelope.recipients.get(o.recipient as usize)?,
                    status: o.dsn.clone(),
                    diagnostic: o.reply.clone(),
                    remote_mta: None,
                    action: None,
                    will_retry_until: Some(until),
                })
            })
            .collect();
        let now = corepost_spool::queue_id::now_micros();
        deliver::queue_report(
            self,
            crate::bounce::ReportKind::Delay,
            id,
            &stored,
            &reports,
            now,
            "corepost/qmgr",
        );
        let marked = self
            .ctx
            .spool
            .borrow_mut()
            .admin(id, corepost_spool::record::AdminAction::DelayWarned);
        if let Err(e) = marked {
            self.ctx.log.line(
                "corepost/qmgr",
                &format!("warning: {id}: cannot record the delay warning: {e}"),
            );
        }
    }

    /// Handle messages from other cores until shutdown.
    pub async fn receive(
        self: Rc<Self>,
        from: glommio::channels::shared_channel::ConnectedReceiver<CoreMsg>,
    ) {
        loop {
            let msg = futures_lite::future::or(async { from.recv().await }, async {
                self.ctx.shutdown.wait().await;
                None
            })
            .await;
            match msg {
                None => return,
                Some(CoreMsg::Jobs(jobs)) => {
                    for (key, job) in jobs {
                        self.enqueue(key, job);
                    }
                }
                Some(CoreMsg::Done { id, outcomes }) => self.record(id, outcomes),
            }
        }
    }

    /// A job is finished (every recipient has an outcome).
    pub fn job_done(&self, id: QueueId) {
        let was_full = self.active_room() == 0;
        let mut active = self.active.borrow_mut();
        if let Some(n) = active.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                active.remove(&id);
            }
        }
        drop(active);
        if was_full && self.active_room() > 0 {
            self.ctx.new_mail.notify();
        }
    }

    /// How many more messages this core may make active: Postfix's
    /// `qmgr_message_active_limit`, shared evenly by the cores (each core's
    /// queue manager holds its slice of the queue), so that the limit
    /// bounds the whole daemon's in-flight messages as it bounds Postfix's
    /// active queue.
    fn active_room(&self) -> usize {
        let cores = self.mesh.as_ref().map_or(1, |m| m.peers).max(1);
        let limit = self
            .settings
            .borrow()
            .message_active_limit
            .div_ceil(cores)
            .max(1);
        limit.saturating_sub(self.active.borrow().len())
    }

    /// The next attempt after a deferral, given the message's age.
    pub fn backoff(&self, arrival: u64, now: u64) -> u64 {
        let s = self.settings.borrow();
        let age = Duration::from_micros(now.saturating_sub(arrival));
        let delay = age.clamp(s.minimal_backoff, s.maximal_backoff.max(s.minimal_backoff));
        now + delay.as_micros() as u64
    }

    /// Whether a message this old has reached its queue lifetime.
    pub fn expired(&self, arrival: u64, null_sender: bool, now: u64) -> bool {
        let s = self.settings.borrow();
        let lifetime = if null_sender {
            s.bounce_queue_lifetime
        } else {
            s.maximal_queue_lifetime
        };
        Duration::from_micros(now.saturating_sub(arrival)) >= lifetime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_is_stable_and_spread() {
        let key = |n: &str| DestKey {
            transport: "smtp".into(),
            nexthop: n.into(),
            pool: String::new(),
        };
        assert_eq!(
            owner_of(&key("Example.COM"), 4),
            owner_of(&key("example.com"), 4)
        );
        assert_eq!(owner_of(&key("example.com"), 1), 0);
        let mut seen = [0usize; 4];
        for i in 0..1000 {
            seen[owner_of(&key(&format!("d{i}.example")), 4)] += 1;
        }
        assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    }
}
