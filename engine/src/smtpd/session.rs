//! One SMTP session: the RFC 5321 state machine, from greeting to QUIT.
//!
//! For each command the session decides a reply; before a message is
//! acknowledged it is classified, validated and routed (every recipient
//! gets its transport and next hop), appended to this core's spool and made
//! durable — only then is `250 2.0.0 Ok: queued as <id>` sent.

use super::address::{decode_xtext, parse_envelope_address};
use super::anvil;
use super::cleanup::{Checked, Origin, cleanup};
use super::command::{Command, Param, parse_command};
use super::connection::{Connection, Line};
use super::data::{BareNewline, DataEnd, DataParser};
use super::reply::Reply;
use super::restrictions::{Actions, Facts, NameStatus, Outcome, Stage};
use super::settings::SmtpdSettings;
use crate::context::CoreContext;
use crate::routing::{AddressClass, RecipientCheck};
use corepost_spool::{
    BodyType, ClientInfo, Envelope, MailParams, QueueId, Recipient, RecipientState, Ret,
};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

mod events;
mod milter;
mod protocol;
mod tls_auth;
mod xclient;

/// The envelope under construction.
#[derive(Debug, Default)]
struct Transaction {
    queue_id: Option<QueueId>,
    /// The envelope sender after canonical rewriting (what is queued).
    sender: String,
    /// The sender as the client gave it (what restrictions and reject
    /// log lines see, as in Postfix).
    sender_given: String,
    /// RCPT commands answered 452 beyond smtpd_recipient_limit.
    overshoot: usize,
    params: MailParams,
    recipients: Vec<Recipient>,
    /// BDAT content so far.
    chunks: Option<Vec<u8>>,
    /// HOLD, DISCARD, FILTER, REDIRECT, PREPEND from access tables.
    actions: Actions,
    chunks_too_big: bool,
    /// The size of the message received, once it is (Postfix's
    /// `act_size`: the policy protocol's `size` at END-OF-MESSAGE).
    received_size: Option<u64>,
}

/// The verbs of the disconnect line, in Postfix's order.
const COUNTED: [&str; 15] = [
    "helo", "ehlo", "xclient", "starttls", "auth", "mail", "rcpt", "data", "bdat", "rset", "noop",
    "vrfy", "etrn", "quit", "unknown",
];

/// Per-verb (accepted, total) counters for the disconnect line: a fixed
/// array rather than a map, so a session allocates nothing for them.
#[derive(Debug, Default)]
struct Counters([(u32, u32); COUNTED.len()]);

impl Counters {
    /// Verbs outside [`COUNTED`] are not shown on the disconnect line, so
    /// they are not kept.
    fn count(&mut self, verb: &'static str, ok: bool) {
        if let Some(i) = COUNTED.iter().position(|v| *v == verb) {
            let e = &mut self.0[i];
            e.1 += 1;
            if ok {
                e.0 += 1;
            }
        }
    }

    /// How many times `verb` was given (accepted or not).
    fn given(&self, verb: &str) -> u32 {
        COUNTED
            .iter()
            .position(|v| *v == verb)
            .map_or(0, |i| self.0[i].1)
    }

    /// `ehlo=1 mail=1 rcpt=0/1 data=1 quit=1 commands=4/5`
    fn summary(&self) -> String {
        use std::fmt::Write;
        let mut line = String::with_capacity(64);
        let (mut ok, mut total) = (0, 0);
        for (verb, &(o, t)) in COUNTED.iter().zip(&self.0) {
            if t == 0 {
                continue;
            }
            ok += o;
            total += t;
            let _ = if o == t {
                write!(line, "{verb}={o} ")
            } else {
                write!(line, "{verb}={o}/{t} ")
            };
        }
        let _ = if ok == total {
            write!(line, "commands={ok}")
        } else {
            write!(line, "commands={ok}/{total}")
        };
        line
    }
}

/// The recipient as the restrictions see it.
struct RcptFacts {
    address: String,
    /// The class of its effective destination (see `restrictions::relay_class`).
    class: AddressClass,
    routed: bool,
    unlisted: Option<(u16, &'static str)>,
}

enum Flow {
    Continue,
    Close,
}

/// One client session.
pub struct Session {
    conn: Connection,
    core: Rc<CoreContext>,
    settings: std::sync::Arc<SmtpdSettings>,
    peer: SocketAddr,
    /// The local address the client connected to.
    local: Option<SocketAddr>,
    /// Admitted while the service was at its process limit.
    stress: bool,
    /// The upstream proxy's header could not be read: Postfix's warning.
    proxy_failure: Option<String>,
    client_name: String,
    reverse_client_name: String,
    name_status: NameStatus,
    reverse_name_status: NameStatus,
    /// With smtpd_delay_reject = no: the client restrictions' rejection at
    /// connect; every later command but QUIT gets 503.
    access_denied: Option<Reply>,
    /// Counts this connection in the per-client limits while it lives.
    _anvil: Option<anvil::Registration>,
    helo: Option<String>,
    esmtp: bool,
    tx: Option<Transaction>,
    errors: u32,
    junk: u32,
    counters: Counters,
    last_command: &'static str,
    /// Improper command pipelining was seen (Postfix's
    /// SMTPD_FLAG_ILL_PIPELINING; `reject_unauth_pipelining` tests it).
    ill_pipelining: bool,
    /// The size Postfix reports after BDAT LAST (see [`Session::accepted`]).
    bdat_size: Option<u64>,
    /// The ETRN argument while smtpd_etrn_restrictions are evaluated.
    etrn_domain: Option<String>,
    /// TLS and AUTH state (see `session/tls_auth.rs`).
    secure: tls_auth::SecureState,
    /// The session's milters (see `session/milter.rs`).
    milter: milter::MilterState,
}

impl Session {
    pub fn new(
        conn: Connection,
        core: Rc<CoreContext>,
        settings: std::sync::Arc<SmtpdSettings>,
        peer: SocketAddr,
        local: Option<SocketAddr>,
    ) -> Session {
        let addr = crate::smtpd::networks::canonical(peer.ip());
        Session {
            conn,
            core,
            settings,
            peer: SocketAddr::new(addr, peer.port()),
            local: local
                .map(|l| SocketAddr::new(crate::smtpd::networks::canonical(l.ip()), l.port())),
            stress: false,
            proxy_failure: None,
            client_name: "unknown".to_string(),
            reverse_client_name: "unknown".to_string(),
            name_status: NameStatus::NotFound,
            reverse_name_status: NameStatus::NotFound,
            access_denied: None,
            _anvil: None,
            helo: None,
            esmtp: false,
            tx: None,
            errors: 0,
            junk: 0,
            counters: Counters::default(),
            last_command: "CONNECT",
            ill_pipelining: false,
            etrn_domain: None,
            bdat_size: None,
            secure: tls_auth::SecureState::default(),
            milter: milter::MilterState::default(),
        }
    }

    /// The upstream proxy's header failed (`haproxy read: ...`): the
    /// session logs it and hangs up with 421, as Postfix does.
    pub fn proxy_failed(mut self, warning: Option<String>) -> Session {
        self.proxy_failure = warning;
        self
    }

    /// Mark the session as admitted under stress (its service was at its
    /// process limit).
    pub fn under_stress(mut self, stress: bool) -> Session {
        self.stress = stress;
        self
    }

    fn log(&self, message: &str) {
        self.core.log.line(&self.settings.program, message);
    }

    fn client(&self) -> String {
        format!("{}[{}]", self.client_name, self.peer.ip())
    }

    /// Run the session to the end.
    pub async fn run(mut self) {
        let hangup = self.proxy_failure.take();
        if let Some(w) = &hangup {
            self.log(&format!("warning: {w}"));
        }
        let names = self.settings.policy.dns.client_names(self.peer.ip()).await;
        self.client_name = names.name;
        self.name_status = names.name_status;
        self.reverse_client_name = names.reverse_name;
        self.reverse_name_status = names.reverse_status;
        self.log(&format!("connect from {}", self.client()));
        let (registration, exceeded) = anvil::connect(
            &self.settings.limits,
            &self.settings.service,
            self.peer.ip(),
            &self.client(),
            &self.settings.myhostname,
        );
        self._anvil = Some(registration);
        if hangup.is_none() && self.settings.tls.wrappermode && !self.wrapper_handshake().await {
            self.conn.close().await;
            self.log(&format!(
                "disconnect from {} {}",
                self.client(),
                self.counters.summary()
            ));
            return;
        }
        let mut greeting = if hangup.is_some() {
            // Without the proxy's information there is no audit trail and
            // no access control: hang up (Postfix's SMTPD_FLAG_HANGUP).
            Reply::new(
                421,
                "4.3.0",
                format!("{} Server local error", self.settings.myhostname),
            )
        } else if let Some(x) = exceeded {
            self.log(&format!("warning: {}", x.warning));
            x.reply
        } else if self.core.shutdown.is_triggered() {
            Reply::new(
                421,
                "4.3.2",
                format!(
                    "{} Service shutting down, closing transmission channel",
                    self.settings.myhostname
                ),
            )
        } else {
            Reply::new(220, "", self.settings.banner.clone())
        };
        if greeting.code == 220
            && !self.settings.delay_reject
            && let Some(reply) = self
                .restrict(
                    &[("smtpd_client_restrictions", Stage::Client)],
                    None,
                    "CONNECT",
                )
                .await
        {
            self.log_reject("CONNECT", &reply, None);
            self.access_denied = Some(reply.clone());
            greeting = reply;
        }
        if greeting.code == 220
            && let Some(reply) = self.milter_connect().await
        {
            greeting = reply;
        }
        if greeting.code == 220
            && self.conn.input_waiting()
            && let Flow::Close = self.talk_before_greeting().await
        {
            let _ = self.conn.flush(self.settings.timeout).await;
            self.conn.close().await;
            self.log(&format!(
                "disconnect from {} {}",
                self.client(),
                self.counters.summary()
            ));
            return;
        }
        let stop = greeting.code == 421;
        greeting.write_to(self.conn.out());
        if self.conn.flush(self.settings.timeout).await.is_ok() && !stop {
            self.command_loop().await;
        }
        self.milter_quit().await;
        self.conn.close().await;
        self.log(&format!(
            "disconnect from {} {}",
            self.client(),
            self.counters.summary()
        ));
    }

    async fn command_loop(&mut self) {
        loop {
            match self.conn.next_line(self.settings.line_length_limit) {
                Line::Complete { len, consumed } => {
                    let line = self.conn.buffered()[..len].to_vec();
                    self.conn.consume(consumed);
                    // Ended by LF alone: consumed holds no CR.
                    if consumed == len + 1 && self.rejects_bare_newline() {
                        self.bare_newline_command();
                        let _ = self.conn.flush(self.settings.timeout).await;
                        return;
                    }
                    if let Flow::Close = self.handle_line(&line).await {
                        let _ = self.conn.flush(self.settings.timeout).await;
                        return;
                    }
                }
                Line::TooLong(head) => {
                    // Postfix carries out the command cut at
                    // line_length_limit, with a warning.
                    let shown: String = head
                        .iter()
                        .take(30)
                        .map(|&b| {
                            if (0x20..0x7f).contains(&b) {
                                b as char
                            } else {
                                '?'
                            }
                        })
                        .collect();
                    self.log(&format!(
                        "warning: {}: request longer than {}: {shown}...",
                        self.client(),
                        self.settings.line_length_limit
                    ));
                    if let Flow::Close = self.handle_line(&head).await {
                        let _ = self.conn.flush(self.settings.timeout).await;
                        return;
                    }
                }
                Line::Incomplete => {
                    // Nothing more to answer: send the pipelined group's
                    // replies in one write, then wait for input.
                    if self.conn.flush(self.settings.timeout).await.is_err() {
                        self.log(&format!(
                            "lost connection after {} from {}",
                            self.last_command,
                            self.client()
                        ));
                        return;
                    }
                    if self.core.shutdown.is_triggered() {
                        self.shutting_down();
                        let _ = self.conn.flush(self.settings.timeout).await;
                        return;
                    }
                    let read = futures_lite::future::or(
                        async { Some(self.conn.fill(self.settings.timeout).await) },
                        async {
                            self.core.shutdown.wait().await;
                            None
                        },
                    );
                    match read.await {
                        None => {
                            self.shutting_down();
                            let _ = self.conn.flush(self.settings.timeout).await;
                            return;
                        }
                        Some(Ok(0)) => {
                            self.log(&format!(
                                "lost connection after {} from {}",
                                self.last_command,
                                self.client()
                            ));
                            return;
                        }
                        Some(Ok(_)) => {}
                        Some(Err(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                            self.log(&format!(
                                "timeout after {} from {}",
                                self.last_command,
                                self.client()
                            ));
                            Reply::new(
                                421,
                                "4.4.2",
                                format!("{} Error: timeout exceeded", self.settings.myhostname),
                            )
                            .write_to(self.conn.out());
                            let _ = self.conn.flush(Duration::from_secs(5)).await;
                            return;
                        }
                        Some(Err(_)) => {
                            self.log(&format!(
                                "lost connection after {} from {}",
                                self.last_command,
                                self.client()
                            ));
                            return;
                        }
                    }
                }
            }
        }
    }

    fn shutting_down(&mut self) {
        Reply::new(
            421,
            "4.3.2",
            format!(
                "{} Service shutting down, closing transmission channel",
                self.settings.myhostname
            ),
        )
        .write_to(self.conn.out());
    }

    /// Queue a reply.
    fn reply(&mut self, reply: Reply) {
        reply.write_to(self.conn.out());
    }

    /// Queue an error reply, counting it against the error limits.
    /// The end of a message the session answers for: counted, and `250
    /// 2.0.0 Ok: queued as <id>` — also for DISCARD, which queues nothing
    /// but must look accepted to the client.
    /// After BDAT LAST Postfix also says how many bytes: `Ok: <n> bytes
    /// queued as <id>`.
    fn accepted(&mut self, verb: &'static str, queue_id: QueueId) {
        self.counters.count(verb, true);
        let text = match self.bdat_size.take() {
            Some(n) if verb == "bdat" => format!("Ok: {n} bytes queued as {queue_id}"),
            _ => format!("Ok: queued as {queue_id}"),
        };
        self.reply(Reply::new(250, "2.0.0", text));
    }

    /// As Postfix: the error's reply goes out, then — at the hard error
    /// limit — `421 Error: too many errors` and the end of the session.
    async fn error(&mut self, reply: Reply) -> Flow {
        self.errors += 1;
        if self.errors >= self.settings.soft_error_limit
            && self.errors < self.settings.hard_error_limit
            && !self.settings.error_sleep.is_zero()
        {
            let _ = self.conn.flush(self.settings.timeout).await;
            glommio::timer::sleep(self.settings.error_sleep).await;
        }
        self.reply(reply);
        if self.errors >= self.settings.hard_error_limit {
            self.log(&format!(
                "too many errors after {} from {}",
                self.last_command,
                self.client()
            ));
            self.reply(Reply::new(
                421,
                "4.7.0",
                format!("{} Error: too many errors", self.settings.myhostname),
            ));
            return Flow::Close;
        }
        Flow::Continue
    }

    async fn handle_line(&mut self, line: &[u8]) -> Flow {
        let command = match parse_command(line, &self.settings.noop_commands) {
            Ok(c) => c,
            Err(e) => {
                if e.verb.is_none()
                    && let Some(reply) = self.milter_unknown(line).await
                {
                    self.counters.count("unknown", false);
                    return self.error(reply).await;
                }
                return self.syntax_error(e).await;
            }
        };
        if let Command::Ignored = command {
            // smtpd_noop_commands: Postfix answers and counts nothing but
            // the junk limit.
            let _ = self.junk(Reply::new(250, "2.0.0", "Ok"));
            self.reply(Reply::new(250, "2.0.0", "Ok"));
            return Flow::Continue;
        }
        let verb = command.verb();
        self.last_command = verb_upper(verb);
        if let Flow::Close = self.check_pipelining(&command) {
            return Flow::Close;
        }
        if self.access_denied.is_some() && !matches!(command, Command::Quit) {
            self.counters.count(verb, false);
            let reply = Reply::new(
                503,
                "5.7.0",
                format!("Error: access denied for {}", self.client()),
            );
            return self.error(reply).await;
        }
        let result = match command {
            Command::Helo(host) => self.helo_checked(host, false).await,
            Command::Ehlo(host) => {
                self.prepare_auth().await;
                self.helo_checked(host, true).await
            }
            Command::Mail {
                path,
                params,
                bracketed,
            } => self.mail(path, params, bracketed).await,
            Command::Rcpt {
                path,
                params,
                bracketed,
            } => self.rcpt(path, params, bracketed).await,
            Command::Data => return self.data().await,
            Command::Bdat { size, last } => return self.bdat(size, last).await,
            Command::Rset => {
                if self.tx.is_some() {
                    self.milter_abort().await;
                }
                self.tx = None;
                Ok(Reply::new(250, "2.0.0", "Ok"))
            }
            Command::Noop => self.junk(Reply::new(250, "2.0.0", "Ok")),
            Command::Quit => {
                self.counters.count("quit", true);
                self.reply(Reply::new(221, "2.0.0", "Bye"));
                return Flow::Close;
            }
            Command::Vrfy(arg) => self.vrfy(&arg).await,
            Command::Etrn(arg) => self.etrn(&arg).await,
            Command::Xclient(arg) => match self.xclient(&arg) {
                // Postfix counts even a successful XCLIENT as not
                // accepted in the disconnect line.
                Ok(reply) => {
                    self.counters.count("xclient", false);
                    self.reply(reply);
                    return Flow::Continue;
                }
                Err(reply) => Err(reply),
            },
            Command::Ignored => Ok(Reply::new(250, "2.0.0", "Ok")),
            Command::StartTls => return self.starttls().await,
            Command::Auth(arg) => return self.auth(&arg).await,
        };
        match result {
            Ok(reply) => {
                self.counters.count(verb, true);
                self.reply(reply);
                Flow::Continue
            }
            Err(reply) => {
                self.counters.count(verb, false);
                let flow = self.error(reply).await;
                if self.milter.hangup {
                    return Flow::Close;
                }
                flow
            }
        }
    }

    /// A command line that did not parse. Postfix judges the session state
    /// before the syntax; a bad BDAT ends the session (521).
    async fn syntax_error(&mut self, e: super::command::SyntaxError) -> Flow {
        self.counters.count(e.verb.unwrap_or("unknown"), false);
        self.last_command = e.verb.map_or("UNKNOWN", verb_upper);
        let reply = self.sequence_error(e.verb).unwrap_or(e.reply);
        if reply.code == 521 {
            self.reply(reply);
            return Flow::Close;
        }
        self.error(reply).await
    }

    /// The out-of-sequence reply for a MAIL, RCPT or DATA command, which
    /// Postfix gives before looking at the command's syntax.
    fn sequence_error(&self, verb: Option<&'static str>) -> Option<Reply> {
        match verb? {
            "mail" if self.settings.helo_required && self.helo.is_none() => {
                Some(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"))
            }
            "mail" if self.tx.is_some() => {
                Some(Reply::new(503, "5.5.1", "Error: nested MAIL command"))
            }
            "rcpt" if self.tx.is_none() => {
                Some(Reply::new(503, "5.5.1", "Error: need MAIL command"))
            }
            "data" => self.content_refusal(false),
            _ => None,
        }
    }

    /// NOOP, VRFY and friends beyond smtpd_junk_command_limit count as errors.
    fn junk(&mut self, reply: Reply) -> Result<Reply, Reply> {
        self.junk += 1;
        if self.junk > self.settings.junk_command_limit {
            self.errors += 1;
        }
        Ok(reply)
    }

    fn helo(&mut self, host: String, esmtp: bool) -> Reply {
        self.helo = Some(host);
        self.esmtp = esmtp;
        self.tx = None;
        if !esmtp {
            return Reply::new(250, "", self.settings.myhostname.clone());
        }
        let s = &self.settings;
        let mut lines = vec![s.myhostname.clone()];
        let mut keywords = vec!["PIPELINING".to_string()];
        if s.message_size_limit != u64::MAX {
            keywords.push(format!("SIZE {}", s.message_size_limit));
        } else {
            keywords.push("SIZE".to_string());
        }
        if !s.disable_vrfy {
            keywords.push("VRFY".into());
        }
        keywords.push("ETRN".into());
        self.advertise(&mut keywords);
        if self.xclient_allowed() {
            keywords.push(xclient::KEYWORD.into());
        }
        keywords.extend(["ENHANCEDSTATUSCODES", "8BITMIME", "DSN"].map(String::from));
        if s.smtputf8 {
            keywords.push("SMTPUTF8".into());
        }
        keywords.extend(["CHUNKING", "BINARYMIME"].map(String::from));
        let milter_rejected = self.milter.ehlo_rejected;
        lines.extend(keywords.into_iter().filter(|k| {
            let word = k.split(' ').next().unwrap_or(k);
            !s.discard_ehlo.iter().any(|d| d == word)
                && (!milter_rejected || word == "ENHANCEDSTATUSCODES")
        }));
        Reply::new(250, "", lines.join("\n"))
    }

    /// HELO/EHLO, with smtpd_helo_restrictions at once when
    /// smtpd_delay_reject = no.
    async fn helo_checked(&mut self, host: String, esmtp: bool) -> Result<Reply, Reply> {
        if !self.settings.delay_reject {
            let previous = self.helo.replace(host.clone());
            let was_esmtp = std::mem::replace(&mut self.esmtp, esmtp);
            let verdict = self
                .restrict(
                    &[("smtpd_helo_restrictions", Stage::Helo)],
                    None,
                    if esmtp { "EHLO" } else { "HELO" },
                )
                .await;
            if let Some(reply) = verdict {
                self.log_reject(if esmtp { "EHLO" } else { "HELO" }, &reply, None);
                self.helo = previous;
                self.esmtp = was_esmtp;
                return Err(reply);
            }
        }
        if let Some(reply) = self.milter_helo(&host, esmtp).await {
            return Err(reply);
        }
        Ok(self.helo(host, esmtp))
    }

    fn facts<'a>(&'a self, recipient: Option<&'a RcptFacts>, command: &'a str) -> Facts<'a> {
        let tx = self.tx.as_ref();
        Facts {
            client_addr: self.peer.ip(),
            client_name: &self.client_name,
            client_name_status: self.name_status,
            reverse_client_name: &self.reverse_client_name,
            reverse_name_status: self.reverse_name_status,
            helo: self.helo.as_deref(),
            sender: tx.map(|t| t.sender_given.as_str()),
            recipient: recipient.map(|r| r.address.as_str()),
            recipient_class: recipient.map(|r| r.class),
            recipient_routed: recipient.is_some_and(|r| r.routed),
            sasl_user: self.secure.sasl.as_ref().map(|a| a.username.as_str()),
            esmtp: self.esmtp,
            pipelined: self.ill_pipelining,
            input_pending: self.settings.policy.needs_pending_input() && self.conn.input_waiting(),
            command,
            queue_id: "",
            instance: "",
            recipient_count: tx.map_or(0, |t| t.recipients.len()),
            size: tx
                .and_then(|t| t.received_size.or(t.params.size))
                .unwrap_or(0),
            sender_unlisted: tx
                .filter(|t| !t.sender.is_empty() && self.settings.policy.needs_unlisted().0)
                .and_then(|t| super::restrictions::unlisted(&self.settings.router, &t.sender)),
            recipient_unlisted: recipient.and_then(|r| r.unlisted),
            client_port: self.peer.port(),
            server: self.local,
            sasl_method: self.secure.sasl.as_ref().map(|a| a.method.as_str()),
            etrn_domain: self.etrn_domain.as_deref(),
            stress: self.stress,
            tls: self.secure.tls_summary.as_ref(),
        }
    }

    /// Evaluate lists in order; the first reject wins. Logs warnings and
    /// access-table events, keeps message actions in the transaction.
    async fn restrict(
        &mut self,
        lists: &[(&str, Stage)],
        recipient: Option<&RcptFacts>,
        command: &str,
    ) -> Option<Reply> {
        let mut out = Outcome::default();
        let queue_id = self
            .tx
            .as_ref()
            .and_then(|t| t.queue_id)
            .map(|id| id.to_string())
            .unwrap_or_default();
        // Stable for one transaction: the session's port and its MAIL count.
        let mails = self.counters.given("mail");
        let instance = format!("{:x}.{:x}", self.peer.port(), mails);
        let verdict = {
            let mut facts = self.facts(recipient, command);
            facts.queue_id = &queue_id;
            facts.instance = &instance;
            self.settings.policy.check(lists, &facts, &mut out).await
        };
        let verdict = verdict.map(|r| {
            if self.settings.soft_bounce {
                r.soft_bounced()
            } else {
                r
            }
        });
        for w in &out.warnings {
            self.log(&format!("warning: {w}"));
        }
        let to = recipient.map(|r| r.address.as_str());
        for (kind, text) in &out.events {
            self.log_event(kind, command, text, to);
        }
        if let Some(tx) = &mut self.tx {
            tx.actions.merge(out.actions);
        }
        verdict
    }

    /// Log a rejection the way Postfix does.
    fn log_reject(&self, command: &str, reply: &Reply, recipient: Option<&str>) {
        crate::metrics::rejected(command, reply.code, reply.status, &reply.text);
        self.log_event("reject", command, &reply.summary(), recipient);
        if crate::events::enabled() {
            self.reject_event(command, reply, recipient);
        }
    }

    /// `NOQUEUE: reject: RCPT from client: text; from=<> to=<> proto=ESMTP helo=<>`
    /// (also `warn:`, `hold:`, `discard:`, `filter:`, `redirect:`).
    fn log_event(&self, kind: &str, command: &str, text: &str, recipient: Option<&str>) {
        let id = self
            .tx
            .as_ref()
            .and_then(|t| t.queue_id)
            .map_or_else(|| "NOQUEUE".to_string(), |id| id.to_string());
        let mut line = format!("{id}: {kind}: {command} from {}: {text}", self.client());
        if let Some(tx) = &self.tx {
            line.push_str(&format!("; from=<{}>", tx.sender_given));
        } else {
            line.push(';');
        }
        if let Some(r) = recipient {
            line.push_str(&format!(" to=<{r}>"));
        }
        line.push_str(&format!(
            " proto={}",
            if self.esmtp { "ESMTP" } else { "SMTP" }
        ));
        // Postfix leaves helo=<> out before HELO/EHLO.
        if let Some(helo) = &self.helo {
            line.push_str(&format!(" helo=<{helo}>"));
        }
        self.log(&line);
    }

    /// Postfix's `smtpd_check_queue`: the free bytes of the queue's file
    /// system when mail must be refused — no more than `queue_minfree`,
    /// or not more than 1.5 times `message_size_limit` — else `None`.
    /// Deliveries go on (they free space); only new mail waits. The figure
    /// may be up to a second old (one `statfs` per core and second, see
    /// `context::QueueSpace`).
    fn queue_space_short(&self) -> Option<u64> {
        let free = self.core.queue_free_space().ok()?;
        // u64::MAX: message_size_limit = 0, no limit.
        let limit = self.settings.message_size_limit;
        let short = free <= self.settings.queue_minfree
            || (limit != u64::MAX && limit as f64 >= free as f64 / 1.5);
        short.then_some(free)
    }

    async fn mail(
        &mut self,
        path: String,
        params: Vec<Param>,
        bracketed: bool,
    ) -> Result<Reply, Reply> {
        if self.settings.helo_required && self.helo.is_none() {
            return Err(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return Err(Reply::new(503, "5.5.1", "Error: nested MAIL command"));
        }
        if let Some(reply) = self.tls_required() {
            return Err(reply);
        }
        let mut mp = MailParams::default();
        for p in &params {
            let v = p.value.as_deref();
            match (p.keyword.as_str(), v) {
                ("SIZE", Some(v)) => {
                    let size: u64 = v
                        .parse()
                        .map_err(|_| Reply::new(501, "5.5.4", "Bad message size syntax"))?;
                    if size > self.settings.message_size_limit {
                        return Err(Reply::new(552, "5.3.4", "Message size exceeds fixed limit"));
                    }
                    mp.size = Some(size);
                }
                ("BODY", Some(v)) => {
                    mp.body = match v.to_ascii_uppercase().as_str() {
                        "7BIT" => BodyType::SevenBit,
                        "8BITMIME" => BodyType::EightBitMime,
                        "BINARYMIME" => BodyType::BinaryMime,
                        _ => {
                            return Err(Reply::new(
                                555,
                                "5.5.4",
                                format!("Unsupported option: {}", p.raw),
                            ));
                        }
                    }
                }
                ("SMTPUTF8", None) if self.settings.smtputf8 => mp.smtputf8 = true,
                // RFC 4954 §5: accepted (and not passed on) when AUTH is on.
                ("AUTH", Some(_)) if self.settings.sasl.enabled => {}
                // Given twice: a syntax error, as in Postfix.
                ("RET", Some(v)) => {
                    mp.ret = Some(match v.to_ascii_uppercase().as_str() {
                        "FULL" if mp.ret.is_none() => Ret::Full,
                        "HDRS" if mp.ret.is_none() => Ret::Headers,
                        _ => return Err(Reply::new(501, "5.5.4", "Bad RET parameter syntax")),
                    })
                }
                ("ENVID", Some(v)) => {
                    let id = decode_xtext(v)
                        .filter(|id| id.len() <= 100 && mp.envid.is_none())
                        .ok_or_else(|| Reply::new(501, "5.5.4", "Bad ENVID parameter syntax"))?;
                    mp.envid = Some(id);
                }
                _ => {
                    return Err(Reply::new(
                        555,
                        "5.5.4",
                        format!("Unsupported option: {}", p.raw),
                    ));
                }
            }
        }
        let (sender_given, sender) = if path.is_empty() && bracketed {
            (String::new(), String::new())
        } else {
            let given = self.envelope_address("MAIL", &path, bracketed, mp.smtputf8)?;
            let qualified = self.settings.qualify.qualify(&given);
            (given, qualified)
        };
        // Back-pressure: slow down, then refuse, when this core's queue is
        // over its backlog.
        if self.core.queued() > self.settings.backlog_limit {
            if !self.settings.in_flow_delay.is_zero() {
                let _ = self.conn.flush(self.settings.timeout).await;
                glommio::timer::sleep(self.settings.in_flow_delay).await;
            }
            if self.core.queued() > self.settings.backlog_limit {
                return Err(Reply::new(451, "4.3.1", "Insufficient system storage"));
            }
        }
        if let Some(free) = self.queue_space_short() {
            let reply = Reply::new(452, "4.3.1", "Insufficient system storage");
            self.log_reject("MAIL", &reply, None);
            self.log(&format!(
                "warning: not enough free space in mail queue: {free} bytes < 1.5*message size limit"
            ));
            return Err(reply);
        }
        self.tx = Some(Transaction {
            sender,
            sender_given,
            params: mp,
            ..Transaction::default()
        });
        if let Some(x) = anvil::record(
            &self.settings.limits,
            &self.settings.service,
            self.peer.ip(),
            &self.client(),
            anvil::Event::Message,
            &|l| self.log(l),
        )
        .await
        {
            self.log(&format!("warning: {}", x.warning));
            self.tx = None;
            return Err(x.reply);
        }
        if !self.settings.delay_reject
            && let Some(reply) = self
                .restrict(
                    &[("smtpd_sender_restrictions", Stage::Sender)],
                    None,
                    "MAIL",
                )
                .await
        {
            self.log_reject("MAIL", &reply, None);
            self.tx = None;
            return Err(reply);
        }
        if let Err(reply) = self.milter_mail(&path, bracketed, &params).await {
            self.tx = None;
            return Err(reply);
        }
        Ok(Reply::new(250, "2.1.0", "Ok"))
    }

    async fn rcpt(
        &mut self,
        path: String,
        params: Vec<Param>,
        bracketed: bool,
    ) -> Result<Reply, Reply> {
        let Some(tx) = &mut self.tx else {
            return Err(Reply::new(503, "5.5.1", "Error: need MAIL command"));
        };
        if tx.recipients.len() >= self.settings.recipient_limit {
            // Postfix: the first smtpd_recipient_overshoot_limit of these
            // are no errors, so a big list does not end the session.
            tx.overshoot += 1;
            let reply = Reply::new(452, "4.5.3", "Error: too many recipients");
            return if tx.overshoot <= self.settings.recipient_overshoot_limit {
                Ok(reply)
            } else {
                Err(reply)
            };
        }
        let smtputf8 = tx.params.smtputf8;
        let (notify, orcpt) = rcpt_params(&params)?;
        let given = self.envelope_address("RCPT", &path, bracketed, smtputf8)?;
        let address = self.settings.qualify.qualify(&given);
        let (class, _) = self.recipient_verdict(&given, &address, "RCPT").await?;
        let settings = std::sync::Arc::clone(&self.settings);
        let sender = self.tx.as_ref().map_or("", |t| t.sender.as_str());
        let route = settings
            .router
            .route(sender, &address, class)
            .map_err(|e| lookup_failure(&given, e))?;
        self.milter_rcpt(&given, (&path, bracketed, &params), &route)
            .await?;
        let first = self.tx.as_ref().is_some_and(|t| t.queue_id.is_none());
        if first {
            let id = self.core.new_queue_id();
            if let Some(tx) = &mut self.tx {
                tx.queue_id = Some(id);
            }
            self.log(&format!(
                "{id}: client={}{}",
                self.client(),
                self.sasl_log()
            ));
        }
        if let Some(tx) = &mut self.tx {
            tx.recipients.push(Recipient {
                address,
                orcpt,
                notify,
                transport: route.transport,
                nexthop: route.nexthop,
                state: RecipientState::Pending,
                original: None,
            });
        }
        Ok(Reply::new(250, "2.1.5", "Ok"))
    }

    /// A MAIL/RCPT/VRFY address as the client gave it (a bare local part
    /// is accepted, as in Postfix); syntax errors get Postfix's replies
    /// and warning.
    fn envelope_address(
        &self,
        command: &str,
        path: &str,
        bracketed: bool,
        smtputf8: bool,
    ) -> Result<String, Reply> {
        let parsed = if self.settings.strict_rfc821 && !bracketed {
            Err(Reply::new(501, "", "not in <>"))
        } else {
            parse_envelope_address(path, smtputf8).map(|m| m.address())
        };
        parsed.map_err(|e| {
            if e.code != 501 {
                return e;
            }
            let shown = if bracketed {
                format!("<{path}>")
            } else {
                path.to_string()
            };
            self.log(&format!(
                "warning: Illegal address syntax from {} in {command} command: {shown}",
                self.client()
            ));
            if command == "MAIL" {
                Reply::new(501, "5.1.7", "Bad sender address syntax")
            } else {
                Reply::new(501, "5.1.3", "Bad recipient address syntax")
            }
        })
    }

    /// What RCPT and VRFY share (Postfix's smtpd_check_rcpt): the
    /// restriction lists, then the recipient tables of the address class.
    /// `given` is the address as the client wrote it, `address` the
    /// qualified one. A bare `postmaster` passes without restrictions
    /// (RFC 5321 §4.5.1, as Postfix does).
    async fn recipient_verdict(
        &mut self,
        given: &str,
        address: &str,
        command: &str,
    ) -> Result<(AddressClass, bool), Reply> {
        let settings = std::sync::Arc::clone(&self.settings);
        let router = &settings.router;
        let failure = |e| lookup_failure(given, e);
        let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
        let class = if domain.is_empty() {
            AddressClass::Local
        } else {
            router.classify(domain).map_err(failure)?
        };
        if given.eq_ignore_ascii_case("postmaster") {
            return Ok((class, true));
        }
        if command == "RCPT"
            && let Some(x) = anvil::record(
                &self.settings.limits,
                &self.settings.service,
                self.peer.ip(),
                &self.client(),
                anvil::Event::Recipient,
                &|l| self.log(l),
            )
            .await
        {
            self.log(&format!("warning: {}", x.warning));
            return Err(x.reply);
        }
        let (relay_class, routed) =
            super::restrictions::relay_class(router, address, class).map_err(failure)?;
        let rcpt = RcptFacts {
            address: given.to_string(),
            class: relay_class,
            routed,
            unlisted: if settings.policy.needs_unlisted().1 {
                super::restrictions::unlisted(router, address)
            } else {
                None
            },
        };
        let lists = [
            ("smtpd_client_restrictions", Stage::Client),
            ("smtpd_helo_restrictions", Stage::Helo),
            ("smtpd_sender_restrictions", Stage::Sender),
            ("smtpd_relay_restrictions", Stage::Relay),
            ("smtpd_recipient_restrictions", Stage::Recipient),
        ];
        let lists = if self.settings.delay_reject {
            &lists[..]
        } else {
            &lists[3..]
        };
        let mut verdict = self.restrict(lists, Some(&rcpt), command).await;
        // relocated_maps (Postfix: before the unknown-recipient check).
        if verdict.is_none()
            && self.settings.reject_unlisted_recipient
            && !settings.relocated_maps.is_empty()
            && let Some(moved) = settings
                .rewriter
                .lookup(router, &settings.relocated_maps, address)
                .map_err(failure)?
        {
            verdict = Some(Reply::new(
                550,
                "5.1.6",
                format!("<{given}>: Recipient address rejected: User has moved to {moved}"),
            ));
        }
        // A recipient that canonical_maps rewrite counts as known.
        if verdict.is_none()
            && self.settings.reject_unlisted_recipient
            && let RecipientCheck::Unknown { code, table } =
                router.check_recipient(address, class).map_err(failure)?
            && !settings
                .rewriter
                .has_canonical_recipient(router, address)
                .map_err(failure)?
        {
            verdict = Some(Reply::new(
                code,
                if code >= 500 { "5.1.1" } else { "4.1.1" },
                format!("<{given}>: Recipient address rejected: User unknown in {table}"),
            ));
        }
        if self.settings.soft_bounce {
            verdict = verdict.map(Reply::soft_bounced);
        }
        match verdict {
            Some(reply) => {
                self.log_reject(command, &reply, Some(given));
                Err(reply)
            }
            None => Ok((class, false)),
        }
    }

    /// Why DATA/BDAT cannot start, if it cannot.
    fn content_refusal(&self, bdat: bool) -> Option<Reply> {
        match &self.tx {
            None => Some(Reply::new(503, "5.5.1", "Error: need RCPT command")),
            // Postfix: in a transaction, with or without RCPT attempts.
            Some(tx) if tx.recipients.is_empty() => {
                Some(Reply::new(554, "5.5.1", "Error: no valid recipients"))
            }
            Some(tx) if !bdat && tx.params.body == BodyType::BinaryMime => Some(Reply::new(
                503,
                "5.5.1",
                "Error: BDAT is required with BODY=BINARYMIME",
            )),
            Some(tx) if !bdat && tx.chunks.is_some() => {
                Some(Reply::new(503, "5.5.1", "Error: DATA after BDAT"))
            }
            _ => None,
        }
    }

    async fn data(&mut self) -> Flow {
        if let Some(reply) = self.content_refusal(false) {
            self.counters.count("data", false);
            return self.error(reply).await;
        }
        if let Some(reply) = self
            .restrict(&[("smtpd_data_restrictions", Stage::Data)], None, "DATA")
            .await
        {
            // Postfix names the last recipient.
            let last = self
                .tx
                .as_ref()
                .and_then(|t| t.recipients.last())
                .map(|r| r.address.clone());
            self.log_reject("DATA", &reply, last.as_deref());
            self.counters.count("data", false);
            return self.error(reply).await;
        }
        if let Some(reply) = self.milter_data().await {
            self.counters.count("data", false);
            let flow = self.error(reply).await;
            return if self.milter.hangup {
                Flow::Close
            } else {
                flow
            };
        }
        self.reply(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"));
        if self.conn.flush(self.settings.timeout).await.is_err() {
            return Flow::Close;
        }
        let mode = if self.settings.bare_newline != BareNewline::Allow
            && self
                .settings
                .bare_newline_exclusions
                .contains(self.peer.ip())
        {
            BareNewline::Allow
        } else {
            self.settings.bare_newline
        };
        let mut parser = DataParser::new(
            mode,
            self.settings.message_size_limit,
            Vec::with_capacity(8192),
        );
        self.conn.expect_bulk();
        let end = loop {
            let (used, end) = parser.feed(self.conn.buffered());
            self.conn.consume(used);
            if let Some(end) = end {
                break end;
            }
            match self.conn.fill(self.settings.timeout).await {
                Ok(0) | Err(_) => {
                    self.log(&format!(
                        "lost connection after DATA ({} bytes) from {}",
                        parser.into_body().len(),
                        self.client()
                    ));
                    self.tx = None;
                    return Flow::Close;
                }
                Ok(_) => {}
            }
        };
        let reject_bare = parser.rejects_bare_newline();
        let body = parser.into_body();
        self.conn.shrink();
        let flow = self.finish_message(end, body, reject_bare, "data").await;
        self.milter_end_of_transaction(flow).await
    }

    async fn bdat(&mut self, size: u64, last: bool) -> Flow {
        // The chunk is read whatever happens, to stay in sync.
        let refusal = self.content_refusal(true);
        let limit = self.settings.message_size_limit;
        let mut remaining = size;
        let mut chunk = Vec::new();
        let keep = refusal.is_none()
            && !self.tx.as_ref().is_some_and(|t| t.chunks_too_big)
            && self
                .tx
                .as_ref()
                .and_then(|t| t.chunks.as_ref())
                .map_or(0, |c| c.len() as u64)
                .saturating_add(size)
                <= limit;
        self.conn.expect_bulk();
        while remaining > 0 {
            if self.conn.buffered().is_empty() {
                match self.conn.fill(self.settings.timeout).await {
                    Ok(0) | Err(_) => {
                        self.log(&format!(
                            "lost connection after BDAT from {}",
                            self.client()
                        ));
                        self.tx = None;
                        return Flow::Close;
                    }
                    Ok(_) => {}
                }
            }
            let take = (remaining as usize).min(self.conn.buffered().len());
            if keep {
                chunk.extend_from_slice(&self.conn.buffered()[..take]);
            }
            self.conn.consume(take);
            remaining -= take as u64;
        }
        if let Some(reply) = refusal {
            self.counters.count("bdat", false);
            return self.error(reply).await;
        }
        // The milters' DATA event comes with the first chunk; a refusal
        // ends the transaction.
        if self.tx.as_ref().is_some_and(|t| t.chunks.is_none())
            && let Some(reply) = self.milter_data().await
        {
            self.milter_abort().await;
            self.tx = None;
            self.counters.count("bdat", false);
            let flow = self.error(reply).await;
            return if self.milter.hangup {
                Flow::Close
            } else {
                flow
            };
        }
        let Some(tx) = self.tx.as_mut() else {
            return Flow::Continue;
        };
        let chunks = tx.chunks.get_or_insert_with(Vec::new);
        if keep {
            chunks.extend_from_slice(&chunk);
        } else {
            tx.chunks_too_big = true;
        }
        if !last {
            self.counters.count("bdat", true);
            self.reply(Reply::new(250, "2.0.0", format!("Ok: {size} bytes")));
            return Flow::Continue;
        }
        let too_big = tx.chunks_too_big;
        let body = tx.chunks.take().unwrap_or_default();
        self.bdat_size = Some(line_size(&body));
        let end = DataEnd {
            size: body.len() as u64,
            too_big,
            bare_newline: false,
        };
        self.conn.shrink();
        let flow = self.finish_message(end, body, false, "bdat").await;
        self.milter_end_of_transaction(flow).await
    }

    /// Content received: check it, queue it, answer.
    async fn finish_message(
        &mut self,
        end: DataEnd,
        mut body: Vec<u8>,
        reject_bare: bool,
        verb: &'static str,
    ) -> Flow {
        if let Some(tx) = &mut self.tx {
            tx.received_size = Some(end.size);
        }
        // Postfix's cleanup cuts headers longer than header_size_limit.
        super::data::truncate_long_headers(&mut body, self.settings.header_size_limit);
        if !self
            .settings
            .policy
            .is_empty("smtpd_end_of_data_restrictions")
            && !end.too_big
            && let Some(reply) = self
                .restrict(
                    &[("smtpd_end_of_data_restrictions", Stage::EndOfData)],
                    None,
                    "END-OF-MESSAGE",
                )
                .await
        {
            self.log_reject("END-OF-MESSAGE", &reply, None);
            self.tx = None;
            self.counters.count(verb, false);
            return self.error(reply).await;
        }
        let Some(tx) = self.tx.take() else {
            return Flow::Continue;
        };
        let Some(queue_id) = tx.queue_id else {
            return Flow::Continue;
        };
        if end.too_big {
            self.counters.count(verb, false);
            let reply = Reply::new(552, "5.3.4", "Error: message file too big");
            crate::metrics::rejected(verb, reply.code, reply.status, "");
            self.log(&format!(
                "{queue_id}: reject: {} from {}: {}; from=<{}> proto=ESMTP helo=<{}>",
                verb.to_uppercase(),
                self.client(),
                reply.summary(),
                tx.sender,
                self.helo.as_deref().unwrap_or("")
            ));
            self.message_reject_event(
                &self.settings.program,
                queue_id,
                &verb.to_uppercase(),
                &tx.sender,
                &reply,
            );
            return self.error(reply).await;
        }
        if end.bare_newline && reject_bare {
            self.counters.count(verb, false);
            let reply = self.bare_newline_reply();
            crate::metrics::rejected("END-OF-MESSAGE", reply.code, reply.status, "");
            // Postfix: the event, not the reply, and the last recipient.
            self.tx = Some(tx);
            let last = self
                .tx
                .as_ref()
                .and_then(|t| t.recipients.last())
                .map(|r| r.address.clone());
            self.log_event(
                "reject",
                "END-OF-MESSAGE",
                "bare <LF> received",
                last.as_deref(),
            );
            self.tx = None;
            return self.error(reply).await;
        }
        let protocol = self.protocol();
        let mut headers = received_header(
            &self.settings,
            self.helo.as_deref(),
            &self.client_name,
            self.peer,
            &protocol,
            queue_id,
            &tx.recipients,
            &self.received_extra(),
        );
        let mut envelope = Envelope {
            queue_id,
            arrival: corepost_spool::queue_id::now_micros(),
            sender: tx.sender.clone(),
            params: tx.params,
            client: ClientInfo {
                name: self.client_name.clone(),
                addr: self.peer.ip().to_string(),
                port: self.peer.port(),
                helo: self.helo.clone().unwrap_or_default(),
                protocol,
                sasl_username: self.secure.sasl.as_ref().map(|a| a.username.clone()),
                tls: self.secure.tls.clone(),
            },
            recipients: tx.recipients,
            next_attempt: 0,
            held: false,
        };
        if self.settings.rewriter.is_active()
            && let Err(reply) = self.rewrite(&mut envelope)
        {
            self.counters.count(verb, false);
            return self.error(reply).await;
        }
        match self.rewrite_headers(&body) {
            Ok(Some(rewritten)) => body = rewritten,
            Ok(None) => {}
            Err(reply) => {
                self.counters.count(verb, false);
                return self.error(reply).await;
            }
        }
        // content_filter first: an access-table FILTER (applied next) and a
        // header/body-check FILTER (after that) override it.
        if let Some(filter) = &self.settings.content_filter {
            filter.apply(
                &mut envelope.recipients,
                &self.settings.default_filter_nexthop,
            );
        }
        if let Err(e) = tx
            .actions
            .apply(&self.settings.router, &mut envelope, &mut headers)
        {
            self.log(&format!("warning: {queue_id}: access action: {e}"));
            self.counters.count(verb, false);
            return self
                .error(Reply::new(451, "4.3.0", "Error: queue file write error"))
                .await;
        }
        let mut content = headers;
        content.extend_from_slice(&body);
        let nrcpt = envelope.recipients.len();
        if tx.actions.discard {
            self.log(&format!(
                "{queue_id}: discard: from=<{}>, size={}, nrcpt={nrcpt}: message discarded by access action",
                envelope.sender,
                content.len()
            ));
            self.accepted(verb, queue_id);
            return Flow::Continue;
        }
        // Postfix's cleanup logs these lines, and pflogsumm reads them
        // by that process name.
        let cleanup_log = |line: &str| self.core.log.line("corepost/cleanup", line);
        if let Some(mid) = message_id(&body) {
            cleanup_log(&format!("{queue_id}: message-id={mid}"));
        }
        if !self.settings.content_checks.is_empty() {
            let settings = std::sync::Arc::clone(&self.settings);
            let origin = Origin {
                queue_id,
                client: self.client(),
                sender: &envelope.sender,
                proto: &envelope.client.protocol,
                helo: self.helo.as_deref().unwrap_or(""),
            };
            match cleanup(
                &settings,
                &origin,
                &mut envelope.recipients,
                &mut content,
                &cleanup_log,
            ) {
                Checked::Queue { hold, filter } => {
                    envelope.held |= hold;
                    if let Some(filter) = filter {
                        filter.apply(&mut envelope.recipients, &settings.default_filter_nexthop);
                    }
                }
                Checked::Refuse(reply) => {
                    crate::metrics::rejected("END-OF-MESSAGE", reply.code, "", &reply.text);
                    self.message_reject_event(
                        "corepost/cleanup",
                        queue_id,
                        "END-OF-MESSAGE",
                        &envelope.sender,
                        &reply,
                    );
                    self.counters.count(verb, false);
                    return self.error(reply).await;
                }
                Checked::Discard => {
                    self.accepted(verb, queue_id);
                    return Flow::Continue;
                }
            }
        }
        match self.milter_message(&mut envelope, &mut content).await {
            milter::MilterEnd::Queue => {}
            milter::MilterEnd::Discard => {
                self.accepted(verb, queue_id);
                return Flow::Continue;
            }
            milter::MilterEnd::Refuse(reply) => {
                self.message_reject_event(
                    "corepost/cleanup",
                    queue_id,
                    "END-OF-MESSAGE",
                    &envelope.sender,
                    &reply,
                );
                self.counters.count(verb, false);
                return self.error(reply).await;
            }
        }
        if let Some(signer) = &self.settings.dkim
            && signer.signs_for_client(self.peer.ip(), self.secure.sasl.is_some())
        {
            match signer.sign(&mut content, envelope.arrival / 1_000_000) {
                Ok(Some(signed)) => self.core.log.line(
                    "corepost/cleanup",
                    &format!("{queue_id}: {}", signed.log_text()),
                ),
                Ok(None) => {}
                Err(e) => {
                    self.log(&format!("warning: {queue_id}: DKIM signing: {e}"));
                    self.counters.count(verb, false);
                    // Postfix's reply when a milter fails temporarily.
                    return self
                        .error(Reply::new(
                            451,
                            "4.7.1",
                            "Service unavailable - try again later",
                        ))
                        .await;
                }
            }
        }
        match self.core.queue(&envelope, &content).await {
            Ok(()) => {
                let (n, size) = (envelope.recipients.len(), content.len());
                crate::metrics::received(crate::metrics::Source::Smtpd, n, size);
                crate::events::reception(&self.settings.program, &envelope, content.len());
                // The `from=<>, size=, nrcpt= (queue active)` line is the
                // queue manager's, when it takes the message (as Postfix's
                // qmgr); a held message gets it when released.
                self.accepted(verb, queue_id);
                Flow::Continue
            }
            Err(e) => {
                self.log(&format!("warning: {queue_id}: queue file write error: {e}"));
                self.counters.count(verb, false);
                self.error(Reply::new(451, "4.3.0", "Error: queue file write error"))
                    .await
            }
        }
    }
}

impl Session {
    /// cleanup's header address rewriting for this client (see
    /// `local_header_rewrite_clients`); `None` when nothing changed.
    fn rewrite_headers(&self, body: &[u8]) -> Result<Option<Vec<u8>>, Reply> {
        let settings = &self.settings;
        let Some(completion) = settings
            .header_rewrite
            .for_client(self.peer.ip(), self.secure.sasl.is_some())
        else {
            return Ok(None);
        };
        crate::rewrite::headers::rewrite_section(body, |address, sender| {
            let complete = completion.complete(address);
            if settings.rewriter.is_active() {
                settings
                    .rewriter
                    .header_address(&settings.router, &complete, sender)
            } else {
                Ok(complete)
            }
        })
        .map_err(|e| {
            self.log(&format!("warning: header address rewriting: {e}"));
            Reply::new(451, "4.3.0", "Error: queue file write error")
        })
    }

    /// cleanup's address mapping: canonical maps, virtual aliases.
    fn rewrite(&self, envelope: &mut Envelope) -> Result<(), Reply> {
        let settings = &self.settings;
        let id = envelope.queue_id;
        let result = settings
            .rewriter
            .envelope_sender(&settings.router, &envelope.sender)
            .map_err(|e| crate::rewrite::RewriteError::Lookup(e.to_string()))
            .and_then(|sender| {
                let recipients = std::mem::take(&mut envelope.recipients);
                let rewritten = settings
                    .rewriter
                    .recipients(&settings.router, &sender, recipients);
                envelope.sender = sender;
                rewritten
            });
        match result {
            Ok(recipients) => {
                envelope.recipients = recipients;
                Ok(())
            }
            Err(crate::rewrite::RewriteError::Limit(warning)) => {
                self.log(&format!("warning: {id}: {warning}"));
                Err(Reply::new(451, "4.6.0", "Alias expansion error"))
            }
            Err(crate::rewrite::RewriteError::Lookup(e)) => {
                self.log(&format!("warning: {id}: address rewriting: {e}"));
                Err(Reply::new(451, "4.3.0", "Error: queue file write error"))
            }
        }
    }
}

fn verb_upper(verb: &'static str) -> &'static str {
    match verb {
        "helo" => "HELO",
        "ehlo" => "EHLO",
        "mail" => "MAIL",
        "rcpt" => "RCPT",
        "data" => "DATA",
        "bdat" => "BDAT",
        "rset" => "RSET",
        "noop" => "NOOP",
        "quit" => "QUIT",
        "vrfy" => "VRFY",
        "etrn" => "ETRN",
        "xclient" => "XCLIENT",
        "starttls" => "STARTTLS",
        "auth" => "AUTH",
        _ => "UNKNOWN",
    }
}

/// The content's size as Postfix counts it after BDAT: every line with a
/// CRLF ending, the last one included.
fn line_size(body: &[u8]) -> u64 {
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
        .iter()
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l).len() as u64 + 2)
        .sum()
}

/// `451 4.3.0 <address>: Temporary lookup failure`.
fn lookup_failure(address: &str, e: corepost_config::tables::TableError) -> Reply {
    Reply::new(
        451,
        "4.3.0",
        format!("<{address}>: Temporary lookup failure ({e})"),
    )
}

/// RCPT's NOTIFY and ORCPT (RFC 3461); either given twice is a syntax
/// error, as in Postfix.
fn rcpt_params(params: &[Param]) -> Result<(u8, Option<String>), Reply> {
    let mut notify = None;
    let mut orcpt = None;
    for p in params {
        match (p.keyword.as_str(), p.value.as_deref()) {
            ("NOTIFY", Some(v)) => {
                let bad = || Reply::new(501, "5.5.4", "Error: Bad NOTIFY parameter syntax");
                if notify.is_some() {
                    return Err(bad());
                }
                notify = Some(parse_notify(v).ok_or_else(bad)?);
            }
            ("ORCPT", Some(v)) => {
                let decoded = decode_xtext(v)
                    .filter(|o| o.contains(';') && o.len() <= 500 && orcpt.is_none())
                    .ok_or_else(|| Reply::new(501, "5.5.4", "Error: Bad ORCPT parameter syntax"))?;
                orcpt = Some(decoded);
            }
            _ => {
                return Err(Reply::new(
                    555,
                    "5.5.4",
                    format!("Unsupported option: {}", p.raw),
                ));
            }
        }
    }
    Ok((notify.unwrap_or(0), orcpt))
}

fn parse_notify(v: &str) -> Option<u8> {
    use corepost_spool::record::notify;
    let mut bits = 0;
    for word in v.split(',') {
        bits |= match word.to_ascii_uppercase().as_str() {
            "NEVER" => notify::NEVER,
            "SUCCESS" => notify::SUCCESS,
            "FAILURE" => notify::FAILURE,
            "DELAY" => notify::DELAY,
            _ => return None,
        };
    }
    if bits & notify::NEVER != 0 && bits != notify::NEVER {
        return None;
    }
    Some(bits)
}

/// The RFC 5321 §4.4 trace header corepost prepends; `extra` holds the TLS
/// and AUTH comment lines.
#[allow(clippy::too_many_arguments)]
fn received_header(
    s: &SmtpdSettings,
    helo: Option<&str>,
    client_name: &str,
    peer: SocketAddr,
    protocol: &str,
    id: QueueId,
    recipients: &[Recipient],
    extra: &str,
) -> Vec<u8> {
    let addr = match peer.ip() {
        std::net::IpAddr::V6(a) => format!("IPv6:{a}"),
        a => a.to_string(),
    };
    let mut h = format!(
        "Received: from {} ({} [{}])\r\n{extra}\tby {} ({}) with {} id {}",
        helo.unwrap_or("unknown"),
        client_name,
        addr,
        s.myhostname,
        s.mail_name,
        protocol,
        id
    );
    if let [only] = recipients {
        h.push_str(&format!("\r\n\tfor <{}>", only.address));
    }
    h.push_str(&format!("; {}\r\n", crate::time::rfc5322_now()));
    h.into_bytes()
}

/// The Message-ID header's value, if the header section has one.
pub(crate) fn message_id(body: &[u8]) -> Option<String> {
    let headers_end = body
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(body.len().min(64 * 1024));
    let headers = std::str::from_utf8(&body[..headers_end.min(body.len())]).ok()?;
    for line in headers.split("\r\n") {
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("message-id")
        {
            let v = value.trim();
            return (!v.is_empty()).then(|| v.chars().take(200).collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_summary() {
        let mut c = Counters::default();
        c.count("ehlo", true);
        c.count("mail", true);
        c.count("rcpt", false);
        c.count("rcpt", true);
        c.count("quit", true);
        assert_eq!(c.summary(), "ehlo=1 mail=1 rcpt=1/2 quit=1 commands=4/5");
        assert_eq!(c.given("rcpt"), 2);
        assert_eq!(Counters::default().summary(), "commands=0");
        let mut all = Counters::default();
        for verb in COUNTED.iter().rev() {
            all.count(verb, verb.len() == 4);
        }
        assert_eq!(
            all.summary(),
            "helo=1 ehlo=1 xclient=0/1 starttls=0/1 auth=1 mail=1 rcpt=1 data=1 bdat=1 \
             rset=1 noop=1 vrfy=1 etrn=1 quit=1 unknown=0/1 commands=12/15"
        );
    }

    #[test]
    fn bdat_size_counts_crlf_lines() {
        assert_eq!(line_size(b"ab\r\nc"), 7);
        assert_eq!(line_size(b"ab\r\n"), 4);
        assert_eq!(line_size(b""), 0);
    }

    #[test]
    fn notify_and_message_id() {
        assert_eq!(parse_notify("SUCCESS,FAILURE"), Some(6));
        assert_eq!(parse_notify("NEVER"), Some(1));
        assert_eq!(parse_notify("NEVER,DELAY"), None);
        assert_eq!(parse_notify("SOMETIMES"), None);
        assert_eq!(
            message_id(b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nbody"),
            Some("<a@b>".into())
        );
        assert_eq!(message_id(b"Subject: x\r\n\r\nMessage-ID: <a@b>\r\n"), None);
    }
}
