//! One local recipient, expanded: aliases, `:include:` files, `.forward`,
//! then the mailbox; each final destination (file, command, mailbox,
//! remote address) delivered once, with a guard against alias and
//! `.forward` loops and against runaway nesting.

use super::{LocalSettings, User};
use crate::delivery::agent::{
    Forward, Request, RequestRecipient, Status, StatusKind, has_delivered_to, split_extension,
};
use crate::delivery::{command, mailbox};
use corepost_config::tables::split_alias_value;
use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Deepest alias / include / .forward nesting followed.
const MAX_DEPTH: usize = 20;

/// Where a destination came from (allow_mail_to_commands/files).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Alias,
    Forward,
    Include,
}

impl Origin {
    fn word(self) -> &'static str {
        match self {
            Origin::Alias => "alias",
            Origin::Forward => "forward",
            Origin::Include => "include",
        }
    }
}

struct Expansion<'a> {
    s: &'a LocalSettings,
    req: &'a Request,
    /// The envelope recipient, lower case.
    address: String,
    /// The recipient being delivered now: the envelope recipient, or the
    /// local address an alias or `.forward` led to (`user@$myorigin`
    /// when the entry has no domain, as Postfix's local qualifies it).
    current: String,
    /// The recipient before any rewriting (ORCPT when given).
    original: String,
    /// Final destinations and their statuses, for the log lines.
    expanded: Vec<(String, Status)>,
    /// Whether an alias, `:include:` or `.forward` was followed.
    followed: bool,
    domain: String,
    statuses: Vec<Status>,
    forward_to: Vec<String>,
    forward_sender: Option<String>,
    routed: Vec<Forward>,
    index: u32,
    /// Final destinations already delivered in this expansion.
    seen: HashSet<String>,
    /// Names whose alias or .forward is being expanded (loop guard).
    chain: Vec<String>,
}

/// Deliver one recipient; returns its status and the messages to queue
/// for it.
pub fn deliver_recipient(
    s: &LocalSettings,
    req: &Request,
    rcpt: &RequestRecipient,
) -> (Status, Vec<Forward>, Vec<(String, Status)>) {
    let address = rcpt.address.to_lowercase();
    if has_delivered_to(&req.content, &address) {
        return (
            Status::bounced("5.4.6", format!("mail forwarding loop for {address}")),
            Vec::new(),
            Vec::new(),
        );
    }
    let original = rcpt
        .orcpt
        .as_deref()
        .and_then(|o| o.split_once(';'))
        .filter(|(kind, _)| kind.trim().eq_ignore_ascii_case("rfc822"))
        .map(|(_, a)| crate::bounce::decode_xtext(a.trim()))
        .unwrap_or_else(|| rcpt.address.clone());
    let (local, domain) = crate::routing::split_address(&address);
    let (local, domain) = (local.to_string(), domain.to_string());
    let mut x = Expansion {
        s,
        req,
        address: address.clone(),
        current: address.clone(),
        original,
        expanded: Vec::new(),
        followed: false,
        domain,
        statuses: Vec::new(),
        forward_to: Vec::new(),
        forward_sender: None,
        routed: Vec::new(),
        index: rcpt.index,
        seen: HashSet::new(),
        chain: Vec::new(),
    };
    x.name(&local, 0);
    x.finish()
}

impl Expansion<'_> {
    fn finish(mut self) -> (Status, Vec<Forward>, Vec<(String, Status)>) {
        for to in &self.forward_to {
            self.expanded.push((to.clone(), Status::sent("forwarded")));
        }
        if !self.forward_to.is_empty() {
            let mut content = format!("Delivered-To: {}\r\n", self.address).into_bytes();
            content.extend_from_slice(&self.req.content);
            self.routed.push(Forward {
                for_recipient: self.index,
                sender: self
                    .forward_sender
                    .clone()
                    .unwrap_or_else(|| self.req.sender.clone()),
                recipients: std::mem::take(&mut self.forward_to),
                content,
                route: None,
            });
            self.statuses.push(Status::sent("forwarded"));
        }
        let status = self
            .statuses
            .into_iter()
            .reduce(Status::worst)
            .unwrap_or_else(|| Status::sent("delivered to nothing (empty expansion)"));
        // A retry redoes the whole expansion: forwarding now would send
        // duplicates then.
        let forwards = if status.kind == StatusKind::Deferred {
            Vec::new()
        } else {
            self.routed
        };
        // Per-destination lines only when the recipient was expanded and
        // the expansion stands (a deferral redoes all of it).
        let expanded = if self.followed && status.kind != StatusKind::Deferred {
            self.expanded
        } else {
            Vec::new()
        };
        (status, forwards, expanded)
    }

    /// The status of one final destination of the current recipient.
    fn record(&mut self, status: Status) {
        self.expanded.push((self.current.clone(), status.clone()));
        self.statuses.push(status);
    }

    /// Deliver to the local name of `address` with it as the current
    /// recipient.
    fn name_as(&mut self, address: String, name: &str, depth: usize) {
        let saved = std::mem::replace(&mut self.current, address);
        self.name(name, depth);
        self.current = saved;
    }

    fn first_time(&mut self, key: String) -> bool {
        self.seen.insert(key)
    }

    /// A local name (`user`, `user+ext`, `alias`).
    fn name(&mut self, name: &str, depth: usize) {
        if depth > MAX_DEPTH {
            self.statuses.push(Status::bounced(
                "5.4.6",
                format!("unreasonable alias or .forward nesting for {name}"),
            ));
            return;
        }
        let delim = self.s.recipient_delimiter.clone();
        let (base, ext) = split_extension(name, &delim);
        if !self.chain.iter().any(|c| c == name || c == base) {
            match self.alias(name, base) {
                Err(e) => {
                    self.statuses.push(Status::deferred(
                        "4.3.0",
                        format!("alias database unavailable: {e}"),
                    ));
                    return;
                }
                Ok(Some((key, value, privs))) => {
                    if self.forward_sender.is_none()
                        && self
                            .alias(&format!("owner-{key}"), "")
                            .ok()
                            .flatten()
                            .is_some()
                    {
                        self.forward_sender = Some(format!("owner-{key}@{}", self.s.myorigin));
                    }
                    self.followed = true;
                    self.chain.push(key);
                    for d in split_alias_value(&value) {
                        self.destination(&d, Origin::Alias, &privs, depth + 1);
                    }
                    self.chain.pop();
                    return;
                }
                Ok(None) => {}
            }
        }
        match self.s.user(base) {
            Err(e) => self.statuses.push(Status::deferred(
                "4.3.0",
                format!("user database unavailable: {e}"),
            )),
            Ok(Some(user)) => {
                let guard = format!(".forward:{}", user.name);
                if !self.chain.contains(&guard)
                    && let Some(entries) = self.forward_file(&user, ext)
                {
                    self.followed = true;
                    self.chain.push(guard);
                    self.chain.push(user.name.clone());
                    for d in entries {
                        self.destination(&d, Origin::Forward, &user, depth + 1);
                    }
                    self.chain.pop();
                    self.chain.pop();
                    return;
                }
                self.mailbox(&user, ext);
            }
            Ok(None) if !self.s.fallback_transport.trim().is_empty() => {
                let transport = self.s.fallback_transport.clone();
                self.pass_to(&transport);
            }
            Ok(None) if !self.s.luser_relay.is_empty() => {
                let relay = self
                    .s
                    .luser_relay
                    .replace("${user}", base)
                    .replace("$user", base)
                    .replace("${local}", name)
                    .replace("$local", name)
                    .replace("${extension}", ext.unwrap_or(""))
                    .replace("$extension", ext.unwrap_or(""))
                    .replace("${domain}", &self.domain)
                    .replace("$domain", &self.domain)
                    .replace("${recipient}", &self.current)
                    .replace("$recipient", &self.current);
                let relay = if relay.contains('@') {
                    relay
                } else {
                    format!("{relay}@{}", self.s.myorigin)
                };
                if self.first_time(format!("fwd:{relay}")) {
                    self.forward_to.push(relay);
                }
            }
            Ok(None) => self.record(Status::bounced(
                "5.1.1",
                format!("unknown user: \"{name}\""),
            )),
        }
    }

    /// The alias entry for `name` (then `base`): its key, value and the
    /// identity files and commands in it run as.
    fn alias(&self, name: &str, base: &str) -> Result<Option<(String, String, User)>, String> {
        for key in [name, base] {
            if key.is_empty() {
                continue;
            }
            for table in self.s.alias_maps.tables() {
                if let Some(v) = table.lookup(key).map_err(|e| e.to_string())? {
                    let privs = self.table_owner(table.spec());
                    return Ok(Some((key.to_string(), v, privs)));
                }
            }
            if name == base {
                break;
            }
        }
        Ok(None)
    }

    /// The owner of an alias file, or `default_privs` when root owns it
    /// (or the table is not a file).
    fn table_owner(&self, spec: &str) -> User {
        let path = spec
            .split_once(':')
            .map(|(_, p)| p)
            .filter(|p| p.starts_with('/'));
        if let Some(meta) = path.and_then(|p| std::fs::metadata(p).ok())
            && meta.uid() != 0
        {
            return User {
                name: format!("uid {}", meta.uid()),
                uid: meta.uid(),
                gid: meta.gid(),
                home: "/".into(),
                shell: String::new(),
            };
        }
        self.default_privs()
    }

    fn default_privs(&self) -> User {
        self.s
            .user(&self.s.default_privs)
            .ok()
            .flatten()
            .unwrap_or(User {
                name: "nobody".into(),
                uid: 65534,
                gid: 65534,
                home: "/".into(),
                shell: String::new(),
            })
    }

    fn allowed(list: &[String], origin: Origin) -> bool {
        list.iter().any(|w| w == origin.word())
    }

    /// One destination of an alias, include file or .forward.
    fn destination(&mut self, d: &str, origin: Origin, privs: &User, depth: usize) {
        if let Some(cmd) = d.strip_prefix('|') {
            if !Self::allowed(&self.s.commands_allowed, origin) {
                self.record(Status::bounced(
                    "5.7.1",
                    format!(
                        "mail to command is restricted ({} destination)",
                        origin.word()
                    ),
                ));
            } else if self.first_time(format!("cmd:{cmd}")) {
                let s = self.command(cmd, privs, "command");
                self.record(s);
            }
        } else if let Some(path) = d.strip_prefix(":include:") {
            self.include(path.trim(), origin, privs, depth);
        } else if d.starts_with('/') {
            if !Self::allowed(&self.s.files_allowed, origin) {
                self.record(Status::bounced(
                    "5.7.1",
                    format!("mail to file is restricted ({} destination)", origin.word()),
                ));
            } else if self.first_time(format!("file:{d}")) {
                let s = self.file(Path::new(d), privs);
                self.record(s);
            }
        } else if let Some(user) = d.strip_prefix('\\') {
            match self.s.user(user) {
                Ok(Some(u)) => {
                    let address = format!("{}@{}", u.name, self.s.myorigin);
                    let saved = std::mem::replace(&mut self.current, address);
                    self.mailbox(&u, None);
                    self.current = saved;
                }
                Ok(None) => self.statuses.push(Status::bounced(
                    "5.1.1",
                    format!("unknown user: \"{user}\""),
                )),
                Err(e) => self.statuses.push(Status::deferred("4.3.0", e)),
            }
        } else {
            let d = d.trim_matches(|c| c == '<' || c == '>');
            let (local, domain) = crate::routing::split_address(d);
            let is_local = domain.is_empty()
                || matches!(
                    self.s.router.classify(domain),
                    Ok(crate::routing::AddressClass::Local)
                );
            if is_local {
                let address = if domain.is_empty() {
                    format!("{}@{}", local.to_lowercase(), self.s.myorigin)
                } else {
                    d.to_lowercase()
                };
                self.name_as(address, &local.to_lowercase(), depth);
            } else if self.first_time(format!("fwd:{}", d.to_lowercase())) {
                self.forward_to.push(d.to_string());
            }
        }
    }

    /// `:include:/path`: more destinations, one list per line.
    fn include(&mut self, path: &str, origin: Origin, privs: &User, depth: usize) {
        if depth > MAX_DEPTH {
            self.statuses.push(Status::bounced(
                "5.4.6",
                format!("unreasonable :include: nesting for {path}"),
            ));
            return;
        }
        let text = {
            let _as = mailbox::AsUser::new(privs.uid, privs.gid);
            std::fs::read(path)
        };
        let text = match text {
            Ok(t) => String::from_utf8_lossy(&t).into_owned(),
            Err(e) => {
                self.statuses.push(Status::deferred(
                    "4.3.0",
                    format!("cannot open include file {path}: {e}"),
                ));
                return;
            }
        };
        // Files and commands in a non-root include file run as its owner.
        let privs = match std::fs::metadata(path) {
            Ok(m) if m.uid() != 0 && origin != Origin::Forward => User {
                name: format!("uid {}", m.uid()),
                uid: m.uid(),
                gid: m.gid(),
                home: "/".into(),
                shell: String::new(),
            },
            _ => privs.clone(),
        };
        let _ = origin;
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            for d in split_alias_value(line) {
                self.destination(&d, Origin::Include, &privs, depth + 1);
            }
        }
    }

    /// The user's `.forward` destinations, when a usable file exists.
    fn forward_file(&mut self, user: &User, ext: Option<&str>) -> Option<Vec<String>> {
        let home = user.home.display().to_string();
        let mut tried = HashSet::new();
        for pattern in &self.s.forward_path {
            let delim = if ext.is_some() {
                self.s
                    .recipient_delimiter
                    .chars()
                    .next()
                    .map(String::from)
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let path = pattern
                .replace("${home}", &home)
                .replace("$home", &home)
                .replace("${user}", &user.name)
                .replace("$user", &user.name)
                .replace("${recipient_delimiter}", &delim)
                .replace("$recipient_delimiter", &delim)
                .replace("${extension}", ext.unwrap_or(""))
                .replace("$extension", ext.unwrap_or(""));
            if !tried.insert(path.clone()) {
                continue;
            }
            let _as = mailbox::AsUser::new(user.uid, user.gid);
            let Ok(meta) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            // Honoured only when the user owns it and nobody else can
            // change it.
            if !meta.is_file() || meta.uid() != user.uid || meta.mode() & 0o022 != 0 {
                continue;
            }
            let Ok(text) = std::fs::read(&path) else {
                continue;
            };
            let text = String::from_utf8_lossy(&text);
            let entries: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .flat_map(split_alias_value)
                .collect();
            if !entries.is_empty() {
                return Some(entries);
            }
        }
        None
    }

    fn delivered_to(&self, what: &str) -> Option<&str> {
        self.s
            .delivered_header
            .iter()
            .any(|w| w == what)
            .then_some(self.address.as_str())
    }

    /// Run `cmd` for the recipient, as `privs`.
    fn command(&self, cmd: &str, privs: &User, kind: &str) -> Status {
        let mut argv: Vec<String> = if self.s.shell.trim().is_empty() {
            command::shell(cmd)
        } else {
            let mut a: Vec<String> = self.s.shell.split_whitespace().map(String::from).collect();
            a.push(cmd.to_string());
            a
        };
        if argv.is_empty() {
            argv = command::shell(cmd);
        }
        let (local, domain) = crate::routing::split_address(&self.current);
        let (_, ext) = split_extension(local, &self.s.recipient_delimiter);
        let mut env = vec![
            ("HOME".to_string(), privs.home.display().to_string()),
            ("LOGNAME".into(), privs.name.clone()),
            ("USER".into(), privs.name.clone()),
            ("SHELL".into(), privs.shell.clone()),
            ("SENDER".into(), self.req.sender.clone()),
            ("RECIPIENT".into(), self.current.clone()),
            ("LOCAL".into(), local.to_string()),
            ("EXTENSION".into(), ext.unwrap_or("").to_string()),
            ("DOMAIN".into(), domain.to_string()),
            ("ORIGINAL_RECIPIENT".into(), self.original.clone()),
        ];
        // Postfix's local(8) adds these when the queue file has them.
        for (name, value) in [
            ("CLIENT_ADDRESS", &self.req.client_addr),
            ("CLIENT_HOSTNAME", &self.req.client_name),
            ("CLIENT_HELO", &self.req.client_helo),
            ("CLIENT_PROTOCOL", &self.req.client_protocol),
            ("SASL_USERNAME", &self.req.sasl_username),
        ] {
            if !value.is_empty() {
                env.push((name.to_string(), value.clone()));
            }
        }
        let mut input = from_line(&self.req.sender);
        input.extend(mailbox::local_copy(
            &self.req.content,
            Some(&self.req.sender),
            self.delivered_to("command"),
        ));
        let spec = command::Spec {
            argv,
            env,
            ids: Some((privs.uid, privs.gid)),
            cwd: privs.home.is_dir().then(|| privs.home.clone()),
            time_limit: self.s.time_limit,
        };
        let outcome = command::run(&spec, &input);
        command::status(&outcome, &format!("{kind}: {cmd}"))
    }

    /// Append to a file (mbox format) or a Maildir (`/path/`), as `privs`.
    fn file(&self, path: &Path, privs: &User) -> Status {
        let copy = mailbox::local_copy(
            &self.req.content,
            Some(&self.req.sender),
            self.delivered_to("file"),
        );
        let _as = mailbox::AsUser::new(privs.uid, privs.gid);
        let shown = path.display();
        let result = if path.as_os_str().to_string_lossy().ends_with('/') {
            mailbox::maildir(path, &copy, self.s.mailbox_size_limit).map(|_| ())
        } else {
            mailbox::mbox(
                path,
                &self.req.sender,
                &copy,
                self.s.locks,
                self.s.mailbox_size_limit,
            )
        };
        match result {
            Ok(()) => Status::sent(format!("delivered to file: {shown}")),
            Err(e) => mailbox::write_error_status(&shown.to_string(), &e),
        }
    }

    /// Hand the recipient to `transport` (`transport[:nexthop]`, as
    /// mailbox_transport and fallback_transport say): queued again, routed
    /// there.
    fn pass_to(&mut self, transport: &str) {
        let (t, n) = match transport.trim().split_once(':') {
            Some((t, n)) => (t.to_string(), n.to_string()),
            None => (transport.trim().to_string(), String::new()),
        };
        let mut content = format!("Delivered-To: {}\r\n", self.address).into_bytes();
        content.extend_from_slice(&self.req.content);
        // The final user, not the alias that led to it (Postfix passes
        // the expanded recipient to mailbox_transport/fallback_transport).
        self.routed.push(Forward {
            for_recipient: self.index,
            sender: self.req.sender.clone(),
            recipients: vec![self.current.clone()],
            content,
            route: Some((t, n)),
        });
        self.record(Status::sent("forwarded"));
    }

    /// The user's mailbox: mailbox_transport, mailbox_command, Maildir or
    /// mbox.
    fn mailbox(&mut self, user: &User, _ext: Option<&str>) {
        if !self.first_time(format!("mbox:{}", user.name)) {
            return;
        }
        if !self.s.mailbox_transport.trim().is_empty() {
            let transport = self.s.mailbox_transport.clone();
            self.pass_to(&transport);
            return;
        }
        if !self.s.mailbox_command.trim().is_empty() {
            let cmd = self.s.mailbox_command.clone();
            let s = self.command(&cmd, user, "command");
            self.record(s);
            return;
        }
        let copy = mailbox::local_copy(
            &self.req.content,
            Some(&self.req.sender),
            Some(&self.address),
        );
        let (path, maildir): (PathBuf, bool) = if !self.s.home_mailbox.is_empty() {
            (
                user.home.join(&self.s.home_mailbox),
                self.s.home_mailbox.ends_with('/'),
            )
        } else {
            (
                Path::new(&self.s.mail_spool_directory).join(&user.name),
                false,
            )
        };
        let _as = mailbox::AsUser::new(user.uid, user.gid);
        let result = if maildir {
            mailbox::maildir(&path, &copy, self.s.mailbox_size_limit).map(|_| "maildir")
        } else {
            mailbox::mbox(
                &path,
                &self.req.sender,
                &copy,
                self.s.locks,
                self.s.mailbox_size_limit,
            )
            .map(|()| "mailbox")
        };
        self.record(match result {
            Ok(kind) => Status::sent(format!("delivered to {kind}")),
            Err(e) => mailbox::write_error_status(&path.display().to_string(), &e),
        });
    }
}

/// `From sender date` + LF, the first line a delivery command reads.
fn from_line(sender: &str) -> Vec<u8> {
    let sender = if sender.is_empty() {
        "MAILER-DAEMON"
    } else {
        sender
    };
    format!("From {sender}  {}\n", crate::time::asctime_now()).into_bytes()
}
