//! Delivery workers: one task per open connection to a destination,
//! delivering the destination's ready jobs one after another, and turning
//! every recipient's result into an outcome record and a Postfix-format log
//! line (`<id>: to=<…>, relay=…, delay=…, delays=a/b/c/d, dsn=…, status=…`).

use super::{DestQueue, Job, Qmgr, TransportKind};
use crate::delivery::lmtp::LmtpTarget;
use crate::delivery::smtp::{Outbound, ServerReply, SmtpConnection};
use corepost_spool::{Outcome, OutcomeKind, QueueId, StoredMessage};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What happened to one recipient.
#[derive(Clone)]
pub(super) struct Result1 {
    pub(super) kind: Kind,
    pub(super) dsn: String,
    pub(super) text: String,
}

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Sent,
    Deferred,
    Bounced,
}

/// Work through a destination's queue.
pub async fn worker(qmgr: Rc<Qmgr>, dest: Rc<DestQueue>) {
    let settings = std::sync::Arc::clone(&qmgr.settings.borrow());
    // Borrowed from the settings this worker holds: no copy of the transport's (client)
    // settings per destination worker.
    let Some(transport) = settings.transports.get(&dest.key.transport) else {
        drain(
            &qmgr,
            &dest,
            |_| Result1 {
                kind: Kind::Deferred,
                dsn: "4.3.5".into(),
                text: format!(
                    "mail transport unavailable: no master.cf service \"{}\"",
                    dest.key.transport
                ),
            },
            "none",
        );
        return;
    };
    match &transport.kind {
        TransportKind::Discard => {
            let text = if dest.key.nexthop.is_empty() {
                "discarded".to_string()
            } else {
                dest.key.nexthop.clone()
            };
            drain(
                &qmgr,
                &dest,
                |_| Result1 {
                    kind: Kind::Sent,
                    dsn: "2.0.0".into(),
                    text: text.clone(),
                },
                "none",
            );
        }
        TransportKind::Error => {
            let r = error_result(&dest.key.nexthop);
            drain(&qmgr, &dest, |_| r.clone(), "none");
        }
        TransportKind::NotImplemented(command) => {
            let text =
                format!("delivery agent \"{command}\" is not available in this corepost release");
            drain(
                &qmgr,
                &dest,
                |_| Result1 {
                    kind: Kind::Deferred,
                    dsn: "4.3.0".into(),
                    text: text.clone(),
                },
                "none",
            );
        }
        TransportKind::Smtp(client) => smtp_worker(&qmgr, &dest, client, &settings).await,
        TransportKind::Local(local) => {
            let local = std::sync::Arc::clone(local);
            super::offcore::worker(&qmgr, &dest, transport, "local", move |r| {
                crate::delivery::local::deliver(&local, r)
            })
            .await;
        }
        TransportKind::Pipe(pipe) => {
            let pipe = std::sync::Arc::clone(pipe);
            let relay = dest.key.transport.clone();
            super::offcore::worker(&qmgr, &dest, transport, &relay, move |r| {
                crate::delivery::pipe::deliver(&pipe, r)
            })
            .await;
        }
        TransportKind::Virtual(settings) => {
            let settings = std::sync::Arc::clone(settings);
            super::offcore::worker(&qmgr, &dest, transport, "virtual", move |r| {
                crate::delivery::r#virtual::deliver(&settings, r)
            })
            .await;
        }
    }
}

/// error(8): the next hop is the reason, optionally led by the status
/// (`error:5.7.1 no mail for you here`); a 4.x.x status defers, anything
/// else bounces (5.0.0 when none is given), as Postfix's error agent.
fn error_result(nexthop: &str) -> Result1 {
    let nexthop = nexthop.trim();
    let (status, text) = match nexthop.split_once(char::is_whitespace) {
        Some((first, rest)) if is_status(first) => (first.to_string(), rest.trim().to_string()),
        _ if is_status(nexthop) => (nexthop.to_string(), String::new()),
        _ => ("5.0.0".to_string(), nexthop.to_string()),
    };
    let text = if text.is_empty() {
        "mail for this destination is refused".to_string()
    } else {
        text
    };
    let kind = if status.starts_with('4') {
        Kind::Deferred
    } else {
        Kind::Bounced
    };
    Result1 {
        kind,
        dsn: status,
        text,
    }
}

/// An RFC 3463 enhanced status code, `4.x.x` or `5.x.x`.
fn is_status(word: &str) -> bool {
    let mut parts = word.split('.');
    matches!(parts.next(), Some("4" | "5"))
        && parts
            .by_ref()
            .take(2)
            .filter(|p| (1..=3).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit()))
            .count()
            == 2
        && parts.next().is_none()
}

/// Defer every queued job of a destination marked dead.
pub fn suspend(qmgr: &Rc<Qmgr>, dest: &Rc<DestQueue>, why: &str) {
    let text = format!("delivery temporarily suspended: {why}");
    drain(
        qmgr,
        dest,
        |_| Result1 {
            kind: Kind::Deferred,
            dsn: "4.4.1".into(),
            text: text.clone(),
        },
        "none",
    );
}

/// A shaping suspension or bounce in force for the destination: every queued job gets it.
fn shaping_refusal(qmgr: &Rc<Qmgr>, dest: &Rc<DestQueue>) -> bool {
    let Some(r) = crate::shaping::refusal(qmgr, dest) else {
        return false;
    };
    let r = Result1 {
        kind: if r.bounce {
            Kind::Bounced
        } else {
            Kind::Deferred
        },
        dsn: r.dsn,
        text: r.text,
    };
    drain(qmgr, dest, |_| r.clone(), "none");
    true
}

/// A session error that carries a server reply (greeting, MAIL, DATA): the shaping rules.
fn observe_error(
    qmgr: &Rc<Qmgr>,
    dest: &DestQueue,
    e: &crate::delivery::smtp::SessionError,
    source: Option<&str>,
) {
    use crate::delivery::smtp::SessionError;
    if let SessionError::Greeting { reply, .. } | SessionError::Reply { reply, .. } = e {
        crate::shaping::observe(qmgr, dest, reply, source);
    }
}

/// Give every queued job the same result without connecting anywhere.
fn drain(qmgr: &Rc<Qmgr>, dest: &Rc<DestQueue>, result: impl Fn(&Job) -> Result1, relay: &str) {
    loop {
        let Some(job) = dest.jobs.borrow_mut().pop_front() else {
            return;
        };
        let r = result(&job);
        if let Ok(stored) = corepost_spool::read_message(&job.segment, job.offset) {
            let program = format!("corepost/{}", dest.key.transport);
            let done = Done {
                relay,
                conn_use: 0,
                program: &program,
                setup: Duration::ZERO,
                xfer: Duration::ZERO,
                success: &|_| Some("delivered"),
                expanded: &Expanded::new(),
                dest,
                egress: None,
            };
            finish(qmgr, &job, &stored, same_for_all(&job, &r), &done);
        } else {
            qmgr.complete(&job, Vec::new(), None);
        }
    }
}

/// The same result for every recipient of a job.
fn same_for_all(job: &Job, r: &Result1) -> Vec<(u32, Result1)> {
    job.recipients.iter().map(|&i| (i, r.clone())).collect()
}

async fn smtp_worker(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    client: &crate::delivery::smtp::ClientSettings,
    settings: &super::QmgrSettings,
) {
    let program = format!("corepost/{}", dest.key.transport);
    let started = Instant::now();
    let Some((lmtp, addrs)) = resolve_target(qmgr, dest, client, settings).await else {
        return;
    };
    let nexthop = match &lmtp {
        Some(LmtpTarget::Inet(n)) => n.as_str(),
        _ => dest.key.nexthop.as_str(),
    };
    if lmtp.is_none() {
        crate::shaping::assign(qmgr, dest, nexthop, &addrs);
    }
    if shaping_refusal(qmgr, dest) {
        return;
    }
    // Connect: the first address that answers with a usable greeting.
    let unix = match &lmtp {
        Some(LmtpTarget::Unix(path)) => Some(path.as_path()),
        _ => None,
    };
    // The egress pool's source of this connection (crate::egress), if the mail has a pool.
    let egress = match super::egress::source(qmgr, dest, settings).await {
        Ok(egress) => egress,
        Err(super::egress::NoSource::LeaveToOthers) => return,
        Err(super::egress::NoSource::Defer(r)) => {
            drain(qmgr, dest, |_| r.clone(), "none");
            return;
        }
    };
    let pooled = egress.as_ref().map(|e| e.client(client));
    let base = client;
    let client = pooled.as_ref().unwrap_or(client);
    // A place in the destination's connection limit across nodes, held
    // until the connection is gone (declared first, dropped last).
    let Ok(mut lease) = super::shared::connection_lease(qmgr, dest).await else {
        return;
    };
    // And in its shaping group's (`corepost_shaping_files`).
    let Ok(mut shaped) = crate::shaping::connection(qmgr, dest).await else {
        return;
    };
    crate::shaping::pace_connection(qmgr, dest).await;
    let opened =
        super::connect::open_session(qmgr, dest, client, unix, &addrs, nexthop, &program).await;
    let mut conn = match opened {
        Ok(c) => c,
        Err(failure) => {
            let source = egress.as_ref().map(|e| e.source.name.as_str());
            connect_failed(qmgr, dest, settings, source, failure);
            return;
        }
    };
    if let Some(e) = &egress {
        e.connected(conn.addr(), base);
    }
    // Reachable again.
    *dest.dead.borrow_mut() = None;
    let setup = started.elapsed();
    let caching = super::connect::caching(client, &dest.key.nexthop);
    // Jobs delivered over this connection (Postfix's `conn_use=` from the second on).
    let mut uses = 0u32;
    loop {
        let limits = ConnectionLimits {
            client,
            caching,
            uses,
        };
        if must_stop(qmgr, dest, &conn, &limits, &mut shaped, &mut lease) {
            break;
        }
        let job = dest.jobs.borrow_mut().pop_front();
        let Some(job) = job else {
            // Keep the connection for more mail to this destination.
            if conn.age() >= client.reuse_time_limit || qmgr.ctx.shutdown.is_triggered() {
                break;
            }
            if wait_for_job(qmgr, dest, client).await {
                continue;
            }
            break;
        };
        if let Some(e) = &egress {
            // The source's warm-up limit or suspension ends the connection; the job goes
            // to the destination's next connection, from another member.
            match super::egress::admit(e, dest, settings) {
                Ok(wait) if !wait.is_zero() => glommio::timer::sleep(wait).await,
                Ok(_) => {}
                Err(_) => {
                    dest.jobs.borrow_mut().push_front(job);
                    requeue_rest(qmgr, dest);
                    break;
                }
            }
        }
        let Some(stored) = read_job(qmgr, &job, &program) else {
            continue;
        };
        uses += 1;
        let recipients: Vec<&corepost_spool::Recipient> = job
            .recipients
            .iter()
            .filter_map(|&i| stored.envelope.recipients.get(i as usize))
            .collect();
        let outbound = Outbound {
            sender: &stored.envelope.sender,
            params: &stored.envelope.params,
            recipients: &recipients,
            content: stored.content(),
        };
        // Message pacing: the transport's rate delay or the destination
        // policy's rate, whichever is slower; slots are reserved, so it
        // holds across all of the destination's connections (and nodes,
        // with shared throttles).
        let rate_delay = settings
            .transports
            .get(&dest.key.transport)
            .map_or(Duration::ZERO, |t| t.rate_delay);
        super::shared::pace_delivery(qmgr, dest, rate_delay).await;
        crate::shaping::pace_message(qmgr, dest).await;
        let t = Instant::now();
        let result = conn.deliver(&outbound).await;
        let xfer = t.elapsed();
        if conn.folded() {
            qmgr.ctx.log.line(
                &program,
                &format!(
                    "{}: breaking line > {} bytes with <CR><LF>SPACE",
                    job.id, client.line_length_limit
                ),
            );
        }
        let relay = conn.relay();
        match result {
            Ok(tx) => {
                positive_feedback(qmgr, dest, settings);
                let source = egress.as_ref().map(|e| e.source.name.as_str());
                let results = recipient_results(qmgr, dest, &job, &tx, &conn, client, source);
                let action = success_action(client.lmtp, conn.capabilities().dsn, settings);
                let done = Done {
                    relay: &relay,
                    conn_use: uses,
                    program: &program,
                    setup,
                    xfer,
                    success: &|_| action,
                    expanded: &Expanded::new(),
                    dest,
                    egress: egress.as_ref(),
                };
                finish(qmgr, &job, &stored, results, &done);
                let all_ok = tx.data.as_ref().is_some_and(|d| d.code < 400);
                if !all_ok && conn.reset().await.is_err() {
                    requeue_rest(qmgr, dest);
                    return;
                }
            }
            Err(e) => {
                observe_error(
                    qmgr,
                    dest,
                    &e,
                    egress.as_ref().map(|e| e.source.name.as_str()),
                );
                let r = session_failure(&e);
                let done = Done {
                    relay: &relay,
                    conn_use: uses,
                    program: &program,
                    setup,
                    xfer,
                    success: &|_| None,
                    expanded: &Expanded::new(),
                    dest,
                    egress: egress.as_ref(),
                };
                finish(qmgr, &job, &stored, same_for_all(&job, &r), &done);
                // A refused MAIL or DATA (not 421) or a message the server
                // cannot take leaves the connection usable for the next job.
                if conn.is_usable() && conn.reset().await.is_ok() {
                    continue;
                }
                // The connection is gone; other jobs go to a fresh worker.
                requeue_rest(qmgr, dest);
                return;
            }
        }
    }
    conn.quit().await;
}

/// Positive feedback: the delivery completed without a connection or
/// handshake failure, whatever the replies; the concurrency window may grow.
fn positive_feedback(qmgr: &Rc<Qmgr>, dest: &Rc<DestQueue>, settings: &super::QmgrSettings) {
    if let (Some(w), Some(t)) = (
        dest.window.borrow_mut().as_mut(),
        settings.transports.get(&dest.key.transport),
    ) {
        let before = w.get();
        w.success(
            &t.feedback,
            dest.workers.get(),
            t.initial_concurrency,
            t.concurrency,
        );
        if w.get() != before {
            log_feedback(qmgr, dest, "qmgr_queue_unthrottle", w, t.concurrency);
        }
    }
}

/// Each recipient's result from a completed transaction: its final reply,
/// or why there is none (the connection broke first).
fn recipient_results(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    job: &Job,
    tx: &crate::delivery::smtp::TransactionResult,
    conn: &SmtpConnection,
    client: &crate::delivery::smtp::ClientSettings,
    source: Option<&str>,
) -> Vec<(u32, Result1)> {
    let mut results = Vec::with_capacity(job.recipients.len());
    for (slot, &i) in job.recipients.iter().enumerate() {
        let lost = |text: String| Result1 {
            kind: Kind::Deferred,
            dsn: "4.4.2".into(),
            text,
        };
        let r = match tx.final_reply(slot) {
            Some((reply, stage)) => {
                crate::shaping::observe(qmgr, dest, reply, source);
                from_reply(reply, conn, stage)
            }
            None if slot >= tx.recipients.len() => lost("no reply for this recipient".into()),
            // LMTP: the connection broke before this recipient's reply.
            None if client.lmtp => lost(format!(
                "lost connection with {} while receiving the reply to end of data -- message may be sent more than once",
                conn.peer()
            )),
            None => lost("lost connection before end of data".into()),
        };
        results.push((i, r));
    }
    results
}

/// What bounds one connection's use, besides the destination's state.
struct ConnectionLimits<'a> {
    client: &'a crate::delivery::smtp::ClientSettings,
    /// Connection caching applies to this destination.
    caching: bool,
    /// Jobs delivered over the connection so far.
    uses: u32,
}

/// Whether the connection must take no more jobs; those left are requeued
/// for another connection where a limit (not a refusal) ended it.
fn must_stop(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    conn: &SmtpConnection,
    limits: &ConnectionLimits<'_>,
    shaped: &mut Option<crate::shaping::ConnSlot>,
    lease: &mut Option<super::shared::Lease>,
) -> bool {
    let (client, caching, uses) = (limits.client, limits.caching, limits.uses);
    if crate::shaping::over_limit(dest, shaped) || crate::shaping::used_up(dest, uses) {
        // A throttle lowered the group's connection limit, or the connection carried
        // the group's messages_per_connection.
        requeue_rest(qmgr, dest);
        return true;
    }
    if shaping_refusal(qmgr, dest) {
        return true;
    }
    if super::shared::over_share(qmgr, lease) {
        // Redis is unreachable and this node holds more than its share
        // of the destination's connections: the next jobs go to the
        // connections within the share.
        requeue_rest(qmgr, dest);
        return true;
    }
    if (client.reuse_count_limit > 0 && conn.transactions() >= client.reuse_count_limit)
        || !conn.may_reuse()
    {
        // Used enough: the next jobs go over a fresh connection.
        requeue_rest(qmgr, dest);
        return true;
    }
    if uses > 0 && !caching {
        // No connection caching for this destination: one delivery per connection.
        requeue_rest(qmgr, dest);
        return true;
    }
    false
}

/// An idle cached connection waits for the destination's next job: true
/// when one is queued, false when the cache time limit passed, the daemon
/// stops, or the shaping group wants this connection's place elsewhere.
async fn wait_for_job(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    client: &crate::delivery::smtp::ClientSettings,
) -> bool {
    // One arrival wakes one idle connection (`notify_one`); a wake
    // that finds the queue already emptied by a busy connection
    // waits on, so the cache time limit alone decides when an idle
    // connection closes.
    dest.idle.set(dest.idle.get() + 1);
    let until = Instant::now() + client.cache_time_limit;
    let mut timer = std::pin::pin!(glommio::timer::sleep(client.cache_time_limit));
    let job_waiting = loop {
        let arrived = futures_lite::future::or(
            async {
                dest.arrivals.wait().await;
                true
            },
            futures_lite::future::or(
                async {
                    (&mut timer).await;
                    false
                },
                async {
                    futures_lite::future::or(
                        qmgr.ctx.shutdown.wait(),
                        // Another destination of the shaping group waits for
                        // this connection's place.
                        crate::shaping::wanted_elsewhere(dest),
                    )
                    .await;
                    false
                },
            ),
        )
        .await;
        if !dest.jobs.borrow().is_empty() {
            break true;
        }
        if !arrived || Instant::now() >= until || qmgr.ctx.shutdown.is_triggered() {
            break false;
        }
    };
    dest.idle.set(dest.idle.get() - 1);
    job_waiting
}

/// A session's failure as every affected recipient's result: bounced if
/// permanent, else deferred, with its status and text.
fn session_failure(e: &crate::delivery::smtp::SessionError) -> Result1 {
    Result1 {
        kind: if e.is_permanent() {
            Kind::Bounced
        } else {
            Kind::Deferred
        },
        dsn: e.status(),
        text: e.dsn(),
    }
}

/// No session could be opened: negative feedback (enough failed cohorts
/// and the destination is left alone for a while), then every job is
/// finished with the last error, or "no address to connect to".
fn connect_failed(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    settings: &super::QmgrSettings,
    source: Option<&str>,
    failure: super::connect::NoSession,
) {
    let super::connect::NoSession {
        error: last_error,
        relay,
    } = failure;
    if let Some(e) = &last_error {
        observe_error(qmgr, dest, e, source);
    }
    // Negative feedback; enough failed cohorts and the destination is
    // left alone for a while.
    let verdict = match (
        dest.window.borrow_mut().as_mut(),
        settings.transports.get(&dest.key.transport),
    ) {
        (Some(w), Some(t)) => {
            let verdict = w.failure(&t.feedback);
            log_feedback(qmgr, dest, "qmgr_queue_throttle", w, t.concurrency);
            verdict
        }
        _ => super::window::AfterFailure::Alive,
    };
    if verdict == super::window::AfterFailure::Dead
        && let Some(e) = &last_error
    {
        let pause = settings
            .minimal_backoff
            .min(std::time::Duration::from_secs(60));
        *dest.dead.borrow_mut() = Some((Instant::now() + pause, e.dsn()));
    }
    let r = match &last_error {
        Some(e) => session_failure(e),
        None => Result1 {
            kind: Kind::Deferred,
            dsn: "4.4.1".into(),
            text: "no address to connect to".into(),
        },
    };
    drain(qmgr, dest, |_| r.clone(), &relay);
}

/// Where a worker's connection goes: the LMTP target (LMTP only) and the
/// next hop's addresses (none for a Unix socket). `None` when there is
/// nowhere to go: the destination's jobs are then finished, deferred or
/// bounced with the reason.
async fn resolve_target(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    client: &crate::delivery::smtp::ClientSettings,
    settings: &super::QmgrSettings,
) -> Option<(Option<LmtpTarget>, Vec<crate::dns::nexthop::Destination>)> {
    // LMTP: a Unix socket, or a host whose addresses (never MX) are looked up.
    let lmtp = if client.lmtp {
        match crate::delivery::lmtp::parse_nexthop(
            &dest.key.nexthop,
            client.default_port,
            &client.socket_directory,
        ) {
            Ok(t) => Some(t),
            Err(text) => {
                let r = Result1 {
                    kind: Kind::Deferred,
                    dsn: "4.3.5".into(),
                    text,
                };
                drain(qmgr, dest, |_| r.clone(), "none");
                return None;
            }
        }
    } else {
        None
    };
    let nexthop = match &lmtp {
        Some(LmtpTarget::Inet(n)) => n.as_str(),
        _ => dest.key.nexthop.as_str(),
    };
    // Where to connect.
    let resolved = match &lmtp {
        Some(LmtpTarget::Unix(_)) => Ok(Vec::new()),
        _ => {
            qmgr.resolver
                .resolve_nexthop(nexthop, &settings.nexthop)
                .await
        }
    };
    match resolved {
        Ok(addrs) => Some((lmtp, addrs)),
        Err(e) => {
            let kind = if e.is_permanent() {
                Kind::Bounced
            } else {
                Kind::Deferred
            };
            let dsn = e.dsn().to_string();
            let text = e.to_string();
            drain(
                qmgr,
                dest,
                |_| Result1 {
                    kind,
                    dsn: dsn.clone(),
                    text: text.clone(),
                },
                "none",
            );
            None
        }
    }
}

/// The NOTIFY=SUCCESS action after an SMTP/LMTP delivery, as Postfix's
/// smtp_rcpt_done: none when the next hop announced DSN (it reports from
/// then on), "relayed" otherwise, or "delivered" over LMTP with
/// `lmtp_assume_final = yes`.
fn success_action(
    lmtp: bool,
    next_hop_dsn: bool,
    settings: &super::QmgrSettings,
) -> Option<&'static str> {
    if next_hop_dsn {
        None
    } else if lmtp && settings.lmtp_assume_final {
        Some("delivered")
    } else {
        Some("relayed")
    }
}

/// With `destination_concurrency_feedback_debug`, log a destination's
/// concurrency window after feedback changed it, as Postfix's qmgr does.
fn log_feedback(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    function: &str,
    window: &super::window::ConcurrencyWindow,
    limit: usize,
) {
    if !qmgr.settings.borrow().feedback_debug {
        return;
    }
    let queue = format!("{}:{}", dest.key.transport, dest.key.nexthop);
    qmgr.ctx.log.line(
        "corepost/qmgr",
        &format!("{function}: {}", window.debug_line(&queue, limit)),
    );
}

/// Wait for the next free slot of a paced event and reserve the one after.
pub(super) async fn pace(next: &std::cell::Cell<Option<Instant>>, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let now = Instant::now();
    let slot = next.get().map_or(now, |n| n.max(now));
    next.set(Some(slot + interval));
    if slot > now {
        glommio::timer::sleep(slot - now).await;
    }
}

/// Hand the remaining jobs to a new worker.
fn requeue_rest(qmgr: &Rc<Qmgr>, dest: &Rc<DestQueue>) {
    // Take the job out before enqueue borrows the queue again.
    let job = dest.jobs.borrow_mut().pop_front();
    if let Some(job) = job {
        qmgr.enqueue(dest.key.clone(), job);
    }
}

fn from_reply(reply: &ServerReply, conn: &SmtpConnection, stage: &str) -> Result1 {
    let dsn = reply
        .enhanced
        .clone()
        .unwrap_or_else(|| format!("{}.0.0", reply.code / 100));
    let kind = match reply.code {
        200..=399 => Kind::Sent,
        400..=499 => Kind::Deferred,
        _ => Kind::Bounced,
    };
    let text = match kind {
        Kind::Sent => reply.to_string(),
        _ => format!(
            "host {} said: {} (in reply to {stage} command)",
            conn.peer(),
            reply
        ),
    };
    Result1 { kind, dsn, text }
}

/// A recipient's result turned into what is recorded: the outcome kind,
/// status, text and log status word.
struct Final {
    recipient: u32,
    kind: OutcomeKind,
    dsn: String,
    text: String,
    status: &'static str,
}

fn finalize(
    qmgr: &Rc<Qmgr>,
    dest: &DestQueue,
    stored: &StoredMessage,
    i: u32,
    r: &Result1,
    now: u64,
) -> Final {
    let env = &stored.envelope;
    // The shaping group's backoff times, and no earlier than a suspension's end.
    let next_attempt = crate::shaping::next_attempt(qmgr, dest, env.arrival, now);
    let soft_bounce = qmgr.settings.borrow().soft_bounce;
    match r.kind {
        // soft_bounce: Postfix's bounce_append defers instead, with the
        // status's class changed to 4, logged as status=SOFTBOUNCE; and
        // nothing expires.
        Kind::Bounced if soft_bounce => Final {
            recipient: i,
            kind: OutcomeKind::Deferred { next_attempt },
            dsn: format!("4{}", r.dsn.get(1..).unwrap_or(".0.0")),
            text: r.text.clone(),
            status: "SOFTBOUNCE",
        },
        Kind::Sent => Final {
            recipient: i,
            kind: OutcomeKind::Delivered,
            dsn: r.dsn.clone(),
            text: r.text.clone(),
            status: "sent",
        },
        Kind::Bounced => Final {
            recipient: i,
            kind: OutcomeKind::Bounced,
            dsn: r.dsn.clone(),
            text: r.text.clone(),
            status: "bounced",
        },
        // Expired: the last attempt is logged as deferred and the
        // recipient returned with its last (4.x.x) status, as Postfix's
        // bounce reports the defer log ("Action: failed").
        Kind::Deferred if !soft_bounce && qmgr.expired(env.arrival, env.sender.is_empty(), now) => {
            Final {
                recipient: i,
                kind: OutcomeKind::Expired,
                dsn: r.dsn.clone(),
                text: r.text.clone(),
                status: "deferred",
            }
        }
        Kind::Deferred => Final {
            recipient: i,
            kind: OutcomeKind::Deferred { next_attempt },
            dsn: r.dsn.clone(),
            text: r.text.clone(),
            status: "deferred",
        },
    }
}

/// How a job's delivery went, for its log lines: the relay (`host[addr]:port` or `none`), the
/// connection's use count (Postfix prints `conn_use=N` from the second use on), the agent's
/// program name and the connection setup and transfer times.
#[derive(Clone, Copy)]
pub(super) struct Done<'a> {
    pub(super) relay: &'a str,
    pub(super) conn_use: u32,
    pub(super) program: &'a str,
    pub(super) setup: Duration,
    pub(super) xfer: Duration,
    /// The NOTIFY=SUCCESS action for a delivered recipient, if any.
    pub(super) success: SuccessAction<'a>,
    /// Per recipient, the final destinations of an alias or .forward.
    pub(super) expanded: &'a Expanded,
    /// The destination the job was for (metrics: transport and destination labels).
    pub(super) dest: &'a super::DestQueue,
    /// The egress pool source of the connection, if any (the JSON events).
    pub(super) egress: Option<&'a crate::egress::Lease>,
}

/// Record one job's results: first the notice for recipients that failed
/// for good (so it is in the log before the outcomes that cause it), then
/// each outcome, with its log line.
pub(super) fn finish(
    qmgr: &Rc<Qmgr>,
    job: &Job,
    stored: &StoredMessage,
    results: Vec<(u32, Result1)>,
    done: &Done<'_>,
) {
    let Done {
        relay,
        conn_use,
        program,
        setup,
        xfer,
        success,
        expanded,
        dest,
        egress,
    } = *done;
    let now = corepost_spool::queue_id::now_micros();
    let finals: Vec<Final> = results
        .iter()
        .map(|(i, r)| finalize(qmgr, dest, stored, *i, r, now))
        .collect();
    let failed: Vec<&Final> = finals
        .iter()
        .filter(|f| matches!(f.kind, OutcomeKind::Bounced | OutcomeKind::Expired))
        .collect();
    let mut notice = if failed.is_empty() {
        None
    } else {
        bounce(qmgr, job.id, stored, &failed, relay, now, program)
    };
    let delivered: Vec<(&Final, &'static str)> = finals
        .iter()
        .zip(&results)
        .filter(|(f, _)| f.kind == OutcomeKind::Delivered)
        .filter_map(|(f, (_, r))| Some((f, success(r)?)))
        .collect();
    if let Some(lsn) = success_notice(qmgr, job.id, stored, &delivered, relay, now, program) {
        notice = Some(notice.map_or(lsn, |n: corepost_spool::Lsn| n.max(lsn)));
    }
    let expired = finals.iter().any(|f| f.kind == OutcomeKind::Expired);
    let statuses = finals.iter().map(|f| metrics_status(f.kind));
    let (transport, nexthop, policy) = (
        &dest.key.transport,
        &dest.key.nexthop,
        dest.policy.is_some(),
    );
    if let Some(e) = egress {
        let statuses = finals.iter().map(|f| metrics_status(f.kind));
        crate::metrics::egress(&e.pool, &e.source.name, statuses);
    }
    crate::metrics::delivered(transport, nexthop, policy, statuses, stored.content().len());
    let env = &stored.envelope;
    let mut outcomes = Vec::with_capacity(finals.len());
    // The same for every recipient of the job: formatted once, not per recipient.
    let total = Duration::from_micros(now.saturating_sub(env.arrival));
    let in_qmgr = job.picked.elapsed();
    let conn_use = if conn_use > 1 {
        format!(", conn_use={conn_use}")
    } else {
        String::new()
    };
    let delays = format!(
        "delay={:.2}, delays={:.2}/{:.2}/{:.2}/{:.2}",
        total.as_secs_f64(),
        total.saturating_sub(in_qmgr).as_secs_f64(),
        in_qmgr.saturating_sub(setup + xfer).as_secs_f64(),
        setup.as_secs_f64(),
        xfer.as_secs_f64(),
    );
    for f in finals {
        let recipient = env.recipients.get(f.recipient as usize);
        let address = recipient.map_or("", |r| r.address.as_str());
        // The address as received, when rewriting changed it (virtual
        // aliases, canonical maps, qualification): Postfix's `orig_to=`.
        let orig_to = match recipient.and_then(|r| r.original.as_deref()) {
            Some(o) => format!("orig_to=<{o}>, "),
            None => String::new(),
        };
        let line = |to: &str, orig_to: &str, dsn: &str, status: &str, text: &str| {
            let id = job.id;
            qmgr.ctx.log.line(
                program,
                &format!("{id}: to=<{to}>, {orig_to}relay={relay}{conn_use}, {delays}, dsn={dsn}, status={status} ({text})"),
            );
            let bounce_class = crate::bounce_class::of_failure(dsn, text);
            if let Some(class) = bounce_class {
                crate::metrics::failure(status, class);
            }
            crate::events::attempt(&crate::events::Attempt {
                program,
                bounce_class,
                id,
                sender: &env.sender,
                recipient: to,
                orig_to,
                relay,
                status,
                dsn,
                response: text,
                size: stored.content().len(),
                total,
                in_qmgr,
                setup,
                xfer,
                egress: egress.map(|e| crate::events::Egress {
                    pool: &e.pool,
                    source: &e.source.name,
                    address: e.address(),
                }),
            });
        };
        match expanded.get(&f.recipient) {
            Some(lines) if !lines.is_empty() && !matches!(f.kind, OutcomeKind::Deferred { .. }) => {
                log_expanded(address, lines, &line);
            }
            _ => line(address, &orig_to, &f.dsn, f.status, &f.text),
        }
        outcomes.push(Outcome {
            queue_id: job.id,
            recipient: f.recipient,
            kind: f.kind,
            at: now,
            dsn: f.dsn,
            reply: f.text,
            relay: relay.to_string(),
        });
    }
    if expired {
        qmgr.ctx.log.line(
            "corepost/qmgr",
            &format!(
                "{}: from=<{}>, status=expired, returned to sender",
                job.id, env.sender
            ),
        );
        crate::events::expiry(job.id, &env.sender);
    }
    qmgr.complete(job, outcomes, notice);
}

fn metrics_status(kind: OutcomeKind) -> crate::metrics::Status {
    match kind {
        OutcomeKind::Delivered => crate::metrics::Status::Sent,
        OutcomeKind::Bounced => crate::metrics::Status::Bounced,
        OutcomeKind::Expired => crate::metrics::Status::Expired,
        _ => crate::metrics::Status::Deferred,
    }
}

/// local(8)'s final destinations per envelope recipient (alias,
/// `:include:`, `.forward` expansion), each logged as its own line with
/// `orig_to=<envelope recipient>`.
pub(super) type Expanded = std::collections::HashMap<u32, Vec<(String, Result1)>>;

/// What a delivered recipient that asked for NOTIFY=SUCCESS is reported as
/// ("delivered", "relayed", "expanded"), or no notice.
pub(super) type SuccessAction<'a> = &'a dyn Fn(&Result1) -> Option<&'static str>;

/// Postfix's local logs each final destination of an alias or .forward,
/// with the recipient it came from (`orig_to=`, only when it differs: a
/// .forward copy to the user's own mailbox has none).
fn log_expanded(
    address: &str,
    lines: &[(String, Result1)],
    line: &dyn Fn(&str, &str, &str, &str, &str),
) {
    for (to, r) in lines {
        let status = match r.kind {
            Kind::Sent => "sent",
            Kind::Bounced => "bounced",
            Kind::Deferred => "deferred",
        };
        let orig_to = if to.eq_ignore_ascii_case(address) {
            String::new()
        } else {
            format!("orig_to=<{address}>, ")
        };
        line(to, &orig_to, &r.dsn, status, &r.text);
    }
}

/// Queue a success notice (NOTIFY=SUCCESS) for delivered recipients.
fn success_notice(
    qmgr: &Rc<Qmgr>,
    id: QueueId,
    stored: &StoredMessage,
    delivered: &[(&Final, &'static str)],
    relay: &str,
    now: u64,
    program: &str,
) -> Option<corepost_spool::Lsn> {
    let env = &stored.envelope;
    let remote = remote_mta(relay);
    let reports: Vec<crate::bounce::FailedRecipient<'_>> = delivered
        .iter()
        .filter_map(|(f, action)| {
            let recipient = env.recipients.get(f.recipient as usize)?;
            crate::bounce::wants_report(recipient.notify, crate::bounce::ReportKind::Success).then(
                || crate::bounce::FailedRecipient {
                    recipient,
                    status: f.dsn.clone(),
                    // Postfix's text: "delivery via mx[addr]:25: 250 ...".
                    diagnostic: match &remote {
                        Some(_) => format!("delivery via {relay}: {}", f.text),
                        None => f.text.clone(),
                    },
                    remote_mta: remote.clone(),
                    action: Some(action),
                    will_retry_until: None,
                },
            )
        })
        .collect();
    if reports.is_empty() {
        return None;
    }
    queue_report(
        qmgr,
        crate::bounce::ReportKind::Success,
        id,
        stored,
        &reports,
        now,
        program,
    )
}

/// The host of a `host[addr]:port` relay, for `Remote-MTA:`.
fn remote_mta(relay: &str) -> Option<String> {
    // local, virtual and pipe name no host.
    relay
        .split_once('[')
        .map(|(host, _)| host)
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// Queue a delivery status notification for recipients that failed for good.
fn bounce(
    qmgr: &Rc<Qmgr>,
    id: QueueId,
    stored: &StoredMessage,
    failed: &[&Final],
    relay: &str,
    now: u64,
    program: &str,
) -> Option<corepost_spool::Lsn> {
    let env = &stored.envelope;
    let remote = remote_mta(relay);
    let reports: Vec<crate::bounce::FailedRecipient<'_>> = failed
        .iter()
        .filter_map(|f| {
            Some(crate::bounce::FailedRecipient {
                recipient: env.recipients.get(f.recipient as usize)?,
                status: f.dsn.clone(),
                diagnostic: f.text.clone(),
                remote_mta: remote.clone(),
                action: None,
                will_retry_until: None,
            })
        })
        .collect();
    queue_report(
        qmgr,
        crate::bounce::ReportKind::Failure,
        id,
        stored,
        &reports,
        now,
        program,
    )
}

/// Build a notice about `reports` of message `id` and append it to this
/// core's spool; returns its LSN.
pub(crate) fn queue_report(
    qmgr: &Qmgr,
    kind: crate::bounce::ReportKind,
    id: QueueId,
    stored: &StoredMessage,
    reports: &[crate::bounce::FailedRecipient<'_>],
    now: u64,
    program: &str,
) -> Option<corepost_spool::Lsn> {
    let settings = std::sync::Arc::clone(&qmgr.settings.borrow());
    let env = &stored.envelope;
    let notice_id = qmgr.ctx.new_queue_id();
    let notice = match crate::bounce::build_report(
        &settings.bounce,
        kind,
        env,
        stored.content(),
        reports,
        now,
        notice_id,
    ) {
        crate::bounce::BounceOutcome::Notice(n) => n,
        crate::bounce::BounceOutcome::Nothing { reason } => {
            qmgr.ctx
                .log
                .line(program, &format!("{id}: no notification sent: {reason}"));
            return None;
        }
    };
    let route = {
        let (_, domain) = crate::routing::split_address(&notice.recipient);
        settings
            .router
            .classify(domain)
            .and_then(|class| settings.router.route("", &notice.recipient, class))
    };
    let route = match route {
        Ok(r) => r,
        Err(e) => {
            qmgr.ctx.log.line(
                program,
                &format!(
                    "warning: {id}: cannot route the notification to <{}>: {e}",
                    notice.recipient
                ),
            );
            return None;
        }
    };
    let envelope = corepost_spool::Envelope {
        queue_id: notice_id,
        arrival: now,
        sender: notice.sender.clone(),
        params: corepost_spool::MailParams::default(),
        client: corepost_spool::ClientInfo {
            name: "localhost".into(),
            addr: "127.0.0.1".into(),
            port: 0,
            helo: String::new(),
            protocol: "bounce".into(),
            sasl_username: None,
            tls: None,
        },
        recipients: vec![corepost_spool::Recipient {
            address: notice.recipient.clone(),
            orcpt: None,
            notify: 0,
            transport: route.transport,
            nexthop: route.nexthop,
            state: corepost_spool::RecipientState::Pending,
            original: None,
        }],
        next_attempt: 0,
        held: false,
    };
    match qmgr
        .ctx
        .spool
        .borrow_mut()
        .append_message(&envelope, &notice.content)
    {
        Ok(appended) => {
            qmgr.ctx.log.line(
                "corepost/bounce",
                &format!(
                    "{id}: sender {} notification: {notice_id}",
                    match kind {
                        crate::bounce::ReportKind::Delay => "delay",
                        crate::bounce::ReportKind::Failure => "non-delivery",
                        crate::bounce::ReportKind::Success => "delivery status",
                    }
                ),
            );
            qmgr.ctx.new_mail.notify();
            Some(appended.lsn)
        }
        Err(e) => {
            qmgr.ctx.log.line(
                "corepost/bounce",
                &format!("warning: {id}: cannot queue the notification: {e}"),
            );
            None
        }
    }
}

/// The job's message from the spool; an unreadable one (its record failed
/// its checksum) is logged and the job completed without outcomes, so the
/// message stays queued for the next attempt rather than stalling the
/// destination.
pub(super) fn read_job(
    qmgr: &Rc<Qmgr>,
    job: &Job,
    program: &str,
) -> Option<corepost_spool::StoredMessage> {
    match corepost_spool::read_message(&job.segment, job.offset) {
        Ok(s) => Some(s),
        Err(e) => {
            qmgr.ctx
                .log
                .line(program, &format!("warning: {}: {e}", job.id));
            qmgr.complete(job, Vec::new(), None);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_transport_takes_the_status_from_its_next_hop() {
        let r = error_result("5.7.1 no mail for you here");
        assert!(matches!(r.kind, Kind::Bounced));
        assert_eq!(
            (r.dsn.as_str(), r.text.as_str()),
            ("5.7.1", "no mail for you here")
        );
        let r = error_result("4.3.2 try later");
        assert!(matches!(r.kind, Kind::Deferred));
        assert_eq!(r.dsn, "4.3.2");
        let r = error_result("mailbox disabled");
        assert_eq!(
            (r.dsn.as_str(), r.text.as_str()),
            ("5.0.0", "mailbox disabled")
        );
        let r = error_result("");
        assert_eq!(r.text, "mail for this destination is refused");
        assert_eq!(error_result("5.1.10 x").dsn, "5.1.10");
        assert_eq!(error_result("5.1 x").dsn, "5.0.0");
    }
}
