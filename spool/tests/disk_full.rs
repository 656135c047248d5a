//! A full disk heals by itself (issue 17): appends fail while there is no
//! space, nothing acknowledged is lost, and once space is freed appends
//! succeed again without reopening the spool. Needs a small tmpfs, so it
//! runs as root (as CI does) and says why it skipped otherwise.

mod common;

use common::*;
use corepost_spool::*;
use std::path::Path;
use std::process::Command;

struct Tmpfs<'a>(&'a Path);

impl<'a> Tmpfs<'a> {
    fn mount(dir: &'a Path, size: &str) -> Option<Tmpfs<'a>> {
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Tmpfs(dir))
    }
}

impl Drop for Tmpfs<'_> {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.0).status();
    }
}

/// Try to append a message of `len` bytes; the queue id if it became durable.
fn try_append(spool: &mut CoreSpool, len: usize) -> Option<QueueId> {
    let id = spool.new_queue_id();
    let appended = spool
        .append_message(&envelope(id, 1), &content_for(id, len))
        .ok()?;
    spool.durable(appended.lsn).wait().ok()?;
    Some(id)
}

#[test]
fn appends_resume_when_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_fs) = Tmpfs::mount(dir.path(), "8m") else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let root = dir.path().join("spool");
    std::fs::create_dir(&root).unwrap();
    // Leave the spool ~3 MiB: fill the rest with a file we can delete.
    let filler = dir.path().join("filler");
    std::fs::write(&filler, vec![1u8; 5 << 20]).unwrap();
    let (mut spool, _) = open(&root, 0, 1, 1 << 20);
    let mut acknowledged = Vec::new();
    let mut failures = 0;
    for _ in 0..200 {
        match try_append(&mut spool, 64 << 10) {
            Some(id) => acknowledged.push(id),
            None => {
                failures += 1;
                if failures > 3 {
                    break;
                }
            }
        }
    }
    assert!(failures > 0, "the disk never filled");
    let before = acknowledged.len();
    // Every failed attempt left nothing behind that blocks the next one.
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..20 {
        acknowledged.push(try_append(&mut spool, 64 << 10).expect("append after space freed"));
    }
    assert!(acknowledged.len() > before);
    spool.close().unwrap();

    let (spool, report) = open(&root, 0, 1, 1 << 20);
    for id in &acknowledged {
        assert!(spool.index().get(id).is_some(), "{id} lost; {report:?}");
    }
}
