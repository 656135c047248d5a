//! Group commit on the core (`corepost_fsync_policy = always`): the core's
//! executor makes its spool durable itself, as an asynchronous fdatasync on
//! its own io_uring, instead of handing every group to the spool's flusher
//! thread (a futex wake-up, the thread's park, and a cross-thread wake-up
//! of each waiting session per group). The spool decides what each group
//! holds and resolves the `Durable` futures ([`corepost_spool::CoreSync`]);
//! this task only runs the syncs, one at a time: whatever is appended while
//! one is in flight goes into the next.
//!
//! The commit delay (`corepost_commit_delay`, as PostgreSQL's
//! `commit_delay`): when other SMTP sessions are open on the core, the task
//! waits that long before a sync, so that the messages those sessions are
//! finishing share it. A sync costs about the same whatever it holds (the
//! disk's cache flush dominates), so under load this trades a fraction of
//! a millisecond of a 250's latency for several times fewer syncs per
//! message (measured in BENCHMARKS.md); a lone session never waits.

use crate::context::CoreContext;
use crate::log::Log;
use corepost_spool::{CoreSync, SyncJob};
use glommio::io::BufferedFile;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::io;
use std::rc::Rc;
use std::time::Duration;

/// Run the spool's syncs on this core, if its policy is `always` (the
/// spool then handed them over: `syncs` is `Some`).
pub(super) fn start(syncs: Option<CoreSync>, ctx: &Rc<CoreContext>, delay: Duration) {
    if let Some(sync) = syncs {
        glommio::spawn_local(run(sync, Rc::clone(ctx), delay)).detach();
    }
}

/// Until the spool is closed: run each group commit as it becomes due.
async fn run(sync: CoreSync, ctx: Rc<CoreContext>, delay: Duration) {
    // One descriptor per segment being synced, opened through the ring.
    let mut files: BTreeMap<u64, BufferedFile> = BTreeMap::new();
    let mut warned = false;
    while let Some(job) = sync.next().await {
        let job = wait_for_company(job, &ctx, delay).await;
        let result = match open_files(&job, &mut files).await {
            Ok(()) => sync_files(&job, &files).await,
            Err(e) => {
                // Not fatal: the same sync, blocking the core meanwhile.
                if !std::mem::replace(&mut warned, true) {
                    warn_blocking(&ctx.log, ctx.id, &e);
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

/// The commit delay: with other sessions open on the core (whose messages
/// may be about to arrive), wait `delay` and take in what they appended.
async fn wait_for_company(job: SyncJob, ctx: &CoreContext, delay: Duration) -> SyncJob {
    if delay.is_zero() || ctx.sessions.get() < 2 || ctx.shutdown.is_triggered() {
        return job;
    }
    glommio::timer::sleep(delay).await;
    job.extend()
}

fn warn_blocking(log: &Log, core: u16, e: &io::Error) {
    log.line(
        "corepost/spool",
        &format!(
            "warning: core {core}: cannot open a segment for \
             asynchronous syncs ({e}); syncing synchronously"
        ),
    );
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
