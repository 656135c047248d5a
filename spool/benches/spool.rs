//! Spool benchmarks (results in BENCHMARKS.md):
//!
//! * `append/always/<method>/<n>`: 4 KiB messages appended by `n`
//!   concurrent appenders on one core (tasks on one single-threaded
//!   executor), each waiting for `durable()` before its next append — what
//!   smtpd sessions do before answering 250.
//! * `file_per_message/<n>`: the baseline, Postfix's approach: one file
//!   per message, written and fsynced, by `n` threads.
//! * `recovery/1GiB`: opening a spool that holds 1 GiB of 4 KiB messages.
//!
//! Run: `cargo bench -p corepost-spool --bench spool`
//! (`-- append` or `-- recovery` for one group).

use corepost_spool::*;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;
use std::cell::RefCell;
use std::io::Write;
use std::rc::Rc;
use std::time::{Duration, Instant};

const MESSAGE: usize = 4096;

fn envelope(id: QueueId) -> Envelope {
    Envelope {
        queue_id: id,
        arrival: id.micros(),
        sender: "sender@example.org".into(),
        params: MailParams::default(),
        client: ClientInfo {
            name: "localhost".into(),
            addr: "127.0.0.1".into(),
            port: 40000,
            helo: "localhost".into(),
            protocol: "ESMTP".into(),
            sasl_username: None,
            tls: None,
        },
        recipients: vec![Recipient {
            address: "rcpt@example.com".into(),
            orcpt: None,
            notify: 0,
            transport: "smtp".into(),
            nexthop: "example.com".into(),
            state: RecipientState::Pending,
            original: None,
        }],
        next_attempt: 0,
        held: false,
    }
}

/// Append `total` messages with `appenders` concurrent tasks; returns the
/// elapsed time and the per-message append→durable latencies.
fn run_appenders(
    spool: &Rc<RefCell<CoreSpool>>,
    appenders: usize,
    total: usize,
) -> (Duration, Vec<Duration>) {
    let content = vec![b'x'; MESSAGE];
    let latencies = Rc::new(RefCell::new(Vec::with_capacity(total)));
    let mut pool = LocalPool::new();
    let per_task = total.div_ceil(appenders);
    let start = Instant::now();
    for _ in 0..appenders {
        let spool = Rc::clone(spool);
        let content = content.clone();
        let latencies = Rc::clone(&latencies);
        pool.spawner()
            .spawn_local(async move {
                for _ in 0..per_task {
                    let t = Instant::now();
                    let durable = {
                        let mut s = spool.borrow_mut();
                        let id = s.new_queue_id();
                        let a = s.append_message(&envelope(id), &content).expect("append");
                        s.durable(a.lsn)
                    };
                    durable.await.expect("durable");
                    latencies.borrow_mut().push(t.elapsed());
                    // Finish it, so segments are reclaimed as in a steady state.
                    let mut s = spool.borrow_mut();
                    let next = s.index().due(u64::MAX).next();
                    if let Some(id) = next {
                        let _ = s.record_outcome(&Outcome {
                            queue_id: id,
                            recipient: 0,
                            kind: OutcomeKind::Delivered,
                            at: 0,
                            dsn: "2.0.0".into(),
                            reply: "250 ok".into(),
                            relay: "sink".into(),
                        });
                    }
                }
            })
            .expect("spawn");
    }
    pool.run();
    let elapsed = start.elapsed();
    spool.borrow_mut().reclaim().expect("reclaim");
    let l = std::mem::take(&mut *latencies.borrow_mut());
    (elapsed, l)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p) as usize]
}

fn append_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for (name, method) in [
        ("msync", SyncMethod::Msync),
        ("fdatasync", SyncMethod::Fdatasync),
    ] {
        for appenders in [1usize, 16, 256] {
            let root = tempfile::tempdir().expect("tempdir");
            let options = SpoolOptions {
                segment_size: 64 << 20,
                policy: FlushPolicy::Always,
                sync: method,
                compact_below: 0.25,
            };
            let (spool, _) = CoreSpool::open(root.path(), 0, 1, options).expect("open");
            let spool = Rc::new(RefCell::new(spool));
            // One untimed run for the latency distribution.
            let (elapsed, mut lat) = run_appenders(&spool, appenders, 4000.max(appenders * 8));
            lat.sort();
            eprintln!(
                "append/always/{name}/{appenders}: {:.0} msg/s, durable() latency p50 {:?} p99 {:?}",
                lat.len() as f64 / elapsed.as_secs_f64(),
                percentile(&lat, 0.5),
                percentile(&lat, 0.99)
            );
            group.bench_function(format!("always/{name}/{appenders}"), |b| {
                b.iter_custom(|iters| run_appenders(&spool, appenders, iters as usize).0)
            });
        }
    }
    group.finish();
}

/// Postfix's approach: every message its own file, fsynced before the 250.
fn file_per_message(threads: usize, total: usize, dir: &std::path::Path) -> Duration {
    let content = vec![b'x'; MESSAGE];
    let per_thread = total.div_ceil(threads);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let content = &content;
            s.spawn(move || {
                for i in 0..per_thread {
                    let path = dir.join(format!("{t}-{i}"));
                    let mut f = std::fs::File::create(&path).expect("create");
                    f.write_all(content).expect("write");
                    f.sync_all().expect("fsync");
                    drop(f);
                    std::fs::remove_file(&path).expect("remove");
                }
            });
        }
    });
    start.elapsed()
}

fn baseline_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("file_per_message");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    group.throughput(Throughput::Elements(1));
    for threads in [1usize, 16, 256] {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = file_per_message(threads, 2000.max(threads * 4), dir.path());
        eprintln!(
            "file_per_message/{threads}: {:.0} msg/s",
            2000.max(threads * 4) as f64 / t.as_secs_f64()
        );
        group.bench_function(format!("{threads}"), |b| {
            b.iter_custom(|iters| file_per_message(threads, iters as usize, dir.path()))
        });
    }
    group.finish();
}

fn recovery_benches(c: &mut Criterion) {
    let root = tempfile::tempdir().expect("tempdir");
    let options = SpoolOptions {
        segment_size: 64 << 20,
        policy: FlushPolicy::Never,
        sync: SyncMethod::Msync,
        compact_below: 0.25,
    };
    let count = (1usize << 30) / MESSAGE;
    {
        let (mut spool, _) = CoreSpool::open(root.path(), 0, 1, options.clone()).expect("open");
        let content = vec![b'x'; MESSAGE - 200];
        for _ in 0..count {
            let id = spool.new_queue_id();
            spool
                .append_message(&envelope(id), &content)
                .expect("append");
        }
        spool.close().expect("close");
    }
    let mut group = c.benchmark_group("recovery");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10))
        .warm_up_time(Duration::from_secs(1));
    group.bench_function("1GiB", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let (spool, report) =
                    CoreSpool::open(root.path(), 0, 1, options.clone()).expect("open");
                total += t.elapsed();
                assert_eq!(report.messages, count);
                spool.close().expect("close");
            }
            total
        })
    });
    group.finish();
}

criterion_group!(benches, append_benches, baseline_benches, recovery_benches);
criterion_main!(benches);
