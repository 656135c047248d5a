//! Network lists (`mynetworks`, `smtpd_client_event_limit_exceptions`,
//! `smtpd_forbid_bare_newline_exclusions`): addresses and CIDR blocks in
//! Postfix's syntax (`127.0.0.0/8`, `[::1]/128`, `192.0.2.7`), `!`
//! negation, `type:table` lookups of the client address, `/file` includes.

use corepost_config::list::match_list_elements;
use corepost_config::tables::TableList;
use std::net::IpAddr;

#[derive(Debug, Clone)]
enum Pattern {
    Net { addr: IpAddr, prefix: u8 },
    Table(TableList),
}

/// A parsed network list; the first matching element decides.
#[derive(Debug, Clone, Default)]
pub struct NetworkList {
    elements: Vec<(bool, Pattern)>,
}

impl NetworkList {
    pub fn parse(value: &str) -> Result<NetworkList, String> {
        let mut list = NetworkList::default();
        for e in match_list_elements(value)? {
            let word = e.pattern;
            let pattern = match parse_net(&word) {
                Some((addr, prefix)) => Pattern::Net { addr, prefix },
                None if word.contains(':')
                    && !word.contains('[')
                    && word.parse::<IpAddr>().is_err() =>
                {
                    Pattern::Table(TableList::open(&word).map_err(|e| e.to_string())?)
                }
                None => return Err(format!("bad network \"{word}\"")),
            };
            list.elements.push((e.negated, pattern));
        }
        Ok(list)
    }

    /// Whether `addr` is in the list. A table lookup failure counts as no
    /// match (and is the caller's to log).
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        for (negated, p) in &self.elements {
            let hit = match p {
                Pattern::Net { addr: net, prefix } => in_network(addr, *net, *prefix),
                Pattern::Table(t) => t.lookup(&addr.to_string()).ok().flatten().is_some(),
            };
            if hit {
                return !negated;
            }
        }
        false
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
pub fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

fn parse_net(word: &str) -> Option<(IpAddr, u8)> {
    let (addr, prefix) = match word.split_once('/') {
        Some((a, p)) => (a, Some(p.parse::<u8>().ok()?)),
        None => (word, None),
    };
    let addr = addr.trim_start_matches('[').trim_end_matches(']');
    let addr: IpAddr = addr.parse().ok()?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = prefix.unwrap_or(max);
    if prefix > max {
        return None;
    }
    Some((
        canonical(addr),
        if addr.is_ipv6() && canonical(addr).is_ipv4() {
            prefix.saturating_sub(96)
        } else {
            prefix
        },
    ))
}

fn in_network(addr: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (addr, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn matching() {
        let l = NetworkList::parse("!127.0.0.2, 127.0.0.0/8 [::1]/128, 192.0.2.7, [2001:db8::]/32")
            .unwrap();
        assert!(l.contains(ip("127.1.2.3")));
        assert!(!l.contains(ip("127.0.0.2")));
        assert!(l.contains(ip("::1")));
        assert!(l.contains(ip("::ffff:127.0.0.1")));
        assert!(l.contains(ip("192.0.2.7")));
        assert!(!l.contains(ip("192.0.2.8")));
        assert!(l.contains(ip("2001:db8:1::5")));
        assert!(!l.contains(ip("2001:db9::5")));
        assert!(NetworkList::parse("10.0.0.0/33").is_err());
        assert!(NetworkList::parse("not-a-network").is_err());
        let t = NetworkList::parse("inline:{ 198.51.100.1=ok }").unwrap();
        assert!(t.contains(ip("198.51.100.1")));
        assert!(!NetworkList::parse("").unwrap().contains(ip("127.0.0.1")));
    }
}
