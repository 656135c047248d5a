//! DNS resolver throughput on one core: cached and uncached lookups per second.
//!
//! The resolver runs on one glommio executor (the bench thread), as on a corepost core; the name
//! server is the loopback test server (`corepost::dns::testserver`) on its own thread. Nothing
//! leaves the machine and the machine's resolver is never asked.
//!
//! - `cached/lookup_a`: an A lookup answered from the per-core cache (the smtpd/smtp hot path
//!   once a destination is warm).
//! - `cached/resolve_nexthop`: a full next-hop resolution (MX, then A/AAAA of two MX hosts) from
//!   the cache.
//! - `uncached/lookup_a/sequential`: one query at a time, cache cleared before each: a UDP round
//!   trip to the loopback server, socket set-up and teardown included.
//! - `uncached/lookup_a/concurrent_32`: 32 tasks on the one core, each asking distinct names, so
//!   the core keeps 32 queries in flight.
//!
//! Run: `cargo bench -p corepost --bench dns`

use std::cell::Cell;
use std::net::Ipv4Addr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use corepost::dns::testserver::TestServer;
use corepost::dns::{NexthopOptions, Resolver, ResolverConfig};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use glommio::{LocalExecutor, LocalExecutorBuilder};

fn setup() -> (TestServer, LocalExecutor) {
    let server = TestServer::start().expect("test DNS server");
    server.add_a("host.test", 3600, Ipv4Addr::new(192, 0, 2, 1));
    server.add_mx("example.test", 3600, 10, "mx1.example.test");
    server.add_mx("example.test", 3600, 20, "mx2.example.test");
    server.add_a("mx1.example.test", 3600, Ipv4Addr::new(192, 0, 2, 10));
    server.add_a("mx2.example.test", 3600, Ipv4Addr::new(192, 0, 2, 20));
    server.add_aaaa("mx1.example.test", 3600, "2001:db8::10".parse().unwrap());
    for i in 0..32u8 {
        server.add_a(&format!("n{i}.test"), 3600, Ipv4Addr::new(198, 51, 100, i));
    }
    let ex = LocalExecutorBuilder::default()
        .make()
        .expect("glommio executor");
    (server, ex)
}

fn resolver(server: &TestServer) -> Resolver {
    let mut config = ResolverConfig::with_servers(vec![server.addr()]);
    config.timeout = Duration::from_secs(2);
    config.attempts = 1;
    Resolver::new(config)
}

fn bench_dns(c: &mut Criterion) {
    let (server, ex) = setup();
    let r = Rc::new(resolver(&server));
    let opts = NexthopOptions::new(25);

    let mut cached = c.benchmark_group("cached");
    cached.throughput(Throughput::Elements(1));
    ex.run(async {
        r.lookup_a("host.test").await.expect("warm-up");
        r.resolve_nexthop("example.test", &opts)
            .await
            .expect("warm-up");
    });
    cached.bench_function("lookup_a", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let a = r.lookup_a("host.test").await.expect("cached answer");
                    std::hint::black_box(a);
                }
                t0.elapsed()
            })
        })
    });
    cached.bench_function("resolve_nexthop", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    let d = r
                        .resolve_nexthop("example.test", &opts)
                        .await
                        .expect("cached next hop");
                    std::hint::black_box(d);
                }
                t0.elapsed()
            })
        })
    });
    cached.finish();

    let mut uncached = c.benchmark_group("uncached");
    uncached.throughput(Throughput::Elements(1));
    uncached.bench_function("lookup_a/sequential", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let t0 = Instant::now();
                for _ in 0..iters {
                    r.clear_cache();
                    let a = r.lookup_a("host.test").await.expect("answer");
                    std::hint::black_box(a);
                }
                t0.elapsed()
            })
        })
    });
    uncached.bench_function("lookup_a/concurrent_32", |b| {
        b.iter_custom(|iters| {
            ex.run(async {
                let done = Rc::new(Cell::new(0u64));
                let t0 = Instant::now();
                let tasks: Vec<_> = (0..32u64)
                    .map(|t| {
                        let r = r.clone();
                        let done = done.clone();
                        // Spread `iters` over the tasks; task t does its share.
                        let share = iters / 32 + u64::from(t < iters % 32);
                        glommio::spawn_local(async move {
                            let name = format!("n{t}.test");
                            for _ in 0..share {
                                // Clearing right before asking (no await in between) makes
                                // this lookup a miss; names are distinct per task, so nothing
                                // is coalesced either.
                                r.clear_cache();
                                let a = r.lookup_a(&name).await.expect("answer");
                                std::hint::black_box(a);
                                done.set(done.get() + 1);
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                assert_eq!(done.get(), iters);
                t0.elapsed()
            })
        })
    });
    uncached.finish();

    let stats = r.stats();
    eprintln!(
        "resolver stats: {} lookups, {} cache hits, {} coalesced, {} queries sent",
        stats.lookups, stats.cache_hits, stats.coalesced, stats.queries_sent
    );
}

criterion_group!(benches, bench_dns);
criterion_main!(benches);
