//! RFC 6376 section 3.4: the header section split into fields, and the
//! simple and relaxed canonicalizations of header fields and the body.
//!
//! Lines are split at LF with one CR before it dropped, and emitted with
//! CRLF: the SMTP client repairs a bare LF into CRLF on the wire, so the
//! hash is over what the receiver sees.

/// `simple` or `relaxed`, for headers or the body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Canon {
    Simple,
    Relaxed,
}

impl Canon {
    pub fn name(self) -> &'static str {
        match self {
            Canon::Simple => "simple",
            Canon::Relaxed => "relaxed",
        }
    }

    fn parse(word: &str) -> Option<Canon> {
        match word.trim().to_ascii_lowercase().as_str() {
            "simple" => Some(Canon::Simple),
            "relaxed" => Some(Canon::Relaxed),
            _ => None,
        }
    }

    /// OpenDKIM's `Canonicalization`: `header/body`, or one word for the
    /// header with a simple body (RFC 6376's `c=` defaulting).
    pub fn parse_pair(value: &str) -> Result<(Canon, Canon), String> {
        let bad = || format!("\"{value}\": expected simple or relaxed, as header/body");
        match value.split_once('/') {
            Some((h, b)) => Ok((
                Canon::parse(h).ok_or_else(bad)?,
                Canon::parse(b).ok_or_else(bad)?,
            )),
            None => Ok((Canon::parse(value).ok_or_else(bad)?, Canon::Simple)),
        }
    }
}

/// One header field as it appears in the message: its name and its whole
/// raw text (name, colon, value, continuation lines, line endings).
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    pub name: &'a str,
    pub raw: &'a [u8],
}

/// The header fields of `content` and the offset where the body starts
/// (after the empty line; the end when there is none). A line without a
/// colon ends the header section, as it cannot be a field.
pub fn split_message(content: &[u8]) -> (Vec<Field<'_>>, usize) {
    let mut fields: Vec<Field<'_>> = Vec::new();
    let mut pos = 0;
    let mut field_start = 0;
    while pos < content.len() {
        let line_end =
            memchr::memchr(b'\n', &content[pos..]).map_or(content.len(), |i| pos + i + 1);
        let line = &content[pos..line_end];
        if line == b"\r\n" || line == b"\n" {
            return (fields, line_end);
        }
        if matches!(line[0], b' ' | b'\t') {
            if let Some(last) = fields.last_mut() {
                last.raw = &content[field_start..line_end];
                pos = line_end;
                continue;
            }
            return (fields, pos);
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return (fields, pos);
        };
        let Ok(name) = std::str::from_utf8(&line[..colon]) else {
            return (fields, pos);
        };
        fields.push(Field {
            name: name.trim_end_matches([' ', '\t']),
            raw: line,
        });
        field_start = pos;
        pos = line_end;
    }
    (fields, content.len())
}

/// The lines of `text`, each without its line ending (LF, or CRLF).
fn lines(text: &[u8]) -> impl Iterator<Item = &[u8]> {
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    text.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// A header field canonicalized, with its CRLF (RFC 6376 3.4.1, 3.4.2).
pub fn header(canon: Canon, raw: &[u8], out: &mut Vec<u8>) {
    match canon {
        Canon::Simple => {
            for (i, line) in lines(raw).enumerate() {
                if i > 0 {
                    out.extend_from_slice(b"\r\n");
                }
                out.extend_from_slice(line);
            }
        }
        Canon::Relaxed => {
            let colon = memchr::memchr(b':', raw).unwrap_or(raw.len());
            let name = raw[..colon].trim_ascii_end();
            out.extend(name.iter().map(u8::to_ascii_lowercase));
            out.push(b':');
            let value = raw.get(colon + 1..).unwrap_or_default();
            let mut pending_space = false;
            let mut started = false;
            for &b in value {
                match b {
                    b'\r' | b'\n' => {}
                    b' ' | b'\t' => pending_space = started,
                    _ => {
                        if pending_space {
                            out.push(b' ');
                            pending_space = false;
                        }
                        started = true;
                        out.push(b);
                    }
                }
            }
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// Feeds the canonical body to `sink` in pieces (RFC 6376 3.4.3, 3.4.4):
/// line by line, with the empty lines at the end left out.
pub fn body(canon: Canon, body: &[u8], mut sink: impl FnMut(&[u8])) {
    let mut empty_run = 0usize;
    let mut any = false;
    let mut scratch = Vec::new();
    for line in lines(body) {
        let line: &[u8] = match canon {
            Canon::Simple => line,
            Canon::Relaxed if is_relaxed(line) => line,
            Canon::Relaxed => {
                relaxed_line(line, &mut scratch);
                &scratch
            }
        };
        if line.is_empty() {
            empty_run += 1;
            continue;
        }
        for _ in 0..empty_run {
            sink(b"\r\n");
        }
        empty_run = 0;
        sink(line);
        sink(b"\r\n");
        any = true;
    }
    // An empty simple body is one CRLF; an empty relaxed body is empty.
    if !any && canon == Canon::Simple {
        sink(b"\r\n");
    }
}

/// Whether relaxed canonicalization leaves `line` as it is (most lines:
/// no tab, no two spaces in a row, no space at the end).
fn is_relaxed(line: &[u8]) -> bool {
    line.last() != Some(&b' ')
        && memchr::memchr(b'\t', line).is_none()
        && memchr::memmem::find(line, b"  ").is_none()
}

/// Runs of WSP as one SP, none at the end of the line.
fn relaxed_line(line: &[u8], out: &mut Vec<u8>) {
    out.clear();
    let mut pending_space = false;
    for &b in line {
        if b == b' ' || b == b'\t' {
            pending_space = true;
        } else {
            if pending_space {
                out.push(b' ');
                pending_space = false;
            }
            out.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_text(canon: Canon, text: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        body(canon, text, |p| out.extend_from_slice(p));
        out
    }

    fn header_text(canon: Canon, raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        header(canon, raw, &mut out);
        out
    }

    // RFC 6376 section 3.4.5's example.
    #[test]
    fn rfc_example() {
        let msg = b"A: X\r\nB : Y\t\r\n\tZ  \r\n\r\n C \r\nD \t E\r\n\r\n\r\n";
        let (fields, start) = split_message(msg);
        let relaxed: Vec<u8> = fields
            .iter()
            .flat_map(|f| header_text(Canon::Relaxed, f.raw))
            .collect();
        assert_eq!(relaxed, b"a:X\r\nb:Y Z\r\n");
        let simple: Vec<u8> = fields
            .iter()
            .flat_map(|f| header_text(Canon::Simple, f.raw))
            .collect();
        assert_eq!(simple, b"A: X\r\nB : Y\t\r\n\tZ  \r\n");
        assert_eq!(body_text(Canon::Relaxed, &msg[start..]), b" C\r\nD E\r\n");
        assert_eq!(
            body_text(Canon::Simple, &msg[start..]),
            b" C \r\nD \t E\r\n"
        );
    }

    #[test]
    fn empty_bodies_and_missing_final_newline() {
        assert_eq!(body_text(Canon::Simple, b""), b"\r\n");
        assert_eq!(body_text(Canon::Relaxed, b""), b"");
        assert_eq!(body_text(Canon::Relaxed, b"\r\n\r\n"), b"");
        assert_eq!(body_text(Canon::Relaxed, b"x"), b"x\r\n");
        assert_eq!(body_text(Canon::Simple, b"a\n\nb\n\n"), b"a\r\n\r\nb\r\n");
    }

    #[test]
    fn split_handles_folding_bare_lf_and_no_body() {
        let msg = b"Received: from x\n\tby y\nSubject: s\n\nbody\n";
        let (fields, start) = split_message(msg);
        assert_eq!(fields.len(), 2);
        assert_eq!(fields[0].raw, b"Received: from x\n\tby y\n");
        assert_eq!(&msg[start..], b"body\n");
        let (fields, start) = split_message(b"Subject: only");
        assert_eq!((fields.len(), start), (1, 13));
        // A line that is no field ends the header section.
        let (fields, start) = split_message(b"A: 1\r\nnot a field\r\n");
        assert_eq!((fields.len(), start), (1, 6));
    }

    #[test]
    fn parse_pair_follows_opendkim() {
        assert_eq!(
            Canon::parse_pair("relaxed/relaxed"),
            Ok((Canon::Relaxed, Canon::Relaxed))
        );
        assert_eq!(
            Canon::parse_pair("relaxed"),
            Ok((Canon::Relaxed, Canon::Simple))
        );
        assert!(Canon::parse_pair("relaxed/loose").is_err());
    }

    proptest::proptest! {
        #[test]
        fn never_panics(text in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let (fields, start) = split_message(&text);
            for f in &fields {
                header_text(Canon::Relaxed, f.raw);
                header_text(Canon::Simple, f.raw);
            }
            body_text(Canon::Relaxed, &text[start..]);
        }

        #[test]
        fn the_fast_path_changes_nothing(line in proptest::collection::vec(proptest::sample::select(vec![b' ', b'\t', b'a', b'\r']), 0..40)) {
            let mut out = Vec::new();
            relaxed_line(&line, &mut out);
            if is_relaxed(&line) {
                proptest::prop_assert_eq!(out, line);
            }
        }
    }
}
