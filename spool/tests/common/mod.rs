//! Shared helpers for the spool's integration tests.
#![allow(dead_code)]

use corepost_spool::*;
use std::path::Path;

pub fn options(segment_size: usize) -> SpoolOptions {
    SpoolOptions {
        segment_size,
        policy: FlushPolicy::Always,
        sync: SyncMethod::Msync,
        compact_below: 0.25,
    }
}

pub fn open(
    root: &Path,
    core: u16,
    cores: u16,
    segment_size: usize,
) -> (CoreSpool, RecoveryReport) {
    CoreSpool::open(root, core, cores, options(segment_size)).expect("open spool")
}

/// Content derived from the queue id, so a reader can check it.
pub fn content_for(id: QueueId, len: usize) -> Vec<u8> {
    let seed = id.to_string();
    let mut out = format!("Message-ID: <{seed}@test>\r\n\r\n").into_bytes();
    while out.len() < len.max(40) {
        out.extend_from_slice(seed.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.truncate(len.max(40));
    out
}

pub fn envelope(id: QueueId, recipients: usize) -> Envelope {
    Envelope {
        queue_id: id,
        arrival: id.micros(),
        sender: "sender@example.org".into(),
        params: MailParams::default(),
        client: ClientInfo {
            name: "localhost".into(),
            addr: "127.0.0.1".into(),
            port: 40000,
            helo: "localhost".into(),
            protocol: "ESMTP".into(),
            sasl_username: None,
            tls: None,
        },
        recipients: (0..recipients)
            .map(|i| Recipient {
                address: format!("rcpt{i}@example.com"),
                orcpt: None,
                notify: 0,
                transport: "smtp".into(),
                nexthop: "example.com".into(),
                state: RecipientState::Pending,
                original: None,
            })
            .collect(),
        next_attempt: 0,
        held: false,
    }
}

/// Append a message with generated content and wait until it is durable.
pub fn append(spool: &mut CoreSpool, recipients: usize, len: usize) -> QueueId {
    let id = spool.new_queue_id();
    let appended = spool
        .append_message(&envelope(id, recipients), &content_for(id, len))
        .expect("append");
    spool.durable(appended.lsn).wait().expect("durable");
    id
}

pub fn outcome(id: QueueId, recipient: u32, kind: OutcomeKind) -> Outcome {
    Outcome {
        queue_id: id,
        recipient,
        kind,
        at: 1,
        dsn: "2.0.0".into(),
        reply: "250 ok".into(),
        relay: "sink[127.0.0.1]:25".into(),
    }
}
