//! End-to-end tests of `corepost-source` and `corepost-sink`: against each other, against a
//! scripted stub server, and with a raw client. Everything binds ephemeral loopback ports.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const SOURCE: &str = env!("CARGO_BIN_EXE_corepost-source");
const SINK: &str = env!("CARGO_BIN_EXE_corepost-sink");

struct SinkProc {
    child: Child,
    out: BufReader<std::process::ChildStdout>,
    addr: String,
}

impl SinkProc {
    fn start(args: &[&str]) -> SinkProc {
        let mut child = Command::new(SINK)
            .arg("127.0.0.1:0")
            .args(["--json", "-t", "20s"])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start corepost-sink");
        let mut out = BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        out.read_line(&mut line).expect("listening line");
        let addr = line
            .trim()
            .strip_prefix("corepost-sink: listening on ")
            .expect("listening line")
            .to_string();
        SinkProc { child, out, addr }
    }

    fn signal(&self, sig: i32) {
        let pid = i32::try_from(self.child.id()).expect("pid");
        // SAFETY: kill(2) with the pid of a child we started and still own.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    /// Stops the sink (SIGTERM unless it already exits by itself) and returns its JSON summary.
    fn finish(mut self, signal: bool) -> Value {
        if signal {
            self.signal(libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.child.try_wait().expect("wait").is_some() {
                break;
            }
            assert!(Instant::now() < deadline, "sink did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut rest = String::new();
        self.out.read_to_string(&mut rest).expect("read summary");
        serde_json::from_str(rest.trim()).unwrap_or_else(|e| panic!("sink summary {rest:?}: {e}"))
    }
}

impl Drop for SinkProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn source(addr: &str, args: &[&str]) -> Value {
    let out = Command::new(SOURCE)
        .args(["--json", "-q", "--timeout", "20s"])
        .args(args)
        .arg(addr)
        .output()
        .expect("run corepost-source");
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "source report {stdout:?} (stderr {:?}): {e}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn n(v: &Value, path: &str) -> u64 {
    path.split('.')
        .fold(v, |v, k| &v[k])
        .as_u64()
        .unwrap_or_else(|| panic!("{path} missing in {v}"))
}

fn frac(a: u64, b: u64) -> f64 {
    a as f64 / b as f64
}

#[test]
fn source_and_sink_count_each_other() {
    let sink = SinkProc::start(&["-M", "300"]);
    let rep = source(
        &sink.addr,
        &["-m", "300", "-s", "4", "-r", "2", "-d", "-l", "2k"],
    );
    let sum = sink.finish(false);
    assert_eq!(n(&rep, "messages"), 300);
    assert_eq!(n(&rep, "attempted"), 300);
    assert_eq!(n(&rep, "recipients_accepted"), 600);
    assert_eq!(n(&rep, "connections"), 4);
    assert_eq!(n(&rep, "latency_us.end_of_data.count"), 300);
    assert_eq!(n(&rep, "latency_us.connect.count"), 4);
    assert_eq!(n(&rep, "replies.354"), 300);
    for field in [
        "elapsed_s",
        "msgs_per_sec",
        "started_unix_us",
        "rejected_temp",
        "rejected_perm",
        "errors",
        "bytes",
    ] {
        assert!(rep.get(field).is_some(), "source JSON lacks {field}");
    }
    for q in ["p50", "p90", "p99", "p999", "max", "min", "mean"] {
        assert!(
            rep["latency_us"]["transaction"].get(q).is_some(),
            "source JSON lacks {q}"
        );
    }
    assert_eq!(n(&sum, "messages"), 300);
    assert_eq!(n(&sum, "recipients"), 600);
    assert_eq!(n(&sum, "connections"), 4);
    assert_eq!(n(&sum, "transactions"), 300);
    assert_eq!(
        sum["transactions_per_connection"]["mean"].as_f64(),
        Some(75.0)
    );
    assert_eq!(n(&sum, "e2e_latency_us.count"), 300);
    assert_eq!(n(&sum, "bytes"), n(&rep, "bytes"));
    for field in [
        "msgs_per_sec",
        "first_message_unix_us",
        "last_message_unix_us",
        "injected",
        "replies",
        "elapsed_s",
    ] {
        assert!(sum.get(field).is_some(), "sink JSON lacks {field}");
    }
}

#[test]
fn one_connection_per_message_without_reuse_and_helo_fallback() {
    // -e: no EHLO, -p: no PIPELINING, -E: no enhanced codes.
    let sink = SinkProc::start(&["-e", "-p", "-E"]);
    let rep = source(&sink.addr, &["-m", "20", "-s", "2", "-l", "300"]);
    assert_eq!(n(&rep, "messages"), 20);
    assert_eq!(n(&rep, "connections"), 20);
    assert_eq!(n(&rep, "replies.502"), 20, "EHLO refused, then HELO");
    let rep = source(&sink.addr, &["-m", "2", "--pipelining"]);
    assert_eq!(n(&rep, "messages"), 0);
    assert!(
        rep["error_samples"][0]
            .as_str()
            .unwrap_or("")
            .contains("PIPELINING"),
        "{rep}"
    );
    let sum = sink.finish(true);
    assert_eq!(n(&sum, "messages"), 20);
    assert_eq!(n(&sum, "connections"), 22);
    // The last sessions may still be winding down when the source exits.
    assert!(
        (19..=22).contains(&n(&sum, "transactions_per_connection.closed")),
        "{sum}"
    );
}

#[test]
fn pipelining_bdat_starttls_auth_and_mixes() {
    let sink = SinkProc::start(&["--tls"]);
    let rep = source(
        &sink.addr,
        &[
            "-m",
            "200",
            "-s",
            "3",
            "-d",
            "--pipelining",
            "--bdat",
            "--starttls",
            "--auth",
            "u:p",
            "--size-mix",
            "1k=50,20k=50",
            "--domain-mix",
            "gmail.test=40,tail:1000=60",
        ],
    );
    assert_eq!(n(&rep, "messages"), 200, "{rep}");
    assert_eq!(n(&rep, "replies.235"), 3);
    assert_eq!(rep["replies"].get("354"), None, "BDAT never sees 354");
    let rep2 = source(
        &sink.addr,
        &["-m", "50", "-s", "2", "--pipelining", "--starttls"],
    );
    assert_eq!(n(&rep2, "messages"), 50, "{rep2}");
    let sum = sink.finish(true);
    assert_eq!(n(&sum, "messages"), 250);
    assert_eq!(n(&sum, "bytes"), n(&rep, "bytes") + n(&rep2, "bytes"));
}

#[test]
fn failure_injection_fractions() {
    let sink = SinkProc::start(&[
        "--rcpt-tempfail",
        "0.2",
        "--rcpt-permfail",
        "10%",
        "--data-tempfail",
        "0.05",
        "--seed",
        "7",
    ]);
    let rep = source(
        &sink.addr,
        &["-m", "2000", "-s", "4", "-d", "--pipelining", "-l", "200"],
    );
    let sum = sink.finish(true);
    let (temp, perm) = (
        n(&sum, "injected.rcpt_tempfail"),
        n(&sum, "injected.rcpt_permfail"),
    );
    assert!(
        (0.16..0.24).contains(&frac(temp, 2000)),
        "rcpt tempfail {temp}/2000"
    );
    assert!(
        (0.07..0.13).contains(&frac(perm, 2000)),
        "rcpt permfail {perm}/2000"
    );
    let data_temp = n(&sum, "injected.data_tempfail");
    let reached = 2000 - temp - perm;
    assert!(
        (0.025..0.075).contains(&frac(data_temp, reached)),
        "data tempfail {data_temp}/{reached}"
    );
    // Both sides agree on every outcome.
    assert_eq!(n(&rep, "rejected_temp"), temp + data_temp);
    assert_eq!(n(&rep, "rejected_perm"), perm);
    assert_eq!(n(&rep, "messages"), n(&sum, "messages"));
    assert_eq!(n(&rep, "messages"), 2000 - temp - perm - data_temp);
    assert_eq!(
        n(&rep, "recipients_rejected"),
        n(&sum, "recipients_rejected")
    );
}

#[test]
fn magic_local_parts_and_domain_rules() {
    let sink = SinkProc::start(&[
        "--domain-fault",
        "bad.test:permfail=1",
        "--domain-fault",
        "slow.test:tempfail=1",
    ]);
    let rep = source(&sink.addr, &["-m", "10", "-d", "-t", "tempfail@ok.test"]);
    assert_eq!((n(&rep, "messages"), n(&rep, "rejected_temp")), (0, 10));
    let rep = source(
        &sink.addr,
        &["-m", "10", "-d", "-N", "-t", "permfail@ok.test"],
    );
    assert_eq!((n(&rep, "messages"), n(&rep, "rejected_perm")), (0, 10));
    let rep = source(&sink.addr, &["-m", "10", "-t", "x@bad.test"]);
    assert_eq!(n(&rep, "rejected_perm"), 10);
    let rep = source(
        &sink.addr,
        &[
            "-m",
            "10",
            "-t",
            "x@ok.test",
            "--domain-mix",
            "ok.test=1,slow.test=1",
            "--seed",
            "3",
        ],
    );
    assert_eq!(n(&rep, "messages") + n(&rep, "rejected_temp"), 10);
    assert!(
        n(&rep, "messages") > 0 && n(&rep, "rejected_temp") > 0,
        "{rep}"
    );
    let sum = sink.finish(true);
    assert_eq!(n(&sum, "messages"), n(&rep, "messages"));
}

#[test]
fn greeting_421_and_disconnects() {
    let sink = SinkProc::start(&[
        "--greeting-421",
        "0.3",
        "--disconnect",
        "0.2",
        "--seed",
        "11",
    ]);
    let rep = source(&sink.addr, &["-m", "600", "-s", "4", "-l", "100"]);
    let sum = sink.finish(true);
    let g = n(&sum, "injected.greeting_421");
    let d = n(&sum, "injected.disconnects");
    assert!(
        (0.23..0.37).contains(&frac(g, n(&sum, "connections"))),
        "421 {g}/{}",
        n(&sum, "connections")
    );
    assert_eq!(
        n(&rep, "rejected_temp"),
        g,
        "each 421 greeting is a refused message"
    );
    assert_eq!(
        n(&rep, "errors"),
        d,
        "each cut transaction is one lost message"
    );
    let started = 600 - g;
    assert!(
        (0.14..0.26).contains(&frac(d, started)),
        "disconnects {d}/{started}"
    );
    assert_eq!(n(&rep, "messages"), 600 - g - d);
    assert_eq!(n(&sum, "messages"), 600 - g - d);
}

#[test]
fn delays_rate_cap_and_sigusr1_summary() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("summary.json");
    let sink = SinkProc::start(&[
        "--delay",
        "rcpt=30ms",
        "--summary",
        path.to_str().expect("utf-8 path"),
    ]);
    let rep = source(&sink.addr, &["-m", "4", "-d"]);
    assert!(n(&rep, "latency_us.transaction.p50") >= 30_000, "{rep}");
    // Open loop: 20 messages at 100/s take about 0.2 s even though the sink is fast.
    let rep = source(&sink.addr, &["-m", "20", "-s", "5", "-d", "--rate", "100"]);
    assert_eq!(n(&rep, "messages"), 20);
    let elapsed = rep["elapsed_s"].as_f64().unwrap_or(0.0);
    assert!(
        (0.18..2.0).contains(&elapsed),
        "rate-capped run took {elapsed}s"
    );
    sink.signal(libc::SIGUSR1);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !path.exists() {
        assert!(Instant::now() < deadline, "no summary after SIGUSR1");
        std::thread::sleep(Duration::from_millis(10));
    }
    let snap: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("summary")).expect("json");
    assert_eq!(n(&snap, "messages"), 24);
    let sum = sink.finish(true);
    assert_eq!(n(&sum, "messages"), 24);
}

#[test]
fn duration_mode_stops_in_time() {
    let sink = SinkProc::start(&[]);
    let t = Instant::now();
    let rep = source(
        &sink.addr,
        &["--duration", "300ms", "-s", "2", "-d", "-l", "100"],
    );
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(n(&rep, "messages") > 0);
    assert_eq!(n(&rep, "messages"), n(&sink.finish(true), "messages"));
}

/// A scripted server: refuses the first RCPT of every other message, and checks the DATA it
/// receives is dot-stuffed.
#[test]
fn source_against_stub_server() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (sock, _) = listener.accept().expect("accept");
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut w = sock.try_clone().expect("clone");
        let mut r = BufReader::new(sock);
        let mut stuffed_lines = 0;
        let mut messages = 0;
        let mut rcpt_seen = 0;
        w.write_all(b"220 stub ESMTP\r\n").expect("greet");
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).expect("read") == 0 {
                break;
            }
            let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
            match verb.as_str() {
                "EHLO" => w.write_all(b"250-stub\r\n250 8BITMIME\r\n").expect("w"),
                "MAIL" | "RSET" => w.write_all(b"250 ok\r\n").expect("w"),
                "RCPT" => {
                    rcpt_seen += 1;
                    if rcpt_seen % 2 == 0 {
                        w.write_all(b"451 4.7.1 try later\r\n").expect("w");
                    } else {
                        w.write_all(b"250 ok\r\n").expect("w");
                    }
                }
                "DATA" => {
                    w.write_all(b"354 go\r\n").expect("w");
                    loop {
                        let mut l = String::new();
                        assert!(r.read_line(&mut l).expect("read data") > 0, "EOF in DATA");
                        assert!(l.ends_with("\r\n"), "bare LF in {l:?}");
                        if l == ".\r\n" {
                            break;
                        }
                        if l.starts_with('.') {
                            assert!(l.starts_with(".."), "unstuffed line {l:?}");
                            stuffed_lines += 1;
                        }
                    }
                    messages += 1;
                    w.write_all(b"250 2.0.0 queued\r\n").expect("w");
                }
                "QUIT" => {
                    w.write_all(b"221 bye\r\n").expect("w");
                    break;
                }
                _ => w.write_all(b"502 what\r\n").expect("w"),
            }
        }
        (messages, stuffed_lines)
    });
    let rep = source(&addr, &["-m", "4", "-d", "-l", "4k"]);
    let (messages, stuffed) = server.join().expect("stub");
    assert_eq!(messages, 2);
    assert!(
        stuffed >= 2,
        "the generated bodies have lines starting with a dot"
    );
    assert_eq!(n(&rep, "messages"), 2);
    assert_eq!(n(&rep, "rejected_temp"), 2);
    assert_eq!(n(&rep, "replies.451"), 2);
    assert_eq!(n(&rep, "replies.221"), 1);
}

fn expect_reply(r: &mut BufReader<TcpStream>, code: &str) -> String {
    let mut all = String::new();
    loop {
        let mut line = String::new();
        r.read_line(&mut line).expect("reply");
        assert!(
            line.starts_with(code),
            "expected {code}, got {line:?} after {all:?}"
        );
        all.push_str(&line);
        if line.as_bytes().get(3) != Some(&b'-') {
            return all;
        }
    }
}

fn dumped(dir: &Path) -> Vec<String> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dump dir")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("dump file"))
        .collect()
}

/// A raw client drives the sink: pipelined commands, DATA unstuffing, BDAT chunks that contain
/// CRLF.CRLF, sequencing errors, and an over-long line.
#[test]
fn sink_against_raw_client() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = SinkProc::start(&["-d", dir.path().to_str().expect("utf-8 path")]);
    let sock = TcpStream::connect(&sink.addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut w = sock.try_clone().expect("clone");
    let mut r = BufReader::new(sock);
    expect_reply(&mut r, "220");
    w.write_all(b"EHLO raw.test\r\n").expect("w");
    let ehlo = expect_reply(&mut r, "250");
    for kw in [
        "PIPELINING",
        "CHUNKING",
        "8BITMIME",
        "ENHANCEDSTATUSCODES",
        "SIZE",
    ] {
        assert!(ehlo.contains(kw), "{kw} missing from {ehlo:?}");
    }
    // Sequencing errors.
    w.write_all(b"RCPT TO:<a@b.test>\r\nDATA\r\nMAIL FROM:<x\r\n")
        .expect("w");
    expect_reply(&mut r, "503");
    expect_reply(&mut r, "503");
    expect_reply(&mut r, "501");
    // One pipelined DATA transaction with stuffed lines and a dot mid-line.
    w.write_all(
        b"MAIL FROM:<s@src.test>\r\nRCPT TO:<one@dst.test>\r\nRCPT TO:<two@dst.test>\r\nDATA\r\n",
    )
    .expect("w");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "354");
    w.write_all(b"Subject: t\r\n\r\n..leading dot\r\nmid . dot\r\n.\r\n")
        .expect("w");
    expect_reply(&mut r, "250");
    // BDAT: the chunk holds CRLF.CRLF, which is content, not an end.
    let chunk1 = b"Subject: b\r\n\r\nline\r\n.\r\n";
    let chunk2 = b"..two dots stay\r\n";
    w.write_all(b"MAIL FROM:<s@src.test>\r\nRCPT TO:<three@dst.test>\r\n")
        .expect("w");
    w.write_all(format!("BDAT {}\r\n", chunk1.len()).as_bytes())
        .expect("w");
    w.write_all(chunk1).expect("w");
    w.write_all(format!("BDAT {} LAST\r\n", chunk2.len()).as_bytes())
        .expect("w");
    w.write_all(chunk2).expect("w");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "250");
    // DATA after BDAT in one transaction is refused; BDAT without MAIL is consumed and refused.
    w.write_all(b"BDAT 5 LAST\r\nhello").expect("w");
    expect_reply(&mut r, "503");
    w.write_all(b"NOOP\r\n").expect("w");
    expect_reply(&mut r, "250");
    // An over-long command line ends the session.
    w.write_all(&vec![b'A'; 10_000]).expect("w");
    w.write_all(b"\r\n").expect("w");
    expect_reply(&mut r, "500");
    // The sink closes the connection after its accounting.
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    let sum = sink.finish(true);
    assert_eq!(n(&sum, "messages"), 2);
    assert_eq!(n(&sum, "recipients"), 3);
    assert_eq!(n(&sum, "protocol_errors"), 1);
    let files = dumped(dir.path());
    assert_eq!(files.len(), 2);
    assert!(files[0].starts_with("X-Client-Addr: 127.0.0.1\r\nX-Mail-From: <s@src.test>\r\nX-Rcpt-To: <one@dst.test>\r\nX-Rcpt-To: <two@dst.test>\r\n"), "{:?}", files[0]);
    assert!(
        files[0].ends_with("Subject: t\r\n\r\n.leading dot\r\nmid . dot\r\n"),
        "{:?}",
        files[0]
    );
    assert!(
        files[1].ends_with("Subject: b\r\n\r\nline\r\n.\r\n..two dots stay\r\n"),
        "{:?}",
        files[1]
    );
}

/// `--rcpt-reply`: a provider's throttling reply for chosen recipients, and for everyone once
/// N messages were accepted; a 421 closes the connection.
#[test]
fn scripted_rcpt_replies() {
    let sink = SinkProc::start(&[
        "--rcpt-reply",
        "prefix=limited:450 4.7.28 Our system has detected an unusual rate, rate limited",
        "--rcpt-reply",
        "after=1:421 4.7.0 Try again later, closing connection",
    ]);
    let sock = TcpStream::connect(&sink.addr).expect("connect");
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut w = sock.try_clone().expect("clone");
    let mut r = BufReader::new(sock);
    expect_reply(&mut r, "220");
    w.write_all(b"EHLO raw.test\r\n").expect("w");
    expect_reply(&mut r, "250");
    w.write_all(b"MAIL FROM:<s@src.test>\r\nRCPT TO:<Limited7@dst.test>\r\nRCPT TO:<ok@dst.test>\r\nDATA\r\n")
        .expect("w");
    expect_reply(&mut r, "250");
    let limited = expect_reply(&mut r, "450");
    assert_eq!(
        limited,
        "450 4.7.28 Our system has detected an unusual rate, rate limited\r\n"
    );
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "354");
    w.write_all(b"Subject: t\r\n\r\nhi\r\n.\r\n").expect("w");
    expect_reply(&mut r, "250");
    // One message accepted: from now on every recipient gets the 421, and the sink hangs up.
    w.write_all(b"MAIL FROM:<s@src.test>\r\nRCPT TO:<ok@dst.test>\r\n")
        .expect("w");
    expect_reply(&mut r, "250");
    expect_reply(&mut r, "421");
    let mut rest = Vec::new();
    let _ = r.read_to_end(&mut rest);
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    let sum = sink.finish(true);
    assert_eq!(n(&sum, "messages"), 1);
    assert_eq!(n(&sum, "injected.rcpt_scripted"), 2);
}
