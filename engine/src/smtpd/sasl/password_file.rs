//! corepost's SASL password file (`corepost_sasl_password_file`): one
//! `user:hash` line per user, `#` comments and blank lines allowed.
//!
//! Hashes are PHC strings: argon2id (what `corepost passwd add` writes) or
//! any argon2 variant, and SHA-512-crypt (`$6$...`, what `mkpasswd -m
//! sha-512` or `doveadm pw -s SHA512-CRYPT` make). Dovecot's scheme
//! prefixes (`{ARGON2ID}`, `{SHA512-CRYPT}`) are accepted, so a Dovecot
//! passwd-file's first two fields can be used as they are. Plaintext is
//! never accepted.
//!
//! The file is read on the blocking thread when a check needs it and again
//! whenever its modification time or size changes, so `corepost passwd`
//! takes effect without a reload. A user that does not exist still costs
//! one hash computation, so timing does not tell which names exist.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

type Users = HashMap<String, String>;

/// The password file of a service, cached by modification time.
#[derive(Debug)]
pub struct PasswordFile {
    path: PathBuf,
    cache: Mutex<Option<(SystemTime, u64, Users)>>,
}

impl PasswordFile {
    pub fn new(path: impl Into<PathBuf>) -> PasswordFile {
        PasswordFile {
            path: path.into(),
            cache: Mutex::new(None),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `password` is `user`'s. Blocking (file I/O and hashing).
    /// `Err` when the file cannot be read or parsed (a temporary failure).
    pub fn verify(&self, user: &str, password: &str) -> Result<bool, String> {
        let hash = {
            let meta = std::fs::metadata(&self.path)
                .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = matches!(&*cache, Some((t, l, _)) if (*t, *l) == stamp);
            if !fresh {
                let text = std::fs::read_to_string(&self.path)
                    .map_err(|e| format!("cannot read {}: {e}", self.path.display()))?;
                let users = parse(&text, &self.path)?.into_iter().collect();
                *cache = Some((stamp.0, stamp.1, users));
            }
            cache
                .as_ref()
                .and_then(|(_, _, users)| users.get(user).cloned())
        };
        match hash {
            Some(h) => Ok(check_hash(&h, password)),
            None => {
                // Same work as for a real user.
                let _ = check_hash(dummy_hash(), password);
                Ok(false)
            }
        }
    }
}

fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("corepost-no-such-user").unwrap_or_default())
}

/// Parse the file's text; errors name the file and line.
pub fn parse(text: &str, path: &Path) -> Result<Vec<(String, String)>, String> {
    let mut users = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((user, rest)) = line.split_once(':') else {
            return Err(format!(
                "{}, line {}: expected user:hash",
                path.display(),
                n + 1
            ));
        };
        // A Dovecot passwd-file has more fields after the hash.
        let hash = rest.split(':').next().unwrap_or_default();
        if valid_user(user).is_err() || hash.is_empty() {
            return Err(format!(
                "{}, line {}: expected user:hash",
                path.display(),
                n + 1
            ));
        }
        users.push((user.to_string(), hash.to_string()));
    }
    Ok(users)
}

/// A user name that fits in the file: not empty, no `:`, white space or
/// control characters.
pub fn valid_user(user: &str) -> Result<(), String> {
    if user.is_empty()
        || user.len() > 255
        || user
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(format!("invalid user name \"{}\"", user.escape_debug()));
    }
    Ok(())
}

/// An argon2id hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches `hash` (argon2 PHC or SHA-512-crypt).
pub fn check_hash(hash: &str, password: &str) -> bool {
    let hash = strip_scheme(hash);
    if hash.starts_with("$6$") {
        return sha_crypt::sha512_check(password, hash).is_ok();
    }
    if hash.starts_with("$argon2") {
        return PasswordHash::new(hash).is_ok_and(|h| {
            argon2::Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        });
    }
    false
}

/// Drop a Dovecot `{SCHEME}` prefix.
fn strip_scheme(hash: &str) -> &str {
    match hash.strip_prefix('{').and_then(|h| h.split_once('}')) {
        Some((_, rest)) => rest,
        None => hash,
    }
}

/// Add `user` or change their password; writes a new file and renames it
/// over the old one: mode 0600, or 0640 with group `group` when given (the
/// daemon's group, so that it can read the file but not change it).
/// Returns whether the user existed.
pub fn set_user(
    path: &Path,
    user: &str,
    password: &str,
    group: Option<u32>,
) -> Result<bool, String> {
    valid_user(user)?;
    let hash = hash_password(password)?;
    edit(path, user, Some(&hash), group)
}

/// Remove `user`; returns whether they existed. `group` as for
/// [`set_user`].
pub fn remove_user(path: &Path, user: &str, group: Option<u32>) -> Result<bool, String> {
    edit(path, user, None, group)
}

fn edit(path: &Path, user: &str, hash: Option<&str>, group: Option<u32>) -> Result<bool, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    parse(&text, path)?;
    let mut out = String::with_capacity(text.len() + 128);
    let mut found = false;
    for line in text.lines() {
        if line.trim().split_once(':').is_some_and(|(u, _)| u == user) {
            found = true;
            if let Some(h) = hash {
                out.push_str(&format!("{user}:{h}\n"));
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found && let Some(h) = hash {
        out.push_str(&format!("{user}:{h}\n"));
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(gid) = group {
            // Group first, then the group's read bit: never readable by
            // the wrong group.
            std::os::unix::fs::fchown(&f, None, Some(gid))?;
            f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o640))?;
        }
        f.write_all(out.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        format!("cannot write {}: {e}", path.display())
    })?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn add_verify_change_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sasl_users");
        assert!(!set_user(&path, "alice", "secret", None).unwrap());
        assert!(!set_user(&path, "bob@example.org", "hunter2", None).unwrap());
        let file = PasswordFile::new(&path);
        assert!(file.verify("alice", "secret").unwrap());
        assert!(!file.verify("alice", "Secret").unwrap());
        assert!(!file.verify("carol", "secret").unwrap());
        assert!(set_user(&path, "alice", "changed", None).unwrap());
        assert!(file.verify("alice", "changed").unwrap());
        assert!(remove_user(&path, "alice", None).unwrap());
        assert!(!file.verify("alice", "changed").unwrap());
        assert!(file.verify("bob@example.org", "hunter2").unwrap());
        assert!(set_user(&path, "bad user", "x", None).is_err());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // For the daemon's group: readable by it, 0640.
        use std::os::unix::fs::MetadataExt;
        // SAFETY: getegid has no preconditions.
        let gid = unsafe { libc::getegid() };
        assert!(set_user(&path, "carol", "pw", Some(gid)).is_ok());
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.gid(), meta.mode() & 0o777), (gid, 0o640));
        assert!(file.verify("carol", "pw").unwrap());
    }

    #[test]
    fn sha512_crypt_and_dovecot_prefixes() {
        // `openssl passwd -6 -salt saltsalt secret`
        let h = "$6$saltsalt$TVLlQcbpFVof5W3Yz4DTP6gRstiNuHwwTt6GLc1E5n0U0aDehy0S5knV8wiOQSpT0Y77vwPZN.Pq.H91p5hVO1";
        assert!(check_hash(h, "secret"));
        assert!(check_hash(&format!("{{SHA512-CRYPT}}{h}"), "secret"));
        assert!(!check_hash(h, "wrong"));
        assert!(
            !check_hash("secret", "secret"),
            "plaintext is never accepted"
        );
        let a = hash_password("pw").unwrap();
        assert!(a.starts_with("$argon2id$"));
        assert!(check_hash(&format!("{{ARGON2ID}}{a}"), "pw"));
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let e = parse(
            "# c\nalice:$6$x\nnocolon\n",
            Path::new("/etc/corepost/sasl_users"),
        )
        .unwrap_err();
        assert_eq!(e, "/etc/corepost/sasl_users, line 3: expected user:hash");
        let users = parse(
            "alice:{ARGON2ID}$argon2id$x:1000:1000::/home\n",
            Path::new("f"),
        )
        .unwrap();
        assert_eq!(users[0].1, "{ARGON2ID}$argon2id$x");
    }

    proptest! {
        #[test]
        fn any_text_parses_or_errors(text in "\\PC{0,200}") {
            let _ = parse(&text, Path::new("f"));
        }
    }
}
