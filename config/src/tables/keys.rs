//! The order in which keys are tried against a table — the one place
//! corepost encodes Postfix's key-search orders.
//!
//! A table only answers "what is the value for this key?". Which keys a
//! caller asks, and in which order, is part of Postfix's documented
//! behaviour for each kind of table (virtual(5), canonical(5), access(5));
//! every caller gets its keys from the functions here instead of building
//! them ad hoc, and tries them in order, stopping at the first key any
//! table knows (see [`TableList::lookup_first`](super::TableList::lookup_first)).
//!
//! All keys are lower case, as Postfix folds lookup keys for fixed-case
//! tables. Keys are never empty and never repeated within one result.
//!
//! Address extensions (`user+ext`) are split as Postfix's `split_addr()`
//! does, see [`strip_extension`].

/// The local part without its address extension, or `None` when there is
/// no extension to strip (Postfix's `split_addr()`).
///
/// `recipient_delimiters` is a *set* of characters (the
/// `recipient_delimiter` parameter, e.g. `"+"` or `"+-"`); the extension
/// starts at the first character of the local part that is in the set. An
/// empty set strips nothing. As in Postfix, nothing is stripped when
///
/// * the delimiter is the first character of the local part (`+foo`),
/// * the local part is `postmaster`, `mailer-daemon` or `double-bounce`
///   (the default `double_bounce_sender`; compared case-insensitively),
/// * `-` is a delimiter and the local part starts with `owner-` or ends in
///   `-request` (mailing-list conventions that predate extensions).
pub fn strip_extension<'a>(local: &'a str, recipient_delimiters: &str) -> Option<&'a str> {
    if recipient_delimiters.is_empty() {
        return None;
    }
    for special in ["postmaster", "mailer-daemon", "double-bounce"] {
        if local.eq_ignore_ascii_case(special) {
            return None;
        }
    }
    if recipient_delimiters.contains('-') {
        let lower = local.to_ascii_lowercase();
        if lower.starts_with("owner-") || (lower.len() > 8 && lower.ends_with("-request")) {
            return None;
        }
    }
    match local.find(|c: char| recipient_delimiters.contains(c)) {
        Some(0) | None => None,
        Some(end) => local.get(..end),
    }
}

/// Keys for an email address in a virtual(5) or canonical(5) table.
///
/// virtual(5), "TABLE SEARCH ORDER", and canonical(5) the same: with an
/// extension (`recipient_delimiter`), the lookup order is
///
/// 1. `user+ext@domain`
/// 2. `user@domain`
/// 3. `user+ext` — only when the domain is local (Postfix: when it matches
///    `$myorigin`, `$mydestination`, `$inet_interfaces` or
///    `$proxy_interfaces`; the caller decides and passes `domain_is_local`)
/// 4. `user` — likewise only for a local domain
/// 5. `@domain`
///
/// Without an extension steps 2 and 4 disappear. An address without `@`
/// (or with nothing after it) is a bare local part: only `user+ext`,
/// `user` are tried, whatever `domain_is_local` says. The split is at the
/// *last* `@`, so a quoted local part containing `@` keeps its domain.
pub fn address_keys(
    address: &str,
    recipient_delimiters: &str,
    domain_is_local: bool,
) -> Vec<String> {
    let address = address.to_lowercase();
    let (local, domain) = split_address(&address);
    let base = strip_extension(local, recipient_delimiters);
    let mut keys = Keys::default();
    match domain {
        Some(domain) => {
            keys.push(format!("{local}@{domain}"));
            if let Some(base) = base {
                keys.push(format!("{base}@{domain}"));
            }
            if domain_is_local {
                keys.push(local.to_string());
                if let Some(base) = base {
                    keys.push(base.to_string());
                }
            }
            keys.push(format!("@{domain}"));
        }
        None => {
            keys.push(local.to_string());
            if let Some(base) = base {
                keys.push(base.to_string());
            }
        }
    }
    keys.0
}

/// Keys for an email address in an access(5) table (`check_sender_access`,
/// `check_recipient_access`, …), as Postfix's `check_mail_access()`:
///
/// 1. `user+ext@domain`
/// 2. `user@domain` (when there is an extension)
/// 3. `domain` and its parent domains, see [`domain_keys`]
/// 4. `user+ext@`
/// 5. `user@` (when there is an extension)
///
/// An address without a domain (no `@`, or nothing after it) yields no
/// keys: Postfix logs "no @domain in address" and skips the table. The
/// null sender is the caller's business (`smtpd_null_access_lookup_key`).
pub fn access_keys(
    address: &str,
    parent_domain_matches_subdomains: bool,
    recipient_delimiters: &str,
) -> Vec<String> {
    let address = address.to_lowercase();
    let (local, domain) = split_address(&address);
    let Some(domain) = domain else {
        return Vec::new();
    };
    let base = strip_extension(local, recipient_delimiters);
    let mut keys = Keys::default();
    keys.push(format!("{local}@{domain}"));
    if let Some(base) = base {
        keys.push(format!("{base}@{domain}"));
    }
    for key in domain_keys(domain, parent_domain_matches_subdomains) {
        keys.push(key);
    }
    keys.push(format!("{local}@"));
    if let Some(base) = base {
        keys.push(format!("{base}@"));
    }
    keys.0
}

/// Keys for a domain name in an access(5) table (`check_helo_access`, the
/// domain step of [`access_keys`], the name step of [`client_keys`]), as
/// Postfix's `check_domain_access()`: the name itself, then each parent
/// domain up to and including the top-level label. access(5):
///
/// * with `smtpd_access_maps` listed in `parent_domain_matches_subdomains`
///   (`parent_domain_matches_subdomains = true` here; Postfix's default
///   list includes it), the pattern `example.com` also matches subdomains,
///   so `sub.example.com` tries `sub.example.com`, `example.com`, `com`;
/// * otherwise only the `.domain` form matches subdomains, so it tries
///   `sub.example.com`, `.example.com`, `.com`.
pub fn domain_keys(domain: &str, parent_domain_matches_subdomains: bool) -> Vec<String> {
    let domain = domain.to_lowercase();
    let mut keys = Keys::default();
    keys.push(domain.clone());
    let mut name = domain.as_str();
    // Postfix: next = strchr(name + 1, '.').
    while let Some(dot) = name.get(1..).and_then(|rest| rest.find('.')) {
        let Some(parent) = name.get(dot + 1..) else {
            break;
        };
        name = if parent_domain_matches_subdomains {
            parent.get(1..).unwrap_or_default()
        } else {
            parent
        };
        keys.push(name.to_string());
    }
    keys.0
}

/// Keys for an SMTP client in an access(5) table (`check_client_access`),
/// as Postfix's `check_namadr_access()`:
///
/// 1. the client hostname and its parent domains, see [`domain_keys`]
///    (skipped when `hostname` is empty; Postfix looks up whatever name it
///    has, `unknown` included);
/// 2. the address and its shorter prefixes, cut at the last `.` for IPv4
///    (`1.2.3.4`, `1.2.3`, `1.2`, `1`) or the last `:` for IPv6
///    (`2001:db8::1`, `2001:db8:`, `2001:db8`, `2001` — the text as given,
///    normally the compressed form; empty prefixes are skipped).
pub fn client_keys(
    hostname: &str,
    address: &str,
    parent_domain_matches_subdomains: bool,
) -> Vec<String> {
    let mut keys = Keys::default();
    if !hostname.is_empty() {
        for key in domain_keys(hostname, parent_domain_matches_subdomains) {
            keys.push(key);
        }
    }
    let address = address.to_lowercase();
    let delimiter = if address.contains(':') { ':' } else { '.' };
    let mut prefix = address.as_str();
    loop {
        keys.push(prefix.to_string());
        match prefix.rfind(delimiter) {
            Some(end) => prefix = prefix.get(..end).unwrap_or_default(),
            None => break,
        }
    }
    keys.0
}

/// `(local, Some(domain))`, split at the last `@`; `None` for no domain.
fn split_address(address: &str) -> (&str, Option<&str>) {
    match address.rsplit_once('@') {
        Some((local, domain)) if !domain.is_empty() => (local, Some(domain)),
        Some((local, _)) => (local, None),
        None => (address, None),
    }
}

/// Keys in order, without empties or repeats.
#[derive(Default)]
struct Keys(Vec<String>);

impl Keys {
    fn push(&mut self, key: String) {
        if !key.is_empty() && !self.0.contains(&key) {
            self.0.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn extension_splitting_follows_split_addr() {
        assert_eq!(strip_extension("user+ext", "+"), Some("user"));
        assert_eq!(strip_extension("user+a-b", "+-"), Some("user"));
        assert_eq!(strip_extension("user-a+b", "+-"), Some("user"));
        assert_eq!(strip_extension("user+", "+"), Some("user"));
        assert_eq!(strip_extension("user", "+"), None);
        assert_eq!(strip_extension("user+ext", ""), None);
        assert_eq!(strip_extension("+ext", "+"), None);
        assert_eq!(strip_extension("postmaster+x", "+"), Some("postmaster"));
        assert_eq!(strip_extension("Postmaster", "+"), None);
        assert_eq!(strip_extension("mailer-daemon", "-"), None);
        assert_eq!(strip_extension("owner-list", "-"), None);
        assert_eq!(strip_extension("list-request", "-"), None);
        assert_eq!(strip_extension("list-request", "+"), None);
        assert_eq!(strip_extension("owner-list", "+-"), None);
        assert_eq!(strip_extension("a-b", "-"), Some("a"));
    }

    #[test]
    fn virtual_order_with_extension_and_local_domain() {
        assert_eq!(
            address_keys("User+Ext@Example.COM", "+", true),
            vec![
                "user+ext@example.com",
                "user@example.com",
                "user+ext",
                "user",
                "@example.com"
            ]
        );
    }

    #[test]
    fn virtual_order_for_a_remote_domain_skips_bare_local_parts() {
        assert_eq!(
            address_keys("user+ext@example.com", "+", false),
            vec!["user+ext@example.com", "user@example.com", "@example.com"]
        );
        assert_eq!(
            address_keys("user@example.com", "+", false),
            vec!["user@example.com", "@example.com"]
        );
    }

    #[test]
    fn no_delimiters_means_no_stripping() {
        assert_eq!(
            address_keys("user+ext@example.com", "", true),
            vec!["user+ext@example.com", "user+ext", "@example.com"]
        );
    }

    #[test]
    fn multiple_delimiters() {
        assert_eq!(
            address_keys("user-ext@example.com", "+-", false),
            vec!["user-ext@example.com", "user@example.com", "@example.com"]
        );
    }

    #[test]
    fn address_without_domain_is_a_local_part() {
        assert_eq!(address_keys("User+x", "+", false), vec!["user+x", "user"]);
        assert_eq!(address_keys("user@", "+", true), vec!["user"]);
        assert_eq!(address_keys("", "+", true), Vec::<String>::new());
        assert_eq!(
            address_keys("@example.com", "+", true),
            vec!["@example.com"]
        );
    }

    #[test]
    fn quoted_local_parts_do_not_panic() {
        assert_eq!(
            address_keys("\"a@b+c\"@example.com", "+", false),
            vec!["\"a@b+c\"@example.com", "\"a@b@example.com", "@example.com"]
        );
        assert_eq!(address_keys("\"a b\"", "+", true), vec!["\"a b\""]);
    }

    #[test]
    fn access_order_with_dot_style_parents() {
        assert_eq!(
            access_keys("User+Ext@Mail.Example.com", false, "+"),
            vec![
                "user+ext@mail.example.com",
                "user@mail.example.com",
                "mail.example.com",
                ".example.com",
                ".com",
                "user+ext@",
                "user@"
            ]
        );
    }

    #[test]
    fn access_order_with_parent_style() {
        assert_eq!(
            access_keys("user@mail.example.com", true, "+"),
            vec![
                "user@mail.example.com",
                "mail.example.com",
                "example.com",
                "com",
                "user@"
            ]
        );
    }

    #[test]
    fn access_needs_a_domain() {
        assert!(access_keys("user", true, "+").is_empty());
        assert!(access_keys("user@", true, "+").is_empty());
        assert_eq!(
            access_keys("@example.com", true, "+"),
            vec!["@example.com", "example.com", "com", "@"]
        );
    }

    #[test]
    fn domain_parents() {
        assert_eq!(domain_keys("example", true), vec!["example"]);
        assert_eq!(domain_keys("a.b.c", true), vec!["a.b.c", "b.c", "c"]);
        assert_eq!(domain_keys("a.b.c", false), vec!["a.b.c", ".b.c", ".c"]);
        assert_eq!(domain_keys("a.b.", true), vec!["a.b.", "b."]);
        assert_eq!(domain_keys("a.b.", false), vec!["a.b.", ".b.", "."]);
        assert_eq!(domain_keys(".a", false), vec![".a"]);
        assert!(domain_keys("", true).is_empty());
    }

    #[test]
    fn client_order_ipv4() {
        assert_eq!(
            client_keys("Mail.Example.com", "192.0.2.10", false),
            vec![
                "mail.example.com",
                ".example.com",
                ".com",
                "192.0.2.10",
                "192.0.2",
                "192.0",
                "192"
            ]
        );
        assert_eq!(
            client_keys("", "192.0.2.10", true),
            vec!["192.0.2.10", "192.0.2", "192.0", "192"]
        );
    }

    #[test]
    fn client_order_ipv6() {
        assert_eq!(
            client_keys("host.example", "2001:DB8::1", true),
            vec![
                "host.example",
                "example",
                "2001:db8::1",
                "2001:db8:",
                "2001:db8",
                "2001"
            ]
        );
        assert_eq!(client_keys("", "::1", true), vec!["::1", ":"]);
    }

    proptest! {
        #[test]
        fn key_functions_never_panic_and_produce_clean_keys(
            address in "(?s).{0,40}",
            delimiters in "[-+=@.]{0,3}",
            flag in any::<bool>(),
        ) {
            for keys in [
                address_keys(&address, &delimiters, flag),
                access_keys(&address, flag, &delimiters),
                client_keys(&address, &address, flag),
                domain_keys(&address, flag),
            ] {
                for (i, key) in keys.iter().enumerate() {
                    prop_assert!(!key.is_empty());
                    prop_assert_eq!(key, &key.to_lowercase());
                    prop_assert!(!keys[..i].contains(key));
                }
            }
        }

        /// The full address is always tried first.
        #[test]
        fn full_address_comes_first(
            local in "[a-z]{1,8}(\\+[a-z]{0,4})?",
            domain in "[a-z]{1,8}(\\.[a-z]{1,4}){0,3}",
            flag in any::<bool>(),
        ) {
            let address = format!("{local}@{domain}");
            prop_assert_eq!(&address_keys(&address, "+", flag)[0], &address);
            prop_assert_eq!(&access_keys(&address, flag, "+")[0], &address);
        }
    }
}
