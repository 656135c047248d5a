//! Running corepost as a service: `corepost start` (Postfix's `postfix
//! start`: background, wait for readiness, say why it failed) and the
//! sd_notify(3) protocol systemd's `Type=notify` relies on.

mod support;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::time::Duration;
use support::*;

/// A configuration directory with one smtpd service on a free port, the
/// log in the directory; returns (dir, port).
fn config(extra: &str) -> (tempfile::TempDir, u16) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let d = dir.path().display();
    std::fs::write(
        dir.path().join("main.cf"),
        format!(
            "myhostname = mx.test.example\nqueue_directory = {d}/spool\nmail_owner = root\ncorepost_cores = 1\nalias_maps =\nalias_database =\nmaillog_file_prefixes = /\nsmtpd_peername_lookup = no\n{extra}\n"
        ),
    )
    .expect("main.cf");
    std::fs::write(
        dir.path().join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\nsmtp unix - - n - - smtp\n"),
    )
    .expect("master.cf");
    (dir, port)
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(corepost_bin())
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .env_remove("NOTIFY_SOCKET")
        .output()
        .expect("run corepost")
}

/// Kills the daemon a test started if the test ends early.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Stops the daemon `corepost start` left running if the test ends early.
struct StopOnDrop(String);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = run(&["stop", "-c", &self.0]);
    }
}

/// The next notification within `secs`, as text.
fn next(socket: &UnixDatagram, secs: u64) -> Option<String> {
    socket
        .set_read_timeout(Some(Duration::from_secs(secs)))
        .ok()?;
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn run_tells_the_service_manager_ready_reloading_and_stopping() {
    let (dir, port) = config("");
    log_in_dir(&dir);
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let config_dir = dir.path().display().to_string();
    let mut child = KillOnDrop(
        Command::new(corepost_bin())
            .args(["run", "-c", &config_dir])
            .env_remove("COREPOST_CONFIG_DIR")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(std::process::Stdio::null())
            .spawn()
            .expect("start corepost run"),
    );
    let ready = next(&socket, 30).expect("a notification");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(
        ready.contains(&format!("STATUS=listening on 127.0.0.1:{port}")),
        "{ready}"
    );
    // Ready means listening: the port answers at once.
    // (Raw::connect asserts the 220 greeting.)
    drop(Raw::connect(port));

    let reload = run(&["reload", "-c", &config_dir]);
    assert!(reload.status.success(), "{}", stderr(&reload));
    let reloading = next(&socket, 10).expect("RELOADING");
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    let usec: u64 = reloading
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse().ok())
        .expect("MONOTONIC_USEC");
    assert!(usec > 0);
    let again = next(&socket, 10).expect("READY after reload");
    assert!(again.lines().any(|l| l == "READY=1"), "{again}");
    assert!(again.contains("STATUS=reloaded"), "{again}");

    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let stopping = next(&socket, 10).expect("STOPPING");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert!(child.0.wait().expect("wait").success());
}

/// `maillog_file` in the configuration directory; its path.
fn log_in_dir(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let log = dir.path().join("maillog");
    let main = std::fs::read_to_string(dir.path().join("main.cf")).unwrap();
    std::fs::write(
        dir.path().join("main.cf"),
        format!("{main}maillog_file = {}\n", log.display()),
    )
    .unwrap();
    log
}

#[test]
fn a_failed_start_reports_its_reason_over_the_notify_socket() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    let (dir, _) = config("");
    std::fs::write(
        dir.path().join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    )
    .unwrap();
    let socket_path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).expect("bind notify socket");
    let out = Command::new(corepost_bin())
        .args(["run", "-c", &dir.path().display().to_string()])
        .env_remove("COREPOST_CONFIG_DIR")
        .env("NOTIFY_SOCKET", &socket_path)
        .output()
        .expect("run");
    assert!(!out.status.success());
    let status = next(&socket, 5).expect("a STATUS");
    assert!(status.starts_with("STATUS=fatal: "), "{status}");
    assert!(status.contains(&port.to_string()), "{status}");
}

#[test]
fn start_returns_once_listening_and_stop_ends_it() {
    let (dir, port) = config("");
    let log = dir.path().join("maillog");
    let config_dir = dir.path().display().to_string();
    let set = run(&[
        "config",
        "-c",
        &config_dir,
        "-e",
        &format!("maillog_file = {}", log.display()),
    ]);
    assert!(set.status.success(), "{}", stderr(&set));
    let out = run(&["start", "-c", &config_dir]);
    let _stop = StopOnDrop(config_dir.clone());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("corepost: starting the mail system"));
    // `start` has returned: the daemon already listens.
    // (Raw::connect asserts the 220 greeting.)
    drop(Raw::connect(port));
    let status = run(&["status", "-c", &config_dir]);
    assert!(status.status.success(), "{}", stdout(&status));
    let pid = stdout(&status)
        .split("PID: ")
        .nth(1)
        .and_then(|p| p.lines().next())
        .and_then(|p| p.trim().parse::<i32>().ok())
        .expect("a PID");
    // Detached: its own session, not ours.
    // SAFETY: getsid has no memory-safety preconditions.
    let (theirs, ours) = unsafe { (libc::getsid(pid), libc::getsid(0)) };
    assert_ne!(theirs, ours);
    let twice = run(&["start", "-c", &config_dir]);
    assert_eq!(twice.status.code(), Some(1));
    assert!(
        stderr(&twice).contains("the mail system is already running"),
        "{}",
        stderr(&twice)
    );
    let stop = run(&["stop", "-c", &config_dir]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("daemon started"), "{text}");
    assert!(text.contains("terminating on signal"), "{text}");
}

#[test]
fn start_says_why_the_daemon_did_not_start() {
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = holder.local_addr().unwrap().port();
    let (dir, _) = config("");
    let log = log_in_dir(&dir);
    let config_dir = dir.path().display().to_string();
    std::fs::write(
        dir.path().join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\n"),
    )
    .unwrap();
    let out = run(&["start", "-c", &config_dir]);
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.contains("corepost: fatal: the mail system did not start: fatal: "),
        "{text}"
    );
    assert!(text.contains(&format!("port {port}")), "{text}");
    assert!(
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("fatal: "),
        "the reason is in the log too"
    );
}

#[test]
fn start_without_a_log_file_logs_through_syslog_as_postfix_start() {
    let (dir, port) = config("");
    let config_dir = dir.path().display().to_string();
    // The test's own syslog socket (log/output.rs: COREPOST_SYSLOG_SOCKET).
    let socket_path = dir.path().join("syslog.sock");
    let syslog = UnixDatagram::bind(&socket_path).expect("bind syslog socket");
    syslog
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let out = Command::new(corepost_bin())
        .args(["start", "-c", &config_dir])
        .env_remove("COREPOST_CONFIG_DIR")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env("COREPOST_SYSLOG_SOCKET", &socket_path)
        .output()
        .expect("run corepost");
    let _stop = StopOnDrop(config_dir.clone());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("log: the system log"),
        "{}",
        stderr(&out)
    );
    drop(Raw::connect(port));
    let mut lines = String::new();
    let mut buf = vec![0u8; 8192];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lines.contains("daemon started") && std::time::Instant::now() < deadline {
        if let Ok(n) = syslog.recv(&mut buf) {
            lines.push_str(&String::from_utf8_lossy(&buf[..n]));
            lines.push('\n');
        }
    }
    assert!(lines.contains("daemon started"), "syslog got: {lines}");
    let stop = run(&["stop", "-c", &config_dir]);
    assert!(stop.status.success(), "{}", stderr(&stop));
}

#[test]
fn start_refuses_a_terminal_only_log() {
    let (dir, _) = config("corepost_log_destination = stderr");
    let out = run(&["start", "-c", &dir.path().display().to_string()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs a log file"),
        "{}",
        stderr(&out)
    );
}
