//! Faults an operator meets outside the happy path (issue 17): a start
//! that cannot work must say why, and damage must be visible.

mod support;

use std::process::Command;
use support::*;

fn write_config(dir: &std::path::Path, port: u16) {
    std::fs::write(
        dir.join("main.cf"),
        format!(
            "myhostname = mx.test.example\nqueue_directory = {0}/spool\nmail_owner = root\n\
             corepost_cores = 2\nalias_maps =\nalias_database =\nmaillog_file = {0}/maillog\nmaillog_file_prefixes = /\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\nsmtp unix - - n - - smtp\n"),
    )
    .unwrap();
}

/// With a locked-memory limit too small for the io_uring rings (common in
/// containers), `run` names the cause and the fix instead of only "a core
/// did not start".
#[test]
fn a_low_memlock_limit_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), free_port());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 64 && exec timeout 20 {} run -c {}",
            corepost_bin().display(),
            dir.path().display()
        ))
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("RLIMIT_MEMLOCK") && err.contains("ulimit -l"),
        "stderr: {err}"
    );
}

/// The X-Seq numbers the sink received, and how many messages in all.
fn received(sink: &Sink) -> (std::collections::HashSet<usize>, usize) {
    let got = sink.snapshot();
    let seen = got
        .messages
        .iter()
        .filter_map(|m| {
            let t = String::from_utf8_lossy(&m.2).into_owned();
            t.split("X-Seq: ")
                .nth(1)?
                .split("\r\n")
                .next()?
                .parse()
                .ok()
        })
        .collect();
    (seen, got.messages.len())
}

/// Send numbered messages from `first` on until the daemon goes away;
/// the numbers it acknowledged with 250.
fn send_until_killed(port: u16, first: usize) -> Vec<usize> {
    let mut acked = Vec::new();
    let mut c = Raw::connect(port);
    if c.try_cmd("EHLO load.test").is_none() {
        return acked;
    }
    let filler = "x".repeat(1500);
    for i in first..first + 5000 {
        let ok = |r: Option<String>, code: &str| r.is_some_and(|r| r.starts_with(code));
        if !ok(c.try_cmd("MAIL FROM:<a@example.org>"), "250")
            || !ok(c.try_cmd("RCPT TO:<x@remote.example>"), "250")
            || !ok(c.try_cmd("DATA"), "354")
            || !c.try_send(
                format!("Subject: n{i}\r\nX-Seq: {i}\r\n\r\n{filler}\r\n.\r\n").as_bytes(),
            )
        {
            break;
        }
        if c.reply().starts_with("250 2.0.0 Ok: queued as") {
            acked.push(i);
        } else {
            break;
        }
    }
    acked
}

/// kill -9 under load, a few times, toward a slow next hop and with small
/// segments (so compaction copies messages that are being delivered):
/// every message acknowledged with 250 arrives, and recovered mail goes
/// out within a minute without `queue flush` (issue 17: compaction used to
/// persist the queue manager's one-hour lease as the next attempt; the
/// deterministic check of that is `spool/tests/lifecycle.rs`
/// `a_lease_is_never_copied_into_a_compacted_record`).
#[test]
fn acknowledged_mail_survives_a_kill_loop_and_is_not_held_back() {
    let sink = Sink::start_slow(std::time::Duration::from_millis(15));
    let mut d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n\
         corepost_segment_size = 65536\n",
        sink.port
    ));
    let cycles = 3;
    let mut acked = Vec::new();
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    for cycle in 0..cycles {
        let port = d.port;
        let first = cycle * 10_000;
        let senders: Vec<_> = (0..4)
            .map(|k| std::thread::spawn(move || send_until_killed(port, first + k * 2500)))
            .collect();
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        std::thread::sleep(std::time::Duration::from_millis(300 + (seed >> 33) % 500));
        d.kill();
        for s in senders {
            acked.extend(s.join().unwrap());
        }
        d.spawn();
    }
    let started = std::time::Instant::now();
    let missing = loop {
        let (seen, _) = received(&sink);
        let missing: Vec<usize> = acked
            .iter()
            .copied()
            .filter(|i| !seen.contains(i))
            .collect();
        if missing.is_empty() || started.elapsed() > std::time::Duration::from_secs(60) {
            break missing;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    let (seen, total) = received(&sink);
    eprintln!(
        "{cycles} kill -9 cycles: {} acknowledged, {} delivered, {} duplicates, {} lost, drained in {:?}",
        acked.len(),
        seen.len(),
        total.saturating_sub(seen.len()),
        missing.len(),
        started.elapsed()
    );
    assert!(!acked.is_empty());
    assert!(
        missing.is_empty(),
        "{} acknowledged messages not delivered within a minute: {:?}...\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        d.log()
    );
}
