//! The LMTP client end to end, against a real Dovecot LMTP server
//! (Debian's dovecot-lmtpd, installed by .ci/run): mail accepted by smtpd is
//! handed by the queue manager to an `lmtp` master.cf service over a Unix
//! socket or TCP on loopback, and must land in Dovecot's Maildir. Dovecot
//! refuses a user it does not know at RCPT; that recipient bounces while the
//! others are delivered. Several transactions share one LMTP connection.
//!
//! Dovecot runs with its own configuration in a temp dir (base_dir, a
//! passwd-file userdb, `mail_location = maildir:...`). As root its users get
//! the `nobody` uid (Dovecot refuses uid 0); otherwise the test's own uid,
//! with Dovecot's internal and login users and internal group set to the
//! current user's (checked by hand: Dovecot runs fine as `nobody` so).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use support::*;

/// The uid/gid Dovecot's users get: nobody as root, else ourselves.
fn test_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 { (65534, 65534) } else { (uid, gid) }
}

/// A real Dovecot LMTP server in a temporary directory: a Unix socket at
/// `<dir>/lmtp` and a listener on 127.0.0.1:`port`; stopped on drop.
struct Dovecot {
    child: std::process::Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Dovecot {
    /// Users are local parts (`auth_username_format = %Ln`: the domain is
    /// ignored); each gets the Maildir `<dir>/mail/<user>`. `user/1K` gives
    /// the user a storage quota (exceeded: a 552 after DATA for that
    /// recipient only).
    fn start(users: &[&str]) -> Dovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().display().to_string();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mail = dir.path().join("mail");
        std::fs::create_dir(&mail).unwrap();
        // Written by the users' uid.
        std::fs::set_permissions(&mail, std::fs::Permissions::from_mode(0o777)).unwrap();
        let (uid, gid) = test_ids();
        let passwd: String = users
            .iter()
            .map(|u| match u.split_once('/') {
                Some((u, quota)) => format!(
                    "{u}:{{PLAIN}}x:{uid}:{gid}::{p}/mail/{u}::userdb_quota_rule=*:storage={quota}\n"
                ),
                None => format!("{u}:{{PLAIN}}x:{uid}:{gid}::{p}/mail/{u}\n"),
            })
            .collect();
        std::fs::write(dir.path().join("users"), passwd).unwrap();
        // SAFETY: geteuid has no preconditions.
        let unprivileged = if unsafe { libc::geteuid() } != 0 {
            let id = |flag: &str| {
                let out = Command::new("id").arg(flag).output().expect("id");
                String::from_utf8_lossy(&out.stdout).trim().to_string()
            };
            let (me, group) = (id("-un"), id("-gn"));
            format!(
                "default_internal_user = {me}\ndefault_login_user = {me}\ndefault_internal_group = {group}\n"
            )
        } else {
            String::new()
        };
        let port = free_port();
        std::fs::write(
            dir.path().join("dovecot.conf"),
            format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\n\
                 protocols = lmtp\nssl = no\nlisten = 127.0.0.1\nfirst_valid_uid = 1\n\
                 auth_username_format = %Ln\nmail_location = maildir:{p}/mail/%n\n{unprivileged}\
                 mail_plugins = quota\nplugin {{\n  quota = maildir:User quota\n}}\n\
                 passdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\n\
                 userdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\n\
                 service lmtp {{\n  unix_listener {p}/lmtp {{\n    mode = 0666\n  }}\n  \
                 inet_listener lmtp {{\n    address = 127.0.0.1\n    port = {port}\n  }}\n}}\n\
                 service anvil {{\n  chroot =\n}}\n"
            ),
        )
        .expect("dovecot.conf");
        let program = if Path::new("/usr/sbin/dovecot").exists() {
            "/usr/sbin/dovecot"
        } else {
            "dovecot"
        };
        let child = Command::new(program)
            .args(["-F", "-c", &format!("{p}/dovecot.conf")])
            .stdin(Stdio::null())
            .spawn()
            .expect("dovecot (apt-get install dovecot-core dovecot-lmtpd; .ci/run does)");
        let d = Dovecot { child, dir, port };
        let socket = d.socket();
        let up = wait_until(10, || {
            (std::os::unix::net::UnixStream::connect(&socket).is_ok()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok())
            .then_some(())
        });
        assert!(up.is_some(), "dovecot did not start: {}", d.log());
        d
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("lmtp")
    }

    fn maildir(&self, user: &str) -> PathBuf {
        self.dir.path().join("mail").join(user)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dovecot.log")).unwrap_or_default()
    }

    /// LMTP sessions Dovecot had so far, not counting the start-up probes
    /// (closed before saying anything).
    fn connections(&self) -> usize {
        let log = self.log();
        log.matches("Info: Connect from").count()
            - log.matches("Connection closed (state=GREETING)").count()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (dovecot's master stops its children).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// One message over SMTP; returns the queue id.
fn submit(c: &mut Raw, sender: &str, rcpts: &[&str], body: &str) -> String {
    assert!(c.cmd(&format!("MAIL FROM:<{sender}>")).starts_with("250"));
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{r}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("{body}\r\n.\r\n").as_bytes());
    let r = c.reply();
    r.trim()
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {r}"))
        .to_string()
}

fn wait_maildir(dovecot: &Dovecot, user: &str, needle: &str, d: &Daemon) -> String {
    wait_until(15, || {
        maildir_messages(&dovecot.maildir(user))
            .into_iter()
            .find(|m| m.contains(needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "no message with {needle:?} for {user}; corepost log:\n{}\ndovecot log:\n{}",
            d.log(),
            dovecot.log()
        )
    })
}

fn wait_log(d: &Daemon, needle: &str) -> String {
    wait_until(15, || {
        let log = d.log();
        log.contains(needle).then_some(log)
    })
    .unwrap_or_else(|| panic!("log never contained {needle:?}:\n{}", d.log()))
}

/// `virtual_transport = lmtp:unix:/path`: two users delivered into
/// Dovecot's Maildirs in one transaction, an unknown one bounced with
/// Dovecot's 550 to its RCPT, one over quota bounced with its own 552 after
/// DATA; the second message reuses the connection.
#[test]
fn virtual_transport_to_dovecot_over_a_unix_socket() {
    let dovecot = Dovecot::start(&["alice", "small/1K", "bob"]);
    let d = Daemon::start_with_master(
        &format!(
            "corepost_cores = 1\n\
             virtual_mailbox_domains = lmtp.example\n\
             virtual_mailbox_maps = inline:{{ alice@lmtp.example=1, bob@lmtp.example=1, ghost@lmtp.example=1, small@lmtp.example=1 }}\n\
             virtual_transport = lmtp:unix:{}\n\
             lmtp_connection_cache_time_limit = 10s\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            dovecot.socket().display()
        ),
        "lmtp unix - - n - - lmtp\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    let first = submit(
        &mut c,
        "sender@example.org",
        &[
            "alice@lmtp.example",
            "ghost@lmtp.example",
            "small@lmtp.example",
            "bob@lmtp.example",
        ],
        // Dot-stuffed on the wire: the stored line starts with one dot.
        // Larger than small's 1K quota.
        &format!(
            "Subject: lmtp over unix\r\n\r\nfirst body line\r\n..leading dot\r\n{}",
            "filler ".repeat(300)
        ),
    );
    let m = wait_maildir(&dovecot, "alice", "Subject: lmtp over unix", &d);
    assert!(m.contains("first body line\n.leading dot"), "{m}");
    // Dovecot writes the envelope sender it got in MAIL FROM.
    assert!(m.starts_with("Return-Path: <sender@example.org>\n"), "{m}");
    assert!(m.contains("with LMTP"), "{m}");
    wait_maildir(&dovecot, "bob", "Subject: lmtp over unix", &d);
    let socket = dovecot.socket().display().to_string();
    let log = wait_log(&d, &format!("{first}: to=<bob@lmtp.example>"));
    assert!(
        log.contains(&format!(
            "{first}: to=<alice@lmtp.example>, relay=mx.test.example[{socket}]"
        )),
        "{log}"
    );
    assert!(
        log.contains("status=sent (250 2.0.0 <alice@lmtp.example>"),
        "{log}"
    );
    let log = wait_log(&d, &format!("{first}: to=<ghost@lmtp.example>"));
    assert!(
        log.contains(&format!(
            "dsn=5.1.1, status=bounced (host mx.test.example[{socket}] said: 550 5.1.1 <ghost@lmtp.example> User doesn't exist"
        )),
        "{log}"
    );
    assert!(log.contains("(in reply to RCPT TO command)"), "{log}");
    let log = wait_log(&d, &format!("{first}: to=<small@lmtp.example>"));
    assert!(
        log.contains(&format!(
            "dsn=5.2.2, status=bounced (host mx.test.example[{socket}] said: 552 5.2.2 <small@lmtp.example> Quota exceeded (mailbox for user is full) (in reply to end of DATA command))"
        )),
        "{log}"
    );
    assert!(maildir_messages(&dovecot.maildir("small")).is_empty());
    assert!(
        log.contains(&format!("{first}: sender non-delivery notification:")),
        "{log}"
    );

    // The cached connection takes the next message.
    let second = submit(
        &mut c,
        "sender@example.org",
        &["alice@lmtp.example"],
        "Subject: second over unix\r\n\r\nagain",
    );
    c.cmd("QUIT");
    wait_maildir(&dovecot, "alice", "Subject: second over unix", &d);
    wait_log(&d, &format!("{second}: to=<alice@lmtp.example>"));
    assert_eq!(maildir_messages(&dovecot.maildir("alice")).len(), 2);
    assert_eq!(maildir_messages(&dovecot.maildir("bob")).len(), 1);
    assert_eq!(dovecot.connections(), 1, "{}", dovecot.log());
}

/// A custom lmtp service chosen by transport_maps with an `inet:` next hop
/// and one recipient per transaction (`dovecot_destination_recipient_limit
/// = 1`): with one connection allowed, three transactions over it.
#[test]
fn transport_maps_to_dovecot_over_tcp_one_recipient_per_transaction() {
    let dovecot = Dovecot::start(&["carol", "dave", "erin"]);
    let d = Daemon::start_with_master(
        &format!(
            "corepost_cores = 1\n\
             relay_domains = tcp.example\n\
             transport_maps = inline:{{ tcp.example=dovecot:inet:127.0.0.1:{} }}\n\
             dovecot_destination_recipient_limit = 1\n\
             dovecot_destination_concurrency_limit = 1\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            dovecot.port
        ),
        "dovecot unix - - n - - lmtp\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    let id = submit(
        &mut c,
        "sender@example.org",
        &["carol@tcp.example", "dave@tcp.example", "erin@tcp.example"],
        "Subject: lmtp over tcp\r\n\r\nhello",
    );
    c.cmd("QUIT");
    for user in ["carol", "dave", "erin"] {
        let m = wait_maildir(&dovecot, user, "Subject: lmtp over tcp", &d);
        assert!(m.starts_with("Return-Path: <sender@example.org>\n"), "{m}");
        let log = wait_log(&d, &format!("{id}: to=<{user}@tcp.example>"));
        assert!(
            log.contains(&format!(
                "{id}: to=<{user}@tcp.example>, relay=127.0.0.1[127.0.0.1]:{}",
                dovecot.port
            )),
            "{log}"
        );
    }
    let log = d.log();
    assert_eq!(log.matches("status=sent").count(), 3, "{log}");
    assert_eq!(dovecot.connections(), 1, "{}", dovecot.log());
    // One transaction per recipient: Dovecot saw three MAIL FROMs, so
    // three separate sessions ids (no ":R2" suffix of a second recipient).
    let dlog = dovecot.log();
    assert_eq!(dlog.matches("saved mail to INBOX").count(), 3, "{dlog}");
    assert!(!dlog.contains(":R2>"), "{dlog}");
}

/// The local agent hands the user's mailbox to LMTP
/// (`mailbox_transport = lmtp:unix:/path`).
#[test]
fn mailbox_transport_hands_local_users_to_dovecot() {
    let dovecot = Dovecot::start(&["alice"]);
    let (uid, gid) = test_ids();
    let users = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        users.path(),
        format!("alice alice:x:{uid}:{gid}::/nonexistent:/bin/sh\n"),
    )
    .unwrap();
    let d = Daemon::start_with_master(
        &format!(
            "corepost_cores = 1\n\
             corepost_local_user_maps = texthash:{}\n\
             local_recipient_maps = $corepost_local_user_maps\n\
             mailbox_transport = lmtp:unix:{}\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            users.path().display(),
            dovecot.socket().display()
        ),
        "lmtp unix - - n - - lmtp\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    submit(
        &mut c,
        "sender@example.org",
        &["alice@mx.test.example"],
        "Subject: via local\r\n\r\nhello",
    );
    c.cmd("QUIT");
    let m = wait_maildir(&dovecot, "alice", "Subject: via local", &d);
    assert!(m.contains("Delivered-To: alice@mx.test.example"), "{m}");
    let log = wait_log(&d, "relay=mx.test.example[");
    assert!(
        log.contains("status=sent (250 2.0.0 <alice@mx.test.example>"),
        "{log}"
    );
}

/// `mailbox_transport = lmtp:...` after alias expansion: Dovecot gets the
/// final users (`RCPT TO:<auditu1@...>`), not the alias — `al1: auditu1`
/// and `both: auditu1, auditu2` (two recipients) — and corepost's local
/// logs each final recipient with `orig_to=<alias>`, as Postfix does.
/// Likewise `fallback_transport` for an alias naming a user unknown to
/// local (`al2: ghost`, whose mailbox only Dovecot knows).
#[test]
fn mailbox_transport_after_aliases_gets_the_final_users() {
    let dovecot = Dovecot::start(&["auditu1", "auditu2", "ghost"]);
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (uid, gid) = test_ids();
    let users: String = ["auditu1", "auditu2"]
        .iter()
        .map(|u| format!("{u} {u}:x:{uid}:{gid}::{}:/bin/sh\n", root.display()))
        .collect();
    std::fs::write(root.join("users"), users).unwrap();
    std::fs::write(
        root.join("aliases"),
        "al1: auditu1\nboth: auditu1, auditu2\nal2: ghost\n",
    )
    .unwrap();
    let d = Daemon::start_with_master(
        &format!(
            "corepost_cores = 1\n\
             corepost_local_user_maps = texthash:{root}/users\n\
             alias_maps = hash:{root}/aliases\nalias_database = $alias_maps\n\
             local_recipient_maps = $corepost_local_user_maps $alias_maps\n\
             mailbox_transport = lmtp:unix:{socket}\n\
             fallback_transport = lmtp:unix:{socket}\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            root = root.display(),
            socket = dovecot.socket().display()
        ),
        "lmtp unix - - n - - lmtp\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    submit(
        &mut c,
        "sender@example.org",
        &["al1@mx.test.example"],
        "Subject: to the alias\r\n\r\nbody",
    );
    submit(
        &mut c,
        "sender@example.org",
        &["both@mx.test.example"],
        "Subject: to both\r\n\r\nbody",
    );
    submit(
        &mut c,
        "sender@example.org",
        &["al2@mx.test.example"],
        "Subject: to ghost\r\n\r\nbody",
    );
    wait_maildir(&dovecot, "ghost", "Subject: to ghost", &d);
    wait_maildir(&dovecot, "auditu1", "Subject: to the alias", &d);
    wait_maildir(&dovecot, "auditu1", "Subject: to both", &d);
    wait_maildir(&dovecot, "auditu2", "Subject: to both", &d);
    let log = wait_log(&d, "to=<auditu2@mx.test.example>, relay=");
    for expected in [
        "to=<auditu1@mx.test.example>, orig_to=<al1@mx.test.example>, relay=local,",
        "to=<auditu1@mx.test.example>, orig_to=<both@mx.test.example>, relay=local,",
        "to=<auditu2@mx.test.example>, orig_to=<both@mx.test.example>, relay=local,",
        "to=<ghost@mx.test.example>, orig_to=<al2@mx.test.example>, relay=local,",
    ] {
        assert!(log.contains(expected), "{expected:?} missing:\n{log}");
    }
    assert!(
        !log.contains(": to=<al1@") && !log.contains(": to=<both@") && !log.contains(": to=<al2@"),
        "the alias never reaches LMTP:\n{log}"
    );
    // Each copy names its own forwarded message.
    for line in log.lines().filter(|l| l.contains("forwarded as ")) {
        let ids = line.split("forwarded as ").nth(1).unwrap_or("");
        assert!(!ids.contains(", "), "one message per copy: {line}");
    }
    assert!(!log.contains("status=bounced"), "{log}");
    assert!(!dovecot.log().contains("al1"), "{}", dovecot.log());
}
