//! `corepost passwd`: manage the SMTP AUTH password file
//! (`corepost_sasl_password_file`, used with `smtpd_sasl_type = corepost`).
//!
//! `corepost passwd add alice` reads the password from the first line of
//! standard input (never from the command line, where `ps` would show it)
//! and stores an argon2id hash; `remove` deletes a user; `list` prints the
//! user names. The running daemon picks changes up at the next AUTH.
//!
//! Run as root, the file is written root-owned with mode 0640 and the
//! group of `mail_owner`, the account the daemon reads it as after giving
//! root up (it can read it, not change it); otherwise it is the invoking
//! user's, mode 0600.

use super::fatal;
use crate::smtpd::sasl::password_file::{parse, remove_user, set_user};
use clap::{Args, Subcommand};
use corepost_config::{Config, default_config_dir};
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct PasswdArgs {
    /// Configuration directory; -C is the same (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', short_alias = 'C', value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Password file (default: corepost_sasl_password_file of main.cf).
    #[arg(short = 'f', value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// Add a user or change their password (read from standard input).
    Add { user: String },
    /// Remove a user.
    Remove { user: String },
    /// List the users.
    List,
}

/// Who must read the file: as root, the daemon's account (it gives root
/// up for `mail_owner` and must read the file at every AUTH); `None` when
/// we are not root (the file stays ours, 0600) or the daemon stays root.
fn daemon_reader(config: Option<&Config>) -> Result<Option<(String, u32)>, String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    let Some(config) = config else {
        return Ok(None);
    };
    let ((name, uid, gid), _) = crate::runtime::listen::mail_owner_account(config)?;
    Ok((uid != 0).then_some((name, gid)))
}

pub fn run(args: PasswdArgs) -> ExitCode {
    let dir = args.config_dir.unwrap_or_else(default_config_dir);
    // With -f the configuration is only needed to know mail_owner.
    let config = match Config::load(&dir) {
        Ok(c) => Some(c),
        Err(_) if args.file.is_some() => None,
        Err(e) => return fatal(e),
    };
    let path = match (args.file, &config) {
        (Some(f), _) => f,
        (None, Some(config)) => match config.get("corepost_sasl_password_file") {
            Ok(p) if !p.trim().is_empty() => PathBuf::from(p.trim()),
            Ok(_) => return fatal("corepost_sasl_password_file is empty"),
            Err(e) => return fatal(e),
        },
        (None, None) => return fatal("no configuration"),
    };
    let reader = daemon_reader(config.as_ref()).unwrap_or_else(|e| {
        super::warning(format!(
            "{e}; {} stays readable by root only",
            path.display()
        ));
        None
    });
    let group = reader.as_ref().map(|(_, gid)| *gid);
    let readable_by = match &reader {
        Some((name, gid)) => format!(" (mode 0640, group {gid}: readable by mail_owner {name})"),
        None => String::new(),
    };
    match args.action {
        Action::Add { user } => {
            let mut line = String::new();
            if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
                return fatal(format!("cannot read the password: {e}"));
            }
            let password = line.trim_end_matches(['\r', '\n']);
            if password.is_empty() {
                return fatal("empty password (give it on standard input)");
            }
            match set_user(&path, &user, password, group) {
                Ok(existed) => {
                    println!(
                        "corepost: {} {user} in {}{readable_by}",
                        if existed { "changed" } else { "added" },
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(e),
            }
        }
        Action::Remove { user } => match remove_user(&path, &user, group) {
            Ok(true) => {
                println!(
                    "corepost: removed {user} from {}{readable_by}",
                    path.display()
                );
                ExitCode::SUCCESS
            }
            Ok(false) => fatal(format!("{user}: no such user in {}", path.display())),
            Err(e) => fatal(e),
        },
        Action::List => {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => return fatal(format!("cannot read {}: {e}", path.display())),
            };
            match parse(&text, &path) {
                Ok(users) => {
                    for (user, _) in users {
                        println!("{user}");
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(e),
            }
        }
    }
}
