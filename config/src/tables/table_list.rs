//! [`TableList`] — the tables named by a `*_maps` parameter, asked in order.
//!
//! `virtual_alias_maps = hash:/etc/postfix/virtual, regexp:/etc/postfix/re`
//! means: ask the first table, and only when it has no entry ask the next
//! (Postfix's `maps_find()`). A table that *fails* (rather than having no
//! entry) stops the search with that error, as in Postfix, so a broken
//! table is never silently skipped. An empty list is valid and never
//! matches.

use std::sync::Arc;

use super::{LookupTable, TableError, open_table};
use crate::list::split_list;

/// An ordered list of lookup tables.
#[derive(Debug, Clone)]
pub struct TableList {
    spec: String,
    tables: Vec<Arc<dyn LookupTable>>,
}

impl TableList {
    /// Open every table named in `list` (a list value, split with
    /// [`split_list`], so `inline:{ a=b, c=d }` stays one element).
    pub fn open(list: &str) -> Result<Self, TableError> {
        let specs = split_list(list).map_err(|err| TableError::bad_spec(list, err.to_string()))?;
        let tables = specs
            .iter()
            .map(|spec| open_table(spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableList {
            spec: list.trim().to_string(),
            tables,
        })
    }

    /// Open every table named in `list` with `opener` (e.g.
    /// [`super::open_alias_table`] for `alias_maps`).
    pub fn open_with(
        list: &str,
        opener: impl Fn(&str) -> Result<Arc<dyn LookupTable>, TableError>,
    ) -> Result<Self, TableError> {
        let specs = split_list(list).map_err(|err| TableError::bad_spec(list, err.to_string()))?;
        let tables = specs
            .iter()
            .map(|spec| opener(spec))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TableList {
            spec: list.trim().to_string(),
            tables,
        })
    }

    /// Open an alias table list (`alias_maps`): file-backed tables read the
    /// aliases(5) format.
    pub fn open_aliases(list: &str) -> Result<Self, TableError> {
        Self::open_with(list, super::open_alias_table)
    }

    /// A list of already opened tables.
    pub fn from_tables(tables: Vec<Arc<dyn LookupTable>>) -> Self {
        let spec = tables
            .iter()
            .map(|table| table.spec())
            .collect::<Vec<_>>()
            .join(", ");
        TableList { spec, tables }
    }

    /// A list that never matches.
    pub fn empty() -> Self {
        TableList {
            spec: String::new(),
            tables: Vec::new(),
        }
    }

    /// The tables, in lookup order.
    pub fn tables(&self) -> &[Arc<dyn LookupTable>] {
        &self.tables
    }

    /// Whether the list names no tables.
    pub fn is_empty(&self) -> bool {
        self.tables.is_empty()
    }

    /// The first table's value for `key`.
    pub fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        for table in &self.tables {
            if let Some(value) = table.lookup(key)? {
                return Ok(Some(value));
            }
        }
        Ok(None)
    }

    /// The first value for the first of `keys` that any table knows: for
    /// each key in turn, every table is asked (Postfix tries one key against
    /// the whole list before the next key). Returns the key that matched.
    pub fn lookup_first<'k>(
        &self,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Result<Option<(&'k str, String)>, TableError> {
        for key in keys {
            if let Some(value) = self.lookup(key)? {
                return Ok(Some((key, value)));
            }
        }
        Ok(None)
    }
}

impl Default for TableList {
    fn default() -> Self {
        TableList::empty()
    }
}

impl LookupTable for TableList {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        TableList::lookup(self, key)
    }

    /// The list value the tables were opened from.
    fn spec(&self) -> &str {
        &self.spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn first_table_with_an_entry_wins() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"a from-hash\n").unwrap();
        let list = TableList::open(&format!(
            "hash:{}, inline:{{ a=from-inline, b=from-inline }}\n static:{{ fallback value }}",
            file.path().display()
        ))
        .unwrap();
        assert_eq!(list.tables().len(), 3);
        assert_eq!(list.lookup("A").unwrap().as_deref(), Some("from-hash"));
        assert_eq!(list.lookup("b").unwrap().as_deref(), Some("from-inline"));
        assert_eq!(
            list.lookup("zzz").unwrap().as_deref(),
            Some("fallback value")
        );
        assert!(format!("{list:?}").contains("TableList"));
    }

    #[test]
    fn empty_list_never_matches() {
        for text in ["", "  ,\n "] {
            let list = TableList::open(text).unwrap();
            assert!(list.is_empty());
            assert_eq!(list.lookup("anything").unwrap(), None);
        }
        assert_eq!(TableList::default().lookup("x").unwrap(), None);
    }

    #[test]
    fn errors_propagate() {
        assert!(matches!(
            TableList::open("inline:{a=b"),
            Err(TableError::BadSpec { .. })
        ));
        assert!(matches!(
            TableList::open("inline:{a=b}, nosuch:x"),
            Err(TableError::UnsupportedType { .. })
        ));
    }

    #[test]
    fn lookup_first_tries_each_key_against_all_tables() {
        let list = TableList::open("inline:{b=1}, inline:{a=2}").unwrap();
        assert_eq!(
            list.lookup_first(["a", "b"]).unwrap(),
            Some(("a", "2".to_string()))
        );
        assert_eq!(list.lookup_first(["x", "y"]).unwrap(), None);
    }

    #[test]
    fn from_tables_joins_specs() {
        let list = TableList::from_tables(vec![
            open_table("static:x").unwrap(),
            open_table("inline:{a=b}").unwrap(),
        ]);
        assert_eq!(list.spec(), "static:x, inline:{a=b}");
        assert_eq!(list.lookup("a").unwrap().as_deref(), Some("x"));
    }
}
