//! Logging in Postfix's format, so existing log tools work unchanged:
//! `Nov 24 07:30:00 mx corepost/smtpd[1234]: connect from unknown[192.0.2.1]`.
//!
//! Lines go to `maillog_file` (opened for appending; its path must start
//! with one of `maillog_file_prefixes`), syslog, journald or standard error
//! (the rule is in `log/output.rs`); `corepost_log_format = json` writes
//! each line as a JSON object instead. On the cores,
//! lines are collected in a per-thread buffer and written every few
//! milliseconds (the first line into an empty buffer calls the thread's
//! arming hook, and the runtime's flusher calls [`Log::flush`] shortly
//! after: `runtime/log_flush.rs`) or when the buffer
//! fills — a relay writes several lines per message, and one write(2) per
//! line would be a noticeable part of its CPU. Every write holds whole
//! lines, so lines from different cores never interleave. Elsewhere (the
//! main thread, tools) each line is written at once.

mod output;

pub use output::LogSettings;
use output::{Style, Target};
use std::cell::{Cell, RefCell};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, RwLock};

/// Write the per-thread buffer once it holds this much.
const BUFFER_LIMIT: usize = 32 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BUFFERED: Cell<bool> = const { Cell::new(false) };
    /// Called when a line goes into this thread's empty buffer, so that a
    /// flush is due only while there is something to write.
    static ARM_FLUSH: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Where log lines go; shared by all cores.
#[derive(Debug, Clone)]
pub struct Log {
    sink: Arc<Sink>,
    hostname: Arc<str>,
    pid: u32,
}

/// The destination (replaced by a reopen) and how lines are shaped for it,
/// read once per line without a lock.
#[derive(Debug)]
struct Sink {
    target: RwLock<Target>,
    /// `Style` as a number.
    style: AtomicU8,
    facility: AtomicU8,
    /// The settings `target` was opened with.
    settings: RwLock<LogSettings>,
}

impl Log {
    /// Log to `maillog_file` if set, else to standard error.
    pub fn open(maillog_file: &str, prefixes: &[String], hostname: &str) -> Result<Log, String> {
        Log::with_settings(&LogSettings::file(maillog_file, prefixes), hostname)
    }

    /// Log where main.cf says: `maillog_file`, syslog, journald or
    /// standard error (see `log/output.rs`), as `corepost_log_format` says.
    pub fn from_config(config: &corepost_config::Config) -> Result<Log, String> {
        let hostname = config.get("myhostname").map_err(|e| e.to_string())?;
        Log::with_settings(&LogSettings::from_config(config)?, &hostname)
    }

    fn with_settings(settings: &LogSettings, hostname: &str) -> Result<Log, String> {
        let target = Target::open(settings)?;
        Ok(Log {
            sink: Arc::new(Sink {
                style: AtomicU8::new(target.style(settings.json) as u8),
                facility: AtomicU8::new(target.facility()),
                target: RwLock::new(target),
                settings: RwLock::new(settings.clone()),
            }),
            hostname: hostname.into(),
            pid: std::process::id(),
        })
    }

    pub fn stderr(hostname: &str) -> Log {
        Log::with_settings(&LogSettings::file("", &[]), hostname)
            .expect("standard error needs nothing opened")
    }

    /// Open the destination again, with `settings` (a reload's) or the
    /// current ones: `corepost reload` and `corepost logrotate` (Postfix's
    /// postlogd reopens maillog_file on both). On error the old one stays.
    pub fn reopen(&self, settings: Option<&LogSettings>) -> Result<(), String> {
        let settings = match settings {
            Some(s) => s.clone(),
            None => read(&self.sink.settings).clone(),
        };
        // The same file, still there: keep it (the daemon may no longer
        // have the right to open it).
        if settings == *read(&self.sink.settings) && !read(&self.sink.target).moved(false) {
            return Ok(());
        }
        let target = Target::open(&settings)?;
        self.flush();
        self.sink
            .style
            .store(target.style(settings.json) as u8, Ordering::Relaxed);
        self.sink
            .facility
            .store(target.facility(), Ordering::Relaxed);
        *self.sink.target.write().unwrap_or_else(|p| p.into_inner()) = target;
        *self
            .sink
            .settings
            .write()
            .unwrap_or_else(|p| p.into_inner()) = settings;
        Ok(())
    }

    /// Write one line as `program` (e.g. `corepost/smtpd`).
    pub fn line(&self, program: &str, message: &str) {
        let line = match self.sink.style.load(Ordering::Relaxed) {
            s if s == Style::Json as u8 => self.json_line(program, message),
            s if s == Style::Syslog as u8 => self.text_line(program, message, true),
            _ => self.text_line(program, message, false),
        };
        if !BUFFERED.with(Cell::get) {
            self.write(line.as_bytes());
            return;
        }
        let (first, full) = BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            let first = b.is_empty();
            b.extend_from_slice(line.as_bytes());
            (first, b.len() >= BUFFER_LIMIT)
        });
        if full {
            self.flush();
        } else if first {
            ARM_FLUSH.with(|arm| {
                if let Some(arm) = &*arm.borrow() {
                    arm();
                }
            });
        }
    }

    /// Before the daemon gives up root: `maillog_file` becomes the mail
    /// owner's, so that a rotation can be followed (see `log/output.rs`).
    pub fn hand_over(&self, uid: u32, gid: u32) -> Result<(), String> {
        match &*read(&self.sink.target) {
            Target::File(f) => f.chown(uid, gid),
            _ => Ok(()),
        }
    }

    /// Collect this thread's lines until [`Log::flush`] (the cores do);
    /// `arm` is called whenever a line goes into the empty buffer, and
    /// must see to it that a flush follows soon.
    pub fn buffer_this_thread(&self, arm: impl Fn() + 'static) {
        BUFFERED.with(|b| b.set(true));
        ARM_FLUSH.with(|a| *a.borrow_mut() = Some(Box::new(arm)));
    }

    /// Write what this thread has collected.
    pub fn flush(&self) {
        let data = BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if !data.is_empty() {
            self.write(&data);
        }
    }

    fn write(&self, data: &[u8]) {
        let target = read(&self.sink.target);
        target.write(data);
        if target.moved(true) {
            drop(target);
            let _ = self.reopen(None);
        }
    }

    /// Postfix's line, or (for syslog) `<PRI>` and no hostname, as
    /// syslog(3) sends it.
    fn text_line(&self, program: &str, message: &str, syslog: bool) -> String {
        let mut line = String::with_capacity(message.len() + 64);
        if syslog {
            let facility = self.sink.facility.load(Ordering::Relaxed);
            let priority = facility * 8 + output::severity(message).0;
            line.push('<');
            line.push_str(&priority.to_string());
            line.push('>');
        }
        line.push_str(&crate::time::log_stamp());
        line.push(' ');
        if !syslog {
            line.push_str(&self.hostname);
            line.push(' ');
        }
        line.push_str(program);
        line.push('[');
        line.push_str(&self.pid.to_string());
        line.push_str("]: ");
        for c in message.chars() {
            // Never let peer-controlled text break the line structure.
            if c.is_control() {
                line.push('?')
            } else {
                line.push(c)
            }
        }
        line.push('\n');
        line
    }

    /// `corepost_log_format = json`: the same line as an object.
    fn json_line(&self, program: &str, message: &str) -> String {
        let queue_id = message
            .split_once(": ")
            .map(|(id, _)| id)
            .filter(|id| id.parse::<corepost_spool::QueueId>().is_ok());
        let mut line = crate::events::json::Object::new()
            .str(
                "time",
                &crate::events::json::rfc3339_micros(corepost_spool::queue_id::now_micros()),
            )
            .str("host", &self.hostname)
            .str("program", program)
            .num("pid", u64::from(self.pid))
            .str("severity", output::severity(message).1)
            .opt("queue_id", queue_id)
            .str("message", message)
            .opt("bounce_class", crate::bounce_class::of_log_line(message))
            .finish();
        line.push('\n');
        line
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}
