//! The pipe transport (Postfix's pipe(8)): hand the message to an external
//! command named in master.cf, on a pool thread.
//!
//! ```text
//! filter unix - n n - - pipe flags=Rq user=filter size=10000000
//!     argv=/usr/bin/spamc -f -e /usr/sbin/sendmail -oi -f ${sender} ${recipient}
//! ```
//!
//! Attributes before `argv=`: `flags=` (`F` From_ line, `O` X-Original-To,
//! `R` Return-Path, `D` Delivered-To, `h` fold domain and next hop to lower
//! case, `q` quote addresses, `u` fold the user to lower case, `.`
//! dot-stuff, `>` quote `From ` lines, `B` blank line at the end), `user=`
//! (`name` or `name:group`; never root), `size=` (largest message),
//! `eol=` (line ending, default `\n`). In argv, `${sender}`,
//! `${recipient}`, `${original_recipient}`, `${user}`, `${extension}`,
//! `${domain}`, `${mailbox}`, `${nexthop}`, `${size}`, `${queue_id}`,
//! `${client_address}`, `${client_hostname}`, `${client_helo}`,
//! `${client_protocol}` (also without braces) are replaced; an argument
//! with a per-recipient macro becomes one argument per recipient.
//!
//! The exit status maps per sysexits(3): 0 delivered, 75 (and 71) deferred,
//! others bounced with the command's output as the reason; a command that
//! outlives `<transport>_time_limit` is killed and the mail deferred.

use super::agent::{Report, Request, RequestRecipient, Status, split_extension};
use super::command;
use std::time::Duration;

/// One pipe transport's master.cf entry.
#[derive(Debug, Clone)]
pub struct PipeSettings {
    pub transport: String,
    pub argv: Vec<String>,
    pub flags: String,
    /// `user=` as written (`name` or `name:group`).
    pub user: String,
    pub size_limit: u64,
    pub eol: String,
    pub time_limit: Duration,
    pub recipient_delimiter: String,
}

impl PipeSettings {
    /// Parse the service's arguments (`flags=… user=… argv=…`).
    pub fn parse(
        transport: &str,
        args: &[String],
        time_limit: Duration,
        recipient_delimiter: &str,
    ) -> Result<PipeSettings, String> {
        let mut s = PipeSettings {
            transport: transport.to_string(),
            argv: Vec::new(),
            flags: String::new(),
            user: String::new(),
            size_limit: 0,
            eol: "\n".into(),
            time_limit,
            recipient_delimiter: recipient_delimiter.to_string(),
        };
        let mut iter = args.iter();
        while let Some(arg) = iter.next() {
            let Some((name, value)) = arg.split_once('=') else {
                return Err(format!("{transport}: pipe: bad attribute \"{arg}\""));
            };
            match name {
                "argv" => {
                    s.argv.push(value.to_string());
                    s.argv.extend(iter.by_ref().cloned());
                }
                "flags" => s.flags = value.to_string(),
                "user" => s.user = value.to_string(),
                "size" => {
                    s.size_limit = value
                        .parse()
                        .map_err(|_| format!("{transport}: pipe: bad size \"{value}\""))?
                }
                "eol" => s.eol = unescape(value),
                "directory" | "null_sender" => {}
                _ => return Err(format!("{transport}: pipe: unknown attribute \"{name}\"")),
            }
        }
        if s.argv.first().is_none_or(|a| a.is_empty()) {
            return Err(format!("{transport}: pipe: missing argv= command"));
        }
        if s.user.is_empty() {
            return Err(format!("{transport}: pipe: missing user= attribute"));
        }
        Ok(s)
    }

    fn flag(&self, c: char) -> bool {
        self.flags.contains(c)
    }
}

/// `\n`, `\r`, `\t`, `\\` escapes of `eol=`.
fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some(o) => out.push(o),
            None => out.push('\\'),
        }
    }
    out
}

/// The user (and group) the command runs as.
fn resolve_user(spec: &str) -> Result<(u32, u32, String), Status> {
    let (name, group) = match spec.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (spec, None),
    };
    let table = corepost_config::tables::open_table("unix:passwd.byname")
        .map_err(|e| Status::deferred("4.3.5", e.to_string()))?;
    let line = table
        .lookup(name)
        .map_err(|e| Status::deferred("4.3.5", e.to_string()))?
        .ok_or_else(|| Status::deferred("4.3.5", format!("unknown user= account \"{name}\"")))?;
    let user = super::local::User::parse(&line)
        .ok_or_else(|| Status::deferred("4.3.5", format!("bad passwd entry for \"{name}\"")))?;
    let mut gid = user.gid;
    if let Some(g) = group {
        let table = corepost_config::tables::open_table("unix:group.byname")
            .map_err(|e| Status::deferred("4.3.5", e.to_string()))?;
        gid = table
            .lookup(g)
            .ok()
            .flatten()
            .and_then(|l| l.split(':').nth(2)?.parse().ok())
            .ok_or_else(|| Status::deferred("4.3.5", format!("unknown user= group \"{g}\"")))?;
    }
    if user.uid == 0 || gid == 0 {
        return Err(Status::deferred(
            "4.3.5",
            "user= must not be root or a root group (pipe refuses privileged commands)",
        ));
    }
    Ok((user.uid, gid, user.name))
}

/// RFC 5322 quoting of an address's local part (flag `q`).
fn quote_address(address: &str) -> String {
    let (local, domain) = crate::routing::split_address(address);
    let special = |c: char| c.is_whitespace() || "()<>[]:;@\\,\"".contains(c);
    let local = if local.contains(special) {
        format!("\"{}\"", local.replace('\\', "\\\\").replace('"', "\\\""))
    } else {
        local.to_string()
    };
    if domain.is_empty() && !address.contains('@') {
        local
    } else {
        format!("{local}@{domain}")
    }
}

/// Expand `$name`/`${name}` in one argv element for `rcpt` (`None`: no
/// per-recipient values known).
fn expand_arg(
    arg: &str,
    s: &PipeSettings,
    req: &Request,
    rcpt: Option<&RequestRecipient>,
) -> String {
    let mut out = String::new();
    let mut rest = arg;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, next) = if let Some(b) = after.strip_prefix('{') {
            match b.find('}') {
                Some(j) => (&b[..j], &b[j + 1..]),
                None => ("", after),
            }
        } else {
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match value(name, s, req, rcpt) {
            Some(v) => out.push_str(&v),
            None => {
                out.push('$');
                out.push_str(&after[..after.len() - next.len()]);
            }
        }
        rest = next;
    }
    out.push_str(rest);
    out
}

fn value(
    name: &str,
    s: &PipeSettings,
    req: &Request,
    rcpt: Option<&RequestRecipient>,
) -> Option<String> {
    let fold = |v: &str, f: char| {
        if s.flag(f) {
            v.to_lowercase()
        } else {
            v.to_string()
        }
    };
    let address = rcpt.map_or("", |r| r.address.as_str());
    let (local, domain) = crate::routing::split_address(address);
    let (user, ext) = split_extension(local, &s.recipient_delimiter);
    Some(match name {
        "sender" => {
            if s.flag('q') {
                quote_address(&req.sender)
            } else {
                req.sender.clone()
            }
        }
        "recipient" => {
            if s.flag('q') {
                quote_address(address)
            } else {
                address.to_string()
            }
        }
        "original_recipient" => rcpt
            .and_then(|r| r.orcpt.clone())
            .map(|o| o.split_once(';').map_or(o.clone(), |(_, a)| a.to_string()))
            .unwrap_or_else(|| address.to_string()),
        "user" => fold(user, 'u'),
        "extension" => ext.unwrap_or("").to_string(),
        "mailbox" => fold(local, 'u'),
        "domain" => fold(domain, 'h'),
        "nexthop" => fold(&req.nexthop, 'h'),
        "size" => req.content.len().to_string(),
        "queue_id" => req.queue_id.clone(),
        "client_address" => req.client_addr.clone(),
        "client_hostname" => req.client_name.clone(),
        "client_helo" => req.client_helo.clone(),
        "client_protocol" => req.client_protocol.clone(),
        _ => return None,
    })
}

/// Whether an argv element depends on the recipient.
fn per_recipient(arg: &str) -> bool {
    [
        "recipient",
        "original_recipient",
        "user",
        "extension",
        "mailbox",
        "domain",
    ]
    .iter()
    .any(|m| arg.contains(&format!("${{{m}}}")) || arg.contains(&format!("${m}")))
}

/// The command line for a request.
fn argv(s: &PipeSettings, req: &Request) -> Vec<String> {
    let mut out = Vec::new();
    for arg in &s.argv {
        if per_recipient(arg) {
            for r in &req.recipients {
                out.push(expand_arg(arg, s, req, Some(r)));
            }
        } else {
            out.push(expand_arg(arg, s, req, req.recipients.first()));
        }
    }
    out
}

/// The message as the command reads it.
fn input(s: &PipeSettings, req: &Request) -> Vec<u8> {
    let eol = s.eol.as_bytes();
    let mut out = Vec::with_capacity(req.content.len() + 256);
    let line = |text: &str, out: &mut Vec<u8>| {
        out.extend_from_slice(text.as_bytes());
        out.extend_from_slice(eol);
    };
    if s.flag('F') {
        let sender = if req.sender.is_empty() {
            "MAILER-DAEMON"
        } else {
            &req.sender
        };
        line(
            &format!("From {sender}  {}", crate::time::asctime_now()),
            &mut out,
        );
    }
    if s.flag('R') {
        line(&format!("Return-Path: <{}>", req.sender), &mut out);
    }
    if let Some(r) = req.recipients.first() {
        if s.flag('O') {
            let orig = value("original_recipient", s, req, Some(r)).unwrap_or_default();
            line(&format!("X-Original-To: {orig}"), &mut out);
        }
        if s.flag('D') {
            line(&format!("Delivered-To: {}", r.address), &mut out);
        }
    }
    let mut rest = &req.content[..];
    while !rest.is_empty() {
        let (l, next) = match memchr::memchr(b'\n', rest) {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, &rest[rest.len()..]),
        };
        let l = l.strip_suffix(b"\r").unwrap_or(l);
        if s.flag('.') && l.starts_with(b".") {
            out.push(b'.');
        }
        if s.flag('>') && l.starts_with(b"From ") {
            out.push(b'>');
        }
        out.extend_from_slice(l);
        out.extend_from_slice(eol);
        rest = next;
    }
    if s.flag('B') {
        out.extend_from_slice(eol);
    }
    out
}

/// Deliver a request (on a pool thread): one command for its recipients.
pub fn deliver(s: &PipeSettings, req: &Request) -> Report {
    let same = |status: Status| Report {
        results: req
            .recipients
            .iter()
            .map(|r| (r.index, status.clone()))
            .collect(),
        forwards: Vec::new(),
        expanded: Vec::new(),
    };
    if s.size_limit > 0 && req.content.len() as u64 > s.size_limit {
        return same(Status::bounced("5.2.3", "message file too big"));
    }
    let (uid, gid, name) = match resolve_user(&s.user) {
        Ok(u) => u,
        Err(status) => return same(status),
    };
    let spec = command::Spec {
        argv: argv(s, req),
        env: vec![
            ("SHELL".into(), "/bin/sh".into()),
            ("LOGNAME".into(), name.clone()),
            ("USER".into(), name),
        ],
        ids: Some((uid, gid)),
        cwd: None,
        time_limit: s.time_limit,
    };
    let outcome = command::run(&spec, &input(s, req));
    let mut status = command::status(&outcome, &format!("{} service", s.transport));
    if status.kind == super::agent::StatusKind::Sent {
        status.text = format!("delivered via {} service", s.transport);
    }
    same(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn request(rcpts: &[&str]) -> Request {
        Request {
            queue_id: "Q1".into(),
            transport: "filter".into(),
            nexthop: "Example.COM".into(),
            sender: "s p@x.example".into(),
            recipients: rcpts
                .iter()
                .enumerate()
                .map(|(i, a)| RequestRecipient {
                    index: i as u32,
                    address: a.to_string(),
                    orcpt: None,
                })
                .collect(),
            content: b"Subject: t\r\n\r\n.dot\r\nFrom x\r\nend\r\n".to_vec(),
            client_name: "c.example".into(),
            client_addr: "192.0.2.1".into(),
            client_helo: "h".into(),
            client_protocol: "ESMTP".into(),
            sasl_username: String::new(),
        }
    }

    #[test]
    fn parses_attributes_and_argv() {
        let s = PipeSettings::parse(
            "f",
            &words("flags=Rq. user=nobody:nogroup size=100 eol=\\r\\n argv=/bin/x -f ${sender} ${recipient}"),
            Duration::from_secs(1),
            "+",
        )
        .unwrap();
        assert_eq!(s.argv, words("/bin/x -f ${sender} ${recipient}"));
        assert_eq!(
            (s.flags.as_str(), s.user.as_str(), s.size_limit),
            ("Rq.", "nobody:nogroup", 100)
        );
        assert_eq!(s.eol, "\r\n");
        for bad in [
            "user=x",
            "argv=/bin/x",
            "flags=F user=x bogus=1 argv=/x",
            "user=x size=big argv=/x",
        ] {
            assert!(
                PipeSettings::parse("f", &words(bad), Duration::ZERO, "").is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn macros_and_per_recipient_arguments() {
        let s = PipeSettings::parse(
            "f",
            &words("flags=hqu user=nobody argv=/bin/x ${sender} ${nexthop} $queue_id ${size} ${client_address} --to=${user}+${extension}@${domain} ${unknown}"),
            Duration::ZERO,
            "+",
        )
        .unwrap();
        let req = request(&["Bob+Tag@A.Example", "c@b.example"]);
        assert_eq!(
            argv(&s, &req),
            vec![
                "/bin/x",
                "\"s p\"@x.example",
                "example.com",
                "Q1",
                &req.content.len().to_string(),
                "192.0.2.1",
                "--to=bob+Tag@a.example",
                "--to=c+@b.example",
                "${unknown}"
            ]
        );
    }

    #[test]
    fn input_flags() {
        let s = PipeSettings::parse(
            "f",
            &words("flags=FRD.> user=nobody argv=/bin/cat"),
            Duration::ZERO,
            "",
        )
        .unwrap();
        let text = String::from_utf8(input(&s, &request(&["r@x"]))).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("From s p@x.example  "), "{text}");
        assert_eq!(
            lines[1..],
            [
                "Return-Path: <s p@x.example>",
                "Delivered-To: r@x",
                "Subject: t",
                "",
                "..dot",
                ">From x",
                "end"
            ]
        );
        assert!(!text.contains('\r'));
    }
}
