//! Evaluating smtpd restriction lists (`smtpd_client_restrictions`,
//! `..._helo_...`, `..._sender_...`, `..._relay_...`, `..._recipient_...`,
//! `..._data_...`).
//!
//! Each list is evaluated on its own, left to right: a permit ends that list
//! (the next list still runs), a reject or defer ends the command. With
//! `smtpd_delay_reject = yes` (the default) client, HELO and sender lists
//! run at RCPT time, so rejections are logged with the recipient.
//!
//! Implemented here: the generic restrictions, `permit_mynetworks`,
//! `permit_sasl_authenticated`, the `*_unauth_destination` relay checks,
//! `permit_auth_destination`, the syntax checks (`reject_non_fqdn_*`,
//! `reject_invalid_helo_hostname`), access tables
//! (`check_{client,reverse_client_hostname,helo,sender,recipient}_access`
//! with OK/REJECT/DEFER/DUNNO/NNN text/WARN and restriction classes; FILTER,
//! HOLD and DISCARD are noted in [`Notes`] for the whole message) and
//! `sleep`. Restrictions that need DNS, SASL or a policy server answer like
//! Postfix does for a restriction it cannot evaluate: `451 4.3.5 Server
//! configuration error`, with a log warning naming it — never a silent
//! pass.

use super::networks::NetworkList;
use super::reply::Reply;
use crate::routing::AddressClass;
use corepost_config::restrictions::{Restriction, parse_restrictions};
use corepost_config::tables::TableList;
use corepost_config::tables::keys::{access_keys, client_keys, domain_keys};
use std::collections::HashMap;
use std::net::IpAddr;

/// Where in the dialogue a list is evaluated; decides reply wording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Client,
    Helo,
    Sender,
    Relay,
    Recipient,
    Data,
}

/// What the session knows when a list is evaluated.
#[derive(Debug, Clone)]
pub struct Facts<'a> {
    pub client_addr: IpAddr,
    pub client_name: &'a str,
    pub helo: Option<&'a str>,
    pub sender: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub recipient_class: Option<AddressClass>,
    pub sasl_user: Option<&'a str>,
}

/// An access-table action that applies to the whole message rather than
/// deciding the command; the text is Postfix's log reason
/// (`<r@x>: Recipient address triggers FILTER smtp:[127.0.0.1]:10025`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageAction {
    /// FILTER transport:nexthop (evaluation goes on).
    Filter(super::filter::ContentFilter, String),
    /// HOLD (evaluation goes on).
    Hold(String),
    /// DISCARD: permit, then drop the message after DATA.
    Discard(String),
}

/// What evaluating restriction lists noted besides the decision: warnings
/// to log (it derefs to them) and message actions.
#[derive(Debug, Default)]
pub struct Notes {
    pub warnings: Vec<String>,
    pub actions: Vec<MessageAction>,
}

impl std::ops::Deref for Notes {
    type Target = Vec<String>;
    fn deref(&self) -> &Vec<String> {
        &self.warnings
    }
}

impl std::ops::DerefMut for Notes {
    fn deref_mut(&mut self) -> &mut Vec<String> {
        &mut self.warnings
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

#[derive(Debug, Clone)]
struct Compiled {
    restriction: Restriction,
    table: Option<TableList>,
}

/// All restriction lists of one service, with their tables opened.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    lists: HashMap<String, Vec<Compiled>>,
    mynetworks: NetworkList,
    parent_access: bool,
    recipient_delimiter: String,
    codes: Codes,
}

#[derive(Debug, Clone, Default)]
struct Codes {
    reject: u16,
    defer: u16,
    relay: u16,
    access: u16,
}

/// The stage names of the lists, in evaluation order.
pub const LISTS: &[&str] = &[
    "smtpd_client_restrictions",
    "smtpd_helo_restrictions",
    "smtpd_sender_restrictions",
    "smtpd_relay_restrictions",
    "smtpd_recipient_restrictions",
    "smtpd_data_restrictions",
];

impl Policy {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
        mynetworks: NetworkList,
    ) -> Result<Policy, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let classes =
            corepost_config::list::split_list(&s("smtpd_restriction_classes")?).unwrap_or_default();
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
                let table = match corepost_config::restrictions::argument_of(&r.name) {
                    Some(corepost_config::restrictions::Argument::Table) => Some(
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
                .map_err(|_| format!("{n}: not a reply code"))
        };
        Ok(Policy {
            lists,
            mynetworks,
            parent_access: parent.iter().any(|p| p == "smtpd_access_maps"),
            recipient_delimiter: s("recipient_delimiter")?,
            codes: Codes {
                reject: code("reject_code")?,
                defer: code("defer_code")?,
                relay: code("relay_domains_reject_code")?,
                access: code("access_map_reject_code")?,
            },
        })
    }

    pub fn mynetworks(&self) -> &NetworkList {
        &self.mynetworks
    }

    /// Whether a list has any restriction in it.
    pub fn is_empty(&self, list: &str) -> bool {
        self.lists.get(list).is_none_or(Vec::is_empty)
    }

    /// Evaluate the list `name` at `stage`. `warnings` collects log lines.
    pub fn evaluate(
        &self,
        name: &str,
        stage: Stage,
        facts: &Facts<'_>,
        warnings: &mut Vec<String>,
    ) -> Decision {
        let mut notes = Notes::default();
        let decision = self.evaluate_depth(name, stage, facts, &mut notes, 0);
        warnings.append(&mut notes.warnings);
        decision
    }

    /// Like [`Policy::evaluate`], also collecting message actions.
    pub fn evaluate_noting(
        &self,
        name: &str,
        stage: Stage,
        facts: &Facts<'_>,
        notes: &mut Notes,
    ) -> Decision {
        self.evaluate_depth(name, stage, facts, notes, 0)
    }

    fn evaluate_depth(
        &self,
        name: &str,
        stage: Stage,
        f: &Facts<'_>,
        warnings: &mut Notes,
        depth: usize,
    ) -> Decision {
        let Some(list) = self.lists.get(name) else {
            return Decision::Dunno;
        };
        if depth > 8 {
            warnings.push(format!("restriction class {name}: nested too deeply"));
            return Decision::Reject(config_error());
        }
        for c in list {
            let d = self.one(c, stage, f, warnings, depth);
            match d {
                Decision::Dunno => {}
                Decision::Warn(w) => warnings.push(w),
                other => return other,
            }
        }
        Decision::Dunno
    }

    fn one(
        &self,
        c: &Compiled,
        stage: Stage,
        f: &Facts<'_>,
        warnings: &mut Notes,
        depth: usize,
    ) -> Decision {
        let r = &c.restriction;
        let what = subject(stage, f);
        match r.name.as_str() {
            "permit" => Decision::Permit,
            "reject" => Decision::Reject(Reply::new(
                self.codes.reject,
                status_for(self.codes.reject, "5.7.1"),
                format!("{what}: Access denied"),
            )),
            "defer" => Decision::Reject(Reply::new(
                self.codes.defer,
                "4.7.1",
                format!("{what}: Access denied"),
            )),
            "permit_mynetworks" => {
                if self.mynetworks.contains(f.client_addr) {
                    Decision::Permit
                } else {
                    Decision::Dunno
                }
            }
            "permit_inet_interfaces" => {
                if f.client_addr.is_loopback() {
                    Decision::Permit
                } else {
                    Decision::Dunno
                }
            }
            "permit_sasl_authenticated" => {
                if f.sasl_user.is_some() {
                    Decision::Permit
                } else {
                    Decision::Dunno
                }
            }
            "reject_unauth_destination"
            | "defer_unauth_destination"
            | "permit_auth_destination" => {
                let Some(class) = f.recipient_class else {
                    return Decision::Dunno;
                };
                let authorized = class.is_authorized_destination();
                match (r.name.as_str(), authorized) {
                    ("permit_auth_destination", true) => Decision::Permit,
                    ("reject_unauth_destination", false) => Decision::Reject(Reply::new(
                        self.codes.relay,
                        status_for(self.codes.relay, "5.7.1"),
                        format!("<{}>: Relay access denied", f.recipient.unwrap_or_default()),
                    )),
                    ("defer_unauth_destination", false) => Decision::Reject(Reply::new(
                        454,
                        "4.7.1",
                        format!("<{}>: Relay access denied", f.recipient.unwrap_or_default()),
                    )),
                    _ => Decision::Dunno,
                }
            }
            "reject_non_fqdn_helo_hostname" => match f.helo {
                Some(h) if !is_fqdn(h) && !h.starts_with('[') => self.reject_with(
                    Stage::Helo,
                    f,
                    504,
                    "5.5.2",
                    "need fully-qualified hostname",
                ),
                _ => Decision::Dunno,
            },
            "reject_invalid_helo_hostname" => match f.helo {
                Some(h) if !valid_hostname(h) => {
                    self.reject_with(Stage::Helo, f, 501, "5.5.2", "Invalid name")
                }
                _ => Decision::Dunno,
            },
            "reject_non_fqdn_sender" => match f.sender {
                Some(s) if !s.is_empty() && !is_fqdn(domain_of(s)) => self.reject_with(
                    Stage::Sender,
                    f,
                    504,
                    "5.5.2",
                    "Sender address rejected: need fully-qualified address",
                ),
                _ => Decision::Dunno,
            },
            "reject_non_fqdn_recipient" => match f.recipient {
                Some(rc) if !is_fqdn(domain_of(rc)) => self.reject_with(
                    Stage::Recipient,
                    f,
                    504,
                    "5.5.2",
                    "Recipient address rejected: need fully-qualified address",
                ),
                _ => Decision::Dunno,
            },
            // smtpd checks unlisted recipients itself (smtpd_reject_unlisted_recipient).
            "reject_unlisted_recipient" | "reject_unlisted_sender" | "reject_unauth_pipelining" => {
                Decision::Dunno
            }
            "sleep" => Decision::Dunno, // accepted; corepost does not stall the core
            "check_client_access" | "check_reverse_client_hostname_access" => {
                let keys = client_keys(
                    f.client_name,
                    &f.client_addr.to_string(),
                    self.parent_access,
                );
                self.access(c, &keys, stage, f, warnings, depth)
            }
            "check_helo_access" => match f.helo {
                Some(h) => {
                    let keys = domain_keys(h, self.parent_access);
                    self.access(c, &keys, stage, f, warnings, depth)
                }
                None => Decision::Dunno,
            },
            "check_sender_access" => match f.sender {
                Some(s) => {
                    let keys = if s.is_empty() {
                        vec![String::new()]
                    } else {
                        access_keys(s, self.parent_access, &self.recipient_delimiter)
                    };
                    self.access(c, &keys, stage, f, warnings, depth)
                }
                None => Decision::Dunno,
            },
            "check_recipient_access" => match f.recipient {
                Some(rc) => {
                    let keys = access_keys(rc, self.parent_access, &self.recipient_delimiter);
                    self.access(c, &keys, stage, f, warnings, depth)
                }
                None => Decision::Dunno,
            },
            name if self.lists.contains_key(name) && !LISTS.contains(&name) => {
                self.evaluate_depth(name, stage, f, warnings, depth + 1)
            }
            other => {
                warnings.push(format!("restriction {other} is not implemented in this release; replying with a temporary error"));
                Decision::Reject(config_error())
            }
        }
    }

    fn reject_with(
        &self,
        stage: Stage,
        f: &Facts<'_>,
        code: u16,
        status: &'static str,
        text: &str,
    ) -> Decision {
        Decision::Reject(Reply::new(
            code,
            status,
            format!("{}: {text}", subject(stage, f)),
        ))
    }

    /// An access(5) table lookup and its result.
    fn access(
        &self,
        c: &Compiled,
        keys: &[String],
        stage: Stage,
        f: &Facts<'_>,
        warnings: &mut Notes,
        depth: usize,
    ) -> Decision {
        let Some(table) = &c.table else {
            return Decision::Dunno;
        };
        let found = match table.lookup_first(keys.iter().map(String::as_str)) {
            Ok(Some((_, v))) => v,
            Ok(None) => return Decision::Dunno,
            Err(e) => {
                warnings.push(format!("{}: table lookup problem: {e}", c.restriction));
                return Decision::Reject(Reply::new(451, "4.3.0", "Temporary lookup failure"));
            }
        };
        let what = format!("{}: {}", subject(stage, f), stage_phrase(stage));
        let value = found.trim();
        let (action, text) = match value.split_once(char::is_whitespace) {
            Some((a, t)) => (a, t.trim()),
            None => (value, ""),
        };
        let text_or = |default: &str| {
            if text.is_empty() {
                default.to_string()
            } else {
                text.to_string()
            }
        };
        match action.to_ascii_uppercase().as_str() {
            "OK" | "PERMIT" => Decision::Permit,
            "DUNNO" => Decision::Dunno,
            "REJECT" => Decision::Reject(Reply::new(
                self.codes.access,
                status_for(self.codes.access, "5.7.1"),
                format!("{what}: {}", text_or("Access denied")),
            )),
            "DEFER" | "DEFER_IF_PERMIT" | "DEFER_IF_REJECT" => Decision::Reject(Reply::new(
                self.codes.defer,
                "4.7.1",
                format!("{what}: {}", text_or("Access denied")),
            )),
            "WARN" => Decision::Warn(format!("{what}: {}", text_or(""))),
            "FILTER" => match super::filter::ContentFilter::parse(text) {
                Ok(Some(filter)) if text.contains(':') => {
                    let reason = format!(
                        "{}: {} triggers FILTER {text}",
                        subject(stage, f),
                        stage_class(stage)
                    );
                    warnings.actions.push(MessageAction::Filter(filter, reason));
                    Decision::Dunno
                }
                _ => {
                    warnings.push(format!(
                        "access table {} entry \"{value}\" requires transport:destination",
                        c.restriction
                    ));
                    Decision::Dunno
                }
            },
            "HOLD" => {
                let reason = format!(
                    "{}: {} triggers HOLD {text}",
                    subject(stage, f),
                    stage_class(stage)
                );
                warnings
                    .actions
                    .push(MessageAction::Hold(reason.trim_end().to_string()));
                Decision::Dunno
            }
            "DISCARD" => {
                let reason = format!(
                    "{}: {} triggers DISCARD {text}",
                    subject(stage, f),
                    stage_class(stage)
                );
                warnings
                    .actions
                    .push(MessageAction::Discard(reason.trim_end().to_string()));
                Decision::Permit
            }
            a if a.len() == 3
                && (a.starts_with('4') || a.starts_with('5'))
                && a.bytes().all(|b| b.is_ascii_digit()) =>
            {
                let code: u16 = a.parse().unwrap_or(554);
                let status = if code >= 500 { "5.7.1" } else { "4.7.1" };
                Decision::Reject(Reply::new(
                    code,
                    status,
                    format!("{what}: {}", text_or("Access denied")),
                ))
            }
            a if a.chars().all(|ch| ch.is_ascii_digit()) => Decision::Permit, // a number means OK (legacy)
            _ if self.lists.contains_key(value) && !LISTS.contains(&value) => {
                self.evaluate_depth(value, stage, f, warnings, depth + 1)
            }
            other => {
                warnings.push(format!(
                    "{}: access result \"{other}\" is not implemented in this release",
                    c.restriction
                ));
                Decision::Reject(config_error())
            }
        }
    }
}

fn config_error() -> Reply {
    Reply::new(451, "4.3.5", "Server configuration error")
}

fn status_for(code: u16, permanent: &'static str) -> &'static str {
    if code >= 500 { permanent } else { "4.7.1" }
}

/// What a rejection at `stage` talks about: Postfix's reply prefixes.
fn subject(stage: Stage, f: &Facts<'_>) -> String {
    match stage {
        Stage::Client => format!("{}[{}]", f.client_name, f.client_addr),
        Stage::Helo => format!("<{}>", f.helo.unwrap_or_default()),
        Stage::Sender => format!("<{}>", f.sender.unwrap_or_default()),
        Stage::Relay | Stage::Recipient => format!("<{}>", f.recipient.unwrap_or_default()),
        Stage::Data => "<DATA>".to_string(),
    }
}

/// Postfix's reply class in "... triggers FILTER ..." log reasons.
fn stage_class(stage: Stage) -> &'static str {
    stage_phrase(stage).trim_end_matches(" rejected")
}

fn stage_phrase(stage: Stage) -> &'static str {
    match stage {
        Stage::Client => "Client host rejected",
        Stage::Helo => "Helo command rejected",
        Stage::Sender => "Sender address rejected",
        Stage::Relay | Stage::Recipient => "Recipient address rejected",
        Stage::Data => "Data command rejected",
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
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

#[cfg(test)]
mod tests {
    use super::*;
    use corepost_config::Config;

    fn policy(main_cf: &str) -> Policy {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_parts(dir.path(), Some(main_cf), None).unwrap();
        let nets = NetworkList::parse(&config.get("mynetworks").unwrap()).unwrap();
        Policy::from_params(&|n| config.get(n), nets).unwrap()
    }

    fn facts<'a>(addr: &str, rcpt: &'a str, class: AddressClass) -> Facts<'a> {
        Facts {
            client_addr: addr.parse().unwrap(),
            client_name: "unknown",
            helo: Some("client"),
            sender: Some("a@example.org"),
            recipient: Some(rcpt),
            recipient_class: Some(class),
            sasl_user: None,
        }
    }

    #[test]
    fn filter_hold_and_discard_are_noted_for_the_message() {
        let p = policy(
            "smtpd_restriction_classes = tagged\ntagged = check_recipient_access inline:{ {c@x.example=HOLD inspect} }\n\
             smtpd_recipient_restrictions = check_recipient_access inline:{ {a@x.example=FILTER scan:[127.0.0.1]:10025}, {b@x.example=FILTER nocolon}, d@x.example=DISCARD, c@x.example=tagged }, reject\n",
        );
        let eval = |rcpt: &str| {
            let mut notes = Notes::default();
            let f = facts("192.0.2.9", rcpt, AddressClass::Default);
            let d = p.evaluate_noting(
                "smtpd_recipient_restrictions",
                Stage::Recipient,
                &f,
                &mut notes,
            );
            (d, notes)
        };
        // FILTER notes the filter and goes on to the next restriction.
        let (d, notes) = eval("a@x.example");
        assert!(matches!(d, Decision::Reject(_)), "{d:?}");
        match notes.actions.as_slice() {
            [MessageAction::Filter(f, reason)] => {
                assert_eq!(f.to_string(), "scan:[127.0.0.1]:10025");
                assert_eq!(
                    reason,
                    "<a@x.example>: Recipient address triggers FILTER scan:[127.0.0.1]:10025"
                );
            }
            other => panic!("{other:?}"),
        }
        let (_, notes) = eval("b@x.example");
        assert!(notes.actions.is_empty());
        assert!(
            notes.warnings[0].contains("requires transport:destination"),
            "{:?}",
            notes.warnings
        );
        // DISCARD permits; HOLD inside a restriction class is noted too.
        let (d, notes) = eval("d@x.example");
        assert_eq!(d, Decision::Permit);
        assert!(matches!(
            notes.actions.as_slice(),
            [MessageAction::Discard(_)]
        ));
        let (_, notes) = eval("c@x.example");
        assert_eq!(
            notes.actions,
            [MessageAction::Hold(
                "<c@x.example>: Recipient address triggers HOLD inspect".into()
            )]
        );
    }

    #[test]
    fn default_relay_control() {
        let p = policy("mynetworks = 127.0.0.0/8\n");
        let mut w = Vec::new();
        let outsider = facts("192.0.2.9", "x@foreign.example", AddressClass::Default);
        match p.evaluate("smtpd_relay_restrictions", Stage::Relay, &outsider, &mut w) {
            Decision::Reject(r) => assert_eq!(
                r.summary(),
                "454 4.7.1 <x@foreign.example>: Relay access denied"
            ),
            other => panic!("{other:?}"),
        }
        let insider = facts("127.0.0.1", "x@foreign.example", AddressClass::Default);
        assert_eq!(
            p.evaluate("smtpd_relay_restrictions", Stage::Relay, &insider, &mut w),
            Decision::Permit
        );
        let local = facts("192.0.2.9", "x@mx", AddressClass::Local);
        assert_eq!(
            p.evaluate("smtpd_relay_restrictions", Stage::Relay, &local, &mut w),
            Decision::Dunno
        );
        let strict = policy(
            "mynetworks = 127.0.0.0/8\nsmtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
        );
        match strict.evaluate(
            "smtpd_recipient_restrictions",
            Stage::Recipient,
            &outsider,
            &mut w,
        ) {
            Decision::Reject(r) => assert_eq!(
                r.summary(),
                "554 5.7.1 <x@foreign.example>: Relay access denied"
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn access_tables_and_classes() {
        let p = policy(
            "smtpd_restriction_classes = strict\nstrict = reject\nsmtpd_recipient_restrictions = check_recipient_access inline:{ vip@example.com=OK, { spam.example=REJECT go away }, { slow.example=450 try later }, strict.example=strict, { warn.example=WARN noted } }, permit\n",
        );
        let mut w = Vec::new();
        let run = |rcpt: &str, w: &mut Vec<String>| {
            p.evaluate(
                "smtpd_recipient_restrictions",
                Stage::Recipient,
                &facts("192.0.2.9", rcpt, AddressClass::Default),
                w,
            )
        };
        assert_eq!(run("vip@example.com", &mut w), Decision::Permit);
        match run("a@spam.example", &mut w) {
            Decision::Reject(r) => assert_eq!(
                r.summary(),
                "554 5.7.1 <a@spam.example>: Recipient address rejected: go away"
            ),
            o => panic!("{o:?}"),
        }
        match run("a@slow.example", &mut w) {
            Decision::Reject(r) => assert_eq!(r.code, 450),
            o => panic!("{o:?}"),
        }
        assert!(matches!(
            run("a@strict.example", &mut w),
            Decision::Reject(_)
        ));
        assert_eq!(run("a@warn.example", &mut w), Decision::Permit);
        assert!(w.iter().any(|l| l.contains("noted")));
    }

    #[test]
    fn unimplemented_restrictions_fail_closed() {
        let p = policy("smtpd_client_restrictions = reject_unknown_client_hostname\n");
        let mut w = Vec::new();
        match p.evaluate(
            "smtpd_client_restrictions",
            Stage::Client,
            &facts("192.0.2.9", "a@b.c", AddressClass::Default),
            &mut w,
        ) {
            Decision::Reject(r) => assert_eq!(r.summary(), "451 4.3.5 Server configuration error"),
            o => panic!("{o:?}"),
        }
        assert!(w[0].contains("reject_unknown_client_hostname is not implemented"));
    }
}
