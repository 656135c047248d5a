//! Egress pools end to end (`corepost_egress_pools`): the source address and HELO name of each
//! connection, the pool per transport and per sender, per-source limits, warm-up spill-over,
//! connection reuse within a pool only, and Postfix 3.7's `smtp_bind_address_enforce`.
//!
//! Loopback has all of 127.0.0.0/8, so the sources 127.0.0.2, 127.0.0.3, ... need no setup; a
//! sink in this file records the client address and HELO name of every message.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{IpAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// One message as the sink got it.
#[derive(Debug, Clone)]
struct Got {
    /// The connection's number (from 0, in accept order).
    connection: usize,
    peer: IpAddr,
    helo: String,
    sender: String,
    /// When its end of data arrived.
    at: std::time::Instant,
}

#[derive(Debug, Default)]
struct Record {
    messages: Vec<Got>,
    connections: usize,
    /// Connections open now and the most at once, per client address.
    open: std::collections::HashMap<IpAddr, usize>,
    max_open: std::collections::HashMap<IpAddr, usize>,
    /// Connections open now and the most at once, from any address.
    open_total: usize,
    max_open_total: usize,
}

/// An SMTP sink (no PIPELINING: one command at a time) that records peers and HELO names and
/// takes `delay` before answering each end of data.
struct PeerSink {
    port: u16,
    record: Arc<Mutex<Record>>,
}

impl PeerSink {
    fn start(delay: Duration) -> PeerSink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let record = Arc::new(Mutex::new(Record::default()));
        let shared = Arc::clone(&record);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let record = Arc::clone(&shared);
                std::thread::spawn(move || session(stream, &record, delay));
            }
        });
        PeerSink { port, record }
    }

    fn wait_for(&self, n: usize, secs: u64) -> Vec<Got> {
        wait_until(secs, || {
            let r = self.record.lock().unwrap();
            (r.messages.len() >= n).then(|| r.messages.clone())
        })
        .unwrap_or_else(|| self.record.lock().unwrap().messages.clone())
    }

    fn max_open(&self, peer: &str) -> usize {
        let ip: IpAddr = peer.parse().unwrap();
        let r = self.record.lock().unwrap();
        r.max_open.get(&ip).copied().unwrap_or(0)
    }
}

fn session(stream: TcpStream, record: &Arc<Mutex<Record>>, delay: Duration) {
    let peer = stream.peer_addr().expect("peer").ip();
    let connection = {
        let mut r = record.lock().unwrap();
        r.connections += 1;
        let open = r.open.entry(peer).or_default();
        *open += 1;
        let now = *open;
        let max = r.max_open.entry(peer).or_default();
        *max = (*max).max(now);
        r.open_total += 1;
        r.max_open_total = r.max_open_total.max(r.open_total);
        r.connections - 1
    };
    let mut w = stream.try_clone().expect("clone");
    let mut lines = BufReader::new(stream);
    let _ = w.write_all(b"220 peers.test ESMTP\r\n");
    let (mut helo, mut sender) = (String::new(), String::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).unwrap_or(0) == 0 {
            break;
        }
        let upper = line.trim_end().to_ascii_uppercase();
        let words: Vec<&str> = line.split_whitespace().collect();
        let reply = if upper.starts_with("EHLO") || upper.starts_with("HELO") {
            helo = words.get(1).unwrap_or(&"").to_string();
            "250 peers.test\r\n"
        } else if upper.starts_with("MAIL FROM:") {
            sender = line.trim_end()[10..]
                .trim_matches(|c| c == '<' || c == '>')
                .to_string();
            "250 2.1.0 ok\r\n"
        } else if upper.starts_with("DATA") {
            let _ = w.write_all(b"354 go ahead\r\n");
            loop {
                line.clear();
                if lines.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                    break;
                }
            }
            std::thread::sleep(delay);
            record.lock().unwrap().messages.push(Got {
                connection,
                peer,
                helo: helo.clone(),
                sender: sender.clone(),
                at: std::time::Instant::now(),
            });
            "250 2.0.0 queued\r\n"
        } else if upper.starts_with("QUIT") {
            let _ = w.write_all(b"221 bye\r\n");
            break;
        } else {
            "250 ok\r\n"
        };
        let _ = w.write_all(reply.as_bytes());
    }
    let mut r = record.lock().unwrap();
    r.open_total -= 1;
    if let Some(open) = r.open.get_mut(&peer) {
        *open -= 1;
    }
}

/// A daemon relaying everything to `sink` through the transport `pooled` (master.cf's
/// `-o` options `pooled_opts`), with `egress` as its egress file.
fn daemon(
    sink: &PeerSink,
    egress: &str,
    main: &str,
    pooled_opts: &str,
) -> (Daemon, tempfile::TempDir) {
    let files = tempfile::tempdir().unwrap();
    let path = files.path().join("egress.conf");
    std::fs::write(&path, egress).unwrap();
    let d = Daemon::start_with_master(
        &format!(
            "relayhost = [127.0.0.1]:{}\ndefault_transport = pooled\ncorepost_egress_pools = {}\n\
             minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n{main}",
            sink.port,
            path.display()
        ),
        &format!("pooled unix - - n - - smtp {pooled_opts}\n"),
    );
    (d, files)
}

fn send(d: &Daemon, sender: &str, n: usize) {
    for i in 0..n {
        submit(
            d.port,
            sender,
            &["u@far.example"],
            &format!("Subject: {i}\r\n\r\nhi"),
        );
    }
}

fn count(got: &[Got], peer: &str) -> usize {
    got.iter().filter(|g| g.peer.to_string() == peer).count()
}

#[test]
fn weights_hold_over_connections_and_each_source_greets_with_its_helo_name() {
    let sink = PeerSink::start(Duration::ZERO);
    let events = tempfile::tempdir().unwrap();
    let event_file = events.path().join("events.json");
    let (d, _files) = daemon(
        &sink,
        "source a 127.0.0.2 helo=a.egress.test\nsource b 127.0.0.3 helo=b.egress.test\npool p a:3 b:1\n",
        &format!(
            "smtp_connection_cache_on_demand = no\ncorepost_event_log_file = {}\n\
             default_destination_concurrency_limit = 1\n",
            event_file.display()
        ),
        "-o corepost_egress_pool=p",
    );
    send(&d, "s@example.org", 12);
    let got = sink.wait_for(12, 30);
    assert_eq!(got.len(), 12, "{}", d.log());
    // One connection per message (no caching; one at a time, so no connection is opened for
    // a job another one took): 3 of every 4 from a.
    assert_eq!(sink.record.lock().unwrap().connections, 12);
    assert_eq!(
        (count(&got, "127.0.0.2"), count(&got, "127.0.0.3")),
        (9, 3),
        "{got:?}"
    );
    for g in &got {
        let want = if g.peer.to_string() == "127.0.0.2" {
            "a.egress.test"
        } else {
            "b.egress.test"
        };
        assert_eq!(g.helo, want, "{g:?}");
    }
    // The source is in the JSON events; Postfix's log line is unchanged.
    let text = wait_until(10, || {
        let t = std::fs::read_to_string(&event_file).ok()?;
        (t.matches("\"event\":\"delivery\"").count() >= 12).then_some(t)
    })
    .expect("delivery events");
    let delivery = text
        .lines()
        .find(|l| l.contains("\"egress_source\":\"b\""))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(delivery.contains("\"egress_pool\":\"p\""), "{delivery}");
    assert!(
        delivery.contains("\"egress_address\":\"127.0.0.3\""),
        "{delivery}"
    );
    let log = d.log();
    let sent: Vec<&str> = log.lines().filter(|l| l.contains("status=sent")).collect();
    assert_eq!(sent.len(), 12, "{log}");
    assert!(
        sent.iter()
            .all(|l| !l.contains("egress") && !l.contains("127.0.0.3")),
        "{log}"
    );
}

#[test]
fn the_sender_domain_picks_the_pool_over_the_transport_pool() {
    let sink = PeerSink::start(Duration::ZERO);
    let (d, _files) = daemon(
        &sink,
        "source news1 127.0.0.4\nsource bulk1 127.0.0.5\npool news news1\npool bulk bulk1\n",
        "corepost_sender_egress_pool_maps = inline:{ @news.example=news }\n",
        "-o corepost_egress_pool=bulk",
    );
    send(&d, "editor@news.example", 2);
    send(&d, "someone@other.example", 2);
    let got = sink.wait_for(4, 30);
    assert_eq!(got.len(), 4, "{}", d.log());
    for g in &got {
        let want = if g.sender.ends_with("@news.example") {
            "127.0.0.4"
        } else {
            "127.0.0.5"
        };
        assert_eq!(g.peer.to_string(), want, "{g:?}");
    }
}

#[test]
fn cached_connections_never_carry_another_pools_mail() {
    let sink = PeerSink::start(Duration::ZERO);
    let (d, _files) = daemon(
        &sink,
        "source a 127.0.0.6\nsource b 127.0.0.7\npool pa a\npool pb b\n",
        "corepost_sender_egress_pool_maps = inline:{ @a.example=pa, @b.example=pb }\n",
        "",
    );
    for i in 0..6 {
        let sender = if i % 2 == 0 {
            "x@a.example"
        } else {
            "x@b.example"
        };
        send(&d, sender, 1);
    }
    let got = sink.wait_for(6, 30);
    assert_eq!(got.len(), 6, "{}", d.log());
    let mut per_connection: std::collections::HashMap<usize, Vec<&Got>> = Default::default();
    for g in &got {
        per_connection.entry(g.connection).or_default().push(g);
    }
    for (c, list) in &per_connection {
        let domains: std::collections::HashSet<&str> = list
            .iter()
            .map(|g| g.sender.split('@').nth(1).unwrap())
            .collect();
        assert_eq!(domains.len(), 1, "connection {c} carried {list:?}");
        let want = if domains.contains("a.example") {
            "127.0.0.6"
        } else {
            "127.0.0.7"
        };
        assert_eq!(list[0].peer.to_string(), want, "{list:?}");
    }
    assert!(
        per_connection.values().any(|l| l.len() > 1),
        "connections were reused: {per_connection:?}"
    );
}

#[test]
fn a_source_connection_limit_holds_per_destination() {
    let sink = PeerSink::start(Duration::from_millis(300));
    let (d, _files) = daemon(
        &sink,
        "source one 127.0.0.8 concurrency=1\nsource two 127.0.0.9 concurrency=2\npool p one:5 two:1\n",
        "smtp_connection_cache_on_demand = no\n",
        "-o corepost_egress_pool=p",
    );
    send(&d, "s@example.org", 12);
    let got = sink.wait_for(12, 40);
    assert_eq!(got.len(), 12, "{}", d.log());
    assert_eq!(sink.max_open("127.0.0.8"), 1, "{got:?}");
    assert!(sink.max_open("127.0.0.9") <= 2, "{got:?}");
    assert!(
        count(&got, "127.0.0.9") > 0,
        "the second member took the overflow"
    );
}

#[test]
fn the_warm_up_cap_spills_over_to_the_other_member_then_defers() {
    let sink = PeerSink::start(Duration::ZERO);
    let today = {
        let out = std::process::Command::new("date")
            .args(["-u", "+%F"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (d, _files) = daemon(
        &sink,
        &format!(
            "source new 127.0.0.10 warmup_start={today} warmup_daily=3\nsource old 127.0.0.11\n\
             source fresh 127.0.0.12 warmup_start={today} warmup_daily=1\n\
             pool p new:100 old:1\npool tiny fresh\n"
        ),
        "corepost_sender_egress_pool_maps = inline:{ @tiny.example=tiny }\n",
        "-o corepost_egress_pool=p",
    );
    send(&d, "s@example.org", 10);
    let got = sink.wait_for(10, 30);
    assert_eq!(got.len(), 10, "{}", d.log());
    assert_eq!(
        (count(&got, "127.0.0.10"), count(&got, "127.0.0.11")),
        (3, 7),
        "{got:?}"
    );
    // A pool whose only member is capped: the rest is deferred, never sent from elsewhere.
    send(&d, "s@tiny.example", 2);
    let deferred = wait_until(20, || {
        let log = d.log();
        log.contains("dsn=4.4.5, status=deferred (egress pool tiny: no source may send now: fresh reached its warm-up limit (1 today))")
            .then_some(log)
    });
    assert!(deferred.is_some(), "{}", d.log());
    let got = sink.wait_for(11, 2);
    assert_eq!(count(&got, "127.0.0.12"), 1, "{got:?}");
    assert_eq!(got.len(), 11, "{got:?}");
}

#[test]
fn smtp_bind_address_enforce_defers_when_the_address_is_not_local() {
    let sink = PeerSink::start(Duration::ZERO);
    // 192.0.2.77 (TEST-NET-1) is on no interface: the bind fails.
    let (enforced, _f1) = daemon(
        &sink,
        "",
        "smtp_bind_address = 192.0.2.77\nsmtp_bind_address_enforce = yes\n",
        "",
    );
    send(&enforced, "s@example.org", 1);
    let log = wait_until(20, || {
        let log = enforced.log();
        log.contains("status=deferred").then_some(log)
    })
    .unwrap_or_else(|| enforced.log());
    assert!(
        log.contains(
            "warning: smtp_connect_addr: bind 192.0.2.77: Cannot assign requested address"
        ),
        "{log}"
    );
    assert!(log.contains("]: server configuration error\n"), "{log}");
    assert!(
        log.contains("relay=none, delay=")
            && log.contains("dsn=4.4.0, status=deferred (server configuration error)"),
        "{log}"
    );
    assert!(sink.record.lock().unwrap().messages.is_empty());
    // Postfix's default: a warning, then the system's default source address.
    let (fallback, _f2) = daemon(&sink, "", "smtp_bind_address = 192.0.2.77\n", "");
    send(&fallback, "s@example.org", 1);
    let got = sink.wait_for(1, 20);
    assert_eq!(got.len(), 1, "{}", fallback.log());
    assert_eq!(got[0].peer.to_string(), "127.0.0.1");
    assert!(
        fallback.log().contains(
            "warning: smtp_connect_addr: bind 192.0.2.77: Cannot assign requested address"
        )
    );
}

#[test]
fn check_reports_pool_errors_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let egress = dir.path().join("egress.conf");
    std::fs::write(
        &egress,
        "source ok 127.0.0.2\n\nsource gone 192.0.2.9\npool p ok gone\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("corepost_egress_pools = {}\n", egress.display()),
    )
    .unwrap();
    let master = dir.path().join("master.cf");
    std::fs::write(
        &master,
        "smtp unix - - n - - smtp\npooled unix - - n - - smtp -o corepost_egress_pool=nosuch\n",
    )
    .unwrap();
    let dir_text = dir.path().display().to_string();
    let out = corepost(&["check", "-c", &dir_text]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "corepost: error: {}, line 2: transport pooled: corepost_egress_pool: unknown pool \"nosuch\" (not in {})",
            master.display(),
            egress.display()
        )),
        "{}",
        stderr(&out)
    );
    // With the pool fixed: the address no interface has. A transport's smtp_bind_address
    // no interface has is a warning (Postfix sends from the default address).
    std::fs::write(
        &master,
        "smtp unix - - n - - smtp\npooled unix - - n - - smtp -o corepost_egress_pool=p\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "corepost_egress_pools = {}\nsmtp_bind_address = 192.0.2.78\n",
            egress.display()
        ),
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir_text]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "corepost: error: {}, line 3: source \"gone\": cannot bind address 192.0.2.9: Cannot assign requested address",
            egress.display()
        )),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("corepost: warning: transport smtp: cannot bind source address 192.0.2.78: Cannot assign requested address; its mail will leave from the default address"),
        "{}",
        stderr(&out)
    );
    // A sender table naming a pool the file lacks.
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "corepost_egress_pools = {}\ncorepost_sender_egress_pool_maps = inline:{{ @x.example=nope }}\n",
            egress.display()
        ),
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir_text]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "corepost: error: corepost_sender_egress_pool_maps: inline:{{ @x.example=nope }}: unknown pool \"nope\" (not in {})",
            egress.display()
        )),
        "{}",
        stderr(&out)
    );
    // A syntax error names its line too.
    std::fs::write(&egress, "source ok 127.0.0.2\npool p ok:heavy\n").unwrap();
    let out = corepost(&["check", "-c", &dir_text]);
    assert!(
        stderr(&out).contains(&format!(
            "{}, line 2: bad weight in \"ok:heavy\"",
            egress.display()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn sender_dependent_default_transport_gives_a_sender_its_bind_address_postfix_style() {
    // Postfix's own way to a per-sender source: a transport per sender
    // (sender_dependent_default_transport_maps) with master.cf -o smtp_bind_address.
    let sink = PeerSink::start(Duration::ZERO);
    let d = Daemon::start_with_master(
        &format!(
            "relayhost = [127.0.0.1]:{}\nsender_dependent_default_transport_maps = inline:{{ @brand.example=brand }}\n",
            sink.port
        ),
        "brand unix - - n - - smtp -o smtp_bind_address=127.0.0.13 -o smtp_helo_name=brand.test\n",
    );
    send(&d, "x@brand.example", 1);
    send(&d, "x@other.example", 1);
    let got = sink.wait_for(2, 30);
    assert_eq!(got.len(), 2, "{}", d.log());
    for g in &got {
        let (peer, helo) = if g.sender == "x@brand.example" {
            ("127.0.0.13", "brand.test")
        } else {
            ("127.0.0.1", "mx.test.example")
        };
        assert_eq!(
            (g.peer.to_string().as_str(), g.helo.as_str()),
            (peer, helo),
            "{g:?}"
        );
    }
}

#[test]
fn a_reload_reads_the_egress_file_again() {
    let sink = PeerSink::start(Duration::ZERO);
    let (d, files) = daemon(
        &sink,
        "source first 127.0.0.14 helo=first.test\npool p first\n",
        "smtp_connection_cache_on_demand = no\n",
        "-o corepost_egress_pool=p",
    );
    send(&d, "s@example.org", 1);
    let got = sink.wait_for(1, 20);
    assert_eq!(got.len(), 1, "{}", d.log());
    assert_eq!(
        (got[0].peer.to_string().as_str(), got[0].helo.as_str()),
        ("127.0.0.14", "first.test")
    );
    std::fs::write(
        files.path().join("egress.conf"),
        "source second 127.0.0.15 helo=second.test\npool p second\n",
    )
    .unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(10, || d.log().contains("reload -- version").then_some(()))
        .unwrap_or_else(|| panic!("no reload:\n{}", d.log()));
    send(&d, "s@example.org", 1);
    let got = sink.wait_for(2, 20);
    assert_eq!(got.len(), 2, "{}", d.log());
    assert_eq!(
        (got[1].peer.to_string().as_str(), got[1].helo.as_str()),
        ("127.0.0.15", "second.test")
    );
}

#[test]
fn the_destination_policy_holds_across_its_pools() {
    let sink = PeerSink::start(Duration::ZERO);
    let (d, _files) = daemon(
        &sink,
        "source a 127.0.0.16\nsource b 127.0.0.17\npool pa a\npool pb b\n",
        &format!(
            "corepost_sender_egress_pool_maps = inline:{{ @a.example=pa, @b.example=pb }}\n\
             corepost_destination_policy_maps = inline:{{ {{ [127.0.0.1]:{}=concurrency=2 rate=4/s }} }}\n",
            sink.port
        ),
        "",
    );
    for i in 0..8 {
        send(
            &d,
            if i % 2 == 0 {
                "x@a.example"
            } else {
                "x@b.example"
            },
            1,
        );
    }
    let got = sink.wait_for(8, 30);
    assert_eq!(got.len(), 8, "{}", d.log());
    assert_eq!(
        (count(&got, "127.0.0.16"), count(&got, "127.0.0.17")),
        (4, 4)
    );
    // 8 messages at 4/s for the destination as a whole (not 4/s per pool): the last at
    // least 1.75 s after the first.
    let first = got.iter().map(|g| g.at).min().unwrap();
    let last = got.iter().map(|g| g.at).max().unwrap();
    assert!(
        last - first >= Duration::from_millis(1600),
        "{:?}",
        last - first
    );
    assert!(sink.record.lock().unwrap().max_open_total <= 2);
}
