//! What the client puts on the wire for content the next hop may not take as it is (bare CR
//! and LF, long lines, 8-bit MIME without 8BITMIME), and the connection-level settings
//! (`smtp_always_send_ehlo`, `smtp_never_send_ehlo`, `smtp_bind_address`), against the
//! scripted [`TestSink`].

use corepost_spool::{BodyType, MailParams, Recipient};

use super::*;
use crate::delivery::testsink::{Received, SinkScript, TestSink};

fn settings() -> ClientSettings {
    ClientSettings::for_tests(TlsLevel::None, false)
}

/// Deliver `content` once over a new connection with `settings`; the sink's record, and
/// whether the client broke a long line.
fn deliver_once(
    script: SinkScript,
    settings: ClientSettings,
    body: BodyType,
    content: &'static [u8],
) -> (Received, bool) {
    let sink = TestSink::start(script).unwrap();
    let addr = sink.addr();
    let folded = glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let mut conn = SmtpConnection::connect(addr, "sink.test", &settings)
                .await
                .unwrap();
            let params = MailParams {
                body,
                ..MailParams::default()
            };
            let rcpt = Recipient {
                address: "r@x".into(),
                ..Recipient::default()
            };
            let r = conn
                .deliver(&Outbound {
                    sender: "s@x",
                    params: &params,
                    recipients: &[&rcpt],
                    content,
                })
                .await
                .unwrap();
            assert_eq!(r.data.map(|d| d.code), Some(250));
            let folded = conn.folded();
            conn.quit().await;
            folded
        })
        .unwrap()
        .join()
        .unwrap();
    (sink.received(), folded)
}

/// No CR or LF on the wire except as CRLF.
fn assert_canonical(wire: &[u8]) {
    assert!(
        encode::is_canonical(wire, 0),
        "bare CR or LF on the wire: {:?}",
        String::from_utf8_lossy(wire)
    );
}

#[test]
fn bare_cr_and_lf_never_reach_the_next_hop_by_data_or_bdat() {
    const CONTENT: &[u8] = b"Subject: s\r\n\r\nab\rcd\r\nef\ngh\r\n.\rx\r\n";
    for chunking in [false, true] {
        let script = SinkScript {
            chunking,
            ..SinkScript::default()
        };
        let (got, _) = deliver_once(script, settings(), BodyType::SevenBit, CONTENT);
        let m = &got.messages[0];
        assert_canonical(&m.wire);
        // Content with a bare CR goes by DATA even to a CHUNKING server, repaired.
        assert!(got.lines(0).contains(&"DATA"), "{:?}", got.lines(0));
        assert_eq!(m.content, b"Subject: s\r\n\r\nab cd\r\nef\r\ngh\r\n. x\r\n");
    }
}

#[test]
fn a_5000_character_line_is_broken_as_postfix_does() {
    static CONTENT: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        let mut c = b"Subject: long\r\n\r\n".to_vec();
        c.extend(std::iter::repeat_n(b'y', 5000));
        c.extend_from_slice(b"\r\nshort\r\n");
        c
    });
    let (got, folded) = deliver_once(
        SinkScript::default(),
        settings(),
        BodyType::SevenBit,
        CONTENT.as_slice(),
    );
    assert!(folded);
    let wire = &got.messages[0].wire;
    assert_canonical(wire);
    let lens: Vec<usize> = wire
        .split(|&b| b == b'\n')
        .map(|l| l.len().saturating_sub(1))
        .collect();
    // 998, then continuation lines of a space and 997 bytes, the rest: 998+4*997+14 = 5000.
    assert_eq!(&lens[2..9], &[998, 998, 998, 998, 998, 15, 5], "{lens:?}");
    // smtp_line_length_limit = 0: no limit, sent as is.
    let unlimited = ClientSettings {
        line_length_limit: 0,
        ..settings()
    };
    let (got, folded) = deliver_once(
        SinkScript::default(),
        unlimited,
        BodyType::SevenBit,
        CONTENT.as_slice(),
    );
    assert!(!folded);
    assert_eq!(got.messages[0].content, CONTENT.as_slice());
}

const EIGHT_BIT: &[u8] =
    b"Subject: 8\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
    Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9\r\n";

#[test]
fn eight_bit_to_a_server_without_8bitmime_becomes_quoted_printable() {
    let no8 = || SinkScript {
        eightbitmime: false,
        ..SinkScript::default()
    };
    let (got, _) = deliver_once(no8(), settings(), BodyType::EightBitMime, EIGHT_BIT);
    let m = &got.messages[0];
    // No BODY=8BITMIME to a server that does not announce it.
    assert_eq!(m.mail_from, "MAIL FROM:<s@x>");
    assert!(
        m.content.ends_with(
            b"charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"
        ),
        "{}",
        String::from_utf8_lossy(&m.content)
    );
    assert!(m.content.is_ascii());
    // disable_mime_output_conversion = yes: sent unchanged.
    let off = ClientSettings {
        mime_output_conversion: false,
        ..settings()
    };
    let (got, _) = deliver_once(no8(), off, BodyType::EightBitMime, EIGHT_BIT);
    assert_eq!(got.messages[0].content, EIGHT_BIT);
    // A server with 8BITMIME gets it unchanged, with BODY=8BITMIME.
    let (got, _) = deliver_once(
        SinkScript::default(),
        settings(),
        BodyType::EightBitMime,
        EIGHT_BIT,
    );
    assert_eq!(got.messages[0].content, EIGHT_BIT);
    assert!(got.messages[0].mail_from.contains("BODY=8BITMIME"));
}

#[test]
fn ehlo_or_helo_as_configured() {
    let plain_greeting = || SinkScript {
        greeting: "220 sink.test mail service".into(),
        ..SinkScript::default()
    };
    // smtp_always_send_ehlo = yes: EHLO even without ESMTP in the greeting.
    let (got, _) = deliver_once(plain_greeting(), settings(), BodyType::SevenBit, b"x\r\n");
    assert!(got.lines(0)[0].starts_with("EHLO "), "{:?}", got.lines(0));
    // = no: HELO unless the greeting says ESMTP.
    let only_esmtp = ClientSettings {
        always_send_ehlo: false,
        ..settings()
    };
    let (got, _) = deliver_once(
        plain_greeting(),
        only_esmtp.clone(),
        BodyType::SevenBit,
        b"x\r\n",
    );
    assert_eq!(got.lines(0)[0], "HELO client.test");
    let (got, _) = deliver_once(
        SinkScript::default(),
        only_esmtp,
        BodyType::SevenBit,
        b"x\r\n",
    );
    assert!(got.lines(0)[0].starts_with("EHLO "));
    // smtp_never_send_ehlo = yes: HELO, so no extensions (no pipelining: MAIL alone).
    let never = ClientSettings {
        never_send_ehlo: true,
        ..settings()
    };
    let (got, _) = deliver_once(SinkScript::default(), never, BodyType::SevenBit, b"x\r\n");
    assert_eq!(got.lines(0)[0], "HELO client.test");
    assert_eq!(got.messages.len(), 1);
}

#[test]
fn bind_address_sets_the_source_address() {
    let pinned = ClientSettings {
        bind_address: Some("127.0.0.2".parse().unwrap()),
        ..settings()
    };
    let (got, _) = deliver_once(SinkScript::default(), pinned, BodyType::SevenBit, b"x\r\n");
    assert_eq!(got.peers[0].ip().to_string(), "127.0.0.2");
    let (got, _) = deliver_once(
        SinkScript::default(),
        settings(),
        BodyType::SevenBit,
        b"x\r\n",
    );
    assert_eq!(got.peers[0].ip().to_string(), "127.0.0.1");
}
