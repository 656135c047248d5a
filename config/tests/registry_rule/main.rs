//! The registry rule: every parameter in `params.rs` is read by the code
//! that implements it, by its literal name in a string (`"lmtp_lhlo_timeout"`,
//! not only `format!("{proto}_lhlo_timeout")`), somewhere in the Rust
//! sources of config/, engine/ or spool/ other than params.rs — the same
//! heuristic as the `unread-params` tool.
//!
//! A name that is not read must be in [`allowlist::UNREAD`] with the reason;
//! an allowlisted name that is read now must leave the list, so the list
//! only shrinks.

mod allowlist;

use corepost_config::params::PARAMS;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && path.file_name().is_some_and(|n| n != "params.rs")
        {
            out.push(path);
        }
    }
}

/// The text of every source file the rule counts.
fn sources() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["engine/src", "config/src", "spool/src"] {
        rust_files(&root.join(dir), &mut files);
    }
    assert!(
        files.len() > 20,
        "sources not found under {}",
        root.display()
    );
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_registry_parameter_is_read_or_allowlisted() {
    let text = sources();
    let allowed: BTreeSet<&str> = allowlist::UNREAD.iter().map(|(n, _)| *n).collect();
    let mut unread = Vec::new();
    let mut read_now = Vec::new();
    for def in PARAMS {
        let read = text.contains(&format!("\"{}\"", def.name));
        match (read, allowed.contains(def.name)) {
            (false, false) => unread.push(def.name),
            (true, true) => read_now.push(def.name),
            _ => {}
        }
    }
    assert!(
        unread.is_empty(),
        "parameters in params.rs that no code reads by name (implement them, or move them to \
         config/src/unsupported.rs, or justify them in config/tests/registry_rule/allowlist.rs): {unread:?}"
    );
    assert!(
        read_now.is_empty(),
        "allowlisted parameters that are read now: remove them from \
         config/tests/registry_rule/allowlist.rs: {read_now:?}"
    );
}

#[test]
fn the_allowlist_names_registry_parameters_once_with_a_reason() {
    let mut seen = BTreeSet::new();
    for (name, why) in allowlist::UNREAD {
        assert!(
            PARAMS.iter().any(|p| p.name == *name),
            "{name} is allowlisted but not in params.rs"
        );
        assert!(seen.insert(*name), "{name} allowlisted twice");
        assert!(!why.trim().is_empty(), "{name} has no reason");
    }
}
