//! Bounce classes end to end (issue 21): a sink answers 550 5.1.1, 452
//! 4.2.2 and 450 4.2.0; the JSON events carry each failure's class (the
//! built-in rules, and a site rule of `corepost_bounce_class_rules` that
//! comes first), `/metrics` counts them by status and class, and the
//! Postfix-format lines are unchanged. `corepost check` refuses a bad rule
//! naming its file and line.

mod support;

use serde_json::Value;
use std::io::{Read, Write};
use support::*;

fn send(port: u16, from: &str, rcpts: &[&str]) {
    let mut c = Raw::connect(port);
    c.cmd("EHLO client.example");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    for r in rcpts {
        let reply = c.cmd(&format!("RCPT TO:<{r}>"));
        assert!(reply.starts_with("250"), "{r}: {reply}");
    }
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: classes\r\n\r\nhello\r\n.\r\n");
    let r = c.reply();
    assert!(r.starts_with("250"), "{r}");
    c.cmd("QUIT");
}

/// The `/metrics` lines of `name`.
fn metric_lines(port: u16, name: &str) -> Vec<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read metrics");
    reply
        .lines()
        .filter(|l| l.starts_with(name))
        .map(str::to_string)
        .collect()
}

/// The event about `recipient`'s attempt.
fn attempt_of<'a>(events: &'a [Value], recipient: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["recipient"] == recipient)
        .unwrap_or_else(|| panic!("no event for {recipient}: {events:#?}"))
}

#[test]
fn failures_carry_their_class_in_events_and_metrics() {
    let sink = Sink::start();
    let files = tempfile::tempdir().unwrap();
    let events_file = files.path().join("events.json");
    let rules = files.path().join("classes.conf");
    std::fs::write(&rules, "# ours first\ngreylisted  4.2.0  (?i)try again\n").unwrap();
    let metrics = free_port();
    let mut d = Daemon::start(&format!(
        "corepost_cores = 1\nrelayhost = [127.0.0.1]:{}\n\
         corepost_event_log_file = {}\ncorepost_metrics_address = 127.0.0.1:{metrics}\n\
         corepost_bounce_class_rules = {}\n\
         minimal_backoff_time = 300s\nmaximal_backoff_time = 600s\n",
        sink.port,
        events_file.display(),
        rules.display()
    ));
    send(
        d.port,
        "a@example.org",
        &[
            "permfail@remote.example",
            "quotafail@remote.example",
            "tempfail@remote.example",
            "ok@remote.example",
        ],
    );
    wait_until(20, || {
        let log = d.log();
        ["permfail", "quotafail", "tempfail", "ok"]
            .iter()
            .all(|r| log.contains(&format!("to=<{r}@remote.example>")))
            .then_some(())
    })
    .unwrap_or_else(|| panic!("workload unfinished:\n{}", d.log()));
    let failures = metric_lines(metrics, "corepost_delivery_failures_total");
    for line in [
        "corepost_delivery_failures_total{status=\"bounced\",class=\"bad-mailbox\"} 1",
        "corepost_delivery_failures_total{status=\"deferred\",class=\"quota\"} 1",
        "corepost_delivery_failures_total{status=\"deferred\",class=\"greylisted\"} 1",
    ] {
        assert!(
            failures.iter().any(|l| l == line),
            "{line} not in {failures:#?}"
        );
    }
    assert_eq!(failures.len(), 3, "{failures:#?}");
    d.stop();
    let log = d.log();
    // The Postfix line is as Postfix writes it: no class in it.
    assert!(
        log.lines()
            .any(|l| l.contains("to=<permfail@remote.example>")
                && l.contains("dsn=5.1.1, status=bounced (host ")
                && l.ends_with("said: 550 5.1.1 no such user (in reply to RCPT TO command))")),
        "{log}"
    );
    assert!(!log.contains("bad-mailbox"), "{log}");
    let events: Vec<Value> = std::fs::read_to_string(&events_file)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    for (recipient, event, class) in [
        ("permfail@remote.example", "bounce", "bad-mailbox"),
        ("quotafail@remote.example", "deferral", "quota"),
        ("tempfail@remote.example", "deferral", "greylisted"),
    ] {
        let e = attempt_of(&events, recipient);
        assert_eq!(e["event"], event, "{e}");
        assert_eq!(e["bounce_class"], class, "{e}");
    }
    let delivered = attempt_of(&events, "ok@remote.example");
    assert_eq!(delivered["event"], "delivery", "{delivered}");
    assert!(delivered.get("bounce_class").is_none(), "{delivered}");
}

#[test]
fn check_refuses_a_bad_rule_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("classes.conf");
    std::fs::write(&rules, "quota 4.2.2\n\npolicy 5.7.1 (?i)(spam\n").unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("corepost_bounce_class_rules = {}\n", rules.display()),
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    let expected = format!("corepost: error: {}, line 3: (?i)(spam: ", rules.display());
    assert!(stderr(&out).contains(&expected), "{}", stderr(&out));
}

/// The JSON log line of `recipient`'s `to=<>` line, once logged.
fn json_to_line(d: &Daemon, recipient: &str) -> Value {
    let needle = format!("to=<{recipient}>");
    wait_until(20, || {
        d.log()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .find(|l| l["message"].as_str().is_some_and(|m| m.contains(&needle)))
    })
    .unwrap_or_else(|| panic!("no {needle}:\n{}", d.log()))
}

#[test]
fn json_log_lines_carry_the_class_and_a_reload_reads_the_rules_again() {
    let sink = Sink::start();
    let files = tempfile::tempdir().unwrap();
    let rules = files.path().join("classes.conf");
    std::fs::write(&rules, "# nothing of ours yet\n").unwrap();
    let d = Daemon::start(&format!(
        "corepost_cores = 1\nrelayhost = [127.0.0.1]:{}\ncorepost_log_format = json\n\
         corepost_bounce_class_rules = {}\n",
        sink.port,
        rules.display()
    ));
    send(
        d.port,
        "a@example.org",
        &["permfail1@remote.example", "ok@remote.example"],
    );
    let failed = json_to_line(&d, "permfail1@remote.example");
    assert_eq!(failed["bounce_class"], "bad-mailbox", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("dsn=5.1.1, status=bounced ("),
        "{failed}"
    );
    let sent = json_to_line(&d, "ok@remote.example");
    assert!(sent.get("bounce_class").is_none(), "{sent}");
    // A site rule added and reloaded comes before the built-in ones.
    std::fs::write(&rules, "unknown-user  5.1.1  (?i)no such user\n").unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(10, || d.log().contains("reload -- version").then_some(()))
        .unwrap_or_else(|| panic!("no reload:\n{}", d.log()));
    send(d.port, "b@example.org", &["permfail2@remote.example"]);
    let failed = json_to_line(&d, "permfail2@remote.example");
    assert_eq!(failed["bounce_class"], "unknown-user", "{failed}");
}
