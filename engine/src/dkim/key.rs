//! Private keys for signing: PEM files (PKCS#8 `PRIVATE KEY` for RSA and
//! Ed25519, PKCS#1 `RSA PRIVATE KEY` as `opendkim-genkey` writes them) or,
//! as OpenDKIM's KeyTable allows, the key itself as base64 DER or PEM
//! text; and the signature algorithms (RFC 6376 rsa-sha256, RFC 8463
//! ed25519-sha256) on `ring`.

use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair, RSA_PKCS1_SHA256, RsaKeyPair};
use std::path::Path;

/// A loaded signing key.
pub enum SigningKey {
    Rsa(RsaKeyPair),
    Ed25519(Ed25519KeyPair),
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.algorithm())
    }
}

impl SigningKey {
    /// The `a=` tag.
    pub fn algorithm(&self) -> &'static str {
        match self {
            SigningKey::Rsa(_) => "rsa-sha256",
            SigningKey::Ed25519(_) => "ed25519-sha256",
        }
    }

    /// Reads a key file; errors name the file.
    pub fn from_file(path: &Path) -> Result<SigningKey, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read key {}: {e}", path.display()))?;
        SigningKey::from_text(&text).map_err(|e| format!("key {}: {e}", path.display()))
    }

    /// A PEM text, or bare base64 DER (a KeyTable's inline key).
    pub fn from_text(text: &[u8]) -> Result<SigningKey, String> {
        let text = String::from_utf8_lossy(text);
        let (label, b64) = match pem_body(&text) {
            Some((label, body)) => (Some(label), body),
            None => (None, text.split_whitespace().collect::<String>()),
        };
        let der = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| "not a PEM or base64 DER private key".to_string())?;
        match label.as_deref() {
            Some("RSA PRIVATE KEY") => RsaKeyPair::from_der(&der)
                .map(SigningKey::Rsa)
                .map_err(|e| rsa_problem(&e.to_string())),
            Some("PRIVATE KEY") | None => SigningKey::from_pkcs8_or_der(&der),
            Some(other) => Err(format!(
                "a PEM \"{other}\" is not an unencrypted private key"
            )),
        }
    }

    fn from_pkcs8_or_der(der: &[u8]) -> Result<SigningKey, String> {
        if let Ok(k) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            return Ok(SigningKey::Ed25519(k));
        }
        match RsaKeyPair::from_pkcs8(der) {
            Ok(k) => Ok(SigningKey::Rsa(k)),
            Err(e) => RsaKeyPair::from_der(der)
                .map(SigningKey::Rsa)
                .map_err(|_| rsa_problem(&e.to_string())),
        }
    }

    /// The signature over `data` (the canonical header fields): RSA
    /// PKCS#1 v1.5 with SHA-256, or Ed25519 over the SHA-256 digest of
    /// `data` (RFC 8463 section 3).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            SigningKey::Rsa(k) => {
                let mut sig = vec![0; k.public().modulus_len()];
                k.sign(
                    &RSA_PKCS1_SHA256,
                    &ring::rand::SystemRandom::new(),
                    data,
                    &mut sig,
                )
                .map_err(|_| "RSA signing failed".to_string())?;
                Ok(sig)
            }
            SigningKey::Ed25519(k) => {
                let digest = ring::digest::digest(&ring::digest::SHA256, data);
                Ok(k.sign(digest.as_ref()).as_ref().to_vec())
            }
        }
    }

    /// The public key as the `p=` of the DNS record would carry it (the
    /// DER RSAPublicKey, or the raw Ed25519 key), base64.
    pub fn public_base64(&self) -> String {
        let raw = match self {
            SigningKey::Rsa(k) => k.public().as_ref().to_vec(),
            SigningKey::Ed25519(k) => k.public_key().as_ref().to_vec(),
        };
        base64::engine::general_purpose::STANDARD.encode(raw)
    }
}

fn rsa_problem(ring_error: &str) -> String {
    format!(
        "not a usable RSA or Ed25519 private key ({ring_error}); corepost signs with unencrypted RSA keys of 2048 to 4096 bits (RFC 8301) or Ed25519 keys"
    )
}

/// The label and the base64 body of the first PEM block in `text`.
fn pem_body(text: &str) -> Option<(String, String)> {
    let start = text.find("-----BEGIN ")?;
    let rest = &text[start + 11..];
    let label_end = rest.find("-----")?;
    let label = rest[..label_end].to_string();
    let rest = &rest[label_end + 5..];
    let end = rest.find("-----END ")?;
    let body: String = rest[..end]
        .lines()
        .filter(|l| !l.contains(':')) // RFC 1421 headers (Proc-Type: ...)
        .flat_map(|l| l.split_whitespace())
        .collect();
    Some((label, body))
}

/// Whether the account `uid`/`gid` (no supplementary groups: the daemon
/// clears them when it gives up root) can read `path`: the file's mode
/// bits, and search permission on every directory above it.
pub fn readable_by(path: &Path, uid: u32, gid: u32) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let allowed = |m: &std::fs::Metadata, bits: u32| {
        let mode = m.mode();
        if m.uid() == uid {
            mode & (bits << 6) != 0
        } else if m.gid() == gid {
            mode & (bits << 3) != 0
        } else {
            mode & bits != 0
        }
    };
    let absolute = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    for dir in absolute.ancestors().skip(1) {
        let m = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !allowed(&m, 0o1) {
            return Err(format!(
                "directory {} is not searchable by uid {uid} gid {gid}",
                dir.display()
            ));
        }
    }
    let m = std::fs::metadata(&absolute).map_err(|e| format!("{}: {e}", path.display()))?;
    if !allowed(&m, 0o4) {
        return Err(format!(
            "{} is not readable by uid {uid} gid {gid} (mode {:o}, owner {}:{})",
            path.display(),
            m.mode() & 0o7777,
            m.uid(),
            m.gid()
        ));
    }
    Ok(())
}
