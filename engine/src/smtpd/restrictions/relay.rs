//! Relay resolution and recipient-table checks the restrictions use:
//! Postfix's trivial-rewrite view of sender-specified routing
//! (`user%host@local`) and `reject_unlisted_{sender,recipient}`.

use super::*;

/// The class of a recipient's effective destination, and whether it uses
/// sender-specified routing — Postfix's trivial-rewrite resolution that
/// `reject_unauth_destination` looks at. A local domain is stripped and the
/// local part resolved again (`user%foreign@local`, `"user@foreign"@local`,
/// `foreign!user@local` all end up at `foreign`); any other destination
/// with `%`, `!` or `@` in its local part is "routed".
pub fn relay_class(
    router: &Router,
    address: &str,
    class: AddressClass,
) -> Result<(AddressClass, bool), corepost_config::tables::TableError> {
    let mut class = class;
    let mut address = address.to_string();
    for _ in 0..8 {
        let (local, _) = crate::routing::split_address(&address);
        let local = unquote(local);
        let has_route = local.contains(['@', '%', '!']);
        if !has_route {
            return Ok((class, false));
        }
        if class != AddressClass::Local {
            return Ok((class, true));
        }
        // Strip the local domain and resolve what the local part names.
        let inner = if local.contains('@') {
            local.clone()
        } else if let Some((host, user)) = local.split_once('!') {
            format!("{user}@{host}")
        } else if let Some(pct) = local.rfind('%') {
            format!("{}@{}", &local[..pct], &local[pct + 1..])
        } else {
            return Ok((class, false));
        };
        let (_, domain) = crate::routing::split_address(&inner);
        class = router.classify(&domain.to_ascii_lowercase())?;
        address = inner;
    }
    Ok((AddressClass::Default, true))
}

pub(super) fn unquote(local: &str) -> String {
    let Some(inner) = local.strip_prefix('"').and_then(|l| l.strip_suffix('"')) else {
        return local.to_string();
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        out.push(if c == '\\' {
            chars.next().unwrap_or(c)
        } else {
            c
        });
    }
    out
}

/// Whether `address` is in a local or virtual domain but unknown to its
/// class's recipient table (`reject_unlisted_{sender,recipient}`): the
/// reply code and table name. Lookup trouble counts as listed here; the
/// recipient check after the restrictions reports it.
pub fn unlisted(router: &Router, address: &str) -> Option<(u16, &'static str)> {
    let (_, domain) = crate::routing::split_address(address);
    let class = router.classify(&domain.to_ascii_lowercase()).ok()?;
    match router.check_recipient(address, class).ok()? {
        crate::routing::RecipientCheck::Unknown { code, table } => Some((code, table)),
        crate::routing::RecipientCheck::Known => None,
    }
}

pub(super) fn unlisted_reply(f: &Facts<'_>, sender: bool) -> Option<Reply> {
    let (address, found, class, dsn) = if sender {
        (f.sender?, f.sender_unlisted?, "Sender address", "5.1.0")
    } else {
        (
            f.recipient?,
            f.recipient_unlisted?,
            "Recipient address",
            "5.1.1",
        )
    };
    let (code, table) = found;
    Some(Reply::new(
        code,
        if code >= 500 {
            dsn
        } else if sender {
            "4.1.0"
        } else {
            "4.1.1"
        },
        format!("<{address}>: {class} rejected: User unknown in {table}"),
    ))
}
