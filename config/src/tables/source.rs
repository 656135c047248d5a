//! Reading a table's source file as Postfix's `readllines()` does.
//!
//! postmap(1), cidr_table(5), regexp_table(5) and pcre_table(5) share one
//! line discipline, so it lives here once:
//!
//! * empty lines, whitespace-only lines and lines whose first non-whitespace
//!   character is `#` are ignored (and do not end a logical line);
//! * a logical line starts with non-whitespace text; a line that starts with
//!   whitespace continues it (the newline is dropped, the leading whitespace
//!   of the continuation is kept);
//! * a continuation line with nothing to continue is ignored, as Postfix
//!   does after a warning.
//!
//! Each logical line remembers the number of its first physical line, which
//! is the line number reported in syntax errors.

use std::path::Path;

use super::TableError;

/// One logical line of a table source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct LogicalLine {
    /// 1-based number of the first physical line.
    pub number: usize,
    /// The joined text, with trailing whitespace removed.
    pub text: String,
}

/// Read the whole file at `path`; `spec` names the table in the error.
pub(super) fn read_source(spec: &str, path: &Path) -> Result<String, TableError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(source) => Err(TableError::Io {
            spec: spec.to_string(),
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Split `text` into logical lines.
pub(super) fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut out: Vec<LogicalLine> = Vec::new();
    for (index, raw) in text.split('\n').enumerate() {
        let body = raw.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let starts_with_space = body.len() != raw.len();
        if starts_with_space {
            // Before the first logical line there is nothing to continue.
            if let Some(last) = out.last_mut() {
                last.text.push_str(raw.trim_end());
            }
            continue;
        }
        out.push(LogicalLine {
            number: index + 1,
            text: raw.trim_end().to_string(),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<(usize, String)> {
        logical_lines(text)
            .into_iter()
            .map(|l| (l.number, l.text))
            .collect()
    }

    #[test]
    fn comments_and_blank_lines_are_ignored() {
        assert_eq!(
            lines("# c\n\n  \t\na b\n  # indented comment\nc d\r\n"),
            vec![(4, "a b".to_string()), (6, "c d".to_string())]
        );
    }

    #[test]
    fn continuation_lines_join_across_comments_and_blanks() {
        assert_eq!(
            lines("key first\n  second\n# note\n\n\tthird\nnext x"),
            vec![
                (1, "key first  second\tthird".to_string()),
                (6, "next x".to_string())
            ]
        );
    }

    #[test]
    fn orphan_continuation_is_ignored() {
        assert_eq!(
            lines("  orphan\n  more\nkey value\n"),
            vec![(3, "key value".to_string())]
        );
    }
}
