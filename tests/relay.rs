//! Relaying end to end: `corepost run` accepts mail and its queue manager
//! delivers it over SMTP to a sink on loopback (next hop `[127.0.0.1]:port`,
//! no DNS).

mod support;

use support::*;

fn relay_daemon(sink: &Sink, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{extra}",
        sink.port
    ))
}

#[test]
fn relays_to_the_sink_and_removes_the_message() {
    let sink = Sink::start();
    let mut d = relay_daemon(&sink, "");
    let id = submit(
        d.port,
        "a@example.org",
        &["x@remote.example", "y@remote.example"],
        "Subject: relay\r\n\r\n..dot line\r\nbody",
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let (from, rcpts, content) = &got.messages[0];
    assert_eq!(from, "a@example.org");
    assert_eq!(
        rcpts,
        &vec![
            "x@remote.example".to_string(),
            "y@remote.example".to_string()
        ]
    );
    let text = String::from_utf8_lossy(content);
    assert!(text.contains("Received: from client.test"), "{text}");
    assert!(
        text.contains("\r\n.dot line\r\nbody\r\n"),
        "dot-stuffed on the wire and unstuffed by the sink: {text}"
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = d.log();
    assert!(
        log.contains(&format!("{id}: to=<x@remote.example>, relay=")),
        "{log}"
    );
    assert!(log.contains("status=sent (250 2.0.0 queued)"), "{log}");
    assert!(log.contains(&format!("{id}: removed")), "{log}");
    d.stop();
    assert!(
        queued_messages(&d.spool_dir()).is_empty(),
        "delivered mail is no longer queued"
    );
}

#[test]
fn batching_and_connection_reuse() {
    let sink = Sink::start();
    let d = relay_daemon(
        &sink,
        "corepost_cores = 1\nsmtp_destination_concurrency_limit = 2\n",
    );
    let rcpts: Vec<String> = (0..50).map(|i| format!("user{i}@bulk.example")).collect();
    let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
    submit(d.port, "a@example.org", &refs, "Subject: bulk\r\n\r\nhi");
    for i in 0..20 {
        submit(
            d.port,
            "a@example.org",
            &["z@bulk.example"],
            &format!("Subject: {i}\r\n\r\nhi"),
        );
    }
    let got = sink.wait_for(21, 30);
    assert_eq!(got.messages.len(), 21, "{}", d.log());
    assert!(
        got.messages.iter().any(|m| m.1.len() == 50),
        "50 recipients in one transaction"
    );
    // At most two connections at a time, each reused for many messages.
    assert!(
        got.connections <= 4,
        "{} connections for 21 messages",
        got.connections
    );
}

#[test]
fn temporary_failure_is_retried_and_permanent_one_bounced() {
    let sink = Sink::start();
    let mut d = relay_daemon(&sink, "");
    let id = submit(
        d.port,
        "a@example.org",
        &[
            "ok@remote.example",
            "tempfail@remote.example",
            "permfail@remote.example",
        ],
        "Subject: mixed\r\n\r\nhi",
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages[0].1, vec!["ok@remote.example".to_string()]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = d.log();
    assert!(
        log.contains(&format!("{id}: to=<tempfail@remote.example>"))
            && log.contains("status=deferred"),
        "{log}"
    );
    assert!(
        log.contains("to=<permfail@remote.example>") && log.contains("dsn=5.1.1, status=bounced"),
        "{log}"
    );
    // The deferred recipient is retried after the backoff (1-2 s here).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let log = d.log();
    assert!(
        log.matches("to=<tempfail@remote.example>").count() >= 2,
        "retried: {log}"
    );
    d.stop();
    let q = queued_messages(&d.spool_dir());
    assert_eq!(q.len(), 1, "still queued for the deferred recipient");
}

#[test]
fn unreachable_next_hop_defers() {
    let port = free_port();
    let mut d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{port}\nminimal_backoff_time = 60s\n"
    ));
    let id = submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: x\r\n\r\nhi",
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    let log = d.log();
    assert!(
        log.contains(&format!("{id}: to=<x@remote.example>, relay=none"))
            && log.contains("status=deferred (connect to"),
        "{log}"
    );
    d.stop();
    assert_eq!(queued_messages(&d.spool_dir()).len(), 1);
}

#[test]
fn permanent_failure_sends_a_dsn_and_bounces_are_never_bounced() {
    let sink = Sink::start();
    let d = relay_daemon(&sink, "");
    let id = submit(
        d.port,
        "sender@example.org",
        &["permfail@remote.example"],
        "Subject: doomed\r\nMessage-ID: <doomed@example.org>\r\n\r\nhi",
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let (from, rcpts, content) = &got.messages[0];
    assert_eq!(from, "", "notices have the null sender");
    assert_eq!(rcpts, &vec!["sender@example.org".to_string()]);
    let script = r#"
import email, sys
msg = email.message_from_bytes(sys.stdin.buffer.read())
assert msg.get_content_type() == 'multipart/report', msg.get_content_type()
assert msg.get_param('report-type') == 'delivery-status'
assert msg['Auto-Submitted'].startswith('auto-replied')
parts = msg.get_payload()
status = parts[1].get_payload()
fields = {}
for block in status:
    for k, v in block.items():
        fields.setdefault(k, v)
assert fields['Action'] == 'failed', fields
assert fields['Status'] == '5.1.1', fields
assert 'permfail@remote.example' in fields['Final-Recipient'], fields
assert parts[2].get_content_type() in ('message/rfc822', 'text/rfc822-headers'), parts[2].get_content_type()
print('ok')
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), content).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        d.log()
            .contains(&format!("{id}: sender non-delivery notification:")),
        "{}",
        d.log()
    );

    // A message from the null sender that fails is not bounced again.
    let bounce_id = submit(
        d.port,
        "",
        &["permfail@remote.example"],
        "Subject: a bounce\r\n\r\nhi",
    );
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert_eq!(
        sink.snapshot().messages.len(),
        1,
        "no notice about a notice"
    );
    assert!(
        d.log()
            .contains(&format!("{bounce_id}: no notification sent")),
        "{}",
        d.log()
    );
}

/// SIGKILL while relaying: after a restart every message that got a 250
/// reaches the sink; duplicates are counted (allowed only for messages in
/// flight at the kill).
#[test]
fn acknowledged_mail_is_delivered_after_sigkill() {
    let sink = Sink::start();
    let mut d = relay_daemon(&sink, "");
    let port = d.port;
    let sender = std::thread::spawn(move || {
        let mut acked = Vec::new();
        let mut c = Raw::connect(port);
        c.cmd("EHLO load.test");
        // The daemon is killed somewhere in this loop: every step may find
        // the connection gone.
        for i in 0..400 {
            let accepted = |r: Option<String>, code: &str| r.is_some_and(|r| r.starts_with(code));
            if !accepted(c.try_cmd("MAIL FROM:<a@example.org>"), "250")
                || !accepted(c.try_cmd("RCPT TO:<x@remote.example>"), "250")
                || !accepted(c.try_cmd("DATA"), "354")
                || !c.try_send(
                    format!("Subject: n{i}\r\nX-Seq: {i}\r\n\r\nbody {i}\r\n.\r\n").as_bytes(),
                )
            {
                break;
            }
            let r = c.reply();
            if r.starts_with("250 2.0.0 Ok: queued as") {
                acked.push(i);
            } else {
                break;
            }
        }
        acked
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    d.kill();
    let acked = sender.join().unwrap();
    assert!(!acked.is_empty());
    d.spawn();
    let want = acked.len();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut missing;
    loop {
        let (seen, total) = sink.sequence_numbers();
        missing = acked.iter().filter(|i| !seen.contains(i)).count();
        if missing == 0 || std::time::Instant::now() > deadline {
            let duplicates = total.saturating_sub(seen.len());
            eprintln!(
                "{want} acknowledged before the kill; {} delivered; {duplicates} duplicates",
                seen.len()
            );
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(missing, 0, "acknowledged messages lost: {}", d.log());
}

#[test]
fn mx_preference_and_fallback_through_test_dns() {
    let sink = Sink::start();
    let dns = corepost::dns::testserver::TestServer::start().expect("test dns");
    // The preferred MX has no server (nothing listens on 127.0.0.2 at
    // that port): corepost must fall back to the second.
    dns.add_mx("example.test", 60, 10, "mx1.example.test");
    dns.add_mx("example.test", 60, 20, "mx2.example.test");
    dns.add_a("mx1.example.test", 60, "127.0.0.2".parse().unwrap());
    dns.add_a("mx2.example.test", 60, "127.0.0.1".parse().unwrap());
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\ntransport_maps = inline:{{ example.test=smtp:example.test:{} }}\n",
        dns.addr(),
        sink.port
    ));
    let id = submit(
        d.port,
        "a@example.org",
        &["user@example.test"],
        "Subject: mx\r\n\r\nhi",
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    std::thread::sleep(std::time::Duration::from_millis(200));
    let log = d.log();
    assert!(
        log.contains(&format!(
            "{id}: to=<user@example.test>, relay=mx2.example.test[127.0.0.1]:{}",
            sink.port
        )),
        "{log}"
    );
    assert!(dns.count_all("example.test", hickory_proto::rr::RecordType::MX) >= 1);
}

#[test]
fn starttls_to_a_tls_capable_server() {
    use corepost::delivery::testsink::{SinkScript, TestSink};
    let sink = TestSink::start(SinkScript {
        starttls: true,
        ..SinkScript::default()
    })
    .expect("sink");
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = encrypt\n",
        sink.addr().port()
    ));
    submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: tls\r\n\r\nhi",
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while sink.received().messages.is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let received = sink.received();
    assert_eq!(received.messages.len(), 1, "{}", d.log());
    assert!(
        received
            .commands
            .iter()
            .any(|c| c.tls && c.line.to_ascii_uppercase().starts_with("MAIL FROM")),
        "MAIL FROM was sent inside TLS"
    );
    assert!(
        !received
            .commands
            .iter()
            .any(|c| !c.tls && c.line.to_ascii_uppercase().starts_with("MAIL FROM")),
        "nothing sent in plaintext with smtp_tls_security_level = encrypt"
    );
}

/// `smtp_enforce_tls = yes` (with `smtp_tls_security_level` empty) is
/// Postfix's `verify`: the sink's self-signed certificate defers the mail;
/// with `smtp_tls_enforce_peername = no` it is `encrypt` and goes out over
/// TLS.
#[test]
fn obsolete_smtp_enforce_tls_verifies_unless_peername_is_off() {
    use corepost::delivery::testsink::{SinkScript, TestSink};
    let sink = TestSink::start(SinkScript {
        starttls: true,
        ..SinkScript::default()
    })
    .expect("sink");
    let port = sink.addr().port();
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{port}\nsmtp_enforce_tls = yes\n"
    ));
    submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: tls\r\n\r\nhi",
    );
    let log = wait_until(20, || {
        let log = d.log();
        log.contains("status=deferred").then_some(log)
    })
    .expect("deferred");
    assert!(log.contains("Server certificate not verified"), "{log}");
    assert!(sink.received().messages.is_empty());
    let e = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{port}\nsmtp_enforce_tls = yes\nsmtp_tls_enforce_peername = no\n"
    ));
    submit(
        e.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: tls\r\n\r\nhi",
    );
    let got = wait_until(20, || {
        let r = sink.received();
        (!r.messages.is_empty()).then_some(r)
    })
    .expect("delivered with encrypt");
    assert!(
        got.commands
            .iter()
            .any(|c| c.tls && c.line.to_ascii_uppercase().starts_with("MAIL FROM")),
        "{}",
        e.log()
    );
}

#[test]
fn destination_rate_delay_is_honoured() {
    let sink = Sink::start();
    let d = relay_daemon(
        &sink,
        "corepost_cores = 1\nsmtp_destination_rate_delay = 1s\n",
    );
    let started = std::time::Instant::now();
    for i in 0..3 {
        submit(
            d.port,
            "a@example.org",
            &["x@remote.example"],
            &format!("Subject: r{i}\r\n\r\nhi"),
        );
    }
    let got = sink.wait_for(3, 20);
    assert_eq!(got.messages.len(), 3, "{}", d.log());
    let elapsed = started.elapsed();
    assert!(
        elapsed >= std::time::Duration::from_millis(1900),
        "3 deliveries in {elapsed:?} despite a 1 s rate delay"
    );
    assert_eq!(
        got.connections, 1,
        "one connection per destination with a rate delay"
    );
}

#[test]
fn dead_destination_is_suspended() {
    let port = free_port();
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{port}\ncorepost_cores = 1\nminimal_backoff_time = 60s\n"
    ));
    // Postfix's feedback: each failed connection shrinks the window
    // (5 -> 4 -> 3 -> 2) and adds 1/window of a failed cohort; the third
    // completes one cohort (1/4 + 1/3 + 1/2), and the destination is dead.
    for i in 0..3 {
        submit(
            d.port,
            "a@example.org",
            &[&format!("x{i}@remote.example")],
            "Subject: 1\r\n\r\nhi",
        );
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    let log = d.log();
    assert!(
        !log.contains("delivery temporarily suspended"),
        "suspended before a whole cohort failed: {log}"
    );
    let id = submit(
        d.port,
        "a@example.org",
        &["y@remote.example"],
        "Subject: 2\r\n\r\nhi",
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = d.log();
    assert!(
        log.lines()
            .any(|l| l.contains(&format!("{id}: to=<y@remote.example>"))
                && l.contains("status=deferred (delivery temporarily suspended: connect to")),
        "{log}"
    );
}

/// With two cores, every destination is delivered by one owner core: mail
/// accepted on either core reaches the sink, over that core's connections.
#[test]
fn destinations_are_owned_by_one_core() {
    let sink = Sink::start();
    let d = relay_daemon(
        &sink,
        "corepost_cores = 2\nsmtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 10s\n",
    );
    let port = d.port;
    let senders: Vec<_> = (0..8)
        .map(|t| {
            std::thread::spawn(move || {
                for i in 0..5 {
                    submit(
                        port,
                        "a@example.org",
                        &["x@remote.example"],
                        &format!("Subject: {t}-{i}\r\n\r\nhi"),
                    );
                }
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let got = sink.wait_for(40, 30);
    assert_eq!(got.messages.len(), 40, "{}", d.log());
    // One owner core, at most 2 connections at a time; a few more over the
    // run as idle ones expire is fine, one per message is not.
    assert!(
        got.connections <= 8,
        "{} connections for 40 messages",
        got.connections
    );
}

#[test]
fn connection_reuse_count_limit() {
    let sink = Sink::start();
    let d = relay_daemon(
        &sink,
        "corepost_cores = 1\nsmtp_destination_concurrency_limit = 1\nsmtp_connection_reuse_count_limit = 2\nsmtp_connection_cache_time_limit = 10s\n",
    );
    for i in 0..6 {
        submit(
            d.port,
            "a@example.org",
            &["x@remote.example"],
            &format!("Subject: {i}\r\n\r\nhi"),
        );
    }
    let got = sink.wait_for(6, 20);
    assert_eq!(got.messages.len(), 6, "{}", d.log());
    assert!(
        got.connections >= 3,
        "{} connections for 6 messages at 2 per connection",
        got.connections
    );
}

#[test]
fn destination_policy_rate_is_honoured() {
    let sink = Sink::start();
    let d = relay_daemon(
        &sink,
        &format!(
            "corepost_destination_policy_maps = inline:{{ {{ [127.0.0.1]:{}=concurrency=3 rate=4/s }} }}\n",
            sink.port
        ),
    );
    let started = std::time::Instant::now();
    for i in 0..9 {
        submit(
            d.port,
            "a@example.org",
            &["x@remote.example"],
            &format!("Subject: p{i}\r\n\r\nhi"),
        );
    }
    let got = sink.wait_for(9, 20);
    assert_eq!(got.messages.len(), 9, "{}", d.log());
    let elapsed = started.elapsed();
    // 9 messages at 4/s: the last starts at least 2 s after the first.
    assert!(
        elapsed >= std::time::Duration::from_millis(1900),
        "{elapsed:?}"
    );
    assert!(
        got.connections <= 3,
        "{} connections with concurrency=3",
        got.connections
    );
}

#[test]
fn delay_warning_is_sent_once() {
    let sink = Sink::start();
    let d = relay_daemon(&sink, "delay_warning_time = 1s\n");
    let id = submit(
        d.port,
        "sender@example.org",
        &["tempfail@remote.example"],
        "Subject: slow\r\n\r\nhi",
    );
    // First attempt at once (no warning: too young), retries every 1-2 s.
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let (from, rcpts, content) = &got.messages[0];
    assert_eq!(from, "");
    assert_eq!(rcpts, &vec!["sender@example.org".to_string()]);
    let text = String::from_utf8_lossy(content);
    assert!(text.contains("Action: delayed"), "{text}");
    assert!(text.contains("tempfail@remote.example"), "{text}");
    assert!(
        d.log()
            .contains(&format!("{id}: sender delay notification:")),
        "{}",
        d.log()
    );
    // Further retries do not warn again.
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(sink.snapshot().messages.len(), 1, "one warning only");
}

/// `qmgr_message_active_limit` bounds the messages being delivered at once
/// (across the cores), as it bounds Postfix's active queue: ten messages
/// to a next hop that takes 200 ms per message, two at a time, take at
/// least a second; unbounded they would all be in flight together.
#[test]
fn the_active_queue_limit_bounds_messages_in_flight() {
    let sink = Sink::start_slow(std::time::Duration::from_millis(200));
    let d = relay_daemon(&sink, "qmgr_message_active_limit = 2\n");
    let started = std::time::Instant::now();
    let senders: Vec<_> = (0..10)
        .map(|i| {
            let port = d.port;
            std::thread::spawn(move || {
                submit(
                    port,
                    "a@example.org",
                    &[&format!("n{i}@remote.example")],
                    "Subject: active\r\n\r\nbody",
                )
            })
        })
        .collect();
    for s in senders {
        s.join().unwrap();
    }
    let got = sink.wait_for(10, 30);
    assert_eq!(got.messages.len(), 10, "{}", d.log());
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900),
        "10 deliveries of 200 ms, 2 at a time, took {took:?}"
    );
}

/// `destination_concurrency_feedback_debug = yes` logs each change of a
/// destination's concurrency window, as Postfix's qmgr does.
#[test]
fn feedback_debug_logs_window_changes() {
    let dead = free_port(); // nothing listens there
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{dead}\ndestination_concurrency_feedback_debug = yes\n"
    ));
    submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: fb\r\n\r\nbody",
    );
    let line = wait_until(20, || {
        d.log()
            .lines()
            .find(|l| l.contains("qmgr_queue_throttle: queue "))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no feedback line:\n{}", d.log()));
    assert!(
        line.contains("corepost/qmgr[")
            && line.contains(&format!(
                "queue smtp:[127.0.0.1]:{dead}: limit 20 window 4 success 0 failure 0 fail_cohorts 0.25"
            )),
        "{line}"
    );
}
