//! Lookup-table throughput: how many lookups per second each table type
//! answers once loaded, and what key generation costs.
//!
//! Run with `cargo bench -p corepost-benches --bench lookup_tables`
//! (add `-- --quick` for a faster, rougher run). Table files are written to
//! the system temporary directory and removed afterwards.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use corepost_config::tables::keys::address_keys;
use corepost_config::tables::{LookupTable, open_table};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// A table source file that is deleted when dropped.
struct TempTable {
    path: PathBuf,
}

impl TempTable {
    fn new(name: &str, text: &str) -> Self {
        let path =
            std::env::temp_dir().join(format!("corepost-bench-{}-{name}", std::process::id()));
        std::fs::write(&path, text).expect("write benchmark table");
        TempTable { path }
    }

    fn open(&self, kind: &str) -> Arc<dyn LookupTable> {
        open_table(&format!("{kind}:{}", self.path.display())).expect("open benchmark table")
    }
}

impl Drop for TempTable {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn hash_table(c: &mut Criterion) {
    let text: String = (0..10_000)
        .map(|i| format!("user{i}@example.com\tmailbox{i}@backend.example.net\n"))
        .collect();
    let file = TempTable::new("hash", &text);
    let table = file.open("hash");
    let mut group = c.benchmark_group("hash_10k");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit", |b| {
        b.iter(|| table.lookup(black_box("user7777@example.com")))
    });
    group.bench_function("hit_mixed_case", |b| {
        b.iter(|| table.lookup(black_box("User7777@Example.COM")))
    });
    group.bench_function("miss", |b| {
        b.iter(|| table.lookup(black_box("nobody@example.com")))
    });
    group.finish();
}

fn cidr_table(c: &mut Criterion) {
    let text: String = (0..1_000)
        .map(|i| format!("10.{}.{}.0/24\tREJECT net {i}\n", i / 256, i % 256))
        .collect();
    let file = TempTable::new("cidr", &text);
    let table = file.open("cidr");
    let mut group = c.benchmark_group("cidr_1000");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit_first", |b| {
        b.iter(|| table.lookup(black_box("10.0.0.1")))
    });
    group.bench_function("hit_last", |b| {
        b.iter(|| table.lookup(black_box("10.3.231.1")))
    });
    group.bench_function("miss", |b| b.iter(|| table.lookup(black_box("192.0.2.1"))));
    group.finish();
}

fn regexp_table(c: &mut Criterion) {
    let text: String = (0..100)
        .map(|i| format!("/^list{i}-(.*)@lists\\.example\\.com$/\tlist{i}+$1\n"))
        .collect();
    let file = TempTable::new("regexp", &text);
    let table = file.open("regexp");
    let mut group = c.benchmark_group("regexp_100");
    group.throughput(Throughput::Elements(1));
    group.bench_function("hit_first", |b| {
        b.iter(|| table.lookup(black_box("list0-bounces@lists.example.com")))
    });
    group.bench_function("hit_last", |b| {
        b.iter(|| table.lookup(black_box("list99-bounces@lists.example.com")))
    });
    group.bench_function("miss", |b| {
        b.iter(|| table.lookup(black_box("someone@example.org")))
    });
    group.finish();
}

fn key_generation(c: &mut Criterion) {
    let mut group = c.benchmark_group("address_keys");
    group.throughput(Throughput::Elements(1));
    group.bench_function("with_extension_local", |b| {
        b.iter(|| address_keys(black_box("User+Tag@Example.COM"), "+", true))
    });
    group.bench_function("plain_remote", |b| {
        b.iter(|| address_keys(black_box("user@example.com"), "+", false))
    });
    group.finish();
}

fn quick() -> Criterion {
    Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
}

criterion_group! {
    name = benches;
    config = quick();
    targets = hash_table, cidr_table, regexp_table, key_generation
}
criterion_main!(benches);
