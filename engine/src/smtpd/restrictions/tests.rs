//! Unit tests of restriction evaluation (no network).

use super::*;
use corepost_config::Config;

pub(crate) fn policy(main_cf: &str) -> Policy {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_parts(dir.path(), Some(main_cf), None).unwrap();
    let nets = NetworkList::parse(&config.get("mynetworks").unwrap()).unwrap();
    Policy::from_params(&|n| config.get(n), nets).unwrap()
}

fn facts<'a>(addr: &str, rcpt: &'a str, class: AddressClass) -> Facts<'a> {
    let mut f = Facts::client(addr.parse().unwrap());
    f.helo = Some("client.example");
    f.sender = Some("a@example.org");
    f.recipient = Some(rcpt);
    f.recipient_class = Some(class);
    f.command = "RCPT";
    f
}

fn run(p: &Policy, list: &str, stage: Stage, f: &Facts<'_>) -> (Decision, Outcome) {
    let mut out = Outcome::default();
    let d = futures_lite::future::block_on(p.evaluate(list, stage, f, &mut out));
    (d, out)
}

fn check(p: &Policy, f: &Facts<'_>) -> (Option<String>, Outcome) {
    let mut out = Outcome::default();
    let lists = [
        ("smtpd_client_restrictions", Stage::Client),
        ("smtpd_helo_restrictions", Stage::Helo),
        ("smtpd_sender_restrictions", Stage::Sender),
        ("smtpd_relay_restrictions", Stage::Relay),
        ("smtpd_recipient_restrictions", Stage::Recipient),
    ];
    let r = futures_lite::future::block_on(p.check(&lists, f, &mut out));
    (r.map(|r| r.summary()), out)
}

fn summary(d: Decision) -> String {
    match d {
        Decision::Reject(r) => r.summary(),
        other => format!("{other:?}"),
    }
}

#[test]
fn default_relay_control() {
    let p = policy("mynetworks = 127.0.0.0/8\n");
    let outsider = facts("192.0.2.9", "x@foreign.example", AddressClass::Default);
    let (d, _) = run(&p, "smtpd_relay_restrictions", Stage::Relay, &outsider);
    assert_eq!(
        summary(d),
        "454 4.7.1 <x@foreign.example>: Relay access denied"
    );
    let insider = facts("127.0.0.1", "x@foreign.example", AddressClass::Default);
    assert_eq!(
        run(&p, "smtpd_relay_restrictions", Stage::Relay, &insider).0,
        Decision::Permit
    );
    let local = facts("192.0.2.9", "x@mx", AddressClass::Local);
    assert_eq!(
        run(&p, "smtpd_relay_restrictions", Stage::Relay, &local).0,
        Decision::Dunno
    );
    let mut routed = facts("192.0.2.9", "x%y@relay.example", AddressClass::Relay);
    routed.recipient_routed = true;
    let strict = policy(
        "mynetworks = 127.0.0.0/8\nsmtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination\n",
    );
    assert_eq!(
        summary(
            run(
                &strict,
                "smtpd_recipient_restrictions",
                Stage::Recipient,
                &outsider
            )
            .0
        ),
        "554 5.7.1 <x@foreign.example>: Relay access denied"
    );
    assert_eq!(
        summary(
            run(
                &strict,
                "smtpd_recipient_restrictions",
                Stage::Recipient,
                &routed
            )
            .0
        ),
        "554 5.7.1 <x%y@relay.example>: Relay access denied"
    );
    let relay = facts("192.0.2.9", "x@relay.example", AddressClass::Relay);
    assert_eq!(
        run(
            &strict,
            "smtpd_recipient_restrictions",
            Stage::Recipient,
            &relay
        )
        .0,
        Decision::Dunno
    );
    let trusting = policy(
        "allow_untrusted_routing = yes\nsmtpd_recipient_restrictions = permit_auth_destination, reject\n",
    );
    assert_eq!(
        run(
            &trusting,
            "smtpd_recipient_restrictions",
            Stage::Recipient,
            &routed
        )
        .0,
        Decision::Permit
    );
}

#[test]
fn generic_restrictions_and_texts() {
    let p = policy(
        "smtpd_client_restrictions = reject\nsmtpd_helo_restrictions = defer\nsmtpd_sender_restrictions = permit\nsmtpd_data_restrictions = reject\n",
    );
    let f = facts("192.0.2.9", "x@y.example", AddressClass::Default);
    assert_eq!(
        summary(run(&p, "smtpd_client_restrictions", Stage::Client, &f).0),
        "554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: Access denied"
    );
    assert_eq!(
        summary(run(&p, "smtpd_helo_restrictions", Stage::Helo, &f).0),
        "450 4.7.1 <client.example>: Helo command rejected: Try again later"
    );
    assert_eq!(
        run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0,
        Decision::Permit
    );
    assert_eq!(
        summary(run(&p, "smtpd_data_restrictions", Stage::Data, &f).0),
        "554 5.7.1 <DATA>: Data command rejected: Access denied"
    );
    let eod = policy("smtpd_end_of_data_restrictions = reject\n");
    assert_eq!(
        summary(run(&eod, "smtpd_end_of_data_restrictions", Stage::EndOfData, &f).0),
        "554 5.7.1 <END-OF-MESSAGE>: End-of-data rejected: Access denied"
    );
    let codes = policy(
        "reject_code = 550\ndefer_code = 451\nsmtpd_client_restrictions = reject\nsmtpd_helo_restrictions = defer\n",
    );
    assert!(
        summary(run(&codes, "smtpd_client_restrictions", Stage::Client, &f).0)
            .starts_with("550 5.7.1 ")
    );
    assert!(
        summary(run(&codes, "smtpd_helo_restrictions", Stage::Helo, &f).0)
            .starts_with("451 4.7.1 ")
    );
}

#[test]
fn syntax_restrictions() {
    let p = policy(
        "smtpd_helo_restrictions = reject_invalid_helo_hostname, reject_non_fqdn_helo_hostname\nsmtpd_sender_restrictions = reject_non_fqdn_sender\nsmtpd_recipient_restrictions = reject_non_fqdn_recipient\n",
    );
    let mut f = facts("192.0.2.9", "x@y.example", AddressClass::Default);
    for (helo, want) in [
        ("client.example", "Dunno"),
        ("[192.0.2.1]", "Dunno"),
        (
            "localhost",
            "504 5.5.2 <localhost>: Helo command rejected: need fully-qualified hostname",
        ),
        (
            "bad_name!",
            "501 5.5.2 <bad_name!>: Helo command rejected: Invalid name",
        ),
        (
            "[300.1.1.1]",
            "501 5.5.2 <[300.1.1.1]>: Helo command rejected: Invalid name",
        ),
    ] {
        f.helo = Some(helo);
        assert_eq!(
            summary(run(&p, "smtpd_helo_restrictions", Stage::Helo, &f).0),
            want,
            "{helo}"
        );
    }
    for (sender, want) in [
        ("a@example.org", "Dunno"),
        ("", "Dunno"),
        (
            "a@localhost",
            "504 5.5.2 <a@localhost>: Sender address rejected: need fully-qualified address",
        ),
    ] {
        f.sender = Some(sender);
        assert_eq!(
            summary(run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0),
            want
        );
    }
    f.recipient = Some("x@mx");
    assert_eq!(
        summary(run(&p, "smtpd_recipient_restrictions", Stage::Recipient, &f).0),
        "504 5.5.2 <x@mx>: Recipient address rejected: need fully-qualified address"
    );
    f.recipient = Some("x@[192.0.2.1]");
    assert_eq!(
        run(&p, "smtpd_recipient_restrictions", Stage::Recipient, &f).0,
        Decision::Dunno
    );
}

#[test]
fn unknown_client_and_pipelining() {
    let p = policy(
        "smtpd_client_restrictions = reject_unknown_reverse_client_hostname, reject_unknown_client_hostname\nsmtpd_data_restrictions = reject_unauth_pipelining\nsmtpd_sender_restrictions = reject_unauth_pipelining\n",
    );
    let mut f = facts("192.0.2.9", "x@y.example", AddressClass::Default);
    assert_eq!(
        summary(run(&p, "smtpd_client_restrictions", Stage::Client, &f).0),
        "450 4.7.25 Client host rejected: cannot find your reverse hostname, [192.0.2.9]"
    );
    f.reverse_name_status = NameStatus::Ok;
    f.reverse_client_name = "host.example";
    f.client_name_status = NameStatus::TempFail;
    assert_eq!(
        summary(run(&p, "smtpd_client_restrictions", Stage::Client, &f).0),
        "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.9]"
    );
    f.client_name_status = NameStatus::Ok;
    f.client_name = "host.example";
    assert_eq!(
        run(&p, "smtpd_client_restrictions", Stage::Client, &f).0,
        Decision::Dunno
    );
    let strict = policy(
        "unknown_client_reject_code = 550\nsmtpd_client_restrictions = reject_unknown_client_hostname\n",
    );
    let unknown = facts("192.0.2.9", "x@y.example", AddressClass::Default);
    assert_eq!(
        summary(
            run(
                &strict,
                "smtpd_client_restrictions",
                Stage::Client,
                &unknown
            )
            .0
        ),
        "550 5.7.25 Client host rejected: cannot find your hostname, [192.0.2.9]"
    );
    // Pipelining: the session's improper-pipelining flag, at any stage.
    f.pipelined = true;
    assert_eq!(
        summary(run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0),
        "503 5.5.0 <a@example.org>: Sender address rejected: Improper use of SMTP command pipelining"
    );
    assert_eq!(
        summary(run(&p, "smtpd_data_restrictions", Stage::Data, &f).0),
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining"
    );
    f.esmtp = false;
    assert_eq!(
        summary(run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0),
        "503 5.5.0 <a@example.org>: Sender address rejected: Improper use of SMTP command pipelining"
    );
    f.pipelined = false;
    assert_eq!(
        run(&p, "smtpd_data_restrictions", Stage::Data, &f).0,
        Decision::Dunno
    );
}

#[test]
fn access_table_actions() {
    let p = policy(concat!(
        "smtpd_restriction_classes = strict, lenient\nstrict = reject\nlenient = permit\n",
        "smtpd_recipient_restrictions = check_recipient_access inline:{ ",
        "vip@example.com=OK, perm.example=PERMIT, { spam.example=REJECT go away }, ",
        "{ dsn.example=REJECT 5.7.9 custom dsn }, bare.example=REJECT, later.example=DEFER, ",
        "{ text.example=DEFER 4.7.2 later please }, { slow.example=450 try later }, ",
        "{ five.example=550 5.1.1 no such user }, strict.example=strict, lenient.example=lenient, ",
        "{ list.example=reject_non_fqdn_sender permit }, { warn.example=WARN noted }, ",
        "hold.example=HOLD, { hold2.example=HOLD quarantined }, discard.example=DISCARD, ",
        "{ filter.example=FILTER scan:[127.0.0.1]:10025 }, { redirect.example=REDIRECT trap@example.net }, ",
        "{ prepend.example=PREPEND X-Checked: yes }, dunno.example=DUNNO, num.example=12345, ",
        "{ table.example=check_client_access inline:{a=b} }, badfilter.example=FILTER ",
        "}, reject_non_fqdn_sender, permit\n"
    ));
    let go = |rcpt: &str| {
        let mut f = facts("192.0.2.9", rcpt, AddressClass::Default);
        f.sender = Some("nofqdn@localhost");
        let (d, out) = run(&p, "smtpd_recipient_restrictions", Stage::Recipient, &f);
        (summary(d), out)
    };
    let nofqdn =
        "504 5.5.2 <nofqdn@localhost>: Sender address rejected: need fully-qualified address";
    assert_eq!(go("vip@example.com").0, "Permit");
    assert_eq!(go("a@perm.example").0, "Permit");
    assert_eq!(go("a@num.example").0, "Permit");
    assert_eq!(
        go("a@spam.example").0,
        "554 5.7.1 <a@spam.example>: Recipient address rejected: go away"
    );
    assert_eq!(
        go("a@dsn.example").0,
        "554 5.7.9 <a@dsn.example>: Recipient address rejected: custom dsn"
    );
    assert_eq!(
        go("a@bare.example").0,
        "554 5.7.1 <a@bare.example>: Recipient address rejected: Access denied"
    );
    assert_eq!(
        go("a@later.example").0,
        "450 4.7.1 <a@later.example>: Recipient address rejected: Access denied"
    );
    assert_eq!(
        go("a@text.example").0,
        "450 4.7.2 <a@text.example>: Recipient address rejected: later please"
    );
    assert_eq!(
        go("a@slow.example").0,
        "450 4.7.1 <a@slow.example>: Recipient address rejected: try later"
    );
    assert_eq!(
        go("a@five.example").0,
        "550 5.1.1 <a@five.example>: Recipient address rejected: no such user"
    );
    assert_eq!(
        go("a@strict.example").0,
        "554 5.7.1 <a@strict.example>: Recipient address rejected: Access denied"
    );
    assert_eq!(go("a@lenient.example").0, "Permit");
    assert_eq!(go("a@list.example").0, nofqdn);
    assert_eq!(go("a@dunno.example").0, nofqdn);
    let (d, out) = go("a@warn.example");
    assert_eq!(d, nofqdn);
    assert_eq!(out.events, vec![("warn", "noted".to_string())]);
    let (d, out) = go("a@hold.example");
    assert_eq!(d, nofqdn);
    assert!(out.actions.hold);
    assert_eq!(
        out.events,
        vec![(
            "hold",
            "<a@hold.example>: Recipient address triggers HOLD action".to_string()
        )]
    );
    let (_, out) = go("a@hold2.example");
    assert_eq!(
        out.events[0].1,
        "<a@hold2.example>: Recipient address quarantined"
    );
    let (d, out) = go("a@discard.example");
    assert_eq!(d, "Permit");
    assert!(out.actions.discard);
    assert_eq!(out.events[0].0, "discard");
    let (_, out) = go("a@filter.example");
    assert_eq!(
        out.actions.filter.as_deref(),
        Some("scan:[127.0.0.1]:10025")
    );
    assert_eq!(
        out.events[0].1,
        "<a@filter.example>: Recipient address triggers FILTER scan:[127.0.0.1]:10025"
    );
    let (_, out) = go("a@redirect.example");
    assert_eq!(out.actions.redirect.as_deref(), Some("trap@example.net"));
    let (_, out) = go("a@prepend.example");
    assert_eq!(out.actions.prepend, vec!["X-Checked: yes".to_string()]);
    let (d, out) = go("a@table.example");
    assert_eq!(d, "451 4.3.5 Server configuration error");
    assert!(
        out.warnings[0].contains("has entry with lookup table"),
        "{:?}",
        out.warnings
    );
    let (d, out) = go("a@badfilter.example");
    assert_eq!(d, nofqdn);
    assert!(out.warnings[0].contains("requires transport:destination"));
}

#[test]
fn access_keys_null_sender_and_client() {
    let p = policy(
        "smtpd_sender_restrictions = check_sender_access inline:{ { <>=REJECT no bounces } }\nsmtpd_client_restrictions = check_client_access inline:{ 192.0.2=REJECT }, check_reverse_client_hostname_access inline:{ bad.example=REJECT }\n",
    );
    let mut f = facts("192.0.2.9", "x@y.example", AddressClass::Default);
    f.sender = Some("");
    assert_eq!(
        summary(run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0),
        "554 5.7.1 <>: Sender address rejected: no bounces"
    );
    assert_eq!(
        summary(run(&p, "smtpd_client_restrictions", Stage::Client, &f).0),
        "554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: Access denied"
    );
    let mut g = facts("198.51.100.1", "x@y.example", AddressClass::Default);
    g.reverse_client_name = "host.bad.example";
    assert!(
        summary(run(&p, "smtpd_client_restrictions", Stage::Client, &g).0)
            .starts_with("554 5.7.1 <unknown[198.51.100.1]>")
    );
}

#[test]
fn actions_need_a_transaction() {
    let p = policy("smtpd_client_restrictions = check_client_access inline:{ 192.0.2.9=HOLD }\n");
    let mut f = Facts::client("192.0.2.9".parse().unwrap());
    f.sender = None;
    let (d, out) = run(&p, "smtpd_client_restrictions", Stage::Client, &f);
    assert_eq!(d, Decision::Dunno);
    assert!(!out.actions.hold);
    assert!(out.warnings[0].contains("action HOLD is always skipped"));
}

#[test]
fn defer_if_permit_reject_and_warn_if_reject() {
    let p = policy(concat!(
        "smtpd_client_restrictions = check_client_access inline:{ { 192.0.2.9=DEFER_IF_PERMIT greylisted } }\n",
        "smtpd_recipient_restrictions = check_recipient_access inline:{ bad@y.example=REJECT }, permit\n",
    ));
    let f = facts("192.0.2.9", "ok@y.example", AddressClass::Local);
    assert_eq!(
        check(&p, &f).0.as_deref(),
        Some("450 4.7.1 <unknown[192.0.2.9]>: Client host rejected: greylisted")
    );
    let f = facts("192.0.2.9", "bad@y.example", AddressClass::Local);
    assert_eq!(
        check(&p, &f).0.as_deref(),
        Some("554 5.7.1 <bad@y.example>: Recipient address rejected: Access denied")
    );
    let q = policy(
        "smtpd_sender_restrictions = warn_if_reject reject_non_fqdn_sender, defer_if_reject, check_sender_access inline:{ s@x.example=REJECT }\n",
    );
    let mut f = facts("192.0.2.8", "ok@y.example", AddressClass::Local);
    f.sender = Some("s@localhost");
    let (r, out) = check(&q, &f);
    assert_eq!(r, None);
    assert_eq!(out.events[0].0, "reject_warning");
    f.sender = Some("s@x.example");
    assert_eq!(
        check(&q, &f).0.as_deref(),
        Some("450 4.7.1 <s@x.example>: Sender address rejected: defer_if_reject requested")
    );
}

#[test]
fn class_recursion_is_bounded() {
    let p = policy(
        "smtpd_restriction_classes = a\na = check_client_access inline:{ 192.0.2.9=a }\nsmtpd_client_restrictions = a\n",
    );
    let f = facts("192.0.2.9", "x@y.example", AddressClass::Default);
    assert_eq!(
        summary(run(&p, "smtpd_client_restrictions", Stage::Client, &f).0),
        "451 4.3.5 Server configuration error"
    );
}

#[test]
fn relay_class_resolves_routing() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_parts(
        dir.path(),
        Some("myhostname = mx.example\nmydestination = mx.example, localhost\nrelay_domains = relay.example\n"),
        None,
    )
    .unwrap();
    let router = Router::from_params(&|n| config.get(n)).unwrap();
    let class = |a: &str| {
        let (_, d) = crate::routing::split_address(a);
        let c = router.classify(d).unwrap();
        relay_class(&router, a, c).unwrap()
    };
    assert_eq!(class("user@mx.example"), (AddressClass::Local, false));
    assert_eq!(
        class("user@foreign.example"),
        (AddressClass::Default, false)
    );
    assert_eq!(
        class("user%foreign.example@mx.example"),
        (AddressClass::Default, false)
    );
    assert_eq!(
        class("\"user@foreign.example\"@mx.example"),
        (AddressClass::Default, false)
    );
    assert_eq!(
        class("foreign.example!user@mx.example"),
        (AddressClass::Default, false)
    );
    assert_eq!(
        class("user%localhost@mx.example"),
        (AddressClass::Local, false)
    );
    assert_eq!(
        class("user%foreign.example@relay.example"),
        (AddressClass::Relay, true)
    );
    assert_eq!(class("user@relay.example"), (AddressClass::Relay, false));
}

#[test]
fn unimplemented_restrictions_fail_closed() {
    let p = policy("smtpd_client_restrictions = check_sasl_access inline:{a=b}\n");
    let f = facts("192.0.2.9", "a@b.c", AddressClass::Default);
    let (d, out) = run(&p, "smtpd_client_restrictions", Stage::Client, &f);
    assert_eq!(summary(d), "451 4.3.5 Server configuration error");
    assert!(out.warnings[0].contains("check_sasl_access is not implemented"));
}

#[test]
fn unlisted_sender_and_recipient() {
    let p = policy(
        "smtpd_sender_restrictions = reject_unlisted_sender\nsmtpd_recipient_restrictions = reject_unlisted_recipient\n",
    );
    let mut f = facts("192.0.2.9", "nobody@mx.example", AddressClass::Local);
    f.sender = Some("ghost@mx.example");
    f.sender_unlisted = Some((550, "local recipient table"));
    f.recipient_unlisted = Some((550, "local recipient table"));
    assert_eq!(
        summary(run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0),
        "550 5.1.0 <ghost@mx.example>: Sender address rejected: User unknown in local recipient table"
    );
    assert_eq!(
        summary(run(&p, "smtpd_recipient_restrictions", Stage::Recipient, &f).0),
        "550 5.1.1 <nobody@mx.example>: Recipient address rejected: User unknown in local recipient table"
    );
    f.sender_unlisted = None;
    assert_eq!(
        run(&p, "smtpd_sender_restrictions", Stage::Sender, &f).0,
        Decision::Dunno
    );
    let global = policy("smtpd_reject_unlisted_sender = yes\n");
    f.sender_unlisted = Some((550, "local recipient table"));
    assert!(
        check(&global, &f)
            .0
            .unwrap()
            .starts_with("550 5.1.0 <ghost@mx.example>")
    );
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_parts(
        dir.path(),
        Some("myhostname = mx.example\nlocal_recipient_maps = inline:{ alice=1 }\n"),
        None,
    )
    .unwrap();
    let router = Router::from_params(&|n| config.get(n)).unwrap();
    assert_eq!(unlisted(&router, "alice@mx.example"), None);
    assert_eq!(
        unlisted(&router, "ghost@mx.example"),
        Some((550, "local recipient table"))
    );
    assert_eq!(unlisted(&router, "ghost@foreign.example"), None);
}

#[test]
fn multi_recipient_bounce() {
    let p = policy(
        "smtpd_recipient_restrictions = reject_multi_recipient_bounce\nsmtpd_data_restrictions = reject_multi_recipient_bounce\n",
    );
    let mut f = facts("192.0.2.9", "x@y.example", AddressClass::Local);
    f.sender = Some("");
    assert_eq!(
        run(&p, "smtpd_recipient_restrictions", Stage::Recipient, &f).0,
        Decision::Dunno
    );
    f.recipient_count = 1;
    assert_eq!(
        summary(run(&p, "smtpd_recipient_restrictions", Stage::Recipient, &f).0),
        "550 5.5.3 <>: Sender address rejected: Multi-recipient bounce"
    );
    assert_eq!(
        run(&p, "smtpd_data_restrictions", Stage::Data, &f).0,
        Decision::Dunno
    );
    f.recipient_count = 2;
    assert!(
        summary(run(&p, "smtpd_data_restrictions", Stage::Data, &f).0).starts_with("550 5.5.3")
    );
    f.sender = Some("a@example.org");
    assert_eq!(
        run(&p, "smtpd_data_restrictions", Stage::Data, &f).0,
        Decision::Dunno
    );
}
