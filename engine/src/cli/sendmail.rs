//! `corepost sendmail`, also run when the binary is invoked as `sendmail`:
//! Postfix's sendmail(1) command line. It reads a message from standard
//! input and leaves it in the maildrop (see `pickup::maildrop`), so it
//! works whether or not the daemon runs; `-bp` lists the queue, `-bi`
//! rebuilds the aliases and `-q` flushes the queue.
//!
//! Options are parsed the way Postfix's getopt string does, so bundled
//! flags (`-ti`), attached and detached arguments (`-fuser`, `-f user`)
//! and the legacy `-o` forms (`-oi`, `-oem`, `-odb`) all work; options
//! that only mattered to Berkeley sendmail are accepted and ignored.
//! Exit codes are sysexits(3).

use crate::pickup::headers;
use crate::pickup::maildrop::{self, Submission};
use corepost_config::{Config, default_config_dir};
use std::ffi::OsString;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// sysexits(3).
pub const EX_USAGE: u8 = 64;
pub const EX_DATAERR: u8 = 65;
pub const EX_NOINPUT: u8 = 66;
pub const EX_UNAVAILABLE: u8 = 69;
pub const EX_TEMPFAIL: u8 = 75;
pub const EX_CONFIG: u8 = 78;

/// Options that take an argument (Postfix's getopt string).
const WITH_ARG: &str = "ABCFLNORVXbefhopr";
/// Flags accepted and ignored (Berkeley sendmail compatibility).
const IGNORED: &str = "cGIimnUx";

pub(super) fn fail(code: u8, message: impl std::fmt::Display) -> ExitCode {
    eprintln!("sendmail: fatal: {message}");
    ExitCode::from(code)
}

/// What the command line asked for.
#[derive(Debug, Default)]
struct Options {
    config_dir: Option<PathBuf>,
    sender: Option<String>,
    fullname: Option<String>,
    extract: bool,
    ignore_dots: bool,
    notify: u8,
    ret: Option<corepost_spool::Ret>,
    envid: Option<String>,
    mode: Option<String>,
    flush: bool,
    verbose: bool,
    recipients: Vec<String>,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            o.recipients.extend(args[i..].iter().cloned());
            break;
        }
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            o.recipients.push(arg.clone());
            continue;
        };
        for (at, flag) in flags.char_indices() {
            if flag == 'q' {
                // -q alone flushes; -q<interval> (daemon mode) is ignored.
                o.flush = flags.len() == at + 1;
                break;
            }
            if WITH_ARG.contains(flag) {
                let rest = &flags[at + flag.len_utf8()..];
                let value = if !rest.is_empty() {
                    rest.to_string()
                } else if i < args.len() {
                    i += 1;
                    args[i - 1].clone()
                } else {
                    return Err(format!("option requires an argument -- '{flag}'"));
                };
                apply(&mut o, flag, value)?;
                break;
            }
            match flag {
                't' => o.extract = true,
                'i' => o.ignore_dots = true,
                'v' => o.verbose = true,
                f if IGNORED.contains(f) => {}
                f => return Err(format!("invalid option -- '{f}'")),
            }
        }
    }
    Ok(o)
}

fn apply(o: &mut Options, flag: char, value: String) -> Result<(), String> {
    match flag {
        'C' => o.config_dir = Some(config_dir_of(&value)),
        'F' => o.fullname = Some(value),
        'f' | 'r' => o.sender = Some(value),
        'N' => o.notify = parse_notify(&value)?,
        'R' => {
            o.ret = Some(match value.to_ascii_lowercase().as_str() {
                "full" => corepost_spool::Ret::Full,
                "hdrs" => corepost_spool::Ret::Headers,
                _ => return Err(format!("-R option requires full or hdrs, not {value}")),
            })
        }
        'V' => o.envid = Some(value),
        'X' if value.starts_with('V') => o.envid = Some(value[1..].to_string()),
        'b' => o.mode = Some(value),
        // -oi is -i; other -o options (-oem, -odb, -oQ...) are ignored.
        'o' if value == "i" => o.ignore_dots = true,
        _ => {}
    }
    Ok(())
}

/// `-C` names a configuration directory or a main.cf inside one.
fn config_dir_of(value: &str) -> PathBuf {
    let p = PathBuf::from(value);
    if p.is_file() {
        p.parent().map_or(p.clone(), |d| d.to_path_buf())
    } else {
        p
    }
}

/// `-N success,delay,failure` or `never`.
fn parse_notify(value: &str) -> Result<u8, String> {
    use corepost_spool::record::notify;
    let mut bits = 0;
    for word in value.split(',') {
        bits |= match word.trim().to_ascii_lowercase().as_str() {
            "never" => notify::NEVER,
            "success" => notify::SUCCESS,
            "failure" => notify::FAILURE,
            "delay" => notify::DELAY,
            _ => return Err(format!("bad -N option value: {value}")),
        };
    }
    if bits & notify::NEVER != 0 && bits != notify::NEVER {
        return Err(format!("bad -N option value: {value}"));
    }
    Ok(bits)
}

/// The invoking user's login name and full name (the GECOS field's first
/// part).
fn invoking_user() -> (String, Option<String>) {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    passwd_entry(uid).unwrap_or_else(|| (format!("uid{uid}"), None))
}

fn passwd_entry(uid: u32) -> Option<(String, Option<String>)> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2)?.parse::<u32>().ok()? == uid).then(|| {
            let gecos = f
                .get(4)
                .and_then(|g| g.split(',').next())
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from);
            (f[0].to_string(), gecos)
        })
    })
}

/// Read the message: LF or CRLF lines, stored with CRLF; without `-i` a
/// line with a single dot ends it.
fn read_message(input: &mut dyn Read, ignore_dots: bool, limit: u64) -> Result<Vec<u8>, String> {
    let mut raw = Vec::new();
    input
        .take(limit.saturating_add(1))
        .read_to_end(&mut raw)
        .map_err(|e| format!("error reading input: {e}"))?;
    if raw.len() as u64 > limit {
        return Err("message file too big".into());
    }
    let mut out = Vec::with_capacity(raw.len() + raw.len() / 32);
    // A leading mbox "From " line is not part of the message.
    let skip = if raw.starts_with(b"From ") {
        raw.iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| p + 1)
    } else {
        0
    };
    for line in raw[skip..].split_inclusive(|&b| b == b'\n') {
        let bare = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        if !ignore_dots && bare == b"." {
            break;
        }
        out.extend_from_slice(bare);
        out.extend_from_slice(b"\r\n");
    }
    Ok(out)
}

/// Recipients from the header (`-t`): Resent-To/Cc/Bcc when there are
/// Resent- headers, else To/Cc/Bcc.
fn header_recipients(content: &[u8]) -> Vec<String> {
    let parsed = headers::parse(content);
    if parsed.fields.iter().any(|f| {
        ["resent-to", "resent-cc", "resent-bcc"]
            .iter()
            .any(|n| f.name.eq_ignore_ascii_case(n))
    }) {
        parsed.addresses(&["resent-to", "resent-cc", "resent-bcc"])
    } else {
        parsed.addresses(&["to", "cc", "bcc"])
    }
}

/// Run `sendmail args...` (`args` without argv[0]).
pub fn main(args: Vec<OsString>) -> ExitCode {
    let args: Vec<String> = args
        .into_iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            return fail(
                EX_USAGE,
                format!("{e}; usage: sendmail [options] [recipient...]"),
            );
        }
    };
    let dir = o.config_dir.clone().unwrap_or_else(default_config_dir);
    let dir_arg = dir.display().to_string();
    if o.flush {
        return super::queue::main_with(vec!["flush".into(), "-c".into(), dir_arg]);
    }
    match o.mode.as_deref() {
        None | Some("m") => {}
        Some("p") => return super::queue::main_with(vec!["list".into(), "-c".into(), dir_arg]),
        Some("i") => return super::newaliases(vec!["-c".into(), dir_arg.into()]),
        Some("s") => return super::sendmail_bs::run(&dir),
        Some(m) => return fail(EX_USAGE, format!("unsupported: -b{m}")),
    }
    let config = match Config::load(&dir) {
        Ok(c) => c,
        Err(e) => return fail(EX_CONFIG, e),
    };
    if let Some(refused) = submit_refusal(&config) {
        return refused;
    }
    // As Debian's Postfix: a myorigin file that cannot be read is fatal
    // here, not a submission pickup would have to set aside.
    if let Err(e) = config
        .get("myorigin")
        .map_err(|e| e.to_string())
        .and_then(|v| crate::rewrite::myorigin(&v))
    {
        return fail(EX_CONFIG, e);
    }
    let limit = config
        .get_size("message_size_limit")
        .ok()
        .filter(|l| *l > 0)
        .unwrap_or(u64::MAX);
    let content = match read_message(&mut std::io::stdin().lock(), o.ignore_dots, limit) {
        Ok(c) => c,
        Err(e) if e.contains("too big") => return fail(EX_DATAERR, e),
        Err(e) => return fail(EX_NOINPUT, e),
    };
    let mut recipients = o.recipients.clone();
    if o.extract {
        recipients.extend(header_recipients(&content));
    }
    if recipients.is_empty() {
        return fail(
            EX_USAGE,
            if o.extract {
                "No recipient addresses found in message header"
            } else {
                "Recipient addresses must be specified on the command line or via the -t option"
            },
        );
    }
    // Postfix's order for the full name: -F, $NAME, the password file
    // (the latter only for the user's own address).
    let (login, gecos) = invoking_user();
    let fullname = o
        .fullname
        .clone()
        .or_else(|| std::env::var("NAME").ok().filter(|n| !n.is_empty()))
        .or(if o.sender.is_none() { gecos } else { None });
    let sender = o.sender.clone().unwrap_or(login);
    if let Err((code, e)) = sender_refusal(&config, &sender) {
        return fail(code, e);
    }
    let submission = Submission {
        sender,
        fullname,
        ret: o.ret,
        envid: o.envid.clone(),
        notify: o.notify,
        recipients,
        content,
    };
    deposit(&config, &submission, o.verbose)
}

/// `authorized_submit_users`, checked before anything is read, as
/// Postfix's sendmail does (exit 75, "User name(uid) is not allowed to
/// submit mail"); pickup checks the file's owner again, since the maildrop
/// itself is open to every user.
pub fn submit_refusal(config: &Config) -> Option<ExitCode> {
    submit_refusal_uid(config)
        .err()
        .map(|(code, e)| fail(code, e))
}

fn submit_refusal_uid(config: &Config) -> Result<(), (u8, String)> {
    let list = config
        .get("authorized_submit_users")
        .map_err(|e| (EX_CONFIG, e.to_string()))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    corepost_config::users::may_submit(&list, uid).map_err(|e| (EX_TEMPFAIL, e))
}

/// `local_login_sender_maps` for this user and `sender`, before anything is
/// written (pickup checks the file again).
fn sender_refusal(config: &Config, sender: &str) -> Result<(), (u8, String)> {
    let logins = corepost_config::users::SenderLogins::from_params(&|n| config.get(n))
        .map_err(|e| (EX_CONFIG, e))?;
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    logins.check(uid, sender).map_err(|e| (EX_TEMPFAIL, e))
}

/// Why a submission could not be left in the maildrop: exit code and text.
type DepositError = (u8, String);

fn try_deposit(config: &Config, submission: &Submission) -> Result<PathBuf, DepositError> {
    let queue_dir = PathBuf::from(
        config
            .get("queue_directory")
            .map_err(|e| (EX_CONFIG, e.to_string()))?,
    );
    let dir = maildrop::dir(&queue_dir);
    if !dir.is_dir() {
        create_maildrop(config, &queue_dir)?;
    }
    submission.encode().map_err(|e| (EX_DATAERR, e))?;
    maildrop::deposit(&dir, submission).map_err(|e| {
        (
            EX_TEMPFAIL,
            format!("cannot write to the maildrop {}: {e}", dir.display()),
        )
    })
}

/// First use before the daemon ever ran: make the maildrop if we may, as
/// the daemon would make it. A personal spool (no system spool on this
/// host, no queue_directory in main.cf) is never created here: only the
/// user's own `corepost run` reads it, so a submission left there while
/// none ever ran would sit unread; the caller gets a temporary failure
/// instead, and nothing is lost. Root gives what it creates to
/// `mail_owner` (directories and modes as at daemon start), so the daemon
/// can read files deposited before it first ran.
fn create_maildrop(config: &Config, queue_dir: &std::path::Path) -> Result<(), DepositError> {
    let dir = maildrop::dir(queue_dir);
    let personal = config.main.get("queue_directory").is_none()
        && queue_dir != std::path::Path::new(corepost_config::host::SYSTEM_QUEUE_DIRECTORY);
    if personal && !queue_dir.is_dir() {
        return Err((
            EX_TEMPFAIL,
            format!(
                "the mail system is not installed: {} does not exist (run `corepost install` as root, or start `corepost run` first)",
                corepost_config::host::SYSTEM_QUEUE_DIRECTORY
            ),
        ));
    }
    let cannot = |e: String| {
        (
            EX_UNAVAILABLE,
            format!("cannot create the maildrop {}: {e}", dir.display()),
        )
    };
    let created = !queue_dir.exists();
    std::fs::create_dir_all(queue_dir)
        .and_then(|()| {
            // Others must reach the maildrop whatever our umask.
            use std::os::unix::fs::PermissionsExt;
            if !created {
                return Ok(());
            }
            std::fs::set_permissions(queue_dir, std::fs::Permissions::from_mode(0o755))
        })
        .and_then(|()| maildrop::prepare(queue_dir))
        .map_err(|e| cannot(e.to_string()))?;
    if corepost_config::host::is_root() {
        let ((_, uid, gid), _) =
            crate::runtime::listen::mail_owner_account(config).map_err(cannot)?;
        crate::runtime::listen::hand_queue_directory(queue_dir, uid, gid)
            .map_err(|e| cannot(e.to_string()))?;
    }
    Ok(())
}

/// Leave a submission in the maildrop of `config`'s queue directory.
pub fn deposit(config: &Config, submission: &Submission, verbose: bool) -> ExitCode {
    match try_deposit(config, submission) {
        Ok(path) => {
            if verbose {
                eprintln!(
                    "sendmail: queued as maildrop/{}",
                    path.file_name().unwrap_or_default().to_string_lossy()
                );
            }
            ExitCode::SUCCESS
        }
        Err((code, e)) => fail(code, e),
    }
}

/// As [`deposit`], for `-bs`: the error as text.
pub fn deposit_quiet(config: &Config, submission: &Submission) -> Result<(), String> {
    try_deposit(config, submission)
        .map(|_| ())
        .map_err(|(_, e)| e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_as_postfix_parses_them() {
        let o = parse(&args(
            "-ti -f alice -FAlice -oem -odb -N success,delay -R hdrs -V id1 bob carol",
        ))
        .unwrap();
        assert!(o.extract && o.ignore_dots);
        assert_eq!(o.sender.as_deref(), Some("alice"));
        assert_eq!(o.fullname.as_deref(), Some("Alice"));
        assert_eq!(o.notify, 10);
        assert_eq!(o.ret, Some(corepost_spool::Ret::Headers));
        assert_eq!(o.envid.as_deref(), Some("id1"));
        assert_eq!(o.recipients, vec!["bob", "carol"]);
        let o = parse(&args("-oi -r x@y -- -notaflag")).unwrap();
        assert!(o.ignore_dots && !o.extract);
        assert_eq!(o.sender.as_deref(), Some("x@y"));
        assert_eq!(o.recipients, vec!["-notaflag"]);
        assert!(parse(&args("-q")).unwrap().flush);
        assert!(!parse(&args("-q30m")).unwrap().flush);
        assert_eq!(parse(&args("-bp")).unwrap().mode.as_deref(), Some("p"));
        assert!(parse(&args("-Z")).is_err());
        assert!(parse(&args("-f")).is_err());
        assert!(parse(&args("-N sometimes x")).is_err());
    }

    #[test]
    fn reads_messages() {
        let m = read_message(&mut &b"Subject: x\n\nline\n.\nafter\n"[..], false, 1000).unwrap();
        assert_eq!(m, b"Subject: x\r\n\r\nline\r\n");
        let m = read_message(
            &mut &b"Subject: x\r\n\r\nline\r\n.\r\nafter"[..],
            true,
            1000,
        )
        .unwrap();
        assert_eq!(m, b"Subject: x\r\n\r\nline\r\n.\r\nafter\r\n");
        assert!(read_message(&mut &[b'x'; 100][..], true, 10).is_err());
        let m = read_message(
            &mut &b"From alice Mon Jan 1\nSubject: y\n\nFrom here\n"[..],
            true,
            1000,
        )
        .unwrap();
        assert_eq!(m, b"Subject: y\r\n\r\nFrom here\r\n");
    }

    #[test]
    fn extracts_header_recipients() {
        assert_eq!(
            header_recipients(
                b"To: a@x, \"B\" <b@x>\r\nCc: c@x\r\nBcc: d@x\r\nSubject: s\r\n\r\nTo: e@x\r\n"
            ),
            vec!["a@x", "b@x", "c@x", "d@x"]
        );
        assert_eq!(
            header_recipients(b"To: a@x\r\nResent-To: r@x\r\n\r\n"),
            vec!["r@x"]
        );
    }
}
