//! corepost-spool: the queue, as one segmented, append-only,
//! memory-mapped log per core.
//!
//! * [`CoreSpool`] is one core's queue: append messages, record outcomes and
//!   administrative actions, read messages back, reclaim space. It is used
//!   from that core's single-threaded executor; durability is awaited
//!   through [`Durable`] futures resolved by the core's flusher thread
//!   (group commit, [`flush`]).
//! * Segments ([`segment`]) are fixed-size preallocated files, mapped once
//!   and shared read-only with other cores through `Arc`, so a message body
//!   is written once and never copied between cores.
//! * Every record is framed and checksummed ([`frame`]); recovery rebuilds
//!   the [`Index`] from the segments alone, truncating a torn tail and
//!   skipping (and reporting) damaged records without losing their
//!   neighbours.
//!
//! The on-disk format is specified in `spool/FORMAT.md`.

pub mod codec;
pub mod flush;
pub mod frame;
pub mod index;
pub mod queue_id;
pub mod record;
pub mod segment;
pub mod snapshot;
pub mod spare;
mod spool;

pub use flush::{CoreSync, Durable, FlushPolicy, FlushStats, Lsn, SyncJob, SyncMethod};
pub use index::{Applied, Census, Index, IndexEntry, Location, RecipientSet};
pub use queue_id::{QueueId, QueueIdGenerator};
pub use record::{
    Admin, AdminAction, BodyType, ClientInfo, Envelope, MailParams, Outcome, OutcomeKind,
    Recipient, RecipientState, Ret,
};
pub use segment::SegmentMap;
pub use spool::{
    Appended, CoreSpool, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE, ReclaimReport, RecoveryReport,
    SpoolError, SpoolOptions, StoredMessage, read_message,
};
