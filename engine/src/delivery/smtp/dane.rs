//! DANE for SMTP (RFC 7672): the `dane` and `dane-only` TLS security levels, as Postfix's
//! `dane_init` (smtp_tls_policy.c) and `tls_dane_resolve` (tls_dane.c) decide them per MX host.
//!
//! corepost validates no DNSSEC signatures itself. Like Postfix it sends its queries with the
//! EDNS DO bit (`smtp_dns_support_level = dnssec`) and trusts the AD bit of the configured name
//! servers — so they must be a *validating* resolver reached over a trusted path, normally one
//! on the same host (unbound, knot-resolver, systemd-resolved with DNSSEC=yes). An AD bit is
//! kept with the cached answer it came with (see [`crate::dns::cache`]).
//!
//! For one MX host (in this order, each step Postfix's):
//! 1. DNSSEC lookups disabled (`smtp_dns_support_level` is not `dnssec`, or `smtp_host_lookup`
//!    does not use DNS): a configuration problem — `dane` warns and becomes `may`, `dane-only`
//!    warns and defers (`4.7.5 client TLS configuration problem`).
//! 2. The MX RRset was not authenticated: `dane-only` defers (`4.7.5 non DNSSEC destination`);
//!    `dane` becomes `may` when `smtp_tls_dane_insecure_mx_policy = may`.
//! 3. TLSA records of `_port._tcp.host` are looked up only when the host's address records were
//!    authenticated (or `smtp_tls_force_insecure_host_tlsa_lookup = yes`). A lookup failure (SERVFAIL, timeout) defers: `4.7.5 TLSA lookup error for
//!    host:port`. None found, or found but not authenticated: `dane` becomes `may`, `dane-only`
//!    defers (`4.7.5 no TLSA records found`).
//! 4. Records found but none usable (usages PKIX-TA(0)/PKIX-EE(1) do not apply to SMTP, the
//!    private matching type 255, unknown selectors or matching types): TLS is mandatory but
//!    cannot be authenticated — `dane` becomes `encrypt`, `dane-only` defers (`4.7.5 TLSA
//!    records unusable`).
//! 5. An insecure MX with `smtp_tls_dane_insecure_mx_policy = encrypt` becomes `encrypt`; with
//!    `dane` (the default at level `dane`) the TLSA records are used, but a match is logged as
//!    `Trusted` (Postfix's "halfdane"), since an attacker could have chosen the MX host.
//!
//! Matching ([`verify`]), after the handshake as every level in [`super::tls`]: DANE-EE(3)
//! compares the server's certificate (selector 0) or its public key (selector 1), in full or
//! by SHA-256/SHA-512 digest, with no name or validity checks (RFC 7672 §3.1.1); DANE-TA(2)
//! needs a certificate of the server's chain (or a public key that signed it) to match, a
//! valid chain from there to the server's certificate, and the certificate's names to match the
//! TLSA base domain, the MX host name (RFC 7672 §3.1.2).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, SubjectPublicKeyInfoDer, TrustAnchor, UnixTime};

use super::SessionError;
use super::tls::Failure;
use super::tls_policy::{SitePolicy, TlsLevel, TlsSettings};
use crate::dns::{Destination, Rdata, Resolver};

/// One usable TLSA record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tlsa {
    pub usage: u8,
    pub selector: u8,
    pub mtype: u8,
    pub data: Vec<u8>,
}

/// DANE-TA(2).
pub const DANE_TA: u8 = 2;
/// DANE-EE(3).
pub const DANE_EE: u8 = 3;

/// The usable TLSA records of one host and the names a DANE-TA chain must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DaneRecords {
    pub records: Vec<Tlsa>,
    /// The TLSA base domain (the MX host name): the reference name for DANE-TA.
    pub base_domain: String,
}

/// The outcome of Postfix's `dane_incompat` for one reason.
enum Incompatible {
    /// The administrator's fault (`NONDANE_CONFIG`): warn.
    Config,
    /// The destination publishes no DANE (`NONDANE_DEST`): `dane` → `may`.
    Destination,
    /// TLS is required but cannot be authenticated (`DANE_CANTAUTH`): `dane` → `encrypt`.
    CannotAuthenticate,
}

/// What DNS says about a host: its security decides the level (see the module doc).
pub struct HostDns<'a> {
    pub resolver: &'a Resolver,
    /// DNSSEC lookups are on: `smtp_dns_support_level = dnssec` and DNS host lookups.
    pub dnssec: bool,
    pub dest: &'a Destination,
}

fn defer(text: String) -> SessionError {
    SessionError::Policy {
        status: "4.7.5".into(),
        text,
    }
}

/// Postfix's `dane_incompat`: the fallback for `dane`, the deferral for `dane-only`.
fn incompatible(
    site: SitePolicy,
    tls: &TlsSettings,
    why: Incompatible,
    text: String,
    log: &dyn Fn(&str),
) -> Result<SitePolicy, SessionError> {
    if site.level == TlsLevel::Dane {
        if matches!(why, Incompatible::Config) {
            log(&format!("warning: {text}"));
        }
        let level = match why {
            Incompatible::CannotAuthenticate => TlsLevel::Encrypt,
            _ => TlsLevel::May,
        };
        return Ok(tls.relevel(site, level, Vec::new()));
    }
    match why {
        Incompatible::Config => {
            log(&format!("warning: {text}"));
            Err(defer("client TLS configuration problem".into()))
        }
        _ => Err(defer(text)),
    }
}

/// The DANE decision for one MX host: `site` unchanged below the DANE levels, else DANE with
/// the host's TLSA records, a fallback level, or a deferral (see the module doc).
pub async fn for_host(
    site: SitePolicy,
    tls: &TlsSettings,
    dns: &HostDns<'_>,
    nexthop: &str,
    log: &dyn Fn(&str),
) -> Result<SitePolicy, SessionError> {
    if !matches!(site.level, TlsLevel::Dane | TlsLevel::DaneOnly) {
        return Ok(site);
    }
    let level_name = site.level.name();
    if !dns.dnssec {
        let dest = super::tls_policy::nexthop_domain(nexthop);
        let text = format!("{dest}: {level_name} configured with dnssec lookups disabled");
        return incompatible(site, tls, Incompatible::Config, text, log);
    }
    let dest = dns.dest;
    let insecure_mx = dest.mx_secure == Some(false);
    if insecure_mx && (site.level == TlsLevel::DaneOnly || tls.dane_insecure_mx <= TlsLevel::May) {
        let text = "non DNSSEC destination".to_string();
        return incompatible(site, tls, Incompatible::Destination, text, log);
    }
    let port = dest.addr.port();
    let records = if dest.secure || tls.force_tlsa {
        let qname = format!("_{port}._tcp.{}", dest.host);
        match dns.resolver.lookup_tlsa(&qname).await {
            (Ok(found), true) => Some(usable(&qname, &found, log)),
            (Ok(_), false) => None,
            (Err(e), _) if e.is_permanent() => None,
            (Err(e), _) => {
                // Postfix's resolver text: "Host or domain name not found. Name service error
                // for name=... type=TLSA: Host not found, try again".
                log(&format!("warning: DANE TLSA lookup problem: {e}"));
                return Err(defer(format!("TLSA lookup error for {}:{port}", dest.host)));
            }
        }
    } else {
        None
    };
    let Some(records) = records else {
        let text = "no TLSA records found".to_string();
        return incompatible(site, tls, Incompatible::Destination, text, log);
    };
    if records.is_empty() {
        let text = "TLSA records unusable".to_string();
        return incompatible(site, tls, Incompatible::CannotAuthenticate, text, log);
    }
    let mut level = site.level;
    if insecure_mx {
        if tls.dane_insecure_mx == TlsLevel::Encrypt {
            let text = "Verification not possible, MX RRset is insecure".to_string();
            return incompatible(site, tls, Incompatible::CannotAuthenticate, text, log);
        }
        level = TlsLevel::HalfDane;
    }
    let dane = DaneRecords {
        records,
        base_domain: dest.host.clone(),
    };
    Ok(SitePolicy {
        level,
        matches: vec![dest.host.clone()],
        config: site.config,
        dane: Some(Arc::new(dane)),
        sts_testing: None,
    })
}

/// The usable records of an authenticated TLSA RRset; the others are logged and dropped, as
/// Postfix's `parse_tlsa_rr` and OpenSSL's `SSL_dane_tlsa_add` do.
pub fn usable(qname: &str, found: &[Rdata], log: &dyn Fn(&str)) -> Vec<Tlsa> {
    let mut out = Vec::new();
    for r in found {
        let Rdata::Tlsa {
            usage,
            selector,
            mtype,
            data,
        } = r
        else {
            continue;
        };
        let carp = |why: &str| {
            log(&format!(
                "warning: {qname} {why}: {usage} {selector} {mtype} {}",
                hex_head(data)
            ))
        };
        if *usage != DANE_TA && *usage != DANE_EE {
            carp("unsupported TLSA certificate usage");
            continue;
        }
        if *mtype == 255 {
            carp("reserved private-use matching type");
            continue;
        }
        let digest_len = match mtype {
            0 => None,
            1 => Some(32),
            2 => Some(64),
            _ => {
                carp("unusable TLSA RR");
                continue;
            }
        };
        if *selector > 1 || digest_len.is_some_and(|n| n != data.len()) || data.is_empty() {
            carp("unusable TLSA RR");
            continue;
        }
        out.push(Tlsa {
            usage: *usage,
            selector: *selector,
            mtype: *mtype,
            data: data.clone(),
        });
    }
    out
}

/// Hex of TLSA data for a log line: up to 64 bytes, else the first and last 32 with `...`.
fn hex_head(data: &[u8]) -> String {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02X}")).collect::<String>();
    if data.len() > 64 {
        let (head, tail) = (&data[..32], &data[data.len() - 32..]);
        format!("{}...{}", hex(head), hex(tail))
    } else if data.is_empty() {
        "...".into()
    } else {
        hex(data)
    }
}

/// The certificate (selector 0) or its SubjectPublicKeyInfo (selector 1), as the record's
/// matching type presents it (0: in full, 1: SHA-256, 2: SHA-512).
fn matches_record(record: &Tlsa, cert: &CertificateDer<'_>) -> bool {
    let selected: Vec<u8> = match record.selector {
        0 => cert.as_ref().to_vec(),
        1 => match webpki::EndEntityCert::try_from(cert) {
            Ok(ee) => spki_der(&ee),
            Err(_) => return false,
        },
        _ => return false,
    };
    digest_matches(record, &selected)
}

fn digest_matches(record: &Tlsa, selected: &[u8]) -> bool {
    use ring::digest;
    match record.mtype {
        0 => selected == record.data.as_slice(),
        1 => digest::digest(&digest::SHA256, selected).as_ref() == record.data.as_slice(),
        2 => digest::digest(&digest::SHA512, selected).as_ref() == record.data.as_slice(),
        _ => false,
    }
}

/// The DER SubjectPublicKeyInfo, SEQUENCE header included (what TLSA selector 1 covers).
fn spki_der(ee: &webpki::EndEntityCert<'_>) -> Vec<u8> {
    ee.subject_public_key_info().as_ref().to_vec()
}

/// Does the server's chain (`certs[0]` its own) satisfy the TLSA records? `Err` says why not,
/// in OpenSSL's words as Postfix logs them.
pub fn verify(certs: &[CertificateDer<'_>], dane: &DaneRecords) -> Result<(), Failure> {
    let no_match = || Failure {
        prefix: "server ",
        text: "num=65:no matching DANE TLSA records".into(),
    };
    let Some(leaf) = certs.first() else {
        return Err(no_match());
    };
    let ee_records = dane.records.iter().filter(|r| r.usage == DANE_EE);
    if ee_records.clone().any(|r| matches_record(r, leaf)) {
        return Ok(());
    }
    let mut failure = no_match();
    for record in dane.records.iter().filter(|r| r.usage == DANE_TA) {
        match verify_ta(certs, record, dane) {
            TaResult::Verified => return Ok(()),
            TaResult::NoAnchor => {}
            TaResult::Failed(f) => failure = f,
        }
    }
    Err(failure)
}

enum TaResult {
    Verified,
    /// The record matched nothing in the chain.
    NoAnchor,
    /// It matched, but the chain or the name did not verify.
    Failed(Failure),
}

/// DANE-TA(2): a certificate of the chain above the server's (or, for a full public key
/// record, the key that signed the top of the chain) is the trust anchor.
fn verify_ta(certs: &[CertificateDer<'_>], record: &Tlsa, dane: &DaneRecords) -> TaResult {
    let Some(leaf) = certs.first() else {
        return TaResult::NoAnchor;
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return TaResult::NoAnchor;
    };
    let intermediates = certs.get(1..).unwrap_or_default();
    let mut anchors: Vec<TrustAnchor<'_>> = Vec::new();
    for cert in intermediates {
        if matches_record(record, cert)
            && let Ok(anchor) = webpki::anchor_from_trusted_cert(cert)
        {
            anchors.push(anchor.to_owned());
        }
    }
    let top = intermediates.last().unwrap_or(leaf);
    let bare_key = (anchors.is_empty() && record.selector == 1 && record.mtype == 0)
        .then(|| bare_key_anchor(top, &record.data))
        .flatten();
    anchors.extend(bare_key);
    if anchors.is_empty() {
        return TaResult::NoAnchor;
    }
    let chain = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &anchors,
        intermediates,
        UnixTime::now(),
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    if let Err(e) = chain {
        return TaResult::Failed(Failure {
            prefix: "server ",
            text: format!("num=0:{e:?}"),
        });
    }
    if super::tls::certificate_names_match(&ee, std::slice::from_ref(&dane.base_domain)) {
        TaResult::Verified
    } else {
        TaResult::Failed(Failure {
            prefix: "server ",
            text: "num=62:hostname mismatch".into(),
        })
    }
}

/// A trust anchor made of a bare public key (a `2 1 0` record): the subject is the issuer of
/// the top certificate of the chain, which that key must have signed.
fn bare_key_anchor(top: &CertificateDer<'_>, spki: &[u8]) -> Option<TrustAnchor<'static>> {
    let cert = webpki::EndEntityCert::try_from(top).ok()?;
    let spki = SubjectPublicKeyInfoDer::from(spki);
    let contents = strip_sequence(spki.as_ref())?;
    Some(TrustAnchor {
        subject: cert.issuer().to_vec().into(),
        subject_public_key_info: contents.to_vec().into(),
        name_constraints: None,
    })
}

/// The contents of a DER SEQUENCE.
fn strip_sequence(der: &[u8]) -> Option<&[u8]> {
    if der.first() != Some(&0x30) {
        return None;
    }
    let first = *der.get(1)?;
    let (len, start) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for b in der.get(2..2 + n)? {
            len = (len << 8) | usize::from(*b);
        }
        (len, 2 + n)
    };
    der.get(start..start.checked_add(len)?)
        .filter(|_| start + len == der.len())
}

#[cfg(test)]
mod tests;
