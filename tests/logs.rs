//! corepost's log read by the tools written for Postfix's: Debian's real
//! pflogsumm (`apt-get install pflogsumm`; .ci/run installs it) over the
//! log of a mixed workload must count what happened — received,
//! delivered, forwarded, deferred, bounced, rejected, held, bytes received
//! and delivered, senders and recipients — without a Perl warning. That
//! needs the lines from the processes Postfix logs them from:
//! `qmgr`'s `from=<>, size=` and `cleanup`'s `hold:`.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use support::*;

/// Send one message; the RCPT replies.
fn send(d: &Daemon, from: &str, rcpts: &[&str], body: &str) -> Vec<String> {
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.example");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    let replies: Vec<String> = rcpts
        .iter()
        .map(|r| c.cmd(&format!("RCPT TO:<{r}>")))
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

/// pflogsumm's "Grand Totals": the number before `label`.
fn total(report: &str, label: &str) -> u64 {
    report
        .lines()
        .map(str::trim)
        .find_map(|l| {
            let (n, rest) = l.split_once(char::is_whitespace)?;
            (rest.trim_start() == label || rest.trim_start().starts_with(&format!("{label} ")))
                .then(|| n.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {label:?} in:\n{report}"))
}

#[test]
fn pflogsumm_counts_a_mixed_workload() {
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(root.join("aliases"), "list: fwd@remote.example\n").unwrap();
    std::fs::write(
        root.join("header_checks"),
        "/^Subject: hold me/ HOLD held for review\n",
    )
    .unwrap();
    let mut d = Daemon::start(&format!(
        "corepost_cores = 1\nrelayhost = [127.0.0.1]:{port}\n\
         alias_maps = hash:{root}/aliases\nalias_database = $alias_maps\n\
         local_recipient_maps = $alias_maps\n\
         header_checks = regexp:{root}/header_checks\n\
         minimal_backoff_time = 300s\nmaximal_backoff_time = 600s\n",
        port = sink.port,
        root = root.display()
    ));
    send(
        &d,
        "a@example.org",
        &["ok1@remote.example", "ok2@remote.example"],
        "Subject: two recipients\r\n\r\nhello",
    );
    send(
        &d,
        "b@example.org",
        &["list@mx.test.example"],
        "Subject: to the list\r\n\r\nhello",
    );
    send(
        &d,
        "a@example.org",
        &["tempfail@remote.example"],
        "Subject: later\r\n\r\nhello",
    );
    send(
        &d,
        "c@example.org",
        &["permfail@remote.example"],
        "Subject: never\r\n\r\nhello",
    );
    let replies = send(&d, "c@example.org", &["nosuch@mx.test.example"], "");
    assert!(replies[0].starts_with("550"), "{replies:?}");
    send(
        &d,
        "d@example.org",
        &["ok3@remote.example"],
        "Subject: hold me\r\n\r\nhello",
    );
    // ok1, ok2, fwd and the bounce notice to c@example.org.
    sink.wait_for(3, 20);
    wait_until(20, || {
        let log = d.log();
        (log.contains("to=<tempfail@remote.example>")
            && log.contains("to=<ok1@remote.example>")
            && log.contains("to=<ok2@remote.example>")
            && log.contains("to=<c@example.org>")
            && log.contains("to=<fwd@remote.example>, relay=127"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("workload unfinished:\n{}", d.log()));
    d.stop();
    let maillog = d.dir.path().join("maillog");
    let out = Command::new("pflogsumm")
        .args(["--syslog-name=corepost", "--no-no-msg-size"])
        .arg(&maillog)
        .output()
        .expect("pflogsumm (apt-get install pflogsumm; .ci/run does)");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let warnings = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{warnings}");
    assert!(
        warnings.is_empty(),
        "pflogsumm warned:\n{warnings}\n{}",
        d.log()
    );
    let log = d.log();
    let context = format!("{report}\n---\n{log}");
    assert_eq!(total(&report, "received"), 5, "{context}");
    assert_eq!(total(&report, "delivered"), 4, "{context}");
    assert_eq!(total(&report, "forwarded"), 1, "{context}");
    assert_eq!(total(&report, "deferred"), 1, "{context}");
    assert_eq!(total(&report, "bounced"), 1, "{context}");
    assert_eq!(total(&report, "rejected"), 1, "{context}");
    assert_eq!(total(&report, "held"), 1, "{context}");
    assert_eq!(total(&report, "senders"), 3, "{context}");
    assert_eq!(total(&report, "recipients"), 4, "{context}");
    // Bytes: the sizes the queue manager logged for the received mail, and
    // for each delivered recipient its message's size.
    let size_of = |needle: &str| -> u64 {
        let line = log
            .lines()
            .find(|l| l.contains("corepost/qmgr[") && l.contains(needle))
            .unwrap_or_else(|| panic!("no qmgr line with {needle:?}:\n{log}"));
        let size = line.split("size=").nth(1).unwrap_or("");
        size.split(',').next().unwrap_or("").parse().unwrap_or(0)
    };
    let id_of = |needle: &str| -> String {
        let line = log.lines().find(|l| l.contains(needle)).unwrap_or("");
        line.split(": ").nth(1).unwrap_or("").to_string()
    };
    // Received: the messages smtpd took (a `client=` line) and the queue
    // manager took (the held one never reaches it, as in Postfix).
    let received: u64 = log
        .lines()
        .filter(|l| l.contains("corepost/smtpd[") && l.contains(": client="))
        .map(|l| l.split(": ").nth(1).unwrap_or("").to_string())
        .filter(|id| log.contains(&format!("{id}: from=<")))
        .map(|id| size_of(&format!("{id}: from=<")))
        .sum();
    assert!(received > 0);
    assert_eq!(total(&report, "bytes received"), received, "{context}");
    let two = size_of("from=<a@example.org>, size=") * 2;
    let fwd = size_of(&format!(
        "{}: from=<b@example.org>",
        id_of("to=<fwd@remote.example>, relay=127")
    ));
    let notice = size_of(&format!("{}: from=<>", id_of("to=<c@example.org>")));
    assert_eq!(
        total(&report, "bytes delivered"),
        two + fwd + notice,
        "{two} {fwd} {notice} {context}"
    );
    let hold = report.split("message hold detail").nth(1).unwrap_or("");
    assert!(
        hold.contains("cleanup") && hold.contains("Subject: hold me"),
        "hold detail: {report}"
    );
}
