//! The free space of a core's queue file system, as smtpd's MAIL check
//! reads it.
//!
//! Postfix's `smtpd_check_queue` calls `statfs` at every MAIL FROM. A
//! core here takes MAIL commands from many sessions at once, so it keeps
//! the figure for [`MAX_AGE`] and asks the kernel again after that: one
//! `statfs` per core and second instead of one per message. What decides
//! is unchanged — the caller compares the figure with `queue_minfree` and
//! `message_size_limit` each time and answers Postfix's `452 4.3.1
//! Insufficient system storage` — only the figure may be up to a second
//! old. That is within what the check already tolerates: it reads the
//! space once before a transaction that may then write up to
//! `message_size_limit`, which is why the margin it asks for is
//! `queue_minfree` and 1.5 times that limit; and a write that does find
//! the disk full still fails the transaction with a 4xx (the spool append
//! errors), never losing acknowledged mail.

use corepost_spool::CoreSpool;
use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long one `statfs` answer is reused.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// The last free-space figure and when it was read.
#[derive(Debug, Default)]
pub struct QueueSpace {
    last: Cell<Option<(Instant, u64)>>,
}

impl QueueSpace {
    /// Free bytes on `spool`'s file system, read at most [`MAX_AGE`] ago.
    pub fn free(&self, spool: &CoreSpool) -> std::io::Result<u64> {
        self.free_at(Instant::now(), || spool.free_space())
    }

    fn free_at(
        &self,
        now: Instant,
        read: impl FnOnce() -> std::io::Result<u64>,
    ) -> std::io::Result<u64> {
        if let Some((at, free)) = self.last.get()
            && now.saturating_duration_since(at) < MAX_AGE
        {
            return Ok(free);
        }
        // An error is not kept: the next MAIL asks again.
        let free = read()?;
        self.last.set(Some((now, free)));
        Ok(free)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_figure_is_reused_for_a_second_then_read_again() {
        let space = QueueSpace::default();
        let t0 = Instant::now();
        let reads = Cell::new(0);
        let read = |n: u64| {
            reads.set(reads.get() + 1);
            Ok(n)
        };
        assert_eq!(space.free_at(t0, || read(100)).unwrap(), 100);
        assert_eq!(space.free_at(t0 + MAX_AGE / 2, || read(7)).unwrap(), 100);
        assert_eq!(reads.get(), 1);
        assert_eq!(space.free_at(t0 + MAX_AGE, || read(7)).unwrap(), 7);
        assert_eq!(reads.get(), 2);
    }

    #[test]
    fn an_error_is_not_remembered() {
        let space = QueueSpace::default();
        let t0 = Instant::now();
        assert!(
            space
                .free_at(t0, || Err(std::io::Error::other("x")))
                .is_err()
        );
        assert_eq!(space.free_at(t0, || Ok(5)).unwrap(), 5);
    }
}
