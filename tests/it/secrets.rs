//! No secret reaches a log, an error or a response body: run real copies (server-side with
//! presigned URLs, SAS-signed Azure calls, failures) with every crate logging at `trace`, and
//! scan everything captured.

use std::sync::atomic::Ordering;

use serde_json::json;

use crate::harness::handler::{queue_payload, run_binary_async, HandlerProc};
use crate::harness::proxy::Proxy;
use crate::harness::{TestCtx, AWS_SECRET, AZURITE_KEY};

/// Panics if `text` holds a secret: a known key, or a credential-bearing parameter or
/// header whose value is not `[redacted]` (or reqwest's `Sensitive`).
pub fn assert_no_secrets(what: &str, text: &str) {
    for known in [AWS_SECRET, AZURITE_KEY, &AZURITE_KEY[..20]] {
        assert!(!text.contains(known), "{what}: a key leaked");
    }
    // One form for JSON however it was printed: compact, pretty, or escaped inside a Debug.
    let text = &text.replace("\\\"", "\"").replace("\": \"", "\":\"");
    let lower = text.to_ascii_lowercase();
    for param in [
        "sig=",
        "x-amz-signature=",
        "x-amz-credential=",
        "x-amz-security-token=",
        "accountkey=",
        "signature=",
        "code=",
        "webidentitytoken=",
        // Header forms, as a raw request or a Debug of a header map prints them.
        "x-amz-security-token: ",
        "\"x-amz-security-token\":\"",
        "authorization: bearer ",
        "\"authorization\":\"bearer ",
        "x-identity-header: ",
        "\"x-identity-header\":\"",
        "x-functions-key: ",
        "\"x-functions-key\":\"",
    ] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(param) {
            let at = from + i;
            let before = lower[..at].chars().last();
            let rest = &text[at + param.len()..];
            let is_param = !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
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
                    rest.starts_with("[redacted]") || rest.starts_with("REDACTED") || rest.starts_with("Sensitive"),
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
        "x-amz-security-token: FQoGZXIvYXdzEJr".to_string(),
        "{\"authorization\": \"Bearer eyJ0eXAi\"}".to_string(),
        "{\"authorization\":\"Bearer eyJ0eXAi\"}".to_string(),
        "{\\\"x-identity-header\\\": \\\"7f3a\\\"}".to_string(),
        "Authorization: Bearer eyJ0eXAi".to_string(),
        "X-IDENTITY-HEADER: 7f3a".to_string(),
        "Action=AssumeRoleWithWebIdentity&WebIdentityToken=eyJ0eXAi".to_string(),
        "GET /api/runs?code=fnkey123".to_string(),
    ];
    for l in leaks {
        assert!(
            std::panic::catch_unwind(|| assert_no_secrets("t", &l)).is_err(),
            "missed: {l}"
        );
    }
    assert_no_secrets(
        "t",
        "sig=[redacted] X-Amz-Signature=[redacted] design=ok \"authorization\": Sensitive code=[redacted] barcode=1",
    );
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
    let rows = s3_blob_sync::state::checkpoint::CheckpointStore::new(ctx.table())
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

/// Secrets born outside the account key: the managed-identity header, the Entra token it
/// buys (a bearer credential, exchanged with STS as `WebIdentityToken`), the STS session
/// token on every S3 request and inside every presigned copy source, and a webhook whose
/// path is its credential. Each is first shown to have travelled in a request. Then a whole
/// mirror run at trace level is scanned for all of them: the handler's logs, the status
/// bodies, every row of its tables, and the metadata of every blob it wrote.
#[tokio::test]
async fn identity_tokens_and_a_webhook_reach_no_log_status_table_row_or_blob_metadata() {
    use crate::harness::host::Host;
    use crate::harness::runs::{body, finish, get_run, start_run};
    use s3_blob_sync::azure::table::TableClient;
    use s3_blob_sync::retry::RetryPolicy;
    use std::time::Duration;
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const AUDIENCE: &str = "api://s3-blob-sync-secrets";
    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJzZWNyZXRzIn0.ENTRATOKENSIGNATURE";
    const HEADER_SECRET: &str = "mi-header-secret-51c9";
    const HOOK_TOKEN: &str = "WEBHOOKPATHTOKEN";

    let ctx = TestCtx::new("secrun").await;
    ctx.put("r/a.txt", "alpha").await;
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("r/b.txt")
        .metadata("owner", "team-a")
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"bravo"))
        .send()
        .await
        .unwrap();
    // The managed-identity endpoint: a TEST DOUBLE of the App Service protocol (no real
    // server can issue an Entra token on loopback).
    let mi = MockServer::start().await;
    let expires = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    Mock::given(method("GET"))
        .and(path("/msi/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": TOKEN, "expires_on": expires.to_string(), "resource": AUDIENCE, "token_type": "Bearer"
        })))
        .mount(&mi)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let moto = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let double = Proxy::blob_double().await;
    let hook = format!("{}/hook/T03/{HOOK_TOKEN}", receiver.uri());
    let mut env = ctx.env_with(&[
        (
            "AZURE_STORAGE_CONNECTION_STRING",
            &ctx.connection_string_via(&double.url),
        ),
        ("SYNC_COPY_PATH", "server-side"),
        ("RUST_LOG", "trace"),
        ("SYNC_AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/s3-blob-sync"),
        ("SYNC_AWS_TOKEN_AUDIENCE", AUDIENCE),
        ("IDENTITY_ENDPOINT", &format!("{}/msi/token", mi.uri())),
        ("IDENTITY_HEADER", HEADER_SECRET),
        ("AWS_ENDPOINT_URL", &moto.url),
        ("SYNC_WEBHOOK_SCAN", &hook),
        ("SYNC_NOTIFY_ALLOW_HOSTS", "127.0.0.1"),
    ]);
    env.remove("AWS_ACCESS_KEY_ID");
    env.remove("AWS_SECRET_ACCESS_KEY");
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let id = start_run(
        &h,
        &body(&ctx, json!({"mode": "mirror", "notify": "setting:SYNC_WEBHOOK_SCAN"})),
    )
    .await;
    let summary = finish(&host, &h, &id, Duration::from_secs(90)).await;
    assert_eq!(summary["state"], "Succeeded", "{summary}");
    assert_eq!(summary["counters"]["transferred"], 2, "{summary}");
    host.drive_until(&h, Duration::from_secs(20), || async {
        get_run(&h, &id).await.1["notification"]["state"] == "sent"
    })
    .await;
    let (_, summary) = get_run(&h, &id).await;

    // Each secret really travelled.
    let mi_calls = mi.received_requests().await.unwrap();
    assert!(
        mi_calls
            .iter()
            .any(|r| r.headers.get("x-identity-header").is_some_and(|v| v == HEADER_SECRET)),
        "the managed-identity header was sent"
    );
    assert!(
        moto.credentials("WebIdentityToken").iter().any(|t| t == TOKEN),
        "the Entra token went to STS"
    );
    let mut sessions = moto.credentials("x-amz-security-token");
    sessions.sort();
    sessions.dedup();
    assert!(
        !sessions.is_empty() && sessions.iter().all(|t| t.len() >= 16),
        "S3 requests carried the STS session token"
    );
    let copy_sources = double.credentials("x-ms-copy-source");
    assert!(
        copy_sources
            .iter()
            .any(|u| u.contains("X-Amz-Security-Token=") && u.contains("X-Amz-Signature=")),
        "presigned copy sources carried the session token and a signature"
    );
    let hooks = receiver.received_requests().await.unwrap();
    assert!(
        hooks.iter().any(|r| r.url.path().ends_with(HOOK_TOKEN)),
        "the webhook was sent"
    );

    // Then nothing holds them.
    let cfg = ctx.config(&[]);
    let auth = cfg.azure.authorizer().unwrap();
    let mut rows = String::new();
    for table in [&ctx.table, &cfg.tables.runs] {
        let t = TableClient::new(&cfg.azure, &auth, table, RetryPolicy::default()).unwrap();
        let all = t.query_all(None).await.unwrap();
        assert!(!all.is_empty(), "table {table} has the run's rows");
        for e in all {
            let props = serde_json::to_string(&e.props).unwrap();
            rows.push_str(&format!("{} {} {props}\n", e.partition_key, e.row_key));
        }
    }
    let blobs = ctx.blob().list("").await.unwrap();
    assert_eq!(blobs.len(), 2, "{blobs:?}");
    assert_eq!(
        blobs.iter().find(|b| b.name == "r/b.txt").unwrap().metadata["owner"],
        "team-a"
    );
    let metadata = serde_json::to_string(&blobs.iter().map(|b| &b.metadata).collect::<Vec<_>>()).unwrap();
    let logs = h.logs();
    assert!(logs.len() > 10_000, "trace logging was on: {} bytes", logs.len());
    let signature = TOKEN.rsplit('.').next().unwrap();
    for (what, text) in [
        ("handler logs", &logs),
        ("run summary", &summary.to_string()),
        ("table rows", &rows),
        ("blob metadata", &metadata),
    ] {
        let mut known: Vec<&str> = vec![HEADER_SECRET, TOKEN, signature, HOOK_TOKEN];
        known.extend(sessions.iter().map(String::as_str));
        for k in known {
            assert!(!text.contains(k), "{what}: a secret leaked ({}…)", &k[..6]);
        }
        assert_no_secrets(what, text);
    }
    assert_eq!(summary["notification"]["webhook"], "setting:SYNC_WEBHOOK_SCAN");
    ctx.cleanup().await;
}
