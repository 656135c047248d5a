//! Per-client connection and rate limits, like Postfix's anvil server:
//! `smtpd_client_connection_count_limit`, `..._connection_rate_limit`,
//! `..._message_rate_limit`, `..._recipient_rate_limit`,
//! `..._auth_rate_limit`, per `anvil_rate_time_unit`, with
//! `smtpd_client_event_limit_exceptions`.
//!
//! The kernel spreads one client's connections over all cores, so the
//! counts must be shared: a process-wide table, sharded by a hash of
//! (service, client address) into mutex-protected maps. A lookup locks one
//! shard for a few hundred nanoseconds, once per connection, MAIL, RCPT or
//! AUTH — not per byte — so contention is negligible next to the SMTP round
//! trip, and far simpler than sending every event to an owner core and
//! waiting for its answer (see ARCHITECTURE.md). Rates are counted in fixed
//! windows of one time unit starting at a client's first event, as anvil
//! does; idle entries are dropped when their window is over and they hold
//! no connection.
//!
//! With `corepost_shared_smtpd_client_limits = yes` (and
//! `corepost_shared_throttle_redis`), the message, recipient and AUTH rates
//! are counted for all nodes together in Redis (key
//! `<prefix>:anvil:<service port or name>:<event>:<address>`, a window of
//! `anvil_rate_time_unit` starting with the client's first such event),
//! since a load balancer spreads one client over the nodes. When Redis does
//! not answer, the node's own count is compared with the limit divided by
//! `corepost_cluster_node_count`. The connection limits stay per node.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHARDS: usize = 64;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    Connection,
    Message,
    Recipient,
    Auth,
}

#[derive(Debug)]
struct Counts {
    connections: u32,
    window_start: Instant,
    /// Events in the current window: connection, message, recipient, auth.
    rates: [u32; 4],
}

/// The shared table.
#[derive(Debug)]
pub struct Anvil {
    shards: Vec<Mutex<HashMap<(String, IpAddr), Counts>>>,
}

impl Default for Anvil {
    fn default() -> Self {
        Anvil {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }
}

/// The process-wide table every core uses.
pub fn global() -> Arc<Anvil> {
    static GLOBAL: std::sync::OnceLock<Arc<Anvil>> = std::sync::OnceLock::new();
    Arc::clone(GLOBAL.get_or_init(|| Arc::new(Anvil::default())))
}

fn index(e: Event) -> usize {
    match e {
        Event::Connection => 0,
        Event::Message => 1,
        Event::Recipient => 2,
        Event::Auth => 3,
    }
}

impl Anvil {
    fn shard(&self, service: &str, addr: IpAddr) -> &Mutex<HashMap<(String, IpAddr), Counts>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        service.hash(&mut h);
        addr.hash(&mut h);
        &self.shards[(h.finish() as usize) % SHARDS]
    }

    /// A new connection: returns (simultaneous connections, connections in
    /// this window), both including this one.
    pub fn connect(&self, service: &str, addr: IpAddr, unit: Duration, now: Instant) -> (u32, u32) {
        let mut map = self
            .shard(service, addr)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = entry(&mut map, service, addr, unit, now);
        c.connections += 1;
        c.rates[0] += 1;
        (c.connections, c.rates[0])
    }

    /// A connection ended.
    pub fn disconnect(&self, service: &str, addr: IpAddr, unit: Duration, now: Instant) {
        let mut map = self
            .shard(service, addr)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let key = (service.to_string(), addr);
        if let Some(c) = map.get_mut(&key) {
            c.connections = c.connections.saturating_sub(1);
            if c.connections == 0 && now.duration_since(c.window_start) >= unit {
                map.remove(&key);
            }
        }
    }

    /// Count one event; returns the count in this window including it.
    pub fn event(
        &self,
        service: &str,
        addr: IpAddr,
        e: Event,
        unit: Duration,
        now: Instant,
    ) -> u32 {
        let mut map = self
            .shard(service, addr)
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let c = entry(&mut map, service, addr, unit, now);
        c.rates[index(e)] += 1;
        c.rates[index(e)]
    }
}

fn entry<'m>(
    map: &'m mut HashMap<(String, IpAddr), Counts>,
    service: &str,
    addr: IpAddr,
    unit: Duration,
    now: Instant,
) -> &'m mut Counts {
    let c = map
        .entry((service.to_string(), addr))
        .or_insert_with(|| Counts {
            connections: 0,
            window_start: now,
            rates: [0; 4],
        });
    if now.duration_since(c.window_start) >= unit {
        c.window_start = now;
        c.rates = [0; 4];
    }
    c
}

/// One service's limits.
#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub connection_count: u32,
    pub connection_rate: u32,
    pub message_rate: u32,
    pub recipient_rate: u32,
    pub auth_rate: u32,
    pub time_unit: Duration,
    pub exceptions: super::networks::NetworkList,
    /// `corepost_shared_smtpd_client_limits`: the rates counted in Redis.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl Limits {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<Limits, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let n = |name: &str| -> Result<u32, String> {
            let v = s(name)?;
            v.trim()
                .parse::<i64>()
                .map(|v| u32::try_from(v.max(0)).unwrap_or(u32::MAX))
                .map_err(|_| format!("{name}: not a number: \"{v}\""))
        };
        Ok(Limits {
            connection_count: n("smtpd_client_connection_count_limit")?,
            connection_rate: n("smtpd_client_connection_rate_limit")?,
            message_rate: n("smtpd_client_message_rate_limit")?,
            recipient_rate: n("smtpd_client_recipient_rate_limit")?,
            auth_rate: n("smtpd_client_auth_rate_limit")?,
            time_unit: corepost_config::value::parse_time(&s("anvil_rate_time_unit")?, 's')
                .map_err(|e| format!("anvil_rate_time_unit: {e}"))?
                .max(Duration::from_secs(1)),
            // Postfix 2.9's new name: its default,
            // ${smtpd_client_connection_limit_exceptions:$mynetworks}, keeps
            // the old name working; an error names both.
            exceptions: super::networks::NetworkList::parse(&s(
                "smtpd_client_event_limit_exceptions",
            )?)
            .map_err(|e| {
                let old = "smtpd_client_connection_limit_exceptions";
                format!("smtpd_client_event_limit_exceptions (or {old}): {e}")
            })?,
            cluster: if corepost_config::value::parse_bool(&s(
                "corepost_shared_smtpd_client_limits",
            )?)
            .map_err(|e| format!("corepost_shared_smtpd_client_limits: {e}"))?
            {
                crate::cluster::Cluster::shared(&crate::cluster::ClusterSettings::from_params(get)?)
            } else {
                None
            },
        })
    }

    fn exempt(&self, addr: IpAddr) -> bool {
        self.exceptions.contains(addr)
    }
}

/// A session's registration: counts the connection while it lives.
pub struct Registration {
    anvil: Arc<Anvil>,
    service: String,
    addr: IpAddr,
    unit: Duration,
    counted: bool,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if self.counted {
            self.anvil
                .disconnect(&self.service, self.addr, self.unit, Instant::now());
        }
    }
}

/// A limit was exceeded: the warning to log and the reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub warning: String,
    pub reply: super::reply::Reply,
}

/// Register a connection; `Err` when a connection limit is exceeded (the
/// caller answers 421 and closes).
pub fn connect(
    limits: &Limits,
    service: &str,
    addr: IpAddr,
    client: &str,
    myhostname: &str,
) -> (Registration, Option<Exceeded>) {
    let anvil = global();
    let exempt = limits.exempt(addr);
    let mut reg = Registration {
        anvil: Arc::clone(&anvil),
        service: service.to_string(),
        addr,
        unit: limits.time_unit,
        counted: false,
    };
    if exempt {
        return (reg, None);
    }
    let (count, rate) = anvil.connect(service, addr, limits.time_unit, Instant::now());
    reg.counted = true;
    let reply = || {
        super::reply::Reply::new(
            421,
            "4.7.0",
            format!("{myhostname} Error: too many connections from {addr}"),
        )
    };
    if limits.connection_count > 0 && count > limits.connection_count {
        crate::metrics::anvil_rejected(crate::metrics::Anvil::ConnectionCount);
        return (
            reg,
            Some(Exceeded {
                warning: format!(
                    "Connection concurrency limit exceeded: {count} from {client} for service {service}"
                ),
                reply: reply(),
            }),
        );
    }
    if limits.connection_rate > 0 && rate > limits.connection_rate {
        crate::metrics::anvil_rejected(crate::metrics::Anvil::ConnectionRate);
        return (
            reg,
            Some(Exceeded {
                warning: format!(
                    "Connection rate limit exceeded: {rate} from {client} for service {service}"
                ),
                reply: reply(),
            }),
        );
    }
    (reg, None)
}

/// Count a MAIL, RCPT or AUTH; `Some` when its rate limit is exceeded.
/// The AUTH code calls this with [`Event::Auth`] for every attempt. `log`
/// takes the one line about Redis failing or answering again.
pub async fn record(
    limits: &Limits,
    service: &str,
    addr: IpAddr,
    client: &str,
    event: Event,
    log: &dyn Fn(&str),
) -> Option<Exceeded> {
    let (limit, what, reply, metric) = match event {
        Event::Message => (
            limits.message_rate,
            "Message delivery request rate limit exceeded",
            "Error: too much mail from",
            crate::metrics::Anvil::MessageRate,
        ),
        Event::Recipient => (
            limits.recipient_rate,
            "Recipient address rate limit exceeded",
            "Error: too many recipients from",
            crate::metrics::Anvil::RecipientRate,
        ),
        Event::Auth => (
            limits.auth_rate,
            "AUTH command rate limit exceeded",
            "Error: too many AUTH commands from",
            crate::metrics::Anvil::AuthRate,
        ),
        Event::Connection => return None,
    };
    if limit == 0 || limits.exempt(addr) {
        return None;
    }
    let mut n = global().event(service, addr, event, limits.time_unit, Instant::now());
    let mut limit = limit;
    if let Some(cluster) = &limits.cluster {
        match shared_count(cluster, service, addr, event, limits.time_unit).await {
            Ok(total) => {
                if let Some(line) = cluster.health.note_success(cluster.shown_url()) {
                    log(&line);
                }
                n = total;
            }
            Err(why) => {
                let nodes = cluster.settings.node_count;
                if let Some(line) = cluster
                    .health
                    .note_failure(cluster.shown_url(), &why, nodes)
                {
                    log(&line);
                }
                limit = (limit / nodes).max(1);
            }
        }
    }
    (n > limit).then(|| {
        crate::metrics::anvil_rejected(metric);
        Exceeded {
            warning: format!("{what}: {n} from {client} for service {service}"),
            reply: super::reply::Reply::new(450, "4.7.1", format!("{reply} {addr}")),
        }
    })
}

/// The cluster's count of `event` for this client in its current window.
async fn shared_count(
    cluster: &crate::cluster::Cluster,
    service: &str,
    addr: IpAddr,
    event: Event,
    window: Duration,
) -> Result<u32, String> {
    let name = match event {
        Event::Connection => "connection",
        Event::Message => "message",
        Event::Recipient => "recipient",
        Event::Auth => "auth",
    };
    // Per service port or name: the nodes listen on the same port at
    // different addresses (`10.0.0.1:25`, `10.0.0.2:25`).
    let service = service.rsplit_once(':').map_or(service, |(_, port)| port);
    let key = cluster.key("anvil", &format!("{service}:{name}"), &addr.to_string());
    match cluster
        .ask(crate::cluster::Ask::Count { key, window })
        .await?
    {
        crate::cluster::Answer::Count(n) => Ok(u32::try_from(n).unwrap_or(u32::MAX)),
        other => Err(format!("unexpected answer {other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_windows() {
        let a = Anvil::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let unit = Duration::from_secs(60);
        let t0 = Instant::now();
        assert_eq!(a.connect("smtp", ip, unit, t0), (1, 1));
        assert_eq!(a.connect("smtp", ip, unit, t0), (2, 2));
        assert_eq!(a.connect("other", ip, unit, t0), (1, 1));
        a.disconnect("smtp", ip, unit, t0);
        assert_eq!(a.connect("smtp", ip, unit, t0), (2, 3));
        assert_eq!(a.event("smtp", ip, Event::Recipient, unit, t0), 1);
        assert_eq!(a.event("smtp", ip, Event::Recipient, unit, t0), 2);
        let later = t0 + unit;
        assert_eq!(a.event("smtp", ip, Event::Recipient, unit, later), 1);
        assert_eq!(a.connect("smtp", ip, unit, later), (3, 1));
    }

    #[test]
    fn limits_from_threads() {
        let a = Arc::new(Anvil::default());
        let ip: IpAddr = "192.0.2.2".parse().unwrap();
        let unit = Duration::from_secs(60);
        let t0 = Instant::now();
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let a = Arc::clone(&a);
                std::thread::spawn(move || {
                    for _ in 0..100 {
                        a.event("smtp", ip, Event::Message, unit, t0);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(a.event("smtp", ip, Event::Message, unit, t0), 401);
    }

    /// Redis unreachable: the node's own count against the limit divided
    /// by the node count, and one log line.
    #[test]
    fn without_redis_a_node_takes_its_share_of_a_shared_rate() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let cluster = crate::cluster::Cluster::shared(&crate::cluster::ClusterSettings {
            redis: Some(format!("redis://127.0.0.1:{port}")),
            node_count: 2,
            timeout: Duration::from_millis(300),
            lease_time: Duration::from_secs(30),
            key_prefix: "anvil-test".into(),
        });
        let limits = Limits {
            message_rate: 4,
            time_unit: Duration::from_secs(60),
            cluster,
            ..Limits::default()
        };
        let ip: IpAddr = "192.0.2.99".parse().unwrap();
        let lines = std::cell::RefCell::new(Vec::new());
        let log = |l: &str| lines.borrow_mut().push(l.to_string());
        let verdicts: Vec<bool> = glommio::LocalExecutorBuilder::default()
            .make()
            .unwrap()
            .run(async {
                let mut v = Vec::new();
                for _ in 0..3 {
                    let x = record(&limits, "smtp", ip, "c[192.0.2.99]", Event::Message, &log);
                    v.push(x.await.is_some());
                }
                v
            });
        assert_eq!(verdicts, [false, false, true]);
        let lines = lines.into_inner();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("warning: shared throttle: redis://127.0.0.1:"));
    }
}
