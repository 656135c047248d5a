//! The spool's record decoders: damaged bytes give an error, never a panic
//! or an allocation driven by a forged length.
#![no_main]
use corepost_spool::codec::Decoder;
use corepost_spool::record::{Admin, Envelope, Outcome, Outcomes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = Envelope::decode(&mut Decoder::new(data));
    let _ = Outcome::decode(&mut Decoder::new(data));
    let _ = Outcomes::decode(&mut Decoder::new(data));
    let _ = Admin::decode(&mut Decoder::new(data));
});
