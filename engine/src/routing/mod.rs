//! Address classification and routing — corepost's trivial-rewrite.
//!
//! Every recipient falls into one address class, decided by its domain in
//! this order: local (`mydestination`, or an address literal of this host),
//! virtual alias (`virtual_alias_domains`), virtual mailbox
//! (`virtual_mailbox_domains`), relay (`relay_domains`), else default. The
//! class decides which table says whether the recipient exists
//! ([`Router::check_recipient`]) and which transport delivers it
//! ([`Router::route`]): `transport_maps` first, then the class's
//! `*_transport`, with `relayhost` as next hop for the relay and default
//! classes — Postfix's precedence.

pub mod domain_list;
pub mod qualify;

use corepost_config::ConfigError;
use corepost_config::host::interface_networks;
use corepost_config::tables::keys::{address_keys, domain_keys, strip_extension};
use corepost_config::tables::{TableError, TableList};
pub use domain_list::DomainList;

/// Which address class a recipient domain belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressClass {
    Local,
    VirtualAlias,
    VirtualMailbox,
    Relay,
    Default,
}

impl AddressClass {
    /// Mail to this class is for us (or ours to relay): no relay permission
    /// is needed (Postfix's "authorized destination").
    pub fn is_authorized_destination(self) -> bool {
        self != AddressClass::Default
    }
}

/// Where a recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub class: AddressClass,
    pub transport: String,
    pub nexthop: String,
}

/// The outcome of a recipient existence check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientCheck {
    Known,
    /// Unknown: reply code and the table it was looked up in.
    Unknown {
        code: u16,
        table: &'static str,
    },
}

/// Routing configuration of one service.
#[derive(Debug, Clone)]
pub struct Router {
    myhostname: String,
    local_domains: DomainList,
    virtual_alias_domains: DomainList,
    virtual_mailbox_domains: DomainList,
    relay_domains: DomainList,
    transport_maps: TableList,
    local_recipient_maps: TableList,
    virtual_alias_maps: TableList,
    virtual_mailbox_maps: TableList,
    relay_recipient_maps: TableList,
    local_transport: String,
    virtual_transport: String,
    relay_transport: String,
    default_transport: String,
    relayhost: String,
    recipient_delimiter: String,
    codes: [u16; 4],
}

impl Router {
    /// Build from a parameter source (a service's effective values).
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, ConfigError>,
    ) -> Result<Router, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let parent = s("parent_domain_matches_subdomains")?;
        let parent_list = corepost_config::list::split_list(&parent).unwrap_or_default();
        let pm = |n: &str| parent_list.iter().any(|p| p == n);
        let list = |n: &str| -> Result<DomainList, String> {
            DomainList::parse(&s(n)?, pm(n)).map_err(|e| format!("{n}: {e}"))
        };
        let maps = |n: &str| -> Result<TableList, String> {
            TableList::open(&s(n)?).map_err(|e| format!("{n}: {e}"))
        };
        let code = |n: &str| -> Result<u16, String> {
            s(n)?
                .trim()
                .parse()
                .map_err(|_| format!("{n}: not a reply code"))
        };
        let mut local_domains = list("mydestination")?;
        for interfaces in ["inet_interfaces", "proxy_interfaces"] {
            for (addr, _) in interface_networks(&s(interfaces)?) {
                match addr {
                    std::net::IpAddr::V4(a) => local_domains.push_domain(&format!("[{a}]")),
                    std::net::IpAddr::V6(a) => local_domains.push_domain(&format!("[ipv6:{a}]")),
                }
            }
        }
        Ok(Router {
            myhostname: s("myhostname")?,
            local_domains,
            virtual_alias_domains: list("virtual_alias_domains")?,
            virtual_mailbox_domains: list("virtual_mailbox_domains")?,
            relay_domains: list("relay_domains")?,
            transport_maps: maps("transport_maps")?,
            local_recipient_maps: local_recipient_maps(
                &s("local_recipient_maps")?,
                &s("alias_maps")?,
            )
            .map_err(|e| format!("local_recipient_maps: {e}"))?,
            virtual_alias_maps: maps("virtual_alias_maps")?,
            virtual_mailbox_maps: maps("virtual_mailbox_maps")?,
            relay_recipient_maps: maps("relay_recipient_maps")?,
            local_transport: s("local_transport")?,
            virtual_transport: s("virtual_transport")?,
            relay_transport: s("relay_transport")?,
            default_transport: s("default_transport")?,
            relayhost: s("relayhost")?,
            recipient_delimiter: s("recipient_delimiter")?,
            codes: [
                code("unknown_local_recipient_reject_code")?,
                code("unknown_virtual_alias_reject_code")?,
                code("unknown_virtual_mailbox_reject_code")?,
                code("unknown_relay_recipient_reject_code")?,
            ],
        })
    }

    /// The class of a (lower-case) recipient domain.
    pub fn classify(&self, domain: &str) -> Result<AddressClass, TableError> {
        Ok(if self.local_domains.matches(domain)? {
            AddressClass::Local
        } else if self.virtual_alias_domains.matches(domain)? {
            AddressClass::VirtualAlias
        } else if self.virtual_mailbox_domains.matches(domain)? {
            AddressClass::VirtualMailbox
        } else if self.relay_domains.matches(domain)? {
            AddressClass::Relay
        } else {
            AddressClass::Default
        })
    }

    /// Does the recipient exist in its class's tables?
    pub fn check_recipient(
        &self,
        address: &str,
        class: AddressClass,
    ) -> Result<RecipientCheck, TableError> {
        let alias_keys = address_keys(address, &self.recipient_delimiter, false);
        let is_alias = |s: &Self| -> Result<bool, TableError> {
            Ok(!s.virtual_alias_maps.is_empty()
                && s.virtual_alias_maps
                    .lookup_first(alias_keys.iter().map(String::as_str))?
                    .is_some())
        };
        let (maps, code, table) = match class {
            AddressClass::Default => return Ok(RecipientCheck::Known),
            AddressClass::Local => (
                &self.local_recipient_maps,
                self.codes[0],
                "local recipient table",
            ),
            AddressClass::VirtualAlias => (
                &self.virtual_alias_maps,
                self.codes[1],
                "virtual alias table",
            ),
            AddressClass::VirtualMailbox => (
                &self.virtual_mailbox_maps,
                self.codes[2],
                "virtual mailbox table",
            ),
            AddressClass::Relay => (
                &self.relay_recipient_maps,
                self.codes[3],
                "relay recipient table",
            ),
        };
        if maps.is_empty()
            && class != AddressClass::VirtualAlias
            && class != AddressClass::VirtualMailbox
        {
            return Ok(RecipientCheck::Known); // an empty table disables the check
        }
        let keys = address_keys(
            address,
            &self.recipient_delimiter,
            class == AddressClass::Local,
        );
        if maps
            .lookup_first(keys.iter().map(String::as_str))?
            .is_some()
            || is_alias(self)?
        {
            return Ok(RecipientCheck::Known);
        }
        Ok(RecipientCheck::Unknown { code, table })
    }

    /// Transport and next hop for a recipient.
    pub fn route(&self, address: &str, class: AddressClass) -> Result<Route, TableError> {
        let (local, domain) = split_address(address);
        let (mut transport, mut nexthop) = match class {
            AddressClass::Local => split_transport(&self.local_transport),
            AddressClass::VirtualAlias | AddressClass::VirtualMailbox => {
                split_transport(&self.virtual_transport)
            }
            AddressClass::Relay => split_transport(&self.relay_transport),
            AddressClass::Default => split_transport(&self.default_transport),
        };
        if nexthop.is_empty() {
            nexthop = match class {
                AddressClass::Relay | AddressClass::Default if !self.relayhost.is_empty() => {
                    self.relayhost.clone()
                }
                AddressClass::Local => self.myhostname.clone(),
                _ => domain.to_string(),
            };
        }
        if let Some(found) = self.transport_lookup(local, domain)? {
            let (t, n) = split_transport(&found);
            if !t.is_empty() {
                transport = t;
            }
            if !n.is_empty() {
                nexthop = n;
            }
        }
        Ok(Route {
            class,
            transport,
            nexthop,
        })
    }

    /// transport(5) search order: `user+ext@domain`, `user@domain`,
    /// `domain`, `.parent` domains, `*`.
    fn transport_lookup(&self, local: &str, domain: &str) -> Result<Option<String>, TableError> {
        if self.transport_maps.is_empty() {
            return Ok(None);
        }
        let mut keys = vec![format!("{local}@{domain}")];
        if let Some(base) = strip_extension(local, &self.recipient_delimiter) {
            keys.push(format!("{base}@{domain}"));
        }
        keys.extend(domain_keys(domain, false));
        keys.push("*".to_string());
        Ok(self
            .transport_maps
            .lookup_first(keys.iter().map(String::as_str))?
            .map(|(_, v)| v))
    }
}

/// `user@domain` → (`user`, `domain`).
/// `local_recipient_maps`, where the tables that are also in `alias_maps`
/// (the default `$alias_maps`) are read in the aliases(5) format.
fn local_recipient_maps(list: &str, alias_maps: &str) -> Result<TableList, TableError> {
    let aliases = corepost_config::list::split_list(alias_maps).unwrap_or_default();
    TableList::open_with(list, |spec| {
        if aliases.iter().any(|a| a == spec) {
            corepost_config::tables::open_alias_table(spec)
        } else {
            corepost_config::tables::open_table(spec)
        }
    })
}

pub fn split_address(address: &str) -> (&str, &str) {
    match address.rfind('@') {
        Some(i) => (&address[..i], &address[i + 1..]),
        None => (address, ""),
    }
}

/// `transport:nexthop` → parts (the next hop may contain ':' itself, e.g.
/// `[10.0.0.1]:25`).
fn split_transport(value: &str) -> (String, String) {
    let value = value.trim();
    match value.split_once(':') {
        Some((t, n)) => (t.to_string(), n.to_string()),
        None => (value.to_string(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use corepost_config::Config;

    fn router(main_cf: &str) -> Router {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::from_parts(dir.path(), Some(main_cf), None).unwrap();
        Router::from_params(&|n| config.get(n)).unwrap()
    }

    const BASE: &str = "myhostname = mx.example.com\nmydomain = example.com\nlocal_recipient_maps = inline:{ alice=x, bob=x }\nrecipient_delimiter = +\n";

    #[test]
    fn classes() {
        let r = router(&format!(
            "{BASE}virtual_alias_domains = alias.example\nvirtual_mailbox_domains = mbox.example\nrelay_domains = relay.example\n"
        ));
        assert_eq!(r.classify("mx.example.com").unwrap(), AddressClass::Local);
        assert_eq!(r.classify("localhost").unwrap(), AddressClass::Local);
        assert_eq!(r.classify("[127.0.0.1]").unwrap(), AddressClass::Local);
        assert_eq!(
            r.classify("alias.example").unwrap(),
            AddressClass::VirtualAlias
        );
        assert_eq!(
            r.classify("mbox.example").unwrap(),
            AddressClass::VirtualMailbox
        );
        assert_eq!(r.classify("relay.example").unwrap(), AddressClass::Relay);
        assert_eq!(
            r.classify("sub.relay.example").unwrap(),
            AddressClass::Relay,
            "relay_domains matches subdomains"
        );
        assert_eq!(
            r.classify("elsewhere.example").unwrap(),
            AddressClass::Default
        );
    }

    #[test]
    fn recipient_checks() {
        let r = router(BASE);
        assert_eq!(
            r.check_recipient("alice@mx.example.com", AddressClass::Local)
                .unwrap(),
            RecipientCheck::Known
        );
        assert_eq!(
            r.check_recipient("bob+list@mx.example.com", AddressClass::Local)
                .unwrap(),
            RecipientCheck::Known
        );
        assert_eq!(
            r.check_recipient("carol@mx.example.com", AddressClass::Local)
                .unwrap(),
            RecipientCheck::Unknown {
                code: 550,
                table: "local recipient table"
            }
        );
        assert_eq!(
            r.check_recipient("anyone@gmail.example", AddressClass::Default)
                .unwrap(),
            RecipientCheck::Known
        );
        let r = router(&format!(
            "{BASE}relay_domains = relay.example\nrelay_recipient_maps = inline:{{ ok@relay.example=1 }}\n"
        ));
        assert_eq!(
            r.check_recipient("ok@relay.example", AddressClass::Relay)
                .unwrap(),
            RecipientCheck::Known
        );
        assert!(matches!(
            r.check_recipient("no@relay.example", AddressClass::Relay)
                .unwrap(),
            RecipientCheck::Unknown { .. }
        ));
    }

    #[test]
    fn routes() {
        let r = router(BASE);
        assert_eq!(
            r.route("alice@mx.example.com", AddressClass::Local)
                .unwrap(),
            Route {
                class: AddressClass::Local,
                transport: "local".into(),
                nexthop: "mx.example.com".into()
            }
        );
        let d = r.route("x@gmail.example", AddressClass::Default).unwrap();
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("smtp", "gmail.example")
        );
        let r = router(&format!(
            "{BASE}relayhost = [smarthost.example]:587\nrelay_domains = relay.example\ntransport_maps = inline:{{ special.example=relay:[10.0.0.1]:25, .sub.example=discard:, vip@gmail.example=smtp:[vip.example] }}\n"
        ));
        let d = r.route("x@gmail.example", AddressClass::Default).unwrap();
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("smtp", "[smarthost.example]:587")
        );
        let d = r.route("x@relay.example", AddressClass::Relay).unwrap();
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("relay", "[smarthost.example]:587")
        );
        let d = r.route("x@special.example", AddressClass::Default).unwrap();
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("relay", "[10.0.0.1]:25")
        );
        let d = r.route("x@a.sub.example", AddressClass::Default).unwrap();
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("discard", "[smarthost.example]:587")
        );
        let d = r
            .route("vip+tag@gmail.example", AddressClass::Default)
            .unwrap();
        assert_eq!(
            (d.transport.as_str(), d.nexthop.as_str()),
            ("smtp", "[vip.example]")
        );
    }
}
