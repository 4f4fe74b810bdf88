//! Connection strings: no panic, and a refusal never echoes an AccountKey.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(e) = s3_blob_sync::config::azure::StorageAccount::from_connection_string(&text) {
        for part in text.split(';') {
            if let Some(key) = part.strip_prefix("AccountKey=") {
                if key.len() >= 8 {
                    assert!(!e.message().contains(key));
                }
            }
        }
    }
});
