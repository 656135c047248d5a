//! `header_checks` and `body_checks`: Postfix's built-in content
//! inspection (header_checks(5)), applied while smtpd hands a message to the
//! queue — the job Postfix's cleanup does.
//!
//! Every primary header (a folded header is one logical header: its lines
//! joined with `\n`, as Postfix passes it to the table) is looked up in
//! `header_checks`; every body line within the first
//! `body_checks_size_limit` bytes of the body in `body_checks`. The first
//! table in the list that answers decides, and the answer is an action:
//!
//! | action | effect |
//! |---|---|
//! | `REJECT [text]` | refuse the message at end of data: 550 (451 for a 4.x.x text), default `5.7.1 Message content rejected`; ends inspection |
//! | `DISCARD [text]` | answer 250 but queue nothing; ends inspection |
//! | `HOLD [text]` | queue the message on hold |
//! | `WARN [text]`, `INFO [text]` | only a log line |
//! | `IGNORE`, `STRIP [text]` | drop the line (STRIP also logs) |
//! | `PREPEND text` | insert `text` as a line before this one |
//! | `REPLACE text` | replace the line (the whole logical header) with `text` |
//! | `REDIRECT user@domain` | replace all recipients with that address |
//! | `FILTER transport:nexthop` | send the message to that content filter (overrides `content_filter`) |
//! | `DUNNO`, `OK` | nothing |
//!
//! With several REDIRECT or FILTER actions the last one wins, as in Postfix.
//! A malformed action (unknown word, REDIRECT without `@`, FILTER without
//! `:`, PREPEND/REPLACE in headers without `name: value`) is logged as a
//! warning and ignored, as Postfix does. A table that fails to answer
//! defers the message (451 4.3.0) rather than letting it through unchecked.
//!
//! The MIME structure is followed as Postfix does: the headers of
//! multipart body parts go to `mime_header_checks`, those of attached
//! messages (`message/rfc822`) to `nested_header_checks` (both default to
//! `$header_checks`; a list equal to it shares its tables), and only the
//! other lines — boundaries included — are body lines, counted per part
//! against `body_checks_size_limit`. corepost does not decode
//! quoted-printable or base64 for body checks (nor does Postfix).
//!
//! [`action`] parses a table's answer; `crate::smtpd::cleanup` applies a
//! [`Verdict`] to the message being queued.

pub mod action;

use crate::smtpd::filter::ContentFilter;
use action::{Action, is_header, parse_action};
use corepost_config::tables::TableList;

/// A service's header and body check tables.
#[derive(Debug, Clone, Default)]
pub struct ContentChecks {
    header: Option<TableList>,
    mime_header: Option<TableList>,
    nested_header: Option<TableList>,
    body: Option<TableList>,
    body_size_limit: usize,
}

/// An action that leaves a log line: `<id>: <action>: <class> <line> from
/// ...: <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// `reject`, `discard`, `hold`, `warning`, `info`, `strip`, `redirect`,
    /// `filter`.
    pub action: &'static str,
    /// `header` or `body`.
    pub class: &'static str,
    /// The line that matched (folded lines joined), at most 200 characters.
    pub line: String,
    pub text: String,
}

/// What inspecting one message decided.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The content after IGNORE/STRIP/PREPEND/REPLACE.
    pub content: Vec<u8>,
    /// `(code, "X.Y.Z text")` for REJECT, or 451 for a table failure.
    pub reject: Option<(u16, String)>,
    pub discard: bool,
    pub hold: bool,
    pub redirect: Option<String>,
    pub filter: Option<ContentFilter>,
    pub events: Vec<Event>,
    pub warnings: Vec<String>,
}

/// Which headers a header block holds (Postfix's MIME header classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeaderClass {
    /// The message's own headers: `header_checks`.
    Primary,
    /// A multipart body part's headers: `mime_header_checks`.
    Multipart,
    /// An attached message's headers: `nested_header_checks`.
    Nested,
}

/// Where the walk through the content is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Headers(HeaderClass),
    Body,
}

/// What a header block's Content-Type said about what follows it.
#[derive(Debug, Default)]
struct PartType {
    boundary: Option<Vec<u8>>,
    message: bool,
}

/// Postfix's mime_nesting_limit.
const MIME_NESTING_LIMIT: usize = 100;

impl ContentChecks {
    /// Open `header_checks`, `mime_header_checks`, `nested_header_checks`
    /// and `body_checks` through `get` (a parameter's expanded value);
    /// errors name the parameter. A MIME list equal to `header_checks`
    /// (Postfix's default) shares its tables.
    pub fn open(get: &dyn Fn(&str) -> Result<String, String>) -> Result<ContentChecks, String> {
        let open = |name: &str, value: &str| -> Result<Option<TableList>, String> {
            if value.trim().is_empty() {
                return Ok(None);
            }
            TableList::open(value)
                .map(Some)
                .map_err(|e| format!("{name}: {e}"))
        };
        let header_value = get("header_checks")?;
        let header = open("header_checks", &header_value)?;
        let like_header = |name: &str| -> Result<Option<TableList>, String> {
            let value = get(name)?;
            if value == header_value {
                Ok(header.clone())
            } else {
                open(name, &value)
            }
        };
        let limit = get("body_checks_size_limit")?;
        let body_size_limit = limit
            .trim()
            .parse::<u64>()
            .map_err(|_| format!("parameter body_checks_size_limit: bad size \"{limit}\""))?;
        Ok(ContentChecks {
            mime_header: like_header("mime_header_checks")?,
            nested_header: like_header("nested_header_checks")?,
            header,
            body: open("body_checks", &get("body_checks")?)?,
            body_size_limit: usize::try_from(body_size_limit).unwrap_or(usize::MAX),
        })
    }

    /// No tables: nothing to inspect.
    pub fn is_empty(&self) -> bool {
        self.header.is_none()
            && self.mime_header.is_none()
            && self.nested_header.is_none()
            && self.body.is_none()
    }

    /// Inspect `content` (headers, blank line, body; CRLF line ends),
    /// following its MIME structure: multipart boundaries and attached
    /// messages, nested at most [`MIME_NESTING_LIMIT`] deep.
    pub fn inspect(&self, content: &[u8]) -> Verdict {
        let mut v = Verdict {
            content: Vec::with_capacity(content.len() + 256),
            ..Verdict::default()
        };
        let lines = split_lines(content);
        let mut active = true;
        let mut place = Place::Headers(HeaderClass::Primary);
        let mut part = PartType::default();
        let mut boundaries: Vec<Vec<u8>> = Vec::new();
        // Body bytes seen in the current body part.
        let mut offset = 0usize;
        let mut i = 0;
        while i < lines.len() {
            let line = lines[i];
            let text = trim_eol(line);
            if let Place::Headers(class) = place {
                if text.is_empty() || !is_header(&String::from_utf8_lossy(text)) {
                    // End of the header block (a non-header line is the
                    // first body line): what follows depends on its type.
                    let ended = std::mem::take(&mut part);
                    if let Some(b) = ended.boundary
                        && boundaries.len() < MIME_NESTING_LIMIT
                    {
                        boundaries.push(b);
                    }
                    place = if ended.message && text.is_empty() {
                        Place::Headers(HeaderClass::Nested)
                    } else {
                        Place::Body
                    };
                    offset = 0;
                    if text.is_empty() {
                        v.content.extend_from_slice(line);
                        i += 1;
                    }
                    continue;
                }
                let mut j = i + 1;
                while j < lines.len() && matches!(lines[j].first(), Some(b' ' | b'\t')) {
                    j += 1;
                }
                let original: Vec<u8> = lines[i..j].concat();
                i = j;
                let logical: Vec<&[u8]> =
                    split_lines(&original).into_iter().map(trim_eol).collect();
                let key = String::from_utf8_lossy(&logical.join(&b'\n')).into_owned();
                note_content_type(&key, &mut part);
                let (table, map) = match class {
                    HeaderClass::Primary => (&self.header, "header_checks"),
                    HeaderClass::Multipart => (&self.mime_header, "mime_header_checks"),
                    HeaderClass::Nested => (&self.nested_header, "nested_header_checks"),
                };
                match table.as_ref().filter(|_| active) {
                    Some(t) => active = self.apply(t, "header", map, &key, &original, &mut v),
                    None => v.content.extend_from_slice(&original),
                }
                continue;
            }
            i += 1;
            // A boundary line of an enclosing multipart starts the next
            // part's headers or ends that multipart.
            if let Some(rest) = text.strip_prefix(b"--") {
                for k in (0..boundaries.len()).rev() {
                    let Some(after) = rest.strip_prefix(boundaries[k].as_slice()) else {
                        continue;
                    };
                    if after.trim_ascii().is_empty() {
                        boundaries.truncate(k + 1);
                        place = Place::Headers(HeaderClass::Multipart);
                        break;
                    }
                    if after
                        .strip_prefix(b"--")
                        .is_some_and(|t| t.trim_ascii().is_empty())
                    {
                        boundaries.truncate(k);
                        offset = 0;
                        break;
                    }
                }
            }
            let checked = offset < self.body_size_limit;
            offset = offset.saturating_add(line.len());
            match self.body.as_ref().filter(|_| active && checked) {
                Some(t) => {
                    let key = String::from_utf8_lossy(text).into_owned();
                    active = self.apply(t, "body", "body_checks", &key, line, &mut v);
                }
                None => v.content.extend_from_slice(line),
            }
        }
        v
    }

    /// Look `key` up and act; returns whether inspection goes on.
    fn apply(
        &self,
        table: &TableList,
        class: &'static str,
        map: &str,
        key: &str,
        original: &[u8],
        v: &mut Verdict,
    ) -> bool {
        let action = match table.lookup(key) {
            Ok(None) => Action::Dunno,
            Ok(Some(value)) => match parse_action(&value, class == "header", map) {
                Ok(a) => a,
                Err(w) => {
                    v.warnings.push(w);
                    Action::Dunno
                }
            },
            Err(e) => {
                v.warnings.push(format!("{map}: table lookup problem: {e}"));
                v.reject = Some((451, "4.3.0 Temporary lookup failure".to_string()));
                v.content.extend_from_slice(original);
                return false;
            }
        };
        let mut event = |action: &'static str, text: &str| {
            v.events.push(Event {
                action,
                class,
                line: key
                    .replace(['\r', '\n'], "")
                    .chars()
                    .map(|c| if c.is_control() && c != '\t' { '?' } else { c })
                    .take(200)
                    .collect(),
                text: text.to_string(),
            })
        };
        let mut keep = true;
        let mut more = true;
        match action {
            Action::Dunno => {}
            Action::Reject(reason) => {
                event("reject", &reason);
                let code = if reason.starts_with('4') { 451 } else { 550 };
                v.reject = Some((code, reason));
                more = false;
            }
            Action::Discard(text) => {
                event("discard", &text);
                v.discard = true;
                more = false;
            }
            Action::Hold(text) => {
                event("hold", &text);
                v.hold = true;
            }
            Action::Warn(text) => event("warning", &text),
            Action::Info(text) => event("info", &text),
            Action::Ignore => keep = false,
            Action::Strip(text) => {
                event("strip", &text);
                keep = false;
            }
            Action::Prepend(text) => push_line(&mut v.content, &text),
            Action::Replace(text) => {
                push_line(&mut v.content, &text);
                keep = false;
            }
            Action::Redirect(to) => {
                event("redirect", &to);
                v.redirect = Some(to);
            }
            Action::Filter(f) => {
                event("filter", &f.to_string());
                v.filter = Some(f);
            }
        }
        if keep {
            v.content.extend_from_slice(original);
        }
        more
    }
}

/// Remember what a `Content-Type:` header says about the part's body:
/// a multipart boundary, or an attached message (`message/rfc822`,
/// `message/global`).
fn note_content_type(header: &str, part: &mut PartType) {
    let Some((name, value)) = header.split_once(':') else {
        return;
    };
    if !name.trim().eq_ignore_ascii_case("content-type") {
        return;
    }
    let value = value.replace(['\r', '\n'], " ");
    let mut params = value.split(';');
    let kind = params
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    part.message = kind == "message/rfc822" || kind == "message/global";
    if !kind.starts_with("multipart/") {
        return;
    }
    for p in params {
        if let Some((k, v)) = p.split_once('=')
            && k.trim().eq_ignore_ascii_case("boundary")
        {
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|q| q.split('"').next())
                .unwrap_or(v);
            if !v.is_empty() {
                part.boundary = Some(v.as_bytes().to_vec());
            }
        }
    }
}

/// Append `text` as a line (or folded lines: a `$n` from a folded header
/// may hold newlines) with CRLF line ends.
fn push_line(out: &mut Vec<u8>, text: &str) {
    for (i, part) in text.split('\n').enumerate() {
        if i > 0 {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(part.trim_end_matches('\r').as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Lines with their line ends (the last one may have none).
fn split_lines(content: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', content) {
        out.push(&content[start..=nl]);
        start = nl + 1;
    }
    if start < content.len() {
        out.push(&content[start..]);
    }
    out
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn checks_limit(header: &str, body: &str, limit: &str) -> ContentChecks {
        ContentChecks::open(&|name| {
            Ok(match name {
                "header_checks" | "mime_header_checks" | "nested_header_checks" => header,
                "body_checks" => body,
                "body_checks_size_limit" => limit,
                other => panic!("unexpected parameter {other}"),
            }
            .to_string())
        })
        .unwrap()
    }

    fn checks(header: &str, body: &str) -> ContentChecks {
        checks_limit(header, body, "51200")
    }

    #[test]
    fn replacement_text_from_a_folded_header_keeps_crlf() {
        let dir = tempfile::tempdir().unwrap();
        let hc = dir.path().join("hc");
        std::fs::write(&hc, "/^Subject: (.*)/ REPLACE Subject: [x] $1\n").unwrap();
        let c = checks(&format!("regexp:{}", hc.display()), "");
        let v = c.inspect(b"Subject: a\r\n\tb\x1b\r\n\r\nbody\r\n");
        assert_eq!(v.content, b"Subject: [x] a\r\n\tb\x1b\r\n\r\nbody\r\n");
    }

    #[test]
    fn folded_header_is_one_logical_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hc");
        std::fs::write(&path, "/^Subject:.*one\\n\\s+two/ REJECT folded\n").unwrap();
        let c = checks(&format!("regexp:{}", path.display()), "");
        let v = c.inspect(b"From: a\r\nSubject: one\r\n two\r\n\r\nbody\r\n");
        assert_eq!(v.reject, Some((550, "5.7.1 folded".into())));
        assert_eq!(v.events[0].line, "Subject: one two");
        let v = c.inspect(b"Subject: one\r\n\r\n two\r\n");
        assert_eq!(v.reject, None);
    }

    #[test]
    fn rewriting_actions_change_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let hc = dir.path().join("hc");
        std::fs::write(
            &hc,
            "/^X-Drop:/ IGNORE\n/^Subject: (.*)/ REPLACE Subject: [ext] $1\n/^From:/ PREPEND X-Checked: yes\n/^X-Hold:/ HOLD held\n/^X-Warn:/ WARN noted\n",
        )
        .unwrap();
        let bc = dir.path().join("bc");
        std::fs::write(&bc, "/^secret/ IGNORE\n/^tag me/ PREPEND [tagged]\n/^redirect/ REDIRECT x@y.example\n/^filter/ FILTER f:h\n").unwrap();
        let c = checks(
            &format!("regexp:{}", hc.display()),
            &format!("pcre:{}", bc.display()),
        );
        let v = c.inspect(
            b"From: a\r\nX-Drop: 1\r\n  more\r\nSubject: hi\r\nX-Hold: 1\r\nX-Warn: 2\r\n\r\nsecret\r\ntag me\r\nredirect\r\nfilter\r\nlast",
        );
        assert_eq!(
            String::from_utf8(v.content).unwrap(),
            "X-Checked: yes\r\nFrom: a\r\nSubject: [ext] hi\r\nX-Hold: 1\r\nX-Warn: 2\r\n\r\n[tagged]\r\ntag me\r\nredirect\r\nfilter\r\nlast"
        );
        assert!(v.hold);
        assert_eq!(v.redirect.as_deref(), Some("x@y.example"));
        assert_eq!(v.filter.unwrap().to_string(), "f:h");
        let actions: Vec<_> = v.events.iter().map(|e| (e.action, e.class)).collect();
        assert_eq!(
            actions,
            [
                ("hold", "header"),
                ("warning", "header"),
                ("redirect", "body"),
                ("filter", "body")
            ]
        );
    }

    #[test]
    fn reject_and_discard_end_inspection_and_the_size_limit_bounds_body_checks() {
        let dir = tempfile::tempdir().unwrap();
        let bc = dir.path().join("bc");
        std::fs::write(&bc, "/^bad/ REJECT\n/^gone/ DISCARD bye\n/^warn/ WARN w\n").unwrap();
        let c = checks("", &format!("regexp:{}", bc.display()));
        let v = c.inspect(b"S: x\r\n\r\nbad\r\nwarn\r\n");
        assert_eq!(
            v.reject,
            Some((550, "5.7.1 Message content rejected".into()))
        );
        assert_eq!(v.events.len(), 1);
        let v = c.inspect(b"S: x\r\n\r\ngone\r\nwarn\r\n");
        assert!(v.discard && v.events.len() == 1 && v.events[0].text == "bye");
        let c = checks_limit("", &format!("regexp:{}", bc.display()), "10");
        let v = c.inspect(b"S: x\r\n\r\n0123456789\r\nbad\r\n");
        assert_eq!(v.reject, None);
        // Header lines are not body lines.
        let v = checks("", &format!("regexp:{}", bc.display())).inspect(b"bad: x\r\n\r\nok\r\n");
        assert_eq!(v.reject, None);
    }

    const MIME: &str = "From: a\r\nSubject: outer\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed;\r\n boundary=\"=-b1\"\r\n\r\n\
preamble\r\n\
--=-b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n\
--=-b1\r\nContent-Type: application/octet-stream;\r\n\tname=\"evil.exe\"\r\n\r\nTVqQAAMA\r\n\
--=-b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nX-Inner: 1\r\n\r\ninner body\r\n\
--=-b1--\r\nepilogue\r\n";

    #[test]
    fn mime_part_and_attached_message_headers() {
        let dir = tempfile::tempdir().unwrap();
        let hc = dir.path().join("hc");
        std::fs::write(
            &hc,
            "/^Content-Type:.*name=.*\\.exe/ REJECT no executables\n/^Subject: (inner|outer)/ WARN $1\n/^Content-Type:/ WARN ct\n",
        )
        .unwrap();
        let bc = dir.path().join("bc");
        std::fs::write(&bc, "/^(.*)$/ WARN $1\n").unwrap();
        let hc = format!("regexp:{}", hc.display());
        // mime_header_checks defaults to header_checks: the attachment's
        // folded Content-Type is one MIME header and rejects.
        let v = checks(&hc, "").inspect(MIME.as_bytes());
        assert_eq!(v.reject, Some((550, "5.7.1 no executables".into())));
        let lines: Vec<_> = v.events.iter().map(|e| e.line.as_str()).collect();
        assert_eq!(
            lines,
            [
                "Subject: outer",
                "Content-Type: multipart/mixed; boundary=\"=-b1\"",
                "Content-Type: text/plain",
                "Content-Type: application/octet-stream;\tname=\"evil.exe\""
            ]
        );
        // Only primary headers checked: the attachment passes; every body
        // line (boundaries included, MIME headers excluded) is a body line.
        let only_primary = ContentChecks::open(&|name| {
            Ok(match name {
                "header_checks" | "nested_header_checks" => hc.clone(),
                "body_checks" => format!("regexp:{}", bc.display()),
                "body_checks_size_limit" => "51200".into(),
                _ => String::new(),
            })
        })
        .unwrap();
        let v = only_primary.inspect(MIME.as_bytes());
        assert_eq!(v.reject, None);
        assert_eq!(v.content, MIME.as_bytes());
        let seen: Vec<_> = v
            .events
            .iter()
            .map(|e| format!("{} {}", e.class, e.line))
            .collect();
        assert_eq!(
            seen,
            [
                "header Subject: outer",
                "header Content-Type: multipart/mixed; boundary=\"=-b1\"",
                "body preamble",
                "body --=-b1",
                "body hello",
                "body --=-b1",
                "body TVqQAAMA",
                "body --=-b1",
                "header Subject: inner",
                "body inner body",
                "body --=-b1--",
                "body epilogue",
            ]
        );
    }

    proptest! {
        /// MIME-shaped content (nested multiparts, attached messages,
        /// stray and closing boundaries) is walked without a panic and, with
        /// only DUNNO answers, comes out unchanged.
        #[test]
        fn mime_walk_keeps_content(picks in proptest::collection::vec(0usize..10, 0..60)) {
            const LINES: [&str; 10] = [
                "--b", "--b--", "Content-Type: multipart/mixed; boundary=b",
                "Content-Type: multipart/alternative; boundary=\"c\"", "--c", "--c--",
                "Content-Type: message/rfc822", "", " folded", "X: y",
            ];
            let content: String = picks.iter().map(|&i| format!("{}\r\n", LINES[i])).collect();
            let c = checks("static:DUNNO", "static:DUNNO");
            prop_assert_eq!(c.inspect(content.as_bytes()).content, content.as_bytes());
        }

        /// With only DUNNO answers the content comes out unchanged, whatever
        /// it is.
        #[test]
        fn dunno_keeps_content(content in proptest::collection::vec(any::<u8>(), 0..300)) {
            let c = checks("static:DUNNO", "static:DUNNO");
            prop_assert_eq!(c.inspect(&content).content, content);
        }
    }
}
