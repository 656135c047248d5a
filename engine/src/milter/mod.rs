//! The milter client: Sendmail's mail filter protocol (version 6) as
//! Postfix speaks it, for smtpd (`smtpd_milters`, `smtpd_milter_maps`)
//! and local submissions (`non_smtpd_milters`).
//!
//! - `codec.rs`: the packets (property-tested; a fuzz target decodes
//!   replies).
//! - `spec.rs`: milter lists, per-milter overrides, `milter_protocol`.
//! - `conn.rs`: one milter per SMTP session: negotiation, the events, the
//!   replies, Postfix's state machine and default actions.
//! - `macros.rs`: which macros go with which event and their values.
//! - `edit.rs`: end-of-message header/body edits, in Postfix's indexes.
//!
//! The caller (smtpd's session, pickup) owns the decisions: this module
//! answers each event with an optional [`Verdict`] — the first milter
//! that answers ends the event for the ones after it, as in Postfix's
//! milter.c — and leaves logging the verdict and replying to the caller.
//! Nothing here blocks: every exchange is awaited on the core's executor
//! with the milter's timeouts.

pub mod codec;
pub mod conn;
pub mod edit;
pub mod local;
pub mod macros;
pub mod spec;

#[cfg(test)]
mod session_tests;

pub use conn::Verdict;
use conn::{Conn, Log};
use corepost_config::tables::TableList;
use macros::{MacroConfig, MacroContext, Stage};
use spec::{Defaults, MilterSpec};
use std::sync::Arc;

/// The milters of one service (or of local submission).
#[derive(Debug)]
pub struct MilterSettings {
    pub milters: Vec<Arc<MilterSpec>>,
    /// `smtpd_milter_maps`: per client address, a milter list or DISABLE.
    pub maps: TableList,
    defaults: Defaults,
    pub macros: Arc<MacroConfig>,
}

type Get<'a> = &'a dyn Fn(&str) -> Result<String, corepost_config::ConfigError>;

impl MilterSettings {
    /// smtpd's milters; `None` when there are none (or
    /// `receive_override_options = no_milters`).
    pub fn smtpd(get: Get<'_>) -> Result<Option<Arc<MilterSettings>>, String> {
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        let maps = text("smtpd_milter_maps")?;
        Self::build(get, &text("smtpd_milters")?, &maps)
    }

    /// `non_smtpd_milters`, for pickup.
    pub fn non_smtpd(get: Get<'_>) -> Result<Option<Arc<MilterSettings>>, String> {
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        Self::build(get, &text("non_smtpd_milters")?, "")
    }

    fn build(get: Get<'_>, list: &str, maps: &str) -> Result<Option<Arc<MilterSettings>>, String> {
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        let off = corepost_config::list::split_list(&text("receive_override_options")?)
            .map_err(|e| e.to_string())?
            .iter()
            .any(|o| o == "no_milters");
        if off || (list.trim().is_empty() && maps.trim().is_empty()) {
            return Ok(None);
        }
        let defaults = Defaults::from_params(&text)?;
        let milters = spec::parse_list(list, &defaults)?
            .into_iter()
            .map(Arc::new)
            .collect();
        let maps =
            TableList::open(maps).map_err(|e| format!("parameter smtpd_milter_maps: {e}"))?;
        Ok(Some(Arc::new(MilterSettings {
            milters,
            maps,
            defaults,
            macros: Arc::new(MacroConfig::from_params(&text)?),
        })))
    }

    /// The milters for a client (Postfix: the `smtpd_milter_maps` result
    /// for the client address replaces `smtpd_milters`; DISABLE turns
    /// milters off). A lookup or syntax failure answers every command
    /// with a temporary failure, as a failed milter would.
    pub fn session(self: &Arc<Self>, client_addr: &str, log: Log<'_>) -> Option<MilterSet> {
        let mut broken = None;
        let milters = match self.maps.lookup(client_addr) {
            Ok(None) => self.milters.clone(),
            Ok(Some(v)) if v.trim().eq_ignore_ascii_case("disable") => Vec::new(),
            Ok(Some(v)) => match spec::parse_list(&v, &self.defaults) {
                Ok(l) => l.into_iter().map(Arc::new).collect(),
                Err(e) => {
                    log(&format!(
                        "warning: smtpd_milter_maps: bad result \"{v}\" for {client_addr}: {e}"
                    ));
                    broken = Some(Verdict::Reply(
                        "451 4.3.5 Server configuration problem - try again later".into(),
                    ));
                    Vec::new()
                }
            },
            Err(e) => {
                log(&format!(
                    "warning: smtpd_milter_maps lookup error for {client_addr}: {e}"
                ));
                broken = Some(Verdict::Reply("451 4.3.0 Temporary lookup failure".into()));
                Vec::new()
            }
        };
        if milters.is_empty() && broken.is_none() {
            return None;
        }
        Some(MilterSet {
            conns: milters.into_iter().map(Conn::new).collect(),
            macros: Arc::clone(&self.macros),
            broken,
            ctx: MacroContext::default(),
        })
    }
}

/// The milters of one SMTP session (or one local submission).
pub struct MilterSet {
    conns: Vec<Conn>,
    macros: Arc<MacroConfig>,
    /// A standing answer when the milter list could not be determined.
    broken: Option<Verdict>,
    /// What the macros are computed from; the caller keeps it current.
    pub ctx: MacroContext,
}

impl MilterSet {
    fn macros_for(&self, conn: &Conn, stage: Stage) -> Vec<(String, String)> {
        self.ctx
            .evaluate(&self.macros, conn.macro_names(stage, &self.macros.lists))
    }

    /// Open every milter and report the connection. `host` is the client
    /// name (Postfix sends `[addr]` for an unknown one); `addr` is `None`
    /// for local submissions without an address family.
    pub async fn connect(
        &mut self,
        log: Log<'_>,
        host: &str,
        addr: Option<std::net::SocketAddr>,
    ) -> Option<Verdict> {
        if self.broken.is_some() {
            return self.broken.clone();
        }
        let host = if host == "unknown" {
            addr.map_or(host.to_string(), |a| format!("[{}]", a.ip()))
        } else {
            host.to_string()
        };
        let (ctx, config) = (&self.ctx, &self.macros);
        for c in &mut self.conns {
            let macros =
                |c: &Conn| ctx.evaluate(config, c.macro_names(Stage::Connect, &config.lists));
            if let Some(v) = c.connect(log, &macros, &host, addr).await {
                return Some(v);
            }
        }
        None
    }

    async fn envelope(
        &mut self,
        log: Log<'_>,
        stage: Stage,
        args: &[codec::Arg<'_>],
    ) -> Option<Verdict> {
        if self.broken.is_some() {
            return self.broken.clone();
        }
        for i in 0..self.conns.len() {
            let macros = self.macros_for(&self.conns[i], stage);
            if let Some(v) = self.conns[i]
                .envelope_event(log, stage.command(), &macros, args)
                .await
            {
                return Some(v);
            }
        }
        None
    }

    pub async fn helo(&mut self, log: Log<'_>, helo: &str) -> Option<Verdict> {
        self.envelope(log, Stage::Helo, &[codec::Arg::Str(helo)])
            .await
    }

    /// MAIL FROM: the address as the client sent it (`<a@b>`), then the
    /// ESMTP parameters.
    pub async fn mail(&mut self, log: Log<'_>, argv: &[String]) -> Option<Verdict> {
        let args: Vec<_> = argv.iter().map(|a| codec::Arg::Str(a)).collect();
        self.envelope(log, Stage::Mail, &args).await
    }

    pub async fn rcpt(&mut self, log: Log<'_>, argv: &[String]) -> Option<Verdict> {
        let args: Vec<_> = argv.iter().map(|a| codec::Arg::Str(a)).collect();
        self.envelope(log, Stage::Rcpt, &args).await
    }

    pub async fn data(&mut self, log: Log<'_>) -> Option<Verdict> {
        self.envelope(log, Stage::Data, &[]).await
    }

    pub async fn unknown(&mut self, log: Log<'_>, command: &str) -> Option<Verdict> {
        self.envelope(log, Stage::Unknown, &[codec::Arg::Str(command)])
            .await
    }

    /// The content: every milter in turn sees (and may edit) the message
    /// as the ones before it left it.
    pub async fn message(&mut self, log: Log<'_>, message: &mut edit::Message) -> Option<Verdict> {
        if self.broken.is_some() {
            return self.broken.clone();
        }
        for i in 0..self.conns.len() {
            let eoh = self.macros_for(&self.conns[i], Stage::EndOfHeader);
            let eod = self.macros_for(&self.conns[i], Stage::EndOfData);
            if let Some(v) = self.conns[i].message(log, message, &eoh, &eod).await {
                return Some(v);
            }
        }
        None
    }

    /// The transaction is over (RSET, HELO again, end of data).
    pub async fn abort(&mut self, log: Log<'_>) {
        for c in &mut self.conns {
            c.abort(log).await;
        }
    }

    /// The session is over.
    pub async fn quit(&mut self) {
        for c in &mut self.conns {
            c.quit().await;
        }
    }

    /// What a failed or rejecting milter answers to commands without an
    /// event of their own (VRFY, ETRN): Postfix's milter_other_event.
    pub fn standing_reply(&self) -> Option<Verdict> {
        self.broken
            .clone()
            .or_else(|| self.conns.iter().find_map(Conn::standing_reply))
    }
}

/// A 4xx/5xx verdict text (possibly multi-line) as an SMTP reply.
pub fn reply_of(text: &str) -> crate::smtpd::reply::Reply {
    let code = text
        .get(..3)
        .and_then(|c| c.parse::<u16>().ok())
        .unwrap_or(451);
    let lines: Vec<&str> = text
        .split('\n')
        .map(|l| l.trim_end_matches('\r'))
        .map(|l| l.get(4..).unwrap_or(""))
        .collect();
    crate::smtpd::reply::Reply::new(code, "", lines.join("\n"))
}

/// Apply the envelope edits milters asked for at end of message, in
/// order, as Postfix's cleanup does: a new sender, added recipients
/// (routed like any other; ESMTP arguments are ignored with a warning)
/// and deleted ones (every recipient whose original address matches).
pub fn apply_envelope(
    edits: &[edit::EnvelopeEdit],
    envelope: &mut corepost_spool::Envelope,
    router: &crate::routing::Router,
    log: Log<'_>,
) -> Result<(), String> {
    let id = envelope.queue_id;
    let internal = |a: &str| {
        let a = a.trim();
        a.strip_prefix('<')
            .and_then(|a| a.strip_suffix('>'))
            .unwrap_or(a)
            .to_string()
    };
    for e in edits {
        match e {
            edit::EnvelopeEdit::ChangeFrom(address, args) => {
                if !args.is_empty() {
                    log(&format!(
                        "warning: {id}: cleanup_chg_from: ignoring ESMTP arguments \"{args:.100}\""
                    ));
                }
                envelope.sender = internal(address);
            }
            edit::EnvelopeEdit::AddRcpt(address, args) => {
                let (notify, orcpt) = rcpt_args(args, &|a: &str| {
                    log(&format!(
                        "warning: {id}: cleanup_add_rcpt_par: ignoring ESMTP argument \"{a:.100}\""
                    ))
                });
                let address = internal(address);
                if address.is_empty() {
                    log(&format!(
                        "warning: {id}: ignoring attempt from Milter to add null recipient"
                    ));
                    continue;
                }
                let (_, domain) = crate::routing::split_address(&address);
                let route = router
                    .classify(domain)
                    .and_then(|class| router.route(&envelope.sender, &address, class))
                    .map_err(|e| format!("<{address}>: {e}"))?;
                envelope.recipients.push(corepost_spool::Recipient {
                    address,
                    notify,
                    orcpt,
                    transport: route.transport,
                    nexthop: route.nexthop,
                    ..corepost_spool::Recipient::default()
                });
            }
            edit::EnvelopeEdit::DelRcpt(address) => {
                let address = internal(address);
                envelope
                    .recipients
                    .retain(|r| r.original.as_deref().unwrap_or(&r.address) != address);
            }
        }
    }
    Ok(())
}

/// SMFIR_ADDRCPT_PAR's ESMTP arguments: NOTIFY and ORCPT, as Postfix 3
/// keeps them; anything else is reported and ignored.
fn rcpt_args(args: &str, ignored: &dyn Fn(&str)) -> (u8, Option<String>) {
    use corepost_spool::record::notify;
    let (mut bits, mut orcpt) = (0, None);
    for arg in args.split_ascii_whitespace() {
        let (k, v) = arg.split_once('=').unwrap_or((arg, ""));
        if k.eq_ignore_ascii_case("NOTIFY") {
            let mut b = 0;
            for word in v.split(',') {
                b |= match word.to_ascii_uppercase().as_str() {
                    "NEVER" => notify::NEVER,
                    "SUCCESS" => notify::SUCCESS,
                    "FAILURE" => notify::FAILURE,
                    "DELAY" => notify::DELAY,
                    _ => 0,
                };
            }
            bits = b;
        } else if k.eq_ignore_ascii_case("ORCPT") && v.contains(';') {
            orcpt = crate::smtpd::address::decode_xtext(v);
        } else {
            ignored(arg);
        }
    }
    (bits, orcpt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(extra: &[(&str, &str)]) -> Result<Option<Arc<MilterSettings>>, String> {
        let get = |n: &str| -> Result<String, corepost_config::ConfigError> {
            if let Some((_, v)) = extra.iter().find(|(k, _)| *k == n) {
                return Ok(v.to_string());
            }
            Ok(match n {
                "milter_connect_timeout" | "milter_command_timeout" => "30s".into(),
                "milter_content_timeout" => "300s".into(),
                "milter_protocol" => "6".into(),
                "milter_default_action" => "tempfail".into(),
                "queue_directory" => "/var/spool/corepost".into(),
                _ => String::new(),
            })
        };
        MilterSettings::smtpd(&get)
    }

    #[test]
    fn no_milters_unless_configured_and_not_with_no_milters() {
        assert!(params(&[]).unwrap().is_none());
        let on = [("smtpd_milters", "inet:127.0.0.1:8891")];
        let s = params(&on).unwrap().expect("milters");
        assert_eq!(s.milters[0].name, "inet:127.0.0.1:8891");
        let off = [on[0], ("receive_override_options", "no_milters")];
        assert!(params(&off).unwrap().is_none());
        let bad = [on[0], ("milter_default_action", "bounce")];
        assert!(params(&bad).unwrap_err().contains("milter_default_action"));
    }

    #[test]
    fn smtpd_milter_maps_replace_or_disable_the_list() {
        let s = params(&[
            ("smtpd_milters", "inet:127.0.0.1:8891"),
            (
                "smtpd_milter_maps",
                "inline:{ 192.0.2.1=DISABLE, { 192.0.2.2 = inet:127.0.0.1:1 inet:127.0.0.1:2 } }",
            ),
        ])
        .unwrap()
        .expect("milters");
        let log = |l: &str| panic!("{l}");
        assert!(s.session("192.0.2.1", &log).is_none());
        assert_eq!(s.session("192.0.2.2", &log).expect("list").conns.len(), 2);
        let default = s.session("192.0.2.3", &log).expect("default");
        assert_eq!(default.conns[0].spec.name, "inet:127.0.0.1:8891");
    }

    #[test]
    fn multi_line_replies_keep_their_lines() {
        let r = reply_of("550-5.7.1 first\r\n550 5.7.1 second");
        assert_eq!(r.code, 550);
        let mut out = Vec::new();
        r.write_to(&mut out);
        assert_eq!(out, b"550-5.7.1 first\r\n550 5.7.1 second\r\n");
    }
}
