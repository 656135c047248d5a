//! Typed parameter values: booleans, integers, times and sizes with
//! Postfix's syntax, and validation of a value against its [`Kind`].

use crate::registry::Kind;
use std::time::Duration;

/// `yes` or `no` (any case), as Postfix's `mail_conf_bool`.
pub fn parse_bool(text: &str) -> Result<bool, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => Err(format!(
            "bad boolean value \"{other}\" (expected yes or no)"
        )),
    }
}

/// A whole number (negative values are allowed, e.g. `-1` for "unlimited"
/// in a few Postfix parameters).
pub fn parse_int(text: &str) -> Result<i64, String> {
    text.trim()
        .parse()
        .map_err(|_| format!("bad integer value \"{}\"", text.trim()))
}

/// A byte count: digits only, like Postfix's size parameters.
pub fn parse_size(text: &str) -> Result<u64, String> {
    text.trim().parse().map_err(|_| {
        format!(
            "bad size value \"{}\" (expected a number of bytes)",
            text.trim()
        )
    })
}

/// A time: digits with an optional unit `s`, `m`, `h`, `d` or `w`;
/// `default_unit` applies when there is none (`smtpd_timeout = 300` is
/// seconds, `maximal_queue_lifetime = 5` is days).
pub fn parse_time(text: &str, default_unit: char) -> Result<Duration, String> {
    let t = text.trim();
    let bad = || {
        format!("bad time value \"{t}\" (expected a number with an optional unit s, m, h, d or w)")
    };
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    if digits.is_empty() {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    let unit = match unit {
        "" => default_unit,
        u if u.len() == 1 => u.chars().next().unwrap_or(default_unit),
        _ => return Err(bad()),
    };
    let seconds_per = match unit.to_ascii_lowercase() {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        'w' => 7 * 86400,
        _ => return Err(bad()),
    };
    n.checked_mul(seconds_per)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("time value \"{t}\" is too large"))
}

/// A listening address `host:port` (`corepost_metrics_address`): the host an
/// IPv4 address, a bracketed IPv6 address or `localhost` (127.0.0.1), the
/// port 1 to 65535. Empty is `None` (off). No name is looked up: a listener
/// bound to whatever a resolver answers at start would be a surprise.
pub fn parse_listen_address(text: &str) -> Result<Option<std::net::SocketAddr>, String> {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    let t = text.trim();
    if t.is_empty() {
        return Ok(None);
    }
    let bad = |why: &str| {
        format!(
            "bad address \"{t}\": {why} (expected host:port, e.g. 127.0.0.1:9154 or [::1]:9154)"
        )
    };
    let (host, port) = t.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| bad("the port is not a number from 1 to 65535"))?;
    let ip: IpAddr = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| bad("not an IPv6 address in brackets"))?
    } else {
        host.parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| bad("the host is not an IPv4 address, [IPv6 address] or localhost"))?
    };
    Ok(Some(SocketAddr::new(ip, port)))
}

/// Check an expanded value against its kind. Lists, tables and
/// restrictions are checked elsewhere (they need more than syntax).
pub fn validate(kind: Kind, value: &str) -> Result<(), String> {
    match kind {
        Kind::Bool => parse_bool(value).map(drop),
        Kind::Int => parse_int(value).map(drop),
        Kind::Size => parse_size(value).map(drop),
        Kind::Time(unit) => parse_time(value, unit).map(drop),
        Kind::List | Kind::Maps | Kind::Restrictions => crate::list::split_list(value)
            .map(drop)
            .map_err(|e| e.to_string()),
        Kind::Text => Ok(()),
    }
}

/// Check an expanded value against the words Postfix allows for it
/// ([`crate::registry::Param::words`]): the whole value, or each word of a
/// list. Case does not matter, as in Postfix.
pub fn validate_words(param: &crate::registry::Param, value: &str) -> Result<(), String> {
    if param.words.is_empty() {
        return Ok(());
    }
    let allowed = |w: &str| param.words.iter().any(|a| a.eq_ignore_ascii_case(w));
    let bad = match param.kind {
        Kind::List => crate::list::split_list(value)
            .map_err(|e| e.to_string())?
            .into_iter()
            .find(|w| !allowed(w)),
        _ => Some(value.trim().to_string()).filter(|v| !allowed(v)),
    };
    match bad {
        None => Ok(()),
        Some(word) => {
            let expected: Vec<&str> = param
                .words
                .iter()
                .copied()
                .filter(|w| !w.is_empty())
                .collect();
            Err(format!(
                "bad value \"{word}\" (expected {}{})",
                if param.words.contains(&"") {
                    "empty or "
                } else {
                    ""
                },
                expected.join(", ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listen_addresses() {
        let ok = |t: &str| parse_listen_address(t).unwrap().map(|a| a.to_string());
        assert_eq!(ok(""), None);
        assert_eq!(ok("127.0.0.1:9154").as_deref(), Some("127.0.0.1:9154"));
        assert_eq!(ok(" localhost:80 ").as_deref(), Some("127.0.0.1:80"));
        assert_eq!(ok("[::1]:9154").as_deref(), Some("[::1]:9154"));
        assert_eq!(ok("0.0.0.0:9154").as_deref(), Some("0.0.0.0:9154"));
        for bad in [
            "9154",
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:65536",
            "::1:9154",
            "example.com:9154",
            "[::1:9154",
            "1.2.3:9154",
            ":9154",
        ] {
            assert!(parse_listen_address(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn booleans() {
        assert_eq!(parse_bool("yes"), Ok(true));
        assert_eq!(parse_bool(" No "), Ok(false));
        assert!(parse_bool("true").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("300s", 's'), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("300", 's'), Ok(Duration::from_secs(300)));
        assert_eq!(parse_time("5d", 's'), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_time("5", 'd'), Ok(Duration::from_secs(5 * 86400)));
        assert_eq!(parse_time("2w", 's'), Ok(Duration::from_secs(14 * 86400)));
        assert_eq!(parse_time("0h", 'h'), Ok(Duration::ZERO));
        assert_eq!(parse_time("1M", 's'), Ok(Duration::from_secs(60)));
        for bad in [
            "",
            "s",
            "10x",
            "10ss",
            "-1s",
            "1.5h",
            "99999999999999999999w",
        ] {
            assert!(parse_time(bad, 's').is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_ints() {
        assert_eq!(parse_size("10240000"), Ok(10240000));
        assert!(parse_size("10M").is_err());
        assert_eq!(parse_int("-1"), Ok(-1));
        assert!(parse_int("ten").is_err());
    }

    #[test]
    fn enumerated_values() {
        let registry = crate::registry::Registry::builtin();
        let level = registry.get("smtpd_tls_security_level").unwrap();
        for ok in ["", "none", "may", "Encrypt"] {
            assert_eq!(validate_words(level, ok), Ok(()), "{ok}");
        }
        assert_eq!(
            validate_words(level, "sometimes"),
            Err("bad value \"sometimes\" (expected empty or none, may, encrypt)".into())
        );
        let classes = registry.get("notify_classes").unwrap();
        assert_eq!(
            validate_words(classes, "resource, software, bounce"),
            Ok(())
        );
        assert!(
            validate_words(classes, "resource, sofware")
                .unwrap_err()
                .contains("\"sofware\"")
        );
        let free = registry.get("myhostname").unwrap();
        assert_eq!(validate_words(free, "anything"), Ok(()));
    }

    proptest! {
        #[test]
        fn time_round_trips(n in 0u64..1_000_000, unit in prop::sample::select(vec!['s', 'm', 'h', 'd', 'w'])) {
            let d = parse_time(&format!("{n}{unit}"), 's').unwrap();
            let per = match unit { 's' => 1, 'm' => 60, 'h' => 3600, 'd' => 86400, _ => 604800 };
            prop_assert_eq!(d.as_secs(), n * per);
        }

        #[test]
        fn arbitrary_text_never_panics(s in "\\PC{0,20}") {
            let _ = parse_time(&s, 's');
            let _ = parse_size(&s);
            let _ = parse_bool(&s);
        }
    }
}
