//! The thread-per-core runtime behind `corepost run`.
//!
//! The main thread loads and checks the configuration, takes the pid-file
//! lock, claims every listening address (no other daemon may serve it, see
//! `listen.rs`) and binds it for every core (SO_REUSEPORT, so the kernel
//! spreads connections over the cores), drops root privileges, then
//! starts one pinned glommio executor per core. Each core opens its own
//! spool, accepts on its own sockets and runs its sessions to the end; the
//! cores share nothing but read-only settings and the log.
//!
//! The main thread then only handles signals: SIGTERM/SIGINT stop (no new
//! connections, open sessions get 421 at their next command, the spools
//! are flushed), SIGHUP reloads the configuration for new sessions without
//! dropping established ones, opening the listeners it adds and closing
//! those it removes ([`reload`]).

mod accept;
mod acceptor;
mod group_commit;
pub mod listen;
mod log_flush;
pub mod notify;
mod restart_only;
pub mod services;
mod signals;
mod start_failure;

use crate::context::{CoreContext, Shutdown};
use crate::log::Log;
use crate::smtpd::settings::SmtpdSettings;
use corepost_config::Config;
use corepost_spool::{CoreSpool, FlushPolicy, SpoolOptions, SyncMethod};
use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// State the main thread shares with the cores.
struct Shared {
    stop: AtomicBool,
    /// Bumped by every reload.
    generation: AtomicU64,
    /// Current settings and session counts of the smtpd services.
    services: Mutex<services::Services>,
    /// Current queue manager settings.
    qmgr: Mutex<Arc<crate::qmgr::QmgrSettings>>,
    /// Cores whose executor has finished.
    exited: std::sync::atomic::AtomicUsize,
    /// The addresses to listen on; each core closes its other listeners.
    plan: Mutex<Vec<listen::Planned>>,
    /// Sockets a reload opened, for each core to accept on.
    opened: Vec<Mutex<Vec<listen::Bound>>>,
    /// The last generation each core applied.
    applied: Vec<AtomicU64>,
    /// master.cf's pickup service as last loaded (`None`: no such service);
    /// core 0's pickup loop reads it before every pass, so a reload applies
    /// to local submissions as Postfix's restarted pickup and cleanup do.
    pickup: crate::pickup::CurrentSettings,
    /// Each core's wake-up: its `watch` loop sleeps until a stop or a
    /// reload is sent here (or its housekeeping is due), not polling.
    wake: Vec<(flume::Sender<()>, flume::Receiver<()>)>,
}

impl Shared {
    fn new(
        services: services::Services,
        qmgr: Arc<crate::qmgr::QmgrSettings>,
        plan: &[listen::Planned],
        cores: u16,
        pickup: Option<Arc<crate::pickup::PickupSettings>>,
    ) -> Arc<Shared> {
        Arc::new(Shared {
            stop: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            services: Mutex::new(services),
            qmgr: Mutex::new(qmgr),
            exited: std::sync::atomic::AtomicUsize::new(0),
            plan: Mutex::new(plan.to_vec()),
            opened: (0..cores).map(|_| Mutex::new(Vec::new())).collect(),
            applied: (0..cores).map(|_| AtomicU64::new(0)).collect(),
            pickup: Arc::new(Mutex::new(pickup)),
            wake: (0..cores).map(|_| flume::unbounded()).collect(),
        })
    }

    /// Tell every core to stop.
    fn stop_cores(&self) {
        self.stop.store(true, Ordering::Release);
        self.wake_cores();
    }

    /// Make every core's `watch` loop look at `stop` and `generation`.
    fn wake_cores(&self) {
        for (tx, _) in &self.wake {
            let _ = tx.send(());
        }
    }
}

/// Claim and bind every listening address for every core (before root
/// is given up); the listeners and each core's sockets.
fn bind_listeners(
    config: &Config,
    cores: u16,
) -> Result<(services::Listeners, Vec<Vec<listen::Bound>>), String> {
    let plan = listen::plan(config)?;
    if plan.is_empty() {
        return Err("master.cf has no smtpd inet service: nothing to listen on".into());
    }
    let mut listeners = services::Listeners::default();
    let mut prepared = listeners.prepare(plan, usize::from(cores))?;
    let per_core = std::mem::take(&mut prepared.per_core);
    listeners.commit(prepared);
    Ok((listeners, per_core))
}

/// Postfix's "daemon started" line, and readiness for the service manager.
fn announce(options: &RunOptions, cores: u16, addresses: &[String], (log, master): (&Log, &str)) {
    log.line(
        master,
        &format!(
            "daemon started -- version {}, configuration {}, {cores} core{}, listening on {}",
            env!("CARGO_PKG_VERSION"),
            options.config_dir.display(),
            if cores == 1 { "" } else { "s" },
            addresses.join(" ")
        ),
    );
    notify::ready(&format!("listening on {}", addresses.join(" ")));
}

/// The maildrop with its modes (see `pickup/maildrop.rs`).
fn prepare_maildrop(queue_dir: &Path) -> Result<(), String> {
    crate::pickup::maildrop::prepare(queue_dir)
        .map_err(|e| format!("maildrop in {}: {e}", queue_dir.display()))
}

/// Counts a core as exited when its main future ends, however it ends.
struct ExitGuard(Arc<Shared>);

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.0.exited.fetch_add(1, Ordering::AcqRel);
        if !self.0.stop.load(Ordering::Acquire) {
            // Unasked: wake the signal loop, which then shuts down.
            signals::wake_signal_loop();
        }
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
    let (config, warnings) = load_checked(&options.config_dir)?;
    let log = Log::from_config(&config)?;
    let syslog_name = config.get("syslog_name").map_err(|e| e.to_string())?;
    let master = format!("{syslog_name}/master");
    for w in &warnings {
        log.line(&master, &format!("warning: {w}"));
    }
    crate::events::configure(&crate::events::EventSettings::from_config(&config)?, &log)?;
    crate::bounce_class::install(crate::bounce_class::Rules::from_config(&config)?);
    // As Postfix's master: a fatal error is in the log too.
    let result = run_with_log(options, config, &log, &master);
    crate::events::shutdown();
    result.inspect_err(|e| {
        log.line(&master, &format!("fatal: {e}"));
        log.flush();
    })
}

fn run_with_log(
    options: &RunOptions,
    config: Config,
    log: &Log,
    master: &str,
) -> Result<(), String> {
    let (log, master) = (log.clone(), master.to_string());
    let queue_dir = PathBuf::from(config.get("queue_directory").map_err(|e| e.to_string())?);
    std::fs::create_dir_all(&queue_dir)
        .map_err(|e| format!("queue_directory {}: {e}", queue_dir.display()))?;
    prepare_maildrop(&queue_dir)?;
    let pid = PidLock::acquire(&pid_file(&config)?)?;
    raise_file_limit();
    let cores = configured_cores(&config)?;
    let spool_setup = spool_setup(&config)?;
    let services = smtpd_services(&config, &services::Services::new())?;
    let qmgr_settings = Arc::new(crate::qmgr::QmgrSettings::from_config(&config)?);
    let pickup = crate::pickup::PickupSettings::from_config(&config)?.map(Arc::new);
    let control_socket = crate::control::socket_path(&config)?;
    // Requeued mail is routed again with main.cf's settings.
    let router: crate::control::core::SharedRouter = Arc::new(Mutex::new(Arc::new(
        crate::routing::Router::from_params(&|n| config.get(n))?,
    )));
    let metrics = metrics_endpoint(&config, cores, &queue_dir)?;
    let (listeners, per_core) = bind_listeners(&config, cores)?;
    if let Some(owner) = listen::mail_owner(&config, &log, &master)? {
        let dkim = services
            .values()
            .filter_map(|s| s.settings.dkim.as_ref())
            .chain(pickup.as_ref().and_then(|p| p.dkim.as_ref()));
        give_up_root(options, &config, &owner, dkim, &queue_dir, (&log, &master))?;
    }
    // Again as the owner: a chown may have cleared the set-group-id bit.
    prepare_maildrop(&queue_dir)?;
    signals::block_signals();
    let restart_only = restart_only::StartValues::of(&config);
    let shared = Shared::new(
        services,
        qmgr_settings,
        listeners.plan(),
        cores,
        pickup.clone(),
    );
    let (control_tx, handles) = start_cores(
        per_core,
        CoreInputs {
            cores,
            shared: &shared,
            log: &log,
            queue_dir: &queue_dir,
            spool_setup: &spool_setup,
            router: &router,
        },
    )?;
    if let Some(endpoint) = metrics {
        endpoint.serve()?;
    }
    let addresses: Vec<String> = listeners
        .plan()
        .iter()
        .map(|p| p.address.to_string())
        .collect();
    let shown_listeners = Arc::new(Mutex::new(addresses.clone()));
    let (control, reload_rx) = start_control(
        options,
        &control_socket,
        control_tx,
        ControlView {
            cores,
            listeners: Arc::clone(&shown_listeners),
            pickup: Arc::clone(&shared.pickup),
            queue_dir: &queue_dir,
        },
        (&log, &master),
    );
    announce(options, cores, &addresses, (&log, &master));
    let mut listeners = signals::Reloadable {
        listeners,
        shown: shown_listeners,
        requests: reload_rx,
        restart_only,
    };
    signals::signal_loop(&shared, options, &log, &master, &router, &mut listeners);
    drop(control);
    for h in handles {
        let _ = h.join();
    }
    drop(pid);
    log.line(&master, "terminating on signal");
    Ok(())
}

/// What every core is started with (besides its own listeners).
struct CoreInputs<'a> {
    cores: u16,
    shared: &'a Arc<Shared>,
    log: &'a Log,
    queue_dir: &'a Path,
    spool_setup: &'a SpoolSetup,
    router: &'a crate::control::core::SharedRouter,
}

type ControlSenders = Vec<flume::Sender<crate::control::core::CoreRequest>>;

/// One pinned executor per core; returns once every core listens (or the
/// first one that could not start says why): the cores' control channels
/// and their thread handles.
fn start_cores(
    per_core: Vec<Vec<listen::Bound>>,
    inputs: CoreInputs<'_>,
) -> Result<(ControlSenders, Vec<glommio::ExecutorJoinHandle<()>>), String> {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut handles = Vec::new();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), String>>();
    let cores = inputs.cores;
    let mesh = (cores > 1).then(|| {
        glommio::channels::channel_mesh::MeshBuilder::<crate::qmgr::CoreMsg, _>::full(
            usize::from(cores),
            1024,
        )
    });
    let (control_tx, control_rx): (Vec<_>, Vec<_>) = (0..cores).map(|_| flume::unbounded()).unzip();
    for ((core, listeners), control_rx) in per_core.into_iter().enumerate().zip(control_rx) {
        let control = crate::control::core::Endpoint {
            requests: control_rx,
            router: Arc::clone(inputs.router),
            peers: control_tx.clone(),
        };
        let mesh = mesh.clone();
        let core = core as u16;
        let shared = Arc::clone(inputs.shared);
        let log = inputs.log.clone();
        let queue_dir = inputs.queue_dir.to_path_buf();
        let spool_setup = inputs.spool_setup.clone();
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
                        spool_setup,
                        ready,
                        mesh,
                        control,
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
                inputs.shared.stop_cores();
                return Err(e);
            }
            Err(_) => {
                inputs.shared.stop_cores();
                return Err(start_failure::explain(cores));
            }
        }
    }
    Ok((control_tx, handles))
}

/// What the control socket shows of the daemon.
struct ControlView<'a> {
    cores: u16,
    listeners: Arc<Mutex<Vec<String>>>,
    pickup: crate::pickup::CurrentSettings,
    queue_dir: &'a Path,
}

/// The control socket (queue administration, status, reload); mail still
/// flows when it cannot start. Returns it and the reload requests it
/// forwards to the signal loop.
fn start_control(
    options: &RunOptions,
    control_socket: &Path,
    control_tx: ControlSenders,
    view: ControlView<'_>,
    (log, master): (&Log, &str),
) -> (
    Option<crate::control::ControlServer>,
    flume::Receiver<crate::control::ReloadReply>,
) {
    // `corepost reload` asks through the control socket and waits for the
    // verdict, which the signal loop sends back.
    let (reload_tx, reload_rx) = flume::unbounded();
    let control = match crate::control::ControlServer::start(
        control_socket,
        control_tx,
        crate::control::DaemonInfo {
            started: std::time::Instant::now(),
            cores: view.cores,
            listeners: view.listeners,
            pickup: view.pickup,
            queue_dir: Some(view.queue_dir.to_path_buf()),
            config_dir: Some(options.config_dir.clone()),
            reload: Some(reload_tx),
            logs: Some(crate::control::LogReopen {
                log: log.clone(),
                config_dir: options.config_dir.clone(),
            }),
        },
    ) {
        Ok(c) => Some(c),
        Err(e) => {
            // Mail still flows; only administration is unavailable.
            log.line(
                master,
                &format!("warning: {e}; queue administration is unavailable"),
            );
            None
        }
    };
    (control, reload_rx)
}

/// `corepost_cores`, checked against what a queue id can name.
fn configured_cores(config: &Config) -> Result<u16, String> {
    let cores = config
        .get_int("corepost_cores")
        .map_err(|e| e.to_string())?;
    u16::try_from(cores)
        .ok()
        .filter(|c| (1..=corepost_spool::queue_id::MAX_CORE).contains(c))
        .ok_or_else(|| {
            format!(
                "corepost_cores = {cores}: expected 1 to {}",
                corepost_spool::queue_id::MAX_CORE
            )
        })
}

/// As root, before becoming `mail_owner`: warn about files it could not
/// read, hand it the log and event files, refuse DKIM keys it could not
/// read, start the root delivery helper, then drop privileges.
fn give_up_root<'a>(
    options: &RunOptions,
    config: &Config,
    owner: &listen::Account,
    dkim: impl Iterator<Item = &'a Arc<crate::dkim::DkimSigner>>,
    queue_dir: &Path,
    (log, master): (&Log, &str),
) -> Result<(), String> {
    let reader = corepost_config::owner_access::Owner {
        name: owner.0.clone(),
        uid: owner.1,
        gid: owner.2,
    };
    for w in corepost_config::owner_access::unreadable_files(config, &reader) {
        log.line(master, &format!("warning: {w}"));
    }
    log.hand_over(owner.1, owner.2)?;
    crate::events::hand_over(owner.1, owner.2)?;
    for signer in dkim {
        signer.check_key_access(owner.1, owner.2)?;
    }
    // Local, virtual and pipe act as the recipient: a helper process
    // keeps root for them (Postfix's privilege separation).
    crate::delivery::helper::start(
        &options.config_dir,
        queue_dir,
        owner.1,
        owner.2,
        log,
        master,
    );
    listen::drop_privileges(owner, queue_dir)
}

/// Turn metrics on and bind their endpoint when `corepost_metrics_address` is set (before
/// root is given up, so any port works); served once the cores run.
fn metrics_endpoint(
    config: &Config,
    cores: u16,
    queue_dir: &Path,
) -> Result<Option<crate::metrics::server::Endpoint>, String> {
    let address = config
        .get("corepost_metrics_address")
        .map_err(|e| e.to_string())?;
    let Some(address) = corepost_config::value::parse_listen_address(&address)
        .map_err(|e| format!("corepost_metrics_address: {e}"))?
    else {
        return Ok(None);
    };
    let endpoint = crate::metrics::start(address)?;
    crate::metrics::enable(cores, queue_dir, address);
    Ok(Some(endpoint))
}

/// Load and check the configuration: its errors refuse it (at start and at
/// reload); its warnings come back to be logged.
fn load_checked(dir: &Path) -> Result<(Config, Vec<String>), String> {
    let config = Config::load(dir).map_err(|e| e.to_string())?;
    let report = corepost_config::check::check(&config);
    if !report.is_ok() {
        return Err(format!(
            "configuration errors:\n  {}",
            report.errors.join("\n  ")
        ));
    }
    Ok((config, report.warnings))
}

/// How each core opens its spool and runs its group commits.
#[derive(Clone)]
struct SpoolSetup {
    options: SpoolOptions,
    /// `corepost_commit_delay`.
    commit_delay: Duration,
}

fn spool_setup(config: &Config) -> Result<SpoolSetup, String> {
    let delay = config
        .get_int("corepost_commit_delay")
        .map_err(|e| e.to_string())?;
    let commit_delay = u64::try_from(delay)
        .ok()
        .filter(|us| *us <= 1_000_000)
        .map(Duration::from_micros)
        .ok_or_else(|| format!("corepost_commit_delay: {delay}: not 0 to 1000000 microseconds"))?;
    Ok(SpoolSetup {
        options: spool_options(config)?,
        commit_delay,
    })
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

/// Every smtpd inet service: its settings, and its session count (kept
/// from `previous` across a reload, with the new limit).
fn smtpd_services(
    config: &Config,
    previous: &services::Services,
) -> Result<services::Services, String> {
    let default_limit = config
        .get_int("default_process_limit")
        .map_err(|e| e.to_string())?;
    let mut out = services::Services::new();
    for s in config
        .services()
        .filter(|s| listen::is_smtpd_inet(s.service))
    {
        let id = s.service.id();
        let settings = SmtpdSettings::from_service(&s)
            .map(Arc::new)
            .map_err(|e| format!("service {id}: {e}"))?;
        let limit = services::process_limit(s.service.max_proc, default_limit);
        let public = listen::is_public(config, s.service);
        // Postfix runs a public service's processes with "-o stress=yes"
        // once it has been full (STRESS_README).
        let stressed = if public && limit > 1 {
            let mut service = s.service.clone();
            service.overrides.push(corepost_config::mastercf::Override {
                name: "stress".into(),
                value: "yes".into(),
            });
            let stressed = corepost_config::ServiceConfig {
                config,
                service: &service,
            };
            SmtpdSettings::from_service(&stressed)
                .map(Arc::new)
                .map_err(|e| format!("service {id}: {e}"))?
        } else {
            Arc::clone(&settings)
        };
        let slots = match previous.get(&id) {
            Some(p) => {
                p.slots.set_limit(limit);
                Arc::clone(&p.slots)
            }
            None => services::Slots::new(
                &s.service.name,
                &listen::postfix_name(s.service),
                limit,
                public,
            ),
        };
        out.insert(
            id,
            services::Service {
                settings,
                stressed,
                slots,
            },
        );
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
async fn core_main(
    core: u16,
    cores: u16,
    bound: Vec<listen::Bound>,
    shared: Arc<Shared>,
    log: Log,
    queue_dir: PathBuf,
    spool_setup: SpoolSetup,
    ready: std::sync::mpsc::Sender<Result<(), String>>,
    mesh: Option<MeshBuilder>,
    control: crate::control::core::Endpoint,
) {
    let _exit = ExitGuard(Arc::clone(&shared));
    log_flush::start(&log);
    crate::metrics::bind_core(core);
    let final_log = log.clone();
    let mut spool = match open_spool(&queue_dir, core, cores, spool_setup.options, &log) {
        Ok(spool) => spool,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let syncs = spool.drive_syncs_on_core();
    let ctx = Rc::new(CoreContext {
        id: core,
        log,
        shutdown: Shutdown::default(),
        spool: RefCell::new(spool),
        sessions: Cell::new(0),
        new_mail: crate::context::Signal::default(),
        peers: Box::new(control.peers.clone()),
        queue_space: Default::default(),
    });
    group_commit::start(syncs, &ctx, spool_setup.commit_delay);
    let services = Rc::new(RefCell::new(lock(&shared.services).clone()));
    let (mesh, receivers) = match join_mesh(mesh, core, cores).await {
        Ok(joined) => joined,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let qmgr = crate::qmgr::Qmgr::new(Rc::clone(&ctx), Arc::clone(&lock(&shared.qmgr)), mesh);
    // Notified by `watch` when a reload was applied (pickup waits on it).
    let reloaded = crate::context::Signal::default();
    let tasks = CoreTasks {
        receive: receivers
            .into_iter()
            .map(|(_, rx)| glommio::spawn_local(Rc::clone(&qmgr).receive(rx)))
            .collect(),
        qmgr: glommio::spawn_local(Rc::clone(&qmgr).run()),
        control: glommio::spawn_local(crate::control::core::serve(
            Rc::clone(&ctx),
            Rc::clone(&qmgr),
            control,
        )),
        pickup: (core == 0).then(|| {
            let current = Arc::clone(&shared.pickup);
            glommio::spawn_local(crate::pickup::run(
                Rc::clone(&ctx),
                Box::new(move || lock(&current).clone()),
                reloaded.clone(),
            ))
        }),
    };
    let mut listeners = accept::CoreListeners::new(Rc::clone(&ctx), Rc::clone(&services));
    for b in bound {
        listeners.start(b);
    }
    let _ = ready.send(Ok(()));
    watch(&shared, &ctx, &qmgr, (&services, &reloaded), &mut listeners).await;
    wind_down(ctx, qmgr, services, listeners, tasks).await;
    final_log.flush();
}

type MeshBuilder = glommio::channels::channel_mesh::MeshBuilder<
    crate::qmgr::CoreMsg,
    glommio::channels::channel_mesh::Full,
>;
type MeshReceivers = Vec<(
    usize,
    glommio::channels::shared_channel::ConnectedReceiver<crate::qmgr::CoreMsg>,
)>;

/// Cores exchange delivery jobs and outcomes over a full mesh of bounded
/// channels; every core must join it (none with one core).
async fn join_mesh(
    mesh: Option<MeshBuilder>,
    core: u16,
    cores: u16,
) -> Result<(Option<crate::qmgr::Mesh>, MeshReceivers), String> {
    let Some(builder) = mesh else {
        return Ok((None, Vec::new()));
    };
    let (senders, mut receivers) = builder
        .join()
        .await
        .map_err(|e| format!("core {core}: cannot join the core mesh: {e}"))?;
    let peer = senders.peer_id();
    let mesh = crate::qmgr::Mesh {
        senders,
        peer,
        peers: usize::from(cores),
    };
    Ok((Some(mesh), receivers.streams()))
}

/// Open (recover) this core's spool, logging what recovery found.
fn open_spool(
    queue_dir: &Path,
    core: u16,
    cores: u16,
    options: SpoolOptions,
    log: &Log,
) -> Result<CoreSpool, String> {
    let (spool, report) = CoreSpool::open(queue_dir, core, cores, options)
        .map_err(|e| format!("core {core}: spool: {e}"))?;
    let master = "corepost/spool";
    for s in &report.skipped {
        log.line(master, &format!("warning: core {core}: {s}"));
    }
    for d in &report.damaged {
        log.line(master, &format!("warning: core {core}: {d}"));
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
    crate::metrics::register_spool(core, spool.flush_stats());
    crate::metrics::publish_queue(&spool);
    Ok(spool)
}

/// How often a core publishes its queue's size and reclaims spool space.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// Until the stop signal: apply reloads (settings, listeners) and, once a
/// second, publish the queue's size and reclaim spool space. It sleeps
/// until the main thread wakes it ([`Shared::wake_cores`]) or the
/// housekeeping is due.
async fn watch(
    shared: &Shared,
    ctx: &CoreContext,
    qmgr: &crate::qmgr::Qmgr,
    (services, reloaded): (&RefCell<services::Services>, &crate::context::Signal),
    listeners: &mut accept::CoreListeners,
) {
    let core = ctx.id;
    let woken = shared.wake[usize::from(core)].1.clone();
    let mut generation = shared.generation.load(Ordering::Acquire);
    let mut last = std::time::Instant::now();
    while !shared.stop.load(Ordering::Acquire) {
        let due = HOUSEKEEPING.saturating_sub(last.elapsed());
        futures_lite::future::or(
            async {
                // The senders live in `shared` as long as we do.
                let _ = woken.recv_async().await;
            },
            glommio::timer::sleep(due),
        )
        .await;
        let g = shared.generation.load(Ordering::Acquire);
        if g != generation {
            generation = g;
            *services.borrow_mut() = lock(&shared.services).clone();
            *qmgr.settings.borrow_mut() = Arc::clone(&lock(&shared.qmgr));
            let plan = lock(&shared.plan).clone();
            listeners.retain(&plan).await;
            let opened = std::mem::take(&mut *lock(&shared.opened[usize::from(core)]));
            for b in opened {
                listeners.start(b);
            }
            shared.applied[usize::from(core)].store(g, Ordering::Release);
            reloaded.notify();
        }
        if last.elapsed() >= HOUSEKEEPING {
            last = std::time::Instant::now();
            housekeeping(ctx);
        }
    }
}

/// Publish the queue's size, reclaim spool space, report spare-segment
/// errors.
fn housekeeping(ctx: &CoreContext) {
    let core = ctx.id;
    let mut spool = ctx.spool.borrow_mut();
    crate::metrics::publish_queue(&spool);
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

/// The tasks a core runs besides its listeners.
struct CoreTasks {
    qmgr: glommio::Task<()>,
    control: glommio::Task<()>,
    pickup: Option<glommio::Task<()>>,
    receive: Vec<glommio::Task<()>>,
}

/// Stop: sessions answer 421, tasks end, deliveries in progress get a
/// moment, then the spool is closed.
async fn wind_down(
    ctx: Rc<CoreContext>,
    qmgr: Rc<crate::qmgr::Qmgr>,
    services: Rc<RefCell<services::Services>>,
    listeners: accept::CoreListeners,
    tasks: CoreTasks,
) {
    let core = ctx.id;
    ctx.shutdown.trigger();
    ctx.new_mail.notify();
    listeners.join().await;
    tasks.qmgr.await;
    tasks.control.await;
    if let Some(t) = tasks.pickup {
        t.await;
    }
    for t in tasks.receive {
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
    drop(services);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_services_get_stress_settings_and_limits() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_parts(
            dir.path(),
            Some("inet_interfaces = 192.0.2.1\ninet_protocols = ipv4\nalias_maps =\nalias_database =\ndefault_process_limit = 7\n"),
            Some("smtp inet n - n - - smtpd\n127.0.0.1:2525 inet n - n - 3 smtpd\n"),
        )
        .unwrap();
        let services = smtpd_services(&config, &services::Services::new()).unwrap();
        let public = &services["smtp/inet"];
        // Postfix's -o stress=yes: smtpd_timeout = ${stress?{10}:{300}}s.
        assert_eq!(public.settings.timeout, Duration::from_secs(300));
        assert_eq!(public.stressed.timeout, Duration::from_secs(10));
        assert_eq!(public.slots.limit(), 7);
        let local = &services["127.0.0.1:2525/inet"];
        assert!(Arc::ptr_eq(&local.settings, &local.stressed));
        assert_eq!(local.slots.limit(), 3);
        // A reload keeps the session count and takes the new limit.
        let (_held, _) = local.slots.try_take().unwrap();
        let reloaded = Config::from_parts(
            dir.path(),
            Some("inet_interfaces = 192.0.2.1\ninet_protocols = ipv4\nalias_maps =\nalias_database =\n"),
            Some("127.0.0.1:2525 inet n - n - 1 smtpd\n"),
        )
        .unwrap();
        let again = smtpd_services(&reloaded, &services).unwrap();
        let slots = &again["127.0.0.1:2525/inet"].slots;
        assert!(Arc::ptr_eq(slots, &local.slots));
        assert_eq!(slots.limit(), 1);
        assert!(!slots.available());
    }
}
