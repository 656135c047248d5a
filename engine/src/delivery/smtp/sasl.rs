//! SMTP AUTH as a client (Postfix's `smtp_sasl_*`): which credentials, which mechanism, and the
//! exchange.
//!
//! Credentials come from `smtp_sasl_password_maps` (`user:password`), looked up as Postfix's
//! `smtp_sasl_passwd_lookup` does: with `smtp_sender_dependent_authentication` the sender
//! address first (`user+ext@domain`, `user@domain`, `@domain`), then the server's host name,
//! then the next hop as the transport names it (`[smtp.example.com]:587`, `example.com`). No
//! entry: no AUTH, as Postfix ("talk to each other like strangers").
//!
//! corepost implements PLAIN and LOGIN. Which of the server's mechanisms may be used follows
//! `smtp_sasl_mechanism_filter`, then the security options of the session:
//! `smtp_sasl_security_options` in plaintext, `smtp_sasl_tls_security_options` over TLS,
//! `smtp_sasl_tls_verified_security_options` over TLS with a verified certificate. PLAIN and
//! LOGIN send the password itself, so `noplaintext` (the default, for TLS too, exactly as
//! Postfix), `noactive` and `nodictionary` rule both out, and delivery defers with Postfix's
//! `SASL authentication failed; cannot authenticate to server host[addr]: no mechanism
//! available` — the password never crosses a session the options forbid.
//!
//! AUTH runs once per connection, before its first MAIL FROM (the sender is known then). A
//! failure defers the message with Postfix's text, the server's code turned into 4xx (Postfix's
//! `smtp_sasl_auth_soft_bounce = yes`), and the connection is not used again. Unlike Postfix,
//! the next MX host is not tried after a failed AUTH; the message is retried later.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use corepost_config::tables::keys::address_keys;
use corepost_config::tables::{LookupTable, TableList};

use super::{SessionError, SmtpConnection};

/// The client's SASL settings; `None` in [`super::ClientSettings::sasl`] when
/// `smtp_sasl_auth_enable = no`.
#[derive(Debug)]
pub struct SaslSettings {
    password_maps: TableList,
    sender_dependent: bool,
    plaintext_options: Options,
    tls_options: Options,
    tls_verified_options: Options,
    filter: Vec<FilterItem>,
    recipient_delimiter: String,
}

/// Cyrus SASL's client security properties, as Postfix names them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Options {
    /// `noplaintext`, `noactive`, `nodictionary` or `mutual_auth`: each excludes PLAIN and LOGIN.
    no_password_mechanisms: bool,
}

impl Options {
    fn parse(value: &str) -> Result<Options, String> {
        let mut o = Options::default();
        for word in corepost_config::list::split_list(value).map_err(|e| e.to_string())? {
            match word.to_ascii_lowercase().as_str() {
                "noplaintext" | "noactive" | "nodictionary" | "mutual_auth" => {
                    o.no_password_mechanisms = true
                }
                // corepost has no ANONYMOUS mechanism.
                "noanonymous" => {}
                other => return Err(format!("unknown SASL security option \"{other}\"")),
            }
        }
        Ok(o)
    }
}

/// One element of `smtp_sasl_mechanism_filter`.
#[derive(Debug)]
enum FilterItem {
    Name { name: String, negated: bool },
    Table(Arc<dyn LookupTable>),
}

/// The two mechanisms corepost speaks, in order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    Login,
}

impl Mechanism {
    fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::Login => "LOGIN",
        }
    }
}

/// A user name and password from `smtp_sasl_password_maps`.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ...)", self.user)
    }
}

/// What the connection's security is, for choosing the options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    Plaintext,
    Tls,
    VerifiedTls,
}

impl SaslSettings {
    /// Read the `smtp_sasl_*` parameters; `Ok(None)` when AUTH is off. Every parameter is
    /// checked even then, so `corepost check` reports a bad one.
    pub fn from_params(
        text: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<Option<Arc<SaslSettings>>, String> {
        let bad = |name: &str, e: String| format!("parameter {name}: {e}");
        let options = |name: &str| Options::parse(&text(name)?).map_err(|e| bad(name, e));
        let settings = SaslSettings {
            password_maps: TableList::open(&text("smtp_sasl_password_maps")?)
                .map_err(|e| bad("smtp_sasl_password_maps", e.to_string()))?,
            sender_dependent: yes(&text("smtp_sender_dependent_authentication")?),
            plaintext_options: options("smtp_sasl_security_options")?,
            tls_options: options("smtp_sasl_tls_security_options")?,
            tls_verified_options: options("smtp_sasl_tls_verified_security_options")?,
            filter: parse_filter(&text("smtp_sasl_mechanism_filter")?)
                .map_err(|e| bad("smtp_sasl_mechanism_filter", e))?,
            recipient_delimiter: text("recipient_delimiter")?,
        };
        if !yes(&text("smtp_sasl_auth_enable")?) {
            return Ok(None);
        }
        Ok(Some(Arc::new(settings)))
    }

    /// Each connection carries mail of one sender only (Postfix disables connection caching
    /// with sender-dependent authentication).
    pub fn sender_dependent(&self) -> bool {
        self.sender_dependent
    }

    /// The credentials for this sender, server host and next hop; `Ok(None)` when there are
    /// none. `Err` is a table failure.
    pub fn credentials(
        &self,
        sender: &str,
        host: &str,
        nexthop: &str,
    ) -> Result<Option<Credentials>, String> {
        let mut keys = Vec::new();
        if self.sender_dependent && !sender.is_empty() {
            keys = address_keys(sender, &self.recipient_delimiter, false);
        }
        keys.push(host.to_string());
        keys.push(nexthop.to_string());
        let found = self
            .password_maps
            .lookup_first(keys.iter().map(String::as_str))
            .map_err(|e| format!("smtp_sasl_password_maps lookup error: {e}"))?;
        Ok(found.map(|(_, value)| {
            // Historically the password may contain the delimiter: split at the first colon.
            let (user, password) = value.split_once(':').unwrap_or((&value, ""));
            Credentials {
                user: user.to_string(),
                password: password.to_string(),
            }
        }))
    }

    /// The server's mechanisms that pass `smtp_sasl_mechanism_filter`.
    pub fn filter(&self, offered: &[String]) -> Vec<String> {
        if self.filter.is_empty() {
            return offered.to_vec();
        }
        offered.iter().filter(|m| self.passes(m)).cloned().collect()
    }

    fn passes(&self, mech: &str) -> bool {
        for item in &self.filter {
            match item {
                FilterItem::Name { name, negated } if name.eq_ignore_ascii_case(mech) => {
                    return !negated;
                }
                FilterItem::Name { .. } => {}
                FilterItem::Table(t) => {
                    if matches!(t.lookup(&mech.to_ascii_lowercase()), Ok(Some(_))) {
                        return true;
                    }
                }
            }
        }
        false
    }

    /// The mechanism to use among `candidates` (already filtered) on this channel.
    pub fn choose(&self, candidates: &[String], channel: Channel) -> Option<Mechanism> {
        let options = match channel {
            Channel::Plaintext => self.plaintext_options,
            Channel::Tls => self.tls_options,
            Channel::VerifiedTls => self.tls_verified_options,
        };
        if options.no_password_mechanisms {
            return None;
        }
        [Mechanism::Plain, Mechanism::Login]
            .into_iter()
            .find(|m| candidates.iter().any(|c| c.eq_ignore_ascii_case(m.name())))
    }
}

fn yes(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("yes")
}

fn parse_filter(value: &str) -> Result<Vec<FilterItem>, String> {
    let mut items = Vec::new();
    for word in corepost_config::list::split_list(value).map_err(|e| e.to_string())? {
        if word.contains(':') {
            let table = corepost_config::tables::open_table(&word).map_err(|e| e.to_string())?;
            items.push(FilterItem::Table(table));
        } else if word.starts_with('/') {
            return Err(format!(
                "\"{word}\": file patterns are not supported by corepost"
            ));
        } else {
            let (negated, name) = match word.strip_prefix('!') {
                Some(n) => (true, n.to_string()),
                None => (false, word),
            };
            items.push(FilterItem::Name { name, negated });
        }
    }
    Ok(items)
}

/// A SASL failure: Postfix's status and text.
fn failed(status: &str, text: String) -> SessionError {
    SessionError::Policy {
        status: status.to_string(),
        text,
    }
}

impl SmtpConnection {
    /// AUTH before the first transaction, when the server offered it and there are credentials
    /// for `sender` (see the module docs).
    pub(super) async fn authenticate(&mut self, sender: &str) -> Result<(), SessionError> {
        let Some(sasl) = self.settings.sasl.clone() else {
            return Ok(());
        };
        let Some(offered) = self.caps.auth.clone() else {
            return Ok(());
        };
        let creds = sasl
            .credentials(sender, &self.host, &self.nexthop)
            .map_err(|e| failed("4.3.0", e))?;
        let Some(creds) = creds else {
            return Ok(());
        };
        self.broken = true; // until the exchange succeeds
        let candidates = sasl.filter(&offered);
        if candidates.is_empty() {
            return Err(failed(
                "4.7.0",
                format!(
                    "SASL authentication failed: server {} offered no compatible authentication mechanisms for this type of connection security",
                    self.peer
                ),
            ));
        }
        let Some(mech) = sasl.choose(&candidates, self.channel) else {
            return Err(failed(
                "4.7.0",
                format!(
                    "SASL authentication failed; cannot authenticate to server {}: no mechanism available",
                    self.peer
                ),
            ));
        };
        self.sasl_exchange(mech, &creds).await?;
        self.broken = false;
        Ok(())
    }

    async fn sasl_exchange(
        &mut self,
        mech: Mechanism,
        creds: &Credentials,
    ) -> Result<(), SessionError> {
        let timeout = self.settings.helo_timeout;
        let mut responses: Vec<String> = match mech {
            Mechanism::Plain => {
                vec![B64.encode(format!("\0{}\0{}", creds.user, creds.password))]
            }
            Mechanism::Login => vec![B64.encode(&creds.user), B64.encode(&creds.password)],
        }
        .into_iter()
        .rev()
        .collect();
        self.out.clear();
        self.out.extend_from_slice(b"AUTH ");
        self.out.extend_from_slice(mech.name().as_bytes());
        // An initial response only when the command stays within 512 octets (RFC 4954 §4).
        if mech == Mechanism::Plain && responses[0].len() + 13 <= 512 {
            self.out.push(b' ');
            self.out
                .extend_from_slice(responses.pop().unwrap_or_default().as_bytes());
        }
        self.out.extend_from_slice(b"\r\n");
        self.send("AUTH", timeout).await?;
        loop {
            let reply = self.read_reply("AUTH", timeout).await?;
            if reply.code / 100 == 2 {
                return Ok(());
            }
            if reply.code / 100 != 3 {
                let mut status = reply.status();
                if status.starts_with('5') {
                    status.replace_range(0..1, "4");
                }
                return Err(failed(
                    &status,
                    format!(
                        "SASL authentication failed; server {} said: {reply}",
                        self.peer
                    ),
                ));
            }
            let Some(next) = responses.pop() else {
                return Err(failed(
                    "4.7.0",
                    format!(
                        "SASL authentication failed; cannot authenticate to server {}: unexpected {} challenge",
                        self.peer,
                        mech.name()
                    ),
                ));
            };
            self.out.clear();
            self.out.extend_from_slice(next.as_bytes());
            self.out.extend_from_slice(b"\r\n");
            self.send("AUTH", timeout).await?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Option<Arc<SaslSettings>>, String> {
        let get = |name: &str| -> Result<String, String> {
            if let Some((_, v)) = pairs.iter().find(|(n, _)| *n == name) {
                return Ok(v.to_string());
            }
            Ok(match name {
                "smtp_sasl_auth_enable" => "yes",
                "smtp_sasl_security_options"
                | "smtp_sasl_tls_security_options"
                | "smtp_sasl_tls_verified_security_options" => "noplaintext, noanonymous",
                "smtp_sender_dependent_authentication" => "no",
                "recipient_delimiter" => "+",
                _ => "",
            }
            .to_string())
        };
        SaslSettings::from_params(&get)
    }

    #[test]
    fn lookup_order_is_postfix_s() {
        let maps = "inline:{ {[relay.example]:587 = nexthop:pw}, {relay.example = host:pw}, \
                    {@example.org = domain:pw}, {alice@example.org = alice:pa:ss} }";
        let s = settings(&[("smtp_sasl_password_maps", maps)])
            .unwrap()
            .unwrap();
        let c = |sender, host, nexthop| s.credentials(sender, host, nexthop).unwrap();
        // Host name before next hop; no sender keys without sender-dependent authentication.
        assert_eq!(
            c("alice@example.org", "relay.example", "[relay.example]:587")
                .unwrap()
                .user,
            "host"
        );
        assert_eq!(
            c("alice@example.org", "mx.other", "[relay.example]:587")
                .unwrap()
                .user,
            "nexthop"
        );
        assert_eq!(c("x@y", "mx.other", "other"), None);
        let s = settings(&[
            ("smtp_sasl_password_maps", maps),
            ("smtp_sender_dependent_authentication", "yes"),
        ])
        .unwrap()
        .unwrap();
        let c = |sender, host, nexthop| s.credentials(sender, host, nexthop).unwrap();
        let alice = c("alice+tag@example.org", "relay.example", "x").unwrap();
        assert_eq!(
            (alice.user.as_str(), alice.password.as_str()),
            ("alice", "pa:ss")
        );
        assert_eq!(
            c("bob@example.org", "relay.example", "x").unwrap().user,
            "domain"
        );
        assert_eq!(c("", "relay.example", "x").unwrap().user, "host");
    }

    #[test]
    fn options_and_filter() {
        let s = settings(&[]).unwrap().unwrap();
        let offered = vec!["PLAIN".to_string(), "LOGIN".into()];
        // The defaults forbid password mechanisms everywhere, as Postfix's.
        assert_eq!(s.choose(&offered, Channel::Tls), None);
        let s = settings(&[
            ("smtp_sasl_tls_security_options", "noanonymous"),
            ("smtp_sasl_mechanism_filter", "!plain, static:rest"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.choose(&offered, Channel::Plaintext), None);
        assert_eq!(s.choose(&offered, Channel::VerifiedTls), None);
        assert_eq!(s.choose(&offered, Channel::Tls), Some(Mechanism::Plain));
        let filtered = s.filter(&offered);
        assert_eq!(filtered, ["LOGIN"]);
        assert_eq!(s.choose(&filtered, Channel::Tls), Some(Mechanism::Login));
        assert!(settings(&[("smtp_sasl_security_options", "bogus")]).is_err());
        assert!(
            settings(&[("smtp_sasl_auth_enable", "no")])
                .unwrap()
                .is_none()
        );
    }
}
