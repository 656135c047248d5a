//! Property test: random truncation and random byte flips of a segment are
//! recovered without a panic and without losing any record that lies before
//! the damage; every message recovered has intact content.

mod common;

use common::*;
use corepost_spool::*;
use proptest::prelude::*;
use std::collections::BTreeMap;

const SEG: usize = 64 * 1024;

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the file at this fraction of its used length.
    Truncate(f64),
    /// Flip bits at these fractions of the used length.
    Flip(Vec<(f64, u8)>),
    /// Zero a 4 KiB page (a write that never reached the disk).
    ZeroPage(f64),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0f64..1.0).prop_map(Damage::Truncate),
        proptest::collection::vec((0.0f64..1.0, 1u8..=255), 1..4).prop_map(Damage::Flip),
        (0.0f64..1.0).prop_map(Damage::ZeroPage),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn damage_loses_nothing_before_it(
        sizes in proptest::collection::vec(10usize..9000, 1..40),
        victim in any::<usize>(),
        damage in damage(),
    ) {
        let root = tempfile::tempdir().unwrap();
        let (mut spool, _) = open(root.path(), 0, 1, SEG);
        // id -> (segment, record start, record end, content length)
        let mut written: BTreeMap<QueueId, (u64, usize, usize, usize)> = BTreeMap::new();
        for len in sizes {
            let id = spool.new_queue_id();
            let a = spool.append_message(&envelope(id, 1), &content_for(id, len)).unwrap();
            spool.durable(a.lsn).wait().unwrap();
            let start = a.location.offset as usize;
            written.insert(id, (a.location.segment, start, start + a.location.len as usize, len.max(40)));
        }
        spool.close().unwrap();

        // Damage one segment.
        let dir = root.path().join("core-0");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("seg-"))
            .collect();
        files.sort();
        let path = files[victim % files.len()].clone();
        let seq = u64::from_str_radix(&path.file_name().unwrap().to_str().unwrap()[4..20], 16).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let used = written.values().filter(|w| w.0 == seq).map(|w| w.2).max().unwrap_or(64).max(64);
        let at = |f: f64| ((used as f64) * f) as usize;
        let first_damage = match &damage {
            Damage::Truncate(f) => {
                let cut = at(*f);
                bytes.truncate(cut);
                cut
            }
            Damage::Flip(flips) => {
                let mut first = usize::MAX;
                for (f, mask) in flips {
                    let i = at(*f).min(bytes.len() - 1);
                    bytes[i] ^= mask;
                    first = first.min(i);
                }
                first
            }
            Damage::ZeroPage(f) => {
                let page = at(*f) / 4096 * 4096;
                let end = (page + 4096).min(bytes.len());
                let first = bytes[page..end].iter().position(|&b| b != 0).map_or(usize::MAX, |p| page + p);
                bytes[page..end].fill(0);
                first
            }
        };
        std::fs::write(&path, &bytes).unwrap();

        let (spool, _report) = open(root.path(), 0, 1, SEG);
        for (id, (segment, _start, end, len)) in &written {
            let undamaged = *segment != seq || (*end <= first_damage && first_damage >= 64);
            if undamaged {
                prop_assert!(spool.index().get(id).is_some(), "{} lost (damage at {} in segment {})", id, first_damage, seq);
            }
            if spool.index().get(id).is_some() {
                let stored = spool.read(id).unwrap().unwrap();
                prop_assert_eq!(stored.content(), &content_for(*id, *len)[..]);
            }
        }
        // Nothing that was not written appears.
        for (id, _) in spool.index().iter() {
            prop_assert!(written.contains_key(id));
        }
        // The spool still takes mail after recovery.
        let mut spool = spool;
        let id = append(&mut spool, 1, 100);
        spool.close().unwrap();
        let (spool, report) = open(root.path(), 0, 1, SEG);
        prop_assert!(spool.index().get(&id).is_some());
        prop_assert!(report.truncated.is_empty(), "torn tail came back: {:?}", report.truncated);
    }
}
