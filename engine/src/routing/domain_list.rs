//! Domain lists (`mydestination`, `relay_domains`, `virtual_*_domains`):
//! Postfix's match-list syntax for domains.
//!
//! Elements, tried in order, first match decides:
//! * `example.com` — that domain; with parent-domain matching on (the
//!   parameter is in `parent_domain_matches_subdomains`, as `relay_domains`
//!   is by default) also its subdomains;
//! * `.example.com` — subdomains of example.com;
//! * `!element` — a match means "not in the list";
//! * `type:name` — a lookup table keyed by the domain (and its parents);
//! * `/file/name` — a file whose words are more elements.

use corepost_config::list::match_list_elements;
use corepost_config::tables::{TableError, TableList, keys::domain_keys};

#[derive(Debug, Clone)]
enum Pattern {
    Domain(String),
    Subdomains(String),
    Table(TableList),
}

#[derive(Debug, Clone)]
struct Element {
    negated: bool,
    pattern: Pattern,
}

/// A parsed domain list.
#[derive(Debug, Clone, Default)]
pub struct DomainList {
    elements: Vec<Element>,
    parent_matches: bool,
}

impl DomainList {
    /// Parse an expanded list value.
    pub fn parse(value: &str, parent_matches: bool) -> Result<DomainList, String> {
        let mut elements = Vec::new();
        for e in match_list_elements(value)? {
            let word = e.pattern;
            let pattern = if word.contains(':') && !word.starts_with('[') {
                Pattern::Table(TableList::open(&word).map_err(|e| e.to_string())?)
            } else if let Some(parent) = word.strip_prefix('.') {
                Pattern::Subdomains(parent.to_ascii_lowercase())
            } else {
                Pattern::Domain(word.to_ascii_lowercase())
            };
            elements.push(Element {
                negated: e.negated,
                pattern,
            });
        }
        Ok(DomainList {
            elements,
            parent_matches,
        })
    }

    /// Add a literal domain (e.g. an interface address `[127.0.0.1]`).
    pub fn push_domain(&mut self, domain: &str) {
        self.elements.push(Element {
            negated: false,
            pattern: Pattern::Domain(domain.to_ascii_lowercase()),
        });
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Whether `domain` (lower case) is in the list.
    pub fn matches(&self, domain: &str) -> Result<bool, TableError> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        for e in &self.elements {
            let hit = match &e.pattern {
                Pattern::Domain(d) => {
                    *d == domain || (self.parent_matches && is_subdomain(&domain, d))
                }
                Pattern::Subdomains(d) => is_subdomain(&domain, d),
                Pattern::Table(t) => {
                    let keys = domain_keys(&domain, self.parent_matches);
                    t.lookup_first(keys.iter().map(String::as_str))?.is_some()
                }
            };
            if hit {
                return Ok(!e.negated);
            }
        }
        Ok(false)
    }
}

fn is_subdomain(domain: &str, parent: &str) -> bool {
    domain.len() > parent.len() + 1
        && domain.ends_with(parent)
        && domain.as_bytes()[domain.len() - parent.len() - 1] == b'.'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_subdomain_and_negation() {
        let l = DomainList::parse("!bad.example.com, example.com, .example.org", false).unwrap();
        assert!(l.matches("example.com").unwrap());
        assert!(l.matches("EXAMPLE.com.").unwrap());
        assert!(!l.matches("sub.example.com").unwrap());
        assert!(!l.matches("bad.example.com").unwrap());
        assert!(l.matches("a.example.org").unwrap());
        assert!(!l.matches("example.org").unwrap());
        let parent = DomainList::parse("example.com", true).unwrap();
        assert!(parent.matches("deep.sub.example.com").unwrap());
        assert!(!parent.matches("notexample.com").unwrap());
    }

    #[test]
    fn tables_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("domains");
        std::fs::write(&file, "# relay for\nexample.net  other.example\n").unwrap();
        let l = DomainList::parse(
            &format!("inline:{{ table.example=yes }}, {}", file.display()),
            false,
        )
        .unwrap();
        assert!(l.matches("table.example").unwrap());
        assert!(l.matches("other.example").unwrap());
        assert!(l.matches("example.net").unwrap());
        assert!(!l.matches("example.com").unwrap());
        assert!(DomainList::parse("/no/such/file", false).is_err());
    }
}
