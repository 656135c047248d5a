//! The receiving end, `corepost-sink`: an SMTP server that accepts (or, by configuration,
//! refuses) mail as fast as it can and counts it, in the spirit of Postfix's `smtp-sink`, with the
//! failure injection of an ESP's "smart sink": temporary and permanent recipient and
//! end-of-data rejections per domain, per local part (`tempfail@`, `permfail@`) or as a global
//! fraction, delays per command, disconnects in the middle of a transaction and 421 at the
//! greeting.
//!
//! Each worker thread runs a current-thread tokio runtime accepting from the shared listener;
//! counters are atomics, the end-to-end latency histogram sits behind a mutex (one lock per
//! message).

use std::collections::BTreeMap;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{Notify, Semaphore};

use crate::conn::{Conn, SmtpStream};
use crate::message::STAMP_HEADER;
use crate::smtp::{self, Command, DataReceiver};
use crate::stats::{self, Latency, ReplyCounts};

/// Fractions of commands to refuse, and delays, for one scope (everything, or one domain).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultRates {
    /// Fraction of RCPT commands answered 4xx.
    pub rcpt_tempfail: f64,
    /// Fraction of RCPT commands answered 5xx.
    pub rcpt_permfail: f64,
    /// Fraction of messages answered 4xx at end of data.
    pub data_tempfail: f64,
    /// Fraction of messages answered 5xx at end of data.
    pub data_permfail: f64,
}

/// Delays before answering, per command.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Delays {
    /// Before the greeting.
    pub greeting: Duration,
    /// Before the HELO/EHLO reply.
    pub helo: Duration,
    /// Before the MAIL reply.
    pub mail: Duration,
    /// Before each RCPT reply.
    pub rcpt: Duration,
    /// Before the 354 reply to DATA.
    pub data: Duration,
    /// Before the end-of-data (or last BDAT) reply.
    pub eod: Duration,
}

/// Failure injection settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Rates for every recipient and message.
    pub global: FaultRates,
    /// Rates that replace the global ones for recipients in one domain (lower-case).
    pub domains: Vec<(String, FaultRates)>,
    /// Fraction of connections answered `421` at the greeting.
    pub greeting_421: f64,
    /// Fraction of transactions in which the sink drops the connection (after MAIL, after a
    /// RCPT, or after the content before its reply, chosen at random).
    pub disconnect: f64,
    /// Delays per command.
    pub delays: Delays,
    /// Chosen RCPT replies (`--rcpt-reply`), tried in order before the rates.
    pub rcpt_replies: Vec<ScriptedReply>,
}

/// A chosen reply to RCPT: a provider's throttling text for recipients whose local part
/// starts with `prefix`, and/or once `after` messages have been accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedReply {
    /// Local-part prefix (lower-case); `None`: every recipient.
    pub prefix: Option<String>,
    /// Messages accepted by the sink before the reply applies.
    pub after: u64,
    pub code: u16,
    pub enhanced: String,
    pub text: String,
}

impl ScriptedReply {
    /// Parses `WHEN:CODE [ENHANCED] TEXT`, WHEN being `prefix=STR`, `after=N` or both
    /// (`prefix=throttle,after=10`). A 421 is answered and the connection closed, as a
    /// server does.
    pub fn parse(spec: &str) -> Result<ScriptedReply, String> {
        let (when, reply) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?}: expected WHEN:CODE [ENHANCED] TEXT"))?;
        let (mut prefix, mut after) = (None, 0);
        for kv in when.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match kv.split_once('=') {
                Some(("prefix", p)) => prefix = Some(p.trim().to_ascii_lowercase()),
                Some(("after", n)) => {
                    after = n
                        .trim()
                        .parse()
                        .map_err(|_| format!("bad count in {kv:?}"))?;
                }
                _ => return Err(format!("{kv:?}: expected prefix=STR or after=N")),
            }
        }
        let mut words = reply.trim().splitn(2, ' ');
        let code: u16 = words
            .next()
            .and_then(|c| c.parse().ok())
            .filter(|c| (400..600).contains(c))
            .ok_or_else(|| format!("{reply:?}: expected a 4xx or 5xx code"))?;
        let rest = words.next().unwrap_or("").trim();
        let (enhanced, text) = match rest.split_once(' ') {
            Some((e, t)) if e.split('.').count() == 3 && e.starts_with(['4', '5']) => (e, t),
            _ if rest.split('.').count() == 3 && rest.starts_with(['4', '5']) => (rest, ""),
            _ => ("", rest),
        };
        Ok(ScriptedReply {
            prefix,
            after,
            code,
            enhanced: enhanced.to_string(),
            text: text.to_string(),
        })
    }

    fn applies(&self, local: &[u8], accepted: u64) -> bool {
        accepted >= self.after
            && self.prefix.as_ref().is_none_or(|p| {
                local.len() >= p.len() && local[..p.len()].eq_ignore_ascii_case(p.as_bytes())
            })
    }
}

impl Faults {
    /// Parses one `--domain-fault` value: `DOMAIN:key=value,...` with keys `tempfail`,
    /// `permfail` (RCPT fractions), `data-tempfail`, `data-permfail`.
    pub fn parse_domain_rule(spec: &str) -> Result<(String, FaultRates), String> {
        let (domain, rest) = spec
            .split_once(':')
            .ok_or_else(|| format!("{spec:?}: expected DOMAIN:key=value,..."))?;
        let mut rates = FaultRates::default();
        for kv in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("{kv:?}: expected key=value"))?;
            let v = parse_fraction(v)?;
            match k.trim() {
                "tempfail" => rates.rcpt_tempfail = v,
                "permfail" => rates.rcpt_permfail = v,
                "data-tempfail" => rates.data_tempfail = v,
                "data-permfail" => rates.data_permfail = v,
                other => {
                    return Err(format!(
                        "unknown fault {other:?} (tempfail, permfail, data-tempfail, data-permfail)"
                    ));
                }
            }
        }
        Ok((domain.trim().to_ascii_lowercase(), rates))
    }

    /// Parses one `--delay` value: `COMMAND=DURATION` with COMMAND one of greeting, helo, mail,
    /// rcpt, data, eod and DURATION like `250ms`, `2s` or `150us`.
    pub fn parse_delay(&mut self, spec: &str) -> Result<(), String> {
        let (cmd, d) = spec
            .split_once('=')
            .ok_or_else(|| format!("{spec:?}: expected COMMAND=DURATION"))?;
        let d = parse_duration(d)?;
        let slot = match cmd.trim().to_ascii_lowercase().as_str() {
            "greeting" | "banner" => &mut self.delays.greeting,
            "helo" | "ehlo" => &mut self.delays.helo,
            "mail" => &mut self.delays.mail,
            "rcpt" => &mut self.delays.rcpt,
            "data" => &mut self.delays.data,
            "eod" | "dot" => &mut self.delays.eod,
            other => return Err(format!("unknown command {other:?} for --delay")),
        };
        *slot = d;
        Ok(())
    }

    fn rates_for(&self, domain: &[u8]) -> &FaultRates {
        self.domains
            .iter()
            .find(|(d, _)| d.as_bytes().eq_ignore_ascii_case(domain))
            .map_or(&self.global, |(_, r)| r)
    }
}

/// Parses a fraction in 0..=1 (`0.25`) or a percentage (`25%`).
pub fn parse_fraction(s: &str) -> Result<f64, String> {
    let s = s.trim();
    let v = match s.strip_suffix('%') {
        Some(p) => p.trim().parse::<f64>().map(|p| p / 100.0),
        None => s.parse::<f64>(),
    }
    .map_err(|_| format!("bad fraction {s:?}"))?;
    if (0.0..=1.0).contains(&v) {
        Ok(v)
    } else {
        Err(format!("fraction {s:?} not between 0 and 1"))
    }
}

/// Parses `250ms`, `2s`, `150us`, `1m` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| c.is_ascii_alphabetic())
        .map_or((s, "s"), |i| (&s[..i], &s[i..]));
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "us" => n / 1e6,
        "ms" => n / 1e3,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?} (us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("bad duration {s:?}"))
}

/// The sink's settings.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Host name in the greeting and EHLO reply.
    pub hostname: String,
    /// Answer EHLO (else only HELO, like `smtp-sink -e`).
    pub ehlo: bool,
    /// Announce PIPELINING.
    pub pipelining: bool,
    /// Announce 8BITMIME.
    pub eightbitmime: bool,
    /// Announce ENHANCEDSTATUSCODES and use enhanced codes in replies.
    pub enhanced: bool,
    /// Announce CHUNKING (BDAT is accepted either way).
    pub chunking: bool,
    /// Announce and accept AUTH PLAIN/LOGIN (any credentials succeed).
    pub auth: bool,
    /// Maximum message size announced and enforced.
    pub max_size: u64,
    /// Maximum concurrent sessions (`-m`).
    pub max_sessions: Option<usize>,
    /// Stop after this many accepted messages (`-M`).
    pub quit_after: Option<u64>,
    /// Write every accepted message into this directory (`-d`).
    pub dump_dir: Option<PathBuf>,
    /// Idle timeout per read and write.
    pub timeout: Duration,
    /// Failure injection.
    pub faults: Faults,
    /// RNG seed for failure injection (0: random).
    pub seed: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            hostname: "sink.localdomain".into(),
            ehlo: true,
            pipelining: true,
            eightbitmime: true,
            enhanced: true,
            chunking: true,
            auth: true,
            max_size: 1 << 30,
            max_sessions: None,
            quit_after: None,
            dump_dir: None,
            timeout: Duration::from_secs(300),
            faults: Faults::default(),
            seed: 0,
        }
    }
}

/// Counters shared by all connections.
pub struct SinkStats {
    started: Instant,
    started_unix_us: u64,
    connections: AtomicU64,
    active: AtomicU64,
    transactions: AtomicU64,
    messages: AtomicU64,
    messages_rejected: AtomicU64,
    recipients: AtomicU64,
    recipients_rejected: AtomicU64,
    bytes: AtomicU64,
    greeting_421: AtomicU64,
    disconnects: AtomicU64,
    protocol_errors: AtomicU64,
    first_message_us: AtomicU64,
    last_message_us: AtomicU64,
    replies: Box<[AtomicU64]>,
    e2e: Mutex<Histogram<u64>>,
    per_conn: Mutex<Histogram<u64>>,
    /// Woken when `quit_after` messages have been accepted.
    pub done: Notify,
}

impl Default for SinkStats {
    fn default() -> Self {
        let z = || AtomicU64::new(0);
        Self {
            started: Instant::now(),
            started_unix_us: stats::unix_micros(),
            connections: z(),
            active: z(),
            transactions: z(),
            messages: z(),
            messages_rejected: z(),
            recipients: z(),
            recipients_rejected: z(),
            bytes: z(),
            greeting_421: z(),
            disconnects: z(),
            protocol_errors: z(),
            first_message_us: z(),
            last_message_us: z(),
            replies: (0..600).map(|_| z()).collect(),
            e2e: Mutex::new(stats::histogram()),
            per_conn: Mutex::new(
                Histogram::new_with_bounds(1, 1 << 40, 2)
                    .expect("static histogram bounds are valid"),
            ),
            done: Notify::new(),
        }
    }
}

/// Transactions per connection.
#[derive(Debug, Clone, Serialize)]
pub struct PerConnection {
    /// Connections closed so far (`p50` and `max` are over these).
    pub closed: u64,
    /// Mean transactions per connection, over all connections (open ones included).
    pub mean: f64,
    /// Median over closed connections.
    pub p50: u64,
    /// Largest over closed connections.
    pub max: u64,
}

/// The JSON summary (`--json`, SIGUSR1, exit).
#[derive(Debug, Clone, Serialize)]
pub struct SinkSummary {
    /// Always `corepost-sink`.
    pub tool: &'static str,
    /// Seconds since start.
    pub elapsed_s: f64,
    /// Start time, µs since the Unix epoch.
    pub started_unix_us: u64,
    /// Connections accepted.
    pub connections: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Mail transactions that reached end of data (accepted or not).
    pub transactions: u64,
    /// Messages accepted (250 at end of data).
    pub messages: u64,
    /// Messages refused at end of data.
    pub messages_rejected: u64,
    /// Recipients accepted in transactions.
    pub recipients: u64,
    /// Recipients refused.
    pub recipients_rejected: u64,
    /// Message bytes received (unstuffed).
    pub bytes: u64,
    /// First accepted message, µs since the Unix epoch (0: none).
    pub first_message_unix_us: u64,
    /// Last accepted message, µs since the Unix epoch (0: none).
    pub last_message_unix_us: u64,
    /// Accepted messages per second between the first and the last one.
    pub msgs_per_sec: f64,
    /// Transactions per closed connection.
    pub transactions_per_connection: PerConnection,
    /// Injected failures by kind.
    pub injected: BTreeMap<&'static str, u64>,
    /// Sessions ended by a protocol error or an I/O error.
    pub protocol_errors: u64,
    /// Replies sent, by code.
    pub replies: BTreeMap<String, u64>,
    /// End-to-end latency from the source's stamp header to end of data, µs (`count` 0 when no
    /// message carried the header).
    pub e2e_latency_us: Latency,
}

impl SinkStats {
    /// Accepted messages so far.
    pub fn messages(&self) -> u64 {
        self.messages.load(Relaxed)
    }

    /// Recipients refused so far.
    pub fn recipients_rejected(&self) -> u64 {
        self.recipients_rejected.load(Relaxed)
    }

    /// A snapshot of everything.
    pub fn summary(&self, faults: &BTreeMap<&'static str, u64>) -> SinkSummary {
        let first = self.first_message_us.load(Relaxed);
        let last = self.last_message_us.load(Relaxed);
        let messages = self.messages.load(Relaxed);
        let span = last.saturating_sub(first) as f64 / 1e6;
        let connections = self.connections.load(Relaxed);
        let transactions = self.transactions.load(Relaxed);
        let per_conn = self.per_conn.lock().map(|h| PerConnection {
            closed: h.len(),
            mean: if connections == 0 {
                0.0
            } else {
                (transactions as f64 / connections as f64 * 100.0).round() / 100.0
            },
            p50: if h.is_empty() {
                0
            } else {
                h.value_at_quantile(0.5)
            },
            max: h.max(),
        });
        let mut replies = ReplyCounts::default();
        for (code, n) in self.replies.iter().enumerate() {
            let n = n.load(Relaxed);
            if n > 0
                && let Ok(c) = u16::try_from(code)
            {
                replies.add_n(c, n);
            }
        }
        SinkSummary {
            tool: "corepost-sink",
            elapsed_s: self.started.elapsed().as_secs_f64(),
            started_unix_us: self.started_unix_us,
            connections,
            connections_active: self.active.load(Relaxed),
            transactions,
            messages,
            messages_rejected: self.messages_rejected.load(Relaxed),
            recipients: self.recipients.load(Relaxed),
            recipients_rejected: self.recipients_rejected.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            first_message_unix_us: first,
            last_message_unix_us: last,
            msgs_per_sec: if messages > 1 && span > 0.0 {
                ((messages - 1) as f64 / span * 10.0).round() / 10.0
            } else {
                0.0
            },
            transactions_per_connection: per_conn.unwrap_or(PerConnection {
                closed: 0,
                mean: 0.0,
                p50: 0,
                max: 0,
            }),
            injected: faults.clone(),
            protocol_errors: self.protocol_errors.load(Relaxed),
            replies: replies.to_map(),
            e2e_latency_us: self
                .e2e
                .lock()
                .map(|h| Latency::of(&h))
                .unwrap_or_else(|_| Latency::of(&stats::histogram())),
        }
    }
}

/// Counters of injected failures.
#[derive(Default)]
pub struct InjectedCounters {
    rcpt_tempfail: AtomicU64,
    rcpt_permfail: AtomicU64,
    rcpt_scripted: AtomicU64,
    data_tempfail: AtomicU64,
    data_permfail: AtomicU64,
}

impl InjectedCounters {
    fn snapshot(&self, s: &SinkStats) -> BTreeMap<&'static str, u64> {
        BTreeMap::from([
            ("greeting_421", s.greeting_421.load(Relaxed)),
            ("rcpt_tempfail", self.rcpt_tempfail.load(Relaxed)),
            ("rcpt_permfail", self.rcpt_permfail.load(Relaxed)),
            ("rcpt_scripted", self.rcpt_scripted.load(Relaxed)),
            ("data_tempfail", self.data_tempfail.load(Relaxed)),
            ("data_permfail", self.data_permfail.load(Relaxed)),
            ("disconnects", s.disconnects.load(Relaxed)),
        ])
    }
}

/// A running sink: configuration, TLS, counters.
pub struct Sink {
    cfg: SinkConfig,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// The counters.
    pub stats: SinkStats,
    injected: InjectedCounters,
    sessions: Option<Semaphore>,
    seeds: AtomicU64,
    dumped: AtomicU64,
}

impl Sink {
    /// Prepares a sink; `tls` enables STARTTLS.
    pub fn new(cfg: SinkConfig, tls: Option<Arc<rustls::ServerConfig>>) -> Arc<Self> {
        let seed = if cfg.seed == 0 {
            fastrand::u64(..)
        } else {
            cfg.seed
        };
        Arc::new(Self {
            sessions: cfg.max_sessions.map(Semaphore::new),
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            cfg,
            stats: SinkStats::default(),
            injected: InjectedCounters::default(),
            seeds: AtomicU64::new(seed),
            dumped: AtomicU64::new(0),
        })
    }

    /// A JSON-ready snapshot of the counters.
    pub fn summary(&self) -> SinkSummary {
        self.stats.summary(&self.injected.snapshot(&self.stats))
    }

    /// Accepts connections from `listener` forever (run one per worker thread).
    pub async fn serve(self: Arc<Self>, listener: tokio::net::TcpListener) {
        loop {
            let permit = match &self.sessions {
                Some(sem) => match sem.acquire().await {
                    Ok(p) => {
                        p.forget();
                        true
                    }
                    Err(_) => return,
                },
                None => false,
            };
            let (sock, peer) = match listener.accept().await {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly rather than spin.
                    eprintln!("corepost-sink: accept: {e}");
                    if permit && let Some(sem) = &self.sessions {
                        sem.add_permits(1);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = sock.set_nodelay(true);
            let sink = self.clone();
            tokio::spawn(async move {
                sink.stats.connections.fetch_add(1, Relaxed);
                sink.stats.active.fetch_add(1, Relaxed);
                let seed = sink.seeds.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
                let mut session = Session::new(&sink, peer, seed);
                session.run(Conn::Plain(sock)).await;
                if permit && let Some(sem) = &sink.sessions {
                    sem.add_permits(1);
                }
            });
        }
    }
}

/// Where a transaction is to be cut off, if at all.
#[derive(Debug, Clone, Copy, PartialEq)]
enum CutAt {
    Never,
    Mail,
    Rcpt,
    Content,
}

/// How the connection continues after a reply.
enum Next {
    Continue,
    Close,
    StartTls,
}

const RCPT_TEMP_TEXTS: &[(u16, &str, &str)] = &[
    (
        450,
        "4.2.1",
        "The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered. Please resend your message at a later time.",
    ),
    (451, "4.7.1", "Greylisted, please try again in 300 seconds"),
    (
        452,
        "4.2.2",
        "The recipient's mailbox is full and can't accept messages now. Please try resending later.",
    ),
    (
        421,
        "4.7.0",
        "Try again later, closing connection. (throttled)",
    ),
];
const RCPT_PERM_TEXTS: &[(u16, &str, &str)] = &[
    (
        550,
        "5.1.1",
        "The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos.",
    ),
    (550, "5.7.1", "Recipient address rejected: Access denied"),
    (
        554,
        "5.7.1",
        "Recipient address rejected: user unknown in relay recipient table",
    ),
];
const DATA_TEMP_TEXTS: &[(u16, &str, &str)] = &[
    (
        451,
        "4.3.0",
        "Temporary server error. Please try again later.",
    ),
    (452, "4.3.1", "Insufficient system storage"),
];
const DATA_PERM_TEXTS: &[(u16, &str, &str)] = &[
    (554, "5.7.1", "Message rejected because it looks like spam."),
    (
        550,
        "5.7.26",
        "This message does not pass authentication checks (SPF and DKIM both do not pass).",
    ),
];

/// One SMTP session.
struct Session<'a> {
    sink: &'a Sink,
    peer: SocketAddr,
    rng: fastrand::Rng,
    transactions: u64,
    errors: u32,
    // Transaction state.
    mail: Option<Vec<u8>>,
    rcpts: Vec<Vec<u8>>,
    cut: CutAt,
    bdat_failed: bool,
    bdat_body: Vec<u8>,
    bdat_len: u64,
    bdat_head: Vec<u8>,
    helo: bool,
}

/// How much of the message start is kept to look for the stamp header.
const HEAD_KEEP: usize = 8192;

impl<'a> Session<'a> {
    fn new(sink: &'a Sink, peer: SocketAddr, seed: u64) -> Self {
        Self {
            sink,
            peer,
            rng: fastrand::Rng::with_seed(seed),
            transactions: 0,
            errors: 0,
            mail: None,
            rcpts: Vec::new(),
            cut: CutAt::Never,
            bdat_failed: false,
            bdat_body: Vec::new(),
            bdat_len: 0,
            bdat_head: Vec::new(),
            helo: false,
        }
    }

    fn cfg(&self) -> &SinkConfig {
        &self.sink.cfg
    }

    fn reset(&mut self) {
        self.mail = None;
        self.rcpts.clear();
        self.cut = CutAt::Never;
        self.bdat_failed = false;
        self.bdat_body.clear();
        self.bdat_len = 0;
        self.bdat_head.clear();
    }

    /// Queues a reply; `enh` is the enhanced status code, left out under `-E`.
    fn reply<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        s: &mut SmtpStream<S>,
        code: u16,
        enh: &str,
        text: &str,
    ) {
        if let Some(c) = self.sink.stats.replies.get(usize::from(code)) {
            c.fetch_add(1, Relaxed);
        }
        let w = s.wbuf();
        let _ = if self.cfg().enhanced && !enh.is_empty() {
            write!(w, "{code} {enh} {text}\r\n")
        } else {
            write!(w, "{code} {text}\r\n")
        };
    }

    /// Runs the session, then does the connection's accounting while the connection is still
    /// open, so a peer that sees the connection close also sees the counters updated.
    async fn run(&mut self, conn: Conn) {
        let mut slot = Some(SmtpStream::new(conn, self.cfg().timeout));
        let result = self.run_on(&mut slot).await;
        let stats = &self.sink.stats;
        if result.is_err() {
            stats.protocol_errors.fetch_add(1, Relaxed);
        }
        if let Ok(mut h) = stats.per_conn.lock() {
            h.saturating_record(self.transactions);
        }
        stats.active.fetch_sub(1, Relaxed);
        drop(slot);
    }

    async fn run_on(&mut self, slot: &mut Option<SmtpStream<Conn>>) -> io::Result<()> {
        let timeout = self.cfg().timeout;
        let gone = || io::Error::other("connection gone");
        let s = slot.as_mut().ok_or_else(gone)?;
        if !self.cfg().faults.delays.greeting.is_zero() {
            tokio::time::sleep(self.cfg().faults.delays.greeting).await;
        }
        if self.rng.f64() < self.cfg().faults.greeting_421 {
            self.sink.stats.greeting_421.fetch_add(1, Relaxed);
            let text = format!(
                "{} Service not available, too many concurrent connections - try again later",
                self.cfg().hostname
            );
            self.reply(s, 421, "4.7.0", &text);
            s.flush().await?;
            return Ok(());
        }
        let greeting = format!("{} ESMTP corepost-sink", self.cfg().hostname);
        self.reply(s, 220, "", &greeting);
        s.flush().await?;
        loop {
            let s = slot.as_mut().ok_or_else(gone)?;
            match self.serve_until_tls(s).await? {
                Next::Close => {
                    s.flush().await?;
                    return Ok(());
                }
                Next::Continue => {}
                Next::StartTls => {
                    s.flush().await?;
                    let old = slot.take().ok_or_else(gone)?;
                    let (Conn::Plain(tcp), Some(acceptor)) =
                        (old.into_inner(), self.sink.tls.clone())
                    else {
                        return Err(io::Error::other("STARTTLS on a TLS connection"));
                    };
                    let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
                        .await
                        .map_err(|_| {
                            io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                        })??;
                    *slot = Some(SmtpStream::new(Conn::ServerTls(Box::new(tls)), timeout));
                    self.reset();
                    self.helo = false;
                }
            }
        }
    }

    /// Serves commands until the session ends or switches to TLS.
    async fn serve_until_tls(&mut self, s: &mut SmtpStream<Conn>) -> io::Result<Next> {
        loop {
            if !s.has_buffered_input() {
                s.flush().await?;
            }
            let line = match s.read_line().await {
                Ok(Some(l)) => l.to_vec(),
                Ok(None) => return Ok(Next::Close),
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    self.reply(s, 500, "5.5.0", "Error: line too long");
                    s.flush().await?;
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            match self.command(s, &line).await? {
                Next::Continue => {}
                other => return Ok(other),
            }
            if self.errors >= 20 {
                self.reply(s, 421, "4.7.0", "Error: too many errors");
                return Ok(Next::Close);
            }
        }
    }

    async fn command(&mut self, s: &mut SmtpStream<Conn>, line: &[u8]) -> io::Result<Next> {
        let cmd = match smtp::parse_command(line) {
            Ok(c) => c,
            Err(e) => {
                self.errors += 1;
                self.reply(s, 501, "5.5.4", &format!("Syntax error: {e}"));
                return Ok(Next::Continue);
            }
        };
        let delays = &self.sink.cfg.faults.delays;
        match cmd {
            Command::Ehlo(_) if !self.cfg().ehlo => {
                self.errors += 1;
                self.reply(s, 502, "5.5.2", "Error: command not recognized");
            }
            Command::Ehlo(_) => {
                sleep(delays.helo).await;
                self.reset();
                self.helo = true;
                let cfg = self.cfg();
                let mut lines = vec![cfg.hostname.clone()];
                if cfg.pipelining {
                    lines.push("PIPELINING".into());
                }
                lines.push(format!("SIZE {}", cfg.max_size));
                if cfg.eightbitmime {
                    lines.push("8BITMIME".into());
                }
                if cfg.enhanced {
                    lines.push("ENHANCEDSTATUSCODES".into());
                }
                if cfg.chunking {
                    lines.push("CHUNKING".into());
                }
                if self.sink.tls.is_some() && !s.get_ref().is_tls() {
                    lines.push("STARTTLS".into());
                }
                if cfg.auth {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                lines.push("DSN".into());
                if let Some(c) = self.sink.stats.replies.get(250) {
                    c.fetch_add(1, Relaxed);
                }
                let n = lines.len();
                for (i, l) in lines.iter().enumerate() {
                    let _ = write!(s.wbuf(), "250{}{l}\r\n", if i + 1 == n { ' ' } else { '-' });
                }
            }
            Command::Helo(_) => {
                sleep(delays.helo).await;
                self.reset();
                self.helo = true;
                let host = self.cfg().hostname.clone();
                self.reply(s, 250, "", &host);
            }
            Command::Mail { path, .. } => {
                sleep(delays.mail).await;
                if self.mail.is_some() {
                    self.errors += 1;
                    self.reply(s, 503, "5.5.1", "Error: nested MAIL command");
                    return Ok(Next::Continue);
                }
                self.reset();
                self.mail = Some(path.to_vec());
                self.cut = if self.rng.f64() < self.cfg().faults.disconnect {
                    [CutAt::Mail, CutAt::Rcpt, CutAt::Content][self.rng.usize(0..3)]
                } else {
                    CutAt::Never
                };
                if self.cut == CutAt::Mail {
                    return Ok(self.disconnect());
                }
                self.reply(s, 250, "2.1.0", "Ok");
            }
            Command::Rcpt { path, .. } => {
                sleep(delays.rcpt).await;
                if self.mail.is_none() {
                    self.errors += 1;
                    self.reply(s, 503, "5.5.1", "Error: need MAIL command");
                    return Ok(Next::Continue);
                }
                if self.cut == CutAt::Rcpt {
                    return Ok(self.disconnect());
                }
                if self.rcpts.len() >= 1000 {
                    self.reply(s, 452, "4.5.3", "Error: too many recipients");
                    return Ok(Next::Continue);
                }
                let (local, domain) = smtp::split_address(path);
                let rates = self.sink.cfg.faults.rates_for(domain);
                let accepted = self.sink.stats.messages.load(Relaxed);
                let scripted = self
                    .sink
                    .cfg
                    .faults
                    .rcpt_replies
                    .iter()
                    .find(|r| r.applies(local, accepted));
                if let Some(r) = scripted {
                    self.sink.injected.rcpt_scripted.fetch_add(1, Relaxed);
                    self.sink.stats.recipients_rejected.fetch_add(1, Relaxed);
                    self.reply(s, r.code, &r.enhanced, &r.text);
                    return Ok(if r.code == 421 {
                        Next::Close
                    } else {
                        Next::Continue
                    });
                }
                let local = strip_sequence(local);
                let x = self.rng.f64();
                let texts = if local.eq_ignore_ascii_case(b"tempfail") || x < rates.rcpt_tempfail {
                    self.sink.injected.rcpt_tempfail.fetch_add(1, Relaxed);
                    Some(RCPT_TEMP_TEXTS)
                } else if local.eq_ignore_ascii_case(b"permfail")
                    || x < rates.rcpt_tempfail + rates.rcpt_permfail
                {
                    self.sink.injected.rcpt_permfail.fetch_add(1, Relaxed);
                    Some(RCPT_PERM_TEXTS)
                } else {
                    None
                };
                match texts {
                    Some(texts) => {
                        self.sink.stats.recipients_rejected.fetch_add(1, Relaxed);
                        let (code, enh, text) = texts[self.rng.usize(0..texts.len())];
                        // A 421 here would close the session; RCPT-level throttling uses 4xx without closing.
                        let code = if code == 421 { 450 } else { code };
                        self.reply(s, code, enh, text);
                    }
                    None => {
                        self.rcpts.push(path.to_vec());
                        self.reply(s, 250, "2.1.5", "Ok");
                    }
                }
            }
            Command::Data => {
                if self.mail.is_none() {
                    self.errors += 1;
                    self.reply(s, 503, "5.5.1", "Error: need MAIL command");
                    return Ok(Next::Continue);
                }
                if self.rcpts.is_empty() {
                    self.reply(s, 554, "5.5.1", "Error: no valid recipients");
                    return Ok(Next::Continue);
                }
                if self.bdat_len > 0 || self.bdat_failed {
                    self.errors += 1;
                    self.reply(s, 503, "5.5.1", "Error: DATA after BDAT");
                    return Ok(Next::Continue);
                }
                sleep(delays.data).await;
                self.reply(s, 354, "", "End data with <CR><LF>.<CR><LF>");
                s.flush().await?;
                let max = self.cfg().max_size;
                let mut rx = DataReceiver::default();
                let mut len = 0u64;
                let mut head = Vec::new();
                let mut body = Vec::new();
                let dump = self.cfg().dump_dir.is_some();
                loop {
                    let piece = s.read_data_piece().await?;
                    let Some(content) = rx.feed(piece) else { break };
                    len += content.len() as u64;
                    if head.len() < HEAD_KEEP {
                        head.extend_from_slice(
                            &content[..content.len().min(HEAD_KEEP - head.len())],
                        );
                    }
                    if dump && len <= max {
                        body.extend_from_slice(content);
                    }
                }
                return Ok(self.end_of_message(s, len, &head, &body).await);
            }
            Command::Bdat { size, last } => {
                let ok = self.mail.is_some() && !self.rcpts.is_empty() && !self.bdat_failed;
                let dump = self.cfg().dump_dir.is_some();
                let mut left = size;
                while left > 0 {
                    let chunk = s
                        .read_raw(usize::try_from(left.min(1 << 20)).unwrap_or(1 << 20))
                        .await?;
                    left -= chunk.len() as u64;
                    if ok {
                        if self.bdat_head.len() < HEAD_KEEP {
                            let n = chunk.len().min(HEAD_KEEP - self.bdat_head.len());
                            self.bdat_head.extend_from_slice(&chunk[..n]);
                        }
                        if dump && self.bdat_len + (chunk.len() as u64) <= self.cfg().max_size {
                            self.bdat_body.extend_from_slice(chunk);
                        }
                    }
                }
                if !ok {
                    self.errors += 1;
                    self.bdat_failed = self.mail.is_some();
                    if self.mail.is_none() {
                        self.reply(s, 503, "5.5.1", "Error: need MAIL command");
                    } else if self.rcpts.is_empty() {
                        self.reply(s, 554, "5.5.1", "Error: no valid recipients");
                    } else {
                        self.reply(s, 503, "5.5.1", "Error: earlier BDAT failed");
                    }
                    if last {
                        self.reset();
                    }
                    return Ok(Next::Continue);
                }
                self.bdat_len += size;
                if last {
                    let head = std::mem::take(&mut self.bdat_head);
                    let body = std::mem::take(&mut self.bdat_body);
                    let len = self.bdat_len;
                    return Ok(self.end_of_message(s, len, &head, &body).await);
                }
                let text = format!("Ok: {size} octets received");
                self.reply(s, 250, "2.0.0", &text);
            }
            Command::Rset => {
                self.reset();
                self.reply(s, 250, "2.0.0", "Ok");
            }
            Command::Noop => self.reply(s, 250, "2.0.0", "Ok"),
            Command::Quit => {
                self.reply(s, 221, "2.0.0", "Bye");
                return Ok(Next::Close);
            }
            Command::StartTls => {
                if self.sink.tls.is_none() || s.get_ref().is_tls() {
                    self.errors += 1;
                    self.reply(s, 502, "5.5.1", "Error: command not implemented");
                } else if s.has_buffered_input() {
                    // RFC 3207 section 4.2: nothing pipelined after STARTTLS may be used.
                    self.reply(s, 554, "5.5.1", "Error: pipelined commands after STARTTLS");
                    return Ok(Next::Close);
                } else {
                    self.reply(s, 220, "2.0.0", "Ready to start TLS");
                    return Ok(Next::StartTls);
                }
            }
            Command::Auth { mechanism, initial } => {
                if !self.cfg().auth {
                    self.errors += 1;
                    self.reply(s, 502, "5.5.1", "Error: authentication not enabled");
                } else if mechanism.eq_ignore_ascii_case(b"PLAIN") {
                    if initial.is_none() {
                        s.queue(b"334 \r\n");
                        s.flush().await?;
                        s.expect_line().await?;
                    }
                    self.reply(s, 235, "2.7.0", "Authentication successful");
                } else if mechanism.eq_ignore_ascii_case(b"LOGIN") {
                    if initial.is_none() {
                        s.queue(b"334 VXNlcm5hbWU6\r\n");
                        s.flush().await?;
                        s.expect_line().await?;
                    }
                    s.queue(b"334 UGFzc3dvcmQ6\r\n");
                    s.flush().await?;
                    s.expect_line().await?;
                    self.reply(s, 235, "2.7.0", "Authentication successful");
                } else {
                    self.errors += 1;
                    self.reply(s, 504, "5.5.4", "Unrecognized authentication type");
                }
            }
            Command::Vrfy => self.reply(s, 252, "2.0.0", "Cannot VRFY user"),
            Command::Help => self.reply(s, 214, "2.0.0", "See RFC 5321"),
            Command::Unknown => {
                self.errors += 1;
                self.reply(s, 502, "5.5.2", "Error: command not recognized");
            }
        }
        Ok(Next::Continue)
    }

    fn disconnect(&mut self) -> Next {
        self.sink.stats.disconnects.fetch_add(1, Relaxed);
        Next::Close
    }

    /// The message is complete: count it, apply end-of-data faults, reply.
    async fn end_of_message(
        &mut self,
        s: &mut SmtpStream<Conn>,
        len: u64,
        head: &[u8],
        body: &[u8],
    ) -> Next {
        self.transactions += 1;
        let stats = &self.sink.stats;
        stats.transactions.fetch_add(1, Relaxed);
        sleep(self.cfg().faults.delays.eod).await;
        if self.cut == CutAt::Content {
            self.reset();
            return self.disconnect();
        }
        if len > self.cfg().max_size {
            stats.messages_rejected.fetch_add(1, Relaxed);
            self.reply(s, 552, "5.3.4", "Error: message file too big");
            self.reset();
            return Next::Continue;
        }
        // Per-domain end-of-data rates follow the first recipient's domain.
        let domain = self
            .rcpts
            .first()
            .map_or(&b""[..], |r| smtp::split_address(r).1);
        let rates = self.sink.cfg.faults.rates_for(domain);
        let x = self.rng.f64();
        let texts = if x < rates.data_tempfail {
            self.sink.injected.data_tempfail.fetch_add(1, Relaxed);
            Some(DATA_TEMP_TEXTS)
        } else if x < rates.data_tempfail + rates.data_permfail {
            self.sink.injected.data_permfail.fetch_add(1, Relaxed);
            Some(DATA_PERM_TEXTS)
        } else {
            None
        };
        if let Some(texts) = texts {
            stats.messages_rejected.fetch_add(1, Relaxed);
            let (code, enh, text) = texts[self.rng.usize(0..texts.len())];
            self.reply(s, code, enh, text);
            self.reset();
            return Next::Continue;
        }
        let now = stats::unix_micros();
        if let Some(stamp) = find_stamp(head)
            && let Ok(mut h) = stats.e2e.lock()
        {
            h.saturating_record(now.saturating_sub(stamp).max(1));
        }
        let _ = stats
            .first_message_us
            .compare_exchange(0, now, Relaxed, Relaxed);
        stats.last_message_us.fetch_max(now, Relaxed);
        stats.bytes.fetch_add(len, Relaxed);
        stats.recipients.fetch_add(self.rcpts.len() as u64, Relaxed);
        let n = stats.messages.fetch_add(1, Relaxed) + 1;
        if let Some(dir) = &self.sink.cfg.dump_dir {
            self.dump(dir, body);
        }
        let id = format!("Ok: queued as S{n:X}");
        self.reply(s, 250, "2.0.0", &id);
        self.reset();
        if self.cfg().quit_after.is_some_and(|q| n >= q) {
            // Let the reply out before the process stops.
            let _ = s.flush().await;
            stats.done.notify_one();
        }
        Next::Continue
    }

    /// Writes the transaction as one file: envelope lines, then the message.
    fn dump(&self, dir: &std::path::Path, body: &[u8]) {
        let n = self.sink.dumped.fetch_add(1, Relaxed);
        let mut out = Vec::with_capacity(body.len() + 256);
        let _ = write!(out, "X-Client-Addr: {}\r\nX-Mail-From: <", self.peer.ip());
        out.extend_from_slice(self.mail.as_deref().unwrap_or(b""));
        out.extend_from_slice(b">\r\n");
        for r in &self.rcpts {
            out.extend_from_slice(b"X-Rcpt-To: <");
            out.extend_from_slice(r);
            out.extend_from_slice(b">\r\n");
        }
        out.extend_from_slice(body);
        let path = dir.join(format!("{}-{n:06}.eml", self.sink.stats.started_unix_us));
        if let Err(e) = std::fs::write(&path, out) {
            eprintln!("corepost-sink: {}: {e}", path.display());
        }
    }
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// The local part without a leading sequence number (`12tempfail`, `3.permfail` as made by the
/// source's `-N` and `-r`).
fn strip_sequence(local: &[u8]) -> &[u8] {
    let i = local
        .iter()
        .position(|b| !b.is_ascii_digit() && *b != b'.')
        .unwrap_or(local.len());
    &local[i..]
}

/// Finds the stamp header in the header block of a message and returns its value.
pub fn find_stamp(head: &[u8]) -> Option<u64> {
    let name = STAMP_HEADER.as_bytes();
    for line in head.split(|&b| b == b'\n') {
        let line = smtp::trim_eol(line);
        if line.is_empty() {
            return None;
        }
        if line.len() > name.len() + 1
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()] == b':'
        {
            let v = std::str::from_utf8(&line[name.len() + 1..]).ok()?;
            return v.trim().parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripted_replies_parse() {
        let r =
            ScriptedReply::parse("prefix=Throttle,after=10:421 4.7.28 rate limited now").unwrap();
        assert_eq!(r.prefix.as_deref(), Some("throttle"));
        assert_eq!((r.after, r.code, r.enhanced.as_str()), (10, 421, "4.7.28"));
        assert_eq!(r.text, "rate limited now");
        assert!(r.applies(b"THROTTLE-1", 10) && !r.applies(b"throttle", 9) && !r.applies(b"x", 10));
        let r = ScriptedReply::parse("after=0:550 blocked").unwrap();
        assert_eq!(
            (r.prefix, r.enhanced.as_str(), r.text.as_str()),
            (None, "", "blocked")
        );
        for bad in ["450 x", "prefix=a:250 ok", "after=x:450 x", "speed=1:450 x"] {
            assert!(ScriptedReply::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn fault_specs() {
        let (d, r) =
            Faults::parse_domain_rule("Yahoo.test:tempfail=0.2,permfail=5%,data-tempfail=0.1")
                .unwrap();
        assert_eq!(d, "yahoo.test");
        assert_eq!(
            r,
            FaultRates {
                rcpt_tempfail: 0.2,
                rcpt_permfail: 0.05,
                data_tempfail: 0.1,
                data_permfail: 0.0
            }
        );
        assert!(Faults::parse_domain_rule("x:tempfail=2").is_err());
        assert!(Faults::parse_domain_rule("x:bogus=0.1").is_err());
        assert!(Faults::parse_domain_rule("x").is_err());
        let mut f = Faults::default();
        f.parse_delay("rcpt=15ms").unwrap();
        f.parse_delay("eod=1.5s").unwrap();
        assert_eq!(f.delays.rcpt, Duration::from_millis(15));
        assert_eq!(f.delays.eod, Duration::from_millis(1500));
        assert!(f.parse_delay("bogus=1s").is_err());
        assert!(f.parse_delay("rcpt=1y").is_err());
        f.domains.push((
            "gmail.test".into(),
            FaultRates {
                rcpt_tempfail: 1.0,
                ..Default::default()
            },
        ));
        assert_eq!(f.rates_for(b"GMAIL.test").rcpt_tempfail, 1.0);
        assert_eq!(f.rates_for(b"other.test").rcpt_tempfail, 0.0);
    }

    #[test]
    fn stamps_and_sequences() {
        assert_eq!(
            find_stamp(b"Subject: x\r\nX-Corepost-Injected: 42\r\n\r\nbody"),
            Some(42)
        );
        assert_eq!(
            find_stamp(b"Subject: x\r\n\r\nX-Corepost-Injected: 42\r\n"),
            None
        );
        assert_eq!(find_stamp(b"x-corepost-injected:7\n\n"), Some(7));
        assert_eq!(find_stamp(b"X-Corepost-Injected: nope\r\n"), None);
        assert_eq!(strip_sequence(b"12tempfail"), b"tempfail");
        assert_eq!(strip_sequence(b"3.permfail"), b"permfail");
        assert_eq!(strip_sequence(b"123"), b"");
    }
}
