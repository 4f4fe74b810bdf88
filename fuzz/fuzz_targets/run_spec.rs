//! Run specs as StartRun receives them: refused naming the body, or re-parsed equal.
#![no_main]
use std::collections::HashMap;
use std::sync::OnceLock;

use s3_blob_sync::config::Config;
use s3_blob_sync::run::spec::RunSpec;

fn cfg() -> &'static Config {
    static CFG: OnceLock<Config> = OnceLock::new();
    CFG.get_or_init(|| {
        let env: HashMap<String, String> = [
            ("AZURE_STORAGE_CONNECTION_STRING", "UseDevelopmentStorage=true"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        Config::from(&env).expect("config")
    })
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
