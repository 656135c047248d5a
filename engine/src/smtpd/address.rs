//! Envelope addresses: RFC 5321 mailbox syntax (`local-part@domain`, quoted
//! local parts, address literals), with RFC 6531 UTF-8 when the client said
//! SMTPUTF8.

use super::reply::Reply;

/// RFC 5321 §4.5.3.1 limits.
pub const MAX_LOCAL_PART: usize = 64;
pub const MAX_DOMAIN: usize = 255;
pub const MAX_PATH: usize = 256;

/// A checked mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    /// The local part as written (quotes kept).
    pub local: String,
    /// The domain, lower-cased (address literals keep their brackets).
    pub domain: String,
}

impl Mailbox {
    /// `local@domain`, or the bare local part of an unqualified address.
    pub fn address(&self) -> String {
        if self.domain.is_empty() {
            self.local.clone()
        } else {
            format!("{}@{}", self.local, self.domain)
        }
    }
}

/// An SMTP envelope address: a mailbox, or — as Postfix accepts — a bare
/// local part (`MAIL FROM:<user>`), which canonical rewriting qualifies
/// later (`domain` is then empty).
pub fn parse_envelope_address(path: &str, allow_utf8: bool) -> Result<Mailbox, Reply> {
    let bare = match path.rfind(':') {
        Some(i) if path.starts_with('@') => &path[i + 1..],
        _ => path,
    };
    if bare.contains('@') || bare.is_empty() {
        return parse_mailbox(path, allow_utf8);
    }
    // Check the local part with a placeholder domain: the same rules apply.
    let checked = parse_mailbox(&format!("{bare}@localhost"), allow_utf8)?;
    Ok(Mailbox {
        local: checked.local,
        domain: String::new(),
    })
}

/// Whether the text has non-ASCII characters (needs SMTPUTF8).
pub fn is_utf8_address(s: &str) -> bool {
    !s.is_ascii()
}

/// Check a path (without angle brackets). Source routes (`@a,@b:user@c`)
/// are stripped as RFC 5321 §4.1.2 allows. `allow_utf8`: SMTPUTF8 given.
pub fn parse_mailbox(path: &str, allow_utf8: bool) -> Result<Mailbox, Reply> {
    let bad = |why: &str| Reply::new(501, "5.1.3", format!("Bad address syntax ({why})"));
    let path = match path.rfind(':') {
        Some(i) if path.starts_with('@') => &path[i + 1..],
        _ => path,
    };
    if path.len() > MAX_PATH {
        return Err(Reply::new(501, "5.1.3", "Address too long"));
    }
    if !allow_utf8 && is_utf8_address(path) {
        return Err(Reply::new(
            553,
            "5.6.7",
            "Must declare SMTPUTF8 to send unicode address",
        ));
    }
    let at = path.rfind('@').ok_or_else(|| bad("no domain"))?;
    let (local, domain) = (&path[..at], &path[at + 1..]);
    if local.is_empty() {
        return Err(bad("empty local part"));
    }
    if local.len() > MAX_LOCAL_PART {
        return Err(Reply::new(501, "5.1.3", "Local part too long"));
    }
    if local.starts_with('"') {
        check_quoted(local).map_err(&bad)?;
    } else {
        check_dot_atom(local).map_err(&bad)?;
    }
    let domain = parse_domain(domain).map_err(bad)?;
    Ok(Mailbox {
        local: local.to_string(),
        domain,
    })
}

fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii()
}

fn check_dot_atom(s: &str) -> Result<(), &'static str> {
    if s.split('.')
        .any(|atom| atom.is_empty() || !atom.chars().all(is_atext))
    {
        return Err("bad local part");
    }
    Ok(())
}

fn check_quoted(s: &str) -> Result<(), &'static str> {
    let inner = s
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .ok_or("unbalanced quotes")?;
    let mut escaped = false;
    for c in inner.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => return Err("stray quote"),
            c if (c as u32) < 32 || c as u32 == 127 => return Err("control character"),
            _ => {}
        }
    }
    if escaped {
        return Err("trailing backslash");
    }
    Ok(())
}

/// A domain name or address literal, lower-cased.
pub fn parse_domain(domain: &str) -> Result<String, &'static str> {
    if domain.is_empty() {
        return Err("empty domain");
    }
    if domain.len() > MAX_DOMAIN {
        return Err("domain too long");
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let inner = literal.strip_suffix(']').ok_or("bad address literal")?;
        let ip = inner
            .strip_prefix("IPv6:")
            .or_else(|| inner.strip_prefix("ipv6:"));
        let ok = match ip {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => inner.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return if ok {
            Ok(domain.to_ascii_lowercase())
        } else {
            Err("bad address literal")
        };
    }
    let d = domain.strip_suffix('.').unwrap_or(domain);
    for label in d.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("bad domain label");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("bad domain label");
        }
        if !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || !c.is_ascii())
        {
            return Err("bad character in domain");
        }
    }
    Ok(d.to_lowercase())
}

/// RFC 3461 xtext decoding (`+2B` → `+`), for ENVID and ORCPT.
pub fn decode_xtext(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            c if (33..=126).contains(&c) && c != b'=' => {
                out.push(c);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn good_addresses() {
        let m = parse_mailbox("User.Name+tag@Example.COM", false).unwrap();
        assert_eq!(m.local, "User.Name+tag");
        assert_eq!(m.domain, "example.com");
        assert!(parse_mailbox("\"john doe\"@example.com", false).is_ok());
        assert!(parse_mailbox("a@[192.0.2.1]", false).is_ok());
        assert!(parse_mailbox("a@[IPv6:2001:db8::1]", false).is_ok());
        assert_eq!(
            parse_mailbox("@relay.example:user@example.com", false)
                .unwrap()
                .local,
            "user"
        );
        assert!(parse_mailbox("用户@例子.广告", true).is_ok());
    }

    #[test]
    fn bad_addresses() {
        for bad in [
            "nodomain",
            "@example.com",
            "a..b@example.com",
            "a@-x.com",
            "a@x..com",
            "a@[1.2.3]",
            "\"x@example.com",
            "a b@example.com",
        ] {
            assert!(parse_mailbox(bad, false).is_err(), "{bad}");
        }
        assert_eq!(
            parse_mailbox("用户@example.com", false).unwrap_err().code,
            553
        );
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(parse_mailbox(&long, false).is_err());
    }

    #[test]
    fn unqualified_addresses() {
        let m = parse_envelope_address("user", false).unwrap();
        assert_eq!(
            (m.local.as_str(), m.address()),
            ("user", "user".to_string())
        );
        assert!(parse_envelope_address("a b", false).is_err());
        assert!(parse_envelope_address("", false).is_err());
        assert_eq!(
            parse_envelope_address("u@Example.COM", false)
                .unwrap()
                .address(),
            "u@example.com"
        );
    }

    #[test]
    fn xtext() {
        assert_eq!(
            decode_xtext("rfc822;a+2Bb@example.com").as_deref(),
            Some("rfc822;a+b@example.com")
        );
        assert_eq!(decode_xtext("+4"), None);
        assert_eq!(decode_xtext("a=b"), None);
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,80}") {
            let _ = parse_mailbox(&s, true);
            let _ = decode_xtext(&s);
        }
    }
}
