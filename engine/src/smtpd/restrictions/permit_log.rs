//! `smtpd_log_access_permit_actions`: which "permit" actions smtpd logs
//! (Postfix logs rejections always, permits only when named here), e.g.
//! `permit_mynetworks, permit_sasl_authenticated` or `static:all`.
//!
//! A match list of action names (`!name` excludes) and `type:table`
//! patterns, looked up by action name; the first match decides.

use corepost_config::tables::{LookupTable, open_table};
use std::sync::Arc;

#[derive(Debug, Clone)]
enum Pattern {
    Name(String),
    Table(Arc<dyn LookupTable>),
}

/// The parsed list.
#[derive(Debug, Clone, Default)]
pub struct PermitLog {
    elements: Vec<(bool, Pattern)>,
}

impl PermitLog {
    pub fn parse(value: &str) -> Result<PermitLog, String> {
        let mut elements = Vec::new();
        for e in corepost_config::list::match_list_elements(value)? {
            let pattern = if e.pattern.contains(':') {
                Pattern::Table(open_table(&e.pattern).map_err(|x| x.to_string())?)
            } else {
                Pattern::Name(e.pattern.to_ascii_lowercase())
            };
            elements.push((e.negated, pattern));
        }
        Ok(PermitLog { elements })
    }

    /// Whether the permit `action` (a restriction name, or an access
    /// table's `OK`) is logged.
    pub fn logs(&self, action: &str) -> bool {
        let action = action.to_ascii_lowercase();
        for (negated, pattern) in &self.elements {
            let hit = match pattern {
                Pattern::Name(n) => *n == action,
                Pattern::Table(t) => matches!(t.lookup(&action), Ok(Some(_))),
            };
            if hit {
                return !negated;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tables_and_exclusions() {
        let l = PermitLog::parse("!permit_mynetworks, static:all").unwrap();
        assert!(!l.logs("permit_mynetworks"));
        assert!(l.logs("OK"));
        let l = PermitLog::parse("permit_sasl_authenticated").unwrap();
        assert!(l.logs("PERMIT_SASL_AUTHENTICATED"));
        assert!(!l.logs("permit"));
        assert!(!PermitLog::default().logs("permit"));
    }
}
