//! Helpers shared by the end-to-end tests: run the real `corepost` binary.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `corepost` binary cargo built for this test run.
pub fn corepost_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_corepost"))
}

/// The top-level tests/fixtures folder.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

/// Run `corepost args...` with a clean environment for configuration.
pub fn corepost(args: &[&str]) -> Output {
    Command::new(corepost_bin())
        .args(args)
        .env_remove("COREPOST_CONFIG_DIR")
        .output()
        .expect("start corepost")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Parse `name = value` lines into (name, value) pairs.
pub fn parse_listing(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| match l.split_once(" =") {
            Some((n, v)) => (n.to_string(), v.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}
