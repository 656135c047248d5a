//! Address rewriting — the address mapping of Postfix's cleanup(8), shared
//! by smtpd and pickup so both queue the same envelope for the same input.
//!
//! Before a message is queued its envelope sender goes through
//! `sender_canonical_maps` then `canonical_maps`, each recipient through
//! `recipient_canonical_maps` then `canonical_maps` (as far as
//! `*canonical_classes` allow), and then through `virtual_alias_maps`:
//! one-to-many and recursive, bounded by `virtual_alias_recursion_limit`
//! and `virtual_alias_expansion_limit` (cleanup_map1n.c). Every rewritten
//! recipient keeps the address as received ([`Recipient::original`]),
//! which the delivery log shows as `orig_to=<...>`.
//!
//! Lookups follow virtual(5)/canonical(5): `user+ext@domain`,
//! `user@domain`, `user+ext` and `user` (only for a local domain: this
//! host's, or `$myorigin`), `@domain`. A match found without the extension
//! gets it back when `propagate_unmatched_extensions` names the table's
//! kind; a result `@other` keeps the local part.
//!
//! With no map configured [`Rewriter::is_active`] is false and the callers
//! skip all of this: relaying pays one boolean test per message.

pub mod headers;

use crate::routing::{AddressClass, Router, split_address};
use corepost_config::ConfigError;
use corepost_config::tables::keys::{address_keys, strip_extension};
use corepost_config::tables::{TableError, TableList};
use corepost_spool::Recipient;

/// Postfix's `MAX_RECURSION` for canonical (one-to-one) mapping.
const CANONICAL_DEPTH: usize = 10;

/// Which addresses a canonical table applies to (`*_canonical_classes`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Classes {
    pub envelope_sender: bool,
    pub envelope_recipient: bool,
    pub header_sender: bool,
    pub header_recipient: bool,
}

impl Classes {
    fn parse(name: &str, value: &str) -> Result<Classes, String> {
        let mut c = Classes::default();
        for word in corepost_config::list::split_list(value).unwrap_or_default() {
            match word.to_ascii_lowercase().as_str() {
                "envelope_sender" => c.envelope_sender = true,
                "envelope_recipient" => c.envelope_recipient = true,
                "header_sender" => c.header_sender = true,
                "header_recipient" => c.header_recipient = true,
                other => return Err(format!("{name}: unknown address class \"{other}\"")),
            }
        }
        Ok(c)
    }
}

/// A canonical table and the classes it applies to.
#[derive(Debug, Clone, Default)]
struct Canonical {
    maps: TableList,
    classes: Classes,
}

/// Why rewriting could not finish; the message is not accepted (4xx).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RewriteError {
    /// A table failed to answer.
    Lookup(String),
    /// A virtual alias limit was hit: the warning to log (without the
    /// queue id prefix) — Postfix answers `451 4.6.0 Alias expansion error`.
    Limit(String),
}

impl From<TableError> for RewriteError {
    fn from(e: TableError) -> Self {
        RewriteError::Lookup(e.to_string())
    }
}

/// The address-rewriting settings of one service.
#[derive(Debug, Clone, Default)]
pub struct Rewriter {
    virtual_alias_maps: TableList,
    /// sender_canonical_maps, then canonical_maps.
    sender: [Canonical; 2],
    /// recipient_canonical_maps, then canonical_maps.
    recipient: [Canonical; 2],
    /// masquerade_domains (`!domain` excludes), masquerade_exceptions
    /// (local parts never masqueraded) and masquerade_classes.
    masquerade_domains: Vec<String>,
    masquerade_exceptions: Vec<String>,
    masquerade_classes: Classes,
    recursion_limit: usize,
    expansion_limit: usize,
    propagate_virtual: bool,
    propagate_canonical: bool,
    delimiter: String,
    myorigin: String,
    /// cleanup's automatic blind copies: `always_bcc`, `sender_bcc_maps`
    /// (keyed by the rewritten sender) and `recipient_bcc_maps` (by each
    /// recipient after canonical mapping).
    bcc: AutoBcc,
    active: bool,
}

/// Where cleanup adds blind-copy recipients.
#[derive(Debug, Clone, Default)]
struct AutoBcc {
    always: String,
    sender_maps: TableList,
    recipient_maps: TableList,
}

impl AutoBcc {
    fn is_empty(&self) -> bool {
        self.always.is_empty() && self.sender_maps.is_empty() && self.recipient_maps.is_empty()
    }
}

impl Rewriter {
    /// Build from a service's effective parameters.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, ConfigError>,
    ) -> Result<Rewriter, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let maps = |n: &str| TableList::open(&s(n)?).map_err(|e| format!("{n}: {e}"));
        let classes = |n: &str| Classes::parse(n, &s(n)?);
        let limit = |n: &str| -> Result<usize, String> {
            let v = s(n)?;
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("{n}: bad number \"{v}\""))
        };
        let mut propagate = (false, false);
        for word in corepost_config::list::split_list(&s("propagate_unmatched_extensions")?)
            .unwrap_or_default()
        {
            match word.to_ascii_lowercase().as_str() {
                "canonical" => propagate.0 = true,
                "virtual" => propagate.1 = true,
                // alias, forward, include: the local agent's business.
                _ => {}
            }
        }
        let common = classes("canonical_classes")?;
        let canonical = maps("canonical_maps")?;
        let sender = [
            Canonical {
                maps: maps("sender_canonical_maps")?,
                classes: classes("sender_canonical_classes")?,
            },
            Canonical {
                maps: canonical.clone(),
                classes: common,
            },
        ];
        let recipient = [
            Canonical {
                maps: maps("recipient_canonical_maps")?,
                classes: classes("recipient_canonical_classes")?,
            },
            Canonical {
                maps: canonical,
                classes: common,
            },
        ];
        let virtual_alias_maps = maps("virtual_alias_maps")?;
        // cleanup's receive_override_options = no_address_mappings (set on
        // the service before an after-queue filter): rewrite after it.
        let overrides = s("receive_override_options")?;
        let disabled = corepost_config::list::split_list(&overrides)
            .unwrap_or_default()
            .iter()
            .any(|o| o == "no_address_mappings");
        let words = |n: &str| -> Result<Vec<String>, String> {
            Ok(corepost_config::list::split_list(&s(n)?)
                .unwrap_or_default()
                .into_iter()
                .map(|w| w.to_ascii_lowercase())
                .collect())
        };
        let masquerade_domains = words("masquerade_domains")?;
        // no_address_mappings turns the automatic blind copies off too.
        let bcc = AutoBcc {
            always: if disabled {
                String::new()
            } else {
                s("always_bcc")?.trim().to_string()
            },
            sender_maps: maps("sender_bcc_maps")?,
            recipient_maps: maps("recipient_bcc_maps")?,
        };
        let active = !disabled
            && (!virtual_alias_maps.is_empty()
                || !masquerade_domains.is_empty()
                || !bcc.is_empty()
                || sender.iter().chain(&recipient).any(|c| !c.maps.is_empty()));
        Ok(Rewriter {
            virtual_alias_maps,
            masquerade_domains,
            masquerade_exceptions: words("masquerade_exceptions")?,
            masquerade_classes: classes("masquerade_classes")?,
            sender,
            recipient,
            recursion_limit: limit("virtual_alias_recursion_limit")?,
            expansion_limit: limit("virtual_alias_expansion_limit")?,
            propagate_virtual: propagate.1,
            propagate_canonical: propagate.0,
            delimiter: s("recipient_delimiter")?,
            myorigin: crate::rewrite::myorigin(&s("myorigin")?)?,
            bcc,
            active,
        })
    }

    /// Is any rewriting configured at all?
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Does a canonical table know this recipient? (smtpd counts such a
    /// recipient as known, as Postfix's `check_rcpt_maps`.)
    pub fn has_canonical_recipient(
        &self,
        router: &Router,
        address: &str,
    ) -> Result<bool, TableError> {
        for c in &self.recipient {
            if !c.maps.is_empty() && self.find(router, &c.maps, address, false)?.is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The envelope sender after the canonical tables.
    pub fn envelope_sender(&self, router: &Router, sender: &str) -> Result<String, TableError> {
        if sender.is_empty() {
            return Ok(String::new());
        }
        let address = self.canonical(router, &self.sender, sender, |c| c.envelope_sender)?;
        Ok(self.masquerade_if(self.masquerade_classes.envelope_sender, address))
    }

    fn masquerade_if(&self, class: bool, address: String) -> String {
        if class && !self.masquerade_domains.is_empty() {
            self.masquerade(&address).unwrap_or(address)
        } else {
            address
        }
    }

    /// cleanup_masquerade.c: `user@host.sub.example` → `user@sub.example`
    /// for the first of masquerade_domains that is a parent of the domain
    /// (none when the domain equals one, or the matching one is `!`ed);
    /// local parts in masquerade_exceptions keep their domain.
    pub fn masquerade(&self, address: &str) -> Option<String> {
        let (local, domain) = split_address(address);
        if domain.is_empty()
            || self
                .masquerade_exceptions
                .iter()
                .any(|e| e.eq_ignore_ascii_case(local))
        {
            return None;
        }
        let domain_lc = domain.to_ascii_lowercase();
        for masq in &self.masquerade_domains {
            let (excluded, masq) = match masq.strip_prefix('!') {
                Some(m) => (true, m),
                None => (false, masq.as_str()),
            };
            if masq.is_empty() {
                continue;
            }
            if domain_lc == masq {
                return None;
            }
            if domain_lc.len() > masq.len()
                && domain_lc.ends_with(masq)
                && domain_lc.as_bytes()[domain_lc.len() - masq.len() - 1] == b'.'
            {
                return (!excluded).then(|| format!("{local}@{masq}"));
            }
        }
        None
    }

    /// A header address after the canonical tables.
    pub fn header_address(
        &self,
        router: &Router,
        address: &str,
        sender: bool,
    ) -> Result<String, TableError> {
        Ok(if sender {
            let a = self.canonical(router, &self.sender, address, |c| c.header_sender)?;
            self.masquerade_if(self.masquerade_classes.header_sender, a)
        } else {
            let a = self.canonical(router, &self.recipient, address, |c| c.header_recipient)?;
            self.masquerade_if(self.masquerade_classes.header_recipient, a)
        })
    }

    /// Apply canonical tables in order, each recursively (cleanup_map11).
    fn canonical(
        &self,
        router: &Router,
        tables: &[Canonical; 2],
        address: &str,
        applies: impl Fn(&Classes) -> bool,
    ) -> Result<String, TableError> {
        let mut current = address.to_string();
        for c in tables
            .iter()
            .filter(|c| !c.maps.is_empty() && applies(&c.classes))
        {
            for _ in 0..CANONICAL_DEPTH {
                let Some(found) = self.find(router, &c.maps, &current, self.propagate_canonical)?
                else {
                    break;
                };
                let Some(first) = found.into_iter().next() else {
                    break;
                };
                if first.eq_ignore_ascii_case(&current) {
                    break;
                }
                current = first;
            }
        }
        Ok(current)
    }

    /// Rewrite an envelope's recipients: canonical, then virtual alias
    /// expansion; each result is routed and remembers the address as
    /// received. Identical (original, result) pairs are queued once.
    pub fn recipients(
        &self,
        router: &Router,
        sender: &str,
        recipients: Vec<Recipient>,
    ) -> Result<Vec<Recipient>, RewriteError> {
        let mut out: Vec<Recipient> = Vec::with_capacity(recipients.len());
        let mut copies = self.sender_bcc(router, sender)?;
        for r in recipients {
            let canonical = self.canonical_recipient(router, &r.address)?;
            if !self.bcc.recipient_maps.is_empty()
                && let Some(found) =
                    self.find(router, &self.bcc.recipient_maps, &canonical, false)?
            {
                copies.extend(found);
            }
            self.add_expanded(router, sender, r, &canonical, &mut out)?;
        }
        if !self.bcc.always.is_empty() {
            copies.push(self.bcc.always.clone());
        }
        // As cleanup_addr_bcc(): each copy is qualified, canonical-mapped,
        // masqueraded and alias-expanded like a recipient; an address
        // already queued is not queued twice.
        for copy in copies {
            let qualified = if copy.contains('@') || self.myorigin.is_empty() {
                copy
            } else {
                format!("{copy}@{}", self.myorigin)
            };
            let canonical = self.canonical_recipient(router, &qualified)?;
            let (_, domain) = split_address(&qualified);
            let class = router.classify(&domain.to_ascii_lowercase())?;
            let route = router.route(sender, &qualified, class)?;
            let blind = Recipient {
                address: qualified,
                transport: route.transport,
                nexthop: route.nexthop,
                ..Recipient::default()
            };
            self.add_expanded(router, sender, blind, &canonical, &mut out)?;
        }
        Ok(out)
    }

    /// An envelope recipient through the canonical maps and masquerading.
    fn canonical_recipient(&self, router: &Router, address: &str) -> Result<String, RewriteError> {
        let canonical =
            self.canonical(router, &self.recipient, address, |c| c.envelope_recipient)?;
        Ok(self.masquerade_if(self.masquerade_classes.envelope_recipient, canonical))
    }

    /// `sender_bcc_maps`' copies for the (rewritten) envelope sender.
    fn sender_bcc(&self, router: &Router, sender: &str) -> Result<Vec<String>, RewriteError> {
        if self.bcc.sender_maps.is_empty() || sender.is_empty() {
            return Ok(Vec::new());
        }
        Ok(self
            .find(router, &self.bcc.sender_maps, sender, false)?
            .unwrap_or_default())
    }

    /// Queue `r` as the virtual alias expansion of `canonical` (its
    /// canonical form) gives it; each result is routed again when it
    /// changed, and an identical (original, result) pair is queued once.
    fn add_expanded(
        &self,
        router: &Router,
        sender: &str,
        r: Recipient,
        canonical: &str,
        out: &mut Vec<Recipient>,
    ) -> Result<(), RewriteError> {
        let original = r.original.clone().unwrap_or_else(|| r.address.clone());
        {
            for target in self.expand_virtual(router, canonical)? {
                let same = |o: &Recipient| {
                    o.address == target && o.original.as_deref().unwrap_or(&o.address) == original
                };
                if out.iter().any(same) {
                    continue;
                }
                let mut n = r.clone();
                if target != r.address {
                    let (_, domain) = split_address(&target);
                    let class = router.classify(&domain.to_ascii_lowercase())?;
                    let route = router.route(sender, &target, class)?;
                    n.transport = route.transport;
                    n.nexthop = route.nexthop;
                }
                n.original = (target != original).then(|| original.clone());
                n.address = target;
                out.push(n);
            }
        }
        Ok(())
    }

    /// One address through `virtual_alias_maps`, as cleanup_map1n.c.
    pub fn expand_virtual(
        &self,
        router: &Router,
        address: &str,
    ) -> Result<Vec<String>, RewriteError> {
        if self.virtual_alias_maps.is_empty() {
            return Ok(vec![address.to_string()]);
        }
        let mut list = vec![address.to_string()];
        let mut been_here: Vec<String> = Vec::new();
        let mut arg = 0;
        while arg < list.len() {
            if list.len() > self.expansion_limit {
                return Err(RewriteError::Limit(format!(
                    "unreasonable virtual_alias_maps map expansion size for {address} -- message not accepted, try again later"
                )));
            }
            let mut count = 0;
            loop {
                let key = list[arg].to_ascii_lowercase();
                if been_here.contains(&key) {
                    break;
                }
                if count >= self.recursion_limit {
                    return Err(RewriteError::Limit(format!(
                        "unreasonable virtual_alias_maps map nesting for {address} -- message not accepted, try again later"
                    )));
                }
                let Some(found) = self.find(
                    router,
                    &self.virtual_alias_maps,
                    &list[arg],
                    self.propagate_virtual,
                )?
                else {
                    break;
                };
                let lhs = list[arg].clone();
                for (i, target) in found.into_iter().enumerate() {
                    // An address may expand into itself once.
                    if target.eq_ignore_ascii_case(&lhs) {
                        been_here.push(lhs.to_ascii_lowercase());
                    }
                    if i == 0 {
                        list[arg] = target;
                    } else {
                        list.push(target);
                    }
                }
                count += 1;
            }
            arg += 1;
        }
        Ok(list)
    }

    /// The raw value `address` finds in `maps` with virtual(5)'s key
    /// search order (relocated_maps).
    pub fn lookup(
        &self,
        router: &Router,
        maps: &TableList,
        address: &str,
    ) -> Result<Option<String>, TableError> {
        let (_, domain) = split_address(address);
        let keys = address_keys(address, &self.delimiter, self.is_local(router, domain)?);
        Ok(maps
            .lookup_first(keys.iter().map(String::as_str))?
            .map(|(_, v)| v))
    }

    /// A domain whose bare local parts are looked up too: this host's
    /// (the local class) or `$myorigin`.
    fn is_local(&self, router: &Router, domain: &str) -> Result<bool, TableError> {
        let domain = domain.to_ascii_lowercase();
        Ok(!domain.is_empty()
            && (domain == self.myorigin || router.classify(&domain)? == AddressClass::Local))
    }

    /// Postfix's mail_addr_map(): the addresses `address` maps to in
    /// `maps`, or `None`.
    fn find(
        &self,
        router: &Router,
        maps: &TableList,
        address: &str,
        propagate: bool,
    ) -> Result<Option<Vec<String>>, TableError> {
        let (local, domain) = split_address(address);
        let keys = address_keys(address, &self.delimiter, self.is_local(router, domain)?);
        let Some((key, value)) = maps.lookup_first(keys.iter().map(String::as_str))? else {
            return Ok(None);
        };
        // The extension that was not matched (`+ext`), if the key lacked it.
        let base = strip_extension(local, &self.delimiter);
        let extension = base.filter(|b| {
            let b = b.to_lowercase();
            key == b || key == format!("{b}@{}", domain.to_lowercase())
        });
        let extension = extension.map(|b| &local[b.len()..]);
        let mut out = Vec::new();
        for target in split_targets(&value) {
            let mut target = match target.strip_prefix('@') {
                // "@other": keep the local part (without the unmatched
                // extension, which is added back below).
                Some(_) => format!(
                    "{}{target}",
                    base.filter(|_| extension.is_some()).unwrap_or(local)
                ),
                None => target.to_string(),
            };
            if !target.contains('@') {
                target = format!("{target}@{}", self.myorigin);
            }
            if let (true, Some(ext)) = (propagate, extension) {
                let at = target.rfind('@').unwrap_or(target.len());
                target.insert_str(at, ext);
            }
            out.push(target);
        }
        Ok(Some(out))
    }
}

/// The addresses of a table value (`a@x, b@y` or `<a@x> b@y`).
fn split_targets(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(|c: char| c == ',' || c.is_whitespace())
        .map(|t| t.trim_start_matches('<').trim_end_matches('>'))
        .filter(|t| !t.is_empty())
}

/// `myorigin`'s value: Debian's Postfix reads the domain from a file when
/// the value starts with `/` (Debian's default is `/etc/mailname`), and
/// refuses to run when it cannot (`open /etc/mailname: ...`, `myorigin
/// file /etc/mailname is empty`). The result is lower case.
pub fn myorigin(value: &str) -> Result<String, String> {
    let value = value.trim();
    if !value.starts_with('/') {
        return Ok(value.to_ascii_lowercase());
    }
    let text = std::fs::read_to_string(value).map_err(|e| format!("open {value}: {e}"))?;
    match text.lines().next().map(str::trim) {
        Some(first) if !first.is_empty() => Ok(first.to_ascii_lowercase()),
        _ => Err(format!("myorigin file {value} is empty")),
    }
}

#[cfg(test)]
mod tests;
