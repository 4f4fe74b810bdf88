//! Per-object run reports (`GET /api/runs/{id}/report`, `status RUN_ID --report`): every
//! object a run did not copy is named with its outcome and reason, paged and filtered; a
//! copy that failed an attempt shows as `retrying` until its final outcome is counted.

use std::time::Duration;

use aws_sdk_s3::types::StorageClass;
use serde_json::{json, Value};

use crate::harness::handler::{run_binary_async, HandlerProc};
use crate::harness::host::{http_invoke, http_payload, Host};
use crate::harness::proxy::Proxy;
use crate::harness::TestCtx;

/// The report through the invoke door, with `query`: status, headers and its JSON lines.
async fn report(h: &HandlerProc, id: &str, query: &[(&str, &str)]) -> (u16, Value, Vec<Value>) {
    let mut payload = http_payload("GET", &format!("/api/runs/{id}/report"), json!({"id": id}), None);
    for (k, v) in query {
        payload["Data"]["req"]["Query"][*k] = json!(v);
    }
    let (status, body) = h.invoke("GetRunReport", &payload).await;
    assert_eq!(status, 200, "the host call itself must succeed: {body}");
    let res = &body["Outputs"]["res"];
    let text = res["body"].as_str().unwrap_or_default();
    let lines = if res["headers"]["Content-Type"] == "application/x-ndjson" {
        text.lines()
            .map(|l| serde_json::from_str(l).expect("a JSON line"))
            .collect()
    } else {
        vec![serde_json::from_str(text).unwrap_or(Value::Null)]
    };
    (
        res["statusCode"].as_u64().unwrap_or(0) as u16,
        res["headers"].clone(),
        lines,
    )
}

fn line<'a>(lines: &'a [Value], key: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["key"] == key)
        .unwrap_or_else(|| panic!("{key} is not in the report: {lines:?}"))
}

#[tokio::test]
async fn a_runs_report_names_every_object_not_copied_with_its_reason() {
    let ctx = TestCtx::new("report").await;
    for k in ["ok/a.txt", "ok/b.txt", "tmp/x.tmp", "folder/", "bad."] {
        ctx.put(k, format!("body of {k}")).await;
    }
    ctx.s3
        .client()
        .put_object()
        .bucket(&ctx.bucket)
        .key("cold.bin")
        .storage_class(StorageClass::Glacier)
        .body(b"archived".to_vec().into())
        .send()
        .await
        .unwrap();
    // S3 through a proxy, so one copy's first attempt can be refused.
    let s3 = Proxy::start(&ctx.env["AWS_ENDPOINT_URL"]).await;
    let env = ctx.env_with(&[("AWS_ENDPOINT_URL", s3.url.as_str())]);
    let h = HandlerProc::start(&env).await;
    let host = Host::new(&ctx).await;
    let run = json!({"source": {"bucket": ctx.bucket}, "target": {"container": ctx.container},
                     "filters": {"exclude": ["tmp/**"]}});
    let (status, _, reply) = http_invoke(
        &h,
        "StartRun",
        &http_payload("POST", "/api/runs", json!({}), Some(&run.to_string())),
    )
    .await;
    assert_eq!(status, 202, "{reply}");
    let id = reply["runId"].as_str().unwrap().to_string();
    let page = host.list.receive(1, Duration::from_secs(30)).await.unwrap().remove(0);
    assert_eq!(host.deliver(&h, "ListPage", &host.list, page).await, 200);

    // One copy's first attempt meets an S3 outage longer than its retries: not final, so
    // `retrying` with its reason.
    let mut copies = Vec::new();
    while copies.len() < 2 {
        copies.extend(host.copy.receive(32, Duration::from_secs(2)).await.unwrap());
    }
    let first = copies.remove(0);
    let failing_key = serde_json::from_str::<Value>(&first.text).unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    s3.outage(Duration::from_secs(12));
    assert_eq!(
        host.deliver(&h, "CopyObject", &host.copy, first).await,
        500,
        "{}",
        crate::harness::host::tail(&h.logs())
    );
    let (status, _, lines) = report(&h, &id, &[("outcome", "retrying")]).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let r = line(&lines, &failing_key);
    assert_eq!(
        (r["outcome"].as_str(), r["attempt"].as_u64()),
        (Some("retrying"), Some(1)),
        "{r}"
    );
    assert!(
        r["reason"].as_str().unwrap().contains("HTTP 503"),
        "the reason names what failed: {r}"
    );

    // The run ends once the retry lands; the report then names each object not copied.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let (status, _, body) = loop {
        assert!(std::time::Instant::now() < deadline, "the run did not end");
        host.round(&h).await;
        let got = http_invoke(
            &h,
            "GetRun",
            &http_payload("GET", &format!("/api/runs/{id}"), json!({"id": id}), None),
        )
        .await;
        if got.0 == 200 {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!((status, body["state"].as_str()), (200, Some("Succeeded")), "{body}");
    assert_eq!(
        body["reportUrl"],
        format!("/api/runs/{id}/report"),
        "the summary (and so the webhook) links to the report"
    );
    let (status, headers, lines) = report(&h, &id, &[]).await;
    assert_eq!(status, 200, "{lines:?}");
    assert_eq!(headers["Content-Type"], "application/x-ndjson");
    assert_eq!(
        lines.len(),
        4,
        "only the objects not copied, the settled retry gone: {lines:?}"
    );
    for (key, outcome, why) in [
        ("tmp/x.tmp", "excluded", "excluded: "),
        ("folder/", "excluded", "folder marker"),
        ("cold.bin", "unsupported", "GLACIER"),
        ("bad.", "unsupported", "ends with '.'"),
    ] {
        let l = line(&lines, key);
        assert_eq!(l["outcome"], outcome, "{l}");
        assert!(l["reason"].as_str().unwrap_or_default().contains(why), "{key}: {l}");
    }
    // Everything, paged two at a time by the cursor the reply names.
    let mut all = Vec::new();
    let mut cursor = String::new();
    for _ in 0..10 {
        let mut q = vec![("outcome", "all"), ("limit", "2")];
        if !cursor.is_empty() {
            q.push(("cursor", cursor.as_str()));
        }
        let (status, headers, lines) = report(&h, &id, &q).await;
        assert_eq!(status, 200, "{lines:?}");
        assert!(lines.len() <= 2);
        all.extend(lines);
        match headers["x-next-cursor"].as_str() {
            Some(next) => {
                assert!(headers["Link"].as_str().unwrap().contains("rel=\"next\""), "{headers}");
                cursor = next.to_string();
            }
            None => break,
        }
    }
    let mut keys: Vec<&str> = all.iter().map(|l| l["key"].as_str().unwrap()).collect();
    keys.sort();
    assert_eq!(
        keys,
        ["bad.", "cold.bin", "folder/", "ok/a.txt", "ok/b.txt", "tmp/x.tmp"],
        "each key once over the pages"
    );
    assert_eq!(line(&all, &failing_key)["outcome"], "transferred");
    // Bad input is named.
    let (status, _, body) = report(&h, &id, &[("outcome", "glacier")]).await;
    assert_eq!(status, 400);
    assert!(
        body[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("outcome: `glacier` is not an outcome"),
        "{body:?}"
    );
    let (status, _, body) = report(&h, &id, &[("cursor", "not-a-cursor!")]).await;
    assert_eq!(status, 400);
    assert!(body[0]["error"].as_str().unwrap().starts_with("cursor:"), "{body:?}");
    let (status, _, _) = report(&h, "20261202T000000Z-00000000", &[]).await;
    assert_eq!(status, 404);

    // The CLI prints the same report, as CSV.
    let (code, out) = run_binary_async(&["status", &id, "--report", "--csv"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    let mut rows = out.lines();
    assert_eq!(rows.next(), Some("key,outcome,bytes,reason,attempt"));
    let rows: Vec<&str> = rows.collect();
    assert_eq!(rows.len(), 4, "{out}");
    assert!(
        rows.iter()
            .any(|r| r.starts_with("cold.bin,unsupported,8,") && r.contains("GLACIER")),
        "{out}"
    );
    let (code, out) = run_binary_async(&["status", &id, "--report", "--outcome", "transferred"], &ctx.env).await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(out.lines().count(), 2, "{out}");
    let (code, out) = run_binary_async(&["status", &id, "--report", "--outcome", "nope"], &ctx.env).await;
    assert_ne!(code, 0);
    assert!(out.contains("--outcome: `nope` is not an outcome"), "{out}");
    ctx.cleanup().await;
}
