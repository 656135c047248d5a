//! Milter lists: `smtpd_milters`, `non_smtpd_milters` and the results of
//! `smtpd_milter_maps`, with Postfix 3's per-milter overrides
//! (`{ inet:host:port, connect_timeout=10s, default_action=accept }`).

use std::path::PathBuf;
use std::time::Duration;

/// Where a milter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `inet:host:port`.
    Inet(String),
    /// `unix:/path` (relative paths are under `queue_directory`).
    Unix(PathBuf),
}

/// `milter_default_action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultAction {
    Accept,
    Reject,
    Tempfail,
    Quarantine,
}

impl DefaultAction {
    pub fn parse(v: &str) -> Option<DefaultAction> {
        match v.trim().to_ascii_lowercase().as_str() {
            "accept" => Some(DefaultAction::Accept),
            "reject" => Some(DefaultAction::Reject),
            "tempfail" => Some(DefaultAction::Tempfail),
            "quarantine" => Some(DefaultAction::Quarantine),
            _ => None,
        }
    }
}

/// One milter and its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MilterSpec {
    /// As configured (`inet:127.0.0.1:8891`): the name in log lines.
    pub name: String,
    pub target: Target,
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
    /// The version sent (2, 3, 4 or 6).
    pub version: u32,
    /// The events that version (and `no_header_reply`) allows.
    pub events: u32,
    pub default_action: DefaultAction,
}

/// The defaults every milter starts from (the `milter_*` parameters).
#[derive(Debug, Clone)]
pub struct Defaults {
    pub connect_timeout: Duration,
    pub command_timeout: Duration,
    pub content_timeout: Duration,
    pub protocol: String,
    pub default_action: String,
    pub queue_directory: PathBuf,
}

impl Defaults {
    pub fn from_params(text: &dyn Fn(&str) -> Result<String, String>) -> Result<Defaults, String> {
        let time = |n: &str| -> Result<Duration, String> {
            corepost_config::value::parse_time(&text(n)?, 's')
                .map_err(|e| format!("parameter {n}: {e}"))
        };
        let d = Defaults {
            connect_timeout: time("milter_connect_timeout")?,
            command_timeout: time("milter_command_timeout")?,
            content_timeout: time("milter_content_timeout")?,
            protocol: text("milter_protocol")?,
            default_action: text("milter_default_action")?,
            queue_directory: PathBuf::from(text("queue_directory")?),
        };
        protocol(&d.protocol).map_err(|e| format!("parameter milter_protocol: {e}"))?;
        DefaultAction::parse(&d.default_action).ok_or_else(|| {
            format!(
                "parameter milter_default_action: unknown action \"{}\" (expected accept, reject, tempfail or quarantine)",
                d.default_action
            )
        })?;
        Ok(d)
    }
}

/// `milter_protocol`: one version and optional `no_header_reply`, as
/// (version, event mask) — Postfix's milter8_connect.
pub fn protocol(value: &str) -> Result<(u32, u32), String> {
    use super::codec::proto;
    let (mut version, mut events) = (0, 0);
    for name in value
        .split([' ', ',', '\t', '\r', '\n'])
        .filter(|n| !n.is_empty())
    {
        let (v, mask) = match name {
            "2" => (2, proto::V2_MASK),
            "3" => (3, proto::V3_MASK),
            "4" => (4, proto::V4_MASK),
            "6" => (6, proto::V6_MASK),
            "no_header_reply" => (0, proto::NR_HDR),
            _ => return Err(format!("bad protocol information: {name}")),
        };
        if v != 0 && version != 0 {
            return Err(format!("bad protocol information: {name}"));
        }
        if v != 0 {
            version = v;
        }
        events |= mask;
    }
    if version == 0 {
        return Err("no protocol version information".into());
    }
    Ok((version, events))
}

/// Parse a milter list (`inet:h:p, { unix:/s, default_action=accept }`).
pub fn parse_list(value: &str, d: &Defaults) -> Result<Vec<MilterSpec>, String> {
    let items = corepost_config::list::split_list(value).map_err(|e| e.to_string())?;
    items.iter().map(|item| parse_one(item, d)).collect()
}

fn parse_one(item: &str, d: &Defaults) -> Result<MilterSpec, String> {
    let mut parts = item
        .split([',', '\n'])
        .map(str::trim)
        .filter(|p| !p.is_empty());
    let name = parts.next().unwrap_or_default().to_string();
    let target = match name.split_once(':') {
        Some(("inet", hostport))
            if hostport
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()) =>
        {
            Target::Inet(hostport.to_string())
        }
        Some(("unix" | "local", path)) if !path.is_empty() => {
            let p = PathBuf::from(path);
            Target::Unix(if p.is_absolute() {
                p
            } else {
                d.queue_directory.join(p)
            })
        }
        _ => {
            return Err(format!(
                "Milter service needs inet:host:port or unix:pathname instead of \"{name}\""
            ));
        }
    };
    let time = |k: &str, v: &str| {
        corepost_config::value::parse_time(v, 's').map_err(|e| format!("milter {name}: {k}: {e}"))
    };
    let (mut protocol_value, mut action) = (d.protocol.clone(), d.default_action.clone());
    let mut spec = MilterSpec {
        name: name.clone(),
        target,
        connect_timeout: d.connect_timeout,
        command_timeout: d.command_timeout,
        content_timeout: d.content_timeout,
        version: 0,
        events: 0,
        default_action: DefaultAction::Tempfail,
    };
    for part in parts {
        let (k, v) = part
            .split_once('=')
            .map(|(k, v)| (k.trim(), v.trim()))
            .ok_or_else(|| format!("milter {name}: missing '=' in \"{part}\""))?;
        match k {
            "connect_timeout" => spec.connect_timeout = time(k, v)?,
            "command_timeout" => spec.command_timeout = time(k, v)?,
            "content_timeout" => spec.content_timeout = time(k, v)?,
            "protocol" => protocol_value = v.to_string(),
            "default_action" => action = v.to_string(),
            _ => return Err(format!("milter {name}: unknown attribute \"{k}\"")),
        }
    }
    (spec.version, spec.events) =
        protocol(&protocol_value).map_err(|e| format!("milter {name}: {e}"))?;
    spec.default_action = DefaultAction::parse(&action)
        .ok_or_else(|| format!("milter {name}: unknown default_action \"{action}\""))?;
    Ok(spec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Defaults {
        Defaults {
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(30),
            content_timeout: Duration::from_secs(300),
            protocol: "6".into(),
            default_action: "tempfail".into(),
            queue_directory: PathBuf::from("/var/spool/corepost"),
        }
    }

    #[test]
    fn parses_postfix_3_syntax() {
        let l = parse_list(
            "inet:127.0.0.1:8891 { unix:milter/s, connect_timeout=10s, default_action = accept, protocol=4 no_header_reply }",
            &defaults(),
        )
        .unwrap();
        assert_eq!(l.len(), 2);
        assert_eq!(l[0].target, Target::Inet("127.0.0.1:8891".into()));
        assert_eq!(l[0].default_action, DefaultAction::Tempfail);
        assert_eq!(l[0].version, 6);
        assert_eq!(l[1].name, "unix:milter/s");
        assert_eq!(
            l[1].target,
            Target::Unix("/var/spool/corepost/milter/s".into())
        );
        assert_eq!(l[1].connect_timeout, Duration::from_secs(10));
        assert_eq!(l[1].default_action, DefaultAction::Accept);
        assert_eq!(l[1].version, 4);
        assert!(l[1].events & super::super::codec::proto::NR_HDR != 0);
    }

    #[test]
    fn refuses_what_postfix_cannot_use() {
        let d = defaults();
        assert!(parse_list("tcp:1.2.3.4:5", &d).is_err());
        assert!(parse_list("inet:host", &d).is_err());
        assert!(parse_list("{ inet:h:1, default_action=bounce }", &d).is_err());
        assert!(parse_list("{ inet:h:1, protocol=6 4 }", &d).is_err());
        assert!(parse_list("{ inet:h:1, frobnicate=1 }", &d).is_err());
        assert!(parse_list("", &d).unwrap().is_empty());
        assert!(protocol("no_header_reply").is_err());
    }
}
