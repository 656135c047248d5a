//! smtpd: the ESMTP server that accepts mail into the spool.
//!
//! Layered like tokio's mini-redis: [`connection`] owns the socket and its
//! buffers (lines in, replies out, pipelined groups answered in one write),
//! [`command`] parses one command line, [`session`] runs the RFC 5321 state
//! machine and decides each reply, [`data`] reads message content safely.
//! Policy lives in [`restrictions`] and address classification and routing
//! in `crate::routing`; [`settings`] is a service's effective configuration.
//! [`checks`] applies header_checks/body_checks to content before it is
//! queued and [`cleanup`] acts on the result; [`filter`] routes a message to an after-queue content filter.

pub mod address;
pub mod anvil;
pub mod checks;
pub mod cleanup;
pub mod command;
pub mod connection;
pub mod data;
pub mod dns_checks;
pub mod filter;
pub mod haproxy;
pub mod networks;
pub mod policy_service;
pub mod reply;
pub mod restrictions;
pub mod sasl;
pub mod session;
pub mod settings;
pub mod tls;
