//! smtpd's command-line parser: any line from the network gives a command
//! or a syntax error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|line: &[u8]| {
    let _ = corepost::smtpd::command::parse_command(line, &[]);
});
