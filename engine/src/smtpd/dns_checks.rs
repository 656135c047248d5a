//! DNS-based smtpd checks: the client's host name at connect (PTR, then
//! forward-confirmed), `reject_unknown_{helo_hostname,sender_domain,
//! recipient_domain}`, and the DNS lists `reject_rbl_client domain[=filter]`,
//! `reject_rhsbl_{client,reverse_client,sender,helo,recipient}`,
//! `permit_dnswl_client`, `permit_rhswl_client`.
//!
//! Lookups go through a [`Resolver`] on the current core (one per executor
//! thread, made on first use and replaced when a reload changes the name
//! servers), so a check never blocks a core. A timeout or SERVFAIL never
//! gives a permanent answer: it becomes a `defer_if_permit` 4xx (Postfix's
//! `reject_tempfail_action` default), which only answers when nothing else
//! rejects. Reply texts and codes are Postfix's (`unknown_*_reject_code`,
//! `maps_rbl_reject_code`, `rbl_reply_maps`, `default_rbl_reply`).

use super::reply::Reply;
use super::restrictions::{Decision, Facts, NameStatus, Outcome, fix_dsn, split_dsn, status_for};
use crate::dns::{DnsError, Resolver, ResolverConfig};
use corepost_config::restrictions::Restriction;
use corepost_config::tables::TableList;
use std::cell::RefCell;
use std::net::IpAddr;
use std::rc::Rc;

/// Whether a name from a PTR record or the hosts file may be the
/// client's name: a syntactically valid domain, not an address.
fn usable_name(name: &str) -> bool {
    !name.is_empty()
        && super::address::parse_domain(name).is_ok()
        && name.parse::<IpAddr>().is_err()
}

/// Reply codes the DNS checks use (from the restriction settings).
pub struct Codes {
    pub unknown_hostname: u16,
    pub unknown_address: u16,
}

/// Settings of the DNS checks of one smtpd service.
#[derive(Debug, Clone, Default)]
pub struct DnsChecks {
    resolver: Option<ResolverConfig>,
    /// Look up the client's name at connect.
    peername_lookup: bool,
    /// `corepost_hosts_file`, consulted before DNS for the client's name.
    hosts: Option<std::sync::Arc<crate::dns::hosts::HostsFile>>,
    rbl_code: u16,
    rbl_reply_maps: Option<TableList>,
    default_rbl_reply: String,
}

/// The client's names after the connect-time lookups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientNames {
    pub name: String,
    pub name_status: NameStatus,
    pub reverse_name: String,
    pub reverse_status: NameStatus,
}

impl ClientNames {
    pub fn unknown(status: NameStatus) -> ClientNames {
        ClientNames {
            name: "unknown".into(),
            name_status: status,
            reverse_name: "unknown".into(),
            reverse_status: status,
        }
    }
}

thread_local! {
    /// This core's resolver for smtpd, with the settings it was made with.
    static RESOLVER: RefCell<Option<(ResolverConfig, Rc<Resolver>)>> = const { RefCell::new(None) };
}

/// The current core's smtpd resolver for `config`.
pub fn core_resolver(config: &ResolverConfig) -> Rc<Resolver> {
    RESOLVER.with(|slot| {
        let mut slot = slot.borrow_mut();
        match &*slot {
            Some((c, r)) if c == config => Rc::clone(r),
            _ => {
                let r = Rc::new(Resolver::new(config.clone()));
                *slot = Some((config.clone(), Rc::clone(&r)));
                r
            }
        }
    })
}

impl DnsChecks {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<DnsChecks, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let yes = |n: &str| -> Result<bool, String> { Ok(s(n)?.trim() == "yes") };
        let servers = corepost_config::list::split_list(&s("corepost_dns_servers")?)
            .map_err(|e| format!("corepost_dns_servers: {e}"))?;
        let conf = crate::dns::ResolvConf::load(std::path::Path::new(
            crate::dns::resolv_conf::RESOLV_CONF,
        ));
        let mut resolver = ResolverConfig::from_resolv_conf(&conf);
        if !servers.is_empty() {
            resolver.nameservers = servers
                .iter()
                .map(|v| crate::dns::parse_server(v))
                .collect::<Result<_, _>>()
                .map_err(|e| format!("corepost_dns_servers: {e}"))?;
        }
        let maps = s("rbl_reply_maps")?;
        let hosts_file = s("corepost_hosts_file")?;
        let hosts = (!hosts_file.trim().is_empty()).then(|| {
            std::sync::Arc::new(crate::dns::hosts::HostsFile::load(std::path::Path::new(
                hosts_file.trim(),
            )))
        });
        Ok(DnsChecks {
            resolver: Some(resolver),
            hosts,
            // Only smtpd_peername_lookup: disable_dns_lookups and
            // smtp_dns_support_level are the SMTP client's (Postfix's smtpd
            // reads neither).
            peername_lookup: yes("smtpd_peername_lookup")?,
            rbl_code: s("maps_rbl_reject_code")?
                .trim()
                .parse()
                .map_err(|_| "maps_rbl_reject_code: not a reply code".to_string())?,
            rbl_reply_maps: if maps.trim().is_empty() {
                None
            } else {
                Some(TableList::open(&maps).map_err(|e| format!("rbl_reply_maps: {e}"))?)
            },
            default_rbl_reply: s("default_rbl_reply")?,
        })
    }

    /// Settings for tests: this resolver, peer name lookups on.
    pub fn for_tests(resolver: ResolverConfig) -> DnsChecks {
        DnsChecks {
            resolver: Some(resolver),
            peername_lookup: true,
            hosts: None,
            rbl_code: 554,
            rbl_reply_maps: None,
            default_rbl_reply: "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}".into(),
        }
    }

    fn resolver(&self) -> Option<Rc<Resolver>> {
        self.resolver.as_ref().map(core_resolver)
    }

    /// The client's name (Postfix's peer name lookup): PTR, then the name's
    /// addresses must include the client's. With lookups off, `unknown`.
    pub async fn client_names(&self, ip: IpAddr) -> ClientNames {
        if !self.peername_lookup {
            return ClientNames::unknown(NameStatus::NotFound);
        }
        // The hosts file first, as nsswitch's "files dns": its lines map
        // both ways, so a name found there is confirmed by the same file.
        let hosts = self.hosts.as_deref();
        if let Some(name) = hosts.and_then(|h| h.name_of(ip)).filter(|n| usable_name(n)) {
            return ClientNames {
                name: name.to_string(),
                name_status: NameStatus::Ok,
                reverse_name: name.to_string(),
                reverse_status: NameStatus::Ok,
            };
        }
        let Some(resolver) = self.resolver() else {
            return ClientNames::unknown(NameStatus::NotFound);
        };
        let ptr = match resolver.lookup_ptr(ip).await {
            Ok(names) => names.into_iter().find(|n| usable_name(n)),
            Err(e) if !e.is_permanent() => return ClientNames::unknown(NameStatus::TempFail),
            Err(_) => None,
        };
        let Some(reverse) = ptr else {
            return ClientNames::unknown(NameStatus::NotFound);
        };
        // Forward confirmation asks the hosts file first too.
        let listed = hosts
            .and_then(|h| h.addresses_of(&reverse))
            .map(<[IpAddr]>::to_vec);
        let forward = match listed {
            Some(addrs) => Ok(addrs),
            None => resolver.lookup_ip(&reverse).await,
        };
        let (name, name_status) = match forward {
            Ok(addrs) if addrs.contains(&ip) => (reverse.clone(), NameStatus::Ok),
            Ok(_) => ("unknown".to_string(), NameStatus::NotFound),
            Err(e) if !e.is_permanent() => ("unknown".to_string(), NameStatus::TempFail),
            Err(_) => ("unknown".to_string(), NameStatus::NotFound),
        };
        ClientNames {
            name,
            name_status,
            reverse_name: reverse,
            reverse_status: NameStatus::Ok,
        }
    }

    /// Evaluate one DNS-based restriction. Returns the decision and, for a
    /// temporary DNS failure, the 4xx to answer if nothing rejects.
    pub async fn evaluate(
        &self,
        r: &Restriction,
        f: &Facts<'_>,
        codes: &Codes,
        out: &mut Outcome,
    ) -> (Decision, Option<Reply>) {
        let Some(resolver) = self.resolver() else {
            return (Decision::Dunno, None);
        };
        let arg = r.argument.as_deref().unwrap_or_default();
        match r.name.as_str() {
            "reject_unknown_helo_hostname" => match f.helo {
                Some(h) if !h.starts_with('[') => {
                    let host = h.trim_end_matches('.');
                    match host_exists(&resolver, host).await {
                        Exists::Yes => (Decision::Dunno, None),
                        Exists::No => {
                            let code = codes.unknown_hostname;
                            (
                                Decision::Reject(Reply::new(
                                    code,
                                    status_for(code, "5.7.1"),
                                    format!("<{h}>: Helo command rejected: Host not found"),
                                )),
                                None,
                            )
                        }
                        Exists::TempFail => (
                            Decision::Dunno,
                            Some(Reply::new(
                                450,
                                "4.7.1",
                                format!("<{h}>: Helo command rejected: Host not found"),
                            )),
                        ),
                        Exists::NullMx => (Decision::Dunno, None),
                    }
                }
                _ => (Decision::Dunno, None),
            },
            "reject_unknown_sender_domain" | "reject_unknown_recipient_domain" => {
                let sender = r.name == "reject_unknown_sender_domain";
                let address = if sender { f.sender } else { f.recipient };
                let Some(address) = address.filter(|a| !a.is_empty()) else {
                    return (Decision::Dunno, None);
                };
                // Final destinations (local and virtual) are known without DNS.
                if !sender
                    && f.recipient_class.is_some_and(|c| {
                        !matches!(
                            c,
                            crate::routing::AddressClass::Default
                                | crate::routing::AddressClass::Relay
                        )
                    })
                {
                    return (Decision::Dunno, None);
                }
                let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
                if domain.is_empty() || domain.starts_with('[') {
                    return (Decision::Dunno, None);
                }
                let (class, dsn) = if sender {
                    ("Sender address", "5.1.8")
                } else {
                    ("Recipient address", "5.1.2")
                };
                match mail_domain_exists(&resolver, domain).await {
                    Exists::Yes => (Decision::Dunno, None),
                    Exists::No => {
                        let code = codes.unknown_address;
                        (
                            Decision::Reject(Reply::new(
                                code,
                                status_for(code, dsn),
                                format!("<{address}>: {class} rejected: Domain not found"),
                            )),
                            None,
                        )
                    }
                    Exists::NullMx => {
                        let (code, dsn) = if sender {
                            (550, "5.7.27")
                        } else {
                            (556, "5.1.10")
                        };
                        (
                            Decision::Reject(Reply::new(
                                code,
                                dsn,
                                format!(
                                    "<{address}>: {class} rejected: Domain {domain} does not accept mail (nullMX)"
                                ),
                            )),
                            None,
                        )
                    }
                    Exists::TempFail => (
                        Decision::Dunno,
                        Some(Reply::new(
                            450,
                            status_for(450, dsn),
                            format!("<{address}>: {class} rejected: Domain not found"),
                        )),
                    ),
                }
            }
            name => {
                let (list_domain, filter) = match arg.split_once('=') {
                    Some((d, f)) => (d, Some(f)),
                    None => (arg, None),
                };
                let domain_of = |a: &str| a.rsplit_once('@').map_or("", |(_, d)| d).to_string();
                let (what, rbl_class, query_prefix) = match name {
                    "reject_rbl_client" | "permit_dnswl_client" => (
                        f.client_addr.to_string(),
                        "Client host",
                        reverse_ip(f.client_addr),
                    ),
                    "reject_rhsbl_client" | "permit_rhswl_client" => (
                        f.client_name.to_string(),
                        "Client host",
                        known(f.client_name),
                    ),
                    "reject_rhsbl_reverse_client" => (
                        f.reverse_client_name.to_string(),
                        "Unverified Client host",
                        known(f.reverse_client_name),
                    ),
                    "reject_rhsbl_helo" => {
                        let h = f.helo.unwrap_or_default().trim_end_matches('.');
                        let q =
                            (!h.is_empty() && !h.starts_with('[') && h.parse::<IpAddr>().is_err())
                                .then(|| h.to_string());
                        (h.to_string(), "Helo command", q)
                    }
                    "reject_rhsbl_sender" => {
                        let d = domain_of(f.sender.unwrap_or_default());
                        let q = (!d.is_empty() && !d.starts_with('[')).then(|| d.clone());
                        (d, "Sender address", q)
                    }
                    _ => {
                        let d = domain_of(f.recipient.unwrap_or_default());
                        let q = (!d.is_empty() && !d.starts_with('[')).then(|| d.clone());
                        (d, "Recipient address", q)
                    }
                };
                let Some(prefix) = query_prefix else {
                    return (Decision::Dunno, None);
                };
                let query = format!("{prefix}.{list_domain}");
                let listed = match resolver.lookup_a(&query).await {
                    Ok(addrs) => addrs
                        .iter()
                        .any(|a| filter.is_none_or(|f| filter_matches(f, *a))),
                    Err(e) if e.is_permanent() => false,
                    Err(_) => {
                        // Postfix gives the client the benefit of the doubt:
                        // an unreachable list is skipped with a warning (a
                        // reject list) or defers a later reject (a permit
                        // list, DEFER_IF_REJECT).
                        out.warnings.push(format!(
                            "{query}: RBL lookup error: Host or domain name not found. Name service error for name={query} type=A: Host not found, try again"
                        ));
                        if name.starts_with("permit_") {
                            out.defer_if_reject(Reply::new(
                                450,
                                "4.7.1",
                                format!("<{what}>: {rbl_class} rejected: Service unavailable"),
                            ));
                        }
                        return (Decision::Dunno, None);
                    }
                };
                if !listed {
                    return (Decision::Dunno, None);
                }
                if name.starts_with("permit_") {
                    return (Decision::Permit, None);
                }
                let reason = resolver
                    .lookup_txt(&query)
                    .await
                    .ok()
                    .and_then(|t| t.into_iter().next())
                    .unwrap_or_default();
                let vars = RblVars {
                    code: self.rbl_code,
                    domain: list_domain,
                    reason: &reason,
                    class: rbl_class,
                    what: &what,
                    facts: f,
                };
                (Decision::Reject(self.rbl_reply(arg, &vars, out)), None)
            }
        }
    }

    /// The hosts behind a name for `check_*_a_access` (the name itself)
    /// and `check_*_mx_access` (its MX hosts, or itself without MX), each
    /// with its addresses. `Err` is a temporary DNS failure; a name that
    /// does not exist has no hosts.
    pub async fn servers(
        &self,
        name: &str,
        mx: bool,
    ) -> Result<Vec<(String, Vec<IpAddr>)>, DnsError> {
        let Some(resolver) = self.resolver() else {
            return Ok(Vec::new());
        };
        let hosts = if mx {
            match resolver.lookup_mx(name).await {
                Ok(crate::dns::MxResult::Hosts(h)) => h.into_iter().map(|h| h.exchange).collect(),
                Ok(crate::dns::MxResult::Implicit) => vec![name.to_string()],
                Err(e) if !e.is_permanent() => return Err(e),
                Err(_) => return Ok(Vec::new()),
            }
        } else {
            vec![name.to_string()]
        };
        let mut out = Vec::with_capacity(hosts.len());
        for host in hosts {
            let addrs = match resolver.lookup_ip(&host).await {
                Ok(a) => a,
                Err(e) if !e.is_permanent() && !mx => return Err(e),
                Err(_) => Vec::new(),
            };
            out.push((host, addrs));
        }
        Ok(out)
    }

    /// The reply for a DNS list hit: `rbl_reply_maps`, else `default_rbl_reply`.
    fn rbl_reply(&self, arg: &str, v: &RblVars<'_>, out: &mut Outcome) -> Reply {
        let template = self
            .rbl_reply_maps
            .as_ref()
            .and_then(|t| {
                t.lookup_first([arg, v.domain])
                    .ok()
                    .flatten()
                    .map(|(_, v)| v)
            })
            .unwrap_or_else(|| self.default_rbl_reply.clone());
        let code = v.code.to_string();
        let lookup = |n: &str| -> Option<String> {
            let value = match n {
                "rbl_code" => code.clone(),
                "rbl_domain" => v.domain.to_string(),
                "rbl_reason" | "rbl_txt" => v.reason.to_string(),
                "rbl_class" => v.class.to_string(),
                "rbl_what" => v.what.to_string(),
                "client_address" => v.facts.client_addr.to_string(),
                "client_name" => v.facts.client_name.to_string(),
                "reverse_client_name" => v.facts.reverse_client_name.to_string(),
                "helo_name" => v.facts.helo.unwrap_or_default().to_string(),
                "sender" => v.facts.sender.unwrap_or_default().to_string(),
                "recipient" => v.facts.recipient.unwrap_or_default().to_string(),
                _ => String::new(),
            };
            (!value.is_empty()).then_some(value)
        };
        let text = match corepost_config::expand::expand(&template, &lookup) {
            Ok(t) => t,
            Err(e) => {
                out.warnings
                    .push(format!("rbl reply template \"{template}\": {e}"));
                format!("{} Service unavailable", v.code)
            }
        };
        parse_reply(&text, v.code)
    }
}

struct RblVars<'a> {
    code: u16,
    domain: &'a str,
    reason: &'a str,
    class: &'a str,
    what: &'a str,
    facts: &'a Facts<'a>,
}

/// A reply written as text (`554 5.7.1 text` or `554 text`), as in
/// `default_rbl_reply` or `smtpd_policy_service_default_action`.
pub fn parse_reply(text: &str, fallback_code: u16) -> Reply {
    let text = text.trim();
    let (code, rest) = match text.split_once(' ') {
        Some((c, rest))
            if c.len() == 3
                && matches!(c.as_bytes()[0], b'4' | b'5')
                && c.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (c.parse().unwrap_or(fallback_code), rest.trim_start())
        }
        _ => (fallback_code, text),
    };
    let (dsn, rest) = split_dsn(rest, if code >= 500 { "5.7.1" } else { "4.7.1" });
    Reply::with_status(code, &fix_dsn(code, &dsn), rest)
}

fn known(name: &str) -> Option<String> {
    (name != "unknown" && !name.is_empty()).then(|| name.trim_end_matches('.').to_string())
}

/// `d.c.b.a` for IPv4, reversed nibbles for IPv6 (the DNSxL query form).
pub fn reverse_ip(ip: IpAddr) -> Option<String> {
    Some(match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            format!("{}.{}.{}.{}", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(a) => {
            let mut parts = Vec::with_capacity(32);
            for byte in a.octets().iter().rev() {
                parts.push(format!("{:x}", byte & 0xf));
                parts.push(format!("{:x}", byte >> 4));
            }
            parts.join(".")
        }
    })
}

/// Postfix's DNSxL reply filter: `127.0.0.2`, `127.0.0.[2..11]`,
/// `127.0.0.[2;4;6..8]`, one pattern per octet.
pub fn filter_matches(filter: &str, addr: std::net::Ipv4Addr) -> bool {
    let mut parts = Vec::with_capacity(4);
    let (mut start, mut in_brackets) = (0, false);
    for (i, c) in filter.char_indices() {
        match c {
            '[' => in_brackets = true,
            ']' => in_brackets = false,
            '.' if !in_brackets => {
                parts.push(&filter[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&filter[start..]);
    if parts.len() != 4 {
        return false;
    }
    parts.iter().zip(addr.octets()).all(|(p, octet)| {
        let set = p
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(p);
        set.split(';').any(|item| match item.split_once("..") {
            Some((lo, hi)) => match (lo.parse::<u8>(), hi.parse::<u8>()) {
                (Ok(lo), Ok(hi)) => (lo..=hi).contains(&octet),
                _ => false,
            },
            None => item.parse::<u8>() == Ok(octet),
        })
    })
}

enum Exists {
    Yes,
    No,
    NullMx,
    TempFail,
}

/// A HELO name exists if it has an A, AAAA or MX record.
async fn host_exists(resolver: &Resolver, host: &str) -> Exists {
    match resolver.lookup_ip(host).await {
        Ok(_) => Exists::Yes,
        Err(e) if !e.is_permanent() => Exists::TempFail,
        Err(DnsError::NotFound { .. }) | Err(DnsError::InvalidName { .. }) => Exists::No,
        Err(_) => match resolver.lookup_mx(host).await {
            Ok(crate::dns::MxResult::Hosts(_)) => Exists::Yes,
            Ok(crate::dns::MxResult::Implicit) => Exists::No,
            Err(e) if !e.is_permanent() => Exists::TempFail,
            Err(_) => Exists::No,
        },
    }
}

/// A mail domain exists if it has MX records, or A/AAAA records.
async fn mail_domain_exists(resolver: &Resolver, domain: &str) -> Exists {
    match resolver.lookup_mx(domain).await {
        Ok(crate::dns::MxResult::Hosts(_)) => Exists::Yes,
        Err(DnsError::NullMx { .. }) => Exists::NullMx,
        Err(e) if !e.is_permanent() => Exists::TempFail,
        Err(DnsError::NotFound { .. }) | Err(DnsError::InvalidName { .. }) => Exists::No,
        _ => match resolver.lookup_ip(domain).await {
            Ok(_) => Exists::Yes,
            Err(e) if !e.is_permanent() => Exists::TempFail,
            Err(_) => Exists::No,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smtpd::restrictions::Stage;

    #[test]
    fn filters_and_query_names() {
        let a = "127.0.0.4".parse().unwrap();
        assert!(filter_matches("127.0.0.4", a));
        assert!(!filter_matches("127.0.0.2", a));
        assert!(filter_matches("127.0.0.[2..11]", a));
        assert!(filter_matches("127.0.0.[2;4]", a));
        assert!(!filter_matches("127.0.0.[2;5..9]", a));
        assert!(!filter_matches("127.0.0", a));
        assert_eq!(
            reverse_ip("192.0.2.9".parse().unwrap()).unwrap(),
            "9.2.0.192"
        );
        assert!(
            reverse_ip("2001:db8::1".parse().unwrap())
                .unwrap()
                .starts_with("1.0.0.0.0.0.0.0")
        );
    }

    fn on_executor<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + 'static,
    {
        glommio::LocalExecutorBuilder::default()
            .spawn(f)
            .expect("glommio executor")
            .join()
            .expect("test task");
    }

    fn quick(server: std::net::SocketAddr) -> ResolverConfig {
        let mut c = ResolverConfig::with_servers(vec![server]);
        c.timeout = std::time::Duration::from_millis(200);
        c.attempts = 1;
        c.failure_ttl = std::time::Duration::ZERO;
        c
    }

    #[test]
    fn timeouts_are_temporary_never_permanent() {
        use crate::dns::testserver::{Behaviour, TestServer};
        use crate::smtpd::restrictions::tests::policy;
        let server = TestServer::start().unwrap();
        server.set_default_behaviour(Behaviour::Drop);
        let config = quick(server.addr());
        on_executor(move || async move {
            let checks = DnsChecks::for_tests(config.clone());
            let ip: IpAddr = "192.0.2.7".parse().unwrap();
            assert_eq!(
                checks.client_names(ip).await,
                ClientNames::unknown(NameStatus::TempFail)
            );
            let mut p = policy(
                "smtpd_client_restrictions = reject_rbl_client bl.test, reject_unknown_client_hostname\nsmtpd_sender_restrictions = reject_unknown_sender_domain\nsmtpd_helo_restrictions = reject_unknown_helo_hostname\n",
            );
            p.dns = DnsChecks::for_tests(config);
            let mut f = Facts::client(ip);
            f.client_name_status = NameStatus::TempFail;
            f.helo = Some("helo.example");
            f.sender = Some("a@sender.example");
            for (list, stage, want) in [
                (
                    "smtpd_client_restrictions",
                    Stage::Client,
                    "7.2.0.192.bl.test: RBL lookup error: Host or domain name not found. Name service error for name=7.2.0.192.bl.test type=A: Host not found, try again",
                ),
                (
                    "smtpd_helo_restrictions",
                    Stage::Helo,
                    "450 4.7.1 <helo.example>: Helo command rejected: Host not found",
                ),
                (
                    "smtpd_sender_restrictions",
                    Stage::Sender,
                    "450 4.1.8 <a@sender.example>: Sender address rejected: Domain not found",
                ),
            ] {
                let mut out = Outcome::default();
                let r = p.check(&[(list, stage)], &f, &mut out).await;
                let got = r.map(|r| r.summary()).unwrap_or_default();
                if list == "smtpd_client_restrictions" {
                    // The unreachable DNSBL is skipped (Postfix logs a
                    // warning); the unknown client name's 450 answers.
                    assert_eq!(
                        got,
                        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.7]"
                    );
                    let mut only_rbl = Facts::client(ip);
                    only_rbl.client_name_status = NameStatus::Ok;
                    let mut out = Outcome::default();
                    let r = p.check(&[(list, stage)], &only_rbl, &mut out).await;
                    assert_eq!(r.map(|r| r.summary()), None);
                    assert_eq!(out.warnings, vec![want.to_string()]);
                } else {
                    assert_eq!(got, want);
                }
            }
        });
    }

    proptest::proptest! {
        #[test]
        fn filters_and_reply_templates_never_panic(text in "[ -~]{0,60}", a in proptest::prelude::any::<u32>()) {
            let _ = filter_matches(&text, std::net::Ipv4Addr::from(a));
            let r = parse_reply(&text, 554);
            proptest::prop_assert!((400..600).contains(&r.code));
        }
    }

    #[test]
    fn reply_text() {
        let r = parse_reply(
            "554 Service unavailable; Client host [1.2.3.4] blocked",
            554,
        );
        assert_eq!(
            r.summary(),
            "554 5.7.1 Service unavailable; Client host [1.2.3.4] blocked"
        );
        assert_eq!(
            parse_reply("450 4.7.0 go away", 554).summary(),
            "450 4.7.0 go away"
        );
        assert_eq!(parse_reply("421 5.7.0 x", 554).summary(), "421 4.7.0 x");
    }
}
