//! The parameter registry: every parameter corepost reads, its type, its
//! built-in default and what it is for — corepost's `mail_params.h` and
//! `postconf.proto` in one table ([`crate::params::PARAMS`]).
//!
//! Defaults are Postfix's at `compatibility_level = 3.6` wherever Postfix has
//! the parameter; the few deliberate differences carry their reason in
//! [`ParamDef::differs`] so that `corepost config` and the compatibility
//! test can show them. corepost's own parameters start with `corepost_`.
//!
//! Like Postfix, a delivery transport named in master.cf (`smtp`, `relay`,
//! a pipe service, ...) gets per-transport forms of the scheduling
//! parameters, `<transport>_destination_concurrency_limit` and friends,
//! whose default is the matching `default_` (or global) parameter; see
//! [`PER_TRANSPORT`]. [`Registry`] is the table extended with those for one
//! master.cf.

use crate::params::{PARAMS, PER_TRANSPORT};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// What kind of value a parameter holds; decides how it is validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Free text or a single word.
    Text,
    /// `yes` or `no`.
    Bool,
    /// A whole number.
    Int,
    /// A time: a number with an optional unit `s`, `m`, `h`, `d` or `w`; the
    /// char is the unit assumed when none is given.
    Time(char),
    /// A size in bytes.
    Size,
    /// A list of words separated by commas and/or whitespace.
    List,
    /// A list of lookup tables (`type:name`).
    Maps,
    /// A list of smtpd restrictions.
    Restrictions,
}

impl Kind {
    pub fn describe(self) -> &'static str {
        match self {
            Kind::Text => "text",
            Kind::Bool => "boolean",
            Kind::Int => "integer",
            Kind::Time(_) => "time",
            Kind::Size => "size",
            Kind::List => "list",
            Kind::Maps => "lookup table list",
            Kind::Restrictions => "restriction list",
        }
    }
}

/// A computed default: receives the expanded effective value of any other
/// parameter and returns the default text.
pub type ComputeDefault = fn(&dyn Fn(&str) -> String) -> String;

/// Where a built-in default comes from.
#[derive(Debug, Clone)]
pub enum DefaultValue {
    /// A fixed text, which may contain `$name` references.
    Text(Cow<'static, str>),
    /// Computed from the host and from other parameters' effective values
    /// (e.g. `myhostname` from the system's hostname, `mydomain` from
    /// `myhostname`). The function receives a lookup of expanded values.
    Computed(ComputeDefault),
}

/// One parameter of the static table.
#[derive(Debug, Clone)]
pub struct ParamDef {
    pub name: &'static str,
    pub kind: Kind,
    pub default: DefaultValue,
    /// One or two sentences: what the parameter controls.
    pub doc: &'static str,
    /// Why corepost's default differs from Postfix's, when it does.
    pub differs: Option<&'static str>,
    /// true for parameters Postfix does not have (`corepost_*`).
    pub corepost_only: bool,
    /// true when `$name`s in the value are filled in at run time by the
    /// program using it (e.g. `$rbl_code` in `default_rbl_reply`), so the
    /// configuration never expands them.
    pub raw: bool,
    /// The words the value may be (each word of a list); empty means any
    /// value of its kind. `""` in the list allows an empty value.
    pub words: &'static [&'static str],
}

impl ParamDef {
    /// A parameter shared with Postfix, with a fixed default.
    pub const fn new(
        name: &'static str,
        kind: Kind,
        default: &'static str,
        doc: &'static str,
    ) -> ParamDef {
        ParamDef {
            name,
            kind,
            default: DefaultValue::Text(Cow::Borrowed(default)),
            doc,
            differs: None,
            corepost_only: false,
            raw: false,
            words: &[],
        }
    }

    /// A parameter whose default is computed.
    pub const fn computed(
        name: &'static str,
        kind: Kind,
        compute: ComputeDefault,
        doc: &'static str,
    ) -> ParamDef {
        ParamDef {
            name,
            kind,
            default: DefaultValue::Computed(compute),
            doc,
            differs: None,
            corepost_only: false,
            raw: false,
            words: &[],
        }
    }

    /// Restrict the value to Postfix's words for it (case-insensitive, as
    /// Postfix's `name_code` tables).
    pub const fn one_of(mut self, words: &'static [&'static str]) -> ParamDef {
        self.words = words;
        self
    }

    /// Mark the default as deliberately different from Postfix's.
    pub const fn differs(mut self, reason: &'static str) -> ParamDef {
        self.differs = Some(reason);
        self
    }

    /// Mark as expanded at run time only (see [`ParamDef::raw`]).
    pub const fn raw(mut self) -> ParamDef {
        self.raw = true;
        self
    }

    /// Mark as corepost's own (not in Postfix).
    pub const fn corepost(mut self) -> ParamDef {
        self.corepost_only = true;
        self
    }
}

/// A per-transport parameter template: `<transport>_<suffix>`.
#[derive(Debug, Clone, Copy)]
pub struct TransportParamDef {
    pub suffix: &'static str,
    pub kind: Kind,
    /// The parameter whose value is the default (`$default_...`).
    pub fallback: &'static str,
    /// Only for transports whose command is one of these (empty: any
    /// delivery agent).
    pub only_commands: &'static [&'static str],
    pub doc: &'static str,
}

/// The delivery agents whose master.cf services get per-transport
/// parameters. As in Postfix, `discard` has none: it never queues per
/// destination.
pub const DELIVERY_AGENTS: &[&str] =
    &["smtp", "lmtp", "local", "virtual", "pipe", "error", "spawn"];

/// A parameter as the registry knows it for one configuration: a static
/// entry or a per-transport one.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    pub kind: Kind,
    pub default: DefaultValue,
    pub doc: Cow<'static, str>,
    pub differs: Option<&'static str>,
    pub corepost_only: bool,
    pub raw: bool,
    pub words: &'static [&'static str],
}

impl From<&ParamDef> for Param {
    fn from(def: &ParamDef) -> Param {
        Param {
            name: def.name.to_string(),
            kind: def.kind,
            default: def.default.clone(),
            doc: Cow::Borrowed(def.doc),
            differs: def.differs,
            corepost_only: def.corepost_only,
            raw: def.raw,
            words: def.words,
        }
    }
}

/// All parameters known for one configuration.
#[derive(Debug, Clone)]
pub struct Registry {
    params: BTreeMap<String, Param>,
}

impl Registry {
    /// The static table only (no per-transport parameters).
    pub fn builtin() -> Registry {
        Registry::with_transports(std::iter::empty::<(&str, &str)>())
    }

    /// The static table plus per-transport parameters for each
    /// `(service name, command)` of master.cf that runs a delivery agent.
    pub fn with_transports<'a>(services: impl IntoIterator<Item = (&'a str, &'a str)>) -> Registry {
        let mut params: BTreeMap<String, Param> = PARAMS
            .iter()
            .map(|def| (def.name.to_string(), Param::from(def)))
            .collect();
        for (service, command) in services {
            if !DELIVERY_AGENTS.contains(&command) {
                continue;
            }
            for t in PER_TRANSPORT {
                if !t.only_commands.is_empty() && !t.only_commands.contains(&command) {
                    continue;
                }
                let name = format!("{service}_{}", t.suffix);
                // A static entry (e.g. local_destination_recipient_limit = 1)
                // takes precedence over the generic form.
                params.entry(name.clone()).or_insert_with(|| Param {
                    name,
                    kind: t.kind,
                    default: DefaultValue::Text(Cow::Owned(format!("${}", t.fallback))),
                    doc: Cow::Owned(format!("{} for the {service} transport.", t.doc)),
                    differs: None,
                    corepost_only: false,
                    raw: false,
                    words: &[],
                });
            }
        }
        Registry { params }
    }

    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.get(name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.params.contains_key(name)
    }

    /// Every parameter, sorted by name.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.values()
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_names_are_unique_and_documented() {
        let mut seen = std::collections::HashSet::new();
        for def in PARAMS {
            assert!(seen.insert(def.name), "{} declared twice", def.name);
            assert!(!def.doc.is_empty(), "{} has no doc", def.name);
            assert!(
                def.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{}",
                def.name
            );
            assert_eq!(
                def.corepost_only,
                def.name.starts_with("corepost_"),
                "{}: corepost's own parameters, and only they, start with corepost_",
                def.name
            );
        }
    }

    #[test]
    fn per_transport_parameters_follow_master_cf() {
        let r = Registry::with_transports([
            ("smtp", "smtp"),
            ("relay", "smtp"),
            ("local", "local"),
            ("maildrop", "pipe"),
            ("pickup", "pickup"),
            ("scalemail-backend", "pipe"),
        ]);
        let p = r.get("relay_destination_concurrency_limit").unwrap();
        assert!(
            matches!(&p.default, DefaultValue::Text(t) if t == "$default_destination_concurrency_limit")
        );
        let p = r.get("smtp_initial_destination_concurrency").unwrap();
        assert!(
            matches!(&p.default, DefaultValue::Text(t) if t == "$initial_destination_concurrency")
        );
        // The static entry wins over the generic form.
        let p = r.get("local_destination_recipient_limit").unwrap();
        assert!(matches!(&p.default, DefaultValue::Text(t) if t == "1"));
        assert!(r.contains("maildrop_time_limit"));
        assert!(!r.contains("smtp_time_limit"));
        assert!(!r.contains("pickup_destination_concurrency_limit"));
        assert!(r.contains("scalemail-backend_time_limit"));
        assert!(!Registry::builtin().contains("relay_destination_concurrency_limit"));
    }
}
