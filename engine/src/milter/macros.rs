//! Sendmail macros sent to milters: which names at which stage
//! (`milter_*_macros`, or the lists a milter asks for when it negotiates)
//! and their values, as Postfix's smtpd and cleanup compute them.

use super::codec::cmd;

/// The stages that carry macros, in Postfix's SMFIM_* order (which is the
/// index a milter uses to ask for its own list), plus unknown commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect = 0,
    Helo = 1,
    Mail = 2,
    Rcpt = 3,
    Data = 4,
    EndOfData = 5,
    EndOfHeader = 6,
    Unknown = 7,
}

impl Stage {
    /// The SMFIC_* command the macros are sent with.
    pub fn command(self) -> u8 {
        match self {
            Stage::Connect => cmd::CONNECT,
            Stage::Helo => cmd::HELO,
            Stage::Mail => cmd::MAIL,
            Stage::Rcpt => cmd::RCPT,
            Stage::Data => cmd::DATA,
            Stage::EndOfData => cmd::BODYEOB,
            Stage::EndOfHeader => cmd::EOH,
            Stage::Unknown => cmd::UNKNOWN,
        }
    }
}

/// The macro names per stage, as lists of names (`j`, `{daemon_name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MacroLists(pub [Vec<String>; 8]);

impl MacroLists {
    pub fn get(&self, stage: Stage) -> &[String] {
        &self.0[stage as usize]
    }

    /// A milter's own list for SMFIM class `class` (unknown classes are
    /// reported by the caller).
    pub fn set(&mut self, class: u32, names: &str) -> bool {
        match self.0.get_mut(class as usize).filter(|_| class < 7) {
            Some(list) => {
                *list = split_names(names);
                true
            }
            None => false,
        }
    }
}

pub fn split_names(list: &str) -> Vec<String> {
    list.split([' ', ',', '\t', '\r', '\n'])
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect()
}

/// Configured lists and values that do not depend on the session.
#[derive(Debug, Clone, Default)]
pub struct MacroConfig {
    pub lists: MacroLists,
    /// `milter_macro_daemon_name`.
    pub daemon_name: String,
    /// `milter_macro_v`.
    pub v: String,
    pub myhostname: String,
    /// `milter_macro_defaults`: used when the session has no value.
    pub defaults: Vec<(String, String)>,
}

impl MacroConfig {
    pub fn from_params(
        text: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<MacroConfig, String> {
        let lists = MacroLists([
            split_names(&text("milter_connect_macros")?),
            split_names(&text("milter_helo_macros")?),
            split_names(&text("milter_mail_macros")?),
            split_names(&text("milter_rcpt_macros")?),
            split_names(&text("milter_data_macros")?),
            split_names(&text("milter_end_of_data_macros")?),
            split_names(&text("milter_end_of_header_macros")?),
            split_names(&text("milter_unknown_command_macros")?),
        ]);
        let defaults = parse_defaults(&text("milter_macro_defaults")?)?;
        Ok(MacroConfig {
            lists,
            daemon_name: text("milter_macro_daemon_name")?,
            v: text("milter_macro_v")?,
            myhostname: text("myhostname")?,
            defaults,
        })
    }

    fn default_value(&self, name: &str) -> Option<String> {
        let bare = bare_name(name);
        self.defaults
            .iter()
            .find(|(n, _)| bare_name(n) == bare)
            .map(|(_, v)| v.clone())
    }
}

/// `name=value` or `{ name = value }` pairs, comma or space separated.
fn parse_defaults(value: &str) -> Result<Vec<(String, String)>, String> {
    let items = corepost_config::list::split_list(value)
        .map_err(|e| format!("parameter milter_macro_defaults: {e}"))?;
    items
        .iter()
        .map(|item| {
            item.split_once('=')
                .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
                .filter(|(n, _)| !n.is_empty())
                .ok_or_else(|| {
                    format!("parameter milter_macro_defaults: missing '=' in \"{item}\"")
                })
        })
        .collect()
}

/// `{name}` and `name` are the same macro.
fn bare_name(name: &str) -> &str {
    name.strip_prefix('{')
        .and_then(|n| n.strip_suffix('}'))
        .unwrap_or(name)
}

/// What the session knows, for macro values (Postfix's smtpd_milter.c and,
/// for local submissions, cleanup_milter.c).
#[derive(Debug, Clone, Default)]
pub struct MacroContext {
    pub client_name: String,
    pub reverse_name: String,
    pub client_addr: String,
    pub client_port: String,
    pub daemon_addr: Option<String>,
    pub daemon_port: Option<String>,
    pub tls_version: Option<String>,
    pub cipher: Option<String>,
    pub cipher_bits: Option<String>,
    pub auth_type: Option<String>,
    pub auth_authen: Option<String>,
    pub queue_id: Option<String>,
    pub mail_addr: Option<String>,
    pub mail_host: Option<String>,
    pub mail_mailer: Option<String>,
    pub rcpt_addr: Option<String>,
    pub rcpt_host: Option<String>,
    pub rcpt_mailer: Option<String>,
}

impl MacroContext {
    /// The value of one macro, or `None` (then it is not sent).
    pub fn value(&self, config: &MacroConfig, name: &str) -> Option<String> {
        let own = match bare_name(name) {
            "daemon_name" => Some(config.daemon_name.clone()),
            "v" => Some(config.v.clone()),
            "j" => Some(config.myhostname.clone()),
            "_" => {
                let mut v = format!("{} [{}]", self.reverse_name, self.client_addr);
                if !self.client_name.eq_ignore_ascii_case(&self.reverse_name) {
                    v.push_str(" (may be forged)");
                }
                Some(v)
            }
            "client_addr" => Some(self.client_addr.clone()),
            "client_name" => Some(self.client_name.clone()),
            "client_port" => Some(self.client_port.clone()),
            "client_ptr" => Some(self.reverse_name.clone()),
            "daemon_addr" => self.daemon_addr.clone(),
            "daemon_port" => self.daemon_port.clone(),
            "tls_version" => self.tls_version.clone(),
            "cipher" => self.cipher.clone(),
            "cipher_bits" => self.cipher_bits.clone(),
            "auth_type" => self.auth_type.clone(),
            "auth_authen" => self.auth_authen.clone(),
            "i" => self.queue_id.clone(),
            "mail_addr" => self.mail_addr.clone(),
            "mail_host" => self.mail_host.clone(),
            "mail_mailer" => self.mail_mailer.clone(),
            "rcpt_addr" => self.rcpt_addr.clone(),
            "rcpt_host" => self.rcpt_host.clone(),
            "rcpt_mailer" => self.rcpt_mailer.clone(),
            _ => None,
        };
        own.or_else(|| config.default_value(name))
    }

    /// The name/value pairs of `names` that have a value.
    pub fn evaluate(&self, config: &MacroConfig, names: &[String]) -> Vec<(String, String)> {
        names
            .iter()
            .filter_map(|n| self.value(config, n).map(|v| (n.clone(), v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MacroConfig {
        MacroConfig {
            lists: MacroLists::default(),
            daemon_name: "mx.example".into(),
            v: "corepost 1".into(),
            myhostname: "mx.example".into(),
            defaults: parse_defaults("auth_type=none, { {x} = a b }").unwrap(),
        }
    }

    #[test]
    fn values_as_postfix_computes_them() {
        let ctx = MacroContext {
            client_name: "unknown".into(),
            reverse_name: "host.example".into(),
            client_addr: "192.0.2.1".into(),
            client_port: "4711".into(),
            ..MacroContext::default()
        };
        let c = config();
        assert_eq!(
            ctx.value(&c, "_").unwrap(),
            "host.example [192.0.2.1] (may be forged)"
        );
        assert_eq!(ctx.value(&c, "{daemon_name}").unwrap(), "mx.example");
        assert_eq!(ctx.value(&c, "i"), None);
        assert_eq!(ctx.value(&c, "{auth_type}").unwrap(), "none");
        assert_eq!(ctx.value(&c, "{x}").unwrap(), "a b");
        let sent = ctx.evaluate(&c, &split_names("j {i} {client_addr}"));
        assert_eq!(
            sent,
            vec![
                ("j".to_string(), "mx.example".to_string()),
                ("{client_addr}".to_string(), "192.0.2.1".to_string())
            ]
        );
    }

    #[test]
    fn a_milter_may_replace_a_list() {
        let mut l = MacroLists::default();
        assert!(l.set(2, "{mail_addr} i"));
        assert_eq!(l.get(Stage::Mail), ["{mail_addr}", "i"]);
        assert!(!l.set(9, "x"));
    }
}
