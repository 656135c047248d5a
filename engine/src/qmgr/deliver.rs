//! Delivery workers: one task per open connection to a destination,
//! delivering the destination's ready jobs one after another, and turning
//! every recipient's result into an outcome record and a Postfix-format log
//! line (`<id>: to=<…>, relay=…, delay=…, delays=a/b/c/d, dsn=…, status=…`).

use super::{DestQueue, Job, Qmgr, TransportKind};
use crate::delivery::smtp::{Outbound, RecipientResult, ServerReply, SessionError, SmtpConnection};
use corepost_spool::{Applied, Outcome, OutcomeKind, QueueId, StoredMessage};
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What happened to one recipient.
struct Result1 {
    kind: Kind,
    dsn: String,
    text: String,
}

enum Kind {
    Sent,
    Deferred,
    Bounced,
}

/// Work through a destination's queue.
pub async fn worker(qmgr: Rc<Qmgr>, dest: Rc<DestQueue>) {
    let settings = std::sync::Arc::clone(&qmgr.settings.borrow());
    let transport = settings.transports.get(&dest.key.transport).cloned();
    let Some(transport) = transport else {
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
            let text = if dest.key.nexthop.is_empty() {
                "mail for this destination is refused".to_string()
            } else {
                dest.key.nexthop.clone()
            };
            drain(
                &qmgr,
                &dest,
                |_| Result1 {
                    kind: Kind::Bounced,
                    dsn: "5.0.0".into(),
                    text: text.clone(),
                },
                "none",
            );
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
            for &i in &job.recipients {
                record(
                    qmgr,
                    &job,
                    &stored,
                    i,
                    &Result1 {
                        kind: clone_kind(&r.kind),
                        dsn: r.dsn.clone(),
                        text: r.text.clone(),
                    },
                    relay,
                    &program,
                    Duration::ZERO,
                    Duration::ZERO,
                );
            }
        }
        qmgr.job_done(job.id);
    }
}

fn clone_kind(k: &Kind) -> Kind {
    match k {
        Kind::Sent => Kind::Sent,
        Kind::Deferred => Kind::Deferred,
        Kind::Bounced => Kind::Bounced,
    }
}

async fn smtp_worker(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    client: &crate::delivery::smtp::ClientSettings,
    settings: &super::QmgrSettings,
) {
    let program = format!("corepost/{}", dest.key.transport);
    let started = Instant::now();
    // Where to connect.
    let addrs = match qmgr
        .resolver
        .resolve_nexthop(&dest.key.nexthop, &settings.nexthop)
        .await
    {
        Ok(a) => a,
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
                    kind: clone_kind(&kind),
                    dsn: dsn.clone(),
                    text: text.clone(),
                },
                "none",
            );
            return;
        }
    };
    // Connect: the first address that answers with a usable greeting.
    let mut conn = None;
    let mut last_error = None;
    for d in addrs.iter() {
        match SmtpConnection::connect(d.addr, &d.host, client).await {
            Ok(c) => {
                conn = Some(c);
                break;
            }
            Err(e) => {
                let permanent_greeting =
                    matches!(e, SessionError::Greeting(ref r) if r.code >= 500);
                last_error = Some(e);
                if permanent_greeting {
                    continue; // smtp_skip_5xx_greeting: try the next MX
                }
            }
        }
    }
    let Some(mut conn) = conn else {
        let e = last_error.map_or_else(|| "no address to connect to".to_string(), |e| e.dsn());
        drain(
            qmgr,
            dest,
            |_| Result1 {
                kind: Kind::Deferred,
                dsn: "4.4.1".into(),
                text: e.clone(),
            },
            "none",
        );
        return;
    };
    let setup = started.elapsed();
    loop {
        let job = dest.jobs.borrow_mut().pop_front();
        let Some(job) = job else {
            // Keep the connection for more mail to this destination.
            if conn.age() >= settings.reuse_time_limit || qmgr.ctx.shutdown.is_triggered() {
                break;
            }
            let arrived = futures_lite::future::or(
                async {
                    dest.arrivals.wait().await;
                    true
                },
                async {
                    glommio::timer::sleep(settings.cache_time_limit).await;
                    false
                },
            )
            .await;
            if arrived && !dest.jobs.borrow().is_empty() {
                continue;
            }
            break;
        };
        let stored = match corepost_spool::read_message(&job.segment, job.offset) {
            Ok(s) => s,
            Err(e) => {
                qmgr.ctx
                    .log
                    .line(&program, &format!("warning: {}: {e}", job.id));
                qmgr.job_done(job.id);
                continue;
            }
        };
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
        let t = Instant::now();
        let result = conn.deliver(&outbound).await;
        let xfer = t.elapsed();
        let relay = conn.relay();
        match result {
            Ok(tx) => {
                for (slot, &i) in job.recipients.iter().enumerate() {
                    let r = match tx.recipients.get(slot) {
                        Some(RecipientResult::Accepted(_)) => match &tx.data {
                            Some(d) => from_reply(d, &conn, "end of DATA"),
                            None => Result1 {
                                kind: Kind::Deferred,
                                dsn: "4.4.2".into(),
                                text: "lost connection before end of data".into(),
                            },
                        },
                        Some(RecipientResult::Rejected(reply)) => {
                            from_reply(reply, &conn, "RCPT TO")
                        }
                        None => Result1 {
                            kind: Kind::Deferred,
                            dsn: "4.4.2".into(),
                            text: "no reply for this recipient".into(),
                        },
                    };
                    record(qmgr, &job, &stored, i, &r, &relay, &program, setup, xfer);
                }
                qmgr.job_done(job.id);
                let all_ok = tx.data.as_ref().is_some_and(|d| d.code < 400);
                if !all_ok && conn.reset().await.is_err() {
                    requeue_rest(qmgr, dest);
                    return;
                }
            }
            Err(e) => {
                let r = Result1 {
                    kind: if e.is_permanent() {
                        Kind::Bounced
                    } else {
                        Kind::Deferred
                    },
                    dsn: session_dsn(&e),
                    text: e.dsn(),
                };
                for &i in &job.recipients {
                    record(
                        qmgr,
                        &job,
                        &stored,
                        i,
                        &Result1 {
                            kind: clone_kind(&r.kind),
                            dsn: r.dsn.clone(),
                            text: r.text.clone(),
                        },
                        &relay,
                        &program,
                        setup,
                        xfer,
                    );
                }
                qmgr.job_done(job.id);
                if matches!(e, SessionError::Unsupported { .. }) {
                    if conn.reset().await.is_ok() {
                        continue;
                    }
                }
                // The connection is gone; other jobs go to a fresh worker.
                requeue_rest(qmgr, dest);
                return;
            }
        }
    }
    conn.quit().await;
}

/// Hand the remaining jobs to a new worker.
fn requeue_rest(qmgr: &Rc<Qmgr>, dest: &Rc<DestQueue>) {
    if let Some(job) = dest.jobs.borrow_mut().pop_front() {
        qmgr.enqueue(dest.key.clone(), job);
    }
}

fn session_dsn(e: &SessionError) -> String {
    let s = e.dsn();
    // Prefer the enhanced code the server gave.
    if let SessionError::Reply { reply, .. } | SessionError::Greeting(reply) = e
        && let Some(x) = &reply.enhanced
    {
        return x.clone();
    }
    if let SessionError::Unsupported { status, .. } = e {
        return status.to_string();
    }
    let _ = s;
    if e.is_permanent() {
        "5.0.0".into()
    } else {
        "4.4.2".into()
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
            "host {}[{}] said: {} (in reply to {stage} command)",
            conn.host(),
            conn.addr().ip(),
            reply
        ),
    };
    Result1 { kind, dsn, text }
}

/// Append the outcome and log it.
#[allow(clippy::too_many_arguments)]
fn record(
    qmgr: &Rc<Qmgr>,
    job: &Job,
    stored: &StoredMessage,
    i: u32,
    r: &Result1,
    relay: &str,
    program: &str,
    setup: Duration,
    xfer: Duration,
) {
    let now = corepost_spool::queue_id::now_micros();
    let env = &stored.envelope;
    let mut r_kind = clone_kind(&r.kind);
    let mut text = r.text.clone();
    let mut dsn = r.dsn.clone();
    let kind = match r.kind {
        Kind::Sent => OutcomeKind::Delivered,
        Kind::Bounced => OutcomeKind::Bounced,
        Kind::Deferred if qmgr.expired(env.arrival, env.sender.is_empty(), now) => {
            r_kind = Kind::Bounced;
            text = format!("message expired after being queued too long; last error: {text}");
            dsn = format!("5{}", dsn.get(1..).unwrap_or(".4.7"));
            OutcomeKind::Expired
        }
        Kind::Deferred => OutcomeKind::Deferred {
            next_attempt: qmgr.backoff(env.arrival, now),
        },
    };
    let address = env
        .recipients
        .get(i as usize)
        .map_or("", |r| r.address.as_str());
    let outcome = Outcome {
        queue_id: job.id,
        recipient: i,
        kind,
        at: now,
        dsn: dsn.clone(),
        reply: text.clone(),
        relay: relay.to_string(),
    };
    let applied = qmgr.ctx.spool.borrow_mut().record_outcome(&outcome);
    let total = Duration::from_micros(now.saturating_sub(env.arrival));
    let before = total.saturating_sub(job.picked.elapsed());
    let status = match r_kind {
        Kind::Sent => "sent",
        Kind::Deferred => "deferred",
        Kind::Bounced => {
            if matches!(outcome.kind, OutcomeKind::Expired) {
                "expired"
            } else {
                "bounced"
            }
        }
    };
    qmgr.ctx.log.line(program, &format!(
        "{}: to=<{address}>, relay={relay}, delay={:.2}, delays={:.2}/{:.2}/{:.2}/{:.2}, dsn={dsn}, status={status} ({text})",
        job.id,
        total.as_secs_f64(),
        before.as_secs_f64(),
        job.picked.elapsed().saturating_sub(setup + xfer).as_secs_f64(),
        setup.as_secs_f64(),
        xfer.as_secs_f64(),
    ));
    match applied {
        Ok((Applied::Finished, _)) => log_removed(qmgr, job.id),
        Ok(_) => {}
        Err(e) => qmgr.ctx.log.line(
            program,
            &format!("warning: {}: cannot record the outcome: {e}", job.id),
        ),
    }
}

fn log_removed(qmgr: &Rc<Qmgr>, id: QueueId) {
    qmgr.ctx
        .log
        .line("corepost/qmgr", &format!("{id}: removed"));
}
