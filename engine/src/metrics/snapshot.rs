//! The sum of every slot at scrape time, plus what is read only then (maildrop files,
//! group-commit statistics, the delivery helper's state).

use super::Metrics;
use super::slot::{COUNTERS, DestCounts, FailureKey, RejectKey, Slot};
use corepost_spool::flush::SYNC_BUCKETS_MICROS;
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

/// The queue's sizes, summed over the cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Queue {
    pub messages: u64,
    pub held: u64,
    pub active: u64,
    pub deferred: u64,
    pub live_bytes: u64,
    pub segment_bytes: u64,
}

/// Group commits, summed over the cores' flushers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Syncs {
    pub count: u64,
    pub micros: u64,
    /// Per bucket of `SYNC_BUCKETS_MICROS` (and one past it), not cumulative.
    pub buckets: Vec<u64>,
}

/// Every value, summed.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub counters: Vec<u64>,
    /// Open sessions per core.
    pub sessions: Vec<u64>,
    /// (transport, destination) → counts.
    pub deliveries: BTreeMap<(String, String), DestCounts>,
    pub rejects: BTreeMap<RejectKey, u64>,
    /// (status, bounce class) → recipients.
    pub failures: BTreeMap<FailureKey, u64>,
    /// (egress pool, source, status) → recipients.
    pub egress: BTreeMap<(String, String, &'static str), u64>,
    pub queue: Queue,
    /// Files in the maildrop; `None` when it cannot be read.
    pub maildrop: Option<u64>,
    pub syncs: Syncs,
    /// `Some(up)` when the daemon runs with a delivery helper.
    pub helper_up: Option<bool>,
    /// Each shaping group seen (`corepost_shaping_files`), read from the process-wide state.
    pub shaping: Vec<crate::shaping::state::Report>,
}

impl Snapshot {
    pub fn collect(m: &Metrics) -> Snapshot {
        let mut s = Snapshot {
            counters: vec![0; COUNTERS],
            syncs: Syncs {
                buckets: vec![0; SYNC_BUCKETS_MICROS.len() + 1],
                ..Syncs::default()
            },
            ..Snapshot::default()
        };
        for core in m.cores.iter() {
            s.add_slot(core);
            let (started, ended) = (
                core.get(super::Counter::SessionsStarted as usize),
                core.get(super::Counter::SessionsEnded as usize),
            );
            s.sessions.push(started.saturating_sub(ended));
            let q = &core.queue;
            let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
            s.queue.messages += load(&q.messages);
            s.queue.held += load(&q.held);
            s.queue.active += load(&q.active);
            s.queue.deferred += load(&q.deferred);
            s.queue.live_bytes += load(&q.live_bytes);
            s.queue.segment_bytes += load(&q.segment_bytes);
        }
        s.add_slot(&m.shared);
        for stats in m
            .spools
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .flatten()
        {
            s.syncs.count += stats.syncs.load(Ordering::Relaxed);
            s.syncs.micros += stats.micros.load(Ordering::Relaxed);
            for (sum, b) in s.syncs.buckets.iter_mut().zip(&stats.buckets) {
                *sum += b.load(Ordering::Relaxed);
            }
        }
        s.maildrop = count_maildrop(&m.queue_dir.join("maildrop"));
        s.helper_up = crate::delivery::helper::status_line().map(|l| l == "running");
        s.shaping = crate::shaping::state::reports();
        s
    }

    fn add_slot(&mut self, slot: &Slot) {
        for (i, sum) in self.counters.iter_mut().enumerate() {
            *sum += slot.get(i);
        }
        let labelled = slot.labelled();
        for (transport, by_dest) in &labelled.deliveries {
            for (dest, counts) in by_dest {
                self.deliveries
                    .entry((transport.to_string(), dest.to_string()))
                    .or_default()
                    .add(counts);
            }
        }
        for (key, n) in &labelled.rejects {
            *self.rejects.entry(*key).or_default() += n;
        }
        for (key, n) in &labelled.failures {
            *self.failures.entry(*key).or_default() += n;
        }
        for ((pool, source, status), n) in &labelled.egress {
            *self
                .egress
                .entry((pool.to_string(), source.to_string(), status))
                .or_default() += n;
        }
    }

    pub(crate) fn counter(&self, c: super::Counter) -> u64 {
        self.counters[c as usize]
    }
}

/// Submissions waiting in the maildrop: its files not starting with a dot (`sendmail`
/// writes `.name.tmp` and renames it).
fn count_maildrop(dir: &std::path::Path) -> Option<u64> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count() as u64,
    )
}

/// The SMTP command of a rejection, from a fixed set (bounded label values).
pub(crate) fn command_label(command: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "CONNECT",
        "HELO",
        "EHLO",
        "MAIL",
        "RCPT",
        "VRFY",
        "DATA",
        "BDAT",
        "END-OF-MESSAGE",
        "ETRN",
        "AUTH",
    ];
    KNOWN
        .iter()
        .find(|k| k.eq_ignore_ascii_case(command))
        .copied()
        .unwrap_or("other")
}

/// The reason class of an enhanced status code: its subject (RFC 3463 §3), e.g. `5.7.1`
/// (relay access denied, an access table's REJECT) is "policy", `5.1.1` (unknown user)
/// "address".
pub(crate) fn reason_class(status: &str) -> &'static str {
    let mut parts = status.split('.');
    let well_formed = matches!(parts.next(), Some("2" | "4" | "5")) && parts.clone().count() == 2;
    if !well_formed {
        return "other";
    }
    match parts.next() {
        Some("1") => "address",
        Some("2") => "mailbox",
        Some("3") => "system",
        Some("4") => "network",
        Some("5") => "protocol",
        Some("6") => "content",
        Some("7") => "policy",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::super::slot::{Counter, Mode};
    use super::*;

    #[test]
    fn cores_and_shared_slot_are_summed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("maildrop")).unwrap();
        std::fs::write(dir.path().join("maildrop/abc"), "x").unwrap();
        std::fs::write(dir.path().join("maildrop/.def.tmp"), "x").unwrap();
        let m = Metrics::new(2, dir.path());
        m.cores[0].add(Counter::ReceivedSmtpd, 2, Mode::Owner);
        m.cores[1].add(Counter::ReceivedSmtpd, 3, Mode::Owner);
        m.shared.add(Counter::ReceivedSmtpd, 1, Mode::Shared);
        m.cores[1].add(Counter::SessionsStarted, 4, Mode::Owner);
        m.cores[1].add(Counter::SessionsEnded, 1, Mode::Owner);
        for core in [&m.cores[0], &m.cores[1]] {
            core.destination("smtp", "other", |c| c.sent += 2);
            core.reject(("RCPT", "address", "permanent"));
        }
        m.cores[0].destination("smtp", "gmail.com", |c| c.connections_ok += 1);
        m.cores[1]
            .queue
            .deferred
            .store(7, std::sync::atomic::Ordering::Relaxed);
        let s = Snapshot::collect(&m);
        assert_eq!(s.counter(Counter::ReceivedSmtpd), 6);
        assert_eq!(s.sessions, vec![0, 3]);
        assert_eq!(s.deliveries[&("smtp".into(), "other".into())].sent, 4);
        assert_eq!(
            s.deliveries[&("smtp".into(), "gmail.com".into())].connections_ok,
            1
        );
        assert_eq!(s.rejects[&("RCPT", "address", "permanent")], 2);
        assert_eq!(s.queue.deferred, 7);
        assert_eq!(s.maildrop, Some(1));
    }

    #[test]
    fn destinations_past_the_bound_are_other() {
        let slot = Slot::default();
        for i in 0..super::super::slot::MAX_DESTINATIONS + 10 {
            slot.destination("smtp", &format!("d{i}.example"), |c| c.sent += 1);
        }
        // A destination seen before the bound keeps its label.
        slot.destination("smtp", "d0.example", |c| c.sent += 1);
        let labelled = slot.labelled();
        let smtp = &labelled.deliveries["smtp"];
        assert_eq!(smtp.len(), super::super::slot::MAX_DESTINATIONS);
        assert_eq!(smtp["d0.example"].sent, 2);
        let total: u64 = smtp.values().map(|c| c.sent).sum();
        assert_eq!(total, super::super::slot::MAX_DESTINATIONS as u64 + 11);
        assert!(smtp["other"].sent >= 10);
    }

    #[test]
    fn labels_are_bounded() {
        assert_eq!(command_label("rcpt"), "RCPT");
        assert_eq!(command_label("XYZZY"), "other");
        assert_eq!(reason_class("5.7.1"), "policy");
        assert_eq!(reason_class("4.1.1"), "address");
        assert_eq!(reason_class(""), "other");
        assert_eq!(reason_class("Error:"), "other");
        assert_eq!(reason_class("5.6"), "other");
    }
}
