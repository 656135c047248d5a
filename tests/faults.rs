//! Faults an operator meets outside the happy path (issue 17): a start
//! that cannot work must say why, and damage must be visible.

mod support;

use std::process::Command;
use support::*;

fn write_config(dir: &std::path::Path, port: u16) {
    std::fs::write(
        dir.join("main.cf"),
        format!(
            "myhostname = mx.test.example\nqueue_directory = {0}/spool\nmail_owner = root\n\
             corepost_cores = 2\nalias_maps =\nalias_database =\nmaillog_file = {0}/maillog\nmaillog_file_prefixes = /\n",
            dir.display()
        ),
    )
    .unwrap();
    std::fs::write(
        dir.join("master.cf"),
        format!("127.0.0.1:{port} inet n - n - - smtpd\nsmtp unix - - n - - smtp\n"),
    )
    .unwrap();
}

/// With a locked-memory limit too small for the io_uring rings (common in
/// containers), `run` names the cause and the fix instead of only "a core
/// did not start".
#[test]
fn a_low_memlock_limit_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path(), free_port());
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -l 64 && exec timeout 20 {} run -c {}",
            corepost_bin().display(),
            dir.path().display()
        ))
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("RLIMIT_MEMLOCK") && err.contains("ulimit -l"),
        "stderr: {err}"
    );
}
