//! Logging in Postfix's format, so existing log tools work unchanged:
//! `Nov 24 07:30:00 mx corepost/smtpd[1234]: connect from unknown[192.0.2.1]`.
//!
//! Lines go to standard error, or to `maillog_file` (opened for appending;
//! its path must start with one of `maillog_file_prefixes`). On the cores,
//! lines are collected in a per-thread buffer and written every few
//! milliseconds (the runtime calls [`Log::flush`]) or when the buffer
//! fills — a relay writes several lines per message, and one write(2) per
//! line would be a noticeable part of its CPU. Every write holds whole
//! lines, so lines from different cores never interleave. Elsewhere (the
//! main thread, tools) each line is written at once.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Arc;

/// Write the per-thread buffer once it holds this much.
const BUFFER_LIMIT: usize = 32 * 1024;

thread_local! {
    static BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static BUFFERED: Cell<bool> = const { Cell::new(false) };
}

/// Where log lines go; shared by all cores.
#[derive(Debug, Clone)]
pub struct Log {
    sink: Arc<Sink>,
    hostname: Arc<str>,
    pid: u32,
}

#[derive(Debug)]
enum Sink {
    Stderr,
    File(File),
}

impl Log {
    /// Log to `maillog_file` if set, else to standard error.
    pub fn open(maillog_file: &str, prefixes: &[String], hostname: &str) -> Result<Log, String> {
        let sink = if maillog_file.is_empty() {
            Sink::Stderr
        } else {
            if maillog_file != "/dev/stderr"
                && !prefixes
                    .iter()
                    .any(|p| maillog_file.starts_with(p.as_str()))
            {
                return Err(format!(
                    "maillog_file {maillog_file} does not start with one of maillog_file_prefixes ({})",
                    prefixes.join(", ")
                ));
            }
            Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(maillog_file)
                    .map_err(|e| format!("maillog_file {maillog_file}: {e}"))?,
            )
        };
        Ok(Log {
            sink: Arc::new(sink),
            hostname: hostname.into(),
            pid: std::process::id(),
        })
    }

    pub fn stderr(hostname: &str) -> Log {
        Log {
            sink: Arc::new(Sink::Stderr),
            hostname: hostname.into(),
            pid: std::process::id(),
        }
    }

    /// Write one line as `program` (e.g. `corepost/smtpd`).
    pub fn line(&self, program: &str, message: &str) {
        let mut line = String::with_capacity(message.len() + 64);
        line.push_str(&crate::time::log_stamp());
        line.push(' ');
        line.push_str(&self.hostname);
        line.push(' ');
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
        if !BUFFERED.with(Cell::get) {
            self.write(line.as_bytes());
            return;
        }
        let full = BUFFER.with(|b| {
            let mut b = b.borrow_mut();
            b.extend_from_slice(line.as_bytes());
            b.len() >= BUFFER_LIMIT
        });
        if full {
            self.flush();
        }
    }

    /// Collect this thread's lines until [`Log::flush`] (the cores do).
    pub fn buffer_this_thread(&self) {
        BUFFERED.with(|b| b.set(true));
    }

    /// Write what this thread has collected.
    pub fn flush(&self) {
        let data = BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
        if !data.is_empty() {
            self.write(&data);
        }
    }

    fn write(&self, data: &[u8]) {
        let _ = match &*self.sink {
            Sink::Stderr => std::io::stderr().lock().write_all(data),
            Sink::File(f) => (&*f).write_all(data),
        };
    }
}
