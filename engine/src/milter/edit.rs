//! The message as milters see and change it at end of data: the header
//! fields (the first one is corepost's own Received: header, which milters
//! never see), the body, and the envelope changes they ask for. Indexes
//! follow Postfix's cleanup_milter.c: header changes count instances of a
//! name after our Received: header; insertions count every header,
//! Received: included ("relative to the content as delivered").

/// A message being edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Each header field with its folded lines and CRLFs.
    pub headers: Vec<Vec<u8>>,
    /// The body after the empty line (CRLF line ends).
    pub body: Vec<u8>,
    /// Whether the content had an empty line after the headers.
    separator: bool,
    /// Any change made (otherwise the original bytes are kept).
    pub changed: bool,
    /// Envelope edits, in the order the milters asked.
    pub envelope: Vec<EnvelopeEdit>,
    /// The header-space convention of the current milter
    /// (SMFIP_HDR_LEADSPC: the value carries its own leading space).
    pub leading_space: bool,
}

/// SMFIR_CHGFROM, SMFIR_ADDRCPT(_PAR), SMFIR_DELRCPT: addresses as the
/// milter sent them (`<a@b>` or `a@b`), and ESMTP arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeEdit {
    ChangeFrom(String, String),
    AddRcpt(String, String),
    DelRcpt(String),
}

impl Message {
    pub fn parse(content: &[u8]) -> Message {
        let mut headers: Vec<Vec<u8>> = Vec::new();
        let mut pos = 0;
        let mut separator = false;
        while pos < content.len() {
            let end = memchr::memchr(b'\n', &content[pos..]).map_or(content.len(), |i| pos + i + 1);
            let line = &content[pos..end];
            let bare = trim_eol(line);
            if bare.is_empty() {
                separator = true;
                pos = end;
                break;
            }
            let continuation = matches!(bare[0], b' ' | b'\t');
            if continuation && let Some(h) = headers.last_mut() {
                h.extend_from_slice(line);
            } else if header_name_len(bare).is_some() {
                headers.push(line.to_vec());
            } else {
                break;
            }
            pos = end;
        }
        Message {
            headers,
            body: content[pos..].to_vec(),
            separator,
            changed: false,
            envelope: Vec::new(),
            leading_space: false,
        }
    }

    /// The content again; unchanged bytes when nothing was edited.
    pub fn assemble(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::with_capacity(self.body.len() + 1024);
        for h in &self.headers {
            out.extend_from_slice(h);
            if !h.ends_with(b"\n") {
                out.extend_from_slice(b"\r\n");
            }
        }
        if self.separator || !self.body.is_empty() {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(&self.body);
        out
    }

    /// The headers as milters get them: (name, value) without our
    /// Received: header, the value's lines joined by `\n`, and the one
    /// space after the colon eaten unless `leading_space`.
    pub fn milter_headers(&self, leading_space: bool) -> Vec<(String, String)> {
        self.headers
            .iter()
            .skip(1)
            .filter_map(|h| {
                let n = header_name_len(trim_eol(h))?;
                let name = String::from_utf8_lossy(&h[..n]).trim_end().to_string();
                let mut value = &h[n + 1..];
                if !leading_space && value.first() == Some(&b' ') {
                    value = &value[1..];
                }
                let text = String::from_utf8_lossy(value)
                    .replace("\r\n", "\n")
                    .trim_end_matches('\n')
                    .to_string();
                Some((name, text))
            })
            .collect()
    }

    fn field(&self, name: &str, value: &str) -> Vec<u8> {
        let space = if self.leading_space { "" } else { " " };
        let value = value.replace("\r\n", "\n").replace('\n', "\r\n");
        format!("{name}:{space}{value}\r\n").into_bytes()
    }

    /// SMFIR_ADDHEADER: after the last header.
    pub fn add_header(&mut self, name: &str, value: &str) {
        let f = self.field(name, value);
        self.headers.push(f);
        self.changed = true;
    }

    /// The position of the `index`-th (1-based) `name` header after the
    /// first header.
    fn find(&self, index: u32, name: &str) -> Option<usize> {
        let mut seen = 0;
        for (i, h) in self.headers.iter().enumerate().skip(1) {
            let n = header_name_len(trim_eol(h)).unwrap_or(0);
            let this = String::from_utf8_lossy(&h[..n]);
            if this.trim_end().eq_ignore_ascii_case(name) {
                seen += 1;
                if seen == index {
                    return Some(i);
                }
            }
        }
        None
    }

    /// SMFIR_CHGHEADER: replace (or, with an empty value, delete) the
    /// `index`-th instance; index 0 means 1 (Sendmail). A missing header
    /// is added by a change and ignored by a delete.
    pub fn change_header(&mut self, index: u32, name: &str, value: &str) {
        let index = index.max(1);
        match (self.find(index, name), value.is_empty()) {
            (Some(i), true) => {
                self.headers.remove(i);
            }
            (Some(i), false) => self.headers[i] = self.field(name, value),
            (None, true) => return,
            (None, false) => return self.add_header(name, value),
        }
        self.changed = true;
    }

    /// SMFIR_INSHEADER: before header `index` (0 = the top, counting our
    /// Received: header), or at the end when there are fewer.
    pub fn insert_header(&mut self, index: u32, name: &str, value: &str) {
        let f = self.field(name, value);
        let at = (index as usize).min(self.headers.len());
        self.headers.insert(at, f);
        self.changed = true;
    }

    /// SMFIR_REPLBODY, all chunks joined: lines split at LF, a CR before
    /// the LF dropped, every line ended with CRLF.
    pub fn replace_body(&mut self, raw: &[u8]) {
        let mut body = Vec::with_capacity(raw.len() + 64);
        let mut lines = raw.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            if lines.peek().is_none() && line.is_empty() {
                break;
            }
            body.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            body.extend_from_slice(b"\r\n");
        }
        self.body = body;
        self.separator = true;
        self.changed = true;
    }

    /// The body as sent to milters: CRLF line ends.
    pub fn milter_body(&self) -> Vec<u8> {
        if !self.body.contains(&b'\n') || !has_bare_lf(&self.body) {
            return self.body.clone();
        }
        let mut out = Vec::with_capacity(self.body.len() + 64);
        let mut lines = self.body.split(|&b| b == b'\n').peekable();
        while let Some(line) = lines.next() {
            if lines.peek().is_none() && line.is_empty() {
                break;
            }
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
        out
    }
}

fn has_bare_lf(b: &[u8]) -> bool {
    b.iter()
        .enumerate()
        .any(|(i, &c)| c == b'\n' && (i == 0 || b[i - 1] != b'\r'))
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let l = line.strip_suffix(b"\n").unwrap_or(line);
    l.strip_suffix(b"\r").unwrap_or(l)
}

/// The length of the name of a header line (`Name:` — printable ASCII,
/// then optional blanks before the colon), as Postfix's is_header.
fn header_name_len(line: &[u8]) -> Option<usize> {
    let colon = memchr::memchr(b':', line)?;
    let name = &line[..colon];
    let trimmed = name.trim_ascii_end();
    if trimmed.is_empty()
        || !trimmed.iter().all(|&c| (33..127).contains(&c))
        || !name[trimmed.len()..]
            .iter()
            .all(|&c| c == b' ' || c == b'\t')
    {
        return None;
    }
    Some(colon)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSG: &[u8] = b"Received: from x\r\n\tby y\r\nSubject: a\r\nX-A: 1\r\nSubject:  b\r\n folded\r\n\r\nbody\r\n";

    #[test]
    fn milters_see_headers_without_our_received() {
        let m = Message::parse(MSG);
        assert_eq!(m.assemble(), MSG);
        assert_eq!(
            m.milter_headers(false),
            vec![
                ("Subject".into(), "a".into()),
                ("X-A".into(), "1".into()),
                ("Subject".into(), " b\n folded".into())
            ]
        );
        assert_eq!(m.milter_body(), b"body\r\n");
    }

    #[test]
    fn edits_follow_postfix_indexes() {
        let mut m = Message::parse(MSG);
        m.change_header(2, "subject", "c");
        m.change_header(1, "X-A", "");
        m.change_header(5, "X-B", "");
        m.insert_header(1, "X-First", "v");
        m.add_header("X-Last", "l1\n\tl2");
        m.change_header(1, "X-New", "n");
        assert_eq!(
            String::from_utf8(m.assemble()).unwrap(),
            "Received: from x\r\n\tby y\r\nX-First: v\r\nSubject: a\r\nsubject: c\r\nX-Last: l1\r\n\tl2\r\nX-New: n\r\n\r\nbody\r\n"
        );
        m.insert_header(0, "X-Top", "t");
        assert!(m.assemble().starts_with(b"X-Top: t\r\nReceived"));
    }

    #[test]
    fn body_replacement_normalises_line_ends() {
        let mut m = Message::parse(b"Received: x\r\nA: b\r\n");
        m.replace_body(b"one\ntwo\r\nthree");
        assert_eq!(
            m.assemble(),
            b"Received: x\r\nA: b\r\n\r\none\r\ntwo\r\nthree\r\n"
        );
    }

    proptest! {
        #[test]
        fn parsing_is_total_and_assembly_stable(content in proptest::collection::vec(any::<u8>(), 0..400)) {
            let m = Message::parse(&content);
            let _ = m.milter_headers(false);
            let _ = m.milter_body();
            let once = m.assemble();
            prop_assert_eq!(Message::parse(&once).assemble(), once);
        }
    }
}
