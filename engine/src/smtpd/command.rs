//! SMTP command parsing (RFC 5321 §4.1, with the ESMTP parameters of RFC
//! 1870 SIZE, 6152 8BITMIME, 3030 CHUNKING/BINARYMIME, 3461 DSN and 6531
//! SMTPUTF8).
//!
//! [`parse_command`] turns one command line (without its CRLF) into a
//! [`Command`] or a [`SyntaxError`] that already knows its reply. It is pure
//! and total: any byte string gives one or the other, never a panic.

use super::reply::Reply;

/// A parsed SMTP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// `bracketed`: the path was in `<>` (strict_rfc821_envelopes wants it).
    Mail {
        path: String,
        params: Vec<Param>,
        bracketed: bool,
    },
    Rcpt {
        path: String,
        params: Vec<Param>,
        bracketed: bool,
    },
    Data,
    Bdat {
        size: u64,
        last: bool,
    },
    Rset,
    Noop,
    Quit,
    Vrfy(String),
    /// ETRN (RFC 1985) with its argument (empty when none was given).
    Etrn(String),
    StartTls,
    Auth(String),
    /// XCLIENT with its attributes.
    Xclient(String),
    /// A verb listed in smtpd_noop_commands (see [`parse_command`]).
    Ignored,
}

impl Command {
    /// Lower-case verb, for the per-command counters of the disconnect log
    /// line (`ehlo=1 mail=1 rcpt=1 data=1 quit=1`).
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Helo(_) => "helo",
            Command::Ehlo(_) => "ehlo",
            Command::Mail { .. } => "mail",
            Command::Rcpt { .. } => "rcpt",
            Command::Data => "data",
            Command::Bdat { .. } => "bdat",
            Command::Rset => "rset",
            Command::Noop => "noop",
            Command::Quit => "quit",
            Command::Vrfy(_) => "vrfy",
            Command::Etrn(_) => "etrn",
            Command::Xclient(_) => "xclient",
            Command::StartTls => "starttls",
            Command::Auth(_) => "auth",
            Command::Ignored => "noop",
        }
    }
}

/// An ESMTP parameter `KEYWORD[=value]`, keyword upper-cased.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub keyword: String,
    pub value: Option<String>,
    /// The word as the client wrote it (Postfix quotes it in replies).
    pub raw: String,
}

/// A command that could not be parsed, with the reply it deserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub reply: Reply,
    /// The verb, if it was recognised (for the counters).
    pub verb: Option<&'static str>,
}

fn error(
    code: u16,
    status: &'static str,
    text: impl Into<String>,
    verb: Option<&'static str>,
) -> SyntaxError {
    SyntaxError {
        reply: Reply::new(code, status, text),
        verb,
    }
}

/// Parse one command line (CRLF already removed). `noop_commands`
/// (smtpd_noop_commands, upper case) are verbs answered with 250 and
/// otherwise ignored, as Postfix does.
pub fn parse_command(line: &[u8], noop_commands: &[String]) -> Result<Command, SyntaxError> {
    let Ok(line) = std::str::from_utf8(line) else {
        return Err(error(
            500,
            "5.5.2",
            "Error: command contains invalid UTF-8",
            None,
        ));
    };
    if line.contains('\0') {
        return Err(error(500, "5.5.2", "Error: command contains NUL", None));
    }
    let line = line.trim_end_matches([' ', '\t']);
    let (verb, rest) = match line.find([' ', '\t']) {
        Some(i) => (&line[..i], line[i..].trim_start_matches([' ', '\t'])),
        None => (line, ""),
    };
    let upper = verb.to_ascii_uppercase();
    if noop_commands.contains(&upper) {
        return Ok(Command::Ignored);
    }
    let no_args = |cmd: Command, name: &'static str| {
        if rest.is_empty() {
            Ok(cmd)
        } else {
            Err(error(
                501,
                "5.5.4",
                format!("Syntax: {}", name.to_ascii_uppercase()),
                Some(name),
            ))
        }
    };
    match upper.as_str() {
        "HELO" | "EHLO" => {
            let name = if upper == "HELO" { "helo" } else { "ehlo" };
            if rest.is_empty() {
                // Postfix: no enhanced status code here.
                return Err(error(
                    501,
                    "",
                    format!("Syntax: {} hostname", upper),
                    Some(name),
                ));
            }
            // Postfix takes the first word as the name.
            let host = rest.split([' ', '\t']).next().unwrap_or(rest).to_string();
            Ok(if upper == "HELO" {
                Command::Helo(host)
            } else {
                Command::Ehlo(host)
            })
        }
        "MAIL" => {
            let (path, params, bracketed) = parse_path_command(rest, "FROM:", "mail")?;
            Ok(Command::Mail {
                path,
                params,
                bracketed,
            })
        }
        "RCPT" => {
            let (path, params, bracketed) = parse_path_command(rest, "TO:", "rcpt")?;
            Ok(Command::Rcpt {
                path,
                params,
                bracketed,
            })
        }
        "DATA" => no_args(Command::Data, "data"),
        "RSET" => no_args(Command::Rset, "rset"),
        "NOOP" => Ok(Command::Noop), // RFC 5321 allows an argument
        "QUIT" => no_args(Command::Quit, "quit"),
        "STARTTLS" => no_args(Command::StartTls, "starttls"),
        "VRFY" => {
            if rest.is_empty() {
                Err(error(
                    501,
                    "5.5.4",
                    "Syntax: VRFY address [SMTPUTF8]",
                    Some("vrfy"),
                ))
            } else {
                Ok(Command::Vrfy(rest.to_string()))
            }
        }
        "ETRN" => Ok(Command::Etrn(rest.to_string())),
        "XCLIENT" => Ok(Command::Xclient(rest.to_string())),
        "AUTH" => Ok(Command::Auth(rest.to_string())),
        "BDAT" => {
            let mut words = rest.split([' ', '\t']).filter(|w| !w.is_empty());
            let size = words.next().and_then(|w| {
                if w.bytes().all(|b| b.is_ascii_digit()) && w.len() <= 19 {
                    w.parse::<u64>().ok()
                } else {
                    None
                }
            });
            let last = words.next();
            let extra = words.next();
            match (size, last, extra) {
                (Some(size), None, None) => Ok(Command::Bdat { size, last: false }),
                (Some(size), Some(l), None) if l.eq_ignore_ascii_case("LAST") => {
                    Ok(Command::Bdat { size, last: true })
                }
                // Postfix: 521 and hang up, since the chunk that may
                // follow cannot be skipped.
                _ => Err(error(
                    521,
                    "5.5.4",
                    "Syntax: BDAT count [LAST]",
                    Some("bdat"),
                )),
            }
        }
        "" => Err(error(500, "5.5.2", "Error: bad syntax", None)),
        // Postfix (and RFC 5321 §4.2.4) answer 500; HELP and EXPN are not
        // implemented by Postfix either.
        _ => Err(error(500, "5.5.2", "Error: command not recognized", None)),
    }
}

/// `FROM:<path> params` / `TO:<path> params`.
fn parse_path_command(
    rest: &str,
    keyword: &str,
    verb: &'static str,
) -> Result<(String, Vec<Param>, bool), SyntaxError> {
    let syntax = || {
        error(
            501,
            "5.5.4",
            format!("Syntax: {} {}<address>", verb.to_ascii_uppercase(), keyword),
            Some(verb),
        )
    };
    // `get`: the keyword's length may fall inside a multi-byte character
    // (found by the smtp_command fuzz target).
    if !rest
        .get(..keyword.len())
        .is_some_and(|k| k.eq_ignore_ascii_case(keyword))
    {
        return Err(syntax());
    }
    // Postfix tolerates whitespace after the colon.
    let rest = rest[keyword.len()..].trim_start_matches([' ', '\t']);
    let bad_address = || {
        if verb == "mail" {
            error(501, "5.1.7", "Bad sender address syntax", Some(verb))
        } else {
            error(501, "5.1.3", "Bad recipient address syntax", Some(verb))
        }
    };
    let bracketed = rest.starts_with('<');
    if rest.is_empty() {
        return Err(syntax());
    }
    let (path, params) = if let Some(inner) = rest.strip_prefix('<') {
        let end = find_path_end(inner).ok_or_else(bad_address)?;
        (&inner[..end], &inner[end + 1..])
    } else {
        // Without angle brackets (tolerated unless strict_rfc821_envelopes).
        match rest.find([' ', '\t']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        }
    };
    if !params.is_empty() && !params.starts_with([' ', '\t']) {
        return Err(bad_address());
    }
    let mut parsed = Vec::new();
    for word in params.split([' ', '\t']).filter(|w| !w.is_empty()) {
        let (k, v) = match word.split_once('=') {
            Some((k, v)) => (k, Some(v.to_string())),
            None => (word, None),
        };
        // Malformed words (`=x`) are unsupported options to the session,
        // as in Postfix.
        parsed.push(Param {
            keyword: k.to_ascii_uppercase(),
            value: v,
            raw: word.to_string(),
        });
    }
    Ok((path.to_string(), parsed, bracketed))
}

/// Index of the `>` closing a path, skipping quoted strings.
fn find_path_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// fuzz/artifacts/smtp_command crash: a multi-byte character where the
    /// `TO:` keyword would end panicked on a slice.
    #[test]
    fn a_multibyte_character_at_the_keyword_boundary_is_a_syntax_error() {
        let line = b"RCPT \x0f,\xd4\x95\xd4\x95\xd4\x95RYCPT \x0f,RFYPP";
        assert!(parse_command(line, &[]).is_err());
        assert!(parse_command("MAIL FRéOM:<a@b>".as_bytes(), &[]).is_err());
    }
    use proptest::prelude::*;

    fn ok(line: &str) -> Command {
        parse_command(line.as_bytes(), &[]).unwrap()
    }

    fn err(line: &str) -> u16 {
        parse_command(line.as_bytes(), &[]).unwrap_err().reply.code
    }

    #[test]
    fn greetings() {
        assert_eq!(
            ok("EHLO client.example.org"),
            Command::Ehlo("client.example.org".into())
        );
        assert_eq!(ok("helo [192.0.2.1]"), Command::Helo("[192.0.2.1]".into()));
        assert_eq!(err("EHLO"), 501);
    }

    #[test]
    fn mail_and_rcpt() {
        assert_eq!(
            ok("MAIL FROM:<a@example.org> SIZE=1000 BODY=8BITMIME"),
            Command::Mail {
                path: "a@example.org".into(),
                params: vec![
                    Param {
                        keyword: "SIZE".into(),
                        value: Some("1000".into()),
                        raw: "SIZE=1000".into()
                    },
                    Param {
                        keyword: "BODY".into(),
                        value: Some("8BITMIME".into()),
                        raw: "BODY=8BITMIME".into()
                    },
                ],
                bracketed: true
            }
        );
        assert_eq!(
            ok("mail from:<>"),
            Command::Mail {
                path: "".into(),
                params: vec![],
                bracketed: true
            }
        );
        assert_eq!(
            ok("MAIL FROM: <a@b>"),
            Command::Mail {
                path: "a@b".into(),
                params: vec![],
                bracketed: true
            }
        );
        assert_eq!(
            ok("MAIL FROM:a@b"),
            Command::Mail {
                path: "a@b".into(),
                params: vec![],
                bracketed: false
            }
        );
        assert_eq!(
            ok("RCPT TO:<\"odd>name\"@example.com> NOTIFY=SUCCESS,FAILURE"),
            Command::Rcpt {
                path: "\"odd>name\"@example.com".into(),
                params: vec![Param {
                    keyword: "NOTIFY".into(),
                    value: Some("SUCCESS,FAILURE".into()),
                    raw: "NOTIFY=SUCCESS,FAILURE".into()
                }],
                bracketed: true
            }
        );
        assert_eq!(err("MAIL TO:<a@b>"), 501);
        assert_eq!(err("MAIL FROM:<a@b"), 501);
        assert_eq!(err("RCPT TO:<a@b>junk"), 501);
    }

    #[test]
    fn bdat() {
        assert_eq!(
            ok("BDAT 100"),
            Command::Bdat {
                size: 100,
                last: false
            }
        );
        assert_eq!(
            ok("BDAT 0 LAST"),
            Command::Bdat {
                size: 0,
                last: true
            }
        );
        assert_eq!(err("BDAT"), 521);
        assert_eq!(err("BDAT -1"), 521);
        assert_eq!(err("BDAT 1 FIRST"), 521);
        assert_eq!(err("BDAT 99999999999999999999"), 521);
    }

    #[test]
    fn others() {
        assert_eq!(ok("DATA"), Command::Data);
        assert_eq!(err("DATA now"), 501);
        assert_eq!(ok("NOOP whatever"), Command::Noop);
        assert_eq!(ok("quit"), Command::Quit);
        assert_eq!(err("FROB"), 500);
        assert_eq!(err("HELP"), 500);
        assert_eq!(err("EXPN root"), 500);
        assert_eq!(ok("ETRN example.com"), Command::Etrn("example.com".into()));
        assert_eq!(
            parse_command(b"xyzzy 1", &["XYZZY".to_string()]),
            Ok(Command::Ignored)
        );
        let bad = parse_command(b"MAIL FROM:<a@b> junk=1", &[]);
        assert!(bad.is_ok(), "parameters are judged by the session");
        assert_eq!(
            parse_command(b"MAIL FROM:<a@b", &[])
                .unwrap_err()
                .reply
                .summary(),
            "501 5.1.7 Bad sender address syntax"
        );
        assert_eq!(
            parse_command(b"RCPT TO:<a@b>x", &[])
                .unwrap_err()
                .reply
                .summary(),
            "501 5.1.3 Bad recipient address syntax"
        );
        assert_eq!(err(""), 500);
        assert_eq!(err("VRFY"), 501);
        assert_eq!(
            parse_command(b"MAIL FROM:<\xff>", &[])
                .unwrap_err()
                .reply
                .code,
            500
        );
    }

    proptest! {
        #[test]
        fn any_bytes_parse_or_error(line in proptest::collection::vec(any::<u8>(), 0..120)) {
            let _ = parse_command(&line, &[]);
        }

        #[test]
        fn mail_paths_round_trip(local in "[a-z0-9.+_-]{1,20}", domain in "[a-z0-9-]{1,10}\\.[a-z]{2,5}") {
            let path = format!("{local}@{domain}");
            prop_assert_eq!(
                parse_command(format!("MAIL FROM:<{path}>").as_bytes(), &[]).unwrap(),
                Command::Mail { path, params: vec![], bracketed: true }
            );
        }
    }
}
