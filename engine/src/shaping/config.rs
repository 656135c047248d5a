//! The shaping tables of `corepost_shaping_files`: parsing, and merging several files (a
//! later file overrides an earlier one per provider and per domain). The format is
//! documented at the top of `contrib/shaping.conf`, the table shipped with corepost and
//! named `builtin` in the parameter.

use crate::qmgr::policy::rate;
use corepost_config::value::parse_time;
use regex::Regex;
use std::sync::Arc;
use std::time::Duration;

/// The table shipped with corepost (`builtin` in `corepost_shaping_files`).
pub const BUILTIN: &str = include_str!("../../../contrib/shaping.conf");

/// Limits of a group; `None` leaves the transport's and the destination's own.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Connections open at once to all of the group's destinations.
    pub connection_limit: Option<usize>,
    /// Transactions over one connection before it is closed.
    pub messages_per_connection: Option<u32>,
    /// Spacing between messages to all of the group's destinations.
    pub message_interval: Option<Duration>,
    /// Spacing between new connections to the group.
    pub connection_interval: Option<Duration>,
    /// `minimal_backoff_time` / `maximal_backoff_time` for the group's deferred mail.
    pub minimal_backoff: Option<Duration>,
    pub maximal_backoff: Option<Duration>,
}

impl Limits {
    /// `other`'s settings where it has them, else ours.
    fn overlay(&mut self, other: &Limits) {
        macro_rules! take {
            ($($f:ident),*) => { $( if other.$f.is_some() { self.$f = other.$f; } )* };
        }
        take!(
            connection_limit,
            messages_per_connection,
            message_interval,
            connection_interval,
            minimal_backoff,
            maximal_backoff
        );
    }
}

/// What a rule does when a reply matches it.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Lower the group's limits (each the smaller of the configured one and this).
    Throttle(Limits),
    /// Defer the group's mail without connecting.
    Suspend,
    /// Defer the mail of the destination that got the reply.
    SuspendDomain,
    /// Bounce the group's mail.
    Bounce,
    /// Bounce the mail of the destination that got the reply.
    BounceDomain,
    /// Stop using the egress source (`crate::egress`) whose connection got the reply, for
    /// every destination; its pool's other members carry the mail.
    SuspendSource,
}

impl Action {
    /// The action's name in the file, the log and the metrics' `action` label.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Throttle(_) => "throttle",
            Action::Suspend => "suspend",
            Action::SuspendDomain => "suspend-domain",
            Action::Bounce => "bounce",
            Action::BounceDomain => "bounce-domain",
            Action::SuspendSource => "suspend-source",
        }
    }

    /// Whether it applies to the destination that got the reply only.
    pub fn per_domain(&self) -> bool {
        matches!(self, Action::SuspendDomain | Action::BounceDomain)
    }
}

/// A reply code pattern: `421`, `42x`, `4xx`.
#[derive(Debug, Clone, PartialEq)]
pub struct CodePattern(String);

impl CodePattern {
    fn parse(word: &str) -> Option<CodePattern> {
        let b = word.as_bytes();
        let ok = b.len() == 3
            && matches!(b[0], b'2'..=b'5')
            && b[1..].iter().all(|c| c.is_ascii_digit() || *c == b'x');
        ok.then(|| CodePattern(word.to_string()))
    }

    pub fn matches(&self, code: u16) -> bool {
        let code = code.to_string();
        code.len() == 3
            && self
                .0
                .bytes()
                .zip(code.bytes())
                .all(|(p, c)| p == b'x' || p == c)
    }
}

/// An enhanced status pattern: `4.7.28`, `4.7.*`, `*.7.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusPattern(Vec<String>);

impl StatusPattern {
    fn parse(word: &str) -> Option<StatusPattern> {
        let parts: Vec<String> = word.split('.').map(str::to_string).collect();
        let ok = parts.len() == 3
            && parts.iter().all(|p| {
                p == "*" || (!p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
            });
        ok.then_some(StatusPattern(parts))
    }

    pub fn matches(&self, status: &str) -> bool {
        let got: Vec<&str> = status.split('.').collect();
        got.len() == 3 && self.0.iter().zip(&got).all(|(p, g)| p == "*" || p == g)
    }
}

/// One backoff rule: a reply pattern, an action and how long it lasts.
#[derive(Debug, Clone)]
pub struct Rule {
    pub code: Option<CodePattern>,
    pub status: Option<StatusPattern>,
    pub text: Option<Regex>,
    pub action: Action,
    pub duration: Duration,
    /// `file:line`, for the log and `corepost status`.
    pub origin: String,
}

impl Rule {
    /// Whether a reply (code, enhanced status, text) matches.
    pub fn matches(&self, code: u16, status: &str, text: &str) -> bool {
        self.code.as_ref().is_none_or(|c| c.matches(code))
            && self.status.as_ref().is_none_or(|s| s.matches(status))
            && self.text.as_ref().is_none_or(|r| r.is_match(text))
    }
}

/// A provider (destinations grouped by their MX host names) or a domain section.
#[derive(Debug, Clone, Default)]
pub struct Group {
    /// The provider's name, or the domain's.
    pub name: String,
    /// MX host patterns (providers): `.google.com` matches names under google.com,
    /// `mx.example.net` that name only.
    pub mx: Vec<String>,
    pub limits: Limits,
    pub rules: Vec<Rule>,
}

impl Group {
    /// Whether an MX host name is one of the provider's.
    pub fn has_mx(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.mx.iter().any(|p| match p.strip_prefix('.') {
            Some(suffix) => host.ends_with(p.as_str()) || host == suffix,
            None => host == *p,
        })
    }
}

/// How a `[domain NAME]` section assigns its domain.
#[derive(Debug, Clone)]
pub enum DomainRule {
    /// To this provider, whatever its MX hosts.
    Provider(String),
    /// To no group: not shaped.
    None,
    /// To its own group (the section's limits and rules).
    Own(Arc<Group>),
}

/// Every shaping table, merged.
#[derive(Debug, Clone, Default)]
pub struct Shaping {
    /// Providers in the order first defined.
    pub providers: Vec<Arc<Group>>,
    pub domains: std::collections::HashMap<String, DomainRule>,
}

impl Shaping {
    /// The tables `corepost_shaping_files` names, in order (`builtin`: the shipped one).
    pub fn from_config(config: &corepost_config::Config) -> Result<Shaping, String> {
        let files = config
            .get_list("corepost_shaping_files")
            .map_err(|e| e.to_string())?;
        let mut builder = Builder::default();
        for f in files {
            if f == "builtin" {
                builder.add("builtin shaping.conf", BUILTIN)?;
            } else {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| format!("corepost_shaping_files: {f}: {e}"))?;
                builder.add(&f, &text)?;
            }
        }
        builder.finish()
    }

    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.domains.is_empty()
    }

    /// The group of a next-hop domain whose MX hosts are `mx` (in preference order): its
    /// `[domain]` section first, else the first provider one of the hosts belongs to.
    pub fn group_of(&self, domain: &str, mx: &[&str]) -> Option<Arc<Group>> {
        match self.domains.get(&domain.to_ascii_lowercase()) {
            Some(DomainRule::None) => return None,
            Some(DomainRule::Own(g)) => return Some(Arc::clone(g)),
            Some(DomainRule::Provider(p)) => return self.provider(p),
            None => {}
        }
        mx.iter()
            .find_map(|h| self.providers.iter().find(|p| p.has_mx(h)))
            .cloned()
    }

    pub fn provider(&self, name: &str) -> Option<Arc<Group>> {
        self.providers.iter().find(|p| p.name == name).cloned()
    }
}

/// A section as read, before the files are merged.
#[derive(Debug, Default, Clone)]
struct Section {
    mx: Option<Vec<String>>,
    provider: Option<String>,
    limits: Limits,
    rules: Vec<Rule>,
    /// `rule = none`: drop the rules of earlier files.
    clear_rules: bool,
    origin: String,
}

#[derive(Debug, Default)]
struct Builder {
    /// (is a provider, name) → merged section, in first-seen order.
    sections: Vec<((bool, String), Section)>,
}

impl Builder {
    /// Parse one file and merge it over the earlier ones.
    fn add(&mut self, file: &str, text: &str) -> Result<(), String> {
        let mut current: Option<((bool, String), Section)> = None;
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = format!("{file}, line {}", n + 1);
            if let Some(head) = line.strip_prefix('[') {
                if let Some(done) = current.take() {
                    self.merge(done);
                }
                let key = section_head(head).map_err(|e| format!("{at}: {e}"))?;
                let origin = at.clone();
                current = Some((
                    key,
                    Section {
                        origin,
                        ..Section::default()
                    },
                ));
                continue;
            }
            let Some((_, section)) = current.as_mut() else {
                return Err(format!(
                    "{at}: setting outside a [provider] or [domain] section"
                ));
            };
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| format!("{at}: expected name = value"))?;
            setting(section, k.trim(), v.trim(), &format!("{file}:{}", n + 1))
                .map_err(|e| format!("{at}: {e}"))?;
        }
        if let Some(done) = current.take() {
            self.merge(done);
        }
        Ok(())
    }

    fn merge(&mut self, (key, s): ((bool, String), Section)) {
        let Some((_, old)) = self.sections.iter_mut().find(|(k, _)| *k == key) else {
            self.sections.push((key, s));
            return;
        };
        if s.mx.is_some() {
            old.mx = s.mx;
        }
        if s.provider.is_some() {
            old.provider = s.provider;
        }
        old.limits.overlay(&s.limits);
        if s.clear_rules {
            old.rules.clear();
        }
        old.rules.extend(s.rules);
        old.origin = s.origin;
    }

    fn finish(self) -> Result<Shaping, String> {
        let mut shaping = Shaping::default();
        for ((is_provider, name), s) in &self.sections {
            if *is_provider {
                let mx = s.mx.clone().unwrap_or_default();
                if mx.is_empty() {
                    return Err(format!(
                        "{}: [provider {name}] has no mx = patterns",
                        s.origin
                    ));
                }
                shaping.providers.push(Arc::new(Group {
                    name: name.clone(),
                    mx,
                    limits: s.limits.clone(),
                    rules: s.rules.clone(),
                }));
            }
        }
        for ((is_provider, name), s) in self.sections {
            if is_provider {
                continue;
            }
            let own = s.limits != Limits::default() || !s.rules.is_empty();
            let rule = match s.provider.as_deref() {
                Some(_) if own => {
                    return Err(format!(
                        "{}: [domain {name}] names a provider and has its own limits or rules: use one or the other",
                        s.origin
                    ));
                }
                Some("none") => DomainRule::None,
                Some(p) if shaping.provider(p).is_none() => {
                    return Err(format!("{}: [domain {name}]: no [provider {p}]", s.origin));
                }
                Some(p) => DomainRule::Provider(p.to_string()),
                None => DomainRule::Own(Arc::new(Group {
                    name: name.clone(),
                    mx: Vec::new(),
                    limits: s.limits,
                    rules: s.rules,
                })),
            };
            shaping.domains.insert(name, rule);
        }
        Ok(shaping)
    }
}

/// `provider NAME]` or `domain NAME]`.
fn section_head(head: &str) -> Result<(bool, String), String> {
    let head = head
        .strip_suffix(']')
        .ok_or("expected [provider NAME] or [domain NAME]")?;
    let (kind, name) = head
        .trim()
        .split_once(char::is_whitespace)
        .ok_or("expected [provider NAME] or [domain NAME]")?;
    let name = name.trim().to_ascii_lowercase();
    match kind {
        "provider" => {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !ok {
                return Err(format!(
                    "bad provider name \"{name}\" (letters, digits, - and _)"
                ));
            }
            Ok((true, name))
        }
        "domain" if !name.is_empty() && !name.contains(char::is_whitespace) => Ok((false, name)),
        _ => Err("expected [provider NAME] or [domain NAME]".into()),
    }
}

fn count<T: std::str::FromStr>(v: &str) -> Result<T, String> {
    v.parse()
        .map_err(|_| format!("bad number \"{v}\" (expected a positive integer)"))
}

/// One `name = value` line of a section.
fn setting(s: &mut Section, k: &str, v: &str, origin: &str) -> Result<(), String> {
    match k {
        "mx" => {
            let patterns = v
                .split([' ', ',', '\t'])
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let p = p.to_ascii_lowercase();
                    p.strip_prefix('*').map_or(p.clone(), str::to_string)
                })
                .collect();
            s.mx = Some(patterns);
        }
        "provider" => s.provider = Some(v.to_ascii_lowercase()),
        "rule" if v == "none" => {
            s.rules.clear();
            s.clear_rules = true;
        }
        "rule" => s.rules.push(parse_rule(v, origin)?),
        _ => limit(&mut s.limits, k, v)?,
    }
    Ok(())
}

/// A limit setting, in a section or a `throttle` action.
fn limit(l: &mut Limits, k: &str, v: &str) -> Result<(), String> {
    match k {
        "connection_limit" => l.connection_limit = Some(count::<usize>(v)?.max(1)),
        "messages_per_connection" => l.messages_per_connection = Some(count::<u32>(v)?.max(1)),
        "message_rate" => l.message_interval = Some(rate(v)?),
        "connection_rate" => l.connection_interval = Some(rate(v)?),
        "minimal_backoff_time" => l.minimal_backoff = Some(parse_time(v, 's')?),
        "maximal_backoff_time" => l.maximal_backoff = Some(parse_time(v, 's')?),
        other => {
            return Err(format!(
                "unknown setting \"{other}\" (mx, provider, connection_limit, messages_per_connection, message_rate, connection_rate, minimal_backoff_time, maximal_backoff_time, rule)"
            ));
        }
    }
    Ok(())
}

/// `[code] [status] [regex] => action [name=value ...] for TIME`.
pub fn parse_rule(v: &str, origin: &str) -> Result<Rule, String> {
    let (pattern, action) = v
        .rsplit_once("=>")
        .ok_or("expected a rule: [code] [status] [regex] => action for TIME")?;
    let mut rest = pattern.trim();
    let mut take = |parse: &dyn Fn(&str) -> bool| {
        let word = rest.split_whitespace().next().unwrap_or("");
        if !word.is_empty() && parse(word) {
            rest = rest[word.len()..].trim_start();
            Some(word.to_string())
        } else {
            None
        }
    };
    let code = take(&|w| CodePattern::parse(w).is_some()).and_then(|w| CodePattern::parse(&w));
    let status =
        take(&|w| StatusPattern::parse(w).is_some()).and_then(|w| StatusPattern::parse(&w));
    let text = if rest.is_empty() {
        None
    } else {
        Some(Regex::new(rest).map_err(|e| format!("bad regex \"{rest}\": {e}"))?)
    };
    if code.is_none() && status.is_none() && text.is_none() {
        return Err("a rule needs a reply code, a status or a regex to match".into());
    }
    let (action, duration) = parse_action(action.trim())?;
    Ok(Rule {
        code,
        status,
        text,
        action,
        duration,
        origin: origin.to_string(),
    })
}

/// `throttle message_rate=60/h connection_limit=2 for 30m`, `suspend for 10m`, ...
fn parse_action(text: &str) -> Result<(Action, Duration), String> {
    let (what, time) = text
        .rsplit_once(" for ")
        .ok_or("an action needs its duration: ... for TIME")?;
    let duration = parse_time(time.trim(), 's')?;
    if duration.is_zero() {
        return Err("an action's duration must be positive".into());
    }
    let mut words = what.split_whitespace();
    let name = words.next().unwrap_or("");
    let args: Vec<&str> = words.collect();
    let action = match name {
        "throttle" => {
            let mut l = Limits::default();
            for a in &args {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| format!("bad throttle setting \"{a}\" (name=value)"))?;
                match k {
                    "connection_limit" | "message_rate" | "connection_rate" => limit(&mut l, k, v)?,
                    other => {
                        return Err(format!(
                            "throttle cannot set \"{other}\" (connection_limit, message_rate, connection_rate)"
                        ));
                    }
                }
            }
            if l == Limits::default() {
                return Err(
                    "throttle needs connection_limit=, message_rate= or connection_rate=".into(),
                );
            }
            return Ok((Action::Throttle(l), duration));
        }
        "suspend" => Action::Suspend,
        "suspend-domain" => Action::SuspendDomain,
        "bounce" => Action::Bounce,
        "bounce-domain" => Action::BounceDomain,
        "suspend-source" => Action::SuspendSource,
        other => {
            return Err(format!(
                "unknown action \"{other}\" (throttle, suspend, suspend-domain, bounce, bounce-domain, suspend-source)"
            ));
        }
    };
    if let Some(a) = args.first() {
        return Err(format!("{name} takes no settings (\"{a}\")"));
    }
    Ok((action, duration))
}

#[cfg(test)]
mod tests;
