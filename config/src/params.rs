//! The table of every parameter corepost knows (see [`crate::registry`]).
//!
//! Grouped as in Postfix's documentation: paths and identity, address
//! classes and routing, smtpd, the smtp/lmtp client, scheduling, queue
//! lifetimes, content inspection, notifications, logging, then corepost's
//! own. Defaults are Postfix 3.6's; every difference says why.

use crate::host;
use crate::registry::Kind::{self, *};
use crate::registry::{ComputeDefault, ParamDef, TransportParamDef};

const fn p(name: &'static str, kind: Kind, default: &'static str, doc: &'static str) -> ParamDef {
    ParamDef::new(name, kind, default, doc)
}

const fn c(name: &'static str, kind: Kind, compute: ComputeDefault, doc: &'static str) -> ParamDef {
    ParamDef::computed(name, kind, compute, doc)
}

/// Postfix's server TLS levels.
const TLS_SERVER_LEVELS: &[&str] = &["", "none", "may", "encrypt"];
/// Postfix's client TLS levels.
const TLS_CLIENT_LEVELS: &[&str] = &[
    "",
    "none",
    "may",
    "encrypt",
    "dane",
    "dane-only",
    "fingerprint",
    "verify",
    "secure",
];
const LOCKS: &[&str] = &["fcntl", "flock", "dotlock"];
/// Postfix's facility names (msg_syslog.c), numbered as syslog(3) does in `engine/src/log/syslog.rs`.
const SYSLOG_FACILITIES: &[&str] = &[
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7",
];
const ALLOW_MAIL_TO: &[&str] = &["alias", "forward", "include"];
const SASL_OPTIONS: &[&str] = &[
    "noanonymous",
    "noplaintext",
    "noactive",
    "nodictionary",
    "mutual_auth",
];

/// Every static parameter.
pub static PARAMS: &[ParamDef] = &[
    // --- Paths, identity, compatibility -------------------------------------
    p("compatibility_level", Text, "3.6", "Which Postfix release's defaults apply. corepost implements the 3.6 defaults only; the value is accepted for main.cf compatibility and usable in ${{$compatibility_level} <level {...} ? ...} expressions.")
        .differs("corepost has no legacy mode: its built-in defaults are Postfix's compatibility_level = 3.6 ones"),
    c("config_directory", Text, host::config_directory, "Directory holding main.cf and master.cf: the -c option, else $COREPOST_CONFIG_DIR, else /etc/corepost.")
        .differs("corepost's own configuration lives in /etc/corepost"),
    c("queue_directory", Text, host::queue_directory, "Root of the spool: one subdirectory per core, the maildrop, the control socket. Built-in: /var/spool/corepost for every user once it exists (corepost install, or a daemon started as root, creates it); only on a host without it does a user other than root get a personal spool, $XDG_STATE_HOME/corepost or else ./corepost-spool.")
        .differs("corepost's own spool; on a host without it (never installed, never run as root) a user's own daemon spools where that user can write"),
    p("data_directory", Text, "$queue_directory/data", "Directory for corepost's writable caches (e.g. TLS session and address verification caches).")
        .differs("kept under the queue directory so an unprivileged instance is self-contained"),
    p("command_directory", Text, "/usr/sbin", "Directory where the administrative commands are installed."),
    c("mail_owner", Text, host::mail_owner, "Account that owns the spool and that the daemon runs as after binding its ports. Built-in: corepost when started as root, else the invoking user.")
        .differs("an unprivileged instance keeps running as the user who started it"),
    p("mail_name", Text, "corepost", "Name of the mail system, used in the SMTP greeting and in bounce messages.")
        .differs("names the software that actually runs"),
    p("mail_version", Text, env!("CARGO_PKG_VERSION"), "The corepost release; informational.")
        .differs("corepost's own version"),
    p("multi_instance_name", Text, "", "Optional instance name, used as the default syslog_name."),
    // --- Host and network identity ---------------------------------------------
    c("myhostname", Text, host::myhostname, "Fully qualified host name of this mail system; the default is the system's host name, with .localdomain appended when it has no dot."),
    c("mydomain", Text, host::mydomain, "Internet domain of this mail system; the default is $myhostname without its first label, or localdomain."),
    p("myorigin", Text, "$myhostname", "Domain appended to locally posted mail whose addresses have no domain."),
    p("mydestination", List, "$myhostname, localhost.$mydomain, localhost", "Domains delivered locally (the local address class)."),
    c("mynetworks", List, host::mynetworks, "Trusted client networks (permit_mynetworks). The default is computed from mynetworks_style and the addresses in inet_interfaces.")
        .differs("follows inet_interfaces, which is loopback-only by default"),
    p("mynetworks_style", Text, "host", "How the default mynetworks is computed: host (this host's addresses), subnet (their subnets) or class (their class A/B/C networks).")
        .one_of(&["host", "subnet", "class"]),
    p("inet_interfaces", List, "loopback-only", "Addresses the inet services listen on: all, loopback-only, or a list of addresses or host names.")
        .differs("a fresh install listens on loopback only, never on public interfaces by surprise"),
    p("inet_protocols", List, "all", "Address families used for listening and delivery: all, ipv4, ipv6.")
        .one_of(&["all", "ipv4", "ipv6"]),
    p("proxy_interfaces", List, "", "Addresses this host receives mail through via a proxy or NAT; they count as local destinations."),
    p("relay_domains", List, "", "Domains this host relays mail to (the relay address class); empty means none."),
    p("relayhost", Text, "", "Default next hop for non-local mail: [host]:port, host:port (with MX lookup) or empty for direct delivery."),
    p("append_dot_mydomain", Bool, "no", "Append .$mydomain to host names without a dot in addresses."),
    p("append_at_myorigin", Bool, "yes", "Append @$myorigin to addresses without a domain in locally posted mail."),
    p("recipient_delimiter", Text, "", "Characters that separate a local part from its extension (user+ext); empty disables extensions."),
    p("owner_request_special", Bool, "yes", "Treat owner-list and list-request addresses specially when sending bounces."),
    p("parent_domain_matches_subdomains", List, "debug_peer_list,fast_flush_domains,mynetworks,permit_mx_backup_networks,qmqpd_authorized_clients,relay_domains,smtpd_access_maps", "Features in which a domain name also matches its subdomains (otherwise write .domain)."),
    // --- Local delivery --------------------------------------------------------
    p("alias_maps", Maps, "hash:/etc/aliases", "Alias tables consulted by the local delivery agent.")
        .differs("no NIS support, so nis:mail.aliases is not in the default"),
    p("alias_database", Maps, "hash:/etc/aliases", "Alias tables rebuilt by newaliases."),
    p("home_mailbox", Text, "", "Mailbox file or maildir (ending in /) relative to the user's home; empty means mail_spool_directory."),
    p("mail_spool_directory", Text, "/var/mail", "Directory of UNIX-style mailbox files."),
    p("mailbox_command", Text, "", "External command the local agent delivers mailboxes through (e.g. procmail)."),
    p("mailbox_transport", Text, "", "Transport that local mailbox delivery is handed to instead of the local agent."),
    p("fallback_transport", Text, "", "Transport for local recipients not found in the user database (corepost_local_user_maps), tried before luser_relay."),
    p("luser_relay", Text, "", "Address that receives mail for unknown local recipients."),
    p("allow_mail_to_commands", List, "alias, forward", "Where the local agent accepts |command destinations: alias, forward, include.")
        .one_of(ALLOW_MAIL_TO),
    p("allow_mail_to_files", List, "alias, forward", "Where the local agent accepts /file destinations: alias, forward, include.")
        .one_of(ALLOW_MAIL_TO),
    p("prepend_delivered_header", List, "command, file, forward", "Local deliveries that get a Delivered-To: header: command, file, forward (mailbox deliveries always do).")
        .one_of(&["command", "file", "forward"]),
    p("local_command_shell", Text, "", "Shell for local |command deliveries; empty means /bin/sh -c."),
    p("forward_path", List, "$home/.forward${recipient_delimiter}${extension}, $home/.forward", "Where the local agent looks for a user's .forward file ($home, $user, $extension, $recipient_delimiter expand per recipient).")
        .raw(),
    p("mailbox_delivery_lock", List, "fcntl, dotlock", "Locks taken while the local agent appends to an mbox file: fcntl, flock, dotlock.")
        .one_of(LOCKS),
    p("mailbox_size_limit", Size, "51200000", "Largest mailbox or maildir file the local agent writes, in bytes; 0 means unlimited."),
    p("local_recipient_maps", Maps, "proxy:unix:passwd.byname $alias_maps", "Tables of valid local recipients; unknown ones are rejected at RCPT time. Empty disables the check.")
        .differs("follows alias_maps"),
    p("local_transport", Text, "local:$myhostname", "Transport and next hop for the local address class."),
    // --- Address classes and routing ---------------------------------------------
    p("virtual_transport", Text, "virtual", "Transport for the virtual mailbox address class."),
    p("relay_transport", Text, "relay", "Transport for the relay address class."),
    p("default_transport", Text, "smtp", "Transport for the default address class (everything not local, virtual or relay)."),
    p("transport_maps", Maps, "", "Tables mapping recipient or domain to transport:nexthop, consulted before the class transports."),
    p("sender_dependent_relayhost_maps", Maps, "", "Tables mapping a sender address or domain to a relayhost that overrides relayhost."),
    p("sender_dependent_default_transport_maps", Maps, "", "Tables mapping a sender to a transport that overrides default_transport."),
    p("empty_address_relayhost_maps_lookup_key", Text, "<>", "The sender_dependent_relayhost_maps key used for the null sender."),
    p("empty_address_default_transport_maps_lookup_key", Text, "<>", "The sender_dependent_default_transport_maps key used for the null sender."),
    p("virtual_maps", Maps, "", "Obsolete name of virtual_alias_maps, kept for old configurations."),
    p("virtual_alias_domains", List, "$virtual_alias_maps", "Domains whose every address is an alias (the virtual alias class)."),
    p("virtual_alias_maps", Maps, "$virtual_maps", "Tables rewriting recipient addresses to other addresses, for any domain."),
    p("always_bcc", Text, "", "Address that receives a blind copy of every message cleanup queues (smtpd and pickup); off with receive_override_options = no_address_mappings."),
    p("sender_bcc_maps", List, "", "Tables searched by the envelope sender (after canonical mapping; address, then user@ for local domains, then @domain) for an address that receives a blind copy."),
    p("recipient_bcc_maps", List, "", "Tables searched by each envelope recipient (after canonical mapping) for an address that receives a blind copy."),
    p("virtual_alias_recursion_limit", Int, "1000", "Deepest nesting of virtual alias expansion before the message is deferred (451 4.6.0)."),
    p("virtual_alias_expansion_limit", Int, "1000", "Most addresses one recipient may expand to through virtual_alias_maps before the message is deferred (451 4.6.0)."),
    p("propagate_unmatched_extensions", List, "canonical, virtual", "Which rewrites carry an address extension (user+ext) that the table key did not match over to the result: canonical, virtual (alias, forward, include are the local agent's)."),
    p("canonical_maps", Maps, "", "Tables rewriting envelope and header addresses, sender and recipient (after sender_/recipient_canonical_maps)."),
    p("sender_canonical_maps", Maps, "", "Tables rewriting sender addresses (envelope and header), before canonical_maps."),
    p("recipient_canonical_maps", Maps, "", "Tables rewriting recipient addresses (envelope and header), before canonical_maps."),
    p("canonical_classes", List, "envelope_sender, envelope_recipient, header_sender, header_recipient", "Which addresses canonical_maps rewrites."),
    p("sender_canonical_classes", List, "envelope_sender, header_sender", "Which addresses sender_canonical_maps rewrites."),
    p("recipient_canonical_classes", List, "envelope_recipient, header_recipient", "Which addresses recipient_canonical_maps rewrites."),
    p("masquerade_domains", List, "", "Domains that hide their subdomains: user@host.example.com becomes user@example.com (a leading ! excludes a domain)."),
    p("masquerade_exceptions", List, "", "Local parts (root, mailer-daemon, ...) that are never masqueraded."),
    p("masquerade_classes", List, "envelope_sender, header_sender, header_recipient", "Which addresses masquerade_domains rewrites."),
    p("local_header_rewrite_clients", List, "permit_inet_interfaces", "SMTP clients whose header addresses are completed with $myorigin (and canonical maps applied): permit_inet_interfaces, permit_mynetworks, permit_sasl_authenticated, static:all."),
    p("remote_header_rewrite_domain", Text, "", "Domain appended to incomplete header addresses of other SMTP clients; empty: their headers are not rewritten."),
    p("relocated_maps", Maps, "", "Tables of users or domains that moved: smtpd answers 550 5.1.6 \"User has moved to <value>\"."),
    p("virtual_mailbox_domains", List, "$virtual_mailbox_maps", "Domains delivered by the virtual mailbox agent (the virtual mailbox class)."),
    p("virtual_mailbox_maps", Maps, "", "Tables of valid virtual mailbox recipients and their mailbox paths."),
    p("virtual_mailbox_base", Text, "", "Directory prepended to every path from virtual_mailbox_maps."),
    p("virtual_uid_maps", Maps, "", "Tables giving the user id the virtual agent writes a mailbox as."),
    p("virtual_gid_maps", Maps, "", "Tables giving the group id the virtual agent writes a mailbox as."),
    p("virtual_minimum_uid", Int, "100", "Smallest user id the virtual agent accepts from virtual_uid_maps."),
    p("virtual_mailbox_limit", Size, "51200000", "Largest mailbox file the virtual agent writes, in bytes; 0 means unlimited."),
    p("virtual_mailbox_lock", List, "fcntl, dotlock", "How the virtual agent locks mailbox files.")
        .one_of(LOCKS),
    p("relay_recipient_maps", Maps, "", "Tables of valid recipients in relay_domains; unknown ones are rejected at RCPT time. Empty disables the check."),
    // --- smtpd: limits and timeouts ------------------------------------------------
    p("message_size_limit", Size, "10240000", "Largest message accepted, in bytes, envelope included."),
    p("queue_minfree", Size, "0", "Free space (bytes) the queue file system must keep: smtpd answers MAIL FROM with 452 4.3.1 Insufficient system storage when no more than this is free, or less than 1.5 times message_size_limit."),
    p("header_size_limit", Size, "102400", "Largest message header kept, in bytes."),
    p("line_length_limit", Size, "2048", "Longest line of a message or SMTP command kept in memory; longer lines are split or refused."),
    p("smtpd_recipient_limit", Int, "1000", "Most recipients one message may have."),
    p("smtpd_recipient_overshoot_limit", Int, "1000", "RCPT commands beyond smtpd_recipient_limit answered 452 without counting as errors."),
    p("smtpd_timeout", Time('s'), "${stress?{10}:{300}}s", "How long smtpd waits for a client command or data before disconnecting."),
    p("smtpd_hard_error_limit", Int, "${stress?{1}:{20}}", "Errors after which smtpd disconnects a client."),
    p("smtpd_soft_error_limit", Int, "10", "Errors after which smtpd slows down its replies to a client."),
    p("smtpd_error_sleep_time", Time('s'), "1s", "Delay before replying once the soft error limit is reached."),
    p("smtpd_junk_command_limit", Int, "${stress?{1}:{100}}", "NOOP, VRFY, ETRN and RSET commands a session may issue before they count as errors."),
    p("smtpd_client_connection_count_limit", Int, "50", "Simultaneous connections one client address may hold; 0 means unlimited."),
    p("smtpd_client_connection_rate_limit", Int, "0", "Connections one client may open per time unit; 0 means unlimited."),
    p("smtpd_client_message_rate_limit", Int, "0", "Messages one client may send per time unit; 0 means unlimited."),
    p("smtpd_client_recipient_rate_limit", Int, "0", "Recipients one client may send per time unit; 0 means unlimited."),
    p("smtpd_client_auth_rate_limit", Int, "0", "AUTH commands one client may send per time unit; 0 means unlimited."),
    p("anvil_rate_time_unit", Time('s'), "60s", "The time unit of the smtpd_client_*_rate_limit counters."),
    p("smtpd_client_connection_limit_exceptions", List, "", "Obsolete name of smtpd_client_event_limit_exceptions."),
    p("smtpd_client_event_limit_exceptions", List, "${smtpd_client_connection_limit_exceptions:$mynetworks}", "Clients exempt from the connection and rate limits.")
        .differs("follows mynetworks"),
    p("smtpd_banner", Text, "$myhostname ESMTP $mail_name", "Text of the 220 greeting after the code.")
        .differs("follows mail_name"),
    p("smtpd_helo_required", Bool, "no", "Require HELO or EHLO before MAIL."),
    p("smtpd_delay_reject", Bool, "yes", "Apply client, HELO and sender restrictions at RCPT time, so rejections can be logged with the recipient."),
    p("smtpd_starttls_timeout", Time('s'), "${stress?{10}:{300}}s", "How long the TLS handshake after STARTTLS may take."),
    p("smtpd_policy_service_timeout", Time('s'), "100s", "How long to wait for a policy server's answer."),
    p("smtpd_policy_service_default_action", Text, "451 4.3.5 Server configuration problem", "The reply when a policy server cannot be reached or answers nothing usable."),
    p("smtpd_policy_service_try_limit", Int, "2", "Attempts to reach a policy server for one request."),
    p("smtpd_policy_service_retry_delay", Time('s'), "1s", "Delay between attempts to reach a policy server."),
    p("smtpd_policy_service_max_idle", Time('s'), "300s", "How long an idle connection to a policy server is kept."),
    p("smtpd_policy_service_max_ttl", Time('s'), "1000s", "How long a connection to a policy server is used at most."),
    p("smtpd_policy_service_request_limit", Int, "0", "Requests sent over one policy server connection before it is closed; 0 means no limit."),
    p("smtpd_policy_service_policy_context", Text, "", "Text sent to policy servers as policy_context=, to tell apart the smtpd services that ask."),
    p("smtpd_peername_lookup", Bool, "yes", "Look up the client's host name from its address (PTR, then forward-confirmed)."),
    p("smtpd_noop_commands", List, "", "Commands smtpd accepts and ignores."),
    p("smtpd_discard_ehlo_keywords", List, "", "EHLO keywords not advertised (e.g. pipelining, chunking, silent-discard)."),
    p("smtpd_authorized_xclient_hosts", List, "", "Clients allowed to use the XCLIENT command."),
    p("smtpd_upstream_proxy_protocol", Text, "", "Proxy protocol spoken in front of smtpd: empty or haproxy (PROXY v1 and v2).")
        .one_of(&["", "haproxy"]),
    p("smtpd_upstream_proxy_timeout", Time('s'), "5s", "How long to wait for the proxy protocol header."),
    p("smtpd_forbid_bare_newline", Text, "normalize", "What to do with a bare LF in SMTP commands or message data: no (accept), normalize or yes (treat as CRLF but never as end of data), reject (reject the command or message).")
        .differs("SMTP smuggling defence on by default, as in Postfix 3.9 and later")
        .one_of(&["no", "normalize", "yes", "reject", "note"]),
    p("smtpd_forbid_bare_newline_exclusions", List, "$mynetworks", "Clients exempt from smtpd_forbid_bare_newline.")
        .differs("follows mynetworks"),
    p("smtpd_forbid_bare_newline_reject_code", Int, "550", "Reply code when smtpd_forbid_bare_newline = reject refuses a command or message."),
    p("smtpd_forbid_unauth_pipelining", Bool, "no", "Disconnect clients that pipeline commands without being offered PIPELINING."),
    // --- smtpd: restrictions and reply codes ------------------------------------
    p("smtpd_client_restrictions", Restrictions, "", "Restrictions on the client's address and host name."),
    p("smtpd_helo_restrictions", Restrictions, "", "Restrictions on the HELO/EHLO argument."),
    p("smtpd_sender_restrictions", Restrictions, "", "Restrictions on the MAIL FROM address."),
    p("smtpd_relay_restrictions", Restrictions, "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination", "Relay control, evaluated at RCPT before smtpd_recipient_restrictions."),
    p("smtpd_recipient_restrictions", Restrictions, "", "Spam-blocking restrictions on the RCPT TO address."),
    p("smtpd_data_restrictions", Restrictions, "", "Restrictions applied at the DATA command."),
    p("smtpd_end_of_data_restrictions", Restrictions, "", "Restrictions applied after the message content has been received."),
    p("smtpd_etrn_restrictions", Restrictions, "", "Restrictions on the ETRN command."),
    p("fast_flush_domains", List, "$relay_domains", "Destinations whose deferred mail ETRN may flush."),
    p("smtpd_restriction_classes", List, "", "Names of user-defined restriction lists, each a parameter of its own, usable as results of access tables."),
    p("smtpd_reject_unlisted_recipient", Bool, "yes", "Reject recipients not in their address class's recipient tables even without reject_unlisted_recipient."),
    p("smtpd_reject_unlisted_sender", Bool, "no", "Reject senders that would be rejected as recipients."),
    p("strict_rfc821_envelopes", Bool, "no", "Require MAIL FROM and RCPT TO addresses in <> with no comments or phrases."),
    p("disable_vrfy_command", Bool, "no", "Answer VRFY with 502 instead of 252."),
    p("allow_untrusted_routing", Bool, "no", "Allow sender-specified routing (user%domain@relay, user@domain@relay) into relay domains."),
    p("smtputf8_enable", Bool, "yes", "Offer SMTPUTF8 and accept UTF-8 addresses and headers."),
    p("unknown_local_recipient_reject_code", Int, "550", "Reply code for recipients not in local_recipient_maps."),
    p("unknown_relay_recipient_reject_code", Int, "550", "Reply code for recipients not in relay_recipient_maps."),
    p("unknown_virtual_alias_reject_code", Int, "550", "Reply code for unknown recipients in virtual alias domains."),
    p("unknown_virtual_mailbox_reject_code", Int, "550", "Reply code for unknown recipients in virtual mailbox domains."),
    p("unknown_client_reject_code", Int, "450", "Reply code of reject_unknown_client_hostname."),
    p("unknown_hostname_reject_code", Int, "450", "Reply code of reject_unknown_helo_hostname."),
    p("relay_domains_reject_code", Int, "554", "Reply code for relay access denied."),
    p("access_map_reject_code", Int, "554", "Reply code when an access table says REJECT."),
    p("access_map_defer_code", Int, "450", "Reply code when an access table says DEFER."),
    p("invalid_hostname_reject_code", Int, "501", "Reply code of reject_invalid_helo_hostname."),
    p("non_fqdn_reject_code", Int, "504", "Reply code of the reject_non_fqdn_* restrictions."),
    p("unknown_address_reject_code", Int, "450", "Reply code of reject_unknown_sender_domain and reject_unknown_recipient_domain."),
    p("smtpd_null_access_lookup_key", Text, "<>", "The key under which check_sender_access looks up the null sender."),
    p("multi_recipient_bounce_reject_code", Int, "550", "Reply code of reject_multi_recipient_bounce."),
    p("maps_rbl_reject_code", Int, "554", "Reply code when a DNS block list matches."),
    p("reject_code", Int, "554", "Reply code of the reject restriction."),
    p("defer_code", Int, "450", "Reply code of the defer restriction."),
    p("rbl_reply_maps", Maps, "", "Tables of reply templates per DNS block list."),
    p("default_rbl_reply", Text, "$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked using $rbl_domain${rbl_reason?; $rbl_reason}", "Reply template used when a DNS block list matches; $rbl_code, $rbl_class, $rbl_what, $rbl_domain and $rbl_reason are filled in by smtpd.")
        .raw(),
    p("smtpd_log_access_permit_actions", List, "", "Restrictions whose PERMIT decisions are logged."),
    // --- smtpd: TLS and SASL ----------------------------------------------------
    p("smtpd_sasl_auth_enable", Bool, "no", "Offer SMTP AUTH."),
    p("smtpd_sasl_security_options", List, "noanonymous", "Which SASL mechanisms are offered in the clear.")
        .one_of(SASL_OPTIONS),
    p("smtpd_sasl_authenticated_header", Bool, "no", "Record the authenticated user name in the Received header."),
    p("smtpd_tls_security_level", Text, "", "Server TLS: empty or none (no STARTTLS), may (offer it), encrypt (require it).")
        .one_of(TLS_SERVER_LEVELS),
    p("smtpd_use_tls", Bool, "no", "Obsolete: with smtpd_tls_security_level empty, yes means may."),
    p("smtpd_enforce_tls", Bool, "no", "Obsolete: with smtpd_tls_security_level empty, yes means encrypt."),
    p("smtpd_tls_cert_file", Text, "", "PEM certificate chain for the server."),
    p("smtpd_tls_key_file", Text, "$smtpd_tls_cert_file", "PEM private key for the server certificate."),
    p("smtpd_tls_auth_only", Bool, "yes", "Offer AUTH only after STARTTLS (or on a wrapper-mode connection).")
        .differs("passwords are never invited over a plaintext connection unless the operator says so"),
    p("smtpd_tls_received_header", Bool, "no", "Record the TLS protocol and cipher in the Received header."),
    p("smtpd_tls_loglevel", Int, "0", "How much smtpd logs about TLS: 0 none, 1 a summary, 2 and up more."),
    p("smtpd_tls_protocols", List, ">=TLSv1.2", "TLS versions offered when TLS is optional.")
        .differs("rustls implements TLS 1.2 and 1.3 only"),
    p("smtpd_tls_mandatory_protocols", List, ">=TLSv1.2", "TLS versions accepted when TLS is required.")
        .differs("rustls implements TLS 1.2 and 1.3 only"),
    p("smtpd_tls_chain_files", List, "", "PEM files with the server's private key and certificate chain(s), each file the key followed by its chain; takes precedence over smtpd_tls_cert_file and smtpd_tls_key_file."),
    p("smtpd_tls_wrappermode", Bool, "no", "Run TLS from the first byte (implicit TLS, the smtps/submissions service on port 465) instead of offering STARTTLS."),
    p("smtpd_sasl_type", Text, "corepost", "SASL implementation for SMTP AUTH: corepost (the password file corepost_sasl_password_file) or dovecot (Dovecot's auth server at smtpd_sasl_path).")
        .differs("corepost has no Cyrus SASL; its own password file takes that place")
        .one_of(&["corepost", "dovecot"]),
    p("smtpd_sasl_path", Text, "smtpd", "Where the SASL server is: for dovecot a Unix socket (relative to the queue directory, e.g. private/auth) or inet:host:port."),
    p("smtpd_sasl_service", Text, "smtp", "Service name passed to the SASL server."),
    p("smtpd_sasl_tls_security_options", List, "$smtpd_sasl_security_options", "Which SASL mechanisms are offered over TLS.")
        .one_of(SASL_OPTIONS),
    p("smtpd_sasl_exceptions_networks", List, "", "Clients to which smtpd does not advertise AUTH in its EHLO reply (they may still use it)."),
    p("smtpd_sender_login_maps", Maps, "", "Tables of the SASL login names that own each MAIL FROM address, for the *_sender_login_mismatch restrictions."),
    // --- SMTP and LMTP client ----------------------------------------------------
    p("smtp_tls_security_level", Text, "", "Client TLS: empty or none, may (opportunistic STARTTLS), encrypt, fingerprint, dane, dane-only (DANE, RFC 7672: needs smtp_dns_support_level = dnssec and a validating resolver), verify, secure.")
        .one_of(TLS_CLIENT_LEVELS),
    p("smtp_use_tls", Bool, "no", "Obsolete: with smtp_tls_security_level empty, yes means may."),
    p("smtp_enforce_tls", Bool, "no", "Obsolete: with smtp_tls_security_level empty, yes means verify (encrypt with smtp_tls_enforce_peername = no)."),
    p("smtp_tls_enforce_peername", Bool, "yes", "Obsolete: whether smtp_enforce_tls = yes also verifies the server's name (level verify rather than encrypt)."),
    p("smtp_tls_dane_insecure_mx_policy", Text, "${{$smtp_tls_security_level} == {dane} ? {dane} : {may}}", "At the dane level, the TLS policy for an MX host with secure TLSA records found through an insecure MX RRset: may (ignore the TLSA records), encrypt (TLS without authentication), dane (use the TLSA records; a match is logged as Trusted).")
        .one_of(&["may", "encrypt", "dane"]),
    p("smtp_tls_force_insecure_host_tlsa_lookup", Bool, "no", "At the dane levels, look up TLSA records even for an MX host whose address records are not DNSSEC-validated (the TLSA records themselves must still be validated to count)."),
    p("smtp_tls_loglevel", Int, "0", "How much the client logs about TLS."),
    p("smtp_tls_CAfile", Text, "", "PEM file of CA certificates for verifying servers."),
    p("smtp_tls_CApath", Text, "", "Directory of CA certificates for verifying servers."),
    p("smtp_tls_policy_maps", Maps, "", "Per-destination TLS policy tables."),
    p("smtp_tls_protocols", List, ">=TLSv1.2", "TLS versions the client offers.")
        .differs("rustls implements TLS 1.2 and 1.3 only"),
    p("smtp_tls_mandatory_protocols", List, ">=TLSv1.2", "TLS versions the client accepts at the levels that require TLS (encrypt and above).")
        .differs("rustls implements TLS 1.2 and 1.3 only"),
    p("smtp_tls_verify_cert_match", List, "hostname", "Names the server certificate must match at the verify level: hostname (the MX host), nexthop, dot-nexthop, a name, or .domain for its subdomains."),
    p("smtp_tls_secure_cert_match", List, "nexthop, dot-nexthop", "Names the server certificate must match at the secure level (as smtp_tls_verify_cert_match)."),
    p("smtp_tls_fingerprint_cert_match", List, "", "Certificate or public-key fingerprints accepted at the fingerprint level (hex, colons optional)."),
    p("smtp_tls_fingerprint_digest", Text, "sha256", "Digest of the fingerprint level: sha256, sha384, sha512 or sha1 (md5 is not supported)."),
    p("smtp_connect_timeout", Time('s'), "30s", "How long the client waits for a TCP connection to complete."),
    p("smtp_helo_timeout", Time('s'), "300s", "How long the client waits for the greeting and the EHLO reply."),
    p("smtp_mail_timeout", Time('s'), "300s", "How long the client waits for the MAIL FROM reply."),
    p("smtp_rcpt_timeout", Time('s'), "300s", "How long the client waits for a RCPT TO reply."),
    p("smtp_data_init_timeout", Time('s'), "120s", "How long the client waits for the DATA reply."),
    p("smtp_data_xfer_timeout", Time('s'), "180s", "How long the client waits while sending message content."),
    p("smtp_data_done_timeout", Time('s'), "600s", "How long the client waits for the reply to the final dot."),
    p("smtp_quit_timeout", Time('s'), "300s", "How long the client waits for the QUIT reply."),
    p("smtp_helo_name", Text, "$myhostname", "Host name the client sends in EHLO/HELO."),
    p("smtp_discard_ehlo_keywords", List, "", "EHLO keywords of the server the client ignores (e.g. pipelining, chunking, starttls; silent-discard: do not log)."),
    p("smtp_bind_address", Text, "", "Local IPv4 address for outgoing connections."),
    p("smtp_bind_address6", Text, "", "Local IPv6 address for outgoing connections."),
    p("smtp_bind_address_enforce", Bool, "no", "Defer delivery (4.4.0 server configuration error) when the client cannot bind to smtp_bind_address or smtp_bind_address6, instead of logging a warning and connecting from the system's default address (Postfix 3.7)."),
    p("smtp_address_preference", Text, "any", "Preferred address family when a host has both: any, ipv4, ipv6.")
        .one_of(&["any", "ipv4", "ipv6"]),
    p("smtp_mx_address_limit", Int, "5", "Most MX addresses tried per delivery attempt; 0 means unlimited."),
    p("smtp_defer_if_no_mx_address_found", Bool, "no", "Defer mail when MX records exist but none of their hosts resolves to an address (the lookup's text with status 4.4.4); the default returns it as undeliverable (5.4.4)."),
    p("smtp_skip_5xx_greeting", Bool, "yes", "Try the next MX host when a server greets with 5xx."),
    p("smtp_sasl_auth_enable", Bool, "no", "Authenticate to servers with SMTP AUTH."),
    p("smtp_sasl_password_maps", Maps, "", "Tables of user:password per next hop for client authentication."),
    p("smtp_sasl_security_options", List, "noplaintext, noanonymous", "SASL mechanisms the client may use.")
        .one_of(SASL_OPTIONS),
    p("smtp_sasl_tls_security_options", List, "$smtp_sasl_security_options", "SASL mechanisms the client may use over TLS."),
    p("smtp_sasl_tls_verified_security_options", List, "$smtp_sasl_tls_security_options", "SASL mechanisms the client may use over TLS with a verified server certificate."),
    p("smtp_sasl_mechanism_filter", List, "", "Server AUTH mechanisms the client considers (names, !name, or type:table); empty means all."),
    p("smtp_sender_dependent_authentication", Bool, "no", "Look up SASL credentials by sender address first (and use each connection for one sender)."),
    p("smtp_host_lookup", List, "dns", "How the client finds hosts: dns, native (the system resolver), or both.")
        .one_of(&["dns", "native"]),
    p("smtp_dns_support_level", Text, "", "DNS features the client uses: empty (as disable_dns_lookups says), disabled, enabled, dnssec (queries ask for DNSSEC and the AD bit of the name servers is trusted, as Postfix: they must be a validating resolver on a trusted path; needed by the dane levels).")
        .one_of(&["", "disabled", "enabled", "dnssec"]),
    p("disable_dns_lookups", Bool, "no", "Obsolete switch to use only the system's host lookup; see smtp_dns_support_level."),
    p("smtp_line_length_limit", Int, "998", "Longest line the client sends; longer lines are folded."),
    p("smtp_never_send_ehlo", Bool, "no", "Send HELO instead of EHLO."),
    p("smtp_always_send_ehlo", Bool, "yes", "Send EHLO even when the greeting does not mention ESMTP."),
    p("smtp_generic_maps", Maps, "", "Tables rewriting addresses in mail that leaves through the smtp client."),
    p("smtp_connection_cache_on_demand", Bool, "yes", "Keep connections to destinations with a backlog open for reuse."),
    p("smtp_connection_cache_destinations", List, "", "Destinations whose connections are always cached."),
    p("smtp_connection_cache_time_limit", Time('s'), "2s", "How long an idle cached connection is kept."),
    p("smtp_connection_reuse_time_limit", Time('s'), "300s", "How long one connection may be reused for new deliveries."),
    p("smtp_connection_reuse_count_limit", Int, "0", "How many times one connection may be reused; 0 means unlimited."),
    p("lmtp_connect_timeout", Time('s'), "0s", "How long the LMTP client waits for a connection; 0 means the system default."),
    p("lmtp_tls_security_level", Text, "", "LMTP client TLS level.")
        .one_of(TLS_CLIENT_LEVELS),
    p("lmtp_use_tls", Bool, "no", "Obsolete: with lmtp_tls_security_level empty, yes means may."),
    p("lmtp_enforce_tls", Bool, "no", "Obsolete: with lmtp_tls_security_level empty, yes means verify (encrypt with lmtp_tls_enforce_peername = no)."),
    p("lmtp_tls_enforce_peername", Bool, "yes", "Obsolete: whether lmtp_enforce_tls = yes also verifies the server's name."),
    p("lmtp_lhlo_name", Text, "$myhostname", "Host name the LMTP client sends in LHLO."),
    p("lmtp_lhlo_timeout", Time('s'), "300s", "How long the LMTP client waits for the greeting and the LHLO reply."),
    p("lmtp_mail_timeout", Time('s'), "300s", "How long the LMTP client waits for the MAIL FROM reply."),
    p("lmtp_rcpt_timeout", Time('s'), "300s", "How long the LMTP client waits for a RCPT TO reply."),
    p("lmtp_data_init_timeout", Time('s'), "120s", "How long the LMTP client waits for the DATA reply."),
    p("lmtp_data_xfer_timeout", Time('s'), "180s", "How long the LMTP client waits while sending message content."),
    p("lmtp_data_done_timeout", Time('s'), "600s", "How long the LMTP client waits for each recipient's reply after the final dot."),
    p("lmtp_quit_timeout", Time('s'), "300s", "How long the LMTP client waits for the QUIT reply."),
    p("lmtp_discard_lhlo_keywords", List, "", "LHLO keywords of the server the LMTP client ignores (as smtp_discard_ehlo_keywords)."),
    p("lmtp_tcp_port", Text, "24", "Port the LMTP client connects to when an inet: next hop names none."),
    p("lmtp_connection_cache_time_limit", Time('s'), "2s", "How long an idle cached LMTP connection is kept."),
    p("lmtp_connection_reuse_time_limit", Time('s'), "300s", "How long one LMTP connection may be reused for new deliveries."),
    p("lmtp_connection_reuse_count_limit", Int, "0", "How many times one LMTP connection may be reused; 0 means unlimited."),
    p("lmtp_line_length_limit", Int, "998", "Longest line the LMTP client sends; longer lines are broken (as smtp_line_length_limit)."),
    p("lmtp_skip_5xx_greeting", Bool, "yes", "Treat a 5xx greeting from an LMTP server as a temporary failure (as smtp_skip_5xx_greeting)."),
    p("lmtp_bind_address", Text, "", "Local IPv4 address for outgoing LMTP connections over TCP."),
    p("lmtp_bind_address6", Text, "", "Local IPv6 address for outgoing LMTP connections over TCP."),
    p("lmtp_bind_address_enforce", Bool, "no", "Defer delivery when the LMTP client cannot bind to lmtp_bind_address or lmtp_bind_address6 (as smtp_bind_address_enforce)."),
    p("lmtp_connection_cache_on_demand", Bool, "yes", "Keep LMTP connections to destinations with a backlog open for reuse."),
    p("lmtp_connection_cache_destinations", List, "", "LMTP destinations whose connections are always cached."),
    p("lmtp_generic_maps", Maps, "", "Tables rewriting addresses in mail that leaves through the lmtp client (as smtp_generic_maps)."),
    p("disable_mime_output_conversion", Bool, "no", "Do not convert 8-bit MIME content to quoted-printable for a next hop that does not announce 8BITMIME."),
    // --- Scheduling ----------------------------------------------------------------
    p("default_destination_concurrency_limit", Int, "20", "Most parallel deliveries to one destination; per transport as <transport>_destination_concurrency_limit."),
    p("initial_destination_concurrency", Int, "5", "Parallel deliveries to a destination before its concurrency is adjusted by feedback."),
    p("default_destination_recipient_limit", Int, "50", "Most recipients of one message per delivery (SMTP transaction)."),
    p("default_destination_rate_delay", Time('s'), "0s", "Pause between deliveries to one destination; 0 disables rate limiting."),
    p("default_destination_concurrency_failed_cohort_limit", Int, "1", "Failed connections in a row after which a destination is considered dead."),
    p("default_destination_concurrency_positive_feedback", Text, "1", "How much a success raises a destination's concurrency (a number or 1/concurrency)."),
    p("default_destination_concurrency_negative_feedback", Text, "1", "How much a failure lowers a destination's concurrency."),
    p("default_process_limit", Int, "100", "Default maxproc of master.cf services."),
    p("default_privs", Text, "nobody", "Account used for deliveries to external files and commands when no other is known."),
    p("destination_concurrency_feedback_debug", Bool, "no", "Log every concurrency change."),
    p("local_destination_concurrency_limit", Int, "2", "Most parallel deliveries to one local recipient."),
    p("local_destination_recipient_limit", Int, "1", "Recipients per local delivery (1: one delivery per user)."),
    p("command_time_limit", Time('s'), "1000s", "How long a pipe or local command may run."),
    // --- Queue ------------------------------------------------------------------------
    p("minimal_backoff_time", Time('s'), "300s", "Shortest time a deferred message waits before its next attempt."),
    p("maximal_backoff_time", Time('s'), "4000s", "Longest time a deferred message waits between attempts."),
    p("maximal_queue_lifetime", Time('d'), "5d", "How long a message may stay deferred before it is returned; 0 means one attempt."),
    p("bounce_queue_lifetime", Time('d'), "5d", "maximal_queue_lifetime for bounce messages."),
    p("delay_warning_time", Time('h'), "0h", "When to warn the sender that a message is delayed; 0 means never."),
    p("soft_bounce", Bool, "no", "Safety net: turn every hard failure into a temporary one (smtpd 5xx replies become 4xx, bounces become deferrals), so no mail is returned while it is on."),
    p("lmtp_assume_final", Bool, "no", "Report a successful LMTP delivery to a server that announced no DSN as \"delivered\" rather than \"relayed\" in NOTIFY=SUCCESS notices."),
    p("qmgr_message_active_limit", Int, "20000", "Most messages in the active queue."),
    p("in_flow_delay", Time('s'), "1s", "How long smtpd slows a client down when the queue is over its backlog; 0 disables."),
    // --- Content inspection -------------------------------------------------------------
    p("content_filter", Text, "", "After-queue content filter: transport:nexthop that receives every message before delivery."),
    p("default_filter_nexthop", Text, "", "Next hop for a content_filter or FILTER action that names none; empty means the recipient's domain."),
    p("receive_override_options", List, "", "Switches that disable address mapping, header/body checks or milters for a service (e.g. no_address_mappings).")
        .one_of(&["no_unknown_recipient_checks", "no_address_mappings", "no_header_body_checks", "no_milters"]),
    p("header_checks", Maps, "", "Pattern tables applied to each message header."),
    p("mime_header_checks", Maps, "$header_checks", "Pattern tables applied to MIME headers."),
    p("nested_header_checks", Maps, "$header_checks", "Pattern tables applied to headers of attached messages."),
    p("body_checks", Maps, "", "Pattern tables applied to each body line."),
    p("body_checks_size_limit", Size, "51200", "How much of each body part body_checks inspect, in bytes."),
    // --- Milters (MILTER_README) -------------------------------------------------------
    p("smtpd_milters", List, "", "Mail filters (milters) for mail that smtpd receives: inet:host:port or unix:/path, optionally as { name, connect_timeout=, command_timeout=, content_timeout=, default_action=, protocol= }."),
    p("non_smtpd_milters", List, "", "Mail filters for mail submitted with sendmail (pickup): the SMTP events are emulated from localhost."),
    p("smtpd_milter_maps", Maps, "", "Lookup tables with a milter list per SMTP client address, overriding smtpd_milters; DISABLE turns milters off for that client."),
    p("milter_protocol", Text, "6", "Milter protocol version (2, 3, 4 or 6) and optional extensions (no_header_reply)."),
    p("milter_default_action", Text, "tempfail", "What happens when a milter is unavailable: accept, reject, tempfail or quarantine.")
        .one_of(&["accept", "reject", "tempfail", "quarantine"]),
    p("milter_connect_timeout", Time('s'), "30s", "How long to wait for a connection to a milter."),
    p("milter_command_timeout", Time('s'), "30s", "How long to wait for a milter's answer to an SMTP event."),
    p("milter_content_timeout", Time('s'), "300s", "How long to wait for a milter's answer while sending it the message content."),
    p("milter_connect_macros", Text, "j {daemon_name} {daemon_addr} v _", "Macros sent to milters with the connection."),
    p("milter_helo_macros", Text, "{tls_version} {cipher} {cipher_bits} {cert_subject} {cert_issuer}", "Macros sent to milters with HELO/EHLO."),
    p("milter_mail_macros", Text, "i {auth_type} {auth_authen} {auth_author} {mail_addr} {mail_host} {mail_mailer}", "Macros sent to milters with MAIL FROM."),
    p("milter_rcpt_macros", Text, "i {rcpt_addr} {rcpt_host} {rcpt_mailer}", "Macros sent to milters with RCPT TO."),
    p("milter_data_macros", Text, "i", "Macros sent to milters with DATA."),
    p("milter_end_of_header_macros", Text, "i", "Macros sent to milters with the headers and their end."),
    p("milter_end_of_data_macros", Text, "i", "Macros sent to milters with the body and the end of the message."),
    p("milter_unknown_command_macros", Text, "", "Macros sent to milters with an unknown SMTP command."),
    p("milter_macro_daemon_name", Text, "$myhostname", "The {daemon_name} macro value."),
    p("milter_macro_v", Text, "$mail_name $mail_version", "The {v} macro value.")
        .differs("the same expression; mail_name and mail_version are corepost's"),
    p("milter_macro_defaults", Text, "", "name=value pairs: macro values used when the session has none."),
    // --- Notifications ------------------------------------------------------------------
    p("notify_classes", List, "resource, software", "Problems reported to the postmaster: bounce, 2bounce, data, delay, policy, protocol, resource, software.")
        .one_of(&["bounce", "2bounce", "data", "delay", "policy", "protocol", "resource", "software"]),
    p("bounce_notice_recipient", Text, "postmaster", "Who gets the postmaster copy of a bounce."),
    p("2bounce_notice_recipient", Text, "postmaster", "Who gets undeliverable bounces."),
    p("delay_notice_recipient", Text, "postmaster", "Who gets the postmaster copy of delay warnings."),
    p("bounce_size_limit", Size, "50000", "How much of the original message a bounce returns, in bytes."),
    p("double_bounce_sender", Text, "double-bounce", "Sender of notices to the postmaster; mail to it is discarded."),
    p("empty_address_recipient", Text, "MAILER-DAEMON", "Where mail to the null address goes."),
    // --- Logging and commands -------------------------------------------------------------
    p("maillog_file", Text, "", "File that log lines go to; /dev/stdout also works. Empty: see corepost_log_destination.")
        .differs("empty means syslog, as in Postfix, only for a detached daemon (standard error /dev/null or closed) or with corepost_log_destination = syslog; a foreground `corepost run` writes standard error, and under systemd journald"),
    p("maillog_file_prefixes", List, "/var, /dev/stdout", "Allowed prefixes of maillog_file, a guard against writing logs over arbitrary files."),
    p("syslog_name", Text, "${multi_instance_name?{$multi_instance_name}:{corepost}}", "Program name that log lines are tagged with.")
        .differs("log lines name corepost"),
    p("syslog_facility", Text, "mail", "Syslog facility of the log lines when they go to syslog or journald (see corepost_log_destination).")
        .one_of(SYSLOG_FACILITIES),
    p("maillog_file_rotate_suffix", Text, "%Y%m%d-%H%M%S", "strftime(3) format of the suffix `corepost logrotate` appends to the rotated maillog_file."),
    p("maillog_file_compressor", Text, "gzip", "Command `corepost logrotate` runs on the rotated maillog_file."),
    p("corepost_log_destination", Text, "auto", "Where log lines go when maillog_file is empty: auto (journald when standard error is systemd's journal stream, syslog when standard error is /dev/null or closed as for a detached daemon, else standard error), stderr, syslog (RFC 3164 datagrams to /dev/log) or journal (journald's native protocol).")
        .one_of(&["auto", "stderr", "syslog", "journal"])
        .corepost(),
    p("corepost_log_format", Text, "postfix", "Format of the lines written to maillog_file or standard error: postfix (Postfix's text lines) or json (one JSON object per line: time, host, program, pid, severity, queue_id, message).")
        .one_of(&["postfix", "json"])
        .corepost(),
    p("corepost_event_log_file", Text, "", "File that structured events (reception, delivery, deferral, bounce, expiry, rejection, TLS, admin) are appended to, one JSON object per line; empty: none. Its path must start with one of maillog_file_prefixes.")
        .corepost(),
    p("corepost_event_hooks", List, "", "Where structured events are also sent, batched, as JSON lines: unix:/path (stream socket), tcp:host:port, http://host:port/path (POST, application/x-ndjson). A hook that is down keeps up to corepost_event_hook_buffer events, then drops new ones with a logged count; mail never waits for a hook.")
        .corepost(),
    p("corepost_bounce_class_rules", Text, "", "File of bounce classification rules (class code-pattern [regex], one a line) tried before the built-in contrib/bounce-classes.conf; each deferred, bounced or expired recipient's class is in its JSON event, JSON log line and corepost_delivery_failures_total. Empty: the built-in rules only.")
        .corepost(),
    p("corepost_event_hook_buffer", Int, "10000", "Events kept per event hook while it cannot take them; beyond that new events are dropped and counted in a warning.")
        .corepost(),
    p("sendmail_path", Text, "/usr/sbin/sendmail", "Path of the sendmail command."),
    p("mailq_path", Text, "/usr/bin/mailq", "Path of the mailq command."),
    p("newaliases_path", Text, "/usr/bin/newaliases", "Path of the newaliases command."),
    p("authorized_mailq_users", List, "static:anyone", "Users allowed to list the queue (mailq, corepost queue list) through the daemon's public socket; root and mail_owner always are."),
    p("authorized_flush_users", List, "static:anyone", "Users allowed to flush the queue (sendmail -q, corepost queue flush) through the daemon's public socket; root and mail_owner always are."),
    p("authorized_submit_users", List, "static:anyone", "Users allowed to submit mail with sendmail (its real uid's login name, or unknown; root too); an empty list allows nobody. Checked by sendmail and again by pickup against the owner of each maildrop file, which a refused file is set aside as corrupt."),
    p("local_login_sender_maps", List, "static:*", "Tables searched by the submitter's login name (uid:N when it has none) for the envelope senders it may use with sendmail: * any, <> the null sender, @domain any address in it, or one address (case and address extension ignored); no entry refuses. Checked by sendmail and again by pickup, which sets a refused file aside as corrupt."),
    p("empty_address_local_login_sender_maps_lookup_key", Text, "<>", "The local_login_sender_maps pattern that allows the null sender."),
    p("manpage_directory", Text, "/usr/share/man", "Where `corepost install` puts the manual pages (man8/corepost*.8)."),
    // --- corepost's own -----------------------------------------------------------------
    c("corepost_cores", Int, host::cores, "Number of per-core executors (threads pinned to CPUs), each with its own connections and spool; the default is one per available CPU.")
        .corepost(),
    p("corepost_segment_size", Size, "67108864", "Size of each preallocated spool segment file in bytes; a message larger than this gets a segment of its own.")
        .corepost(),
    p("corepost_fsync_policy", Text, "always", "When acknowledged mail reaches the disk: always (a 250 means on disk; group commit), interval=<ms> (flush every ms milliseconds; a crash may lose that much), never (benchmarks only; a crash loses mail).")
        .corepost(),
    p("corepost_commit_delay", Int, "500", "With corepost_fsync_policy = always: microseconds (0 to 1000000) a core waits before a group commit while other SMTP sessions are open on it, so their messages share the sync, as PostgreSQL's commit_delay; under load fewer syncs per message for at most this much more latency before a 250. 0: sync at once.")
        .corepost(),
    p("corepost_control_socket", Text, "$queue_directory/control", "Unix socket the administrative commands (queue, stop, reload, status) talk to the daemon through.")
        .corepost(),
    p("corepost_dns_servers", List, "", "Name servers (address or address:port) for mail lookups; empty means those in /etc/resolv.conf. Tests point this at a server on loopback.")
        .corepost(),
    p("corepost_hosts_file", Text, "/etc/hosts", "Hosts file smtpd's client name lookup reads before DNS, as the system resolver does with nsswitch.conf's \"hosts: files dns\" (Postfix's smtpd uses the system resolver); empty: DNS only. Read at start and reload. Tests point this at their own file.")
        .corepost(),
    p("corepost_core_backlog_limit", Int, "500000", "Queued messages per core above which smtpd slows new mail down by in_flow_delay and then answers 451 4.3.1, keeping memory and disk bounded when delivery falls behind.")
        .corepost(),
    p("corepost_destination_policy_maps", Maps, "", "Per-destination delivery policy, looked up by next hop (e.g. gmail.com, [10.0.0.1]:25), then transport:nexthop, then the parent domains' .domain forms: space-separated settings concurrency=N (connections), rate=N/s|m|h (messages), connection_rate=N/s|m|h (new connections). What Postfix lacks and ESPs ask for. The limits are per node unless corepost_shared_throttle_redis shares them across nodes.")
        .corepost(),
    p("corepost_shaping_files", List, "", "Traffic-shaping tables, merged in order (a later one overrides an earlier one per provider and per domain): file paths, or builtin for the table shipped with corepost (contrib/shaping.conf: Google, Microsoft, Yahoo/AOL, ...). Destinations whose MX hosts belong to one provider share its connection limit, messages per connection, message and connection rates and backoff times, and the provider's rules react to throttling replies (throttle, suspend, bounce for a period). Empty: no shaping, delivery as in Postfix.")
        .corepost(),
    p("corepost_egress_pools", Text, "", "File of egress sources and pools: lines 'source NAME ADDRESS [address6=IPv6] [helo=NAME] [concurrency=N] [rate=N/s|m|h] [warmup_start=YYYY-MM-DD] [warmup_daily=N] [warmup_growth=F]' and 'pool NAME SOURCE[:WEIGHT] ...'. Each SMTP connection of a transport or sender with a pool binds to one member source chosen by weight, and greets with its HELO name. Empty: no pools (smtp_bind_address alone, as Postfix).")
        .corepost(),
    p("corepost_egress_pool", Text, "", "The egress pool (of corepost_egress_pools) an smtp transport's connections come from, usually set per transport with master.cf -o; empty: smtp_bind_address and smtp_helo_name as in Postfix.")
        .corepost(),
    p("corepost_sender_egress_pool_maps", Maps, "", "Tables mapping a sender (user+ext@domain, user@domain, @domain; <> for the null sender) to the egress pool its mail to smtp transports leaves from, overriding the transport's corepost_egress_pool; a pool name not in corepost_egress_pools defers the mail (4.3.5).")
        .corepost(),
    p("corepost_shared_throttle_redis", Text, "", "Redis server (redis://host:port[/db]) through which several corepost nodes share the rate= and connection_rate= pacing and the concurrency= connection count of corepost_destination_policy_maps, so the limits hold for the cluster as a whole instead of per node; empty means every node enforces them alone. Rates are paced by a Lua script (GCRA: one reserved slot per message or connection, on Redis's clock); connections are leases that expire after corepost_shared_throttle_lease_time unless renewed, so a crashed node's connections are freed. When Redis does not answer within corepost_shared_throttle_timeout_ms a node falls back to its share of each limit (the limit divided by corepost_cluster_node_count; a concurrency share is at least 1), logs that once and again once Redis answers.")
        .corepost(),
    p("corepost_cluster_node_count", Int, "1", "How many corepost nodes share corepost_shared_throttle_redis: while Redis is unreachable each node paces at rate / N and opens at most concurrency / N connections (at least one) per destination, so the nodes together stay within the limit.")
        .corepost(),
    p("corepost_shared_throttle_timeout_ms", Int, "200", "Milliseconds a delivery waits for Redis's answer (a slot or a connection lease) before it uses the node's fallback share; delivery never waits longer on Redis.")
        .corepost(),
    p("corepost_shared_throttle_lease_time", Time('s'), "30s", "Lifetime of a connection lease in Redis; an open connection renews its lease every third of this, so a crashed node's connections stop counting after at most this long.")
        .corepost(),
    p("corepost_shared_throttle_key_prefix", Text, "corepost", "Prefix of the Redis keys (prefix:rate:transport:nexthop, prefix:connect:..., prefix:conns:...), so several clusters can share one Redis.")
        .corepost(),
    p("corepost_shared_smtpd_client_limits", Bool, "no", "With corepost_shared_throttle_redis: count smtpd_client_message_rate_limit, smtpd_client_recipient_rate_limit and smtpd_client_auth_rate_limit for all nodes together in Redis (per service and client, in windows of anvil_rate_time_unit from the client's first such event) instead of per node, so a client spread over the nodes by a load balancer meets the limit once. When Redis does not answer, a node compares its own count with the limit divided by corepost_cluster_node_count. The connection count and rate limits stay per node.")
        .corepost(),
    p("corepost_local_user_maps", Maps, "unix:passwd.byname", "Where the local agent finds users: tables mapping a user name to a passwd(5) line (name:x:uid:gid:gecos:home:shell); another table serves users without system accounts (containers, tests).")
        .corepost(),
    p("corepost_sasl_password_file", Text, "$config_directory/sasl_users", "Password file of smtpd_sasl_type = corepost: lines of user:hash (argon2 or SHA-512-crypt), managed with corepost passwd; re-read when it changes.")
        .corepost(),
    p("corepost_smtpd_sasl_failure_limit", Int, "3", "Failed AUTH attempts after which smtpd disconnects the client (421 4.7.0); 0 means only smtpd_hard_error_limit applies.")
        .corepost(),
    p("corepost_metrics_address", Text, "", "Where the HTTP endpoint serving /metrics in the Prometheus text format listens: host:port, the host an IPv4 address, a bracketed IPv6 address ([::1]:9154) or localhost; 0.0.0.0 or [::] listens on every interface. Empty (the default) turns metrics off. Read at start; the metrics are described in METRICS.md.")
        .corepost(),
    p("corepost_smtp_mta_sts", Bool, "no", "MTA-STS (RFC 8461) in the SMTP client: for mail to a domain through its MX hosts, look up the _mta-sts TXT record, fetch and cache the HTTPS policy (trusted by smtp_tls_CAfile/CApath, else the system's store); mode enforce requires an MX host matching the policy and a verified TLS session (else 4.7.5 deferral), testing only logs what would fail. DANE and stronger smtp_tls_policy_maps entries take precedence. Postfix needs an external policy server for this.")
        .corepost(),
    p("corepost_smtp_mta_sts_https_port", Int, "443", "TCP port of MTA-STS policy fetches (https://mta-sts.<domain>/.well-known/mta-sts.txt); RFC 8461 says 443, other values are for test setups.")
        .corepost(),
    // --- DKIM signing (OpenDKIM's KeyTable/SigningTable model) -------------
    p("corepost_dkim_signing_table", Text, "", "DKIM signing (OpenDKIM's SigningTable): which key signs mail by its From: address. refile:/path holds `pattern keyname [signer]` lines (`*` wildcards, file order); file:/path, a bare path or any lookup table (hash:, texthash:, inline:, ...) is asked user@host, host, user@.parent, .parent, user@*, * in turn. A key name of % is the From: domain; % in the signer (i=) too. Mail is signed once, at reception, from corepost_dkim_internal_hosts, SASL-authenticated clients and local submission; empty turns signing off. Output rewriting (smtp_generic_maps), the 8BITMIME downgrade and smtp_line_length_limit folding break signatures as they do OpenDKIM's.")
        .corepost(),
    p("corepost_dkim_key_table", Text, "", "DKIM keys (OpenDKIM's KeyTable): file:/path, refile:/path or /path with lines `keyname domain:selector:keyfile` (domain % = the From: domain; keyfile a PEM file of an RSA 2048-4096 bit or Ed25519 key, or the key itself). Every key is loaded at start and reload and must be readable by mail_owner.")
        .corepost(),
    p("corepost_dkim_canonicalization", Text, "relaxed/relaxed", "DKIM canonicalization as header/body, each simple or relaxed (OpenDKIM's Canonicalization; one word means header/simple).")
        .corepost(),
    p("corepost_dkim_signed_headers", List, "from, reply-to, subject, date, to, cc, resent-date, resent-from, resent-sender, resent-to, resent-cc, in-reply-to, references, list-id, list-help, list-unsubscribe, list-subscribe, list-post, list-owner, list-archive", "Header fields a DKIM signature covers, each instance present (OpenDKIM's SignHeaders default, RFC 6376 section 5.4.1); From is always signed.")
        .corepost(),
    p("corepost_dkim_oversign_headers", List, "from", "Header fields listed once more in h= than present, so none can be added after signing (OpenDKIM's OversignHeaders, as Debian's opendkim.conf sets it).")
        .corepost(),
    p("corepost_dkim_internal_hosts", Text, "$mynetworks", "Clients whose mail is DKIM-signed (OpenDKIM's InternalHosts), in mynetworks syntax; SASL-authenticated clients and local submission are signed too.")
        .corepost(),
];

/// Per-transport forms of the scheduling parameters (see
/// [`crate::registry::Registry::with_transports`]).
pub static PER_TRANSPORT: &[TransportParamDef] = &[
    t(
        "destination_concurrency_limit",
        Int,
        "default_destination_concurrency_limit",
        "Most parallel deliveries to one destination",
    ),
    t(
        "initial_destination_concurrency",
        Int,
        "initial_destination_concurrency",
        "Initial parallel deliveries to one destination",
    ),
    t(
        "destination_recipient_limit",
        Int,
        "default_destination_recipient_limit",
        "Most recipients per delivery",
    ),
    t(
        "destination_rate_delay",
        Time('s'),
        "default_destination_rate_delay",
        "Pause between deliveries to one destination",
    ),
    t(
        "destination_concurrency_failed_cohort_limit",
        Int,
        "default_destination_concurrency_failed_cohort_limit",
        "Failed connections in a row before a destination is dead",
    ),
    t(
        "destination_concurrency_positive_feedback",
        Text,
        "default_destination_concurrency_positive_feedback",
        "Concurrency gained per success",
    ),
    t(
        "destination_concurrency_negative_feedback",
        Text,
        "default_destination_concurrency_negative_feedback",
        "Concurrency lost per failure",
    ),
    TransportParamDef {
        suffix: "time_limit",
        kind: Time('s'),
        fallback: "command_time_limit",
        only_commands: &["pipe", "spawn"],
        doc: "How long one command may run",
    },
];

const fn t(
    suffix: &'static str,
    kind: Kind,
    fallback: &'static str,
    doc: &'static str,
) -> TransportParamDef {
    TransportParamDef {
        suffix,
        kind,
        fallback,
        only_commands: &[],
        doc,
    }
}
