use super::*;
use std::time::Instant;

/// A throwaway redis-server on a free loopback port (no persistence);
/// killed when dropped.
struct RedisServer {
    child: std::process::Child,
    port: u16,
}

impl RedisServer {
    fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server (apt-get install redis-server)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        RedisServer { child, port }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn settings(port: u16, prefix: &str) -> ClusterSettings {
    ClusterSettings {
        redis: Some(format!("redis://127.0.0.1:{port}")),
        node_count: 2,
        timeout: Duration::from_millis(500),
        lease_time: Duration::from_secs(3),
        key_prefix: prefix.into(),
    }
}

/// A link of its own (not the process-wide one `shared` hands out).
fn link(settings: &ClusterSettings) -> Cluster {
    let (tx, rx) = flume::bounded(QUEUE);
    Cluster {
        settings: settings.clone(),
        url: settings.redis.clone().unwrap_or_default(),
        shown: settings.redis.clone().unwrap_or_default(),
        tx,
        rx: std::sync::Mutex::new(Some(rx)),
        health: Arc::new(Health::default()),
        next_member: AtomicU64::new(0),
        nonce: 7,
    }
}

fn run<T>(f: impl std::future::Future<Output = T>) -> T {
    glommio::LocalExecutorBuilder::default()
        .make()
        .expect("executor")
        .run(f)
}

fn wait_of(a: Result<Answer, String>) -> Duration {
    match a {
        Ok(Answer::Wait(w)) => w,
        other => panic!("{other:?}"),
    }
}

#[test]
fn paced_slots_are_shared_by_two_links() {
    let redis = RedisServer::start();
    let s = settings(redis.port, "t1");
    let (a, b) = (link(&s), link(&s));
    run(async {
        let key = a.key("rate", "smtp", "Example.COM");
        assert_eq!(key, "t1:rate:smtp:example.com");
        let interval = Duration::from_millis(100);
        let ask = || Ask::Pace {
            key: key.clone(),
            interval,
        };
        // Two nodes asking in turn get consecutive slots, one interval apart
        // on Redis's clock. Redis reads its clock somewhere between sending
        // and answering, so each slot lies in [sent + wait, answered + wait].
        let mut slots = Vec::new();
        for link in [&a, &b, &a] {
            let sent = Instant::now();
            let wait = wait_of(link.ask(ask()).await);
            slots.push((sent + wait, Instant::now() + wait, wait));
        }
        assert_eq!(slots[0].2, Duration::ZERO, "the first slot is now");
        for w in slots.windows(2) {
            let ((early0, late0, _), (early1, late1, _)) = (w[0], w[1]);
            assert!(late1 - early0 >= interval, "{:?}", late1 - early0);
            assert!(early1.saturating_duration_since(late0) <= interval);
        }
    });
}

#[test]
fn leases_count_across_links_and_expire() {
    let redis = RedisServer::start();
    let s = settings(redis.port, "t2");
    let (a, b) = (link(&s), link(&s));
    run(async {
        let key = a.key("conns", "smtp", "example.com");
        let lease = |member: &str| Ask::Lease {
            key: key.clone(),
            member: member.into(),
            limit: 2,
            lifetime: Duration::from_secs(3),
        };
        assert_eq!(a.ask(lease("a1")).await, Ok(Answer::Granted(true)));
        assert_eq!(b.ask(lease("b1")).await, Ok(Answer::Granted(true)));
        assert_eq!(b.ask(lease("b2")).await, Ok(Answer::Granted(false)));
        // A release frees a place (told, not awaited: the next request on
        // the same link comes after it).
        b.tell(Ask::Release {
            key: key.clone(),
            member: "b1".into(),
        });
        assert_eq!(b.ask(lease("b2")).await, Ok(Answer::Granted(true)));
        // A crashed node's lease (a1, never renewed) expires; b2, renewed,
        // does not.
        glommio::timer::sleep(Duration::from_secs(2)).await;
        let renew = Ask::Renew {
            key: key.clone(),
            member: "b2".into(),
            lifetime: Duration::from_secs(3),
        };
        assert_eq!(b.ask(renew).await, Ok(Answer::Granted(true)));
        glommio::timer::sleep(Duration::from_millis(1500)).await;
        assert_eq!(b.ask(lease("b3")).await, Ok(Answer::Granted(true)));
        assert_eq!(a.ask(lease("a2")).await, Ok(Answer::Granted(false)));
    });
}

#[test]
fn an_unreachable_server_fails_fast_and_is_logged_once() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let c = link(&settings(port, "t3"));
    run(async {
        let ask = || Ask::Pace {
            key: "t3:rate:smtp:x".into(),
            interval: Duration::from_millis(10),
        };
        let t = Instant::now();
        assert!(c.ask(ask()).await.is_err());
        // Now known to be down: no waiting at all.
        glommio::timer::sleep(Duration::from_millis(50)).await;
        assert!(c.health.is_down());
        assert!(c.ask(ask()).await.is_err());
        assert!(
            t.elapsed() < Duration::from_millis(900),
            "{:?}",
            t.elapsed()
        );
    });
    let first = c.health.note_failure("redis://x", "", 2);
    // The thread's reason (the refused connection) when the caller has none.
    assert!(
        first
            .as_deref()
            .is_some_and(|l| l.starts_with("warning: shared throttle: redis://x: ")
                && l.contains("refused")
                && l.ends_with("using this node's share of each limit (1/2)")),
        "{first:?}"
    );
    assert_eq!(c.health.note_failure("redis://x", "again", 2), None);
    assert!(c.health.note_success("redis://x").is_some());
    assert_eq!(c.health.note_success("redis://x"), None);
}

#[test]
fn passwords_stay_out_of_the_log() {
    assert_eq!(
        redacted("redis://user:s3cret@10.0.0.1:6379/2"),
        "redis://***@10.0.0.1:6379/2"
    );
    assert_eq!(redacted("redis://:s3cret@host"), "redis://***@host");
    assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    assert_eq!(
        redacted("redis+unix:///run/redis.sock"),
        "redis+unix:///run/redis.sock"
    );
}

#[test]
fn settings_are_checked() {
    let config = |extra: &str| {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("main.cf"), extra).expect("main.cf");
        std::fs::write(dir.path().join("master.cf"), "").expect("master.cf");
        let c = corepost_config::Config::load(dir.path()).expect("load");
        ClusterSettings::from_config(&c)
    };
    let s = config("").expect("defaults");
    assert_eq!(s.redis, None);
    assert_eq!(s.node_count, 1);
    assert_eq!(s.timeout, Duration::from_millis(200));
    assert_eq!(s.lease_time, Duration::from_secs(30));
    let s = config("corepost_shared_throttle_redis = redis://10.0.0.1:6379/2\ncorepost_cluster_node_count = 3\n")
        .expect("valid");
    assert_eq!(s.redis.as_deref(), Some("redis://10.0.0.1:6379/2"));
    assert_eq!(s.node_count, 3);
    assert!(config("corepost_shared_throttle_redis = 10.0.0.1:6379\n").is_err());
    assert!(config("corepost_cluster_node_count = 0\n").is_err());
    assert!(config("corepost_shared_throttle_timeout_ms = 0\n").is_err());
    assert!(Cluster::shared(&s).is_some());
}

#[test]
fn a_renewal_restores_a_lease_redis_lost() {
    let redis = RedisServer::start();
    let c = link(&settings(redis.port, "t4"));
    run(async {
        let key = c.key("conns", "smtp", "example.com");
        let lease = |member: &str| Ask::Lease {
            key: key.clone(),
            member: member.into(),
            limit: 1,
            lifetime: Duration::from_secs(3),
        };
        assert_eq!(c.ask(lease("x1")).await, Ok(Answer::Granted(true)));
        // As after a Redis restart: the set no longer holds x1.
        c.tell(Ask::Release {
            key: key.clone(),
            member: "x1".into(),
        });
        let renew = Ask::Renew {
            key: key.clone(),
            member: "x1".into(),
            lifetime: Duration::from_secs(3),
        };
        assert_eq!(c.ask(renew).await, Ok(Answer::Granted(true)));
        // x1's connection counts again: no place for another.
        assert_eq!(c.ask(lease("x2")).await, Ok(Answer::Granted(false)));
    });
}
