//! DKIM signing end to end: the daemon signs mail from internal clients
//! (and local submission) at reception with an RSA-2048 and an Ed25519 key
//! from OpenDKIM-style tables, relays it to a sink, and two independent
//! verifiers check what the sink received: python3-dkim (`dkim.verify`
//! with the TXT records handed in, no DNS) and OpenDKIM itself (`opendkim
//! -t` in test mode with `TestPublicKeys`, no DNS).

mod support;

use std::path::Path;
use std::process::Command;
use support::*;

/// Keys, tables and the TXT records for them, in `dir`.
struct Keys {
    /// `(name, TXT record)` for `sel._domainkey.rsa.example` and
    /// `ed._domainkey.ed.example`.
    records: Vec<(String, String)>,
    key_table: String,
    signing_table: String,
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    out.stdout
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn make_keys(dir: &Path) -> Keys {
    let rsa = dir.join("rsa.pem");
    let ed = dir.join("ed.pem");
    let (rsa_s, ed_s) = (rsa.display().to_string(), ed.display().to_string());
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        &rsa_s,
    ]);
    openssl(&["genpkey", "-algorithm", "ed25519", "-out", &ed_s]);
    let rsa_pub = openssl(&["pkey", "-in", &rsa_s, "-pubout", "-outform", "DER"]);
    let ed_pub = openssl(&["pkey", "-in", &ed_s, "-pubout", "-outform", "DER"]);
    // The raw Ed25519 key is the last 32 bytes of its SubjectPublicKeyInfo.
    let ed_raw = &ed_pub[ed_pub.len() - 32..];
    let key_table = dir.join("key.table");
    std::fs::write(
        &key_table,
        format!("# OpenDKIM KeyTable\nrsa rsa.example:sel:{rsa_s}\ned ed.example:ed:{ed_s}\n"),
    )
    .expect("key table");
    let signing_table = dir.join("signing.table");
    std::fs::write(&signing_table, "*@rsa.example rsa\n*@ed.example ed\n").expect("signing");
    Keys {
        records: vec![
            (
                "sel._domainkey.rsa.example".into(),
                format!("v=DKIM1; k=rsa; p={}", b64(&rsa_pub)),
            ),
            (
                "ed._domainkey.ed.example".into(),
                format!("v=DKIM1; k=ed25519; p={}", b64(ed_raw)),
            ),
        ],
        key_table: format!("file:{}", key_table.display()),
        signing_table: format!("refile:{}", signing_table.display()),
    }
}

fn signing_config(sink: &Sink, keys: &Keys, extra: &str) -> String {
    format!(
        "relayhost = [127.0.0.1]:{}\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nmynetworks = 127.0.0.0/8\ncorepost_dkim_key_table = {}\ncorepost_dkim_signing_table = {}\n{extra}",
        sink.port, keys.key_table, keys.signing_table
    )
}

/// The Python with python3-dkim (Debian's, not a pyenv shim's).
fn python3() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// python3-dkim's verdict on `message`, the records answering its lookups.
fn python_dkim_verifies(message: &[u8], keys: &Keys, dir: &Path) -> bool {
    let file = dir.join("verify.eml");
    std::fs::write(&file, message).expect("write message");
    let records: String = keys
        .records
        .iter()
        .map(|(n, v)| format!("b'{n}.': b'{v}', "))
        .collect();
    let script = format!(
        "import dkim, sys\nrecords = {{{records}}}\ndef dns(name, timeout=5):\n    return records.get(name if name.endswith(b'.') else name + b'.')\nmsg = open('{}', 'rb').read()\nsys.exit(0 if dkim.verify(msg, dnsfunc=dns) else 1)\n",
        file.display()
    );
    let out = Command::new(python3())
        .args(["-c", &script])
        .output()
        .expect("python3");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "python3-dkim did not run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.status.success()
}

/// OpenDKIM's verdict on `message`: `pass`, `fail`, or what it said.
fn opendkim_result(message: &[u8], keys: &Keys, dir: &Path) -> String {
    let public = dir.join("opendkim.keys");
    let records: String = keys
        .records
        .iter()
        .map(|(n, v)| format!("{n} {v}\n"))
        .collect();
    std::fs::write(&public, records).expect("keys");
    let conf = dir.join("opendkim.conf");
    std::fs::write(
        &conf,
        format!("Mode v\nSyslog no\nTestPublicKeys {}\n", public.display()),
    )
    .expect("conf");
    // Test mode reads a file with LF line ends, as a mail store holds it.
    let file = dir.join("opendkim.eml");
    let lf: Vec<u8> = message.iter().copied().filter(|&b| b != b'\r').collect();
    std::fs::write(&file, lf).expect("message");
    let out = Command::new("opendkim")
        .arg("-x")
        .arg(&conf)
        .arg("-t")
        .arg(&file)
        .output()
        .expect("opendkim");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if text.contains(") succeeded") {
        "pass".into()
    } else if text.contains(" failed: signature verification failed") {
        "fail".into()
    } else {
        format!("no verdict: {text}")
    }
}

fn signatures(message: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(message);
    let header = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in header.split("\r\n") {
        if line.starts_with(' ') || line.starts_with('\t') {
            if let Some(last) = out.last_mut().filter(|l| l.starts_with("DKIM-Signature:")) {
                last.push_str(line);
            }
        } else {
            out.push(line.to_string());
        }
    }
    out.retain(|l| l.starts_with("DKIM-Signature:"));
    out
}

#[test]
fn rsa_and_ed25519_signatures_verify_with_python_dkim_and_opendkim() {
    let sink = Sink::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = make_keys(tmp.path());
    let d = Daemon::start(&signing_config(&sink, &keys, ""));
    let body = "Hello,\r\n\r\n  spaced   out  \t\r\n..a dot line\r\n\r\n\r\n";
    let rsa_id = submit(
        d.port,
        "bulk@rsa.example",
        &["x@remote.example"],
        &format!(
            "From: Bulk <bulk@rsa.example>\r\nTo: x@remote.example\r\nSubject: rsa\r\n\r\n{body}"
        ),
    );
    submit(
        d.port,
        "news@ed.example",
        &["x@remote.example"],
        &format!("From: news@ed.example\r\nTo: x@remote.example\r\nSubject: ed25519\r\n\r\n{body}"),
    );
    let got = sink.wait_for(2, 20);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    for (sender, _, content) in &got.messages {
        let sigs = signatures(content);
        assert_eq!(sigs.len(), 1, "{}", String::from_utf8_lossy(content));
        let algorithm = if sender.ends_with("rsa.example") {
            "a=rsa-sha256; c=relaxed/relaxed; d=rsa.example"
        } else {
            "a=ed25519-sha256; c=relaxed/relaxed; d=ed.example"
        };
        assert!(sigs[0].contains(algorithm), "{}", sigs[0]);
        assert!(
            python_dkim_verifies(content, &keys, tmp.path()),
            "python3-dkim: {}",
            String::from_utf8_lossy(content)
        );
        assert_eq!(opendkim_result(content, &keys, tmp.path()), "pass");
        // Both verifiers can fail: a changed body no longer verifies.
        let text = String::from_utf8_lossy(content).replace("Hello,", "Hullo,");
        assert!(!python_dkim_verifies(text.as_bytes(), &keys, tmp.path()));
        assert_eq!(opendkim_result(text.as_bytes(), &keys, tmp.path()), "fail");
    }
    assert!(
        d.log().contains(&format!(
            "{rsa_id}: DKIM-Signature field added (s=sel, d=rsa.example)"
        )),
        "{}",
        d.log()
    );
}

#[test]
fn simple_canonicalization_verifies_too() {
    let sink = Sink::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = make_keys(tmp.path());
    let d = Daemon::start(&signing_config(
        &sink,
        &keys,
        "corepost_dkim_canonicalization = simple/simple\n",
    ));
    submit(
        d.port,
        "bulk@rsa.example",
        &["x@remote.example"],
        "From: bulk@rsa.example\r\nSubject: spaced  \r\n\r\nbody  \r\n\r\n",
    );
    submit(
        d.port,
        "bulk@rsa.example",
        &["x@remote.example"],
        "From: bulk@rsa.example\r\nSubject:   folded\r\n  subject\r\n\r\nbody\r\n",
    );
    let got = sink.wait_for(2, 20);
    assert_eq!(got.messages.len(), 2, "{}", d.log());
    for (_, _, content) in &got.messages {
        assert!(signatures(content)[0].contains("c=simple/simple"));
        assert!(python_dkim_verifies(content, &keys, tmp.path()));
    }
    // opendkim's test mode (-t) rebuilds each field as `name: value`, so
    // simple header canonicalization fails there on a folded field or more
    // than one space after the colon, python3-dkim's own signatures
    // included: only the plain message is given to it.
    let unfolded = got
        .messages
        .iter()
        .find(|m| String::from_utf8_lossy(&m.2).contains("spaced"))
        .expect("unfolded message");
    assert_eq!(opendkim_result(&unfolded.2, &keys, tmp.path()), "pass");
}

#[test]
fn a_retry_sends_the_same_single_signature() {
    let sink = Sink::start_with(
        0,
        SinkOptions {
            defer_data: 1,
            ..SinkOptions::default()
        },
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = make_keys(tmp.path());
    let d = Daemon::start(&signing_config(&sink, &keys, ""));
    submit(
        d.port,
        "bulk@rsa.example",
        &["x@remote.example"],
        "From: bulk@rsa.example\r\nSubject: retried\r\n\r\nbody\r\n",
    );
    let got = sink.wait_for(1, 30);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    assert_eq!(got.deferred.len(), 1, "the first attempt was deferred");
    assert!(d.log().contains("status=deferred"), "{}", d.log());
    let first = &got.deferred[0];
    let second = &got.messages[0].2;
    assert_eq!(signatures(first).len(), 1);
    assert_eq!(
        signatures(second),
        signatures(first),
        "signed once, at reception"
    );
    assert_eq!(first, second, "every attempt sends the same bytes");
    assert!(python_dkim_verifies(second, &keys, tmp.path()));
}

#[test]
fn only_internal_clients_and_listed_domains_are_signed() {
    let sink = Sink::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = make_keys(tmp.path());
    // 127.0.0.1 is not an internal host here: an outside client.
    let d = Daemon::start(&signing_config(
        &sink,
        &keys,
        "corepost_dkim_internal_hosts = 10.0.0.0/8\n",
    ));
    submit(
        d.port,
        "bulk@rsa.example",
        &["x@remote.example"],
        "From: bulk@rsa.example\r\nSubject: outside\r\n\r\nbody\r\n",
    );
    let d2 = Daemon::start(&signing_config(&sink, &keys, ""));
    submit(
        d2.port,
        "who@other.example",
        &["x@remote.example"],
        "From: who@other.example\r\nSubject: not listed\r\n\r\nbody\r\n",
    );
    let got = sink.wait_for(2, 20);
    assert_eq!(got.messages.len(), 2);
    for (_, _, content) in &got.messages {
        assert!(
            signatures(content).is_empty(),
            "{}",
            String::from_utf8_lossy(content)
        );
    }
}

#[test]
fn authenticated_clients_are_signed() {
    let sink = Sink::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = make_keys(tmp.path());
    let d = Daemon::start(&signing_config(
        &sink,
        &keys,
        "corepost_dkim_internal_hosts = 10.0.0.0/8\nsmtpd_sasl_auth_enable = yes\nsmtpd_tls_auth_only = no\n",
    ));
    let mut child = Command::new(corepost_bin())
        .args(["passwd", "-c", &d.config_dir(), "add", "alice"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("corepost passwd");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"secret\n")
        .expect("password");
    assert!(child.wait().expect("wait").success());
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.test");
    let auth = c.cmd("AUTH PLAIN AGFsaWNlAHNlY3JldA==");
    assert!(auth.starts_with("235"), "{auth}");
    assert!(c.cmd("MAIL FROM:<bulk@rsa.example>").starts_with("250"));
    assert!(c.cmd("RCPT TO:<x@remote.example>").starts_with("250"));
    assert!(c.cmd("DATA").starts_with("354"));
    c.send(b"From: bulk@rsa.example\r\nSubject: authenticated\r\n\r\nbody\r\n.\r\n");
    assert!(c.reply().starts_with("250"));
    c.cmd("QUIT");
    let got = sink.wait_for(1, 20);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let content = &got.messages[0].2;
    assert_eq!(
        signatures(content).len(),
        1,
        "{}",
        String::from_utf8_lossy(content)
    );
    assert!(python_dkim_verifies(content, &keys, tmp.path()));
}

#[test]
fn local_submission_is_signed() {
    let sink = Sink::start();
    let tmp = tempfile::tempdir().expect("tmp");
    let keys = make_keys(tmp.path());
    let d = Daemon::start_with_master_lines(
        &signing_config(&sink, &keys, ""),
        "pickup unix n - n 60 1 pickup\n",
    );
    let link = d.dir.path().join("sendmail");
    std::os::unix::fs::symlink(corepost_bin(), &link).expect("symlink");
    let mut child = Command::new(&link)
        .arg("-C")
        .arg(d.config_dir())
        .args(["-f", "news@ed.example", "x@remote.example"])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("sendmail");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"From: news@ed.example\nSubject: local\n\nfrom a script\n")
        .expect("write");
    assert!(child.wait().expect("wait").success());
    let got = sink.wait_for(1, 30);
    assert_eq!(got.messages.len(), 1, "{}", d.log());
    let content = &got.messages[0].2;
    assert_eq!(signatures(content).len(), 1, "{}", d.log());
    assert!(python_dkim_verifies(content, &keys, tmp.path()));
    assert_eq!(opendkim_result(content, &keys, tmp.path()), "pass");
}

#[test]
fn check_refuses_a_bad_key_table_line_and_an_unreadable_key() {
    let tmp = tempfile::tempdir().expect("tmp");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
    }
    let keys = make_keys(tmp.path());
    let key_table = tmp.path().join("key.table");
    let good = std::fs::read_to_string(&key_table).expect("read");
    std::fs::write(&key_table, format!("{good}broken rsa.example-sel\n")).expect("write");
    let write_config = |extra: &str| {
        std::fs::write(
            tmp.path().join("main.cf"),
            format!(
                "myhostname = mx.test.example\nqueue_directory = {}/spool\nmail_owner = nobody\ncorepost_dkim_key_table = {}\ncorepost_dkim_signing_table = {}\n{extra}",
                tmp.path().display(),
                keys.key_table,
                keys.signing_table
            ),
        )
        .expect("main.cf");
        std::fs::write(
            tmp.path().join("master.cf"),
            "127.0.0.1:2525 inet n - n - - smtpd\n",
        )
        .expect("master.cf");
    };
    write_config("");
    let dir = tmp.path().display().to_string();
    let out = corepost(&["check", "-c", &dir]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("{}, line 4:", key_table.display())),
        "{}",
        stderr(&out)
    );
    std::fs::write(&key_table, &good).expect("write");
    // Started as root, the daemon becomes mail_owner (nobody): a key only
    // root can read would fail at the next reload; refused now.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            tmp.path().join("rsa.pem"),
            std::fs::Permissions::from_mode(0o600),
        )
        .expect("chmod");
        let out = corepost(&["check", "-c", &dir]);
        assert!(!out.status.success(), "{}", stdout(&out));
        assert!(
            stderr(&out).contains("rsa.pem") && stderr(&out).contains("not readable by uid"),
            "{}",
            stderr(&out)
        );
    }
    write_config("smtp_generic_maps = inline:{ a@b=c@d }\n");
    std::fs::write(&key_table, "").expect("empty keys");
    std::fs::write(tmp.path().join("signing.table"), "").expect("empty signing table");
    let out = corepost(&["check", "-c", &dir]);
    assert!(
        stderr(&out).contains("smtp_generic_maps"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
