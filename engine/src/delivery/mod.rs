//! Delivery agents: the code that hands a queued message to its next hop.
//!
//! The queue manager (`qmgr/`) decides *what* to deliver *where* and *when*; the modules here
//! know *how* to talk to the other side. Each agent is a library the queue manager drives on its
//! core's executor — not a separate process as in Postfix — so a delivery costs no IPC and the
//! connections it opens stay on the core that owns the destination.
//!
//! - [`smtp`]: the SMTP client protocol (connection set-up, STARTTLS, pipelined transactions).
//! - [`local`], [`pipe`], [`r#virtual`]: agents that block (fsync'd file writes, child
//!   processes); they run on a bounded per-transport thread pool ([`pool`]) and answer with an
//!   [`agent::Report`] the queue manager records like SMTP results.
//! - [`mailbox`] (Maildir/mbox writing), [`command`] (running a child with a time limit):
//!   shared by those agents.
//! - [`helper`]: the privileged delivery helper process that runs local, virtual and pipe as
//!   root for a daemon that dropped privileges (Postfix's privilege separation).
//! - [`testsink`]: test support — a scripted SMTP server on loopback for the client's tests and
//!   the queue manager's end-to-end tests.

pub mod agent;
pub mod command;
pub mod helper;
pub mod lmtp;
pub mod local;
pub mod mailbox;
pub mod pipe;
pub mod pool;
pub mod smtp;
pub mod testsink;
pub mod r#virtual;
