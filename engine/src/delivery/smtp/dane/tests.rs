use super::*;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};

fn sha256(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, data)
        .as_ref()
        .to_vec()
}

fn sha512(data: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA512, data)
        .as_ref()
        .to_vec()
}

fn record(usage: u8, selector: u8, mtype: u8, data: Vec<u8>) -> Tlsa {
    Tlsa {
        usage,
        selector,
        mtype,
        data,
    }
}

fn records(host: &str, records: Vec<Tlsa>) -> DaneRecords {
    DaneRecords {
        records,
        base_domain: host.into(),
    }
}

/// A CA and a leaf for `names` signed by it: (leaf DER, leaf SPKI DER, CA DER, CA SPKI DER).
fn chain(names: &[&str]) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let issuer = Issuer::new(ca_params, &ca_key);
    let leaf = CertificateParams::new(names)
        .unwrap()
        .signed_by(&leaf_key, &issuer)
        .unwrap();
    (
        leaf.der().to_vec(),
        spki_of(leaf.der()),
        ca.der().to_vec(),
        spki_of(ca.der()),
    )
}

fn spki_of(cert: &CertificateDer<'_>) -> Vec<u8> {
    spki_der(&webpki::EndEntityCert::try_from(cert).unwrap())
}

fn der(d: &[u8]) -> CertificateDer<'static> {
    CertificateDer::from(d.to_vec())
}

#[test]
fn dane_ee_matches_certificate_or_key_in_full_or_by_digest() {
    let (leaf, spki, _, _) = chain(&["other.name.example"]);
    let certs = [der(&leaf)];
    // Name checks do not apply to DANE-EE (RFC 7672 §3.1.1): the certificate names another host.
    for r in [
        record(3, 1, 1, sha256(&spki)),
        record(3, 0, 1, sha256(&leaf)),
        record(3, 1, 2, sha512(&spki)),
        record(3, 0, 0, leaf.clone()),
        record(3, 1, 0, spki.clone()),
    ] {
        let dane = records("mx.example.test", vec![r.clone()]);
        assert_eq!(verify(&certs, &dane), Ok(()), "{r:?}");
    }
    let wrong = records("mx.example.test", vec![record(3, 1, 1, vec![0; 32])]);
    let e = verify(&certs, &wrong).unwrap_err();
    assert_eq!(e.text, "num=65:no matching DANE TLSA records");
    // A digest of the certificate does not match as a digest of the key.
    let crossed = records("mx.example.test", vec![record(3, 1, 1, sha256(&leaf))]);
    assert!(verify(&certs, &crossed).is_err());
    assert!(verify(&[], &crossed).is_err());
}

#[test]
fn dane_ta_needs_the_anchor_in_the_chain_and_the_name() {
    let (leaf, _, ca, ca_spki) = chain(&["mx.example.test"]);
    let certs = [der(&leaf), der(&ca)];
    for r in [
        record(2, 0, 1, sha256(&ca)),
        record(2, 1, 1, sha256(&ca_spki)),
    ] {
        let dane = records("mx.example.test", vec![r.clone()]);
        assert_eq!(verify(&certs, &dane), Ok(()), "{r:?}");
        // The name of the TLSA base domain must match for DANE-TA.
        let elsewhere = records("mx.other.test", vec![r.clone()]);
        let e = verify(&certs, &elsewhere).unwrap_err();
        assert_eq!(e.text, "num=62:hostname mismatch", "{r:?}");
    }
    // The anchor is not in the chain the server sent: no match.
    let dane = records("mx.example.test", vec![record(2, 0, 1, sha256(&ca))]);
    assert!(verify(&[der(&leaf)], &dane).is_err());
    // A full public key (2 1 0) anchors the chain even when the server omits the CA.
    let bare = records("mx.example.test", vec![record(2, 1, 0, ca_spki.clone())]);
    assert_eq!(verify(&[der(&leaf)], &bare), Ok(()));
    // DANE-TA never matches the server's own certificate.
    let own = records("mx.example.test", vec![record(2, 0, 1, sha256(&leaf))]);
    assert!(verify(&certs, &own).is_err());
}

#[test]
fn unusable_records_are_dropped_with_postfix_warnings() {
    let rdata = |usage, selector, mtype, len| Rdata::Tlsa {
        usage,
        selector,
        mtype,
        data: vec![0xab; len],
    };
    let found = [
        rdata(3, 1, 1, 32),
        rdata(2, 0, 2, 64),
        rdata(1, 1, 1, 32),
        rdata(0, 0, 1, 32),
        rdata(3, 1, 255, 32),
        rdata(3, 2, 1, 32),
        rdata(3, 1, 1, 20),
        rdata(3, 1, 7, 32),
    ];
    let lines = std::cell::RefCell::new(Vec::new());
    let log = |l: &str| lines.borrow_mut().push(l.to_string());
    let kept = usable("_25._tcp.mx.example.test", &found, &log);
    assert_eq!(kept.len(), 2);
    assert_eq!((kept[0].usage, kept[1].usage), (3, 2));
    let lines = lines.into_inner();
    assert_eq!(lines.len(), 6, "{lines:?}");
    assert!(lines[0].starts_with(
        "warning: _25._tcp.mx.example.test unsupported TLSA certificate usage: 1 1 1 ABAB"
    ));
    assert!(lines[2].contains("reserved private-use matching type: 3 1 255"));
    assert!(lines[3].contains("unusable TLSA RR: 3 2 1"));
}
