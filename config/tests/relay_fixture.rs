//! Effective values per service for a realistic relay configuration
//! (tests/fixtures/relay): built-in default → main.cf → `-o` override.

use corepost_config::Config;
use corepost_config::tables::TableList;
use std::path::PathBuf;
use std::time::Duration;

fn relay() -> Config {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/relay");
    Config::load(&dir).expect("fixture loads")
}

#[test]
fn global_values() {
    let c = relay();
    assert_eq!(c.get("myorigin").unwrap(), "example.net");
    assert_eq!(
        c.get("mydestination").unwrap(),
        "relay1.example.net, localhost.example.net, localhost"
    );
    assert_eq!(
        c.get_list("mynetworks").unwrap(),
        vec!["127.0.0.0/8", "[::1]/128", "192.0.2.0/24"]
    );
    assert_eq!(c.get_size("message_size_limit").unwrap(), 52_428_800);
    assert_eq!(
        c.get_time("maximal_queue_lifetime").unwrap(),
        Duration::from_secs(2 * 86400)
    );
    // Untouched parameters keep Postfix's defaults.
    assert_eq!(
        c.get_time("smtpd_timeout").unwrap(),
        Duration::from_secs(300)
    );
    assert_eq!(c.get_int("smtpd_recipient_limit").unwrap(), 1000);
    assert!(c.get_bool("smtpd_delay_reject").unwrap());
    assert_eq!(c.get("smtpd_banner").unwrap(), "relay1.example.net ESMTP");
}

#[test]
fn per_service_overrides() {
    let c = relay();
    let smtp = c.service("smtp/inet").unwrap();
    let submission = c.service("submission").unwrap();
    let reinject = c.service("127.0.0.1:10026").unwrap();

    assert_eq!(smtp.get("smtpd_tls_security_level").unwrap(), "");
    assert_eq!(
        submission.get("smtpd_tls_security_level").unwrap(),
        "encrypt"
    );
    assert!(!smtp.get_bool("smtpd_sasl_auth_enable").unwrap());
    assert!(submission.get_bool("smtpd_sasl_auth_enable").unwrap());
    // -o value referring to a user-defined main.cf parameter.
    assert_eq!(
        submission.get("smtpd_client_restrictions").unwrap(),
        "permit_sasl_authenticated, reject"
    );
    assert_eq!(
        submission.get("smtpd_recipient_restrictions").unwrap(),
        "permit_sasl_authenticated, reject"
    );
    assert!(
        smtp.get("smtpd_recipient_restrictions")
            .unwrap()
            .contains("check_client_access cidr:")
    );
    assert_eq!(submission.get("message_size_limit").unwrap(), "10240000");
    assert_eq!(smtp.get("message_size_limit").unwrap(), "52428800");
    assert_eq!(
        submission.get("syslog_name").unwrap(),
        "corepost/submission"
    );
    assert_eq!(smtp.get("syslog_name").unwrap(), "corepost");

    // The content filter is off on the re-injection port, on elsewhere.
    assert_eq!(
        smtp.get("content_filter").unwrap(),
        "scan:[127.0.0.1]:10025"
    );
    assert_eq!(reinject.get("content_filter").unwrap(), "");
    assert_eq!(
        reinject.get_list("mynetworks").unwrap(),
        vec!["127.0.0.0/8"]
    );
    assert_eq!(
        reinject.get_list("receive_override_options").unwrap(),
        vec!["no_unknown_recipient_checks", "no_header_body_checks"]
    );

    // An -o override that refers to $mydomain.
    assert_eq!(
        c.service("relay/unix")
            .unwrap()
            .get("smtp_helo_name")
            .unwrap(),
        "out.example.net"
    );
    assert_eq!(
        c.service("smtp/unix")
            .unwrap()
            .get("smtp_helo_name")
            .unwrap(),
        "relay1.example.net"
    );
}

#[test]
fn per_transport_scheduling_parameters() {
    let c = relay();
    assert_eq!(
        c.get_int("relay_destination_concurrency_limit").unwrap(),
        40
    );
    assert_eq!(c.get_int("smtp_destination_concurrency_limit").unwrap(), 20);
    assert_eq!(c.get_int("scan_destination_recipient_limit").unwrap(), 50);
    assert_eq!(c.get_int("local_destination_recipient_limit").unwrap(), 1);
    assert_eq!(
        c.get_time("maildrop_time_limit").unwrap(),
        Duration::from_secs(1000)
    );
}

#[test]
fn pipe_arguments_keep_delivery_macros() {
    let c = relay();
    let pipe = c.service("maildrop").unwrap().service;
    assert_eq!(pipe.command, "pipe");
    assert_eq!(
        pipe.args,
        vec![
            "flags=DRhu",
            "user=vmail",
            "argv=/usr/bin/maildrop",
            "-f",
            "${sender}",
            "-d",
            "${recipient}"
        ]
    );
    assert!(!pipe.unprivileged);
}

#[test]
fn referenced_tables_open_and_answer() {
    let c = relay();
    let transport = TableList::open(&c.get("transport_maps").unwrap()).unwrap();
    assert_eq!(
        transport.lookup("example.org").unwrap().as_deref(),
        Some("relay:[10.0.0.5]:25")
    );
    assert_eq!(
        transport.lookup("LISTS.example.net").unwrap().as_deref(),
        Some("maildrop:")
    );
    let checks = TableList::open(&c.get("header_checks").unwrap()).unwrap();
    assert_eq!(
        checks.lookup("X-Mailer: mutt 2.0").unwrap().as_deref(),
        Some("WARN mailer mutt 2.0")
    );
    assert!(corepost_config::check::check(&c).is_ok());
}

#[test]
fn warnings_name_unused_and_unsupported_parameters() {
    let c = relay();
    // A Postfix parameter corepost knows it lacks is "not supported", not
    // "unused".
    assert_eq!(c.warnings(), Vec::<String>::new());
    let warnings = corepost_config::check::check(&c).warnings;
    assert!(
        warnings.iter().any(|w| w.contains(
            "master.cf, line 18: service scan/unix: parameter smtp_send_xforward_command is not supported by corepost: the SMTP client has no such setting"
        )),
        "{warnings:?}"
    );
    // mua_client_restrictions is user-defined but used through -o.
    assert!(
        !warnings
            .iter()
            .any(|w| w.contains("mua_client_restrictions"))
    );
}
