//! The helper's supervisor: the root process `corepost run` starts. It
//! binds the socket, tells the daemon "ready", and keeps one worker
//! (`corepost delivery-helper --worker`, the listening socket as its
//! standard input) running: a worker that dies is restarted (after a
//! pause that grows while it keeps dying), as Postfix's master restarts
//! local. SIGTERM and SIGINT do not stop it: when its own standard input
//! — a pipe from the daemon — reaches EOF, it removes the socket, sends the worker SIGTERM (the worker
//! finishes its deliveries first) and exits after it.
//!
//! The supervisor runs no delivery code; the worker's connections that
//! die with it are deferred by the daemon, never lost.

use super::server::{HelperArgs, ignore, listen, open_log, set_handler};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::time::{Duration, Instant};

const PROGRAM: &str = "corepost/delivery-helper";

/// Supervise workers until the daemon goes away.
pub fn run(args: &HelperArgs) -> Result<(), String> {
    let log = open_log(&args.config_dir)?;
    let listener = listen(&args.socket, args.peer_uid, args.peer_gid)?;
    // SIGHUP goes on to the worker (which reloads); ^C is for the daemon
    // (see server.rs). So is SIGTERM: `timeout` and process-group kills
    // send it to every process of the group, and a supervisor that died of
    // it could not be restarted by the unprivileged daemon. The supervisor
    // follows the daemon instead: it stops when its lifeline (stdin)
    // closes, that is when the daemon is gone.
    set_handler(libc::SIGHUP, forward_sighup);
    set_handler(libc::SIGINT, ignore);
    set_handler(libc::SIGTERM, ignore);
    let stop = Arc::new(AtomicBool::new(false));
    {
        let (stop, socket) = (Arc::clone(&stop), args.socket.clone());
        std::thread::spawn(move || {
            wait_for_eof();
            let _ = std::fs::remove_file(&socket);
            stop.store(true, Ordering::SeqCst);
            signal_worker(libc::SIGTERM);
        });
    }
    println!("ready");
    let mut pause = Duration::from_secs(1);
    loop {
        let started = Instant::now();
        let stdin = listener
            .try_clone()
            .map_err(|e| format!("listening socket: {e}"))?;
        // /proc/self/exe is this very binary even if the file was
        // replaced or removed since (an upgrade): the worker always matches.
        let spawned = Command::new("/proc/self/exe")
            .arg0("corepost")
            .arg("delivery-helper")
            .arg("--worker")
            .arg("--supervisor")
            .arg(std::process::id().to_string())
            .arg("-c")
            .arg(&args.config_dir)
            .arg("--socket")
            .arg(&args.socket)
            .arg("--peer-uid")
            .arg(args.peer_uid.to_string())
            .arg("--peer-gid")
            .arg(args.peer_gid.to_string())
            .stdin(Stdio::from(OwnedFd::from(stdin)))
            .stdout(Stdio::null())
            .spawn();
        let status = match spawned {
            Ok(mut child) => {
                WORKER_PID.store(i32::try_from(child.id()).unwrap_or(0), Ordering::SeqCst);
                if stop.load(Ordering::SeqCst) {
                    signal_worker(libc::SIGTERM);
                }
                let status = child.wait();
                WORKER_PID.store(0, Ordering::SeqCst);
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            }
            Err(e) => format!("cannot start: {e}"),
        };
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        // A worker that ran a while is restarted after a second; one that
        // keeps dying at start waits longer each time (up to a minute).
        if started.elapsed() > Duration::from_secs(60) {
            pause = Duration::from_secs(1);
        }
        log.line(
            PROGRAM,
            &format!(
                "warning: delivery worker exited ({status}); restarting in {}s",
                pause.as_secs()
            ),
        );
        std::thread::sleep(pause);
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        pause = (pause * 2).min(Duration::from_secs(60));
    }
}

/// Block until standard input (the daemon's pipe) reaches EOF.
fn wait_for_eof() {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    loop {
        match stdin.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The running worker's pid (0: none).
static WORKER_PID: AtomicI32 = AtomicI32::new(0);

/// Send `sig` to the worker, if one runs. Async-signal-safe (an atomic
/// load and kill), so the SIGHUP handler uses it too.
fn signal_worker(sig: libc::c_int) {
    let pid = WORKER_PID.load(Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill only sends a signal (no memory involved). `pid` is
        // our worker child; it is cleared right after the worker is reaped,
        // and a pid is not reused within that instant.
        unsafe { libc::kill(pid, sig) };
    }
}

extern "C" fn forward_sighup(_: libc::c_int) {
    signal_worker(libc::SIGHUP);
}
