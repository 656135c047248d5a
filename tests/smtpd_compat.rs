//! smtpd against Postfix 3.7's replies, command by command: every expected
//! reply and log line below was taken from a throwaway Postfix 3.7.11 with
//! the same settings (see tests/compat/compare.py, which replays these
//! dialogues against both servers).

mod support;

use std::time::Duration;
use support::*;

/// Replies to several pipelined commands sent in one write.
fn replies(c: &mut Raw, data: &str, n: usize) -> Vec<String> {
    c.send(data.as_bytes());
    (0..n).map(|_| c.reply()).collect()
}

/// Send `data` at once after connecting, and read until the server hangs up.
fn before_greeting(port: u16, data: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    s.write_all(data.as_bytes()).expect("write");
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    got
}

fn wait_log(d: &Daemon, needle: &str) -> String {
    wait_until(10, || {
        let log = d.log();
        log.contains(needle).then_some(log)
    })
    .unwrap_or_else(|| panic!("no {needle:?} in the log:\n{}", d.log()))
}

#[test]
fn strict_rfc821_envelopes_wants_angle_brackets() {
    let d = Daemon::start("strict_rfc821_envelopes = yes\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.example");
    assert_eq!(
        c.cmd("MAIL FROM:sender@example.com"),
        "501 5.1.7 Bad sender address syntax\r\n"
    );
    assert_eq!(c.cmd("MAIL FROM:<sender@example.com>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:alice@mx.test.example"),
        "501 5.1.3 Bad recipient address syntax\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<alice@mx.test.example>"), "250 2.1.5 Ok\r\n");
    wait_log(
        &d,
        "warning: Illegal address syntax from unknown[127.0.0.1] in MAIL command: sender@example.com",
    );
    // The default (no) keeps accepting them, as Postfix does.
    let d = Daemon::start("");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.example");
    assert_eq!(c.cmd("MAIL FROM:sender@example.com"), "250 2.1.0 Ok\r\n");
}

#[test]
fn improper_pipelining_is_remembered_for_reject_unauth_pipelining() {
    let d = Daemon::start("smtpd_data_restrictions = reject_unauth_pipelining\n");
    let mut c = Raw::connect(d.port);
    let got = replies(
        &mut c,
        "HELO x\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test.example>\r\nDATA\r\n",
        4,
    );
    assert_eq!(
        got,
        [
            "250 mx.test.example\r\n",
            "250 2.1.0 Ok\r\n",
            "250 2.1.5 Ok\r\n",
            "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining\r\n"
        ]
    );
    let log = wait_log(&d, "Data command rejected");
    assert!(
        log.contains("improper command pipelining after HELO from unknown[127.0.0.1]: MAIL FROM:<a@example.org>\\r\\nRCPT TO:<alice@mx.test.example>\\r\\nDATA\\r\\n"),
        "{log}"
    );
    assert!(log.contains("reject: DATA from unknown[127.0.0.1]: 503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining; from=<a@example.org> to=<alice@mx.test.example> proto=SMTP helo=<x>"), "{log}");
    // After EHLO's answer, MAIL/RCPT/DATA may be pipelined (RFC 2920).
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    let got = replies(
        &mut c,
        "MAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test.example>\r\nDATA\r\n",
        3,
    );
    assert_eq!(got[2], "354 End data with <CR><LF>.<CR><LF>\r\n");
}

#[test]
fn forbid_unauth_pipelining_hangs_up() {
    let d = Daemon::start("smtpd_forbid_unauth_pipelining = yes\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    let got = replies(&mut c, "NOOP\r\nMAIL FROM:<a@example.org>\r\n", 2);
    assert_eq!(
        got,
        ["554 5.5.0 Error: SMTP protocol synchronization\r\n", ""]
    );
    wait_log(
        &d,
        "improper command pipelining after NOOP from unknown[127.0.0.1]: MAIL FROM:<a@example.org>\\r\\n",
    );
    // RSET does not end a group: fine after EHLO.
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    let got = replies(&mut c, "RSET\r\nMAIL FROM:<a@example.org>\r\n", 2);
    assert_eq!(got, ["250 2.0.0 Ok\r\n", "250 2.1.0 Ok\r\n"]);
    // Without EHLO, PIPELINING was never offered.
    let mut c = Raw::connect(d.port);
    c.cmd("HELO x");
    let got = replies(&mut c, "RSET\r\nNOOP\r\n", 1);
    assert_eq!(got, ["554 5.5.0 Error: SMTP protocol synchronization\r\n"]);
}

#[test]
fn bare_newline_on_a_command_is_rejected_and_hangs_up() {
    let d = Daemon::start(
        "smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_exclusions =\n",
    );
    let mut c = Raw::connect(d.port);
    assert_eq!(c.cmd("HELO x"), "250 mx.test.example\r\n");
    c.send(b"NOOP\n");
    assert_eq!(
        c.reply(),
        "550 5.5.2 mx.test.example Error: bare <LF> received\r\n"
    );
    assert_eq!(c.reply(), "", "disconnected");
    wait_log(
        &d,
        "NOQUEUE: reject: HELO from unknown[127.0.0.1]: bare <LF> received; proto=SMTP helo=<x>",
    );
    // Clients in the exclusions ($mynetworks by default) are exempt, and
    // "yes" means normalize in Postfix 3.7.
    for extra in [
        "smtpd_forbid_bare_newline = reject\n",
        "smtpd_forbid_bare_newline = yes\nsmtpd_forbid_bare_newline_exclusions =\n",
    ] {
        let d = Daemon::start(extra);
        let mut c = Raw::connect(d.port);
        c.send(b"NOOP\n");
        assert_eq!(c.reply(), "250 2.0.0 Ok\r\n", "{extra}");
    }
}

#[test]
fn unknown_commands_get_500_and_noop_commands_are_ignored() {
    let d = Daemon::start("smtpd_noop_commands = XYZZY\n");
    let mut c = Raw::connect(d.port);
    for cmd in ["FROB", "HELP", "EXPN root"] {
        assert_eq!(
            c.cmd(cmd),
            "500 5.5.2 Error: command not recognized\r\n",
            "{cmd}"
        );
    }
    assert_eq!(c.cmd("xyzzy plugh"), "250 2.0.0 Ok\r\n");
    c.cmd("QUIT");
    wait_log(
        &d,
        "disconnect from unknown[127.0.0.1] quit=1 unknown=0/3 commands=1/4",
    );
}

#[test]
fn syntax_errors_have_postfix_enhanced_codes() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    for (cmd, want) in [
        (
            "MAIL FROM:<a b@example.com>",
            "501 5.1.7 Bad sender address syntax",
        ),
        (
            "MAIL FROM:<a@example.com> RET=FULL RET=HDRS",
            "501 5.5.4 Bad RET parameter syntax",
        ),
        (
            "MAIL FROM:<a@example.com> ENVID=x ENVID=y",
            "501 5.5.4 Bad ENVID parameter syntax",
        ),
        (
            "MAIL FROM:<a@example.com> FOO=1",
            "555 5.5.4 Unsupported option: FOO=1",
        ),
        ("MAIL FROM:<a@example.com>", "250 2.1.0 Ok"),
        ("RCPT TO:<a@b..c>", "501 5.1.3 Bad recipient address syntax"),
        (
            "RCPT TO:<alice@mx.test.example> NOTIFY=NEVER NOTIFY=SUCCESS",
            "501 5.5.4 Error: Bad NOTIFY parameter syntax",
        ),
        (
            "RCPT TO:<alice@mx.test.example> ORCPT=rfc822;a@b ORCPT=rfc822;c@d",
            "501 5.5.4 Error: Bad ORCPT parameter syntax",
        ),
        ("RCPT TO:", "501 5.5.4 Syntax: RCPT TO:<address>"),
    ] {
        assert_eq!(c.cmd(cmd), format!("{want}\r\n"), "{cmd}");
    }
}

#[test]
fn unqualified_addresses_are_qualified_with_myorigin() {
    let mut d = Daemon::start_keeping_local_mail("myorigin = mx.test.example\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    assert_eq!(c.cmd("MAIL FROM:<user>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<nobody>"),
        "550 5.1.1 <nobody>: Recipient address rejected: User unknown in local recipient table\r\n"
    );
    assert_eq!(c.cmd("RCPT TO:<alice>"), "250 2.1.5 Ok\r\n");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    wait_log(&d, "to=<nobody> proto=ESMTP helo=<x>");
    d.stop();
    let q = queued_messages(&d.spool_dir());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].1.sender, "user@mx.test.example");
    assert_eq!(q[0].1.recipients[0].address, "alice@mx.test.example");
    // The verdict is reject_non_fqdn_*'s.
    let d = Daemon::start(
        "smtpd_recipient_restrictions = reject_non_fqdn_sender, reject_non_fqdn_recipient\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("HELO x");
    c.cmd("MAIL FROM:<user>");
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "504 5.5.2 <user>: Sender address rejected: need fully-qualified address\r\n"
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<user@example.com>");
    assert_eq!(
        c.cmd("RCPT TO:<alice>"),
        "504 5.5.2 <alice>: Recipient address rejected: need fully-qualified address\r\n"
    );
}

#[test]
fn vrfy_uses_the_recipient_checks() {
    let d = Daemon::start("smtpd_relay_restrictions = reject_unauth_destination\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    for (cmd, want) in [
        ("VRFY alice", "252 2.0.0 alice"),
        (
            "VRFY <alice@mx.test.example>",
            "252 2.0.0 <alice@mx.test.example>",
        ),
        (
            "VRFY nobody",
            "550 5.1.1 <nobody>: Recipient address rejected: User unknown in local recipient table",
        ),
        (
            "VRFY x@foreign.example",
            "554 5.7.1 <x@foreign.example>: Relay access denied",
        ),
        ("VRFY <>", "501 5.1.3 Bad recipient address syntax"),
        ("VRFY", "501 5.5.4 Syntax: VRFY address [SMTPUTF8]"),
    ] {
        assert_eq!(c.cmd(cmd), format!("{want}\r\n"), "{cmd}");
    }
    wait_log(
        &d,
        "NOQUEUE: reject: VRFY from unknown[127.0.0.1]: 550 5.1.1 <nobody>: Recipient address rejected: User unknown in local recipient table; to=<nobody> proto=ESMTP helo=<x>",
    );
    let d = Daemon::start("disable_vrfy_command = yes\n");
    let mut c = Raw::connect(d.port);
    assert_eq!(
        c.cmd("VRFY alice"),
        "502 5.5.1 VRFY command is disabled\r\n"
    );
}

#[test]
fn etrn_flushes_the_destination_and_answers_as_postfix() {
    let port = free_port();
    let d = Daemon::start(&format!(
        "relay_domains = relay.example\nrelayhost = [127.0.0.1]:{port}\nminimal_backoff_time = 1h\nmaximal_backoff_time = 2h\nqueue_run_delay = 1h\n"
    ));
    for rcpt in ["x@relay.example", "y@other.example"] {
        let mut c = Raw::connect(d.port);
        c.cmd("EHLO x");
        c.cmd("MAIL FROM:<a@example.org>");
        assert!(c.cmd(&format!("RCPT TO:<{rcpt}>")).starts_with("250"));
        c.cmd("DATA");
        c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
        assert!(c.reply().starts_with("250 2.0.0"));
    }
    wait_until(20, || {
        (d.log().matches("status=deferred").count() >= 2).then_some(())
    })
    .expect("both deferred");
    let sink = Sink::start_on(port);
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    for (cmd, want) in [
        ("ETRN", "500 Syntax: ETRN domain"),
        ("ETRN a..b", "501 Error: invalid parameter syntax"),
        (
            "ETRN other.example",
            "459 <other.example>: service unavailable",
        ),
        ("ETRN relay.example", "250 Queuing started"),
    ] {
        assert_eq!(c.cmd(cmd), format!("{want}\r\n"), "{cmd}");
    }
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(
        c.cmd("ETRN relay.example"),
        "503 Error: MAIL transaction in progress\r\n"
    );
    let got = sink.wait_for(1, 15);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.snapshot().messages.len(),
        1,
        "only relay.example's mail"
    );
    wait_log(
        &d,
        "warning: reject: ETRN other.example... from unknown[127.0.0.1]",
    );
    // smtpd_etrn_restrictions.
    let d = Daemon::start("relay_domains = relay.example\nsmtpd_etrn_restrictions = reject\n");
    let mut c = Raw::connect(d.port);
    assert_eq!(
        c.cmd("ETRN relay.example"),
        "554 5.7.1 <relay.example>: Etrn command rejected: Access denied\r\n"
    );
    wait_log(
        &d,
        "NOQUEUE: reject: ETRN from unknown[127.0.0.1]: 554 5.7.1 <relay.example>: Etrn command rejected: Access denied; proto=SMTP\n",
    );
}

#[test]
fn recipients_beyond_the_limit_do_not_end_the_session() {
    let mut d = Daemon::start_keeping_local_mail("smtpd_recipient_limit = 2\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    for i in 0..30 {
        let want = if i < 2 {
            "250 2.1.5 Ok\r\n"
        } else {
            "452 4.5.3 Error: too many recipients\r\n"
        };
        assert_eq!(c.cmd("RCPT TO:<alice@mx.test.example>"), want, "RCPT {i}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    wait_log(&d, "rcpt=30 data=1 quit=1");
    d.stop();
    assert_eq!(queued_messages(&d.spool_dir())[0].1.recipients.len(), 2);
    // Beyond smtpd_recipient_overshoot_limit they are errors again.
    let d = Daemon::start(
        "smtpd_recipient_limit = 2\nsmtpd_recipient_overshoot_limit = 3\nsmtpd_hard_error_limit = 3\nsmtpd_error_sleep_time = 0\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("HELO x");
    c.cmd("MAIL FROM:<a@example.org>");
    for _ in 0..8 {
        c.cmd("RCPT TO:<alice@mx.test.example>");
    }
    assert_eq!(
        c.reply(),
        "421 4.7.0 mx.test.example Error: too many errors\r\n"
    );
    wait_log(
        &d,
        "disconnect from unknown[127.0.0.1] helo=1 mail=1 rcpt=5/8 commands=7/10",
    );
}

#[test]
fn permit_actions_are_logged_when_listed() {
    let d = Daemon::start(
        "smtpd_log_access_permit_actions = static:all\nsmtpd_client_restrictions = check_client_access inline:{127.0.0.1=OK}\nsmtpd_sender_restrictions = permit_inet_interfaces\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("HELO x");
    c.cmd("MAIL FROM:<a@example.com>");
    assert_eq!(c.cmd("RCPT TO:<alice@mx.test.example>"), "250 2.1.5 Ok\r\n");
    let log = wait_log(&d, "permit: RCPT");
    assert!(log.contains("NOQUEUE: permit: RCPT from unknown[127.0.0.1]: action=OK for Client host=unknown[127.0.0.1] from inline:{127.0.0.1=OK}; from=<a@example.com> to=<alice@mx.test.example> proto=SMTP helo=<x>"), "{log}");
    assert!(log.contains("NOQUEUE: permit: RCPT from unknown[127.0.0.1]: action=permit_inet_interfaces for Client host=unknown[127.0.0.1] ; from=<a@example.com> to=<alice@mx.test.example> proto=SMTP helo=<x>"), "{log}");
    // Not listed: not logged.
    let d = Daemon::start("smtpd_sender_restrictions = permit_inet_interfaces\n");
    let mut c = Raw::connect(d.port);
    c.cmd("HELO x");
    c.cmd("MAIL FROM:<a@example.com>");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    c.cmd("QUIT");
    let log = wait_log(&d, "disconnect from");
    assert!(!log.contains("permit:"), "{log}");
}

#[test]
fn long_lines_and_headers_are_cut_as_postfix_does() {
    let mut d =
        Daemon::start_keeping_local_mail("line_length_limit = 600\nheader_size_limit = 700\n");
    let mut c = Raw::connect(d.port);
    c.cmd("HELO x");
    // A command over line_length_limit is cut there and carried out.
    assert_eq!(
        c.cmd(&format!("NOOP {}", "x".repeat(3000))),
        "250 2.0.0 Ok\r\n"
    );
    c.cmd("MAIL FROM:<a@example.com>");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    assert!(c.cmd("DATA").starts_with("354"));
    let words: Vec<String> = (0..250).map(|i| format!("word{i:03}")).collect();
    let long_header = format!("X-Long: {}", words.join(" "));
    let long_line = "B".repeat(1500);
    c.send(
        format!("Subject: t\r\n{long_header}\r\nX-After: yes\r\n\r\n{long_line}\r\nend\r\n.\r\n")
            .as_bytes(),
    );
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    wait_log(
        &d,
        "warning: unknown[127.0.0.1]: request longer than 600: NOOP xxxxxxxxxxxxxxxxxxxxxxxxx...",
    );
    d.stop();
    let q = queued_messages(&d.spool_dir());
    let text = String::from_utf8_lossy(&q[0].2).into_owned();
    assert!(
        text.contains(&format!("\r\n{}\r\nX-After: yes\r\n", &long_header[..700])),
        "{text}"
    );
    assert!(
        text.contains(&format!("\r\n{long_line}\r\n")),
        "body lines are kept whole"
    );
    // Postfix refuses to run with a line_length_limit below 512.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("main.cf"), "line_length_limit = 100\n").expect("main.cf");
    std::fs::write(
        dir.path().join("master.cf"),
        "127.0.0.1:2525 inet n - n - - smtpd\n",
    )
    .expect("master.cf");
    let out = corepost(&["check", "-c", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid line_length_limit parameter value 100 < 512"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn xclient_replaces_the_client_for_authorized_hosts() {
    let d = Daemon::start(
        "smtpd_authorized_xclient_hosts = 127.0.0.1\nsmtpd_client_restrictions = check_client_access inline:{{10.1.2.3=REJECT go away}}\n",
    );
    let mut c = Raw::connect(d.port);
    let ehlo = c.cmd("EHLO x");
    assert!(
        ehlo.contains("\r\n250-XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT\r\n250-ENHANCEDSTATUSCODES\r\n"),
        "{ehlo}"
    );
    assert_eq!(
        c.cmd("XCLIENT"),
        "501 5.5.4 Syntax: XCLIENT attribute=value...\r\n"
    );
    assert_eq!(
        c.cmd("XCLIENT FOO=bar"),
        "501 5.5.4 Bad XCLIENT attribute name: FOO\r\n"
    );
    assert_eq!(
        c.cmd("XCLIENT NAME=a+20b"),
        "501 5.5.4 Bad NAME syntax: a b\r\n"
    );
    assert!(
        c.cmd("XCLIENT NAME=spike.example ADDR=10.1.2.3 PORT=1234")
            .starts_with("220 mx.test.example ESMTP")
    );
    assert_eq!(c.cmd("MAIL FROM:<a@example.com>"), "250 2.1.0 Ok\r\n");
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 <spike.example[10.1.2.3]>: Client host rejected: go away\r\n"
    );
    assert_eq!(
        c.cmd("XCLIENT ADDR=127.0.0.2"),
        "503 5.5.1 Error: MAIL transaction in progress\r\n"
    );
    c.cmd("RSET");
    // The simulated client is not an authorized one.
    assert_eq!(
        c.cmd("XCLIENT ADDR=127.0.0.1"),
        "550 5.7.0 Error: insufficient authorization\r\n"
    );
    c.cmd("QUIT");
    wait_log(
        &d,
        "NOQUEUE: reject: RCPT from spike.example[10.1.2.3]: 554 5.7.1 <spike.example[10.1.2.3]>: Client host rejected: go away; from=<a@example.com> to=<alice@mx.test.example> proto=SMTP\n",
    );
    // Others are not offered XCLIENT and may not use it.
    let d = Daemon::start("");
    let mut c = Raw::connect(d.port);
    assert!(!c.cmd("EHLO x").contains("XCLIENT"));
    assert_eq!(
        c.cmd("XCLIENT ADDR=10.1.2.3"),
        "550 5.7.0 Error: insufficient authorization\r\n"
    );
}

#[test]
fn talk_before_the_greeting_is_improper_pipelining() {
    // `sleep` holds the greeting back, so the EHLO is surely waiting.
    let d = Daemon::start(
        "smtpd_delay_reject = no\nsmtpd_client_restrictions = sleep 1, reject_unauth_pipelining\n",
    );
    assert_eq!(
        before_greeting(d.port, "EHLO x\r\nQUIT\r\n"),
        "503 5.5.0 <unknown[127.0.0.1]>: Client host rejected: Improper use of SMTP command pipelining\r\n\
         503 5.7.0 Error: access denied for unknown[127.0.0.1]\r\n\
         221 2.0.0 Bye\r\n"
    );
    let d = Daemon::start(
        "smtpd_delay_reject = no\nsmtpd_client_restrictions = sleep 1\nsmtpd_forbid_unauth_pipelining = yes\n",
    );
    assert_eq!(
        before_greeting(d.port, "EHLO x\r\n"),
        "554 5.5.0 Error: SMTP protocol synchronization\r\n"
    );
    wait_log(
        &d,
        "improper command pipelining after CONNECT from unknown[127.0.0.1]: EHLO x\\r\\n",
    );
}
