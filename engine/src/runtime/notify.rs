//! The service manager's readiness protocol, sd_notify(3): when
//! `$NOTIFY_SOCKET` names a Unix datagram socket (a path, or `@name` in
//! the abstract namespace), the daemon reports its state there — systemd
//! with `Type=notify`, and `corepost start` waiting for its child.
//!
//! `READY=1` once every core listens; `RELOADING=1` with
//! `MONOTONIC_USEC=` when a reload starts and `READY=1` when it is done;
//! `STOPPING=1` when stopping; `STATUS=` lines say what happens (a failed
//! start says why). Without `$NOTIFY_SOCKET` nothing is sent. Errors are
//! ignored, as in sd_notify: the service manager may be gone.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Send one notification (newline-separated `KEY=value` lines); whether it
/// was sent.
pub fn send(state: &str) -> bool {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Some(addr) = address(&target.to_string_lossy()) else {
        return false;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return false;
    };
    socket.send_to_addr(state.as_bytes(), &addr).is_ok()
}

/// `$NOTIFY_SOCKET` as a socket address: `@name` is abstract.
fn address(target: &str) -> Option<SocketAddr> {
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        return SocketAddr::from_abstract_name(name.as_bytes()).ok();
    }
    if target.starts_with('/') {
        return SocketAddr::from_pathname(target).ok();
    }
    None
}

/// Every core listens.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// A reload starts: systemd's `Type=notify-reload` wants the time, so it
/// can tell this reload from an earlier one.
pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading the configuration",
        monotonic_usec()
    ));
}

/// Stopping: no new connections, the spools are flushed.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping the mail system");
}

/// Any other state worth showing in `systemctl status`.
pub fn status(text: &str) {
    send(&format!("STATUS={}", one_line(text)));
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

/// CLOCK_MONOTONIC in microseconds.
fn monotonic_usec() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the
    // call.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1_000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert!(address("@corepost-test").is_some());
        assert!(address("/run/systemd/notify").is_some());
        assert!(address("relative").is_none());
        assert!(address("").is_none());
    }

    #[test]
    fn clock_moves_forward() {
        let a = monotonic_usec();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(monotonic_usec() > a);
    }
}
