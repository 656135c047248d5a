//! `corepost check`: validate the configuration and every table it names.
//! Prints each problem on its own line and exits non-zero on any error;
//! warnings alone do not fail the check.

use super::{fatal, warning};
use clap::Args;
use corepost_config::check::check;
use corepost_config::{Config, default_config_dir};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Configuration directory; -C is the same (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', short_alias = 'C', value_name = "DIR")]
    config_dir: Option<PathBuf>,
}

pub fn run(args: CheckArgs) -> ExitCode {
    let named = super::config_dir_named(args.config_dir.as_deref());
    let dir = args.config_dir.unwrap_or_else(default_config_dir);
    if let Err(e) = super::check_config_dir(&dir, named, true) {
        return fatal(e);
    }
    let config = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    if !config.has_main_cf {
        warning(format!(
            "{}: no main.cf; using built-in defaults",
            dir.display()
        ));
    }
    let mut report = check(&config);
    // Files the daemon reads again after giving root up (AUTH, reload).
    if let Ok(((name, uid, gid), _)) = crate::runtime::listen::mail_owner_account(&config) {
        let owner = corepost_config::owner_access::Owner { name, uid, gid };
        report
            .warnings
            .extend(corepost_config::owner_access::unreadable_files(
                &config, &owner,
            ));
    }
    let mut signers = Vec::new();
    // What only the engine can check: each smtpd service's settings as
    // `corepost run` resolves them (TLS certificates, SASL back end, ...).
    if report.is_ok() {
        for service in config
            .services()
            .filter(|s| crate::runtime::listen::is_smtpd_inet(s.service))
        {
            match crate::smtpd::settings::SmtpdSettings::from_service(&service) {
                Ok(settings) => {
                    signers.extend(settings.dkim.clone());
                    if let Some(p) = &settings.tls.problem {
                        report.warnings.push(format!(
                            "service {}: TLS is not available: {p}",
                            service.service.id()
                        ));
                    }
                    // Mail for a filter transport master.cf lacks would
                    // wait in the queue ("mail transport unavailable").
                    if let Some(filter) = &settings.content_filter
                        && !config.services().any(|s| {
                            s.service.name == filter.transport
                                && s.service.kind == corepost_config::mastercf::ServiceType::Unix
                        })
                    {
                        report.warnings.push(format!(
                            "service {}: content_filter transport \"{}\" is not a unix service in master.cf; filtered mail will stay queued",
                            service.service.id(),
                            filter.transport
                        ));
                    }
                }
                Err(e) => report
                    .errors
                    .push(format!("service {}: {e}", service.service.id())),
            }
        }
    }
    // The delivery agents' settings as `corepost run` resolves them: a client TLS or SASL
    // setting corepost cannot honour is an error here, never "valid".
    if report.is_ok() {
        match crate::qmgr::QmgrSettings::from_config(&config) {
            Ok(settings) => {
                // Egress sources whose addresses this host does not have: every connection
                // from them would be deferred (the bind fails).
                if let Some(file) = &settings.egress.egress {
                    report.errors.extend(file.unbindable());
                }
                report.warnings.extend(unbindable_bind_addresses(&settings));
            }
            Err(e) => report.errors.push(e),
        }
    }
    if report.is_ok() {
        match crate::pickup::PickupSettings::from_config(&config) {
            Ok(pickup) => signers.extend(pickup.and_then(|p| p.dkim)),
            Err(e) => report.errors.push(format!("service pickup: {e}")),
        }
    }
    // The log and event outputs as `corepost run` opens them.
    if report.is_ok()
        && let Err(e) = crate::events::EventSettings::from_config(&config)
            .and(crate::log::LogSettings::from_config(&config))
    {
        report.errors.push(e);
    }
    if report.is_ok()
        && let Err(e) = crate::bounce_class::Rules::from_config(&config)
    {
        report.errors.push(e);
    }
    let (errors, warnings) = crate::dkim::check(&config, &signers);
    report.errors.extend(errors);
    report.warnings.extend(warnings);
    for w in &report.warnings {
        warning(w);
    }
    for e in &report.errors {
        eprintln!("corepost: error: {e}");
    }
    if report.is_ok() {
        println!(
            "corepost: configuration in {} is valid ({} warning{})",
            dir.display(),
            report.warnings.len(),
            if report.warnings.len() == 1 { "" } else { "s" }
        );
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "corepost: configuration in {} has {} error{}",
            dir.display(),
            report.errors.len(),
            if report.errors.len() == 1 { "" } else { "s" }
        );
        ExitCode::FAILURE
    }
}

/// Transports whose `smtp_bind_address`/`smtp_bind_address6` (`lmtp_*`) this host cannot
/// bind: Postfix logs a warning per connection and sends from the default address, or defers
/// with `*_bind_address_enforce = yes`; corepost does the same, and says so here first.
fn unbindable_bind_addresses(settings: &crate::qmgr::QmgrSettings) -> Vec<String> {
    let mut warnings = Vec::new();
    let mut names: Vec<&String> = settings.transports.keys().collect();
    names.sort();
    for name in names {
        let crate::qmgr::TransportKind::Smtp(client) = &settings.transports[name].kind else {
            continue;
        };
        for addr in [client.bind_address, client.bind_address6]
            .into_iter()
            .flatten()
        {
            if let Err(e) = std::net::TcpListener::bind((addr, 0)) {
                let consequence = if client.bind_address_enforce {
                    "its mail will be deferred"
                } else {
                    "its mail will leave from the default address"
                };
                warnings.push(format!(
                    "transport {name}: cannot bind source address {addr}: {}; {consequence}",
                    super::os_error_text(&e)
                ));
            }
        }
    }
    warnings
}
