//! `master.cf`: the services corepost runs, one per logical line.
//!
//! ```text
//! # service type  private unpriv  chroot  wakeup  maxproc command + args
//! smtp      inet  n       -       n       -       -       smtpd
//! submission inet n       -       n       -       -       smtpd
//!   -o smtpd_tls_security_level=encrypt
//!   -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
//! ```
//!
//! Logical lines follow main.cf's rules (comments, continuation lines that
//! start with whitespace). Fields are separated by whitespace; a `-` takes
//! the field's default. Command arguments may be grouped with `{ ... }` so
//! that one argument contains spaces. `-o name=value` arguments become the
//! service's parameter overrides and are removed from the argument list the
//! command sees; everything else (e.g. pipe's `argv=... ${recipient}`) is
//! kept verbatim — `${recipient}` is the delivery agent's macro, not a
//! parameter.

use crate::error::{ConfigError, Location};
use crate::list::split_args;
use crate::maincf::{logical_lines, split_name_value};
use std::fmt;
use std::path::{Path, PathBuf};

/// The second master.cf column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ServiceType {
    Inet,
    Unix,
    UnixDgram,
    Fifo,
    Pass,
}

impl ServiceType {
    pub fn parse(text: &str) -> Option<ServiceType> {
        Some(match text {
            "inet" => ServiceType::Inet,
            "unix" => ServiceType::Unix,
            "unix-dgram" => ServiceType::UnixDgram,
            "fifo" => ServiceType::Fifo,
            "pass" => ServiceType::Pass,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::Inet => "inet",
            ServiceType::Unix => "unix",
            ServiceType::UnixDgram => "unix-dgram",
            ServiceType::Fifo => "fifo",
            ServiceType::Pass => "pass",
        }
    }
}

impl fmt::Display for ServiceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wakeup column: run the service every `seconds`; with `?`, only when
/// it is actually used (Postfix's "conditional wakeup").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    pub seconds: u32,
    pub conditional: bool,
}

/// One `-o name=value` override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub name: String,
    pub value: String,
}

/// One master.cf entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// First column: for inet services `[host:]port`, else a name.
    pub name: String,
    pub kind: ServiceType,
    /// The columns as written (`-` kept), for `-M` output.
    pub columns: [String; 5],
    pub private: bool,
    pub unprivileged: bool,
    pub chroot: bool,
    pub wakeup: Option<Wakeup>,
    /// `None` means `$default_process_limit`.
    pub max_proc: Option<u32>,
    /// The program, e.g. `smtpd`, `smtp`, `pipe`.
    pub command: String,
    /// Arguments other than `-o` overrides, in order.
    pub args: Vec<String>,
    /// `-o` overrides in order; a later one for the same name wins.
    pub overrides: Vec<Override>,
    /// Line where the entry starts.
    pub line: usize,
}

impl Service {
    /// `name/type`, Postfix's way of naming a service (`smtp/inet`).
    pub fn id(&self) -> String {
        format!("{}/{}", self.name, self.kind)
    }

    /// The value this service's `-o` overrides give `name`, if any.
    pub fn override_value(&self, name: &str) -> Option<&str> {
        self.overrides
            .iter()
            .rev()
            .find(|o| o.name == name)
            .map(|o| o.value.as_str())
    }

    /// For inet services: the (host, port) the first column names; host is
    /// `None` when only a port is given (listen on `inet_interfaces`).
    pub fn listen_address(&self) -> Option<(Option<&str>, &str)> {
        if self.kind != ServiceType::Inet {
            return None;
        }
        let name = self.name.as_str();
        if let Some(rest) = name.strip_prefix('[') {
            let (host, port) = rest.split_once("]:")?;
            return Some((Some(host), port));
        }
        match name.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => Some((Some(host), port)),
            _ => Some((None, name)),
        }
    }
}

/// The port of an inet service's first column: a number from 1 to 65535
/// or one of the service names Postfix finds in /etc/services.
pub fn inet_port(name: &str) -> Option<u16> {
    Some(match name {
        "smtp" => 25,
        "submission" => 587,
        "smtps" | "submissions" => 465,
        "lmtp" => 24,
        n => n.parse().ok().filter(|p| *p > 0)?,
    })
}

/// Why the address an smtpd inet service listens on is unusable, if it is.
pub fn listen_address_problem(service: &Service) -> Option<String> {
    let (host, port) = service.listen_address()?;
    if inet_port(port).is_none() {
        return Some(format!(
            "bad port \"{port}\" (expected 1 to 65535, smtp, submission, smtps, submissions or lmtp)"
        ));
    }
    match host {
        Some(h) if h != "localhost" && h.parse::<std::net::IpAddr>().is_err() => Some(format!(
            "\"{h}\" is not an IP address (corepost does not look up host names in master.cf)"
        )),
        _ => None,
    }
}

/// A parsed master.cf.
#[derive(Debug, Clone, Default)]
pub struct MasterCf {
    pub path: PathBuf,
    pub services: Vec<Service>,
}

impl MasterCf {
    pub fn load(path: &Path) -> Result<MasterCf, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        MasterCf::parse(&text, path)
    }

    pub fn parse(text: &str, path: &Path) -> Result<MasterCf, ConfigError> {
        let mut services: Vec<Service> = Vec::new();
        for (line, logical) in logical_lines(text, path)? {
            let at = Location::new(path, line);
            let service = parse_entry(&logical, line).map_err(|message| ConfigError::Syntax {
                at: at.clone(),
                message,
            })?;
            if let Some(previous) = services
                .iter()
                .find(|s| s.name == service.name && s.kind == service.kind)
            {
                return Err(ConfigError::Syntax {
                    at,
                    message: format!(
                        "duplicate service {} (first defined at line {})",
                        service.id(),
                        previous.line
                    ),
                });
            }
            services.push(service);
        }
        Ok(MasterCf {
            path: path.to_path_buf(),
            services,
        })
    }

    /// The service named `name` (`smtp`) or `name/type` (`smtp/inet`).
    pub fn find(&self, spec: &str) -> Option<&Service> {
        let (name, kind) = match spec.split_once('/') {
            Some((n, t)) => (n, Some(ServiceType::parse(t)?)),
            None => (spec, None),
        };
        self.services
            .iter()
            .find(|s| s.name == name && kind.is_none_or(|k| s.kind == k))
    }
}

fn parse_entry(logical: &str, line: usize) -> Result<Service, String> {
    let words = split_args(logical).map_err(|e| e.to_string())?;
    if words.len() < 8 {
        return Err(format!(
            "expected 8 or more fields (service type private unpriv chroot wakeup maxproc command), found {}: \"{logical}\"",
            words.len()
        ));
    }
    let name = words[0].clone();
    let kind = ServiceType::parse(&words[1]).ok_or_else(|| {
        format!(
            "bad service type \"{}\" (expected inet, unix, unix-dgram, fifo or pass)",
            words[1]
        )
    })?;
    let flag = |column: &str, value: &str, default: bool| -> Result<bool, String> {
        match value {
            "-" => Ok(default),
            "y" => Ok(true),
            "n" => Ok(false),
            _ => Err(format!(
                "bad {column} field \"{value}\" (expected y, n or -)"
            )),
        }
    };
    let private = flag("private", &words[2], kind != ServiceType::Inet)?;
    if kind == ServiceType::Inet && private {
        return Err(format!(
            "service {name}/inet: inet services cannot be private"
        ));
    }
    let unprivileged = flag("unpriv", &words[3], true)?;
    let chroot = flag("chroot", &words[4], false)?;
    let wakeup = parse_wakeup(&words[5])?;
    let max_proc = match words[6].as_str() {
        "-" => None,
        n => Some(
            n.parse::<u32>()
                .map_err(|_| format!("bad maxproc field \"{n}\" (expected a number or -)"))?,
        ),
    };
    let command = words[7].clone();
    let mut args = Vec::new();
    let mut overrides = Vec::new();
    let mut rest = words[8..].iter();
    while let Some(word) = rest.next() {
        let setting = if word == "-o" {
            Some(
                rest.next()
                    .ok_or_else(|| format!("service {name}: -o without name=value"))?
                    .as_str(),
            )
        } else {
            word.strip_prefix("-o").filter(|s| s.contains('='))
        };
        match setting {
            Some(setting) => {
                let (n, v) = split_name_value(setting)
                    .map_err(|e| format!("service {name}: bad -o override: {e}"))?;
                overrides.push(Override {
                    name: n.to_string(),
                    value: v.to_string(),
                });
            }
            None => args.push(word.clone()),
        }
    }
    Ok(Service {
        columns: [
            words[2].clone(),
            words[3].clone(),
            words[4].clone(),
            words[5].clone(),
            words[6].clone(),
        ],
        name,
        kind,
        private,
        unprivileged,
        chroot,
        wakeup,
        max_proc,
        command,
        args,
        overrides,
        line,
    })
}

fn parse_wakeup(text: &str) -> Result<Option<Wakeup>, String> {
    if text == "-" {
        return Ok(None);
    }
    let (digits, conditional) = match text.strip_suffix('?') {
        Some(d) => (d, true),
        None => (text, false),
    };
    let seconds: u32 = digits
        .parse()
        .map_err(|_| format!("bad wakeup field \"{text}\" (expected seconds, seconds? or -)"))?;
    Ok((seconds > 0).then_some(Wakeup {
        seconds,
        conditional,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SAMPLE: &str = "\
# service type  private unpriv  chroot  wakeup  maxproc command + args
smtp      inet  n       -       y       -       -       smtpd
submission inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o { smtpd_client_restrictions = permit_sasl_authenticated, reject }
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
127.0.0.1:10025 inet n - n - 10 smtpd -o content_filter=
pickup    unix  n       -       y       60      1       pickup
qmgr      unix  n       -       n       300?    1       qmgr
smtp      unix  -       -       y       -       -       smtp
maildrop  unix  -       n       n       -       -       pipe
  flags=DRXhu user=vmail argv=/usr/bin/maildrop -d ${recipient}
";

    fn parse(text: &str) -> Result<MasterCf, ConfigError> {
        MasterCf::parse(text, Path::new("/etc/corepost/master.cf"))
    }

    #[test]
    fn parses_a_typical_master_cf() {
        let m = parse(SAMPLE).unwrap();
        assert_eq!(m.services.len(), 7);
        let sub = m.find("submission").unwrap();
        assert_eq!(sub.kind, ServiceType::Inet);
        assert_eq!(sub.line, 3);
        assert!(!sub.private && sub.unprivileged && sub.chroot);
        assert_eq!(sub.command, "smtpd");
        assert!(sub.args.is_empty());
        assert_eq!(
            sub.override_value("smtpd_client_restrictions"),
            Some("permit_sasl_authenticated, reject")
        );
        assert_eq!(
            sub.override_value("smtpd_relay_restrictions"),
            Some("permit_sasl_authenticated,reject")
        );
        assert_eq!(m.find("smtp/inet").unwrap().command, "smtpd");
        assert_eq!(m.find("smtp/unix").unwrap().command, "smtp");
        let filter = m.find("127.0.0.1:10025").unwrap();
        assert_eq!(filter.max_proc, Some(10));
        assert_eq!(filter.override_value("content_filter"), Some(""));
        assert_eq!(filter.listen_address(), Some((Some("127.0.0.1"), "10025")));
        assert_eq!(sub.listen_address(), Some((None, "submission")));
        assert_eq!(
            m.find("pickup").unwrap().wakeup,
            Some(Wakeup {
                seconds: 60,
                conditional: false
            })
        );
        assert_eq!(
            m.find("qmgr").unwrap().wakeup,
            Some(Wakeup {
                seconds: 300,
                conditional: true
            })
        );
        let pipe = m.find("maildrop").unwrap();
        assert!(!pipe.unprivileged);
        assert!(pipe.private);
        assert_eq!(
            pipe.args,
            vec![
                "flags=DRXhu",
                "user=vmail",
                "argv=/usr/bin/maildrop",
                "-d",
                "${recipient}"
            ]
        );
    }

    #[test]
    fn ipv6_listen_address() {
        let m = parse("[::1]:2525 inet n - n - - smtpd\n").unwrap();
        assert_eq!(m.services[0].listen_address(), Some((Some("::1"), "2525")));
    }

    #[test]
    fn errors_name_file_and_line() {
        let cases = [
            (
                "smtp inet n - n - - smtpd\nsmtp inet n - n - -\n",
                "line 2: expected 8 or more fields",
            ),
            (
                "smtp tcp n - n - - smtpd\n",
                "line 1: bad service type \"tcp\"",
            ),
            (
                "smtp inet x - n - - smtpd\n",
                "line 1: bad private field \"x\"",
            ),
            (
                "smtp inet n - n 5s - smtpd\n",
                "line 1: bad wakeup field \"5s\"",
            ),
            (
                "smtp inet n - n - many smtpd\n",
                "line 1: bad maxproc field",
            ),
            ("smtp inet n - n - - smtpd -o\n", "-o without name=value"),
            ("smtp inet n - n - - smtpd -o novalue\n", "missing '='"),
            ("smtp inet y - n - - smtpd\n", "cannot be private"),
            (
                "a unix - - n - - x\n\na unix - - n - - y\n",
                "line 3: duplicate service a/unix (first defined at line 1)",
            ),
            ("smtp inet n - n - - smtpd -o { a = b\n", "unbalanced"),
        ];
        for (text, expected) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with("/etc/corepost/master.cf, line "), "{err}");
            assert!(err.contains(expected), "{err} does not contain {expected}");
        }
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(s in "[ -~\t\n]{0,200}") {
            let _ = parse(&s);
        }
    }
}
