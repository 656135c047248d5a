//! Pickup's trigger: a thread blocked on an inotify descriptor watching the
//! maildrop, which tells core 0 when `sendmail` renamed a new submission
//! into it. Postfix's postdrop triggers pickup through the `public/pickup`
//! FIFO and pickup otherwise wakes every 60 s (master.cf's wakeup column);
//! corepost's `sendmail` needs nothing from the daemon, so the kernel tells
//! instead, and pickup no longer scans an unchanged maildrop five times a
//! second. Without inotify (a failed init or watch), pickup polls as before.

use std::ffi::CString;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An inotify descriptor, closed on drop.
struct Inotify(RawFd);

impl Inotify {
    fn new() -> Option<Inotify> {
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        (fd >= 0).then_some(Inotify(fd))
    }

    /// Block until events arrive; false on an error other than EINTR.
    fn wait(&self, buf: &mut [u8]) -> bool {
        loop {
            // SAFETY: `buf` is valid for writes of its length for the call,
            // and the descriptor is open while `self` lives.
            let n = unsafe { libc::read(self.0, buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                return true;
            }
            if n == 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return false;
            }
        }
    }
}

impl Drop for Inotify {
    fn drop(&mut self) {
        // SAFETY: we own the descriptor and close it once.
        unsafe { libc::close(self.0) };
    }
}

/// Watch `maildrop` for files moved or written into it: a receiver that
/// gets a message (coalesced) after each such change, or `None` when the
/// kernel refuses the watch.
pub(super) fn start(maildrop: &Path) -> Option<flume::Receiver<()>> {
    let path = CString::new(maildrop.as_os_str().as_bytes()).ok()?;
    let events = Inotify::new()?;
    // SAFETY: the descriptor is open and `path` a valid NUL-terminated string.
    let watch = unsafe {
        libc::inotify_add_watch(
            events.0,
            path.as_ptr(),
            libc::IN_MOVED_TO | libc::IN_CLOSE_WRITE,
        )
    };
    if watch < 0 {
        return None;
    }
    let (tx, rx) = flume::bounded(1);
    std::thread::Builder::new()
        .name("maildrop-watch".into())
        .spawn(move || {
            let mut buf = [0u8; 4096];
            while events.wait(&mut buf) {
                // Full: a wake-up is already pending.
                if let Err(flume::TrySendError::Disconnected(_)) = tx.try_send(()) {
                    return;
                }
            }
        })
        .ok()?;
    Some(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_file_renamed_into_the_maildrop_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let changes = start(dir.path()).expect("inotify");
        assert!(changes.recv_timeout(Duration::from_millis(100)).is_err());
        // As sendmail does: a dot file written, then renamed to its name.
        let tmp = dir.path().join(".x.tmp");
        std::fs::write(&tmp, b"submission").unwrap();
        std::fs::rename(&tmp, dir.path().join("x")).unwrap();
        assert!(changes.recv_timeout(Duration::from_secs(5)).is_ok());
    }
}
