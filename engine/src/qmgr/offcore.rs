//! Workers for agents that block (local, virtual, pipe): each job is
//! copied into a [`Request`], run on the transport's bounded thread pool,
//! and its [`Report`] comes back to this core, where it is recorded the
//! same way SMTP results are (`deliver::finish`: log lines, outcomes,
//! bounce notices).
//!
//! Messages an agent asks to queue (alias and `.forward` expansion to
//! other addresses, `luser_relay`, `mailbox_transport`) are appended to
//! this core's spool and made durable *before* the recipient they deliver
//! for is recorded as sent, so a crash cannot lose them.

use super::deliver::{Expanded, Kind, Result1, finish, read_job};
use super::{DestQueue, Job, Qmgr, TransportSettings};
use crate::delivery::agent::{Forward, Report, Request, RequestRecipient, StatusKind};
use crate::delivery::pool::BlockingPool;
use corepost_spool::StoredMessage;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deliver the destination's jobs one at a time through `agent` on the
/// transport's pool.
pub async fn worker(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    transport: &TransportSettings,
    relay: &str,
    agent: impl Fn(&Request) -> Report + Send + Sync + 'static,
) {
    let agent = Arc::new(agent);
    let pool = BlockingPool::for_transport(&dest.key.transport, transport.process_limit);
    let program = format!("corepost/{}", dest.key.transport);
    loop {
        let job = dest.jobs.borrow_mut().pop_front();
        let Some(job) = job else {
            return;
        };
        let Some(stored) = read_job(qmgr, &job, &program) else {
            continue;
        };
        let request = request(&job, &stored, &dest.key.transport, &dest.key.nexthop);
        let started = Instant::now();
        let agent = Arc::clone(&agent);
        // Run as root by the delivery helper when the daemon gave up root.
        let report = pool
            .run(move || match crate::delivery::helper::current() {
                Some(helper) => helper.deliver(&request),
                None => agent(&request),
            })
            .await;
        let xfer = started.elapsed();
        let mut expanded = Expanded::new();
        let results = match report {
            Some(report) => {
                let (results, lines) = record_report(qmgr, &job, report, &program).await;
                expanded = lines;
                results
            }
            None => job
                .recipients
                .iter()
                .map(|&i| {
                    (
                        i,
                        Result1 {
                            kind: Kind::Deferred,
                            dsn: "4.3.0".into(),
                            text: "delivery agent crashed".into(),
                        },
                    )
                })
                .collect(),
        };
        let done = super::deliver::Done {
            relay,
            conn_use: 0,
            program: &program,
            setup: Duration::ZERO,
            xfer,
            success: &|r| {
                Some(if r.text.starts_with("forwarded") {
                    "expanded"
                } else {
                    "delivered"
                })
            },
            expanded: &expanded,
            dest,
            egress: None,
        };
        finish(qmgr, &job, &stored, results, &done);
    }
}

fn request(job: &Job, stored: &StoredMessage, transport: &str, nexthop: &str) -> Request {
    let env = &stored.envelope;
    Request {
        queue_id: job.id.to_string(),
        transport: transport.to_string(),
        nexthop: nexthop.to_string(),
        sender: env.sender.clone(),
        recipients: job
            .recipients
            .iter()
            .filter_map(|&i| {
                let r = env.recipients.get(i as usize)?;
                Some(RequestRecipient {
                    index: i,
                    address: r.address.clone(),
                    orcpt: r.orcpt.clone(),
                })
            })
            .collect(),
        content: stored.content().to_vec(),
        client_name: env.client.name.clone(),
        client_addr: env.client.addr.clone(),
        client_helo: env.client.helo.clone(),
        client_protocol: env.client.protocol.clone(),
        sasl_username: env.client.sasl_username.clone().unwrap_or_default(),
    }
}

/// Queue the report's forwards, then turn its statuses into results.
async fn record_report(
    qmgr: &Rc<Qmgr>,
    job: &Job,
    report: Report,
    program: &str,
) -> (Vec<(u32, Result1)>, Expanded) {
    let mut forwarded: HashMap<u32, Vec<String>> = HashMap::new();
    let mut failed: HashMap<u32, String> = HashMap::new();
    let mut last = None;
    // Which new message carries each forwarded address (for the lines).
    let mut carried_by: HashMap<(u32, String), String> = HashMap::new();
    for f in report.forwards {
        match queue_forward(qmgr, &f) {
            Ok((id, lsn)) => {
                for a in &f.recipients {
                    carried_by.insert((f.for_recipient, a.clone()), id.to_string());
                }
                forwarded
                    .entry(f.for_recipient)
                    .or_default()
                    .push(id.to_string());
                last = Some(lsn);
            }
            Err(e) => {
                failed.insert(f.for_recipient, e);
            }
        }
    }
    if let Some(lsn) = last {
        let durable = qmgr.ctx.spool.borrow().durable(lsn);
        if let Err(e) = durable.await {
            qmgr.ctx.log.line(
                program,
                &format!("warning: {}: forwarded message not durable: {e}", job.id),
            );
            for i in forwarded.keys() {
                failed.insert(*i, "forwarded message not durable".into());
            }
        }
    }
    let forwarded_as = |i: u32, kind: StatusKind, text: String| match forwarded.get(&i) {
        Some(ids) if kind == StatusKind::Sent => {
            text.replace("forwarded", &format!("forwarded as {}", ids.join(", ")))
        }
        _ => text,
    };
    let mut expanded = Expanded::new();
    if failed.is_empty() {
        for (i, to, s) in report.expanded {
            let text = match carried_by.get(&(i, to.clone())) {
                Some(id) if s.kind == StatusKind::Sent => {
                    s.text.replace("forwarded", &format!("forwarded as {id}"))
                }
                _ => forwarded_as(i, s.kind, s.text),
            };
            expanded.entry(i).or_default().push((
                to,
                Result1 {
                    kind: kind_of(s.kind),
                    dsn: s.dsn,
                    text,
                },
            ));
        }
    }
    let results = report
        .results
        .into_iter()
        .map(|(i, s)| {
            let r = if let Some(e) = failed.get(&i) {
                Result1 {
                    kind: Kind::Deferred,
                    dsn: "4.3.0".into(),
                    text: format!("cannot queue the forwarded message: {e}"),
                }
            } else {
                Result1 {
                    kind: kind_of(s.kind),
                    text: forwarded_as(i, s.kind, s.text),
                    dsn: s.dsn,
                }
            };
            (i, r)
        })
        .collect();
    (results, expanded)
}

fn kind_of(kind: StatusKind) -> Kind {
    match kind {
        StatusKind::Sent => Kind::Sent,
        StatusKind::Deferred => Kind::Deferred,
        StatusKind::Bounced => Kind::Bounced,
    }
}

/// Append a forwarded message to this core's spool.
fn queue_forward(
    qmgr: &Rc<Qmgr>,
    f: &Forward,
) -> Result<(corepost_spool::QueueId, corepost_spool::Lsn), String> {
    let settings = Arc::clone(&qmgr.settings.borrow());
    let mut recipients = Vec::with_capacity(f.recipients.len());
    for address in &f.recipients {
        let (transport, nexthop) = match &f.route {
            Some((t, n)) => {
                let n = if n.is_empty() {
                    crate::routing::split_address(address).1.to_string()
                } else {
                    n.clone()
                };
                (t.clone(), n)
            }
            None => {
                let (_, domain) = crate::routing::split_address(address);
                let route = settings
                    .router
                    .classify(domain)
                    .and_then(|class| settings.router.route(&f.sender, address, class))
                    .map_err(|e| format!("cannot route <{address}>: {e}"))?;
                (route.transport, route.nexthop)
            }
        };
        recipients.push(corepost_spool::Recipient {
            address: address.clone(),
            orcpt: None,
            notify: 0,
            transport,
            nexthop,
            state: corepost_spool::RecipientState::Pending,
            original: None,
        });
    }
    let id = qmgr.ctx.new_queue_id();
    let envelope = corepost_spool::Envelope {
        queue_id: id,
        arrival: corepost_spool::queue_id::now_micros(),
        sender: f.sender.clone(),
        params: corepost_spool::MailParams::default(),
        client: corepost_spool::ClientInfo::local(),
        recipients,
        next_attempt: 0,
        held: false,
    };
    let appended = qmgr
        .ctx
        .spool
        .borrow_mut()
        .append_message(&envelope, &f.content)
        .map_err(|e| e.to_string())?;
    if let Some(mid) = crate::smtpd::session::message_id(&f.content) {
        qmgr.ctx
            .log
            .line("corepost/cleanup", &format!("{id}: message-id={mid}"));
    }
    qmgr.ctx.new_mail.notify();
    Ok((id, appended.lsn))
}
