//! Parsing server replies (RFC 5321 §4.2) out of the connection's read buffer.
//!
//! The server is untrusted input: a reply is accepted only if every line starts with three digits
//! whose first is 2–5, followed by `-` (more lines follow), a space or the end of the line. Lines
//! are bounded ([`MAX_LINE`]) and so is the number of lines in one reply ([`MAX_LINES`]), so a
//! hostile or broken server can neither make the client buffer without limit nor make it panic
//! (the parser is fuzzed with proptest below).
//!
//! Parsing is incremental in the simplest way: [`parse_reply`] looks at the buffered bytes and
//! either finds one complete reply at the front or reports that more bytes are needed. Pipelined
//! replies that arrived in one read are then taken off the front one by one without another read.
//!
//! Lines ending in a bare LF are accepted (many servers are sloppy); a trailing CR is removed.

use std::fmt;

/// The longest reply line accepted, without its line ending (RFC 5321 allows 512; real servers
/// send longer EHLO lines and texts, so this is generous).
pub const MAX_LINE: usize = 8192;
/// The most lines accepted in one reply.
pub const MAX_LINES: usize = 64;

/// One complete server reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerReply {
    /// The three-digit reply code (200–599).
    pub code: u16,
    /// The RFC 3463 enhanced status code (`5.1.1`) when the server gave one whose class matches
    /// the reply code.
    pub enhanced: Option<String>,
    /// The text of all lines, joined with single spaces, without codes (the enhanced code is
    /// removed from every line that repeats it).
    pub text: String,
}

impl ServerReply {
    /// 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not try again.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The enhanced status code to record for this reply: the server's, or `X.0.0` from the
    /// reply class.
    pub fn status(&self) -> String {
        match &self.enhanced {
            Some(e) => e.clone(),
            None => format!("{}.0.0", self.code / 100),
        }
    }
}

impl fmt::Display for ServerReply {
    /// `550 5.1.1 User unknown` — the Postfix log form.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some(e) = &self.enhanced {
            write!(f, " {e}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Why buffered bytes are not a valid reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    LineTooLong,
    TooManyLines,
    /// A line that does not start with a valid code; carries a printable excerpt.
    Malformed(String),
}

impl fmt::Display for ReplyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplyError::LineTooLong => write!(f, "reply line longer than {MAX_LINE} bytes"),
            ReplyError::TooManyLines => write!(f, "reply with more than {MAX_LINES} lines"),
            ReplyError::Malformed(line) => write!(f, "malformed reply: {line}"),
        }
    }
}

/// One line of a reply, split up.
struct Line<'a> {
    code: u16,
    last: bool,
    text: &'a [u8],
}

fn split_line(line: &[u8]) -> Result<Line<'_>, ReplyError> {
    let malformed = || {
        let excerpt: String = String::from_utf8_lossy(&line[..line.len().min(100)])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        ReplyError::Malformed(excerpt)
    };
    if line.len() < 3
        || !line[..3].iter().all(u8::is_ascii_digit)
        || !(b'2'..=b'5').contains(&line[0])
    {
        return Err(malformed());
    }
    let code = u16::from(line[0] - b'0') * 100
        + u16::from(line[1] - b'0') * 10
        + u16::from(line[2] - b'0');
    match line.get(3) {
        None => Ok(Line {
            code,
            last: true,
            text: b"",
        }),
        Some(b' ') => Ok(Line {
            code,
            last: true,
            text: &line[4..],
        }),
        Some(b'-') => Ok(Line {
            code,
            last: false,
            text: &line[4..],
        }),
        Some(_) => Err(malformed()),
    }
}

/// The lines of the reply at the front of `buf`: `Ok(Some(end))` when a complete reply ends at
/// `end`, `Ok(None)` when more bytes are needed.
fn reply_end(buf: &[u8]) -> Result<Option<usize>, ReplyError> {
    let mut pos = 0;
    let mut lines = 0;
    loop {
        let rest = &buf[pos..];
        let window = &rest[..rest.len().min(MAX_LINE + 2)];
        let Some(lf) = memchr::memchr(b'\n', window) else {
            return if rest.len() > MAX_LINE + 1 {
                Err(ReplyError::LineTooLong)
            } else {
                Ok(None)
            };
        };
        let mut line = &rest[..lf];
        if let [head @ .., b'\r'] = line {
            line = head;
        }
        if line.len() > MAX_LINE {
            return Err(ReplyError::LineTooLong);
        }
        lines += 1;
        if lines > MAX_LINES {
            return Err(ReplyError::TooManyLines);
        }
        let parsed = split_line(line)?;
        pos += lf + 1;
        if parsed.last {
            return Ok(Some(pos));
        }
    }
}

/// Iterate over the lines of a complete reply (as delimited by [`reply_end`]).
pub(crate) fn reply_lines(reply: &[u8]) -> impl Iterator<Item = &[u8]> {
    reply
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

/// The length of an enhanced status code at the start of `text` (`5.1.1`, then a space or the
/// end), if there is one of class `class` (RFC 3463: class 2, 4 or 5; subject and detail of one to
/// three digits).
fn enhanced_len(text: &[u8], class: u8) -> Option<usize> {
    if text.first() != Some(&class)
        || !matches!(class, b'2' | b'4' | b'5')
        || text.get(1) != Some(&b'.')
    {
        return None;
    }
    let mut pos = 2;
    for part in 0..2 {
        let digits = text[pos..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if !(1..=3).contains(&digits) {
            return None;
        }
        pos += digits;
        if part == 0 {
            if text.get(pos) != Some(&b'.') {
                return None;
            }
            pos += 1;
        }
    }
    match text.get(pos) {
        None | Some(b' ') => Some(pos),
        _ => None,
    }
}

/// Parse the reply at the front of `buf`: `Ok(Some((reply, consumed)))`, or `Ok(None)` if the
/// reply is not complete yet.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(ServerReply, usize)>, ReplyError> {
    let Some(end) = reply_end(buf)? else {
        return Ok(None);
    };
    let mut code = 0;
    let mut enhanced: Option<&[u8]> = None;
    let mut text = Vec::new();
    for (i, line) in reply_lines(&buf[..end]).enumerate() {
        // reply_end has validated every line.
        let parsed = split_line(line)?;
        code = parsed.code;
        let mut body = parsed.text;
        if i == 0 {
            let class = line[0];
            if let Some(n) = enhanced_len(body, class) {
                enhanced = Some(&body[..n]);
            }
        }
        if let Some(e) = enhanced
            && body.starts_with(e)
            && (body.len() == e.len() || body[e.len()] == b' ')
        {
            body = &body[e.len()..];
        }
        let body = body.trim_ascii();
        if !body.is_empty() {
            if !text.is_empty() {
                text.push(b' ');
            }
            text.extend_from_slice(body);
        }
    }
    // An enhanced code of another class than the final line's code is not trusted.
    let enhanced = enhanced
        .filter(|e| u16::from(e[0] - b'0') == code / 100)
        .map(|e| String::from_utf8_lossy(e).into_owned());
    let text = match String::from_utf8(text) {
        Ok(t) => t,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    };
    Ok(Some((
        ServerReply {
            code,
            enhanced,
            text,
        },
        end,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(s: &str) -> ServerReply {
        let (r, n) = parse_reply(s.as_bytes()).unwrap().unwrap();
        assert_eq!(n, s.len());
        r
    }

    #[test]
    fn single_line() {
        let r = one("250 2.1.0 Ok\r\n");
        assert_eq!(
            (r.code, r.enhanced.as_deref(), r.text.as_str()),
            (250, Some("2.1.0"), "Ok")
        );
        assert_eq!(r.to_string(), "250 2.1.0 Ok");
    }

    #[test]
    fn multi_line_joins_text_and_strips_repeated_enhanced_codes() {
        let r = one("550-5.7.1 Mail refused\r\n550-5.7.1 see https://x\r\n550 5.7.1 bye\r\n");
        assert_eq!(r.code, 550);
        assert_eq!(r.enhanced.as_deref(), Some("5.7.1"));
        assert_eq!(r.text, "Mail refused see https://x bye");
        assert_eq!(r.to_string(), "550 5.7.1 Mail refused see https://x bye");
    }

    #[test]
    fn no_enhanced_code_and_bare_code() {
        let r = one("220 mx.example.com ESMTP\n");
        assert_eq!(
            (r.code, r.enhanced, r.text.as_str()),
            (220, None, "mx.example.com ESMTP")
        );
        let r = one("354\r\n");
        assert_eq!((r.code, r.text.as_str()), (354, ""));
        assert_eq!(r.to_string(), "354");
        // Class mismatch: not an enhanced code.
        assert_eq!(one("550 2.0.0 odd\r\n").enhanced, None);
        assert_eq!(one("250 2.0.0x\r\n").enhanced, None);
        assert_eq!(one("250 2.0.0\r\n").enhanced.as_deref(), Some("2.0.0"));
        assert_eq!(one("250 2.1234.0 no\r\n").enhanced, None);
    }

    #[test]
    fn incomplete_and_pipelined() {
        assert_eq!(parse_reply(b"250-a\r\n250 b").unwrap(), None);
        assert_eq!(parse_reply(b"").unwrap(), None);
        let buf = b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 go\r\n";
        let (a, n) = parse_reply(buf).unwrap().unwrap();
        assert_eq!(a.code, 250);
        let (b, m) = parse_reply(&buf[n..]).unwrap().unwrap();
        assert_eq!(b.enhanced.as_deref(), Some("2.1.5"));
        let (c, _) = parse_reply(&buf[n + m..]).unwrap().unwrap();
        assert_eq!(c.code, 354);
    }

    #[test]
    fn malformed_and_bounds() {
        assert!(matches!(
            parse_reply(b"hello\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"650 no\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"250x\r\n"),
            Err(ReplyError::Malformed(_))
        ));
        let long = vec![b'2'; MAX_LINE + 10];
        assert_eq!(parse_reply(&long), Err(ReplyError::LineTooLong));
        let many = "250-x\r\n".repeat(MAX_LINES + 1);
        assert_eq!(parse_reply(many.as_bytes()), Err(ReplyError::TooManyLines));
        let ok = format!("250 {}\r\n", "y".repeat(MAX_LINE - 4));
        assert!(parse_reply(ok.as_bytes()).unwrap().is_some());
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            if let Ok(Some((r, n))) = parse_reply(&bytes) {
                prop_assert!(n <= bytes.len());
                prop_assert!((200..600).contains(&r.code));
            }
        }

        #[test]
        fn never_panics_on_reply_like_input(
            lines in proptest::collection::vec(("[2-5][0-9][0-9]", "[ -]?", "[ -~\u{80}-\u{10ffff}]{0,40}", "\r?\n"), 1..6)
        ) {
            let text: String = lines.iter().map(|(c, s, t, e)| format!("{c}{s}{t}{e}")).collect();
            let _ = parse_reply(text.as_bytes());
        }
    }
}
