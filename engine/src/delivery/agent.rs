//! What the queue manager hands an off-core delivery agent (local,
//! virtual, pipe) and what it gets back.
//!
//! A [`Request`] is an owned copy of what a delivery needs (it crosses to
//! a pool thread); the agent answers with a [`Report`]: one [`Status`] per
//! recipient, plus messages to queue anew ([`Forward`]: alias and
//! `.forward` expansion to other addresses, `luser_relay`), which the core
//! appends to its spool before it records the recipient as delivered.

/// One recipient of a request.
#[derive(Debug, Clone)]
pub struct RequestRecipient {
    /// Index in the envelope.
    pub index: u32,
    pub address: String,
    pub orcpt: Option<String>,
}

/// A message to deliver to some recipients of one destination.
#[derive(Debug, Clone)]
pub struct Request {
    pub queue_id: String,
    pub transport: String,
    pub nexthop: String,
    pub sender: String,
    pub recipients: Vec<RequestRecipient>,
    /// Headers and body as queued (CRLF line ends).
    pub content: Vec<u8>,
    pub client_name: String,
    pub client_addr: String,
    pub client_helo: String,
    pub client_protocol: String,
    /// The SASL login name of the submitting client, empty if none.
    pub sasl_username: String,
}

/// What happened to one recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusKind {
    Sent,
    Deferred,
    Bounced,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    pub kind: StatusKind,
    pub dsn: String,
    pub text: String,
}

impl Status {
    pub fn sent(text: impl Into<String>) -> Status {
        Status {
            kind: StatusKind::Sent,
            dsn: "2.0.0".into(),
            text: text.into(),
        }
    }
    pub fn deferred(dsn: &str, text: impl Into<String>) -> Status {
        Status {
            kind: StatusKind::Deferred,
            dsn: dsn.into(),
            text: text.into(),
        }
    }
    pub fn bounced(dsn: &str, text: impl Into<String>) -> Status {
        Status {
            kind: StatusKind::Bounced,
            dsn: dsn.into(),
            text: text.into(),
        }
    }
    /// The worse of two statuses (deferred beats bounced beats sent: a
    /// retry may still deliver everything).
    pub fn worst(self, other: Status) -> Status {
        let rank = |k: StatusKind| match k {
            StatusKind::Sent => 0,
            StatusKind::Bounced => 1,
            StatusKind::Deferred => 2,
        };
        if rank(other.kind) > rank(self.kind) {
            other
        } else {
            self
        }
    }
}

/// A new message to queue on behalf of a recipient.
#[derive(Debug, Clone)]
pub struct Forward {
    /// The recipient (envelope index) this forward delivers for.
    pub for_recipient: u32,
    pub sender: String,
    pub recipients: Vec<String>,
    pub content: Vec<u8>,
    /// `transport:nexthop` to use instead of normal routing
    /// (`mailbox_transport`).
    pub route: Option<(String, String)>,
}

/// An agent's answer.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub results: Vec<(u32, Status)>,
    pub forwards: Vec<Forward>,
    /// local(8): what each final destination an envelope recipient was
    /// expanded to (alias, `:include:`, `.forward`) got — (recipient
    /// index, final address or `/file` or `|command`, status) — logged one
    /// line each with `orig_to=`, as Postfix does.
    pub expanded: Vec<(u32, String, Status)>,
}

/// Postfix's mapping of a command's sysexits(3) code to a status.
pub fn sysexit_status(code: i32, output: &str) -> Status {
    let (dsn, what, soft) = match code {
        0 => return Status::sent("delivered via command"),
        64 => ("5.3.0", "command line usage error", false),
        65 => ("5.6.0", "data format error", false),
        66 => ("5.3.0", "cannot open input", false),
        67 => ("5.1.1", "user unknown", false),
        68 => ("5.1.2", "host name unknown", false),
        69 => ("5.3.0", "service unavailable", false),
        70 => ("5.3.0", "internal software error", false),
        71 => ("4.3.0", "system resource problem", true),
        72 => ("5.3.0", "critical OS file missing", false),
        73 => ("5.2.0", "can't create user output file", false),
        74 => ("5.3.0", "input/output error", false),
        75 => ("4.3.0", "temporary failure", true),
        76 => ("5.5.0", "remote error in protocol", false),
        77 => ("5.7.0", "permission denied", false),
        78 => ("5.3.5", "local configuration error", false),
        _ => ("5.3.0", "", false),
    };
    let output = output.trim();
    let text = if !output.is_empty() {
        output.to_string()
    } else if what.is_empty() {
        format!("command died with status {code}")
    } else {
        what.to_string()
    };
    if soft {
        Status::deferred(dsn, text)
    } else {
        Status::bounced(dsn, text)
    }
}

/// The recipient's `Delivered-To:` loop check: whether the message's
/// header section already has `Delivered-To: <address>`.
pub fn has_delivered_to(content: &[u8], address: &str) -> bool {
    for line in header_lines(content) {
        if let Some(value) = strip_header_name(line, "delivered-to")
            && value.trim().eq_ignore_ascii_case(address)
        {
            return true;
        }
    }
    false
}

/// The physical lines of the header section (up to the empty line),
/// without line ends.
pub fn header_lines(content: &[u8]) -> impl Iterator<Item = &str> {
    content
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .take_while(|l| !l.is_empty())
        .map(|l| std::str::from_utf8(l).unwrap_or(""))
}

/// The value of a header line if its name is `name` (case-insensitive).
pub fn strip_header_name<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let (n, v) = line.split_once(':')?;
    n.trim_end().eq_ignore_ascii_case(name).then_some(v)
}

/// Split `user+ext` at the first delimiter character.
pub fn split_extension<'a>(local: &'a str, delimiters: &str) -> (&'a str, Option<&'a str>) {
    if delimiters.is_empty() {
        return (local, None);
    }
    match local.find(|c| delimiters.contains(c)) {
        Some(i) if i > 0 => (&local[..i], Some(&local[i + 1..])),
        _ => (local, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysexits() {
        assert_eq!(sysexit_status(0, "").kind, StatusKind::Sent);
        let s = sysexit_status(75, "");
        assert_eq!((s.kind, s.dsn.as_str()), (StatusKind::Deferred, "4.3.0"));
        let s = sysexit_status(67, "no such mailbox\n");
        assert_eq!(
            (s.kind, s.dsn.as_str(), s.text.as_str()),
            (StatusKind::Bounced, "5.1.1", "no such mailbox")
        );
        let s = sysexit_status(1, "");
        assert_eq!(s.kind, StatusKind::Bounced);
        assert_eq!(s.text, "command died with status 1");
    }

    #[test]
    fn delivered_to_loop() {
        let m = b"Delivered-To: a@x\r\nSubject: s\r\n\r\nDelivered-To: b@x\r\n";
        assert!(has_delivered_to(m, "A@X"));
        assert!(!has_delivered_to(m, "b@x"), "body lines do not count");
    }

    #[test]
    fn extensions() {
        assert_eq!(split_extension("a+b+c", "+"), ("a", Some("b+c")));
        assert_eq!(split_extension("a-b", "+-"), ("a", Some("b")));
        assert_eq!(split_extension("a+b", ""), ("a+b", None));
        assert_eq!(split_extension("+x", "+"), ("+x", None));
    }

    #[test]
    fn worst_status() {
        let s = Status::sent("x")
            .worst(Status::bounced("5.0.0", "b"))
            .worst(Status::sent("y"));
        assert_eq!(s.kind, StatusKind::Bounced);
        assert_eq!(
            s.worst(Status::deferred("4.0.0", "d")).kind,
            StatusKind::Deferred
        );
    }
}
