//! The expected outputs are what Postfix 3.7.11 relayed to a sink without 8BITMIME for the same
//! input (the headers Postfix's cleanup adds left out).

use super::*;

fn crlf(text: &str) -> Vec<u8> {
    text.replace('\n', "\r\n").into_bytes()
}

fn converted(input: &str) -> String {
    String::from_utf8(to_seven_bit(&crlf(input)).expect("converted")).unwrap()
}

#[test]
fn single_part_becomes_quoted_printable_with_the_header_moved_last() {
    let out = converted(
        "Subject: nomime\nContent-Transfer-Encoding: 8bit\nFrom: s@src.test\n\ncaf\u{e9} a=b \n",
    );
    assert_eq!(
        out,
        crlf("Subject: nomime\nFrom: s@src.test\nContent-Transfer-Encoding: quoted-printable\n\ncaf=C3=A9 a=3Db=20\n")
            .iter()
            .map(|&b| b as char)
            .collect::<String>()
    );
}

#[test]
fn multipart_parts_and_attached_messages() {
    let input = "Subject: multi\nMIME-Version: 1.0\nContent-Type: multipart/mixed;\n boundary=\"BB\"\n\
        Content-Transfer-Encoding: 8bit\n\npreamble caf\u{e9}\n--BB\n\
        Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\npart1 caf\u{e9} a=b\n\
        --BB\nContent-Type: text/plain\n\npart2 plain caf\u{e9}\n\
        --BB\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAAA\n\
        --BB\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 8bit\n\n\
        Subject: inner\nContent-Type: text/plain\nContent-Transfer-Encoding: 8BIT\nX-After: 1\n\ninner caf\u{e9}\n\
        --BB--\nepilogue caf\u{e9}\n";
    let expected = "Subject: multi\nMIME-Version: 1.0\nContent-Type: multipart/mixed;\n boundary=\"BB\"\n\
        Content-Transfer-Encoding: 7bit\n\npreamble caf\u{e9}\n--BB\n\
        Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\npart1 caf=C3=A9 a=3Db\n\
        --BB\nContent-Type: text/plain\n\npart2 plain caf\u{e9}\n\
        --BB\nContent-Type: application/octet-stream\nContent-Transfer-Encoding: base64\n\nAAAA\n\
        --BB\nContent-Type: message/rfc822\nContent-Transfer-Encoding: 7bit\n\n\
        Subject: inner\nContent-Type: text/plain\nX-After: 1\nContent-Transfer-Encoding: quoted-printable\n\ninner caf=C3=A9\n\
        --BB--\nepilogue caf\u{e9}\n";
    let out = to_seven_bit(&crlf(input)).expect("converted");
    assert_eq!(
        String::from_utf8_lossy(&out),
        String::from_utf8_lossy(&crlf(expected))
    );
}

#[test]
fn binary_is_converted_and_undeclared_or_seven_bit_content_is_left_alone() {
    let out = converted(
        "MIME-Version: 1.0\nContent-Transfer-Encoding: binary\nContent-Type: text/plain\n\ncaf\u{e9}\n",
    );
    assert!(out.ends_with("Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=C3=A9\r\n"), "{out}");
    assert!(
        to_seven_bit(&crlf(
            "MIME-Version: 1.0\nContent-Type: text/plain\n\ncaf\u{e9}\n"
        ))
        .is_none()
    );
    assert!(
        to_seven_bit(&crlf(
            "Content-Transfer-Encoding: quoted-printable\n\na=3Db\n"
        ))
        .is_none()
    );
    assert!(to_seven_bit(b"").is_none());
}

/// Postfix's soft breaks: a line of 2,500 `x` became 34 lines of 73 `x` and `=`, then 18 `x`.
#[test]
fn long_lines_get_soft_breaks_as_postfix() {
    let mut input = crlf("Content-Transfer-Encoding: 8bit\n\n");
    input.extend(std::iter::repeat_n(b'x', 2500));
    input.extend_from_slice(b"\r\n");
    let out = to_seven_bit(&input).unwrap();
    let body = &out[out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 36);
    for l in &lines[..34] {
        assert_eq!(l.len(), 75, "73 x, =, CR");
        assert!(l.ends_with(b"=\r"));
    }
    assert_eq!(
        lines[34],
        &[b'x'; 18]
            .iter()
            .copied()
            .chain([b'\r'])
            .collect::<Vec<u8>>()[..]
    );
    // An encoded byte near the limit can take the line to 76 with its soft break.
    let mut out = Vec::new();
    let mut line = vec![b'a'; 72];
    line.extend_from_slice("\u{e9}b".as_bytes());
    encode_line(&mut out, &line);
    let first = out.split(|&b| b == b'\n').next().unwrap();
    assert!(
        first.len() <= 77 && first.ends_with(b"=\r"),
        "{}",
        String::from_utf8_lossy(first)
    );
    let mut out = Vec::new();
    encode_line(&mut out, b"tab\t");
    assert_eq!(out, b"tab=09\r\n");
}

#[test]
fn nested_multipart_boundaries_and_digest_defaults() {
    let input = "Content-Type: multipart/mixed; boundary=outer\n\n--outer\n\
        Content-Type: multipart/digest; boundary=\"in\"\n\n--in\n\n\
        Content-Transfer-Encoding: 8bit\n\ndigest \u{e9}\n--outer--\n";
    let out = converted(input);
    // The digest part's default type is message/rfc822: its headers are the blank line's
    // successor; the attached message's body is encoded; the outer boundary closes the inner.
    assert!(out.contains("--in\r\n\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ndigest =C3=A9\r\n--outer--\r\n"), "{out}");
}

#[test]
fn parameters_are_parsed_quoted_or_not() {
    assert_eq!(
        parameter(b" charset=x; boundary=\"a;b\\\"c\"", b"boundary"),
        Some(b"a;b\"c".to_vec())
    );
    assert_eq!(
        parameter(b"boundary=plain ; x=y", b"BOUNDARY"),
        Some(b"plain".to_vec())
    );
    assert_eq!(parameter(b"x", b"boundary"), None);
    assert_eq!(
        content_kind(b" multipart/alternative;\r\n boundary=zz"),
        Kind::Multipart {
            boundary: b"zz".to_vec(),
            digest: false
        }
    );
    assert_eq!(content_kind(b"Message/RFC822"), Kind::Message);
}
