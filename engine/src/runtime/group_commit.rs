//! Group commit on the core (`corepost_fsync_policy = always`): the core's
//! executor makes its spool durable itself, as an asynchronous fdatasync on
//! its own io_uring, instead of handing every group to the spool's flusher
//! thread (a futex wake-up, the thread's park, and a cross-thread wake-up
//! of each waiting session per group). The spool decides what each group
//! holds and resolves the `Durable` futures ([`corepost_spool::CoreSync`]);
//! this task only runs the syncs, one at a time: whatever is appended while
//! one is in flight goes into the next.

use crate::log::Log;
use corepost_spool::{CoreSpool, CoreSync, SyncJob};
use glommio::io::BufferedFile;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io;

/// Take the spool's syncs over on this core, if its policy is `always`.
pub(super) fn start(spool: &mut CoreSpool, core: u16, log: &Log) {
    if let Some(sync) = spool.drive_syncs_on_core() {
        glommio::spawn_local(run(sync, core, log.clone())).detach();
    }
}

/// Until the spool is closed: run each group commit as it becomes due.
async fn run(sync: CoreSync, core: u16, log: Log) {
    // One descriptor per segment being synced, opened through the ring.
    let mut files: BTreeMap<u64, BufferedFile> = BTreeMap::new();
    let mut warned = false;
    while let Some(job) = sync.next().await {
        let result = match open_files(&job, &mut files).await {
            Ok(()) => sync_files(&job, &files).await,
            Err(e) => {
                // Not fatal: the same sync, blocking the core meanwhile.
                if !std::mem::replace(&mut warned, true) {
                    log.line(
                        "corepost/spool",
                        &format!(
                            "warning: core {core}: cannot open a segment for \
                             asynchronous syncs ({e}); syncing synchronously"
                        ),
                    );
                }
                job.sync_blocking()
            }
        };
        if let Some(first) = job.segments().first().map(|(seg, _, _)| seg.seq()) {
            files.retain(|seq, _| *seq >= first);
        }
        job.finish(result);
    }
}

async fn open_files(job: &SyncJob, files: &mut BTreeMap<u64, BufferedFile>) -> io::Result<()> {
    for (seg, _, _) in job.segments() {
        if let Entry::Vacant(slot) = files.entry(seg.seq()) {
            slot.insert(BufferedFile::open(seg.path()).await?);
        }
    }
    Ok(())
}

/// fdatasync every segment of the job (its records were written with
/// pwrite, so the page cache holds them; the files are preallocated, so no
/// metadata has to follow).
async fn sync_files(job: &SyncJob, files: &BTreeMap<u64, BufferedFile>) -> io::Result<()> {
    for (seg, _, _) in job.segments() {
        let file = files
            .get(&seg.seq())
            .ok_or_else(|| io::Error::other("segment file not open"))?;
        file.fdatasync().await?;
    }
    Ok(())
}
