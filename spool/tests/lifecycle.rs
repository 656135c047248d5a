//! The spool's life: appends, outcomes, restarts, reclamation, compaction
//! and adoption of another core's directory.

mod common;

use common::*;
use corepost_spool::*;

const SEG: usize = 64 * 1024;

#[test]
fn messages_survive_restart_with_their_state() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let a = append(&mut spool, 3, 1000);
    let b = append(&mut spool, 1, 500);
    let c = append(&mut spool, 1, 500);
    spool
        .record_outcome(&outcome(a, 1, OutcomeKind::Delivered))
        .unwrap();
    spool
        .record_outcome(&outcome(
            a,
            0,
            OutcomeKind::Deferred {
                next_attempt: 12345,
            },
        ))
        .unwrap();
    spool
        .record_outcome(&outcome(b, 0, OutcomeKind::Bounced))
        .unwrap();
    let (_, lsn) = spool.admin(c, AdminAction::Hold).unwrap();
    spool.durable(lsn).wait().unwrap();
    spool.close().unwrap();

    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert!(
        report.skipped.is_empty() && report.truncated.is_empty(),
        "{report:?}"
    );
    assert_eq!(report.messages, 2);
    let entry = spool.index().get(&a).unwrap();
    assert_eq!(entry.pending.iter().collect::<Vec<_>>(), vec![0, 2]);
    assert_eq!(entry.next_attempt, 12345);
    assert!(spool.index().get(&b).is_none());
    assert!(spool.index().get(&c).unwrap().held);
    let stored = spool.read(&a).unwrap().unwrap();
    assert_eq!(stored.content(), &content_for(a, 1000)[..]);
    assert_eq!(stored.envelope.recipients.len(), 3);
    // New ids sort after every recovered one.
    let mut spool = spool;
    assert!(spool.new_queue_id() > c);
}

#[test]
fn finished_segments_are_deleted_oldest_first() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let ids: Vec<QueueId> = (0..60).map(|_| append(&mut spool, 1, 4000)).collect();
    for id in &ids {
        spool
            .record_outcome(&outcome(*id, 0, OutcomeKind::Delivered))
            .unwrap();
    }
    let before = spool.segment_count();
    assert!(before >= 4, "{before} segments");
    let report = spool.reclaim().unwrap();
    assert_eq!(report.deleted, before - 1, "all but the active segment go");
    assert_eq!(spool.segment_count(), 1);
    let segments = std::fs::read_dir(root.path().join("core-0"))
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_str().unwrap().starts_with("seg-")
        })
        .count();
    assert_eq!(segments, 1);
    spool.close().unwrap();
    let (spool, _) = open(root.path(), 0, 1, SEG);
    assert!(spool.index().is_empty());
}

#[test]
fn long_deferred_message_is_compacted_out_of_an_old_segment() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let pinned = append(&mut spool, 2, 3000);
    spool
        .record_outcome(&outcome(pinned, 1, OutcomeKind::Delivered))
        .unwrap();
    spool
        .record_outcome(&outcome(
            pinned,
            0,
            OutcomeKind::Deferred { next_attempt: 999 },
        ))
        .unwrap();
    spool.admin(pinned, AdminAction::Hold).unwrap();
    let others: Vec<QueueId> = (0..40).map(|_| append(&mut spool, 1, 4000)).collect();
    for id in &others {
        spool
            .record_outcome(&outcome(*id, 0, OutcomeKind::Delivered))
            .unwrap();
    }
    let first_segment = spool.index().get(&pinned).unwrap().location.segment;
    let report = spool.reclaim().unwrap();
    assert!(report.moved >= 1, "{report:?}");
    // The copy must be durable before the old segment can go.
    let lsn_now = {
        let (_, lsn) = spool.admin(pinned, AdminAction::Hold).unwrap();
        lsn
    };
    spool.durable(lsn_now).wait().unwrap();
    spool.reclaim().unwrap();
    assert!(
        spool.segment(first_segment).is_none(),
        "old segment deleted"
    );
    assert_ne!(
        spool.index().get(&pinned).unwrap().location.segment,
        first_segment
    );
    spool.close().unwrap();

    let (spool, _) = open(root.path(), 0, 1, SEG);
    let entry = spool.index().get(&pinned).expect("still queued");
    assert_eq!(entry.pending.iter().collect::<Vec<_>>(), vec![0]);
    assert_eq!(entry.next_attempt, 999);
    assert!(entry.held);
    let stored = spool.read(&pinned).unwrap().unwrap();
    assert_eq!(stored.content(), &content_for(pinned, 3000)[..]);
    assert_eq!(
        stored.envelope.recipients[1].state,
        RecipientState::Finished
    );
    assert_eq!(spool.index().len(), 1);
}

/// A queue manager's lease is memory: a message compacted while it is
/// leased (being delivered) comes back after a crash with its recorded next
/// attempt, not with the lease as if it were a retry time (issue 17: after
/// kill -9, recovered mail waited an hour).
#[test]
fn a_lease_is_never_copied_into_a_compacted_record() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let leased = append(&mut spool, 1, 3000);
    let lease_until = 3_600_000_000;
    spool.lease(&leased, lease_until);
    assert_eq!(
        spool.index().due(lease_until - 1).count(),
        0,
        "leased: not due"
    );
    let others: Vec<QueueId> = (0..40).map(|_| append(&mut spool, 1, 4000)).collect();
    for id in &others {
        spool
            .record_outcome(&outcome(*id, 0, OutcomeKind::Delivered))
            .unwrap();
    }
    let report = spool.reclaim().unwrap();
    assert!(report.moved >= 1, "{report:?}");
    // Still leased in memory after the move.
    assert_eq!(spool.index().due(lease_until - 1).count(), 0);
    assert_eq!(spool.index().due(lease_until).count(), 1);
    let (_, lsn) = spool.admin(leased, AdminAction::Release).unwrap();
    spool.durable(lsn).wait().unwrap();
    drop(spool); // a crash: no orderly close

    let (spool, _) = open(root.path(), 0, 1, SEG);
    let entry = spool.index().get(&leased).expect("still queued");
    assert_eq!(entry.next_attempt, 0, "the lease leaked into the spool");
    assert_eq!(spool.index().due(1).collect::<Vec<_>>(), vec![leased]);
}

#[test]
fn a_removed_core_is_adopted() {
    let root = tempfile::tempdir().unwrap();
    let (mut core1, _) = open(root.path(), 1, 2, SEG);
    let a = append(&mut core1, 2, 2000);
    let b = append(&mut core1, 1, 2000);
    core1
        .record_outcome(&outcome(a, 0, OutcomeKind::Delivered))
        .unwrap();
    let (_, lsn) = core1
        .record_outcome(&outcome(b, 0, OutcomeKind::Delivered))
        .unwrap();
    let c = append(&mut core1, 1, 100);
    core1.durable(lsn).wait().unwrap();
    core1.close().unwrap();

    // Now run with one core: core 0 takes over core-1.
    let (core0, report) = open(root.path(), 0, 1, SEG);
    assert_eq!(report.adopted, vec![root.path().join("core-1")]);
    assert!(!root.path().join("core-1").exists());
    assert_eq!(core0.index().len(), 2);
    assert_eq!(
        core0
            .index()
            .get(&a)
            .unwrap()
            .pending
            .iter()
            .collect::<Vec<_>>(),
        vec![1]
    );
    assert!(core0.index().get(&b).is_none());
    assert_eq!(
        core0.read(&c).unwrap().unwrap().content(),
        &content_for(c, 100)[..]
    );
    core0.close().unwrap();
    let (core0, report) = open(root.path(), 0, 1, SEG);
    assert!(report.adopted.is_empty());
    assert_eq!(core0.index().len(), 2);
}

#[test]
fn a_message_larger_than_a_segment_gets_its_own() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let small = append(&mut spool, 1, 100);
    let big = append(&mut spool, 1, 3 * SEG);
    let after = append(&mut spool, 1, 100);
    spool.close().unwrap();
    let (spool, _) = open(root.path(), 0, 1, SEG);
    for (id, len) in [(small, 100), (big, 3 * SEG), (after, 100)] {
        assert_eq!(
            spool.read(&id).unwrap().unwrap().content(),
            &content_for(id, len)[..]
        );
    }
}

#[test]
fn readers_on_other_threads_share_the_mapping() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let id = spool.new_queue_id();
    let appended = spool
        .append_message(&envelope(id, 1), &content_for(id, 2000))
        .unwrap();
    let segment = appended.segment.clone();
    let offset = appended.location.offset as usize;
    let content =
        std::thread::spawn(move || read_message(&segment, offset).unwrap().content().to_vec())
            .join()
            .unwrap();
    assert_eq!(content, content_for(id, 2000));
}

#[test]
fn bad_options_are_refused() {
    let root = tempfile::tempdir().unwrap();
    assert!(CoreSpool::open(root.path(), 0, 1, options(1000)).is_err());
    assert!(CoreSpool::open(root.path(), 2, 2, options(SEG)).is_err());
}

#[test]
fn an_unreadable_segment_is_set_aside_and_reported() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let a = append(&mut spool, 1, 100);
    spool.close().unwrap();
    let seg = root.path().join("core-0/seg-0000000000000001.log");
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[3] ^= 0xff; // break the segment magic
    std::fs::write(&seg, &bytes).unwrap();

    let (mut spool, report) = open(root.path(), 0, 1, SEG);
    assert_eq!(report.skipped.len(), 1, "{report:?}");
    assert!(
        report.skipped[0].contains("not a corepost spool segment"),
        "{report:?}"
    );
    assert!(
        root.path()
            .join("core-0/seg-0000000000000001.log.damaged")
            .exists()
    );
    assert!(spool.index().get(&a).is_none());
    let b = append(&mut spool, 1, 100);
    spool.close().unwrap();
    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(spool.index().get(&b).is_some());
}

#[test]
fn rolls_use_the_spare_segment_prepared_in_the_background() {
    use std::time::{Duration, Instant};
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("core-0");
    let ready = dir.join("spare.ready");
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let mut ids = Vec::new();
    // Fill the first segment past half: the spare is asked for.
    while !ready.exists() {
        ids.push(append(&mut spool, 1, 3000));
        assert!(ids.len() < 200, "no spare appeared");
        if ids.len() > 12 {
            let deadline = Instant::now() + Duration::from_secs(10);
            while !ready.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
    assert_eq!(std::fs::metadata(&ready).unwrap().len(), SEG as u64);
    let before = spool.segment_count();
    while spool.segment_count() == before {
        ids.push(append(&mut spool, 1, 3000));
    }
    assert!(!ready.exists(), "the roll took the spare");
    for id in &ids {
        let stored = spool.read(id).unwrap().unwrap();
        assert_eq!(stored.content(), &content_for(*id, 3000)[..]);
    }
    spool.close().unwrap();
    // A spare left over from a run is removed at the next open, and
    // recovery finds every message in the segments made from spares.
    std::fs::write(&ready, b"leftover").unwrap();
    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert_eq!(report.messages, ids.len());
    assert!(!ready.exists());
    spool.close().unwrap();
}

/// A segment file cut short from outside (not a crash's torn tail: every
/// segment is made at full size) is reported as damage that may have lost
/// mail, and the records before the cut are kept.
#[test]
fn a_cut_segment_is_reported_as_damage() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let ids: Vec<QueueId> = (0..10).map(|_| append(&mut spool, 1, 2000)).collect();
    let seg = spool.index().get(&ids[0]).unwrap().location;
    let cut_at = spool.index().get(&ids[5]).unwrap().location.offset as u64;
    let path = spool.segment(seg.segment).unwrap().path().to_path_buf();
    spool.close().unwrap();
    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert!(report.damaged.is_empty(), "{report:?}");
    assert!(spool.damage().is_empty());
    drop(spool);

    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut_at)
        .unwrap();
    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    let text = &report.damaged[0];
    assert!(
        text.contains("file cut to") && text.contains("may be lost"),
        "{text}"
    );
    assert_eq!(spool.damage(), &report.damaged[..]);
    for id in &ids[..5] {
        assert!(
            spool.index().get(id).is_some(),
            "{id} before the cut is kept"
        );
    }
    assert!(spool.index().get(&ids[5]).is_none());
}

/// A delay warning is remembered across a restart, and across compaction
/// of the segment that held the message and its warning record.
#[test]
fn a_delay_warning_mark_survives_restart_and_compaction() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let warned = append(&mut spool, 1, 3000);
    let quiet = append(&mut spool, 1, 3000);
    spool.admin(warned, AdminAction::DelayWarned).unwrap();
    assert!(spool.index().get(&warned).unwrap().delay_warned);
    assert!(!spool.index().get(&quiet).unwrap().delay_warned);
    let others: Vec<QueueId> = (0..40).map(|_| append(&mut spool, 1, 4000)).collect();
    for id in &others {
        spool
            .record_outcome(&outcome(*id, 0, OutcomeKind::Delivered))
            .unwrap();
    }
    let first_segment = spool.index().get(&warned).unwrap().location.segment;
    let report = spool.reclaim().unwrap();
    assert!(report.moved >= 2, "{report:?}");
    assert!(spool.index().get(&warned).unwrap().delay_warned);
    let (_, lsn) = spool.admin(quiet, AdminAction::Hold).unwrap();
    spool.durable(lsn).wait().unwrap();
    spool.reclaim().unwrap();
    assert!(
        spool.segment(first_segment).is_none(),
        "old segment deleted"
    );
    spool.close().unwrap();

    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert!(report.skipped.is_empty(), "{report:?}");
    assert!(spool.index().get(&warned).unwrap().delay_warned);
    assert!(!spool.index().get(&quiet).unwrap().delay_warned);
}

/// A record whose checksum fails still names its queue id in the warning
/// (issue 17: damage warnings named only byte ranges).
#[test]
fn a_damaged_record_names_its_queue_id() {
    let root = tempfile::tempdir().unwrap();
    let (mut spool, _) = open(root.path(), 0, 1, SEG);
    let ids: Vec<QueueId> = (0..3).map(|_| append(&mut spool, 1, 2000)).collect();
    let loc = spool.index().get(&ids[1]).unwrap().location;
    let path = spool.segment(loc.segment).unwrap().path().to_path_buf();
    spool.close().unwrap();
    // Flip a byte well inside the second record's content.
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[loc.offset as usize + 600] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let (spool, report) = open(root.path(), 0, 1, SEG);
    assert!(spool.index().get(&ids[1]).is_none());
    assert!(spool.index().get(&ids[2]).is_some());
    let text = report.skipped.join("\n");
    assert!(
        text.contains(&format!("a record of queue id {}", ids[1])),
        "{text}"
    );
}
