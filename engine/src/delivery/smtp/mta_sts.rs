//! MTA-STS (RFC 8461) in the SMTP client, with `corepost_smtp_mta_sts = yes` — beyond Postfix,
//! which needs an external policy server (a socketmap in `smtp_tls_policy_maps`) for it.
//!
//! For mail to a domain through its MX hosts (a next hop that is a plain domain, so not a
//! relay host in brackets):
//! 1. The TXT record `_mta-sts.<domain>` is looked up with corepost's resolver. It must be the
//!    one record starting `v=STSv1`, with an `id`.
//! 2. A policy cached for the domain with that id and not past its `max_age` is used as is.
//!    Otherwise the policy is fetched from `https://mta-sts.<domain>/.well-known/mta-sts.txt`:
//!    `mta-sts.<domain>` is resolved on the core (never the system's resolver), and the HTTPS
//!    request (ureq over rustls, the certificate checked against `smtp_tls_CAfile`/`CApath` or
//!    the system's store, no redirects, a 64 KiB limit, `text/plain` only) runs on glommio's
//!    blocking-thread pool, off the core. A failed fetch (or no TXT record) falls back to the
//!    cached policy while it lasts (RFC 8461 §5.1), else there is no policy; a failure is
//!    remembered for [`RETRY_AFTER_FAILURE`] so that every delivery does not fetch again.
//! 3. `mode: enforce` — an MX host matching none of the `mx:` patterns is skipped (4.7.5),
//!    and the session must be TLS with a trusted certificate for the MX host name (level
//!    `secure` with `match=hostname`: `4.7.4` without STARTTLS, `4.7.5 Server certificate not
//!    verified` otherwise). `mode: testing` — delivery as the configured level says, with a
//!    warning for each check that would have failed (an MX host not in the policy; no
//!    STARTTLS, or a certificate that does not verify for the MX host name, when the level
//!    tries TLS). `mode: none` — nothing.
//!
//! Precedence (RFC 8461 §2): a destination already at `fingerprint`, DANE with usable TLSA
//! records, `verify` or `secure` keeps that policy; MTA-STS raises `none`, `may` and `encrypt`.
//! Policies are cached in memory for the process (shared by the cores), not on disk.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustls::{ClientConfig, RootCertStore};

use super::SessionError;
use super::tls_policy::{SitePolicy, TlsLevel, TlsSettings};
use crate::dns::{Destination, Resolver};

/// The longest `max_age` RFC 8461 allows (about a year).
pub const MAX_AGE_LIMIT: u64 = 31_557_600;
/// The largest policy body accepted (RFC 8461 §3.3 suggests 64 KiB).
const MAX_POLICY_SIZE: u64 = 64 * 1024;
/// How long one policy fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a failed fetch is remembered before the next delivery tries again.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(300);

/// The policy's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Testing,
    None,
}

/// A parsed policy (RFC 8461 §3.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub mode: Mode,
    /// `mx:` patterns, lower case (`mail.example.com`, `*.example.net`).
    pub mx: Vec<String>,
    pub max_age: u64,
}

/// The `id` of the one `v=STSv1` record among a name's TXT records (RFC 8461 §3.1); `None`
/// when there is none, more than one, or it is malformed.
pub fn parse_txt(records: &[String]) -> Option<String> {
    let sts: Vec<&String> = records
        .iter()
        .filter(|r| r.starts_with("v=STSv1"))
        .collect();
    let [record] = sts.as_slice() else {
        return None;
    };
    let mut fields = record.split(';').map(str::trim).filter(|f| !f.is_empty());
    if fields.next() != Some("v=STSv1") {
        return None;
    }
    let mut id = None;
    for field in fields {
        let (key, value) = field.split_once('=')?;
        if key == "id" {
            let ok = !value.is_empty()
                && value.len() <= 32
                && value.bytes().all(|b| b.is_ascii_alphanumeric());
            if !ok || id.is_some() {
                return None;
            }
            id = Some(value.to_string());
        }
    }
    id
}

/// Parses a policy body: `key: value` lines (CRLF or LF), `version: STSv1`, `mode`,
/// `max_age`, and one or more `mx` unless the mode is `none`. Unknown keys are ignored.
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let (mut version, mut mode, mut max_age) = (None, None, None);
    let mut mx = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("malformed line \"{line}\""));
        };
        let value = value.trim();
        match key.trim() {
            "version" => version = Some(value.to_string()),
            "mode" => {
                mode = Some(match value {
                    "enforce" => Mode::Enforce,
                    "testing" => Mode::Testing,
                    "none" => Mode::None,
                    other => return Err(format!("unknown mode \"{other}\"")),
                })
            }
            "max_age" => {
                let age: u64 = value
                    .parse()
                    .map_err(|_| format!("bad max_age \"{value}\""))?;
                max_age = Some(age.min(MAX_AGE_LIMIT));
            }
            "mx" => mx.push(value.trim_end_matches('.').to_ascii_lowercase()),
            _ => {}
        }
    }
    if version.as_deref() != Some("STSv1") {
        return Err("no \"version: STSv1\"".into());
    }
    let mode = mode.ok_or("no mode")?;
    let max_age = max_age.ok_or("no max_age")?;
    if mx.is_empty() && mode != Mode::None {
        return Err("no mx".into());
    }
    Ok(Policy { mode, mx, max_age })
}

/// RFC 8461 §4.1: a pattern is a host name, or `*.` and a domain standing for exactly one
/// more label on the left.
pub fn mx_matches(pattern: &str, host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    match pattern.strip_prefix("*.") {
        Some(parent) => host
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
        None => host == pattern,
    }
}

impl Policy {
    pub fn allows_mx(&self, host: &str) -> bool {
        self.mx.iter().any(|p| mx_matches(p, host))
    }
}

/// A domain's policy as the SMTP client applies it.
#[derive(Debug, Clone)]
pub struct DomainPolicy {
    pub domain: String,
    pub policy: Policy,
}

/// What is known of one domain.
#[derive(Default)]
struct Cached {
    /// The policy last fetched and its id, in force until the instant (its `max_age`).
    policy: Option<(String, Policy, Instant)>,
    /// An id whose fetch failed, and when to try it again.
    failed: Option<(String, Instant)>,
}

fn cache() -> std::sync::MutexGuard<'static, HashMap<String, Cached>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Cached>>> = OnceLock::new();
    CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// The cached policy of `domain` still in force, and whether `id` needs no fetch now (it is
/// the cached policy's, or its fetch failed a moment ago).
fn cached(domain: &str, id: Option<&str>, now: Instant) -> (Option<Policy>, bool) {
    let cache = cache();
    let Some(c) = cache.get(domain) else {
        return (None, false);
    };
    let current = c.policy.as_ref().filter(|(_, _, until)| *until > now);
    let known = current.is_some_and(|(cid, _, _)| Some(cid.as_str()) == id)
        || c.failed
            .as_ref()
            .is_some_and(|(fid, retry)| Some(fid.as_str()) == id && *retry > now);
    (current.map(|(_, p, _)| p.clone()), known)
}

/// The MTA-STS policy of `domain` (see the module doc); `None` when it has none in force.
pub async fn policy_for(
    resolver: &Resolver,
    domain: &str,
    tls: &TlsSettings,
    port: u16,
    log: &dyn Fn(&str),
) -> Option<DomainPolicy> {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    let now = Instant::now();
    let txt = resolver.lookup_txt(&format!("_mta-sts.{domain}")).await;
    let id = txt.ok().and_then(|records| parse_txt(&records));
    let (current, known) = cached(&domain, id.as_deref(), now);
    let policy = match id {
        // No (valid) TXT record: a cached policy stays in force until its max_age.
        None => current,
        Some(_) if known => current,
        Some(id) => match fetch(resolver, &domain, tls, port).await {
            Ok(policy) => {
                log(&format!(
                    "MTA-STS policy for {domain}: id {id}, mode {}, max_age {}",
                    mode_name(policy.mode),
                    policy.max_age
                ));
                let until = now + Duration::from_secs(policy.max_age);
                let mut cache = cache();
                let entry = cache.entry(domain.clone()).or_default();
                entry.policy = Some((id, policy.clone(), until));
                entry.failed = None;
                Some(policy)
            }
            Err(why) => {
                log(&format!(
                    "warning: MTA-STS policy fetch for {domain} failed: {why}"
                ));
                let mut cache = cache();
                let entry = cache.entry(domain.clone()).or_default();
                entry.failed = Some((id, now + RETRY_AFTER_FAILURE));
                current
            }
        },
    };
    policy.map(|policy| DomainPolicy { domain, policy })
}

fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Enforce => "enforce",
        Mode::Testing => "testing",
        Mode::None => "none",
    }
}

/// Resolves `mta-sts.<domain>` on the core, then fetches over HTTPS off the core.
async fn fetch(
    resolver: &Resolver,
    domain: &str,
    tls: &TlsSettings,
    port: u16,
) -> Result<Policy, String> {
    let host = format!("mta-sts.{domain}");
    let addrs: Vec<SocketAddr> = resolver
        .lookup_ip(&host)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    let config = https_config(tls.roots.clone());
    let body = glommio::executor()
        .spawn_blocking(move || fetch_blocking(&host, port, addrs, config))
        .await?;
    parse_policy(&body)
}

fn https_config(roots: Arc<RootCertStore>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map(|b| b.with_root_certificates(roots).with_no_client_auth());
    match config {
        Ok(c) => Arc::new(c),
        // The ring provider supports the default versions; should that ever change, a
        // configuration that trusts nothing fails every fetch instead of trusting anything.
        Err(_) => Arc::new(
            ClientConfig::builder()
                .with_root_certificates(RootCertStore::empty())
                .with_no_client_auth(),
        ),
    }
}

/// The blocking HTTPS GET (on a blocking thread): connects only to `addrs`.
fn fetch_blocking(
    host: &str,
    port: u16,
    addrs: Vec<SocketAddr>,
    config: Arc<ClientConfig>,
) -> Result<String, String> {
    use std::io::Read;
    let agent = ureq::AgentBuilder::new()
        .tls_config(config)
        .resolver(move |_: &str| -> std::io::Result<Vec<SocketAddr>> { Ok(addrs.clone()) })
        .redirects(0)
        .timeout(FETCH_TIMEOUT)
        .build();
    let url = if port == 443 {
        format!("https://{host}/.well-known/mta-sts.txt")
    } else {
        format!("https://{host}:{port}/.well-known/mta-sts.txt")
    };
    let response = agent.get(&url).call().map_err(|e| e.to_string())?;
    if response.status() != 200 {
        return Err(format!("{url}: HTTP status {}", response.status()));
    }
    if !response.content_type().eq_ignore_ascii_case("text/plain") {
        return Err(format!(
            "{url}: media type {} is not text/plain",
            response.content_type()
        ));
    }
    let mut body = Vec::new();
    response
        .into_reader()
        .take(MAX_POLICY_SIZE + 1)
        .read_to_end(&mut body)
        .map_err(|e| format!("{url}: {e}"))?;
    if body.len() as u64 > MAX_POLICY_SIZE {
        return Err(format!("{url}: policy larger than {MAX_POLICY_SIZE} bytes"));
    }
    String::from_utf8(body).map_err(|_| format!("{url}: policy is not UTF-8"))
}

/// The policy for one MX host under `sts` (see the module doc for the precedence).
pub fn apply(
    site: SitePolicy,
    tls: &TlsSettings,
    sts: &DomainPolicy,
    dest: &Destination,
    log: &dyn Fn(&str),
) -> Result<SitePolicy, SessionError> {
    if site.level >= TlsLevel::Fingerprint || sts.policy.mode == Mode::None {
        return Ok(site);
    }
    let listed = sts.policy.allows_mx(&dest.host);
    let domain = &sts.domain;
    if sts.policy.mode == Mode::Enforce {
        if !listed {
            return Err(SessionError::Policy {
                status: "4.7.5".into(),
                text: format!(
                    "MTA-STS policy for {domain}: MX host {} does not match the policy",
                    dest.host
                ),
            });
        }
        return Ok(tls.relevel(site, TlsLevel::Secure, vec!["hostname".into()]));
    }
    if !listed {
        log(&format!(
            "warning: MTA-STS policy for {domain} (testing): MX host {} does not match the policy",
            dest.host
        ));
    }
    // Delivery exactly as configured; the TLS checks are reported from the session (at level
    // `none` there is no TLS session to report on).
    let mut site = site;
    site.sts_testing = Some(domain.clone());
    Ok(site)
}

#[cfg(test)]
mod tests;
