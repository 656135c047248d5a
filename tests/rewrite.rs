//! Address rewriting end to end, as Postfix 3.7's cleanup and smtpd do it
//! (checked side by side with a throwaway Postfix): virtual aliases for SMTP
//! and local mail with `orig_to=` in the delivery log, relocated users,
//! header addresses of local mail, `myorigin` read from a file.

mod support;

use std::io::Write;
use std::process::{Command, Stdio};
use support::*;

const PICKUP: &str = "pickup unix n - n 60 1 pickup\n";

const ALIASES: &str = "virtual_alias_domains = valias.test\nvirtual_alias_maps = inline:{ {fwd@remote.test = b@remote.test}, {info@valias.test = b@remote.test, c@remote.test}, {multi@remote.test = x@remote.test, fwd@remote.test}, {@catch.test = catch@remote.test}, {user@ext.test = u2@remote.test}, {@ext2.test = @remote.test} }\nrecipient_delimiter = +\nrelocated_maps = inline:{ {moved@remote.test = new@where.test} }\n";

fn daemon(sink: &Sink, extra: &str) -> Daemon {
    Daemon::start_with_master_lines(
        &format!(
            "relayhost = [127.0.0.1]:{}\nmydestination = $myhostname, localhost\n{ALIASES}{extra}",
            sink.port
        ),
        PICKUP,
    )
}

fn recipients_of(log: &SinkLog) -> Vec<String> {
    let mut all: Vec<String> = log
        .messages
        .iter()
        .flat_map(|m| m.1.iter().cloned())
        .collect();
    all.sort();
    all
}

fn wait_for_log(d: &Daemon, needle: &str) -> String {
    wait_until(10, || d.log().contains(needle).then(|| d.log()))
        .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", d.log()))
}

#[test]
fn virtual_aliases_rewrite_smtp_mail_before_routing() {
    let sink = Sink::start();
    let d = daemon(&sink, "");
    let id = submit(
        d.port,
        "s@src.test",
        &[
            "info@valias.test",
            "multi@remote.test",
            "user+tag@ext.test",
            "a+b@ext2.test",
            "x@catch.test",
            "plain@remote.test",
        ],
        "Subject: aliases\r\n\r\nhello",
    );
    let log = sink.wait_for(1, 10);
    let got = wait_until(10, || {
        let r = recipients_of(&sink.snapshot());
        (r.len() >= 8).then_some(r)
    })
    .unwrap_or_else(|| recipients_of(&log));
    assert_eq!(
        got,
        [
            "a+b@remote.test",
            "b@remote.test",
            "b@remote.test",
            "c@remote.test",
            "catch@remote.test",
            "plain@remote.test",
            "u2+tag@remote.test",
            "x@remote.test",
        ]
    );
    for line in [
        format!("{id}: to=<b@remote.test>, orig_to=<info@valias.test>, relay="),
        format!("{id}: to=<c@remote.test>, orig_to=<info@valias.test>, relay="),
        format!("{id}: to=<b@remote.test>, orig_to=<multi@remote.test>, relay="),
        format!("{id}: to=<x@remote.test>, orig_to=<multi@remote.test>, relay="),
        format!("{id}: to=<u2+tag@remote.test>, orig_to=<user+tag@ext.test>, relay="),
        format!("{id}: to=<a+b@remote.test>, orig_to=<a+b@ext2.test>, relay="),
        format!("{id}: to=<catch@remote.test>, orig_to=<x@catch.test>, relay="),
        format!("{id}: to=<plain@remote.test>, relay="),
    ] {
        wait_for_log(&d, &line);
    }
    assert!(
        d.log().contains(&format!("{id}: from=<s@src.test>, size="))
            && d.log().contains("nrcpt=8 (queue active)"),
        "{}",
        d.log()
    );
}

#[test]
fn unknown_virtual_alias_and_relocated_recipients_are_refused_at_rcpt() {
    let sink = Sink::start();
    let d = daemon(&sink, "");
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    assert!(c.cmd("MAIL FROM:<s@src.test>").starts_with("250"));
    assert_eq!(
        c.cmd("RCPT TO:<nobody@valias.test>").trim(),
        "550 5.1.1 <nobody@valias.test>: Recipient address rejected: User unknown in virtual alias table"
    );
    assert_eq!(
        c.cmd("RCPT TO:<moved@remote.test>").trim(),
        "550 5.1.6 <moved@remote.test>: Recipient address rejected: User has moved to new@where.test"
    );
    assert!(c.cmd("RCPT TO:<info@valias.test>").starts_with("250"));
    c.cmd("QUIT");
    wait_for_log(
        &d,
        "NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 550 5.1.6 <moved@remote.test>: Recipient address rejected: User has moved to new@where.test; from=<s@src.test> to=<moved@remote.test> proto=ESMTP helo=<client.test>",
    );
}

#[test]
fn an_alias_loop_defers_the_message_with_postfix_reply() {
    let sink = Sink::start();
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nvirtual_alias_recursion_limit = 5\nvirtual_alias_maps = inline:{{ {{a@remote.test = b@remote.test}}, {{b@remote.test = a@remote.test}} }}\n",
        sink.port
    ));
    let reply = end_of_data_reply(
        d.port,
        "s@src.test",
        &["a@remote.test"],
        "Subject: x\r\n\r\nx",
    );
    assert_eq!(reply, "451 4.6.0 Alias expansion error");
    wait_for_log(
        &d,
        ": unreasonable virtual_alias_maps map nesting for a@remote.test -- message not accepted, try again later",
    );
}

fn sendmail(d: &Daemon, args: &[&str], input: &str) -> std::process::Output {
    let link = d.dir.path().join("sendmail");
    if !link.exists() {
        std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    }
    let mut child = Command::new(&link)
        .arg("-C")
        .arg(d.config_dir())
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write");
    child.wait_with_output().expect("sendmail")
}

#[test]
fn local_mail_is_rewritten_and_its_headers_qualified_with_myorigin_from_a_file() {
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let mailname = dir.path().join("mailname");
    std::fs::write(&mailname, "mail.example.org\n").unwrap();
    let d = daemon(&sink, &format!("myorigin = {}\n", mailname.display()));
    let out = sendmail(
        &d,
        &["-f", "sender", "fwd@remote.test", "zz"],
        "To: fwd@remote.test, auditu1\nCc: Bob <bob> (home)\nReply-To: rr\nX-Other: zz\nSubject: t\n\nhi\n",
    );
    assert!(out.status.success(), "{out:?}");
    let log = sink.wait_for(1, 15);
    let (from, _, content) = &log.messages[0];
    assert_eq!(from, "sender@mail.example.org");
    let all = wait_until(10, || {
        let r = recipients_of(&sink.snapshot());
        (r.len() >= 2).then_some(r)
    })
    .unwrap_or_else(|| recipients_of(&sink.snapshot()));
    assert_eq!(all, ["b@remote.test", "zz@mail.example.org"]);
    let text = String::from_utf8_lossy(content);
    assert!(
        text.contains("To: fwd@remote.test, auditu1@mail.example.org\r\n"),
        "{text}"
    );
    assert!(
        text.contains("Cc: Bob <bob@mail.example.org> (home)\r\n"),
        "{text}"
    );
    assert!(text.contains("Reply-To: rr@mail.example.org\r\n"), "{text}");
    assert!(text.contains("X-Other: zz\r\n"), "{text}");
    wait_for_log(&d, "to=<b@remote.test>, orig_to=<fwd@remote.test>, relay=");
    wait_for_log(&d, "to=<zz@mail.example.org>, orig_to=<zz>, relay=");
    assert!(!d.log().contains("malformed"), "{}", d.log());
}

#[test]
fn an_unreadable_myorigin_file_is_refused_by_check_and_sendmail() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "myhostname = mx.test.example\nqueue_directory = {}/spool\nmyorigin = /nonexistent/mailname\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("master.cf"),
        format!("127.0.0.1:{} inet n - n - - smtpd\n{PICKUP}", free_port()),
    )
    .unwrap();
    let link = dir.path().join("sendmail");
    std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    let mut child = Command::new(&link)
        .arg("-C")
        .arg(dir.path())
        .args(["-f", "sender", "x@remote.test"])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sendmail");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"Subject: t\n\nhi\n")
        .expect("write");
    let out = child.wait_with_output().expect("sendmail");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("open /nonexistent/mailname: No such file or directory"),
        "{}",
        stderr(&out)
    );
    let check = corepost(&["check", "-c", &dir.path().display().to_string()]);
    assert!(!check.status.success());
    assert!(
        stderr(&check).contains("open /nonexistent/mailname"),
        "{}",
        stderr(&check)
    );
}

#[test]
fn header_addresses_of_local_smtp_clients_are_completed_and_others_left_alone() {
    let sink = Sink::start();
    let message = "From: me\r\nTo: auditu1, Bob <bob>\r\nX-To: raw\r\nSubject: t\r\n\r\nTo: body";
    // 127.0.0.1 is one of this host's addresses: permit_inet_interfaces.
    let d = Daemon::start(&format!("relayhost = [127.0.0.1]:{}\n", sink.port));
    submit(d.port, "s@src.test", &["r@remote.test"], message);
    let log = sink.wait_for(1, 10);
    let text = String::from_utf8_lossy(&log.messages[0].2).into_owned();
    assert!(
        text.contains("From: me@mx.test.example\r\nTo: auditu1@mx.test.example, Bob <bob@mx.test.example>\r\nX-To: raw\r\n"),
        "{text}"
    );
    assert!(text.ends_with("\r\n\r\nTo: body\r\n"), "{text}");
    drop(d);
    // Not a local client, no remote_header_rewrite_domain: untouched.
    let sink = Sink::start();
    let d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nlocal_header_rewrite_clients =\n",
        sink.port
    ));
    submit(d.port, "s@src.test", &["r@remote.test"], message);
    let log = sink.wait_for(1, 10);
    let text = String::from_utf8_lossy(&log.messages[0].2).into_owned();
    assert!(
        text.contains("From: me\r\nTo: auditu1, Bob <bob>\r\n"),
        "{text}"
    );
    drop(d);
    // remote_header_rewrite_domain completes other clients' addresses
    // (and user@host too under append_dot_mydomain, as Postfix 3.7).
    for (dot, expected) in [
        ("no", "To: a@remote.example, b@host, c@h.x\r\n"),
        (
            "yes",
            "To: a@remote.example, b@host.remote.example, c@h.x\r\n",
        ),
    ] {
        let sink = Sink::start();
        let d = Daemon::start(&format!(
            "relayhost = [127.0.0.1]:{}\nlocal_header_rewrite_clients =\nremote_header_rewrite_domain = remote.example\nappend_dot_mydomain = {dot}\n",
            sink.port
        ));
        submit(
            d.port,
            "s@src.test",
            &["r@remote.test"],
            "To: a, b@host, c@h.x\r\n\r\nx",
        );
        let log = sink.wait_for(1, 10);
        let text = String::from_utf8_lossy(&log.messages[0].2).into_owned();
        assert!(text.contains(expected), "{text}");
    }
}

/// cleanup's automatic blind copies as Postfix: `always_bcc` for every
/// message, `sender_bcc_maps` by the sender, `recipient_bcc_maps` by each
/// recipient; a copy goes through virtual aliases like any recipient, an
/// unqualified one gets `@$myorigin`, a copy already queued is not queued
/// twice, and local submissions get them too. `receive_override_options =
/// no_address_mappings` turns them off.
#[test]
fn automatic_blind_copies_are_added_by_cleanup() {
    let sink = Sink::start();
    let bcc = "myorigin = remote.test\nalways_bcc = archive@remote.test\nsender_bcc_maps = inline:{ {@src.test = fwd@remote.test} }\nrecipient_bcc_maps = inline:{ {watched@remote.test = audit}, {plain@remote.test = archive@remote.test} }\n";
    let d = daemon(&sink, bcc);
    submit(
        d.port,
        "s@src.test",
        &["watched@remote.test", "plain@remote.test"],
        "Subject: copies\r\n\r\nhello",
    );
    let got = wait_until(10, || {
        let r = recipients_of(&sink.snapshot());
        (r.len() >= 5).then_some(r)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", sink.snapshot().messages, d.log()));
    // fwd@remote.test is a virtual alias of b@remote.test; "audit" is
    // qualified with $myorigin.
    assert_eq!(
        got,
        vec![
            "archive@remote.test",
            "audit@remote.test",
            "b@remote.test",
            "plain@remote.test",
            "watched@remote.test"
        ],
        "{}",
        d.log()
    );
    let out = sendmail(
        &d,
        &["-f", "local@elsewhere.test", "plain@remote.test"],
        "Subject: l\n\nx\n",
    );
    assert!(out.status.success());
    let got = wait_until(10, || {
        let r = recipients_of(&sink.snapshot());
        (r.len() >= 7).then_some(r)
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", sink.snapshot().messages, d.log()));
    assert_eq!(
        got.iter().filter(|r| *r == "archive@remote.test").count(),
        2
    );
    let off = Sink::start();
    let e = daemon(
        &off,
        &format!("{bcc}receive_override_options = no_address_mappings\n"),
    );
    submit(
        e.port,
        "s@src.test",
        &["watched@remote.test"],
        "Subject: off\r\n\r\nhello",
    );
    let log = off.wait_for(1, 10);
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        recipients_of(&off.snapshot()),
        vec!["watched@remote.test"],
        "{log:?}"
    );
}
