//! The local delivery agent end to end: mail accepted over SMTP for the
//! local domain is delivered by `corepost run` through aliases (every
//! destination form), `.forward`, into Maildir and mbox files checked on
//! disk; loops and unknown users bounce; `corepost aliases` validates.
//!
//! Users come from a test user table (`corepost_local_user_maps`) with
//! temporary home directories; when the tests run as root the users get
//! the `nobody` uid/gid (65534) and deliveries really run as that user.

mod support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use support::*;

/// The uid/gid test users get: nobody as root, else ourselves.
fn test_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 { (65534, 65534) } else { (uid, gid) }
}

fn chown(path: &Path) {
    let (uid, gid) = test_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

/// A temp tree: homes for alice and bob, a user table, a files dir the
/// test user can write, an aliases file.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new(aliases: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        // Traversable by the unprivileged test user.
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let (uid, gid) = test_ids();
        let mut users = String::new();
        for user in ["alice", "bob"] {
            let home = root.join(user);
            std::fs::create_dir(&home).unwrap();
            chown(&home);
            users.push_str(&format!(
                "{user} {user}:x:{uid}:{gid}::{}:/bin/sh\n",
                home.display()
            ));
        }
        std::fs::write(root.join("users"), users).unwrap();
        for d in ["files", "mail"] {
            std::fs::create_dir(root.join(d)).unwrap();
            chown(&root.join(d));
        }
        let aliases = aliases.replace("@ROOT@", &root.display().to_string());
        std::fs::write(root.join("aliases"), aliases).unwrap();
        World { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn main_cf(&self, extra: &str) -> String {
        format!(
            "corepost_local_user_maps = texthash:{root}/users\nalias_maps = hash:{root}/aliases\nalias_database = $alias_maps\nlocal_recipient_maps = $corepost_local_user_maps $alias_maps\nmail_spool_directory = {root}/mail\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\ndefault_transport = discard\n{extra}",
            root = self.dir.path().display()
        )
    }
}

fn wait_file_contains(path: &Path, needle: &str, d: &Daemon) -> String {
    wait_until(15, || {
        std::fs::read_to_string(path)
            .ok()
            .filter(|t| t.contains(needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "{} never contained {needle:?}; log:\n{}",
            path.display(),
            d.log()
        )
    })
}

fn wait_maildir(maildir: &Path, needle: &str, d: &Daemon) -> String {
    wait_until(15, || {
        maildir_messages(maildir)
            .into_iter()
            .find(|m| m.contains(needle))
    })
    .unwrap_or_else(|| {
        panic!(
            "no message with {needle:?} in {}; log:\n{}",
            maildir.display(),
            d.log()
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

const ALIASES: &str = "# test aliases\n\
postmaster: alice\n\
staff: alice,\n  bob\n\
tofile: @ROOT@/files/tofile.mbox\n\
tomaildir: @ROOT@/files/md/\n\
tocmd: \"|cat > @ROOT@/files/cmd.out; echo $RECIPIENT >> @ROOT@/files/cmd.out\"\n\
inc: :include:@ROOT@/list\n\
remote: someone@remote.example\n\
listx: far@remote.example\n\
owner-listx: alice\n\
loop1: loop2\n\
loop2: loop1, alice\n\
self: self, @ROOT@/files/self.copy\n";

#[test]
fn aliases_with_every_destination_form() {
    let sink = Sink::start();
    let w = World::new(ALIASES);
    std::fs::write(
        w.path("list"),
        format!(
            "# members\nbob\n{}/files/inc.mbox\n",
            w.dir.path().display()
        ),
    )
    .unwrap();
    let d = Daemon::start(&w.main_cf(&format!(
        "home_mailbox = Maildir/\ndefault_transport = smtp\nrelayhost = [127.0.0.1]:{}\nallow_mail_to_files = alias, forward, include\n",
        sink.port
    )));
    let alice_md = w.path("alice/Maildir");
    let bob_md = w.path("bob/Maildir");

    submit(
        d.port,
        "s@example.org",
        &["staff@mx.test.example"],
        "Subject: to staff\r\n\r\nhi staff",
    );
    let m = wait_maildir(&alice_md, "Subject: to staff", &d);
    assert!(
        m.starts_with("Return-Path: <s@example.org>\nDelivered-To: staff@mx.test.example\n"),
        "{m}"
    );
    wait_maildir(&bob_md, "Subject: to staff", &d);

    submit(
        d.port,
        "s@example.org",
        &["tofile@mx.test.example"],
        "Subject: to file\r\n\r\nFrom the file test",
    );
    let t = wait_file_contains(&w.path("files/tofile.mbox"), "Subject: to file", &d);
    assert!(t.starts_with("From s@example.org  "), "{t}");
    assert!(t.contains("\n>From the file test\n"), "{t}");
    assert_eq!(
        std::fs::metadata(w.path("files/tofile.mbox"))
            .unwrap()
            .uid(),
        test_ids().0,
        "files named in a root-owned alias file are written as default_privs"
    );

    submit(
        d.port,
        "s@example.org",
        &["tomaildir@mx.test.example"],
        "Subject: to maildir\r\n\r\nx",
    );
    wait_maildir(&w.path("files/md"), "Subject: to maildir", &d);

    submit(
        d.port,
        "s@example.org",
        &["tocmd@mx.test.example"],
        "Subject: to command\r\n\r\nx",
    );
    let out = wait_file_contains(&w.path("files/cmd.out"), "tocmd@mx.test.example", &d);
    assert!(out.starts_with("From s@example.org  "), "{out}");
    assert!(out.contains("Subject: to command"), "{out}");

    submit(
        d.port,
        "s@example.org",
        &["inc@mx.test.example"],
        "Subject: included\r\n\r\nx",
    );
    wait_file_contains(&w.path("files/inc.mbox"), "Subject: included", &d);
    wait_maildir(&bob_md, "Subject: included", &d);

    // Remote destinations are forwarded as a new message; owner-listx
    // becomes the sender of listx's forwarded copy.
    submit(
        d.port,
        "s@example.org",
        &["remote@mx.test.example"],
        "Subject: remote\r\n\r\nx",
    );
    submit(
        d.port,
        "s@example.org",
        &["listx@mx.test.example"],
        "Subject: list\r\n\r\nx",
    );
    let got = sink.wait_for(2, 15);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    let find = |subject: &str| {
        got.messages
            .iter()
            .find(|(_, _, c)| String::from_utf8_lossy(c).contains(subject))
            .cloned()
            .unwrap_or_else(|| panic!("no {subject}"))
    };
    let (from, rcpts, content) = find("Subject: remote");
    assert_eq!(
        (from.as_str(), rcpts),
        ("s@example.org", vec!["someone@remote.example".to_string()])
    );
    assert!(
        String::from_utf8_lossy(&content).starts_with("Delivered-To: remote@mx.test.example\r\n")
    );
    let (from, rcpts, _) = find("Subject: list");
    assert_eq!(
        (from.as_str(), rcpts),
        (
            "owner-listx@mx.test.example",
            vec!["far@remote.example".to_string()]
        )
    );
    let log = wait_log(&d, "status=sent (forwarded as ");
    assert!(
        log.contains("to=<remote@mx.test.example>, relay=local"),
        "{log}"
    );

    // A loop between aliases ends in the mailbox of the looping name's
    // user, or in alice's; an alias naming itself delivers to the user
    // (here: none, so a bounce) and to its file.
    submit(
        d.port,
        "s@example.org",
        &["loop1@mx.test.example"],
        "Subject: loop\r\n\r\nx",
    );
    wait_maildir(&alice_md, "Subject: loop", &d);
    submit(
        d.port,
        "s@example.org",
        &["self@mx.test.example"],
        "Subject: self\r\n\r\nx",
    );
    wait_file_contains(&w.path("files/self.copy"), "Subject: self", &d);
    wait_log(&d, "to=<self@mx.test.example>, relay=local");
}

#[test]
fn forward_file_honoured_only_when_safe() {
    let w = World::new("postmaster: alice\n");
    let d = Daemon::start(&w.main_cf("home_mailbox = Maildir/\n"));
    let fwd = w.path("bob/.forward");
    std::fs::write(
        &fwd,
        format!("{}/files/bobcopy.mbox, \\bob\n", w.dir.path().display()),
    )
    .unwrap();
    chown(&fwd);
    std::fs::set_permissions(&fwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    submit(
        d.port,
        "s@example.org",
        &["bob@mx.test.example"],
        "Subject: forwarded\r\n\r\nx",
    );
    wait_file_contains(&w.path("files/bobcopy.mbox"), "Subject: forwarded", &d);
    wait_maildir(&w.path("bob/Maildir"), "Subject: forwarded", &d);

    // World-writable: ignored, the mail goes to the mailbox only.
    std::fs::set_permissions(&fwd, std::fs::Permissions::from_mode(0o666)).unwrap();
    submit(
        d.port,
        "s@example.org",
        &["bob@mx.test.example"],
        "Subject: unsafe\r\n\r\nx",
    );
    wait_maildir(&w.path("bob/Maildir"), "Subject: unsafe", &d);
    let copy = std::fs::read_to_string(w.path("files/bobcopy.mbox")).unwrap();
    assert!(!copy.contains("Subject: unsafe"), "{copy}");
}

#[test]
fn mbox_delivery_loops_and_unknown_users() {
    let w = World::new("postmaster: alice\n");
    let mut d = Daemon::start(&w.main_cf("local_recipient_maps =\n"));
    submit(
        d.port,
        "s@example.org",
        &["alice@mx.test.example"],
        "Subject: mbox one\r\n\r\nFrom me\r\nline",
    );
    submit(
        d.port,
        "",
        &["alice@mx.test.example"],
        "Subject: mbox two\r\n\r\nx",
    );
    let mbox = w.path("mail/alice");
    wait_file_contains(&mbox, "Subject: mbox two", &d);
    // Both, in whichever order the two deliveries ran.
    let t = wait_file_contains(&mbox, "Subject: mbox one", &d);
    let t = if t.contains("Subject: mbox two") {
        t
    } else {
        wait_file_contains(&mbox, "Subject: mbox two", &d)
    };
    assert!(t.contains("From s@example.org  "), "{t}");
    assert!(t.contains("From MAILER-DAEMON  "), "{t}");
    assert!(t.contains("Delivered-To: alice@mx.test.example\n"), "{t}");
    assert!(t.contains("\n>From me\nline\n\n"), "{t}");
    assert_eq!(std::fs::metadata(&mbox).unwrap().uid(), test_ids().0);
    assert_eq!(std::fs::metadata(&mbox).unwrap().mode() & 0o777, 0o600);
    // The dot-lock goes away once the delivery is complete.
    let listing = || -> Vec<std::ffi::OsString> {
        std::fs::read_dir(w.path("mail"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect()
    };
    assert!(
        wait_until(5, || (listing() == vec![std::ffi::OsString::from("alice")])
            .then_some(()))
        .is_some(),
        "{:?}",
        listing()
    );

    // A message that was already delivered to this recipient is a loop.
    submit(
        d.port,
        "s@example.org",
        &["alice@mx.test.example"],
        "Delivered-To: alice@mx.test.example\r\nSubject: looping\r\n\r\nx",
    );
    wait_log(
        &d,
        "status=bounced (mail forwarding loop for alice@mx.test.example)",
    );
    // Unknown users bounce.
    submit(
        d.port,
        "s@example.org",
        &["carol@mx.test.example"],
        "Subject: who\r\n\r\nx",
    );
    wait_log(&d, "to=<carol@mx.test.example>, relay=local");
    let log = wait_log(&d, "unknown user: \"carol\"");
    assert!(log.contains("dsn=5.1.1, status=bounced"), "{log}");
    d.stop();

    // With luser_relay they go to its address.
    let d = Daemon::start(&w.main_cf("local_recipient_maps =\nluser_relay = alice\n"));
    submit(
        d.port,
        "s@example.org",
        &["dave@mx.test.example"],
        "Subject: for dave\r\n\r\nx",
    );
    wait_file_contains(&mbox, "Subject: for dave", &d);
    drop(d);

    // fallback_transport comes before luser_relay (Postfix's local/unknown.c).
    let d = Daemon::start(&w.main_cf(
        "local_recipient_maps =\nluser_relay = alice\nfallback_transport = discard:fallback took it\n",
    ));
    submit(
        d.port,
        "s@example.org",
        &["erin@mx.test.example"],
        "Subject: for erin\r\n\r\nx",
    );
    let log = wait_log(&d, "status=sent (fallback took it)");
    assert!(log.contains("corepost/discard"), "{log}");
    assert!(
        !std::fs::read_to_string(&mbox)
            .unwrap_or_default()
            .contains("Subject: for erin")
    );
}

#[test]
fn aliases_command_validates_and_queries() {
    let w = World::new(ALIASES);
    let d = w.dir.path().display().to_string();
    std::fs::write(w.path("main.cf"), w.main_cf("")).unwrap();
    let out = corepost(&["aliases", "-c", &d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("aliases: 12 aliases"),
        "{}",
        stdout(&out)
    );
    let out = corepost(&["aliases", "-c", &d, "-q", "STAFF"]);
    assert_eq!(stdout(&out).trim(), "alice,  bob");
    let out = corepost(&["aliases", "-c", &d, "-q", "nosuch"]);
    assert!(!out.status.success());
    std::fs::write(w.path("bad"), "ok: x\nbroken line\n").unwrap();
    let bad = w.path("bad").display().to_string();
    let out = corepost(&["aliases", "-c", &d, &bad]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{bad}, line 2: missing ':'")),
        "{}",
        stderr(&out)
    );
}

/// The virtual agent: two hosted domains with the same local part get
/// separate mailboxes under virtual_mailbox_base, written as the
/// virtual_uid_maps uid; a uid below virtual_minimum_uid defers.
#[test]
fn virtual_mailboxes_for_two_domains() {
    let base = tempfile::tempdir().unwrap();
    chown(base.path());
    let (uid, gid) = test_ids();
    let d = Daemon::start_with_master(
        &format!(
            "virtual_mailbox_domains = d1.example, d2.example\n\
             virtual_mailbox_maps = inline:{{ info@d1.example=d1/info/, info@d2.example=d2/info/, sales@d1.example=d1-sales, low@d2.example=d2/low/ }}\n\
             virtual_mailbox_base = {}\n\
             virtual_uid_maps = inline:{{ low@d2.example=5 }}, static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             virtual_minimum_uid = 100\n\
             recipient_delimiter = +\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            base.path().display()
        ),
        "virtual unix - n n - - virtual\n",
    );
    submit(
        d.port,
        "s@example.org",
        &["info@d1.example"],
        "Subject: for d1\r\n\r\nx",
    );
    submit(
        d.port,
        "s@example.org",
        &["info+tag@d2.example", "sales@d1.example"],
        "Subject: for d2\r\n\r\nx",
    );
    let m = wait_maildir(&base.path().join("d1/info"), "Subject: for d1", &d);
    assert!(m.contains("Delivered-To: info@d1.example\n"), "{m}");
    let m = wait_maildir(&base.path().join("d2/info"), "Subject: for d2", &d);
    assert!(m.contains("Delivered-To: info+tag@d2.example\n"), "{m}");
    assert!(maildir_messages(&base.path().join("d1/info")).len() == 1);
    let mbox = wait_file_contains(&base.path().join("d1-sales"), "Subject: for d2", &d);
    assert!(mbox.starts_with("From s@example.org  "), "{mbox}");
    assert_eq!(
        std::fs::metadata(base.path().join("d1-sales"))
            .unwrap()
            .uid(),
        uid
    );
    let log = wait_log(&d, "to=<info@d1.example>, relay=virtual");
    assert!(log.contains("status=sent (delivered to maildir)"), "{log}");

    submit(
        d.port,
        "s@example.org",
        &["low@d2.example"],
        "Subject: low\r\n\r\nx",
    );
    let log = wait_log(&d, "to=<low@d2.example>, relay=virtual");
    assert!(
        log.contains("dsn=4.3.5, status=deferred (mail system configuration error: uid 5 for low@d2.example is below virtual_minimum_uid 100)"),
        "{log}"
    );
    assert!(!base.path().join("d2/low").exists());
}

/// newaliases while the daemon runs: the new alias applies at once (the
/// command tells the daemon to reload), as after Postfix's newaliases.
#[test]
fn newaliases_applies_to_a_running_daemon() {
    let w = World::new(ALIASES);
    let d = Daemon::start(&w.main_cf("home_mailbox = Maildir/\n"));
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<s@example.org>");
    assert!(
        c.cmd("RCPT TO:<newcomer@mx.test.example>")
            .starts_with("550"),
        "not an alias yet"
    );
    c.cmd("QUIT");
    let mut aliases = std::fs::read_to_string(w.path("aliases")).unwrap();
    aliases.push_str("newcomer: alice\n");
    std::fs::write(w.path("aliases"), aliases).unwrap();
    let out = corepost(&["aliases", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("the running mail system reloads its aliases"),
        "{}",
        stdout(&out)
    );
    let accepted = wait_until(10, || {
        let mut c = Raw::connect(d.port);
        c.cmd("EHLO client.test");
        c.cmd("MAIL FROM:<s@example.org>");
        let reply = c.cmd("RCPT TO:<newcomer@mx.test.example>");
        c.cmd("QUIT");
        reply.starts_with("250").then_some(())
    });
    assert!(accepted.is_some(), "{}", d.log());
    let id = submit(
        d.port,
        "s@example.org",
        &["newcomer@mx.test.example"],
        "Subject: hi\r\n\r\nwelcome",
    );
    let delivered = wait_until(10, || {
        let m = maildir_messages(&w.path("alice/Maildir"));
        (!m.is_empty()).then_some(m)
    });
    assert!(delivered.is_some(), "{id}: {}", d.log());
}

/// Postfix's per-recipient logging of expansion and local(8)'s command
/// environment: every final destination of an alias or `:include:` gets
/// its own line with `orig_to=<alias>`; an `:include:` file target that
/// `allow_mail_to_files` refuses bounces alone while the other member gets
/// its copy; a `.forward` file copy is logged; a `|command` sees
/// ORIGINAL_RECIPIENT and the CLIENT_* variables.
#[test]
fn expansion_is_logged_per_destination_and_commands_get_postfix_environment() {
    let w = World::new(
        "envcmd: \"|env > @ROOT@/files/env.out\"\n\
         inc: :include:@ROOT@/list\n\
         both: alice, bob\n",
    );
    let root = w.dir.path().display().to_string();
    std::fs::write(w.path("list"), format!("bob\n{root}/files/refused.mbox\n")).unwrap();
    let fwd = w.path("alice/.forward");
    std::fs::write(&fwd, format!("{root}/files/alicecopy.mbox, \\alice\n")).unwrap();
    chown(&fwd);
    std::fs::set_permissions(&fwd, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Postfix's default: no files from :include:.
    let d = Daemon::start(&w.main_cf("home_mailbox = Maildir/\n"));
    submit(
        d.port,
        "s@example.org",
        &["envcmd@mx.test.example"],
        "Subject: env\r\n\r\nx",
    );
    let env = wait_file_contains(&w.path("files/env.out"), "ORIGINAL_RECIPIENT=", &d);
    for expected in [
        "ORIGINAL_RECIPIENT=envcmd@mx.test.example\n",
        "RECIPIENT=envcmd@mx.test.example\n",
        "CLIENT_ADDRESS=127.0.0.1\n",
        "CLIENT_HOSTNAME=unknown\n",
        "CLIENT_HELO=client.test\n",
        "CLIENT_PROTOCOL=ESMTP\n",
    ] {
        assert!(env.contains(expected), "{expected:?} missing:\n{env}");
    }
    assert!(!env.contains("SASL_USERNAME="), "not authenticated: {env}");

    let inc = submit(
        d.port,
        "s@example.org",
        &["inc@mx.test.example"],
        "Subject: inc\r\n\r\nx",
    );
    wait_maildir(&w.path("bob/Maildir"), "Subject: inc", &d);
    let log = wait_log(&d, &format!("{inc}: to=<inc@mx.test.example>, relay=local"));
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("{inc}: to=")))
        .collect();
    assert!(
        lines.iter().any(|l| l
            .contains("to=<bob@mx.test.example>, orig_to=<inc@mx.test.example>, relay=local")
            && l.contains("status=sent (delivered to maildir)")),
        "{lines:#?}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("to=<inc@mx.test.example>, relay=local")
                && l.contains(
                    "dsn=5.7.1, status=bounced (mail to file is restricted (include destination))"
                )),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("bob@") && l.contains("bounced")),
        "{lines:#?}"
    );

    let both = submit(
        d.port,
        "s@example.org",
        &["both@mx.test.example"],
        "Subject: both\r\n\r\nx",
    );
    wait_maildir(&w.path("bob/Maildir"), "Subject: both", &d);
    wait_file_contains(&w.path("files/alicecopy.mbox"), "Subject: both", &d);
    let log = wait_log(
        &d,
        &format!("{both}: to=<bob@mx.test.example>, orig_to=<both@mx.test.example>"),
    );
    for expected in [
        format!("{both}: to=<alice@mx.test.example>, orig_to=<both@mx.test.example>, relay=local"),
        format!("{root}/files/alicecopy.mbox)"),
    ] {
        assert!(log.contains(&expected), "{expected:?} missing:\n{log}");
    }
    assert!(
        log.lines().any(|l| l.contains(&format!(
            "{both}: to=<alice@mx.test.example>, orig_to=<both@mx.test.example>"
        )) && l.contains("(delivered to maildir)")),
        "{log}"
    );
}
