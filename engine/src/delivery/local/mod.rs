//! The local delivery agent (Postfix's local(8)): mail for the local
//! address class, delivered on a pool thread.
//!
//! For each recipient, in Postfix's order: the `Delivered-To:` loop check;
//! `alias_maps` (aliases(5): `/file`, `|command`, `:include:/file`, other
//! names expanded again with a loop guard, remote addresses forwarded as a
//! new message whose sender is `owner-<alias>` when that alias exists);
//! then the user (`corepost_local_user_maps`, the system password
//! database by default); the user's `.forward` (honoured only when owned
//! by the user and not group/world writable); then `mailbox_transport`,
//! `mailbox_command`, or the mailbox: `home_mailbox` (ending in `/` means
//! Maildir) or `mail_spool_directory/<user>` (mbox). Unknown users go to
//! `fallback_transport` when set, else to `luser_relay` when set, else
//! bounce (Postfix's order in local/unknown.c).
//!
//! Deliveries for a user run as the user (files through the thread's
//! filesystem identity, commands as a child with the user's uid/gid);
//! files and commands named in an alias file run as the file's owner, or
//! `default_privs` when root owns it, as in Postfix. The expansion lives in
//! [`expand`]; this file holds the settings and the user database.

mod expand;

use super::agent::{Report, Request};
use super::mailbox::Locks;
use corepost_config::tables::TableList;
use std::time::Duration;

/// The local agent's configuration (one per `local` transport).
#[derive(Debug, Clone)]
pub struct LocalSettings {
    pub transport: String,
    pub alias_maps: TableList,
    pub user_maps: TableList,
    pub router: crate::routing::Router,
    pub myorigin: String,
    pub recipient_delimiter: String,
    pub home_mailbox: String,
    pub mail_spool_directory: String,
    pub mailbox_command: String,
    pub mailbox_transport: String,
    pub fallback_transport: String,
    pub luser_relay: String,
    pub mailbox_size_limit: u64,
    pub locks: Locks,
    pub time_limit: Duration,
    pub default_privs: String,
    pub shell: String,
    pub forward_path: Vec<String>,
    pub commands_allowed: Vec<String>,
    pub files_allowed: Vec<String>,
    pub delivered_header: Vec<String>,
    pub owner_request_special: bool,
}

impl LocalSettings {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
        raw: &dyn Fn(&str) -> Option<String>,
        transport: &str,
    ) -> Result<LocalSettings, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        // Values with local(8)'s own $names ($home, $user, $extension, ...)
        // are read unexpanded and expanded per recipient.
        let unexpanded = |n: &str| raw(n).map_or_else(|| s(n), Ok);
        let list = |n: &str| -> Result<Vec<String>, String> {
            corepost_config::list::split_list(&s(n)?).map_err(|e| format!("{n}: {e}"))
        };
        let size = |n: &str| -> Result<u64, String> {
            let v = s(n)?;
            v.trim()
                .parse()
                .map_err(|_| format!("{n}: bad size \"{v}\""))
        };
        let time_limit = match s(&format!("{transport}_time_limit")) {
            Ok(v) if !v.trim().is_empty() => v,
            _ => s("command_time_limit")?,
        };
        Ok(LocalSettings {
            transport: transport.to_string(),
            alias_maps: TableList::open_aliases(&s("alias_maps")?)
                .map_err(|e| format!("alias_maps: {e}"))?,
            user_maps: TableList::open(&s("corepost_local_user_maps")?)
                .map_err(|e| format!("corepost_local_user_maps: {e}"))?,
            router: crate::routing::Router::from_params(get)?,
            myorigin: crate::rewrite::myorigin(&s("myorigin")?)?,
            recipient_delimiter: s("recipient_delimiter")?,
            home_mailbox: s("home_mailbox")?,
            mail_spool_directory: s("mail_spool_directory")?,
            mailbox_command: s("mailbox_command")?,
            mailbox_transport: s("mailbox_transport")?,
            fallback_transport: s("fallback_transport")?,
            luser_relay: unexpanded("luser_relay")?,
            mailbox_size_limit: size("mailbox_size_limit")?,
            locks: Locks::parse(&s("mailbox_delivery_lock")?),
            time_limit: corepost_config::value::parse_time(&time_limit, 's')
                .map_err(|e| format!("command_time_limit: {e}"))?,
            default_privs: s("default_privs")?,
            shell: s("local_command_shell")?,
            forward_path: corepost_config::list::split_list(&unexpanded("forward_path")?)
                .map_err(|e| format!("forward_path: {e}"))?,
            commands_allowed: list("allow_mail_to_commands")?,
            files_allowed: list("allow_mail_to_files")?,
            delivered_header: list("prepend_delivered_header")?,
            owner_request_special: s("owner_request_special")?.trim() == "yes",
        })
    }
}

/// A user from the user database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
    pub shell: String,
}

impl User {
    /// Parse a passwd(5) line `name:passwd:uid:gid:gecos:home:shell`.
    pub fn parse(line: &str) -> Option<User> {
        let f: Vec<&str> = line.trim().split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(User {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5].into(),
            shell: f[6].to_string(),
        })
    }
}

impl LocalSettings {
    /// Look a user up (names are folded to lower case, as Postfix does).
    pub fn user(&self, name: &str) -> Result<Option<User>, String> {
        match self.user_maps.lookup(&name.to_lowercase()) {
            Ok(Some(line)) => Ok(User::parse(&line)),
            Ok(None) => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Deliver a request (on a pool thread).
pub fn deliver(settings: &LocalSettings, request: &Request) -> Report {
    let mut report = Report::default();
    for rcpt in &request.recipients {
        let (status, forward, expanded) = expand::deliver_recipient(settings, request, rcpt);
        report.results.push((rcpt.index, status));
        report.forwards.extend(forward);
        report
            .expanded
            .extend(expanded.into_iter().map(|(to, s)| (rcpt.index, to, s)));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines() {
        assert_eq!(
            User::parse("bob:x:1000:100:Bob:/home/bob:/bin/sh"),
            Some(User {
                name: "bob".into(),
                uid: 1000,
                gid: 100,
                home: "/home/bob".into(),
                shell: "/bin/sh".into()
            })
        );
        assert_eq!(User::parse("bob:x:notanumber:1::/:"), None);
        assert_eq!(User::parse("short"), None);
    }
}
