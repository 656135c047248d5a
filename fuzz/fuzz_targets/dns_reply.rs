//! The resolver's reply check: any datagram is accepted, refused or
//! reported as malformed, never a panic.
#![no_main]
use corepost::dns::transport::{Question, check_response};
use hickory_proto::rr::{Name, RecordType};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((kind, reply)) = data.split_first() else {
        return;
    };
    let types = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::MX,
        RecordType::TXT,
        RecordType::PTR,
        RecordType::TLSA,
    ];
    let rtype = types[usize::from(*kind & 0x7f) % types.len()];
    // The top bit asks with the DO bit, as DANE lookups do.
    let dnssec = *kind & 0x80 != 0;
    let name = Name::from_ascii("example.test.").expect("name");
    let id = u16::from_be_bytes([reply.first().copied().unwrap_or(0), reply.get(1).copied().unwrap_or(0)]);
    let _ = check_response(reply, id, &Question {
            name,
            rtype,
            dnssec,
        });
});
