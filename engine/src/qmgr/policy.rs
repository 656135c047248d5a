//! Per-destination delivery policy (`corepost_destination_policy_maps`):
//! connection caps and message / connection rates per destination, the
//! knobs ESPs need for large receivers and that Postfix lacks.
//!
//! A table value is space-separated settings:
//! `concurrency=4 rate=600/m connection_rate=30/m`. Keys tried, first hit
//! wins: the next hop as written (`gmail.com`, `[10.0.0.1]:25`), then
//! `transport:nexthop`, then `.parent` forms of the next hop's domain.
//!
//! The limits are per node (the destination's owner core paces and counts).
//! With `corepost_shared_throttle_redis = redis://host:port` they hold for
//! all the nodes that name the same Redis (and key prefix) together:
//! - `rate=` and `connection_rate=`: every message / new connection takes the
//!   next slot of a GCRA schedule in Redis (key
//!   `<prefix>:rate:<transport>:<nexthop>`, `<prefix>:connect:...`), so
//!   starts are at least one interval apart across the cluster; no burst.
//! - `concurrency=`: every connection holds a lease in a sorted set
//!   (`<prefix>:conns:<transport>:<nexthop>`), renewed while it is open and
//!   expiring `corepost_shared_throttle_lease_time` after a crash; a node
//!   still opens at most `concurrency` connections itself.
//! - Redis not answering within `corepost_shared_throttle_timeout_ms`: the
//!   node's share, rate / `corepost_cluster_node_count` and concurrency / N
//!   (at least 1), logged once per outage. See `crate::cluster`.
//!
//! The transport's `<transport>_destination_rate_delay` stays per node.

use corepost_config::tables::TableList;
use std::time::Duration;

/// One destination's policy; `None` fields leave the transport's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    pub concurrency: Option<usize>,
    /// Minimum spacing between message deliveries.
    pub message_interval: Option<Duration>,
    /// Minimum spacing between new connections.
    pub connection_interval: Option<Duration>,
}

/// Parse `N/s`, `N/m`, `N/h` into the interval between events (also the egress sources'
/// `rate=`, `crate::egress`).
pub fn parse_rate(value: &str) -> Result<Duration, String> {
    rate(value)
}

pub(crate) fn rate(value: &str) -> Result<Duration, String> {
    let (n, unit) = value
        .split_once('/')
        .ok_or_else(|| format!("bad rate \"{value}\" (expected N/s, N/m or N/h)"))?;
    let n: u32 = n
        .trim()
        .parse()
        .map_err(|_| format!("bad rate \"{value}\""))?;
    if n == 0 {
        return Err(format!("bad rate \"{value}\": must be positive"));
    }
    let per = match unit.trim() {
        "s" => Duration::from_secs(1),
        "m" => Duration::from_secs(60),
        "h" => Duration::from_secs(3600),
        _ => return Err(format!("bad rate unit in \"{value}\" (s, m or h)")),
    };
    Ok(per / n)
}

/// Parse a policy table value.
pub fn parse_policy(value: &str) -> Result<Policy, String> {
    let mut p = Policy::default();
    for word in value.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("bad policy setting \"{word}\" (expected name=value)"))?;
        match k {
            "concurrency" => {
                let n: usize = v.parse().map_err(|_| format!("bad concurrency \"{v}\""))?;
                p.concurrency = Some(n.max(1));
            }
            "rate" => p.message_interval = Some(rate(v)?),
            "connection_rate" => p.connection_interval = Some(rate(v)?),
            other => {
                return Err(format!(
                    "unknown policy setting \"{other}\" (concurrency, rate, connection_rate)"
                ));
            }
        }
    }
    Ok(p)
}

/// Look up the policy of `transport:nexthop`.
pub fn lookup(table: &TableList, transport: &str, nexthop: &str) -> Result<Option<Policy>, String> {
    if table.is_empty() {
        return Ok(None);
    }
    let host = nexthop.to_ascii_lowercase();
    let mut keys = vec![host.clone(), format!("{transport}:{host}")];
    let domain = host
        .trim_start_matches('[')
        .split([']', ':'])
        .next()
        .unwrap_or("")
        .to_string();
    let mut rest = domain.as_str();
    while let Some((_, parent)) = rest.split_once('.') {
        keys.push(format!(".{parent}"));
        rest = parent;
    }
    match table.lookup_first(keys.iter().map(String::as_str)) {
        Ok(Some((_, v))) => parse_policy(&v).map(Some),
        Ok(None) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_settings() {
        let p = parse_policy("concurrency=4 rate=600/m connection_rate=2/s").unwrap();
        assert_eq!(p.concurrency, Some(4));
        assert_eq!(p.message_interval, Some(Duration::from_millis(100)));
        assert_eq!(p.connection_interval, Some(Duration::from_millis(500)));
        assert!(parse_policy("rate=0/s").is_err());
        assert!(parse_policy("rate=5/d").is_err());
        assert!(parse_policy("speed=fast").is_err());
        assert!(parse_policy("concurrency").is_err());
    }

    #[test]
    fn key_order() {
        let t = TableList::open("inline:{ { .example.com=rate=1/s }, { smtp:mx.example.com=concurrency=2 }, { [10.0.0.1]:25=concurrency=1 } }").unwrap();
        assert_eq!(
            lookup(&t, "smtp", "mx.example.com")
                .unwrap()
                .unwrap()
                .concurrency,
            Some(2)
        );
        assert_eq!(
            lookup(&t, "relay", "mx.example.com")
                .unwrap()
                .unwrap()
                .message_interval,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            lookup(&t, "smtp", "[10.0.0.1]:25")
                .unwrap()
                .unwrap()
                .concurrency,
            Some(1)
        );
        assert_eq!(lookup(&t, "smtp", "other.example.org").unwrap(), None);
    }
}
