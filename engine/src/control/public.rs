//! The public control socket: what any local user may ask the daemon.
//!
//! Postfix lets every user run `mailq` and `sendmail -q` by default
//! (`authorized_mailq_users` and `authorized_flush_users` are
//! `static:anyone`); its set-group-id `postqueue` checks the lists and asks
//! the `showq` and `flush` services. corepost has no set-id program, so the
//! daemon itself keeps a second socket, `<corepost_control_socket>.public`
//! (mode 0666), that answers only `list`, `list json` and `flush [domain]`.
//! It learns who is asking from the kernel (SO_PEERCRED), never from the
//! request, and applies Postfix's rule: root and `mail_owner` (the account
//! the daemon runs as) always may; anyone else's login name ("unknown"
//! when the uid has none) must match the list. The lists are read from
//! main.cf at each request, as `postqueue` reads main.cf at each run. The
//! owner-only socket stays the only way to hold, delete, requeue, show a
//! message's content, reload or stop.

use corepost_config::users::user_in_list;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

/// The public socket beside the owner-only one.
pub fn socket_path(control: &Path) -> PathBuf {
    let mut name = control.as_os_str().to_os_string();
    name.push(".public");
    PathBuf::from(name)
}

/// What a public request may do, and the list that says who may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Mailq,
    Flush,
}

impl Access {
    /// The access a request needs; `None`: not served on the public socket.
    pub fn of(request: &str) -> Option<Access> {
        let words: Vec<&str> = request.split_whitespace().collect();
        match words.as_slice() {
            ["list"] | ["list", "json"] => Some(Access::Mailq),
            ["flush"] | ["flush", _] => Some(Access::Flush),
            _ => None,
        }
    }

    pub fn parameter(self) -> &'static str {
        match self {
            Access::Mailq => "authorized_mailq_users",
            Access::Flush => "authorized_flush_users",
        }
    }

    /// Postfix's postqueue message when the list refuses.
    fn refusal(self, name: &str, uid: u32) -> String {
        let what = match self {
            Access::Mailq => "view the mail queue",
            Access::Flush => "flush the mail queue",
        };
        format!("User {name}({uid}) is not allowed to {what}")
    }
}

/// Whether the peer with `uid` may make a request needing `access`,
/// with the lists of the configuration in `config_dir`.
pub fn authorize(access: Access, uid: u32, config_dir: &Path) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if uid == 0 || uid == unsafe { libc::geteuid() } {
        return Ok(());
    }
    let config = corepost_config::Config::load(config_dir).map_err(|e| e.to_string())?;
    let list = config.get(access.parameter()).map_err(|e| e.to_string())?;
    let name = corepost_config::users::list_name(uid);
    match user_in_list(&list, &name) {
        Ok(true) => Ok(()),
        Ok(false) => Err(access.refusal(&name, uid)),
        Err(e) => Err(format!("{}: {e}", access.parameter())),
    }
}

/// The uid of the process at the other end.
pub fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: cred and len are valid for writing and len says cred's size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(cred.uid)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_served_publicly() {
        assert_eq!(Access::of("list"), Some(Access::Mailq));
        assert_eq!(Access::of("list json"), Some(Access::Mailq));
        assert_eq!(Access::of("flush"), Some(Access::Flush));
        assert_eq!(Access::of("flush example.com"), Some(Access::Flush));
        for owner_only in [
            "show 1",
            "hold ALL",
            "delete ALL",
            "requeue ALL",
            "reload",
            "status",
            "shape",
            "list x y",
        ] {
            assert_eq!(Access::of(owner_only), None, "{owner_only}");
        }
        assert_eq!(
            socket_path(Path::new("/var/spool/corepost/control")),
            PathBuf::from("/var/spool/corepost/control.public")
        );
    }

    #[test]
    fn user_lists_as_postfix_matches_them() {
        assert!(user_in_list("static:anyone", "alice").unwrap());
        assert!(user_in_list("alice, bob", "bob").unwrap());
        assert!(!user_in_list("alice, bob", "carol").unwrap());
        assert!(!user_in_list("", "alice").unwrap());
        assert!(!user_in_list("!alice, static:anyone", "alice").unwrap());
        assert!(user_in_list("!alice, static:anyone", "bob").unwrap());
        assert!(user_in_list("inline:{ carol=1 }", "carol").unwrap());
        assert!(!user_in_list("inline:{ carol=1 }", "dave").unwrap());
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users");
        std::fs::write(&file, "erin\nfrank\n").unwrap();
        assert!(user_in_list(&file.display().to_string(), "frank").unwrap());
        assert_eq!(
            Access::Mailq.refusal("nobody", 65534),
            "User nobody(65534) is not allowed to view the mail queue"
        );
    }

    #[test]
    fn root_and_the_daemon_account_always_may() {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        let nowhere = Path::new("/nonexistent/config");
        assert!(authorize(Access::Mailq, 0, nowhere).is_ok());
        assert!(authorize(Access::Flush, me, nowhere).is_ok());
    }
}
