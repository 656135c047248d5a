//! `corepost passwd`: manage the SMTP AUTH password file
//! (`corepost_sasl_password_file`, used with `smtpd_sasl_type = corepost`).
//!
//! `corepost passwd add alice` reads the password from the first line of
//! standard input (never from the command line, where `ps` would show it)
//! and stores an argon2id hash; `remove` deletes a user; `list` prints the
//! user names. The running daemon picks changes up at the next AUTH.

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

pub fn run(args: PasswdArgs) -> ExitCode {
    let path = match args.file {
        Some(f) => f,
        None => {
            let dir = args.config_dir.unwrap_or_else(default_config_dir);
            let config = match Config::load(&dir) {
                Ok(c) => c,
                Err(e) => return fatal(e),
            };
            match config.get("corepost_sasl_password_file") {
                Ok(p) if !p.trim().is_empty() => PathBuf::from(p.trim()),
                Ok(_) => return fatal("corepost_sasl_password_file is empty"),
                Err(e) => return fatal(e),
            }
        }
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
            match set_user(&path, &user, password) {
                Ok(existed) => {
                    println!(
                        "corepost: {} {user} in {}",
                        if existed { "changed" } else { "added" },
                        path.display()
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fatal(e),
            }
        }
        Action::Remove { user } => match remove_user(&path, &user) {
            Ok(true) => {
                println!("corepost: removed {user} from {}", path.display());
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
