//! `corepost delivery-helper`: the process that stays root and runs the
//! local, virtual and pipe agents for the unprivileged daemon (see the
//! module docs of [`super`]).
//!
//! Two processes: the supervisor ([`super::supervise`]) binds the socket
//! and (re)starts a worker, this module's [`worker`], which accepts on
//! it, checks each peer's uid with SO_PEERCRED (mail_owner's or root's)
//! and serves one request per connection on its own thread. The worker
//! re-reads main.cf/master.cf when they change (or on SIGHUP), so
//! `corepost reload` applies to it too, and on SIGTERM finishes the
//! deliveries in progress, then exits.

use super::wire;
use crate::delivery::agent::{Report, Request};
use crate::log::Log;
use crate::qmgr::{QmgrSettings, TransportKind};
use corepost_config::Config;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

const PROGRAM: &str = "corepost/delivery-helper";
/// How long reading a request or writing a report may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Arguments of the hidden `corepost delivery-helper` subcommand (the
/// daemon passes them; not for operators).
#[derive(Debug, clap::Args)]
pub struct HelperArgs {
    /// Configuration directory.
    #[arg(short = 'c', value_name = "DIR")]
    pub config_dir: PathBuf,
    /// The socket to listen on.
    #[arg(long)]
    pub socket: PathBuf,
    /// The uid allowed to connect (mail_owner's), besides root.
    #[arg(long)]
    pub peer_uid: u32,
    /// mail_owner's group, for the socket's ownership.
    #[arg(long)]
    pub peer_gid: u32,
    /// Serve the listening socket passed as standard input (the process
    /// the supervisor starts and restarts).
    #[arg(long, hide = true)]
    pub worker: bool,
    /// The supervisor's pid (with --worker).
    #[arg(long, hide = true)]
    pub supervisor: Option<i32>,
}

/// Set by SIGHUP: re-read the configuration before the next request.
static RELOAD: AtomicBool = AtomicBool::new(false);
/// Set by SIGTERM: finish the deliveries in progress, then exit.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    RELOAD.store(true, Ordering::Relaxed);
}

extern "C" fn on_sigterm(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

pub(super) extern "C" fn ignore(_: libc::c_int) {}

/// The transports as configured (or why the configuration could not be
/// read: then every request defers), and what the configuration files
/// looked like when read.
struct Loaded {
    settings: Result<Arc<QmgrSettings>, String>,
    stamp: Vec<Option<(SystemTime, u64)>>,
}

struct State {
    config_dir: PathBuf,
    loaded: Mutex<Loaded>,
    log: Log,
    in_flight: AtomicUsize,
}

fn stamp(dir: &Path) -> Vec<Option<(SystemTime, u64)>> {
    ["main.cf", "master.cf"]
        .iter()
        .map(|f| {
            let m = std::fs::metadata(dir.join(f)).ok()?;
            Some((m.modified().ok()?, m.len()))
        })
        .collect()
}

fn load(dir: &Path) -> Loaded {
    let stamp = stamp(dir);
    let settings = Config::load(dir)
        .map_err(|e| e.to_string())
        .and_then(|config| QmgrSettings::from_config(&config))
        .map(Arc::new);
    Loaded { settings, stamp }
}

impl State {
    /// The current settings, re-read first if the files changed.
    fn settings(&self) -> Result<Arc<QmgrSettings>, String> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let hup = RELOAD.swap(false, Ordering::Relaxed);
        if hup || stamp(&self.config_dir) != loaded.stamp {
            let new = load(&self.config_dir);
            match (&new.settings, &loaded.settings) {
                (Ok(_), _) => {
                    *loaded = new;
                    self.log.line(PROGRAM, "reload: configuration re-read");
                }
                (Err(e), Ok(_)) => {
                    // Keep the old settings; do not retry on every request.
                    self.log.line(
                        PROGRAM,
                        &format!("warning: reload failed, keeping the previous configuration: {e}"),
                    );
                    loaded.stamp = new.stamp;
                }
                (Err(e), Err(_)) => {
                    self.log.line(PROGRAM, &format!("warning: {e}"));
                    *loaded = new;
                }
            }
        }
        loaded.settings.clone()
    }
}

/// Run the helper until the daemon goes away: the supervisor, or (with
/// `--worker`) the process that serves requests.
pub fn run(args: &HelperArgs) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("delivery-helper must run as root (corepost run starts it)".into());
    }
    if args.worker {
        worker(args)
    } else {
        super::supervise::run(args)
    }
}

/// The log as main.cf says (maillog_file, syslog, journald or standard
/// error).
pub(super) fn open_log(config_dir: &Path) -> Result<Log, String> {
    let config = Config::load(config_dir).map_err(|e| e.to_string())?;
    Log::from_config(&config)
}

/// Serve the listening socket on standard input until SIGTERM (sent by
/// the supervisor, or by the kernel when the supervisor dies).
fn worker(args: &HelperArgs) -> Result<(), String> {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) };
    install_signal_handlers();
    // SAFETY: getppid has no preconditions. The supervisor may have died
    // before PR_SET_PDEATHSIG took effect: then nobody would stop us.
    if Some(unsafe { libc::getppid() }) != args.supervisor {
        return Err("not started by the delivery helper's supervisor".into());
    }
    // SAFETY: the supervisor passes the listening socket as fd 0, which
    // nothing else in this process owns or closes.
    let listener = unsafe {
        use std::os::fd::FromRawFd;
        UnixListener::from_raw_fd(0)
    };
    // A configuration that does not load (edited since the daemon read
    // it) still gets a worker: it defers every request until fixed, so the
    // daemon never waits on a socket nobody serves.
    let loaded = load(&args.config_dir);
    let log = open_log(&args.config_dir).unwrap_or_else(|_| Log::stderr("localhost"));
    if let Err(e) = &loaded.settings {
        log.line(PROGRAM, &format!("warning: {e}; deferring deliveries"));
    }
    let state = Arc::new(State {
        config_dir: args.config_dir.clone(),
        loaded: Mutex::new(loaded),
        log,
        in_flight: AtomicUsize::new(0),
    });
    exit_on_sigterm(Arc::clone(&state));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTSOCK | libc::EBADF | libc::EINVAL)
                ) =>
            {
                return Err(format!("standard input is not a listening socket: {e}"));
            }
            Err(e) => {
                state.log.line(PROGRAM, &format!("warning: accept: {e}"));
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        match peer_uid(&stream) {
            Ok(uid) if uid == args.peer_uid || uid == 0 => {}
            Ok(uid) => {
                state.log.line(
                    PROGRAM,
                    &format!(
                        "warning: refusing a request from uid {uid} (only mail_owner may ask)"
                    ),
                );
                continue;
            }
            Err(e) => {
                state
                    .log
                    .line(PROGRAM, &format!("warning: SO_PEERCRED: {e}"));
                continue;
            }
        }
        let state = Arc::clone(&state);
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        let spawned = std::thread::Builder::new().name("delivery".into()).spawn({
            let state = Arc::clone(&state);
            move || {
                serve(&state, stream);
                state.in_flight.fetch_sub(1, Ordering::AcqRel);
            }
        });
        if let Err(e) = spawned {
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
            state
                .log
                .line(PROGRAM, &format!("warning: cannot start a thread: {e}"));
        }
    }
    Ok(())
}

/// Bind the socket (the supervisor does): in a 0700 directory, mode 0600, both owned by
/// mail_owner, so only mail_owner and root can connect.
pub(super) fn listen(socket: &Path, uid: u32, gid: u32) -> Result<UnixListener, String> {
    let dir = socket.parent().ok_or("socket path has no directory")?;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| format!("chmod {}: {e}", dir.display()))?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(format!("{}: {e}", socket.display())),
    }
    let listener = UnixListener::bind(socket).map_err(|e| format!("{}: {e}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("chmod {}: {e}", socket.display()))?;
    std::os::unix::fs::chown(socket, Some(uid), Some(gid))
        .map_err(|e| format!("chown {}: {e}", socket.display()))?;
    Ok(listener)
}

fn install_signal_handlers() {
    for (sig, handler) in [
        (libc::SIGHUP, on_sighup as extern "C" fn(libc::c_int)),
        (libc::SIGTERM, on_sigterm as extern "C" fn(libc::c_int)),
        // ^C in a terminal reaches the whole process group: the daemon
        // shuts down, and the helper follows when its stdin closes, after
        // the deliveries in progress.
        (libc::SIGINT, ignore as extern "C" fn(libc::c_int)),
    ] {
        set_handler(sig, handler);
    }
}

/// Install `handler` for `sig` (with SA_RESTART).
pub(super) fn set_handler(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: the handlers only store to an atomic (async-signal-safe);
    // the sigaction struct is fully initialised (zeroed, then the handler,
    // an empty mask and SA_RESTART). Handlers are reset to the default in
    // children at exec, so commands are not affected.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler as usize;
        libc::sigemptyset(&mut action.sa_mask);
        action.sa_flags = libc::SA_RESTART;
        libc::sigaction(sig, &action, std::ptr::null_mut());
    }
}

/// After SIGTERM, let the deliveries in progress finish (at most ten
/// minutes), then exit.
fn exit_on_sigterm(state: Arc<State>) {
    std::thread::spawn(move || {
        while !STOP.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        while state.in_flight.load(Ordering::Acquire) > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::process::exit(0);
    });
}

/// The uid of the process at the other end of `stream`.
fn peer_uid(stream: &UnixStream) -> std::io::Result<u32> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a `struct ucred`; we pass a pointer to one
    // we own and its exact size.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cred.uid)
}

/// One connection: read a request, deliver, answer.
fn serve(state: &State, mut stream: UnixStream) {
    // The daemon sends the whole request at once: a peer that stalls
    // cannot hold a thread for ever.
    let _ = stream.set_read_timeout(Some(REQUEST_TIMEOUT));
    let _ = stream.set_write_timeout(Some(REQUEST_TIMEOUT));
    let request = match wire::read_frame(&mut stream)
        .map_err(|e| e.to_string())
        .and_then(|p| wire::decode_request(&p))
    {
        Ok(r) => r,
        Err(e) => {
            state
                .log
                .line(PROGRAM, &format!("warning: bad request: {e}"));
            return;
        }
    };
    let report = match state.settings() {
        Ok(settings) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            deliver(&settings, &request)
        }))
        .unwrap_or_else(|_| super::defer_all(&request, "delivery agent crashed")),
        Err(e) => super::defer_all(&request, &format!("configuration error: {e}")),
    };
    if let Err(e) = wire::write_frame(&mut stream, &wire::encode_report(&report)) {
        state.log.line(
            PROGRAM,
            &format!("warning: {}: cannot send the report: {e}", request.queue_id),
        );
    }
}

/// Run the agent the request's transport names.
fn deliver(settings: &QmgrSettings, request: &Request) -> Report {
    let Some(transport) = settings.transports.get(&request.transport) else {
        return super::defer_all(
            request,
            &format!(
                "mail transport unavailable: no master.cf service \"{}\"",
                request.transport
            ),
        );
    };
    match &transport.kind {
        TransportKind::Local(s) => crate::delivery::local::deliver(s, request),
        TransportKind::Virtual(s) => crate::delivery::r#virtual::deliver(s, request),
        TransportKind::Pipe(s) => crate::delivery::pipe::deliver(s, request),
        _ => super::defer_all(
            request,
            &format!(
                "service \"{}\" is not a local, virtual or pipe transport",
                request.transport
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::agent::{RequestRecipient, StatusKind};
    use std::io::{Read, Write};

    /// A helper state over a configuration directory with `master`.
    fn state(master: &str) -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), "myhostname = mx.example\n").unwrap();
        std::fs::write(dir.path().join("master.cf"), master).unwrap();
        let loaded = load(dir.path());
        assert!(loaded.settings.is_ok());
        let state = State {
            config_dir: dir.path().to_path_buf(),
            loaded: Mutex::new(loaded),
            log: Log::stderr("test"),
            in_flight: AtomicUsize::new(0),
        };
        (dir, state)
    }

    fn request(transport: &str) -> Request {
        Request {
            queue_id: "Q1".into(),
            transport: transport.into(),
            nexthop: "example.com".into(),
            sender: "s@example.org".into(),
            recipients: vec![RequestRecipient {
                index: 2,
                address: "a@example.com".into(),
                orcpt: None,
            }],
            content: b"Subject: x\r\n\r\nbody\r\n".to_vec(),
            client_name: "localhost".into(),
            client_addr: "127.0.0.1".into(),
            client_helo: String::new(),
            client_protocol: "ESMTP".into(),
            sasl_username: String::new(),
        }
    }

    /// Send `bytes` to `serve` and read what comes back.
    fn exchange(state: &State, bytes: &[u8]) -> Vec<u8> {
        let (mut client, server) = UnixStream::pair().unwrap();
        client.write_all(bytes).unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        serve(state, server);
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).unwrap();
        answer
    }

    #[test]
    fn malformed_requests_get_no_answer() {
        let (_dir, state) = state("");
        assert!(exchange(&state, b"").is_empty());
        assert!(exchange(&state, &[0, 0, 0, 3, 9, 9, 9]).is_empty());
        let mut truncated = Vec::new();
        wire::write_frame(&mut truncated, &wire::encode_request(&request("local"))).unwrap();
        truncated.pop();
        assert!(exchange(&state, &truncated).is_empty());
    }

    #[test]
    fn unknown_or_foreign_transports_defer() {
        let (dir, state) = state("smtp unix - - n - - smtp\n");
        for transport in ["nosuch", "smtp"] {
            let mut frame = Vec::new();
            wire::write_frame(&mut frame, &wire::encode_request(&request(transport))).unwrap();
            let answer = exchange(&state, &frame);
            let report = wire::decode_report(&wire::read_frame(&mut &answer[..]).unwrap()).unwrap();
            assert_eq!(report.results.len(), 1);
            let (i, status) = &report.results[0];
            assert_eq!((*i, status.kind), (2, StatusKind::Deferred));
        }
        // A pipe service added to master.cf is picked up without a restart.
        std::fs::write(
            dir.path().join("master.cf"),
            "smtp unix - - n - - smtp\nnewpipe unix - n n - - pipe user=nobody argv=/bin/true\n",
        )
        .unwrap();
        assert!(state.settings().unwrap().transports.contains_key("newpipe"));
        // A broken master.cf keeps the last good settings.
        std::fs::write(dir.path().join("master.cf"), "broken line\n").unwrap();
        assert!(state.settings().unwrap().transports.contains_key("newpipe"));
    }

    #[test]
    fn peer_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        // SAFETY: geteuid has no preconditions.
        assert_eq!(peer_uid(&a).unwrap(), unsafe { libc::geteuid() });
    }
}
