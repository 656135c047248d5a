//! Milters end to end: the daemon talks the milter protocol to real
//! milters — a pymilter script that exercises every reply and edit
//! (`tests/fixtures/milter/scripted.py`), OpenDKIM signing — and to none
//! (a milter that is down: `milter_default_action`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// A milter process, stopped when dropped.
struct Milter {
    child: Child,
    port: u16,
    record: PathBuf,
}

impl Drop for Milter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for_port(port: u16) {
    let ok = wait_until(20, || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
    assert!(ok.is_some(), "milter on port {port} did not start");
}

fn scripted(dir: &Path) -> Milter {
    let port = free_port();
    let record = dir.join("milter-record.jsonl");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/milter/scripted.py");
    let child = Command::new("/usr/bin/python3")
        .arg(script)
        .arg(port.to_string())
        .arg(&record)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3-milter (apt-get install python3-milter)");
    wait_for_port(port);
    Milter {
        child,
        port,
        record,
    }
}

impl Milter {
    /// The events the milter recorded, as JSON values.
    fn events(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn relay_config(sink: &Sink, milters: &str) -> String {
    format!(
        "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nmynetworks = 127.0.0.0/8\nsmtpd_milters = {milters}\n",
        sink.port
    )
}

fn session(port: u16, sender: &str, rcpts: &[&str], subject: &str) -> (Vec<String>, String) {
    let mut c = Raw::connect(port);
    let mut replies = vec![c.cmd("EHLO client.test")];
    replies.push(c.cmd(&format!("MAIL FROM:<{sender}>")));
    for r in rcpts {
        replies.push(c.cmd(&format!("RCPT TO:<{r}>")));
    }
    replies.push(c.cmd("DATA"));
    let end = if replies.last().is_some_and(|r| r.starts_with("354")) {
        c.send(
            format!(
                "Subject: {subject}\r\nX-Remove: bye\r\nFrom: <{sender}>\r\n\r\noriginal body\r\n.\r\n"
            )
            .as_bytes(),
        );
        c.reply().trim().to_string()
    } else {
        String::new()
    };
    c.cmd("QUIT");
    (replies, end)
}

#[test]
fn envelope_replies_reject_tempfail_and_custom_as_postfix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = scripted(tmp.path());
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, &format!("inet:127.0.0.1:{}", m.port)));
    let (replies, end) = session(
        d.port,
        "s@example.org",
        &[
            "reject@example.com",
            "tempfail@example.com",
            "custom@example.com",
            "ok@example.com",
        ],
        "plain",
    );
    assert_eq!(replies[2].trim(), "550 5.7.1 Command rejected");
    assert_eq!(
        replies[3].trim(),
        "451 4.7.1 Service unavailable - try again later"
    );
    assert_eq!(
        replies[4].trim(),
        "550 5.7.0 custom rejection for 100% of this"
    );
    assert!(replies[5].starts_with("250"), "{replies:?}");
    assert!(end.starts_with("250 2.0.0 Ok: queued as"), "{end}");
    let log = d.log();
    assert!(
        log.contains("NOQUEUE: milter-reject: RCPT from unknown[127.0.0.1]: 550 5.7.1 Command rejected; from=<s@example.org> to=<reject@example.com> proto=ESMTP helo=<client.test>"),
        "{log}"
    );
    assert!(
        log.contains("milter-reject: RCPT from unknown[127.0.0.1]: 451 4.7.1 Service unavailable - try again later; from=<s@example.org> to=<tempfail@example.com>"),
        "{log}"
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages[0].1, vec!["ok@example.com".to_string()]);
    // The macros a milter gets, with Postfix's values.
    let events = m.events();
    let connect = events
        .iter()
        .find(|e| e["event"] == "connect")
        .expect("connect");
    assert_eq!(connect["j"], "mx.test.example");
    assert_eq!(connect["{daemon_name}"], "mx.test.example");
    assert_eq!(connect["{daemon_addr}"], "127.0.0.1");
    assert_eq!(connect["_"], "unknown [127.0.0.1]");
    assert_eq!(connect["hostname"], "[127.0.0.1]");
    assert!(
        connect["v"].as_str().unwrap_or("").starts_with("corepost "),
        "{connect}"
    );
    let from = events
        .iter()
        .find(|e| e["event"] == "envfrom")
        .expect("envfrom");
    assert_eq!(from["sender"], "<s@example.org>");
    assert_eq!(from["{mail_addr}"], "s@example.org");
    let rcpt = events
        .iter()
        .find(|e| e["event"] == "envrcpt" && e["rcpt"] == "<ok@example.com>")
        .expect("rcpt");
    assert_eq!(rcpt["{rcpt_addr}"], "ok@example.com");
    assert_eq!(rcpt["{rcpt_mailer}"], "smtp");
    assert_eq!(
        rcpt["{rcpt_host}"],
        "[127.0.0.1]:".to_string() + &sink.port.to_string()
    );
    // As in Postfix, the queue id exists only once a recipient is accepted.
    assert!(rcpt["i"].is_null(), "{rcpt}");
    let eom = events.iter().find(|e| e["event"] == "eom").expect("eom");
    let id = end.rsplit(' ').next().unwrap_or_default();
    assert_eq!(eom["i"], id);
    // Our Received: header is not shown to the milter.
    assert_eq!(eom["headers"][0][0], "Subject");
    assert_eq!(eom["body"], "original body\r\n");
}

#[test]
fn end_of_message_decisions_as_postfix() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = scripted(tmp.path());
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, &format!("inet:127.0.0.1:{}", m.port)));
    let to = ["ok@example.com"];
    let (_, reject) = session(d.port, "s@example.org", &to, "reject");
    assert_eq!(reject, "550 5.7.1 Command rejected");
    let (_, tempfail) = session(d.port, "s@example.org", &to, "tempfail");
    assert_eq!(tempfail, "451 4.7.1 Service unavailable - try again later");
    let (_, custom) = session(d.port, "s@example.org", &to, "custom");
    assert_eq!(custom, "554 5.7.1 content refused");
    let (_, discard) = session(d.port, "s@example.org", &to, "discard");
    assert!(discard.starts_with("250 2.0.0 Ok: queued as "), "{discard}");
    let discarded = discard.rsplit(' ').next().unwrap_or_default().to_string();
    let (_, held) = session(d.port, "s@example.org", &to, "quarantine");
    let held = held.rsplit(' ').next().unwrap_or_default().to_string();
    let (_, early) = session(d.port, "discard-early@example.org", &to, "plain");
    assert!(early.starts_with("250 2.0.0 Ok: queued as "), "{early}");
    let log = d.log();
    assert!(
        log.contains(": milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 5.7.1 Command rejected; from=<s@example.org> to=<ok@example.com> proto=ESMTP helo=<client.test>"),
        "{log}"
    );
    assert!(
        log.contains(&format!("{discarded}: milter-discard: END-OF-MESSAGE from unknown[127.0.0.1]: milter triggers DISCARD action; from=<s@example.org>")),
        "{log}"
    );
    assert!(
        log.contains(&format!("{held}: milter-hold: END-OF-MESSAGE from unknown[127.0.0.1]: milter triggers HOLD action")),
        "{log}"
    );
    assert!(
        log.contains("NOQUEUE: milter-discard: MAIL from unknown[127.0.0.1]: milter triggers DISCARD action; from=<discard-early@example.org> proto=ESMTP helo=<client.test>"),
        "{log}"
    );
    // A quarantine holds that message only: the next one in the same
    // session is not held.
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    for subject in ["quarantine", "plain"] {
        assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
        assert!(c.cmd("RCPT TO:<ok@example.com>").starts_with("250"));
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(format!("Subject: {subject}\r\n\r\nbody\r\n.\r\n").as_bytes());
        assert!(c.reply().starts_with("250 2.0.0 Ok: queued as"));
    }
    c.cmd("QUIT");
    let held_count = || d.log().matches("milter-hold: END-OF-MESSAGE").count();
    assert_eq!(held_count(), 2, "{}", d.log());
    // The held messages wait in the hold queue; the plain one is delivered.
    let list = corepost(&["queue", "-c", &d.config_dir(), "list"]);
    assert!(
        stdout(&list).contains(&format!("{held}!")),
        "{}",
        stdout(&list)
    );
    let got = sink.wait_for(1, 20);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(sink.snapshot().messages.len(), 1, "{}", d.log());
}

#[test]
fn end_of_message_edits_change_what_is_queued() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = scripted(tmp.path());
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, &format!("inet:127.0.0.1:{}", m.port)));
    let (replies, end) = session(
        d.port,
        "s@example.org",
        &["ok@example.com", "gone@example.com"],
        "edit",
    );
    assert!(
        end.starts_with("250 2.0.0 Ok: queued as"),
        "{replies:?} {end}"
    );
    let got = sink.wait_for(1, 20);
    let (sender, mut rcpts, content) = got.messages[0].clone();
    rcpts.sort();
    assert_eq!(sender, "new-sender@example.com");
    assert_eq!(
        rcpts,
        [
            "added-par@example.com",
            "added@example.com",
            "ok@example.com"
        ]
    );
    let text = String::from_utf8_lossy(&content).to_string();
    let (headers, body) = text.split_once("\r\n\r\n").expect("separator");
    let names: Vec<&str> = headers
        .split("\r\n")
        .filter(|l| !l.starts_with([' ', '\t']))
        .map(|l| l.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["Received", "X-Inserted", "Subject", "From", "X-Added"],
        "{headers}"
    );
    assert!(headers.contains("Subject: edited\r\n"), "{headers}");
    assert!(headers.contains("X-Inserted: top\r\n"), "{headers}");
    assert_eq!(body, "replaced body\r\nsecond line\r\n");
}

#[test]
fn a_milter_that_is_down_gets_the_default_action() {
    let sink = Sink::start();
    let down = free_port();
    let d = Daemon::start(&format!(
        "{}milter_connect_timeout = 2s\n",
        relay_config(&sink, &format!("inet:127.0.0.1:{down}"))
    ));
    let mut c = Raw::connect(d.port);
    assert!(c.cmd("EHLO client.test").starts_with("250-"));
    let tempfail = "451 4.7.1 Service unavailable - try again later";
    assert_eq!(c.cmd("VRFY root").trim(), tempfail);
    assert_eq!(c.cmd("MAIL FROM:<s@example.org>").trim(), tempfail);
    assert_eq!(c.cmd("FOO bar").trim(), tempfail);
    c.cmd("QUIT");
    let log = d.log();
    assert!(
        log.contains(&format!(
            "warning: connect to Milter service inet:127.0.0.1:{down}: Connection refused"
        )),
        "{log}"
    );
    // Postfix 3.7's lines for the same dialogue.
    for line in [
        "NOQUEUE: milter-reject: CONNECT from unknown[127.0.0.1]: 451 4.7.1 Service unavailable - try again later; proto=SMTP\n",
        "NOQUEUE: milter-reject: EHLO from unknown[127.0.0.1]: 451 4.7.1 Service unavailable - try again later; proto=SMTP helo=<client.test>\n",
        "NOQUEUE: milter-reject: MAIL from unknown[127.0.0.1]: 451 4.7.1 Service unavailable - try again later; from=<s@example.org> proto=ESMTP helo=<client.test>\n",
        "NOQUEUE: milter-reject: UNKNOWN from unknown[127.0.0.1]: 451 4.7.1 Service unavailable - try again later; proto=ESMTP helo=<client.test>\n",
        "disconnect from unknown[127.0.0.1] ehlo=1 mail=0/1 vrfy=0/1 quit=1 unknown=0/1 commands=2/5\n",
    ] {
        assert!(log.contains(line), "{line}{log}");
    }
    // default_action=reject: Postfix's greeting, EHLO and MAIL replies.
    let d = Daemon::start(&format!(
        "{}milter_default_action = reject\n",
        relay_config(&sink, &format!("inet:127.0.0.1:{down}"))
    ));
    let (mut c, greeting) = Raw::open_from(d.port, "127.0.0.1");
    assert_eq!(
        greeting.trim(),
        "554 mx.test.example ESMTP not accepting connections"
    );
    assert_eq!(
        c.cmd("EHLO client.test"),
        "250-mx.test.example\r\n250 ENHANCEDSTATUSCODES\r\n"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<s@example.org>").trim(),
        "550 5.5.0 Service unavailable"
    );
    c.cmd("QUIT");
    // default_action=accept (per milter, Postfix 3 syntax): mail flows.
    let d = Daemon::start(&relay_config(
        &sink,
        &format!("{{ inet:127.0.0.1:{down}, default_action=accept }}"),
    ));
    let id = submit(
        d.port,
        "s@example.org",
        &["ok@example.com"],
        "Subject: x\r\n\r\nhi",
    );
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{id}: {}", d.log());
}

#[test]
fn smtpd_milter_maps_disable_milters_per_client() {
    let sink = Sink::start();
    let down = free_port();
    let d = Daemon::start(&format!(
        "{}smtpd_milter_maps = inline:{{ 127.0.0.1=DISABLE }}\n",
        relay_config(&sink, &format!("inet:127.0.0.1:{down}"))
    ));
    submit(
        d.port,
        "s@example.org",
        &["ok@example.com"],
        "Subject: x\r\n\r\nhi",
    );
    assert_eq!(sink.wait_for(1, 20).messages.len(), 1);
    assert!(!d.log().contains("Milter service"), "{}", d.log());
}

/// OpenDKIM as a signing milter on a loopback socket (foreground, its own
/// configuration and a fresh key), and the TXT record for its key.
fn opendkim(dir: &Path) -> (Milter, String) {
    let out = Command::new("opendkim-genkey")
        .args(["-D"])
        .arg(dir)
        .args(["-d", "example.org", "-s", "sel"])
        .output()
        .expect("opendkim-genkey (apt-get install opendkim-tools)");
    assert!(out.status.success(), "{out:?}");
    let txt = std::fs::read_to_string(dir.join("sel.txt")).expect("sel.txt");
    // `( "v=DKIM1; h=sha256; k=rsa; " "p=..." "..." )`: the quoted parts.
    let record: String = txt.split('"').skip(1).step_by(2).collect();
    let port = free_port();
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!(
            "Syslog no\nMode s\nDomain example.org\nSelector sel\nKeyFile {}\nSocket inet:{port}@127.0.0.1\nCanonicalization relaxed/relaxed\nRequireSafeKeys false\n",
            dir.join("sel.private").display()
        ),
    )
    .expect("opendkim.conf");
    let child = Command::new("opendkim")
        .arg("-f")
        .arg("-x")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("opendkim");
    wait_for_port(port);
    let m = Milter {
        child,
        port,
        record: dir.join("unused"),
    };
    (m, record)
}

/// python3-dkim's verdict, the key's TXT record answering its lookup.
fn dkim_verifies(message: &[u8], record: &str, dir: &Path) -> bool {
    let file = dir.join("signed.eml");
    std::fs::write(&file, message).expect("write");
    let script = format!(
        "import dkim, sys\ndef dns(name, timeout=5):\n    return b'{record}' if name.rstrip(b'.') == b'sel._domainkey.example.org' else None\nsys.exit(0 if dkim.verify(open('{}', 'rb').read(), dnsfunc=dns) else 1)\n",
        file.display()
    );
    let out = Command::new("/usr/bin/python3")
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "python3-dkim did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

#[test]
fn opendkim_signs_through_smtpd_milters_and_the_signature_verifies() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (m, record) = opendkim(tmp.path());
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, &format!("inet:127.0.0.1:{}", m.port)));
    let content = "From: Sender <s@example.org>\r\nTo: <r@example.com>\r\nSubject: signed by a milter\r\nDate: Sun, 6 Dec 2026 12:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHello,\r\n\r\nthis is signed.\r\n";
    submit(
        d.port,
        "s@example.org",
        &["r@example.com"],
        content.trim_end(),
    );
    let got = sink.wait_for(1, 20);
    let message = &got.messages[0].2;
    let text = String::from_utf8_lossy(message);
    assert!(
        text.contains("DKIM-Signature: v=1; a=rsa-sha256;"),
        "{text}"
    );
    let headers = text.split("\r\n\r\n").next().unwrap_or_default();
    assert_eq!(headers.matches("DKIM-Signature:").count(), 1, "{text}");
    assert!(dkim_verifies(message, &record, tmp.path()), "{text}");
    // A changed body no longer verifies: the check can fail.
    let tampered = text.replace("this is signed.", "this is changed.");
    assert!(!dkim_verifies(tampered.as_bytes(), &record, tmp.path()));
}

fn sendmail(d: &Daemon, sender: &str, rcpt: &str, message: &str) {
    let link = d.dir.path().join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    }
    let mut child = Command::new(&link)
        .arg("-C")
        .arg(d.config_dir())
        .args(["-f", sender, rcpt])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(Stdio::piped())
        .spawn()
        .expect("sendmail");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(message.as_bytes())
        .expect("write");
    assert!(child.wait().expect("wait").success());
}

#[test]
fn non_smtpd_milters_see_local_submissions_as_postfix_emulates_them() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = scripted(tmp.path());
    let sink = Sink::start();
    let d = Daemon::start_with_master_lines(
        &format!(
            "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nnon_smtpd_milters = inet:127.0.0.1:{}\nbounce_notice_recipient = postmaster\n",
            sink.port, m.port
        ),
        "pickup unix n - n 60 1 pickup\n",
    );
    sendmail(
        &d,
        "s@example.org",
        "ok@example.com",
        "From: s@example.org\nSubject: edit\nX-Remove: x\n\nlocal body\n",
    );
    let got = sink.wait_for(1, 30);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let (sender, rcpts, content) = &got.messages[0];
    assert_eq!(sender, "new-sender@example.com");
    assert!(
        rcpts.contains(&"added@example.com".to_string()),
        "{rcpts:?}"
    );
    let text = String::from_utf8_lossy(content);
    assert!(
        text.contains("Subject: edited\r\n") && text.ends_with("replaced body\r\nsecond line\r\n"),
        "{text}"
    );
    // The emulated SMTP events, as Postfix's cleanup sends them.
    let events = m.events();
    let connect = events
        .iter()
        .find(|e| e["event"] == "connect")
        .expect("connect");
    assert_eq!(connect["hostname"], "localhost");
    let from = events
        .iter()
        .find(|e| e["event"] == "envfrom")
        .expect("envfrom");
    assert_eq!(from["sender"], "s@example.org");
    assert!(from["i"].as_str().is_some_and(|i| !i.is_empty()), "{from}");

    // A 5xx at end of message returns the mail to its sender.
    sendmail(
        &d,
        "s@example.org",
        "ok@example.com",
        "From: s@example.org\nSubject: reject\n\nno\n",
    );
    let got = sink.wait_for(2, 30);
    let log = d.log();
    assert!(
        log.contains(": milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Command rejected; from=<s@example.org> to=<ok@example.com>\n"),
        "{log}"
    );
    let (bounce_sender, bounce_rcpts, bounce) = &got.messages[1];
    assert_eq!(bounce_sender, "");
    assert_eq!(bounce_rcpts, &vec!["s@example.org".to_string()]);
    assert!(
        String::from_utf8_lossy(bounce).contains("Command rejected"),
        "{log}"
    );
}

#[test]
fn a_milter_that_hangs_up_is_a_failed_milter() {
    let port = free_port();
    let mut closer = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket\ns=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(5)\nwhile True:\n  c,_=s.accept(); c.recv(100); c.close()\n"
            ),
        ])
        .spawn()
        .expect("python3");
    wait_for_port(port);
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, &format!("inet:127.0.0.1:{port}")));
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    let mail = c.cmd("MAIL FROM:<s@example.org>");
    c.cmd("QUIT");
    let _ = closer.kill();
    let _ = closer.wait();
    assert_eq!(
        mail.trim(),
        "451 4.7.1 Service unavailable - try again later"
    );
    let log = d.log();
    // Postfix 3.7's lines for the same milter.
    for line in [
        format!(
            "warning: milter inet:127.0.0.1:{port}: can't read SMFIC_OPTNEG reply packet header: Application error\n"
        ),
        format!("warning: milter inet:127.0.0.1:{port}: read error in initial handshake\n"),
    ] {
        assert!(log.contains(&line), "{line}{log}");
    }
}

#[test]
fn a_milter_that_does_not_answer_times_out() {
    let port = free_port();
    let mut silent = Command::new("python3")
        .args([
            "-c",
            &format!(
                "import socket, time\ns=socket.socket(); s.bind(('127.0.0.1',{port})); s.listen(5)\nkeep=[]\nwhile True:\n  c,_=s.accept(); keep.append(c)\n"
            ),
        ])
        .spawn()
        .expect("python3");
    wait_for_port(port);
    let sink = Sink::start();
    let d = Daemon::start(&format!(
        "{}milter_command_timeout = 1s\n",
        relay_config(
            &sink,
            &format!("{{ inet:127.0.0.1:{port}, default_action=accept }}")
        )
    ));
    let started = std::time::Instant::now();
    submit(
        d.port,
        "s@example.org",
        &["ok@example.com"],
        "Subject: x\r\n\r\nhi",
    );
    let _ = silent.kill();
    let _ = silent.wait();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(sink.wait_for(1, 20).messages.len(), 1);
    let line = format!(
        "warning: milter inet:127.0.0.1:{port}: can't read SMFIC_OPTNEG reply packet header: Connection timed out\n"
    );
    assert!(d.log().contains(&line), "{}", d.log());
}

#[test]
fn bdat_content_goes_through_the_milters_too() {
    let tmp = tempfile::tempdir().expect("tmp");
    let m = scripted(tmp.path());
    let sink = Sink::start();
    let d = Daemon::start(&relay_config(&sink, &format!("inet:127.0.0.1:{}", m.port)));
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<s@example.org>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<ok@example.com>").starts_with("250"));
    let message = "Subject: reject\r\n\r\nbody\r\n";
    c.send(format!("BDAT {} LAST\r\n{message}", message.len()).as_bytes());
    assert_eq!(c.reply().trim(), "550 5.7.1 Command rejected");
    c.cmd("QUIT");
    assert!(m.events().iter().any(|e| e["event"] == "eom"));
}
