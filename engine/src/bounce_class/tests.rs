use super::*;
use proptest::prelude::*;

fn shipped() -> Rules {
    let mut rules = Rules::default();
    rules
        .add("bounce-classes.conf", BUILTIN)
        .expect("the shipped rules parse");
    rules
}

#[test]
fn typical_replies_get_their_class() {
    let rules = shipped();
    let said = |reply: &str| {
        format!("host mx.example[192.0.2.1] said: {reply} (in reply to RCPT TO command)")
    };
    for (dsn, text, class) in [
        ("5.1.1", said("550 5.1.1 <a@example.com>: Recipient address rejected: User unknown"), "bad-mailbox"),
        ("5.1.1", said("550-5.1.1 The email account that you tried to reach does not exist."), "bad-mailbox"),
        ("4.2.2", said("452 4.2.2 The email account that you tried to reach is over quota."), "quota"),
        ("5.2.2", said("552 5.2.2 Mailbox full"), "quota"),
        ("5.2.1", said("550 5.2.1 The email account that you tried to reach is disabled."), "inactive"),
        ("5.7.1", said("554 5.7.1 Service unavailable; Client host blocked using zen.spamhaus.org"), "policy"),
        ("5.7.1", said("550 5.7.1 Message rejected as spam by Content Filtering."), "policy"),
        ("5.7.26", said("550-5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy."), "policy"),
        ("4.7.28", said("421-4.7.28 Our system has detected an unusual rate of unsolicited mail"), "reputation"),
        ("4.7.0", said("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints"), "reputation"),
        ("5.7.708", said("550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP."), "reputation"),
        ("4.4.3", "Host or domain name not found. Name service error for name=example.invalid type=MX: Host not found, try again".into(), "dns"),
        ("5.4.4", "Host or domain name not found. Name service error for name=example.invalid type=A: Host not found".into(), "dns"),
        ("4.7.4", "TLS is required, but was not offered by host mx.example[192.0.2.1]".into(), "tls"),
        ("5.4.6", "mail for example.com loops back to myself".into(), "routing"),
        ("4.4.1", "connect to mx.example[192.0.2.1]:25: Connection refused".into(), "connection"),
        ("4.4.2", "lost connection with mx.example[192.0.2.1] while sending end of data".into(), "connection"),
        ("5.3.4", said("552 5.3.4 Message size exceeds fixed limit"), "content"),
        ("5.6.0", said("550 5.6.0 Invalid header found"), "content"),
        ("5.7.1", said("554 5.7.1 Relay access denied"), "policy"),
        ("4.7.0", "TLS is required, but host mx.example[192.0.2.1] refused to start TLS: 454 4.7.0 TLS not available".into(), "tls"),
        ("4.7.5", "Cannot start TLS: handshake failure".into(), "tls"),
        ("5.1.10", "Domain example.com does not accept mail (nullMX)".into(), "bad-mailbox"),
        ("5.4.6", "mail forwarding loop for u@example.com".into(), "routing"),
        ("4.3.0", "pipe: command time limit exceeded".into(), "system"),
        ("5.2.3", "message file too big".into(), "content"),
        ("4.7.0", said("421 4.7.0 Try again later, closing connection. (EHLO) separate moderate"), "reputation"),
        ("5.7.1", said("550 5.7.1 mail generated at a moderate pace is not accepted here"), "policy"),
        ("5.1.1", "host tls-spam.example[192.0.2.1] said: 550 5.1.1 no such user".into(), "bad-mailbox"),
        ("4.2.0", said("450 4.2.0 try again later"), UNCLASSIFIED),
    ] {
        assert_eq!(rules.classify(dsn, &text), class, "{dsn} {text}");
    }
}

#[test]
fn a_site_rule_comes_before_the_shipped_ones() {
    let mut rules = Rules::default();
    rules
        .add("site.conf", "# ours\n\ngreylisted  4.*.*  (?i)greylist\n")
        .unwrap();
    rules.add("bounce-classes.conf", BUILTIN).unwrap();
    assert_eq!(
        rules.classify("4.7.1", "greylisted, try again in 5 minutes"),
        "greylisted"
    );
    assert_eq!(rules.classify("5.1.1", "user unknown"), "bad-mailbox");
}

#[test]
fn errors_name_the_file_and_line() {
    for (text, needle) in [
        ("quota 4.2.2\nBad! 5.1.1\n", "site.conf, line 2: Bad!"),
        ("quota\n", "site.conf, line 1: quota: expected"),
        (
            "quota 4.2\n",
            "site.conf, line 1: 4.2: expected an enhanced status code",
        ),
        ("quota 6.2.2\n", "line 1: 6.2.2"),
        (
            "\n\npolicy 5.7.1 (unclosed\n",
            "site.conf, line 3: (unclosed",
        ),
    ] {
        let e = Rules::default().add("site.conf", text).unwrap_err();
        assert!(e.contains(needle), "{e} lacks {needle}");
    }
}

#[test]
fn only_failures_of_a_log_line_are_classified() {
    let failed = "4F3A2B1C0D: to=<u@example.com>, relay=mx.example[192.0.2.1]:25, delay=1, \
                  delays=0/0/0/1, dsn=5.1.1, status=bounced (host mx.example[192.0.2.1] said: \
                  550 5.1.1 no such user (in reply to RCPT TO command))";
    assert_eq!(of_log_line(failed), Some("bad-mailbox"));
    let sent = "4F3A2B1C0D: to=<u@example.com>, relay=mx.example[192.0.2.1]:25, delay=1, \
                delays=0/0/0/1, dsn=2.0.0, status=sent (250 ok)";
    assert_eq!(of_log_line(sent), None);
    assert_eq!(of_log_line("4F3A2B1C0D: removed"), None);
}

proptest! {
    #[test]
    fn parsing_never_panics(text in "\\PC*(\n\\PC*){0,4}") {
        let _ = Rules::default().add("x", &text);
    }

    #[test]
    fn classifying_never_panics(dsn in "\\PC{0,12}", text in "\\PC{0,80}") {
        let _ = shipped().classify(&dsn, &text);
        let _ = of_log_line(&format!("x, dsn={dsn}, status={text}"));
    }
}
