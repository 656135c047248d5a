//! Traffic shaping by provider and adaptive backoff end to end (`corepost_shaping_files`):
//! the loopback test DNS server gives `a.example`, `b.example` and `c.example` MX hosts under
//! `bigmail.test` (one provider) and `other.example` one elsewhere, all on the test sink;
//! transport_maps sends each domain to the sink's port with its MX lookup kept.

mod support;

use corepost::dns::testserver::TestServer;
use std::io::{Read, Write};
use std::time::{Duration, Instant};
use support::*;

const PROVIDER: [&str; 3] = ["a.example", "b.example", "c.example"];

fn dns() -> TestServer {
    let dns = TestServer::start().expect("test dns");
    for (i, d) in PROVIDER.iter().enumerate() {
        let mx = format!("mx{i}.in.bigmail.test");
        dns.add_mx(d, 60, 10, &mx);
        dns.add_a(&mx, 60, "127.0.0.1".parse().unwrap());
    }
    dns.add_mx("other.example", 60, 10, "mx.elsewhere.test");
    dns.add_a("mx.elsewhere.test", 60, "127.0.0.1".parse().unwrap());
    dns
}

/// A daemon whose shaping table is `table` (the provider `bigmail` is prepended); the
/// table's directory lives as long as the daemon.
fn daemon(dns: &TestServer, sink: &Sink, table: &str, extra: &str) -> (Daemon, tempfile::TempDir) {
    let tables = tempfile::tempdir().expect("tmp");
    let path = tables.path().join("shaping.conf");
    std::fs::write(
        &path,
        format!("[provider bigmail]\nmx = .bigmail.test\n{table}"),
    )
    .expect("table");
    let routes: Vec<String> = PROVIDER
        .iter()
        .chain(&["other.example"])
        .map(|d| format!("{d}=smtp:{d}:{}", sink.port))
        .collect();
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\ninet_protocols = ipv4\ntransport_maps = inline:{{ {} }}\n\
         corepost_shaping_files = {}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{extra}",
        dns.addr(),
        routes.join(", "),
        path.display()
    ));
    (d, tables)
}

fn send(d: &Daemon, to: &str) -> String {
    let id = submit(
        d.port,
        "sender@other.example",
        &[to],
        "Subject: shaping\r\n\r\nhello",
    );
    assert!(!id.is_empty(), "not queued: {to}");
    id
}

fn log_with(d: &Daemon, what: &str, secs: u64) -> String {
    wait_until(secs, || {
        let log = d.log();
        log.contains(what).then_some(log)
    })
    .unwrap_or_else(|| panic!("no \"{what}\" in the log:\n{}", d.log()))
}

/// When the sink got the MAIL FROM of the message for `rcpt`.
fn arrival(sink: &Sink, rcpt: &str) -> Option<Instant> {
    let got = sink.snapshot();
    got.messages
        .iter()
        .zip(&got.mail_times)
        .find(|(m, _)| m.1.iter().any(|r| r == rcpt))
        .map(|(_, t)| *t)
}

fn status(d: &Daemon) -> String {
    stdout(&corepost(&["status", "-c", &d.config_dir()]))
}

fn metrics(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read metrics");
    reply
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

#[test]
fn the_providers_domains_share_one_connection_limit() {
    let sink = Sink::start_slow(Duration::from_millis(300));
    let dns = dns();
    let (d, _t) = daemon(&dns, &sink, "connection_limit = 2\n", "");
    let mut rcpts = Vec::new();
    for i in 0..4 {
        for domain in PROVIDER {
            rcpts.push(format!("user{i}@{domain}"));
        }
    }
    for r in &rcpts {
        send(&d, r);
    }
    let got = sink.wait_for(rcpts.len(), 60);
    assert_eq!(got.messages.len(), rcpts.len(), "{}", d.log());
    // Three destinations, each allowed several connections by the transport, but never
    // more than the provider's two at once.
    assert!(
        (1..=2).contains(&got.max_open),
        "{} connections at once",
        got.max_open
    );
}

#[test]
fn the_providers_rate_holds_across_its_domains() {
    let sink = Sink::start();
    let dns = dns();
    let (d, _t) = daemon(&dns, &sink, "message_rate = 4/s\n", "");
    let mut rcpts = Vec::new();
    for i in 0..3 {
        for domain in PROVIDER {
            rcpts.push(format!("user{i}@{domain}"));
        }
    }
    for r in &rcpts {
        send(&d, r);
    }
    let got = sink.wait_for(rcpts.len(), 60);
    assert_eq!(got.messages.len(), rcpts.len(), "{}", d.log());
    // 9 messages at 4/s: the first at once, the last two seconds later; a late timer can
    // bring two starts closer, never more than 4 (plus one at the edge) into one second.
    let mut times = got.mail_times.clone();
    times.sort();
    let span = times[times.len() - 1] - times[0];
    assert!(
        span >= Duration::from_millis(1900),
        "9 messages in {span:?}"
    );
    for (i, t) in times.iter().enumerate() {
        let within = times[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(within <= 5, "{within} messages within a second: {times:?}");
    }
}

const RATE_LIMITED: &str = "450 4.7.28 Our system has detected an unusual rate of unsolicited mail originating from your IP address, rate limited";

#[test]
fn a_throttling_reply_lowers_the_rate_until_the_rule_ends() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            replies: &[("throttled", RATE_LIMITED, 1)],
            ..SinkOptions::default()
        },
    );
    let dns = dns();
    let port = free_port();
    let (d, _t) = daemon(
        &dns,
        &sink,
        "rule = 4xx 4.7.28 (?i)rate limited => throttle connection_limit=1 message_rate=2/s for 8s\n",
        &format!("corepost_metrics_address = 127.0.0.1:{port}\n"),
    );
    send(&d, "throttled@a.example");
    let log = log_with(&d, "shaping: bigmail: throttle", 20);
    assert!(
        log.contains("corepost/qmgr[")
            && log.contains(
                "shaping: bigmail: throttle connection_limit=1 message_rate=2/s for 8s (rule "
            )
            && log.contains("shaping.conf:3, after a.example said: 450 4.7.28 Our system"),
        "{log}"
    );
    // While it lasts, the provider's messages are 500 ms apart (2/s).
    let rcpts = ["one@b.example", "two@c.example", "three@b.example"];
    for r in rcpts {
        send(&d, r);
    }
    let shown = status(&d);
    assert!(
        shown.contains("/1, connection_limit=1 message_rate=2/s\n")
            && shown.contains("shaping: bigmail: throttle connection_limit=1 message_rate=2/s, "),
        "{shown}"
    );
    let scraped = metrics(port);
    for line in [
        "corepost_shaping_actions_active{group=\"bigmail\",action=\"throttle\"} 1",
        "corepost_shaping_triggers_total{group=\"bigmail\",action=\"throttle\"} 1",
        "corepost_shaping_message_rate_limit{group=\"bigmail\"} 7200",
        "corepost_shaping_connection_limit{group=\"bigmail\"} 1",
    ] {
        assert!(has_line(&scraped, line), "{line} missing:\n{scraped}");
    }
    let mut times: Vec<Instant> = wait_until(20, || {
        let t: Vec<Instant> = rcpts.iter().filter_map(|r| arrival(&sink, r)).collect();
        (t.len() == rcpts.len()).then_some(t)
    })
    .unwrap_or_else(|| panic!("not delivered:\n{}", d.log()));
    times.sort();
    let span = times[2] - times[0];
    assert!(span >= Duration::from_millis(950), "3 messages in {span:?}");
    log_with(&d, "shaping: bigmail: throttle ended after 8s (rule ", 20);
    let shown = status(&d);
    assert!(!shown.contains("throttle"), "{shown}");
    let scraped = metrics(port);
    assert!(
        has_line(
            &scraped,
            "corepost_shaping_actions_active{group=\"bigmail\",action=\"throttle\"} 0"
        ) && !scraped.contains("corepost_shaping_message_rate_limit{"),
        "{scraped}"
    );
    // The deferred message goes out on its next attempt.
    assert!(wait_until(20, || arrival(&sink, "throttled@a.example")).is_some());
}

#[test]
fn a_suspend_rule_keeps_the_mail_queued_until_the_period_ends() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            replies: &[(
                "complaints",
                "451 4.7.0 [TSS04] Messages from 127.0.0.1 temporarily deferred due to unexpected volume or user complaints",
                1,
            )],
            ..SinkOptions::default()
        },
    );
    let dns = dns();
    let (d, _t) = daemon(
        &dns,
        &sink,
        "rule = 4xx (?i)\\bTSS04\\b => suspend for 3s\n",
        "",
    );
    let t0 = Instant::now();
    send(&d, "complaints@a.example");
    log_with(&d, "shaping: bigmail: suspend for 3s (rule ", 20);
    // Another domain of the provider: deferred without connecting, kept queued.
    send(&d, "ok@b.example");
    let log = log_with(&d, "to=<ok@b.example>", 20);
    assert!(
        log.contains("relay=none")
            && log
                .contains("dsn=4.7.0, status=deferred (delivery to provider bigmail suspended for")
            && log.contains("by shaping rule "),
        "{log}"
    );
    // A destination of no provider is not held up.
    send(&d, "ok@other.example");
    let other = wait_until(20, || arrival(&sink, "ok@other.example")).expect("other.example");
    assert!(other - t0 < Duration::from_secs(3), "{:?}", other - t0);
    log_with(&d, "shaping: bigmail: suspend ended after 3s", 20);
    let delivered = wait_until(20, || arrival(&sink, "ok@b.example"))
        .unwrap_or_else(|| panic!("not delivered:\n{}", d.log()));
    assert!(
        delivered - t0 >= Duration::from_millis(2900),
        "delivered {:?} after the trigger",
        delivered - t0
    );
}

#[test]
fn a_bounce_rule_returns_the_providers_queued_mail_with_a_dsn() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            replies: &[(
                "blocked",
                "550 5.7.1 Service unavailable, client host blocked",
                0,
            )],
            ..SinkOptions::default()
        },
    );
    let dns = dns();
    let (d, _t) = daemon(
        &dns,
        &sink,
        "rule = 5xx 5.7.1 (?i)blocked => bounce for 30s\n",
        "",
    );
    send(&d, "blocked@a.example");
    log_with(&d, "shaping: bigmail: bounce for 30s (rule ", 20);
    let id = send(&d, "ok@c.example");
    let log = log_with(&d, "to=<ok@c.example>", 20);
    assert!(
        log.contains(
            "dsn=5.7.1, status=bounced (delivery to provider bigmail refused by shaping rule "
        ) && log.contains(&format!("{id}: sender non-delivery notification")),
        "{log}"
    );
    // The notice goes to the sender (at other.example, not shaped) and names the recipient.
    let dsn = wait_until(20, || {
        sink.snapshot().messages.into_iter().find(|m| {
            m.0.is_empty()
                && m.1 == ["sender@other.example"]
                && String::from_utf8_lossy(&m.2).contains("ok@c.example")
        })
    })
    .unwrap_or_else(|| panic!("no notice:\n{}", d.log()));
    let text = String::from_utf8_lossy(&dsn.2);
    assert!(
        text.contains("Final-Recipient: rfc822; ok@c.example") && text.contains("Status: 5.7.1"),
        "{text}"
    );
    assert!(arrival(&sink, "ok@c.example").is_none());
}

#[test]
fn check_refuses_a_bad_table_naming_its_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("shaping.conf");
    std::fs::write(
        &table,
        "[provider big]\nmx = .big.test\nrule = 421 => slow-down for 1m\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "queue_directory = {0}/spool\nalias_maps =\nalias_database =\ncorepost_shaping_files = builtin, {1}\n",
            dir.path().display(),
            table.display()
        ),
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir.path().display().to_string()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}, line 3: unknown action \"slow-down\"",
            table.display()
        )),
        "{err}"
    );
}

/// A child process killed when dropped.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis_server(port: u16) -> Killed {
    let child = std::process::Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let k = Killed(child);
    wait_until(10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .expect("redis-server listens");
    k
}

#[test]
fn two_nodes_share_the_providers_connection_limit_through_redis() {
    let redis_port = free_port();
    let _redis = redis_server(redis_port);
    let sink = Sink::start_slow(Duration::from_millis(200));
    let dns = dns();
    let shared = format!(
        "corepost_shared_throttle_redis = redis://127.0.0.1:{redis_port}\ncorepost_shared_throttle_lease_time = 3s\n"
    );
    let (one, _t1) = daemon(&dns, &sink, "connection_limit = 1\n", &shared);
    let (two, _t2) = daemon(&dns, &sink, "connection_limit = 1\n", &shared);
    for i in 0..3 {
        send(&one, &format!("one{i}@a.example"));
        send(&two, &format!("two{i}@b.example"));
    }
    let got = sink.wait_for(6, 60);
    assert_eq!(got.messages.len(), 6, "{}\n{}", one.log(), two.log());
    // Each node alone allows one connection: together still one.
    assert_eq!(got.max_open, 1);
}

#[test]
fn the_providers_backoff_times_replace_main_cf_ones() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            replies: &[("busy", "450 4.2.1 try again later", 1)],
            ..SinkOptions::default()
        },
    );
    let dns = dns();
    let (d, _t) = daemon(
        &dns,
        &sink,
        "minimal_backoff_time = 1s\nmaximal_backoff_time = 1s\n",
        "minimal_backoff_time = 300s\nmaximal_backoff_time = 300s\n",
    );
    let t0 = Instant::now();
    send(&d, "busy@a.example");
    log_with(&d, "to=<busy@a.example>", 20);
    // main.cf would wait 300 s; the provider's table says 1 s.
    let delivered = wait_until(20, || arrival(&sink, "busy@a.example"))
        .unwrap_or_else(|| panic!("not retried:\n{}", d.log()));
    assert!(
        delivered - t0 >= Duration::from_millis(900),
        "{:?}",
        delivered - t0
    );
}

#[test]
fn a_reload_applies_a_second_table_over_the_first() {
    let sink = Sink::start();
    let dns = dns();
    let (d, tables) = daemon(&dns, &sink, "connection_limit = 3\n", "");
    send(&d, "first@a.example");
    sink.wait_for(1, 20);
    let shown = wait_until(10, || {
        let s = status(&d);
        s.contains("shaping: bigmail: connections").then_some(s)
    })
    .expect("status");
    assert!(shown.contains("/3, connection_limit=3\n"), "{shown}");
    // The operator's own file, after the first, lowers the limit.
    let local = tables.path().join("local.conf");
    std::fs::write(&local, "[provider bigmail]\nconnection_limit = 1\n").unwrap();
    let main = std::path::Path::new(&d.config_dir()).join("main.cf");
    let text = std::fs::read_to_string(&main).unwrap();
    let first = tables.path().join("shaping.conf");
    let edited = text.replace(
        &format!("corepost_shaping_files = {}", first.display()),
        &format!(
            "corepost_shaping_files = {}, {}",
            first.display(),
            local.display()
        ),
    );
    assert_ne!(text, edited);
    std::fs::write(&main, edited).unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(10, || d.log().contains("reload -- version").then_some(()))
        .unwrap_or_else(|| panic!("no reload:\n{}", d.log()));
    send(&d, "second@b.example");
    sink.wait_for(2, 20);
    let shown = wait_until(10, || {
        let s = status(&d);
        s.contains("/1, connection_limit=1\n").then_some(s)
    });
    assert!(shown.is_some(), "{}", status(&d));
}
