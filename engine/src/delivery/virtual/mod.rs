//! The virtual delivery agent (Postfix's virtual(8)): mailboxes for
//! hosted domains that have no system accounts, delivered on a pool
//! thread.
//!
//! The recipient's mailbox comes from `virtual_mailbox_maps` (keys:
//! `user+ext@domain`, `user@domain`, `@domain`), relative to
//! `virtual_mailbox_base`; a trailing `/` means Maildir, otherwise mbox
//! (locked per `virtual_mailbox_lock`). The file is written as the uid and
//! gid from `virtual_uid_maps`/`virtual_gid_maps` (often `static:5000`);
//! a uid below `virtual_minimum_uid` defers the mail as a configuration
//! error, as Postfix does. `virtual_mailbox_limit` caps the file size.

use super::agent::{Report, Request, Status, has_delivered_to, split_extension};
use super::mailbox::{self, Locks};
use corepost_config::tables::TableList;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct VirtualSettings {
    pub mailbox_maps: TableList,
    pub base: String,
    pub uid_maps: TableList,
    pub gid_maps: TableList,
    pub minimum_uid: u32,
    pub mailbox_limit: u64,
    pub locks: Locks,
    pub recipient_delimiter: String,
}

impl VirtualSettings {
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<VirtualSettings, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let maps = |n: &str| TableList::open(&s(n)?).map_err(|e| format!("{n}: {e}"));
        let num = |n: &str| -> Result<u64, String> {
            let v = s(n)?;
            v.trim()
                .parse()
                .map_err(|_| format!("{n}: bad number \"{v}\""))
        };
        Ok(VirtualSettings {
            mailbox_maps: maps("virtual_mailbox_maps")?,
            base: s("virtual_mailbox_base")?,
            uid_maps: maps("virtual_uid_maps")?,
            gid_maps: maps("virtual_gid_maps")?,
            minimum_uid: u32::try_from(num("virtual_minimum_uid")?).unwrap_or(u32::MAX),
            mailbox_limit: num("virtual_mailbox_limit")?,
            locks: Locks::parse(&s("virtual_mailbox_lock")?),
            recipient_delimiter: s("recipient_delimiter")?,
        })
    }
}

/// The lookup keys for an address: `user+ext@domain`, `user@domain`,
/// `@domain`.
fn keys(address: &str, delimiter: &str) -> Vec<String> {
    let (local, domain) = crate::routing::split_address(address);
    let mut keys = vec![address.to_string()];
    if let (base, Some(_)) = split_extension(local, delimiter) {
        keys.push(format!("{base}@{domain}"));
    }
    keys.push(format!("@{domain}"));
    keys
}

fn lookup(maps: &TableList, keys: &[String]) -> Result<Option<String>, Status> {
    maps.lookup_first(keys.iter().map(String::as_str))
        .map(|found| found.map(|(_, v)| v.trim().to_string()))
        .map_err(|e| Status::deferred("4.3.0", format!("table lookup failed: {e}")))
}

fn deliver_one(s: &VirtualSettings, req: &Request, address: &str) -> Status {
    let address = address.to_lowercase();
    if has_delivered_to(&req.content, &address) {
        return Status::bounced("5.4.6", format!("mail forwarding loop for {address}"));
    }
    let keys = keys(&address, &s.recipient_delimiter);
    let path = match lookup(&s.mailbox_maps, &keys) {
        Ok(Some(p)) => p,
        Ok(None) => {
            return Status::bounced("5.1.1", format!("unknown user: \"{address}\""));
        }
        Err(st) => return st,
    };
    let id = |maps: &TableList, what: &str| -> Result<u32, Status> {
        match lookup(maps, &keys)? {
            Some(v) => v.parse().map_err(|_| {
                Status::deferred("4.3.5", format!("bad {what} \"{v}\" for {address}"))
            }),
            None => Err(Status::deferred(
                "4.3.5",
                format!("no {what} for {address} in virtual_{what}_maps"),
            )),
        }
    };
    let (uid, gid) = match (id(&s.uid_maps, "uid"), id(&s.gid_maps, "gid")) {
        (Ok(u), Ok(g)) => (u, g),
        (Err(st), _) | (_, Err(st)) => return st,
    };
    if uid < s.minimum_uid {
        return Status::deferred(
            "4.3.5",
            format!(
                "mail system configuration error: uid {uid} for {address} is below virtual_minimum_uid {}",
                s.minimum_uid
            ),
        );
    }
    let full: PathBuf = if s.base.is_empty() {
        PathBuf::from(&path)
    } else {
        PathBuf::from(&s.base).join(path.trim_start_matches('/'))
    };
    let copy = mailbox::local_copy(&req.content, Some(&req.sender), Some(&address));
    let _as = mailbox::AsUser::new(uid, gid);
    let result = if path.ends_with('/') {
        mailbox::maildir(&full, &copy, s.mailbox_limit).map(|_| "maildir")
    } else {
        mailbox::mbox(&full, &req.sender, &copy, s.locks, s.mailbox_limit).map(|()| "mailbox")
    };
    match result {
        Ok(kind) => Status::sent(format!("delivered to {kind}")),
        Err(e) => mailbox::write_error_status(&full.display().to_string(), &e),
    }
}

/// Deliver a request (on a pool thread).
pub fn deliver(s: &VirtualSettings, req: &Request) -> Report {
    Report {
        results: req
            .recipients
            .iter()
            .map(|r| (r.index, deliver_one(s, req, &r.address)))
            .collect(),
        forwards: Vec::new(),
        expanded: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_keys() {
        assert_eq!(
            keys("a+b@d.example", "+"),
            vec!["a+b@d.example", "a@d.example", "@d.example"]
        );
        assert_eq!(keys("a@d.example", "+"), vec!["a@d.example", "@d.example"]);
    }
}
