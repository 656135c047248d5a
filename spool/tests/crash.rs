//! Crash test: a child process appends messages and prints the queue id of
//! every message whose `durable()` resolved; the parent SIGKILLs it at a
//! random moment, recovers the spool, and checks that every acknowledged
//! message is there with its content. Repeated many times on the same spool
//! directory, so recovery also runs over the debris of earlier kills.

mod common;

use common::*;
use corepost_spool::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SEG: usize = 256 * 1024;
const CHILD_ENV: &str = "COREPOST_SPOOL_CRASH_CHILD";

/// The child: runs only when the parent sets the environment variable.
#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (mut spool, _) = open(std::path::Path::new(&dir), 0, 1, SEG);
    let mut n = 0usize;
    loop {
        // Several appends in flight per flush, as under real load.
        let batch: Vec<(QueueId, Lsn)> = (0..8)
            .map(|i| {
                n += 1;
                let id = spool.new_queue_id();
                let len = 200 + (n * 977 + i * 131) % 6000;
                let a = spool
                    .append_message(&envelope(id, 1), &content_for(id, len))
                    .unwrap();
                (id, a.lsn)
            })
            .collect();
        for (id, lsn) in &batch {
            spool.durable(*lsn).wait().unwrap();
            println!("{id}");
        }
        // Finish some older messages, so reclamation and outcomes are in
        // the log as well.
        if n.is_multiple_of(64) {
            let due: Vec<QueueId> = spool.index().due(u64::MAX).take(16).collect();
            for id in due {
                // Announced before the outcome is written: a kill between
                // the write and the "done" line must not make the parent
                // expect a message that was, in fact, finished.
                println!("finishing {id}");
                spool
                    .record_outcome(&outcome(id, 0, OutcomeKind::Delivered))
                    .unwrap();
                println!("done {id}");
            }
            spool.reclaim().unwrap();
        }
    }
}

#[test]
fn acknowledged_messages_survive_sigkill() {
    let root = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut acked: Vec<QueueId> = Vec::new();
    let mut finished: std::collections::HashSet<QueueId> = Default::default();
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let started = Instant::now();
    let mut rounds = 0;
    while rounds < 12 && started.elapsed() < Duration::from_secs(60) {
        rounds += 1;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let run_for = Duration::from_millis(20 + rng % 300);
        let mut child = Command::new(&exe)
            .args(["crash_child", "--exact", "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, root.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut lines = Vec::new();
            for line in BufReader::new(stdout).lines() {
                match line {
                    Ok(l) => lines.push(l),
                    Err(_) => break,
                }
            }
            lines
        });
        std::thread::sleep(run_for);
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        for line in reader.join().unwrap() {
            if let Some(id) = line
                .strip_prefix("done ")
                .or_else(|| line.strip_prefix("finishing "))
            {
                if let Ok(id) = id.parse() {
                    finished.insert(id);
                }
            } else if let Ok(id) = line.parse::<QueueId>() {
                acked.push(id);
            }
        }
        let (spool, report) = open(root.path(), 0, 1, SEG);
        for id in &acked {
            if finished.contains(id) {
                continue;
            }
            let stored = spool.read(id).unwrap();
            assert!(
                stored.is_some(),
                "round {rounds}: acknowledged {id} lost; {report:?}"
            );
            let content = stored.unwrap();
            let expected = format!("Message-ID: <{id}@test>\r\n");
            assert!(
                content.content().starts_with(expected.as_bytes()),
                "round {rounds}: {id} content damaged"
            );
        }
        spool.close().unwrap();
    }
    assert!(
        acked.len() > 100,
        "the child acknowledged only {} messages",
        acked.len()
    );
    eprintln!(
        "{rounds} kills, {} acknowledged messages checked",
        acked.len()
    );
}
