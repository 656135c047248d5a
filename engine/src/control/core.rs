//! The control socket's requests as each core carries them out: the core
//! owns its spool and queue manager, so listing, holding, releasing,
//! deleting and flushing happen on the core, between its other tasks.

use super::format::QueueItem;
use crate::qmgr::Qmgr;
use crate::runtime::CoreContext;
use corepost_spool::{AdminAction, Applied, QueueId};
use std::rc::Rc;

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

/// A request with the channel for its answer.
pub struct CoreRequest {
    pub command: CoreCommand,
    pub reply: flume::Sender<CoreAnswer>,
}

/// Serve control requests on this core until shutdown.
pub async fn serve(ctx: Rc<CoreContext>, qmgr: Rc<Qmgr>, requests: flume::Receiver<CoreRequest>) {
    loop {
        let next = futures_lite::future::or(async { requests.recv_async().await.ok() }, async {
            ctx.shutdown.wait().await;
            None
        })
        .await;
        let Some(request) = next else {
            return;
        };
        let answer = handle(&ctx, &qmgr, request.command).await;
        let _ = request.reply.send(answer);
    }
}

async fn handle(ctx: &Rc<CoreContext>, qmgr: &Rc<Qmgr>, command: CoreCommand) -> CoreAnswer {
    match command {
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

async fn admin(
    ctx: &Rc<CoreContext>,
    qmgr: &Rc<Qmgr>,
    action: AdminAction,
    ids: Option<Vec<QueueId>>,
    deferred_only: bool,
) -> Result<Vec<QueueId>, String> {
    let now = corepost_spool::queue_id::now_micros();
    let targets: Vec<QueueId> = {
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
    };
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
    };
    for id in &done {
        ctx.log.line("corepost/postsuper", &format!("{id}: {what}"));
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
    qmgr.revive(domain.as_deref());
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
