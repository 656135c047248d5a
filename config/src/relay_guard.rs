//! Postfix's refusal to run as an open relay.
//!
//! Postfix's smtpd (`smtpd_check_init` in `smtpd_check.c`) exits with
//! "fatal: in parameter smtpd_relay_restrictions or
//! smtpd_recipient_restrictions, specify at least one working instance of:
//! ..." when neither list contains a restriction that can refuse a relay
//! attempt. The lists are searched word by word, descending into
//! user-defined restriction classes (a class named in a list counts by its
//! content); a restriction preceded by `warn_if_reject` does not count,
//! because it only logs. Postfix checks each smtpd process with its own
//! `-o` overrides; so does [`open_relay_errors`], for every smtpd service of
//! master.cf.

use crate::config::{Config, ServiceConfig};
use crate::restrictions::parse_restrictions;
use std::collections::HashSet;

/// The restrictions that make a relay policy safe, in Postfix's order.
pub const RELAY_REQUIRED: &[&str] = &[
    "reject_unauth_destination",
    "defer_unauth_destination",
    "reject",
    "defer",
    "defer_if_permit",
    "check_relay_domains",
];

/// Postfix's message, word for word.
pub fn relay_required_message() -> String {
    let (last, rest) = RELAY_REQUIRED.split_last().unwrap_or((&"", &[]));
    format!(
        "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: {} or {last}",
        rest.join(", ")
    )
}

/// One error per smtpd service whose effective relay and recipient
/// restrictions cannot refuse relaying.
pub fn open_relay_errors(config: &Config) -> Vec<String> {
    config
        .services()
        .filter(|s| s.service.command == "smtpd")
        .filter(|s| !service_refuses_relay(s))
        .map(|s| {
            format!(
                "{}, line {}: service {}: {}",
                config.master.path.display(),
                s.service.line,
                s.service.id(),
                relay_required_message()
            )
        })
        .collect()
}

/// Whether this service's lists contain a working relay refusal. Values
/// that do not expand or parse are reported by the value checks; here they
/// simply do not count.
fn service_refuses_relay(service: &ServiceConfig<'_>) -> bool {
    let classes = service
        .get_list("smtpd_restriction_classes")
        .unwrap_or_default();
    let class_value = |name: &str| service.get(name).ok();
    ["smtpd_relay_restrictions", "smtpd_recipient_restrictions"]
        .iter()
        .any(|list| {
            service.get(list).is_ok_and(|value| {
                has_required(&value, &classes, &class_value, &mut HashSet::new())
            })
        })
}

/// Postfix's `has_required`: the list, or a class it names, contains one
/// of [`RELAY_REQUIRED`] not disarmed by `warn_if_reject`. `seen` guards
/// against classes that name each other.
fn has_required(
    value: &str,
    classes: &[String],
    class_value: &dyn Fn(&str) -> Option<String>,
    seen: &mut HashSet<String>,
) -> bool {
    let Ok(list) = parse_restrictions(value, classes) else {
        return false;
    };
    let mut items = list.iter();
    while let Some(item) = items.next() {
        if item.name == "warn_if_reject" {
            items.next();
            continue;
        }
        if RELAY_REQUIRED.contains(&item.name.as_str()) {
            return true;
        }
        let is_class = classes.iter().any(|c| c.eq_ignore_ascii_case(&item.name));
        if is_class
            && seen.insert(item.name.clone())
            && class_value(&item.name).is_some_and(|v| has_required(&v, classes, class_value, seen))
        {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MASTER: &str = "2525 inet n - n - - smtpd\n";

    fn errors(main: &str, master: &str) -> Vec<String> {
        let config =
            Config::from_parts(Path::new("/etc/corepost"), Some(main), Some(master)).unwrap();
        open_relay_errors(&config)
    }

    #[test]
    fn the_message_is_postfix_s() {
        assert_eq!(
            relay_required_message(),
            "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, specify at least one working instance of: reject_unauth_destination, defer_unauth_destination, reject, defer, defer_if_permit or check_relay_domains"
        );
    }

    #[test]
    fn permit_in_both_lists_is_an_open_relay() {
        let e = errors(
            "smtpd_relay_restrictions = permit\nsmtpd_recipient_restrictions = permit\n",
            MASTER,
        );
        assert_eq!(
            e,
            vec![format!(
                "/etc/corepost/master.cf, line 1: service 2525/inet: {}",
                relay_required_message()
            )]
        );
    }

    #[test]
    fn defaults_and_either_list_are_safe() {
        assert!(errors("", MASTER).is_empty());
        assert!(
            errors(
                "smtpd_relay_restrictions =\nsmtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
                MASTER
            )
            .is_empty()
        );
        for word in RELAY_REQUIRED
            .iter()
            .filter(|w| **w != "check_relay_domains")
        {
            assert!(
                errors(
                    &format!("smtpd_relay_restrictions = permit_mynetworks, {word}\n"),
                    MASTER
                )
                .is_empty(),
                "{word}"
            );
        }
    }

    #[test]
    fn warn_if_reject_disarms_and_classes_count_by_content() {
        let open = "smtpd_relay_restrictions = permit_mynetworks, warn_if_reject reject_unauth_destination\n";
        assert_eq!(errors(open, MASTER).len(), 1);
        let class = "smtpd_restriction_classes = strict, loose\nstrict = reject_unauth_destination\nloose = permit\n";
        assert!(
            errors(
                &format!("{class}smtpd_relay_restrictions = permit_mynetworks, strict\n"),
                MASTER
            )
            .is_empty()
        );
        assert_eq!(
            errors(
                &format!("{class}smtpd_relay_restrictions = permit_mynetworks, loose\n"),
                MASTER
            )
            .len(),
            1
        );
        // Classes naming each other end.
        let cycle =
            "smtpd_restriction_classes = a, b\na = b\nb = a\nsmtpd_relay_restrictions = a\n";
        assert_eq!(errors(cycle, MASTER).len(), 1);
    }

    #[test]
    fn each_smtpd_service_is_checked_with_its_overrides() {
        let master = "2525 inet n - n - - smtpd\n2526 inet n - n - - smtpd -o smtpd_relay_restrictions=permit\n127.0.0.1:10025 inet n - n - - smtpd -o smtpd_relay_restrictions=permit -o smtpd_recipient_restrictions=permit_mynetworks,reject\nsmtp unix - - n - - smtp\n";
        let e = errors("", master);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].contains("line 2: service 2526/inet: in parameter"),
            "{e:?}"
        );
    }
}
