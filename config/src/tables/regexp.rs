//! `regexp:file` and `pcre:file` — regular-expression rules
//! (regexp_table(5), pcre_table(5)), both compiled with the `regex` crate.
//!
//! Each logical line is one of
//!
//! ```text
//! /pattern/flags result       # any delimiter character may replace '/'
//! !/pattern/flags result      # matches keys the pattern does not match
//! if /pattern/flags           # also `if !/pattern/flags`
//! endif
//! ```
//!
//! Rules are tried in file order against the lookup key (unanchored, not
//! case-folded) and the first match wins. In the result, `$1`, `${1}` and
//! `$(1)` are replaced by the text of that capture group (empty when the
//! group did not participate in the match) and `$$` by `$`.
//!
//! Flags, as in Postfix (each letter *toggles* its setting):
//!
//! | flag | regexp: | pcre: |
//! |---|---|---|
//! | `i` | case-insensitive (default on) | same |
//! | `m` | multi-line `^`/`$`, and `.` no longer matches a newline (default off) | multi-line `^`/`$` (default off) |
//! | `x` | refused: POSIX *basic* syntax, which corepost does not implement | extended: whitespace and `#` comments ignored (default off) |
//! | `s` | — | `.` matches newline |
//! | `U` | — | swap greedy and lazy quantifiers |
//! | `A` | — | anchor the match at the start of the key |
//! | `E`, `X` | — | accepted; already the `regex` crate's behaviour |
//!
//! The `regex` crate guarantees linear-time matching, so it has no
//! look-around and no back-references; a pattern that uses them (or is
//! otherwise not valid for the crate) is a syntax error naming the file,
//! the line and the crate's message — at load time, never at lookup time.
//!
//! Other errors (Postfix warns and skips the rule; corepost refuses the
//! table): missing closing delimiter, unknown flag, bad `$` syntax in the
//! result, `$n` beyond the pattern's groups, `$n` in the result of a negated
//! rule, the obsolete `/pattern1/!/pattern2/` form, text after an `if`
//! pattern or `endif`, unbalanced `if`/`endif`, and lines that are none of
//! the above. A rule without a result returns the empty string, as Postfix
//! does after a warning.

use std::path::Path;

use regex::{Captures, Regex, RegexBuilder};

use super::rules::{Condition, Outcome, RuleList, RuleListBuilder};
use super::source::{logical_lines, read_source};
use super::{LookupTable, TableError};

/// Which flag set a file uses: `regexp:` (POSIX flags) or `pcre:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegexpDialect {
    /// regexp_table(5).
    Posix,
    /// pcre_table(5).
    Pcre,
}

/// One piece of a result template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Group(usize),
}

/// A rule's result with its `$n` references parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Template {
    segments: Vec<Segment>,
    /// Highest group referenced (0 = none, so no captures are needed).
    max_group: usize,
}

impl Template {
    fn expand(&self, captures: Option<&Captures<'_>>) -> String {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Group(n) => {
                    if let Some(group) = captures.and_then(|c| c.get(*n)) {
                        out.push_str(group.as_str());
                    }
                }
            }
        }
        out
    }
}

/// A compiled pattern and whether its rule needs capture groups.
#[derive(Debug)]
struct Pattern {
    regex: Regex,
    wants_captures: bool,
}

/// A loaded regexp or pcre table.
#[derive(Debug)]
pub struct RegexpTable {
    spec: String,
    rules: RuleList<Pattern, Template>,
}

impl RegexpTable {
    /// Load the table at `path`.
    pub fn open(spec: &str, path: &Path, dialect: RegexpDialect) -> Result<Self, TableError> {
        let text = read_source(spec, path)?;
        Self::parse(spec, path, &text, dialect)
    }

    /// Parse table `text`; `path` is only used in error messages.
    pub fn parse(
        spec: &str,
        path: &Path,
        text: &str,
        dialect: RegexpDialect,
    ) -> Result<Self, TableError> {
        let mut builder = RuleListBuilder::new();
        for line in logical_lines(text) {
            let fail = |message: String| TableError::syntax(path, line.number, message);
            let text = line.text.trim();
            let starts_alphanumeric = text.chars().next().is_some_and(char::is_alphanumeric);
            if !starts_alphanumeric {
                let (source, rest) = split_pattern(text, dialect).map_err(fail)?;
                if rest.starts_with('!') {
                    return Err(fail(
                        "the /pattern1/!/pattern2/ form is not supported; \
                         use \"if !/pattern2/\" … \"endif\" instead"
                            .to_string(),
                    ));
                }
                let template = parse_template(rest.trim()).map_err(fail)?;
                if template.max_group > 0 && source.negated {
                    return Err(fail(
                        "$number found in negative match replacement text".to_string(),
                    ));
                }
                let condition = compile(source, template.max_group > 0).map_err(fail)?;
                let groups = condition.pattern.regex.captures_len().saturating_sub(1);
                if template.max_group > groups {
                    return Err(fail(format!(
                        "out of range replacement index \"{}\": the pattern has {groups} group(s)",
                        template.max_group
                    )));
                }
                builder.push_match(condition, template);
            } else if let Some(rest) = keyword(text, "if") {
                let (source, extra) = split_pattern(rest, dialect).map_err(fail)?;
                let extra = extra.trim();
                if !extra.is_empty() {
                    return Err(fail(format!(
                        "unexpected text after if pattern: \"{extra}\" \
                         (do not indent the rules between if and endif)"
                    )));
                }
                builder.push_if(compile(source, false).map_err(fail)?, line.number);
            } else if let Some(rest) = keyword(text, "endif") {
                if !rest.trim().is_empty() {
                    return Err(fail(format!(
                        "unexpected text after endif: \"{}\"",
                        rest.trim()
                    )));
                }
                builder.push_endif(path, line.number)?;
            } else {
                return Err(fail(format!(
                    "unrecognized request \"{text}\": expected /pattern/ result, if or endif"
                )));
            }
        }
        Ok(RegexpTable {
            spec: spec.to_string(),
            rules: builder.finish(path)?,
        })
    }

    /// Number of rules, counting `if` and `endif` lines.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

impl LookupTable for RegexpTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        let hit = self.rules.first_match(|pattern| {
            if pattern.wants_captures {
                match pattern.regex.captures(key) {
                    Some(captures) => Outcome::Matched(Some(captures)),
                    None => Outcome::NotMatched,
                }
            } else if pattern.regex.is_match(key) {
                Outcome::Matched(None)
            } else {
                Outcome::NotMatched
            }
        });
        Ok(hit.map(|(template, captures)| template.expand(captures.flatten().as_ref())))
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// A pattern as written, before compilation.
struct PatternSource {
    text: String,
    negated: bool,
    case_insensitive: bool,
    multi_line: bool,
    extended: bool,
    dot_matches_newline: bool,
    swap_greed: bool,
    anchored: bool,
}

/// Parse `[!…]<d>pattern<d>flags` from the start of `text`; return it and
/// the text after the flags.
fn split_pattern(text: &str, dialect: RegexpDialect) -> Result<(PatternSource, &str), String> {
    let mut negated = false;
    let mut rest = text;
    loop {
        if let Some(after) = rest.strip_prefix('!') {
            negated = !negated;
            rest = after;
        } else if rest.starts_with(char::is_whitespace) {
            rest = rest.trim_start();
        } else {
            break;
        }
    }
    let mut chars = rest.char_indices();
    let Some((_, delimiter)) = chars.next() else {
        return Err("no regexp".to_string());
    };
    let body_start = delimiter.len_utf8();
    let mut body_end = None;
    let mut escaped = false;
    for (index, ch) in chars {
        if escaped {
            escaped = false;
        } else if ch == '\\' {
            escaped = true;
        } else if ch == delimiter {
            body_end = Some(index);
            break;
        }
    }
    let Some(body_end) = body_end else {
        return Err(format!("no closing regexp delimiter \"{delimiter}\""));
    };
    let body = rest.get(body_start..body_end).unwrap_or_default();
    let after_body = rest
        .get(body_end + delimiter.len_utf8()..)
        .unwrap_or_default();
    let mut source = PatternSource {
        text: body.to_string(),
        negated,
        case_insensitive: true,
        multi_line: false,
        extended: false,
        dot_matches_newline: false,
        swap_greed: false,
        anchored: false,
    };
    let flags_end = after_body
        .find(|c: char| c.is_whitespace() || c == '!')
        .unwrap_or(after_body.len());
    let (flags, remainder) = after_body.split_at(flags_end);
    for flag in flags.chars() {
        match (flag, dialect) {
            ('i', _) => source.case_insensitive = !source.case_insensitive,
            ('m', _) => source.multi_line = !source.multi_line,
            ('x', RegexpDialect::Posix) => {
                return Err("regexp option \"x\" (POSIX basic regular expressions) \
                            is not supported; use extended syntax, or a pcre: table"
                    .to_string());
            }
            ('x', RegexpDialect::Pcre) => source.extended = !source.extended,
            ('s', RegexpDialect::Pcre) => {
                source.dot_matches_newline = !source.dot_matches_newline;
            }
            ('U', RegexpDialect::Pcre) => source.swap_greed = !source.swap_greed,
            ('A', RegexpDialect::Pcre) => source.anchored = !source.anchored,
            ('E' | 'X', RegexpDialect::Pcre) => {}
            _ => return Err(format!("unknown regexp option \"{flag}\"")),
        }
    }
    if dialect == RegexpDialect::Posix {
        // POSIX regcomp: `.` matches a newline unless REG_NEWLINE (`m`).
        // Keys with newlines are folded headers (header_checks).
        source.dot_matches_newline = !source.multi_line;
    }
    Ok((source, remainder))
}

fn compile(source: PatternSource, wants_captures: bool) -> Result<Condition<Pattern>, String> {
    let text = if source.anchored {
        // The newline ends a trailing `#` comment in extended mode.
        let end = if source.extended { "\n)" } else { ")" };
        format!("\\A(?:{}{end}", source.text)
    } else {
        source.text
    };
    let regex = RegexBuilder::new(&text)
        .case_insensitive(source.case_insensitive)
        .multi_line(source.multi_line)
        .ignore_whitespace(source.extended)
        .dot_matches_new_line(source.dot_matches_newline)
        .swap_greed(source.swap_greed)
        .build()
        .map_err(|err| format!("cannot compile regular expression: {err}"))?;
    Ok(Condition {
        pattern: Pattern {
            regex,
            wants_captures,
        },
        negated: source.negated,
    })
}

/// Parse a result as Postfix's `mac_parse()` does for regexp tables:
/// `$$`, `$n`, `${n}`, `$(n)`; a name that is not a positive number, or a
/// `$` not followed by a name, is an error.
fn parse_template(text: &str) -> Result<Template, String> {
    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut max_group = 0;
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        literal.push_str(rest.get(..dollar).unwrap_or_default());
        let after = rest.get(dollar + 1..).unwrap_or_default();
        let (name, next) = if let Some(tail) = after.strip_prefix('$') {
            literal.push('$');
            rest = tail;
            continue;
        } else if let Some(close) = match after.chars().next() {
            Some('{') => Some('}'),
            Some('(') => Some(')'),
            _ => None,
        } {
            let inner = after.get(1..).unwrap_or_default();
            let Some(end) = inner.find(close) else {
                return Err(format!(
                    "bad replacement syntax: missing '{close}' in \"{text}\""
                ));
            };
            (
                inner.get(..end).unwrap_or_default(),
                inner.get(end + 1..).unwrap_or_default(),
            )
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            after.split_at(end)
        };
        if name.is_empty() {
            return Err(format!(
                "bad replacement syntax: empty '$' name in \"{text}\""
            ));
        }
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("non-numeric replacement index \"{name}\""));
        }
        let group = match name.parse::<usize>() {
            Ok(n) if n >= 1 => n,
            _ => return Err(format!("out-of-range replacement index \"{name}\"")),
        };
        max_group = max_group.max(group);
        if !literal.is_empty() {
            segments.push(Segment::Literal(std::mem::take(&mut literal)));
        }
        segments.push(Segment::Group(group));
        rest = next;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        segments.push(Segment::Literal(literal));
    }
    Ok(Template {
        segments,
        max_group,
    })
}

/// The rest of `text` when it starts with `word` (any case) and the next
/// character is not alphanumeric, as Postfix's `strncasecmp` + `!ISALNUM`.
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let rest = text.get(word.len()..)?;
    if !head.eq_ignore_ascii_case(word) || rest.starts_with(char::is_alphanumeric) {
        return None;
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_as(text: &str, dialect: RegexpDialect) -> Result<RegexpTable, TableError> {
        RegexpTable::parse("regexp:t", Path::new("t"), text, dialect)
    }

    fn parse(text: &str) -> Result<RegexpTable, TableError> {
        parse_as(text, RegexpDialect::Posix)
    }

    fn lookup(table: &RegexpTable, key: &str) -> Option<String> {
        table.lookup(key).unwrap()
    }

    fn error_as(text: &str, dialect: RegexpDialect) -> (usize, String) {
        match parse_as(text, dialect) {
            Err(TableError::Syntax { line, message, .. }) => (line, message),
            other => panic!("expected a syntax error for {text:?}, got {other:?}"),
        }
    }

    #[test]
    fn first_match_wins_and_substitutes() {
        let table = parse(
            "# header checks\n\
             /^(.*)@example\\.com$/   ${1}+archive@example.net\n\
             /^user-([a-z]+)@/      mailbox $1, costs $$5\n\
             /./                    other\n",
        )
        .unwrap();
        assert_eq!(
            lookup(&table, "Alice@EXAMPLE.com").as_deref(),
            Some("Alice+archive@example.net")
        );
        assert_eq!(
            lookup(&table, "user-bob@x").as_deref(),
            Some("mailbox bob, costs $5")
        );
        assert_eq!(lookup(&table, "z").as_deref(), Some("other"));
        assert_eq!(lookup(&table, ""), None);
    }

    #[test]
    fn posix_dot_matches_newline_unless_m_pcre_only_with_s() {
        let key = "Subject: one\n\ttwo";
        let table = parse("/^Subject:.*two/ yes\n").unwrap();
        assert_eq!(lookup(&table, key).as_deref(), Some("yes"));
        let table = parse("/^Subject:.*two/m yes\n").unwrap();
        assert_eq!(lookup(&table, key), None);
        let table = parse_as("/^Subject:.*two/ yes\n", RegexpDialect::Pcre).unwrap();
        assert_eq!(lookup(&table, key), None);
        let table = parse_as("/^Subject:.*two/s yes\n", RegexpDialect::Pcre).unwrap();
        assert_eq!(lookup(&table, key).as_deref(), Some("yes"));
    }

    #[test]
    fn dollar_forms() {
        let table = parse("/(a)(b)?(c)/ [$1|${2}|$(3)|$$|${3}x]\n").unwrap();
        // Group 2 did not participate: it substitutes the empty string.
        assert_eq!(lookup(&table, "ac").as_deref(), Some("[a||c|$|cx]"));
        assert_eq!(lookup(&table, "abc").as_deref(), Some("[a|b|c|$|cx]"));
    }

    #[test]
    fn case_flag_toggles() {
        let table = parse("/^abc$/i sensitive\n/^abc$/ insensitive\n").unwrap();
        assert_eq!(lookup(&table, "abc").as_deref(), Some("sensitive"));
        assert_eq!(lookup(&table, "ABC").as_deref(), Some("insensitive"));
        // Toggling twice restores the default.
        let table = parse("/^abc$/ii both\n").unwrap();
        assert_eq!(lookup(&table, "ABC").as_deref(), Some("both"));
    }

    #[test]
    fn multi_line_flag() {
        let table = parse("/^b$/m hit\n").unwrap();
        assert_eq!(lookup(&table, "a\nb\nc").as_deref(), Some("hit"));
        let table = parse("/^b$/ hit\n").unwrap();
        assert_eq!(lookup(&table, "a\nb\nc"), None);
    }

    #[test]
    fn pcre_flags() {
        let pcre = RegexpDialect::Pcre;
        let table = parse_as("/ a b  # comment\n  c /x spaced\n", pcre).unwrap();
        assert_eq!(lookup(&table, "xabcx").as_deref(), Some("spaced"));
        let table = parse_as("/a.b/s dotall\n", pcre).unwrap();
        assert_eq!(lookup(&table, "a\nb").as_deref(), Some("dotall"));
        let table = parse_as("/(a+)/U $1\n", pcre).unwrap();
        assert_eq!(lookup(&table, "aaa").as_deref(), Some("a"));
        let table = parse_as("/b/A anchored\n/b # x/Ax anchored-x\n", pcre).unwrap();
        assert_eq!(lookup(&table, "abc"), None);
        assert_eq!(lookup(&table, "bc").as_deref(), Some("anchored"));
        let table = parse_as("/b/EX ok\n", pcre).unwrap();
        assert_eq!(lookup(&table, "b").as_deref(), Some("ok"));
    }

    #[test]
    fn other_delimiters_and_escaped_delimiters() {
        let table = parse("%^/usr/(.*)% path $1\n|a\\|b| bar\n/a\\/b/ slash\n").unwrap();
        assert_eq!(lookup(&table, "/usr/bin").as_deref(), Some("path bin"));
        assert_eq!(lookup(&table, "a|b").as_deref(), Some("bar"));
        assert_eq!(lookup(&table, "a/b").as_deref(), Some("slash"));
    }

    #[test]
    fn negation() {
        let table = parse("!/@example\\.com$/ foreign\n! ! /^x/ double\n").unwrap();
        assert_eq!(lookup(&table, "a@example.org").as_deref(), Some("foreign"));
        assert_eq!(lookup(&table, "x@example.com").as_deref(), Some("double"));
        assert_eq!(lookup(&table, "a@example.com"), None);
    }

    #[test]
    fn if_endif_blocks_nest() {
        let table = parse(
            "if /@example\\.com$/\n\
             If !/^postmaster@/\n\
             /^(.*)@/ local $1\n\
             endif\n\
             /./ postmaster\n\
             ENDIF\n\
             /./ elsewhere\n",
        )
        .unwrap();
        assert_eq!(
            lookup(&table, "bob@example.com").as_deref(),
            Some("local bob")
        );
        assert_eq!(
            lookup(&table, "postmaster@example.com").as_deref(),
            Some("postmaster")
        );
        assert_eq!(lookup(&table, "bob@other").as_deref(), Some("elsewhere"));
    }

    #[test]
    fn missing_result_is_empty_string() {
        let table = parse("/a/\n").unwrap();
        assert_eq!(lookup(&table, "a").as_deref(), Some(""));
    }

    #[test]
    fn continuation_lines_extend_the_result() {
        let table = parse("/a/ first\n   second\n").unwrap();
        assert_eq!(lookup(&table, "a").as_deref(), Some("first   second"));
    }

    #[test]
    fn every_syntax_error_names_its_line() {
        let posix = RegexpDialect::Posix;
        let pcre = RegexpDialect::Pcre;
        let cases: &[(&str, RegexpDialect, usize, &str)] = &[
            ("/a/ ok\n\n/(?=a)b/ r\n", posix, 3, "cannot compile"),
            ("/(a)\\1/ r\n", pcre, 1, "cannot compile"),
            ("/(?<=a)b/ r\n", pcre, 1, "look-around"),
            ("/a/ ok\n/abc r\n", posix, 2, "no closing regexp delimiter"),
            ("/a\\/ r\n", posix, 1, "no closing regexp delimiter"),
            ("! \n", posix, 1, "no regexp"),
            ("/a/q r\n", posix, 1, "unknown regexp option \"q\""),
            ("/a/s r\n", posix, 1, "unknown regexp option \"s\""),
            ("/a/x r\n", posix, 1, "POSIX basic"),
            ("/a/ $\n", posix, 1, "bad replacement syntax"),
            ("/a/ $ x\n", posix, 1, "bad replacement syntax"),
            ("/a/ ${1\n", posix, 1, "missing '}'"),
            ("/a/ $(1\n", posix, 1, "missing ')'"),
            ("/a/ ${}\n", posix, 1, "bad replacement syntax"),
            ("/(a)/ $1x\n", posix, 1, "non-numeric"),
            ("/(a)/ $name\n", posix, 1, "non-numeric"),
            ("/(a)/ $0\n", posix, 1, "out-of-range"),
            ("/(a)/ $99999999999999999999999\n", posix, 1, "out-of-range"),
            (
                "/(a)/ $2\n",
                posix,
                1,
                "out of range replacement index \"2\"",
            ),
            ("!/(a)/ $1\n", posix, 1, "negative match"),
            ("/a/!/b/ r\n", posix, 1, "not supported"),
            ("/a/ r\nif /a/ extra\nendif\n", posix, 2, "unexpected text"),
            ("if /a/\nendif extra\n", posix, 2, "unexpected text"),
            ("if\nendif\n", posix, 1, "no regexp"),
            ("if /(?=x)/\nendif\n", posix, 1, "cannot compile"),
            ("/a/ r\nendif\n", posix, 2, "endif without"),
            ("if /a/\n/b/ r\n", posix, 1, "no matching endif"),
            ("if /a/\nif /b/\nendif\n", posix, 1, "no matching endif"),
            ("/a/ ok\nfoo bar\n", posix, 2, "unrecognized"),
            ("ifx /a/\n", posix, 1, "unrecognized"),
        ];
        for (text, dialect, want_line, want_message) in cases {
            let (line, message) = error_as(text, *dialect);
            assert_eq!(line, *want_line, "{text:?}: {message}");
            assert!(message.contains(want_message), "{text:?}: {message}");
        }
    }

    #[test]
    fn template_parsing() {
        let template = parse_template("a$1 b${2}c$$").unwrap();
        assert_eq!(template.max_group, 2);
        assert_eq!(
            template.segments,
            vec![
                Segment::Literal("a".into()),
                Segment::Group(1),
                Segment::Literal(" b".into()),
                Segment::Group(2),
                Segment::Literal("c$".into()),
            ]
        );
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            for dialect in [RegexpDialect::Posix, RegexpDialect::Pcre] {
                let _ = parse_as(&text, dialect);
            }
        }

        #[test]
        fn rule_shaped_text_never_panics(
            lines in proptest::collection::vec(
                "(if |endif|!)?[/|#]?[a-c()?*+\\\\|$.^\\[\\]{}/!]{0,12}[imxsUAEXq/]{0,3}( [a-z$(){}0-9]{0,8})?",
                0..10),
            key in "[a-c\n]{0,10}",
        ) {
            for dialect in [RegexpDialect::Posix, RegexpDialect::Pcre] {
                if let Ok(table) = parse_as(&lines.join("\n"), dialect) {
                    let _ = table.lookup(&key);
                }
            }
        }

        /// A literal pattern finds exactly the keys containing it, ignoring
        /// case.
        #[test]
        fn literal_patterns(needle in "[a-z]{1,4}", key in "[a-zA-Z]{0,12}") {
            let table = parse(&format!("/{needle}/ hit\n")).unwrap();
            let expected = key.to_lowercase().contains(&needle);
            prop_assert_eq!(table.lookup(&key).unwrap().is_some(), expected);
        }
    }
}
