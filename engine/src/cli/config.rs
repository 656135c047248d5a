//! `corepost config`: postconf(1) for corepost.
//!
//! | flag | meaning |
//! |---|---|
//! | (none) | every parameter's effective value |
//! | `-n` | only parameters set in main.cf |
//! | `-d` | built-in defaults |
//! | `-x` | expand `$name` in the values shown |
//! | `-h` | values only, without `name = ` |
//! | `name ...` | only these parameters |
//! | `-e 'name = value' ...` | set parameters in main.cf, keeping comments and order |
//! | `-X name ...` | remove parameters from main.cf |
//! | `-M [service[/type] ...]` | master.cf entries |
//! | `-c DIR` | the configuration directory (default `$COREPOST_CONFIG_DIR`, else `/etc/corepost`) |

use super::{fatal, warning};
use clap::{ArgAction, Args};
use corepost_config::edit::{Edit, edit_main_cf, parse_assignment};
use corepost_config::mastercf::Service;
use corepost_config::unsupported;
use corepost_config::{Config, default_config_dir};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
#[command(disable_help_flag = true)]
pub struct ConfigArgs {
    /// Configuration directory (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Show only parameters set in main.cf.
    #[arg(short = 'n')]
    non_default: bool,
    /// Show built-in defaults instead of effective values.
    #[arg(short = 'd')]
    defaults: bool,
    /// Expand $name references in the values shown.
    #[arg(short = 'x')]
    expand: bool,
    /// Show values only, without "name = ".
    #[arg(short = 'h')]
    values_only: bool,
    /// Edit main.cf: the arguments are "name = value" settings.
    #[arg(short = 'e', conflicts_with_all = ["remove", "master", "defaults", "non_default"])]
    edit: bool,
    /// Edit main.cf: remove the named parameters.
    #[arg(short = 'X', conflicts_with_all = ["master", "defaults", "non_default"])]
    remove: bool,
    /// Show master.cf entries (all, or the named service[/type]s).
    #[arg(short = 'M')]
    master: bool,
    /// Print help.
    #[arg(long = "help", action = ArgAction::Help)]
    help: Option<bool>,
    /// Parameter names, assignments (with -e) or services (with -M).
    names: Vec<String>,
}

pub fn run(args: ConfigArgs) -> ExitCode {
    let dir = args.config_dir.clone().unwrap_or_else(default_config_dir);
    // Unlike postconf, an existing directory without main.cf is fine: -e
    // creates main.cf, and the listing shows the built-in defaults.
    if let Err(e) = super::check_config_dir(
        &dir,
        super::config_dir_named(args.config_dir.as_deref()),
        false,
    ) {
        return fatal(e);
    }
    if args.edit || args.remove {
        return edit(&dir, &args);
    }
    let config = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => return fatal(e),
    };
    let mut out = std::io::stdout().lock();
    let result = if args.master {
        show_master(&config, &args, &mut out)
    } else {
        show_params(&config, &args, &mut out)
    };
    match result {
        Ok(code) => code,
        // A closed pipe (`corepost config | head`) is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fatal(format!("write error: {e}")),
    }
}

fn show_params(
    config: &Config,
    args: &ConfigArgs,
    out: &mut impl Write,
) -> std::io::Result<ExitCode> {
    if !args.defaults {
        let unsupported = unsupported::findings(config);
        for w in config
            .warnings()
            .into_iter()
            .chain(unsupported.errors)
            .chain(unsupported.warnings)
        {
            warning(w);
        }
    }
    let used = config.referenced_names();
    // Unsupported Postfix parameters are listed too, with a marker.
    let is_used = |name: &str| {
        config.registry.contains(name)
            || used.contains(name)
            || unsupported_entry(config, name).is_some()
    };
    let names: Vec<String> = if !args.names.is_empty() {
        args.names.clone()
    } else if args.non_default {
        config
            .main
            .names()
            .into_iter()
            .filter(|n| is_used(n))
            .map(str::to_string)
            .collect()
    } else {
        let mut all: Vec<String> = config.registry.iter().map(|p| p.name.clone()).collect();
        all.extend(
            config
                .main
                .names()
                .into_iter()
                .filter(|n| !config.registry.contains(n) && is_used(n))
                .map(str::to_string),
        );
        all.sort();
        all
    };
    let mut failed = false;
    for name in &names {
        if let Some(entry) = unsupported_entry(config, name) {
            show_unsupported(config, args, name, entry, out)?;
            continue;
        }
        let raw = if args.defaults {
            config.default_raw(name)
        } else if args.non_default {
            config
                .main
                .get(name)
                .map(str::to_string)
                .or_else(|| config.raw(name))
        } else {
            config.raw(name)
        };
        let Some(raw) = raw else {
            warning(format!("{name}: unknown parameter"));
            continue;
        };
        let runtime_only = config.registry.get(name).is_some_and(|p| p.raw);
        let value = if args.expand && !runtime_only {
            let expanded = if args.defaults {
                config.expand(&raw).map_err(|e| e.to_string())
            } else {
                config.get(name).map_err(|e| e.to_string())
            };
            match expanded {
                Ok(v) => v,
                Err(e) => {
                    failed = true;
                    warning(e);
                    raw
                }
            }
        } else {
            raw
        };
        if args.values_only {
            writeln!(out, "{value}")?;
        } else if value.is_empty() {
            writeln!(out, "{name} =")?;
        } else {
            writeln!(out, "{name} = {value}")?;
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// The unsupported-parameter entry of `name`, unless the registry has it.
fn unsupported_entry(config: &Config, name: &str) -> Option<&'static unsupported::Unsupported> {
    (!config.registry.contains(name))
        .then(|| unsupported::lookup(name))
        .flatten()
}

/// An unsupported parameter: its main.cf value (Postfix's default with -d
/// or when main.cf does not set it) after a comment line saying so, so the
/// listing stays valid main.cf.
fn show_unsupported(
    config: &Config,
    args: &ConfigArgs,
    name: &str,
    entry: &unsupported::Unsupported,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let value = match config.main.get(name) {
        Some(v) if !args.defaults => v.to_string(),
        _ => entry.postfix_default.to_string(),
    };
    if args.values_only {
        return writeln!(out, "{value}");
    }
    writeln!(out, "{}", unsupported::marker(entry))?;
    if value.is_empty() {
        writeln!(out, "{name} =")
    } else {
        writeln!(out, "{name} = {value}")
    }
}

fn show_master(
    config: &Config,
    args: &ConfigArgs,
    out: &mut impl Write,
) -> std::io::Result<ExitCode> {
    let mut code = ExitCode::SUCCESS;
    let selected: Vec<&Service> = if args.names.is_empty() {
        config.master.services.iter().collect()
    } else {
        let mut v = Vec::new();
        for spec in &args.names {
            match config.master.find(spec) {
                Some(s) => v.push(s),
                None => {
                    warning(format!(
                        "{}: no such service: {spec}",
                        config.master.path.display()
                    ));
                    code = ExitCode::FAILURE;
                }
            }
        }
        v
    };
    for s in selected {
        writeln!(out, "{}", format_service(s))?;
    }
    Ok(code)
}

/// One master.cf entry on one line, columns aligned like postconf -M.
pub fn format_service(s: &Service) -> String {
    let mut line = format!("{:<10} {:<5}", s.name, s.kind.as_str());
    for column in &s.columns {
        line.push_str(&format!(" {column:<7}"));
    }
    line.push(' ');
    line.push_str(&s.command);
    for o in &s.overrides {
        if o.value.contains(char::is_whitespace) {
            line.push_str(&format!(" -o {{ {} = {} }}", o.name, o.value));
        } else {
            line.push_str(&format!(" -o {}={}", o.name, o.value));
        }
    }
    for a in &s.args {
        if a.contains(char::is_whitespace) {
            line.push_str(&format!(" {{ {a} }}"));
        } else {
            line.push(' ');
            line.push_str(a);
        }
    }
    line.trim_end().to_string()
}

fn edit(dir: &Path, args: &ConfigArgs) -> ExitCode {
    if args.names.is_empty() {
        return fatal(if args.edit {
            "-e needs at least one \"name = value\" argument"
        } else {
            "-X needs at least one parameter name"
        });
    }
    let mut edits = Vec::new();
    for arg in &args.names {
        if args.edit {
            match parse_assignment(arg) {
                Ok(e) => edits.push(e),
                Err(e) => return fatal(format!("-e {arg:?}: {e}")),
            }
        } else {
            edits.push(Edit::Remove { name: arg.clone() });
        }
    }
    let path = dir.join("main.cf");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return fatal(format!("cannot read {}: {e}", path.display())),
    };
    let new_text = edit_main_cf(&text, &edits);
    // Validate before replacing: never leave a main.cf we cannot parse.
    if let Err(e) = corepost_config::maincf::MainCf::parse(&new_text, &path) {
        return fatal(format!("refusing to write {}: {e}", path.display()));
    }
    if let Err(e) = write_atomically(&path, &new_text) {
        // A fresh machine: the configuration directory is made by the
        // install step, as Postfix's is by its post-install.
        let hint = if dir.is_dir() {
            String::new()
        } else {
            format!(" (`corepost install` creates {})", dir.display())
        };
        return fatal(format!("cannot write {}: {e}{hint}", path.display()));
    }
    ExitCode::SUCCESS
}

/// Write `dir/main.cf.tmp`, flush it, then rename it over main.cf, so a
/// crash leaves either the old or the new file, never half of one.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("cf.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        if let Ok(meta) = std::fs::metadata(path) {
            f.set_permissions(meta.permissions())?;
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
