//! The header/MIME/body walker behind header_checks, mime_header_checks,
//! nested_header_checks and body_checks: any message content is walked
//! without a panic.
#![no_main]
use corepost::smtpd::checks::ContentChecks;
use libfuzzer_sys::fuzz_target;

fn checks() -> ContentChecks {
    let dir = std::env::temp_dir().join(format!("corepost-fuzz-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let rules = dir.join("checks");
    std::fs::write(
        &rules,
        "/^subject:.*(spam)/ REJECT $1\n/^content-type:.*x-evil/ DISCARD\n/body.*line/ WARN\n",
    )
    .expect("write rules");
    let table = format!("regexp:{}", rules.display());
    ContentChecks::open(&|name| {
        Ok(match name {
            "header_checks" | "mime_header_checks" | "nested_header_checks" | "body_checks" => {
                table.clone()
            }
            "body_checks_size_limit" => "51200".to_string(),
            _ => String::new(),
        })
    })
    .expect("checks")
}

fuzz_target!(|content: &[u8]| {
    thread_local! {
        static CHECKS: ContentChecks = checks();
    }
    CHECKS.with(|c| {
        let _ = c.inspect(content);
    });
});
