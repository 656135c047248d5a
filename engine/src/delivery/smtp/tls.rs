//! The client side of STARTTLS: the rustls configuration and the stream that is either plain
//! TCP or TLS over it.
//!
//! Certificates are **not verified** (yet). Mail between MTAs mostly runs on opportunistic TLS
//! (Postfix `smtp_tls_security_level = may` or `encrypt`): the point is to keep passive observers
//! out, and a failed verification would not stop delivery anyway — it would only fall back to
//! plaintext, which is worse. So [`AcceptAnyCertificate`] accepts any certificate chain, but the
//! handshake signatures are still checked against the certificate's key with the provider's
//! algorithms, so the peer has to hold the key of the certificate it sent. `verify` and `secure`
//! (DANE, trust anchors) are treated as `encrypt` until real verification lands.
//!
//! One `ClientConfig` is shared by every connection of the process (built once): it holds the
//! session-resumption cache, so a second connection to the same server resumes cheaply.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use glommio::net::TcpStream;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

/// The process-wide client configuration (see the module docs).
pub fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let verifier = AcceptAnyCertificate(provider.signature_verification_algorithms);
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("the ring provider supports the default protocol versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(verifier))
                .with_no_client_auth();
            Arc::new(config)
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

/// Accepts any server certificate but checks handshake signatures (see the module docs for why
/// this is deliberate).
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

/// `TLSv1.3 with cipher TLS13_AES_256_GCM_SHA384`, for log lines.
pub fn describe(conn: &rustls::ClientConnection) -> String {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
        Some(v) => format!("{v:?}"),
        None => "TLS".to_string(),
    };
    match conn.negotiated_cipher_suite() {
        Some(suite) => format!("{version} with cipher {:?}", suite.suite()),
        None => version,
    }
}

/// The connection's byte stream: plain TCP until STARTTLS, TLS after; or a Unix-domain socket
/// (LMTP's `unix:` next hops), which is never upgraded.
pub type Stream = crate::stream::MaybeTls<futures_rustls::client::TlsStream<TcpStream>>;
