//! Whole-configuration validation, for `corepost check` and for the daemon
//! before it starts or reloads.
//!
//! Checks, globally and for every master.cf service with its `-o`
//! overrides: that every value expands (no loops, no bad syntax) and fits
//! its parameter's type, that restriction lists parse, and that every lookup
//! table referenced opens and parses. Tables named only by built-in
//! defaults (e.g. `hash:/etc/aliases`) that do not exist are warnings, not
//! errors: a fresh host may simply not have them yet.

use crate::config::{Config, ServiceConfig};
use crate::registry::Kind;
use crate::restrictions::{parse_restrictions, tables_of};
use crate::tables::TableList;
use crate::value;
use std::collections::BTreeSet;

/// What `check` found.
#[derive(Debug, Default, Clone)]
pub struct Report {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Report {
    pub fn is_ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Commands corepost runs from master.cf. Other commands (Postfix helpers
/// such as `tlsmgr` or `anvil`) are accepted with a warning and not run.
pub const KNOWN_COMMANDS: &[&str] = &[
    "smtpd",
    "smtp",
    "lmtp",
    "local",
    "virtual",
    "pipe",
    "error",
    "discard",
    "pickup",
    "qmgr",
    "bounce",
    "cleanup",
    "trivial-rewrite",
    "showq",
    "flush",
    "spawn",
];

/// Validate `config`.
pub fn check(config: &Config) -> Report {
    let mut report = Report {
        warnings: config.warnings(),
        ..Report::default()
    };
    crate::fs_safety::check_queue_directory(config, &mut report);
    let mut tables_seen = BTreeSet::new();
    // Global values: everything main.cf sets plus every default.
    let names: Vec<String> = config.registry.iter().map(|p| p.name.clone()).collect();
    for name in &names {
        let explicit = config.main.get(name).is_some();
        check_param(config, None, name, explicit, &mut report, &mut tables_seen);
    }
    report
        .errors
        .extend(crate::relay_guard::open_relay_errors(config));
    report
        .warnings
        .extend(crate::master_transports::missing_transports(config));
    report.warnings.extend(dane_without_dnssec(config));
    let unsupported = crate::unsupported::findings(config);
    report.errors.extend(unsupported.errors);
    report.warnings.extend(unsupported.warnings);
    for service in config.services() {
        if service.service.command == "smtpd"
            && let Some(problem) = crate::mastercf::listen_address_problem(service.service)
        {
            report.errors.push(format!(
                "{}, line {}: service {}: {problem}",
                config.master.path.display(),
                service.service.line,
                service.service.id()
            ));
        }
        if !KNOWN_COMMANDS.contains(&service.service.command.as_str()) {
            report.warnings.push(format!(
                "{}, line {}: service {}: corepost has no \"{}\" program; the entry is ignored",
                config.master.path.display(),
                service.service.line,
                service.service.id(),
                service.service.command
            ));
        }
        for o in &service.service.overrides {
            if config.registry.contains(&o.name) {
                check_param(
                    config,
                    Some(service),
                    &o.name,
                    true,
                    &mut report,
                    &mut tables_seen,
                );
            }
        }
    }
    report
}

/// The `dane` levels need `smtp_dns_support_level = dnssec` (Postfix accepts the setting and
/// then, per delivery, warns "dane configured with dnssec lookups disabled" and falls back to
/// `may`, or defers every message at `dane-only`): say so before mail piles up.
fn dane_without_dnssec(config: &Config) -> Vec<String> {
    let verdict = |level: String, support: String, at: String| {
        let level = level.trim().to_ascii_lowercase();
        let effect = match level.as_str() {
            "dane" => "falls back to opportunistic TLS (may)",
            "dane-only" => "defers every delivery",
            _ => return None,
        };
        (support.trim() != "dnssec").then(|| {
            format!(
                "{at}smtp_tls_security_level = {level} without smtp_dns_support_level = dnssec {effect}; \
                 DANE also needs a validating resolver (corepost trusts its AD bit)"
            )
        })
    };
    let mut out = Vec::new();
    if let (Ok(level), Ok(support)) = (
        config.get("smtp_tls_security_level"),
        config.get("smtp_dns_support_level"),
    ) {
        out.extend(verdict(level, support, String::new()));
    }
    for service in config.services() {
        let s = service.service;
        let overrides = ["smtp_tls_security_level", "smtp_dns_support_level"]
            .iter()
            .any(|n| s.override_value(n).is_some());
        if s.command != "smtp" || !overrides {
            continue;
        }
        if let (Ok(level), Ok(support)) = (
            service.get("smtp_tls_security_level"),
            service.get("smtp_dns_support_level"),
        ) {
            let at = format!(
                "{}, line {}: service {}: ",
                config.master.path.display(),
                s.line,
                s.id()
            );
            out.extend(verdict(level, support, at));
        }
    }
    out
}

fn check_param(
    config: &Config,
    service: Option<ServiceConfig<'_>>,
    name: &str,
    explicit: bool,
    report: &mut Report,
    tables_seen: &mut BTreeSet<String>,
) {
    let Some(param) = config.registry.get(name) else {
        return;
    };
    let value = match service {
        Some(s) => s.get(name),
        None => config.get(name),
    };
    let value = match value {
        Ok(v) => v,
        Err(e) => {
            report.errors.push(e.to_string());
            return;
        }
    };
    let context = match service {
        Some(s) => format!(
            "{}, line {}: service {}: parameter {name}",
            config.master.path.display(),
            s.service.line,
            s.service.id()
        ),
        None => match config.main.entry(name) {
            Some(e) => format!(
                "{}, line {}: parameter {name}",
                config.main.path.display(),
                e.line
            ),
            None => format!("parameter {name} (built-in default)"),
        },
    };
    if let Err(e) =
        value::validate(param.kind, &value).and_then(|()| value::validate_words(param, &value))
    {
        report.errors.push(format!("{context}: {e}"));
        return;
    }
    if let Err(e) = validate_value(name, &value) {
        report.errors.push(format!("{context}: {e}"));
        return;
    }
    let mut table_specs: Vec<String> = Vec::new();
    match param.kind {
        Kind::Maps => table_specs.extend(crate::list::split_list(&value).unwrap_or_default()),
        Kind::Restrictions => {
            let classes = match service {
                Some(s) => s.get_list("smtpd_restriction_classes"),
                None => config.get_list("smtpd_restriction_classes"),
            }
            .unwrap_or_default();
            match parse_restrictions(&value, &classes) {
                Ok(list) => table_specs.extend(tables_of(&list).map(str::to_string)),
                Err(e) => report.errors.push(format!("{context}: {e}")),
            }
        }
        _ => {}
    }
    for spec in table_specs {
        if !tables_seen.insert(spec.clone()) {
            continue;
        }
        if let Err(e) = TableList::open(&spec) {
            let message = format!("{context}: {e}");
            if explicit {
                report.errors.push(message);
            } else {
                report.warnings.push(message);
            }
        }
    }
}

/// Checks of values whose syntax is more than their kind's.
fn validate_value(name: &str, value: &str) -> Result<(), String> {
    match name {
        "corepost_metrics_address" => value::parse_listen_address(value).map(drop),
        _ => Ok(()),
    }
}
