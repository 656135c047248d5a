//! `static:value` — a table that returns the same value for every key.
//!
//! Postfix uses it for defaults such as `transport_maps = static:smtp:relay`.
//! Since Postfix 3.0 the value may contain whitespace when written as
//! `static:{ value with spaces }`; the braces and the whitespace just inside
//! them are removed.

use super::{LookupTable, TableError};

/// A table whose every lookup returns one value.
#[derive(Debug)]
pub struct StaticTable {
    spec: String,
    value: String,
}

impl StaticTable {
    /// Parse `name` (the text after `static:`).
    pub fn open(spec: &str, name: &str) -> Result<Self, TableError> {
        let value = if let Some(rest) = name.strip_prefix('{') {
            rest.strip_suffix('}')
                .ok_or_else(|| {
                    TableError::bad_spec(spec, "missing '}'; need \"static:{value...}\"")
                })?
                .trim()
        } else {
            name
        };
        Ok(StaticTable {
            spec: spec.to_string(),
            value: value.to_string(),
        })
    }

    /// The value every lookup returns.
    pub fn value(&self) -> &str {
        &self.value
    }
}

impl LookupTable for StaticTable {
    fn lookup(&self, _key: &str) -> Result<Option<String>, TableError> {
        Ok(Some(self.value.clone()))
    }

    fn spec(&self) -> &str {
        &self.spec
    }

    fn values(&self) -> Option<Vec<String>> {
        Some(vec![self.value.clone()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_returns_the_value() {
        let table = StaticTable::open("static:smtp:[relay]:587", "smtp:[relay]:587").unwrap();
        assert_eq!(
            table.lookup("anything").unwrap().as_deref(),
            Some("smtp:[relay]:587")
        );
        assert_eq!(
            table.lookup("").unwrap().as_deref(),
            Some("smtp:[relay]:587")
        );
        assert_eq!(table.value(), "smtp:[relay]:587");
    }

    #[test]
    fn braces_allow_whitespace() {
        let table = StaticTable::open("static:{ 550 go away }", "{ 550 go away }").unwrap();
        assert_eq!(table.lookup("x").unwrap().as_deref(), Some("550 go away"));
    }

    #[test]
    fn unclosed_brace_is_bad_spec() {
        assert!(matches!(
            StaticTable::open("static:{ x", "{ x"),
            Err(TableError::BadSpec { .. })
        ));
    }
}
