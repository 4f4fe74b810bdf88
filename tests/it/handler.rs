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
    // Every field the README promises, from the process's real JSON output.
    for field in s3_blob_sync::internal_events::STABLE_FIELDS {
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
    let rows = s3_blob_sync::state::checkpoint::CheckpointStore::new(ctx.table())
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

/// A service that cannot be reached is a fault, not a configuration error: the command exits
/// with its own code (3), after the retry policy's attempts, naming what it could not reach.
#[test]
fn an_unreachable_service_exits_with_the_fault_code_not_the_config_code() {
    let mut env = crate::harness::stack_env().clone();
    // A port nothing listens on: every connection to the Table service is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let table = format!("http://127.0.0.1:{closed}/devstoreaccount1");
    env.insert(
        "AZURE_STORAGE_CONNECTION_STRING".into(),
        crate::harness::TestCtx::connection_string(None, None, Some(&table)),
    );
    let (code, out) = run_binary(&["status", "--runs"], &env);
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("table runs"), "the error names the table: {out}");
    assert!(!out.contains("panicked"), "{out}");
    // The same command with a bad setting is still the configuration code.
    env.insert("SYNC_RUNS_TABLE".into(), "no_such-table".into());
    let (code, out) = run_binary(&["status", "--runs"], &env);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("SYNC_RUNS_TABLE"), "{out}");
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
    // Each row names its target, so a key copied to two containers reads as two rows.
    assert!(out.contains(&format!("/{}/", ctx.container)), "{out}");

    let (code, out) = run_binary_async(&["copy", "s3://Bad_Bucket/x", &dst], &ctx.env).await;
    assert_eq!(code, 2);
    assert!(out.contains("not a valid S3 bucket name"), "{out}");
    ctx.cleanup().await;
}

/// `serve` outside the Functions host: a body must be JSON (415), a request must be
/// addressed to a loopback name unless a key is set (403), and with SYNC_API_KEY every route
/// but the readiness probe needs the key (401). A page on another site can therefore start
/// nothing: its form or text/plain POST is refused before the route runs.
#[tokio::test]
async fn serve_answers_only_json_from_loopback_or_with_its_key() {
    let ctx = TestCtx::new("gate").await;
    let h = HandlerProc::start(&ctx.env).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://127.0.0.1:{}", h.port);
    let spec = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container}}).to_string();
    let runs = || async {
        let r = client.get(format!("{base}/api/runs")).send().await.unwrap();
        serde_json::from_str::<Value>(&r.text().await.unwrap()).unwrap()["runs"]
            .as_array()
            .unwrap()
            .len()
    };

    // A cross-site "simple" POST: text/plain or a form. Nothing starts.
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ] {
        let r = client
            .post(format!("{base}/api/runs"))
            .header("content-type", ct)
            .body(spec.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415, "{ct}");
        let body: Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
        assert!(body["error"].as_str().unwrap().starts_with("Content-Type:"), "{body}");
    }
    let r = client
        .post(format!("{base}/CopyObject"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415, "an invoke route with no Content-Type");
    assert_eq!(runs().await, 0, "a refused POST started a run");
    // A page whose DNS name was rebound to 127.0.0.1 sends its own name as Host.
    let r = client
        .get(format!("{base}/api/runs"))
        .header("host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("Host `evil.example`"));
    // A form or no-cors POST with no body needs no preflight: the browser's own marks refuse it.
    for (name, value) in [("sec-fetch-site", "cross-site"), ("origin", "http://evil.example")] {
        let r = client
            .post(format!("{base}/api/runs/20990101T000000Z-deadbeef/cancel"))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{name}: {value}");
    }
    // The same request to a loopback name, and JSON, are served.
    let r = client
        .post(format!("{base}/api/runs"))
        .header("content-type", "application/json; charset=utf-8")
        .body(spec.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
    assert_eq!(runs().await, 1);
    drop(h);

    // With a key: every route but GET / needs it, however it is sent.
    let key = "k3y-".repeat(10);
    let h = HandlerProc::start(&ctx.env_with(&[("SYNC_API_KEY", &key)])).await;
    let base = format!("http://127.0.0.1:{}", h.port);
    let get = |q: &'static str, header: Option<(&'static str, String)>| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let mut r = client.get(format!("{base}{q}"));
            if let Some((k, v)) = header {
                r = r.header(k, v);
            }
            r.send().await.unwrap().status().as_u16()
        }
    };
    assert_eq!(get("/", None).await, 200, "the readiness probe stays open");
    assert_eq!(get("/api/runs", None).await, 401);
    assert_eq!(get("/api/dashboard", None).await, 401);
    assert_eq!(
        get("/api/runs", Some(("x-functions-key", "k3y-".repeat(9) + "k3y+"))).await,
        401
    );
    assert_eq!(get("/api/runs", Some(("x-functions-key", key.clone()))).await, 200);
    assert_eq!(
        get("/api/runs", Some(("authorization", format!("Bearer {key}")))).await,
        200
    );
    let r = client.get(format!("{base}/api/runs?code={key}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "?code= as the dashboard's links send it");
    let r = client
        .post(format!("{base}/CopyObject"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        401,
        "outside the Functions host the invoke routes need the key too"
    );
    let logs = h.logs();
    drop(h);
    assert!(!logs.contains(&key), "the key reached a log");

    // Under the Functions host, the host alone calls the invoke routes; its keys gate HTTP.
    let h = HandlerProc::start(&ctx.env_with(&[("SYNC_API_KEY", &key), ("FUNCTIONS_WORKER_RUNTIME", "custom")])).await;
    let (status, body) = h.invoke("CopyObject", &json!({"Data": {}, "Metadata": {}})).await;
    assert_eq!(status, 400, "reached the function: {body}");
    // Only the host, on 127.0.0.1, skips the key; a page rebound to loopback does not.
    let r = client
        .post(format!("http://127.0.0.1:{}/CopyObject", h.port))
        .header("host", "evil.example")
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("http://127.0.0.1:{}/api/runs", h.port))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    drop(h);

    // Beyond loopback without a key: refused before listening, naming the variable.
    let port = crate::harness::handler::free_port().to_string();
    let (code, out) = run_binary_async(&["serve", "--port", &port, "--bind", "0.0.0.0"], &ctx.env).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("SYNC_API_KEY"), "{out}");
    let (code, out) = run_binary_async(&["serve", "--port", &port], &ctx.env_with(&[("SYNC_API_KEY", "short")])).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("SYNC_API_KEY: must be at least 32 characters"), "{out}");
    assert!(!out.contains("short`"), "{out}");
    ctx.cleanup().await;
}

/// The audit trail: a mirror prune writes one `audit` event per deleted blob, naming the
/// blob, the run that asked and why, even at the CLI's default `warn` level.
#[tokio::test]
async fn a_mirror_prune_audits_each_deleted_blob() {
    let ctx = TestCtx::new("audit").await;
    for i in 0..5 {
        ctx.put(&format!("a/{i}.txt"), format!("object {i}")).await;
    }
    let target = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let source = format!("s3://{}/", ctx.bucket);
    let args = ["sync", source.as_str(), target.as_str(), "--no-progress"];
    let (code, out) = run_binary_async(&args, &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert!(!out.contains("\"audit\""), "nothing was deleted yet: {out}");
    for i in [1, 3, 4] {
        ctx.s3
            .client()
            .delete_object()
            .bucket(&ctx.bucket)
            .key(format!("a/{i}.txt"))
            .send()
            .await
            .unwrap();
    }
    let (code, out) = run_binary_async(&args, &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let events: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["target"] == "audit")
        .collect();
    let mut deleted: Vec<String> = events
        .iter()
        .map(|e| {
            assert_eq!(e["action"], "delete_blob", "{e}");
            assert_eq!(e["reason"], "mirror: the source has no such object", "{e}");
            let run = e["run_id"].as_str().unwrap();
            assert!(!run.is_empty() && e["requested_by"] == format!("run {run}"), "{e}");
            e["object"].as_str().unwrap().to_string()
        })
        .collect();
    deleted.sort();
    let want: Vec<String> = [1, 3, 4]
        .iter()
        .map(|i| format!("devstoreaccount1/{}/a/{i}.txt", ctx.container))
        .collect();
    assert_eq!(deleted, want, "one audit event per deleted blob: {out}");
    for i in [1, 3, 4] {
        assert!(ctx.blob().properties(&format!("a/{i}.txt")).await.unwrap().is_none());
    }
    ctx.cleanup().await;
}

/// Run as a newcomer would, with no AWS settings at all on a machine without an instance
/// metadata service: one clear error that names the variable, not the SDK's metadata-probe
/// warnings, and no retries of a call that cannot be formed.
#[tokio::test]
async fn an_s3_call_without_a_region_names_the_setting() {
    let ctx = TestCtx::new("noregion").await;
    let mut env = std::collections::HashMap::new();
    env.insert(
        "AZURE_STORAGE_CONNECTION_STRING".to_string(),
        ctx.env["AZURE_STORAGE_CONNECTION_STRING"].clone(),
    );
    let dst = format!("http://127.0.0.1:10000/devstoreaccount1/{}/", ctx.container);
    let src = format!("s3://{}/x", ctx.bucket);
    let (code, out) = run_binary_async(&["copy", &src, &dst, "--no-progress"], &env).await;
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("no AWS region is set: set AWS_REGION"), "{out}");
    assert!(!out.contains("aws_config::imds"), "the SDK's probe warnings: {out}");
    assert!(!out.contains("retrying"), "a missing region is not retried: {out}");
    ctx.cleanup().await;
}
