//! The classic open-relay test battery: the address forms relay testers
//! (and spammers) try, from outside and inside `mynetworks`, against the
//! default relay restrictions and the strict `reject_unauth_destination`
//! setup. Nothing may relay from outside; nothing may be queued.
//!
//! The authenticated variants (AUTH from outside may relay, failed AUTH may
//! not) belong with the SMTP AUTH work; see the TODO at the end.

mod support;

use support::*;

const LOCAL: &str = "mx.test.example";

/// Every form that names a foreign mailbox, with the address the reply
/// names (a source route is stripped first).
fn relay_forms() -> Vec<(String, String)> {
    let forms = [
        "user@foreign.example".to_string(),
        format!("user%foreign.example@{LOCAL}"),
        format!("\"user@foreign.example\"@{LOCAL}"),
        format!("foreign.example!user@{LOCAL}"),
        format!("\"user%foreign.example\"@{LOCAL}"),
        format!("foreign.example!user%other.example@{LOCAL}"),
        "user%foreign.example@relay.test.example".to_string(),
        "\"user@foreign.example\"@relay.test.example".to_string(),
        "relay.test.example!user@foreign.example".to_string(),
    ];
    let mut out: Vec<(String, String)> = forms.iter().map(|f| (f.clone(), f.clone())).collect();
    out.push((
        "user@foreign.example.".to_string(),
        "user@foreign.example".to_string(),
    ));
    out.push((
        format!("@{LOCAL}:user@foreign.example"),
        "user@foreign.example".to_string(),
    ));
    out.push((
        format!("@{LOCAL},@relay.test.example:user@foreign.example"),
        "user@foreign.example".to_string(),
    ));
    out
}

const CONFIG: &str = "mynetworks = 127.0.0.1/32\nrelay_domains = relay.test.example\nsmtpd_hard_error_limit = 200\nsmtpd_soft_error_limit = 200\n";

fn battery_from_outside(d: &Daemon, want_code: &str) {
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    assert!(c.cmd("EHLO outsider.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<spammer@example.org>").starts_with("250"));
    for (form, named) in relay_forms() {
        let reply = c.cmd(&format!("RCPT TO:<{form}>"));
        assert_eq!(
            reply,
            format!("{want_code} <{named}>: Relay access denied\r\n"),
            "form {form}"
        );
    }
    // The local and relay domains still get their mail.
    assert!(
        c.cmd(&format!("RCPT TO:<alice@{LOCAL}>"))
            .starts_with("250"),
        "local mail refused"
    );
    assert!(
        c.cmd("RCPT TO:<anyone@relay.test.example>")
            .starts_with("250"),
        "relay-domain mail refused"
    );
    assert!(c.cmd("RSET").starts_with("250"));
    // Null sender and a sender in our own domain change nothing.
    for sender in ["", "alice@mx.test.example"] {
        assert!(c.cmd(&format!("MAIL FROM:<{sender}>")).starts_with("250"));
        for (form, _) in relay_forms() {
            let reply = c.cmd(&format!("RCPT TO:<{form}>"));
            assert!(reply.starts_with(want_code), "{sender} -> {form}: {reply}");
        }
        c.cmd("RSET");
    }
    assert!(c.cmd("QUIT").starts_with("221"));
}

fn nothing_queued_for_foreign(d: &mut Daemon) {
    d.stop();
    for (id, envelope, _) in queued_messages(&d.spool_dir()) {
        for r in &envelope.recipients {
            assert!(
                !r.address.contains("foreign.example") && !r.nexthop.contains("foreign"),
                "{id}: queued {} via {}:{}",
                r.address,
                r.transport,
                r.nexthop
            );
        }
    }
}

#[test]
fn default_relay_restrictions_refuse_every_form_from_outside() {
    let mut d = Daemon::start(CONFIG);
    battery_from_outside(&d, "454 4.7.1");
    // A full transaction from outside: no recipient, no message.
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    c.cmd("EHLO outsider.example");
    c.cmd("MAIL FROM:<spammer@example.org>");
    for (form, _) in relay_forms() {
        c.cmd(&format!("RCPT TO:<{form}>"));
    }
    assert_eq!(c.cmd("DATA"), "554 5.5.1 Error: no valid recipients\r\n");
    let log = d.log();
    assert!(log.contains("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 454 4.7.1 <user%foreign.example@mx.test.example>: Relay access denied; from=<spammer@example.org> to=<user%foreign.example@mx.test.example> proto=ESMTP helo=<outsider.example>"), "{log}");
    nothing_queued_for_foreign(&mut d);
}

#[test]
fn reject_unauth_destination_refuses_every_form_from_outside() {
    let mut d = Daemon::start(&format!(
        "{CONFIG}smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n"
    ));
    battery_from_outside(&d, "554 5.7.1");
    nothing_queued_for_foreign(&mut d);
}

#[test]
fn an_empty_relay_policy_is_still_not_open() {
    // Postfix refuses to run without relay control in either list; corepost's
    // defaults keep smtpd_relay_restrictions. An operator who clears it but
    // keeps reject_unauth_destination later in the recipient list is safe.
    let mut d = Daemon::start(&format!(
        "{CONFIG}smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = check_recipient_access inline:{{ x@y=OK }}, reject_unauth_destination\n"
    ));
    battery_from_outside(&d, "554 5.7.1");
    nothing_queued_for_foreign(&mut d);
}

#[test]
fn inside_mynetworks_may_relay() {
    // The relay host refuses connections, so the message stays queued.
    let mut d = Daemon::start(&format!("{CONFIG}relayhost = [127.0.0.1]:1\n"));
    let mut c = Raw::connect_from(d.port, "127.0.0.1");
    c.cmd("EHLO insider.example");
    c.cmd("MAIL FROM:<a@example.org>");
    assert!(c.cmd("RCPT TO:<user@foreign.example>").starts_with("250"));
    assert!(
        c.cmd(&format!("RCPT TO:<@{LOCAL}:user2@foreign.example>"))
            .starts_with("250")
    );
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: relay\r\n\r\nhello\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    d.stop();
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 1);
    let rcpts: Vec<_> = queued[0]
        .1
        .recipients
        .iter()
        .map(|r| (r.address.as_str(), r.transport.as_str()))
        .collect();
    assert_eq!(
        rcpts,
        vec![
            ("user@foreign.example", "smtp"),
            ("user2@foreign.example", "smtp")
        ]
    );
}

/// Postfix's smtpd refuses to start without relay control in either list.
const POSTFIX_OPEN_RELAY: &str = "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: reject_unauth_destination, defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains";

const OPEN: &str = "smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = permit\n";

#[test]
fn an_open_relay_configuration_is_refused_by_check_and_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("queue_directory = {path}/spool\nmaillog_file = {path}/maillog\nmaillog_file_prefixes = /\n{CONFIG}{OPEN}"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("master.cf"),
        format!(
            "127.0.0.1:{} inet n - n - - smtpd\nsmtp unix - - n - - smtp\n",
            free_port()
        ),
    )
    .unwrap();
    let check = corepost(&["check", "-c", &path]);
    assert_eq!(check.status.code(), Some(1));
    assert!(
        stderr(&check).contains(&format!(
            "corepost: error: {path}/master.cf, line 1: service 127.0.0.1:"
        )) && stderr(&check).contains(POSTFIX_OPEN_RELAY),
        "{}",
        stderr(&check)
    );
    let run = corepost(&["run", "-c", &path]);
    assert!(!run.status.success());
    assert!(
        stderr(&run).contains(POSTFIX_OPEN_RELAY),
        "{}",
        stderr(&run)
    );
    // A restriction class counts by its content, as in Postfix.
    let main = dir.path().join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap().replace(
        OPEN,
        "smtpd_restriction_classes = strict\nstrict = reject_unauth_destination\nsmtpd_relay_restrictions = permit_mynetworks, strict\n",
    );
    std::fs::write(&main, text).unwrap();
    let check = corepost(&["check", "-c", &path]);
    assert!(check.status.success(), "{}", stderr(&check));
}

#[test]
fn reload_refuses_an_open_relay_and_keeps_relay_control() {
    let d = Daemon::start(CONFIG);
    let main = d.dir.path().join("main.cf");
    let safe = std::fs::read_to_string(&main).unwrap();
    std::fs::write(&main, format!("{safe}{OPEN}")).unwrap();
    let reload = corepost(&["reload", "-c", &d.config_dir()]);
    assert_eq!(reload.status.code(), Some(1), "{}", stderr(&reload));
    assert!(
        stderr(&reload).contains("refused the new configuration and keeps the running one")
            && stderr(&reload).contains(POSTFIX_OPEN_RELAY),
        "{}",
        stderr(&reload)
    );
    assert!(
        d.log()
            .contains("warning: reload failed, keeping the running configuration"),
        "{}",
        d.log()
    );
    // The running configuration still refuses relaying.
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    c.cmd("EHLO outsider.example");
    c.cmd("MAIL FROM:<spammer@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<user@foreign.example>"),
        "454 4.7.1 <user@foreign.example>: Relay access denied\r\n"
    );
    // A good configuration is accepted: exit 0 after the daemon's verdict.
    std::fs::write(&main, safe).unwrap();
    let reload = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert!(stdout(&reload).contains("refreshing the mail system"));
    assert!(d.log().contains("reload -- version"), "{}", d.log());
}

// TODO(lead / TLS+AUTH helper): the authenticated half of the battery —
// after a successful AUTH from 127.0.0.2 `user@foreign.example` is accepted
// (permit_sasl_authenticated), after a failed AUTH every form above is still
// refused. It needs the AUTH implementation, which lives on another branch.
