//! The LMTP client's next hops (RFC 2033; Postfix's lmtp(8)).
//!
//! LMTP is spoken by the SMTP client in [`crate::delivery::smtp`] with
//! [`ClientSettings::lmtp`](crate::delivery::smtp::ClientSettings) set: LHLO instead of EHLO,
//! and one reply per accepted recipient after the end of data. The queue manager drives it like
//! SMTP (same batching by `<transport>_destination_recipient_limit`, same connection cache, with
//! the `lmtp_connection_*` limits). What is LMTP's own is the next-hop syntax, parsed here:
//!
//! - `unix:/path/to/socket`, or `unix:private/dovecot-lmtp` (relative to `queue_directory`, as
//!   Postfix resolves it);
//! - `inet:host`, `inet:host:port`, `inet:[host]:port`, `inet:[2001:db8::1]:24`;
//! - without a type, `host:port`, `[host]:port` or `host` are `inet:`; a bare `/path` is
//!   `unix:`.
//!
//! The port defaults to `lmtp_tcp_port` (24). LMTP never looks up MX records: a host name is
//! resolved to its addresses only, as if it were bracketed.

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use crate::dns::nexthop::Nexthop;

/// Where an LMTP delivery goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LmtpTarget {
    /// A Unix-domain socket (made absolute).
    Unix(PathBuf),
    /// A TCP destination, in the resolver's next-hop form with MX lookups suppressed:
    /// `[host]:port` or `[address]:port`.
    Inet(String),
}

/// A port number or one of the service names Postfix knows (`lmtp`, `smtp`, ...).
pub fn parse_port(text: &str) -> Option<u16> {
    crate::dns::nexthop::parse_port(text.trim())
}

/// Parse an LMTP next hop; errors say what is wrong with it.
pub fn parse_nexthop(
    nexthop: &str,
    default_port: u16,
    socket_directory: &Path,
) -> Result<LmtpTarget, String> {
    let text = nexthop.trim();
    let (kind, rest) = match text.split_once(':') {
        Some((k, r)) if k.eq_ignore_ascii_case("unix") => ("unix", r),
        Some((k, r)) if k.eq_ignore_ascii_case("inet") => ("inet", r),
        _ if text.starts_with('/') => ("unix", text),
        _ => ("inet", text),
    };
    if kind == "unix" {
        let path = rest.trim();
        if path.is_empty() {
            return Err(format!(
                "bad LMTP destination \"{text}\": empty socket path"
            ));
        }
        let path = Path::new(path);
        return Ok(LmtpTarget::Unix(if path.is_absolute() {
            path.to_path_buf()
        } else {
            socket_directory.join(path)
        }));
    }
    if rest.trim().is_empty() {
        return Err(format!("bad LMTP destination \"{text}\": no host"));
    }
    match crate::dns::nexthop::parse_nexthop(rest, default_port) {
        Ok(Nexthop::Address(addr)) => {
            Ok(LmtpTarget::Inet(format!("[{}]:{}", addr.ip(), addr.port())))
        }
        Ok(Nexthop::Name { host, port, .. }) => Ok(LmtpTarget::Inet(format!("[{host}]:{port}"))),
        Err(e) => Err(format!("bad LMTP destination \"{text}\": {}", e.reason)),
    }
}
