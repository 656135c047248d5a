//! Transports main.cf routes mail to that master.cf does not define.
//!
//! A master.cf replaces the built-in one whole: one that defines only an
//! smtpd line leaves `local`, `smtp`, `relay`... undefined, and mail routed
//! to them is deferred ("mail transport unavailable: no master.cf service
//! ..."), kept in the queue but never delivered. Postfix does not check
//! this either (its qmgr defers the same way); corepost warns in `check`
//! and at start, naming the parameter that routes there. The starting
//! point for a master.cf of one's own is `corepost config -M > master.cf`.

use crate::config::Config;
use crate::mastercf::ServiceType;

/// The transport part of a `transport:nexthop` value (`None` when empty:
/// "the default transport").
fn transport_of(value: &str) -> Option<&str> {
    let value = value.trim();
    let transport = value.split_once(':').map_or(value, |(t, _)| t).trim();
    (!transport.is_empty()).then_some(transport)
}

/// Each (transport, where it comes from) that main.cf can route mail to.
fn routed_transports(config: &Config) -> Vec<(String, String)> {
    let get = |n: &str| config.get(n).unwrap_or_default();
    let nonempty = |n: &str| !get(n).trim().is_empty();
    let mut used: Vec<(&str, bool)> = vec![
        ("default_transport", true),
        ("local_transport", nonempty("mydestination")),
        ("relay_transport", nonempty("relay_domains")),
        ("virtual_transport", nonempty("virtual_mailbox_domains")),
        ("mailbox_transport", true),
        ("fallback_transport", true),
    ];
    used.retain(|(_, in_use)| *in_use);
    let mut found: Vec<(String, String)> = used
        .into_iter()
        .filter_map(|(name, _)| {
            transport_of(&get(name)).map(|t| (t.to_string(), format!("parameter {name}")))
        })
        .collect();
    for maps in ["transport_maps", "sender_dependent_default_transport_maps"] {
        for spec in crate::list::split_list(&get(maps)).unwrap_or_default() {
            // A table that does not open is reported by the table checks.
            let Ok(table) = crate::tables::open_table(&spec) else {
                continue;
            };
            let mut values = table.values().unwrap_or_default();
            values.sort();
            values.dedup();
            for value in values {
                if let Some(t) = transport_of(&value) {
                    found.push((t.to_string(), format!("{maps} {spec}")));
                }
            }
        }
    }
    found
}

/// A warning for each transport mail can be routed to that has no `unix`
/// service in master.cf.
pub fn missing_transports(config: &Config) -> Vec<String> {
    let defined = |name: &str| {
        config
            .master
            .services
            .iter()
            .any(|s| s.kind == ServiceType::Unix && s.name == name)
    };
    let mut warnings = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (transport, source) in routed_transports(config) {
        if defined(&transport) || !seen.insert(transport.clone()) {
            continue;
        }
        warnings.push(format!(
            "{}: transport \"{transport}\" (from {source}) has no master.cf entry; mail routed there will be deferred (`corepost config -M` prints the built-in master.cf to start from)",
            config.master.path.display()
        ));
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(main: &str, master: &str) -> Config {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("main.cf"), main).unwrap();
        std::fs::write(dir.path().join("master.cf"), master).unwrap();
        Config::load(dir.path()).unwrap()
    }

    #[test]
    fn an_smtpd_only_master_cf_lacks_smtp_and_local() {
        let config = load("", "2525 inet n - n - - smtpd\n");
        let w = missing_transports(&config);
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("transport \"smtp\" (from parameter default_transport) has no master.cf entry; mail routed there will be deferred"), "{w:?}");
        assert!(
            w[1].contains("transport \"local\" (from parameter local_transport)"),
            "{w:?}"
        );
        // An inet service of that name is not the transport.
        let config = load(
            "",
            "smtp inet n - n - - smtpd\nlocal unix - n n - - local\n",
        );
        assert_eq!(missing_transports(&config).len(), 1);
        let config = load("", crate::config::BUILTIN_MASTER_CF);
        assert!(missing_transports(&config).is_empty());
    }

    #[test]
    fn transports_in_use_and_from_tables() {
        let base =
            "2525 inet n - n - - smtpd\nsmtp unix - - n - - smtp\nlocal unix - n n - - local\n";
        assert!(missing_transports(&load("", base)).is_empty());
        // relay and virtual only when their classes have domains.
        let w = missing_transports(&load(
            "relay_domains = r.example\nvirtual_mailbox_domains = v.example\nmailbox_transport = lmtp:unix:/x\n",
            base,
        ));
        assert_eq!(w.len(), 3, "{w:?}");
        let w = missing_transports(&load(
            "transport_maps = inline:{ a.example=uucp:host, b.example=:[relay], c.example=smtp:[x] }\n",
            base,
        ));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("transport \"uucp\" (from transport_maps inline:{"),
            "{w:?}"
        );
        assert_eq!(transport_of("local:mx.example"), Some("local"));
        assert_eq!(transport_of(":[relay]"), None);
        assert_eq!(transport_of("error"), Some("error"));
    }
}
