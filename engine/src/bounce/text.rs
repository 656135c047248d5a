//! Text hygiene for delivery status notifications.
//!
//! Everything a notice quotes — diagnostic texts, remote host names,
//! addresses, ENVID/ORCPT values — comes from remote servers or SMTP
//! clients. A CR or LF smuggled into one of them would end a header field
//! early and let the sender of that text write headers, MIME delimiters or
//! whole body parts of our notice. So every such value passes through
//! [`clean`] (no control characters, bounded length) and every header-style
//! line is emitted through [`field`] (folded at whitespace, never longer
//! than [`MAX_LINE`] octets).

/// RFC 5322 §2.1.1: a line is at most 998 octets without its CRLF.
pub const MAX_LINE: usize = 998;
/// RFC 5322 §2.1.1: lines should be at most 78 octets.
pub const FOLD_AT: usize = 78;
/// Longest piece of a single word put on one line; longer words are split
/// (changing their unfolded value, but keeping the structure intact).
const MAX_WORD: usize = MAX_LINE - 98;

/// Remove control characters (C0, DEL, C1 — so CR, LF, TAB, ESC, NUL)
/// by turning them into spaces, collapse runs of whitespace into one
/// space, trim, and cut the result to at most `max_bytes` bytes at a
/// character boundary.
pub fn clean(text: &str, max_bytes: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_bytes));
    let mut pending_space = false;
    for c in text.chars() {
        if c.is_control() || c.is_whitespace() {
            pending_space = !out.is_empty();
            continue;
        }
        let needed = c.len_utf8() + usize::from(pending_space);
        if out.len() + needed > max_bytes {
            break;
        }
        if pending_space {
            out.push(' ');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// [`clean`], then replace every non-ASCII character with `?`: for fields
/// that must stay ASCII (RFC 3464 `message/delivery-status`).
pub fn clean_ascii(text: &str, max_bytes: usize) -> String {
    clean(text, max_bytes)
        .chars()
        .map(|c| if c.is_ascii() { c } else { '?' })
        .collect()
}

/// Split `text` into words (at single spaces) no longer than [`MAX_WORD`]
/// bytes each, splitting longer words at character boundaries.
fn words(text: &str) -> impl Iterator<Item = &str> {
    text.split(' ').filter(|w| !w.is_empty()).flat_map(|word| {
        let mut pieces = Vec::new();
        let mut rest = word;
        while rest.len() > MAX_WORD {
            let mut cut = MAX_WORD;
            while !rest.is_char_boundary(cut) {
                cut -= 1;
            }
            let (head, tail) = rest.split_at(cut);
            pieces.push(head);
            rest = tail;
        }
        pieces.push(rest);
        pieces
    })
}

/// Lay `text` out in lines of at most `width` bytes where the words allow
/// it: the first line starts with `first`, the others with `indent`. Lines
/// are joined and terminated by CRLF. `text` must already be [`clean`].
fn layout(first: &str, indent: &str, text: &str, width: usize) -> String {
    let mut out = String::with_capacity(first.len() + text.len() + 8);
    let mut line = String::from(first);
    let mut line_has_word = false;
    for word in words(text) {
        if line_has_word && line.len() + 1 + word.len() > width {
            out.push_str(&line);
            out.push_str("\r\n");
            line.clear();
            line.push_str(indent);
            line.push_str(word);
        } else {
            if line_has_word || !line.is_empty() && !line.ends_with(' ') {
                line.push(' ');
            }
            line.push_str(word);
        }
        line_has_word = true;
    }
    out.push_str(&line);
    out.push_str("\r\n");
    out
}

/// One header field (or delivery-status field), `Name: value` plus CRLF,
/// folded at whitespace near [`FOLD_AT`] octets. The value is cleaned
/// here, so any text may be passed.
pub fn field(name: &str, value: &str) -> String {
    let value = clean(value, 16 * 1024);
    layout(&format!("{name}:"), " ", &value, FOLD_AT)
}

/// A paragraph of the human-readable part: wrapped at `width`, with
/// continuation lines indented by `indent`. The text is cleaned here.
pub fn paragraph(text: &str, indent: &str, width: usize) -> String {
    let text = clean(text, 16 * 1024);
    layout("", indent, &text, width)
}

/// Convert every line end — CRLF, bare LF or bare CR — to CRLF.
pub fn to_crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + bytes.len() / 32 + 2);
    let mut iter = bytes.iter().copied().peekable();
    while let Some(b) = iter.next() {
        match b {
            b'\r' => {
                if iter.peek() == Some(&b'\n') {
                    iter.next();
                }
                out.extend_from_slice(b"\r\n");
            }
            b'\n' => out.extend_from_slice(b"\r\n"),
            other => out.push(other),
        }
    }
    out
}

/// The header section of a CRLF-normalised message: everything up to and
/// including the CRLF that ends the last header line. A message without a
/// blank line is all header section.
pub fn header_section(message: &[u8]) -> &[u8] {
    if message.starts_with(b"\r\n") {
        return &[];
    }
    match memchr::memmem::find(message, b"\r\n\r\n") {
        Some(at) => &message[..at + 2],
        None => message,
    }
}

/// Cut a CRLF-normalised text to at most `limit` bytes at a line end (so
/// no header line is cut in half). The result always ends with CRLF
/// unless it is empty.
pub fn truncate_at_line(text: &[u8], limit: usize) -> &[u8] {
    if text.len() <= limit {
        return text;
    }
    let window = &text[..limit];
    match memchr::memmem::rfind(window, b"\r\n") {
        Some(at) => &text[..at + 2],
        None => &[],
    }
}

/// Whether `text` holds any byte outside US-ASCII.
pub fn has_8bit(text: &[u8]) -> bool {
    !text.is_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_removes_controls_and_collapses_space() {
        assert_eq!(
            clean("  550\r\nX-Evil: yes\t\x00\x1b[1m \u{85}ok  ", 100),
            "550 X-Evil: yes [1m ok"
        );
        assert_eq!(clean("\r\n", 10), "");
    }

    #[test]
    fn clean_cuts_at_char_boundary() {
        assert_eq!(clean("ab€cd", 4), "ab");
        assert_eq!(clean("ab€cd", 5), "ab€");
    }

    #[test]
    fn clean_ascii_replaces_non_ascii() {
        assert_eq!(clean_ascii("grüße", 100), "gr??e");
    }

    #[test]
    fn field_folds_at_78_and_limits_998() {
        let long = "word ".repeat(100);
        let f = field("Diagnostic-Code", &format!("smtp; {long}"));
        for line in f.split("\r\n").filter(|l| !l.is_empty()) {
            assert!(line.len() <= FOLD_AT, "{line:?}");
        }
        assert!(f.ends_with("\r\n"));
        let unfolded = f.replace("\r\n ", " ");
        assert_eq!(
            unfolded.trim_end(),
            format!("Diagnostic-Code: smtp; {}", long.trim())
        );

        let giant = "x".repeat(5000);
        let f = field("Diagnostic-Code", &giant);
        for line in f.split("\r\n") {
            assert!(line.len() <= MAX_LINE, "{}", line.len());
            assert!(!line.is_empty() || f.ends_with(line));
        }
    }

    #[test]
    fn crlf_normalisation() {
        assert_eq!(to_crlf(b"a\nb\rc\r\nd"), b"a\r\nb\r\nc\r\nd");
    }

    #[test]
    fn header_section_and_truncation() {
        assert_eq!(
            header_section(b"A: 1\r\nB: 2\r\n\r\nbody\r\n"),
            b"A: 1\r\nB: 2\r\n"
        );
        assert_eq!(header_section(b"A: 1\r\n"), b"A: 1\r\n");
        assert_eq!(header_section(b"\r\nbody"), b"");
        assert_eq!(truncate_at_line(b"A: 1\r\nB: 2\r\n", 9), b"A: 1\r\n");
        assert_eq!(truncate_at_line(b"A: 1\r\nB: 2\r\n", 3), b"");
    }
}
