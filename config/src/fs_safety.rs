//! Ownership and mode checks on the directories corepost trusts, as
//! Postfix's `postfix check` makes them (postfix-script's `check-warn`).
//!
//! A queue directory that other users can write lets any local user
//! rename or remove the per-core logs, i.e. lose or forge queued mail:
//! that is an error (corepost refuses to start on it), where Postfix only
//! warns. A group-writable one gets Postfix's warning.

use crate::check::Report;
use crate::config::Config;
use std::os::unix::fs::PermissionsExt;

/// Add the findings for `queue_directory` to `report`. A directory that
/// does not exist yet (a first start creates it) is not a finding.
pub fn check_queue_directory(config: &Config, report: &mut Report) {
    let Ok(dir) = config.get("queue_directory") else {
        return; // reported by the value checks
    };
    let Ok(meta) = std::fs::metadata(&dir) else {
        return;
    };
    let mode = meta.permissions().mode();
    if mode & 0o002 != 0 {
        report.errors.push(format!(
            "queue_directory {dir} is writable by other users (mode {:o}): any local user \
             could remove or replace queued mail; chmod o-w {dir}",
            mode & 0o7777
        ));
    } else if mode & 0o020 != 0 {
        report
            .warnings
            .push(format!("group or other writable: {dir}/."));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report_for(mode: u32) -> Report {
        let dir = tempfile::tempdir().unwrap();
        let queue = dir.path().join("queue");
        std::fs::create_dir(&queue).unwrap();
        std::fs::set_permissions(&queue, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::write(
            dir.path().join("main.cf"),
            format!("queue_directory = {}\n", queue.display()),
        )
        .unwrap();
        let config = Config::load(dir.path()).unwrap();
        let mut report = Report::default();
        check_queue_directory(&config, &mut report);
        report
    }

    #[test]
    fn other_writable_is_an_error_group_writable_a_warning() {
        let r = report_for(0o777);
        assert_eq!(r.errors.len(), 1, "{r:?}");
        assert!(r.errors[0].contains("writable by other users"), "{r:?}");
        let r = report_for(0o770);
        assert!(r.errors.is_empty(), "{r:?}");
        assert!(
            r.warnings[0].starts_with("group or other writable: "),
            "{r:?}"
        );
        let r = report_for(0o700);
        assert!(r.errors.is_empty() && r.warnings.is_empty(), "{r:?}");
    }
}
