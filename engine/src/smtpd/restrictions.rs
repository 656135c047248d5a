//! Evaluating smtpd restriction lists (`smtpd_client_restrictions`,
//! `..._helo_...`, `..._sender_...`, `..._relay_...`, `..._recipient_...`,
//! `..._data_...`, `..._end_of_data_...`) and named restriction classes.
//!
//! Each list is evaluated on its own, left to right: a permit ends that list
//! (the next list still runs), a reject or defer ends the command. With
//! `smtpd_delay_reject = yes` (the default) client, HELO and sender lists
//! run at RCPT time, so rejections are logged with the recipient.
//!
//! Replies and their texts are Postfix's (`smtpd_check.c`): a rejection
//! names what it talks about (`<addr>: Sender address rejected: ...`).
//! `defer_if_permit` results (DNS trouble, access-table `DEFER_IF_PERMIT`)
//! are remembered and turn into a 4xx reply only when nothing rejects
//! (see [`Policy::check`]); `defer_if_reject` turns a later 5xx into 4xx.
//!
//! Access tables (`check_*_access`) return Postfix's actions: OK, PERMIT,
//! REJECT/DEFER/DEFER_IF_* (with optional text), 4NN/5NN text, DUNNO, WARN, HOLD,
//! DISCARD, REDIRECT, FILTER, PREPEND, or a restriction list (or class
//! name). Actions that change the message (HOLD, DISCARD, REDIRECT,
//! FILTER, PREPEND) are collected in [`Actions`] and applied when the
//! message is queued ([`Actions::apply`]).
//!
//! Access-table results are in `restrictions/access.rs`, relay resolution and the
//! unlisted-address checks in `restrictions/relay.rs`. DNS-based restrictions live in
//! [`super::dns_checks`], the policy
//! delegation protocol in [`super::policy_service`]; both are awaited on
//! the core's executor and never block it. The restrictions that belong to
//! SASL/TLS (`permit_sasl_authenticated`, `reject_*sender_login_mismatch`)
//! only look at [`Facts::sasl_user`] here. A restriction corepost cannot
//! evaluate answers like Postfix does for a restriction it cannot
//! evaluate: `451 4.3.5 Server configuration error`, with a log warning
//! naming it — never a silent pass.

use super::dns_checks::{self, DnsChecks};
use super::networks::NetworkList;
use super::policy_service::PolicyServices;
use super::reply::Reply;
use crate::routing::{AddressClass, Router};
use corepost_config::restrictions::{Argument, Restriction, argument_of, parse_restrictions};
use corepost_config::tables::TableList;
use corepost_config::tables::keys::{access_keys, client_keys, domain_keys};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

/// Where in the dialogue a list is evaluated; decides reply wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Client,
    Helo,
    Sender,
    Relay,
    Recipient,
    Data,
    EndOfData,
    /// smtpd_etrn_restrictions (the domain is `Facts::etrn_domain`).
    Etrn,
}

/// The outcome of a host name lookup (Postfix's `name_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NameStatus {
    Ok,
    /// Temporary failure (timeout, SERVFAIL): answers are 4xx.
    TempFail,
    /// No name, or the name does not map back to the address; also when
    /// no lookup was done (DNS lookups off).
    #[default]
    NotFound,
}

/// What the session knows when a list is evaluated.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub client_addr: IpAddr,
    /// The verified (forward-confirmed) client name, or `unknown`.
    pub client_name: &'a str,
    pub client_name_status: NameStatus,
    /// The PTR name, not forward-confirmed, or `unknown`.
    pub reverse_client_name: &'a str,
    pub reverse_name_status: NameStatus,
    pub helo: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub recipient: Option<&'a str>,
    /// The class of the recipient's *effective* destination (after Postfix's
    /// resolution of sender-specified routing, see [`relay_class`]).
    pub recipient_class: Option<AddressClass>,
    /// The recipient uses sender-specified routing (`%`, `!`, `@` in the
    /// local part) towards a non-local destination.
    pub recipient_routed: bool,
    pub sasl_user: Option<&'a str>,
    pub esmtp: bool,
    /// The session saw improper pipelining (Postfix's flag).
    pub pipelined: bool,
    /// Client input is waiting unread right now.
    pub input_pending: bool,
    /// Postfix's protocol state: CONNECT, EHLO, HELO, MAIL, RCPT, DATA,
    /// END-OF-MESSAGE.
    pub command: &'a str,
    pub queue_id: &'a str,
    /// Unique per session (policy servers use it to tell transactions apart).
    pub instance: &'a str,
    pub recipient_count: usize,
    pub size: u64,
    /// The sender is in a local or virtual domain but not in its class's
    /// recipient table: (reply code, table name). See [`unlisted`].
    pub sender_unlisted: Option<(u16, &'static str)>,
    /// The same for the recipient.
    pub recipient_unlisted: Option<(u16, &'static str)>,
    /// The client's source port (policy `client_port`).
    pub client_port: u16,
    /// The local address and port the client connected to (policy
    /// `server_address`, `server_port`).
    pub server: Option<std::net::SocketAddr>,
    /// The SASL mechanism the client authenticated with.
    pub sasl_method: Option<&'a str>,
    /// The ETRN argument, at the ETRN stage (policy `etrn_domain`).
    pub etrn_domain: Option<&'a str>,
    /// The service was at its process limit when this session was admitted
    /// (Postfix's `stress` parameter).
    pub stress: bool,
    /// The TLS session, once encrypted.
    pub tls: Option<&'a super::tls::TlsSummary>,
}

impl<'a> Facts<'a> {
    /// Facts about a client only (tests and the connect stage).
    pub fn client(addr: IpAddr) -> Facts<'a> {
        Facts {
            client_addr: addr,
            client_name: "unknown",
            client_name_status: NameStatus::NotFound,
            reverse_client_name: "unknown",
            reverse_name_status: NameStatus::NotFound,
            helo: None,
            sender: None,
            recipient: None,
            recipient_class: None,
            recipient_routed: false,
            sasl_user: None,
            esmtp: true,
            pipelined: false,
            input_pending: false,
            command: "CONNECT",
            queue_id: "",
            instance: "",
            recipient_count: 0,
            size: 0,
            sender_unlisted: None,
            recipient_unlisted: None,
            client_port: 0,
            server: None,
            sasl_method: None,
            etrn_domain: None,
            stress: false,
            tls: None,
        }
    }
}

/// A decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// No restriction in the list decided.
    Dunno,
    Permit,
    Reject(Reply),
    /// A WARN result: log and go on.
    Warn(String),
}

/// Message-changing access actions, applied when the message is queued.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Actions {
    pub hold: bool,
    pub discard: bool,
    /// `transport:nexthop` of a FILTER action.
    pub filter: Option<String>,
    /// The address of a REDIRECT action.
    pub redirect: Option<String>,
    /// Header lines of PREPEND actions, in order.
    pub prepend: Vec<String>,
}

impl Actions {
    /// Merge actions found by a later command into the transaction's.
    pub fn merge(&mut self, other: Actions) {
        self.hold |= other.hold;
        self.discard |= other.discard;
        if other.filter.is_some() {
            self.filter = other.filter;
        }
        if other.redirect.is_some() {
            self.redirect = other.redirect;
        }
        self.prepend.extend(other.prepend);
    }

    /// Apply HOLD, FILTER, REDIRECT and PREPEND to a message about to be
    /// queued (DISCARD is the caller's: nothing is queued). REDIRECT
    /// replaces every recipient by one, routed like any other.
    pub fn apply(
        &self,
        router: &Router,
        envelope: &mut corepost_spool::Envelope,
        headers: &mut Vec<u8>,
    ) -> Result<(), String> {
        envelope.held |= self.hold;
        if let Some(to) = &self.redirect
            && let Some(first) = envelope.recipients.first().cloned()
        {
            let (_, domain) = crate::routing::split_address(to);
            let class = router.classify(domain).map_err(|e| e.to_string())?;
            let route = router
                .route(&envelope.sender, to, class)
                .map_err(|e| e.to_string())?;
            envelope.recipients = vec![corepost_spool::Recipient {
                address: to.clone(),
                orcpt: None,
                transport: route.transport,
                nexthop: route.nexthop,
                ..first
            }];
        }
        if let Some(filter) = &self.filter
            && let Some((transport, nexthop)) = filter.split_once(':')
        {
            for r in &mut envelope.recipients {
                r.transport = transport.to_string();
                if !nexthop.is_empty() {
                    r.nexthop = nexthop.to_string();
                }
            }
        }
        for h in &self.prepend {
            headers.extend_from_slice(h.as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
        Ok(())
    }
}

/// What one evaluation found besides its decision: log lines and actions.
#[derive(Debug, Default)]
pub struct Outcome {
    /// `warning: ...` log lines (configuration trouble).
    pub warnings: Vec<String>,
    /// Postfix's "whatsup" events, logged like a reject line:
    /// (`warn`|`hold`|`discard`|`filter`|`redirect`|`reject_warning`, text).
    pub events: Vec<(&'static str, String)>,
    pub actions: Actions,
    defer_if_permit: Option<Reply>,
    defer_if_reject: Option<Reply>,
    warn_if_reject: bool,
}

impl Outcome {
    /// Postfix's DEFER_IF_REJECT: a later reject answers with `reply`
    /// instead (the first one set wins).
    pub fn defer_if_reject(&mut self, reply: Reply) {
        self.defer_if_reject.get_or_insert(reply);
    }
}

#[derive(Debug, Clone)]
struct Compiled {
    restriction: Restriction,
    table: Option<TableList>,
}

/// All restriction lists of one service, with their tables opened.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    lists: HashMap<String, Vec<Compiled>>,
    classes: Vec<String>,
    mynetworks: NetworkList,
    parent_access: bool,
    recipient_delimiter: String,
    null_sender_key: String,
    allow_untrusted_routing: bool,
    reject_unlisted_sender: bool,
    needs_unlisted: (bool, bool),
    /// `reject_unauth_pipelining` may be evaluated (see [`Policy::needs_pending_input`]).
    needs_pending_input: bool,
    codes: Codes,
    /// `smtpd_sender_login_maps` (the `*_sender_login_mismatch` checks).
    sender_login_maps: TableList,
    /// `smtpd_log_access_permit_actions`.
    permit_log: permit_log::PermitLog,
    pub(crate) dns: DnsChecks,
    pub(crate) policy_services: PolicyServices,
}

#[derive(Debug, Clone, Default)]
struct Codes {
    reject: u16,
    defer: u16,
    relay: u16,
    access: u16,
    access_defer: u16,
    non_fqdn: u16,
    invalid_hostname: u16,
    unknown_client: u16,
    unknown_hostname: u16,
    unknown_address: u16,
    multi_recipient_bounce: u16,
}

/// The stage names of the lists, in evaluation order.
pub const LISTS: &[&str] = &[
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
    "smtpd_end_of_data_restrictions",
    "smtpd_etrn_restrictions",
];

/// How deep restriction classes may nest (Postfix allows 100; every level
/// is a nested future, and 20 is far beyond any real configuration).
const MAX_CLASS_DEPTH: usize = 20;

type Eval<'s> = Pin<Box<dyn Future<Output = Decision> + 's>>;

impl Policy {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
        mynetworks: NetworkList,
    ) -> Result<Policy, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let classes: Vec<String> =
            corepost_config::list::split_list(&s("smtpd_restriction_classes")?)
                .unwrap_or_default()
                .into_iter()
                .map(|c| c.to_ascii_lowercase())
                .collect();
        let mut lists = HashMap::new();
        for name in LISTS
            .iter()
            .map(|n| n.to_string())
            .chain(classes.iter().cloned())
        {
            let parsed =
                parse_restrictions(&s(&name)?, &classes).map_err(|e| format!("{name}: {e}"))?;
            let mut compiled = Vec::new();
            for r in parsed {
                let table = match argument_of(&r.name) {
                    Some(Argument::Table) => Some(
                        TableList::open(r.argument.as_deref().unwrap_or_default())
                            .map_err(|e| format!("{name}: {e}"))?,
                    ),
                    _ => None,
                };
                compiled.push(Compiled {
                    restriction: r,
                    table,
                });
            }
            lists.insert(name, compiled);
        }
        let parent = corepost_config::list::split_list(&s("parent_domain_matches_subdomains")?)
            .unwrap_or_default();
        let code = |n: &str| -> Result<u16, String> {
            s(n)?
                .trim()
                .parse()
                .ok()
                .filter(|c| (200..600).contains(c))
                .ok_or_else(|| format!("{n}: not a reply code"))
        };
        let policy_services = PolicyServices::from_params(get, &lists_services(&lists))?;
        let reject_unlisted_sender = s("smtpd_reject_unlisted_sender")?.trim() == "yes";
        // Access tables and policy servers can answer with any restriction.
        let all = || lists.values().flatten();
        let dynamic =
            all().any(|c| c.table.is_some() || c.restriction.name == "check_policy_service");
        let uses = |name: &str| all().any(|c| c.restriction.name == name);
        let needs_unlisted = (
            reject_unlisted_sender || dynamic || uses("reject_unlisted_sender"),
            dynamic || uses("reject_unlisted_recipient"),
        );
        let needs_pending_input = dynamic || uses("reject_unauth_pipelining");
        Ok(Policy {
            lists,
            classes,
            mynetworks,
            parent_access: parent.iter().any(|p| p == "smtpd_access_maps"),
            recipient_delimiter: s("recipient_delimiter")?,
            sender_login_maps: TableList::open(&s("smtpd_sender_login_maps")?)
                .map_err(|e| format!("smtpd_sender_login_maps: {e}"))?,
            null_sender_key: s("smtpd_null_access_lookup_key")?,
            permit_log: permit_log::PermitLog::parse(&s("smtpd_log_access_permit_actions")?)
                .map_err(|e| format!("smtpd_log_access_permit_actions: {e}"))?,
            allow_untrusted_routing: s("allow_untrusted_routing")?.trim() == "yes",
            reject_unlisted_sender,
            needs_unlisted,
            needs_pending_input,
            codes: Codes {
                reject: code("reject_code")?,
                defer: code("defer_code")?,
                relay: code("relay_domains_reject_code")?,
                access: code("access_map_reject_code")?,
                access_defer: code("access_map_defer_code")?,
                non_fqdn: code("non_fqdn_reject_code")?,
                invalid_hostname: code("invalid_hostname_reject_code")?,
                unknown_client: code("unknown_client_reject_code")?,
                unknown_hostname: code("unknown_hostname_reject_code")?,
                unknown_address: code("unknown_address_reject_code")?,
                multi_recipient_bounce: code("multi_recipient_bounce_reject_code")?,
            },
            dns: DnsChecks::from_params(get)?,
            policy_services,
        })
    }

    pub fn mynetworks(&self) -> &NetworkList {
        &self.mynetworks
    }

    /// Whether a list has any restriction in it.
    pub fn is_empty(&self, list: &str) -> bool {
        self.lists.get(list).is_none_or(Vec::is_empty)
    }

    /// Whether any list (or `smtpd_reject_unlisted_sender`) may need
    /// [`Facts::sender_unlisted`] / [`Facts::recipient_unlisted`]; the
    /// session skips those lookups otherwise.
    pub fn needs_unlisted(&self) -> (bool, bool) {
        self.needs_unlisted
    }

    /// Whether `reject_unauth_pipelining` may be evaluated (named in a list or class, or an
    /// access table or policy server could answer with it), so [`Facts::input_pending`] must
    /// be known; the session skips asking the socket (a `recv` with `MSG_PEEK` per command)
    /// otherwise.
    pub fn needs_pending_input(&self) -> bool {
        self.needs_pending_input
    }

    /// Whether relaying restrictions may treat `user%domain@relay`-style
    /// addresses as authorized (`allow_untrusted_routing`).
    pub fn allow_untrusted_routing(&self) -> bool {
        self.allow_untrusted_routing
    }

    /// Evaluate the lists of one command in order: the first reject wins; a
    /// pending `defer_if_permit` becomes the reply when nothing rejected.
    pub async fn check(
        &self,
        lists: &[(&str, Stage)],
        facts: &Facts<'_>,
        out: &mut Outcome,
    ) -> Option<Reply> {
        for (list, stage) in lists {
            if let Decision::Reject(r) = self.evaluate(list, *stage, facts, out).await {
                return Some(r);
            }
            // smtpd_reject_unlisted_sender: as if the sender list ended
            // with reject_unlisted_sender.
            if *stage == Stage::Sender
                && self.reject_unlisted_sender
                && let Some(reply) = unlisted_reply(facts, true)
            {
                return Some(reply);
            }
        }
        out.defer_if_permit.take()
    }

    /// Evaluate the list `name` at `stage`.
    pub async fn evaluate(
        &self,
        name: &str,
        stage: Stage,
        facts: &Facts<'_>,
        out: &mut Outcome,
    ) -> Decision {
        let Some(list) = self.lists.get(name) else {
            return Decision::Dunno;
        };
        self.run_list(list, stage, facts, out, 0).await
    }

    fn run_list<'s>(
        &'s self,
        list: &'s [Compiled],
        stage: Stage,
        f: &'s Facts<'s>,
        out: &'s mut Outcome,
        depth: usize,
    ) -> Eval<'s> {
        Box::pin(async move {
            if depth > MAX_CLASS_DEPTH {
                out.warnings
                    .push("restriction class nesting causes unreasonable recursion".into());
                return Decision::Reject(config_error());
            }
            for c in list {
                let warn_only = std::mem::take(&mut out.warn_if_reject);
                let d = self.one(c, stage, f, out, depth).await;
                // Access tables (check_*) and restriction classes log their
                // own permits.
                let name = c.restriction.name.as_str();
                if d == Decision::Permit
                    && !name.starts_with("check_")
                    && !self.classes.iter().any(|k| k == name)
                {
                    // Postfix names what the restriction looked at.
                    let about = match name {
                        "permit_mynetworks"
                        | "permit_inet_interfaces"
                        | "permit_sasl_authenticated"
                        | "permit_tls_clientcerts"
                        | "permit_tls_all_clientcerts"
                        | "permit_dnswl_client"
                        | "permit_rhswl_client" => Stage::Client,
                        "permit_auth_destination" | "permit_mx_backup" => Stage::Recipient,
                        _ => stage,
                    };
                    self.log_permit(name, "", about, f, out);
                }
                match d {
                    Decision::Dunno => {}
                    Decision::Warn(w) => out.events.push(("warn", w)),
                    Decision::Reject(r) if warn_only => {
                        out.events.push(("reject_warning", r.summary()));
                    }
                    Decision::Reject(r) if r.code >= 500 && out.defer_if_reject.is_some() => {
                        return Decision::Reject(out.defer_if_reject.take().unwrap_or(r));
                    }
                    other => return other,
                }
            }
            Decision::Dunno
        })
    }

    /// `smtpd_log_access_permit_actions`: Postfix's `permit:` event,
    /// `action=<action> for <class>=<name> [from <table>]`.
    pub(crate) fn log_permit(
        &self,
        action: &str,
        table: &str,
        stage: Stage,
        f: &Facts<'_>,
        out: &mut Outcome,
    ) {
        if self.permit_log.logs(action) {
            let from = if table.is_empty() {
                String::new()
            } else {
                format!("from {table}")
            };
            out.events.push((
                "permit",
                format!(
                    "action={action} for {}={} {from}",
                    reply_class(stage),
                    reply_name(stage, f)
                ),
            ));
        }
    }

    async fn one(
        &self,
        c: &Compiled,
        stage: Stage,
        f: &Facts<'_>,
        out: &mut Outcome,
        depth: usize,
    ) -> Decision {
        let r = &c.restriction;
        let (name, class) = (reply_name(stage, f), reply_class(stage));
        let denied = |code: u16, dsn: &'static str, why: &str| {
            Decision::Reject(Reply::new(
                code,
                dsn,
                format!("<{name}>: {class} rejected: {why}"),
            ))
        };
        match r.name.as_str() {
            "permit" => Decision::Permit,
            "reject" => denied(
                self.codes.reject,
                status_for(self.codes.reject, "5.7.1"),
                "Access denied",
            ),
            "defer" => denied(self.codes.defer, "4.7.1", "Try again later"),
            "defer_if_permit" => {
                out.defer_if_permit.get_or_insert(Reply::new(
                    self.codes.defer,
                    "4.7.1",
                    format!("<{name}>: {class} rejected: defer_if_permit requested"),
                ));
                Decision::Dunno
            }
            "defer_if_reject" => {
                out.defer_if_reject.get_or_insert(Reply::new(
                    self.codes.defer,
                    "4.7.1",
                    format!("<{name}>: {class} rejected: defer_if_reject requested"),
                ));
                Decision::Dunno
            }
            "warn_if_reject" => {
                out.warn_if_reject = true;
                Decision::Dunno
            }
            "permit_mynetworks" => permit_if(self.mynetworks.contains(f.client_addr)),
            "permit_inet_interfaces" => permit_if(f.client_addr.is_loopback()),
            "permit_sasl_authenticated" => permit_if(f.sasl_user.is_some()),
            "reject_unauth_destination"
            | "defer_unauth_destination"
            | "permit_auth_destination" => self.relay_check(&r.name, f),
            "reject_unauth_pipelining" => {
                // Postfix: the session saw improper pipelining at some
                // point (see `Session::check_pipelining`), or input is
                // waiting now and the client was not offered PIPELINING, or
                // this is DATA.
                if f.pipelined || f.input_pending && (!f.esmtp || stage == Stage::Data) {
                    Decision::Reject(Reply::new(
                        503,
                        "5.5.0",
                        format!(
                            "<{name}>: {class} rejected: Improper use of SMTP command pipelining"
                        ),
                    ))
                } else {
                    Decision::Dunno
                }
            }
            "reject_non_fqdn_helo_hostname" => match f.helo {
                Some(h) if !(h.starts_with('[') || is_fqdn(h) && valid_hostname(h)) => {
                    Decision::Reject(Reply::new(
                        self.codes.non_fqdn,
                        status_for(self.codes.non_fqdn, "5.5.2"),
                        format!("<{h}>: Helo command rejected: need fully-qualified hostname"),
                    ))
                }
                _ => Decision::Dunno,
            },
            "reject_invalid_helo_hostname" => match f.helo {
                Some(h) if !valid_hostname(h) => Decision::Reject(Reply::new(
                    self.codes.invalid_hostname,
                    status_for(self.codes.invalid_hostname, "5.5.2"),
                    format!("<{h}>: Helo command rejected: Invalid name"),
                )),
                _ => Decision::Dunno,
            },
            "reject_non_fqdn_sender" => match f.sender {
                Some(s) if !s.is_empty() && !fqdn_address(s) => self.non_fqdn(s, "Sender address"),
                _ => Decision::Dunno,
            },
            "reject_non_fqdn_recipient" => match f.recipient {
                Some(rc) if !fqdn_address(rc) => self.non_fqdn(rc, "Recipient address"),
                _ => Decision::Dunno,
            },
            "reject_unlisted_sender" => {
                unlisted_reply(f, true).map_or(Decision::Dunno, Decision::Reject)
            }
            "reject_unlisted_recipient" => {
                unlisted_reply(f, false).map_or(Decision::Dunno, Decision::Reject)
            }
            "sleep" => {
                // An async pause: this session waits, the core does not.
                let secs = r
                    .argument
                    .as_deref()
                    .and_then(|a| a.parse().ok())
                    .unwrap_or(0);
                glommio::timer::sleep(std::time::Duration::from_secs(secs)).await;
                Decision::Dunno
            }
            "reject_unknown_client_hostname" => self.unknown_client(f, f.client_name_status, ""),
            "reject_unknown_reverse_client_hostname" => {
                self.unknown_client(f, f.reverse_name_status, "reverse ")
            }
            "reject_unknown_helo_hostname"
            | "reject_unknown_sender_domain"
            | "reject_unknown_recipient_domain"
            | "reject_rbl_client"
            | "reject_rhsbl_client"
            | "reject_rhsbl_reverse_client"
            | "reject_rhsbl_sender"
            | "reject_rhsbl_helo"
            | "reject_rhsbl_recipient"
            | "permit_dnswl_client"
            | "permit_rhswl_client" => {
                let codes = dns_checks::Codes {
                    unknown_hostname: self.codes.unknown_hostname,
                    unknown_address: self.codes.unknown_address,
                };
                let (decision, defer) = self.dns.evaluate(r, f, &codes, out).await;
                if let Some(d) = defer {
                    out.defer_if_permit.get_or_insert(d);
                }
                decision
            }
            "check_policy_service" => {
                let endpoint = r.argument.as_deref().unwrap_or_default();
                match self.policy_services.evaluate(endpoint, f, out).await {
                    Some(value) => {
                        let table = format!("check_policy_service {endpoint}");
                        self.table_result(&value, &table, stage, f, out, depth)
                            .await_boxed()
                            .await
                    }
                    None => Decision::Dunno,
                }
            }
            "check_client_access" => {
                let keys = client_keys(
                    f.client_name,
                    &f.client_addr.to_string(),
                    self.parent_access,
                );
                self.access(c, &keys, Stage::Client, f, out, depth).await
            }
            "check_reverse_client_hostname_access" => {
                let keys = client_keys(
                    f.reverse_client_name,
                    &f.client_addr.to_string(),
                    self.parent_access,
                );
                self.access(c, &keys, Stage::Client, f, out, depth).await
            }
            "check_helo_access" => match f.helo {
                Some(h) => {
                    let keys = domain_keys(h, self.parent_access);
                    self.access(c, &keys, Stage::Helo, f, out, depth).await
                }
                None => Decision::Dunno,
            },
            "check_sender_access" => match f.sender {
                Some(s) => {
                    let keys = if s.is_empty() {
                        vec![self.null_sender_key.clone()]
                    } else {
                        access_keys(s, self.parent_access, &self.recipient_delimiter)
                    };
                    self.access(c, &keys, Stage::Sender, f, out, depth).await
                }
                None => Decision::Dunno,
            },
            "check_recipient_access" => match f.recipient {
                Some(rc) => {
                    let keys = access_keys(rc, self.parent_access, &self.recipient_delimiter);
                    let stage = if stage == Stage::Relay {
                        stage
                    } else {
                        Stage::Recipient
                    };
                    self.access(c, &keys, stage, f, out, depth).await
                }
                None => Decision::Dunno,
            },
            "reject_multi_recipient_bounce" => {
                // At RCPT: a null sender with a recipient already accepted;
                // at DATA: more than one recipient.
                let others = if stage == Stage::Data { 1 } else { 0 };
                if f.sender == Some("") && f.recipient_count > others {
                    let code = self.codes.multi_recipient_bounce;
                    Decision::Reject(Reply::new(
                        code,
                        status_for(code, "5.5.3"),
                        "<>: Sender address rejected: Multi-recipient bounce",
                    ))
                } else {
                    Decision::Dunno
                }
            }
            "check_client_a_access"
            | "check_client_mx_access"
            | "check_helo_a_access"
            | "check_helo_mx_access"
            | "check_sender_a_access"
            | "check_sender_mx_access"
            | "check_recipient_a_access"
            | "check_recipient_mx_access" => self.server_access(c, stage, f, out, depth).await,
            name if super::sasl::login_maps::Check::from_name(name).is_some() => {
                self.login_mismatch(name, f, &mut out.warnings)
            }
            "permit_tls_clientcerts"
            | "permit_tls_all_clientcerts"
            | "reject_plaintext_session"
            | "check_ccert_access"
            | "check_sasl_access" => {
                out.warnings.push(format!(
                    "restriction {} is not implemented in this release; replying with a temporary error",
                    r.name
                ));
                Decision::Reject(config_error())
            }
            class_name if self.classes.iter().any(|c| c == class_name) => {
                let list = self.lists.get(class_name).map_or(&[][..], Vec::as_slice);
                self.run_list(list, stage, f, out, depth + 1).await
            }
            other => {
                out.warnings.push(format!(
                    "restriction {other} is not implemented in this release; replying with a temporary error"
                ));
                Decision::Reject(config_error())
            }
        }
    }

    /// The `*_sender_login_mismatch` restrictions (see `sasl::login_maps`).
    fn login_mismatch(&self, name: &str, f: &Facts<'_>, warnings: &mut Vec<String>) -> Decision {
        use super::sasl::login_maps::{Check, check};
        let (Some(kind), Some(sender)) = (Check::from_name(name), f.sender) else {
            return Decision::Dunno;
        };
        let maps = &self.sender_login_maps;
        if maps.is_empty() {
            warnings.push(format!(
                "restriction `{name}' ignored: no $smtpd_sender_login_maps"
            ));
            return Decision::Dunno;
        }
        match check(kind, maps, sender, f.sasl_user, &self.recipient_delimiter) {
            Ok(Some(reply)) => Decision::Reject(reply),
            Ok(None) => Decision::Dunno,
            Err(e) => {
                warnings.push(e);
                Decision::Reject(Reply::new(451, "4.3.0", "Temporary lookup failure"))
            }
        }
    }

    fn non_fqdn(&self, address: &str, class: &str) -> Decision {
        let code = self.codes.non_fqdn;
        Decision::Reject(Reply::new(
            code,
            status_for(code, "5.5.2"),
            format!("<{address}>: {class} rejected: need fully-qualified address"),
        ))
    }

    fn unknown_client(&self, f: &Facts<'_>, status: NameStatus, which: &str) -> Decision {
        let code = match status {
            NameStatus::Ok => return Decision::Dunno,
            NameStatus::TempFail => 450,
            NameStatus::NotFound => self.codes.unknown_client,
        };
        Decision::Reject(Reply::new(
            code,
            status_for(code, "5.7.25"),
            format!(
                "Client host rejected: cannot find your {which}hostname, [{}]",
                f.client_addr
            ),
        ))
    }

    /// `reject_unauth_destination`, `defer_unauth_destination`,
    /// `permit_auth_destination`.
    fn relay_check(&self, restriction: &str, f: &Facts<'_>) -> Decision {
        let Some(class) = f.recipient_class else {
            return Decision::Dunno;
        };
        let authorized = class == AddressClass::Local
            || (class.is_authorized_destination()
                && (!f.recipient_routed || self.allow_untrusted_routing));
        let rcpt = f.recipient.unwrap_or_default();
        match (restriction, authorized) {
            ("permit_auth_destination", true) => Decision::Permit,
            ("reject_unauth_destination", false) => Decision::Reject(Reply::new(
                self.codes.relay,
                status_for(self.codes.relay, "5.7.1"),
                format!("<{rcpt}>: Relay access denied"),
            )),
            ("defer_unauth_destination", false) => Decision::Reject(Reply::new(
                454,
                "4.7.1",
                format!("<{rcpt}>: Relay access denied"),
            )),
            _ => Decision::Dunno,
        }
    }
}

/// The restriction list arguments of every `check_policy_service`.
fn lists_services(lists: &HashMap<String, Vec<Compiled>>) -> Vec<String> {
    let mut out: Vec<String> = lists
        .values()
        .flatten()
        .filter(|c| c.restriction.name == "check_policy_service")
        .filter_map(|c| c.restriction.argument.clone())
        .collect();
    out.sort();
    out.dedup();
    out
}

fn permit_if(yes: bool) -> Decision {
    if yes {
        Decision::Permit
    } else {
        Decision::Dunno
    }
}

fn config_error() -> Reply {
    Reply::new(451, "4.3.5", "Server configuration error")
}

pub(crate) fn status_for(code: u16, permanent: &'static str) -> &'static str {
    if code >= 500 {
        permanent
    } else {
        match permanent {
            "5.5.2" => "4.5.2",
            "5.7.25" => "4.7.25",
            "5.1.8" => "4.1.8",
            "5.1.2" => "4.1.2",
            _ => "4.7.1",
        }
    }
}

/// Split a leading RFC 3463 status code off `text` (Postfix's dsn_split).
pub(crate) fn split_dsn<'t>(text: &'t str, default: &str) -> (String, &'t str) {
    let (first, rest) = text.split_once(' ').unwrap_or((text, ""));
    let parts: Vec<&str> = first.split('.').collect();
    let is_dsn = parts.len() == 3
        && matches!(parts[0], "2" | "4" | "5")
        && parts[1..]
            .iter()
            .all(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()));
    if is_dsn {
        (first.to_string(), rest.trim_start())
    } else {
        (default.to_string(), text)
    }
}

/// Make a DSN's class agree with the reply code (Postfix's smtpd_dsn_fix).
pub(crate) fn fix_dsn(code: u16, dsn: &str) -> String {
    let class = if code >= 500 { '5' } else { '4' };
    let mut s = dsn.to_string();
    if !s.starts_with(class) {
        s.replace_range(0..1, &class.to_string());
    }
    s
}

/// What a rejection at `stage` talks about (Postfix's reply_name).
pub(crate) fn reply_name(stage: Stage, f: &Facts<'_>) -> String {
    match stage {
        Stage::Client => format!("{}[{}]", f.client_name, f.client_addr),
        Stage::Helo => f.helo.unwrap_or_default().to_string(),
        Stage::Sender => f.sender.unwrap_or_default().to_string(),
        Stage::Relay | Stage::Recipient => f.recipient.unwrap_or_default().to_string(),
        Stage::Data => "DATA".to_string(),
        Stage::EndOfData => "END-OF-MESSAGE".to_string(),
        Stage::Etrn => f.etrn_domain.unwrap_or_default().to_string(),
    }
}

/// Postfix's reply_class.
pub(crate) fn reply_class(stage: Stage) -> &'static str {
    match stage {
        Stage::Client => "Client host",
        Stage::Helo => "Helo command",
        Stage::Sender => "Sender address",
        Stage::Relay | Stage::Recipient => "Recipient address",
        Stage::Data => "Data command",
        Stage::EndOfData => "End-of-data",
        Stage::Etrn => "Etrn command",
    }
}

fn fqdn_address(address: &str) -> bool {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    if domain.starts_with('[') && domain.ends_with(']') {
        return true;
    }
    let d = domain.strip_suffix('.').unwrap_or(domain);
    !d.is_empty() && d.contains('.') && valid_hostname(d)
}

fn is_fqdn(name: &str) -> bool {
    name.trim_end_matches('.').contains('.')
}

fn valid_hostname(h: &str) -> bool {
    if let Some(lit) = h.strip_prefix('[') {
        return lit
            .strip_suffix(']')
            .is_some_and(|ip| ip.trim_start_matches("IPv6:").parse::<IpAddr>().is_ok());
    }
    super::address::parse_domain(h).is_ok()
}

mod access;
mod permit_log;
mod relay;
use relay::unlisted_reply;
pub use relay::{relay_class, unlisted};

#[cfg(test)]
pub(crate) mod tests;
