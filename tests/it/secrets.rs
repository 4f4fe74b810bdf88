//! No secret reaches a log, an error or a response body: run real copies (server-side with
//! presigned URLs, SAS-signed Azure calls, failures) with every crate logging at `trace`, and
//! scan everything captured.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::harness::handler::{queue_payload, run_binary_async, HandlerProc};
use crate::harness::proxy::Proxy;
use crate::harness::{TestCtx, AWS_SECRET, AZURITE_KEY};

/// Panics if `text` holds a secret: a known key, or a signature-bearing parameter whose
/// value is not `[redacted]`.
pub fn assert_no_secrets(what: &str, text: &str) {
    for known in [AWS_SECRET, AZURITE_KEY, &AZURITE_KEY[..20]] {
        assert!(!text.contains(known), "{what}: a key leaked");
    }
    let lower = text.to_ascii_lowercase();
    for param in [
        "sig=",
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "accountkey=",
    ] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(param) {
            let at = from + i;
            let before = lower[..at].chars().last();
            let rest = &text[at + param.len()..];
            let is_param = !before.is_some_and(|c| c.is_ascii_alphanumeric());
            let value_end = rest.find(|c: char| "&;\"' \n,<>".contains(c)).unwrap_or(rest.len());
            if is_param && value_end > 0 {
                let line_start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                let line = &text[line_start..];
                let line = &line[..line.find('\n').unwrap_or(line.len())];
                let target = line
                    .split("\"target\":")
                    .nth(1)
                    .unwrap_or("?")
                    .split(',')
                    .next()
                    .unwrap_or("?");
                assert!(
                    rest.starts_with("[redacted]") || rest.starts_with("REDACTED"),
                    "{what}: {param} value leaked (log target {target}): …{}…",
                    &text[at.saturating_sub(40)..(at + param.len() + 30).min(text.len())]
                );
            }
            from = at + param.len();
        }
    }
}

#[test]
fn the_scanner_itself_catches_leaks() {
    let leaks = [
        "GET /c/b?sv=2022&sig=abcDEF%2B".to_string(),
        "https://s3/b/k?X-Amz-Signature=0123abcd".to_string(),
        format!("key {AWS_SECRET}"),
        "AccountName=a;AccountKey=Zm9v;".to_string(),
    ];
    for l in leaks {
        assert!(
            std::panic::catch_unwind(|| assert_no_secrets("t", &l)).is_err(),
            "missed: {l}"
        );
    }
    assert_no_secrets("t", "sig=[redacted] X-Amz-Signature=[redacted] design=ok");
}

#[tokio::test]
async fn no_secrets_in_handler_or_cli_output_even_at_trace_level() {
    let ctx = TestCtx::new("secrets").await;
    ctx.put("ok", "fine").await;
    ctx.put("fails", "x").await;
    let double = Proxy::blob_double().await;
    let cs = ctx.connection_string_via(&double.url);
    let env = ctx.env_with(&[
        ("AZURE_STORAGE_CONNECTION_STRING", &cs),
        ("SYNC_COPY_PATH", "server-side"),
        ("RUST_LOG", "trace"),
    ]);
    let h = HandlerProc::start(&env).await;
    let mut bodies = String::new();
    let (status, body) = h
        .invoke(
            "CopyObject",
            &queue_payload(&json!({"bucket": ctx.bucket, "key": "ok"}), 1),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    bodies.push_str(&body.to_string());
    // A failure whose error text comes from Azure, about a presigned source URL.
    double.faults().copy_source_unreachable.store(true, Ordering::SeqCst);
    let (status, body) = h
        .invoke(
            "CopyObject",
            &queue_payload(&json!({"bucket": ctx.bucket, "key": "fails"}), 5),
        )
        .await;
    assert_eq!(status, 500);
    bodies.push_str(&body.to_string());
    // A throttled call that gives up.
    double.storm(1000, 503);
    let (_, body) = h
        .invoke(
            "CopyObject",
            &queue_payload(&json!({"bucket": ctx.bucket, "key": "ok2"}), 1),
        )
        .await;
    bodies.push_str(&body.to_string());
    double.storm(0, 503);
    double.faults().copy_source_unreachable.store(false, Ordering::SeqCst);

    let logs = h.logs();
    assert!(logs.len() > 10_000, "trace logging was on: {} bytes", logs.len());
    assert!(
        logs.contains("x-ms-copy-source") || logs.contains("put blob from url"),
        "the risky calls were logged about"
    );
    assert_no_secrets("handler logs", &logs);
    assert_no_secrets("invoke responses", &bodies);

    // The checkpoint rows (status bodies) are clean too.
    let rows = s3_blob_sync::checkpoint::CheckpointStore::new(ctx.table())
        .list_bucket(&ctx.bucket)
        .await
        .unwrap();
    assert_no_secrets("checkpoint rows", &format!("{rows:?}"));

    // The CLI, at trace level, copying server-side.
    let dst = format!("{}/devstoreaccount1/{}/cli/", double.url, ctx.container);
    let (code, out) = run_binary_async(&["copy", &format!("s3://{}/", ctx.bucket), &dst, "--no-progress"], &env).await;
    let summary: Vec<&str> = out.lines().filter(|l| !l.starts_with('{')).collect();
    assert_eq!(code, 0, "{}", summary.join("\n"));
    assert_no_secrets("cli output", &out);
    ctx.cleanup().await;
}
