//! What the queue commands print: Postfix's `postqueue -p` (mailq) list,
//! `postcat`-style message display, and `qshape`'s table — the same text
//! whether it comes from the running daemon or from a stopped spool.

use std::collections::BTreeMap;
use std::fmt::Write;

/// Which of Postfix's queues a message would be in: what `postqueue -j`
/// calls `queue_name`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QueueName {
    /// A `sendmail` submission that pickup has not taken yet.
    Maildrop,
    /// Queued and never tried yet.
    Incoming,
    /// Being delivered right now.
    Active,
    /// Tried and waiting for a retry.
    Deferred,
    /// On hold.
    Hold,
}

impl QueueName {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Maildrop => "maildrop",
            QueueName::Incoming => "incoming",
            QueueName::Active => "active",
            QueueName::Deferred => "deferred",
            QueueName::Hold => "hold",
        }
    }

    /// mailq's status character after the queue id.
    fn flag(self) -> char {
        match self {
            QueueName::Hold => '!',
            QueueName::Active => '*',
            _ => ' ',
        }
    }
}

/// One queued message as the listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    /// The queue id, or a maildrop file's name.
    pub id: String,
    pub queue: QueueName,
    /// Microseconds since the epoch.
    pub arrival: u64,
    pub size: u64,
    pub sender: String,
    /// Pending recipients: address and last deferral reason.
    pub recipients: Vec<(String, Option<String>)>,
}

/// The listing's order: the maildrop first (as Postfix's showq, which
/// reads it first), then by arrival.
pub fn sort(items: &mut [QueueItem]) {
    items.sort_by(|a, b| {
        (a.queue != QueueName::Maildrop, a.arrival, &a.id).cmp(&(
            b.queue != QueueName::Maildrop,
            b.arrival,
            &b.id,
        ))
    });
}

/// Width of the queue id column (corepost's ids are 16 characters).
const ID_WIDTH: usize = 16;

/// The column a deferral reason is right-aligned to (without its
/// parentheses), as in Postfix 3.7's `mailq`.
const REASON_WIDTH: usize = 76;

/// The mailq listing.
pub fn mailq(items: &[QueueItem]) -> String {
    if items.is_empty() {
        return "Mail queue is empty\n".to_string();
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<w$}  --Size-- ----Arrival Time---- -Sender/Recipient-------",
        "-Queue ID-",
        w = ID_WIDTH
    );
    // Recipients line up under the sender.
    let indent = ID_WIDTH + 1 + 9 + 1 + 19 + 2;
    let mut bytes = 0u64;
    for item in items {
        bytes += item.size;
        let flag = item.queue.flag();
        let sender = if item.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &item.sender
        };
        let _ = writeln!(
            out,
            "{:<w$}{flag} {:>8} {}  {sender}",
            item.id,
            item.size,
            crate::time::mailq_stamp((item.arrival / 1_000_000) as i64),
            w = ID_WIDTH
        );
        let mut last_reason: Option<&str> = None;
        for (rcpt, reason) in &item.recipients {
            if let Some(r) = reason.as_deref()
                && last_reason != Some(r)
            {
                // As Postfix's showq: right-aligned to column 78 when it
                // fits, else from the left margin.
                let r = one_line(r);
                let pad = REASON_WIDTH.saturating_sub(r.len());
                let _ = writeln!(out, "{:pad$}({r})", "");
                last_reason = reason.as_deref();
            }
            let _ = writeln!(out, "{:indent$}{rcpt}", "");
        }
        out.push('\n');
    }
    let n = items.len();
    let _ = writeln!(
        out,
        "-- {} Kbytes in {n} Request{}.",
        bytes.div_ceil(1024),
        if n == 1 { "" } else { "s" }
    );
    out
}

/// `postqueue -j`: one JSON object per message, each on its own line,
/// with Postfix's members, order and spacing. corepost has no
/// `postsuper -f` (forced expiry), so `forced_expire` is always false.
pub fn json(items: &[QueueItem]) -> String {
    let mut out = String::new();
    for item in items {
        let sender = if item.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &item.sender
        };
        let _ = write!(
            out,
            "{{\"queue_name\": \"{}\", \"queue_id\": {}, \"arrival_time\": {}, \"message_size\": {}, \"forced_expire\": false, \"sender\": {}, \"recipients\": [",
            item.queue.as_str(),
            json_string(&item.id),
            item.arrival / 1_000_000,
            item.size,
            json_string(sender),
        );
        for (i, (address, reason)) in item.recipients.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            let _ = write!(out, "{{\"address\": {}", json_string(address));
            if let Some(r) = reason {
                let _ = write!(out, ", \"delay_reason\": {}", json_string(&one_line(r)));
            }
            out.push('}');
        }
        out.push_str("]}\n");
    }
    out
}

/// A JSON string literal, escaped as the JSON events are.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    crate::events::json::quote(&mut out, s);
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Age buckets of qshape: T (total), 5, 10, 20, 40, 80, 160, 320, 640,
/// 1280, 1280+ minutes.
const BUCKETS: [u64; 9] = [5, 10, 20, 40, 80, 160, 320, 640, 1280];

/// qshape: recipients per destination domain by message age.
pub fn shape(items: &[QueueItem], now_micros: u64) -> String {
    let mut rows: BTreeMap<String, [u64; 11]> = BTreeMap::new();
    let mut total = [0u64; 11];
    for item in items {
        let minutes = now_micros.saturating_sub(item.arrival) / 60_000_000;
        let bucket = BUCKETS
            .iter()
            .position(|&b| minutes < b)
            .unwrap_or(BUCKETS.len())
            + 1;
        for (rcpt, _) in &item.recipients {
            let domain = rcpt.rsplit_once('@').map_or("", |(_, d)| d).to_string();
            let row = rows.entry(domain).or_insert([0; 11]);
            row[0] += 1;
            row[bucket] += 1;
            total[0] += 1;
            total[bucket] += 1;
        }
    }
    let mut out = String::new();
    let _ = write!(out, "{:>30} {:>6}", "", "T");
    for b in BUCKETS {
        let _ = write!(out, " {b:>5}");
    }
    let _ = writeln!(out, " {:>5}+", BUCKETS[BUCKETS.len() - 1]);
    let mut line = |name: &str, counts: &[u64; 11]| {
        let _ = write!(out, "{name:>30} {:>6}", counts[0]);
        for c in &counts[1..] {
            let _ = write!(out, " {c:>5}");
        }
        out.push('\n');
    };
    line("TOTAL", &total);
    let mut sorted: Vec<(&String, &[u64; 11])> = rows.iter().collect();
    sorted.sort_by(|a, b| b.1[0].cmp(&a.1[0]).then(a.0.cmp(b.0)));
    for (domain, counts) in sorted {
        line(domain, counts);
    }
    out
}

/// `queue show`: the envelope, then the content.
pub fn show(
    envelope: &corepost_spool::Envelope,
    pending: &[u32],
    held: bool,
    content: &[u8],
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "*** ENVELOPE RECORDS {} ***", envelope.queue_id);
    let _ = writeln!(out, "message_size: {}", content.len());
    let _ = writeln!(
        out,
        "message_arrival_time: {}",
        crate::time::rfc5322((envelope.arrival / 1_000_000) as i64)
    );
    let _ = writeln!(
        out,
        "named_attribute: client_name={} client_address={} protocol={}",
        envelope.client.name, envelope.client.addr, envelope.client.protocol
    );
    let _ = writeln!(out, "sender: {}", envelope.sender);
    if held {
        let _ = writeln!(out, "status: on hold");
    }
    for (i, r) in envelope.recipients.iter().enumerate() {
        let state = if pending.contains(&(i as u32)) {
            "pending"
        } else {
            "done"
        };
        let _ = writeln!(
            out,
            "recipient: {} ({state}, {}:{})",
            r.address, r.transport, r.nexthop
        );
    }
    let _ = writeln!(out, "*** MESSAGE CONTENTS {} ***", envelope.queue_id);
    out.push_str(&String::from_utf8_lossy(content).replace("\r\n", "\n"));
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "*** HEADER EXTRACTED {} ***", envelope.queue_id);
    let _ = writeln!(out, "*** MESSAGE FILE END {} ***", envelope.queue_id);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use corepost_spool::QueueId;

    #[test]
    fn mailq_format() {
        let id = QueueId::from_parts(1_700_000_000_000_000, 0, 1);
        let items = vec![QueueItem {
            id: id.to_string(),
            queue: QueueName::Hold,
            arrival: 1_700_000_000_000_000,
            size: 2000,
            sender: String::new(),
            recipients: vec![
                ("a@x".into(), Some("connect to x: refused".into())),
                ("b@x".into(), Some("connect to x: refused".into())),
            ],
        }];
        let text = mailq(&items);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with(&format!("{id}!     2000 ")), "{text}");
        assert!(lines[1].ends_with("  MAILER-DAEMON"), "{text}");
        // Right-aligned as Postfix 3.7 prints it: the closing parenthesis
        // in column 78.
        assert_eq!(lines[2], format!("{:55}(connect to x: refused)", ""));
        assert_eq!(lines[3].trim(), "a@x");
        assert_eq!(lines[4].trim(), "b@x");
        assert_eq!(
            lines[3].find('a'),
            lines[1].find("MAILER"),
            "recipients line up under the sender: {text}"
        );
        assert_eq!(lines.last(), Some(&"-- 2 Kbytes in 1 Request."));
        assert_eq!(mailq(&[]), "Mail queue is empty\n");
        // Captured from Postfix 3.7: a short reason padded to end in column
        // 78, a longer one from the margin.
        let short = "connect to 127.0.0.1[127.0.0.1]:1: Connection refused";
        let long = "host 127.0.0.1[127.0.0.1] said: 451 4.3.0 short (in reply to RCPT TO command)";
        let with = |r: &str| {
            let mut i = items[0].clone();
            i.recipients = vec![("a@x".into(), Some(r.into()))];
            mailq(&[i]).lines().nth(2).unwrap().to_string()
        };
        assert_eq!(
            with(short),
            "                       (connect to 127.0.0.1[127.0.0.1]:1: Connection refused)"
        );
        assert_eq!(with(long), format!("({long})"));
        let s = shape(&items, 1_700_000_000_000_000 + 7 * 60_000_000);
        assert!(
            s.lines()
                .nth(1)
                .unwrap()
                .trim()
                .starts_with("TOTAL      2     0     2"),
            "{s}"
        );
        assert!(s.contains("x      2"), "{s}");
    }

    #[test]
    fn json_lines_are_postqueue_j() {
        let items = vec![
            QueueItem {
                id: "0123456789abcdef0123456789abcdef".into(),
                queue: QueueName::Maildrop,
                arrival: 1_796_546_752_000_000,
                size: 122,
                sender: "a\"b\\c@x".into(),
                recipients: vec![("r1@remote.example".into(), None)],
            },
            QueueItem {
                id: "ECA5498C5D2".into(),
                queue: QueueName::Deferred,
                arrival: 1_796_546_752_999_999,
                size: 255,
                sender: String::new(),
                recipients: vec![
                    (
                        "rcpt1@remote.example".into(),
                        Some("connect to\n x: refused".into()),
                    ),
                    ("rcpt2@remote.example".into(), None),
                ],
            },
        ];
        let text = json(&items);
        // Byte for byte what Postfix 3.7's postqueue -j printed for the
        // same messages (members, order, spacing; the null sender).
        assert_eq!(
            text.lines().nth(1).unwrap(),
            r#"{"queue_name": "deferred", "queue_id": "ECA5498C5D2", "arrival_time": 1796546752, "message_size": 255, "forced_expire": false, "sender": "MAILER-DAEMON", "recipients": [{"address": "rcpt1@remote.example", "delay_reason": "connect to x: refused"}, {"address": "rcpt2@remote.example"}]}"#
        );
        assert!(text.ends_with("}\n"));
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["queue_name"], "maildrop");
        assert_eq!(first["sender"], "a\"b\\c@x");
        assert_eq!(first["arrival_time"], 1_796_546_752);
        assert_eq!(first["forced_expire"], false);
        assert_eq!(first["recipients"][0]["address"], "r1@remote.example");
        assert!(first["recipients"][0].get("delay_reason").is_none());
        assert_eq!(json(&[]), "");
        assert_eq!(json_string("\u{1}é"), "\"\\u0001é\"");
    }
}
