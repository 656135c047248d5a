//! Where the resolver's name servers and timing come from.
//!
//! corepost talks to recursive name servers itself (it does not call the C library's resolver on
//! the cores, because that blocks), so it has to read the same settings the C library would:
//! `/etc/resolv.conf`'s `nameserver` lines and its `options timeout:`, `attempts:` and `ndots:`,
//! with glibc's limits (at most three name servers, `timeout` at most 30 s, `attempts` at most 5,
//! `ndots` at most 15, and `127.0.0.1` when no name server is listed).
//!
//! `search` and `domain` are read past but not used: mail lookups are for fully qualified names
//! (Postfix turns `RES_DEFNAMES`/`RES_DNSRCH` off for them too), so `ndots` has no effect either;
//! it is parsed only so the configuration can be shown faithfully.
//!
//! The corepost parameter `corepost_dns_servers` overrides the name servers (tests and benchmarks
//! point it at a server on loopback); its entries are `address`, `address:port`, `[v6]` or
//! `[v6]:port`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

/// glibc's `MAXNS`: later `nameserver` lines are ignored.
pub const MAX_NAMESERVERS: usize = 3;
/// glibc's `RES_TIMEOUT`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// glibc's `RES_MAXRETRANS` cap on `timeout:`.
const MAX_TIMEOUT_SECS: u64 = 30;
/// glibc's `RES_DFLRETRY`.
pub const DEFAULT_ATTEMPTS: u32 = 2;
/// glibc's `RES_MAXRETRY` cap on `attempts:`.
const MAX_ATTEMPTS: u32 = 5;
/// glibc's `RES_MAXNDOTS` cap on `ndots:`.
const MAX_NDOTS: u32 = 15;
/// Where the C library reads its resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The standard DNS port.
pub const DNS_PORT: u16 = 53;

/// What `/etc/resolv.conf` says, as far as mail lookups care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvConf {
    /// Name servers in file order (at most [`MAX_NAMESERVERS`]); never empty.
    pub nameservers: Vec<SocketAddr>,
    /// Per-try timeout (`options timeout:n`).
    pub timeout: Duration,
    /// Rounds over all name servers (`options attempts:n`).
    pub attempts: u32,
    /// `options ndots:n` — parsed, not used (no search list for mail lookups).
    pub ndots: u32,
}

impl Default for ResolvConf {
    fn default() -> Self {
        ResolvConf {
            nameservers: vec![SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), DNS_PORT)],
            timeout: DEFAULT_TIMEOUT,
            attempts: DEFAULT_ATTEMPTS,
            ndots: 1,
        }
    }
}

impl ResolvConf {
    /// Parses resolv.conf text. Never fails: like the C library, unknown lines and malformed
    /// values are skipped; an absent `nameserver` means `127.0.0.1`.
    pub fn parse(text: &str) -> ResolvConf {
        let mut conf = ResolvConf::default();
        let mut servers = Vec::new();
        for line in text.lines() {
            // glibc treats '#' and ';' in the first column as comments; accept them anywhere
            // since neither can appear in a value we read.
            let line = match line.find(['#', ';']) {
                Some(i) => &line[..i],
                None => line,
            };
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => {
                    if let Some(addr) = words.next().and_then(parse_nameserver_ip)
                        && servers.len() < MAX_NAMESERVERS
                    {
                        servers.push(SocketAddr::new(addr, DNS_PORT));
                    }
                }
                Some("options") => {
                    for option in words {
                        conf.apply_option(option);
                    }
                }
                _ => {}
            }
        }
        if !servers.is_empty() {
            conf.nameservers = servers;
        }
        conf
    }

    /// Reads and parses a resolv.conf file; a missing or unreadable file gives the defaults (as
    /// the C library does).
    pub fn load(path: &Path) -> ResolvConf {
        match std::fs::read_to_string(path) {
            Ok(text) => ResolvConf::parse(&text),
            Err(_) => ResolvConf::default(),
        }
    }

    fn apply_option(&mut self, option: &str) {
        let Some((name, value)) = option.split_once(':') else {
            return;
        };
        let Ok(n) = value.parse::<u64>() else {
            return;
        };
        match name {
            // glibc: timeout:0 is taken as 1.
            "timeout" => self.timeout = Duration::from_secs(n.clamp(1, MAX_TIMEOUT_SECS)),
            "attempts" => {
                self.attempts = u32::try_from(n)
                    .unwrap_or(MAX_ATTEMPTS)
                    .clamp(1, MAX_ATTEMPTS)
            }
            "ndots" => self.ndots = u32::try_from(n).unwrap_or(MAX_NDOTS).min(MAX_NDOTS),
            _ => {}
        }
    }
}

/// A `nameserver` value: an IPv4 or IPv6 address. A `%scope` suffix is accepted when numeric;
/// interface names would need `if_nametoindex`, and link-local name servers are not worth it.
fn parse_nameserver_ip(word: &str) -> Option<IpAddr> {
    if let Ok(ip) = word.parse::<IpAddr>() {
        return Some(ip);
    }
    let (addr, scope) = word.split_once('%')?;
    let v6 = addr.parse::<std::net::Ipv6Addr>().ok()?;
    // A numeric scope only matters through SocketAddrV6; the bare address is what we can keep
    // here without one, so accept the address only when the scope is numeric.
    scope.parse::<u32>().ok().map(|_| IpAddr::V6(v6))
}

/// Why an entry of `corepost_dns_servers` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerSyntaxError(pub String);

impl std::fmt::Display for ServerSyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "corepost_dns_servers: bad name server {:?}: expected address, address:port, [v6] or [v6]:port",
            self.0
        )
    }
}

impl std::error::Error for ServerSyntaxError {}

/// Parses one `corepost_dns_servers` entry: `192.0.2.1`, `192.0.2.1:5353`, `2001:db8::1`,
/// `[2001:db8::1]` or `[2001:db8::1]:5353`. Port 0 is refused (nothing listens there).
pub fn parse_server(entry: &str) -> Result<SocketAddr, ServerSyntaxError> {
    let bad = || ServerSyntaxError(entry.to_string());
    let entry = entry.trim();
    let addr = if let Ok(sa) = entry.parse::<SocketAddr>() {
        sa
    } else if let Ok(ip) = entry.parse::<IpAddr>() {
        SocketAddr::new(ip, DNS_PORT)
    } else if let Some(inner) = entry.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        SocketAddr::new(IpAddr::V6(inner.parse().map_err(|_| bad())?), DNS_PORT)
    } else {
        return Err(bad());
    };
    if addr.port() == 0 {
        return Err(bad());
    }
    Ok(addr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn typical_file() {
        let conf = ResolvConf::parse(
            "# generated\nsearch example.com corp.example\nnameserver 10.0.0.2\n\
             nameserver 2001:db8::53\noptions timeout:2 attempts:3 ndots:2 rotate\n",
        );
        assert_eq!(
            conf.nameservers,
            vec![
                "10.0.0.2:53".parse().unwrap(),
                "[2001:db8::53]:53".parse().unwrap()
            ]
        );
        assert_eq!(conf.timeout, Duration::from_secs(2));
        assert_eq!(conf.attempts, 3);
        assert_eq!(conf.ndots, 2);
    }

    #[test]
    fn empty_file_means_localhost_and_glibc_defaults() {
        let conf = ResolvConf::parse("");
        assert_eq!(conf, ResolvConf::default());
        assert_eq!(conf.nameservers, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(conf.timeout, Duration::from_secs(5));
        assert_eq!(conf.attempts, 2);
    }

    #[test]
    fn at_most_three_nameservers_and_bad_ones_skipped() {
        let conf = ResolvConf::parse(
            "nameserver bogus\nnameserver 10.0.0.1\nnameserver 10.0.0.2 ; comment\n\
             nameserver 10.0.0.3\nnameserver 10.0.0.4\n",
        );
        let ips: Vec<String> = conf
            .nameservers
            .iter()
            .map(|s| s.ip().to_string())
            .collect();
        assert_eq!(ips, ["10.0.0.1", "10.0.0.2", "10.0.0.3"]);
    }

    #[test]
    fn options_are_clamped_like_glibc() {
        let conf = ResolvConf::parse("options timeout:0 attempts:99 ndots:400\n");
        assert_eq!(conf.timeout, Duration::from_secs(1));
        assert_eq!(conf.attempts, 5);
        assert_eq!(conf.ndots, 15);
        let conf = ResolvConf::parse("options timeout:99999999999999999999 attempts:x\n");
        assert_eq!(
            conf.timeout, DEFAULT_TIMEOUT,
            "unparsable numbers are ignored"
        );
        assert_eq!(conf.attempts, DEFAULT_ATTEMPTS);
        let conf = ResolvConf::parse("options timeout:45\n");
        assert_eq!(conf.timeout, Duration::from_secs(30));
    }

    #[test]
    fn scoped_ipv6_nameserver() {
        let conf = ResolvConf::parse("nameserver fe80::1%2\nnameserver fe80::2%eth0\n");
        assert_eq!(conf.nameservers, vec!["[fe80::1]:53".parse().unwrap()]);
    }

    #[test]
    fn missing_file_gives_defaults() {
        let conf = ResolvConf::load(Path::new("/nonexistent/corepost/resolv.conf"));
        assert_eq!(conf, ResolvConf::default());
    }

    #[test]
    fn server_entries() {
        assert_eq!(
            parse_server("127.0.0.1"),
            Ok("127.0.0.1:53".parse().unwrap())
        );
        assert_eq!(
            parse_server("127.0.0.1:5353"),
            Ok("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(parse_server("::1"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(parse_server("[::1]"), Ok("[::1]:53".parse().unwrap()));
        assert_eq!(
            parse_server("[::1]:5353"),
            Ok("[::1]:5353".parse().unwrap())
        );
        assert!(parse_server("localhost").is_err());
        assert!(parse_server("127.0.0.1:0").is_err());
        assert!(parse_server("127.0.0.1:99999").is_err());
        assert!(parse_server("[127.0.0.1]").is_err());
        assert!(parse_server("").is_err());
    }

    proptest! {
        #[test]
        fn resolv_conf_parse_never_panics(text in "\\PC*") {
            let conf = ResolvConf::parse(&text);
            prop_assert!(!conf.nameservers.is_empty());
            prop_assert!(conf.nameservers.len() <= MAX_NAMESERVERS);
            prop_assert!(conf.attempts >= 1 && conf.attempts <= MAX_ATTEMPTS);
        }

        #[test]
        fn resolv_conf_lines_never_panic(
            lines in proptest::collection::vec(
                "(nameserver|options|search|domain|#)[ \t]{0,2}[a-z0-9:.%\\[\\] ]{0,30}", 0..8)
        ) {
            let _ = ResolvConf::parse(&lines.join("\n"));
        }

        #[test]
        fn server_parse_never_panics(entry in "\\PC{0,40}") {
            if let Ok(sa) = parse_server(&entry) {
                prop_assert!(sa.port() != 0);
            }
        }

        #[test]
        fn server_round_trip(ip in any::<IpAddr>(), port in 1u16..) {
            let sa = SocketAddr::new(ip, port);
            prop_assert_eq!(parse_server(&sa.to_string()), Ok(sa));
        }
    }
}
