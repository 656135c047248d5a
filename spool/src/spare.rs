//! Spare segments: zero-filled files prepared off the core, ahead of need.
//!
//! Why: a segment preallocated with `posix_fallocate` consists of
//! *unwritten* extents. The first write into each block converts the
//! extent, so every group-commit sync also has to write file-system
//! metadata (on ext4 the inode and extent tree): measured here, a 4 KiB
//! pwrite + fdatasync took ~180 µs into a fallocated file and ~108 µs into
//! one whose zeros had really been written. So each core keeps one spare:
//! a file of the usual segment size, filled with written zeros and synced
//! by this module's thread while the core works. At a segment roll the core
//! renames the spare into place and writes only the header
//! ([`crate::segment::SegmentMap::create_from_spare`]); if no spare is ready
//! (the first roll after start, or the disk was slower than the log), it
//! falls back to creating a fallocated segment inline, exactly as before,
//! and asks for the next spare.
//!
//! A spare is named [`SPARE_FILE_NAME`] while it is being written and
//! [`READY_FILE_NAME`] once complete and synced; recovery ignores both
//! (they are not segment names) and [`SparePreparer::start`] removes any
//! leftovers, so a crash at any moment leaves nothing to clean up by hand.
//! The cost is one sequential write of the segment size per segment used:
//! cheap next to thousands of small synchronous flushes.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// A spare being written.
pub const SPARE_FILE_NAME: &str = "spare.tmp";
/// A complete, synced spare, ready to become a segment.
pub const READY_FILE_NAME: &str = "spare.ready";

/// Zeros are written in chunks of this size.
const CHUNK: usize = 1 << 20;

#[derive(Debug, Default)]
struct State {
    /// A spare should be prepared (none is ready and none is in the works).
    wanted: bool,
    /// A complete spare is on disk.
    ready: bool,
    /// The last preparation failed (reported once, then retried on demand).
    error: Option<String>,
    stop: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means the thread panicked mid-update of
        // plain flags; the flags stay meaningful, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Prepares one spare segment at a time for one spool directory.
#[derive(Debug)]
pub struct SparePreparer {
    dir: PathBuf,
    size: usize,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl SparePreparer {
    /// Remove leftovers of an earlier run in `dir` and start preparing a
    /// spare of `size` bytes.
    pub fn start(dir: &Path, core: u16, size: usize) -> io::Result<SparePreparer> {
        for name in [SPARE_FILE_NAME, READY_FILE_NAME] {
            match std::fs::remove_file(dir.join(name)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        let shared = Arc::new(Shared::default());
        let thread = {
            let shared = Arc::clone(&shared);
            let dir = dir.to_path_buf();
            thread::Builder::new()
                .name(format!("spool-spare-{core}"))
                .spawn(move || run(&dir, size, &shared))?
        };
        Ok(SparePreparer {
            dir: dir.to_path_buf(),
            size,
            shared,
            thread: Some(thread),
        })
    }

    /// The size of the spares this preparer makes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Ask for a spare, unless one is ready or in the works. The spool asks
    /// when its active segment is half full, so an idle spool keeps no
    /// spare on disk.
    pub fn request(&self) {
        let mut state = self.shared.lock();
        if !state.ready && !state.wanted {
            state.wanted = true;
            self.shared.wake.notify_one();
        }
    }

    /// Take the ready spare, if there is one. The returned path is a
    /// complete, synced, zero-filled file of [`SparePreparer::size`] bytes
    /// that the caller now owns.
    pub fn take(&self) -> Option<PathBuf> {
        let mut state = self.shared.lock();
        let taken = state.ready.then(|| self.dir.join(READY_FILE_NAME));
        state.ready = false;
        taken
    }

    /// The error of the last failed preparation, if any (taken: reported
    /// once).
    pub fn take_error(&self) -> Option<String> {
        self.shared.lock().error.take()
    }
}

impl Drop for SparePreparer {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// After a failed preparation the next waits this long, doubling up to
/// [`MAX_BACKOFF`]: a full disk is not retried (and reported) at every roll.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

fn run(dir: &Path, size: usize, shared: &Shared) {
    let mut backoff = Duration::ZERO;
    loop {
        {
            let mut state = shared.lock();
            if !backoff.is_zero() {
                // Sleep out the backoff (requests meanwhile stay pending).
                let until = Instant::now() + backoff;
                while !state.stop && Instant::now() < until {
                    let left = until.saturating_duration_since(Instant::now());
                    state = match shared.wake.wait_timeout(state, left) {
                        Ok((s, _)) => s,
                        Err(e) => e.into_inner().0,
                    };
                }
            }
            while !state.wanted && !state.stop {
                state = shared.wake.wait(state).unwrap_or_else(|e| e.into_inner());
            }
            if state.stop {
                return;
            }
        }
        let result = prepare(dir, size, shared);
        let mut state = shared.lock();
        state.wanted = false;
        match result {
            Ok(true) => {
                state.ready = true;
                backoff = Duration::ZERO;
            }
            Ok(false) => return, // stopped midway
            Err(e) => {
                state.error = Some(format!("{}: {e}", dir.join(SPARE_FILE_NAME).display()));
                backoff = (backoff * 2).clamp(FIRST_BACKOFF, MAX_BACKOFF);
            }
        }
    }
}

/// Free bytes for an unprivileged writer on the file system of `dir`.
pub(crate) fn free_space(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::other("NUL in path"))?;
    // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path that outlives the call and `st`
    // is a valid, writable statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types differ between targets (u32 on some 32-bit ones).
    #[allow(clippy::useless_conversion)]
    let free = u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize));
    Ok(free)
}

/// Write `size` zero bytes into a fresh spare, sync it and rename it ready.
/// Returns `Ok(false)` when asked to stop midway.
///
/// A spare is only a speed-up: it is not made unless, after it, the disk
/// keeps at least two more segments' worth free — that space is for the
/// spool's own inline segments, i.e. for accepting mail. A failed attempt
/// removes its partial file, so a full disk is not kept full by a spare.
fn prepare(dir: &Path, size: usize, shared: &Shared) -> io::Result<bool> {
    let free = free_space(dir)?;
    if free < (size as u64).saturating_mul(3) {
        return Err(io::Error::other(format!(
            "not preparing a spare segment: {free} bytes free, keeping room for the queue"
        )));
    }
    let tmp = dir.join(SPARE_FILE_NAME);
    let result = write_spare(dir, &tmp, size, shared);
    if !matches!(result, Ok(true)) {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

fn write_spare(dir: &Path, tmp: &Path, size: usize, shared: &Shared) -> io::Result<bool> {
    let mut file: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(tmp)?;
    let zeros = vec![0u8; CHUNK];
    let mut left = size;
    while left > 0 {
        if shared.lock().stop {
            return Ok(false);
        }
        let n = left.min(CHUNK);
        file.write_all(&zeros[..n])?;
        left -= n;
    }
    file.sync_all()?;
    std::fs::rename(tmp, dir.join(READY_FILE_NAME))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_ready(p: &SparePreparer) -> PathBuf {
        let deadline = Instant::now() + Duration::from_secs(10);
        p.request();
        loop {
            if let Some(path) = p.take() {
                return path;
            }
            assert!(Instant::now() < deadline, "no spare within 10 s");
            thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn prepares_zero_filled_spares_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = SparePreparer::start(dir.path(), 0, 3 * CHUNK + 4096).unwrap();
        let spare = wait_ready(&p);
        let bytes = std::fs::read(&spare).unwrap();
        assert_eq!(bytes.len(), 3 * CHUNK + 4096);
        assert!(bytes.iter().all(|&b| b == 0));
        // The caller owns it: move it away, and the next one appears.
        std::fs::rename(&spare, dir.path().join("used")).unwrap();
        let next = wait_ready(&p);
        assert_eq!(next, dir.path().join(READY_FILE_NAME));
        assert!(p.take_error().is_none());
    }

    #[test]
    fn leftovers_are_removed_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(SPARE_FILE_NAME), b"partial").unwrap();
        std::fs::write(dir.path().join(READY_FILE_NAME), b"stale").unwrap();
        let p = SparePreparer::start(dir.path(), 0, 8192).unwrap();
        let spare = wait_ready(&p);
        assert_eq!(std::fs::read(spare).unwrap(), vec![0u8; 8192]);
    }

    #[test]
    fn a_failure_is_reported_and_retried_on_demand() {
        let dir = tempfile::tempdir().unwrap();
        let gone = dir.path().join("gone");
        let p = SparePreparer::start(&gone, 0, 8192).unwrap();
        p.request();
        let deadline = Instant::now() + Duration::from_secs(10);
        let error = loop {
            if let Some(e) = p.take_error() {
                break e;
            }
            assert!(Instant::now() < deadline);
            thread::sleep(Duration::from_millis(2));
        };
        assert!(error.contains(SPARE_FILE_NAME), "{error}");
        std::fs::create_dir(&gone).unwrap();
        assert!(p.take().is_none());
        wait_ready(&p);
    }

    #[test]
    fn nothing_is_prepared_until_requested() {
        let dir = tempfile::tempdir().unwrap();
        let p = SparePreparer::start(dir.path(), 0, 8192).unwrap();
        thread::sleep(Duration::from_millis(50));
        assert!(p.take().is_none());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
