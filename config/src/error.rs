//! Configuration errors. Every error from a file names the file and line, in
//! Postfix's "`/etc/postfix/main.cf, line 12: ...`" form.

use std::fmt;
use std::path::{Path, PathBuf};

/// A place in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
}

impl Location {
    pub fn new(path: &Path, line: usize) -> Location {
        Location {
            path: path.to_path_buf(),
            line,
        }
    }
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, line {}", self.path.display(), self.line)
    }
}

/// Why a configuration could not be loaded or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Syntax { at: Location, message: String },
    /// A parameter's value is wrong for its type or cannot be expanded.
    #[error("{origin}parameter {name}: {message}")]
    Value {
        name: String,
        /// `"<file>, line N: "` when the value came from a file, else empty.
        origin: String,
        message: String,
    },
    #[error("{0}")]
    Table(#[from] crate::tables::TableError),
}
