//! `corepost queue` — postqueue, postsuper and qshape in one command, and
//! `mailq` (the binary invoked by that name, or `sendmail -bp`).
//!
//! Every action goes through the running daemon's control socket; `list`,
//! `show` and `shape` also work on a stopped daemon by reading the spool
//! read-only (`corepost_spool::snapshot`).

use super::fatal;
use crate::control::{self, ClientError, format};
use clap::{Args, Parser, Subcommand};
use corepost_config::{Config, default_config_dir};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct QueueArgs {
    /// Configuration directory; -C is the same (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', short_alias = 'C', value_name = "DIR", global = true)]
    config_dir: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, Subcommand)]
enum Action {
    /// List the queue in mailq format (`*` active, `!` on hold), the
    /// maildrop included.
    List {
        /// One JSON object per message and line, as Postfix's `postqueue -j`.
        #[arg(long, short = 'j')]
        json: bool,
    },
    /// Show a message's envelope and content.
    Show { id: String },
    /// Retry deferred mail now, or only mail for one destination domain.
    Flush { domain: Option<String> },
    /// Delete messages for good: IDs, or ALL, optionally only `deferred` ones.
    Delete {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Put messages on hold: IDs or ALL.
    Hold {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Release held messages: IDs or ALL.
    Release {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Make messages due for delivery now: IDs or ALL.
    Requeue {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Recipients per destination domain by message age (qshape).
    Shape,
}

#[derive(Debug, Parser)]
#[command(name = "corepost queue")]
struct Standalone {
    #[command(flatten)]
    args: QueueArgs,
}

/// Run `queue` with these arguments (for `mailq` and `sendmail -bp/-q`).
pub fn main_with(args: Vec<String>) -> ExitCode {
    let mut argv = vec!["corepost queue".to_string()];
    // Postfix-style `-c DIR` after the action is accepted too.
    argv.extend(args);
    match Standalone::try_parse_from(argv) {
        Ok(s) => run(s.args),
        Err(e) => {
            let _ = e.print();
            ExitCode::from(64)
        }
    }
}

/// `corepost queue ...`.
pub fn run(args: QueueArgs) -> ExitCode {
    let dir = args.config_dir.clone().unwrap_or_else(default_config_dir);
    let config = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    let socket = match control::socket_path(&config) {
        Ok(p) => p,
        Err(e) => return fatal(e),
    };
    let line = match &args.action {
        Action::List { json: false } => "list".to_string(),
        Action::List { json: true } => "list json".to_string(),
        Action::Show { id } => format!("show {id}"),
        Action::Flush { domain } => format!("flush {}", domain.as_deref().unwrap_or("")),
        Action::Delete { ids } => format!("delete {}", ids.join(" ")),
        Action::Hold { ids } => format!("hold {}", ids.join(" ")),
        Action::Release { ids } => format!("release {}", ids.join(" ")),
        Action::Requeue { ids } => format!("requeue {}", ids.join(" ")),
        Action::Shape => "shape".to_string(),
    };
    let mut answer = control::request(&socket, line.trim());
    // Other users list and flush through the public socket, as far as
    // authorized_mailq_users / authorized_flush_users let them.
    if let Err(ClientError::Denied(_)) = &answer
        && control::public::Access::of(line.trim()).is_some()
    {
        answer = control::request(&control::public::socket_path(&socket), line.trim());
    }
    match answer {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(ClientError::Refused(e)) => fatal(e),
        Err(ClientError::Io(e)) | Err(ClientError::Denied(e)) => fatal(e),
        Err(ClientError::NotRunning) => offline(&config, &args.action),
    }
}

/// The daemon is down: read the spool where that is safe.
fn offline(config: &Config, action: &Action) -> ExitCode {
    let queue_dir = match config.get("queue_directory") {
        Ok(q) => PathBuf::from(q),
        Err(e) => return fatal(e),
    };
    // Only root and the queue's owner (mail_owner) can read the spool;
    // other users can only ask the daemon, as with Postfix's postqueue.
    if matches!(action, Action::List { .. }) && !may_read_queue(&queue_dir) {
        eprintln!("corepost: fatal: Queue report unavailable - mail system is down");
        return ExitCode::from(69);
    }
    let now = corepost_spool::queue_id::now_micros();
    match action {
        Action::List { .. } | Action::Shape => match control::offline_items(&queue_dir) {
            Ok(items) => {
                match action {
                    Action::List { json: true } => print!("{}", format::json(&items)),
                    Action::List { json: false } => print!("{}", format::mailq(&items)),
                    _ => print!("{}", format::shape(&items, now)),
                }
                ExitCode::SUCCESS
            }
            Err(e) => fatal(e),
        },
        Action::Show { id } => {
            let Ok(qid) = id.parse() else {
                return fatal(format!("bad queue id: {id}"));
            };
            match control::offline_show(&queue_dir, qid) {
                Ok(Some(text)) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Ok(None) => fatal(format!("{id}: no such message in the queue")),
                Err(e) => fatal(e),
            }
        }
        _ => fatal("the mail system is not running; this action needs it"),
    }
}

/// Whether this process may read the queue directly: root, or the owner
/// of the queue directory (a missing one holds no queue to read).
fn may_read_queue(queue_dir: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    me == 0 || std::fs::metadata(queue_dir).map_or(true, |m| m.uid() == me)
}
