//! Postfix's protocol policing and the two query commands: improper
//! command pipelining (`reject_unauth_pipelining`,
//! `smtpd_forbid_unauth_pipelining`), bare `<LF>` on command lines
//! (`smtpd_forbid_bare_newline = reject`), VRFY and ETRN (RFC 1985,
//! `smtpd_etrn_restrictions`, `fast_flush_domains`).
//!
//! A child module of `session`, like `tls_auth`, so it can work on the
//! session's state.

use super::{Command, Flow, Reply, Session, Stage, verb_upper};
use crate::smtpd::data::BareNewline;

/// How much of the waiting input the improper-pipelining log line shows.
const LOGGED_INPUT: usize = 100;

impl Session {
    /// Input that arrived before the greeting: improper pipelining "after
    /// CONNECT".
    pub(super) async fn talk_before_greeting(&mut self) -> Flow {
        if self.conn.buffered().is_empty() {
            let _ = self.conn.fill(self.settings.timeout).await;
        }
        self.improper_pipelining("CONNECT")
    }

    /// Postfix's check before it executes a command: input waiting behind
    /// a command that must end a pipelined group (HELO, EHLO, NOOP, VRFY,
    /// DATA, STARTTLS — RFC 2920 §3.1), or behind any command when the
    /// client was not offered PIPELINING (no EHLO).
    pub(super) fn check_pipelining(&mut self, command: &Command) -> Flow {
        if self.ill_pipelining || self.conn.buffered().is_empty() {
            return Flow::Continue;
        }
        let group_end = match command {
            Command::Helo(_)
            | Command::Ehlo(_)
            | Command::Noop
            | Command::Vrfy(_)
            | Command::Data
            | Command::StartTls
            | Command::Xclient(_) => true,
            // The chunk follows BDAT; nothing matters after QUIT.
            Command::Bdat { .. } | Command::Quit => return Flow::Continue,
            _ => false,
        };
        if !group_end && self.esmtp {
            return Flow::Continue;
        }
        self.improper_pipelining(verb_upper(command.verb()))
    }

    /// Log, set the session's flag, and with smtpd_forbid_unauth_pipelining
    /// answer `554 5.5.0 Error: SMTP protocol synchronization` and hang up.
    fn improper_pipelining(&mut self, after: &str) -> Flow {
        let waiting = self.conn.buffered();
        let shown = escape(&waiting[..waiting.len().min(LOGGED_INPUT)]);
        self.log(&format!(
            "improper command pipelining after {after} from {}: {shown}",
            self.client()
        ));
        self.ill_pipelining = true;
        if self.settings.forbid_unauth_pipelining {
            self.reply(Reply::new(
                554,
                "5.5.0",
                "Error: SMTP protocol synchronization",
            ));
            return Flow::Close;
        }
        Flow::Continue
    }

    /// smtpd_forbid_bare_newline = reject, and the client is not in
    /// smtpd_forbid_bare_newline_exclusions.
    pub(super) fn rejects_bare_newline(&self) -> bool {
        self.settings.bare_newline == BareNewline::Reject
            && !self
                .settings
                .bare_newline_exclusions
                .contains(self.peer.ip())
    }

    /// The reply to a command or message with a bare `<LF>`.
    pub(super) fn bare_newline_reply(&self) -> Reply {
        let code = self.settings.bare_newline_reject_code;
        Reply::new(
            code,
            if code >= 500 { "5.5.2" } else { "4.5.2" },
            format!("{} Error: bare <LF> received", self.settings.myhostname),
        )
    }

    /// A command line ended by a bare `<LF>`: Postfix rejects it, logs
    /// where the session was, and disconnects.
    pub(super) fn bare_newline_command(&mut self) {
        self.log_event("reject", self.last_command, "bare <LF> received", None);
        let reply = self.bare_newline_reply();
        crate::metrics::rejected(self.last_command, reply.code, reply.status, "");
        if crate::events::enabled() {
            self.reject_event(self.last_command, &reply, None);
        }
        self.reply(reply);
    }

    /// VRFY: the recipient restrictions and tables, as for RCPT
    /// (Postfix's smtpd_check_rcpt), then `252 2.0.0 <argument>`.
    pub(super) async fn vrfy(&mut self, arg: &str) -> Result<Reply, Reply> {
        if self.settings.disable_vrfy {
            return Err(Reply::new(502, "5.5.1", "VRFY command is disabled"));
        }
        if let Some(reply) = self.milter_other() {
            return Err(reply);
        }
        self.junk += 1;
        if self.junk > self.settings.junk_command_limit {
            self.errors += 1;
        }
        let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
        let first = words.next().unwrap_or_default();
        let smtputf8 = match (words.next(), words.next()) {
            (None, _) => false,
            (Some(w), None) if w.eq_ignore_ascii_case("SMTPUTF8") => true,
            _ => {
                self.log(&format!(
                    "warning: Illegal address syntax from {} in VRFY command: {arg}",
                    self.client()
                ));
                return Err(Reply::new(501, "5.1.3", "Bad recipient address syntax"));
            }
        };
        let (path, bracketed) = match first.strip_prefix('<').and_then(|p| p.strip_suffix('>')) {
            Some(inner) => (inner, true),
            None => (first, false),
        };
        let given = self.envelope_address("VRFY", path, bracketed, smtputf8)?;
        let address = self.settings.qualify.qualify(&given);
        self.recipient_verdict(&given, &address, "VRFY").await?;
        Ok(Reply::new(252, "2.0.0", first))
    }

    /// ETRN (RFC 1985): flush this destination's deferred mail on every
    /// core, as `corepost queue flush <domain>` does. Replies and their
    /// order are Postfix's.
    pub(super) async fn etrn(&mut self, arg: &str) -> Result<Reply, Reply> {
        if self.settings.helo_required && self.helo.is_none() {
            return Err(Reply::new(503, "5.5.1", "Error: send HELO/EHLO first"));
        }
        if self.tx.is_some() {
            return Err(Reply::new(503, "", "Error: MAIL transaction in progress"));
        }
        let mut words = arg.split([' ', '\t']).filter(|w| !w.is_empty());
        let (Some(argument), None) = (words.next(), words.next()) else {
            return Err(Reply::new(500, "", "Syntax: ETRN domain"));
        };
        // `@domain` (subdomains too) and `#queue` name the same site here.
        let domain = argument
            .strip_prefix(['@', '#'])
            .unwrap_or(argument)
            .to_ascii_lowercase();
        if crate::smtpd::address::parse_domain(&domain).is_err() || domain.starts_with('[') {
            return Err(Reply::new(501, "", "Error: invalid parameter syntax"));
        }
        self.junk += 1;
        if self.junk > self.settings.junk_command_limit {
            self.errors += 1;
        }
        if let Some(reply) = self.etrn_restrictions(argument).await {
            return Err(reply);
        }
        match self.settings.fast_flush_domains.matches(&domain) {
            Ok(true) => {}
            Ok(false) => {
                self.log(&format!(
                    "warning: reject: ETRN {domain}... from {}",
                    self.client()
                ));
                return Err(Reply::new(
                    459,
                    "",
                    format!("<{domain}>: service unavailable"),
                ));
            }
            Err(e) => {
                self.log(&format!("warning: fast_flush_domains: {e}"));
                return Err(Reply::new(458, "", "Unable to queue messages"));
            }
        }
        if !self.core.peers.flush(Some(&domain)) {
            return Err(Reply::new(458, "", "Unable to queue messages"));
        }
        Ok(Reply::new(250, "", "Queuing started"))
    }

    /// smtpd_etrn_restrictions (with smtpd_delay_reject, the client and
    /// HELO lists first, as Postfix does).
    async fn etrn_restrictions(&mut self, domain: &str) -> Option<Reply> {
        if self.settings.policy.is_empty("smtpd_etrn_restrictions") {
            return None;
        }
        let lists = [
            ("smtpd_client_restrictions", Stage::Client),
            ("smtpd_helo_restrictions", Stage::Helo),
            ("smtpd_etrn_restrictions", Stage::Etrn),
        ];
        let lists = if self.settings.delay_reject {
            &lists[..]
        } else {
            &lists[2..]
        };
        self.etrn_domain = Some(domain.to_string());
        let verdict = self.restrict(lists, None, "ETRN").await;
        self.etrn_domain = None;
        let reply = verdict?;
        self.log_reject("ETRN", &reply, None);
        Some(reply)
    }
}

/// Postfix's escape(): printable ASCII as is, C escapes for the usual
/// control characters, octal for the rest.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 8);
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            0x0b => out.push_str("\\v"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03o}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_like_postfix() {
        assert_eq!(escape(b"MAIL FROM:<a>\r\n"), "MAIL FROM:<a>\\r\\n");
        assert_eq!(escape(b"a\\b\x01\xff"), "a\\\\b\\001\\377");
    }
}
