//! LMTP next-hop parsing, and the client's LMTP mode (LHLO, per-recipient replies after DATA,
//! connection reuse) against a small scripted LMTP server on a Unix socket.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use corepost_spool::{MailParams, Recipient};

use super::*;
use crate::delivery::smtp::{
    ClientSettings, Outbound, RecipientResult, SessionError, SmtpConnection, TlsLevel,
    TransactionResult,
};

#[test]
fn nexthop_forms() {
    let q = Path::new("/var/spool/corepost");
    let inet = |s: &str| LmtpTarget::Inet(s.to_string());
    let unix = |s: &str| LmtpTarget::Unix(s.into());
    let cases = [
        ("unix:/run/dovecot/lmtp", unix("/run/dovecot/lmtp")),
        (
            "UNIX:private/dovecot-lmtp",
            unix("/var/spool/corepost/private/dovecot-lmtp"),
        ),
        ("/run/lmtp", unix("/run/lmtp")),
        ("inet:mail.example.com", inet("[mail.example.com]:24")),
        (
            "inet:mail.example.com:2424",
            inet("[mail.example.com]:2424"),
        ),
        ("inet:[127.0.0.1]:2003", inet("[127.0.0.1]:2003")),
        ("inet:127.0.0.1", inet("[127.0.0.1]:24")),
        ("inet:[::1]:24", inet("[::1]:24")),
        ("inet:[ipv6:::1]:25", inet("[::1]:25")),
        ("[127.0.0.1]:10024", inet("[127.0.0.1]:10024")),
        ("localhost:lmtp", inet("[localhost]:24")),
        ("Mail.Example.COM", inet("[mail.example.com]:24")),
    ];
    for (text, want) in cases {
        assert_eq!(parse_nexthop(text, 24, q), Ok(want), "{text}");
    }
    for bad in [
        "",
        "unix:",
        "inet:",
        "inet:[127.0.0.1",
        "host:99999",
        "inet:bad host",
    ] {
        assert!(
            parse_nexthop(bad, 24, q).is_err(),
            "{bad:?} should not parse"
        );
    }
    assert_eq!(parse_port("24"), Some(24));
    assert_eq!(parse_port("lmtp"), Some(24));
    assert_eq!(parse_port("0"), None);
    assert_eq!(parse_port("x"), None);
}

proptest::proptest! {
    /// Any next hop text parses or is refused with a message; a TCP target is always in the
    /// bracketed (no MX) form with a port.
    #[test]
    fn nexthop_parsing_never_panics(text in "\\PC{0,80}") {
        if let Ok(LmtpTarget::Inet(hop)) = parse_nexthop(&text, 24, Path::new("/q")) {
            proptest::prop_assert!(hop.starts_with('['), "{}", hop);
            let port = hop.rsplit_once("]:").map(|(_, p)| p.parse::<u16>());
            proptest::prop_assert!(matches!(port, Some(Ok(_))), "{}", hop);
        }
    }
}

fn reply(code: u16, text: &str) -> crate::delivery::smtp::ServerReply {
    crate::delivery::smtp::ServerReply {
        code,
        enhanced: None,
        text: text.into(),
    }
}

/// Per-recipient replies are matched to accepted recipients in order, skipping refused ones;
/// a missing reply is no fate at all, and SMTP results keep using the one data reply.
#[test]
fn final_reply_maps_replies_to_accepted_recipients() {
    let r = TransactionResult {
        recipients: vec![
            RecipientResult::Rejected(reply(550, "no such user")),
            RecipientResult::Accepted(reply(250, "a")),
            RecipientResult::Accepted(reply(250, "b")),
            RecipientResult::Rejected(reply(450, "later")),
            RecipientResult::Accepted(reply(250, "c")),
        ],
        data: Some(reply(452, "full")),
        per_recipient: vec![reply(250, "a saved"), reply(452, "full")],
    };
    let got: Vec<Option<(u16, &str, &str)>> = (0..6)
        .map(|i| {
            r.final_reply(i)
                .map(|(reply, stage)| (reply.code, reply.text.as_str(), stage))
        })
        .collect();
    assert_eq!(
        got,
        [
            Some((550, "no such user", "RCPT TO")),
            Some((250, "a saved", "end of DATA")),
            Some((452, "full", "end of DATA")),
            Some((450, "later", "RCPT TO")),
            None,
            None,
        ]
    );
    let smtp = TransactionResult {
        per_recipient: Vec::new(),
        data: Some(reply(250, "queued")),
        ..r
    };
    assert_eq!(smtp.final_reply(4).map(|(d, _)| d.code), Some(250));
    assert_eq!(smtp.final_reply(0).map(|(d, _)| d.code), Some(550));
}

#[test]
fn settings_read_lmtp_parameters() {
    let get = |name: &str| -> Result<String, corepost_config::ConfigError> {
        Ok(match name {
            "lmtp_lhlo_name" => "lmtp.example.com".into(),
            "lmtp_tls_security_level" => "".into(),
            "lmtp_connect_timeout" => "0s".into(),
            "lmtp_data_done_timeout" => "10m".into(),
            "lmtp_tcp_port" => "2424".into(),
            "lmtp_connection_cache_time_limit" => "7s".into(),
            "lmtp_connection_reuse_count_limit" => "3".into(),
            "queue_directory" => "/var/spool/corepost".into(),
            "lmtp_line_length_limit" => "500".into(),
            "lmtp_skip_5xx_greeting" | "disable_mime_output_conversion" => "no".into(),
            "lmtp_connection_cache_on_demand" => "yes".into(),
            "lmtp_bind_address" => "192.0.2.1".into(),
            "lmtp_bind_address_enforce" => "no".into(),
            "lmtp_bind_address6" | "lmtp_connection_cache_destinations" | "lmtp_generic_maps" => {
                "".into()
            }
            "lmtp_discard_lhlo_keywords" => "Pipelining".into(),
            // The smtp_ twins are never read for an lmtp transport.
            n if n.starts_with("smtp_") => "bogus".into(),
            _ => "300".into(),
        })
    };
    let s = ClientSettings::for_protocol(&get, "dovecot", true).unwrap();
    assert!(s.lmtp);
    assert_eq!(s.helo_name, "lmtp.example.com");
    assert_eq!(s.tls, TlsLevel::None);
    assert_eq!(s.connect_timeout, Duration::ZERO);
    assert_eq!(s.data_done_timeout, Duration::from_secs(600));
    assert_eq!(s.helo_timeout, Duration::from_secs(300));
    assert_eq!(s.default_port, 2424);
    assert_eq!(s.socket_directory, Path::new("/var/spool/corepost"));
    assert_eq!(s.cache_time_limit, Duration::from_secs(7));
    assert_eq!(s.reuse_count_limit, 3);
    assert_eq!(s.line_length_limit, 500);
    assert!(!s.skip_5xx_greeting && s.mime_output_conversion && s.cache_on_demand);
    assert_eq!(s.bind_address, Some("192.0.2.1".parse().unwrap()));
    assert!(!s.bind_address_enforce);
    assert_eq!(s.discard_ehlo_keywords, ["pipelining"]);
    // LHLO always: the EHLO switches are SMTP's.
    assert!(s.always_send_ehlo && !s.never_send_ehlo);
}

fn settings() -> ClientSettings {
    ClientSettings::for_tests(TlsLevel::None, true)
}

/// What the scripted server does: per recipient address its RCPT reply (default 250) and its
/// reply after the end of data (default 250); `hang_up_after` closes the connection after that
/// many end-of-data replies; `lhlo` replaces the LHLO reply.
#[derive(Default, Clone)]
struct Script {
    rcpt: HashMap<String, String>,
    done: HashMap<String, String>,
    hang_up_after: Option<usize>,
    lhlo: Option<String>,
    /// Advertise CHUNKING and BINARYMIME, and take `BDAT n LAST`.
    chunking: bool,
}

/// Every command line received, per connection.
type Log = Arc<Mutex<Vec<Vec<String>>>>;

fn serve(path: &Path, script: Script) -> Log {
    let listener = UnixListener::bind(path).expect("bind");
    let log = Log::default();
    let shared = log.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let n = {
                let mut l = shared.lock().unwrap();
                l.push(Vec::new());
                l.len() - 1
            };
            let (log, script) = (shared.clone(), script.clone());
            std::thread::spawn(move || session(conn, n, &log, &script));
        }
    });
    log
}

fn session(conn: std::os::unix::net::UnixStream, n: usize, log: &Log, script: &Script) {
    let mut w = conn.try_clone().expect("clone");
    let mut r = BufReader::new(conn);
    let _ = w.write_all(b"220 lmtp.test LMTP ready\r\n");
    let mut accepted: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let cmd = line.trim_end().to_string();
        log.lock().unwrap()[n].push(cmd.clone());
        let upper = cmd.to_ascii_uppercase();
        let reply = if upper.starts_with("LHLO") {
            script.lhlo.clone().unwrap_or_else(|| {
                if script.chunking {
                    "250-lmtp.test\r\n250-PIPELINING\r\n250-CHUNKING\r\n250 BINARYMIME".into()
                } else {
                    "250-lmtp.test\r\n250-PIPELINING\r\n250 8BITMIME".into()
                }
            })
        } else if upper.starts_with("BDAT ") && upper.ends_with(" LAST") {
            let n: usize = upper
                .split(' ')
                .nth(1)
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let mut chunk = vec![0; n];
            if std::io::Read::read_exact(&mut r, &mut chunk).is_err() {
                return;
            }
            for addr in &accepted {
                let reply = script
                    .done
                    .get(addr)
                    .cloned()
                    .unwrap_or_else(|| format!("250 2.0.0 <{addr}> {n} octets saved"));
                let _ = w.write_all(format!("{reply}\r\n").as_bytes());
            }
            accepted.clear();
            continue;
        } else if upper.starts_with("MAIL") {
            accepted.clear();
            "250 2.1.0 OK".into()
        } else if upper.starts_with("RCPT") {
            let addr = cmd
                .split('<')
                .nth(1)
                .and_then(|a| a.split('>').next())
                .unwrap_or_default()
                .to_string();
            let reply = script
                .rcpt
                .get(&addr)
                .cloned()
                .unwrap_or_else(|| "250 2.1.5 OK".into());
            if reply.starts_with('2') {
                accepted.push(addr);
            }
            reply
        } else if upper == "DATA" {
            if accepted.is_empty() {
                "503 5.5.1 No valid recipients".into()
            } else {
                let _ = w.write_all(b"354 OK\r\n");
                let mut body = String::new();
                loop {
                    body.clear();
                    if r.read_line(&mut body).unwrap_or(0) == 0 {
                        return;
                    }
                    if body == ".\r\n" {
                        break;
                    }
                }
                for (i, addr) in accepted.iter().enumerate() {
                    if script.hang_up_after == Some(i) {
                        return;
                    }
                    let reply = script
                        .done
                        .get(addr)
                        .cloned()
                        .unwrap_or_else(|| format!("250 2.0.0 <{addr}> Saved"));
                    let _ = w.write_all(format!("{reply}\r\n").as_bytes());
                }
                accepted.clear();
                continue;
            }
        } else if upper == "QUIT" {
            let _ = w.write_all(b"221 2.0.0 Bye\r\n");
            return;
        } else {
            "250 2.0.0 OK".into()
        };
        let _ = w.write_all(format!("{reply}\r\n").as_bytes());
    }
}

fn on_executor<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("glommio executor")
        .join()
        .expect("test task");
}

async fn send(conn: &mut SmtpConnection, to: &[&str]) -> Result<TransactionResult, SessionError> {
    let recipients: Vec<Recipient> = to
        .iter()
        .map(|a| Recipient {
            address: (*a).into(),
            ..Recipient::default()
        })
        .collect();
    let refs: Vec<&Recipient> = recipients.iter().collect();
    conn.deliver(&Outbound {
        sender: "sender@example.com",
        params: &MailParams::default(),
        recipients: &refs,
        content: b"Subject: t\r\n\r\nhello\r\n",
    })
    .await
}

fn codes(r: &TransactionResult) -> Vec<Option<(u16, &'static str)>> {
    (0..r.recipients.len())
        .map(|i| r.final_reply(i).map(|(reply, stage)| (reply.code, stage)))
        .collect()
}

#[test]
fn per_recipient_replies_after_data_and_reuse() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script::default();
    script.rcpt.insert(
        "nobody@example.org".into(),
        "550 5.1.1 <nobody@example.org> User doesn't exist".into(),
    );
    script.done.insert(
        "full@example.org".into(),
        "452 4.2.2 <full@example.org> Quota exceeded".into(),
    );
    let log = serve(&path, script);
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect_unix(&path, "localhost", &settings())
            .await
            .expect("connect");
        assert!(conn.capabilities().pipelining);
        assert_eq!(conn.relay(), format!("localhost[{}]", path.display()));
        assert_eq!(conn.addr(), None);
        let r = send(
            &mut conn,
            &[
                "alice@example.org",
                "nobody@example.org",
                "full@example.org",
                "bob@example.org",
            ],
        )
        .await
        .expect("transaction");
        assert!(matches!(r.recipients[1], RecipientResult::Rejected(_)));
        assert_eq!(r.per_recipient.len(), 3, "one reply per accepted recipient");
        assert_eq!(
            codes(&r),
            [
                Some((250, "end of DATA")),
                Some((550, "RCPT TO")),
                Some((452, "end of DATA")),
                Some((250, "end of DATA")),
            ]
        );
        assert_eq!(r.per_recipient[0].text, "<alice@example.org> Saved");
        assert_eq!(r.per_recipient[2].text, "<bob@example.org> Saved");
        assert_eq!(
            r.data.as_ref().map(|d| d.code),
            Some(452),
            "the first failure"
        );
        // The same connection takes the next transaction, with no RSET in between.
        let r = send(&mut conn, &["carol@example.org"])
            .await
            .expect("second");
        assert_eq!(codes(&r), [Some((250, "end of DATA"))]);
        assert_eq!(r.data.as_ref().map(|d| d.code), Some(250));
        assert_eq!(conn.transactions(), 2);
        conn.quit().await;
    });
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1, "one connection for both transactions");
    let lines = &log[0];
    assert_eq!(lines[0], "LHLO client.test");
    assert!(
        !lines.iter().any(|l| l.starts_with("EHLO") || l == "RSET"),
        "{lines:?}"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("MAIL FROM")).count(),
        2
    );
}

/// BDAT LAST (a BINARYMIME message) also gets one reply per accepted recipient.
#[test]
fn bdat_last_gets_per_recipient_replies() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let mut script = Script {
        chunking: true,
        ..Script::default()
    };
    script.done.insert(
        "b@example.org".into(),
        "554 5.6.0 <b@example.org> Rejected".into(),
    );
    serve(&path, script);
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect_unix(&path, "localhost", &settings())
            .await
            .expect("connect");
        let recipients: Vec<Recipient> = ["a@example.org", "b@example.org"]
            .iter()
            .map(|a| Recipient {
                address: (*a).into(),
                ..Recipient::default()
            })
            .collect();
        let refs: Vec<&Recipient> = recipients.iter().collect();
        let params = MailParams {
            body: corepost_spool::BodyType::BinaryMime,
            ..MailParams::default()
        };
        let r = conn
            .deliver(&Outbound {
                sender: "s@example.org",
                params: &params,
                recipients: &refs,
                content: b"Subject: b\r\n\r\n\x00\x01binary\r\n",
            })
            .await
            .expect("transaction");
        assert_eq!(
            codes(&r),
            [Some((250, "end of DATA")), Some((554, "end of DATA"))]
        );
        assert_eq!(r.per_recipient[0].text, "<a@example.org> 24 octets saved");
        // The session is in step: another transaction works.
        let r = send(&mut conn, &["c@example.org"]).await.expect("second");
        assert_eq!(codes(&r), [Some((250, "end of DATA"))]);
    });
}

#[test]
fn lost_connection_between_replies_keeps_the_ones_that_came() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let log = serve(
        &path,
        Script {
            hang_up_after: Some(1),
            ..Script::default()
        },
    );
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect_unix(&path, "localhost", &settings())
            .await
            .expect("connect");
        let r = send(&mut conn, &["a@example.org", "b@example.org"])
            .await
            .expect("partial result");
        assert_eq!(codes(&r), [Some((250, "end of DATA")), None]);
        assert!(!conn.is_usable());
    });
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn refused_lhlo_has_no_helo_fallback() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lmtp");
    let log = serve(
        &path,
        Script {
            lhlo: Some("500 5.5.1 Unknown command".into()),
            ..Script::default()
        },
    );
    on_executor(move || async move {
        let e = SmtpConnection::connect_unix(&path, "localhost", &settings())
            .await
            .err()
            .expect("refused");
        assert!(e.is_permanent());
        assert!(e.dsn().contains("(in reply to LHLO command)"), "{e}");
    });
    let log = log.lock().unwrap();
    assert!(
        !log[0].iter().any(|l| l.starts_with("HELO")),
        "{:?}",
        log[0]
    );
}

#[test]
fn missing_socket_is_a_connect_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    on_executor(move || async move {
        let e = SmtpConnection::connect_unix(&path, "localhost", &settings())
            .await
            .err()
            .expect("no socket");
        assert!(!e.is_permanent());
        assert!(
            e.dsn()
                .starts_with(&format!("connect to localhost[{}]: ", path.display())),
            "{e}"
        );
    });
}
