use super::*;

fn txt(records: &[&str]) -> Option<String> {
    let records: Vec<String> = records.iter().map(|r| r.to_string()).collect();
    parse_txt(&records)
}

#[test]
fn txt_records() {
    assert_eq!(
        txt(&["v=STSv1; id=20160831085700Z;"]),
        Some("20160831085700Z".into())
    );
    assert_eq!(txt(&["v=STSv1;id=abc", "v=spf1 -all"]), Some("abc".into()));
    // Unknown fields are ignored.
    assert_eq!(txt(&["v=STSv1; id=1; ext=x"]), Some("1".into()));
    // Two STS records, none, no id, a bad id, a bad version: no policy.
    assert_eq!(txt(&["v=STSv1; id=1", "v=STSv1; id=2"]), None);
    assert_eq!(txt(&["v=spf1 -all"]), None);
    assert_eq!(txt(&["v=STSv1;"]), None);
    assert_eq!(txt(&["v=STSv1; id=not-alnum"]), None);
    assert_eq!(
        txt(&["v=STSv1; id=123456789012345678901234567890123"]),
        None
    );
    assert_eq!(txt(&["v=STSv10; id=1"]), None);
}

#[test]
fn policies() {
    let p = parse_policy(
        "version: STSv1\r\nmode: enforce\r\nmx: mail.example.com\r\nmx: *.Example.NET.\r\nmax_age: 86400\r\n",
    )
    .unwrap();
    assert_eq!(p.mode, Mode::Enforce);
    assert_eq!(p.mx, ["mail.example.com", "*.example.net"]);
    assert_eq!(p.max_age, 86_400);
    let t =
        parse_policy("version: STSv1\nmode: testing\nmx: a.test\nmax_age: 99999999999\nfoo: bar\n")
            .unwrap();
    assert_eq!((t.mode, t.max_age), (Mode::Testing, MAX_AGE_LIMIT));
    assert!(parse_policy("version: STSv1\nmode: none\nmax_age: 1\n").is_ok());
    for bad in [
        "mode: enforce\nmx: a.test\nmax_age: 1\n",
        "version: STSv2\nmode: enforce\nmx: a.test\nmax_age: 1\n",
        "version: STSv1\nmode: strict\nmx: a.test\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmax_age: 1\n",
        "version: STSv1\nmode: enforce\nmx: a.test\n",
        "version: STSv1\nmode: enforce\nmx: a.test\nmax_age: soon\n",
        "<html>not a policy</html>",
    ] {
        assert!(parse_policy(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn mx_patterns() {
    assert!(mx_matches("mail.example.com", "MAIL.example.com."));
    assert!(!mx_matches("mail.example.com", "mx.example.com"));
    // A wildcard is exactly one leftmost label (RFC 8461 §4.1).
    assert!(mx_matches("*.example.net", "mx1.example.net"));
    assert!(!mx_matches("*.example.net", "a.b.example.net"));
    assert!(!mx_matches("*.example.net", "example.net"));
    assert!(!mx_matches("*.example.net", "mx1.badexample.net"));
    let p = Policy {
        mode: Mode::Enforce,
        mx: vec!["mail.example.com".into(), "*.example.net".into()],
        max_age: 1,
    };
    assert!(p.allows_mx("mx9.example.net") && !p.allows_mx("mx.example.org"));
}

proptest::proptest! {
    #[test]
    fn parsers_never_panic(text in "\\PC{0,200}") {
        let _ = parse_policy(&text);
        let _ = parse_txt(std::slice::from_ref(&text));
        let _ = mx_matches(&text, "mx.example.com");
    }
}
