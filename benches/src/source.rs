//! The load generator, `corepost-source`: opens `sessions` concurrent SMTP sessions to one
//! server and sends generated messages, like Postfix's `smtp-source`, adding PIPELINING, BDAT,
//! STARTTLS and AUTH, an open-loop rate cap, a duration mode and weighted size and domain mixes.
//!
//! Work is handed out as tickets (one per message) from one atomic counter, so the message count
//! is exact however many sessions and threads run. Under a rate cap ticket `n` is due at
//! `start + n / rate`, and the transaction latency is measured from that due time, so a server
//! that falls behind shows up as latency instead of silently lowering the offered load
//! (no coordinated omission). Each session keeps its own histograms and counters; they are
//! merged at the end, so the hot path shares nothing but the ticket counter and two progress
//! counters.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::conn::{Conn, SmtpStream};
use crate::message::{self, DomainChoice, MessageMeta, PickedDomain, Template, Weighted};
use crate::stats::{self, Latency, ReplyCounts};

/// The load generator's settings.
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Server address (an IP literal and port; no name resolution).
    pub target: SocketAddr,
    /// Messages to send (`-m`); `None` with a duration means "until the time is up".
    pub messages: Option<u64>,
    /// Stop starting messages after this long.
    pub duration: Option<Duration>,
    /// Concurrent sessions (`-s`).
    pub sessions: usize,
    /// Send all messages of a session over one connection (`-d`).
    pub reuse: bool,
    /// HELO/EHLO name (`-M`).
    pub helo_name: String,
    /// Use HELO instead of EHLO (`-o`).
    pub helo_only: bool,
    /// Envelope sender (`-f`).
    pub sender: String,
    /// Recipient (`-t`); its domain is replaced by the domain mix when one is given.
    pub recipient: String,
    /// Recipients per message (`-r`).
    pub rcpts_per_msg: usize,
    /// Prefix recipients with a unique sequence number (`-N`).
    pub unique_rcpts: bool,
    /// Subject prefix (`-S`).
    pub subject: String,
    /// Body sizes and their weights.
    pub sizes: Weighted<usize>,
    /// Recipient domains and their weights.
    pub domains: Option<Weighted<DomainChoice>>,
    /// Pipeline MAIL, RCPT and DATA/BDAT (RFC 2920).
    pub pipelining: bool,
    /// Send the message with BDAT (RFC 3030) instead of DATA.
    pub bdat: bool,
    /// Upgrade with STARTTLS.
    pub starttls: bool,
    /// AUTH PLAIN with this user and password.
    pub auth: Option<(String, String)>,
    /// Open-loop rate cap in messages per second.
    pub rate: Option<f64>,
    /// Timeout for each read, write and connect.
    pub timeout: Duration,
    /// Worker threads, each with its own single-threaded runtime.
    pub threads: usize,
    /// Stamp each message with the injection time for the sink's end-to-end latency.
    pub stamp: bool,
    /// RNG seed (0: random).
    pub seed: u64,
}

/// Latencies of the phases of a transaction, µs.
#[derive(Debug, Clone, Serialize)]
pub struct Latencies {
    /// TCP connect.
    pub connect: Latency,
    /// From connected to the greeting.
    pub first_reply: Latency,
    /// From the last byte of the message written to the end-of-data reply.
    pub end_of_data: Latency,
    /// From MAIL FROM (under a rate cap: from the message's due time) to the end-of-data reply.
    pub transaction: Latency,
}

/// Which protocol features were used.
#[derive(Debug, Clone, Serialize)]
pub struct Features {
    /// PIPELINING.
    pub pipelining: bool,
    /// BDAT.
    pub bdat: bool,
    /// STARTTLS.
    pub starttls: bool,
    /// AUTH.
    pub auth: bool,
    /// Connection reuse (`-d`).
    pub reuse: bool,
}

/// The final report (printed, or one JSON object with `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct SourceReport {
    /// Always `corepost-source`.
    pub tool: &'static str,
    /// Server address.
    pub target: String,
    /// Start, µs since the Unix epoch.
    pub started_unix_us: u64,
    /// Seconds from start to the last session's end.
    pub elapsed_s: f64,
    /// Sessions.
    pub sessions: usize,
    /// Threads.
    pub threads: usize,
    /// Rate cap, if any.
    pub rate_cap: Option<f64>,
    /// Features used.
    pub features: Features,
    /// Messages accepted (2xx at end of data).
    pub messages: u64,
    /// Messages attempted.
    pub attempted: u64,
    /// Messages refused with a 4xx reply.
    pub rejected_temp: u64,
    /// Messages refused with a 5xx reply.
    pub rejected_perm: u64,
    /// Messages lost to I/O errors, timeouts or protocol errors.
    pub errors: u64,
    /// Recipients accepted.
    pub recipients_accepted: u64,
    /// Recipients refused.
    pub recipients_rejected: u64,
    /// Message bytes in accepted messages (unstuffed).
    pub bytes: u64,
    /// Connections opened.
    pub connections: u64,
    /// Accepted messages per second.
    pub msgs_per_sec: f64,
    /// Latencies, µs.
    pub latency_us: Latencies,
    /// Every reply received, by code.
    pub replies: std::collections::BTreeMap<String, u64>,
    /// The first few distinct errors.
    pub error_samples: Vec<String>,
}

impl SourceReport {
    /// The human-readable report.
    pub fn text(&self) -> String {
        let mut s = format!(
            "corepost-source: {} messages to {} in {:.3}s: {:.1} msg/s ({} attempted, {} tempfail, {} permfail, {} errors; {} connections)\n",
            self.messages,
            self.target,
            self.elapsed_s,
            self.msgs_per_sec,
            self.attempted,
            self.rejected_temp,
            self.rejected_perm,
            self.errors,
            self.connections
        );
        for (name, l) in [
            ("connect", &self.latency_us.connect),
            ("first reply", &self.latency_us.first_reply),
            ("end of data", &self.latency_us.end_of_data),
            ("transaction", &self.latency_us.transaction),
        ] {
            s.push_str(&l.line(name));
            s.push('\n');
        }
        let replies: Vec<String> = self
            .replies
            .iter()
            .map(|(c, n)| format!("{c}:{n}"))
            .collect();
        s.push_str(&format!("replies      {}\n", replies.join(" ")));
        for e in &self.error_samples {
            s.push_str(&format!("error        {e}\n"));
        }
        s
    }
}

/// Live counters for the progress display.
#[derive(Default)]
pub struct Progress {
    /// Messages accepted so far.
    pub accepted: AtomicU64,
    /// Messages refused or lost so far.
    pub failed: AtomicU64,
}

struct Shared {
    cfg: SourceConfig,
    templates: Vec<Template>,
    template_pick: Weighted<usize>,
    tickets: AtomicU64,
    start: Instant,
    deadline: Option<Instant>,
    tls: Option<tokio_rustls::TlsConnector>,
    progress: Arc<Progress>,
    local: String,
    domain: String,
}

impl Shared {
    fn next_ticket(&self) -> Option<u64> {
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        let t = self.tickets.fetch_add(1, Relaxed);
        match self.cfg.messages {
            Some(m) if t >= m => None,
            _ => Some(t),
        }
    }
}

struct SessionStats {
    connect: Histogram<u64>,
    first_reply: Histogram<u64>,
    eod: Histogram<u64>,
    txn: Histogram<u64>,
    replies: ReplyCounts,
    accepted: u64,
    rejected_temp: u64,
    rejected_perm: u64,
    errors: u64,
    rcpts_ok: u64,
    rcpts_rejected: u64,
    bytes: u64,
    connections: u64,
    error_samples: Vec<String>,
}

impl SessionStats {
    fn new() -> Self {
        Self {
            connect: stats::histogram(),
            first_reply: stats::histogram(),
            eod: stats::histogram(),
            txn: stats::histogram(),
            replies: ReplyCounts::default(),
            accepted: 0,
            rejected_temp: 0,
            rejected_perm: 0,
            errors: 0,
            rcpts_ok: 0,
            rcpts_rejected: 0,
            bytes: 0,
            connections: 0,
            error_samples: Vec::new(),
        }
    }

    fn merge(&mut self, o: &SessionStats) {
        for (a, b) in [
            (&mut self.connect, &o.connect),
            (&mut self.first_reply, &o.first_reply),
            (&mut self.eod, &o.eod),
            (&mut self.txn, &o.txn),
        ] {
            let _ = a.add(b);
        }
        self.replies.merge(&o.replies);
        self.accepted += o.accepted;
        self.rejected_temp += o.rejected_temp;
        self.rejected_perm += o.rejected_perm;
        self.errors += o.errors;
        self.rcpts_ok += o.rcpts_ok;
        self.rcpts_rejected += o.rcpts_rejected;
        self.bytes += o.bytes;
        self.connections += o.connections;
        for e in &o.error_samples {
            self.note_error(e.clone());
        }
    }

    fn note_error(&mut self, e: String) {
        if self.error_samples.len() < 5 && !self.error_samples.contains(&e) {
            self.error_samples.push(e);
        }
    }

    async fn reply(&mut self, s: &mut SmtpStream<Conn>) -> io::Result<u16> {
        let code = s.read_reply(|_| {}).await?;
        self.replies.add(code);
        Ok(code)
    }
}

/// What the server offered in its EHLO reply.
#[derive(Debug, Default, Clone, Copy)]
struct Caps {
    pipelining: bool,
    chunking: bool,
    starttls: bool,
    auth_plain: bool,
}

/// A failure that ends a connection.
#[derive(Debug)]
enum Fail {
    Io(io::Error),
    /// The server refused (greeting, HELO, STARTTLS, AUTH) with this code.
    Refused(u16, &'static str),
    /// The server lacks a feature that was asked for.
    Missing(&'static str),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Self {
        Fail::Io(e)
    }
}

impl std::fmt::Display for Fail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fail::Io(e) => write!(f, "{e}"),
            Fail::Refused(code, what) => write!(f, "{what} refused with {code}"),
            Fail::Missing(what) => write!(f, "server does not offer {what}"),
        }
    }
}

/// How one message went.
enum Outcome {
    Accepted,
    /// Refused with this code; `close` when the server closed (421) or the session cannot go on.
    Refused {
        code: u16,
        close: bool,
    },
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(T[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

async fn ehlo(sh: &Shared, st: &mut SessionStats, s: &mut SmtpStream<Conn>) -> Result<Caps, Fail> {
    let mut caps = Caps::default();
    if !sh.cfg.helo_only {
        s.queue(format!("EHLO {}\r\n", sh.cfg.helo_name).as_bytes());
        s.flush().await?;
        let code = s
            .read_reply(|text| {
                let kw = text.split(|&b| b == b' ').next().unwrap_or(b"");
                if kw.eq_ignore_ascii_case(b"PIPELINING") {
                    caps.pipelining = true;
                } else if kw.eq_ignore_ascii_case(b"CHUNKING") {
                    caps.chunking = true;
                } else if kw.eq_ignore_ascii_case(b"STARTTLS") {
                    caps.starttls = true;
                } else if kw.eq_ignore_ascii_case(b"AUTH") {
                    caps.auth_plain |= text
                        .split(|&b| b == b' ')
                        .any(|m| m.eq_ignore_ascii_case(b"PLAIN"));
                }
            })
            .await?;
        st.replies.add(code);
        if code / 100 == 2 {
            return Ok(caps);
        }
        if code == 421 {
            return Err(Fail::Refused(code, "EHLO"));
        }
    }
    s.queue(format!("HELO {}\r\n", sh.cfg.helo_name).as_bytes());
    s.flush().await?;
    let code = st.reply(s).await?;
    if code / 100 != 2 {
        return Err(Fail::Refused(code, "HELO"));
    }
    Ok(Caps::default())
}

/// Connects, reads the greeting, says EHLO, and does STARTTLS and AUTH as configured.
async fn open(sh: &Shared, st: &mut SessionStats) -> Result<(SmtpStream<Conn>, Caps), Fail> {
    let t0 = Instant::now();
    let tcp = tokio::time::timeout(sh.cfg.timeout, TcpStream::connect(sh.cfg.target))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let t1 = Instant::now();
    stats::record(&mut st.connect, t1 - t0);
    st.connections += 1;
    let _ = tcp.set_nodelay(true);
    let mut s = SmtpStream::new(Conn::Plain(tcp), sh.cfg.timeout);
    let code = st.reply(&mut s).await?;
    stats::record(&mut st.first_reply, t1.elapsed());
    if code != 220 {
        return Err(Fail::Refused(code, "greeting"));
    }
    let mut caps = ehlo(sh, st, &mut s).await?;
    if let Some(connector) = &sh.tls {
        if !caps.starttls {
            return Err(Fail::Missing("STARTTLS"));
        }
        s.queue(b"STARTTLS\r\n");
        s.flush().await?;
        let code = st.reply(&mut s).await?;
        if code != 220 {
            return Err(Fail::Refused(code, "STARTTLS"));
        }
        let Conn::Plain(tcp) = s.into_inner() else {
            return Err(Fail::Missing("a plain connection to upgrade"));
        };
        let name = rustls::pki_types::ServerName::try_from("localhost")
            .map_err(|_| Fail::Missing("a TLS server name"))?;
        let tls = tokio::time::timeout(sh.cfg.timeout, connector.connect(name, tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        s = SmtpStream::new(Conn::ClientTls(Box::new(tls)), sh.cfg.timeout);
        caps = ehlo(sh, st, &mut s).await?;
    }
    if let Some((user, pass)) = &sh.cfg.auth {
        if !caps.auth_plain {
            return Err(Fail::Missing("AUTH PLAIN"));
        }
        let token = base64(format!("\0{user}\0{pass}").as_bytes());
        s.queue(format!("AUTH PLAIN {token}\r\n").as_bytes());
        s.flush().await?;
        let code = st.reply(&mut s).await?;
        if code != 235 {
            return Err(Fail::Refused(code, "AUTH"));
        }
    }
    if sh.cfg.pipelining && !caps.pipelining {
        return Err(Fail::Missing("PIPELINING"));
    }
    if sh.cfg.bdat && !caps.chunking {
        return Err(Fail::Missing("CHUNKING (BDAT)"));
    }
    Ok((s, caps))
}

/// Per-session scratch state for building messages.
struct Builder<'a> {
    rng: fastrand::Rng,
    picked: Vec<PickedDomain<'a>>,
    to: Vec<u8>,
    body: Vec<u8>,
    date_secs: u64,
    date: String,
}

impl<'a> Builder<'a> {
    fn write_rcpt(&self, sh: &Shared, ticket: u64, i: usize, out: &mut Vec<u8>) {
        use std::io::Write as _;
        let r = sh.cfg.rcpts_per_msg as u64;
        if sh.cfg.unique_rcpts {
            let _ = write!(out, "{}", ticket * r + i as u64);
        } else if r > 1 {
            let _ = write!(out, "{i}");
        }
        out.extend_from_slice(sh.local.as_bytes());
        if let Some(d) = self.picked.get(i) {
            out.push(b'@');
            d.write(out);
        } else if !sh.domain.is_empty() {
            out.push(b'@');
            out.extend_from_slice(sh.domain.as_bytes());
        }
    }

    fn date(&mut self) -> &str {
        let now = stats::unix_micros() / 1_000_000;
        if now != self.date_secs {
            self.date_secs = now;
            self.date = message::rfc5322_date(now);
        }
        &self.date
    }
}

/// Sends one message over an open session.
async fn send_one<'a>(
    sh: &'a Shared,
    st: &mut SessionStats,
    b: &mut Builder<'a>,
    s: &mut SmtpStream<Conn>,
    ticket: u64,
    due: Instant,
) -> io::Result<Outcome> {
    let cfg = &sh.cfg;
    // Choose size and domains, format the recipients.
    let template = &sh.templates[*sh.template_pick.pick(&mut b.rng)];
    b.picked.clear();
    if let Some(mix) = &cfg.domains {
        for _ in 0..cfg.rcpts_per_msg {
            let d = message::pick_domain(mix, &mut b.rng);
            b.picked.push(d);
        }
    }
    let mut to = std::mem::take(&mut b.to);
    to.clear();
    b.write_rcpt(sh, ticket, 0, &mut to);
    let mut body = std::mem::take(&mut b.body);
    body.clear();
    let date = b.date().to_string();
    let meta = MessageMeta {
        seq: ticket,
        from: &cfg.sender,
        to: &to,
        subject: &cfg.subject,
        hostname: &cfg.helo_name,
        date: &date,
        stamp_us: cfg.stamp.then(stats::unix_micros),
    };
    let msg_len = message::write_message(&mut body, template, &meta, !cfg.bdat);
    let result = transaction(sh, st, b, s, ticket, &body, msg_len, due).await;
    b.to = to;
    b.body = body;
    if let Ok(Outcome::Accepted) = result {
        st.bytes += msg_len as u64;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn transaction(
    sh: &Shared,
    st: &mut SessionStats,
    b: &Builder<'_>,
    s: &mut SmtpStream<Conn>,
    ticket: u64,
    body: &[u8],
    msg_len: usize,
    due: Instant,
) -> io::Result<Outcome> {
    let cfg = &sh.cfg;
    let start = if cfg.rate.is_some() {
        due
    } else {
        Instant::now()
    };
    let queue_rcpts = |s: &mut SmtpStream<Conn>, i: usize| {
        let w = s.wbuf();
        w.extend_from_slice(b"RCPT TO:<");
        b.write_rcpt(sh, ticket, i, w);
        w.extend_from_slice(b">\r\n");
    };
    let queue_mail = |s: &mut SmtpStream<Conn>| {
        let w = s.wbuf();
        w.extend_from_slice(b"MAIL FROM:<");
        w.extend_from_slice(cfg.sender.as_bytes());
        w.extend_from_slice(b">\r\n");
    };
    let queue_bdat = |s: &mut SmtpStream<Conn>| {
        let w = s.wbuf();
        let _ = std::io::Write::write_fmt(w, format_args!("BDAT {msg_len} LAST\r\n"));
        w.extend_from_slice(body);
    };
    let n = cfg.rcpts_per_msg;
    let mut ok_rcpts = 0usize;
    let mut last_refusal = 0u16;
    let refused = |code: u16| Outcome::Refused {
        code,
        close: code == 421,
    };

    if cfg.pipelining {
        queue_mail(s);
        for i in 0..n {
            queue_rcpts(s, i);
        }
        if cfg.bdat {
            queue_bdat(s);
        } else {
            s.queue(b"DATA\r\n");
        }
        s.flush().await?;
        let sent = Instant::now();
        let mail = st.reply(s).await?;
        for _ in 0..n {
            let code = st.reply(s).await?;
            if code / 100 == 2 {
                ok_rcpts += 1;
            } else {
                last_refusal = code;
            }
        }
        st.rcpts_ok += ok_rcpts as u64;
        st.rcpts_rejected += (n - ok_rcpts) as u64;
        let data = st.reply(s).await?;
        if cfg.bdat {
            if data / 100 == 2 {
                stats::record(&mut st.eod, sent.elapsed());
                stats::record(&mut st.txn, start.elapsed());
                return Ok(Outcome::Accepted);
            }
            let code = if mail / 100 != 2 {
                mail
            } else if ok_rcpts == 0 && last_refusal != 0 {
                last_refusal
            } else {
                data
            };
            return Ok(refused(code));
        }
        if data != 354 {
            let code = if mail / 100 != 2 {
                mail
            } else if ok_rcpts == 0 && last_refusal != 0 {
                last_refusal
            } else {
                data
            };
            if mail / 100 == 2 && code != 421 {
                s.queue(b"RSET\r\n");
                s.flush().await?;
                st.reply(s).await?;
            }
            return Ok(refused(code));
        }
        if ok_rcpts == 0 {
            // 354 without a valid recipient: end the (empty) message; the server must refuse it.
            s.queue(b".\r\n");
            s.flush().await?;
            let code = st.reply(s).await?;
            return Ok(refused(if last_refusal != 0 {
                last_refusal
            } else {
                code
            }));
        }
        s.queue(body);
    } else {
        queue_mail(s);
        s.flush().await?;
        let code = st.reply(s).await?;
        if code / 100 != 2 {
            return Ok(refused(code));
        }
        for i in 0..n {
            queue_rcpts(s, i);
            s.flush().await?;
            let code = st.reply(s).await?;
            if code / 100 == 2 {
                ok_rcpts += 1;
            } else {
                last_refusal = code;
                if code == 421 {
                    return Ok(refused(code));
                }
            }
        }
        st.rcpts_ok += ok_rcpts as u64;
        st.rcpts_rejected += (n - ok_rcpts) as u64;
        if ok_rcpts == 0 {
            s.queue(b"RSET\r\n");
            s.flush().await?;
            st.reply(s).await?;
            return Ok(refused(last_refusal));
        }
        if cfg.bdat {
            queue_bdat(s);
        } else {
            s.queue(b"DATA\r\n");
            s.flush().await?;
            let code = st.reply(s).await?;
            if code != 354 {
                if code != 421 {
                    s.queue(b"RSET\r\n");
                    s.flush().await?;
                    st.reply(s).await?;
                }
                return Ok(refused(code));
            }
            s.queue(body);
        }
    }
    s.flush().await?;
    let sent = Instant::now();
    let code = st.reply(s).await?;
    stats::record(&mut st.eod, sent.elapsed());
    if code / 100 == 2 {
        stats::record(&mut st.txn, start.elapsed());
        Ok(Outcome::Accepted)
    } else {
        Ok(refused(code))
    }
}

async fn quit(st: &mut SessionStats, mut s: SmtpStream<Conn>) {
    s.queue(b"QUIT\r\n");
    if s.flush().await.is_ok() && st.reply(&mut s).await.is_ok() {
        let _ = s.shutdown().await;
    }
}

async fn session(sh: Arc<Shared>, id: u64) -> SessionStats {
    let mut st = SessionStats::new();
    let seed = if sh.cfg.seed == 0 {
        fastrand::u64(..)
    } else {
        sh.cfg.seed
    };
    let mut b = Builder {
        rng: fastrand::Rng::with_seed(seed ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
        picked: Vec::with_capacity(sh.cfg.rcpts_per_msg),
        to: Vec::new(),
        body: Vec::new(),
        date_secs: 0,
        date: String::new(),
    };
    let mut conn: Option<SmtpStream<Conn>> = None;
    while let Some(ticket) = sh.next_ticket() {
        let due = match sh.cfg.rate {
            Some(r) => {
                let due = sh.start + Duration::from_secs_f64(ticket as f64 / r);
                tokio::time::sleep_until(due.into()).await;
                due
            }
            None => Instant::now(),
        };
        let mut s = match conn.take() {
            Some(s) => s,
            None => match open(&sh, &mut st).await {
                Ok((s, _caps)) => s,
                Err(e) => {
                    match e {
                        Fail::Refused(code, _) if code / 100 == 4 => st.rejected_temp += 1,
                        Fail::Refused(code, _) if code / 100 == 5 => st.rejected_perm += 1,
                        _ => st.errors += 1,
                    }
                    st.note_error(e.to_string());
                    sh.progress.failed.fetch_add(1, Relaxed);
                    // Bound the retry loop in time as well as in count.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        match send_one(&sh, &mut st, &mut b, &mut s, ticket, due).await {
            Ok(Outcome::Accepted) => {
                st.accepted += 1;
                sh.progress.accepted.fetch_add(1, Relaxed);
                if sh.cfg.reuse {
                    conn = Some(s);
                } else {
                    quit(&mut st, s).await;
                }
            }
            Ok(Outcome::Refused { code, close }) => {
                if code / 100 == 4 {
                    st.rejected_temp += 1;
                } else {
                    st.rejected_perm += 1;
                }
                sh.progress.failed.fetch_add(1, Relaxed);
                if close {
                    // The server closed the session (421); nothing more to say.
                } else if sh.cfg.reuse {
                    conn = Some(s);
                } else {
                    quit(&mut st, s).await;
                }
            }
            Err(e) => {
                st.errors += 1;
                st.note_error(e.to_string());
                sh.progress.failed.fetch_add(1, Relaxed);
            }
        }
    }
    if let Some(s) = conn {
        quit(&mut st, s).await;
    }
    st
}

/// Runs the load and returns the report. `progress` receives live counts (for a progress bar).
pub fn run(cfg: SourceConfig, progress: Arc<Progress>) -> Result<SourceReport, String> {
    if cfg.messages.is_none() && cfg.duration.is_none() {
        return Err("give a message count or a duration".into());
    }
    if cfg.sessions == 0 || cfg.threads == 0 || cfg.rcpts_per_msg == 0 {
        return Err("sessions, threads and recipients per message must be at least 1".into());
    }
    if cfg.rate.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
        return Err("the rate must be a positive number".into());
    }
    let seed = if cfg.seed == 0 {
        fastrand::u64(..)
    } else {
        cfg.seed
    };
    let mut rng = fastrand::Rng::with_seed(seed);
    let templates: Vec<Template> = cfg
        .sizes
        .items()
        .iter()
        .map(|&n| Template::new(n, &mut rng))
        .collect();
    let template_pick = {
        // Same weights, items become indices into `templates`.
        let pairs = (0..cfg.sizes.items().len())
            .map(|i| (i, cfg.sizes.weight(i)))
            .collect();
        Weighted::new(pairs)?
    };
    let tls = if cfg.starttls {
        Some(tokio_rustls::TlsConnector::from(
            crate::tls::client_config().map_err(|e| e.to_string())?,
        ))
    } else {
        None
    };
    let (local, domain) = match cfg.recipient.rsplit_once('@') {
        Some((l, d)) => (l.to_string(), d.to_string()),
        None => (cfg.recipient.clone(), String::new()),
    };
    let start = Instant::now();
    let started_unix_us = stats::unix_micros();
    let threads = cfg.threads.min(cfg.sessions);
    let sh = Arc::new(Shared {
        deadline: cfg.duration.map(|d| start + d),
        cfg,
        templates,
        template_pick,
        tickets: AtomicU64::new(0),
        start,
        tls,
        progress,
        local,
        domain,
    });
    let total = Arc::new(Mutex::new(SessionStats::new()));
    let mut handles = Vec::new();
    for t in 0..threads {
        let sh = sh.clone();
        let total = total.clone();
        handles.push(std::thread::spawn(move || -> Result<(), String> {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let mut set = tokio::task::JoinSet::new();
                for id in (t..sh.cfg.sessions).step_by(threads) {
                    set.spawn(session(sh.clone(), id as u64));
                }
                let mut mine = SessionStats::new();
                while let Some(r) = set.join_next().await {
                    match r {
                        Ok(st) => mine.merge(&st),
                        Err(e) => mine.note_error(format!("session task failed: {e}")),
                    }
                }
                if let Ok(mut tot) = total.lock() {
                    tot.merge(&mine);
                }
            });
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| "worker thread panicked".to_string())??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let st = total
        .lock()
        .map_err(|_| "stats lock poisoned".to_string())?;
    let cfg = &sh.cfg;
    let attempted = st.accepted + st.rejected_temp + st.rejected_perm + st.errors;
    Ok(SourceReport {
        tool: "corepost-source",
        target: cfg.target.to_string(),
        started_unix_us,
        elapsed_s: (elapsed * 1e6).round() / 1e6,
        sessions: cfg.sessions,
        threads,
        rate_cap: cfg.rate,
        features: Features {
            pipelining: cfg.pipelining,
            bdat: cfg.bdat,
            starttls: cfg.starttls,
            auth: cfg.auth.is_some(),
            reuse: cfg.reuse,
        },
        messages: st.accepted,
        attempted,
        rejected_temp: st.rejected_temp,
        rejected_perm: st.rejected_perm,
        errors: st.errors,
        recipients_accepted: st.rcpts_ok,
        recipients_rejected: st.rcpts_rejected,
        bytes: st.bytes,
        connections: st.connections,
        msgs_per_sec: if elapsed > 0.0 {
            (st.accepted as f64 / elapsed * 10.0).round() / 10.0
        } else {
            0.0
        },
        latency_us: Latencies {
            connect: Latency::of(&st.connect),
            first_reply: Latency::of(&st.first_reply),
            end_of_data: Latency::of(&st.eod),
            transaction: Latency::of(&st.txn),
        },
        replies: st.replies.to_map(),
        error_samples: st.error_samples.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"\0u\0p"), "AHUAcA==");
    }
}
