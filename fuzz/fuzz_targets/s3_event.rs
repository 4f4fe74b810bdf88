//! SQS bodies: S3 event notifications, plain or in an SNS envelope. A refusal must say why.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Err(why) = s3_blob_sync::aws::events::parse(&text) {
        assert!(!why.trim().is_empty());
    }
});
