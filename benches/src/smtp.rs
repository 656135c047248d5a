//! SMTP wire format shared by the load generator and the sink: reply lines, commands, address
//! parts, and the DATA framing (dot-stuffing on send, dot-unstuffing and end detection on
//! receive).
//!
//! Everything here works on byte slices from the peer and never panics on them: malformed input
//! is an `Err`, not a crash. Line lengths are bounded by [`MAX_LINE`] in the stream layer
//! (`crate::conn`), which hands these functions one line at a time without its CRLF.

/// Longest command or reply line accepted, CRLF included. RFC 5321 asks for 512; real servers
/// send longer EHLO lines and AUTH blobs, so both tools allow more but still bound it.
pub const MAX_LINE: usize = 4096;

/// Most lines one multi-line reply may have before the client gives up on the peer.
pub const MAX_REPLY_LINES: usize = 128;

/// One parsed reply line: `250-PIPELINING` is `{ code: 250, last: false, text: b"PIPELINING" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyLine<'a> {
    /// The three-digit code, 200..=599.
    pub code: u16,
    /// `false` for a `250-` continuation line, `true` for the final `250 ` line.
    pub last: bool,
    /// The text after the separator (may be empty).
    pub text: &'a [u8],
}

/// Why a line from the peer could not be understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyntaxError(pub &'static str);

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for SyntaxError {}

/// Removes one trailing `\r\n` or `\n` (and nothing else).
pub fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// Parses one reply line (with or without its line ending).
///
/// The code must be three digits with the first in 2..=5 (RFC 5321 section 4.2); the separator
/// is `-` (more lines follow), a space, or the end of the line (both final).
pub fn parse_reply_line(line: &[u8]) -> Result<ReplyLine<'_>, SyntaxError> {
    let line = trim_eol(line);
    let [a, b, c, rest @ ..] = line else {
        return Err(SyntaxError("reply line shorter than a code"));
    };
    if !(b'2'..=b'5').contains(a) || !b.is_ascii_digit() || !c.is_ascii_digit() {
        return Err(SyntaxError("reply line does not start with a code"));
    }
    let code = u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0');
    match rest {
        [] => Ok(ReplyLine {
            code,
            last: true,
            text: b"",
        }),
        [b' ', text @ ..] => Ok(ReplyLine {
            code,
            last: true,
            text,
        }),
        [b'-', text @ ..] => Ok(ReplyLine {
            code,
            last: false,
            text,
        }),
        _ => Err(SyntaxError("reply code not followed by space or hyphen")),
    }
}

/// One SMTP command as the sink understands it. Slices borrow from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `HELO name`
    Helo(&'a [u8]),
    /// `EHLO name`
    Ehlo(&'a [u8]),
    /// `MAIL FROM:<path> params` (path without the angle brackets; empty for the null sender)
    Mail { path: &'a [u8], params: &'a [u8] },
    /// `RCPT TO:<path> params`
    Rcpt { path: &'a [u8], params: &'a [u8] },
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` (RFC 3030)
    Bdat { size: u64, last: bool },
    /// `RSET`
    Rset,
    /// `NOOP [text]`
    Noop,
    /// `QUIT`
    Quit,
    /// `STARTTLS`
    StartTls,
    /// `AUTH mechanism [initial-response]`
    Auth {
        mechanism: &'a [u8],
        initial: Option<&'a [u8]>,
    },
    /// `VRFY text`
    Vrfy,
    /// `HELP [topic]`
    Help,
    /// Any other verb.
    Unknown,
}

fn split_verb(line: &[u8]) -> (&[u8], &[u8]) {
    match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, b""),
    }
}

fn trim_spaces(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Parses `FROM:<path> params` / `TO:<path> params` after the verb.
fn parse_path_arg<'a>(arg: &'a [u8], keyword: &[u8]) -> Result<(&'a [u8], &'a [u8]), SyntaxError> {
    let arg = trim_spaces(arg);
    if arg.len() < keyword.len() || !arg[..keyword.len()].eq_ignore_ascii_case(keyword) {
        return Err(SyntaxError("missing FROM:/TO: keyword"));
    }
    let rest = trim_spaces(&arg[keyword.len()..]);
    let Some(rest) = rest.strip_prefix(b"<") else {
        return Err(SyntaxError("address not in angle brackets"));
    };
    let Some(close) = rest.iter().position(|&b| b == b'>') else {
        return Err(SyntaxError("unterminated address"));
    };
    let path = &rest[..close];
    if path.iter().any(|&b| b == b'<' || b < 0x20 || b == 0x7f) {
        return Err(SyntaxError("bad character in address"));
    }
    Ok((path, trim_spaces(&rest[close + 1..])))
}

/// Parses one command line (with or without its line ending). Verbs are case-insensitive.
pub fn parse_command(line: &[u8]) -> Result<Command<'_>, SyntaxError> {
    let line = trim_eol(line);
    let (verb, arg) = split_verb(line);
    let is = |name: &[u8]| verb.eq_ignore_ascii_case(name);
    let arg_t = trim_spaces(arg);
    if is(b"EHLO") || is(b"HELO") {
        if arg_t.is_empty() {
            return Err(SyntaxError("HELO/EHLO needs a host name"));
        }
        return Ok(if is(b"EHLO") {
            Command::Ehlo(arg_t)
        } else {
            Command::Helo(arg_t)
        });
    }
    if is(b"MAIL") {
        let (path, params) = parse_path_arg(arg, b"FROM:")?;
        return Ok(Command::Mail { path, params });
    }
    if is(b"RCPT") {
        let (path, params) = parse_path_arg(arg, b"TO:")?;
        if path.is_empty() {
            return Err(SyntaxError("empty recipient"));
        }
        return Ok(Command::Rcpt { path, params });
    }
    if is(b"BDAT") {
        let mut words = arg_t.split(|&b| b == b' ').filter(|w| !w.is_empty());
        let size = words.next().ok_or(SyntaxError("BDAT needs a size"))?;
        if size.is_empty() || size.len() > 18 || !size.iter().all(u8::is_ascii_digit) {
            return Err(SyntaxError("BDAT size is not a number"));
        }
        let size = size.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        let last = match words.next() {
            None => false,
            Some(w) if w.eq_ignore_ascii_case(b"LAST") => true,
            Some(_) => return Err(SyntaxError("BDAT takes only LAST after the size")),
        };
        if words.next().is_some() {
            return Err(SyntaxError("BDAT: too many arguments"));
        }
        return Ok(Command::Bdat { size, last });
    }
    let no_arg = |c: Command<'static>| {
        if arg_t.is_empty() {
            Ok(c)
        } else {
            Err(SyntaxError("command takes no argument"))
        }
    };
    if is(b"DATA") {
        return no_arg(Command::Data);
    }
    if is(b"RSET") {
        return no_arg(Command::Rset);
    }
    if is(b"QUIT") {
        return no_arg(Command::Quit);
    }
    if is(b"STARTTLS") {
        return no_arg(Command::StartTls);
    }
    if is(b"NOOP") {
        return Ok(Command::Noop);
    }
    if is(b"HELP") {
        return Ok(Command::Help);
    }
    if is(b"VRFY") {
        return Ok(Command::Vrfy);
    }
    if is(b"AUTH") {
        let (mechanism, initial) = split_verb(arg_t);
        if mechanism.is_empty() {
            return Err(SyntaxError("AUTH needs a mechanism"));
        }
        let initial = trim_spaces(initial);
        return Ok(Command::Auth {
            mechanism,
            initial: (!initial.is_empty()).then_some(initial),
        });
    }
    Ok(Command::Unknown)
}

/// Splits an address at its last `@` into (local part, domain); no `@` means no domain.
pub fn split_address(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'@') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (path, b""),
    }
}

/// Appends `content` to `out` in DATA form: every line that starts with `.` gets a second `.`
/// (RFC 5321 section 4.5.2) and bare LFs become CRLF. `at_line_start` says whether `content`
/// begins a line; the return value says whether the output ends at a line start. The
/// terminating `.\r\n` is not added.
pub fn stuff_into(content: &[u8], mut at_line_start: bool, out: &mut Vec<u8>) -> bool {
    out.reserve(content.len() + content.len() / 64 + 2);
    let mut rest = content;
    while !rest.is_empty() {
        if at_line_start && rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                let line = &rest[..i];
                out.extend_from_slice(line);
                if line.last() != Some(&b'\r') {
                    out.push(b'\r');
                }
                out.push(b'\n');
                at_line_start = true;
                rest = &rest[i + 1..];
            }
            None => {
                out.extend_from_slice(rest);
                at_line_start = false;
                rest = b"";
            }
        }
    }
    at_line_start
}

/// Receiving side of DATA: fed the content one line at a time (a line ends at LF; a line longer
/// than the stream's buffer arrives in several pieces), it removes dot-stuffing and recognises
/// the end-of-data line.
///
/// The end is a line that is exactly `.` at the start of a line, i.e. the sequence CRLF `.` CRLF
/// counting the previous line's ending. Like Postfix's smtpd, a bare LF also ends a line.
#[derive(Debug, Clone)]
pub struct DataReceiver {
    at_line_start: bool,
}

impl Default for DataReceiver {
    fn default() -> Self {
        Self {
            at_line_start: true,
        }
    }
}

impl DataReceiver {
    /// Feeds one piece; returns `None` at the end-of-data line, else the content bytes of the
    /// piece (a slice of it, with one leading stuffing dot removed at a line start).
    pub fn feed<'a>(&mut self, piece: &'a [u8]) -> Option<&'a [u8]> {
        let content = if self.at_line_start {
            if piece == b".\r\n" || piece == b".\n" {
                return None;
            }
            piece.strip_prefix(b".").unwrap_or(piece)
        } else {
            piece
        };
        self.at_line_start = piece.last() == Some(&b'\n');
        Some(content)
    }
}

/// Unstuffs a complete DATA stream held in memory: returns the content and how many bytes of
/// `wire` the terminator ended at, or `None` if `wire` holds no end-of-data line.
pub fn unstuff(wire: &[u8]) -> Option<(Vec<u8>, usize)> {
    let mut rx = DataReceiver::default();
    let mut out = Vec::with_capacity(wire.len());
    let mut pos = 0;
    while pos < wire.len() {
        let end = memchr::memchr(b'\n', &wire[pos..]).map_or(wire.len(), |i| pos + i + 1);
        match rx.feed(&wire[pos..end]) {
            None => return Some((out, end)),
            Some(c) => out.extend_from_slice(c),
        }
        pos = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reply_lines() {
        assert_eq!(
            parse_reply_line(b"250-PIPELINING\r\n"),
            Ok(ReplyLine {
                code: 250,
                last: false,
                text: b"PIPELINING"
            })
        );
        assert_eq!(
            parse_reply_line(b"354 go ahead"),
            Ok(ReplyLine {
                code: 354,
                last: true,
                text: b"go ahead"
            })
        );
        assert_eq!(
            parse_reply_line(b"221"),
            Ok(ReplyLine {
                code: 221,
                last: true,
                text: b""
            })
        );
        assert!(parse_reply_line(b"25").is_err());
        assert!(parse_reply_line(b"650 x").is_err());
        assert!(parse_reply_line(b"250x").is_err());
        assert!(parse_reply_line(b"2a0 x").is_err());
    }

    #[test]
    fn commands() {
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b.example> SIZE=10\r\n"),
            Ok(Command::Mail {
                path: b"a@b.example",
                params: b"SIZE=10"
            })
        );
        assert_eq!(
            parse_command(b"mail from: <>"),
            Ok(Command::Mail {
                path: b"",
                params: b""
            })
        );
        assert_eq!(
            parse_command(b"RCPT TO:<x@y>"),
            Ok(Command::Rcpt {
                path: b"x@y",
                params: b""
            })
        );
        assert!(parse_command(b"RCPT TO:<>").is_err());
        assert!(parse_command(b"RCPT TO:x@y").is_err());
        assert!(parse_command(b"MAIL FROM:<a@b").is_err());
        assert_eq!(
            parse_command(b"BDAT 100 LAST"),
            Ok(Command::Bdat {
                size: 100,
                last: true
            })
        );
        assert_eq!(
            parse_command(b"bdat 0"),
            Ok(Command::Bdat {
                size: 0,
                last: false
            })
        );
        assert!(parse_command(b"BDAT -1").is_err());
        assert!(parse_command(b"BDAT 1 FIRST").is_err());
        assert!(parse_command(b"BDAT 99999999999999999999").is_err());
        assert_eq!(parse_command(b"data"), Ok(Command::Data));
        assert!(parse_command(b"DATA x").is_err());
        assert_eq!(
            parse_command(b"EHLO  client.example "),
            Ok(Command::Ehlo(b"client.example"))
        );
        assert!(parse_command(b"EHLO").is_err());
        assert_eq!(
            parse_command(b"AUTH PLAIN AGEAYg=="),
            Ok(Command::Auth {
                mechanism: b"PLAIN",
                initial: Some(b"AGEAYg==")
            })
        );
        assert_eq!(parse_command(b"XYZZY"), Ok(Command::Unknown));
        assert_eq!(parse_command(b""), Ok(Command::Unknown));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            split_address(b"a@b@c.example"),
            (&b"a@b"[..], &b"c.example"[..])
        );
        assert_eq!(split_address(b"postmaster"), (&b"postmaster"[..], &b""[..]));
    }

    #[test]
    fn stuffing() {
        let mut out = Vec::new();
        let end = stuff_into(b".a\n..b\r\nc.\n.", true, &mut out);
        assert_eq!(out, b"..a\r\n...b\r\nc.\r\n..");
        assert!(!end);
        assert_eq!(
            unstuff(b"..a\r\nb\r\n.\r\nrest"),
            Some((b".a\r\nb\r\n".to_vec(), 11))
        );
        assert_eq!(unstuff(b"a\r\n.x\r\n"), None);
        // A dot in the middle of a line is content, not an end.
        assert_eq!(unstuff(b"a.\r\n.\r\n"), Some((b"a.\r\n".to_vec(), 7)));
    }

    proptest! {
        #[test]
        fn reply_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(r) = parse_reply_line(&line) {
                prop_assert!((200..600).contains(&r.code));
            }
        }

        #[test]
        fn reply_roundtrip(code in 200u16..600, last: bool, text in "[ -~]{0,40}") {
            let line = format!("{code}{}{text}\r\n", if last { ' ' } else { '-' });
            let r = parse_reply_line(line.as_bytes()).unwrap();
            prop_assert_eq!(r.code, code);
            prop_assert_eq!(r.last, last);
            prop_assert_eq!(r.text, text.as_bytes());
        }

        #[test]
        fn command_parser_never_panics(line in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = parse_command(&line);
        }

        #[test]
        fn command_roundtrip(local in "[a-z0-9.+-]{1,20}", domain in "[a-z0-9.-]{1,20}", size in any::<u32>()) {
            let addr = format!("{local}@{domain}");
            let mail = format!("MAIL FROM:<{addr}> BODY=8BITMIME\r\n");
            prop_assert_eq!(parse_command(mail.as_bytes()),
                Ok(Command::Mail { path: addr.as_bytes(), params: b"BODY=8BITMIME" }));
            let rcpt = format!("rcpt to:<{addr}>");
            prop_assert_eq!(parse_command(rcpt.as_bytes()), Ok(Command::Rcpt { path: addr.as_bytes(), params: b"" }));
            let bdat = format!("BDAT {size} LAST");
            prop_assert_eq!(parse_command(bdat.as_bytes()), Ok(Command::Bdat { size: u64::from(size), last: true }));
        }

        /// Stuffing then unstuffing gives back the content with CRLF line endings.
        #[test]
        fn stuff_unstuff_roundtrip(content in proptest::collection::vec(prop_oneof![
            Just(b'.'), Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..300)) {
            let mut wire = Vec::new();
            if !stuff_into(&content, true, &mut wire) {
                wire.extend_from_slice(b"\r\n");
            }
            let body_len = wire.len();
            wire.extend_from_slice(b".\r\nNEXT");
            let (got, end) = unstuff(&wire).expect("terminator found");
            prop_assert_eq!(end, body_len + 3);
            // Expected: content with bare LF -> CRLF and a final line ending.
            let mut expected = Vec::new();
            for (i, &b) in content.iter().enumerate() {
                if b == b'\n' && (i == 0 || content[i - 1] != b'\r') {
                    expected.push(b'\r');
                }
                expected.push(b);
            }
            if !expected.is_empty() && !expected.ends_with(b"\n") {
                expected.extend_from_slice(b"\r\n");
            }
            prop_assert_eq!(got, expected);
        }

        #[test]
        fn unstuff_never_panics(wire in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Some((content, end)) = unstuff(&wire) {
                prop_assert!(end <= wire.len());
                prop_assert!(content.len() <= end);
            }
        }
    }
}
