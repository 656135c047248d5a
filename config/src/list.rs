//! List values: Postfix's "comma and/or whitespace separated" syntax.
//!
//! Many parameters (`mydestination`, `mynetworks`, `smtpd_*_restrictions`, every
//! `*_maps`) hold lists. Postfix splits them on commas and whitespace, and lets
//! an element contain those characters when it is wrapped in braces:
//! `{ text with spaces, and commas }` is one element, `text with spaces, and
//! commas` (the braces and the whitespace just inside them are removed). The
//! same rule applies inside `inline:{ ... }` tables and `-o { name = value }`
//! in master.cf, so it lives here once.

use std::fmt;

/// A list value could not be split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListError {
    /// A `{` without its closing `}` (or the reverse).
    UnbalancedBrace { text: String },
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListError::UnbalancedBrace { text } => {
                write!(f, "unbalanced '{{' or '}}' in list: \"{text}\"")
            }
        }
    }
}

impl std::error::Error for ListError {}

/// Characters that separate list elements.
pub fn is_separator(c: char) -> bool {
    c == ',' || c.is_ascii_whitespace()
}

/// Split a list value into its elements.
///
/// Empty elements (`a,,b`) are dropped, as Postfix does. A `{...}` group is
/// one element with the braces and surrounding whitespace removed; braces
/// nest, so `{ a {b} }` is the element `a {b}`. A brace in the middle of an
/// element (`inline:{a=b}`) does not start a group but must still balance:
/// the element runs to the matching `}` even across separators, which is what
/// makes `inline:{ a=b, c=d }` one element.
pub fn split_list(value: &str) -> Result<Vec<String>, ListError> {
    split_with(value, is_separator)
}

/// Split on whitespace only, with the same brace grouping: master.cf command
/// arguments, where a comma belongs to the argument
/// (`-o smtpd_client_restrictions=permit_sasl_authenticated,reject`).
pub fn split_args(value: &str) -> Result<Vec<String>, ListError> {
    split_with(value, |c| c.is_ascii_whitespace())
}

fn split_with(value: &str, is_separator: fn(char) -> bool) -> Result<Vec<String>, ListError> {
    let mut out = Vec::new();
    let mut chars = value.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if is_separator(c) {
            chars.next();
            continue;
        }
        if c == '}' {
            return Err(ListError::UnbalancedBrace {
                text: value.to_string(),
            });
        }
        if c == '{' {
            // A braced group: take everything up to the matching brace.
            chars.next();
            let mut depth = 1usize;
            let mut end = None;
            for (i, ch) in chars.by_ref() {
                match ch {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(i);
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let end = end.ok_or_else(|| ListError::UnbalancedBrace {
                text: value.to_string(),
            })?;
            let inner = value[start + 1..end].trim();
            out.push(inner.to_string());
            continue;
        }
        // A plain element; braces inside it must balance and protect separators.
        let mut depth = 0usize;
        let mut end = value.len();
        while let Some(&(i, ch)) = chars.peek() {
            if depth == 0 && is_separator(ch) {
                end = i;
                break;
            }
            match ch {
                '{' => depth += 1,
                '}' => {
                    if depth == 0 {
                        return Err(ListError::UnbalancedBrace {
                            text: value.to_string(),
                        });
                    }
                    depth -= 1;
                }
                _ => {}
            }
            chars.next();
        }
        if depth != 0 {
            return Err(ListError::UnbalancedBrace {
                text: value.to_string(),
            });
        }
        out.push(value[start..end].to_string());
    }
    Ok(out)
}

/// Most `/file` includes nested inside each other in one match list.
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// One element of a Postfix match list (`mynetworks`, `mydestination`,
/// `relay_domains`, ...), with `/file/name` elements already replaced by
/// the words of that file (`#` comments stripped), recursively.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MatchElement {
    /// Written with a leading `!`: a match means "not in the list".
    pub negated: bool,
    pub pattern: String,
}

/// Split a match list, inlining `/file` elements (a `!` before a file
/// negates each of its elements).
pub fn match_list_elements(value: &str) -> Result<Vec<MatchElement>, String> {
    let mut out = Vec::new();
    add_match_elements(value, false, 0, &mut out)?;
    Ok(out)
}

fn add_match_elements(
    value: &str,
    negate: bool,
    depth: usize,
    out: &mut Vec<MatchElement>,
) -> Result<(), String> {
    for word in split_list(value).map_err(|e| e.to_string())? {
        let (negated, word) = match word.strip_prefix('!') {
            Some(w) => (!negate, w.to_string()),
            None => (negate, word),
        };
        if word.starts_with('/') {
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(format!("{word}: files nested too deeply"));
            }
            let text = std::fs::read_to_string(&word).map_err(|e| format!("{word}: {e}"))?;
            let words: Vec<&str> = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or(""))
                .collect();
            add_match_elements(&words.join(" "), negated, depth + 1, out)?;
            continue;
        }
        out.push(MatchElement {
            negated,
            pattern: word,
        });
    }
    Ok(())
}

/// Join elements back into a list value that [`split_list`] splits into the
/// same elements: elements containing separators or starting with `{` are
/// wrapped in braces.
pub fn join_list<S: AsRef<str>>(items: &[S]) -> String {
    let mut out = String::new();
    for item in items {
        let item = item.as_ref();
        if !out.is_empty() {
            out.push_str(", ");
        }
        let needs_braces = item.is_empty()
            || item.starts_with('{')
            || (item.chars().any(is_separator) && !is_self_delimited(item));
        if needs_braces {
            out.push_str("{ ");
            out.push_str(item);
            out.push_str(" }");
        } else {
            out.push_str(item);
        }
    }
    out
}

/// An element like `inline:{a=b, c=d}` protects its own separators.
fn is_self_delimited(item: &str) -> bool {
    let mut depth = 0usize;
    for ch in item.chars() {
        match ch {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            c if is_separator(c) && depth == 0 => return false,
            _ => {}
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commas_and_whitespace_separate() {
        assert_eq!(
            split_list("a, b,c\td\n e,,").unwrap(),
            vec!["a", "b", "c", "d", "e"]
        );
    }

    #[test]
    fn braces_group() {
        assert_eq!(
            split_list("a { b c, d } e").unwrap(),
            vec!["a", "b c, d", "e"]
        );
        assert_eq!(
            split_list("inline:{ a=b, c=d }, static:x").unwrap(),
            vec!["inline:{ a=b, c=d }", "static:x"]
        );
        assert_eq!(split_list("{ a {b} }").unwrap(), vec!["a {b}"]);
    }

    #[test]
    fn unbalanced_is_an_error() {
        assert!(split_list("a { b").is_err());
        assert!(split_list("a } b").is_err());
        assert!(split_list("inline:{a=b").is_err());
    }

    #[test]
    fn args_split_on_whitespace_only() {
        assert_eq!(
            split_args("smtpd -o a=b,c -o { d = e f }").unwrap(),
            vec!["smtpd", "-o", "a=b,c", "-o", "d = e f"]
        );
    }

    #[test]
    fn match_lists_inline_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("nets");
        std::fs::write(&file, "# trusted\n10.0.0.0/8 !10.1.0.0/16\n").unwrap();
        let loop_file = dir.path().join("loop");
        std::fs::write(&loop_file, loop_file.display().to_string()).unwrap();
        let got = match_list_elements(&format!("a, !{}, b", file.display())).unwrap();
        let flat: Vec<(bool, &str)> = got
            .iter()
            .map(|e| (e.negated, e.pattern.as_str()))
            .collect();
        assert_eq!(
            flat,
            vec![
                (false, "a"),
                (true, "10.0.0.0/8"),
                (false, "10.1.0.0/16"),
                (false, "b")
            ]
        );
        assert!(match_list_elements("/no/such/file").is_err());
        assert!(
            match_list_elements(&loop_file.display().to_string())
                .unwrap_err()
                .contains("nested too deeply")
        );
    }

    #[test]
    fn empty_list() {
        assert!(split_list("").unwrap().is_empty());
        assert!(split_list(" , ,\t").unwrap().is_empty());
    }

    fn element() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9:/._@-]{1,12}",
            "[a-z]{1,5}( [a-z]{1,5}){1,3}",
            "[a-z]{1,5}, [a-z]{1,5}",
            "inline:\\{ [a-z]=[a-z], [a-z]=[a-z] \\}",
        ]
    }

    proptest! {
        /// Splitting what join produced gives back the same elements, and
        /// joining again gives the same text (the round trip is stable).
        #[test]
        fn join_then_split_is_identity(items in proptest::collection::vec(element(), 0..8)) {
            let joined = join_list(&items);
            let split = split_list(&joined).unwrap();
            prop_assert_eq!(&split, &items);
            prop_assert_eq!(join_list(&split), joined);
        }

        /// Any input either splits or reports an error, never panics; an
        /// input without braces splits into non-empty elements free of
        /// separators.
        #[test]
        fn split_never_panics(s in "[ -~\t\n]{0,64}") {
            let result = split_list(&s);
            if !s.contains('{') && !s.contains('}') {
                let items = result.unwrap();
                for item in items {
                    prop_assert!(!item.is_empty());
                    prop_assert!(!item.contains(is_separator));
                }
            }
        }
    }
}
