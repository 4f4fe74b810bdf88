//! copy-objects messages: refused with a reason, or re-serialised to an equal message.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match s3_blob_sync::messages::CopyMessage::parse(&text) {
        Ok(m) => {
            let again = serde_json::to_string(&m).unwrap();
            let back = s3_blob_sync::messages::CopyMessage::parse(&again).expect("re-parse");
            assert_eq!(serde_json::to_value(&back).unwrap(), serde_json::to_value(&m).unwrap());
        }
        Err(e) => assert!(e.message().starts_with("copy-objects message")),
    }
});
