//! The privileged delivery helper: Postfix's privilege separation for the
//! agents that must act as the recipient (local, virtual, pipe).
//!
//! `corepost run` started as root gives up root early (it becomes
//! `mail_owner`), but writing `/var/mail/<user>` or `~/Maildir` as the
//! user, or running a pipe command with `user=`, needs root. So before
//! dropping privileges the daemon starts this binary again as
//! `corepost delivery-helper`, which stays root: a small supervisor
//! ([`supervise`]) that binds a Unix socket (`$queue_directory/private/
//! delivery`, mode 0600, owned by mail_owner) and keeps a worker process
//! ([`server`]) serving it — restarted if it dies; the worker also checks
//! each peer's uid with SO_PEERCRED. The daemon's pool threads send each [`Request`]
//! there ([`deliver`]) and get the agent's [`Report`] back; the helper
//! builds the agent from its own copy of the configuration
//! (`Request::transport` names the master.cf service).
//!
//! If the supervisor itself is gone, deliveries defer (4.3.0): the unprivileged
//! daemon cannot act as the recipient, and delivering as mail_owner would
//! create files with the wrong owner. Mail is never lost: it stays queued.

pub mod server;
pub mod supervise;
pub mod wire;

use crate::delivery::agent::{Report, Request, Status};
use crate::log::Log;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The daemon's handle on its helper.
pub struct Helper {
    socket: PathBuf,
    alive: AtomicBool,
    /// How the helper exited, once it has.
    exit: std::sync::Mutex<Option<String>>,
    /// The write end of the helper's stdin: the helper exits when it
    /// reads EOF, that is when the daemon is gone.
    _lifeline: std::sync::Mutex<Option<ChildStdin>>,
}

static HELPER: OnceLock<Helper> = OnceLock::new();

/// The helper, when the daemon runs with one.
pub fn current() -> Option<&'static Helper> {
    HELPER.get()
}

/// The helper's state for `corepost status`: `running`, or down and why
/// (deliveries by local, virtual and pipe then defer until a restart: the
/// unprivileged daemon cannot start a root process again).
pub fn status_line() -> Option<String> {
    let h = current()?;
    if h.alive.load(Ordering::Acquire) {
        return Some("running".into());
    }
    let why = h.exit.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Some(format!(
        "down ({}); local, virtual and pipe deliveries defer until corepost is restarted",
        why.unwrap_or_else(|| "did not start".into())
    ))
}

/// The helper's socket in the queue directory.
pub fn socket_path(queue_dir: &Path) -> PathBuf {
    queue_dir.join("private").join("delivery")
}

/// Start the helper (as root, before dropping privileges to
/// `owner_uid`/`owner_gid`) and wait until it listens. On failure the
/// daemon still runs, but deliveries by local, virtual and pipe defer
/// until it is restarted with a working helper.
pub fn start(
    config_dir: &Path,
    queue_dir: &Path,
    owner_uid: u32,
    owner_gid: u32,
    log: &Log,
    program: &str,
) {
    let socket = socket_path(queue_dir);
    let (lifeline, alive) = match spawn(config_dir, &socket, owner_uid, owner_gid) {
        Ok((mut child, lifeline)) => {
            let log = log.clone();
            let program = program.to_string();
            std::thread::Builder::new()
                .name("delivery-helper-watch".into())
                .spawn(move || {
                    let status = child.wait();
                    if let Some(h) = current() {
                        h.alive.store(false, Ordering::Release);
                        if let Ok(s) = &status {
                            *h.exit.lock().unwrap_or_else(|e| e.into_inner()) = Some(s.to_string());
                        }
                    }
                    // A clean exit is the helper following the daemon's
                    // stop (its lifeline closed): nothing to warn about.
                    if status.as_ref().is_ok_and(|s| s.success()) {
                        return;
                    }
                    log.line(
                        &program,
                        &format!(
                            "warning: delivery helper exited ({}); local, virtual and pipe deliveries defer until corepost is restarted",
                            status.map_or_else(|e| e.to_string(), |s| s.to_string())
                        ),
                    );
                })
                .ok();
            (Some(lifeline), true)
        }
        Err(e) => {
            log.line(
                program,
                &format!("warning: cannot start the delivery helper: {e}; local, virtual and pipe deliveries defer"),
            );
            (None, false)
        }
    };
    let _ = HELPER.set(Helper {
        socket,
        alive: AtomicBool::new(alive),
        exit: std::sync::Mutex::new(None),
        _lifeline: std::sync::Mutex::new(lifeline),
    });
}

fn spawn(
    config_dir: &Path,
    socket: &Path,
    uid: u32,
    gid: u32,
) -> Result<(Child, ChildStdin), String> {
    let mut child = Command::new("/proc/self/exe")
        .arg0("corepost")
        .arg("delivery-helper")
        .arg("-c")
        .arg(config_dir)
        .arg("--socket")
        .arg(socket)
        .arg("--peer-uid")
        .arg(uid.to_string())
        .arg("--peer-gid")
        .arg(gid.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("/proc/self/exe: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let lifeline = child.stdin.take().ok_or("no stdin pipe")?;
    // Wait for "ready" (the socket is bound) with a time limit.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(line) if line.trim() == "ready" => Ok((child, lifeline)),
        Ok(line) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(if line.is_empty() {
                "it exited during start-up".to_string()
            } else {
                format!("unexpected start-up line {:?}", line.trim())
            })
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err("it did not start within 20s".into())
        }
    }
}

impl Helper {
    /// Deliver `request` through the helper (on a pool thread). Any
    /// failure to get an answer defers every recipient.
    pub fn deliver(&self, request: &Request) -> Report {
        if !self.alive.load(Ordering::Acquire) {
            crate::metrics::helper_request(false);
            return defer_all(request, "delivery helper is not running");
        }
        let exchanged = self.exchange(request);
        crate::metrics::helper_request(exchanged.is_ok());
        match exchanged {
            Ok(report) => report,
            Err(e) => defer_all(request, &format!("delivery helper: {e}")),
        }
    }

    fn exchange(&self, request: &Request) -> Result<Report, String> {
        let mut stream = UnixStream::connect(&self.socket)
            .map_err(|e| format!("connect {}: {e}", self.socket.display()))?;
        wire::write_frame(&mut stream, &wire::encode_request(request))
            .map_err(|e| format!("send: {e}"))?;
        let payload = wire::read_frame(&mut stream).map_err(|e| format!("receive: {e}"))?;
        wire::decode_report(&payload)
    }
}

/// Every recipient of `request` deferred with 4.3.0 and `why`.
pub fn defer_all(request: &Request, why: &str) -> Report {
    Report {
        results: request
            .recipients
            .iter()
            .map(|r| (r.index, Status::deferred("4.3.0", why)))
            .collect(),
        forwards: Vec::new(),
        expanded: Vec::new(),
    }
}
