//! A group's limits across nodes, through the Redis of `corepost_shared_throttle_redis`
//! (the scripts of [`crate::cluster`], keys `<prefix>:<kind>:shaping:<group>`). Without it,
//! or while Redis does not answer, the node's own counters ([`super::state`]) are the limit.

use crate::cluster::{Answer, Ask, Cluster};
use crate::qmgr::Qmgr;
use crate::qmgr::shared::{answered, cluster_of, failed};
use std::sync::Arc;
use std::time::Duration;

/// Wait for the group's next shared slot of `kind` (`rate`, `connect`); false when there is
/// no shared limit (or Redis failed), so the caller paces locally.
pub(super) async fn paced(qmgr: &Qmgr, group: &str, kind: &str, interval: Duration) -> bool {
    let Some(cluster) = cluster_of(qmgr) else {
        return false;
    };
    let key = cluster.key(kind, "shaping", group);
    match cluster.ask(Ask::Pace { key, interval }).await {
        Ok(Answer::Wait(wait)) => {
            answered(qmgr, &cluster);
            if !wait.is_zero() {
                glommio::timer::sleep(wait).await;
            }
            true
        }
        Ok(_) => {
            failed(qmgr, &cluster, "unexpected answer");
            false
        }
        Err(why) => {
            failed(qmgr, &cluster, &why);
            false
        }
    }
}

/// A connection's lease in the group's limit across nodes: renewed while held, released
/// when dropped.
pub(super) struct Lease {
    cluster: Arc<Cluster>,
    key: String,
    member: String,
    _renew: glommio::Task<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.cluster.tell(Ask::Release {
            key: std::mem::take(&mut self.key),
            member: std::mem::take(&mut self.member),
        });
    }
}

pub(super) enum Leased {
    /// A place (`None`: no shared limit, or Redis failed and the node's count decides).
    Granted(Option<Lease>),
    /// The nodes hold all of the group's connections.
    Full,
}

/// Take one of the group's `limit` connections across nodes.
pub(super) async fn lease(qmgr: &Qmgr, group: &str, limit: usize) -> Leased {
    let Some(cluster) = cluster_of(qmgr) else {
        return Leased::Granted(None);
    };
    let key = cluster.key("conns", "shaping", group);
    let member = cluster.member();
    let lifetime = cluster.settings.lease_time;
    let ask = Ask::Lease {
        key: key.clone(),
        member: member.clone(),
        limit,
        lifetime,
    };
    match cluster.ask(ask).await {
        Ok(Answer::Granted(true)) => {
            answered(qmgr, &cluster);
            let renew = {
                let (cluster, key, member) = (Arc::clone(&cluster), key.clone(), member.clone());
                glommio::spawn_local(async move {
                    loop {
                        glommio::timer::sleep(lifetime / 3).await;
                        cluster.tell(Ask::Renew {
                            key: key.clone(),
                            member: member.clone(),
                            lifetime,
                        });
                    }
                })
            };
            Leased::Granted(Some(Lease {
                cluster,
                key,
                member,
                _renew: renew,
            }))
        }
        Ok(Answer::Granted(false)) => {
            answered(qmgr, &cluster);
            Leased::Full
        }
        other => {
            // A late grant must not hold a place until it expires.
            cluster.tell(Ask::Release { key, member });
            let why = other.err().unwrap_or_else(|| "unexpected answer".into());
            failed(qmgr, &cluster, &why);
            Leased::Granted(None)
        }
    }
}
