//! `$name` expansion, with Postfix's syntax and a loop guard.
//!
//! Supported forms (see postconf(5), "parameter expansion"):
//!
//! | form | meaning |
//! |---|---|
//! | `$name`, `${name}`, `$(name)` | the value of `name`, itself expanded; empty when undefined |
//! | `${name?text}` | `text` (expanded) when `name` is non-empty, otherwise empty |
//! | `${name:text}` | `text` (expanded) when `name` is empty or undefined, otherwise empty |
//! | `${name?{text1}:{text2}}` | `text1` when `name` is non-empty, otherwise `text2` |
//! | `${{a} op {b} ? {t} : {f}}` | `t` when the comparison holds, else `f`; `op` is `==`, `!=`, numeric `<`, `<=`, `>`, `>=`, or compatibility-level `<level`, `<=level`, `>level`, `>=level` |
//! | `$$` | a literal `$` |
//!
//! A `$` followed by anything else is kept literally. Expansion of a value
//! that refers back to itself (directly or through other parameters) stops
//! with [`ExpandError::Loop`] naming the cycle, instead of recursing forever;
//! nesting is also capped at [`MAX_DEPTH`] as a second guard.

use std::fmt;

/// Deepest chain of `$name` references we follow before giving up.
pub const MAX_DEPTH: usize = 100;

/// Why a value could not be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    /// `name` refers back to itself; `path` is the chain of references.
    Loop { path: Vec<String> },
    /// References nested deeper than [`MAX_DEPTH`].
    TooDeep { name: String },
    /// A `${` or `$(` without its closing bracket, or a malformed
    /// conditional.
    Syntax { text: String, reason: String },
}

impl fmt::Display for ExpandError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpandError::Loop { path } => {
                write!(f, "parameter expansion loop: ${}", path.join(" -> $"))
            }
            ExpandError::TooDeep { name } => write!(
                f,
                "parameter expansion of ${name} nested more than {MAX_DEPTH} levels deep"
            ),
            ExpandError::Syntax { text, reason } => {
                write!(f, "bad parameter expansion in \"{text}\": {reason}")
            }
        }
    }
}

impl std::error::Error for ExpandError {}

/// Expand every `$name` in `value`. `lookup` returns the *raw* (unexpanded)
/// value of a parameter, or `None` when it is not defined anywhere.
pub fn expand<F>(value: &str, lookup: &F) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String> + ?Sized,
{
    let mut stack = Vec::new();
    expand_in(value, lookup, &mut stack)
}

/// Expand the value of parameter `name` (`lookup(name)`), reporting a value
/// that refers back to `name` as a loop. Unlike expanding `"${name}"`, this
/// works for names that cannot appear in a `$` reference (e.g. those with
/// a '-'). An undefined name expands to empty.
pub fn expand_named<F>(name: &str, lookup: &F) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String> + ?Sized,
{
    let mut stack = Vec::new();
    expand_name(name, lookup, &mut stack)
}

/// The names `value` refers to (without expanding them), for "is this
/// user-defined parameter used anywhere?" checks.
pub fn references(value: &str) -> Vec<String> {
    let mut names = Vec::new();
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            // '$' is ASCII, so i + 1 is a character boundary.
            let rest = &value[i + 1..];
            if rest.starts_with('$') {
                i += 2; // "$$" is a literal dollar
                continue;
            }
            if rest.starts_with(['{', '(']) {
                let body = &rest[1..];
                let end = body.find(|c: char| !is_name_char(c)).unwrap_or(body.len());
                if end > 0 {
                    names.push(body[..end].to_string());
                }
                i += 2;
                continue;
            }
            let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
            if end > 0 {
                names.push(rest[..end].to_string());
                i += 1 + end;
                continue;
            }
        }
        i += 1;
    }
    names
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

fn expand_in<F>(value: &str, lookup: &F, stack: &mut Vec<String>) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String> + ?Sized,
{
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        match after.chars().next() {
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let end =
                    matching_close(after, open, close).ok_or_else(|| ExpandError::Syntax {
                        text: value.to_string(),
                        reason: format!("missing '{close}'"),
                    })?;
                let inner = &after[1..end];
                out.push_str(&expand_braced(inner, value, lookup, stack)?);
                rest = &after[end + 1..];
            }
            Some(c) if is_name_char(c) => {
                let end = after
                    .find(|c: char| !is_name_char(c))
                    .unwrap_or(after.len());
                out.push_str(&expand_name(&after[..end], lookup, stack)?);
                rest = &after[end..];
            }
            _ => {
                // A stray '$' (end of text or followed by punctuation) stays.
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Index in `text` (which starts with `open`) of the bracket closing it.
fn matching_close(text: &str, open: char, close: char) -> Option<usize> {
    let mut depth = 0usize;
    for (i, c) in text.char_indices() {
        if c == open {
            depth += 1;
        } else if c == close {
            depth = depth.checked_sub(1)?;
            if depth == 0 {
                return Some(i);
            }
        }
    }
    None
}

fn expand_name<F>(name: &str, lookup: &F, stack: &mut Vec<String>) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String> + ?Sized,
{
    if stack.iter().any(|n| n == name) {
        let mut path = stack.clone();
        path.push(name.to_string());
        return Err(ExpandError::Loop { path });
    }
    if stack.len() >= MAX_DEPTH {
        return Err(ExpandError::TooDeep {
            name: name.to_string(),
        });
    }
    let Some(raw) = lookup(name) else {
        return Ok(String::new());
    };
    stack.push(name.to_string());
    let result = expand_in(&raw, lookup, stack);
    stack.pop();
    result
}

/// The inside of `${...}`: a name, a conditional on a name, or a comparison.
fn expand_braced<F>(
    inner: &str,
    whole: &str,
    lookup: &F,
    stack: &mut Vec<String>,
) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String> + ?Sized,
{
    let syntax = |reason: &str| ExpandError::Syntax {
        text: whole.to_string(),
        reason: reason.to_string(),
    };
    let trimmed = inner.trim_start();
    if trimmed.starts_with('{') {
        return expand_comparison(trimmed, whole, lookup, stack);
    }
    let name_end = inner
        .find(|c: char| !is_name_char(c))
        .unwrap_or(inner.len());
    let name = &inner[..name_end];
    if name.is_empty() {
        return Err(syntax("empty parameter name"));
    }
    let tail = &inner[name_end..];
    let Some(op) = tail.chars().next() else {
        return expand_name(name, lookup, stack);
    };
    if op != '?' && op != ':' {
        return Err(syntax(&format!("unexpected '{op}' after ${{{name}")));
    }
    let value = expand_name(name, lookup, stack)?;
    let is_set = !value.is_empty();
    let text = &tail[1..];
    // `${name?{a}:{b}}` — both branches given.
    if op == '?'
        && let Some((when_set, when_unset)) = split_branches(text)
    {
        let chosen = if is_set { when_set } else { when_unset };
        return expand_in(chosen, lookup, stack);
    }
    let text = strip_braces(text);
    let take = if op == '?' { is_set } else { !is_set };
    if take {
        expand_in(text, lookup, stack)
    } else {
        Ok(String::new())
    }
}

/// `{a}:{b}` (whitespace allowed around the parts) → (`a`, `b`).
fn split_branches(text: &str) -> Option<(&str, &str)> {
    let text = text.trim();
    if !text.starts_with('{') {
        return None;
    }
    let first_end = matching_close(text, '{', '}')?;
    let first = &text[1..first_end];
    let rest = text[first_end + 1..].trim_start();
    let rest = rest.strip_prefix(':')?.trim_start();
    if !rest.starts_with('{') {
        return None;
    }
    let second_end = matching_close(rest, '{', '}')?;
    if !rest[second_end + 1..].trim().is_empty() {
        return None;
    }
    Some((first.trim(), rest[1..second_end].trim()))
}

/// `{text}` → `text`, otherwise unchanged.
fn strip_braces(text: &str) -> &str {
    let t = text.trim();
    if t.starts_with('{') && matching_close(t, '{', '}') == Some(t.len() - 1) {
        t[1..t.len() - 1].trim()
    } else {
        text
    }
}

/// `{a} op {b} ? {t} : {f}` (Postfix 3.0 comparison syntax).
fn expand_comparison<F>(
    text: &str,
    whole: &str,
    lookup: &F,
    stack: &mut Vec<String>,
) -> Result<String, ExpandError>
where
    F: Fn(&str) -> Option<String> + ?Sized,
{
    let syntax = |reason: &str| ExpandError::Syntax {
        text: whole.to_string(),
        reason: reason.to_string(),
    };
    let (left, rest) = take_group(text).ok_or_else(|| syntax("bad left operand"))?;
    let rest = rest.trim_start();
    let op_end = rest
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(rest.len());
    let op = &rest[..op_end];
    let (right, rest) =
        take_group(rest[op_end..].trim_start()).ok_or_else(|| syntax("bad right operand"))?;
    let rest = rest
        .trim_start()
        .strip_prefix('?')
        .ok_or_else(|| syntax("missing '?' after comparison"))?;
    let (when_true, when_false) =
        split_branches(rest).ok_or_else(|| syntax("expected {true-text}:{false-text}"))?;
    let left = expand_in(left, lookup, stack)?;
    let right = expand_in(right, lookup, stack)?;
    let holds = compare(&left, op, &right)
        .ok_or_else(|| syntax(&format!("bad comparison \"{left}\" {op} \"{right}\"")))?;
    expand_in(if holds { when_true } else { when_false }, lookup, stack)
}

/// `{text} rest` → (`text`, `rest`).
fn take_group(text: &str) -> Option<(&str, &str)> {
    if !text.starts_with('{') {
        return None;
    }
    let end = matching_close(text, '{', '}')?;
    Some((text[1..end].trim(), &text[end + 1..]))
}

fn compare(left: &str, op: &str, right: &str) -> Option<bool> {
    match op {
        "==" => return Some(left == right),
        "!=" => return Some(left != right),
        _ => {}
    }
    if let Some(level_op) = op.strip_suffix("level") {
        let l = compat_level(left)?;
        let r = compat_level(right)?;
        return ordered(l.cmp(&r), level_op);
    }
    let l: i64 = left.trim().parse().ok()?;
    let r: i64 = right.trim().parse().ok()?;
    ordered(l.cmp(&r), op)
}

fn ordered(ord: std::cmp::Ordering, op: &str) -> Option<bool> {
    use std::cmp::Ordering::*;
    Some(match op {
        "<" => ord == Less,
        "<=" => ord != Greater,
        ">" => ord == Greater,
        ">=" => ord != Less,
        _ => return None,
    })
}

/// A compatibility level `major[.minor[.patch]]` as a comparable tuple.
pub fn compat_level(text: &str) -> Option<(u32, u32, u32)> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    let patch = parts.next().map(str::parse).transpose().ok()?.unwrap_or(0);
    if parts.next().is_some() {
        return None;
    }
    Some((major, minor, patch))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn table(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(value: &str, pairs: &[(&str, &str)]) -> Result<String, ExpandError> {
        let t = table(pairs);
        expand(value, &|n: &str| t.get(n).cloned())
    }

    #[test]
    fn plain_forms() {
        let p = [
            ("myhostname", "mx.example.com"),
            ("mydomain", "example.com"),
        ];
        assert_eq!(run("$myhostname", &p).unwrap(), "mx.example.com");
        assert_eq!(run("${myhostname}", &p).unwrap(), "mx.example.com");
        assert_eq!(run("$(myhostname)", &p).unwrap(), "mx.example.com");
        assert_eq!(
            run("localhost.$mydomain, x", &p).unwrap(),
            "localhost.example.com, x"
        );
        assert_eq!(run("$undefined-x", &p).unwrap(), "-x");
        assert_eq!(run("cost $$5 $", &p).unwrap(), "cost $5 $");
    }

    #[test]
    fn recursive() {
        let p = [("a", "$b.x"), ("b", "${c}y"), ("c", "z")];
        assert_eq!(run("$a", &p).unwrap(), "zy.x");
    }

    #[test]
    fn conditionals() {
        let p = [("set", "v"), ("empty", "")];
        assert_eq!(run("${set?yes}", &p).unwrap(), "yes");
        assert_eq!(run("${empty?yes}", &p).unwrap(), "");
        assert_eq!(run("${nothing?yes}", &p).unwrap(), "");
        assert_eq!(run("${set:no}", &p).unwrap(), "");
        assert_eq!(run("${empty:no}", &p).unwrap(), "no");
        assert_eq!(run("${set?{a $set}:{b}}", &p).unwrap(), "a v");
        assert_eq!(run("${stress?{10}:{300}}s", &p).unwrap(), "300s");
        assert_eq!(run("${set?{10}:{300}}s", &p).unwrap(), "10s");
        assert_eq!(run("x${empty?; $set}", &p).unwrap(), "x");
        assert_eq!(run("x${set?; $set}", &p).unwrap(), "x; v");
    }

    #[test]
    fn comparisons() {
        let p = [("compatibility_level", "3.6")];
        assert_eq!(
            run(
                "${{$compatibility_level} <level {2} ? {subnet} : {host}}",
                &p
            )
            .unwrap(),
            "host"
        );
        assert_eq!(
            run(
                "${{$compatibility_level} >=level {3.6} ? {new} : {old}}",
                &p
            )
            .unwrap(),
            "new"
        );
        assert_eq!(run("${{a} == {a} ? {t} : {f}}", &p).unwrap(), "t");
        assert_eq!(run("${{1} > {2} ? {t} : {f}}", &p).unwrap(), "f");
        assert!(run("${{a} < {b} ? {t} : {f}}", &p).is_err());
    }

    #[test]
    fn loops_are_errors() {
        let err = run("$a", &[("a", "$b"), ("b", "x $a")]).unwrap_err();
        assert_eq!(
            err,
            ExpandError::Loop {
                path: vec!["a".into(), "b".into(), "a".into()]
            }
        );
        assert!(run("$self", &[("self", "${self?x}")]).is_err());
    }

    #[test]
    fn syntax_errors() {
        assert!(run("${abc", &[]).is_err());
        assert!(run("${}", &[]).is_err());
        assert!(run("${a!b}", &[]).is_err());
    }

    #[test]
    fn references_lists_names() {
        assert_eq!(
            references("$a, ${b}, $(c) ${d?x} $$ $ $$e"),
            vec!["a", "b", "c", "d"]
        );
    }

    proptest! {
        /// Expansion always terminates: on any graph of parameters that
        /// refer to each other (cycles included) it returns a value or an
        /// error, never recursing without bound.
        #[test]
        fn expansion_terminates(edges in proptest::collection::vec((0usize..6, 0usize..6, 0usize..3), 0..20)) {
            let mut values: HashMap<String, String> = HashMap::new();
            for (from, to, form) in edges {
                let reference = match form {
                    0 => format!("$p{to}"),
                    1 => format!("${{p{to}}}"),
                    _ => format!("${{p{to}?x}}"),
                };
                values.entry(format!("p{from}")).or_default().push_str(&format!(" {reference}"));
            }
            for i in 0..6 {
                let _ = expand(&format!("$p{i}"), &|n: &str| values.get(n).cloned());
            }
        }

        /// A cycle is always reported as a loop.
        #[test]
        fn cycles_are_reported(len in 1usize..8) {
            let values: HashMap<String, String> = (0..len)
                .map(|i| (format!("p{i}"), format!("x $p{}", (i + 1) % len)))
                .collect();
            let result = expand("$p0", &|n: &str| values.get(n).cloned());
            let is_loop = matches!(result, Err(ExpandError::Loop { .. }));
            prop_assert!(is_loop);
        }

        /// Arbitrary text never panics the expander.
        #[test]
        fn arbitrary_text_never_panics(s in "[ -~]{0,40}") {
            let _ = expand(&s, &|n: &str| if n == "a" { Some("$b".into()) } else { None });
        }
    }
}
