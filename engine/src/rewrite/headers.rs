//! Header addresses, as Postfix's cleanup rewrites them for mail in the
//! local rewriting context (sendmail/pickup): only the address headers of
//! its header_opts.c table, only the addresses inside them — display
//! names, comments, folding and every other header stay byte for byte, and
//! a header whose addresses are unchanged is not touched at all.

/// Headers holding sender addresses (`header_sender` class).
pub const SENDER_HEADERS: &[&str] = &[
    "from",
    "sender",
    "reply-to",
    "return-receipt-to",
    "errors-to",
    "disposition-notification-to",
    "resent-from",
    "resent-sender",
    "resent-reply-to",
];

/// Headers holding recipient addresses (`header_recipient` class).
pub const RECIPIENT_HEADERS: &[&str] = &[
    "to",
    "cc",
    "bcc",
    "apparently-to",
    "resent-to",
    "resent-cc",
    "resent-bcc",
];

/// Is `name` an address header, and of which class (`true`: sender)?
pub fn address_header(name: &str) -> Option<bool> {
    let is = |list: &[&str]| list.iter().any(|h| h.eq_ignore_ascii_case(name));
    if is(SENDER_HEADERS) {
        Some(true)
    } else if is(RECIPIENT_HEADERS) {
        Some(false)
    } else {
        None
    }
}

/// Byte ranges of the addresses in an RFC 5322 address list: the inside of
/// `<...>`, or a bare `user@domain` (without comments). Group names and
/// phrases are not addresses. Never panics.
pub fn address_spans(value: &str) -> Vec<(usize, usize)> {
    let b = value.as_bytes();
    let mut spans = Vec::new();
    let mut el = Element::default();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                el.word(start, (i + 1).min(b.len()));
            }
            b'(' => {
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
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
                el.gap = el.bare.is_some();
            }
            b'<' => {
                let start = i + 1;
                let end = b[start..]
                    .iter()
                    .position(|&c| c == b'>')
                    .map_or(b.len(), |p| start + p);
                let (s, e) = trim(value, start, end);
                el.angle = (s < e).then_some((s, e));
                el.had_angle = true;
                i = end;
            }
            b':' => el = Element::default(), // a group name
            b',' | b';' => {
                spans.extend(el.address());
                el = Element::default();
            }
            c if c.is_ascii_whitespace() => el.gap = el.bare.is_some(),
            _ => el.word(i, i + 1),
        }
        i += 1;
    }
    spans.extend(el.address());
    spans
}

/// One element of an address list while it is read.
#[derive(Default)]
struct Element {
    angle: Option<(usize, usize)>,
    had_angle: bool,
    bare: Option<(usize, usize)>,
    /// Whitespace or a comment after the bare word.
    gap: bool,
    /// More than one word: a phrase, not an address.
    phrase: bool,
}

impl Element {
    fn word(&mut self, start: usize, end: usize) {
        match &mut self.bare {
            Some(_) if self.gap => self.phrase = true,
            Some((_, e)) => *e = end,
            None => self.bare = Some((start, end)),
        }
    }

    fn address(&self) -> Option<(usize, usize)> {
        if self.had_angle {
            self.angle
        } else if self.phrase {
            None
        } else {
            self.bare
        }
    }
}

fn trim(value: &str, start: usize, end: usize) -> (usize, usize) {
    let inner = &value[start..end];
    let s = start + (inner.len() - inner.trim_start().len());
    let e = end - (inner.len() - inner.trim_end().len());
    (s, e.max(s))
}

/// Which SMTP clients' header addresses are rewritten, and how: Postfix's
/// `local_header_rewrite_clients` (local context: complete with
/// `$myorigin`) and `remote_header_rewrite_domain` (everyone else: complete
/// with that domain; empty: leave remote headers alone).
#[derive(Debug, Clone)]
pub struct SmtpHeaderRewrite {
    own_addresses: Vec<std::net::IpAddr>,
    mynetworks: Option<crate::smtpd::networks::NetworkList>,
    sasl: bool,
    all: bool,
    local: Completion,
    remote: Option<Completion>,
}

impl SmtpHeaderRewrite {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<SmtpHeaderRewrite, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let flag = |n: &str| -> Result<bool, String> {
            Ok(matches!(
                s(n)?.trim().to_ascii_lowercase().as_str(),
                "yes" | "true" | "1"
            ))
        };
        let mut r = SmtpHeaderRewrite {
            own_addresses: Vec::new(),
            mynetworks: None,
            sasl: false,
            all: false,
            local: Completion {
                domain: if flag("append_at_myorigin")? {
                    super::myorigin(&s("myorigin")?)?
                } else {
                    String::new()
                },
                dot_mydomain: flag("append_dot_mydomain")?
                    .then(|| s("mydomain").map(|d| d.to_ascii_lowercase()))
                    .transpose()?,
            },
            remote: None,
        };
        let clients = s("local_header_rewrite_clients")?;
        for word in corepost_config::list::split_list(&clients).unwrap_or_default() {
            match word.to_ascii_lowercase().as_str() {
                "permit_inet_interfaces" => {
                    let interfaces =
                        corepost_config::host::interface_networks(&s("inet_interfaces")?);
                    r.own_addresses
                        .extend(interfaces.into_iter().map(|(a, _)| a));
                }
                "permit_mynetworks" => {
                    r.mynetworks = Some(
                        crate::smtpd::networks::NetworkList::parse(&s("mynetworks")?)
                            .map_err(|e| format!("mynetworks: {e}"))?,
                    )
                }
                "permit_sasl_authenticated" => r.sasl = true,
                "static:all" => r.all = true,
                other => {
                    return Err(format!(
                        "local_header_rewrite_clients: \"{other}\" is not supported by corepost (permit_inet_interfaces, permit_mynetworks, permit_sasl_authenticated, static:all are)"
                    ));
                }
            }
        }
        let remote = s("remote_header_rewrite_domain")?
            .trim()
            .to_ascii_lowercase();
        if !remote.is_empty() {
            // Postfix's remote context uses this domain for both $myorigin
            // and $mydomain: `b@host` → `b@host.<domain>` under
            // append_dot_mydomain.
            r.remote = Some(Completion {
                dot_mydomain: flag("append_dot_mydomain")?.then(|| remote.clone()),
                domain: remote,
            });
        }
        Ok(r)
    }

    /// How this client's header addresses are completed; `None`: not
    /// rewritten at all (a remote client, no remote_header_rewrite_domain).
    pub fn for_client(&self, addr: std::net::IpAddr, authenticated: bool) -> Option<&Completion> {
        let addr = crate::smtpd::networks::canonical(addr);
        let local = self.all
            || (self.sasl && authenticated)
            || self.own_addresses.contains(&addr)
            || self.mynetworks.as_ref().is_some_and(|n| n.contains(addr));
        if local {
            Some(&self.local)
        } else {
            self.remote.as_ref()
        }
    }
}

/// Rewrite the addresses of a header value with `map`; `None` when
/// nothing changed (the header is then left exactly as it was).
pub fn rewrite_value<E>(
    value: &str,
    mut map: impl FnMut(&str) -> Result<String, E>,
) -> Result<Option<String>, E> {
    let mut out = String::with_capacity(value.len() + 32);
    let mut last = 0;
    let mut changed = false;
    for (s, e) in address_spans(value) {
        let address = &value[s..e];
        // A source route or a null address is left alone.
        if address.starts_with('@') || address.is_empty() {
            continue;
        }
        let new = map(address)?;
        if new != address {
            out.push_str(&value[last..s]);
            out.push_str(&new);
            last = e;
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    out.push_str(&value[last..]);
    Ok(Some(out))
}

/// How incomplete header addresses are completed: `user` →
/// `user@domain`, and (local context, `append_dot_mydomain`) `user@host`
/// → `user@host.mydomain`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// `$myorigin` (local context, when `append_at_myorigin`) or
    /// `$remote_header_rewrite_domain`; empty: leave bare names alone.
    pub domain: String,
    pub dot_mydomain: Option<String>,
}

impl Completion {
    pub fn complete(&self, address: &str) -> String {
        match address.rfind('@') {
            None if !self.domain.is_empty() => format!("{address}@{}", self.domain),
            None => address.to_string(),
            Some(i) => {
                let host = &address[i + 1..];
                match &self.dot_mydomain {
                    Some(d)
                        if !host.is_empty() && !host.contains('.') && !host.starts_with('[') =>
                    {
                        format!("{address}.{d}")
                    }
                    _ => address.to_string(),
                }
            }
        }
    }
}

/// Rewrite the address headers of a message's header section with
/// `map(address, is_sender_header)`; `None` when nothing changed. The
/// header section is read in place: nothing is allocated or copied unless
/// an address changes (this runs for every message of a local client).
pub fn rewrite_section<E>(
    content: &[u8],
    mut map: impl FnMut(&str, bool) -> Result<String, E>,
) -> Result<Option<Vec<u8>>, E> {
    // (start of the value, end of the field, new value)
    let mut changes: Vec<(usize, usize, String)> = Vec::new();
    let mut field: Option<(usize, bool)> = None;
    let mut finish = |field: Option<(usize, bool)>, end: usize| -> Result<(), E> {
        let Some((value_start, sender)) = field else {
            return Ok(());
        };
        if let Ok(value) = std::str::from_utf8(&content[value_start..end])
            && let Some(new) = rewrite_value(value, |a| map(a, sender))?
        {
            changes.push((value_start, end, new));
        }
        Ok(())
    };
    let mut at = 0;
    while at < content.len() {
        let end = content[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(content.len(), |p| at + p + 1);
        let line = &content[at..end];
        let bare = line
            .strip_suffix(b"\r\n")
            .or_else(|| line.strip_suffix(b"\n"))
            .unwrap_or(line);
        if bare.is_empty() {
            break;
        }
        if bare[0] == b' ' || bare[0] == b'\t' {
            at = end;
            continue;
        }
        finish(field.take(), at)?;
        let Some(colon) = bare.iter().position(|&b| b == b':') else {
            break;
        };
        let name = &bare[..colon];
        if name.is_empty() || !name.iter().all(|&b| (33..=126).contains(&b)) {
            break;
        }
        field = std::str::from_utf8(name)
            .ok()
            .and_then(address_header)
            .map(|sender| (at + colon + 1, sender));
        at = end;
    }
    finish(field.take(), at)?;
    if changes.is_empty() {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(content.len() + 64);
    let mut last = 0;
    for (start, end, new) in changes {
        out.extend_from_slice(&content[last..start]);
        out.extend_from_slice(new.as_bytes());
        last = end;
    }
    out.extend_from_slice(&content[last..]);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(v: &str) -> Vec<&str> {
        address_spans(v)
            .into_iter()
            .map(|(s, e)| &v[s..e])
            .collect()
    }

    #[test]
    fn finds_the_addresses_only() {
        assert_eq!(spans(" auditu1, Bob <bob>"), ["auditu1", "bob"]);
        assert_eq!(
            spans(" \"Doe, J\" <j@x.example> (work), k@y.example"),
            ["j@x.example", "k@y.example"]
        );
        assert_eq!(spans(" undisclosed-recipients:;"), Vec::<&str>::new());
        assert_eq!(spans(" team: a, b@c;"), ["a", "b@c"]);
        assert_eq!(spans(" a (comment)"), ["a"]);
        assert_eq!(spans(" John Doe"), Vec::<&str>::new());
        assert_eq!(spans(" <>"), Vec::<&str>::new());
        assert_eq!(spans("\"q u\"@x"), ["\"q u\"@x"]);
    }

    #[test]
    fn rewrites_in_place_and_reports_no_change() {
        let q = |a: &str| -> Result<String, ()> {
            Ok(if a.contains('@') {
                a.to_string()
            } else {
                format!("{a}@o.example")
            })
        };
        assert_eq!(
            rewrite_value(" auditu1,\r\n\tBob <bob> (x)", q).unwrap(),
            Some(" auditu1@o.example,\r\n\tBob <bob@o.example> (x)".to_string())
        );
        assert_eq!(rewrite_value(" a@b, <c@d>", q).unwrap(), None);
    }

    #[test]
    fn a_header_section_is_rewritten_only_where_needed() {
        let c = Completion {
            domain: "o.example".into(),
            dot_mydomain: Some("d.example".into()),
        };
        let content = b"From: me\r\nX-To: x\r\nTo: a@host,\r\n b@h.example\r\nSubject: To: y\r\n\r\nTo: body\r\n";
        let out = rewrite_section(content, |a, _| Ok::<_, ()>(c.complete(a)))
            .unwrap()
            .unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "From: me@o.example\r\nX-To: x\r\nTo: a@host.d.example,\r\n b@h.example\r\nSubject: To: y\r\n\r\nTo: body\r\n"
        );
        let same = b"From: me@x.example\r\nTo: <b@h.example>\r\n\r\nbody";
        assert_eq!(
            rewrite_section(same, |a, _| Ok::<_, ()>(c.complete(a))).unwrap(),
            None
        );
    }

    #[test]
    fn arbitrary_text_never_panics() {
        for v in [
            "<",
            "\"",
            "(",
            "\\",
            "a<b",
            "(((",
            "\"\\",
            "<>>,;:\"(",
            "é <ü>",
        ] {
            let _ = rewrite_value(v, |a| Ok::<_, ()>(format!("{a}@x")));
        }
    }
}
