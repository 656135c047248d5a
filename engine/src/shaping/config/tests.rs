use super::*;

fn table(text: &str) -> Result<Shaping, String> {
    let mut b = Builder::default();
    b.add("t.conf", text)?;
    b.finish()
}

#[test]
fn the_shipped_table_loads_and_groups_the_big_providers() {
    let mut b = Builder::default();
    b.add("builtin", BUILTIN).unwrap();
    let s = b.finish().unwrap();
    let name = |domain: &str, mx: &[&str]| s.group_of(domain, mx).map(|g| g.name.clone());
    assert_eq!(
        name("gmail.com", &["gmail-smtp-in.l.google.com"]).as_deref(),
        Some("google")
    );
    assert_eq!(
        name("googlemail.com", &["alt1.gmail-smtp-in.l.google.com"]).as_deref(),
        Some("google")
    );
    assert_eq!(
        name("corp.example", &["aspmx2.googlemail.com"]).as_deref(),
        Some("google")
    );
    assert_eq!(
        name("hotmail.com", &["hotmail-com.olc.protection.outlook.com"]).as_deref(),
        Some("microsoft")
    );
    assert_eq!(
        name(
            "contoso.example",
            &["contoso-example.mail.protection.outlook.com"]
        )
        .as_deref(),
        Some("microsoft")
    );
    assert_eq!(
        name("aol.com", &["mx-aol.mail.gm0.yahoodns.net"]).as_deref(),
        Some("yahoo")
    );
    assert_eq!(name("example.org", &["mx.example.org"]), None);
    // Not fooled by a name that merely ends in the same letters.
    assert_eq!(name("evil.example", &["mx.notgoogle.com"]), None);
    assert!(s.providers.iter().all(|p| !p.rules.is_empty()));
}

#[test]
fn rules_match_code_status_and_text() {
    let r = parse_rule(
        "4xx 4.7.28 (?i)rate limited => throttle message_rate=60/h connection_limit=2 for 30m",
        "f:1",
    )
    .unwrap();
    assert!(r.matches(421, "4.7.28", "Our system has detected ... rate limited"));
    assert!(!r.matches(421, "4.7.0", "rate limited"));
    assert!(!r.matches(521, "4.7.28", "rate limited"));
    assert!(!r.matches(421, "4.7.28", "mailbox full"));
    assert_eq!(r.duration, Duration::from_secs(1800));
    let Action::Throttle(l) = &r.action else {
        panic!("{:?}", r.action)
    };
    assert_eq!(l.connection_limit, Some(2));
    assert_eq!(l.message_interval, Some(Duration::from_secs(60)));
    let r = parse_rule("(?i)\\bTSS04\\b => suspend for 10s", "f:2").unwrap();
    assert!(r.code.is_none() && r.status.is_none());
    assert!(r.matches(
        421,
        "4.7.0",
        "[TSS04] Messages from 1.2.3.4 temporarily deferred"
    ));
    assert_eq!(r.action, Action::Suspend);
    let r = parse_rule("5.7.* => bounce-domain for 1h", "f:3").unwrap();
    assert!(r.matches(550, "5.7.1", "blocked") && !r.matches(550, "5.1.1", "no user"));
}

#[test]
fn bad_rules_are_refused_with_the_reason() {
    for (rule, why) in [
        ("421 => suspend", "duration"),
        ("421 => suspend for 0s", "positive"),
        ("=> suspend for 1m", "needs a reply code"),
        ("421 => throttle for 1m", "throttle needs"),
        (
            "421 => throttle messages_per_connection=3 for 1m",
            "cannot set",
        ),
        ("421 => slow-down for 1m", "unknown action"),
        ("421 => suspend-source now for 1m", "takes no settings"),
        ("421 => bounce now for 1m", "takes no settings"),
        ("421 ( => suspend for 1m", "bad regex"),
        ("421 suspend for 1m", "expected a rule"),
    ] {
        let e = parse_rule(rule, "f:1").unwrap_err();
        assert!(e.contains(why), "{rule}: {e}");
    }
}

#[test]
fn errors_name_the_file_and_line() {
    let e = table("[provider x]\nmx = .x.test\nspeed = 3\n").unwrap_err();
    assert!(
        e.starts_with("t.conf, line 3: unknown setting \"speed\""),
        "{e}"
    );
    let e = table("mx = .x.test\n").unwrap_err();
    assert!(e.starts_with("t.conf, line 1: setting outside"), "{e}");
    let e = table("[provider a.b]\n").unwrap_err();
    assert!(e.contains("bad provider name"), "{e}");
    let e = table("[provider x]\nconnection_limit = 2\n").unwrap_err();
    assert!(e.contains("has no mx"), "{e}");
    let e = table("[domain d.test]\nprovider = nobody\n").unwrap_err();
    assert!(e.contains("no [provider nobody]"), "{e}");
    let e =
        table("[provider x]\nmx = .x.test\n[domain d.test]\nprovider = x\nconnection_limit = 1\n")
            .unwrap_err();
    assert!(e.contains("one or the other"), "{e}");
    let e = table("[provider x]\nmx = .x.test\nmessage_rate = 5/d\n").unwrap_err();
    assert!(e.contains("line 3") && e.contains("rate unit"), "{e}");
}

#[test]
fn a_later_file_overrides_per_provider_and_per_domain() {
    let mut b = Builder::default();
    b.add(
        "base",
        "[provider big]\nmx = .big.test\nconnection_limit = 20\nmessage_rate = 100/s\nrule = 421 => suspend for 1m\n",
    )
    .unwrap();
    b.add(
        "local",
        "[provider big]\nconnection_limit = 2\nrule = 450 => suspend for 2m\n\
         [domain own.test]\nconnection_limit = 1\n\
         [domain other.test]\nprovider = big\n\
         [domain exempt.test]\nprovider = none\n",
    )
    .unwrap();
    let s = b.finish().unwrap();
    let big = s.provider("big").unwrap();
    assert_eq!(big.limits.connection_limit, Some(2));
    assert_eq!(big.limits.message_interval, Some(Duration::from_millis(10)));
    assert_eq!(big.rules.len(), 2);
    assert_eq!(
        s.group_of("own.test", &["mx.big.test"]).unwrap().name,
        "own.test"
    );
    assert_eq!(
        s.group_of("other.test", &["mx.elsewhere.test"])
            .unwrap()
            .name,
        "big"
    );
    assert!(s.group_of("exempt.test", &["mx.big.test"]).is_none());
    assert_eq!(s.group_of("OTHER.test", &[]).unwrap().name, "big");
    let mut b = Builder::default();
    b.add(
        "base",
        "[provider big]\nmx = .big.test\nrule = 421 => suspend for 1m\n",
    )
    .unwrap();
    b.add("local", "[provider big]\nrule = none\n").unwrap();
    assert!(
        b.finish()
            .unwrap()
            .provider("big")
            .unwrap()
            .rules
            .is_empty()
    );
}

#[test]
fn mx_patterns() {
    let g = Group {
        mx: vec![".google.com".into(), "mx.exact.test".into()],
        ..Group::default()
    };
    assert!(g.has_mx("ASPMX.L.GOOGLE.COM."));
    assert!(g.has_mx("google.com"));
    assert!(!g.has_mx("evilgoogle.com"));
    assert!(g.has_mx("mx.exact.test"));
    assert!(!g.has_mx("a.mx.exact.test"));
}

proptest::proptest! {
    #[test]
    fn any_text_parses_or_fails_cleanly(text in "\\PC{0,300}") {
        let _ = table(&text);
        let _ = parse_rule(&text, "f:1");
    }
}
