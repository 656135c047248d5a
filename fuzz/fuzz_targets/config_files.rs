//! main.cf and master.cf parsing: any file content gives a configuration
//! or an error naming file and line, never a panic.
#![no_main]
use corepost_config::maincf::MainCf;
use corepost_config::mastercf::MasterCf;
use libfuzzer_sys::fuzz_target;
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(main) = MainCf::parse(text, Path::new("main.cf")) {
        for name in main.names() {
            let _ = corepost_config::expand::expand_named(name, &|n| main.get(n).map(str::to_string));
        }
    }
    let _ = MasterCf::parse(text, Path::new("master.cf"));
});
