//! The sender-ownership restrictions over `smtpd_sender_login_maps`
//! (a table from MAIL FROM address to the SASL login names that may use
//! it, comma- or space-separated):
//!
//! - `reject_sender_login_mismatch`: both checks below;
//! - `reject_authenticated_sender_login_mismatch`: an authenticated client
//!   must own the sender address (an address nobody owns is refused too);
//! - `reject_unauthenticated_sender_login_mismatch`: an address with an
//!   owner may not be used without logging in;
//! - `reject_known_sender_login_mismatch`: both, but only for addresses the
//!   table knows.
//!
//! Replies and key order as Postfix's: `553 5.7.1 <a@b>: Sender address
//! rejected: not owned by user alice` / `... not logged in`; keys are the
//! address, `user` and `@domain` (virtual(5) order). The null sender is
//! never checked.

use super::super::reply::Reply;
use corepost_config::tables::TableList;
use corepost_config::tables::keys::address_keys;

/// Which of the restrictions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Both,
    Authenticated,
    Unauthenticated,
    Known,
}

impl Check {
    pub fn from_name(name: &str) -> Option<Check> {
        Some(match name {
            "reject_sender_login_mismatch" => Check::Both,
            "reject_authenticated_sender_login_mismatch" => Check::Authenticated,
            "reject_unauthenticated_sender_login_mismatch" => Check::Unauthenticated,
            "reject_known_sender_login_mismatch" => Check::Known,
            _ => return None,
        })
    }
}

/// `Ok(None)` to go on, `Ok(Some(reply))` to reject, `Err` on a table
/// failure.
pub fn check(
    kind: Check,
    maps: &TableList,
    sender: &str,
    login: Option<&str>,
    recipient_delimiter: &str,
) -> Result<Option<Reply>, String> {
    if sender.is_empty() {
        return Ok(None);
    }
    let keys = address_keys(sender, recipient_delimiter, false);
    let owners = maps
        .lookup_first(keys.iter().map(String::as_str))
        .map_err(|e| format!("smtpd_sender_login_maps: table lookup problem: {e}"))?
        .map(|(_, v)| v);
    let owned_by = |user: &str| {
        owners.as_deref().is_some_and(|o| {
            o.split([',', ' ', '\t'])
                .any(|owner| !owner.is_empty() && owner.eq_ignore_ascii_case(user))
        })
    };
    let reject = |why: String| {
        Some(Reply::new(
            553,
            "5.7.1",
            format!("<{sender}>: Sender address rejected: {why}"),
        ))
    };
    let check_authenticated = matches!(kind, Check::Both | Check::Authenticated | Check::Known);
    let check_unauthenticated = matches!(kind, Check::Both | Check::Unauthenticated | Check::Known);
    Ok(match login {
        Some(user) if check_authenticated => {
            if owned_by(user) || (kind == Check::Known && owners.is_none()) {
                None
            } else {
                reject(format!("not owned by user {user}"))
            }
        }
        None if check_unauthenticated && owners.is_some() => reject("not logged in".into()),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        let maps =
            TableList::open("inline:{ alice@example.org=alice, { @shared.example = alice bob } }")
                .unwrap();
        let run = |k, s: &str, l| check(k, &maps, s, l, "+").unwrap().map(|r| r.summary());
        assert_eq!(run(Check::Both, "alice@example.org", Some("alice")), None);
        assert_eq!(
            run(Check::Both, "alice+tag@example.org", Some("alice")),
            None
        );
        assert_eq!(run(Check::Both, "x@shared.example", Some("bob")), None);
        assert_eq!(
            run(Check::Both, "alice@example.org", Some("bob")).unwrap(),
            "553 5.7.1 <alice@example.org>: Sender address rejected: not owned by user bob"
        );
        assert_eq!(
            run(Check::Both, "alice@example.org", None).unwrap(),
            "553 5.7.1 <alice@example.org>: Sender address rejected: not logged in"
        );
        // Unknown address: refused for a logged-in user, except with the "known" variant.
        assert!(run(Check::Both, "who@else.example", Some("bob")).is_some());
        assert_eq!(run(Check::Known, "who@else.example", Some("bob")), None);
        assert_eq!(run(Check::Both, "who@else.example", None), None);
        assert_eq!(
            run(Check::Unauthenticated, "alice@example.org", Some("bob")),
            None
        );
        assert!(run(Check::Authenticated, "alice@example.org", None).is_none());
        assert_eq!(run(Check::Both, "", Some("bob")), None);
    }
}
