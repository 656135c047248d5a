//! [`SmtpdSettings`]: one smtpd service's effective configuration (main.cf
//! with its master.cf `-o` overrides), resolved once at start and at reload
//! and shared read-only by every core.

use super::checks::ContentChecks;
use super::data::BareNewline;
use super::filter::ContentFilter;
use super::networks::NetworkList;
use super::restrictions::Policy;
use super::sasl::SaslSettings;
use super::tls::ServerTls;
use crate::routing::Router;
use corepost_config::ServiceConfig;
use std::time::Duration;

/// Everything a session needs to know about its service.
#[derive(Debug, Clone)]
pub struct SmtpdSettings {
    /// master.cf service name, e.g. `smtp` or `submission`.
    pub service: String,
    /// Program name in log lines, e.g. `corepost/smtpd` or
    /// `corepost/submission/smtpd`.
    pub program: String,
    pub myhostname: String,
    pub mail_name: String,
    pub banner: String,
    pub message_size_limit: u64,
    /// `line_length_limit`: longer command lines are cut (Postfix).
    pub line_length_limit: usize,
    /// `header_size_limit`: longer message headers are cut (Postfix's
    /// cleanup).
    pub header_size_limit: usize,
    pub recipient_limit: usize,
    /// `smtpd_recipient_overshoot_limit`: RCPTs beyond the limit that are
    /// answered 452 without counting as errors.
    pub recipient_overshoot_limit: usize,
    pub timeout: Duration,
    pub hard_error_limit: u32,
    pub soft_error_limit: u32,
    pub error_sleep: Duration,
    pub junk_command_limit: u32,
    pub helo_required: bool,
    pub delay_reject: bool,
    pub reject_unlisted_recipient: bool,
    /// `soft_bounce`: restriction rejects answer 4xx instead of 5xx.
    pub soft_bounce: bool,
    pub disable_vrfy: bool,
    pub smtputf8: bool,
    pub strict_rfc821: bool,
    pub discard_ehlo: Vec<String>,
    pub bare_newline: BareNewline,
    /// `smtpd_forbid_bare_newline_reject_code`.
    pub bare_newline_reject_code: u16,
    /// `smtpd_forbid_unauth_pipelining`: disconnect on improper pipelining.
    pub forbid_unauth_pipelining: bool,
    /// `smtpd_noop_commands`, upper case.
    pub noop_commands: Vec<String>,
    /// Canonical rewriting of unqualified envelope addresses.
    pub qualify: crate::routing::qualify::Qualify,
    /// `smtpd_authorized_xclient_hosts`.
    pub xclient_hosts: NetworkList,
    /// `fast_flush_domains`: where ETRN may flush deferred mail.
    pub fast_flush_domains: crate::routing::domain_list::DomainList,
    pub bare_newline_exclusions: NetworkList,
    pub in_flow_delay: Duration,
    pub backlog_limit: usize,
    /// `queue_minfree`: see [`super::session`]'s free-space check.
    pub queue_minfree: u64,
    pub router: Router,
    /// canonical and virtual alias rewriting (cleanup's address mapping).
    pub rewriter: crate::rewrite::Rewriter,
    /// Which clients' header addresses are completed, and with what.
    pub header_rewrite: crate::rewrite::headers::SmtpHeaderRewrite,
    /// relocated_maps: recipients answered 550 5.1.6 "User has moved to".
    pub relocated_maps: corepost_config::tables::TableList,
    pub policy: Policy,
    /// STARTTLS / wrapper mode, with the certificate loaded.
    pub tls: ServerTls,
    /// SMTP AUTH.
    pub sasl: SaslSettings,
    /// Per-client connection and rate limits (anvil).
    pub limits: super::anvil::Limits,
    /// `content_filter`: where every accepted message goes first.
    pub content_filter: Option<ContentFilter>,
    pub default_filter_nexthop: String,
    /// `smtpd_upstream_proxy_protocol = haproxy`: the client's address
    /// comes from the proxy's header.
    pub upstream_proxy: Option<super::haproxy::ProxySettings>,
    /// `header_checks`, `mime_header_checks`, `nested_header_checks` and
    /// `body_checks` (empty with
    /// `receive_override_options = no_header_body_checks`).
    pub content_checks: ContentChecks,
    /// DKIM signing at reception (`corepost_dkim_signing_table`).
    pub dkim: Option<std::sync::Arc<crate::dkim::DkimSigner>>,
    /// `smtpd_milters` / `smtpd_milter_maps` (see `crate::milter`).
    pub milters: Option<std::sync::Arc<crate::milter::MilterSettings>>,
}

impl SmtpdSettings {
    /// Resolve a service's settings; errors name the parameter.
    pub fn from_service(s: &ServiceConfig<'_>) -> Result<SmtpdSettings, String> {
        let get = |n: &str| s.get(n);
        let text = |n: &str| s.get(n).map_err(|e| e.to_string());
        let int = |n: &str| s.get_int(n).map_err(|e| e.to_string());
        let boolean = |n: &str| s.get_bool(n).map_err(|e| e.to_string());
        let time = |n: &str| s.get_time(n).map_err(|e| e.to_string());
        let nonneg = |n: &str| -> Result<u64, String> {
            u64::try_from(int(n)?).map_err(|_| format!("parameter {n}: must not be negative"))
        };
        let reply_code = |n: &str| -> Result<u16, String> {
            match int(n)? {
                c @ 400..=599 => Ok(c as u16),
                c => Err(format!("parameter {n}: {c} is not a 4xx or 5xx reply code")),
            }
        };
        let parent_matches = |feature: &str| -> Result<bool, String> {
            Ok(s.get_list("parent_domain_matches_subdomains")
                .map_err(|e| e.to_string())?
                .iter()
                .any(|f| f == feature))
        };
        let syslog_name = text("syslog_name")?;
        let mynetworks =
            NetworkList::parse(&text("mynetworks")?).map_err(|e| format!("mynetworks: {e}"))?;
        let tls = ServerTls::from_params(&text)?;
        let sasl = SaslSettings::from_params(&text, tls.level == super::tls::Level::Encrypt)?;
        let size = text("message_size_limit")?;
        let message_size_limit = match size.trim().parse::<u64>() {
            Ok(0) => u64::MAX,
            Ok(n) => n,
            Err(_) => return Err(format!("parameter message_size_limit: bad size \"{size}\"")),
        };
        // Postfix refuses to run below 512 (its smtpd and cleanup).
        let size = |n: &str| {
            corepost_config::value::parse_size(&text(n)?).map_err(|e| format!("parameter {n}: {e}"))
        };
        let line_length_limit = size("line_length_limit")? as usize;
        if line_length_limit < 512 {
            return Err(format!(
                "invalid line_length_limit parameter value {line_length_limit} < 512"
            ));
        }
        let content_checks = if s
            .get_list("receive_override_options")
            .map_err(|e| e.to_string())?
            .iter()
            .any(|o| o == "no_header_body_checks")
        {
            ContentChecks::default()
        } else {
            ContentChecks::open(&text)?
        };
        Ok(SmtpdSettings {
            service: s.service.name.clone(),
            program: format!("{syslog_name}/smtpd"),
            myhostname: text("myhostname")?,
            mail_name: text("mail_name")?,
            banner: text("smtpd_banner")?,
            message_size_limit,
            line_length_limit,
            header_size_limit: size("header_size_limit")? as usize,
            recipient_limit: nonneg("smtpd_recipient_limit")? as usize,
            recipient_overshoot_limit: nonneg("smtpd_recipient_overshoot_limit")? as usize,
            timeout: time("smtpd_timeout")?,
            hard_error_limit: nonneg("smtpd_hard_error_limit")? as u32,
            soft_error_limit: nonneg("smtpd_soft_error_limit")? as u32,
            error_sleep: time("smtpd_error_sleep_time")?,
            junk_command_limit: nonneg("smtpd_junk_command_limit")? as u32,
            helo_required: boolean("smtpd_helo_required")?,
            delay_reject: boolean("smtpd_delay_reject")?,
            reject_unlisted_recipient: boolean("smtpd_reject_unlisted_recipient")?,
            soft_bounce: boolean("soft_bounce")?,
            disable_vrfy: boolean("disable_vrfy_command")?,
            smtputf8: boolean("smtputf8_enable")?,
            strict_rfc821: boolean("strict_rfc821_envelopes")?,
            discard_ehlo: s
                .get_list("smtpd_discard_ehlo_keywords")
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|k| k.to_ascii_uppercase())
                .collect(),
            bare_newline: BareNewline::parse(&text("smtpd_forbid_bare_newline")?)?,
            bare_newline_reject_code: reply_code("smtpd_forbid_bare_newline_reject_code")?,
            forbid_unauth_pipelining: boolean("smtpd_forbid_unauth_pipelining")?,
            noop_commands: s
                .get_list("smtpd_noop_commands")
                .map_err(|e| e.to_string())?
                .into_iter()
                .map(|k| k.to_ascii_uppercase())
                .collect(),
            qualify: crate::routing::qualify::Qualify::from_params(&get)?,
            xclient_hosts: NetworkList::parse(&text("smtpd_authorized_xclient_hosts")?)
                .map_err(|e| format!("smtpd_authorized_xclient_hosts: {e}"))?,
            fast_flush_domains: crate::routing::domain_list::DomainList::parse(
                &text("fast_flush_domains")?,
                parent_matches("fast_flush_domains")?,
            )
            .map_err(|e| format!("parameter fast_flush_domains: {e}"))?,
            bare_newline_exclusions: NetworkList::parse(&text(
                "smtpd_forbid_bare_newline_exclusions",
            )?)
            .map_err(|e| format!("smtpd_forbid_bare_newline_exclusions: {e}"))?,
            in_flow_delay: time("in_flow_delay")?,
            backlog_limit: nonneg("corepost_core_backlog_limit")? as usize,
            queue_minfree: size("queue_minfree")?,
            router: Router::from_params(&get)?,
            rewriter: crate::rewrite::Rewriter::from_params(&get)?,
            header_rewrite: crate::rewrite::headers::SmtpHeaderRewrite::from_params(&get)?,
            relocated_maps: corepost_config::tables::TableList::open(
                &get("relocated_maps").map_err(|e| e.to_string())?,
            )
            .map_err(|e| format!("relocated_maps: {e}"))?,
            policy: Policy::from_params(&get, mynetworks)?,
            tls,
            sasl,
            limits: super::anvil::Limits::from_params(&get)?,
            content_filter: ContentFilter::parse(&text("content_filter")?)
                .map_err(|e| format!("parameter content_filter: {e}"))?,
            default_filter_nexthop: text("default_filter_nexthop")?,
            upstream_proxy: super::haproxy::ProxySettings::from_params(
                &text("smtpd_upstream_proxy_protocol")?,
                time("smtpd_upstream_proxy_timeout")?,
                &text("inet_protocols")?,
            )?,
            content_checks,
            dkim: crate::dkim::DkimSigner::from_params(&get)?,
            milters: crate::milter::MilterSettings::smtpd(&get)?,
        })
    }
}
