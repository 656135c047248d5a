//! `texthash:file` and the indexed types (`hash:`, `lmdb:`, `btree:`,
//! `dbm:`, `sdbm:`), all read from the postmap(1) *text source*.
//!
//! Postfix's indexed tables are built by `postmap file` into `file.db` (or
//! `.lmdb`, …). Rather than link Berkeley DB, corepost reads `file` itself —
//! exactly what `postmap` indexed — into a `HashMap`. The format
//! (postmap(1), "INPUT FILE FORMAT"):
//!
//! * `key whitespace value`; the key ends at the first whitespace that is
//!   not inside double quotes (Postfix 3.2: `"key with spaces" value`, with
//!   `\"` and `\\` escapes). As postmap does, the key is kept in its quoted
//!   form, quotes included.
//! * comments, blank lines and continuation lines as in [`super::source`];
//! * keys are folded to lower case, and so are lookup keys;
//! * a line without a value, or with an unbalanced `"`, is a syntax error
//!   (postmap skips it with a warning);
//! * a later duplicate key is ignored: postmap keeps the first entry and
//!   warns.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::Path;

use super::source::{logical_lines, read_source};
use super::{LookupTable, TableError};

/// A key/value table loaded from a postmap source file.
#[derive(Debug)]
pub struct TextFileTable {
    spec: String,
    entries: HashMap<String, String>,
}

impl TextFileTable {
    /// Load the postmap source file at `path`.
    pub fn open(spec: &str, path: &Path) -> Result<Self, TableError> {
        let text = read_source(spec, path)?;
        Self::parse(spec, path, &text)
    }

    /// Parse postmap source `text`; `path` is only used in error messages.
    pub fn parse(spec: &str, path: &Path, text: &str) -> Result<Self, TableError> {
        let mut entries = HashMap::new();
        for line in logical_lines(text) {
            let (key, value) = split_entry(&line.text)
                .map_err(|message| TableError::syntax(path, line.number, message))?;
            if let Entry::Vacant(slot) = entries.entry(key.to_lowercase()) {
                slot.insert(value.to_string());
            }
        }
        Ok(TextFileTable {
            spec: spec.to_string(),
            entries,
        })
    }

    /// Number of distinct keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl LookupTable for TextFileTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        // Most keys are lower-case ASCII already; skip the allocation then.
        let value = if key.is_ascii() && !key.bytes().any(|b| b.is_ascii_uppercase()) {
            self.entries.get(key)
        } else {
            self.entries.get(&key.to_lowercase())
        };
        Ok(value.cloned())
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn values(&self) -> Option<Vec<String>> {
        Some(self.entries.values().cloned().collect())
    }
}

/// Split a logical line into key and value as postmap does.
fn split_entry(line: &str) -> Result<(&str, &str), String> {
    let mut in_quotes = false;
    let mut escaped = false;
    let mut key_end = line.len();
    for (index, ch) in line.char_indices() {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == '"' {
            in_quotes = !in_quotes;
        } else if ch.is_whitespace() && !in_quotes {
            key_end = index;
            break;
        }
    }
    if in_quotes {
        return Err(format!("unbalanced '\"' in \"{line}\""));
    }
    let (key, rest) = line.split_at(key_end);
    let value = rest.trim();
    if key.is_empty() || value.is_empty() {
        return Err(format!(
            "expected format: key whitespace value, got \"{line}\""
        ));
    }
    Ok((key, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Write;

    fn parse(text: &str) -> Result<TextFileTable, TableError> {
        TextFileTable::parse("texthash:t", Path::new("t"), text)
    }

    fn error_line(text: &str) -> usize {
        match parse(text) {
            Err(TableError::Syntax { line, .. }) => line,
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn postmap_format() {
        let table = parse(
            "# virtual aliases\n\
             Info@Example.COM   alice, bob\n\
             \n\
             sales@example.com\tcarol,\n\
             \t dave  \n\
             #  trailing comment\n\
             \"a b\"@example.com quoted\n",
        )
        .unwrap();
        assert_eq!(table.len(), 3);
        assert!(!table.is_empty());
        assert_eq!(
            table.lookup("info@example.com").unwrap().as_deref(),
            Some("alice, bob")
        );
        assert_eq!(
            table.lookup("INFO@example.com").unwrap().as_deref(),
            Some("alice, bob")
        );
        assert_eq!(
            table.lookup("sales@example.com").unwrap().as_deref(),
            Some("carol,\t dave")
        );
        assert_eq!(
            table.lookup("\"a b\"@example.com").unwrap().as_deref(),
            Some("quoted")
        );
        assert_eq!(table.lookup("nobody@example.com").unwrap(), None);
    }

    #[test]
    fn first_duplicate_wins() {
        let table = parse("a first\nA second\n").unwrap();
        assert_eq!(table.lookup("a").unwrap().as_deref(), Some("first"));
    }

    #[test]
    fn key_without_value_names_its_line() {
        assert_eq!(error_line("a b\n# c\n\nlonely\n"), 4);
        assert_eq!(error_line("a b\nlonely   \n"), 2);
        // A continuation does not change the reported (first) line.
        assert_eq!(error_line("a b\nc\n   \n"), 2);
    }

    #[test]
    fn unbalanced_quote_names_its_line() {
        assert_eq!(error_line("ok 1\n\"open key value\n"), 2);
    }

    #[test]
    fn escaped_quote_does_not_open_quotes() {
        let table = parse("a\\\"b value\n").unwrap();
        assert_eq!(table.lookup("a\\\"b").unwrap().as_deref(), Some("value"));
    }

    #[test]
    fn open_reads_the_file_and_reports_its_path() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"key value\nbroken\n").unwrap();
        match TextFileTable::open("hash:x", file.path()) {
            Err(TableError::Syntax { path, line, .. }) => {
                assert_eq!(path, file.path());
                assert_eq!(line, 2);
            }
            other => panic!("{other:?}"),
        }
    }

    fn key() -> impl Strategy<Value = String> {
        "[A-Za-z0-9@._+-][A-Za-z0-9@._+#-]{0,20}"
    }

    fn value() -> impl Strategy<Value = String> {
        "[!-~]([ -~]{0,30}[!-~])?"
    }

    proptest! {
        /// Whatever the file holds, parsing returns a table or an error.
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn line_shaped_text_never_panics(
            lines in proptest::collection::vec("[ \t]{0,2}[\"#a-z \\\\\t]{0,12}", 0..12)
        ) {
            let _ = parse(&lines.join("\n"));
        }

        /// Pairs written in postmap format read back identically (first
        /// duplicate wins, case-insensitive keys).
        #[test]
        fn written_pairs_read_back(
            pairs in proptest::collection::vec((key(), value()), 0..40)
        ) {
            let mut text = String::new();
            for (k, v) in &pairs {
                text.push_str(&format!("{k}\t{v}\n"));
            }
            let table = parse(&text).unwrap();
            let mut expected: HashMap<String, String> = HashMap::new();
            for (k, v) in &pairs {
                expected.entry(k.to_lowercase()).or_insert_with(|| v.clone());
            }
            prop_assert_eq!(table.len(), expected.len());
            for (k, _) in &pairs {
                let want = expected.get(&k.to_lowercase()).cloned();
                prop_assert_eq!(table.lookup(k).unwrap(), want.clone());
                prop_assert_eq!(table.lookup(&k.to_uppercase()).unwrap(), want);
            }
        }
    }
}
