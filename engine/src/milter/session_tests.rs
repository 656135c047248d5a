//! A milter session against a scripted in-process milter: negotiation
//! with a milter's own macro list, SMFIP_NOEOH (macros still sent, the
//! event not), SMFIP_NR_HDR (no reply awaited per header), SMFIR_SKIP
//! during the body, and an edit at end of message.

use super::codec::{self, Arg, FrameReader, action, cmd, proto};
use super::edit::Message;
use super::macros::{MacroConfig, MacroLists, split_names};
use super::spec::{Defaults, MilterSpec};
use super::{MilterSettings, Verdict};
use std::io::{Read, Write};
use std::sync::Arc;
use std::time::Duration;

/// The packets the fake milter received: (command, data).
type Seen = Vec<(u8, Vec<u8>)>;

fn fake_milter(listener: std::net::TcpListener) -> std::thread::JoinHandle<Seen> {
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = Vec::new();
        let mut seen = Vec::new();
        let mut bodies = 0;
        loop {
            let packet = match FrameReader::next(&buf) {
                Ok(Some((c, d, used))) => {
                    let p = (c, d.to_vec());
                    buf.drain(..used);
                    p
                }
                _ => {
                    let mut chunk = [0u8; 65536];
                    match s.read(&mut chunk) {
                        Ok(0) | Err(_) => return seen,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                }
            };
            seen.push(packet.clone());
            let reply = match packet.0 {
                cmd::OPTNEG => codec::encode(
                    cmd::OPTNEG,
                    &[
                        Arg::Long(6),
                        Arg::Long(action::ADDHDRS),
                        Arg::Long(proto::NR_HDR | proto::SKIP | proto::NOEOH),
                        Arg::Long(0),
                        Arg::Str("{client_addr}"),
                    ],
                ),
                cmd::BODY => {
                    bodies += 1;
                    codec::encode(if bodies == 1 { b's' } else { b'c' }, &[])
                }
                cmd::BODYEOB => {
                    let mut r = codec::encode(b'h', &[Arg::Str("X-Seen"), Arg::Str("yes")]);
                    r.extend(codec::encode(b'a', &[]));
                    r
                }
                cmd::CONNECT | cmd::HELO | cmd::MAIL | cmd::RCPT | cmd::DATA => {
                    codec::encode(b'c', &[])
                }
                cmd::QUIT => return seen,
                _ => continue,
            };
            s.write_all(&reply).expect("write");
        }
    })
}

fn settings(port: u16) -> Arc<MilterSettings> {
    let defaults = Defaults {
        connect_timeout: Duration::from_secs(5),
        command_timeout: Duration::from_secs(5),
        content_timeout: Duration::from_secs(5),
        protocol: "6".into(),
        default_action: "tempfail".into(),
        queue_directory: "/nonexistent".into(),
    };
    let milters: Vec<MilterSpec> =
        super::spec::parse_list(&format!("inet:127.0.0.1:{port}"), &defaults).expect("spec");
    let mut lists = MacroLists::default();
    lists.0[0] = split_names("j {daemon_name}");
    Arc::new(MilterSettings {
        milters: milters.into_iter().map(Arc::new).collect(),
        maps: corepost_config::tables::TableList::empty(),
        defaults,
        macros: Arc::new(MacroConfig {
            lists,
            daemon_name: "mx.example".into(),
            v: "corepost".into(),
            myhostname: "mx.example".into(),
            defaults: Vec::new(),
        }),
    })
}

#[test]
fn skip_and_no_reply_flags_as_negotiated() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let milter = fake_milter(listener);
    let settings = settings(port);
    glommio::LocalExecutorBuilder::default()
        .spawn(move || async move {
            let log = |l: &str| panic!("unexpected warning: {l}");
            let mut set = settings.session("192.0.2.1", &log).expect("milters");
            set.ctx.client_addr = "192.0.2.1".into();
            let peer = "192.0.2.1:4000".parse().ok();
            assert_eq!(set.connect(&log, "client.example", peer).await, None);
            assert_eq!(set.helo(&log, "client.example").await, None);
            assert_eq!(set.mail(&log, &["<a@example>".into()]).await, None);
            assert_eq!(set.rcpt(&log, &["<b@example>".into()]).await, None);
            assert_eq!(set.data(&log).await, None);
            let mut body = b"Received: by us\r\nSubject: x\r\nTo: b\r\n\r\n".to_vec();
            body.extend(std::iter::repeat_n(b'a', 3 * codec::CHUNK_SIZE));
            let mut m = Message::parse(&body);
            let v: Option<Verdict> = set.message(&log, &mut m).await;
            assert_eq!(v, None);
            assert!(m.changed);
            let text = m.assemble();
            assert!(
                text.starts_with(
                    b"Received: by us\r\nSubject: x\r\nTo: b\r\nX-Seen: yes\r\n\r\naaa"
                )
            );
            set.quit().await;
        })
        .expect("executor")
        .join()
        .expect("test task");
    let seen = milter.join().expect("milter thread");
    let commands: Vec<u8> = seen.iter().map(|(c, _)| *c).collect();
    // The milter asked for {client_addr} alone with the connection.
    let connect_macros = &seen
        .iter()
        .find(|(c, d)| *c == cmd::MACRO && d[0] == cmd::CONNECT)
        .expect("macros")
        .1;
    assert_eq!(
        connect_macros.as_slice(),
        b"C{client_addr}\x00192.0.2.1\x00"
    );
    // Two headers (our Received: hidden), no reply awaited for them.
    assert_eq!(commands.iter().filter(|&&c| c == cmd::HEADER).count(), 2);
    // NOEOH: the macros for the event go, the event does not.
    assert!(
        seen.iter()
            .any(|(c, d)| *c == cmd::MACRO && d[0] == cmd::EOH)
    );
    assert!(!commands.contains(&cmd::EOH));
    // SMFIR_SKIP after the first chunk: no more body chunks.
    assert_eq!(
        commands.iter().filter(|&&c| c == cmd::BODY).count(),
        1,
        "{commands:?}"
    );
    assert!(commands.contains(&cmd::BODYEOB));
}
