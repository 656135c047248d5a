//! The hosts file (`/etc/hosts`) for smtpd's client name lookup.
//!
//! Postfix's smtpd finds the client's name with the system resolver
//! (getnameinfo, then getaddrinfo to confirm it), which with the usual
//! nsswitch.conf `hosts: files dns` reads /etc/hosts before DNS: a client
//! on 127.0.0.1 is `localhost[127.0.0.1]`, not `unknown[127.0.0.1]`.
//! corepost's resolver speaks DNS only, so smtpd consults this table
//! first, as `files` comes first. The file is read when the smtpd settings
//! are built (start and reload), never on a core's hot path; a lookup is a
//! hash probe. `corepost_hosts_file` names it (empty: none), which also
//! lets tests use their own instead of the machine's.
//!
//! As glibc's files backend: the address of a reverse lookup is matched
//! against each line in order and the first line's first name (the
//! canonical name) is the answer; a forward lookup collects the addresses
//! of every line naming the host (canonical name or alias). Names are
//! compared without case and kept in lower case, as DNS answers are.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

/// A parsed hosts file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostsFile {
    names: HashMap<IpAddr, String>,
    addresses: HashMap<String, Vec<IpAddr>>,
}

impl HostsFile {
    /// Read `path`; a file that cannot be read is an empty table (as for
    /// the system resolver, which then just asks DNS).
    pub fn load(path: &Path) -> HostsFile {
        std::fs::read(path)
            .map(|bytes| HostsFile::parse(&String::from_utf8_lossy(&bytes)))
            .unwrap_or_default()
    }

    /// Parse hosts(5) text: `address canonical_name [aliases...]`, `#`
    /// comments; lines with a bad address are skipped, as glibc does.
    pub fn parse(text: &str) -> HostsFile {
        let mut hosts = HostsFile::default();
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or("");
            let mut words = line.split_whitespace();
            let (Some(addr), Some(canonical)) = (words.next(), words.next()) else {
                continue;
            };
            // glibc accepts a scope suffix (fe80::1%eth0); the scope does
            // not matter for a client's name.
            let Ok(addr) = addr.split('%').next().unwrap_or(addr).parse::<IpAddr>() else {
                continue;
            };
            hosts
                .names
                .entry(addr)
                .or_insert_with(|| canonical.to_ascii_lowercase());
            for name in std::iter::once(canonical).chain(words) {
                let list = hosts
                    .addresses
                    .entry(name.to_ascii_lowercase())
                    .or_default();
                if !list.contains(&addr) {
                    list.push(addr);
                }
            }
        }
        hosts
    }

    /// The canonical name of `addr` (a reverse lookup).
    pub fn name_of(&self, addr: IpAddr) -> Option<&str> {
        self.names.get(&canonical(addr)).map(String::as_str)
    }

    /// The addresses of `name` (a forward lookup).
    pub fn addresses_of(&self, name: &str) -> Option<&[IpAddr]> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.addresses.get(&name).map(Vec::as_slice)
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is (a client on a
/// dual-stack socket).
fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_takes_the_first_line_forward_every_line() {
        let hosts = HostsFile::parse(
            "# comment\n127.0.0.1 LocalHost localhost.localdomain # trailing\n127.0.0.1 vm\n\
             ::1 localhost ip6-localhost\nbad-address name\n192.0.2.7\n10.0.0.1 vm\n",
        );
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(hosts.name_of(lo), Some("localhost"));
        assert_eq!(
            hosts.name_of("::ffff:127.0.0.1".parse().unwrap()),
            Some("localhost")
        );
        assert_eq!(hosts.name_of("::1".parse().unwrap()), Some("localhost"));
        assert_eq!(hosts.name_of("192.0.2.7".parse().unwrap()), None);
        assert_eq!(
            hosts.addresses_of("LOCALHOST."),
            Some(&[lo, "::1".parse().unwrap()][..])
        );
        assert_eq!(hosts.addresses_of("localhost.localdomain"), Some(&[lo][..]));
        assert_eq!(
            hosts.addresses_of("vm"),
            Some(&[lo, "10.0.0.1".parse().unwrap()][..])
        );
        assert_eq!(hosts.addresses_of("name"), None);
        assert!(HostsFile::load(Path::new("/nonexistent/hosts")).is_empty());
    }
}
