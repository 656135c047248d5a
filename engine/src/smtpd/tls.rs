//! The server side of TLS for smtpd: `smtpd_tls_security_level`, the
//! certificate and key files, the rustls configuration, and the byte stream
//! that is plain TCP until STARTTLS (or from the start with
//! `smtpd_tls_wrappermode`) and TLS after.
//!
//! The certificate files are read when a service's settings are resolved —
//! at start and at every reload (SIGHUP) — so a renewed certificate is used
//! by new sessions after `corepost reload`; running sessions keep the one
//! they started with. A certificate that cannot be loaded does not stop
//! the service (Postfix's behaviour): see [`ServerTls::problem`]. Only TLS 1.2 and 1.3 exist in rustls;
//! `smtpd_tls_protocols` (`smtpd_tls_mandatory_protocols` at level
//! `encrypt`) can narrow that to one of them.
//!
//! `smtpd_tls_chain_files` (each file a key followed by its certificate
//! chain) takes precedence over `smtpd_tls_cert_file`/`smtpd_tls_key_file`,
//! as in Postfix; with several chain files (say RSA and ECDSA) the first
//! whose key can sign with a scheme the client offers is used.

use glommio::net::TcpStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, ServerConnection};
use std::sync::Arc;

/// `smtpd_tls_security_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// No STARTTLS (empty or `none`).
    None,
    /// STARTTLS offered, not required.
    May,
    /// STARTTLS required before MAIL and AUTH.
    Encrypt,
}

impl Level {
    pub fn parse(value: &str) -> Result<Level, String> {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "none" => Ok(Level::None),
            "may" => Ok(Level::May),
            "encrypt" => Ok(Level::Encrypt),
            other => Err(format!(
                "parameter smtpd_tls_security_level: unknown level \"{other}\" (none, may or encrypt)"
            )),
        }
    }
}

/// A service's TLS settings.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub level: Level,
    /// TLS from the first byte (smtps/submissions).
    pub wrappermode: bool,
    /// `None` when TLS is off or could not be set up.
    pub config: Option<Arc<ServerConfig>>,
    /// Why TLS is wanted but not available (unreadable certificate, ...).
    /// As in Postfix this does not stop the service: STARTTLS answers 454,
    /// `encrypt` refuses mail, wrapper-mode connections are dropped, and
    /// each says why in the log.
    pub problem: Option<String>,
    pub loglevel: i64,
    pub received_header: bool,
    pub handshake_timeout: std::time::Duration,
}

impl ServerTls {
    /// Whether STARTTLS is advertised on a session that is not yet TLS.
    pub fn offers_starttls(&self) -> bool {
        self.level != Level::None && !self.wrappermode
    }

    /// Build from the parameters; `get` reads one (already expanded).
    pub fn from_params(get: &dyn Fn(&str) -> Result<String, String>) -> Result<ServerTls, String> {
        let level = Level::parse(&corepost_config::tls_level::effective_level(
            get,
            corepost_config::tls_level::TlsSide::Smtpd,
        )?)?;
        let wrappermode = parse_bool(&get("smtpd_tls_wrappermode")?);
        let (config, problem) = if level != Level::None || wrappermode {
            match load(get, level) {
                Ok(c) => (Some(c), None),
                Err(e) => (None, Some(e)),
            }
        } else {
            (None, None)
        };
        let loglevel = get("smtpd_tls_loglevel")?.trim().parse().unwrap_or(0);
        Ok(ServerTls {
            level,
            wrappermode,
            config,
            problem,
            loglevel,
            received_header: parse_bool(&get("smtpd_tls_received_header")?),
            handshake_timeout: corepost_config::value::parse_time(
                &get("smtpd_starttls_timeout")?,
                's',
            )
            .unwrap_or(std::time::Duration::from_secs(300)),
        })
    }
}

/// The rustls configuration from the certificate, key and protocol
/// parameters.
fn load(
    get: &dyn Fn(&str) -> Result<String, String>,
    level: Level,
) -> Result<Arc<ServerConfig>, String> {
    let chains =
        corepost_config::list::split_list(&get("smtpd_tls_chain_files")?).unwrap_or_default();
    let keys = if chains.is_empty() {
        let cert = get("smtpd_tls_cert_file")?;
        let key = get("smtpd_tls_key_file")?;
        if cert.trim().is_empty() {
            return Err("no server certificate: neither smtpd_tls_cert_file nor smtpd_tls_chain_files is set".into());
        }
        vec![load_pair(cert.trim(), key.trim())?]
    } else {
        chains
            .iter()
            .map(|f| load_pair(f, f))
            .collect::<Result<_, _>>()?
    };
    let protocols_param = if level == Level::Encrypt {
        "smtpd_tls_mandatory_protocols"
    } else {
        "smtpd_tls_protocols"
    };
    let versions = protocols(&get(protocols_param)?)
        .map_err(|e| format!("parameter {protocols_param}: {e}"))?;
    server_config(keys, versions)
}

fn parse_bool(v: &str) -> bool {
    corepost_config::value::parse_bool(v).unwrap_or(false)
}

/// A private key and its certificate chain from PEM files (the same file
/// for both is fine, and is what a chain file is).
fn load_pair(cert_file: &str, key_file: &str) -> Result<Arc<CertifiedKey>, String> {
    let read = |f: &str| std::fs::read(f).map_err(|e| format!("cannot read TLS file {f}: {e}"));
    let cert_pem = read(cert_file)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{cert_file}: bad PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err(format!("{cert_file}: no certificate found"));
    }
    let key_pem = if key_file == cert_file {
        cert_pem
    } else {
        read(key_file)?
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{key_file}: no usable private key: {e}"))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{key_file}: unsupported private key: {e}"))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| format!("{cert_file}: certificate does not match {key_file}: {e}"))?;
    Ok(Arc::new(certified))
}

/// Picks the first key that can sign with a scheme the client offers.
#[derive(Debug)]
struct Keys(Vec<Arc<CertifiedKey>>);

impl ResolvesServerCert for Keys {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0
            .iter()
            .find(|k| k.key.choose_scheme(hello.signature_schemes()).is_some())
            .or_else(|| self.0.first())
            .cloned()
    }
}

/// Which of TLS 1.2 and 1.3 a Postfix protocol list allows:
/// `>=TLSv1.2`, `<=TLSv1.2`, `!TLSv1.2`, or names of protocols to allow
/// (`TLSv1.3`). Older protocols named in it do not matter: rustls has none.
pub(crate) fn protocols(
    list: &str,
) -> Result<Vec<&'static rustls::SupportedProtocolVersion>, String> {
    const ORDER: [&str; 6] = ["sslv2", "sslv3", "tlsv1", "tlsv1.1", "tlsv1.2", "tlsv1.3"];
    let rank = |name: &str| {
        ORDER
            .iter()
            .position(|p| p.eq_ignore_ascii_case(name))
            .ok_or_else(|| format!("unknown protocol \"{name}\""))
    };
    let (mut allow12, mut allow13) = (true, true);
    let mut named: Option<(bool, bool)> = None;
    for word in corepost_config::list::split_list(list).unwrap_or_default() {
        if let Some(v) = word.strip_prefix(">=") {
            let r = rank(v)?;
            allow12 &= r <= 4;
            allow13 &= r <= 5;
        } else if let Some(v) = word.strip_prefix("<=") {
            let r = rank(v)?;
            allow12 &= r >= 4;
            allow13 &= r >= 5;
        } else if let Some(v) = word.strip_prefix('!') {
            let r = rank(v)?;
            allow12 &= r != 4;
            allow13 &= r != 5;
        } else {
            let r = rank(&word)?;
            let n = named.get_or_insert((false, false));
            n.0 |= r == 4;
            n.1 |= r == 5;
        }
    }
    if let Some((n12, n13)) = named {
        allow12 &= n12;
        allow13 &= n13;
    }
    let mut v = Vec::new();
    if allow13 {
        v.push(&rustls::version::TLS13);
    }
    if allow12 {
        v.push(&rustls::version::TLS12);
    }
    if v.is_empty() {
        return Err(format!("\"{list}\" leaves neither TLSv1.2 nor TLSv1.3"));
    }
    Ok(v)
}

fn server_config(
    keys: Vec<Arc<CertifiedKey>>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
) -> Result<Arc<ServerConfig>, String> {
    let config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&versions)
            .map_err(|e| format!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Keys(keys)));
    Ok(Arc::new(config))
}

/// What the policy protocol reports of a TLS session (`encryption_protocol`,
/// `encryption_cipher`, `encryption_keysize`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSummary {
    pub protocol: String,
    pub cipher: String,
    pub bits: u32,
}

impl TlsSummary {
    pub fn of(conn: &ServerConnection) -> TlsSummary {
        let (cipher, bits) = conn
            .negotiated_cipher_suite()
            .map(|s| openssl_name(s.suite()))
            .unwrap_or_default();
        TlsSummary {
            protocol: protocol_name(conn),
            cipher,
            bits,
        }
    }
}

fn protocol_name(conn: &ServerConnection) -> String {
    match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    }
}

/// `TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`, Postfix's
/// wording with OpenSSL's cipher names.
pub fn describe(conn: &ServerConnection) -> String {
    let version = protocol_name(conn);
    let Some(suite) = conn.negotiated_cipher_suite() else {
        return version;
    };
    let (name, bits) = openssl_name(suite.suite());
    let mut s = format!("{version} with cipher {name} ({bits}/{bits} bits)");
    if let Some(group) = conn.negotiated_key_exchange_group() {
        s.push_str(&format!(" key-exchange {:?}", group.name()));
    }
    s
}

pub(crate) fn openssl_name(suite: rustls::CipherSuite) -> (String, u32) {
    use rustls::CipherSuite as C;
    let (name, bits) = match suite {
        C::TLS13_AES_128_GCM_SHA256 => ("TLS_AES_128_GCM_SHA256", 128),
        C::TLS13_AES_256_GCM_SHA384 => ("TLS_AES_256_GCM_SHA384", 256),
        C::TLS13_CHACHA20_POLY1305_SHA256 => ("TLS_CHACHA20_POLY1305_SHA256", 256),
        C::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-ECDSA-AES128-GCM-SHA256", 128),
        C::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-ECDSA-AES256-GCM-SHA384", 256),
        C::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256 => ("ECDHE-ECDSA-CHACHA20-POLY1305", 256),
        C::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 => ("ECDHE-RSA-AES128-GCM-SHA256", 128),
        C::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384 => ("ECDHE-RSA-AES256-GCM-SHA384", 256),
        C::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256 => ("ECDHE-RSA-CHACHA20-POLY1305", 256),
        other => return (format!("{other:?}"), 0),
    };
    (name.to_string(), bits)
}

/// The session's byte stream: plain TCP until STARTTLS, TLS after (never
/// a Unix socket here).
pub type Stream = crate::stream::MaybeTls<futures_rustls::server::TlsStream<TcpStream>>;

impl Stream {
    pub fn tls(&self) -> Option<&ServerConnection> {
        match self {
            Stream::Tls(s) => Some(s.get_ref().1),
            _ => None,
        }
    }

    /// Whether the client has already sent something (a plain TCP stream
    /// only): a non-blocking peek, for talk before the greeting.
    pub fn input_waiting(&self) -> bool {
        use std::os::fd::AsRawFd;
        let Stream::Plain(s) = self else {
            return false;
        };
        let mut byte = 0u8;
        // SAFETY: recv with MSG_PEEK into a one-byte buffer we own; the
        // descriptor stays open for the duration of the call.
        let n = unsafe {
            libc::recv(
                s.as_raw_fd(),
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        n > 0
    }

    pub fn local_addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            Stream::Plain(s) => s.local_addr().ok(),
            Stream::Tls(s) => s.get_ref().0.local_addr().ok(),
            Stream::Unix(_) | Stream::Gone => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_files(dir: &std::path::Path) -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["mx.test.example".into()]).unwrap();
        let cert = dir.join("cert.pem");
        let key = dir.join("key.pem");
        std::fs::write(&cert, c.cert.pem()).unwrap();
        std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
        (cert.display().to_string(), key.display().to_string())
    }

    fn params<'a>(map: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Result<String, String> + 'a {
        move |n: &str| {
            Ok(map
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.to_string())
                .unwrap_or_default())
        }
    }

    #[test]
    fn protocol_lists() {
        let names = |l: &str| {
            protocols(l).map(|v| {
                v.iter()
                    .map(|p| format!("{:?}", p.version))
                    .collect::<Vec<_>>()
            })
        };
        assert_eq!(names(">=TLSv1.2").unwrap(), ["TLSv1_3", "TLSv1_2"]);
        assert_eq!(names(">=TLSv1").unwrap(), ["TLSv1_3", "TLSv1_2"]);
        assert_eq!(names("").unwrap(), ["TLSv1_3", "TLSv1_2"]);
        assert_eq!(names(">=TLSv1.3").unwrap(), ["TLSv1_3"]);
        assert_eq!(
            names("!SSLv2, !SSLv3, !TLSv1, !TLSv1.1, !TLSv1.2").unwrap(),
            ["TLSv1_3"]
        );
        assert_eq!(names("<=TLSv1.2").unwrap(), ["TLSv1_2"]);
        assert_eq!(names("TLSv1.2").unwrap(), ["TLSv1_2"]);
        assert!(names("!TLSv1.2, !TLSv1.3").is_err());
        assert!(names(">=TLSv9").is_err());
    }

    #[test]
    fn levels_and_files() {
        assert_eq!(Level::parse("").unwrap(), Level::None);
        assert_eq!(Level::parse("MAY").unwrap(), Level::May);
        assert!(Level::parse("dane").is_err());
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = pem_files(dir.path());
        let ok = [
            ("smtpd_tls_security_level", "may"),
            ("smtpd_tls_cert_file", cert.as_str()),
            ("smtpd_tls_key_file", key.as_str()),
        ];
        let tls = ServerTls::from_params(&params(&ok)).unwrap();
        assert!(tls.offers_starttls());
        // A chain file: key and certificate in one.
        let chain = dir.path().join("chain.pem");
        std::fs::write(
            &chain,
            std::fs::read_to_string(&key).unwrap() + &std::fs::read_to_string(&cert).unwrap(),
        )
        .unwrap();
        let chain = chain.display().to_string();
        let with_chain = [
            ("smtpd_tls_wrappermode", "yes"),
            ("smtpd_tls_chain_files", chain.as_str()),
        ];
        let tls = ServerTls::from_params(&params(&with_chain)).unwrap();
        assert!(tls.config.is_some() && !tls.offers_starttls() && tls.problem.is_none());
        // Missing files and a key that does not match are named.
        let missing = [
            ("smtpd_tls_security_level", "encrypt"),
            ("smtpd_tls_cert_file", "/nonexistent/cert.pem"),
        ];
        let tls = ServerTls::from_params(&params(&missing)).unwrap();
        assert!(tls.config.is_none() && tls.offers_starttls());
        let e = tls.problem.unwrap();
        assert!(e.contains("/nonexistent/cert.pem"), "{e}");
        let other = tempfile::tempdir().unwrap();
        let (_, other_key) = pem_files(other.path());
        let mismatch = [
            ("smtpd_tls_security_level", "may"),
            ("smtpd_tls_cert_file", cert.as_str()),
            ("smtpd_tls_key_file", other_key.as_str()),
        ];
        let e = ServerTls::from_params(&params(&mismatch))
            .unwrap()
            .problem
            .unwrap();
        assert!(e.contains("does not match"), "{e}");
        let none = [("smtpd_tls_security_level", "none")];
        assert!(
            ServerTls::from_params(&params(&none))
                .unwrap()
                .config
                .is_none()
        );
    }
}
