//! Recovery of a segment whose header is valid and whose records are
//! arbitrary bytes (with valid frames sometimes: the fuzzer learns the
//! CRC-checked framing only through the seeds): opening the spool never
//! panics, and what it recovers can be read back.
#![no_main]
use corepost_spool::frame::SegmentHeader;
use corepost_spool::{CoreSpool, FlushPolicy, SpoolOptions, SyncMethod};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let dir = tempfile::tempdir().expect("tempdir");
    let core = dir.path().join("core-0");
    std::fs::create_dir(&core).expect("mkdir");
    let size = 65536usize;
    let header = SegmentHeader {
        version: corepost_spool::frame::FORMAT_VERSION,
        core: 0,
        seq: 1,
        size: size as u64,
        created: 1,
        salt: 0,
    };
    let mut file = header.encode().to_vec();
    file.extend_from_slice(&body[..body.len().min(size - file.len())]);
    file.resize(size, 0);
    std::fs::write(core.join("seg-0000000000000001.log"), &file).expect("write");
    let options = SpoolOptions {
        segment_size: size,
        policy: FlushPolicy::Never,
        sync: SyncMethod::Msync,
        compact_below: 0.25,
    };
    if let Ok((spool, _report)) = CoreSpool::open(dir.path(), 0, 1, options) {
        let ids: Vec<_> = spool.index().iter().map(|(id, _)| *id).collect();
        for id in ids {
            let _ = spool.read(&id);
        }
        let _ = spool.close();
    }
});
