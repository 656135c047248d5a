//! The main thread after start: waiting for signals (SIGTERM/SIGINT stop,
//! SIGHUP reloads) and for `reload` requests from the control socket, and
//! the reload itself.

use super::{RunOptions, Shared, listen, load_checked, lock, services, smtpd_services};
use crate::log::Log;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Block the signals the main thread handles, before any other thread
/// exists, so every thread inherits the mask and only `sigtimedwait` in the
/// main thread sees them.
pub(super) fn block_signals() {
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

pub(super) fn signal_loop(
    shared: &Arc<Shared>,
    options: &RunOptions,
    log: &Log,
    master: &str,
    router: &crate::control::core::SharedRouter,
    listeners: &mut Reloadable,
) {
    loop {
        // A core that stops unasked wakes us (`wake_signal_loop`); the
        // timeout is only a safety net.
        let signal = wait_signal(Duration::from_secs(60));
        if shared.exited.load(Ordering::Acquire) > 0 {
            log.line(
                master,
                "warning: a core stopped unexpectedly; shutting down",
            );
            break;
        }
        match signal {
            Some(libc::SIGHUP) => serve_reload(shared, options, log, master, router, listeners),
            Some(_) => break,
            // A request whose signal was merged with another one.
            None if !listeners.requests.is_empty() => {
                serve_reload(shared, options, log, master, router, listeners)
            }
            None => {}
        }
    }
    super::notify::stopping();
    shared.stop_cores();
}

/// Interrupt the signal loop's wait (a core stopped unasked): a SIGTERM
/// to ourselves, which every thread blocks and only that wait takes; the
/// loop sees the stopped core first and says so.
pub(super) fn wake_signal_loop() {
    // SAFETY: signalling our own process has no memory-safety preconditions.
    unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
}

/// One reload, answering every `corepost reload` that asked before it
/// started (their configuration changes are on disk by then).
fn serve_reload(
    shared: &Arc<Shared>,
    options: &RunOptions,
    log: &Log,
    master: &str,
    router: &crate::control::core::SharedRouter,
    reloadable: &mut Reloadable,
) {
    let waiting: Vec<_> = reloadable.requests.try_iter().collect();
    super::notify::reloading();
    let verdict = reload(shared, options, log, master, router, reloadable);
    super::notify::ready(&match &verdict {
        Ok(_) => format!(
            "reloaded; listening on {}",
            lock(&reloadable.shown).join(" ")
        ),
        Err(e) => format!("reload refused, running the previous configuration: {e}"),
    });
    for reply in waiting {
        let _ = reply.send(verdict.clone());
    }
}

/// What a reload changes besides the shared settings: the listening
/// addresses, and their list in `corepost status`.
pub(super) struct Reloadable {
    pub listeners: services::Listeners,
    pub shown: Arc<Mutex<Vec<String>>>,
    /// `corepost reload` requests from the control socket, answered with
    /// the verdict.
    pub requests: flume::Receiver<crate::control::ReloadReply>,
    /// The parameters only a restart applies, as started.
    pub restart_only: super::restart_only::StartValues,
}

/// Postfix's `postfix reload`: read the configuration again and apply it
/// to new sessions and deliveries, open the listeners it adds and close
/// those it removes (their sessions finish). Everything is resolved and
/// bound before anything is replaced, so a broken main.cf, or an address
/// that cannot be bound, keeps the whole running configuration. Logs and
/// returns the verdict: the new configuration's warnings, or why it was
/// refused.
fn reload(
    shared: &Arc<Shared>,
    options: &RunOptions,
    log: &Log,
    master: &str,
    router: &crate::control::core::SharedRouter,
    reloadable: &mut Reloadable,
) -> Result<Vec<String>, String> {
    let cores = shared.applied.len();
    let loaded = load_checked(&options.config_dir).and_then(|(c, warnings)| {
        let logging = crate::log::LogSettings::from_config(&c)?;
        let events = crate::events::EventSettings::from_config(&c)?;
        let bounce_classes = crate::bounce_class::Rules::from_config(&c)?;
        let pickup = crate::pickup::PickupSettings::from_config(&c)?.map(Arc::new);
        let smtpd = smtpd_services(&c, &lock(&shared.services))?;
        let qmgr = crate::qmgr::QmgrSettings::from_config(&c)?;
        let router = crate::routing::Router::from_params(&|n| c.get(n))?;
        let plan = listen::plan(&c)?;
        if plan.is_empty() {
            return Err("master.cf has no smtpd inet service: nothing to listen on".into());
        }
        let prepared = reloadable.listeners.prepare(plan, cores)?;
        let warnings = [
            warnings,
            crate::metrics::reload_warning(&c),
            reloadable.restart_only.changed(&c),
        ]
        .concat();
        Ok((
            c,
            warnings,
            smtpd,
            qmgr,
            router,
            prepared,
            (logging, events, bounce_classes, pickup),
        ))
    });
    let (config, warnings, smtpd, qmgr, new_router, mut prepared, others) = match loaded {
        Ok(l) => l,
        Err(e) => {
            log.line(
                master,
                &format!("warning: reload failed, keeping the running configuration: {e}"),
            );
            return Err(e);
        }
    };
    *lock(router) = Arc::new(new_router);
    // As Postfix's postlogd, restarted by a reload: maillog_file (or the
    // new destination) is opened again, and so is the event output.
    let (logging, events, bounce_classes, pickup) = others;
    reopen_logs(log, master, &logging, &events);
    crate::bounce_class::install(bounce_classes);
    // Local submissions: pickup and cleanup's settings, from the next file.
    *lock(&shared.pickup) = pickup;
    // Transports, their limits and the delivery agents' settings (aliases,
    // mailboxes, pipe commands) apply to deliveries started from now.
    *lock(&shared.qmgr) = Arc::new(qmgr);
    *lock(&shared.services) = smtpd;
    for (core, bound) in std::mem::take(&mut prepared.per_core)
        .into_iter()
        .enumerate()
    {
        lock(&shared.opened[core]).extend(bound);
    }
    let listeners = &mut reloadable.listeners;
    let released = listeners.commit(prepared);
    *lock(&shared.plan) = listeners.plan().to_vec();
    let generation = shared.generation.fetch_add(1, Ordering::AcqRel) + 1;
    shared.wake_cores();
    // A closed address is released once every core closed its socket.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline
        && shared
            .applied
            .iter()
            .any(|a| a.load(Ordering::Acquire) < generation)
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    drop(released);
    *lock(&reloadable.shown) = listeners
        .plan()
        .iter()
        .map(|p| p.address.to_string())
        .collect();
    for w in &warnings {
        log.line(master, &format!("warning: {w}"));
    }
    crate::events::admin(master, None, "reload");
    log.line(
        master,
        &format!(
            "reload -- version {}, configuration {}",
            env!("CARGO_PKG_VERSION"),
            config.config_dir.display()
        ),
    );
    Ok(warnings)
}

/// Open the log and the event output again with a reload's settings; a
/// failure keeps the old ones, with a warning.
fn reopen_logs(
    log: &Log,
    master: &str,
    logging: &crate::log::LogSettings,
    events: &crate::events::EventSettings,
) {
    if let Err(e) = log.reopen(Some(logging)) {
        log.line(master, &format!("warning: {e}; logging as before"));
    }
    if let Err(e) = crate::events::configure(events, log) {
        log.line(master, &format!("warning: {e}; event output as before"));
    }
}
