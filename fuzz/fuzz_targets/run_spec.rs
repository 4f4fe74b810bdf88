//! Run specs as StartRun receives them: refused naming the body, or re-parsed equal.
#![no_main]
use std::sync::OnceLock;

use s3_blob_sync::config::Config;
use s3_blob_sync::messages::run_spec::RunSpec;

fn cfg() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(Config::for_emulators)
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match RunSpec::parse(&text, "request body", cfg()) {
        Ok((spec, _)) => {
            let again = serde_json::to_string(&spec).unwrap();
            let (back, _) = RunSpec::parse(&again, "request body", cfg()).expect("re-parse");
            assert_eq!(back, spec);
        }
        Err(e) => assert!(e.message().contains("request body")),
    }
});
