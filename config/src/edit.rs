//! In-place editing of main.cf for `corepost config -e` / `-X`, keeping
//! comments, blank lines and the order of everything not edited.
//!
//! Setting a parameter replaces its first definition (continuation lines
//! included) and removes later ones, so the file ends up with exactly one
//! definition; a parameter not yet in the file is appended. Removing a
//! parameter deletes all of its definitions.

use crate::maincf::split_name_value;

/// One change to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Edit {
    Set { name: String, value: String },
    Remove { name: String },
}

impl Edit {
    fn name(&self) -> &str {
        match self {
            Edit::Set { name, .. } | Edit::Remove { name } => name,
        }
    }
}

/// Parse `name = value` / `name=value` as given to `-e`.
pub fn parse_assignment(text: &str) -> Result<Edit, String> {
    let (name, value) = split_name_value(text)?;
    Ok(Edit::Set {
        name: name.to_string(),
        value: value.to_string(),
    })
}

/// Apply `edits` to main.cf `text`.
pub fn edit_main_cf(text: &str, edits: &[Edit]) -> String {
    let lines: Vec<&str> = text.lines().collect();
    // Which logical definition each physical line belongs to.
    let mut owner: Vec<Option<String>> = vec![None; lines.len()];
    let mut current: Option<String> = None;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line.starts_with(|c: char| c.is_ascii_whitespace()) {
            owner[i] = current.clone();
        } else {
            current = split_name_value(line).ok().map(|(n, _)| n.to_string());
            owner[i] = current.clone();
        }
    }
    let mut done: Vec<bool> = vec![false; edits.len()];
    let mut out = String::with_capacity(text.len() + 64);
    let mut i = 0;
    while i < lines.len() {
        let Some(name) = owner[i].as_deref() else {
            out.push_str(lines[i]);
            out.push('\n');
            i += 1;
            continue;
        };
        // The extent of this definition: its first line and its
        // continuation lines (comments in between are kept).
        let starts_here = !lines[i].starts_with(|c: char| c.is_ascii_whitespace());
        let edit_index = edits.iter().rposition(|e| e.name() == name);
        match (edit_index, starts_here) {
            (Some(k), true) => {
                if let Edit::Set { name, value } = &edits[k]
                    && !done[k]
                {
                    out.push_str(&format_line(name, value));
                    out.push('\n');
                }
                done[k] = true;
            }
            (Some(_), false) => {} // continuation of an edited definition
            (None, _) => {
                out.push_str(lines[i]);
                out.push('\n');
            }
        }
        i += 1;
    }
    for (k, edit) in edits.iter().enumerate() {
        // Only the last edit of a name counts.
        if done[k] || edits[k + 1..].iter().any(|e| e.name() == edit.name()) {
            continue;
        }
        if let Edit::Set { name, value } = edit {
            out.push_str(&format_line(name, value));
            out.push('\n');
        }
    }
    out
}

fn format_line(name: &str, value: &str) -> String {
    if value.is_empty() {
        format!("{name} =")
    } else {
        format!("{name} = {value}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maincf::MainCf;
    use proptest::prelude::*;
    use std::path::Path;

    fn set(name: &str, value: &str) -> Edit {
        Edit::Set {
            name: name.into(),
            value: value.into(),
        }
    }

    #[test]
    fn replaces_in_place_and_keeps_comments() {
        let text = "# top comment\nmyhostname = old.example.com\n\n# about relays\nrelay_domains = a,\n    b\n# trailing\nrelayhost = x\nrelay_domains = c\n";
        let out = edit_main_cf(
            text,
            &[
                set("relay_domains", "example.org"),
                set("message_size_limit", "0"),
            ],
        );
        assert_eq!(
            out,
            "# top comment\nmyhostname = old.example.com\n\n# about relays\nrelay_domains = example.org\n# trailing\nrelayhost = x\nmessage_size_limit = 0\n"
        );
    }

    #[test]
    fn removes_all_definitions() {
        let text = "a = 1\n  continued\nb = 2\na = 3\n";
        let out = edit_main_cf(text, &[Edit::Remove { name: "a".into() }]);
        assert_eq!(out, "b = 2\n");
    }

    #[test]
    fn assignment_syntax() {
        assert_eq!(parse_assignment("a=b c").unwrap(), set("a", "b c"));
        assert_eq!(parse_assignment(" a = ").unwrap(), set("a", ""));
        assert!(parse_assignment("novalue").is_err());
    }

    proptest! {
        /// After any sequence of edits the file parses, each edited name
        /// has the value of its last edit, and untouched names keep theirs.
        #[test]
        fn edits_take_effect(
            initial in proptest::collection::vec(("[a-d]", "[a-z0-9]{0,6}"), 0..8),
            edits in proptest::collection::vec(("[a-f]", proptest::option::of("[a-z0-9 ]{0,6}")), 0..6),
        ) {
            let mut text = String::from("# header\n");
            for (n, v) in &initial {
                text.push_str(&format!("{n} = {v}\n"));
            }
            let edits: Vec<Edit> = edits
                .into_iter()
                .map(|(n, v)| match v {
                    Some(v) => set(&n, v.trim()),
                    None => Edit::Remove { name: n },
                })
                .collect();
            let out = edit_main_cf(&text, &edits);
            let before = MainCf::parse(&text, Path::new("main.cf")).unwrap();
            let after = MainCf::parse(&out, Path::new("main.cf")).unwrap();
            prop_assert!(out.starts_with("# header\n"));
            for name in ["a", "b", "c", "d", "e", "f"] {
                let expected = match edits.iter().rev().find(|e| e.name() == name) {
                    Some(Edit::Set { value, .. }) => Some(value.as_str()),
                    Some(Edit::Remove { .. }) => None,
                    None => before.get(name),
                };
                prop_assert_eq!(after.get(name), expected);
            }
        }
    }
}
