//! How the control thread waits: in poll(2) on its two listening sockets
//! and a wake-up socket, with no timeout, so an idle daemon's control
//! thread never runs (it used to look every 20 ms), and a stop reaches it
//! at once.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

/// The two ends of the wake-up: [`Waker::wake`] makes [`wait`] return.
#[derive(Debug)]
pub(super) struct Waker {
    send: UnixStream,
    receive: UnixStream,
}

impl Waker {
    pub(super) fn new() -> std::io::Result<Waker> {
        let (send, receive) = UnixStream::pair()?;
        send.set_nonblocking(true)?;
        receive.set_nonblocking(true)?;
        Ok(Waker { send, receive })
    }

    /// Wake the waiting thread (a full socket buffer already will).
    pub(super) fn wake(&self) {
        let _ = (&self.send).write(&[1]);
    }

    /// Take the wake-ups that arrived.
    fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.receive).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// Block until one of `fds` is readable or `waker` was woken; which of
/// `fds` are readable (all false after a wake-up alone). An interrupted or
/// failed poll returns with none, so the caller looks again.
pub(super) fn wait<const N: usize>(fds: [RawFd; N], waker: &Waker) -> [bool; N] {
    let entry = |fd| libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut polled: Vec<libc::pollfd> = std::iter::once(waker.receive.as_raw_fd())
        .chain(fds)
        .map(entry)
        .collect();
    // SAFETY: `polled` holds `polled.len()` initialised pollfd entries and
    // outlives the call; poll writes only their `revents`.
    let n = unsafe { libc::poll(polled.as_mut_ptr(), polled.len() as libc::nfds_t, -1) };
    let mut ready = [false; N];
    if n <= 0 {
        return ready;
    }
    if polled[0].revents != 0 {
        waker.drain();
    }
    for (r, p) in ready.iter_mut().zip(&polled[1..]) {
        *r = p.revents != 0;
    }
    ready
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::{Duration, Instant};

    #[test]
    fn waits_for_a_connection_or_a_wake_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let waker = std::sync::Arc::new(Waker::new().unwrap());
        let fd = listener.as_raw_fd();
        // A connection: that listener is readable.
        let _client = UnixStream::connect(&path).unwrap();
        assert_eq!(wait([fd], &waker), [true]);
        listener.accept().unwrap();
        // Nothing pending: it blocks until woken from another thread.
        let w = std::sync::Arc::clone(&waker);
        let t0 = Instant::now();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            w.wake();
        });
        assert_eq!(wait([fd], &waker), [false]);
        assert!(t0.elapsed() >= Duration::from_millis(90));
        t.join().unwrap();
        // The wake-up was taken: a later wake-up is needed again.
        waker.wake();
        assert_eq!(wait([fd], &waker), [false]);
    }
}
