//! One function per kind of event, called next to the Postfix log line
//! that reports the same thing; each returns at once when events are off.

use super::{emit, enabled};
use corepost_spool::QueueId;

/// A message queued: smtpd (after the 250) and pickup.
#[allow(clippy::too_many_arguments)]
pub fn reception<'a>(
    program: &str,
    id: QueueId,
    sender: &str,
    recipients: impl IntoIterator<Item = &'a str>,
    size: usize,
    client: &str,
    protocol: &str,
    helo: Option<&str>,
) {
    if !enabled() {
        return;
    }
    emit("reception", |o| {
        o.str("program", program)
            .str("queue_id", &id.to_string())
            .str("sender", sender)
            .list("recipients", recipients)
            .num("size", size as u64)
            .str("client", client)
            .str("protocol", protocol)
            .opt("helo", helo)
    });
}

/// What one recipient's delivery attempt gave, as its `to=<>` log line.
pub struct Attempt<'a> {
    pub program: &'a str,
    pub id: QueueId,
    pub sender: &'a str,
    pub recipient: &'a str,
    /// The address as received (`orig_to=`), if different.
    pub original: Option<&'a str>,
    /// `relay=`: `host[addr]:port` or `none`.
    pub relay: &'a str,
    /// `status=`: sent, deferred, bounced, SOFTBOUNCE ...
    pub status: &'a str,
    pub dsn: &'a str,
    pub response: &'a str,
    pub size: usize,
    /// delay= and delays=a/b/c/d, in seconds.
    pub delay: f64,
    pub delays: [f64; 4],
}

/// A recipient's delivery, deferral or bounce (by its status).
pub fn attempt(a: &Attempt<'_>) {
    if !enabled() {
        return;
    }
    let kind = match a.status {
        "sent" => "delivery",
        "bounced" => "bounce",
        _ => "deferral",
    };
    emit(kind, |o| {
        o.str("program", a.program)
            .str("queue_id", &a.id.to_string())
            .str("sender", a.sender)
            .str("recipient", a.recipient)
            .opt("orig_recipient", a.original)
            .str("next_hop", a.relay)
            .str("status", a.status)
            .str("dsn", a.dsn)
            .str("response", a.response)
            .num("size", a.size as u64)
            .secs("delay", a.delay)
            .secs("delay_before_queue_manager", a.delays[0])
            .secs("delay_in_queue_manager", a.delays[1])
            .secs("delay_connection_setup", a.delays[2])
            .secs("delay_transmission", a.delays[3])
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
#[allow(clippy::too_many_arguments)]
pub fn rejection(
    program: &str,
    id: Option<QueueId>,
    stage: &str,
    client: &str,
    sender: Option<&str>,
    recipient: Option<&str>,
    code: u16,
    dsn: &str,
    response: &str,
) {
    if !enabled() {
        return;
    }
    emit("rejection", |o| {
        o.str("program", program)
            .opt("queue_id", id.map(|i| i.to_string()).as_deref())
            .str("stage", stage)
            .str("client", client)
            .opt("sender", sender)
            .opt("recipient", recipient)
            .num("code", u64::from(code))
            .str("dsn", dsn)
            .str("response", response)
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
