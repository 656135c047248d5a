//! Registry parameters that no code reads by name today, each with the
//! reason. Keep it short: a name leaves this list when code starts reading
//! it (the test fails until it does), and a new unread parameter is not
//! added here without a reason a reviewer accepts.

/// Only Postfix's install scripts read it; as in Postfix, no daemon does.
const INSTALL_PATH: &str = "informational, as in Postfix: only Postfix's installation scripts use it and corepost has none";
/// The generic form of a per-transport parameter.
const PER_TRANSPORT_DEFAULT: &str =
    "read through <transport>_destination_concurrency_*_feedback, whose default it is";
/// Not honoured yet: the queue manager ignores it.
const QMGR: &str = "NOT HONOURED YET: the queue manager ignores it";
/// Not honoured yet: smtpd ignores it (issue 15, smtpd items).
const SMTPD: &str = "NOT HONOURED YET: smtpd ignores it (issue 15)";
/// Not honoured yet: the SMTP/LMTP client ignores it.
const CLIENT: &str = "NOT HONOURED YET: the SMTP/LMTP client ignores it (issue 14)";
/// Not honoured yet: routing ignores it.
const ROUTING: &str = "NOT HONOURED YET: routing ignores it (issue 14)";

/// Certificate verification is refused (unsupported.rs, UNHONOURED_VALUES).
const CA_FILES: &str = "used only to verify servers (levels verify, secure, ...), which corepost refuses until the client verifies certificates (issue 14)";

/// (name, why no code reads it).
pub const UNREAD: &[(&str, &str)] = &[
    ("smtp_tls_CAfile", CA_FILES),
    ("smtp_tls_CApath", CA_FILES),
    ("command_directory", INSTALL_PATH),
    (
        "data_directory",
        "Postfix keeps its tlsmgr, verify and postscreen caches there; corepost has no such cache yet, so nothing writes there",
    ),
    (
        "default_destination_concurrency_negative_feedback",
        PER_TRANSPORT_DEFAULT,
    ),
    (
        "default_destination_concurrency_positive_feedback",
        PER_TRANSPORT_DEFAULT,
    ),
    ("default_extra_recipient_limit", QMGR),
    ("default_recipient_limit", QMGR),
    ("default_transport_rate_delay", QMGR),
    ("lmtp_connection_reuse_time_limit", CLIENT),
    ("lmtp_data_init_timeout", CLIENT),
    ("lmtp_data_xfer_timeout", CLIENT),
    ("lmtp_discard_lhlo_keywords", CLIENT),
    ("lmtp_lhlo_timeout", CLIENT),
    ("lmtp_mail_timeout", CLIENT),
    ("lmtp_quit_timeout", CLIENT),
    ("lmtp_rcpt_timeout", CLIENT),
    ("local_destination_concurrency_limit", QMGR),
    ("mailq_path", INSTALL_PATH),
    (
        "multi_instance_name",
        "read through the default of syslog_name (${multi_instance_name?...})",
    ),
    ("newaliases_path", INSTALL_PATH),
    ("qmgr_message_recipient_limit", QMGR),
    ("queue_run_delay", QMGR),
    ("sender_dependent_default_transport_maps", ROUTING),
    ("sender_dependent_relayhost_maps", ROUTING),
    ("sendmail_path", INSTALL_PATH),
    ("smtp_always_send_ehlo", CLIENT),
    ("smtp_bind_address", CLIENT),
    ("smtp_bind_address6", CLIENT),
    ("smtp_connection_cache_destinations", CLIENT),
    ("smtp_connection_cache_on_demand", CLIENT),
    ("smtp_data_init_timeout", CLIENT),
    ("smtp_data_xfer_timeout", CLIENT),
    ("smtp_discard_ehlo_keywords", CLIENT),
    ("smtp_generic_maps", CLIENT),
    ("smtp_helo_timeout", CLIENT),
    ("smtp_line_length_limit", CLIENT),
    ("smtp_mail_timeout", CLIENT),
    ("smtp_mx_session_limit", CLIENT),
    ("smtp_never_send_ehlo", CLIENT),
    ("smtp_quit_timeout", CLIENT),
    ("smtp_sasl_auth_enable", CLIENT),
    ("smtp_sasl_password_maps", CLIENT),
    ("smtp_sasl_security_options", CLIENT),
    ("smtp_skip_5xx_greeting", CLIENT),
    ("smtp_tls_loglevel", CLIENT),
    ("smtp_tls_policy_maps", CLIENT),
    ("smtp_tls_protocols", CLIENT),
    ("transport_retry_time", QMGR),
    ("unverified_recipient_reject_code", SMTPD),
    (
        "virtual_maps",
        "read through the default of virtual_alias_maps ($virtual_maps)",
    ),
];
