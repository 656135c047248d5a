//! aliases(5) files — the postalias(1) source format that `alias_maps`
//! and `alias_database` name (`hash:/etc/aliases` reads `/etc/aliases`).
//!
//! The format differs from postmap's: `name: value, value, ...`, the name
//! ends at the first `:` (it may be quoted, `"a b": x`), the value is a
//! comma-separated list of destinations (`user`, `user@domain`, `/file`,
//! `|command`, `:include:/file`; a destination with commas or spaces is
//! written in double quotes). Comments, blank lines and continuation lines
//! (lines that start with whitespace) follow the common table discipline of
//! [`super::source`]. Names are folded to lower case. A later duplicate
//! name is ignored with the first kept, as postalias does.
//!
//! A line without a `:` or with an empty name is a syntax error naming the
//! file and line; postalias would skip it with a warning.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;
use std::sync::Arc;

use super::source::{logical_lines, read_source};
use super::{LookupTable, TableError, open_table};

/// An aliases(5) file loaded into memory.
#[derive(Debug)]
pub struct AliasFileTable {
    spec: String,
    entries: HashMap<String, String>,
    /// Names in file order (for `corepost aliases -q`/listing).
    order: Vec<String>,
}

impl AliasFileTable {
    /// Load the aliases file at `path`.
    pub fn open(spec: &str, path: &Path) -> Result<Self, TableError> {
        let text = read_source(spec, path)?;
        Self::parse(spec, path, &text)
    }

    /// Parse aliases `text`; `path` is only used in error messages.
    pub fn parse(spec: &str, path: &Path, text: &str) -> Result<Self, TableError> {
        let mut entries = HashMap::new();
        let mut order = Vec::new();
        for line in logical_lines(text) {
            let (name, value) = split_alias_line(&line.text)
                .map_err(|message| TableError::syntax(path, line.number, message))?;
            let name = name.to_lowercase();
            if let Entry::Vacant(slot) = entries.entry(name.clone()) {
                slot.insert(value);
                order.push(name);
            }
        }
        Ok(AliasFileTable {
            spec: spec.to_string(),
            entries,
            order,
        })
    }

    /// Number of aliases.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the file defines no alias.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The aliases in file order with their values.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.order
            .iter()
            .filter_map(|n| Some((n.as_str(), self.entries.get(n)?.as_str())))
    }
}

impl LookupTable for AliasFileTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        Ok(self.entries.get(&key.to_lowercase()).cloned())
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// Split `name: value` into the (unquoted) name and the trimmed value.
fn split_alias_line(line: &str) -> Result<(String, String), String> {
    let (name, rest) = if let Some(quoted) = line.strip_prefix('"') {
        let mut name = String::new();
        let mut chars = quoted.char_indices();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, next)) = chars.next() {
                        name.push(next);
                    }
                }
                '"' => {
                    end = Some(i + 1);
                    break;
                }
                _ => name.push(c),
            }
        }
        let end = end.ok_or("unbalanced '\"' in alias name")?;
        let rest = quoted[end..].trim_start();
        let rest = rest
            .strip_prefix(':')
            .ok_or("missing ':' after the quoted alias name")?;
        (name, rest)
    } else {
        let (name, rest) = line
            .split_once(':')
            .ok_or("missing ':' (expected \"name: value\")")?;
        (name.trim_end().to_string(), rest)
    };
    if name.is_empty() {
        return Err("empty alias name".into());
    }
    let value = rest.trim();
    if value.is_empty() {
        return Err(format!("alias \"{name}\" has no value"));
    }
    Ok((name, value.to_string()))
}

/// Split an alias value into its destinations: commas (and the whitespace
/// around them) separate; double quotes protect commas and spaces and are
/// removed; empty items are dropped. Whitespace alone does not separate
/// (`|/usr/bin/prog arg` stays one destination).
pub fn split_alias_value(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => {
                if let Some(n) = chars.next() {
                    current.push(n);
                }
            }
            ',' if !quoted => {
                let item = current.trim();
                if !item.is_empty() {
                    out.push(item.to_string());
                }
                current.clear();
            }
            _ => current.push(c),
        }
    }
    let item = current.trim();
    if !item.is_empty() {
        out.push(item.to_string());
    }
    out
}

/// Open `spec` as an alias table: the file-backed key/value types read
/// the aliases(5) format; anything else (`inline:`, `static:`, `regexp:`,
/// …) opens as usual.
pub fn open_alias_table(spec: &str) -> Result<Arc<dyn LookupTable>, TableError> {
    let spec = spec.strip_prefix("proxy:").unwrap_or(spec);
    match spec.split_once(':') {
        Some(("texthash" | "hash" | "lmdb" | "btree" | "dbm" | "sdbm", name))
            if !name.is_empty() =>
        {
            Ok(Arc::new(AliasFileTable::open(spec, Path::new(name))?))
        }
        _ => open_table(spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn table(text: &str) -> AliasFileTable {
        AliasFileTable::parse("hash:/etc/aliases", Path::new("/etc/aliases"), text).unwrap()
    }

    #[test]
    fn names_values_and_continuations() {
        let t = table(
            "# comment\nPostmaster: root\nstaff: alice,\n   bob, \"|/usr/bin/prog a, b\"\n\"odd name\" : /tmp/x\ninc: :include:/etc/list\n",
        );
        assert_eq!(t.lookup("postmaster").unwrap().as_deref(), Some("root"));
        assert_eq!(
            t.lookup("STAFF").unwrap().as_deref(),
            Some("alice,   bob, \"|/usr/bin/prog a, b\"")
        );
        assert_eq!(t.lookup("odd name").unwrap().as_deref(), Some("/tmp/x"));
        assert_eq!(
            t.lookup("inc").unwrap().as_deref(),
            Some(":include:/etc/list")
        );
        assert_eq!(t.len(), 4);
        assert_eq!(
            split_alias_value(&t.lookup("staff").unwrap().unwrap()),
            vec!["alice", "bob", "|/usr/bin/prog a, b"]
        );
    }

    #[test]
    fn first_duplicate_wins() {
        let t = table("a: one\nA: two\n");
        assert_eq!(t.lookup("a").unwrap().as_deref(), Some("one"));
        assert_eq!(t.entries().count(), 1);
    }

    #[test]
    fn errors_name_the_line() {
        for (text, what) in [
            ("ok: x\nno colon here\n", "missing ':'"),
            ("ok: x\n: value\n", "empty alias name"),
            ("ok: x\nempty:\n", "no value"),
            ("ok: x\n\"open: x\n", "unbalanced"),
        ] {
            let err = AliasFileTable::parse("hash:/a", Path::new("/a"), text).unwrap_err();
            let shown = err.to_string();
            assert!(shown.starts_with("/a, line 2:"), "{shown}");
            assert!(shown.contains(what), "{shown}");
        }
    }

    #[test]
    fn value_splitting() {
        assert_eq!(split_alias_value(" a , ,b,"), vec!["a", "b"]);
        assert_eq!(
            split_alias_value("|prog arg1 arg2"),
            vec!["|prog arg1 arg2"]
        );
        assert_eq!(
            split_alias_value("\"/path/with space\", x@example.com"),
            vec!["/path/with space", "x@example.com"]
        );
    }

    #[test]
    fn open_alias_table_dispatch() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, b"root: admin\n").unwrap();
        let spec = format!("hash:{}", f.path().display());
        let t = open_alias_table(&spec).unwrap();
        assert_eq!(t.lookup("root").unwrap().as_deref(), Some("admin"));
        let t = open_alias_table("inline:{ root=admin }").unwrap();
        assert_eq!(t.lookup("root").unwrap().as_deref(), Some("admin"));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = AliasFileTable::parse("hash:/x", Path::new("/x"), &text);
            let _ = split_alias_value(&text);
        }
    }
}
