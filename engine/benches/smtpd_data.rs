//! smtpd's DATA parser (`corepost::smtpd::data::DataParser`): bytes of message content parsed
//! per second, as they arrive from the socket in 64 KiB reads — dot-unstuffing, the CRLF.CRLF
//! end and the bare-CR/LF checks included.
//!
//! - `4k` and `100k`: 78-character lines, the shape of generated and most real mail.
//!
//! Run: `cargo bench -p corepost --bench smtpd_data`

use corepost::smtpd::data::{BareNewline, DataParser};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// `size` bytes of 78-character CRLF lines, then the end of data.
fn content(size: usize) -> Vec<u8> {
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod tempo\r\n";
    let mut out = Vec::with_capacity(size + line.len() + 5);
    while out.len() < size {
        out.extend_from_slice(line);
    }
    out.extend_from_slice(b".\r\n");
    out
}

fn parse(input: &[u8]) -> usize {
    let mut parser = DataParser::new(BareNewline::Normalize, 10 << 20, Vec::new());
    let mut at = 0;
    for chunk in input.chunks(64 * 1024) {
        let (used, end) = parser.feed(chunk);
        at += used;
        if end.is_some() {
            break;
        }
    }
    at + parser.into_body().len()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("data_parser");
    for (name, size) in [("4k", 4 * 1024), ("100k", 100 * 1024)] {
        let input = content(size);
        group.throughput(Throughput::Bytes(input.len() as u64));
        group.bench_function(name, |b| b.iter(|| parse(std::hint::black_box(&input))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
