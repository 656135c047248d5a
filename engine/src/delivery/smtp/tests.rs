//! The client against the scripted [`TestSink`](crate::delivery::testsink::TestSink) on loopback,
//! each test on its own glommio executor with short timeouts.

use std::future::Future;
use std::time::Duration;

use corepost_spool::{BodyType, MailParams, Recipient};

use super::*;
use crate::delivery::testsink::{SinkScript, TestSink};

fn on_executor<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("glommio executor")
        .join()
        .expect("test task");
}

fn settings(tls: TlsLevel) -> ClientSettings {
    ClientSettings::for_tests(tls, false)
}

fn rcpt(address: &str) -> Recipient {
    Recipient {
        address: address.into(),
        ..Recipient::default()
    }
}

/// Run one transaction from `sender` to `to` with `content` and `params`.
async fn send(
    conn: &mut SmtpConnection,
    params: &MailParams,
    to: &[&str],
    content: &[u8],
) -> Result<TransactionResult, SessionError> {
    let recipients: Vec<Recipient> = to.iter().map(|a| rcpt(a)).collect();
    let refs: Vec<&Recipient> = recipients.iter().collect();
    conn.deliver(&Outbound {
        sender: "sender@example.com",
        params,
        recipients: &refs,
        content,
    })
    .await
}

fn accepted(r: &TransactionResult) -> Vec<bool> {
    r.recipients
        .iter()
        .map(|r| matches!(r, RecipientResult::Accepted(_)))
        .collect()
}

const MESSAGE: &[u8] = b"Subject: test\r\n\r\nhello\r\n";

#[test]
fn pipelined_happy_path_in_one_write() {
    let sink = TestSink::start(SinkScript {
        size: Some(0),
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::May))
            .await
            .unwrap();
        assert!(conn.capabilities().pipelining);
        assert_eq!(
            conn.relay(),
            format!("sink.test[127.0.0.1]:{}", addr.port())
        );
        let r = send(&mut conn, &MailParams::default(), &["a@x", "b@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(accepted(&r), [true, true]);
        let data = r.data.unwrap();
        assert_eq!((data.code, data.enhanced.as_deref()), (250, Some("2.0.0")));
        assert_eq!(conn.transactions(), 1);
        assert!(conn.tls().is_none());
        conn.quit().await;
    });
    let got = sink.received();
    assert_eq!(got.messages.len(), 1);
    let m = &got.messages[0];
    assert_eq!(
        m.mail_from,
        format!("MAIL FROM:<sender@example.com> SIZE={}", MESSAGE.len())
    );
    assert_eq!(m.rcpt_to, ["RCPT TO:<a@x>", "RCPT TO:<b@x>"]);
    assert_eq!(m.content, MESSAGE);
    // MAIL, both RCPTs and DATA arrived in one read.
    let batch: Vec<_> = got
        .commands
        .iter()
        .filter(|c| c.line.starts_with("MAIL") || c.line.starts_with("RCPT") || c.line == "DATA")
        .collect();
    assert_eq!(batch.len(), 4);
    assert!(batch.iter().all(|c| c.read == batch[0].read), "{batch:?}");
    assert_eq!(got.lines(0).last(), Some(&"QUIT"));
}

#[test]
fn without_pipelining_one_command_at_a_time() {
    let sink = TestSink::start(SinkScript {
        pipelining: false,
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(&mut conn, &MailParams::default(), &["a@x", "b@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(accepted(&r), [true, true]);
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    let got = sink.received();
    assert_eq!(
        got.lines(0),
        [
            "EHLO client.test",
            "MAIL FROM:<sender@example.com>",
            "RCPT TO:<a@x>",
            "RCPT TO:<b@x>",
            "DATA",
            "QUIT"
        ]
    );
    let reads: Vec<usize> = got.commands.iter().map(|c| c.read).collect();
    assert!(reads.windows(2).all(|w| w[0] < w[1]), "{reads:?}");
    assert_eq!(got.messages[0].content, MESSAGE);
}

#[test]
fn dot_stuffing_and_bare_lf_on_the_wire() {
    let sink = TestSink::start(SinkScript::default()).unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let content = b"Subject: dots\n\n.leading dot\r\n..two\nno final newline";
        let r = send(&mut conn, &MailParams::default(), &["a@x"], content)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    let m = &sink.received().messages[0];
    assert_eq!(
        m.wire,
        b"Subject: dots\r\n\r\n..leading dot\r\n...two\r\nno final newline\r\n"
    );
    assert_eq!(
        m.content,
        b"Subject: dots\r\n\r\n.leading dot\r\n..two\r\nno final newline\r\n"
    );
}

#[test]
fn large_message_is_written_in_chunks() {
    let sink = TestSink::start(SinkScript::default()).unwrap();
    let addr = sink.addr();
    let line = b".0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n";
    let content: Vec<u8> = line
        .iter()
        .copied()
        .cycle()
        .take(line.len() * 20_000)
        .collect();
    let expected = content.clone();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(&mut conn, &MailParams::default(), &["a@x"], &content)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    assert_eq!(sink.received().messages[0].content, expected);
}

#[test]
fn chunking_with_pipelining_sends_everything_in_one_write() {
    let sink = TestSink::start(SinkScript {
        chunking: true,
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut settings = settings(TlsLevel::None);
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings)
            .await
            .unwrap();
        // Canonical content goes by BDAT, dots unstuffed.
        let r = send(
            &mut conn,
            &MailParams::default(),
            &["a@x", "b@x"],
            b"S: 1\r\n\r\n.dot\r\n",
        )
        .await
        .unwrap();
        assert_eq!(accepted(&r), [true, true]);
        // A bare LF: DATA, whose encoding repairs it.
        send(
            &mut conn,
            &MailParams::default(),
            &["a@x"],
            b"S: 2\r\n\r\nbare\nlf\r\n",
        )
        .await
        .unwrap();
        conn.quit().await;
        // smtp_discard_ehlo_keywords = chunking: DATA.
        settings.discard_ehlo_keywords = vec!["chunking".into()];
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings)
            .await
            .unwrap();
        send(
            &mut conn,
            &MailParams::default(),
            &["a@x"],
            b"S: 3\r\n\r\nx\r\n",
        )
        .await
        .unwrap();
        conn.quit().await;
    });
    let got = sink.received();
    let first = got.lines(0);
    let bdat = got
        .commands
        .iter()
        .find(|c| c.line.starts_with("BDAT"))
        .expect("BDAT sent");
    let mail = got
        .commands
        .iter()
        .find(|c| c.line.starts_with("MAIL FROM"))
        .unwrap();
    assert_eq!(
        bdat.read, mail.read,
        "MAIL, RCPT and BDAT in one write: {first:?}"
    );
    assert_eq!(got.messages[0].content, b"S: 1\r\n\r\n.dot\r\n");
    assert_eq!(
        got.messages[1].content, b"S: 2\r\n\r\nbare\r\nlf\r\n",
        "{first:?}"
    );
    assert!(
        first.iter().filter(|l| l.starts_with("BDAT")).count() == 1,
        "{first:?}"
    );
    assert!(first.contains(&"DATA"), "{first:?}");
    assert!(got.lines(1).contains(&"DATA"), "{:?}", got.lines(1));
    assert!(!got.lines(1).iter().any(|l| l.starts_with("BDAT")));
}

#[test]
fn bdat_for_binarymime_and_params() {
    let sink = TestSink::start(SinkScript {
        chunking: true,
        binarymime: true,
        dsn: true,
        size: Some(1_000_000),
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let params = MailParams {
            body: BodyType::BinaryMime,
            ret: Some(corepost_spool::Ret::Full),
            envid: Some("env id".into()),
            ..MailParams::default()
        };
        let content = b"Subject: bin\r\n\r\n.raw\nbytes\0\xff";
        let r = send(&mut conn, &params, &["a@x"], content).await.unwrap();
        assert_eq!(accepted(&r), [true]);
        assert_eq!(r.data.unwrap().code, 250);
        // A BINARYMIME message to a server without BINARYMIME: refused before sending.
        conn.caps.binarymime = false;
        let e = send(&mut conn, &params, &["a@x"], content)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Unsupported {
                    status: "5.6.3",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_permanent());
        conn.quit().await;
    });
    let got = sink.received();
    let m = &got.messages[0];
    assert_eq!(m.content, b"Subject: bin\r\n\r\n.raw\nbytes\0\xff");
    assert!(m.mail_from.contains(" BODY=BINARYMIME"), "{}", m.mail_from);
    assert!(
        m.mail_from.contains(" RET=FULL ENVID=env+20id"),
        "{}",
        m.mail_from
    );
    assert!(
        got.lines(0).iter().any(|l| l.starts_with("BDAT 28 LAST")),
        "{:?}",
        got.lines(0)
    );
    assert!(!got.lines(0).contains(&"DATA"));
}

#[test]
fn dsn_parameters_only_when_advertised() {
    let script = SinkScript {
        dsn: true,
        ..SinkScript::default()
    };
    let sink = TestSink::start(script).unwrap();
    let plain = TestSink::start(SinkScript::default()).unwrap();
    let (a1, a2) = (sink.addr(), plain.addr());
    on_executor(move || async move {
        let params = MailParams {
            ret: Some(corepost_spool::Ret::Headers),
            envid: Some("e1".into()),
            ..MailParams::default()
        };
        let r = Recipient {
            address: "a@x".into(),
            notify: corepost_spool::record::notify::FAILURE,
            orcpt: Some("rfc822;a@x".into()),
            ..Recipient::default()
        };
        for addr in [a1, a2] {
            let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
                .await
                .unwrap();
            let out = Outbound {
                sender: "",
                params: &params,
                recipients: &[&r],
                content: MESSAGE,
            };
            assert_eq!(conn.deliver(&out).await.unwrap().data.unwrap().code, 250);
            conn.quit().await;
        }
    });
    let m = &sink.received().messages[0];
    assert_eq!(m.mail_from, "MAIL FROM:<> RET=HDRS ENVID=e1");
    assert_eq!(m.rcpt_to, ["RCPT TO:<a@x> NOTIFY=FAILURE ORCPT=rfc822;a@x"]);
    let m = &plain.received().messages[0];
    assert_eq!(m.mail_from, "MAIL FROM:<>");
    assert_eq!(m.rcpt_to, ["RCPT TO:<a@x>"]);
}

#[test]
fn partial_rejection_delivers_the_rest() {
    let mut script = SinkScript::default();
    script
        .rcpt_replies
        .insert("bad@x".into(), "550 5.1.1 <bad@x>: User unknown".into());
    script
        .rcpt_replies
        .insert("later@x".into(), "450 4.2.0 <later@x>: try later".into());
    let sink = TestSink::start(script).unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(
            &mut conn,
            &MailParams::default(),
            &["bad@x", "good@x", "later@x"],
            MESSAGE,
        )
        .await
        .unwrap();
        assert_eq!(accepted(&r), [false, true, false]);
        assert_eq!(
            r.recipients[0].reply().to_string(),
            "550 5.1.1 <bad@x>: User unknown"
        );
        assert_eq!(r.recipients[2].reply().code, 450);
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    assert_eq!(sink.received().messages[0].rcpt_to, ["RCPT TO:<good@x>"]);
}

#[test]
fn all_recipients_rejected_then_reuse_with_rset() {
    let mut script = SinkScript::default();
    script
        .rcpt_replies
        .insert("bad@x".into(), "550 5.1.1 User unknown".into());
    let sink = TestSink::start(script).unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(&mut conn, &MailParams::default(), &["bad@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(accepted(&r), [false]);
        assert_eq!(r.data, None);
        assert_eq!(conn.transactions(), 0);
        // The owed RSET goes in front of the next transaction, on the same connection.
        let r = send(&mut conn, &MailParams::default(), &["good@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        let r = send(&mut conn, &MailParams::default(), &["good2@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        assert_eq!(conn.transactions(), 2);
        conn.quit().await;
    });
    let got = sink.received();
    assert_eq!(got.connections, 1);
    assert_eq!(got.messages.len(), 2);
    let lines = got.lines(0);
    let rset = lines.iter().position(|l| *l == "RSET").expect("RSET sent");
    assert_eq!(lines[rset + 1], "MAIL FROM:<sender@example.com>");
    assert_eq!(
        lines.iter().filter(|l| **l == "RSET").count(),
        1,
        "{lines:?}"
    );
}

#[test]
fn all_rejected_without_pipelining_and_explicit_reset() {
    let mut script = SinkScript {
        pipelining: false,
        ..SinkScript::default()
    };
    script
        .rcpt_replies
        .insert("bad@x".into(), "550 5.1.1 User unknown".into());
    let sink = TestSink::start(script).unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(&mut conn, &MailParams::default(), &["bad@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data, None);
        conn.reset().await.unwrap();
        let r = send(&mut conn, &MailParams::default(), &["ok@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    let lines = sink.received().lines(0).join("|");
    assert!(lines.contains("RCPT TO:<bad@x>|RSET|MAIL FROM"), "{lines}");
    assert!(!lines.contains("DATA|RSET"));
}

#[test]
fn greeting_rejections() {
    let perm = TestSink::start(SinkScript {
        greeting: "554 5.7.1 go away".into(),
        ..SinkScript::default()
    })
    .unwrap();
    let temp = TestSink::start(SinkScript {
        greeting: "421 4.3.2 busy".into(),
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2) = (perm.addr(), temp.addr());
    on_executor(move || async move {
        let Err(e) = SmtpConnection::connect(a1, "sink.test", &settings(TlsLevel::None)).await
        else {
            panic!("connected")
        };
        assert!(matches!(&e, SessionError::Greeting { reply, .. } if reply.code == 554));
        // smtp_skip_5xx_greeting = yes (the default): temporary, next server.
        assert!(!e.is_permanent());
        assert_eq!(e.status(), "4.7.1");
        assert_eq!(
            e.dsn(),
            format!(
                "host sink.test[{}] refused to talk to me: 554 5.7.1 go away",
                a1.ip()
            )
        );
        let no_skip = ClientSettings {
            skip_5xx_greeting: false,
            ..settings(TlsLevel::None)
        };
        let Err(e) = SmtpConnection::connect(a1, "sink.test", &no_skip).await else {
            panic!("connected")
        };
        assert!(e.is_permanent());
        assert_eq!(e.status(), "5.7.1");
        let Err(e) = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::None)).await
        else {
            panic!("connected")
        };
        assert!(matches!(&e, SessionError::Greeting { reply, .. } if reply.code == 421));
        assert!(!e.is_permanent());
    });
}

#[test]
fn ehlo_rejected_falls_back_to_helo() {
    let sink = TestSink::start(SinkScript {
        ehlo_reply: Some("502 5.5.2 what".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::May))
            .await
            .unwrap();
        assert!(!conn.capabilities().esmtp);
        let r = send(
            &mut conn,
            &MailParams {
                body: BodyType::EightBitMime,
                ..MailParams::default()
            },
            &["a@x"],
            MESSAGE,
        )
        .await
        .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    let got = sink.received();
    assert_eq!(
        &got.lines(0)[..3],
        [
            "EHLO client.test",
            "HELO client.test",
            "MAIL FROM:<sender@example.com>"
        ]
    );
}

#[test]
fn mail_from_rejected() {
    let sink = TestSink::start(SinkScript {
        mail_reply: Some("550 5.7.1 sender refused".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SessionError::Reply { stage: "MAIL FROM", reply, .. } if reply.code == 550),
            "{e:?}"
        );
        assert!(e.is_permanent());
        assert_eq!(
            e.dsn(),
            "host sink.test[127.0.0.1] said: 550 5.7.1 sender refused (in reply to MAIL FROM command)"
        );
        // The dialogue is still in step: RSET works and QUIT is clean.
        assert!(conn.is_usable());
        conn.reset().await.unwrap();
        conn.quit().await;
    });
}

#[test]
fn data_rejected_at_init_and_at_end() {
    let sink = TestSink::start(SinkScript {
        data_reply: Some("451 4.3.0 no data now".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let end = TestSink::start(SinkScript {
        end_reply: Some("554 5.7.1 spam".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2) = (sink.addr(), end.addr());
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(a1, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SessionError::Reply { stage: "DATA", reply, .. } if reply.code == 451),
            "{e:?}"
        );
        assert!(!e.is_permanent());
        conn.quit().await;

        let mut conn = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(&mut conn, &MailParams::default(), &["a@x", "b@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(accepted(&r), [true, true]);
        assert_eq!(r.data.unwrap().to_string(), "554 5.7.1 spam");
        // Reusable afterwards.
        conn.reset().await.unwrap();
        conn.quit().await;
    });
}

#[test]
fn size_over_the_advertised_limit() {
    let sink = TestSink::start(SinkScript {
        size: Some(10),
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Unsupported {
                    status: "5.3.4",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.is_permanent());
        // Nothing was sent; the connection is still good.
        let r = send(&mut conn, &MailParams::default(), &["a@x"], b"tiny\r\n")
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    assert!(
        !sink
            .received()
            .lines(0)
            .contains(&"MAIL FROM:<sender@example.com> SIZE=24")
    );
}

#[test]
fn smtputf8_needed_but_not_offered() {
    let sink = TestSink::start(SinkScript::default()).unwrap();
    let utf8 = TestSink::start(SinkScript {
        smtputf8: true,
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2) = (sink.addr(), utf8.addr());
    on_executor(move || async move {
        let params = MailParams {
            smtputf8: true,
            ..MailParams::default()
        };
        let mut conn = SmtpConnection::connect(a1, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let e = send(&mut conn, &params, &["jos\u{e9}@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Unsupported {
                    status: "5.6.7",
                    ..
                }
            ),
            "{e:?}"
        );
        // ASCII envelope: delivered without SMTPUTF8.
        let r = send(&mut conn, &params, &["jose@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
        let mut conn = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(&mut conn, &params, &["jos\u{e9}@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    assert_eq!(
        sink.received().messages[0].mail_from,
        "MAIL FROM:<sender@example.com>"
    );
    let m = &utf8.received().messages[0];
    assert!(m.mail_from.ends_with(" SMTPUTF8"), "{}", m.mail_from);
    assert_eq!(m.rcpt_to, ["RCPT TO:<jos\u{e9}@x>"]);
}

#[test]
fn starttls_upgrade_discards_injected_bytes() {
    let sink = TestSink::start(SinkScript {
        starttls: true,
        starttls_inject: Some("250 injected\r\n".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "localhost", &settings(TlsLevel::May))
            .await
            .unwrap();
        let tls = conn.tls().expect("TLS");
        assert!(tls.starts_with("TLSv1.3 with cipher TLS_"), "{tls}");
        assert!(!conn.capabilities().starttls);
        let r = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
    let got = sink.received();
    assert!(got.messages[0].tls);
    let lines = got.lines(0);
    assert_eq!(
        &lines[..3],
        ["EHLO client.test", "STARTTLS", "EHLO client.test"]
    );
    assert!(
        got.commands
            .iter()
            .filter(|c| c.line.starts_with("MAIL"))
            .all(|c| c.tls)
    );
}

#[test]
fn tls_levels_when_starttls_is_missing_or_refused() {
    let plain = TestSink::start(SinkScript::default()).unwrap();
    let refused = TestSink::start(SinkScript {
        starttls: true,
        starttls_reply: Some("454 4.7.0 TLS not available".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2) = (plain.addr(), refused.addr());
    on_executor(move || async move {
        let Err(e) = SmtpConnection::connect(a1, "sink.test", &settings(TlsLevel::Encrypt)).await
        else {
            panic!("connected without TLS")
        };
        assert_eq!(
            e.dsn(),
            "TLS is required, but was not offered by host sink.test[127.0.0.1]"
        );
        assert!(!e.is_permanent());
        // may: plaintext when refused.
        let conn = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::May))
            .await
            .unwrap();
        assert!(conn.tls().is_none());
        conn.quit().await;
        let Err(e) = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::Encrypt)).await
        else {
            panic!("connected without TLS")
        };
        assert_eq!(
            e.dsn(),
            "TLS is required, but host sink.test[127.0.0.1] refused to start TLS: 454 4.7.0 TLS not available"
        );
        assert_eq!(e.status(), "4.7.0");
        // none: STARTTLS is never sent.
        let conn = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        conn.quit().await;
    });
    assert!(!refused.received().lines(3).contains(&"STARTTLS"));
}

#[test]
fn connect_refused_and_timeouts() {
    // A port nobody listens on: bind, note the port, close.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let greeting = TestSink::start(SinkScript {
        stall_on: Some("CONNECT".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let at_rcpt = TestSink::start(SinkScript {
        stall_on: Some("RCPT".into()),
        pipelining: false,
        ..SinkScript::default()
    })
    .unwrap();
    let end = TestSink::start(SinkScript {
        stall_on: Some(".".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2, a3) = (greeting.addr(), at_rcpt.addr(), end.addr());
    on_executor(move || async move {
        let mut s = settings(TlsLevel::None);
        let short = Duration::from_millis(200);
        (s.helo_timeout, s.rcpt_timeout, s.data_done_timeout) = (short, short, short);
        let Err(e) = SmtpConnection::connect(closed, "nowhere.test", &s).await else {
            panic!()
        };
        assert_eq!(
            e.dsn(),
            format!(
                "connect to nowhere.test[127.0.0.1]:{}: Connection refused",
                closed.port()
            )
        );

        let started = Instant::now();
        let Err(e) = SmtpConnection::connect(a1, "sink.test", &s).await else {
            panic!()
        };
        assert!(
            matches!(
                e,
                SessionError::Timeout {
                    stage: "greeting",
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(
            e.dsn(),
            "conversation with sink.test[127.0.0.1] timed out while receiving the initial server greeting"
        );
        assert!(started.elapsed() < Duration::from_secs(2));

        let mut conn = SmtpConnection::connect(a2, "sink.test", &s).await.unwrap();
        let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Timeout {
                    stage: "RCPT TO",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(!conn.is_usable());
        assert!(
            conn.deliver(&Outbound {
                sender: "",
                params: &MailParams::default(),
                recipients: &[&rcpt("a@x")],
                content: MESSAGE
            })
            .await
            .is_err()
        );
        conn.quit().await;

        let mut conn = SmtpConnection::connect(a3, "sink.test", &s).await.unwrap();
        let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Timeout {
                    stage: "end of DATA",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.dsn().ends_with("message may be sent more than once"));
        conn.quit().await;
    });
}

#[test]
fn server_closing_mid_transaction() {
    let at_rcpt = TestSink::start(SinkScript {
        close_on: Some("RCPT".into()),
        pipelining: false,
        ..SinkScript::default()
    })
    .unwrap();
    let at_data = TestSink::start(SinkScript {
        close_on: Some("DATA".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let at_dot = TestSink::start(SinkScript {
        close_on: Some(".".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let at_connect = TestSink::start(SinkScript {
        close_on: Some("CONNECT".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let addrs = [
        at_rcpt.addr(),
        at_data.addr(),
        at_dot.addr(),
        at_connect.addr(),
    ];
    on_executor(move || async move {
        let s = settings(TlsLevel::None);
        for (addr, stage) in addrs[..3].iter().zip(["RCPT TO", "DATA", "end of DATA"]) {
            let mut conn = SmtpConnection::connect(*addr, "sink.test", &s)
                .await
                .unwrap();
            let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
                .await
                .unwrap_err();
            // The sink answers MAIL and RCPT before it sees DATA, so the loss shows at DATA.
            assert!(
                matches!(&e, SessionError::Lost { stage: st, .. } if *st == stage),
                "{e:?}"
            );
            assert!(
                e.dsn()
                    .starts_with("lost connection with sink.test[127.0.0.1] while sending")
            );
            assert!(!e.is_permanent());
            conn.quit().await;
        }
        let Err(e) = SmtpConnection::connect(addrs[3], "sink.test", &s).await else {
            panic!()
        };
        assert!(
            matches!(
                e,
                SessionError::Lost {
                    stage: "greeting",
                    ..
                }
            ),
            "{e:?}"
        );
    });
}

#[test]
fn several_transactions_on_one_connection() {
    let sink = TestSink::start(SinkScript::default()).unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        for i in 0..20 {
            let to = format!("u{i}@x");
            let r = send(&mut conn, &MailParams::default(), &[&to], MESSAGE)
                .await
                .unwrap();
            assert_eq!(r.data.unwrap().code, 250);
        }
        assert_eq!(conn.transactions(), 20);
        assert!(conn.age() < Duration::from_secs(10));
        conn.quit().await;
    });
    let got = sink.received();
    assert_eq!((got.connections, got.messages.len()), (1, 20));
}

/// A parameter's built-in default, `$name` references resolved (one level is enough here).
fn registry_default(name: &str) -> String {
    if name == "corepost_smtp_mta_sts" || name == "smtp_tls_force_insecure_host_tlsa_lookup" {
        return "no".into();
    }
    // Its default is an expression on smtp_tls_security_level: "may" below level dane.
    if name == "smtp_tls_dane_insecure_mx_policy" {
        return "may".into();
    }
    let def = |n: &str| {
        corepost_config::params::PARAMS
            .iter()
            .find(|p| p.name == n)
            .and_then(|p| match &p.default {
                corepost_config::registry::DefaultValue::Text(t) => Some(t.to_string()),
                _ => None,
            })
            .unwrap_or_default()
    };
    let mut v = def(name);
    while let Some(r) = v.strip_prefix('$') {
        v = def(r);
    }
    v
}

#[test]
fn settings_from_params() {
    let get = |name: &str| -> Result<String, corepost_config::ConfigError> {
        Ok(match name {
            "smtp_helo_name" => "mx.example.com".into(),
            "smtp_tls_security_level" => "encrypt".into(),
            "smtp_connect_timeout" => "30s".into(),
            "smtp_data_done_timeout" => "10m".into(),
            "smtp_always_send_ehlo" | "smtp_skip_5xx_greeting" => "yes".into(),
            "smtp_never_send_ehlo" | "disable_mime_output_conversion" => "no".into(),
            "smtp_connection_cache_on_demand" => "no".into(),
            "smtp_bind_address6" => "[::1]".into(),
            "smtp_bind_address_enforce" => "yes".into(),
            "smtp_connection_cache_destinations" => "[Relay.Example]:587, example.com".into(),
            n if n.contains("bind_address")
                || n.ends_with("_keywords")
                || n.ends_with("generic_maps") =>
            {
                "".into()
            }
            n if n.contains("_tls_")
                || n.contains("sasl")
                || n.contains("_dependent_")
                || n.contains("mta_sts") =>
            {
                registry_default(n)
            }
            _ => "300".into(),
        })
    };
    let s = ClientSettings::from_params(&get, "smtp").unwrap();
    assert_eq!(s.helo_name, "mx.example.com");
    assert_eq!(s.tls, TlsLevel::Encrypt);
    assert_eq!(s.connect_timeout, Duration::from_secs(30));
    assert_eq!(s.data_done_timeout, Duration::from_secs(600));
    assert_eq!(s.rcpt_timeout, Duration::from_secs(300));
    assert!(!s.lmtp);
    assert!(s.bind_address_enforce);
    assert_eq!(s.line_length_limit, 300);
    assert!(s.always_send_ehlo && !s.never_send_ehlo && s.skip_5xx_greeting);
    assert!(s.mime_output_conversion && !s.cache_on_demand);
    assert_eq!(s.bind_address, None);
    assert_eq!(s.bind_address6, Some("::1".parse().unwrap()));
    assert_eq!(s.cache_destinations, ["[relay.example]:587", "example.com"]);
    // An IPv6 address where IPv4 is expected is an error naming the parameter.
    let v6 = |name: &str| -> Result<String, corepost_config::ConfigError> {
        Ok(if name == "smtp_bind_address" {
            "::1".into()
        } else {
            get(name)?
        })
    };
    let e = ClientSettings::from_params(&v6, "smtp").unwrap_err();
    assert!(e.contains("smtp_bind_address"), "{e}");
    let bad = |name: &str| -> Result<String, corepost_config::ConfigError> {
        Ok(if name == "smtp_rcpt_timeout" {
            "soon".into()
        } else if name.contains("_tls_")
            || name.contains("sasl")
            || name.contains("_dependent_")
            || name.contains("mta_sts")
        {
            registry_default(name)
        } else {
            "".into()
        })
    };
    let e = ClientSettings::from_params(&bad, "relay").unwrap_err();
    assert!(e.contains("relay"), "{e}");
    assert_eq!(TlsLevel::parse("").unwrap(), TlsLevel::None);
    assert_eq!(TlsLevel::parse("MAY").unwrap(), TlsLevel::May);
    assert_eq!(TlsLevel::parse("verify").unwrap(), TlsLevel::Verify);
    assert!(TlsLevel::parse("bogus").is_err());
}

#[test]
fn malformed_replies_are_protocol_errors() {
    let garbage = TestSink::start(SinkScript {
        greeting: "hello there".into(),
        ..SinkScript::default()
    })
    .unwrap();
    let long = TestSink::start(SinkScript {
        greeting: format!("220 {}", "x".repeat(20_000)),
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2) = (garbage.addr(), long.addr());
    on_executor(move || async move {
        for addr in [a1, a2] {
            let Err(e) =
                SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None)).await
            else {
                panic!()
            };
            assert!(
                matches!(&e, SessionError::Protocol(t) if t.contains("bad reply")),
                "{e:?}"
            );
            assert!(!e.is_permanent());
        }
    });
}

#[test]
fn multi_line_rejection_and_421_hangup() {
    let mut script = SinkScript::default();
    script.rcpt_replies.insert(
        "bad@x".into(),
        "550-5.1.1 No such user\n550-5.1.1 here\n550 5.1.1 at all".into(),
    );
    script
        .rcpt_replies
        .insert("busy@x".into(), "421 4.3.2 shutting down".into());
    script.hangup_after = Some("RCPT".into());
    let sink = TestSink::start(script.clone()).unwrap();
    let mail = TestSink::start(SinkScript {
        mail_reply: Some("421 4.7.0 too many connections".into()),
        hangup_after: Some("MAIL".into()),
        ..SinkScript::default()
    })
    .unwrap();
    let (a1, a2) = (sink.addr(), mail.addr());
    on_executor(move || async move {
        // The sink hangs up after the first RCPT reply: a multi-line 550.
        let mut conn = SmtpConnection::connect(a1, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let e = send(
            &mut conn,
            &MailParams::default(),
            &["bad@x", "ok@x"],
            MESSAGE,
        )
        .await
        .unwrap_err();
        assert!(
            matches!(
                e,
                SessionError::Lost {
                    stage: "RCPT TO",
                    ..
                }
            ),
            "{e:?}"
        );
        conn.quit().await;
        // Pipelined MAIL answered with 421 and a hang-up: the 421 is what is reported.
        let mut conn = SmtpConnection::connect(a2, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let e = send(&mut conn, &MailParams::default(), &["a@x"], MESSAGE)
            .await
            .unwrap_err();
        assert!(
            matches!(&e, SessionError::Reply { stage: "MAIL FROM", reply, .. } if reply.code == 421),
            "{e:?}"
        );
        assert!(!e.is_permanent());
        assert!(!conn.is_usable());
        conn.quit().await;
    });
    // Without the hang-up the multi-line reply comes through whole.
    let sink = TestSink::start(SinkScript {
        hangup_after: None,
        ..script
    })
    .unwrap();
    let addr = sink.addr();
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(
            &mut conn,
            &MailParams::default(),
            &["bad@x", "ok@x", "busy@x"],
            MESSAGE,
        )
        .await;
        let e = r.unwrap_err();
        // 421 to a RCPT: the server is going away; the session ends with that reply.
        assert!(
            matches!(&e, SessionError::Reply { stage: "RCPT TO", reply, .. } if reply.code == 421),
            "{e:?}"
        );
        conn.quit().await;
        let mut conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        let r = send(
            &mut conn,
            &MailParams::default(),
            &["bad@x", "ok@x"],
            MESSAGE,
        )
        .await
        .unwrap();
        assert_eq!(
            r.recipients[0].reply().to_string(),
            "550 5.1.1 No such user here at all"
        );
        assert_eq!(r.data.unwrap().code, 250);
        conn.quit().await;
    });
}

#[test]
fn large_bodies_over_tls_without_pipelining() {
    let sink = TestSink::start(SinkScript {
        pipelining: false,
        starttls: true,
        chunking: true,
        binarymime: true,
        ..SinkScript::default()
    })
    .unwrap();
    let addr = sink.addr();
    let binary: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let text: Vec<u8> = b"line of text\n.dot line\r\n"
        .iter()
        .copied()
        .cycle()
        .take(300_000)
        .collect();
    let (b2, t2) = (binary.clone(), text.clone());
    on_executor(move || async move {
        let mut conn = SmtpConnection::connect(addr, "localhost", &settings(TlsLevel::Encrypt))
            .await
            .unwrap();
        assert!(conn.tls().is_some());
        let binary_params = MailParams {
            body: BodyType::BinaryMime,
            ..MailParams::default()
        };
        let r = send(&mut conn, &binary_params, &["a@x"], &b2)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        let r = send(&mut conn, &MailParams::default(), &["b@x"], &t2)
            .await
            .unwrap();
        assert_eq!(r.data.unwrap().code, 250);
        assert_eq!(conn.transactions(), 2);
        conn.quit().await;
    });
    let got = sink.received();
    assert_eq!(got.messages.len(), 2);
    assert!(got.messages.iter().all(|m| m.tls));
    assert_eq!(got.messages[0].content, binary);
    let expected: Vec<u8> = text
        .split_inclusive(|&b| b == b'\n')
        .flat_map(|l| {
            let l = l.strip_suffix(b"\n").unwrap_or(l);
            let l = l.strip_suffix(b"\r").unwrap_or(l);
            l.iter().copied().chain(*b"\r\n")
        })
        .collect();
    assert_eq!(got.messages[1].content, expected);
    assert!(got.lines(0).contains(&"BDAT 300000 LAST"));
}

/// After QUIT and its reply a plain connection is closed by the client, cleanly: the server
/// reads the end of the stream (a FIN, not a reset and not a connection left open).
#[test]
fn quit_closes_a_plain_connection_cleanly() {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        s.write_all(b"220 sink.test ESMTP\r\n").unwrap();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("EHLO "), "{line:?}");
        s.write_all(b"250 sink.test\r\n").unwrap();
        line.clear();
        r.read_line(&mut line).unwrap();
        assert_eq!(line, "QUIT\r\n");
        s.write_all(b"221 2.0.0 Bye\r\n").unwrap();
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).map(|_| rest)
    });
    on_executor(move || async move {
        let conn = SmtpConnection::connect(addr, "sink.test", &settings(TlsLevel::None))
            .await
            .unwrap();
        conn.quit().await;
    });
    let rest = server.join().unwrap();
    assert!(matches!(&rest, Ok(r) if r.is_empty()), "{rest:?}");
}
