//! `inline:{ key=value, { key = value with spaces } }` — a table written in
//! the parameter value itself (Postfix 3.0 and later).
//!
//! The text between the outer braces is a list, split by
//! [`split_list`](crate::list::split_list); each element is `key=value`,
//! and an element wrapped in its own braces may contain whitespace and
//! commas, with whitespace around `=` trimmed. As in Postfix's
//! dict_inline, an empty table is an error and a later duplicate key
//! replaces an earlier one.

use std::collections::HashMap;

use super::{LookupTable, TableError};
use crate::list::split_list;

/// A table given inline in its spec.
#[derive(Debug)]
pub struct InlineTable {
    spec: String,
    entries: HashMap<String, String>,
}

impl InlineTable {
    /// Parse `name` (the text after `inline:`, braces included).
    pub fn open(spec: &str, name: &str) -> Result<Self, TableError> {
        const FORM: &str = "need \"inline:{name=value...}\"";
        let inner = name
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .ok_or_else(|| TableError::bad_spec(spec, FORM))?;
        let elements = split_list(inner)
            .map_err(|err| TableError::bad_spec(spec, format!("{err}; {FORM}")))?;
        if elements.is_empty() {
            return Err(TableError::bad_spec(spec, format!("empty table; {FORM}")));
        }
        let mut entries = HashMap::with_capacity(elements.len());
        for element in elements {
            let Some((key, value)) = element.split_once('=') else {
                return Err(TableError::bad_spec(
                    spec,
                    format!("missing '=' after attribute name in \"{element}\"; {FORM}"),
                ));
            };
            let key = key.trim();
            if key.is_empty() {
                return Err(TableError::bad_spec(
                    spec,
                    format!("missing attribute name in \"{element}\"; {FORM}"),
                ));
            }
            entries.insert(key.to_lowercase(), value.trim().to_string());
        }
        Ok(InlineTable {
            spec: spec.to_string(),
            entries,
        })
    }
}

impl LookupTable for InlineTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        Ok(self.entries.get(&key.to_lowercase()).cloned())
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn values(&self) -> Option<Vec<String>> {
        Some(self.entries.values().cloned().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(name: &str) -> Result<InlineTable, TableError> {
        InlineTable::open(&format!("inline:{name}"), name)
    }

    #[test]
    fn plain_and_braced_elements() {
        let table = open("{ key1=value1, { Key2 = value with spaces }, k3=a=b }").unwrap();
        assert_eq!(table.lookup("key1").unwrap().as_deref(), Some("value1"));
        assert_eq!(
            table.lookup("KEY2").unwrap().as_deref(),
            Some("value with spaces")
        );
        assert_eq!(table.lookup("k3").unwrap().as_deref(), Some("a=b"));
        assert_eq!(table.lookup("missing").unwrap(), None);
    }

    #[test]
    fn later_duplicate_replaces_earlier() {
        let table = open("{a=1, a=2}").unwrap();
        assert_eq!(table.lookup("a").unwrap().as_deref(), Some("2"));
    }

    #[test]
    fn empty_value_is_allowed() {
        let table = open("{a=}").unwrap();
        assert_eq!(table.lookup("a").unwrap().as_deref(), Some(""));
    }

    #[test]
    fn malformed_specs_are_bad_spec() {
        for name in [
            "a=b",
            "{a=b",
            "a=b}",
            "{}",
            "{ , }",
            "{a}",
            "{=b}",
            "{ { = b } }",
            "{a=b, {c=d}",
        ] {
            assert!(
                matches!(open(name), Err(TableError::BadSpec { .. })),
                "{name}"
            );
        }
    }
}
