//! Opening a session for a destination, as Postfix's smtp_connect.c: the addresses in order
//! (LMTP: the one Unix socket), and for each failed attempt the info line Postfix logs
//! (`connect to host[addr]:port: Connection refused`, no queue id) even when a later address
//! succeeds.
//!
//! A greeting that is not 2xx moves on to the next address, except a 5xx with
//! `smtp_skip_5xx_greeting = no`, which is permanent for the whole delivery (Postfix bounces).
//! Other failures before the first transaction (EHLO, STARTTLS, a timeout) also move on.
//!
//! Each address gets its TLS policy first (per host for the DANE levels, see
//! [`crate::delivery::smtp::dane`]); one that cannot be decided skips the address before any
//! connection, with Postfix's `warning: TLS policy lookup for dest/host: reason`.
//!
//! Not done: Postfix's `smtp_mx_session_limit` fallback. After a session that completed its
//! handshake fails for a job (a 4xx to MAIL FROM, a 421, a lost connection, soft RCPT
//! failures), Postfix tries the next MX host within the same delivery, up to that many
//! sessions; corepost defers the job to its next attempt instead, so the parameter is not read.

use super::{DestQueue, Qmgr};
use crate::delivery::smtp::tls_policy::nexthop_domain;
use crate::delivery::smtp::{
    ClientSettings, SessionError, SitePolicy, SmtpConnection, dane, mta_sts,
};
use crate::dns::nexthop::Destination;
use crate::dns::{Nexthop, parse_nexthop};
use std::rc::Rc;

/// Why no session could be opened: the last error (`None`: nothing to try), and the `relay=`
/// to log — `none` when no server answered (as Postfix), else the server that failed after
/// connecting (`host[addr]:port`).
pub(super) struct NoSession {
    pub(super) error: Option<SessionError>,
    pub(super) relay: String,
}

/// The first session that completed its handshake, or why there is none.
pub(super) async fn open_session(
    qmgr: &Rc<Qmgr>,
    dest: &Rc<DestQueue>,
    client: &ClientSettings,
    unix: Option<&std::path::Path>,
    addrs: &[Destination],
    nexthop: &str,
    program: &str,
) -> Result<SmtpConnection, NoSession> {
    let mut last_error = None;
    let mut relay = "none".to_string();
    if let Some(path) = unix {
        let opened = SmtpConnection::connect_unix(path, &client.helo_name, client).await;
        count_connection(dest, opened.is_ok());
        match opened {
            Ok(c) => return Ok(c),
            Err(e) => {
                log_failure(qmgr, program, &e);
                if !matches!(e, SessionError::Connect { .. }) {
                    relay = format!("{}[{}]", client.helo_name, path.display());
                }
                last_error = Some(e);
            }
        }
    }
    let sts = match unix {
        None => sts_policy(qmgr, client, nexthop, program).await,
        Some(_) => None,
    };
    for d in addrs {
        super::shared::pace_connection(qmgr, dest).await;
        // TLS policy and SASL credentials are the next hop's; the TLS log lines go here.
        let log = |line: &str| qmgr.ctx.log.line(program, line);
        let site = match tls_policy(qmgr, client, d, nexthop, sts.as_ref(), &log).await {
            Ok(site) => site,
            Err(e) => {
                // Postfix's smtp_connect: this address is skipped before any connection.
                log(&format!(
                    "warning: TLS policy lookup for {}/{}: {}",
                    nexthop_domain(nexthop),
                    d.host,
                    e.dsn()
                ));
                last_error = Some(e);
                continue;
            }
        };
        let opened =
            SmtpConnection::connect_with(d.addr, (&d.host, nexthop), &site, client, &log).await;
        count_connection(dest, opened.is_ok());
        match opened {
            Ok(c) => return Ok(c),
            Err(e) => {
                log_failure(qmgr, program, &e);
                relay = match e {
                    SessionError::Connect { .. } | SessionError::SourceAddress => {
                        "none".to_string()
                    }
                    _ => format!("{}[{}]:{}", d.host, d.addr.ip(), d.addr.port()),
                };
                let permanent = e.is_permanent();
                last_error = Some(e);
                if permanent {
                    break; // smtp_skip_5xx_greeting = no: no other server is tried
                }
            }
        }
    }
    Err(NoSession {
        error: last_error,
        relay,
    })
}

fn count_connection(dest: &DestQueue, ok: bool) {
    let (transport, nexthop) = (&dest.key.transport, &dest.key.nexthop);
    crate::metrics::connection(transport, nexthop, dest.policy.is_some(), ok);
}

/// The TLS policy for one address: the next hop's, made per host for the DANE levels (which
/// need the host's DNS security and TLSA records).
async fn tls_policy(
    qmgr: &Rc<Qmgr>,
    client: &ClientSettings,
    d: &Destination,
    nexthop: &str,
    sts: Option<&mta_sts::DomainPolicy>,
    log: &dyn Fn(&str),
) -> Result<SitePolicy, SessionError> {
    let site = SmtpConnection::site_policy(client, nexthop, log)?;
    let Some(tls) = &client.tls_policy else {
        return Ok(site);
    };
    let dns = dane::HostDns {
        resolver: &qmgr.resolver,
        dnssec: qmgr.settings.borrow().nexthop.dane_lookups() && qmgr.resolver.dnssec(),
        dest: d,
    };
    let site = dane::for_host(site, tls, &dns, nexthop, log).await?;
    match sts {
        Some(sts) => mta_sts::apply(site, tls, sts, d, log),
        None => Ok(site),
    }
}

/// With `corepost_smtp_mta_sts = yes`: the MTA-STS policy of a next hop that is a domain
/// reached through its MX hosts (not a bracketed host or an address).
async fn sts_policy(
    qmgr: &Rc<Qmgr>,
    client: &ClientSettings,
    nexthop: &str,
    program: &str,
) -> Option<mta_sts::DomainPolicy> {
    let tls = client.tls_policy.as_ref()?;
    let port = tls.mta_sts?;
    let Ok(Nexthop::Name { host, mx: true, .. }) = parse_nexthop(nexthop, client.default_port)
    else {
        return None;
    };
    let log = |line: &str| qmgr.ctx.log.line(program, line);
    mta_sts::policy_for(&qmgr.resolver, &host, tls, port, &log).await
}

/// Postfix logs a failed connect at info level, whatever comes next (and so its "server
/// configuration error" after a source address that could not be bound).
fn log_failure(qmgr: &Rc<Qmgr>, program: &str, e: &SessionError) {
    if matches!(
        e,
        SessionError::Connect { .. } | SessionError::SourceAddress
    ) {
        qmgr.ctx.log.line(program, &e.dsn());
    }
}

/// Whether a connection to `nexthop` is kept for more deliveries (Postfix's connection cache):
/// `smtp_connection_cache_on_demand`, or `nexthop` named in `smtp_connection_cache_destinations`
/// (matched as written, e.g. `[mail.example.com]:587` or `example.com`, case-insensitively).
///
/// With on-demand caching a connection that has just delivered waits up to
/// `smtp_connection_cache_time_limit` for the destination's next job, as Postfix's connection
/// cache keeps it for that long; when neither applies every delivery gets its own connection.
pub(super) fn caching(client: &ClientSettings, nexthop: &str) -> bool {
    client.cache_on_demand
        || client
            .cache_destinations
            .iter()
            .any(|d| d.eq_ignore_ascii_case(nexthop))
}
