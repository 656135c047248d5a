//! After-queue content filters: `content_filter = transport:nexthop`
//! (main.cf, or per smtpd service with `-o`) and the `FILTER` action of
//! header/body checks.
//!
//! Postfix's cleanup writes the filter into the queue file and the queue
//! manager sends every recipient of the message to it instead of the
//! recipient's own route. corepost already records a transport and next hop
//! per recipient in the spool's message record, so the filter is recorded by
//! giving every recipient the filter's route when the message is queued;
//! the queue manager then honours it with no special case, and the spool
//! format is unchanged (see `spool/FORMAT.md`). The filter re-injects the
//! mail through a second smtpd service whose `-o content_filter=` is empty,
//! so the re-injected copy takes the normal routes — no filter loop.
//!
//! Next hop, as in Postfix 2.7 and later: the one in the filter value; when
//! that is empty, `default_filter_nexthop`; when that is empty too, the
//! recipient's domain.

use corepost_spool::Recipient;

/// A parsed `transport:nexthop` filter destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentFilter {
    pub transport: String,
    /// Empty: `default_filter_nexthop`, else the recipient's domain.
    pub nexthop: String,
}

impl ContentFilter {
    /// Parse a `content_filter` value or a FILTER action's argument; an
    /// empty value means no filter.
    pub fn parse(value: &str) -> Result<Option<ContentFilter>, String> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        if value.chars().any(char::is_whitespace) {
            return Err(format!(
                "bad content filter \"{value}\": need transport:destination"
            ));
        }
        let (transport, nexthop) = value.split_once(':').unwrap_or((value, ""));
        if transport.is_empty() {
            return Err(format!(
                "bad content filter \"{value}\": empty transport name"
            ));
        }
        Ok(Some(ContentFilter {
            transport: transport.to_string(),
            nexthop: nexthop.to_string(),
        }))
    }

    /// Route every recipient to the filter.
    pub fn apply(&self, recipients: &mut [Recipient], default_nexthop: &str) {
        for r in recipients {
            r.transport = self.transport.clone();
            r.nexthop = if !self.nexthop.is_empty() {
                self.nexthop.clone()
            } else if !default_nexthop.is_empty() {
                default_nexthop.to_string()
            } else {
                crate::routing::split_address(&r.address).1.to_string()
            };
        }
    }
}

impl std::fmt::Display for ContentFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.transport, self.nexthop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn rcpt(address: &str) -> Recipient {
        Recipient {
            address: address.into(),
            transport: "smtp".into(),
            nexthop: "elsewhere".into(),
            ..Recipient::default()
        }
    }

    #[test]
    fn parses_postfix_forms() {
        assert_eq!(ContentFilter::parse("").unwrap(), None);
        assert_eq!(ContentFilter::parse("  ").unwrap(), None);
        let f = ContentFilter::parse("smtp-amavis:[127.0.0.1]:10024")
            .unwrap()
            .unwrap();
        assert_eq!(f.transport, "smtp-amavis");
        assert_eq!(f.nexthop, "[127.0.0.1]:10024");
        let f = ContentFilter::parse("spamassassin").unwrap().unwrap();
        assert_eq!(
            (f.transport.as_str(), f.nexthop.as_str()),
            ("spamassassin", "")
        );
        let f = ContentFilter::parse("filter:").unwrap().unwrap();
        assert_eq!(f.to_string(), "filter:");
        assert!(ContentFilter::parse(":host").is_err());
        assert!(ContentFilter::parse("a b:c").is_err());
    }

    #[test]
    fn nexthop_precedence() {
        let mut rs = vec![rcpt("a@one.example"), rcpt("b@two.example")];
        let f = ContentFilter::parse("scan").unwrap().unwrap();
        f.apply(&mut rs, "");
        assert_eq!(rs[0].transport, "scan");
        assert_eq!(rs[0].nexthop, "one.example");
        assert_eq!(rs[1].nexthop, "two.example");
        f.apply(&mut rs, "filter.host");
        assert_eq!(rs[1].nexthop, "filter.host");
        let f = ContentFilter::parse("scan:[::1]:10024").unwrap().unwrap();
        f.apply(&mut rs, "filter.host");
        assert!(rs.iter().all(|r| r.nexthop == "[::1]:10024"));
    }

    proptest! {
        /// Any text parses to a filter, nothing, or an error — never a panic;
        /// a parsed filter prints back to what it was given.
        #[test]
        fn parse_never_panics(value in "\\PC{0,40}") {
            if let Ok(Some(f)) = ContentFilter::parse(&value) {
                let shown = f.to_string();
                prop_assert!(shown.starts_with(&f.transport));
                prop_assert_eq!(ContentFilter::parse(&shown).unwrap(), Some(f));
            }
        }
    }
}
