//! smtpd's milter hooks: each SMTP event goes to the session's milters
//! (`crate::milter`), and a verdict becomes what Postfix's smtpd does with
//! it (check_milter_reply): `milter-reject:`/`milter-hold:`/
//! `milter-discard:` log lines, the reply, a hang-up after 421. At end of
//! data the content goes through them before it is queued, and their
//! edits are applied to what is queued (cleanup's milter step).

use super::{Reply, Session};
use crate::milter::{self, MilterSet, Verdict, edit::Message, macros::MacroContext};
use crate::smtpd::command::Param;
use corepost_spool::Envelope;

/// The session's milters and what they decided for the transaction.
#[derive(Default)]
pub(in crate::smtpd) struct MilterState {
    set: Option<MilterSet>,
    /// A milter said HOLD or DISCARD during MAIL/RCPT/DATA.
    hold: bool,
    discard: bool,
    /// A 421 went out: the session ends (Postfix's SMTPD_FLAG_HANGUP).
    pub hangup: bool,
    /// A milter answered EHLO with a 5xx: EHLO offers nothing but
    /// ENHANCEDSTATUSCODES (Postfix's Sendmail compatibility).
    pub ehlo_rejected: bool,
}

/// What the end-of-message milters decided.
pub(super) enum MilterEnd {
    Queue,
    Discard,
    Refuse(Reply),
}

impl Session {
    fn milter_context(&self) -> MacroContext {
        let tls = self.secure.tls_summary.as_ref();
        let tx = self.tx.as_ref();
        let (mail_host, mail_mailer) = tx
            .filter(|t| !t.sender.is_empty())
            .and_then(|t| {
                let router = &self.settings.router;
                let (_, domain) = crate::routing::split_address(&t.sender);
                let class = router.classify(domain).ok()?;
                let r = router.route("", &t.sender, class).ok()?;
                Some((Some(r.nexthop), Some(r.transport)))
            })
            .unwrap_or((None, None));
        MacroContext {
            client_name: self.client_name.clone(),
            reverse_name: self.reverse_client_name.clone(),
            client_addr: self.peer.ip().to_string(),
            client_port: self.peer.port().to_string(),
            daemon_addr: self.local.map(|l| l.ip().to_string()),
            daemon_port: self.local.map(|l| l.port().to_string()),
            tls_version: tls.map(|t| t.protocol.clone()),
            cipher: tls.map(|t| t.cipher.clone()),
            cipher_bits: tls.map(|t| t.bits.to_string()),
            auth_type: self.secure.sasl.as_ref().map(|a| a.method.clone()),
            auth_authen: self.secure.sasl.as_ref().map(|a| a.username.clone()),
            queue_id: tx.and_then(|t| t.queue_id).map(|q| q.to_string()),
            mail_addr: tx.map(|t| t.sender_given.clone()),
            mail_host,
            mail_mailer,
            ..MacroContext::default()
        }
    }

    /// Log a verdict as Postfix's check_milter_reply and return the reply
    /// to send, if any (HOLD and DISCARD answer nothing: the command
    /// proceeds).
    fn milter_verdict(&mut self, stage: &str, v: Verdict, rcpt: Option<&str>) -> Option<Reply> {
        match v {
            Verdict::Hold => {
                self.milter.hold = true;
                self.log_event("milter-hold", stage, "milter triggers HOLD action", rcpt);
                None
            }
            Verdict::Discard => {
                self.milter.discard = true;
                self.log_event(
                    "milter-discard",
                    stage,
                    "milter triggers DISCARD action",
                    rcpt,
                );
                None
            }
            Verdict::Shutdown => {
                let text = "421 4.7.0 Server closing connection";
                self.log_event("milter-reject", stage, text, rcpt);
                self.milter.hangup = true;
                Some(milter::reply_of(text))
            }
            Verdict::Reply(text) => {
                self.log_event("milter-reject", stage, &text.replace("\r\n", " "), rcpt);
                let reply = milter::reply_of(&text);
                crate::metrics::rejected(stage, reply.code, "", &reply.text);
                self.milter.hangup |= reply.code == 421;
                Some(reply)
            }
        }
    }

    /// Run one event on the session's milters (taken out for the call, so
    /// the log closure can borrow the session).
    async fn milter_event<F>(&mut self, event: F) -> Option<Verdict>
    where
        F: AsyncFnOnce(&mut MilterSet, &dyn Fn(&str)) -> Option<Verdict>,
    {
        if self.milter.discard {
            return None;
        }
        let mut set = self.milter.set.take()?;
        set.ctx = self.milter_context();
        let core = std::rc::Rc::clone(&self.core);
        let program = self.settings.program.clone();
        let log = move |l: &str| core.log.line(&program, l);
        let v = event(&mut set, &log).await;
        self.milter.set = Some(set);
        v
    }

    /// At connect: open the milters for this client (smtpd_milter_maps)
    /// and report the connection. A 421 is the greeting (and the end); a
    /// 5xx makes it Postfix's `554 host ESMTP not accepting connections`;
    /// either way the milter's answer also answers the commands that
    /// follow.
    pub(super) async fn milter_connect(&mut self) -> Option<Reply> {
        let settings = self.settings.milters.clone()?;
        let core = std::rc::Rc::clone(&self.core);
        let program = self.settings.program.clone();
        let log = move |l: &str| core.log.line(&program, l);
        self.milter.set = settings.session(&self.peer.ip().to_string(), &log);
        let (name, peer) = (self.client_name.clone(), self.peer);
        let v = self
            .milter_event(async move |m, log| m.connect(log, &name, Some(peer)).await)
            .await?;
        match self.milter_verdict("CONNECT", v, None)? {
            r if r.code == 421 => Some(r),
            // Postfix: the session goes on; the milter's answer applies
            // to the commands.
            r if r.code >= 500 => Some(Reply::new(
                554,
                "",
                format!(
                    "{} ESMTP not accepting connections",
                    self.settings.myhostname
                ),
            )),
            _ => None,
        }
    }

    /// HELO/EHLO: Sendmail compatibility, as Postfix — a rejection is
    /// logged but the command gets its 250 (the milter's answer applies
    /// to MAIL FROM and later) unless it is a 421.
    pub(super) async fn milter_helo(&mut self, host: &str, esmtp: bool) -> Option<Reply> {
        self.milter.set.as_ref()?;
        self.milter.ehlo_rejected = false;
        // Postfix resets the transaction (and aborts it at the milters)
        // after the HELO event.
        let reset = self.helo.is_some() || self.tx.is_some();
        let (host, host_name) = (host.to_string(), host.to_string());
        let v = self
            .milter_event(async move |m, log| m.helo(log, &host).await)
            .await;
        if reset {
            self.milter_abort().await;
        }
        let v = v?;
        // Postfix's line names the new HELO name (with the old protocol).
        let previous = self.helo.replace(host_name);
        let reply = self.milter_verdict(if esmtp { "EHLO" } else { "HELO" }, v, None);
        self.helo = previous;
        self.milter.ehlo_rejected = reply.as_ref().is_some_and(|r| r.code >= 500);
        reply.filter(|r| r.code == 421)
    }

    fn milter_argv(path: &str, bracketed: bool, params: &[Param]) -> Vec<String> {
        let mut argv = vec![if bracketed {
            format!("<{path}>")
        } else {
            path.to_string()
        }];
        argv.extend(params.iter().map(|p| p.raw.clone()));
        argv
    }

    /// MAIL FROM, after the sender restrictions.
    pub(super) async fn milter_mail(
        &mut self,
        path: &str,
        bracketed: bool,
        params: &[Param],
    ) -> Result<(), Reply> {
        self.milter.hold = false;
        self.milter.discard = false;
        let argv = Self::milter_argv(path, bracketed, params);
        let Some(v) = self
            .milter_event(async move |m, log| m.mail(log, &argv).await)
            .await
        else {
            return Ok(());
        };
        self.milter_verdict("MAIL", v, None).map_or(Ok(()), Err)
    }

    /// RCPT TO, after the recipient restrictions; `route` gives
    /// {rcpt_host} and {rcpt_mailer}.
    pub(super) async fn milter_rcpt(
        &mut self,
        given: &str,
        (path, bracketed, params): (&str, bool, &[Param]),
        route: &crate::routing::Route,
    ) -> Result<(), Reply> {
        if self.milter.set.is_none() {
            return Ok(());
        }
        let argv = Self::milter_argv(path, bracketed, params);
        let (rcpt, host, mailer) = (
            given.to_string(),
            route.nexthop.clone(),
            route.transport.clone(),
        );
        let Some(v) = self
            .milter_event(async move |m, log| {
                m.ctx.rcpt_addr = Some(rcpt);
                m.ctx.rcpt_host = Some(host);
                m.ctx.rcpt_mailer = Some(mailer);
                m.rcpt(log, &argv).await
            })
            .await
        else {
            return Ok(());
        };
        self.milter_verdict("RCPT", v, Some(given))
            .map_or(Ok(()), Err)
    }

    /// DATA, after smtpd_data_restrictions.
    pub(super) async fn milter_data(&mut self) -> Option<Reply> {
        let v = self.milter_event(async |m, log| m.data(log).await).await?;
        let last = self
            .tx
            .as_ref()
            .and_then(|t| t.recipients.last())
            .map(|r| r.address.clone());
        self.milter_verdict("DATA", v, last.as_deref())
    }

    /// A command smtpd does not know: the milter may answer it.
    pub(super) async fn milter_unknown(&mut self, line: &[u8]) -> Option<Reply> {
        let command = String::from_utf8_lossy(line).into_owned();
        let v = self
            .milter_event(async move |m, log| m.unknown(log, &command).await)
            .await?;
        self.milter_verdict("UNKNOWN", v, None)
    }

    /// The standing answer of a failed or rejecting milter, for commands
    /// without an event of their own (VRFY, ETRN).
    pub(super) fn milter_other(&self) -> Option<Reply> {
        match self.milter.set.as_ref()?.standing_reply()? {
            Verdict::Reply(text) => Some(milter::reply_of(&text)),
            _ => None,
        }
    }

    /// The transaction ended (RSET, HELO, end of data).
    pub(super) async fn milter_abort(&mut self) {
        self.milter.hold = false;
        self.milter.discard = false;
        let Some(mut set) = self.milter.set.take() else {
            return;
        };
        let core = std::rc::Rc::clone(&self.core);
        let program = self.settings.program.clone();
        set.abort(&move |l: &str| core.log.line(&program, l)).await;
        self.milter.set = Some(set);
    }

    /// After end of data (Postfix's mail_reset): abort the transaction
    /// at the milters; a 421 ends the session.
    pub(super) async fn milter_end_of_transaction(&mut self, flow: super::Flow) -> super::Flow {
        if self.milter.set.is_none() {
            return flow;
        }
        self.milter_abort().await;
        if self.milter.hangup {
            return super::Flow::Close;
        }
        flow
    }

    /// The session is over.
    pub(super) async fn milter_quit(&mut self) {
        if let Some(mut set) = self.milter.set.take() {
            set.quit().await;
        }
    }

    /// End of data (cleanup's milter step): the content as it will be
    /// queued goes to the milters; their verdict is logged by cleanup and
    /// their edits applied to `content` and `envelope`.
    pub(super) async fn milter_message(
        &mut self,
        envelope: &mut Envelope,
        content: &mut Vec<u8>,
    ) -> MilterEnd {
        if self.milter.set.is_none() {
            return MilterEnd::Queue;
        }
        envelope.held |= self.milter.hold;
        if self.milter.discard {
            return MilterEnd::Discard;
        }
        let mut message = Message::parse(content);
        let id = envelope.queue_id;
        let v = {
            let msg = &mut message;
            self.milter_event(async move |m, log| {
                m.ctx.queue_id = Some(id.to_string());
                m.message(log, msg).await
            })
            .await
        };
        let cleanup_log = |line: &str| self.core.log.line("corepost/cleanup", line);
        // Postfix's cleanup names the last recipient it was given.
        let last = envelope
            .recipients
            .last()
            .map(|r| r.address.clone())
            .unwrap_or_default();
        if message.changed {
            *content = message.assemble();
        }
        if let Err(e) = milter::apply_envelope(
            &message.envelope,
            envelope,
            &self.settings.router,
            &cleanup_log,
        ) {
            cleanup_log(&format!("warning: {id}: milter edit: {e}"));
            return MilterEnd::Refuse(Reply::new(451, "4.3.0", "Error: queue file write error"));
        }
        let line = |action: &str, text: &str| {
            format!(
                "{id}: {action}: END-OF-MESSAGE from {}: {text}; from=<{}> to=<{last}> proto={} helo=<{}>",
                self.client(),
                envelope.sender,
                envelope.client.protocol,
                self.helo.as_deref().unwrap_or("")
            )
        };
        match v {
            None => MilterEnd::Queue,
            Some(Verdict::Hold) => {
                cleanup_log(&line("milter-hold", "milter triggers HOLD action"));
                envelope.held = true;
                MilterEnd::Queue
            }
            Some(Verdict::Discard) => {
                cleanup_log(&line("milter-discard", "milter triggers DISCARD action"));
                MilterEnd::Discard
            }
            Some(Verdict::Shutdown) => {
                cleanup_log(&line("milter-reject", "message content rejected"));
                self.milter.hangup = true;
                MilterEnd::Refuse(milter::reply_of("421 4.7.0 Server closing connection"))
            }
            Some(Verdict::Reply(text)) => {
                cleanup_log(&line(
                    "milter-reject",
                    text.get(4..).unwrap_or("").replace("\r\n", " ").as_str(),
                ));
                let reply = milter::reply_of(&text);
                crate::metrics::rejected("END-OF-MESSAGE", reply.code, "", &reply.text);
                self.milter.hangup |= reply.code == 421;
                MilterEnd::Refuse(reply)
            }
        }
    }
}
