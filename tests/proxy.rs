//! smtpd behind an upstream proxy (`smtpd_upstream_proxy_protocol =
//! haproxy`): PROXY protocol v1 and v2 headers written by hand, a missing
//! or broken header (Postfix's warning and 421), and a real HAProxy in
//! front of the daemon.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use support::*;

const PROXIED: &str = "smtpd_upstream_proxy_protocol = haproxy\nsmtpd_upstream_proxy_timeout = 2s\nmynetworks = 192.0.2.0/24\n";

/// Send `header`, then read the greeting.
fn greeting_after(port: u16, header: &[u8]) -> (TcpStream, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(header).unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).unwrap_or(0);
    (s, String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn command(s: &mut TcpStream, line: &str) -> String {
    s.write_all(format!("{line}\r\n").as_bytes()).unwrap();
    let mut buf = [0u8; 1024];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn v2_header(client: [u8; 4], server: [u8; 4], cport: u16, sport: u16) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&client);
    h.extend_from_slice(&server);
    h.extend_from_slice(&cport.to_be_bytes());
    h.extend_from_slice(&sport.to_be_bytes());
    h
}

#[test]
fn proxy_headers_give_the_client_address() {
    let d = Daemon::start(PROXIED);
    // v1, with the first command in the same segment: nothing after the
    // header is lost.
    let (mut c, greeting) = greeting_after(d.port, b"PROXY TCP4 192.0.2.7 192.0.2.25 40000 25\r\n");
    assert!(greeting.starts_with("220 "), "{greeting}");
    assert!(command(&mut c, "EHLO client.example").starts_with("250"));
    // 192.0.2.7 is in mynetworks: relaying is allowed for the proxied
    // client, not for the proxy.
    assert!(command(&mut c, "MAIL FROM:<a@example.org>").starts_with("250"));
    let rcpt = command(&mut c, "RCPT TO:<x@remote.example>");
    assert!(rcpt.starts_with("250"), "{rcpt}");
    let (_c2, greeting) = greeting_after(
        d.port,
        &v2_header([198, 51, 100, 9], [192, 0, 2, 25], 1234, 25),
    );
    assert!(greeting.starts_with("220 "), "{greeting}");
    let log = d.log();
    assert!(log.contains("connect from unknown[192.0.2.7]"), "{log}");
    assert!(log.contains("connect from unknown[198.51.100.9]"), "{log}");
}

#[test]
fn a_missing_or_broken_header_hangs_up() {
    let d = Daemon::start(PROXIED);
    let (_c, reply) = greeting_after(d.port, b"EHLO client.example\r\n");
    assert_eq!(reply, "421 4.3.0 mx.test.example Server local error\r\n");
    let (_c, reply) = greeting_after(d.port, b"PROXY UNKNOWN\r\n");
    assert_eq!(reply, "421 4.3.0 mx.test.example Server local error\r\n");
    // Nothing at all: the proxy timeout.
    let (_c, reply) = greeting_after(d.port, b"");
    assert_eq!(reply, "421 4.3.0 mx.test.example Server local error\r\n");
    let log = d.log();
    for want in [
        "warning: haproxy read: unrecognized protocol header: EHLO client.example\\r\\n",
        "warning: haproxy read: bad or missing protocol type: PROXY UNKNOWN\\r\\n",
        "warning: haproxy read: timeout error",
    ] {
        assert!(log.contains(want), "{want}\n{log}");
    }
}

/// A running HAProxy in front of the daemon; killed when dropped.
struct Haproxy {
    child: std::process::Child,
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(frontend: u16, backend: u16, send_proxy: &str) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("haproxy.cfg");
        std::fs::write(
            &cfg,
            format!(
                "global\n  maxconn 100\ndefaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend smtp\n  bind 127.0.0.1:{frontend}\n  default_backend corepost\n\
                 backend corepost\n  server mx 127.0.0.1:{backend} {send_proxy}\n"
            ),
        )
        .unwrap();
        let child = std::process::Command::new("/usr/sbin/haproxy")
            .args(["-db", "-f", &cfg.display().to_string()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        wait_until(10, || TcpStream::connect(("127.0.0.1", frontend)).ok())
            .expect("haproxy listens");
        Haproxy { child, _dir: dir }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn behind_a_real_haproxy() {
    let d = Daemon::start(
        "smtpd_upstream_proxy_protocol = haproxy\nmynetworks = 127.0.0.1/32\nsmtpd_client_restrictions = permit_mynetworks, reject\nsmtpd_delay_reject = no\n",
    );
    for send_proxy in ["send-proxy", "send-proxy-v2"] {
        let front = free_port();
        let _h = Haproxy::start(front, d.port, send_proxy);
        // The client connects from 127.0.0.2; the daemon only sees HAProxy's
        // 127.0.0.1 on the socket, but the header's 127.0.0.2.
        let (mut c, greeting) = Raw::open_from(front, "127.0.0.2");
        assert!(
            greeting
                .starts_with("554 5.7.1 <unknown[127.0.0.2]>: Client host rejected: Access denied"),
            "{send_proxy}: {greeting}\n{}",
            d.log()
        );
        let _ = c.try_cmd("QUIT");
        let (mut ok, greeting) = Raw::open_from(front, "127.0.0.1");
        assert!(greeting.starts_with("220 "), "{send_proxy}: {greeting}");
        assert!(ok.cmd("EHLO client.example").starts_with("250"));
        ok.cmd("QUIT");
    }
    assert!(d.log().contains("connect from unknown[127.0.0.2]"));
}
