//! The egress file (`corepost_egress_pools`): sources and pools, one a line, in the style of
//! corepost's other line tables (`contrib/bounce-classes.conf`, OpenDKIM's KeyTable): `#`
//! comments, blank lines, whitespace-separated columns, `name=value` settings as in
//! `corepost_destination_policy_maps`. See `contrib/egress.conf` for a commented example.
//!
//! ```text
//! source NAME ADDRESS [address6=IPV6] [helo=NAME] [concurrency=N] [rate=N/s|m|h]
//!                     [warmup_start=YYYY-MM-DD] [warmup_daily=N] [warmup_growth=F]
//! pool   NAME SOURCE[:WEIGHT] ...
//! ```
//!
//! A weight defaults to 1; 0 keeps a source in the file but out of use (KumoMTA's rule). Every
//! error names the file and line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// One source address (PowerMTA's virtual MTA, KumoMTA's egress source).
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    /// The address connections bind to (IPv4 or IPv6).
    pub address: IpAddr,
    /// With an IPv4 `address`: the IPv6 one, for IPv6 destinations.
    pub address6: Option<IpAddr>,
    /// The EHLO/HELO name; `None`: the transport's `smtp_helo_name`.
    pub helo: Option<String>,
    /// Most connections from this source to one destination at once.
    pub concurrency: Option<usize>,
    /// Least spacing between two messages from this source to one destination.
    pub message_interval: Option<Duration>,
    pub warmup: Option<Warmup>,
    /// Where it is defined (for `corepost check`).
    pub line: usize,
}

impl Source {
    /// The address to bind for a destination address of this family.
    pub fn address_for(&self, ipv6: bool) -> Option<IpAddr> {
        if self.address.is_ipv6() == ipv6 {
            Some(self.address)
        } else if ipv6 {
            self.address6
        } else {
            None
        }
    }
}

/// A new address's schedule: `daily` messages per destination on its first day, multiplied by
/// `growth` each day after `start` (days since 1970-01-01, UTC).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    pub start: i64,
    pub daily: u64,
    pub growth: f64,
}

impl Warmup {
    /// Messages allowed per destination on day `today` (days since the epoch, UTC); days before
    /// the start count as the first day.
    pub fn cap(&self, today: i64) -> u64 {
        let days = (today - self.start).max(0);
        let cap = self.daily as f64 * self.growth.powf(days as f64);
        if cap >= u64::MAX as f64 {
            u64::MAX
        } else {
            cap as u64
        }
    }
}

/// A weighted set of sources.
#[derive(Debug, Clone, PartialEq)]
pub struct Pool {
    pub name: String,
    /// Member sources and their weights, in the order written.
    pub members: Vec<(Arc<Source>, u32)>,
    pub line: usize,
}

/// The whole file.
#[derive(Debug, Clone, PartialEq)]
pub struct Egress {
    pub path: PathBuf,
    pub sources: Vec<Arc<Source>>,
    pub pools: HashMap<String, Pool>,
}

impl Egress {
    /// Read and parse `path`; errors name the file (and line).
    pub fn load(path: &Path) -> Result<Egress, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let text = e.to_string();
            let reason = text.split(" (os error").next().unwrap_or(&text).to_string();
            format!("{}: {reason}", path.display())
        })?;
        Egress::parse(path, &text)
    }

    /// Parse the text of `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Egress, String> {
        let at = |line: usize, e: String| format!("{}, line {line}: {e}", path.display());
        let mut sources: Vec<Arc<Source>> = Vec::new();
        let mut pools: Vec<(usize, String, Members)> = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let content = raw.split('#').next().unwrap_or("").trim();
            let mut words = content.split_whitespace();
            match words.next() {
                None => {}
                Some("source") => {
                    let source = parse_source(line, words).map_err(|e| at(line, e))?;
                    if sources.iter().any(|s| s.name == source.name) {
                        return Err(at(
                            line,
                            format!("source \"{}\" defined twice", source.name),
                        ));
                    }
                    sources.push(Arc::new(source));
                }
                Some("pool") => {
                    let (name, members) = parse_pool(words).map_err(|e| at(line, e))?;
                    if pools.iter().any(|p| p.1 == name) {
                        return Err(at(line, format!("pool \"{name}\" defined twice")));
                    }
                    pools.push((line, name, members));
                }
                Some(other) => {
                    return Err(at(
                        line,
                        format!("unknown entry \"{other}\" (expected source or pool)"),
                    ));
                }
            }
        }
        let mut resolved = HashMap::new();
        for (line, name, members) in pools {
            let mut list = Vec::new();
            for (member, weight) in members {
                let source = sources.iter().find(|s| s.name == member).ok_or_else(|| {
                    at(
                        line,
                        format!("pool \"{name}\": unknown source \"{member}\""),
                    )
                })?;
                list.push((Arc::clone(source), weight));
            }
            let pool = Pool {
                name: name.clone(),
                members: list,
                line,
            };
            resolved.insert(name, pool);
        }
        Ok(Egress {
            path: path.to_path_buf(),
            sources,
            pools: resolved,
        })
    }

    /// Sources whose addresses this host cannot bind (not configured on an interface): one
    /// error per address, naming the file and line, for `corepost check`.
    pub fn unbindable(&self) -> Vec<String> {
        let mut errors = Vec::new();
        for s in &self.sources {
            for addr in std::iter::once(s.address).chain(s.address6) {
                if let Err(e) = std::net::TcpListener::bind((addr, 0)) {
                    let text = e.to_string();
                    let reason = text.split(" (os error").next().unwrap_or(&text);
                    errors.push(format!(
                        "{}, line {}: source \"{}\": cannot bind address {addr}: {reason}",
                        self.path.display(),
                        s.line,
                        s.name
                    ));
                }
            }
        }
        errors
    }
}

/// A pool's members as written: source names and weights.
type Members = Vec<(String, u32)>;

/// A name of a source or pool: letters, digits, `.`, `_`, `-`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn parse_address(value: &str) -> Result<IpAddr, String> {
    value
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("\"{value}\" is not an IP address"))
}

fn parse_source<'a>(
    line: usize,
    mut words: impl Iterator<Item = &'a str>,
) -> Result<Source, String> {
    let name = words
        .next()
        .ok_or("source without a name (expected: source NAME ADDRESS [settings])")?;
    if !valid_name(name) {
        return Err(format!(
            "bad source name \"{name}\" (letters, digits, '.', '_', '-')"
        ));
    }
    let address = parse_address(
        words
            .next()
            .ok_or(format!("source \"{name}\" without an address"))?,
    )?;
    let mut source = Source {
        name: name.to_string(),
        address,
        address6: None,
        helo: None,
        concurrency: None,
        message_interval: None,
        warmup: None,
        line,
    };
    let (mut start, mut daily, mut growth) = (None, 500u64, 2.0f64);
    for word in words {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("bad setting \"{word}\" (expected name=value)"))?;
        match k {
            "address6" => {
                let a = parse_address(v)?;
                if !a.is_ipv6() || address.is_ipv6() {
                    return Err(format!(
                        "address6=\"{v}\" must be an IPv6 address beside an IPv4 ADDRESS"
                    ));
                }
                source.address6 = Some(a);
            }
            "helo" if !v.is_empty() && !v.bytes().any(|b| b.is_ascii_control()) => {
                source.helo = Some(v.to_string());
            }
            "concurrency" => {
                let n: usize = v.parse().map_err(|_| format!("bad concurrency \"{v}\""))?;
                if n == 0 {
                    return Err("concurrency must be at least 1".into());
                }
                source.concurrency = Some(n);
            }
            "rate" => source.message_interval = Some(crate::qmgr::policy::parse_rate(v)?),
            "warmup_start" => start = Some(parse_date(v)?),
            "warmup_daily" => {
                daily = v.parse().map_err(|_| format!("bad warmup_daily \"{v}\""))?;
                if daily == 0 {
                    return Err("warmup_daily must be at least 1".into());
                }
            }
            "warmup_growth" => {
                growth = v
                    .parse()
                    .ok()
                    .filter(|g: &f64| g.is_finite() && *g >= 1.0)
                    .ok_or_else(|| format!("bad warmup_growth \"{v}\" (a number >= 1)"))?;
            }
            _ => {
                return Err(format!(
                    "unknown source setting \"{word}\" (address6, helo, concurrency, rate, warmup_start, warmup_daily, warmup_growth)"
                ));
            }
        }
    }
    source.warmup = start.map(|start| Warmup {
        start,
        daily,
        growth,
    });
    Ok(source)
}

fn parse_pool<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<(String, Members), String> {
    let name = words
        .next()
        .ok_or("pool without a name (expected: pool NAME SOURCE[:WEIGHT] ...)")?;
    if !valid_name(name) {
        return Err(format!(
            "bad pool name \"{name}\" (letters, digits, '.', '_', '-')"
        ));
    }
    let mut members = Vec::new();
    for word in words {
        let (member, weight) = match word.split_once(':') {
            Some((m, w)) => (
                m,
                w.parse::<u32>()
                    .ok()
                    .filter(|w| *w <= 1_000_000)
                    .ok_or_else(|| format!("bad weight in \"{word}\" (0 to 1000000)"))?,
            ),
            None => (word, 1),
        };
        if members.iter().any(|(m, _)| m == member) {
            return Err(format!("pool \"{name}\": source \"{member}\" listed twice"));
        }
        members.push((member.to_string(), weight));
    }
    if members.iter().all(|(_, w)| *w == 0) {
        return Err(format!(
            "pool \"{name}\" has no source with a weight above 0"
        ));
    }
    Ok((name.to_string(), members))
}

/// `YYYY-MM-DD` as days since 1970-01-01.
fn parse_date(value: &str) -> Result<i64, String> {
    let bad = || format!("bad date \"{value}\" (YYYY-MM-DD)");
    let mut parts = value.splitn(3, '-');
    let mut num = |len: usize| -> Result<i64, String> {
        let p = parts.next().filter(|p| p.len() == len).ok_or_else(bad)?;
        p.parse().map_err(|_| bad())
    };
    let (y, m, d) = (num(4)?, num(2)?, num(2)?);
    if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
        return Err(bad());
    }
    Ok(days_from_civil(y, m, d))
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Egress, String> {
        Egress::parse(Path::new("/etc/corepost/egress.conf"), text)
    }

    #[test]
    fn sources_and_pools() {
        let e = parse(
            "# comment\nsource a 192.0.2.1 helo=a.example concurrency=2 rate=10/s\n\
             source b 192.0.2.2 address6=2001:db8::2 warmup_start=2026-12-01 warmup_daily=100\n\
             pool bulk a:3 b   # b weighs 1\n",
        )
        .unwrap();
        let bulk = &e.pools["bulk"];
        assert_eq!(bulk.line, 4);
        assert_eq!(bulk.members[0].1, 3);
        assert_eq!(bulk.members[1].1, 1);
        let a = &bulk.members[0].0;
        assert_eq!(a.helo.as_deref(), Some("a.example"));
        assert_eq!(a.concurrency, Some(2));
        assert_eq!(a.message_interval, Some(Duration::from_millis(100)));
        let b = &bulk.members[1].0;
        assert_eq!(b.address_for(true), "2001:db8::2".parse().ok());
        assert_eq!(a.address_for(true), None);
        let w = b.warmup.unwrap();
        assert_eq!(w.start, days_from_civil(2026, 12, 1));
        assert_eq!(
            (w.cap(w.start - 3), w.cap(w.start), w.cap(w.start + 3)),
            (100, 100, 800)
        );
        assert_eq!(w.cap(w.start + 5000), u64::MAX);
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "source a 192.0.2.1\npool p a x\n",
                "line 2: pool \"p\": unknown source \"x\"",
            ),
            (
                "source a nowhere\n",
                "line 1: \"nowhere\" is not an IP address",
            ),
            (
                "\nsource a 192.0.2.1 helo\n",
                "line 2: bad setting \"helo\"",
            ),
            (
                "source a 192.0.2.1\nsource a 192.0.2.2\n",
                "line 2: source \"a\" defined twice",
            ),
            (
                "source a 192.0.2.1\npool p a:0\n",
                "line 2: pool \"p\" has no source",
            ),
            (
                "source a 192.0.2.1 warmup_start=2026-02-30\n",
                "line 1: bad date",
            ),
            (
                "source a 192.0.2.1 speed=9\n",
                "line 1: unknown source setting",
            ),
            ("vmta a\n", "line 1: unknown entry \"vmta\""),
        ];
        for (text, want) in cases {
            let e = parse(text).unwrap_err();
            assert!(
                e.starts_with("/etc/corepost/egress.conf, ") && e.contains(want),
                "{text:?}: {e}"
            );
        }
    }

    #[test]
    fn the_contrib_example_parses_once_uncommented() {
        let text: String = include_str!("../../../contrib/egress.conf")
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if rest.starts_with("source ") || rest.starts_with("pool ") => rest,
                _ => l,
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let e = parse(&text).unwrap();
        assert_eq!(e.sources.len(), 4);
        assert_eq!(e.pools["bulk"].members.len(), 3);
    }

    #[test]
    fn epoch_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(parse_date("2024-02-29"), Ok(19_782));
        assert!(parse_date("2023-02-29").is_err());
        assert!(parse_date("24-02-01").is_err());
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_or_fails(text in "\\PC*") {
            let _ = parse(&text);
        }
    }
}
