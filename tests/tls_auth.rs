//! STARTTLS, implicit TLS and SMTP AUTH end to end: the real `corepost run`
//! driven by Python's smtplib/ssl, swaks and openssl s_client, with
//! certificates made by rcgen for each test, users added with
//! `corepost passwd`, and a stub speaking Dovecot's auth protocol.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use support::*;

/// A self-signed certificate for mx.test.example and 127.0.0.1, written
/// as cert.pem and key.pem into `dir`; returns (cert, key) paths.
fn make_cert(dir: &std::path::Path) -> (String, String) {
    let c = rcgen::generate_simple_self_signed(vec![
        "mx.test.example".to_string(),
        "127.0.0.1".to_string(),
    ])
    .expect("rcgen");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, c.cert.pem()).expect("cert");
    std::fs::write(&key, c.signing_key.serialize_pem()).expect("key");
    (cert.display().to_string(), key.display().to_string())
}

/// main.cf lines for TLS with those files.
fn tls_conf(cert: &str, key: &str, level: &str) -> String {
    format!(
        "smtpd_tls_security_level = {level}\nsmtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_loglevel = 1\nsmtpd_tls_received_header = yes\n"
    )
}

/// `corepost passwd -c DIR add USER` with the password on stdin.
fn add_user(d: &Daemon, user: &str, password: &str) {
    let mut child = Command::new(corepost_bin())
        .args(["passwd", "-c", &d.config_dir(), "add", user])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("corepost passwd");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(format!("{password}\n").as_bytes())
        .expect("write password");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success(), "{}", stderr(&out));
}

const PY_CTX: &str =
    "import smtplib, ssl, socket, base64\nctx = ssl.create_default_context(cafile=CERT)\n";

#[test]
fn starttls_with_smtplib_swaks_and_openssl_and_certificate_reload() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path());
    let mut d = Daemon::start_keeping_local_mail(&tls_conf(&cert, &key, "may"));
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
s = smtplib.SMTP('127.0.0.1', {port})
code, msg = s.ehlo('client.example')
assert b'STARTTLS' in msg, msg
code, msg = s.starttls(context=ctx)
assert code == 220, (code, msg)
code, msg = s.ehlo('client.example')
assert b'STARTTLS' not in msg, msg
print(s.sock.version(), s.sock.cipher()[0])
r = s.sendmail('sender@example.org', ['alice@mx.test.example'], 'Subject: tls\r\n\r\nover TLS\r\n')
assert r == {{}}, r
code, msg = s.docmd('STARTTLS')
assert code == 554 and b'TLS already active' in msg, (code, msg)
s.quit()
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");

    // swaks, TLS 1.2 through openssl s_client's cipher choice is not
    // forced; swaks just has to complete a STARTTLS transaction.
    let swaks = Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", d.port),
            "--tls",
            "--from",
            "s@example.org",
            "--to",
            "alice@mx.test.example",
            "--helo",
            "swaks.example",
        ])
        .output()
        .expect("swaks");
    let text = stdout(&swaks);
    assert!(swaks.status.success(), "{text}{}", stderr(&swaks));
    assert!(text.contains("TLS started"), "{text}");
    assert!(text.contains("250 2.0.0 Ok: queued as"), "{text}");

    // openssl s_client -starttls smtp, forced to TLS 1.2.
    let mut s_client = Command::new("openssl")
        .args([
            "s_client",
            "-starttls",
            "smtp",
            "-tls1_2",
            "-connect",
            &format!("127.0.0.1:{}", d.port),
            "-quiet",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl");
    let mut stdin = s_client.stdin.take().expect("stdin");
    stdin.write_all(b"EHLO ossl.example\r\n").expect("write");
    std::thread::sleep(std::time::Duration::from_millis(500));
    stdin.write_all(b"QUIT\r\n").expect("write");
    drop(stdin);
    let o = s_client.wait_with_output().expect("openssl");
    let text = stdout(&o);
    assert!(text.contains("250-mx.test.example"), "{text}{}", stderr(&o));
    assert!(text.contains("221 2.0.0 Bye"), "{text}");

    // A new certificate is served to new sessions after SIGHUP.
    let fingerprint = |d: &Daemon| {
        let (ok, out) = python(&format!(
            r#"import smtplib, ssl, hashlib
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port}); s.starttls(context=ctx)
print(hashlib.sha256(s.sock.getpeercert(binary_form=True)).hexdigest()); s.quit()
"#,
            port = d.port
        ));
        assert!(ok, "{out}");
        out.trim().to_string()
    };
    let before = fingerprint(&d);
    make_cert(certs.path());
    // SAFETY: signalling our own child.
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !d.log().contains("reload --") && std::time::Instant::now() < deadline {}
    // The cores pick the new settings up within 100 ms.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_ne!(
        fingerprint(&d),
        before,
        "reload must load the new certificate"
    );

    d.stop();
    let log = d.log();
    assert!(
        log.contains(
            "Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.3 with cipher TLS_"
        ),
        "{log}"
    );
    assert!(
        log.contains("Anonymous TLS connection established from unknown[127.0.0.1]: TLSv1.2 with cipher ECDHE-"),
        "{log}"
    );
    assert!(log.contains("starttls=1"), "{log}");
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 2, "{log}");
    let content = String::from_utf8_lossy(&queued[0].2).into_owned();
    assert!(
        content.contains("(using TLSv1.3 with cipher TLS_"),
        "{content}"
    );
    assert!(content.contains("with ESMTPS id"), "{content}");
    assert_eq!(queued[0].1.client.protocol, "ESMTPS");
    assert!(
        queued[0]
            .1
            .client
            .tls
            .as_deref()
            .is_some_and(|t| t.starts_with("TLSv1.3")),
        "{:?}",
        queued[0].1.client
    );
}

#[test]
fn plaintext_pipelined_after_starttls_is_discarded() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path());
    let d = Daemon::start(&tls_conf(&cert, &key, "may"));
    // CVE-2011-0411: "STARTTLS\r\nRSET\r\n" in one write; the RSET was sent
    // in plaintext and must never be answered inside the TLS session.
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
raw = socket.create_connection(('127.0.0.1', {port}))
f = raw.makefile('rb')
assert f.readline().startswith(b'220 ')
raw.sendall(b'EHLO client.example\r\n')
while True:
    l = f.readline()
    if l[3:4] == b' ': break
raw.sendall(b'STARTTLS\r\nRSET\r\n')
l = f.readline()
assert l.startswith(b'220 2.0.0'), l
tls = ctx.wrap_socket(raw, server_hostname='mx.test.example')
tls.settimeout(1.0)
try:
    extra = tls.recv(100)
    raise SystemExit('answered injected plaintext: %r' % extra)
except socket.timeout:
    pass
tls.settimeout(10)
# The session was reset: MAIL needs no HELO here, but the first reply now is
# the EHLO's, and the TLS session does not offer STARTTLS again.
tls.sendall(b'EHLO again.example\r\n')
r = tls.recv(4096)
assert r.startswith(b'250-mx.test.example'), r
assert b'STARTTLS' not in r, r
tls.sendall(b'QUIT\r\n')
assert tls.recv(100).startswith(b'221'), 'quit'
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    let log = d.log();
    assert!(log.contains("ehlo=2 starttls=1 quit=1"), "{log}");
    assert!(
        !log.contains("rset="),
        "RSET must not have been executed: {log}"
    );
}

/// Old main.cf files say `smtpd_use_tls`/`smtpd_enforce_tls`; with
/// `smtpd_tls_security_level` empty Postfix reads them as may/encrypt.
#[test]
fn obsolete_smtpd_use_tls_and_enforce_tls_are_may_and_encrypt() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path());
    let files = format!("smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\n");
    let enforce = Daemon::start(&format!("{files}smtpd_enforce_tls = yes\n"));
    let mut raw = Raw::connect(enforce.port);
    assert!(raw.cmd("EHLO client.example").contains("250-STARTTLS"));
    assert_eq!(
        raw.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    let offer = Daemon::start(&format!("{files}smtpd_use_tls = yes\n"));
    let mut raw = Raw::connect(offer.port);
    assert!(raw.cmd("EHLO client.example").contains("250-STARTTLS"));
    assert!(raw.cmd("MAIL FROM:<a@example.org>").starts_with("250 "));
    let neither = Daemon::start(&files);
    let mut raw = Raw::connect(neither.port);
    assert!(!raw.cmd("EHLO client.example").contains("STARTTLS"));
}

#[test]
fn encrypt_level_refuses_mail_and_auth_before_starttls() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path());
    let d = Daemon::start(&(tls_conf(&cert, &key, "encrypt") + "smtpd_sasl_auth_enable = yes\n"));
    add_user(&d, "alice", "secret");
    let mut raw = Raw::connect(d.port);
    let ehlo = raw.cmd("EHLO client.example");
    assert!(ehlo.contains("250-STARTTLS"), "{ehlo}");
    assert!(!ehlo.contains("AUTH"), "no AUTH before TLS: {ehlo}");
    assert_eq!(
        raw.cmd("MAIL FROM:<a@example.org>"),
        "530 5.7.0 Must issue a STARTTLS command first\r\n"
    );
    assert_eq!(
        raw.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        "503 5.5.1 Error: authentication not enabled\r\n"
    );
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
s = smtplib.SMTP('127.0.0.1', {port})
s.starttls(context=ctx)
code, msg = s.ehlo('client.example')
assert b'AUTH PLAIN LOGIN' in msg, msg
s.login('alice', 'secret')
r = s.sendmail('alice@example.org', ['alice@mx.test.example'], 'Subject: x\r\n\r\nx\r\n')
assert r == {{}}, r
s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
}

#[test]
fn wrappermode_service_speaks_tls_from_the_first_byte() {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path());
    let conf = format!(
        "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_loglevel = 1\n"
    );
    let (mut d, ports) = Daemon::start_with_services_keeping_local_mail(
        &conf,
        &["inet n - n - - smtpd -o syslog_name=corepost/smtps -o smtpd_tls_wrappermode=yes"],
    );
    let smtps = ports[0];
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
s = smtplib.SMTP_SSL('127.0.0.1', {smtps}, context=ctx)
code, msg = s.ehlo('client.example')
assert code == 250 and b'STARTTLS' not in msg, msg
r = s.sendmail('s@example.org', ['alice@mx.test.example'], 'Subject: smtps\r\n\r\nx\r\n')
assert r == {{}}, r
s.quit()
# Plain SMTP on the wrapper port gets no greeting.
raw = socket.create_connection(('127.0.0.1', {smtps}))
raw.settimeout(1.0)
raw.sendall(b'EHLO plain.example\r\n')
try:
    data = raw.recv(100)
    assert not data.startswith(b'220'), data
except (socket.timeout, ConnectionResetError):
    pass
raw.close()
print('ok')
"#
    ));
    assert!(ok, "{out}");
    // The port-25 service has TLS off (no level set): no STARTTLS there.
    let mut raw = Raw::connect(d.port);
    assert!(!raw.cmd("EHLO c.example").contains("STARTTLS"));
    assert!(raw.cmd("STARTTLS").starts_with("502 5.5.1"));
    d.stop();
    let log = d.log();
    assert!(
        log.contains("corepost/smtps/smtpd[")
            && log.contains("Anonymous TLS connection established"),
        "{log}"
    );
    assert!(
        log.contains("SSL_accept error from unknown[127.0.0.1]"),
        "{log}"
    );
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1.client.protocol, "ESMTPS");
}

/// Master.cf's classic pair: port 25 with the default relay restrictions,
/// and submission with encrypt + AUTH + permit_sasl_authenticated,reject.
fn submission_pair(extra: &str) -> (Daemon, u16, tempfile::TempDir, String) {
    let certs = tempfile::tempdir().expect("tempdir");
    let (cert, key) = make_cert(certs.path());
    let conf = format!(
        "smtpd_tls_cert_file = {cert}\nsmtpd_tls_key_file = {key}\nsmtpd_tls_security_level = may\nsmtpd_sasl_authenticated_header = yes\nrelayhost = [127.0.0.1]:9\n{extra}"
    );
    let (d, ports) = Daemon::start_with_services(
        &conf,
        &[
            "inet n - n - - smtpd -o syslog_name=corepost/submission -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_relay_restrictions=permit_sasl_authenticated,reject",
        ],
    );
    add_user(&d, "alice", "secret");
    add_user(&d, "bob@example.org", "hunter2");
    (d, ports[0], certs, cert)
}

#[test]
fn auth_plain_and_login_success_and_failure() {
    let (mut d, submission, _certs, cert) = submission_pair("");
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
def session():
    s = smtplib.SMTP('127.0.0.1', {submission}, source_address=('127.0.0.2', 0))
    code, msg = s.ehlo('client.example')
    assert b'AUTH' not in msg, msg
    code, msg = s.docmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')
    assert code == 503, (code, msg)
    s.starttls(context=ctx)
    s.ehlo('client.example')
    assert s.has_extn('auth') and 'PLAIN' in s.esmtp_features['auth'] and 'LOGIN' in s.esmtp_features['auth'], s.esmtp_features
    return s
s = session()
code, msg = s.docmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0wrong').decode())
assert code == 535 and msg == b'5.7.8 Error: authentication failed: authentication failure', (code, msg)
code, msg = s.docmd('AUTH PLAIN ' + base64.b64encode(b'\0nobody\0secret').decode())
assert code == 535, (code, msg)
code, msg = s.docmd('AUTH PLAIN')
assert code == 334 and msg == b'', (code, msg)
code, msg = s.docmd('*')
assert code == 501 and msg == b'5.7.0 Authentication aborted', (code, msg)
s.user, s.password = 'alice', 'secret'
code, msg = s.auth('PLAIN', s.auth_plain)
assert code == 235 and msg == b'2.7.0 Authentication successful', (code, msg)
code, msg = s.docmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')
assert code == 503 and b'already authenticated' in msg, (code, msg)
code, msg = s.docmd('MAIL FROM:<alice@example.org> AUTH=<>')
assert code == 250, (code, msg)
s.quit()
s = session()
s.user, s.password = 'bob@example.org', 'hunter2'
code, msg = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
assert code == 235, (code, msg)
s.quit()
s = session()
s.user, s.password = 'bob@example.org', 'nope'
try:
    s.auth('LOGIN', s.auth_login, initial_response_ok=False)
    raise SystemExit('wrong LOGIN password accepted')
except smtplib.SMTPAuthenticationError as e:
    assert e.smtp_code == 535, e
# The third failure in a session ends it.
for i in range(2):
    code, msg = s.docmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0bad').decode())
    assert code == (535 if i == 0 else 421), (i, code, msg)
print('ok')
"#
    ));
    assert!(ok, "{out}");
    d.stop();
    let log = d.log();
    for line in [
        "warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: authentication failure, sasl_username=alice",
        "warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: authentication failure, sasl_username=nobody",
        "warning: unknown[127.0.0.2]: SASL LOGIN authentication failed: authentication failure, sasl_username=bob@example.org",
        "too many errors after AUTH from unknown[127.0.0.2]",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }
}

#[test]
fn submission_relays_only_with_auth_and_port_25_is_no_open_relay() {
    let (mut d, submission, _certs, cert) = submission_pair(
        "smtpd_sasl_auth_enable = yes\nsmtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n",
    );
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
def connect(port, login=None):
    s = smtplib.SMTP('127.0.0.1', port, source_address=('127.0.0.2', 0))
    s.ehlo('client.example')
    # smtpd_tls_auth_only defaults to yes: no AUTH before STARTTLS.
    assert not s.has_extn('auth'), (port, s.esmtp_features)
    s.starttls(context=ctx)
    s.ehlo('client.example')
    assert s.has_extn('auth'), (port, s.esmtp_features)
    if login:
        s.login(*login)
    s.mail('alice@example.org')
    return s
forms = ['user@foreign.example', 'user%foreign.example@mx.test.example',
         '"user@foreign.example"@mx.test.example', 'foreign.example!user@mx.test.example',
         '@mx.test.example:user@foreign.example']
for port in ({port}, {submission}):
    s = connect(port)
    for rcpt in forms:
        code, msg = s.rcpt(rcpt)
        assert code >= 500, (port, rcpt, code, msg)
    s.quit()
s = connect({submission}, ('alice', 'secret'))
code, msg = s.rcpt('user@foreign.example')
assert code == 250, (code, msg)
code, msg = s.data('Subject: relayed\r\n\r\nhello\r\n')
assert code == 250, (code, msg)
s.quit()
# Authenticated on port 25 (AUTH enabled there too): may relay.
s = connect({port}, ('bob@example.org', 'hunter2'))
code, msg = s.rcpt('user@foreign.example')
assert code == 250, (code, msg)
s.rset(); s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    d.stop();
    let log = d.log();
    assert!(
        log.contains("client=unknown[127.0.0.2], sasl_method=PLAIN, sasl_username=alice"),
        "{log}"
    );
    assert!(log.contains("Relay access denied"), "{log}");
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 1, "{log}");
    let (_, env, content) = &queued[0];
    assert_eq!(env.recipients[0].address, "user@foreign.example");
    assert_eq!(env.client.sasl_username.as_deref(), Some("alice"));
    assert_eq!(env.client.protocol, "ESMTPSA");
    let content = String::from_utf8_lossy(content);
    assert!(
        content.contains("(Authenticated sender: alice)"),
        "{content}"
    );
    assert!(content.contains("with ESMTPSA id"), "{content}");
}

#[test]
fn sender_login_maps_mismatch() {
    let maps = tempfile::tempdir().expect("tempdir");
    let owners = maps.path().join("sender_logins");
    std::fs::write(
        &owners,
        "alice@example.org alice\n@shared.example alice, bob@example.org\n",
    )
    .expect("write map");
    let (d, submission, _certs, cert) = submission_pair(&format!(
        "smtpd_sender_login_maps = texthash:{}\nsmtpd_sender_restrictions = reject_sender_login_mismatch\n",
        owners.display()
    ));
    let (ok, out) = python(&format!(
        r#"CERT = {cert:?}
{PY_CTX}
def attempt(port, sender, login=None):
    s = smtplib.SMTP('127.0.0.1', port, source_address=('127.0.0.2', 0))
    s.starttls(context=ctx)
    s.ehlo('client.example')
    if login:
        s.login(*login)
    s.mail(sender)
    code, msg = s.rcpt('alice@mx.test.example')
    s.quit()
    return code, msg.decode()
assert attempt({submission}, 'alice@example.org', ('alice', 'secret'))[0] == 250
assert attempt({submission}, 'x@shared.example', ('bob@example.org', 'hunter2'))[0] == 250
code, msg = attempt({submission}, 'alice@example.org', ('bob@example.org', 'hunter2'))
assert code == 553 and msg == '5.7.1 <alice@example.org>: Sender address rejected: not owned by user bob@example.org', (code, msg)
code, msg = attempt({submission}, 'nobody@else.example', ('alice', 'secret'))
assert code == 553, (code, msg)
code, msg = attempt({port}, 'alice@example.org')
assert code == 553 and msg.endswith('not logged in'), (code, msg)
assert attempt({port}, 'nobody@else.example')[0] == 250
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
}

#[test]
fn passwd_command_adds_lists_and_removes_users() {
    let d = tempfile::tempdir().expect("tempdir");
    let file = d.path().join("users");
    let file_s = file.display().to_string();
    let run = |args: &[&str], input: &str| {
        let mut child = Command::new(corepost_bin())
            .args(["passwd", "-f", &file_s])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes());
        child.wait_with_output().expect("wait")
    };
    assert!(run(&["add", "alice"], "pw1\n").status.success());
    assert!(run(&["add", "carol"], "pw2\n").status.success());
    let text = std::fs::read_to_string(&file).expect("file");
    assert!(text.contains("alice:$argon2id$"), "{text}");
    assert!(!text.contains("pw1"), "{text}");
    assert_eq!(stdout(&run(&["list"], "")), "alice\ncarol\n");
    assert!(run(&["remove", "alice"], "").status.success());
    assert_eq!(stdout(&run(&["list"], "")), "carol\n");
    let o = run(&["remove", "alice"], "");
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("corepost: fatal: alice: no such user"),
        "{}",
        stderr(&o)
    );
    let o = run(&["add", "bad:name"], "pw\n");
    assert!(stderr(&o).contains("invalid user name"), "{}", stderr(&o));
}

/// A stub of Dovecot's auth server (the client protocol on a Unix socket):
/// PLAIN and LOGIN for alice/secret; records every AUTH line.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

fn dovecot_stub(path: &std::path::Path) -> Seen {
    let listener = std::os::unix::net::UnixListener::bind(path).expect("bind stub");
    let seen = Seen::default();
    let shared = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = shared.clone();
            let w = conn.try_clone().expect("clone");
            std::thread::spawn(move || dovecot_session(conn, w, seen));
        }
    });
    seen
}

/// The same stub on a TCP port (`smtpd_sasl_path = inet:127.0.0.1:port`).
fn dovecot_stub_inet() -> (u16, Seen) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind stub");
    let port = listener.local_addr().expect("addr").port();
    let seen = Seen::default();
    let shared = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = shared.clone();
            let w = conn.try_clone().expect("clone");
            std::thread::spawn(move || dovecot_session(conn, w, seen));
        }
    });
    (port, seen)
}

fn dovecot_session(conn: impl std::io::Read, mut w: impl Write, seen: Seen) {
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nMECH\tLOGIN\tplaintext\nMECH\tANONYMOUS\tanonymous\nMECH\tSECRETMECH\tprivate\nSPID\t1\nCUID\t1\nCOOKIE\t00\nDONE\n");
    let b64 = |s: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .unwrap_or_default()
    };
    let enc = |s: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(s)
    };
    let mut login_user: Option<String> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let l = line.trim_end().to_string();
        let f: Vec<&str> = l.split('\t').collect();
        let verdict = |user: &str, pass: &str, id: &str| {
            if user == "alice" && pass == "secret" {
                format!("OK\t{id}\tuser=alice\n")
            } else {
                format!("FAIL\t{id}\tuser={user}\n")
            }
        };
        let reply = match f[0] {
            "AUTH" => {
                seen.lock().unwrap().push(l.clone());
                let id = f[1];
                let resp = f.iter().find_map(|x| x.strip_prefix("resp="));
                match (f[2], resp) {
                    ("PLAIN", None) => format!("CONT\t{id}\t\n"),
                    ("PLAIN", Some(r)) => {
                        let d = b64(r);
                        let p: Vec<&[u8]> = d.split(|&b| b == 0).collect();
                        let s = |i: usize| {
                            String::from_utf8_lossy(p.get(i).copied().unwrap_or(b"")).into_owned()
                        };
                        verdict(&s(1), &s(2), id)
                    }
                    ("LOGIN", None) => format!("CONT\t{id}\t{}\n", enc(b"Username:")),
                    ("LOGIN", Some(r)) => {
                        login_user = Some(String::from_utf8_lossy(&b64(r)).into_owned());
                        format!("CONT\t{id}\t{}\n", enc(b"Password:"))
                    }
                    _ => format!("FAIL\t{id}\treason=unsupported\n"),
                }
            }
            "CONT" => {
                let id = f[1];
                let d = b64(f.get(2).copied().unwrap_or(""));
                if d.contains(&0) {
                    let p: Vec<&[u8]> = d.split(|&b| b == 0).collect();
                    let s = |i: usize| {
                        String::from_utf8_lossy(p.get(i).copied().unwrap_or(b"")).into_owned()
                    };
                    verdict(&s(1), &s(2), id)
                } else if let Some(u) = login_user.take() {
                    verdict(&u, &String::from_utf8_lossy(&d), id)
                } else {
                    login_user = Some(String::from_utf8_lossy(&d).into_owned());
                    format!("CONT\t{id}\t{}\n", enc(b"Password:"))
                }
            }
            _ => continue,
        };
        let _ = w.write_all(reply.as_bytes());
    }
}

#[test]
fn dovecot_auth_protocol() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("auth");
    let seen = dovecot_stub(&socket);
    let mut d = Daemon::start(&format!(
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {}\nsmtpd_relay_restrictions = permit_sasl_authenticated, reject\nrelayhost = [127.0.0.1]:9\nsmtpd_sasl_exceptions_networks = 127.0.0.1\n",
        socket.display()
    ));
    let (ok, out) = python(&format!(
        r#"import smtplib, base64
s = smtplib.SMTP('127.0.0.1', {port}, source_address=('127.0.0.2', 0))
s.ehlo('client.example')
assert s.esmtp_features['auth'].split() == ['PLAIN', 'LOGIN'], s.esmtp_features
code, msg = s.docmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0wrong').decode())
assert code == 535, (code, msg)
code, msg = s.docmd('AUTH CRAM-MD5')
assert code == 535 and b'Invalid authentication mechanism' in msg, (code, msg)
code, msg = s.docmd('AUTH PLAIN')
assert code == 334, (code, msg)
code, msg = s.docmd(base64.b64encode(b'\0alice\0secret').decode())
assert code == 235, (code, msg)
s.sendmail('alice@example.org', ['x@foreign.example'], 'Subject: d\r\n\r\nx\r\n')
s.quit()
# Not advertised to smtpd_sasl_exceptions_networks, but usable.
s = smtplib.SMTP('127.0.0.1', {port})
s.ehlo('c.example')
assert not s.has_extn('auth'), s.esmtp_features
s.user, s.password = 'alice', 'secret'
code, msg = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
assert code == 235, (code, msg)
s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    d.stop();
    let log = d.log();
    assert!(
        log.contains("warning: unknown[127.0.0.2]: SASL PLAIN authentication failed: authentication failure, sasl_username=alice"),
        "{log}"
    );
    assert!(
        log.contains("sasl_method=PLAIN, sasl_username=alice"),
        "{log}"
    );
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .any(|l| l.contains("\tPLAIN\tservice=smtp\tnologin\t")
                && l.contains("\trip=127.0.0.2\t")),
        "{seen:?}"
    );
    assert!(seen.iter().all(|l| !l.contains("secured")), "{seen:?}");
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 1);
    assert_eq!(queued[0].1.client.sasl_username.as_deref(), Some("alice"));
}

#[test]
fn dovecot_unreachable_is_a_temporary_failure() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut d = Daemon::start(&format!(
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {}/missing\n",
        dir.path().display()
    ));
    let mut raw = Raw::connect(d.port);
    let ehlo = raw.cmd("EHLO client.example");
    assert!(!ehlo.contains("AUTH"), "{ehlo}");
    assert_eq!(
        raw.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        "454 4.7.0 Temporary authentication failure\r\n"
    );
    raw.cmd("QUIT");
    d.stop();
    let log = d.log();
    assert!(
        log.contains(&format!(
            "warning: SASL: Connect to {}/missing failed",
            dir.path().display()
        )),
        "{log}"
    );
}

#[test]
fn missing_certificate_is_reported_and_tls_fails_safe() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = format!("{}/missing.pem", dir.path().display());
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "queue_directory = {0}/spool\nalias_maps =\nalias_database =\nsmtpd_tls_security_level = may\nsmtpd_tls_cert_file = {missing}\n",
            dir.path().display()
        ),
    )
    .expect("main.cf");
    let out = corepost(&["check", "-c", &dir.path().display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "TLS is not available: cannot read TLS file {missing}"
        )),
        "{err}"
    );

    // Running, as Postfix does: STARTTLS is offered but answers 454, the
    // encrypt level refuses mail, a wrapper-mode connection is dropped.
    let (mut d, ports) = Daemon::start_with_services(
        &format!("smtpd_tls_security_level = encrypt\nsmtpd_tls_cert_file = {missing}\n"),
        &["inet n - n - - smtpd -o smtpd_tls_wrappermode=yes"],
    );
    let mut raw = Raw::connect(d.port);
    assert!(raw.cmd("EHLO c.example").contains("STARTTLS"));
    assert_eq!(
        raw.cmd("STARTTLS"),
        "454 4.7.0 TLS not available due to local problem\r\n"
    );
    assert!(
        raw.cmd("MAIL FROM:<a@example.org>")
            .starts_with("530 5.7.0")
    );
    let mut wrapped = std::net::TcpStream::connect(("127.0.0.1", ports[0])).expect("connect");
    wrapped
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut buf = [0u8; 64];
    let n = std::io::Read::read(&mut wrapped, &mut buf).unwrap_or(0);
    assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    d.stop();
    let log = d.log();
    assert!(
        log.contains("warning: cannot start TLS for unknown[127.0.0.1]: cannot read TLS file"),
        "{log}"
    );
    assert!(
        log.contains("warning: Wrapper-mode request dropped from unknown[127.0.0.1]"),
        "{log}"
    );
}

#[test]
fn dovecot_auth_over_inet() {
    let (stub, seen) = dovecot_stub_inet();
    let d = Daemon::start(&format!(
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = inet:127.0.0.1:{stub}\nsmtpd_sasl_service = submission\n"
    ));
    let mut raw = Raw::connect(d.port);
    assert!(
        raw.cmd("EHLO c.example")
            .contains("250-AUTH PLAIN LOGIN\r\n")
    );
    assert_eq!(
        raw.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        "235 2.7.0 Authentication successful\r\n"
    );
    raw.cmd("QUIT");
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|l| l.contains("\tservice=submission\t")),
        "{seen:?}"
    );
}

/// A real Dovecot (dovecot-core, installed by .ci/run) in a temporary
/// directory, with a passwd-file of SHA512-CRYPT hashes; stopped on drop.
struct Dovecot {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Dovecot {
    fn start(users: &[(&str, &str)]) -> Dovecot {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().display().to_string();
        let mut passwd = String::new();
        for (user, password) in users {
            let out = Command::new("openssl")
                .args(["passwd", "-6", password])
                .output()
                .expect("openssl passwd");
            passwd.push_str(&format!("{user}:{{SHA512-CRYPT}}{}", stdout(&out)));
        }
        std::fs::write(dir.path().join("users"), passwd).expect("users");
        std::fs::create_dir_all(dir.path().join("run")).expect("run");
        std::fs::create_dir_all(dir.path().join("state")).expect("state");
        std::fs::write(
            dir.path().join("dovecot.conf"),
            format!(
                "base_dir = {p}/run\nstate_dir = {p}/state\nlog_path = {p}/dovecot.log\nprotocols =\nssl = no\ndisable_plaintext_auth = no\nauth_failure_delay = 0\nauth_mechanisms = plain login\npassdb {{\n  driver = passwd-file\n  args = {p}/users\n}}\nuserdb {{\n  driver = static\n  args = uid=65534 gid=65534 home=/tmp\n}}\nservice auth {{\n  unix_listener {p}/auth {{\n    mode = 0666\n  }}\n}}\nservice anvil {{\n  chroot =\n}}\n"
            ),
        )
        .expect("dovecot.conf");
        let program = if std::path::Path::new("/usr/sbin/dovecot").exists() {
            "/usr/sbin/dovecot"
        } else {
            "dovecot"
        };
        let child = Command::new(program)
            .args(["-F", "-c", &format!("{p}/dovecot.conf")])
            .stdin(Stdio::null())
            .spawn()
            .expect("dovecot (apt-get install dovecot-core; .ci/run does)");
        let socket = dir.path().join("auth");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "dovecot did not start: {}",
                std::fs::read_to_string(dir.path().join("dovecot.log")).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        Dovecot { child, dir }
    }

    fn socket(&self) -> String {
        self.dir.path().join("auth").display().to_string()
    }
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        // SAFETY: signalling our own child (dovecot's master stops its children).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn real_dovecot_auth_server() {
    let dovecot = Dovecot::start(&[("alice", "secret"), ("bob@example.org", "hunter2")]);
    let mut d = Daemon::start(&format!(
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\nsmtpd_sasl_type = dovecot\nsmtpd_sasl_path = {}\nsmtpd_relay_restrictions = permit_sasl_authenticated, reject\nrelayhost = [127.0.0.1]:9\n",
        dovecot.socket()
    ));
    let (ok, out) = python(&format!(
        r#"import smtplib, base64
s = smtplib.SMTP('127.0.0.1', {port}, source_address=('127.0.0.2', 0))
s.ehlo('client.example')
assert s.esmtp_features['auth'].split() == ['PLAIN', 'LOGIN'], s.esmtp_features
s.user, s.password = 'bob@example.org', 'hunter2'
code, msg = s.auth('LOGIN', s.auth_login, initial_response_ok=False)
assert code == 235, (code, msg)
s.sendmail('bob@example.org', ['x@foreign.example'], 'Subject: d\r\n\r\nx\r\n')
s.quit()
# Concurrent sessions, each with its own auth connection.
a = smtplib.SMTP('127.0.0.1', {port}, source_address=('127.0.0.2', 0))
b = smtplib.SMTP('127.0.0.1', {port}, source_address=('127.0.0.2', 0))
a.ehlo('a.example'); b.ehlo('b.example')
b.login('bob@example.org', 'hunter2')
a.login('alice', 'secret')
a.quit(); b.quit()
# Last, as Dovecot delays later attempts from an address that failed.
s = smtplib.SMTP('127.0.0.1', {port}, source_address=('127.0.0.2', 0))
s.ehlo('client.example')
code, msg = s.docmd('AUTH PLAIN ' + base64.b64encode(b'\0alice\0wrong').decode())
assert code == 535, (code, msg)
s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    d.stop();
    let log = d.log();
    assert!(
        log.contains("warning: unknown[127.0.0.2]: SASL PLAIN authentication failed:"),
        "{log}"
    );
    assert!(
        log.contains("sasl_method=LOGIN, sasl_username=bob@example.org"),
        "{log}"
    );
    let queued = queued_messages(&d.spool_dir());
    assert_eq!(queued.len(), 1);
    assert_eq!(
        queued[0].1.client.sasl_username.as_deref(),
        Some("bob@example.org")
    );
}

#[test]
fn auth_attempts_are_rate_limited_per_client() {
    let d = Daemon::start(
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\nsmtpd_client_event_limit_exceptions =\nsmtpd_client_auth_rate_limit = 2\n",
    );
    add_user(&d, "alice", "secret");
    let mut c = Raw::connect_from(d.port, "127.0.0.2");
    assert!(c.cmd("EHLO client.example").contains("AUTH PLAIN LOGIN"));
    // "\0alice\0wrong" and "\0alice\0secret", base64.
    for _ in 0..2 {
        assert!(c.cmd("AUTH PLAIN AGFsaWNlAHdyb25n").starts_with("535 "));
    }
    assert_eq!(
        c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA=="),
        "450 4.7.1 Error: too many AUTH commands from 127.0.0.2\r\n"
    );
    // Another client is not affected.
    let mut other = Raw::connect_from(d.port, "127.0.0.3");
    other.cmd("EHLO client.example");
    assert!(
        other
            .cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==")
            .starts_with("235 ")
    );
    let log = d.log();
    assert!(
        log.contains(
            "warning: AUTH command rate limit exceeded: 3 from unknown[127.0.0.2] for service "
        ),
        "{log}"
    );
}

/// `corepost check -c DIR`'s output (stdout and stderr).
fn check_output(d: &Daemon) -> String {
    let out = corepost(&["check", "-c", &d.config_dir()]);
    format!("{}{}", stdout(&out), stderr(&out))
}

#[test]
fn passwd_as_root_writes_a_file_the_unprivileged_daemon_reads_and_check_warns_otherwise() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    // Plaintext AUTH keeps the test short; the file is what matters.
    let d = Daemon::start_unprivileged(
        "smtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n",
        "",
    );
    let file = d.dir.path().join("sasl_users");
    // The file as a root-only tool would leave it.
    add_user(&d, "alice", "secret");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::os::unix::fs::chown(&file, Some(0), Some(0)).unwrap();
    let auth = |expect: u16| {
        let (ok, out) = python(&format!(
            r#"import smtplib
s = smtplib.SMTP('127.0.0.1', {})
s.ehlo('client.example')
code, msg = s.docmd('AUTH PLAIN AGFsaWNlAHNlY3JldA==')
assert code == {expect}, (code, msg)
print('ok')
"#,
            d.port
        ));
        assert!(ok, "{out}\n{}", d.log());
    };
    auth(454);
    let warned = check_output(&d);
    assert!(
        warned.contains(&format!(
            "{} (from corepost_sasl_password_file): mail_owner nobody (uid 65534, gid 65534) cannot read it: mode 600, owner 0:0",
            file.display()
        )),
        "{warned}"
    );
    assert!(
        warned.contains("every SMTP AUTH will fail (454)"),
        "{warned}"
    );
    // corepost passwd as root: root's file, readable by mail_owner's group.
    add_user(&d, "alice", "secret");
    let meta = std::fs::metadata(&file).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o777),
        (0, 65534, 0o640)
    );
    auth(235);
    let clean = check_output(&d);
    assert!(!clean.contains("cannot read it"), "{clean}");
}
