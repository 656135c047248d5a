//! SMTP client hot path on one core: reply parsing, body encoding, and whole transactions.
//!
//! - `parse/pipelined_replies`: the replies to MAIL, 50 RCPTs and DATA, parsed out of one
//!   buffer (what the client does after a pipelined envelope).
//! - `encode/dot_stuff_1mib`: dot-stuffing and CRLF-normalising a 1 MiB message with some
//!   leading dots and bare LFs.
//! - `loopback/transaction_4k_3rcpt`: a pipelined transaction (MAIL, 3 RCPT, DATA, 4 KiB body)
//!   over one reused connection to the loopback test sink (`corepost::delivery::testsink`, on
//!   its own thread, so this measures both ends and the loopback).
//!
//! Run: `cargo bench -p corepost --bench smtp_client`

use std::time::{Duration, Instant};

use corepost::delivery::smtp::encode::BodyEncoder;
use corepost::delivery::smtp::reply::parse_reply;
use corepost::delivery::smtp::{ClientSettings, Outbound, SmtpConnection, TlsLevel};
use corepost::delivery::testsink::{SinkScript, TestSink};
use corepost_spool::{MailParams, Recipient};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use glommio::LocalExecutorBuilder;

fn bench_parse(c: &mut Criterion) {
    let mut buf = b"250 2.1.0 Ok\r\n".to_vec();
    for _ in 0..50 {
        buf.extend_from_slice(b"250 2.1.5 Ok\r\n");
    }
    buf.extend_from_slice(b"354 End data with <CR><LF>.<CR><LF>\r\n");
    let mut group = c.benchmark_group("parse");
    group.throughput(Throughput::Elements(52));
    group.bench_function("pipelined_replies", |b| {
        b.iter(|| {
            let mut pos = 0;
            while let Some((reply, used)) = parse_reply(&buf[pos..]).expect("valid") {
                std::hint::black_box(reply);
                pos += used;
            }
        })
    });
    group.finish();
}

fn bench_encode(c: &mut Criterion) {
    let lines: [&[u8]; 4] = [
        b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempor\r\n",
        b".a line with a leading dot\r\n",
        b"a line with a bare LF\n",
        b"incididunt ut labore et dolore magna aliqua. Ut enim ad minim veniam, quis\r\n",
    ];
    let content: Vec<u8> = lines
        .iter()
        .cycle()
        .flat_map(|l| l.iter().copied())
        .take(1 << 20)
        .collect();
    let mut out = Vec::with_capacity(content.len() * 2);
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Bytes(content.len() as u64));
    group.bench_function("dot_stuff_1mib", |b| {
        b.iter(|| {
            out.clear();
            let mut encoder = BodyEncoder::new(998);
            encoder.push(&mut out, &content);
            encoder.finish(&mut out);
            std::hint::black_box(&out);
        })
    });
    group.finish();
}

fn bench_loopback(c: &mut Criterion) {
    let sink = TestSink::start(SinkScript::default()).expect("test sink");
    let addr = sink.addr();
    let ex = LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    let t = Duration::from_secs(10);
    let settings = ClientSettings {
        helo_name: "bench.test".into(),
        connect_timeout: t,
        helo_timeout: t,
        mail_timeout: t,
        rcpt_timeout: t,
        data_init_timeout: t,
        data_xfer_timeout: t,
        data_done_timeout: t,
        quit_timeout: t,
        tls: TlsLevel::None,
        discard_ehlo_keywords: Vec::new(),
        lmtp: false,
        default_port: 25,
        socket_directory: std::path::PathBuf::new(),
        cache_time_limit: Duration::from_secs(2),
        reuse_time_limit: Duration::from_secs(300),
        reuse_count_limit: 0,
        line_length_limit: 998,
        mime_output_conversion: true,
        always_send_ehlo: true,
        never_send_ehlo: false,
        skip_5xx_greeting: true,
        bind_address: None,
        bind_address6: None,
        bind_address_enforce: false,
        cache_on_demand: true,
        cache_destinations: Vec::new(),
        generic_maps: None,
        tls_policy: None,
        sasl: None,
    };
    let body: Vec<u8> = b"Subject: bench\r\n\r\n"
        .iter()
        .copied()
        .chain(
            b"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcd\r\n"
                .iter()
                .copied()
                .cycle()
                .take(4096),
        )
        .collect();
    let recipients: Vec<Recipient> = (0..3)
        .map(|i| Recipient {
            address: format!("user{i}@example.test"),
            ..Recipient::default()
        })
        .collect();
    let refs: Vec<&Recipient> = recipients.iter().collect();
    let params = MailParams::default();
    let mut group = c.benchmark_group("loopback");
    group.throughput(Throughput::Elements(1));
    group.bench_function("transaction_4k_3rcpt", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let mut conn = SmtpConnection::connect(addr, "sink.test", &settings)
                    .await
                    .expect("connect");
                let tx = Outbound {
                    sender: "bench@example.test",
                    params: &params,
                    recipients: &refs,
                    content: &body,
                };
                let t0 = Instant::now();
                for _ in 0..iters {
                    let r = conn.deliver(&tx).await.expect("delivered");
                    std::hint::black_box(r);
                }
                let elapsed = t0.elapsed();
                conn.quit().await;
                elapsed
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench_parse, bench_encode, bench_loopback);
criterion_main!(benches);
