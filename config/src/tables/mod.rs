//! Lookup tables, named `type:name` as in Postfix (`hash:/etc/postfix/transport`).
//!
//! Every table answers one question — "what is the value for this key?" — and
//! the callers (address classification, transport resolution, access checks)
//! decide which keys to ask in which order; that order lives in [`keys`].
//! A `*_maps` parameter names several tables; [`TableList`] asks them in
//! order and returns the first answer.
//!
//! Supported types ([`open_table`] dispatches on the text before the first `:`):
//!
//! | type | source | notes |
//! |---|---|---|
//! | `inline:{ k=v, { k = v with spaces } }` | the spec itself | a later duplicate key replaces an earlier one, as in Postfix |
//! | `static:value`, `static:{ value with spaces }` | the spec itself | every key maps to `value` |
//! | `texthash:file` | a postmap-style text file | |
//! | `hash:file`, `lmdb:file`, `btree:file`, `dbm:file`, `sdbm:file` | the *text source* of the indexed file | no Berkeley DB needed: we read what `postmap` would have indexed (`file`, not `file.db`) |
//! | `cidr:file` | `network/prefix result` lines, `if`/`endif` | |
//! | `regexp:file`, `pcre:file` | `/pattern/flags result`, `if`/`endif` | the `regex` crate, so look-around and back-references are refused at load time |
//! | `unix:passwd.byname`, `unix:group.byname` | the system password / group database | |
//! | `proxy:type:name` | — | opens `type:name` directly; corepost has no proxymap process |
//!
//! Keys are matched case-insensitively: the file-based key/value types fold
//! keys to lower case when loading and when looking up (Postfix's
//! `DICT_FLAG_FOLD_FIX`), and regexp/pcre patterns are case-insensitive
//! unless the `i` flag says otherwise. Files are read as UTF-8; bytes that
//! are not valid UTF-8 are replaced by U+FFFD rather than refused.
//!
//! Where Postfix merely warns about a malformed line and skips it
//! ("skipping this rule"), corepost refuses to open the table and reports
//! the file and line ([`TableError::Syntax`]): a silently skipped rule in an
//! access or transport table is a security or routing bug waiting to
//! happen. The line reported is the first physical line of the logical line
//! (a logical line may span continuation lines).
//!
//! Tables are loaded once, when the configuration is loaded, into immutable
//! in-memory structures: a lookup never performs I/O (except `unix:`, which
//! asks the system databases and so may block on NSS), so lookups are safe
//! on the per-core executors.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod alias_file;
mod cidr;
mod inline;
pub mod keys;
mod regexp;
mod rules;
mod source;
mod static_value;
mod table_list;
mod text_file;
mod unix;

pub use alias_file::{AliasFileTable, open_alias_table, split_alias_value};
pub use cidr::CidrTable;
pub use inline::InlineTable;
pub use regexp::{RegexpDialect, RegexpTable};
pub use static_value::StaticTable;
pub use table_list::TableList;
pub use text_file::TextFileTable;
pub use unix::UnixTable;

/// A loaded lookup table.
pub trait LookupTable: Send + Sync + fmt::Debug {
    /// The value for `key`, or `None` when the table has no entry.
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError>;

    /// The `type:name` this table was opened from, for log messages.
    fn spec(&self) -> &str;

    /// Every value the table can answer, when it can list them (`check`
    /// uses this to see which transports `transport_maps` routes to);
    /// `None` for tables whose results depend on the key (regexp, unix).
    fn values(&self) -> Option<Vec<String>> {
        None
    }
}

/// Why a table could not be opened or queried.
#[derive(Debug)]
pub enum TableError {
    /// `type:name` is not of that form.
    BadSpec { spec: String, reason: String },
    /// The table type is not one corepost supports.
    UnsupportedType { spec: String, kind: String },
    /// The table's file could not be read.
    Io {
        spec: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line of the table's file is malformed.
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    /// A lookup failed at query time (e.g. the system password database).
    Lookup { spec: String, message: String },
}

impl TableError {
    /// A [`TableError::Syntax`] for `line` of the file at `path`.
    pub(crate) fn syntax(path: &Path, line: usize, message: impl Into<String>) -> Self {
        TableError::Syntax {
            path: path.to_path_buf(),
            line,
            message: message.into(),
        }
    }

    /// A [`TableError::BadSpec`] for `spec`.
    pub(crate) fn bad_spec(spec: &str, reason: impl Into<String>) -> Self {
        TableError::BadSpec {
            spec: spec.to_string(),
            reason: reason.into(),
        }
    }
}

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::BadSpec { spec, reason } => {
                write!(f, "bad lookup table \"{spec}\": {reason}")
            }
            TableError::UnsupportedType { spec, kind } => write!(
                f,
                "unsupported lookup table type \"{kind}\" in \"{spec}\" (corepost supports inline, static, texthash, hash, lmdb, btree, dbm, sdbm, cidr, regexp, pcre, unix, proxy)"
            ),
            TableError::Io { spec, path, source } => {
                write!(f, "{spec}: cannot read {}: {source}", path.display())
            }
            TableError::Syntax {
                path,
                line,
                message,
            } => write!(f, "{}, line {line}: {message}", path.display()),
            TableError::Lookup { spec, message } => write!(f, "{spec}: lookup failed: {message}"),
        }
    }
}

impl std::error::Error for TableError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TableError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Open the table named by `spec` (`type:name`), loading it completely.
///
/// Errors: [`TableError::BadSpec`] when there is no `:` or the name is empty
/// (or malformed, for `inline:`/`static:`/`unix:`),
/// [`TableError::UnsupportedType`] for a type corepost does not implement,
/// [`TableError::Io`] when the file cannot be read and
/// [`TableError::Syntax`] for a malformed line.
pub fn open_table(spec: &str) -> Result<Arc<dyn LookupTable>, TableError> {
    let Some((kind, name)) = spec.split_once(':') else {
        return Err(TableError::bad_spec(
            spec,
            "need \"type:name\" form (for example hash:/etc/postfix/transport)",
        ));
    };
    if kind.is_empty() {
        return Err(TableError::bad_spec(spec, "empty table type"));
    }
    if name.is_empty() {
        return Err(TableError::bad_spec(spec, "empty table name"));
    }
    let table: Arc<dyn LookupTable> = match kind {
        // proxymap(8) only changes who opens the table, not what it answers.
        "proxy" => return open_table(name),
        "inline" => Arc::new(InlineTable::open(spec, name)?),
        "static" => Arc::new(StaticTable::open(spec, name)?),
        "texthash" | "hash" | "lmdb" | "btree" | "dbm" | "sdbm" => {
            Arc::new(TextFileTable::open(spec, Path::new(name))?)
        }
        "cidr" => Arc::new(CidrTable::open(spec, Path::new(name))?),
        "regexp" => Arc::new(RegexpTable::open(
            spec,
            Path::new(name),
            RegexpDialect::Posix,
        )?),
        "pcre" => Arc::new(RegexpTable::open(
            spec,
            Path::new(name),
            RegexpDialect::Pcre,
        )?),
        "unix" => Arc::new(UnixTable::open(spec, name)?),
        _ => {
            return Err(TableError::UnsupportedType {
                spec: spec.to_string(),
                kind: kind.to_string(),
            });
        }
    };
    Ok(table)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        file
    }

    #[test]
    fn missing_colon_is_bad_spec() {
        assert!(matches!(
            open_table("hash"),
            Err(TableError::BadSpec { .. })
        ));
        assert!(matches!(
            open_table("hash:"),
            Err(TableError::BadSpec { .. })
        ));
        assert!(matches!(
            open_table(":/etc/x"),
            Err(TableError::BadSpec { .. })
        ));
    }

    #[test]
    fn unknown_type_is_unsupported() {
        match open_table("mysql:/etc/postfix/mysql.cf") {
            Err(TableError::UnsupportedType { kind, spec }) => {
                assert_eq!(kind, "mysql");
                assert_eq!(spec, "mysql:/etc/postfix/mysql.cf");
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn every_indexed_type_reads_the_text_source() {
        let file = file_with("Key value\n");
        let path = file.path().display().to_string();
        for kind in ["texthash", "hash", "lmdb", "btree", "dbm", "sdbm"] {
            let spec = format!("{kind}:{path}");
            let table = open_table(&spec).unwrap();
            assert_eq!(table.spec(), spec);
            assert_eq!(table.lookup("KEY").unwrap().as_deref(), Some("value"));
        }
    }

    #[test]
    fn missing_file_is_io_error_naming_the_spec() {
        let err = open_table("hash:/nonexistent/corepost/table").unwrap_err();
        assert!(matches!(err, TableError::Io { .. }));
        let text = err.to_string();
        assert!(text.contains("hash:/nonexistent/corepost/table"), "{text}");
    }

    #[test]
    fn dispatches_every_type() {
        let cidr = file_with("10.0.0.0/8 internal\n");
        let regexp = file_with("/^a(.*)$/ got $1\n");
        let table = open_table(&format!("cidr:{}", cidr.path().display())).unwrap();
        assert_eq!(
            table.lookup("10.1.2.3").unwrap().as_deref(),
            Some("internal")
        );
        for kind in ["regexp", "pcre"] {
            let table = open_table(&format!("{kind}:{}", regexp.path().display())).unwrap();
            assert_eq!(table.lookup("abc").unwrap().as_deref(), Some("got bc"));
        }
        let table = open_table("inline:{a=b}").unwrap();
        assert_eq!(table.lookup("a").unwrap().as_deref(), Some("b"));
        let table = open_table("static:{ x y }").unwrap();
        assert_eq!(table.lookup("anything").unwrap().as_deref(), Some("x y"));
        assert!(open_table("unix:passwd.byname").is_ok());
    }

    #[test]
    fn proxy_opens_the_inner_table() {
        let table = open_table("proxy:inline:{a=b}").unwrap();
        assert_eq!(table.spec(), "inline:{a=b}");
        assert_eq!(table.lookup("a").unwrap().as_deref(), Some("b"));
        assert!(matches!(
            open_table("proxy:nonsense"),
            Err(TableError::BadSpec { .. })
        ));
    }

    #[test]
    fn syntax_error_display_names_file_and_line() {
        let file = file_with("# comment\n\nkey-without-value\n");
        let err = open_table(&format!("hash:{}", file.path().display())).unwrap_err();
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("{}, line 3:", file.path().display())),
            "{text}"
        );
    }
}
