//! The writer thread: takes events from the cores' channel, appends them
//! to the event file and hands them to the hooks.

use super::EventSettings;
use super::hooks::{Hook, HookTarget};
use crate::log::Log;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Events waiting for the writer thread; beyond this the cores drop them
/// (counted) rather than wait.
const CHANNEL: usize = 65_536;
/// Events written (and handed to hooks) at a time.
const BATCH: usize = 1024;
/// Warnings about dropped events: at most one per this interval.
pub(super) const WARN_INTERVAL: Duration = Duration::from_secs(10);

pub(super) struct Dispatcher {
    pub(super) settings: EventSettings,
    tx: flume::Sender<String>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    done: flume::Receiver<()>,
}

impl Dispatcher {
    pub(super) fn start(settings: EventSettings, log: Log) -> Result<Dispatcher, String> {
        let file = match settings.file.as_str() {
            "" => None,
            path => Some(EventFile::open(path)?),
        };
        let hooks = settings
            .hooks
            .iter()
            .map(|h| {
                let target = HookTarget::parse(h)?;
                Ok(Hook::start(target, settings.hook_buffer, log.clone()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let (tx, rx) = flume::bounded(CHANNEL);
        let (done_tx, done) = flume::bounded(1);
        let reopen = Arc::new(AtomicBool::new(false));
        let dropped = Arc::new(AtomicU64::new(0));
        let mut state = Writer {
            file,
            hooks,
            reopen: Arc::clone(&reopen),
            dropped: Arc::clone(&dropped),
            log,
            warned: None,
        };
        let thread = std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                state.run(&rx);
                let _ = done_tx.send(());
            })
            .map_err(|e| format!("starting the event writer: {e}"))?;
        Ok(Dispatcher {
            settings,
            tx,
            reopen,
            dropped,
            thread: Some(thread),
            done,
        })
    }

    /// Queue an event; never waits.
    pub(super) fn send(&self, event: String) {
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(super) fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
        // Wake the writer even when no event comes.
        let _ = self.tx.try_send(String::new());
    }

    /// Close the channel and wait (up to `limit`) for the writer and the
    /// hooks to write what they hold.
    pub(super) fn finish(mut self, limit: Duration) {
        let (dummy, _) = flume::bounded(1);
        drop(std::mem::replace(&mut self.tx, dummy));
        if self.done.recv_timeout(limit).is_ok()
            && let Some(t) = self.thread.take()
        {
            let _ = t.join();
        }
    }
}

struct Writer {
    file: Option<EventFile>,
    hooks: Vec<Hook>,
    reopen: Arc<AtomicBool>,
    dropped: Arc<AtomicU64>,
    log: Log,
    warned: Option<Instant>,
}

impl Writer {
    fn run(&mut self, rx: &flume::Receiver<String>) {
        while let Ok(first) = rx.recv() {
            let mut batch: Vec<String> = Vec::with_capacity(64);
            batch.extend(Some(first).filter(|e| !e.is_empty()));
            batch.extend(rx.try_iter().take(BATCH).filter(|e| !e.is_empty()));
            let asked = self.reopen.swap(false, Ordering::Relaxed);
            if self.file.as_mut().is_some_and(|f| f.moved(!asked)) {
                self.reopen_file();
            }
            if !batch.is_empty() {
                self.write(&batch);
            }
            self.warn_dropped();
        }
        for hook in self.hooks.drain(..) {
            hook.finish(Duration::from_secs(3));
        }
    }

    fn write(&mut self, batch: &[String]) {
        if let Some(f) = &mut self.file {
            let mut data = String::with_capacity(batch.iter().map(|e| e.len() + 1).sum());
            for e in batch {
                data.push_str(e);
                data.push('\n');
            }
            if let Err(e) = f.file.write_all(data.as_bytes()) {
                self.log.line(
                    "corepost/events",
                    &format!("warning: corepost_event_log_file {}: {e}", f.path),
                );
            }
        }
        for hook in &self.hooks {
            hook.push(batch);
        }
    }

    fn reopen_file(&mut self) {
        let Some(path) = self.file.as_ref().map(|f| f.path.clone()) else {
            return;
        };
        match EventFile::open(&path) {
            Ok(f) => self.file = Some(f),
            Err(e) => self.log.line("corepost/events", &format!("warning: {e}")),
        }
    }

    fn warn_dropped(&mut self) {
        if self.warned.is_some_and(|w| w.elapsed() < WARN_INTERVAL) {
            return;
        }
        let n = self.dropped.swap(0, Ordering::Relaxed);
        if n > 0 {
            self.warned = Some(Instant::now());
            self.log.line(
                "corepost/events",
                &format!("warning: {n} events dropped: the event writer is behind ({CHANNEL} events waiting)"),
            );
        }
    }
}

struct EventFile {
    file: File,
    path: String,
    id: (u64, u64),
    checked: Instant,
}

impl EventFile {
    fn open(path: &str) -> Result<EventFile, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| format!("corepost_event_log_file {path}: {e}"))?;
        let m = file
            .metadata()
            .map_err(|e| format!("corepost_event_log_file {path}: {e}"))?;
        Ok(EventFile {
            file,
            path: path.to_string(),
            id: (m.dev(), m.ino()),
            checked: Instant::now(),
        })
    }

    /// Renamed or removed by a rotation (`throttled`: checked once a
    /// second). A file still in place is kept: the daemon may no longer have
    /// the right to open it.
    fn moved(&mut self, throttled: bool) -> bool {
        if throttled && self.checked.elapsed() < Duration::from_secs(1) {
            return false;
        }
        self.checked = Instant::now();
        match std::fs::metadata(&self.path) {
            Ok(m) => (m.dev(), m.ino()) != self.id,
            Err(_) => true,
        }
    }
}
