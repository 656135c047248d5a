//! Postfix's canonical rewriting of envelope addresses (trivial-rewrite's
//! `rewrite` in local context): `user` → `user@$myorigin`
//! (`append_at_myorigin`), `user@host` → `user@host.$mydomain`
//! (`append_dot_mydomain`). Postfix applies it to every envelope address,
//! from pickup and from smtpd alike, before the address is classified.

/// The settings canonical rewriting needs.
#[derive(Debug, Clone, Default)]
pub struct Qualify {
    pub myorigin: String,
    pub mydomain: String,
    pub append_at_myorigin: bool,
    pub append_dot_mydomain: bool,
}

impl Qualify {
    /// Read `myorigin`, `mydomain`, `append_at_myorigin` and
    /// `append_dot_mydomain` through `get`.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
    ) -> Result<Qualify, String> {
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        let boolean = |n: &str| -> Result<bool, String> {
            corepost_config::value::parse_bool(&text(n)?).map_err(|e| format!("parameter {n}: {e}"))
        };
        Ok(Qualify {
            myorigin: text("myorigin")?.to_ascii_lowercase(),
            mydomain: text("mydomain")?.to_ascii_lowercase(),
            append_at_myorigin: boolean("append_at_myorigin")?,
            append_dot_mydomain: boolean("append_dot_mydomain")?,
        })
    }

    /// The rewritten address (the empty address stays empty).
    pub fn qualify(&self, address: &str) -> String {
        if address.is_empty() {
            return String::new();
        }
        match address.rfind('@') {
            None if self.append_at_myorigin => format!("{address}@{}", self.myorigin),
            None => address.to_string(),
            Some(i) => {
                let domain = &address[i + 1..];
                if self.append_dot_mydomain
                    && !domain.contains('.')
                    && !domain.starts_with('[')
                    && !domain.is_empty()
                {
                    format!("{address}.{}", self.mydomain)
                } else {
                    address.to_string()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_origin_and_domain() {
        let mut q = Qualify {
            myorigin: "example.com".into(),
            mydomain: "example.com".into(),
            append_at_myorigin: true,
            append_dot_mydomain: false,
        };
        assert_eq!(q.qualify("user"), "user@example.com");
        assert_eq!(q.qualify("user@host"), "user@host");
        assert_eq!(q.qualify(""), "");
        q.append_dot_mydomain = true;
        assert_eq!(q.qualify("user@host"), "user@host.example.com");
        assert_eq!(q.qualify("user@[192.0.2.1]"), "user@[192.0.2.1]");
        q.append_at_myorigin = false;
        assert_eq!(q.qualify("user"), "user");
    }
}
