//! Listening addresses end to end: one daemon per address (Postfix's
//! "Address already in use"), master.cf `maxproc` as a session limit
//! across cores, and a reload that opens and closes listeners.

mod support;

use std::io::Read;
use std::time::Duration;
use support::*;

/// A second configuration and queue whose master.cf listens where `d`
/// does; returns its directory.
fn second_config(d: &Daemon) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let main = std::fs::read_to_string(d.dir.path().join("main.cf"))
        .unwrap()
        .replace(&d.config_dir(), &dir.path().display().to_string());
    std::fs::write(dir.path().join("main.cf"), main).unwrap();
    std::fs::copy(d.dir.path().join("master.cf"), dir.path().join("master.cf")).unwrap();
    dir
}

fn run_to_exit(dir: &std::path::Path) -> std::process::Output {
    let mut child = std::process::Command::new(corepost_bin())
        .args(["run", "-c", &dir.display().to_string()])
        .env_remove("COREPOST_CONFIG_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(20, || child.try_wait().ok().flatten());
    if exited.is_none() {
        let _ = child.kill();
        panic!("the second daemon kept running");
    }
    child.wait_with_output().unwrap()
}

/// The greeting, or "" when none comes within `wait`.
fn greeting_within(s: &mut std::net::TcpStream, wait: Duration) -> String {
    s.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

fn reload_and_wait(d: &Daemon) -> String {
    let before = d.log().matches("corepost/master").count();
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(d.pid() as i32, libc::SIGHUP) };
    wait_until(20, || {
        let log = d.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("corepost/master"))
            .collect();
        lines[before..]
            .iter()
            .find(|l| l.contains("reload") || l.contains("reload failed"))
            .map(|l| l.to_string())
    })
    .expect("the daemon logged no reload verdict")
}

#[test]
fn a_second_daemon_on_the_same_address_is_refused() {
    let mut d = Daemon::start("");
    let other = second_config(&d);
    let out = run_to_exit(other.path());
    assert!(!out.status.success());
    let want = format!(
        "fatal: bind 127.0.0.1 port {}: Address already in use",
        d.port
    );
    assert!(stderr(&out).contains(&want), "{}", stderr(&out));
    let log = std::fs::read_to_string(other.path().join("maillog")).unwrap_or_default();
    assert!(
        log.contains("corepost/master") && log.contains(&want),
        "{log}"
    );
    // After a crash (SIGKILL) the address is free again at once.
    d.kill();
    d.spawn();
    let _ = Raw::connect(d.port);
}

#[test]
fn an_address_another_program_serves_is_refused() {
    let d = Daemon::start("");
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let other = second_config(&d);
    let master = std::fs::read_to_string(other.path().join("master.cf"))
        .unwrap()
        .replace(
            &format!("127.0.0.1:{} ", d.port),
            &format!("127.0.0.1:{port} "),
        );
    std::fs::write(other.path().join("master.cf"), master).unwrap();
    let out = run_to_exit(other.path());
    assert!(
        stderr(&out).contains(&format!(
            "fatal: bind 127.0.0.1 port {port}: Address already in use"
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn maxproc_limits_sessions_across_cores() {
    // corepost_cores = 2; master.cf maxproc 2 on the second service.
    let (d, ports) = Daemon::start_with_services("", &["inet n - n - 2 smtpd"]);
    let port = ports[0];
    let mut first = Raw::connect(port);
    let _second = Raw::connect(port);
    // Postfix leaves the third client in the listen queue: connected, not
    // greeted, until a session ends.
    let mut third = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(greeting_within(&mut third, Duration::from_millis(1500)), "");
    // The other service is not limited by this one.
    let _elsewhere = Raw::connect(d.port);
    assert!(first.cmd("QUIT").starts_with("221"));
    drop(first);
    let greeting = greeting_within(&mut third, Duration::from_secs(10));
    assert!(greeting.starts_with("220 "), "{greeting:?}");
}

#[test]
fn default_process_limit_applies_to_maxproc_dash() {
    let d = Daemon::start("default_process_limit = 1");
    let mut first = Raw::connect(d.port);
    let mut second = std::net::TcpStream::connect(("127.0.0.1", d.port)).unwrap();
    assert_eq!(
        greeting_within(&mut second, Duration::from_millis(1000)),
        ""
    );
    first.cmd("QUIT");
    drop(first);
    assert!(greeting_within(&mut second, Duration::from_secs(10)).starts_with("220 "));
}

#[test]
fn reload_opens_new_listeners_and_closes_removed_ones() {
    let (d, ports) = Daemon::start_with_services("", &["inet n - n - - smtpd"]);
    let (kept, removed) = (d.port, ports[0]);
    let mut open = Raw::connect(removed);
    assert!(open.cmd("EHLO x").starts_with("250"));
    let added = free_port();
    let master_cf = d.dir.path().join("master.cf");
    let text = std::fs::read_to_string(&master_cf).unwrap().replace(
        &format!("127.0.0.1:{removed} inet"),
        &format!("127.0.0.1:{added} inet"),
    );
    std::fs::write(&master_cf, text).unwrap();
    let verdict = reload_and_wait(&d);
    assert!(verdict.contains("reload -- version"), "{verdict}");
    let _ = Raw::connect(added);
    let _ = Raw::connect(kept);
    assert!(std::net::TcpStream::connect(("127.0.0.1", removed)).is_err());
    // The session on the removed listener goes on.
    assert!(open.cmd("NOOP").starts_with("250"));
    let status = stdout(&corepost(&["status", "-c", &d.config_dir()]));
    assert!(status.contains(&format!("127.0.0.1:{added}")), "{status}");
    assert!(
        !status.contains(&format!("127.0.0.1:{removed}")),
        "{status}"
    );
    // The removed address is free: another program may bind it.
    std::net::TcpListener::bind(("127.0.0.1", removed)).unwrap();

    // An address that cannot be bound fails the whole reload: the running
    // listeners stay.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&master_cf).unwrap().replace(
        &format!("127.0.0.1:{added} inet"),
        &format!("127.0.0.1:{busy_port} inet"),
    );
    std::fs::write(&master_cf, text).unwrap();
    let verdict = reload_and_wait(&d);
    assert!(
        verdict.contains(&format!(
            "warning: reload failed, keeping the running configuration: bind 127.0.0.1 port {busy_port}: Address already in use"
        )),
        "{verdict}"
    );
    let _ = Raw::connect(added);
}

#[test]
fn reload_changes_maxproc() {
    let (d, ports) = Daemon::start_with_services("", &["inet n - n - 1 smtpd"]);
    let port = ports[0];
    let _first = Raw::connect(port);
    let mut second = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    assert_eq!(greeting_within(&mut second, Duration::from_millis(800)), "");
    let master_cf = d.dir.path().join("master.cf");
    let text = std::fs::read_to_string(&master_cf)
        .unwrap()
        .replace("inet n - n - 1 smtpd", "inet n - n - 2 smtpd");
    std::fs::write(&master_cf, text).unwrap();
    assert!(reload_and_wait(&d).contains("reload -- version"));
    assert!(greeting_within(&mut second, Duration::from_secs(10)).starts_with("220 "));
}

#[test]
fn reload_opens_a_privileged_port_after_root_is_given_up() {
    // Started as root, running as nobody: the daemon keeps only the right
    // to bind ports below 1024, as Postfix's master (root) can.
    let d = Daemon::start_unprivileged("", "");
    let low = (700..1000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1000");
    let master_cf = d.dir.path().join("master.cf");
    let mut text = std::fs::read_to_string(&master_cf).unwrap();
    text.push_str(&format!("127.0.0.1:{low} inet n - n - - smtpd\n"));
    std::fs::write(&master_cf, text).unwrap();
    let verdict = reload_and_wait(&d);
    assert!(
        verdict.contains("reload -- version"),
        "{verdict}\n{}",
        d.log()
    );
    let _ = Raw::connect(low);
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(!uid.split_whitespace().nth(1).unwrap().eq("0"), "{uid}");
    let caps = status.lines().find(|l| l.starts_with("CapEff:")).unwrap();
    assert!(caps.ends_with("0000000000000400"), "{caps}");
}

#[test]
fn corepost_reload_waits_for_new_listeners_and_reports_a_refusal() {
    let (d, ports) = Daemon::start_with_services("", &["inet n - n - - smtpd"]);
    let added = free_port();
    let master_cf = d.dir.path().join("master.cf");
    let text = std::fs::read_to_string(&master_cf).unwrap().replace(
        &format!("127.0.0.1:{} inet", ports[0]),
        &format!("127.0.0.1:{added} inet"),
    );
    std::fs::write(&master_cf, text).unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The answer comes once the change is in effect.
    let _ = Raw::connect(added);
    assert!(std::net::TcpStream::connect(("127.0.0.1", ports[0])).is_err());
    // An address another program holds: the reload fails, nothing changes.
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let text = std::fs::read_to_string(&master_cf).unwrap().replace(
        &format!("127.0.0.1:{added} inet"),
        &format!("127.0.0.1:{busy_port} inet"),
    );
    std::fs::write(&master_cf, text).unwrap();
    let out = corepost(&["reload", "-c", &d.config_dir()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!(
            "bind 127.0.0.1 port {busy_port}: Address already in use"
        )),
        "{}",
        stderr(&out)
    );
    let _ = Raw::connect(added);
}

#[test]
fn reload_names_the_parameters_only_a_restart_applies() {
    let (d, _) = Daemon::start_with_services("", &["inet n - n - - smtpd"]);
    let main_cf = d.dir.path().join("main.cf");
    let text = std::fs::read_to_string(&main_cf)
        .unwrap()
        .replace("corepost_cores = 2", "corepost_cores = 1");
    std::fs::write(&main_cf, text + "corepost_fsync_policy = interval=50\n").unwrap();
    let verdict = reload_and_wait(&d);
    assert!(verdict.contains("reload -- version"), "{verdict}");
    let log = d.log();
    assert!(
        log.contains("warning: corepost_cores changed from \"2\" to \"1\": the running daemon keeps \"2\" until corepost is restarted"),
        "{log}"
    );
    assert!(
        log.contains("warning: corepost_fsync_policy changed from \"always\" to \"interval=50\""),
        "{log}"
    );
    // Still two cores: both accept sessions.
    let status = corepost(&["status", "-c", &d.config_dir()]);
    assert!(stdout(&status).contains("cores: 2"), "{}", stdout(&status));
}

/// A policy server that records the client and server addresses of each
/// request and answers DUNNO.
fn address_recorder() -> (u16, std::sync::mpsc::Receiver<Vec<String>>) {
    use std::io::{BufRead, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(stream);
                let mut wanted = Vec::new();
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    let l = line.trim_end().to_string();
                    line.clear();
                    if l.is_empty() {
                        let _ = tx.send(std::mem::take(&mut wanted));
                        if reader.get_mut().write_all(b"action=DUNNO\n\n").is_err() {
                            return;
                        }
                    } else if l.starts_with("client_address=")
                        || l.starts_with("client_port=")
                        || l.starts_with("server_address=")
                        || l.starts_with("server_port=")
                    {
                        wanted.push(l);
                    }
                }
            });
        }
    });
    (port, rx)
}

/// Connections are accepted with one accept4 that yields the client's
/// address, and the server's is the listener's own: both must still be the
/// real ones in the log, the Received header and what a policy server is
/// told, on IPv4 and on IPv6 loopback.
#[test]
fn both_ends_of_a_connection_are_known_on_ipv4_and_ipv6_loopback() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("skipped: this host has no IPv6 loopback");
        return;
    };
    let port6 = probe.local_addr().unwrap().port();
    drop(probe);
    let (policy, requests) = address_recorder();
    let mut d = Daemon::start_with_master(
        &format!(
            "mynetworks = 127.0.0.0/8 [::1]/128\nrelayhost = [127.0.0.1]:9\n\
             smtpd_recipient_restrictions = check_policy_service inet:127.0.0.1:{policy}, permit_mynetworks, reject\n"
        ),
        &format!("[::1]:{port6} inet n - n - - smtpd\n"),
    );
    for (ip, port) in [("127.0.0.1", d.port), ("::1", port6)] {
        let addr = std::net::SocketAddr::new(ip.parse().unwrap(), port);
        let (mut raw, greeting) = Raw::open_to(addr);
        assert!(greeting.starts_with("220 "), "{greeting}");
        let client_port = raw.stream.local_addr().unwrap().port();
        assert!(raw.cmd("EHLO client.example").starts_with("250"));
        assert!(raw.cmd("MAIL FROM:<a@example.org>").starts_with("250"));
        assert!(raw.cmd("RCPT TO:<b@remote.example>").starts_with("250"));
        assert!(raw.cmd("DATA").starts_with("354"));
        assert!(raw.cmd("Subject: x\r\n\r\nhi\r\n.").starts_with("250"));
        assert!(raw.cmd("QUIT").starts_with("221"));
        let got = requests.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(
            got,
            [
                format!("client_address={ip}"),
                format!("client_port={client_port}"),
                format!("server_address={ip}"),
                format!("server_port={port}"),
            ]
        );
        let shown = wait_until(10, || {
            let log = d.log();
            let want = format!("disconnect from unknown[{ip}] ehlo=1 mail=1 rcpt=1 data=1 quit=1");
            (log.contains(&format!("connect from unknown[{ip}]")) && log.contains(&want))
                .then_some(())
        });
        assert!(shown.is_some(), "{}", d.log());
    }
    d.stop();
    let headers: Vec<String> = queued_messages(&d.spool_dir())
        .iter()
        .map(|(_, _, content)| {
            let text = String::from_utf8_lossy(content);
            text.lines().next().unwrap_or_default().to_string()
        })
        .collect();
    for stamp in ["(unknown [127.0.0.1])", "(unknown [IPv6:::1])"] {
        assert!(
            headers
                .iter()
                .any(|h| h == &format!("Received: from client.example {stamp}")),
            "{headers:?}"
        );
    }
}
