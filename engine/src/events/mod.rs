//! Structured events: one JSON object per reception, delivery, deferral,
//! bounce, expiry, rejection, TLS session and administrative action,
//! written beside the Postfix-format log (which stays the default and is
//! unchanged) for log pipelines — KumoMTA's "log hooks" are the model.
//!
//! - `corepost_event_log_file`: a JSON-lines file (reopened by `corepost
//!   reload`/`logrotate`, and when renamed away);
//! - `corepost_event_hooks`: `unix:/path`, `tcp:host:port` (JSON lines over
//!   a kept stream connection) and `http://host:port/path` (one POST of
//!   `application/x-ndjson` per batch) targets.
//!
//! Emission never blocks a core and costs one relaxed atomic load when no
//! event output is configured: the sites call the functions of
//! `sites.rs`, which return at once unless [`enabled`]. Events go through a
//! bounded channel to a writer thread, which appends them to the file and
//! hands them to each hook's bounded buffer; a hook that is down keeps
//! `corepost_event_hook_buffer` events and drops the newer ones, with a
//! warning in the log that counts them (as does a full channel).

//! Every event has `time` (UTC, RFC 3339, microseconds), `event`, `host`
//! (myhostname) and `program` (the Postfix process name of the matching
//! log line); then, by `event`:
//!
//! | event | fields |
//! |---|---|
//! | `reception` | queue_id, sender, recipients, size, client, protocol, helo, sasl_username, tls |
//! | `delivery`, `deferral`, `bounce` | queue_id, sender, recipient, orig_recipient, next_hop (`relay=`), status, dsn, response, bounce_class (deferral, bounce: see `crate::bounce_class`), size, delay, delay_before_qmgr, delay_in_qmgr, delay_conn_setup, delay_transmission (`delays=a/b/c/d`), and over a connection from an egress pool (`crate::egress`) egress_pool, egress_source, egress_address |
//! | `expiry` | queue_id, sender, status (`expired`) |
//! | `rejection` | queue_id (none for NOQUEUE), stage (the command), client, sender, recipient, status, code, dsn, response |
//! | `tls` | direction (inbound/outbound), peer, trust, description (as the TLS log line) |
//! | `admin` | queue_id, action (`removed`, `placed on hold`, ..., `reload`, `logrotate`) |
//!
//! Absent values are left out rather than null.

mod hooks;
pub mod json;
mod sites;
mod writer;

pub use sites::*;

use crate::log::Log;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

static ENABLED: AtomicBool = AtomicBool::new(false);
static DISPATCH: RwLock<Option<Arc<writer::Dispatcher>>> = RwLock::new(None);

/// What main.cf says about events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventSettings {
    pub file: String,
    pub hooks: Vec<String>,
    pub hook_buffer: usize,
    pub hostname: String,
}

impl EventSettings {
    pub fn from_config(config: &corepost_config::Config) -> Result<EventSettings, String> {
        let e = |e: corepost_config::ConfigError| e.to_string();
        let file = config.get("corepost_event_log_file").map_err(e)?;
        let prefixes = config.get_list("maillog_file_prefixes").map_err(e)?;
        if !file.is_empty() && !prefixes.iter().any(|p| file.starts_with(p.as_str())) {
            return Err(format!(
                "corepost_event_log_file {file} does not start with one of maillog_file_prefixes ({})",
                prefixes.join(", ")
            ));
        }
        let hooks = config.get_list("corepost_event_hooks").map_err(e)?;
        for h in &hooks {
            hooks::HookTarget::parse(h).map_err(|why| format!("corepost_event_hooks: {why}"))?;
        }
        let buffer = config.get_int("corepost_event_hook_buffer").map_err(e)?;
        Ok(EventSettings {
            file,
            hooks,
            hook_buffer: usize::try_from(buffer.max(1)).unwrap_or(1),
            hostname: config.get("myhostname").map_err(e)?,
        })
    }

    fn is_off(&self) -> bool {
        self.file.is_empty() && self.hooks.is_empty()
    }
}

/// Whether events are being written: the sites' first (and, when off,
/// only) check.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Start, change or stop event output (at start and at each reload). The
/// same settings again only reopen the file.
pub fn configure(settings: &EventSettings, log: &Log) -> Result<(), String> {
    let mut current = DISPATCH.write().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = current.as_ref()
        && d.settings == *settings
    {
        d.reopen();
        return Ok(());
    }
    if settings.is_off() {
        ENABLED.store(false, Ordering::Relaxed);
        *current = None;
        return Ok(());
    }
    let dispatcher = writer::Dispatcher::start(settings.clone(), log.clone())?;
    *current = Some(Arc::new(dispatcher));
    ENABLED.store(true, Ordering::Relaxed);
    Ok(())
}

/// Before the daemon gives up root: the event file becomes the mail
/// owner's, as `maillog_file` (see `Log::hand_over`).
pub fn hand_over(uid: u32, gid: u32) -> Result<(), String> {
    let dispatch = DISPATCH.read().unwrap_or_else(|p| p.into_inner());
    match dispatch.as_ref().map(|d| d.settings.file.as_str()) {
        Some(file) if !file.is_empty() => std::os::unix::fs::lchown(file, Some(uid), Some(gid))
            .map_err(|e| format!("corepost_event_log_file {file}: chown: {e}")),
        _ => Ok(()),
    }
}

/// Reopen the event file (`corepost logrotate`).
pub fn reopen() {
    if let Some(d) = DISPATCH.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
        d.reopen();
    }
}

/// At shutdown: stop taking events, and give the writer and the hooks a
/// moment to write what they hold.
pub fn shutdown() {
    ENABLED.store(false, Ordering::Relaxed);
    let taken = DISPATCH.write().unwrap_or_else(|p| p.into_inner()).take();
    if let Some(d) = taken
        && let Ok(d) = Arc::try_unwrap(d)
    {
        d.finish(std::time::Duration::from_secs(5));
    }
}

/// Build and queue one event of `kind`.
fn emit(kind: &str, build: impl FnOnce(json::Object) -> json::Object) {
    let dispatch = DISPATCH.read().unwrap_or_else(|p| p.into_inner());
    let Some(d) = dispatch.as_ref() else {
        return;
    };
    let object = json::Object::new()
        .str(
            "time",
            &json::rfc3339_micros(corepost_spool::queue_id::now_micros()),
        )
        .str("event", kind)
        .str("host", &d.settings.hostname);
    d.send(build(object).finish());
}
