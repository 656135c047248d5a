//! The TLS security level in force when `smtpd_tls_security_level`,
//! `smtp_tls_security_level` or `lmtp_tls_security_level` is empty (their
//! default): Postfix then honours the obsolete booleans that preceded them,
//! still common in old main.cf files.
//!
//! - server: `smtpd_enforce_tls = yes` is `encrypt`, else
//!   `smtpd_use_tls = yes` is `may`;
//! - client: `smtp_enforce_tls = yes` is `verify` (the server's name must
//!   match its certificate) unless `smtp_tls_enforce_peername = no`, which
//!   makes it `encrypt`; else `smtp_use_tls = yes` is `may`. LMTP reads its
//!   own `lmtp_` twins.
//!
//! A level that is set wins over the booleans, as in Postfix.

use crate::value::parse_bool;

/// Which program's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsSide {
    Smtpd,
    Smtp,
    Lmtp,
}

/// The effective level's text ("" for none) from `get`, which reads one
/// parameter (a service's view, with its `-o` overrides).
pub fn effective_level(
    get: &dyn Fn(&str) -> Result<String, String>,
    side: TlsSide,
) -> Result<String, String> {
    let names = match side {
        TlsSide::Smtpd => [
            "smtpd_tls_security_level",
            "smtpd_enforce_tls",
            "smtpd_use_tls",
            "",
        ],
        TlsSide::Smtp => [
            "smtp_tls_security_level",
            "smtp_enforce_tls",
            "smtp_use_tls",
            "smtp_tls_enforce_peername",
        ],
        TlsSide::Lmtp => [
            "lmtp_tls_security_level",
            "lmtp_enforce_tls",
            "lmtp_use_tls",
            "lmtp_tls_enforce_peername",
        ],
    };
    let [level, enforce, use_tls, peername] = names;
    let set = get(level)?;
    if !set.trim().is_empty() {
        return Ok(set);
    }
    let flag = |name: &str| get(name).map(|v| parse_bool(&v).unwrap_or(false));
    Ok(if flag(enforce)? {
        if !peername.is_empty() && flag(peername)? {
            "verify"
        } else {
            "encrypt"
        }
    } else if flag(use_tls)? {
        "may"
    } else {
        ""
    }
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn level(side: TlsSide, set: &[(&str, &str)]) -> String {
        let mut values: HashMap<&str, &str> = [
            ("smtpd_tls_security_level", ""),
            ("smtpd_enforce_tls", "no"),
            ("smtpd_use_tls", "no"),
            ("smtp_tls_security_level", ""),
            ("smtp_enforce_tls", "no"),
            ("smtp_use_tls", "no"),
            ("smtp_tls_enforce_peername", "yes"),
            ("lmtp_tls_security_level", ""),
            ("lmtp_enforce_tls", "no"),
            ("lmtp_use_tls", "no"),
            ("lmtp_tls_enforce_peername", "yes"),
        ]
        .into_iter()
        .collect();
        values.extend(set.iter().copied());
        effective_level(&|n| Ok(values[n].to_string()), side).unwrap()
    }

    #[test]
    fn the_obsolete_booleans_as_postfix_reads_them() {
        assert_eq!(level(TlsSide::Smtpd, &[]), "");
        assert_eq!(level(TlsSide::Smtpd, &[("smtpd_use_tls", "yes")]), "may");
        assert_eq!(
            level(TlsSide::Smtpd, &[("smtpd_enforce_tls", "yes")]),
            "encrypt"
        );
        assert_eq!(level(TlsSide::Smtp, &[("smtp_use_tls", "yes")]), "may");
        assert_eq!(
            level(TlsSide::Smtp, &[("smtp_enforce_tls", "yes")]),
            "verify"
        );
        assert_eq!(
            level(
                TlsSide::Smtp,
                &[
                    ("smtp_enforce_tls", "yes"),
                    ("smtp_tls_enforce_peername", "no")
                ]
            ),
            "encrypt"
        );
        assert_eq!(level(TlsSide::Lmtp, &[("lmtp_use_tls", "yes")]), "may");
        // A level that is set wins.
        assert_eq!(
            level(
                TlsSide::Smtpd,
                &[
                    ("smtpd_tls_security_level", "none"),
                    ("smtpd_enforce_tls", "yes")
                ]
            ),
            "none"
        );
    }
}
