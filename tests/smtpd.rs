//! smtpd end to end: the real `corepost run` on an ephemeral loopback port,
//! driven by Python's smtplib, swaks and raw sockets. Messages that got a
//! 250 are checked in the spool after the daemon stops.

mod support;

use std::process::Command;
use support::*;

#[test]
fn smtplib_transaction_is_queued_with_routes() {
    let mut d = Daemon::start_keeping_local_mail("relay_domains = relay.example\nrelayhost =\n");
    let (ok, out) = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port})
code, msg = s.ehlo('client.example')
assert code == 250 and b'PIPELINING' in msg and b'CHUNKING' in msg and b'SIZE 10240000' in msg, msg
r = s.sendmail('sender@example.org', ['alice@mx.test.example', 'bob@relay.example', 'carol@gmail.example'],
    'From: sender@example.org\r\nSubject: test\r\nMessage-ID: <t1@example.org>\r\n\r\nHello.\r\n.leading dot\r\n')
assert r == {{}}, r
code, msg = s.noop()
assert code == 250
s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    wait_until(10, || d.log().contains("(queue active)").then_some(()));
    d.stop();
    let log = d.log();
    assert!(log.contains("connect from unknown[127.0.0.1]"), "{log}");
    assert!(
        log.contains("corepost/cleanup[") && log.contains("message-id=<t1@example.org>"),
        "{log}"
    );
    assert!(log.contains("from=<sender@example.org>, size="), "{log}");
    assert!(log.contains("nrcpt=3 (queue active)"), "{log}");
    assert!(log.contains("disconnect from unknown[127.0.0.1] ehlo=1 mail=1 rcpt=3 data=1 noop=1 quit=1 commands=8"), "{log}");
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 1);
    let (id, env, content) = &queued[0];
    assert_eq!(env.sender, "sender@example.org");
    let routes: Vec<(String, String, String)> = env
        .recipients
        .iter()
        .map(|r| (r.address.clone(), r.transport.clone(), r.nexthop.clone()))
        .collect();
    assert_eq!(
        routes,
        vec![
            (
                "alice@mx.test.example".into(),
                "local".into(),
                "mx.test.example".into()
            ),
            (
                "bob@relay.example".into(),
                "relay".into(),
                "relay.example".into()
            ),
            (
                "carol@gmail.example".into(),
                "smtp".into(),
                "gmail.example".into()
            ),
        ]
    );
    let text = String::from_utf8_lossy(content);
    assert!(text.starts_with(&format!("Received: from client.example (unknown [127.0.0.1])\r\n\tby mx.test.example (corepost) with ESMTP id {id}")), "{text}");
    assert!(
        text.contains("\r\n\r\nHello.\r\n.leading dot\r\n"),
        "dot-unstuffed: {text}"
    );
    assert!(log.contains(&format!("{id}: client=unknown[127.0.0.1]")));
}

#[test]
fn swaks_delivers() {
    if Command::new("swaks").arg("--version").output().is_err() {
        panic!("swaks is not installed (apt-get install swaks; .ci/run does this)");
    }
    let d = Daemon::start("");
    let out = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", d.port),
            "--from",
            "a@example.org",
            "--to",
            "alice@mx.test.example",
            "--pipeline",
            "--silent",
            "1",
        ])
        .output()
        .expect("swaks");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // The queue manager logs it when it takes the message, as Postfix's.
    assert!(
        wait_until(10, || d.log().contains("corepost/qmgr").then_some(()))
            .is_some_and(|()| d.log().contains("nrcpt=1 (queue active)")),
        "{}",
        d.log()
    );
}

#[test]
fn pipelined_group_is_answered_in_order() {
    let d = Daemon::start("");
    let mut c = Raw::connect(d.port);
    c.send(b"EHLO pipe.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<alice@mx.test.example>\r\nRCPT TO:<nobody@mx.test.example>\r\nDATA\r\n");
    assert!(c.reply().starts_with("250-mx.test.example"));
    assert_eq!(c.reply(), "250 2.1.0 Ok\r\n");
    assert_eq!(c.reply(), "250 2.1.5 Ok\r\n");
    assert!(c.reply().starts_with("550 5.1.1 <nobody@mx.test.example>: Recipient address rejected: User unknown in local recipient table"));
    assert!(c.reply().starts_with("354 "));
    c.send(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as "));
    assert_eq!(c.reply(), "221 2.0.0 Bye\r\n");
}

#[test]
fn bdat_chunks() {
    let mut d = Daemon::start_keeping_local_mail("");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    assert!(
        c.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME")
            .starts_with("250")
    );
    assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
    c.send(b"BDAT 20\r\nSubject: b\r\n\r\n.\r\n\r\n.");
    assert_eq!(c.reply(), "250 2.0.0 Ok: 20 bytes\r\n");
    c.send(b"BDAT 7 LAST\r\nend\r\n\r\n");
    // Postfix's count: every line with its CRLF.
    assert!(c.reply().starts_with("250 2.0.0 Ok: 27 bytes queued as "));
    // DATA is refused with BINARYMIME.
    c.cmd("MAIL FROM:<a@example.org> BODY=BINARYMIME");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    // A chunk without a transaction is read and refused, and the session goes on.
    c.cmd("RSET");
    c.send(b"BDAT 5\r\nhello");
    assert!(c.reply().starts_with("503 5.5.1"));
    assert!(c.cmd("NOOP").starts_with("250"));
    c.cmd("QUIT");
    d.stop();
    let q = queued_messages(&d.spool_dir());
    assert_eq!(q.len(), 1);
    assert!(
        q[0].2.ends_with(b"Subject: b\r\n\r\n.\r\n\r\n.end\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&q[0].2)
    );
    assert_eq!(q[0].1.params.body, corepost_spool::BodyType::BinaryMime);
}

#[test]
fn smtputf8_and_8bitmime() {
    let mut d = Daemon::start_keeping_local_mail("local_recipient_maps =\n");
    let (ok, out) = python(&format!(
        r#"
import smtplib
s = smtplib.SMTP('127.0.0.1', {port})
s.ehlo()
r = s.sendmail('josé@example.org', ['用户@mx.test.example'], 'Subject: ünïcode\r\n\r\nbody\r\n'.encode(), mail_options=['SMTPUTF8', 'BODY=8BITMIME'])
assert r == {{}}, r
code, msg = s.docmd('MAIL FROM:<josé@example.org>')
assert code == 553 and b'5.6.7' in msg, (code, msg)
s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    d.stop();
    let q = queued_messages(&d.spool_dir());
    assert_eq!(q.len(), 1);
    assert!(q[0].1.params.smtputf8);
    assert_eq!(q[0].1.recipients[0].address, "用户@mx.test.example");
}

#[test]
fn error_replies_keep_the_session_going() {
    let d = Daemon::start("smtpd_recipient_limit = 2\nmessage_size_limit = 2000\n");
    let mut c = Raw::connect(d.port);
    assert!(c.cmd("FROB").starts_with("500 5.5.2"));
    assert!(
        c.cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("503 5.5.1 Error: need MAIL command")
    );
    assert!(c.cmd("DATA").starts_with("503 5.5.1"));
    assert!(c.cmd("MAIL FROM:<a b>").starts_with("501 5.1.7"));
    assert!(
        c.cmd("MAIL FROM:<a@example.org> FROB=1")
            .starts_with("555 5.5.4")
    );
    assert!(
        c.cmd("MAIL FROM:<a@example.org> SIZE=5000")
            .starts_with("552 5.3.4")
    );
    assert_eq!(c.cmd("HELO"), "501 Syntax: HELO hostname\r\n");
    let long = format!("NOOP {}", "x".repeat(5000));
    // As Postfix: cut at line_length_limit and carried out.
    assert_eq!(c.cmd(&long), "250 2.0.0 Ok\r\n");
    assert!(c.cmd("EHLO x").starts_with("250"));
    assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
    assert!(
        c.cmd("MAIL FROM:<a@example.org>")
            .starts_with("503 5.5.1 Error: nested MAIL command")
    );
    assert!(c.cmd("RCPT TO:<alice@mx.test.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice+2Bx@mx.test.example").starts_with("250"));
    assert!(c.cmd("RCPT TO:<postmaster>").starts_with("250"));
    assert!(
        c.cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("452 4.5.3 Error: too many recipients")
    );
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(format!("Subject: big\r\n\r\n{}\r\n.\r\n", "y".repeat(3000)).as_bytes());
    assert!(c.reply().starts_with("552 5.3.4"));
    assert!(c.cmd("VRFY alice").starts_with("252"));
    assert!(c.cmd("QUIT").starts_with("221"));
}

#[test]
fn hard_error_limit_disconnects() {
    let d = Daemon::start("smtpd_hard_error_limit = 3\nsmtpd_error_sleep_time = 0\n");
    let mut c = Raw::connect(d.port);
    assert!(c.cmd("BAD1").starts_with("500"));
    assert!(c.cmd("BAD2").starts_with("500"));
    // As Postfix: the third error's reply, then the 421.
    assert!(c.cmd("BAD3").starts_with("500 5.5.2"));
    assert!(
        c.reply()
            .starts_with("421 4.7.0 mx.test.example Error: too many errors")
    );
    assert_eq!(c.reply(), "", "connection closed");
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        d.log().contains("too many errors after UNKNOWN"),
        "{}",
        d.log()
    );
}

#[test]
fn idle_session_times_out() {
    let d = Daemon::start("smtpd_timeout = 1s\n");
    let mut c = Raw::connect(d.port);
    let started = std::time::Instant::now();
    assert!(
        c.reply()
            .starts_with("421 4.4.2 mx.test.example Error: timeout exceeded")
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(
        d.log()
            .contains("timeout after CONNECT from unknown[127.0.0.1]"),
        "{}",
        d.log()
    );
}

#[test]
fn default_configuration_is_not_an_open_relay() {
    let d = Daemon::start("");
    // 127.0.0.2 is a loopback address but not this host's address, so it
    // is outside the default mynetworks.
    let mut outsider = Raw::connect_from(d.port, "127.0.0.2");
    outsider.cmd("EHLO outsider.example");
    assert!(
        outsider
            .cmd("MAIL FROM:<spammer@example.org>")
            .starts_with("250")
    );
    assert_eq!(
        outsider.cmd("RCPT TO:<victim@foreign.example>"),
        "454 4.7.1 <victim@foreign.example>: Relay access denied\r\n"
    );
    // Mail for this host is still accepted from anyone.
    assert!(
        outsider
            .cmd("RCPT TO:<alice@mx.test.example>")
            .starts_with("250")
    );
    let mut insider = Raw::connect(d.port);
    insider.cmd("EHLO insider.example");
    insider.cmd("MAIL FROM:<a@example.org>");
    assert!(
        insider
            .cmd("RCPT TO:<victim@foreign.example>")
            .starts_with("250")
    );
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(d.log().contains("NOQUEUE: reject: RCPT from unknown[127.0.0.2]: 454 4.7.1 <victim@foreign.example>: Relay access denied; from=<spammer@example.org> to=<victim@foreign.example> proto=ESMTP helo=<outsider.example>"), "{}", d.log());
}

#[test]
fn reject_unauth_destination_gives_554() {
    // Postfix's relay restrictions run first; an operator who wants a hard
    // 554 instead of the default's 454 says reject_unauth_destination there.
    let d =
        Daemon::start("smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination\n");
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    assert_eq!(
        c.cmd("RCPT TO:<v@foreign.example>"),
        "554 5.7.1 <v@foreign.example>: Relay access denied\r\n"
    );
}

/// Each smuggling sequence stays inside one message: exactly one message is
/// queued per DATA, and the "smuggled" commands are content.
#[test]
fn smuggling_sequences_do_not_split_messages() {
    let sequences: &[&[u8]] = &[b"\n.\n", b"\n.\r\n", b"\r\n.\n", b"\r.\r", b"\r.\r\n"];
    // Loopback is in mynetworks, which the default exempts from
    // normalisation; normalise here.
    let mut d = Daemon::start_keeping_local_mail("smtpd_forbid_bare_newline_exclusions =\n");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    for seq in sequences {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<alice@mx.test.example>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        let mut body = b"Subject: smuggle\r\n\r\nfirst".to_vec();
        body.extend_from_slice(seq);
        body.extend_from_slice(b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@foreign.example>\r\nDATA\r\nsmuggled\r\n.\r\n");
        c.send(&body);
        let r = c.reply();
        assert!(r.starts_with("250 2.0.0 Ok: queued as"), "{seq:?}: {r}");
        assert!(
            c.cmd("NOOP").starts_with("250 2.0.0 Ok"),
            "{seq:?}: the session is in sync"
        );
    }
    c.cmd("QUIT");
    d.stop();
    let q = queued_messages(&d.spool_dir());
    assert_eq!(q.len(), sequences.len());
    for (_, env, content) in &q {
        assert_eq!(env.sender, "a@example.org");
        assert_eq!(env.recipients.len(), 1);
        let text = String::from_utf8_lossy(content);
        assert!(
            text.contains("MAIL FROM:<evil@example.org>"),
            "smuggled text is content: {text}"
        );
        assert!(
            !content.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
            "normalised: no bare LF"
        );
        assert!(
            !content.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
            "normalised: no bare CR"
        );
    }
}

#[test]
fn bare_newlines_are_rejected_when_configured() {
    let d = Daemon::start(
        "smtpd_forbid_bare_newline = reject\nsmtpd_forbid_bare_newline_exclusions =\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    c.cmd("DATA");
    c.send(b"Subject: x\r\n\r\nline\n.\nmore\r\n.\r\n");
    assert!(
        c.reply()
            .starts_with("550 5.5.2 mx.test.example Error: bare <LF> received")
    );
    assert!(c.cmd("NOOP").starts_with("250"));
}

#[test]
fn oversized_message_is_refused_with_flat_memory() {
    let d = Daemon::start("");
    let before = d.rss();
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    assert!(c.cmd("DATA").starts_with("354"));
    let line = [b"x".repeat(998).as_slice(), b"\r\n"].concat();
    let chunk = line.repeat(1024); // 1 MiB
    for _ in 0..40 {
        c.send(&chunk);
    }
    c.send(b".\r\n");
    assert!(c.reply().starts_with("552 5.3.4"));
    let after = d.rss();
    let growth = after.saturating_sub(before);
    eprintln!(
        "RSS before {before} after {after} growth {growth} bytes for a 40 MiB message against a 10 MiB limit"
    );
    assert!(growth < 24 << 20, "memory grew by {growth} bytes");
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let mut d = Daemon::start_keeping_local_mail("");
    let mut acked = Vec::new();
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    for i in 0..50 {
        c.cmd("MAIL FROM:<a@example.org>");
        c.cmd("RCPT TO:<alice@mx.test.example>");
        c.cmd("DATA");
        c.send(format!("Subject: {i}\r\n\r\nmessage {i}\r\n.\r\n").as_bytes());
        let r = c.reply();
        let id = r
            .trim()
            .strip_prefix("250 2.0.0 Ok: queued as ")
            .expect("queued")
            .to_string();
        acked.push(id);
    }
    d.kill();
    d.spawn();
    d.stop();
    let q: Vec<String> = queued_messages(&d.spool_dir())
        .into_iter()
        .map(|m| m.0.to_string())
        .collect();
    for id in &acked {
        assert!(q.contains(id), "{id} lost after SIGKILL");
    }
}

#[test]
fn stop_status_and_reload() {
    let mut d = Daemon::start("smtpd_banner = $myhostname ESMTP first");
    let status = corepost(&["status", "-c", &d.config_dir()]);
    assert!(status.status.success());
    assert!(stdout(&status).contains(&format!("PID: {}", d.pid())));
    // An open session survives a reload; new sessions see the new banner.
    let mut old = Raw::connect(d.port);
    old.cmd("EHLO x");
    let main = d.dir.path().join("main.cf");
    let text = std::fs::read_to_string(&main)
        .unwrap()
        .replace("ESMTP first", "ESMTP second");
    std::fs::write(&main, text).unwrap();
    assert!(
        corepost(&["reload", "-c", &d.config_dir()])
            .status
            .success()
    );
    std::thread::sleep(std::time::Duration::from_millis(600));
    let mut new = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    let mut buf = [0u8; 256];
    let n = std::io::Read::read(&mut new, &mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("ESMTP second"));
    assert!(old.cmd("NOOP").starts_with("250"));
    // stop: the open session gets 421, the daemon exits 0.
    let stop = corepost(&["stop", "-c", &d.config_dir()]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(old.reply().starts_with("421 4.3.2"));
    let exit = d.child.take().unwrap().wait().unwrap();
    assert!(exit.success());
    let status = corepost(&["status", "-c", &d.config_dir()]);
    assert_eq!(status.status.code(), Some(1));
}

#[test]
fn many_idle_connections() {
    // More sessions than Postfix's default_process_limit (100) admits.
    let d = Daemon::start("default_process_limit = 0");
    let before = d.rss();
    let n = 2000;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let s = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
        conns.push(s);
    }
    // Every connection gets its greeting.
    for s in &mut conns {
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut buf = [0u8; 128];
        let k = std::io::Read::read(s, &mut buf).unwrap();
        assert!(buf[..k].starts_with(b"220 "));
    }
    let after = d.rss();
    let per = after.saturating_sub(before) / n as u64;
    eprintln!("{n} idle connections: RSS {before} -> {after}, {per} bytes per connection");
    assert!(per < 64 * 1024, "{per} bytes per idle connection");
}

#[test]
fn backlog_limit_slows_then_refuses() {
    let d = Daemon::start_keeping_local_mail(
        "corepost_cores = 1\ncorepost_core_backlog_limit = 1\nin_flow_delay = 1s\n",
    );
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    for _ in 0..2 {
        assert!(c.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        c.cmd("RCPT TO:<alice@mx.test.example>");
        c.cmd("DATA");
        c.send(b"Subject: q\r\n\r\nx\r\n.\r\n");
        assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    }
    // Two queued on the only core, over the limit of one: the next MAIL
    // waits in_flow_delay, then gets 451.
    let t = std::time::Instant::now();
    assert_eq!(
        c.cmd("MAIL FROM:<a@example.org>"),
        "451 4.3.1 Insufficient system storage\r\n"
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(900));
    assert!(c.cmd("NOOP").starts_with("250"));
}

#[test]
fn root_drops_to_mail_owner() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("not root: privilege drop not exercised");
        return;
    }
    let mut d = Daemon::start_keeping_local_mail("mail_owner = nobody\n");
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    let nobody = corepost_config::tables::open_table("unix:passwd.byname")
        .unwrap()
        .lookup("nobody")
        .unwrap()
        .unwrap();
    let uid = nobody.split(':').nth(2).unwrap().to_string();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == uid),
        "{uid_line}"
    );
    // It still queues mail as that user.
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@example.org>");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    c.cmd("DATA");
    c.send(b"Subject: q\r\n\r\nx\r\n.\r\n");
    assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    c.cmd("QUIT");
    assert!(d.stop().unwrap().success());
    assert_eq!(queued_messages(&d.spool_dir()).len(), 1);
}
