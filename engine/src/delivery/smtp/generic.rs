//! `smtp_generic_maps` (`lmtp_generic_maps`): addresses rewritten on the way out, as Postfix's
//! smtp(8) does (generic(5)) — the envelope sender (not the null sender), every envelope
//! recipient, and the addresses in the message's own (primary) headers that carry mailboxes:
//! From, Sender, Reply-To, To, Cc, Bcc, the Resent-* ones, Return-Path, Errors-To,
//! Return-Receipt-To, Disposition-Notification-To, Apparently-To, Mail-Followup-To,
//! Mail-Reply-To. MIME part headers and the body are not touched.
//!
//! An address is looked up as Postfix's mail_addr_find does: `user+ext@domain`,
//! `user@domain`, for a domain in `mydestination` also `user+ext` and `user`, then `@domain`.
//! A result of the form `@other` keeps the local part (`user@other`); extensions are not
//! propagated (Postfix's `propagate_unmatched_extensions` does not include `generic` by default).
//!
//! In headers only the address itself is replaced, so display names, comments and folding stay
//! as they were (Postfix re-serialises the whole header; the addresses are the same).

use corepost_config::tables::keys::address_keys;
use corepost_config::tables::{TableError, TableList};

use crate::routing::DomainList;

/// The maps and what is needed to search them.
#[derive(Debug, Clone)]
pub struct GenericMaps {
    maps: TableList,
    local_domains: DomainList,
    delimiter: String,
}

/// Headers whose addresses are rewritten (Postfix's HDR_OPT_MAILBOX headers).
const ADDRESS_HEADERS: &[&str] = &[
    "apparently-to",
    "bcc",
    "cc",
    "disposition-notification-to",
    "errors-to",
    "from",
    "mail-followup-to",
    "mail-reply-to",
    "reply-to",
    "resent-bcc",
    "resent-cc",
    "resent-from",
    "resent-reply-to",
    "resent-sender",
    "resent-to",
    "return-path",
    "return-receipt-to",
    "sender",
    "to",
];

impl GenericMaps {
    /// `None` when the list is empty.
    pub fn open(
        spec: &str,
        mydestination: &str,
        delimiter: &str,
    ) -> Result<Option<GenericMaps>, String> {
        let maps = TableList::open(spec).map_err(|e| e.to_string())?;
        if maps.is_empty() {
            return Ok(None);
        }
        Ok(Some(GenericMaps {
            maps,
            local_domains: DomainList::parse(mydestination, false)?,
            delimiter: delimiter.to_string(),
        }))
    }

    /// The rewritten address, or `None` when no entry matched.
    pub fn address(&self, address: &str) -> Result<Option<String>, TableError> {
        if address.is_empty() {
            return Ok(None);
        }
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l, d),
            None => (address, ""),
        };
        let is_local =
            !domain.is_empty() && self.local_domains.matches(&domain.to_ascii_lowercase())?;
        let keys = address_keys(address, &self.delimiter, is_local);
        let Some((_, found)) = self.maps.lookup_first(keys.iter().map(String::as_str))? else {
            return Ok(None);
        };
        let found = found.trim();
        Ok(Some(if found.starts_with('@') {
            format!("{local}{found}")
        } else {
            found.to_string()
        }))
    }

    /// The content with the primary headers' addresses rewritten; `None` when nothing changed.
    pub fn headers(&self, content: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        let end = header_end(content);
        let mut out = Vec::new();
        let mut copied = 0;
        let mut changed = false;
        let mut start = 0;
        while start < end {
            let len = header_len(&content[start..end]);
            let header = &content[start..start + len];
            if let Some(colon) = memchr::memchr(b':', header) {
                let name = String::from_utf8_lossy(&header[..colon]).to_ascii_lowercase();
                if ADDRESS_HEADERS.contains(&name.trim()) {
                    let value = &header[colon + 1..];
                    if let Some(new) = self.rewrite_value(value)? {
                        out.extend_from_slice(&content[copied..start + colon + 1]);
                        out.extend_from_slice(&new);
                        copied = start + len;
                        changed = true;
                    }
                }
            }
            start += len;
        }
        if !changed {
            return Ok(None);
        }
        out.extend_from_slice(&content[copied..]);
        Ok(Some(out))
    }

    /// A header value with each mapped address replaced in place.
    fn rewrite_value(&self, value: &[u8]) -> Result<Option<Vec<u8>>, TableError> {
        let mut out = Vec::with_capacity(value.len());
        let mut copied = 0;
        for range in address_ranges(value) {
            let Ok(address) = std::str::from_utf8(&value[range.clone()]) else {
                continue;
            };
            if let Some(new) = self.address(address)? {
                out.extend_from_slice(&value[copied..range.start]);
                out.extend_from_slice(new.as_bytes());
                copied = range.end;
            }
        }
        if copied == 0 {
            return Ok(None);
        }
        out.extend_from_slice(&value[copied..]);
        Ok(Some(out))
    }
}

/// Where the header section ends (the empty line, or the end of the content).
fn header_end(content: &[u8]) -> usize {
    let mut start = 0;
    while start < content.len() {
        let line_end =
            memchr::memchr(b'\n', &content[start..]).map_or(content.len(), |i| start + i + 1);
        let line = &content[start..line_end];
        if line == b"\r\n" || line == b"\n" {
            return start;
        }
        start = line_end;
    }
    content.len()
}

/// The length of the header at the start of `rest`, continuation lines included.
fn header_len(rest: &[u8]) -> usize {
    let mut end = 0;
    loop {
        end = memchr::memchr(b'\n', &rest[end..]).map_or(rest.len(), |i| end + i + 1);
        if end >= rest.len() || !matches!(rest[end], b' ' | b'\t') {
            return end;
        }
    }
}

/// The byte ranges of the addr-specs in an address-list header value: inside `<...>`, or a
/// bare `local@domain` word; quoted strings and comments are skipped; groups (`name: a, b;`)
/// are followed.
fn address_ranges(value: &[u8]) -> Vec<std::ops::Range<usize>> {
    let mut ranges = Vec::new();
    let mut i = 0;
    // The current element's bare word, if it is the element's only word so far.
    let mut word: Option<std::ops::Range<usize>> = None;
    let mut words = 0;
    let mut angle = false;
    let flush = |word: &mut Option<std::ops::Range<usize>>,
                 words: &mut usize,
                 angle: bool,
                 ranges: &mut Vec<_>| {
        if let Some(w) = word.take()
            && *words == 1
            && !angle
        {
            ranges.push(w);
        }
        *words = 0;
    };
    while i < value.len() {
        match value[i] {
            b'"' => {
                i += 1;
                while i < value.len() && value[i] != b'"' {
                    i += if value[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                words += 2; // a quoted phrase: the element is not a bare address
            }
            b'(' => {
                let mut depth = 0;
                while i < value.len() {
                    match value[i] {
                        b'\\' => i += 1,
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                i += 1;
            }
            b'<' => {
                let start = i + 1;
                let end = memchr::memchr(b'>', &value[start..]).map_or(value.len(), |e| start + e);
                let inner = &value[start..end];
                // A source route (`<@a,@b:user@domain>`) keeps its route.
                let skip = inner
                    .iter()
                    .rposition(|&b| b == b':')
                    .filter(|_| inner.first() == Some(&b'@'))
                    .map_or(0, |p| p + 1);
                let (s, e) = trim_range(value, start + skip, end);
                if s < e {
                    ranges.push(s..e);
                }
                angle = true;
                i = end + 1;
            }
            // A group's name is no address.
            b':' => {
                word = None;
                words = 0;
                angle = false;
                i += 1;
            }
            b',' | b';' => {
                flush(&mut word, &mut words, angle, &mut ranges);
                angle = false;
                i += 1;
            }
            b if b.is_ascii_whitespace() => i += 1,
            _ => {
                let start = i;
                while i < value.len() && !b" \t\r\n\",;:<>()".contains(&value[i]) {
                    i += 1;
                }
                words += 1;
                word = Some(start..i);
            }
        }
    }
    flush(&mut word, &mut words, angle, &mut ranges);
    ranges
}

fn trim_range(value: &[u8], mut s: usize, mut e: usize) -> (usize, usize) {
    while s < e && value[s].is_ascii_whitespace() {
        s += 1;
    }
    while e > s && value[e - 1].is_ascii_whitespace() {
        e -= 1;
    }
    (s, e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps() -> GenericMaps {
        GenericMaps::open(
            "inline:{ his@local.example=his@isp.example, @local.example=@isp.example, bob=robert@isp.example }",
            "local.example, mx.local.example",
            "+",
        )
        .unwrap()
        .unwrap()
    }

    #[test]
    fn addresses_are_looked_up_as_postfix_does() {
        let m = maps();
        assert_eq!(
            m.address("his@local.example").unwrap().as_deref(),
            Some("his@isp.example")
        );
        assert_eq!(
            m.address("her@local.example").unwrap().as_deref(),
            Some("her@isp.example")
        );
        assert_eq!(
            m.address("his+x@local.example").unwrap().as_deref(),
            Some("his@isp.example")
        );
        // `user` alone matches only in a local domain.
        assert_eq!(
            m.address("bob@mx.local.example").unwrap().as_deref(),
            Some("robert@isp.example")
        );
        assert_eq!(m.address("bob@elsewhere.example").unwrap(), None);
        assert_eq!(m.address("").unwrap(), None);
    }

    #[test]
    fn only_the_addresses_of_address_headers_change() {
        let m = maps();
        let content = b"From: \"His, Name\" <his@local.example> (work)\r\nTo: her@local.example,\r\n  x@other.example, group: bob@mx.local.example;\r\nSubject: his@local.example\r\nCC: <@relay.example:her@local.example>\r\n\r\nFrom: his@local.example\r\n";
        let out = m.headers(content).unwrap().expect("changed");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: \"His, Name\" <his@isp.example> (work)\r\nTo: her@isp.example,\r\n  x@other.example, group: robert@isp.example;\r\nSubject: his@local.example\r\nCC: <@relay.example:her@isp.example>\r\n\r\nFrom: his@local.example\r\n"
        );
        assert!(
            m.headers(b"Subject: x\r\nTo: a@b.example\r\n\r\nbody")
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn address_ranges_skip_phrases_and_comments() {
        let v = b" Name (c@d) <a@b>, \"x@y\" <e@f>, g@h (comment), i@j";
        let found: Vec<&str> = address_ranges(v)
            .into_iter()
            .map(|r| std::str::from_utf8(&v[r]).unwrap())
            .collect();
        assert_eq!(found, ["a@b", "e@f", "g@h", "i@j"]);
    }
}
