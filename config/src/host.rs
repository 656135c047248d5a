//! Facts about the host behind the computed defaults: host name, interface
//! addresses, the invoking user, CPU count, the spool location.
//!
//! Each function has the signature of [`crate::registry::DefaultValue::Computed`]:
//! it receives the expanded effective value of other parameters, so that
//! e.g. `mydomain` follows a `myhostname` set in main.cf, as in Postfix.

use std::net::IpAddr;

/// The system host name, made fully qualified the way Postfix does: a name
/// without a dot gets `.localdomain`.
pub fn myhostname(_get: &dyn Fn(&str) -> String) -> String {
    let name = system_hostname().unwrap_or_else(|| "localhost".to_string());
    if name.contains('.') {
        name
    } else {
        format!("{name}.localdomain")
    }
}

/// `$myhostname` without its first label; `localdomain` when that leaves
/// nothing.
pub fn mydomain(get: &dyn Fn(&str) -> String) -> String {
    let host = get("myhostname");
    match host.split_once('.') {
        Some((_, rest)) if rest.contains('.') || !rest.is_empty() => rest.to_string(),
        _ => "localdomain".to_string(),
    }
}

/// Postfix's default `mynetworks`: built from the addresses that
/// `inet_interfaces` resolves to, as `mynetworks_style` says.
pub fn mynetworks(get: &dyn Fn(&str) -> String) -> String {
    let style = get("mynetworks_style");
    let protocols = get("inet_protocols");
    let interfaces = get("inet_interfaces");
    let (want_v4, want_v6) = address_families(&protocols);
    let mut v4 = Vec::new();
    let mut v6 = Vec::new();
    for (addr, prefix) in interface_networks(&interfaces) {
        let (addr, prefix) = match style.trim().to_ascii_lowercase().as_str() {
            "subnet" => (network_of(addr, prefix), prefix),
            "class" => match addr {
                IpAddr::V4(a) => {
                    let class_prefix = match a.octets()[0] {
                        0..=127 => 8,
                        128..=191 => 16,
                        _ => 24,
                    };
                    (network_of(addr, class_prefix), class_prefix)
                }
                IpAddr::V6(_) => (network_of(addr, prefix), prefix),
            },
            _ => (addr, if addr.is_ipv4() { 32 } else { 128 }),
        };
        match addr {
            IpAddr::V4(a) if want_v4 => v4.push(format!("{a}/{prefix}")),
            IpAddr::V6(a) if want_v6 => v6.push(format!("[{a}]/{prefix}")),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for n in v4.into_iter().chain(v6) {
        if !all.contains(&n) {
            all.push(n);
        }
    }
    all.join(" ")
}

/// Which address families `inet_protocols` enables.
pub fn address_families(protocols: &str) -> (bool, bool) {
    let words: Vec<String> = crate::list::split_list(protocols)
        .unwrap_or_default()
        .into_iter()
        .map(|w| w.to_ascii_lowercase())
        .collect();
    if words.is_empty() || words.iter().any(|w| w == "all") {
        return (true, true);
    }
    (
        words.iter().any(|w| w == "ipv4"),
        words.iter().any(|w| w == "ipv6"),
    )
}

/// The (address, prefix length) pairs `inet_interfaces` stands for:
/// `all` → every interface, `loopback-only` → the loopback addresses,
/// otherwise the listed addresses (with the netmask of the interface that
/// carries them, or a host prefix).
pub fn interface_networks(inet_interfaces: &str) -> Vec<(IpAddr, u8)> {
    let system = system_interfaces();
    let words = crate::list::split_list(inet_interfaces).unwrap_or_default();
    let mut out = Vec::new();
    for word in &words {
        match word.to_ascii_lowercase().as_str() {
            "all" => out.extend(system.iter().copied()),
            "loopback-only" => {
                let lo: Vec<_> = system
                    .iter()
                    .copied()
                    .filter(|(a, _)| a.is_loopback())
                    .collect();
                if lo.is_empty() {
                    out.push(("127.0.0.1".parse().expect("literal"), 8));
                    out.push(("::1".parse().expect("literal"), 128));
                } else {
                    out.extend(lo);
                }
            }
            other => {
                let text = other.trim_start_matches('[').trim_end_matches(']');
                if let Ok(addr) = text.parse::<IpAddr>() {
                    let prefix = system
                        .iter()
                        .find(|(a, _)| *a == addr)
                        .map(|(_, p)| *p)
                        .unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
                    out.push((addr, prefix));
                }
            }
        }
    }
    out
}

fn network_of(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(prefix.min(32)))
                .unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// Every interface address with its prefix length, in the system's order.
pub fn system_interfaces() -> Vec<(IpAddr, u8)> {
    let Ok(interfaces) = if_addrs::get_if_addrs() else {
        return Vec::new();
    };
    interfaces
        .into_iter()
        .map(|iface| match iface.addr {
            if_addrs::IfAddr::V4(v4) => (IpAddr::V4(v4.ip), prefix_len(&v4.netmask.octets())),
            if_addrs::IfAddr::V6(v6) => (IpAddr::V6(v6.ip), prefix_len(&v6.netmask.octets())),
        })
        .collect()
}

fn prefix_len(mask: &[u8]) -> u8 {
    mask.iter().map(|b| b.count_ones() as u8).sum()
}

fn system_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is a valid, writable buffer of `buf.len()` bytes for the
    // duration of the call; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    (!name.is_empty()).then_some(name)
}

/// true when the process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The name of the effective user, from the password database, or its
/// numeric id.
pub fn current_user() -> String {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    user_name_by_uid(uid).unwrap_or_else(|| uid.to_string())
}

/// The login name of `uid` from the password database.
fn user_name_by_uid(uid: libc::uid_t) -> Option<String> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: an all-zero passwd (null pointers, zero ids) is a valid value
    // of this plain C struct; getpwuid_r overwrites it before we read it.
    let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, writable memory of the stated
    // size: `entry`, `buf` (buf.len() bytes) and `result`; getpwuid_r
    // stores strings only inside `buf`.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut entry,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || entry.pw_name.is_null() {
        return None;
    }
    // SAFETY: on success pw_name points to a NUL-terminated string inside
    // `buf`, which outlives this borrow.
    let name = unsafe { std::ffi::CStr::from_ptr(entry.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

/// `/etc/corepost`, unless `$COREPOST_CONFIG_DIR` says otherwise (the
/// loader replaces this with the directory actually read).
pub fn config_directory(_get: &dyn Fn(&str) -> String) -> String {
    std::env::var("COREPOST_CONFIG_DIR").unwrap_or_else(|_| "/etc/corepost".to_string())
}

/// The system spool: the queue directory of every command, whoever runs
/// it, unless main.cf names another.
pub const SYSTEM_QUEUE_DIRECTORY: &str = "/var/spool/corepost";

/// The spool root: [`SYSTEM_QUEUE_DIRECTORY`] for everyone once it exists
/// (`corepost install` or a daemon started as root made it), so a user's
/// `sendmail` always reaches the system daemon's maildrop. Only on a host
/// with no system spool does a user other than root get a personal one
/// (`$XDG_STATE_HOME/corepost`, else `./corepost-spool`), for running
/// `corepost run` from a checkout; `sendmail` never creates a personal
/// spool (see `cli::sendmail`), so it cannot leave mail where no daemon
/// looks.
pub fn queue_directory(_get: &dyn Fn(&str) -> String) -> String {
    if is_root() || std::fs::symlink_metadata(SYSTEM_QUEUE_DIRECTORY).is_ok() {
        return SYSTEM_QUEUE_DIRECTORY.to_string();
    }
    personal_queue_directory()
}

/// Where a user's own daemon spools on a host without a system spool.
pub fn personal_queue_directory() -> String {
    if let Ok(state) = std::env::var("XDG_STATE_HOME")
        && !state.is_empty()
    {
        return format!("{}/corepost", state.trim_end_matches('/'));
    }
    match std::env::current_dir() {
        Ok(dir) => format!("{}/corepost-spool", dir.display()),
        Err(_) => "corepost-spool".to_string(),
    }
}

/// `corepost` when started as root (it drops to that account), else the
/// invoking user.
pub fn mail_owner(_get: &dyn Fn(&str) -> String) -> String {
    if is_root() {
        "corepost".to_string()
    } else {
        current_user()
    }
}

/// One executor per available CPU.
pub fn cores(_get: &dyn Fn(&str) -> String) -> String {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> String {
        move |name: &str| {
            pairs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default()
        }
    }

    #[test]
    fn mydomain_follows_myhostname() {
        assert_eq!(
            mydomain(&with(&[("myhostname", "mx.example.com")])),
            "example.com"
        );
        assert_eq!(mydomain(&with(&[("myhostname", "a.b")])), "b");
        assert_eq!(mydomain(&with(&[("myhostname", "plain")])), "localdomain");
    }

    #[test]
    fn hostname_is_qualified() {
        assert!(myhostname(&with(&[])).contains('.'));
    }

    #[test]
    fn mynetworks_styles() {
        let host = mynetworks(&with(&[
            ("mynetworks_style", "host"),
            ("inet_interfaces", "192.0.2.7, [2001:db8::1]"),
            ("inet_protocols", "all"),
        ]));
        assert_eq!(host, "192.0.2.7/32 [2001:db8::1]/128");
        let class = mynetworks(&with(&[
            ("mynetworks_style", "class"),
            ("inet_interfaces", "192.0.2.7 10.1.2.3"),
            ("inet_protocols", "ipv4"),
        ]));
        assert_eq!(class, "192.0.2.0/24 10.0.0.0/8");
        let lo = mynetworks(&with(&[
            ("mynetworks_style", "host"),
            ("inet_interfaces", "loopback-only"),
            ("inet_protocols", "ipv4"),
        ]));
        assert_eq!(lo, "127.0.0.1/32");
    }

    #[test]
    fn network_masks() {
        assert_eq!(
            network_of("10.1.2.3".parse().unwrap(), 8).to_string(),
            "10.0.0.0"
        );
        assert_eq!(
            network_of("10.1.2.3".parse().unwrap(), 0).to_string(),
            "0.0.0.0"
        );
        assert_eq!(
            network_of("fd00::2".parse().unwrap(), 64).to_string(),
            "fd00::"
        );
    }
}
