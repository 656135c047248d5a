//! OpenDKIM's KeyTable and SigningTable, so an existing OpenDKIM setup
//! maps over by naming its files:
//!
//! - `corepost_dkim_key_table = file:/etc/opendkim/key.table` (or
//!   `refile:`, or a bare path): lines `keyname domain:selector:key`,
//!   where `key` is a file (starting with `/`, `./` or `../`) or the key
//!   itself, and a domain of `%` means the From: domain. Every key is read
//!   when the table is loaded, never while mail is received.
//! - `corepost_dkim_signing_table = refile:/etc/opendkim/signing.table`:
//!   lines `pattern keyname [signer]`, `*` matching anything, tried in
//!   file order against the From: address. `file:PATH`, a bare path or
//!   any corepost lookup table (`hash:`, `texthash:`, `inline:`, ...) is
//!   asked OpenDKIM's keys in order: `user@host`, `host`, `user@.parent`
//!   for each parent domain, `.parent` likewise, `user@*`, `*`.

use super::key::SigningKey;
use corepost_config::tables::{LookupTable, TableError};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// One KeyTable entry.
#[derive(Debug)]
pub struct KeyEntry {
    /// The name (a pattern when the table is a `refile:`).
    pub name: String,
    /// `d=`; `%` is the From: domain.
    pub domain: String,
    /// `s=`.
    pub selector: String,
    pub key: SigningKey,
    /// Where the key was read from (None for a key written in the table).
    pub file: Option<PathBuf>,
}

/// The KeyTable, loaded with its keys.
#[derive(Debug, Default)]
pub struct KeyTable {
    entries: Vec<KeyEntry>,
    patterns: bool,
}

/// `type:name` of an OpenDKIM dataset that is a flat file: the path, and
/// whether keys are wildcard patterns.
fn flat_file(spec: &str) -> Option<(&str, bool)> {
    if let Some(path) = spec.strip_prefix("refile:") {
        Some((path, true))
    } else if let Some(path) = spec.strip_prefix("file:") {
        Some((path, false))
    } else if spec.starts_with('/') || spec.starts_with("./") || spec.starts_with("../") {
        Some((spec, false))
    } else {
        None
    }
}

/// The (line number, key, value) entries of an OpenDKIM flat file:
/// `#` comments, blank lines skipped, the key and the rest of the line.
fn read_flat(path: &str) -> Result<Vec<(usize, String, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = line
            .split_once([' ', '\t'])
            .map_or((line, ""), |(k, v)| (k, v.trim()));
        if value.is_empty() {
            return Err(format!("{path}, line {}: \"{key}\" has no value", i + 1));
        }
        out.push((i + 1, key.to_string(), value.to_string()));
    }
    Ok(out)
}

impl KeyTable {
    /// Loads the table and every key it names; errors name file and line.
    pub fn open(spec: &str) -> Result<KeyTable, String> {
        let Some((path, patterns)) = flat_file(spec) else {
            return Err(format!(
                "\"{spec}\": the key table must be an OpenDKIM flat file (file:/path, refile:/path or /path), so every key is loaded at start"
            ));
        };
        let mut entries = Vec::new();
        for (line, name, value) in read_flat(path)? {
            let at = |e: String| format!("{path}, line {line}: {e}");
            let mut fields = value.splitn(3, ':');
            let (Some(domain), Some(selector), Some(key)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(at(format!("\"{value}\": expected domain:selector:keyfile")));
            };
            let (domain, selector, key) = (domain.trim(), selector.trim(), key.trim());
            if domain.is_empty() || selector.is_empty() || key.is_empty() {
                return Err(at(format!("\"{value}\": expected domain:selector:keyfile")));
            }
            let (key, file) =
                if key.starts_with('/') || key.starts_with("./") || key.starts_with("../") {
                    let file = PathBuf::from(key);
                    (SigningKey::from_file(&file).map_err(at)?, Some(file))
                } else {
                    (SigningKey::from_text(key.as_bytes()).map_err(at)?, None)
                };
            entries.push(KeyEntry {
                name: name.to_ascii_lowercase(),
                domain: domain.to_ascii_lowercase(),
                selector: selector.to_string(),
                key,
                file,
            });
        }
        Ok(KeyTable { entries, patterns })
    }

    /// The entry for a key name (the first matching pattern in a refile).
    pub fn get(&self, name: &str) -> Option<&KeyEntry> {
        let name = name.to_ascii_lowercase();
        self.entries.iter().find(|e| {
            if self.patterns {
                wildcard_match(&e.name, &name)
            } else {
                e.name == name
            }
        })
    }

    /// The key files, for the check that the daemon can read them after
    /// giving up root.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.entries.iter().filter_map(|e| e.file.as_deref())
    }
}

/// What the SigningTable answered: the key name and the optional signer
/// (`i=`), with `%` already replaced by the From: domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    pub key_name: String,
    pub signer: Option<String>,
}

/// The SigningTable.
#[derive(Debug)]
pub enum SigningTable {
    /// `refile:`: (pattern, value) in file order.
    Patterns(Vec<(String, String)>),
    /// A flat file.
    Map(HashMap<String, String>),
    /// Any corepost lookup table.
    Table(Arc<dyn LookupTable>),
}

impl SigningTable {
    /// Loads the table; with `keys`, every key name a flat file names must
    /// be in the KeyTable (errors name file and line).
    pub fn open(spec: &str, keys: &KeyTable) -> Result<SigningTable, String> {
        let Some((path, patterns)) = flat_file(spec) else {
            return corepost_config::tables::open_table(spec)
                .map(SigningTable::Table)
                .map_err(|e| e.to_string());
        };
        let entries = read_flat(path)?;
        for (line, _, value) in &entries {
            let name = value.split_whitespace().next().unwrap_or_default();
            if name != "%" && keys.get(name).is_none() {
                return Err(format!(
                    "{path}, line {line}: key name \"{name}\" is not in corepost_dkim_key_table"
                ));
            }
        }
        let entries = entries
            .into_iter()
            .map(|(_, k, v)| (k.to_ascii_lowercase(), v));
        Ok(if patterns {
            SigningTable::Patterns(entries.collect())
        } else {
            SigningTable::Map(entries.collect())
        })
    }

    /// The key to sign mail from `user@domain` with, if any.
    pub fn select(&self, user: &str, domain: &str) -> Result<Option<Selection>, TableError> {
        let address = format!("{user}@{domain}").to_ascii_lowercase();
        let value = match self {
            SigningTable::Patterns(list) => list
                .iter()
                .find(|(p, _)| wildcard_match(p, &address))
                .map(|(_, v)| v.clone()),
            SigningTable::Map(map) => {
                opendkim_keys(user, domain).find_map(|k| map.get(&k).cloned())
            }
            SigningTable::Table(table) => {
                let mut found = None;
                for k in opendkim_keys(user, domain) {
                    if let Some(v) = table.lookup(&k)? {
                        found = Some(v);
                        break;
                    }
                }
                found
            }
        };
        Ok(value.map(|v| selection(&v, domain)))
    }
}

fn selection(value: &str, domain: &str) -> Selection {
    let mut fields = value.split_whitespace();
    let name = fields.next().unwrap_or_default();
    Selection {
        key_name: if name == "%" {
            domain.to_string()
        } else {
            name.to_string()
        },
        signer: fields.next().map(|s| s.replace('%', domain)),
    }
}

/// OpenDKIM's SigningTable keys for a non-refile table, in order.
fn opendkim_keys(user: &str, domain: &str) -> impl Iterator<Item = String> {
    let user = user.to_ascii_lowercase();
    let domain = domain.to_ascii_lowercase();
    let parents: Vec<String> = domain
        .match_indices('.')
        .map(|(i, _)| domain[i..].to_string())
        .collect();
    let mut keys = vec![format!("{user}@{domain}"), domain.clone()];
    keys.extend(parents.iter().map(|p| format!("{user}@{p}")));
    keys.extend(parents.iter().cloned());
    keys.push(format!("{user}@*"));
    keys.push("*".to_string());
    keys.into_iter()
}

/// `*` matches any run of characters; the rest literally (both lower case).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let p = pattern.as_bytes();
    let t = text.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("*@example.com", "bob@example.com"));
        assert!(!wildcard_match("*@example.com", "bob@example.com.evil"));
        assert!(wildcard_match("*@*.example.com", "a@mail.example.com"));
        assert!(!wildcard_match("*@*.example.com", "a@example.com"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("bob@example.com", "bob@example.com"));
    }

    #[test]
    fn opendkim_key_order() {
        let keys: Vec<String> = opendkim_keys("Bob", "Foo.Example.com").collect();
        assert_eq!(
            keys,
            [
                "bob@foo.example.com",
                "foo.example.com",
                "bob@.example.com",
                "bob@.com",
                ".example.com",
                ".com",
                "bob@*",
                "*"
            ]
        );
    }

    #[test]
    fn percent_is_the_from_domain() {
        assert_eq!(
            selection("% @%", "example.org"),
            Selection {
                key_name: "example.org".into(),
                signer: Some("@example.org".into())
            }
        );
    }

    proptest::proptest! {
        #[test]
        fn wildcard_never_panics(p in ".{0,20}", t in ".{0,40}") {
            wildcard_match(&p, &t);
        }
    }
}
