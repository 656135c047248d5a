//! Message content after DATA: dot-unstuffing, the end-of-data sequence,
//! bare CR/LF handling (the SMTP smuggling defence) and the size limit.
//!
//! The end of data is `CRLF . CRLF` and nothing else: a `.` line ended by a
//! bare LF, or preceded by a line ended by a bare LF (`LF.LF`, `LF.CRLF`,
//! `CRLF.LF`), is content. What happens to bare CR and LF depends on
//! `smtpd_forbid_bare_newline`: `normalize` (default; `yes` is an alias) turns them into CRLF
//! line ends, `reject` rejects the message with 550 5.5.2, and `no`
//! keeps them as received. In no mode can a smuggled sequence end the
//! message early or split it in two.
//!
//! The parser is incremental — bytes arrive in reads of any size — and keeps
//! memory flat: content beyond the size limit is counted and dropped, and a
//! line too long for the read buffer is consumed in pieces.

/// `smtpd_forbid_bare_newline`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BareNewline {
    /// Keep bare CR/LF as received.
    Allow,
    /// Treat bare CR and LF as CRLF.
    Normalize,
    /// Reject the message.
    Reject,
}

impl BareNewline {
    pub fn parse(s: &str) -> Result<BareNewline, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "no" => Ok(BareNewline::Allow),
            // Postfix 3.7.10 and later: "yes" is an alias for "normalize".
            "normalize" | "yes" => Ok(BareNewline::Normalize),
            "reject" | "note" => Ok(BareNewline::Reject),
            other => Err(format!(
                "bad smtpd_forbid_bare_newline value \"{other}\" (expected no, normalize, yes or reject)"
            )),
        }
    }
}

/// How the content ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataEnd {
    /// Content bytes seen (after unstuffing), including any over the limit.
    pub size: u64,
    pub too_big: bool,
    pub bare_newline: bool,
}

/// Incremental DATA parser.
#[derive(Debug)]
pub struct DataParser {
    mode: BareNewline,
    limit: u64,
    body: Vec<u8>,
    size: u64,
    /// At the start of a line.
    line_start: bool,
    /// The previous line ended with CRLF (or data just started).
    prev_crlf: bool,
    bare_newline: bool,
    /// Take runs of plain lines whole ([`plain_lines`]); off only in tests, to compare
    /// with the line-by-line path.
    bulk: bool,
}

/// The length of the longest prefix of `input` made of whole lines that each end in CRLF, hold
/// no other CR or LF and do not start with a dot — content the parser keeps exactly as it
/// came in every mode, so a run of them is copied at once instead of line by line.
fn plain_lines(input: &[u8]) -> usize {
    if input.first() == Some(&b'.') {
        return 0;
    }
    let mut plain = 0;
    for i in memchr::memchr2_iter(b'\r', b'\n', input) {
        if input[i] == b'\r' {
            if input.get(i + 1) != Some(&b'\n') {
                break; // a bare CR, or one whose LF has not arrived yet
            }
            continue;
        }
        if i == 0 || input[i - 1] != b'\r' {
            break; // a bare LF
        }
        plain = i + 1;
        if input.get(i + 1) == Some(&b'.') {
            break; // stuffed, or the end of data: line by line
        }
    }
    plain
}

impl DataParser {
    pub fn new(mode: BareNewline, limit: u64, body: Vec<u8>) -> DataParser {
        DataParser {
            mode,
            limit,
            size: body.len() as u64,
            body,
            line_start: true,
            prev_crlf: true,
            bare_newline: false,
            bulk: true,
        }
    }

    /// Consume as much of `input` as possible. Returns the bytes consumed
    /// and, when the end of data was seen, how it ended (the input after the
    /// final CRLF is not consumed: it may be pipelined commands).
    pub fn feed(&mut self, input: &[u8]) -> (usize, Option<DataEnd>) {
        let mut at = 0;
        while at < input.len() {
            if self.line_start && self.bulk {
                let plain = plain_lines(&input[at..]);
                // Past the size limit the line-by-line path keeps what fits and counts the rest.
                if plain > 0 && self.size + plain as u64 <= self.limit {
                    self.push(&input[at..at + plain]);
                    self.prev_crlf = true;
                    at += plain;
                    continue;
                }
            }
            let rest = &input[at..];
            match memchr::memchr(b'\n', rest) {
                Some(nl) => {
                    let line = &rest[..nl];
                    let (content, crlf) = match line.last() {
                        Some(b'\r') => (&line[..line.len() - 1], true),
                        _ => (line, false),
                    };
                    at += nl + 1;
                    if self.line_start && self.prev_crlf && crlf && content == b"." {
                        return (
                            at,
                            Some(DataEnd {
                                size: self.size,
                                too_big: self.size > self.limit,
                                bare_newline: self.bare_newline,
                            }),
                        );
                    }
                    self.content(content);
                    if crlf {
                        self.push(b"\r\n");
                    } else {
                        self.bare_newline = true;
                        match self.mode {
                            BareNewline::Allow => self.push(b"\n"),
                            _ => self.push(b"\r\n"),
                        }
                    }
                    self.line_start = true;
                    self.prev_crlf = crlf;
                }
                None => {
                    // A partial line. At a line start, wait until we can tell
                    // "." CRLF from a stuffed dot; keep a trailing CR for the
                    // LF that may follow.
                    if self.line_start && rest.len() < 3 && rest.first() == Some(&b'.') {
                        break;
                    }
                    let take = if rest.last() == Some(&b'\r') {
                        rest.len() - 1
                    } else {
                        rest.len()
                    };
                    if take == 0 {
                        break;
                    }
                    self.content(&rest[..take]);
                    self.line_start = false;
                    at += take;
                }
            }
        }
        (at, None)
    }

    /// Content of (part of) a line: unstuff a leading dot, find bare CRs.
    fn content(&mut self, mut bytes: &[u8]) {
        if self.line_start && bytes.first() == Some(&b'.') {
            bytes = &bytes[1..];
        }
        if bytes.contains(&b'\r') {
            self.bare_newline = true;
            if self.mode == BareNewline::Normalize {
                for (i, piece) in bytes.split(|&b| b == b'\r').enumerate() {
                    if i > 0 {
                        self.push(b"\r\n");
                    }
                    self.push(piece);
                }
                return;
            }
        }
        self.push(bytes);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.size += bytes.len() as u64;
        if self.size <= self.limit {
            self.body.extend_from_slice(bytes);
        }
    }

    /// The content collected (empty of anything beyond the limit).
    pub fn into_body(self) -> Vec<u8> {
        self.body
    }

    /// Whether a bare newline rejects this message.
    pub fn rejects_bare_newline(&self) -> bool {
        self.mode == BareNewline::Reject
    }
}

/// `header_size_limit`, as Postfix's cleanup applies it: a header (with
/// its folded lines, each line break counted as one byte) longer than
/// `limit` bytes is cut there and the excess discarded. Returns whether
/// anything was cut.
pub fn truncate_long_headers(content: &mut Vec<u8>, limit: usize) -> bool {
    // (start, end of text, end with line ending) of each header line.
    let mut lines = Vec::new();
    let mut at = 0;
    while at < content.len() {
        let nl = content[at..].iter().position(|&b| b == b'\n');
        let end = nl.map_or(content.len(), |n| at + n + 1);
        let mut text = nl.map_or(content.len(), |n| at + n);
        if text > at && content[text - 1] == b'\r' {
            text -= 1;
        }
        if text == at {
            break; // the empty line: end of the header section
        }
        lines.push((at, text, end));
        at = end;
    }
    if at <= limit {
        return false; // no header can be longer than the whole section
    }
    let mut out = Vec::with_capacity(content.len());
    let mut cut = false;
    let mut i = 0;
    while i < lines.len() {
        let mut j = i + 1;
        while j < lines.len() && matches!(content[lines[j].0], b' ' | b'\t') {
            j += 1;
        }
        let group = &lines[i..j];
        let size: usize = group.iter().map(|l| l.1 - l.0).sum::<usize>() + group.len() - 1;
        if size <= limit {
            out.extend_from_slice(&content[group[0].0..group[group.len() - 1].2]);
        } else {
            cut = true;
            let mut left = limit;
            for (k, &(start, text, _)) in group.iter().enumerate() {
                let take = (text - start).min(left);
                out.extend_from_slice(&content[start..start + take]);
                out.extend_from_slice(b"\r\n");
                left -= take;
                if left <= 1 || k + 1 == group.len() {
                    break;
                }
                left -= 1; // the line break
            }
        }
        i = j;
    }
    out.extend_from_slice(&content[at..]);
    *content = out;
    cut
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn run(mode: BareNewline, input: &[u8]) -> (Vec<u8>, Option<DataEnd>, usize) {
        let mut p = DataParser::new(mode, 1 << 20, Vec::new());
        let (used, end) = p.feed(input);
        (p.into_body(), end, used)
    }

    #[test]
    fn plain_message_and_unstuffing() {
        let (body, end, used) = run(
            BareNewline::Normalize,
            b"Subject: x\r\n\r\n..dot\r\n.\r\nQUIT\r\n",
        );
        assert_eq!(body, b"Subject: x\r\n\r\n.dot\r\n");
        assert_eq!(used, b"Subject: x\r\n\r\n..dot\r\n.\r\n".len());
        assert!(end.is_some());
        let (body, end, _) = run(BareNewline::Normalize, b".\r\n");
        assert!(body.is_empty() && end.is_some());
    }

    #[test]
    fn smuggling_sequences_never_end_data() {
        for seq in [
            &b"a\n.\nb\r\n"[..],
            b"a\n.\r\nb\r\n",
            b"a\r\n.\nb\r\n",
            b"a\r.\rb\r\n",
        ] {
            for mode in [
                BareNewline::Allow,
                BareNewline::Normalize,
                BareNewline::Reject,
            ] {
                let (_, end, _) = run(mode, seq);
                assert!(end.is_none(), "{seq:?} ended data in {mode:?}");
                let mut input = seq.to_vec();
                input.extend_from_slice(b".\r\n");
                let (body, end, used) = run(mode, &input);
                let end = end.expect("real end found");
                assert!(end.bare_newline);
                assert_eq!(used, input.len());
                if mode == BareNewline::Normalize {
                    assert!(
                        !body.windows(2).any(|w| w[1] == b'\n' && w[0] != b'\r'),
                        "bare LF left"
                    );
                    assert!(
                        !body.windows(2).any(|w| w[0] == b'\r' && w[1] != b'\n'),
                        "bare CR left"
                    );
                }
            }
        }
    }

    #[test]
    fn size_limit_keeps_memory_flat() {
        let mut p = DataParser::new(BareNewline::Normalize, 100, Vec::new());
        let line = [b'x'; 1000];
        for _ in 0..100 {
            let (used, end) = p.feed(&line);
            assert_eq!(used, 1000);
            assert!(end.is_none());
        }
        let (_, end) = p.feed(b"\r\n.\r\n");
        let end = end.unwrap();
        assert!(end.too_big);
        assert_eq!(end.size, 100_002);
        assert_eq!(p.into_body().len(), 0, "nothing kept past the limit");
    }

    #[test]
    fn plain_lines_stop_where_line_by_line_work_starts() {
        assert_eq!(plain_lines(b"ab\r\ncd\r\n"), 8);
        assert_eq!(plain_lines(b"ab\r\ncd"), 4);
        assert_eq!(plain_lines(b"ab\r\n.cd\r\n"), 4);
        assert_eq!(plain_lines(b".ab\r\n"), 0);
        assert_eq!(plain_lines(b"ab\r\nc\nd\r\n"), 4);
        assert_eq!(plain_lines(b"ab\r\nc\rd\r\n"), 4);
        assert_eq!(plain_lines(b"ab\r\ncd\r"), 4);
        assert_eq!(plain_lines(b"\n"), 0);
        assert_eq!(plain_lines(b"\r\n\r\n.\r\n"), 4);
    }

    proptest! {
        /// The bulk path keeps exactly what the line-by-line path keeps, in every mode and
        /// however the input is cut.
        #[test]
        fn bulk_runs_change_nothing(body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a'), Just(b'\r'), Just(b'\n')], 0..120), cuts in proptest::collection::vec(0usize..130, 0..5), limit in 0u64..150) {
            let mut input = body.clone();
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            for mode in [BareNewline::Allow, BareNewline::Normalize, BareNewline::Reject] {
                let mut results = Vec::new();
                for bulk in [true, false] {
                    let mut p = DataParser::new(mode, limit, Vec::new());
                    p.bulk = bulk;
                    let mut buf: Vec<u8> = Vec::new();
                    let mut cuts: Vec<usize> = cuts.iter().map(|&c| c.min(input.len())).collect();
                    cuts.sort();
                    cuts.push(input.len());
                    let (mut fed, mut used_total, mut end) = (0, 0, None);
                    for cut in cuts {
                        buf.extend_from_slice(&input[fed..cut]);
                        fed = cut;
                        let (used, e) = p.feed(&buf);
                        buf.drain(..used);
                        used_total += used;
                        if e.is_some() { end = e; break; }
                    }
                    results.push((p.into_body(), end, used_total));
                }
                prop_assert_eq!(&results[0], &results[1]);
            }
        }

        /// Feeding in arbitrary pieces gives the same result as one piece.
        #[test]
        fn chunking_does_not_matter(body in proptest::collection::vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')], 0..60), cuts in proptest::collection::vec(0usize..70, 0..6)) {
            let mut input = body.clone();
            input.extend_from_slice(b"\r\n.\r\n");
            let (whole, whole_end, whole_used) = run(BareNewline::Normalize, &input);
            let mut p = DataParser::new(BareNewline::Normalize, 1 << 20, Vec::new());
            let mut buf: Vec<u8> = Vec::new();
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(input.len())).collect();
            cuts.sort();
            cuts.push(input.len());
            let mut fed = 0;
            let mut total_used = 0;
            let mut end = None;
            for cut in cuts {
                buf.extend_from_slice(&input[fed..cut]);
                fed = cut;
                let (used, e) = p.feed(&buf);
                buf.drain(..used);
                total_used += used;
                if e.is_some() { end = e; break; }
            }
            prop_assert_eq!(end.is_some(), whole_end.is_some());
            if end.is_some() {
                prop_assert_eq!(total_used, whole_used);
                prop_assert_eq!(p.into_body(), whole);
            }
        }
    }

    #[test]
    fn long_headers_are_cut_at_the_limit() {
        let mut c = format!(
            "A: b\r\nX-Long: {}\r\nZ: z\r\n\r\nbody {}\r\n",
            "w".repeat(50),
            "y".repeat(80)
        )
        .into_bytes();
        assert!(truncate_long_headers(&mut c, 20));
        assert_eq!(
            String::from_utf8(c).unwrap(),
            format!(
                "A: b\r\nX-Long: wwwwwwwwwwww\r\nZ: z\r\n\r\nbody {}\r\n",
                "y".repeat(80)
            )
        );
        let mut folded = b"X: aaaa\r\n bbbb\r\n cccc\r\n\r\nbody\r\n".to_vec();
        assert!(truncate_long_headers(&mut folded, 10));
        assert_eq!(folded, b"X: aaaa\r\n b\r\n\r\nbody\r\n");
        let mut short = b"A: b\r\n\r\nbody\r\n".to_vec();
        assert!(!truncate_long_headers(&mut short, 10));
        assert!(!truncate_long_headers(&mut Vec::new(), 0));
    }
}
