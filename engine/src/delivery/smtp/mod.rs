//! The SMTP client protocol: one connection to one server, and mail transactions over it.
//!
//! The queue manager owns the policy (which host, how many connections, when to give up, what a
//! reply means for each recipient's fate); this module owns the dialogue. [`SmtpConnection::connect`]
//! does TCP, the greeting, EHLO (HELO as fallback) and STARTTLS; [`SmtpConnection::deliver`] runs
//! one transaction; the same connection is reused for more transactions to the same destination.
//!
//! It is the hot path, so:
//! - with PIPELINING, MAIL, every RCPT and DATA (or BDAT with the body) go out in **one write**
//!   and the replies are read in order, so a transaction costs two round trips (envelope + body);
//! - the body is dot-stuffed into a reused buffer and written in large chunks, never per line;
//! - a failed transaction does not cost a round trip for RSET: the RSET is put in front of the
//!   next pipelined envelope (or sent by [`SmtpConnection::reset`] when the caller asks).
//!
//! Every wait is bounded by the stage's timeout from [`ClientSettings`], and the server's replies
//! are parsed as hostile input ([`reply`]).
//!
//! LMTP (RFC 2033) is the same dialogue with three differences, selected by
//! [`ClientSettings::lmtp`] rather than a copy of this module: LHLO instead of EHLO (no HELO
//! fallback), a Unix-domain socket as well as TCP ([`SmtpConnection::connect_unix`]), and after
//! the end of data one reply **per accepted recipient**, in RCPT order
//! ([`TransactionResult::per_recipient`]). The next-hop syntax lives in
//! [`crate::delivery::lmtp`].
//!
//! After any [`SessionError`] from [`SmtpConnection::deliver`] the caller should not start
//! another transaction on the connection except after an `Unsupported` error or a `Reply` error
//! (both leave the dialogue in step; [`SmtpConnection::reset`] tells whether it is still usable);
//! [`SmtpConnection::quit`] is always safe.

pub mod capabilities;
pub mod dane;
pub mod downgrade;
pub mod encode;
pub mod generic;
pub mod mta_sts;
pub mod reply;
pub mod sasl;
mod starttls;
pub mod tls;
pub mod tls_policy;
pub mod zerocopy;

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_output;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use corepost_spool::{BodyType, MailParams, Recipient};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;

pub use capabilities::Capabilities;
use encode::MailOptions;
pub use reply::ServerReply;
use tls::Stream;
pub use tls_policy::SitePolicy;
pub use tls_policy::TlsLevel;
use tls_policy::TlsSettings;

/// One transport's effective client settings.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub helo_name: String,
    pub connect_timeout: Duration,
    /// Greeting, EHLO/HELO, STARTTLS and the TLS handshake.
    pub helo_timeout: Duration,
    /// MAIL FROM, and RSET.
    pub mail_timeout: Duration,
    pub rcpt_timeout: Duration,
    pub data_init_timeout: Duration,
    /// Each write of the message body.
    pub data_xfer_timeout: Duration,
    /// The reply to the end of data (or to BDAT LAST).
    pub data_done_timeout: Duration,
    pub quit_timeout: Duration,
    pub tls: TlsLevel,
    /// `smtp_discard_ehlo_keywords` (`lmtp_discard_lhlo_keywords`), lower case.
    pub discard_ehlo_keywords: Vec<String>,
    /// Speak LMTP (LHLO, per-recipient replies after DATA) instead of SMTP.
    pub lmtp: bool,
    /// The port of a next hop that names none: 25, or `lmtp_tcp_port`.
    pub default_port: u16,
    /// Where relative `unix:` LMTP next hops are found (`queue_directory`, as in Postfix).
    pub socket_directory: PathBuf,
    /// `<proto>_connection_cache_time_limit`: how long an idle connection waits for more mail.
    pub cache_time_limit: Duration,
    /// `<proto>_connection_reuse_time_limit`: no new transaction on an older connection.
    pub reuse_time_limit: Duration,
    /// `<proto>_connection_reuse_count_limit`: transactions per connection (0 = no limit).
    pub reuse_count_limit: u32,
    /// `<proto>_line_length_limit`: longer lines are broken (0: no limit); see [`encode`].
    pub line_length_limit: usize,
    /// Not `disable_mime_output_conversion`: 8-bit MIME parts go out as quoted-printable to a
    /// server without 8BITMIME ([`downgrade`]).
    pub mime_output_conversion: bool,
    /// `smtp_always_send_ehlo`: EHLO whatever the greeting says (else only when it says ESMTP).
    pub always_send_ehlo: bool,
    /// `smtp_never_send_ehlo`: HELO only.
    pub never_send_ehlo: bool,
    /// `<proto>_skip_5xx_greeting`: a 5xx greeting is a temporary failure and the next server
    /// is tried; otherwise it is permanent.
    pub skip_5xx_greeting: bool,
    /// `<proto>_bind_address` / `<proto>_bind_address6`: the source address of connections.
    pub bind_address: Option<std::net::IpAddr>,
    pub bind_address6: Option<std::net::IpAddr>,
    /// `<proto>_bind_address_enforce`: a source address that cannot be bound defers
    /// (`4.4.0 server configuration error`) instead of connecting from the default address.
    pub bind_address_enforce: bool,
    /// `<proto>_connection_cache_on_demand`.
    pub cache_on_demand: bool,
    /// `<proto>_connection_cache_destinations`, lower case.
    pub cache_destinations: Vec<String>,
    /// `<proto>_generic_maps` ([`generic`]); `None` when empty.
    pub generic_maps: Option<generic::GenericMaps>,
    /// The `smtp_tls_*` settings; `None` means `tls` alone, with any certificate (tests).
    pub tls_policy: Option<Arc<TlsSettings>>,
    /// `smtp_sasl_*`; `None` when `smtp_sasl_auth_enable = no`.
    pub sasl: Option<Arc<sasl::SaslSettings>>,
}

/// Used for a connect timeout of zero ("the system default", Postfix's `lmtp_connect_timeout`).
const SYSTEM_CONNECT_TIMEOUT: Duration = Duration::from_secs(75);

/// The parameter an SMTP client setting is read from: its `smtp_` name, or its `lmtp_` twin for
/// an lmtp(8) transport. Both names are written out where they are read, so each parameter can
/// be found by its literal name.
fn pick(lmtp: bool, smtp: &'static str, lmtp_name: &'static str) -> &'static str {
    if lmtp { lmtp_name } else { smtp }
}

impl ClientSettings {
    /// Settings for unit tests: 5 s timeouts, no TLS policy or SASL, Postfix's defaults
    /// elsewhere; LMTP on port 24 with `lmtp`.
    #[cfg(test)]
    pub(crate) fn for_tests(tls: TlsLevel, lmtp: bool) -> ClientSettings {
        let t = Duration::from_secs(5);
        ClientSettings {
            helo_name: "client.test".into(),
            connect_timeout: t,
            helo_timeout: t,
            mail_timeout: t,
            rcpt_timeout: t,
            data_init_timeout: t,
            data_xfer_timeout: t,
            data_done_timeout: t,
            quit_timeout: Duration::from_secs(1),
            tls,
            discard_ehlo_keywords: Vec::new(),
            lmtp,
            default_port: if lmtp { 24 } else { 25 },
            socket_directory: PathBuf::new(),
            cache_time_limit: Duration::from_secs(2),
            reuse_time_limit: Duration::from_secs(300),
            reuse_count_limit: 0,
            line_length_limit: 998,
            mime_output_conversion: true,
            always_send_ehlo: true,
            never_send_ehlo: false,
            skip_5xx_greeting: true,
            bind_address: None,
            bind_address6: None,
            bind_address_enforce: false,
            cache_on_demand: true,
            cache_destinations: Vec::new(),
            generic_maps: None,
            tls_policy: None,
            sasl: None,
        }
    }

    /// Resolve the settings from a parameter getter. `get` is expected to be the transport's view
    /// of the configuration (main.cf with its master.cf `-o` overrides); `transport` only names it
    /// in error messages. Errors name the parameter.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
        transport: &str,
    ) -> Result<ClientSettings, String> {
        Self::for_protocol(get, transport, false)
    }

    /// As [`ClientSettings::from_params`], for SMTP (`smtp_*` parameters) or LMTP (`lmtp_*`).
    pub fn for_protocol(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
        transport: &str,
        lmtp: bool,
    ) -> Result<ClientSettings, String> {
        let p = |smtp, lmtp_name| pick(lmtp, smtp, lmtp_name);
        let text = |name: &str| get(name).map_err(|e| format!("transport {transport}: {e}"));
        let bad = |name: &str, e: String| format!("transport {transport}: parameter {name}: {e}");
        let time = |name: &str| -> Result<Duration, String> {
            corepost_config::value::parse_time(&text(name)?, 's')
                .map_err(|e| bad(name, e.to_string()))
        };
        let int = |name: &str| -> Result<i64, String> {
            text(name)?
                .trim()
                .parse::<i64>()
                .map_err(|_| bad(name, "not a number".into()))
        };
        let flag = |name: &str| -> Result<bool, String> {
            corepost_config::value::parse_bool(&text(name)?).map_err(|e| bad(name, e.to_string()))
        };
        let list = |name: &str| -> Result<Vec<String>, String> {
            Ok(corepost_config::list::split_list(&text(name)?)
                .map_err(|e| bad(name, e.to_string()))?
                .into_iter()
                .map(|k| k.to_ascii_lowercase())
                .collect())
        };
        let address = |name: &str, v6: bool| -> Result<Option<std::net::IpAddr>, String> {
            let value = text(name)?;
            let value = value.trim();
            if value.is_empty() {
                return Ok(None);
            }
            let ip: std::net::IpAddr = value
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| bad(name, format!("\"{value}\" is not an IP address")))?;
            if ip.is_ipv6() != v6 {
                return Err(bad(
                    name,
                    format!(
                        "\"{value}\" is not an IPv{} address",
                        if v6 { 6 } else { 4 }
                    ),
                ));
            }
            Ok(Some(ip))
        };
        let named = |name: &str| get(name).map_err(|e| e.to_string());
        let tls_policy = TlsSettings::from_params(&named, lmtp)
            .map_err(|e| format!("transport {transport}: {e}"))?;
        let tls = tls_policy.level;
        let sasl = if lmtp {
            None
        } else {
            sasl::SaslSettings::from_params(&named)
                .map_err(|e| format!("transport {transport}: {e}"))?
        };
        let (default_port, socket_directory) = if lmtp {
            let port = text("lmtp_tcp_port")?;
            let port = crate::delivery::lmtp::parse_port(&port)
                .ok_or_else(|| bad("lmtp_tcp_port", format!("bad port \"{port}\"")))?;
            (port, PathBuf::from(text("queue_directory")?.trim()))
        } else {
            (25, PathBuf::new())
        };
        let count = p(
            "smtp_connection_reuse_count_limit",
            "lmtp_connection_reuse_count_limit",
        );
        Ok(ClientSettings {
            helo_name: text(p("smtp_helo_name", "lmtp_lhlo_name"))?
                .trim()
                .to_string(),
            connect_timeout: time(p("smtp_connect_timeout", "lmtp_connect_timeout"))?,
            helo_timeout: time(p("smtp_helo_timeout", "lmtp_lhlo_timeout"))?,
            mail_timeout: time(p("smtp_mail_timeout", "lmtp_mail_timeout"))?,
            rcpt_timeout: time(p("smtp_rcpt_timeout", "lmtp_rcpt_timeout"))?,
            data_init_timeout: time(p("smtp_data_init_timeout", "lmtp_data_init_timeout"))?,
            data_xfer_timeout: time(p("smtp_data_xfer_timeout", "lmtp_data_xfer_timeout"))?,
            data_done_timeout: time(p("smtp_data_done_timeout", "lmtp_data_done_timeout"))?,
            quit_timeout: time(p("smtp_quit_timeout", "lmtp_quit_timeout"))?,
            tls,
            discard_ehlo_keywords: list(p(
                "smtp_discard_ehlo_keywords",
                "lmtp_discard_lhlo_keywords",
            ))?,
            lmtp,
            default_port,
            socket_directory,
            cache_time_limit: time(p(
                "smtp_connection_cache_time_limit",
                "lmtp_connection_cache_time_limit",
            ))?,
            reuse_time_limit: time(p(
                "smtp_connection_reuse_time_limit",
                "lmtp_connection_reuse_time_limit",
            ))?,
            reuse_count_limit: u32::try_from(int(count)?).unwrap_or(0),
            line_length_limit: usize::try_from(int(p(
                "smtp_line_length_limit",
                "lmtp_line_length_limit",
            ))?)
            .unwrap_or(0),
            mime_output_conversion: !flag("disable_mime_output_conversion")?,
            // Postfix's lmtp always sends LHLO: these two are SMTP's only.
            always_send_ehlo: lmtp || flag("smtp_always_send_ehlo")?,
            never_send_ehlo: !lmtp && flag("smtp_never_send_ehlo")?,
            skip_5xx_greeting: flag(p("smtp_skip_5xx_greeting", "lmtp_skip_5xx_greeting"))?,
            bind_address: address(p("smtp_bind_address", "lmtp_bind_address"), false)?,
            bind_address6: address(p("smtp_bind_address6", "lmtp_bind_address6"), true)?,
            bind_address_enforce: flag(p(
                "smtp_bind_address_enforce",
                "lmtp_bind_address_enforce",
            ))?,
            cache_on_demand: flag(p(
                "smtp_connection_cache_on_demand",
                "lmtp_connection_cache_on_demand",
            ))?,
            cache_destinations: list(p(
                "smtp_connection_cache_destinations",
                "lmtp_connection_cache_destinations",
            ))?,
            generic_maps: {
                let name = p("smtp_generic_maps", "lmtp_generic_maps");
                generic::GenericMaps::open(
                    &text(name)?,
                    &text("mydestination")?,
                    &text("recipient_delimiter")?,
                )
                .map_err(|e| bad(name, e))?
            },
            tls_policy: Some(Arc::new(tls_policy)),
            sasl,
        })
    }
}

/// One transaction to run.
#[derive(Debug, Clone, Copy)]
pub struct Outbound<'a> {
    /// The envelope sender; `""` is the null sender.
    pub sender: &'a str,
    pub params: &'a MailParams,
    pub recipients: &'a [&'a Recipient],
    /// The content as stored: CRLF lines, possibly bare LF.
    pub content: &'a [u8],
}

/// The server's reply to one RCPT TO.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientResult {
    /// 2xx: the recipient's fate is the data reply's.
    Accepted(ServerReply),
    /// 4xx or 5xx.
    Rejected(ServerReply),
}

impl RecipientResult {
    pub fn reply(&self) -> &ServerReply {
        match self {
            RecipientResult::Accepted(r) | RecipientResult::Rejected(r) => r,
        }
    }
}

/// What became of one transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionResult {
    /// One per [`Outbound::recipients`], in order.
    pub recipients: Vec<RecipientResult>,
    /// The reply to the end of data (or BDAT LAST); with SMTP it applies to every accepted
    /// recipient. `None` when no recipient was accepted: then no message was sent, and an RSET
    /// is owed (sent in front of the next transaction, or by [`SmtpConnection::reset`]). With
    /// LMTP it is the first per-recipient reply that is not 2xx, else the last one.
    pub data: Option<ServerReply>,
    /// LMTP only (empty for SMTP): the end-of-data reply of each accepted recipient, in the
    /// order of `recipients`. Shorter than the number of accepted recipients only when the
    /// connection was lost while the replies came in; the rest have no known fate.
    pub per_recipient: Vec<ServerReply>,
}

impl TransactionResult {
    fn new(recipients: Vec<RecipientResult>, data: Option<ServerReply>) -> TransactionResult {
        TransactionResult {
            recipients,
            data,
            per_recipient: Vec::new(),
        }
    }

    /// The reply that decides the fate of recipient `slot` and the command it answered: the
    /// RCPT reply of a refused recipient; for an accepted one, its own LMTP reply or the SMTP
    /// end-of-data reply. `None` when that reply never came (the caller should defer).
    pub fn final_reply(&self, slot: usize) -> Option<(&ServerReply, &'static str)> {
        match self.recipients.get(slot)? {
            RecipientResult::Rejected(reply) => Some((reply, "RCPT TO")),
            RecipientResult::Accepted(_) if self.per_recipient.is_empty() => {
                self.data.as_ref().map(|d| (d, "end of DATA"))
            }
            RecipientResult::Accepted(_) => {
                let nth = self.recipients[..slot]
                    .iter()
                    .filter(|r| matches!(r, RecipientResult::Accepted(_)))
                    .count();
                self.per_recipient.get(nth).map(|d| (d, "end of DATA"))
            }
        }
    }
}

/// Why the session (or the transaction) ended without per-recipient results.
#[derive(Debug, Clone)]
pub enum SessionError {
    Connect {
        addr: Endpoint,
        reason: String,
        host: String,
    },
    /// The source address could not be bound and `<proto>_bind_address_enforce` (or an
    /// egress pool) forbids the default address: Postfix's `4.4.0 server configuration error`.
    SourceAddress,
    /// A 4xx/5xx (or otherwise not 2xx) greeting from `peer` (`host[addr]`). With `skip`
    /// (`smtp_skip_5xx_greeting`) a 5xx is temporary.
    Greeting {
        reply: ServerReply,
        peer: String,
        skip: bool,
    },
    /// A 4xx/5xx to EHLO/HELO/STARTTLS/MAIL/DATA/RSET that ends the transaction. `peer` is
    /// `host[addr]`.
    Reply {
        stage: &'static str,
        reply: ServerReply,
        peer: String,
    },
    Timeout {
        stage: &'static str,
        peer: String,
    },
    Lost {
        stage: &'static str,
        reason: String,
        peer: String,
    },
    Tls(String),
    Protocol(String),
    /// A table the client needs (`smtp_generic_maps`) did not answer: try again later.
    Lookup(String),
    /// Refused by the TLS or SASL policy (certificate not verified, TLS not offered, AUTH
    /// failed), with Postfix's status and text; permanent only with a 5xx status.
    Policy {
        status: String,
        text: String,
    },
    /// The message needs something the server lacks (SMTPUTF8, BINARYMIME, a size under the
    /// advertised limit): permanent for every recipient, with this status.
    Unsupported {
        status: &'static str,
        text: String,
    },
}

/// What the client was doing at `stage`, in Postfix's words.
fn doing(stage: &str) -> String {
    match stage {
        "greeting" => "receiving the initial server greeting".into(),
        "EHLO" | "HELO" | "LHLO" => format!("performing the {stage} handshake"),
        "TLS handshake" => "performing the TLS handshake".into(),
        "message body" => "sending message body".into(),
        "end of DATA" => "sending end of data -- message may be sent more than once".into(),
        _ => format!("sending {stage}"),
    }
}

impl SessionError {
    /// Whether every recipient should bounce (5xx greeting or reply, unsupported feature) rather
    /// than be deferred.
    pub fn is_permanent(&self) -> bool {
        match self {
            SessionError::Greeting { reply, skip, .. } => reply.code >= 500 && !skip,
            SessionError::Reply { reply, .. } => reply.code >= 500,
            SessionError::Unsupported { .. } => true,
            SessionError::Policy { status, .. } => status.starts_with('5'),
            _ => false,
        }
    }

    /// The enhanced status code to record: the server's, or one for the kind of failure.
    pub fn status(&self) -> String {
        match self {
            // Postfix turns the status of a skipped 5xx greeting into a 4.x.x one.
            SessionError::Greeting { reply, skip, .. } if *skip && reply.code >= 500 => {
                format!("4{}", reply.status().get(1..).unwrap_or(".0.0"))
            }
            SessionError::Greeting { reply, .. } | SessionError::Reply { reply, .. } => {
                reply.status()
            }
            SessionError::Unsupported { status, .. } => status.to_string(),
            SessionError::Policy { status, .. } => status.clone(),
            SessionError::Tls(_) => "4.7.5".into(),
            SessionError::Protocol(_) => "4.5.0".into(),
            SessionError::Lookup(_) => "4.3.0".into(),
            SessionError::Connect { .. } => "4.4.1".into(),
            SessionError::SourceAddress => "4.4.0".into(),
            SessionError::Timeout { .. } | SessionError::Lost { .. } => "4.4.2".into(),
        }
    }

    /// Postfix-style text for log lines and DSNs.
    pub fn dsn(&self) -> String {
        match self {
            SessionError::Connect { addr, reason, host } => match addr {
                Endpoint::Inet(a) => {
                    format!("connect to {host}[{}]:{}: {reason}", a.ip(), a.port())
                }
                Endpoint::Unix(path) => format!("connect to {host}[{}]: {reason}", path.display()),
            },
            SessionError::SourceAddress => "server configuration error".into(),
            SessionError::Greeting { reply, peer, .. } => {
                format!("host {peer} refused to talk to me: {reply}")
            }
            SessionError::Reply { stage, reply, peer } => {
                format!("host {peer} said: {reply} (in reply to {stage} command)")
            }
            SessionError::Timeout { stage, peer } => {
                format!("conversation with {peer} timed out while {}", doing(stage))
            }
            SessionError::Lost { stage, peer, .. } => {
                format!("lost connection with {peer} while {}", doing(stage))
            }
            SessionError::Tls(text) | SessionError::Protocol(text) | SessionError::Lookup(text) => {
                text.clone()
            }
            SessionError::Unsupported { text, .. } | SessionError::Policy { text, .. } => {
                text.clone()
            }
        }
    }
}

impl fmt::Display for SessionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.dsn())?;
        if let SessionError::Lost { reason, .. } = self {
            write!(f, " ({reason})")?;
        }
        Ok(())
    }
}

impl std::error::Error for SessionError {}

/// The connect timeout to apply: zero means the system default.
fn connect_timeout(settings: &ClientSettings) -> Duration {
    if settings.connect_timeout.is_zero() {
        SYSTEM_CONNECT_TIMEOUT
    } else {
        settings.connect_timeout
    }
}

/// `strerror`-like text for a connect failure, as Postfix logs it.
fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "Connection refused".into(),
        io::ErrorKind::TimedOut => "Connection timed out".into(),
        io::ErrorKind::HostUnreachable => "No route to host".into(),
        io::ErrorKind::NetworkUnreachable => "Network is unreachable".into(),
        io::ErrorKind::ConnectionReset => "Connection reset by peer".into(),
        _ => e.to_string(),
    }
}

/// A transaction's envelope and headers after `smtp_generic_maps`.
struct Rewritten {
    sender: String,
    recipients: Vec<Recipient>,
    content: Option<Vec<u8>>,
}

fn rewrite(maps: &generic::GenericMaps, tx: &Outbound<'_>) -> Result<Rewritten, SessionError> {
    let failed = |e: corepost_config::tables::TableError| {
        SessionError::Lookup(format!("smtp_generic_maps lookup failure: {e}"))
    };
    let sender = maps
        .address(tx.sender)
        .map_err(failed)?
        .unwrap_or_else(|| tx.sender.to_string());
    let mut recipients = Vec::with_capacity(tx.recipients.len());
    for r in tx.recipients {
        let mut r = (*r).clone();
        if let Some(address) = maps.address(&r.address).map_err(failed)? {
            r.address = address;
        }
        recipients.push(r);
    }
    Ok(Rewritten {
        sender,
        recipients,
        content: maps.headers(tx.content).map_err(failed)?,
    })
}

/// Whether a greeting announces ESMTP (Postfix looks for the word anywhere in the text).
fn contains_esmtp(text: &str) -> bool {
    text.as_bytes()
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"ESMTP"))
}

/// Why [`connect_from`] failed: binding the source address, or connecting.
enum FromError {
    Bind(io::Error),
    Connect(io::Error),
}

/// A TCP connection from a chosen source address (`smtp_bind_address`): the socket is bound and
/// connected on glommio's blocking-thread pool (never on the core), then handed to glommio.
async fn connect_from(
    source: std::net::IpAddr,
    addr: SocketAddr,
    timeout: Duration,
) -> Result<TcpStream, FromError> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    let socket = glommio::executor()
        .spawn_blocking(move || -> Result<socket2::Socket, FromError> {
            let domain = if addr.is_ipv6() {
                socket2::Domain::IPV6
            } else {
                socket2::Domain::IPV4
            };
            let socket =
                socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))
                    .map_err(FromError::Connect)?;
            socket
                .bind(&SocketAddr::new(source, 0).into())
                .map_err(FromError::Bind)?;
            socket
                .connect_timeout(&addr.into(), timeout)
                .map_err(FromError::Connect)?;
            Ok(socket)
        })
        .await?;
    let fd = socket.into_raw_fd();
    // SAFETY: `fd` is a connected TCP socket that we own (just released by `into_raw_fd`); the
    // TcpStream takes over closing it.
    Ok(unsafe { TcpStream::from_raw_fd(fd) })
}

/// The TCP connection of [`SmtpConnection::connect_with`], from `source` when one is set. A
/// source that cannot be bound is Postfix's smtp_connect_addr: `warning: smtp_connect_addr:
/// bind ADDR: reason`, then the default source address, or with `bind_address_enforce` a
/// deferral (the caller logs `server configuration error`).
async fn connect_tcp(
    source: Option<std::net::IpAddr>,
    addr: SocketAddr,
    settings: &ClientSettings,
    log: &dyn Fn(&str),
) -> Result<Result<TcpStream, io::Error>, SessionError> {
    let timeout = connect_timeout(settings);
    let plain = || async move {
        TcpStream::connect_timeout(addr, timeout)
            .await
            .map_err(io::Error::from)
    };
    let Some(source) = source else {
        return Ok(plain().await);
    };
    match connect_from(source, addr, timeout).await {
        Ok(stream) => Ok(Ok(stream)),
        Err(FromError::Connect(e)) => Ok(Err(e)),
        Err(FromError::Bind(e)) => {
            let text = e.to_string();
            let reason = text.split(" (os error").next().unwrap_or(&text);
            log(&format!(
                "warning: smtp_connect_addr: bind {source}: {reason}"
            ));
            if settings.bind_address_enforce {
                return Err(SessionError::SourceAddress);
            }
            Ok(plain().await)
        }
    }
}

/// Where a connection goes: a TCP address, or a Unix-domain socket (LMTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Inet(SocketAddr),
    Unix(PathBuf),
}

impl fmt::Display for Endpoint {
    /// The address, or the socket's path: what goes between the brackets of `host[...]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Inet(a) => write!(f, "{}", a.ip()),
            Endpoint::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The read buffer starts this large and grows only for huge multi-line replies.
const READ_BUFFER: usize = 4096;
/// The most buffered reply bytes: a maximal reply (64 lines of 8 KiB) and then some.
const MAX_READ_BUFFER: usize = (reply::MAX_LINE + 2) * reply::MAX_LINES + READ_BUFFER;
/// Body bytes buffered before a write; also the output buffer kept between transactions.
const WRITE_CHUNK: usize = 128 * 1024;

/// One open SMTP session.
pub struct SmtpConnection {
    stream: Stream,
    rbuf: Vec<u8>,
    rstart: usize,
    rend: usize,
    out: Vec<u8>,
    host: String,
    endpoint: Endpoint,
    peer: String,
    settings: ClientSettings,
    caps: Capabilities,
    tls: Option<String>,
    /// The next hop this connection serves (policy and SASL lookups).
    nexthop: String,
    /// What the session's security is worth to SASL.
    channel: sasl::Channel,
    /// AUTH is still to be done before the first MAIL FROM.
    auth_pending: bool,
    /// Sender-dependent AUTH: this connection carries one transaction only.
    single_use: bool,
    /// A transaction was started (for `single_use`).
    used: bool,
    transactions: u32,
    created: Instant,
    /// An RSET is owed before the next MAIL FROM.
    needs_reset: bool,
    /// The dialogue is out of step (I/O error, timeout, garbage): only closing is left.
    broken: bool,
    /// The last transaction's body had a line broken at `line_length_limit`.
    folded: bool,
}

impl SmtpConnection {
    /// Open a session: TCP, greeting, EHLO (HELO on a 5xx), STARTTLS as `settings.tls` says
    /// (with EHLO again over TLS).
    pub async fn connect(
        addr: SocketAddr,
        host: &str,
        settings: &ClientSettings,
    ) -> Result<SmtpConnection, SessionError> {
        Self::connect_for(addr, host, host, settings, &|_| {}).await
    }

    /// [`SmtpConnection::connect`] for mail to `nexthop` (`example.com`, `[relay]:587`), whose
    /// TLS policy and SASL credentials apply; `log` receives Postfix's TLS log lines.
    pub async fn connect_for(
        addr: SocketAddr,
        host: &str,
        nexthop: &str,
        settings: &ClientSettings,
        log: &dyn Fn(&str),
    ) -> Result<SmtpConnection, SessionError> {
        let site = starttls::site_policy(settings, nexthop, log)?;
        Self::connect_with(addr, (host, nexthop), &site, settings, log).await
    }

    /// The TLS policy for mail to `nexthop` (`smtp_tls_security_level`, `smtp_tls_policy_maps`);
    /// a policy that cannot be decided is a `4.7.5` deferral (and a warning in `log`).
    pub fn site_policy(
        settings: &ClientSettings,
        nexthop: &str,
        log: &dyn Fn(&str),
    ) -> Result<SitePolicy, SessionError> {
        starttls::site_policy(settings, nexthop, log)
    }

    /// [`SmtpConnection::connect_for`] with the TLS policy already decided for this host (the
    /// DANE levels need the host's DNS: [`dane::for_host`]). `names` are the server's host name
    /// and the next hop.
    pub async fn connect_with(
        addr: SocketAddr,
        (host, nexthop): (&str, &str),
        site: &SitePolicy,
        settings: &ClientSettings,
        log: &dyn Fn(&str),
    ) -> Result<SmtpConnection, SessionError> {
        let source = if addr.is_ipv6() {
            settings.bind_address6
        } else {
            settings.bind_address
        };
        let connected = connect_tcp(source, addr, settings, log).await?;
        let stream = connected.map_err(|e| SessionError::Connect {
            addr: Endpoint::Inet(addr),
            reason: io_reason(&e),
            host: host.to_string(),
        })?;
        // Commands go out in batches already; do not let Nagle hold back the last one.
        let _ = stream.set_nodelay(true);
        let endpoint = Endpoint::Inet(addr);
        Self::start(
            Stream::Plain(stream),
            endpoint,
            (host, nexthop),
            site,
            settings,
            log,
        )
        .await
    }

    /// Open a session over a Unix-domain socket (LMTP's `unix:` next hops): the greeting and
    /// LHLO/EHLO; never STARTTLS. `host` only names the peer in log lines.
    pub async fn connect_unix(
        path: &std::path::Path,
        host: &str,
        settings: &ClientSettings,
    ) -> Result<SmtpConnection, SessionError> {
        let endpoint = Endpoint::Unix(path.to_path_buf());
        let connected = glommio::timer::timeout(connect_timeout(settings), async {
            glommio::net::UnixStream::connect(path).await
        })
        .await;
        let stream = connected.map_err(|e| SessionError::Connect {
            addr: endpoint.clone(),
            reason: io_reason(&io::Error::from(e)),
            host: host.to_string(),
        })?;
        let site = SitePolicy::plaintext();
        let names = (host, host);
        Self::start(
            Stream::Unix(stream),
            endpoint,
            names,
            &site,
            settings,
            &|_| {},
        )
        .await
    }

    /// The greeting, EHLO/LHLO and STARTTLS on a connected stream; `names` are the server's
    /// host name and the next hop.
    async fn start(
        stream: Stream,
        endpoint: Endpoint,
        (host, nexthop): (&str, &str),
        site: &SitePolicy,
        settings: &ClientSettings,
        log: &dyn Fn(&str),
    ) -> Result<SmtpConnection, SessionError> {
        let mut conn = SmtpConnection {
            stream,
            rbuf: vec![0; READ_BUFFER],
            rstart: 0,
            rend: 0,
            out: Vec::with_capacity(1024),
            host: host.to_string(),
            peer: format!("{host}[{endpoint}]"),
            endpoint,
            settings: settings.clone(),
            caps: Capabilities::default(),
            tls: None,
            nexthop: nexthop.to_string(),
            channel: sasl::Channel::Plaintext,
            auth_pending: false,
            single_use: settings.sasl.as_ref().is_some_and(|s| s.sender_dependent()),
            used: false,
            transactions: 0,
            created: Instant::now(),
            needs_reset: false,
            broken: false,
            folded: false,
        };
        let greeting = conn.read_reply("greeting", settings.helo_timeout).await?;
        if greeting.code / 100 != 2 {
            return Err(SessionError::Greeting {
                reply: greeting,
                peer: conn.peer.clone(),
                skip: settings.skip_5xx_greeting,
            });
        }
        // Postfix: EHLO when `smtp_always_send_ehlo` or the greeting says ESMTP, never with
        // `smtp_never_send_ehlo` (LMTP: always LHLO).
        let esmtp = settings.always_send_ehlo || contains_esmtp(&greeting.text);
        conn.hello(esmtp && !settings.never_send_ehlo).await?;
        if site.level != TlsLevel::None {
            if conn.caps.starttls {
                if let Err(e) = conn.starttls(site, log).await {
                    conn.quit().await; // polite when the dialogue is still in step
                    return Err(e);
                }
            } else if site.level.requires_tls() {
                return Err(SessionError::Policy {
                    status: "4.7.4".into(),
                    text: format!("TLS is required, but was not offered by host {}", conn.peer),
                });
            } else if let Some(domain) = &site.sts_testing {
                log(&format!(
                    "warning: MTA-STS policy for {domain} (testing): TLS is required, but was not offered by host {}",
                    conn.peer
                ));
            }
        }
        conn.auth_pending = settings.sasl.is_some() && conn.caps.auth.is_some();
        Ok(conn)
    }

    /// EHLO, or HELO when EHLO gets a 5xx (or right away when `ehlo` is false); sets the
    /// capabilities. LMTP: LHLO, and no fallback.
    async fn hello(&mut self, ehlo: bool) -> Result<(), SessionError> {
        let timeout = self.settings.helo_timeout;
        let verb = if self.settings.lmtp { "LHLO" } else { "EHLO" };
        if (ehlo || self.settings.lmtp) && self.extended_hello(verb, timeout).await? {
            return Ok(());
        }
        self.out.clear();
        self.out.extend_from_slice(b"HELO ");
        self.out
            .extend_from_slice(self.settings.helo_name.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.send("HELO", timeout).await?;
        let reply = self.read_reply("HELO", timeout).await?;
        if reply.code / 100 != 2 {
            return Err(self.reply_error("HELO", reply));
        }
        self.caps = Capabilities::default();
        Ok(())
    }

    /// EHLO or LHLO: true when it was accepted, false when HELO should follow (a 5xx to EHLO).
    async fn extended_hello(
        &mut self,
        verb: &'static str,
        timeout: Duration,
    ) -> Result<bool, SessionError> {
        self.out.clear();
        self.out.extend_from_slice(verb.as_bytes());
        self.out.push(b' ');
        self.out
            .extend_from_slice(self.settings.helo_name.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self.send(verb, timeout).await?;
        let (reply, raw) = self.read_reply_raw(verb, timeout).await?;
        if reply.code / 100 == 2 {
            self.caps = Capabilities::from_ehlo(&self.rbuf[raw]);
            self.caps.discard(&self.settings.discard_ehlo_keywords);
            return Ok(true);
        }
        if reply.code < 500 || self.settings.lmtp {
            return Err(self.reply_error(verb, reply));
        }
        Ok(false)
    }

    /// Run one transaction; see the module docs and [`TransactionResult`].
    pub async fn deliver(&mut self, tx: &Outbound<'_>) -> Result<TransactionResult, SessionError> {
        if self.broken || !self.may_reuse() {
            return Err(SessionError::Protocol(format!(
                "connection to {} is not usable after an earlier error",
                self.peer
            )));
        }
        self.used = true;
        if self.auth_pending {
            self.auth_pending = false;
            self.authenticate(tx.sender).await?;
        }
        if tx.recipients.is_empty() {
            return Ok(TransactionResult::new(Vec::new(), None));
        }
        // smtp_generic_maps: the addresses as the next hop should see them.
        let rewritten = match &self.settings.generic_maps {
            Some(maps) => Some(rewrite(maps, tx)?),
            None => None,
        };
        let refs: Vec<&Recipient>;
        let owned;
        let tx = match &rewritten {
            Some(r) => {
                refs = r.recipients.iter().collect();
                owned = Outbound {
                    sender: &r.sender,
                    params: tx.params,
                    recipients: &refs,
                    content: r.content.as_deref().unwrap_or(tx.content),
                };
                &owned
            }
            None => tx,
        };
        let opts = self.mail_options(tx)?;
        // 8-bit MIME parts to a server without 8BITMIME: quoted-printable, as Postfix.
        let converted = if self.settings.mime_output_conversion
            && !self.caps.eightbitmime
            && tx.params.body != BodyType::BinaryMime
        {
            downgrade::to_seven_bit(tx.content)
        } else {
            None
        };
        let tx = &Outbound {
            content: converted.as_deref().unwrap_or(tx.content),
            ..*tx
        };
        self.folded = false;
        // BDAT whenever the server offers CHUNKING with PIPELINING: MAIL,
        // the RCPTs and the whole message then go out in one write and come
        // back in one round trip, where DATA needs a second one for its 354
        // (`smtp_discard_ehlo_keywords = chunking` turns this off).
        // Content with a bare CR or LF or a line over the length limit goes by DATA, whose
        // encoding repairs and folds lines ([`encode::BodyEncoder`]).
        let use_bdat = opts.body == Some(BodyType::BinaryMime)
            || (self.caps.chunking
                && self.caps.pipelining
                && encode::is_canonical(tx.content, self.settings.line_length_limit));
        let s = Timeouts::of(&self.settings);
        let mut results = Vec::with_capacity(tx.recipients.len());
        let data_init;
        // On plaintext TCP a BDAT body goes out from the spool's mapping in the same sendmsg as
        // the commands before it, never copied into the output buffer.
        let vectored = self.stream.plain_fd().is_some();

        self.out.clear();
        if self.caps.pipelining {
            let owed_reset = self.needs_reset;
            if owed_reset {
                self.out.extend_from_slice(b"RSET\r\n");
            }
            encode::push_mail_from(&mut self.out, tx.sender, tx.params, &opts);
            for rcpt in tx.recipients {
                encode::push_rcpt_to(&mut self.out, rcpt, opts.dsn);
            }
            let with_body = use_bdat && tx.content.len() <= WRITE_CHUNK;
            if use_bdat {
                self.push_bdat_header(tx.content.len());
                if with_body && !vectored {
                    self.out.extend_from_slice(tx.content);
                }
            } else {
                self.out.extend_from_slice(b"DATA\r\n");
            }
            if with_body && vectored {
                self.send_with("MAIL FROM", tx.content, s.mail_timeout)
                    .await?;
            } else {
                self.send("MAIL FROM", s.mail_timeout).await?;
            }
            if use_bdat && tx.content.len() > WRITE_CHUNK {
                self.write_direct(tx.content, "message body", s.data_xfer_timeout)
                    .await?;
            }
            if owed_reset {
                let reply = self.read_reply("RSET", s.mail_timeout).await?;
                if reply.code / 100 != 2 {
                    self.broken = true;
                    return Err(self.reply_error("RSET", reply));
                }
                self.needs_reset = false;
            }
            let mail = self.read_reply("MAIL FROM", s.mail_timeout).await?;
            // The first reply that ends the session (a refused MAIL, a 421): if the server then
            // hangs up, that reply is what to report, not the lost connection.
            let mut fatal = (mail.code / 100 != 2).then(|| ("MAIL FROM", mail.clone()));
            for _ in tx.recipients {
                let reply = match self.read_reply("RCPT TO", s.rcpt_timeout).await {
                    Ok(r) => r,
                    Err(e) => return Err(self.prefer_reply(fatal, e)),
                };
                if reply.code == 421 && fatal.is_none() {
                    fatal = Some(("RCPT TO", reply.clone()));
                }
                results.push(recipient_result(reply));
            }
            let (stage, timeout) = if use_bdat {
                ("BDAT", s.data_done_timeout)
            } else {
                ("DATA", s.data_init_timeout)
            };
            data_init = match self.read_reply(stage, timeout).await {
                Ok(r) => r,
                Err(e) => return Err(self.prefer_reply(fatal, e)),
            };
            if let Some((stage, reply)) = fatal {
                if data_init.code == 354 && !use_bdat {
                    // A server that let DATA through anyway: end the empty message.
                    self.abort_data().await?;
                }
                self.needs_reset = true;
                return Err(self.reply_error(stage, reply));
            }
        } else {
            if self.needs_reset {
                self.reset().await?;
            }
            encode::push_mail_from(&mut self.out, tx.sender, tx.params, &opts);
            self.send("MAIL FROM", s.mail_timeout).await?;
            let mail = self.read_reply("MAIL FROM", s.mail_timeout).await?;
            if mail.code / 100 != 2 {
                self.needs_reset = true;
                return Err(self.reply_error("MAIL FROM", mail));
            }
            for rcpt in tx.recipients {
                encode::push_rcpt_to(&mut self.out, rcpt, opts.dsn);
                self.send("RCPT TO", s.rcpt_timeout).await?;
                let reply = self.read_reply("RCPT TO", s.rcpt_timeout).await?;
                if reply.code == 421 {
                    return Err(self.reply_error("RCPT TO", reply));
                }
                results.push(recipient_result(reply));
            }
            if !results
                .iter()
                .any(|r| matches!(r, RecipientResult::Accepted(_)))
            {
                self.needs_reset = true;
                return Ok(TransactionResult::new(results, None));
            }
            if use_bdat {
                self.push_bdat_header(tx.content.len());
                if vectored {
                    // Named after the larger part, as the two writes before.
                    self.send_with("message body", tx.content, s.data_xfer_timeout)
                        .await?;
                } else {
                    self.send("BDAT", s.data_xfer_timeout).await?;
                    self.write_direct(tx.content, "message body", s.data_xfer_timeout)
                        .await?;
                }
                data_init = self.read_reply("BDAT", s.data_done_timeout).await?;
            } else {
                self.out.extend_from_slice(b"DATA\r\n");
                self.send("DATA", s.data_init_timeout).await?;
                data_init = self.read_reply("DATA", s.data_init_timeout).await?;
            }
        }

        let accepted = results
            .iter()
            .any(|r| matches!(r, RecipientResult::Accepted(_)));
        if use_bdat {
            // BDAT LAST's reply is the end-of-data reply.
            if !accepted {
                self.needs_reset = true;
                return Ok(TransactionResult::new(results, None));
            }
            return self
                .end_of_data(results, data_init, s.data_done_timeout)
                .await;
        }
        if data_init.code != 354 {
            self.needs_reset = true;
            if !accepted {
                return Ok(TransactionResult::new(results, None));
            }
            return Err(self.reply_error("DATA", data_init));
        }
        if !accepted {
            // A server that says 354 with no recipient: end the empty message and forget it.
            self.abort_data().await?;
            self.needs_reset = true;
            return Ok(TransactionResult::new(results, None));
        }
        self.send_body(tx.content).await?;
        let done = self.read_reply("end of DATA", s.data_done_timeout).await?;
        self.end_of_data(results, done, s.data_done_timeout).await
    }

    /// The end of a transaction whose content went out and whose first end-of-data reply is
    /// `first`. SMTP is done; LMTP reads one reply more per further accepted recipient. A lost
    /// connection after the first LMTP reply still returns the replies that came (the session
    /// is then unusable; recipients without a reply have no known fate).
    async fn end_of_data(
        &mut self,
        results: Vec<RecipientResult>,
        first: ServerReply,
        timeout: Duration,
    ) -> Result<TransactionResult, SessionError> {
        self.transactions += 1;
        if !self.settings.lmtp {
            self.needs_reset = first.code / 100 != 2;
            return Ok(TransactionResult::new(results, Some(first)));
        }
        let accepted = results
            .iter()
            .filter(|r| matches!(r, RecipientResult::Accepted(_)))
            .count();
        let mut replies = Vec::with_capacity(accepted);
        replies.push(first);
        while replies.len() < accepted {
            // An error leaves the connection marked broken; the caller sees the gap.
            match self.read_reply("end of DATA", timeout).await {
                Ok(reply) => replies.push(reply),
                Err(_) => break,
            }
        }
        // Whatever the replies said, the transaction is over: no RSET is owed (RFC 2033 §4.2).
        self.needs_reset = false;
        let data = replies
            .iter()
            .find(|r| r.code / 100 != 2)
            .or(replies.last())
            .cloned();
        Ok(TransactionResult {
            recipients: results,
            data,
            per_recipient: replies,
        })
    }

    /// Decide the MAIL FROM parameters, or refuse the message for this server.
    fn mail_options(&self, tx: &Outbound<'_>) -> Result<MailOptions, SessionError> {
        let caps = &self.caps;
        let size = tx.content.len() as u64;
        if let Some(limit) = caps.size_limit
            && size > limit
        {
            return Err(SessionError::Unsupported {
                status: "5.3.4",
                text: format!(
                    "message size {size} exceeds size limit {limit} of server {}",
                    self.peer
                ),
            });
        }
        let body = match tx.params.body {
            BodyType::BinaryMime if caps.chunking && caps.binarymime => Some(BodyType::BinaryMime),
            BodyType::BinaryMime => {
                return Err(SessionError::Unsupported {
                    status: "5.6.3",
                    text: format!(
                        "message has binary content, but host {} does not support BINARYMIME",
                        self.peer
                    ),
                });
            }
            BodyType::EightBitMime if caps.eightbitmime => Some(BodyType::EightBitMime),
            _ => None,
        };
        let needs_utf8 =
            !tx.sender.is_ascii() || tx.recipients.iter().any(|r| !r.address.is_ascii());
        if needs_utf8 && !caps.smtputf8 {
            return Err(SessionError::Unsupported {
                status: "5.6.7",
                text: format!(
                    "SMTPUTF8 is required, but was not offered by host {}",
                    self.peer
                ),
            });
        }
        Ok(MailOptions {
            size: caps.size.then_some(size),
            body,
            smtputf8: caps.smtputf8 && (needs_utf8 || tx.params.smtputf8),
            dsn: caps.dsn,
        })
    }

    /// After a 354 that should not have come: send an empty body's final dot and read (and
    /// ignore) the reply, so the dialogue stays in step.
    async fn abort_data(&mut self) -> Result<(), SessionError> {
        let timeout = self.settings.data_done_timeout;
        self.out.extend_from_slice(b".\r\n");
        self.send("end of DATA", timeout).await?;
        self.read_reply("end of DATA", timeout).await?;
        Ok(())
    }

    /// When the server hung up after a reply that ended the session anyway, report the reply.
    fn prefer_reply(
        &mut self,
        fatal: Option<(&'static str, ServerReply)>,
        e: SessionError,
    ) -> SessionError {
        self.broken = true;
        match fatal {
            Some((stage, reply)) => self.reply_error(stage, reply),
            None => e,
        }
    }

    fn push_bdat_header(&mut self, len: usize) {
        self.out.extend_from_slice(b"BDAT ");
        self.out.extend_from_slice(len.to_string().as_bytes());
        self.out.extend_from_slice(b" LAST\r\n");
    }

    /// The DATA body, encoded ([`encode::BodyEncoder`]: dot-stuffing, CRLF line ends, long lines
    /// broken) into the output buffer, written whenever the buffer holds [`WRITE_CHUNK`] bytes,
    /// then the final dot.
    /// Content that needs only dot-stuffing goes out on plaintext TCP straight from the
    /// spool's mapping ([`zerocopy`]); the bytes are the same.
    async fn send_body(&mut self, content: &[u8]) -> Result<(), SessionError> {
        let timeout = self.settings.data_xfer_timeout;
        let fd = self.stream.plain_fd();
        if fd.is_some() && encode::is_canonical(content, self.settings.line_length_limit) {
            self.folded = false;
            // As the buffered path: a failure in the last (here: only) write is at the end.
            let stage = if content.len() > WRITE_CHUNK {
                "message body"
            } else {
                "end of DATA"
            };
            let mut slices = zerocopy::stuffed_slices(content);
            let result = zerocopy::write_all(&mut self.stream, fd, &mut slices, timeout).await;
            return result.map_err(|e| self.io_error(stage, e));
        }
        let mut encoder = encode::BodyEncoder::new(self.settings.line_length_limit);
        for piece in content.chunks(WRITE_CHUNK) {
            encoder.push(&mut self.out, piece);
            if self.out.len() >= WRITE_CHUNK {
                self.send("message body", timeout).await?;
            }
        }
        encoder.finish(&mut self.out);
        self.folded = encoder.folded();
        self.send("end of DATA", timeout).await
    }

    /// Whether the last transaction's content had a line broken at the line length limit
    /// (Postfix logs `breaking line > N bytes with <CR><LF>SPACE`).
    pub fn folded(&self) -> bool {
        self.folded
    }

    /// RSET, to bring the session back to a clean state after a failed transaction.
    pub async fn reset(&mut self) -> Result<(), SessionError> {
        if self.broken {
            return Err(SessionError::Protocol(format!(
                "connection to {} is not usable after an earlier error",
                self.peer
            )));
        }
        let timeout = self.settings.mail_timeout;
        self.out.clear();
        self.out.extend_from_slice(b"RSET\r\n");
        self.send("RSET", timeout).await?;
        let reply = self.read_reply("RSET", timeout).await?;
        if reply.code / 100 != 2 {
            self.broken = true;
            return Err(self.reply_error("RSET", reply));
        }
        self.needs_reset = false;
        Ok(())
    }

    /// QUIT and close. Waits at most `quit_timeout` for the reply, ignores every error.
    pub async fn quit(mut self) {
        let timeout = self.settings.quit_timeout;
        if !self.broken {
            self.out.clear();
            self.out.extend_from_slice(b"QUIT\r\n");
            if self.send("QUIT", timeout).await.is_ok() {
                let _ = self.read_reply("QUIT", timeout).await;
            }
        }
        // TLS: close_notify before the socket closes. A plain or Unix socket needs nothing:
        // dropping it closes it (a FIN, the QUIT reply having been read), where glommio's close
        // would add a shutdown(2) per connection.
        if let Stream::Tls(_) = &self.stream {
            let stream = &mut self.stream;
            let _ = glommio::timer::timeout(timeout.max(Duration::from_millis(1)), async {
                stream.close().await?;
                Ok(())
            })
            .await;
        }
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP address; `None` on a Unix-domain socket.
    pub fn addr(&self) -> Option<SocketAddr> {
        match self.endpoint {
            Endpoint::Inet(a) => Some(a),
            Endpoint::Unix(_) => None,
        }
    }

    /// `host[addr]` or `host[/socket/path]`, for error texts.
    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// `host[addr]:port` (or `host[/socket/path]`), for log lines (`relay=`).
    pub fn relay(&self) -> String {
        match &self.endpoint {
            Endpoint::Inet(a) => format!("{}[{}]:{}", self.host, a.ip(), a.port()),
            Endpoint::Unix(_) => self.peer.clone(),
        }
    }

    /// `TLSv1.3 with cipher ...` once STARTTLS succeeded.
    pub fn tls(&self) -> Option<String> {
        self.tls.clone()
    }

    /// Transactions that reached the end of data on this connection.
    pub fn transactions(&self) -> u32 {
        self.transactions
    }

    pub fn age(&self) -> Duration {
        self.created.elapsed()
    }

    /// What the server advertised (after STARTTLS: in the EHLO over TLS).
    pub fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    /// False when the connection must carry no further transaction although it is in step
    /// (sender-dependent SASL authentication: one sender per connection, as Postfix).
    pub fn may_reuse(&self) -> bool {
        !(self.single_use && self.used)
    }

    /// False once the dialogue is out of step; only [`SmtpConnection::quit`] is left then.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// A reply that ends the transaction. A 421 means the server is closing the connection.
    fn reply_error(&mut self, stage: &'static str, reply: ServerReply) -> SessionError {
        if reply.code == 421 {
            self.broken = true;
        }
        SessionError::Reply {
            stage,
            reply,
            peer: self.peer.clone(),
        }
    }

    fn io_error(&mut self, stage: &'static str, e: io::Error) -> SessionError {
        self.broken = true;
        if e.kind() == io::ErrorKind::TimedOut {
            SessionError::Timeout {
                stage,
                peer: self.peer.clone(),
            }
        } else {
            SessionError::Lost {
                stage,
                reason: e.to_string(),
                peer: self.peer.clone(),
            }
        }
    }

    /// Write and clear the output buffer.
    async fn send(&mut self, stage: &'static str, timeout: Duration) -> Result<(), SessionError> {
        let result = {
            let stream = &mut self.stream;
            let out = &self.out;
            glommio::timer::timeout(timeout.max(Duration::from_millis(1)), async {
                stream.write_all(out).await?;
                stream.flush().await?;
                Ok(())
            })
            .await
        };
        if let Err(e) = result {
            return Err(self.io_error(stage, io::Error::from(e)));
        }
        self.out.clear();
        if self.out.capacity() > 2 * WRITE_CHUNK {
            self.out.shrink_to(WRITE_CHUNK);
        }
        Ok(())
    }

    /// Write the output buffer and then `tail` (a BDAT body straight from the spool) in one
    /// `sendmsg` on plaintext TCP ([`zerocopy::write_all`]), and clear the buffer.
    async fn send_with(
        &mut self,
        stage: &'static str,
        tail: &[u8],
        timeout: Duration,
    ) -> Result<(), SessionError> {
        let fd = self.stream.plain_fd();
        let result = {
            let mut slices = [io::IoSlice::new(&self.out), io::IoSlice::new(tail)];
            zerocopy::write_all(&mut self.stream, fd, &mut slices, timeout).await
        };
        if let Err(e) = result {
            return Err(self.io_error(stage, e));
        }
        self.out.clear();
        Ok(())
    }

    /// Write bytes that are not in the output buffer (a large BDAT body, straight from the
    /// caller's slice).
    async fn write_direct(
        &mut self,
        bytes: &[u8],
        stage: &'static str,
        timeout: Duration,
    ) -> Result<(), SessionError> {
        let result = {
            let stream = &mut self.stream;
            glommio::timer::timeout(timeout.max(Duration::from_millis(1)), async {
                stream.write_all(bytes).await?;
                stream.flush().await?;
                Ok(())
            })
            .await
        };
        result.map_err(|e| self.io_error(stage, io::Error::from(e)))
    }

    async fn read_reply(
        &mut self,
        stage: &'static str,
        timeout: Duration,
    ) -> Result<ServerReply, SessionError> {
        Ok(self.read_reply_raw(stage, timeout).await?.0)
    }

    /// The next reply, and where its raw bytes are in `rbuf` (valid until the next read).
    async fn read_reply_raw(
        &mut self,
        stage: &'static str,
        timeout: Duration,
    ) -> Result<(ServerReply, std::ops::Range<usize>), SessionError> {
        let deadline = Instant::now() + timeout;
        loop {
            match reply::parse_reply(&self.rbuf[self.rstart..self.rend]) {
                Ok(Some((reply, used))) => {
                    let raw = self.rstart..self.rstart + used;
                    self.rstart += used;
                    if self.rstart == self.rend {
                        self.rstart = 0;
                        self.rend = 0;
                    }
                    return Ok((reply, raw));
                }
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(SessionError::Protocol(format!(
                        "host {} sent a bad reply while {}: {e}",
                        self.peer,
                        doing(stage)
                    )));
                }
            }
            self.fill(stage, deadline).await?;
        }
    }

    /// Read more bytes into `rbuf`, making room first.
    async fn fill(&mut self, stage: &'static str, deadline: Instant) -> Result<(), SessionError> {
        if self.rend == self.rbuf.len() {
            if self.rstart > 0 {
                self.rbuf.copy_within(self.rstart..self.rend, 0);
                self.rend -= self.rstart;
                self.rstart = 0;
            } else if self.rbuf.len() < MAX_READ_BUFFER {
                let n = (self.rbuf.len() * 4).min(MAX_READ_BUFFER);
                self.rbuf.resize(n, 0);
            } else {
                // parse_reply bounds lines and replies below this size; unreachable in practice.
                self.broken = true;
                return Err(SessionError::Protocol(format!(
                    "reply from {} too large",
                    self.peer
                )));
            }
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            self.broken = true;
            return Err(SessionError::Timeout {
                stage,
                peer: self.peer.clone(),
            });
        }
        let result = {
            let stream = &mut self.stream;
            let buf = &mut self.rbuf[self.rend..];
            glommio::timer::timeout(remaining, async { Ok(stream.read(buf).await?) }).await
        };
        match result {
            Ok(0) => Err(self.io_error(
                stage,
                io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by server"),
            )),
            Ok(n) => {
                self.rend += n;
                Ok(())
            }
            Err(e) => Err(self.io_error(stage, io::Error::from(e))),
        }
    }
}

/// The per-stage timeouts of a transaction, copied out of the settings (no clone of the strings
/// on the hot path).
#[derive(Clone, Copy)]
struct Timeouts {
    mail_timeout: Duration,
    rcpt_timeout: Duration,
    data_init_timeout: Duration,
    data_xfer_timeout: Duration,
    data_done_timeout: Duration,
}

impl Timeouts {
    fn of(s: &ClientSettings) -> Timeouts {
        Timeouts {
            mail_timeout: s.mail_timeout,
            rcpt_timeout: s.rcpt_timeout,
            data_init_timeout: s.data_init_timeout,
            data_xfer_timeout: s.data_xfer_timeout,
            data_done_timeout: s.data_done_timeout,
        }
    }
}

fn recipient_result(reply: ServerReply) -> RecipientResult {
    if reply.code / 100 == 2 {
        RecipientResult::Accepted(reply)
    } else {
        RecipientResult::Rejected(reply)
    }
}
