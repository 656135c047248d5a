//! Limits shared by several corepost nodes (`corepost_shared_throttle_redis`).
//! smtpd's client rates use the same link when
//! `corepost_shared_smtpd_client_limits = yes` (see `crate::smtpd::anvil`).
//!
//! `corepost_destination_policy_maps` limits a destination per node: every
//! node paces its own `rate=` and `connection_rate=` and counts its own
//! `concurrency=` connections. With `corepost_shared_throttle_redis` set, the
//! nodes draw from one budget kept in Redis instead (the scripts and keys are
//! described in [`redis`]): a message or a new connection first reserves a
//! slot, a connection first takes a lease.
//!
//! Redis is never on the critical path for longer than
//! `corepost_shared_throttle_timeout_ms`. When it does not answer, or is
//! known to be down, the node uses its fallback share: the rate divided by
//! `corepost_cluster_node_count` (the interval multiplied), the connection
//! limit divided by it (at least one). If every node falls back, the nodes
//! together stay within the limit. The change is logged once per process
//! (`warning: shared throttle: ...: using this node's share`) and once
//! more when Redis answers again.
//!
//! Known limits of the rule:
//! - At the switch, a node may hold more connections than its share (taken
//!   while Redis answered): each such connection closes at its next job
//!   (`qmgr::shared::over_share`), so the nodes together exceed the limit by
//!   those connections for at most one transaction; slots Redis reserved
//!   before the outage are still used, at most one per connection.
//! - During a partial partition (some nodes reach Redis, others do not),
//!   the nodes that reach it use the whole budget while the others use
//!   their share, so the total can reach `limit × (1 + k/N)` for `k`
//!   cut-off nodes of `N`.
//! - A concurrency limit below the node count gives each falling-back node
//!   one connection.

mod redis;

use corepost_config::Config;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Requests waiting for the Redis thread at most; a full queue is treated
/// like a timeout (the cores never wait to enqueue).
const QUEUE: usize = 4096;

/// What the configuration says.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSettings {
    /// `corepost_shared_throttle_redis` (None: limits are per node).
    pub redis: Option<String>,
    /// `corepost_cluster_node_count`.
    pub node_count: u32,
    /// `corepost_shared_throttle_timeout_ms`.
    pub timeout: Duration,
    /// `corepost_shared_throttle_lease_time`.
    pub lease_time: Duration,
    /// `corepost_shared_throttle_key_prefix`.
    pub key_prefix: String,
}

impl ClusterSettings {
    pub fn from_config(config: &Config) -> Result<ClusterSettings, String> {
        ClusterSettings::from_params(&|n| config.get(n))
    }

    /// From a service's view of the parameters (smtpd's `-o` overrides).
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<ClusterSettings, String> {
        use corepost_config::value::{parse_int, parse_time};
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        let url = text("corepost_shared_throttle_redis")?;
        let url = url.trim();
        if !(url.is_empty() || url.starts_with("redis://") || url.starts_with("redis+unix://")) {
            return Err(format!(
                "corepost_shared_throttle_redis = {url}: expected redis://host:port[/db] or redis+unix:///path"
            ));
        }
        let int = |name: &str| parse_int(&text(name)?).map_err(|e| format!("{name}: {e}"));
        let nodes = int("corepost_cluster_node_count")?;
        let node_count = u32::try_from(nodes)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| format!("corepost_cluster_node_count = {nodes}: must be 1 or more"))?;
        let ms = int("corepost_shared_throttle_timeout_ms")?;
        let ms = u64::try_from(ms).ok().filter(|m| *m >= 1).ok_or_else(|| {
            format!("corepost_shared_throttle_timeout_ms = {ms}: must be 1 or more")
        })?;
        let lease_time = parse_time(&text("corepost_shared_throttle_lease_time")?, 's')
            .map_err(|e| format!("corepost_shared_throttle_lease_time: {e}"))?;
        if lease_time < Duration::from_secs(3) {
            return Err("corepost_shared_throttle_lease_time: must be 3s or more".into());
        }
        Ok(ClusterSettings {
            redis: (!url.is_empty()).then(|| url.to_string()),
            node_count,
            timeout: Duration::from_millis(ms),
            lease_time,
            key_prefix: text("corepost_shared_throttle_key_prefix")?,
        })
    }
}

/// `redis://user:secret@host:6379/0` as `redis://***@host:6379/0`.
fn redacted(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://***@{host}{}", &rest[authority.len()..]),
        None => url.to_string(),
    }
}

/// A request to the Redis thread.
#[derive(Debug, Clone)]
pub(crate) enum Ask {
    /// Reserve the next slot of a paced event.
    Pace { key: String, interval: Duration },
    /// Take one of `limit` connection leases.
    Lease {
        key: String,
        member: String,
        limit: usize,
        lifetime: Duration,
    },
    /// Extend a lease (no answer awaited).
    Renew {
        key: String,
        member: String,
        lifetime: Duration,
    },
    /// Give a lease back (no answer awaited).
    Release { key: String, member: String },
    /// Count an event in a window that starts with the first event.
    Count { key: String, window: Duration },
}

/// What Redis answered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Answer {
    /// Wait this long: then the reserved slot has come.
    Wait(Duration),
    /// Whether the lease was granted (a renewal: always).
    Granted(bool),
    /// Events in the current window, this one included.
    Count(u64),
}

struct Request {
    ask: Ask,
    reply: Option<futures_channel::oneshot::Sender<Result<Answer, String>>>,
}

/// Whether Redis is reachable, as the thread last saw it, and what was
/// last logged about it (so each change is logged once per process).
#[derive(Debug, Default)]
pub(crate) struct Health {
    down: AtomicBool,
    logged_down: AtomicBool,
    why: std::sync::Mutex<String>,
}

impl Health {
    fn up(&self) {
        self.down.store(false, Ordering::Release);
    }

    fn down(&self, why: &str) {
        if let Ok(mut w) = self.why.lock() {
            *w = why.to_string();
        }
        self.down.store(true, Ordering::Release);
    }

    /// Whether the node is using its fallback share: Redis known to be
    /// down, or a failure logged and no answer since.
    pub(crate) fn degraded(&self) -> bool {
        self.is_down() || self.logged_down.load(Ordering::Acquire)
    }

    /// Whether requests are worth sending.
    pub(crate) fn is_down(&self) -> bool {
        self.down.load(Ordering::Acquire)
    }

    /// The line to log when this caller is the first to see Redis fail
    /// since it last answered.
    pub(crate) fn note_failure(&self, url: &str, why: &str, nodes: u32) -> Option<String> {
        if self.logged_down.swap(true, Ordering::AcqRel) {
            return None;
        }
        let thread = self.why.lock().map(|w| w.clone()).unwrap_or_default();
        let why = if why.is_empty() {
            thread
        } else {
            why.to_string()
        };
        Some(format!(
            "warning: shared throttle: {url}: {why}; using this node's share of each limit (1/{nodes})"
        ))
    }

    /// The line to log when this caller is the first to see Redis answer
    /// after a failure was logged.
    pub(crate) fn note_success(&self, url: &str) -> Option<String> {
        self.logged_down
            .swap(false, Ordering::AcqRel)
            .then(|| format!("shared throttle: {url}: reachable again; limits are shared"))
    }
}

/// The process's link to Redis, shared by the cores.
pub struct Cluster {
    pub settings: ClusterSettings,
    url: String,
    /// `url` without its user information, for the log.
    shown: String,
    tx: flume::Sender<Request>,
    /// Taken by the thread when it starts.
    rx: std::sync::Mutex<Option<flume::Receiver<Request>>>,
    pub(crate) health: Arc<Health>,
    next_member: AtomicU64,
    /// Random, so two nodes' lease names differ even with equal pids.
    nonce: u64,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("settings", &self.settings)
            .finish()
    }
}

impl Cluster {
    /// The process's link for these settings: the running one when they
    /// did not change (a reload keeps its connection and its leases), else
    /// a new one. The Redis thread starts with the first request, so a
    /// process that never delivers (the delivery helper) never connects.
    pub fn shared(settings: &ClusterSettings) -> Option<Arc<Cluster>> {
        static CURRENT: std::sync::Mutex<Option<Arc<Cluster>>> = std::sync::Mutex::new(None);
        let url = settings.redis.clone()?;
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = current.as_ref().filter(|c| c.settings == *settings) {
            return Some(Arc::clone(c));
        }
        let (tx, rx) = flume::bounded(QUEUE);
        let cluster = Arc::new(Cluster {
            settings: settings.clone(),
            shown: redacted(&url),
            url,
            tx,
            rx: std::sync::Mutex::new(Some(rx)),
            health: Arc::new(Health::default()),
            next_member: AtomicU64::new(0),
            nonce: {
                use rand::RngExt;
                rand::rng().random()
            },
        });
        *current = Some(Arc::clone(&cluster));
        Some(cluster)
    }

    /// Start the Redis thread if it is not running yet.
    fn started(&self) -> bool {
        let Ok(mut rx) = self.rx.lock() else {
            return false;
        };
        if let Some(rx) = rx.take() {
            let health = Arc::clone(&self.health);
            if let Err(e) = redis::spawn(self.url.clone(), self.settings.timeout, rx, health) {
                self.health
                    .down(&format!("cannot start the Redis thread: {e}"));
                return false;
            }
        }
        true
    }

    /// The server as logged: without a password given in the URL.
    pub fn shown_url(&self) -> &str {
        &self.shown
    }

    /// The key of one limit of one destination.
    pub(crate) fn key(&self, kind: &str, transport: &str, nexthop: &str) -> String {
        format!(
            "{}:{kind}:{transport}:{}",
            self.settings.key_prefix,
            nexthop.to_ascii_lowercase()
        )
    }

    /// A lease name no other connection of any node uses.
    pub(crate) fn member(&self) -> String {
        let n = self.next_member.fetch_add(1, Ordering::Relaxed);
        format!("{:x}-{}-{n}", self.nonce, std::process::id())
    }

    /// Ask and await the answer, for at most the configured timeout. Never
    /// blocks the calling core: a full queue or a known outage answers at
    /// once.
    pub(crate) async fn ask(&self, ask: Ask) -> Result<Answer, String> {
        if self.health.is_down() || !self.started() {
            return Err(String::new());
        }
        let (reply, answer) = futures_channel::oneshot::channel();
        self.tx
            .try_send(Request {
                ask,
                reply: Some(reply),
            })
            .map_err(|_| "too many requests waiting for Redis".to_string())?;
        let timeout = self.settings.timeout;
        futures_lite::future::or(
            async { answer.await.unwrap_or_else(|_| Err(String::new())) },
            async {
                glommio::timer::sleep(timeout).await;
                Err(format!("no answer within {} ms", timeout.as_millis()))
            },
        )
        .await
    }

    /// Send without waiting for an answer (renewals, releases): lost when
    /// Redis is down, which the lease lifetime makes harmless.
    pub(crate) fn tell(&self, ask: Ask) {
        if !self.health.is_down() && self.started() {
            let _ = self.tx.try_send(Request { ask, reply: None });
        }
    }
}

#[cfg(test)]
mod tests;
