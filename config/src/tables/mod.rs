//! Lookup tables, named `type:name` as in Postfix (`hash:/etc/postfix/transport`).
//!
//! Every table answers one question — "what is the value for this key?" — and
//! the callers (address classification, transport resolution, access checks)
//! decide which keys to ask in which order; that order lives in [`keys`].
//!
//! Supported types:
//!
//! | type | source | notes |
//! |---|---|---|
//! | `inline:{ k=v, { k = v with spaces } }` | the spec itself | |
//! | `static:value` | the spec itself | every key maps to `value` |
//! | `texthash:file` | a postmap-style text file | |
//! | `hash:file`, `lmdb:file`, `btree:file` | the *text source* of the indexed file | no Berkeley DB needed: we read what `postmap` would have indexed |
//! | `cidr:file` | `network/prefix result` lines, `if`/`endif` | |
//! | `regexp:file`, `pcre:file` | `/pattern/flags result`, `if`/`endif` | the `regex` crate, so look-around and back-references are refused at load time |
//! | `unix:passwd.byname` | the system password database | |
//!
//! Keys are matched case-insensitively (Postfix folds keys to lower case for
//! every table type except where a regexp flag says otherwise).
//!
//! Tables are loaded once, when the configuration is loaded, into immutable
//! in-memory structures: a lookup never performs I/O (except `unix:`), so
//! lookups are safe on the per-core executors.

use std::fmt;
use std::path::PathBuf;

pub mod keys;

/// A loaded lookup table.
pub trait LookupTable: Send + Sync + fmt::Debug {
    /// The value for `key`, or `None` when the table has no entry.
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError>;

    /// The `type:name` this table was opened from, for log messages.
    fn spec(&self) -> &str;
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

impl fmt::Display for TableError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TableError::BadSpec { spec, reason } => {
                write!(f, "bad lookup table \"{spec}\": {reason}")
            }
            TableError::UnsupportedType { spec, kind } => write!(
                f,
                "unsupported lookup table type \"{kind}\" in \"{spec}\" (corepost supports inline, static, texthash, hash, lmdb, btree, cidr, regexp, pcre, unix)"
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
