//! A bounded pool of threads for deliveries that block: file writes with
//! fsync, child processes. The cores never block; they hand a closure to
//! the transport's pool and await its result over a oneshot channel.
//!
//! One pool per transport name, process-wide (created on first use), with
//! as many threads as the transport's master.cf `maxproc` (or
//! `default_process_limit`): that is the most deliveries of that transport
//! running at once, as Postfix's process limit is. Threads are started
//! lazily up to the limit and live as long as the process. A size change
//! at reload applies to pools created afterwards only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

type Task = Box<dyn FnOnce() + Send + 'static>;

/// A fixed-size thread pool.
pub struct BlockingPool {
    name: String,
    limit: usize,
    state: Mutex<PoolState>,
    ready: std::sync::Condvar,
}

struct PoolState {
    queue: std::collections::VecDeque<Task>,
    threads: usize,
    idle: usize,
}

impl std::fmt::Debug for BlockingPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BlockingPool({}, {})", self.name, self.limit)
    }
}

impl BlockingPool {
    pub fn new(name: &str, limit: usize) -> Arc<BlockingPool> {
        Arc::new(BlockingPool {
            name: name.to_string(),
            limit: limit.max(1),
            state: Mutex::new(PoolState {
                queue: std::collections::VecDeque::new(),
                threads: 0,
                idle: 0,
            }),
            ready: std::sync::Condvar::new(),
        })
    }

    /// The process-wide pool of `transport`, created with `limit` threads.
    pub fn for_transport(transport: &str, limit: usize) -> Arc<BlockingPool> {
        static POOLS: OnceLock<Mutex<HashMap<String, Arc<BlockingPool>>>> = OnceLock::new();
        let pools = POOLS.get_or_init(|| Mutex::new(HashMap::new()));
        let mut pools = pools.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            pools
                .entry(transport.to_string())
                .or_insert_with(|| BlockingPool::new(transport, limit)),
        )
    }

    /// Queue `f` for a pool thread at once; the future resolves with its
    /// result (`None` if it panicked). When the pool is busy the task
    /// waits its turn.
    pub fn run<T: Send + 'static, F: FnOnce() -> T + Send + 'static>(
        self: &Arc<Self>,
        f: F,
    ) -> impl std::future::Future<Output = Option<T>> + use<T, F> {
        let (tx, rx) = futures_channel::oneshot::channel();
        let task: Task = Box::new(move || {
            let _ = tx.send(f());
        });
        self.submit(task);
        async move { rx.await.ok() }
    }

    fn submit(self: &Arc<Self>, task: Task) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.queue.push_back(task);
        if state.idle == 0 && state.threads < self.limit {
            state.threads += 1;
            let pool = Arc::clone(self);
            let spawned = std::thread::Builder::new()
                .name(format!("corepost-{}", self.name))
                .spawn(move || pool.work());
            if spawned.is_err() {
                state.threads -= 1;
            }
        } else {
            self.ready.notify_one();
        }
    }

    fn work(&self) {
        loop {
            let task = {
                let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
                loop {
                    if let Some(t) = state.queue.pop_front() {
                        break t;
                    }
                    state.idle += 1;
                    state = self.ready.wait(state).unwrap_or_else(|p| p.into_inner());
                    state.idle -= 1;
                }
            };
            // A panicking delivery must not take the thread down with it:
            // the oneshot sender is dropped and the caller sees `None`.
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(task));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn runs_at_most_limit_at_once() {
        let pool = BlockingPool::new("t", 2);
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let results = futures_lite::future::block_on(async {
            let mut futures = Vec::new();
            for i in 0..6 {
                let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
                futures.push(pool.run(move || {
                    let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    std::thread::sleep(std::time::Duration::from_millis(20));
                    running.fetch_sub(1, Ordering::SeqCst);
                    i * 2
                }));
            }
            let mut out = Vec::new();
            for f in futures {
                out.push(f.await);
            }
            out
        });
        assert_eq!(
            results,
            vec![Some(0), Some(2), Some(4), Some(6), Some(8), Some(10)]
        );
        assert!(peak.load(Ordering::SeqCst) <= 2);
    }

    #[test]
    fn a_panic_is_none() {
        let pool = BlockingPool::new("p", 1);
        let r: Option<u8> = futures_lite::future::block_on(pool.run(|| panic!("boom")));
        assert_eq!(r, None);
        assert_eq!(futures_lite::future::block_on(pool.run(|| 7)), Some(7));
    }
}
