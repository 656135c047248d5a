//! DANE (RFC 7672) end to end: `smtp_tls_security_level = dane` / `dane-only` with
//! `smtp_dns_support_level = dnssec`, against a next hop on loopback with an rcgen certificate,
//! found through the loopback test DNS server as the MX host `mx.remote.example` of
//! `remote.example`. The test server plays the validating resolver: it sets the AD bit for the
//! names marked secure, and serves the TLSA record `_<port>._tcp.mx.remote.example`.

mod support;

use corepost::delivery::testsink::{SinkScript, TestSink};
use corepost::dns::testserver::{Behaviour, TestServer};
use support::*;

/// A self-signed certificate for a name that is *not* the MX host (DANE-EE ignores names),
/// and the SHA-256 of its public key: a `3 1 1` record's data.
struct Identity {
    chain: String,
    key: String,
    spki_sha256: Vec<u8>,
}

fn identity() -> Identity {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(vec!["unrelated.name.test".to_string()]).expect("params");
    let cert = params.self_signed(&key).expect("certificate");
    let ee = webpki::EndEntityCert::try_from(cert.der()).expect("parse");
    let spki = ee.subject_public_key_info();
    Identity {
        chain: cert.pem(),
        key: key.serialize_pem(),
        spki_sha256: ring::digest::digest(&ring::digest::SHA256, spki.as_ref())
            .as_ref()
            .to_vec(),
    }
}

fn tls_sink(id: &Identity) -> TestSink {
    TestSink::start(SinkScript {
        starttls: true,
        tls_identity: Some((id.chain.clone(), id.key.clone())),
        ..SinkScript::default()
    })
    .expect("sink")
}

/// DNS for `remote.example` → MX `mx.remote.example` → 127.0.0.1, with a `3 1 1` TLSA record
/// (`tlsa`) at the sink's port; every name validated (AD) when `secure`.
fn dns(sink: &TestSink, tlsa: &[u8], secure: bool) -> TestServer {
    let dns = TestServer::start().expect("test dns");
    dns.add_mx("remote.example", 60, 10, "mx.remote.example");
    dns.add_a("mx.remote.example", 60, "127.0.0.1".parse().unwrap());
    let tlsa_name = format!("_{}._tcp.mx.remote.example", sink.addr().port());
    dns.add_tlsa(&tlsa_name, 60, 3, 1, 1, tlsa);
    dns.set_default_secure(secure);
    dns
}

/// The destination's next hop keeps the MX lookup and names the sink's port.
fn daemon(dns: &TestServer, sink: &TestSink, extra: &str) -> Daemon {
    Daemon::start(&format!(
        "corepost_dns_servers = {}\nrelayhost = remote.example:{}\nminimal_backoff_time = 300s\n\
         smtp_tls_loglevel = 1\ninet_protocols = ipv4\n{extra}",
        dns.addr(),
        sink.addr().port()
    ))
}

const DANE: &str = "smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane\n";
const DANE_ONLY: &str = "smtp_dns_support_level = dnssec\nsmtp_tls_security_level = dane-only\n";

fn log_with(d: &Daemon, what: &str) -> String {
    wait_until(20, || {
        let log = d.log();
        log.contains(what).then_some(log)
    })
    .unwrap_or_else(|| panic!("no \"{what}\" in the log:\n{}", d.log()))
}

fn send_one(d: &Daemon) {
    let queue_id = submit(
        d.port,
        "sender@example.org",
        &["rcpt@remote.example"],
        "Subject: dane\r\n\r\nhello",
    );
    assert!(!queue_id.is_empty());
}

fn relay(sink: &TestSink) -> String {
    format!("mx.remote.example[127.0.0.1]:{}", sink.addr().port())
}

#[test]
fn dane_ee_match_with_ad_is_verified_and_delivered() {
    let id = identity();
    let sink = tls_sink(&id);
    let dns = dns(&sink, &id.spki_sha256, true);
    let d = daemon(&dns, &sink, DANE);
    send_one(&d);
    let log = log_with(&d, "status=sent");
    assert!(
        log.contains(&format!(
            "Verified TLS connection established to {}: TLSv1.3",
            relay(&sink)
        )),
        "{log}"
    );
    assert_eq!(sink.received().messages.len(), 1);
}

#[test]
fn dane_ee_mismatch_with_ad_defers() {
    let id = identity();
    let sink = tls_sink(&id);
    let dns = dns(&sink, &[0x5a; 32], true);
    let d = daemon(&dns, &sink, DANE);
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(&format!(
            "server certificate verification failed for {}: num=65:no matching DANE TLSA records",
            relay(&sink)
        )),
        "{log}"
    );
    assert!(
        log.contains("Untrusted TLS connection established")
            && log.contains("dsn=4.7.5, status=deferred (Server certificate not verified)"),
        "{log}"
    );
    assert!(sink.received().messages.is_empty(), "{log}");
}

#[test]
fn dane_without_ad_falls_back_to_opportunistic_tls() {
    let id = identity();
    let sink = tls_sink(&id);
    // The TLSA record does not even match: unauthenticated, it is not used at all.
    let dns = dns(&sink, &[0x5a; 32], false);
    let d = daemon(&dns, &sink, DANE);
    send_one(&d);
    let log = log_with(&d, "status=sent");
    assert!(
        log.contains(&format!(
            "Untrusted TLS connection established to {}",
            relay(&sink)
        )),
        "{log}"
    );
    assert!(!log.contains("verification failed"), "{log}");
    assert_eq!(sink.received().messages.len(), 1);
}

#[test]
fn dane_only_without_ad_defers() {
    let id = identity();
    let sink = tls_sink(&id);
    let dns = dns(&sink, &id.spki_sha256, false);
    let d = daemon(&dns, &sink, DANE_ONLY);
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(
            "warning: TLS policy lookup for remote.example/mx.remote.example: non DNSSEC destination"
        ) && log.contains("relay=none, ")
            && log.contains("dsn=4.7.5, status=deferred (non DNSSEC destination)"),
        "{log}"
    );
    assert!(sink.received().messages.is_empty(), "{log}");
    assert!(!log.contains("TLS connection established"), "{log}");
}

#[test]
fn dane_only_with_a_secure_match_is_delivered() {
    let id = identity();
    let sink = tls_sink(&id);
    let dns = dns(&sink, &id.spki_sha256, true);
    let d = daemon(&dns, &sink, DANE_ONLY);
    send_one(&d);
    let log = log_with(&d, "status=sent");
    assert!(log.contains("Verified TLS connection established"), "{log}");
}

#[test]
fn tlsa_lookup_failure_defers() {
    let id = identity();
    let sink = tls_sink(&id);
    let dns = dns(&sink, &id.spki_sha256, true);
    let tlsa_name = format!("_{}._tcp.mx.remote.example", sink.addr().port());
    dns.set_behaviour(&tlsa_name, Behaviour::ServFail);
    let d = daemon(&dns, &sink, DANE);
    send_one(&d);
    let log = log_with(&d, "status=deferred");
    assert!(
        log.contains(&format!(
            "dsn=4.7.5, status=deferred (TLSA lookup error for mx.remote.example:{})",
            sink.addr().port()
        )) && log.contains(&format!(
            "warning: DANE TLSA lookup problem: Host or domain name not found. Name service error for name=_{}._tcp.mx.remote.example type=TLSA: Host not found, try again",
            sink.addr().port()
        )),
        "{log}"
    );
    assert!(sink.received().messages.is_empty(), "{log}");
}

#[test]
fn dane_without_dnssec_lookups_warns_and_uses_may() {
    let id = identity();
    let sink = tls_sink(&id);
    let dns = dns(&sink, &[0x5a; 32], true);
    let d = daemon(&dns, &sink, "smtp_tls_security_level = dane\n");
    send_one(&d);
    let log = log_with(&d, "status=sent");
    assert!(
        log.contains("warning: remote.example: dane configured with dnssec lookups disabled"),
        "{log}"
    );
}

#[test]
fn insecure_mx_with_secure_tlsa_is_dane_logged_as_trusted() {
    let id = identity();
    let sink = tls_sink(&id);
    let zone = dns(&sink, &id.spki_sha256, false);
    // The MX RRset is unsigned, the MX host's zone is signed: Postfix's "halfdane"
    // (smtp_tls_dane_insecure_mx_policy = dane, its default at level dane).
    zone.set_secure("mx.remote.example", true);
    zone.set_secure(
        &format!("_{}._tcp.mx.remote.example", sink.addr().port()),
        true,
    );
    let d = daemon(&zone, &sink, DANE);
    send_one(&d);
    let log = log_with(&d, "status=sent");
    assert!(
        log.contains(&format!(
            "Trusted TLS connection established to {}",
            relay(&sink)
        )),
        "{log}"
    );
    // With the policy "may" the TLSA records are not used: a mismatch would not matter.
    let id2 = identity();
    let sink2 = tls_sink(&id2);
    let dns2 = dns(&sink2, &[0x5a; 32], false);
    dns2.set_secure("mx.remote.example", true);
    dns2.set_secure(
        &format!("_{}._tcp.mx.remote.example", sink2.addr().port()),
        true,
    );
    let d2 = daemon(
        &dns2,
        &sink2,
        &format!("{DANE}smtp_tls_dane_insecure_mx_policy = may\n"),
    );
    send_one(&d2);
    let log = log_with(&d2, "status=sent");
    assert!(
        log.contains("Untrusted TLS connection established"),
        "{log}"
    );
}

#[test]
fn check_warns_about_dane_without_dnssec_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let dir_text = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("master.cf"),
        "smtp unix - - n - - smtp\nstrict unix - - n - - smtp -o smtp_tls_security_level=dane-only\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        "smtp_tls_security_level = dane\n",
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir_text]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("smtp_tls_security_level = dane without smtp_dns_support_level = dnssec falls back to opportunistic TLS (may)"),
        "{text}"
    );
    assert!(
        text.contains("service strict/unix: smtp_tls_security_level = dane-only without smtp_dns_support_level = dnssec defers every delivery"),
        "{text}"
    );
    // With DNSSEC lookups: nothing to say.
    std::fs::write(
        dir.path().join("main.cf"),
        "smtp_tls_security_level = dane\nsmtp_dns_support_level = dnssec\n",
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir_text]);
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(out.status.success() && !text.contains("dnssec"), "{text}");
}

#[test]
fn forced_tlsa_lookup_for_an_insecure_host() {
    // The host's address records are unsigned, its TLSA record is validated: by default no
    // TLSA lookup (opportunistic TLS even though the record would not match); with
    // smtp_tls_force_insecure_host_tlsa_lookup = yes the record is used and the mismatch defers.
    let id = identity();
    let sink = tls_sink(&id);
    let zone = dns(&sink, &[0x5a; 32], false);
    zone.set_secure("remote.example", true);
    zone.set_secure(
        &format!("_{}._tcp.mx.remote.example", sink.addr().port()),
        true,
    );
    let d = daemon(&zone, &sink, DANE);
    send_one(&d);
    log_with(&d, "status=sent");
    let forced = daemon(
        &zone,
        &sink,
        &format!("{DANE}smtp_tls_force_insecure_host_tlsa_lookup = yes\n"),
    );
    send_one(&forced);
    let log = log_with(&forced, "status=deferred");
    assert!(
        log.contains("num=65:no matching DANE TLSA records"),
        "{log}"
    );
}
