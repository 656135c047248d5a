//! The resolver against the loopback test server ([`super::testserver`]): every behaviour the
//! issue asks for — record types, CNAMEs, the distinct failure kinds, truncation → TCP, a dead
//! first name server, TTL expiry, floors and ceilings, negative caching, in-flight
//! de-duplication, forged replies, random ids and ports — and next-hop resolution.
//!
//! Each test runs on its own glommio executor with short timeouts; none touches the machine's
//! resolver.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use glommio::timer::sleep;
use hickory_proto::rr::RecordType;

use super::testserver::{Behaviour, TestServer, Via};
use super::*;

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

const TIMEOUT: Duration = Duration::from_millis(250);

fn config(servers: &[SocketAddr]) -> ResolverConfig {
    ResolverConfig {
        nameservers: servers.to_vec(),
        timeout: TIMEOUT,
        attempts: 1,
        min_ttl: Duration::ZERO,
        max_ttl: Duration::from_secs(3600),
        max_negative_ttl: Duration::from_secs(3600),
        failure_ttl: Duration::ZERO,
        cache_size: 1000,
        dnssec: false,
    }
}

fn resolver(server: &TestServer) -> Resolver {
    Resolver::new(config(&[server.addr()]))
}

fn v4(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, last)
}

#[test]
fn a_aaaa_and_ip() {
    let s = TestServer::start().unwrap();
    s.add_a("host.test", 300, v4(1));
    s.add_a("host.test", 300, v4(2));
    s.add_aaaa("host.test", 300, "2001:db8::1".parse().unwrap());
    s.add_aaaa("v6only.test", 300, "2001:db8::2".parse().unwrap());
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(r.lookup_a("HOST.test.").await.unwrap(), vec![v4(1), v4(2)]);
        assert_eq!(
            r.lookup_aaaa("host.test").await.unwrap(),
            vec!["2001:db8::1".parse::<Ipv6Addr>().unwrap()]
        );
        let ips = r.lookup_ip("host.test").await.unwrap();
        assert_eq!(ips.len(), 3);
        assert_eq!(ips[0], IpAddr::V4(v4(1)));
        // One family missing is fine for lookup_ip.
        assert_eq!(
            r.lookup_ip("v6only.test").await.unwrap(),
            vec!["2001:db8::2".parse::<IpAddr>().unwrap()]
        );
        // A and AAAA for host.test were cached by the first lookups.
        assert_eq!(s.count_all("host.test", RecordType::A), 1);
        assert_eq!(s.count_all("host.test", RecordType::AAAA), 1);
    });
}

#[test]
fn mx_sorted_implicit_and_null() {
    let s = TestServer::start().unwrap();
    s.add_mx("example.test", 300, 20, "mx2.example.test");
    s.add_mx("example.test", 300, 10, "MX1.example.test");
    s.add_a("noMX.test", 300, v4(1));
    s.add_mx("nullmx.test", 300, 0, ".");
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(
            r.lookup_mx("example.test").await.unwrap(),
            MxResult::Hosts(vec![
                MxHost {
                    preference: 10,
                    exchange: "mx1.example.test".into()
                },
                MxHost {
                    preference: 20,
                    exchange: "mx2.example.test".into()
                },
            ])
        );
        assert_eq!(r.lookup_mx("nomx.test").await.unwrap(), MxResult::Implicit);
        let e = r.lookup_mx("nullmx.test").await.unwrap_err();
        assert_eq!(
            e,
            DnsError::NullMx {
                domain: "nullmx.test".into()
            }
        );
        assert!(e.is_permanent());
        assert_eq!(e.dsn(), "5.1.10");
        assert_eq!(
            e.to_string(),
            "Domain nullmx.test does not accept mail (nullMX)"
        );
        let e = r.lookup_mx("missing.test").await.unwrap_err();
        assert!(matches!(e, DnsError::NotFound { .. }));
    });
}

#[test]
fn ptr_and_txt() {
    let s = TestServer::start().unwrap();
    s.add_ptr(IpAddr::V4(v4(7)), 300, "Client.Example.test");
    s.add_ptr("2001:db8::7".parse().unwrap(), 300, "v6client.example.test");
    s.add_txt(
        "2.0.0.127.bl.test",
        300,
        &["listed: ", "see https://bl.test"],
    );
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(
            r.lookup_ptr(IpAddr::V4(v4(7))).await.unwrap(),
            vec!["client.example.test".to_string()]
        );
        assert_eq!(
            r.lookup_ptr("2001:db8::7".parse().unwrap()).await.unwrap(),
            vec!["v6client.example.test".to_string()]
        );
        assert!(matches!(
            r.lookup_ptr(IpAddr::V4(v4(8))).await,
            Err(DnsError::NotFound { rtype: "PTR", .. })
        ));
        assert_eq!(
            r.lookup_txt("2.0.0.127.bl.test").await.unwrap(),
            vec!["listed: see https://bl.test".to_string()]
        );
    });
}

#[test]
fn failure_kinds_are_distinct() {
    let s = TestServer::start().unwrap();
    s.add_a("host.test", 300, v4(1));
    s.add_a("broken.test", 300, v4(1));
    s.set_behaviour("broken.test", Behaviour::ServFail);
    s.add_a("slow.test", 300, v4(1));
    s.set_behaviour("slow.test", Behaviour::Drop);
    s.add_a("refused.test", 300, v4(1));
    s.set_behaviour("refused.test", Behaviour::Refused);
    on_executor(move || async move {
        let r = resolver(&s);
        let nx = r.lookup_a("nothere.test").await.unwrap_err();
        assert_eq!(
            nx,
            DnsError::NotFound {
                name: "nothere.test".into(),
                rtype: "A"
            }
        );
        assert!(nx.is_permanent());
        assert_eq!(nx.dsn(), "5.4.4");
        assert_eq!(
            nx.to_string(),
            "Host or domain name not found. Name service error for name=nothere.test type=A: Host not found"
        );
        let nodata = r.lookup_aaaa("host.test").await.unwrap_err();
        assert!(matches!(nodata, DnsError::NoData { rtype: "AAAA", .. }));
        assert!(nodata.is_permanent());

        let servfail = r.lookup_a("broken.test").await.unwrap_err();
        assert_eq!(servfail.reason(), Some(&TempReason::ServFail));
        assert!(!servfail.is_permanent());
        assert_eq!(servfail.dsn(), "4.4.3");
        assert_eq!(
            servfail.to_string(),
            "Host or domain name not found. Name service error for name=broken.test type=A: Host not found, try again"
        );

        let t0 = Instant::now();
        let timeout = r.lookup_a("slow.test").await.unwrap_err();
        assert_eq!(timeout.reason(), Some(&TempReason::Timeout));
        assert!(t0.elapsed() >= TIMEOUT, "waited for the timeout");
        assert!(t0.elapsed() < TIMEOUT * 4);

        let refused = r.lookup_a("refused.test").await.unwrap_err();
        assert_eq!(refused.reason(), Some(&TempReason::Rcode("REFUSED".into())));

        for bad in ["", ".", "a..b", "bad name.test"] {
            assert!(
                matches!(r.lookup_a(bad).await, Err(DnsError::InvalidName { .. })),
                "{bad:?}"
            );
        }
    });
}

#[test]
fn cname_chains() {
    let s = TestServer::start().unwrap();
    s.add_cname("www.test", 300, "web.test");
    s.add_cname("web.test", 60, "real.test");
    s.add_a("real.test", 300, v4(9));
    s.add_cname("loop1.test", 300, "loop2.test");
    s.add_cname("loop2.test", 300, "loop1.test");
    s.add_cname("dangling.test", 300, "gone.test");
    on_executor(move || async move {
        let r = resolver(&s);
        // The server follows the chain itself: one query.
        assert_eq!(r.lookup_a("www.test").await.unwrap(), vec![v4(9)]);
        assert_eq!(s.count_all("www.test", RecordType::A), 1);
        // A CNAME to a name that does not exist is NXDOMAIN (for the name asked).
        assert!(matches!(
            r.lookup_a("dangling.test").await,
            Err(DnsError::NotFound { ref name, .. }) if name == "dangling.test"
        ));
        // A loop is cut off at MAX_CNAME_CHAIN and is a temporary failure.
        let e = r.lookup_a("loop1.test").await.unwrap_err();
        assert_eq!(e.reason(), Some(&TempReason::CnameChain));

        // A server that does not follow chains: the resolver re-queries each target.
        s.set_follow_cname(false);
        r.clear_cache();
        s.reset_counts();
        assert_eq!(r.lookup_a("www.test").await.unwrap(), vec![v4(9)]);
        assert_eq!(s.count_all("www.test", RecordType::A), 1);
        assert_eq!(s.count_all("web.test", RecordType::A), 1);
        assert_eq!(s.count_all("real.test", RecordType::A), 1);
        let e = r.lookup_a("loop1.test").await.unwrap_err();
        assert_eq!(e.reason(), Some(&TempReason::CnameChain));
        assert!(
            s.count_all("loop1.test", RecordType::A) + s.count_all("loop2.test", RecordType::A)
                <= MAX_CNAME_CHAIN as u64 + 1,
            "re-queries are bounded"
        );
    });
}

#[test]
fn truncation_falls_back_to_tcp() {
    let s = TestServer::start().unwrap();
    s.add_a("tc.test", 300, v4(1));
    s.set_behaviour("tc.test", Behaviour::Truncate);
    // 150 A records ≈ 2.4 KB: bigger than the 1232-byte EDNS payload, so truncated for real.
    for i in 0..150u8 {
        s.add_a("big.test", 300, Ipv4Addr::new(198, 51, 100, i));
    }
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(r.lookup_a("tc.test").await.unwrap(), vec![v4(1)]);
        assert_eq!(s.count("tc.test", RecordType::A, Via::Udp), 1);
        assert_eq!(s.count("tc.test", RecordType::A, Via::Tcp), 1);
        assert_eq!(r.stats().tcp_fallbacks, 1);
        let big = r.lookup_a("big.test").await.unwrap();
        assert_eq!(big.len(), 150);
        assert_eq!(s.count("big.test", RecordType::A, Via::Tcp), 1);
        assert_eq!(r.stats().tcp_fallbacks, 2);
    });
}

#[test]
fn dead_first_nameserver() {
    // First server swallows everything (a dead host); second answers.
    let dead = TestServer::start().unwrap();
    dead.set_default_behaviour(Behaviour::Drop);
    let live = TestServer::start().unwrap();
    live.add_a("host.test", 300, v4(1));
    // A port where nothing listens: ICMP port unreachable, refused at once.
    let closed = {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        sock.local_addr().unwrap()
    };
    on_executor(move || async move {
        let r = Resolver::new(config(&[dead.addr(), live.addr()]));
        let t0 = Instant::now();
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(1)]);
        assert!(t0.elapsed() >= TIMEOUT, "the dead server cost one timeout");
        assert_eq!(dead.count_all("host.test", RecordType::A), 1);
        assert_eq!(live.count_all("host.test", RecordType::A), 1);

        let r = Resolver::new(config(&[closed, live.addr()]));
        let t0 = Instant::now();
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(1)]);
        assert!(
            t0.elapsed() < TIMEOUT,
            "a refused port does not wait for the timeout"
        );

        // Every server dead, two attempts: timeout after attempts × servers tries.
        let mut cfg = config(&[dead.addr(), closed]);
        cfg.attempts = 2;
        let r = Resolver::new(cfg);
        dead.reset_counts();
        let e = r.lookup_a("host.test").await.unwrap_err();
        assert!(!e.is_permanent());
        assert_eq!(dead.count_all("host.test", RecordType::A), 2);
        assert_eq!(r.stats().queries_sent, 4);
    });
}

#[test]
fn servfail_moves_to_next_server() {
    let bad = TestServer::start().unwrap();
    bad.set_default_behaviour(Behaviour::ServFail);
    let good = TestServer::start().unwrap();
    good.add_a("host.test", 300, v4(3));
    on_executor(move || async move {
        let r = Resolver::new(config(&[bad.addr(), good.addr()]));
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(3)]);
        assert_eq!(bad.total(), 1);
    });
}

#[test]
fn ttl_expiry() {
    let s = TestServer::start().unwrap();
    s.add_a("host.test", 1, v4(1));
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(1)]);
        s.remove("host.test");
        s.add_a("host.test", 1, v4(2));
        // Within the TTL: the cached answer, no query.
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(1)]);
        assert_eq!(s.count_all("host.test", RecordType::A), 1);
        assert_eq!(r.stats().cache_hits, 1);
        sleep(Duration::from_millis(1100)).await;
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(2)]);
        assert_eq!(s.count_all("host.test", RecordType::A), 2);
    });
}

#[test]
fn ttl_floor_and_ceiling() {
    let s = TestServer::start().unwrap();
    s.add_a("zero.test", 0, v4(1));
    s.add_a("long.test", 86_400, v4(2));
    on_executor(move || async move {
        // No floor: a zero TTL is not cached.
        let r = resolver(&s);
        r.lookup_a("zero.test").await.unwrap();
        r.lookup_a("zero.test").await.unwrap();
        assert_eq!(s.count_all("zero.test", RecordType::A), 2);
        // With a floor it is.
        let mut cfg = config(&[s.addr()]);
        cfg.min_ttl = Duration::from_secs(30);
        cfg.max_ttl = Duration::from_millis(300);
        let r = Resolver::new(cfg);
        r.lookup_a("zero.test").await.unwrap();
        r.lookup_a("zero.test").await.unwrap();
        assert_eq!(s.count_all("zero.test", RecordType::A), 3);
        // A ceiling below the floor is raised to the floor; test the ceiling on its own.
        let mut cfg = config(&[s.addr()]);
        cfg.max_ttl = Duration::from_millis(300);
        let r = Resolver::new(cfg);
        r.lookup_a("long.test").await.unwrap();
        r.lookup_a("long.test").await.unwrap();
        assert_eq!(s.count_all("long.test", RecordType::A), 1);
        sleep(Duration::from_millis(350)).await;
        r.lookup_a("long.test").await.unwrap();
        assert_eq!(
            s.count_all("long.test", RecordType::A),
            2,
            "capped at max_ttl"
        );
    });
}

#[test]
fn negative_caching() {
    let s = TestServer::start().unwrap();
    s.set_negative_ttl(1);
    s.add_mx("exists.test", 300, 10, "mx.exists.test");
    on_executor(move || async move {
        let r = resolver(&s);
        assert!(matches!(
            r.lookup_a("new.test").await,
            Err(DnsError::NotFound { .. })
        ));
        assert!(matches!(
            r.lookup_a("exists.test").await,
            Err(DnsError::NoData { .. })
        ));
        s.add_a("new.test", 300, v4(5));
        s.add_a("exists.test", 300, v4(6));
        // Still negative from the cache.
        assert!(matches!(
            r.lookup_a("new.test").await,
            Err(DnsError::NotFound { .. })
        ));
        assert!(matches!(
            r.lookup_a("exists.test").await,
            Err(DnsError::NoData { .. })
        ));
        assert_eq!(s.count_all("new.test", RecordType::A), 1);
        assert_eq!(s.count_all("exists.test", RecordType::A), 1);
        sleep(Duration::from_millis(1100)).await;
        assert_eq!(r.lookup_a("new.test").await.unwrap(), vec![v4(5)]);
        assert_eq!(r.lookup_a("exists.test").await.unwrap(), vec![v4(6)]);
    });
}

#[test]
fn temporary_failures_cached_only_for_failure_ttl() {
    let s = TestServer::start().unwrap();
    s.add_a("flaky.test", 300, v4(1));
    s.set_behaviour("flaky.test", Behaviour::ServFail);
    on_executor(move || async move {
        let mut cfg = config(&[s.addr()]);
        cfg.failure_ttl = Duration::from_millis(300);
        let r = Resolver::new(cfg);
        assert!(r.lookup_a("flaky.test").await.is_err());
        s.set_behaviour("flaky.test", Behaviour::Answer);
        assert!(
            r.lookup_a("flaky.test").await.is_err(),
            "failure remembered"
        );
        assert_eq!(s.count_all("flaky.test", RecordType::A), 1);
        sleep(Duration::from_millis(350)).await;
        assert_eq!(r.lookup_a("flaky.test").await.unwrap(), vec![v4(1)]);
    });
}

#[test]
fn in_flight_deduplication() {
    let s = TestServer::start().unwrap();
    s.add_a("slow.test", 300, v4(1));
    s.set_behaviour("slow.test", Behaviour::Delay(Duration::from_millis(150)));
    on_executor(move || async move {
        let r = Rc::new(resolver(&s));
        // Four sessions on this core ask at once.
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let r = r.clone();
                glommio::spawn_local(async move { r.lookup_a("slow.test").await })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), vec![v4(1)]);
        }
        assert_eq!(
            s.count_all("slow.test", RecordType::A),
            1,
            "one query for four askers"
        );
        let st = r.stats();
        assert_eq!(st.coalesced, 3);
        assert_eq!(st.queries_sent, 1);
    });
}

#[test]
fn abandoned_leader_hands_over() {
    let s = TestServer::start().unwrap();
    s.add_a("slow.test", 300, v4(1));
    s.set_behaviour("slow.test", Behaviour::Delay(Duration::from_millis(150)));
    on_executor(move || async move {
        let r = Rc::new(resolver(&s));
        // The leader's session goes away after 30 ms; the waiter must not hang.
        let leader = {
            let r = r.clone();
            glommio::spawn_local(async move {
                futures_lite::future::or(async { Some(r.lookup_a("slow.test").await) }, async {
                    sleep(Duration::from_millis(30)).await;
                    None
                })
                .await
            })
        };
        let waiter = {
            let r = r.clone();
            glommio::spawn_local(async move {
                sleep(Duration::from_millis(10)).await;
                r.lookup_a("slow.test").await
            })
        };
        assert!(leader.await.is_none(), "leader was cancelled");
        assert_eq!(waiter.await.unwrap(), vec![v4(1)]);
        assert_eq!(r.stats().coalesced, 1);
        assert_eq!(
            s.count_all("slow.test", RecordType::A),
            2,
            "the waiter asked again"
        );
    });
}

#[test]
fn forged_replies_are_discarded() {
    let s = TestServer::start().unwrap();
    s.add_a("host.test", 300, v4(4));
    s.set_behaviour("host.test", Behaviour::Forge);
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(4)]);
        assert_eq!(r.stats().discarded_replies, 2);
    });
}

#[test]
fn random_ids_and_source_ports() {
    let s = TestServer::start().unwrap();
    on_executor(move || async move {
        let r = resolver(&s);
        for i in 0..32 {
            let _ = r.lookup_a(&format!("n{i}.test")).await;
        }
        let seen = s.observed_udp();
        assert_eq!(seen.len(), 32);
        let ids: std::collections::HashSet<u16> = seen.iter().map(|(id, _)| *id).collect();
        let ports: std::collections::HashSet<u16> = seen.iter().map(|(_, a)| a.port()).collect();
        // 32 draws from 65,536 (ids) or ~64,500 (ports) collide rarely; sequential would be
        // caught by the spread check.
        assert!(ids.len() >= 30, "ids {ids:?}");
        assert!(ports.len() >= 30, "ports {ports:?}");
        let (lo, hi) = (ports.iter().min().unwrap(), ports.iter().max().unwrap());
        assert!(
            hi - lo > 1000,
            "ports spread over the range, not sequential: {lo}..{hi}"
        );
    });
}

#[test]
fn ipv6_loopback_server() {
    let s = match TestServer::start_on(IpAddr::V6(Ipv6Addr::LOCALHOST)) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: no IPv6 loopback here ({e})");
            return;
        }
    };
    s.add_a("host.test", 300, v4(1));
    s.set_behaviour("host.test", Behaviour::Truncate);
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(r.lookup_a("host.test").await.unwrap(), vec![v4(1)]);
        assert_eq!(s.count("host.test", RecordType::A, Via::Tcp), 1);
    });
}

#[test]
fn config_from_corepost_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 10.9.9.9\noptions timeout:1 attempts:3\n",
    )
    .unwrap();
    let config = corepost_config::Config::from_parts(dir.path(), None, None).unwrap();
    let rc = ResolverConfig::from_config(&config, &resolv).unwrap();
    assert_eq!(rc.nameservers, vec!["10.9.9.9:53".parse().unwrap()]);
    assert_eq!(rc.timeout, Duration::from_secs(1));
    assert_eq!(rc.attempts, 3);

    let config = corepost_config::Config::from_parts(
        dir.path(),
        Some("corepost_dns_servers = 127.0.0.1:5353, [::1]:5354 ::1\n"),
        None,
    )
    .unwrap();
    let rc = ResolverConfig::from_config(&config, &resolv).unwrap();
    assert_eq!(
        rc.nameservers,
        vec![
            "127.0.0.1:5353".parse().unwrap(),
            "[::1]:5354".parse().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(rc.attempts, 3, "resolv.conf options still apply");

    let config = corepost_config::Config::from_parts(
        dir.path(),
        Some("corepost_dns_servers = localhost\n"),
        None,
    )
    .unwrap();
    assert!(ResolverConfig::from_config(&config, &resolv).is_err());
}

// ---- next hops ----------------------------------------------------------------------------

fn opts() -> NexthopOptions {
    NexthopOptions {
        preference: AddressPreference::Ipv4,
        ..NexthopOptions::new(25)
    }
}

#[test]
fn nexthop_mx_order_and_limit() {
    let s = TestServer::start().unwrap();
    s.add_mx("example.test", 300, 20, "backup.example.test");
    s.add_mx("example.test", 300, 10, "a.example.test");
    s.add_mx("example.test", 300, 10, "b.example.test");
    s.add_a("a.example.test", 300, v4(1));
    s.add_a("b.example.test", 300, v4(2));
    s.add_a("backup.example.test", 300, v4(3));
    s.add_aaaa("backup.example.test", 300, "2001:db8::3".parse().unwrap());
    on_executor(move || async move {
        let r = resolver(&s);
        let mut first_hosts = std::collections::HashSet::new();
        for _ in 0..40 {
            let d = r.resolve_nexthop("example.test", &opts()).await.unwrap();
            let hosts: Vec<&str> = d.iter().map(|d| d.host.as_str()).collect();
            let prefs: Vec<Option<u16>> = d.iter().map(|d| d.preference).collect();
            assert_eq!(prefs, [Some(10), Some(10), Some(20), Some(20)]);
            assert_eq!(&hosts[2..], ["backup.example.test", "backup.example.test"]);
            assert_eq!(
                d[2].addr,
                "192.0.2.3:25".parse().unwrap(),
                "IPv4 first (preference)"
            );
            assert_eq!(d[3].addr, "[2001:db8::3]:25".parse().unwrap());
            first_hosts.insert(hosts[0].to_string());
        }
        assert_eq!(first_hosts.len(), 2, "equal preferences are shuffled");

        let limited = NexthopOptions {
            mx_address_limit: 3,
            ..opts()
        };
        let d = r
            .resolve_nexthop("example.test:2525", &limited)
            .await
            .unwrap();
        assert_eq!(d.len(), 3);
        assert!(d.iter().all(|d| d.addr.port() == 2525));

        let v6 = NexthopOptions {
            ipv4: false,
            ..opts()
        };
        let d = r.resolve_nexthop("example.test", &v6).await.unwrap();
        assert_eq!(d.len(), 1, "only backup has IPv6");
        assert_eq!(d[0].addr, "[2001:db8::3]:25".parse().unwrap());
    });
}

#[test]
fn nexthop_implicit_null_and_failing_mx() {
    let s = TestServer::start().unwrap();
    s.add_a("nomx.test", 300, v4(8));
    s.add_mx("null.test", 300, 0, ".");
    s.add_mx("lame.test", 300, 10, "gone.lame.test");
    s.add_mx("flaky.test", 300, 10, "gone.flaky.test");
    s.add_mx("flaky.test", 300, 20, "broken.flaky.test");
    s.add_a("broken.flaky.test", 300, v4(9));
    s.set_behaviour("broken.flaky.test", Behaviour::ServFail);
    s.add_mx("half.test", 300, 10, "gone.half.test");
    s.add_mx("half.test", 300, 20, "ok.half.test");
    s.add_a("ok.half.test", 300, v4(10));
    on_executor(move || async move {
        let r = resolver(&s);
        let d = r.resolve_nexthop("nomx.test", &opts()).await.unwrap();
        assert_eq!(
            d,
            vec![Destination {
                host: "nomx.test".into(),
                addr: "192.0.2.8:25".parse().unwrap(),
                preference: Some(0),
                mx_secure: None,
                secure: false,
            }]
        );
        let e = r.resolve_nexthop("null.test", &opts()).await.unwrap_err();
        assert!(matches!(e, DnsError::NullMx { .. }) && e.is_permanent());
        assert!(
            r.resolve_nexthop("missing.test", &opts())
                .await
                .unwrap_err()
                .is_permanent()
        );
        // The only MX host does not exist: permanent.
        let e = r.resolve_nexthop("lame.test", &opts()).await.unwrap_err();
        assert!(e.is_permanent(), "{e:?}");
        assert_eq!(e.dsn(), "5.4.4");
        // smtp_defer_if_no_mx_address_found = yes: the same text, deferred
        // with 4.4.4 (Postfix's SMTP_SET_SOFT_DSN); a missing domain still
        // bounces.
        let deferring = NexthopOptions {
            defer_if_no_mx_address: true,
            ..opts()
        };
        let soft = r
            .resolve_nexthop("lame.test", &deferring)
            .await
            .unwrap_err();
        assert!(!soft.is_permanent(), "{soft:?}");
        assert_eq!(soft.dsn(), "4.4.4");
        assert_eq!(soft.to_string(), e.to_string());
        let missing = r
            .resolve_nexthop("missing.test", &deferring)
            .await
            .unwrap_err();
        assert!(missing.is_permanent());
        // One MX host missing, the other SERVFAIL: temporary.
        let e = r.resolve_nexthop("flaky.test", &opts()).await.unwrap_err();
        assert!(!e.is_permanent(), "{e:?}");
        // One MX host missing, the other fine: use the fine one.
        let d = r.resolve_nexthop("half.test", &opts()).await.unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].host, "ok.half.test");
    });
}

#[test]
fn nexthop_brackets_skip_mx_and_literals_skip_dns() {
    let s = TestServer::start().unwrap();
    s.add_mx("relay.test", 300, 10, "mx.relay.test");
    s.add_a("mx.relay.test", 300, v4(1));
    s.add_a("relay.test", 300, v4(2));
    on_executor(move || async move {
        let r = resolver(&s);
        let d = r
            .resolve_nexthop("[relay.test]:587", &opts())
            .await
            .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].addr, "192.0.2.2:587".parse().unwrap());
        assert_eq!(d[0].preference, None);
        assert_eq!(
            s.count_all("relay.test", RecordType::MX),
            0,
            "no MX lookup for [host]"
        );

        let d = r.resolve_nexthop("relay.test:587", &opts()).await.unwrap();
        assert_eq!(
            d[0].addr,
            "192.0.2.1:587".parse().unwrap(),
            "host:port still looks up MX"
        );
        assert_eq!(s.count_all("relay.test", RecordType::MX), 1);

        s.reset_counts();
        let d = r
            .resolve_nexthop("[192.0.2.55]:2525", &opts())
            .await
            .unwrap();
        assert_eq!(d[0].addr, "192.0.2.55:2525".parse().unwrap());
        let d = r
            .resolve_nexthop("[ipv6:2001:db8::5]", &opts())
            .await
            .unwrap();
        assert_eq!(d[0].addr, "[2001:db8::5]:25".parse().unwrap());
        assert_eq!(s.total(), 0, "literal addresses need no DNS");

        assert!(matches!(
            r.resolve_nexthop("[bad", &opts()).await,
            Err(DnsError::InvalidName { .. })
        ));
    });
}

#[test]
fn nexthop_without_dns_uses_the_system_lookup_off_core() {
    let s = TestServer::start().unwrap();
    s.add_mx("relay.test", 300, 10, "mx.relay.test");
    on_executor(move || async move {
        let r = resolver(&s);
        let no_dns = NexthopOptions {
            dns: DnsSupport::Disabled,
            ..opts()
        };
        // A numeric host goes through getaddrinfo (AI_NUMERICHOST-style: no query leaves the
        // machine), on glommio's blocking pool; the DNS server is never asked.
        let addrs = r.host_addresses("127.0.0.1", &no_dns).await.unwrap();
        assert_eq!(addrs, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let native = NexthopOptions {
            host_lookup: HostLookup::Native,
            ..opts()
        };
        let addrs = r.host_addresses("127.0.0.1", &native).await.unwrap();
        assert_eq!(addrs, vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        assert_eq!(s.total(), 0);
    });
}

#[test]
fn underscore_and_idn_names() {
    let s = TestServer::start().unwrap();
    s.add_txt("_dmarc.example.test", 300, &["v=DMARC1; p=reject"]);
    s.add_a("xn--bcher-kva.test", 300, v4(11));
    on_executor(move || async move {
        let r = resolver(&s);
        assert_eq!(
            r.lookup_txt("_DMARC.example.test").await.unwrap(),
            vec!["v=DMARC1; p=reject".to_string()]
        );
        // A UTF-8 name is looked up in its punycode form, and shares the cache entry.
        assert_eq!(r.lookup_a("bücher.test").await.unwrap(), vec![v4(11)]);
        assert_eq!(
            r.lookup_a("xn--bcher-kva.test").await.unwrap(),
            vec![v4(11)]
        );
        assert_eq!(s.count_all("xn--bcher-kva.test", RecordType::A), 1);
    });
}

proptest::proptest! {
    /// The cache key computed without parsing equals the parsed name's key.
    #[test]
    fn fast_key_agrees_with_parsing(name in "[A-Za-z0-9_-]{1,20}(\\.[A-Za-z0-9_-]{1,20}){0,4}\\.?") {
        if let Ok(fq) = fqdn(&name) {
            proptest::prop_assert_eq!(fast_key(&name), Some(fq.text));
        }
    }
}

#[test]
fn dnssec_ad_bit_is_kept_through_the_cache_and_chains() {
    let s = TestServer::start().unwrap();
    s.add_mx("signed.test", 300, 10, "mx.signed.test");
    s.add_a("mx.signed.test", 300, v4(1));
    s.add_tlsa("_25._tcp.mx.signed.test", 300, 3, 1, 1, &[0xab; 32]);
    s.add_cname("alias.signed.test", 300, "plain.test");
    s.add_a("plain.test", 300, v4(2));
    for name in ["signed.test", "mx.signed.test", "_25._tcp.mx.signed.test"] {
        s.set_secure(name, true);
    }
    s.set_secure("alias.signed.test", true);
    on_executor(move || async move {
        let dnssec = Resolver::new(ResolverConfig {
            dnssec: true,
            ..config(&[s.addr()])
        });
        let (mx, secure) = dnssec.lookup_mx_secure("signed.test").await;
        assert!(
            mx.is_ok() && secure,
            "AD set on a validated answer to a DO query"
        );
        let (tlsa, secure) = dnssec.lookup_tlsa("_25._tcp.mx.signed.test").await;
        assert!(secure);
        assert_eq!(
            tlsa.unwrap(),
            vec![Rdata::Tlsa {
                usage: 3,
                selector: 1,
                mtype: 1,
                data: vec![0xab; 32]
            }]
        );
        // From the cache: still secure, no new query.
        let (_, again) = dnssec.lookup_mx_secure("signed.test").await;
        assert!(again);
        assert_eq!(s.count_all("signed.test", RecordType::MX), 1);
        // A CNAME into an unsigned zone: the chain is not secure.
        let chained = dnssec
            .lookup_secure("alias.signed.test", RecordType::A)
            .await;
        assert!(chained.outcome.is_ok() && !chained.secure);
        // Nexthop resolution carries both flags.
        let opts = NexthopOptions {
            dnssec: true,
            ipv6: false,
            ..NexthopOptions::new(25)
        };
        let d = dnssec.resolve_nexthop("signed.test", &opts).await.unwrap();
        assert_eq!((d[0].mx_secure, d[0].secure), (Some(true), true));
        // Without smtp_dns_support_level = dnssec nothing is ever secure (no DO, AD ignored).
        let plain = resolver(&s);
        let (_, secure) = plain.lookup_mx_secure("signed.test").await;
        assert!(!secure);
    });
}
