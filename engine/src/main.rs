//! The `corepost` command: one binary, with subcommands for the daemon and
//! the administrative tools (see `cli/`).

use std::process::ExitCode;

fn main() -> ExitCode {
    corepost::cli::main(std::env::args_os().collect())
}
