//! DKIM signing (RFC 6376; Ed25519 per RFC 8463), the way OpenDKIM signs
//! for Postfix as a milter: at reception, once, so the spool holds the
//! signed message and every delivery attempt sends the same bytes.
//!
//! Which mail is signed (OpenDKIM's rule): mail from a client in
//! `corepost_dkim_internal_hosts` (OpenDKIM's InternalHosts; default
//! `$mynetworks`), from a SASL-authenticated client, or submitted locally
//! (pickup), whose From: address the signing table selects a key for.
//! `receive_override_options = no_milters` turns signing off for a
//! service, as it turns OpenDKIM off in Postfix (the re-injection service
//! of a content filter).
//!
//! What breaks a signature after it is made, as it does OpenDKIM's:
//! `smtp_generic_maps` rewriting headers on output (`corepost check` warns),
//! the 8BITMIME to quoted-printable downgrade for a next hop without
//! 8BITMIME, lines longer than `smtp_line_length_limit`, and a content
//! filter that changes the message after signing.
//!
//! Tables and key files are in [`tables`], keys and algorithms in [`key`],
//! canonicalization in [`canon`].

pub mod canon;
pub mod key;
pub mod tables;

use crate::smtpd::networks::NetworkList;
use base64::Engine;
use canon::Canon;
use corepost_config::ConfigError;
use std::net::IpAddr;
use std::sync::Arc;

/// How much canonical body is hashed at a time.
const CHUNK: usize = 64 * 1024;

/// One service's signing settings, loaded at start and reload.
#[derive(Debug)]
pub struct DkimSigner {
    keys: tables::KeyTable,
    signing: tables::SigningTable,
    header_canon: Canon,
    body_canon: Canon,
    /// Lower case; always holds `from`.
    signed_headers: Vec<String>,
    oversign_headers: Vec<String>,
    internal_hosts: NetworkList,
}

/// A signature added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub domain: String,
    pub selector: String,
}

impl Signed {
    /// OpenDKIM's log line.
    pub fn log_text(&self) -> String {
        format!(
            "DKIM-Signature field added (s={}, d={})",
            self.selector, self.domain
        )
    }
}

impl DkimSigner {
    /// The service's signer; `None` when no signing table is set or the
    /// service has `receive_override_options = no_milters`.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, ConfigError>,
    ) -> Result<Option<Arc<DkimSigner>>, String> {
        let text = |n: &str| get(n).map_err(|e| e.to_string());
        let list = |n: &str| -> Result<Vec<String>, String> {
            Ok(corepost_config::list::split_list(&text(n)?)
                .map_err(|e| format!("parameter {n}: {e}"))?
                .into_iter()
                .map(|h| h.to_ascii_lowercase())
                .collect())
        };
        let signing_spec = text("corepost_dkim_signing_table")?;
        let key_spec = text("corepost_dkim_key_table")?;
        if signing_spec.trim().is_empty()
            || list("receive_override_options")?
                .iter()
                .any(|o| o == "no_milters")
        {
            return Ok(None);
        }
        if key_spec.trim().is_empty() {
            return Err(
                "corepost_dkim_signing_table is set but corepost_dkim_key_table is empty".into(),
            );
        }
        let keys = tables::KeyTable::open(key_spec.trim())
            .map_err(|e| format!("corepost_dkim_key_table: {e}"))?;
        let signing = tables::SigningTable::open(signing_spec.trim(), &keys)
            .map_err(|e| format!("corepost_dkim_signing_table: {e}"))?;
        let (header_canon, body_canon) =
            Canon::parse_pair(text("corepost_dkim_canonicalization")?.trim())
                .map_err(|e| format!("parameter corepost_dkim_canonicalization: {e}"))?;
        let mut signed_headers = list("corepost_dkim_signed_headers")?;
        if !signed_headers.iter().any(|h| h == "from") {
            signed_headers.insert(0, "from".into()); // RFC 6376 5.4: required
        }
        let internal_hosts = NetworkList::parse(&text("corepost_dkim_internal_hosts")?)
            .map_err(|e| format!("corepost_dkim_internal_hosts: {e}"))?;
        Ok(Some(Arc::new(DkimSigner {
            keys,
            signing,
            header_canon,
            body_canon,
            signed_headers,
            oversign_headers: list("corepost_dkim_oversign_headers")?,
            internal_hosts,
        })))
    }

    /// Whether mail from this smtpd client is signed.
    pub fn signs_for_client(&self, addr: IpAddr, authenticated: bool) -> bool {
        authenticated || self.internal_hosts.contains(addr)
    }

    /// Every key file must stay readable once the daemon runs as
    /// `uid`/`gid` (`mail_owner`): a reload reads them again.
    pub fn check_key_access(&self, uid: u32, gid: u32) -> Result<(), String> {
        for file in self.keys.files() {
            key::readable_by(file, uid, gid)
                .map_err(|e| format!("corepost_dkim_key_table: key {e}"))?;
        }
        Ok(())
    }

    /// Signs `content` (header section and body as queued) when the
    /// signing table selects a key for its From: address, prepending the
    /// DKIM-Signature field. `Ok(None)`: nothing to sign with. An error
    /// is temporary (a table lookup failed, a key name is missing).
    pub fn sign(&self, content: &mut Vec<u8>, now: u64) -> Result<Option<Signed>, String> {
        let (fields, body_start) = canon::split_message(content);
        let Some((user, domain)) = from_address(&fields) else {
            return Ok(None);
        };
        let Some(selection) = self
            .signing
            .select(&user, &domain)
            .map_err(|e| format!("corepost_dkim_signing_table: {e}"))?
        else {
            return Ok(None);
        };
        let entry = self.keys.get(&selection.key_name).ok_or_else(|| {
            format!(
                "key name \"{}\" (for <{user}@{domain}>) is not in corepost_dkim_key_table",
                selection.key_name
            )
        })?;
        let d = if entry.domain == "%" {
            domain.clone()
        } else {
            entry.domain.clone()
        };
        // One digest update per 64 KiB rather than two per line.
        let mut body_hash = ring::digest::Context::new(&ring::digest::SHA256);
        let mut chunk = Vec::with_capacity(CHUNK + 1024);
        canon::body(self.body_canon, &content[body_start..], |p| {
            chunk.extend_from_slice(p);
            if chunk.len() >= CHUNK {
                body_hash.update(&chunk);
                chunk.clear();
            }
        });
        body_hash.update(&chunk);
        let names = self.header_names(&fields);
        let signer = selection.signer.filter(|i| signer_fits(i, &d));
        let mut tags = vec![
            "v=1".to_string(),
            format!("a={}", entry.key.algorithm()),
            format!("c={}/{}", self.header_canon.name(), self.body_canon.name()),
            format!("d={d}"),
            format!("s={}", entry.selector),
            format!("t={now}"),
        ];
        tags.extend(signer.map(|i| format!("i={i}")));
        tags.push(format!("h={}", names.join(":")));
        tags.push(format!("bh={}", b64(body_hash.finish().as_ref())));
        let mut field = fold_tags(&tags);
        let mut data = Vec::new();
        for raw in select_fields(&fields, &names) {
            canon::header(self.header_canon, raw, &mut data);
        }
        canon::header(self.header_canon, &field, &mut data);
        data.truncate(data.len() - 2); // the signature field has no CRLF
        let signature = entry.key.sign(&data)?;
        fold_base64(&mut field, &b64(&signature));
        field.extend_from_slice(b"\r\n");
        content.splice(0..0, field);
        Ok(Some(Signed {
            domain: d,
            selector: entry.selector.clone(),
        }))
    }

    /// `h=`: the signed header names present, in message order, then each
    /// oversigned name once more.
    fn header_names(&self, fields: &[canon::Field<'_>]) -> Vec<String> {
        let mut names: Vec<String> = fields
            .iter()
            .map(|f| f.name.to_ascii_lowercase())
            .filter(|n| self.signed_headers.contains(n))
            .collect();
        names.extend(self.oversign_headers.iter().cloned());
        names
    }
}

/// What `corepost check` says about the signers of smtpd and pickup:
/// errors (a key `mail_owner` could not read after the daemon gives up
/// root) and warnings (settings that break signatures on output).
pub fn check(
    config: &corepost_config::Config,
    signers: &[Arc<DkimSigner>],
) -> (Vec<String>, Vec<String>) {
    let (mut errors, mut warnings) = (Vec::new(), Vec::new());
    if signers.is_empty() {
        return (errors, warnings);
    }
    if let Some((uid, gid)) = daemon_account(config) {
        for e in signers
            .iter()
            .filter_map(|s| s.check_key_access(uid, gid).err())
        {
            if !errors.contains(&e) {
                errors.push(e); // services often share the tables
            }
        }
    }
    if config
        .get("smtp_generic_maps")
        .is_ok_and(|v| !v.trim().is_empty())
    {
        warnings.push("DKIM signing with smtp_generic_maps: header addresses rewritten on output invalidate the signatures made at reception".into());
    }
    (errors, warnings)
}

/// `mail_owner`'s uid and gid when the daemon, started by this (root)
/// user, would give up root to it.
fn daemon_account(config: &corepost_config::Config) -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None; // the daemon runs as this user, who just read the keys
    }
    let owner = config.get("mail_owner").ok()?;
    let table = corepost_config::tables::open_table("unix:passwd.byname").ok()?;
    let entry = table.lookup(&owner).ok()??;
    let mut fields = entry.split(':').skip(2);
    let uid: u32 = fields.next()?.parse().ok()?;
    let gid: u32 = fields.next()?.parse().ok()?;
    (uid != 0).then_some((uid, gid))
}

/// The fields a verifier hashes for `h=` (RFC 6376 5.4.2): for each name,
/// the last instance not yet used; none for an oversigned name.
fn select_fields<'a>(fields: &[canon::Field<'a>], names: &[String]) -> Vec<&'a [u8]> {
    let mut used = vec![false; fields.len()];
    let mut out = Vec::new();
    for name in names {
        if let Some(i) = (0..fields.len())
            .rev()
            .find(|&i| !used[i] && fields[i].name.eq_ignore_ascii_case(name))
        {
            used[i] = true;
            out.push(fields[i].raw);
        }
    }
    out
}

/// The first address of the (first) From: field, as (user, domain).
fn from_address(fields: &[canon::Field<'_>]) -> Option<(String, String)> {
    let field = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("from"))?;
    let raw = String::from_utf8_lossy(field.raw);
    let value = raw.split_once(':')?.1.replace(['\r', '\n'], "");
    let (start, end) = *crate::rewrite::headers::address_spans(&value).first()?;
    let address = &value[start..end];
    let (user, domain) = address.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_ascii_lowercase();
    (!domain.is_empty()).then(|| (user.trim().to_string(), domain))
}

/// `i=` must be in `d=` or one of its subdomains (RFC 6376 3.5); OpenDKIM
/// leaves out one that is not.
fn signer_fits(signer: &str, d: &str) -> bool {
    let Some((_, domain)) = signer.rsplit_once('@') else {
        return false;
    };
    let domain = domain.to_ascii_lowercase();
    domain == d || domain.ends_with(&format!(".{d}"))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `DKIM-Signature: tag; tag; ... b=`, folded before a tag (or inside
/// `h=`, after a colon) that would pass 78 columns.
fn fold_tags(tags: &[String]) -> Vec<u8> {
    let mut out = b"DKIM-Signature: ".to_vec();
    let mut column = out.len();
    let mut push = |word: &str, out: &mut Vec<u8>, sep: &str| {
        // 77: room for the `;` that ends the line.
        if column + sep.len() + word.len() > 77 && column > 1 {
            out.extend_from_slice(sep.trim_end().as_bytes());
            out.extend_from_slice(b"\r\n\t");
            column = 8;
        } else {
            out.extend_from_slice(sep.as_bytes());
            column += sep.len();
        }
        out.extend_from_slice(word.as_bytes());
        column += word.len();
    };
    let mut first = true;
    for tag in tags.iter().map(String::as_str).chain(["b="]) {
        let sep = if first { "" } else { "; " };
        first = false;
        match tag.strip_prefix("h=") {
            Some(names) => {
                let mut parts = names.split(':');
                push(
                    &format!("h={}", parts.next().unwrap_or_default()),
                    &mut out,
                    sep,
                );
                for part in parts {
                    push(part, &mut out, ":");
                }
            }
            None => push(tag, &mut out, sep),
        }
    }
    out
}

/// Appends the `b=` value, folded in lines of at most 72 characters.
fn fold_base64(field: &mut Vec<u8>, value: &str) {
    let last_line = field.rsplit(|&b| b == b'\n').next().map_or(0, <[u8]>::len);
    let mut room = 78usize.saturating_sub(last_line + 7).max(1);
    let mut rest = value;
    while !rest.is_empty() {
        let take = room.min(rest.len());
        field.extend_from_slice(&rest.as_bytes()[..take]);
        rest = &rest[take..];
        if !rest.is_empty() {
            field.extend_from_slice(b"\r\n\t ");
            room = 70;
        }
    }
}

#[cfg(test)]
mod tests;
