//! The message header section of a local submission: splitting it from the
//! body, reading address lists (`sendmail -t` takes its recipients from
//! To/Cc/Bcc), dropping Bcc, and telling which headers are missing.
//!
//! Content is CRLF-terminated lines. Header parsing is deliberately
//! forgiving (Postfix's cleanup is too): the header section ends at the
//! first empty line or the first line that is neither `name:` nor a
//! continuation, and address lists are read with RFC 5322's phrases,
//! comments, quoted strings, angle addresses and groups.

/// One header field: its name and its full text (all lines, CRLF kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub raw: Vec<u8>,
}

impl Field {
    /// The unfolded value after the colon.
    pub fn value(&self) -> String {
        let text = String::from_utf8_lossy(&self.raw);
        let value = text.split_once(':').map_or("", |(_, v)| v);
        value.replace("\r\n", "").replace('\n', "")
    }
}

/// A message split into header fields and the body (which starts after
/// the empty separator line, if there was one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub fields: Vec<Field>,
    /// Whether an empty line separated the headers from the body.
    pub separator: bool,
    pub body: Vec<u8>,
}

fn is_field_name(line: &[u8]) -> Option<String> {
    let colon = line.iter().position(|&b| b == b':')?;
    let name = &line[..colon];
    (!name.is_empty() && name.iter().all(|&b| (33..=126).contains(&b) && b != b':'))
        .then(|| String::from_utf8_lossy(name).into_owned())
}

/// Split content into header fields and body.
pub fn parse(content: &[u8]) -> Parsed {
    let mut fields: Vec<Field> = Vec::new();
    let mut at = 0;
    while at < content.len() {
        let end = content[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |p| at + p + 1);
        let line = &content[at..end];
        let bare = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if bare.is_empty() {
            return Parsed {
                fields,
                separator: true,
                body: content[end..].to_vec(),
            };
        }
        if (bare[0] == b' ' || bare[0] == b'\t')
            && let Some(last) = fields.last_mut()
        {
            last.raw.extend_from_slice(line);
        } else if let Some(name) = is_field_name(bare) {
            fields.push(Field {
                name,
                raw: line.to_vec(),
            });
        } else {
            break;
        }
        at = end;
    }
    Parsed {
        fields,
        separator: false,
        body: content[at..].to_vec(),
    }
}

impl Parsed {
    pub fn has(&self, name: &str) -> bool {
        self.fields
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// Addresses of every field with one of these names, in order.
    pub fn addresses(&self, names: &[&str]) -> Vec<String> {
        self.fields
            .iter()
            .filter(|f| names.iter().any(|n| f.name.eq_ignore_ascii_case(n)))
            .flat_map(|f| address_list(&f.value()))
            .collect()
    }

    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|f| !f.name.eq_ignore_ascii_case(name));
    }

    /// Reassemble: fields, `extra` header lines (each ending in CRLF), the
    /// separator and the body.
    pub fn assemble(&self, extra: &[String]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 1024);
        for f in &self.fields {
            out.extend_from_slice(&f.raw);
            if !f.raw.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        for e in extra {
            out.extend_from_slice(e.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// The addresses of an RFC 5322 address list (`a@b, "X Y" <c@d>, group:
/// e@f;`), without display names and comments. Words without `@` count
/// too (local users). Never panics, whatever the input.
pub fn address_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut angle: Option<String> = None;
    let mut in_angle = false;
    let mut chars = value.chars().peekable();
    let finish = |current: &mut String, angle: &mut Option<String>, out: &mut Vec<String>| {
        let addr = match angle.take() {
            Some(a) => a,
            None => strip_unquoted_space(current),
        };
        let addr = addr.trim().to_string();
        if !addr.is_empty() {
            out.push(addr);
        }
        current.clear();
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                // Quoted string: kept when it is a local part (no angle
                // address follows), dropped as a phrase otherwise.
                let mut q = String::from('"');
                while let Some(c) = chars.next() {
                    q.push(c);
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                q.push(n);
                            }
                        }
                        '"' => break,
                        _ => {}
                    }
                }
                if in_angle {
                    angle.get_or_insert_with(String::new).push_str(&q);
                } else {
                    current.push_str(&q);
                }
            }
            '(' => {
                let mut depth = 1;
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '(' => depth += 1,
                        ')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                }
            }
            '<' => {
                in_angle = true;
                angle = Some(String::new());
            }
            '>' => in_angle = false,
            ':' if !in_angle => current.clear(), // group name
            ',' | ';' if !in_angle => finish(&mut current, &mut angle, &mut out),
            c if in_angle => {
                if !c.is_whitespace() {
                    angle.get_or_insert_with(String::new).push(c);
                }
            }
            c => current.push(c),
        }
    }
    finish(&mut current, &mut angle, &mut out);
    // A source route in an angle address (`<@a,@b:x@c>`) keeps its mailbox.
    out.into_iter()
        .map(|a| match a.rfind(':') {
            Some(i) if a.starts_with('@') => a[i + 1..].to_string(),
            _ => a,
        })
        .collect()
}

/// Remove whitespace outside quoted strings (`john . doe` → `john.doe`,
/// `"a b"@x` unchanged).
fn strip_unquoted_space(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut quoted = false;
    let mut escaped = false;
    for c in s.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if c.is_whitespace() && !quoted {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_headers_and_body() {
        let p = parse(b"To: a@b,\r\n c@d\r\nSubject: hi\r\n\r\nbody\r\n");
        assert_eq!(p.fields.len(), 2);
        assert!(p.separator);
        assert_eq!(p.body, b"body\r\n");
        assert_eq!(p.fields[0].value(), " a@b, c@d");
        let p = parse(b"just a body line\r\n");
        assert!(p.fields.is_empty() && !p.separator);
        assert_eq!(p.body, b"just a body line\r\n");
        let mut p = parse(b"Bcc: x@y\r\nTo: a@b\r\n\r\nbody");
        p.remove("bcc");
        assert_eq!(
            p.assemble(&["Date: now\r\n".into()]),
            b"To: a@b\r\nDate: now\r\n\r\nbody".to_vec()
        );
    }

    #[test]
    fn address_lists() {
        assert_eq!(
            address_list(r#" "Doe, John" <john@example.com>, jane@example.org (Jane), bob"#),
            vec!["john@example.com", "jane@example.org", "bob"]
        );
        assert_eq!(
            address_list("friends: a@x, b@y;, c@z"),
            vec!["a@x", "b@y", "c@z"]
        );
        assert_eq!(
            address_list("undisclosed-recipients:;"),
            Vec::<String>::new()
        );
        assert_eq!(address_list("<@relay:user@host>"), vec!["user@host"]);
        assert_eq!(
            address_list(r#""quoted user"@x"#),
            vec![r#""quoted user"@x"#]
        );
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}", b in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = address_list(&s);
            let p = parse(&b);
            let _ = p.addresses(&["to", "cc"]);
            let _ = p.assemble(&[]);
        }
    }
}
