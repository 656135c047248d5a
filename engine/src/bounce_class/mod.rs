//! Bounce classification (issue 21): each deferred, bounced or expired
//! recipient is tagged with a class — bad-mailbox, inactive, quota, policy,
//! reputation, dns, tls, routing, connection, content, system, protocol or
//! unclassified — from its enhanced status code (RFC 3463) and reply text.
//!
//! The rules: `contrib/bounce-classes.conf`, built in, after those of the
//! file `corepost_bounce_class_rules` names (empty: none). One rule a line,
//! `#` comments and blank lines ignored:
//!
//! ```text
//! class  code-pattern  [regex]
//! bad-mailbox  *.1.1
//! policy       *.7.*   (?i)spam|blocked|blacklist
//! ```
//!
//! The code pattern is an enhanced status code whose parts may be `*`, or
//! `*` alone; the regex (the rest of the line) must match the reply text.
//! The first rule that matches wins; none: `unclassified`. The rules are
//! compiled at start and by `corepost reload`; a bad file is an error of
//! `corepost check` and of the start naming its file and line (a reload
//! keeps the running rules, with the warning of a failed reload).
//!
//! Where the class shows: the `bounce_class` of the `deferral` and
//! `bounce` JSON events, of the JSON log lines (`corepost_log_format =
//! json`) of `to=<>` lines with a 4.x.x/5.x.x `dsn=`, and the `class` label
//! of `corepost_delivery_failures_total`. The Postfix-format line itself is
//! unchanged: pflogsumm and other parsers read it.

use regex::{Regex, RegexBuilder};
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

/// The rules shipped with corepost.
pub const BUILTIN: &str = include_str!("../../../contrib/bounce-classes.conf");

/// The class of a failure no rule matches.
pub const UNCLASSIFIED: &str = "unclassified";

/// Most distinct class names over the daemon's life (they are metric label
/// values, kept for good: bounded).
const MAX_CLASSES: usize = 64;
const MAX_CLASS_LEN: usize = 32;
/// Compiled size of one rule's regex.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug)]
struct Rule {
    class: &'static str,
    /// The three parts of the code; `None` is `*`.
    code: Option<[Option<Box<str>>; 3]>,
    text: Option<Regex>,
}

/// Compiled rules, the first match wins.
#[derive(Debug, Default)]
pub struct Rules {
    rules: Vec<Rule>,
}

impl Rules {
    /// `corepost_bounce_class_rules`' file, then the built-in rules.
    pub fn from_config(config: &corepost_config::Config) -> Result<Rules, String> {
        let path = config
            .get("corepost_bounce_class_rules")
            .map_err(|e| e.to_string())?;
        let mut rules = Rules::default();
        if !path.is_empty() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("corepost_bounce_class_rules: {path}: {e}"))?;
            rules.add(&path, &text)?;
        }
        rules.add("built-in bounce-classes.conf", BUILTIN)?;
        Ok(rules)
    }

    /// Parse `text` (named `file` in errors) and append its rules.
    pub fn add(&mut self, file: &str, text: &str) -> Result<(), String> {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let rule = parse_rule(line).map_err(|e| format!("{file}, line {}: {e}", n + 1))?;
            self.rules.push(rule);
        }
        Ok(())
    }

    /// The class of a failure with enhanced status `dsn` and reply `text`.
    pub fn classify(&self, dsn: &str, text: &str) -> &'static str {
        let parts: Vec<&str> = dsn.split('.').collect();
        self.rules
            .iter()
            .find(|r| {
                code_matches(r.code.as_ref(), &parts)
                    && r.text.as_ref().is_none_or(|re| re.is_match(text))
            })
            .map_or(UNCLASSIFIED, |r| r.class)
    }
}

fn code_matches(pattern: Option<&[Option<Box<str>>; 3]>, parts: &[&str]) -> bool {
    let Some(pattern) = pattern else {
        return true;
    };
    parts.len() == 3
        && pattern
            .iter()
            .zip(parts)
            .all(|(p, part)| p.as_deref().is_none_or(|p| p == *part))
}

fn parse_rule(line: &str) -> Result<Rule, String> {
    let (class, rest) = split_word(line);
    let (code, regex) = split_word(rest);
    if code.is_empty() {
        return Err(format!("{line}: expected: class code-pattern [regex]"));
    }
    let text = if regex.is_empty() {
        None
    } else {
        Some(
            RegexBuilder::new(regex)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| format!("{regex}: {e}"))?,
        )
    };
    Ok(Rule {
        class: intern(class)?,
        code: parse_code(code)?,
        text,
    })
}

fn split_word(text: &str) -> (&str, &str) {
    match text.split_once(char::is_whitespace) {
        Some((word, rest)) => (word, rest.trim()),
        None => (text, ""),
    }
}

/// `*`, or `class.subject.detail` with each part digits or `*`.
fn parse_code(code: &str) -> Result<Option<[Option<Box<str>>; 3]>, String> {
    if code == "*" {
        return Ok(None);
    }
    let bad = || format!("{code}: expected an enhanced status code such as 5.1.1, *.2.2 or 4.7.*");
    let parts: Vec<&str> = code.split('.').collect();
    let [class, subject, detail] = parts[..] else {
        return Err(bad());
    };
    let part = |p: &str, max: usize| match p {
        "*" => Ok(None),
        _ if !p.is_empty() && p.len() <= max && p.bytes().all(|b| b.is_ascii_digit()) => {
            Ok(Some(p.into()))
        }
        _ => Err(bad()),
    };
    if !matches!(class, "2" | "4" | "5" | "*") {
        return Err(bad());
    }
    Ok(Some([part(class, 1)?, part(subject, 3)?, part(detail, 3)?]))
}

/// The class name as a `&'static str` (a metric label), the same one for
/// every reload that names it.
fn intern(class: &str) -> Result<&'static str, String> {
    if class.is_empty()
        || class.len() > MAX_CLASS_LEN
        || !class
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err(format!(
            "{class}: a class is 1 to {MAX_CLASS_LEN} lower-case letters, digits and '-'"
        ));
    }
    static NAMES: Mutex<BTreeSet<&'static str>> = Mutex::new(BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(name) = names.get(class) {
        return Ok(name);
    }
    if names.len() >= MAX_CLASSES {
        return Err(format!("{class}: more than {MAX_CLASSES} bounce classes"));
    }
    let name: &'static str = Box::leak(class.into());
    names.insert(name);
    Ok(name)
}

static ACTIVE: RwLock<Option<Arc<Rules>>> = RwLock::new(None);

/// Use these rules from now on (start and reload).
pub fn install(rules: Rules) {
    *ACTIVE.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(rules));
}

/// The class of a failure, by the installed rules (the built-in ones when
/// none were installed).
pub fn classify(dsn: &str, text: &str) -> &'static str {
    let active = ACTIVE.read().unwrap_or_else(|p| p.into_inner()).clone();
    match active {
        Some(rules) => rules.classify(dsn, text),
        None => builtin().classify(dsn, text),
    }
}

fn builtin() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| {
        let mut rules = Rules::default();
        // The shipped file is tested to parse (tests below).
        let _ = rules.add("built-in bounce-classes.conf", BUILTIN);
        rules
    })
}

/// The class of a failure's delivery status, when `dsn` is a 4.x.x or
/// 5.x.x code (successes have none).
pub fn of_failure(dsn: &str, text: &str) -> Option<&'static str> {
    matches!(dsn.as_bytes().first(), Some(b'4' | b'5')).then(|| classify(dsn, text))
}

/// The class of a Postfix `to=<>` log line that reports a failure
/// (`dsn=4.x.x` or `5.x.x`, `status=word (text)`), for JSON log lines.
pub fn of_log_line(message: &str) -> Option<&'static str> {
    let (_, after) = message.split_once(", dsn=")?;
    let (dsn, after) = after.split_once(", status=")?;
    let text = after
        .split_once(" (")
        .map_or("", |(_, t)| t.strip_suffix(')').unwrap_or(t));
    of_failure(dsn, text)
}

#[cfg(test)]
mod tests;
