//! The command line: `corepost <subcommand>`, parsed with clap.
//!
//! Each subcommand lives in its own module and returns an [`ExitCode`];
//! messages go to stderr as `corepost: fatal: ...` / `corepost: warning: ...`
//! (Postfix's `postconf: fatal: ...` form) so operators' log habits carry
//! over.

use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::process::ExitCode;

mod aliases;
mod check;
mod config;
mod daemon;
mod install;
mod install_docs;
mod logrotate;
mod passwd;
mod queue;
mod sendmail;
mod sendmail_bs;
mod start;

#[derive(Debug, Parser)]
#[command(
    name = "corepost",
    version,
    about = "corepost: a thread-per-core mail transfer agent with Postfix's model"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show or edit configuration parameters, like postconf(1).
    Config(config::ConfigArgs),
    /// Validate ("compile") aliases files, like newaliases/postalias; -q looks an alias up.
    Aliases(aliases::AliasesArgs),
    /// Validate main.cf, master.cf and every table they reference.
    Check(check::CheckArgs),
    /// Run the mail system in the foreground (for systemd and terminals).
    Run(daemon::DaemonArgs),
    /// Start the mail system in the background (output to maillog_file)
    /// and wait until it listens, like `postfix start`.
    Start(daemon::DaemonArgs),
    /// Stop the running mail system: no new connections, open sessions
    /// finish or get 421, the spool is flushed.
    Stop(daemon::DaemonArgs),
    /// Tell whether the mail system is running.
    Status(daemon::DaemonArgs),
    /// Re-read the configuration without dropping sessions.
    Reload(daemon::DaemonArgs),
    /// Set up this machine, like Postfix's post-install: /etc/corepost,
    /// the mail_owner account, the queue directory, the sendmail/mailq/
    /// newaliases links, manual pages, completions, the systemd unit.
    Install(install::InstallArgs),
    /// Rotate maillog_file (rename with maillog_file_rotate_suffix, reopen,
    /// compress with maillog_file_compressor), like `postfix logrotate`.
    Logrotate(daemon::DaemonArgs),
    /// Manage SMTP AUTH users (the corepost_sasl_password_file).
    Passwd(passwd::PasswdArgs),
    /// Inspect and steer the queue: list, show, flush, delete, hold,
    /// release, requeue, shape (postqueue, postsuper, qshape).
    Queue(queue::QueueArgs),
    /// Submit mail like sendmail(1): the message on standard input.
    #[command(disable_help_flag = true)]
    Sendmail {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// The privileged delivery helper `corepost run` starts (internal).
    #[command(hide = true)]
    DeliveryHelper(crate::delivery::helper::server::HelperArgs),
}

/// Run the command line `args` (including argv[0]).
pub fn main(args: Vec<OsString>) -> ExitCode {
    // The classic names, through links to the binary.
    let name = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let rest: Vec<OsString> = args.iter().skip(1).cloned().collect();
    match name.as_str() {
        "sendmail" => return sendmail::main(rest),
        "mailq" => {
            return sendmail::main([OsString::from("-bp")].into_iter().chain(rest).collect());
        }
        "newaliases" => return newaliases(rest),
        _ => {}
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Config(args) => config::run(args),
        Command::Aliases(args) => aliases::run(args),
        Command::Check(args) => check::run(args),
        Command::Run(args) => daemon::run(args),
        Command::Start(args) => start::start(args),
        Command::Stop(args) => daemon::stop(args),
        Command::Status(args) => daemon::status(args),
        Command::Reload(args) => daemon::reload(args),
        Command::Install(args) => install::run(args),
        Command::Logrotate(args) => logrotate::run(args),
        Command::Passwd(args) => passwd::run(args),
        Command::Queue(args) => queue::run(args),
        Command::Sendmail { args } => sendmail::main(args),
        Command::DeliveryHelper(args) => match crate::delivery::helper::server::run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fatal(e),
        },
    }
}

/// The command line definition, for manual pages and completions.
pub(crate) fn command() -> clap::Command {
    Cli::command()
}

/// `newaliases` and `sendmail -bi`: the `corepost aliases` subcommand of
/// the local delivery agent.
pub(crate) fn newaliases(args: Vec<OsString>) -> ExitCode {
    main(
        [OsString::from("corepost"), OsString::from("aliases")]
            .into_iter()
            .chain(args)
            .collect(),
    )
}

/// Whether the configuration directory was named (`-c DIR` or
/// `$COREPOST_CONFIG_DIR`, Postfix's `-c` and `$MAIL_CONFIG`) rather than
/// the built-in `/etc/corepost`.
pub(crate) fn config_dir_named(arg: Option<&std::path::Path>) -> bool {
    arg.is_some() || std::env::var_os("COREPOST_CONFIG_DIR").is_some_and(|d| !d.is_empty())
}

/// Postfix will not run without main.cf ("fatal: open DIR/main.cf: No such
/// file or directory"). corepost runs on built-in defaults only when no
/// directory was named; a named directory must exist and, when
/// `main_cf_required`, hold main.cf.
pub(crate) fn check_config_dir(
    dir: &std::path::Path,
    named: bool,
    main_cf_required: bool,
) -> Result<(), String> {
    if !named {
        return Ok(());
    }
    let main_cf = dir.join("main.cf");
    let target = if main_cf_required { &main_cf } else { dir };
    match std::fs::metadata(target) {
        Ok(_) => Ok(()),
        Err(e) => Err(format!("open {}: {}", main_cf.display(), os_error_text(&e))),
    }
}

/// An I/O error as strerror(3) says it, without Rust's "(os error N)".
fn os_error_text(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// Print `corepost: fatal: {message}` and return the failure exit code.
pub(crate) fn fatal(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("corepost: fatal: {message}");
    ExitCode::FAILURE
}

pub(crate) fn warning(message: impl std::fmt::Display) {
    eprintln!("corepost: warning: {message}");
}
