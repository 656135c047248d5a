//! Prometheus metrics end to end: `corepost_metrics_address` on a loopback port, a mixed
//! workload (delivered to a sink, a rejected RCPT, a bounce from a 5xx, a deferral to a dead
//! next hop), then `/metrics` scraped over HTTP and its counters checked. The exposition
//! text is parsed (names, labels, values), not searched for substrings.

mod support;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use support::*;

/// One sample: metric name and its labels.
type Key = (String, BTreeMap<String, String>);

/// Parse the Prometheus text format: `name{a="x",b="y"} value` lines, comments skipped.
fn parse(text: &str) -> BTreeMap<Key, f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').expect("name and value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("closing brace");
                (name.to_string(), parse_labels(body))
            }
        };
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "metric name {name}"
        );
        assert!(
            out.insert((name, labels), value).is_none(),
            "duplicate series {line}"
        );
    }
    out
}

/// `a="x",b="y\"z"` into a map.
fn parse_labels(body: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = body.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "quoted value after {key}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => panic!("dangling escape"),
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key, value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// GET `path` over HTTP/1.1: (status line, headers and body).
fn http_get(port: u16, path: &str) -> (String, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect metrics");
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("read reply");
    let (head, body) = reply.split_once("\r\n\r\n").expect("head and body");
    (head.to_string(), body.to_string())
}

fn scrape(port: u16) -> BTreeMap<Key, f64> {
    let (head, body) = http_get(port, "/metrics");
    assert!(head.starts_with("HTTP/1.1 200 OK"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    parse(&body)
}

/// The value of `name` with exactly these labels (0 when absent).
fn value(m: &BTreeMap<Key, f64>, name: &str, labels: &[(&str, &str)]) -> f64 {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    m.get(&(name.to_string(), labels)).copied().unwrap_or(0.0)
}

/// The sum of `name` over every series.
fn sum(m: &BTreeMap<Key, f64>, name: &str) -> f64 {
    m.iter()
        .filter(|((n, _), _)| n == name)
        .map(|(_, v)| *v)
        .sum()
}

#[test]
fn counters_after_a_mixed_workload() {
    let sink = Sink::start();
    let dead = free_port(); // nothing listens there
    let metrics = free_port();
    let tables = tempfile::tempdir().unwrap();
    let policy = tables.path().join("policy");
    std::fs::write(
        &policy,
        format!("[127.0.0.1]:{} concurrency=4\n", sink.port),
    )
    .unwrap();
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\n\
         transport_maps = inline:{{ dead.example=smtp:[127.0.0.1]:{dead} }}\n\
         corepost_destination_policy_maps = texthash:{}\n\
         corepost_metrics_address = 127.0.0.1:{metrics}\n",
        sink.port,
        policy.display()
    ));
    // Delivered: two recipients; a third, unknown, is rejected at RCPT.
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@remote.example>").starts_with("250"));
    let rejected = c.cmd("RCPT TO:<nobody@mx.test.example>");
    assert!(rejected.starts_with("550 5.1.1"), "{rejected}");
    assert!(c.cmd("RCPT TO:<y@remote.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: delivered\r\n\r\nhello\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    c.cmd("QUIT");
    // Bounced by the sink's 550 (its notice to a@example.org is delivered to the sink too).
    submit(
        d.port,
        "a@example.org",
        &["permfail@remote.example"],
        "Subject: bounce\r\n\r\nx",
    );
    // Deferred: its next hop refuses connections.
    submit(
        d.port,
        "a@example.org",
        &["u@dead.example"],
        "Subject: deferred\r\n\r\nx",
    );

    let sink_dest = format!("[127.0.0.1]:{}", sink.port);
    let m = wait_until(30, || {
        let m = scrape(metrics);
        let done = value(&m, "corepost_messages_removed_total", &[]) >= 3.0
            && value(&m, "corepost_queue_messages", &[("queue", "deferred")]) >= 1.0
            && sum(&m, "corepost_smtpd_sessions_open") == 0.0;
        done.then_some(m)
    })
    .unwrap_or_else(|| {
        panic!(
            "metrics never settled:\n{}\nlog:\n{}",
            http_get(metrics, "/metrics").1,
            d.log()
        )
    });

    let smtpd = [("source", "smtpd")];
    assert_eq!(value(&m, "corepost_messages_received_total", &smtpd), 3.0);
    assert_eq!(value(&m, "corepost_recipients_received_total", &smtpd), 4.0);
    assert!(value(&m, "corepost_received_bytes_total", &smtpd) > 100.0);
    assert_eq!(
        value(
            &m,
            "corepost_messages_received_total",
            &[("source", "pickup")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "corepost_smtpd_rejects_total",
            &[
                ("command", "RCPT"),
                ("class", "address"),
                ("severity", "permanent")
            ]
        ),
        1.0
    );
    assert_eq!(sum(&m, "corepost_smtpd_rejects_total"), 1.0);
    // The sink's destination has a policy entry: its own label. The dead one is "other".
    let sent = |status: &str, dest: &str| {
        value(
            &m,
            "corepost_deliveries_total",
            &[
                ("transport", "smtp"),
                ("destination", dest),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        sent("sent", &sink_dest),
        3.0,
        "two recipients and the bounce notice"
    );
    assert_eq!(sent("bounced", &sink_dest), 1.0);
    assert!(sent("deferred", "other") >= 1.0);
    assert_eq!(sent("sent", "other"), 0.0);
    assert_eq!(
        value(&m, "corepost_messages_total", &[("status", "bounced")]),
        1.0
    );
    assert_eq!(
        value(&m, "corepost_messages_total", &[("status", "delivered")]),
        2.0
    );
    assert!(value(&m, "corepost_messages_total", &[("status", "deferred")]) >= 1.0);
    assert_eq!(value(&m, "corepost_messages_removed_total", &[]), 3.0);
    let conns = |dest: &str, result: &str| {
        value(
            &m,
            "corepost_connections_total",
            &[
                ("transport", "smtp"),
                ("destination", dest),
                ("result", result),
            ],
        )
    };
    assert!(conns(&sink_dest, "ok") >= 1.0);
    assert_eq!(conns(&sink_dest, "failed"), 0.0);
    assert!(conns("other", "failed") >= 1.0);
    let bytes = value(
        &m,
        "corepost_sent_bytes_total",
        &[("transport", "smtp"), ("destination", &sink_dest)],
    );
    assert!(bytes > 100.0, "{bytes}");
    assert!(value(&m, "corepost_smtpd_sessions_total", &[]) >= 3.0);
    assert_eq!(
        m.keys()
            .filter(|(n, _)| n == "corepost_smtpd_sessions_open")
            .count(),
        2,
        "one gauge per core"
    );
    // Queue: only the deferred message is left.
    assert_eq!(
        value(&m, "corepost_queue_messages", &[("queue", "deferred")]),
        1.0
    );
    assert_eq!(
        value(&m, "corepost_queue_messages", &[("queue", "active")]),
        0.0
    );
    assert_eq!(
        value(&m, "corepost_queue_messages", &[("queue", "hold")]),
        0.0
    );
    assert_eq!(
        value(&m, "corepost_queue_messages", &[("queue", "maildrop")]),
        0.0
    );
    assert!(value(&m, "corepost_spool_bytes", &[("kind", "live")]) > 0.0);
    assert!(
        value(&m, "corepost_spool_bytes", &[("kind", "allocated")])
            >= value(&m, "corepost_spool_bytes", &[("kind", "live")])
    );
    // Group commits: every queued message and outcome was synced; the histogram is whole.
    let syncs = value(&m, "corepost_spool_syncs_total", &[]);
    assert!(syncs >= 3.0, "{syncs}");
    assert_eq!(value(&m, "corepost_spool_sync_seconds_count", &[]), syncs);
    assert_eq!(
        value(&m, "corepost_spool_sync_seconds_bucket", &[("le", "+Inf")]),
        syncs
    );
    assert_eq!(
        value(
            &m,
            "corepost_anvil_rejections_total",
            &[("limit", "connection_count")]
        ),
        0.0
    );
    assert_eq!(
        value(
            &m,
            "corepost_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    // Only /metrics is served.
    assert!(http_get(metrics, "/").0.starts_with("HTTP/1.1 404"));
}

#[test]
fn check_rejects_a_malformed_address_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "queue_directory = {}/spool\nalias_maps =\nalias_database =\ncorepost_metrics_address = 127.0.0.1\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("master.cf"), "").unwrap();
    let out = corepost(&["check", "-c", &dir.path().display().to_string()]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!(
            "{}, line 4: parameter corepost_metrics_address: bad address \"127.0.0.1\": no port",
            dir.path().join("main.cf").display()
        )),
        "{err}"
    );
}

#[test]
fn a_taken_address_stops_the_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "queue_directory = {0}/spool\nmail_owner = root\nalias_maps =\nalias_database =\ncorepost_cores = 1\nmaillog_file = {0}/maillog\nmaillog_file_prefixes = /\ncorepost_metrics_address = 127.0.0.1:{port}\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("master.cf"),
        format!("127.0.0.1:{} inet n - n - - smtpd\n", free_port()),
    )
    .unwrap();
    let out = std::process::Command::new(corepost_bin())
        .args(["run", "-c", &dir.path().display().to_string()])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let log = std::fs::read_to_string(dir.path().join("maillog")).unwrap_or_default();
    assert!(
        log.contains(&format!(
            "fatal: corepost_metrics_address = 127.0.0.1:{port}: "
        )),
        "{log}{}",
        stderr(&out)
    );
}

#[test]
fn a_reload_that_changes_the_address_warns_and_keeps_the_endpoint() {
    let metrics = free_port();
    let d = Daemon::start(&format!("corepost_metrics_address = 127.0.0.1:{metrics}\n"));
    let main_cf = d.dir.path().join("main.cf");
    let other = free_port();
    let text = std::fs::read_to_string(&main_cf).unwrap().replace(
        &format!("corepost_metrics_address = 127.0.0.1:{metrics}"),
        &format!("corepost_metrics_address = 127.0.0.1:{other}"),
    );
    std::fs::write(&main_cf, text).unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let warning = format!(
        "warning: corepost_metrics_address changed to 127.0.0.1:{other}: metrics stay on 127.0.0.1:{metrics} until corepost is restarted"
    );
    let logged = wait_until(5, || d.log().contains(&warning).then_some(()));
    assert!(logged.is_some(), "{}", d.log());
    // Still served where it was; nothing on the new address.
    assert!(
        scrape(metrics)
            .contains_key(&("corepost_smtpd_sessions_total".to_string(), BTreeMap::new()))
    );
    assert!(std::net::TcpStream::connect(("127.0.0.1", other)).is_err());
}

/// A self-signed certificate for smtpd, written into `dir`: (cert, key) paths.
fn make_cert(dir: &std::path::Path) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec!["mx.test.example".to_string()]).expect("rcgen");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).expect("cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("key");
    (cert.display().to_string(), key.display().to_string())
}

#[test]
fn dns_tls_and_anvil_are_counted() {
    use corepost::delivery::testsink::{SinkScript, TestSink};
    let sink = TestSink::start(SinkScript {
        starttls: true,
        ..SinkScript::default()
    })
    .expect("sink");
    let dns = corepost::dns::testserver::TestServer::start().expect("test dns");
    dns.add_mx("tls.test", 60, 10, "mx.tls.test");
    dns.add_a("mx.tls.test", 60, "127.0.0.1".parse().unwrap());
    let certs = tempfile::tempdir().unwrap();
    let (cert, key) = make_cert(certs.path());
    let metrics = free_port();
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\n\
         transport_maps = inline:{{ tls.test=smtp:tls.test:{} }}\n\
         smtp_tls_security_level = encrypt\n\
         smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n\
         smtpd_client_connection_count_limit = 1\nsmtpd_client_event_limit_exceptions =\n\
         message_size_limit = 4000\n\
         corepost_metrics_address = 127.0.0.1:{metrics}\n",
        dns.addr(),
        sink.addr().port()
    ));
    // smtpd's side of a handshake.
    let (ok, out) = python(&format!(
        "import smtplib, ssl\nctx = ssl._create_unverified_context()\n\
         s = smtplib.SMTP('127.0.0.1', {})\ns.starttls(context=ctx)\ns.ehlo()\ns.quit()\n",
        d.port
    ));
    assert!(ok, "{out}");
    // The client's side, after an MX and an A lookup.
    submit(
        d.port,
        "a@example.org",
        &["u@tls.test"],
        "Subject: tls\r\n\r\nhi",
    );
    // Too big: rejected at the end of DATA.
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<u@tls.test>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "x".repeat(5000)).as_bytes());
    let big = c.reply();
    assert!(big.starts_with("552 5.3.4"), "{big}");
    c.cmd("QUIT");
    drop(c);
    // A second connection while one is open: anvil's connection count refuses it.
    // (The session above may not have ended on the server yet: until it has,
    // the first connection is the one refused.)
    let mut refused_early = 0.0;
    let _first = wait_until(10, || {
        let (raw, greeting) = Raw::open_from(d.port, "127.0.0.1");
        refused_early += f64::from(u8::from(!greeting.starts_with("220 ")));
        greeting.starts_with("220 ").then_some(raw)
    })
    .expect("a connection once the previous session ended");
    let (_second, greeting) = Raw::open_from(d.port, "127.0.0.1");
    assert!(greeting.starts_with("421 4.7.0"), "{greeting}");

    let m = wait_until(30, || {
        let m = scrape(metrics);
        (value(&m, "corepost_messages_removed_total", &[]) >= 1.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("not delivered; log:\n{}", d.log()));
    let tls = |side: &str, result: &str| {
        value(
            &m,
            "corepost_tls_handshakes_total",
            &[("side", side), ("result", result)],
        )
    };
    assert_eq!(tls("server", "ok"), 1.0);
    assert_eq!(tls("client", "ok"), 1.0);
    assert_eq!(tls("server", "failed") + tls("client", "failed"), 0.0);
    let dns_lookups = |result: &str| value(&m, "corepost_dns_lookups_total", &[("result", result)]);
    assert!(dns_lookups("miss") >= 2.0, "MX and A at least");
    assert!(value(&m, "corepost_dns_queries_total", &[]) >= dns_lookups("miss"));
    assert_eq!(
        value(
            &m,
            "corepost_anvil_rejections_total",
            &[("limit", "connection_count")]
        ),
        1.0 + refused_early
    );
    let too_big = [
        ("command", "DATA"),
        ("class", "system"),
        ("severity", "permanent"),
    ];
    assert_eq!(value(&m, "corepost_smtpd_rejects_total", &too_big), 1.0);
    assert_eq!(
        value(
            &m,
            "corepost_deliveries_total",
            &[
                ("transport", "smtp"),
                ("destination", "other"),
                ("status", "sent")
            ]
        ),
        1.0
    );
}

/// `sendmail -C <config> -f a@example.org rcpt` with a short message, through a `sendmail`
/// link to the corepost binary.
fn sendmail(d: &Daemon, rcpt: &str) {
    use std::process::{Command, Stdio};
    let link = d.dir.path().join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    }
    let mut child = Command::new(&link)
        .args(["-C", &d.config_dir(), "-f", "a@example.org", rcpt])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sendmail");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"Subject: local\n\nhello\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn maildrop_and_pickup_are_counted() {
    let sink = Sink::start();
    // Without a pickup service the submission waits in the maildrop.
    let metrics = free_port();
    let d = Daemon::start(&format!("corepost_metrics_address = 127.0.0.1:{metrics}\n"));
    sendmail(&d, "x@remote.example");
    let m = scrape(metrics);
    assert_eq!(
        value(&m, "corepost_queue_messages", &[("queue", "maildrop")]),
        1.0
    );
    assert_eq!(
        value(
            &m,
            "corepost_messages_received_total",
            &[("source", "pickup")]
        ),
        0.0
    );
    drop(d);
    // With one, it is queued and delivered.
    let metrics = free_port();
    let d = Daemon::start_with_master_lines(
        &format!(
            "relayhost = [127.0.0.1]:{}\ncorepost_metrics_address = 127.0.0.1:{metrics}\n",
            sink.port
        ),
        "pickup unix n - n 60 1 pickup\n",
    );
    sendmail(&d, "x@remote.example");
    let m = wait_until(20, || {
        let m = scrape(metrics);
        (value(&m, "corepost_messages_removed_total", &[]) == 1.0).then_some(m)
    })
    .unwrap_or_else(|| panic!("not delivered; log:\n{}", d.log()));
    let pickup = [("source", "pickup")];
    assert_eq!(value(&m, "corepost_messages_received_total", &pickup), 1.0);
    assert_eq!(
        value(&m, "corepost_recipients_received_total", &pickup),
        1.0
    );
    assert!(value(&m, "corepost_received_bytes_total", &pickup) > 0.0);
    assert_eq!(
        value(
            &m,
            "corepost_messages_received_total",
            &[("source", "smtpd")]
        ),
        0.0
    );
    assert_eq!(
        value(&m, "corepost_queue_messages", &[("queue", "maildrop")]),
        0.0
    );
}

#[test]
fn expiry_is_counted() {
    // maximal_queue_lifetime = 0: one attempt, then the message is returned to its sender;
    // the notice (null sender, bounce_queue_lifetime = 0) expires in turn and is dropped.
    let dead = free_port();
    let metrics = free_port();
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{dead}\nmaximal_queue_lifetime = 0\nbounce_queue_lifetime = 0\n\
         corepost_metrics_address = 127.0.0.1:{metrics}\n"
    ));
    submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: expire\r\n\r\nx",
    );
    let m = wait_until(20, || {
        let m = scrape(metrics);
        // Queue sizes are published once a second: wait for the empty queue too.
        let done = value(&m, "corepost_messages_removed_total", &[]) == 2.0
            && sum(&m, "corepost_queue_messages") == 0.0;
        done.then_some(m)
    })
    .unwrap_or_else(|| panic!("not expired; log:\n{}", d.log()));
    let expired = [
        ("transport", "smtp"),
        ("destination", "other"),
        ("status", "expired"),
    ];
    assert_eq!(
        value(&m, "corepost_deliveries_total", &expired),
        2.0,
        "the message and its notice"
    );
    assert_eq!(
        value(&m, "corepost_messages_total", &[("status", "expired")]),
        2.0
    );
    assert_eq!(
        value(&m, "corepost_messages_total", &[("status", "deferred")]),
        0.0
    );
    assert_eq!(sum(&m, "corepost_queue_messages"), 0.0);
}

/// A child of `pid` running as root.
fn root_child(pid: u32) -> Option<u32> {
    let uid = |p: u32| -> Option<u32> {
        std::fs::read_to_string(format!("/proc/{p}/status"))
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    wait_until(10, || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
            .find(|p| uid(*p) == Some(0))
    })
}

#[test]
fn delivery_helper_health() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: delivery helper test skipped: it needs root");
        return;
    }
    let w = tempfile::tempdir().unwrap();
    let root = w.path();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = root.join("carol");
    std::fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(1), Some(1)).unwrap();
    std::fs::write(
        root.join("users"),
        format!("carol carol:x:1:1::{}:/bin/sh\n", home.display()),
    )
    .unwrap();
    let metrics = free_port();
    let d = Daemon::start_unprivileged(
        &format!(
            "corepost_local_user_maps = texthash:{r}/users\nlocal_recipient_maps = $corepost_local_user_maps\n\
             home_mailbox = Maildir/\nminimal_backoff_time = 100s\ncorepost_metrics_address = 127.0.0.1:{metrics}\n",
            r = root.display()
        ),
        "",
    );
    let helper = |m: &BTreeMap<Key, f64>, result: &str| {
        value(
            m,
            "corepost_delivery_helper_requests_total",
            &[("result", result)],
        )
    };
    submit(
        d.port,
        "s@example.org",
        &["carol@mx.test.example"],
        "Subject: 1\r\n\r\nx",
    );
    let m = wait_until(15, || {
        Some(scrape(metrics)).filter(|m| helper(m, "ok") == 1.0)
    })
    .unwrap_or_else(|| panic!("not delivered through the helper; log:\n{}", d.log()));
    assert_eq!(value(&m, "corepost_delivery_helper_up", &[]), 1.0);
    assert_eq!(
        value(
            &m,
            "corepost_deliveries_total",
            &[
                ("transport", "local"),
                ("destination", "other"),
                ("status", "sent")
            ]
        ),
        1.0
    );
    // Without its supervisor the helper is down and deliveries fail over to deferral.
    let supervisor = root_child(d.pid()).expect("the helper: a root child of the daemon");
    // SAFETY: signalling a process this test's daemon started.
    unsafe { libc::kill(supervisor as i32, libc::SIGKILL) };
    let down = wait_until(15, || {
        Some(scrape(metrics)).filter(|m| value(m, "corepost_delivery_helper_up", &[]) == 0.0)
    });
    assert!(down.is_some(), "{}", d.log());
    submit(
        d.port,
        "s@example.org",
        &["carol@mx.test.example"],
        "Subject: 2\r\n\r\nx",
    );
    let m = wait_until(15, || {
        Some(scrape(metrics)).filter(|m| helper(m, "failed") == 1.0)
    })
    .unwrap_or_else(|| panic!("no failed request; log:\n{}", d.log()));
    assert_eq!(helper(&m, "ok"), 1.0);
}

/// A session up to the end of its message's content, the final dot not yet sent.
fn message_before_the_dot(port: u16, n: usize) -> Raw {
    let mut s = Raw::connect(port);
    assert!(s.cmd("EHLO client.test").starts_with("250"));
    assert!(s.cmd("MAIL FROM:<sender@client.test>").starts_with("250"));
    assert!(s.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    assert!(s.cmd("DATA").starts_with("354"));
    s.send(format!("Subject: {n}\r\n\r\nbody {n}\r\n").as_bytes());
    s
}

/// The final dot, and how long the 250 took (a 250 means the sync returned).
fn finish_message(s: &mut Raw) -> std::time::Duration {
    let sent = std::time::Instant::now();
    s.send(b".\r\n");
    let reply = s.reply();
    assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
    sent.elapsed()
}

/// `corepost_commit_delay`: while other sessions are open on the core, a
/// group commit waits the delay, so messages finished within it share one
/// sync; a lone session's message is synced at once.
#[test]
fn messages_of_concurrent_sessions_share_a_delayed_group_commit() {
    let metrics = free_port();
    let d = Daemon::start(&format!(
        "corepost_cores = 1\ncorepost_commit_delay = 1000000\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{{ alice@mx.test.example=HOLD }}, permit_mynetworks, reject\n\
         corepost_metrics_address = 127.0.0.1:{metrics}\n"
    ));
    let syncs = || value(&scrape(metrics), "corepost_spool_syncs_total", &[]);
    let mut sessions: Vec<Raw> = (0..5).map(|n| message_before_the_dot(d.port, n)).collect();
    let before = syncs();
    let first_dot = std::time::Instant::now();
    for s in &mut sessions {
        s.send(b".\r\n");
        std::thread::sleep(std::time::Duration::from_millis(40));
    }
    let replies: Vec<String> = sessions.iter_mut().map(|s| s.reply()).collect();
    let waited = first_dot.elapsed();
    for r in &replies {
        assert!(r.starts_with("250 2.0.0 Ok: queued as "), "{r}");
    }
    // Five dots 40 ms apart: without the delay, five syncs.
    let shared = syncs() - before;
    assert!(
        (1.0..=2.0).contains(&shared),
        "{shared} syncs for 5 messages"
    );
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );
    for mut s in sessions {
        assert!(s.cmd("QUIT").starts_with("221"));
    }
    // Alone on the core (once the others' sessions have ended): no delay.
    let mut alone = message_before_the_dot(d.port, 5);
    wait_until(10, || {
        let open = value(
            &scrape(metrics),
            "corepost_smtpd_sessions",
            &[("core", "0")],
        );
        (open <= 1.0).then_some(())
    })
    .expect("the other sessions end");
    let took = finish_message(&mut alone);
    assert!(took < std::time::Duration::from_millis(500), "{took:?}");
}
