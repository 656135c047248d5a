//! Content inspection end to end: the after-queue content filter round trip
//! (`content_filter` → a `pipe` service running a spamc-style filter that
//! re-injects into a second smtpd with `-o content_filter=`), and
//! `header_checks` / `body_checks` actions as a user sees them (SMTP
//! replies, what a sink or a mailbox receives, the hold queue, log lines).

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use support::*;

/// The uid/gid the virtual mailboxes are written as: nobody as root.
fn test_ids() -> (u32, u32) {
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 { (65534, 65534) } else { (uid, gid) }
}

fn queued_id(reply: &str) -> String {
    reply
        .strip_prefix("250 2.0.0 Ok: queued as ")
        .unwrap_or_else(|| panic!("not queued: {reply}"))
        .to_string()
}

fn wait_log(d: &Daemon, needle: &str) -> String {
    wait_until(15, || {
        let log = d.log();
        log.contains(needle).then_some(log)
    })
    .unwrap_or_else(|| panic!("log never contained {needle:?}:\n{}", d.log()))
}

/// A stand-in for `spamc -f -e /usr/sbin/sendmail -oi -f SENDER RCPT...`:
/// takes spamc's argument shape, adds an X-Spam-Status header like spamd
/// does, and does what the `-e` sendmail command would do — re-inject —
/// over SMTP to the second smtpd (corepost has no sendmail command yet).
const STANDIN_SPAMC: &str = r#"#!/usr/bin/python3
import smtplib, sys
args = sys.argv[1:]
cmd = args[args.index("-e") + 1:] if "-e" in args else []
sender, rcpts, i = "", [], 1
while i < len(cmd):
    a = cmd[i]
    if a == "-f":
        sender, i = cmd[i + 1], i + 2
        continue
    if a.startswith("-f"):
        sender = a[2:]
    elif not a.startswith("-"):
        rcpts.append(a)
    i += 1
message = sys.stdin.buffer.read()
message = b"X-Spam-Status: No, score=-0.1 required=5.0 tests=STANDIN autolearn=no\n" + message
with smtplib.SMTP("127.0.0.1", @PORT@) as s:
    s.sendmail(sender, rcpts, message)
"#;

/// The spamc-style round trip: every message accepted on the public smtpd
/// goes to the `spamassassin` pipe service (content_filter), which
/// re-injects through 127.0.0.1:<port2> (`-o content_filter=`); the copy in
/// the final mailbox carries the filter's header and arrives exactly once.
#[test]
fn spamc_style_content_filter_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = tmp.path().join("mail");
    std::fs::create_dir(&base).unwrap();
    let (uid, gid) = test_ids();
    std::os::unix::fs::chown(&base, Some(uid), Some(gid)).unwrap();
    let reinject = free_port();
    let filter = tmp.path().join("spamc-standin");
    std::fs::write(
        &filter,
        STANDIN_SPAMC.replace("@PORT@", &reinject.to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&filter, std::fs::Permissions::from_mode(0o755)).unwrap();
    // Checks run once, on the way in: the re-injection service turns them
    // off (Postfix's usual receive_override_options), or this rule would
    // reject the filtered copy.
    let checks = tmp.path().join("header_checks");
    std::fs::write(&checks, "/^X-Spam-Status:/ REJECT already filtered\n").unwrap();
    let d = Daemon::start_with_master(
        &format!(
            "content_filter = spamassassin\n\
             header_checks = regexp:{}\n\
             virtual_mailbox_domains = hosted.example\n\
             virtual_mailbox_maps = inline:{{ info@hosted.example=info/, sales@hosted.example=sales/ }}\n\
             virtual_mailbox_base = {}\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            checks.display(),
            base.display()
        ),
        &format!(
            "127.0.0.1:{reinject} inet n - n - - smtpd\n  -o content_filter=\n  -o receive_override_options=no_header_body_checks\n  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n\
             spamassassin unix - n n - - pipe user=nobody argv={} -f -e /usr/sbin/sendmail -oi -f ${{sender}} ${{recipient}}\n\
             virtual unix - n n - - virtual\n",
            filter.display()
        ),
    );
    let id = queued_id(&end_of_data_reply(
        d.port,
        "s@example.org",
        &["info@hosted.example", "sales@hosted.example"],
        "Subject: filter me\r\nMessage-ID: <rt@example.org>\r\n\r\nhello",
    ));
    for box_ in ["info", "sales"] {
        let maildir = base.join(box_);
        let m = wait_until(15, || {
            maildir_messages(&maildir)
                .into_iter()
                .find(|m| m.contains("Subject: filter me"))
        })
        .unwrap_or_else(|| panic!("nothing in {box_}; log:\n{}", d.log()));
        assert!(
            m.contains("\nX-Spam-Status: No, score=-0.1 required=5.0 tests=STANDIN autolearn=no\n"),
            "{m}"
        );
        assert!(
            m.contains(&format!("Delivered-To: {box_}@hosted.example\n")),
            "{m}"
        );
    }
    // The first hop went through the filter, with both recipients in one
    // invocation; the re-injected copy went to the mailboxes, not back into
    // the filter.
    // The filter's own status line is logged when its command exits, which
    // can come after the re-injected copy was delivered: wait for both.
    wait_log(&d, "to=<sales@hosted.example>, relay=virtual");
    wait_log(
        &d,
        &format!("{id}: to=<info@hosted.example>, relay=spamassassin"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = d.log();
    assert_eq!(log.matches("relay=spamassassin").count(), 2, "{log}");
    assert_eq!(log.matches("relay=virtual").count(), 2, "{log}");
    for box_ in ["info", "sales"] {
        assert_eq!(maildir_messages(&base.join(box_)).len(), 1, "{box_}");
    }
}

/// A stand-in for `/usr/sbin/sendmail -oi -f SENDER RCPT...` (corepost's
/// sendmail command lives on another branch): re-injects stdin over SMTP
/// into the second smtpd.
const SENDMAIL_STANDIN: &str = r#"#!/usr/bin/python3
import smtplib, sys
args, sender, rcpts, i = sys.argv[1:], "", [], 0
while i < len(args):
    a = args[i]
    if a == "-f":
        sender, i = args[i + 1], i + 2
        continue
    if a.startswith("-f"):
        sender = a[2:]
    elif not a.startswith("-"):
        rcpts.append(a)
    i += 1
with smtplib.SMTP("127.0.0.1", @PORT@) as s:
    s.sendmail(sender, rcpts, sys.stdin.buffer.read())
"#;

/// A real spamd on loopback, stopped (SIGTERM, which also ends its
/// children) when dropped.
struct Spamd {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Spamd {
    /// Start spamd with network tests off; None when spamc/spamd are not
    /// installed (`.ci/run` installs them).
    fn start() -> Option<Spamd> {
        if !Path::new("/usr/bin/spamc").exists() || !Path::new("/usr/sbin/spamd").exists() {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for entry in std::fs::read_dir("/etc/spamassassin").ok()?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "pre") {
                std::fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
            }
        }
        std::fs::write(
            dir.path().join("local.cf"),
            "use_bayes 0\nskip_rbl_checks 1\ndns_available no\nuse_razor2 0\nuse_pyzor 0\n",
        )
        .unwrap();
        let port = free_port();
        let mut cmd = std::process::Command::new("/usr/sbin/spamd");
        cmd.args([
            "-i",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-m",
            "1",
            "-x",
            "-L",
        ])
        .arg("--siteconfigpath")
        .arg(dir.path())
        .args([
            "--syslog",
            &dir.path().join("spamd.log").display().to_string(),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        if test_ids().0 == 65534 {
            cmd.args(["-u", "nobody"]);
        }
        let child = cmd.spawn().expect("start spamd");
        let spamd = Spamd {
            child,
            port,
            _dir: dir,
        };
        wait_until(60, || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })
        .expect("spamd did not start listening");
        Some(spamd)
    }
}

impl Drop for Spamd {
    fn drop(&mut self) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// The same round trip with the real SpamAssassin: master.cf runs
/// `/usr/bin/spamc ... -e <sendmail> -oi -f ${sender} ${recipient}` against a
/// spamd on loopback; the mailbox copy carries spamd's headers, once.
#[test]
fn real_spamc_spamd_round_trip() {
    let Some(spamd) = Spamd::start() else {
        eprintln!("skipped: spamc/spamd are not installed (apt-get install spamc spamd)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let base = tmp.path().join("mail");
    std::fs::create_dir(&base).unwrap();
    let (uid, gid) = test_ids();
    std::os::unix::fs::chown(&base, Some(uid), Some(gid)).unwrap();
    let reinject = free_port();
    let sendmail = tmp.path().join("sendmail");
    std::fs::write(
        &sendmail,
        SENDMAIL_STANDIN.replace("@PORT@", &reinject.to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&sendmail, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_with_master(
        &format!(
            "content_filter = spamassassin\n\
             virtual_mailbox_domains = hosted.example\n\
             virtual_mailbox_maps = inline:{{ info@hosted.example=info/ }}\n\
             virtual_mailbox_base = {}\n\
             virtual_uid_maps = static:{uid}\n\
             virtual_gid_maps = static:{gid}\n\
             default_transport = discard\nminimal_backoff_time = 100s\n",
            base.display()
        ),
        &format!(
            "127.0.0.1:{reinject} inet n - n - - smtpd\n  -o content_filter=\n  -o smtpd_recipient_restrictions=permit_mynetworks,reject\n\
             spamassassin unix - n n - - pipe user=nobody argv=/usr/bin/spamc -d 127.0.0.1 -p {} -f -e {} -oi -f ${{sender}} ${{recipient}}\n\
             virtual unix - n n - - virtual\n",
            spamd.port,
            sendmail.display()
        ),
    );
    let id = queued_id(&end_of_data_reply(
        d.port,
        "s@example.org",
        &["info@hosted.example"],
        "From: s@example.org\r\nTo: info@hosted.example\r\nDate: Tue, 24 Nov 2026 12:00:00 +0000\r\nMessage-ID: <real-spamd@example.org>\r\nSubject: real spamd\r\n\r\nHello, this is an ordinary message.\r\n",
    ));
    let maildir = base.join("info");
    let m = wait_until(30, || {
        maildir_messages(&maildir)
            .into_iter()
            .find(|m| m.contains("Subject: real spamd"))
    })
    .unwrap_or_else(|| panic!("nothing delivered; log:\n{}", d.log()));
    assert!(m.contains("\nX-Spam-Checker-Version: SpamAssassin "), "{m}");
    assert!(m.contains("\nX-Spam-Status: No, score="), "{m}");
    // As above: the filter's line can follow the re-injected delivery.
    wait_log(&d, "to=<info@hosted.example>, relay=virtual");
    wait_log(
        &d,
        &format!("{id}: to=<info@hosted.example>, relay=spamassassin"),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(maildir_messages(&maildir).len(), 1);
    assert_eq!(d.log().matches("relay=spamassassin").count(), 1);
}

const HEADER_CHECKS: &str = "# header_checks (regexp:)\n\
/^Subject: .*reject me/        REJECT 5.7.1 no thanks\n\
/^Subject: .*later please/     REJECT 4.7.1 try later\n\
/^Subject: .*discard me/       DISCARD dropped\n\
/^Subject: .*hold me/          HOLD quarantined\n\
/^Subject: .*redirect me/      REDIRECT catcher@remote.example\n\
/^Subject: .*filter me/        FILTER smtp:[127.0.0.1]:@SINK2@\n\
/^Subject: (.*replace me.*)/   REPLACE Subject: [REPLACED] $1\n\
/^X-Secret:/                   IGNORE\n\
/^From:/                       PREPEND X-Prepended: yes\n\
/^X-Mailer: .*warn me/         WARN suspicious mailer\n\
/^Content-(Type|Disposition):.*name=.*\\.exe\"?$/ REJECT 5.7.1 no executables\n";

const BODY_CHECKS: &str = "# body_checks (pcre:)\n\
/^BODY-REJECT/   REJECT\n\
/^body-secret/   IGNORE\n\
/^tag this/      REPLACE [tagged line]\n";

fn message(subject: &str, extra: &str) -> String {
    format!("From: s@example.org\r\nSubject: {subject}\r\n{extra}\r\nbody line\r\n")
}

/// Every header_checks / body_checks action as a user checks it: SMTP
/// replies at end of data, what the next hop receives, the hold queue, and
/// Postfix-format log lines.
#[test]
fn header_and_body_check_actions() {
    let sink = Sink::start();
    let sink2 = Sink::start();
    let tmp = tempfile::tempdir().unwrap();
    let hc = tmp.path().join("header_checks");
    std::fs::write(
        &hc,
        HEADER_CHECKS.replace("@SINK2@", &sink2.port.to_string()),
    )
    .unwrap();
    let bc = tmp.path().join("body_checks");
    std::fs::write(&bc, BODY_CHECKS).unwrap();
    let mut d = Daemon::start(&format!(
        "header_checks = regexp:{}\nbody_checks = pcre:{}\n\
         default_transport = smtp\nrelayhost = [127.0.0.1]:{}\n",
        hc.display(),
        bc.display(),
        sink.port
    ));
    let rcpt = ["r@remote.example"];
    let from = "s@example.org";

    // REJECT: 550 at end of data (a folded Subject is one header), logged
    // as Postfix's cleanup does; a 4.x.x text gives 451.
    let r = end_of_data_reply(d.port, from, &rcpt, &message("please\r\n reject me", ""));
    assert_eq!(r, "550 5.7.1 no thanks");
    let log = wait_log(&d, ": reject: header Subject: please reject me from ");
    assert!(
        log.contains("reject: header Subject: please reject me from unknown[127.0.0.1]; from=<s@example.org> to=<r@remote.example> proto=ESMTP helo=<client.test>: 5.7.1 no thanks"),
        "{log}"
    );
    let r = end_of_data_reply(d.port, from, &rcpt, &message("later please", ""));
    assert_eq!(r, "451 4.7.1 try later");
    let r = end_of_data_reply(
        d.port,
        from,
        &rcpt,
        "Subject: body\r\n\r\nfine\r\nBODY-REJECT here\r\n",
    );
    assert_eq!(r, "550 5.7.1 Message content rejected");
    wait_log(
        &d,
        ": reject: body BODY-REJECT here from unknown[127.0.0.1]; ",
    );

    // A MIME part's folded header (mime_header_checks = $header_checks).
    let r = end_of_data_reply(
        d.port,
        from,
        &rcpt,
        "Subject: files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"xx\"\r\n\r\n--xx\r\nContent-Type: text/plain\r\n\r\nsee attached\r\n--xx\r\nContent-Type: application/octet-stream;\r\n\tname=\"run.exe\"\r\n\r\nTVqQ\r\n--xx--\r\n",
    );
    assert_eq!(r, "550 5.7.1 no executables");

    // DISCARD: accepted, never delivered.
    let r = end_of_data_reply(d.port, from, &rcpt, &message("discard me", ""));
    let discarded = queued_id(&r);
    wait_log(
        &d,
        &format!("{discarded}: discard: header Subject: discard me from "),
    );

    // HOLD: accepted into the hold queue.
    let held = queued_id(&end_of_data_reply(
        d.port,
        from,
        &rcpt,
        &message("hold me", ""),
    ));
    wait_log(&d, &format!("{held}: hold: header Subject: hold me from "));

    // PREPEND / REPLACE / IGNORE (headers and body lines), WARN.
    let edited = queued_id(&end_of_data_reply(
        d.port,
        from,
        &rcpt,
        "From: s@example.org\r\nSubject: please replace me\r\nX-Secret: 42\r\n\tfolded part\r\nX-Mailer: warn me 1.0\r\n\r\nbody-secret line\r\ntag this\r\nkept\r\n",
    ));
    wait_log(
        &d,
        &format!(
            "{edited}: warning: header X-Mailer: warn me 1.0 from unknown[127.0.0.1]; from=<s@example.org> to=<r@remote.example> proto=ESMTP helo=<client.test>: suspicious mailer"
        ),
    );

    // REDIRECT and FILTER.
    let redirected = queued_id(&end_of_data_reply(
        d.port,
        from,
        &rcpt,
        &message("redirect me", ""),
    ));
    let filtered = queued_id(&end_of_data_reply(
        d.port,
        from,
        &["a@remote.example", "b@other.example"],
        &message("filter me", ""),
    ));

    sink.wait_for(2, 15);
    let got2 = sink2.wait_for(1, 15);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got = sink.snapshot();
    assert_eq!(got.messages.len(), 2, "{got:?}\n{}", d.log());
    let text = |m: &(String, Vec<String>, Vec<u8>)| String::from_utf8_lossy(&m.2).into_owned();
    let edited_msg = got
        .messages
        .iter()
        .find(|m| text(m).contains("[REPLACED]"))
        .unwrap_or_else(|| panic!("edited message not delivered: {got:?}"));
    let body = text(edited_msg);
    assert!(
        body.contains("X-Prepended: yes\r\nFrom: s@example.org\r\nSubject: [REPLACED] please replace me\r\nX-Mailer: warn me 1.0\r\n\r\n[tagged line]\r\nkept\r\n"),
        "{body}"
    );
    assert!(
        !body.contains("X-Secret") && !body.contains("folded part"),
        "{body}"
    );
    assert!(!body.contains("body-secret"), "{body}");
    let redirect_msg = got
        .messages
        .iter()
        .find(|m| text(m).contains("Subject: redirect me"))
        .unwrap_or_else(|| panic!("redirected message not delivered: {got:?}"));
    assert_eq!(redirect_msg.1, ["catcher@remote.example"]);
    wait_log(
        &d,
        &format!("{redirected}: redirect: header Subject: redirect me from "),
    );
    // FILTER: every recipient went to the filter's next hop.
    assert_eq!(got2.messages.len(), 1, "{got2:?}");
    let mut to = got2.messages[0].1.clone();
    to.sort();
    assert_eq!(to, ["a@remote.example", "b@other.example"]);
    wait_log(
        &d,
        &format!("{filtered}: filter: header Subject: filter me from "),
    );
    // Neither the discarded nor the held message reached a next hop.
    for m in got.messages.iter().chain(&got2.messages) {
        let t = text(m);
        assert!(!t.contains("discard me") && !t.contains("hold me"), "{t}");
    }
    d.stop();
    let queued = queued_messages(&d.spool_dir());
    let held_entry = queued
        .iter()
        .find(|(id, _, _)| id.to_string() == held)
        .unwrap_or_else(|| panic!("held message not in the queue: {queued:?}"));
    assert!(held_entry.1.held, "not on hold");
    assert!(
        !queued.iter().any(|(id, _, _)| id.to_string() == discarded),
        "discarded message was queued"
    );
}

/// FILTER, HOLD and DISCARD results of smtpd access tables apply to the
/// whole message: FILTER sends every recipient to the filter's next hop,
/// HOLD queues on hold, DISCARD answers 250 and drops it.
#[test]
fn access_table_filter_hold_and_discard() {
    let sink = Sink::start();
    let filter = Sink::start();
    let tmp = tempfile::tempdir().unwrap();
    let access = tmp.path().join("access");
    std::fs::write(
        &access,
        format!(
            "filtered@remote.example FILTER smtp:[127.0.0.1]:{}\nholdme@example.org HOLD\ndropme@example.org DISCARD\n",
            filter.port
        ),
    )
    .unwrap();
    let table = format!("texthash:{}", access.display());
    let mut d = Daemon::start(&format!(
        "smtpd_recipient_restrictions = check_sender_access {table}, check_recipient_access {table}\n\
         default_transport = smtp\nrelayhost = [127.0.0.1]:{}\n",
        sink.port
    ));
    let filtered = queued_id(&end_of_data_reply(
        d.port,
        "s@example.org",
        &["other@remote.example", "filtered@remote.example"],
        "Subject: via filter\r\n\r\nx",
    ));
    let log = wait_log(&d, "filter: RCPT from");
    assert!(
        log.contains(&format!(
            "{filtered}: filter: RCPT from unknown[127.0.0.1]: <filtered@remote.example>: Recipient address triggers FILTER smtp:[127.0.0.1]:{}; from=<s@example.org> to=<filtered@remote.example> proto=ESMTP helo=<client.test>",
            filter.port
        )),
        "{log}"
    );
    let held = queued_id(&end_of_data_reply(
        d.port,
        "holdme@example.org",
        &["r@remote.example"],
        "Subject: held\r\n\r\nx",
    ));
    let dropped = queued_id(&end_of_data_reply(
        d.port,
        "dropme@example.org",
        &["r@remote.example"],
        "Subject: dropped\r\n\r\nx",
    ));
    let plain = end_of_data_reply(
        d.port,
        "s@example.org",
        &["r@remote.example"],
        "Subject: plain\r\n\r\nx",
    );
    queued_id(&plain);
    let got = filter.wait_for(1, 15);
    let mut to = got.messages[0].1.clone();
    to.sort();
    assert_eq!(to, ["filtered@remote.example", "other@remote.example"]);
    sink.wait_for(1, 15);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let got = sink.snapshot();
    assert_eq!(
        got.messages.len(),
        1,
        "only the plain message takes the normal route: {got:?}"
    );
    assert!(String::from_utf8_lossy(&got.messages[0].2).contains("Subject: plain"));
    wait_log(&d, &format!("{dropped}: discard: "));
    d.stop();
    let queued = queued_messages(&d.spool_dir());
    assert!(
        queued
            .iter()
            .any(|(id, env, _)| id.to_string() == held && env.held),
        "held message not on hold: {queued:?}"
    );
    assert!(!queued.iter().any(|(id, _, _)| id.to_string() == dropped));
}
