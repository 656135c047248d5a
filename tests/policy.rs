//! smtpd policy end to end: restriction lists and access-table actions,
//! restriction classes, `smtpd_delay_reject` on and off, DNS-based checks
//! against a loopback DNS server, a policy server speaking Postfix's policy
//! delegation protocol, and the per-client limits.

mod support;

use corepost::dns::testserver::{Behaviour, TestServer};
use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex};
use support::*;

/// Error limits high enough that a test can collect many rejections.
const PATIENT: &str = "smtpd_hard_error_limit = 200\nsmtpd_soft_error_limit = 200\n";

fn session(d: &Daemon, source: &str, helo: &str, sender: &str) -> Raw {
    let mut c = Raw::connect_from(d.port, source);
    assert!(c.cmd(&format!("EHLO {helo}")).starts_with("250"));
    assert!(
        c.cmd(&format!("MAIL FROM:<{sender}>")).starts_with("250"),
        "MAIL FROM:<{sender}>"
    );
    c
}

fn send_message(c: &mut Raw, body: &str) -> String {
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("{body}\r\n.\r\n").as_bytes());
    c.reply()
}

#[test]
fn access_tables_reply_texts_and_restriction_classes() {
    let d = Daemon::start(&format!(
        "{PATIENT}smtpd_restriction_classes = no_spam, vip\nno_spam = check_sender_access inline:{{ {{ spammer@example.org=REJECT spam sender }} }}, permit\nvip = permit\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{{ {{ closed@mx.test.example=REJECT 5.7.2 mailbox closed }}, {{ later@mx.test.example=DEFER busy }}, {{ code@mx.test.example=521 5.7.0 never }}, alice@mx.test.example=no_spam, postmaster@mx.test.example=vip }}, reject\n\
         local_recipient_maps = inline:{{ alice=1, postmaster=1, closed=1, later=1, code=1 }}\n"
    ));
    let mut c = session(&d, "127.0.0.2", "client.example", "spammer@example.org");
    assert_eq!(
        c.cmd("RCPT TO:<closed@mx.test.example>"),
        "554 5.7.2 <closed@mx.test.example>: Recipient address rejected: mailbox closed\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<later@mx.test.example>"),
        "450 4.7.1 <later@mx.test.example>: Recipient address rejected: busy\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<code@mx.test.example>"),
        "521 5.7.0 <code@mx.test.example>: Recipient address rejected: never\r\n"
    );
    // A class as the result: its sender check rejects this sender...
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 <spammer@example.org>: Sender address rejected: spam sender\r\n"
    );
    // ... and another class permits.
    assert!(
        c.cmd("RCPT TO:<postmaster@mx.test.example>")
            .starts_with("250")
    );
    c.cmd("RSET");
    c.cmd("MAIL FROM:<friend@example.org>");
    assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    let log = d.log();
    assert!(log.contains("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.2 <closed@mx.test.example>: Recipient address rejected: mailbox closed; from=<spammer@example.org> to=<closed@mx.test.example> proto=ESMTP helo=<client.example>"), "{log}");
}

#[test]
fn access_actions_hold_discard_filter_redirect_prepend_warn() {
    let mut d = Daemon::start(
        "relayhost = [127.0.0.1]:1\nsmtpd_recipient_restrictions = check_recipient_access inline:{ hold.example=HOLD, discard.example=DISCARD, { filter.example=FILTER smtp:[127.0.0.1]:2 }, { redirect.example=REDIRECT trap@example.net }, { prepend.example=PREPEND X-Checked: yes }, { warn.example=WARN just looking } }\n",
    );
    let mut ids = std::collections::HashMap::new();
    for domain in [
        "hold.example",
        "discard.example",
        "filter.example",
        "redirect.example",
        "prepend.example",
        "warn.example",
    ] {
        let mut c = session(&d, "127.0.0.1", "client.example", "a@example.org");
        assert!(
            c.cmd(&format!("RCPT TO:<u@{domain}>")).starts_with("250"),
            "{domain}"
        );
        let reply = send_message(&mut c, "Subject: action\r\n\r\nbody");
        assert!(reply.starts_with("250 2.0.0 Ok: queued as "), "{reply}");
        ids.insert(domain, reply.trim_end()[24..].to_string());
        c.cmd("QUIT");
    }
    let log = d.log();
    for (kind, text) in [
        (
            "hold",
            "<u@hold.example>: Recipient address triggers HOLD action",
        ),
        (
            "discard",
            "<u@discard.example>: Recipient address triggers DISCARD action",
        ),
        (
            "filter",
            "<u@filter.example>: Recipient address triggers FILTER smtp:[127.0.0.1]:2",
        ),
        (
            "redirect",
            "<u@redirect.example>: Recipient address triggers REDIRECT trap@example.net",
        ),
        ("warn", "just looking"),
    ] {
        let line = format!(": {kind}: RCPT from unknown[127.0.0.1]: {text}; from=<a@example.org>");
        assert!(log.contains(&line), "{line}\n{log}");
    }
    assert!(
        log.contains(&format!("{}: discard: ", ids["discard.example"])),
        "{log}"
    );
    d.stop();
    let queued = queued_messages(&d.spool_dir());
    let by_id = |domain: &str| {
        queued
            .iter()
            .find(|(id, _, _)| id.to_string() == ids[domain])
            .unwrap_or_else(|| panic!("{domain} not queued: {queued:?}"))
    };
    assert!(by_id("hold.example").1.held);
    assert!(!by_id("filter.example").1.held);
    assert!(
        !queued
            .iter()
            .any(|(id, _, _)| id.to_string() == ids["discard.example"]),
        "discarded message was queued"
    );
    let filtered = &by_id("filter.example").1.recipients[0];
    assert_eq!(
        (filtered.transport.as_str(), filtered.nexthop.as_str()),
        ("smtp", "[127.0.0.1]:2")
    );
    let redirected: Vec<_> = by_id("redirect.example")
        .1
        .recipients
        .iter()
        .map(|r| r.address.as_str())
        .collect();
    assert_eq!(redirected, vec!["trap@example.net"]);
    let content = String::from_utf8_lossy(&by_id("prepend.example").2).into_owned();
    assert!(
        content.contains("\r\nX-Checked: yes\r\nSubject: action"),
        "{content}"
    );
}

#[test]
fn delay_reject_yes_waits_for_rcpt() {
    let d = Daemon::start(
        "smtpd_client_restrictions = check_client_access inline:{ 127.0.0.2=REJECT }\nsmtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n",
    );
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Access denied\r\n"
    );
    let mut h = Raw::connect_from(d.port, "127.0.0.1");
    assert!(h.cmd("HELO nodots").starts_with("250"));
    assert!(h.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert_eq!(
        h.cmd("RCPT TO:<alice@mx.test.example>"),
        "504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname\r\n"
    );
    assert!(d.log().contains("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Access denied; from=<a@example.org> to=<alice@mx.test.example> proto=ESMTP helo=<client.example>"), "{}", d.log());
}

#[test]
fn delay_reject_no_rejects_at_connect_helo_and_mail() {
    let d = Daemon::start(
        "smtpd_delay_reject = no\nsmtpd_client_restrictions = check_client_access inline:{ 127.0.0.2=REJECT }\nsmtpd_helo_restrictions = reject_non_fqdn_helo_hostname\nsmtpd_sender_restrictions = reject_non_fqdn_sender\n",
    );
    let (mut c, greeting) = Raw::open_from(d.port, "127.0.0.2");
    assert_eq!(
        greeting,
        "554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Access denied\r\n"
    );
    assert_eq!(
        c.cmd("EHLO client.example"),
        "503 5.7.0 Error: access denied for unknown[127.0.0.2]\r\n"
    );
    assert!(c.cmd("QUIT").starts_with("221"));
    let mut h = Raw::connect_from(d.port, "127.0.0.1");
    assert_eq!(
        h.cmd("HELO nodots"),
        "504 5.5.2 <nodots>: Helo command rejected: need fully-qualified hostname\r\n"
    );
    assert!(h.cmd("EHLO client.example").starts_with("250"));
    assert_eq!(
        h.cmd("MAIL FROM:<a@localhost>"),
        "504 5.5.2 <a@localhost>: Sender address rejected: need fully-qualified address\r\n"
    );
    assert!(h.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(h.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    let log = d.log();
    assert!(log.contains("NOQUEUE: reject: CONNECT from unknown[127.0.0.2]: 554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Access denied;"), "{log}");
    assert!(
        log.contains("NOQUEUE: reject: HELO from unknown[127.0.0.1]: 504 5.5.2 <nodots>"),
        "{log}"
    );
}

#[test]
fn data_and_end_of_data_restrictions_and_unauth_pipelining() {
    let d = Daemon::start(
        "smtpd_data_restrictions = reject_unauth_pipelining\nsmtpd_end_of_data_restrictions = check_sender_access inline:{ { late@example.org=REJECT too late } }\n",
    );
    // A client that sends DATA and the message without waiting for 354.
    let mut c = session(&d, "127.0.0.1", "client.example", "a@example.org");
    assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    c.send(b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n");
    assert_eq!(
        c.reply(),
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining\r\n"
    );
    // A well-behaved client passes; end-of-data restrictions see the sender.
    let mut ok = session(&d, "127.0.0.1", "client.example", "a@example.org");
    ok.cmd("RCPT TO:<alice@mx.test.example>");
    assert!(send_message(&mut ok, "Subject: y\r\n\r\nhi").starts_with("250"));
    let mut late = session(&d, "127.0.0.1", "client.example", "late@example.org");
    late.cmd("RCPT TO:<alice@mx.test.example>");
    assert_eq!(
        send_message(&mut late, "Subject: z\r\n\r\nhi"),
        "554 5.7.1 <late@example.org>: Sender address rejected: too late\r\n"
    );
}

fn dns_server() -> TestServer {
    TestServer::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST)).expect("dns test server")
}

#[test]
fn dnsbl_hit_miss_and_temporary_failure() {
    let dns = dns_server();
    // 127.0.0.2 is listed, 127.0.0.3 is listed with a code the filter skips,
    // 127.0.0.4's lookups fail with SERVFAIL, 127.0.0.1 is not listed.
    dns.add_a("2.0.0.127.bl.test", 60, Ipv4Addr::new(127, 0, 0, 2));
    dns.add_txt("2.0.0.127.bl.test", 60, &["listed for testing"]);
    dns.add_a("3.0.0.127.bl.test", 60, Ipv4Addr::new(127, 0, 0, 10));
    dns.set_behaviour("4.0.0.127.bl.test", Behaviour::ServFail);
    dns.add_a("spam.example.rhs.test", 60, Ipv4Addr::new(127, 0, 0, 2));
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\nmynetworks = 127.0.0.0/30\nsmtpd_client_restrictions = reject_rbl_client bl.test=127.0.0.[2..4]\nsmtpd_sender_restrictions = reject_rhsbl_sender rhs.test\n",
        dns.addr()
    ));
    let mut hit = session(&d, "127.0.0.2", "client.example", "a@example.org");
    assert_eq!(
        hit.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 Service unavailable; Client host [127.0.0.2] blocked using bl.test; listed for testing\r\n"
    );
    let mut filtered = session(&d, "127.0.0.3", "client.example", "a@example.org");
    assert!(
        filtered
            .cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250")
    );
    let mut miss = session(&d, "127.0.0.1", "client.example", "a@example.org");
    assert!(
        miss.cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250")
    );
    // An unreachable list is skipped with a warning, as Postfix does
    // ("We can't block all email simply because an RBL server is
    // unavailable").
    let mut fail = session(&d, "127.0.0.4", "client.example", "a@example.org");
    let reply = fail.cmd("RCPT TO:<alice@mx.test.example>");
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(
        d.log().contains("warning: 4.0.0.127.bl.test: RBL lookup error: Host or domain name not found. Name service error for name=4.0.0.127.bl.test type=A: Host not found, try again"),
        "{}",
        d.log()
    );
    let mut rhs = session(&d, "127.0.0.1", "client.example", "x@spam.example");
    assert_eq!(
        rhs.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 Service unavailable; Sender address [spam.example] blocked using rhs.test\r\n"
    );
}

#[test]
fn rbl_reply_maps_and_reject_code() {
    let dns = dns_server();
    dns.add_a("2.0.0.127.bl.test", 60, Ipv4Addr::new(127, 0, 0, 2));
    // Templates live in a table file: main.cf would expand their $names.
    let dir = tempfile::tempdir().unwrap();
    let replies = dir.path().join("rbl_replies");
    std::fs::write(
        &replies,
        "bl.test $rbl_code 5.7.9 see https://bl.test/$client_address ($rbl_class)\n",
    )
    .unwrap();
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\nmaps_rbl_reject_code = 550\nrbl_reply_maps = texthash:{}\nsmtpd_client_restrictions = reject_rbl_client bl.test\n",
        dns.addr(),
        replies.display()
    ));
    let mut c = session(&d, "127.0.0.2", "client.example", "a@example.org");
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "550 5.7.9 see https://bl.test/127.0.0.2 (Client host)\r\n"
    );
}

#[test]
fn client_name_lookup_and_unknown_checks() {
    let dns = dns_server();
    // 127.0.0.1 has a forward-confirmed name; 127.0.0.2's PTR name does not
    // map back; 127.0.0.3 has no PTR at all.
    dns.add_ptr("127.0.0.1".parse().unwrap(), 60, "good.test.example");
    dns.add_a("good.test.example", 60, Ipv4Addr::new(127, 0, 0, 1));
    dns.add_ptr("127.0.0.2".parse().unwrap(), 60, "forged.test.example");
    dns.add_a("forged.test.example", 60, Ipv4Addr::new(192, 0, 2, 1));
    dns.add_a("helo.test.example", 60, Ipv4Addr::new(192, 0, 2, 2));
    dns.add_mx("sender.test.example", 60, 10, "mx.sender.test.example");
    // No hosts file: the machine's /etc/hosts names 127.0.0.1 (these tests
    // ask the test DNS server only).
    let d = Daemon::start(&format!(
        "{PATIENT}corepost_dns_servers = {}\nsmtpd_peername_lookup = yes\ncorepost_hosts_file =\nsmtpd_client_restrictions = reject_unknown_reverse_client_hostname, reject_unknown_client_hostname\nsmtpd_helo_restrictions = reject_unknown_helo_hostname\nsmtpd_sender_restrictions = reject_unknown_sender_domain\nsmtpd_recipient_restrictions = reject_unknown_recipient_domain\nmynetworks = 127.0.0.1/32\n",
        dns.addr()
    ));
    let mut good = session(
        &d,
        "127.0.0.1",
        "helo.test.example",
        "a@sender.test.example",
    );
    assert!(
        good.cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250")
    );
    assert_eq!(
        good.cmd("RCPT TO:<x@nowhere.test.example>"),
        "450 4.1.2 <x@nowhere.test.example>: Recipient address rejected: Domain not found\r\n"
    );
    good.cmd("RSET");
    good.cmd("MAIL FROM:<a@nowhere.test.example>");
    assert_eq!(
        good.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.1.8 <a@nowhere.test.example>: Sender address rejected: Domain not found\r\n"
    );
    let mut badhelo = session(
        &d,
        "127.0.0.1",
        "nohost.test.example",
        "a@sender.test.example",
    );
    assert_eq!(
        badhelo.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.7.1 <nohost.test.example>: Helo command rejected: Host not found\r\n"
    );
    let mut forged = session(
        &d,
        "127.0.0.2",
        "helo.test.example",
        "a@sender.test.example",
    );
    assert_eq!(
        forged.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.2]\r\n"
    );
    let mut nameless = session(
        &d,
        "127.0.0.3",
        "helo.test.example",
        "a@sender.test.example",
    );
    assert_eq!(
        nameless.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.7.25 Client host rejected: cannot find your reverse hostname, [127.0.0.3]\r\n"
    );
    let log = d.log();
    assert!(
        log.contains("connect from good.test.example[127.0.0.1]"),
        "{log}"
    );
    assert!(log.contains("connect from unknown[127.0.0.2]"), "{log}");
}

/// The requests a policy stub read, each a list of (name, value).
type Requests = Arc<Mutex<Vec<Vec<(String, String)>>>>;

/// A policy server speaking Postfix's protocol: answers by recipient local
/// part (`reject...`, `defer...`, `silent...` never answers), records every
/// request it read.
struct PolicyStub {
    requests: Requests,
    connections: Arc<std::sync::atomic::AtomicUsize>,
}

fn serve_policy<S: std::io::Read + Write>(stream: S, requests: Requests) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut attrs = Vec::new();
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end_matches('\n');
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once('=') {
                attrs.push((k.to_string(), v.to_string()));
            }
        }
        let rcpt = attrs
            .iter()
            .find(|(k, _)| k == "recipient")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        requests.lock().unwrap().push(attrs);
        let action = if rcpt.starts_with("reject") {
            "REJECT policy says no"
        } else if rcpt.starts_with("defer") {
            "DEFER_IF_PERMIT 4.7.1 greylisted, try again"
        } else if rcpt.starts_with("silent") {
            std::thread::sleep(std::time::Duration::from_secs(5));
            return;
        } else if rcpt.starts_with("hold") {
            "HOLD"
        } else {
            "DUNNO"
        };
        if reader
            .get_mut()
            .write_all(format!("action={action}\n\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

impl PolicyStub {
    fn tcp() -> (PolicyStub, u16) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shared, count) = (Arc::clone(&requests), Arc::clone(&connections));
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = Arc::clone(&shared);
                std::thread::spawn(move || serve_policy(s, r));
            }
        });
        (
            PolicyStub {
                requests,
                connections,
            },
            port,
        )
    }

    fn unix(path: &std::path::Path) -> PolicyStub {
        let listener = std::os::unix::net::UnixListener::bind(path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (shared, count) = (Arc::clone(&requests), Arc::clone(&connections));
        std::thread::spawn(move || {
            for s in listener.incoming().flatten() {
                count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let r = Arc::clone(&shared);
                std::thread::spawn(move || serve_policy(s, r));
            }
        });
        PolicyStub {
            requests,
            connections,
        }
    }
}

#[test]
fn policy_service_over_tcp_with_timeout_and_default_action() {
    let (stub, port) = PolicyStub::tcp();
    let dead = free_port();
    let d = Daemon::start(&format!(
        "{PATIENT}smtpd_policy_service_retry_delay = 0\nsmtpd_restriction_classes = slow, down\n\
         slow = check_policy_service {{ inet:127.0.0.1:{port}, timeout=1s, default_action=DUNNO }}, permit\n\
         down = check_policy_service inet:127.0.0.1:{dead}\n\
         smtpd_recipient_restrictions = check_recipient_access inline:{{ silent@mx.test.example=slow, down@mx.test.example=down }}, check_policy_service inet:127.0.0.1:{port}\n\
         local_recipient_maps = inline:{{ alice=1, reject=1, defer=1, silent=1, down=1, hold=1 }}\n"
    ));
    let mut c = session(&d, "127.0.0.1", "client.example", "a@example.org");
    assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<reject@mx.test.example>"),
        "554 5.7.1 <reject@mx.test.example>: Recipient address rejected: policy says no\r\n"
    );
    assert_eq!(
        c.cmd("RCPT TO:<defer@mx.test.example>"),
        "450 4.7.1 <defer@mx.test.example>: Recipient address rejected: greylisted, try again\r\n"
    );
    // The server never answers: after the timeout, default_action=DUNNO.
    let start = std::time::Instant::now();
    let reply = c.cmd("RCPT TO:<silent@mx.test.example>");
    assert!(reply.starts_with("250"), "{reply}\n{}", d.log());
    assert!(start.elapsed() >= std::time::Duration::from_millis(900));
    // Nothing listens: the built-in default action, a temporary error.
    assert_eq!(
        c.cmd("RCPT TO:<down@mx.test.example>"),
        "451 4.3.5 <down@mx.test.example>: Recipient address rejected: Server configuration problem\r\n"
    );
    let requests = stub.requests.lock().unwrap().clone();
    let first = &requests[0];
    let get = |k: &str| {
        first
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("<missing>")
    };
    assert_eq!(get("request"), "smtpd_access_policy");
    assert_eq!(get("protocol_state"), "RCPT");
    assert_eq!(get("protocol_name"), "ESMTP");
    assert_eq!(get("client_address"), "127.0.0.1");
    assert_eq!(get("client_name"), "unknown");
    assert_eq!(get("helo_name"), "client.example");
    assert_eq!(get("sender"), "a@example.org");
    assert_eq!(get("recipient"), "alice@mx.test.example");
    let log = d.log();
    assert!(
        log.contains(&format!(
            "warning: problem talking to server inet:127.0.0.1:{dead}"
        )),
        "{log}"
    );
}

#[test]
fn policy_service_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("policy.sock");
    let stub = PolicyStub::unix(&path);
    let d = Daemon::start(&format!(
        "smtpd_recipient_restrictions = check_policy_service unix:{}\nlocal_recipient_maps = inline:{{ alice=1, reject=1 }}\n",
        path.display()
    ));
    let mut c = session(&d, "127.0.0.1", "client.example", "a@example.org");
    assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<reject@mx.test.example>"),
        "554 5.7.1 <reject@mx.test.example>: Recipient address rejected: policy says no\r\n"
    );
    assert_eq!(stub.requests.lock().unwrap().len(), 2);
}

#[test]
fn connection_count_and_rate_limits_across_cores() {
    let d = Daemon::start(
        "smtpd_client_event_limit_exceptions =\nsmtpd_client_connection_count_limit = 3\n",
    );
    // corepost_cores = 2: the kernel spreads these over both cores.
    let held: Vec<Raw> = (0..3)
        .map(|_| Raw::connect_from(d.port, "127.0.0.2"))
        .collect();
    let (_, greeting) = Raw::open_from(d.port, "127.0.0.2");
    assert_eq!(
        greeting,
        "421 4.7.0 mx.test.example Error: too many connections from 127.0.0.2\r\n"
    );
    // Another client is not affected.
    let _other = Raw::connect_from(d.port, "127.0.0.3");
    drop(held);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let _again = Raw::connect_from(d.port, "127.0.0.2");
    assert!(
        d.log().contains(
            "warning: Connection concurrency limit exceeded: 4 from unknown[127.0.0.2] for service "
        ),
        "{}",
        d.log()
    );

    let r = Daemon::start(
        "smtpd_client_event_limit_exceptions =\nsmtpd_client_connection_rate_limit = 4\n",
    );
    for _ in 0..4 {
        let mut c = Raw::connect_from(r.port, "127.0.0.2");
        c.cmd("QUIT");
    }
    let (_, greeting) = Raw::open_from(r.port, "127.0.0.2");
    assert_eq!(
        greeting,
        "421 4.7.0 mx.test.example Error: too many connections from 127.0.0.2\r\n"
    );
    // mynetworks is exempt by default (smtpd_client_event_limit_exceptions).
    let e = Daemon::start("smtpd_client_connection_rate_limit = 1\n");
    for _ in 0..3 {
        let mut c = Raw::connect_from(e.port, "127.0.0.1");
        c.cmd("QUIT");
    }
}

#[test]
fn message_and_recipient_rate_limits() {
    let d = Daemon::start(&format!(
        "{PATIENT}smtpd_client_event_limit_exceptions =\nsmtpd_client_message_rate_limit = 2\nsmtpd_client_recipient_rate_limit = 3\n"
    ));
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    c.cmd("EHLO client.example");
    for _ in 0..2 {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        c.cmd("RSET");
    }
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "450 4.7.1 Error: too much mail from 127.0.0.2\r\n"
    );
    let mut r = Raw::connect_from(d.port, "127.0.0.3");
    r.cmd("EHLO client.example");
    r.cmd("MAIL FROM:<a@example.org>");
    for _ in 0..3 {
        assert!(r.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    }
    assert_eq!(
        r.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.7.1 Error: too many recipients from 127.0.0.3\r\n"
    );
    let log = d.log();
    assert!(log.contains("warning: Message delivery request rate limit exceeded: 3 from unknown[127.0.0.2] for service "), "{log}");
    assert!(
        log.contains(
            "warning: Recipient address rate limit exceeded: 4 from unknown[127.0.0.3] for service "
        ),
        "{log}"
    );
}

#[test]
fn unlisted_sender_in_a_local_domain_is_refused() {
    let d = Daemon::start("smtpd_sender_restrictions = reject_unlisted_sender\n");
    let mut ghost = session(&d, "127.0.0.1", "client.example", "ghost@mx.test.example");
    assert_eq!(
        ghost.cmd("RCPT TO:<alice@mx.test.example>"),
        "550 5.1.0 <ghost@mx.test.example>: Sender address rejected: User unknown in local recipient table\r\n"
    );
    let mut alice = session(&d, "127.0.0.1", "client.example", "alice@mx.test.example");
    assert!(
        alice
            .cmd("RCPT TO:<postmaster@mx.test.example>")
            .starts_with("250")
    );
    let mut foreign = session(&d, "127.0.0.1", "client.example", "ghost@example.org");
    assert!(
        foreign
            .cmd("RCPT TO:<postmaster@mx.test.example>")
            .starts_with("250")
    );
}

#[test]
fn policy_connections_are_reused_up_to_the_request_limit() {
    let (stub, port) = PolicyStub::tcp();
    let (limited, limited_port) = PolicyStub::tcp();
    let d = Daemon::start(&format!(
        "smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{port}, check_policy_service {{ inet:127.0.0.1:{limited_port}, request_limit=1 }}\n"
    ));
    let mut c = session(&d, "127.0.0.1", "client.example", "a@example.org");
    for _ in 0..4 {
        assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    }
    assert_eq!(stub.requests.lock().unwrap().len(), 4);
    assert_eq!(
        stub.connections.load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    assert_eq!(limited.requests.lock().unwrap().len(), 4);
    assert_eq!(
        limited
            .connections
            .load(std::sync::atomic::Ordering::SeqCst),
        4
    );
}

#[test]
fn mx_and_a_access_checks() {
    let dns = dns_server();
    dns.add_mx("bad-sender.test", 60, 10, "mx.bogus.test");
    dns.add_a("mx.bogus.test", 60, Ipv4Addr::new(10, 1, 2, 3));
    dns.add_mx("good-sender.test", 60, 10, "mx.good.test");
    dns.add_a("mx.good.test", 60, Ipv4Addr::new(192, 0, 2, 25));
    dns.add_a("helo.bogus.test", 60, Ipv4Addr::new(10, 9, 9, 9));
    let d = Daemon::start(&format!(
        "{PATIENT}corepost_dns_servers = {}\nsmtpd_sender_restrictions = check_sender_mx_access inline:{{ {{ 10=REJECT MX in a private network }} }}\nsmtpd_helo_restrictions = check_helo_a_access inline:{{ {{ 10.9=REJECT private HELO address }} }}\n",
        dns.addr()
    ));
    let mut bad = session(&d, "127.0.0.1", "client.example", "a@bad-sender.test");
    assert_eq!(
        bad.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 <a@bad-sender.test>: Sender address rejected: MX in a private network\r\n"
    );
    let mut good = session(&d, "127.0.0.1", "client.example", "a@good-sender.test");
    assert!(
        good.cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250")
    );
    let mut helo = session(&d, "127.0.0.1", "helo.bogus.test", "a@good-sender.test");
    assert_eq!(
        helo.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 <helo.bogus.test>: Helo command rejected: private HELO address\r\n"
    );
}

#[test]
fn dns_allow_lists_and_rhsbl_on_names() {
    let dns = dns_server();
    dns.add_a("1.0.0.127.wl.test", 60, Ipv4Addr::new(127, 0, 0, 2));
    dns.add_ptr("127.0.0.3".parse().unwrap(), 60, "host.spammy.test");
    dns.add_a("host.spammy.test", 60, Ipv4Addr::new(127, 0, 0, 3));
    dns.add_a("host.spammy.test.rhs.test", 60, Ipv4Addr::new(127, 0, 0, 2));
    dns.add_a("bad.helo.test.rhs.test", 60, Ipv4Addr::new(127, 0, 0, 2));
    let d = Daemon::start(&format!(
        "{PATIENT}corepost_dns_servers = {}\nsmtpd_peername_lookup = yes\ncorepost_hosts_file =\nmynetworks = 127.0.0.1/32\nsmtpd_client_restrictions = permit_dnswl_client wl.test, reject_rhsbl_client rhs.test, reject_rhsbl_helo rhs.test\n",
        dns.addr()
    ));
    // Allow-listed: passes even with a listed HELO name.
    let mut wl = session(&d, "127.0.0.1", "bad.helo.test", "a@example.org");
    assert!(wl.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    let mut helo = session(&d, "127.0.0.2", "bad.helo.test", "a@example.org");
    assert_eq!(
        helo.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 Service unavailable; Helo command [bad.helo.test] blocked using rhs.test\r\n"
    );
    let mut named = session(&d, "127.0.0.3", "client.example", "a@example.org");
    assert_eq!(
        named.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 Service unavailable; Client host [host.spammy.test] blocked using rhs.test\r\n"
    );
    let mut clean = session(&d, "127.0.0.2", "client.example", "a@example.org");
    assert!(
        clean
            .cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250")
    );
}

#[test]
fn client_dns_settings_leave_smtpd_name_lookups_alone() {
    let dns = dns_server();
    dns.add_ptr("127.0.0.1".parse().unwrap(), 60, "good.test.example");
    dns.add_a("good.test.example", 60, Ipv4Addr::new(127, 0, 0, 1));
    // smtp_dns_support_level and disable_dns_lookups are the SMTP client's
    // settings: Postfix's smtpd still looks the client's name up.
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\nsmtp_dns_support_level = disabled\ndisable_dns_lookups = yes\nsmtpd_peername_lookup = yes\ncorepost_hosts_file =\nmynetworks = 127.0.0.0/32\nsmtpd_client_restrictions = reject_unknown_client_hostname\n",
        dns.addr()
    ));
    let mut c = session(&d, "127.0.0.1", "client.example", "a@example.org");
    let reply = c.cmd("RCPT TO:<alice@mx.test.example>");
    assert!(reply.starts_with("250 "), "{reply}");
    assert!(
        d.log()
            .contains("connect from good.test.example[127.0.0.1]"),
        "{}",
        d.log()
    );
}

#[test]
fn an_unreachable_allow_list_turns_a_later_reject_into_450() {
    let dns = dns_server();
    dns.set_behaviour("1.0.0.127.wl.test", Behaviour::ServFail);
    let d = Daemon::start(&format!(
        "{PATIENT}corepost_dns_servers = {}\nmynetworks = 127.0.0.0/32\nsmtpd_client_restrictions = permit_dnswl_client wl.test, reject\n",
        dns.addr()
    ));
    // Postfix's permit_dnswl_addr: DEFER_IF_REJECT on a soft DNS error.
    let mut c = Raw::connect_from(d.port, "127.0.0.1");
    assert!(c.cmd("EHLO client.example").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.7.1 <127.0.0.1>: Client host rejected: Service unavailable\r\n"
    );
}

#[test]
fn helo_checks_non_fqdn_recipient_and_deferred_relay() {
    let d = Daemon::start(&format!(
        "{PATIENT}smtpd_helo_required = yes\n\
         smtpd_helo_restrictions = check_helo_access inline:{{ {{ evil.example=REJECT go away }} }}, reject_invalid_helo_hostname\n\
         smtpd_recipient_restrictions = reject_non_fqdn_recipient\n\
         smtpd_relay_restrictions = permit_mynetworks, defer_unauth_destination\n\
         mynetworks = 127.0.0.1/32\n"
    ));
    // check_helo_access, answered at RCPT (smtpd_delay_reject = yes).
    let mut c = session(&d, "127.0.0.2", "evil.example", "a@example.org");
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "554 5.7.1 <evil.example>: Helo command rejected: go away\r\n"
    );
    // reject_invalid_helo_hostname.
    let mut c = session(&d, "127.0.0.2", "bad..name", "a@example.org");
    assert_eq!(
        c.cmd("RCPT TO:<alice@mx.test.example>"),
        "501 5.5.2 <bad..name>: Helo command rejected: Invalid name\r\n"
    );
    // A good HELO passes; reject_non_fqdn_recipient; defer_unauth_destination
    // for a client outside mynetworks, while mynetworks may relay.
    let mut c = session(&d, "127.0.0.2", "good.example", "a@example.org");
    assert_eq!(
        c.cmd("RCPT TO:<alice@localhost>"),
        "504 5.5.2 <alice@localhost>: Recipient address rejected: need fully-qualified address\r\n"
    );
    let relay = c.cmd("RCPT TO:<someone@foreign.example>");
    assert!(
        relay.starts_with("454 4.7.1 <someone@foreign.example>: Relay access denied"),
        "{relay}"
    );
    assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    let mut inside = session(&d, "127.0.0.1", "good.example", "a@example.org");
    assert!(
        inside
            .cmd("RCPT TO:<someone@foreign.example>")
            .starts_with("250")
    );
}

#[test]
fn policy_requests_carry_postfix_attributes_and_the_real_size() {
    let (stub, port) = PolicyStub::tcp();
    let dir = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["mx.test.example".to_string()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let d = Daemon::start(&format!(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n\
         smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{port}, permit_mynetworks, reject\n\
         smtpd_end_of_data_restrictions = check_policy_service {{ inet:127.0.0.1:{port}, policy_context=eod }}\n",
        cert.display(),
        key.display()
    ));
    let (ok, out) = python(&format!(
        "import smtplib, ssl\n\
         s = smtplib.SMTP('127.0.0.1', {})\n\
         s.ehlo('client.example')\n\
         s.starttls(context=ssl._create_unverified_context())\n\
         s.ehlo('client.example')\n\
         print(s.sock.getsockname()[1])\n\
         s.mail('a@example.org', ['SIZE=99999'])\n\
         s.rcpt('alice@mx.test.example')\n\
         s.data(b'Subject: x\\r\\n\\r\\nhello\\r\\n')\n\
         s.quit()\n",
        d.port
    ));
    assert!(ok, "{out}\n{}", d.log());
    let client_port = out.trim().to_string();
    let requests = stub.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2, "{requests:?}");
    let attr = |r: usize, k: &str| -> String {
        requests[r]
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| format!("<missing {k}>"))
    };
    // Postfix 3.7's attributes, in its order, then 3.8's two.
    let names: Vec<&str> = requests[0].iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "request",
            "protocol_state",
            "protocol_name",
            "client_address",
            "client_name",
            "client_port",
            "reverse_client_name",
            "server_address",
            "server_port",
            "helo_name",
            "sender",
            "recipient",
            "recipient_count",
            "queue_id",
            "instance",
            "size",
            "etrn_domain",
            "stress",
            "sasl_method",
            "sasl_username",
            "sasl_sender",
            "ccert_subject",
            "ccert_issuer",
            "ccert_fingerprint",
            "ccert_pubkey_fingerprint",
            "encryption_protocol",
            "encryption_cipher",
            "encryption_keysize",
            "policy_context",
            "compatibility_level",
            "mail_version",
        ]
    );
    assert_eq!(attr(0, "protocol_state"), "RCPT");
    assert_eq!(attr(0, "client_port"), client_port);
    assert_eq!(attr(0, "server_address"), "127.0.0.1");
    assert_eq!(attr(0, "server_port"), d.port.to_string());
    assert_eq!(attr(0, "size"), "99999");
    assert_eq!(attr(0, "recipient_count"), "0");
    assert_eq!(attr(0, "stress"), "");
    assert_eq!(attr(0, "encryption_protocol"), "TLSv1.3");
    assert!(
        attr(0, "encryption_cipher").starts_with("TLS_"),
        "{requests:?}"
    );
    let bits = attr(0, "encryption_keysize");
    assert!(bits == "128" || bits == "256", "{bits}");
    assert_eq!(attr(0, "compatibility_level"), "3.6");
    // END-OF-MESSAGE: the size received, not the SIZE announced.
    assert_eq!(attr(1, "protocol_state"), "END-OF-MESSAGE");
    assert_eq!(attr(1, "size"), "21");
    assert_eq!(attr(1, "recipient_count"), "1");
    assert_eq!(attr(1, "policy_context"), "eod");
}

#[test]
fn the_old_connection_limit_exceptions_name_behaves_as_in_postfix() {
    // Postfix 3.7: smtpd_client_event_limit_exceptions defaults to
    // ${smtpd_client_connection_limit_exceptions:$mynetworks}, which is
    // $mynetworks while the old name is empty and *empty* once it is set
    // (`postconf -x` shows "smtpd_client_event_limit_exceptions ="): setting
    // the old name exempts no one, not even the clients it lists.
    let d = Daemon::start(
        "smtpd_client_connection_limit_exceptions = 127.0.0.2\nsmtpd_client_connection_count_limit = 1\nmynetworks = 127.0.0.0/8\n",
    );
    for client in ["127.0.0.2", "127.0.0.3"] {
        let _held = Raw::connect_from(d.port, client);
        let (_, greeting) = Raw::open_from(d.port, client);
        assert_eq!(
            greeting,
            format!("421 4.7.0 mx.test.example Error: too many connections from {client}\r\n")
        );
    }
    // Without it, mynetworks is exempt.
    let d = Daemon::start("smtpd_client_connection_count_limit = 1\nmynetworks = 127.0.0.0/8\n");
    let _a = Raw::connect_from(d.port, "127.0.0.2");
    let _b = Raw::connect_from(d.port, "127.0.0.2");
}

#[test]
fn the_hosts_file_names_clients_before_dns_as_the_system_resolver_does() {
    // DNS knows neither 127.0.0.1 nor 127.0.0.5 (no PTR); 127.0.0.6's PTR
    // name is confirmed by the hosts file, not by DNS (which has no A).
    let dns = dns_server();
    dns.add_ptr("127.0.0.6".parse().unwrap(), 60, "mapped.test.example");
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n127.0.0.1 vm\n::1 localhost ip6-localhost\n127.0.0.6 mapped.test.example\n",
    )
    .unwrap();
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\nsmtpd_peername_lookup = yes\ncorepost_hosts_file = {}\nmynetworks = 127.0.0.0/8\nsmtpd_client_restrictions = reject_unknown_client_hostname\n",
        dns.addr(),
        hosts.display()
    ));
    let mut local = session(&d, "127.0.0.1", "client.example", "a@example.org");
    assert!(
        local
            .cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250 ")
    );
    let mut mapped = session(&d, "127.0.0.6", "client.example", "a@example.org");
    assert!(
        mapped
            .cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250 ")
    );
    let mut other = session(&d, "127.0.0.5", "client.example", "a@example.org");
    assert_eq!(
        other.cmd("RCPT TO:<alice@mx.test.example>"),
        "450 4.7.25 Client host rejected: cannot find your hostname, [127.0.0.5]\r\n"
    );
    let log = d.log();
    for line in [
        "connect from localhost[127.0.0.1]",
        "connect from mapped.test.example[127.0.0.6]",
        "connect from unknown[127.0.0.5]",
    ] {
        assert!(log.contains(line), "{line}\n{log}");
    }
    // The machine's own /etc/hosts, where it names 127.0.0.1 (it usually
    // does: localhost), gives the same as the system resolver.
    let system = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let first = system.lines().find_map(|l| {
        let mut w = l.split('#').next()?.split_whitespace();
        (w.next()? == "127.0.0.1").then(|| w.next().map(str::to_ascii_lowercase))?
    });
    if let Some(name) = first {
        let d = Daemon::start(&format!(
            "corepost_dns_servers = {}\nsmtpd_peername_lookup = yes\ncorepost_hosts_file = /etc/hosts\n",
            dns.addr()
        ));
        let mut c = Raw::connect_from(d.port, "127.0.0.1");
        assert!(c.cmd("EHLO client.example").starts_with("250"));
        c.cmd("QUIT");
        let log = d.log();
        assert!(
            log.contains(&format!("connect from {name}[127.0.0.1]")),
            "{log}"
        );
    }
}
