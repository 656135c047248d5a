//! Structured events and where the log goes (issue 18): the JSON events of
//! a mixed run, from the event file and from a Unix-socket hook, matched
//! against the Postfix-format lines of the same run; syslog and journald
//! datagrams received by a test socket; `corepost logrotate`.

mod support;

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

/// Send one message; the RCPT replies.
fn send(port: u16, from: &str, rcpts: &[&str]) -> Vec<String> {
    let mut c = Raw::connect(port);
    c.cmd("EHLO client.example");
    assert!(c.cmd(&format!("MAIL FROM:<{from}>")).starts_with("250"));
    let replies: Vec<String> = rcpts
        .iter()
        .map(|r| c.cmd(&format!("RCPT TO:<{r}>")))
        .collect();
    if replies.iter().any(|r| r.starts_with("250")) {
        assert!(c.cmd("DATA").starts_with("354"));
        c.send(b"Subject: events\r\n\r\nhello\r\n.\r\n");
        let r = c.reply();
        assert!(r.starts_with("250"), "{r}");
    }
    c.cmd("QUIT");
    replies
}

/// Every line of `text` as a JSON object, with the line in the message if
/// one does not parse.
fn parse_events(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            for field in ["time", "event", "host", "program"] {
                assert!(v[field].is_string(), "no {field} in {l}");
            }
            v
        })
        .collect()
}

/// A Unix stream listener collecting the lines hooks send.
fn hook_listener(path: &Path) -> Arc<Mutex<Vec<String>>> {
    let listener = UnixListener::bind(path).expect("bind hook socket");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&lines);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    shared.lock().unwrap().push(line);
                }
            });
        }
    });
    lines
}

/// `Q: to=<R>, ..., relay=X, ..., dsn=D, status=S (` of each delivery line:
/// (queue id, recipient) → (relay, dsn, status).
fn delivery_lines(log: &str) -> HashMap<(String, String), (String, String, String)> {
    let mut out = HashMap::new();
    for line in log.lines() {
        let Some((_, rest)) = line.split_once("]: ") else {
            continue;
        };
        let Some((id, rest)) = rest.split_once(": to=<") else {
            continue;
        };
        let field = |name: &str| -> String {
            rest.split(", ")
                .find_map(|f| f.strip_prefix(name))
                .map(|v| v.split(' ').next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        let to = rest.split('>').next().unwrap_or("").to_string();
        out.insert(
            (id.to_string(), to),
            (field("relay="), field("dsn="), field("status=")),
        );
    }
    out
}

fn events_of<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["event"] == kind).collect()
}

#[test]
fn json_events_match_the_postfix_log_of_the_same_run() {
    let sink = Sink::start();
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("hook.sock");
    let hooked = hook_listener(&hook);
    let events_file = hooks.path().join("events.json");
    let mut d = Daemon::start(&format!(
        "corepost_cores = 1\nrelayhost = [127.0.0.1]:{}\n\
         corepost_event_log_file = {}\ncorepost_event_hooks = unix:{}\n\
         minimal_backoff_time = 300s\nmaximal_backoff_time = 600s\n",
        sink.port,
        events_file.display(),
        hook.display()
    ));
    send(
        d.port,
        "a@example.org",
        &["ok1@remote.example", "ok2@remote.example"],
    );
    send(d.port, "b@example.org", &["tempfail@remote.example"]);
    send(d.port, "c@example.org", &["permfail@remote.example"]);
    let refused = send(d.port, "e@example.org", &["nosuch@mx.test.example"]);
    assert!(refused[0].starts_with("550"), "{refused:?}");
    // ok1, ok2 and the bounce notice to c@example.org.
    sink.wait_for(2, 20);
    wait_until(20, || {
        let log = d.log();
        (log.contains("to=<tempfail@remote.example>")
            && log.contains("to=<ok2@remote.example>")
            && log.contains("to=<c@example.org>"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("workload unfinished:\n{}", d.log()));
    // A stop writes what the event writer and the hook hold.
    d.stop();
    let log = d.log();
    let events = parse_events(&std::fs::read_to_string(&events_file).unwrap());
    attempts_match_to_lines(&log, &events);
    receptions_match_client_and_qmgr_lines(&log, &events);
    // The rejection, as smtpd's NOQUEUE line.
    let rejections = events_of(&events, "rejection");
    assert_eq!(rejections.len(), 1, "{events:#?}");
    let r = rejections[0];
    assert!(log.contains("NOQUEUE: reject: RCPT from"), "{log}");
    assert!(log.contains(r["response"].as_str().unwrap()), "{r}\n{log}");
    assert_eq!(r["recipient"], "nosuch@mx.test.example");
    assert_eq!(r["sender"], "e@example.org");
    assert_eq!(r["stage"], "RCPT");
    assert_eq!(r["code"], 550);
    assert_eq!(r["dsn"], "5.1.1");
    assert!(r.get("queue_id").is_none(), "{r}");
    // The hook got the same events.
    let from_file: Vec<String> = std::fs::read_to_string(&events_file)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    wait_until(10, || {
        (hooked.lock().unwrap().len() >= from_file.len()).then_some(())
    });
    assert_eq!(*hooked.lock().unwrap(), from_file);
}

/// Each to=<> line is one delivery, deferral or bounce event, and back.
fn attempts_match_to_lines(log: &str, events: &[Value]) {
    let lines = delivery_lines(log);
    let attempts: Vec<&Value> = events
        .iter()
        .filter(|e| ["delivery", "deferral", "bounce"].contains(&e["event"].as_str().unwrap()))
        .collect();
    assert_eq!(attempts.len(), lines.len(), "{log}\n{events:#?}");
    for e in &attempts {
        let key = (
            e["queue_id"].as_str().unwrap().to_string(),
            e["recipient"].as_str().unwrap().to_string(),
        );
        let (relay, dsn, status) = lines
            .get(&key)
            .unwrap_or_else(|| panic!("no log line for {e}\n{log}"));
        assert_eq!(e["next_hop"].as_str().unwrap(), relay, "{e}");
        assert_eq!(e["dsn"].as_str().unwrap(), dsn, "{e}");
        assert_eq!(e["status"].as_str().unwrap(), status, "{e}");
        let kind = match status.as_str() {
            "sent" => "delivery",
            "bounced" => "bounce",
            _ => "deferral",
        };
        assert_eq!(e["event"], kind, "{e}");
        assert!(e["size"].as_u64().unwrap() > 0, "{e}");
        assert!(e["delay"].as_f64().is_some(), "{e}");
    }
    let status_of = |to: &str| {
        let e = attempts
            .iter()
            .find(|e| e["recipient"] == to)
            .unwrap_or_else(|| panic!("no event for {to}"));
        (
            e["event"].as_str().unwrap().to_string(),
            e["dsn"].as_str().unwrap().to_string(),
        )
    };
    assert_eq!(status_of("ok1@remote.example").0, "delivery");
    assert_eq!(status_of("tempfail@remote.example").0, "deferral");
    assert_eq!(status_of("permfail@remote.example").0, "bounce");
    assert!(status_of("permfail@remote.example").1.starts_with("5."));
}

/// Receptions: the queue ids smtpd logged `client=` for, with the sender
/// and size the queue manager logged.
fn receptions_match_client_and_qmgr_lines(log: &str, events: &[Value]) {
    let receptions = events_of(events, "reception");
    let client_ids: BTreeSet<String> = log
        .lines()
        .filter_map(|l| {
            l.split_once("]: ")?
                .1
                .split_once(": client=")
                .map(|(id, _)| id.to_string())
        })
        .collect();
    let received: BTreeSet<String> = receptions
        .iter()
        .map(|e| e["queue_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(received, client_ids, "{log}");
    for e in &receptions {
        let line = format!(
            "{}: from=<{}>, size={}, nrcpt={} (queue active)",
            e["queue_id"].as_str().unwrap(),
            e["sender"].as_str().unwrap(),
            e["size"],
            e["recipients"].as_array().unwrap().len()
        );
        assert!(log.contains(&line), "{line}\n{log}");
        assert_eq!(e["protocol"], "ESMTP");
        assert_eq!(e["helo"], "client.example");
    }
}

#[test]
fn a_hook_that_is_down_keeps_its_buffer_and_counts_what_it_drops() {
    let hooks = tempfile::tempdir().unwrap();
    let hook = hooks.path().join("late.sock");
    // No local delivery: each message gives a reception event only.
    let d = Daemon::start_keeping_local_mail(&format!(
        "corepost_event_hooks = unix:{}\ncorepost_event_hook_buffer = 2\n",
        hook.display()
    ));
    for _ in 0..4 {
        send(d.port, "a@example.org", &["alice@mx.test.example"]);
    }
    let warning = wait_until(20, || {
        let log = d.log();
        log.lines()
            .find(|l| l.contains("events dropped: its buffer of 2 events was full"))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no dropped-events warning:\n{}", d.log()));
    assert!(
        warning.contains(&format!("warning: event hook unix:{}", hook.display())),
        "{warning}"
    );
    assert!(d.log().contains("connect:"), "{}", d.log());
    // Mail was never held up by the hook.
    assert_eq!(d.log().matches("(queue active)").count(), 4, "{}", d.log());
    // Back: it gets what it kept.
    let hooked = hook_listener(&hook);
    wait_until(40, || (hooked.lock().unwrap().len() >= 2).then_some(()))
        .unwrap_or_else(|| panic!("the hook got nothing back:\n{}", d.log()));
    std::thread::sleep(Duration::from_millis(500));
    let got = hooked.lock().unwrap().clone();
    // The oldest two events were kept: the first message's reception and
    // its deferral (no local transport).
    assert_eq!(got.len(), 2, "{got:?}");
    let events = parse_events(&got.join("\n"));
    assert_eq!(events[0]["event"], "reception", "{got:?}");
    assert_eq!(events[0]["sender"], "a@example.org", "{got:?}");
}

#[test]
fn corepost_log_format_json_writes_each_log_line_as_an_object() {
    let d = Daemon::start("corepost_log_format = json\n");
    send(d.port, "a@example.org", &["nosuch@mx.test.example"]);
    let log = wait_until(10, || {
        let log = d.log();
        log.contains("NOQUEUE: reject").then_some(log)
    })
    .unwrap_or_else(|| panic!("{}", d.log()));
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let started = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().starts_with("daemon started"))
        .unwrap();
    assert_eq!(started["program"], "corepost/master");
    assert_eq!(started["host"], "mx.test.example");
    assert_eq!(started["severity"], "info");
    assert!(lines.iter().any(|l| {
        l["program"] == "corepost/smtpd"
            && l["message"]
                .as_str()
                .unwrap()
                .starts_with("NOQUEUE: reject: RCPT from")
    }));
}

/// `corepost run` with main.cf's log going to syslog or journald: a test
/// datagram socket named by `$COREPOST_SYSLOG_SOCKET` /
/// `$COREPOST_JOURNAL_SOCKET` stands for /dev/log and journald's.
struct Foreground {
    dir: tempfile::TempDir,
    port: u16,
    child: std::process::Child,
    socket: UnixDatagram,
}

impl Foreground {
    fn start(extra: &str, env: &str, stderr: Stdio) -> Foreground {
        Foreground::start_with_env(extra, env, stderr, &[])
    }

    fn start_with_env(
        extra: &str,
        env: &str,
        stderr: Stdio,
        more_env: &[(&str, String)],
    ) -> Foreground {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(
            dir.path().join("main.cf"),
            format!(
                "myhostname = mx.test.example\nqueue_directory = {}/spool\nmail_owner = root\n\
                 corepost_cores = 1\nalias_maps =\nalias_database =\nsmtpd_peername_lookup = no\n\
                 local_recipient_maps = inline:{{ alice=1 }}\n{extra}\n",
                dir.path().display()
            ),
        )
        .unwrap();
        std::fs::write(
            dir.path().join("master.cf"),
            format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
        )
        .unwrap();
        let path = dir.path().join("log.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let child = Command::new(corepost_bin())
            .args(["run", "-c", &dir.path().display().to_string()])
            .env_remove("COREPOST_CONFIG_DIR")
            .env_remove("JOURNAL_STREAM")
            .env(env, &path)
            .envs(more_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        Foreground {
            dir,
            port,
            child,
            socket,
        }
    }

    /// Datagrams until one contains `needle`.
    fn until(&self, needle: &str) -> Vec<String> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let n = self
                .socket
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("{e} waiting for {needle:?}; got {got:#?}"));
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            if got.last().unwrap().contains(needle) {
                return got;
            }
        }
    }
}

impl Drop for Foreground {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn syslog_datagrams_carry_facility_severity_and_tag() {
    // `debug_peer_level` is not supported: a warning at start.
    let d = Foreground::start(
        "corepost_log_destination = syslog\nsyslog_facility = local3\nsyslog_name = mta\n\
         debug_peer_level = 3\n",
        "COREPOST_SYSLOG_SOCKET",
        Stdio::piped(),
    );
    let got = d.until("daemon started");
    let pid = d.child.id();
    let stamp = r"[A-Z][a-z]{2} [ 1-3][0-9] [0-2][0-9]:[0-5][0-9]:[0-6][0-9]";
    // local3 is 19: warning 19*8+4, info 19*8+6.
    let warning = regex_line(&format!(
        r"^<156>{stamp} mta/master\[{pid}\]: warning: .*debug_peer_level"
    ));
    let info = regex_line(&format!(
        r"^<158>{stamp} mta/master\[{pid}\]: daemon started -- version"
    ));
    assert!(got.iter().any(|l| warning(l)), "{got:#?}");
    assert!(info(got.last().unwrap()), "{got:#?}");
    send(d.port, "a@example.org", &["nosuch@mx.test.example"]);
    let got = d.until("NOQUEUE: reject: RCPT");
    let reject = regex_line(&format!(
        r"^<158>{stamp} mta/smtpd\[{pid}\]: NOQUEUE: reject: RCPT from [a-z]+\[127\.0\.0\.1\]: 550 5\.1\.1 "
    ));
    assert!(reject(got.last().unwrap()), "{got:#?}");
    assert!(got.iter().all(|l| !l.ends_with('\n')), "{got:#?}");
}

#[test]
fn a_detached_daemon_logs_to_syslog_and_a_terminal_one_to_stderr() {
    // Standard error on /dev/null, as after `corepost start`: syslog, as
    // Postfix with an empty maillog_file.
    let d = Foreground::start("", "COREPOST_SYSLOG_SOCKET", Stdio::null());
    let got = d.until("daemon started");
    assert!(got.last().unwrap().starts_with("<22>"), "{got:#?}");
    drop(d);
    // Standard error a pipe (a terminal, a test, a supervisor): stays there.
    let mut d = Foreground::start("", "COREPOST_SYSLOG_SOCKET", Stdio::piped());
    let mut stderr = BufReader::new(d.child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("daemon started") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "stderr closed");
    }
    assert!(line.contains(" mx.test.example corepost/master["), "{line}");
    d.socket.set_nonblocking(true).unwrap();
    assert!(
        d.socket.recv(&mut [0u8; 512]).is_err(),
        "a datagram went to syslog too"
    );
    let _ = d.dir.path();
}

#[test]
fn journald_entries_carry_priority_and_identifier() {
    let d = Foreground::start(
        "corepost_log_destination = journal\ndebug_peer_level = 3\n",
        "COREPOST_JOURNAL_SOCKET",
        Stdio::piped(),
    );
    let got = d.until("daemon started");
    let pid = d.child.id();
    let warning = got
        .iter()
        .find(|e| e.contains("debug_peer_level"))
        .unwrap_or_else(|| panic!("{got:#?}"));
    assert!(
        warning.starts_with(&format!(
            "PRIORITY=4\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=corepost/master\nSYSLOG_PID={pid}\nMESSAGE=warning: "
        )),
        "{warning}"
    );
    assert!(got.last().unwrap().starts_with("PRIORITY=6\n"), "{got:#?}");
}

/// A matcher for one line (a tiny regex: the test crate has no regex
/// dependency, so this asks grep -E).
fn regex_line(pattern: &str) -> impl Fn(&str) -> bool + use<> {
    let pattern = pattern.to_string();
    move |line: &str| {
        let mut child = Command::new("grep")
            .args(["-qE", &pattern])
            .stdin(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(line.as_bytes())
            .unwrap();
        child.wait().unwrap().success()
    }
}

#[test]
fn logrotate_renames_compresses_and_loses_nothing() {
    let events = tempfile::tempdir().unwrap();
    let events_file = events.path().join("events.json");
    let d = Daemon::start_keeping_local_mail(&format!(
        "corepost_event_log_file = {}\n",
        events_file.display()
    ));
    send(d.port, "before@example.org", &["alice@mx.test.example"]);
    wait_until(10, || {
        d.log()
            .contains("from=<before@example.org>, size=")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", d.log()));
    let out = corepost(&["logrotate", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rotated = |dir: &Path, base: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(&format!("{base}.")) && name.ends_with(".gz")
            })
            .collect()
    };
    let old = rotated(d.dir.path(), "maillog");
    assert_eq!(old.len(), 1, "{old:?}");
    // maillog.YYYYMMDD-HHMMSS.gz
    let name = old[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(name.len(), "maillog.".len() + 15 + 3, "{name}");
    send(d.port, "after@example.org", &["alice@mx.test.example"]);
    wait_until(10, || {
        d.log()
            .contains("from=<after@example.org>, size=")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", d.log()));
    let gunzip = |p: &Path| {
        let out = Command::new("gzip").arg("-dc").arg(p).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let before = gunzip(&old[0]);
    let after = d.log();
    assert!(
        before.contains("from=<before@example.org>, size="),
        "{before}"
    );
    assert!(!before.contains("after@example.org"), "{before}");
    assert!(after.contains("from=<after@example.org>, size="), "{after}");
    assert!(!after.contains("before@example.org"), "{after}");
    assert!(before.contains("daemon started"), "{before}");
    // The event file was rotated with it.
    let old_events = rotated(events.path(), "events.json");
    assert_eq!(old_events.len(), 1);
    assert!(gunzip(&old_events[0]).contains("\"sender\":\"before@example.org\""));
    let new_events = wait_until(10, || {
        std::fs::read_to_string(&events_file)
            .ok()
            .filter(|t| t.contains("\"sender\":\"after@example.org\""))
    })
    .unwrap();
    let new_events = parse_events(&new_events);
    assert!(
        new_events
            .iter()
            .any(|e| e["event"] == "admin" && e["action"] == "logrotate"),
        "{new_events:#?}"
    );
    queue_delete_is_an_admin_event(&d, &events_file, &new_events);
}

/// A queue administration action: the event beside postsuper's line.
fn queue_delete_is_an_admin_event(d: &Daemon, events_file: &Path, new_events: &[Value]) {
    let id = new_events
        .iter()
        .find(|e| e["event"] == "reception")
        .unwrap()["queue_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = corepost(&["queue", "-c", &d.config_dir(), "delete", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until(10, || d.log().contains("corepost/postsuper[").then_some(()))
        .unwrap_or_else(|| panic!("{}", d.log()));
    assert!(
        d.log().contains(&format!("]: {id}: removed")),
        "{}",
        d.log()
    );
    let removed = wait_until(10, || {
        let text = std::fs::read_to_string(events_file).unwrap();
        parse_events(&text)
            .into_iter()
            .find(|e| e["event"] == "admin" && e["action"] == "removed")
    })
    .unwrap();
    assert_eq!(removed["queue_id"], id.as_str());
    assert_eq!(removed["program"], "corepost/postsuper");
}

#[test]
fn logrotate_refuses_what_postfix_refuses() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.cf"), "maillog_file =\n").unwrap();
    let out = corepost(&["logrotate", "-c", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    assert_eq!(
        stderr(&out).trim(),
        "corepost: fatal: empty 'maillog_file' parameter value - logfile rotation failed"
    );
    std::fs::write(
        dir.path().join("main.cf"),
        format!("maillog_file = {}/none\n", dir.path().display()),
    )
    .unwrap();
    let out = corepost(&["logrotate", "-c", &dir.path().display().to_string()]);
    assert_eq!(
        stderr(&out).trim(),
        format!(
            "corepost: fatal: logfile '{0}/none' rotation failed: mv: cannot stat '{0}/none': No such file or directory",
            dir.path().display()
        )
    );
    std::fs::write(dir.path().join("main.cf"), "maillog_file = /dev/stdout\n").unwrap();
    let out = corepost(&["logrotate", "-c", &dir.path().display().to_string()]);
    assert_eq!(
        stderr(&out).trim(),
        "corepost: fatal: not rotating '/dev/stdout'"
    );
}

#[test]
fn check_refuses_a_bad_event_hook() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        "corepost_event_hooks = ftp://logs.example\n",
    )
    .unwrap();
    let out = corepost(&["check", "-c", &dir.path().display().to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(
            "corepost: error: corepost_event_hooks: ftp://logs.example: expected unix:/path, tcp:host:port or http://host[:port]/path"
        ),
        "{}",
        stderr(&out)
    );
}

/// A TCP listener collecting lines (a `tcp:` hook) or HTTP POST bodies
/// (an `http://` hook, answered 200).
fn tcp_collector(http: bool) -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let shared = Arc::clone(&lines);
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if !http {
                    for line in reader.lines().map_while(Result::ok) {
                        shared.lock().unwrap().push(line);
                    }
                    return;
                }
                let mut head = String::new();
                let mut length = 0;
                while reader.read_line(&mut head).unwrap_or(0) > 0 && !head.ends_with("\r\n\r\n") {
                    if let Some(v) = head
                        .lines()
                        .last()
                        .and_then(|l| l.strip_prefix("Content-Length: "))
                    {
                        length = v.trim().parse().unwrap();
                    }
                }
                assert!(head.starts_with("POST /events HTTP/1.1\r\n"), "{head}");
                assert!(
                    head.contains("Content-Type: application/x-ndjson\r\n"),
                    "{head}"
                );
                let mut body = vec![0u8; length];
                std::io::Read::read_exact(&mut reader, &mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                shared
                    .lock()
                    .unwrap()
                    .extend(body.lines().map(str::to_string));
                use std::io::Write;
                let _ = (&stream).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            });
        }
    });
    (port, lines)
}

#[test]
fn tcp_and_http_hooks_get_the_events() {
    let (tcp, by_tcp) = tcp_collector(false);
    let (http, by_http) = tcp_collector(true);
    let d = Daemon::start_keeping_local_mail(&format!(
        "corepost_event_hooks = tcp:127.0.0.1:{tcp}, http://127.0.0.1:{http}/events\n"
    ));
    send(d.port, "a@example.org", &["alice@mx.test.example"]);
    for got in [by_tcp, by_http] {
        let lines = wait_until(20, || {
            let lines = got.lock().unwrap().clone();
            lines
                .iter()
                .any(|l| l.contains("\"event\":\"reception\""))
                .then_some(lines)
        })
        .unwrap_or_else(|| panic!("no event:\n{}", d.log()));
        let events = parse_events(&lines.join("\n"));
        let reception = events.iter().find(|e| e["event"] == "reception").unwrap();
        assert_eq!(reception["sender"], "a@example.org");
        assert_eq!(reception["recipients"][0], "alice@mx.test.example");
    }
}

#[test]
fn logrotate_is_followed_by_a_daemon_that_gave_up_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("note: skipped: it needs root");
        return;
    }
    // The configuration directory (holding maillog) is root's: the daemon,
    // running as nobody, could not create a new maillog there itself.
    let d = Daemon::start_unprivileged("", "");
    send(
        d.port,
        "before@example.org",
        &["postmaster@mx.test.example"],
    );
    wait_until(10, || {
        d.log()
            .contains("from=<before@example.org>, size=")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("{}", d.log()));
    let out = corepost(&["logrotate", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    send(d.port, "after@example.org", &["postmaster@mx.test.example"]);
    wait_until(10, || {
        d.log()
            .contains("from=<after@example.org>, size=")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no new lines in the new maillog:\n{}", d.log()));
    assert!(!d.log().contains("before@example.org"), "{}", d.log());
}

#[test]
fn reload_opens_the_log_main_cf_names_now() {
    let events = tempfile::tempdir().unwrap();
    let events_file = events.path().join("events.json");
    let d = Daemon::start(&format!(
        "corepost_event_log_file = {}\n",
        events_file.display()
    ));
    let main_cf = d.dir.path().join("main.cf");
    let mut text = std::fs::read_to_string(&main_cf).unwrap();
    let second = d.dir.path().join("maillog2");
    text.push_str(&format!("maillog_file = {}\n", second.display()));
    std::fs::write(&main_cf, text).unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    send(d.port, "a@example.org", &["nosuch@mx.test.example"]);
    let new = wait_until(10, || {
        std::fs::read_to_string(&second)
            .ok()
            .filter(|t| t.contains("NOQUEUE: reject: RCPT"))
    })
    .unwrap_or_else(|| panic!("nothing in maillog2; maillog:\n{}", d.log()));
    assert!(new.contains("corepost/master["), "{new}");
    assert!(new.contains("]: reload -- version "), "{new}");
    assert!(!d.log().contains("NOQUEUE"), "{}", d.log());
    // The reload is an admin event.
    let events = wait_until(10, || {
        std::fs::read_to_string(&events_file)
            .ok()
            .filter(|t| t.contains("\"rejection\""))
    })
    .unwrap();
    let events = parse_events(&events);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "admin" && e["action"] == "reload"),
        "{events:#?}"
    );
}

#[test]
fn a_tls_session_is_an_event_beside_postfix_tls_line() {
    let certs = tempfile::tempdir().unwrap();
    let c = rcgen::generate_simple_self_signed(vec!["mx.test.example".to_string()]).unwrap();
    let (cert, key) = (certs.path().join("cert.pem"), certs.path().join("key.pem"));
    std::fs::write(&cert, c.cert.pem()).unwrap();
    std::fs::write(&key, c.signing_key.serialize_pem()).unwrap();
    let events_file = certs.path().join("events.json");
    let mut d = Daemon::start_keeping_local_mail(&format!(
        "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {}\nsmtpd_tls_key_file = {}\n\
         smtpd_tls_loglevel = 1\ncorepost_event_log_file = {}\n",
        cert.display(),
        key.display(),
        events_file.display()
    ));
    let (ok, out) = python(&format!(
        r#"import smtplib, ssl
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
s = smtplib.SMTP('127.0.0.1', {port})
s.ehlo('client.example')
s.starttls(context=ctx)
s.ehlo('client.example')
s.sendmail('t@example.org', ['alice@mx.test.example'], 'Subject: tls\r\n\r\nx\r\n')
s.quit()
print('ok')
"#,
        port = d.port
    ));
    assert!(ok, "{out}");
    d.stop();
    let log = d.log();
    let line = log
        .lines()
        .find_map(|l| l.split_once("Anonymous TLS connection established from "))
        .unwrap_or_else(|| panic!("{log}"))
        .1;
    let (peer, description) = line.split_once(": ").unwrap();
    let events = parse_events(&std::fs::read_to_string(&events_file).unwrap());
    let tls = events_of(&events, "tls");
    assert_eq!(tls.len(), 1, "{events:#?}");
    assert_eq!(tls[0]["direction"], "inbound");
    assert_eq!(tls[0]["peer"], peer);
    assert_eq!(tls[0]["description"], description);
    let reception = events_of(&events, "reception")[0];
    assert_eq!(reception["protocol"], "ESMTPS");
    assert!(
        description.starts_with(reception["tls"].as_str().unwrap()),
        "{reception} vs {description}"
    );
}

#[test]
fn an_expired_message_is_an_expiry_event_beside_qmgr_line() {
    let sink = Sink::start();
    let files = tempfile::tempdir().unwrap();
    let events_file = files.path().join("events.json");
    let mut d = Daemon::start(&format!(
        "corepost_cores = 1\nrelayhost = [127.0.0.1]:{}\nmaximal_queue_lifetime = 0\n\
         corepost_event_log_file = {}\n",
        sink.port,
        events_file.display()
    ));
    send(d.port, "late@example.org", &["tempfail@remote.example"]);
    wait_until(20, || d.log().contains("status=expired").then_some(()))
        .unwrap_or_else(|| panic!("{}", d.log()));
    d.stop();
    let log = d.log();
    let events = parse_events(&std::fs::read_to_string(&events_file).unwrap());
    let expiry = events_of(&events, "expiry");
    assert_eq!(expiry.len(), 1, "{events:#?}");
    let line = format!(
        "{}: from=<late@example.org>, status=expired, returned to sender",
        expiry[0]["queue_id"].as_str().unwrap()
    );
    assert!(log.contains(&line), "{line}\n{log}");
    // The last attempt is logged (and is an event) as deferred.
    let deferral = events_of(&events, "deferral");
    assert_eq!(deferral[0]["queue_id"], expiry[0]["queue_id"]);
    assert_eq!(deferral[0]["status"], "deferred");
}

#[test]
fn under_systemd_the_journal_stream_means_journald() {
    use std::os::unix::fs::MetadataExt;
    // Standard error is the stream $JOURNAL_STREAM names, as systemd
    // connects it.
    let files = tempfile::tempdir().unwrap();
    let stream = std::fs::File::create(files.path().join("stream")).unwrap();
    let m = stream.metadata().unwrap();
    let d = Foreground::start_with_env(
        "",
        "COREPOST_JOURNAL_SOCKET",
        Stdio::from(stream),
        &[("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()))],
    );
    let got = d.until("daemon started");
    assert!(
        got.last()
            .unwrap()
            .starts_with("PRIORITY=6\nSYSLOG_FACILITY=2\nSYSLOG_IDENTIFIER=corepost/master\n"),
        "{got:#?}"
    );
    drop(d);
    // Nothing went to the stream itself.
    let text = std::fs::read_to_string(files.path().join("stream")).unwrap();
    assert!(!text.contains("daemon started"), "{text}");
}

#[test]
fn an_outbound_tls_session_is_an_event_beside_the_client_tls_line() {
    use corepost::delivery::testsink::{SinkScript, TestSink};
    let sink = TestSink::start(SinkScript {
        starttls: true,
        ..SinkScript::default()
    })
    .unwrap();
    let files = tempfile::tempdir().unwrap();
    let events_file = files.path().join("events.json");
    let mut d = Daemon::start(&format!(
        "relayhost = [127.0.0.1]:{}\nsmtp_tls_security_level = may\nsmtp_tls_loglevel = 1\n\
         corepost_event_log_file = {}\n",
        sink.addr().port(),
        events_file.display()
    ));
    send(d.port, "a@example.org", &["b@remote.example"]);
    wait_until(20, || d.log().contains("status=sent").then_some(()))
        .unwrap_or_else(|| panic!("{}", d.log()));
    d.stop();
    let log = d.log();
    let (trust, rest) = log
        .lines()
        .find_map(|l| {
            let (_, m) = l.split_once("]: ")?;
            m.split_once(" TLS connection established to ")
        })
        .unwrap_or_else(|| panic!("{log}"));
    let (peer, description) = rest.split_once(": ").unwrap();
    let events = parse_events(&std::fs::read_to_string(&events_file).unwrap());
    let tls = events_of(&events, "tls");
    assert_eq!(tls.len(), 1, "{events:#?}");
    assert_eq!(tls[0]["direction"], "outbound");
    assert_eq!(tls[0]["program"], "corepost/smtp");
    assert_eq!(tls[0]["trust"], trust);
    assert_eq!(tls[0]["peer"], peer);
    assert_eq!(tls[0]["description"], description);
}

#[test]
fn a_message_refused_by_header_checks_is_a_rejection_event() {
    let files = tempfile::tempdir().unwrap();
    let checks = files.path().join("header_checks");
    std::fs::write(&checks, "/^Subject: events/ REJECT no events here\n").unwrap();
    let events_file = files.path().join("events.json");
    let mut d = Daemon::start_keeping_local_mail(&format!(
        "header_checks = regexp:{}\ncorepost_event_log_file = {}\n",
        checks.display(),
        events_file.display()
    ));
    let mut c = Raw::connect(d.port);
    c.cmd("EHLO client.example");
    c.cmd("MAIL FROM:<spam@example.org>");
    c.cmd("RCPT TO:<alice@mx.test.example>");
    c.cmd("DATA");
    c.send(b"Subject: events\r\n\r\nhello\r\n.\r\n");
    let reply = c.reply();
    assert!(reply.starts_with("550 5.7.1 no events here"), "{reply}");
    d.stop();
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains(": reject: header Subject: events"))
        .unwrap_or_else(|| panic!("{log}"));
    let events = parse_events(&std::fs::read_to_string(&events_file).unwrap());
    let r = events_of(&events, "rejection");
    assert_eq!(r.len(), 1, "{events:#?}");
    let id = r[0]["queue_id"].as_str().unwrap();
    assert!(line.contains("corepost/cleanup["), "{line}");
    assert!(line.contains(&format!("]: {id}: reject: header")), "{line}");
    assert_eq!(r[0]["program"], "corepost/cleanup");
    assert_eq!(r[0]["sender"], "spam@example.org");
    assert_eq!(r[0]["code"], 550);
    assert_eq!(r[0]["dsn"], "5.7.1");
    assert_eq!(r[0]["response"], "no events here");
    assert!(events_of(&events, "reception").is_empty(), "{events:#?}");
}
