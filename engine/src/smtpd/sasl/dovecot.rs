//! The client side of Dovecot's authentication protocol (version 1.x, the
//! one Postfix's `smtpd_sasl_type = dovecot` speaks), over a Unix socket
//! (`smtpd_sasl_path = private/auth`, relative to the queue directory) or
//! TCP (`inet:host:port`).
//!
//! Handshake: we send `VERSION 1 2` and `CPID`, the server answers with its
//! `VERSION`, one `MECH` line per mechanism (with flags such as
//! `plaintext`), and `DONE`. An exchange is `AUTH id mech service=smtp
//! ... [resp=base64]`, answered by `CONT id base64` (a challenge; we relay
//! the client's answer as `CONT id base64`), `OK id user=...` or
//! `FAIL id [reason=...] [temp]`. Fields are tab-separated. One connection
//! per session, opened at the first EHLO that could offer AUTH.

use super::{MechFlags, Step};
use base64::Engine;
use futures_lite::io::BufReader;
use futures_lite::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How long the auth server may take for any one answer.
const TIMEOUT: Duration = Duration::from_secs(10);
/// Longest line accepted from the auth server.
const MAX_LINE: usize = 16 * 1024;

/// Where the auth server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Unix(PathBuf),
    Inet(String),
}

impl Address {
    /// `smtpd_sasl_path`: `inet:host:port`, an absolute socket path, or one
    /// relative to the queue directory.
    pub fn parse(path: &str, queue_directory: &str) -> Address {
        if let Some(hostport) = path.strip_prefix("inet:") {
            Address::Inet(hostport.to_string())
        } else if let Some(p) = path.strip_prefix("unix:") {
            Address::parse(p, queue_directory)
        } else if path.starts_with('/') {
            Address::Unix(PathBuf::from(path))
        } else {
            Address::Unix(PathBuf::from(queue_directory).join(path))
        }
    }
}

impl std::fmt::Display for Address {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "{}", p.display()),
            Address::Inet(h) => write!(f, "inet:{h}"),
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin {}
impl<T: AsyncRead + AsyncWrite + Unpin> Io for T {}

/// A mechanism the server offers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mechanism {
    pub name: String,
    pub flags: MechFlags,
    /// Not to be advertised (`private`).
    pub private: bool,
}

/// A connection to the auth server, after the handshake.
pub struct Client {
    io: BufReader<Box<dyn Io>>,
    mechanisms: Vec<Mechanism>,
    next_id: u32,
}

async fn timed<T>(f: impl std::future::Future<Output = io::Result<T>>) -> io::Result<T> {
    glommio::timer::timeout(TIMEOUT, async { Ok(f.await?) })
        .await
        .map_err(io::Error::from)
}

impl Client {
    pub async fn connect(address: &Address) -> io::Result<Client> {
        let io: Box<dyn Io> = match address {
            Address::Unix(p) => {
                Box::new(timed(async { Ok(glommio::net::UnixStream::connect(p).await?) }).await?)
            }
            Address::Inet(h) => {
                let addr: SocketAddr = std::net::ToSocketAddrs::to_socket_addrs(h.as_str())?
                    .next()
                    .ok_or_else(|| io::Error::other(format!("cannot resolve {h}")))?;
                Box::new(timed(async { Ok(glommio::net::TcpStream::connect(addr).await?) }).await?)
            }
        };
        let mut client = Client {
            io: BufReader::new(io),
            mechanisms: Vec::new(),
            next_id: 1,
        };
        client
            .send(&format!("VERSION\t1\t2\nCPID\t{}\n", std::process::id()))
            .await?;
        loop {
            let line = client.line().await?;
            let fields: Vec<&str> = line.split('\t').collect();
            match fields[0] {
                "VERSION" if fields.get(1) != Some(&"1") => {
                    return Err(io::Error::other(format!(
                        "unsupported auth protocol version {}",
                        fields.get(1).unwrap_or(&"")
                    )));
                }
                "MECH" if fields.len() >= 2 => {
                    let has = |flag: &str| fields[2..].contains(&flag);
                    client.mechanisms.push(Mechanism {
                        name: fields[1].to_ascii_uppercase(),
                        flags: MechFlags {
                            anonymous: has("anonymous"),
                            plaintext: has("plaintext"),
                            dictionary: has("dictionary"),
                            active: has("active"),
                            forward_secrecy: has("forward-secrecy"),
                            mutual_auth: has("mutual-auth"),
                        },
                        private: has("private"),
                    })
                }
                "DONE" => return Ok(client),
                _ => {} // SPID, CUID, COOKIE, ...
            }
        }
    }

    pub fn mechanisms(&self) -> &[Mechanism] {
        &self.mechanisms
    }

    async fn send(&mut self, text: &str) -> io::Result<()> {
        let w = self.io.get_mut();
        timed(async {
            w.write_all(text.as_bytes()).await?;
            w.flush().await
        })
        .await
    }

    async fn line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        let io = &mut self.io;
        let n = timed(io.read_line(&mut line)).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "auth server closed the connection",
            ));
        }
        if line.len() > MAX_LINE {
            return Err(io::Error::other("auth server line too long"));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_string())
    }
}

/// What the session tells Dovecot about itself.
#[derive(Debug, Clone)]
pub struct Request {
    pub service: String,
    pub mechanism: String,
    pub local: SocketAddr,
    pub remote: SocketAddr,
    pub secured: bool,
}

/// One AUTH exchange relayed to Dovecot; gives its connection back when
/// done ([`Exchange::into_client`]).
pub struct Exchange {
    client: Option<Client>,
    request: Request,
    id: u32,
    started: bool,
}

impl Exchange {
    pub fn new(mut client: Client, request: Request) -> Exchange {
        let id = client.next_id;
        client.next_id = client.next_id.wrapping_add(1);
        Exchange {
            client: Some(client),
            request,
            id,
            started: false,
        }
    }

    /// The connection, if it is still usable.
    pub fn into_client(self) -> Option<Client> {
        self.client
    }

    pub async fn step(&mut self, response: Option<Vec<u8>>) -> Step {
        match self.exchange(response).await {
            Ok(step) => step,
            Err(e) => {
                self.client = None;
                Step::TempFailure(format!("SASL: auth server problem: {e}"))
            }
        }
    }

    async fn exchange(&mut self, response: Option<Vec<u8>>) -> io::Result<Step> {
        let Some(client) = self.client.as_mut() else {
            return Err(io::Error::other("no connection"));
        };
        let b64 = |r: &[u8]| base64::engine::general_purpose::STANDARD.encode(r);
        let id = self.id;
        if !self.started {
            self.started = true;
            let r = &self.request;
            let mut cmd = format!(
                "AUTH\t{id}\t{}\tservice={}\tnologin\tlip={}\trip={}\tlport={}\trport={}",
                clean(&r.mechanism),
                clean(&r.service),
                r.local.ip(),
                r.remote.ip(),
                r.local.port(),
                r.remote.port()
            );
            if r.secured {
                cmd.push_str("\tsecured");
            }
            if let Some(resp) = response {
                cmd.push_str(&format!("\tresp={}", b64(&resp)));
            }
            cmd.push('\n');
            client.send(&cmd).await?;
        } else {
            let resp = response.unwrap_or_default();
            client
                .send(&format!("CONT\t{id}\t{}\n", b64(&resp)))
                .await?;
        }
        loop {
            let line = client.line().await?;
            let fields: Vec<&str> = line.split('\t').collect();
            if fields.get(1) != Some(&id.to_string().as_str()) {
                continue; // not ours
            }
            let param = |name: &str| {
                fields[2..]
                    .iter()
                    .find_map(|f| f.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
                    .map(unescape)
            };
            return Ok(match fields[0] {
                "CONT" => {
                    let data = fields.get(2).copied().unwrap_or("");
                    match base64::engine::general_purpose::STANDARD.decode(data) {
                        Ok(d) => Step::Challenge(d),
                        Err(_) => return Err(io::Error::other("bad base64 in CONT")),
                    }
                }
                "OK" => match param("user") {
                    Some(u) => Step::Success(u),
                    None => return Err(io::Error::other("OK without user")),
                },
                "FAIL" => {
                    let reason = param("reason").unwrap_or_default();
                    if fields[2..].contains(&"temp") {
                        Step::TempFailure(if reason.is_empty() {
                            "temporary failure".into()
                        } else {
                            reason
                        })
                    } else {
                        Step::Failure {
                            reason: if reason.is_empty() {
                                "authentication failure".into()
                            } else {
                                reason
                            },
                            user: param("user"),
                        }
                    }
                }
                other => return Err(io::Error::other(format!("unexpected reply {other}"))),
            });
        }
    }
}

/// A value without the protocol's separators.
fn clean(s: &str) -> String {
    s.chars().filter(|c| *c != '\t' && *c != '\n').collect()
}

/// Undo Dovecot's `str_tabescape`: byte 0x01 followed by `1`, `t`, `r` or
/// `n` stands for 0x01, tab, CR or LF.
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1}' {
            match chars.next() {
                Some('1') => out.push('\u{1}'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        assert_eq!(
            Address::parse("private/auth", "/var/spool/corepost"),
            Address::Unix("/var/spool/corepost/private/auth".into())
        );
        assert_eq!(
            Address::parse("/run/dovecot/auth-client", "/q"),
            Address::Unix("/run/dovecot/auth-client".into())
        );
        assert_eq!(
            Address::parse("inet:127.0.0.1:12345", "/q"),
            Address::Inet("127.0.0.1:12345".into())
        );
        assert_eq!(unescape("a\u{1}tb\u{1}1"), "a\tb\u{1}");
    }
}
