//! `corepost run`, `stop`, `status` and `reload`: running the daemon and
//! talking to it through its pid file (`$queue_directory/corepost.pid`).

use super::fatal;
use clap::Args;
use corepost_config::{Config, default_config_dir};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Debug, Args)]
pub struct DaemonArgs {
    /// Configuration directory; -C is the same (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', short_alias = 'C', value_name = "DIR")]
    pub(super) config_dir: Option<PathBuf>,
}

impl DaemonArgs {
    pub(super) fn dir(&self) -> PathBuf {
        self.config_dir.clone().unwrap_or_else(default_config_dir)
    }

    /// A named configuration directory must hold main.cf, as in Postfix.
    pub(super) fn check_dir(&self) -> Result<(), String> {
        super::check_config_dir(
            &self.dir(),
            super::config_dir_named(self.config_dir.as_deref()),
            true,
        )
    }
}

/// `corepost run`: the daemon in the foreground.
pub fn run(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.check_dir() {
        return fatal(e);
    }
    let options = crate::runtime::RunOptions {
        config_dir: args.dir(),
    };
    match crate::runtime::run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // For systemd's status line and `corepost start`.
            crate::runtime::notify::status(&format!("fatal: {e}"));
            fatal(e)
        }
    }
}

/// The running daemon's pid, if there is one. The daemon holds an
/// exclusive lock on its pid file for as long as it runs, so "running"
/// means "the lock is held" — a stale pid file, or a pid reused by another
/// process, is never mistaken for the daemon.
pub(super) fn running_pid(args: &DaemonArgs) -> Result<Option<i32>, String> {
    let config = Config::load(&args.dir()).map_err(|e| e.to_string())?;
    let path = crate::runtime::pid_file(&config)?;
    if !lock_held(&path) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    Ok(text.trim().parse::<i32>().ok().filter(|p| *p > 0))
}

/// Whether some process holds the pid file's lock.
fn lock_held(path: &std::path::Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    // SAFETY: flock acts only on the descriptor `file` owns; our shared
    // lock (if we get it) is released when `file` is closed.
    unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_SH | libc::LOCK_NB) != 0 }
}

pub(super) fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: sending a signal has no memory-safety preconditions.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// `corepost status`: exit 0 when running.
pub fn status(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.check_dir() {
        return fatal(e);
    }
    match running_pid(&args) {
        Ok(Some(pid)) => {
            println!("corepost: the mail system is running: PID: {pid}");
            // Uptime, cores, queue and spool sizes, listeners.
            let details = Config::load(&args.dir())
                .map_err(|e| e.to_string())
                .and_then(|c| crate::control::socket_path(&c))
                .and_then(|p| crate::control::request(&p, "status").map_err(|e| format!("{e:?}")));
            match details {
                Ok(text) => print!("{text}"),
                Err(e) => super::warning(format!("control socket: {e}")),
            }
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("corepost: the mail system is not running");
            ExitCode::from(1)
        }
        Err(e) => fatal(e),
    }
}

/// `corepost stop`: SIGTERM, then wait for the daemon to finish.
pub fn stop(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.check_dir() {
        return fatal(e);
    }
    let pid = match running_pid(&args) {
        Ok(Some(pid)) => pid,
        Ok(None) => return fatal("the mail system is not running"),
        Err(e) => return fatal(e),
    };
    if !signal(pid, libc::SIGTERM) {
        return fatal(format!(
            "cannot signal pid {pid}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let config = match Config::load(&args.dir()) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    let Ok(path) = crate::runtime::pid_file(&config) else {
        return fatal("no queue_directory");
    };
    while Instant::now() < deadline {
        if !lock_held(&path) {
            println!("corepost: stopped the mail system (PID {pid})");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    fatal(format!("pid {pid} is still running after 60 seconds"))
}

/// SIGHUP a running daemon of `config_dir`, quietly; whether one was told.
/// For commands whose change the daemon only sees at a reload (newaliases).
pub(crate) fn reload_if_running(config_dir: &std::path::Path) -> bool {
    let args = DaemonArgs {
        config_dir: Some(config_dir.to_path_buf()),
    };
    matches!(running_pid(&args), Ok(Some(pid)) if signal(pid, libc::SIGHUP))
}

/// `corepost reload`: ask the daemon over the control socket and wait for
/// its verdict. A configuration the daemon refuses (the old one keeps
/// running) fails with the daemon's errors.
pub fn reload(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.check_dir() {
        return fatal(e);
    }
    let pid = match running_pid(&args) {
        Ok(Some(pid)) => pid,
        Ok(None) => return fatal("the mail system is not running"),
        Err(e) => return fatal(e),
    };
    let socket = Config::load(&args.dir())
        .map_err(|e| e.to_string())
        .and_then(|c| crate::control::socket_path(&c));
    let verdict = socket
        .map_err(crate::control::ClientError::Io)
        .and_then(|path| crate::control::request(&path, "reload"));
    match verdict {
        Ok(warnings) => {
            eprint!(
                "{}",
                warnings
                    .lines()
                    .map(|w| format!("corepost: {w}\n"))
                    .collect::<String>()
            );
            println!("corepost: refreshing the mail system (PID {pid})");
            ExitCode::SUCCESS
        }
        Err(crate::control::ClientError::Refused(why)) => fatal(format!(
            "the mail system (PID {pid}) refused the new configuration and keeps the running one: {why}"
        )),
        // No control socket to ask (it failed to start): signal, as
        // Postfix's reload does, without a verdict.
        Err(e) if signal(pid, libc::SIGHUP) => {
            super::warning(format!(
                "control socket: {e:?}; sent SIGHUP to PID {pid} without waiting for its verdict (see the log)"
            ));
            ExitCode::SUCCESS
        }
        Err(_) => fatal(format!("cannot signal pid {pid}")),
    }
}
