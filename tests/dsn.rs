//! Delivery status notifications end to end, checked as Postfix 3.7 sends
//! them: every notice corepost queues for `sender@example.org` is relayed
//! to a test sink, and parsed there as an RFC 3464 report by Python's
//! `email` package (the status and action of each recipient asserted).

mod support;

use std::os::unix::fs::PermissionsExt;
use support::*;

/// A daemon relaying everything non-local to `sink`, with local users
/// `u1` (an mbox in a temporary spool) and the aliases `list` (a remote
/// address) and `both` (u1 and a remote address).
fn daemon(sink: &Sink, extra: &str) -> (Daemon, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::create_dir(root.join("mail")).unwrap();
    std::fs::set_permissions(root.join("mail"), std::fs::Permissions::from_mode(0o1777)).unwrap();
    // SAFETY: geteuid/getegid have no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    let (uid, gid) = if uid == 0 { (65534, 65534) } else { (uid, gid) };
    std::fs::write(
        root.join("users"),
        format!("u1 u1:x:{uid}:{gid}::{}:/bin/sh\n", root.display()),
    )
    .unwrap();
    std::fs::write(
        root.join("transport"),
        "blocked.example error:5.7.1 no mail for you here\n",
    )
    .unwrap();
    let extra = extra.replace("@ROOT@", &root.display().to_string());
    std::fs::write(
        root.join("aliases"),
        "list: fwd@remote.example\nboth: u1, copy@remote.example\n",
    )
    .unwrap();
    let d = Daemon::start(&format!(
        "corepost_cores = 1\nrelayhost = [127.0.0.1]:{port}\n\
         corepost_local_user_maps = texthash:{root}/users\n\
         alias_maps = hash:{root}/aliases\nalias_database = $alias_maps\n\
         local_recipient_maps = $corepost_local_user_maps $alias_maps\n\
         mail_spool_directory = {root}/mail\n\
         minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{extra}",
        port = sink.port,
        root = root.display()
    ));
    (d, dir)
}

/// Send one message; the RCPT replies.
fn send(d: &Daemon, mail: &str, rcpts: &[&str], body: &str) -> Vec<String> {
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.example");
    assert!(c.cmd(&format!("MAIL FROM:{mail}")).starts_with("250"));
    let replies: Vec<String> = rcpts
        .iter()
        .map(|r| c.cmd(&format!("RCPT TO:{r}")))
        .collect();
    if replies.iter().any(|r| r.starts_with("250")) {
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(format!("{body}\r\n.\r\n").as_bytes());
        let r = c.reply();
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT");
    replies
}

/// The notices the sink got (MAIL FROM:<>), parsed as RFC 3464 reports:
/// one line per recipient, `subject|final-recipient|action|status|diagnostic`,
/// then the text part's lines prefixed with `text:`.
fn notices(sink: &Sink, want: usize, d: &Daemon) -> Vec<String> {
    let got = wait_until(20, || {
        let n: Vec<Vec<u8>> = sink
            .snapshot()
            .messages
            .into_iter()
            .filter(|(from, _, _)| from.is_empty())
            .map(|(_, _, content)| content)
            .collect();
        (n.len() >= want).then_some(n)
    })
    .unwrap_or_else(|| panic!("fewer than {want} notices; log:\n{}", d.log()));
    let dir = tempfile::tempdir().unwrap();
    for (i, n) in got.iter().enumerate() {
        std::fs::write(dir.path().join(format!("{i}.eml")), n).unwrap();
    }
    let (ok, out) = python(&format!(
        r#"
import email, email.policy, glob
for path in sorted(glob.glob('{dir}/*.eml')):
    m = email.message_from_bytes(open(path, 'rb').read(), policy=email.policy.compat32)
    assert m.get_content_type() == 'multipart/report', m.get_content_type()
    assert m.get_param('report-type') == 'delivery-status'
    parts = m.get_payload()
    assert parts[1].get_content_type() == 'message/delivery-status'
    blocks = parts[1].get_payload()
    for rcpt in blocks[1:]:
        print('|'.join([m['Subject'], rcpt['Final-Recipient'], rcpt['Action'], rcpt['Status'], str(rcpt['Diagnostic-Code'])]))
    for line in parts[0].get_payload().splitlines():
        print('text:' + line)
"#,
        dir = dir.path().display()
    ));
    assert!(ok, "{out}");
    out.lines().map(str::to_string).collect()
}

/// NOTIFY=SUCCESS: "Successful Mail Delivery Report" with Action relayed
/// for the SMTP next hop that does not announce DSN, delivered for the
/// local mailbox, expanded for an alias that forwards.
#[test]
fn success_notices_say_relayed_delivered_or_expanded() {
    let sink = Sink::start();
    let (d, _dir) = daemon(&sink, "");
    let replies = send(
        &d,
        "<sender@example.org> RET=HDRS",
        &[
            "<rem@remote.example> NOTIFY=SUCCESS",
            "<u1@mx.test.example> NOTIFY=SUCCESS,FAILURE",
            "<list@mx.test.example> NOTIFY=SUCCESS",
            "<quiet@remote.example>",
        ],
        "Subject: success please\r\n\r\nbody",
    );
    assert!(replies.iter().all(|r| r.starts_with("250")), "{replies:?}");
    // One notice per delivery: the SMTP one, and one per local recipient
    // (local_destination_recipient_limit = 1).
    let lines = notices(&sink, 3, &d);
    let subject = "Successful Mail Delivery Report";
    for expected in [
        format!("{subject}|rfc822; rem@remote.example|relayed|2.0.0|smtp; 250 2.0.0 queued"),
        format!("{subject}|rfc822; u1@mx.test.example|delivered|2.0.0|"),
        format!("{subject}|rfc822; list@mx.test.example|expanded|2.0.0|"),
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(&expected)),
            "{expected:?} missing in {lines:#?}\n{}",
            d.log()
        );
    }
    // Postfix's text for a relayed recipient names the next hop.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("text:<rem@remote.example>: delivery via 127.0.0.1[127.0.0.1]:")),
        "{lines:#?}"
    );
    assert!(!lines.iter().any(|l| l.contains("quiet@")), "{lines:#?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("Your message was successfully delivered")),
        "{lines:#?}"
    );
    // The forwarded copy and the relayed one reached the sink too.
    let got = sink.snapshot();
    assert!(
        got.messages
            .iter()
            .any(|(_, r, _)| r == &["fwd@remote.example"])
    );
    let log = d.log();
    assert!(
        log.contains("sender delivery status notification: "),
        "{log}"
    );
}

/// Expired mail keeps its last 4.x.x status with Action: failed; the
/// diagnostic names the host once; `error:5.7.1 text` bounces with 5.7.1.
#[test]
fn expired_and_error_transport_statuses() {
    let sink = Sink::start();
    let (d, _dir) = daemon(
        &sink,
        "maximal_queue_lifetime = 0\n\
         transport_maps = texthash:@ROOT@/transport\n",
    );
    send(
        &d,
        "<sender@example.org>",
        &["<tempfail@remote.example>"],
        "Subject: will expire\r\n\r\nbody",
    );
    send(
        &d,
        "<sender@example.org>",
        &["<x@blocked.example>"],
        "Subject: blocked\r\n\r\nbody",
    );
    let lines = notices(&sink, 2, &d);
    let subject = "Undelivered Mail Returned to Sender";
    for expected in [
        format!(
            "{subject}|rfc822; tempfail@remote.example|failed|4.2.0|smtp; 450 4.2.0 try again later"
        ),
        format!(
            "{subject}|rfc822; x@blocked.example|failed|5.7.1|X-Corepost; no mail for you here"
        ),
    ] {
        assert!(
            lines.iter().any(|l| l == &expected),
            "{expected:?} missing in {lines:#?}"
        );
    }
    let said: Vec<&String> = lines.iter().filter(|l| l.contains("said:")).collect();
    assert_eq!(said.len(), 1, "{lines:#?}");
    assert_eq!(said[0].matches("said:").count(), 1, "{said:?}");
    assert!(
        said[0].contains("host 127.0.0.1[127.0.0.1] said: 450 4.2.0"),
        "{said:?}"
    );
    let log = d.log();
    assert!(
        log.contains("dsn=5.7.1, status=bounced (no mail for you here)"),
        "{log}"
    );
    assert!(
        log.contains("from=<sender@example.org>, status=expired, returned to sender"),
        "{log}"
    );
    assert!(log.contains("dsn=4.2.0, status=deferred"), "{log}");
}

/// soft_bounce = yes: smtpd answers 450 4.1.1 for an unknown local user,
/// a remote 550 and `error:5.7.1` are deferred with 4.x.x (logged as
/// `status=SOFTBOUNCE`, as Postfix 3.7 does), and no bounce goes out.
#[test]
fn soft_bounce_defers_instead_of_bouncing() {
    let sink = Sink::start();
    let (d, _dir) = daemon(
        &sink,
        "soft_bounce = yes\n\
         transport_maps = texthash:@ROOT@/transport\n",
    );
    let replies = send(
        &d,
        "<sender@example.org>",
        &[
            "<nosuchuser@mx.test.example>",
            "<permfail@remote.example>",
            "<x@blocked.example>",
        ],
        "Subject: soft\r\n\r\nbody",
    );
    assert!(replies[0].starts_with("450 4.1.1 "), "{replies:?}");
    assert!(replies[1].starts_with("250") && replies[2].starts_with("250"));
    let log = wait_until(20, || {
        let log = d.log();
        (log.contains("to=<permfail@remote.example>") && log.contains("to=<x@blocked.example>"))
            .then_some(log)
    })
    .unwrap_or_else(|| d.log());
    assert!(
        log.contains(
            "reject: RCPT from unknown[127.0.0.1]: 450 4.1.1 <nosuchuser@mx.test.example>"
        ),
        "{log}"
    );
    assert!(
        log.contains("to=<permfail@remote.example>, relay=127.0.0.1[127.0.0.1]:"),
        "{log}"
    );
    assert!(
        log.contains(
            "dsn=4.1.1, status=SOFTBOUNCE (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 no such user"
        ),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.7.1, status=SOFTBOUNCE (no mail for you here)"),
        "{log}"
    );
    assert!(
        !log.contains("status=bounced") && !log.contains("notification:"),
        "{log}"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        sink.snapshot()
            .messages
            .iter()
            .all(|(from, _, _)| !from.is_empty()),
        "no notice"
    );
}

/// `delay_warning_time`: one "Delayed Mail" notice per message (Action:
/// delayed, the deferral's 4.x.x status), and not again after a restart.
#[test]
fn a_delay_warning_is_sent_once_even_across_a_restart() {
    let sink = Sink::start();
    let (mut d, _dir) = daemon(&sink, "delay_warning_time = 1s\n");
    send(
        &d,
        "<sender@example.org>",
        &["<tempfail@remote.example>"],
        "Subject: slow\r\n\r\nbody",
    );
    let lines = notices(&sink, 1, &d);
    assert!(
        lines.iter().any(|l| l.starts_with(
            "Delayed Mail (still being retried)|rfc822; tempfail@remote.example|delayed|4.2.0|"
        )),
        "{lines:#?}"
    );
    let deferrals = |d: &Daemon| d.log().matches("to=<tempfail@remote.example>").count();
    let before = deferrals(&d);
    d.stop();
    d.spawn();
    // Retried at least twice more after the restart (backoff 1-2 s).
    wait_until(20, || (deferrals(&d) >= before + 2).then_some(()))
        .unwrap_or_else(|| panic!("no retries after the restart:\n{}", d.log()));
    let notices_sent = sink
        .snapshot()
        .messages
        .iter()
        .filter(|(from, _, _)| from.is_empty())
        .count();
    assert_eq!(notices_sent, 1, "{}", d.log());
    assert_eq!(
        d.log().matches("sender delay notification").count(),
        1,
        "{}",
        d.log()
    );
}
