//! Group commit: one flush makes every record appended since the last one
//! durable, and wakes everyone waiting for any of them.
//!
//! Each core's spool has one flusher thread. The core appends records into
//! the mapping and publishes the new end as a log sequence number (LSN:
//! segment number in the high 32 bits, offset in the low 32). The flusher
//! syncs everything between the last flushed LSN and the newest appended
//! one — whatever accumulated while the previous sync ran — then publishes
//! the flushed LSN and wakes the [`Durable`] futures it covers. The core
//! never blocks on the disk: the sync runs on the flusher thread, while the
//! core keeps accepting and appending.
//!
//! Policies (`corepost_fsync_policy`): `always` (a 250 waits for the
//! flush), `interval=<ms>` (flush every ms milliseconds, acknowledge at
//! once) and `never` (leave it to the kernel; benchmarks only).
//!
//! With `always`, the engine takes the syncs over from the thread
//! ([`Flusher::drive_on_core`]): the core's executor then runs each group
//! commit itself as an asynchronous fdatasync on its own io_uring (a
//! [`CoreSync`] hands out [`SyncJob`]s), with the same rule — everything
//! appended while one sync is in flight goes into the next one. That saves
//! the thread hand-off per group (a futex wake-up of the flusher, its park,
//! and a cross-thread wake-up of every waiting session), and because the
//! sync task is woken by an append but runs only after the tasks already
//! runnable, records that arrive in the same round of the event loop share
//! one sync. [`Durable`] is unchanged: it resolves once a sync covering its
//! record returned.

use crate::segment::SegmentMap;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bounds (microseconds) of the buckets of [`FlushStats`]; a last
/// bucket counts everything slower.
pub const SYNC_BUCKETS_MICROS: [u64; 13] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

/// How long the flusher's syncs (group commits) took: written only by
/// whoever runs the syncs (the flusher thread, or the core after
/// [`Flusher::drive_on_core`]; never both), read by whoever monitors the
/// spool.
#[derive(Debug, Default)]
pub struct FlushStats {
    /// Group commits that synced something.
    pub syncs: AtomicU64,
    /// Their total duration, microseconds.
    pub micros: AtomicU64,
    /// Syncs per duration bucket (not cumulative): `SYNC_BUCKETS_MICROS`
    /// then one for anything slower.
    pub buckets: [AtomicU64; SYNC_BUCKETS_MICROS.len() + 1],
}

impl FlushStats {
    fn record(&self, took: Duration) {
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let bucket = SYNC_BUCKETS_MICROS
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(SYNC_BUCKETS_MICROS.len());
        // One writer: plain load and store, no read-modify-write needed.
        let bump = |a: &AtomicU64, n: u64| {
            a.store(a.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed)
        };
        bump(&self.buckets[bucket], 1);
        bump(&self.micros, micros);
        bump(&self.syncs, 1);
    }
}

/// When acknowledged mail reaches the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPolicy {
    Always,
    Interval(Duration),
    Never,
}

impl FromStr for FlushPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<FlushPolicy, String> {
        let s = s.trim();
        match s {
            "always" => Ok(FlushPolicy::Always),
            "never" => Ok(FlushPolicy::Never),
            _ => {
                let ms = s
                    .strip_prefix("interval=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| *ms > 0)
                    .ok_or_else(|| {
                        format!("bad fsync policy \"{s}\" (expected always, interval=<milliseconds> or never)")
                    })?;
                Ok(FlushPolicy::Interval(Duration::from_millis(ms)))
            }
        }
    }
}

/// How a range is made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMethod {
    /// msync(MS_SYNC) of the dirty byte range.
    #[default]
    Msync,
    /// fdatasync of the segment file.
    Fdatasync,
}

/// A position in one core's log: segment in the high 32 bits, offset low.
pub type Lsn = u64;

pub fn lsn(segment: u64, offset: usize) -> Lsn {
    (segment << 32) | offset as u64
}

/// State shared by a core and its flusher thread.
#[derive(Debug)]
struct Shared {
    appended: AtomicU64,
    flushed: AtomicU64,
    /// Set by the flusher just before it parks.
    sleeping: AtomicBool,
    /// The core's executor runs the syncs (no thread; see [`CoreSync`]).
    core_driven: AtomicBool,
    /// The core's sync task, waiting for records to sync.
    sync_task: Mutex<Option<Waker>>,
    stop: AtomicBool,
    failed: AtomicBool,
    waiters: Mutex<Vec<(Lsn, Waker)>>,
    /// Segments that may hold unflushed bytes, by sequence number.
    segments: Mutex<BTreeMap<u64, Arc<SegmentMap>>>,
    error: Mutex<Option<String>>,
    stats: Arc<FlushStats>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the protected
    // data inconsistent (pushes and drains only), so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The flusher of one core's spool.
#[derive(Debug)]
pub struct Flusher {
    shared: Arc<Shared>,
    policy: FlushPolicy,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    /// Start the flusher; `start` is the LSN already durable.
    pub fn start(
        core: u16,
        policy: FlushPolicy,
        method: SyncMethod,
        start: Lsn,
    ) -> std::io::Result<Flusher> {
        let shared = Arc::new(Shared {
            appended: AtomicU64::new(start),
            flushed: AtomicU64::new(start),
            sleeping: AtomicBool::new(false),
            core_driven: AtomicBool::new(false),
            sync_task: Mutex::new(None),
            stop: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
            segments: Mutex::new(BTreeMap::new()),
            error: Mutex::new(None),
            stats: Arc::default(),
        });
        let thread = match policy {
            FlushPolicy::Never => None,
            _ => {
                let shared = Arc::clone(&shared);
                Some(
                    thread::Builder::new()
                        .name(format!("spool-flush-{core}"))
                        .spawn(move || run(&shared, policy, method))?,
                )
            }
        };
        Ok(Flusher {
            shared,
            policy,
            thread,
        })
    }

    /// A segment the core may append to; it stays known to the flusher
    /// until everything in it is flushed.
    pub fn register(&self, segment: &Arc<SegmentMap>) {
        lock(&self.shared.segments).insert(segment.seq(), Arc::clone(segment));
    }

    /// Records up to `lsn` are written into the mapping.
    pub fn appended(&self, lsn: Lsn) {
        self.shared.appended.store(lsn, Ordering::Release);
        if self.shared.core_driven.load(Ordering::Relaxed) {
            if let Some(task) = lock(&self.shared.sync_task).take() {
                task.wake();
            }
            return;
        }
        if self.policy == FlushPolicy::Always
            && self.shared.sleeping.swap(false, Ordering::AcqRel)
            && let Some(t) = &self.thread
        {
            t.thread().unpark();
        }
    }

    /// The durations of this flusher's syncs.
    pub fn stats(&self) -> Arc<FlushStats> {
        Arc::clone(&self.shared.stats)
    }

    pub fn flushed(&self) -> Lsn {
        self.shared.flushed.load(Ordering::Acquire)
    }

    /// The last flush failed: nothing new can be acknowledged.
    pub fn error(&self) -> Option<String> {
        if self.shared.failed.load(Ordering::Acquire) {
            lock(&self.shared.error).clone()
        } else {
            None
        }
    }

    /// A future that resolves once `lsn` is durable (at once unless the
    /// policy is `always`).
    pub fn durable(&self, lsn: Lsn) -> Durable {
        Durable {
            shared: Arc::clone(&self.shared),
            lsn: if self.policy == FlushPolicy::Always {
                lsn
            } else {
                0
            },
        }
    }

    /// Hand the syncs over to the calling core (policy `always` only; else
    /// `None` and the thread keeps them): the flusher thread flushes what
    /// was appended and stops, and from then on the core runs every group
    /// commit through the returned [`CoreSync`]. Someone must drive it, or
    /// [`Durable`] futures never resolve ([`Durable::wait`] and
    /// [`Flusher::shutdown`] still sync inline).
    pub fn drive_on_core(&mut self) -> Option<CoreSync> {
        if self.policy != FlushPolicy::Always {
            return None;
        }
        self.shutdown();
        self.shared.stop.store(false, Ordering::Release);
        self.shared.core_driven.store(true, Ordering::Release);
        Some(CoreSync {
            shared: Arc::clone(&self.shared),
        })
    }

    /// Flush everything appended and stop the thread (or the core's sync
    /// task, after a last sync made here).
    pub fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            let _ = t.join();
        }
        if self.shared.core_driven.load(Ordering::Acquire) {
            sync_inline(&self.shared);
            if let Some(task) = lock(&self.shared.sync_task).take() {
                task.wake();
            }
        }
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(shared: &Shared, policy: FlushPolicy, method: SyncMethod) {
    loop {
        let target = shared.appended.load(Ordering::Acquire);
        let done = shared.flushed.load(Ordering::Acquire);
        if target > done && !shared.failed.load(Ordering::Acquire) {
            let started = Instant::now();
            let synced = sync_range(shared, done, target, method);
            shared.stats.record(started.elapsed());
            match synced {
                Ok(()) => shared.flushed.store(target, Ordering::Release),
                Err(e) => {
                    *lock(&shared.error) = Some(format!("spool flush failed: {e}"));
                    shared.failed.store(true, Ordering::Release);
                }
            }
            wake(shared);
            if let FlushPolicy::Interval(every) = policy {
                thread::park_timeout(every);
            }
            continue;
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        shared.sleeping.store(true, Ordering::Release);
        // Re-check after announcing sleep, so an append that raced with us
        // either sees `sleeping` (and unparks) or is seen here.
        if shared.appended.load(Ordering::Acquire) > shared.flushed.load(Ordering::Acquire)
            || shared.stop.load(Ordering::Acquire)
        {
            shared.sleeping.store(false, Ordering::Release);
            continue;
        }
        match policy {
            FlushPolicy::Interval(every) => thread::park_timeout(every),
            _ => thread::park_timeout(Duration::from_millis(100)),
        }
        shared.sleeping.store(false, Ordering::Release);
    }
}

/// The byte ranges of each segment holding [from, to).
fn plan(shared: &Shared, from: Lsn, to: Lsn) -> Vec<(Arc<SegmentMap>, usize, usize)> {
    let (first, last) = (from >> 32, to >> 32);
    lock(&shared.segments)
        .range(first..=last)
        .filter_map(|(_, seg)| {
            let start = if seg.seq() == first {
                (from & 0xffff_ffff) as usize
            } else {
                0
            };
            let end = if seg.seq() == last {
                (to & 0xffff_ffff) as usize
            } else {
                seg.size()
            };
            (end > start).then(|| (Arc::clone(seg), start, end))
        })
        .collect()
}

/// Segments entirely below `to` are flushed for good.
fn forget_below(shared: &Shared, to: Lsn) {
    lock(&shared.segments).retain(|seq, _| *seq >= to >> 32);
}

/// Make [from, to) durable, segment by segment.
fn sync_range(shared: &Shared, from: Lsn, to: Lsn, method: SyncMethod) -> std::io::Result<()> {
    for (seg, start, end) in plan(shared, from, to) {
        match method {
            SyncMethod::Msync => seg.msync(start, end - start)?,
            SyncMethod::Fdatasync => seg.fdatasync()?,
        }
    }
    forget_below(shared, to);
    Ok(())
}

/// Record the end of a sync of everything below `target`: publish it (or
/// the failure) and wake whoever waits for it.
fn finish_sync(shared: &Shared, target: Lsn, result: std::io::Result<()>, started: Instant) {
    shared.stats.record(started.elapsed());
    match result {
        Ok(()) => {
            forget_below(shared, target);
            shared.flushed.fetch_max(target, Ordering::AcqRel);
        }
        Err(e) => {
            *lock(&shared.error) = Some(format!("spool flush failed: {e}"));
            shared.failed.store(true, Ordering::Release);
        }
    }
    wake(shared);
}

/// A blocking sync of everything appended, on the calling thread: how a
/// core-driven spool is flushed by [`Durable::wait`] and at shutdown.
fn sync_inline(shared: &Shared) {
    let target = shared.appended.load(Ordering::Acquire);
    let done = shared.flushed.load(Ordering::Acquire);
    if target <= done || shared.failed.load(Ordering::Acquire) {
        return;
    }
    let started = Instant::now();
    let result = plan(shared, done, target)
        .iter()
        .try_for_each(|(seg, start, end)| seg.msync(*start, end - start));
    finish_sync(shared, target, result, started);
}

/// The core's side of core-driven group commit (see the module doc): the
/// engine awaits [`CoreSync::next`], makes the [`SyncJob`]'s segments
/// durable (fdatasync through its executor's io_uring) and finishes it.
#[derive(Debug, Clone)]
pub struct CoreSync {
    shared: Arc<Shared>,
}

impl CoreSync {
    /// Resolves with the next group commit once records wait for one, or
    /// `None` once the spool is shut down.
    pub fn next(&self) -> NextSync<'_> {
        NextSync { sync: self }
    }

    fn poll_job(&self) -> Option<Option<SyncJob>> {
        let shared = &self.shared;
        if shared.stop.load(Ordering::Acquire) {
            return Some(None);
        }
        let target = shared.appended.load(Ordering::Acquire);
        let done = shared.flushed.load(Ordering::Acquire);
        (target > done && !shared.failed.load(Ordering::Acquire)).then(|| {
            Some(SyncJob {
                shared: Arc::clone(shared),
                target,
                segments: plan(shared, done, target),
                started: Instant::now(),
            })
        })
    }
}

/// The future of [`CoreSync::next`].
#[derive(Debug)]
pub struct NextSync<'a> {
    sync: &'a CoreSync,
}

impl Future for NextSync<'_> {
    type Output = Option<SyncJob>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<SyncJob>> {
        if let Some(job) = self.sync.poll_job() {
            return Poll::Ready(job);
        }
        *lock(&self.sync.shared.sync_task) = Some(cx.waker().clone());
        // An append between the check and the registration woke nobody.
        match self.sync.poll_job() {
            Some(job) => Poll::Ready(job),
            None => Poll::Pending,
        }
    }
}

/// One group commit run by the core: everything appended below `target`.
#[derive(Debug)]
pub struct SyncJob {
    shared: Arc<Shared>,
    target: Lsn,
    segments: Vec<(Arc<SegmentMap>, usize, usize)>,
    started: Instant,
}

impl SyncJob {
    /// The segments to make durable, each with the byte range that needs it.
    pub fn segments(&self) -> &[(Arc<SegmentMap>, usize, usize)] {
        &self.segments
    }

    /// Sync the ranges here, blocking (msync): the fallback when the
    /// asynchronous way is not available.
    pub fn sync_blocking(&self) -> std::io::Result<()> {
        self.segments
            .iter()
            .try_for_each(|(seg, start, end)| seg.msync(*start, end - start))
    }

    /// Take in everything appended since the job was made (after the
    /// engine waited a moment to let a larger group form); the sync's
    /// duration is counted from here.
    pub fn extend(self) -> SyncJob {
        let shared = &self.shared;
        let target = shared.appended.load(Ordering::Acquire).max(self.target);
        let done = shared.flushed.load(Ordering::Acquire);
        SyncJob {
            segments: plan(shared, done, target),
            target,
            started: Instant::now(),
            shared: Arc::clone(&self.shared),
        }
    }

    /// The sync returned: publish the result and wake the waiters.
    pub fn finish(self, result: std::io::Result<()>) {
        finish_sync(&self.shared, self.target, result, self.started);
    }
}

fn wake(shared: &Shared) {
    let flushed = shared.flushed.load(Ordering::Acquire);
    let failed = shared.failed.load(Ordering::Acquire);
    let ready: Vec<Waker> = {
        let mut waiters = lock(&shared.waiters);
        let mut ready = Vec::new();
        waiters.retain(|(lsn, waker)| {
            let done = failed || *lsn <= flushed;
            if done {
                ready.push(waker.clone());
            }
            !done
        });
        ready
    };
    for w in ready {
        w.wake();
    }
}

/// Resolves once a record is durable, or with the flush error.
#[derive(Debug)]
pub struct Durable {
    shared: Arc<Shared>,
    lsn: Lsn,
}

impl Durable {
    fn check(&self) -> Option<Result<(), String>> {
        if self.shared.failed.load(Ordering::Acquire) {
            return Some(Err(lock(&self.shared.error)
                .clone()
                .unwrap_or_else(|| "spool flush failed".into())));
        }
        (self.shared.flushed.load(Ordering::Acquire) >= self.lsn).then_some(Ok(()))
    }

    /// Block the calling thread until durable (for tools and tests, not the
    /// per-core executors).
    pub fn wait(self) -> Result<(), String> {
        struct Unpark(thread::Thread);
        impl Wake for Unpark {
            fn wake(self: Arc<Self>) {
                self.0.unpark();
            }
        }
        let waker = Waker::from(Arc::new(Unpark(thread::current())));
        let mut cx = Context::from_waker(&waker);
        let mut this = self;
        if this.shared.core_driven.load(Ordering::Acquire) {
            // No thread to wait for, and the core is blocked here.
            sync_inline(&this.shared);
        }
        loop {
            if let Poll::Ready(r) = Pin::new(&mut this).poll(&mut cx) {
                return r;
            }
            thread::park_timeout(Duration::from_millis(50));
        }
    }
}

impl Future for Durable {
    type Output = Result<(), String>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(r) = self.check() {
            return Poll::Ready(r);
        }
        lock(&self.shared.waiters).push((self.lsn, cx.waker().clone()));
        // The flusher may have finished between the check and the push.
        match self.check() {
            Some(r) => Poll::Ready(r),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sync_durations_land_in_their_buckets() {
        let stats = FlushStats::default();
        stats.record(Duration::from_micros(100)); // le 0.0001 (bounds are inclusive)
        stats.record(Duration::from_micros(101)); // le 0.00025
        stats.record(Duration::from_secs(3)); // past the last bound
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        assert_eq!(load(&stats.syncs), 3);
        assert_eq!(load(&stats.micros), 3_000_201);
        assert_eq!(load(&stats.buckets[0]), 1);
        assert_eq!(load(&stats.buckets[1]), 1);
        assert_eq!(load(&stats.buckets[SYNC_BUCKETS_MICROS.len()]), 1);
        assert_eq!(stats.buckets.iter().map(load).sum::<u64>(), 3);
    }

    #[test]
    fn policies_parse() {
        assert_eq!("always".parse(), Ok(FlushPolicy::Always));
        assert_eq!("never".parse(), Ok(FlushPolicy::Never));
        assert_eq!(
            "interval=10".parse(),
            Ok(FlushPolicy::Interval(Duration::from_millis(10)))
        );
        assert!("interval=0".parse::<FlushPolicy>().is_err());
        assert!("sometimes".parse::<FlushPolicy>().is_err());
    }

    /// A fresh segment (records from offset 64) and an `always` flusher
    /// that knows it, starting at its first record.
    fn core_driven_segment() -> (tempfile::TempDir, crate::segment::SegmentWriter, Flusher) {
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentMap::create(dir.path(), 0, 1, 1 << 16).unwrap();
        let w = seg.writer(64).unwrap();
        let flusher =
            Flusher::start(0, FlushPolicy::Always, SyncMethod::Msync, lsn(1, 64)).unwrap();
        flusher.register(&seg);
        (dir, w, flusher)
    }

    /// Append a 100-byte record of `n`s, tell the flusher, return its end.
    fn append_admin(w: &mut crate::segment::SegmentWriter, flusher: &Flusher, n: u8) -> usize {
        let (_, end) = w
            .append(crate::record::RecordType::Admin, &[&[n; 100]])
            .unwrap()
            .unwrap();
        flusher.appended(lsn(1, end));
        end
    }

    #[test]
    fn core_driven_group_commit_takes_what_arrived_during_the_last_sync() {
        use futures::FutureExt;
        use futures::executor::block_on;
        let (_dir, mut w, mut flusher) = core_driven_segment();
        let sync = flusher.drive_on_core().unwrap();
        assert!(flusher.thread.is_none(), "the thread is gone");
        let mut append = |n: u8| append_admin(&mut w, &flusher, n);
        assert!(sync.next().now_or_never().is_none(), "nothing to sync yet");
        let a = append(1);
        let mut da = flusher.durable(lsn(1, a));
        let job = block_on(sync.next()).unwrap();
        assert_eq!(job.segments().len(), 1);
        assert_eq!((job.segments()[0].1, job.segments()[0].2), (64, a));
        // Appended while that sync is in flight: the next group.
        let b = append(2);
        let mut db = flusher.durable(lsn(1, b));
        assert!((&mut da).now_or_never().is_none());
        job.sync_blocking().unwrap();
        job.finish(Ok(()));
        assert_eq!((&mut da).now_or_never(), Some(Ok(())));
        assert!((&mut db).now_or_never().is_none());
        let job = block_on(sync.next()).unwrap();
        assert_eq!((job.segments()[0].1, job.segments()[0].2), (a, b));
        job.finish(Ok(()));
        assert_eq!(db.now_or_never(), Some(Ok(())));
        // Without anyone driving it, wait() syncs inline.
        let c = append(3);
        flusher.durable(lsn(1, c)).wait().unwrap();
        assert_eq!(flusher.flushed(), lsn(1, c));
        // A failed sync fails every waiter, and nothing more is synced.
        let d = append(4);
        let dd = flusher.durable(lsn(1, d));
        block_on(sync.next())
            .unwrap()
            .finish(Err(std::io::Error::other("disk on fire")));
        assert!(block_on(dd).unwrap_err().contains("disk on fire"));
        assert!(flusher.error().is_some());
        flusher.shutdown();
        assert!(block_on(sync.next()).is_none(), "stopped");
    }

    #[test]
    fn an_extended_job_takes_in_what_was_appended_while_it_waited() {
        use futures::FutureExt;
        use futures::executor::block_on;
        let (_dir, mut w, mut flusher) = core_driven_segment();
        let sync = flusher.drive_on_core().unwrap();
        let mut append = |n: u8| append_admin(&mut w, &flusher, n);
        let a = append(1);
        let job = block_on(sync.next()).unwrap();
        // The commit delay: two more records arrive before the sync starts.
        append(2);
        let c = append(3);
        let mut dc = flusher.durable(lsn(1, c));
        let job = job.extend();
        assert_eq!(job.segments().len(), 1);
        assert_eq!((job.segments()[0].1, job.segments()[0].2), (64, c));
        assert!(c > a);
        job.sync_blocking().unwrap();
        job.finish(Ok(()));
        assert_eq!((&mut dc).now_or_never(), Some(Ok(())));
        assert!(
            sync.next().now_or_never().is_none(),
            "one sync for all three"
        );
        flusher.shutdown();
    }

    #[test]
    fn core_driven_shutdown_flushes_what_was_appended() {
        let (_dir, mut w, mut flusher) = core_driven_segment();
        let _sync = flusher.drive_on_core().unwrap();
        let (_, end) = w
            .append(crate::record::RecordType::Admin, &[b"last words"])
            .unwrap()
            .unwrap();
        flusher.appended(lsn(1, end));
        flusher.shutdown();
        assert_eq!(flusher.flushed(), lsn(1, end));
        assert!(flusher.error().is_none());
    }

    #[test]
    fn only_policy_always_is_driven_by_the_core() {
        let mut never = Flusher::start(0, FlushPolicy::Never, SyncMethod::Msync, 0).unwrap();
        assert!(never.drive_on_core().is_none());
        let every = FlushPolicy::Interval(Duration::from_millis(5));
        let mut interval = Flusher::start(0, every, SyncMethod::Msync, 0).unwrap();
        assert!(interval.drive_on_core().is_none());
        assert!(interval.thread.is_some(), "the thread keeps interval syncs");
    }

    #[test]
    fn group_commit_resolves_waiters() {
        let dir = tempfile::tempdir().unwrap();
        let seg = SegmentMap::create(dir.path(), 0, 1, 1 << 16).unwrap();
        let mut w = seg.writer(64).unwrap();
        let flusher =
            Flusher::start(0, FlushPolicy::Always, SyncMethod::Msync, lsn(1, 64)).unwrap();
        flusher.register(&seg);
        let mut waits = Vec::new();
        for i in 0..10u8 {
            let (_, end) = w
                .append(crate::record::RecordType::Admin, &[&[i; 100]])
                .unwrap()
                .unwrap();
            flusher.appended(lsn(1, end));
            waits.push(flusher.durable(lsn(1, end)));
        }
        for d in waits {
            d.wait().unwrap();
        }
        assert!(flusher.flushed() >= lsn(1, w.tail()));
    }
}
