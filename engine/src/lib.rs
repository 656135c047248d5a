//! corepost: a thread-per-core mail transfer agent with Postfix's model.
//!
//! This crate holds the engine and the `corepost` command line. Today it
//! has the configuration commands (`cli/`); the per-core runtime, smtpd,
//! the queue manager and the delivery agents each get a folder of their
//! own as they land (see ARCHITECTURE.md).

pub mod bounce;
pub mod bounce_class;
pub mod cli;
pub mod cluster;
pub mod context;
pub mod control;
pub mod delivery;
pub mod dkim;
pub mod dns;
pub mod egress;
pub mod events;
pub mod log;
pub mod metrics;
pub mod milter;
pub mod pickup;
pub mod qmgr;
pub mod rewrite;
pub mod routing;
pub mod runtime;
pub mod shaping;
pub mod smtpd;
pub mod stream;
pub mod time;
