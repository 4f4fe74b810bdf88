//! The real binary as a custom handler, driven the way the Functions host drives it, plus
//! the CLI: start-up validation, bad input, help text, copy and dry run.

use serde_json::{json, Value};

use crate::harness::handler::{queue_payload, run_binary, run_binary_async, HandlerProc};
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;

#[tokio::test]
async fn copy_object_through_the_invoke_protocol() {
    let ctx = TestCtx::new("invoke").await;
    ctx.put("in/hello.txt", "hello").await;
    let h = HandlerProc::start(&ctx.env_with(&[("SYNC_SOURCE_PREFIX", "in/"), ("SYNC_TARGET_PREFIX", "out/")])).await;
    let msg = json!({"bucket": ctx.bucket, "key": "in/hello.txt", "runId": "r1"});
    let (status, body) = h.invoke("CopyObject", &queue_payload(&msg, 1)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["ReturnValue"]["outcome"], "copied");
    assert_eq!(body["ReturnValue"]["blob"], "out/hello.txt");
    assert!(body["Logs"][0].as_str().unwrap().contains("copied"));
    assert_eq!(&ctx.blob().read("out/hello.txt").await.unwrap()[..], b"hello");
    // The same message again (at-least-once delivery): no second copy.
    let (status, body) = h.invoke("CopyObject", &queue_payload(&msg, 1)).await;
    assert_eq!(
        (status, body["ReturnValue"]["outcome"].as_str()),
        (200, Some("no_transfer_needed"))
    );
    // A single-encoded message (as the docs show it) works too.
    let single = json!({"Data": {"message": msg.to_string()}, "Metadata": {"DequeueCount": 1}});
    let (status, _) = h.invoke("CopyObject", &single).await;
    assert_eq!(status, 200);
    // Logs are JSON lines with the stable fields and the invocation id.
    let logs = h.logs();
    let done: Vec<Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "object done")
        .collect();
    assert!(!done.is_empty(), "{logs}");
    for field in ["bucket", "key", "bytes", "outcome", "run_id", "duration_ms"] {
        assert!(done[0].get(field).is_some(), "missing {field} in {}", done[0]);
    }
    assert!(
        done[0]["span"]["invocation_id"].as_str().is_some_and(|s| s.len() == 36),
        "{}",
        done[0]
    );
    ctx.cleanup().await;
}

#[tokio::test]
async fn malformed_messages_get_clear_4xx_and_the_handler_survives() {
    let ctx = TestCtx::new("badmsg").await;
    let h = HandlerProc::start(&ctx.env).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"Data": {"message": "this is not json"}, "Metadata": {}}),
            "not JSON",
        ),
        (queue_payload(&json!({"key": "k"}), 1), "missing field `bucket`"),
        (queue_payload(&json!({"bucket": "b", "key": ""}), 1), "`key` is empty"),
        (
            queue_payload(&json!({"bucket": "b", "key": "k", "mode": "yes"}), 1),
            "`mode`",
        ),
        (json!({"Data": {}, "Metadata": {}}), "no Data.message"),
        (json!({"Data": {"message": 42}}), "no Data.message"),
    ];
    for (payload, needle) in cases {
        let (status, body) = h.invoke("CopyObject", &payload).await;
        assert_eq!(status, 400, "{payload} -> {body}");
        let err = body["ReturnValue"]["error"].as_str().unwrap_or_default();
        assert!(err.contains(needle), "{needle} not in {err}");
        assert_eq!(body["ReturnValue"]["kind"], "invalid");
    }
    let (status, body) = h.invoke_raw("CopyObject", b"{not an invoke payload".to_vec()).await;
    assert_eq!(status, 400);
    assert!(body["ReturnValue"]["error"]
        .as_str()
        .unwrap()
        .contains("invoke payload"));
    // Still alive and working.
    ctx.put("ok", "fine").await;
    let (status, _) = h
        .invoke(
            "CopyObject",
            &queue_payload(&json!({"bucket": ctx.bucket, "key": "ok"}), 1),
        )
        .await;
    assert_eq!(status, 200);
    assert!(!h.logs().contains("panicked"));
    ctx.cleanup().await;
}

#[tokio::test]
async fn failing_copy_answers_5xx_and_the_last_attempt_is_recorded() {
    let ctx = TestCtx::new("lasttry").await;
    ctx.put("obj", "x").await;
    let double = Proxy::blob_double().await;
    double
        .faults()
        .copy_source_unreachable
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let cs = ctx.connection_string_via(&double.url);
    let h = HandlerProc::start(&ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", &cs),
        ("SYNC_COPY_PATH", "server-side"),
    ]))
    .await;
    let msg = json!({"bucket": ctx.bucket, "key": "obj"});
    let (status, body) = h.invoke("CopyObject", &queue_payload(&msg, 1)).await;
    assert_eq!(status, 500, "{body}");
    assert!(body["ReturnValue"]["error"]
        .as_str()
        .unwrap()
        .contains("will be retried"));
    let (status, body) = h.invoke("CopyObject", &queue_payload(&msg, 5)).await;
    assert_eq!(status, 500);
    let err = body["ReturnValue"]["error"].as_str().unwrap();
    assert!(
        err.contains("final attempt; recorded as failed") && err.contains("CannotVerifyCopySource"),
        "{err}"
    );
    let rows = s3_blob_sync::checkpoint::CheckpointStore::new(ctx.table())
        .list_bucket(&ctx.bucket)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].outcome.as_str(), "failed");
    assert_eq!(rows[0].failed_attempts, 2);
    assert!(h.logs().contains("\"outcome\":\"poisoned\""));
    ctx.cleanup().await;
}

#[test]
fn bad_config_fails_at_start_naming_the_variable() {
    let env = crate::harness::stack_env().clone();
    let cases: Vec<(&str, &str, &str)> = vec![
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            "",
            "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT must be set",
        ),
        ("SYNC_COPY_PATH", "sideways", "SYNC_COPY_PATH"),
        ("SYNC_BLOCK_SIZE_MIB", "9000", "SYNC_BLOCK_SIZE_MIB"),
        ("AWS_ENDPOINT_URL", "::nope::", "AWS_ENDPOINT_URL"),
        ("SYNC_TARGET_CONTAINER", "No_Such", "SYNC_TARGET_CONTAINER"),
        ("FUNCTIONS_CUSTOMHANDLER_PORT", "http", "FUNCTIONS_CUSTOMHANDLER_PORT"),
    ];
    for (var, val, needle) in cases {
        let mut e = env.clone();
        e.insert("FUNCTIONS_CUSTOMHANDLER_PORT".into(), "0".into());
        e.insert(var.into(), val.into());
        let (code, out) = run_binary(&["serve"], &e);
        assert_eq!(code, 2, "{var}={val}: {out}");
        assert!(out.contains(needle), "{var}={val}: {out}");
        assert!(!out.contains("panicked"), "{out}");
    }
    let mut e = env.clone();
    e.remove("FUNCTIONS_CUSTOMHANDLER_PORT");
    let (code, out) = run_binary(&["serve"], &e);
    assert_eq!(code, 2);
    assert!(out.contains("FUNCTIONS_CUSTOMHANDLER_PORT is not set"), "{out}");
}

#[test]
fn every_command_has_help() {
    for args in [
        &["--help"][..],
        &["copy", "--help"],
        &["serve", "--help"],
        &["status", "--help"],
        &["sync", "--help"],
        &["verify", "--help"],
        &["watch", "--help"],
        &["setup-events", "--help"],
        &["redrive", "--help"],
        &["cancel", "--help"],
    ] {
        let (code, out) = run_binary(args, &Default::default());
        assert_eq!(code, 0, "{args:?}");
        assert!(out.contains("Usage:"), "{out}");
        if args.len() == 2 {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with("Example:") && l.contains("s3-blob-sync")),
                "{args:?} has no example line: {out}"
            );
        }
    }
    let (_, out) = run_binary(&["copy", "--help"], &Default::default());
    assert!(out.contains("--dry-run") && out.contains("s3://bucket/prefix"));
    let (_, out) = run_binary(&["sync", "--help"], &Default::default());
    assert!(out.contains("--max-deletes"), "{out}");
    let (_, out) = run_binary(&["verify", "--help"], &Default::default());
    assert!(out.contains("--repair") && out.contains("--json"), "{out}");
    let (_, out) = run_binary(&["serve", "--help"], &Default::default());
    assert!(out.contains("--work-queues"), "{out}");
    for cmd in ["redrive", "cancel"] {
        let (_, out) = run_binary(&[cmd, "--help"], &Default::default());
        assert!(
            out.contains("Example: s3-blob-sync") && out.contains("--dry-run"),
            "{out}"
        );
    }
}

#[tokio::test]
async fn cli_copy_dry_run_then_real_run_then_rerun() {
    let ctx = TestCtx::new("cli").await;
    for i in 0..25 {
        ctx.put(&format!("p/{i:02}.txt"), format!("n{i}")).await;
    }
    ctx.put("p/folder/", "").await;
    ctx.put("other/x", "not under the prefix").await;
    let src = format!("s3://{}/p/", ctx.bucket);
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/copy/", ctx.container);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--dry-run"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("nothing was changed") && out.contains("wouldTransfer"),
        "{out}"
    );
    assert!(ctx.blob().list("").await.unwrap().is_empty(), "dry run wrote blobs");

    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json", "--concurrency", "4"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let summary: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(summary["state"], "Succeeded", "{summary}");
    assert_eq!(summary["counters"]["scanned"], 26);
    assert_eq!(summary["counters"]["transferred"], 25);
    assert_eq!(summary["counters"]["excluded"], 1);
    let names = ctx.blob().list("copy/").await.unwrap();
    assert_eq!(names.len(), 25);

    let (code, out) = run_binary_async(&["copy", &src, &dst, "--json"], &ctx.env).await;
    assert_eq!(code, 0);
    let summary: Value = serde_json::from_str(out.lines().find(|l| l.starts_with('{')).unwrap()).unwrap();
    assert_eq!(summary["counters"]["noTransferNeeded"], 25, "{summary}");
    assert_eq!(summary["counters"]["transferred"], 0);

    // The CLI's runs are runs like the Function App's: `status RUN_ID` reads them.
    let run_id = summary["runId"].as_str().unwrap();
    let (code, out) = run_binary_async(&["status", run_id], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains(&format!("run {run_id}: Succeeded")) && out.contains("noTransferNeeded"),
        "{out}"
    );
    let (code, out) = run_binary_async(&["status", "--runs"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("cli")).count(), 3, "{out}");

    let (code, out) = run_binary_async(&["status", "--bucket", &ctx.bucket], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    // The folder marker is counted excluded by the lister, without a checkpoint row.
    assert!(out.contains("25 checkpoint rows"), "{out}");

    let (code, out) = run_binary_async(&["copy", "s3://Bad_Bucket/x", &dst], &ctx.env).await;
    assert_eq!(code, 2);
    assert!(out.contains("not a valid S3 bucket name"), "{out}");
    ctx.cleanup().await;
}
