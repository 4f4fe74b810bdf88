//! The Functions host's invoke payload, and the queue message and HTTP request inside it.
#![no_main]
use s3_blob_sync::functions::protocol::{dequeue_count, queue_message_text, HttpTriggerRequest, InvokeRequest};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(req) = serde_json::from_slice::<InvokeRequest>(data) {
        for v in req.data.values() {
            let _ = queue_message_text(v);
            let _ = serde_json::from_value::<HttpTriggerRequest>(v.clone());
        }
        let _ = dequeue_count(&req.metadata);
    }
});
