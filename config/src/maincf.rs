//! `main.cf`: `name = value` lines with Postfix's logical-line rules.
//!
//! * A line whose first non-blank character is `#` is a comment; blank lines
//!   and comments are skipped (they do not end a logical line).
//! * A line that starts with whitespace continues the previous logical line;
//!   the pieces are joined with one space, as Postfix does.
//! * Each logical line is `name = value`; whitespace around `=` and at the
//!   end of the value is removed. A later definition of the same name wins
//!   (and is reported as a warning, as `postconf` does).
//!
//! Values are stored raw: `$name` references are expanded on demand by
//! [`crate::Config`], because a reference may name a parameter defined later
//! in the file, in master.cf `-o` overrides, or only as a built-in default.

use crate::error::{ConfigError, Location};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Longest logical line accepted; a guard against a runaway file, far above
/// anything a real configuration needs.
pub const MAX_LOGICAL_LINE: usize = 1 << 20;

/// One `name = value` definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MainEntry {
    pub name: String,
    pub value: String,
    /// Line where the logical line starts (1-based).
    pub line: usize,
}

/// A parsed main.cf.
#[derive(Debug, Clone, Default)]
pub struct MainCf {
    /// The file it came from (empty for built-in or in-memory text).
    pub path: PathBuf,
    /// Every definition in file order, including overridden ones.
    pub entries: Vec<MainEntry>,
    /// name → index into `entries` of the definition that wins.
    effective: HashMap<String, usize>,
    /// Non-fatal findings (overridden entries).
    pub warnings: Vec<String>,
}

impl MainCf {
    /// Read and parse `path`. A missing file is an I/O error; callers that
    /// run on built-in defaults check for existence first.
    pub fn load(path: &Path) -> Result<MainCf, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        MainCf::parse(&text, path)
    }

    /// Parse main.cf text; `path` is used in messages only.
    pub fn parse(text: &str, path: &Path) -> Result<MainCf, ConfigError> {
        let mut cf = MainCf {
            path: path.to_path_buf(),
            ..MainCf::default()
        };
        for (line, logical) in logical_lines(text, path)? {
            let at = Location::new(path, line);
            let (name, value) =
                split_name_value(&logical).map_err(|reason| ConfigError::Syntax {
                    at: at.clone(),
                    message: reason,
                })?;
            cf.define(name, value, line);
        }
        Ok(cf)
    }

    fn define(&mut self, name: &str, value: &str, line: usize) {
        let index = self.entries.len();
        self.entries.push(MainEntry {
            name: name.to_string(),
            value: value.to_string(),
            line,
        });
        if let Some(previous) = self.effective.insert(name.to_string(), index) {
            let old = &self.entries[previous];
            self.warnings.push(format!(
                "{}, line {line}: overriding earlier entry: {}={} (line {})",
                self.path.display(),
                old.name,
                old.value,
                old.line
            ));
        }
    }

    /// The value main.cf gives `name`, if it sets it.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.effective
            .get(name)
            .map(|&i| self.entries[i].value.as_str())
    }

    /// The winning definition of `name`.
    pub fn entry(&self, name: &str) -> Option<&MainEntry> {
        self.effective.get(name).map(|&i| &self.entries[i])
    }

    /// The names main.cf sets, sorted, each once.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.effective.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Split text into logical lines: (first physical line number, joined text).
pub(crate) fn logical_lines(text: &str, path: &Path) -> Result<Vec<(usize, String)>, ConfigError> {
    let mut out: Vec<(usize, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if raw.starts_with(|c: char| c.is_ascii_whitespace()) {
            let Some((_, current)) = out.last_mut() else {
                return Err(ConfigError::Syntax {
                    at: Location::new(path, number),
                    message: "logical line must not start with whitespace".into(),
                });
            };
            if current.len() + trimmed.len() + 1 > MAX_LOGICAL_LINE {
                return Err(ConfigError::Syntax {
                    at: Location::new(path, number),
                    message: format!("logical line longer than {MAX_LOGICAL_LINE} bytes"),
                });
            }
            current.push(' ');
            current.push_str(trimmed);
        } else {
            out.push((number, raw.trim_end().to_string()));
        }
    }
    Ok(out)
}

/// `name = value` → (`name`, `value`), with Postfix's messages for the
/// malformed cases.
pub fn split_name_value(line: &str) -> Result<(&str, &str), String> {
    let Some(eq) = line.find('=') else {
        return Err(format!(
            "missing '=' after attribute name: \"{}\"",
            line.trim()
        ));
    };
    let name = line[..eq].trim();
    let value = line[eq + 1..].trim();
    if name.is_empty() {
        return Err(format!("missing attribute name: \"{}\"", line.trim()));
    }
    // Postfix accepts any name without whitespace here (service-specific
    // names such as `scalemail-backend_time_limit` contain '-'); only
    // letters, digits and '_' can be referenced as $name, though.
    if name.contains(char::is_whitespace) {
        return Err(format!("whitespace in parameter name \"{name}\""));
    }
    Ok((name, value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<MainCf, ConfigError> {
        MainCf::parse(text, Path::new("/etc/corepost/main.cf"))
    }

    #[test]
    fn comments_continuations_and_overrides() {
        let cf = parse(
            "# comment\nmydestination = a,\n    b\n# mid\n\tc\n\nrelay_domains=x   \n  y\nfoo = bar\nfoo = baz\n",
        )
        .unwrap();
        assert_eq!(cf.get("mydestination"), Some("a, b c"));
        assert_eq!(cf.get("relay_domains"), Some("x y"));
        assert_eq!(cf.get("foo"), Some("baz"));
        assert_eq!(cf.entry("foo").unwrap().line, 10);
        assert_eq!(cf.entry("mydestination").unwrap().line, 2);
        assert_eq!(cf.warnings.len(), 1);
        assert!(cf.warnings[0].contains("line 10: overriding earlier entry: foo=bar"));
        assert_eq!(cf.names(), vec!["foo", "mydestination", "relay_domains"]);
    }

    #[test]
    fn empty_value_and_spaces() {
        let cf = parse("relayhost =\nmyhostname=  mx.example.com  \n").unwrap();
        assert_eq!(cf.get("relayhost"), Some(""));
        assert_eq!(cf.get("myhostname"), Some("mx.example.com"));
    }

    #[test]
    fn errors_name_file_and_line() {
        let err = parse("a = b\n\nbad line\n").unwrap_err().to_string();
        assert_eq!(
            err,
            "/etc/corepost/main.cf, line 3: missing '=' after attribute name: \"bad line\""
        );
        let err = parse("  leading = x\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1: logical line must not start with whitespace"),
            "{err}"
        );
        let err = parse("a b = c\n").unwrap_err().to_string();
        assert!(
            err.contains("line 1: whitespace in parameter name \"a b\""),
            "{err}"
        );
        assert_eq!(parse("a-b.c = d\n").unwrap().get("a-b.c"), Some("d"));
        let err = parse("= c\n").unwrap_err().to_string();
        assert!(err.contains("missing attribute name"), "{err}");
    }

    proptest! {
        /// Arbitrary text parses or fails with a located error; never panics.
        #[test]
        fn arbitrary_text_never_panics(s in "[ -~\t\n#=]{0,200}") {
            match parse(&s) {
                Ok(cf) => for e in &cf.entries { prop_assert!(!e.name.is_empty()); },
                Err(e) => prop_assert!(e.to_string().contains("main.cf, line ")),
            }
        }

        /// Writing definitions out (optionally split over continuation lines)
        /// and parsing them back gives the same effective values.
        #[test]
        fn definitions_round_trip(defs in proptest::collection::vec(("[a-z_]{1,10}", "[a-z0-9$,. ]{0,30}", any::<bool>()), 0..10)) {
            let mut text = String::new();
            let mut expected = std::collections::HashMap::new();
            for (name, value, split) in &defs {
                let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
                match (split, value.split_once(' ')) {
                    (true, Some((a, b))) => text.push_str(&format!("{name} = {a}\n\t{b}\n# c\n")),
                    _ => text.push_str(&format!("{name} = {value}\n")),
                }
                expected.insert(name.clone(), value);
            }
            let cf = parse(&text).unwrap();
            for (name, value) in expected {
                prop_assert_eq!(cf.get(&name), Some(value.as_str()));
            }
        }
    }
}
