//! Key to blob name: a valid Azure name that ends with the key's rest, or a reason.
#![no_main]
use s3_blob_sync::engine::naming::{blob_name, validate_blob_name};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\u{0}');
    let (key, sp, tp) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match blob_name(key, sp, tp) {
        Ok(name) => {
            assert!(validate_blob_name(&name).is_ok());
            assert!(name.starts_with(tp) && name.ends_with(&key[sp.len()..]));
        }
        Err(issue) => assert!(!issue.reason().is_empty()),
    }
});
