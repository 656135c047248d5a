//! The SMTP client's output and settings end to end: what a next hop gets from `corepost run`
//! (bare CR/LF, long lines, 8-bit content without 8BITMIME, the source address of a pinned
//! transport) and the log lines Postfix writes (`connect to ...: Connection refused`,
//! `conn_use=`, `breaking line`).

mod support;

use support::*;

fn daemon_to(sink: &Sink, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{extra}",
        sink.port
    ))
}

/// True when every CR is followed by LF and every LF preceded by CR.
fn canonical(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().all(|(i, &b)| match b {
        b'\r' => bytes.get(i + 1) == Some(&b'\n'),
        b'\n' => i > 0 && bytes[i - 1] == b'\r',
        _ => true,
    })
}

#[test]
fn bare_cr_and_lf_in_accepted_content_never_reach_the_next_hop() {
    let sink = Sink::start();
    // smtpd keeps bare CR/LF as received: the client must repair them on the way out.
    let d = daemon_to(&sink, "smtpd_forbid_bare_newline = no\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<x@remote.example>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"Subject: bare\r\n\r\nbefore\rSmuggled: yes\r\nline\nnext\r\n.\r\n");
    assert!(c.reply().starts_with("250"), "{}", d.log());
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let content = &got.messages[0].2;
    assert!(canonical(content), "{:?}", String::from_utf8_lossy(content));
    let text = String::from_utf8_lossy(content);
    assert!(
        text.contains("\r\nbefore Smuggled: yes\r\nline\r\nnext\r\n"),
        "{text}"
    );
}

#[test]
fn a_5000_character_line_is_folded_for_a_strict_next_hop() {
    let strict = SinkOptions {
        max_line: Some(998),
        ..SinkOptions::default()
    };
    let sink = Sink::start_with(0, strict);
    let d = daemon_to(&sink, "");
    let long = "z".repeat(5000);
    let id = submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        &format!("Subject: long\r\nX-Long: {long}\r\n\r\n{long}\r\nend"),
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let text = String::from_utf8_lossy(&got.messages[0].2).to_string();
    assert!(text.lines().all(|l| l.len() <= 998), "{text}");
    // Folded with CRLF SPACE: unfolding gives the line back.
    assert!(
        text.replace("\r\n ", "")
            .contains(&format!("\r\n{long}\r\nend"))
    );
    assert!(
        text.replace("\r\n ", "")
            .contains(&format!("X-Long: {long}\r\n"))
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = d.log();
    assert!(
        log.contains(&format!(
            "{id}: breaking line > 998 bytes with <CR><LF>SPACE"
        )),
        "{log}"
    );
    assert!(log.contains("status=sent"), "{log}");
}

#[test]
fn eight_bit_to_a_next_hop_without_8bitmime_is_quoted_printable() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            eightbitmime: false,
            ..SinkOptions::default()
        },
    );
    let d = daemon_to(&sink, "");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    c.cmd("MAIL FROM:<a@example.org> BODY=8BITMIME");
    c.cmd("RCPT TO:<x@remote.example>");
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(
        "Subject: 8bit\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n\
         --b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
         caf\u{e9} = ok\r\n--b--\r\n.\r\n"
            .as_bytes(),
    );
    assert!(c.reply().starts_with("250"), "{}", d.log());
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let content = &got.messages[0].2;
    assert!(content.is_ascii(), "{}", String::from_utf8_lossy(content));
    let text = String::from_utf8_lossy(content);
    assert!(
        text.contains(
            "charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9 =3D ok\r\n--b--"
        ),
        "{text}"
    );
}

#[test]
fn eight_bit_conversion_can_be_disabled() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            eightbitmime: false,
            ..SinkOptions::default()
        },
    );
    let d = daemon_to(&sink, "disable_mime_output_conversion = yes\n");
    let body = "Subject: 8bit\r\nContent-Transfer-Encoding: 8bit\r\n\r\ncaf\u{e9}";
    submit(d.port, "a@example.org", &["x@remote.example"], body);
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert!(String::from_utf8_lossy(&got.messages[0].2).contains("\r\ncaf\u{e9}\r\n"));
}

#[test]
fn a_transport_pinned_to_a_source_address() {
    let sink = Sink::start();
    let d = Daemon::start_with_master(
        &format!(
            "transport_maps = inline:{{ pinned.example=pinned:[127.0.0.1]:{port} }}\n\
             relayhost = [127.0.0.1]:{port}\n",
            port = sink.port
        ),
        "pinned unix - - n - - smtp -o smtp_bind_address=127.0.0.2\n",
    );
    submit(
        d.port,
        "a@example.org",
        &["x@pinned.example"],
        "Subject: a\r\n\r\nhi",
    );
    submit(
        d.port,
        "a@example.org",
        &["x@other.example"],
        "Subject: b\r\n\r\nhi",
    );
    let got = sink.wait_for(2, 20);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    let mut peers: Vec<String> = got.peers.iter().map(|p| p.ip().to_string()).collect();
    peers.sort();
    peers.dedup();
    assert_eq!(peers, ["127.0.0.1", "127.0.0.2"], "{}", d.log());
}

#[test]
fn a_refused_first_mx_is_logged_and_reused_connections_carry_conn_use() {
    let sink = Sink::start();
    let dns = corepost::dns::testserver::TestServer::start().expect("test dns");
    dns.add_mx("example.test", 60, 10, "mx1.example.test");
    dns.add_mx("example.test", 60, 20, "mx2.example.test");
    // Nothing listens on 127.0.0.2 at the sink's port.
    dns.add_a("mx1.example.test", 60, "127.0.0.2".parse().unwrap());
    dns.add_a("mx2.example.test", 60, "127.0.0.1".parse().unwrap());
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\ntransport_maps = inline:{{ example.test=smtp:example.test:{} }}\n\
         corepost_cores = 1\nsmtp_destination_concurrency_limit = 1\nsmtp_connection_cache_time_limit = 5s\n",
        dns.addr(),
        sink.port
    ));
    let first = submit(
        d.port,
        "a@example.org",
        &["u@example.test"],
        "Subject: 1\r\n\r\nhi",
    );
    assert_eq!(sink.wait_for(1, 20).messages.len(), 1, "{}", d.log());
    let second = submit(
        d.port,
        "a@example.org",
        &["v@example.test"],
        "Subject: 2\r\n\r\nhi",
    );
    assert_eq!(sink.wait_for(2, 20).messages.len(), 2, "{}", d.log());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = d.log();
    let relay = format!("relay=mx2.example.test[127.0.0.1]:{}", sink.port);
    assert!(
        log.contains(&format!(
            "corepost/smtp[{}]: connect to mx1.example.test[127.0.0.2]:{}: Connection refused\n",
            d.pid(),
            sink.port
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!("{first}: to=<u@example.test>, {relay}, delay=")),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "{second}: to=<v@example.test>, {relay}, conn_use=2, delay="
        )),
        "{log}"
    );
    assert_eq!(sink.snapshot().connections, 1, "{log}");
}

#[test]
fn without_connection_caching_every_delivery_has_its_own_connection() {
    let sink = Sink::start();
    let d = daemon_to(
        &sink,
        "corepost_cores = 1\nsmtp_connection_cache_on_demand = no\n",
    );
    for i in 0..3 {
        submit(
            d.port,
            "a@example.org",
            &["x@remote.example"],
            &format!("Subject: {i}\r\n\r\nhi"),
        );
    }
    let got = sink.wait_for(3, 20);
    assert_eq!(got.messages.len(), 3, "{}", d.log());
    assert_eq!(got.connections, 3, "{}", d.log());
    assert!(!d.log().contains("conn_use="), "{}", d.log());
}

#[test]
fn a_5xx_greeting_defers_or_bounces_as_smtp_skip_5xx_greeting_says() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            use std::io::Write;
            let mut s = s;
            let _ = s.write_all(b"554 5.7.1 go away\r\n");
        }
    });
    let relay = format!("relayhost = [127.0.0.1]:{port}\n");
    let d = Daemon::start(&relay);
    let id = submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: g\r\n\r\nhi",
    );
    let deferred =
        format!("{id}: to=<x@remote.example>, relay=127.0.0.1[127.0.0.1]:{port}, delay=");
    let line = wait_until(20, || {
        d.log()
            .lines()
            .find(|l| l.contains(&deferred))
            .map(str::to_string)
    })
    .unwrap_or_else(|| d.log());
    assert!(
        line.ends_with(
            "dsn=4.7.1, status=deferred (host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away)"
        ),
        "{line}"
    );
    let d = Daemon::start(&format!("{relay}smtp_skip_5xx_greeting = no\n"));
    let id = submit(
        d.port,
        "a@example.org",
        &["x@remote.example"],
        "Subject: g\r\n\r\nhi",
    );
    let line = wait_until(20, || {
        d.log()
            .lines()
            .find(|l| l.contains(&format!("{id}: to=<x@remote.example>")))
            .map(str::to_string)
    })
    .unwrap_or_else(|| d.log());
    assert!(line.contains("dsn=5.7.1, status=bounced (host 127.0.0.1[127.0.0.1] refused to talk to me: 554 5.7.1 go away)"), "{line}");
}

#[test]
fn generic_maps_rewrite_the_envelope_and_address_headers() {
    let sink = Sink::start();
    let d = daemon_to(
        &sink,
        "smtp_generic_maps = inline:{ his@local.example=his@isp.example, @local.example=@isp.example }\n",
    );
    submit(
        d.port,
        "his@local.example",
        &["her@local.example", "x@remote.example"],
        "From: His <his@local.example>\r\nTo: her@local.example, x@remote.example\r\nSubject: his@local.example\r\n\r\nFrom: his@local.example\r\n",
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let (from, rcpts, content) = &got.messages[0];
    assert_eq!(from, "his@isp.example");
    assert_eq!(rcpts, &["her@isp.example", "x@remote.example"]);
    let text = String::from_utf8_lossy(content);
    assert!(text.contains("\r\nFrom: His <his@isp.example>\r\nTo: her@isp.example, x@remote.example\r\nSubject: his@local.example\r\n"), "{text}");
    assert!(
        text.contains("\r\n\r\nFrom: his@local.example\r\n"),
        "body untouched: {text}"
    );
}
