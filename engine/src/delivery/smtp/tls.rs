//! The client side of STARTTLS: rustls configurations, trust anchors, and what the server's
//! certificate is worth.
//!
//! As in Postfix, the handshake itself accepts any certificate (its handshake signature is still
//! checked against the certificate's key, so the peer holds that key), and the certificate is
//! judged *after* the handshake, by [`judge`]: `Trusted` when the chain leads to a trust anchor,
//! `Verified` when the level requires a match and it matched (a fingerprint, or a trusted chain
//! with a match name). The session's level then decides: from `fingerprint` up an unmatched
//! certificate ends the connection with `4.7.5 Server certificate not verified` before any mail
//! is sent — never a fallback to plaintext or to an unchecked session; below that the result
//! only decides the word in the log line (`Trusted`/`Untrusted TLS connection established`).
//!
//! Trust anchors are `smtp_tls_CAfile`/`smtp_tls_CApath` when either is set (and then only
//! those, as Postfix with `tls_append_default_CA = no`), else the system's store through
//! `rustls-native-certs` (`/etc/ssl/certs`, `SSL_CERT_FILE`/`SSL_CERT_DIR`): the store the
//! operator already manages with `update-ca-certificates`, local CAs included, rather than a
//! bundle compiled into the binary. Postfix with neither set trusts nothing; corepost trusts the
//! system's store there, as Debian's packaged main.cf (`smtp_tls_CApath = /etc/ssl/certs`) does.
//!
//! Configurations are shared per set of protocol versions for the whole process: each holds the
//! session-resumption cache, so a second connection to the same server resumes cheaply.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::tls_policy::{Digest, SitePolicy, TlsLevel, nexthop_domain, parse_fingerprint};

/// TLS 1.3 and 1.2: what LMTP offers.
pub const ALL_VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The process-wide configuration for these protocol versions (see the module docs).
pub fn client_config(versions: &[&'static rustls::SupportedProtocolVersion]) -> Arc<ClientConfig> {
    type Configs = Mutex<HashMap<Vec<u16>, Arc<ClientConfig>>>;
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    let key: Vec<u16> = versions.iter().map(|v| u16::from(v.version)).collect();
    let mut configs = CONFIGS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    configs
        .entry(key)
        .or_insert_with(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
            let config = ClientConfig::builder_with_provider(provider)
                .with_protocol_versions(versions)
                .expect("the ring provider supports TLS 1.2 and 1.3")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

/// The trust anchors: CAfile/CApath, else (when `wanted`) the system's store.
pub fn load_roots(
    ca_file: &str,
    ca_path: &str,
    wanted: bool,
) -> Result<Arc<RootCertStore>, String> {
    let mut roots = RootCertStore::empty();
    if !ca_file.is_empty() {
        add_pem_file(&mut roots, Path::new(ca_file), true)
            .map_err(|e| format!("parameter smtp_tls_CAfile: {e}"))?;
    }
    if !ca_path.is_empty() {
        let dir = std::fs::read_dir(ca_path)
            .map_err(|e| format!("parameter smtp_tls_CApath: {ca_path}: {e}"))?;
        for entry in dir.flatten() {
            // Hash links and unrelated files alike: whatever parses as a certificate counts.
            let _ = add_pem_file(&mut roots, &entry.path(), false);
        }
    }
    if ca_file.is_empty() && ca_path.is_empty() && wanted {
        return Ok(system_roots());
    }
    Ok(Arc::new(roots))
}

fn add_pem_file(roots: &mut RootCertStore, path: &Path, strict: bool) -> Result<(), String> {
    use rustls::pki_types::pem::PemObject;
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if strict && certs.is_empty() {
        return Err(format!("{}: no PEM certificate found", path.display()));
    }
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: unusable CA certificate: {e}", path.display()))?;
    }
    Ok(())
}

/// The system's trust store, loaded once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            Arc::new(roots)
        })
        .clone()
}

/// The server name for SNI: the host name when it is a valid DNS name, else the address (rustls
/// sends no SNI for an address).
pub fn server_name(host: &str, addr: SocketAddr) -> ServerName<'static> {
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.');
    if host.parse::<std::net::IpAddr>().is_err()
        && let Ok(name) = ServerName::try_from(host.to_string())
    {
        return name;
    }
    ServerName::IpAddress(addr.ip().into())
}

/// Accepts any server certificate in the handshake but checks handshake signatures; [`judge`]
/// decides afterwards what the certificate is worth.
#[derive(Debug)]
pub struct AcceptAnyCertificate(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// What the certificate is worth; the first word of Postfix's log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    Untrusted,
    Trusted,
    Verified,
}

impl Trust {
    pub fn word(self) -> &'static str {
        match self {
            Trust::Untrusted => "Untrusted",
            Trust::Trusted => "Trusted",
            Trust::Verified => "Verified",
        }
    }
}

/// The judgement of one server certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub trust: Trust,
    /// The level required a match and it failed: why, as Postfix logs it.
    pub failure: Option<Failure>,
}

/// `{prefix}certificate verification failed for host[addr]:port: {text}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `""` or `"server "` (Postfix words some errors with the certificate's purpose).
    pub prefix: &'static str,
    pub text: String,
}

fn failure(prefix: &'static str, text: &str) -> Failure {
    Failure {
        prefix,
        text: text.to_string(),
    }
}

/// Judge the server's chain (`certs[0]` is the server's own) for `site`, with `host` the MX host
/// name and `nexthop` the next hop as the queue manager has it.
pub fn judge(
    certs: &[CertificateDer<'_>],
    site: &SitePolicy,
    digest: Digest,
    roots: &RootCertStore,
    host: &str,
    nexthop: &str,
) -> Judgement {
    let Some(leaf) = certs.first() else {
        return fail_or(
            site.level,
            Trust::Untrusted,
            failure("server ", "num=0:no certificate"),
        );
    };
    let Ok(ee) = webpki::EndEntityCert::try_from(leaf) else {
        return fail_or(
            site.level,
            Trust::Untrusted,
            failure("server ", "num=0:unparsable certificate"),
        );
    };
    let now = UnixTime::now();
    let chain = ee.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &roots.roots,
        certs.get(1..).unwrap_or_default(),
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    let trusted = chain.is_ok();
    let base = if trusted {
        Trust::Trusted
    } else {
        Trust::Untrusted
    };
    match site.level {
        TlsLevel::Fingerprint => {
            let spki = ee.subject_public_key_info();
            let cert_fp = digest.digest(leaf.as_ref());
            let key_fp = digest.digest(spki.as_ref());
            let hit = site
                .matches
                .iter()
                .filter_map(|m| parse_fingerprint(m))
                .any(|f| f == cert_fp || f == key_fp);
            if hit {
                return Judgement {
                    trust: Trust::Verified,
                    failure: None,
                };
            }
            fail_or(
                site.level,
                base,
                failure("server ", "num=65:no matching DANE TLSA records"),
            )
        }
        TlsLevel::Verify | TlsLevel::Secure => {
            if let Err(e) = chain {
                return fail_or(site.level, base, chain_error(&e, certs, &ee));
            }
            let references = references(&site.matches, host, nexthop);
            if certificate_names_match(&ee, &references) {
                Judgement {
                    trust: Trust::Verified,
                    failure: None,
                }
            } else {
                fail_or(
                    site.level,
                    base,
                    failure("server ", "num=62:hostname mismatch"),
                )
            }
        }
        TlsLevel::HalfDane | TlsLevel::Dane | TlsLevel::DaneOnly => {
            let verified = match &site.dane {
                Some(dane) => super::dane::verify(certs, dane),
                None => Err(failure("server ", "num=65:no matching DANE TLSA records")),
            };
            match verified {
                // Postfix: an insecure MX RRset makes a DANE match "Trusted", not "Verified".
                Ok(()) if site.level == TlsLevel::HalfDane => Judgement {
                    trust: Trust::Trusted,
                    failure: None,
                },
                Ok(()) => Judgement {
                    trust: Trust::Verified,
                    failure: None,
                },
                Err(why) => fail_or(site.level, base, why),
            }
        }
        _ => Judgement {
            trust: base,
            failure: None,
        },
    }
}

/// Does one of the certificate's DNS names (its common name when it has none, as OpenSSL)
/// match one of the reference names?
pub(super) fn certificate_names_match(
    ee: &webpki::EndEntityCert<'_>,
    references: &[String],
) -> bool {
    let mut names: Vec<String> = ee.valid_dns_names().map(str::to_ascii_lowercase).collect();
    if names.is_empty() {
        names = common_names(ee.subject());
    }
    names
        .iter()
        .any(|n| references.iter().any(|r| name_matches(n, r)))
}

fn fail_or(level: TlsLevel, trust: Trust, why: Failure) -> Judgement {
    Judgement {
        trust,
        failure: level.must_match().then_some(why),
    }
}

/// OpenSSL's words for a chain that does not verify, as Postfix's `tls_log_verify_error`.
fn chain_error(
    e: &webpki::Error,
    certs: &[CertificateDer<'_>],
    ee: &webpki::EndEntityCert<'_>,
) -> Failure {
    match e {
        webpki::Error::UnknownIssuer if certs.len() == 1 && ee.issuer() == ee.subject() => {
            failure("", "self-signed certificate")
        }
        webpki::Error::UnknownIssuer => failure("", "untrusted issuer"),
        webpki::Error::CertExpired { .. } => failure("server ", "certificate has expired"),
        webpki::Error::CertNotValidYet { .. } => failure("server ", "certificate not yet valid"),
        other => failure("server ", &format!("num=0:{other:?}")),
    }
}

/// The reference names of a match list: `hostname`, `nexthop`, `dot-nexthop` resolved; a name
/// as is; `.domain` meaning its subdomains.
fn references(matches: &[String], host: &str, nexthop: &str) -> Vec<String> {
    let domain = nexthop_domain(nexthop).to_ascii_lowercase();
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    matches
        .iter()
        .map(|m| match m.to_ascii_lowercase().as_str() {
            "hostname" => host.clone(),
            "nexthop" => domain.clone(),
            "dot-nexthop" => format!(".{domain}"),
            other => other.trim_end_matches('.').to_string(),
        })
        .collect()
}

/// Does a certificate name (possibly `*.example.com`) match a reference (`name`, or `.domain`
/// for any subdomain)? A wildcard stands for one or more leftmost labels, as Postfix's default
/// `tls_wildcard_matches_multiple_labels = yes`.
fn name_matches(cert_name: &str, reference: &str) -> bool {
    let cert = cert_name.trim_end_matches('.');
    if let Some(parent) = reference.strip_prefix('.') {
        return is_subdomain(cert, parent);
    }
    match cert.strip_prefix("*.") {
        Some(wild_parent) => is_subdomain(reference, wild_parent),
        None => cert == reference,
    }
}

/// `name` is `parent` with at least one label in front.
fn is_subdomain(name: &str, parent: &str) -> bool {
    name.len() > parent.len() + 1
        && name.ends_with(parent)
        && name.as_bytes()[name.len() - parent.len() - 1] == b'.'
}

/// The commonName values of a DER-encoded subject (short string values; anything odd is
/// skipped, never a panic).
fn common_names(subject: &[u8]) -> Vec<String> {
    const CN_OID: [u8; 5] = [0x06, 0x03, 0x55, 0x04, 0x03];
    let mut names = Vec::new();
    let mut at = 0;
    while let Some(i) = subject
        .get(at..)
        .and_then(|rest| rest.windows(CN_OID.len()).position(|w| w == CN_OID))
    {
        let start = at + i + CN_OID.len();
        at = start;
        // UTF8String, PrintableString, T61String, IA5String with a one-byte length.
        let (Some(&tag), Some(&len)) = (subject.get(start), subject.get(start + 1)) else {
            break;
        };
        if !matches!(tag, 0x0c | 0x13 | 0x14 | 0x16) || len >= 0x80 {
            continue;
        }
        if let Some(value) = subject.get(start + 2..start + 2 + usize::from(len))
            && let Ok(text) = std::str::from_utf8(value)
        {
            names.push(text.trim_end_matches('.').to_ascii_lowercase());
        }
    }
    names
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits) key-exchange X25519`, for log
/// lines (the same words as smtpd's).
pub fn describe(conn: &rustls::ClientConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    let Some(suite) = conn.negotiated_cipher_suite() else {
        return version;
    };
    let (name, bits) = crate::smtpd::tls::openssl_name(suite.suite());
    let mut s = format!("{version} with cipher {name} ({bits}/{bits} bits)");
    if let Some(group) = conn.negotiated_key_exchange_group() {
        s.push_str(&format!(" key-exchange {:?}", group.name()));
    }
    s
}

/// The connection's byte stream: plain TCP until STARTTLS, TLS after; or a Unix-domain socket
/// (LMTP's `unix:` next hops), which is never upgraded.
pub type Stream = crate::stream::MaybeTls<futures_rustls::client::TlsStream<TcpStream>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(name_matches("mail.example.com", "mail.example.com"));
        assert!(name_matches("*.example.com", "mail.example.com"));
        // tls_wildcard_matches_multiple_labels = yes, Postfix's default.
        assert!(name_matches("*.example.com", "a.b.example.com"));
        assert!(!name_matches("*.example.com", "example.com"));
        assert!(name_matches("mail.example.com", ".example.com"));
        assert!(name_matches("*.example.com", ".example.com"));
        assert!(!name_matches("example.com", ".example.com"));
        assert!(!name_matches("badexample.com", ".example.com"));
        assert!(!name_matches("mail.example.org", "mail.example.com"));
    }

    #[test]
    fn trust_anchors_from_cafile_and_capath() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, a.cert.pem()).unwrap();
        let sub = dir.path().join("certs");
        std::fs::create_dir(&sub).unwrap();
        std::fs::write(sub.join("0a1b2c3d.0"), b.cert.pem()).unwrap();
        std::fs::write(sub.join("README"), "not a certificate").unwrap();
        let roots = load_roots(
            &file.display().to_string(),
            &sub.display().to_string(),
            true,
        )
        .unwrap();
        assert_eq!(roots.len(), 2);
        // Neither set and nothing needs TLS: no store at all.
        assert!(load_roots("", "", false).unwrap().is_empty());
        let e = load_roots(&sub.join("README").display().to_string(), "", true).unwrap_err();
        assert!(
            e.contains("smtp_tls_CAfile") && e.contains("no PEM certificate"),
            "{e}"
        );
    }

    #[test]
    fn common_name_without_dns_names() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Mail.Example.COM");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ee = webpki::EndEntityCert::try_from(cert.der()).unwrap();
        assert_eq!(ee.valid_dns_names().count(), 0);
        assert_eq!(common_names(ee.subject()), ["mail.example.com"]);
        assert!(common_names(&[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c]).is_empty());
        assert!(common_names(&[0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x05, b'a']).is_empty());
    }

    #[test]
    fn match_references() {
        let m: Vec<String> = ["hostname", "nexthop", "dot-nexthop", "Other.Example."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            references(&m, "MX1.example.net.", "[relay.example.com]:587"),
            [
                "mx1.example.net",
                "relay.example.com",
                ".relay.example.com",
                "other.example"
            ]
        );
    }
}
