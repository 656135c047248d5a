//! `smtpd_upstream_proxy_protocol = haproxy`: the HAProxy PROXY protocol,
//! versions 1 (text) and 2 (binary), in front of smtpd, as Postfix reads
//! it (`haproxy_srvr.c`): the client's and server's addresses come from
//! the proxy's header instead of the socket.
//!
//! As in Postfix, the header is peeked, parsed in one piece, and only its
//! own bytes are then read, so nothing after it (a TLS wrapper-mode
//! handshake, the first command) is consumed; only TCP over IPv4 and IPv6
//! is accepted (`UNKNOWN` would sidestep address-based access control);
//! version 2's `LOCAL` command keeps the socket's addresses; TLVs are
//! skipped. Failures are Postfix's `haproxy read: ...` warnings, after
//! which the session answers `421 4.3.0 ... Server local error`.

use futures_lite::AsyncReadExt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

/// Postfix's HAPROXY_HEADER_MAX_LEN: the IPv4 TCP MSS.
const HEADER_MAX_LEN: usize = 536;
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
const V2_HEADER_LEN: usize = 16;

/// The settings of `smtpd_upstream_proxy_protocol`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// `smtpd_upstream_proxy_timeout`.
    pub timeout: Duration,
    /// `inet_protocols`: which address families a header may carry.
    pub ipv4: bool,
    pub ipv6: bool,
}

impl ProxySettings {
    /// None when no proxy is configured; an error for a protocol other than
    /// `haproxy` (Postfix: "unsupported smtpd_upstream_proxy_protocol
    /// value", fatal at the first connection; corepost refuses to start).
    pub fn from_params(
        protocol: &str,
        timeout: Duration,
        inet_protocols: &str,
    ) -> Result<Option<ProxySettings>, String> {
        match protocol.trim() {
            "" => Ok(None),
            "haproxy" => {
                let (ipv4, ipv6) = corepost_config::host::address_families(inet_protocols);
                Ok(Some(ProxySettings {
                    timeout,
                    ipv4,
                    ipv6,
                }))
            }
            other => Err(format!(
                "unsupported smtpd_upstream_proxy_protocol value: {other}"
            )),
        }
    }
}

/// The endpoints a proxy header names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub client: SocketAddr,
    pub server: SocketAddr,
}

/// What a header says: the endpoints, or `None` for a connection the proxy
/// made on its own behalf (v2 LOCAL); and the header's length.
type Parsed = (Option<Endpoints>, usize);

/// Read the proxy header from `stream` within the timeout: the endpoints,
/// None for a LOCAL connection, or Postfix's warning text.
pub async fn receive(
    stream: &mut glommio::net::TcpStream,
    settings: &ProxySettings,
) -> Result<Option<Endpoints>, String> {
    let mut buf = [0u8; HEADER_MAX_LEN];
    let peeked = futures_lite::future::or(async { Some(stream.peek(&mut buf).await) }, async {
        glommio::timer::sleep(settings.timeout).await;
        None
    })
    .await;
    let n = match peeked {
        None => return Err("haproxy read: timeout error".into()),
        Some(Ok(0)) | Some(Err(_)) => return Err("haproxy read: EOF".into()),
        Some(Ok(n)) => n,
    };
    let (endpoints, len) = parse(&buf[..n], settings)
        .map_err(|e| format!("haproxy read: {e}: {}", escape(&buf[..n])))?;
    let mut header = vec![0u8; len];
    stream
        .read_exact(&mut header)
        .await
        .map_err(|e| format!("haproxy read: {e}"))?;
    Ok(endpoints)
}

/// Parse a version 1 or 2 header at the start of `data`.
pub fn parse(data: &[u8], settings: &ProxySettings) -> Result<Parsed, &'static str> {
    // Postfix parses a C string: a v1 header ends at a NUL byte.
    if data.starts_with(b"PROXY ") {
        let end = data.iter().position(|&b| b == 0).unwrap_or(data.len());
        parse_v1(&data[..end], settings)
    } else {
        parse_v2(data, settings)
    }
}

fn parse_v1(data: &[u8], settings: &ProxySettings) -> Result<Parsed, &'static str> {
    let newline = data
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("missing protocol header terminator")?;
    let line = std::str::from_utf8(&data[..newline]).unwrap_or("");
    let mut tokens = line.split([' ', '\r']).filter(|t| !t.is_empty());
    if tokens.next() != Some("PROXY") {
        return Err("bad or missing protocol header");
    }
    let v6 = match tokens.next() {
        Some(p) if p.eq_ignore_ascii_case("TCP6") && settings.ipv6 => true,
        Some(p) if p.eq_ignore_ascii_case("TCP4") && settings.ipv4 => false,
        _ => return Err("bad or missing protocol type"),
    };
    let client = v1_address(tokens.next(), v6, settings).ok_or("bad or missing client address")?;
    let server = v1_address(tokens.next(), v6, settings).ok_or("bad or missing server address")?;
    let client_port = v1_port(tokens.next()).ok_or("bad or missing client port")?;
    let server_port = v1_port(tokens.next()).ok_or("bad or missing server port")?;
    let endpoints = Endpoints {
        client: SocketAddr::new(client, client_port),
        server: SocketAddr::new(server, server_port),
    };
    Ok((Some(endpoints), newline + 1))
}

fn v1_address(token: Option<&str>, v6: bool, settings: &ProxySettings) -> Option<IpAddr> {
    let token = token?;
    let addr = if v6 {
        IpAddr::V6(token.parse::<Ipv6Addr>().ok()?)
    } else {
        IpAddr::V4(token.parse::<Ipv4Addr>().ok()?)
    };
    Some(unmapped(addr, settings))
}

/// `::ffff:1.2.3.4` is 1.2.3.4 when IPv4 is enabled, as in Postfix.
fn unmapped(addr: IpAddr, settings: &ProxySettings) -> IpAddr {
    match addr {
        IpAddr::V6(v6) if settings.ipv4 => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
        other => other,
    }
}

fn v1_port(token: Option<&str>) -> Option<u16> {
    let token = token?;
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    token.parse().ok()
}

fn parse_v2(data: &[u8], settings: &ProxySettings) -> Result<Parsed, &'static str> {
    if data.len() < V2_HEADER_LEN {
        return Err("short protocol header");
    }
    if &data[..12] != V2_SIGNATURE {
        return Err("unrecognized protocol header");
    }
    let (ver_cmd, family) = (data[12], data[13]);
    if ver_cmd & 0xF0 != 0x20 {
        return Err("unrecognized protocol version");
    }
    let len = usize::from(u16::from_be_bytes([data[14], data[15]]));
    if data.len() < V2_HEADER_LEN + len {
        return Err("short version 2 protocol header");
    }
    let body = &data[V2_HEADER_LEN..V2_HEADER_LEN + len];
    match ver_cmd & 0x0F {
        // LOCAL: the proxy's own connection (a health check).
        0x00 => Ok((None, V2_HEADER_LEN + len)),
        0x01 => {
            let endpoints = match family {
                0x11 => {
                    if !settings.ipv4 {
                        return Err("Postfix IPv4 support is disabled");
                    }
                    if body.len() < 12 {
                        return Err("short address field");
                    }
                    let ip = |at: usize| {
                        IpAddr::V4(Ipv4Addr::new(
                            body[at],
                            body[at + 1],
                            body[at + 2],
                            body[at + 3],
                        ))
                    };
                    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                    Endpoints {
                        client: SocketAddr::new(ip(0), port(8)),
                        server: SocketAddr::new(ip(4), port(10)),
                    }
                }
                0x21 => {
                    if !settings.ipv6 {
                        return Err("Postfix IPv6 support is disabled");
                    }
                    if body.len() < 36 {
                        return Err("short address field");
                    }
                    let ip = |at: usize| {
                        let mut b = [0u8; 16];
                        b.copy_from_slice(&body[at..at + 16]);
                        unmapped(IpAddr::V6(Ipv6Addr::from(b)), settings)
                    };
                    let port = |at: usize| u16::from_be_bytes([body[at], body[at + 1]]);
                    Endpoints {
                        client: SocketAddr::new(ip(0), port(32)),
                        server: SocketAddr::new(ip(16), port(34)),
                    }
                }
                _ => return Err("unsupported network protocol"),
            };
            Ok((Some(endpoints), V2_HEADER_LEN + len))
        }
        _ => Err("bad command in proxy header"),
    }
}

/// Postfix's `escape()`: printable ASCII as is (a backslash doubled), C
/// escapes for control characters, octal for the rest.
pub fn escape(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len() * 2);
    for &b in data {
        match b {
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(b)),
            0x07 => out.push_str("\\a"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x0b => out.push_str("\\v"),
            other => out.push_str(&format!("\\{other:03o}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn both() -> ProxySettings {
        ProxySettings {
            timeout: Duration::from_secs(5),
            ipv4: true,
            ipv6: true,
        }
    }

    fn v2(cmd: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | cmd);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    #[test]
    fn version_1() {
        let s = both();
        let line = b"PROXY TCP4 192.0.2.1 198.51.100.2 5678 25\r\nEHLO x\r\n";
        let (e, len) = parse(line, &s).unwrap();
        assert_eq!(len, 43);
        let e = e.unwrap();
        assert_eq!(e.client, "192.0.2.1:5678".parse().unwrap());
        assert_eq!(e.server, "198.51.100.2:25".parse().unwrap());
        let (e, _) = parse(b"PROXY TCP6 ::ffff:192.0.2.1 2001:db8::1 1 2\r\n", &s).unwrap();
        assert_eq!(e.unwrap().client, "192.0.2.1:1".parse().unwrap());
        for (text, err) in [
            (
                &b"PROXY TCP4 192.0.2.1 198.51.100.2 5678 25"[..],
                "missing protocol header terminator",
            ),
            (b"PROXY UNKNOWN\r\n", "bad or missing protocol type"),
            (
                b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2\r\n",
                "bad or missing client address",
            ),
            (
                b"PROXY TCP4 192.0.2.1 x 1 2\r\n",
                "bad or missing server address",
            ),
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 99999 2\r\n",
                "bad or missing client port",
            ),
            (
                b"PROXY TCP4 192.0.2.1 192.0.2.2 1\r\n",
                "bad or missing server port",
            ),
            (b"EHLO client.example\r\n", "unrecognized protocol header"),
            (b"EHLO x\r\n", "short protocol header"),
        ] {
            assert_eq!(parse(text, &s).unwrap_err(), err, "{}", escape(text));
        }
        let v6_only = ProxySettings {
            ipv4: false,
            ..both()
        };
        assert_eq!(
            parse(b"PROXY TCP4 192.0.2.1 192.0.2.2 1 2\r\n", &v6_only).unwrap_err(),
            "bad or missing protocol type"
        );
    }

    #[test]
    fn version_2() {
        let s = both();
        let mut body = vec![192, 0, 2, 1, 198, 51, 100, 2];
        body.extend_from_slice(&5678u16.to_be_bytes());
        body.extend_from_slice(&25u16.to_be_bytes());
        body.extend_from_slice(&[0x04, 0x00, 0x01, 0xAA]); // a TLV, skipped
        let mut h = v2(1, 0x11, &body);
        let total = h.len();
        h.extend_from_slice(b"EHLO x\r\n");
        let (e, len) = parse(&h, &s).unwrap();
        assert_eq!(len, total);
        let e = e.unwrap();
        assert_eq!(e.client, "192.0.2.1:5678".parse().unwrap());
        assert_eq!(e.server, "198.51.100.2:25".parse().unwrap());
        let mut body6 = vec![0u8; 36];
        body6[15] = 1;
        body6[31] = 2;
        body6[33] = 7;
        body6[35] = 25;
        let (e, _) = parse(&v2(1, 0x21, &body6), &s).unwrap();
        assert_eq!(e.unwrap().client, "[::1]:7".parse().unwrap());
        assert_eq!(parse(&v2(0, 0, &[]), &s).unwrap(), (None, 16));
        assert_eq!(
            parse(&v2(1, 0x31, &[0; 216]), &s).unwrap_err(),
            "unsupported network protocol"
        );
        assert_eq!(
            parse(&v2(1, 0x11, &[0; 4]), &s).unwrap_err(),
            "short address field"
        );
        assert_eq!(
            parse(&v2(2, 0x11, &body), &s).unwrap_err(),
            "bad command in proxy header"
        );
        assert_eq!(
            parse(&h[..20], &s).unwrap_err(),
            "short version 2 protocol header"
        );
        let mut old = v2(1, 0x11, &body);
        old[12] = 0x11;
        assert_eq!(
            parse(&old, &s).unwrap_err(),
            "unrecognized protocol version"
        );
        let v4_only = ProxySettings {
            ipv6: false,
            ..both()
        };
        assert_eq!(
            parse(&v2(1, 0x21, &body6), &v4_only).unwrap_err(),
            "Postfix IPv6 support is disabled"
        );
    }

    #[test]
    fn escapes_like_postfix() {
        assert_eq!(escape(b"PROXY\r\n\\\x00\xff"), "PROXY\\r\\n\\\\\\000\\377");
    }

    #[test]
    fn settings() {
        let t = Duration::from_secs(5);
        assert_eq!(ProxySettings::from_params("", t, "all").unwrap(), None);
        assert!(
            ProxySettings::from_params("haproxy", t, "ipv4")
                .unwrap()
                .is_some()
        );
        assert_eq!(
            ProxySettings::from_params("nginx", t, "all").unwrap_err(),
            "unsupported smtpd_upstream_proxy_protocol value: nginx"
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_are_safe(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            if let Ok((_, len)) = parse(&data, &both()) {
                proptest::prop_assert!(len <= data.len());
            }
            let _ = escape(&data);
        }
    }
}
