//! `corepost start`: Postfix's `postfix start` — the daemon (`corepost
//! run`) in the background, detached from the terminal, its output
//! appended to `maillog_file`, or, when that is empty, its standard error
//! on /dev/null so the daemon logs through syslog (journald under systemd)
//! as Postfix does (`log/output.rs`, the `auto` rule); the command waits
//! until the daemon is ready (every core listens) or has failed, and says
//! which.
//!
//! Readiness comes over the same sd_notify protocol systemd uses
//! (`runtime::notify`): the child gets `$NOTIFY_SOCKET` naming an abstract
//! datagram socket of ours (no file, so the daemon still reaches it after
//! giving up root) and reports `READY=1`, or `STATUS=fatal: ...` before
//! exiting.

use super::daemon::{DaemonArgs, running_pid};
use super::fatal;
use corepost_config::Config;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// How long the daemon may take to listen (it allows its cores 120 s).
const START_TIMEOUT: Duration = Duration::from_secs(180);

/// `corepost start`.
pub fn start(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.check_dir() {
        return fatal(e);
    }
    match running_pid(&args) {
        Ok(Some(pid)) => return fatal(format!("the mail system is already running (PID {pid})")),
        Ok(None) => {}
        Err(e) => return fatal(e),
    }
    let config = match Config::load(&args.dir()) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    let log = match log_file(&config) {
        Ok(l) => l,
        Err(e) => return fatal(e),
    };
    let shown = log.as_deref().unwrap_or("the system log").to_string();
    let name = format!("corepost-start-{}-{}", std::process::id(), random_suffix());
    let socket = match notify_socket(&name) {
        Ok(s) => s,
        Err(e) => return fatal(format!("notify socket: {e}")),
    };
    eprintln!("corepost: starting the mail system");
    let child = match spawn(&args, log.as_deref(), &name) {
        Ok(c) => c,
        Err(e) => return fatal(format!("cannot start corepost run: {e}")),
    };
    match wait_ready(child, &socket) {
        Ok(pid) => {
            eprintln!("corepost: the mail system is running (PID {pid}); log: {shown}");
            ExitCode::SUCCESS
        }
        Err(why) => fatal(format!(
            "the mail system did not start: {why} (see {shown})"
        )),
    }
}

/// Where the background daemon's output goes: `maillog_file` (a file:
/// there is no terminal to write to), or nowhere (`None`) when it is empty
/// and the daemon logs through syslog or journald.
fn log_file(config: &Config) -> Result<Option<String>, String> {
    let file = config.get("maillog_file").map_err(|e| e.to_string())?;
    let destination = config
        .get("corepost_log_destination")
        .map_err(|e| e.to_string())?;
    if file.starts_with("/dev/") || (file.is_empty() && destination == "stderr") {
        return Err(format!(
            "maillog_file = {file:?}, corepost_log_destination = {destination}: `corepost start` runs the daemon in the background and needs a log file (e.g. `corepost config -e maillog_file=/var/log/corepost.log`) or syslog (an empty maillog_file), or use `corepost run`"
        ));
    }
    Ok((!file.is_empty()).then_some(file))
}

fn random_suffix() -> String {
    crate::pickup::maildrop::random_name()[..16].to_string()
}

/// Our end of the readiness channel: an abstract datagram socket.
fn notify_socket(name: &str) -> std::io::Result<UnixDatagram> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
    let socket = UnixDatagram::bind_addr(&addr)?;
    socket.set_read_timeout(Some(Duration::from_millis(200)))?;
    Ok(socket)
}

/// `corepost run` (this same binary) in a new session, stdin from
/// /dev/null, stdout and stderr appended to the log (or /dev/null: the
/// daemon then logs through syslog).
fn spawn(args: &DaemonArgs, log: Option<&str>, notify: &str) -> std::io::Result<Child> {
    let out = match log {
        Some(log) => std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{log}: {e}")))?,
        None => std::fs::OpenOptions::new().write(true).open("/dev/null")?,
    };
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command.arg("run");
    if let Some(dir) = &args.config_dir {
        command.arg("-c").arg(dir);
    }
    command
        .env("NOTIFY_SOCKET", format!("@{notify}"))
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    // SAFETY: setsid is async-signal-safe and touches no memory of ours;
    // it detaches the daemon from our terminal and process group.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    command.spawn()
}

/// Wait for `READY=1` (the daemon's pid) or for the child to exit (the
/// last `STATUS=` it sent, or its exit status).
fn wait_ready(mut child: Child, socket: &UnixDatagram) -> Result<u32, String> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last_status = None;
    let mut buf = vec![0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            for line in text.lines() {
                if line == "READY=1" {
                    return Ok(child.id());
                }
                if let Some(s) = line.strip_prefix("STATUS=") {
                    last_status = Some(s.to_string());
                }
            }
            continue;
        }
        if let Ok(Some(exit)) = child.try_wait() {
            // A datagram sent just before exiting may still be queued.
            while let Ok(n) = socket.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if let Some(s) = text.lines().find_map(|l| l.strip_prefix("STATUS=")) {
                    last_status = Some(s.to_string());
                }
            }
            return Err(last_status.unwrap_or_else(|| format!("corepost run exited ({exit})")));
        }
    }
    Err(format!(
        "not ready after {} seconds (PID {} is still starting)",
        START_TIMEOUT.as_secs(),
        child.id()
    ))
}
