//! `cidr:file` — network/prefix rules (cidr_table(5)).
//!
//! Used where the key is a client IP address (`check_client_access
//! cidr:…`, `mynetworks = cidr:…`). Each logical line is one of
//!
//! ```text
//! network/prefix  result      # also a bare address = /32 or /128
//! !network/prefix result      # matches addresses outside the network
//! if network/prefix           # the block applies only inside the network
//! if !network/prefix
//! endif
//! ```
//!
//! IPv6 networks may be written plain or as `[addr]/len` / `[addr/len]`.
//! Rules are tried in file order and the first match wins. As in Postfix,
//! an IPv4 rule never applies to an IPv6 key and vice versa, *even when
//! negated*; an IPv4-mapped IPv6 key (`::ffff:192.0.2.1`) is compared with
//! IPv4 rules as the IPv4 address and with IPv6 rules as itself. A key that
//! is not an IP address matches nothing.
//!
//! Errors (Postfix warns and skips the rule; corepost refuses the table):
//! a bad address or prefix, a network with host bits set ("non-null host
//! address bits", with the network Postfix suggests), a rule without a
//! result, text after an `if` pattern or `endif`, unbalanced `if`/`endif`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use super::rules::{Condition, Outcome, RuleList, RuleListBuilder};
use super::source::{logical_lines, read_source};
use super::{LookupTable, TableError};

/// A network to compare keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    V4 { address: u32, mask: u32 },
    V6 { address: u128, mask: u128 },
}

impl Network {
    fn test(&self, key: &KeyAddress) -> Outcome<()> {
        let matched = match (self, key.v4, key.v6) {
            (Network::V4 { address, mask }, Some(v4), _) => v4 & mask == *address,
            (Network::V6 { address, mask }, _, Some(v6)) => v6 & mask == *address,
            _ => return Outcome::NotApplicable,
        };
        if matched {
            Outcome::Matched(())
        } else {
            Outcome::NotMatched
        }
    }
}

/// A lookup key as the address families it can be compared in.
struct KeyAddress {
    v4: Option<u32>,
    v6: Option<u128>,
}

impl KeyAddress {
    fn parse(key: &str) -> Option<Self> {
        match key.parse::<IpAddr>().ok()? {
            IpAddr::V4(v4) => Some(KeyAddress {
                v4: Some(v4.to_bits()),
                v6: None,
            }),
            IpAddr::V6(v6) => Some(KeyAddress {
                v4: v6.to_ipv4_mapped().map(Ipv4Addr::to_bits),
                v6: Some(v6.to_bits()),
            }),
        }
    }
}

/// A loaded cidr table.
#[derive(Debug)]
pub struct CidrTable {
    spec: String,
    rules: RuleList<Network, String>,
}

impl CidrTable {
    /// Load the cidr table at `path`.
    pub fn open(spec: &str, path: &Path) -> Result<Self, TableError> {
        let text = read_source(spec, path)?;
        Self::parse(spec, path, &text)
    }

    /// Parse cidr table `text`; `path` is only used in error messages.
    pub fn parse(spec: &str, path: &Path, text: &str) -> Result<Self, TableError> {
        let mut builder = RuleListBuilder::new();
        for line in logical_lines(text) {
            let fail = |message: String| TableError::syntax(path, line.number, message);
            let text = line.text.trim();
            if let Some(rest) = keyword(text, "if") {
                let (pattern, extra) = split_token(rest);
                if !extra.is_empty() {
                    return Err(fail(format!(
                        "unexpected text after \"if {pattern}\": \"{extra}\" \
                         (do not indent the rules between if and endif)"
                    )));
                }
                builder.push_if(parse_condition(pattern).map_err(fail)?, line.number);
            } else if let Some(rest) = keyword(text, "endif") {
                if !rest.is_empty() {
                    return Err(fail(format!("unexpected text after endif: \"{rest}\"")));
                }
                builder.push_endif(path, line.number)?;
            } else {
                let (pattern, result) = split_token(text);
                if result.is_empty() {
                    return Err(fail(format!("no lookup result after \"{pattern}\"")));
                }
                let condition = parse_condition(pattern).map_err(fail)?;
                builder.push_match(condition, result.to_string());
            }
        }
        Ok(CidrTable {
            spec: spec.to_string(),
            rules: builder.finish(path)?,
        })
    }

    /// Number of rules, counting `if` and `endif` lines.
    pub fn rule_count(&self) -> usize {
        self.rules.len()
    }
}

impl LookupTable for CidrTable {
    fn lookup(&self, key: &str) -> Result<Option<String>, TableError> {
        let Some(address) = KeyAddress::parse(key) else {
            return Ok(None);
        };
        Ok(self
            .rules
            .first_match(|network| network.test(&address))
            .map(|(result, _)| result.clone()))
    }

    fn spec(&self) -> &str {
        &self.spec
    }
}

/// The rest of `text` when it starts with `word` (any case) followed by
/// whitespace or the end, as Postfix's `strncasecmp` + `!ISALNUM` test.
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let rest = text.get(word.len()..)?;
    if !head.eq_ignore_ascii_case(word) {
        return None;
    }
    match rest.chars().next() {
        None => Some(rest),
        Some(c) if c.is_whitespace() => Some(rest.trim()),
        Some(_) => None,
    }
}

/// The first whitespace-delimited token and the trimmed rest.
fn split_token(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(end) => {
            let (token, rest) = text.split_at(end);
            (token, rest.trim())
        }
        None => (text, ""),
    }
}

/// `[!…]network[/prefix]`.
fn parse_condition(pattern: &str) -> Result<Condition<Network>, String> {
    let mut negated = false;
    let mut rest = pattern;
    while let Some(after) = rest.strip_prefix('!') {
        negated = !negated;
        rest = after;
    }
    if rest.is_empty() {
        return Err("no address pattern".to_string());
    }
    Ok(Condition {
        pattern: parse_network(rest)?,
        negated,
    })
}

/// `addr`, `addr/len`, `[addr]`, `[addr]/len` or `[addr/len]`.
fn parse_network(pattern: &str) -> Result<Network, String> {
    let (address, prefix) = match pattern.strip_prefix('[') {
        Some(inner) => {
            let Some((bracketed, after)) = inner.split_once(']') else {
                return Err(format!("missing ']' character after \"[{inner}\""));
            };
            if after.is_empty() {
                split_prefix(bracketed)
            } else if let Some(prefix) = after.strip_prefix('/') {
                (bracketed, Some(prefix))
            } else {
                return Err(format!("garbage after \"[{bracketed}]\""));
            }
        }
        None => split_prefix(pattern),
    };
    let Some(prefix) = prefix else {
        return if address.contains(':') {
            match address.parse::<Ipv6Addr>() {
                Ok(v6) => Ok(Network::V6 {
                    address: v6.to_bits(),
                    mask: u128::MAX,
                }),
                Err(_) => Err(format!("bad address pattern: \"{address}\"")),
            }
        } else {
            match address.parse::<Ipv4Addr>() {
                Ok(v4) => Ok(Network::V4 {
                    address: v4.to_bits(),
                    mask: u32::MAX,
                }),
                Err(_) => Err(format!("bad address pattern: \"{address}\"")),
            }
        };
    };
    let bad = || format!("bad net/mask pattern: \"{address}/{prefix}\"");
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let length: u32 = prefix.parse().map_err(|_| bad())?;
    let host_bits = |suggested: String| {
        format!(
            "non-null host address bits in \"{address}/{prefix}\", \
             perhaps you should use \"{suggested}/{length}\" instead"
        )
    };
    if address.contains(':') {
        let v6 = address.parse::<Ipv6Addr>().map_err(|_| bad())?;
        if length > 128 {
            return Err(bad());
        }
        let mask = u128::MAX.checked_shl(128 - length).unwrap_or(0);
        let bits = v6.to_bits();
        if bits & !mask != 0 {
            return Err(host_bits(Ipv6Addr::from_bits(bits & mask).to_string()));
        }
        Ok(Network::V6 {
            address: bits,
            mask,
        })
    } else {
        let v4 = address.parse::<Ipv4Addr>().map_err(|_| bad())?;
        if length > 32 {
            return Err(bad());
        }
        let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
        let bits = v4.to_bits();
        if bits & !mask != 0 {
            return Err(host_bits(Ipv4Addr::from_bits(bits & mask).to_string()));
        }
        Ok(Network::V4 {
            address: bits,
            mask,
        })
    }
}

fn split_prefix(text: &str) -> (&str, Option<&str>) {
    match text.split_once('/') {
        Some((address, prefix)) => (address, Some(prefix)),
        None => (text, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(text: &str) -> Result<CidrTable, TableError> {
        CidrTable::parse("cidr:t", Path::new("t"), text)
    }

    fn lookup(table: &CidrTable, key: &str) -> Option<String> {
        table.lookup(key).unwrap()
    }

    fn error(text: &str) -> (usize, String) {
        match parse(text) {
            Err(TableError::Syntax { line, message, .. }) => (line, message),
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn networks_bare_addresses_and_first_match() {
        let table = parse(
            "# comment\n\
             192.0.2.1        exact\n\
             192.0.2.0/24     net24\n\
             10.0.0.0/8       REJECT with  spaces\n\
             2001:db8::/32    v6net\n\
             [2001:db8:1::1]  never reached\n\
             [fe80::]/10      linklocal\n\
             [fc00::/7]       ula\n\
             0.0.0.0/0        anyv4\n",
        )
        .unwrap();
        assert_eq!(lookup(&table, "192.0.2.1").as_deref(), Some("exact"));
        assert_eq!(lookup(&table, "192.0.2.77").as_deref(), Some("net24"));
        assert_eq!(
            lookup(&table, "10.255.0.1").as_deref(),
            Some("REJECT with  spaces")
        );
        assert_eq!(lookup(&table, "2001:DB8:1::1").as_deref(), Some("v6net"));
        assert_eq!(lookup(&table, "fe80::1").as_deref(), Some("linklocal"));
        assert_eq!(lookup(&table, "fd00::1").as_deref(), Some("ula"));
        assert_eq!(lookup(&table, "198.51.100.1").as_deref(), Some("anyv4"));
        assert_eq!(lookup(&table, "2002::1"), None);
    }

    #[test]
    fn ipv4_mapped_keys_match_ipv4_rules() {
        let table = parse("192.0.2.0/24 v4\n::ffff:0:0/96 mapped\n").unwrap();
        assert_eq!(lookup(&table, "::ffff:192.0.2.9").as_deref(), Some("v4"));
        assert_eq!(
            lookup(&table, "::ffff:198.51.100.1").as_deref(),
            Some("mapped")
        );
    }

    #[test]
    fn non_addresses_match_nothing() {
        let table = parse("0.0.0.0/0 any\n::/0 any6\n!10.0.0.0/8 not10\n").unwrap();
        for key in ["", "host.example.com", "[192.0.2.1]", "192.0.2", "1.2.3.4 "] {
            assert_eq!(lookup(&table, key), None, "{key:?}");
        }
    }

    #[test]
    fn negation_does_not_cross_address_families() {
        let table = parse("!10.0.0.0/8 outside\n!!192.0.2.0/24 double\n").unwrap();
        assert_eq!(lookup(&table, "192.0.2.1").as_deref(), Some("outside"));
        assert_eq!(lookup(&table, "10.0.0.1"), None);
        assert_eq!(lookup(&table, "2001:db8::1"), None);
        let table = parse("!10.0.0.0/8 outside\n!!10.1.0.0/16 double\n").unwrap();
        assert_eq!(lookup(&table, "10.1.2.3").as_deref(), Some("double"));
    }

    #[test]
    fn if_endif_blocks_nest() {
        let table = parse(
            "if 10.0.0.0/8\n\
             IF !10.1.0.0/16\n\
             10.2.0.0/16 ten-two\n\
             endif\n\
             10.0.0.0/8 ten\n\
             ENDIF\n\
             0.0.0.0/0 other\n",
        )
        .unwrap();
        assert_eq!(lookup(&table, "10.2.3.4").as_deref(), Some("ten-two"));
        assert_eq!(lookup(&table, "10.1.3.4").as_deref(), Some("ten"));
        assert_eq!(lookup(&table, "10.3.3.4").as_deref(), Some("ten"));
        assert_eq!(lookup(&table, "11.0.0.1").as_deref(), Some("other"));
        // An IPv6 `if` skips its block for IPv4 keys, negated or not.
        let table = parse("if !2001:db8::/32\n0.0.0.0/0 inside\nendif\n").unwrap();
        assert_eq!(lookup(&table, "192.0.2.1"), None);
        assert_eq!(lookup(&table, "2002::1"), None);
    }

    #[test]
    fn continuation_lines_extend_the_result() {
        let table = parse("10.0.0.0/8 first\n  second\n").unwrap();
        assert_eq!(lookup(&table, "10.0.0.1").as_deref(), Some("first  second"));
    }

    #[test]
    fn host_bits_error_names_line_and_suggests_network() {
        let (line, message) = error("10.0.0.0/8 ok\n\n192.0.2.1/24 bad\n");
        assert_eq!(line, 3);
        assert!(message.contains("non-null host address bits"), "{message}");
        assert!(message.contains("192.0.2.0/24"), "{message}");
        let (line, message) = error("2001:db8::1/32 bad\n");
        assert_eq!(line, 1);
        assert!(message.contains("2001:db8::/32"), "{message}");
    }

    #[test]
    fn every_syntax_error_names_its_line() {
        let cases: &[(&str, usize, &str)] = &[
            ("a b\n", 1, "bad address"),
            ("1.2.3.4\n", 1, "no lookup result"),
            ("# x\n1.2.3/24 r\n", 2, "bad net/mask"),
            ("1.2.3.4/33 r\n", 1, "bad net/mask"),
            ("1.2.3.4/ r\n", 1, "bad net/mask"),
            ("1.2.3.4/x r\n", 1, "bad net/mask"),
            ("::/129 r\n", 1, "bad net/mask"),
            ("1.2.3.4/+8 r\n", 1, "bad net/mask"),
            ("ok/1 r\n", 1, "bad net/mask"),
            ("[::1 r\n", 1, "missing ']'"),
            ("[::1]x r\n", 1, "garbage"),
            ("! r\n", 1, "no address pattern"),
            ("::1 ok\nif 10.0.0.0/8 extra\nendif\n", 2, "unexpected text"),
            ("if 10.0.0.0/8\nendif extra\n", 2, "unexpected text"),
            ("if\nendif\n", 1, "no address pattern"),
            ("1.1.1.1 a\nendif\n", 2, "endif without"),
            ("if 10.0.0.0/8\n1.1.1.1 a\n", 1, "no matching endif"),
            (
                "if 10.0.0.0/8\nif 10.0.0.0/9\nendif\n",
                1,
                "no matching endif",
            ),
            ("if 10.0.0.1/8\nendif\n", 1, "non-null host"),
        ];
        for (text, want_line, want_message) in cases {
            let (line, message) = error(text);
            assert_eq!(line, *want_line, "{text:?}: {message}");
            assert!(message.contains(want_message), "{text:?}: {message}");
        }
    }

    #[test]
    fn keyword_needs_a_word_boundary() {
        // `ifx` is not `if`: it is a (bad) address pattern.
        let (_, message) = error("ifx 1.2.3.4\n");
        assert!(message.contains("bad address"), "{message}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "(?s).{0,200}") {
            let _ = parse(&text);
        }

        #[test]
        fn rule_shaped_text_never_panics(
            lines in proptest::collection::vec(
                "(if |endif|!|\\[)?[0-9a-f:.\\[\\]/!]{0,20}( [a-z]{0,4})?", 0..10),
            key in "[0-9a-f:.]{0,20}",
        ) {
            if let Ok(table) = parse(&lines.join("\n")) {
                let _ = table.lookup(&key);
            }
        }

        /// A /n network matches exactly the addresses sharing its first n
        /// bits.
        #[test]
        fn prefix_semantics(network in any::<u32>(), length in 0u32..=32, key in any::<u32>()) {
            let mask = u32::MAX.checked_shl(32 - length).unwrap_or(0);
            let network = Ipv4Addr::from_bits(network & mask);
            let table = parse(&format!("{network}/{length} hit\n")).unwrap();
            let key = Ipv4Addr::from_bits(key);
            let expected = (key.to_bits() & mask) == network.to_bits();
            prop_assert_eq!(table.lookup(&key.to_string()).unwrap().is_some(), expected);
        }
    }
}
