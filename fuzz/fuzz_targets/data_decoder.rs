//! The DATA decoder (dot-unstuffing, end of data, bare CR/LF handling,
//! size limit), fed in arbitrary chunks: it never panics, never claims to
//! have consumed more than it was given, and never keeps more than the
//! limit.
#![no_main]
use corepost::smtpd::data::{BareNewline, DataParser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let mode = ["no", "normal", "yes", "reject", "strip"][usize::from(mode) % 5];
    let Ok(mode) = BareNewline::parse(mode) else {
        return;
    };
    let limit = 4096;
    let mut parser = DataParser::new(mode, limit, Vec::new());
    // Chunk boundaries from the data itself, so splits land everywhere.
    let mut at = 0;
    while at < rest.len() {
        let len = 1 + usize::from(rest[at]) % 64;
        let chunk = &rest[at..rest.len().min(at + len)];
        let (used, end) = parser.feed(chunk);
        assert!(used <= chunk.len());
        at += used.max(1);
        if end.is_some() {
            break;
        }
    }
    assert!(parser.into_body().len() as u64 <= limit + 2);
});
