//! Tests for the notices: the rules of the module doc, one by one; a
//! property test that no quoted text can change the MIME structure; and a
//! cross-check with Python's `email` package as an independent parser.

use super::*;
use corepost_spool::record::notify;
use corepost_spool::{MailParams, Recipient};

const NOW: u64 = 1_795_000_000_000_000;
const ORIGINAL: &[u8] = b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: Lunch\r\nMessage-Id: <1@example.org>\r\n\r\nSee you at noon.\r\n";

fn settings() -> BounceSettings {
    BounceSettings {
        myhostname: "mx.example.com".into(),
        mail_name: "corepost".into(),
        bounce_size_limit: 50_000,
        double_bounce_sender: "double-bounce".into(),
        notify_classes: vec!["resource".into(), "software".into()],
        bounce_notice_recipient: "postmaster".into(),
        twobounce_notice_recipient: "postmaster".into(),
        delay_notice_recipient: "postmaster".into(),
    }
}

fn queue_id() -> QueueId {
    QueueId::from_parts(1_794_990_000_000_000, 3, 7)
}

fn envelope(sender: &str) -> Envelope {
    Envelope {
        queue_id: queue_id(),
        arrival: 1_794_990_000_000_000,
        sender: sender.into(),
        ..Envelope::default()
    }
}

fn recipient(address: &str, notify_bits: u8) -> Recipient {
    Recipient {
        address: address.into(),
        notify: notify_bits,
        transport: "smtp".into(),
        nexthop: "example.net".into(),
        ..Recipient::default()
    }
}

fn failed(recipient: &Recipient) -> FailedRecipient<'_> {
    FailedRecipient {
        recipient,
        status: "5.1.1".into(),
        diagnostic: format!(
            "host mx.example.net[192.0.2.25] said: 550 5.1.1 <{}>: User unknown (in reply to RCPT TO command)",
            recipient.address
        ),
        remote_mta: Some("mx.example.net".into()),
        action: None,
        will_retry_until: None,
    }
}

fn delayed(recipient: &Recipient) -> FailedRecipient<'_> {
    FailedRecipient {
        recipient,
        status: "4.4.1".into(),
        diagnostic: "connect to mx.example.net[192.0.2.1]:25: Connection timed out".into(),
        remote_mta: None,
        action: None,
        will_retry_until: Some(NOW + 4 * 86_400_000_000),
    }
}

fn notice(outcome: BounceOutcome) -> Notice {
    match outcome {
        BounceOutcome::Notice(n) => n,
        BounceOutcome::Nothing { reason } => panic!("expected a notice, got Nothing: {reason}"),
    }
}

fn report(
    kind: ReportKind,
    env: &Envelope,
    original: &[u8],
    list: &[FailedRecipient<'_>],
) -> BounceOutcome {
    build_report(&settings(), kind, env, original, list, NOW, queue_id())
}

/// A parsed notice: top-level header section and the parts' (headers, body).
struct Parsed {
    head: String,
    boundary: String,
    parts: Vec<(String, Vec<u8>)>,
}

/// Split a notice along its boundary, checking the framing on the way.
fn parse(content: &[u8]) -> Parsed {
    let at = memchr::memmem::find(content, b"\r\n\r\n").expect("header section ends");
    let head = String::from_utf8(content[..at + 2].to_vec()).expect("headers are UTF-8");
    let unfolded = head.replace("\r\n ", " ");
    let boundary = unfolded
        .split("boundary=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("boundary parameter")
        .to_string();
    let delimiter = format!("\r\n--{boundary}");
    let body = &content[at + 2..];
    let pieces: Vec<&[u8]> = split_on(body, delimiter.as_bytes());
    // Preamble, three parts, and what follows the close delimiter.
    assert_eq!(pieces.len(), 5, "delimiters: {}", pieces.len() - 1);
    assert_eq!(pieces[4], b"--\r\n", "close delimiter ends the message");
    let parts = pieces[1..4]
        .iter()
        .map(|piece| {
            let piece = piece
                .strip_prefix(b"\r\n")
                .expect("delimiter line ends in CRLF");
            let split = memchr::memmem::find(piece, b"\r\n\r\n")
                .map(|i| i + 2)
                .unwrap_or(0);
            let headers = String::from_utf8(piece[..split].to_vec()).unwrap();
            (headers, piece[split + 2..].to_vec())
        })
        .collect();
    Parsed {
        head,
        boundary,
        parts,
    }
}

fn split_on<'a>(haystack: &'a [u8], needle: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in memchr::memmem::find_iter(haystack, needle) {
        out.push(&haystack[start..i]);
        start = i + needle.len();
    }
    out.push(&haystack[start..]);
    out
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Every line ends in CRLF: no bare CR or LF anywhere.
fn assert_crlf_only(content: &[u8]) {
    for (i, &b) in content.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && content[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(content.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
}

fn assert_lines_at_most(bytes: &[u8], max: usize) {
    for line in split_on(bytes, b"\r\n") {
        assert!(line.len() <= max, "line of {} octets", line.len());
    }
}

#[test]
fn failure_goes_to_the_sender_from_the_null_sender() {
    let r = recipient("bob@example.net", 0);
    let env = envelope("alice@example.org");
    let n = notice(report(ReportKind::Failure, &env, ORIGINAL, &[failed(&r)]));
    assert_eq!(n.sender, "");
    assert_eq!(n.recipient, "alice@example.org");
    let p = parse(&n.content);
    let head = p.head.replace("\r\n ", " ");
    for expected in [
        "From: MAILER-DAEMON@mx.example.com (Mail Delivery System)\r\n",
        "To: <alice@example.org>\r\n",
        "Subject: Undelivered Mail Returned to Sender\r\n",
        "Auto-Submitted: auto-replied\r\n",
        "MIME-Version: 1.0\r\n",
        "Content-Type: multipart/report; report-type=delivery-status; boundary=\"",
        "\r\nDate: ",
    ] {
        assert!(head.contains(expected), "{expected:?} missing in\n{head}");
    }
    assert!(head.contains("Message-Id: <"));
    assert!(
        p.parts[0]
            .0
            .contains("Content-Type: text/plain; charset=us-ascii")
    );
    let human = text(&p.parts[0].1);
    assert!(human.contains("mail system at host mx.example.com"));
    // The host is named once (Postfix's text), not "host x said: host x said:".
    assert!(human.contains("<bob@example.net>: host mx.example.net[192.0.2.25] said: 550 5.1.1"));
    assert_eq!(human.matches("said:").count(), 1, "{human}");
    assert!(
        p.parts[1]
            .0
            .contains("Content-Type: message/delivery-status\r\n")
    );
    assert!(p.parts[2].0.contains("Content-Type: message/rfc822\r\n"));
    assert_eq!(p.parts[2].1, ORIGINAL);
    assert_crlf_only(&n.content);
}

#[test]
fn delivery_status_fields() {
    let mut r = recipient("bob@example.net", notify::FAILURE);
    r.orcpt = Some("rfc822;Bob@Example.NET".into());
    let mut env = envelope("alice@example.org");
    env.params.envid = Some("QQ+2B314159".into());
    let n = notice(report(ReportKind::Failure, &env, ORIGINAL, &[failed(&r)]));
    let p = parse(&n.content);
    let ds = text(&p.parts[1].1);
    let (per_message, per_recipient) = ds.split_once("\r\n\r\n").expect("two blocks");
    assert!(per_message.starts_with("Reporting-MTA: dns; mx.example.com\r\n"));
    assert!(per_message.contains(&format!("X-Corepost-Queue-ID: {}\r\n", queue_id())));
    assert!(per_message.contains("Original-Envelope-Id: QQ+314159\r\n"));
    assert!(per_message.contains("Arrival-Date: "));
    for expected in [
        "Final-Recipient: rfc822; bob@example.net\r\n",
        "Original-Recipient: rfc822; Bob@Example.NET\r\n",
        "Action: failed\r\n",
        "Status: 5.1.1\r\n",
        "Remote-MTA: dns; mx.example.net\r\n",
        "Diagnostic-Code: smtp; 550 5.1.1 <bob@example.net>: User unknown\r\n",
    ] {
        assert!(
            per_recipient.contains(expected),
            "{expected:?} missing in\n{per_recipient}"
        );
    }
    assert!(!per_recipient.contains("Will-Retry-Until"));
}

#[test]
fn local_diagnostics_and_bad_status_codes() {
    let r = recipient("bob@example.net", 0);
    let mut f = failed(&r);
    f.diagnostic = "mail for example.net loops back to myself".into();
    f.status = "5.4.6\r\nX: y".into();
    f.remote_mta = None;
    f.action = Some("failed");
    let n = notice(report(
        ReportKind::Failure,
        &envelope("a@example.org"),
        ORIGINAL,
        &[f],
    ));
    let ds = text(&parse(&n.content).parts[1].1);
    assert!(
        ds.contains("Diagnostic-Code: X-Corepost; mail for example.net loops back to myself\r\n")
    );
    assert!(ds.contains("Status: 5.0.0\r\n"), "{ds}");
    assert!(!ds.contains("Remote-MTA"));
    assert_eq!(status_code("4.7.1", ReportKind::Delay), "4.7.1");
    assert_eq!(status_code("9.1.1", ReportKind::Delay), "4.0.0");
    assert_eq!(status_code("5.1234.1", ReportKind::Failure), "5.0.0");
}

#[test]
fn delay_warning() {
    let r = recipient("bob@example.net", 0);
    let n = notice(report(
        ReportKind::Delay,
        &envelope("alice@example.org"),
        ORIGINAL,
        &[delayed(&r)],
    ));
    let p = parse(&n.content);
    assert!(
        p.head
            .contains("Subject: Delayed Mail (still being retried)\r\n")
    );
    let human = text(&p.parts[0].1);
    assert!(human.contains("THIS IS A WARNING ONLY"));
    assert!(human.contains("2 hours"), "{human}");
    let ds = text(&p.parts[1].1);
    assert!(ds.contains("Action: delayed\r\n"));
    assert!(ds.contains("Status: 4.4.1\r\n"));
    assert!(ds.contains("Will-Retry-Until: "));
    assert!(ds.contains("Diagnostic-Code: X-Corepost; connect to"));
    assert!(
        p.parts[2]
            .0
            .contains("Content-Type: text/rfc822-headers\r\n")
    );
    assert!(
        !text(&p.parts[2].1).contains("noon"),
        "delay warnings return headers only"
    );
}

#[test]
fn null_sender_is_never_bounced_and_discarded_without_2bounce() {
    let r = recipient("bob@example.net", 0);
    for kind in [ReportKind::Failure, ReportKind::Delay] {
        assert_eq!(
            report(kind, &envelope(""), ORIGINAL, &[failed(&r)]),
            BounceOutcome::Nothing {
                reason: "double bounce discarded"
            }
        );
    }
}

#[test]
fn null_sender_goes_to_2bounce_recipient_when_asked() {
    let r = recipient("bob@example.net", notify::NEVER);
    let mut s = settings();
    s.notify_classes.push("2bounce".into());
    s.twobounce_notice_recipient = "hostmaster@example.com".into();
    let n = notice(build_report(
        &s,
        ReportKind::Failure,
        &envelope(""),
        ORIGINAL,
        &[failed(&r)],
        NOW,
        queue_id(),
    ));
    assert_eq!(n.recipient, "hostmaster@example.com");
    assert_eq!(
        n.sender, "double-bounce@mx.example.com",
        "a failed postmaster notice must not loop"
    );
    let p = parse(&n.content);
    assert!(p.head.contains("To: <hostmaster@example.com>\r\n"));
    assert!(
        p.head
            .contains("Subject: Postmaster Copy: Undelivered Mail\r\n")
    );
    assert!(text(&p.parts[1].1).contains("Final-Recipient: rfc822; bob@example.net"));
    assert!(p.parts[2].0.contains("message/rfc822"));

    let n = notice(build_report(
        &s,
        ReportKind::Delay,
        &envelope(""),
        ORIGINAL,
        &[delayed(&r)],
        NOW,
        queue_id(),
    ));
    assert_eq!(n.recipient, "hostmaster@example.com");
    let p = parse(&n.content);
    assert!(
        p.head
            .contains("Subject: Postmaster Warning: Delayed Mail\r\n")
    );
    assert!(p.parts[2].0.contains("text/rfc822-headers"));
}

#[test]
fn nothing_without_a_notice_recipient() {
    let r = recipient("bob@example.net", 0);
    let mut s = settings();
    s.notify_classes.push("2bounce".into());
    s.twobounce_notice_recipient = " \r\n".into();
    assert!(matches!(
        build_report(
            &s,
            ReportKind::Failure,
            &envelope(""),
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id()
        ),
        BounceOutcome::Nothing {
            reason: "no notice recipient"
        }
    ));
    assert!(matches!(
        report(
            ReportKind::Failure,
            &envelope("\r\n"),
            ORIGINAL,
            &[failed(&r)]
        ),
        BounceOutcome::Nothing {
            reason: "no notice recipient"
        }
    ));
}

#[test]
fn double_bounce_sender_is_never_reported() {
    let r = recipient("postmaster@example.net", 0);
    let mut s = settings();
    s.notify_classes.push("2bounce".into());
    for sender in [
        "double-bounce",
        "double-bounce@mx.example.com",
        "Double-Bounce@other.example",
    ] {
        let outcome = build_report(
            &s,
            ReportKind::Failure,
            &envelope(sender),
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id(),
        );
        assert!(matches!(outcome, BounceOutcome::Nothing { .. }), "{sender}");
    }
    assert!(matches!(
        build_report(
            &s,
            ReportKind::Failure,
            &envelope("double-bouncer@x.example"),
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id()
        ),
        BounceOutcome::Notice(_)
    ));
}

#[test]
fn notify_decides_who_is_reported() {
    use notify::{DELAY, FAILURE, NEVER, SUCCESS};
    let cases: [(u8, bool, bool); 7] = [
        (0, true, true),
        (NEVER, false, false),
        (SUCCESS, false, false),
        (FAILURE, true, false),
        (DELAY, false, true),
        (FAILURE | DELAY, true, true),
        (NEVER | FAILURE, false, false),
    ];
    for (bits, on_failure, on_delay) in cases {
        assert_eq!(
            wants_report(bits, ReportKind::Failure),
            on_failure,
            "{bits}"
        );
        assert_eq!(wants_report(bits, ReportKind::Delay), on_delay, "{bits}");
    }
}

#[test]
fn only_recipients_that_asked_are_listed() {
    let never = recipient("never@example.net", notify::NEVER);
    let success = recipient("success@example.net", notify::SUCCESS);
    let failure = recipient("failure@example.net", notify::FAILURE);
    let plain = recipient("plain@example.net", 0);
    let list = [
        failed(&never),
        failed(&success),
        failed(&failure),
        failed(&plain),
    ];
    let n = notice(report(
        ReportKind::Failure,
        &envelope("a@example.org"),
        ORIGINAL,
        &list,
    ));
    let ds = text(&parse(&n.content).parts[1].1);
    assert!(ds.contains("Final-Recipient: rfc822; failure@example.net"));
    assert!(ds.contains("Final-Recipient: rfc822; plain@example.net"));
    assert!(!ds.contains("never@"));
    assert!(!ds.contains("success@"));
    assert_eq!(ds.matches("Final-Recipient:").count(), 2);
}

#[test]
fn nothing_when_no_recipient_remains() {
    let never = recipient("never@example.net", notify::NEVER);
    let failure_only = recipient("f@example.net", notify::FAILURE);
    let env = envelope("a@example.org");
    assert!(matches!(
        report(ReportKind::Failure, &env, ORIGINAL, &[failed(&never)]),
        BounceOutcome::Nothing { .. }
    ));
    assert!(matches!(
        report(ReportKind::Delay, &env, ORIGINAL, &[delayed(&failure_only)]),
        BounceOutcome::Nothing { .. }
    ));
    assert!(matches!(
        report(ReportKind::Failure, &env, ORIGINAL, &[]),
        BounceOutcome::Nothing { .. }
    ));
}

#[test]
fn ret_hdrs_returns_the_header_section() {
    let r = recipient("bob@example.net", 0);
    let mut env = envelope("alice@example.org");
    env.params = MailParams {
        ret: Some(Ret::Headers),
        ..MailParams::default()
    };
    let n = notice(report(ReportKind::Failure, &env, ORIGINAL, &[failed(&r)]));
    let p = parse(&n.content);
    assert!(
        p.parts[2]
            .0
            .contains("Content-Type: text/rfc822-headers\r\n")
    );
    let returned = text(&p.parts[2].1);
    assert!(returned.starts_with("From: Alice"));
    assert!(returned.ends_with("Message-Id: <1@example.org>\r\n"));
    assert!(!returned.contains("noon"));
}

#[test]
fn large_originals_return_headers_within_the_size_limit() {
    let r = recipient("bob@example.net", 0);
    let mut s = settings();
    s.bounce_size_limit = 60;
    let n = notice(build_report(
        &s,
        ReportKind::Failure,
        &envelope("a@example.org"),
        ORIGINAL,
        &[failed(&r)],
        NOW,
        queue_id(),
    ));
    let p = parse(&n.content);
    assert!(p.parts[2].0.contains("text/rfc822-headers"));
    let returned = text(&p.parts[2].1);
    assert!(returned.len() <= 60, "{returned:?}");
    assert_eq!(
        returned,
        "From: Alice <alice@example.org>\r\nTo: bob@example.net\r\n"
    );

    s.bounce_size_limit = ORIGINAL.len();
    let n = notice(build_report(
        &s,
        ReportKind::Failure,
        &envelope("a@example.org"),
        ORIGINAL,
        &[failed(&r)],
        NOW,
        queue_id(),
    ));
    assert!(parse(&n.content).parts[2].0.contains("message/rfc822"));
}

#[test]
fn bare_line_ends_in_the_original_become_crlf() {
    let r = recipient("bob@example.net", 0);
    let n = notice(report(
        ReportKind::Failure,
        &envelope("a@example.org"),
        b"Subject: x\n\nbody\rmore",
        &[failed(&r)],
    ));
    assert_crlf_only(&n.content);
    assert_eq!(
        parse(&n.content).parts[2].1,
        b"Subject: x\r\n\r\nbody\r\nmore\r\n"
    );
}

#[test]
fn utf8_addresses_and_headers_use_the_global_types() {
    let r = recipient("jöran@bücher.example", 0);
    let mut env = envelope("ålice@example.org");
    env.params.smtputf8 = true;
    let original = "From: Ålice <ålice@example.org>\r\nSubject: Grüße\r\n\r\nHallo\r\n".as_bytes();
    let n = notice(report(ReportKind::Failure, &env, original, &[failed(&r)]));
    let p = parse(&n.content);
    assert!(p.head.contains("Content-Transfer-Encoding: 8bit\r\n"));
    assert!(p.parts[0].0.contains("charset=utf-8"));
    assert!(
        p.parts[1]
            .0
            .contains("Content-Type: message/global-delivery-status\r\n")
    );
    let ds = text(&p.parts[1].1);
    assert!(
        ds.contains("Final-Recipient: utf-8; jöran@bücher.example\r\n"),
        "{ds}"
    );
    assert!(p.parts[2].0.contains("Content-Type: message/global\r\n"));

    let mut env = envelope("alice@example.org");
    env.params.ret = Some(Ret::Headers);
    let n = notice(report(ReportKind::Failure, &env, original, &[failed(&r)]));
    assert!(
        parse(&n.content).parts[2]
            .0
            .contains("Content-Type: message/global-headers\r\n")
    );
}

#[test]
fn non_ascii_diagnostics_stay_ascii_in_the_plain_status_part() {
    let r = recipient("bob@example.net", 0);
    let mut f = failed(&r);
    f.diagnostic = "550 Benutzer unbekannt – tschüß".into();
    let n = notice(report(
        ReportKind::Failure,
        &envelope("a@example.org"),
        ORIGINAL,
        &[f],
    ));
    let p = parse(&n.content);
    assert!(
        p.parts[1]
            .0
            .contains("Content-Type: message/delivery-status\r\n")
    );
    assert!(p.parts[1].1.is_ascii());
    assert!(
        text(&p.parts[0].1).contains("tschüß"),
        "the text part keeps it"
    );
}

#[test]
fn injected_line_breaks_do_not_create_headers_or_parts() {
    let mut r = recipient("bob@example.net\r\nBcc: victim@example.com", 0);
    r.orcpt = Some("rfc822;x\r\n\r\n--evil".into());
    let mut f = failed(&r);
    f.diagnostic =
        "550 no\r\nX-Injected: yes\r\n\r\n--evil\r\nContent-Type: text/html\n\rmore".into();
    f.remote_mta = Some("mx\r\nX-Injected: too".into());
    let mut env = envelope("alice@example.org\r\nX-Injected: sender");
    env.params.envid = Some("id\nX-Injected: envid".into());
    let n = notice(report(ReportKind::Failure, &env, ORIGINAL, &[f]));
    assert_crlf_only(&n.content);
    let p = parse(&n.content);
    for (headers, body) in p.parts.iter().take(2) {
        for line in headers.lines().chain(text(body).lines()) {
            assert!(!line.starts_with("X-Injected"), "{line}");
            assert!(!line.starts_with("Bcc"), "{line}");
            assert!(!line.starts_with("--"), "{line}");
        }
    }
    assert!(!p.head.lines().any(|l| l.starts_with("X-Injected")));
    assert_eq!(text(&p.parts[1].1).matches("Final-Recipient:").count(), 1);
}

#[test]
fn long_diagnostics_are_folded() {
    let r = recipient("bob@example.net", 0);
    let mut f = failed(&r);
    f.diagnostic = format!("550 5.7.1 {} {}", "blocked ".repeat(200), "y".repeat(3000));
    let n = notice(report(
        ReportKind::Failure,
        &envelope("a@example.org"),
        ORIGINAL,
        &[f],
    ));
    assert_lines_at_most(&n.content, text::MAX_LINE);
    let p = parse(&n.content);
    let ds = text(&p.parts[1].1);
    let folded_lines: Vec<&str> = ds.split("\r\n").filter(|l| l.contains("blocked")).collect();
    assert!(folded_lines.len() > 10);
    assert!(folded_lines.iter().all(|l| l.len() <= text::FOLD_AT));
}

#[test]
fn boundary_never_occurs_in_the_content() {
    let r = recipient("bob@example.net", 0);
    let env = envelope("a@example.org");
    // First find the boundary the notice would use, then put it (and its
    // first fallback) into the original.
    let first =
        parse(&notice(report(ReportKind::Failure, &env, ORIGINAL, &[failed(&r)])).content).boundary;
    let hostile = format!("Subject: x\r\n\r\n--{first}\r\n--{first}.1--\r\n");
    let n = notice(report(
        ReportKind::Failure,
        &env,
        hostile.as_bytes(),
        &[failed(&r)],
    ));
    let p = parse(&n.content);
    assert_ne!(p.boundary, first);
    assert!(!p.boundary.ends_with(".1"));
    assert_eq!(p.parts[2].1, hostile.as_bytes());
    assert!(p.boundary.len() <= 70);
}

#[test]
fn message_ids_differ_between_notices() {
    let r = recipient("bob@example.net", 0);
    let env = envelope("a@example.org");
    let mut s = settings();
    s.notify_classes = vec!["bounce".into(), "delay".into()];
    let id = |n: Notice| {
        let p = parse(&n.content);
        p.head
            .lines()
            .find(|l| l.starts_with("Message-Id:"))
            .unwrap()
            .to_string()
    };
    let ids = [
        id(notice(build_report(
            &s,
            ReportKind::Failure,
            &env,
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id(),
        ))),
        id(notice(build_report(
            &s,
            ReportKind::Delay,
            &env,
            ORIGINAL,
            &[delayed(&r)],
            NOW,
            queue_id(),
        ))),
        id(notice(postmaster_copy(
            &s,
            ReportKind::Failure,
            &env,
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id(),
        ))),
        id(notice(build_report(
            &s,
            ReportKind::Failure,
            &env,
            ORIGINAL,
            &[failed(&r)],
            NOW + 1,
            queue_id(),
        ))),
    ];
    for (i, a) in ids.iter().enumerate() {
        assert!(a.starts_with("Message-Id: <20261118"), "{a}");
        for b in &ids[i + 1..] {
            assert_ne!(a, b);
        }
    }
}

#[test]
fn postmaster_copies_follow_notify_classes() {
    let r = recipient("bob@example.net", notify::NEVER);
    let env = envelope("alice@example.org");
    let mut s = settings();
    assert!(matches!(
        postmaster_copy(
            &s,
            ReportKind::Failure,
            &env,
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id()
        ),
        BounceOutcome::Nothing { .. }
    ));
    s.notify_classes = vec!["bounce".into(), "delay".into()];
    s.bounce_notice_recipient = "bounces@example.com".into();
    s.delay_notice_recipient = "delays@example.com".into();
    let n = notice(postmaster_copy(
        &s,
        ReportKind::Failure,
        &env,
        ORIGINAL,
        &[failed(&r)],
        NOW,
        queue_id(),
    ));
    assert_eq!(n.recipient, "bounces@example.com");
    assert_eq!(n.sender, "double-bounce@mx.example.com");
    let p = parse(&n.content);
    assert!(
        p.head
            .contains("Subject: Postmaster Copy: Undelivered Mail\r\n")
    );
    assert!(p.parts[2].0.contains("text/rfc822-headers"), "headers only");
    assert!(
        text(&p.parts[1].1).contains("Final-Recipient: rfc822; bob@example.net"),
        "NOTIFY=NEVER still copied"
    );
    let n = notice(postmaster_copy(
        &s,
        ReportKind::Delay,
        &env,
        ORIGINAL,
        &[delayed(&r)],
        NOW,
        queue_id(),
    ));
    assert_eq!(n.recipient, "delays@example.com");
    assert!(
        parse(&n.content)
            .head
            .contains("Subject: Postmaster Warning: Delayed Mail\r\n")
    );
    assert!(matches!(
        postmaster_copy(
            &s,
            ReportKind::Failure,
            &envelope(""),
            ORIGINAL,
            &[failed(&r)],
            NOW,
            queue_id()
        ),
        BounceOutcome::Nothing { .. }
    ));
}

#[test]
fn settings_from_the_parameter_registry() {
    let dir = tempfile::tempdir().unwrap();
    let config = corepost_config::Config::from_parts(
        dir.path(),
        Some("myhostname = mx.example.com\nnotify_classes = bounce, 2bounce,Delay\nbounce_size_limit = 1000\n"),
        None,
    )
    .unwrap();
    let s = BounceSettings::from_params(&|n| config.get(n)).unwrap();
    assert_eq!(s.myhostname, "mx.example.com");
    assert_eq!(s.mail_name, "corepost");
    assert_eq!(s.bounce_size_limit, 1000);
    assert_eq!(s.double_bounce_sender, "double-bounce");
    assert_eq!(s.notify_classes, ["bounce", "2bounce", "delay"]);
    assert_eq!(s.bounce_notice_recipient, "postmaster");
    assert_eq!(s.twobounce_notice_recipient, "postmaster");
    assert_eq!(s.delay_notice_recipient, "postmaster");
}

#[test]
fn orcpt_xtext_is_decoded() {
    assert_eq!(
        original_recipient("rfc822;bob+2Bext@example.net"),
        "rfc822; bob+ext@example.net"
    );
    assert_eq!(original_recipient("RFC822;a+3Db@x"), "RFC822; a=b@x");
    assert_eq!(
        original_recipient("rfc822;a+0D+0AX-Evil:+20y@x"),
        "rfc822; a X-Evil: y@x"
    );
    assert_eq!(
        original_recipient("rfc822;a++1+zz+@x"),
        "rfc822; a++1+zz+@x"
    );
    assert_eq!(original_recipient("rfc822;j+C3+B6ran@x"), "rfc822; jöran@x");
    assert_eq!(
        original_recipient("utf-8;j\\x{F6}ran@x"),
        "utf-8; j\\x{F6}ran@x"
    );
    assert_eq!(original_recipient("bare@x"), "rfc822; bare@x");
    assert_eq!(original_recipient("rfc822;a+FF@x"), "rfc822; a\u{FFFD}@x");
}

#[test]
fn headers_only_returns_do_not_depend_on_the_body_size() {
    let r = recipient("bob@example.net", 0);
    let mut big = ORIGINAL.to_vec();
    big.extend(std::iter::repeat_n(b"0123456789\n".as_slice(), 100_000).flatten());
    let n = notice(report(
        ReportKind::Failure,
        &envelope("a@example.org"),
        &big,
        &[failed(&r)],
    ));
    let p = parse(&n.content);
    assert!(p.parts[2].0.contains("text/rfc822-headers"));
    assert_eq!(p.parts[2].1, text::header_section(ORIGINAL));
    assert!(n.content.len() < 4000);
}

#[test]
fn utc_stamps() {
    assert_eq!(utc_stamp(0), "19700101000000");
    assert_eq!(utc_stamp(951_782_400), "20000229000000");
    assert_eq!(utc_stamp(1_795_000_000), "20261118110640");
    assert_eq!(seconds(u64::MAX), 253_402_300_799);
}

mod structure {
    use super::*;
    use proptest::prelude::*;

    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            ".{0,200}",
            "[ -~\r\n\t\u{0}\u{7f}\u{85}é€-]{0,300}",
            proptest::collection::vec(
                prop_oneof![
                    Just("\r\n".to_string()),
                    Just("--".to_string()),
                    Just(" ".to_string()),
                    "[a-z:;<>@.]{1,20}"
                ],
                0..60
            )
            .prop_map(|v| v.concat()),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

        #[test]
        fn quoted_text_never_breaks_the_mime_structure(
            address in any_text(),
            sender in any_text(),
            diagnostic in any_text(),
            remote in proptest::option::of(any_text()),
            orcpt in proptest::option::of(any_text()),
            envid in proptest::option::of(any_text()),
            status in any_text(),
            original in proptest::collection::vec(any::<u8>(), 0..400),
            delay in any::<bool>(),
            copy in any::<bool>(),
            notify_bits in 0u8..16,
            now in any::<u64>(),
            limit in 0usize..600,
        ) {
            let mut r = recipient(&address, notify_bits);
            r.orcpt = orcpt;
            let f = FailedRecipient {
                recipient: &r,
                status,
                diagnostic,
                remote_mta: remote,
                action: None,
                will_retry_until: Some(now),
            };
            let mut env = envelope(&sender);
            env.params.envid = envid;
            let mut s = settings();
            s.bounce_size_limit = limit;
            s.notify_classes.push("2bounce".into());
            let kind = if delay { ReportKind::Delay } else { ReportKind::Failure };
            let outcome = if copy {
                s.notify_classes.extend(["bounce".to_string(), "delay".to_string()]);
                postmaster_copy(&s, kind, &env, &original, &[f], now, queue_id())
            } else {
                build_report(&s, kind, &env, &original, &[f], now, queue_id())
            };
            if let BounceOutcome::Notice(n) = outcome {
                assert_crlf_only(&n.content);
                prop_assert!(!n.recipient.contains(['\r', '\n']));
                let p = parse(&n.content);
                prop_assert!(p.boundary.len() <= 70);
                let boundary = p.boundary.as_bytes();
                // Outside the returned original, no line is overlong and
                // nothing mentions the boundary.
                assert_lines_at_most(p.head.as_bytes(), text::MAX_LINE);
                for (headers, body) in &p.parts {
                    prop_assert!(memchr::memmem::find(headers.as_bytes(), boundary).is_none());
                    prop_assert!(memchr::memmem::find(body, boundary).is_none());
                }
                for (headers, body) in p.parts.iter().take(2) {
                    assert_lines_at_most(headers.as_bytes(), text::MAX_LINE);
                    assert_lines_at_most(body, text::MAX_LINE);
                }
                // The status part: one recipient block, every line a
                // field or a fold.
                let ds = text(&p.parts[1].1);
                prop_assert_eq!(ds.matches("\r\n\r\n").count(), 1, "{}", ds);
                prop_assert_eq!(ds.matches("\r\nFinal-Recipient:").count(), 1);
                for line in ds.split("\r\n").filter(|l| !l.is_empty()) {
                    prop_assert!(line.starts_with(' ') || line.contains(": "), "{:?}", line);
                }
            }
        }
    }
}

/// Python's `email` package parses the notices as we intend.
#[test]
fn python_email_package_agrees() {
    let dir = tempfile::tempdir().unwrap();
    let bob = recipient("bob@example.net", 0);
    let carol = recipient("carol@example.net", notify::FAILURE | notify::DELAY);
    let mut cases: Vec<(String, &str, &str, &str)> = Vec::new();
    let mut write =
        |name: &str, n: Notice, third: &'static str, status: &'static str, action: &'static str| {
            let path = dir.path().join(name);
            std::fs::write(&path, &n.content).unwrap();
            cases.push((path.display().to_string(), third, status, action));
        };
    let env = envelope("alice@example.org");
    write(
        "full",
        notice(report(
            ReportKind::Failure,
            &env,
            ORIGINAL,
            &[failed(&bob), failed(&carol)],
        )),
        "message/rfc822",
        "5.1.1",
        "failed",
    );
    let mut hdrs = env.clone();
    hdrs.params.ret = Some(Ret::Headers);
    let mut hostile = failed(&bob);
    hostile.diagnostic = format!("550 5.1.1 no\r\nX-Injected: yes\r\n{}", "long ".repeat(60));
    write(
        "hdrs",
        notice(report(
            ReportKind::Failure,
            &hdrs,
            ORIGINAL,
            &[hostile, failed(&carol)],
        )),
        "text/rfc822-headers",
        "5.1.1",
        "failed",
    );
    write(
        "delay",
        notice(report(
            ReportKind::Delay,
            &env,
            ORIGINAL,
            &[delayed(&bob), delayed(&carol)],
        )),
        "text/rfc822-headers",
        "4.4.1",
        "delayed",
    );
    const SCRIPT: &str = r#"
import email, sys
args = sys.argv[1:]
for i in range(0, len(args), 4):
    path, third, status, action = args[i:i + 4]
    with open(path, 'rb') as f:
        msg = email.message_from_bytes(f.read())
    def check(cond, what):
        if not cond:
            sys.exit(f'{path}: {what}')
    for part in msg.walk():
        check(not part.defects, f'defects {part.defects} in {part.get_content_type()}')
    check(msg.get_content_type() == 'multipart/report', 'content type ' + msg.get_content_type())
    check(msg.get_param('report-type') == 'delivery-status', 'report-type')
    check(msg['Auto-Submitted'] == 'auto-replied', 'Auto-Submitted')
    check('X-Injected' not in msg, 'injected header')
    parts = msg.get_payload()
    check(len(parts) == 3, f'{len(parts)} parts')
    check(parts[0].get_content_type() == 'text/plain', 'part 1 ' + parts[0].get_content_type())
    check(parts[1].get_content_type() == 'message/delivery-status', 'part 2')
    blocks = parts[1].get_payload()
    check(len(blocks) == 3, f'{len(blocks)} status blocks')
    check(blocks[0]['Reporting-MTA'] == 'dns; mx.example.com', 'Reporting-MTA')
    for block, rcpt in zip(blocks[1:], ['bob@example.net', 'carol@example.net']):
        check(block['Final-Recipient'] == 'rfc822; ' + rcpt, 'Final-Recipient ' + str(block['Final-Recipient']))
        check(block['Status'] == status, 'Status ' + str(block['Status']))
        check(block['Action'] == action, 'Action ' + str(block['Action']))
        check('X-Injected' not in block, 'injected status field')
    check(parts[2].get_content_type() == third, 'part 3 ' + parts[2].get_content_type())
    if third == 'message/rfc822':
        check(parts[2].get_payload(0)['Subject'] == 'Lunch', 'returned Subject')
    else:
        body = parts[2].get_payload()
        check('Subject: Lunch' in body and 'noon' not in body, 'returned headers')
print('ok')
"#;
    let mut command = std::process::Command::new("python3");
    command.arg("-c").arg(SCRIPT);
    for (path, third, status, action) in &cases {
        command.args([path.as_str(), third, status, action]);
    }
    let output = command.output().expect("python3 runs");
    assert!(
        output.status.success(),
        "python3 rejected a notice: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "ok");
}

#[test]
fn success_notice_reports_the_action_with_the_headers() {
    let r = recipient("bob@example.net", notify::SUCCESS);
    let quiet = recipient("carol@example.net", 0);
    let env = envelope("alice@example.org");
    let delivered = |recipient, action| FailedRecipient {
        recipient,
        status: "2.0.0".into(),
        diagnostic: "delivery via mx.example.net[192.0.2.25]:25: 250 2.0.0 Ok: queued as 4XyZ"
            .into(),
        remote_mta: Some("mx.example.net".into()),
        action: Some(action),
        will_retry_until: None,
    };
    let reports = [delivered(&r, "relayed"), delivered(&quiet, "relayed")];
    let n = notice(report(ReportKind::Success, &env, ORIGINAL, &reports));
    assert_eq!(
        (n.sender.as_str(), n.recipient.as_str()),
        ("", "alice@example.org")
    );
    let p = parse(&n.content);
    assert!(
        p.head
            .contains("Subject: Successful Mail Delivery Report\r\n")
    );
    let ds = text(&p.parts[1].1);
    assert!(ds.contains("Final-Recipient: rfc822; bob@example.net\r\nAction: relayed\r\nStatus: 2.0.0\r\nRemote-MTA: dns; mx.example.net\r\nDiagnostic-Code: smtp; 250 2.0.0 Ok: queued as 4XyZ\r\n"), "{ds}");
    assert!(
        !ds.contains("carol"),
        "NOTIFY without SUCCESS gets no notice: {ds}"
    );
    assert!(
        p.parts[2].0.contains("text/rfc822-headers"),
        "{}",
        p.parts[2].0
    );
    // Nobody asked: nothing.
    let none = report(
        ReportKind::Success,
        &env,
        ORIGINAL,
        &[delivered(&quiet, "delivered")],
    );
    assert!(matches!(none, BounceOutcome::Nothing { .. }));
}

#[test]
fn expired_recipient_keeps_its_temporary_status_and_fails() {
    let r = recipient("bob@example.net", 0);
    let env = envelope("alice@example.org");
    let f = FailedRecipient {
        recipient: &r,
        status: "4.7.0".into(),
        diagnostic: "host mx.example.net[192.0.2.25] said: 450 4.7.0 greylisted (in reply to RCPT TO command)".into(),
        remote_mta: Some("mx.example.net".into()),
        action: None,
        will_retry_until: None,
    };
    let n = notice(report(ReportKind::Failure, &env, ORIGINAL, &[f]));
    let ds = text(&parse(&n.content).parts[1].1);
    assert!(ds.contains("Action: failed\r\nStatus: 4.7.0\r\n"), "{ds}");
    assert!(
        ds.contains("Diagnostic-Code: smtp; 450 4.7.0 greylisted\r\n"),
        "{ds}"
    );
}

#[test]
fn the_reply_is_taken_out_of_our_diagnostic() {
    assert_eq!(
        smtp_reply_of("host a[1.2.3.4] said: 550 5.1.1 no (in reply to RCPT TO command)"),
        "550 5.1.1 no"
    );
    assert_eq!(smtp_reply_of("host a said: 550 x"), "550 x");
    assert_eq!(
        smtp_reply_of("delivery via a[1.2.3.4]:25: 250 2.0.0 Ok"),
        "250 2.0.0 Ok"
    );
    assert_eq!(
        smtp_reply_of("connect to a: refused"),
        "connect to a: refused"
    );
    assert_eq!(
        smtp_reply_of("host a said: no digits"),
        "host a said: no digits"
    );
}
