//! Header addresses, as Postfix's cleanup rewrites them for mail in the
//! local rewriting context (sendmail/pickup): only the address headers of
//! its header_opts.c table, only the addresses inside them — display
//! names, comments, folding and every other header stay byte for byte, and
//! a header whose addresses are unchanged is not touched at all.

/// Headers holding sender addresses (`header_sender` class).
pub const SENDER_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "return-receipt-to",
    "errors-to",
    "disposition-notification-to",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
];

/// Headers holding recipient addresses (`header_recipient` class).
pub const RECIPIENT_HEADERS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "apparently-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];

/// Is `name` an address header, and of which class (`true`: sender)?
pub fn address_header(name: &str) -> Option<bool> {
    let name = name.to_ascii_lowercase();
    if SENDER_HEADERS.contains(&name.as_str()) {
        Some(true)
    } else if RECIPIENT_HEADERS.contains(&name.as_str()) {
        Some(false)
    } else {
        None
    }
}

/// Byte ranges of the addresses in an RFC 5322 address list: the inside of
/// `<...>`, or a bare `user@domain` (without comments). Group names and
/// phrases are not addresses. Never panics.
pub fn address_spans(value: &str) -> Vec<(usize, usize)> {
    let b = value.as_bytes();
    let mut spans = Vec::new();
    let mut el = Element::default();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                el.word(start, (i + 1).min(b.len()));
            }
            b'(' => {
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                el.gap = el.bare.is_some();
            }
            b'<' => {
                let start = i + 1;
                let end = b[start..]
                    .iter()
                    .position(|&c| c == b'>')
                    .map_or(b.len(), |p| start + p);
                let (s, e) = trim(value, start, end);
                el.angle = (s < e).then_some((s, e));
                el.had_angle = true;
                i = end;
            }
            b':' => el = Element::default(), // a group name
            b',' | b';' => {
                spans.extend(el.address());
                el = Element::default();
            }
            c if c.is_ascii_whitespace() => el.gap = el.bare.is_some(),
            _ => el.word(i, i + 1),
        }
        i += 1;
    }
    spans.extend(el.address());
    spans
}

/// One element of an address list while it is read.
#[derive(Default)]
struct Element {
    angle: Option<(usize, usize)>,
    had_angle: bool,
    bare: Option<(usize, usize)>,
    /// Whitespace or a comment after the bare word.
    gap: bool,
    /// More than one word: a phrase, not an address.
    phrase: bool,
}

impl Element {
    fn word(&mut self, start: usize, end: usize) {
        match &mut self.bare {
            Some(_) if self.gap => self.phrase = true,
            Some((_, e)) => *e = end,
            None => self.bare = Some((start, end)),
        }
    }

    fn address(&self) -> Option<(usize, usize)> {
        if self.had_angle {
            self.angle
        } else if self.phrase {
            None
        } else {
            self.bare
        }
    }
}

fn trim(value: &str, start: usize, end: usize) -> (usize, usize) {
    let inner = &value[start..end];
    let s = start + (inner.len() - inner.trim_start().len());
    let e = end - (inner.len() - inner.trim_end().len());
    (s, e.max(s))
}

/// Rewrite the addresses of a header value with `map`; `None` when
/// nothing changed (the header is then left exactly as it was).
pub fn rewrite_value<E>(
    value: &str,
    mut map: impl FnMut(&str) -> Result<String, E>,
) -> Result<Option<String>, E> {
    let mut out = String::with_capacity(value.len() + 32);
    let mut last = 0;
    let mut changed = false;
    for (s, e) in address_spans(value) {
        let address = &value[s..e];
        // A source route or a null address is left alone.
        if address.starts_with('@') || address.is_empty() {
            continue;
        }
        let new = map(address)?;
        if new != address {
            out.push_str(&value[last..s]);
            out.push_str(&new);
            last = e;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    out.push_str(&value[last..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(v: &str) -> Vec<&str> {
        address_spans(v)
            .into_iter()
            .map(|(s, e)| &v[s..e])
            .collect()
    }

    #[test]
    fn finds_the_addresses_only() {
        assert_eq!(spans(" auditu1, Bob <bob>"), ["auditu1", "bob"]);
        assert_eq!(
            spans(" \"Doe, J\" <j@x.example> (work), k@y.example"),
            ["j@x.example", "k@y.example"]
        );
        assert_eq!(spans(" undisclosed-recipients:;"), Vec::<&str>::new());
        assert_eq!(spans(" team: a, b@c;"), ["a", "b@c"]);
        assert_eq!(spans(" a (comment)"), ["a"]);
        assert_eq!(spans(" John Doe"), Vec::<&str>::new());
        assert_eq!(spans(" <>"), Vec::<&str>::new());
        assert_eq!(spans("\"q u\"@x"), ["\"q u\"@x"]);
    }

    #[test]
    fn rewrites_in_place_and_reports_no_change() {
        let q = |a: &str| -> Result<String, ()> {
            Ok(if a.contains('@') {
                a.to_string()
            } else {
                format!("{a}@o.example")
            })
        };
        assert_eq!(
            rewrite_value(" auditu1,\r\n\tBob <bob> (x)", q).unwrap(),
            Some(" auditu1@o.example,\r\n\tBob <bob@o.example> (x)".to_string())
        );
        assert_eq!(rewrite_value(" a@b, <c@d>", q).unwrap(), None);
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for v in [
            "<",
            "\"",
            "(",
            "\\",
            "a<b",
            "(((",
            "\"\\",
            "<>>,;:\"(",
            "é <ü>",
        ] {
            let _ = rewrite_value(v, |a| Ok::<_, ()>(format!("{a}@x")));
        }
    }
}
