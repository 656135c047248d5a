//! `corepost install`: Postfix's `post-install` for a fresh machine.
//!
//! Creates the configuration directory with a commented main.cf and the
//! full built-in master.cf (an existing file is never replaced), the
//! `mail_owner` account and group, the queue directory with its modes
//! (ARCHITECTURE.md, "Local submission and administration invariants"),
//! the binary in `$command_directory` and the `sendmail_path`,
//! `mailq_path` and `newaliases_path` links to it, the manual pages in
//! `$manpage_directory` and the shell completions, and the systemd unit
//! and logrotate snippet (contrib/). Every step is idempotent: running it
//! again changes nothing that is already in place.
//!
//! `--root DIR` installs under DIR instead of `/` (Postfix's
//! `install_root`, a package's DESTDIR): paths written into files stay
//! those of the target system, no account is created and nothing outside
//! DIR is touched.

use super::fatal;
use clap::Args;
use corepost_config::Config;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Debug, Args)]
pub struct InstallArgs {
    /// Configuration directory (default: $COREPOST_CONFIG_DIR, else /etc/corepost).
    #[arg(short = 'c', value_name = "DIR")]
    config_dir: Option<PathBuf>,
    /// Install under DIR instead of / (like DESTDIR): no accounts are created.
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
}

/// The systemd unit and logrotate snippet, with /usr/sbin/corepost and
/// /var/log/corepost.log standing for the configured paths.
const UNIT: &str = include_str!("../../../contrib/systemd/corepost.service");
const LOGROTATE: &str = include_str!("../../../contrib/logrotate/corepost");
const UNIT_PATH: &str = "/etc/systemd/system/corepost.service";
const LOGROTATE_PATH: &str = "/etc/logrotate.d/corepost";

/// The main.cf a fresh install starts from.
pub const MAIN_CF: &str = include_str!("main.cf.template");

/// Where things go: the target system's paths and the root they are under.
struct Plan {
    root: PathBuf,
    config_dir: PathBuf,
    config: Config,
}

impl Plan {
    /// A target path under the install root.
    fn at(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn param(&self, name: &str) -> Result<String, String> {
        self.config.get(name).map_err(|e| e.to_string())
    }

    /// A parameter the install step decides for the daemon, so it must
    /// not come from who runs the install: main.cf's value, else the
    /// system default.
    fn system_param(&self, name: &str, system: &str) -> String {
        match self.config.main.get(name) {
            Some(_) => self.param(name).unwrap_or_else(|_| system.to_string()),
            None => system.to_string(),
        }
    }

    fn installing_on_this_system(&self) -> bool {
        self.root == Path::new("/")
    }
}

/// `corepost install`.
pub fn run(args: InstallArgs) -> ExitCode {
    let root = args.root.clone().unwrap_or_else(|| PathBuf::from("/"));
    if root == Path::new("/") && !corepost_config::host::is_root() {
        return fatal("corepost install must run as root (or with --root DIR)");
    }
    match install(&args, root) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(e),
    }
}

fn install(args: &InstallArgs, root: PathBuf) -> Result<(), String> {
    let config_dir = args
        .config_dir
        .clone()
        .unwrap_or_else(corepost_config::default_config_dir);
    let target_dir = root.join(config_dir.strip_prefix("/").unwrap_or(&config_dir));
    write_config_files(&target_dir)?;
    let config = Config::load(&target_dir).map_err(|e| e.to_string())?;
    let plan = Plan {
        root,
        config_dir,
        config,
    };
    let owner = plan.system_param("mail_owner", "corepost");
    create_account(&plan, &owner)?;
    create_queue_directory(&plan, &owner)?;
    let binary = install_binary(&plan)?;
    for name in ["sendmail_path", "mailq_path", "newaliases_path"] {
        link(&plan, &plan.param(name)?, &binary)?;
    }
    super::install_docs::man_pages(&plan.at(plan.param("manpage_directory")?))?;
    super::install_docs::completions(&plan.root)?;
    install_service_files(&plan, &binary)?;
    println!(
        "corepost: install: done; start the mail system with `corepost start`, or `systemctl daemon-reload && systemctl enable --now corepost`"
    );
    Ok(())
}

fn created(path: &Path) {
    println!("corepost: install: created {}", path.display());
}

fn kept(path: &Path) {
    println!("corepost: install: kept the existing {}", path.display());
}

/// A file written only where there is none yet (the administrator's
/// edits are never replaced). Returns whether it was written.
fn write_new(path: &Path, text: &str, mode: u32) -> Result<bool, String> {
    if std::fs::symlink_metadata(path).is_ok() {
        kept(path);
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        create_dirs(parent)?;
    }
    let tmp = path.with_extension("corepost-install.tmp");
    std::fs::write(&tmp, text)
        .and_then(|()| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode)))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    created(path);
    Ok(true)
}

fn create_dirs(dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))
}

/// main.cf (commented) and master.cf (the built-in one, in full).
fn write_config_files(dir: &Path) -> Result<(), String> {
    create_dirs(dir)?;
    write_new(&dir.join("main.cf"), MAIN_CF, 0o644)?;
    let builtin = corepost_config::BUILTIN_MASTER_CF
        .split_once('\n')
        .map_or("", |(_, rest)| rest);
    let master = format!(
        "# corepost master.cf, written by `corepost install`: the built-in services.\n# Postfix's format (master(5)); `corepost config -M` shows the entries.\n# The first line is the SMTP server: port 2525 on inet_interfaces\n# (loopback-only unless main.cf says otherwise); for port 25, name it `smtp`.\n{builtin}"
    );
    write_new(&dir.join("master.cf"), &master, 0o644)?;
    Ok(())
}

/// The `mail_owner` account and its group, system accounts without a
/// login, as Postfix's packages create `postfix`. Only on this system.
fn create_account(plan: &Plan, owner: &str) -> Result<(), String> {
    if !plan.installing_on_this_system() {
        println!(
            "corepost: install: not creating the account {owner} under --root; the target system needs it"
        );
        return Ok(());
    }
    // An existing account keeps its group (nobody's is nogroup).
    if run_quiet("getent", &["passwd", owner]) {
        println!("corepost: install: kept the existing account {owner}");
        return Ok(());
    }
    if !run_quiet("getent", &["group", owner]) {
        run_checked("groupadd", &["--system", owner])?;
        println!("corepost: install: created the group {owner}");
    }
    let home = plan.system_param(
        "queue_directory",
        corepost_config::host::SYSTEM_QUEUE_DIRECTORY,
    );
    run_checked(
        "useradd",
        &[
            "--system",
            "--gid",
            owner,
            "--home-dir",
            &home,
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--comment",
            "corepost mail system",
            owner,
        ],
    )?;
    println!("corepost: install: created the account {owner}");
    Ok(())
}

fn run_quiet(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run_checked(program: &str, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    ))
}

/// The queue directory 0755, its maildrop 3733 and `corrupt/` 0700, all
/// `mail_owner`'s, so `sendmail` works before the daemon first runs.
fn create_queue_directory(plan: &Plan, owner: &str) -> Result<(), String> {
    let queue = plan.at(plan.system_param(
        "queue_directory",
        corepost_config::host::SYSTEM_QUEUE_DIRECTORY,
    ));
    let existed = queue.is_dir();
    create_dirs(&queue)?;
    let failed = |e: std::io::Error| format!("queue directory {}: {e}", queue.display());
    std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(0o755)).map_err(failed)?;
    crate::pickup::maildrop::prepare(&queue).map_err(failed)?;
    if corepost_config::host::is_root() {
        let ((name, uid, gid), warning) = crate::runtime::listen::mail_owner_account(&plan.config)?;
        if let Some(w) = warning.filter(|_| name != owner) {
            println!("corepost: install: {w}");
        }
        crate::runtime::listen::hand_queue_directory(&queue, uid, gid).map_err(failed)?;
    }
    if existed {
        println!(
            "corepost: install: checked the modes of {}",
            queue.display()
        );
    } else {
        created(&queue);
    }
    Ok(())
}

/// This binary as `$command_directory/corepost`; the target system's path
/// of it.
fn install_binary(plan: &Plan) -> Result<PathBuf, String> {
    let target = PathBuf::from(plan.param("command_directory")?).join("corepost");
    let at = plan.at(&target);
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    if same_file(&exe, &at) {
        println!("corepost: install: {} is this program", at.display());
        return Ok(target);
    }
    if let Some(parent) = at.parent() {
        create_dirs(parent)?;
    }
    let tmp = at.with_extension("corepost-install.tmp");
    std::fs::copy(&exe, &tmp)
        .and_then(|_| std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)))
        .and_then(|()| std::fs::rename(&tmp, &at))
        .map_err(|e| format!("cannot install {}: {e}", at.display()))?;
    println!("corepost: install: installed {}", at.display());
    Ok(target)
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// `path` → `binary`, the classic names (`sendmail`, `mailq`,
/// `newaliases`) that the binary answers to by argv[0]. Another mail
/// system's program there is left alone, with a warning.
fn link(plan: &Plan, path: &str, binary: &Path) -> Result<(), String> {
    let at = plan.at(path);
    match std::fs::read_link(&at) {
        Ok(to) if to == binary => {
            kept(&at);
            return Ok(());
        }
        _ if std::fs::symlink_metadata(&at).is_ok() => {
            super::warning(format!(
                "{} exists and is not a link to {}: left alone (remove it to use corepost's)",
                at.display(),
                binary.display()
            ));
            return Ok(());
        }
        _ => {}
    }
    if let Some(parent) = at.parent() {
        create_dirs(parent)?;
    }
    std::os::unix::fs::symlink(binary, &at)
        .map_err(|e| format!("cannot link {} to {}: {e}", at.display(), binary.display()))?;
    created(&at);
    Ok(())
}

/// The systemd unit and the logrotate snippet, with this installation's
/// paths.
fn install_service_files(plan: &Plan, binary: &Path) -> Result<(), String> {
    let binary = binary.display().to_string();
    let mut unit = UNIT.replace("/usr/sbin/corepost", &binary);
    if plan.config_dir != Path::new("/etc/corepost") {
        unit = unit.replace(
            "[Service]\n",
            &format!(
                "[Service]\nEnvironment=COREPOST_CONFIG_DIR={}\n",
                plan.config_dir.display()
            ),
        );
    }
    write_new(&plan.at(UNIT_PATH), &unit, 0o644)?;
    let log = plan.param("maillog_file")?;
    if log.is_empty() || log.starts_with("/dev/") {
        println!(
            "corepost: install: maillog_file is {log:?}: no logrotate snippet (nothing to rotate)"
        );
        return Ok(());
    }
    let snippet = LOGROTATE
        .replace("/var/log/corepost.log", &log)
        .replace("/usr/sbin/corepost", &binary);
    write_new(&plan.at(LOGROTATE_PATH), &snippet, 0o644)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_main_cf_template_parses_and_sets_only_the_log() {
        let main =
            corepost_config::maincf::MainCf::parse(MAIN_CF, Path::new("main.cf")).expect("parses");
        let set: Vec<&str> = main.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(set, vec!["maillog_file"]);
    }

    #[test]
    fn the_service_files_name_the_installed_paths() {
        assert!(UNIT.contains("ExecStart=/usr/sbin/corepost run"));
        assert!(UNIT.contains("Type=notify"));
        assert!(UNIT.contains("LimitMEMLOCK="));
        assert!(LOGROTATE.contains("/var/log/corepost.log"));
        assert!(MAIN_CF.contains("maillog_file = /var/log/corepost.log"));
    }
}
