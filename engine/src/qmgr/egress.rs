//! The queue manager's side of egress pools ([`crate::egress`]): the source of a worker's
//! connection, chosen before it connects, and what to do when none may be used.

use super::deliver::{Kind, Result1};
use super::{DestQueue, Qmgr, QmgrSettings};
use crate::egress::{Choice, LOOKUP_FAILED, Lease, Paced};
use std::rc::Rc;
use std::time::Duration;

/// How often a worker whose pool members are all at their connection limits looks again
/// (when it is its destination's only worker; otherwise it leaves the jobs to the others).
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// Why a worker gets no source.
pub(super) enum NoSource {
    /// Other connections of the destination will take its jobs.
    LeaveToOthers,
    /// Defer the destination's queued jobs with this result.
    Defer(Result1),
}

/// The source of a new connection of `dest`'s worker: `None` when its mail has no pool.
pub(super) async fn source(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    settings: &QmgrSettings,
) -> Result<Option<Lease>, NoSource> {
    let name = dest.key.pool.as_str();
    if name.is_empty() {
        return Ok(None);
    }
    let defer = |dsn: &str, text: String| {
        NoSource::Defer(Result1 {
            kind: Kind::Deferred,
            dsn: dsn.into(),
            text,
        })
    };
    if name == LOOKUP_FAILED {
        return Err(defer(
            "4.3.0",
            "corepost_sender_egress_pool_maps lookup failure".into(),
        ));
    }
    let pool = settings
        .egress
        .egress
        .as_ref()
        .and_then(|e| e.pools.get(name));
    let Some(pool) = pool else {
        return Err(defer(
            "4.3.5",
            format!("egress pool \"{name}\" is not defined in corepost_egress_pools"),
        ));
    };
    let id = format!(
        "{}:{}",
        dest.key.transport,
        dest.key.nexthop.to_ascii_lowercase()
    );
    let limit = destination_limit(dest, settings);
    loop {
        match crate::egress::choose(pool, &id, limit) {
            Choice::Chosen(lease) => {
                let interval = node_interval(dest, settings, |p| p.connection_interval);
                let wait = lease.destination_slot(Paced::Connection, interval);
                if !wait.is_zero() {
                    glommio::timer::sleep(wait).await;
                }
                return Ok(Some(lease));
            }
            Choice::Unavailable { dsn, text } => return Err(defer(dsn, text)),
            Choice::Busy if dest.workers.get() > 1 => return Err(NoSource::LeaveToOthers),
            Choice::Busy => {
                let stop = qmgr.ctx.shutdown.wait();
                futures_lite::future::or(stop, glommio::timer::sleep(BUSY_RETRY)).await;
                if qmgr.ctx.shutdown.is_triggered() {
                    return Err(NoSource::LeaveToOthers);
                }
            }
        }
    }
}

/// The destination's connection limit, as the queue manager's (`enqueue`): the policy's
/// `concurrency=`, else the transport's (one with a rate delay). It caps the destination's
/// connections across all its pools.
fn destination_limit(dest: &DestQueue, settings: &QmgrSettings) -> usize {
    let transport = settings.transports.get(&dest.key.transport);
    let limit = transport.map_or(1, |t| {
        if t.rate_delay.is_zero() {
            t.concurrency
        } else {
            1
        }
    });
    dest.policy
        .as_ref()
        .and_then(|p| p.concurrency)
        .unwrap_or(limit)
        .max(1)
}

/// Before each message over a pool's connection: the source's own `rate=` and the
/// destination's pacing across its pools; `Err` when the source may send no more now
/// (warm-up limit, suspended) and the connection must end.
pub(super) fn admit(
    lease: &Lease,
    dest: &DestQueue,
    settings: &QmgrSettings,
) -> Result<Duration, String> {
    let own = lease.admit()?;
    let rate_delay = settings
        .transports
        .get(&dest.key.transport)
        .map_or(Duration::ZERO, |t| t.rate_delay);
    let interval = node_interval(dest, settings, |p| p.message_interval).max(rate_delay);
    Ok(own.max(lease.destination_slot(Paced::Message, interval)))
}

/// The policy interval this node paces itself: with shared throttles Redis already paces the
/// destination as a whole (its keys name no pool), so nothing more here.
fn node_interval(
    dest: &DestQueue,
    settings: &QmgrSettings,
    pick: impl Fn(&super::policy::Policy) -> Option<Duration>,
) -> Duration {
    if settings.cluster.is_some() {
        return Duration::ZERO;
    }
    dest.policy
        .as_ref()
        .and_then(pick)
        .unwrap_or(Duration::ZERO)
}
