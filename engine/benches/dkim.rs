//! What DKIM signing costs per message at reception (`corepost::dkim`):
//! relaxed/relaxed, the default signed headers plus oversigned From, for
//! a 4 KiB and a 100 KiB message, with an RSA-2048 and an Ed25519 key
//! (made with `openssl genpkey` at start). Each iteration signs a fresh
//! copy of the message, as smtpd does once per message; the copy is made
//! outside the measurement.
//!
//! Run: `cargo bench -p corepost --bench dkim`

use corepost::dkim::DkimSigner;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use std::process::Command;

fn message(size: usize) -> Vec<u8> {
    let mut m = b"Received: from client.test (unknown [127.0.0.1])\r\n\tby mx.test.example (corepost) with ESMTP id ABC; Sun, 6 Dec 2026 09:00:00 +0000\r\nFrom: Bulk Sender <news@bench.example>\r\nTo: someone@remote.example\r\nSubject: the weekly letter\r\nDate: Sun, 6 Dec 2026 09:00:00 +0000\r\nMessage-ID: <1@bench.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\nList-Unsubscribe: <mailto:unsub@bench.example>\r\n\r\n".to_vec();
    let line = b"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod  \r\n";
    while m.len() < size {
        m.extend_from_slice(line);
    }
    m
}

fn signer(dir: &std::path::Path, algorithm: &[&str]) -> DkimSigner {
    let key = dir.join("key.pem");
    let status = Command::new("openssl")
        .arg("genpkey")
        .args(algorithm)
        .arg("-out")
        .arg(&key)
        .status()
        .expect("openssl");
    assert!(status.success());
    let keys = dir.join("key.table");
    std::fs::write(&keys, format!("k bench.example:sel:{}\n", key.display())).expect("keys");
    let signing = dir.join("signing.table");
    std::fs::write(&signing, "*@bench.example k\n").expect("signing");
    let get = |n: &str| -> Result<String, corepost_config::ConfigError> {
        Ok(match n {
            "corepost_dkim_signing_table" => format!("refile:{}", signing.display()),
            "corepost_dkim_key_table" => format!("file:{}", keys.display()),
            "corepost_dkim_canonicalization" => "relaxed/relaxed".into(),
            "corepost_dkim_signed_headers" => "from, reply-to, subject, date, to, cc, resent-date, resent-from, resent-sender, resent-to, resent-cc, in-reply-to, references, list-id, list-help, list-unsubscribe, list-subscribe, list-post, list-owner, list-archive".into(),
            "corepost_dkim_oversign_headers" => "from".into(),
            "corepost_dkim_internal_hosts" => "127.0.0.0/8".into(),
            _ => String::new(),
        })
    };
    let signer = DkimSigner::from_params(&get).expect("load").expect("on");
    std::sync::Arc::into_inner(signer).expect("one owner")
}

/// CPU time of this thread: on a shared machine the wall-clock times
/// criterion reports include time spent waiting for a core.
fn thread_cpu() -> std::time::Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Prints the CPU time per signature over `n` signatures.
fn cpu_per_message(name: &str, signer: &DkimSigner, m: &[u8], n: u32) {
    let copies: Vec<Vec<u8>> = (0..n).map(|_| m.to_vec()).collect();
    let start = thread_cpu();
    for mut content in copies {
        signer.sign(&mut content, 1_796_547_600).expect("sign");
    }
    let per = (thread_cpu() - start) / n;
    println!(
        "dkim_sign/{name}: {:.1} µs CPU per message",
        per.as_secs_f64() * 1e6
    );
}

fn bench_sign(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tmp");
    let rsa_dir = dir.path().join("rsa");
    let ed_dir = dir.path().join("ed");
    std::fs::create_dir_all(&rsa_dir).expect("dir");
    std::fs::create_dir_all(&ed_dir).expect("dir");
    let signers = [
        (
            "rsa2048",
            signer(
                &rsa_dir,
                &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
            ),
        ),
        ("ed25519", signer(&ed_dir, &["-algorithm", "ed25519"])),
    ];
    let mut group = c.benchmark_group("dkim_sign");
    group.throughput(Throughput::Elements(1));
    for (label, size) in [("4k", 4096), ("100k", 100 * 1024)] {
        let m = message(size);
        for (name, s) in &signers {
            cpu_per_message(&format!("{name}_{label}"), s, &m, 300);
            group.bench_function(format!("{name}_{label}"), |b| {
                b.iter_batched(
                    || m.clone(),
                    |mut content| s.sign(&mut content, 1_796_547_600).expect("sign"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench_sign);
criterion_main!(benches);
