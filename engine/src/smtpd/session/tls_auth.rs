//! The session's STARTTLS, wrapper-mode and AUTH commands, and what TLS and
//! authentication change in the rest of the dialogue (EHLO keywords, the
//! `530 5.7.0` of `smtpd_tls_security_level = encrypt`, the protocol name
//! ESMTPS/ESMTPA/ESMTPSA, the Received header, `sasl_username=` in the log).
//!
//! A child module of `session` so it can work on the session's state
//! without widening its interface; the TLS mechanics are in
//! `smtpd::tls`, the SASL ones in `smtpd::sasl`.

use super::{Flow, Line, Reply, Session};
use crate::smtpd::sasl::mechanisms::Local;
use crate::smtpd::sasl::{Backend, Exchange, PLAINTEXT, Step, dovecot};
use crate::smtpd::tls::{Level, describe};
use base64::Engine;
use std::sync::Arc;

/// Longest AUTH response line (Postfix's `smtpd_sasl_response_limit`).
const MAX_RESPONSE: usize = 12288;

/// TLS and AUTH state of a session.
#[derive(Default)]
pub(super) struct SecureState {
    /// `TLSv1.3 with cipher ...` once TLS is active.
    pub tls: Option<String>,
    /// The same, for the policy protocol.
    pub tls_summary: Option<crate::smtpd::tls::TlsSummary>,
    pub sasl: Option<Login>,
    failures: u32,
    dovecot: Option<dovecot::Client>,
}

pub(super) struct Login {
    pub method: String,
    pub username: String,
}

/// How an AUTH exchange ended.
enum Outcome {
    Done(Step),
    Aborted,
    Undecodable,
    Lost,
}

fn b64() -> &'static base64::engine::GeneralPurpose {
    &base64::engine::general_purpose::STANDARD
}

impl Session {
    /// Implicit TLS (`smtpd_tls_wrappermode = yes`): the handshake comes
    /// before the greeting.
    pub(super) async fn wrapper_handshake(&mut self) -> bool {
        let Some(config) = self.settings.tls.config.clone() else {
            self.log(&format!(
                "warning: Wrapper-mode request dropped from {} for service {}. TLS context initialization failed: {}",
                self.client(),
                self.settings.service,
                self.settings.tls.problem.as_deref().unwrap_or("no certificate")
            ));
            return false;
        };
        self.handshake(config).await
    }

    async fn handshake(&mut self, config: Arc<rustls::ServerConfig>) -> bool {
        match self
            .conn
            .start_tls(config, self.settings.tls.handshake_timeout)
            .await
        {
            Ok(()) => {
                crate::metrics::tls_handshake(true, true);
                let desc = self.conn.tls().map(describe).unwrap_or_default();
                if self.settings.tls.loglevel >= 1 {
                    self.log(&format!(
                        "Anonymous TLS connection established from {}: {desc}",
                        self.client()
                    ));
                    crate::events::tls(
                        &self.settings.program,
                        "inbound",
                        &self.client(),
                        "Anonymous",
                        &desc,
                    );
                }
                self.secure.tls = Some(desc);
                self.secure.tls_summary = self.conn.tls().map(crate::smtpd::tls::TlsSummary::of);
                true
            }
            Err(e) => {
                crate::metrics::tls_handshake(true, false);
                self.log(&format!("SSL_accept error from {}: {e}", self.client()));
                self.log(&format!(
                    "lost connection after {} from {}",
                    self.last_command,
                    self.client()
                ));
                false
            }
        }
    }

    async fn refuse(&mut self, verb: &'static str, reply: Reply) -> Flow {
        self.counters.count(verb, false);
        self.error(reply).await
    }

    pub(super) async fn starttls(&mut self) -> Flow {
        if !self.settings.tls.offers_starttls() {
            return self
                .refuse(
                    "starttls",
                    Reply::new(502, "5.5.1", "Error: command not implemented"),
                )
                .await;
        }
        if self.conn.tls().is_some() {
            return self
                .refuse(
                    "starttls",
                    Reply::new(554, "5.5.1", "Error: TLS already active"),
                )
                .await;
        }
        if self.tx.is_some() {
            return self
                .refuse(
                    "starttls",
                    Reply::new(503, "5.5.1", "Error: MAIL transaction in progress"),
                )
                .await;
        }
        let Some(config) = self.settings.tls.config.clone() else {
            self.log(&format!(
                "warning: cannot start TLS for {}: {}",
                self.client(),
                self.settings
                    .tls
                    .problem
                    .as_deref()
                    .unwrap_or("no certificate")
            ));
            return self
                .refuse(
                    "starttls",
                    Reply::new(454, "4.7.0", "TLS not available due to local problem"),
                )
                .await;
        };
        self.reply(Reply::new(220, "2.0.0", "Ready to start TLS"));
        if self.conn.flush(self.settings.timeout).await.is_err() {
            return Flow::Close;
        }
        // start_tls drops whatever the client pipelined after STARTTLS.
        if !self.handshake(config).await {
            return Flow::Close;
        }
        self.counters.count("starttls", true);
        // RFC 3207 §4.2: forget everything learnt from the client.
        self.helo = None;
        self.esmtp = false;
        self.tx = None;
        self.secure.sasl = None;
        Flow::Continue
    }

    /// `530 5.7.0` while TLS is required and not yet active.
    pub(super) fn tls_required(&self) -> Option<Reply> {
        (self.settings.tls.level == Level::Encrypt && self.conn.tls().is_none())
            .then(|| Reply::new(530, "5.7.0", "Must issue a STARTTLS command first"))
    }

    /// STARTTLS and AUTH in the EHLO reply.
    pub(super) fn advertise(&self, keywords: &mut Vec<String>) {
        if self.conn.tls().is_none() && self.settings.tls.offers_starttls() {
            keywords.push("STARTTLS".into());
        }
        let mechanisms = self.mechanisms();
        if !mechanisms.is_empty() && !self.settings.sasl.exceptions.contains(self.peer.ip()) {
            keywords.push(format!("AUTH {}", mechanisms.join(" ")));
        }
    }

    /// Whether AUTH may be used now (enabled, and under TLS if required).
    fn auth_allowed(&self) -> bool {
        let s = &self.settings.sasl;
        s.enabled && (!s.tls_only || self.conn.tls().is_some())
    }

    /// The mechanisms this session may use now.
    fn mechanisms(&self) -> Vec<String> {
        let s = &self.settings.sasl;
        let tls = self.conn.tls().is_some();
        if !self.auth_allowed() {
            return Vec::new();
        }
        let options = if tls { s.tls_options } else { s.options };
        match &s.backend {
            Backend::PasswordFile(_) if options.allows(PLAINTEXT) => {
                vec!["PLAIN".into(), "LOGIN".into()]
            }
            Backend::PasswordFile(_) => Vec::new(),
            Backend::Dovecot(_) => self
                .secure
                .dovecot
                .as_ref()
                .map(|c| {
                    c.mechanisms()
                        .iter()
                        .filter(|m| !m.private && options.allows(m.flags))
                        .map(|m| m.name.clone())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// With Dovecot, connect (once per session) to learn the mechanisms
    /// before they are advertised.
    pub(super) async fn prepare_auth(&mut self) {
        let Backend::Dovecot(address) = &self.settings.sasl.backend else {
            return;
        };
        if !self.auth_allowed() || self.secure.dovecot.is_some() {
            return;
        }
        let address = address.clone();
        match dovecot::Client::connect(&address).await {
            Ok(c) => self.secure.dovecot = Some(c),
            Err(e) => self.log(&format!("warning: SASL: Connect to {address} failed: {e}")),
        }
    }

    pub(super) async fn auth(&mut self, arg: &str) -> Flow {
        // (Re)connect to Dovecot if EHLO did not or the last exchange broke.
        self.prepare_auth().await;
        if self.auth_allowed()
            && matches!(self.settings.sasl.backend, Backend::Dovecot(_))
            && self.secure.dovecot.is_none()
        {
            return self
                .refuse(
                    "auth",
                    Reply::new(454, "4.7.0", "Temporary authentication failure"),
                )
                .await;
        }
        let mechanisms = self.mechanisms();
        if mechanisms.is_empty() {
            return self
                .refuse(
                    "auth",
                    Reply::new(503, "5.5.1", "Error: authentication not enabled"),
                )
                .await;
        }
        if self.tx.is_some() {
            return self
                .refuse(
                    "auth",
                    Reply::new(503, "5.5.1", "Error: MAIL transaction in progress"),
                )
                .await;
        }
        if self.secure.sasl.is_some() {
            return self
                .refuse(
                    "auth",
                    Reply::new(503, "5.5.1", "Error: already authenticated"),
                )
                .await;
        }
        // Postfix's smtpd_client_auth_rate_limit: counted before the
        // exchange, so a client cannot guess passwords faster than the limit.
        if let Some(x) = crate::smtpd::anvil::record(
            &self.settings.limits,
            &self.settings.service,
            self.peer.ip(),
            &self.client(),
            crate::smtpd::anvil::Event::Auth,
            &|l| self.log(l),
        )
        .await
        {
            self.log(&format!("warning: {}", x.warning));
            return self.refuse("auth", x.reply).await;
        }
        let words: Vec<&str> = arg.split_ascii_whitespace().collect();
        if words.is_empty() || words.len() > 2 {
            return self
                .refuse("auth", Reply::new(501, "5.5.4", "Syntax: AUTH mechanism"))
                .await;
        }
        let mechanism = words[0].to_ascii_uppercase();
        let initial = match words.get(1) {
            None => None,
            Some(&"=") => Some(Vec::new()),
            Some(w) => match b64().decode(w) {
                Ok(d) => Some(d),
                Err(_) => {
                    return self
                        .refuse("auth", Reply::new(501, "5.5.2", "Cannot decode response"))
                        .await;
                }
            },
        };
        let exchange = if mechanisms.contains(&mechanism) {
            self.exchange(&mechanism).await
        } else {
            Err(Step::Failure {
                reason: "Invalid authentication mechanism".into(),
                user: None,
            })
        };
        let outcome = match exchange {
            Err(step) => Outcome::Done(step),
            Ok(mut exchange) => {
                let outcome = self.run_exchange(&mut exchange, initial).await;
                if let Exchange::Dovecot(d) = exchange {
                    self.secure.dovecot = d.into_client();
                }
                outcome
            }
        };
        self.finish_auth(mechanism, outcome).await
    }

    /// The exchange for an offered mechanism, or the step that ends the
    /// command at once.
    async fn exchange(&mut self, mechanism: &str) -> Result<Exchange, Step> {
        let settings = Arc::clone(&self.settings);
        match &settings.sasl.backend {
            Backend::PasswordFile(file) => Local::new(mechanism, Arc::clone(file))
                .map(Exchange::Local)
                .ok_or_else(|| Step::Failure {
                    reason: "Invalid authentication mechanism".into(),
                    user: None,
                }),
            Backend::Dovecot(address) => {
                let client = match self.secure.dovecot.take() {
                    Some(c) => c,
                    None => match dovecot::Client::connect(address).await {
                        Ok(c) => c,
                        Err(e) => {
                            return Err(Step::TempFailure(format!(
                                "SASL: Connect to {address} failed: {e}"
                            )));
                        }
                    },
                };
                let request = dovecot::Request {
                    service: settings.sasl.service.clone(),
                    mechanism: mechanism.to_string(),
                    local: self
                        .conn
                        .local_addr()
                        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], 0))),
                    remote: self.peer,
                    secured: self.conn.tls().is_some(),
                };
                Ok(Exchange::Dovecot(Box::new(dovecot::Exchange::new(
                    client, request,
                ))))
            }
        }
    }

    async fn run_exchange(&mut self, exchange: &mut Exchange, initial: Option<Vec<u8>>) -> Outcome {
        let mut input = initial;
        loop {
            match exchange.step(input.take()).await {
                Step::Challenge(c) => {
                    self.reply(Reply::new(334, "", b64().encode(c)));
                    if self.conn.flush(self.settings.timeout).await.is_err() {
                        return Outcome::Lost;
                    }
                    let Some(line) = self.read_response().await else {
                        return Outcome::Lost;
                    };
                    match line {
                        Some(l) if l == b"*" => return Outcome::Aborted,
                        Some(l) => match b64().decode(&l) {
                            Ok(d) => input = Some(d),
                            Err(_) => return Outcome::Undecodable,
                        },
                        None => return Outcome::Undecodable,
                    }
                }
                done => return Outcome::Done(done),
            }
        }
    }

    /// One response line: `None` when the connection is gone, `Some(None)`
    /// for a line over the limit.
    async fn read_response(&mut self) -> Option<Option<Vec<u8>>> {
        loop {
            match self.conn.next_line(MAX_RESPONSE) {
                Line::Complete { len, consumed } => {
                    let line = self.conn.buffered()[..len].to_vec();
                    self.conn.consume(consumed);
                    return Some(Some(line));
                }
                Line::TooLong(_) => return Some(None),
                Line::Incomplete => match self.conn.fill(self.settings.timeout).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                },
            }
        }
    }

    async fn finish_auth(&mut self, mechanism: String, outcome: Outcome) -> Flow {
        let step = match outcome {
            Outcome::Lost => {
                self.log(&format!(
                    "lost connection after AUTH from {}",
                    self.client()
                ));
                return Flow::Close;
            }
            Outcome::Aborted => {
                return self
                    .refuse("auth", Reply::new(501, "5.7.0", "Authentication aborted"))
                    .await;
            }
            Outcome::Undecodable => {
                return self
                    .refuse("auth", Reply::new(501, "5.5.2", "Cannot decode response"))
                    .await;
            }
            Outcome::Done(step) => step,
        };
        match step {
            Step::Success(username) => {
                self.secure.sasl = Some(Login {
                    method: mechanism,
                    username,
                });
                self.counters.count("auth", true);
                self.reply(Reply::new(235, "2.7.0", "Authentication successful"));
                Flow::Continue
            }
            Step::Failure { reason, user } => {
                self.log(&format!(
                    "warning: {}: SASL {mechanism} authentication failed: {reason}{}",
                    self.client(),
                    user.map(|u| format!(", sasl_username={u}"))
                        .unwrap_or_default()
                ));
                self.secure.failures += 1;
                let limit = self.settings.sasl.failure_limit;
                if limit > 0 && self.secure.failures >= limit {
                    self.counters.count("auth", false);
                    self.log(&format!(
                        "too many errors after AUTH from {}",
                        self.client()
                    ));
                    self.reply(Reply::new(
                        421,
                        "4.7.0",
                        format!("{} Error: too many errors", self.settings.myhostname),
                    ));
                    return Flow::Close;
                }
                self.refuse(
                    "auth",
                    Reply::new(
                        535,
                        "5.7.8",
                        format!("Error: authentication failed: {reason}"),
                    ),
                )
                .await
            }
            Step::TempFailure(reason) => {
                self.log(&format!(
                    "warning: {}: SASL {mechanism} authentication failed: {reason}",
                    self.client()
                ));
                self.refuse(
                    "auth",
                    Reply::new(454, "4.7.0", "Temporary authentication failure"),
                )
                .await
            }
            Step::Challenge(_) => Flow::Continue, // run_exchange never ends on one
        }
    }

    /// `, sasl_method=PLAIN, sasl_username=alice` for the `client=` line.
    pub(super) fn sasl_log(&self) -> String {
        match &self.secure.sasl {
            Some(a) => format!(", sasl_method={}, sasl_username={}", a.method, a.username),
            None => String::new(),
        }
    }

    /// `ESMTP` plus `S` under TLS and `A` when authenticated (RFC 3848).
    pub(super) fn protocol(&self) -> String {
        let mut p = String::from(if self.esmtp { "ESMTP" } else { "SMTP" });
        if self.secure.tls.is_some() {
            p.push('S');
        }
        if self.secure.sasl.is_some() {
            p.push('A');
        }
        p
    }

    /// Received header lines between `from` and `by`.
    pub(super) fn received_extra(&self) -> String {
        let mut x = String::new();
        if let Some(t) = &self.secure.tls
            && self.settings.tls.received_header
        {
            x.push_str(&format!(
                "\t(using {t})\r\n\t(No client certificate requested)\r\n"
            ));
        }
        if let Some(a) = &self.secure.sasl
            && self.settings.sasl.authenticated_header
        {
            x.push_str(&format!("\t(Authenticated sender: {})\r\n", a.username));
        }
        x
    }
}
