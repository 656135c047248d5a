//! Parameters a reload cannot apply: they shape what the daemon built at
//! start (its cores and their spools, the queue directory, the account it
//! runs as, the control socket). Postfix documents the same for
//! `inet_interfaces` and friends ("you need to stop and start Postfix");
//! corepost says so in the reload's log line instead of silently running
//! with the old value.

use corepost_config::Config;

/// Read once at start and nowhere else.
const RESTART_ONLY: [&str; 7] = [
    "queue_directory",
    "corepost_cores",
    "corepost_segment_size",
    "corepost_fsync_policy",
    "corepost_commit_delay",
    "mail_owner",
    "corepost_control_socket",
];

/// Their values when the daemon started.
pub(super) struct StartValues(Vec<(&'static str, String)>);

impl StartValues {
    pub(super) fn of(config: &Config) -> StartValues {
        StartValues(
            RESTART_ONLY
                .iter()
                .map(|name| (*name, value(config, name)))
                .collect(),
        )
    }

    /// A warning for each parameter the reloaded configuration changes.
    pub(super) fn changed(&self, config: &Config) -> Vec<String> {
        self.0
            .iter()
            .filter_map(|(name, started)| {
                let now = value(config, name);
                (now != *started).then(|| {
                    format!(
                        "{name} changed from \"{started}\" to \"{now}\": the running daemon keeps \"{started}\" until corepost is restarted"
                    )
                })
            })
            .collect()
    }
}

/// The expanded value; an unreadable one compares as its error text, which
/// `corepost check` reports on its own.
fn value(config: &Config, name: &str) -> String {
    config
        .get(name)
        .unwrap_or_else(|e| e.to_string())
        .trim()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(main: &str) -> Config {
        Config::from_parts(std::path::Path::new("/etc/corepost"), Some(main), Some("")).unwrap()
    }

    #[test]
    fn a_changed_restart_only_parameter_is_named_with_both_values() {
        let started = StartValues::of(&config("corepost_cores = 2\n"));
        assert!(started.changed(&config("corepost_cores = 2\n")).is_empty());
        let w = started.changed(&config("corepost_cores = 4\nmyhostname = other.example\n"));
        assert_eq!(
            w,
            vec![
                "corepost_cores changed from \"2\" to \"4\": the running daemon keeps \"2\" until corepost is restarted"
            ]
        );
    }
}
