//! A [`Snapshot`] in the Prometheus text format, written by prometheus-client's encoder
//! (names, `_total` suffixes, label escaping). The names and help texts are the ones
//! documented in METRICS.md.

use super::slot::Counter as C;
use super::snapshot::Snapshot;
use corepost_spool::flush::SYNC_BUCKETS_MICROS;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use std::fmt::Error;

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// The text served at `/metrics`.
pub fn encode(snapshot: &Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition(snapshot.clone())));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Exposition(Snapshot);

fn counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauges(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(Labels<'_>, u64)],
) -> Result<(), Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in series {
        ConstGauge::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), Error> {
        let s = &self.0;
        let c = |k: C| s.counter(k);
        let by_source = |smtpd: C, pickup: C| {
            vec![
                (vec![("source", "smtpd")], c(smtpd)),
                (vec![("source", "pickup")], c(pickup)),
            ]
        };
        counters(
            &mut enc,
            "corepost_messages_received",
            "Messages queued, by source.",
            &by_source(C::ReceivedSmtpd, C::ReceivedPickup),
        )?;
        counters(
            &mut enc,
            "corepost_recipients_received",
            "Recipients of the messages queued, by source.",
            &by_source(C::RecipientsSmtpd, C::RecipientsPickup),
        )?;
        counters(
            &mut enc,
            "corepost_received_bytes",
            "Bytes of the messages queued (as stored), by source.",
            &by_source(C::BytesSmtpd, C::BytesPickup),
        )?;
        let statuses = [
            ("delivered", C::MessagesDelivered),
            ("deferred", C::MessagesDeferred),
            ("bounced", C::MessagesBounced),
            ("expired", C::MessagesExpired),
        ];
        let series: Vec<_> = statuses
            .iter()
            .map(|(l, k)| (vec![("status", *l)], c(*k)))
            .collect();
        counters(
            &mut enc,
            "corepost_messages",
            "Delivery attempts of a message to one destination, counted once for each status its recipients got in that attempt.",
            &series,
        )?;
        counters(
            &mut enc,
            "corepost_messages_removed",
            "Messages whose last recipient is done (Postfix's \"removed\").",
            &[(vec![], c(C::MessagesRemoved))],
        )?;
        encode_rejects(&mut enc, s)?;
        encode_failures(&mut enc, s)?;
        encode_egress(&mut enc, s)?;
        encode_deliveries(&mut enc, s)?;
        encode_sessions(&mut enc, s)?;
        encode_queue(&mut enc, s)?;
        encode_syncs(&mut enc, s)?;
        let dns: Vec<_> = [
            ("hit", C::DnsHit),
            ("coalesced", C::DnsCoalesced),
            ("miss", C::DnsMiss),
        ]
        .iter()
        .map(|(l, k)| (vec![("result", *l)], c(*k)))
        .collect();
        counters(
            &mut enc,
            "corepost_dns_lookups",
            "DNS lookups of the per-core resolvers: answered from the cache (hit), by a query already in flight (coalesced), or from the name servers (miss).",
            &dns,
        )?;
        counters(
            &mut enc,
            "corepost_dns_queries",
            "DNS queries sent to the name servers (every try, UDP and TCP).",
            &[(vec![], c(C::DnsQuery))],
        )?;
        let tls: Vec<_> = [
            ("server", "ok", C::TlsServerOk),
            ("server", "failed", C::TlsServerFailed),
            ("client", "ok", C::TlsClientOk),
            ("client", "failed", C::TlsClientFailed),
        ]
        .iter()
        .map(|(side, r, k)| (vec![("side", *side), ("result", *r)], c(*k)))
        .collect();
        counters(
            &mut enc,
            "corepost_tls_handshakes",
            "TLS handshakes, as smtpd (server) and as the SMTP/LMTP client.",
            &tls,
        )?;
        let anvil: Vec<_> = [
            ("connection_count", C::AnvilConnectionCount),
            ("connection_rate", C::AnvilConnectionRate),
            ("message_rate", C::AnvilMessageRate),
            ("recipient_rate", C::AnvilRecipientRate),
            ("auth_rate", C::AnvilAuthRate),
        ]
        .iter()
        .map(|(l, k)| (vec![("limit", *l)], c(*k)))
        .collect();
        counters(
            &mut enc,
            "corepost_anvil_rejections",
            "Clients refused by an smtpd_client_*_limit (Postfix's anvil), by limit.",
            &anvil,
        )?;
        encode_helper(&mut enc, s)?;
        encode_shaping(&mut enc, s)?;
        let version = env!("CARGO_PKG_VERSION");
        gauges(
            &mut enc,
            "corepost_build_info",
            "Always 1; the version is a label.",
            &[(vec![("version", version)], 1)],
        )
    }
}

fn encode_rejects(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let series: Vec<_> = s
        .rejects
        .iter()
        .map(|((command, class, severity), n)| {
            (
                vec![
                    ("command", *command),
                    ("class", *class),
                    ("severity", *severity),
                ],
                *n,
            )
        })
        .collect();
    counters(
        enc,
        "corepost_smtpd_rejects",
        "smtpd rejections (Postfix's reject: lines) by command, reason class (the subject of the enhanced status code) and severity (temporary 4xx, permanent 5xx).",
        &series,
    )
}

fn encode_failures(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let series: Vec<_> = s
        .failures
        .iter()
        .map(|((status, class), n)| (vec![("status", *status), ("class", *class)], *n))
        .collect();
    counters(
        enc,
        "corepost_delivery_failures",
        "Recipients deferred, bounced or expired (one per to=<> log line), by status and bounce class (contrib/bounce-classes.conf and corepost_bounce_class_rules).",
        &series,
    )
}

fn encode_egress(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let series: Vec<_> = s
        .egress
        .iter()
        .map(|((pool, source, status), n)| {
            (
                vec![
                    ("pool", pool.as_str()),
                    ("source", source.as_str()),
                    ("status", *status),
                ],
                *n,
            )
        })
        .collect();
    counters(
        enc,
        "corepost_egress_deliveries",
        "Recipient outcomes of deliveries over connections from an egress pool's source (corepost_egress_pools), by pool, source and status.",
        &series,
    )
}

fn encode_deliveries(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let mut series = Vec::new();
    let mut connections = Vec::new();
    let mut bytes = Vec::new();
    for ((transport, dest), d) in &s.deliveries {
        let base = || {
            vec![
                ("transport", transport.as_str()),
                ("destination", dest.as_str()),
            ]
        };
        for (status, n) in [
            ("sent", d.sent),
            ("deferred", d.deferred),
            ("bounced", d.bounced),
            ("expired", d.expired),
        ] {
            let mut l = base();
            l.push(("status", status));
            series.push((l, n));
        }
        for (result, n) in [("ok", d.connections_ok), ("failed", d.connections_failed)] {
            let mut l = base();
            l.push(("result", result));
            connections.push((l, n));
        }
        bytes.push((base(), d.bytes));
    }
    counters(
        enc,
        "corepost_deliveries",
        "Recipient outcomes of delivery attempts by transport, destination (its next hop when corepost_destination_policy_maps has an entry for it, else other) and status.",
        &series,
    )?;
    counters(
        enc,
        "corepost_connections",
        "Connections the SMTP/LMTP client opened (ok: the session reached its first transaction) or failed to open, by transport and destination.",
        &connections,
    )?;
    counters(
        enc,
        "corepost_sent_bytes",
        "Bytes of the messages in transactions that delivered at least one recipient, by transport and destination.",
        &bytes,
    )
}

fn encode_sessions(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    counters(
        enc,
        "corepost_smtpd_sessions",
        "SMTP sessions accepted.",
        &[(vec![], s.counter(C::SessionsStarted))],
    )?;
    let cores: Vec<String> = (0..s.sessions.len()).map(|c| c.to_string()).collect();
    let series: Vec<_> = cores
        .iter()
        .zip(&s.sessions)
        .map(|(core, n)| (vec![("core", core.as_str())], *n))
        .collect();
    gauges(
        enc,
        "corepost_smtpd_sessions_open",
        "SMTP sessions open, by core.",
        &series,
    )
}

fn encode_queue(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    let q = &s.queue;
    let incoming = q.messages.saturating_sub(q.held + q.active + q.deferred);
    let mut series = vec![
        (vec![("queue", "incoming")], incoming),
        (vec![("queue", "active")], q.active),
        (vec![("queue", "deferred")], q.deferred),
        (vec![("queue", "hold")], q.held),
    ];
    if let Some(n) = s.maildrop {
        series.push((vec![("queue", "maildrop")], n));
    }
    gauges(
        enc,
        "corepost_queue_messages",
        "Messages queued, by state: incoming (due now, waiting for a worker), active (being delivered), deferred (waiting for a later attempt), hold, and maildrop (files waiting for pickup). Published by each core once a second.",
        &series,
    )?;
    gauges(
        enc,
        "corepost_spool_bytes",
        "Spool space: live (the current records of queued messages) and allocated (segment files). Published by each core once a second.",
        &[
            (vec![("kind", "live")], q.live_bytes),
            (vec![("kind", "allocated")], q.segment_bytes),
        ],
    )
}

fn encode_syncs(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    counters(
        enc,
        "corepost_spool_syncs",
        "Group commits: syncs (msync or fdatasync) of the spool's new records.",
        &[(vec![], s.syncs.count)],
    )?;
    let mut buckets: Vec<(f64, u64)> = SYNC_BUCKETS_MICROS
        .iter()
        .map(|b| *b as f64 / 1e6)
        .chain([f64::INFINITY])
        .zip(s.syncs.buckets.iter().copied())
        .collect();
    buckets.truncate(SYNC_BUCKETS_MICROS.len() + 1);
    let mut m = enc.encode_descriptor(
        "corepost_spool_sync_seconds",
        "Duration of each group commit's sync.",
        None,
        MetricType::Histogram,
    )?;
    m.encode_histogram::<NoLabelSet>(s.syncs.micros as f64 / 1e6, s.syncs.count, &buckets, None)
}

fn encode_helper(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    counters(
        enc,
        "corepost_delivery_helper_requests",
        "Deliveries sent to the root delivery helper: ok (a report came back) or failed (deferred).",
        &[
            (vec![("result", "ok")], s.counter(C::HelperOk)),
            (vec![("result", "failed")], s.counter(C::HelperFailed)),
        ],
    )?;
    if let Some(up) = s.helper_up {
        gauges(
            enc,
            "corepost_delivery_helper_up",
            "1 while the root delivery helper runs, 0 once it has exited (absent when the daemon has none).",
            &[(vec![], u64::from(up))],
        )?;
    }
    Ok(())
}

/// The shaping groups: connections, limits in force, backoff actions.
fn encode_shaping(enc: &mut DescriptorEncoder, s: &Snapshot) -> Result<(), Error> {
    use crate::shaping::state::per_hour;
    fn group(r: &crate::shaping::state::Report) -> Labels<'_> {
        vec![("group", r.name.as_str())]
    }
    let series = |f: &dyn Fn(&crate::shaping::state::Report) -> Option<u64>| -> Vec<_> {
        s.shaping
            .iter()
            .filter_map(|r| Some((group(r), f(r)?)))
            .collect()
    };
    gauges(
        enc,
        "corepost_shaping_connections",
        "Connections open to a shaping group's destinations (all cores of this node).",
        &series(&|r| Some(r.connections as u64)),
    )?;
    gauges(
        enc,
        "corepost_shaping_connection_limit",
        "A shaping group's connection limit in force (lowered while a throttle is).",
        &series(&|r| r.limits.connection_limit.map(|l| l as u64)),
    )?;
    gauges(
        enc,
        "corepost_shaping_message_rate_limit",
        "A shaping group's message rate in force, in messages per hour (lowered while a throttle is).",
        &series(&|r| r.limits.message_interval.map(per_hour)),
    )?;
    const ACTIONS: [&str; 5] = [
        "throttle",
        "suspend",
        "suspend-domain",
        "bounce",
        "bounce-domain",
    ];
    let mut active = Vec::new();
    let mut triggers = Vec::new();
    for r in &s.shaping {
        for a in ACTIONS {
            let n = r.active.iter().filter(|x| x.action.name() == a).count() as u64;
            active.push((vec![("group", r.name.as_str()), ("action", a)], n));
            let t = r.triggers.get(a).copied().unwrap_or(0);
            triggers.push((vec![("group", r.name.as_str()), ("action", a)], t));
        }
    }
    gauges(
        enc,
        "corepost_shaping_actions_active",
        "Backoff actions of a shaping group in force now, by action.",
        &active,
    )?;
    counters(
        enc,
        "corepost_shaping_triggers",
        "Backoff rules of a shaping group triggered by a reply, by action.",
        &triggers,
    )
}

#[cfg(test)]
mod tests {
    use super::super::Metrics;
    use super::super::slot::{Counter, Mode};
    use super::*;

    #[test]
    fn the_exposition_has_every_family_with_its_labels() {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(2, dir.path());
        m.cores[1].add(Counter::ReceivedSmtpd, 3, Mode::Owner);
        m.cores[0].destination("smtp", "other", |c| {
            c.sent = 2;
            c.bytes = 10;
        });
        m.cores[0].reject(("RCPT", "policy", "permanent"));
        m.cores[0].failure(("bounced", "bad-mailbox"));
        m.cores[0].egress("bulk", "ip2", "sent", 2);
        m.cores[1].egress("bulk", "ip2", "sent", 1);
        let text = encode(&Snapshot::collect(&m));
        for line in [
            "# TYPE corepost_messages_received_total counter",
            "corepost_messages_received_total{source=\"smtpd\"} 3",
            "corepost_deliveries_total{transport=\"smtp\",destination=\"other\",status=\"sent\"} 2",
            "corepost_sent_bytes_total{transport=\"smtp\",destination=\"other\"} 10",
            "corepost_smtpd_rejects_total{command=\"RCPT\",class=\"policy\",severity=\"permanent\"} 1",
            "corepost_delivery_failures_total{status=\"bounced\",class=\"bad-mailbox\"} 1",
            "corepost_egress_deliveries_total{pool=\"bulk\",source=\"ip2\",status=\"sent\"} 3",
            "corepost_smtpd_sessions_open{core=\"1\"} 0",
            "corepost_spool_sync_seconds_bucket{le=\"+Inf\"} 0",
            "corepost_spool_sync_seconds_count 0",
            "corepost_queue_messages{queue=\"deferred\"} 0",
            "corepost_messages_removed_total 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "Prometheus text, not OpenMetrics");
    }
}

#[cfg(test)]
mod docs {
    use super::super::Metrics;
    use super::*;
    use std::collections::BTreeSet;

    /// Every sample name of a full exposition (the delivery helper's gauge included).
    fn exposed() -> BTreeSet<String> {
        let dir = tempfile::tempdir().unwrap();
        let m = Metrics::new(1, dir.path());
        m.cores[0].destination("smtp", "other", |c| c.sent = 1);
        m.cores[0].reject(("RCPT", "policy", "permanent"));
        m.cores[0].failure(("deferred", "quota"));
        let mut snapshot = Snapshot::collect(&m);
        snapshot.helper_up = Some(true);
        snapshot.shaping.push(crate::shaping::state::Report {
            name: "google".into(),
            connections: 1,
            configured: Default::default(),
            limits: crate::shaping::config::Limits {
                connection_limit: Some(2),
                message_interval: Some(std::time::Duration::from_secs(1)),
                ..Default::default()
            },
            active: Vec::new(),
            triggers: Default::default(),
        });
        encode(&snapshot)
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(str::to_string)
            .collect()
    }

    /// `corepost_...` words in `text`.
    fn names_in(text: &str) -> BTreeSet<String> {
        text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .filter(|w| w.starts_with("corepost_") && !w.ends_with('_'))
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_metric_is_documented() {
        let doc = names_in(include_str!("../../../METRICS.md"));
        for name in exposed() {
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .filter(|f| f.ends_with("_seconds"))
                .unwrap_or(&name);
            assert!(doc.contains(family), "{family} is not in METRICS.md");
        }
    }

    #[test]
    fn the_dashboard_uses_existing_metrics_only() {
        let dashboard = include_str!("../../../contrib/grafana/corepost.json");
        let exposed = exposed();
        let queries: String = dashboard
            .lines()
            .filter(|l| l.trim_start().starts_with("\"expr\":"))
            .collect();
        let used = names_in(&queries);
        assert!(used.len() > 10, "{used:?}");
        for name in &used {
            assert!(
                exposed.contains(name),
                "the dashboard uses {name}, which is not exposed"
            );
        }
        let documented = names_in(include_str!("../../../METRICS.md"));
        let unused: Vec<_> = documented
            .iter()
            .filter(|n| n.ends_with("_total") || !n.contains("_total"))
            .filter(|n| exposed.contains(*n) || exposed.contains(&format!("{n}_count")))
            .filter(|n| !used.contains(*n) && !used.contains(&format!("{n}_bucket")))
            .filter(|n| n.as_str() != "corepost_build_info")
            .collect();
        assert!(
            unused.is_empty(),
            "metrics the dashboard does not show: {unused:?}"
        );
    }
}
