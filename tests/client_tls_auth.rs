//! The SMTP client's security end to end: verified TLS (levels verify, secure, fingerprint,
//! `smtp_tls_policy_maps`, `smtp_tls_CAfile`) and SMTP AUTH (`smtp_sasl_*`) against a scripted
//! next hop on loopback whose certificate is made by rcgen, found through the loopback test DNS
//! server as `mail.example.test`.

mod support;

use corepost::delivery::testsink::{SinkAuth, SinkScript, TestSink};
use corepost::dns::testserver::TestServer;
use support::*;

/// A test CA and a server certificate for `names` signed by it (PEM).
struct Pki {
    ca: String,
    chain: String,
    key: String,
    leaf_der: Vec<u8>,
}

fn pki(names: &[&str]) -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "corepost test CA");
    let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
    let leaf_key = KeyPair::generate().expect("leaf key");
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let leaf_params = CertificateParams::new(names).expect("leaf params");
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf = leaf_params
        .signed_by(&leaf_key, &issuer)
        .expect("leaf certificate");
    Pki {
        ca: ca.pem(),
        chain: format!("{}{}", leaf.pem(), ca.pem()),
        key: leaf_key.serialize_pem(),
        leaf_der: leaf.der().to_vec(),
    }
}

fn sha256_fingerprint(der: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, der);
    d.as_ref()
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A sink with STARTTLS and this certificate (`None`: a self-signed one for localhost).
fn tls_sink(pki: Option<&Pki>, auth: Option<SinkAuth>) -> TestSink {
    TestSink::start(SinkScript {
        starttls: true,
        tls_identity: pki.map(|p| (p.chain.clone(), p.key.clone())),
        auth,
        ..SinkScript::default()
    })
    .expect("sink")
}

fn alice(tls_only: bool) -> SinkAuth {
    SinkAuth {
        mechanisms: "PLAIN LOGIN".into(),
        user: "alice".into(),
        password: "s3cret".into(),
        tls_only,
    }
}

/// DNS that knows `mail.example.test`, and a scratch directory for CA and password files.
fn dns() -> TestServer {
    let dns = TestServer::start().expect("test dns");
    dns.add_a("mail.example.test", 60, "127.0.0.1".parse().unwrap());
    dns
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write file");
    path.display().to_string()
}

fn daemon(dns: &TestServer, sink: &TestSink, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "corepost_dns_servers = {}\nrelayhost = [mail.example.test]:{}\nminimal_backoff_time = 300s\nsmtp_tls_loglevel = 1\n{extra}",
        dns.addr(),
        sink.addr().port()
    ))
}

/// Wait until the log has `what`, and return the log.
fn log_with(d: &Daemon, what: &str) -> String {
    wait_until(20, || {
        let log = d.log();
        log.contains(what).then_some(log)
    })
    .unwrap_or_else(|| panic!("no \"{what}\" in the log:\n{}", d.log()))
}

fn send_one(d: &Daemon) -> String {
    submit(
        d.port,
        "sender@example.org",
        &["rcpt@remote.example"],
        "Subject: secure\r\n\r\nhello",
    )
}

fn wait_for_message(sink: &TestSink, d: &Daemon) {
    let got = wait_until(20, || (!sink.received().messages.is_empty()).then_some(()));
    assert!(got.is_some(), "nothing delivered; log:\n{}", d.log());
}

#[test]
fn auth_after_starttls_to_a_secure_next_hop() {
    let pki = pki(&["mail.example.test"]);
    let sink = tls_sink(Some(&pki), Some(alice(true)));
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let ca = write(&files, "ca.pem", &pki.ca);
    let port = sink.addr().port();
    let passwords = write(
        &files,
        "sasl_passwd",
        &format!("[mail.example.test]:{port} alice:s3cret\n"),
    );
    let d = daemon(
        &dns,
        &sink,
        &format!(
            "smtp_tls_security_level = secure\nsmtp_tls_CAfile = {ca}\nsmtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:{passwords}\nsmtp_sasl_tls_security_options = noanonymous\n"
        ),
    );
    send_one(&d);
    wait_for_message(&sink, &d);
    let got = sink.received();
    assert_eq!(got.messages[0].auth.as_deref(), Some("alice"));
    assert!(got.messages[0].tls);
    let auth: Vec<_> = got
        .commands
        .iter()
        .filter(|c| c.line.to_ascii_uppercase().starts_with("AUTH"))
        .collect();
    assert!(!auth.is_empty() && auth.iter().all(|c| c.tls), "{auth:?}");
    let log = log_with(&d, "status=sent");
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to mail.example.test[127.0.0.1]:{port}: TLSv1.3 with cipher TLS_"
        )),
        "{log}"
    );
}

#[test]
fn wrong_password_defers_with_postfix_s_text() {
    let pki = pki(&["mail.example.test"]);
    let sink = tls_sink(Some(&pki), Some(alice(true)));
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let ca = write(&files, "ca.pem", &pki.ca);
    let passwords = write(&files, "sasl_passwd", "mail.example.test alice:wrong\n");
    let d = daemon(
        &dns,
        &sink,
        &format!(
            "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca}\nsmtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:{passwords}\nsmtp_sasl_tls_security_options = noanonymous\n"
        ),
    );
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(
            "dsn=4.7.8, status=deferred (SASL authentication failed; server mail.example.test[127.0.0.1] said: 535 5.7.8 Error: authentication failed: authentication failure)"
        ),
        "{log}"
    );
    assert!(sink.received().messages.is_empty());
    assert!(
        !sink
            .received()
            .commands
            .iter()
            .any(|c| c.line.starts_with("MAIL")),
        "no MAIL FROM after a failed AUTH"
    );
}

#[test]
fn default_options_never_send_a_password_without_tls() {
    // AUTH offered in plaintext, no STARTTLS: noplaintext forbids PLAIN and LOGIN.
    let sink = TestSink::start(SinkScript {
        auth: Some(alice(false)),
        ..SinkScript::default()
    })
    .expect("sink");
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let passwords = write(&files, "sasl_passwd", "mail.example.test alice:s3cret\n");
    let d = daemon(
        &dns,
        &sink,
        &format!("smtp_sasl_auth_enable = yes\nsmtp_sasl_password_maps = texthash:{passwords}\n"),
    );
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(
            "dsn=4.7.0, status=deferred (SASL authentication failed; cannot authenticate to server mail.example.test[127.0.0.1]: no mechanism available)"
        ),
        "{log}"
    );
    let got = sink.received();
    assert!(got.messages.is_empty());
    assert!(
        !got.commands
            .iter()
            .any(|c| c.line.to_ascii_uppercase().starts_with("AUTH")),
        "AUTH was sent in plaintext: {:?}",
        got.commands
    );
}

#[test]
fn self_signed_next_hop_at_verify_is_deferred_and_nothing_sent() {
    let sink = tls_sink(None, None);
    let dns = dns();
    let port = sink.addr().port();
    let d = daemon(&dns, &sink, "smtp_tls_security_level = verify\n");
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(&format!(
            "certificate verification failed for mail.example.test[127.0.0.1]:{port}: self-signed certificate"
        )),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "Untrusted TLS connection established to mail.example.test[127.0.0.1]:{port}: TLSv1.3"
        )),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.7.5, status=deferred (Server certificate not verified)"),
        "{log}"
    );
    assert!(
        log.contains(&format!(
            "to=<rcpt@remote.example>, relay=mail.example.test[127.0.0.1]:{port}, "
        )),
        "{log}"
    );
    let got = sink.received();
    assert!(got.messages.is_empty());
    assert!(!got.commands.iter().any(|c| c.line.starts_with("MAIL")));
    // The session ends politely, inside TLS.
    assert!(
        got.commands.iter().any(|c| c.line == "QUIT" && c.tls),
        "{:?}",
        got.commands
    );
}

#[test]
fn ca_signed_next_hop_at_verify_is_verified_and_sent() {
    let pki = pki(&["mail.example.test"]);
    let sink = tls_sink(Some(&pki), None);
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let ca = write(&files, "ca.pem", &pki.ca);
    let port = sink.addr().port();
    let d = daemon(
        &dns,
        &sink,
        &format!(
            "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca}\nsmtp_connection_reuse_count_limit = 1\n"
        ),
    );
    send_one(&d);
    wait_for_message(&sink, &d);
    // A second connection resumes the TLS session; the certificate is judged again.
    send_one(&d);
    let got = wait_until(20, || (sink.received().messages.len() == 2).then_some(()));
    assert!(got.is_some(), "{}", d.log());
    let log = log_with(&d, "status=sent");
    let verified = format!(
        "Verified TLS connection established to mail.example.test[127.0.0.1]:{port}: TLSv1.3 with cipher TLS_"
    );
    assert_eq!(log.matches(&verified).count(), 2, "{log}");
    assert_eq!(sink.received().connections, 2);
}

#[test]
fn secure_with_a_certificate_for_another_name_is_deferred() {
    let pki = pki(&["other.example.test"]);
    let sink = tls_sink(Some(&pki), None);
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let ca = write(&files, "ca.pem", &pki.ca);
    let port = sink.addr().port();
    let d = daemon(
        &dns,
        &sink,
        &format!("smtp_tls_security_level = secure\nsmtp_tls_CAfile = {ca}\n"),
    );
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(&format!(
            "server certificate verification failed for mail.example.test[127.0.0.1]:{port}: num=62:hostname mismatch"
        )),
        "{log}"
    );
    // The chain is trusted, only the name is wrong; Postfix 3.7 logs such a session Untrusted.
    assert!(
        log.contains("Untrusted TLS connection established to mail.example.test"),
        "{log}"
    );
    assert!(
        log.contains("dsn=4.7.5, status=deferred (Server certificate not verified)"),
        "{log}"
    );
    assert!(sink.received().messages.is_empty());
}

#[test]
fn policy_maps_choose_per_next_hop_fingerprint_match_and_mismatch() {
    let pki = pki(&["mail.example.test"]);
    let good = tls_sink(Some(&pki), None);
    let bad = tls_sink(Some(&pki), None);
    let plain_may = tls_sink(None, None);
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let fp = sha256_fingerprint(&pki.leaf_der);
    let wrong = "00:".repeat(31) + "00";
    let (p1, p2, p3) = (
        good.addr().port(),
        bad.addr().port(),
        plain_may.addr().port(),
    );
    let policy = write(
        &files,
        "tls_policy",
        &format!(
            "[mail.example.test]:{p1} fingerprint match={fp}\n[mail.example.test]:{p2} fingerprint match={wrong}\n"
        ),
    );
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\nminimal_backoff_time = 300s\nsmtp_tls_loglevel = 1\n\
         smtp_tls_security_level = may\nsmtp_tls_policy_maps = texthash:{policy}\n\
         transport_maps = inline:{{ one.example=smtp:[mail.example.test]:{p1}, two.example=smtp:[mail.example.test]:{p2}, three.example=smtp:[mail.example.test]:{p3} }}\n",
        dns.addr()
    ));
    for to in ["a@one.example", "b@two.example", "c@three.example"] {
        submit(d.port, "s@example.org", &[to], "Subject: p\r\n\r\nhi");
    }
    let log = log_with(&d, "to=<b@two.example>");
    let log = wait_until(20, || {
        let l = d.log();
        (l.contains("to=<a@one.example>") && l.contains("to=<c@three.example>")).then_some(l)
    })
    .unwrap_or(log);
    assert_eq!(good.received().messages.len(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to mail.example.test[127.0.0.1]:{p1}"
        )),
        "{log}"
    );
    assert!(bad.received().messages.is_empty(), "{log}");
    assert!(log.contains(&format!(
        "server certificate verification failed for mail.example.test[127.0.0.1]:{p2}: num=65:no matching DANE TLSA records"
    )), "{log}");
    assert!(
        log.contains("to=<b@two.example>") && log.contains("Server certificate not verified"),
        "{log}"
    );
    // No policy entry: the global may, any certificate, logged as Untrusted.
    assert_eq!(plain_may.received().messages.len(), 1, "{log}");
    assert!(
        log.contains(&format!(
            "Untrusted TLS connection established to mail.example.test[127.0.0.1]:{p3}"
        )),
        "{log}"
    );
}

#[test]
fn check_refuses_what_the_client_cannot_honour() {
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("master.cf"),
        "smtp unix - - n - - smtp\nlmtp unix - - n - - lmtp\n",
    )
    .unwrap();
    for (setting, error) in [
        (
            "smtp_tls_dane_insecure_mx_policy = secure",
            "smtp_tls_dane_insecure_mx_policy",
        ),
        (
            "smtp_tls_mandatory_protocols = SSLv3",
            "smtp_tls_mandatory_protocols",
        ),
        (
            "smtp_tls_fingerprint_digest = md5",
            "smtp_tls_fingerprint_digest",
        ),
        (
            "smtp_tls_security_level = fingerprint",
            "smtp_tls_fingerprint_cert_match",
        ),
        ("smtp_tls_CAfile = /nonexistent/ca.pem", "smtp_tls_CAfile"),
        (
            "smtp_sasl_security_options = noplaintext, bogus",
            "smtp_sasl_security_options: bad value \"bogus\"",
        ),
        (
            "lmtp_tls_security_level = verify",
            "lmtp_tls_security_level",
        ),
    ] {
        std::fs::write(dir.path().join("main.cf"), format!("{setting}\n")).unwrap();
        let out = corepost(&["check", "-c", &dir_text]);
        assert!(!out.status.success(), "{setting}: {}", stdout(&out));
        assert!(stderr(&out).contains(error), "{setting}: {}", stderr(&out));
    }
}

#[test]
fn sender_dependent_credentials_one_sender_per_connection() {
    let pki = pki(&["mail.example.test"]);
    let sink = tls_sink(Some(&pki), Some(alice(true)));
    let dns = dns();
    let files = tempfile::tempdir().unwrap();
    let ca = write(&files, "ca.pem", &pki.ca);
    let passwords = write(
        &files,
        "sasl_passwd",
        "alice@example.org alice:s3cret\n@example.net bob:nope\nmail.example.test host:wrong\n",
    );
    let d = daemon(
        &dns,
        &sink,
        &format!(
            "smtp_tls_security_level = verify\nsmtp_tls_CAfile = {ca}\nsmtp_sasl_auth_enable = yes\n\
             smtp_sasl_password_maps = texthash:{passwords}\nsmtp_sasl_tls_security_options = noanonymous\n\
             smtp_sender_dependent_authentication = yes\n"
        ),
    );
    let alice_id = submit(
        d.port,
        "alice@example.org",
        &["r1@remote.example"],
        "Subject: a\r\n\r\nhi",
    );
    wait_for_message(&sink, &d);
    let bob_id = submit(
        d.port,
        "bob@example.net",
        &["r2@remote.example"],
        "Subject: b\r\n\r\nhi",
    );
    let log = log_with(&d, &format!("{bob_id}: to=<r2@remote.example>"));
    assert!(
        log.contains(&format!("{alice_id}: to=<r1@remote.example>")),
        "{log}"
    );
    let got = sink.received();
    assert_eq!(got.messages.len(), 1, "{log}");
    assert_eq!(got.messages[0].auth.as_deref(), Some("alice"));
    // bob's credentials (by @domain) were tried on a connection of its own, and refused.
    assert!(
        got.commands
            .iter()
            .any(|c| c.connection > 0 && c.line.starts_with("AUTH PLAIN")),
        "{:?}",
        got.commands
    );
    assert!(log.contains("status=deferred (SASL authentication failed; server mail.example.test[127.0.0.1] said: 535"), "{log}");
}
