//! Several `corepost run` nodes behind a real HAProxy (`send-proxy-v2`,
//! round robin), sharing one destination's limits through a real
//! redis-server (`corepost_shared_throttle_redis`): the sink sees the
//! cluster's rate and connection count stay within the policy, the nodes see
//! the original client address, and a node killed mid-run loses no
//! acknowledged mail once restarted.

mod support;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::*;

const NODES: usize = 3;
/// The destination's policy: 10 messages a second, 2 connections, for the
/// cluster as a whole.
const RATE: usize = 10;
const CONNECTIONS: usize = 2;
const MESSAGES: usize = 80;

/// A child process killed when dropped.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_listening(port: u16, what: &str) {
    wait_until(10, || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })
    .unwrap_or_else(|| panic!("{what} does not listen on {port}"));
}

fn redis_server(port: u16) -> Killed {
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (apt-get install redis-server)");
    let k = Killed(child);
    wait_listening(port, "redis-server");
    k
}

/// HAProxy on `front`, round robin over the nodes with PROXY protocol v2;
/// a node that refuses connections is retried on another.
fn haproxy(dir: &std::path::Path, front: u16, nodes: &[u16]) -> Killed {
    let nodes: Vec<String> = nodes.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    haproxy_to(dir, front, &nodes)
}

/// [`haproxy`] with the nodes given as address:port.
fn haproxy_to(dir: &std::path::Path, front: u16, nodes: &[String]) -> Killed {
    let servers: String = nodes
        .iter()
        .enumerate()
        .map(|(i, a)| format!("  server node{i} {a} send-proxy-v2\n"))
        .collect();
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n  maxconn 200\ndefaults\n  mode tcp\n  timeout connect 2s\n  timeout client 30s\n  timeout server 30s\n  retries 3\n  option redispatch 1\n\
             frontend smtp\n  bind 127.0.0.1:{front}\n  default_backend corepost\n\
             backend corepost\n  balance roundrobin\n{servers}"
        ),
    )
    .expect("haproxy.cfg");
    let child = Command::new("/usr/sbin/haproxy")
        .args(["-db", "-f", &cfg.display().to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("haproxy (apt-get install haproxy)");
    let k = Killed(child);
    // Probe from 127.0.0.4, so that 127.0.0.1 in a node's log can only be a
    // connection that came without HAProxy.
    wait_until(10, || {
        let socket =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).ok()?;
        let from: std::net::SocketAddr = "127.0.0.4:0".parse().ok()?;
        let to: std::net::SocketAddr = format!("127.0.0.1:{front}").parse().ok()?;
        socket.bind(&from.into()).ok()?;
        socket.connect(&to.into()).ok()
    })
    .expect("haproxy listens");
    k
}

/// One message over a fresh session from 127.0.0.2 through the proxy:
/// whether it was acknowledged (250 to the end of data).
fn send_one(front: u16, seq: usize) -> bool {
    let (mut c, greeting) = Raw::open_from(front, "127.0.0.2");
    if !greeting.starts_with("220 ") {
        return false;
    }
    let ok = |r: Option<String>, code: &str| r.is_some_and(|r| r.starts_with(code));
    if !ok(c.try_cmd("EHLO load.test"), "250")
        || !ok(c.try_cmd("MAIL FROM:<load@example.org>"), "250")
        || !ok(c.try_cmd("RCPT TO:<x@remote.example>"), "250")
        || !ok(c.try_cmd("DATA"), "354")
        || !c.try_send(
            format!("Subject: n{seq}\r\nX-Seq: {seq}\r\n\r\nbody {seq}\r\n.\r\n").as_bytes(),
        )
    {
        return false;
    }
    let acked = c.reply().starts_with("250 ");
    let _ = c.try_cmd("QUIT");
    acked
}

/// One message straight to a node (no HAProxy), with the PROXY v1 header
/// HAProxy would have written: whether it was acknowledged.
fn send_direct(port: u16, seq: usize) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let reply = |s: &mut std::net::TcpStream| {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let text = String::from_utf8_lossy(&got).into_owned();
            if let Some(last) = text.lines().last()
                && text.ends_with("\r\n")
                && last.as_bytes().get(3) == Some(&b' ')
            {
                return text;
            }
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return text,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    let mut step = |line: &str, want: &str| {
        s.write_all(line.as_bytes()).is_ok() && reply(&mut s).starts_with(want)
    };
    step("PROXY TCP4 127.0.0.2 127.0.0.1 40000 25\r\n", "220")
        && step("EHLO load.test\r\n", "250")
        && step("MAIL FROM:<load@example.org>\r\n", "250")
        && step("RCPT TO:<x@remote.example>\r\n", "250")
        && step("DATA\r\n", "354")
        && step(
            &format!("Subject: n{seq}\r\nX-Seq: {seq}\r\n\r\nbody\r\n.\r\n"),
            "250",
        )
        && step("QUIT\r\n", "221")
}

/// The most MAIL FROMs that fell in any window of `width`.
fn busiest_window(times: &[Instant], width: Duration) -> usize {
    let mut t = times.to_vec();
    t.sort();
    (0..t.len())
        .map(|i| t[i..].iter().take_while(|x| **x - t[i] < width).count())
        .max()
        .unwrap_or(0)
}

/// main.cf lines of a node: behind the proxy, relaying to the sink under
/// the shared policy.
fn node_config(sink: u16, redis_port: u16, nodes: usize) -> String {
    format!(
        "smtpd_upstream_proxy_protocol = haproxy\n\
         mynetworks = 127.0.0.2/32\n\
         smtpd_client_restrictions = permit_mynetworks, reject\n\
         smtpd_delay_reject = no\n\
         relayhost = [127.0.0.1]:{sink}\n\
         corepost_destination_policy_maps = inline:{{ {{ [127.0.0.1]:{sink} = concurrency={CONNECTIONS} rate={RATE}/s }} }}\n\
         corepost_shared_throttle_redis = redis://127.0.0.1:{redis_port}\n\
         corepost_cluster_node_count = {nodes}\n\
         corepost_shared_throttle_timeout_ms = 1000\n\
         corepost_shared_throttle_lease_time = 3s\n"
    )
}

#[test]
fn nodes_behind_haproxy_share_a_destination_limit_through_redis() {
    let sink = Sink::start();
    let redis_port = free_port();
    let _redis = redis_server(redis_port);
    let config = node_config(sink.port, redis_port, NODES);
    let mut nodes: Vec<Daemon> = (0..NODES).map(|_| Daemon::start(&config)).collect();
    let ports: Vec<u16> = nodes.iter().map(|d| d.port).collect();
    let front = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let _proxy = haproxy(dir.path(), front, &ports);

    // Restrictions see the original client: 127.0.0.3 is refused by every
    // node although the connections come from HAProxy's 127.0.0.1.
    for _ in 0..NODES {
        let (_c, greeting) = Raw::open_from(front, "127.0.0.3");
        assert!(
            greeting.starts_with("554 5.7.1 <unknown[127.0.0.3]>: Client host rejected"),
            "{greeting}"
        );
    }

    // Load from four clients; node 1 is killed (SIGKILL) halfway.
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let senders: Vec<_> = (0..4)
        .map(|_| {
            let next = std::sync::Arc::clone(&next);
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                loop {
                    let seq = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if seq >= MESSAGES {
                        return acked;
                    }
                    if send_one(front, seq) {
                        acked.push(seq);
                    }
                }
            })
        })
        .collect();
    wait_until(20, || {
        (next.load(std::sync::atomic::Ordering::Relaxed) >= MESSAGES / 2).then_some(())
    })
    .expect("load started");
    nodes[1].kill();
    let acked: HashSet<usize> = senders
        .into_iter()
        .flat_map(|s| s.join().expect("sender"))
        .collect();
    let accepting = started.elapsed();
    assert!(
        acked.len() >= MESSAGES * 3 / 4,
        "only {} acknowledged",
        acked.len()
    );
    nodes[1].spawn();

    // Every acknowledged message arrives, the killed node's after its
    // restart (at the shared rate: about MESSAGES / RATE seconds).
    let all = wait_until(40, || {
        let (seen, _) = sink.sequence_numbers();
        acked.is_subset(&seen).then_some(seen)
    });
    let got = sink.snapshot();
    let logs: Vec<String> = nodes.iter().map(Daemon::log).collect();
    let missing: Vec<_> = acked
        .iter()
        .filter(|s| all.as_ref().is_none_or(|seen| !seen.contains(s)))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged but never delivered: {missing:?}\n{}",
        logs.join("\n----\n")
    );

    // The cluster's rate. Redis hands out slots at least I = 1/RATE apart on
    // its own clock (no burst); a delivery reaches the sink at its slot plus
    // a delay d in [0, D] (Redis's answer, timer lateness, the MAIL command
    // on loopback). Deliveries i..j in a window of width W then satisfy
    // (j - i)·I < W + D, so a one-second window holds at most
    // ceil(RATE + D/I): RATE + 2 allows D up to 200 ms, ample here (a few ms
    // unloaded). Over the whole run the rate is at most
    // RATE / (1 - D/((n-1)·I)), within 5 % for D = 200 ms and n ≈ 75.
    // Without sharing, the three nodes deliver at 3 × RATE.
    let busiest = busiest_window(&got.mail_times, Duration::from_secs(1));
    assert!(busiest <= RATE + 2, "{busiest} deliveries in one second");
    let mut times = got.mail_times.clone();
    times.sort();
    let span = times[times.len() - 1] - times[0];
    let overall = (times.len() - 1) as f64 / span.as_secs_f64();
    assert!(
        overall <= RATE as f64 * 1.05,
        "{overall:.1}/s over {span:?}"
    );
    // Accepting was much faster than delivery: the limit, not the load,
    // set the pace.
    assert!(
        accepting < span,
        "accepted in {accepting:?}, delivered in {span:?}"
    );
    eprintln!(
        "{} acknowledged in {accepting:?}; {} deliveries ({} distinct) in {span:?}: {overall:.2}/s, busiest second {busiest}; most connections at once {}",
        acked.len(),
        got.messages.len(),
        all.as_ref().map_or(0, HashSet::len),
        got.max_open
    );

    // The cluster's connections: never more than the policy allows, although
    // each node alone may open that many.
    assert!(got.max_open >= 1);
    assert!(
        got.max_open <= CONNECTIONS,
        "{} connections at once",
        got.max_open
    );

    // Logs see the original client, on every node.
    for (i, log) in logs.iter().enumerate() {
        assert!(
            log.contains("connect from unknown[127.0.0.2]"),
            "node {i}:\n{log}"
        );
        // HAProxy's own address is seen only by the test's readiness probes,
        // which connect without a PROXY header (one per start).
        assert_eq!(
            log.matches(": connect from unknown[127.0.0.1]").count(),
            log.matches("warning: haproxy read: ").count(),
            "node {i}:\n{log}"
        );
        assert!(
            !log.contains("warning: shared throttle"),
            "node {i}:\n{log}"
        );
    }
}

/// Redis goes away mid-run: each node logs it once, takes its share of the
/// limits (rate / 2, one connection each) and keeps delivering; when Redis
/// is back, each node logs that once and shares again.
#[test]
fn without_redis_each_node_takes_its_share() {
    let sink = Sink::start();
    let redis_port = free_port();
    let mut redis = Some(redis_server(redis_port));
    let config = node_config(sink.port, redis_port, 2);
    let nodes: Vec<Daemon> = (0..2).map(|_| Daemon::start(&config)).collect();
    let ports: Vec<u16> = nodes.iter().map(|d| d.port).collect();
    let front = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let _proxy = haproxy(dir.path(), front, &ports);
    // Shared first, so the outage is a change the nodes notice.
    assert!(send_one(front, 0) && send_one(front, 1));
    sink.wait_for(2, 10);
    // Once the cached connections have closed (a node holding more than
    // its share when Redis goes away closes the excess at its next job,
    // so the sink could see one too many for one transaction).
    wait_until(10, || (sink.snapshot().open == 0).then_some(())).expect("connections closed");
    drop(redis.take());
    let total = 40;
    for seq in 2..total {
        assert!(send_one(front, seq), "message {seq} refused");
    }
    let got = sink.wait_for(total, 20);
    assert_eq!(got.messages.len(), total, "delivery stalled");
    // Each node at RATE / 2 (one slot every 2/RATE s, plus jitter), so the
    // two together at most RATE a second, and one connection each.
    let after: Vec<Instant> = got.mail_times[2..].to_vec();
    let busiest = busiest_window(&after, Duration::from_secs(1));
    assert!(busiest <= RATE + 2, "{busiest} deliveries in one second");
    assert!(got.max_open <= CONNECTIONS, "{} connections", got.max_open);
    for (i, d) in nodes.iter().enumerate() {
        let log = d.log();
        assert_eq!(
            log.matches("warning: shared throttle: redis://127.0.0.1:")
                .count(),
            1,
            "node {i}:\n{log}"
        );
        assert!(
            log.contains("using this node's share of each limit (1/2)"),
            "node {i}:\n{log}"
        );
    }
    // Redis is back: the next deliveries share again, which is logged once.
    redis = Some(redis_server(redis_port));
    std::thread::sleep(Duration::from_millis(1500));
    for seq in total..total + 4 {
        assert!(send_one(front, seq), "message {seq} refused");
    }
    sink.wait_for(total + 4, 10);
    for (i, d) in nodes.iter().enumerate() {
        let log = d.log();
        assert_eq!(
            log.matches("reachable again; limits are shared").count(),
            1,
            "node {i}:\n{log}"
        );
    }
    drop(redis);
}

/// A setting the shared throttles cannot use is an error in `corepost check`
/// (and at start), never a silently per-node limit.
#[test]
fn check_refuses_bad_shared_throttle_settings() {
    for (line, want) in [
        (
            "corepost_shared_throttle_redis = 127.0.0.1:6379",
            "corepost_shared_throttle_redis = 127.0.0.1:6379: expected redis://host:port[/db] or redis+unix:///path",
        ),
        (
            "corepost_cluster_node_count = 0",
            "corepost_cluster_node_count = 0: must be 1 or more",
        ),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        std::fs::write(
            dir.path().join("main.cf"),
            format!("myhostname = mx.test.example\nqueue_directory = {d}/spool\n{line}\n"),
        )
        .expect("main.cf");
        std::fs::write(
            dir.path().join("master.cf"),
            "127.0.0.1:2525 inet n - n - - smtpd\nsmtp unix - - n - - smtp\n",
        )
        .expect("master.cf");
        let out = corepost(&["check", "-c", &d]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&format!("corepost: error: {want}")), "{err}");
    }
}

/// A node that holds more than its share of the connections when Redis
/// goes away (here: all of them) closes the excess at its next job, so the
/// other node's fallback connection does not take the cluster over the
/// limit for longer than a transaction.
#[test]
fn a_node_above_its_share_sheds_connections_when_redis_goes_away() {
    let sink = Sink::start_slow(Duration::from_millis(150));
    let redis_port = free_port();
    let redis = redis_server(redis_port);
    let config = node_config(sink.port, redis_port, 2);
    let nodes: Vec<Daemon> = (0..2).map(|_| Daemon::start(&config)).collect();
    // Node 0 alone has mail: it takes both places of the cluster.
    for seq in 0..30 {
        assert!(send_direct(nodes[0].port, seq), "message {seq}");
    }
    wait_until(10, || (sink.snapshot().open == CONNECTIONS).then_some(()))
        .expect("node 0 holds both connections");
    drop(redis);
    for seq in 30..40 {
        assert!(send_direct(nodes[1].port, seq), "message {seq}");
    }
    // One transaction (150 ms at the sink) for node 0 to shed; then never
    // more than the limit while both nodes work through their mail.
    std::thread::sleep(Duration::from_millis(400));
    let mut most = 0;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        most = most.max(sink.snapshot().open);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(most <= CONNECTIONS, "{most} connections after the switch");
    let got = sink.wait_for(40, 30);
    assert_eq!(got.messages.len(), 40, "delivery stalled");
}

/// With `corepost_shared_smtpd_client_limits`, a client spread over the
/// nodes by round robin meets `smtpd_client_message_rate_limit` once for
/// the cluster, not once per node. The nodes listen on one port at two
/// addresses, as a cluster's nodes do.
#[test]
fn smtpd_client_rate_limits_hold_across_nodes() {
    let sink = Sink::start();
    let redis_port = free_port();
    let _redis = redis_server(redis_port);
    let config = format!(
        "{}smtpd_client_message_rate_limit = 4\n\
         smtpd_client_event_limit_exceptions =\n\
         corepost_shared_smtpd_client_limits = yes\n",
        node_config(sink.port, redis_port, 2)
    );
    let port = free_port();
    let nodes: Vec<Daemon> = (0..2)
        .map(|i| {
            Daemon::start_with_master(
                &config,
                &format!("127.0.0.{}:{port} inet n - n - - smtpd\n", 11 + i),
            )
        })
        .collect();
    let front = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let backends = ["127.0.0.11", "127.0.0.12"].map(|a| format!("{a}:{port}"));
    let _proxy = haproxy_to(dir.path(), front, &backends);
    let mut replies = Vec::new();
    for _ in 0..6 {
        let (mut c, greeting) = Raw::open_from(front, "127.0.0.2");
        assert!(greeting.starts_with("220 "), "{greeting}");
        c.cmd("EHLO load.test");
        replies.push(c.cmd("MAIL FROM:<load@example.org>").trim().to_string());
        c.cmd("QUIT");
    }
    // Three MAILs per node, four allowed in all.
    let refused = "450 4.7.1 Error: too much mail from 127.0.0.2";
    assert_eq!(
        replies[..4].iter().filter(|r| r.starts_with("250")).count(),
        4,
        "{replies:?}"
    );
    assert_eq!(replies[4..], [refused, refused], "{replies:?}");
    let logs: String = nodes.iter().map(Daemon::log).collect();
    assert!(
        logs.contains("warning: Message delivery request rate limit exceeded: 5 from unknown[127.0.0.2] for service "),
        "{logs}"
    );
}
