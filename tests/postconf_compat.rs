//! `corepost config -x` against Postfix's `postconf -x`.
//!
//! The snapshot in tests/fixtures/postconf-3.6/snapshot.txt was taken from
//! the Debian postfix package (refresh.sh says how) with a main.cf that sets
//! only `compatibility_level = 3.6`, `myhostname` and `mydomain`. For every
//! parameter corepost shares with Postfix, the expanded value must be the
//! same, except where the registry declares a deliberate difference with its
//! reason (`ParamDef::differs`); those are listed by this test.

mod support;

use corepost_config::Config;
use std::collections::BTreeMap;
use support::*;

fn normalise(value: &str) -> String {
    value.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn expanded_values_match_postconf() {
    let dir = fixtures().join("postconf-3.6");
    let dir_text = dir.display().to_string();
    let snapshot: BTreeMap<String, String> =
        parse_listing(&std::fs::read_to_string(dir.join("snapshot.txt")).expect("read snapshot"))
            .into_iter()
            .map(|(n, v)| (n, normalise(&v.replace("@CONFIG_DIR@", &dir_text))))
            .collect();
    assert!(snapshot.len() > 250, "snapshot looks truncated");

    let output = corepost(&["config", "-c", &dir_text, "-x"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let ours: BTreeMap<String, String> = parse_listing(&stdout(&output))
        .into_iter()
        .map(|(n, v)| (n, normalise(&v)))
        .collect();

    // The registry, with this master.cf's per-transport parameters, says
    // which parameters are shared and which differ on purpose.
    let config = Config::load(&dir).expect("load fixture config");
    let mut mismatches = Vec::new();
    let mut missing = Vec::new();
    let mut deliberate = Vec::new();
    let mut compared = 0;
    for param in config.registry.iter() {
        if param.corepost_only {
            assert!(
                !snapshot.contains_key(&param.name),
                "{} is marked corepost-only but Postfix has it",
                param.name
            );
            continue;
        }
        let Some(theirs) = snapshot.get(&param.name) else {
            missing.push(param.name.clone());
            continue;
        };
        let ours = ours
            .get(&param.name)
            .unwrap_or_else(|| panic!("corepost config -x does not list {}", param.name));
        if let Some(reason) = param.differs {
            deliberate.push(format!(
                "{}: postconf \"{theirs}\", corepost \"{ours}\" — {reason}",
                param.name
            ));
            continue;
        }
        compared += 1;
        if ours != theirs {
            mismatches.push(format!(
                "{}: postconf \"{theirs}\", corepost \"{ours}\"",
                param.name
            ));
        }
    }
    println!("compared {compared} parameters; deliberate differences:");
    for d in &deliberate {
        println!("  {d}");
    }
    assert!(
        missing.is_empty(),
        "parameters not in the Postfix snapshot (mark them corepost-only or refresh the snapshot): {missing:?}"
    );
    assert!(
        mismatches.is_empty(),
        "values differ from postconf -x:\n{}",
        mismatches.join("\n")
    );
    assert!(compared > 200, "only {compared} parameters compared");
    // The differences we document must include the ones an operator will
    // notice first.
    for name in [
        "queue_directory",
        "mail_owner",
        "inet_interfaces",
        "mail_name",
    ] {
        assert!(
            deliberate
                .iter()
                .any(|d| d.starts_with(&format!("{name}:"))),
            "{name} should be a documented difference"
        );
    }
}
