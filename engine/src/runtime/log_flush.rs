//! A core's log buffer, written on demand: the first line into an empty
//! buffer arms one flush [`FLUSH_DELAY`] later, so every line reaches the
//! log within that delay while the lines of a busy moment share one
//! write(2) — and an idle core has no timer at all. (A flush every 10 ms
//! whether or not anything was logged woke each idle core 100 times a
//! second, each wake-up costing a `membarrier` and several
//! `io_uring_enter` in glommio's sleep.)

use crate::context::Signal;
use crate::log::Log;
use std::time::Duration;

/// How long a line may wait in a core's buffer.
pub(super) const FLUSH_DELAY: Duration = Duration::from_millis(10);

/// Buffer this thread's log lines and spawn the task that writes them;
/// call on the core's executor before it logs anything.
pub(super) fn start(log: &Log) {
    let armed = Signal::default();
    let arm = armed.clone();
    log.buffer_this_thread(move || arm.notify_one());
    let log = log.clone();
    glommio::spawn_local(async move {
        loop {
            armed.wait().await;
            glommio::timer::sleep(FLUSH_DELAY).await;
            log.flush();
        }
    })
    .detach();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// Waits up to a second for `path` to hold `n` lines; how long it took.
    async fn lines_within(path: &std::path::Path, n: usize) -> Option<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(1) {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.lines().count() >= n {
                return Some(t0.elapsed());
            }
            glommio::timer::sleep(Duration::from_millis(1)).await;
        }
        None
    }

    #[test]
    fn each_batch_of_lines_is_written_shortly_after_its_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maillog");
        let prefix = dir.path().to_string_lossy().into_owned();
        let log = Log::open(path.to_str().unwrap(), &[prefix], "mx.test").unwrap();
        glommio::LocalExecutorBuilder::default()
            .spawn(move || async move {
                start(&log);
                log.line("corepost/test", "first");
                log.line("corepost/test", "second");
                // Buffered, not written line by line.
                assert_eq!(std::fs::read_to_string(&path).unwrap_or_default(), "");
                let took = lines_within(&path, 2).await.expect("batch not written");
                assert!(took < Duration::from_millis(500), "{took:?}");
                // Idle for a while, then a new line arms the flush again.
                glommio::timer::sleep(Duration::from_millis(50)).await;
                log.line("corepost/test", "third");
                let took = lines_within(&path, 3)
                    .await
                    .expect("later line not written");
                assert!(took < Duration::from_millis(500), "{took:?}");
                let text = std::fs::read_to_string(&path).unwrap();
                let order: Vec<&str> = text.lines().filter_map(|l| l.split("]: ").nth(1)).collect();
                assert_eq!(order, ["first", "second", "third"], "{text}");
            })
            .unwrap()
            .join()
            .unwrap();
    }
}
