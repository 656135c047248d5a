//! The delivery side of the shared throttles ([`crate::cluster`]): before a
//! message or a new connection, a slot from Redis; before a connection, a
//! lease. Without `corepost_shared_throttle_redis` these are the node's own
//! pacing and connection count, exactly as before.
//!
//! Every Redis failure takes the node's share instead of waiting: pacing at
//! `interval × corepost_cluster_node_count`, at most
//! `concurrency / corepost_cluster_node_count` (at least one) connections.

use super::{DestQueue, Qmgr};
use crate::cluster::{Answer, Ask, Cluster};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection waits before asking again when the cluster's
/// connections to the destination are all taken (with up to as much again
/// of jitter, so waiting nodes do not ask in step).
const FULL_RETRY: Duration = Duration::from_millis(100);

pub(crate) fn cluster_of(qmgr: &Qmgr) -> Option<Arc<Cluster>> {
    qmgr.settings.borrow().cluster.clone()
}

/// Redis failed this caller: log it if nobody has yet.
pub(crate) fn failed(qmgr: &Qmgr, cluster: &Cluster, why: &str) {
    let nodes = cluster.settings.node_count;
    if let Some(line) = cluster.health.note_failure(cluster.shown_url(), why, nodes) {
        qmgr.ctx.log.line("corepost/qmgr", &line);
    }
}

/// Redis answered: log the recovery if a failure was logged.
pub(crate) fn answered(qmgr: &Qmgr, cluster: &Cluster) {
    if let Some(line) = cluster.health.note_success(cluster.shown_url()) {
        qmgr.ctx.log.line("corepost/qmgr", &line);
    }
}

/// Wait for the destination's next shared slot of `kind`; returns the
/// interval still to pace locally (zero when Redis reserved the slot, the
/// node's share of the rate when it did not).
async fn shared_slot(qmgr: &Qmgr, dest: &DestQueue, kind: &str, interval: Duration) -> Duration {
    let Some(cluster) = cluster_of(qmgr) else {
        return interval;
    };
    let key = cluster.key(kind, &dest.key.transport, &dest.key.nexthop);
    match cluster.ask(Ask::Pace { key, interval }).await {
        Ok(Answer::Wait(wait)) => {
            answered(qmgr, &cluster);
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
            Duration::ZERO
        }
        Ok(_) => {
            failed(qmgr, &cluster, "unexpected answer");
            interval * cluster.settings.node_count
        }
        Err(why) => {
            failed(qmgr, &cluster, &why);
            interval * cluster.settings.node_count
        }
    }
}

/// Message pacing: the policy's `rate=` (shared across nodes when
/// configured) and the transport's rate delay (this node's), whichever is
/// slower.
pub(super) async fn pace_delivery(qmgr: &Qmgr, dest: &DestQueue, rate_delay: Duration) {
    let local = match dest.policy.as_ref().and_then(|p| p.message_interval) {
        Some(i) => shared_slot(qmgr, dest, "rate", i).await.max(rate_delay),
        None => rate_delay,
    };
    super::deliver::pace(&dest.next_delivery, local).await;
}

/// Connection pacing: the policy's `connection_rate=`.
pub(super) async fn pace_connection(qmgr: &Qmgr, dest: &DestQueue) {
    if let Some(i) = dest.policy.as_ref().and_then(|p| p.connection_interval) {
        let local = shared_slot(qmgr, dest, "connect", i).await;
        super::deliver::pace(&dest.next_connect, local).await;
    }
}

/// This node's share of a connection limit while Redis is unreachable.
fn share(limit: usize, cluster: &Cluster) -> usize {
    (limit / cluster.settings.node_count as usize).max(1)
}

/// One open connection's place in the destination's `concurrency=` limit
/// across nodes: released (and its renewals stopped) when dropped.
pub(super) struct Lease {
    dest: Rc<DestQueue>,
    /// No longer counted: the connection is closing to bring the node back
    /// to its share.
    shed: bool,
    /// The Redis lease (None when the node took its fallback share).
    shared: Option<(Arc<Cluster>, String, String)>,
    _renew: Option<glommio::Task<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.shed {
            self.dest
                .connections
                .set(self.dest.connections.get().saturating_sub(1));
        }
        if let Some((cluster, key, member)) = self.shared.take() {
            cluster.tell(Ask::Release { key, member });
        }
    }
}

impl Lease {
    fn new(dest: &Rc<DestQueue>, shared: Option<(Arc<Cluster>, String, String)>) -> Lease {
        dest.connections.set(dest.connections.get() + 1);
        let renew = shared.as_ref().map(|(cluster, key, member)| {
            let (cluster, key, member) = (Arc::clone(cluster), key.clone(), member.clone());
            glommio::spawn_local(async move {
                let lifetime = cluster.settings.lease_time;
                loop {
                    glommio::timer::sleep(lifetime / 3).await;
                    cluster.tell(Ask::Renew {
                        key: key.clone(),
                        member: member.clone(),
                        lifetime,
                    });
                }
            })
        });
        Lease {
            dest: Rc::clone(dest),
            shed: false,
            shared,
            _renew: renew,
        }
    }
}

/// Wait for a place in the destination's connection limit across nodes.
/// `Ok(None)`: no shared limit applies. `Err(())`: the destination's jobs
/// were taken by other connections meanwhile, or the core is stopping.
pub(super) async fn connection_lease(
    qmgr: &Qmgr,
    dest: &Rc<DestQueue>,
) -> Result<Option<Lease>, ()> {
    let Some(cluster) = cluster_of(qmgr) else {
        return Ok(None);
    };
    let Some(limit) = dest.policy.as_ref().and_then(|p| p.concurrency) else {
        return Ok(None);
    };
    let key = cluster.key("conns", &dest.key.transport, &dest.key.nexthop);
    let lifetime = cluster.settings.lease_time;
    loop {
        let member = cluster.member();
        let ask = Ask::Lease {
            key: key.clone(),
            member: member.clone(),
            limit,
            lifetime,
        };
        match cluster.ask(ask).await {
            Ok(Answer::Granted(true)) => {
                answered(qmgr, &cluster);
                let shared = Some((Arc::clone(&cluster), key, member));
                return Ok(Some(Lease::new(dest, shared)));
            }
            Ok(Answer::Granted(false)) => answered(qmgr, &cluster),
            other => {
                // A late grant must not hold a place until it expires.
                cluster.tell(Ask::Release {
                    key: key.clone(),
                    member,
                });
                let why = other.err().unwrap_or_else(|| "unexpected answer".into());
                failed(qmgr, &cluster, &why);
                if dest.connections.get() < share(limit, &cluster) {
                    return Ok(Some(Lease::new(dest, None)));
                }
            }
        }
        let jitter = {
            use rand::RngExt;
            rand::rng().random_range(0..=FULL_RETRY.as_millis() as u64)
        };
        let wait = FULL_RETRY + Duration::from_millis(jitter);
        futures_lite::future::or(glommio::timer::sleep(wait), qmgr.ctx.shutdown.wait()).await;
        if dest.jobs.borrow().is_empty() || qmgr.ctx.shutdown.is_triggered() {
            return Err(());
        }
    }
}

/// Whether this connection should close: Redis is unreachable and the node
/// holds more of the destination's connections than its share (taken while
/// Redis still answered). Such a connection stops counting at once, so only
/// the excess closes. Until it has, the nodes together can exceed the limit
/// by the connections held above the share, for at most one transaction.
pub(super) fn over_share(qmgr: &Qmgr, lease: &mut Option<Lease>) -> bool {
    let Some(l) = lease.as_mut() else {
        return false;
    };
    let Some(cluster) = cluster_of(qmgr) else {
        return false;
    };
    let Some(limit) = l.dest.policy.as_ref().and_then(|p| p.concurrency) else {
        return false;
    };
    if l.shed || !cluster.health.degraded() || l.dest.connections.get() <= share(limit, &cluster) {
        return false;
    }
    l.shed = true;
    l.dest.connections.set(l.dest.connections.get() - 1);
    true
}
