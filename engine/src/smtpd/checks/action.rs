//! The actions of header_checks(5) tables: what a table's answer means,
//! parsed the way Postfix's cleanup reads it (command word, optional text),
//! with Postfix's warnings for malformed answers.

use crate::smtpd::filter::ContentFilter;

/// What a check table's answer asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Dunno,
    /// The reason with its DSN code: `5.7.1 Message content rejected`.
    Reject(String),
    Discard(String),
    Hold(String),
    Warn(String),
    Info(String),
    Ignore,
    Strip(String),
    Prepend(String),
    Replace(String),
    Redirect(String),
    Filter(ContentFilter),
}

/// Parse a table's answer; `header` selects header_checks' rules for
/// PREPEND/REPLACE text. Errors are Postfix's warning texts.
pub fn parse_action(value: &str, header: bool, map: &str) -> Result<Action, String> {
    let value = value.trim();
    let (command, text) = match value.split_once(char::is_whitespace) {
        Some((c, t)) => (c, t.trim_start()),
        None => (value, ""),
    };
    let need_text = |what: &str| -> Result<String, String> {
        if text.is_empty() {
            return Err(format!("{what} action without text in {map} map"));
        }
        if header && !is_header(text) {
            return Err(format!(
                "bad {what} header text \"{text}\" in {map} map -- need \"headername: headervalue\""
            ));
        }
        Ok(text.to_string())
    };
    Ok(match command.to_ascii_uppercase().as_str() {
        "DUNNO" | "OK" => Action::Dunno,
        "REJECT" => Action::Reject(reject_reason(text)),
        "DISCARD" => Action::Discard(text.to_string()),
        "HOLD" => Action::Hold(text.to_string()),
        "WARN" => Action::Warn(text.to_string()),
        "INFO" => Action::Info(text.to_string()),
        "IGNORE" => Action::Ignore,
        "STRIP" => Action::Strip(text.to_string()),
        "PREPEND" => Action::Prepend(need_text("PREPEND")?),
        "REPLACE" => Action::Replace(need_text("REPLACE")?),
        "REDIRECT" => {
            if !text.contains('@') || text.chars().any(char::is_whitespace) {
                return Err(format!(
                    "bad REDIRECT target \"{text}\" in {map} map -- need user@domain"
                ));
            }
            Action::Redirect(text.to_string())
        }
        "FILTER" => match ContentFilter::parse(text) {
            Ok(Some(f)) if text.contains(':') => Action::Filter(f),
            _ => {
                return Err(format!(
                    "bad FILTER action in {map} map: \"{text}\" -- need transport:destination"
                ));
            }
        },
        _ => return Err(format!("unknown command in {map} map: {value}")),
    })
}

/// Postfix's `dsn_prepend("5.7.1", text)`: keep a leading `X.Y.Z` code,
/// else add 5.7.1; a code that is neither 4.x.x nor 5.x.x becomes 4.x.x.
fn reject_reason(text: &str) -> String {
    if text.is_empty() {
        return "5.7.1 Message content rejected".to_string();
    }
    let code = text.split_whitespace().next().unwrap_or_default();
    if is_dsn(code) {
        if code.starts_with('4') || code.starts_with('5') {
            text.to_string()
        } else {
            format!("4{}", &text[1..])
        }
    } else {
        format!("5.7.1 {text}")
    }
}

/// `class.subject.detail`: a digit, then 1–3 and 1–3 digits.
fn is_dsn(code: &str) -> bool {
    let parts: Vec<&str> = code.split('.').collect();
    parts.len() == 3
        && parts[0].len() == 1
        && (1..=3).contains(&parts[1].len())
        && (1..=3).contains(&parts[2].len())
        && parts.iter().all(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// `Name:` with a name of printable ASCII other than `:` and space.
pub(super) fn is_header(line: &str) -> bool {
    match line.find(':') {
        Some(0) | None => false,
        Some(i) => line[..i].bytes().all(|b| (33..127).contains(&b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn actions_parse_as_postfix_reads_them() {
        let p = |v: &str| parse_action(v, true, "header_checks");
        assert_eq!(p("dunno"), Ok(Action::Dunno));
        assert_eq!(p("OK"), Ok(Action::Dunno));
        assert_eq!(
            p("REJECT"),
            Ok(Action::Reject("5.7.1 Message content rejected".into()))
        );
        assert_eq!(
            p("REJECT no spam"),
            Ok(Action::Reject("5.7.1 no spam".into()))
        );
        assert_eq!(
            p("reject 5.7.0 go away"),
            Ok(Action::Reject("5.7.0 go away".into()))
        );
        assert_eq!(
            p("REJECT 4.7.1 later"),
            Ok(Action::Reject("4.7.1 later".into()))
        );
        assert_eq!(
            p("REJECT 2.0.0 odd"),
            Ok(Action::Reject("4.0.0 odd".into()))
        );
        assert_eq!(
            p("HOLD  look at this"),
            Ok(Action::Hold("look at this".into()))
        );
        assert_eq!(p("DISCARD"), Ok(Action::Discard(String::new())));
        assert_eq!(p("WARN hmm"), Ok(Action::Warn("hmm".into())));
        assert_eq!(p("IGNORE"), Ok(Action::Ignore));
        assert_eq!(
            p("PREPEND X-Seen: yes"),
            Ok(Action::Prepend("X-Seen: yes".into()))
        );
        assert!(p("PREPEND").is_err());
        assert!(p("PREPEND not a header").is_err());
        assert_eq!(
            parse_action("PREPEND any text", false, "body_checks"),
            Ok(Action::Prepend("any text".into()))
        );
        assert_eq!(
            p("REPLACE Subject: [tagged]"),
            Ok(Action::Replace("Subject: [tagged]".into()))
        );
        assert_eq!(
            p("REDIRECT spam@example.com"),
            Ok(Action::Redirect("spam@example.com".into()))
        );
        assert!(p("REDIRECT nobody").is_err());
        let f = p("FILTER scan:[127.0.0.1]:10024").unwrap();
        assert_eq!(
            f,
            Action::Filter(
                ContentFilter::parse("scan:[127.0.0.1]:10024")
                    .unwrap()
                    .unwrap()
            )
        );
        assert!(p("FILTER scan").is_err());
        assert_eq!(
            p("BOGUS x").unwrap_err(),
            "unknown command in header_checks map: BOGUS x"
        );
    }

    proptest! {
        /// Any table answer parses or is refused — never a panic; a parsed
        /// REJECT reason always carries a 4.x.x or 5.x.x code.
        #[test]
        fn action_parser_never_panics(value in "\\PC{0,60}", header: bool) {
            if let Ok(Action::Reject(reason)) = parse_action(&value, header, "header_checks") {
                prop_assert!(reason.starts_with('4') || reason.starts_with('5'));
                prop_assert!(is_dsn(reason.split(' ').next().unwrap_or_default()));
            }
        }
    }
}
