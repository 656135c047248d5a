//! `sendmail -bs`: an SMTP dialogue on standard input and output (what
//! programs that speak SMTP to a pipe expect). Each message accepted with
//! a 250 is in the maildrop, like any other local submission.

use super::sendmail::{EX_CONFIG, deposit_quiet};
use crate::pickup::maildrop::Submission;
use corepost_config::Config;
use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::ExitCode;

/// Longest command line accepted.
const MAX_LINE: usize = 2048;

fn path_of(arg: &str) -> Option<String> {
    let a = arg.trim();
    let inner = a.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_string())
}

/// Run the dialogue until QUIT or end of input.
pub fn run(dir: &Path) -> ExitCode {
    let config = match Config::load(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sendmail: fatal: {e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    if let Some(refused) = super::sendmail::submit_refusal(&config) {
        return refused;
    }
    let host = config.get("myhostname").unwrap_or_default();
    let name = config.get("mail_name").unwrap_or_default();
    let limit = config
        .get_size("message_size_limit")
        .ok()
        .filter(|l| *l > 0)
        .unwrap_or(u64::MAX);
    let stdin = std::io::stdin();
    let mut input = stdin.lock();
    let mut out = std::io::stdout().lock();
    let say = |out: &mut dyn Write, text: &str| {
        let _ = out.write_all(format!("{text}\r\n").as_bytes());
        let _ = out.flush();
    };
    say(&mut out, &format!("220 {host} ESMTP {name}"));
    let mut sender: Option<String> = None;
    let mut recipients: Vec<String> = Vec::new();
    loop {
        let mut line = Vec::new();
        match (&mut input)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return ExitCode::SUCCESS,
            Ok(_) => {}
        }
        let text = String::from_utf8_lossy(&line).trim_end().to_string();
        let upper = text.to_ascii_uppercase();
        let verb = upper.split_whitespace().next().unwrap_or("");
        match verb {
            "EHLO" => say(
                &mut out,
                &format!("250-{host}\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE {limit}"),
            ),
            "HELO" => say(&mut out, &format!("250 {host}")),
            "NOOP" => say(&mut out, "250 2.0.0 Ok"),
            "RSET" => {
                sender = None;
                recipients.clear();
                say(&mut out, "250 2.0.0 Ok");
            }
            "QUIT" => {
                say(&mut out, "221 2.0.0 Bye");
                return ExitCode::SUCCESS;
            }
            "MAIL" if upper.starts_with("MAIL FROM:") => match path_of(&text[10..]) {
                Some(p) if sender.is_none() => {
                    sender = Some(p);
                    recipients.clear();
                    say(&mut out, "250 2.1.0 Ok");
                }
                Some(_) => say(&mut out, "503 5.5.1 Error: nested MAIL command"),
                None => say(&mut out, "501 5.1.7 Bad sender address syntax"),
            },
            "RCPT" if upper.starts_with("RCPT TO:") => {
                match (sender.is_some(), path_of(&text[8..])) {
                    (false, _) => say(&mut out, "503 5.5.1 Error: need MAIL command"),
                    (true, Some(p)) if !p.is_empty() => {
                        recipients.push(p);
                        say(&mut out, "250 2.1.5 Ok");
                    }
                    _ => say(&mut out, "501 5.1.3 Bad recipient address syntax"),
                }
            }
            "DATA" => {
                if recipients.is_empty() {
                    say(&mut out, "503 5.5.1 Error: need RCPT command");
                    continue;
                }
                say(&mut out, "354 End data with <CR><LF>.<CR><LF>");
                let mut content = Vec::new();
                let mut too_big = false;
                loop {
                    let mut l = Vec::new();
                    match input.read_until(b'\n', &mut l) {
                        Ok(0) | Err(_) => return ExitCode::SUCCESS,
                        Ok(_) => {}
                    }
                    let bare = l
                        .strip_suffix(b"\n")
                        .map(|x| x.strip_suffix(b"\r").unwrap_or(x))
                        .unwrap_or(&l);
                    if bare == b"." {
                        break;
                    }
                    let bare = bare.strip_prefix(b".").unwrap_or(bare);
                    if content.len() as u64 + bare.len() as u64 + 2 > limit {
                        too_big = true;
                        continue;
                    }
                    content.extend_from_slice(bare);
                    content.extend_from_slice(b"\r\n");
                }
                let submission = Submission {
                    sender: sender.take().unwrap_or_default(),
                    recipients: std::mem::take(&mut recipients),
                    content,
                    ..Submission::default()
                };
                if too_big {
                    say(&mut out, "552 5.3.4 Error: message file too big");
                    continue;
                }
                match deposit_quiet(&config, &submission) {
                    Ok(()) => say(&mut out, "250 2.0.0 Ok: queued"),
                    Err(e) => say(&mut out, &format!("451 4.3.0 Error: {e}")),
                }
            }
            _ => say(&mut out, "502 5.5.2 Error: command not recognized"),
        }
    }
}
