//! Privilege separation end to end: `corepost run` started as root with
//! `mail_owner = nobody` gives up root, yet local delivery still writes
//! a user's Maildir and an mbox file in a directory only that user may
//! enter (files owned by the user), and a pipe `user=` command runs as
//! that user — through the root delivery helper. `user=root` is refused
//! (deferred), virtual mailboxes are written as the mapped uid, and the
//! helper goes away with the daemon. A killed helper
//! worker is restarted; without the helper, deliveries defer.
//!
//! Needs root (to start the daemon as root and own files as another
//! user); as another user the test prints a note and passes.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use support::*;

/// The system account deliveries act as (`daemon`, uid/gid 1 on Debian).
const UID: u32 = 1;
const GID: u32 = 1;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn private_dir(path: &Path) {
    std::fs::create_dir(path).unwrap();
    std::os::unix::fs::chown(path, Some(UID), Some(GID)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

fn wait_log(d: &Daemon, needle: &str) -> String {
    wait_until(15, || {
        d.log()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("log never contained {needle:?}:\n{}", d.log()))
}

/// The real uid of a running process.
fn proc_uid(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A child of `pid` running as root.
fn root_child(pid: u32) -> Option<u32> {
    wait_until(10, || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| proc_uid(*p) == Some(0))
    })
}

#[test]
fn unprivileged_daemon_delivers_as_the_recipient() {
    if !is_root() {
        eprintln!("note: privsep test skipped: it needs root");
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("carol");
    private_dir(&home);
    private_dir(&root.join("pipeout"));
    std::fs::write(
        root.join("users"),
        format!("carol carol:x:{UID}:{GID}::{}:/bin/sh\n", home.display()),
    )
    .unwrap();
    // Owned by the user: file destinations run as the aliases file's owner.
    let aliases = root.join("aliases");
    std::fs::write(&aliases, format!("tombox: {}/inbox.mbox\n", home.display())).unwrap();
    std::os::unix::fs::chown(&aliases, Some(UID), Some(GID)).unwrap();
    let script = root.join("id.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nid -u > {out}/uid\ncat > {out}/message\n",
            out = root.join("pipeout").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut d = Daemon::start_unprivileged(
        &format!(
            "corepost_local_user_maps = texthash:{r}/users\nalias_maps = texthash:{r}/aliases\nalias_database =\nlocal_recipient_maps = $corepost_local_user_maps $alias_maps\nhome_mailbox = Maildir/\nrelay_domains = pipe.example, rootpipe.example\ntransport_maps = inline:{{ pipe.example=pipeit: rootpipe.example=rootpipe: }}\ndefault_transport = discard\nminimal_backoff_time = 100s\n",
            r = root.display()
        ),
        &format!(
            "pipeit unix - n n - - pipe user=daemon argv={s}\nrootpipe unix - n n - - pipe user=root argv={s}\n",
            s = script.display()
        ),
    );
    // The daemon really gave up root, and a root helper serves it.
    assert_eq!(proc_uid(d.pid()), Some(65534), "daemon runs as nobody");
    let socket = d.spool_dir().join("private/delivery");
    let meta = std::fs::metadata(&socket).expect("helper socket");
    assert_eq!(
        (meta.uid(), meta.mode() & 0o777),
        (65534, 0o600),
        "socket only mail_owner may open"
    );

    submit(
        d.port,
        "s@example.org",
        &["carol@mx.test.example", "tombox@mx.test.example"],
        "Subject: privsep local\r\n\r\nfor carol",
    );
    let line = wait_log(&d, "to=<carol@mx.test.example>");
    assert!(
        line.contains("status=sent (delivered to maildir)"),
        "{line}"
    );
    let new = std::fs::read_dir(home.join("Maildir/new"))
        .unwrap()
        .next()
        .expect("a message in Maildir/new")
        .unwrap()
        .path();
    let meta = std::fs::metadata(&new).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, GID), "{}", new.display());
    assert!(
        std::fs::read_to_string(&new)
            .unwrap()
            .contains("Subject: privsep local")
    );
    let line = wait_log(&d, "to=<tombox@mx.test.example>");
    assert!(line.contains("status=sent (delivered to file"), "{line}");
    let mbox = home.join("inbox.mbox");
    let meta = std::fs::metadata(&mbox).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, GID));
    let text = std::fs::read_to_string(&mbox).unwrap();
    assert!(
        text.starts_with("From s@example.org ") && text.contains("for carol"),
        "{text}"
    );

    // pipe user=daemon runs the command as daemon; user=root is refused.
    submit(
        d.port,
        "s@example.org",
        &["x@pipe.example", "y@rootpipe.example"],
        "Subject: piped\r\n\r\nbody",
    );
    let line = wait_log(&d, "to=<x@pipe.example>");
    assert!(
        line.contains("status=sent (delivered via pipeit service)"),
        "{line}"
    );
    let uid = std::fs::read_to_string(root.join("pipeout/uid")).unwrap();
    assert_eq!(uid.trim(), UID.to_string());
    let line = wait_log(&d, "to=<y@rootpipe.example>");
    assert!(
        line.contains("status=deferred") && line.contains("user= must not be root"),
        "{line}"
    );

    // `corepost reload` reaches the helper: a new argv= is used.
    let master = d.dir.path().join("master.cf");
    let text = std::fs::read_to_string(&master).unwrap();
    std::fs::write(
        &master,
        text.replace(
            &format!("user=daemon argv={}", script.display()),
            &format!(
                "user=daemon argv=/usr/bin/touch {}/after-reload",
                root.join("pipeout").display()
            ),
        ),
    )
    .unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    submit(
        d.port,
        "s@example.org",
        &["z@pipe.example"],
        "Subject: reloaded\r\n\r\nbody",
    );
    let line = wait_log(&d, "to=<z@pipe.example>");
    assert!(line.contains("status=sent"), "{line}");
    let meta = std::fs::metadata(root.join("pipeout/after-reload")).expect("new argv ran");
    assert_eq!(meta.uid(), UID);

    // SIGHUP to the helper also makes its worker re-read the configuration
    // (before its next delivery).
    let reloads = || d.log().matches("reload: configuration re-read").count();
    assert_eq!(reloads(), 1, "{}", d.log());
    let supervisor = root_child(d.pid()).expect("the helper");
    // SAFETY: signalling the helper this test's daemon started.
    unsafe { libc::kill(supervisor as i32, libc::SIGHUP) };
    std::thread::sleep(std::time::Duration::from_millis(200));
    submit(
        d.port,
        "s@example.org",
        &["w@pipe.example"],
        "Subject: hup\r\n\r\nbody",
    );
    let line = wait_log(&d, "to=<w@pipe.example>");
    assert!(line.contains("status=sent"), "{line}");
    assert_eq!(reloads(), 2, "{}", d.log());

    // The helper exits with the daemon (and removes its socket).
    d.stop();
    assert!(
        wait_until(10, || (!socket.exists()).then_some(())).is_some(),
        "the helper outlived the daemon"
    );
    // A normal stop is not a helper failure.
    assert!(!d.log().contains("delivery helper exited"), "{}", d.log());
}

#[test]
fn a_dead_worker_is_restarted_and_a_gone_helper_defers() {
    if !is_root() {
        eprintln!("note: privsep test skipped: it needs root");
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("carol");
    private_dir(&home);
    std::fs::write(
        root.join("users"),
        format!("carol carol:x:{UID}:{GID}::{}:/bin/sh\n", home.display()),
    )
    .unwrap();
    let d = Daemon::start_unprivileged(
        &format!(
            "corepost_local_user_maps = texthash:{r}/users\nlocal_recipient_maps = $corepost_local_user_maps\nhome_mailbox = Maildir/\nminimal_backoff_time = 100s\n",
            r = root.display()
        ),
        "",
    );
    // A killed worker is restarted by the helper's supervisor.
    let supervisor = root_child(d.pid()).expect("the helper: a root child of the daemon");
    let worker = root_child(supervisor).expect("the helper's worker");
    // SAFETY: signalling a process this test's daemon started.
    unsafe { libc::kill(worker as i32, libc::SIGKILL) };
    wait_log(&d, "warning: delivery worker exited");
    submit(
        d.port,
        "s@example.org",
        &["carol@mx.test.example"],
        "Subject: after restart\r\n\r\nbody",
    );
    let line = wait_log(&d, "to=<carol@mx.test.example>");
    assert!(
        line.contains("status=sent (delivered to maildir)"),
        "{line}"
    );
    // SIGTERM (as `timeout` or a process-group kill sends it) does not
    // stop the supervisor: it follows the daemon's lifeline instead.
    let status = |d: &Daemon| stdout(&corepost(&["status", "-c", &d.config_dir()]));
    assert!(
        status(&d).contains("delivery helper: running"),
        "{}",
        status(&d)
    );
    // SAFETY: as above.
    unsafe { libc::kill(supervisor as i32, libc::SIGTERM) };
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(
        root_child(d.pid()),
        Some(supervisor),
        "SIGTERM stopped the helper"
    );
    assert!(
        !d.log().contains("warning: delivery helper exited"),
        "{}",
        d.log()
    );
    // Without the supervisor, deliveries defer and the mail stays queued.
    // SAFETY: as above.
    unsafe { libc::kill(supervisor as i32, libc::SIGKILL) };
    wait_log(&d, "warning: delivery helper exited");
    assert!(
        status(&d).contains("delivery helper: down (signal: 9 (SIGKILL))"),
        "{}",
        status(&d)
    );
    std::fs::remove_dir_all(home.join("Maildir")).unwrap();
    let id = submit(
        d.port,
        "s@example.org",
        &["carol@mx.test.example"],
        "Subject: later\r\n\r\nbody",
    );
    let line = wait_log(&d, &format!("{id}: to=<carol@mx.test.example>"));
    assert!(
        line.contains("dsn=4.3.0, status=deferred (delivery helper is not running)"),
        "{line}"
    );
    // Still queued, nothing written with the wrong owner.
    let listing = stdout(&corepost(&["queue", "list", "-c", &d.config_dir()]));
    assert!(listing.contains(&id), "{listing}");
    assert!(!home.join("Maildir").exists());
}

#[test]
fn unprivileged_daemon_writes_virtual_mailboxes_as_the_mapped_uid() {
    if !is_root() {
        eprintln!("note: privsep test skipped: it needs root");
        return;
    }
    let w = tempfile::tempdir().unwrap();
    std::fs::set_permissions(w.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = w.path().join("vmail");
    private_dir(&base);
    let d = Daemon::start_unprivileged(
        &format!(
            "virtual_mailbox_domains = virt.example\nvirtual_mailbox_maps = inline:{{ v@virt.example=v/, m@virt.example=m.mbox }}\nvirtual_mailbox_base = {}\nvirtual_uid_maps = static:{UID}\nvirtual_gid_maps = static:{GID}\nvirtual_minimum_uid = 1\ndefault_transport = discard\nminimal_backoff_time = 100s\n",
            base.display()
        ),
        "virtual unix - n n - - virtual\n",
    );
    submit(
        d.port,
        "s@example.org",
        &["v@virt.example", "m@virt.example"],
        "Subject: hosted\r\n\r\nx",
    );
    for rcpt in ["v@virt.example", "m@virt.example"] {
        let line = wait_log(&d, &format!("to=<{rcpt}>, relay=virtual"));
        assert!(line.contains("status=sent"), "{line}");
    }
    let new = std::fs::read_dir(base.join("v/new"))
        .unwrap()
        .next()
        .expect("a message in v/new")
        .unwrap()
        .path();
    let meta = std::fs::metadata(&new).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, GID));
    let meta = std::fs::metadata(base.join("m.mbox")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (UID, GID));
}
