//! SMTP AUTH (RFC 4954) for smtpd: which mechanisms a session offers and the
//! challenge/response exchange behind one AUTH command.
//!
//! Two back ends, chosen by `smtpd_sasl_type`:
//! - `corepost`: PLAIN and LOGIN ([`mechanisms`]) checked against corepost's
//!   own password file of hashed secrets ([`password_file`], managed with
//!   `corepost passwd`); the hash check runs on the executor's blocking
//!   thread, never on the core.
//! - `dovecot`: the exchange is relayed to Dovecot's auth server over its
//!   client protocol ([`dovecot`]), which also decides the mechanisms.
//!
//! `smtpd_sasl_security_options` (and `smtpd_sasl_tls_security_options`
//! under TLS) filter the mechanisms, as in Postfix. Sender ownership
//! (`smtpd_sender_login_maps`) is in [`login_maps`].

pub mod dovecot;
pub mod login_maps;
pub mod mechanisms;
pub mod password_file;

use super::networks::NetworkList;
use password_file::PasswordFile;
use std::sync::Arc;

/// A mechanism's properties, as Dovecot's `MECH` lines name them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MechFlags {
    pub anonymous: bool,
    pub plaintext: bool,
    pub dictionary: bool,
    pub active: bool,
    pub forward_secrecy: bool,
    pub mutual_auth: bool,
}

/// PLAIN and LOGIN send the password itself.
pub const PLAINTEXT: MechFlags = MechFlags {
    anonymous: false,
    plaintext: true,
    dictionary: true,
    active: false,
    forward_secrecy: false,
    mutual_auth: false,
};

/// `smtpd_sasl_security_options`: properties a mechanism must not have
/// (`no*`) or must have.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SecurityOptions {
    pub noanonymous: bool,
    pub noplaintext: bool,
    pub nodictionary: bool,
    pub noactive: bool,
    pub forward_secrecy: bool,
    pub mutual_auth: bool,
}

impl SecurityOptions {
    pub fn parse(list: &str, name: &str) -> Result<SecurityOptions, String> {
        let mut o = SecurityOptions::default();
        for word in corepost_config::list::split_list(list).unwrap_or_default() {
            match word.to_ascii_lowercase().as_str() {
                "noanonymous" => o.noanonymous = true,
                "noplaintext" => o.noplaintext = true,
                "nodictionary" => o.nodictionary = true,
                "noactive" => o.noactive = true,
                "forward_secrecy" => o.forward_secrecy = true,
                "mutual_auth" => o.mutual_auth = true,
                other => return Err(format!("{name}: unknown security option \"{other}\"")),
            }
        }
        Ok(o)
    }

    pub fn allows(&self, f: MechFlags) -> bool {
        !(self.noanonymous && f.anonymous
            || self.noplaintext && f.plaintext
            || self.nodictionary && f.dictionary
            || self.noactive && f.active
            || self.forward_secrecy && !f.forward_secrecy
            || self.mutual_auth && !f.mutual_auth)
    }
}

/// Where credentials are checked.
#[derive(Debug, Clone)]
pub enum Backend {
    PasswordFile(Arc<PasswordFile>),
    Dovecot(dovecot::Address),
}

/// A service's AUTH settings.
#[derive(Debug, Clone)]
pub struct SaslSettings {
    /// `smtpd_sasl_auth_enable`.
    pub enabled: bool,
    /// `smtpd_tls_auth_only` (implied by `smtpd_tls_security_level = encrypt`).
    pub tls_only: bool,
    pub backend: Backend,
    pub options: SecurityOptions,
    pub tls_options: SecurityOptions,
    /// `smtpd_sasl_service`, passed to Dovecot.
    pub service: String,
    /// `corepost_smtpd_sasl_failure_limit` (0: none).
    pub failure_limit: u32,
    /// `smtpd_sasl_authenticated_header`.
    pub authenticated_header: bool,
    /// `smtpd_sasl_exceptions_networks`: AUTH not advertised to them.
    pub exceptions: NetworkList,
}

impl SaslSettings {
    /// From the parameters; `encrypt` is whether TLS is mandatory.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, String>,
        encrypt: bool,
    ) -> Result<SaslSettings, String> {
        let boolean = |n: &str| -> Result<bool, String> {
            corepost_config::value::parse_bool(&get(n)?).map_err(|e| format!("parameter {n}: {e}"))
        };
        let enabled = boolean("smtpd_sasl_auth_enable")?;
        let kind = get("smtpd_sasl_type")?.trim().to_ascii_lowercase();
        let backend = match kind.as_str() {
            "dovecot" => Backend::Dovecot(dovecot::Address::parse(
                get("smtpd_sasl_path")?.trim(),
                get("queue_directory")?.trim(),
            )),
            "corepost" => Backend::PasswordFile(Arc::new(PasswordFile::new(
                get("corepost_sasl_password_file")?.trim(),
            ))),
            other if enabled => {
                return Err(format!(
                    "parameter smtpd_sasl_type: \"{other}\" is not available; use corepost (corepost_sasl_password_file) or dovecot"
                ));
            }
            _ => Backend::PasswordFile(Arc::new(PasswordFile::new(""))),
        };
        Ok(SaslSettings {
            enabled,
            tls_only: boolean("smtpd_tls_auth_only")? || encrypt,
            backend,
            options: SecurityOptions::parse(
                &get("smtpd_sasl_security_options")?,
                "smtpd_sasl_security_options",
            )?,
            tls_options: SecurityOptions::parse(
                &get("smtpd_sasl_tls_security_options")?,
                "smtpd_sasl_tls_security_options",
            )?,
            service: get("smtpd_sasl_service")?.trim().to_string(),
            failure_limit: get("corepost_smtpd_sasl_failure_limit")?
                .trim()
                .parse()
                .map_err(|_| "parameter corepost_smtpd_sasl_failure_limit: not a number")?,
            authenticated_header: boolean("smtpd_sasl_authenticated_header")?,
            exceptions: NetworkList::parse(&get("smtpd_sasl_exceptions_networks")?)
                .map_err(|e| format!("smtpd_sasl_exceptions_networks: {e}"))?,
        })
    }
}

/// What an exchange step produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send `334 <base64 of this>` and feed the client's answer back.
    Challenge(Vec<u8>),
    /// Authenticated as this user.
    Success(String),
    /// Wrong credentials (535); `user` when the client named one.
    Failure {
        reason: String,
        user: Option<String>,
    },
    /// The back end could not decide (454).
    TempFailure(String),
}

/// One AUTH command's exchange in progress.
pub enum Exchange {
    Local(mechanisms::Local),
    Dovecot(Box<dovecot::Exchange>),
}

impl Exchange {
    /// Feed the client's (decoded) response; `None` for an AUTH command
    /// without an initial response.
    pub async fn step(&mut self, response: Option<Vec<u8>>) -> Step {
        match self {
            Exchange::Local(l) => l.step(response).await,
            Exchange::Dovecot(d) => d.step(response).await,
        }
    }
}
