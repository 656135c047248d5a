//! Helpers shared by the end-to-end tests: run the real `corepost` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `corepost` binary cargo built for this test run.
pub fn corepost_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corepost"))
}

/// The top-level tests/fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Run `corepost args...` with a clean environment for configuration.
pub fn corepost(args: &[&str]) -> Output {
    Command::new(corepost_bin())
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .expect("start corepost")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parse `name = value` lines into (name, value) pairs.
pub fn parse_listing(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.split_once(" =") {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

/// A running `corepost run` on an ephemeral loopback port with its own
/// configuration directory and spool; stopped (SIGTERM, then SIGKILL) when
/// dropped.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub child: Option<std::process::Child>,
}

/// A free TCP port on 127.0.0.1 (bound and released; the daemon binds it
/// right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

impl Daemon {
    /// Write main.cf (`extra` appended to the test defaults) and a master.cf
    /// with one smtpd service on a free port, then start.
    pub fn start(extra: &str) -> Daemon {
        Daemon::start_with_services(extra, &[]).0
    }

    /// Like [`Daemon::start`], plus one more smtpd service per entry of
    /// `services` on its own free port: each entry is the master.cf line
    /// after the service name, e.g. `inet n - n - - smtpd -o
    /// smtpd_tls_wrappermode=yes`. Returns the daemon and those ports.
    pub fn start_with_services(extra: &str, services: &[&str]) -> (Daemon, Vec<u16>) {
        Daemon::services_inner(extra, services, true)
    }

    /// [`Daemon::start_with_services`] without the `local` delivery service
    /// (see [`Daemon::start_keeping_local_mail`]).
    pub fn start_with_services_keeping_local_mail(
        extra: &str,
        services: &[&str],
    ) -> (Daemon, Vec<u16>) {
        Daemon::services_inner(extra, services, false)
    }

    fn services_inner(extra: &str, services: &[&str], local: bool) -> (Daemon, Vec<u16>) {
        let ports: Vec<u16> = services.iter().map(|_| free_port()).collect();
        let lines: String = services
            .iter()
            .zip(&ports)
            .map(|(s, p)| format!("127.0.0.1:{p} {s}\n"))
            .collect();
        (Daemon::start_inner(extra, &lines, local), ports)
    }

    /// As [`Daemon::start`], with `lines` (whole master.cf lines, e.g. a
    /// `pickup` entry) appended to master.cf.
    pub fn start_with_master_lines(extra: &str, lines: &str) -> Daemon {
        Daemon::start_inner(extra, lines, true)
    }

    /// Like [`Daemon::start`], with `extra_master` appended to master.cf
    /// (more services: pipe transports, a second smtpd, ...).
    pub fn start_with_master(extra: &str, extra_master: &str) -> Daemon {
        Daemon::start_inner(extra, extra_master, true)
    }

    /// Like [`Daemon::start`] but without the `local` delivery service, so
    /// mail for local users stays queued (deferred: "mail transport
    /// unavailable"), for tests that inspect the queue after acceptance.
    pub fn start_keeping_local_mail(extra: &str) -> Daemon {
        Daemon::start_inner(extra, "", false)
    }

    /// Like [`Daemon::start_with_master`], but with `mail_owner = nobody`:
    /// started as root, the daemon gives up root (and starts its delivery
    /// helper); the configuration directory is made traversable for it.
    pub fn start_unprivileged(extra: &str, extra_master: &str) -> Daemon {
        Daemon::start_inner_as(extra, extra_master, true, "nobody")
    }

    fn start_inner(extra: &str, extra_master: &str, local: bool) -> Daemon {
        Daemon::start_inner_as(extra, extra_master, local, "root")
    }

    fn start_inner_as(extra: &str, extra_master: &str, local: bool, owner: &str) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        if owner != "root" {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
        }
        let port = free_port();
        let main = format!(
            "myhostname = mx.test.example\nqueue_directory = {}/spool\nmail_owner = {owner}\ncorepost_cores = 2\nalias_maps =\nalias_database =\nlocal_recipient_maps = inline:{{ alice=1, postmaster=1 }}\nmaillog_file = {}/maillog\nmaillog_file_prefixes = /\nsmtpd_peername_lookup = no\n{extra}\n",
            dir.path().display(),
            dir.path().display()
        );
        std::fs::write(dir.path().join("main.cf"), main).expect("main.cf");
        std::fs::write(
            dir.path().join("master.cf"),
            format!(
                "127.0.0.1:{port} inet n - n - - smtpd\nsmtp unix - - n - - smtp\nrelay unix - - n - - smtp\n{}error unix - - n - - error\ndiscard unix - - n - - discard\n{extra_master}",
                if local { "local unix - n n - - local\n" } else { "" }
            ),
        )
        .expect("master.cf");
        let mut d = Daemon {
            dir,
            port,
            child: None,
        };
        d.spawn();
        d
    }

    pub fn config_dir(&self) -> String {
        self.dir.path().display().to_string()
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// Start (again) and wait until the port answers.
    pub fn spawn(&mut self) {
        // A restart: wait for this run's "daemon started", not the last one's.
        let runs = self.log().matches("daemon started").count();
        let child = Command::new(corepost_bin())
            .args(["run", "-c", &self.config_dir()])
            .env_remove("COREPOST_CONFIG_DIR")
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start corepost run");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if self.log().matches("daemon started").count() > runs
                && std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!("corepost run exited with {status}; log:\n{}", self.log());
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("corepost run did not start; log:\n{}", self.log());
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// The maillog so far. The cores write their log lines every 10 ms, so
    /// wait a little longer than that first.
    pub fn log(&self) -> String {
        std::thread::sleep(std::time::Duration::from_millis(40));
        std::fs::read_to_string(self.dir.path().join("maillog")).unwrap_or_default()
    }

    /// SIGTERM and wait; returns the exit status.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let _ = child.kill();
        child.wait().ok()
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Resident memory of the daemon, bytes.
    pub fn rss(&self) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or(0)
            * 1024
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Poll `check` every 20 ms until it returns `Some`, for at most `secs`
/// seconds.
pub fn wait_until<T>(secs: u64, mut check: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check() {
            return Some(v);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A raw SMTP client for protocol tests.
pub struct Raw {
    pub stream: std::net::TcpStream,
    buf: Vec<u8>,
}

impl Raw {
    pub fn connect(port: u16) -> Raw {
        Raw::connect_from(port, "127.0.0.1")
    }

    /// Connect from a chosen loopback source address (e.g. 127.0.0.2,
    /// which is not in the default mynetworks).
    pub fn connect_from(port: u16, source: &str) -> Raw {
        let (raw, greeting) = Raw::open_from(port, source);
        assert!(greeting.starts_with("220 "), "{greeting}");
        raw
    }

    /// Connect from a chosen loopback source address and return the
    /// greeting, whatever it is (421 limits, 554 client rejections).
    pub fn open_from(port: u16, source: &str) -> (Raw, String) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("socket");
        let src: std::net::SocketAddr = format!("{source}:0").parse().expect("source");
        socket.bind(&src.into()).expect("bind source");
        let dst: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().expect("dst");
        socket.connect(&dst.into()).expect("connect");
        Raw::greeted(socket.into())
    }

    /// Connect to `addr` (IPv4 or IPv6) and return the greeting.
    pub fn open_to(addr: std::net::SocketAddr) -> (Raw, String) {
        Raw::greeted(std::net::TcpStream::connect(addr).expect("connect"))
    }

    /// A connected stream, with a read timeout, and its server's greeting.
    fn greeted(stream: std::net::TcpStream) -> (Raw, String) {
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .expect("timeout");
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let greeting = raw.reply();
        (raw, greeting)
    }

    pub fn send(&mut self, data: &[u8]) {
        use std::io::Write;
        self.stream.write_all(data).expect("write");
    }

    /// One complete (possibly multi-line) reply.
    pub fn reply(&mut self) -> String {
        use std::io::Read;
        loop {
            if let Some(end) = complete_reply(&self.buf) {
                let r: Vec<u8> = self.buf.drain(..end).collect();
                return String::from_utf8_lossy(&r).into_owned();
            }
            let mut chunk = [0u8; 65536];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => {
                    let r: Vec<u8> = self.buf.drain(..).collect();
                    return String::from_utf8_lossy(&r).into_owned();
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Send a command line and return the reply.
    pub fn cmd(&mut self, line: &str) -> String {
        self.send(format!("{line}\r\n").as_bytes());
        self.reply()
    }

    /// [`Raw::send`] for a peer that may be gone (a test that kills the
    /// daemon mid-session): false instead of a panic.
    pub fn try_send(&mut self, data: &[u8]) -> bool {
        use std::io::Write;
        self.stream.write_all(data).is_ok()
    }

    /// [`Raw::cmd`] for a peer that may be gone: `None` if the command
    /// could not be sent.
    pub fn try_cmd(&mut self, line: &str) -> Option<String> {
        self.try_send(format!("{line}\r\n").as_bytes())
            .then(|| self.reply())
    }
}

fn complete_reply(buf: &[u8]) -> Option<usize> {
    let mut at = 0;
    while let Some(nl) = buf[at..].iter().position(|&b| b == b'\n') {
        let line = &buf[at..at + nl + 1];
        at += nl + 1;
        if line.len() >= 4 && line[3] == b' ' {
            return Some(at);
        }
        if line.len() < 4 {
            return Some(at);
        }
    }
    None
}

/// Every queued message in a stopped daemon's spool: (queue id, envelope, content).
pub fn queued_messages(
    spool: &Path,
) -> Vec<(corepost_spool::QueueId, corepost_spool::Envelope, Vec<u8>)> {
    let mut out = Vec::new();
    let cores = std::fs::read_dir(spool)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().starts_with("core-"))
                .count()
        })
        .unwrap_or(0) as u16;
    for core in 0..cores {
        let (s, _) = corepost_spool::CoreSpool::open(
            spool,
            core,
            cores,
            corepost_spool::SpoolOptions::default(),
        )
        .expect("open spool");
        let ids: Vec<_> = s.index().iter().map(|(id, _)| *id).collect();
        for id in ids {
            let m = s.read(&id).expect("read").expect("queued");
            out.push((id, m.envelope.clone(), m.content().to_vec()));
        }
        s.close().expect("close");
    }
    out.sort_by_key(|m| m.0);
    out
}

/// What the test sink received.
#[derive(Debug, Default, Clone)]
pub struct SinkLog {
    pub connections: usize,
    /// The client address of each connection.
    pub peers: Vec<std::net::SocketAddr>,
    /// One entry per completed transaction: (sender, recipients, content).
    pub messages: Vec<(String, Vec<String>, Vec<u8>)>,
    /// When each message's MAIL FROM arrived (same order as `messages`).
    pub mail_times: Vec<std::time::Instant>,
    /// Connections open now, and the most open at once. A connection stops
    /// counting when QUIT arrives (before the 221 goes out) or at EOF.
    pub open: usize,
    pub max_open: usize,
    /// The content of each transaction answered 451 at the end of data
    /// (see [`SinkOptions::defer_data`]).
    pub deferred: Vec<Vec<u8>>,
    /// How many times each reply of [`SinkOptions::replies`] was given, by prefix.
    pub injected: std::collections::HashMap<&'static str, usize>,
}

/// Counts a sink connection as open until closed or dropped.
struct OpenGuard(Option<std::sync::Arc<std::sync::Mutex<SinkLog>>>);

impl OpenGuard {
    fn new(log: &std::sync::Arc<std::sync::Mutex<SinkLog>>) -> OpenGuard {
        if let Ok(mut l) = log.lock() {
            l.open += 1;
            l.max_open = l.max_open.max(l.open);
        }
        OpenGuard(Some(std::sync::Arc::clone(log)))
    }

    fn close(&mut self) {
        if let Some(log) = self.0.take()
            && let Ok(mut l) = log.lock()
        {
            l.open -= 1;
        }
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.close();
    }
}

/// A small SMTP sink on 127.0.0.1 for end-to-end delivery tests: accepts
/// everything except recipients whose local part starts with `tempfail`
/// (450 4.2.0), `quotafail` (452 4.2.2) or `permfail` (550 5.1.1); records
/// every transaction.
pub struct Sink {
    pub port: u16,
    pub log: std::sync::Arc<std::sync::Mutex<SinkLog>>,
}

/// How a [`Sink`] behaves beyond the defaults.
#[derive(Debug, Clone, Copy)]
pub struct SinkOptions {
    /// Announce 8BITMIME (the default).
    pub eightbitmime: bool,
    /// Answer the end of data with 500 when a content line is longer than this (RFC 5321's
    /// 1000 octets with CRLF is `Some(998)`).
    pub max_line: Option<usize>,
    /// Time taken before answering each end of data.
    pub delay: std::time::Duration,
    /// Answer the end of data of this many first transactions with 451
    /// (a next hop that defers after reading the message).
    pub defer_data: usize,
    /// Chosen RCPT replies: (local-part prefix, reply line, how many times; 0 = always).
    /// A recipient whose address starts with the prefix gets the reply (a throttling
    /// provider's `450 4.7.28 ... rate limited`) until it was given that many times, then
    /// is accepted.
    pub replies: &'static [(&'static str, &'static str, usize)],
}

impl Default for SinkOptions {
    fn default() -> SinkOptions {
        SinkOptions {
            eightbitmime: true,
            max_line: None,
            delay: std::time::Duration::ZERO,
            defer_data: 0,
            replies: &[],
        }
    }
}

impl Sink {
    pub fn start() -> Sink {
        Sink::start_on(0)
    }

    /// A sink on a chosen port (e.g. one a daemon was already told to relay
    /// to, to bring a "down" destination back).
    pub fn start_on(port: u16) -> Sink {
        Sink::start_with(port, SinkOptions::default())
    }

    /// A sink that takes `delay` before answering each end of data (a slow
    /// next hop: messages stay in flight, leased by the queue manager).
    pub fn start_slow(delay: std::time::Duration) -> Sink {
        Sink::start_with(
            0,
            SinkOptions {
                delay,
                ..SinkOptions::default()
            },
        )
    }

    pub fn start_with(port: u16, options: SinkOptions) -> Sink {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).expect("bind sink");
        let port = listener.local_addr().expect("addr").port();
        let log = std::sync::Arc::new(std::sync::Mutex::new(SinkLog::default()));
        let shared = std::sync::Arc::clone(&log);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let log = std::sync::Arc::clone(&shared);
                std::thread::spawn(move || sink_session(stream, log, options));
            }
        });
        Sink { port, log }
    }

    /// The distinct `X-Seq:` numbers of the messages received (load tests
    /// number their messages so), and how many messages arrived in all.
    pub fn sequence_numbers(&self) -> (std::collections::HashSet<usize>, usize) {
        let got = self.snapshot();
        let seen = got
            .messages
            .iter()
            .filter_map(|m| {
                let t = String::from_utf8_lossy(&m.2).into_owned();
                t.split("X-Seq: ")
                    .nth(1)?
                    .split("\r\n")
                    .next()?
                    .parse()
                    .ok()
            })
            .collect();
        (seen, got.messages.len())
    }

    pub fn snapshot(&self) -> SinkLog {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Wait until `n` messages arrived (or the deadline passes).
    pub fn wait_for(&self, n: usize, secs: u64) -> SinkLog {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let s = self.snapshot();
            if s.messages.len() >= n || std::time::Instant::now() > deadline {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

fn sink_session(
    stream: std::net::TcpStream,
    log: std::sync::Arc<std::sync::Mutex<SinkLog>>,
    options: SinkOptions,
) {
    use std::io::{BufRead, BufReader, Write};
    if let Ok(mut l) = log.lock() {
        l.connections += 1;
        if let Ok(peer) = stream.peer_addr() {
            l.peers.push(peer);
        }
    }
    let mut open = OpenGuard::new(&log);
    let mut mail_at = std::time::Instant::now();
    let mut w = stream.try_clone().expect("clone");
    let mut r = BufReader::new(stream);
    let _ = w.write_all(b"220 sink.test ESMTP\r\n");
    let (mut from, mut rcpts) = (String::new(), Vec::<String>::new());
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        let upper = cmd.to_ascii_uppercase();
        let reply: String = if upper.starts_with("EHLO") {
            if options.eightbitmime {
                "250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 100000000\r\n".into()
            } else {
                "250-sink.test\r\n250-PIPELINING\r\n250 SIZE 100000000\r\n".into()
            }
        } else if upper.starts_with("HELO") || upper.starts_with("NOOP") {
            "250 ok\r\n".into()
        } else if upper.starts_with("MAIL FROM:") {
            mail_at = std::time::Instant::now();
            from = cmd[10..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            rcpts.clear();
            "250 2.1.0 ok\r\n".into()
        } else if upper.starts_with("RCPT TO:") {
            let a = cmd[8..]
                .split('>')
                .next()
                .unwrap_or("")
                .trim_start_matches('<')
                .to_string();
            if let Some(reply) = injected_reply(&log, &options, &a) {
                reply
            } else if a.starts_with("tempfail") {
                "450 4.2.0 try again later\r\n".into()
            } else if a.starts_with("quotafail") {
                "452 4.2.2 mailbox full\r\n".into()
            } else if a.starts_with("permfail") {
                "550 5.1.1 no such user\r\n".into()
            } else {
                rcpts.push(a);
                "250 2.1.5 ok\r\n".into()
            }
        } else if upper == "DATA" {
            if rcpts.is_empty() {
                "554 5.5.1 no valid recipients\r\n".into()
            } else {
                let _ = w.write_all(b"354 go ahead\r\n");
                let mut content = Vec::new();
                let mut too_long = false;
                loop {
                    let mut l = Vec::new();
                    if r.read_until(b'\n', &mut l).unwrap_or(0) == 0 {
                        return;
                    }
                    if l == b".\r\n" {
                        break;
                    }
                    too_long |= options.max_line.is_some_and(|max| l.len() > max + 2);
                    let body: &[u8] = if l.starts_with(b"..") { &l[1..] } else { &l };
                    content.extend_from_slice(body);
                }
                std::thread::sleep(options.delay);
                let defer = log.lock().is_ok_and(|mut lg| {
                    let defer = lg.deferred.len() < options.defer_data;
                    if defer {
                        lg.deferred.push(content.clone());
                    }
                    defer
                });
                if too_long {
                    "500 5.5.0 line too long\r\n".into()
                } else if defer {
                    "451 4.3.0 try again later\r\n".into()
                } else {
                    if let Ok(mut lg) = log.lock() {
                        lg.messages.push((from.clone(), rcpts.clone(), content));
                        lg.mail_times.push(mail_at);
                    }
                    "250 2.0.0 queued\r\n".into()
                }
            }
        } else if upper.starts_with("RSET") {
            rcpts.clear();
            "250 ok\r\n".into()
        } else if upper.starts_with("QUIT") {
            open.close();
            let _ = w.write_all(b"221 bye\r\n");
            return;
        } else {
            "502 5.5.2 unknown\r\n".into()
        };
        // Pipelining: answer only when no more input is buffered.
        let _ = w.write_all(reply.as_bytes());
    }
}

/// The reply of [`SinkOptions::replies`] for recipient `a`, if it is still due.
fn injected_reply(
    log: &std::sync::Mutex<SinkLog>,
    options: &SinkOptions,
    a: &str,
) -> Option<String> {
    let (prefix, reply, times) = options.replies.iter().find(|(p, _, _)| a.starts_with(p))?;
    let mut l = log.lock().ok()?;
    let given = l.injected.entry(prefix).or_default();
    if *times != 0 && *given >= *times {
        return None;
    }
    *given += 1;
    Some(format!("{reply}\r\n"))
}

/// Run a Python 3 script; (exit status ok, stdout and stderr).
pub fn python(script: &str) -> (bool, String) {
    let out = Command::new("python3")
        .args(["-c", script])
        .output()
        .expect("python3");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Send one message over a fresh SMTP session (every recipient must be
/// accepted); the reply to the end of data, trimmed.
pub fn end_of_data_reply(port: u16, sender: &str, rcpts: &[&str], content: &str) -> String {
    let mut c = Raw::connect(port);
    c.cmd("EHLO client.test");
    assert!(c.cmd(&format!("MAIL FROM:<{sender}>")).starts_with("250"));
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{r}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("{content}\r\n.\r\n").as_bytes());
    let r = c.reply();
    c.cmd("QUIT");
    r.trim().to_string()
}

/// [`end_of_data_reply`] for a message that must be queued: its queue id.
pub fn submit(port: u16, sender: &str, rcpts: &[&str], content: &str) -> String {
    let r = end_of_data_reply(port, sender, rcpts, content);
    r.strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {r}"))
        .to_string()
}

/// The messages in `maildir/new`, read.
pub fn maildir_messages(maildir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(maildir.join("new")) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok())
        .collect()
}
