//! Postfix parameters corepost does not implement, known by name.
//!
//! The registry ([`crate::params`]) lists what corepost honours; this table
//! lists Postfix parameters it does not, each with the reason and what
//! ignoring it would cost:
//!
//! - [`Severity::Fatal`]: ignoring the setting would weaken security or
//!   lose or misroute mail (`milter_header_checks`, `defer_transports`,
//!   `smtpd_tls_ask_ccert`...). A value other than Postfix's default is an error
//!   in `corepost check` and stops `corepost run` and a reload; Postfix's
//!   default value changes nothing and is only a warning.
//! - [`Severity::Warning`]: a tuning knob or a feature whose absence loses
//!   nothing; "not supported by corepost" is printed by `check` and logged
//!   at start.
//!
//! Names in neither list keep Postfix's "unused parameter" warning (a typo,
//! or a parameter this table does not know yet). `lmtp_` parameters share
//! their `smtp_` twin's entry, as in Postfix where they mirror each other;
//! the parameters of Postfix programs corepost does not have (postscreen,
//! tlsproxy, ...) are known by prefix.
//!
//! [`NOT_YET`] holds registry parameters that corepost reads for one
//! purpose but cannot honour in full: a non-empty value is refused.

use crate::config::Config;
use crate::list::split_list;

/// What ignoring a parameter costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Security or mail delivery depends on it: refused unless it has
    /// Postfix's default value.
    Fatal,
    /// Harmless to ignore: a warning.
    Warning,
}

/// One Postfix parameter corepost does not implement.
#[derive(Debug, Clone, Copy)]
pub struct Unsupported {
    pub name: &'static str,
    pub severity: Severity,
    /// `postconf -d` of Postfix 3.7: the value that changes nothing.
    pub postfix_default: &'static str,
    pub reason: &'static str,
}

const fn u(
    name: &'static str,
    severity: Severity,
    postfix_default: &'static str,
    reason: &'static str,
) -> Unsupported {
    Unsupported {
        name,
        severity,
        postfix_default,
        reason,
    }
}

use Severity::{Fatal, Warning};

const MILTER: &str = "corepost does not run header_checks on the headers milters add or change: those headers would pass unchecked";
const CCERT: &str = "smtpd does not request or verify client certificates";
const TLS_MATCH: &str = "the SMTP client does not implement this certificate matching";
const OUTBOUND_CHECKS: &str = "the SMTP client applies no content checks to outgoing mail";
const ROUTING: &str = "corepost resolves addresses as Postfix's default for this setting does";
const LOCAL_ROUTING: &str = "the local agent does not consult per-user transport or command tables";
const REWRITING: &str =
    "corepost does not implement this part of Postfix's address rewriting yet (issue 16)";
const DEBUG: &str = "corepost has no per-peer debug logging";
const CIPHERS: &str = "rustls chooses its own modern cipher suites and curves";
const TLS_INTERNALS: &str = "rustls has no such setting";
const EXTRA_CERTS: &str =
    "smtpd serves the certificate of smtpd_tls_cert_file or smtpd_tls_chain_files only";
const CLIENT: &str = "the SMTP client has no such setting";
const SMTPD: &str = "smtpd has no such setting";
const VERIFY: &str = "corepost has no address verification service";
const CONTENT: &str = "corepost's message handling has no such setting";
const LOCAL: &str = "the delivery agents have no such setting";
const PROCESS: &str = "a setting of Postfix's process model; corepost has no such process";
const LOGGING: &str = "corepost's logging has no such setting";
const SCHEDULER: &str = "corepost's queue manager has no such setting";
const INSTANCES: &str = "corepost has no multi-instance management";
const INSTALL: &str = "an installation path of Postfix's; corepost does not use it";

/// Registry parameters corepost reads but cannot honour in full: a value
/// that is not empty once expanded is refused with the reason.
pub const NOT_YET: &[(&str, &str)] = &[];

/// Values of registry parameters that are valid Postfix but that corepost
/// cannot honour: refused with the reason.
pub const UNHONOURED_VALUES: &[(&str, &[&str], &str)] =
    &[("lmtp_tls_security_level", CERT_LEVELS, LMTP_REASON)];
const CERT_LEVELS: &[&str] = &["dane", "dane-only", "fingerprint", "verify", "secure"];
const LMTP_REASON: &str = "the LMTP client verifies no server certificates (levels none, may and encrypt only): mail would go to servers Postfix refuses";

/// Every Postfix parameter corepost knows it does not implement.
pub static UNSUPPORTED: &[Unsupported] = &[
    // Queue manager knobs with no counterpart in corepost's design.
    u(
        "default_recipient_limit",
        Warning,
        "20000",
        "corepost bounds the queue manager's in-memory work by qmgr_message_active_limit; recipients are not limited per transport",
    ),
    u(
        "default_extra_recipient_limit",
        Warning,
        "1000",
        "corepost bounds the queue manager's in-memory work by qmgr_message_active_limit; recipients are not limited per transport",
    ),
    u(
        "qmgr_message_recipient_limit",
        Warning,
        "20000",
        "corepost bounds the queue manager's in-memory work by qmgr_message_active_limit; recipients are not counted separately",
    ),
    u(
        "default_transport_rate_delay",
        Warning,
        "0s",
        "corepost paces deliveries per destination (default_destination_rate_delay, corepost_destination_policy_maps), not per transport",
    ),
    u(
        "queue_run_delay",
        Warning,
        "300s",
        "corepost's queue manager retries each deferred message at its own next-attempt time; there is no periodic deferred-queue scan to tune",
    ),
    u(
        "transport_retry_time",
        Warning,
        "60s",
        "corepost has no per-transport failure state: a transport that fails defers each message with its own backoff",
    ),
    u(
        "smtp_mx_session_limit",
        Warning,
        "2",
        "after a session fails past its handshake corepost defers the job to its next attempt instead of trying the next MX host at once",
    ),
    u("unverified_recipient_reject_code", Warning, "450", VERIFY),
    u("milter_header_checks", Fatal, "", MILTER),
    u("smtpd_tls_ask_ccert", Fatal, "no", CCERT),
    u("smtpd_tls_req_ccert", Fatal, "no", CCERT),
    u(
        "smtp_tls_per_site",
        Fatal,
        "",
        "obsolete per-site TLS table; corepost reads smtp_tls_policy_maps only",
    ),
    u(
        "smtp_tls_wrappermode",
        Fatal,
        "no",
        "the SMTP client never speaks TLS from the first byte; it would send mail in plaintext",
    ),
    u("smtp_tls_trust_anchor_file", Fatal, "", TLS_MATCH),
    u("smtp_header_checks", Fatal, "", OUTBOUND_CHECKS),
    u("smtp_mime_header_checks", Fatal, "", OUTBOUND_CHECKS),
    u("smtp_nested_header_checks", Fatal, "", OUTBOUND_CHECKS),
    u("smtp_body_checks", Fatal, "", OUTBOUND_CHECKS),
    u(
        "master_service_disable",
        Fatal,
        "",
        "corepost would run services this setting disables",
    ),
    u(
        "smtpd_sasl_mechanism_filter",
        Fatal,
        "!external, static:rest",
        "corepost offers its SASL mechanisms without this filter",
    ),
    u(
        "command_expansion_filter",
        Fatal,
        "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "corepost's local agent does not filter characters in $name expansions of commands",
    ),
    u(
        "forward_expansion_filter",
        Fatal,
        "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "corepost's local agent does not filter characters in $name expansions of forward_path",
    ),
    u(
        "execution_directory_expansion_filter",
        Fatal,
        "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "corepost's local agent does not filter characters in $name expansions",
    ),
    u(
        "message_reject_characters",
        Fatal,
        "",
        "corepost would accept messages with these characters",
    ),
    u(
        "message_strip_characters",
        Fatal,
        "",
        "corepost would not remove these characters",
    ),
    u("allow_percent_hack", Fatal, "yes", ROUTING),
    u("swap_bangpath", Fatal, "yes", ROUTING),
    u("resolve_dequoted_address", Fatal, "yes", ROUTING),
    u("resolve_null_domain", Fatal, "no", ROUTING),
    u("resolve_numeric_domain", Fatal, "no", ROUTING),
    u(
        "permit_mx_backup_networks",
        Fatal,
        "",
        "permit_mx_backup would not be limited to these networks",
    ),
    u("best_mx_transport", Fatal, "", ROUTING),
    u(
        "defer_transports",
        Fatal,
        "",
        "corepost would deliver mail for these transports instead of keeping it queued",
    ),
    u("fallback_transport_maps", Fatal, "", LOCAL_ROUTING),
    u("mailbox_transport_maps", Fatal, "", LOCAL_ROUTING),
    u("mailbox_command_maps", Fatal, "", LOCAL_ROUTING),
    u(
        "smtpd_proxy_filter",
        Fatal,
        "",
        "corepost has no before-queue content filter: mail would bypass the filter",
    ),
    u(
        "smtpd_relay_before_recipient_restrictions",
        Fatal,
        "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
        "corepost always evaluates smtpd_relay_restrictions first",
    ),
    u(
        "virtual_alias_address_length_limit",
        Warning,
        "1000",
        REWRITING,
    ),
    u(
        "bounce_template_file",
        Warning,
        "",
        "bounce and delay notices use corepost's built-in text",
    ),
    u("debug_peer_list", Warning, "", DEBUG),
    u("debug_peer_level", Warning, "2", DEBUG),
    u("debugger_command", Warning, "", DEBUG),
    u(
        "smtpd_proxy_ehlo",
        Warning,
        "$myhostname",
        "corepost has no before-queue content filter",
    ),
    u(
        "smtpd_proxy_options",
        Warning,
        "",
        "corepost has no before-queue content filter",
    ),
    u(
        "smtpd_proxy_timeout",
        Warning,
        "100s",
        "corepost has no before-queue content filter",
    ),
    u("smtpd_tls_CAfile", Warning, "", CCERT),
    u("smtpd_tls_CApath", Warning, "", CCERT),
    u("smtpd_tls_ccert_verifydepth", Warning, "9", CCERT),
    u(
        "smtpd_tls_fingerprint_digest",
        Warning,
        "${{$compatibility_level} <level {3.6} ? {md5} : {sha256}}",
        CCERT,
    ),
    u("relay_clientcerts", Warning, "", CCERT),
    u("smtpd_tls_ciphers", Warning, "medium", CIPHERS),
    u("smtpd_tls_mandatory_ciphers", Warning, "medium", CIPHERS),
    u("smtpd_tls_exclude_ciphers", Warning, "", CIPHERS),
    u("smtpd_tls_mandatory_exclude_ciphers", Warning, "", CIPHERS),
    u("smtpd_tls_eecdh_grade", Warning, "auto", CIPHERS),
    u("smtpd_tls_dh1024_param_file", Warning, "", CIPHERS),
    u("smtpd_tls_dh512_param_file", Warning, "", CIPHERS),
    u("smtp_tls_ciphers", Warning, "medium", CIPHERS),
    u("smtp_tls_mandatory_ciphers", Warning, "medium", CIPHERS),
    u("smtp_tls_exclude_ciphers", Warning, "", CIPHERS),
    u("smtp_tls_mandatory_exclude_ciphers", Warning, "", CIPHERS),
    u(
        "tls_high_cipherlist",
        Warning,
        "aNULL:-aNULL:HIGH:@STRENGTH",
        CIPHERS,
    ),
    u(
        "tls_medium_cipherlist",
        Warning,
        "aNULL:-aNULL:HIGH:MEDIUM:+RC4:@STRENGTH",
        CIPHERS,
    ),
    u(
        "tls_low_cipherlist",
        Warning,
        "aNULL:-aNULL:HIGH:MEDIUM:LOW:+RC4:@STRENGTH",
        CIPHERS,
    ),
    u(
        "tls_export_cipherlist",
        Warning,
        "aNULL:-aNULL:HIGH:MEDIUM:LOW:EXPORT:+RC4:@STRENGTH",
        CIPHERS,
    ),
    u("tls_null_cipherlist", Warning, "eNULL:!aNULL", CIPHERS),
    u(
        "tls_eecdh_auto_curves",
        Warning,
        "X25519 X448 prime256v1 secp521r1 secp384r1",
        CIPHERS,
    ),
    u("tls_eecdh_strong_curve", Warning, "prime256v1", CIPHERS),
    u("tls_eecdh_ultra_curve", Warning, "secp384r1", CIPHERS),
    u("tls_preempt_cipherlist", Warning, "no", CIPHERS),
    u("tls_ssl_options", Warning, "", CIPHERS),
    u("tls_disable_workarounds", Warning, "", CIPHERS),
    u("tls_session_ticket_cipher", Warning, "aes-256-cbc", CIPHERS),
    u("tls_config_file", Warning, "default", CIPHERS),
    u("tls_config_name", Warning, "", CIPHERS),
    u(
        "tls_random_source",
        Warning,
        "dev:/dev/urandom",
        TLS_INTERNALS,
    ),
    u("tls_random_bytes", Warning, "32", TLS_INTERNALS),
    u(
        "tls_random_exchange_name",
        Warning,
        "${data_directory}/prng_exch",
        TLS_INTERNALS,
    ),
    u(
        "tls_random_prng_update_period",
        Warning,
        "3600s",
        TLS_INTERNALS,
    ),
    u("tls_random_reseed_period", Warning, "3600s", TLS_INTERNALS),
    u("tls_daemon_random_bytes", Warning, "32", TLS_INTERNALS),
    u("tls_fast_shutdown_enable", Warning, "yes", TLS_INTERNALS),
    u("tls_append_default_CA", Warning, "no", TLS_INTERNALS),
    u(
        "tls_legacy_public_key_fingerprints",
        Warning,
        "no",
        TLS_INTERNALS,
    ),
    u(
        "tls_wildcard_matches_multiple_labels",
        Warning,
        "yes",
        TLS_INTERNALS,
    ),
    u("tls_dane_digests", Warning, "sha512 sha256", TLS_INTERNALS),
    u(
        "smtpd_tls_session_cache_database",
        Warning,
        "",
        TLS_INTERNALS,
    ),
    u(
        "smtpd_tls_session_cache_timeout",
        Warning,
        "3600s",
        TLS_INTERNALS,
    ),
    u(
        "smtpd_tls_always_issue_session_ids",
        Warning,
        "yes",
        TLS_INTERNALS,
    ),
    u(
        "smtp_tls_session_cache_database",
        Warning,
        "",
        TLS_INTERNALS,
    ),
    u(
        "smtp_tls_session_cache_timeout",
        Warning,
        "3600s",
        TLS_INTERNALS,
    ),
    u("smtp_tls_connection_reuse", Warning, "no", TLS_INTERNALS),
    u(
        "smtp_tls_block_early_mail_reply",
        Warning,
        "no",
        TLS_INTERNALS,
    ),
    u("smtp_tls_note_starttls_offer", Warning, "no", TLS_INTERNALS),
    u("smtp_tls_scert_verifydepth", Warning, "9", TLS_INTERNALS),
    u("smtp_tls_servername", Warning, "", TLS_INTERNALS),
    u("smtpd_tls_dcert_file", Warning, "", EXTRA_CERTS),
    u(
        "smtpd_tls_dkey_file",
        Warning,
        "$smtpd_tls_dcert_file",
        EXTRA_CERTS,
    ),
    u("smtpd_tls_eccert_file", Warning, "", EXTRA_CERTS),
    u(
        "smtpd_tls_eckey_file",
        Warning,
        "$smtpd_tls_eccert_file",
        EXTRA_CERTS,
    ),
    u("tls_server_sni_maps", Warning, "", EXTRA_CERTS),
    u(
        "smtp_tls_cert_file",
        Warning,
        "",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_tls_key_file",
        Warning,
        "$smtp_tls_cert_file",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_tls_chain_files",
        Warning,
        "",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_tls_dcert_file",
        Warning,
        "",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_tls_dkey_file",
        Warning,
        "$smtp_tls_dcert_file",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_tls_eccert_file",
        Warning,
        "",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_tls_eckey_file",
        Warning,
        "$smtp_tls_eccert_file",
        "the SMTP client presents no client certificate",
    ),
    u(
        "smtp_fallback_relay",
        Warning,
        "$fallback_relay",
        "mail that cannot be delivered directly stays deferred instead of going to a fallback relay",
    ),
    u("smtp_sasl_path", Warning, "", CLIENT),
    u("smtp_sasl_type", Warning, "cyrus", CLIENT),
    u("smtp_sasl_auth_cache_name", Warning, "", CLIENT),
    u("smtp_sasl_auth_cache_time", Warning, "90d", CLIENT),
    u("smtp_sasl_auth_soft_bounce", Warning, "yes", CLIENT),
    u("smtp_send_dummy_mail_auth", Warning, "no", CLIENT),
    u("smtp_tcp_port", Warning, "smtp", CLIENT),
    u("smtp_dns_reply_filter", Warning, "", CLIENT),
    u("smtp_reply_filter", Warning, "", CLIENT),
    u("smtp_dns_resolver_options", Warning, "", CLIENT),
    u("smtp_skip_quit_response", Warning, "yes", CLIENT),
    u("smtp_randomize_addresses", Warning, "yes", CLIENT),
    u("smtp_balance_inet_protocols", Warning, "yes", CLIENT),
    u("smtp_send_xforward_command", Warning, "no", CLIENT),
    u("smtp_xforward_timeout", Warning, "300s", CLIENT),
    u("smtp_rset_timeout", Warning, "20s", CLIENT),
    u("smtp_starttls_timeout", Warning, "300s", CLIENT),
    u("smtp_min_data_rate", Warning, "500", CLIENT),
    u(
        "smtp_per_request_deadline",
        Warning,
        "${smtp_per_record_deadline?{$smtp_per_record_deadline}:{no}}",
        CLIENT,
    ),
    u(
        "smtp_pix_workarounds",
        Warning,
        "disable_esmtp,delay_dotcrlf",
        CLIENT,
    ),
    u("smtp_pix_workaround_maps", Warning, "", CLIENT),
    u("smtp_pix_workaround_delay_time", Warning, "10s", CLIENT),
    u(
        "smtp_pix_workaround_threshold_time",
        Warning,
        "500s",
        CLIENT,
    ),
    u("smtp_quote_rfc821_envelope", Warning, "yes", CLIENT),
    u("smtp_cname_overrides_servername", Warning, "no", CLIENT),
    u("smtp_address_verify_target", Warning, "rcpt", CLIENT),
    u(
        "smtp_discard_ehlo_keyword_address_maps",
        Warning,
        "",
        CLIENT,
    ),
    u(
        "smtp_delivery_status_filter",
        Warning,
        "$default_delivery_status_filter",
        CLIENT,
    ),
    u(
        "smtpd_sasl_local_domain",
        Warning,
        "",
        "user names are not qualified with a realm",
    ),
    u("smtpd_sasl_response_limit", Warning, "12288", SMTPD),
    u("broken_sasl_auth_clients", Warning, "no", SMTPD),
    u(
        "cyrus_sasl_config_path",
        Warning,
        "",
        "corepost has no Cyrus SASL",
    ),
    u(
        "send_cyrus_sasl_authzid",
        Warning,
        "no",
        "corepost has no Cyrus SASL",
    ),
    u("smtpd_client_port_logging", Warning, "no", SMTPD),
    u("smtpd_reject_footer", Warning, "", SMTPD),
    u("smtpd_reject_footer_maps", Warning, "", SMTPD),
    u("smtpd_command_filter", Warning, "", SMTPD),
    u(
        "smtpd_discard_ehlo_keyword_address_maps",
        Warning,
        "",
        SMTPD,
    ),
    u(
        "smtpd_expansion_filter",
        Warning,
        "\\t\\40!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\\\]^_`abcdefghijklmnopqrstuvwxyz{|}~",
        SMTPD,
    ),
    u("smtpd_history_flush_threshold", Warning, "100", SMTPD),
    u("smtpd_min_data_rate", Warning, "500", SMTPD),
    u(
        "smtpd_per_request_deadline",
        Warning,
        "${smtpd_per_record_deadline?{$smtpd_per_record_deadline}:{${stress?{yes}:{no}}}}",
        SMTPD,
    ),
    u("smtpd_delay_open_until_valid_rcpt", Warning, "yes", SMTPD),
    u(
        "smtpd_client_new_tls_session_rate_limit",
        Warning,
        "0",
        SMTPD,
    ),
    u(
        "smtpd_authorized_verp_clients",
        Warning,
        "$authorized_verp_clients",
        SMTPD,
    ),
    u("smtpd_authorized_xforward_hosts", Warning, "", SMTPD),
    u("smtpd_dns_reply_filter", Warning, "", SMTPD),
    u(
        "unknown_address_tempfail_action",
        Warning,
        "$reject_tempfail_action",
        SMTPD,
    ),
    u(
        "unknown_helo_hostname_tempfail_action",
        Warning,
        "$reject_tempfail_action",
        SMTPD,
    ),
    u("reject_tempfail_action", Warning, "defer_if_permit", SMTPD),
    u(
        "unverified_recipient_tempfail_action",
        Warning,
        "$reject_tempfail_action",
        SMTPD,
    ),
    u(
        "unverified_sender_tempfail_action",
        Warning,
        "$reject_tempfail_action",
        SMTPD,
    ),
    u("unverified_recipient_defer_code", Warning, "450", SMTPD),
    u("unverified_recipient_reject_reason", Warning, "", SMTPD),
    u("unverified_sender_defer_code", Warning, "450", SMTPD),
    u("unverified_sender_reject_code", Warning, "450", SMTPD),
    u("unverified_sender_reject_reason", Warning, "", SMTPD),
    u("plaintext_reject_code", Warning, "450", SMTPD),
    u("maps_rbl_domains", Warning, "", SMTPD),
    u(
        "address_verify_map",
        Warning,
        "btree:$data_directory/verify_cache",
        VERIFY,
    ),
    u(
        "address_verify_sender",
        Warning,
        "$double_bounce_sender",
        VERIFY,
    ),
    u("address_verify_sender_ttl", Warning, "0s", VERIFY),
    u("address_verify_negative_cache", Warning, "yes", VERIFY),
    u(
        "address_verify_positive_expire_time",
        Warning,
        "31d",
        VERIFY,
    ),
    u(
        "address_verify_positive_refresh_time",
        Warning,
        "7d",
        VERIFY,
    ),
    u("address_verify_negative_expire_time", Warning, "3d", VERIFY),
    u(
        "address_verify_negative_refresh_time",
        Warning,
        "3h",
        VERIFY,
    ),
    u(
        "address_verify_cache_cleanup_interval",
        Warning,
        "12h",
        VERIFY,
    ),
    u(
        "address_verify_poll_count",
        Warning,
        "${stress?{1}:{3}}",
        VERIFY,
    ),
    u("address_verify_poll_delay", Warning, "3s", VERIFY),
    u(
        "address_verify_pending_request_limit",
        Warning,
        "5000",
        VERIFY,
    ),
    u(
        "address_verify_default_transport",
        Warning,
        "$default_transport",
        VERIFY,
    ),
    u(
        "address_verify_local_transport",
        Warning,
        "$local_transport",
        VERIFY,
    ),
    u(
        "address_verify_relay_transport",
        Warning,
        "$relay_transport",
        VERIFY,
    ),
    u(
        "address_verify_virtual_transport",
        Warning,
        "$virtual_transport",
        VERIFY,
    ),
    u("address_verify_relayhost", Warning, "$relayhost", VERIFY),
    u(
        "address_verify_transport_maps",
        Warning,
        "$transport_maps",
        VERIFY,
    ),
    u(
        "address_verify_sender_dependent_default_transport_maps",
        Warning,
        "$sender_dependent_default_transport_maps",
        VERIFY,
    ),
    u(
        "address_verify_sender_dependent_relayhost_maps",
        Warning,
        "$sender_dependent_relayhost_maps",
        VERIFY,
    ),
    u("address_verify_service_name", Warning, "verify", VERIFY),
    u("always_add_missing_headers", Warning, "no", CONTENT),
    u("header_from_format", Warning, "standard", CONTENT),
    u("undisclosed_recipients_header", Warning, "", CONTENT),
    u(
        "message_drop_headers",
        Warning,
        "bcc, content-length, resent-bcc, return-path",
        CONTENT,
    ),
    u("hopcount_limit", Warning, "50", CONTENT),
    u("duplicate_filter_limit", Warning, "1000", CONTENT),
    u("enable_original_recipient", Warning, "yes", CONTENT),
    u("strict_7bit_headers", Warning, "no", CONTENT),
    u("strict_8bitmime", Warning, "no", CONTENT),
    u("strict_8bitmime_body", Warning, "no", CONTENT),
    u("strict_mime_encoding_domain", Warning, "no", CONTENT),
    u("disable_mime_input_processing", Warning, "no", CONTENT),
    u("detect_8bit_encoding_header", Warning, "yes", CONTENT),
    u("header_address_token_limit", Warning, "10240", CONTENT),
    u("mime_boundary_length_limit", Warning, "2048", CONTENT),
    u("mime_nesting_limit", Warning, "100", CONTENT),
    u("cleanup_replace_stray_cr_lf", Warning, "yes", CONTENT),
    u("internal_mail_filter_classes", Warning, "", CONTENT),
    u("sendmail_fix_line_endings", Warning, "always", CONTENT),
    u(
        "smtputf8_autodetect_classes",
        Warning,
        "sendmail, verify",
        CONTENT,
    ),
    u("strict_smtputf8", Warning, "no", CONTENT),
    u("enable_idna2003_compatibility", Warning, "no", CONTENT),
    u("default_verp_delimiters", Warning, "+=", CONTENT),
    u("disable_verp_bounces", Warning, "no", CONTENT),
    u("verp_delimiter_filter", Warning, "-=+", CONTENT),
    u("require_home_directory", Warning, "no", LOCAL),
    u("strict_mailbox_ownership", Warning, "yes", LOCAL),
    u("expand_owner_alias", Warning, "no", LOCAL),
    u("reset_owner_alias", Warning, "no", LOCAL),
    u("frozen_delivered_to", Warning, "yes", LOCAL),
    u("sun_mailtool_compatibility", Warning, "no", LOCAL),
    u("stale_lock_time", Warning, "500s", LOCAL),
    u("deliver_lock_attempts", Warning, "20", LOCAL),
    u("deliver_lock_delay", Warning, "1s", LOCAL),
    u("allow_min_user", Warning, "no", LOCAL),
    u("show_user_unknown_table_name", Warning, "yes", LOCAL),
    u(
        "local_delivery_status_filter",
        Warning,
        "$default_delivery_status_filter",
        LOCAL,
    ),
    u(
        "virtual_delivery_status_filter",
        Warning,
        "$default_delivery_status_filter",
        LOCAL,
    ),
    u(
        "pipe_delivery_status_filter",
        Warning,
        "$default_delivery_status_filter",
        LOCAL,
    ),
    u("default_delivery_status_filter", Warning, "", LOCAL),
    u(
        "import_environment",
        Warning,
        "MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ XAUTHORITY DISPLAY LANG=C POSTLOG_SERVICE POSTLOG_HOSTNAME",
        LOCAL,
    ),
    u("export_environment", Warning, "TZ MAIL_CONFIG LANG", LOCAL),
    u(
        "biff",
        Warning,
        "yes",
        "corepost does not notify the biff service",
    ),
    u(
        "backwards_bounce_logfile_compatibility",
        Warning,
        "yes",
        PROCESS,
    ),
    u("enable_threaded_bounces", Warning, "no", PROCESS),
    u(
        "enable_long_queue_ids",
        Warning,
        "no",
        "corepost's queue ids are always long",
    ),
    u("hash_queue_depth", Warning, "1", PROCESS),
    u("hash_queue_names", Warning, "deferred, defer", PROCESS),
    u("queue_file_attribute_count_limit", Warning, "100", PROCESS),
    u("delay_logging_resolution_limit", Warning, "2", LOGGING),
    u("info_log_address_format", Warning, "external", LOGGING),
    u(
        "respectful_logging",
        Warning,
        "${{$compatibility_level} <level {3.6} ? {no} : {yes}}",
        LOGGING,
    ),
    u("default_delivery_slot_cost", Warning, "5", SCHEDULER),
    u("default_delivery_slot_discount", Warning, "50", SCHEDULER),
    u("default_delivery_slot_loan", Warning, "3", SCHEDULER),
    u("default_minimum_delivery_slots", Warning, "3", SCHEDULER),
    u("default_recipient_refill_delay", Warning, "5s", SCHEDULER),
    u("default_recipient_refill_limit", Warning, "100", SCHEDULER),
    u("qmgr_clog_warn_time", Warning, "300s", SCHEDULER),
    u("qmgr_fudge_factor", Warning, "100", SCHEDULER),
    u("qmgr_message_recipient_minimum", Warning, "10", SCHEDULER),
    u("qmgr_daemon_timeout", Warning, "1000s", PROCESS),
    u("qmgr_ipc_timeout", Warning, "60s", PROCESS),
    u("confirm_delay_cleared", Warning, "no", SCHEDULER),
    u("ipc_idle", Warning, "5s", PROCESS),
    u("ipc_timeout", Warning, "3600s", PROCESS),
    u("ipc_ttl", Warning, "1000s", PROCESS),
    u("max_idle", Warning, "100s", PROCESS),
    u("max_use", Warning, "100", PROCESS),
    u("daemon_timeout", Warning, "18000s", PROCESS),
    u("trigger_timeout", Warning, "10s", PROCESS),
    u("fork_attempts", Warning, "5", PROCESS),
    u("fork_delay", Warning, "1s", PROCESS),
    u("service_throttle_time", Warning, "60s", PROCESS),
    u("application_event_drain_time", Warning, "100s", PROCESS),
    u("anvil_status_update_time", Warning, "600s", PROCESS),
    u("connection_cache_protocol_timeout", Warning, "5s", PROCESS),
    u(
        "connection_cache_status_update_time",
        Warning,
        "600s",
        PROCESS,
    ),
    u("connection_cache_ttl_limit", Warning, "2s", PROCESS),
    u("daemon_table_open_error_is_fatal", Warning, "no", PROCESS),
    u("process_id_directory", Warning, "pid", PROCESS),
    u("bounce_service_name", Warning, "bounce", PROCESS),
    u("cleanup_service_name", Warning, "cleanup", PROCESS),
    u("defer_service_name", Warning, "defer", PROCESS),
    u("error_service_name", Warning, "error", PROCESS),
    u("flush_service_name", Warning, "flush", PROCESS),
    u("pickup_service_name", Warning, "pickup", PROCESS),
    u("proxymap_service_name", Warning, "proxymap", PROCESS),
    u("proxywrite_service_name", Warning, "proxywrite", PROCESS),
    u("queue_service_name", Warning, "qmgr", PROCESS),
    u("rewrite_service_name", Warning, "rewrite", PROCESS),
    u("showq_service_name", Warning, "showq", PROCESS),
    u("smtpd_service_name", Warning, "smtpd", PROCESS),
    u("tlsmgr_service_name", Warning, "tlsmgr", PROCESS),
    u("trace_service_name", Warning, "trace", PROCESS),
    u("connection_cache_service_name", Warning, "scache", PROCESS),
    u(
        "proxy_read_maps",
        Warning,
        "$local_recipient_maps $mydestination $virtual_alias_maps $virtual_alias_domains $virtual_mailbox_maps $virtual_mailbox_domains $relay_recipient_maps $relay_domains $canonical_maps $sender_canonical_maps $recipient_canonical_maps $relocated_maps $transport_maps $mynetworks $smtpd_sender_login_maps $sender_bcc_maps $recipient_bcc_maps $smtp_generic_maps $lmtp_generic_maps $alias_maps $smtpd_client_restrictions $smtpd_helo_restrictions $smtpd_sender_restrictions $smtpd_relay_restrictions $smtpd_recipient_restrictions $address_verify_sender_dependent_default_transport_maps $address_verify_sender_dependent_relayhost_maps $address_verify_transport_maps $fallback_transport_maps $lmtp_discard_lhlo_keyword_address_maps $lmtp_pix_workaround_maps $lmtp_sasl_password_maps $lmtp_tls_policy_maps $mailbox_command_maps $mailbox_transport_maps $postscreen_discard_ehlo_keyword_address_maps $rbl_reply_maps $sender_dependent_default_transport_maps $sender_dependent_relayhost_maps $smtp_discard_ehlo_keyword_address_maps $smtp_pix_workaround_maps $smtp_sasl_password_maps $smtp_tls_policy_maps $smtpd_discard_ehlo_keyword_address_maps $smtpd_milter_maps $virtual_gid_maps $virtual_uid_maps $local_login_sender_maps $postscreen_reject_footer_maps $smtpd_reject_footer_maps $tls_server_sni_maps $tlsproxy_client_policy_maps $default_delivery_status_filter $lmtp_delivery_status_filter $lmtp_dns_reply_filter $lmtp_reply_filter $local_delivery_status_filter $pipe_delivery_status_filter $postscreen_command_filter $smtp_delivery_status_filter $smtp_dns_reply_filter $smtp_reply_filter $smtpd_command_filter $smtpd_dns_reply_filter $virtual_delivery_status_filter $body_checks $header_checks $lmtp_body_checks $lmtp_header_checks $lmtp_mime_header_checks $lmtp_nested_header_checks $milter_header_checks $mime_header_checks $nested_header_checks $smtp_body_checks $smtp_header_checks $smtp_mime_header_checks $smtp_nested_header_checks",
        PROCESS,
    ),
    u(
        "proxy_write_maps",
        Warning,
        "$smtp_sasl_auth_cache_name $lmtp_sasl_auth_cache_name $address_verify_map $postscreen_cache_map",
        PROCESS,
    ),
    u("tcp_windowsize", Warning, "0", PROCESS),
    u(
        "known_tcp_ports",
        Warning,
        "lmtp=24, smtp=25, smtps=submissions=465, submission=587",
        PROCESS,
    ),
    u("dnssec_probe", Warning, "ns:.", PROCESS),
    u("dns_ncache_ttl_fix_enable", Warning, "no", PROCESS),
    u("ignore_mx_lookup_error", Warning, "no", PROCESS),
    u(
        "default_database_type",
        Warning,
        "hash",
        "corepost opens each table by the type its name gives",
    ),
    u(
        "berkeley_db_create_buffer_size",
        Warning,
        "16777216",
        "corepost opens each table by the type its name gives",
    ),
    u(
        "berkeley_db_read_buffer_size",
        Warning,
        "131072",
        "corepost opens each table by the type its name gives",
    ),
    u(
        "lmdb_map_size",
        Warning,
        "16777216",
        "corepost opens each table by the type its name gives",
    ),
    u(
        "setgid_group",
        Warning,
        "postdrop",
        "corepost has no set-group-id programs",
    ),
    u("alternate_config_directories", Warning, "", INSTANCES),
    u("multi_instance_directories", Warning, "", INSTANCES),
    u("multi_instance_enable", Warning, "no", INSTANCES),
    u("multi_instance_group", Warning, "", INSTANCES),
    u("multi_instance_wrapper", Warning, "", INSTANCES),
    u(
        "postmulti_control_commands",
        Warning,
        "reload flush",
        INSTANCES,
    ),
    u("postmulti_start_commands", Warning, "start", INSTANCES),
    u(
        "postmulti_stop_commands",
        Warning,
        "stop abort drain quick-stop",
        INSTANCES,
    ),
    u(
        "readme_directory",
        Warning,
        "/usr/share/doc/postfix",
        INSTALL,
    ),
    u(
        "html_directory",
        Warning,
        "/usr/share/doc/postfix/html",
        INSTALL,
    ),
    u("sample_directory", Warning, "/etc/postfix", INSTALL),
    u(
        "daemon_directory",
        Warning,
        "/usr/lib/postfix/sbin",
        INSTALL,
    ),
    u("shlib_directory", Warning, "/usr/lib/postfix", INSTALL),
    u("meta_directory", Warning, "/etc/postfix", INSTALL),
    u("openssl_path", Warning, "openssl", INSTALL),
    u("fault_injection_code", Warning, "0", DEBUG),
    u(
        "error_notice_recipient",
        Warning,
        "postmaster",
        "corepost sends no notices about resource, software, policy or protocol problems",
    ),
];

/// Parameters of Postfix programs corepost lacks, as table entries whose
/// name is the prefix.
static PREFIX_ENTRIES: &[Unsupported] = &[
    u("postscreen_", Warning, "", "corepost has no postscreen"),
    u("tlsproxy_", Warning, "", "corepost has no tlsproxy"),
    u("dnsblog_", Warning, "", "corepost has no dnsblog"),
    u("qmqpd_", Warning, "", "corepost has no QMQP server"),
    u("postlog_", Warning, "", "corepost has no postlogd"),
];

/// What corepost knows about `name` not being implemented: its own entry,
/// its `smtp_` twin's for an `lmtp_` name, or its program's prefix. The
/// caller checks the registry first: a registry parameter is supported.
pub fn lookup(name: &str) -> Option<&'static Unsupported> {
    let direct = |n: &str| UNSUPPORTED.iter().find(|e| e.name == n);
    direct(name)
        .or_else(|| {
            name.strip_prefix("lmtp_")
                .and_then(|rest| direct(&format!("smtp_{rest}")))
        })
        .or_else(|| PREFIX_ENTRIES.iter().find(|e| name.starts_with(e.name)))
}

/// The marker `corepost config` prints before an unsupported setting
/// (a comment line, so the listing stays valid main.cf).
pub fn marker(entry: &Unsupported) -> String {
    format!("# not supported by corepost: {}", entry.reason)
}

/// Whether `value` is Postfix's default for `entry`, i.e. setting it
/// changes nothing (`smtpd_tls_ask_ccert = no`, `milter_header_checks =`).
pub fn is_postfix_default(entry: &Unsupported, value: &str, config: &Config) -> bool {
    let words = |v: &str| {
        split_list(v)
            .unwrap_or_else(|_| vec![v.trim().to_string()])
            .into_iter()
            .map(|w| w.to_ascii_lowercase())
            .collect::<Vec<_>>()
    };
    if words(value) == words(entry.postfix_default) {
        return true;
    }
    entry.postfix_default.trim().is_empty()
        && config.expand(value).is_ok_and(|v| v.trim().is_empty())
}

/// What the unsupported settings of a configuration amount to.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Findings {
    fn add(&mut self, entry: &Unsupported, at: &str, name: &str, harmless: bool) {
        let message = format!(
            "{at}parameter {name} is not supported by corepost: {}",
            entry.reason
        );
        match (entry.severity, harmless) {
            (Severity::Fatal, false) => self.errors.push(message),
            (Severity::Fatal, true) => self.warnings.push(format!(
                "{message} (the value is Postfix's default, so nothing changes)"
            )),
            (Severity::Warning, _) => self.warnings.push(message),
        }
    }
}

/// Every unsupported setting of main.cf and of master.cf's `-o` overrides,
/// each located by file and line.
pub fn findings(config: &Config) -> Findings {
    let mut out = Findings::default();
    let main = config.main.path.display();
    for name in config.main.names() {
        if config.registry.contains(name) {
            continue;
        }
        let (Some(entry), Some(set)) = (lookup(name), config.main.entry(name)) else {
            continue;
        };
        let harmless = is_postfix_default(entry, &set.value, config);
        out.add(
            entry,
            &format!("{main}, line {}: ", set.line),
            name,
            harmless,
        );
    }
    for service in &config.master.services {
        for o in &service.overrides {
            if config.registry.contains(&o.name) {
                continue;
            }
            if let Some(entry) = lookup(&o.name) {
                let at = format!(
                    "{}, line {}: service {}: ",
                    config.master.path.display(),
                    service.line,
                    service.id()
                );
                out.add(
                    entry,
                    &at,
                    &o.name,
                    is_postfix_default(entry, &o.value, config),
                );
            }
        }
    }
    not_yet(config, &mut out);
    out
}

/// Why corepost refuses `value` for the registry parameter `name`, if it
/// does ([`NOT_YET`], [`UNHONOURED_VALUES`]).
pub fn refused_value(name: &str, value: &str) -> Option<&'static str> {
    if let Some((_, reason)) = NOT_YET.iter().find(|(n, _)| *n == name)
        && !value.trim().is_empty()
    {
        return Some(reason);
    }
    UNHONOURED_VALUES
        .iter()
        .find(|(n, words, _)| {
            *n == name && words.iter().any(|w| w.eq_ignore_ascii_case(value.trim()))
        })
        .map(|(_, _, reason)| *reason)
}

/// [`refused_value`] for every parameter it knows, globally and in each
/// service that overrides it.
fn not_yet(config: &Config, out: &mut Findings) {
    let names = NOT_YET
        .iter()
        .map(|(n, _)| *n)
        .chain(UNHONOURED_VALUES.iter().map(|(n, _, _)| *n));
    for name in names {
        let message = |at: String, value: &str, reason: &str| {
            format!("{at}parameter {name} = {value} is not supported by corepost: {reason}")
        };
        if let Ok(value) = config.get(name)
            && let Some(reason) = refused_value(name, &value)
        {
            let at = match config.main.entry(name) {
                Some(e) => format!("{}, line {}: ", config.main.path.display(), e.line),
                None => String::new(),
            };
            out.errors.push(message(at, value.trim(), reason));
        }
        for service in config.services() {
            if service.service.override_value(name).is_none() {
                continue;
            }
            if let Ok(value) = service.get(name)
                && let Some(reason) = refused_value(name, &value)
            {
                let at = format!(
                    "{}, line {}: service {}: ",
                    config.master.path.display(),
                    service.service.line,
                    service.service.id()
                );
                out.errors.push(message(at, value.trim(), reason));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;
    use std::path::Path;

    fn load(main: &str, master: &str) -> Config {
        Config::from_parts(Path::new("/etc/corepost"), Some(main), Some(master)).unwrap()
    }

    #[test]
    fn no_name_is_both_supported_and_unsupported() {
        let registry = Registry::builtin();
        let mut seen = std::collections::HashSet::new();
        for e in UNSUPPORTED {
            assert!(!registry.contains(e.name), "{} is in the registry", e.name);
            assert!(seen.insert(e.name), "{} listed twice", e.name);
            assert!(!e.reason.is_empty());
        }
        for (name, _) in NOT_YET {
            assert!(registry.contains(name), "{name}");
        }
    }

    #[test]
    fn lookup_knows_twins_and_prefixes() {
        assert_eq!(
            lookup("smtpd_tls_ask_ccert").unwrap().severity,
            Severity::Fatal
        );
        assert_eq!(
            lookup("lmtp_header_checks").unwrap().name,
            "smtp_header_checks"
        );
        assert_eq!(
            lookup("postscreen_dnsbl_sites").unwrap().severity,
            Severity::Warning
        );
        assert!(lookup("smtpd_tls_ask_cce").is_none());
    }

    #[test]
    fn fatal_only_when_the_value_changes_behaviour() {
        let master = "2525 inet n - n - - smtpd -o milter_header_checks=regexp:/etc/corepost/mhc\n";
        let config = load(
            "myhostname = a.example\nsmtpd_tls_ask_ccert = yes\nsmtpd_tls_req_ccert = no\nbiff = no\ndefer_transports =\n",
            master,
        );
        let f = findings(&config);
        assert_eq!(
            f.errors,
            vec![
                format!(
                    "/etc/corepost/main.cf, line 2: parameter smtpd_tls_ask_ccert is not supported by corepost: {CCERT}"
                ),
                format!(
                    "/etc/corepost/master.cf, line 1: service 2525/inet: parameter milter_header_checks is not supported by corepost: {MILTER}"
                ),
            ]
        );
        assert_eq!(f.warnings.len(), 3, "{:?}", f.warnings);
        assert!(f.warnings[0].starts_with(
            "/etc/corepost/main.cf, line 4: parameter biff is not supported by corepost"
        ));
        assert!(
            f.warnings
                .iter()
                .any(|w| w.contains("line 3: parameter smtpd_tls_req_ccert")
                    && w.ends_with("so nothing changes)"))
        );
        // And they are no longer "unused parameter" warnings.
        assert!(config.warnings().is_empty(), "{:?}", config.warnings());
    }

    #[test]
    fn certificate_levels_the_client_cannot_check_are_refused() {
        let master = "2525 inet n - n - - smtpd\nrelay unix - - n - - lmtp -o lmtp_tls_security_level=dane-only\n";
        let f = findings(&load("smtp_tls_security_level = dane\n", master));
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
        assert!(f.errors[0].starts_with("/etc/corepost/master.cf, line 2: service relay/unix: parameter lmtp_tls_security_level = dane-only"));
        for level in [
            "encrypt",
            "fingerprint",
            "dane",
            "dane-only",
            "verify",
            "secure",
        ] {
            let f = findings(&load(&format!("smtp_tls_security_level = {level}\n"), ""));
            assert!(f.errors.is_empty(), "{level}: {:?}", f.errors);
        }
        let f = findings(&load("lmtp_tls_security_level = verify\n", ""));
        assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
    }
}
