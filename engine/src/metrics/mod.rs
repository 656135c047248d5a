//! Prometheus metrics: `corepost_metrics_address` names an HTTP endpoint that serves
//! `/metrics` in the Prometheus text format (0.0.4). Every metric is described in
//! `METRICS.md` at the top of the repository.
//!
//! Cost on the hot path, by construction:
//! - With `corepost_metrics_address` empty nothing is set up and every hook is one load of
//!   a thread-local pointer plus one of a `OnceLock`, both `None`.
//! - Each core has its own [`slot::Slot`] (128-byte aligned, so no cache line is shared
//!   between cores); the core's thread is its only writer and bumps a counter with a plain
//!   load and store (no locked instruction). Threads that are not cores (delivery pools)
//!   use one shared slot with atomic adds.
//! - Labelled counts (per transport and destination, rejections) take the slot's own
//!   mutex, which only the scraper ever contends for — once per delivery job, connection
//!   or rejection, never per byte or per command.
//! - Queue sizes are not counted as they change: each core publishes its index's census
//!   once a second (from its housekeeping tick), so they are up to a second old.
//! - Everything is summed at scrape time, on the metrics thread ([`snapshot`]); the HTTP
//!   server ([`server`]) is a plain std thread, never on a core's executor.
//!
//! Hooks elsewhere are one line each (`crate::metrics::received(...)`).

mod encode;
pub mod server;
pub(crate) mod slot;
pub mod snapshot;

pub use server::start;
use slot::{Counter, Mode, Slot};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the scraper reads.
#[derive(Debug)]
pub struct Metrics {
    cores: Box<[Slot]>,
    /// Written by threads that are not cores.
    shared: Slot,
    /// Each core's spool flusher statistics, once the core has opened its spool.
    spools: Mutex<Vec<Option<Arc<corepost_spool::FlushStats>>>>,
    /// `$queue_directory`, to count the maildrop at scrape time.
    queue_dir: PathBuf,
    /// Where the endpoint listens (for the reload warning).
    address: Option<std::net::SocketAddr>,
}

impl Metrics {
    pub fn new(cores: u16, queue_dir: &Path) -> Metrics {
        Metrics {
            cores: (0..cores).map(|_| Slot::default()).collect(),
            shared: Slot::default(),
            spools: Mutex::new(vec![None; usize::from(cores)]),
            queue_dir: queue_dir.to_path_buf(),
            address: None,
        }
    }
}

static METRICS: OnceLock<Metrics> = OnceLock::new();

thread_local! {
    /// The slot of the core this thread runs, when it is one.
    static CORE: Cell<Option<&'static Slot>> = const { Cell::new(None) };
}

/// Turn metrics on, before the cores start, for an endpoint on `address`. Only the first
/// call counts.
pub fn enable(cores: u16, queue_dir: &Path, address: std::net::SocketAddr) -> &'static Metrics {
    METRICS.get_or_init(|| Metrics {
        address: Some(address),
        ..Metrics::new(cores, queue_dir)
    })
}

/// The endpoint is bound once, at start: a reload that changes `corepost_metrics_address`
/// gets a warning saying so (the old endpoint keeps serving, or none is started).
pub fn reload_warning(config: &corepost_config::Config) -> Vec<String> {
    let wanted = config
        .get("corepost_metrics_address")
        .ok()
        .and_then(|v| corepost_config::value::parse_listen_address(&v).ok())
        .flatten();
    let running = METRICS.get().and_then(|m| m.address);
    if wanted == running {
        return Vec::new();
    }
    let show =
        |a: Option<std::net::SocketAddr>| a.map_or_else(|| "empty".to_string(), |a| a.to_string());
    vec![format!(
        "corepost_metrics_address changed to {}: metrics stay {} until corepost is restarted",
        show(wanted),
        match running {
            Some(a) => format!("on {a}"),
            None => "off".to_string(),
        }
    )]
}

/// Called by each core's thread when it starts: its hooks write the core's own slot.
pub fn bind_core(core: u16) {
    if let Some(slot) = METRICS.get().and_then(|m| m.cores.get(usize::from(core))) {
        CORE.with(|c| c.set(Some(slot)));
    }
}

/// The slot this thread writes and how, or nothing when metrics are off.
#[inline]
fn with_slot(f: impl FnOnce(&Slot, Mode)) {
    if let Some(slot) = CORE.with(Cell::get) {
        f(slot, Mode::Owner);
    } else if let Some(m) = METRICS.get() {
        f(&m.shared, Mode::Shared);
    }
}

#[inline]
fn count(c: Counter) {
    with_slot(|s, mode| s.add(c, 1, mode));
}

/// Where a queued message came from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    Smtpd,
    Pickup,
}

/// A message was queued with `recipients` recipients and `bytes` bytes of content.
pub fn received(source: Source, recipients: usize, bytes: usize) {
    let (m, r, b) = match source {
        Source::Smtpd => (
            Counter::ReceivedSmtpd,
            Counter::RecipientsSmtpd,
            Counter::BytesSmtpd,
        ),
        Source::Pickup => (
            Counter::ReceivedPickup,
            Counter::RecipientsPickup,
            Counter::BytesPickup,
        ),
    };
    with_slot(|s, mode| {
        s.add(m, 1, mode);
        s.add(r, recipients as u64, mode);
        s.add(b, bytes as u64, mode);
    });
}

/// smtpd rejected `command` (Postfix's `reject:` log line) with this reply: its code, its
/// enhanced status, and its text (whose first word is the enhanced status of replies made
/// from a table's text, such as header_checks' REJECT).
pub fn rejected(command: &str, code: u16, status: &str, text: &str) {
    let status = if status.is_empty() {
        text.split_whitespace().next().unwrap_or("")
    } else {
        status
    };
    let key = (
        snapshot::command_label(command),
        snapshot::reason_class(status),
        if code >= 500 {
            "permanent"
        } else {
            "temporary"
        },
    );
    with_slot(|s, _| s.reject(key));
}

/// An SMTP session started / ended on this core.
pub fn session_started() {
    count(Counter::SessionsStarted);
}

pub fn session_ended() {
    count(Counter::SessionsEnded);
}

/// The label of a destination: its next hop when `corepost_destination_policy_maps` has an
/// entry for it, else "other" (bounded cardinality; see METRICS.md).
fn destination_label(nexthop: &str, has_policy: bool) -> &str {
    if has_policy { nexthop } else { slot::OTHER }
}

/// Outcome of one recipient of a delivery job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Sent,
    Deferred,
    Bounced,
    Expired,
}

/// A delivery job (one message, one destination) finished with these recipient outcomes;
/// `bytes` is the message's size, counted as sent when a recipient was delivered.
pub fn delivered(
    transport: &str,
    nexthop: &str,
    has_policy: bool,
    outcomes: impl Iterator<Item = Status>,
    bytes: usize,
) {
    let mut counts = slot::DestCounts::default();
    for o in outcomes {
        match o {
            Status::Sent => counts.sent += 1,
            Status::Deferred => counts.deferred += 1,
            Status::Bounced => counts.bounced += 1,
            Status::Expired => counts.expired += 1,
        }
    }
    if counts.sent > 0 {
        counts.bytes = bytes as u64;
    }
    let destination = destination_label(nexthop, has_policy);
    with_slot(|s, mode| {
        for (n, c) in [
            (counts.sent, Counter::MessagesDelivered),
            (counts.deferred, Counter::MessagesDeferred),
            (counts.bounced, Counter::MessagesBounced),
            (counts.expired, Counter::MessagesExpired),
        ] {
            if n > 0 {
                s.add(c, 1, mode);
            }
        }
        s.destination(transport, destination, |c| c.add(&counts));
    });
}

/// A recipient's delivery failed: its log line's `status=` (deferred, bounced, expired ...)
/// and its class (`crate::bounce_class`, a bounded set of names).
pub fn failure(status: &str, class: &'static str) {
    let status = match status {
        "deferred" => "deferred",
        "bounced" => "bounced",
        "expired" => "expired",
        _ => "other",
    };
    with_slot(|s, _| s.failure((status, class)));
}

/// Recipient outcomes of a delivery job over a connection from egress `pool`'s `source`.
pub fn egress(pool: &str, source: &str, outcomes: impl Iterator<Item = Status>) {
    let mut counts = [0u64; 4];
    for o in outcomes {
        counts[o as usize] += 1;
    }
    with_slot(|s, _| {
        for (status, n) in ["sent", "deferred", "bounced", "expired"]
            .into_iter()
            .zip(counts)
        {
            if n > 0 {
                s.egress(pool, source, status, n);
            }
        }
    });
}

/// A message's last recipient is done (Postfix's `removed`).
pub fn removed() {
    count(Counter::MessagesRemoved);
}

/// The SMTP/LMTP client connected to a destination (`ok`: the session was opened).
pub fn connection(transport: &str, nexthop: &str, has_policy: bool, ok: bool) {
    let destination = destination_label(nexthop, has_policy);
    with_slot(|s, _| {
        s.destination(transport, destination, |c| {
            if ok {
                c.connections_ok += 1;
            } else {
                c.connections_failed += 1;
            }
        });
    });
}

/// A DNS lookup's fate in the per-core resolver.
#[derive(Debug, Clone, Copy)]
pub enum Dns {
    /// Answered from the cache.
    Hit,
    /// Waited for the same query already in flight.
    Coalesced,
    /// Not cached: resolved from the name servers.
    Miss,
    /// A query sent (each try, UDP or TCP).
    Query,
}

pub fn dns(event: Dns) {
    count(match event {
        Dns::Hit => Counter::DnsHit,
        Dns::Coalesced => Counter::DnsCoalesced,
        Dns::Miss => Counter::DnsMiss,
        Dns::Query => Counter::DnsQuery,
    });
}

/// A TLS handshake finished, as the server (`smtpd`) or as the client.
pub fn tls_handshake(server: bool, ok: bool) {
    count(match (server, ok) {
        (true, true) => Counter::TlsServerOk,
        (true, false) => Counter::TlsServerFailed,
        (false, true) => Counter::TlsClientOk,
        (false, false) => Counter::TlsClientFailed,
    });
}

/// Which anvil limit refused a client.
#[derive(Debug, Clone, Copy)]
pub enum Anvil {
    ConnectionCount,
    ConnectionRate,
    MessageRate,
    RecipientRate,
    AuthRate,
}

pub fn anvil_rejected(limit: Anvil) {
    count(match limit {
        Anvil::ConnectionCount => Counter::AnvilConnectionCount,
        Anvil::ConnectionRate => Counter::AnvilConnectionRate,
        Anvil::MessageRate => Counter::AnvilMessageRate,
        Anvil::RecipientRate => Counter::AnvilRecipientRate,
        Anvil::AuthRate => Counter::AnvilAuthRate,
    });
}

/// A request to the root delivery helper got its report (`ok`) or failed.
pub fn helper_request(ok: bool) {
    count(if ok {
        Counter::HelperOk
    } else {
        Counter::HelperFailed
    });
}

/// A core opened its spool: its group commits are timed from now on.
pub fn register_spool(core: u16, stats: Arc<corepost_spool::FlushStats>) {
    if let Some(m) = METRICS.get()
        && let Some(s) = m
            .spools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_mut(usize::from(core))
    {
        *s = Some(stats);
    }
}

/// Publish this core's queue census (called once a second by the core; a no-op when
/// metrics are off).
pub fn publish_queue(spool: &corepost_spool::CoreSpool) {
    let Some(slot) = CORE.with(Cell::get) else {
        return;
    };
    let census = spool.index().census(corepost_spool::queue_id::now_micros());
    let segment_bytes: usize = spool.segments().map(|s| s.size()).sum();
    let q = &slot.queue;
    let set = |a: &std::sync::atomic::AtomicU64, v: u64| {
        a.store(v, std::sync::atomic::Ordering::Relaxed);
    };
    set(&q.messages, census.messages as u64);
    set(&q.held, census.held as u64);
    set(&q.active, census.active as u64);
    set(&q.deferred, census.deferred as u64);
    set(&q.live_bytes, census.bytes);
    set(&q.segment_bytes, segment_bytes as u64);
}

/// The exposition text of the global metrics (for the server).
fn render() -> String {
    match METRICS.get() {
        Some(m) => encode::encode(&snapshot::Snapshot::collect(m)),
        None => String::new(),
    }
}
