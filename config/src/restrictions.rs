//! Restriction lists: the syntax of `smtpd_*_restrictions` values.
//!
//! A restriction list is a list (commas and/or whitespace) of restriction
//! names, some followed by one argument: a lookup table
//! (`check_sender_access hash:/etc/corepost/access`), a DNS list domain
//! (`reject_rbl_client zen.example.org`), a policy service endpoint or a
//! number. Names declared in `smtpd_restriction_classes` are restrictions
//! too. This module only parses and validates; smtpd evaluates.

use std::fmt;

/// What follows a restriction name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argument {
    None,
    /// A lookup table `type:name`.
    Table,
    /// A DNS list domain, optionally `=d.d.d.d` filtered.
    DnsList,
    /// A policy service endpoint (`inet:host:port` or `unix:path`).
    Service,
    /// A number of seconds.
    Seconds,
}

/// Every restriction smtpd knows, with its argument.
pub const RESTRICTIONS: &[(&str, Argument)] = &[
    // Generic
    ("permit", Argument::None),
    ("reject", Argument::None),
    ("defer", Argument::None),
    ("defer_if_permit", Argument::None),
    ("defer_if_reject", Argument::None),
    ("warn_if_reject", Argument::None),
    ("reject_unauth_pipelining", Argument::None),
    ("sleep", Argument::Seconds),
    ("check_policy_service", Argument::Service),
    // Client
    ("permit_mynetworks", Argument::None),
    ("permit_inet_interfaces", Argument::None),
    ("permit_sasl_authenticated", Argument::None),
    ("permit_tls_clientcerts", Argument::None),
    ("permit_tls_all_clientcerts", Argument::None),
    ("reject_unknown_client_hostname", Argument::None),
    ("reject_unknown_reverse_client_hostname", Argument::None),
    ("reject_plaintext_session", Argument::None),
    ("check_client_access", Argument::Table),
    ("check_reverse_client_hostname_access", Argument::Table),
    ("check_client_a_access", Argument::Table),
    ("check_client_mx_access", Argument::Table),
    ("check_client_ns_access", Argument::Table),
    ("check_ccert_access", Argument::Table),
    ("check_sasl_access", Argument::Table),
    ("reject_rbl_client", Argument::DnsList),
    ("reject_rhsbl_client", Argument::DnsList),
    ("reject_rhsbl_reverse_client", Argument::DnsList),
    ("permit_dnswl_client", Argument::DnsList),
    ("permit_rhswl_client", Argument::DnsList),
    // HELO
    ("reject_invalid_helo_hostname", Argument::None),
    ("reject_non_fqdn_helo_hostname", Argument::None),
    ("reject_unknown_helo_hostname", Argument::None),
    ("check_helo_access", Argument::Table),
    ("check_helo_a_access", Argument::Table),
    ("check_helo_mx_access", Argument::Table),
    ("check_helo_ns_access", Argument::Table),
    ("reject_rhsbl_helo", Argument::DnsList),
    // Sender
    ("reject_non_fqdn_sender", Argument::None),
    ("reject_unknown_sender_domain", Argument::None),
    ("reject_unlisted_sender", Argument::None),
    ("reject_unverified_sender", Argument::None),
    ("reject_sender_login_mismatch", Argument::None),
    ("reject_authenticated_sender_login_mismatch", Argument::None),
    (
        "reject_unauthenticated_sender_login_mismatch",
        Argument::None,
    ),
    ("reject_known_sender_login_mismatch", Argument::None),
    ("check_sender_access", Argument::Table),
    ("check_sender_a_access", Argument::Table),
    ("check_sender_mx_access", Argument::Table),
    ("check_sender_ns_access", Argument::Table),
    ("reject_rhsbl_sender", Argument::DnsList),
    // Recipient and relay
    ("permit_auth_destination", Argument::None),
    ("permit_mx_backup", Argument::None),
    ("reject_unauth_destination", Argument::None),
    ("defer_unauth_destination", Argument::None),
    ("reject_non_fqdn_recipient", Argument::None),
    ("reject_unknown_recipient_domain", Argument::None),
    ("reject_unlisted_recipient", Argument::None),
    ("reject_unverified_recipient", Argument::None),
    ("reject_multi_recipient_bounce", Argument::None),
    ("check_recipient_access", Argument::Table),
    ("check_recipient_a_access", Argument::Table),
    ("check_recipient_mx_access", Argument::Table),
    ("check_recipient_ns_access", Argument::Table),
    ("reject_rhsbl_recipient", Argument::DnsList),
];

/// One parsed restriction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    pub name: String,
    pub argument: Option<String>,
}

impl fmt::Display for Restriction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.argument {
            Some(arg) => write!(f, "{} {}", self.name, arg),
            None => f.write_str(&self.name),
        }
    }
}

/// The argument a restriction takes, if `name` is a built-in restriction.
pub fn argument_of(name: &str) -> Option<Argument> {
    RESTRICTIONS
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, a)| *a)
}

/// Parse a restriction list. `classes` are the user-defined restriction
/// class names (from `smtpd_restriction_classes`).
pub fn parse_restrictions(value: &str, classes: &[String]) -> Result<Vec<Restriction>, String> {
    let words = crate::list::split_list(value).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    let mut words = words.into_iter();
    while let Some(word) = words.next() {
        let name = word.to_ascii_lowercase();
        let argument = match argument_of(&name) {
            Some(Argument::None) => None,
            Some(kind) => {
                let arg = words.next().ok_or_else(|| {
                    format!("restriction {name} needs an argument ({})", describe(kind))
                })?;
                check_argument(&name, kind, &arg)?;
                Some(arg)
            }
            None if classes.iter().any(|c| c.eq_ignore_ascii_case(&name)) => None,
            None => {
                return Err(format!(
                    "unknown restriction \"{word}\" (not a built-in restriction nor a name in smtpd_restriction_classes)"
                ));
            }
        };
        out.push(Restriction { name, argument });
    }
    Ok(out)
}

fn describe(kind: Argument) -> &'static str {
    match kind {
        Argument::None => "nothing",
        Argument::Table => "a lookup table type:name",
        Argument::DnsList => "a DNS list domain",
        Argument::Service => "a service endpoint such as inet:127.0.0.1:9998",
        Argument::Seconds => "a number of seconds",
    }
}

fn check_argument(name: &str, kind: Argument, arg: &str) -> Result<(), String> {
    let ok = match kind {
        Argument::None => true,
        Argument::Table | Argument::Service => arg
            .split_once(':')
            .is_some_and(|(t, n)| !t.is_empty() && !n.is_empty()),
        Argument::DnsList => {
            let domain = arg.split('=').next().unwrap_or("");
            !domain.is_empty() && !domain.contains(':') && argument_of(domain).is_none()
        }
        Argument::Seconds => arg.parse::<u32>().is_ok(),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "restriction {name}: bad argument \"{arg}\" (expected {})",
            describe(kind)
        ))
    }
}

/// The lookup tables a restriction list refers to (for `corepost check`).
pub fn tables_of(list: &[Restriction]) -> impl Iterator<Item = &str> {
    list.iter()
        .filter(|r| argument_of(&r.name) == Some(Argument::Table))
        .filter_map(|r| r.argument.as_deref())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_arguments() {
        let list = parse_restrictions(
            "permit_mynetworks, check_sender_access hash:/etc/corepost/access,\n reject_rbl_client zen.example.org=127.0.0.2 check_policy_service inet:127.0.0.1:9998, sleep 1, my_class, reject",
            &["my_class".to_string()],
        )
        .unwrap();
        let text: Vec<String> = list.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            vec![
                "permit_mynetworks",
                "check_sender_access hash:/etc/corepost/access",
                "reject_rbl_client zen.example.org=127.0.0.2",
                "check_policy_service inet:127.0.0.1:9998",
                "sleep 1",
                "my_class",
                "reject",
            ]
        );
        assert_eq!(
            tables_of(&list).collect::<Vec<_>>(),
            vec!["hash:/etc/corepost/access"]
        );
    }

    #[test]
    fn errors() {
        let err = parse_restrictions("permit_mynetwork", &[]).unwrap_err();
        assert!(
            err.contains("unknown restriction \"permit_mynetwork\""),
            "{err}"
        );
        let err = parse_restrictions("check_client_access", &[]).unwrap_err();
        assert!(err.contains("needs an argument"), "{err}");
        let err = parse_restrictions("check_client_access reject", &[]).unwrap_err();
        assert!(err.contains("bad argument \"reject\""), "{err}");
        let err = parse_restrictions("reject_rbl_client permit", &[]).unwrap_err();
        assert!(err.contains("bad argument"), "{err}");
        let err = parse_restrictions("sleep x", &[]).unwrap_err();
        assert!(err.contains("bad argument"), "{err}");
    }

    #[test]
    fn postfix_default_relay_restrictions_parse() {
        let list = parse_restrictions(
            "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
            &[],
        )
        .unwrap();
        assert_eq!(list.len(), 3);
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "[ -~\n]{0,80}") {
            let _ = parse_restrictions(&s, &[]);
        }
    }
}
