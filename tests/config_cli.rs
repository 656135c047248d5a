//! `corepost config` and `corepost check`, run as a user would run them.

mod support;

use std::fs;
use std::path::Path;
use support::*;

/// A copy of the relay fixture in a temporary directory (so tests may edit
/// it), with `config_directory`-relative tables.
fn relay_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for entry in fs::read_dir(fixtures().join("relay")).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), dir.path().join(entry.file_name())).unwrap();
    }
    dir
}

fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut full = vec!["config", "-c", dir.to_str().unwrap()];
    full.extend_from_slice(args);
    corepost(&full)
}

#[test]
fn non_default_listing_shows_main_cf_settings_sorted() {
    let dir = relay_copy();
    let out = run_in(dir.path(), &["-n"]);
    assert!(out.status.success());
    let listing = parse_listing(&stdout(&out));
    let names: Vec<&str> = listing.iter().map(|(n, _)| n.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert!(listing.contains(&(
        "mynetworks".into(),
        "127.0.0.0/8, [::1]/128, 192.0.2.0/24".into()
    )));
    assert!(listing.contains(&("myorigin".into(), "$mydomain".into())));
    // Defaults are not listed; the used user-defined parameter is.
    assert!(!names.contains(&"smtpd_timeout"));
    assert!(names.contains(&"mua_client_restrictions"));
    // The -o parameter corepost lacks is warned about on stderr.
    assert!(stderr(&out).contains(
        "service scan/unix: parameter smtp_send_xforward_command is not supported by corepost"
    ));
}

#[test]
fn named_expanded_and_value_only() {
    let dir = relay_copy();
    let out = run_in(
        dir.path(),
        &["-x", "myorigin", "mydestination", "smtpd_timeout"],
    );
    assert_eq!(
        stdout(&out),
        "myorigin = example.net\nmydestination = relay1.example.net, localhost.example.net, localhost\nsmtpd_timeout = 300s\n"
    );
    let out = run_in(dir.path(), &["-h", "myorigin"]);
    assert_eq!(stdout(&out), "$mydomain\n");
    let out = run_in(dir.path(), &["-hx", "myorigin"]);
    assert_eq!(stdout(&out), "example.net\n");
}

#[test]
fn defaults_ignore_main_cf() {
    let dir = relay_copy();
    let out = run_in(
        dir.path(),
        &[
            "-d",
            "message_size_limit",
            "myorigin",
            "relay_destination_concurrency_limit",
        ],
    );
    assert_eq!(
        stdout(&out),
        "message_size_limit = 10240000\nmyorigin = $myhostname\nrelay_destination_concurrency_limit = $default_destination_concurrency_limit\n"
    );
}

#[test]
fn full_listing_has_every_parameter() {
    let dir = relay_copy();
    let out = run_in(dir.path(), &[]);
    let listing = parse_listing(&stdout(&out));
    assert!(listing.len() > 280, "{}", listing.len());
    assert!(listing.contains(&("message_size_limit".into(), "52428800".into())));
    assert!(listing.contains(&("corepost_fsync_policy".into(), "always".into())));
    assert!(listing.iter().any(|(n, _)| n == "maildrop_time_limit"));
}

#[test]
fn unknown_parameter_is_a_warning() {
    let dir = relay_copy();
    let out = run_in(dir.path(), &["no_such_parameter", "myhostname"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "myhostname = relay1.example.net\n");
    assert!(stderr(&out).contains("corepost: warning: no_such_parameter: unknown parameter"));
}

#[test]
fn edit_keeps_comments_and_order() {
    let dir = relay_copy();
    let before = fs::read_to_string(dir.path().join("main.cf")).unwrap();
    let out = run_in(
        dir.path(),
        &[
            "-e",
            "message_size_limit = 0",
            "relayhost=[smarthost.example.net]:587",
            "smtpd_helo_required = yes",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = fs::read_to_string(dir.path().join("main.cf")).unwrap();
    // Comments survive and the edited line stays where it was.
    for line in before.lines().filter(|l| l.starts_with('#')) {
        assert!(after.contains(line), "lost comment {line:?}");
    }
    let pos = |text: &str, needle: &str| text.find(needle).unwrap();
    assert!(pos(&after, "message_size_limit = 0") < pos(&after, "maximal_queue_lifetime"));
    assert!(after.ends_with("smtpd_helo_required = yes\n"));
    let out = run_in(
        dir.path(),
        &[
            "-x",
            "relayhost",
            "message_size_limit",
            "smtpd_helo_required",
        ],
    );
    assert_eq!(
        stdout(&out),
        "relayhost = [smarthost.example.net]:587\nmessage_size_limit = 0\nsmtpd_helo_required = yes\n"
    );
    // -X removes, including a definition with continuation lines.
    let out = run_in(dir.path(), &["-X", "smtpd_recipient_restrictions"]);
    assert!(out.status.success());
    let removed = fs::read_to_string(dir.path().join("main.cf")).unwrap();
    assert!(!removed.contains("check_recipient_access"));
    assert!(!removed.contains("reject_unauth_destination"));
    assert!(removed.contains("# Restrictions for mail from the Internet on port 25."));
}

#[test]
fn edit_creates_main_cf() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["-e", "myhostname = new.example.com"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        fs::read_to_string(dir.path().join("main.cf")).unwrap(),
        "myhostname = new.example.com\n"
    );
    let out = run_in(dir.path(), &["-e", "not an assignment"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("missing '='"));
}

#[test]
fn master_entries() {
    let dir = relay_copy();
    let out = run_in(dir.path(), &["-M", "submission/inet", "maildrop"]);
    assert!(out.status.success());
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[0].starts_with("submission inet  n       -       n       -       -       smtpd"));
    assert!(lines[0].contains("-o smtpd_tls_security_level=encrypt"));
    assert!(
        lines[0]
            .contains("-o { smtpd_recipient_restrictions = permit_sasl_authenticated, reject }")
    );
    assert!(lines[1].ends_with(
        "pipe flags=DRhu user=vmail argv=/usr/bin/maildrop -f ${sender} -d ${recipient}"
    ));
    let out = run_in(dir.path(), &["-M", "nosuch"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such service: nosuch"));
}

#[test]
fn builtin_defaults_without_any_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(dir.path(), &["-n"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), "");
    let out = run_in(dir.path(), &["-M"]);
    assert!(stdout(&out).starts_with("2525       inet"));
    let out = run_in(
        dir.path(),
        &["-x", "inet_interfaces", "smtpd_relay_restrictions"],
    );
    assert_eq!(
        stdout(&out),
        "inet_interfaces = loopback-only\nsmtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination\n"
    );
    // check and run, like Postfix, want main.cf in a directory they are
    // given; only the built-in /etc/corepost may lack it.
    let out = corepost(&["check", "-c", dir.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        format!(
            "corepost: fatal: open {}/main.cf: No such file or directory\n",
            dir.path().display()
        )
    );
}

#[test]
fn a_named_configuration_directory_must_exist() {
    for command in ["check", "run", "config", "status", "reload"] {
        let out = corepost(&[command, "-c", "/nonexistent"]);
        assert_eq!(out.status.code(), Some(1), "{command}");
        assert_eq!(
            stderr(&out),
            "corepost: fatal: open /nonexistent/main.cf: No such file or directory\n",
            "{command}"
        );
    }
}

#[test]
fn unsupported_parameters_and_bad_values_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    fs::write(
        dir.path().join("main.cf"),
        "myhostname = mx.example.com\nsmtpd_tls_ask_ccert = no\nbiff = no\ndefer_transports = smtp\nsmtpd_tls_security_level = sometimes\nno_such_thing = 1\n",
    )
    .unwrap();
    fs::write(
        dir.path().join("master.cf"),
        "127.0.0.1:99999 inet n - n - - smtpd\n2526 inet n - n - - smtpd -o milter_header_checks=regexp:/etc/corepost/mhc\n",
    )
    .unwrap();
    let out = corepost(&["check", "-c", &d]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    for expected in [
        format!(
            "corepost: error: {d}/main.cf, line 4: parameter defer_transports is not supported by corepost: corepost would deliver mail for these transports instead of keeping it queued\n"
        ),
        format!(
            "corepost: error: {d}/main.cf, line 5: parameter smtpd_tls_security_level: bad value \"sometimes\" (expected empty or none, may, encrypt)\n"
        ),
        format!(
            "corepost: error: {d}/master.cf, line 1: service 127.0.0.1:99999/inet: bad port \"99999\""
        ),
        format!(
            "corepost: error: {d}/master.cf, line 2: service 2526/inet: parameter milter_header_checks is not supported by corepost: corepost does not run header_checks on the headers milters add"
        ),
        format!(
            "corepost: warning: {d}/main.cf, line 2: parameter smtpd_tls_ask_ccert is not supported by corepost"
        ),
        format!(
            "corepost: warning: {d}/main.cf, line 3: parameter biff is not supported by corepost: corepost does not notify the biff service\n"
        ),
        format!("corepost: warning: {d}/main.cf: unused parameter: no_such_thing=1\n"),
    ] {
        assert!(err.contains(&expected), "expected {expected:?} in:\n{err}");
    }
    assert!(!err.contains("smtpd_tls_ask_ccert is not supported by corepost: smtpd does not request or verify client certificates\n"), "{err}");
    let run = corepost(&["run", "-c", &d]);
    assert_eq!(run.status.code(), Some(1));
    assert!(
        stderr(&run).contains("bad port \"99999\""),
        "{}",
        stderr(&run)
    );
    // The listing marks them, as comment lines so it stays valid main.cf.
    let out = run_in(dir.path(), &["-n"]);
    assert!(
        stdout(&out).contains(
            "# not supported by corepost: corepost does not notify the biff service\nbiff = no\n"
        ),
        "{}",
        stdout(&out)
    );
    let out = run_in(dir.path(), &["smtp_header_checks"]);
    assert_eq!(
        stdout(&out),
        "# not supported by corepost: the SMTP client applies no content checks to outgoing mail\nsmtp_header_checks =\n"
    );
}

#[test]
fn config_dir_from_environment() {
    let dir = relay_copy();
    let out = std::process::Command::new(corepost_bin())
        .args(["config", "-h", "myhostname", "config_directory"])
        .env("COREPOST_CONFIG_DIR", dir.path())
        .output()
        .unwrap();
    assert_eq!(
        stdout(&out),
        format!("relay1.example.net\n{}\n", dir.path().display())
    );
}

#[test]
fn syntax_errors_name_file_and_line() {
    let dir = relay_copy();
    let main = dir.path().join("main.cf");
    let mut text = fs::read_to_string(&main).unwrap();
    text.push_str("this line is broken\n");
    let line = text.lines().count();
    fs::write(&main, text).unwrap();
    for args in [vec!["config", "-n"], vec!["check"]] {
        let mut full = args.clone();
        full.extend(["-c", dir.path().to_str().unwrap()]);
        let out = corepost(&full);
        assert_eq!(out.status.code(), Some(1));
        assert!(
            stderr(&out).contains(&format!(
                "corepost: fatal: {}, line {line}: missing '=' after attribute name: \"this line is broken\"",
                main.display()
            )),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn check_accepts_the_relay_fixture() {
    let dir = relay_copy();
    let out = corepost(&["check", "-c", dir.path().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The submission service asks for TLS and the fixture has no
    // certificate: a warning, as Postfix runs it without TLS.
    assert!(stdout(&out).contains("is valid (2 warnings)"));
    assert!(
        stderr(&out)
            .contains("service submission/inet: TLS is not available: no server certificate"),
        "{}",
        stderr(&out)
    );
}

/// Each broken configuration is reported with where and what.
#[test]
fn check_reports_what_is_wrong() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "main.cf",
            "maximal_queue_lifetime = 5 days\n",
            "parameter maximal_queue_lifetime: bad time value \"5 days\"",
        ),
        (
            "main.cf",
            "smtpd_helo_required = maybe\n",
            "bad boolean value \"maybe\"",
        ),
        (
            "main.cf",
            "message_size_limit = 10M\n",
            "bad size value \"10M\"",
        ),
        (
            "main.cf",
            "myorigin = $mydomain_alias\nmydomain_alias = ${myorigin}\n",
            "parameter expansion loop",
        ),
        (
            "main.cf",
            "smtpd_sender_restrictions = reject_unknwon_sender_domain\n",
            "unknown restriction \"reject_unknwon_sender_domain\"",
        ),
        (
            "main.cf",
            "smtpd_client_restrictions = check_client_access\n",
            "needs an argument",
        ),
        (
            "main.cf",
            "virtual_alias_maps = texthash:$config_directory/missing\n",
            "cannot read",
        ),
        (
            "main.cf",
            "transport_maps = btdb:/etc/x\n",
            "unsupported lookup table type \"btdb\"",
        ),
        (
            "client_access.cidr",
            "10.0.0.1/8 REJECT\n",
            "client_access.cidr, line 4: ",
        ),
        (
            "header_checks",
            "/(?<=x)y/ REJECT\n",
            "header_checks, line 3: ",
        ),
        (
            "main.cf",
            "smtp_tls_security_level = sometimes\n",
            "parameter smtp_tls_security_level: bad value \"sometimes\"",
        ),
        (
            "main.cf",
            "smtpd_tls_ask_ccert = yes\n",
            "parameter smtpd_tls_ask_ccert is not supported by corepost",
        ),
        (
            "master.cf",
            "127.0.0.1:70000 inet n - n - - smtpd\n",
            "service 127.0.0.1:70000/inet: bad port \"70000\"",
        ),
        (
            "master.cf",
            "2587 inet n - n - - smtpd -o smtpd_recipient_limit=lots\n",
            "service 2587/inet: parameter smtpd_recipient_limit: bad integer value",
        ),
    ];
    for (file, addition, expected) in cases {
        let dir = relay_copy();
        let path = dir.path().join(file);
        let mut text = fs::read_to_string(&path).unwrap();
        text.push_str(addition);
        fs::write(&path, text).unwrap();
        let out = corepost(&["check", "-c", dir.path().to_str().unwrap()]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{file} + {addition:?} passed: {err}"
        );
        assert!(
            err.contains(expected),
            "{file} + {addition:?}: expected {expected:?} in:\n{err}"
        );
    }
}

#[test]
fn check_warns_about_a_content_filter_without_its_transport() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    fs::write(
        dir.path().join("main.cf"),
        format!(
            "queue_directory = {}\ncontent_filter = scan:[127.0.0.1]:10025\n",
            q.display()
        ),
    )
    .unwrap();
    fs::write(
        dir.path().join("master.cf"),
        "127.0.0.1:2525 inet n - n - - smtpd\nsmtp unix - - n - - smtp\n",
    )
    .unwrap();
    let check = || corepost(&["check", "-c", dir.path().to_str().unwrap()]);
    let out = check();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("service 127.0.0.1:2525/inet: content_filter transport \"scan\" is not a unix service in master.cf; filtered mail will stay queued"),
        "{}",
        stderr(&out)
    );
    // With the filter's service defined, nothing to say.
    fs::write(
        dir.path().join("master.cf"),
        "127.0.0.1:2525 inet n - n - - smtpd\nsmtp unix - - n - - smtp\nscan unix - - n - 10 smtp\n",
    )
    .unwrap();
    let out = check();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("content_filter"), "{}", stderr(&out));
}

#[test]
fn unsupported_parameters_are_logged_at_start_and_reload() {
    let d = Daemon::start("biff = no\n");
    let log = d.log();
    assert!(
        log.contains(&format!(
            "corepost/master[{}]: warning: {}/main.cf, line 11: parameter biff is not supported by corepost: corepost does not notify the biff service",
            d.pid(),
            d.config_dir()
        )),
        "{log}"
    );
    let reload = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    assert!(
        stderr(&reload).contains("corepost: warning: ")
            && stderr(&reload).contains("parameter biff is not supported by corepost"),
        "{}",
        stderr(&reload)
    );
}

#[test]
fn check_reports_transports_master_cf_lacks_and_config_m_is_the_starting_point() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    fs::write(
        dir.path().join("main.cf"),
        format!("queue_directory = {}\n", q.display()),
    )
    .unwrap();
    let d = dir.path().to_str().unwrap();
    // No master.cf: the built-in one, which `config -M` prints.
    let builtin = corepost(&["config", "-c", d, "-M"]);
    assert!(builtin.status.success(), "{}", stderr(&builtin));
    // A master.cf with only an smtpd line replaces all of it.
    fs::write(
        dir.path().join("master.cf"),
        "127.0.0.1:2525 inet n - n - - smtpd\n",
    )
    .unwrap();
    let out = corepost(&["check", "-c", d]);
    assert!(
        out.status.success(),
        "a warning, not an error: {}",
        stderr(&out)
    );
    let master = dir.path().join("master.cf");
    for (transport, parameter) in [("smtp", "default_transport"), ("local", "local_transport")] {
        let line = format!(
            "corepost: warning: {}: transport \"{transport}\" (from parameter {parameter}) has no master.cf entry; mail routed there will be deferred",
            master.display()
        );
        assert!(stderr(&out).contains(&line), "{line}\n{}", stderr(&out));
    }
    // Starting from `corepost config -M`, nothing is missing.
    fs::write(&master, stdout(&builtin)).unwrap();
    let out = corepost(&["check", "-c", d]);
    assert!(
        !stderr(&out).contains("has no master.cf entry"),
        "{}",
        stderr(&out)
    );
    // -C is -c for check.
    let out = corepost(&["check", "-C", d]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(&format!("configuration in {d} is valid")));
}
