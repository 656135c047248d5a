//! What one core holds: its spool, its log, its stop signal and the way to
//! reach the other cores — the per-core context every service on that
//! core (smtpd, the queue manager, pickup, the control requests) is given.
//!
//! It sits below the services and the runtime so the layers read
//! top-down: `runtime` starts the cores and builds a [`CoreContext`] for
//! each; the services use it; it uses only the spool and the log. The
//! other cores are reached through [`CorePeers`], which the control module
//! implements, so this module does not depend on any service.

mod queue_space;
mod shutdown;
mod signal;

use crate::log::Log;
use corepost_spool::{CoreSpool, Envelope, QueueId};
pub use queue_space::QueueSpace;
pub use shutdown::Shutdown;
pub use signal::Signal;
use std::cell::{Cell, RefCell};

/// Requests one core can make of every core (the control channel's
/// sender side, seen from a service).
pub trait CorePeers {
    /// Ask every core to flush deferred mail (for one domain, or all of
    /// it), without waiting for the deliveries; whether any core took it.
    fn flush(&self, domain: Option<&str>) -> bool;
}

/// What one core needs to serve sessions.
pub struct CoreContext {
    pub id: u16,
    pub log: Log,
    pub shutdown: Shutdown,
    pub(crate) spool: RefCell<CoreSpool>,
    /// Notified whenever a message is queued, to wake the queue manager.
    pub new_mail: Signal,
    /// Sessions running on this core.
    pub sessions: Cell<usize>,
    /// Every core: smtpd's ETRN asks them to flush deferred mail, as
    /// `corepost queue flush` does.
    pub peers: Box<dyn CorePeers>,
    /// The queue file system's free space for smtpd's MAIL check.
    pub queue_space: QueueSpace,
}

impl CoreContext {
    pub fn new_queue_id(&self) -> QueueId {
        self.spool.borrow_mut().new_queue_id()
    }

    /// Free bytes on this core's queue file system, at most a second old
    /// (see [`QueueSpace`]).
    pub fn queue_free_space(&self) -> std::io::Result<u64> {
        self.queue_space.free(&self.spool.borrow())
    }

    /// Messages queued on this core.
    pub fn queued(&self) -> usize {
        self.spool.borrow().index().len()
    }

    /// Append a message and wait until it is durable.
    pub async fn queue(&self, envelope: &Envelope, content: &[u8]) -> Result<(), String> {
        let durable = {
            let mut spool = self.spool.borrow_mut();
            let appended = spool
                .append_message(envelope, content)
                .map_err(|e| e.to_string())?;
            spool.durable(appended.lsn)
        };
        durable.await?;
        self.new_mail.notify();
        Ok(())
    }
}
