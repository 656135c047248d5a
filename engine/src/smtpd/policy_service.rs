//! `check_policy_service`: Postfix's policy delegation protocol
//! (SMTPD_POLICY_README), so postgrey, policyd-spf and rate-limit daemons
//! work unchanged.
//!
//! smtpd sends `name=value` lines (`request=smtpd_access_policy`,
//! `protocol_state=RCPT`, `client_address=...`, ...) ended by an empty
//! line, over TCP (`inet:host:port`) or a Unix socket (`unix:/path`, a
//! relative path is under `queue_directory`); the server answers
//! `action=...` and an empty line. The action is read like an access-table
//! result. The exchange runs on the core's executor with
//! `smtpd_policy_service_timeout`; after `smtpd_policy_service_try_limit`
//! failed attempts (`smtpd_policy_service_retry_delay` apart) the result
//! is `smtpd_policy_service_default_action` and a warning is logged.
//!
//! Per-endpoint overrides use Postfix 3's brace syntax:
//! `check_policy_service { inet:127.0.0.1:9998, timeout=10s,
//! default_action=DUNNO, policy_context=submission }`.
//!
//! Connections are reused as Postfix does: each core keeps its idle
//! connections per endpoint (a thread-local pool), closes them after
//! `smtpd_policy_service_max_idle` idle or `_max_ttl` in use, and after
//! `_request_limit` requests (0: no limit). A reused connection that fails
//! is dropped and the request is sent again over a fresh one.

use super::restrictions::{Facts, Outcome};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Most bytes accepted in one policy server answer.
const MAX_RESPONSE: usize = 16 * 1024;

/// One policy service endpoint with its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub target: Target,
    pub timeout: Duration,
    pub try_limit: u32,
    pub retry_delay: Duration,
    pub default_action: String,
    pub policy_context: String,
    pub max_idle: Duration,
    pub max_ttl: Duration,
    pub request_limit: u32,
}

/// An open connection to a policy server.
enum Stream {
    Tcp(glommio::net::TcpStream),
    Unix(glommio::net::UnixStream),
}

struct Pooled {
    stream: Stream,
    opened: Instant,
    idle_since: Instant,
    requests: u32,
}

thread_local! {
    /// This core's idle policy connections, by endpoint.
    static POOL: RefCell<HashMap<Target, Vec<Pooled>>> = RefCell::new(HashMap::new());
}

fn take_idle(ep: &Endpoint, now: Instant) -> Option<Pooled> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        let list = pool.get_mut(&ep.target)?;
        list.retain(|c| {
            now.duration_since(c.idle_since) < ep.max_idle
                && now.duration_since(c.opened) < ep.max_ttl
        });
        list.pop()
    })
}

fn put_idle(ep: &Endpoint, mut c: Pooled) {
    let now = Instant::now();
    if (ep.request_limit > 0 && c.requests >= ep.request_limit)
        || now.duration_since(c.opened) >= ep.max_ttl
    {
        return;
    }
    c.idle_since = now;
    POOL.with(|pool| {
        pool.borrow_mut()
            .entry(ep.target.clone())
            .or_default()
            .push(c)
    });
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Inet(String),
    Unix(std::path::PathBuf),
}

/// The policy services of one smtpd service, by restriction argument.
#[derive(Debug, Clone, Default)]
pub struct PolicyServices {
    endpoints: HashMap<String, Endpoint>,
    versions: Versions,
}

/// `compatibility_level` and `mail_version`, sent with every request.
#[derive(Debug, Clone, Default)]
pub struct Versions {
    pub compatibility_level: String,
    pub mail_version: String,
}

impl PolicyServices {
    /// Parse every `check_policy_service` argument in `arguments`.
    pub fn from_params(
        get: &dyn Fn(&str) -> Result<String, corepost_config::ConfigError>,
        arguments: &[String],
    ) -> Result<PolicyServices, String> {
        let s = |n: &str| get(n).map_err(|e| e.to_string());
        let time = |n: &str, v: &str| -> Result<Duration, String> {
            corepost_config::value::parse_time(v, 's')
                .map_err(|e| format!("check_policy_service {n}: {e}"))
        };
        let mut endpoints = HashMap::new();
        for arg in arguments {
            let mut ep = Endpoint {
                target: Target::Inet(String::new()),
                timeout: time("timeout", &s("smtpd_policy_service_timeout")?)?,
                try_limit: s("smtpd_policy_service_try_limit")?
                    .trim()
                    .parse()
                    .map_err(|_| "smtpd_policy_service_try_limit: not a number".to_string())?,
                retry_delay: time("retry_delay", &s("smtpd_policy_service_retry_delay")?)?,
                default_action: s("smtpd_policy_service_default_action")?,
                policy_context: s("smtpd_policy_service_policy_context")?,
                max_idle: time("max_idle", &s("smtpd_policy_service_max_idle")?)?,
                max_ttl: time("max_ttl", &s("smtpd_policy_service_max_ttl")?)?,
                request_limit: s("smtpd_policy_service_request_limit")?
                    .trim()
                    .parse()
                    .map_err(|_| "smtpd_policy_service_request_limit: not a number".to_string())?,
            };
            let inner = arg
                .trim()
                .strip_prefix('{')
                .and_then(|a| a.strip_suffix('}'))
                .unwrap_or(arg);
            let mut items = inner
                .split([',', '\n'])
                .map(str::trim)
                .filter(|i| !i.is_empty());
            let spec = items.next().unwrap_or_default();
            for item in items {
                let (k, v) = item
                    .split_once('=')
                    .map(|(k, v)| (k.trim(), v.trim()))
                    .ok_or_else(|| {
                        format!("check_policy_service {arg}: bad attribute \"{item}\"")
                    })?;
                match k {
                    "timeout" => ep.timeout = time(k, v)?,
                    "retry_delay" => ep.retry_delay = time(k, v)?,
                    "try_limit" => {
                        ep.try_limit = v
                            .parse()
                            .map_err(|_| format!("check_policy_service try_limit: \"{v}\""))?
                    }
                    "default_action" => ep.default_action = v.to_string(),
                    "policy_context" => ep.policy_context = v.to_string(),
                    "max_idle" => ep.max_idle = time(k, v)?,
                    "max_ttl" => ep.max_ttl = time(k, v)?,
                    "request_limit" => {
                        ep.request_limit = v
                            .parse()
                            .map_err(|_| format!("check_policy_service request_limit: \"{v}\""))?
                    }
                    _ => {
                        return Err(format!(
                            "check_policy_service {arg}: unknown attribute \"{k}\""
                        ));
                    }
                }
            }
            ep.target = match spec.split_once(':') {
                Some(("inet", hostport)) if hostport.contains(':') => {
                    Target::Inet(hostport.to_string())
                }
                Some(("unix", path)) if !path.is_empty() => {
                    let p = std::path::PathBuf::from(path);
                    Target::Unix(if p.is_absolute() {
                        p
                    } else {
                        std::path::PathBuf::from(s("queue_directory")?).join(p)
                    })
                }
                _ => {
                    return Err(format!(
                        "check_policy_service {arg}: expected inet:host:port or unix:/path"
                    ));
                }
            };
            ep.try_limit = ep.try_limit.max(1);
            endpoints.insert(arg.clone(), ep);
        }
        let versions = Versions {
            compatibility_level: s("compatibility_level")?,
            mail_version: s("mail_version")?,
        };
        Ok(PolicyServices {
            endpoints,
            versions,
        })
    }

    /// Ask the policy server behind `argument`; the action to apply, or the
    /// default action when it cannot be asked.
    pub async fn evaluate(
        &self,
        argument: &str,
        f: &Facts<'_>,
        out: &mut Outcome,
    ) -> Option<String> {
        let Some(ep) = self.endpoints.get(argument) else {
            out.warnings
                .push(format!("check_policy_service {argument}: not configured"));
            return Some("451 4.3.5 Server configuration problem".into());
        };
        let request = request(f, &ep.policy_context, &self.versions);
        let mut last_error = String::new();
        for attempt in 0..ep.try_limit {
            if attempt > 0 {
                glommio::timer::sleep(ep.retry_delay).await;
            }
            match ask(ep, &request).await {
                Ok(action) => return Some(action),
                Err(e) => last_error = e,
            }
        }
        out.warnings.push(format!(
            "problem talking to server {}: {last_error}",
            match &ep.target {
                Target::Inet(h) => format!("inet:{h}"),
                Target::Unix(p) => format!("unix:{}", p.display()),
            }
        ));
        Some(ep.default_action.clone())
    }
}

/// The request attributes, in Postfix's order (SMTPD_POLICY_README,
/// "Protocol description"; `smtpd_check.c`, `check_policy_service`), then
/// the two Postfix 3.8 added. corepost asks for no client certificate, so
/// the `ccert_*` attributes are empty as in Postfix without one.
pub fn request(f: &Facts<'_>, context: &str, versions: &Versions) -> String {
    let clean = |v: &str| v.replace(['\n', '\r'], " ");
    let tls = f.tls;
    // Postfix sends the recipient count only once it is final.
    let final_count = matches!(f.command, "DATA" | "END-OF-MESSAGE");
    let attrs: [(&str, String); 31] = [
        ("request", "smtpd_access_policy".into()),
        ("protocol_state", f.command.to_string()),
        (
            "protocol_name",
            if f.esmtp { "ESMTP" } else { "SMTP" }.into(),
        ),
        ("client_address", f.client_addr.to_string()),
        ("client_name", f.client_name.to_string()),
        ("client_port", f.client_port.to_string()),
        ("reverse_client_name", f.reverse_client_name.to_string()),
        (
            "server_address",
            f.server.map(|a| a.ip().to_string()).unwrap_or_default(),
        ),
        (
            "server_port",
            f.server.map(|a| a.port().to_string()).unwrap_or_default(),
        ),
        ("helo_name", clean(f.helo.unwrap_or_default())),
        ("sender", clean(f.sender.unwrap_or_default())),
        ("recipient", clean(f.recipient.unwrap_or_default())),
        (
            "recipient_count",
            if final_count { f.recipient_count } else { 0 }.to_string(),
        ),
        ("queue_id", f.queue_id.to_string()),
        ("instance", f.instance.to_string()),
        ("size", f.size.to_string()),
        ("etrn_domain", clean(f.etrn_domain.unwrap_or_default())),
        ("stress", if f.stress { "yes" } else { "" }.into()),
        ("sasl_method", clean(f.sasl_method.unwrap_or_default())),
        ("sasl_username", clean(f.sasl_user.unwrap_or_default())),
        ("sasl_sender", String::new()),
        ("ccert_subject", String::new()),
        ("ccert_issuer", String::new()),
        ("ccert_fingerprint", String::new()),
        ("ccert_pubkey_fingerprint", String::new()),
        (
            "encryption_protocol",
            tls.map(|t| t.protocol.clone()).unwrap_or_default(),
        ),
        (
            "encryption_cipher",
            tls.map(|t| t.cipher.clone()).unwrap_or_default(),
        ),
        ("encryption_keysize", tls.map_or(0, |t| t.bits).to_string()),
        ("policy_context", clean(context)),
        ("compatibility_level", clean(&versions.compatibility_level)),
        ("mail_version", clean(&versions.mail_version)),
    ];
    let mut s = String::with_capacity(768);
    for (k, v) in attrs {
        s.push_str(k);
        s.push('=');
        s.push_str(&v);
        s.push('\n');
    }
    s.push('\n');
    s
}

/// One exchange within the endpoint's timeout: over an idle connection if
/// there is one (and once more over a fresh one if that fails).
async fn ask(ep: &Endpoint, request: &str) -> Result<String, String> {
    if let Some(mut c) = take_idle(ep, Instant::now())
        && let Ok(action) = within(ep.timeout, exchange_on(&mut c.stream, request)).await
    {
        c.requests += 1;
        put_idle(ep, c);
        return Ok(action);
    }
    within(ep.timeout, async {
        let mut stream = match &ep.target {
            Target::Inet(hostport) => Stream::Tcp(
                glommio::net::TcpStream::connect(hostport.as_str())
                    .await
                    .map_err(|e| format!("connect: {e}"))?,
            ),
            Target::Unix(path) => Stream::Unix(
                glommio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| format!("connect: {e}"))?,
            ),
        };
        let action = exchange_on(&mut stream, request).await?;
        let now = Instant::now();
        put_idle(
            ep,
            Pooled {
                stream,
                opened: now,
                idle_since: now,
                requests: 1,
            },
        );
        Ok(action)
    })
    .await
}

async fn within<T>(
    limit: Duration,
    work: impl std::future::Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let timeout = async {
        glommio::timer::sleep(limit).await;
        Err("timeout".to_string())
    };
    futures_lite::future::or(work, timeout).await
}

async fn exchange_on(stream: &mut Stream, request: &str) -> Result<String, String> {
    match stream {
        Stream::Tcp(s) => exchange(s, request).await,
        Stream::Unix(s) => exchange(s, request).await,
    }
}

async fn exchange<S>(stream: &mut S, request: &str) -> Result<String, String>
where
    S: futures_lite::AsyncRead + futures_lite::AsyncWrite + Unpin,
{
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("write: {e}"))?;
    stream.flush().await.map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = find_end(&buf) {
            return parse_response(&buf[..end]);
        }
        if buf.len() > MAX_RESPONSE {
            return Err("response too long".into());
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            return Err("connection closed before the end of the response".into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Where the response's empty line ends (`\n\n`, also after `\r\n`).
fn find_end(buf: &[u8]) -> Option<usize> {
    let text = buf;
    (0..text.len()).find_map(|i| {
        if text[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else if text[i..].starts_with(b"\n\r\n") {
            Some(i + 3)
        } else if i == 0 && text.starts_with(b"\n") {
            Some(1)
        } else {
            None
        }
    })
}

/// The `action=` attribute of a response.
pub fn parse_response(bytes: &[u8]) -> Result<String, String> {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix("action="))
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .ok_or_else(|| "response has no action= attribute".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_and_response() {
        let mut f = Facts::client("192.0.2.1".parse().unwrap());
        f.command = "RCPT";
        f.sender = Some("a@b.example");
        f.recipient = Some("c@d.example\nx=y");
        f.client_port = 4242;
        f.server = Some("192.0.2.25:25".parse().unwrap());
        let versions = Versions {
            compatibility_level: "3.6".into(),
            mail_version: "1.0".into(),
        };
        let r = request(&f, "ctx", &versions);
        assert!(r.contains("\nclient_port=4242\nreverse_client_name=unknown\nserver_address=192.0.2.25\nserver_port=25\n"));
        assert!(r.contains("\nencryption_keysize=0\npolicy_context=ctx\ncompatibility_level=3.6\nmail_version=1.0\n\n"));
        assert!(r.starts_with("request=smtpd_access_policy\nprotocol_state=RCPT\n"));
        assert!(r.contains("\nrecipient_count=0\n"), "{r}");
        assert!(r.contains("\nrecipient=c@d.example x=y\n"));
        assert!(r.contains("\nclient_address=192.0.2.1\n"));
        assert!(r.contains("\npolicy_context=ctx\n"));
        assert!(r.ends_with("\n\n"));
        assert_eq!(parse_response(b"action=DUNNO\n\n").unwrap(), "DUNNO");
        assert_eq!(
            parse_response(b"foo=bar\r\naction=defer_if_permit greylisted\r\n\r\n").unwrap(),
            "defer_if_permit greylisted"
        );
        assert!(parse_response(b"\n").is_err());
        assert_eq!(find_end(b"action=OK\n\n"), Some(11));
        assert_eq!(find_end(b"action=OK\n"), None);
    }
}

#[cfg(test)]
mod parse_tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_response_bytes_are_safe(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = find_end(&bytes);
            if let Ok(action) = parse_response(&bytes) {
                prop_assert!(!action.is_empty());
                prop_assert!(!action.contains('\n'));
            }
        }
    }

    #[test]
    fn brace_attributes() {
        let dir = tempfile::tempdir().unwrap();
        let config = corepost_config::Config::from_parts(
            dir.path(),
            Some("slow = check_policy_service { inet:127.0.0.1:9, timeout=1s, default_action=DUNNO }\nsmtpd_restriction_classes = slow\n"),
            None,
        )
        .unwrap();
        let list = corepost_config::restrictions::parse_restrictions(
            &config.get("slow").unwrap(),
            &["slow".to_string()],
        )
        .unwrap();
        let arg = list[0].argument.clone().unwrap();
        let p =
            PolicyServices::from_params(&|n| config.get(n), std::slice::from_ref(&arg)).unwrap();
        let ep = &p.endpoints[&arg];
        assert_eq!(ep.timeout, Duration::from_secs(1), "{arg:?}");
        assert_eq!(ep.default_action, "DUNNO");
        assert_eq!(ep.target, Target::Inet("127.0.0.1:9".into()));
    }
}
