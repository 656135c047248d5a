//! The `corepost` command: one binary, with subcommands for the daemon and
//! the administrative tools (see `cli/`).

use std::process::ExitCode;

/// mimalloc rather than glibc's malloc: memory allocated on one core is
/// often freed on another (jobs and outcomes travel between cores), which
/// makes glibc take another thread's arena lock (futex wake-ups in the
/// profiles); mimalloc frees such blocks without a lock, and its per-thread
/// heaps fit the thread-per-core design. Measured in BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    corepost::cli::main(std::env::args_os().collect())
}
