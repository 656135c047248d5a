//! Test support: a scripted SMTP server on loopback.
//!
//! The SMTP client's tests and the queue manager's end-to-end tests need a server whose
//! behaviour they control: which extensions it advertises, which commands it refuses, where it
//! stalls or hangs up. [`TestSink`] is that server. Like `dns::testserver` it runs on its own
//! std threads with blocking sockets — deliberately not on glommio, so it is independent of the
//! code under test — one thread per connection, on `127.0.0.1` port 0.
//!
//! Everything it receives is recorded: each command line with the number of the `read()` call
//! that delivered it (so a test can see that a pipelined batch arrived in one read), and each
//! message with its envelope, the raw bytes as they came over the wire, and the content after
//! dot-unstuffing.
//!
//! STARTTLS uses a self-signed certificate made with rcgen when the sink starts, or the chain
//! and key of [`SinkScript::tls_identity`]. With [`SinkScript::auth`] it offers SMTP AUTH (PLAIN,
//! LOGIN) and records who authenticated.
//!
//! It is not an SMTP server for anything but tests: no limits beyond a read timeout, no
//! validation of addresses.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// What the sink does. Replies are given as full lines without CRLF (`"550 5.1.1 No such
/// user"`); a `\n` inside one makes a multi-line reply (write the `-` continuations yourself).
#[derive(Debug, Clone)]
pub struct SinkScript {
    pub greeting: String,
    /// Reply to EHLO instead of the extension list (e.g. `"502 5.5.2 Error: command not recognized"`).
    pub ehlo_reply: Option<String>,
    pub pipelining: bool,
    pub eightbitmime: bool,
    pub smtputf8: bool,
    pub dsn: bool,
    pub chunking: bool,
    pub binarymime: bool,
    pub starttls: bool,
    /// `SIZE` with this limit (0: `SIZE` without a fixed limit); `None`: not advertised.
    pub size: Option<u64>,
    /// Reply to STARTTLS instead of `220 2.0.0 Ready to start TLS`.
    pub starttls_reply: Option<String>,
    /// Bytes sent in the same write right after the STARTTLS reply (an injection attempt the
    /// client must discard).
    pub starttls_inject: Option<String>,
    /// Reply to MAIL FROM instead of `250 2.1.0 Ok`.
    pub mail_reply: Option<String>,
    /// Per recipient address (exact, case-sensitive): the reply to its RCPT TO.
    pub rcpt_replies: HashMap<String, String>,
    /// Reply to DATA (when a recipient was accepted) instead of `354 ...`.
    pub data_reply: Option<String>,
    /// Reply to the end of data / BDAT LAST instead of `250 2.0.0 Ok: queued as N`.
    pub end_reply: Option<String>,
    /// Close the connection without a reply on receiving this command verb (`"MAIL"`, `"RCPT"`,
    /// `"DATA"`, `"."` for end of data, ...), or before the greeting with `"CONNECT"`.
    pub close_on: Option<String>,
    /// Close the connection right after replying to this command verb (a server that says 421
    /// and hangs up).
    pub hangup_after: Option<String>,
    /// Stop answering (hold the connection for [`SinkScript::stall_time`]) on this verb, or
    /// before the greeting with `"CONNECT"`.
    pub stall_on: Option<String>,
    pub stall_time: Duration,
    /// The certificate chain and private key (PEM) for STARTTLS; read when the sink starts.
    pub tls_identity: Option<(String, String)>,
    /// Offer and check SMTP AUTH.
    pub auth: Option<SinkAuth>,
}

/// SMTP AUTH as the sink offers it.
#[derive(Debug, Clone)]
pub struct SinkAuth {
    /// The mechanisms advertised (`"PLAIN LOGIN"`); PLAIN and LOGIN are understood.
    pub mechanisms: String,
    pub user: String,
    pub password: String,
    /// Advertise AUTH only after STARTTLS.
    pub tls_only: bool,
}

impl Default for SinkScript {
    fn default() -> SinkScript {
        SinkScript {
            greeting: "220 sink.test ESMTP corepost test sink".into(),
            ehlo_reply: None,
            pipelining: true,
            eightbitmime: true,
            smtputf8: false,
            dsn: false,
            chunking: false,
            binarymime: false,
            starttls: false,
            size: None,
            starttls_reply: None,
            starttls_inject: None,
            mail_reply: None,
            rcpt_replies: HashMap::new(),
            data_reply: None,
            end_reply: None,
            close_on: None,
            hangup_after: None,
            stall_on: None,
            stall_time: Duration::from_secs(3),
            tls_identity: None,
            auth: None,
        }
    }
}

/// One command line as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedCommand {
    /// Which connection (0, 1, ... in accept order).
    pub connection: usize,
    /// Which `read()` on that connection delivered the line's last byte.
    pub read: usize,
    pub line: String,
    /// Whether it came over TLS.
    pub tls: bool,
}

/// One message the sink accepted (or answered the end of data for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    pub connection: usize,
    /// The MAIL FROM command line.
    pub mail_from: String,
    /// The accepted RCPT TO command lines.
    pub rcpt_to: Vec<String>,
    /// The bytes between DATA's 354 and the final dot (inclusive of the final CRLF, without
    /// `.` CRLF), as they came over the wire; for BDAT, the chunk.
    pub wire: Vec<u8>,
    /// `wire` with dot-stuffing removed (BDAT: the same).
    pub content: Vec<u8>,
    pub tls: bool,
    /// The user that authenticated on the connection, if any.
    pub auth: Option<String>,
}

/// Everything the sink has seen.
#[derive(Debug, Clone, Default)]
pub struct Received {
    pub connections: usize,
    /// The client's address of each connection, in accept order.
    pub peers: Vec<SocketAddr>,
    pub commands: Vec<ReceivedCommand>,
    pub messages: Vec<ReceivedMessage>,
}

impl Received {
    /// The command lines of one connection, in order.
    pub fn lines(&self, connection: usize) -> Vec<&str> {
        self.commands
            .iter()
            .filter(|c| c.connection == connection)
            .map(|c| c.line.as_str())
            .collect()
    }
}

struct Shared {
    script: Mutex<SinkScript>,
    received: Mutex<Received>,
    stop: AtomicBool,
    tls: Arc<rustls::ServerConfig>,
}

/// A running sink; stops when dropped.
pub struct TestSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn tls_config(identity: Option<&(String, String)>) -> Arc<rustls::ServerConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let (chain, key) = match identity {
        Some((chain, key)) => (
            CertificateDer::pem_slice_iter(chain.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .expect("tls_identity certificate chain"),
            PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("tls_identity key"),
        ),
        None => {
            let certified = rcgen::generate_simple_self_signed(vec![
                "localhost".to_string(),
                "sink.test".to_string(),
            ])
            .expect("rcgen self-signed certificate");
            let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
                certified.signing_key.serialize_der(),
            ));
            (vec![certified.cert.der().clone()], key)
        }
    };
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocol versions")
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .expect("server certificate");
    Arc::new(config)
}

impl TestSink {
    /// Start a sink on 127.0.0.1 with a free port.
    pub fn start(script: SinkScript) -> io::Result<TestSink> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            tls: tls_config(script.tls_identity.as_ref()),
            script: Mutex::new(script),
            received: Mutex::new(Received::default()),
            stop: AtomicBool::new(false),
        });
        let accept_shared = shared.clone();
        let acceptor = std::thread::Builder::new()
            .name("testsink".into())
            .spawn(move || {
                for stream in listener.incoming() {
                    if accept_shared.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(stream) = stream else { continue };
                    let id = {
                        let mut r = lock(&accept_shared.received);
                        if let Ok(peer) = stream.peer_addr() {
                            r.peers.push(peer);
                        }
                        r.connections += 1;
                        r.connections - 1
                    };
                    let shared = accept_shared.clone();
                    let _ = std::thread::Builder::new()
                        .name("testsink-conn".into())
                        .spawn(move || {
                            let _ = Session::new(shared, stream, id).and_then(|mut s| s.run());
                        });
                }
            })?;
        Ok(TestSink {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A copy of everything received so far.
    pub fn received(&self) -> Received {
        lock(&self.shared.received).clone()
    }

    /// Change the script for connections and commands from now on.
    pub fn set_script(&self, script: SinkScript) {
        *lock(&self.shared.script) = script;
    }
}

impl Drop for TestSink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

enum SinkStream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ServerConnection, TcpStream>>),
    Gone,
}

impl SinkStream {
    fn tcp(&self) -> Option<&TcpStream> {
        match self {
            SinkStream::Plain(s) => Some(s),
            SinkStream::Tls(s) => Some(&s.sock),
            SinkStream::Gone => None,
        }
    }
}

impl Read for SinkStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SinkStream::Plain(s) => s.read(buf),
            SinkStream::Tls(s) => s.read(buf),
            SinkStream::Gone => Ok(0),
        }
    }
}

impl Write for SinkStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SinkStream::Plain(s) => s.write(buf),
            SinkStream::Tls(s) => s.write(buf),
            SinkStream::Gone => Err(io::ErrorKind::NotConnected.into()),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            SinkStream::Plain(s) => s.flush(),
            SinkStream::Tls(s) => s.flush(),
            SinkStream::Gone => Ok(()),
        }
    }
}

/// One connection's state.
struct Session {
    shared: Arc<Shared>,
    stream: SinkStream,
    id: usize,
    buf: Vec<u8>,
    reads: usize,
    tls: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    queued: usize,
    /// The user that authenticated on this connection.
    auth: Option<String>,
}

/// Why a session ends early.
enum End {
    Close,
    Io(io::Error),
}

impl From<io::Error> for End {
    fn from(e: io::Error) -> End {
        End::Io(e)
    }
}

impl Session {
    fn new(shared: Arc<Shared>, stream: TcpStream, id: usize) -> io::Result<Session> {
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(Session {
            shared,
            stream: SinkStream::Plain(stream),
            id,
            buf: Vec::new(),
            reads: 0,
            tls: false,
            mail_from: None,
            rcpt_to: Vec::new(),
            queued: 0,
            auth: None,
        })
    }

    fn script(&self) -> SinkScript {
        lock(&self.shared.script).clone()
    }

    fn run(&mut self) -> io::Result<()> {
        let result = self.dialogue();
        if let Some(tcp) = self.stream.tcp() {
            let _ = tcp.shutdown(Shutdown::Both);
        }
        match result {
            Ok(()) | Err(End::Close) => Ok(()),
            Err(End::Io(e)) => Err(e),
        }
    }

    /// Hold the connection without answering, until the stall time passes or the sink stops.
    fn stall(&self, time: Duration) -> End {
        let until = std::time::Instant::now() + time;
        while std::time::Instant::now() < until && !self.shared.stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        End::Close
    }

    fn reply(&mut self, text: &str) -> Result<(), End> {
        let mut out = text.replace('\n', "\r\n");
        out.push_str("\r\n");
        self.stream.write_all(out.as_bytes())?;
        self.stream.flush()?;
        Ok(())
    }

    /// Read more bytes; `Ok(false)` at end of stream.
    fn fill(&mut self) -> Result<bool, End> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.reads += 1;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next CRLF- (or LF-) terminated line, without its ending.
    fn line(&mut self) -> Result<Option<Vec<u8>>, End> {
        loop {
            if let Some(lf) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=lf).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Ok(Some(line));
            }
            if !self.fill()? {
                return Ok(None);
            }
        }
    }

    fn dialogue(&mut self) -> Result<(), End> {
        let script = self.script();
        if script.close_on.as_deref() == Some("CONNECT") {
            return Err(End::Close);
        }
        if script.stall_on.as_deref() == Some("CONNECT") {
            return Err(self.stall(script.stall_time));
        }
        self.reply(&script.greeting)?;
        while let Some(line) = self.line()? {
            let line = String::from_utf8_lossy(&line).into_owned();
            lock(&self.shared.received).commands.push(ReceivedCommand {
                connection: self.id,
                read: self.reads,
                line: line.clone(),
                tls: self.tls,
            });
            let script = self.script();
            let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
            let verb = verb.split(':').next().unwrap_or("").to_string();
            if script.close_on.as_deref() == Some(verb.as_str()) {
                return Err(End::Close);
            }
            if script.stall_on.as_deref() == Some(verb.as_str()) {
                return Err(self.stall(script.stall_time));
            }
            match verb.as_str() {
                "EHLO" => match &script.ehlo_reply {
                    Some(r) => self.reply(r)?,
                    None => {
                        let mut lines = vec!["250-sink.test".to_string()];
                        let mut add = |on: bool, s: &str| {
                            if on {
                                lines.push(format!("250-{s}"));
                            }
                        };
                        add(script.pipelining, "PIPELINING");
                        if let Some(n) = script.size {
                            add(
                                true,
                                &if n == 0 {
                                    "SIZE".to_string()
                                } else {
                                    format!("SIZE {n}")
                                },
                            );
                        }
                        add(script.starttls && !self.tls, "STARTTLS");
                        add(script.eightbitmime, "8BITMIME");
                        add(script.smtputf8, "SMTPUTF8");
                        add(script.dsn, "DSN");
                        add(script.chunking, "CHUNKING");
                        add(script.binarymime, "BINARYMIME");
                        if let Some(a) = &script.auth
                            && (self.tls || !a.tls_only)
                        {
                            add(true, &format!("AUTH {}", a.mechanisms));
                        }
                        lines.push("250 ENHANCEDSTATUSCODES".into());
                        self.reply(&lines.join("\n"))?;
                    }
                },
                "HELO" => self.reply("250 sink.test")?,
                "AUTH" => {
                    let reply = self.authenticate(&script, &line)?;
                    self.reply(&reply)?;
                }
                "STARTTLS" => {
                    if !script.starttls || self.tls {
                        self.reply("502 5.5.1 Error: command not implemented")?;
                        continue;
                    }
                    if let Some(r) = &script.starttls_reply {
                        self.reply(r)?;
                        continue;
                    }
                    let mut out = b"220 2.0.0 Ready to start TLS\r\n".to_vec();
                    if let Some(inject) = &script.starttls_inject {
                        out.extend_from_slice(inject.as_bytes());
                    }
                    self.stream.write_all(&out)?;
                    // Anything pipelined after STARTTLS is dropped, as a real server must.
                    self.buf.clear();
                    let SinkStream::Plain(tcp) =
                        std::mem::replace(&mut self.stream, SinkStream::Gone)
                    else {
                        return Err(End::Close);
                    };
                    let conn = rustls::ServerConnection::new(self.shared.tls.clone())
                        .map_err(io::Error::other)?;
                    self.stream = SinkStream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp)));
                    self.tls = true;
                    self.mail_from = None;
                    self.rcpt_to.clear();
                }
                "MAIL" => {
                    let r = script
                        .mail_reply
                        .clone()
                        .unwrap_or_else(|| "250 2.1.0 Ok".into());
                    if r.starts_with('2') {
                        self.mail_from = Some(line.clone());
                        self.rcpt_to.clear();
                    }
                    self.reply(&r)?;
                }
                "RCPT" => {
                    if self.mail_from.is_none() {
                        self.reply("503 5.5.1 Error: need MAIL command")?;
                        continue;
                    }
                    let address = line
                        .find('<')
                        .and_then(|s| {
                            line[s + 1..]
                                .find('>')
                                .map(|e| line[s + 1..s + 1 + e].to_string())
                        })
                        .unwrap_or_default();
                    let r = script
                        .rcpt_replies
                        .get(&address)
                        .cloned()
                        .unwrap_or_else(|| "250 2.1.5 Ok".into());
                    if r.starts_with('2') {
                        self.rcpt_to.push(line.clone());
                    }
                    self.reply(&r)?;
                }
                "DATA" => {
                    if self.rcpt_to.is_empty() {
                        let r = if self.mail_from.is_none() {
                            "503 5.5.1 Error: need RCPT command"
                        } else {
                            "554 5.5.1 Error: no valid recipients"
                        };
                        self.reply(r)?;
                        continue;
                    }
                    if let Some(r) = &script.data_reply {
                        self.reply(r)?;
                        continue;
                    }
                    self.reply("354 End data with <CR><LF>.<CR><LF>")?;
                    let wire = self.read_data()?;
                    if script.close_on.as_deref() == Some(".") {
                        return Err(End::Close);
                    }
                    if script.stall_on.as_deref() == Some(".") {
                        return Err(self.stall(script.stall_time));
                    }
                    let content = unstuff(&wire);
                    self.finish(&script, wire, content)?;
                }
                "BDAT" => {
                    let mut words = line.split_whitespace().skip(1);
                    let Some(size) = words.next().and_then(|w| w.parse::<usize>().ok()) else {
                        self.reply("501 5.5.4 Syntax: BDAT size [LAST]")?;
                        continue;
                    };
                    let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
                    while self.buf.len() < size {
                        if !self.fill()? {
                            return Ok(());
                        }
                    }
                    let chunk: Vec<u8> = self.buf.drain(..size).collect();
                    if self.rcpt_to.is_empty() {
                        self.reply("554 5.5.1 Error: no valid recipients")?;
                        continue;
                    }
                    if !last {
                        self.reply("250 2.0.0 Ok")?;
                        continue;
                    }
                    self.finish(&script, chunk.clone(), chunk)?;
                }
                "RSET" => {
                    self.mail_from = None;
                    self.rcpt_to.clear();
                    self.reply("250 2.0.0 Ok")?;
                }
                "NOOP" => self.reply("250 2.0.0 Ok")?,
                "QUIT" => {
                    self.reply("221 2.0.0 Bye")?;
                    return Ok(());
                }
                _ => self.reply("502 5.5.2 Error: command not recognized")?,
            }
            if script.hangup_after.as_deref() == Some(verb.as_str()) {
                return Err(End::Close);
            }
        }
        Ok(())
    }

    /// An AUTH exchange (the AUTH command line is `line`); returns the final reply.
    fn authenticate(&mut self, script: &SinkScript, line: &str) -> Result<String, End> {
        use base64::Engine;
        use base64::engine::general_purpose::STANDARD as B64;
        let Some(auth) = script.auth.as_ref().filter(|a| self.tls || !a.tls_only) else {
            return Ok("503 5.5.1 Error: authentication not enabled".into());
        };
        let mut words = line.split_whitespace().skip(1);
        let mech = words.next().unwrap_or("").to_ascii_uppercase();
        let initial = words.next().map(str::to_string);
        let decode = |s: &str| {
            String::from_utf8_lossy(&B64.decode(s.trim()).unwrap_or_default()).into_owned()
        };
        let (user, password) = match mech.as_str() {
            "PLAIN" => {
                let response = match initial {
                    Some(r) => r,
                    None => {
                        self.reply("334 ")?;
                        self.next_line()?
                    }
                };
                let plain = decode(&response);
                let mut parts = plain.split('\0').skip(1);
                (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                )
            }
            "LOGIN" => {
                self.reply("334 VXNlcm5hbWU6")?;
                let user = decode(&self.next_line()?);
                self.reply("334 UGFzc3dvcmQ6")?;
                (user, decode(&self.next_line()?))
            }
            _ => return Ok("504 5.5.4 Unrecognized authentication type".into()),
        };
        if user == auth.user && password == auth.password {
            self.auth = Some(user);
            Ok("235 2.7.0 Authentication successful".into())
        } else {
            Ok("535 5.7.8 Error: authentication failed: authentication failure".into())
        }
    }

    /// The next line of an exchange (recorded like a command).
    fn next_line(&mut self) -> Result<String, End> {
        let Some(line) = self.line()? else {
            return Err(End::Close);
        };
        let line = String::from_utf8_lossy(&line).into_owned();
        lock(&self.shared.received).commands.push(ReceivedCommand {
            connection: self.id,
            read: self.reads,
            line: line.clone(),
            tls: self.tls,
        });
        Ok(line)
    }

    /// Read a DATA body up to the line `.`; returns it with its final CRLF, without `.` CRLF.
    fn read_data(&mut self) -> Result<Vec<u8>, End> {
        let mut wire = Vec::new();
        loop {
            let Some(line) = self.line()? else {
                return Err(End::Close);
            };
            if line == b"." {
                return Ok(wire);
            }
            wire.extend_from_slice(&line);
            wire.extend_from_slice(b"\r\n");
        }
    }

    fn finish(&mut self, script: &SinkScript, wire: Vec<u8>, content: Vec<u8>) -> Result<(), End> {
        self.queued += 1;
        let r = script
            .end_reply
            .clone()
            .unwrap_or_else(|| format!("250 2.0.0 Ok: queued as {}-{}", self.id, self.queued));
        if r.starts_with('2') {
            let message = ReceivedMessage {
                connection: self.id,
                mail_from: self.mail_from.clone().unwrap_or_default(),
                rcpt_to: std::mem::take(&mut self.rcpt_to),
                wire,
                content,
                tls: self.tls,
                auth: self.auth.clone(),
            };
            lock(&self.shared.received).messages.push(message);
        }
        self.mail_from = None;
        self.rcpt_to.clear();
        self.reply(&r)
    }
}

/// Remove dot-stuffing from CRLF lines.
fn unstuff(wire: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(wire.len());
    let mut at_line_start = true;
    for &b in wire {
        if at_line_start && b == b'.' {
            at_line_start = false;
            continue;
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    out
}
