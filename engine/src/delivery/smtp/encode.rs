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

/// Appends `content` as a DATA body, one line at a time, into `out`: a leading `.` is doubled,
/// a bare LF becomes CRLF, a missing final line ending is added. Does not add the final `.`.
///
/// Works on a slice of the content at a time so the caller can flush between slices; the state
/// between calls is whether the next byte starts a line, kept in `at_line_start`.
pub fn push_dot_stuffed(out: &mut Vec<u8>, content: &[u8], at_line_start: &mut bool) {
    let mut rest = content;
    while !rest.is_empty() {
        if *at_line_start && rest[0] == b'.' {
            out.push(b'.');
        }
        match memchr::memchr(b'\n', rest) {
            Some(lf) => {
                let line = &rest[..lf];
                out.extend_from_slice(line);
                if line.last() != Some(&b'\r') {
                    out.push(b'\r');
                }
                out.push(b'\n');
                rest = &rest[lf + 1..];
                *at_line_start = true;
            }
            None => {
                out.extend_from_slice(rest);
                *at_line_start = false;
                return;
            }
        }
    }
}

/// Whether every line of `content` ends in CRLF (a last line without any
/// ending is fine): content that BDAT can carry as it is.
pub fn is_canonical(content: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', content).all(|lf| lf > 0 && content[lf - 1] == b'\r')
}

/// Ends a DATA body: CRLF if the content did not end with one, then `.` CRLF.
pub fn push_end_of_data(out: &mut Vec<u8>, at_line_start: bool) {
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {

    #[test]
    fn canonical_content_has_crlf_everywhere() {
        assert!(is_canonical(b"a\r\nb\r\n"));
        assert!(is_canonical(b"a\r\nno ending"));
        assert!(is_canonical(b""));
        assert!(!is_canonical(b"a\nb\r\n"));
        assert!(!is_canonical(b"\n"));
    }
    use super::*;
    use proptest::prelude::*;

    fn stuffed(content: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut at_start = true;
        push_dot_stuffed(&mut out, content, &mut at_start);
        push_end_of_data(&mut out, at_start);
        out
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
        let mut at_start = true;
        push_dot_stuffed(&mut out, b"ab", &mut at_start);
        push_dot_stuffed(&mut out, b".c\n", &mut at_start);
        push_dot_stuffed(&mut out, b".d", &mut at_start);
        push_end_of_data(&mut out, at_start);
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
            let expected: Vec<String> = content.split_terminator(nl).map(|l| l.to_string()).collect();
            prop_assert_eq!(unstuffed, expected);
        }
    }
}
