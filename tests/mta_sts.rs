//! MTA-STS (RFC 8461, `corepost_smtp_mta_sts = yes`) end to end: the loopback test DNS server
//! serves `remote.example`'s MX, the `_mta-sts` TXT record and `mta-sts.remote.example`; a
//! loopback HTTPS server with a certificate from a test CA (trusted through `smtp_tls_CAfile`)
//! serves the policy; the next hop is a STARTTLS sink whose certificate comes from the same CA
//! (or, to fail verification, from another one).

mod support;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use corepost::delivery::testsink::{SinkScript, TestSink};
use corepost::dns::testserver::TestServer;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use support::*;

/// A CA, and certificates it signs.
struct Ca {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    pem: String,
    der: Vec<u8>,
}

/// A leaf certificate: PEM chain and key (for the sink), DER (for the HTTPS server).
struct Leaf {
    chain_pem: String,
    key_pem: String,
    chain_der: Vec<Vec<u8>>,
    key_der: Vec<u8>,
}

fn ca(name: &str) -> Ca {
    let key = rcgen::KeyPair::generate().expect("CA key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).expect("CA certificate");
    Ca {
        pem: cert.pem(),
        der: cert.der().to_vec(),
        params,
        key,
    }
}

fn leaf(ca: &Ca, name: &str) -> Leaf {
    let key = rcgen::KeyPair::generate().expect("leaf key");
    let issuer = rcgen::Issuer::new(ca.params.clone(), &ca.key);
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .expect("leaf params")
        .signed_by(&key, &issuer)
        .expect("leaf certificate");
    Leaf {
        chain_pem: format!("{}{}", cert.pem(), ca.pem),
        key_pem: key.serialize_pem(),
        chain_der: vec![cert.der().to_vec(), ca.der.clone()],
        key_der: key.serialize_der(),
    }
}

/// A one-file HTTPS server on loopback serving `policy` as text/plain; counts requests.
struct PolicyServer {
    port: u16,
    requests: Arc<AtomicUsize>,
}

fn policy_server(cert: &Leaf, policy: &str) -> PolicyServer {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain = cert
        .chain_der
        .iter()
        .map(|d| CertificateDer::from(d.clone()))
        .collect();
    let key = PrivateKeyDer::Pkcs8(cert.key_der.clone().into());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let requests = Arc::new(AtomicUsize::new(0));
    let (count, body) = (requests.clone(), policy.to_string());
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, stream);
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&buf[..n]),
                }
            }
            let text = String::from_utf8_lossy(&request);
            if !text.starts_with("GET /.well-known/mta-sts.txt ") {
                let _ = tls.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                continue;
            }
            count.fetch_add(1, Ordering::SeqCst);
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(reply.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
        }
    });
    PolicyServer { port, requests }
}

fn policy(mode: &str, mx: &str) -> String {
    format!("version: STSv1\r\nmode: {mode}\r\nmx: {mx}\r\nmax_age: 86400\r\n")
}

fn tls_sink(cert: &Leaf) -> TestSink {
    TestSink::start(SinkScript {
        starttls: true,
        tls_identity: Some((cert.chain_pem.clone(), cert.key_pem.clone())),
        ..SinkScript::default()
    })
    .expect("sink")
}

fn dns() -> TestServer {
    let dns = TestServer::start().expect("test dns");
    dns.add_mx("remote.example", 60, 10, "mx.remote.example");
    dns.add_a("mx.remote.example", 60, "127.0.0.1".parse().unwrap());
    dns.add_txt("_mta-sts.remote.example", 60, &["v=STSv1; id=20261206T1;"]);
    dns.add_a("mta-sts.remote.example", 60, "127.0.0.1".parse().unwrap());
    dns
}

/// A scenario: the sink's certificate from the trusted CA (or not), a policy.
struct Setup {
    sink: TestSink,
    https: PolicyServer,
    _dns: TestServer,
    _dir: tempfile::TempDir,
    d: Daemon,
}

fn setup(trusted_sink: bool, policy_text: &str) -> Setup {
    setup_with(trusted_sink, true, policy_text)
}

fn setup_with(trusted_sink: bool, trusted_https: bool, policy_text: &str) -> Setup {
    let ca = ca("corepost MTA-STS test CA");
    let other = self::ca("some other CA");
    let issuer = |trusted| if trusted { &ca } else { &other };
    let sink = tls_sink(&leaf(issuer(trusted_sink), "mx.remote.example"));
    let https = policy_server(
        &leaf(issuer(trusted_https), "mta-sts.remote.example"),
        policy_text,
    );
    let dns = dns();
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).expect("write CA");
    let d = Daemon::start(&format!(
        "corepost_dns_servers = {}\nrelayhost = remote.example:{}\nminimal_backoff_time = 300s\n\
         smtp_tls_loglevel = 1\ninet_protocols = ipv4\nsmtp_tls_security_level = may\n\
         smtp_tls_CAfile = {}\ncorepost_smtp_mta_sts = yes\n\
         corepost_smtp_mta_sts_https_port = {}\n",
        dns.addr(),
        sink.addr().port(),
        ca_file.display(),
        https.port
    ));
    Setup {
        sink,
        https,
        _dns: dns,
        _dir: dir,
        d,
    }
}

fn send_one(d: &Daemon) {
    let queue_id = submit(
        d.port,
        "sender@example.org",
        &["rcpt@remote.example"],
        "Subject: sts\r\n\r\nhello",
    );
    assert!(!queue_id.is_empty());
}

fn log_with(d: &Daemon, what: &str, times: usize) -> String {
    wait_until(20, || {
        let log = d.log();
        (log.matches(what).count() >= times).then_some(log)
    })
    .unwrap_or_else(|| panic!("not {times}x \"{what}\" in the log:\n{}", d.log()))
}

#[test]
fn enforce_with_a_listed_mx_and_a_trusted_certificate_delivers_and_caches() {
    let s = setup(true, &policy("enforce", "mx.remote.example"));
    send_one(&s.d);
    let log = log_with(&s.d, "status=sent", 1);
    assert!(
        log.contains(
            "MTA-STS policy for remote.example: id 20261206T1, mode enforce, max_age 86400"
        ),
        "{log}"
    );
    assert!(
        log.contains("Verified TLS connection established to mx.remote.example"),
        "{log}"
    );
    // The second message uses the cached policy: no second fetch.
    send_one(&s.d);
    log_with(&s.d, "status=sent", 2);
    assert_eq!(s.https.requests.load(Ordering::SeqCst), 1);
    assert_eq!(s.sink.received().messages.len(), 2);
}

#[test]
fn enforce_with_an_mx_not_in_the_policy_defers() {
    let s = setup(true, &policy("enforce", "*.elsewhere.example"));
    send_one(&s.d);
    let log = log_with(&s.d, "status=deferred", 1);
    assert!(
        log.contains("relay=none, ")
            && log.contains("dsn=4.7.5, status=deferred (MTA-STS policy for remote.example: MX host mx.remote.example does not match the policy)"),
        "{log}"
    );
    assert!(s.sink.received().messages.is_empty(), "{log}");
}

#[test]
fn enforce_with_an_untrusted_certificate_defers() {
    let s = setup(false, &policy("enforce", "*.remote.example"));
    send_one(&s.d);
    let log = log_with(&s.d, "status=deferred", 1);
    assert!(
        log.contains("certificate verification failed for mx.remote.example")
            && log.contains("dsn=4.7.5, status=deferred (Server certificate not verified)"),
        "{log}"
    );
    assert!(s.sink.received().messages.is_empty(), "{log}");
}

#[test]
fn testing_delivers_and_warns_what_enforce_would_refuse() {
    let s = setup(false, &policy("testing", "mx.remote.example"));
    send_one(&s.d);
    let log = log_with(&s.d, "status=sent", 1);
    assert!(
        log.contains("warning: MTA-STS policy for remote.example (testing): certificate verification failed for mx.remote.example")
            && log.contains("status=sent"),
        "{log}"
    );
    assert_eq!(s.sink.received().messages.len(), 1);
}

#[test]
fn mode_none_changes_nothing() {
    let s = setup(false, "version: STSv1\r\nmode: none\r\nmax_age: 86400\r\n");
    send_one(&s.d);
    let log = log_with(&s.d, "status=sent", 1);
    assert!(log.contains("mode none"), "{log}");
    assert!(
        !log.contains("(testing)") && !log.contains("verification failed"),
        "{log}"
    );
    assert!(
        log.contains("Untrusted TLS connection established"),
        "{log}"
    );
}

#[test]
fn a_policy_that_cannot_be_fetched_securely_is_no_policy() {
    // The policy server's certificate is not trusted: its policy would refuse this MX, but it
    // does not count; delivery goes on as configured (may).
    let s = setup_with(true, false, &policy("enforce", "*.elsewhere.example"));
    send_one(&s.d);
    let log = log_with(&s.d, "status=sent", 1);
    assert!(
        log.contains("warning: MTA-STS policy fetch for remote.example failed: "),
        "{log}"
    );
    assert_eq!(s.https.requests.load(Ordering::SeqCst), 0);
    // The failure is remembered: the next delivery does not fetch again right away.
    send_one(&s.d);
    let log = log_with(&s.d, "status=sent", 2);
    assert_eq!(log.matches("MTA-STS policy fetch for").count(), 1, "{log}");
}

#[test]
fn testing_warns_about_an_mx_not_in_the_policy() {
    let s = setup(true, &policy("testing", "*.elsewhere.example"));
    send_one(&s.d);
    let log = log_with(&s.d, "status=sent", 1);
    assert!(
        log.contains("warning: MTA-STS policy for remote.example (testing): MX host mx.remote.example does not match the policy"),
        "{log}"
    );
    assert!(!log.contains("certificate verification failed"), "{log}");
}
