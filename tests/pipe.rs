//! The pipe transport end to end: mail routed (transport_maps) to a
//! master.cf `pipe` service runs its `argv=` command as `user=`, with the
//! macros expanded and the flags applied; the command's exit status maps
//! per sysexits to delivered / deferred / bounced (with its output as the
//! reason), and a command that outlives its time limit is killed.

mod support;

use std::os::unix::fs::PermissionsExt;
use support::*;

fn log_line(d: &Daemon, needle: &str) -> String {
    wait_until(15, || {
        d.log()
            .lines()
            .find(|l| l.contains(needle))
            .map(str::to_string)
    })
    .unwrap_or_else(|| panic!("no log line with {needle:?}:\n{}", d.log()))
}

const SCRIPT: &str = r#"#!/bin/sh
# $1 = sender, $2 = recipient, $3 = user, $4 = queue id
out="@DIR@/out.$3"
case "$3" in
  ok)       { echo "args: $*"; id -u; cat; } > "$out"; exit 0 ;;
  tempfail) echo "try again later"; exit 75 ;;
  nouser)   echo "no such user here" >&2; exit 67 ;;
  crash)    exit 1 ;;
  slow)     sleep 30; exit 0 ;;
esac
exit 0
"#;

#[test]
fn exit_codes_flags_and_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let script = dir.path().join("filter.sh");
    std::fs::write(
        &script,
        SCRIPT.replace("@DIR@", &dir.path().display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let d = Daemon::start_with_master(
        "relay_domains = pipe.example\ntransport_maps = inline:{ pipe.example=pipeit: }\npipeit_destination_recipient_limit = 1\npipeit_time_limit = 2s\ndefault_transport = discard\nminimal_backoff_time = 100s\n",
        &format!(
            "pipeit unix - n n - 4 pipe flags=FRh user=nobody argv={} ${{sender}} ${{recipient}} ${{user}} ${{queue_id}}\n",
            script.display()
        ),
    );
    let id = submit(
        d.port,
        "s@example.org",
        &[
            "ok@pipe.example",
            "tempfail@pipe.example",
            "nouser@pipe.example",
            "crash@pipe.example",
            "slow@pipe.example",
        ],
        "Subject: piped\r\n\r\nbody line",
    );
    let sent = log_line(&d, "to=<ok@pipe.example>");
    assert!(sent.contains("relay=pipeit"), "{sent}");
    assert!(
        sent.contains("dsn=2.0.0, status=sent (delivered via pipeit service)"),
        "{sent}"
    );
    let out = std::fs::read_to_string(dir.path().join("out.ok")).unwrap();
    let mut lines = out.lines();
    assert_eq!(
        lines.next(),
        Some(format!("args: s@example.org ok@pipe.example ok {id}").as_str())
    );
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    let expected_uid = if euid == 0 {
        "65534".to_string()
    } else {
        euid.to_string()
    };
    assert_eq!(lines.next(), Some(expected_uid.as_str()), "runs as user=");
    assert!(
        lines.next().unwrap().starts_with("From s@example.org  "),
        "{out}"
    );
    assert_eq!(lines.next(), Some("Return-Path: <s@example.org>"));
    assert!(out.contains("Subject: piped\n\nbody line\n"), "{out}");
    assert!(!out.contains('\r'));

    let deferred = log_line(&d, "to=<tempfail@pipe.example>");
    assert!(
        deferred.contains("dsn=4.3.0, status=deferred (try again later)"),
        "{deferred}"
    );
    let bounced = log_line(&d, "to=<nouser@pipe.example>");
    assert!(
        bounced.contains("dsn=5.1.1, status=bounced (no such user here)"),
        "{bounced}"
    );
    let crashed = log_line(&d, "to=<crash@pipe.example>");
    assert!(
        crashed.contains("dsn=5.3.0, status=bounced (command died with status 1)"),
        "{crashed}"
    );
    let slow = log_line(&d, "to=<slow@pipe.example>");
    assert!(
        slow.contains("status=deferred (pipeit service: command time limit exceeded)"),
        "{slow}"
    );
    // A notice per failed delivery (one recipient per invocation here).
    let log = d.log();
    assert_eq!(
        log.matches(&format!("{id}: sender non-delivery notification"))
            .count(),
        2,
        "{log}"
    );
}

#[test]
fn misconfigured_pipe_refuses_to_start() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("main.cf"), "").unwrap();
    std::fs::write(
        d.path().join("master.cf"),
        "127.0.0.1:2599 inet n - n - - smtpd\nbad unix - n n - - pipe argv=/bin/true\n",
    )
    .unwrap();
    let mut child = std::process::Command::new(corepost_bin())
        .args(["run", "-c", &d.path().display().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_until(10, || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("corepost run started with a pipe service without user=");
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("bad: pipe: missing user= attribute"),
        "{}",
        stderr(&out)
    );
}
