//! Where the log goes and how each line is shaped for it.
//!
//! Postfix logs to syslog unless `maillog_file` is set. corepost's rule,
//! which keeps `corepost run` in a terminal or a test writing standard
//! error as it always did:
//!
//! - `maillog_file` set: that file (appended to; reopened by `corepost
//!   reload` and `corepost logrotate`, and when it was renamed away);
//! - otherwise `corepost_log_destination`: `syslog` (RFC 3164 datagrams
//!   to /dev/log, with Postfix's priorities: info, warning, err, crit for
//!   fatal/panic, and `syslog_facility`), `journal` (journald's native
//!   protocol with PRIORITY, SYSLOG_FACILITY, SYSLOG_IDENTIFIER), `stderr`,
//!   or `auto`: journald when standard error is the journal stream systemd
//!   gave us (`$JOURNAL_STREAM`), syslog when standard error is /dev/null
//!   or closed (a detached daemon, where Postfix would use syslog), else
//!   standard error.
//!
//! The daemon gives up root after opening `maillog_file`; to open it
//! again it must own it, so the file is handed to `mail_owner` at start and
//! `corepost logrotate` creates the new one with the old one's owner and
//! mode. (Postfix's postlogd keeps root instead: its file stays root's.)
//!
//! For tests, `$COREPOST_SYSLOG_SOCKET` and `$COREPOST_JOURNAL_SOCKET`
//! replace /dev/log and /run/systemd/journal/socket.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

const SYSLOG_SOCKET: &str = "/dev/log";
const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// What the log settings of main.cf say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub maillog_file: String,
    pub prefixes: Vec<String>,
    /// `corepost_log_destination`.
    pub destination: String,
    /// `syslog_facility`, as its syslog(3) number.
    pub facility: u8,
    /// `corepost_log_format = json`.
    pub json: bool,
}

impl LogSettings {
    /// A maillog_file (or standard error when empty), Postfix's text lines.
    pub fn file(maillog_file: &str, prefixes: &[String]) -> LogSettings {
        LogSettings {
            maillog_file: maillog_file.to_string(),
            prefixes: prefixes.to_vec(),
            destination: "stderr".into(),
            facility: 2,
            json: false,
        }
    }

    pub fn from_config(config: &corepost_config::Config) -> Result<LogSettings, String> {
        let get = |n: &str| config.get(n).map_err(|e| e.to_string());
        let facility = get("syslog_facility")?;
        Ok(LogSettings {
            maillog_file: get("maillog_file")?,
            prefixes: config
                .get_list("maillog_file_prefixes")
                .map_err(|e| e.to_string())?,
            destination: get("corepost_log_destination")?.to_ascii_lowercase(),
            facility: facility_code(&facility)
                .ok_or_else(|| format!("syslog_facility = {facility}: unknown facility"))?,
            json: get("corepost_log_format")?.eq_ignore_ascii_case("json"),
        })
    }
}

/// syslog(3)'s facility numbers for Postfix's names.
pub fn facility_code(name: &str) -> Option<u8> {
    let code = match name.to_ascii_lowercase().as_str() {
        "kern" => 0,
        "user" => 1,
        "mail" => 2,
        "daemon" => 3,
        "auth" => 4,
        "syslog" => 5,
        "lpr" => 6,
        "news" => 7,
        "uucp" => 8,
        "cron" => 9,
        "authpriv" => 10,
        "ftp" => 11,
        other => {
            let n: u8 = other.strip_prefix("local")?.parse().ok()?;
            return (n <= 7).then_some(16 + n);
        }
    };
    Some(code)
}

/// syslog(3)'s priority of a Postfix message: msg_syslog.c maps info,
/// warning, error, fatal and panic to LOG_INFO, LOG_WARNING, LOG_ERR,
/// LOG_CRIT and LOG_CRIT; the severity is the message's prefix.
pub fn severity(message: &str) -> (u8, &'static str) {
    if message.starts_with("warning: ") {
        (4, "warning")
    } else if message.starts_with("error: ") {
        (3, "error")
    } else if message.starts_with("fatal: ") {
        (2, "fatal")
    } else if message.starts_with("panic: ") {
        (2, "panic")
    } else {
        (6, "info")
    }
}

/// How [`crate::log::Log::line`] shapes a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// `Nov 24 07:30:00 host program[pid]: message`
    Postfix,
    /// One JSON object per line.
    Json,
    /// `<PRI>Nov 24 07:30:00 program[pid]: message`, one datagram each
    /// (journald's entries are made from the same line when written).
    Syslog,
}

/// An open destination.
#[derive(Debug)]
pub enum Target {
    Stderr,
    File(LogFile),
    Syslog(Datagrams),
    Journal(Datagrams),
}

#[derive(Debug)]
pub struct LogFile {
    file: File,
    path: PathBuf,
    /// Device and inode of what `path` named when opened.
    id: (u64, u64),
    /// When (in seconds) the path was last compared with the open file.
    checked: AtomicU64,
}

#[derive(Debug)]
pub struct Datagrams {
    socket: UnixDatagram,
    path: PathBuf,
    facility: u8,
}

impl Target {
    pub fn open(settings: &LogSettings) -> Result<Target, String> {
        let file = &settings.maillog_file;
        if !file.is_empty() {
            if file != "/dev/stderr" && !settings.prefixes.iter().any(|p| file.starts_with(p)) {
                return Err(format!(
                    "maillog_file {file} does not start with one of maillog_file_prefixes ({})",
                    settings.prefixes.join(", ")
                ));
            }
            return LogFile::open(PathBuf::from(file)).map(Target::File);
        }
        let destination = match settings.destination.as_str() {
            "auto" => auto_destination(),
            d => d,
        };
        let datagrams = |var: &str, default: &str| -> Result<Datagrams, String> {
            let path = std::env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
            Ok(Datagrams {
                socket: UnixDatagram::unbound().map_err(|e| format!("log socket: {e}"))?,
                path,
                facility: settings.facility,
            })
        };
        Ok(match destination {
            "syslog" => Target::Syslog(datagrams("COREPOST_SYSLOG_SOCKET", SYSLOG_SOCKET)?),
            "journal" => Target::Journal(datagrams("COREPOST_JOURNAL_SOCKET", JOURNAL_SOCKET)?),
            _ => Target::Stderr,
        })
    }

    pub fn style(&self, json: bool) -> Style {
        match self {
            Target::Syslog(_) | Target::Journal(_) => Style::Syslog,
            _ if json => Style::Json,
            _ => Style::Postfix,
        }
    }

    pub fn facility(&self) -> u8 {
        match self {
            Target::Syslog(d) | Target::Journal(d) => d.facility,
            _ => 2,
        }
    }

    /// Write whole lines (each ending in `\n`).
    pub fn write(&self, data: &[u8]) {
        match self {
            Target::Stderr => {
                let _ = std::io::stderr().lock().write_all(data);
            }
            Target::File(f) => {
                let _ = (&f.file).write_all(data);
            }
            Target::Syslog(d) => {
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    d.send(line);
                }
            }
            Target::Journal(d) => {
                for line in data.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    d.send(&journal_entry(line, d.facility));
                }
            }
        }
    }

    /// Whether the file was renamed or removed under us (an external
    /// logrotate): then the caller opens it again. `throttled`: checked at
    /// most once a second.
    pub fn moved(&self, throttled: bool) -> bool {
        let Target::File(f) = self else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if f.checked.swap(now, Ordering::Relaxed) == now && throttled {
            return false;
        }
        match std::fs::metadata(&f.path) {
            Ok(m) => (m.dev(), m.ino()) != f.id,
            Err(_) => true,
        }
    }
}

impl LogFile {
    /// Give the open file to the account the daemon is about to become,
    /// so that it can open it again after a rotation (Postfix's postlogd
    /// keeps root for that; corepost's cores do not).
    pub fn chown(&self, uid: u32, gid: u32) -> Result<(), String> {
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
            .map_err(|e| format!("maillog_file {}: chown: {e}", self.path.display()))
    }

    fn open(path: PathBuf) -> Result<LogFile, String> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("maillog_file {}: {e}", path.display()))?;
        let m = file
            .metadata()
            .map_err(|e| format!("maillog_file {}: {e}", path.display()))?;
        Ok(LogFile {
            file,
            path,
            id: (m.dev(), m.ino()),
            checked: AtomicU64::new(0),
        })
    }
}

impl Datagrams {
    /// As syslog(3): a lost datagram (no syslog daemon) is not an error
    /// anyone could report.
    fn send(&self, datagram: &[u8]) {
        let _ = self.socket.send_to(datagram, &self.path);
    }
}

/// systemd's `$JOURNAL_STREAM` is `device:inode` of the stream it connected
/// to our standard error; a daemon that redirected stderr must not trust it.
fn auto_destination() -> &'static str {
    // SAFETY: all-zero is a valid value of the plain C struct `stat`.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes only into `st`, which lives across the call.
    if unsafe { libc::fstat(2, &mut st) } != 0 {
        return "syslog";
    }
    if let Some(stream) = std::env::var_os("JOURNAL_STREAM") {
        let stream = stream.to_string_lossy().into_owned();
        if stream == format!("{}:{}", st.st_dev, st.st_ino) {
            return "journal";
        }
    }
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if is_char && st.st_rdev == libc::makedev(1, 3) {
        return "syslog";
    }
    "stderr"
}

/// journald's native entry for a `<PRI>stamp program[pid]: message` line.
fn journal_entry(line: &[u8], facility: u8) -> Vec<u8> {
    let line = String::from_utf8_lossy(line);
    let (priority, rest) = line
        .strip_prefix('<')
        .and_then(|l| l.split_once('>'))
        .and_then(|(p, rest)| Some((p.parse::<u8>().ok()? & 7, rest)))
        .unwrap_or((6, &line));
    // The 15-character stamp and its space.
    let rest = rest.get(16..).unwrap_or(rest);
    let (tag, message) = rest.split_once(": ").unwrap_or(("", rest));
    let (identifier, pid) = match tag.strip_suffix(']').and_then(|t| t.split_once('[')) {
        Some((name, pid)) => (name, pid),
        None => (tag, ""),
    };
    let mut entry = format!(
        "PRIORITY={priority}\nSYSLOG_FACILITY={facility}\nSYSLOG_IDENTIFIER={identifier}\n"
    );
    if !pid.is_empty() {
        entry.push_str(&format!("SYSLOG_PID={pid}\n"));
    }
    entry.push_str(&format!("MESSAGE={message}\n"));
    entry.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_facilities_and_priorities() {
        assert_eq!(facility_code("mail"), Some(2));
        assert_eq!(facility_code("LOCAL7"), Some(23));
        assert_eq!(facility_code("local8"), None);
        assert_eq!(facility_code("bogus"), None);
        assert_eq!(severity("warning: x").0, 4);
        assert_eq!(severity("fatal: x").0, 2);
        assert_eq!(severity("ABC: to=<a@b>").0, 6);
    }

    #[test]
    fn journal_fields_from_a_syslog_line() {
        let entry = journal_entry(b"<20>Nov  4 07:30:00 corepost/smtpd[12]: warning: x", 2);
        assert_eq!(
            String::from_utf8(entry).unwrap(),
            "PRIORITY=4\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=corepost/smtpd\nSYSLOG_PID=12\nMESSAGE=warning: x\n"
        );
    }
}
