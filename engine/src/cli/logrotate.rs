//! `corepost logrotate`: Postfix 3.4's `postfix logrotate` (postfix-script).
//! The file is renamed to `maillog_file.$(date +$maillog_file_rotate_suffix)`,
//! the running daemon opens `maillog_file` again (over the control socket;
//! SIGHUP, a reload, when that cannot be reached, as Postfix does), and a
//! second later the old file is compressed with `maillog_file_compressor`.
//! `corepost_event_log_file`, when set, is rotated the same way.

use super::daemon::{DaemonArgs, running_pid, signal};
use super::fatal;
use corepost_config::Config;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(args: DaemonArgs) -> ExitCode {
    if let Err(e) = args.check_dir() {
        return fatal(e);
    }
    match rotate(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fatal(e),
    }
}

fn rotate(args: &DaemonArgs) -> Result<(), String> {
    let config = Config::load(&args.dir()).map_err(|e| e.to_string())?;
    let mut values = Vec::new();
    for name in [
        "maillog_file",
        "maillog_file_compressor",
        "maillog_file_rotate_suffix",
    ] {
        let value = config.get(name).map_err(|e| e.to_string())?;
        if value.is_empty() {
            return Err(format!(
                "empty '{name}' parameter value - logfile rotation failed"
            ));
        }
        values.push(value);
    }
    let [file, compressor, suffix] = <[String; 3]>::try_from(values).map_err(|_| "internal")?;
    if file.starts_with("/dev/") {
        return Err(format!("not rotating '{file}'"));
    }
    let events = config
        .get("corepost_event_log_file")
        .map_err(|e| e.to_string())?;
    let suffix = strftime_now(&suffix).ok_or_else(|| {
        format!("logfile '{file}' rotation failed: bad maillog_file_rotate_suffix")
    })?;
    let failed = |e: String| format!("logfile '{file}' rotation failed: {e}");
    let mut rotated = vec![rename(&file, &suffix).map_err(failed)?];
    if !events.is_empty() && !events.starts_with("/dev/") && Path::new(&events).exists() {
        rotated.push(rename(&events, &suffix).map_err(failed)?);
    }
    reopen(args).map_err(failed)?;
    std::thread::sleep(Duration::from_secs(1));
    for old in &rotated {
        compress(&compressor, old).map_err(failed)?;
    }
    Ok(())
}

/// Rename `file`, and put an empty one with its owner and mode in its
/// place (logrotate's `create`): the daemon, no longer root, reopens it.
fn rename(file: &str, suffix: &str) -> Result<String, String> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let to = format!("{file}.{suffix}");
    // mv(1)'s words, which Postfix's message quotes.
    let old = std::fs::metadata(file)
        .map_err(|e| format!("mv: cannot stat '{file}': {}", super::os_error_text(&e)))?;
    std::fs::rename(file, &to).map_err(|e| {
        format!(
            "mv: cannot move '{file}' to '{to}': {}",
            super::os_error_text(&e)
        )
    })?;
    let mode = old.permissions().mode() & 0o777;
    let created = std::fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(mode)
        .open(file);
    if let Ok(new) = created {
        // As another user than root these may fail: then the file is
        // ours, as the daemon's would be.
        let _ = std::os::unix::fs::fchown(&new, Some(old.uid()), Some(old.gid()));
        let _ = new.set_permissions(std::fs::Permissions::from_mode(mode));
    }
    Ok(to)
}

/// Tell a running daemon to open its log files again; nothing to do when
/// none runs.
fn reopen(args: &DaemonArgs) -> Result<(), String> {
    let Some(pid) = running_pid(args)? else {
        return Ok(());
    };
    let asked = Config::load(&args.dir())
        .map_err(|e| e.to_string())
        .and_then(|c| crate::control::socket_path(&c))
        .and_then(|p| crate::control::request(&p, "logrotate").map_err(|e| format!("{e:?}")));
    match asked {
        Ok(_) => Ok(()),
        Err(_) if signal(pid, libc::SIGHUP) => Ok(()),
        Err(e) => Err(format!("cannot signal pid {pid}: {e}")),
    }
}

fn compress(compressor: &str, file: &str) -> Result<(), String> {
    let status = std::process::Command::new(compressor)
        .arg(file)
        .status()
        .map_err(|e| format!("{compressor}: {}", super::os_error_text(&e)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{compressor} {file}: {status}"))
    }
}

/// date(1)'s `+FORMAT` for now, in local time.
fn strftime_now(format: &str) -> Option<String> {
    let format = std::ffi::CString::new(format).ok()?;
    // SAFETY: time/localtime_r/strftime get valid pointers: `now` and `tm`
    // live across the calls, `buf` has the length passed, and `format` is
    // NUL-terminated.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&now, &mut tm).is_null() {
            return None;
        }
        let mut buf = [0u8; 256];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm);
        (n > 0).then(|| String::from_utf8_lossy(&buf[..n]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn postfix_default_suffix() {
        let s = super::strftime_now("%Y%m%d-%H%M%S").unwrap();
        assert_eq!(s.len(), 15, "{s}");
        assert_eq!(&s[8..9], "-");
    }
}
