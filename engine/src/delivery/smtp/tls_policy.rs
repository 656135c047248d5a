//! Which TLS a destination gets, as Postfix's `smtp_tls_policy.c` decides it: the security level
//! (`smtp_tls_security_level`, overridden per next hop by `smtp_tls_policy_maps`), the protocol
//! versions, and what the server certificate must match.
//!
//! Levels, weakest first: `none`, `may`, `encrypt`, `fingerprint`, `dane`, `dane-only`,
//! `verify`, `secure`. From `encrypt` up TLS is required; from `fingerprint` up the certificate
//! must also *match* (a fingerprint, a DNSSEC-validated TLSA record, or a trusted chain with one
//! of the match names), and a session that does not match is never used for mail (see
//! [`super::tls`]). `dane` and `dane-only` are decided per MX host from DNS by [`super::dane`]
//! before the connection: they become `may`/`encrypt`, stay DANE with TLSA records to match, or
//! defer, exactly as Postfix's `dane_init`.
//!
//! A policy table is looked up with the next hop as the queue manager has it (`example.com`,
//! `[mail.example.com]:587`); a domain that finds nothing is retried with each parent as
//! `.parent` (so `.example.com` covers every subdomain), exactly as Postfix. An entry that cannot
//! be parsed, or names an attribute corepost cannot honour, makes delivery to that next hop defer
//! with Postfix's `4.7.5 client TLS configuration problem` and a warning naming the table.

use std::sync::Arc;

use corepost_config::tables::TableList;
use rustls::ClientConfig;

/// `smtp_tls_security_level` and the first word of a policy-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsLevel {
    /// `""` or `none`: never STARTTLS.
    None,
    /// `may`: STARTTLS when offered, else plaintext; any certificate.
    May,
    /// `encrypt`: TLS or no delivery; any certificate.
    Encrypt,
    /// `fingerprint`: TLS, and the certificate (or its public key) has a listed fingerprint.
    Fingerprint,
    /// Postfix's "halfdane" (never configured): DANE TLSA records of a secure MX host reached
    /// through an insecure MX RRset; a match is logged as `Trusted` rather than `Verified`.
    HalfDane,
    /// `dane`: DANE (RFC 7672) where DNSSEC says so, else opportunistic TLS.
    Dane,
    /// `dane-only`: DANE or no delivery.
    DaneOnly,
    /// `verify`: TLS, a trusted chain, and a name from `smtp_tls_verify_cert_match`.
    Verify,
    /// `secure`: as `verify`, with `smtp_tls_secure_cert_match`.
    Secure,
}

impl TlsLevel {
    pub fn parse(value: &str) -> Result<TlsLevel, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(TlsLevel::None),
            "may" => Ok(TlsLevel::May),
            "encrypt" => Ok(TlsLevel::Encrypt),
            "fingerprint" => Ok(TlsLevel::Fingerprint),
            "dane" => Ok(TlsLevel::Dane),
            "dane-only" => Ok(TlsLevel::DaneOnly),
            "verify" => Ok(TlsLevel::Verify),
            "secure" => Ok(TlsLevel::Secure),
            other => Err(format!("unknown TLS security level \"{other}\"")),
        }
    }

    /// TLS or no delivery.
    pub fn requires_tls(self) -> bool {
        self >= TlsLevel::Encrypt
    }

    /// The certificate must match (Postfix's `TLS_MUST_MATCH`).
    pub fn must_match(self) -> bool {
        self >= TlsLevel::Fingerprint
    }

    pub fn name(self) -> &'static str {
        match self {
            TlsLevel::None => "none",
            TlsLevel::May => "may",
            TlsLevel::Encrypt => "encrypt",
            TlsLevel::Fingerprint => "fingerprint",
            TlsLevel::HalfDane => "halfdane",
            TlsLevel::Dane => "dane",
            TlsLevel::DaneOnly => "dane-only",
            TlsLevel::Verify => "verify",
            TlsLevel::Secure => "secure",
        }
    }
}

/// A message digest for fingerprints (`smtp_tls_fingerprint_digest`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    pub fn parse(value: &str) -> Result<Digest, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "sha1" => Ok(Digest::Sha1),
            "sha256" => Ok(Digest::Sha256),
            "sha384" => Ok(Digest::Sha384),
            "sha512" => Ok(Digest::Sha512),
            other => Err(format!(
                "digest \"{other}\" is not supported by corepost (sha256, sha384, sha512, sha1)"
            )),
        }
    }

    pub fn digest(self, data: &[u8]) -> Vec<u8> {
        use ring::digest;
        let alg = match self {
            Digest::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            Digest::Sha256 => &digest::SHA256,
            Digest::Sha384 => &digest::SHA384,
            Digest::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// `AB:CD:...` or `abcd...` to bytes.
pub fn parse_fingerprint(text: &str) -> Option<Vec<u8>> {
    let hex: String = text.chars().filter(|&c| c != ':').collect();
    if hex.is_empty() || !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// What was decided for one next hop.
#[derive(Debug, Clone)]
pub struct SitePolicy {
    pub level: TlsLevel,
    /// `fingerprint`: the digests to accept. `verify`/`secure`: the match patterns (`hostname`,
    /// `nexthop`, `dot-nexthop`, `name`, `.domain`).
    pub matches: Vec<String>,
    /// The rustls configuration with this policy's protocol versions (`None`: level `none`, or
    /// all versions).
    pub config: Option<Arc<ClientConfig>>,
    /// DANE levels: the host's usable, DNSSEC-validated TLSA records (set by
    /// [`super::dane::for_host`]; without them a DANE level matches nothing).
    pub dane: Option<Arc<super::dane::DaneRecords>>,
    /// MTA-STS `mode: testing` for this policy domain: checks that would fail under `enforce`
    /// are logged, not enforced ([`super::mta_sts`]).
    pub sts_testing: Option<String>,
}

impl SitePolicy {
    /// No TLS at all (Unix-domain sockets).
    pub fn plaintext() -> SitePolicy {
        SitePolicy {
            level: TlsLevel::None,
            matches: Vec::new(),
            config: None,
            dane: None,
            sts_testing: None,
        }
    }
}

/// A destination's policy could not be decided: defer with `4.7.5`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyProblem {
    /// For the log (`warning: ...`); names the table and the next hop.
    pub warning: String,
}

/// One policy-table entry, parsed: level and attributes.
#[derive(Debug, Default)]
pub(crate) struct Entry {
    pub level: Option<TlsLevel>,
    pub matches: Vec<String>,
    pub protocols: Option<String>,
}

/// Parse `level attr=value ...` (commas or spaces between words) as Postfix's
/// `tls_policy_lookup_one`. Attributes corepost cannot honour are errors, never ignored.
pub(crate) fn parse_entry(value: &str) -> Result<Entry, String> {
    let words = corepost_config::list::split_list(value).map_err(|e| e.to_string())?;
    let mut words = words.into_iter();
    let Some(first) = words.next() else {
        return Err("invalid empty policy".into());
    };
    let level =
        TlsLevel::parse(&first).map_err(|e| format!("invalid security level \"{first}\": {e}"))?;
    let mut entry = Entry {
        level: Some(level),
        ..Entry::default()
    };
    for word in words {
        let Some((name, val)) = word.split_once('=') else {
            return Err(format!("malformed attribute/value pair \"{word}\""));
        };
        match name.to_ascii_lowercase().as_str() {
            "match" => {
                if val.is_empty() {
                    return Err("attribute \"match\" has empty value".into());
                }
                let sep = match level {
                    TlsLevel::Fingerprint => '|',
                    TlsLevel::Verify | TlsLevel::Secure => ':',
                    other => {
                        return Err(format!(
                            "attribute \"match\" invalid at security level \"{}\"",
                            other.name()
                        ));
                    }
                };
                entry
                    .matches
                    .extend(val.split(sep).filter(|m| !m.is_empty()).map(str::to_string));
            }
            "protocols" => {
                if entry.protocols.replace(val.to_string()).is_some() {
                    return Err("attribute \"protocols\" is specified multiple times".into());
                }
            }
            // Every rustls cipher suite is of OpenSSL's "high" grade, so each grade is honoured.
            "ciphers" => {
                if !matches!(
                    val.to_ascii_lowercase().as_str(),
                    "high" | "medium" | "low" | "export" | "null"
                ) {
                    return Err(format!("invalid \"ciphers\" value \"{val}\""));
                }
            }
            other => {
                return Err(format!(
                    "attribute \"{other}\" is not supported by corepost"
                ));
            }
        }
    }
    Ok(entry)
}

/// The keys Postfix tries for a next hop: the next hop itself, then — for a plain domain —
/// `.parent` for each parent domain.
pub(crate) fn policy_keys(nexthop: &str) -> Vec<String> {
    let mut keys = vec![nexthop.to_string()];
    let plain = !nexthop.contains(['[', ']', ':', '/']);
    if plain {
        let mut rest = nexthop;
        while let Some(i) = rest.get(1..).and_then(|r| r.find('.')) {
            rest = &rest[i + 1..];
            keys.push(rest.to_string());
        }
    }
    keys
}

/// Look `nexthop` up in the policy tables: `Ok(None)` when nothing matches.
pub(crate) fn lookup(maps: &TableList, nexthop: &str) -> Result<Option<(String, Entry)>, String> {
    for key in policy_keys(nexthop) {
        let found = maps.lookup(&key).map_err(|e| {
            format!("next-hop destination \"{key}\": policy table lookup error: {e}")
        })?;
        if let Some(value) = found {
            let entry =
                parse_entry(&value).map_err(|e| format!("next-hop destination \"{key}\": {e}"))?;
            return Ok(Some((key, entry)));
        }
    }
    Ok(None)
}

/// The domain of a next hop for `nexthop`/`dot-nexthop` matching: brackets and port removed.
pub fn nexthop_domain(nexthop: &str) -> &str {
    let n = nexthop.strip_prefix('[').map_or(nexthop, |rest| {
        rest.split_once(']').map_or(rest, |(host, _)| host)
    });
    let n = if nexthop.starts_with('[') {
        n
    } else {
        n.rsplit_once(':').map_or(n, |(host, _)| host)
    };
    n.trim_end_matches('.')
}

/// A transport's TLS settings, resolved once per configuration load.
#[derive(Debug)]
pub struct TlsSettings {
    /// `smtp_tls_security_level`: the level where no policy entry says otherwise.
    pub level: TlsLevel,
    /// `smtp_tls_policy_maps`.
    policy_maps: TableList,
    /// `smtp_tls_verify_cert_match`, `smtp_tls_secure_cert_match`.
    verify_cert_match: Vec<String>,
    secure_cert_match: Vec<String>,
    /// `smtp_tls_fingerprint_cert_match`.
    fingerprint_cert_match: Vec<String>,
    /// `smtp_tls_fingerprint_digest`.
    pub digest: Digest,
    /// Configurations for `smtp_tls_protocols` (level `may`) and `smtp_tls_mandatory_protocols`.
    opportunistic: Arc<ClientConfig>,
    mandatory: Arc<ClientConfig>,
    /// `smtp_tls_CAfile` and `smtp_tls_CApath`, else the system's trust store.
    pub roots: Arc<rustls::RootCertStore>,
    /// `smtp_tls_loglevel`.
    pub loglevel: i64,
    /// `smtp_tls_dane_insecure_mx_policy`: `may`, `encrypt` or `dane`.
    pub dane_insecure_mx: TlsLevel,
    /// `smtp_tls_force_insecure_host_tlsa_lookup`.
    pub force_tlsa: bool,
    /// `corepost_smtp_mta_sts`: the port of policy fetches (`corepost_smtp_mta_sts_https_port`)
    /// when MTA-STS is on.
    pub mta_sts: Option<u16>,
}

impl TlsSettings {
    /// Read the `smtp_tls_*` parameters (LMTP: `lmtp_tls_security_level` only, and no level
    /// that needs certificate checks). Errors name the parameter.
    pub fn from_params(
        text: &dyn Fn(&str) -> Result<String, String>,
        lmtp: bool,
    ) -> Result<TlsSettings, String> {
        let param = |name: &str| -> Result<String, String> { text(name) };
        let bad = |name: &str, e: String| format!("parameter {name}: {e}");
        let level_param = if lmtp {
            "lmtp_tls_security_level"
        } else {
            "smtp_tls_security_level"
        };
        let side = if lmtp {
            corepost_config::tls_level::TlsSide::Lmtp
        } else {
            corepost_config::tls_level::TlsSide::Smtp
        };
        let level = corepost_config::tls_level::effective_level(&param, side)?;
        let level = TlsLevel::parse(&level).map_err(|e| bad(level_param, e))?;
        if lmtp {
            if level.must_match() {
                return Err(bad(
                    level_param,
                    format!(
                        "level \"{}\" is not supported by corepost for LMTP (none, may, encrypt)",
                        level.name()
                    ),
                ));
            }
            let config = super::tls::client_config(super::tls::ALL_VERSIONS);
            return Ok(TlsSettings {
                level,
                policy_maps: TableList::empty(),
                verify_cert_match: Vec::new(),
                secure_cert_match: Vec::new(),
                fingerprint_cert_match: Vec::new(),
                digest: Digest::Sha256,
                opportunistic: config.clone(),
                mandatory: config,
                roots: Arc::new(rustls::RootCertStore::empty()),
                loglevel: 0,
                dane_insecure_mx: TlsLevel::May,
                force_tlsa: false,
                mta_sts: None,
            });
        }
        let list = |name: &str| -> Result<Vec<String>, String> {
            corepost_config::list::split_list(&param(name)?).map_err(|e| bad(name, e.to_string()))
        };
        let versions = |name: &str| -> Result<Arc<ClientConfig>, String> {
            let v = crate::smtpd::tls::protocols(&param(name)?).map_err(|e| bad(name, e))?;
            Ok(super::tls::client_config(&v))
        };
        let policy_maps = TableList::open(&param("smtp_tls_policy_maps")?)
            .map_err(|e| bad("smtp_tls_policy_maps", e.to_string()))?;
        let fingerprint_cert_match = list("smtp_tls_fingerprint_cert_match")?;
        check_fingerprints(&fingerprint_cert_match)
            .map_err(|e| bad("smtp_tls_fingerprint_cert_match", e))?;
        if level == TlsLevel::Fingerprint && fingerprint_cert_match.is_empty() {
            return Err(bad(
                "smtp_tls_fingerprint_cert_match",
                "the fingerprint security level needs at least one fingerprint".into(),
            ));
        }
        let loglevel = param("smtp_tls_loglevel")?;
        let mta_sts = mta_sts_port(&param)?;
        let insecure_mx = param("smtp_tls_dane_insecure_mx_policy")?;
        let dane_insecure_mx = match TlsLevel::parse(&insecure_mx) {
            Ok(l @ (TlsLevel::May | TlsLevel::Encrypt | TlsLevel::Dane)) => l,
            _ => {
                return Err(bad(
                    "smtp_tls_dane_insecure_mx_policy",
                    format!(
                        "invalid value \"{}\" (may, encrypt or dane)",
                        insecure_mx.trim()
                    ),
                ));
            }
        };
        let force = param("smtp_tls_force_insecure_host_tlsa_lookup")?;
        let force_tlsa = corepost_config::value::parse_bool(&force)
            .map_err(|e| bad("smtp_tls_force_insecure_host_tlsa_lookup", e.to_string()))?;
        Ok(TlsSettings {
            dane_insecure_mx,
            force_tlsa,
            mta_sts,
            level,
            verify_cert_match: list("smtp_tls_verify_cert_match")?,
            secure_cert_match: list("smtp_tls_secure_cert_match")?,
            fingerprint_cert_match,
            digest: Digest::parse(&param("smtp_tls_fingerprint_digest")?)
                .map_err(|e| bad("smtp_tls_fingerprint_digest", e))?,
            opportunistic: versions("smtp_tls_protocols")?,
            mandatory: versions("smtp_tls_mandatory_protocols")?,
            roots: super::tls::load_roots(
                param("smtp_tls_CAfile")?.trim(),
                param("smtp_tls_CApath")?.trim(),
                level != TlsLevel::None || !policy_maps.is_empty() || mta_sts.is_some(),
            )?,
            policy_maps,
            loglevel: loglevel
                .trim()
                .parse()
                .map_err(|_| bad("smtp_tls_loglevel", format!("bad number \"{loglevel}\"")))?,
        })
    }

    /// The policy for one next hop (`[host]:port`, `host`, or the recipient domain).
    pub fn for_site(&self, nexthop: &str) -> Result<SitePolicy, PolicyProblem> {
        let problem = |why: String| PolicyProblem {
            warning: format!("{}, {why}", self.policy_maps_name()),
        };
        let entry = if self.policy_maps.is_empty() {
            None
        } else {
            lookup(&self.policy_maps, nexthop).map_err(problem)?
        };
        let (level, matches, protocols) = match entry {
            Some((_, e)) => (e.level.unwrap_or(self.level), e.matches, e.protocols),
            None => (self.level, Vec::new(), None),
        };
        let matches = if !matches.is_empty() {
            if level == TlsLevel::Fingerprint {
                check_fingerprints(&matches)
                    .map_err(|e| problem(format!("next-hop destination \"{nexthop}\": {e}")))?;
            }
            matches
        } else {
            match level {
                TlsLevel::Verify => self.verify_cert_match.clone(),
                TlsLevel::Secure => self.secure_cert_match.clone(),
                TlsLevel::Fingerprint => self.fingerprint_cert_match.clone(),
                _ => Vec::new(),
            }
        };
        if level == TlsLevel::Fingerprint && matches.is_empty() {
            return Err(PolicyProblem {
                warning: format!(
                    "nexthop domain {nexthop}: configured at fingerprint security level, but with no fingerprints to match."
                ),
            });
        }
        let config = match protocols {
            _ if level == TlsLevel::None => None,
            Some(p) => {
                let v = crate::smtpd::tls::protocols(&p).map_err(|e| {
                    problem(format!(
                        "next-hop destination \"{nexthop}\": attribute \"protocols\": {e}"
                    ))
                })?;
                Some(super::tls::client_config(&v))
            }
            None if level == TlsLevel::May => Some(self.opportunistic.clone()),
            None => Some(self.mandatory.clone()),
        };
        Ok(SitePolicy {
            level,
            matches,
            config,
            dane: None,
            sts_testing: None,
        })
    }

    /// `site` at another level (DANE's fallbacks to `may` or `encrypt`, MTA-STS's `secure`)
    /// with these match names and that level's protocol versions.
    pub fn relevel(&self, site: SitePolicy, level: TlsLevel, matches: Vec<String>) -> SitePolicy {
        let config = match level {
            TlsLevel::None => None,
            TlsLevel::May => Some(self.opportunistic.clone()),
            _ if site.level <= TlsLevel::May => Some(self.mandatory.clone()),
            _ => site.config,
        };
        SitePolicy {
            level,
            matches,
            config,
            dane: None,
            sts_testing: None,
        }
    }

    fn policy_maps_name(&self) -> String {
        let names: Vec<&str> = self.policy_maps.tables().iter().map(|t| t.spec()).collect();
        names.join(", ")
    }
}

/// `corepost_smtp_mta_sts` and, when on, `corepost_smtp_mta_sts_https_port`.
fn mta_sts_port(param: &dyn Fn(&str) -> Result<String, String>) -> Result<Option<u16>, String> {
    let on = param("corepost_smtp_mta_sts")?;
    let on = corepost_config::value::parse_bool(&on)
        .map_err(|e| format!("parameter corepost_smtp_mta_sts: {e}"))?;
    if !on {
        return Ok(None);
    }
    let port = param("corepost_smtp_mta_sts_https_port")?;
    match port.trim().parse::<u16>() {
        Ok(p) if p > 0 => Ok(Some(p)),
        _ => Err(format!(
            "parameter corepost_smtp_mta_sts_https_port: bad port \"{}\"",
            port.trim()
        )),
    }
}

fn check_fingerprints(list: &[String]) -> Result<(), String> {
    for f in list {
        if parse_fingerprint(f).is_none() {
            return Err(format!("malformed fingerprint \"{f}\""));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(TlsLevel::parse("").unwrap(), TlsLevel::None);
        assert_eq!(TlsLevel::parse("Verify").unwrap(), TlsLevel::Verify);
        assert_eq!(TlsLevel::parse("dane").unwrap(), TlsLevel::Dane);
        assert_eq!(TlsLevel::parse("DANE-only").unwrap(), TlsLevel::DaneOnly);
        // Postfix's internal level is not a configurable one.
        assert!(TlsLevel::parse("halfdane").is_err());
        assert!(TlsLevel::Dane.must_match() && TlsLevel::HalfDane.must_match());
        assert!(TlsLevel::parse("bogus").is_err());
        assert!(TlsLevel::Fingerprint.must_match() && !TlsLevel::Encrypt.must_match());
        assert!(TlsLevel::Encrypt.requires_tls() && !TlsLevel::May.requires_tls());
    }

    #[test]
    fn entries() {
        let e = parse_entry("secure match=example.com:.example.net protocols=TLSv1.3").unwrap();
        assert_eq!(e.level, Some(TlsLevel::Secure));
        assert_eq!(e.matches, ["example.com", ".example.net"]);
        assert_eq!(e.protocols.as_deref(), Some("TLSv1.3"));
        let f = parse_entry("fingerprint match=AB:CD|EF:01").unwrap();
        assert_eq!(f.matches, ["AB:CD", "EF:01"]);
        assert!(parse_entry("may match=x").is_err());
        assert!(
            parse_entry("verify tafile=/x")
                .unwrap_err()
                .contains("not supported")
        );
        assert!(parse_entry("verify exclude=aNULL").is_err());
        assert!(parse_entry("").is_err());
        assert_eq!(parse_entry("dane").unwrap().level, Some(TlsLevel::Dane));
        assert!(parse_entry("dane-only match=x").is_err());
        assert!(parse_entry("encrypt ciphers=high").is_ok());
    }

    #[test]
    fn keys_and_domains() {
        assert_eq!(
            policy_keys("mail.example.com"),
            ["mail.example.com", ".example.com", ".com"]
        );
        assert_eq!(
            policy_keys("[mail.example.com]:587"),
            ["[mail.example.com]:587"]
        );
        assert_eq!(nexthop_domain("[mail.example.com]:587"), "mail.example.com");
        assert_eq!(nexthop_domain("example.com:2525"), "example.com");
        assert_eq!(nexthop_domain("example.com"), "example.com");
        assert_eq!(parse_fingerprint("0A:ff"), Some(vec![0x0a, 0xff]));
        assert_eq!(parse_fingerprint("0aff"), Some(vec![0x0a, 0xff]));
        assert_eq!(parse_fingerprint("0g"), None);
    }
}
