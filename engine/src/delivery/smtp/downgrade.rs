//! 8BITMIME → 7-bit conversion for a next hop that does not announce 8BITMIME, as Postfix's
//! smtp(8) does with `disable_mime_output_conversion = no` (mime_state.c's downgrade), checked
//! against Postfix 3.7 relaying to a sink without 8BITMIME:
//!
//! - every entity (the message, each part of a multipart, a `message/rfc822` attachment and
//!   the parts inside it) whose `Content-Transfer-Encoding` is `8bit` or `binary` loses that
//!   header; at the end of its headers Postfix adds `Content-Transfer-Encoding: 7bit` for a
//!   `multipart/*` or `message/*` entity and `Content-Transfer-Encoding: quoted-printable`
//!   for any other, whose body lines are then quoted-printable encoded;
//! - everything else goes out unchanged: 7bit/quoted-printable/base64 entities, entities
//!   without the header (8-bit bytes in them stay, as in Postfix), preambles, epilogues and
//!   boundary lines; headers are never encoded. `MIME-Version` is not required.
//!
//! The encoding is Postfix's byte for byte: a soft line break (`=`) once the output line
//! exceeds 72 characters, `=XX` for `=`, control characters other than TAB and bytes over
//! 126, and a space or TAB at the end of a line encoded.
//!
//! Boundaries are found as Postfix does: a line starting with `--` and an enclosing multipart's
//! boundary (the innermost first; a match closes the parts nested deeper), `--boundary--`
//! closing the multipart. Nesting deeper than Postfix's `mime_nesting_limit` default (100) is
//! copied unchanged.

/// The converted content, or `None` when nothing needed converting (send the original).
pub fn to_seven_bit(content: &[u8]) -> Option<Vec<u8>> {
    let mut w = Walker {
        out: Vec::with_capacity(content.len() + content.len() / 8),
        boundaries: Vec::new(),
        changed: false,
        state: State::Headers(Entity::new(false), None),
    };
    let mut rest = content;
    while !rest.is_empty() {
        let (line, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        w.line(line);
        rest = next;
    }
    w.end_of_input();
    w.changed.then_some(w.out)
}

/// Postfix's `mime_nesting_limit` default.
const NESTING_LIMIT: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Multipart { boundary: Vec<u8>, digest: bool },
    Message,
    Other,
}

/// What an entity's headers said.
#[derive(Debug)]
struct Entity {
    kind: Kind,
    /// `Content-Transfer-Encoding: 8bit` or `binary`.
    eight_bit: bool,
}

impl Entity {
    /// A new entity; in a `multipart/digest` the default type is `message/rfc822`.
    fn new(digest_part: bool) -> Entity {
        Entity {
            kind: if digest_part {
                Kind::Message
            } else {
                Kind::Other
            },
            eight_bit: false,
        }
    }
}

enum State {
    /// Reading an entity's headers; the lines of the header being read (it may continue).
    Headers(Entity, Option<Vec<u8>>),
    /// A body copied as it is (also preambles and epilogues).
    Copy,
    /// A body encoded as quoted-printable.
    Encode,
}

struct Walker {
    out: Vec<u8>,
    boundaries: Vec<(Vec<u8>, bool)>,
    changed: bool,
    state: State,
}

impl Walker {
    fn line(&mut self, line: &[u8]) {
        if let State::Headers(_, _) = self.state {
            let continuation = matches!(line.first(), Some(b' ' | b'\t'));
            if continuation && let State::Headers(_, Some(pending)) = &mut self.state {
                pending.extend_from_slice(b"\r\n");
                pending.extend_from_slice(line);
                return;
            }
            self.flush_header();
            if !continuation && is_header(line) {
                if let State::Headers(_, pending) = &mut self.state {
                    *pending = Some(line.to_vec());
                }
                return;
            }
            // The end of the headers: an empty line (kept), or a line that is no header (the
            // body's first line).
            self.end_of_headers();
            if line.is_empty() {
                self.out.extend_from_slice(b"\r\n");
                return;
            }
        }
        if self.boundary(line) {
            return;
        }
        match self.state {
            State::Encode => encode_line(&mut self.out, line),
            _ => {
                self.out.extend_from_slice(line);
                self.out.extend_from_slice(b"\r\n");
            }
        }
    }

    /// A boundary line of an enclosing multipart: copy it and start the next part's headers,
    /// or (closing) go on with the parent's epilogue.
    fn boundary(&mut self, line: &[u8]) -> bool {
        let Some(rest) = line.strip_prefix(b"--") else {
            return false;
        };
        let Some(level) = self
            .boundaries
            .iter()
            .rposition(|(b, _)| rest.starts_with(b))
        else {
            return false;
        };
        let closing = rest[self.boundaries[level].0.len()..].starts_with(b"--");
        let digest = self.boundaries[level].1;
        self.boundaries.truncate(level + 1);
        self.out.extend_from_slice(line);
        self.out.extend_from_slice(b"\r\n");
        if closing {
            self.boundaries.pop();
            self.state = State::Copy;
        } else {
            self.state = State::Headers(Entity::new(digest), None);
        }
        true
    }

    /// Out with the header read so far, unless it is an 8-bit Content-Transfer-Encoding.
    fn flush_header(&mut self) {
        let State::Headers(entity, pending) = &mut self.state else {
            return;
        };
        let Some(header) = pending.take() else {
            return;
        };
        let (name, value) = split_header(&header);
        if name.eq_ignore_ascii_case(b"content-transfer-encoding") {
            let value = trimmed(value);
            entity.eight_bit =
                value.eq_ignore_ascii_case(b"8bit") || value.eq_ignore_ascii_case(b"binary");
            if entity.eight_bit {
                self.changed = true;
                return;
            }
        } else if name.eq_ignore_ascii_case(b"content-type") {
            entity.kind = content_kind(value);
        }
        self.out.extend_from_slice(&header);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The new Content-Transfer-Encoding, then what the body is.
    fn end_of_headers(&mut self) {
        let State::Headers(entity, _) = std::mem::replace(&mut self.state, State::Copy) else {
            return;
        };
        let nested = self.boundaries.len() >= NESTING_LIMIT;
        let kind = if nested { Kind::Other } else { entity.kind };
        if entity.eight_bit {
            let encoding: &[u8] = match kind {
                Kind::Multipart { .. } | Kind::Message => b"7bit",
                Kind::Other => b"quoted-printable",
            };
            self.out.extend_from_slice(b"Content-Transfer-Encoding: ");
            self.out.extend_from_slice(encoding);
            self.out.extend_from_slice(b"\r\n");
        }
        self.state = match kind {
            Kind::Multipart { boundary, digest } => {
                self.boundaries.push((boundary, digest));
                State::Copy
            }
            // An attached message: its own headers follow.
            Kind::Message => State::Headers(Entity::new(false), None),
            Kind::Other if entity.eight_bit => State::Encode,
            Kind::Other => State::Copy,
        };
    }

    fn end_of_input(&mut self) {
        if let State::Headers(_, _) = self.state {
            self.flush_header();
            self.end_of_headers();
        }
    }
}

/// `Name:` at the start of the line (no white space in the name).
fn is_header(line: &[u8]) -> bool {
    match memchr::memchr(b':', line) {
        Some(colon) => colon > 0 && line[..colon].iter().all(|b| b.is_ascii_graphic()),
        None => false,
    }
}

fn split_header(header: &[u8]) -> (&[u8], &[u8]) {
    match memchr::memchr(b':', header) {
        Some(colon) => (&header[..colon], &header[colon + 1..]),
        None => (header, &[]),
    }
}

fn trimmed(value: &[u8]) -> &[u8] {
    let value = value.trim_ascii();
    // A comment or parameters after the token do not change it.
    let end = value
        .iter()
        .position(|b| b.is_ascii_whitespace() || *b == b'(' || *b == b';')
        .unwrap_or(value.len());
    &value[..end]
}

/// The entity kind a Content-Type value says (folded lines included).
fn content_kind(value: &[u8]) -> Kind {
    let value: Vec<u8> = value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let mut parts = value.splitn(2, |&b| b == b';');
    let media = trimmed(parts.next().unwrap_or_default()).to_ascii_lowercase();
    let params = parts.next().unwrap_or_default();
    if let Some(sub) = media.strip_prefix(b"multipart/") {
        return match parameter(params, b"boundary") {
            Some(boundary) if !boundary.is_empty() => Kind::Multipart {
                boundary,
                digest: sub == b"digest",
            },
            _ => Kind::Other,
        };
    }
    if media == b"message/rfc822" {
        return Kind::Message;
    }
    Kind::Other
}

/// A Content-Type parameter's value (quoted or not).
fn parameter(params: &[u8], wanted: &[u8]) -> Option<Vec<u8>> {
    let mut rest = params;
    loop {
        rest = rest.trim_ascii_start();
        rest = rest.strip_prefix(b";").unwrap_or(rest).trim_ascii_start();
        if rest.is_empty() {
            return None;
        }
        let eq = memchr::memchr(b'=', rest)?;
        let name = rest[..eq].trim_ascii();
        rest = rest[eq + 1..].trim_ascii_start();
        let mut value = Vec::new();
        if let Some(quoted) = rest.strip_prefix(b"\"") {
            let mut i = 0;
            while i < quoted.len() && quoted[i] != b'"' {
                if quoted[i] == b'\\' && i + 1 < quoted.len() {
                    i += 1;
                }
                value.push(quoted[i]);
                i += 1;
            }
            rest = quoted.get(i + 1..).unwrap_or_default();
        } else {
            let end = rest
                .iter()
                .position(|&b| b == b';' || b.is_ascii_whitespace())
                .unwrap_or(rest.len());
            value.extend_from_slice(&rest[..end]);
            rest = &rest[end..];
        }
        if name.eq_ignore_ascii_case(wanted) {
            return Some(value);
        }
    }
}

/// One body line as quoted-printable, exactly as Postfix's mime_state_downgrade().
fn encode_line(out: &mut Vec<u8>, line: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut start = out.len();
    for &ch in line {
        if out.len() - start > 72 {
            out.extend_from_slice(b"=\r\n");
            start = out.len();
        }
        if (ch < 32 && ch != b'\t') || ch == b'=' || ch > 126 {
            out.extend_from_slice(&[b'=', HEX[usize::from(ch >> 4)], HEX[usize::from(ch & 15)]]);
        } else {
            out.push(ch);
        }
    }
    if out.len() > start
        && let Some(&last) = out.last()
        && (last == b' ' || last == b'\t')
    {
        out.pop();
        out.extend_from_slice(&[
            b'=',
            HEX[usize::from(last >> 4)],
            HEX[usize::from(last & 15)],
        ]);
    }
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests;
