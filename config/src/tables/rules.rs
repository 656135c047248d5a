//! Ordered rule lists with `if` / `endif` blocks, shared by cidr and regexp
//! tables.
//!
//! cidr_table(5) and regexp_table(5) have the same control structure: rules
//! are tried in file order and the first match wins; `if pattern` …
//! `endif` (nestable, either pattern negatable with `!`) skips the whole
//! block when the pattern does not match. Only the pattern type differs, so
//! the structure is generic over it. Blocks are stored flat: an `If` knows
//! the index of its `EndIf`, so evaluation is a loop without recursion.

use std::path::Path;

use super::TableError;

/// How one pattern relates to one key.
pub(super) enum Outcome<M> {
    /// The pattern matches; `M` carries what the result needs (captures).
    Matched(M),
    /// The pattern does not match.
    NotMatched,
    /// The pattern cannot be compared with this key at all (an IPv6 network
    /// and an IPv4 key): the rule is skipped even when negated.
    NotApplicable,
}

/// A pattern and whether it was written with `!`.
#[derive(Debug)]
pub(super) struct Condition<P> {
    pub pattern: P,
    pub negated: bool,
}

#[derive(Debug)]
enum Rule<P, R> {
    Match { condition: Condition<P>, result: R },
    If { condition: Condition<P>, end: usize },
    EndIf,
}

/// A parsed table: rules in file order.
#[derive(Debug)]
pub(super) struct RuleList<P, R> {
    rules: Vec<Rule<P, R>>,
}

/// Collects rules while a file is parsed and checks `if`/`endif` nesting.
pub(super) struct RuleListBuilder<P, R> {
    rules: Vec<Rule<P, R>>,
    /// Open `if`s: index into `rules` and source line.
    open_blocks: Vec<(usize, usize)>,
}

impl<P, R> RuleListBuilder<P, R> {
    pub fn new() -> Self {
        RuleListBuilder {
            rules: Vec::new(),
            open_blocks: Vec::new(),
        }
    }

    /// Add `pattern result`.
    pub fn push_match(&mut self, condition: Condition<P>, result: R) {
        self.rules.push(Rule::Match { condition, result });
    }

    /// Open an `if pattern` block that starts on `line`.
    pub fn push_if(&mut self, condition: Condition<P>, line: usize) {
        self.open_blocks.push((self.rules.len(), line));
        self.rules.push(Rule::If {
            condition,
            end: usize::MAX,
        });
    }

    /// Close the innermost block; `line` is the `endif` line, for the error
    /// when there is no open block.
    pub fn push_endif(&mut self, path: &Path, line: usize) -> Result<(), TableError> {
        let Some((if_index, _)) = self.open_blocks.pop() else {
            return Err(TableError::syntax(path, line, "endif without matching if"));
        };
        let end = self.rules.len();
        if let Some(Rule::If { end: slot, .. }) = self.rules.get_mut(if_index) {
            *slot = end;
        }
        self.rules.push(Rule::EndIf);
        Ok(())
    }

    /// Finish the list; an unclosed block is an error naming its `if` line.
    pub fn finish(self, path: &Path) -> Result<RuleList<P, R>, TableError> {
        if let Some(&(_, line)) = self.open_blocks.last() {
            return Err(TableError::syntax(path, line, "if has no matching endif"));
        }
        Ok(RuleList { rules: self.rules })
    }
}

impl<P, R> RuleList<P, R> {
    /// Number of rules, counting `if` and `endif`.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// The first matching rule's result, with what `test` returned for a
    /// non-negated match (`None` for a negated rule, which matched by *not*
    /// matching and so has nothing to substitute).
    pub fn first_match<M>(
        &self,
        mut test: impl FnMut(&P) -> Outcome<M>,
    ) -> Option<(&R, Option<M>)> {
        let mut index = 0;
        while let Some(rule) = self.rules.get(index) {
            match rule {
                Rule::Match { condition, result } => {
                    if let Some(details) = holds(condition, &mut test) {
                        return Some((result, details));
                    }
                }
                Rule::If { condition, end } => {
                    if holds(condition, &mut test).is_none() {
                        // Skip to the endif; the loop then steps past it.
                        index = *end;
                    }
                }
                Rule::EndIf => {}
            }
            index = index.saturating_add(1);
        }
        None
    }
}

/// `Some(details)` when the condition holds for the key `test` examines.
fn holds<P, M>(
    condition: &Condition<P>,
    test: &mut impl FnMut(&P) -> Outcome<M>,
) -> Option<Option<M>> {
    match (test(&condition.pattern), condition.negated) {
        (Outcome::Matched(details), false) => Some(Some(details)),
        (Outcome::NotMatched, true) => Some(None),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(pattern: char, negated: bool) -> Condition<char> {
        Condition { pattern, negated }
    }

    /// Keys are sets of characters; a pattern matches when the key holds it.
    fn eval(list: &RuleList<char, &'static str>, key: &str) -> Option<&'static str> {
        list.first_match(|p| {
            if key.contains(*p) {
                Outcome::Matched(())
            } else {
                Outcome::NotMatched
            }
        })
        .map(|(r, _)| *r)
    }

    #[test]
    fn nested_blocks_and_negation() {
        let path = Path::new("t");
        let mut b = RuleListBuilder::new();
        b.push_if(cond('a', false), 1);
        b.push_if(cond('b', true), 2);
        b.push_match(cond('c', false), "a, not b, c");
        b.push_endif(path, 4).unwrap();
        b.push_match(cond('d', false), "a, d");
        b.push_endif(path, 6).unwrap();
        b.push_match(cond('z', true), "no z");
        let list = b.finish(path).unwrap();
        assert_eq!(list.len(), 7);
        assert_eq!(eval(&list, "ac"), Some("a, not b, c"));
        assert_eq!(eval(&list, "abc"), Some("no z"));
        assert_eq!(eval(&list, "abcd"), Some("a, d"));
        assert_eq!(eval(&list, "cd"), Some("no z"));
        assert_eq!(eval(&list, "z"), None);
    }

    #[test]
    fn unbalanced_blocks_are_errors_with_lines() {
        let path = Path::new("t");
        let mut b: RuleListBuilder<char, ()> = RuleListBuilder::new();
        match b.push_endif(path, 7) {
            Err(TableError::Syntax { line, .. }) => assert_eq!(line, 7),
            other => panic!("{other:?}"),
        }
        b.push_if(cond('a', false), 3);
        b.push_if(cond('b', false), 5);
        b.push_endif(path, 6).unwrap();
        match b.finish(path) {
            Err(TableError::Syntax { line, .. }) => assert_eq!(line, 3),
            other => panic!("{other:?}"),
        }
    }
}
