//! Listening sockets and privileges: which addresses each smtpd service
//! listens on, binding them once per core with SO_REUSEPORT, and dropping
//! root afterwards.

use crate::log::Log;
use corepost_config::Config;
use corepost_config::host::{address_families, interface_networks};
use corepost_config::mastercf::{Service, ServiceType};
use socket2::{Domain, Protocol, Socket, Type};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::path::Path;

/// An smtpd service of master.cf that listens on the network.
pub fn is_smtpd_inet(s: &Service) -> bool {
    s.kind == ServiceType::Inet && s.command == "smtpd"
}

/// One address to listen on, for the `service`-th smtpd service.
#[derive(Debug, Clone)]
pub struct Planned {
    pub service: usize,
    pub address: SocketAddr,
}

/// A socket bound for one core.
#[derive(Debug)]
pub struct Bound {
    pub service: usize,
    socket: Socket,
}

impl Bound {
    /// Hand the socket to the current glommio executor.
    pub fn into_glommio(self) -> glommio::net::TcpListener {
        let fd = self.socket.into_raw_fd();
        // SAFETY: `fd` is a listening TCP socket we own (just released from
        // `socket2::Socket` without closing it); ownership passes to the
        // glommio listener, which closes it when dropped.
        unsafe { glommio::net::TcpListener::from_raw_fd(fd) }
    }
}

/// Well-known service names for master.cf's first column.
fn port_of(name: &str) -> Option<u16> {
    corepost_config::mastercf::inet_port(name)
}

/// Every (service, address) to listen on.
pub fn plan(config: &Config) -> Result<Vec<Planned>, String> {
    let interfaces = config.get("inet_interfaces").map_err(|e| e.to_string())?;
    let (v4, v6) = address_families(&config.get("inet_protocols").map_err(|e| e.to_string())?);
    let mut out = Vec::new();
    for (index, service) in config
        .master
        .services
        .iter()
        .filter(|s| is_smtpd_inet(s))
        .enumerate()
    {
        let Some((host, port)) = service.listen_address() else {
            continue;
        };
        let port = port_of(port)
            .ok_or_else(|| format!("service {}: unknown port \"{port}\"", service.id()))?;
        let addrs: Vec<IpAddr> =
            match host {
                Some("localhost") => vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
                Some(h) => vec![h.parse().map_err(|_| {
                    format!("service {}: \"{h}\" is not an IP address", service.id())
                })?],
                None => {
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
        for addr in addrs {
            out.push(Planned {
                service: index,
                address: SocketAddr::new(addr, port),
            });
        }
    }
    Ok(out)
}

/// Bind every planned address (one core's set of sockets).
pub fn bind_all(plan: &[Planned]) -> Result<Vec<Bound>, String> {
    let mut out = Vec::new();
    for p in plan {
        match bind(p.address) {
            Ok(socket) => out.push(Bound {
                service: p.service,
                socket,
            }),
            // A host without IPv6 loopback still serves IPv4.
            Err(e) if p.address.is_ipv6() && e.raw_os_error() == Some(libc::EADDRNOTAVAIL) => {}
            Err(e) => return Err(format!("bind {}: {e}", p.address)),
        }
    }
    if out.is_empty() {
        return Err("no listening address could be bound".into());
    }
    Ok(out)
}

fn bind(addr: SocketAddr) -> std::io::Result<Socket> {
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
    let mut owner = config.get("mail_owner").map_err(|e| e.to_string())?;
    let table =
        corepost_config::tables::open_table("unix:passwd.byname").map_err(|e| e.to_string())?;
    let mut entry = table.lookup(&owner).map_err(|e| e.to_string())?;
    if entry.is_none() && config.main.get("mail_owner").is_none() {
        // The built-in default account does not exist on this host (a fresh
        // install): still never keep running as root.
        log.line(
            program,
            &format!("warning: mail_owner {owner}: no such user; running as nobody (create the account or set mail_owner)"),
        );
        owner = "nobody".to_string();
        entry = table.lookup(&owner).map_err(|e| e.to_string())?;
    }
    let entry = entry.ok_or_else(|| {
        format!("mail_owner {owner}: no such user (create the account or set mail_owner)")
    })?;
    let fields: Vec<&str> = entry.split(':').collect();
    let (uid, gid): (u32, u32) = match (
        fields.get(2).and_then(|u| u.parse().ok()),
        fields.get(3).and_then(|g| g.parse().ok()),
    ) {
        (Some(u), Some(g)) => (u, g),
        _ => return Err(format!("mail_owner {owner}: unreadable password entry")),
    };
    if uid == 0 {
        log.line(
            program,
            "warning: mail_owner is root; not dropping privileges",
        );
        return Ok(None);
    }
    Ok(Some((owner, uid, gid)))
}

/// As root: hand the queue directory to `mail_owner` (see [`mail_owner`])
/// and become that user.
pub fn drop_privileges(owner: &(String, u32, u32), queue_dir: &Path) -> Result<(), String> {
    let (owner, uid, gid) = (&owner.0, owner.1, owner.2);
    chown_tree(queue_dir, uid, gid).map_err(|e| format!("chown {}: {e}", queue_dir.display()))?;
    // SAFETY: plain system calls on integer arguments; a null group list
    // with size 0 clears the supplementary groups.
    let ok = unsafe {
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
    Ok(())
}

fn chown_tree(path: &Path, uid: u32, gid: u32) -> std::io::Result<()> {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))?;
    // Maildrop files belong to the users who submitted them (pickup
    // reports their uid); only the directory changes hands.
    if path.is_dir() && path.file_name() != Some(std::ffi::OsStr::new("maildrop")) {
        for entry in std::fs::read_dir(path)? {
            chown_tree(&entry?.path(), uid, gid)?;
        }
    }
    Ok(())
}
