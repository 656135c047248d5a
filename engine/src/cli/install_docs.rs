//! The manual pages (clap_mangen) and shell completions (clap_complete)
//! `corepost install` writes, generated from the command line definition
//! so they always match the binary. Generated files are rewritten on
//! every install.

use clap_complete::Shell;
use std::path::Path;

/// `corepost.8` and one `corepost-<command>.8` per command in
/// `manpage_dir/man8`.
pub fn man_pages(manpage_dir: &Path) -> Result<(), String> {
    let dir = manpage_dir.join("man8");
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let command = super::command();
    write_page(&dir, "corepost", command.clone())?;
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        // clap names are &'static str; a handful, once per install.
        let name: &'static str = format!("corepost-{}", sub.get_name()).leak();
        let synopsis = format!("corepost {}", sub.get_name());
        write_page(&dir, name, sub.clone().name(name).bin_name(synopsis))?;
    }
    println!(
        "corepost: install: wrote the manual pages in {}",
        dir.display()
    );
    Ok(())
}

fn write_page(dir: &Path, name: &str, command: clap::Command) -> Result<(), String> {
    let mut page = Vec::new();
    clap_mangen::Man::new(command)
        .section("8")
        .render(&mut page)
        .map_err(|e| format!("manual page {name}: {e}"))?;
    let path = dir.join(format!("{name}.8"));
    std::fs::write(&path, page).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Where each shell looks for completions of system commands (Debian's
/// locations, which bash-completion, zsh and fish read).
const COMPLETIONS: &[(Shell, &str)] = &[
    (
        Shell::Bash,
        "usr/share/bash-completion/completions/corepost",
    ),
    (Shell::Zsh, "usr/share/zsh/vendor-completions/_corepost"),
    (
        Shell::Fish,
        "usr/share/fish/vendor_completions.d/corepost.fish",
    ),
];

/// The bash, zsh and fish completions under `root`.
pub fn completions(root: &Path) -> Result<(), String> {
    for (shell, relative) in COMPLETIONS {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mut text = Vec::new();
        clap_complete::generate(*shell, &mut super::command(), "corepost", &mut text);
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("corepost: install: wrote {}", path.display());
    }
    Ok(())
}
