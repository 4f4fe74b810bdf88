//! The Functions layout matches the binary: every `functions/<Name>/function.json` is a
//! route the handler serves, its trigger binding is the one the handler reads, and
//! host.json starts the binary as a custom handler.

use std::path::Path;

use serde_json::Value;

use crate::harness::handler::HandlerProc;
use crate::harness::TestCtx;

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())))
        .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()))
}

#[tokio::test]
async fn function_json_files_match_routes_and_bindings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let host = read_json(&root.join("host.json"));
    assert_eq!(host["version"], "2.0");
    assert_eq!(
        host["customHandler"]["description"]["defaultExecutablePath"],
        "s3-blob-sync"
    );
    assert_eq!(host["customHandler"]["description"]["arguments"][0], "serve");
    let max_dequeue = host["extensions"]["queues"]["maxDequeueCount"].as_u64().unwrap();
    assert_eq!(max_dequeue, 5, "keep equal to SYNC_MAX_DEQUEUE_COUNT's default");

    let ctx = TestCtx::new("layout").await;
    let h = HandlerProc::start(&ctx.env).await;
    let mut seen = 0;
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let dir = entry.unwrap().path();
        let name = dir.file_name().unwrap().to_str().unwrap().to_string();
        let f = read_json(&dir.join("function.json"));
        let trigger = f["bindings"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["direction"] == "in")
            .unwrap();
        if trigger["type"] == "queueTrigger" {
            assert_eq!(trigger["name"], s3_blob_sync::functions::copy_object::BINDING, "{name}");
        }
        // The route exists: an empty payload (or, for DrainSqs, the missing queue URL) is
        // refused with a clear error, not a 404.
        let (status, body) = h.invoke(&name, &serde_json::json!({"Data": {}, "Metadata": {}})).await;
        assert_ne!(status, 404, "{name} is not served");
        assert!(status >= 400, "{name}: {body}");
        let error = body["ReturnValue"]["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{name}: {body}");
        seen += 1;
    }
    assert!(seen >= 1);
    let (status, _) = h.invoke("NoSuchFunction", &serde_json::json!({})).await;
    assert_eq!(status, 404);
    ctx.cleanup().await;
}
