//! The maildrop: where `sendmail` leaves a submission for the pickup
//! service, and the format of one submission file.
//!
//! Permissions model (see ARCHITECTURE.md): `$queue_directory/maildrop` is
//! owned by `mail_owner` with mode 3733 — anyone may create files in it and
//! open them by name, nobody but the owner may list it (so names, which are
//! 128 random bits, are never learnt), the sticky bit stops users from
//! renaming or removing each other's files, and the setgid bit gives every
//! file the directory's group (mail_owner's), so files created 0640 are
//! readable by pickup and by their author only.
//!
//! A file is written as `.<name>.tmp`, flushed, then renamed to `<name>`:
//! pickup only looks at names without a leading dot, so it never sees a
//! half-written submission, and the submission works while the daemon is
//! down.
//!
//! Format (version 1): text lines `key value` up to `content N`, then
//! exactly N bytes of message content with CRLF line ends:
//!
//! ```text
//! corepost-maildrop 1
//! sender alice            (empty value: the null sender)
//! fullname Alice Example  (optional, -F)
//! ret hdrs                (optional, -R)
//! envid abc               (optional, -V)
//! notify 6                (optional, -N as RFC 3461 bits)
//! rcpt bob@example.com    (one per recipient)
//! content 1234
//! ```

use std::io::{BufRead, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

const MAGIC: &str = "corepost-maildrop 1";
/// Longest header line of a submission file.
const MAX_LINE: usize = 4096;
/// Most recipients in one submission.
pub const MAX_RECIPIENTS: usize = 100_000;

/// One local submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submission {
    /// As given (`-f`) or the submitting user's login name; empty for `<>`.
    pub sender: String,
    pub fullname: Option<String>,
    pub ret: Option<corepost_spool::Ret>,
    pub envid: Option<String>,
    /// RFC 3461 NOTIFY bits for every recipient (0 = not given).
    pub notify: u8,
    pub recipients: Vec<String>,
    /// The message, CRLF line ends.
    pub content: Vec<u8>,
}

/// The maildrop directory of a queue directory.
pub fn dir(queue_dir: &Path) -> PathBuf {
    queue_dir.join("maildrop")
}

/// Where pickup moves files it cannot read.
pub fn corrupt_dir(queue_dir: &Path) -> PathBuf {
    queue_dir.join("corrupt")
}

/// Create the maildrop (if needed) with its mode (3733; see the module
/// doc). Called by the daemon before and after dropping root.
pub fn prepare(queue_dir: &Path) -> std::io::Result<()> {
    let d = dir(queue_dir);
    match std::fs::create_dir(&d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o3733))?;
    let c = corrupt_dir(queue_dir);
    match std::fs::create_dir(&c) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    std::fs::set_permissions(&c, std::fs::Permissions::from_mode(0o700))
}

/// As root before the daemon drops privileges: give every maildrop file
/// the mail system's group, keeping its owner (the submitter, whom pickup
/// names as `from userid N`). A file deposited while the maildrop had
/// another group — `sendmail` run as root before the daemon ever ran —
/// is then readable by pickup through its 0640 group bit instead of being
/// set aside as unreadable. Symbolic links are changed themselves, never
/// followed (pickup refuses them anyway).
pub fn adopt_files(maildrop: &Path, gid: u32) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    for entry in std::fs::read_dir(maildrop)? {
        let entry = entry?;
        let meta = match entry.metadata() {
            Ok(m) => m,
            // Picked up (or withdrawn) meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.gid() == gid {
            continue;
        }
        match std::os::unix::fs::lchown(entry.path(), None, Some(gid)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn clean(value: &str) -> Result<&str, String> {
    if value.contains(['\n', '\r', '\0']) || value.len() > MAX_LINE - 16 {
        return Err(format!("bad value {value:?}"));
    }
    Ok(value)
}

impl Submission {
    /// The file's bytes.
    pub fn encode(&self) -> Result<Vec<u8>, String> {
        let mut out = format!("{MAGIC}\nsender {}\n", clean(&self.sender)?);
        if let Some(f) = &self.fullname {
            out.push_str(&format!("fullname {}\n", clean(f)?));
        }
        match self.ret {
            Some(corepost_spool::Ret::Full) => out.push_str("ret full\n"),
            Some(corepost_spool::Ret::Headers) => out.push_str("ret hdrs\n"),
            None => {}
        }
        if let Some(e) = &self.envid {
            out.push_str(&format!("envid {}\n", clean(e)?));
        }
        if self.notify != 0 {
            out.push_str(&format!("notify {}\n", self.notify));
        }
        for r in &self.recipients {
            out.push_str(&format!("rcpt {}\n", clean(r)?));
        }
        out.push_str(&format!("content {}\n", self.content.len()));
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.content);
        Ok(bytes)
    }

    /// Parse a file's bytes; the error says what is wrong.
    pub fn decode(bytes: &[u8]) -> Result<Submission, String> {
        let mut reader = bytes;
        let (mut s, len) = Submission::decode_envelope(&mut reader)?;
        if reader.len() != len {
            return Err(format!("content is {} bytes, expected {len}", reader.len()));
        }
        s.content = reader.to_vec();
        Ok(s)
    }

    /// Parse the lines before the content (the envelope); returns it with
    /// the content's announced length, leaving `reader` at the content.
    /// The listing of the maildrop reads no further.
    pub fn decode_envelope<R: std::io::BufRead>(
        reader: &mut R,
    ) -> Result<(Submission, usize), String> {
        let mut s = Submission::default();
        let mut first = true;
        let mut raw = Vec::new();
        loop {
            raw.clear();
            std::io::Read::take(&mut *reader, MAX_LINE as u64)
                .read_until(b'\n', &mut raw)
                .map_err(|e| e.to_string())?;
            let Some(line) = raw.strip_suffix(b"\n") else {
                return Err("truncated or overlong header line".into());
            };
            let line = std::str::from_utf8(line).map_err(|_| "header line is not UTF-8")?;
            if first {
                if line != MAGIC {
                    return Err("not a corepost maildrop file".into());
                }
                first = false;
                continue;
            }
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            match key {
                "sender" => s.sender = value.to_string(),
                "fullname" => s.fullname = Some(value.to_string()),
                "ret" => {
                    s.ret = Some(match value {
                        "full" => corepost_spool::Ret::Full,
                        "hdrs" => corepost_spool::Ret::Headers,
                        _ => return Err(format!("bad ret {value:?}")),
                    })
                }
                "envid" => s.envid = Some(value.to_string()),
                "notify" => s.notify = value.parse().map_err(|_| "bad notify")?,
                "rcpt" => {
                    if s.recipients.len() >= MAX_RECIPIENTS {
                        return Err("too many recipients".into());
                    }
                    s.recipients.push(value.to_string());
                }
                "content" => {
                    let len: usize = value.parse().map_err(|_| "bad content length")?;
                    return Ok((s, len));
                }
                _ => return Err(format!("unknown record {key:?}")),
            }
        }
    }
}

/// A fresh random file name (32 hex digits).
pub fn random_name() -> String {
    use rand::RngExt;
    let a: u64 = rand::rng().random();
    let b: u64 = rand::rng().random();
    format!("{a:016x}{b:016x}")
}

/// Write a submission into the maildrop atomically: a hidden temporary
/// file (mode 0640, created exclusively), fsync, rename, fsync the
/// directory. Returns the file's final path.
pub fn deposit(maildrop: &Path, submission: &Submission) -> std::io::Result<PathBuf> {
    let bytes = submission
        .encode()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let name = random_name();
    let tmp = maildrop.join(format!(".{name}.tmp"));
    let path = maildrop.join(&name);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&tmp)?;
    let result = (|| {
        // The umask may have taken the group's read bit away.
        file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        // Make the rename durable too when we may open the directory (its
        // owner and root can; other users cannot read it, and then the
        // file's own fsync is what we have, as with Postfix's postdrop).
        match std::fs::File::open(maildrop) {
            Ok(d) => d.sync_all(),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Ok(()),
            Err(e) => Err(e),
        }
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let s = Submission {
            sender: "alice".into(),
            fullname: Some("Alice Example".into()),
            ret: Some(corepost_spool::Ret::Headers),
            envid: Some("env-1".into()),
            notify: 6,
            recipients: vec!["bob@example.com".into(), "carol".into()],
            content: b"Subject: x\r\n\r\nbody\r\ncontent 5\n".to_vec(),
        };
        assert_eq!(Submission::decode(&s.encode().unwrap()).unwrap(), s);
        let null = Submission {
            recipients: vec!["x@y".into()],
            ..Submission::default()
        };
        assert_eq!(Submission::decode(&null.encode().unwrap()).unwrap(), null);
    }

    #[test]
    fn rejects_damage() {
        let s = Submission {
            sender: "a".into(),
            recipients: vec!["b@c".into()],
            content: b"hello\r\n".to_vec(),
            ..Submission::default()
        };
        let bytes = s.encode().unwrap();
        assert!(Submission::decode(&bytes[..bytes.len() - 1]).is_err());
        assert!(Submission::decode(b"garbage\n").is_err());
        assert!(Submission::decode(b"").is_err());
        assert!(
            Submission {
                sender: "a\nrcpt evil@x".into(),
                ..s
            }
            .encode()
            .is_err()
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Submission::decode(&bytes);
            let mut prefixed = b"corepost-maildrop 1\n".to_vec();
            prefixed.extend_from_slice(&bytes);
            let _ = Submission::decode(&prefixed);
        }
    }
}
