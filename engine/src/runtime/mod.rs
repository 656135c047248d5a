//! The thread-per-core runtime behind `corepost run`.
//!
//! The main thread loads and checks the configuration, takes the pid-file
//! lock, binds every listening socket for every core (SO_REUSEPORT, so the
//! kernel spreads connections over the cores), drops root privileges, then
//! starts one pinned glommio executor per core. Each core opens its own
//! spool, accepts on its own sockets and runs its sessions to the end; the
//! cores share nothing but read-only settings and the log.
//!
//! The main thread then only handles signals: SIGTERM/SIGINT stop (no new
//! connections, open sessions get 421 at their next command, the spools
//! are flushed), SIGHUP reloads the configuration for new sessions without
//! dropping established ones.

pub mod listen;
pub mod shutdown;

use crate::log::Log;
use crate::smtpd::connection::Connection;
use crate::smtpd::session::Session;
use crate::smtpd::settings::SmtpdSettings;
use corepost_config::Config;
use corepost_spool::{CoreSpool, Envelope, FlushPolicy, QueueId, SpoolOptions, SyncMethod};
pub use shutdown::Shutdown;
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What one core needs to serve sessions.
pub struct CoreContext {
    pub id: u16,
    pub log: Log,
    pub shutdown: Shutdown,
    pub(crate) spool: RefCell<CoreSpool>,
    /// Notified whenever a message is queued, to wake the queue manager.
    pub new_mail: crate::qmgr::Signal,
    /// Sessions running on this core.
    pub sessions: Cell<usize>,
    /// Every core's control channel: smtpd's ETRN asks them to flush
    /// deferred mail, as `corepost queue flush` does.
    pub control: Vec<flume::Sender<crate::control::core::CoreRequest>>,
}

impl CoreContext {
    pub fn new_queue_id(&self) -> QueueId {
        self.spool.borrow_mut().new_queue_id()
    }

    /// Messages queued on this core.
    pub fn queued(&self) -> usize {
        self.spool.borrow().index().len()
    }

    /// Append a message and wait until it is durable.
    pub async fn queue(&self, envelope: &Envelope, content: &[u8]) -> Result<(), String> {
        let durable = {
            let mut spool = self.spool.borrow_mut();
            let appended = spool
                .append_message(envelope, content)
                .map_err(|e| e.to_string())?;
            spool.durable(appended.lsn)
        };
        durable.await?;
        self.new_mail.notify();
        Ok(())
    }
}

/// State the main thread shares with the cores.
struct Shared {
    stop: AtomicBool,
    /// Bumped by every reload.
    generation: AtomicU64,
    /// Current settings per smtpd service, in listener order.
    settings: Mutex<Vec<Arc<SmtpdSettings>>>,
    /// Current queue manager settings.
    qmgr: Mutex<Arc<crate::qmgr::QmgrSettings>>,
    /// Cores whose executor has finished.
    exited: std::sync::atomic::AtomicUsize,
}

/// Counts a core as exited when its main future ends, however it ends.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.exited.fetch_add(1, Ordering::AcqRel);
    }
}

/// Options of `corepost run`.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub config_dir: PathBuf,
}

/// The pid file, locked while the daemon runs.
pub fn pid_file(config: &Config) -> Result<PathBuf, String> {
    Ok(
        PathBuf::from(config.get("queue_directory").map_err(|e| e.to_string())?)
            .join("corepost.pid"),
    )
}

/// Run the daemon in the foreground until stopped.
pub fn run(options: &RunOptions) -> Result<(), String> {
    let config = load(&options.config_dir)?;
    let log = Log::open(
        &config.get("maillog_file").map_err(|e| e.to_string())?,
        &config
            .get_list("maillog_file_prefixes")
            .map_err(|e| e.to_string())?,
        &config.get("myhostname").map_err(|e| e.to_string())?,
    )?;
    let syslog_name = config.get("syslog_name").map_err(|e| e.to_string())?;
    let master = format!("{syslog_name}/master");
    let queue_dir = PathBuf::from(config.get("queue_directory").map_err(|e| e.to_string())?);
    std::fs::create_dir_all(&queue_dir)
        .map_err(|e| format!("queue_directory {}: {e}", queue_dir.display()))?;
    crate::pickup::maildrop::prepare(&queue_dir)
        .map_err(|e| format!("maildrop in {}: {e}", queue_dir.display()))?;
    let pid = PidLock::acquire(&pid_file(&config)?)?;
    raise_file_limit();
    let cores = config
        .get_int("corepost_cores")
        .map_err(|e| e.to_string())?;
    let cores = u16::try_from(cores)
        .ok()
        .filter(|c| (1..=corepost_spool::queue_id::MAX_CORE).contains(c))
        .ok_or_else(|| {
            format!(
                "corepost_cores = {cores}: expected 1 to {}",
                corepost_spool::queue_id::MAX_CORE
            )
        })?;
    let spool_options = spool_options(&config)?;
    let services = smtpd_settings(&config)?;
    let qmgr_settings = Arc::new(crate::qmgr::QmgrSettings::from_config(&config)?);
    let pickup = crate::pickup::PickupSettings::from_config(&config)?.map(Arc::new);
    let control_socket = crate::control::socket_path(&config)?;
    // Requeued mail is routed again with main.cf's settings.
    let router: crate::control::core::SharedRouter = Arc::new(Mutex::new(Arc::new(
        crate::routing::Router::from_params(&|n| config.get(n))?,
    )));
    let plan = listen::plan(&config)?;
    if plan.is_empty() {
        return Err("master.cf has no smtpd inet service: nothing to listen on".into());
    }
    // Bind everything for every core before giving up root.
    let mut per_core = Vec::new();
    for _ in 0..cores {
        per_core.push(listen::bind_all(&plan)?);
    }
    if let Some(owner) = listen::mail_owner(&config, &log, &master)? {
        // Local, virtual and pipe act as the recipient: a helper process
        // keeps root for them (Postfix's privilege separation).
        crate::delivery::helper::start(
            &options.config_dir,
            &queue_dir,
            owner.1,
            owner.2,
            &log,
            &master,
        );
        listen::drop_privileges(&owner, &queue_dir)?;
    }
    // Again as the owner: a chown may have cleared the set-group-id bit.
    crate::pickup::maildrop::prepare(&queue_dir)
        .map_err(|e| format!("maildrop in {}: {e}", queue_dir.display()))?;
    block_signals();
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        generation: AtomicU64::new(0),
        settings: Mutex::new(services),
        qmgr: Mutex::new(qmgr_settings),
        exited: std::sync::atomic::AtomicUsize::new(0),
    });
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let mesh = (cores > 1).then(|| {
        glommio::channels::channel_mesh::MeshBuilder::<crate::qmgr::CoreMsg, _>::full(
            usize::from(cores),
            1024,
        )
    });
    let (control_tx, control_rx): (Vec<_>, Vec<_>) = (0..cores).map(|_| flume::unbounded()).unzip();
    for ((core, listeners), control_rx) in per_core.into_iter().enumerate().zip(control_rx) {
        let pickup = pickup.clone();
        let control = crate::control::core::Endpoint {
            requests: control_rx,
            router: Arc::clone(&router),
            peers: control_tx.clone(),
        };
        let mesh = mesh.clone();
        let core = core as u16;
        let shared = Arc::clone(&shared);
        let log = log.clone();
        let queue_dir = queue_dir.clone();
        let spool_options = spool_options.clone();
        let ready = ready_tx.clone();
        let handle =
            glommio::LocalExecutorBuilder::new(glommio::Placement::Fixed(core as usize % cpus))
                .name(&format!("core-{core}"))
                .spawn(move || async move {
                    core_main(
                        core,
                        cores,
                        listeners,
                        shared,
                        log,
                        queue_dir,
                        spool_options,
                        ready,
                        mesh,
                        control,
                        pickup,
                    )
                    .await
                })
                .map_err(|e| format!("starting core {core}: {e}"))?;
        handles.push(handle);
    }
    drop(ready_tx);
    for _ in 0..cores {
        match ready_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                shared.stop.store(true, Ordering::Release);
                return Err(e);
            }
            Err(_) => {
                shared.stop.store(true, Ordering::Release);
                return Err("a core did not start".into());
            }
        }
    }
    let addresses: Vec<String> = plan.iter().map(|p| p.address.to_string()).collect();
    let control = match crate::control::ControlServer::start(
        &control_socket,
        control_tx,
        crate::control::DaemonInfo {
            started: std::time::Instant::now(),
            cores,
            listeners: addresses.clone(),
            pickup: pickup.is_some(),
        },
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            // Mail still flows; only administration is unavailable.
            log.line(
                &master,
                &format!("warning: {e}; queue administration is unavailable"),
            );
            None
        }
    };
    log.line(
        &master,
        &format!(
            "daemon started -- version {}, configuration {}, {cores} core{}, listening on {}",
            env!("CARGO_PKG_VERSION"),
            options.config_dir.display(),
            if cores == 1 { "" } else { "s" },
            addresses.join(" ")
        ),
    );
    signal_loop(&shared, options, &log, &master, &router);
    drop(control);
    for h in handles {
        let _ = h.join();
    }
    drop(pid);
    log.line(&master, "terminating on signal");
    Ok(())
}

fn load(dir: &Path) -> Result<Config, String> {
    let config = Config::load(dir).map_err(|e| e.to_string())?;
    let report = corepost_config::check::check(&config);
    if !report.is_ok() {
        return Err(format!(
            "configuration errors:\n  {}",
            report.errors.join("\n  ")
        ));
    }
    Ok(config)
}

fn spool_options(config: &Config) -> Result<SpoolOptions, String> {
    let segment_size = config
        .get_size("corepost_segment_size")
        .map_err(|e| e.to_string())?;
    let policy: FlushPolicy = config
        .get("corepost_fsync_policy")
        .map_err(|e| e.to_string())?
        .parse()
        .map_err(|e: String| format!("corepost_fsync_policy: {e}"))?;
    Ok(SpoolOptions {
        segment_size: usize::try_from(segment_size)
            .map_err(|_| "corepost_segment_size too large".to_string())?,
        policy,
        sync: SyncMethod::Msync,
        compact_below: 0.25,
    })
}

/// Settings of every smtpd inet service, in master.cf order.
fn smtpd_settings(config: &Config) -> Result<Vec<Arc<SmtpdSettings>>, String> {
    config
        .services()
        .filter(|s| listen::is_smtpd_inet(s.service))
        .map(|s| {
            SmtpdSettings::from_service(&s)
                .map(Arc::new)
                .map_err(|e| format!("service {}: {e}", s.service.id()))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn core_main(
    core: u16,
    cores: u16,
    listeners: Vec<listen::Bound>,
    shared: Arc<Shared>,
    log: Log,
    queue_dir: PathBuf,
    spool_options: SpoolOptions,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    mesh: Option<
        glommio::channels::channel_mesh::MeshBuilder<
            crate::qmgr::CoreMsg,
            glommio::channels::channel_mesh::Full,
        >,
    >,
    control: crate::control::core::Endpoint,
    pickup: Option<Arc<crate::pickup::PickupSettings>>,
) {
    let _exit = ExitGuard(Arc::clone(&shared));
    log.buffer_this_thread();
    let final_log = log.clone();
    let flusher_log = log.clone();
    glommio::spawn_local(async move {
        loop {
            glommio::timer::sleep(Duration::from_millis(10)).await;
            flusher_log.flush();
        }
    })
    .detach();
    let spool = match CoreSpool::open(&queue_dir, core, cores, spool_options) {
        Ok((spool, report)) => {
            let master = "corepost/spool";
            for s in &report.skipped {
                log.line(master, &format!("warning: core {core}: {s}"));
            }
            for t in &report.truncated {
                log.line(master, &format!("core {core}: truncated torn tail: {t}"));
            }
            for a in &report.adopted {
                log.line(master, &format!("core {core}: adopted {}", a.display()));
            }
            if report.messages > 0 {
                log.line(
                    master,
                    &format!(
                        "core {core}: recovered {} queued messages from {} segments",
                        report.messages, report.segments
                    ),
                );
            }
            // The queue is readable by the mail system only.
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(spool.dir(), std::fs::Permissions::from_mode(0o700));
            spool
        }
        Err(e) => {
            let _ = ready.send(Err(format!("core {core}: spool: {e}")));
            return;
        }
    };
    let ctx = Rc::new(CoreContext {
        id: core,
        log,
        shutdown: Shutdown::default(),
        spool: RefCell::new(spool),
        sessions: Cell::new(0),
        new_mail: crate::qmgr::Signal::default(),
        control: control.peers.clone(),
    });
    let settings = Rc::new(RefCell::new(lock(&shared.settings).clone()));
    // Cores exchange delivery jobs and outcomes over a full mesh of
    // bounded channels; every core must join it.
    let (mesh, receivers) = match mesh {
        Some(builder) => match builder.join().await {
            Ok((senders, mut receivers)) => {
                let peer = senders.peer_id();
                let peers = usize::from(cores);
                (
                    Some(crate::qmgr::Mesh {
                        senders,
                        peer,
                        peers,
                    }),
                    receivers.streams(),
                )
            }
            Err(e) => {
                let _ = ready.send(Err(format!("core {core}: cannot join the core mesh: {e}")));
                return;
            }
        },
        None => (None, Vec::new()),
    };
    let qmgr = crate::qmgr::Qmgr::new(Rc::clone(&ctx), Arc::clone(&lock(&shared.qmgr)), mesh);
    let mut receive_tasks = Vec::new();
    for (_, rx) in receivers {
        receive_tasks.push(glommio::spawn_local(Rc::clone(&qmgr).receive(rx)));
    }
    let qmgr_task = glommio::spawn_local(Rc::clone(&qmgr).run());
    let control_task = glommio::spawn_local(crate::control::core::serve(
        Rc::clone(&ctx),
        Rc::clone(&qmgr),
        control,
    ));
    let pickup_task = pickup
        .filter(|_| core == 0)
        .map(|p| glommio::spawn_local(crate::pickup::run(Rc::clone(&ctx), p)));
    let mut accept_tasks = Vec::new();
    for bound in listeners {
        let ctx = Rc::clone(&ctx);
        let settings = Rc::clone(&settings);
        accept_tasks.push(glommio::spawn_local(accept_loop(bound, ctx, settings)));
    }
    let _ = ready.send(Ok(()));
    // Watch for reloads and the stop signal; reclaim spool space meanwhile.
    let mut generation = shared.generation.load(Ordering::Acquire);
    let mut ticks = 0u32;
    while !shared.stop.load(Ordering::Acquire) {
        glommio::timer::sleep(Duration::from_millis(100)).await;
        let g = shared.generation.load(Ordering::Acquire);
        if g != generation {
            generation = g;
            *settings.borrow_mut() = lock(&shared.settings).clone();
            *qmgr.settings.borrow_mut() = Arc::clone(&lock(&shared.qmgr));
        }
        ticks += 1;
        if ticks.is_multiple_of(10) {
            let mut spool = ctx.spool.borrow_mut();
            if let Err(e) = spool.reclaim() {
                ctx.log.line(
                    "corepost/spool",
                    &format!("warning: core {core}: reclaim: {e}"),
                );
            }
            for e in spool.take_spare_errors() {
                ctx.log.line(
                    "corepost/spool",
                    &format!("warning: core {core}: spare segment: {e}"),
                );
            }
        }
    }
    ctx.shutdown.trigger();
    ctx.new_mail.notify();
    for t in accept_tasks {
        t.await;
    }
    qmgr_task.await;
    control_task.await;
    if let Some(t) = pickup_task {
        t.await;
    }
    for t in receive_tasks {
        t.await;
    }
    // Sessions answer 421 at their next command; give those mid-message a
    // moment to finish.
    for _ in 0..100 {
        if ctx.sessions.get() == 0 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    drop(settings);
    // Delivery workers finish their current transaction; give them a moment.
    for _ in 0..100 {
        if Rc::strong_count(&qmgr) == 1 {
            break;
        }
        glommio::timer::sleep(Duration::from_millis(50)).await;
    }
    drop(qmgr);
    match Rc::try_unwrap(ctx) {
        Ok(ctx) => {
            if let Err(e) = ctx.spool.into_inner().close() {
                ctx.log.line(
                    "corepost/spool",
                    &format!("warning: core {core}: closing the spool: {e}"),
                );
            }
        }
        Err(ctx) => ctx.log.line(
            "corepost/spool",
            &format!("warning: core {core}: sessions still open at exit"),
        ),
    }
    final_log.flush();
}

async fn accept_loop(
    bound: listen::Bound,
    ctx: Rc<CoreContext>,
    settings: Rc<RefCell<Vec<Arc<SmtpdSettings>>>>,
) {
    let service = bound.service;
    let listener = bound.into_glommio();
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let stream = match accepted {
            None => return,
            Some(Ok(s)) => s,
            Some(Err(e)) => {
                ctx.log
                    .line("corepost/smtpd", &format!("warning: accept: {e}"));
                glommio::timer::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Ok(peer) = stream.peer_addr() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let Some(session_settings) = settings.borrow().get(service).cloned() else {
            continue;
        };
        let core = Rc::clone(&ctx);
        ctx.sessions.set(ctx.sessions.get() + 1);
        glommio::spawn_local(async move {
            Session::new(
                Connection::new(stream),
                Rc::clone(&core),
                session_settings,
                peer,
            )
            .run()
            .await;
            core.sessions.set(core.sessions.get() - 1);
        })
        .detach();
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Raise the open-file limit to its hard maximum: every connection is a
/// descriptor, and the usual soft limit of 1024 would cap the server far
/// below what it can hold.
fn raise_file_limit() {
    // SAFETY: getrlimit/setrlimit read and write the `rlimit` value we own.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Block the signals the main thread handles, before any other thread
/// exists, so every thread inherits the mask and only `sigtimedwait` in the
/// main thread sees them.
fn block_signals() {
    // SAFETY: sigset_t is a plain C type for which all-zero is a valid
    // value; sigemptyset/sigaddset initialise it, and pthread_sigmask only
    // reads it. No Rust invariants are involved.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Wait up to `timeout` for one of the blocked signals.
fn wait_signal(timeout: Duration) -> Option<i32> {
    // SAFETY: as in block_signals; `ts` and `set` are valid for the call,
    // and a null siginfo pointer is allowed.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let ts = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        let sig = libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
        (sig > 0).then_some(sig)
    }
}

fn signal_loop(
    shared: &Arc<Shared>,
    options: &RunOptions,
    log: &Log,
    master: &str,
    router: &crate::control::core::SharedRouter,
) {
    loop {
        if shared.exited.load(Ordering::Acquire) > 0 {
            log.line(
                master,
                "warning: a core stopped unexpectedly; shutting down",
            );
            break;
        }
        match wait_signal(Duration::from_millis(500)) {
            Some(libc::SIGHUP) => {
                // Everything is resolved before anything is replaced: a
                // broken main.cf keeps the whole running configuration.
                let loaded = load(&options.config_dir).and_then(|c| {
                    let smtpd = smtpd_settings(&c)?;
                    let qmgr = crate::qmgr::QmgrSettings::from_config(&c)?;
                    Ok((c, smtpd, qmgr))
                });
                match loaded {
                    Ok((config, settings, qmgr)) => {
                        let old = lock(&shared.settings).len();
                        if settings.len() != old {
                            log.line(master, "warning: the set of smtpd services changed; restart to open or close listeners");
                        }
                        if let Ok(r) = crate::routing::Router::from_params(&|n| config.get(n)) {
                            *lock(router) = Arc::new(r);
                        }
                        // Transports, their limits and the delivery
                        // agents' settings (aliases, mailboxes, pipe
                        // commands) apply to deliveries started from now.
                        *lock(&shared.qmgr) = Arc::new(qmgr);
                        // Listeners are fixed until a restart: with fewer
                        // smtpd services the running ones keep theirs.
                        if settings.len() >= old {
                            *lock(&shared.settings) = settings;
                        }
                        shared.generation.fetch_add(1, Ordering::AcqRel);
                        log.line(
                            master,
                            &format!(
                                "reload -- version {}, configuration {}",
                                env!("CARGO_PKG_VERSION"),
                                config.config_dir.display()
                            ),
                        );
                    }
                    Err(e) => log.line(
                        master,
                        &format!("warning: reload failed, keeping the running configuration: {e}"),
                    ),
                }
            }
            Some(_) => break,
            None => {}
        }
    }
    shared.stop.store(true, Ordering::Release);
}

/// The pid file, created and `flock`ed for the daemon's lifetime so a
/// second instance on the same queue directory refuses to start.
struct PidLock {
    path: PathBuf,
    _file: std::fs::File,
}

impl PidLock {
    fn acquire(path: &Path) -> Result<PidLock, String> {
        use std::io::Write;
        use std::os::fd::AsRawFd;
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock only acts on the descriptor, which `file` owns and
        // keeps open for the duration of the call.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let other = std::fs::read_to_string(path).unwrap_or_default();
            return Err(format!(
                "corepost is already running on this queue directory (pid {})",
                other.trim()
            ));
        }
        file.set_len(0)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        writeln!(file, "{}", std::process::id()).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(PidLock {
            path: path.to_path_buf(),
            _file: file,
        })
    }
}

impl Drop for PidLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
