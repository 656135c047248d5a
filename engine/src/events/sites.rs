//! One function per kind of event, called next to the Postfix log line
//! that reports the same thing; each returns at once when events are off.

use super::{emit, enabled};
use corepost_spool::{Envelope, QueueId};
use std::time::Duration;

/// A message queued: smtpd (after the 250) and pickup.
pub fn reception(program: &str, envelope: &Envelope, size: usize) {
    if !enabled() {
        return;
    }
    let client = &envelope.client;
    emit("reception", |o| {
        o.str("program", program)
            .str("queue_id", &envelope.queue_id.to_string())
            .str("sender", &envelope.sender)
            .list(
                "recipients",
                envelope.recipients.iter().map(|r| r.address.as_str()),
            )
            .num("size", size as u64)
            .str("client", &format!("{}[{}]", client.name, client.addr))
            .str("protocol", &client.protocol)
            .opt("helo", Some(client.helo.as_str()).filter(|h| !h.is_empty()))
            .opt("sasl_username", client.sasl_username.as_deref())
            .opt("tls", client.tls.as_deref())
    });
}

/// What one recipient's delivery attempt gave, as its `to=<>` log line.
pub struct Attempt<'a> {
    pub program: &'a str,
    pub id: QueueId,
    pub sender: &'a str,
    pub recipient: &'a str,
    /// The log line's `orig_to=<address>, ` part, or empty.
    pub orig_to: &'a str,
    /// `relay=`: `host[addr]:port` or `none`.
    pub relay: &'a str,
    /// `status=`: sent, deferred, bounced, SOFTBOUNCE ...
    pub status: &'a str,
    pub dsn: &'a str,
    pub response: &'a str,
    /// The failure's class (`crate::bounce_class`); none for a delivery.
    pub bounce_class: Option<&'a str>,
    pub size: usize,
    /// Since arrival; in the queue manager; connection setup; transfer.
    pub total: Duration,
    pub in_qmgr: Duration,
    pub setup: Duration,
    pub xfer: Duration,
    /// The egress pool source the connection left from (`crate::egress`), if any.
    pub egress: Option<Egress<'a>>,
}

/// An egress pool member: the pool, the source's name and the address bound.
#[derive(Debug, Clone, Copy)]
pub struct Egress<'a> {
    pub pool: &'a str,
    pub source: &'a str,
    pub address: Option<std::net::IpAddr>,
}

/// A recipient's delivery, deferral or bounce (by its status), with the
/// times of Postfix's `delay=` and `delays=a/b/c/d`.
pub fn attempt(a: &Attempt<'_>) {
    if !enabled() {
        return;
    }
    let kind = match a.status {
        "sent" => "delivery",
        "bounced" => "bounce",
        _ => "deferral",
    };
    let original = a
        .orig_to
        .strip_prefix("orig_to=<")
        .and_then(|o| o.strip_suffix(">, "));
    emit(kind, |o| {
        o.str("program", a.program)
            .str("queue_id", &a.id.to_string())
            .str("sender", a.sender)
            .str("recipient", a.recipient)
            .opt("orig_recipient", original)
            .str("next_hop", a.relay)
            .str("status", a.status)
            .str("dsn", a.dsn)
            .str("response", a.response)
            .opt("bounce_class", a.bounce_class)
            .num("size", a.size as u64)
            .secs("delay", a.total.as_secs_f64())
            .secs(
                "delay_before_qmgr",
                a.total.saturating_sub(a.in_qmgr).as_secs_f64(),
            )
            .secs(
                "delay_in_qmgr",
                a.in_qmgr.saturating_sub(a.setup + a.xfer).as_secs_f64(),
            )
            .secs("delay_conn_setup", a.setup.as_secs_f64())
            .secs("delay_transmission", a.xfer.as_secs_f64())
            .opt("egress_pool", a.egress.map(|e| e.pool))
            .opt("egress_source", a.egress.map(|e| e.source))
            .opt(
                "egress_address",
                a.egress
                    .and_then(|e| e.address)
                    .map(|a| a.to_string())
                    .as_deref(),
            )
    });
}

/// A message whose deferred recipients expired (returned to the sender).
pub fn expiry(id: QueueId, sender: &str) {
    if !enabled() {
        return;
    }
    emit("expiry", |o| {
        o.str("program", "corepost/qmgr")
            .str("queue_id", &id.to_string())
            .str("sender", sender)
            .str("status", "expired")
    });
}

/// What smtpd refused, as its `reject:` line (`NOQUEUE` has no queue id).
pub struct Rejection<'a> {
    pub program: &'a str,
    pub id: Option<QueueId>,
    /// The command refused (`RCPT`, `CONNECT`, ...).
    pub stage: &'a str,
    pub client: &'a str,
    pub sender: Option<&'a str>,
    pub recipient: Option<&'a str>,
    pub code: u16,
    pub dsn: &'a str,
    pub response: &'a str,
}

pub fn rejection(r: &Rejection<'_>) {
    if !enabled() {
        return;
    }
    emit("rejection", |o| {
        o.str("program", r.program)
            .opt("queue_id", r.id.map(|i| i.to_string()).as_deref())
            .str("stage", r.stage)
            .str("client", r.client)
            .opt("sender", r.sender)
            .opt("recipient", r.recipient)
            .str("status", "rejected")
            .num("code", u64::from(r.code))
            .str("dsn", r.dsn)
            .str("response", r.response)
    });
}

/// A TLS session: `inbound` from a client, `outbound` to a server.
pub fn tls(program: &str, direction: &str, peer: &str, trust: &str, description: &str) {
    if !enabled() {
        return;
    }
    emit("tls", |o| {
        o.str("program", program)
            .str("direction", direction)
            .str("peer", peer)
            .str("trust", trust)
            .str("description", description)
    });
}

/// A queue administration action (`removed`, `placed on hold`, ...) or a
/// daemon one (`reload`, `logrotate`; no queue id).
pub fn admin(program: &str, id: Option<QueueId>, action: &str) {
    if !enabled() {
        return;
    }
    emit("admin", |o| {
        o.str("program", program)
            .opt("queue_id", id.map(|i| i.to_string()).as_deref())
            .str("action", action)
    });
}
