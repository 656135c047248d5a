use super::*;
use std::io::Write;

/// An Ed25519 key in PKCS#8 PEM, made with ring.
fn ed25519_pem() -> String {
    let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
        .expect("generate");
    let body = b64(pkcs8.as_ref());
    format!("-----BEGIN PRIVATE KEY-----\n{body}\n-----END PRIVATE KEY-----\n")
}

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(key_table: &str, signing_table: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let mut f = std::fs::File::create(dir.path().join(name)).expect("create");
            f.write_all(text.as_bytes()).expect("write");
        };
        write("ed.pem", &ed25519_pem());
        let path = dir.path().display().to_string();
        write("key.table", &key_table.replace("DIR", &path));
        write("signing.table", &signing_table.replace("DIR", &path));
        Setup { dir }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    fn signer(&self, extra: &[(&str, &str)]) -> Result<Option<Arc<DkimSigner>>, String> {
        let key_table = format!("file:{}", self.path("key.table"));
        let signing_table = format!("refile:{}", self.path("signing.table"));
        let get = |n: &str| -> Result<String, ConfigError> {
            if let Some((_, v)) = extra.iter().find(|(k, _)| *k == n) {
                return Ok(v.to_string());
            }
            Ok(match n {
                "corepost_dkim_signing_table" => signing_table.clone(),
                "corepost_dkim_key_table" => key_table.clone(),
                "corepost_dkim_canonicalization" => "relaxed/relaxed".into(),
                "corepost_dkim_signed_headers" => "From, To, Subject, Date".into(),
                "corepost_dkim_oversign_headers" => "From".into(),
                "corepost_dkim_internal_hosts" => "127.0.0.0/8".into(),
                _ => String::new(),
            })
        };
        DkimSigner::from_params(&get)
    }
}

const MESSAGE: &[u8] =
    b"Received: from x\r\n\tby y\r\nFrom: Alice <alice@example.com>\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n";

#[test]
fn signs_once_with_the_selected_key_and_names_the_headers() {
    let s = Setup::new(
        "ed example.com:sel:DIR/ed.pem\n",
        "# OpenDKIM style\n*@example.com ed\n",
    );
    let signer = s.signer(&[]).expect("load").expect("signing on");
    let mut content = MESSAGE.to_vec();
    let signed = signer.sign(&mut content, 1_700_000_000).expect("sign");
    assert_eq!(
        signed,
        Some(Signed {
            domain: "example.com".into(),
            selector: "sel".into()
        })
    );
    let text = String::from_utf8(content).expect("utf8");
    assert!(
        text.starts_with(
            "DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.com;\r\n\ts=sel; t=1700000000; h=from:to:subject:from;"
        ),
        "{text}"
    );
    assert!(text.contains("h=from:to:subject:from;"), "{text}");
    assert!(text.ends_with("\r\nReceived: from x\r\n\tby y\r\nFrom: Alice <alice@example.com>\r\nTo: b@example.net\r\nSubject: hi\r\n\r\nbody\r\n"), "{text}");
    for line in text.lines() {
        assert!(line.len() <= 78, "{line}");
    }
}

#[test]
fn other_domains_and_missing_from_are_not_signed() {
    let s = Setup::new("ed example.com:sel:DIR/ed.pem\n", "*@example.com ed\n");
    let signer = s.signer(&[]).expect("load").expect("on");
    let mut other = b"From: x@example.org\r\n\r\nb\r\n".to_vec();
    assert_eq!(signer.sign(&mut other, 0), Ok(None));
    assert_eq!(other, b"From: x@example.org\r\n\r\nb\r\n");
    let mut lookalike = b"From: x@example.com.evil\r\n\r\nb\r\n".to_vec();
    assert_eq!(signer.sign(&mut lookalike, 0), Ok(None));
    let mut none = b"Subject: s\r\n\r\nb\r\n".to_vec();
    assert_eq!(signer.sign(&mut none, 0), Ok(None));
}

#[test]
fn off_without_a_table_or_with_no_milters() {
    let s = Setup::new("ed example.com:sel:DIR/ed.pem\n", "*@example.com ed\n");
    assert!(
        s.signer(&[("corepost_dkim_signing_table", "")])
            .expect("load")
            .is_none()
    );
    assert!(
        s.signer(&[(
            "receive_override_options",
            "no_header_body_checks, no_milters"
        )])
        .expect("load")
        .is_none()
    );
}

#[test]
fn refuses_bad_tables_and_keys_naming_file_and_line() {
    let s = Setup::new(
        "# keys\ned example.com:sel:DIR/ed.pem\nbroken example.com-sel\n",
        "*@example.com ed\n",
    );
    let e = s.signer(&[]).expect_err("bad key table");
    assert!(
        e.contains(&format!("{}, line 3:", s.path("key.table"))),
        "{e}"
    );
    let s = Setup::new("ed example.com:sel:DIR/missing.pem\n", "*@example.com ed\n");
    let e = s.signer(&[]).expect_err("missing key");
    assert!(e.contains("line 1") && e.contains("missing.pem"), "{e}");
    let s = Setup::new(
        "ed example.com:sel:DIR/signing.table\n",
        "*@example.com ed\n",
    );
    let e = s.signer(&[]).expect_err("not a key");
    assert!(e.contains("not a PEM") || e.contains("not a usable"), "{e}");
    let s = Setup::new("ed example.com:sel:DIR/ed.pem\n", "\n*@example.com nokey\n");
    let e = s.signer(&[]).expect_err("unknown key name");
    assert!(
        e.contains(&format!("{}, line 2:", s.path("signing.table"))) && e.contains("nokey"),
        "{e}"
    );
    let s = Setup::new("ed example.com:sel:DIR/ed.pem\n", "*@example.com ed\n");
    let e = s
        .signer(&[("corepost_dkim_key_table", "hash:/etc/x")])
        .expect_err("not a flat file");
    assert!(e.contains("flat file"), "{e}");
    let e = s
        .signer(&[("corepost_dkim_canonicalization", "loose")])
        .expect_err("bad canon");
    assert!(e.contains("corepost_dkim_canonicalization"), "{e}");
}

#[test]
fn plain_tables_use_opendkim_key_order_and_percent() {
    let s = Setup::new("example.org %:sel:DIR/ed.pem\n", "");
    let signer = s
        .signer(&[(
            "corepost_dkim_signing_table",
            "inline:{ { .example.org = % @% } }",
        )])
        .expect("load")
        .expect("on");
    let mut content = b"From: bob@mail.example.org\r\n\r\nx\r\n".to_vec();
    // `.example.org` selects key name `%` = mail.example.org, which the key
    // table lacks: a temporary error, never unsigned mail.
    let e = signer.sign(&mut content, 0).expect_err("missing key");
    assert!(e.contains("mail.example.org"), "{e}");
    let mut content = b"From: bob@example.org\r\n\r\nx\r\n".to_vec();
    assert_eq!(signer.sign(&mut content, 0), Ok(None)); // no entry for example.org itself
}

#[test]
fn signer_must_be_in_the_signing_domain() {
    assert!(signer_fits("@example.com", "example.com"));
    assert!(signer_fits("u@sub.example.com", "example.com"));
    assert!(!signer_fits("u@badexample.com", "example.com"));
    assert!(!signer_fits("nobody", "example.com"));
}

#[test]
fn verifier_selects_fields_bottom_up() {
    let msg = b"To: 1\r\nFrom: f\r\nTo: 2\r\n\r\n";
    let (fields, _) = canon::split_message(msg);
    let names = vec!["to".to_string(), "from".into(), "to".into(), "to".into()];
    let picked = select_fields(&fields, &names);
    assert_eq!(picked, [&b"To: 2\r\n"[..], b"From: f\r\n", b"To: 1\r\n"]);
}

/// `openssl` with these arguments; its stdout.
fn openssl(args: &[&str]) -> Vec<u8> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

#[test]
fn rsa_keys_in_pkcs1_pkcs8_and_inline_der_forms() {
    let pkcs1 = openssl(&["genrsa", "-traditional", "2048"]);
    assert!(pkcs1.starts_with(b"-----BEGIN RSA PRIVATE KEY-----"));
    let dir = tempfile::tempdir().expect("tmp");
    let pem = dir.path().join("k.pem");
    std::fs::write(&pem, &pkcs1).expect("write");
    let pem_s = pem.display().to_string();
    let pkcs8 = openssl(&["pkcs8", "-topk8", "-nocrypt", "-in", &pem_s]);
    let der = openssl(&[
        "pkcs8", "-topk8", "-nocrypt", "-in", &pem_s, "-outform", "DER",
    ]);
    for text in [pkcs1.clone(), pkcs8, b64(&der).into_bytes()] {
        let key = key::SigningKey::from_text(&text).expect("load");
        assert_eq!(key.algorithm(), "rsa-sha256");
        let sig = key.sign(b"data").expect("sign");
        let public = base64::engine::general_purpose::STANDARD
            .decode(key.public_base64())
            .expect("b64");
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            public,
        )
        .verify(b"data", &sig)
        .expect("verifies");
    }
    let encrypted =
        b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n";
    let e = key::SigningKey::from_text(encrypted).expect_err("encrypted");
    assert!(e.contains("not an unencrypted private key"), "{e}");
}

#[test]
fn ed25519_signs_the_sha256_digest() {
    let key = key::SigningKey::from_text(ed25519_pem().as_bytes()).expect("load");
    assert_eq!(key.algorithm(), "ed25519-sha256");
    let sig = key.sign(b"data").expect("sign");
    let public = base64::engine::general_purpose::STANDARD
        .decode(key.public_base64())
        .expect("b64");
    let digest = ring::digest::digest(&ring::digest::SHA256, b"data");
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(digest.as_ref(), &sig)
        .expect("RFC 8463: Ed25519 over the SHA-256 hash");
}
