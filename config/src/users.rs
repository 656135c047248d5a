//! Postfix's user access lists (`authorized_submit_users`,
//! `authorized_mailq_users`, `authorized_flush_users`): a process's real
//! uid is looked up in the password file and its login name ("unknown"
//! when the uid has none) matched against a string list of names,
//! `!name`, `/file/name` and `type:table` elements; the first match
//! decides, and no match (an empty list too) refuses.

use crate::list::match_list_elements;
use crate::tables::TableList;

/// Whether `name` is allowed by `list`.
pub fn user_in_list(list: &str, name: &str) -> Result<bool, String> {
    for element in match_list_elements(list)? {
        let word = element.pattern;
        let hit = if word.contains(':') {
            TableList::open(&word)
                .and_then(|t| t.lookup_first(std::iter::once(name)))
                .map_err(|e| e.to_string())?
                .is_some()
        } else {
            word == name
        };
        if hit {
            return Ok(!element.negated);
        }
    }
    Ok(false)
}

/// The name a list is matched with: the login name of `uid`, or
/// "unknown".
pub fn list_name(uid: u32) -> String {
    login_name(uid).unwrap_or_else(|| "unknown".to_string())
}

/// `authorized_submit_users` (its value in `list`) for the submitter with
/// `uid`: `Err` with Postfix's sendmail/postdrop text when refused. Root
/// is checked like everyone else, as in Postfix.
pub fn may_submit(list: &str, uid: u32) -> Result<(), String> {
    let name = list_name(uid);
    match user_in_list(list, &name) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("User {name}({uid}) is not allowed to submit mail")),
        Err(e) => Err(format!("authorized_submit_users: {e}")),
    }
}

/// `local_login_sender_maps` as Postfix's sendmail and postdrop apply it:
/// the submitter's login name (`uid:N` when the uid has none) is looked
/// up, and the value lists the envelope senders it may use, separated by
/// space or comma: `*` allows any, `<>` (the `null_key`) the null sender,
/// `@domain` any address in that domain, anything else one address. The
/// comparison ignores case and an address extension (`delimiters`, from
/// `recipient_delimiter`). No entry refuses, with Postfix's text.
#[derive(Debug, Clone)]
pub struct SenderLogins {
    maps: String,
    null_key: String,
    delimiters: String,
    /// `maps` opened at the first check and kept: pickup checks every file.
    tables: std::sync::OnceLock<Result<TableList, String>>,
}

impl SenderLogins {
    /// From `local_login_sender_maps`,
    /// `empty_address_local_login_sender_maps_lookup_key` and
    /// `recipient_delimiter`.
    pub fn new(maps: &str, null_key: &str, delimiters: &str) -> SenderLogins {
        SenderLogins {
            maps: maps.trim().to_string(),
            null_key: null_key.trim().to_string(),
            delimiters: delimiters.to_string(),
            tables: std::sync::OnceLock::new(),
        }
    }

    /// From the three parameters as `get` reads them (a service's view, or main.cf's).
    pub fn from_params<E: std::fmt::Display>(
        get: &dyn Fn(&str) -> Result<String, E>,
    ) -> Result<SenderLogins, String> {
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        Ok(SenderLogins::new(
            &text("local_login_sender_maps")?,
            &text("empty_address_local_login_sender_maps_lookup_key")?,
            &text("recipient_delimiter")?,
        ))
    }

    /// Whether the user with `uid` may submit with envelope `sender` (as
    /// given, before qualification).
    pub fn check(&self, uid: u32, sender: &str) -> Result<(), String> {
        if self.maps == "static:*" {
            return Ok(());
        }
        let name = login_name(uid).unwrap_or_else(|| format!("uid:{uid}"));
        let tables = self
            .tables
            .get_or_init(|| TableList::open(&self.maps).map_err(|e| e.to_string()))
            .as_ref()
            .map_err(|e| format!("local_login_sender_maps: {e}"))?;
        let allowed = tables
            .lookup(&name)
            .map_err(|e| format!("local_login_sender_maps: {e}"))?;
        let patterns = allowed.unwrap_or_default();
        let hit = patterns
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|p| !p.is_empty())
            .any(|p| self.matches(p, sender));
        if hit {
            Ok(())
        } else {
            Err(format!(
                "{sender}({uid}): not authorized to use sender='{sender}'"
            ))
        }
    }

    fn matches(&self, pattern: &str, sender: &str) -> bool {
        if pattern == "*" {
            return true;
        }
        if sender.is_empty() {
            return pattern == self.null_key;
        }
        let sender = sender.to_lowercase();
        let pattern = pattern.to_lowercase();
        let stripped = self.without_extension(&sender);
        match pattern.strip_prefix('@') {
            Some(domain) => sender.rsplit_once('@').is_some_and(|(_, d)| d == domain),
            None => pattern == sender || pattern == stripped,
        }
    }

    /// `user+ext@domain` as `user@domain` (any `recipient_delimiter`
    /// character ends the local part's base).
    fn without_extension(&self, address: &str) -> String {
        if self.delimiters.is_empty() {
            return address.to_string();
        }
        let (local, domain) = match address.rsplit_once('@') {
            Some((l, d)) => (l, Some(d)),
            None => (address, None),
        };
        let base = local
            .find(|c: char| self.delimiters.contains(c))
            .filter(|i| *i > 0)
            .map_or(local, |i| &local[..i]);
        match domain {
            Some(d) => format!("{base}@{d}"),
            None => base.to_string(),
        }
    }
}

/// The login name of `uid` from the system's user database.
pub fn login_name(uid: u32) -> Option<String> {
    let mut buf = vec![0u8; 16384];
    // SAFETY: an all-zero passwd is a valid value for getpwuid_r to fill.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: pwd, buf and result are valid for writing, buf's length is
    // passed; on success pw_name points into buf, which outlives its use.
    let rc = unsafe {
        libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() || pwd.pw_name.is_null() {
        return None;
    }
    // SAFETY: pw_name is a NUL-terminated string inside buf.
    let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
    Some(name.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_list_semantics() {
        assert!(user_in_list("static:anyone", "alice").unwrap());
        assert!(user_in_list("alice, bob", "bob").unwrap());
        assert!(!user_in_list("!bob, static:anyone", "bob").unwrap());
        assert!(user_in_list("!bob, static:anyone", "carol").unwrap());
        assert!(!user_in_list("", "root").unwrap());
        assert!(user_in_list("inline:{ carol=1 }", "carol").unwrap());
    }

    /// Each case checked against Postfix 3.7's sendmail as root.
    #[test]
    fn sender_patterns_as_postfix_applies_them() {
        let table = "inline:{ {root=alice@example.org,@example.net,<>} }";
        let plain = SenderLogins::new(table, "<>", "");
        for ok in [
            "alice@example.org",
            "ALICE@example.org",
            "bob@example.net",
            "Bob@EXAMPLE.NET",
            "",
            "@example.net",
        ] {
            assert_eq!(plain.check(0, ok), Ok(()), "{ok}");
        }
        for refused in [
            "alice+x@example.org",
            "bob@example.org",
            "alice",
            "alice@sub.example.net",
        ] {
            assert_eq!(
                plain.check(0, refused),
                Err(format!(
                    "{refused}(0): not authorized to use sender='{refused}'"
                )),
            );
        }
        let delimited = SenderLogins::new(table, "<>", "+");
        assert_eq!(delimited.check(0, "alice+x@example.org"), Ok(()));
        let bare = SenderLogins::new("inline:{ {root=alice} }", "<>", "");
        assert_eq!(bare.check(0, "alice"), Ok(()));
        assert!(bare.check(0, "alice@pf.test.example").is_err());
        assert!(bare.check(0, "").is_err(), "no <> pattern");
        let other = SenderLogins::new("inline:{ {nobody=x} }", "<>", "");
        assert!(other.check(0, "a@b").is_err(), "no entry for root");
        assert_eq!(
            SenderLogins::new("static:*", "<>", "").check(0, "x@y"),
            Ok(())
        );
        let broken = SenderLogins::new("nosuchtype:/x", "<>", "");
        assert!(
            broken
                .check(0, "x@y")
                .unwrap_err()
                .starts_with("local_login_sender_maps: ")
        );
    }

    #[test]
    fn submission_refusal_names_the_user_as_postfix_does() {
        assert_eq!(may_submit("static:anyone", 0), Ok(()));
        assert_eq!(
            may_submit("nobody", 0),
            Err("User root(0) is not allowed to submit mail".to_string())
        );
        assert_eq!(
            may_submit("", 4_000_000_000),
            Err("User unknown(4000000000) is not allowed to submit mail".to_string())
        );
    }
}
