//! Files the daemon reads after giving root up: can `mail_owner` read them?
//!
//! Started as root, `corepost run` opens everything once as root, then
//! becomes `mail_owner`; from then on it reads the SMTP AUTH password file
//! at every AUTH, and main.cf, master.cf, every lookup table and the TLS
//! files at every reload. A file only root can read works at start and
//! fails later (every AUTH answers 454, a reload is refused), so `check`
//! warns about it now. The daemon drops its supplementary groups, so only
//! `mail_owner`'s own uid and primary gid count.

use crate::config::{Config, ServiceConfig};
use crate::registry::Kind;
use crate::restrictions::{parse_restrictions, tables_of};
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Parameters whose value is a file (or a list of files) the daemon reads.
const FILE_PARAMETERS: &[&str] = &[
    "corepost_sasl_password_file",
    "smtpd_tls_cert_file",
    "smtpd_tls_key_file",
    "smtpd_tls_chain_files",
    "smtp_tls_CAfile",
];

/// Table types whose name is a file.
const FILE_TABLES: &[&str] = &[
    "texthash", "hash", "lmdb", "btree", "dbm", "sdbm", "cidr", "regexp", "pcre",
];

/// The account the daemon runs as.
#[derive(Debug, Clone)]
pub struct Owner {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

/// A warning for each file `owner` cannot read (none when the owner is
/// root).
pub fn unreadable_files(config: &Config, owner: &Owner) -> Vec<String> {
    if owner.uid == 0 {
        return Vec::new();
    }
    let mut warnings = Vec::new();
    for (path, used_by) in files_read(config) {
        if let Some(why) = blocked(&path, owner.uid, owner.gid) {
            let consequence = if used_by == "corepost_sasl_password_file" {
                "every SMTP AUTH will fail (454) once the daemon has given root up; \
                 `corepost passwd` run as root writes it readable by mail_owner"
            } else {
                "it is read as root at start, but a reload will fail"
            };
            warnings.push(format!(
                "{} (from {used_by}): mail_owner {} (uid {}, gid {}) cannot read it: {why}; {consequence}",
                path.display(),
                owner.name,
                owner.uid,
                owner.gid
            ));
        }
    }
    warnings
}

/// Every file the daemon reads again as `mail_owner`, with the parameter
/// (or configuration file) that names it.
fn files_read(config: &Config) -> BTreeMap<PathBuf, String> {
    let mut files = BTreeMap::new();
    for path in [&config.main.path, &config.master.path] {
        if path.exists() {
            files.insert(path.clone(), "the configuration".to_string());
        }
    }
    let services: Vec<Option<ServiceConfig<'_>>> = std::iter::once(None)
        .chain(config.services().map(Some))
        .collect();
    for service in &services {
        let get = |name: &str| match service {
            Some(s) => s.get(name),
            None => config.get(name),
        };
        for name in FILE_PARAMETERS {
            let Ok(value) = get(name) else { continue };
            for file in crate::list::split_list(&value).unwrap_or_default() {
                files
                    .entry(PathBuf::from(file))
                    .or_insert_with(|| name.to_string());
            }
        }
        for param in config.registry.iter() {
            let Ok(value) = get(&param.name) else {
                continue;
            };
            let specs: Vec<String> = match param.kind {
                Kind::Maps => crate::list::split_list(&value).unwrap_or_default(),
                Kind::Restrictions => {
                    let classes = get("smtpd_restriction_classes").unwrap_or_default();
                    let classes = crate::list::split_list(&classes).unwrap_or_default();
                    match parse_restrictions(&value, &classes) {
                        Ok(list) => tables_of(&list).map(str::to_string).collect(),
                        Err(_) => Vec::new(),
                    }
                }
                _ => continue,
            };
            for spec in specs {
                if let Some(file) = table_file(&spec) {
                    files.entry(file).or_insert_with(|| param.name.clone());
                }
            }
        }
    }
    files
}

/// The file a table spec reads, if it reads one.
fn table_file(spec: &str) -> Option<PathBuf> {
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    let (kind, name) = spec.split_once(':')?;
    (FILE_TABLES.contains(&kind) && name.starts_with('/')).then(|| PathBuf::from(name))
}

/// Why `uid`/`gid` cannot read `path` (a directory on the way it cannot
/// search, or the file it cannot read), judged by the mode bits as the
/// kernel would; `None` if it can, or if we cannot tell (the file does not
/// exist: other checks report that).
pub fn blocked(path: &Path, uid: u32, gid: u32) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let allowed = |meta: &std::fs::Metadata, bit: u32| {
        let mode = meta.mode();
        let shift = if meta.uid() == uid {
            6
        } else if meta.gid() == gid {
            3
        } else {
            0
        };
        mode & (bit << shift) != 0
    };
    for dir in path
        .ancestors()
        .skip(1)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
    {
        let meta = std::fs::metadata(dir).ok()?;
        if !allowed(&meta, 0o1) {
            return Some(format!(
                "directory {} is mode {:o}, owner {}:{}",
                dir.display(),
                meta.mode() & 0o7777,
                meta.uid(),
                meta.gid()
            ));
        }
    }
    let meta = std::fs::metadata(&path).ok()?;
    if !allowed(&meta, 0o4) {
        return Some(format!(
            "mode {:o}, owner {}:{}",
            meta.mode() & 0o7777,
            meta.uid(),
            meta.gid()
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn mode_bits_decide_for_owner_group_and_others() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o755);
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        let meta = std::fs::metadata(&file).unwrap();
        let (uid, gid) = (meta.uid(), meta.gid());
        let stranger = (uid.wrapping_add(12345), gid.wrapping_add(12345));
        chmod(&file, 0o600);
        assert_eq!(blocked(&file, uid, gid), None);
        assert!(
            blocked(&file, stranger.0, gid).is_some(),
            "0600: not the group"
        );
        assert!(
            blocked(&file, stranger.0, stranger.1)
                .unwrap()
                .contains("mode 600")
        );
        chmod(&file, 0o640);
        assert_eq!(blocked(&file, stranger.0, gid), None, "the group may read");
        assert!(blocked(&file, stranger.0, stranger.1).is_some());
        chmod(&file, 0o644);
        assert_eq!(blocked(&file, stranger.0, stranger.1), None);
        chmod(dir.path(), 0o700);
        let why = blocked(&file, stranger.0, stranger.1).unwrap();
        assert!(
            why.starts_with(&format!(
                "directory {}",
                dir.path().canonicalize().unwrap().display()
            )),
            "{why}"
        );
        chmod(dir.path(), 0o755);
        assert_eq!(
            blocked(&dir.path().join("missing"), stranger.0, stranger.1),
            None
        );
        assert_eq!(
            table_file("proxy:hash:/etc/x"),
            Some(PathBuf::from("/etc/x"))
        );
        assert_eq!(table_file("inline:{a=b}"), None);
        assert_eq!(table_file("unix:passwd.byname"), None);
    }
}
