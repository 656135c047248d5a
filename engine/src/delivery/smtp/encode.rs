//! Building what goes on the wire: the envelope commands with their ESMTP parameters, xtext,
//! and the DATA body (dot-stuffing, line endings).
//!
//! Everything appends to one output buffer that is written in large chunks: the hot path does no
//! per-line writes and no per-command allocations beyond the buffer's growth.

use corepost_spool::record::notify;
use corepost_spool::{BodyType, MailParams, Recipient, Ret};

/// RFC 3461 xtext: printable ASCII except `+` and `=` as is, everything else `+XX`.
pub fn push_xtext(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for &b in value.as_bytes() {
        if (b'!'..=b'~').contains(&b) && b != b'+' && b != b'=' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'+', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// What the MAIL FROM command carries, decided from the message and the server's capabilities.
#[derive(Debug, Clone, Copy, Default)]
pub struct MailOptions {
    /// `SIZE=` with this value.
    pub size: Option<u64>,
    pub body: Option<BodyType>,
    pub smtputf8: bool,
    /// RET/ENVID (and NOTIFY/ORCPT on RCPT): the server supports DSN.
    pub dsn: bool,
}

/// `MAIL FROM:<sender> ...\r\n`
pub fn push_mail_from(out: &mut Vec<u8>, sender: &str, params: &MailParams, opts: &MailOptions) {
    out.extend_from_slice(b"MAIL FROM:<");
    out.extend_from_slice(sender.as_bytes());
    out.push(b'>');
    if let Some(size) = opts.size {
        out.extend_from_slice(b" SIZE=");
        out.extend_from_slice(size.to_string().as_bytes());
    }
    match opts.body {
        Some(BodyType::EightBitMime) => out.extend_from_slice(b" BODY=8BITMIME"),
        Some(BodyType::BinaryMime) => out.extend_from_slice(b" BODY=BINARYMIME"),
        Some(BodyType::SevenBit) => out.extend_from_slice(b" BODY=7BIT"),
        None => {}
    }
    if opts.smtputf8 {
        out.extend_from_slice(b" SMTPUTF8");
    }
    if opts.dsn {
        match params.ret {
            Some(Ret::Full) => out.extend_from_slice(b" RET=FULL"),
            Some(Ret::Headers) => out.extend_from_slice(b" RET=HDRS"),
            None => {}
        }
        if let Some(envid) = &params.envid {
            out.extend_from_slice(b" ENVID=");
            push_xtext(out, envid);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// `RCPT TO:<address> ...\r\n`
pub fn push_rcpt_to(out: &mut Vec<u8>, rcpt: &Recipient, dsn: bool) {
    out.extend_from_slice(b"RCPT TO:<");
    out.extend_from_slice(rcpt.address.as_bytes());
    out.push(b'>');
    if dsn {
        if rcpt.notify & notify::NEVER != 0 {
            out.extend_from_slice(b" NOTIFY=NEVER");
        } else if rcpt.notify != 0 {
            out.extend_from_slice(b" NOTIFY=");
            let mut first = true;
            for (bit, name) in [
                (notify::SUCCESS, "SUCCESS"),
                (notify::FAILURE, "FAILURE"),
                (notify::DELAY, "DELAY"),
            ] {
                if rcpt.notify & bit != 0 {
                    if !first {
                        out.push(b',');
                    }
                    out.extend_from_slice(name.as_bytes());
                    first = false;
                }
            }
        }
        // A rewritten recipient without the client's ORCPT announces the
        // address as received, as Postfix's smtp client does.
        let original = rcpt.original.as_ref().map(|o| format!("rfc822;{o}"));
        if let Some(orcpt) = rcpt.orcpt.as_ref().or(original.as_ref()) {
            // Stored decoded, as `type;address`: only the address part is xtext.
            let (kind, address) = orcpt.split_once(';').unwrap_or(("rfc822", orcpt));
            out.extend_from_slice(b" ORCPT=");
            out.extend_from_slice(kind.as_bytes());
            out.push(b';');
            push_xtext(out, address);
        }
    }
    out.extend_from_slice(b"\r\n");
}

/// The DATA body encoder: dot-stuffing, line endings and line folding, one slice of the content
/// at a time (the caller flushes between slices; the state between calls lives here).
///
/// Output normalisation (RFC 5321 §2.3.8: CR and LF only as CRLF), as Postfix's relayed copies:
/// - a bare LF ends a line (sent as CRLF), as Postfix reads LF as the end of a line;
/// - a bare CR (one not followed by LF) is sent as a space, as Postfix 3.7's relayed copy shows
///   (checked against a real Postfix relaying `ab\rcd` to a sink: the sink got `ab cd`);
/// - a line longer than `smtp_line_length_limit` is broken with CRLF SPACE every `limit` bytes,
///   as Postfix's `smtp_text_out` does (the continuation lines start with the space and are at
///   most `limit` bytes with it; a line of exactly `limit` bytes is not broken); 0: no limit.
///
/// So no bare CR or LF ever leaves, whatever the stored content holds (smtpd's
/// `smtpd_forbid_bare_newline`, pickup, bounces), and a next hop that treats a bare CR or LF as
/// a line end cannot be handed a line the sender chose to hide.
#[derive(Debug, Clone)]
pub struct BodyEncoder {
    limit: usize,
    /// Content bytes on the current output line (0: at the start of a real line).
    column: usize,
    /// The last slice ended with a CR whose meaning depends on the next byte.
    pending_cr: bool,
    /// A line was broken (Postfix logs this once per message).
    folded: bool,
}

impl BodyEncoder {
    /// `limit`: `smtp_line_length_limit` (0: no limit; 1 is taken as 2, so that a continuation
    /// line has room for a byte after its space).
    pub fn new(limit: usize) -> BodyEncoder {
        BodyEncoder {
            limit: if limit == 1 { 2 } else { limit },
            column: 0,
            pending_cr: false,
            folded: false,
        }
    }

    /// Whether a line was broken at the line length limit.
    pub fn folded(&self) -> bool {
        self.folded
    }

    /// Append `content` (a slice of the message) to `out`, encoded.
    pub fn push(&mut self, out: &mut Vec<u8>, content: &[u8]) {
        let mut rest = content;
        while !rest.is_empty() {
            if self.pending_cr {
                self.pending_cr = false;
                if rest[0] == b'\n' {
                    self.end_line(out);
                    rest = &rest[1..];
                    continue;
                }
                self.text(out, b" ");
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                Some(i) => {
                    self.text(out, &rest[..i]);
                    if rest[i] == b'\n' {
                        self.end_line(out);
                    } else {
                        self.pending_cr = true;
                    }
                    rest = &rest[i + 1..];
                }
                None => {
                    self.text(out, rest);
                    return;
                }
            }
        }
    }

    /// End the body: a CRLF if the last line had none, then `.` CRLF.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.pending_cr {
            self.pending_cr = false;
            self.text(out, b" ");
        }
        if self.column != 0 {
            self.end_line(out);
        }
        out.extend_from_slice(b".\r\n");
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"\r\n");
        self.column = 0;
    }

    /// Line content without CR or LF.
    fn text(&mut self, out: &mut Vec<u8>, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if self.limit > 0 && self.column >= self.limit {
                out.extend_from_slice(b"\r\n ");
                self.column = 1;
                self.folded = true;
            }
            if self.column == 0 && bytes[0] == b'.' {
                out.push(b'.');
            }
            let room = if self.limit > 0 {
                self.limit - self.column
            } else {
                bytes.len()
            };
            let n = room.min(bytes.len());
            out.extend_from_slice(&bytes[..n]);
            self.column += n;
            bytes = &bytes[n..];
        }
    }
}

/// Whether `content` can go out as it is (BDAT): every CR is followed by LF, every LF preceded
/// by CR, and no line is longer than `limit` (0: no limit). A last line without an ending is
/// fine.
pub fn is_canonical(content: &[u8], limit: usize) -> bool {
    let limit = if limit == 0 { usize::MAX } else { limit };
    let mut line_start = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', content) {
        if content[i] == b'\r' {
            if content.get(i + 1) != Some(&b'\n') {
                return false;
            }
            if i - line_start > limit {
                return false;
            }
        } else {
            if i == 0 || content[i - 1] != b'\r' {
                return false;
            }
            line_start = i + 1;
        }
    }
    content.len() - line_start <= limit
}

#[cfg(test)]
mod tests {

    use super::*;
    use proptest::prelude::*;

    fn stuffed(content: &[u8]) -> Vec<u8> {
        encoded(content, 0)
    }

    fn encoded(content: &[u8], limit: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(limit);
        enc.push(&mut out, content);
        enc.finish(&mut out);
        out
    }

    #[test]
    fn canonical_content_has_crlf_everywhere() {
        assert!(is_canonical(b"a\r\nb\r\n", 0));
        assert!(is_canonical(b"a\r\nno ending", 0));
        assert!(is_canonical(b"", 0));
        assert!(!is_canonical(b"a\nb\r\n", 0));
        assert!(!is_canonical(b"\n", 0));
        assert!(!is_canonical(b"a\rb\r\n", 0));
        assert!(!is_canonical(b"ab\r", 0));
        assert!(is_canonical(b"abc\r\nabc", 3));
        assert!(!is_canonical(b"abcd\r\nabc", 3));
        assert!(!is_canonical(b"abc\r\nabcd", 3));
    }

    #[test]
    fn bare_cr_becomes_a_space_and_bare_lf_a_line_end() {
        assert_eq!(encoded(b"ab\rcd\r\n", 0), b"ab cd\r\n.\r\n");
        assert_eq!(encoded(b"ab\ncd\n", 0), b"ab\r\ncd\r\n.\r\n");
        assert_eq!(encoded(b"a\r\r\n", 0), b"a \r\n.\r\n");
        assert_eq!(encoded(b"end\r", 0), b"end \r\n.\r\n");
        // A bare CR cannot start a line that ends the data early.
        assert_eq!(encoded(b"x\r.\r\n", 0), b"x .\r\n.\r\n");
    }

    #[test]
    fn crlf_split_between_slices_stays_one_line_end() {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(0);
        enc.push(&mut out, b"ab\r");
        enc.push(&mut out, b"\ncd\r");
        enc.push(&mut out, b"x\r\n");
        enc.finish(&mut out);
        assert_eq!(out, b"ab\r\ncd x\r\n.\r\n");
    }

    /// Postfix's smtp_text_out: pieces of `limit` bytes, continuation lines start with a space
    /// and hold `limit` bytes with it (checked against Postfix 3.7 with a 2,500-byte line:
    /// 998, 998, 506).
    #[test]
    fn long_lines_are_broken_as_postfix_does() {
        let line = vec![b'x'; 2500];
        let mut content = line.clone();
        content.extend_from_slice(b"\r\n");
        let mut enc = BodyEncoder::new(998);
        let mut out = Vec::new();
        enc.push(&mut out, &content);
        enc.finish(&mut out);
        assert!(enc.folded());
        let lines: Vec<&[u8]> = out.split(|&b| b == b'\n').collect();
        let lens: Vec<usize> = lines.iter().map(|l| l.len().saturating_sub(1)).collect();
        assert_eq!(&lens[..4], &[998, 998, 506, 1], "{lens:?}");
        assert!(lines[1].starts_with(b" x") && lines[2].starts_with(b" x"));
        let mut unfolded = out.clone();
        unfolded.retain(|&b| b != b'\r' && b != b'\n' && b != b' ');
        assert_eq!(unfolded.len(), 2500 + 1);
        // Exactly the limit: not broken.
        let mut enc = BodyEncoder::new(4);
        let mut out = Vec::new();
        enc.push(&mut out, b"abcd\r\nabcde");
        enc.finish(&mut out);
        assert_eq!(out, b"abcd\r\nabcd\r\n e\r\n.\r\n");
        // A continuation line never starts with a dot, a real line does and is stuffed.
        assert_eq!(
            encoded(b"ab.cd\r\n.x", 2),
            b"ab\r\n .\r\n c\r\n d\r\n..x\r\n.\r\n"
        );
    }

    #[test]
    fn dot_stuffing_and_line_endings() {
        assert_eq!(stuffed(b"a\r\n.b\r\n..c\r\n"), b"a\r\n..b\r\n...c\r\n.\r\n");
        assert_eq!(stuffed(b"a\nb\n.\n"), b"a\r\nb\r\n..\r\n.\r\n");
        assert_eq!(stuffed(b"no end"), b"no end\r\n.\r\n");
        assert_eq!(stuffed(b""), b".\r\n");
        assert_eq!(stuffed(b".\r\n"), b"..\r\n.\r\n");
        assert_eq!(stuffed(b"x.y\r\n"), b"x.y\r\n.\r\n");
    }

    #[test]
    fn split_input_keeps_line_state() {
        let mut out = Vec::new();
        let mut enc = BodyEncoder::new(998);
        enc.push(&mut out, b"ab");
        enc.push(&mut out, b".c\n");
        enc.push(&mut out, b".d");
        enc.finish(&mut out);
        assert_eq!(out, b"ab.c\r\n..d\r\n.\r\n");
    }

    #[test]
    fn xtext() {
        let mut out = Vec::new();
        push_xtext(&mut out, "a+b=c d\u{e9}");
        assert_eq!(out, b"a+2Bb+3Dc+20d+C3+A9");
    }

    #[test]
    fn envelope_commands() {
        let params = MailParams {
            size: None,
            body: BodyType::EightBitMime,
            smtputf8: false,
            ret: Some(Ret::Headers),
            envid: Some("id+1".into()),
        };
        let mut out = Vec::new();
        let opts = MailOptions {
            size: Some(42),
            body: Some(BodyType::EightBitMime),
            smtputf8: true,
            dsn: true,
        };
        push_mail_from(&mut out, "a@b", &params, &opts);
        assert_eq!(
            out,
            b"MAIL FROM:<a@b> SIZE=42 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=id+2B1\r\n"
        );
        out.clear();
        push_mail_from(&mut out, "", &params, &MailOptions::default());
        assert_eq!(out, b"MAIL FROM:<>\r\n");
        let rcpt = Recipient {
            address: "u@x".into(),
            orcpt: Some("rfc822;u+1@x".into()),
            notify: notify::SUCCESS | notify::DELAY,
            ..Recipient::default()
        };
        out.clear();
        push_rcpt_to(&mut out, &rcpt, true);
        assert_eq!(
            out,
            b"RCPT TO:<u@x> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+2B1@x\r\n"
        );
        out.clear();
        push_rcpt_to(&mut out, &rcpt, false);
        assert_eq!(out, b"RCPT TO:<u@x>\r\n");
        let never = Recipient {
            address: "v@x".into(),
            notify: notify::NEVER,
            ..Recipient::default()
        };
        out.clear();
        push_rcpt_to(&mut out, &never, true);
        assert_eq!(out, b"RCPT TO:<v@x> NOTIFY=NEVER\r\n");
        // A rewritten recipient announces the address as received, as
        // Postfix (`ORCPT=rfc822;info@valias.test`); the client's own
        // ORCPT wins.
        let mut aliased = Recipient {
            address: "b@remote.test".into(),
            original: Some("user+tag@valias.test".into()),
            ..Recipient::default()
        };
        out.clear();
        push_rcpt_to(&mut out, &aliased, true);
        assert_eq!(
            out,
            b"RCPT TO:<b@remote.test> ORCPT=rfc822;user+2Btag@valias.test\r\n"
        );
        aliased.orcpt = Some("rfc822;given@x".into());
        out.clear();
        push_rcpt_to(&mut out, &aliased, true);
        assert_eq!(out, b"RCPT TO:<b@remote.test> ORCPT=rfc822;given@x\r\n");
    }

    proptest! {
        /// Unstuffing what was stuffed gives the content back with CRLF line endings, and the
        /// body never contains the end-of-data sequence before its end.
        #[test]
        fn stuffing_round_trips(lines in proptest::collection::vec("[.a-z\r]{0,6}", 0..8), crlf in any::<bool>()) {
            let nl = if crlf { "\r\n" } else { "\n" };
            let content: String = lines.iter().map(|l| format!("{}{nl}", l.trim_end_matches('\r'))).collect();
            let wire = stuffed(content.as_bytes());
            let body = &wire[..wire.len() - 3];
            let end = memchr::memmem::find(&wire, b"\r\n.\r\n").map(|i| i + 5);
            prop_assert!(end.is_none() || end == Some(wire.len()) || body.is_empty());
            let unstuffed: Vec<String> = std::str::from_utf8(body).unwrap()
                .split_terminator("\r\n")
                .map(|l| l.strip_prefix('.').unwrap_or(l).to_string())
                .collect();
            // Bare CRs inside a line went out as spaces.
            let expected: Vec<String> = content.split_terminator(nl).map(|l| l.replace('\r', " ")).collect();
            prop_assert_eq!(unstuffed, expected);
        }

        /// Whatever the content, the wire has CR and LF only as CRLF, no line (without its
        /// stuffed dot) longer than the limit, and nothing but the final dot ends the data.
        #[test]
        fn wire_is_always_canonical(content in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..200), limit in 0usize..8, split in 0usize..200) {
            let mut out = Vec::new();
            let mut enc = BodyEncoder::new(limit);
            let split = split.min(content.len());
            enc.push(&mut out, &content[..split]);
            enc.push(&mut out, &content[split..]);
            enc.finish(&mut out);
            let wire_limit = if limit == 0 { 0 } else { limit.max(2) + 1 };
            prop_assert!(is_canonical(&out, wire_limit));
            let end = memchr::memmem::find(&out, b"\r\n.\r\n").map(|i| i + 5);
            prop_assert!(end.is_none() || end == Some(out.len()) || out == b".\r\n");
            prop_assert!(out.ends_with(b".\r\n"));
        }
    }
}
