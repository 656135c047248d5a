//! STARTTLS on a client connection: the policy for the next hop, the handshake, the judgement of
//! the certificate, and Postfix's log lines (see [`super::tls`] and [`super::tls_policy`]).

use std::io;

use super::tls::{self, Trust};
use super::tls_policy::SitePolicy;
use super::{ClientSettings, Endpoint, SessionError, SmtpConnection, Stream, TlsLevel, sasl};

/// The TLS policy for mail to `nexthop`; a policy that cannot be decided defers with Postfix's
/// `4.7.5 client TLS configuration problem` (and a warning saying why).
pub(super) fn site_policy(
    settings: &ClientSettings,
    nexthop: &str,
    log: &dyn Fn(&str),
) -> Result<SitePolicy, SessionError> {
    let Some(policy) = &settings.tls_policy else {
        return Ok(SitePolicy {
            level: settings.tls,
            ..SitePolicy::plaintext()
        });
    };
    policy.for_site(nexthop).map_err(|p| {
        log(&format!("warning: {}", p.warning));
        SessionError::Policy {
            status: "4.7.5".into(),
            text: "client TLS configuration problem".into(),
        }
    })
}

impl SmtpConnection {
    /// STARTTLS, the handshake, the certificate check, and EHLO again. A refused STARTTLS is an
    /// error only when the level requires TLS; with `may` the session goes on in plaintext.
    pub(super) async fn starttls(
        &mut self,
        site: &SitePolicy,
        log: &dyn Fn(&str),
    ) -> Result<(), SessionError> {
        let timeout = self.settings.helo_timeout;
        self.out.clear();
        self.out.extend_from_slice(b"STARTTLS\r\n");
        self.send("STARTTLS", timeout).await?;
        let reply = self.read_reply("STARTTLS", timeout).await?;
        if reply.code / 100 != 2 {
            if site.level.requires_tls() {
                return Err(SessionError::Policy {
                    status: reply.status(),
                    text: format!(
                        "TLS is required, but host {} refused to start TLS: {reply}",
                        self.peer
                    ),
                });
            }
            return Ok(());
        }
        let stream = self.handshake(site, log).await?;
        let session = stream.get_ref().1;
        let description = tls::describe(session);
        let loglevel = self.settings.tls_policy.as_ref().map_or(0, |p| p.loglevel);
        // Below `fingerprint` the judgement only names the session in the log: without the
        // log line it is not worth a chain verification per connection.
        let (trust, matched) = if site.level.must_match() || loglevel >= 1 {
            self.judge(session, site, log)
        } else {
            (Trust::Untrusted, true)
        };
        if let Some(domain) = &site.sts_testing {
            self.sts_testing_check(session, domain, log);
        }
        self.tls = Some(description.clone());
        self.stream = Stream::Tls(Box::new(stream));
        if loglevel >= 1 {
            log(&format!(
                "{} TLS connection established to {}: {description}",
                // Postfix 3.7 calls every session that failed its match Untrusted.
                if matched { trust } else { Trust::Untrusted }.word(),
                self.relay()
            ));
            let program = if self.settings.lmtp {
                "corepost/lmtp"
            } else {
                "corepost/smtp"
            };
            let trust = if matched { trust } else { Trust::Untrusted }.word();
            crate::events::tls(program, "outbound", &self.relay(), trust, &description);
        }
        if !matched {
            // The session is in step: the caller says QUIT over it, as Postfix does.
            return Err(SessionError::Policy {
                status: "4.7.5".into(),
                text: "Server certificate not verified".into(),
            });
        }
        self.channel = if trust == Trust::Verified {
            sasl::Channel::VerifiedTls
        } else {
            sasl::Channel::Tls
        };
        // Over TLS only EHLO makes sense: STARTTLS was announced in an EHLO reply.
        self.hello(true).await
    }

    /// The TLS handshake over the plain stream, after the server's 220 to STARTTLS.
    async fn handshake(
        &mut self,
        site: &SitePolicy,
        log: &dyn Fn(&str),
    ) -> Result<futures_rustls::client::TlsStream<glommio::net::TcpStream>, SessionError> {
        let timeout = self.settings.helo_timeout;
        // Whatever the server sent after its 220 came in plaintext and may be an injection
        // (CVE-2011-0411 style): drop it.
        self.rstart = 0;
        self.rend = 0;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Gone) else {
            self.broken = true;
            return Err(SessionError::Protocol("STARTTLS on a TLS session".into()));
        };
        let Endpoint::Inet(addr) = self.endpoint else {
            self.broken = true;
            return Err(SessionError::Protocol("STARTTLS on a Unix socket".into()));
        };
        let config = site
            .config
            .clone()
            .unwrap_or_else(|| tls::client_config(tls::ALL_VERSIONS));
        let connector = futures_rustls::TlsConnector::from(config);
        let name = tls::server_name(&self.host, addr);
        let handshake = glommio::timer::timeout(timeout, async {
            connector
                .connect(name, tcp)
                .await
                .map_err(glommio::GlommioError::from)
        })
        .await;
        crate::metrics::tls_handshake(false, handshake.is_ok());
        match handshake {
            Ok(s) => Ok(s),
            Err(e) => {
                self.broken = true;
                let e = io::Error::from(e);
                if e.kind() == io::ErrorKind::TimedOut {
                    return Err(SessionError::Timeout {
                        stage: "TLS handshake",
                        peer: self.peer.clone(),
                    });
                }
                log(&format!("SSL_connect error to {}: {e}", self.relay()));
                Err(SessionError::Tls(
                    "Cannot start TLS: handshake failure".into(),
                ))
            }
        }
    }

    /// MTA-STS `mode: testing`: what `enforce` would have said of this certificate (a trusted
    /// chain with the MX host name), as a warning only.
    fn sts_testing_check(
        &self,
        session: &rustls::ClientConnection,
        domain: &str,
        log: &dyn Fn(&str),
    ) {
        let Some(policy) = &self.settings.tls_policy else {
            return;
        };
        let secure = SitePolicy {
            level: TlsLevel::Secure,
            matches: vec!["hostname".into()],
            ..SitePolicy::plaintext()
        };
        let certs = session.peer_certificates().unwrap_or_default();
        let judgement = tls::judge(
            certs,
            &secure,
            policy.digest,
            &policy.roots,
            &self.host,
            &self.nexthop,
        );
        if let Some(why) = judgement.failure {
            log(&format!(
                "warning: MTA-STS policy for {domain} (testing): {}certificate verification failed for {}: {}",
                why.prefix,
                self.relay(),
                why.text
            ));
        }
    }

    /// What the certificate is worth, and whether it satisfies the level (a failed match is
    /// logged as Postfix's `tls_log_verify_error` does).
    fn judge(
        &self,
        session: &rustls::ClientConnection,
        site: &SitePolicy,
        log: &dyn Fn(&str),
    ) -> (Trust, bool) {
        let certs = session.peer_certificates().unwrap_or_default();
        let judgement = match &self.settings.tls_policy {
            Some(p) => tls::judge(certs, site, p.digest, &p.roots, &self.host, &self.nexthop),
            None => tls::judge(
                certs,
                site,
                super::tls_policy::Digest::Sha256,
                &rustls::RootCertStore::empty(),
                &self.host,
                &self.nexthop,
            ),
        };
        match judgement.failure {
            Some(why) if site.level >= TlsLevel::Fingerprint => {
                log(&format!(
                    "{}certificate verification failed for {}: {}",
                    why.prefix,
                    self.relay(),
                    why.text
                ));
                (judgement.trust, false)
            }
            _ => (judgement.trust, true),
        }
    }
}
