//! XCLIENT (Postfix's extension for proxies and test tools): a client
//! listed in `smtpd_authorized_xclient_hosts` replaces what smtpd knows
//! about the client (name, address, port, HELO, protocol, login) and gets
//! a fresh `220` greeting, as if it had connected from there. Replies,
//! attribute checks and their order are Postfix 3.7's.

use super::{Reply, Session};
use crate::smtpd::address::{decode_xtext, parse_domain};
use crate::smtpd::restrictions::NameStatus;
use std::net::{IpAddr, SocketAddr};

/// The EHLO keyword, with the attributes corepost accepts.
pub(super) const KEYWORD: &str =
    "XCLIENT NAME ADDR PROTO HELO REVERSE_NAME PORT LOGIN DESTADDR DESTPORT";

/// `[UNAVAILABLE]` and `[TEMPUNAVAIL]` stand for "no value".
fn unavailable(value: &str) -> Option<NameStatus> {
    match value {
        "[UNAVAILABLE]" => Some(NameStatus::NotFound),
        "[TEMPUNAVAIL]" => Some(NameStatus::TempFail),
        _ => None,
    }
}

/// What one XCLIENT command asks to change.
#[derive(Default)]
struct Change {
    name: Option<(String, NameStatus)>,
    reverse_name: Option<(String, NameStatus)>,
    addr: Option<IpAddr>,
    port: Option<u16>,
    helo: Option<Option<String>>,
    esmtp: Option<bool>,
    login: Option<Option<String>>,
}

impl Session {
    /// Whether this client may use XCLIENT (checked against the client as
    /// smtpd currently sees it, so a simulated client may not go on).
    pub(super) fn xclient_allowed(&self) -> bool {
        self.settings.xclient_hosts.contains(self.peer.ip())
    }

    pub(super) fn xclient(&mut self, arg: &str) -> Result<Reply, Reply> {
        if self.tx.is_some() {
            return Err(Reply::new(
                503,
                "5.5.1",
                "Error: MAIL transaction in progress",
            ));
        }
        if arg.is_empty() {
            return Err(Reply::new(
                501,
                "5.5.4",
                "Syntax: XCLIENT attribute=value...",
            ));
        }
        if !self.xclient_allowed() {
            return Err(Reply::new(
                550,
                "5.7.0",
                "Error: insufficient authorization",
            ));
        }
        let change = parse(arg)?;
        self.apply(change);
        Ok(Reply::new(220, "", self.settings.banner.clone()))
    }

    /// The new client: what was not given stays; HELO and the protocol
    /// start over unless given.
    fn apply(&mut self, c: Change) {
        if let Some((name, status)) = c.name {
            self.client_name = name;
            self.name_status = status;
        }
        if let Some((name, status)) = c.reverse_name {
            self.reverse_client_name = name;
            self.reverse_name_status = status;
        }
        let addr = c.addr.unwrap_or(self.peer.ip());
        let port = c.port.unwrap_or(self.peer.port());
        self.peer = SocketAddr::new(addr, port);
        self.helo = c.helo.flatten();
        self.esmtp = c.esmtp.unwrap_or(false);
        if let Some(login) = c.login {
            self.secure.sasl = login.map(|username| super::tls_auth::Login {
                method: "XCLIENT".into(),
                username,
            });
        }
        self.tx = None;
        self.ill_pipelining = false;
    }
}

/// `ATTR=xtext ...`, names case-insensitive.
fn parse(arg: &str) -> Result<Change, Reply> {
    let mut c = Change::default();
    for word in arg.split([' ', '\t']).filter(|w| !w.is_empty()) {
        let (name, raw) = word.split_once('=').unwrap_or((word, ""));
        let upper = name.to_ascii_uppercase();
        let bad = |what: &str, value: &str| {
            Reply::new(501, "5.5.4", format!("Bad {what} syntax: {value}"))
        };
        let value = decode_xtext(raw).ok_or_else(|| bad(&upper, raw))?;
        match upper.as_str() {
            "NAME" | "REVERSE_NAME" => {
                let entry = match unavailable(&value) {
                    Some(status) => ("unknown".to_string(), status),
                    None if parse_domain(&value).is_ok() && !value.starts_with('[') => {
                        (value.to_ascii_lowercase(), NameStatus::Ok)
                    }
                    None => return Err(bad(&upper, &value)),
                };
                if upper == "NAME" {
                    c.name = Some(entry);
                } else {
                    c.reverse_name = Some(entry);
                }
            }
            "ADDR" | "DESTADDR" => {
                let ip = if unavailable(&value).is_some() {
                    None
                } else {
                    let text = value
                        .get(..5)
                        .filter(|p| p.eq_ignore_ascii_case("IPV6:"))
                        .map_or(value.as_str(), |_| &value[5..]);
                    Some(text.parse::<IpAddr>().map_err(|_| bad(&upper, &value))?)
                };
                if upper == "ADDR" {
                    c.addr = ip;
                }
            }
            "PORT" | "DESTPORT" => {
                let port = if unavailable(&value).is_some() {
                    None
                } else if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
                    // Postfix checks the digits, not the range.
                    Some(value.parse::<u64>().map_or(0, |p| (p & 0xffff) as u16))
                } else {
                    return Err(bad(&upper, &value));
                };
                if upper == "PORT" {
                    c.port = port;
                }
            }
            "HELO" => {
                c.helo = Some(unavailable(&value).is_none().then_some(value));
            }
            "PROTO" => match value.to_ascii_uppercase().as_str() {
                "SMTP" => c.esmtp = Some(false),
                "ESMTP" => c.esmtp = Some(true),
                _ if unavailable(&value).is_some() => {}
                _ => return Err(bad(&upper, &value)),
            },
            "LOGIN" => c.login = Some(unavailable(&value).is_none().then_some(value)),
            _ => {
                return Err(Reply::new(
                    501,
                    "5.5.4",
                    format!("Bad XCLIENT attribute name: {name}"),
                ));
            }
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes() {
        let c = parse("name=Spike.Example ADDR=10.1.2.3 PORT=1234 HELO=[UNAVAILABLE] PROTO=ESMTP")
            .unwrap();
        assert_eq!(c.name, Some(("spike.example".into(), NameStatus::Ok)));
        assert_eq!(c.addr, Some("10.1.2.3".parse().unwrap()));
        assert_eq!((c.port, c.esmtp), (Some(1234), Some(true)));
        assert_eq!(c.helo, Some(None));
        assert!(parse("ADDR=IPV6:2001:db8::1").unwrap().addr.is_some());
        let err = |a: &str| parse(a).err().map(|r| r.summary());
        assert_eq!(
            err("FOO=bar").unwrap(),
            "501 5.5.4 Bad XCLIENT attribute name: FOO"
        );
        assert_eq!(
            err("ADDR=bogus").unwrap(),
            "501 5.5.4 Bad ADDR syntax: bogus"
        );
        assert_eq!(err("NAME=a+20b").unwrap(), "501 5.5.4 Bad NAME syntax: a b");
        assert_eq!(err("PORT=x").unwrap(), "501 5.5.4 Bad PORT syntax: x");
        assert_eq!(err("PROTO=FOO").unwrap(), "501 5.5.4 Bad PROTO syntax: FOO");
        assert!(parse("PORT=99999").is_ok());
    }
}
