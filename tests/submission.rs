//! Local submission end to end: the `sendmail` command (the binary invoked
//! through a link by that name) writes into the maildrop, the daemon's
//! pickup service queues it, and the queue manager relays it to a sink.

mod support;

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use support::*;

const PICKUP: &str = "pickup unix n - n 60 1 pickup\n";

fn daemon(sink_port: u16, extra: &str) -> Daemon {
    Daemon::start_with_master_lines(
        &format!(
            "relayhost = [127.0.0.1]:{sink_port}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{extra}"
        ),
        PICKUP,
    )
}

/// A `sendmail` link to the corepost binary inside the daemon's directory.
fn sendmail_link(d: &Daemon) -> std::path::PathBuf {
    let link = d.dir.path().join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    }
    link
}

/// Run `sendmail -C <config> args...` with `input` on stdin, as `uid`
/// (None: as ourselves).
fn sendmail_as(d: &Daemon, uid: Option<(u32, u32)>, args: &[&str], input: &str) -> Output {
    let mut cmd = Command::new(sendmail_link(d));
    cmd.arg("-C")
        .arg(d.config_dir())
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some((u, g)) = uid {
        cmd.uid(u).gid(g);
    }
    let mut child = cmd.spawn().expect("start sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("sendmail")
}

fn sendmail(d: &Daemon, args: &[&str], input: &str) -> Output {
    sendmail_as(d, None, args, input)
}

fn text(content: &[u8]) -> String {
    String::from_utf8_lossy(content).into_owned()
}

fn maildrop_files(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.spool_dir().join("maildrop"))
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sendmail_t_delivers_to_every_header_recipient_and_strips_bcc() {
    let sink = Sink::start();
    let d = daemon(sink.port, "");
    let out = sendmail(
        &d,
        &["-t", "-f", "sender@example.org", "-F", "Sam Sender"],
        "To: a@remote.example, \"Bee, B\" <b@remote.example>\nCc: c@remote.example\nBcc: d@remote.example\nSubject: header recipients\n\nbody line\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let (from, mut rcpts, content) = got.messages[0].clone();
    rcpts.sort();
    assert_eq!(from, "sender@example.org");
    assert_eq!(
        rcpts,
        vec![
            "a@remote.example",
            "b@remote.example",
            "c@remote.example",
            "d@remote.example"
        ]
    );
    let t = text(&content);
    assert!(!t.to_ascii_lowercase().contains("bcc"), "Bcc removed: {t}");
    assert!(
        !t.contains("d@remote.example"),
        "Bcc address not in the content: {t}"
    );
    assert!(
        t.starts_with("Received: by mx.test.example (corepost, from userid 0)\r\n\tid "),
        "{t}"
    );
    assert!(
        t.contains("\r\nFrom: Sam Sender <sender@example.org>\r\n"),
        "{t}"
    );
    assert!(t.contains("\r\nDate: "), "{t}");
    assert!(t.contains("\r\nMessage-Id: <"), "{t}");
    assert!(t.contains("Subject: header recipients\r\n"), "{t}");
    assert!(t.ends_with("\r\n\r\nbody line\r\n"), "{t}");
    let log = d.log();
    assert!(log.contains("uid=0 from=<sender@example.org>"), "{log}");
    assert!(log.contains("nrcpt=4 (queue active)"), "{log}");
    assert!(
        maildrop_files(&d).is_empty(),
        "the file is removed once queued"
    );
}

/// Postfix restarts pickup and cleanup on `postfix reload`, so local
/// submissions follow main.cf's new settings at once; so does corepost's
/// pickup loop. Removing the pickup service leaves the maildrop waiting.
#[test]
fn a_reload_applies_to_local_submissions() {
    let sink = Sink::start();
    let d = daemon(sink.port, "");
    let submit = |n: usize| {
        let out = sendmail(
            &d,
            &["-f", "s@example.org", "r@remote.example"],
            "Subject: x\n\nbody\n",
        );
        assert!(out.status.success(), "{}", stderr(&out));
        sink.wait_for(n, 20)
    };
    let first = text(&submit(1).messages[0].2);
    assert!(
        first.starts_with("Received: by mx.test.example "),
        "{first}"
    );
    let main_cf = d.dir.path().join("main.cf");
    let main = std::fs::read_to_string(&main_cf).unwrap();
    std::fs::write(&main_cf, format!("{main}myhostname = reloaded.example\n")).unwrap();
    let reload = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    let got = submit(2);
    let second = text(&got.messages[1].2);
    assert!(
        second.starts_with("Received: by reloaded.example "),
        "{second}"
    );
    let master_cf = d.dir.path().join("master.cf");
    let with_pickup = std::fs::read_to_string(&master_cf).unwrap();
    std::fs::write(&master_cf, with_pickup.replace(PICKUP, "")).unwrap();
    let reload = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    let status = stdout(&corepost(&["status", "-c", &d.config_dir()]));
    assert!(status.contains("pickup: off"), "{status}");
    let out = sendmail(
        &d,
        &["-f", "s@example.org", "r@remote.example"],
        "Subject: y\n\nbody\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(maildrop_files(&d).len(), 1, "left in the maildrop");
    assert_eq!(sink.snapshot().messages.len(), 2);
    // The service back: the reload wakes pickup (which waited without a
    // timer) and the waiting file goes.
    std::fs::write(&master_cf, with_pickup).unwrap();
    let reload = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert_eq!(sink.wait_for(3, 20).messages.len(), 3);
    assert!(maildrop_files(&d).is_empty());
}

#[test]
fn a_lone_dot_ends_input_unless_oi() {
    let sink = Sink::start();
    let d = daemon(sink.port, "");
    let input = "Subject: SUBJ\n\nbefore\n.\nafter\n";
    let out = sendmail(
        &d,
        &["-f", "s@example.org", "x@remote.example"],
        &input.replace("SUBJ", "dot-ends"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sendmail(
        &d,
        &["-oi", "-f", "s@example.org", "x@remote.example"],
        &input.replace("SUBJ", "oi"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = sink.wait_for(2, 20);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    let find = |subject: &str| {
        got.messages
            .iter()
            .map(|m| text(&m.2))
            .find(|t| t.contains(&format!("Subject: {subject}\r\n")))
            .expect("message")
    };
    let plain = find("dot-ends");
    assert!(plain.ends_with("\r\n\r\nbefore\r\n"), "{plain}");
    assert!(!plain.contains("after"), "{plain}");
    let oi = find("oi");
    assert!(oi.ends_with("\r\n\r\nbefore\r\n.\r\nafter\r\n"), "{oi}");
}

#[test]
fn submission_while_stopped_is_delivered_after_start() {
    let sink = Sink::start();
    let mut d = daemon(sink.port, "");
    d.stop();
    let out = sendmail(
        &d,
        &["-f", "alice", "bob@remote.example"],
        "Subject: offline\n\nqueued while down\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(maildrop_files(&d).len(), 1, "waiting in the maildrop");
    assert_eq!(sink.snapshot().messages.len(), 0);
    d.spawn();
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(
        got.messages[0].0, "alice@mx.test.example",
        "qualified with myorigin"
    );
    assert_eq!(got.messages[0].1, vec!["bob@remote.example".to_string()]);
    assert!(text(&got.messages[0].2).contains("queued while down"));
}

/// `authorized_submit_users` as Postfix: sendmail refuses a user not on
/// the list (root included) with Postfix's text and exit 75, and pickup
/// sets aside a maildrop file whose owner the list refuses (one written
/// before the list changed, or without sendmail) instead of queueing it.
#[test]
fn authorized_submit_users_is_enforced_by_sendmail_and_pickup() {
    let sink = Sink::start();
    let mut d = daemon(sink.port, "");
    d.stop();
    let out = sendmail(&d, &["r@remote.example"], "Subject: before\n\nx\n");
    assert!(out.status.success(), "{}", stderr(&out));
    let main_cf = d.dir.path().join("main.cf");
    let main = std::fs::read_to_string(&main_cf).unwrap();
    std::fs::write(
        &main_cf,
        format!("{main}authorized_submit_users = !root, static:anyone\n"),
    )
    .unwrap();
    let out = sendmail(&d, &["r@remote.example"], "Subject: refused\n\nx\n");
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        stderr(&out),
        "sendmail: fatal: User root(0) is not allowed to submit mail\n"
    );
    let out = sendmail(&d, &["-bs"], "QUIT\n");
    assert_eq!(out.status.code(), Some(75), "{}", stdout(&out));
    assert_eq!(maildrop_files(&d).len(), 1, "only the earlier submission");
    d.spawn();
    let log = wait_until(20, || {
        let log = d.log();
        log.contains("refused submission").then_some(log)
    })
    .expect("pickup refused the file");
    assert!(
        log.contains("refused submission: User root(0) is not allowed to submit mail; moved to "),
        "{log}"
    );
    assert!(maildrop_files(&d).is_empty());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sink.snapshot().messages.len(), 0);
}

/// `local_login_sender_maps` as Postfix 3.7's sendmail applies it (texts
/// and exit code captured from it): a sender the user's entry does not
/// list is refused before anything is written; pickup refuses a file whose
/// sender the owner may no longer use.
#[test]
fn local_login_sender_maps_limits_the_envelope_senders_of_local_users() {
    let sink = Sink::start();
    let mut d = daemon(
        sink.port,
        "local_login_sender_maps = inline:{ {root=alice@example.org,@example.net} }\n",
    );
    let out = sendmail(
        &d,
        &["-f", "bob@example.org", "r@remote.example"],
        "Subject: a\n\nx\n",
    );
    assert_eq!(out.status.code(), Some(75));
    assert_eq!(
        stderr(&out),
        "sendmail: fatal: bob@example.org(0): not authorized to use sender='bob@example.org'\n"
    );
    let out = sendmail(&d, &["r@remote.example"], "Subject: a\n\nx\n");
    assert_eq!(
        out.status.code(),
        Some(75),
        "root's own address is not listed"
    );
    for allowed in ["alice@example.org", "Carol@EXAMPLE.net"] {
        let out = sendmail(
            &d,
            &["-f", allowed, "r@remote.example"],
            "Subject: b\n\nx\n",
        );
        assert!(out.status.success(), "{allowed}: {}", stderr(&out));
    }
    let got = sink.wait_for(2, 20);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    d.stop();
    let out = sendmail(
        &d,
        &["-f", "dave@example.net", "r@remote.example"],
        "Subject: c\n\nx\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let main_cf = d.dir.path().join("main.cf");
    let main = std::fs::read_to_string(&main_cf)
        .unwrap()
        .replace(",@example.net", "");
    std::fs::write(&main_cf, main).unwrap();
    d.spawn();
    let log = wait_until(20, || {
        let log = d.log();
        log.contains("refused submission").then_some(log)
    })
    .expect("pickup refused the file");
    assert!(
        log.contains("refused submission: dave@example.net(0): not authorized to use sender='dave@example.net'; moved to "),
        "{log}"
    );
    assert_eq!(sink.snapshot().messages.len(), 2);
}

#[test]
fn a_garbage_maildrop_file_is_set_aside_and_logged() {
    let sink = Sink::start();
    let d = daemon(sink.port, "");
    let name = "00000000000000000000000000garbage";
    std::fs::write(
        d.spool_dir().join("maildrop").join(name),
        b"this is not a submission\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline && !maildrop_files(&d).is_empty() {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(maildrop_files(&d).is_empty());
    let kept = d.spool_dir().join("corrupt").join(name);
    assert_eq!(
        std::fs::read(&kept).expect("kept in corrupt/"),
        b"this is not a submission\n"
    );
    let log = d.log();
    assert!(
        log.contains(&format!(
            "warning: maildrop/{name}: malformed submission: not a corepost maildrop file; moved to"
        )),
        "{log}"
    );
    // The service goes on: a good submission after it is delivered.
    let out = sendmail(
        &d,
        &["-f", "s@example.org", "x@remote.example"],
        "Subject: fine\n\nok\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(sink.wait_for(1, 20).messages.len(), 1, "{}", d.log());
}

#[test]
fn usage_errors_use_sysexits() {
    let sink = Sink::start();
    let d = daemon(sink.port, "");
    let out = sendmail(&d, &[], "Subject: x\n\nno recipients\n");
    assert_eq!(out.status.code(), Some(64), "EX_USAGE");
    assert!(
        stderr(&out).contains("sendmail: fatal: Recipient addresses must be specified"),
        "{}",
        stderr(&out)
    );
    let out = sendmail(&d, &["-t"], "Subject: x\n\nno header recipients\n");
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("No recipient addresses found in message header"));
    let out = sendmail(&d, &["-Z", "x@y"], "");
    assert_eq!(out.status.code(), Some(64));
    let out = sendmail(
        &d,
        &[
            "-oem",
            "-odb",
            "-U",
            "-f",
            "s@example.org",
            "x@remote.example",
        ],
        "Subject: legacy\n\nok\n",
    );
    assert!(
        out.status.success(),
        "legacy options ignored: {}",
        stderr(&out)
    );
    assert_eq!(sink.wait_for(1, 20).messages.len(), 1);
    // Also as `corepost sendmail`.
    let mut child = Command::new(corepost_bin())
        .args([
            "sendmail",
            "-C",
            &d.config_dir(),
            "-f",
            "s@example.org",
            "y@remote.example",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: sub\n\nvia subcommand\n")
        .unwrap();
    assert!(child.wait().unwrap().success());
    assert_eq!(sink.wait_for(2, 20).messages.len(), 2);
}

/// Permissions: the daemon runs as an unprivileged mail_owner (`daemon`);
/// another unprivileged user (`nobody`) can submit, but can neither list
/// the maildrop, read a waiting submission, read the spool, nor use the
/// control socket.
#[test]
fn an_unprivileged_user_can_submit_and_list_but_cannot_read_the_queue() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to switch users");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sink = Sink::start();
    let mut d = daemon(sink.port, "mail_owner = daemon\n");
    // Let other users reach the (temporary) configuration and queue.
    std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let nobody = Some((65534, 65534));
    d.stop();
    let out = sendmail_as(
        &d,
        nobody,
        &["r@remote.example"],
        "Subject: from nobody\n\nhello\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let files = maildrop_files(&d);
    assert_eq!(files.len(), 1);
    // As nobody: no listing of the maildrop, no reading of the file (even
    // by name), no reading of the spool.
    let probe = |script: &str| {
        Command::new("sh")
            .args(["-c", script])
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let maildrop = d.spool_dir().join("maildrop");
    assert!(
        !probe(&format!("ls {}", maildrop.display()))
            .status
            .success()
    );
    // Another user than the author cannot read it (bin, uid 2).
    let other = Command::new("cat")
        .arg(maildrop.join(&files[0]))
        .uid(2)
        .gid(2)
        .output()
        .unwrap();
    assert!(!other.status.success(), "another user read a submission");
    d.spawn();
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(got.messages[0].0, "nobody@mx.test.example");
    assert!(text(&got.messages[0].2).contains("(corepost, from userid 65534)"));
    let core = d.spool_dir().join("core-0");
    assert!(
        !probe(&format!("ls {}", core.display())).status.success(),
        "spool readable"
    );
    // Listing goes through the daemon's public socket (Postfix's default
    // authorized_mailq_users = static:anyone); steering the queue does not.
    let as_nobody = |args: &[&str]| {
        Command::new(corepost_bin())
            .args(["queue", "-c", &d.config_dir()])
            .args(args)
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    };
    let list = as_nobody(&["list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let hold = as_nobody(&["hold", "ALL"]);
    assert!(!hold.status.success(), "nobody ran hold: {}", stdout(&hold));
    let socket = d.spool_dir().join("control");
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn sendmail_bs_speaks_smtp_on_stdin_and_stdout() {
    let sink = Sink::start();
    let d = daemon(sink.port, "");
    let out = sendmail(
        &d,
        &["-bs"],
        "EHLO me\r\nMAIL FROM:<bs@example.org>\r\nRCPT TO:<one@remote.example>\r\nRCPT TO:<two@remote.example>\r\nDATA\r\nSubject: bs\r\n\r\n..dotted\r\n.\r\nQUIT\r\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let replies = stdout(&out);
    assert!(
        replies.starts_with("220 mx.test.example ESMTP corepost\r\n"),
        "{replies}"
    );
    assert!(replies.contains("354 "), "{replies}");
    assert!(replies.contains("250 2.0.0 Ok: queued\r\n"), "{replies}");
    assert!(replies.ends_with("221 2.0.0 Bye\r\n"), "{replies}");
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(got.messages[0].0, "bs@example.org");
    assert_eq!(got.messages[0].1.len(), 2);
    assert!(text(&got.messages[0].2).ends_with("\r\n\r\n.dotted\r\n"));
}
