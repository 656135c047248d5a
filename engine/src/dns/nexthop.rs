//! From a Postfix next hop to the addresses the smtp client connects to.
//!
//! Postfix's syntax (smtp(8), transport(5), `relayhost`):
//! - `domain` — look up MX records; `domain:port` — the same, on that port;
//! - `[host]`, `[host]:port` — no MX lookup: the host's own addresses;
//! - `[192.0.2.1]`, `[2001:db8::1]`, `[ipv6:2001:db8::1]` (with an optional `:port`) — that
//!   address, no lookup at all.
//!
//! A port is a number or one of the service names `smtp`, `submission`, `smtps`/`submissions`
//! and `lmtp`. An unbracketed IP address is taken as the address (Postfix would try an MX lookup
//! for it and fail; nobody means that).
//!
//! The MX rules (RFC 5321 §5.1, RFC 7505, Postfix's smtp_addr.c):
//! - MX hosts in ascending preference, in random order among equal preferences (load sharing);
//! - no MX records → the domain itself is the one host ("implicit MX");
//! - a null MX (`MX 0 .`) → the domain accepts no mail: a permanent failure;
//! - each MX host's addresses (A/AAAA per `inet_protocols`, ordered per
//!   `smtp_address_preference`); an MX host that does not resolve is skipped; if none resolves,
//!   the failure is temporary if any lookup failed temporarily, else permanent (temporary with
//!   `smtp_defer_if_no_mx_address_found = yes`, as Postfix);
//! - at most `smtp_mx_address_limit` addresses in all (0 = no limit).
//!
//! DNS can be turned off (`disable_dns_lookups = yes`, `smtp_dns_support_level = disabled`):
//! then there is no MX lookup at all and host names go to the system's host lookup
//! (`getaddrinfo`, i.e. /etc/hosts and nsswitch), which blocks — so it runs on glommio's
//! blocking-thread pool, never on the core. `smtp_host_lookup = native` does the same for host
//! addresses while MX lookups still use DNS; `dns, native` tries DNS first.
//!
//! Not done here: Postfix's "MX list points back to myself" loop check (it needs this host's
//! addresses and `proxy_interfaces`; the smtp client does it), and `smtp_mx_session_limit`
//! (a session count, also the client's business).

use std::fmt;
use std::net::{IpAddr, SocketAddr};

use corepost_config::{Config, ConfigError};
use rand::RngExt;
use rand::seq::SliceRandom;

use super::{DnsError, MxResult, Resolver, TempReason};

/// Longest host name accepted in a next hop (RFC 1035's 255 octets, including the root).
const MAX_HOST_LEN: usize = 255;

/// A parsed next hop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Nexthop {
    /// A host or domain name. `mx` is false for the bracketed form.
    Name { host: String, port: u16, mx: bool },
    /// A literal address (`[192.0.2.1]:25`).
    Address(SocketAddr),
}

/// A next hop that does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexthopError {
    pub nexthop: String,
    pub reason: &'static str,
}

impl fmt::Display for NexthopError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "bad next hop {:?}: {}", self.nexthop, self.reason)
    }
}

impl std::error::Error for NexthopError {}

/// A port number, or a service name Postfix knows (`smtp`, `lmtp`, ...).
pub fn parse_port(text: &str) -> Option<u16> {
    match text.to_ascii_lowercase().as_str() {
        "smtp" => Some(25),
        "submission" => Some(587),
        "smtps" | "submissions" => Some(465),
        "lmtp" => Some(24),
        digits if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) => {
            digits.parse::<u16>().ok().filter(|&p| p != 0)
        }
        _ => None,
    }
}

fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_LEN
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_' || b >= 0x80)
        && !host.starts_with('.')
        && !host.contains("..")
}

/// Parses a next hop (`domain`, `domain:port`, `[host]`, `[host]:port`, `[address]:port`).
pub fn parse_nexthop(nexthop: &str, default_port: u16) -> Result<Nexthop, NexthopError> {
    let err = |reason| NexthopError {
        nexthop: nexthop.to_string(),
        reason,
    };
    let text = nexthop.trim();
    if text.is_empty() {
        return Err(err("empty"));
    }
    let (host, port_text, bracketed) = if let Some(rest) = text.strip_prefix('[') {
        let Some((inner, after)) = rest.split_once(']') else {
            return Err(err("missing ']'"));
        };
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| err("junk after ']'"))?),
        };
        (inner, port, true)
    } else if let Ok(ip) = text.parse::<IpAddr>() {
        // An unbracketed address (an IPv6 one cannot carry a port without brackets).
        return Ok(Nexthop::Address(SocketAddr::new(ip, default_port)));
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h, Some(p), false),
            None => (text, None, false),
        }
    };
    let port = match port_text {
        None => default_port,
        Some(p) => parse_port(p).ok_or_else(|| err("bad port"))?,
    };
    if bracketed {
        let literal = host
            .get(..5)
            .filter(|p| p.eq_ignore_ascii_case("ipv6:"))
            .and_then(|_| host.get(5..))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<IpAddr>() {
            return Ok(Nexthop::Address(SocketAddr::new(ip, port)));
        }
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    if !valid_host(host) {
        return Err(err("bad host name"));
    }
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Nexthop::Address(SocketAddr::new(ip, port)));
    }
    Ok(Nexthop::Name {
        host: host.to_ascii_lowercase(),
        port,
        mx: !bracketed,
    })
}

/// Whether DNS is used at all (`smtp_dns_support_level`, `disable_dns_lookups`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DnsSupport {
    Enabled,
    /// No MX lookups; host names through the system's host lookup only.
    Disabled,
}

/// How host names become addresses (`smtp_host_lookup`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostLookup {
    Dns,
    Native,
    /// DNS, and the system's lookup when DNS finds nothing.
    DnsThenNative,
}

/// Which address family goes first for a host with both (`smtp_address_preference`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressPreference {
    /// Random per host.
    Any,
    Ipv4,
    Ipv6,
}

/// How to resolve next hops: the smtp client's DNS parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexthopOptions {
    /// Port when the next hop names none (25 for smtp).
    pub default_port: u16,
    pub dns: DnsSupport,
    pub host_lookup: HostLookup,
    /// `inet_protocols`: use IPv4 / IPv6 addresses.
    pub ipv4: bool,
    pub ipv6: bool,
    pub preference: AddressPreference,
    /// `smtp_mx_address_limit`; 0 means no limit.
    pub mx_address_limit: usize,
    /// `smtp_dns_support_level = dnssec`: lookups ask for DNSSEC and answers carry whether the
    /// resolver authenticated them (needed by the `dane` TLS levels).
    pub dnssec: bool,
    /// `smtp_defer_if_no_mx_address_found`: MX hosts none of which has an address defer the
    /// mail instead of bouncing it (the text stays, the status becomes 4.x.x).
    pub defer_if_no_mx_address: bool,
}

impl NexthopOptions {
    /// Postfix's defaults: DNS on, `smtp_host_lookup = dns`, both families, any order, at most
    /// five addresses.
    pub fn new(default_port: u16) -> NexthopOptions {
        NexthopOptions {
            default_port,
            dns: DnsSupport::Enabled,
            host_lookup: HostLookup::Dns,
            ipv4: true,
            ipv6: true,
            preference: AddressPreference::Any,
            mx_address_limit: 5,
            dnssec: false,
            defer_if_no_mx_address: false,
        }
    }

    /// From the configuration: `smtp_dns_support_level` (empty: as `disable_dns_lookups`
    /// says), `smtp_host_lookup`, `inet_protocols`, `smtp_address_preference`,
    /// `smtp_mx_address_limit`.
    pub fn from_config(config: &Config, default_port: u16) -> Result<NexthopOptions, ConfigError> {
        let mut opts = NexthopOptions::new(default_port);
        let level = config.get("smtp_dns_support_level")?.to_ascii_lowercase();
        opts.dns = match level.trim() {
            "disabled" => DnsSupport::Disabled,
            "" if config.get_bool("disable_dns_lookups")? => DnsSupport::Disabled,
            _ => DnsSupport::Enabled,
        };
        opts.dnssec = level.trim() == "dnssec";
        let lookups: Vec<String> = config
            .get_list("smtp_host_lookup")?
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        let dns = lookups.iter().any(|s| s == "dns");
        let native = lookups.iter().any(|s| s == "native");
        opts.host_lookup = match (dns, native) {
            (true, true) => HostLookup::DnsThenNative,
            (false, true) => HostLookup::Native,
            _ => HostLookup::Dns,
        };
        let protocols: Vec<String> = config
            .get_list("inet_protocols")?
            .iter()
            .map(|s| s.to_ascii_lowercase())
            .collect();
        if !protocols.iter().any(|p| p == "all") {
            opts.ipv4 = protocols.iter().any(|p| p == "ipv4");
            opts.ipv6 = protocols.iter().any(|p| p == "ipv6");
            if !opts.ipv4 && !opts.ipv6 {
                opts.ipv4 = true;
            }
        }
        opts.preference = match config
            .get("smtp_address_preference")?
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "ipv4" => AddressPreference::Ipv4,
            "ipv6" => AddressPreference::Ipv6,
            _ => AddressPreference::Any,
        };
        opts.mx_address_limit =
            usize::try_from(config.get_int("smtp_mx_address_limit")?.max(0)).unwrap_or(usize::MAX);
        opts.defer_if_no_mx_address = config.get_bool("smtp_defer_if_no_mx_address_found")?;
        Ok(opts)
    }
}

impl NexthopOptions {
    /// DNSSEC lookups for DANE: `smtp_dns_support_level = dnssec` with DNS host lookups
    /// (Postfix's `dane_init` also requires `smtp_host_lookup` to include `dns`).
    pub fn dane_lookups(&self) -> bool {
        self.dnssec && self.dns == DnsSupport::Enabled && self.host_lookup != HostLookup::Native
    }
}

/// One address to try, with where it came from (for `relay=host[addr]:port` log lines).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The host name (MX exchange, the domain for an implicit MX, the bracketed host), or the
    /// address itself for a literal next hop.
    pub host: String,
    pub addr: SocketAddr,
    /// The MX preference; `None` when no MX lookup was made, 0 for an implicit MX.
    pub preference: Option<u16>,
    /// The MX RRset was authenticated (DNSSEC); `None` when there was no MX record (a
    /// bracketed next hop, an implicit MX, a literal address).
    pub mx_secure: Option<bool>,
    /// The address record (A or AAAA) was authenticated (DNSSEC); always false without
    /// `smtp_dns_support_level = dnssec`.
    pub secure: bool,
}

impl Resolver {
    /// Resolves a next hop to the ordered list of addresses to try. See the module doc for the
    /// rules; errors are permanent or temporary as [`DnsError::is_permanent`] says.
    pub async fn resolve_nexthop(
        &self,
        nexthop: &str,
        opts: &NexthopOptions,
    ) -> Result<Vec<Destination>, DnsError> {
        // The options are the current configuration's (a reload may have changed
        // smtp_dns_support_level since this resolver was made).
        self.set_dnssec(opts.dnssec);
        let parsed =
            parse_nexthop(nexthop, opts.default_port).map_err(|e| DnsError::InvalidName {
                name: nexthop.to_string(),
                reason: e.reason.to_string(),
            })?;
        let (host, port, mx) = match parsed {
            Nexthop::Address(addr) => {
                return Ok(vec![Destination {
                    host: addr.ip().to_string(),
                    addr,
                    preference: None,
                    mx_secure: None,
                    secure: false,
                }]);
            }
            Nexthop::Name { host, port, mx } => (host, port, mx),
        };
        let limit = if opts.mx_address_limit == 0 {
            usize::MAX
        } else {
            opts.mx_address_limit
        };
        if !mx || opts.dns == DnsSupport::Disabled {
            let addrs = self.secure_host_addresses(&host, opts).await?;
            return Ok(addrs
                .into_iter()
                .map(|(ip, secure)| Destination {
                    host: host.clone(),
                    addr: SocketAddr::new(ip, port),
                    preference: None,
                    mx_secure: None,
                    secure,
                })
                .collect());
        }
        let (found, mx_secure) = self.lookup_mx_secure(&host).await;
        let hosts = match found? {
            MxResult::Implicit => {
                let addrs = self.secure_host_addresses(&host, opts).await?;
                return Ok(addrs
                    .into_iter()
                    .take(limit)
                    .map(|(ip, secure)| Destination {
                        host: host.clone(),
                        addr: SocketAddr::new(ip, port),
                        preference: Some(0),
                        mx_secure: None,
                        secure,
                    })
                    .collect());
            }
            MxResult::Hosts(hosts) => hosts,
        };
        let hosts = shuffle_equal_preferences(hosts);
        let mut out = Vec::new();
        let mut first_error: Option<DnsError> = None;
        let mut temp_error: Option<DnsError> = None;
        for mx in hosts {
            if out.len() >= limit {
                break;
            }
            match self.secure_host_addresses(&mx.exchange, opts).await {
                Ok(addrs) => {
                    for (ip, secure) in addrs {
                        if out.len() >= limit {
                            break;
                        }
                        out.push(Destination {
                            host: mx.exchange.clone(),
                            addr: SocketAddr::new(ip, port),
                            preference: Some(mx.preference),
                            mx_secure: Some(mx_secure),
                            secure,
                        });
                    }
                }
                Err(e) => {
                    if !e.is_permanent() && temp_error.is_none() {
                        temp_error = Some(e.clone());
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        if !out.is_empty() {
            return Ok(out);
        }
        let error = temp_error
            .or(first_error)
            .unwrap_or_else(|| DnsError::NoData {
                name: host.clone(),
                rtype: "MX",
            });
        // As Postfix's smtp_domain_addr(): the same text, a soft status.
        Err(if opts.defer_if_no_mx_address && error.is_permanent() {
            DnsError::NoMxAddress(Box::new(error))
        } else {
            error
        })
    }

    /// A host's addresses by DNS and/or the system's lookup, filtered and ordered per `opts`.
    #[cfg(test)]
    pub(super) async fn host_addresses(
        &self,
        host: &str,
        opts: &NexthopOptions,
    ) -> Result<Vec<IpAddr>, DnsError> {
        let found = self.secure_host_addresses(host, opts).await?;
        Ok(found.into_iter().map(|(ip, _)| ip).collect())
    }

    /// [`Resolver::host_addresses`], each address with whether its DNS record was
    /// authenticated (the system's lookup never is).
    async fn secure_host_addresses(
        &self,
        host: &str,
        opts: &NexthopOptions,
    ) -> Result<Vec<(IpAddr, bool)>, DnsError> {
        let use_dns = opts.dns == DnsSupport::Enabled && opts.host_lookup != HostLookup::Native;
        let insecure = |found: Vec<IpAddr>| found.into_iter().map(|ip| (ip, false)).collect();
        let found = if use_dns {
            let dns = self.dns_addresses(host, opts).await;
            match dns {
                Err(e) if opts.host_lookup == HostLookup::DnsThenNative && e.is_permanent() => {
                    native_addresses(host).await.map(insecure)
                }
                other => other,
            }
        } else {
            native_addresses(host).await.map(insecure)
        }?;
        let mut v4: Vec<(IpAddr, bool)> = found
            .iter()
            .copied()
            .filter(|(a, _)| a.is_ipv4() && opts.ipv4)
            .collect();
        let mut v6: Vec<(IpAddr, bool)> = found
            .iter()
            .copied()
            .filter(|(a, _)| a.is_ipv6() && opts.ipv6)
            .collect();
        if v4.is_empty() && v6.is_empty() {
            return Err(DnsError::NoData {
                name: host.to_string(),
                rtype: if opts.ipv4 { "A" } else { "AAAA" },
            });
        }
        let v6_first = match opts.preference {
            AddressPreference::Ipv6 => true,
            AddressPreference::Ipv4 => false,
            AddressPreference::Any => rand::rng().random::<bool>(),
        };
        Ok(if v6_first {
            v6.append(&mut v4);
            v6
        } else {
            v4.append(&mut v6);
            v4
        })
    }

    /// A and/or AAAA records, each address marked with its RRset's authentication.
    async fn dns_addresses(
        &self,
        host: &str,
        opts: &NexthopOptions,
    ) -> Result<Vec<(IpAddr, bool)>, DnsError> {
        use hickory_proto::rr::RecordType;
        let family = |rtype| async move {
            let answer = self.lookup_secure(host, rtype).await;
            let secure = answer.secure;
            answer.outcome.map(|records| {
                records
                    .iter()
                    .filter_map(|r| match r {
                        super::Rdata::A(a) => Some((IpAddr::V4(*a), secure)),
                        super::Rdata::Aaaa(a) => Some((IpAddr::V6(*a), secure)),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
            })
        };
        match (opts.ipv4, opts.ipv6) {
            (true, false) => family(RecordType::A).await,
            (false, true) => family(RecordType::AAAA).await,
            _ => {
                let (v4, v6) =
                    futures_lite::future::zip(family(RecordType::A), family(RecordType::AAAA))
                        .await;
                super::merge_secure_families(host, v4, v6)
            }
        }
    }
}

/// Sorts by preference and shuffles each run of equal preferences.
fn shuffle_equal_preferences(mut hosts: Vec<super::MxHost>) -> Vec<super::MxHost> {
    hosts.sort_by_key(|h| h.preference);
    let mut rng = rand::rng();
    let mut start = 0;
    while start < hosts.len() {
        let pref = hosts.get(start).map(|h| h.preference);
        let mut end = start;
        while end < hosts.len() && hosts.get(end).map(|h| h.preference) == pref {
            end += 1;
        }
        if let Some(run) = hosts.get_mut(start..end) {
            run.shuffle(&mut rng);
        }
        start = end;
    }
    hosts
}

/// The system's host lookup (getaddrinfo), on glommio's blocking-thread pool so the core never
/// blocks. Must run inside a glommio executor (as the whole resolver does).
async fn native_addresses(host: &str) -> Result<Vec<IpAddr>, DnsError> {
    let name = host.to_string();
    let result = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<Vec<IpAddr>> {
            use std::net::ToSocketAddrs;
            let mut out: Vec<IpAddr> = Vec::new();
            for sa in (name.as_str(), 0u16).to_socket_addrs()? {
                if !out.contains(&sa.ip()) {
                    out.push(sa.ip());
                }
            }
            Ok(out)
        })
        .await;
    match result {
        Ok(addrs) if !addrs.is_empty() => Ok(addrs),
        Ok(_) => Err(DnsError::NoData {
            name: host.to_string(),
            rtype: "A",
        }),
        // getaddrinfo's EAI_NONAME and EAI_AGAIN both arrive as io::Error text; only "not
        // known"/"no address" style failures are permanent.
        Err(e) => {
            let text = e.to_string();
            let lower = text.to_ascii_lowercase();
            if lower.contains("not known")
                || lower.contains("no address")
                || lower.contains("not found")
            {
                Err(DnsError::NotFound {
                    name: host.to_string(),
                    rtype: "A",
                })
            } else {
                Err(DnsError::TempFail {
                    name: host.to_string(),
                    rtype: "A",
                    reason: TempReason::System(text),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn name(host: &str, port: u16, mx: bool) -> Nexthop {
        Nexthop::Name {
            host: host.into(),
            port,
            mx,
        }
    }

    #[test]
    fn postfix_next_hop_forms() {
        assert_eq!(
            parse_nexthop("example.com", 25),
            Ok(name("example.com", 25, true))
        );
        assert_eq!(
            parse_nexthop("Example.COM.", 25),
            Ok(name("example.com", 25, true))
        );
        assert_eq!(
            parse_nexthop("example.com:587", 25),
            Ok(name("example.com", 587, true))
        );
        assert_eq!(
            parse_nexthop("[mail.example.com]", 25),
            Ok(name("mail.example.com", 25, false))
        );
        assert_eq!(
            parse_nexthop("[mail.example.com]:submission", 25),
            Ok(name("mail.example.com", 587, false))
        );
        assert_eq!(
            parse_nexthop("example.com:smtp", 2525),
            Ok(name("example.com", 25, true))
        );
        assert_eq!(
            parse_nexthop("[192.0.2.1]:2525", 25),
            Ok(Nexthop::Address("192.0.2.1:2525".parse().unwrap()))
        );
        assert_eq!(
            parse_nexthop("[2001:db8::1]", 25),
            Ok(Nexthop::Address("[2001:db8::1]:25".parse().unwrap()))
        );
        assert_eq!(
            parse_nexthop("[IPv6:2001:db8::1]:24", 25),
            Ok(Nexthop::Address("[2001:db8::1]:24".parse().unwrap()))
        );
        assert_eq!(
            parse_nexthop("192.0.2.1", 25),
            Ok(Nexthop::Address("192.0.2.1:25".parse().unwrap()))
        );
        assert_eq!(
            parse_nexthop("192.0.2.1:26", 25),
            Ok(Nexthop::Address("192.0.2.1:26".parse().unwrap()))
        );
    }

    #[test]
    fn bad_next_hops() {
        for bad in [
            "",
            "  ",
            "[",
            "[host",
            "[host]x",
            "[host]:",
            "host:",
            "host:0",
            "host:65536",
            "host:port",
            "[]",
            "a..b",
            ".a",
            "a b",
            "host:25:26",
            "[a]:b:c",
            "ex@mple.com",
        ] {
            assert!(parse_nexthop(bad, 25).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn equal_preferences_are_shuffled_and_order_kept() {
        let hosts: Vec<super::super::MxHost> =
            [(20, "c"), (10, "a1"), (10, "a2"), (10, "a3"), (30, "d")]
                .iter()
                .map(|(p, h)| super::super::MxHost {
                    preference: *p,
                    exchange: h.to_string(),
                })
                .collect();
        let mut firsts = std::collections::HashSet::new();
        for _ in 0..200 {
            let out = shuffle_equal_preferences(hosts.clone());
            let prefs: Vec<u16> = out.iter().map(|h| h.preference).collect();
            assert_eq!(prefs, [10, 10, 10, 20, 30]);
            firsts.insert(out[0].exchange.clone());
        }
        assert_eq!(
            firsts.len(),
            3,
            "each of the three equal-preference hosts comes first sometimes"
        );
    }

    #[test]
    fn options_from_config() {
        let dir = std::path::Path::new("/nonexistent");
        let config = Config::from_parts(dir, None, None).unwrap();
        let opts = NexthopOptions::from_config(&config, 25).unwrap();
        assert_eq!(opts, NexthopOptions::new(25));

        let config = Config::from_parts(
            dir,
            Some("disable_dns_lookups = yes\nsmtp_mx_address_limit = 0\ninet_protocols = ipv4\nsmtp_host_lookup = dns, native\n"),
            None,
        )
        .unwrap();
        let opts = NexthopOptions::from_config(&config, 25).unwrap();
        assert_eq!(opts.dns, DnsSupport::Disabled);
        assert_eq!(opts.mx_address_limit, 0);
        assert!(opts.ipv4 && !opts.ipv6);
        assert_eq!(opts.host_lookup, HostLookup::DnsThenNative);

        // smtp_dns_support_level wins over disable_dns_lookups when set.
        let config = Config::from_parts(
            dir,
            Some("disable_dns_lookups = yes\nsmtp_dns_support_level = enabled\n"),
            None,
        )
        .unwrap();
        assert_eq!(
            NexthopOptions::from_config(&config, 25).unwrap().dns,
            DnsSupport::Enabled
        );
        let config =
            Config::from_parts(dir, Some("smtp_dns_support_level = disabled\n"), None).unwrap();
        assert_eq!(
            NexthopOptions::from_config(&config, 25).unwrap().dns,
            DnsSupport::Disabled
        );
    }

    proptest! {
        #[test]
        fn parse_never_panics(text in "\\PC{0,60}") {
            let _ = parse_nexthop(&text, 25);
        }

        #[test]
        fn structured_forms_parse(
            host in "[a-z][a-z0-9-]{0,10}(\\.[a-z][a-z0-9-]{0,10}){0,3}",
            port in 1u16..,
            bracket: bool,
        ) {
            let text = if bracket { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
            prop_assert_eq!(
                parse_nexthop(&text, 25),
                Ok(Nexthop::Name { host: host.clone(), port, mx: !bracket })
            );
        }

        #[test]
        fn address_forms_parse(ip in any::<IpAddr>(), port in 1u16..) {
            let sa = SocketAddr::new(ip, port);
            let text = match ip {
                IpAddr::V4(v4) => format!("[{v4}]:{port}"),
                IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            };
            prop_assert_eq!(parse_nexthop(&text, 25), Ok(Nexthop::Address(sa)));
        }
    }
}
