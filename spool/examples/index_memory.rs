//! Measures the index's memory per queued message: inserts a million
//! one-recipient messages into an `Index` and reports the growth of the
//! process's resident set. Run: `cargo run --release -p corepost-spool --example index_memory`

use corepost_spool::*;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = status
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    const COUNT: u64 = 1_000_000;
    let template = Envelope {
        recipients: vec![Recipient::default()],
        ..Envelope::default()
    };
    let before = rss_bytes();
    let mut index = Index::default();
    for i in 0..COUNT {
        let mut env = template.clone();
        env.queue_id = QueueId::from_parts(1_764_000_000_000_000 + i, 0, 0);
        env.next_attempt = 1_764_000_000_000_000 + (i * 7919) % 86_400_000_000;
        index.insert(
            &env,
            Location {
                segment: i / 16_000,
                offset: ((i % 16_000) * 4096) as u32,
                len: 4096,
            },
        );
    }
    let after = rss_bytes();
    println!(
        "{} queued messages: index grew the resident set by {:.1} MiB, {:.0} bytes per message",
        index.len(),
        (after - before) as f64 / (1 << 20) as f64,
        (after - before) as f64 / COUNT as f64
    );
}
