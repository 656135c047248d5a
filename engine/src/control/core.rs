//! The control socket's requests as each core carries them out: the core
//! owns its spool and queue manager, so listing, holding, releasing,
//! deleting and flushing happen on the core, between its other tasks.

use super::format::QueueItem;
use crate::context::CoreContext;
use crate::qmgr::Qmgr;
use crate::routing::Router;
use corepost_spool::{AdminAction, Applied, QueueId};
use std::rc::Rc;
use std::sync::Arc;

/// What the control server asks a core.
#[derive(Debug, Clone)]
pub enum CoreCommand {
    List,
    Show(QueueId),
    /// `ids: None` means every message; `deferred_only` restricts to
    /// messages waiting for a retry.
    Admin {
        action: AdminAction,
        ids: Option<Vec<QueueId>>,
        deferred_only: bool,
    },
    /// Retry deferred mail now (only that for a destination domain, if
    /// given).
    Flush(Option<String>),
    Status,
}

/// A core's numbers for `corepost status`.
#[derive(Debug, Clone, Default)]
pub struct CoreStatus {
    pub queued: usize,
    pub active: usize,
    pub held: usize,
    pub deferred: usize,
    pub spool_bytes: u64,
    pub segments: usize,
    pub sessions: usize,
    /// Spool damage found at start that may have lost mail.
    pub damage: Vec<String>,
}

/// A core's answer.
#[derive(Debug, Clone)]
pub enum CoreAnswer {
    List(Vec<QueueItem>),
    Show(Option<String>),
    /// Messages the action applied to.
    Done(Vec<QueueId>),
    Status(CoreStatus),
    Error(String),
}

/// The routing requeued mail is resolved with: main.cf's, replaced on
/// reload.
pub type SharedRouter = Arc<std::sync::Mutex<Arc<Router>>>;

/// A core's end of the control channel, and the routing it uses to
/// re-resolve requeued mail.
pub struct Endpoint {
    pub requests: flume::Receiver<CoreRequest>,
    pub router: SharedRouter,
    /// Every core's control channel (this one's included).
    pub peers: Vec<flume::Sender<CoreRequest>>,
}

/// A request with the channel for its answer.
pub struct CoreRequest {
    pub command: CoreCommand,
    pub reply: flume::Sender<CoreAnswer>,
}

impl crate::context::CorePeers for Vec<flume::Sender<CoreRequest>> {
    /// Like Postfix's flush service, the answer does not wait for the
    /// deliveries.
    fn flush(&self, domain: Option<&str>) -> bool {
        let mut sent = false;
        for core in self {
            // Nobody waits for the answer: a bounded channel of one keeps
            // the core's reply from blocking.
            let (reply, _) = flume::bounded(1);
            sent |= core
                .send(CoreRequest {
                    command: CoreCommand::Flush(domain.map(str::to_string)),
                    reply,
                })
                .is_ok();
        }
        sent
    }
}

/// Serve control requests on this core until shutdown.
pub async fn serve(ctx: Rc<CoreContext>, qmgr: Rc<Qmgr>, endpoint: Endpoint) {
    let Endpoint {
        requests, router, ..
    } = endpoint;
    loop {
        let next = futures_lite::future::or(async { requests.recv_async().await.ok() }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let Some(request) = next else {
            return;
        };
        let current = Arc::clone(&router.lock().unwrap_or_else(|p| p.into_inner()));
        let answer = handle(&ctx, &qmgr, &current, request.command).await;
        let _ = request.reply.send(answer);
    }
}

async fn handle(
    ctx: &Rc<CoreContext>,
    qmgr: &Rc<Qmgr>,
    router: &Router,
    command: CoreCommand,
) -> CoreAnswer {
    match command {
        CoreCommand::Admin {
            action: AdminAction::Requeue,
            ids,
            deferred_only,
        } => match requeue(ctx, qmgr, router, ids, deferred_only).await {
            Ok(done) => CoreAnswer::Done(done),
            Err(e) => CoreAnswer::Error(e),
        },
        CoreCommand::List => CoreAnswer::List(list(ctx, qmgr)),
        CoreCommand::Show(id) => CoreAnswer::Show(show(ctx, id)),
        CoreCommand::Admin {
            action,
            ids,
            deferred_only,
        } => match admin(ctx, qmgr, action, ids, deferred_only).await {
            Ok(done) => CoreAnswer::Done(done),
            Err(e) => CoreAnswer::Error(e),
        },
        CoreCommand::Flush(domain) => CoreAnswer::Done(flush(ctx, qmgr, domain.as_deref())),
        CoreCommand::Status => CoreAnswer::Status(status(ctx, qmgr)),
    }
}

fn list(ctx: &CoreContext, qmgr: &Qmgr) -> Vec<QueueItem> {
    let spool = ctx.spool.borrow();
    let reasons = corepost_spool::snapshot::deferral_reasons(
        corepost_spool::snapshot::live_segments(spool.segments()),
    );
    let mut items = Vec::new();
    for (id, entry) in spool.index().iter() {
        let Ok(Some(stored)) = spool.read(id) else {
            continue;
        };
        items.push(super::item(
            *id,
            &stored.envelope,
            stored.content().len(),
            entry,
            qmgr.is_active(id),
            &reasons,
        ));
    }
    items
}

fn show(ctx: &CoreContext, id: QueueId) -> Option<String> {
    let spool = ctx.spool.borrow();
    let entry = spool.index().get(&id)?;
    let stored = spool.read(&id).ok()??;
    let pending: Vec<u32> = entry.pending.iter().collect();
    Some(super::format::show(
        &stored.envelope,
        &pending,
        entry.held,
        stored.content(),
    ))
}

/// Whether a message is waiting for a retry (deferred, not held, not
/// being delivered).
fn is_deferred(entry: &corepost_spool::IndexEntry, active: bool, now: u64) -> bool {
    !entry.held && !active && entry.next_attempt > now
}

/// The messages on this core an action names.
fn targets(
    ctx: &CoreContext,
    qmgr: &Qmgr,
    ids: Option<Vec<QueueId>>,
    deferred_only: bool,
    now: u64,
) -> Vec<QueueId> {
    let spool = ctx.spool.borrow();
    let index = spool.index();
    let candidates: Vec<QueueId> = match ids {
        Some(ids) => ids
            .into_iter()
            .filter(|id| index.get(id).is_some())
            .collect(),
        None => index.iter().map(|(id, _)| *id).collect(),
    };
    candidates
        .into_iter()
        .filter(|id| {
            !deferred_only
                || index
                    .get(id)
                    .is_some_and(|e| is_deferred(e, qmgr.is_active(id), now))
        })
        .collect()
}

/// Requeue (Postfix's `postsuper -r`): the pending recipients of each
/// message are routed again with the current configuration and the
/// message is queued anew under a new id, due now; the old copy is
/// deleted in the same group commit (a crash in between may deliver
/// twice, never lose). Messages being delivered right now are left alone:
/// their outcome would come back for a message that no longer exists
/// while the new copy is delivered again.
async fn requeue(
    ctx: &Rc<CoreContext>,
    qmgr: &Rc<Qmgr>,
    router: &Router,
    ids: Option<Vec<QueueId>>,
    deferred_only: bool,
) -> Result<Vec<QueueId>, String> {
    let now = corepost_spool::queue_id::now_micros();
    let mut done = Vec::new();
    let mut last = None;
    let mut renamed = Vec::new();
    for id in targets(ctx, qmgr, ids, deferred_only, now) {
        if qmgr.is_active(&id) {
            continue;
        }
        let (mut envelope, content, pending) = {
            let spool = ctx.spool.borrow();
            let Some(entry) = spool.index().get(&id) else {
                continue;
            };
            let Ok(Some(stored)) = spool.read(&id) else {
                continue;
            };
            let pending: Vec<u32> = entry.pending.iter().collect();
            (stored.envelope.clone(), stored.content().to_vec(), pending)
        };
        let mut recipients = Vec::new();
        for i in pending {
            let Some(mut r) = envelope.recipients.get(i as usize).cloned() else {
                continue;
            };
            let domain = r
                .address
                .rsplit_once('@')
                .map_or("", |(_, d)| d)
                .to_ascii_lowercase();
            let route = router
                .classify(&domain)
                .and_then(|class| router.route(&envelope.sender, &r.address, class))
                .map_err(|e| format!("{id}: <{}>: lookup failure: {e}", r.address))?;
            r.transport = route.transport;
            r.nexthop = route.nexthop;
            r.state = corepost_spool::RecipientState::Pending;
            recipients.push(r);
        }
        if recipients.is_empty() {
            continue;
        }
        let new_id = ctx.new_queue_id();
        envelope.queue_id = new_id;
        envelope.recipients = recipients;
        envelope.next_attempt = 0;
        envelope.held = false;
        let mut spool = ctx.spool.borrow_mut();
        spool
            .append_message(&envelope, &content)
            .map_err(|e| format!("{id}: {e}"))?;
        let (_, lsn) = spool
            .admin(id, AdminAction::Delete)
            .map_err(|e| format!("{id}: {e}"))?;
        last = Some(lsn);
        done.push(id);
        renamed.push((id, new_id));
    }
    if let Some(lsn) = last {
        let durable = ctx.spool.borrow().durable(lsn);
        durable.await?;
        for (old, new) in renamed {
            ctx.log
                .line("corepost/postsuper", &format!("{old}: requeued as {new}"));
        }
        ctx.new_mail.notify();
    }
    Ok(done)
}

async fn admin(
    ctx: &Rc<CoreContext>,
    qmgr: &Rc<Qmgr>,
    action: AdminAction,
    ids: Option<Vec<QueueId>>,
    deferred_only: bool,
) -> Result<Vec<QueueId>, String> {
    let now = corepost_spool::queue_id::now_micros();
    let targets = targets(ctx, qmgr, ids, deferred_only, now);
    let mut done = Vec::new();
    let mut last = None;
    for id in targets {
        let result = ctx.spool.borrow_mut().admin(id, action);
        match result {
            Ok((Applied::Unknown, _)) => {}
            Ok((_, lsn)) => {
                last = Some(lsn);
                done.push(id);
            }
            Err(e) => return Err(format!("{id}: {e}")),
        }
    }
    if let Some(lsn) = last {
        let durable = ctx.spool.borrow().durable(lsn);
        durable.await?;
    }
    let what = match action {
        AdminAction::Hold => "placed on hold",
        AdminAction::Release => "released from hold",
        AdminAction::Delete => "removed",
        AdminAction::Requeue => "requeued",
        AdminAction::DelayWarned => "marked as warned",
    };
    for id in &done {
        ctx.log.line("corepost/postsuper", &format!("{id}: {what}"));
        crate::events::admin("corepost/postsuper", Some(*id), what);
        if action == AdminAction::Release && !qmgr.is_active(id) {
            // Released mail is retried now rather than at its old time.
            ctx.spool.borrow_mut().lease(id, now);
        }
    }
    if matches!(action, AdminAction::Release | AdminAction::Requeue) && !done.is_empty() {
        qmgr.revive(None);
        ctx.new_mail.notify();
    }
    Ok(done)
}

/// Make deferred mail due now (in memory: a restart forgets a flush, which
/// only means the mail waits for its scheduled retry).
fn flush(ctx: &CoreContext, qmgr: &Qmgr, domain: Option<&str>) -> Vec<QueueId> {
    let now = corepost_spool::queue_id::now_micros();
    let domain = domain.map(|d| d.trim_start_matches('@').to_ascii_lowercase());
    let targets: Vec<QueueId> = {
        let spool = ctx.spool.borrow();
        spool
            .index()
            .iter()
            .filter(|(id, e)| !e.held && !qmgr.is_active(id) && e.next_attempt > now)
            .filter(|(id, e)| match &domain {
                None => true,
                Some(d) => spool.read(id).ok().flatten().is_some_and(|m| {
                    e.pending.iter().any(|i| {
                        m.envelope.recipients.get(i as usize).is_some_and(|r| {
                            r.address
                                .rsplit_once('@')
                                .is_some_and(|(_, rd)| rd.eq_ignore_ascii_case(d))
                                || r.nexthop.eq_ignore_ascii_case(d)
                        })
                    })
                }),
            })
            .map(|(id, _)| *id)
            .collect()
    };
    for id in &targets {
        ctx.spool.borrow_mut().lease(id, now);
    }
    // The flushed mail may go through any destination (a relayhost, say):
    // forget every dead mark so it is tried at once.
    qmgr.revive(None);
    ctx.new_mail.notify();
    targets
}

fn status(ctx: &CoreContext, qmgr: &Qmgr) -> CoreStatus {
    let now = corepost_spool::queue_id::now_micros();
    let spool = ctx.spool.borrow();
    let mut s = CoreStatus {
        queued: spool.index().len(),
        sessions: ctx.sessions.get(),
        segments: spool.segment_count(),
        spool_bytes: spool.segments().map(|m| m.size() as u64).sum(),
        damage: spool.damage().to_vec(),
        ..CoreStatus::default()
    };
    for (id, e) in spool.index().iter() {
        let active = qmgr.is_active(id);
        if e.held {
            s.held += 1;
        } else if active {
            s.active += 1;
        } else if is_deferred(e, active, now) {
            s.deferred += 1;
        }
    }
    s
}
