//! Listening sockets and privileges: which addresses each smtpd service
//! listens on, claiming each address for this daemon, binding it once per
//! core with SO_REUSEPORT, and dropping root afterwards.
//!
//! SO_REUSEPORT alone would let a second daemon (another configuration and
//! queue) bind the same address and silently take half of its connections.
//! So before binding, a daemon [`claim`]s each address: it binds an
//! abstract Unix socket named after the address (released by the kernel
//! when the process dies, even by SIGKILL, so a restart never finds a
//! stale lock), then probes the address with a bind *without*
//! SO_REUSEPORT, which fails while any other process listens there
//! (Postfix, or anything else). Either failure is Postfix's "bind
//! 127.0.0.1 port 25: Address already in use".

use crate::log::Log;
use corepost_config::Config;
use corepost_config::host::{address_families, interface_networks};
use corepost_config::mastercf::{Service, ServiceType};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

/// An smtpd service of master.cf that listens on the network.
pub fn is_smtpd_inet(s: &Service) -> bool {
    s.kind == ServiceType::Inet && s.command == "smtpd"
}

/// One address to listen on, for the smtpd service with this master.cf
/// id (`name/inet`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Planned {
    pub service: String,
    pub address: SocketAddr,
}

/// A socket bound for one core.
#[derive(Debug)]
pub struct Bound {
    pub planned: Planned,
    socket: Socket,
}

/// This daemon's hold on one listening address (see the module doc); other
/// corepost daemons cannot claim it while this value lives.
#[derive(Debug)]
pub struct Claim {
    _lock: std::os::unix::net::UnixDatagram,
}

/// Postfix's wording: `bind 127.0.0.1 port 25: Address already in use`.
fn bind_error(addr: SocketAddr, e: &std::io::Error) -> String {
    let text = e.to_string();
    // "Address already in use (os error 98)" -> "Address already in use"
    let text = text.split(" (os error").next().unwrap_or(&text);
    format!("bind {} port {}: {text}", addr.ip(), addr.port())
}

/// Claim `addr` for this daemon: `Ok(None)` when the address does not exist
/// on this host (IPv6 loopback on a host without IPv6), which is skipped.
pub fn claim(addr: SocketAddr) -> Result<Option<Claim>, String> {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("corepost/listen/{addr}");
    let lock_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .map_err(|e| format!("{name}: {e}"))?;
    let lock = std::os::unix::net::UnixDatagram::bind_addr(&lock_addr).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            // Another corepost daemon serves this address.
            bind_error(addr, &e)
        } else {
            format!("{name}: {e}")
        }
    })?;
    match probe(addr) {
        Ok(()) => Ok(Some(Claim { _lock: lock })),
        Err(e) if addr.is_ipv6() && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => Ok(None),
        Err(e) => Err(bind_error(addr, &e)),
    }
}

/// Bind (and release) `addr` without SO_REUSEPORT: fails while another
/// process listens there.
fn probe(addr: SocketAddr) -> std::io::Result<()> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

impl Bound {
    /// Hand the socket to the current glommio executor.
    pub fn into_acceptor(self) -> super::acceptor::Acceptor {
        super::acceptor::Acceptor::new(self.socket, self.planned.address)
    }
}

/// Well-known service names for master.cf's first column.
fn port_of(name: &str) -> Option<u16> {
    corepost_config::mastercf::inet_port(name)
}

/// The addresses one smtpd inet service listens on.
fn service_addresses(config: &Config, service: &Service) -> Result<Vec<SocketAddr>, String> {
    let Some((host, port)) = service.listen_address() else {
        return Ok(Vec::new());
    };
    let port = port_of(port)
        .ok_or_else(|| format!("service {}: unknown port \"{port}\"", service.id()))?;
    let addrs: Vec<IpAddr> = match host {
        Some("localhost") => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        Some(h) => vec![
            h.parse()
                .map_err(|_| format!("service {}: \"{h}\" is not an IP address", service.id()))?,
        ],
        None => {
            let interfaces = config.get("inet_interfaces").map_err(|e| e.to_string())?;
            let (v4, v6) =
                address_families(&config.get("inet_protocols").map_err(|e| e.to_string())?);
            let words = corepost_config::list::split_list(&interfaces).unwrap_or_default();
            if words.iter().any(|w| w.eq_ignore_ascii_case("all")) {
                let mut a = Vec::new();
                if v4 {
                    a.push(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
                }
                if v6 {
                    a.push(IpAddr::V6(Ipv6Addr::UNSPECIFIED));
                }
                a
            } else {
                interface_networks(&interfaces)
                    .into_iter()
                    .map(|(a, _)| a)
                    .filter(|a| (a.is_ipv4() && v4) || (a.is_ipv6() && v6))
                    .collect()
            }
        }
    };
    Ok(addrs
        .into_iter()
        .map(|a| SocketAddr::new(a, port))
        .collect())
}

/// Whether a service listens beyond loopback (Postfix's master enables
/// stress mode and its process-limit warning only then).
pub fn is_public(config: &Config, service: &Service) -> bool {
    service_addresses(config, service)
        .map(|a| a.iter().any(|a| !a.ip().is_loopback()))
        .unwrap_or(false)
}

/// The service's listen address as Postfix's master names it: the port,
/// or `[host]:port`.
pub fn postfix_name(service: &Service) -> String {
    match service.listen_address() {
        Some((Some(host), port)) => {
            format!(
                "[{host}]:{}",
                port_of(port).map_or(port.to_string(), |p| p.to_string())
            )
        }
        Some((None, port)) => port_of(port).map_or(port.to_string(), |p| p.to_string()),
        None => service.name.clone(),
    }
}

/// Every (service, address) to listen on.
pub fn plan(config: &Config) -> Result<Vec<Planned>, String> {
    let mut out: Vec<Planned> = Vec::new();
    for service in config.master.services.iter().filter(|s| is_smtpd_inet(s)) {
        for address in service_addresses(config, service)? {
            if let Some(other) = out.iter().find(|p| p.address == address) {
                // Postfix's master would fail to bind the second one.
                return Err(format!(
                    "services {} and {} both listen on {address}",
                    other.service,
                    service.id()
                ));
            }
            out.push(Planned {
                service: service.id(),
                address,
            });
        }
    }
    Ok(out)
}

/// Bind the claimed addresses once for one core.
pub fn bind_all(plan: &[Planned]) -> Result<Vec<Bound>, String> {
    plan.iter()
        .map(|p| {
            bind(p.address)
                .map(|socket| Bound {
                    planned: p.clone(),
                    socket,
                })
                .map_err(|e| bind_error(p.address, &e))
        })
        .collect()
}

pub(super) fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
    let domain = if addr.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let socket = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    // Set once here rather than on every connection: accepted sockets
    // inherit them (the acceptor's test checks it). Non-blocking, so the
    // acceptor's accept4 returns at once when nothing is queued;
    // TCP_NODELAY, so replies are not held back by Nagle's algorithm;
    // SO_KEEPALIVE, as Postfix sets on every inet client connection.
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    socket.set_keepalive(true)?;
    Ok(socket)
}

/// The account the daemon runs as: `mail_owner`'s name, uid and gid, when
/// the daemon runs as root and must give root up (None when it does not
/// run as root, or mail_owner is root).
pub fn mail_owner(
    config: &Config,
    log: &Log,
    program: &str,
) -> Result<Option<(String, u32, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let (owner, warning) = mail_owner_account(config)?;
    if let Some(w) = warning {
        log.line(program, &w);
    }
    if owner.1 == 0 {
        log.line(
            program,
            "warning: mail_owner is root; not dropping privileges",
        );
        return Ok(None);
    }
    Ok(Some(owner))
}

/// An account's name, uid and gid.
pub type Account = (String, u32, u32);

/// `mail_owner`'s name, uid and gid from the password database, whoever
/// asks: the built-in `corepost` falls back to `nobody` when the account
/// does not exist (with the warning to log). Also what `sendmail` run as
/// root gives a maildrop it creates, so the daemon can read it; `corepost
/// passwd` and `corepost check` use it to judge who must read which file.
pub fn mail_owner_account(config: &Config) -> Result<(Account, Option<String>), String> {
    let mut owner = config.get("mail_owner").map_err(|e| e.to_string())?;
    let table =
        corepost_config::tables::open_table("unix:passwd.byname").map_err(|e| e.to_string())?;
    let mut entry = table.lookup(&owner).map_err(|e| e.to_string())?;
    let mut warning = None;
    if entry.is_none() && config.main.get("mail_owner").is_none() {
        // The built-in default account does not exist on this host (a fresh
        // install): still never keep running as root.
        warning = Some(format!(
            "warning: mail_owner {owner}: no such user; running as nobody (create the account or set mail_owner)"
        ));
        owner = "nobody".to_string();
        entry = table.lookup(&owner).map_err(|e| e.to_string())?;
    }
    let entry = entry.ok_or_else(|| {
        format!("mail_owner {owner}: no such user (create the account or set mail_owner)")
    })?;
    let fields: Vec<&str> = entry.split(':').collect();
    match (
        fields.get(2).and_then(|u| u.parse().ok()),
        fields.get(3).and_then(|g| g.parse().ok()),
    ) {
        (Some(uid), Some(gid)) => Ok(((owner, uid, gid), warning)),
        _ => Err(format!("mail_owner {owner}: unreadable password entry")),
    }
}

/// As root: hand the queue directory to `mail_owner` (see [`mail_owner`])
/// and become that user.
pub fn drop_privileges(owner: &(String, u32, u32), queue_dir: &Path) -> Result<(), String> {
    let (owner, uid, gid) = (&owner.0, owner.1, owner.2);
    chown_tree(queue_dir, uid, gid).map_err(|e| format!("chown {}: {e}", queue_dir.display()))?;
    // SAFETY: plain system calls on integer arguments; a null group list
    // with size 0 clears the supplementary groups.
    let ok = unsafe {
        libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0);
        libc::setgroups(0, std::ptr::null()) == 0
            && libc::setgid(gid) == 0
            && libc::setuid(uid) == 0
    };
    if !ok {
        return Err(format!(
            "cannot become mail_owner {owner}: {}",
            std::io::Error::last_os_error()
        ));
    }
    keep_bind_service_capability();
    Ok(())
}

/// After setuid, keep only CAP_NET_BIND_SERVICE, so a reload can still
/// open a listener on a port below 1024 (Postfix's master keeps root for
/// that). Without it such a reload fails with "Permission denied" and
/// keeps the running configuration; nothing else depends on it.
fn keep_bind_service_capability() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    const CAP_NET_BIND_SERVICE: u32 = 10;
    let header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let bit = 1u32 << CAP_NET_BIND_SERVICE;
    let data = [
        Data {
            effective: bit,
            permitted: bit,
            inheritable: 0,
        },
        Data {
            effective: 0,
            permitted: 0,
            inheritable: 0,
        },
    ];
    // SAFETY: capset reads a version-3 header and two data structs, which
    // live for the duration of the call; prctl takes integer arguments.
    unsafe {
        libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr());
        libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0);
    }
}

/// A queue directory created before the daemon first ran (by `corepost
/// install` or root's `sendmail`): owned by `mail_owner` as the daemon
/// leaves it, the maildrop 3733 again (a chown clears the set-group-id bit
/// on some file systems).
pub fn hand_queue_directory(queue_dir: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    chown_tree(queue_dir, uid, gid)?;
    crate::pickup::maildrop::prepare(queue_dir)
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    if !path.is_dir() {
        return Ok(());
    }
    if path.file_name() == Some(std::ffi::OsStr::new("maildrop")) {
        return crate::pickup::maildrop::adopt_files(path, gid);
    }
    for entry in std::fs::read_dir(path)? {
        chown_tree(&entry?.path(), uid, gid)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(master: &str) -> Config {
        Config::from_parts(
            Path::new("/nonexistent"),
            Some("inet_interfaces = 192.0.2.1\ninet_protocols = ipv4\n"),
            Some(master),
        )
        .unwrap()
    }

    #[test]
    fn plan_names_and_public_services() {
        let c = config(
            "smtp inet n - n - - smtpd\n127.0.0.1:2525 inet n - n - 2 smtpd\nrelay unix - - n - - smtp\n",
        );
        let plan = plan(&c).unwrap();
        let addrs: Vec<String> = plan.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addrs, ["192.0.2.1:25", "127.0.0.1:2525"]);
        assert_eq!(plan[0].service, "smtp/inet");
        let services = &c.master.services;
        assert_eq!(postfix_name(&services[0]), "25");
        assert_eq!(postfix_name(&services[1]), "[127.0.0.1]:2525");
        assert!(is_public(&c, &services[0]));
        assert!(!is_public(&c, &services[1]));
    }

    #[test]
    fn two_services_on_one_address_are_refused() {
        let c =
            config("127.0.0.1:2525 inet n - n - - smtpd\n[127.0.0.1]:2525 inet n - n - - smtpd\n");
        assert_eq!(
            plan(&c).unwrap_err(),
            "services 127.0.0.1:2525/inet and [127.0.0.1]:2525/inet both listen on 127.0.0.1:2525"
        );
    }

    #[test]
    fn bind_errors_read_like_postfix() {
        let e = std::io::Error::from_raw_os_error(libc::EADDRINUSE);
        assert_eq!(
            bind_error("127.0.0.1:2600".parse().unwrap(), &e),
            "bind 127.0.0.1 port 2600: Address already in use"
        );
    }
}
