//! `corepost aliases` — newaliases(1) / postalias(1).
//!
//! Postfix compiles aliases(5) files into indexed databases; corepost reads
//! the source file itself whenever the configuration is loaded (see
//! `config/src/tables/alias_file.rs`), so "compiling" is validating: every
//! file named (or, with none, every file-backed table in
//! `alias_database`) is parsed, errors are reported with file and line,
//! and a summary like newaliases' is printed. A running daemon is then
//! told to reload (SIGHUP), so the new aliases apply at once, as after
//! Postfix's newaliases.
//!
//! `-q name` looks an alias up the way the local agent does (postalias -q).

use super::fatal;
use clap::Args;
use corepost_config::tables::{AliasFileTable, TableList};
use corepost_config::{Config, default_config_dir};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct AliasesArgs {
    /// Configuration directory; -C is the same (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', short_alias = 'C', value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Print the value of this alias (from the files given, else from alias_maps).
    #[arg(short = 'q', value_name = "NAME")]
    query: Option<String>,
    /// Aliases files or tables (`/etc/aliases`, `hash:/etc/aliases`); default: $alias_database.
    files: Vec<String>,
}

pub fn run(args: AliasesArgs) -> ExitCode {
    let dir = args.config_dir.unwrap_or_else(default_config_dir);
    let config = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    let specs: Vec<String> = if args.files.is_empty() {
        let param = if args.query.is_some() {
            "alias_maps"
        } else {
            "alias_database"
        };
        match config.get(param) {
            Ok(v) => corepost_config::list::split_list(&v).unwrap_or_default(),
            Err(e) => return fatal(e),
        }
    } else {
        args.files
            .iter()
            .map(|f| {
                if f.contains(':') {
                    f.clone()
                } else {
                    format!("hash:{f}")
                }
            })
            .collect()
    };
    if let Some(name) = args.query {
        let list = match TableList::open_aliases(&specs.join(", ")) {
            Ok(l) => l,
            Err(e) => return fatal(e),
        };
        return match list.lookup(&name.to_lowercase()) {
            Ok(Some(v)) => {
                println!("{v}");
                ExitCode::SUCCESS
            }
            Ok(None) => ExitCode::FAILURE,
            Err(e) => fatal(e),
        };
    }
    let mut failed = false;
    for spec in &specs {
        let Some((kind, path)) = spec.split_once(':') else {
            eprintln!("corepost: error: bad alias table \"{spec}\"");
            failed = true;
            continue;
        };
        if !matches!(
            kind,
            "hash" | "texthash" | "lmdb" | "btree" | "dbm" | "sdbm" | "proxy"
        ) {
            // Not a file corepost could compile (inline:, regexp:, ...).
            continue;
        }
        let path = path.strip_prefix("hash:").unwrap_or(path);
        match AliasFileTable::open(spec, std::path::Path::new(path)) {
            Ok(table) => {
                let longest = table
                    .entries()
                    .map(|(k, v)| k.len() + v.len())
                    .max()
                    .unwrap_or(0);
                let total: usize = table.entries().map(|(k, v)| k.len() + v.len()).sum();
                println!(
                    "corepost/aliases: {path}: {} aliases, largest {longest} bytes, {total} bytes total",
                    table.len()
                );
            }
            Err(e) => {
                eprintln!("corepost: error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return ExitCode::FAILURE;
    }
    // Postfix's local(8) notices a rebuilt alias database by itself; the
    // daemon reads alias files when it loads its configuration, so a
    // running one is told to reload.
    if super::daemon::reload_if_running(&dir) {
        println!("corepost/aliases: the running mail system reloads its aliases");
    }
    ExitCode::SUCCESS
}
