//! Property test: any sequence of appends, outcomes, administrative actions,
//! reclamation and restarts leaves the spool with the same queued messages
//! and pending recipients as a simple in-memory model.

mod common;

use common::*;
use corepost_spool::*;
use proptest::prelude::*;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone)]
enum Op {
    Append {
        recipients: usize,
        len: usize,
    },
    Deliver {
        message: usize,
        recipient: u32,
    },
    Defer {
        message: usize,
        at: u64,
    },
    /// One delivery attempt's outcomes in one record: the recipients in
    /// `delivered` (a bit mask) delivered, the others deferred to `at`.
    Attempt {
        message: usize,
        delivered: u8,
        at: u64,
    },
    Hold {
        message: usize,
    },
    Release {
        message: usize,
    },
    Delete {
        message: usize,
    },
    Reclaim,
    Restart,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..4, 10usize..6000).prop_map(|(recipients, len)| Op::Append { recipients, len }),
        4 => (any::<usize>(), 0u32..4).prop_map(|(message, recipient)| Op::Deliver { message, recipient }),
        1 => (any::<usize>(), 1u64..1000).prop_map(|(message, at)| Op::Defer { message, at }),
        2 => (any::<usize>(), 0u8..16, 1u64..1000).prop_map(|(message, delivered, at)| Op::Attempt { message, delivered, at }),
        1 => any::<usize>().prop_map(|message| Op::Hold { message }),
        1 => any::<usize>().prop_map(|message| Op::Release { message }),
        1 => any::<usize>().prop_map(|message| Op::Delete { message }),
        1 => Just(Op::Reclaim),
        1 => Just(Op::Restart),
    ]
}

#[derive(Debug, Clone)]
struct Model {
    pending: BTreeSet<u32>,
    held: bool,
    next_attempt: u64,
    len: usize,
}

fn check(spool: &CoreSpool, model: &BTreeMap<QueueId, Model>) -> Result<(), TestCaseError> {
    prop_assert_eq!(spool.index().len(), model.len());
    for (id, m) in model {
        let entry = spool.index().get(id);
        prop_assert!(entry.is_some(), "{} missing", id);
        let entry = entry.unwrap();
        prop_assert_eq!(
            entry.pending.iter().collect::<BTreeSet<_>>(),
            m.pending.clone()
        );
        prop_assert_eq!(entry.held, m.held);
        prop_assert_eq!(entry.next_attempt, m.next_attempt);
        let stored = spool.read(id).unwrap().unwrap();
        prop_assert_eq!(stored.content(), &content_for(*id, m.len)[..]);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn spool_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        let root = tempfile::tempdir().unwrap();
        let seg = 64 * 1024;
        let (mut spool, _) = open(root.path(), 0, 1, seg);
        let mut model: BTreeMap<QueueId, Model> = BTreeMap::new();
        let mut ids: Vec<QueueId> = Vec::new();
        let pick = |ids: &Vec<QueueId>, i: usize| if ids.is_empty() { None } else { Some(ids[i % ids.len()]) };
        for op in ops {
            match op {
                Op::Append { recipients, len } => {
                    let id = append(&mut spool, recipients, len);
                    model.insert(id, Model { pending: (0..recipients as u32).collect(), held: false, next_attempt: 0, len: len.max(40) });
                    ids.push(id);
                }
                Op::Deliver { message, recipient } => {
                    let Some(id) = pick(&ids, message) else { continue };
                    spool.record_outcome(&outcome(id, recipient, OutcomeKind::Delivered)).unwrap();
                    if let Some(m) = model.get_mut(&id) {
                        m.pending.remove(&recipient);
                        if m.pending.is_empty() {
                            model.remove(&id);
                        }
                    }
                }
                Op::Defer { message, at } => {
                    let Some(id) = pick(&ids, message) else { continue };
                    spool.record_outcome(&outcome(id, 0, OutcomeKind::Deferred { next_attempt: at })).unwrap();
                    if let Some(m) = model.get_mut(&id) {
                        m.next_attempt = at;
                    }
                }
                Op::Attempt { message, delivered, at } => {
                    let Some(id) = pick(&ids, message) else { continue };
                    let Some(m) = model.get_mut(&id) else { continue };
                    let outcomes: Vec<Outcome> = m.pending.iter().map(|&r| {
                        let kind = if delivered & (1 << r) != 0 { OutcomeKind::Delivered } else { OutcomeKind::Deferred { next_attempt: at } };
                        outcome(id, r, kind)
                    }).collect();
                    spool.record_outcomes(&outcomes).unwrap();
                    for o in &outcomes {
                        match o.kind {
                            OutcomeKind::Delivered => { m.pending.remove(&o.recipient); }
                            _ => m.next_attempt = at,
                        }
                    }
                    if m.pending.is_empty() {
                        model.remove(&id);
                    }
                }
                Op::Hold { message } | Op::Release { message } | Op::Delete { message } => {
                    let Some(id) = pick(&ids, message) else { continue };
                    let action = match op {
                        Op::Hold { .. } => AdminAction::Hold,
                        Op::Release { .. } => AdminAction::Release,
                        _ => AdminAction::Delete,
                    };
                    spool.admin(id, action).unwrap();
                    match action {
                        AdminAction::Delete => { model.remove(&id); }
                        AdminAction::Hold => if let Some(m) = model.get_mut(&id) { m.held = true },
                        _ => if let Some(m) = model.get_mut(&id) { m.held = false },
                    }
                }
                Op::Reclaim => {
                    spool.reclaim().unwrap();
                }
                Op::Restart => {
                    spool.close().unwrap();
                    let (reopened, report) = open(root.path(), 0, 1, seg);
                    prop_assert!(report.skipped.is_empty(), "{:?}", report.skipped);
                    spool = reopened;
                }
            }
            check(&spool, &model)?;
        }
        spool.close().unwrap();
        let (spool, _) = open(root.path(), 0, 1, seg);
        check(&spool, &model)?;
    }
}
