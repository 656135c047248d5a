//! Writing mail into files as the recipient: Maildir (tmp/new/cur, unique
//! names, fsync before the rename into new/), mbox (`From ` line, `>From `
//! quoting, fcntl and dot-file locking, truncated back on a failed
//! write) — shared by the local and virtual agents. Runs on pool threads.
//!
//! When corepost runs as root, file access happens with the recipient's
//! identity: [`AsUser`] switches the *calling thread's* filesystem uid/gid
//! (Linux `setfsuid`/`setfsgid` act per thread), so other deliveries on
//! other threads keep theirs, and files are created owned by the user.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Whether the process runs with root privileges.
pub fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// The calling thread acts on files as `uid`/`gid` until dropped.
pub struct AsUser {
    switched: bool,
}

impl AsUser {
    pub fn new(uid: u32, gid: u32) -> AsUser {
        if !running_as_root() {
            return AsUser { switched: false };
        }
        // SAFETY: setfsgid/setfsuid only change the calling thread's
        // filesystem credentials (glibc issues the raw per-thread system
        // call); no memory is involved. Drop restores root's.
        unsafe {
            libc::setfsgid(gid);
            libc::setfsuid(uid);
        }
        AsUser { switched: true }
    }
}

impl Drop for AsUser {
    fn drop(&mut self) {
        if self.switched {
            // SAFETY: as in `new`; back to the process's own identity.
            unsafe {
                libc::setfsuid(0);
                libc::setfsgid(0);
            }
        }
    }
}

/// The message as it goes into a local file: `Return-Path:` and
/// `Delivered-To:` first (when given), LF line ends.
pub fn local_copy(
    content: &[u8],
    return_path: Option<&str>,
    delivered_to: Option<&str>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 128);
    if let Some(sender) = return_path {
        out.extend_from_slice(format!("Return-Path: <{sender}>\n").as_bytes());
    }
    if let Some(rcpt) = delivered_to {
        out.extend_from_slice(format!("Delivered-To: {rcpt}\n").as_bytes());
    }
    let mut rest = content;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
        out.push(b'\n');
        rest = next;
    }
    out
}

static UNIQUE: AtomicU64 = AtomicU64::new(0);

fn hostname() -> String {
    corepost_config::host::myhostname(&|_| String::new())
        .replace('/', "\\057")
        .replace(':', "\\072")
}

/// Deliver `message` (LF line ends) into the Maildir `dir` (created with
/// tmp/new/cur if missing). Returns the file's path in new/.
pub fn maildir(dir: &Path, message: &[u8], size_limit: u64) -> io::Result<PathBuf> {
    if size_limit > 0 && message.len() as u64 > size_limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            "message is larger than the mailbox size limit",
        ));
    }
    for sub in ["tmp", "new", "cur"] {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir.join(sub))?;
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let name = format!(
        "{}.M{}P{}Q{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed),
        hostname()
    );
    let tmp = dir.join("tmp").join(&name);
    let new = dir.join("new").join(&name);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(message)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &new)?;
        File::open(dir.join("new"))?.sync_all()
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(new)
}

/// Which locks an mbox delivery takes (`mailbox_delivery_lock`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Locks {
    pub fcntl: bool,
    pub flock: bool,
    pub dotlock: bool,
}

impl Locks {
    pub fn parse(list: &str) -> Locks {
        let mut l = Locks::default();
        for w in list.split(|c: char| c == ',' || c.is_whitespace()) {
            match w {
                "fcntl" => l.fcntl = true,
                "flock" => l.flock = true,
                "dotlock" => l.dotlock = true,
                _ => {}
            }
        }
        l
    }
}

struct DotLock(PathBuf);

impl Drop for DotLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Take `<mbox>.lock`; a lock older than 500 s is stale and removed (as
/// Postfix's dot_lockfile). A directory we may not write into means no
/// dot-lock (the kernel locks still apply).
fn dotlock(path: &Path) -> io::Result<Option<DotLock>> {
    let mut lock = path.as_os_str().to_owned();
    lock.push(".lock");
    let lock = PathBuf::from(lock);
    for _ in 0..200 {
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
        {
            Ok(_) => return Ok(Some(DotLock(lock))),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                if let Ok(meta) = std::fs::metadata(&lock)
                    && meta
                        .modified()
                        .ok()
                        .and_then(|m| m.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(500))
                {
                    let _ = std::fs::remove_file(&lock);
                    continue;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(
        io::ErrorKind::WouldBlock,
        format!("cannot lock {}: lock file is busy", path.display()),
    ))
}

fn kernel_lock(f: &File, locks: Locks) -> io::Result<()> {
    let fd = f.as_raw_fd();
    if locks.fcntl {
        // SAFETY: an all-zero flock is a valid value of this C struct.
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: fd is open for the duration of the call and fl is a
        // valid, initialised struct flock.
        if unsafe { libc::fcntl(fd, libc::F_SETLKW, &fl) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    if locks.flock {
        // SAFETY: fd is an open descriptor owned by `f`.
        if unsafe { libc::flock(fd, libc::LOCK_EX) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Append `message` (LF line ends, without `From ` line) to the mbox file
/// `path`, with a `From sender date` line, `>From ` quoting and a blank
/// line after it. Creates the file (0600) when missing. On a failed write
/// the file is truncated back to its old size.
pub fn mbox(
    path: &Path,
    sender: &str,
    message: &[u8],
    locks: Locks,
    size_limit: u64,
) -> io::Result<()> {
    let _dot = if locks.dotlock { dotlock(path)? } else { None };
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    kernel_lock(&f, locks)?;
    let meta = f.metadata()?;
    if !meta.is_file() && !meta.file_type().is_char_device() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let old = meta.len();
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(format!("From {sender}  {}\n", crate::time::asctime_now()).as_bytes());
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line);
    }
    if !out.ends_with(b"\n") {
        out.push(b'\n');
    }
    out.push(b'\n');
    if meta.is_file() && size_limit > 0 && old + out.len() as u64 > size_limit {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            "mailbox size limit exceeded",
        ));
    }
    let written = f
        .write_all(&out)
        .and_then(|()| if meta.is_file() { f.sync_all() } else { Ok(()) });
    if let Err(e) = written {
        if meta.is_file() {
            let _ = f.set_len(old);
        }
        return Err(e);
    }
    Ok(())
}

/// The status for a failed file write: a full disk or a lock we could not
/// get is temporary, a file too big or a permission problem is not.
pub fn write_error_status(what: &str, e: &io::Error) -> super::agent::Status {
    use super::agent::Status;
    match e.kind() {
        io::ErrorKind::FileTooLarge => {
            Status::bounced("5.2.2", format!("cannot update mailbox {what}: {e}"))
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::IsADirectory => {
            Status::bounced("5.2.0", format!("cannot update mailbox {what}: {e}"))
        }
        _ => Status::deferred("4.2.0", format!("cannot update mailbox {what}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maildir_layout_and_unique_names() {
        let dir = tempfile::tempdir().unwrap();
        let md = dir.path().join("Maildir");
        let a = maildir(&md, b"one\n", 0).unwrap();
        let b = maildir(&md, b"two\n", 0).unwrap();
        assert_ne!(a, b);
        assert!(md.join("cur").is_dir());
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
        assert_eq!(std::fs::read(&a).unwrap(), b"one\n");
        assert!(maildir(&md, b"toolarge\n", 4).is_err());
    }

    #[test]
    fn mbox_from_line_and_quoting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mbox");
        let copy = local_copy(
            b"Subject: x\r\n\r\nFrom here\r\n>From there\r\n",
            Some("s@x"),
            Some("r@y"),
        );
        let locks = Locks::parse("fcntl, dotlock");
        mbox(&path, "s@x", &copy, locks, 0).unwrap();
        mbox(&path, "", b"Subject: y\n\nbody\n", locks, 0).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("From s@x  "));
        assert_eq!(
            lines.collect::<Vec<_>>()[..6],
            [
                "Return-Path: <s@x>",
                "Delivered-To: r@y",
                "Subject: x",
                "",
                ">From here",
                ">From there"
            ]
        );
        assert!(text.contains("\n\nFrom MAILER-DAEMON  "));
        assert!(!path.with_extension("lock").exists());
        let before = std::fs::metadata(&path).unwrap().len();
        assert!(mbox(&path, "s", b"big\n", locks, before + 3).is_err());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
    }
}
